//! A couple of network namespaces made ahead of time, so that a container start does not wait for
//! the kernel to build one (`unshare(CLONE_NEWNET)` initialises every per-namespace subsystem: a
//! few milliseconds). A start takes a spare, binds its namespace file where the container's goes,
//! and the pool is topped up on a background thread.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{MsFlags, mount};

use crate::error::{NetworkError, Result};
use crate::netns;

/// How many namespaces wait ready.
const SPARES: usize = 2;
/// Spare files are `<netns dir>/spare-<hex>` (container files are named by the 64-hex container ID).
const PREFIX: &str = "spare-";

/// The pool of one daemon.
#[derive(Debug)]
pub(crate) struct Spares {
    dir: PathBuf,
    state: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    ready: Vec<PathBuf>,
    filling: bool,
    closed: bool,
}

impl Spares {
    /// An empty pool for namespace files under `dir`.
    pub(crate) fn new(dir: &Path) -> Arc<Spares> {
        Arc::new(Spares {
            dir: dir.to_path_buf(),
            state: Mutex::new(Pool::default()),
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
                    if me.state.lock().expect("spares").ready.len() >= SPARES {
                        break;
                    }
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
            });
        if spawned.is_err() {
            self.state.lock().expect("spares").filling = false;
        }
    }

    /// Removes the ready namespaces and makes no more (daemon shutdown).
    pub(crate) fn close(&self) {
        let ready = {
            let mut st = self.state.lock().expect("spares");
            st.closed = true;
            std::mem::take(&mut st.ready)
        };
        for p in ready {
            let _ = netns::remove_netns(&p);
        }
    }
}

/// Makes the namespace of the spare file `spare` the one at `path`: `path` becomes a bind of it,
/// and the spare's own mount goes away on a background thread (an unmount waits for an RCU grace
/// period; the namespace lives on through the new mount).
pub(crate) fn adopt(spare: PathBuf, path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| NetworkError::io(format!("create netns file {}", path.display()), e))?;
    let bound = mount(
        Some(spare.as_path()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    std::thread::spawn(move || {
        let _ = netns::remove_netns(&spare);
    });
    bound.map_err(|e| {
        let _ = std::fs::remove_file(path);
        NetworkError::io(format!("bind-mount netns on {}", path.display()), e.into())
    })
}
