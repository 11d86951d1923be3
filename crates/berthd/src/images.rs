//! Images: the adapter over `berth-image`'s store (called with `spawn_blocking`) and the image endpoints.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use berth_api::Filters;
use berth_api::container::Config;
use berth_api::image::{DeleteItem, ImageSummary};
use berth_api::progress::JsonMessage;
use berth_image::{ImageStore, ImageUser, ImportOptions};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::container::LayerPaths;
use crate::error::{Error, Result};

/// Maps an image-store error to the daemon's error classes.
pub fn img_err(e: berth_image::Error) -> Error {
    let msg = e.to_string();
    match e.kind() {
        berth_image::ErrorKind::NotFound => Error::NotFound(msg),
        berth_image::ErrorKind::Conflict => Error::Conflict(msg),
        berth_image::ErrorKind::InvalidArgument => Error::Invalid(msg),
        _ => Error::Internal(msg),
    }
}

/// Tells which container (ID, running) uses an image ID, if any.
pub type InUse = Arc<dyn Fn(&str) -> Option<(String, bool)> + Send + Sync>;

/// What container creation needs of an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    /// The image's container defaults, in the API's shape.
    pub config: Config,
}

/// The image store, shared with blocking tasks.
#[derive(Debug, Clone)]
pub struct Images {
    store: Arc<ImageStore>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> berth_image::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(img_err)
}

fn parse_id(id: &str) -> Result<berth_image::ImageId> {
    berth_image::Digest::parse(id).map_err(img_err)
}

impl Images {
    /// Opens the store under `<data-root>/image`; a new store gets the built-in hello-world.
    pub fn open(data_root: &Path) -> Result<Self> {
        let store = ImageStore::open(data_root).map_err(img_err)?;
        for r in store.repairs() {
            tracing::warn!("image store repair: {r}");
        }
        if store.was_created() {
            store.ensure_hello_world().map_err(img_err)?;
        }
        Ok(Images {
            store: Arc::new(store),
        })
    }

    /// The store itself (for the registry client).
    pub fn store(&self) -> Arc<ImageStore> {
        self.store.clone()
    }

    /// Resolves an image for container creation.
    pub async fn lookup(&self, name: &str) -> Result<ImageInfo> {
        let s = self.store.clone();
        let name = name.to_string();
        let (id, cfg) = blocking(move || {
            let id = s.resolve(&name)?;
            let cfg = s.config(&id)?;
            Ok((id, cfg))
        })
        .await?;
        let config: Config = match cfg.config {
            Some(c) => serde_json::to_value(c)
                .and_then(serde_json::from_value)
                .map_err(|e| Error::internal(format!("image config: {e}")))?,
            None => Config::default(),
        };
        Ok(ImageInfo {
            id: id.to_string(),
            config,
        })
    }

    /// Creates (or finds) a container's writable layer.
    pub async fn prepare_layer(&self, container_id: &str, image_id: &str) -> Result<LayerPaths> {
        let s = self.store.clone();
        let cid = container_id.to_string();
        let iid = parse_id(image_id)?;
        let m = blocking(move || s.prepare_container_layer(&cid, &iid)).await?;
        Ok(LayerPaths {
            lowers: m.lowers,
            upper: m.upper,
            work: m.work,
        })
    }

    /// IDs of the containers with a writable layer in the store.
    pub async fn container_layers(&self) -> Vec<String> {
        let s = self.store.clone();
        blocking(move || Ok(s.container_layers()))
            .await
            .unwrap_or_default()
    }

    /// Removes a container's writable layer (idempotent).
    pub async fn remove_layer(&self, container_id: &str) -> Result<()> {
        let s = self.store.clone();
        let cid = container_id.to_string();
        blocking(move || s.remove_container_layer(&cid)).await
    }

    /// Number of images (for `/info`).
    pub async fn count(&self) -> i64 {
        let s = self.store.clone();
        blocking(move || Ok(s.list(false).len() as i64))
            .await
            .unwrap_or(0)
    }

    /// `GET /images/json`.
    pub async fn list(&self, all: bool, filters: &Filters) -> Result<Vec<ImageSummary>> {
        filters
            .validate(&["dangling", "reference", "label", "before", "since"])
            .map_err(Error::Invalid)?;
        let dangling = match filters.get("dangling").first().map(String::as_str) {
            None => None,
            Some("true") | Some("1") => Some(true),
            Some("false") | Some("0") => Some(false),
            Some(v) => {
                return Err(Error::invalid(format!("Invalid filter 'dangling=[{v}]'")));
            }
        };
        let s = self.store.clone();
        let list = blocking(move || Ok(s.list(all))).await?;
        let refs = filters.get("reference");
        let labels = filters.get("label");
        let mut out = Vec::new();
        for i in list {
            if let Some(d) = dangling {
                if d != i.repo_tags.is_empty() {
                    continue;
                }
            }
            if !refs.is_empty()
                && !i
                    .repo_tags
                    .iter()
                    .any(|t| refs.iter().any(|p| reference_matches(p, t)))
            {
                continue;
            }
            let lbl = i.labels.clone().unwrap_or_default();
            if !crate::container::list::labels_match(labels, &lbl) {
                continue;
            }
            out.push(ImageSummary {
                id: i.id,
                parent_id: i.parent_id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                created: i.created,
                size: i.size,
                shared_size: i.shared_size,
                virtual_size: i.size,
                labels: lbl,
                containers: i.containers,
            });
        }
        Ok(out)
    }

