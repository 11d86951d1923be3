//! `POST /build` (the classic builder's API), `POST /build/prune`, and [`DaemonBackend`], which runs
//! berth-build's steps through the daemon's own container path (records, shim, runtime, networks).
//! Berth's own incremental context (`POST /berth/build/context`, then `POST /build` with
//! `X-Berth-Context`) is served here too ([`berth_build::incremental`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use berth_api::container::{Config, HostConfig};
use berth_api::progress::JsonMessage;
use berth_build::blobs::BlobStore;
use berth_build::incremental::{ContextSession, MAX_MANIFEST_BYTES, SessionReply};
use berth_build::{
    BuildBackend, BuildContext, BuildError, BuildOptions, Builder, CacheIndex, PruneOptions,
    RunSpec,
};
use berth_image::{ImageId, RootfsMount};
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::container::{Ctr, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::http::{Body, Query, Resp};

/// One cache index per process: berthd runs one daemon, and the index keeps its own lock.
static CACHE: OnceLock<Arc<CacheIndex>> = OnceLock::new();

fn build_err(e: BuildError) -> Error {
    if e.is_client_error() {
        Error::Invalid(e.to_string())
    } else {
        Error::Internal(e.to_string())
    }
}

fn cache(d: &Daemon) -> Result<Arc<CacheIndex>> {
    if let Some(c) = CACHE.get() {
        return Ok(c.clone());
    }
    let c = Arc::new(CacheIndex::open(&d.settings.data_root).map_err(build_err)?);
    Ok(CACHE.get_or_init(|| c).clone())
}

/// The context blob store (`<data-root>/build/context-blobs`), one per process like [`CACHE`].
static BLOBS: OnceLock<Arc<BlobStore>> = OnceLock::new();

fn blobs(d: &Daemon) -> Result<Arc<BlobStore>> {
    if let Some(b) = BLOBS.get() {
        return Ok(b.clone());
    }
    let dir = d.settings.data_root.join("build").join("context-blobs");
    let b = BlobStore::open(&dir, berth_build::blobs::DEFAULT_MAX_BYTES).map_err(build_err)?;
    Ok(BLOBS.get_or_init(|| b).clone())
}

/// `X-Berth-Context`: the session of an incremental context; the body of `POST /build` then holds
/// only the blobs the session asked for.
pub const CONTEXT_HEADER: &str = "X-Berth-Context";

/// Context sessions waiting for their `POST /build`: (made, session) by ID. Few and short-lived:
/// an unclaimed one is dropped (its blobs unpinned) after [`SESSION_TTL`], the oldest beyond
/// [`MAX_SESSIONS`].
static SESSIONS: Mutex<Option<HashMap<String, (Instant, ContextSession)>>> = Mutex::new(None);
const SESSION_TTL: Duration = Duration::from_secs(600);
const MAX_SESSIONS: usize = 64;

fn sessions() -> std::sync::MutexGuard<'static, Option<HashMap<String, (Instant, ContextSession)>>>
{
    SESSIONS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `POST /berth/build/context`: checks a context manifest, pins the blobs it names and answers the
/// session ID and the digests to upload. An oversized manifest is a 413, a bad one a 400.
pub async fn context_session(d: &Arc<Daemon>, req: Request<Incoming>) -> Result<Value> {
    let body = match Limited::new(req.into_body(), MAX_MANIFEST_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::TooLarge(format!(
                "build context manifest is too large (limit {MAX_MANIFEST_BYTES} bytes)"
            )));
        }
        Err(e) => return Err(Error::invalid(format!("error reading request body: {e}"))),
    };
    let store = blobs(d)?;
    let session = tokio::task::spawn_blocking(move || ContextSession::new(&body, &store))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(build_err)?;
    let id = crate::util::random_hex(16);
    let reply = SessionReply {
        session: id.clone(),
        missing: session.missing(),
    };
    let old = {
        let mut g = sessions();
        let map = g.get_or_insert_with(HashMap::new);
        let mut old: Vec<_> = Vec::new();
        map.retain(|_, (t, _)| t.elapsed() < SESSION_TTL);
        while map.len() >= MAX_SESSIONS {
            let Some(k) = map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            old.extend(map.remove(&k));
        }
        map.insert(id, (Instant::now(), session));
        old
    };
    drop(old);
    Ok(serde_json::to_value(reply).unwrap_or_default())
}

