//! The build context: a directory (used in place, read only) or the Engine API's tar body (plain or
//! gzip) unpacked safely into a temp dir. Every path the builder reads is resolved inside the context
//! root ([`resolve_in_root`]: `..` is clamped at the root and symlinks are followed as if the root
//! were `/`), so `COPY ../x`, absolute sources and symlinks never read outside it. `.dockerignore`
//! (or `<Dockerfile>.dockerignore`) hides files from every selection.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

use crate::blobs::Pins;
use crate::dockerignore::{DockerIgnore, Glob, clean};
use crate::error::{BuildError, Result};

/// Resolves `path` inside `root` without ever leaving it: `..` stops at the root, absolute symlink
/// targets start again at the root, relative ones from the link's directory. With `follow_last`
/// false a final symlink is returned itself. Nonexistent tails are returned as they are.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let resolved = resolve_with(path, follow_last, |parts| {
        let mut cand = root.to_path_buf();
        cand.extend(parts);
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() => {
                Ok(Some(fs::read_link(&cand)?.to_string_lossy().into_owned()))
            }
            _ => Ok(None),
        }
    })?;
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// The walk of [`resolve_in_root`]; `link` gives the target of the path made of the given parts
/// when it is a symlink.
fn resolve_with(
    path: &str,
    follow_last: bool,
    link: impl Fn(&[String]) -> io::Result<Option<String>>,
) -> io::Result<Vec<String>> {
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
        resolved.push(c);
        if !pending.is_empty() || follow_last {
            if let Some(t) = link(&resolved)? {
                resolved.pop();
                links += 1;
                if links > 255 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links: {path}"
                    )));
                }
                if t.starts_with('/') {
                    resolved.clear();
                }
                for part in t.split('/').rev().filter(|p| !p.is_empty() && *p != ".") {
                    pending.push_front(part.to_string());
                }
            }
        }
    }
    Ok(resolved)
}

/// A build context ready for reading.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The API's tar, spooled and indexed, or a manifest over the blob store: selections and
    /// hashes read the index; the files are written under `root` only when a step needs them
    /// ([`BuildContext::materialize`]).
    tar: Option<Arc<TarIndex>>,
    ignore: DockerIgnore,
    dockerfile: String,
    dockerfile_name: String,
}

/// A file or directory selected by a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Path relative to the context root (`/`-separated, cleaned).
    pub rel: String,
    /// Absolute path on the host (inside the context root; for a tar context it exists once the
    /// context is materialized).
    pub path: PathBuf,
    /// Whether it is a directory (after following symlinks named explicitly).
    pub is_dir: bool,
}

fn hostile(m: impl Into<String>) -> BuildError {
    BuildError::Context(format!("invalid build context: {}", m.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// One entry of a tar context as unpacking would leave it (modes as `unpack_safely` sets them).
#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mode: u32,
    size: u64,
    /// Where the data starts in the spooled tar (a blob-backed file is found by `sha`).
    offset: u64,
    /// sha256 of the content (files).
    sha: [u8; 32],
    /// Symlink target.
    link: String,
}

impl Node {
    fn dir(mode: u32) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            size: 0,
            offset: 0,
            sha: [0; 32],
            link: String::new(),
        }
    }
}

/// Small contexts are spooled in memory; bigger ones go to an unnamed temp file. The file is
/// cheaper than anonymous memory for big ones: fresh anonymous pages cost a fault and a zeroing
/// each and a TLB shootdown when freed (measured: a cached 50 MB build's daemon CPU 150 -> 100 ms),
/// while a quick build's file is gone before writeback; memory stays bounded too.
const SPOOL_IN_MEMORY: u64 = 1 << 20;
const CHUNK: usize = 256 << 10;

/// The received tar, kept for hashing, reading and unpacking on demand.
#[derive(Debug)]
enum Spool {
    Mem(Vec<Vec<u8>>),
    File(io::BufWriter<fs::File>),
}

impl Spool {
    fn len(&self) -> u64 {
        match self {
            Spool::Mem(c) => c.iter().map(|c| c.len() as u64).sum(),
            Spool::File(f) => {
                f.get_ref().metadata().map(|m| m.len()).unwrap_or(0) + f.buffer().len() as u64
            }
        }
    }

