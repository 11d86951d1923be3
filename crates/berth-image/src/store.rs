//! The image store: blobs, unpacked layers, image metadata, tags, container snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::changes::apply_change;
use crate::config::{
    ContainerConfig, History, ImageConfig, RootFs, format_rfc3339_nano, go_arch, now_rfc3339,
    parse_rfc3339,
};
use crate::digest::{
    ChainId, DiffId, Digest, HashingReader, ImageId, TeeReader, chain_ids, is_hex64,
};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{TMP_MARKER, mkdir_all, remove_any, sync_dir, temp_sibling, write_atomic};
use crate::reference::Reference;
use crate::unpack::unpack_layer;

/// Media type of an uncompressed layer tar.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed layer tar.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed layer tar.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of an image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Options of [`ImageStore::import`] (`docker import`'s `--change`, `--message`, source).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile-like changes (`CMD ["sh"]`, `ENV A=b`, `WORKDIR /x`, ...).
    pub changes: Vec<String>,
    /// Commit message; default `Imported from <source>`.
    pub message: Option<String>,
    /// Where the tar came from (`-` for stdin, the default, or a URL).
    pub source: Option<String>,
    /// Architecture to record (default: this machine's).
    pub architecture: Option<String>,
}

/// Options of [`ImageStore::commit`] (`docker commit`'s `--change`, `--message`, `--author`).
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The container's config to record (default: the image's); `changes` apply on top.
    pub config: Option<ContainerConfig>,
    /// Dockerfile-like changes (`CMD ["sh"]`, `ENV A=b`, ...).
    pub changes: Vec<String>,
    /// Commit message (config `comment` and the history entry's comment).
    pub comment: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// The history entry's `created_by` (e.g. the container's command).
    pub created_by: Option<String>,
}

/// One image as `GET /images/json` lists it (Docker's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `sha256:<hex>`.
    pub id: String,
    /// Parent image ID or empty.
    pub parent_id: String,
    /// Tags, familiar form (`busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Digest references (`busybox@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Bytes of all layers.
    pub size: i64,
    /// Not computed: -1.
    pub shared_size: i64,
    /// Config labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Not computed: -1.
    pub containers: i64,
}

/// `docker image inspect` output (Docker's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageDetails {
    /// `sha256:<hex>`.
    pub id: String,
    /// Tags, familiar form.
    pub repo_tags: Vec<String>,
    /// Digest references.
    pub repo_digests: Vec<String>,
    /// Parent image ID or empty.
    pub parent: String,
    /// Comment from the config.
    pub comment: String,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// Engine version that made it.
    pub docker_version: String,
    /// Author.
    pub author: String,
    /// Container defaults.
    pub config: Option<ContainerConfig>,
    /// Architecture.
    pub architecture: String,
    /// Architecture variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system.
    pub os: String,
    /// Bytes of all layers.
    pub size: i64,
    /// Storage driver data.
    pub graph_driver: GraphDriver,
    /// Layers.
    #[serde(rename = "RootFS")]
    pub root_fs: RootFsDetails,
    /// Store metadata.
    pub metadata: ImageMetadata,
}

/// `GraphDriver` of an inspected image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    /// Driver name (`overlay2`).
    pub name: String,
    /// `LowerDir`, `UpperDir`, ...
    pub data: BTreeMap<String, String>,
}

/// `RootFS` of an inspected image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFsDetails {
    /// `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Diff IDs, bottom first.
    pub layers: Vec<String>,
}

/// `Metadata` of an inspected image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageMetadata {
    /// When the image was last tagged (`0001-01-01T00:00:00Z` if never).
    pub last_tag_time: String,
}

/// One line of `DELETE /images/{name}`: `{"Untagged": ...}` or `{"Deleted": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteItem {
    /// A reference was removed (familiar form).
    Untagged(String),
    /// An image or layer was removed (`sha256:...`).
    Deleted(String),
}

/// One line of `docker history` (Docker's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image ID on the top entry, `<missing>` on the others.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The step's command.
    pub created_by: String,
    /// Tags of the image (top entry only).
    pub tags: Vec<String>,
    /// Bytes the step's layer adds.
    pub size: i64,
    /// Comment.
    pub comment: String,
}

/// A container using an image, as the daemon reports it to [`ImageStore::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// Full container ID.
    pub container_id: String,
    /// Whether the container is running (a hard conflict even with force).
    pub running: bool,
}

/// The mounts of a container's root filesystem (overlayfs); the store does not mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Lower dirs, topmost first (at least one).
    pub lowers: Vec<PathBuf>,
    /// Writable upper dir.
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
}

impl RootfsMount {
    /// The overlay mount data: `lowerdir=a:b,upperdir=u,workdir=w`.
    pub fn overlay_options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// A layer blob's descriptor (kept for manifests: save, push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDescriptor {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the blob as stored.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// `layers/<chain>/layer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LayerMeta {
    chain_id: ChainId,
    diff_id: DiffId,
    parent: Option<ChainId>,
    size: u64,
    blob: Option<BlobDescriptor>,
}

/// An entry of `images.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ImageRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<ImageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_tag_time: Option<String>,
    /// Manifests (and indexes) the image was pulled with or pushed as, kept in `blobs/` for `RepoDigests`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    manifests: Vec<Digest>,
    /// The references a new image is getting, written with it before `repositories.json`: `open`
    /// sets those a crash kept out of that file, so a commit, pull or load never leaves its image
    /// dangling. Cleared once they are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_refs: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ImagesFile {
    images: BTreeMap<ImageId, ImageRecord>,
}

/// A blob known to hold a layer (maybe compressed differently from the stored one), and the
/// repositories (`registry/path`) where it was pulled from or pushed to (for push skips and mounts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSource {
    /// The blob as a registry holds it.
    pub blob: BlobDescriptor,
    /// Repositories known to hold the blob, e.g. `127.0.0.1:5000/team/app`.
    #[serde(default)]
    pub repositories: Vec<String>,
}

/// `distribution.json`: diff ID → blobs known to hold it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DistributionFile {
    #[serde(default)]
    layers: BTreeMap<DiffId, Vec<LayerSource>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RepositoriesFile {
    #[serde(rename = "Repositories")]
    repositories: BTreeMap<String, BTreeMap<String, ImageId>>,
}

/// `containers/<id>/layer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ContainerLayer {
    image_id: ImageId,
    chain_ids: Vec<ChainId>,
}

#[derive(Debug)]
struct Image {
    record: ImageRecord,
    config: ImageConfig,
    chain_ids: Vec<ChainId>,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<ImageId, Image>,
    refs: BTreeMap<Reference, ImageId>,
    layers: BTreeMap<ChainId, LayerMeta>,
    containers: BTreeMap<String, ContainerLayer>,
    /// Compressed blobs known per diff ID (`distribution.json`).
    dist: BTreeMap<DiffId, Vec<LayerSource>>,
    /// Layers held by images being added, and by pulls a crash interrupted.
    leases: Leases,
}

/// Leases by key: the chains of an image being added are never garbage-collected.
type Leases = Arc<Mutex<BTreeMap<u64, Lease>>>;

/// Layers held for one image until it is complete (or abandoned, or expired after a crash).
#[derive(Debug)]
struct Lease {
    image: ImageId,
    chains: Vec<ChainId>,
    /// `leases/<file>`: makes the hold outlive a crash, so a re-pull reuses the verified layers.
    file: PathBuf,
}

/// `leases/*.json`.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    image: ImageId,
    chains: Vec<ChainId>,
}

/// How long the layers of a pull a crash interrupted are kept for a re-pull.
const LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn lock_leases(l: &Leases) -> MutexGuard<'_, BTreeMap<u64, Lease>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Releases a lease (memory and file) when the pending image that holds it goes away.
#[derive(Debug)]
struct LeaseGuard {
    leases: Leases,
    key: u64,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(l) = lock_leases(&self.leases).remove(&self.key) {
            let _ = fs::remove_file(&l.file);
        }
    }
}

impl State {
    fn refs_of(&self, id: &ImageId) -> Vec<Reference> {
        self.refs
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(r, _)| r.clone())
            .collect()
    }

    fn has_children(&self, id: &ImageId) -> bool {
        self.images
            .values()
            .any(|i| i.record.parent.as_ref() == Some(id))
    }

    fn layer_referenced(&self, chain: &ChainId) -> bool {
        self.images.values().any(|i| i.chain_ids.contains(chain))
            || self
                .containers
                .values()
                .any(|c| c.chain_ids.contains(chain))
            || lock_leases(&self.leases)
                .values()
                .any(|l| l.chains.contains(chain))
    }

    fn image_size(&self, img: &Image) -> u64 {
        img.chain_ids
            .iter()
            .filter_map(|c| self.layers.get(c))
            .map(|l| l.size)
            .sum()
    }
}