fn mount_dir(d: &Daemon) -> PathBuf {
    d.settings.exec_root.join("build")
}

/// Daemon start: opens the cache index, unmounts what a killed build left mounted, removes the
/// layers (and container records) of steps that were running, so nothing is left behind.
pub async fn init(d: &Arc<Daemon>) -> Result<()> {
    let c = cache(d)?;
    let dir = mount_dir(d);
    let store = d.images.store();
    let d2 = d.clone();
    let ids = tokio::task::spawn_blocking(move || {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if berth_runtime::is_mountpoint(&p).unwrap_or(false) {
                    let _ = berth_runtime::unmount(&p);
                }
                let _ = std::fs::remove_dir(&p);
            }
        }
        let backend = Arc::new(DaemonBackend::new(d2, BTreeMap::new()));
        Builder::new(store, c, backend).recover()
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?;
    for id in ids {
        if let Ok(ctr) = d.find(&id) {
            let _op = ctr.op.lock().await;
            let _ = crate::container::delete::remove_locked(d, &ctr, false).await;
        }
        tracing::warn!(id = %id, "removed the layer of an interrupted build step");
    }
    Ok(())
}

/// `X-Registry-Config`: base64url JSON map of registry → auth config.
fn registry_config(h: Option<&HeaderValue>) -> BTreeMap<String, Value> {
    let Some(raw) = h.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return BTreeMap::new();
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// `X-Berth-Build-Secrets` (berth's own: the classic API has no session to carry secrets):
/// base64url JSON map of secret ID → base64 content. Read into memory only; never logged.
pub const SECRETS_HEADER: &str = "X-Berth-Build-Secrets";

fn secrets(h: Option<&HeaderValue>) -> Result<berth_build::builder::Secrets> {
    let mut out = berth_build::builder::Secrets::default();
    let Some(raw) = h.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return Ok(out);
    };
    let bad = || Error::invalid(format!("invalid {SECRETS_HEADER} header"));
    let b64 = &base64::engine::general_purpose::STANDARD;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| bad())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&json).map_err(|_| bad())?;
    for (id, v) in map {
        out.0.insert(id, b64.decode(v).map_err(|_| bad())?);
    }
    Ok(out)
}

/// The registry host of an image reference, as the keys of docker's config.json name it.
fn registry_host(reference: &str) -> String {
    match reference.split_once('/') {
        Some((h, _)) if h.contains('.') || h.contains(':') || h == "localhost" => h.to_string(),
        _ => "https://index.docker.io/v1/".to_string(),
    }
}

