//! Containers: the on-disk record, the in-memory registry, and one module per lifecycle verb.

pub mod archive;
pub mod attach;
pub mod create;
pub mod delete;
pub mod health;
pub mod init;
pub mod list;
pub mod logcfg;
pub mod logs;
pub mod merge;
pub mod restart;
pub mod spec;
pub mod start;
pub mod stop;
pub mod top;
pub mod update;
pub mod wait;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::container::{Config, HostConfig, State, ZERO_TIME};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};

/// The writable layer of a container as the image store prepared it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct LayerPaths {
    /// Lower dirs, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Upper dir.
    pub upper: PathBuf,
    /// Work dir.
    pub work: PathBuf,
}

/// berthd's record of a container, stored as `config.v2.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Record {
    /// Full ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Creation time (RFC3339Nano).
    pub created: String,
    /// Executable.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// State.
    pub state: State,
    /// Image ID.
    pub image: String,
    /// Name with a leading `/`.
    pub name: String,
    /// Restarts.
    pub restart_count: i64,
    /// Merged configuration.
    pub config: Config,
    /// Host configuration.
    pub host_config: HostConfig,
    /// The container's writable layer.
    #[serde(default)]
    pub layer: LayerPaths,
    /// Set when the record of a running container has been stopped on purpose by `stop`/`kill`
    /// (reserved for restart policies).
    #[serde(default)]
    pub has_been_manually_stopped: bool,
    /// Networks asked for and, while running, attached (see [`crate::networks`]).
    #[serde(default)]
    pub network: crate::networks::NetRecord,
}

impl Record {
    /// A fresh `created` state.
    pub fn created_state() -> State {
        State {
            status: "created".into(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            ..Default::default()
        }
    }

    /// True while the process runs.
    pub fn running(&self) -> bool {
        self.state.running
    }
}

/// What waiters watch: a counter of exits, whether it runs, the last exit code, removal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Number of exits (and failed starts) seen.
    pub exits: u64,
    /// Running now.
    pub running: bool,
    /// Last exit code.
    pub exit_code: i64,
    /// The container has been removed.
    pub removed: bool,
}

/// A client attached before the shim existed: it gets a connection once start spawns the shim.
#[derive(Debug)]
pub struct PendingAttach {
    /// Request line to send to the shim.
    pub stdin: bool,
    /// Stdout wanted.
    pub stdout: bool,
    /// Stderr wanted.
    pub stderr: bool,
    /// Where to hand the shim connection (already past the `{"ok":true}` line).
    pub tx: oneshot::Sender<tokio::net::UnixStream>,
}

/// A container in memory.
#[derive(Debug)]
pub struct Ctr {
    /// Full ID.
    pub id: String,
    /// The record (short critical sections only).
    pub rec: Mutex<Record>,
    /// Serializes lifecycle operations (start, stop, remove, exit handling).
    pub op: tokio::sync::Mutex<()>,
    /// State changes for waiters.
    pub events: watch::Sender<Signal>,
    /// Attach sessions waiting for the shim.
    pub pending: Mutex<Vec<PendingAttach>>,
    /// The restart policy's back-off (see [`restart`]).
    pub restart: restart::Backoff,
    /// The `ps` entry of the current record, built on first use; [`Ctr::update`] drops it.
    pub summary: Mutex<Option<Arc<list::Entry>>>,
}

impl Ctr {
    /// Wraps a record.
    pub fn new(rec: Record) -> Arc<Self> {
        let sig = Signal {
            exits: 0,
            running: rec.state.running,
            exit_code: rec.state.exit_code,
            removed: false,
        };
        Arc::new(Ctr {
            id: rec.id.clone(),
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            events: watch::channel(sig).0,
            pending: Mutex::new(Vec::new()),
            restart: Default::default(),
            summary: Mutex::new(None),
        })
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> Record {
        self.rec.lock().expect("record lock").clone()
    }

    /// Changes the record under its lock.
    pub fn update<R>(&self, f: impl FnOnce(&mut Record) -> R) -> R {
        let mut rec = self.rec.lock().expect("record lock");
        let out = f(&mut rec);
        // Dropped under the record lock, so a list cannot cache an entry of the old record.
        *self.summary.lock().expect("summary lock") = None;
        out
    }

    /// Publishes the current state to waiters, counting an exit when `exited`.
    pub fn notify(&self, exited: bool) {
        let (running, code) = self.update(|r| (r.state.running, r.state.exit_code));
        self.events.send_modify(|s| {
            if exited {
                s.exits += 1;
            }
            s.running = running;
            s.exit_code = code;
        });
    }
}

/// All containers, by ID and by name.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: BTreeMap<String, Arc<Ctr>>,
    by_name: HashMap<String, String>,
}

