//! `docker push`: layers (HEAD, cross-repository mount, or upload; uncompressed blobs gzip-compressed
//! on the fly), config, then a Docker schema2 manifest, as dockerd reports it.

use std::io::{self, Read, Write};
use std::sync::Arc;

use berth_image::{
    BlobDescriptor, DiffId, Digest, ImageId, ImageStore, MEDIA_TYPE_LAYER_GZIP, Reference,
};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::client::{Credentials, RegistryClient, Session, error_of};
use crate::error::{Error, RegistryError, Result};
use crate::manifest::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, Descriptor, Schema2};
use crate::progress::{ProgressSink, Reporter, Throttle};
use crate::pull::blocking;

/// Options of [`RegistryClient::push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Credentials for the registry (from `X-Registry-Auth`); anonymous if `None`.
    pub credentials: Option<Credentials>,
}

/// One tag a push sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedTag {
    /// The tag.
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: usize,
}

fn push_error(status: u16, e: RegistryError) -> Error {
    match (e.code.as_str(), status) {
        ("UNAUTHORIZED", _) | (_, 401) => Error::Unauthorized(e.render()),
        ("DENIED", _) | (_, 403) => Error::NotFound(e.render()),
        ("NAME_UNKNOWN", _) | ("BLOB_UNKNOWN", _) | (_, 404) => Error::NotFound(e.render()),
        _ if status >= 500 => Error::Unavailable(e.render()),
        _ => Error::InvalidArgument(e.render()),
    }
}

/// `url` with `key=value` appended to its query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

async fn blob_exists(s: &Session, d: &Digest) -> Result<bool> {
    let url = s.url(&format!("blobs/{d}"));
    let resp = s.send(Method::HEAD, &url, &|b| b).await?;
    match resp.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => {
            let (code, e) = error_of(resp).await;
            Err(push_error(code, e))
        }
    }
}

/// Starts an upload (or mounts `d` from `from`): `Ok(None)` if mounted, else the upload URL.
async fn start_upload(s: &Session, mount: Option<(&Digest, &str)>) -> Result<Option<String>> {
    let mut url = s.url("blobs/uploads/");
    if let Some((d, from)) = mount {
        url = format!("{url}?mount={d}&from={from}");
    }
    let resp = s
        .send(Method::POST, &url, &|b| b.header(CONTENT_LENGTH, "0"))
        .await?;
    let status = resp.status();
    if status == StatusCode::CREATED && mount.is_some() {
        return Ok(None);
    }
    if status != StatusCode::ACCEPTED {
        let (code, e) = error_of(resp).await;
        return Err(push_error(code, e));
    }
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Unavailable("upload started without a Location".into()))?;
    Ok(Some(s.absolute(loc)))
}

/// Completes an upload with `PUT <location>&digest=<d>` and `body`.
async fn finish_upload(s: &Session, location: &str, d: &Digest, body: Option<Bytes>) -> Result<()> {
    let url = with_query(location, "digest", d.as_str());
    let resp = s
        .send(Method::PUT, &url, &|b| match &body {
            Some(data) => b
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(data.clone()),
            None => b.header(CONTENT_LENGTH, "0"),
        })
        .await?;
    if resp.status() != StatusCode::CREATED {
        let (code, e) = error_of(resp).await;
        return Err(push_error(code, e));
    }
    Ok(())
}

/// Writes into a channel of chunks, hashing and counting what passes.
struct ChanWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    hasher: Sha256,
    count: u64,
}

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::other("upload aborted"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `input` into `sink`, reporting `Pushing` progress of the bytes read.
fn copy_reporting<W: Write>(
    mut input: impl Read,
    mut sink: W,
    total: i64,
    id: &str,
    rep: &Reporter,
) -> io::Result<W> {
    let mut throttle = Throttle::new();
    let mut read: i64 = 0;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sink.write_all(&buf[..n])?;
        read += n as i64;
        if throttle.ready(false) {
            rep.bytes(id, "Pushing", read, total);
        }
    }
    rep.bytes(id, "Pushing", read, total);
    Ok(sink)
}

