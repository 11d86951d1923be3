//! berthd: the Berth daemon. It speaks the Docker Engine API on a unix socket and runs containers
//! through one `berth-shim` process each.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod build;
pub mod build_remote;
pub mod config;
pub mod container;
pub mod daemon;
pub mod distribution;
pub mod error;
pub mod events;
pub mod exec;
pub mod http;
pub mod images;
pub mod linger;
pub mod names;
pub mod networks;
pub mod router;
pub mod shim;
pub mod signal;
pub mod system;
pub mod userns;
pub mod util;
pub mod volumes;
pub mod volumes_from;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub use daemon::{Daemon, Settings};
pub use error::{Error, Result};

/// Binds a unix socket: removes a stale one, sets mode 0660 and group `berth` when it exists.
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Unavailable(format!(
                "another daemon is listening on {}",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    if let Ok(Some(g)) = nix::unistd::Group::from_name("berth") {
        let _ = nix::unistd::chown(path, None, Some(g.gid));
    }
    Ok(l)
}

/// Accepts connections forever, each served on its own task.
pub async fn serve(d: Arc<Daemon>, l: tokio::net::UnixListener) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(router::serve_conn(d.clone(), s));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