    /// `GET /images/{name}/json`, as JSON (Docker's shape).
    pub async fn inspect(&self, name: &str) -> Result<Value> {
        let s = self.store.clone();
        let name = name.to_string();
        let d = blocking(move || s.inspect(&name)).await?;
        let mut v = serde_json::to_value(&d).map_err(|e| Error::internal(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.entry("Container").or_insert(Value::String(String::new()));
            o.insert("VirtualSize".into(), Value::from(d.size));
            if o.get("Config").is_none_or(Value::is_null) {
                o.insert("Config".into(), serde_json::json!({}));
            }
        }
        Ok(v)
    }

    /// The image ID a name resolves to.
    pub async fn resolve(&self, name: &str) -> Result<String> {
        let s = self.store.clone();
        let name = name.to_string();
        Ok(blocking(move || s.resolve(&name)).await?.to_string())
    }

    /// `POST /images/{name}/tag`.
    pub async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        if repo.is_empty() {
            return Err(Error::invalid(
                "repository name must have at least one component",
            ));
        }
        let target = if tag.is_empty() {
            repo.to_string()
        } else {
            format!("{repo}:{tag}")
        };
        let s = self.store.clone();
        let source = source.to_string();
        blocking(move || s.tag(&source, &target)).await
    }

    /// `DELETE /images/{name}`; `in_use` names a container using an image.
    pub async fn remove(
        &self,
        name: &str,
        force: bool,
        prune: bool,
        in_use: InUse,
    ) -> Result<Vec<DeleteItem>> {
        let s = self.store.clone();
        let name = name.to_string();
        let items = blocking(move || {
            let cb = |id: &berth_image::ImageId| {
                in_use(&id.to_string()).map(|(container_id, running)| ImageUser {
                    container_id,
                    running,
                })
            };
            s.remove(&name, force, prune, &cb)
        })
        .await?;
        Ok(items.into_iter().map(delete_item).collect())
    }

    /// `GET /images/{name}/history`.
    pub async fn history(&self, name: &str) -> Result<Value> {
        let s = self.store.clone();
        let name = name.to_string();
        let items = blocking(move || s.history(&name)).await?;
        Ok(Value::Array(
            items
                .into_iter()
                .map(|h| {
                    serde_json::json!({
                        "Id": h.id, "Created": h.created, "CreatedBy": h.created_by,
                        "Tags": if h.tags.is_empty() { Value::Null } else { serde_json::json!(h.tags) },
                        "Size": h.size, "Comment": h.comment,
                    })
                })
                .collect(),
        ))
    }

    /// `POST /images/prune`.
    pub async fn prune(&self, filters: &Filters, in_use: InUse) -> Result<Value> {
        filters
            .validate(&["dangling", "until", "label", "label!"])
            .map_err(Error::Invalid)?;
        let all = matches!(
            filters.get("dangling").first().map(String::as_str),
            Some("false") | Some("0")
        );
        let until = crate::container::list::prune_until(filters, chrono::Utc::now())?;
        // Images that `until` or the labels leave out, as dockerd: created after `until`, or
        // with labels that `label` does not match or `label!` does.
        let mut kept = std::collections::HashSet::new();
        if until.is_some() || !filters.get("label").is_empty() || !filters.get("label!").is_empty()
        {
            for i in self.list(true, &Filters::default()).await? {
                let late = until.is_some_and(|u| i.created > u.timestamp());
                if late || !crate::container::list::prune_labels_match(filters, &i.labels) {
                    kept.insert(i.id);
                }
            }
        }
        let s = self.store.clone();
        let (items, reclaimed) = blocking(move || {
            // The store leaves images in use alone (and quietly so when they are the parents of
            // pruned ones), so the images the filters leave out pass for used.
            let cb = |id: &berth_image::ImageId| {
                let id = id.to_string();
                if kept.contains(&id) {
                    return Some(ImageUser {
                        container_id: String::new(),
                        running: false,
                    });
                }
                in_use(&id).map(|(container_id, running)| ImageUser {
                    container_id,
                    running,
                })
            };
            s.prune(all, &cb)
        })
        .await?;
        let items: Vec<DeleteItem> = items.into_iter().map(delete_item).collect();
        Ok(serde_json::json!({
            "ImagesDeleted": if items.is_empty() { Value::Null } else { serde_json::json!(items) },
            "SpaceReclaimed": reclaimed,
        }))
    }