/// A layer unpacked into a temporary directory, not yet part of the store.
#[derive(Debug)]
struct StagedLayer {
    tmp_dir: PathBuf,
    meta: LayerMeta,
    blob_tmp: PathBuf,
}

/// An image being added by [`ImageStore::begin_image`]. Each layer enters the store as soon as it is
/// unpacked and verified, held by a lease (also on disk, so a re-pull after a crash reuses it); the
/// image itself appears only at [`ImageStore::finish_image`]. Dropping it releases the lease (the
/// layers are then collected at the next open; [`ImageStore::abandon_image`] collects them at once).
/// `Send + Sync`: layers may be unpacked from several threads.
#[derive(Debug)]
pub struct PendingImage {
    id: ImageId,
    config_json: Vec<u8>,
    config: ImageConfig,
    chains: Vec<ChainId>,
    refs: Vec<Reference>,
    missing: Vec<usize>,
    _lease: LeaseGuard,
}

impl PendingImage {
    /// The image ID (digest of the config).
    pub fn id(&self) -> &ImageId {
        &self.id
    }

    /// The parsed config.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// Chain IDs of the layers, bottom first.
    pub fn chain_ids(&self) -> &[ChainId] {
        &self.chains
    }

    /// Indexes (into `rootfs.diff_ids`) of the layers the store did not have when the image was begun.
    pub fn missing_layers(&self) -> &[usize] {
        &self.missing
    }
}

/// The image store under `<data-root>/image`. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    state: Mutex<State>,
    created_new: bool,
    repairs: Vec<String>,
    /// Key of the next lease.
    next_lease: AtomicU64,
    /// Exclusive `flock` on `<root>/lock`: one process owns a store.
    _lock: nix::fcntl::Flock<fs::File>,
}

fn json_err(what: &str, path: &Path, e: serde_json::Error) -> Error {
    Error::internal(format!("corrupt {what} {}: {e}", path.display()))
}

/// Docker's "is `s` a prefix of this ID" (with or without `sha256:`).
fn is_id_prefix(id: &ImageId, s: &str) -> bool {
    !s.is_empty() && (id.as_str().starts_with(s) || id.hex().starts_with(s))
}

fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.contains(TMP_MARKER)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Docker's `isSingleReference`: at most one tag and all references in one repository.
fn is_single_reference(refs: &[Reference]) -> bool {
    if refs.len() <= 1 {
        return refs.len() == 1;
    }
    let mut single: Option<&Reference> = None;
    let mut names = BTreeSet::new();
    for r in refs {
        if r.digest().is_some() {
            names.insert(r.name());
        } else if single.is_none() {
            names.insert(r.name());
            single = Some(r);
        } else {
            return false;
        }
    }
    let single = single.unwrap_or(&refs[0]);
    names.len() == 1 && names.contains(&single.name())
}

type Peeked<R> = BufReader<io::Chain<io::Cursor<Vec<u8>>, R>>;

/// A decompressing reader over plain, gzip or zstd input (`Send` when the input is).
pub(crate) enum Decoder<R: Read> {
    Plain(Peeked<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Peeked<R>>>),
    Zstd(Box<ruzstd::decoding::StreamingDecoder<Peeked<R>, ruzstd::decoding::FrameDecoder>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Detects the compression of a stream from its magic bytes and returns the decompressed stream with
/// the media type of the compressed form.
pub(crate) fn decompress<R: Read>(mut input: R) -> Result<(Decoder<R>, &'static str)> {
    // Peek at the magic bytes (a slow stream may deliver them one at a time).
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read layer", e)),
        }
    }
    let compression = detect_compression(&head[..n])?;
    let buf = BufReader::with_capacity(64 * 1024, io::Cursor::new(head[..n].to_vec()).chain(input));
    Ok(match compression {
        Compression::None => (Decoder::Plain(buf), MEDIA_TYPE_LAYER_TAR),
        Compression::Gzip => (
            Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(buf))),
            MEDIA_TYPE_LAYER_GZIP,
        ),
        Compression::Zstd => (
            Decoder::Zstd(Box::new(
                ruzstd::decoding::StreamingDecoder::new(buf)
                    .map_err(|e| Error::invalid(format!("invalid zstd stream: {e}")))?,
            )),
            MEDIA_TYPE_LAYER_ZSTD,
        ),
    })
}

enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect_compression(head: &[u8]) -> Result<Compression> {
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(Error::invalid("unsupported layer compression: xz"));
    } else if head.starts_with(b"BZh") {
        return Err(Error::invalid("unsupported layer compression: bzip2"));
    } else {
        Compression::None
    })
}

