//! HTTP plumbing: the response body type, JSON helpers, query parsing, the error mapping.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// The response body: a whole buffer or a channel of chunks.
#[derive(Debug)]
pub enum Body {
    /// A complete body.
    Full(Option<Bytes>),
    /// Chunks sent by a task; the body ends when the sender is dropped.
    Chan(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Chan(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Chan(_) => http_body::SizeHint::default(),
        }
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(None)
    }

    /// A streamed body and the sender that feeds it.
    pub fn channel() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(32);
        (tx, Body::Chan(rx))
    }
}

/// The response type of every handler.
pub type Resp = Response<Body>;

/// A JSON response.
pub fn json<T: Serialize>(status: u16, v: &T) -> Resp {
    let mut data = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    data.push(b'\n');
    json_bytes(status, data)
}

/// A JSON response from text already serialized.
pub fn json_bytes(status: u16, data: Vec<u8>) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(data))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A plain-text response.
pub fn text(status: u16, s: &str) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::copy_from_slice(s.as_bytes()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An empty response with a status.
pub fn empty(status: u16) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r
}

/// The one place where errors become responses: status from the error class, `{"message": ...}` body.
pub fn error_response(e: &Error) -> Resp {
    let status = e.status();
    if status == 304 {
        return empty(304);
    }
    if status >= 500 {
        tracing::error!("request failed: {e}");
    } else {
        tracing::debug!("request error {status}: {e}");
    }
    json(status, &berth_api::ErrorBody::new(e.to_string()))
}

/// Parsed query parameters (last value wins).
#[derive(Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A parameter's value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter, with Docker's truthiness.
    pub fn bool(&self, k: &str) -> bool {
        crate::util::bool_value(self.get(k))
    }

    /// An integer parameter; a malformed value is a 400.
    pub fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::invalid(format!("invalid value for {k}: {v}"))),
        }
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<berth_api::Filters> {
        berth_api::Filters::parse(self.get("filters").unwrap_or("")).map_err(Error::Invalid)
    }
}

/// Limit of JSON request bodies.
pub const JSON_LIMIT: usize = 16 << 20;

/// Reads a whole (small) request body, refusing more than [`JSON_LIMIT`] bytes.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes> {
    match Limited::new(req.into_body(), JSON_LIMIT).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(Error::TooLarge(format!(
                    "request body is too large (limit {JSON_LIMIT} bytes)"
                )))
            } else {
                Err(Error::invalid(format!("error reading request body: {e}")))
            }
        }
    }
}

/// Reads and decodes a JSON body; an empty body gives `T::default()`.
pub async fn read_json<T: DeserializeOwned + Default>(req: Request<Incoming>) -> Result<T> {
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("invalid JSON: {e}")))
}

/// Makes a `Full` body from a byte buffer (used for the rare non-JSON reply).
pub fn full(b: impl Into<Bytes>) -> Body {
    Body::Full(Some(b.into()))
}
