//! Files of a container: `docker cp` (`/archive`), `docker export` and `docker diff` (`/changes`).
//!
//! Paths are resolved inside the rootfs with `berth_runtime::path::secure_join` (symlinks clamped to
//! the rootfs). A stopped container's rootfs is mounted for the operation and unmounted after; a
//! running one is frozen (the shim's `pause`) from resolution to the end of the copy, so no process
//! of the container can swap a resolved directory for a symlink meanwhile (the race of
//! CVE-2018-15664, fixed the same way in dockerd). Extraction refuses entries that would land
//! outside the target directory (the `tar` crate's `unpack_in` checks), and nothing here loads
//! code from the container (CVE-2019-14271).
//! Volumes and bind mounts are not part of the rootfs and so not visible here.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Ctr, LayerPaths};
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// A rootfs made available for one operation; unmounted on drop when this mounted it.
#[derive(Debug)]
struct Rootfs {
    path: PathBuf,
    mounted_here: bool,
    /// The shim to resume when this froze the container.
    frozen: Option<PathBuf>,
}

/// One shim request from a blocking thread; the answer line.
fn shim_op(sock: &Path, op: &str) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader};
    let (path, _dir) = berth_runtime::unix_socket_path(sock)?;
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(format!("{{\"op\":\"{op}\"}}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

impl Rootfs {
    fn open(path: PathBuf, layer: &LayerPaths) -> Result<Self> {
        if berth_runtime::is_mountpoint(&path).unwrap_or(false) {
            // Running: freeze it unless it is paused already (then it stays as it is).
            let sock = path.with_file_name("shim.sock");
            let frozen = match shim_op(&sock, "pause") {
                Ok(l) if l.contains("\"ok\"") => Some(sock),
                Ok(l) if l.contains("already paused") || l.contains("not running") => None,
                Ok(l) => {
                    return Err(Error::Conflict(format!(
                        "cannot freeze the container for the copy: {}",
                        l.trim()
                    )));
                }
                // No shim: nothing runs in it.
                Err(_) => None,
            };
            return Ok(Rootfs {
                path,
                mounted_here: false,
                frozen,
            });
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create rootfs dir", e))?;
        berth_runtime::mount_overlay(&path, &layer.lowers, &layer.upper, &layer.work)
            .map_err(|e| Error::internal(format!("mount rootfs: {e}")))?;
        Ok(Rootfs {
            path,
            mounted_here: true,
            frozen: None,
        })
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Some(sock) = self.frozen.take() {
            if let Err(e) = shim_op(&sock, "resume") {
                tracing::warn!("resume after copy: {e}");
            }
        }
        if self.mounted_here {
            let _ = berth_runtime::unmount(&self.path);
        }
    }
}

fn resolve(root: &Path, path: &str, id: &str) -> Result<PathBuf> {
    let p = berth_runtime::path::secure_join(root, Path::new(path))
        .map_err(|e| Error::invalid(format!("resolve {path}: {e}")))?;
    if std::fs::symlink_metadata(&p).is_err() {
        return Err(Error::NotFound(format!(
            "Could not find the file {path} in container {id}"
        )));
    }
    Ok(p)
}

/// Go's `os.FileMode` bits for a file, as Docker's path stat carries them.
pub fn go_mode(md: &std::fs::Metadata) -> u32 {
    let perm = md.permissions().mode() & 0o777;
    let ft = md.file_type();
    let mut m = perm;
    if ft.is_dir() {
        m |= 1 << 31;
    } else if ft.is_symlink() {
        m |= 1 << 27;
    } else if ft.is_block_device() {
        m |= 1 << 26;
    } else if ft.is_char_device() {
        m |= (1 << 26) | (1 << 21);
    } else if ft.is_fifo() {
        m |= 1 << 25;
    } else if ft.is_socket() {
        m |= 1 << 24;
    }
    let raw = md.mode();
    if raw & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if raw & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if raw & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

fn stat_header(root: &Path, host: &Path, path: &str) -> Result<String> {
    let md = std::fs::symlink_metadata(host).map_err(|e| Error::io("stat", e))?;
    let link = if md.file_type().is_symlink() {
        std::fs::read_link(host)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let _ = root;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mtime = chrono::DateTime::from_timestamp(md.mtime(), md.mtime_nsec() as u32)
        .map(crate::util::rfc3339_nano)
        .unwrap_or_default();
    let v = json!({"name": name, "size": md.len(), "mode": go_mode(&md), "mtime": mtime, "linkTarget": link});
    Ok(base64::engine::general_purpose::STANDARD.encode(v.to_string()))
}

struct ChanWriter(mpsc::Sender<Bytes>);

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `HEAD /containers/{id}/archive`: the path stat header value.
pub async fn stat(d: &Arc<Daemon>, c: &Arc<Ctr>, path: String) -> Result<String> {
    let rec = c.snapshot();
    let rootfs = d.paths(&c.id).rootfs();
    tokio::task::spawn_blocking(move || {
        let r = Rootfs::open(rootfs, &rec.layer)?;
        let host = resolve(&r.path, &path, &rec.id)?;
        stat_header(&r.path, &host, &path)
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
}

/// `GET /containers/{id}/archive`: the stat header and a tar of the path (named by its base name).
pub async fn get(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    path: String,
) -> Result<(String, mpsc::Receiver<Bytes>)> {
    let rec = c.snapshot();
    let rootfs = d.paths(&c.id).rootfs();
    let (tx, rx) = mpsc::channel(16);
    let (hdr_tx, hdr_rx) = tokio::sync::oneshot::channel::<Result<String>>();
    tokio::task::spawn_blocking(move || {
        let setup = (|| {
            let r = Rootfs::open(rootfs, &rec.layer)?;
            let host = resolve(&r.path, &path, &rec.id)?;
            let hdr = stat_header(&r.path, &host, &path)?;
            Ok((r, host, hdr))
        })();
        let (r, host, hdr) = match setup {
            Ok(x) => x,
            Err(e) => {
                let _ = hdr_tx.send(Err(e));
                return;
            }
        };
        let _ = hdr_tx.send(Ok(hdr));
        let name = Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        let mut b = tar::Builder::new(ChanWriter(tx));
        b.follow_symlinks(false);
        let res = if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            b.append_dir_all(&name, &host)
        } else {
            b.append_path_with_name(&host, &name)
        };
        // Thaw (or unmount) before the archive's end reaches the client: once `docker cp` is
        // done, the container runs again.
        drop(r);
        if let Err(e) = res.and_then(|_| b.finish()) {
            tracing::debug!("archive of {path}: {e}");
        }
    });
    let hdr = hdr_rx
        .await
        .map_err(|_| Error::internal("archive task failed"))??;
    Ok((hdr, rx))
}

/// `PUT /containers/{id}/archive`: extracts the tar in `data` into directory `path`.
pub async fn put(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    path: String,
    body: hyper::body::Incoming,
) -> Result<()> {
    let rec = c.snapshot();
    if rec.host_config.readonly_rootfs {
        return Err(Error::Forbidden(
            "container rootfs is marked read-only".into(),
        ));
    }
    let rootfs = d.paths(&c.id).rootfs();
    let rx = crate::images::pump_body(body);
    tokio::task::spawn_blocking(move || {
        let data = crate::images::ChannelReader::new(rx);
        let r = Rootfs::open(rootfs, &rec.layer)?;
        let host = resolve(&r.path, &path, &rec.id)?;
        if !std::fs::metadata(&host).is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid(format!(
                "extraction point is not a directory: {path}"
            )));
        }
        let mut ar = tar::Archive::new(data);
        ar.set_preserve_permissions(true);
        ar.set_overwrite(true);
        for entry in ar
            .entries()
            .map_err(|e| Error::invalid(format!("bad tar: {e}")))?
        {
            let mut entry = entry.map_err(|e| Error::invalid(format!("bad tar: {e}")))?;
            entry
                .unpack_in(&host)
                .map_err(|e| Error::invalid(format!("extract: {e}")))?;
        }
        drop(r);
        Ok(())
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
}

/// `GET /containers/{id}/export`: a tar of the whole rootfs.
pub async fn export(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<mpsc::Receiver<Bytes>> {
    let rec = c.snapshot();
    let rootfs = d.paths(&c.id).rootfs();
    let (tx, rx) = mpsc::channel(16);
    let (ok_tx, ok_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    tokio::task::spawn_blocking(move || {
        let r = match Rootfs::open(rootfs, &rec.layer) {
            Ok(r) => {
                let _ = ok_tx.send(Ok(()));
                r
            }
            Err(e) => {
                let _ = ok_tx.send(Err(e));
                return;
            }
        };
        let mut b = tar::Builder::new(ChanWriter(tx));
        b.follow_symlinks(false);
        if let Err(e) = b.append_dir_all(".", &r.path).and_then(|_| b.finish()) {
            tracing::debug!("export: {e}");
        }
        drop(r);
    });
    ok_rx
        .await
        .map_err(|_| Error::internal("export task failed"))??;
    Ok(rx)
}

/// `GET /containers/{id}/changes`: what the writable layer changed (0 modified, 1 added, 2 deleted).
pub fn changes(layer: &LayerPaths) -> Vec<Value> {
    let mut out = Vec::new();
    walk(&layer.upper, &layer.upper, &layer.lowers, &mut out);
    hide_init_paths(out)
}

/// Mount points every container gets (dockerd keeps them in an init layer that `diff` does not
/// show): the API filesystems and the files berthd bind-mounts.
const INIT_PATHS: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/.dockerenv",
];

/// Drops the init paths (and what is under them), then directories reported only because they
/// hold one (`C /etc` for a new `/etc/hosts`).
fn hide_init_paths(out: Vec<Value>) -> Vec<Value> {
    let path = |v: &Value| v["Path"].as_str().unwrap_or("").to_string();
    let under = |p: &str, dir: &str| p == dir || p.starts_with(&format!("{dir}/"));
    let hidden: Vec<String> = out
        .iter()
        .map(path)
        .filter(|p| INIT_PATHS.iter().any(|i| under(p, i)))
        .collect();
    let kept: Vec<Value> = out
        .into_iter()
        .filter(|v| !hidden.contains(&path(v)))
        .collect();
    let paths: Vec<String> = kept.iter().map(path).collect();
    kept.into_iter()
        .filter(|v| {
            let p = path(v);
            let only_init = v["Kind"] == 0
                && hidden.iter().any(|h| h.starts_with(&format!("{p}/")))
                && !paths.iter().any(|q| q.starts_with(&format!("{p}/")));
            !only_init
        })
        .collect()
}

fn walk(top: &Path, dir: &Path, lowers: &[PathBuf], out: &mut Vec<Value>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut ents: Vec<_> = rd.flatten().collect();
    ents.sort_by_key(|e| e.file_name());
    for e in ents {
        let p = e.path();
        let rel = Path::new("/").join(p.strip_prefix(top).unwrap_or(&p));
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let in_lower = lowers.iter().any(|l| {
            std::fs::symlink_metadata(l.join(rel.strip_prefix("/").unwrap_or(&rel))).is_ok()
        });
        let kind = if md.file_type().is_char_device() && md.rdev() == 0 {
            2
        } else if in_lower {
            0
        } else {
            1
        };
        out.push(json!({"Path": rel.display().to_string(), "Kind": kind}));
        if md.is_dir() {
            walk(top, &p, lowers, out);
        }
    }
}
