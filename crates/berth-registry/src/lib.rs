//! Berth's registry client: the OCI distribution spec / Docker registry v2 API for `pull` and `push`,
//! with anonymous, basic and bearer-token authentication, Docker Hub mirrors, and dockerd's progress
//! lines and error messages.
//!
//! Async (tokio + reqwest with rustls; no OpenSSL). Store calls run on tokio's blocking pool; layers
//! download in parallel (at most [`RegistryConfig::max_concurrent_downloads`]) and each is verified,
//! decompressed (gzip, zstd or plain) and unpacked in one pass through
//! [`berth_image::ImageStore::begin_image`] / `unpack_pending_layer` / `finish_image`, so nothing of a
//! failed or killed pull becomes visible.
//!
//! How the daemon uses it:
//! - one [`RegistryClient`] built from the daemon config (`insecure-registries`, `registry-mirrors`,
//!   `max-concurrent-downloads`/`-uploads`); insecure registries (those listed, and always 127.0.0.0/8,
//!   `::1`, `localhost`) are tried over HTTPS without certificate checks, then plain HTTP, as dockerd;
//! - `X-Registry-Auth` → [`Credentials::from_registry_auth`] → [`PullOptions::credentials`] /
//!   [`PushOptions::credentials`];
//! - `POST /images/create?fromImage=x&tag=y&platform=p` → [`RegistryClient::pull`], and
//!   `POST /images/{name}/push?tag=t` → [`RegistryClient::push`], with a [`ProgressSink`] that writes
//!   each `JsonMessage::to_line()` to the response; on error, write `JsonMessage::error(e.to_string())`
//!   as the last line (dockerd answers 200 once streaming has begun; before that, map
//!   [`Error::kind`]: NotFound → 404, Unauthorized → 401, InvalidArgument → 400, Unavailable/Internal →
//!   500);
//! - `GET /images/get` and `POST /images/load` are `berth_image::ImageStore::save` / `load` (no registry).
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
