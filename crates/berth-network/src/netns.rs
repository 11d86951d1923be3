//! Network namespaces made ahead of the container, as files the OCI spec can point at.
//!
//! Each operation that must happen inside a namespace runs in a dedicated, short-lived std thread that
//! `unshare`s or `setns`es, so no thread of the caller (a tokio worker, say) ever changes namespace.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{NetworkError, Result};
use crate::link;

/// Runs `f` on a fresh thread (so namespace changes die with it) and returns its result.
pub(crate) fn on_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| NetworkError::io("spawn namespace thread", e))?
        .join()
        .map_err(|_| NetworkError::Internal(format!("{name} thread panicked")))?
}

/// A current-thread tokio runtime for the netlink work of one thread.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetworkError::io("start netlink runtime", e))
}

/// Creates a new network namespace with `lo` up, bind-mounted on `path` (created, parent dirs too).
///
/// This is the whole network setup of a `--network none` container; bridge endpoints are added with
/// [`crate::NetworkManager::setup`].
pub fn create_netns(path: &Path) -> Result<()> {
    create_netns_with(path, None)
}

/// Creates the empty, read-only file a namespace is bind-mounted on (failing if it exists).
pub(crate) fn create_mount_point(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map(drop)
        .map_err(|e| NetworkError::io(format!("create netns file {}", path.display()), e))
}

/// [`create_netns`] and, when given, the first veth endpoint in it ([`link::setup_veth`]'s work) from
/// the same thread: one thread, one netlink runtime and one socket per namespace instead of two of
/// each, which is most of what a bridge network adds to a start.
pub(crate) fn create_netns_with(path: &Path, veth: Option<link::VethSpec>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetworkError::io(format!("create {}", dir.display()), e))?;
    }
    create_mount_point(path)?;
    let p: PathBuf = path.to_path_buf();
    let res = on_thread("berth-netns", move || {
        runtime()?.block_on(async {
            // Opened before unsharing: this socket stays in the host's namespace.
            let host = veth.as_ref().map(|_| link::connect()).transpose()?;
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::io("unshare(CLONE_NEWNET)", e.into()))?;
            let h = link::connect()?;
            link::set_up_index(&h, LOOPBACK_IFINDEX, "lo").await?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                NetworkError::io(format!("bind-mount netns on {}", p.display()), e.into())
            })?;
            let (Some(spec), Some(host)) = (veth, host) else {
                return Ok(());
            };
            let ns = open_ns(Path::new("/proc/thread-self/ns/net"))?;
            link::add_veth(&host, ns.as_raw_fd(), &spec).await?;
            let inside = link::configure_inside(&h, &spec).await;
            if inside.is_err() {
                let _ = link::delete_link_async(&host, &spec.host_name).await;
            }
            inside
        })
    });
    if res.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
    }
    res
}

/// `lo`'s index in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Unmounts and removes a namespace file made by [`create_netns`]; absent is fine.
pub fn remove_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::io(
                format!("unmount {}", path.display()),
                e.into(),
            ));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io(format!("remove {}", path.display()), e)),
    }
}

/// Runs `f` in a thread that has joined the network namespace at `path`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = open_ns(path)?;
    on_thread("berth-setns", move || {
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetworkError::io("setns(net)", e.into()))?;
        f()
    })
}

pub(crate) fn open_ns(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetworkError::NotFound(format!("network namespace {} not found", path.display()))
        } else {
            NetworkError::io(format!("open {}", path.display()), e)
        }
    })
}
