//! Typed errors of the image store, each with a [`ErrorKind`] the daemon maps to an HTTP status.

use std::path::Path;

/// The class of an error, mapped once by the daemon to an HTTP status (404/409/400/500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The image, reference or layer does not exist (404).
    NotFound,
    /// The request conflicts with the store's state, e.g. an image in use (409).
    Conflict,
    /// The request is malformed: bad reference, bad tar, bad change (400).
    InvalidArgument,
    /// Anything else: I/O failures, corrupt metadata (500).
    Internal,
}

/// An image-store error; `Display` gives dockerd's wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `No such image: <ref>`.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// Some other missing object, message given verbatim.
    #[error("{0}")]
    NotFound(String),
    /// A conflict, message given verbatim (e.g. `conflict: unable to delete ...`).
    #[error("{0}")]
    Conflict(String),
    /// A malformed argument, message given verbatim (e.g. `invalid reference format`).
    #[error("{0}")]
    InvalidArgument(String),
    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An internal error, message given verbatim.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoSuchImage(_) | Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Wraps an I/O error with context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error about a path.
    pub(crate) fn io_path(what: &str, path: &Path, source: std::io::Error) -> Error {
        Error::io(format!("{what} {}", path.display()), source)
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Error {
        Error::Internal(msg.into())
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Extension to attach path context to `io::Result`.
pub(crate) trait IoContext<T> {
    /// Adds "`what` `path`" context.
    fn ctx(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io_path(what, path, e))
    }
}
