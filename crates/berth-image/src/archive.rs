//! `docker save` and `docker load`: docker-archive tars (the OCI-layout form docker 25+ writes, and the
//! older `<id>/layer.tar` form) and plain OCI image layout archives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BlobDescriptor, ImageStore, MEDIA_TYPE_CONFIG, decompress};
use crate::config::go_arch;
use crate::digest::{Digest, ImageId};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{mkdir_all, remove_any, temp_sibling};
use crate::reference::Reference;

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker schema2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image `load` added: `Loaded image: busybox:latest` or `Loaded image ID: sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedImage {
    /// A tag (familiar form) now pointing at a loaded image.
    Tagged(String),
    /// A loaded image without tags.
    Id(ImageId),
}

impl fmt::Display for LoadedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadedImage::Tagged(t) => write!(f, "Loaded image: {t}"),
            LoadedImage::Id(id) => write!(f, "Loaded image ID: {id}"),
        }
    }
}

/// An OCI descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI manifest or index (the fields `load` needs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OciManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
}

/// An entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(e.to_string()))
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Appends a regular file entry (mode 0444, mtime 0).
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o444);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, path, data)
        .map_err(|e| Error::io(format!("write {path}"), e))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    tar.append_data(&mut h, path, io::empty())
        .map_err(|e| Error::io(format!("write {path}"), e))
}

/// One image to save, with its open blobs (opened under the lock so a concurrent `rmi` cannot pull
/// them away mid-save).
struct SaveItem {
    id: ImageId,
    tags: Vec<Reference>,
    config: Vec<u8>,
    layers: Vec<BlobDescriptor>,
}

impl ImageStore {
    /// `docker save`: writes the images `names` (references, IDs or ID prefixes; a repository without
    /// tag means all its tags) as one docker-archive tar in the OCI-layout form docker 25+ writes
    /// (`blobs/sha256/*`, `index.json`, `oci-layout`, `manifest.json`, `repositories`), which old and
    /// new docker, skopeo and containerd load. Layer blobs are streamed as stored.
    /// Errors: NotFound (`No such image: x`), InvalidArgument, Internal.
    pub fn save(&self, names: &[&str], out: impl Write) -> Result<()> {
        let mut items: Vec<SaveItem> = Vec::new();
        let mut files: HashMap<Digest, (File, u64)> = HashMap::new();
        {
            let st = self.lock();
            for name in names {
                let mut tags = Vec::new();
                let id = match Reference::parse(name) {
                    Ok(r) if r.tag().is_none() && r.digest().is_none() => {
                        let all: Vec<(Reference, ImageId)> = st
                            .refs
                            .iter()
                            .filter(|(k, _)| k.name() == r.name() && k.tag().is_some())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        if all.is_empty() {
                            self.resolve_locked(&st, name)?
                        } else {
                            for (k, v) in all {
                                add_item(&mut items, &v, Some(k));
                            }
                            continue;
                        }
                    }
                    Ok(r) if r.tag().is_some() => {
                        let id = self.resolve_locked(&st, name)?;
                        tags.push(r);
                        id
                    }
                    _ => self.resolve_locked(&st, name)?,
                };
                add_item(&mut items, &id, tags.pop());
            }
            for item in &mut items {
                let img = st
                    .images
                    .get(&item.id)
                    .ok_or_else(|| Error::NoSuchImage(item.id.to_string()))?;
                item.layers = img
                    .chain_ids
                    .iter()
                    .map(|c| {
                        st.layers
                            .get(c)
                            .and_then(|l| l.blob.clone())
                            .ok_or_else(|| Error::NotFound(format!("layer blob of {c} not stored")))
                    })
                    .collect::<Result<_>>()?;
                for l in &item.layers {
                    if !files.contains_key(&l.digest) {
                        files.insert(l.digest.clone(), self.open_blob(&l.digest)?);
                    }
                }
            }
        }
        for item in &mut items {
            item.config = self.read_blob(&item.id)?;
        }

        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        append_dir(&mut tar, "blobs/")?;
        append_dir(&mut tar, "blobs/sha256/")?;
        let mut written: BTreeSet<Digest> = BTreeSet::new();
        let mut index = Vec::new();
        let mut manifest_json = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for item in &items {
            // Layers, streamed.
            for l in &item.layers {
                if written.insert(l.digest.clone()) {
                    let (f, size) = files.remove(&l.digest).ok_or_else(|| {
                        Error::internal(format!("blob {} opened twice", l.digest))
                    })?;
                    append_file(&mut tar, &blob_name(&l.digest), size, BufReader::new(f))?;
                }
            }
            if written.insert(item.id.clone()) {
                append_file(
                    &mut tar,
                    &blob_name(&item.id),
                    item.config.len() as u64,
                    &item.config[..],
                )?;
            }
            let manifest = OciManifest {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
                config: Some(Descriptor {
                    media_type: MEDIA_TYPE_CONFIG.into(),
                    digest: item.id.clone(),
                    size: item.config.len() as u64,
                    platform: None,
                    annotations: BTreeMap::new(),
                }),
                layers: item
                    .layers
                    .iter()
                    .map(|l| Descriptor {
                        media_type: l.media_type.clone(),
                        digest: l.digest.clone(),
                        size: l.size,
                        platform: None,
                        annotations: BTreeMap::new(),
                    })
                    .collect(),
                manifests: Vec::new(),
            };
            let mbytes = json(&manifest)?;
            let mdigest = Digest::of_bytes(&mbytes);
            if written.insert(mdigest.clone()) {
                append_file(
                    &mut tar,
                    &blob_name(&mdigest),
                    mbytes.len() as u64,
                    &mbytes[..],
                )?;
            }
            let desc = |annotations| Descriptor {
                media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                digest: mdigest.clone(),
                size: mbytes.len() as u64,
                platform: None,
                annotations,
            };
            if item.tags.is_empty() {
                index.push(desc(BTreeMap::new()));
            }
            for t in &item.tags {
                let mut a = BTreeMap::new();
                a.insert(ANNOTATION_CONTAINERD_NAME.to_string(), t.full_string());
                a.insert(
                    ANNOTATION_REF_NAME.to_string(),
                    t.tag().unwrap_or("latest").to_string(),
                );
                index.push(desc(a));
                if let Some(top) = item.layers.last() {
                    repositories.entry(t.familiar_name()).or_default().insert(
                        t.tag().unwrap_or("latest").to_string(),
                        top.digest.hex().to_string(),
                    );
                }
            }
            manifest_json.push(ArchiveEntry {
                config: blob_name(&item.id),
                repo_tags: (!item.tags.is_empty())
                    .then(|| item.tags.iter().map(|t| t.familiar_string()).collect()),
                layers: item.layers.iter().map(|l| blob_name(&l.digest)).collect(),
            });
        }
        let index = OciManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
            config: None,
            layers: Vec::new(),
            manifests: index,
        };
        let index = json(&index)?;
        append_file(&mut tar, "index.json", index.len() as u64, &index[..])?;
        let m = json(&manifest_json)?;
        append_file(&mut tar, "manifest.json", m.len() as u64, &m[..])?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        append_file(&mut tar, "oci-layout", layout.len() as u64, &layout[..])?;
        if !repositories.is_empty() {
            let r = json(&repositories)?;
            append_file(&mut tar, "repositories", r.len() as u64, &r[..])?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::io("write archive", e))
    }

    /// `docker load`: reads a docker-archive (old `<id>/layer.tar` form or docker 25+'s OCI form) or an
    /// OCI image layout archive (optionally gzip/zstd compressed), adds its images through
    /// [`ImageStore::add_image`] (diff IDs verified) and tags them. The tar is spooled to a temporary
    /// directory under the store (removed afterwards, and by `open` after a crash); paths with `..` are
    /// refused and links are resolved inside the archive, so nothing is written outside it.
    /// Errors: InvalidArgument (not an image archive, mismatching layers), Internal.
    pub fn load(&self, tar: impl Read) -> Result<Vec<LoadedImage>> {
        self.load_with_progress(tar, &|_| {})
    }

    /// [`ImageStore::load`], reporting each layer it unpacks as dockerd's `Loading layer` progress
    /// (at most every 100 ms per layer, and once at the end of each).
    pub fn load_with_progress(
        &self,
        tar: impl Read,
        progress: &dyn Fn(&LoadProgress),
    ) -> Result<Vec<LoadedImage>> {
        let mut spool = Spool::new(temp_sibling(&self.root.join("load")))?;
        let (input, _) = decompress(tar)?;
        spool.extract(input)?;
        if spool.exists("manifest.json") {
            self.load_docker_archive(&spool, progress)
        } else if spool.exists("index.json") {
            self.load_oci_layout(&spool, progress)
        } else {
            Err(Error::invalid(
                "invalid image archive: neither manifest.json nor index.json found",
            ))
        }
    }

    fn load_docker_archive(
        &self,
        spool: &Spool,
        progress: &dyn Fn(&LoadProgress),
    ) -> Result<Vec<LoadedImage>> {
        let entries: Vec<ArchiveEntry> = serde_json::from_slice(&spool.read("manifest.json")?)
            .map_err(|e| Error::invalid(format!("invalid manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let config = spool.read(&e.config)?;
            let paths = e
                .layers
                .iter()
                .map(|l| spool.resolve(l))
                .collect::<Result<Vec<_>>>()?;
            let tags: Vec<String> = e.repo_tags.unwrap_or_default();
            let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let pending = self.begin_image(&config, &refs)?;
            if pending.config().rootfs.diff_ids.len() != paths.len() {
                return Err(Error::invalid(format!(
                    "invalid manifest.json: {} layers, the config has {} diff IDs",
                    paths.len(),
                    pending.config().rootfs.diff_ids.len()
                )));
            }
            let unpacked = pending.missing_layers().iter().try_for_each(|&i| {
                let r = open_reporting(&paths[i], &pending.chain_ids()[i], progress)?;
                self.unpack_pending_layer(&pending, i, r, None).map(drop)
            });
            let sum = self.settle_image(pending, unpacked, &[])?;
            push_loaded(&mut out, sum.id, &tags)?;
        }
        Ok(out)
    }

    fn load_oci_layout(
        &self,
        spool: &Spool,
        progress: &dyn Fn(&LoadProgress),
    ) -> Result<Vec<LoadedImage>> {
        let index: OciManifest = serde_json::from_slice(&spool.read("index.json")?)
            .map_err(|e| Error::invalid(format!("invalid index.json: {e}")))?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let name = desc
                .annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| {
                    desc.annotations
                        .get(ANNOTATION_REF_NAME)
                        .filter(|n| n.contains([':', '/', '@']))
                })
                .and_then(|n| Reference::parse(n).ok())
                .filter(|r| r.digest().is_none())
                .map(|r| r.with_default_tag().familiar_string());
            let (mbytes, manifest) = self.select_manifest(spool, desc, 0)?;
            let config_desc = manifest
                .config
                .as_ref()
                .ok_or_else(|| Error::invalid("invalid OCI manifest: no config"))?;
            let config = spool.read_blob(&config_desc.digest)?;
            let tags: Vec<String> = name.into_iter().collect();
            let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let pending = self.begin_image(&config, &refs)?;
            if pending.config().rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(Error::invalid(format!(
                    "invalid OCI manifest {}: {} layers, the config has {} diff IDs",
                    desc.digest,
                    manifest.layers.len(),
                    pending.config().rootfs.diff_ids.len()
                )));
            }
            let unpacked = pending.missing_layers().iter().try_for_each(|&i| {
                let l = &manifest.layers[i];
                let p = spool.resolve(&blob_path_of(&l.digest))?;
                let r = open_reporting(&p, &pending.chain_ids()[i], progress)?;
                self.unpack_pending_layer(&pending, i, r, Some(&l.digest))
                    .map(drop)
            });
            let sum = self.settle_image(pending, unpacked, &[&mbytes])?;
            push_loaded(&mut out, sum.id, &tags)?;
        }
        Ok(out)
    }

    /// Reads the manifest `desc` points at; for an index, the entry for linux and this machine's
    /// architecture (or its only entry).
    fn select_manifest(
        &self,
        spool: &Spool,
        desc: &Descriptor,
        depth: u32,
    ) -> Result<(Vec<u8>, OciManifest)> {
        if depth > 4 {
            return Err(Error::invalid(
                "invalid OCI layout: indexes nested too deep",
            ));
        }
        let bytes = spool.read_blob(&desc.digest)?;
        let m: OciManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("invalid manifest {}: {e}", desc.digest)))?;
        let is_index = desc.media_type == MEDIA_TYPE_OCI_INDEX
            || desc.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
            || (m.config.is_none() && !m.manifests.is_empty());
        if !is_index {
            return Ok((bytes, m));
        }
        let pick = m
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == go_arch())
            })
            .or_else(|| (m.manifests.len() == 1).then(|| &m.manifests[0]))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no matching manifest for linux/{} in the manifest list entries",
                    go_arch()
                ))
            })?;
        self.select_manifest(spool, pick, depth + 1)
    }
}

/// Progress of one layer of a `load`: dockerd's `{"status":"Loading layer","id":<short chain ID>,
/// "progressDetail":{"current":..,"total":..}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProgress {
    /// The layer's short chain ID (12 hex characters), the `id` dockerd shows.
    pub id: String,
    /// Bytes of the layer file read so far.
    pub current: u64,
    /// Size of the layer file in the archive.
    pub total: u64,
}

/// A reader reporting `Loading layer` progress.
struct ProgressReader<'a, R> {
    inner: R,
    cb: &'a dyn Fn(&LoadProgress),
    p: LoadProgress,
    last: Option<std::time::Instant>,
    done: bool,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.p.current += n as u64;
        if self.done {
            return Ok(n);
        }
        let now = std::time::Instant::now();
        let end = n == 0 || self.p.current >= self.p.total;
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_millis(100));
        if end || due {
            self.last = Some(now);
            self.done = end;
            (self.cb)(&self.p);
        }
        Ok(n)
    }
}

fn open_reporting<'a>(
    path: &Path,
    chain: &Digest,
    cb: &'a dyn Fn(&LoadProgress),
) -> Result<ProgressReader<'a, BufReader<File>>> {
    let f = File::open(path).ctx("open", path)?;
    let total = f.metadata().ctx("stat", path)?.len();
    Ok(ProgressReader {
        inner: BufReader::with_capacity(64 * 1024, f),
        cb,
        p: LoadProgress {
            id: chain.short().to_string(),
            current: 0,
            total,
        },
        last: None,
        done: false,
    })
}

fn blob_path_of(d: &Digest) -> String {
    blob_name(d)
}

fn add_item(items: &mut Vec<SaveItem>, id: &ImageId, tag: Option<Reference>) {
    let i = match items.iter().position(|x| x.id == *id) {
        Some(i) => i,
        None => {
            items.push(SaveItem {
                id: id.clone(),
                tags: Vec::new(),
                config: Vec::new(),
                layers: Vec::new(),
            });
            items.len() - 1
        }
    };
    if let Some(t) = tag
        && !items[i].tags.contains(&t)
    {
        items[i].tags.push(t);
    }
}

fn push_loaded(out: &mut Vec<LoadedImage>, id: String, tags: &[String]) -> Result<()> {
    if tags.is_empty() {
        out.push(LoadedImage::Id(Digest::parse(&id)?));
    }
    for t in tags {
        let r = Reference::parse(t)?.with_default_tag();
        out.push(LoadedImage::Tagged(r.familiar_string()));
    }
    Ok(())
}

/// A temporary directory holding an extracted archive; removed on drop.
struct Spool {
    dir: PathBuf,
    /// Links in the archive (normalized path → target components, absolute within the archive).
    links: HashMap<Vec<String>, Vec<String>>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
    }
}

/// Splits an archive path into normal components; `..` and other oddities are refused.
fn normalize(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(
                n.to_str()
                    .ok_or_else(|| Error::invalid(format!("invalid archive path {path:?}")))?
                    .to_string(),
            ),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "invalid archive path {}: it leaves the archive",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

impl Spool {
    fn new(dir: PathBuf) -> Result<Spool> {
        mkdir_all(&dir)?;
        Ok(Spool {
            dir,
            links: HashMap::new(),
        })
    }

    fn extract(&mut self, input: impl Read) -> Result<()> {
        let mut links = HashMap::new();
        let mut ar = tar::Archive::new(input);
        let entries = ar
            .entries()
            .map_err(|e| Error::invalid(format!("invalid tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::invalid(format!("invalid tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| Error::invalid(format!("invalid tar: {e}")))?
                .into_owned();
            let comps = normalize(&path)?;
            if comps.is_empty() {
                continue;
            }
            let dest: PathBuf = comps.iter().fold(self.dir.clone(), |p, c| p.join(c));
            match entry.header().entry_type() {
                tar::EntryType::Directory => mkdir_all(&dest)?,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if let Some(parent) = dest.parent() {
                        mkdir_all(parent)?;
                    }
                    // Nothing in the spool is a link, so the write stays inside it.
                    let _ = remove_any(&dest);
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&dest)
                        .ctx("create", &dest)?;
                    io::copy(&mut entry, &mut f)
                        .map_err(|e| Error::invalid(format!("invalid tar: {e}")))?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| Error::invalid(format!("invalid tar: {e}")))?
                        .ok_or_else(|| Error::invalid("invalid tar: link without target"))?
                        .into_owned();
                    let base: Vec<String> = if entry.header().entry_type()
                        == tar::EntryType::Symlink
                        && !target.is_absolute()
                    {
                        comps[..comps.len() - 1].to_vec()
                    } else {
                        Vec::new()
                    };
                    links.insert(comps, join_lexically(base, &target)?);
                }
                _ => {}
            }
        }
        self.links = links;
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        self.resolve(name).is_ok_and(|p| p.is_file())
    }

    /// The file in the spool an archive path names, following the archive's links inside it.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let mut comps = normalize(Path::new(name))?;
        let mut hops = 0;
        'outer: loop {
            for i in 1..=comps.len() {
                if let Some(target) = self.links.get(&comps[..i]) {
                    hops += 1;
                    if hops > 40 {
                        return Err(Error::invalid(format!(
                            "invalid archive: too many links resolving {name}"
                        )));
                    }
                    let mut next = target.clone();
                    next.extend_from_slice(&comps[i..]);
                    comps = next;
                    continue 'outer;
                }
            }
            break;
        }
        Ok(comps.iter().fold(self.dir.clone(), |p, c| p.join(c)))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.resolve(name)?;
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::invalid(format!(
                "invalid image archive: {name} not found"
            ))),
            Err(e) => Err(Error::io_path("read", &p, e)),
        }
    }

    /// Reads `blobs/sha256/<hex>`, verifying its digest.
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let b = self.read(&blob_path_of(d))?;
        if Digest::of_bytes(&b) != *d {
            return Err(Error::invalid(format!(
                "invalid image archive: blob {d} does not match its digest"
            )));
        }
        Ok(b)
    }
}

/// `base` joined with `target` lexically; `..` may not climb above the archive root.
fn join_lexically(mut base: Vec<String>, target: &Path) -> Result<Vec<String>> {
    for c in target.components() {
        match c {
            Component::Normal(n) => base.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                if base.pop().is_none() {
                    return Err(Error::invalid(format!(
                        "invalid archive link {}: it leaves the archive",
                        target.display()
                    )));
                }
            }
            Component::RootDir => base.clear(),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(base)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