impl ImageStore {
    /// Opens (creating if needed) the store under `<data_root>/image`, repairing what a crash left behind.
    pub fn open(data_root: &Path) -> Result<ImageStore> {
        let root = data_root.join("image");
        let created_new = !root.join("images.json").exists();
        for d in ["blobs/sha256", "layers", "containers", "empty", "leases"] {
            mkdir_all(&root.join(d))?;
        }
        let lock_path = root.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx("open", &lock_path)?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                Error::Conflict(format!(
                    "image store {} is in use by another process ({e})",
                    root.display()
                ))
            })?;
        let mut store = ImageStore {
            root,
            state: Mutex::new(State::default()),
            created_new,
            repairs: Vec::new(),
            next_lease: AtomicU64::new(0),
            _lock: lock,
        };
        let (state, repairs) = store.load_and_repair()?;
        store.state = Mutex::new(state);
        store.repairs = repairs;
        Ok(store)
    }

    /// True if `open` created a new, empty store (the daemon then calls [`ImageStore::ensure_hello_world`]).
    pub fn was_created(&self) -> bool {
        self.created_new
    }

    /// What `open` repaired (for the daemon's log).
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// The store's root directory (`<data-root>/image`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn layer_dir(&self, c: &ChainId) -> PathBuf {
        self.root.join("layers").join(c.hex())
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn images_json(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn repositories_json(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    fn distribution_json(&self) -> PathBuf {
        self.root.join("distribution.json")
    }

    fn leases_dir(&self) -> PathBuf {
        self.root.join("leases")
    }

    /// Takes a lease on `chains` for `image`, recorded in `leases/` too.
    fn take_lease(&self, st: &State, image: &ImageId, chains: &[ChainId]) -> Result<LeaseGuard> {
        let key = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let file = self
            .leases_dir()
            .join(format!("{}-{nanos}-{key}.json", image.hex()));
        let body = LeaseFile {
            image: image.clone(),
            chains: chains.to_vec(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        // No fsync: a lease lost with the page cache only costs a re-download.
        fs::write(&file, bytes).ctx("write", &file)?;
        lock_leases(&st.leases).insert(
            key,
            Lease {
                image: image.clone(),
                chains: chains.to_vec(),
                file,
            },
        );
        Ok(LeaseGuard {
            leases: st.leases.clone(),
            key,
        })
    }

    /// Reads the leases a crash left: kept unless expired, unreadable or their image is complete.
    fn recover_leases(&self, st: &State, repairs: &mut Vec<String>) -> Result<()> {
        let dir = self.leases_dir();
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let path = e.path();
            let age = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            let lease = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<LeaseFile>(&b).ok())
                .filter(|l| age < LEASE_EXPIRY && !st.images.contains_key(&l.image));
            match lease {
                Some(l) => {
                    let kept = l.chains.iter().filter(|c| st.layers.contains_key(*c));
                    repairs.push(format!(
                        "kept {} verified layers of interrupted pull of {} for a re-pull",
                        kept.count(),
                        l.image
                    ));
                    let key = self.next_lease.fetch_add(1, Ordering::Relaxed);
                    lock_leases(&st.leases).insert(
                        key,
                        Lease {
                            image: l.image,
                            chains: l.chains,
                            file: path,
                        },
                    );
                }
                None => {
                    remove_any(&path)?;
                    repairs.push(format!(
                        "released lease {}",
                        e.file_name().to_string_lossy()
                    ));
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- open / repair

    fn load_and_repair(&self) -> Result<(State, Vec<String>)> {
        let mut repairs = Vec::new();
        let mut st = State::default();
        // Temp files and half-written dirs.
        for sub in [".", "blobs/sha256", "layers", "containers"] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
                let e = e.ctx("read directory", &dir)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(TMP_MARKER) {
                    remove_any(&e.path())?;
                    repairs.push(format!("removed temporary {sub}/{name}"));
                }
            }
        }
        // Layers.
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let meta_path = e.path().join("layer.json");
            let meta: Option<LayerMeta> = fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|m: &LayerMeta| m.chain_id.hex() == name && e.path().join("diff").is_dir());
            match meta {
                Some(m) => {
                    st.layers.insert(m.chain_id.clone(), m);
                }
                None => {
                    remove_any(&e.path())?;
                    repairs.push(format!("removed incomplete layer {name}"));
                }
            }
        }
        // Images.
        let images_file: ImagesFile = match fs::read(self.images_json()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| json_err("image index", &self.images_json(), e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ImagesFile::default(),
            Err(e) => return Err(Error::io_path("read", &self.images_json(), e)),
        };
        let mut dirty_images = false;
        for (id, record) in images_file.images {
            let config = fs::read(self.blob_path(&id))
                .ok()
                .filter(|b| Digest::of_bytes(b) == id)
                .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok());
            let Some(config) = config else {
                repairs.push(format!(
                    "dropped image {id}: config blob missing or corrupt"
                ));
                dirty_images = true;
                continue;
            };
            let chains = chain_ids(&config.rootfs.diff_ids);
            if let Some(missing) = chains.iter().find(|c| !st.layers.contains_key(*c)) {
                repairs.push(format!("dropped image {id}: layer {missing} missing"));
                dirty_images = true;
                continue;
            }
            st.images.insert(
                id,
                Image {
                    record,
                    config,
                    chain_ids: chains,
                },
            );
        }
        // References.
        let repos: RepositoriesFile = match fs::read(self.repositories_json()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| json_err("repositories", &self.repositories_json(), e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => RepositoriesFile::default(),
            Err(e) => return Err(Error::io_path("read", &self.repositories_json(), e)),
        };
        let mut dirty_refs = false;
        for (r, id) in repos.repositories.into_values().flatten() {
            match Reference::parse(&r) {
                Ok(parsed) if st.images.contains_key(&id) => {
                    st.refs.insert(parsed, id);
                }
                _ => {
                    repairs.push(format!("dropped reference {r}: image {id} missing"));
                    dirty_refs = true;
                }
            }
        }
        // References a crash kept out of repositories.json (written with their new image first).
        for (id, img) in st.images.iter_mut() {
            for r in std::mem::take(&mut img.record.pending_refs) {
                dirty_images = true;
                let Ok(parsed) = Reference::parse(&r) else {
                    continue;
                };
                if st.refs.get(&parsed) != Some(id) {
                    st.refs.insert(parsed, id.clone());
                    img.record.last_tag_time = Some(now_rfc3339());
                    dirty_refs = true;
                    repairs.push(format!(
                        "tagged image {id} {r} (interrupted before its tag)"
                    ));
                }
            }
        }
        // Distribution metadata (a cache: a corrupt file is dropped).
        match fs::read(self.distribution_json()) {
            Ok(b) => match serde_json::from_slice::<DistributionFile>(&b) {
                Ok(f) => st.dist = f.layers,
                Err(e) => {
                    remove_any(&self.distribution_json())?;
                    repairs.push(format!("dropped corrupt distribution.json: {e}"));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("read", &self.distribution_json(), e)),
        }
        // Container layers.
        let dir = self.root.join("containers");
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rec: Option<ContainerLayer> = fs::read(e.path().join("layer.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match rec {
                Some(rec) if rec.chain_ids.iter().all(|c| st.layers.contains_key(c)) => {
                    st.containers.insert(name, rec);
                }
                _ => {
                    remove_any(&e.path())?;
                    repairs.push(format!("removed broken container layer {name}"));
                }
            }
        }
        // References first: pending ones leave images.json only once repositories.json has them.
        if dirty_refs {
            self.save_refs(&st)?;
        }
        if dirty_images {
            self.save_images(&st)?;
        }
        self.recover_leases(&st, &mut repairs)?;
        // Unreferenced layers and blobs.
        let orphans: Vec<ChainId> = st
            .layers
            .keys()
            .filter(|c| !st.layer_referenced(c))
            .cloned()
            .collect();
        for c in orphans {
            self.delete_layer(&mut st, &c)?;
            repairs.push(format!("removed unreferenced layer {c}"));
        }
        let mut wanted: BTreeSet<String> = st.images.keys().map(|i| i.hex().to_string()).collect();
        wanted.extend(
            st.images
                .values()
                .flat_map(|i| i.record.manifests.iter())
                .map(|m| m.hex().to_string()),
        );
        wanted.extend(
            st.layers
                .values()
                .filter_map(|l| l.blob.as_ref())
                .map(|b| b.digest.hex().to_string()),
        );
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !wanted.contains(&name) {
                remove_any(&e.path())?;
                repairs.push(format!("removed unreferenced blob {name}"));
            }
        }
        Ok((st, repairs))
    }

    fn save_images(&self, st: &State) -> Result<()> {
        let file = ImagesFile {
            images: st
                .images
                .iter()
                .map(|(k, v)| (k.clone(), v.record.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&self.images_json(), &bytes)
    }

    fn save_refs(&self, st: &State) -> Result<()> {
        #[cfg(test)]
        if tests::CRASH_BEFORE_SAVE_REFS.get() {
            return Err(Error::internal("crash before repositories.json (test)"));
        }
        let mut file = RepositoriesFile::default();
        for (r, id) in &st.refs {
            file.repositories
                .entry(r.familiar_name())
                .or_default()
                .insert(r.familiar_string(), id.clone());
        }
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&self.repositories_json(), &bytes)
    }

    // ---------------------------------------------------------------- blobs

    /// Stores `bytes` as a blob (idempotent) and returns its digest.
    fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of_bytes(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    /// Reads a blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("blob {digest} not found")));
            }
            Err(e) => return Err(Error::io_path("read", &path, e)),
        };
        if Digest::of_bytes(&bytes) != *digest {
            return Err(Error::internal(format!("blob {digest} is corrupt")));
        }
        Ok(bytes)
    }

    // ---------------------------------------------------------------- layers

    /// Unpacks one layer stream (plain, gzip or zstd) into a temporary dir, storing the raw blob beside.
    fn stage_layer(&self, input: impl Read, parent: Option<&ChainId>) -> Result<StagedLayer> {
        let tmp_dir = temp_sibling(&self.root.join("layers").join("new"));
        let blob_tmp = temp_sibling(&self.root.join("blobs/sha256").join("new"));
        let res = self.stage_layer_into(input, parent, &tmp_dir, &blob_tmp);
        if res.is_err() {
            let _ = remove_any(&tmp_dir);
            let _ = remove_any(&blob_tmp);
        }
        res
    }

    fn stage_layer_into(
        &self,
        input: impl Read,
        parent: Option<&ChainId>,
        tmp_dir: &Path,
        blob_tmp: &Path,
    ) -> Result<StagedLayer> {
        let diff = tmp_dir.join("diff");
        mkdir_all(&diff)?;
        let blob_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(blob_tmp)
            .ctx("create", blob_tmp)?;
        let mut tee = TeeReader::new(input, BufWriter::new(blob_file));
        let (diff_id, size, media_type) = {
            let (decoder, media_type) = decompress(&mut tee)?;
            let mut hashing = HashingReader::new(decoder);
            let size = unpack_layer(&mut hashing, &diff)?;
            let (diff_id, _) = hashing
                .finish()
                .map_err(|e| Error::invalid(format!("invalid layer stream: {e}")))?;
            (diff_id, size, media_type)
        };
        let (writer, blob_digest, blob_size) =
            tee.finish().map_err(|e| Error::io("read layer", e))?;
        let file = writer
            .into_inner()
            .map_err(|e| Error::io("write layer blob", e.into_error()))?;
        file.sync_all().ctx("fsync", blob_tmp)?;
        let chain_id = match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
        };
        let meta = LayerMeta {
            chain_id,
            diff_id,
            parent: parent.cloned(),
            size,
            blob: Some(BlobDescriptor {
                media_type: media_type.to_string(),
                digest: blob_digest,
                size: blob_size,
            }),
        };
        let meta_bytes =
            serde_json::to_vec_pretty(&meta).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&tmp_dir.join("layer.json"), &meta_bytes)?;
        // Make the unpacked files durable before the layer is renamed into place (one syncfs, not one
        // fsync per file).
        let fd = fs::File::open(tmp_dir).ctx("open", tmp_dir)?;
        nix::unistd::syncfs(&fd).map_err(|e| Error::io_path("syncfs", tmp_dir, e.into()))?;
        Ok(StagedLayer {
            tmp_dir: tmp_dir.to_path_buf(),
            meta,
            blob_tmp: blob_tmp.to_path_buf(),
        })
    }

    /// Moves a staged layer into place (or drops it if the same chain already exists). Call with the lock.
    fn commit_layer(&self, st: &mut State, staged: StagedLayer) -> Result<()> {
        let chain = staged.meta.chain_id.clone();
        if let Some(blob) = &staged.meta.blob {
            let path = self.blob_path(&blob.digest);
            if path.exists() {
                remove_any(&staged.blob_tmp)?;
            } else {
                fs::rename(&staged.blob_tmp, &path).ctx("rename into place", &path)?;
                sync_dir(&self.root.join("blobs/sha256"))?;
            }
        }
        if st.layers.contains_key(&chain) {
            remove_any(&staged.tmp_dir)?;
            return Ok(());
        }
        let dest = self.layer_dir(&chain);
        remove_any(&dest)?;
        fs::rename(&staged.tmp_dir, &dest).ctx("rename into place", &dest)?;
        sync_dir(&self.root.join("layers"))?;
        st.layers.insert(chain, staged.meta);
        Ok(())
    }

    /// Deletes a layer dir and its blob (if no other layer shares it). Call with the lock.
    fn delete_layer(&self, st: &mut State, chain: &ChainId) -> Result<()> {
        let Some(meta) = st.layers.remove(chain) else {
            return Ok(());
        };
        let dir = self.layer_dir(chain);
        // Rename first: a crash mid-delete leaves a `.tmp-` dir that `open` removes.
        let doomed = temp_sibling(&dir);
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_any(&doomed)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("rename", &dir, e)),
        }
        if let Some(blob) = meta.blob {
            let shared = st
                .layers
                .values()
                .any(|l| l.blob.as_ref().is_some_and(|b| b.digest == blob.digest));
            if !shared && !st.images.contains_key(&blob.digest) {
                remove_any(&self.blob_path(&blob.digest))?;
            }
        }
        Ok(())
    }

    /// Deletes the unreferenced layers of `chains` (top first); returns their chain IDs.
    fn gc_layers(&self, st: &mut State, chains: &[ChainId]) -> Result<Vec<ChainId>> {
        let mut removed = Vec::new();
        for c in chains.iter().rev() {
            if st.layers.contains_key(c) && !st.layer_referenced(c) {
                self.delete_layer(st, c)?;
                removed.push(c.clone());
            }
        }
        Ok(removed)
    }

    // ---------------------------------------------------------------- images

    /// Stores the config, records the image, and points `reference` at it. Call with the lock.
    fn commit_image(
        &self,
        st: &mut State,
        config: ImageConfig,
        parent: Option<ImageId>,
        reference: Option<&Reference>,
    ) -> Result<ImageId> {
        let bytes = serde_json::to_vec(&config).map_err(|e| Error::internal(e.to_string()))?;
        let refs: Vec<Reference> = reference.into_iter().cloned().collect();
        self.commit_image_bytes(st, &bytes, config, parent, &[], &refs)
    }

    /// Like [`ImageStore::commit_image`] with the config bytes as given (the ID is their digest), and
    /// `manifests` (blobs already stored) recorded on the image. A new image is written with its
    /// `references` as pending ones, so a crash before `repositories.json` has them cannot leave it
    /// dangling (`open` sets them).
    fn commit_image_bytes(
        &self,
        st: &mut State,
        bytes: &[u8],
        config: ImageConfig,
        parent: Option<ImageId>,
        manifests: &[Digest],
        references: &[Reference],
    ) -> Result<ImageId> {
        let chains = chain_ids(&config.rootfs.diff_ids);
        if let Some(missing) = chains.iter().find(|c| !st.layers.contains_key(*c)) {
            return Err(Error::internal(format!(
                "layer {missing} is not in the store"
            )));
        }
        let id = self.put_blob(bytes)?;
        if st.images.contains_key(&id) {
            self.record_manifests(st, &id, manifests)?;
        } else {
            st.images.insert(
                id.clone(),
                Image {
                    record: ImageRecord {
                        parent,
                        last_tag_time: None,
                        manifests: manifests.to_vec(),
                        pending_refs: references.iter().map(Reference::familiar_string).collect(),
                    },
                    config,
                    chain_ids: chains,
                },
            );
            self.save_images(st)?;
        }
        self.set_refs(st, references, &id)?;
        Ok(id)
    }

    /// Adds an image from its config JSON (stored byte for byte: the ID is its digest) and layer streams
    /// (plain, gzip or zstd tars), as `docker load` and `pull` need. `open_layer(i)` is called only for
    /// the layers (index into `rootfs.diff_ids`) not already in the store; each must unpack to the
    /// config's diff ID. `references` may be tags (`busybox:1`) or digests (`busybox@sha256:...`).
    /// Errors: InvalidArgument (config, references, a layer that does not match), Internal.
    pub fn add_image(
        &self,
        config_json: &[u8],
        open_layer: &mut dyn FnMut(usize) -> Result<Box<dyn Read>>,
        references: &[&str],
    ) -> Result<ImageSummary> {
        let pending = self.begin_image(config_json, references)?;
        let unpacked = pending
            .missing_layers()
            .to_vec()
            .into_iter()
            .try_for_each(|i| {
                self.unpack_pending_layer(&pending, i, open_layer(i)?, None)
                    .map(drop)
            });
        self.settle_image(pending, unpacked, &[])
    }

    /// Adds an image whose layers are all in the store (a build step that changed only metadata),
    /// recording `parent` so that it is an intermediate image (hidden by `images`, named by
    /// `history`) rather than a dangling one. Errors: InvalidArgument (config), Internal (a layer
    /// is missing).
    pub fn add_config_image(
        &self,
        parent: Option<&ImageId>,
        config_json: &[u8],
    ) -> Result<ImageId> {
        let config: ImageConfig = serde_json::from_slice(config_json)
            .map_err(|e| Error::invalid(format!("invalid image config: {e}")))?;
        let mut st = self.lock();
        let parent = parent.filter(|p| st.images.contains_key(*p)).cloned();
        self.commit_image_bytes(&mut st, config_json, config, parent, &[], &[])
    }

    /// Starts adding an image from its config JSON (the ID is its digest) for a pull: the caller unpacks
    /// each of [`PendingImage::missing_layers`] with [`ImageStore::unpack_pending_layer`] (from several
    /// threads at once if it likes), then calls [`ImageStore::finish_image`]. Nothing is visible before
    /// `finish_image`; dropping the `PendingImage` (or a crash) discards the unpacked layers.
    /// Errors: InvalidArgument (config, references).
    pub fn begin_image(&self, config_json: &[u8], references: &[&str]) -> Result<PendingImage> {
        let config: ImageConfig = serde_json::from_slice(config_json)
            .map_err(|e| Error::invalid(format!("invalid image config: {e}")))?;
        let refs = references
            .iter()
            .map(|r| {
                let parsed = Reference::parse(r)?;
                if parsed.digest().is_some() && parsed.tag().is_some() {
                    return Err(Error::invalid(format!(
                        "invalid reference {r}: both a tag and a digest"
                    )));
                }
                if parsed.digest().is_none() {
                    return self.parse_tag_target(r);
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>>>()?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let id = Digest::of_bytes(config_json);
        let st = self.lock();
        let missing: Vec<usize> = (0..chains.len())
            .filter(|i| !st.layers.contains_key(&chains[*i]))
            .collect();
        // Held from here on: a concurrent `rmi` must not collect a layer this image is about to use.
        let lease = self.take_lease(&st, &id, &chains)?;
        drop(st);
        Ok(PendingImage {
            id,
            config_json: config_json.to_vec(),
            config,
            chains,
            refs,
            missing,
            _lease: lease,
        })
    }

    /// Unpacks layer `index` of a pending image from `input` (plain, gzip or zstd, detected), storing the
    /// blob as received. Checks the diff ID against the config and, if given, the blob's digest.
    /// Returns the stored blob's descriptor. Errors: InvalidArgument (mismatch, bad tar), Internal.
    pub fn unpack_pending_layer(
        &self,
        pending: &PendingImage,
        index: usize,
        input: impl Read,
        expected_blob: Option<&Digest>,
    ) -> Result<BlobDescriptor> {
        let diff_ids = &pending.config.rootfs.diff_ids;
        if index >= diff_ids.len() {
            return Err(Error::invalid(format!(
                "layer {index}: the image has only {} layers",
                diff_ids.len()
            )));
        }
        let parent = index.checked_sub(1).map(|p| &pending.chains[p]);
        let l = self.stage_layer(input, parent)?;
        let discard = |l: &StagedLayer| {
            let _ = remove_any(&l.tmp_dir);
            let _ = remove_any(&l.blob_tmp);
        };
        if l.meta.diff_id != diff_ids[index] {
            discard(&l);
            return Err(Error::invalid(format!(
                "layer {index}: diff ID mismatch: the config says {}, the layer is {}",
                diff_ids[index], l.meta.diff_id
            )));
        }
        let blob = l.meta.blob.clone().expect("staged layers have a blob");
        if let Some(want) = expected_blob
            && *want != blob.digest
        {
            discard(&l);
            return Err(Error::invalid(format!(
                "layer {index}: digest mismatch: expected {want}, got {}",
                blob.digest
            )));
        }
        // Verified: into the store now (held by the lease), so a crash before `finish_image` does
        // not lose it.
        let mut st = self.lock();
        let (tmp, blob_tmp) = (l.tmp_dir.clone(), l.blob_tmp.clone());
        if let Err(e) = self.commit_layer(&mut st, l) {
            let _ = remove_any(&tmp);
            let _ = remove_any(&blob_tmp);
            return Err(e);
        }
        Ok(blob)
    }

    /// Commits a pending image: records the image (all its layers must be in the store by now) with
    /// its references, and keeps `manifests` (the manifest and index bytes it was pulled with) as blobs
    /// so its `RepoDigests` can be pushed or shown; releases the leases on its layers, including those
    /// of earlier attempts a crash interrupted. On error the layers nothing else uses are collected.
    /// Errors: Internal (a layer neither unpacked nor present).
    pub fn finish_image(&self, pending: PendingImage, manifests: &[&[u8]]) -> Result<ImageSummary> {
        let mut st = self.lock();
        let res = (|| {
            // Manifests are stored before the image that names them, and the image (with its
            // references pending) before the references (crash order).
            let manifests = self.put_blobs(manifests)?;
            self.commit_image_bytes(
                &mut st,
                &pending.config_json,
                pending.config.clone(),
                None,
                &manifests,
                &pending.refs,
            )
        })();
        let chains = pending.chains.clone();
        let image = pending.id.clone();
        drop(pending);
        match res {
            Ok(id) => {
                lock_leases(&st.leases).retain(|_, l| {
                    let done = l.image == image;
                    if done {
                        let _ = fs::remove_file(&l.file);
                    }
                    !done
                });
                Ok(self.summary(&st, &id))
            }
            Err(e) => {
                self.gc_layers(&mut st, &chains)?;
                Err(e)
            }
        }
    }

    /// Gives up a pending image: releases its lease and deletes the layers it added that nothing else
    /// uses.
    pub fn abandon_image(&self, pending: PendingImage) -> Result<()> {
        let mut st = self.lock();
        let chains = pending.chains.clone();
        drop(pending);
        self.gc_layers(&mut st, &chains)?;
        Ok(())
    }

    /// [`ImageStore::finish_image`] if `unpacked` is `Ok`, else [`ImageStore::abandon_image`] and the
    /// error.
    pub fn settle_image(
        &self,
        pending: PendingImage,
        unpacked: Result<()>,
        manifests: &[&[u8]],
    ) -> Result<ImageSummary> {
        match unpacked {
            Ok(()) => self.finish_image(pending, manifests),
            Err(e) => {
                // The first error is the one to report; what a failed collection leaves, `open` takes.
                let _ = self.abandon_image(pending);
                Err(e)
            }
        }
    }

    /// Stores blobs (idempotent) and returns their digests.
    fn put_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<Digest>> {
        blobs.iter().map(|b| self.put_blob(b)).collect()
    }

    /// Records stored manifest blobs on an image. Call with the lock.
    fn record_manifests(&self, st: &mut State, id: &ImageId, manifests: &[Digest]) -> Result<()> {
        let Some(img) = st.images.get_mut(id) else {
            return Ok(());
        };
        let before = img.record.manifests.len();
        for d in manifests {
            if !img.record.manifests.contains(d) {
                img.record.manifests.push(d.clone());
            }
        }
        if img.record.manifests.len() != before {
            self.save_images(st)?;
        }
        Ok(())
    }

    /// Records a digest reference (`repo@sha256:...`, e.g. after a push) on an image, keeping the
    /// manifest bytes (whose digest it must be). Errors: NotFound, InvalidArgument.
    pub fn add_repo_digest(&self, id: &ImageId, reference: &str, manifest: &[u8]) -> Result<()> {
        let r = Reference::parse(reference)?;
        let Some(d) = r.digest() else {
            return Err(Error::invalid(format!(
                "{reference} is not a digest reference"
            )));
        };
        if *d != Digest::of_bytes(manifest) {
            return Err(Error::invalid(format!(
                "manifest does not match the digest of {reference}"
            )));
        }
        let r = r.with_digest(d.clone());
        let mut st = self.lock();
        if !st.images.contains_key(id) {
            return Err(Error::NoSuchImage(id.to_string()));
        }
        let manifests = self.put_blobs(&[manifest])?;
        self.record_manifests(&mut st, id, &manifests)?;
        st.refs.insert(r, id.clone());
        self.save_refs(&st)
    }

    /// The manifests (and indexes) recorded for an image, as digests of blobs readable with
    /// [`ImageStore::read_blob`]. Errors: NotFound.
    pub fn manifests(&self, id: &ImageId) -> Result<Vec<Digest>> {
        let st = self.lock();
        st.images
            .get(id)
            .map(|i| i.record.manifests.clone())
            .ok_or_else(|| Error::NoSuchImage(id.to_string()))
    }

    /// Opens a stored blob for streaming (no digest check) and returns it with its size.
    /// Errors: NotFound.
    pub fn open_blob(&self, digest: &Digest) -> Result<(fs::File, u64)> {
        let path = self.blob_path(digest);
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("blob {digest} not found")));
            }
            Err(e) => return Err(Error::io_path("open", &path, e)),
        };
        let len = f.metadata().ctx("stat", &path)?.len();
        Ok((f, len))
    }

    /// The uncompressed tar of a stored layer blob (decompressing gzip or zstd on the fly).
    /// Errors: NotFound, InvalidArgument (unsupported compression).
    pub fn open_layer_tar(&self, blob: &Digest) -> Result<Box<dyn Read + Send>> {
        let (f, _) = self.open_blob(blob)?;
        let (r, _) = decompress(f)?;
        Ok(Box::new(r))
    }

    /// Blobs known to hold the layer `diff_id` and where they were seen (for push: skip or mount).
    pub fn layer_sources(&self, diff_id: &DiffId) -> Vec<LayerSource> {
        self.lock().dist.get(diff_id).cloned().unwrap_or_default()
    }

    /// Remembers that `repository` (`registry/path`) holds `blob`, a form of layer `diff_id`.
    pub fn add_layer_source(
        &self,
        diff_id: &DiffId,
        blob: &BlobDescriptor,
        repository: &str,
    ) -> Result<()> {
        let mut st = self.lock();
        let list = st.dist.entry(diff_id.clone()).or_default();
        let entry = match list.iter_mut().position(|s| s.blob.digest == blob.digest) {
            Some(i) => &mut list[i],
            None => {
                list.push(LayerSource {
                    blob: blob.clone(),
                    repositories: Vec::new(),
                });
                list.last_mut().expect("just pushed")
            }
        };
        if entry.repositories.iter().any(|r| r == repository) {
            return Ok(());
        }
        entry.repositories.push(repository.to_string());
        let file = DistributionFile {
            layers: st.dist.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&self.distribution_json(), &bytes)
    }

    /// True if the layer with this chain ID is unpacked in the store (a pull can skip it).
    pub fn has_layer(&self, chain_id: &ChainId) -> bool {
        self.lock().layers.contains_key(chain_id)
    }

    fn set_ref(&self, st: &mut State, r: Reference, id: &ImageId) -> Result<()> {
        self.set_refs(st, &[r], id)
    }

    /// Points `refs` at `id` (one write of `repositories.json`, then of `images.json`, which drops the
    /// image's pending references). Call with the lock.
    fn set_refs(&self, st: &mut State, refs: &[Reference], id: &ImageId) -> Result<()> {
        // A tag that already names this image is not written again (as dockerd's reference
        // store); the image's LastTagTime still moves, as in dockerd.
        let mut changed = false;
        for r in refs {
            changed |= st.refs.insert(r.clone(), id.clone()).as_ref() != Some(id);
        }
        // Memory holds the references now, so the pending ones go even if a write below fails
        // (then left on disk, they must not override a later tag after a restart).
        let mut dirty = !refs.is_empty();
        if let Some(img) = st.images.get_mut(id) {
            dirty |= !img.record.pending_refs.is_empty();
            img.record.pending_refs.clear();
            if !refs.is_empty() {
                img.record.last_tag_time = Some(now_rfc3339());
            }
        }
        if changed {
            self.save_refs(st)?;
        }
        if dirty {
            self.save_images(st)?;
        }
        Ok(())
    }

    /// Imports a root filesystem tar (plain, gzip or zstd) as a one-layer image, like `docker import`,
    /// optionally tagged `reference`. Errors: InvalidArgument (bad reference, change or tar), Internal.
    pub fn import(
        &self,
        tar: impl Read,
        reference: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<ImageSummary> {
        let reference = match reference {
            Some(r) if !r.is_empty() => Some(self.parse_tag_target(r)?),
            _ => None,
        };
        let mut cfg = ContainerConfig::default();
        for ch in &opts.changes {
            apply_change(&mut cfg, ch)?;
        }
        let staged = self.stage_layer(tar, None)?;
        let created = now_rfc3339();
        let msg = opts
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("Imported from {}", opts.source.as_deref().unwrap_or("-")));
        let config = ImageConfig {
            architecture: opts
                .architecture
                .clone()
                .unwrap_or_else(|| go_arch().to_string()),
            os: "linux".into(),
            config: Some(cfg),
            created: Some(created.clone()),
            comment: Some(msg.clone()),
            docker_version: Some(concat!("berth-", env!("CARGO_PKG_VERSION")).to_string()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![staged.meta.diff_id.clone()],
            },
            history: vec![History {
                created: Some(created),
                comment: Some(msg),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut st = self.lock();
        let tmp = staged.tmp_dir.clone();
        let blob_tmp = staged.blob_tmp.clone();
        let res = self
            .commit_layer(&mut st, staged)
            .and_then(|()| self.commit_image(&mut st, config, None, reference.as_ref()));
        let id = match res {
            Ok(id) => id,
            Err(e) => {
                let _ = remove_any(&tmp);
                let _ = remove_any(&blob_tmp);
                return Err(e);
            }
        };
        Ok(self.summary(&st, &id))
    }

    /// Makes sure the built-in `hello-world:latest` exists (idempotent); returns its ID.
    pub fn ensure_hello_world(&self) -> Result<ImageId> {
        let reference = Reference::parse_tagged("hello-world:latest")?;
        if let Some(id) = self.lock().refs.get(&reference) {
            return Ok(id.clone());
        }
        let staged = self.stage_layer(&crate::hello::layer_tar()[..], None)?;
        let config = crate::hello::config(staged.meta.diff_id.clone());
        let mut st = self.lock();
        if let Some(id) = st.refs.get(&reference) {
            let _ = remove_any(&staged.tmp_dir);
            let _ = remove_any(&staged.blob_tmp);
            return Ok(id.clone());
        }
        self.commit_layer(&mut st, staged)?;
        self.commit_image(&mut st, config, None, Some(&reference))
    }

    /// Parses a tag target (`docker tag`'s rules: no digest, default tag `latest`).
    fn parse_tag_target(&self, s: &str) -> Result<Reference> {
        let r = Reference::parse(s)?;
        if r.digest().is_some() {
            return Err(Error::invalid(
                "refusing to create a tag with a digest reference",
            ));
        }
        if r.familiar_name() == "sha256" {
            return Err(Error::invalid(
                "refusing to create an ambiguous tag using digest algorithm as name",
            ));
        }
        Ok(r.with_default_tag())
    }

    fn resolve_locked(&self, st: &State, s: &str) -> Result<ImageId> {
        // A full ID, with or without `sha256:`.
        if is_hex64(s) || (s.starts_with("sha256:") && Digest::parse(s).is_ok()) {
            let id = if is_hex64(s) {
                Digest::from_hex(s)?
            } else {
                Digest::parse(s)?
            };
            return if st.images.contains_key(&id) {
                Ok(id)
            } else {
                Err(Error::NoSuchImage(id.to_string()))
            };
        }
        let r = Reference::parse(s)?.with_default_tag();
        if let Some(id) = st.refs.get(&r) {
            return Ok(id.clone());
        }
        // A unique ID prefix.
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found = st.images.keys().filter(|id| id.hex().starts_with(hex));
            if let (Some(id), None) = (found.next(), found.next()) {
                return Ok(id.clone());
            }
        }
        Err(Error::NoSuchImage(r.familiar_string()))
    }

    /// Resolves a reference (`busybox`, `busybox:1`, `name@sha256:...`), a full ID or a unique ID prefix.
    /// Errors: NotFound (`No such image: busybox:latest`), InvalidArgument (bad reference).
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageId> {
        self.resolve_locked(&self.lock(), name_or_id)
    }

    /// The parsed config of an image. Errors: NotFound.
    pub fn config(&self, id: &ImageId) -> Result<ImageConfig> {
        let st = self.lock();
        st.images
            .get(id)
            .map(|i| i.config.clone())
            .ok_or_else(|| Error::NoSuchImage(id.to_string()))
    }

    /// The config bytes of an image exactly as stored (its ID is their digest). Errors: NotFound.
    pub fn config_bytes(&self, id: &ImageId) -> Result<Vec<u8>> {
        if !self.lock().images.contains_key(id) {
            return Err(Error::NoSuchImage(id.to_string()));
        }
        self.read_blob(id)
    }

    /// The layer blobs of an image, bottom first (for manifests: save, push).
    pub fn layer_blobs(&self, id: &ImageId) -> Result<Vec<BlobDescriptor>> {
        let st = self.lock();
        let img = st
            .images
            .get(id)
            .ok_or_else(|| Error::NoSuchImage(id.to_string()))?;
        img.chain_ids
            .iter()
            .map(|c| {
                st.layers
                    .get(c)
                    .and_then(|l| l.blob.clone())
                    .ok_or_else(|| Error::NotFound(format!("layer blob of {c} not stored")))
            })
            .collect()
    }

    fn tags_and_digests(st: &State, id: &ImageId) -> (Vec<String>, Vec<String>) {
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for r in st.refs_of(id) {
            if r.digest().is_some() {
                digests.push(r.familiar_string());
            } else {
                tags.push(r.familiar_string());
            }
        }
        (tags, digests)
    }

    fn summary(&self, st: &State, id: &ImageId) -> ImageSummary {
        let img = &st.images[id];
        let (repo_tags, repo_digests) = Self::tags_and_digests(st, id);
        ImageSummary {
            id: id.to_string(),
            parent_id: img
                .record
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            repo_tags,
            repo_digests,
            created: img
                .config
                .created
                .as_deref()
                .and_then(parse_rfc3339)
                .map(|t| t.0)
                .unwrap_or(0),
            size: st.image_size(img) as i64,
            shared_size: -1,
            labels: img.config.config.as_ref().and_then(|c| c.labels.clone()),
            containers: -1,
        }
    }

    /// All images, newest first; without `all`, untagged images that have children are hidden (as Docker).
    pub fn list(&self, all: bool) -> Vec<ImageSummary> {
        let st = self.lock();
        let mut out: Vec<ImageSummary> = st
            .images
            .keys()
            .filter(|id| all || !st.refs_of(id).is_empty() || !st.has_children(id))
            .map(|id| self.summary(&st, id))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// `docker image inspect`. Errors: NotFound, InvalidArgument.
    pub fn inspect(&self, name_or_id: &str) -> Result<ImageDetails> {
        let st = self.lock();
        let id = self.resolve_locked(&st, name_or_id)?;
        let img = &st.images[&id];
        let (repo_tags, repo_digests) = Self::tags_and_digests(&st, &id);
        let c = &img.config;
        let created = c
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|(s, n)| format_rfc3339_nano(s, n))
            .unwrap_or_else(|| ZERO_TIME.to_string());
        let mut data = BTreeMap::new();
        let dirs: Vec<String> = img
            .chain_ids
            .iter()
            .rev()
            .map(|ch| self.layer_dir(ch).join("diff").display().to_string())
            .collect();
        if let Some((top, rest)) = dirs.split_first() {
            data.insert("UpperDir".to_string(), top.clone());
            if !rest.is_empty() {
                data.insert("LowerDir".to_string(), rest.join(":"));
            }
        }
        Ok(ImageDetails {
            id: id.to_string(),
            repo_tags,
            repo_digests,
            parent: img
                .record
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            comment: c.comment.clone().unwrap_or_default(),
            created,
            docker_version: c.docker_version.clone().unwrap_or_default(),
            author: c.author.clone().unwrap_or_default(),
            config: c.config.clone(),
            architecture: c.architecture.clone(),
            variant: c.variant.clone(),
            os: c.os.clone(),
            size: st.image_size(img) as i64,
            graph_driver: GraphDriver {
                name: "overlay2".into(),
                data,
            },
            root_fs: RootFsDetails {
                kind: c.rootfs.kind.clone(),
                layers: c.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata: ImageMetadata {
                last_tag_time: img
                    .record
                    .last_tag_time
                    .clone()
                    .unwrap_or_else(|| ZERO_TIME.to_string()),
            },
        })
    }

    /// `docker tag source target`: points `target` (default tag `latest`) at the image `source` names.
    /// Errors: NotFound (source), InvalidArgument (target).
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let target = self.parse_tag_target(target)?;
        let mut st = self.lock();
        let id = self.resolve_locked(&st, source)?;
        self.set_ref(&mut st, target, &id)
    }

    /// `docker rmi`, following dockerd's rules: removing a reference untags it, and the image is deleted when
    /// its last reference goes; deleting by ID with references in several repositories needs `force`;
    /// `in_use` tells which container (if any) uses an image: return a running one if there is one, else any
    /// stopped one. `in_use` runs with the store's lock held and must not call the store.
    /// Errors: NotFound, Conflict, InvalidArgument.
    pub fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        prune_children: bool,
        in_use: &dyn Fn(&ImageId) -> Option<ImageUser>,
    ) -> Result<Vec<DeleteItem>> {
        let mut st = self.lock();
        let id = self.resolve_locked(&st, name_or_id)?;
        let mut records = Vec::new();
        let mut repo_refs = st.refs_of(&id);
        let mut removed_repository_ref = false;
        if !is_id_prefix(&id, name_or_id) {
            if !force
                && is_single_reference(&repo_refs)
                && let Some(user) = in_use(&id)
            {
                return Err(Error::Conflict(format!(
                    "conflict: unable to remove repository reference {name_or_id:?} (must force) - container {} is using its referenced image {}",
                    truncate_id(&user.container_id),
                    id.short()
                )));
            }
            let parsed = Reference::parse(name_or_id)?.with_default_tag();
            if st.refs.remove(&parsed).is_none() {
                return Err(Error::NoSuchImage(parsed.familiar_string()));
            }
            records.push(DeleteItem::Untagged(parsed.familiar_string()));
            repo_refs = st.refs_of(&id);
            // A tag removed and only digest references of that repository left: remove those too.
            if parsed.digest().is_none()
                && !repo_refs
                    .iter()
                    .any(|r| r.digest().is_none() && r.name() == parsed.name())
            {
                let mut remaining = Vec::new();
                for r in repo_refs {
                    if r.digest().is_some() && r.name() == parsed.name() {
                        st.refs.remove(&r);
                        records.push(DeleteItem::Untagged(r.familiar_string()));
                    } else {
                        remaining.push(r);
                    }
                }
                repo_refs = remaining;
            }
            self.save_refs(&st)?;
            if !repo_refs.is_empty() {
                return Ok(records);
            }
            removed_repository_ref = true;
        } else if is_single_reference(&repo_refs) {
            let mut mask = CONFLICT_HARD;
            if !force {
                mask |= CONFLICT_SOFT & !CONFLICT_ACTIVE_REFERENCE;
            }
            if let Some(c) = check_conflict(&st, &id, mask, in_use) {
                return Err(c.into_error(&id));
            }
            for r in repo_refs {
                st.refs.remove(&r);
                records.push(DeleteItem::Untagged(r.familiar_string()));
            }
            self.save_refs(&st)?;
        }
        self.delete_helper(
            &mut st,
            &id,
            &mut records,
            force,
            prune_children,
            removed_repository_ref,
            in_use,
        )?;
        Ok(records)
    }

    #[allow(clippy::too_many_arguments)]
    fn delete_helper(
        &self,
        st: &mut State,
        id: &ImageId,
        records: &mut Vec<DeleteItem>,
        force: bool,
        prune: bool,
        quiet: bool,
        in_use: &dyn Fn(&ImageId) -> Option<ImageUser>,
    ) -> Result<()> {
        let mut mask = CONFLICT_HARD;
        if !force {
            mask |= CONFLICT_SOFT;
        }
        if let Some(c) = check_conflict(st, id, mask, in_use) {
            let dangling = st.refs_of(id).is_empty() && !st.has_children(id);
            if quiet && (!dangling || c.used) {
                return Ok(());
            }
            return Err(c.into_error(id));
        }
        let Some(img) = st.images.get(id) else {
            return Ok(());
        };
        let parent = img.record.parent.clone();
        let chains = img.chain_ids.clone();
        let refs = st.refs_of(id);
        if !refs.is_empty() {
            for r in refs {
                st.refs.remove(&r);
                records.push(DeleteItem::Untagged(r.familiar_string()));
            }
            self.save_refs(st)?;
        }
        let manifests = st
            .images
            .remove(id)
            .map(|i| i.record.manifests)
            .unwrap_or_default();
        self.save_images(st)?;
        remove_any(&self.blob_path(id))?;
        for m in manifests {
            let shared = st.images.values().any(|i| i.record.manifests.contains(&m))
                || st.images.contains_key(&m);
            if !shared {
                remove_any(&self.blob_path(&m))?;
            }
        }
        records.push(DeleteItem::Deleted(id.to_string()));
        for c in self.gc_layers(st, &chains)? {
            records.push(DeleteItem::Deleted(c.to_string()));
        }
        match parent {
            Some(p) if prune && st.images.contains_key(&p) => {
                self.delete_helper(st, &p, records, false, true, true, in_use)
            }
            _ => Ok(()),
        }
    }

    /// `docker history`: one item per config history entry, newest first; the newest carry the IDs
    /// and tags of the image and its local parents, the others `<missing>`.
    /// Errors: NotFound, InvalidArgument.
    pub fn history(&self, name_or_id: &str) -> Result<Vec<HistoryItem>> {
        let st = self.lock();
        let id = self.resolve_locked(&st, name_or_id)?;
        let img = &st.images[&id];
        let mut sizes = img
            .chain_ids
            .iter()
            .map(|c| st.layers.get(c).map(|l| l.size).unwrap_or(0));
        let mut items: Vec<HistoryItem> = img
            .config
            .history
            .iter()
            .map(|h| HistoryItem {
                id: "<missing>".into(),
                created: h
                    .created
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .map(|t| t.0)
                    .unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size: if h.empty_layer {
                    0
                } else {
                    sizes.next().unwrap_or(0) as i64
                },
                comment: h.comment.clone().unwrap_or_default(),
            })
            .collect();
        items.reverse();
        // As dockerd: the newest entries are named by the image and its local parent chain (one
        // build step, one history entry), the rest stay `<missing>`.
        let mut cur = Some(id.clone());
        for item in items.iter_mut() {
            let Some(i) = cur.take() else { break };
            let Some(img) = st.images.get(&i) else { break };
            item.id = i.to_string();
            item.tags = Self::tags_and_digests(&st, &i).0;
            cur = img.record.parent.clone();
        }
        Ok(items)
    }

    /// `docker image prune`: deletes dangling images (no tags), or with `all` every image no container
    /// uses, skipping images with children. Returns what was deleted and the bytes of layers freed.
    /// `in_use` runs with the store's lock held and must not call the store.
    pub fn prune(
        &self,
        all: bool,
        in_use: &dyn Fn(&ImageId) -> Option<ImageUser>,
    ) -> Result<(Vec<DeleteItem>, u64)> {
        let mut st = self.lock();
        let candidates: Vec<ImageId> = st
            .images
            .keys()
            .filter(|id| all || st.refs_of(id).is_empty())
            .cloned()
            .collect();
        let mut records = Vec::new();
        let mut reclaimed = 0;
        for id in candidates {
            if !st.images.contains_key(&id) || st.has_children(&id) || in_use(&id).is_some() {
                continue;
            }
            let sizes: BTreeMap<ChainId, u64> =
                st.layers.iter().map(|(c, l)| (c.clone(), l.size)).collect();
            let before = records.len();
            self.delete_helper(&mut st, &id, &mut records, true, false, false, in_use)?;
            for r in &records[before..] {
                if let DeleteItem::Deleted(d) = r
                    && let Ok(d) = Digest::parse(d)
                {
                    reclaimed += sizes.get(&d).copied().unwrap_or(0);
                }
            }
        }
        Ok((records, reclaimed))
    }

    /// `docker commit`: makes a new image from a container's writable layer on top of its image, with the
    /// image as parent, optionally tagged `reference`. The container should be paused or stopped.
    /// Errors: NotFound (container layer or its image), InvalidArgument (reference, changes), Internal.
    pub fn commit(
        &self,
        container_id: &str,
        reference: Option<&str>,
        opts: &CommitOptions,
    ) -> Result<ImageSummary> {
        let reference = match reference {
            Some(r) if !r.is_empty() => Some(self.parse_tag_target(r)?),
            _ => None,
        };
        let (image_id, base, top_chain) = {
            let st = self.lock();
            let rec = st
                .containers
                .get(container_id)
                .ok_or_else(|| Error::NotFound(format!("No such container: {container_id}")))?;
            let img = st
                .images
                .get(&rec.image_id)
                .ok_or_else(|| Error::NoSuchImage(rec.image_id.to_string()))?;
            (
                rec.image_id.clone(),
                img.config.clone(),
                rec.chain_ids.last().cloned(),
            )
        };
        let mut cfg = opts
            .config
            .clone()
            .or_else(|| base.config.clone())
            .unwrap_or_default();
        for ch in &opts.changes {
            apply_change(&mut cfg, ch)?;
        }
        // The diff as a tar in a temp file, then staged like any layer.
        let upper = self.container_dir(container_id).join("upper");
        let tar_tmp = temp_sibling(&self.root.join("commit"));
        let staged = (|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tar_tmp)
                .ctx("create", &tar_tmp)?;
            let mut f = crate::diff::write_diff_tar(&upper, BufWriter::new(f))?
                .into_inner()
                .map_err(|e| Error::io("write layer tar", e.into_error()))?;
            io::Seek::seek(&mut f, io::SeekFrom::Start(0)).ctx("seek", &tar_tmp)?;
            self.stage_layer(f, top_chain.as_ref())
        })();
        let _ = remove_any(&tar_tmp);
        let staged = staged?;
        let created = now_rfc3339();
        let mut config = base;
        config.extra.remove("container");
        config.extra.remove("container_config");
        config.config = Some(cfg);
        config.created = Some(created.clone());
        config.author = opts.author.clone().filter(|a| !a.is_empty());
        config.comment = opts.comment.clone().filter(|c| !c.is_empty());
        config.docker_version = Some(concat!("berth-", env!("CARGO_PKG_VERSION")).to_string());
        config.rootfs.diff_ids.push(staged.meta.diff_id.clone());
        config.history.push(History {
            created: Some(created),
            created_by: opts.created_by.clone(),
            author: config.author.clone(),
            comment: config.comment.clone(),
            empty_layer: false,
        });
        let mut st = self.lock();
        let tmp = staged.tmp_dir.clone();
        let blob_tmp = staged.blob_tmp.clone();
        let res = self.commit_layer(&mut st, staged).and_then(|()| {
            let parent = st.images.contains_key(&image_id).then(|| image_id.clone());
            self.commit_image(&mut st, config, parent, reference.as_ref())
        });
        match res {
            Ok(id) => Ok(self.summary(&st, &id)),
            Err(e) => {
                let _ = remove_any(&tmp);
                let _ = remove_any(&blob_tmp);
                Err(e)
            }
        }
    }

    // ---------------------------------------------------------------- container snapshots

    fn mounts_for(&self, id: &str, rec: &ContainerLayer) -> RootfsMount {
        let mut lowers: Vec<PathBuf> = rec
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.layer_dir(c).join("diff"))
            .collect();
        if lowers.is_empty() {
            lowers.push(self.root.join("empty"));
        }
        let dir = self.container_dir(id);
        RootfsMount {
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }

    /// Creates the writable layer of container `container_id` over the layers of `image_id` and returns
    /// its overlay mounts (idempotent for the same image). Errors: NotFound (image), Conflict (the
    /// container has a layer over another image), InvalidArgument (bad container ID).
    pub fn prepare_container_layer(
        &self,
        container_id: &str,
        image_id: &ImageId,
    ) -> Result<RootfsMount> {
        if !valid_container_id(container_id) {
            return Err(Error::invalid(format!(
                "invalid container ID {container_id:?}"
            )));
        }
        let mut st = self.lock();
        let img = st
            .images
            .get(image_id)
            .ok_or_else(|| Error::NoSuchImage(image_id.to_string()))?;
        let rec = ContainerLayer {
            image_id: image_id.clone(),
            chain_ids: img.chain_ids.clone(),
        };
        if let Some(existing) = st.containers.get(container_id) {
            if existing.image_id == *image_id {
                return Ok(self.mounts_for(container_id, existing));
            }
            return Err(Error::Conflict(format!(
                "container layer {container_id} already exists for image {}",
                existing.image_id
            )));
        }
        let dir = self.container_dir(container_id);
        let tmp = temp_sibling(&dir);
        let res = (|| {
            mkdir_all(&tmp.join("upper"))?;
            mkdir_all(&tmp.join("work"))?;
            let bytes =
                serde_json::to_vec_pretty(&rec).map_err(|e| Error::internal(e.to_string()))?;
            // Not fsynced (every `run` waits for this): after a machine crash the layer may be
            // missing or broken (`open` removes it); it is empty, and berthd makes a new one.
            fs::write(tmp.join("layer.json"), &bytes).ctx("write", &tmp.join("layer.json"))?;
            remove_any(&dir)?;
            fs::rename(&tmp, &dir).ctx("rename into place", &dir)
        })();
        if let Err(e) = res {
            let _ = remove_any(&tmp);
            return Err(e);
        }
        let mounts = self.mounts_for(container_id, &rec);
        st.containers.insert(container_id.to_string(), rec);
        Ok(mounts)
    }

    /// The mounts of an existing container layer. Errors: NotFound.
    pub fn container_layer(&self, container_id: &str) -> Result<RootfsMount> {
        let st = self.lock();
        let rec = st
            .containers
            .get(container_id)
            .ok_or_else(|| Error::NotFound(format!("no layer for container {container_id}")))?;
        Ok(self.mounts_for(container_id, rec))
    }

    /// Removes a container's writable layer (idempotent) and frees image layers nothing else uses.
    /// The overlay must be unmounted first.
    pub fn remove_container_layer(&self, container_id: &str) -> Result<()> {
        if !valid_container_id(container_id) {
            return Err(Error::invalid(format!(
                "invalid container ID {container_id:?}"
            )));
        }
        let mut st = self.lock();
        let dir = self.container_dir(container_id);
        let doomed = temp_sibling(&dir);
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("rename", &dir, e)),
        }
        let rec = st.containers.remove(container_id);
        // The renamed tree is no longer the container's: delete it without holding up the caller
        // (a `run --rm` waits for the removal); `open` deletes what a crash leaves behind.
        std::thread::spawn(move || {
            let _ = remove_any(&doomed);
        });
        if let Some(rec) = rec {
            self.gc_layers(&mut st, &rec.chain_ids)?;
        }
        Ok(())
    }

    /// IDs of the containers that have a writable layer in the store.
    pub fn container_layers(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    /// Chain IDs of all unpacked layers, with whether an image or container still references them.
    pub fn layers_in_use(&self) -> Vec<(ChainId, bool)> {
        let st = self.lock();
        st.layers
            .keys()
            .map(|c| (c.clone(), st.layer_referenced(c)))
            .collect()
    }
}

