//! `docker pull`: manifest (index → platform manifest), config, layers downloaded in parallel and
//! unpacked while they stream in, as dockerd reports it.

use std::io::{self, Read};
use std::sync::Arc;

use berth_image::{Digest, ImageStore, PendingImage, Reference};
use bytes::{Buf, Bytes};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::client::{Credentials, RegistryClient, Session, error_of, transport_error};
use crate::error::{Error, Result};
use crate::manifest::{
    DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, Descriptor, MANIFEST_ACCEPT, Manifest, OCI_INDEX,
    Platform,
};
use crate::progress::{ProgressSink, Reporter, Throttle};

/// Largest manifest or config accepted (dockerd: 4 MiB manifests; configs are small too).
const MAX_DOCUMENT: usize = 8 << 20;

/// Options of [`RegistryClient::pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]` to pick from an index; default `linux/<this machine>`.
    pub platform: Option<String>,
    /// Credentials for the registry (from `X-Registry-Auth`); anonymous if `None`.
    pub credentials: Option<Credentials>,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    /// The image now in the store.
    pub image_id: Digest,
    /// The reference pulled, familiar form (`busybox:latest`).
    pub reference: String,
    /// Digest of what the tag points at (index or manifest): the `RepoDigests` entry.
    pub digest: Digest,
    /// True if the image was already there (`Status: Image is up to date for ...`).
    pub up_to_date: bool,
}

/// Runs a blocking store call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// A manifest-level error as dockerd words it (`manifest for x:1 not found: manifest unknown: ...`).
fn pull_error(status: u16, e: crate::error::RegistryError, r: &Reference) -> Error {
    match (e.code.as_str(), status) {
        ("MANIFEST_UNKNOWN", _) | ("NOT_FOUND", _) => Error::NotFound(format!(
            "manifest for {} not found: {}",
            r.familiar_string(),
            if e.code == "NOT_FOUND" {
                "manifest unknown: manifest unknown".to_string()
            } else {
                e.render()
            }
        )),
        ("NAME_UNKNOWN", _) => Error::NotFound(format!(
            "repository {} not found: {}",
            r.familiar_name(),
            e.render()
        )),
        ("DENIED", _) | (_, 403) => Error::NotFound(format!(
            "pull access denied for {}, repository does not exist or may require 'docker login': {}",
            r.familiar_name(),
            e.render()
        )),
        ("UNAUTHORIZED", _) | (_, 401) => Error::Unauthorized(e.render()),
        _ if status >= 500 => Error::Unavailable(e.render()),
        _ => Error::Internal(e.render()),
    }
}

/// Fetches a small document (manifest or config) and checks its digest if known.
async fn fetch_document(
    s: &Session,
    url: &str,
    accept: Option<&str>,
    want: Option<&Digest>,
    r: &Reference,
) -> Result<(Vec<u8>, Option<String>)> {
    let resp = s
        .send(Method::GET, url, &|b| match accept {
            Some(a) => b.header(ACCEPT, a),
            None => b,
        })
        .await?;
    if !resp.status().is_success() {
        let (st, e) = error_of(resp).await;
        return Err(pull_error(st, e, r));
    }
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(&Method::GET, url, e))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT {
            return Err(Error::InvalidArgument(format!(
                "{url}: document larger than {MAX_DOCUMENT} bytes"
            )));
        }
    }
    if let Some(w) = want
        && Digest::of_bytes(&body) != *w
    {
        return Err(Error::InvalidArgument(format!(
            "{url}: content does not match digest {w}"
        )));
    }
    Ok((body, ctype))
}

