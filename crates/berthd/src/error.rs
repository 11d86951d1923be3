//! The daemon's typed errors and their single mapping to an API error class.

use berth_api::ErrorKind;

/// A daemon error; `Display` is the message clients print.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 400.
    #[error("{0}")]
    Invalid(String),
    /// 304 (the message is not sent: a 304 has no body).
    #[error("{0}")]
    NotModified(String),
    /// 413/400: a request body above the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 401: the registry refused the credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
    /// 501: the operation is not supported (e.g. reading logs of the `none` driver).
    #[error("{0}")]
    NotImplemented(String),
    /// An I/O error with context, 500.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The API error class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Invalid(_) | Error::TooLarge(_) => ErrorKind::InvalidArgument,
            Error::NotModified(_) => ErrorKind::NotModified,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Unauthorized(_) | Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::Internal(_) | Error::NotImplemented(_) | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::TooLarge(_) => 413,
            Error::Unauthorized(_) => 401,
            Error::NotImplemented(_) => 501,
            e => e.kind().status(),
        }
    }

    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A 400 error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// A 500 error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// `No such container: <x>`.
    pub fn no_such_container(x: &str) -> Self {
        Error::NotFound(format!("No such container: {x}"))
    }
}

/// The daemon's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