/// Streams a blob (compressing it with gzip if `compress`) into an upload with one chunked PATCH,
/// then completes it; returns the uploaded blob's digest and size. No temporary file.
#[allow(clippy::too_many_arguments)]
async fn upload_stream(
    s: &Session,
    location: Option<String>,
    store: Arc<ImageStore>,
    stored: &BlobDescriptor,
    compress: bool,
    total: i64,
    id: &str,
    rep: &Reporter,
) -> Result<(Digest, u64)> {
    let location = match location {
        Some(l) => l,
        None => start_upload(s, None)
            .await?
            .ok_or_else(|| Error::Internal("upload without location".into()))?,
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let producer = {
        let (rep, id, stored) = (rep.clone(), id.to_string(), stored.clone());
        tokio::task::spawn_blocking(move || -> Result<(Digest, u64)> {
            let chan = io::BufWriter::with_capacity(
                256 * 1024,
                ChanWriter {
                    tx,
                    hasher: Sha256::new(),
                    count: 0,
                },
            );
            let io_err = |e: io::Error| Error::Internal(format!("reading layer {id}: {e}"));
            let chan = if compress {
                let input = store.open_layer_tar(&stored.digest)?;
                let gz = flate2::write::GzEncoder::new(chan, PUSH_GZIP_LEVEL);
                copy_reporting(input, gz, total, &id, &rep)
                    .and_then(|gz| gz.finish())
                    .map_err(io_err)?
            } else {
                let (f, _) = store.open_blob(&stored.digest)?;
                copy_reporting(f, chan, total, &id, &rep).map_err(io_err)?
            };
            let chan = chan.into_inner().map_err(|e| io_err(e.into_error()))?;
            let digest = Digest::parse(&format!("sha256:{}", hex::encode(chan.hasher.finalize())))?;
            Ok((digest, chan.count))
        })
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let resp = s
        .http
        .patch(&location)
        .header(CONTENT_TYPE, "application/octet-stream")
        .headers(s.auth_headers().await)
        .body(Body::wrap_stream(stream))
        .send()
        .await;
    let produced = producer
        .await
        .map_err(|e| Error::Internal(format!("compress task failed: {e}")))?;
    let resp = resp.map_err(|e| crate::client::transport_error(&Method::PATCH, &location, e))?;
    let (digest, size) = produced?;
    if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
        let (code, e) = error_of(resp).await;
        return Err(push_error(code, e));
    }
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| s.absolute(l))
        .unwrap_or(location);
    finish_upload(s, &location, &digest, None).await?;
    Ok((digest, size))
}

/// gzip level of layers compressed for a push. Level 3 keeps most of level 6's ratio (docker's
/// default) at about a third of its CPU time (gzip -3 vs -6 on text: +22% size, 2.5x faster; on
/// binaries +3%, 3.8x faster).
const PUSH_GZIP_LEVEL: flate2::Compression = flate2::Compression::new(3);

/// One layer to push.
struct LayerJob {
    diff_id: DiffId,
    stored: BlobDescriptor,
}

