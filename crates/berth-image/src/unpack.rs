//! Safe extraction of a layer tar into an overlay lower dir.
//!
//! Hostile tars are expected: paths are cleaned lexically (leading `/` dropped, `..` may not climb out of
//! the layer), parent directories are walked component by component and a symlink (or any non-directory)
//! on the way is refused, files are created with `O_EXCL` (which never follows a symlink), hard links must
//! name an existing non-directory inside the layer. The layer directory is private to the unpacker while
//! it is filled (a `.tmp-` directory renamed into place afterwards), so nothing can swap a checked
//! directory for a symlink behind our back. Whiteouts become overlay whiteouts (`.wh.x` → char device 0:0,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::error::{Error, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn bad_tar(e: io::Error) -> Error {
    Error::invalid(format!("invalid tar archive: {e}"))
}

fn bad_layer(msg: String) -> Error {
    Error::invalid(format!("invalid layer: {msg}"))
}

/// Cleans a tar path into components relative to the layer root; `None` for the root itself.
pub(crate) fn clean_path(raw: &Path) -> Result<Option<Vec<OsString>>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(bad_layer(format!("path {:?} escapes the layer", raw)));
                }
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Walks `comps` below `root`, never following a symlink; creates missing directories if `create`.
/// Directories already checked (or made) during this unpack. Only the unpacker writes the layer dir, and
/// every replacement goes through [`remove_existing`], which forgets the path and everything below it.
type DirCache = HashSet<PathBuf>;

fn walk_dirs(
    cache: &mut DirCache,
    root: &Path,
    comps: &[OsString],
    create: bool,
    what: &Path,
) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in comps {
        cur.push(c);
        if cache.contains(&cur) {
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad_layer(format!(
                    "refusing to resolve {:?} through symlink {:?}",
                    what,
                    cur.strip_prefix(root).unwrap_or(&cur)
                )));
            }
            Ok(_) => {
                return Err(bad_layer(format!(
                    "cannot resolve {:?}: {:?} is not a directory",
                    what,
                    cur.strip_prefix(root).unwrap_or(&cur)
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).ctx("create directory", &cur)?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).ctx("chmod", &cur)?;
            }
            Err(e) => return Err(Error::io_path("stat", &cur, e)),
        }
        cache.insert(cur.clone());
    }
    Ok(cur)
}

/// Removes whatever is at `path` (not following symlinks).
fn remove_existing(cache: &mut DirCache, path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Only directories are cached, so only removing one can make the cache stale.
            cache.retain(|p| !p.starts_with(path));
            fs::remove_dir_all(path).ctx("remove", path)
        }
        Ok(_) => fs::remove_file(path).ctx("remove", path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("stat", path, e)),
    }
}

/// Sets the mtime (and atime) of `path` without following a symlink.
fn set_mtime(path: &Path, secs: i64, nanos: i64) -> Result<()> {
    let ts = TimeSpec::new(secs, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io_path("set times of", path, e.into()))
}

/// Metadata of one tar entry, with PAX overrides applied.
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: i64,
    mtime_nanos: i64,
    xattrs: Vec<(String, Vec<u8>)>,
    sparse: Option<PaxSparse>,
}

