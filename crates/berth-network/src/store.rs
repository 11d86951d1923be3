//! Crash-safe JSON files: write a temp file, fsync, rename, fsync the directory.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{NetworkError, Result};

/// Writes `value` as JSON to `path` atomically; `durable` also fsyncs file and directory.
///
/// Endpoint and port records are written without fsync: the rename is atomic against a daemon crash,
/// and after a machine crash no container runs, so `reconcile` releases all of them anyway. Network
/// definitions, which must survive a reboot, are durable.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<()> {
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir)
        .map_err(|e| NetworkError::io(format!("create {}", dir.display()), e))?;
    let tmp = path.with_extension("json.tmp");
    let data =
        serde_json::to_vec_pretty(value).map_err(|e| NetworkError::Internal(e.to_string()))?;
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    res.map_err(|e| NetworkError::io(format!("write {}", path.display()), e))
}

/// Reads every `*.json` in `dir` (a missing dir is empty); unreadable files are skipped with a warning,
/// left-over temp files removed.
pub(crate) fn read_dir_json<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(NetworkError::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json.tmp") {
            let _ = std::fs::remove_file(&p);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!("skipping unreadable network state {}: {e}", p.display()),
        }
    }
    Ok(out)
}

/// Removes `path` (absent is fine).
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io(format!("remove {}", path.display()), e)),
    }
}
