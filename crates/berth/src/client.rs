//! A small Engine API client: HTTP/1.1 over the daemon's unix socket with hyper, API version negotiation,
//! JSON helpers, streaming bodies and the hijacked (101 Upgrade) attach connection.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::value::Value;

/// The highest API version this client speaks.
pub const CLIENT_API_VERSION: &str = "1.44";

/// The default daemon address.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// A request body.
pub type Body = BoxBody<Bytes, io::Error>;

/// The hijacked bidirectional stream of an attach.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// Client-side failures, worded like the docker CLI.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("Cannot connect to the Berth daemon at {0}. Is the berth daemon running?")]
    Connect(String),
    /// The daemon answered with an error status.
    #[error("Error response from daemon: {message}")]
    Daemon {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The socket exists but we may not use it.
    #[error(
        "permission denied while trying to connect to the Berth daemon socket at {0}: connect: permission denied"
    )]
    Permission(String),
    /// The host string is not usable.
    #[error("unsupported host {0}: berth speaks only unix:// sockets")]
    BadHost(String),
    /// Transport failure after connecting.
    #[error("error during connect: {0}")]
    Http(String),
    /// A response could not be decoded.
    #[error("error decoding response: {0}")]
    Decode(String),
}

impl ClientError {
    /// True for a daemon 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Daemon { status: 404, .. })
    }
}

/// Percent-encodes a query component.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request body fed from a channel (for streaming uploads such as `import`).
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Makes a streaming body and the sender that feeds it.
pub fn channel_body() -> (mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(8);
    (tx, BoxBody::new(ChannelBody(rx)))
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON body.
pub fn json_body<T: Serialize>(v: &T) -> Body {
    let data = serde_json::to_vec(v).unwrap_or_default();
    Full::new(Bytes::from(data))
        .map_err(|never| match never {})
        .boxed()
}

/// A connection target plus the negotiated API version.
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    sock: PathBuf,
    prefix: String,
    /// Print requests to stderr.
    pub debug: bool,
}

impl Client {
    /// Resolves the host and negotiates the API version with `GET /_ping`.
    pub async fn connect(host: &str, debug: bool) -> Result<Client, ClientError> {
        let sock = match host.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None if host.starts_with('/') => PathBuf::from(host),
            None => return Err(ClientError::BadHost(host.to_string())),
        };
        let mut c = Client {
            host: host.to_string(),
            sock,
            prefix: String::new(),
            debug,
        };
        // Like docker, a ping that fails for any reason but the connection keeps our own version.
        let server = match c.send(Method::GET, "/_ping", empty(), None).await {
            Ok(resp) => resp
                .headers()
                .get("api-version")
                .and_then(|v| v.to_str().ok())
                .and_then(berth_api::ApiVersion::parse),
            Err(e @ (ClientError::Connect(_) | ClientError::Http(_))) => return Err(e),
            Err(_) => None,
        };
        let ours = berth_api::ApiVersion::parse(CLIENT_API_VERSION).expect("valid constant");
        let v = match server {
            Some(s) if s < ours => s,
            _ => ours,
        };
        c.prefix = format!("/v{v}");
        Ok(c)
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> &str {
        self.prefix.trim_start_matches("/v")
    }

    async fn sender(&self) -> Result<hyper::client::conn::http1::SendRequest<Body>, ClientError> {
        let stream = UnixStream::connect(&self.sock)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => ClientError::Permission(self.host.clone()),
                _ => ClientError::Connect(self.host.clone()),
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Request<Body> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", "api.moby.localhost")
            .header(
                "user-agent",
                concat!("Berth-Client/", env!("CARGO_PKG_VERSION"), " (linux)"),
            );
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        b.body(body).expect("valid request")
    }

    /// Sends a request; an error status becomes `ClientError::Daemon`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.send_headers(method, path, body, content_type, &[])
            .await
    }

    /// Sends a request with extra headers (`X-Registry-Auth`).
    pub async fn send_headers(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
        headers: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        if self.debug {
            eprintln!("DEBU[0000] {method} {}{path}", self.prefix);
        }
        let mut sender = self.sender().await?;
        let mut req = self.request(method, path, body, content_type);
        for (k, v) in headers {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                req.headers_mut().insert(*k, v);
            }
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        check(resp).await
    }

    /// GET and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, empty(), None).await?;
        decode(resp).await
    }

    /// GET as an order-preserving value.
    pub async fn get_value(&self, path: &str) -> Result<Value, ClientError> {
        self.get(path).await
    }

    /// POST with an optional JSON body, returning the response.
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response<Incoming>, ClientError> {
        match body {
            Some(b) => {
                self.send(Method::POST, path, json_body(b), Some("application/json"))
                    .await
            }
            None => self.send(Method::POST, path, empty(), None).await,
        }
    }

    /// POST without a body, discarding the response body.
    pub async fn post_empty(&self, path: &str) -> Result<(), ClientError> {
        let resp = self.post::<()>(path, None).await?;
        read_body(resp).await?;
        Ok(())
    }

    /// DELETE, returning the response.
    pub async fn delete(&self, path: &str) -> Result<Response<Incoming>, ClientError> {
        self.send(Method::DELETE, path, empty(), None).await
    }

    /// Opens a hijacked stream (`Connection: Upgrade`, `Upgrade: tcp`; expects 101).
    pub async fn hijack(&self, path: &str) -> Result<Hijacked, ClientError> {
        self.hijack_with(path, empty(), "text/plain").await
    }

    /// Opens a hijacked stream with a request body (`exec start` sends its JSON config).
    pub async fn hijack_with(
        &self,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<Hijacked, ClientError> {
        if self.debug {
            eprintln!("DEBU[0000] POST {}{path} (hijack)", self.prefix);
        }
        let mut sender = self.sender().await?;
        let mut req = self.request(Method::POST, path, body, Some(content_type));
        req.headers_mut()
            .insert("connection", http::HeaderValue::from_static("Upgrade"));
        req.headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("tcp"));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = check(resp).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Http(format!(
                "attach: expected 101 Switching Protocols, got {}",
                resp.status()
            )));
        }
        let up = hyper::upgrade::on(resp)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(TokioIo::new(up))
    }
}

async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
    let status = resp.status();
    if status.as_u16() < 400 {
        return Ok(resp);
    }
    let body = read_body(resp).await.unwrap_or_default();
    let message = match serde_json::from_slice::<berth_api::ErrorBody>(&body) {
        Ok(e) => e.message,
        Err(_) => {
            let t = String::from_utf8_lossy(&body).trim().to_string();
            if t.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                t
            }
        }
    };
    Err(ClientError::Daemon {
        status: status.as_u16(),
        message,
    })
}

/// Reads a whole response body.
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// Reads and decodes a JSON response body.
pub async fn decode<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, ClientError> {
    let b = read_body(resp).await?;
    serde_json::from_slice(&b).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Reads the next chunk of a streaming body (`None` at the end).
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, ClientError> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(ClientError::Http(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    return Ok(Some(d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(q("busybox:latest"), "busybox%3Alatest");
        assert_eq!(
            q(r#"{"status":["exited"]}"#),
            "%7B%22status%22%3A%5B%22exited%22%5D%7D"
        );
    }

    #[test]
    fn messages_like_docker() {
        assert_eq!(
            ClientError::Connect(DEFAULT_HOST.into()).to_string(),
            "Cannot connect to the Berth daemon at unix:///run/berth/berth.sock. Is the berth daemon running?"
        );
        assert_eq!(
            ClientError::Daemon {
                status: 404,
                message: "No such container: x".into()
            }
            .to_string(),
            "Error response from daemon: No such container: x"
        );
    }
}