/// The request body as a blocking reader (the context is unpacked on the blocking pool).
struct ChanReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.cur.has_remaining() {
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

fn body_reader(body: Incoming) -> ChanReader {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    ChanReader {
        rx,
        cur: Bytes::new(),
    }
}

/// `POST /build`.
pub async fn build(d: &Arc<Daemon>, req: Request<Incoming>) -> Result<Resp> {
    let mut opts = BuildOptions::from_query(req.uri().query().unwrap_or("")).map_err(build_err)?;
    opts.secrets = secrets(req.headers().get(SECRETS_HEADER))?;
    let auths = registry_config(req.headers().get("X-Registry-Config"));
    let cache = cache(d)?;
    let session = match req.headers().get(CONTEXT_HEADER) {
        Some(v) => {
            let id = v.to_str().unwrap_or("");
            let s = sessions().as_mut().and_then(|m| m.remove(id));
            Some(s.map(|(_, s)| s).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown build context session {id:?} (expired or already used)"
                ))
            })?)
        }
        None => None,
    };
    let store = if session.is_some() {
        Some(blobs(d)?)
    } else {
        None
    };
    // `remote=<url>`: a git repository or a download is the context instead of the body.
    let reader: Box<dyn Read + Send> =
        match crate::build_remote::context_reader(&opts, &cache.tmp_dir()).await? {
            Some(r) => r,
            None => Box::new(body_reader(req.into_body())),
        };
    let tmp = cache.tmp_dir();
    let df = opts.dockerfile.clone();
    // The context is unpacked before any answer, so a bad context or a missing Dockerfile is a 400.
    let ctx = tokio::task::spawn_blocking(move || match (session, store) {
        (Some(s), Some(store)) => {
            let (ctx, got) = s.finish(reader, &store, &tmp, df.as_deref())?;
            tracing::debug!(
                entries = got.entries,
                blobs = got.blobs,
                bytes = got.bytes,
                "incremental build context: {} blobs uploaded",
                got.blobs
            );
            Ok(ctx)
        }
        _ => BuildContext::from_tar(reader, &tmp, df.as_deref()),
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
    .map_err(build_err)?;
    let backend = Arc::new(DaemonBackend::new(d.clone(), auths));
    let builder = Builder::new(d.images.store(), cache, backend.clone());
    let (mtx, mut mrx) = mpsc::unbounded_channel::<JsonMessage>();
    let mut task = tokio::task::spawn_blocking(move || {
        let r = builder.build(&ctx, &opts, &mut |m| {
            let _ = mtx.send(m);
        });
        // Removing a big unpacked context takes a while: not on the client's time (a leftover
        // is emptied with build/tmp at the next start).
        std::thread::spawn(move || drop(ctx));
        r
    });
    // Errors before the first line (a Dockerfile syntax error, an unknown target) are HTTP
    // errors, as dockerd's; after it they end the stream.
    let mut first = None;
    let mut finished = None;
    tokio::select! {
        m = mrx.recv() => first = m,
        r = &mut task => finished = Some(r),
    }
    if let Some(r) = &finished {
        if let Ok(m) = mrx.try_recv() {
            first = Some(m);
        }
        if first.is_none() {
            match r {
                Ok(Err(e)) => {
                    return Err(if e.is_client_error() || e.line().is_some() {
                        Error::Invalid(e.to_string())
                    } else {
                        Error::Internal(e.to_string())
                    });
                }
                Err(e) => return Err(Error::internal(e.to_string())),
                Ok(Ok(_)) => {}
            }
        }
    }
    let (tx, body) = Body::channel();
    let d2 = d.clone();
    tokio::spawn(async move {
        let gone = |b: &DaemonBackend| b.cancel.store(true, Ordering::Relaxed);
        let mut alive = true;
        if let Some(m) = first {
            alive = tx.send(Bytes::from(m.to_line())).await.is_ok();
        }
        while alive {
            match mrx.recv().await {
                Some(m) => alive = tx.send(Bytes::from(m.to_line())).await.is_ok(),
                None => break,
            }
        }
        if !alive {
            gone(&backend);
        }
        let res = match finished {
            Some(r) => r,
            None => task.await,
        };
        let tail = match res {
            Ok(Ok(r)) => {
                for t in &r.tags {
                    d2.events.image("tag", r.image_id.as_str(), t);
                }
                None
            }
            Ok(Err(e)) => Some(berth_build::error_message(&e)),
            Err(e) => Some(JsonMessage::error(e.to_string())),
        };
        if let (Some(m), true) = (tail, alive) {
            let _ = tx.send(Bytes::from(m.to_line())).await;
        }
    });
    let mut r = hyper::Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `POST /build/prune` (`all`, `keep-storage`, `filters` with `until`).
pub async fn prune(d: &Arc<Daemon>, q: &Query) -> Result<Value> {
    let cache = cache(d)?;
    let filters = q.filters()?;
    let mut opts = PruneOptions::default();
    if let Some(u) = filters.get("until").first() {
        let secs = parse_until(u)?;
        opts.until = Some(secs);
    }
    let ks = q
        .get("keep-storage")
        .or_else(|| q.get("reserved-space"))
        .unwrap_or("");
    if !ks.is_empty() && ks != "0" {
        opts.keep_storage = Some(
            ks.parse()
                .map_err(|_| Error::invalid(format!("invalid keep-storage: {ks}")))?,
        );
    }
    // Only cache records go: the images stay (they are parents of built images and are
    // removed with them, or by `image prune`). Context blobs not in use go too.
    let store = blobs(d)?;
    let (r, b) = tokio::task::spawn_blocking(move || {
        let r = cache.prune(&opts)?;
        let until = opts
            .until
            .map(|u| SystemTime::UNIX_EPOCH + Duration::from_secs(u.max(0) as u64));
        let b = store.prune(until, opts.keep_storage.unwrap_or(0));
        Ok::<_, BuildError>((r, b))
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))?
    .map_err(build_err)?;
    let mut deleted = r.deleted;
    if b.removed > 0 {
        deleted.push(BLOBS_ID.to_string());
    }
    Ok(json!({"CachesDeleted": deleted, "SpaceReclaimed": r.space_reclaimed + b.bytes}))
}

fn parse_until(u: &str) -> Result<i64> {
    let now = chrono::Utc::now().timestamp();
    if let Ok(n) = u.parse::<i64>() {
        return Ok(n);
    }
    let (num, unit) = u.split_at(u.find(|c: char| c.is_alphabetic()).unwrap_or(u.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("invalid until: {u}")))?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return chrono::DateTime::parse_from_rfc3339(u)
                .map(|t| t.timestamp())
                .map_err(|_| Error::invalid(format!("invalid until: {u}")));
        }
    };
    Ok(now - (n * mult) as i64)
}