const CONFLICT_DEPENDENT_CHILD: u8 = 1;
const CONFLICT_RUNNING_CONTAINER: u8 = 2;
const CONFLICT_ACTIVE_REFERENCE: u8 = 4;
const CONFLICT_STOPPED_CONTAINER: u8 = 8;
const CONFLICT_HARD: u8 = CONFLICT_DEPENDENT_CHILD | CONFLICT_RUNNING_CONTAINER;
const CONFLICT_SOFT: u8 = CONFLICT_ACTIVE_REFERENCE | CONFLICT_STOPPED_CONTAINER;

struct Conflict {
    hard: bool,
    used: bool,
    message: String,
}

impl Conflict {
    fn into_error(self, id: &ImageId) -> Error {
        let force = if self.hard {
            "cannot be forced"
        } else {
            "must be forced"
        };
        Error::Conflict(format!(
            "conflict: unable to delete {} ({force}) - {}",
            id.short(),
            self.message
        ))
    }
}

fn truncate_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn check_conflict(
    st: &State,
    id: &ImageId,
    mask: u8,
    in_use: &dyn Fn(&ImageId) -> Option<ImageUser>,
) -> Option<Conflict> {
    if mask & CONFLICT_DEPENDENT_CHILD != 0 && st.has_children(id) {
        return Some(Conflict {
            hard: true,
            used: false,
            message: "image has dependent child images".into(),
        });
    }
    let user = in_use(id);
    if mask & CONFLICT_RUNNING_CONTAINER != 0
        && let Some(u) = user.as_ref().filter(|u| u.running)
    {
        return Some(Conflict {
            hard: true,
            used: true,
            message: format!(
                "image is being used by running container {}",
                truncate_id(&u.container_id)
            ),
        });
    }
    if mask & CONFLICT_ACTIVE_REFERENCE != 0 && !st.refs_of(id).is_empty() {
        return Some(Conflict {
            hard: false,
            used: false,
            message: "image is referenced in multiple repositories".into(),
        });
    }
    if mask & CONFLICT_STOPPED_CONTAINER != 0
        && let Some(u) = user.as_ref().filter(|u| !u.running)
    {
        return Some(Conflict {
            hard: false,
            used: true,
            message: format!(
                "image is being used by stopped container {}",
                truncate_id(&u.container_id)
            ),
        });
    }
    None
}

#[path = "archive.rs"]
pub(crate) mod archive;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
