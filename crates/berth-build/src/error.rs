//! Typed errors of the builder, each with a class the daemon maps to an HTTP status or a stream error.

/// A build error; `Display` gives dockerd's wording where dockerd has one.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `dockerfile parse error on line N: ...` (the classic builder's wording).
    #[error("dockerfile parse error on line {line}: {message}")]
    Parse {
        /// 1-based line of the Dockerfile.
        line: usize,
        /// What is wrong, e.g. `unknown instruction: RUNN`.
        message: String,
    },
    /// An instruction that parsed but cannot run (bad stage name, bad flag value, ...), with its line.
    #[error("Dockerfile:{line}: {message}")]
    Instruction {
        /// 1-based line of the Dockerfile.
        line: usize,
        /// The message.
        message: String,
    },
    /// The request itself is invalid (no Dockerfile, bad target, bad build context, ...).
    #[error("{0}")]
    Invalid(String),
    /// A RUN step exited non-zero: `The command '/bin/sh -c exit 3' returned a non-zero code: 3`.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    NonZero {
        /// The command as Docker prints it (args joined by spaces).
        command: String,
        /// The exit code.
        code: i64,
    },
    /// A path of the build context that is missing or outside it.
    #[error("{0}")]
    Context(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// The backend (the daemon's container path, registry) failed.
    #[error("{0}")]
    Backend(String),
    /// The build was cancelled (the client went away).
    #[error("build cancelled")]
    Cancelled,
    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the builder was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The Dockerfile line the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            BuildError::Parse { line, .. } | BuildError::Instruction { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The `errorDetail.code` of the JSON stream (the exit code of a failed RUN).
    pub fn code(&self) -> Option<i64> {
        match self {
            BuildError::NonZero { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True if the request was at fault (HTTP 400 before any output), not the server.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            BuildError::Io { .. } | BuildError::Backend(_) | BuildError::Cancelled
        ) && !matches!(self, BuildError::Image(e) if e.kind() == berth_image::ErrorKind::Internal)
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> BuildError {
        BuildError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn parse(line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Parse {
            line,
            message: message.into(),
        }
    }

    pub(crate) fn at(line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            line,
            message: message.into(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;
