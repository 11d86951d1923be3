//! Berth's registry client: the OCI distribution spec / Docker registry v2 API for `pull` and `push`,
//! with anonymous, basic and bearer-token authentication, and dockerd's progress lines.
//!
//! Async (tokio + reqwest with rustls; no OpenSSL). Store calls run on tokio's blocking pool; layers
//! download in parallel (bounded) and are verified, decompressed and unpacked in one pass through
//! [`berth_image::ImageStore::begin_image`] / `unpack_pending_layer` / `finish_image`.
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<berth_image::ImageStore>) -> berth_registry::Result<()> {
//! use berth_registry::{PullOptions, RegistryClient, RegistryConfig, no_progress};
//! let client = RegistryClient::new(RegistryConfig::default())?;
//! let out = client.pull(store, "127.0.0.1:5000/team/app:1.2", &PullOptions::default(), no_progress()).await?;
//! println!("{}", out.image_id);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
pub mod manifest;
pub mod progress;
mod pull;
mod push;

pub use client::{Credentials, DOCKER_HUB_REGISTRY, RegistryClient, RegistryConfig};
pub use error::{Error, ErrorKind, Result};
pub use progress::{ProgressSink, human_size, no_progress, progress_bar};
pub use pull::{PullOptions, PullOutcome};
pub use push::{PushOptions, PushedTag};