/// The `BuildCache` ID of the context blob store.
const BLOBS_ID: &str = "berth-context-blobs";

/// `GET /system/df`'s `BuildCache` list: the cache records and the context blob store (one
/// `source.local` record, as BuildKit lists a local context).
pub fn df(d: &Daemon) -> Vec<Value> {
    let mut out: Vec<Value> = match cache(d) {
        Ok(c) => c.du().iter().map(|(k, r)| r.to_api(k)).collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(b) = blobs(d) {
        let (n, size, used) = b.usage();
        if n > 0 {
            let secs = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            };
            let t = berth_image::config::format_rfc3339_nano(used.map(secs).unwrap_or(0), 0);
            out.push(json!({
                "ID": BLOBS_ID,
                "Parents": [],
                "Type": "source.local",
                "Description": format!("build context files ({n} blobs)"),
                "InUse": false,
                "Shared": false,
                "Size": size,
                "CreatedAt": t,
                "LastUsedAt": t,
                "UsageCount": 0,
            }));
        }
    }
    out
}

/// berth-build's backend over the daemon: RUN steps are containers created and started like
/// `docker run`'s (same record, spec, shim and runtime), so limits, seccomp and networks apply.
pub struct DaemonBackend {
    d: Arc<Daemon>,
    rt: tokio::runtime::Handle,
    auths: BTreeMap<String, Value>,
    cancel: AtomicBool,
}

impl std::fmt::Debug for DaemonBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonBackend").finish_non_exhaustive()
    }
}

fn be(e: impl std::fmt::Display) -> BuildError {
    BuildError::Backend(e.to_string())
}

impl DaemonBackend {
    /// A backend for one build; `auths` is the request's `X-Registry-Config`.
    pub fn new(d: Arc<Daemon>, auths: BTreeMap<String, Value>) -> DaemonBackend {
        DaemonBackend {
            d,
            rt: tokio::runtime::Handle::current(),
            auths,
            cancel: AtomicBool::new(false),
        }
    }

