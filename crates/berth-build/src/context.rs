//! The build context: a directory (used in place, read only) or the Engine API's tar body (plain or
//! gzip) unpacked safely into a temp dir. Every path the builder reads is resolved inside the context
//! root ([`resolve_in_root`]: `..` is clamped at the root and symlinks are followed as if the root
//! were `/`), so `COPY ../x`, absolute sources and symlinks never read outside it. `.dockerignore`
//! (or `<Dockerfile>.dockerignore`) hides files from every selection.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::dockerignore::{DockerIgnore, Glob, clean};
use crate::error::{BuildError, Result};

/// Resolves `path` inside `root` without ever leaving it: `..` stops at the root, absolute symlink
/// targets start again at the root, relative ones from the link's directory. With `follow_last`
/// false a final symlink is returned itself. Nonexistent tails are returned as they are.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&resolved);
        cand.push(&c);
        let last = pending.is_empty();
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links: {path}"
                    )));
                }
                let target = fs::read_link(&cand)?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    resolved.clear();
                }
                for part in t.split('/').rev().filter(|p| !p.is_empty() && *p != ".") {
                    pending.push_front(part.to_string());
                }
            }
            _ => resolved.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// A build context ready for reading.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    ignore: DockerIgnore,
    dockerfile: String,
    dockerfile_name: String,
}

/// A file or directory selected by a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Path relative to the context root (`/`-separated, cleaned).
    pub rel: String,
    /// Absolute path on the host (inside the context root).
    pub path: PathBuf,
    /// Whether it is a directory (after following symlinks named explicitly).
    pub is_dir: bool,
}

fn hostile(m: impl Into<String>) -> BuildError {
    BuildError::Context(format!("invalid build context: {}", m.into()))
}

impl BuildContext {
    /// Uses a local directory as the context (nothing is copied). `dockerfile` is the path of the
    /// Dockerfile relative to the context (default `Dockerfile`).
    pub fn from_dir(dir: &Path, dockerfile: Option<&str>) -> Result<BuildContext> {
        let root = fs::canonicalize(dir)
            .map_err(|e| BuildError::io(format!("open build context {}", dir.display()), e))?;
        Self::finish(root, None, dockerfile)
    }

    /// Unpacks the Engine API's context tar (plain or gzip) into a temp dir under `tmp_parent`
    /// (e.g. `<data-root>/build/tmp`), refusing entries that would land outside it.
    pub fn from_tar(
        body: impl Read,
        tmp_parent: &Path,
        dockerfile: Option<&str>,
    ) -> Result<BuildContext> {
        fs::create_dir_all(tmp_parent)
            .map_err(|e| BuildError::io(format!("create {}", tmp_parent.display()), e))?;
        let tmp = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(tmp_parent)
            .map_err(|e| BuildError::io("create context dir", e))?;
        let root = tmp.path().to_path_buf();
        let mut r = BufReader::with_capacity(256 * 1024, body);
        let gz = r
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        if gz {
            unpack_safely(flate2::read::GzDecoder::new(r), &root)?;
        } else {
            unpack_safely(r, &root)?;
        }
        Self::finish(root, Some(tmp), dockerfile)
    }

    fn finish(
        root: PathBuf,
        tmp: Option<tempfile::TempDir>,
        dockerfile: Option<&str>,
    ) -> Result<BuildContext> {
        let name = dockerfile.filter(|d| !d.is_empty()).unwrap_or("Dockerfile");
        let mut path = resolve_in_root(&root, name, true)
            .map_err(|e| BuildError::io("resolve Dockerfile", e))?;
        if !path.is_file() && dockerfile.is_none() {
            // dockerd also accepts a lower-case `dockerfile`.
            let alt = resolve_in_root(&root, "dockerfile", true)
                .map_err(|e| BuildError::io("resolve Dockerfile", e))?;
            if alt.is_file() {
                path = alt;
            }
        }
        let text = fs::read(&path).map_err(|_| {
            BuildError::Invalid(format!("Cannot locate specified Dockerfile: {name}"))
        })?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let own_ignore = PathBuf::from(format!("{}.dockerignore", path.display()));
        let ignore_text = fs::read_to_string(&own_ignore)
            .or_else(|_| fs::read_to_string(root.join(".dockerignore")))
            .unwrap_or_default();
        let ignore = DockerIgnore::parse(&ignore_text).map_err(BuildError::Invalid)?;
        Ok(BuildContext {
            root,
            _tmp: tmp,
            ignore,
            dockerfile: text,
            dockerfile_name: name.to_string(),
        })
    }