    fn write(&mut self, mut b: &[u8], tmp: &Path) -> io::Result<()> {
        if let Spool::Mem(chunks) = self {
            let have: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            if have + b.len() as u64 > SPOOL_IN_MEMORY {
                let mut f = io::BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(tmp)?);
                for c in chunks.iter() {
                    io::Write::write_all(&mut f, c)?;
                }
                *self = Spool::File(f);
            }
        }
        match self {
            Spool::File(f) => io::Write::write_all(f, b),
            Spool::Mem(chunks) => {
                while !b.is_empty() {
                    if chunks.last().is_none_or(|c| c.len() == CHUNK) {
                        chunks.push(Vec::with_capacity(CHUNK));
                    }
                    let c = chunks.last_mut().expect("a chunk");
                    let n = (CHUNK - c.len()).min(b.len());
                    c.extend_from_slice(&b[..n]);
                    b = &b[n..];
                }
                Ok(())
            }
        }
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Spool::File(f) => f.get_ref().read_at(buf, off),
            Spool::Mem(chunks) => {
                let Some(c) = chunks.get((off / CHUNK as u64) as usize) else {
                    return Ok(0);
                };
                let at = (off % CHUNK as u64) as usize;
                let n = buf.len().min(c.len().saturating_sub(at));
                buf[..n].copy_from_slice(&c[at..at + n]);
                Ok(n)
            }
        }
    }

    fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, off)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf = &mut buf[n..];
            off += n as u64;
        }
        Ok(())
    }
}

/// Where the files' contents are.
#[derive(Debug)]
enum Data {
    /// In the tar as received (decompressed).
    Spool(Spool),
    /// In the daemon's blob store, by sha256 (an incremental context), pinned while in use.
    Blobs(Pins),
}

/// The context's tree (from a tar or a manifest): what unpacking it would make.
#[derive(Debug)]
pub(crate) struct TarIndex {
    data: Data,
    nodes: HashMap<String, Node>,
    children: HashMap<String, BTreeSet<String>>,
    /// Set once the whole context is written under the context root (or the error doing it).
    unpacked: OnceLock<std::result::Result<(), String>>,
    /// Blob-backed contexts are written per selection: the paths written so far.
    made: Mutex<HashSet<String>>,
}

fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// Copies everything read into the spool, so the tar is parsed and kept in one pass.
struct Tee<'a, R> {
    r: R,
    w: Spool,
    tmp: &'a Path,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write(&buf[..n], self.tmp)?;
        Ok(n)
    }
}

