//! `POST /auth` (`docker login`): checks credentials against a registry's `/v2/` as dockerd's `loginV2`
//! does, answering the registry's basic or bearer challenge with them.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde::{Deserialize, Serialize};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::http::{Resp, json, read_json};

/// The body of `POST /auth` (Docker's `AuthConfig`).
#[derive(Debug, Default, Deserialize)]
pub struct AuthRequest {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// `user:pass` in base64, used when username/password are empty.
    #[serde(default)]
    pub auth: String,
    /// The registry (`127.0.0.1:5000`, `https://index.docker.io/v1/`).
    #[serde(default)]
    pub serveraddress: String,
}

/// The success answer (Docker's `AuthenticateOKBody`).
#[derive(Debug, Serialize)]
pub struct AuthOk {
    /// Always "Login Succeeded".
    #[serde(rename = "Status")]
    pub status: String,
    /// An OAuth refresh token; empty: berth keeps the password, as dockerd does for basic auth.
    #[serde(rename = "IdentityToken")]
    pub identity_token: String,
}

/// `https://host:port/v1/` → `host:port`, as the registry package's `ConvertToHostname`; Docker Hub's
/// legacy names become `docker.io`.
pub fn hostname_of(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn user_pass(req: &AuthRequest) -> (String, String) {
    use base64::Engine;
    if req.username.is_empty() && req.password.is_empty() && !req.auth.is_empty() {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(req.auth.trim()) {
            let t = String::from_utf8_lossy(&b).into_owned();
            if let Some((u, p)) = t.split_once(':') {
                return (u.to_string(), p.to_string());
            }
        }
    }
    (req.username.clone(), req.password.clone())
}

/// `POST /auth`: reads the body and answers with [`login`]'s result.
pub async fn handle(d: &Daemon, req: hyper::Request<hyper::body::Incoming>) -> Result<Resp> {
    let body: AuthRequest = read_json(req).await?;
    Ok(json(200, &login(d, body).await?))
}

/// Checks the credentials: 200 with "Login Succeeded", or 401 with dockerd's wording.
pub async fn login(d: &Daemon, req: AuthRequest) -> Result<AuthOk> {
    let domain = hostname_of(&req.serveraddress);
    let (user, pass) = user_pass(&req);
    let endpoints = d.registry_client()?.endpoints(&domain);
    let mut last = None;
    for (i, base) in endpoints.iter().enumerate() {
        let insecure = base.starts_with("https://") && d.registry_client()?.is_insecure(&domain);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| Error::internal(format!("http client: {e}")))?;
        match try_endpoint(&http, base, &user, &pass).await {
            Ok(()) => {
                return Ok(AuthOk {
                    status: "Login Succeeded".into(),
                    identity_token: String::new(),
                });
            }
            // Like dockerd: an insecure registry's HTTPS endpoint that does not answer falls back to HTTP.
            Err(e @ Error::Unavailable(_)) if i + 1 < endpoints.len() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Unavailable(format!("no endpoint for {domain}"))))
}

async fn try_endpoint(http: &reqwest::Client, base: &str, user: &str, pass: &str) -> Result<()> {
    let url = format!("{base}/v2/");
    let unreachable = |e: reqwest::Error| {
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        Error::Unavailable(format!("Get \"{url}\": {cause}"))
    };
    let resp = http.get(&url).send().await.map_err(unreachable)?;
    let mut status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let header = if challenge.to_ascii_lowercase().starts_with("bearer") {
            Some(format!(
                "Bearer {}",
                bearer_token(http, &challenge, user, pass).await?
            ))
        } else if !user.is_empty() || !pass.is_empty() {
            use base64::Engine;
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            ))
        } else {
            None
        };
        if let Some(h) = header {
            status = http
                .get(&url)
                .header(AUTHORIZATION, h)
                .send()
                .await
                .map_err(unreachable)?
                .status();
        }
    }
    if status == StatusCode::OK {
        return Ok(());
    }
    Err(Error::Unauthorized(format!(
        "login attempt to {url} failed with status: {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )))
}

/// Fetches a token from the challenge's realm with basic credentials (no scope: a login only proves them).
async fn bearer_token(
    http: &reqwest::Client,
    challenge: &str,
    user: &str,
    pass: &str,
) -> Result<String> {
    let param = |k: &str| {
        let pat = format!("{k}=\"");
        challenge.find(&pat).and_then(|i| {
            let rest = &challenge[i + pat.len()..];
            rest.find('"').map(|j| rest[..j].to_string())
        })
    };
    let realm = param("realm")
        .ok_or_else(|| Error::Unavailable("bearer challenge without realm".into()))?;
    let mut q = vec![
        ("account".to_string(), user.to_string()),
        ("client_id".into(), "docker".into()),
        ("offline_token".into(), "true".into()),
    ];
    if let Some(s) = param("service") {
        q.push(("service".into(), s));
    }
    let resp = http
        .get(&realm)
        .query(&q)
        .basic_auth(user, Some(pass))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("Get \"{realm}\": {e}")))?;
    if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized(
            "unauthorized: incorrect username or password".into(),
        ));
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| Error::Unavailable(format!("invalid token response: {e}")))?;
    v["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .or_else(|| v["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Unavailable("token endpoint sent no token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in registry with a bearer token endpoint: `/v2/` wants `Bearer T`, `/token` gives `T`
    /// for alice:secret only.
    async fn token_registry() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let realm = format!("{base}/token");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let realm = realm.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                    let good_basic = "authorization: basic ".to_string()
                        + &base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            "alice:secret",
                        )
                        .to_lowercase();
                    let (status, extra, body) = if req.starts_with("get /token") {
                        if req.contains(&good_basic) {
                            ("200 OK", String::new(), r#"{"token":"t"}"#)
                        } else {
                            ("401 Unauthorized", String::new(), "{}")
                        }
                    } else if req.contains("authorization: bearer t") {
                        ("200 OK", String::new(), "{}")
                    } else {
                        (
                            "401 Unauthorized",
                            format!(
                                "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\"\r\n"
                            ),
                            "{}",
                        )
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        base
    }

    #[tokio::test]
    async fn bearer_login() {
        let base = token_registry().await;
        let http = reqwest::Client::new();
        assert!(try_endpoint(&http, &base, "alice", "secret").await.is_ok());
        let e = try_endpoint(&http, &base, "alice", "wrong")
            .await
            .unwrap_err();
        assert_eq!(e.status(), 401);
        assert_eq!(
            e.to_string(),
            "unauthorized: incorrect username or password"
        );
        let e = try_endpoint(&http, &base, "", "").await.unwrap_err();
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn hostnames_like_docker() {
        assert_eq!(hostname_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(hostname_of("127.0.0.1:5001"), "127.0.0.1:5001");
        assert_eq!(hostname_of("http://127.0.0.1:5001/v2/"), "127.0.0.1:5001");
    }
}
