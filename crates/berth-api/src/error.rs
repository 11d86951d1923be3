//! The small set of error classes every crate's errors map to, and the `{"message": ...}` body.

use serde::{Deserialize, Serialize};

/// Error classes, each with the HTTP status dockerd uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or asks for something invalid.
    InvalidArgument,
    /// 403: the operation is not allowed.
    Forbidden,
    /// 404: no such container, image, exec, volume or network.
    NotFound,
    /// 409: the request conflicts with the current state (name in use, container running, image in use).
    Conflict,
    /// 304: nothing to do (e.g. starting a running container).
    NotModified,
    /// 503: the daemon cannot serve this now.
    Unavailable,
    /// 500: a real internal fault.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code for this class.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::NotModified => 304,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// The JSON body of every error response: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The human-readable message; clients print it as is.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