/// A `Read` over chunks sent from the download task (used on the blocking pool).
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Downloads layer `index` and unpacks it as it streams in; verifies the digest.
#[allow(clippy::too_many_arguments)]
async fn pull_layer(
    s: Arc<Session>,
    store: Arc<ImageStore>,
    pending: Arc<PendingImage>,
    index: usize,
    desc: Descriptor,
    permits: Arc<Semaphore>,
    order: (usize, Arc<watch::Sender<usize>>),
    rep: Reporter,
) -> Result<()> {
    let id = desc.digest.short().to_string();
    let permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            rep.update(&id, "Waiting");
            permits
                .acquire_owned()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        }
    };
    let mut attempt = 0;
    loop {
        match download_and_unpack(&s, &store, &pending, index, &desc, &rep).await {
            Err(Error::Unavailable(msg)) if attempt < MAX_RETRIES => {
                attempt += 1;
                tracing::debug!("layer {id}: {msg}; retrying");
                for left in (1..=attempt * 2).rev() {
                    rep.update(
                        &id,
                        &format!(
                            "Retrying in {left} second{}",
                            if left == 1 { "" } else { "s" }
                        ),
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            Err(e) => return Err(e),
            Ok(()) => break,
        }
    }
    drop(permit);
    // Unpacked in parallel, reported bottom layer first as dockerd (which extracts in order) does.
    let (pos, seq) = order;
    let mut rx = seq.subscribe();
    rx.wait_for(|&n| n >= pos)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    rep.bytes(&id, "Extracting", desc.size as i64, desc.size as i64);
    rep.update(&id, "Pull complete");
    seq.send_replace(pos + 1);
    Ok(())
}

/// Retries of a layer download after a network error (dockerd: 5, with 5 s, 10 s, ... waits).
const MAX_RETRIES: u32 = 2;

/// One attempt at downloading and unpacking a layer.
async fn download_and_unpack(
    s: &Session,
    store: &Arc<ImageStore>,
    pending: &Arc<PendingImage>,
    index: usize,
    desc: &Descriptor,
    rep: &Reporter,
) -> Result<()> {
    let id = desc.digest.short().to_string();
    let url = s.url(&format!("blobs/{}", desc.digest));
    let resp = s.send(Method::GET, &url, &|b| b).await?;
    if resp.status() != StatusCode::OK {
        let (st, e) = error_of(resp).await;
        return Err(match st {
            404 => Error::NotFound(format!("blob {} not found: {}", desc.digest, e.render())),
            401 => Error::Unauthorized(e.render()),
            st if st >= 500 || st == 429 => {
                Error::Unavailable(format!("fetching blob {}: {}", desc.digest, e.render()))
            }
            _ => Error::InvalidArgument(format!("fetching blob {}: {}", desc.digest, e.render())),
        });
    }
    let total = desc.size as i64;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(32);
    let unpack = {
        let (store, pending, want) = (store.clone(), pending.clone(), desc.digest.clone());
        tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            store
                .unpack_pending_layer(&pending, index, reader, Some(&want))
                .map_err(Error::from)
        })
    };
    let mut hasher = Sha256::new();
    let mut current: i64 = 0;
    let mut throttle = Throttle::new();
    let mut resp = resp;
    let mut failure: Option<Error> = None;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                current += chunk.len() as i64;
                if current as u64 > desc.size {
                    // More than the manifest promised: stop before it fills the disk.
                    let msg = format!(
                        "filesystem layer verification failed for digest {}",
                        desc.digest
                    );
                    let _ = tx
                        .send(Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone())))
                        .await;
                    failure = Some(Error::InvalidArgument(msg));
                    break;
                }
                if throttle.ready(false) {
                    rep.bytes(&id, "Downloading", current, total);
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the unpacker stopped: its error says why
                }
            }
            Ok(None) => {
                rep.bytes(&id, "Downloading", current, total);
                rep.update(&id, "Verifying Checksum");
                let got = format!("sha256:{}", hex::encode(hasher.finalize_reset()));
                if got != desc.digest.as_str() || current as u64 != desc.size {
                    let msg = format!(
                        "filesystem layer verification failed for digest {}",
                        desc.digest
                    );
                    let _ = tx
                        .send(Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone())))
                        .await;
                    failure = Some(Error::InvalidArgument(msg));
                } else {
                    rep.update(&id, "Download complete");
                }
                break;
            }
            Err(e) => {
                let err = transport_error(&Method::GET, &url, e);
                let _ = tx.send(Err(io::Error::other(err.to_string()))).await;
                failure = Some(err);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpack
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?;
    if let Some(f) = failure {
        return Err(f);
    }
    unpacked?;
    Ok(())
}

