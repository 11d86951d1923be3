//! Local volumes: `<data-root>/volumes/<name>/_data`, with `volume.json` beside it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use berth_api::Filters;
use berth_api::volume::{Volume, VolumeCreateRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::container::spec::UserMount;
use crate::container::{Ctr, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Meta {
    created_at: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

fn root(d: &Daemon) -> PathBuf {
    d.settings.data_root.join("volumes")
}

fn load(root: &Path, name: &str) -> Option<Volume> {
    let dir = root.join(name);
    let data = dir.join("_data");
    if !data.is_dir() {
        return None;
    }
    let meta: Meta = std::fs::read(dir.join("volume.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Meta {
            created_at: std::fs::metadata(&data)
                .and_then(|m| m.modified())
                .map(|t| crate::util::rfc3339_nano(t.into()))
                .unwrap_or_default(),
            ..Default::default()
        });
    Some(Volume {
        created_at: meta.created_at,
        driver: "local".into(),
        labels: meta.labels,
        mountpoint: data.display().to_string(),
        name: name.into(),
        options: meta.options,
        scope: "local".into(),
    })
}

/// Names of volumes used by containers, with the IDs using them.
fn users(d: &Daemon) -> BTreeMap<String, Vec<String>> {
    let vr = root(d);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in d.all() {
        let r = c.snapshot();
        for m in crate::container::spec::user_mounts(&r, &vr).unwrap_or_default() {
            if let Some(v) = m.volume {
                out.entry(v).or_default().push(r.id.clone());
            }
        }
    }
    out
}

/// `GET /volumes`.
pub fn list(d: &Arc<Daemon>, f: &Filters) -> Result<Vec<Volume>> {
    f.validate(&["name", "dangling", "label", "driver"])
        .map_err(Error::Invalid)?;
    let vr = root(d);
    let used = users(d);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&vr).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(v) = load(&vr, &name) else { continue };
        if !f.get("name").is_empty() && !f.get("name").iter().any(|n| name.contains(n.as_str())) {
            continue;
        }
        if let Some(dg) = f.get("dangling").first() {
            let dangling = !used.contains_key(&name);
            if (dg == "true" || dg == "1") != dangling {
                continue;
            }
        }
        if !f.get("driver").is_empty() && !f.get("driver").iter().any(|x| x == "local") {
            continue;
        }
        if !crate::container::list::labels_match(f.get("label"), &v.labels) {
            continue;
        }
        out.push(v);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `POST /volumes/create` (idempotent for an existing name).
pub fn create(d: &Arc<Daemon>, req: VolumeCreateRequest) -> Result<Volume> {
    if !req.driver.is_empty() && req.driver != "local" {
        return Err(Error::NotFound(format!(
            "error looking up volume plugin {}: plugin \"{}\" not found",
            req.driver, req.driver
        )));
    }
    let name = if req.name.is_empty() {
        crate::util::random_hex(32)
    } else {
        crate::names::validate(&req.name).map_err(|_| {
            Error::invalid(format!(
                "create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path",
                req.name
            ))
        })?;
        req.name.clone()
    };
    let vr = root(d);
    if let Some(v) = load(&vr, &name) {
        return Ok(v);
    }
    validate_opts(&req.driver_opts).map_err(|e| Error::invalid(format!("create {name}: {e}")))?;
    let dir = vr.join(&name);
    std::fs::create_dir_all(dir.join("_data"))
        .map_err(|e| Error::io(format!("create volume {name}"), e))?;
    let meta = Meta {
        created_at: crate::util::now_rfc3339(),
        labels: req.labels,
        options: req.driver_opts,
    };
    let data = serde_json::to_vec(&meta).map_err(|e| Error::internal(e.to_string()))?;
    crate::util::write_atomic(&dir.join("volume.json"), &data)
        .map_err(|e| Error::io("write volume.json", e))?;
    let mut attrs = BTreeMap::new();
    attrs.insert("driver".to_string(), "local".to_string());
    d.events.emit("volume", "create", &name, attrs);
    load(&vr, &name).ok_or_else(|| Error::internal("volume vanished"))
}

/// `GET /volumes/{name}`.
pub fn inspect(d: &Arc<Daemon>, name: &str) -> Result<Volume> {
    load(&root(d), name).ok_or_else(|| Error::NotFound(format!("get {name}: no such volume")))
}

/// `DELETE /volumes/{name}`.
pub fn remove(d: &Arc<Daemon>, name: &str, force: bool) -> Result<()> {
    let vr = root(d);
    if load(&vr, name).is_none() {
        if force {
            return Ok(());
        }
        return Err(Error::NotFound(format!("get {name}: no such volume")));
    }
    if let Some(ids) = users(d).get(name) {
        return Err(Error::Conflict(format!(
            "remove {name}: volume is in use - [{}]",
            ids.join(", ")
        )));
    }
    // A mounted volume (a user-less leftover) is unmounted first: removing through a bind of a
    // host directory would delete the host's files.
    let data = vr.join(name).join("_data");
    if berth_runtime::is_mountpoint(&data).unwrap_or(false) {
        berth_runtime::unmount(&data)
            .map_err(|e| Error::internal(format!("remove {name}: unmount: {e}")))?;
    }
    std::fs::remove_dir_all(vr.join(name))
        .map_err(|e| Error::io(format!("remove volume {name}"), e))?;
    let mut attrs = BTreeMap::new();
    attrs.insert("driver".to_string(), "local".to_string());
    d.events.emit("volume", "destroy", name, attrs);
    Ok(())
}

/// `POST /volumes/prune`: removes unused volumes (anonymous ones only unless `all=true`).
pub fn prune(d: &Arc<Daemon>, f: &Filters) -> Result<serde_json::Value> {
    f.validate(&["label", "all"]).map_err(Error::Invalid)?;
    let all = f.get("all").iter().any(|v| v == "true" || v == "1");
    let used = users(d);
    let mut deleted = Vec::new();
    for v in list(d, &Filters::default())? {
        let anonymous = v.name.len() == 64 && v.name.chars().all(|c| c.is_ascii_hexdigit());
        if used.contains_key(&v.name)
            || !(all || anonymous)
            || !crate::container::list::labels_match(f.get("label"), &v.labels)
        {
            continue;
        }
        if remove(d, &v.name, false).is_ok() {
            deleted.push(v.name);
        }
    }
    Ok(serde_json::json!({
        "VolumesDeleted": if deleted.is_empty() { serde_json::Value::Null } else { serde_json::json!(deleted) },
        "SpaceReclaimed": 0
    }))
}

/// The local driver's options, as dockerd's accepts them.
const VALID_OPTS: [&str; 4] = ["type", "device", "o", "size"];

/// Checks `--opt`s as dockerd's local driver does: known keys only, `type` and `device` together,
/// `o` only with both; no quota support, so no `size`.
fn validate_opts(opts: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if let Some(k) = opts.keys().find(|k| !VALID_OPTS.contains(&k.as_str())) {
        return Err(format!("invalid option: {k:?}"));
    }
    if opts.contains_key("size") {
        return Err("quota size requested but no quota support".into());
    }
    for (opt, needs) in [
        ("device", &["type"][..]),
        ("type", &["device"][..]),
        ("o", &["device", "type"][..]),
    ] {
        if opts.contains_key(opt) {
            if let Some(n) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(format!("missing required option: {n:?}"));
            }
        }
    }
    Ok(())
}

/// Per `_data` path of a volume with mount options: the containers between their start's
/// [`acquire`] and their stop's [`release`]. With the running containers of the records (the
/// only users known after a daemon restart) it is the volume's refcount.
static ACTIVE: LazyLock<Mutex<HashMap<PathBuf, BTreeSet<String>>>> =
    LazyLock::new(Default::default);

/// The volumes `rec` uses that have mount options: (name, `_data`, options).
fn mounted_volumes(rec: &Record, vr: &Path) -> Vec<(String, PathBuf, BTreeMap<String, String>)> {
    let mut out: Vec<(String, PathBuf, BTreeMap<String, String>)> = Vec::new();
    for m in crate::container::spec::user_mounts(rec, vr).unwrap_or_default() {
        let Some(name) = m.volume else { continue };
        let Some(v) = load(vr, &name) else { continue };
        if v.options.contains_key("device") && !out.iter().any(|(n, ..)| *n == name) {
            out.push((name, PathBuf::from(v.mountpoint), v.options));
        }
    }
    out
}

/// Container start: mounts each local volume created with `type`/`device`/`o` on its `_data`
/// unless another user has it mounted already (dockerd mounts at first use, too).
pub async fn acquire(d: &Arc<Daemon>, rec: &Record) -> Result<()> {
    let vr = root(d);
    let rec = rec.clone();
    tokio::task::spawn_blocking(move || {
        let vols = mounted_volumes(&rec, &vr);
        if vols.is_empty() {
            return Ok(());
        }
        let mut active = ACTIVE.lock().expect("volume users");
        for (_, data, opts) in vols {
            active
                .entry(data.clone())
                .or_default()
                .insert(rec.id.clone());
            if berth_runtime::is_mountpoint(&data).unwrap_or(false) {
                continue;
            }
            let get = |k: &str| opts.get(k).map(String::as_str).unwrap_or("");
            berth_runtime::mount::mount_fs(get("device"), &data, get("type"), get("o")).map_err(
                |e| {
                    Error::internal(format!(
                        "error while mounting volume '{}': failed to mount local volume: {e}",
                        data.display()
                    ))
                },
            )?;
            tracing::debug!(volume = %data.display(), "mounted");
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
}

/// Container stop (or failed start): unmounts each of its mounted volumes that no other container
/// uses any more.
pub async fn release(d: &Arc<Daemon>, c: &Arc<Ctr>) {
    let vr = root(d);
    let rec = c.snapshot();
    let vols = mounted_volumes(&rec, &vr);
    if vols.is_empty() {
        return;
    }
    // Containers still running keep their volumes mounted (after a restart only they are known).
    let mut running: BTreeSet<PathBuf> = BTreeSet::new();
    for o in d.all() {
        let r = o.snapshot();
        if r.id != rec.id && r.state.running {
            running.extend(mounted_volumes(&r, &vr).into_iter().map(|(_, p, _)| p));
        }
    }
    let id = rec.id.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let mut active = ACTIVE.lock().expect("volume users");
        for (_, data, _) in vols {
            let others = active.get_mut(&data).is_some_and(|u| {
                u.remove(&id);
                !u.is_empty()
            });
            if others || running.contains(&data) {
                continue;
            }
            active.remove(&data);
            unmount_data(&data);
        }
    })
    .await;
}

fn unmount_data(data: &Path) {
    if berth_runtime::is_mountpoint(data).unwrap_or(false) {
        match berth_runtime::unmount(data) {
            Ok(()) => tracing::debug!(volume = %data.display(), "unmounted"),
            Err(e) => tracing::warn!("unmount volume {}: {e}", data.display()),
        }
    }
}

/// Daemon start: volumes left mounted that no adopted (`live`) container uses are unmounted.
pub fn reconcile(d: &Arc<Daemon>, live: &[String]) {
    let vr = root(d);
    let mut used: BTreeSet<PathBuf> = BTreeSet::new();
    for c in d.all() {
        if live.contains(&c.id) {
            used.extend(
                mounted_volumes(&c.snapshot(), &vr)
                    .into_iter()
                    .map(|(_, p, _)| p),
            );
        }
    }
    for e in std::fs::read_dir(&vr).into_iter().flatten().flatten() {
        let data = e.path().join("_data");
        if !used.contains(&data) {
            unmount_data(&data);
        }
    }
}

/// Bind propagation as dockerd applies it: a `shared`/`rshared` bind needs its source on a shared
/// mount, a `slave`/`rslave` one on a shared or slave mount (refused otherwise, with dockerd's
/// messages); the spec's `rootfsPropagation` then becomes `shared` or `rslave` so that the
/// runtime keeps the host's propagation to the source.
pub fn apply_propagation(spec: &mut Value, mounts: &[UserMount]) -> Result<()> {
    let mut root = spec["linux"]["rootfsPropagation"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for m in mounts.iter().filter(|m| m.kind == "bind") {
        let shared = m.options.iter().any(|o| o == "shared" || o == "rshared");
        let slave = m.options.iter().any(|o| o == "slave" || o == "rslave");
        if !shared && !slave {
            continue;
        }
        let (mp, fields) = berth_runtime::mount::source_mount(Path::new(&m.source))
            .map_err(|e| Error::internal(e.to_string()))?;
        let is_shared = fields.split(' ').any(|f| f.starts_with("shared:"));
        let is_slave = fields.split(' ').any(|f| f.starts_with("master:"));
        if shared {
            if !is_shared {
                return Err(Error::internal(format!(
                    "path {} is mounted on {mp} but it is not a shared mount",
                    m.source
                )));
            }
            if !root.ends_with("shared") {
                root = "shared".into();
            }
        } else {
            if !is_shared && !is_slave {
                return Err(Error::internal(format!(
                    "path {} is mounted on {mp} but it is not a shared or slave mount",
                    m.source
                )));
            }
            if !root.ends_with("shared") && !root.ends_with("slave") {
                root = "rslave".into();
            }
        }
    }
    if !root.is_empty() {
        spec["linux"]["rootfsPropagation"] = Value::String(root);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_checked_like_dockerd() {
        assert!(validate_opts(&opts(&[])).is_ok());
        assert!(
            validate_opts(&opts(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=1m")
            ]))
            .is_ok()
        );
        assert_eq!(
            validate_opts(&opts(&[("foo", "1")])).unwrap_err(),
            "invalid option: \"foo\""
        );
        assert_eq!(
            validate_opts(&opts(&[("type", "tmpfs")])).unwrap_err(),
            "missing required option: \"device\""
        );
        assert_eq!(
            validate_opts(&opts(&[("o", "size=1m"), ("device", "tmpfs")])).unwrap_err(),
            "missing required option: \"type\""
        );
    }
}