    /// A read-only source over another root (an image's mounted rootfs for `COPY --from`): no
    /// Dockerfile, no `.dockerignore`.
    pub fn for_root(root: PathBuf) -> BuildContext {
        BuildContext {
            root,
            _tmp: None,
            ignore: DockerIgnore::default(),
            dockerfile: String::new(),
            dockerfile_name: String::new(),
        }
    }

    /// The same root with `.dockerignore` plus `patterns` (`COPY --exclude`, matched against paths
    /// relative to the root). The returned context borrows the root: keep `self` alive.
    pub fn with_excludes(&self, patterns: &[String]) -> Result<BuildContext> {
        let mut text = self.ignore.texts().join("\n");
        for p in patterns {
            text.push('\n');
            text.push_str(p);
        }
        Ok(BuildContext {
            root: self.root.clone(),
            _tmp: None,
            ignore: DockerIgnore::parse(&text).map_err(BuildError::Invalid)?,
            dockerfile: String::new(),
            dockerfile_name: String::new(),
        })
    }

    /// The context root on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile's text.
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// The Dockerfile's name as requested.
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// The `.dockerignore` in force.
    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    /// Whether `rel` is hidden by `.dockerignore`.
    pub fn excluded(&self, rel: &str) -> bool {
        !self.ignore.is_empty() && self.ignore.excluded(rel)
    }