/// Reads the spool from the start (positioned reads: the spool is shared).
struct SpoolReader<'a> {
    f: &'a Spool,
    pos: u64,
    end: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = (self.end - self.pos).min(buf.len() as u64) as usize;
        if max == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..max], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarIndex {
    /// Parses the tar while spooling it, refusing what `unpack_safely` refuses, and hashing each
    /// file as it passes.
    fn ingest(input: impl Read, tmp_parent: &Path) -> Result<TarIndex> {
        let tee = Tee {
            r: input,
            w: Spool::Mem(Vec::new()),
            tmp: tmp_parent,
        };
        let mut idx = TarIndex::new(Data::Spool(Spool::Mem(Vec::new())));
        let mut ar = tar::Archive::new(tee);
        each_entry(&mut ar, |mut entry, rel| {
            let rel = rel.to_string_lossy().into_owned();
            idx.parents(&rel)?;
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            match entry.header().entry_type() {
                tar::EntryType::Directory => match idx.nodes.get_mut(&rel) {
                    Some(n) if n.kind == Kind::Dir => n.mode = mode | 0o700,
                    _ => idx.insert(&rel, Node::dir(mode | 0o700)),
                },
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let offset = entry.raw_file_position();
                    let mut h = Sha256::new();
                    let size = copy_big(&mut entry, &mut HashWriter(&mut h))
                        .map_err(|e| BuildError::io(format!("read {rel}"), e))?;
                    idx.insert(
                        &rel,
                        Node {
                            kind: Kind::File,
                            mode,
                            size,
                            offset,
                            sha: h.finalize().into(),
                            link: String::new(),
                        },
                    );
                }
                tar::EntryType::Symlink => {
                    let target = link_target(&entry, "symlink")?
                        .to_string_lossy()
                        .into_owned();
                    let mut n = Node::dir(0o777);
                    n.kind = Kind::Symlink;
                    n.link = target;
                    idx.insert(&rel, n);
                }
                tar::EntryType::Link => {
                    let target = link_target(&entry, "hard link")?;
                    let trel = entry_rel(&target)?
                        .ok_or_else(|| hostile("hard link to the context root"))?;
                    let trel = trel.to_string_lossy().into_owned();
                    idx.parents(&trel)?;
                    // link(2) makes no directory links and needs an existing target.
                    let n = match idx.nodes.get(&trel) {
                        Some(n) if n.kind != Kind::Dir => n.clone(),
                        _ => {
                            return Err(BuildError::io(
                                format!("unpack {rel}"),
                                io::Error::from(io::ErrorKind::NotFound),
                            ));
                        }
                    };
                    idx.insert(&rel, n);
                }
                // Devices, FIFOs, pax/gnu metadata entries: nothing to unpack.
                _ => {}
            }
            Ok(())
        })?;
        // The rest (end-of-archive blocks, padding) is read so the client is not cut off.
        let mut tee = ar.into_inner();
        io::copy(&mut tee.r, &mut io::sink()).map_err(|e| BuildError::io("read context", e))?;
        if let Spool::File(f) = &mut tee.w {
            io::Write::flush(f).map_err(|e| BuildError::io("write context spool", e))?;
        }
        idx.data = Data::Spool(tee.w);
        Ok(idx)
    }

    fn new(data: Data) -> TarIndex {
        TarIndex {
            data,
            nodes: HashMap::new(),
            children: HashMap::new(),
            unpacked: OnceLock::new(),
            made: Mutex::new(HashSet::new()),
        }
    }

    /// The index of an incremental context's manifest, its files in the blob store. `entries`
    /// are (path, node) as the client sent them, checked here as a tar's would be (parents
    /// made as directories, none a symlink or a file) and more strictly: a path must be clean
    /// and relative (no `..`, `.`, empty component, absolute path or NUL) and appear once.
    pub(crate) fn from_manifest(
        entries: impl IntoIterator<Item = (String, ManifestNode)>,
        pins: Pins,
    ) -> Result<TarIndex> {
        let mut idx = TarIndex::new(Data::Blobs(pins));
        let mut seen = HashSet::new();
        for (rel, m) in entries {
            if rel.is_empty()
                || rel.contains('\0')
                || rel
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(hostile(format!("bad path {rel:?} in the manifest")));
            }
            if !seen.insert(rel.clone()) {
                return Err(hostile(format!("{rel} appears twice in the manifest")));
            }
            idx.parents(&rel)?;
            let node = match m {
                ManifestNode::Dir { mode } => Node::dir((mode & 0o7777) | 0o700),
                ManifestNode::File { mode, size, sha } => Node {
                    kind: Kind::File,
                    mode: mode & 0o7777,
                    size,
                    offset: 0,
                    sha,
                    link: String::new(),
                },
                ManifestNode::Symlink { target } => {
                    if target.is_empty() || target.contains('\0') {
                        return Err(hostile(format!("bad symlink target for {rel}")));
                    }
                    let mut n = Node::dir(0o777);
                    n.kind = Kind::Symlink;
                    n.link = target;
                    n
                }
            };
            // A path already made as an implicit parent keeps its children (as in a tar).
            match idx.nodes.get_mut(&rel) {
                Some(n) if n.kind == Kind::Dir && node.kind == Kind::Dir => n.mode = node.mode,
                _ => idx.insert(&rel, node),
            }
        }
        Ok(idx)
    }

    /// `safe_parent` on the index: missing parents become directories; a symlink or a file on
    /// the way is refused.
    fn parents(&mut self, rel: &str) -> Result<()> {
        let mut cur = String::new();
        let comps: Vec<&str> = rel.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            cur = join_rel(&cur, c);
            match self.nodes.get(&cur).map(|n| n.kind) {
                Some(Kind::Symlink) => {
                    return Err(hostile(format!("{rel} goes through the symlink {cur}")));
                }
                Some(Kind::Dir) => {}
                Some(Kind::File) => return Err(hostile(format!("{cur} is not a directory"))),
                None => self.insert(&cur, Node::dir(0o755)),
            }
        }
        Ok(())
    }

    /// Puts `n` at `rel`, replacing whatever was there (a directory with its contents).
    fn insert(&mut self, rel: &str, n: Node) {
        self.remove(rel);
        let (parent, name) = split_rel(rel);
        self.children
            .entry(parent.to_string())
            .or_default()
            .insert(name.to_string());
        self.nodes.insert(rel.to_string(), n);
    }

    fn remove(&mut self, rel: &str) {
        if self.nodes.remove(rel).is_none() {
            return;
        }
        if let Some(kids) = self.children.remove(rel) {
            for k in kids {
                self.remove(&join_rel(rel, &k));
            }
        }
        let (parent, name) = split_rel(rel);
        if let Some(s) = self.children.get_mut(parent) {
            s.remove(name);
        }
    }

    fn node(&self, rel: &str) -> Option<&Node> {
        static ROOT: OnceLock<Node> = OnceLock::new();
        if rel.is_empty() {
            return Some(ROOT.get_or_init(|| Node::dir(0o755)));
        }
        self.nodes.get(rel)
    }

    /// [`resolve_in_root`] over the index; returns the resolved path relative to the root.
    fn resolve(&self, path: &str, follow_last: bool) -> io::Result<String> {
        let r = resolve_with(path, follow_last, |parts| {
            Ok(self
                .nodes
                .get(&parts.join("/"))
                .filter(|n| n.kind == Kind::Symlink)
                .map(|n| n.link.clone()))
        })?;
        Ok(r.join("/"))
    }

    fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let n = self
            .node(rel)
            .filter(|n| n.kind == Kind::File)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match &self.data {
            Data::Spool(spool) => {
                let mut buf = vec![0u8; n.size as usize];
                spool.read_exact_at(&mut buf, n.offset)?;
                Ok(buf)
            }
            Data::Blobs(pins) => fs::read(pins.store().path(&n.sha)),
        }
    }

    fn unpack(&self, root: &Path) -> Result<()> {
        match &self.data {
            Data::Spool(spool) => {
                let r = SpoolReader {
                    f: spool,
                    pos: 0,
                    end: spool.len(),
                };
                unpack_safely(BufReader::with_capacity(256 * 1024, r), root)
            }
            Data::Blobs(_) => self.write_tree(root, ""),
        }
    }

    /// Writes `rel` (with its parents, and everything under it) under `root` from the blob
    /// store, as unpacking a tar of it would: files copied (a reflink where the filesystem can,
    /// never a hard link, so no step can change a blob) with their modes, directories with
    /// theirs, symlinks as they are, and what each symlink points to (a step may follow it).
    /// Paths already written are skipped.
    fn write_tree(&self, root: &Path, rel: &str) -> Result<()> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let mut trees = vec![rel.to_string()];
        let mut seen = HashSet::new();
        while let Some(t) = trees.pop() {
            if seen.insert(t.clone()) {
                self.write_one_tree(root, &t, &mut made, &mut trees)?;
            }
        }
        Ok(())
    }

    fn write_one_tree(
        &self,
        root: &Path,
        rel: &str,
        made: &mut HashSet<String>,
        links: &mut Vec<String>,
    ) -> Result<()> {
        let Data::Blobs(pins) = &self.data else {
            return Ok(());
        };
        let mut todo: Vec<String> = Vec::new();
        let mut cur = String::new();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            cur = join_rel(&cur, c);
            todo.push(cur.clone());
        }
        // The subtree, parents before children.
        let mut stack = vec![rel.to_string()];
        while let Some(d) = stack.pop() {
            if let Some(kids) = self.children.get(&d) {
                for k in kids.iter().rev() {
                    let r = join_rel(&d, k);
                    todo.push(r.clone());
                    stack.push(r);
                }
            }
        }
        for r in todo {
            if made.contains(&r) {
                continue;
            }
            let Some(n) = self.nodes.get(&r) else {
                continue;
            };
            let full = root.join(&r);
            let io_err = |e: io::Error| BuildError::io(format!("write context file {r}"), e);
            match n.kind {
                Kind::Dir => {
                    match fs::create_dir(&full) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(io_err(e));
                        }
                        _ => {}
                    }
                    fs::set_permissions(&full, fs::Permissions::from_mode(n.mode))
                        .map_err(io_err)?;
                }
                Kind::File => {
                    fs::copy(pins.store().path(&n.sha), &full).map_err(io_err)?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(n.mode))
                        .map_err(io_err)?;
                }
                Kind::Symlink => {
                    std::os::unix::fs::symlink(&n.link, &full).map_err(io_err)?;
                    if let Ok(t) = self.resolve(&r, true) {
                        links.push(t);
                    }
                }
            }
            made.insert(r);
        }
        Ok(())
    }
}

