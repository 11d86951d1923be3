//! Local volumes: `<data-root>/volumes/<name>/_data`, with `volume.json` beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::Filters;
use berth_api::volume::{Volume, VolumeCreateRequest};
use serde::{Deserialize, Serialize};

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
