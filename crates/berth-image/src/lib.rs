//! Berth's image store: content-addressed blobs, unpacked layers (overlay lower dirs), image configs and
//! references, `import`, the built-in `hello-world`, and containers' writable layers.
//!
//! The API is synchronous and `Send + Sync`; the daemon shares one [`ImageStore`] in an `Arc` and calls it
//! from `tokio::task::spawn_blocking`. Errors carry an [`ErrorKind`] for the HTTP status.
#![forbid(unsafe_code)]

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
pub use digest::{ChainId, DiffId, Digest, ImageId, chain_ids};
pub use error::{Error, ErrorKind, Result};
pub use reference::Reference;
pub use store::{
    BlobDescriptor, CommitOptions, DeleteItem, GraphDriver, HistoryItem, ImageDetails,
    ImageMetadata, ImageStore, ImageSummary, ImageUser, ImportOptions, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD, RootFsDetails, RootfsMount,
};