/// One manifest entry's node, as [`crate::incremental`] hands it over.
#[derive(Debug, Clone)]
pub(crate) enum ManifestNode {
    Dir { mode: u32 },
    File { mode: u32, size: u64, sha: [u8; 32] },
    Symlink { target: String },
}

impl BuildContext {
    /// Uses a local directory as the context (nothing is copied). `dockerfile` is the path of the
    /// Dockerfile relative to the context (default `Dockerfile`).
    pub fn from_dir(dir: &Path, dockerfile: Option<&str>) -> Result<BuildContext> {
        let root = fs::canonicalize(dir)
            .map_err(|e| BuildError::io(format!("open build context {}", dir.display()), e))?;
        Self::finish(root, None, None, dockerfile)
    }

    /// Reads the Engine API's context tar (plain or gzip) in one pass: it is spooled to an unnamed
    /// file under `tmp_parent` (e.g. `<data-root>/build/tmp`) and indexed, each file hashed on the
    /// way; entries that would land outside the context are refused. Nothing is unpacked until a
    /// step needs the files ([`BuildContext::materialize`]), so a fully cached build never writes
    /// the context out.
    pub fn from_tar(
        body: impl Read,
        tmp_parent: &Path,
        dockerfile: Option<&str>,
    ) -> Result<BuildContext> {
        fs::create_dir_all(tmp_parent)
            .map_err(|e| BuildError::io(format!("create {}", tmp_parent.display()), e))?;
        let mut r = BufReader::with_capacity(256 * 1024, body);
        let gz = r
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        let idx = if gz {
            let d = flate2::read::GzDecoder::new(r);
            TarIndex::ingest(BufReader::with_capacity(256 * 1024, d), tmp_parent)?
        } else {
            TarIndex::ingest(r, tmp_parent)?
        };
        Self::from_index(idx, tmp_parent, dockerfile)
    }