    /// `POST /commit`: a new image from a container's writable layer.
    pub async fn commit(
        &self,
        container_id: &str,
        reference: Option<String>,
        config: Config,
        opts: CommitParams,
    ) -> Result<String> {
        let cfg: berth_image::ContainerConfig = serde_json::to_value(&config)
            .and_then(serde_json::from_value)
            .map_err(|e| Error::internal(format!("container config: {e}")))?;
        let co = berth_image::CommitOptions {
            config: Some(cfg),
            changes: opts.changes,
            comment: opts.comment,
            author: opts.author,
            created_by: opts.created_by,
        };
        let s = self.store.clone();
        let cid = container_id.to_string();
        let sum = blocking(move || s.commit(&cid, reference.as_deref(), &co)).await?;
        Ok(sum.id)
    }

    /// `POST /images/load`: loads a docker-archive or OCI-layout tar from the streamed body.
    pub async fn load(&self, body: Incoming) -> Result<Bytes> {
        let rx = pump_body(body);
        let s = self.store.clone();
        let loaded = blocking(move || {
            let rd = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            s.load(rd)
        })
        .await?;
        let mut out = String::new();
        for l in loaded {
            let m = JsonMessage {
                stream: Some(format!("{l}\n")),
                ..Default::default()
            };
            out.push_str(&m.to_line());
        }
        Ok(Bytes::from(out))
    }

    /// `GET /images/get`: writes a docker-archive of `names` into the returned channel. An error
    /// before the first byte is returned as such.
    pub async fn save(&self, names: Vec<String>) -> Result<tokio::sync::mpsc::Receiver<Bytes>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Option<berth_image::Error>>();
        let s = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter {
                tx,
                first: Some(first_tx),
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let res = s.save(&refs, &mut w);
            let first = w.first.take();
            match (res, first) {
                (Err(e), Some(f)) => {
                    let _ = f.send(Some(e));
                }
                (Err(e), None) => tracing::warn!("save: {e}"),
                (Ok(()), Some(f)) => {
                    let _ = f.send(None);
                }
                (Ok(()), None) => {}
            }
        });
        match first_rx.await {
            Ok(Some(e)) => Err(img_err(e)),
            _ => Ok(rx),
        }
    }

    /// `POST /images/create?fromSrc=-`: imports the streamed request body; returns the progress lines.
    pub async fn import(
        &self,
        body: Incoming,
        reference: Option<String>,
        opts: ImportOptions,
    ) -> Result<Bytes> {
        let rx = pump_body(body);
        let s = self.store.clone();
        let res = blocking(move || {
            let rd = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            s.import(rd, reference.as_deref(), &opts)
        })
        .await;
        let summary = res?;
        Ok(Bytes::from(JsonMessage::status(summary.id).to_line()))
    }
}

/// Parameters of a commit besides the config.
#[derive(Debug, Default)]
pub struct CommitParams {
    /// Dockerfile-like changes.
    pub changes: Vec<String>,
    /// Commit message.
    pub comment: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// The history's `created_by`.
    pub created_by: Option<String>,
}

fn delete_item(i: berth_image::DeleteItem) -> DeleteItem {
    match i {
        berth_image::DeleteItem::Untagged(u) => DeleteItem {
            untagged: Some(u),
            deleted: None,
        },
        berth_image::DeleteItem::Deleted(d) => DeleteItem {
            untagged: None,
            deleted: Some(d),
        },
    }
}

/// Feeds a request body, chunk by chunk, to a blocking reader.
pub(crate) fn pump_body(body: Incoming) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    rx
}

/// A blocking `Write` into a channel of chunks; tells `first` when the first byte goes out.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    first: Option<tokio::sync::oneshot::Sender<Option<berth_image::Error>>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(f) = self.first.take() {
            let _ = f.send(None);
        }
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over chunks sent by an async task.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelReader {
    /// A reader over a request body's chunks.
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Docker's `reference` filter: a glob over `name` or `name:tag` of a familiar reference.
pub fn reference_matches(pattern: &str, tag: &str) -> bool {
    let name = tag.rsplit_once(':').map(|(n, _)| n).unwrap_or(tag);
    glob(pattern.as_bytes(), tag.as_bytes()) || glob(pattern.as_bytes(), name.as_bytes())
}

/// `path.Match`-like glob with `*` (not crossing `/`) and `?`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(p, &s[1..])),
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter() {
        assert!(reference_matches("busybox", "busybox:local"));
        assert!(reference_matches("busybox:local", "busybox:local"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(!reference_matches("busy", "busybox:latest"));
        assert!(!reference_matches("*", "library/busybox:latest"));
        assert!(reference_matches("*/*", "library/busybox:latest"));
    }
}