    fn credentials(&self, reference: &str) -> Option<berth_registry::Credentials> {
        let host = registry_host(reference);
        let v = self.auths.get(&host).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| k.trim_start_matches("https://").trim_end_matches('/') == host)
                .map(|(_, v)| v)
        })?;
        let enc = base64::engine::general_purpose::URL_SAFE.encode(v.to_string());
        crate::distribution::credentials(HeaderValue::from_str(&enc).ok().as_ref())
    }

    /// The container record of a RUN step, as `POST /containers/create` would make it.
    fn record(&self, spec: &RunSpec) -> Result<Record> {
        let d = &self.d;
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let (path, args) = match spec.args.split_first() {
            Some((p, a)) => (p.clone(), a.to_vec()),
            None => return Err(Error::invalid("no command specified")),
        };
        let config = Config {
            image: spec.image.to_string(),
            cmd: Some(spec.args.clone()),
            entrypoint: None,
            env,
            user: spec.user.clone(),
            working_dir: spec.workdir.clone(),
            hostname: spec.container_id[..12].to_string(),
            attach_stdout: true,
            attach_stderr: true,
            ..Default::default()
        };
        let r = &spec.resources;
        let mut hc = HostConfig {
            network_mode: match spec.network.as_deref() {
                None | Some("") | Some("default") => "default".into(),
                Some(n) => n.to_string(),
            },
            memory: r.memory,
            memory_swap: r.memory_swap,
            cpu_shares: r.cpu_shares,
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpuset_cpus: r.cpuset_cpus.clone(),
            shm_size: (r.shm_size > 0).then_some(r.shm_size),
            extra_hosts: r.extra_hosts.clone(),
            ..Default::default()
        };
        hc.log_config.kind = "none".into();
        if !r.cgroup_parent.is_empty() {
            hc.extra
                .insert("CgroupParent".into(), json!(r.cgroup_parent.clone()));
        }
        let mounts: Vec<Value> = spec
            .mounts
            .iter()
            .map(|m| {
                if m.kind == "tmpfs" {
                    let size = m
                        .options
                        .get("size")
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(0);
                    json!({"Type": "tmpfs", "Target": m.target, "TmpfsOptions": {"SizeBytes": size}})
                } else {
                    json!({"Type": "bind", "Source": m.source.as_ref().map(|p| p.display().to_string()),
                           "Target": m.target, "ReadOnly": m.readonly})
                }
            })
            .collect();
        if !mounts.is_empty() {
            hc.extra.insert("Mounts".into(), Value::Array(mounts));
        }
        let network = crate::networks::on_create(d, &config, &mut hc, None)?;
        crate::container::spec::validate_host_config(&hc)?;
        Ok(Record {
            id: spec.container_id.clone(),
            created: crate::util::now_rfc3339(),
            path,
            args,
            state: Record::created_state(),
            image: spec.image.to_string(),
            name: String::new(),
            restart_count: 0,
            config,
            host_config: hc,
            layer: crate::container::LayerPaths {
                lowers: spec.rootfs.lowers.clone(),
                upper: spec.rootfs.upper.clone(),
                work: spec.rootfs.work.clone(),
            },
            has_been_manually_stopped: false,
            network,
        })
    }

    async fn run_async(&self, spec: &RunSpec, out: mpsc::UnboundedSender<Vec<u8>>) -> Result<i64> {
        let d = &self.d;
        let mut rec = self.record(spec)?;
        let c = {
            let mut reg = d.registry.lock().expect("registry");
            let mut i = 0;
            rec.name = loop {
                let n = format!("/{}", crate::names::generate(i));
                if reg.name_owner(&n).is_none() {
                    break n;
                }
                i += 1;
            };
            let c = Ctr::new(rec.clone());
            reg.insert(c.clone());
            c
        };
        let p = d.paths(&rec.id);
        std::fs::create_dir_all(&p.data).map_err(|e| Error::io("create container dir", e))?;
        // Same layer as the builder prepared (the store returns it for the same ID and image).
        rec.layer = d.images.prepare_layer(&rec.id, &rec.image).await?;
        c.update(|r| r.layer = rec.layer.clone());
        d.save_record(&rec)?;
        d.events.container(&rec, "create", &[]);
        let source = crate::container::attach::open(d, &c, false, true, true).await?;
        crate::container::start::start(d, &c).await?;
        if let Some(mut s) = source.connect().await {
            // stdcopy frames: 8-byte header [stream,0,0,0,len_be32], then the payload.
            let mut hdr = [0u8; 8];
            loop {
                if s.read_exact(&mut hdr).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
                let mut buf = vec![0u8; len];
                if s.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let _ = out.send(buf);
            }
        }
        let code =
            crate::container::wait::wait(&c, crate::container::wait::Condition::NotRunning).await;
        Ok(code)
    }

    async fn remove_async(&self, id: &str) -> Result<()> {
        let d = &self.d;
        let Ok(c) = d.find(id) else {
            return Ok(());
        };
        let _op = c.op.lock().await;
        if c.events.borrow().removed {
            return Ok(());
        }
        // As `remove_locked`, but the layer stays: the builder commits it afterwards.
        let p = d.paths(&c.id);
        crate::networks::on_stop(d, &c).await;
        crate::container::start::unmount_rootfs(&p.rootfs()).await;
        let (data, bundle) = (p.data.clone(), p.bundle.clone());
        let cid = c.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = berth_runtime::delete_cgroups(&format!("/berth/{cid}"));
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = std::fs::remove_dir_all(&data);
        })
        .await;
        d.registry.lock().expect("registry").remove(&c.id);
        c.events.send_modify(|s| s.removed = true);
        d.events.container(&c.snapshot(), "destroy", &[]);
        Ok(())
    }
}