#[allow(clippy::too_many_arguments)]
async fn push_layer(
    s: Arc<Session>,
    store: Arc<ImageStore>,
    job: LayerJob,
    repo: String,
    domain: String,
    permits: Arc<Semaphore>,
    rep: Reporter,
) -> Result<Descriptor> {
    let id = job.diff_id.short().to_string();
    let _permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            rep.update(&id, "Waiting");
            permits
                .acquire_owned()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        }
    };
    let gzip_stored = job.stored.media_type == MEDIA_TYPE_LAYER_GZIP
        || job.stored.media_type == DOCKER_LAYER_GZIP;
    // Candidates: the stored blob if gzip, and gzip blobs known to hold this layer.
    let sources = {
        let (store, d) = (store.clone(), job.diff_id.clone());
        blocking(move || Ok(store.layer_sources(&d))).await?
    };
    let mut candidates: Vec<(BlobDescriptor, Vec<String>)> = Vec::new();
    if gzip_stored {
        candidates.push((job.stored.clone(), Vec::new()));
    }
    for src in sources {
        let gz = src.blob.media_type == MEDIA_TYPE_LAYER_GZIP
            || src.blob.media_type == DOCKER_LAYER_GZIP;
        if !gz {
            continue;
        }
        match candidates
            .iter_mut()
            .find(|(b, _)| b.digest == src.blob.digest)
        {
            Some((_, repos)) => repos.extend(src.repositories),
            None => candidates.push((src.blob, src.repositories)),
        }
    }
    let desc = |b: &BlobDescriptor| Descriptor {
        media_type: DOCKER_LAYER_GZIP.into(),
        size: b.size,
        digest: b.digest.clone(),
        platform: None,
    };
    let remember = |b: BlobDescriptor| {
        let (store, d, repo) = (store.clone(), job.diff_id.clone(), repo.clone());
        async move {
            blocking(move || {
                let b = BlobDescriptor {
                    media_type: MEDIA_TYPE_LAYER_GZIP.into(),
                    ..b
                };
                Ok(store.add_layer_source(&d, &b, &repo)?)
            })
            .await
        }
    };
    for (b, _) in &candidates {
        if blob_exists(&s, &b.digest).await? {
            rep.update(&id, "Layer already exists");
            remember(b.clone()).await?;
            return Ok(desc(b));
        }
    }
    // Cross-repository mount from another repository of the same registry.
    // A refused mount starts an ordinary upload (202): that one is used for the blob.
    let prefix = format!("{domain}/");
    let mut location = None;
    for (b, repos) in &candidates {
        for from in repos {
            let Some(from_path) = from.strip_prefix(&prefix) else {
                continue;
            };
            if from == &repo {
                continue;
            }
            match start_upload(&s, Some((&b.digest, from_path))).await {
                Ok(None) => {
                    rep.update(&id, &format!("Mounted from {from_path}"));
                    remember(b.clone()).await?;
                    return Ok(desc(b));
                }
                Ok(Some(loc)) => location = location.or(Some(loc)),
                Err(e) => tracing::debug!("mount of {} from {from_path} failed: {e}", b.digest),
            }
        }
    }
    let total = job.stored.size as i64;
    let uploaded = upload_stream(
        &s,
        location,
        store.clone(),
        &job.stored,
        !gzip_stored,
        total,
        &id,
        &rep,
    )
    .await?;
    let b = BlobDescriptor {
        media_type: MEDIA_TYPE_LAYER_GZIP.into(),
        digest: uploaded.0,
        size: uploaded.1,
    };
    rep.update(&id, "Pushed");
    remember(b.clone()).await?;
    Ok(desc(&b))
}