/// PAX sparse-file keys (GNU tar `--sparse --format=pax`), which the `tar` crate does not expand.
#[derive(Default)]
struct PaxSparse {
    major: Option<String>,
    minor: Option<String>,
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
    map: Option<String>,
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let h = entry.header();
    let mut m = Meta {
        uid: h.uid().map_err(bad_tar)?,
        gid: h.gid().map_err(bad_tar)?,
        mode: h.mode().map_err(bad_tar)? & 0o7777,
        mtime: h.mtime().map_err(bad_tar)? as i64,
        mtime_nanos: 0,
        xattrs: Vec::new(),
        sparse: None,
    };
    if let Some(exts) = entry.pax_extensions().map_err(bad_tar)? {
        for ext in exts {
            let ext = ext.map_err(bad_tar)?;
            let Ok(key) = ext.key() else { continue };
            let val = ext.value_bytes();
            let num = || std::str::from_utf8(val).ok();
            match key {
                "uid" => m.uid = num().and_then(|v| v.parse().ok()).unwrap_or(m.uid),
                "gid" => m.gid = num().and_then(|v| v.parse().ok()).unwrap_or(m.gid),
                "mtime" => {
                    if let Some(v) = num() {
                        let (s, frac) = v.split_once('.').unwrap_or((v, ""));
                        if let Ok(s) = s.parse() {
                            m.mtime = s;
                            let padded: String =
                                frac.chars().chain(std::iter::repeat('0')).take(9).collect();
                            m.mtime_nanos = padded.parse().unwrap_or(0);
                        }
                    }
                }
                k if k.starts_with("GNU.sparse.") => {
                    let sp = m.sparse.get_or_insert_with(PaxSparse::default);
                    let text = num().map(str::to_string);
                    match k {
                        "GNU.sparse.major" => sp.major = text,
                        "GNU.sparse.minor" => sp.minor = text,
                        "GNU.sparse.name" => sp.name = Some(val.to_vec()),
                        "GNU.sparse.realsize" | "GNU.sparse.size" => {
                            sp.realsize = text.and_then(|t| t.parse().ok())
                        }
                        "GNU.sparse.map" => sp.map = text,
                        _ => {}
                    }
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.push((name.to_string(), val.to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

fn apply_meta(path: &Path, meta: &Meta, is_symlink: bool, set_time: bool) -> Result<()> {
    let uid =
        u32::try_from(meta.uid).map_err(|_| bad_layer(format!("uid {} out of range", meta.uid)))?;
    let gid =
        u32::try_from(meta.gid).map_err(|_| bad_layer(format!("gid {} out of range", meta.gid)))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).ctx("chown", path)?;
    if !is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).ctx("chmod", path)?;
    }
    for (name, value) in &meta.xattrs {
        match xattr::set(path, name, value) {
            Ok(()) => {}
            // Filesystems or link types without xattr support: skip like Docker.
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {}
            Err(e) if is_symlink && e.raw_os_error() == Some(nix::libc::EPERM) => {}
            Err(e) => return Err(Error::io_path(&format!("set xattr {name} on"), path, e)),
        }
    }
    if set_time {
        set_mtime(path, meta.mtime, meta.mtime_nanos)?;
    }
    Ok(())
}

/// [`apply_meta`] for a regular file we hold open: the same steps through the descriptor.
fn apply_file_meta(f: &File, path: &Path, meta: &Meta) -> Result<()> {
    let uid =
        u32::try_from(meta.uid).map_err(|_| bad_layer(format!("uid {} out of range", meta.uid)))?;
    let gid =
        u32::try_from(meta.gid).map_err(|_| bad_layer(format!("gid {} out of range", meta.gid)))?;
    std::os::unix::fs::fchown(f, Some(uid), Some(gid)).ctx("chown", path)?;
    f.set_permissions(fs::Permissions::from_mode(meta.mode))
        .ctx("chmod", path)?;
    for (name, value) in &meta.xattrs {
        match xattr::FileExt::set_xattr(f, name, value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {}
            Err(e) => return Err(Error::io_path(&format!("set xattr {name} on"), path, e)),
        }
    }
    let t = if meta.mtime >= 0 {
        std::time::UNIX_EPOCH
            + std::time::Duration::new(
                meta.mtime as u64,
                meta.mtime_nanos.clamp(0, 999_999_999) as u32,
            )
    } else {
        std::time::UNIX_EPOCH
    };
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .ctx("set times of", path)
}

/// Reads one decimal number terminated by `\n` from the sparse map at the start of a PAX 1.0 sparse
/// entry's data; counts the bytes consumed.
fn read_map_number(r: &mut impl Read, consumed: &mut u64) -> Result<u64> {
    let mut digits = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        r.read_exact(&mut byte).map_err(bad_tar)?;
        *consumed += 1;
        if byte[0] == b'\n' {
            break;
        }
        if !byte[0].is_ascii_digit() || digits.len() > 20 {
            return Err(bad_layer("invalid sparse map".into()));
        }
        digits.push(byte[0]);
    }
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad_layer("invalid sparse map".into()))
}

/// Writes a PAX sparse entry (format 0.1 or 1.0) into `f`; returns its apparent size.
fn write_sparse(entry: &mut impl Read, f: &mut File, sp: &PaxSparse) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let realsize = sp
        .realsize
        .ok_or_else(|| bad_layer("sparse file without size".into()))?;
    let mut segments: Vec<(u64, u64)> = Vec::new();
    match (sp.major.as_deref(), sp.minor.as_deref(), sp.map.as_deref()) {
        (Some("1"), Some("0"), _) => {
            let mut consumed = 0;
            let count = read_map_number(entry, &mut consumed)?;
            if count > 1 << 20 {
                return Err(bad_layer("sparse map too large".into()));
            }
            for _ in 0..count {
                let off = read_map_number(entry, &mut consumed)?;
                let len = read_map_number(entry, &mut consumed)?;
                segments.push((off, len));
            }
            let pad = (512 - consumed % 512) % 512;
            io::copy(&mut entry.take(pad), &mut io::sink()).map_err(bad_tar)?;
        }
        (_, _, Some(map)) => {
            let nums: Vec<u64> = map
                .split(',')
                .map(|n| n.trim().parse())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad_layer("invalid sparse map".into()))?;
            if nums.len() % 2 != 0 {
                return Err(bad_layer("invalid sparse map".into()));
            }
            segments = nums.chunks(2).map(|c| (c[0], c[1])).collect();
        }
        _ => return Err(bad_layer("unsupported sparse file format".into())),
    }
    for (off, len) in segments {
        if off.checked_add(len).is_none_or(|end| end > realsize) {
            return Err(bad_layer("sparse segment beyond the file size".into()));
        }
        f.seek(SeekFrom::Start(off))
            .map_err(|e| Error::io("seek", e))?;
        let n = io::copy(&mut entry.take(len), f).map_err(bad_tar)?;
        if n != len {
            return Err(bad_layer("truncated sparse file".into()));
        }
    }
    f.set_len(realsize).map_err(|e| Error::io("truncate", e))?;
    Ok(realsize)
}