impl Registry {
    /// Adds a container; its name must be free.
    pub fn insert(&mut self, c: Arc<Ctr>) {
        let name = c.snapshot().name;
        self.by_name.insert(name, c.id.clone());
        self.by_id.insert(c.id.clone(), c);
    }

    /// Removes a container.
    pub fn remove(&mut self, id: &str) {
        if let Some(c) = self.by_id.remove(id) {
            let name = c.snapshot().name;
            if self.by_name.get(&name).map(String::as_str) == Some(id) {
                self.by_name.remove(&name);
            }
        }
    }

    /// The ID owning `name` (with leading `/`).
    pub fn name_owner(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    /// All containers.
    pub fn all(&self) -> Vec<Arc<Ctr>> {
        self.by_id.values().cloned().collect()
    }

    /// Finds a container by full ID, name (with or without `/`) or unique ID prefix.
    pub fn find(&self, key: &str) -> Result<Arc<Ctr>> {
        if key.is_empty() {
            return Err(Error::no_such_container(key));
        }
        if let Some(c) = self.by_id.get(key) {
            return Ok(c.clone());
        }
        let name = if key.starts_with('/') {
            key.to_string()
        } else {
            format!("/{key}")
        };
        if let Some(id) = self.by_name.get(&name) {
            if let Some(c) = self.by_id.get(id) {
                return Ok(c.clone());
            }
        }
        if key.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut it = self
                .by_id
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key));
            if let Some((_, c)) = it.next() {
                if it.next().is_some() {
                    return Err(Error::NotFound(format!(
                        "multiple IDs found with provided prefix: {key}"
                    )));
                }
                return Ok(c.clone());
            }
        }
        Err(Error::no_such_container(key))
    }
}

/// Paths of one container.
#[derive(Debug, Clone)]
pub struct CtrPaths {
    /// `<data-root>/containers/<id>`.
    pub data: PathBuf,
    /// `<exec-root>/containers/<id>`.
    pub bundle: PathBuf,
}

impl CtrPaths {
    /// The paths of container `id`.
    pub fn new(data_root: &Path, exec_root: &Path, id: &str) -> Self {
        CtrPaths {
            data: data_root.join("containers").join(id),
            bundle: exec_root.join("containers").join(id),
        }
    }
    /// `config.v2.json`.
    pub fn config(&self) -> PathBuf {
        self.data.join("config.v2.json")
    }
    /// The json-file log.
    pub fn log(&self) -> PathBuf {
        let id = self.data.file_name().unwrap_or_default().to_string_lossy();
        self.data.join(format!("{id}-json.log"))
    }
    /// `exit.json`.
    pub fn exit_file(&self) -> PathBuf {
        self.data.join("exit.json")
    }
    /// The overlay mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
    /// The shim's socket.
    pub fn shim_sock(&self) -> PathBuf {
        self.bundle.join("shim.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn find_by_id_name_prefix() {
        let mut r = Registry::default();
        r.insert(Ctr::new(rec("abc123", "/web")));
        r.insert(Ctr::new(rec("abd456", "/db")));
        assert_eq!(r.find("abc123").unwrap().id, "abc123");
        assert_eq!(r.find("web").unwrap().id, "abc123");
        assert_eq!(r.find("/db").unwrap().id, "abd456");
        assert_eq!(r.find("abd").unwrap().id, "abd456");
        assert!(
            r.find("ab")
                .unwrap_err()
                .to_string()
                .contains("multiple IDs")
        );
        assert_eq!(
            r.find("zz").unwrap_err().to_string(),
            "No such container: zz"
        );
        r.remove("abc123");
        assert!(r.find("web").is_err());
    }
}