impl RegistryClient {
    /// `docker pull`: resolves `reference` (default tag `latest`) on its registry, picks the platform
    /// from an index, downloads the config and the missing layers (at most `max_concurrent_downloads`
    /// at once; digests verified while streaming; gzip/zstd/plain unpacked on the fly) and records the
    /// image with its tag and `RepoDigests` entry. Progress lines go to `progress` as dockerd sends them.
    /// Errors: NotFound (`manifest for x not found: ...`, `pull access denied for x, ...`),
    /// Unauthorized, InvalidArgument, Unavailable.
    pub async fn pull(
        &self,
        store: Arc<ImageStore>,
        reference: &str,
        opts: &PullOptions,
        progress: ProgressSink,
    ) -> Result<PullOutcome> {
        let r = Reference::parse(reference)?.with_default_tag();
        let rep = Reporter::new(progress);
        let out = self.pull_tag(&store, &r, opts, &rep).await?;
        rep.status(&out.reference, !out.up_to_date);
        Ok(out)
    }

    /// One tag (or digest) of a pull, without the final `Status:` line.
    async fn pull_tag(
        &self,
        store: &Arc<ImageStore>,
        r: &Reference,
        opts: &PullOptions,
        rep: &Reporter,
    ) -> Result<PullOutcome> {
        let platform = Platform::parse(opts.platform.as_deref())?;
        let tag_or_digest = match r.digest() {
            Some(d) => d.to_string(),
            None => r.tag().unwrap_or("latest").to_string(),
        };
        rep.message(Some(&tag_or_digest), format!("Pulling from {}", r.path()));
        // Docker Hub pulls try the configured mirrors first, then the registry itself.
        let mirrors: Vec<String> = if r.domain() == "docker.io" {
            self.cfg
                .mirrors
                .iter()
                .map(|m| m.trim_end_matches('/').to_string())
                .collect()
        } else {
            Vec::new()
        };
        let creds = opts.credentials.as_ref();
        for base in &mirrors {
            let s = self.session_at(base, r.path(), "pull", creds);
            let res = match s.ping().await {
                Ok(()) => {
                    self.pull_from(Arc::new(s), store, r, opts, &platform, rep, &tag_or_digest)
                        .await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(out) => return Ok(out),
                Err(e) => tracing::info!("pull from mirror {base} failed, trying the next: {e}"),
            }
        }
        let s = self
            .open_session(r.domain(), r.path(), "pull", &[], creds)
            .await?;
        self.pull_from(Arc::new(s), store, r, opts, &platform, rep, &tag_or_digest)
            .await
    }

    /// The tags of a repository (`GET /v2/<name>/tags/list`, following `Link` pages), sorted.
    /// Errors: as [`RegistryClient::pull`].
    pub async fn list_tags(
        &self,
        repository: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<String>> {
        let r = Reference::parse(repository)?;
        let s = self
            .open_session(r.domain(), r.path(), "pull", &[], credentials)
            .await?;
        let mut url = s.url("tags/list");
        let mut tags = Vec::new();
        for _ in 0..1000 {
            let resp = s.send(Method::GET, &url, &|b| b).await?;
            if !resp.status().is_success() {
                let (st, e) = error_of(resp).await;
                return Err(pull_error(st, e, &r));
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .filter(|l| l.contains("rel=\"next\""))
                .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()));
            #[derive(serde::Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| transport_error(&Method::GET, &url, e))?;
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| Error::InvalidArgument(format!("invalid tag list: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => url = s.absolute(&n),
                None => break,
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// `docker pull --all-tags`: pulls every tag of `repository` (which must not carry a tag or digest),
    /// reporting each tag as dockerd does (`<tag>: Pulling from`, layers, `Digest:`) and one `Status:`
    /// line for the repository at the end.
    /// Errors: InvalidArgument (a tag given), and those of [`RegistryClient::pull`].
    pub async fn pull_all_tags(
        &self,
        store: Arc<ImageStore>,
        repository: &str,
        opts: &PullOptions,
        progress: ProgressSink,
    ) -> Result<Vec<PullOutcome>> {
        let r = Reference::parse(repository)?;
        if r.tag().is_some() || r.digest().is_some() {
            return Err(Error::InvalidArgument(
                "tag can't be used with --all-tags/-a".into(),
            ));
        }
        let rep = Reporter::new(progress);
        let mut out = Vec::new();
        for tag in self
            .list_tags(repository, opts.credentials.as_ref())
            .await?
        {
            let tagged = Reference::parse(&format!("{}:{tag}", r.name()))?;
            out.push(self.pull_tag(&store, &tagged, opts, &rep).await?);
        }
        rep.status(&r.familiar_string(), out.iter().any(|o| !o.up_to_date));
        Ok(out)
    }

    /// Pulls through an open session.
    #[allow(clippy::too_many_arguments)]
    async fn pull_from(
        &self,
        session: Arc<Session>,
        store: &Arc<ImageStore>,
        r: &Reference,
        opts: &PullOptions,
        platform: &Platform,
        rep: &Reporter,
        tag_or_digest: &str,
    ) -> Result<PullOutcome> {
        let r = r.clone();
        let store = store.clone();
        let rep = rep.clone();

        // The manifest, through an index if there is one.
        let top_url = session.url(&format!("manifests/{tag_or_digest}"));
        let (top_bytes, ctype) =
            fetch_document(&session, &top_url, Some(MANIFEST_ACCEPT), r.digest(), &r).await?;
        let top_digest = Digest::of_bytes(&top_bytes);
        let parse = |b: &[u8]| -> Result<Manifest> {
            serde_json::from_slice(b)
                .map_err(|e| Error::InvalidArgument(format!("invalid manifest: {e}")))
        };
        let top = parse(&top_bytes)?;
        let media = top.media_type.clone().or(ctype).unwrap_or_default();
        if DOCKER_SCHEMA1.contains(&media.as_str()) || top.schema_version == 1 {
            return Err(Error::InvalidArgument(format!(
                "[DEPRECATION NOTICE] Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed. Suggest the author of {} to upgrade the image to the OCI Format or Docker Image manifest v2, schema 2.",
                r.familiar_string()
            )));
        }
        let mut manifests: Vec<Vec<u8>> = vec![top_bytes.clone()];
        let manifest = if media == OCI_INDEX
            || media == DOCKER_MANIFEST_LIST
            || (top.config.is_none() && !top.manifests.is_empty())
        {
            let entry = top
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no matching manifest for {} in the manifest list entries",
                        platform.render()
                    ))
                })?;
            let url = session.url(&format!("manifests/{}", entry.digest));
            let (bytes, _) = fetch_document(
                &session,
                &url,
                Some(MANIFEST_ACCEPT),
                Some(&entry.digest),
                &r,
            )
            .await?;
            let m = parse(&bytes)?;
            manifests.push(bytes);
            m
        } else {
            top
        };
        let config_desc = manifest
            .config
            .clone()
            .ok_or_else(|| Error::InvalidArgument("invalid manifest: no config".into()))?;
        let config_url = session.url(&format!("blobs/{}", config_desc.digest));
        let (config, _) =
            fetch_document(&session, &config_url, None, Some(&config_desc.digest), &r).await?;
        if opts.platform.is_some() {
            let v: serde_json::Value = serde_json::from_slice(&config)
                .map_err(|e| Error::InvalidArgument(format!("invalid image config: {e}")))?;
            let actual = Platform {
                architecture: v["architecture"].as_str().unwrap_or_default().to_string(),
                os: v["os"].as_str().unwrap_or_default().to_string(),
                variant: v["variant"].as_str().map(str::to_string),
            };
            if !platform.matches(&actual) {
                return Err(Error::NotFound(format!(
                    "image with reference {} was found but does not match the specified platform: wanted {}, actual: {}",
                    r.familiar_string(),
                    platform.render(),
                    actual.render()
                )));
            }
        }

        // The image in the store.
        let repo = r.name();
        let mut refs = vec![format!("{repo}@{top_digest}")];
        if let Some(t) = r.tag() {
            refs.push(format!("{repo}:{t}"));
        }
        let before = store.resolve(&r.full_string()).ok();
        let pending = {
            let (store, config, refs) = (store.clone(), config.clone(), refs.clone());
            blocking(move || {
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                Ok(store.begin_image(&config, &refs)?)
            })
            .await?
        };
        let diff_ids = pending.config().rootfs.diff_ids.clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "invalid manifest: {} layers but the config has {} diff IDs",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let missing: Vec<usize> = pending.missing_layers().to_vec();
        let up_to_date = before.as_ref() == Some(pending.id()) && missing.is_empty();
        for (i, l) in manifest.layers.iter().enumerate() {
            let id = l.digest.short();
            if missing.contains(&i) {
                rep.update(id, "Pulling fs layer");
            } else {
                rep.update(id, "Already exists");
            }
        }
        let pending = Arc::new(pending);
        let permits = Arc::new(Semaphore::new(self.cfg.max_concurrent_downloads.max(1)));
        let mut tasks = JoinSet::new();
        let seq = Arc::new(watch::Sender::new(0usize));
        for (pos, &i) in missing.iter().enumerate() {
            tasks.spawn(pull_layer(
                session.clone(),
                store.clone(),
                pending.clone(),
                i,
                manifest.layers[i].clone(),
                permits.clone(),
                (pos, seq.clone()),
                rep.clone(),
            ));
        }
        while let Some(res) = tasks.join_next().await {
            let res = res.map_err(|e| Error::Internal(format!("download task failed: {e}")))?;
            if let Err(e) = res {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                // Unpackers of aborted downloads run on the blocking pool until they see their stream
                // end; wait for them so the staged layers are gone when the error is reported.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while Arc::strong_count(&pending) > 1 && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                // The layers this pull added and nothing else uses go (dockerd releases them too).
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(pending) {
                    Ok(p) => store.abandon_image(p),
                    Err(p) => {
                        drop(p);
                        Ok(())
                    }
                })
                .await;
                return Err(e);
            }
        }
        let pending = Arc::try_unwrap(pending)
            .map_err(|_| Error::Internal("pending image still shared".into()))?;
        let summary = {
            let store = store.clone();
            blocking(move || {
                let m: Vec<&[u8]> = manifests.iter().map(Vec::as_slice).collect();
                Ok(store.finish_image(pending, &m)?)
            })
            .await?
        };
        // Remember where each layer's blob lives (push skips and cross-repository mounts).
        {
            let (store, layers, repo) = (store.clone(), manifest.layers.clone(), repo.clone());
            blocking(move || {
                for (l, d) in layers.iter().zip(&diff_ids) {
                    let blob = berth_image::BlobDescriptor {
                        media_type: l.media_type.clone(),
                        digest: l.digest.clone(),
                        size: l.size,
                    };
                    store.add_layer_source(d, &blob, &repo)?;
                }
                Ok(())
            })
            .await?;
        }
        rep.message(None, format!("Digest: {top_digest}"));
        let shown = r.familiar_string();
        Ok(PullOutcome {
            image_id: Digest::parse(&summary.id)?,
            reference: shown,
            digest: top_digest,
            up_to_date,
        })
    }
}
