//! Turning a container's overlay upper dir back into a layer tar (for `commit`): overlay whiteouts
//! (char device 0:0) become `.wh.<name>` files, opaque dirs get a `.wh..wh..opq` entry, hard links are
//! kept, `trusted.overlay.*` xattrs are dropped, and entries are written in sorted order.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{Error, IoContext, Result};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn tar_err(e: std::io::Error) -> Error {
    Error::io("write layer tar", e)
}

struct Writer<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
}

/// The daemon's user namespace remap: (uid start, gid start, size).
static REMAPPED: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();

/// Declares the host ids of the daemon's remapped user namespace (`userns-remap`): ids in
/// `start..start+size` found in an upper dir are written to layer tars as the container's own
/// (`id - start`), so a commit of a remapped container has the image's ids. Set once.
pub fn set_remapped_ids(uid_start: u32, gid_start: u32, size: u32) {
    let _ = REMAPPED.set((uid_start, gid_start, size));
}

/// `id` as the container sees it, if it lies in the remapped range starting at `start`.
fn unmap(id: u32, start: u32, size: u32) -> u32 {
    if id >= start && id - start < size {
        id - start
    } else {
        id
    }
}

fn header_from(meta: &fs::Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    let (uid, gid) = match REMAPPED.get() {
        Some(&(u, g, n)) => (unmap(meta.uid(), u, n), unmap(meta.gid(), g, n)),
        None => (meta.uid(), meta.gid()),
    };
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn xattrs_of(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => return Ok(out),
        Err(e) => return Err(Error::io_path("list xattrs of", path, e)),
    };
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(path, &name).ctx("read xattr of", path)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

impl<W: Write> Writer<W> {
    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        self.b
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(tar_err)
    }

    fn empty_file(&mut self, rel: &Path, mtime: u64) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(mtime);
        self.b
            .append_data(&mut h, rel, std::io::empty())
            .map_err(tar_err)
    }

    fn walk(&mut self, root: &Path, rel: &Path) -> Result<()> {
        let dir = root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .ctx("read directory", &dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ctx("read directory", &dir)?;
        names.sort();
        for name in names {
            let rel_path = rel.join(&name);
            let path = root.join(&rel_path);
            let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                let mut wh = std::ffi::OsString::from(".wh.");
                wh.push(&name);
                self.empty_file(&rel.join(wh), meta.mtime().max(0) as u64)?;
                continue;
            }
            if ft.is_socket() {
                continue;
            }
            let xattrs = xattrs_of(&path)?;
            if ft.is_dir() {
                self.pax(&xattrs)?;
                let mut h = header_from(&meta, EntryType::Directory);
                let mut p = rel_path.clone().into_os_string();
                p.push("/");
                self.b
                    .append_data(&mut h, PathBuf::from(p), std::io::empty())
                    .map_err(tar_err)?;
                if xattr::get(&path, OPAQUE_XATTR)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y")
                {
                    self.empty_file(&rel_path.join(".wh..wh..opq"), meta.mtime().max(0) as u64)?;
                }
                self.walk(root, &rel_path)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).ctx("read link", &path)?;
                self.pax(&xattrs)?;
                let mut h = header_from(&meta, EntryType::Symlink);
                self.b
                    .append_link(&mut h, &rel_path, &target)
                    .map_err(tar_err)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let mut h = header_from(&meta, EntryType::Link);
                        let first = first.clone();
                        self.b
                            .append_link(&mut h, &rel_path, &first)
                            .map_err(tar_err)?;
                        continue;
                    }
                    self.links.insert(key, rel_path.clone());
                }
                self.pax(&xattrs)?;
                let mut h = header_from(&meta, EntryType::Regular);
                h.set_size(meta.len());
                let f = fs::File::open(&path).ctx("open", &path)?;
                self.b.append_data(&mut h, &rel_path, f).map_err(tar_err)?;
            } else {
                let kind = if ft.is_fifo() {
                    EntryType::Fifo
                } else if ft.is_char_device() {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                let mut h = header_from(&meta, kind);
                if kind != EntryType::Fifo {
                    let rdev = meta.rdev();
                    h.set_device_major(nix::sys::stat::major(rdev) as u32)
                        .map_err(tar_err)?;
                    h.set_device_minor(nix::sys::stat::minor(rdev) as u32)
                        .map_err(tar_err)?;
                }
                self.pax(&xattrs)?;
                self.b
                    .append_data(&mut h, &rel_path, std::io::empty())
                    .map_err(tar_err)?;
            }
        }
        Ok(())
    }
}

/// Writes the overlay upper dir `upper` as a layer tar (Docker's whiteout format) to `out`.
pub(crate) fn write_diff_tar<W: Write>(upper: &Path, out: W) -> Result<W> {
    let mut w = Writer {
        b: tar::Builder::new(out),
        links: HashMap::new(),
    };
    w.b.mode(tar::HeaderMode::Complete);
    w.walk(upper, Path::new(""))?;
    w.b.into_inner().map_err(tar_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::unpack_layer;
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn upper_dir_round_trips_through_a_layer_tar() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path().join("upper");
        fs::create_dir_all(up.join("etc/opq")).unwrap();
        fs::write(up.join("etc/new"), b"new").unwrap();
        fs::set_permissions(up.join("etc/new"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(up.join("etc/new"), up.join("etc/new2")).unwrap();
        std::os::unix::fs::symlink("new", up.join("etc/link")).unwrap();
        mknod(
            &up.join("etc/gone"),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .unwrap();
        xattr::set(up.join("etc/opq"), OPAQUE_XATTR, b"y").unwrap();
        xattr::set(up.join("etc/new"), "user.k", b"v").unwrap();
        let tar = write_diff_tar(&up, Vec::new()).unwrap();

        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
        assert!(
            names.contains(&"etc/opq/.wh..wh..opq".to_string()),
            "{names:?}"
        );

        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack_layer(&tar[..], &out).unwrap();
        assert_eq!(fs::read(out.join("etc/new")).unwrap(), b"new");
        let m = fs::metadata(out.join("etc/new")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(m.ino(), fs::metadata(out.join("etc/new2")).unwrap().ino());
        assert_eq!(
            fs::read_link(out.join("etc/link")).unwrap(),
            PathBuf::from("new")
        );
        let gone = fs::symlink_metadata(out.join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        assert_eq!(
            xattr::get(out.join("etc/opq"), OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(
            xattr::get(out.join("etc/new"), "user.k").unwrap(),
            Some(b"v".to_vec())
        );
        // Deterministic.
        assert_eq!(write_diff_tar(&up, Vec::new()).unwrap(), tar);
    }
}