    /// A context over an index (a tar's or a manifest's), its files to be written under a new
    /// temp dir in `tmp_parent` when a step needs them.
    pub(crate) fn from_index(
        idx: TarIndex,
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
        Self::finish(root, Some(tmp), Some(Arc::new(idx)), dockerfile)
    }

    fn finish(
        root: PathBuf,
        tmp: Option<tempfile::TempDir>,
        tar: Option<Arc<TarIndex>>,
        dockerfile: Option<&str>,
    ) -> Result<BuildContext> {
        let name = dockerfile.filter(|d| !d.is_empty()).unwrap_or("Dockerfile");
        let read = |rel: &str| -> io::Result<(String, Vec<u8>)> {
            match &tar {
                Some(t) => {
                    let p = t.resolve(rel, true)?;
                    let b = t.read(&p)?;
                    Ok((p, b))
                }
                None => {
                    let p = resolve_in_root(&root, rel, true)?;
                    let b = fs::read(&p)?;
                    Ok((p.to_string_lossy().into_owned(), b))
                }
            }
        };
        let found = read(name).or_else(|e| {
            // dockerd also accepts a lower-case `dockerfile`.
            if dockerfile.is_none() {
                read("dockerfile")
            } else {
                Err(e)
            }
        });
        let (path, text) = found.map_err(|_| {
            BuildError::Invalid(format!("Cannot locate specified Dockerfile: {name}"))
        })?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let read_text = |rel: &str| -> Option<String> {
            let b = match &tar {
                Some(t) => t.resolve(rel, true).and_then(|p| t.read(&p)).ok()?,
                None => fs::read(rel).ok()?,
            };
            Some(String::from_utf8_lossy(&b).into_owned())
        };
        let own_ignore = format!("{path}.dockerignore");
        let main_ignore = match &tar {
            Some(_) => ".dockerignore".to_string(),
            None => root.join(".dockerignore").to_string_lossy().into_owned(),
        };
        let ignore_text = read_text(&own_ignore)
            .or_else(|| read_text(&main_ignore))
            .unwrap_or_default();
        let ignore = DockerIgnore::parse(&ignore_text).map_err(BuildError::Invalid)?;
        Ok(BuildContext {
            root,
            _tmp: tmp,
            tar,
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
            tar: None,
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
            tar: self.tar.clone(),
            ignore: DockerIgnore::parse(&text).map_err(BuildError::Invalid)?,
            dockerfile: String::new(),
            dockerfile_name: String::new(),
        })
    }

