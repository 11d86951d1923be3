//! Typed errors of the runtime.

use std::fmt;

/// Why the container's process could not `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecErrorKind {
    /// A bare name was not found in `$PATH` (exit code 127 in Docker).
    NotFoundInPath,
    /// `execve` failed with this errno (ENOENT → 127, EACCES → 126 in Docker).
    Errno(i32),
}

/// An error of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec is missing something or asks for something unsupported.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The container's init failed while setting up (message from the child).
    #[error("container init: {0}")]
    Init(String),
    /// The container's process could not be executed.
    #[error("exec: \"{path}\": {}", ExecMsg(*.kind))]
    Exec {
        /// The program as given in `process.args[0]`.
        path: String,
        /// Why.
        kind: ExecErrorKind,
    },
    /// A cgroup operation failed.
    #[error("cgroup: {0}")]
    Cgroup(String),
}

struct ExecMsg(ExecErrorKind);

impl fmt::Display for ExecMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExecErrorKind::NotFoundInPath => f.write_str("executable file not found in $PATH"),
            ExecErrorKind::Errno(e) => f.write_str(&errno_text(e)),
        }
    }
}

/// Go-style (lowercase) text for an errno, as runc prints it.
pub(crate) fn errno_text(e: i32) -> String {
    let errno = nix::errno::Errno::from_raw(e);
    match errno {
        nix::errno::Errno::ENOENT => "no such file or directory".into(),
        nix::errno::Errno::EACCES => "permission denied".into(),
        nix::errno::Errno::ENOEXEC => "exec format error".into(),
        nix::errno::Errno::ENOTDIR => "not a directory".into(),
        nix::errno::Errno::E2BIG => "argument list too long".into(),
        nix::errno::Errno::ETXTBSY => "text file busy".into(),
        other => {
            let d = other.desc();
            let mut s = d.to_string();
            if let Some(c) = s.get_mut(0..1) {
                c.make_ascii_lowercase();
            }
            s
        }
    }
}

impl RuntimeError {
    pub(crate) fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        RuntimeError::Sys {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            op: op.into(),
            source,
        }
    }

    /// The exit code Docker reports for a failed start: 127 (not found), 126 (not executable).
    pub fn exec_exit_code(&self) -> Option<i32> {
        match self {
            RuntimeError::Exec { kind, .. } => Some(match kind {
                ExecErrorKind::NotFoundInPath => 127,
                ExecErrorKind::Errno(e) if *e == libc::ENOENT => 127,
                ExecErrorKind::Errno(e) if *e == libc::EACCES => 126,
                ExecErrorKind::Errno(_) => 126,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_messages_read_like_runc() {
        let e = RuntimeError::Exec {
            path: "nosuch".into(),
            kind: ExecErrorKind::NotFoundInPath,
        };
        assert_eq!(
            e.to_string(),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(e.exec_exit_code(), Some(127));
        let e = RuntimeError::Exec {
            path: "/etc".into(),
            kind: ExecErrorKind::Errno(libc::EACCES),
        };
        assert_eq!(e.to_string(), "exec: \"/etc\": permission denied");
        assert_eq!(e.exec_exit_code(), Some(126));
        let e = RuntimeError::Exec {
            path: "/x".into(),
            kind: ExecErrorKind::Errno(libc::ENOENT),
        };
        assert_eq!(e.to_string(), "exec: \"/x\": no such file or directory");
        assert_eq!(e.exec_exit_code(), Some(127));
    }
}