impl BuildBackend for DaemonBackend {
    fn get_image(
        &self,
        reference: &str,
        platform: Option<&str>,
        always_pull: bool,
        out: &mut dyn FnMut(JsonMessage),
    ) -> berth_build::Result<ImageId> {
        let store = self.d.images.store();
        if !always_pull {
            if let Ok(id) = store.resolve(reference) {
                return Ok(id);
            }
        }
        let (ptx, mut prx) = mpsc::unbounded_channel::<JsonMessage>();
        let sink: berth_registry::ProgressSink = Arc::new(move |m| {
            let _ = ptx.send(m);
        });
        let opts = berth_registry::PullOptions {
            platform: platform.map(str::to_string),
            credentials: self.credentials(reference),
        };
        let client = self
            .d
            .registry_client()
            .map_err(|e| BuildError::Backend(e.to_string()))?
            .clone();
        let s2 = store.clone();
        let r2 = reference.to_string();
        let handle = self
            .rt
            .spawn(async move { client.pull(s2, &r2, &opts, sink).await });
        let res = self.rt.block_on(async {
            while let Some(m) = prx.recv().await {
                out(m);
            }
            handle.await
        });
        match res {
            Ok(Ok(o)) => {
                self.d
                    .events
                    .image("pull", &o.image_id.to_string(), &o.reference);
                Ok(o.image_id)
            }
            Ok(Err(e)) => {
                // Offline with a local copy (`--pull`): build from what is here, as dockerd does.
                if let Ok(id) = store.resolve(reference) {
                    return Ok(id);
                }
                // The registry's message alone (e.g. a DNS failure) does not name the image.
                Err(BuildError::Backend(format!(
                    "unable to find image '{reference}' locally, and pulling it failed: {}",
                    crate::distribution::reg_err(e)
                )))
            }
            Err(e) => Err(be(e)),
        }
    }

    fn mount(&self, layer_id: &str, rootfs: &RootfsMount) -> berth_build::Result<PathBuf> {
        let mp = mount_dir(&self.d).join(layer_id);
        std::fs::create_dir_all(&mp).map_err(be)?;
        berth_runtime::mount_overlay(&mp, &rootfs.lowers, &rootfs.upper, &rootfs.work)
            .map_err(be)?;
        Ok(mp)
    }

    fn unmount(&self, _layer_id: &str, mountpoint: &Path) -> berth_build::Result<()> {
        berth_runtime::unmount(mountpoint).map_err(be)?;
        let _ = std::fs::remove_dir(mountpoint);
        Ok(())
    }

    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(&[u8])) -> berth_build::Result<i64> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let this: &DaemonBackend = self;
        // The output is forwarded while the step runs, so long steps stream live.
        self.rt.block_on(async {
            let run = this.run_async(spec, tx);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => {
                        while let Ok(b) = rx.try_recv() {
                            output(&b);
                        }
                        return r.map_err(|e| BuildError::Backend(e.to_string()));
                    }
                    Some(b) = rx.recv() => output(&b),
                }
            }
        })
    }

    fn remove_container(&self, container_id: &str) -> berth_build::Result<()> {
        self.rt
            .block_on(self.remove_async(container_id))
            .map_err(|e| BuildError::Backend(e.to_string()))
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn download(&self, url: &str, dest: &Path) -> berth_build::Result<Option<SystemTime>> {
        use std::io::Write;
        let mut file = std::fs::File::create(dest).map_err(be)?;
        self.rt.block_on(async {
            let resp = reqwest::get(url).await.map_err(be)?;
            if !resp.status().is_success() {
                return Err(be(format!(
                    "failed to GET {url} with status {}",
                    resp.status()
                )));
            }
            let modified = resp
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                .map(SystemTime::from);
            let mut resp = resp;
            while let Some(chunk) = resp.chunk().await.map_err(be)? {
                if self.cancelled() {
                    return Err(be("build cancelled"));
                }
                file.write_all(&chunk).map_err(be)?;
            }
            Ok(modified)
        })
    }
}
