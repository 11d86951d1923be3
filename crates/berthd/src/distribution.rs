//! `docker pull` and `docker push` through `berth-registry`, with dockerd's JSON progress stream.

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use berth_api::progress::JsonMessage;
use berth_registry::{Credentials, ProgressSink, PullOptions, PushOptions};
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use tokio::sync::mpsc;

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::http::{Body, Resp};

/// Maps a registry error to the daemon's error classes.
pub fn reg_err(e: berth_registry::Error) -> Error {
    let msg = e.to_string();
    match e.kind() {
        berth_registry::ErrorKind::NotFound => Error::NotFound(msg),
        berth_registry::ErrorKind::Unauthorized => Error::Unauthorized(msg),
        berth_registry::ErrorKind::InvalidArgument => Error::Invalid(msg),
        berth_registry::ErrorKind::Unavailable => Error::Unavailable(msg),
        _ => Error::Internal(msg),
    }
}

/// Decodes `X-Registry-Auth` (base64url JSON of Docker's AuthConfig); `None` when absent or empty.
pub fn credentials(header: Option<&HeaderValue>) -> Option<Credentials> {
    let raw = header?.to_str().ok()?.trim();
    if raw.is_empty() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .ok()?;
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let user_empty = v["username"].as_str().unwrap_or("").is_empty();
    if user_empty {
        if let Some(auth) = v["auth"].as_str().filter(|a| !a.is_empty()) {
            let dec = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .ok()?;
            let text = String::from_utf8_lossy(&dec).into_owned();
            if let Some((u, p)) = text.split_once(':') {
                v["username"] = serde_json::json!(u);
                v["password"] = serde_json::json!(p);
            }
        }
    }
    if v["registrytoken"].is_null() {
        if let Some(t) = v["identitytoken"].as_str().filter(|t| !t.is_empty()) {
            v["registrytoken"] = serde_json::json!(t);
        }
    }
    let c: Credentials = serde_json::from_value(v).ok()?;
    Some(c)
}

/// Runs `op` with a progress sink. An error before any progress is an HTTP error; after that the
/// response is a 200 JSON stream that ends with an error line, as dockerd does.
async fn progress_response<F, Fut>(op: F) -> Result<Resp>
where
    F: FnOnce(ProgressSink) -> Fut,
    Fut: Future<Output = Result<Vec<JsonMessage>>> + Send + 'static,
{
    let (ptx, mut prx) = mpsc::unbounded_channel::<JsonMessage>();
    let sink: ProgressSink = Arc::new(move |m| {
        let _ = ptx.send(m);
    });
    let mut task = tokio::spawn(op(sink));
    let mut pending: Vec<JsonMessage> = Vec::new();
    let mut finished = None;
    tokio::select! {
        m = prx.recv() => { if let Some(m) = m { pending.push(m); } }
        r = &mut task => { finished = Some(r); }
    }
    if let Some(r) = &finished {
        while let Ok(m) = prx.try_recv() {
            pending.push(m);
        }
        if pending.is_empty() {
            let r = match r {
                Ok(r) => r,
                Err(e) => return Err(Error::internal(e.to_string())),
            };
            if let Err(e) = r {
                return Err(match e {
                    Error::NotFound(m) => Error::NotFound(m.clone()),
                    Error::Unauthorized(m) => Error::Unauthorized(m.clone()),
                    Error::Invalid(m) => Error::Invalid(m.clone()),
                    Error::Unavailable(m) => Error::Unavailable(m.clone()),
                    other => Error::internal(other.to_string()),
                });
            }
        }
    }
    let (tx, body) = Body::channel();
    tokio::spawn(async move {
        for m in pending {
            if tx.send(Bytes::from(m.to_line())).await.is_err() {
                return;
            }
        }
        while let Some(m) = prx.recv().await {
            if tx.send(Bytes::from(m.to_line())).await.is_err() {
                return;
            }
        }
        let res = match finished {
            Some(r) => r,
            None => task.await,
        };
        let tail = match res {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => vec![JsonMessage::error(e.to_string())],
            Err(e) => vec![JsonMessage::error(e.to_string())],
        };
        for m in tail {
            if tx.send(Bytes::from(m.to_line())).await.is_err() {
                return;
            }
        }
    });
    let mut r = hyper::Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `POST /images/create?fromImage=`; a repository without tag or digest (the docker CLI's `pull -a`
/// sends an empty `tag`) pulls all its tags, as dockerd.
pub async fn pull(
    d: &Arc<Daemon>,
    reference: String,
    platform: Option<String>,
    creds: Option<Credentials>,
) -> Result<Resp> {
    let d2 = d.clone();
    let all_tags = berth_image::Reference::parse(&reference)
        .is_ok_and(|r| r.tag().is_none() && r.digest().is_none());
    progress_response(move |sink| async move {
        let opts = PullOptions {
            platform,
            credentials: creds,
        };
        let store = d2.images.store();
        if all_tags {
            let pulled = d2
                .registry_client()?
                .pull_all_tags(store, &reference, &opts, sink)
                .await
                .map_err(reg_err)?;
            for out in pulled {
                d2.events
                    .image("pull", &out.image_id.to_string(), &out.reference);
            }
            return Ok(vec![]);
        }
        match d2
            .registry_client()?
            .pull(store, &reference, &opts, sink)
            .await
        {
            Ok(out) => {
                d2.events
                    .image("pull", &out.image_id.to_string(), &out.reference);
                Ok(vec![])
            }
            Err(e) if e.kind() == berth_registry::ErrorKind::Unavailable => {
                // Offline, but the image is here (e.g. the built-in hello-world): as up to date.
                match d2.images.resolve(&reference).await {
                    Ok(_) => {
                        tracing::warn!("pull {reference}: {e}; using the local image");
                        Ok(vec![JsonMessage::status(format!(
                            "Status: Image is up to date for {reference}"
                        ))])
                    }
                    Err(_) => Err(reg_err(e)),
                }
            }
            Err(e) => Err(reg_err(e)),
        }
    })
    .await
}

/// `POST /images/{name}/push`.
pub async fn push(d: &Arc<Daemon>, reference: String, creds: Option<Credentials>) -> Result<Resp> {
    let d2 = d.clone();
    progress_response(move |sink| async move {
        let opts = PushOptions { credentials: creds };
        let store = d2.images.store();
        let tags = d2
            .registry_client()?
            .push(store, &reference, &opts, sink)
            .await
            .map_err(reg_err)?;
        for t in &tags {
            d2.events.image("push", &t.digest.to_string(), &reference);
        }
        Ok(vec![])
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let h = HeaderValue::from_str(&enc(r#"{"username":"u","password":"p"}"#)).unwrap();
        let c = credentials(Some(&h)).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let auth = base64::engine::general_purpose::STANDARD.encode("a:b");
        let h = HeaderValue::from_str(&enc(&format!(r#"{{"auth":"{auth}"}}"#))).unwrap();
        let c = credentials(Some(&h)).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        assert!(credentials(None).is_none());
        let h = HeaderValue::from_static("");
        assert!(credentials(Some(&h)).is_none());
    }
}