impl RegistryClient {
    /// `docker push`: pushes `reference` (a tag; a repository without tag pushes all its tags), each
    /// layer HEAD-checked, mounted from another repository of the same registry, or uploaded (gzip-
    /// compressed on the fly if stored uncompressed; the compressed digest is remembered so a second
    /// push skips it), then the config and a Docker schema2 manifest; records `RepoDigests`.
    /// Progress lines go to `progress` as dockerd sends them.
    /// Errors: NotFound (`An image does not exist locally with the tag: x`, `denied: ...`),
    /// Unauthorized, InvalidArgument, Unavailable.
    pub async fn push(
        &self,
        store: Arc<ImageStore>,
        reference: &str,
        opts: &PushOptions,
        progress: ProgressSink,
    ) -> Result<Vec<PushedTag>> {
        let r = Reference::parse(reference)?;
        if r.digest().is_some() {
            return Err(Error::InvalidArgument(
                "cannot push a digest reference".into(),
            ));
        }
        let tags: Vec<(String, ImageId)> = match r.tag() {
            Some(t) => match store.resolve(&r.full_string()) {
                Ok(id) => vec![(t.to_string(), id)],
                Err(_) => Vec::new(),
            },
            None => {
                let mut v = Vec::new();
                for img in store.list(true) {
                    for t in &img.repo_tags {
                        if let Ok(tr) = Reference::parse(t)
                            && tr.name() == r.name()
                            && let Some(tag) = tr.tag()
                        {
                            v.push((tag.to_string(), Digest::parse(&img.id)?));
                        }
                    }
                }
                v.sort();
                v
            }
        };
        if tags.is_empty() {
            return Err(Error::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_name()
            )));
        }
        let rep = Reporter::new(progress);
        rep.message(
            None,
            format!("The push refers to repository [{}]", r.name()),
        );
        // Pull scopes for mount sources on the same registry.
        let prefix = format!("{}/", r.domain());
        let mut sources: Vec<String> = Vec::new();
        for (_, id) in &tags {
            for d in store.config(id)?.rootfs.diff_ids {
                for src in store.layer_sources(&d) {
                    for repo in src.repositories {
                        if let Some(p) = repo.strip_prefix(&prefix)
                            && p != r.path()
                            && !sources.iter().any(|s| s == p)
                        {
                            sources.push(p.to_string());
                        }
                    }
                }
            }
        }
        let session = Arc::new(
            self.open_session(
                r.domain(),
                r.path(),
                "pull,push",
                &sources,
                opts.credentials.as_ref(),
            )
            .await?,
        );
        let mut out = Vec::new();
        for (tag, id) in tags {
            out.push(self.push_one(&session, &store, &r, &tag, &id, &rep).await?);
        }
        Ok(out)
    }

    async fn push_one(
        &self,
        s: &Arc<Session>,
        store: &Arc<ImageStore>,
        r: &Reference,
        tag: &str,
        id: &ImageId,
        rep: &Reporter,
    ) -> Result<PushedTag> {
        let (config, diff_ids, blobs) = {
            let (store, id) = (store.clone(), id.clone());
            blocking(move || {
                Ok((
                    store.config_bytes(&id)?,
                    store.config(&id)?.rootfs.diff_ids,
                    store.layer_blobs(&id)?,
                ))
            })
            .await?
        };
        for d in diff_ids.iter().rev() {
            rep.update(d.short(), "Preparing");
        }
        let permits = Arc::new(Semaphore::new(self.cfg.max_concurrent_uploads.max(1)));
        let mut tasks = JoinSet::new();
        for (i, (d, b)) in diff_ids.iter().zip(&blobs).enumerate().rev() {
            let job = LayerJob {
                diff_id: d.clone(),
                stored: b.clone(),
            };
            let fut = push_layer(
                s.clone(),
                store.clone(),
                job,
                r.name(),
                r.domain().to_string(),
                permits.clone(),
                rep.clone(),
            );
            tasks.spawn(async move { (i, fut.await) });
        }
        let mut layers: Vec<Option<Descriptor>> = vec![None; diff_ids.len()];
        while let Some(res) = tasks.join_next().await {
            let (i, res) = res.map_err(|e| Error::Internal(format!("upload task failed: {e}")))?;
            match res {
                Ok(d) => layers[i] = Some(d),
                Err(e) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(e);
                }
            }
        }
        // The config.
        let config_digest = id.clone();
        if !blob_exists(s, &config_digest).await? {
            let loc = start_upload(s, None)
                .await?
                .ok_or_else(|| Error::Internal("upload without location".into()))?;
            finish_upload(s, &loc, &config_digest, Some(Bytes::from(config.clone()))).await?;
        }
        let manifest = Schema2 {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: Descriptor {
                media_type: DOCKER_CONFIG.into(),
                size: config.len() as u64,
                digest: config_digest,
                platform: None,
            },
            layers: layers
                .into_iter()
                .map(|l| l.expect("every layer pushed"))
                .collect(),
        };
        let bytes = manifest.to_bytes();
        let digest = Digest::of_bytes(&bytes);
        let url = s.url(&format!("manifests/{tag}"));
        let body = Bytes::from(bytes.clone());
        let resp = s
            .send(Method::PUT, &url, &|b| {
                b.header(CONTENT_TYPE, DOCKER_MANIFEST).body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            let (code, e) = error_of(resp).await;
            return Err(push_error(code, e));
        }
        {
            let (store, id, rd, bytes) = (
                store.clone(),
                id.clone(),
                format!("{}@{digest}", r.name()),
                bytes.clone(),
            );
            blocking(move || Ok(store.add_repo_digest(&id, &rd, &bytes)?)).await?;
        }
        rep.message(
            None,
            format!("{tag}: digest: {digest} size: {}", bytes.len()),
        );
        rep.aux(serde_json::json!({"Tag": tag, "Digest": digest.to_string(), "Size": bytes.len()}));
        Ok(PushedTag {
            tag: tag.to_string(),
            digest,
            size: bytes.len(),
        })
    }
}
