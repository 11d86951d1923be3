//! Berth's own OCI runtime: turns an OCI runtime spec into an isolated, running process.
//!
//! All `unsafe` code and raw syscalls of the project live in [`sys`]; everything else is safe
//! code on top of `nix`, `caps` and `oci-spec`.
//!
//! [`create`] must be called from a single-threaded process (the shim), never from a
//! multithreaded one: it forks.
#![warn(missing_docs)]

pub mod cgroups;
mod create;
mod error;
mod exec;
mod favor;
mod init;
pub mod mount;
pub mod path;
pub mod seccomp;
mod seccomp_names;
pub mod seccomp_profile;
mod sockpath;
pub mod spec;
pub mod sys;

pub use cgroups::{CgroupManager, delete_cgroups};
pub use create::{ContainerStdio, Created, Started, create, create_in, default_cgroups_path};
pub use error::{ExecErrorKind, RuntimeError};
pub use exec::{Execed, exec};
pub use favor::favor_dynmods;
pub use mount::{is_mountpoint, mount_overlay, mount_overlay_idmapped, unmount};
pub use oci_spec;
pub use sockpath::unix_socket_path;
pub use sys::{
    ExitStatus, ForkResult, daemonize_setsid, fork, kill, openpty, set_child_subreaper, set_winsize,
};

/// Result alias for this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
