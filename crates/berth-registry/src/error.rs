//! Typed errors of the registry client, each with an [`ErrorKind`] the daemon maps to an HTTP status.

/// The class of an error, mapped once by the daemon to an HTTP status as dockerd does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The repository, tag, manifest or blob does not exist, or access was denied (404).
    NotFound,
    /// The registry wants (other) credentials (401).
    Unauthorized,
    /// A malformed reference, manifest or image (400).
    InvalidArgument,
    /// The registry cannot be reached or failed (5xx, network errors).
    Unavailable,
    /// Anything else.
    Internal,
}

/// A registry-client error; `Display` gives dockerd's wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not found or access denied, message verbatim (e.g. `manifest for x:1 not found: manifest unknown: manifest unknown`).
    #[error("{0}")]
    NotFound(String),
    /// Authentication failed, message verbatim (e.g. `unauthorized: authentication required`).
    #[error("{0}")]
    Unauthorized(String),
    /// A malformed argument or registry answer, message verbatim.
    #[error("{0}")]
    InvalidArgument(String),
    /// The registry is unreachable or failed, message verbatim.
    #[error("{0}")]
    Unavailable(String),
    /// An internal error, message verbatim.
    #[error("{0}")]
    Internal(String),
    /// An error of the image store.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Image(e) => match e.kind() {
                berth_image::ErrorKind::NotFound => ErrorKind::NotFound,
                berth_image::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                berth_image::ErrorKind::Conflict | berth_image::ErrorKind::Internal => {
                    ErrorKind::Internal
                }
            },
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One error of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct RegistryError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl RegistryError {
    /// As distribution's `errcode.Error` prints: `manifest unknown: manifest unknown`.
    pub fn render(&self) -> String {
        let code = self.code.replace('_', " ").to_lowercase();
        if self.message.is_empty() {
            code
        } else {
            format!("{code}: {}", self.message)
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct ErrorsBody {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

/// The first error of a registry's error body, or one made from the status.
pub(crate) fn parse_registry_error(status: u16, body: &[u8]) -> RegistryError {
    if let Ok(b) = serde_json::from_slice::<ErrorsBody>(body)
        && let Some(e) = b.errors.into_iter().next()
    {
        return e;
    }
    match status {
        401 => RegistryError {
            code: "UNAUTHORIZED".into(),
            message: "authentication required".into(),
        },
        403 => RegistryError {
            code: "DENIED".into(),
            message: "requested access to the resource is denied".into(),
        },
        404 => RegistryError {
            code: "NOT_FOUND".into(),
            message: String::new(),
        },
        _ => RegistryError {
            code: "UNKNOWN".into(),
            message: format!(
                "unexpected status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ),
        },
    }
}
