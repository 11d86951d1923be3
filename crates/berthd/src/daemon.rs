//! The engine state shared by all requests: paths, the container registry, the image store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::container::{Ctr, CtrPaths, Record, Registry};
use crate::error::{Error, Result};
use crate::images::Images;

/// Settings the daemon runs with (flags merged with the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Network keys (`bridge`, `bip`, `default-address-pools`, `nft-table`).
    pub network: crate::networks::NetSettings,
    /// Unix socket paths to listen on.
    pub hosts: Vec<String>,
    /// `--data-root`.
    pub data_root: PathBuf,
    /// `--exec-root`.
    pub exec_root: PathBuf,
    /// `--pidfile`.
    pub pidfile: PathBuf,
    /// `--debug`.
    pub debug: bool,
    /// Registries spoken to over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// OCI runtimes selectable with `--runtime` (the config file's `runtimes`, plus `runc`).
    pub runtimes: std::collections::BTreeMap<String, crate::config::RuntimeConf>,
    /// `--userns-remap` / `userns-remap` (see [`crate::userns`]).
    pub userns_remap: Option<String>,
    /// `cgroup-favor-dynmods`: set the kernel's `favordynmods` at start (default true).
    pub cgroup_favor_dynmods: bool,
}

/// The daemon.
#[derive(Debug)]
pub struct Daemon {
    /// Networks (see [`crate::networks`]).
    pub network: Arc<berth_network::NetworkManager>,
    /// Settings.
    pub settings: Settings,
    /// Containers.
    pub registry: Mutex<Registry>,
    /// The image store.
    pub images: Images,
    /// The `berth-shim` binary.
    pub shim: PathBuf,
    /// A stable daemon ID.
    pub id: String,
    /// The event bus.
    pub events: crate::events::Events,
    /// Exec instances.
    pub execs: crate::exec::Execs,
    /// The registry client (pull, push, login), made on first use: its TLS roots and connection pool
    /// cost megabytes that an idle daemon should not hold.
    registry_client: std::sync::OnceLock<berth_registry::RegistryClient>,
}

/// The directory (under the data and exec roots) of removed containers' files.
const TRASH: &str = "trash";

impl Daemon {
    /// Opens the stores under the data root.
    pub fn open(settings: Settings) -> Result<Arc<Self>> {
        for d in [
            settings.data_root.join("containers"),
            settings.exec_root.join("containers"),
            settings.data_root.join(TRASH),
            settings.exec_root.join(TRASH),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        // What a previous run renamed into the trash but had not deleted yet.
        let trash = [
            settings.data_root.join(TRASH),
            settings.exec_root.join(TRASH),
        ];
        std::thread::spawn(move || {
            for t in trash {
                for e in std::fs::read_dir(&t).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        });
        let id_file = settings.data_root.join("engine-id");
        let id = match std::fs::read_to_string(&id_file) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let id = crate::util::random_hex(16);
                crate::util::write_atomic(&id_file, id.as_bytes())
                    .map_err(|e| Error::io("write engine-id", e))?;
                id
            }
        };
        let images = Images::open(&settings.data_root)?;
        let network =
            crate::networks::open(&settings.data_root, &settings.exec_root, &settings.network)?;
        Ok(Arc::new(Daemon {
            network,
            shim: crate::shim::find_shim(),
            registry: Mutex::new(Registry::default()),
            images,
            settings,
            id,
            events: crate::events::Events::default(),
            execs: Default::default(),
            registry_client: std::sync::OnceLock::new(),
        }))
    }

    /// The registry client, made on first use.
    pub fn registry_client(&self) -> Result<&berth_registry::RegistryClient> {
        if let Some(c) = self.registry_client.get() {
            return Ok(c);
        }
        let c = berth_registry::RegistryClient::new(berth_registry::RegistryConfig {
            insecure_registries: self.settings.insecure_registries.clone(),
            ..Default::default()
        })
        .map_err(|e| Error::internal(format!("registry client: {e}")))?;
        Ok(self.registry_client.get_or_init(|| c))
    }

    /// Where removed containers' data directories wait to be deleted.
    pub fn trash_data(&self) -> PathBuf {
        self.settings.data_root.join(TRASH)
    }

    /// Where removed containers' bundles wait to be deleted.
    pub fn trash_exec(&self) -> PathBuf {
        self.settings.exec_root.join(TRASH)
    }

    /// Paths of container `id`.
    pub fn paths(&self, id: &str) -> CtrPaths {
        CtrPaths::new(&self.settings.data_root, &self.settings.exec_root, id)
    }

    /// Looks a container up by ID, name or prefix.
    pub fn find(&self, key: &str) -> Result<Arc<Ctr>> {
        self.registry.lock().expect("registry").find(key)
    }

    /// All containers.
    pub fn all(&self) -> Vec<Arc<Ctr>> {
        self.registry.lock().expect("registry").all()
    }

