//! A couple of network namespaces made ahead of time, so that a container start does not wait for
//! the kernel to build one (`unshare(CLONE_NEWNET)` initialises every per-namespace subsystem: a
//! few milliseconds). A start takes a spare, binds its namespace file where the container's goes,
//! and the pool is topped up on a background thread.
//!
//! Every background thread (the filler, the unmounts of adopted spares) is counted, and
//! [`Spares::close`] waits for them: a daemon that exits right after a start or right after its own
//! start would otherwise leave a namespace mount half made or not yet unmounted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};

use crate::error::{NetworkError, Result};
use crate::netns;

/// How many namespaces wait ready.
const SPARES: usize = 2;
/// Spare files are `<netns dir>/spare-<hex>` (container files are named by the 64-hex container ID).
const PREFIX: &str = "spare-";
/// How long [`Spares::close`] waits for background threads (each is a few milliseconds of work).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The pool of one daemon.
#[derive(Debug)]
pub(crate) struct Spares {
    dir: PathBuf,
    state: Mutex<Pool>,
    /// Signalled when a background thread ends.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct Pool {
    ready: Vec<PathBuf>,
    filling: bool,
    closed: bool,
    /// Background unmounts of adopted spares not yet done.
    unmounting: usize,
}

impl Spares {
    /// An empty pool for namespace files under `dir`.
    pub(crate) fn new(dir: &Path) -> Arc<Spares> {
        Arc::new(Spares {
            dir: dir.to_path_buf(),
            state: Mutex::new(Pool::default()),
            idle: Condvar::new(),
        })
    }

    /// A ready namespace file, if any.
    pub(crate) fn take(&self) -> Option<PathBuf> {
        self.state.lock().expect("spares").ready.pop()
    }

    /// Whether `path` is one of the ready namespaces.
    pub(crate) fn holds(&self, path: &Path) -> bool {
        self.state
            .lock()
            .expect("spares")
            .ready
            .iter()
            .any(|p| p == path)
    }

    /// Tops the pool up on a background thread (one at a time).
    pub(crate) fn fill(self: &Arc<Self>) {
        {
            let mut st = self.state.lock().expect("spares");
            if st.filling || st.closed || st.ready.len() >= SPARES {
                return;
            }
            st.filling = true;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("berth-netns-spare".into())
            .spawn(move || {
                loop {
                    let st = me.state.lock().expect("spares");
                    if st.closed || st.ready.len() >= SPARES {
                        break;
                    }
                    drop(st);
                    let p = me.dir.join(format!("{PREFIX}{}", crate::random_hex(8)));
                    if let Err(e) = netns::create_netns(&p) {
                        tracing::debug!("spare network namespace: {e}");
                        break;
                    }
                    let mut st = me.state.lock().expect("spares");
                    if st.closed {
                        drop(st);
                        let _ = netns::remove_netns(&p);
                        break;
                    }
                    st.ready.push(p);
                }
                me.state.lock().expect("spares").filling = false;
                me.idle.notify_all();
            });
        if spawned.is_err() {
            self.state.lock().expect("spares").filling = false;
        }
    }

    /// Removes the ready namespaces, makes no more, and waits for the background threads (a
    /// namespace being made, a spare being unmounted) to finish: after it nothing of the pool is
    /// left (daemon shutdown).
    pub(crate) fn close(&self) {
        let ready = {
            let mut st = self.state.lock().expect("spares");
            st.closed = true;
            std::mem::take(&mut st.ready)
        };
        for p in ready {
            let _ = netns::remove_netns(&p);
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut st = self.state.lock().expect("spares");
        while st.filling || st.unmounting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("spare network namespaces: background work still running");
                break;
            }
            st = self.idle.wait_timeout(st, left).expect("spares").0;
        }
    }

    /// Makes the namespace of the spare file `spare` the one at `path`: `path` becomes a bind of
    /// it, and the spare's own mount goes away on a background thread (an unmount waits for an RCU
    /// grace period; the namespace lives on through the new mount), which [`Spares::close`] waits for.
    pub(crate) fn adopt(self: &Arc<Self>, spare: PathBuf, path: &Path) -> Result<()> {
        let bound = bind(&spare, path);
        self.state.lock().expect("spares").unmounting += 1;
        let me = Arc::clone(self);
        let p = spare.clone();
        let spawned = std::thread::Builder::new()
            .name("berth-netns-unmount".into())
            .spawn(move || {
                let _ = netns::remove_netns(&p);
                me.state.lock().expect("spares").unmounting -= 1;
                me.idle.notify_all();
            });
        if spawned.is_err() {
            // No thread: the unmount is done here.
            let _ = netns::remove_netns(&spare);
            self.state.lock().expect("spares").unmounting -= 1;
        }
        bound
    }
}

/// `path` (created) becomes a bind mount of the namespace file `spare`.
fn bind(spare: &Path, path: &Path) -> Result<()> {
    netns::create_mount_point(path)?;
    mount(
        Some(spare),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(path);
        NetworkError::io(format!("bind-mount netns on {}", path.display()), e.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names in `dir` and mounts under it.
    fn left(dir: &Path) -> (Vec<String>, Vec<String>) {
        let names = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let prefix = format!("{}/", dir.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        (names, mounts)
    }

    /// `close` right after a fill started, or right after a start adopted a spare, returns only
    /// when no spare is left: a daemon exiting then leaves no namespace mount behind.
    #[test]
    fn close_waits_for_background_work() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let ns = dir.path().join("netns");
            let s = Spares::new(&ns);
            s.fill();
            s.close();
            assert_eq!(left(&ns), (vec![], vec![]));
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("netns");
        let s = Spares::new(&ns);
        s.fill();
        let start = Instant::now();
        let spare = loop {
            if let Some(p) = s.take() {
                break p;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no spare made");
            std::thread::sleep(Duration::from_millis(2));
        };
        let ctr = ns.join("c");
        s.adopt(spare, &ctr).unwrap();
        s.close();
        let c = ctr.display().to_string();
        assert_eq!(left(&ns), (vec!["c".to_string()], vec![c]));
        netns::remove_netns(&ctr).unwrap();
    }
}