    /// The context root on the host. For a tar context its files exist only after
    /// [`BuildContext::materialize`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the context's files exist under [`BuildContext::root`] (unpacks a tar context once,
    /// for the first step that copies or binds them) and returns the root.
    pub fn materialize(&self) -> Result<&Path> {
        if let Some(t) = &self.tar {
            t.unpacked
                .get_or_init(|| t.unpack(&self.root).map_err(|e| e.to_string()))
                .clone()
                .map_err(BuildError::Context)?;
        }
        Ok(&self.root)
    }

    /// Makes the files of `sels` exist under [`BuildContext::root`]: for a context over the blob
    /// store only what they hold (a COPY of one changed file writes that file, not the context),
    /// otherwise as [`BuildContext::materialize`].
    pub fn materialize_selected(&self, sels: &[Selected]) -> Result<()> {
        match &self.tar {
            Some(t) if matches!(t.data, Data::Blobs(_)) => {
                if t.unpacked.get().is_some() {
                    return Ok(());
                }
                for s in sels {
                    t.write_tree(&self.root, &self.rel_of(&s.path))?;
                }
                Ok(())
            }
            _ => self.materialize().map(|_| ()),
        }
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
            self.walk_any("", &mut |p, rel, is_dir| {
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
        let resolve_err = |e| BuildError::io(format!("resolve {source}"), e);
        let (path, real_rel, is_dir) = match &self.tar {
            Some(t) => {
                let real = t.resolve(rel, true).map_err(resolve_err)?;
                let is_dir = t.node(&real).map(|n| n.kind == Kind::Dir);
                (self.root.join(&real), real, is_dir)
            }
            None => {
                let path = resolve_in_root(&self.root, rel, true).map_err(resolve_err)?;
                let real = self.rel_of(&path);
                let is_dir = fs::metadata(&path).ok().map(|m| m.is_dir());
                (path, real, is_dir)
            }
        };
        match is_dir {
            Some(is_dir)
                if real_rel.is_empty() || (!self.excluded(&real_rel) && !self.excluded(rel)) =>
            {
                Ok(vec![Selected {
                    rel: rel.to_string(),
                    path,
                    is_dir,
                }])
            }
            _ => Err(BuildError::Context(format!(
                "COPY failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist"
            ))),
        }
    }

    /// Walks everything under `dir` (relative to the root) that `.dockerignore` keeps, in the
    /// index for a tar context, on disk otherwise.
    fn walk_any(&self, dir: &str, f: &mut dyn FnMut(&Path, &str, bool)) -> Result<()> {
        let Some(t) = &self.tar else {
            return self.walk_all(&self.root.join(dir), f);
        };
        let Some(kids) = t.children.get(dir) else {
            return Ok(());
        };
        for name in kids {
            let rel = join_rel(dir, name);
            let is_dir = t.node(&rel).map(|n| n.kind == Kind::Dir).unwrap_or(false);
            let excluded = self.excluded(&rel);
            if !excluded {
                f(&self.root.join(&rel), &rel, is_dir);
            }
            if is_dir && (!excluded || self.ignore.may_include_under(&rel)) {
                self.walk_any(&rel, f)?;
            }
        }
        Ok(())
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
        self.materialize_selected(std::slice::from_ref(sel))?;
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
        if let Some(t) = &self.tar {
            return self.index_hash(t, sels);
        }
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

impl BuildContext {
    /// [`BuildContext::content_hash`] from the index: the same fields, each file's content by
    /// the sha256 taken while it was received (no file is read again).
    fn index_hash(&self, t: &TarIndex, sels: &[Selected]) -> Result<String> {
        let mut h = Sha256::new();
        let entry = |h: &mut Sha256, rel: &str, n: &Node| {
            let kind = match n.kind {
                Kind::Dir => 'd',
                Kind::Symlink => 'l',
                Kind::File => 'f',
            };
            h.update(format!("{rel}\0{kind}\0{:o}\00\00\0", n.mode).as_bytes());
            match n.kind {
                Kind::Symlink => h.update(n.link.as_bytes()),
                Kind::File => {
                    h.update(n.size.to_le_bytes());
                    h.update(n.sha);
                }
                Kind::Dir => {}
            }
            h.update([0]);
        };
        for s in sels {
            h.update(s.rel.as_bytes());
            h.update([0]);
            let real = self.rel_of(&s.path);
            if !s.is_dir {
                let n = t
                    .node(&real)
                    .ok_or_else(|| BuildError::Context(format!("stat {}: not found", s.rel)))?;
                entry(&mut h, "", n);
                continue;
            }
            let mut items = Vec::new();
            self.walk_any(&real, &mut |_, rel, _| items.push(rel.to_string()))?;
            for rel in items {
                if let Some(n) = t.node(&rel) {
                    let sub = rel[real.len()..].trim_start_matches('/');
                    entry(&mut h, sub, n);
                }
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
    each_entry(&mut ar, |mut entry, rel| {
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
                let target = link_target(&entry, "symlink")?;
                remove_existing(&full).map_err(io_err)?;
                std::os::unix::fs::symlink(&target, &full).map_err(io_err)?;
            }
            tar::EntryType::Link => {
                let target = link_target(&entry, "hard link")?;
                let trel =
                    entry_rel(&target)?.ok_or_else(|| hostile("hard link to the context root"))?;
                let src = safe_parent(root, &trel)?;
                remove_existing(&full).map_err(io_err)?;
                fs::hard_link(&src, &full).map_err(io_err)?;
            }
            // Devices, FIFOs, pax/gnu metadata entries: nothing to unpack.
            _ => {}
        }
        Ok(())
    })
}

/// Calls `f` with each entry of `ar` and its relative path (entries naming the root skipped,
/// `..` refused).
fn each_entry<R: Read>(
    ar: &mut tar::Archive<R>,
    mut f: impl FnMut(tar::Entry<'_, R>, PathBuf) -> Result<()>,
) -> Result<()> {
    let entries = ar.entries().map_err(|e| hostile(format!("bad tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| hostile(format!("bad tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| hostile(format!("bad tar path: {e}")))?
            .into_owned();
        if let Some(rel) = entry_rel(&path)? {
            f(entry, rel)?;
        }
    }
    Ok(())
}

/// The target of a link entry (`what` names it in errors).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, what: &str) -> Result<PathBuf> {
    Ok(entry
        .link_name()
        .map_err(|e| hostile(format!("bad link: {e}")))?
        .ok_or_else(|| hostile(format!("{what} without target")))?
        .into_owned())
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
        // Nothing is unpacked until a step needs the files.
        assert!(!ctx.root().join("src").exists());
        let with = |y: &[u8], mtime: u64| {
            let t = tar_with(|b| {
                raw_entry(b, "Dockerfile", tar::EntryType::Regular, None, b"FROM x\n");
                let mut h = tar::Header::new_gnu();
                h.set_path("src/x.txt").unwrap();
                h.set_size(1);
                h.set_mode(0o644);
                h.set_mtime(mtime);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
                raw_entry(b, "src/y.txt", tar::EntryType::Regular, None, y);
            });
            let c = BuildContext::from_tar(&t[..], parent.path(), None).unwrap();
            c.content_hash(&c.select("src").unwrap()).unwrap()
        };
        let h2 = with(b"y", 1);
        assert_eq!(h1, h2, "only what the selection holds counts");
        assert_ne!(h2, with(b"changed", 1));
        // mtime alone does not change the hash.
        assert_eq!(h2, with(b"y", 99));
        // Materialized, the tree is what the index said.
        let root = ctx.materialize().unwrap();
        assert_eq!(fs::read(root.join("src/y.txt")).unwrap(), b"y");
        assert!(!root.join("esc").exists() || root.join("esc").is_symlink());
    }
}