/// Unpacks the tar stream `reader` into the (existing, private) directory `dest`; returns the layer size
/// (bytes of regular files).
pub(crate) fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<u64> {
    let mut archive = tar::Archive::new(reader);
    let mut size: u64 = 0;
    let mut dir_times: Vec<(PathBuf, i64, i64)> = Vec::new();
    let mut cache = DirCache::new();
    for entry in archive.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let meta = read_meta(&mut entry)?;
        let raw = match meta.sparse.as_ref().and_then(|sp| sp.name.as_ref()) {
            Some(name) => PathBuf::from(std::ffi::OsStr::from_bytes(name)),
            None => entry.path().map_err(bad_tar)?.into_owned(),
        };
        let Some(comps) = clean_path(&raw)? else {
            continue; // the layer root itself
        };
        let (name, parent_comps) = comps.split_last().expect("non-empty");
        let name_str = name.to_string_lossy();

        // Whiteouts.
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let parent = walk_dirs(&mut cache, dest, parent_comps, true, &raw)?;
            if name_str == OPAQUE_WHITEOUT {
                xattr::set(&parent, OPAQUE_XATTR, b"y").ctx("set opaque xattr on", &parent)?;
            } else if hidden == "." || hidden == ".." {
                return Err(bad_layer(format!("invalid whiteout {raw:?}")));
            } else if !hidden.starts_with(WHITEOUT_PREFIX) && !hidden.is_empty() {
                let target = parent.join(hidden);
                remove_existing(&mut cache, &target)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| Error::io_path("create whiteout", &target, e.into()))?;
            }
            // Other `.wh..wh.*` metadata (aufs hardlink dirs) is skipped.
            continue;
        }

        let parent = walk_dirs(&mut cache, dest, parent_comps, true, &raw)?;
        let target = parent.join(name);
        let existing = fs::symlink_metadata(&target).ok();
        match kind {
            EntryType::Directory => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    remove_existing(&mut cache, &target)?;
                    fs::create_dir(&target).ctx("create directory", &target)?;
                }
                apply_meta(&target, &meta, false, false)?;
                dir_times.push((target, meta.mtime, meta.mtime_nanos));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&mut cache, &target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)
                    .ctx("create", &target)?;
                size += match &meta.sparse {
                    None => io::copy(&mut entry, &mut f).map_err(bad_tar)?,
                    Some(sp) => write_sparse(&mut entry, &mut f, sp)?,
                };
                apply_file_meta(&f, &target, &meta)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(bad_tar)?
                    .ok_or_else(|| bad_layer(format!("symlink {raw:?} without target")))?;
                remove_existing(&mut cache, &target)?;
                std::os::unix::fs::symlink(&link, &target).ctx("create symlink", &target)?;
                apply_meta(&target, &meta, true, true)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad_tar)?
                    .ok_or_else(|| bad_layer(format!("hard link {raw:?} without target")))?;
                let Some(lcomps) = clean_path(&link)? else {
                    return Err(bad_layer(format!("hard link {raw:?} to the layer root")));
                };
                let (lname, lparent) = lcomps.split_last().expect("non-empty");
                let src = walk_dirs(&mut cache, dest, lparent, false, &link)
                    .map_err(|_| bad_layer(format!("invalid hard link {raw:?} -> {link:?}")))?
                    .join(lname);
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(bad_layer(format!("invalid hard link {raw:?} -> {link:?}"))),
                }
                if src == target {
                    continue;
                }
                remove_existing(&mut cache, &target)?;
                fs::hard_link(&src, &target).ctx("create hard link", &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_existing(&mut cache, &target)?;
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = entry.header().device_major().map_err(bad_tar)?.unwrap_or(0);
                        let minor = entry.header().device_minor().map_err(bad_tar)?.unwrap_or(0);
                        let flag = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, makedev(major.into(), minor.into()))
                    }
                };
                mknod(&target, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| Error::io_path("mknod", &target, e.into()))?;
                apply_meta(&target, &meta, false, true)?;
            }
            _ => {} // unknown entry types are ignored, like Docker
        }
    }
    // Directory times last (creating entries changes them), deepest first.
    for (dir, secs, nanos) in dir_times.into_iter().rev() {
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            set_mtime(&dir, secs, nanos)?;
        }
    }
    Ok(size)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A tar builder for tests that writes headers verbatim (no path sanitizing).
    pub(crate) struct TarMaker {
        b: tar::Builder<Vec<u8>>,
    }

    impl TarMaker {
        pub(crate) fn new() -> Self {
            TarMaker {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn header(path: &str, kind: EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            {
                let name = &mut h.as_old_mut().name;
                name.fill(0);
                name[..path.len()].copy_from_slice(path.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_000_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h
        }

        fn link_header(path: &str, kind: EntryType, target: &str) -> tar::Header {
            let mut h = Self::header(path, kind, 0o777, 0);
            let l = &mut h.as_old_mut().linkname;
            l.fill(0);
            l[..target.len()].copy_from_slice(target.as_bytes());
            h
        }

        pub(crate) fn file(mut self, path: &str, data: &[u8]) -> Self {
            let mut h = Self::header(path, EntryType::Regular, 0o644, data.len() as u64);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }

        pub(crate) fn file_mode(mut self, path: &str, data: &[u8], mode: u32, uid: u64) -> Self {
            let mut h = Self::header(path, EntryType::Regular, mode, data.len() as u64);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }

        pub(crate) fn dir(mut self, path: &str) -> Self {
            let mut h = Self::header(path, EntryType::Directory, 0o755, 0);
            h.set_cksum();
            self.b.append(&h, &[][..]).unwrap();
            self
        }

        pub(crate) fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = Self::link_header(path, EntryType::Symlink, target);
            h.set_cksum();
            self.b.append(&h, &[][..]).unwrap();
            self
        }

        pub(crate) fn hardlink(mut self, path: &str, target: &str) -> Self {
            let mut h = Self::link_header(path, EntryType::Link, target);
            h.set_cksum();
            self.b.append(&h, &[][..]).unwrap();
            self
        }

        pub(crate) fn xattr_file(
            mut self,
            path: &str,
            data: &[u8],
            key: &str,
            value: &[u8],
        ) -> Self {
            self.b
                .append_pax_extensions([(format!("SCHILY.xattr.{key}").as_str(), value)])
                .unwrap();
            self.file(path, data)
        }

        pub(crate) fn build(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<u64>) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("layer")).unwrap();
        let r = unpack_layer(tar, &d.path().join("layer"));
        (d, r)
    }

    /// Everything under `dir` except `layer/`.
    fn outside(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "layer")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn clean_path_rules() {
        let c = |s: &str| clean_path(Path::new(s)).map(|o| o.map(PathBuf::from_iter));
        assert_eq!(c("./a/b").unwrap().unwrap(), PathBuf::from("a/b"));
        assert_eq!(c("/abs/x").unwrap().unwrap(), PathBuf::from("abs/x"));
        assert_eq!(c("a/../b").unwrap().unwrap(), PathBuf::from("b"));
        assert_eq!(c("./").unwrap(), None);
        assert!(c("../evil").is_err());
        assert!(c("a/../../evil").is_err());
    }

    #[test]
    fn regular_layer_preserves_metadata() {
        let tar = TarMaker::new()
            .dir("bin/")
            .file_mode("bin/tool", b"#!/bin/sh\n", 0o4755, 1000)
            .symlink("bin/link", "tool")
            .hardlink("bin/hard", "bin/tool")
            .xattr_file("bin/cap", b"x", "user.test", b"v")
            .build();
        let (d, r) = unpack(&tar);
        assert_eq!(r.unwrap(), 11);
        let l = d.path().join("layer");
        let m = fs::metadata(l.join("bin/tool")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
        assert_eq!(m.mtime(), 1_000_000_000);
        assert_eq!(
            fs::read_link(l.join("bin/link")).unwrap(),
            PathBuf::from("tool")
        );
        assert_eq!(fs::metadata(l.join("bin/hard")).unwrap().ino(), m.ino());
        assert_eq!(fs::metadata(l.join("bin")).unwrap().mtime(), 1_000_000_000);
        assert_eq!(
            xattr::get(l.join("bin/cap"), "user.test").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = TarMaker::new()
            .dir("etc/")
            .file("etc/.wh.passwd", b"")
            .file("opq/.wh..wh..opq", b"")
            .file("opq/new", b"n")
            .build();
        let (d, r) = unpack(&tar);
        r.unwrap();
        let l = d.path().join("layer");
        let m = fs::symlink_metadata(l.join("etc/passwd")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!l.join("etc/.wh.passwd").exists());
        assert_eq!(
            xattr::get(l.join("opq"), OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!l.join("opq/.wh..wh..opq").exists());
        assert!(l.join("opq/new").exists());
    }

    #[test]
    fn dotdot_escape_is_refused() {
        let (d, r) = unpack(&TarMaker::new().file("../evil", b"x").build());
        assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
        assert!(outside(d.path()).is_empty());
        let (d, r) = unpack(&TarMaker::new().file("a/../../evil", b"x").build());
        assert!(r.is_err());
        assert!(outside(d.path()).is_empty());
    }

    #[test]
    fn absolute_paths_stay_inside() {
        let (d, r) = unpack(&TarMaker::new().file("/abs", b"x").build());
        r.unwrap();
        assert!(d.path().join("layer/abs").exists());
        assert!(outside(d.path()).is_empty());
    }

    #[test]
    fn symlink_parent_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::create_dir(d.path().join("layer")).unwrap();
        let tar = TarMaker::new()
            .symlink("dir", victim.to_str().unwrap())
            .file("dir/pwned", b"x")
            .build();
        let r = unpack_layer(&tar[..], &d.path().join("layer"));
        assert!(r.unwrap_err().to_string().contains("symlink"));
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
        // Relative symlink climbing out, then a file through it.
        let tar = TarMaker::new()
            .symlink("up", "../..")
            .file("up/pwned", b"x")
            .build();
        let (d, r) = unpack(&tar);
        assert!(r.is_err());
        assert!(outside(d.path()).is_empty());
    }

    #[test]
    fn dir_replaced_by_symlink_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::create_dir(d.path().join("layer")).unwrap();
        let tar = TarMaker::new()
            .file("d/sub/f", b"x")
            .symlink("d", victim.to_str().unwrap())
            .file("d/sub/evil", b"x")
            .build();
        assert!(unpack_layer(&tar[..], &d.path().join("layer")).is_err());
        let tar = TarMaker::new()
            .file("d/sub/f", b"x")
            .symlink("d/sub", victim.to_str().unwrap())
            .file("d/sub/evil", b"x")
            .build();
        fs::create_dir(d.path().join("layer2")).unwrap();
        let e = unpack_layer(&tar[..], &d.path().join("layer2")).unwrap_err();
        assert!(e.to_string().contains("through symlink"), "{e}");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn file_over_symlink_replaces_the_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        fs::create_dir(d.path().join("layer")).unwrap();
        let tar = TarMaker::new()
            .symlink("f", victim.to_str().unwrap())
            .file("f", b"new")
            .build();
        unpack_layer(&tar[..], &d.path().join("layer")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(fs::read(d.path().join("layer/f")).unwrap(), b"new");
    }

    #[test]
    fn hardlink_outside_is_refused() {
        let (d, r) = unpack(&TarMaker::new().hardlink("passwd", "/etc/passwd").build());
        assert!(r.is_err());
        assert!(!d.path().join("layer/passwd").exists());
        let (_d, r) = unpack(&TarMaker::new().hardlink("x", "../../etc/passwd").build());
        assert!(r.is_err());
        // Through a symlinked directory.
        let tar = TarMaker::new()
            .symlink("etc", "/etc")
            .hardlink("x", "etc/passwd")
            .build();
        let (d, r) = unpack(&tar);
        assert!(r.is_err());
        assert!(!d.path().join("layer/x").exists());
    }

    #[test]
    fn dot_whiteouts_are_refused() {
        for name in [".wh..", ".wh...", "sub/.wh..."] {
            let d = tempfile::tempdir().unwrap();
            fs::write(d.path().join("sibling"), b"keep").unwrap();
            fs::create_dir(d.path().join("layer")).unwrap();
            fs::write(d.path().join("layer/inside"), b"keep").unwrap();
            let tar = TarMaker::new().file(name, b"").build();
            assert!(
                unpack_layer(&tar[..], &d.path().join("layer")).is_err(),
                "{name}"
            );
            assert!(d.path().join("sibling").exists());
            assert!(d.path().join("layer/inside").exists());
        }
    }

    #[test]
    fn garbage_is_invalid_argument() {
        let (_d, r) = unpack(&[7u8; 1024]);
        assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
    }
}
