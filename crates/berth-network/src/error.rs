//! Typed errors, each with a kind that the API edge maps to an HTTP status.

/// The class of an error (maps to `berth_api::ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such network, endpoint or container.
    NotFound,
    /// The request conflicts with existing state (name taken, address in use, active endpoints).
    Conflict,
    /// The request asks for something invalid (bad subnet, overlapping pool).
    InvalidArgument,
    /// The operation is not allowed (removing a predefined network or one with active endpoints).
    Forbidden,
    /// A kernel or tool failure.
    Internal,
}

impl From<ErrorKind> for berth_api::ErrorKind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::NotFound => berth_api::ErrorKind::NotFound,
            ErrorKind::Conflict => berth_api::ErrorKind::Conflict,
            ErrorKind::InvalidArgument => berth_api::ErrorKind::InvalidArgument,
            ErrorKind::Forbidden => berth_api::ErrorKind::Forbidden,
            ErrorKind::Internal => berth_api::ErrorKind::Internal,
        }
    }
}

/// An error of this crate; `Display` is dockerd's message where dockerd has one.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Not found (`network x not found`).
    #[error("{0}")]
    NotFound(String),
    /// Conflict (`network with name x already exists`).
    #[error("{0}")]
    Conflict(String),
    /// Invalid argument (`invalid subnet`, `Pool overlaps with other one on this address space`).
    #[error("{0}")]
    InvalidArgument(String),
    /// Forbidden (`bridge is a pre-defined network and cannot be removed`).
    #[error("{0}")]
    Forbidden(String),
    /// Internal failure with context.
    #[error("{0}")]
    Internal(String),
    /// I/O failure with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Netlink failure with context.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The cause.
        source: rtnetlink::Error,
    },
}

impl NetworkError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetworkError::NotFound(_) => ErrorKind::NotFound,
            NetworkError::Conflict(_) => ErrorKind::Conflict,
            NetworkError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            NetworkError::Forbidden(_) => ErrorKind::Forbidden,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetworkError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn nl(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetworkError::Netlink {
            context: context.into(),
            source,
        }
    }

    /// The errno of a netlink error, if this is one.
    pub(crate) fn netlink_errno(&self) -> Option<i32> {
        match self {
            NetworkError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