    /// Writes a container's record crash-safely.
    pub fn save(&self, c: &Ctr) -> Result<()> {
        let rec = c.snapshot();
        self.save_record(&rec)
    }

    /// Records a state transition (start, exit): replaced atomically but not fsynced. A daemon
    /// crash sees the old or the new record; on ext4 and xfs so does a machine crash (rename over
    /// an existing file flushes the new data first), and a machine crash ends the container anyway.
    pub fn save_state(&self, c: &Ctr) -> Result<()> {
        self.write_record(&c.snapshot(), false)
    }

    /// Writes a new container's first record, atomically but not fsynced: `create` is on every
    /// `run`'s path, and a machine crash can only lose a container that never ran (see
    /// [`Daemon::restore`]).
    pub fn save_new(&self, rec: &Record) -> Result<()> {
        self.write_record(rec, false)
    }

    /// Writes a record crash-safely.
    pub fn save_record(&self, rec: &Record) -> Result<()> {
        self.write_record(rec, true)
    }

    /// Replaces a container's config.v2.json atomically; `durable`: fsynced, with its directory.
    fn write_record(&self, rec: &Record, durable: bool) -> Result<()> {
        let p = self.paths(&rec.id).config();
        let data = serde_json::to_vec_pretty(rec).map_err(|e| Error::internal(e.to_string()))?;
        let written = if durable {
            crate::util::write_atomic(&p, &data)
        } else {
            crate::util::write_replace(&p, &data)
        };
        written.map_err(|e| Error::io(format!("write {}", p.display()), e))
    }

    /// True when some container uses image `image_id`.
    pub fn image_in_use(&self, image_id: &str) -> Option<String> {
        self.all().into_iter().find_map(|c| {
            let r = c.snapshot();
            (r.image == image_id).then_some(r.id)
        })
    }

    /// Loads every container record; containers recorded as running are adopted or marked exited.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let dir = self.settings.data_root.join("containers");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read containers", e))?;
        let mut loaded = Vec::new();
        for ent in entries.flatten() {
            let p = ent.path().join("config.v2.json");
            let rec: Record = match std::fs::read(&p)
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
            {
                Some(r) => r,
                None => {
                    // Only a container created just before a machine crash can be left without
                    // a readable record (its first write is not fsynced): it never ran.
                    let to = self.trash_data().join(ent.file_name());
                    tracing::warn!(
                        "removing {}: no readable config.v2.json",
                        ent.path().display()
                    );
                    if std::fs::rename(ent.path(), &to).is_ok() {
                        let _ = std::fs::remove_dir_all(&to);
                    }
                    continue;
                }
            };
            let c = Ctr::new(rec);
            self.registry.lock().expect("registry").insert(c.clone());
            loaded.push(c);
        }
        // Writable layers and records are written without fsync at create: after a machine crash
        // either may be missing. A layer without a container goes; a container without its
        // (still empty) layer gets a new one.
        let ids: std::collections::HashSet<String> = loaded.iter().map(|c| c.id.clone()).collect();
        let layers: std::collections::HashSet<String> =
            self.images.container_layers().await.into_iter().collect();
        for id in layers.difference(&ids) {
            tracing::warn!(id = %id, "removing a writable layer without a container");
            let _ = self.images.remove_layer(id).await;
        }
        for c in &loaded {
            let rec = c.snapshot();
            if !layers.contains(&c.id) {
                tracing::warn!(id = %c.id, "recreating the container's missing writable layer");
                if let Err(e) = self.images.prepare_layer(&c.id, &rec.image).await {
                    tracing::error!(id = %c.id, "cannot recreate its writable layer: {e}");
                }
            }
        }
        // Networks first: adopted containers keep theirs, the rest are released before anything starts.
        let live: Vec<String> = loaded
            .iter()
            .filter(|c| c.snapshot().running() && self.paths(&c.id).shim_sock().exists())
            .map(|c| c.id.clone())
            .collect();
        crate::networks::reconcile(self, live).await?;
        // Adopting may record exits that schedule restarts; only the others are looked at below.
        let idle: Vec<_> = loaded
            .iter()
            .filter(|c| !c.snapshot().running())
            .cloned()
            .collect();
        for c in &loaded {
            let c = c.clone();
            if c.snapshot().running() {
                crate::exec::restore(self, &c.id).await;
                crate::container::wait::adopt(self.clone(), c).await;
            } else {
                // A shim left from a start that never completed (daemon killed mid-start).
                let sock = self.paths(&c.id).shim_sock();
                if sock.exists() {
                    let kill = serde_json::json!({"op":"kill","signal":9,"all":true});
                    if crate::shim::call(&sock, kill).await.is_ok() {
                        tracing::warn!(id = %c.id, "killed a shim left from an unfinished start");
                    }
                }
            }
        }
        crate::container::restart::on_daemon_start(self, &idle);
        Ok(())
    }
}