    fn rel_of(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Resolves a COPY/ADD source (wildcards allowed) to the files and directories it names, in
    /// order. `..` and absolute paths stay inside the context. Errors like dockerd's when nothing
    /// matches.
    pub fn select(&self, source: &str) -> Result<Vec<Selected>> {
        let cleaned = clean(&format!("/{source}"));
        let rel = cleaned.trim_start_matches('/');
        if Glob::has_wildcards(rel) {
            let glob = Glob::new(rel, false).map_err(BuildError::Invalid)?;
            let mut out = Vec::new();
            self.walk_all(&self.root, &mut |p, rel, is_dir| {
                if glob.matches(rel) {
                    out.push(Selected {
                        rel: rel.to_string(),
                        path: p.to_path_buf(),
                        is_dir,
                    });
                }
            })?;
            if out.is_empty() {
                return Err(BuildError::Context(
                    "COPY failed: no source files were specified".into(),
                ));
            }
            return Ok(out);
        }
        let path = resolve_in_root(&self.root, rel, true)
            .map_err(|e| BuildError::io(format!("resolve {source}"), e))?;
        let real_rel = self.rel_of(&path);
        let meta = fs::metadata(&path);
        match meta {
            Ok(m) if real_rel.is_empty() || (!self.excluded(&real_rel) && !self.excluded(rel)) => {
                Ok(vec![Selected {
                    rel: rel.to_string(),
                    path,
                    is_dir: m.is_dir(),
                }])
            }
            _ => Err(BuildError::Context(format!(
                "COPY failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist"
            ))),
        }
    }

    /// Walks everything under `dir` that `.dockerignore` keeps (symlinks are not followed).
    fn walk_all(&self, dir: &Path, f: &mut dyn FnMut(&Path, &str, bool)) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| BuildError::io(format!("read {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = self.rel_of(&p);
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let excluded = self.excluded(&rel);
            if !excluded {
                f(&p, &rel, is_dir);
            }
            if is_dir && (!excluded || self.ignore.may_include_under(&rel)) {
                self.walk_all(&p, f)?;
            }
        }
        Ok(())
    }

    /// The entries to copy for a selection: itself (for a file) or everything under it that is not
    /// ignored (for a directory), as (path relative to the selection, host path, metadata).
    pub fn entries(&self, sel: &Selected) -> Result<Vec<(String, PathBuf, fs::Metadata)>> {
        let mut out = Vec::new();
        if !sel.is_dir {
            let m = fs::metadata(&sel.path)
                .map_err(|e| BuildError::io(format!("stat {}", sel.rel), e))?;
            out.push((String::new(), sel.path.clone(), m));
            return Ok(out);
        }
        let base = sel.path.clone();
        let mut err = None;
        self.walk_all(&sel.path, &mut |p, _rel, _| {
            let r = p
                .strip_prefix(&base)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            match fs::symlink_metadata(p) {
                Ok(m) => out.push((r, p.to_path_buf(), m)),
                Err(e) => err = Some(e),
            }
        })?;
        if let Some(e) = err {
            return Err(BuildError::io("stat context file", e));
        }
        Ok(out)
    }

    /// A content hash of selections for the cache key: relative path, type, mode, uid/gid, size,
    /// content and link targets; not mtime.
    pub fn content_hash(&self, sels: &[Selected]) -> Result<String> {
        let mut h = Sha256::new();
        for s in sels {
            h.update(s.rel.as_bytes());
            h.update([0]);
            for (rel, path, m) in self.entries(s)? {
                let ft = m.file_type();
                h.update(
                    format!(
                        "{rel}\0{}\0{:o}\0{}\0{}\0",
                        if ft.is_dir() {
                            'd'
                        } else if ft.is_symlink() {
                            'l'
                        } else {
                            'f'
                        },
                        m.mode() & 0o7777,
                        m.uid(),
                        m.gid()
                    )
                    .as_bytes(),
                );
                if ft.is_symlink() {
                    let t = fs::read_link(&path).unwrap_or_default();
                    h.update(t.to_string_lossy().as_bytes());
                } else if ft.is_file() {
                    let mut f = fs::File::open(&path)
                        .map_err(|e| BuildError::io(format!("open {}", path.display()), e))?;
                    h.update(m.len().to_le_bytes());
                    io::copy(&mut f, &mut HashWriter(&mut h))
                        .map_err(|e| BuildError::io(format!("read {}", path.display()), e))?;
                }
                h.update([0]);
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The relative path of a tar entry, refusing `..` (anything that could land outside).
fn entry_rel(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(hostile(format!("path {} escapes the context", p.display())));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Creates the parent directories of `root/rel`, refusing to go through a symlink.
fn safe_parent(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(hostile(format!(
                        "{} goes through the symlink {}",
                        rel.display(),
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(hostile(format!("{} is not a directory", cur.display())));
                }
                Err(_) => fs::create_dir(&cur)
                    .map_err(|e| BuildError::io(format!("create {}", cur.display()), e))?,
            }
        }
    }
    Ok(root.join(rel))
}

fn remove_existing(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    }
}

/// `io::copy` with a large buffer: big context files in few syscalls.
fn copy_big(r: &mut impl Read, w: &mut impl io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Unpacks a tar into `root` without following symlinks or accepting paths outside it. Ownership is
/// not kept (COPY makes files root's unless `--chown`); modes are.
pub fn unpack_safely(input: impl Read, root: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(input);
    let entries = ar.entries().map_err(|e| hostile(format!("bad tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| hostile(format!("bad tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| hostile(format!("bad tar path: {e}")))?
            .into_owned();
        let Some(rel) = entry_rel(&path)? else {
            continue;
        };
        let full = safe_parent(root, &rel)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let io_err = |e: io::Error| BuildError::io(format!("unpack {}", rel.display()), e);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_existing(&full).map_err(io_err)?;
                        fs::create_dir(&full).map_err(io_err)?;
                    }
                }
                fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&full).map_err(io_err)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&full)
                    .map_err(io_err)?;
                copy_big(&mut entry, &mut f).map_err(io_err)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(io_err)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| hostile(format!("bad link: {e}")))?
                    .ok_or_else(|| hostile("symlink without target"))?
                    .into_owned();
                remove_existing(&full).map_err(io_err)?;
                std::os::unix::fs::symlink(&target, &full).map_err(io_err)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| hostile(format!("bad link: {e}")))?
                    .ok_or_else(|| hostile("hard link without target"))?
                    .into_owned();
                let trel =
                    entry_rel(&target)?.ok_or_else(|| hostile("hard link to the context root"))?;
                let src = safe_parent(root, &trel)?;
                remove_existing(&full).map_err(io_err)?;
                fs::hard_link(&src, &full).map_err(io_err)?;
            }
            // Devices, FIFOs, pax/gnu metadata entries: nothing to unpack.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_never_leaves_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("a/up")).unwrap();
        std::os::unix::fs::symlink("b", r.join("a/rel")).unwrap();
        assert_eq!(
            resolve_in_root(r, "../../etc/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, "/abs/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "a/up/x", true).unwrap(), r.join("x"));
        assert_eq!(
            resolve_in_root(r, "a/rel/c", true).unwrap(),
            r.join("a/b/c")
        );
        assert_eq!(resolve_in_root(r, "a/rel", false).unwrap(), r.join("a/rel"));
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "loop/x", true).is_err());
    }

    fn tar_with(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        // Write the name bytes directly so `..` is not refused by the builder.
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn hostile_tars_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dotdot = tar_with(|b| {
            raw_entry(
                b,
                "Dockerfile",
                tar::EntryType::Regular,
                None,
                b"FROM scratch\n",
            );
            raw_entry(b, "../evil", tar::EntryType::Regular, None, b"x");
        });
        let e = BuildContext::from_tar(&dotdot[..], parent.path(), None).unwrap_err();
        assert!(e.to_string().contains("escapes the context"), "{e}");
        assert!(!parent.path().join("evil").exists());

        let through_link = tar_with(|b| {
            raw_entry(b, "l", tar::EntryType::Symlink, Some("/tmp"), b"");
            raw_entry(b, "l/evil", tar::EntryType::Regular, None, b"x");
        });
        let e = BuildContext::from_tar(&through_link[..], parent.path(), None).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!Path::new("/tmp/evil").exists());

        let hard = tar_with(|b| {
            raw_entry(b, "h", tar::EntryType::Link, Some("../../etc/passwd"), b"");
        });
        assert!(BuildContext::from_tar(&hard[..], parent.path(), None).is_err());
        // Only the refused contexts' temp dirs would remain; they are removed on drop.
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn gzip_context_and_selection() {
        let parent = tempfile::tempdir().unwrap();
        let t = tar_with(|b| {
            raw_entry(
                b,
                "Dockerfile",
                tar::EntryType::Regular,
                None,
                b"FROM scratch\n",
            );
            raw_entry(
                b,
                ".dockerignore",
                tar::EntryType::Regular,
                None,
                b"*.log\n!keep.log\nsecret\n",
            );
            raw_entry(b, "a.log", tar::EntryType::Regular, None, b"x");
            raw_entry(b, "keep.log", tar::EntryType::Regular, None, b"x");
            raw_entry(b, "secret", tar::EntryType::Regular, None, b"x");
            raw_entry(b, "src/x.txt", tar::EntryType::Regular, None, b"x");
            raw_entry(b, "src/y.txt", tar::EntryType::Regular, None, b"y");
            raw_entry(b, "esc", tar::EntryType::Symlink, Some("/etc/passwd"), b"");
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &t).unwrap();
        let ctx = BuildContext::from_tar(&gz.finish().unwrap()[..], parent.path(), None).unwrap();
        assert_eq!(ctx.dockerfile(), "FROM scratch\n");
        let names = |s: &str| {
            ctx.select(s)
                .map(|v| v.into_iter().map(|s| s.rel).collect::<Vec<_>>())
        };
        assert_eq!(names("*.log").unwrap(), vec!["keep.log"]);
        assert!(names("secret").is_err());
        assert!(names("a.log").is_err());
        assert_eq!(names("src/*.txt").unwrap(), vec!["src/x.txt", "src/y.txt"]);
        assert_eq!(names("../../src/x.txt").unwrap(), vec!["src/x.txt"]);
        // The symlink resolves inside the context: /etc/passwd of the context does not exist.
        assert!(names("esc").is_err());
        let h1 = ctx.content_hash(&ctx.select("src").unwrap()).unwrap();
        fs::write(ctx.root().join("src/y.txt"), "changed").unwrap();
        let h2 = ctx.content_hash(&ctx.select("src").unwrap()).unwrap();
        assert_ne!(h1, h2);
        // mtime alone does not change the hash.
        let p = ctx.root().join("src/x.txt");
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(h2, ctx.content_hash(&ctx.select("src").unwrap()).unwrap());
    }
}
