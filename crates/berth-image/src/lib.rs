//! Berth's image store: content-addressed blobs, unpacked layers (overlay lower dirs), image configs and
//! references, `import`, `commit`, the built-in `hello-world`, and containers' writable layers.
//!
//! The API is synchronous and `Send + Sync`; the daemon shares one [`ImageStore`] in an `Arc` and calls it
//! from `tokio::task::spawn_blocking`. Every error has an [`ErrorKind`] (NotFound, Conflict,
//! InvalidArgument, Internal) for the HTTP status, and dockerd's wording in its `Display`.
//!
//! On disk, under `<data-root>/image/`:
//! ```text
//! lock                            flock held by the one process that has the store open
//! blobs/sha256/<hex>              layer tars as received, image configs (image ID = config digest)
//! layers/<chain-hex>/diff/        an unpacked layer (overlay lower dir)
//! layers/<chain-hex>/layer.json   {chain_id, diff_id, parent, size, blob}
//! containers/<id>/{upper,work}    a container's writable layer; layer.json {image_id, chain_ids}
//! empty/                          the lower dir of images without layers
//! images.json                     {"images": {"sha256:..": {parent, last_tag_time, manifests, pending_refs}}}
//! repositories.json               {"Repositories": {"busybox": {"busybox:latest": "sha256:.."}}}
//! distribution.json               {"layers": {"<diff-id>": [{blob, repositories}]}} (push skips, mounts)
//! load.tmp-*/                     a `docker load` archive being spooled
//! commit.tmp-*                    a `commit`'s diff tar being written (then unpacked as a layer)
//! ```
//! `manifests` are the digests of the manifest/index blobs an image was pulled with or pushed as (kept
//! in `blobs/` for `RepoDigests`). Pulls go through [`ImageStore::begin_image`],
//! [`ImageStore::unpack_pending_layer`] (download, verify, decompress and unpack in one pass, several
//! layers at once) and [`ImageStore::finish_image`]; `docker save`/`load` are [`ImageStore::save`] and
//! [`ImageStore::load`].
//! Files are written as temp + fsync + rename; layers and container layers are filled in `*.tmp-*`
//! directories and renamed into place. A new image is written to `images.json` with the references it
//! is getting (`pending_refs`) before `repositories.json` has them, and `open` sets those a crash kept
//! out, so a commit, pull or load never leaves its image dangling. `open` removes temp debris, drops
//! images whose config or layers are missing, and deletes layers and blobs that nothing references.
//! Layers are shared between images by chain ID and deleted only when no image or container layer
//! references them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod changes;
pub mod config;
mod diff;
pub mod digest;
mod error;
mod fsutil;
mod hello;
pub mod reference;
mod store;
mod unpack;

pub use config::{ContainerConfig, History, ImageConfig, RootFs};
pub use diff::set_remapped_ids;
pub use digest::{ChainId, DiffId, Digest, ImageId, chain_ids};
pub use error::{Error, ErrorKind, Result};
pub use reference::Reference;
pub use store::archive::{
    LoadProgress, LoadedImage, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
pub use store::{
    BlobDescriptor, CommitOptions, DeleteItem, GraphDriver, HistoryItem, ImageDetails,
    ImageMetadata, ImageStore, ImageSummary, ImageUser, ImportOptions, LayerSource,
    MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD,
    PendingImage, RootFsDetails, RootfsMount,
};
