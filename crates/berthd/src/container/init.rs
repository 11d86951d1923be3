//! `--init`: berth's own init (`berth-shim --init`, see crates/berth-shim/src/init.rs) as the
//! container's PID 1, in the role of docker-init.
//!
//! The shim is a dynamically linked binary and images need not have a C library, so the init
//! travels with its loader: `<exec-root>/init/` holds a copy of the shim and of the shared
//! objects it needs (those berthd itself has mapped: the same loader, libc and libgcc_s), and is
//! bind-mounted read-only at [`MOUNT`]; the process starts as `MOUNT/ld.so --library-path MOUNT
//! MOUNT/berth-shim --init -- CMD...`. Nothing is written into the container's rootfs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Where the init's directory appears inside the container (on the `/dev` tmpfs, so the
/// rootfs gets no mount point).
pub const MOUNT: &str = "/dev/.berth-init";

static READY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The shared objects this process has mapped (its loader and libraries), by path.
fn mapped_libs() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for l in maps.lines() {
        let Some(p) = l.split_whitespace().nth(5) else {
            continue;
        };
        let name = Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.starts_with('/') && name.contains(".so") && !out.iter().any(|o| o == Path::new(p)) {
            out.push(PathBuf::from(p));
        }
    }
    out
}

/// Makes `<exec_root>/init` (once per daemon) and returns it.
pub fn prepare_dir(exec_root: &Path, shim: &Path) -> Result<PathBuf> {
    let mut ready = READY.lock().expect("init dir");
    let dir = exec_root.join("init");
    if ready.as_deref() == Some(dir.as_path()) {
        return Ok(dir);
    }
    let io = |what: String, e| Error::io(what, e);
    let tmp = exec_root.join("init.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io("create init dir".into(), e))?;
    let mut loader = None;
    for lib in mapped_libs() {
        let name = lib
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        std::fs::copy(&lib, tmp.join(&name))
            .map_err(|e| io(format!("copy {}", lib.display()), e))?;
        if name.starts_with("ld-linux") || name.starts_with("ld-musl") || name.starts_with("ld64") {
            loader = Some(name);
        }
    }
    let Some(loader) = loader else {
        return Err(Error::internal("--init: cannot find the dynamic loader"));
    };
    std::os::unix::fs::symlink(&loader, tmp.join("ld.so"))
        .map_err(|e| io("link loader".into(), e))?;
    std::fs::copy(shim, tmp.join("berth-shim"))
        .map_err(|e| io(format!("copy {}", shim.display()), e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| io("install init dir".into(), e))?;
    *ready = Some(dir.clone());
    Ok(dir)
}

/// Puts the init in front of the process and mounts its directory.
pub fn apply(spec: &mut Value, dir: &Path) {
    let mut args = vec![
        json!(format!("{MOUNT}/ld.so")),
        json!("--library-path"),
        json!(MOUNT),
        json!(format!("{MOUNT}/berth-shim")),
        json!("--init"),
        json!("--"),
    ];
    if let Some(a) = spec["process"]["args"].as_array() {
        args.extend(a.iter().cloned());
    }
    spec["process"]["args"] = Value::Array(args);
    let m = json!({
        "destination": MOUNT,
        "type": "bind",
        "source": dir,
        "options": ["rbind", "ro", "nosuid", "nodev"]
    });
    match spec["mounts"].as_array_mut() {
        Some(ms) => ms.push(m),
        None => spec["mounts"] = json!([m]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_the_process() {
        let mut spec = json!({"process": {"args": ["sleep", "1"]}, "mounts": []});
        apply(&mut spec, Path::new("/run/berth/init"));
        assert_eq!(
            spec["process"]["args"],
            json!([
                "/dev/.berth-init/ld.so",
                "--library-path",
                "/dev/.berth-init",
                "/dev/.berth-init/berth-shim",
                "--init",
                "--",
                "sleep",
                "1"
            ])
        );
        assert_eq!(spec["mounts"][0]["destination"], "/dev/.berth-init");
        assert!(
            mapped_libs()
                .iter()
                .any(|p| p.to_string_lossy().contains("libc"))
        );
    }
}
