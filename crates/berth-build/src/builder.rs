//! Build orchestration: runs the planned stages step by step against the image store and a
//! [`BuildBackend`] (the daemon's container path), with the cache, and streams the classic builder's
//! JSON lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_api::progress::{ErrorDetail, JsonMessage};
use berth_image::config::{go_arch, now_rfc3339};
use berth_image::{
    CommitOptions, ContainerConfig, History, ImageConfig, ImageId, ImageStore, RootfsMount,
};
use sha2::{Digest as _, Sha256};

use crate::cache::{CacheIndex, cache_key};
use crate::context::{BuildContext, Selected, resolve_in_root};
use crate::copy::{copy_selection, is_archive, mkdir_all_in_root, resolve_chown};
use crate::dockerignore::clean;
use crate::error::{BuildError, Result};
use crate::graph::{plan, stage_ref};
use crate::parser::{
    CommandForm, CopySpec, Dockerfile, Health, Instruction, MountSpec, ParsedInstruction, parse,
    parse_duration,
};
use crate::remote::{Checkout, GitUrl, is_git_url};
use crate::shell::Lexer;

/// The options of one build (`POST /build` query parameters).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `dockerfile`: path of the Dockerfile in the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// `t`: tags for the result (repeatable).
    pub tags: Vec<String>,
    /// `target`: the stage to build (default the last).
    pub target: Option<String>,
    /// `buildargs`: JSON object; a `null` value means "take the value from the ARG default".
    pub build_args: BTreeMap<String, Option<String>>,
    /// `labels`: JSON object, added to the final image.
    pub labels: BTreeMap<String, String>,
    /// `nocache`.
    pub no_cache: bool,
    /// `pull`: always try to pull base images.
    pub pull: bool,
    /// `rm` (default true): remove intermediate containers after a successful step.
    pub remove: bool,
    /// `forcerm`: remove intermediate containers even after a failed step.
    pub force_remove: bool,
    /// `q`: only the image ID is streamed.
    pub quiet: bool,
    /// `networkmode` for RUN (`default`, `none`, `host`, a network name).
    pub network_mode: Option<String>,
    /// `platform` (`linux/amd64`): sets TARGETPLATFORM and friends and is passed to pulls.
    pub platform: Option<String>,
    /// Resources and host settings for RUN containers (`memory`, `cpushares`, `shmsize`, ...).
    pub run: RunResources,
    /// Secrets for `RUN --mount=type=secret` (not a query parameter: berthd reads them from the
    /// `X-Berth-Build-Secrets` header).
    pub secrets: Secrets,
    /// `remote`: a git URL or an http(s) URL of a tar or a Dockerfile to use instead of the
    /// request body as the context.
    pub remote: Option<String>,
}

/// Build secrets by ID; their contents never show in `Debug` output, cache keys or layers.
#[derive(Clone, Default)]
pub struct Secrets(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Host-config settings of `POST /build` that apply to every RUN container (0/empty: unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunResources {
    /// `memory` (bytes).
    pub memory: i64,
    /// `memswap` (bytes, -1 unlimited).
    pub memory_swap: i64,
    /// `cpushares`.
    pub cpu_shares: i64,
    /// `cpusetcpus`.
    pub cpuset_cpus: String,
    /// `cpuperiod` (µs).
    pub cpu_period: i64,
    /// `cpuquota` (µs).
    pub cpu_quota: i64,
    /// `shmsize` (bytes).
    pub shm_size: i64,
    /// `extrahosts` (`host:ip`, comma-separated in the query).
    pub extra_hosts: Vec<String>,
    /// `cgroupparent`.
    pub cgroup_parent: String,
    /// `isolation` (ignored on Linux).
    pub isolation: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dockerfile: None,
            tags: Vec::new(),
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            no_cache: false,
            pull: false,
            remove: true,
            force_remove: false,
            quiet: false,
            network_mode: None,
            platform: None,
            run: RunResources::default(),
            secrets: Secrets::default(),
            remote: None,
        }
    }
}

/// A mount of a RUN step, resolved to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// `bind` (also cache mounts, bound from `<data-root>/build/mounts/`) or `tmpfs`.
    pub kind: String,
    /// Host path of a bind.
    pub source: Option<PathBuf>,
    /// Path inside the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Extra options (`size` of a tmpfs).
    pub options: BTreeMap<String, String>,
}

/// What the daemon must run for a RUN step.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The container ID to use (64 hex); its writable layer is already prepared in the image store
    /// with [`ImageStore::prepare_container_layer`] (calling it again returns the same mounts).
    pub container_id: String,
    /// The image the container runs.
    pub image: ImageId,
    /// The container layer's overlay mounts.
    pub rootfs: RootfsMount,
    /// The process: argv (the shell form already wrapped in the SHELL).
    pub args: Vec<String>,
    /// Environment: the image's plus the build args in scope (`KEY=value`); no default PATH added.
    pub env: Vec<String>,
    /// `USER` in effect (empty: root).
    pub user: String,
    /// `WORKDIR` in effect (empty: `/`).
    pub workdir: String,
    /// `--mount`s.
    pub mounts: Vec<RunMount>,
    /// `--network` or the build's `networkmode` (None: default bridge).
    pub network: Option<String>,
    /// The image's container config (hostname defaults, healthcheck are irrelevant for builds).
    pub config: ContainerConfig,
    /// The build's resources and host settings for the container.
    pub resources: RunResources,
}

/// What the builder needs from the daemon. Methods are called from the build's (blocking) thread.
pub trait BuildBackend: Send + Sync {
    /// The image for `FROM`/`COPY --from`: the local one, or pulled (always tried when
    /// `always_pull`), streaming pull progress to `out`.
    fn get_image(
        &self,
        reference: &str,
        platform: Option<&str>,
        always_pull: bool,
        out: &mut dyn FnMut(JsonMessage),
    ) -> Result<ImageId>;

    /// Mounts a prepared container layer (`layer_id`'s overlay `rootfs`) somewhere and returns the
    /// mount point. Used for COPY/ADD, WORKDIR and `COPY --from` sources.
    fn mount(&self, layer_id: &str, rootfs: &RootfsMount) -> Result<PathBuf>;

    /// Unmounts what [`BuildBackend::mount`] mounted.
    fn unmount(&self, layer_id: &str, mountpoint: &Path) -> Result<()>;

    /// Runs a RUN step to completion as a container over the prepared layer, streaming its stdout
    /// and stderr to `output`; returns the exit code. The container layer must be left in place
    /// (the builder commits it).
    fn run(&self, spec: &RunSpec, output: &mut dyn FnMut(&[u8])) -> Result<i64>;

    /// Forgets the container of a RUN step (its record, not its layer, which the builder removes).
    fn remove_container(&self, _container_id: &str) -> Result<()> {
        Ok(())
    }

    /// True once the client has gone away: the build stops before the next step.
    fn cancelled(&self) -> bool {
        false
    }

    /// Downloads `url` (`ADD <url>`) into the file `dest`, returning the response's
    /// `Last-Modified`. A non-2xx answer is an error.
    fn download(&self, url: &str, _dest: &Path) -> Result<Option<std::time::SystemTime>> {
        Err(BuildError::Backend(format!(
            "cannot download {url}: this backend has no HTTP client"
        )))
    }
}

/// The result of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The image built.
    pub image_id: ImageId,
    /// The tags set (familiar form).
    pub tags: Vec<String>,
}

/// Turns a build error into the stream's last line
/// (`{"errorDetail":{"code":3,"message":"..."},"error":"..."}`).
pub fn error_message(e: &BuildError) -> JsonMessage {
    let mut m = JsonMessage::error(e.to_string());
    m.error_detail = Some(ErrorDetail {
        code: e.code(),
        message: e.to_string(),
    });
    m
}

/// The builder of one daemon: shares the image store and the cache index.
pub struct Builder {
    store: Arc<ImageStore>,
    cache: Arc<CacheIndex>,
    backend: Arc<dyn BuildBackend>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").finish_non_exhaustive()
    }
}

const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(format!(
        "{}.{}.{}.{:?}",
        t.as_nanos(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id()
    ));
    hex::encode(h.finalize())
}

fn short(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    &h[..h.len().min(12)]
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_q(v: &[String]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", parts.join(" "))
}

/// State of the stage being built.
struct Stage {
    image: ImageId,
    config: ImageConfig,
    /// Declared ARGs in order, with their values.
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
}

impl Stage {
    fn cc(&self) -> ContainerConfig {
        self.config.config.clone().unwrap_or_default()
    }
    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }
    fn env_has(&self, k: &str) -> bool {
        self.config.config.as_ref().is_some_and(|c| {
            c.env
                .iter()
                .any(|e| e.split_once('=').map_or(e.as_str(), |x| x.0) == k)
        })
    }
    /// Variables for expansion: ARGs, then ENV (which wins).
    fn vars(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        if let Some(c) = &self.config.config {
            v.extend(c.env.iter().cloned());
        }
        v
    }
}

struct Run<'a> {
    b: &'a Builder,
    ctx: &'a BuildContext,
    opts: &'a BuildOptions,
    df: Dockerfile,
    lex: Lexer,
    out: &'a mut dyn FnMut(JsonMessage),
    step: usize,
    total: usize,
    stage_images: BTreeMap<usize, ImageId>,
    meta: Vec<String>,
    used_args: BTreeSet<String>,
    scratch: Option<ImageId>,
    platform: String,
}

impl Builder {
    /// A builder over the daemon's image store, cache index and backend.
    pub fn new(
        store: Arc<ImageStore>,
        cache: Arc<CacheIndex>,
        backend: Arc<dyn BuildBackend>,
    ) -> Builder {
        Builder {
            store,
            cache,
            backend,
        }
    }

    fn marker(&self, id: &str) -> PathBuf {
        self.cache.dir().join("layers").join(id)
    }

    /// Prepares a container layer over `image`, recorded in `<data-root>/build/layers/` until
    /// it is dropped so that [`Builder::recover`] can remove it after a crash.
    fn prepare(&self, image: &ImageId) -> Result<(String, RootfsMount)> {
        let id = new_id();
        let m = self.marker(&id);
        if let Some(d) = m.parent() {
            std::fs::create_dir_all(d).map_err(|e| BuildError::io("create build/layers", e))?;
        }
        std::fs::write(&m, image.as_str()).map_err(|e| BuildError::io("record build layer", e))?;
        match self.store.prepare_container_layer(&id, image) {
            Ok(r) => Ok((id, r)),
            Err(e) => {
                let _ = std::fs::remove_file(&m);
                Err(e.into())
            }
        }
    }

    fn drop_layer(&self, id: &str) {
        if self.store.remove_container_layer(id).is_ok() {
            self.forget_layer(id);
        }
    }

    fn forget_layer(&self, id: &str) {
        let _ = std::fs::remove_file(self.marker(id));
    }

    /// Removes the container layers of builds that were running when the daemon stopped (call at
    /// start, after unmounting anything left under the backend's mount directory). Returns their IDs.
    pub fn recover(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.cache.dir().join("layers")) else {
            return out;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if self.store.remove_container_layer(&id).is_ok() {
                let _ = std::fs::remove_file(e.path());
                out.push(id);
            }
        }
        out
    }

    /// The cache index (for `builder prune` and `system df`).
    pub fn cache(&self) -> &CacheIndex {
        &self.cache
    }

    /// Builds `ctx` with `opts`, streaming progress to `out`. On error nothing more is streamed:
    /// send [`error_message`] as the last line (or, before any output, an HTTP error).
    pub fn build(
        &self,
        ctx: &BuildContext,
        opts: &BuildOptions,
        out: &mut dyn FnMut(JsonMessage),
    ) -> Result<BuildResult> {
        let df = parse(ctx.dockerfile())?;
        let platform = opts
            .platform
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("linux/{}", go_arch()));
        let lex = Lexer::new(df.escape);
        let mut run = Run {
            b: self,
            ctx,
            opts,
            df,
            lex,
            out,
            step: 0,
            total: 0,
            stage_images: BTreeMap::new(),
            meta: Vec::new(),
            used_args: BTreeSet::new(),
            scratch: None,
            platform,
        };
        let r = run.build();
        let _ = self.cache.flush();
        r
    }
}

fn platform_args(platform: &str) -> Vec<(String, String)> {
    let host = format!("linux/{}", go_arch());
    let mut out = Vec::new();
    for (prefix, p) in [("TARGET", platform), ("BUILD", host.as_str())] {
        let mut parts = p.split('/');
        let os = parts.next().unwrap_or("linux").to_string();
        let arch = parts.next().unwrap_or(go_arch()).to_string();
        let variant = parts.next().unwrap_or("").to_string();
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), os));
        out.push((format!("{prefix}ARCH"), arch));
        out.push((format!("{prefix}VARIANT"), variant));
    }
    out
}

impl Run<'_> {
    fn say(&mut self, s: impl Into<String>) {
        if !self.opts.quiet {
            (self.out)(JsonMessage {
                stream: Some(s.into()),
                ..Default::default()
            });
        }
    }

    fn at(&self, line: usize, e: impl std::fmt::Display) -> BuildError {
        BuildError::at(line, e.to_string())
    }

    fn expand(&self, st: &Stage, line: usize, w: &str) -> Result<String> {
        self.lex
            .process_word(w, &st.vars())
            .map_err(|e| self.at(line, e))
    }

    fn build(&mut self) -> Result<BuildResult> {
        // Global scope: automatic platform args, then the ARGs before the first FROM.
        for (k, v) in platform_args(&self.platform) {
            self.meta.push(format!("{k}={v}"));
        }
        for pi in self.df.meta_args.clone() {
            let Instruction::Arg(list) = &pi.inst else {
                continue;
            };
            for (k, default) in list {
                let v = match self.opts.build_args.get(k) {
                    Some(Some(v)) => {
                        self.used_args.insert(k.clone());
                        Some(v.clone())
                    }
                    _ => match default {
                        Some(d) => Some(
                            self.lex
                                .process_word(d, &self.meta)
                                .map_err(|e| self.at(pi.line, e))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = v {
                    self.meta.push(format!("{k}={v}"));
                } else {
                    self.meta.push(format!("{k}\u{0}"));
                }
            }
        }
        let meta_lookup: Vec<String> = self
            .meta
            .iter()
            .filter(|m| !m.ends_with('\u{0}'))
            .cloned()
            .collect();
        let p = plan(&self.df, self.opts.target.as_deref(), &meta_lookup)?;
        if !self.opts.labels.is_empty() {
            // dockerd appends a LABEL instruction to the target stage for `--label`.
            let mut line = String::from("LABEL");
            let mut kv = Vec::new();
            for (k, v) in &self.opts.labels {
                line.push_str(&format!(
                    " {}='{}'",
                    serde_json::to_string(k).unwrap_or_default(),
                    v
                ));
                kv.push((
                    serde_json::to_string(k).unwrap_or_default(),
                    format!("'{v}'"),
                ));
            }
            let last_line = self.df.stages[p.target].from.line;
            self.df.stages[p.target]
                .instructions
                .push(ParsedInstruction {
                    line: last_line,
                    original: line,
                    inst: Instruction::Label(kv),
                });
        }
        self.total = p
            .order
            .iter()
            .map(|s| 1 + self.df.stages[*s].instructions.len())
            .sum();
        self.run_stages(&p)?;
        let id = self.stage_images.get(&p.target).cloned().ok_or_else(|| {
            BuildError::Invalid("No image was generated. Is your Dockerfile empty?".into())
        })?;
        let unused: Vec<String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unused.is_empty() {
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                unused.join(" ")
            ));
        }
        (self.out)(JsonMessage {
            aux: Some(serde_json::json!({ "ID": id.to_string() })),
            ..Default::default()
        });
        self.say(format!("Successfully built {}\n", short(id.as_str())));
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            self.b.store.tag(id.as_str(), t)?;
            let fam = berth_image::Reference::parse_tagged(t)
                .map(|r| r.familiar_string())
                .unwrap_or_else(|_| t.clone());
            self.say(format!("Successfully tagged {fam}\n"));
            tags.push(fam);
        }
        if self.opts.quiet {
            (self.out)(JsonMessage {
                stream: Some(format!("{id}\n")),
                ..Default::default()
            });
        }
        Ok(BuildResult { image_id: id, tags })
    }

    /// Runs the planned stages: a wave's independent stages in parallel threads, each buffering
    /// its stream, flushed in stage order so the output reads like a sequential build (the stage
    /// that is next in order streams live).
    fn run_stages(&mut self, p: &crate::graph::Plan) -> Result<()> {
        let mut offsets = BTreeMap::new();
        let mut n = 0;
        for &s in &p.order {
            offsets.insert(s, n);
            n += 1 + self.df.stages[s].instructions.len();
        }
        type Done = (Vec<JsonMessage>, Result<ImageId>, BTreeSet<String>);
        let mut done: BTreeMap<usize, Done> = BTreeMap::new();
        let mut flushed = 0;
        for wave in &p.waves {
            if wave.len() == 1 && p.order.get(flushed) == Some(&wave[0]) {
                let s = wave[0];
                self.step = offsets[&s];
                let id = self.stage(s)?;
                self.stage_images.insert(s, id);
                flushed += 1;
            } else {
                let results: Vec<(usize, Done)> = std::thread::scope(|sc| {
                    let handles: Vec<_> = wave
                        .iter()
                        .map(|&s| {
                            let (b, ctx, opts) = (self.b, self.ctx, self.opts);
                            let (df, lex, total) = (self.df.clone(), self.lex, self.total);
                            let images = self.stage_images.clone();
                            let meta = self.meta.clone();
                            let scratch = self.scratch.clone();
                            let platform = self.platform.clone();
                            let step = offsets[&s];
                            let h = sc.spawn(move || {
                                let mut buf = Vec::new();
                                let (r, used) = {
                                    let mut push = |m: JsonMessage| buf.push(m);
                                    let mut sub = Run {
                                        b,
                                        ctx,
                                        opts,
                                        df,
                                        lex,
                                        out: &mut push,
                                        step,
                                        total,
                                        stage_images: images,
                                        meta,
                                        used_args: BTreeSet::new(),
                                        scratch,
                                        platform,
                                    };
                                    let r = sub.stage(s);
                                    (r, std::mem::take(&mut sub.used_args))
                                };
                                (buf, r, used)
                            });
                            (s, h)
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|(s, h)| {
                            let d = h.join().unwrap_or_else(|_| {
                                (
                                    Vec::new(),
                                    Err(BuildError::Backend("build stage thread panicked".into())),
                                    BTreeSet::new(),
                                )
                            });
                            (s, d)
                        })
                        .collect()
                });
                for (s, d) in results {
                    if let Ok(id) = &d.1 {
                        self.stage_images.insert(s, id.clone());
                    }
                    done.insert(s, d);
                }
            }
            // Flush finished stages in order; the first failure ends the build.
            while let Some(s) = p.order.get(flushed).copied() {
                let Some((msgs, r, used)) = done.remove(&s) else {
                    break;
                };
                for m in msgs {
                    (self.out)(m);
                }
                self.used_args.extend(used);
                r?;
                flushed += 1;
            }
            if let Some((&s, _)) = done.iter().find(|(_, d)| d.1.is_err()) {
                let (msgs, r, _) = done.remove(&s).expect("present");
                for m in msgs {
                    (self.out)(m);
                }
                r?;
            }
        }
        Ok(())
    }

    fn check_cancel(&self) -> Result<()> {
        if self.b.backend.cancelled() {
            return Err(BuildError::Cancelled);
        }
        Ok(())
    }

    fn step_line(&mut self, original: &str) {
        self.step += 1;
        let s = format!("Step {}/{} : {}\n", self.step, self.total, original);
        self.say(s);
    }

    /// The empty image `FROM scratch` builds on (no layers, deterministic ID).
    fn scratch(&mut self) -> Result<ImageId> {
        if let Some(id) = &self.scratch {
            return Ok(id.clone());
        }
        let (os, arch) = {
            let mut p = self.platform.split('/');
            (
                p.next().unwrap_or("linux").to_string(),
                p.next().unwrap_or(go_arch()).to_string(),
            )
        };
        let json = serde_json::json!({
            "architecture": arch,
            "os": os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let bytes = serde_json::to_vec(&json).map_err(|e| BuildError::Backend(e.to_string()))?;
        let sum = self.b.store.add_image(
            &bytes,
            &mut |_| Err(berth_image::Error::Internal("scratch has no layers".into())),
            &[],
        )?;
        let id = ImageId::parse(&sum.id)?;
        self.scratch = Some(id.clone());
        Ok(id)
    }

    fn resolve_image(
        &mut self,
        reference: &str,
        platform: Option<&str>,
        always: bool,
    ) -> Result<ImageId> {
        let b = self.b;
        let quiet = self.opts.quiet;
        let out = &mut *self.out;
        b.backend.get_image(reference, platform, always, &mut |m| {
            if !quiet {
                out(m)
            }
        })
    }

    fn stage(&mut self, idx: usize) -> Result<ImageId> {
        let s = self.df.stages[idx].clone();
        self.check_cancel()?;
        self.step_line(&s.from.original);
        let meta: Vec<String> = self
            .meta
            .iter()
            .filter(|m| !m.ends_with('\u{0}'))
            .cloned()
            .collect();
        let base = self
            .lex
            .process_word(&s.base, &meta)
            .map_err(|e| self.at(s.from.line, e))?;
        let platform = match &s.platform {
            Some(p) => Some(
                self.lex
                    .process_word(p, &meta)
                    .map_err(|e| self.at(s.from.line, e))?,
            ),
            None => self.opts.platform.clone(),
        };
        let image = if base.eq_ignore_ascii_case("scratch") {
            self.scratch()?
        } else if let Some(d) = stage_ref(&self.df, &base, idx, false) {
            self.stage_images
                .get(&d)
                .cloned()
                .ok_or_else(|| self.at(s.from.line, format!("stage {base} was not built")))?
        } else {
            if base.is_empty() {
                return Err(self.at(
                    s.from.line,
                    "base name (${BASE}) should not be blank".replace("${BASE}", &s.base),
                ));
            }
            self.resolve_image(&base, platform.as_deref(), self.opts.pull)?
        };
        self.say(format!(" ---> {}\n", short(image.as_str())));
        let mut config = self.b.store.config(&image)?;
        // As dockerd's initializeStage: a base without PATH gets the default one, so every
        // later step (and the result) has it.
        let cc = config.config.get_or_insert_with(Default::default);
        if !cc.env.iter().any(|e| e.starts_with("PATH=")) {
            cc.env.push(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            );
        }
        let mut st = Stage {
            image,
            config,
            args: Vec::new(),
            cmd_set: false,
        };
        // ONBUILD triggers of the base run first, then are cleared.
        let triggers = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.on_build.clone())
            .unwrap_or_default();
        if !triggers.is_empty() {
            self.say(format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            if let Some(c) = st.config.config.as_mut() {
                c.on_build = None;
            }
            for t in triggers {
                let df =
                    parse(&format!("FROM scratch\n{t}\n")).map_err(|e| self.at(s.from.line, e))?;
                let Some(pi) = df.stages[0].instructions.first().cloned() else {
                    continue;
                };
                let pi = ParsedInstruction {
                    line: s.from.line,
                    ..pi
                };
                self.dispatch(&mut st, &pi)?;
            }
        }
        for pi in &s.instructions {
            self.check_cancel()?;
            self.step_line(&pi.original);
            self.dispatch(&mut st, pi)?;
        }
        Ok(st.image)
    }

    fn cached(&mut self, key: &str) -> Option<(ImageId, ImageConfig)> {
        if self.opts.no_cache {
            return None;
        }
        let rec = self.b.cache.get(key)?;
        let id = ImageId::parse(&rec.image_id).ok()?;
        match self.b.store.config(&id) {
            Ok(c) => {
                let _ = self.b.cache.touch(key);
                Some((id, c))
            }
            Err(_) => {
                let _ = self.b.cache.remove(key);
                None
            }
        }
    }

    fn use_cache(&mut self, st: &mut Stage, key: &str) -> bool {
        match self.cached(key) {
            Some((id, c)) => {
                self.say(" ---> Using cache\n");
                self.say(format!(" ---> {}\n", short(id.as_str())));
                st.image = id;
                st.config = c;
                true
            }
            None => false,
        }
    }

    fn image_size(&self, id: &ImageId) -> i64 {
        self.b
            .store
            .list(true)
            .into_iter()
            .find(|s| s.id == id.as_str())
            .map(|s| s.size)
            .unwrap_or(0)
    }

    /// A metadata-only step: a new config with an `empty_layer` history entry, no container.
    fn commit_meta(&mut self, st: &mut Stage, cc: ContainerConfig, comment: &str) -> Result<()> {
        self.commit_meta_as(st, cc, comment, None)
    }

    /// dockerd commits a metadata step through a container it creates and removes; its lines
    /// are printed the same (the ID names the step's would-be container or its layer).
    fn intermediate(&mut self, id: &str, created: bool) {
        if created {
            self.say(format!(" ---> Running in {}\n", short(id)));
        } else if self.opts.remove || self.opts.force_remove {
            self.say(format!("Removing intermediate container {}\n", short(id)));
        }
    }

    fn commit_meta_as(
        &mut self,
        st: &mut Stage,
        cc: ContainerConfig,
        comment: &str,
        running: Option<String>,
    ) -> Result<()> {
        // SHELL's own entry already shows the new shell, as in dockerd.
        let shell = cc
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| st.shell());
        let created_by = format!("{} #(nop)  {}", shell.join(" "), comment);
        let key = cache_key(
            st.image.as_str(),
            &format!(
                "{created_by}\n{}",
                serde_json::to_string(&cc).unwrap_or_default()
            ),
            &[],
            None,
        );
        if self.use_cache(st, &key) {
            return Ok(());
        }
        let running = match running {
            Some(id) => id,
            None => {
                let id = new_id();
                self.intermediate(&id, true);
                id
            }
        };
        let created = now_rfc3339();
        let mut cfg = st.config.clone();
        cfg.extra.remove("container");
        cfg.extra.remove("container_config");
        cfg.config = Some(cc);
        cfg.created = Some(created.clone());
        cfg.docker_version = Some(concat!("berth-", env!("CARGO_PKG_VERSION")).to_string());
        cfg.history.push(History {
            created: Some(created),
            created_by: Some(created_by.clone()),
            author: cfg.author.clone(),
            comment: None,
            empty_layer: true,
        });
        let bytes = serde_json::to_vec(&cfg).map_err(|e| BuildError::Backend(e.to_string()))?;
        // With its parent recorded, so it is an intermediate image (not a dangling `<none>`).
        let id = self.b.store.add_config_image(Some(&st.image), &bytes)?;
        self.b
            .cache
            .insert(&key, id.as_str(), st.image.as_str(), &created_by, 0)?;
        self.intermediate(&running, false);
        self.say(format!(" ---> {}\n", short(id.as_str())));
        st.image = id;
        st.config = cfg;
        Ok(())
    }

    /// Commits a prepared container layer as the step's image and removes the layer.
    fn commit_layer(
        &mut self,
        st: &mut Stage,
        layer: &str,
        cc: ContainerConfig,
        created_by: &str,
        key: &str,
    ) -> Result<()> {
        let parent_size = self.image_size(&st.image);
        let sum = self.b.store.commit(
            layer,
            None,
            &CommitOptions {
                config: Some(cc),
                changes: Vec::new(),
                comment: None,
                author: st.config.author.clone(),
                created_by: Some(created_by.to_string()),
            },
        );
        self.b.drop_layer(layer);
        let sum = sum?;
        let id = ImageId::parse(&sum.id)?;
        self.b.cache.insert(
            key,
            id.as_str(),
            st.image.as_str(),
            created_by,
            (sum.size - parent_size).max(0),
        )?;
        st.config = self.b.store.config(&id)?;
        st.image = id;
        Ok(())
    }

    /// Prepares and mounts a fresh container layer over `image`.
    fn mount_layer(&self, image: &ImageId) -> Result<(String, PathBuf)> {
        let (layer, rootfs) = self.b.prepare(image)?;
        match self.b.backend.mount(&layer, &rootfs) {
            Ok(p) => Ok((layer, p)),
            Err(e) => {
                self.b.drop_layer(&layer);
                Err(e)
            }
        }
    }

    fn unmount_layer(&self, layer: &str, path: &Path, remove: bool) -> Result<()> {
        let r = self.b.backend.unmount(layer, path);
        if remove {
            self.b.drop_layer(layer);
        }
        r
    }

    fn dispatch(&mut self, st: &mut Stage, pi: &ParsedInstruction) -> Result<()> {
        let line = pi.line;
        let mut cc = st.cc();
        match &pi.inst {
            Instruction::From { .. } => Err(self.at(line, "FROM inside a stage")),
            Instruction::Env(kvs) => {
                let mut parts = Vec::new();
                for (k, v) in kvs {
                    let k = self.expand(st, line, k)?;
                    let v = self.expand(st, line, v)?;
                    cc.env
                        .retain(|e| e.split_once('=').map_or(e.as_str(), |x| x.0) != k);
                    cc.env.push(format!("{k}={v}"));
                    // Every pair is expanded with the environment before the instruction
                    // (`ENV abc=bye def=$abc` gives def the old abc), as Docker documents.
                    parts.push(format!("{k}={v}"));
                }
                self.commit_meta(st, cc, &format!("ENV {}", parts.join(" ")))
            }
            Instruction::Label(kvs) => {
                let mut parts = Vec::new();
                let labels = cc.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in kvs {
                    let k = self
                        .lex
                        .process_word(k, &st.vars())
                        .map_err(|e| self.at(line, e))?;
                    let v = self
                        .lex
                        .process_word(v, &st.vars())
                        .map_err(|e| self.at(line, e))?;
                    parts.push(format!("{k}={v}"));
                    labels.insert(k, v);
                }
                self.commit_meta(st, cc, &format!("LABEL {}", parts.join(" ")))
            }
            Instruction::Arg(list) => {
                let mut parts = Vec::new();
                for (k, default) in list {
                    let default = match default {
                        Some(d) => Some(self.expand(st, line, d)?),
                        None => None,
                    };
                    let value = match self.opts.build_args.get(k) {
                        Some(Some(v)) => {
                            self.used_args.insert(k.clone());
                            Some(v.clone())
                        }
                        _ => default.clone().or_else(|| {
                            // Inherit the global value of a meta ARG or an automatic platform arg.
                            self.meta.iter().rev().find_map(|m| {
                                let (mk, mv) = m.split_once('=')?;
                                (mk == k).then(|| mv.to_string())
                            })
                        }),
                    };
                    if self.opts.build_args.contains_key(k) {
                        self.used_args.insert(k.clone());
                    }
                    st.args.retain(|(n, _)| n != k);
                    st.args.push((k.clone(), value));
                    parts.push(match &default {
                        Some(d) => format!("{k}={d}"),
                        None => k.clone(),
                    });
                }
                self.commit_meta(st, cc, &format!("ARG {}", parts.join(" ")))
            }
            Instruction::Cmd(f) | Instruction::Entrypoint(f) => {
                let is_cmd = matches!(pi.inst, Instruction::Cmd(_));
                let v = match f {
                    CommandForm::Exec(v) => v.clone(),
                    CommandForm::Shell(s) => {
                        let mut v = st.shell();
                        v.push(s.clone());
                        v
                    }
                };
                let comment = format!("{} {}", if is_cmd { "CMD" } else { "ENTRYPOINT" }, go_q(&v));
                if is_cmd {
                    cc.cmd = Some(v);
                    st.cmd_set = true;
                } else {
                    cc.entrypoint = Some(v);
                    if !st.cmd_set {
                        cc.cmd = None;
                    }
                }
                self.commit_meta(st, cc, &comment)
            }
            Instruction::Expose(ports) => {
                let mut words = Vec::new();
                let map = cc.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    let p = self
                        .lex
                        .process_word(p, &st.vars())
                        .map_err(|e| self.at(line, e))?;
                    let (num, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    let range = match num.split_once('-') {
                        Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                        None => (num.parse::<u16>(), num.parse::<u16>()),
                    };
                    let (Ok(a), Ok(b)) = range else {
                        return Err(self.at(line, format!("invalid containerPort: {num}")));
                    };
                    for port in a..=b {
                        map.insert(format!("{port}/{proto}"), serde_json::json!({}));
                        words.push(format!("{port}/{proto}"));
                    }
                }
                // dockerd lists the parsed ports, sorted as strings.
                words.sort();
                words.dedup();
                self.commit_meta(st, cc, &format!("EXPOSE {}", words.join(" ")))
            }
            Instruction::Volume(vols) => {
                let mut words = Vec::new();
                let map = cc.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    let v = self
                        .lex
                        .process_word(v, &st.vars())
                        .map_err(|e| self.at(line, e))?;
                    if v.trim().is_empty() {
                        return Err(self.at(line, "VOLUME specified can not be an empty string"));
                    }
                    map.insert(v.clone(), serde_json::json!({}));
                    words.push(v);
                }
                self.commit_meta(st, cc, &format!("VOLUME [{}]", words.join(" ")))
            }
            Instruction::User(u) => {
                cc.user = self.expand(st, line, u)?;
                let c = format!("USER {}", cc.user);
                self.commit_meta(st, cc, &c)
            }
            Instruction::StopSignal(s) => {
                cc.stop_signal = self.expand(st, line, s)?;
                let c = format!("STOPSIGNAL {}", cc.stop_signal);
                self.commit_meta(st, cc, &c)
            }
            Instruction::Maintainer(m) => {
                st.config.author = Some(m.clone());
                self.commit_meta(st, cc, &format!("MAINTAINER {m}"))
            }
            Instruction::Shell(v) => {
                cc.shell = Some(v.clone());
                self.commit_meta(st, cc, &format!("SHELL [{}]", v.join(" ")))
            }
            Instruction::Onbuild(t) => {
                cc.on_build.get_or_insert_with(Vec::new).push(t.clone());
                self.commit_meta(st, cc, &format!("ONBUILD {t}"))
            }
            Instruction::Healthcheck(h) => {
                let (hc, comment) = match h {
                    Health::None => (
                        serde_json::json!({"Test": ["NONE"]}),
                        "HEALTHCHECK &{[\"NONE\"] \"0s\" \"0s\" \"0s\" \"0s\" '\\x00'}".to_string(),
                    ),
                    Health::Cmd {
                        cmd,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test = match cmd {
                            CommandForm::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            CommandForm::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        };
                        let mut m = serde_json::Map::new();
                        m.insert("Test".into(), serde_json::json!(test));
                        let mut shown = Vec::new();
                        for (name, v) in [
                            ("Interval", interval),
                            ("Timeout", timeout),
                            ("StartPeriod", start_period),
                            ("StartInterval", start_interval),
                        ] {
                            let d = match v {
                                Some(s) => {
                                    parse_duration(s).filter(|d| *d >= 0).ok_or_else(|| {
                                        self.at(line, format!("time: invalid duration {s:?}"))
                                    })?
                                }
                                None => 0,
                            };
                            if d != 0 {
                                m.insert(name.into(), serde_json::json!(d));
                            }
                            shown.push(format!("{:?}", v.clone().unwrap_or_else(|| "0s".into())));
                        }
                        let r = match retries {
                            Some(r) => {
                                r.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
                                    self.at(line, format!("invalid --retries value: {r}"))
                                })?
                            }
                            None => 0,
                        };
                        if r != 0 {
                            m.insert("Retries".into(), serde_json::json!(r));
                        }
                        (
                            serde_json::Value::Object(m),
                            format!(
                                "HEALTHCHECK &{{{} {} '\\x{:02x}'}}",
                                go_q(&test),
                                shown.join(" "),
                                r
                            ),
                        )
                    }
                };
                cc.healthcheck = Some(hc);
                self.commit_meta(st, cc, &comment)
            }
            Instruction::Workdir(w) => {
                let w = self.expand(st, line, w)?;
                let cur = if cc.working_dir.is_empty() {
                    "/".to_string()
                } else {
                    cc.working_dir.clone()
                };
                let dir = clean(&if w.starts_with('/') {
                    w
                } else {
                    format!("{cur}/{w}")
                });
                cc.working_dir = dir.clone();
                let comment = format!("WORKDIR {dir}");
                // SHELL's own entry already shows the new shell, as in dockerd.
                let shell = cc
                    .shell
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| st.shell());
                let created_by = format!("{} #(nop)  {}", shell.join(" "), comment);
                let key = cache_key(
                    st.image.as_str(),
                    &format!(
                        "{created_by}\n{}",
                        serde_json::to_string(&cc).unwrap_or_default()
                    ),
                    &[],
                    None,
                );
                if self.use_cache(st, &key) {
                    return Ok(());
                }
                // Create the directory if the image lacks it (a layer), else only record it.
                let (layer, root) = self.mount_layer(&st.image)?;
                self.intermediate(&layer, true);
                let exists = resolve_in_root(&root, &dir, true)
                    .map(|p| p.is_dir())
                    .unwrap_or(false);
                let made = if exists {
                    Ok(())
                } else {
                    mkdir_all_in_root(&root, &dir, (0, 0)).map(|_| ())
                };
                self.unmount_layer(&layer, &root, exists || made.is_err())?;
                made?;
                if exists {
                    return self.commit_meta_as(st, cc, &comment, Some(layer));
                }
                self.commit_layer(st, &layer, cc, &created_by, &key)?;
                self.intermediate(&layer, false);
                self.say(format!(" ---> {}\n", short(st.image.as_str())));
                Ok(())
            }
            Instruction::Copy(spec) => self.copy(st, line, spec, false),
            Instruction::Add(spec) => self.copy(st, line, spec, true),
            Instruction::Run {
                cmd,
                mounts,
                network,
                heredocs,
            } => {
                let args = match cmd {
                    CommandForm::Exec(v) => v.clone(),
                    CommandForm::Shell(s) => {
                        let mut v = st.shell();
                        let body = if heredocs.len() == 1
                            && crate::parser::parse_words(s, self.df.escape).len() == 1
                        {
                            // `RUN <<EOF`: the heredoc is the script.
                            heredocs[0].content.clone()
                        } else {
                            let mut b = s.clone();
                            for h in heredocs {
                                b.push('\n');
                                b.push_str(&h.content);
                                b.push_str(&h.name);
                            }
                            b
                        };
                        v.push(body);
                        v
                    }
                };
                // `RUN <<EOF` whose body starts with `#!` runs as a script file, as BuildKit does.
                let script = match cmd {
                    CommandForm::Shell(s)
                        if heredocs.len() == 1
                            && heredocs[0].content.starts_with("#!")
                            && crate::parser::parse_words(s, self.df.escape).len() == 1 =>
                    {
                        Some(heredocs[0].clone())
                    }
                    _ => None,
                };
                // Build args in scope (not overridden by ENV); proxies run but are not recorded.
                let mut recorded = Vec::new();
                let mut env_args = Vec::new();
                for (k, v) in &st.args {
                    if let Some(v) = v
                        && !st.env_has(k)
                    {
                        recorded.push(format!("{k}={v}"));
                        env_args.push(format!("{k}={v}"));
                    }
                }
                for p in PROXY_ARGS {
                    if let Some(Some(v)) = self.opts.build_args.get(*p)
                        && !st.args.iter().any(|(k, _)| k == p)
                    {
                        env_args.push(format!("{p}={v}"));
                    }
                }
                recorded.sort();
                let cmdline = args.join(" ");
                let created_by = if recorded.is_empty() {
                    cmdline.clone()
                } else {
                    format!("|{} {} {}", recorded.len(), recorded.join(" "), cmdline)
                };
                let network = match network {
                    Some(n) => Some(n.clone()),
                    None => self.opts.network_mode.clone(),
                };
                let key = cache_key(
                    st.image.as_str(),
                    &format!("RUN {created_by}\nmounts={mounts:?}\nnetwork={network:?}"),
                    &[],
                    None,
                );
                if self.use_cache(st, &key) {
                    return Ok(());
                }
                let mut helpers: Vec<(String, PathBuf)> = Vec::new();
                let res = self.run_step(
                    st,
                    line,
                    &args,
                    script.as_ref(),
                    &env_args,
                    mounts,
                    network,
                    &created_by,
                    &key,
                    &mut helpers,
                );
                for (l, p) in helpers {
                    let _ = self.unmount_layer(&l, &p, true);
                }
                res
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        st: &mut Stage,
        line: usize,
        args: &[String],
        script: Option<&crate::parser::Heredoc>,
        env_args: &[String],
        mounts: &[MountSpec],
        network: Option<String>,
        created_by: &str,
        key: &str,
        helpers: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        let cc = st.cc();
        let mut run_mounts = Vec::new();
        let mut secrets = Vec::new();
        for m in mounts {
            if m.kind == "secret" {
                if let Some(rm) = self.secret_mount(st, line, m, &mut secrets)? {
                    run_mounts.push(rm);
                }
                continue;
            }
            run_mounts.push(self.run_mount(st, line, m, helpers)?);
        }
        let mut exec_args = args.to_vec();
        let mut _script_dir = None;
        if let Some(h) = script {
            let tmp = self.b.cache.tmp_dir();
            std::fs::create_dir_all(&tmp).map_err(|e| BuildError::io("create build/tmp", e))?;
            let dir = tempfile::Builder::new()
                .prefix("heredoc-")
                .tempdir_in(&tmp)
                .map_err(|e| BuildError::io("heredoc dir", e))?;
            let f = dir.path().join(&h.name);
            std::fs::write(&f, &h.content).map_err(|e| BuildError::io("write heredoc", e))?;
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| BuildError::io("chmod heredoc", e))?;
            let target = format!("/dev/pipes/{}", h.name);
            run_mounts.push(RunMount {
                kind: "bind".into(),
                source: Some(f),
                target: target.clone(),
                readonly: true,
                options: BTreeMap::new(),
            });
            exec_args = vec![target];
            _script_dir = Some(dir);
        }
        let (id, rootfs) = self.b.prepare(&st.image)?;
        let layer_dirs = rootfs.clone();
        self.intermediate(&id, true);
        let mut env = cc.env.clone();
        env.extend(env_args.iter().cloned());
        let spec = RunSpec {
            container_id: id.clone(),
            image: st.image.clone(),
            rootfs,
            args: exec_args,
            env,
            user: cc.user.clone(),
            workdir: cc.working_dir.clone(),
            mounts: run_mounts,
            network,
            config: cc.clone(),
            resources: self.opts.run.clone(),
        };
        let backend = self.b.backend.clone();
        let quiet = self.opts.quiet;
        let res = {
            let out = &mut *self.out;
            backend.run(&spec, &mut |b: &[u8]| {
                if !quiet {
                    out(JsonMessage {
                        stream: Some(String::from_utf8_lossy(b).into_owned()),
                        ..Default::default()
                    })
                }
            })
        };
        // The secrets' files go now; the mount points the runtime made for them must not be
        // committed.
        drop(secrets);
        for m in spec
            .mounts
            .iter()
            .filter(|m| m.options.contains_key(SECRET))
        {
            strip_mount_point(&layer_dirs, &m.target);
        }
        let code = match res {
            Ok(c) => c,
            Err(e) => {
                let _ = backend.remove_container(&id);
                self.b.drop_layer(&id);
                return Err(e);
            }
        };
        if code != 0 {
            if self.opts.force_remove {
                let _ = backend.remove_container(&id);
                self.b.drop_layer(&id);
            } else {
                // Kept for debugging, as dockerd keeps it: it is the daemon's container now.
                self.b.forget_layer(&id);
            }
            return Err(BuildError::NonZero {
                command: args.join(" "),
                code,
            });
        }
        if self.opts.remove || self.opts.force_remove {
            backend.remove_container(&id)?;
        }
        self.commit_layer(st, &id, cc, created_by, key)?;
        self.intermediate(&id, false);
        self.say(format!(" ---> {}\n", short(st.image.as_str())));
        Ok(())
    }

    /// `--mount=type=secret[,id=x][,target=/p][,required][,mode=0400][,uid=0][,gid=0]`: the
    /// secret's bytes in a file on a tmpfs (`/dev/shm`), bound read-only; none when the build
    /// has no such secret and it is not required.
    fn secret_mount(
        &mut self,
        st: &Stage,
        line: usize,
        m: &MountSpec,
        dirs: &mut Vec<tempfile::TempDir>,
    ) -> Result<Option<RunMount>> {
        let target = self.expand(st, line, &m.target)?;
        let id = match &m.id {
            Some(i) => self.expand(st, line, i)?,
            None => target.rsplit('/').next().unwrap_or("").to_string(),
        };
        if id.is_empty() {
            return Err(self.at(line, "secret ID missing from mount options"));
        }
        let target = if target.is_empty() {
            format!("/run/secrets/{id}")
        } else if target.starts_with('/') {
            target
        } else {
            let wd = st.cc().working_dir;
            clean(&format!(
                "{}/{target}",
                if wd.is_empty() { "/" } else { &wd }
            ))
        };
        let Some(bytes) = self.opts.secrets.0.get(&id) else {
            if m.options.get("required").is_some_and(|r| bool_value(r)) {
                return Err(self.at(line, format!("secret {id}: not found")));
            }
            return Ok(None);
        };
        let num = |k: &str, radix: u32, def: u32| -> Result<u32> {
            match m.options.get(k) {
                Some(v) => u32::from_str_radix(v, radix)
                    .map_err(|_| self.at(line, format!("invalid secret {k}: {v}"))),
                None => Ok(def),
            }
        };
        let (mode, uid, gid) = (
            num("mode", 8, 0o400)?,
            num("uid", 10, 0)?,
            num("gid", 10, 0)?,
        );
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            self.b.cache.tmp_dir()
        };
        let io = |e| BuildError::io("write secret", e);
        let dir = tempfile::Builder::new()
            .prefix("berth-secret-")
            .tempdir_in(&base)
            .map_err(io)?;
        let f = dir.path().join("secret");
        std::fs::write(&f, bytes).map_err(io)?;
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io)?;
        std::os::unix::fs::chown(&f, Some(uid), Some(gid)).map_err(io)?;
        dirs.push(dir);
        let mut options = BTreeMap::new();
        options.insert(SECRET.to_string(), id);
        Ok(Some(RunMount {
            kind: "bind".into(),
            source: Some(f),
            target,
            readonly: true,
            options,
        }))
    }

    fn run_mount(
        &mut self,
        st: &Stage,
        line: usize,
        m: &MountSpec,
        helpers: &mut Vec<(String, PathBuf)>,
    ) -> Result<RunMount> {
        let target = self.expand(st, line, &m.target)?;
        let wd = st.cc().working_dir;
        let target = if target.starts_with('/') {
            target
        } else {
            clean(&format!(
                "{}/{target}",
                if wd.is_empty() { "/" } else { &wd }
            ))
        };
        match m.kind.as_str() {
            "cache" => {
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let mut h = Sha256::new();
                h.update(id.as_bytes());
                let dir = self.b.cache.dir().join("mounts").join(&hex::encode(h.finalize())[..32]);
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|e| BuildError::io("create cache mount", e))?;
                    let uid = m.options.get("uid").and_then(|u| u.parse().ok());
                    let gid = m.options.get("gid").and_then(|u| u.parse().ok());
                    if uid.is_some() || gid.is_some() {
                        let _ = std::os::unix::fs::chown(&dir, uid, gid);
                    }
                }
                Ok(RunMount { kind: "bind".into(), source: Some(dir), target, readonly: m.readonly, options: m.options.clone() })
            }
            "tmpfs" => Ok(RunMount { kind: "tmpfs".into(), source: None, target, readonly: false, options: m.options.clone() }),
            "bind" => {
                let src = m.source.clone().unwrap_or_else(|| "/".into());
                let src = self.expand(st, line, &src)?;
                let root = match &m.from {
                    None => self.ctx.materialize()?.to_path_buf(),
                    Some(f) => {
                        let f = self.expand(st, line, f)?;
                        let image = self.source_image(&f)?;
                        let (layer, root) = self.mount_layer(&image)?;
                        helpers.push((layer, root.clone()));
                        root
                    }
                };
                let host = resolve_in_root(&root, &src, true).map_err(|e| BuildError::io("resolve mount source", e))?;
                // Context binds are always read-only: the context may be the user's directory.
                let readonly = m.readonly || m.from.is_none();
                Ok(RunMount { kind: "bind".into(), source: Some(host), target, readonly, options: BTreeMap::new() })
            }
            other => Err(self.at(line, format!("RUN --mount=type={other} is not supported by this builder (the classic API carries no SSH agent)"))),
        }
    }

    /// The image of `--from=<stage name|index|image>`.
    fn source_image(&mut self, from: &str) -> Result<ImageId> {
        if let Some(i) = stage_ref(&self.df, from, self.df.stages.len(), true)
            && let Some(id) = self.stage_images.get(&i)
        {
            return Ok(id.clone());
        }
        self.resolve_image(from, None, false)
    }

    /// `ADD <url>`: downloaded on every build (as dockerd does) into `dir`, named after the URL's
    /// last path segment, mode 0600, mtime from `Last-Modified`; `--checksum=sha256:` verified.
    /// The cache key then hashes what was downloaded.
    fn fetch(
        &mut self,
        line: usize,
        url: &str,
        checksum: Option<&str>,
        dir: &Path,
        into_dir: bool,
    ) -> Result<Selected> {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .splitn(4, '/')
            .nth(3)
            .unwrap_or("");
        let name = match path.rsplit('/').next() {
            Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
            _ if into_dir => {
                return Err(self.at(line, format!("cannot determine filename from url: {url}")));
            }
            _ => "download".to_string(),
        };
        let f = dir.join(&name);
        let modified = self
            .b
            .backend
            .download(url, &f)
            .map_err(|e| self.at(line, e))?;
        let io = |e| BuildError::io(format!("downloaded {url}"), e);
        if let Some(want) = checksum {
            let (algo, hex_want) = want.split_once(':').unwrap_or(("", want));
            if algo != "sha256" {
                return Err(self.at(line, format!("unsupported digest algorithm: {want}")));
            }
            let mut h = Sha256::new();
            let mut r = std::fs::File::open(&f).map_err(io)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match std::io::Read::read(&mut r, &mut buf).map_err(io)? {
                    0 => break,
                    n => h.update(&buf[..n]),
                }
            }
            let got = hex::encode(h.finalize());
            if !got.eq_ignore_ascii_case(hex_want) {
                return Err(self.at(line, format!("digest mismatch sha256:{got}: {want}")));
            }
        }
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io)?;
        if let Some(t) = modified {
            let file = std::fs::File::options().write(true).open(&f).map_err(io)?;
            file.set_modified(t).map_err(io)?;
        }
        Ok(Selected {
            rel: name,
            path: f,
            is_dir: false,
        })
    }

    fn copy(&mut self, st: &mut Stage, line: usize, spec: &CopySpec, is_add: bool) -> Result<()> {
        let kw = if is_add { "ADD" } else { "COPY" };
        let vars = st.vars();
        let ex = |w: &str| {
            self.lex
                .process_word(w, &vars)
                .map_err(|e| self.at(line, e))
        };
        let mut sources = Vec::new();
        for s in &spec.sources {
            sources.push(ex(s)?);
        }
        let dest_raw = ex(&spec.dest)?;
        let chown = spec.chown.as_deref().map(&ex).transpose()?;
        let chmod = match spec.chmod.as_deref().map(&ex).transpose()? {
            Some(m) => Some(
                u32::from_str_radix(&m, 8)
                    .map_err(|_| self.at(line, format!("invalid chmod parameter: {m}")))?,
            ),
            None => None,
        };
        let from = spec.from.as_deref().map(&ex).transpose()?;
        let cc = st.cc();
        let wd = if cc.working_dir.is_empty() {
            "/".to_string()
        } else {
            cc.working_dir.clone()
        };
        let dest_is_dir_syntax =
            dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = clean(&if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{wd}/{dest_raw}")
        });
        let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        if !is_add && sources.iter().any(|s| is_url(s) || s.starts_with("git@")) {
            return Err(self.at(line, "COPY does not support URLs as sources: use ADD"));
        }
        let (remote, local): (Vec<String>, Vec<String>) = sources
            .into_iter()
            .partition(|s| is_add && (is_url(s) || is_git_url(s)));
        sources = local;
        let (git_urls, urls): (Vec<String>, Vec<String>) =
            remote.into_iter().partition(|s| is_git_url(s));
        let mut gits = Vec::new();
        for g in &git_urls {
            gits.push(GitSource::new(g).map_err(|e| self.at(line, e))?);
        }
        // dockerd writes `--chown=u:g` glued to the source (`--chown=1:2file:<sha>`).
        let chown_comment = chown
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| format!("--chown={c}"))
            .unwrap_or_default();
        let shell = st.shell().join(" ");
        let parent = st.image.as_str().to_string();
        let step_keys = |hash: &str, kind: &str| {
            let created_by =
                format!("{shell} #(nop) {kw} {chown_comment}{kind}:{hash} in {dest_raw} ");
            let key = cache_key(
                &parent,
                &format!("{created_by}\nfrom={from:?} chown={chown:?} chmod={chmod:?} dest={dest}"),
                &[],
                Some(hash),
            );
            (created_by, key)
        };
        let mut excludes = Vec::new();
        for e in &spec.exclude {
            excludes.push(self.expand(st, line, e)?);
        }
        let from_image = match &from {
            Some(f) => Some(self.source_image(f)?),
            None => None,
        };
        // An image never changes, so the hash of what a `COPY --from` selects in it is known
        // after the first time: a cached step then needs no mount of the source.
        let memo = from_image
            .as_ref()
            .filter(|_| urls.is_empty() && gits.is_empty() && spec.heredocs.is_empty())
            .map(|i| format!("{i}\n{sources:?}\n{excludes:?}\n{dest_raw}"));
        if let Some(m) = memo.as_deref().and_then(|m| self.b.cache.memo_get(m))
            && let Some((hash, kind)) = m.split_once(' ')
        {
            let (_, key) = step_keys(hash, kind);
            if self.use_cache(st, &key) {
                return Ok(());
            }
        }
        // Sources: the context, or another stage's / image's rootfs.
        let mut mounted: Option<(String, PathBuf)> = None;
        let src_ctx_owned;
        let src_ctx: &BuildContext = match &from_image {
            None => self.ctx,
            Some(image) => {
                let (layer, root) = self.mount_layer(image)?;
                mounted = Some((layer, root.clone()));
                src_ctx_owned = BuildContext::for_root(root);
                &src_ctx_owned
            }
        };
        let excluded_ctx;
        let src_ctx: &BuildContext = if excludes.is_empty() {
            src_ctx
        } else {
            excluded_ctx = src_ctx.with_excludes(&excludes)?;
            &excluded_ctx
        };
        let res = (|| -> Result<()> {
            let mut sels: Vec<Selected> = Vec::new();
            for s in &sources {
                sels.extend(src_ctx.select(s).map_err(|e| match e {
                    BuildError::Context(m) => {
                        self.at(line, m.replace("COPY failed", &format!("{kw} failed")))
                    }
                    e => e,
                })?);
            }
            // Heredocs become files named after their delimiter.
            let hd_dir = tempfile::tempdir().map_err(|e| BuildError::io("temp dir", e))?;
            let hd_ctx = BuildContext::for_root(hd_dir.path().to_path_buf());
            let mut hd_sels = Vec::new();
            for h in &spec.heredocs {
                let content = if h.expand {
                    Lexer {
                        escape: self.df.escape,
                        raw: true,
                    }
                    .process_word(&h.content, &st.vars())
                    .map_err(|e| self.at(line, e))?
                } else {
                    h.content.clone()
                };
                let p = hd_dir.path().join(&h.name);
                std::fs::write(&p, content).map_err(|e| BuildError::io("write heredoc", e))?;
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .map_err(|e| BuildError::io("chmod heredoc", e))?;
                hd_sels.push(Selected {
                    rel: h.name.clone(),
                    path: p,
                    is_dir: false,
                });
            }
            for u in &urls {
                hd_sels.push(self.fetch(
                    line,
                    u,
                    spec.checksum.as_deref(),
                    hd_dir.path(),
                    dest_is_dir_syntax,
                )?);
            }
            let count = sels.len() + hd_sels.len() + gits.len();
            if count > 1 && !dest_raw.ends_with('/') {
                return Err(self.at(line, format!("When using {kw} with more than one source file, the destination must be a directory and end with a /")));
            }
            let cancelled = || self.b.backend.cancelled();
            let git_tmp = self.b.cache.tmp_dir();
            let checksum = spec.checksum.as_deref();
            for g in &mut gits {
                g.resolve(&git_tmp, spec.keep_git_dir, &cancelled)
                    .and_then(|_| g.verify(checksum))
                    .map_err(|e| self.at(line, e))?;
            }
            let mut local_hash = src_ctx.content_hash(&sels)?;
            if !hd_sels.is_empty() {
                local_hash.push_str(&hd_ctx.content_hash(&hd_sels)?);
            }
            // Git sources count by their commit, so a branch that has not moved is a cache hit
            // without a clone.
            let full_hash = |gits: &[GitSource]| {
                if hd_sels.is_empty() && gits.is_empty() {
                    return local_hash.clone();
                }
                let mut h = Sha256::new();
                h.update(local_hash.as_bytes());
                for g in gits {
                    h.update(g.hash(spec.keep_git_dir).as_bytes());
                }
                hex::encode(h.finalize())
            };
            let hash = full_hash(&gits);
            let kind = match (count, sels.first()) {
                (1, Some(s)) if s.is_dir => "dir",
                (1, None) if gits.len() == 1 => "dir",
                (1, _) => "file",
                _ => "multi",
            };
            if let Some(m) = &memo {
                self.b.cache.memo_put(m, format!("{hash} {kind}"));
            }
            let (mut created_by, mut key) = step_keys(&hash, kind);
            if self.use_cache(st, &key) {
                return Ok(());
            }
            let mut moved = false;
            for g in &mut gits {
                moved |= g
                    .fetch(&git_tmp, spec.keep_git_dir, &cancelled)
                    .and_then(|m| g.verify(checksum).map(|_| m))
                    .map_err(|e| self.at(line, e))?;
            }
            if moved {
                // A ref that moved between the resolution and the fetch: key what was fetched.
                (created_by, key) = step_keys(&full_hash(&gits), kind);
                if self.use_cache(st, &key) {
                    return Ok(());
                }
            }
            let git_sels: Vec<(BuildContext, Selected)> =
                gits.iter().filter_map(GitSource::selection).collect();
            src_ctx.materialize_selected(&sels)?;
            let (layer, root) = self.mount_layer(&st.image)?;
            let r = (|| -> Result<()> {
                let owner = match &chown {
                    Some(c) => resolve_chown(&root, c).map_err(|e| self.at(line, e))?,
                    None => (0, 0),
                };
                let dest_exists_dir = resolve_in_root(&root, &dest, true)
                    .map(|p| p.is_dir())
                    .unwrap_or(false);
                let into_dir = dest_is_dir_syntax || count > 1 || dest_exists_dir;
                for (c, sel) in sels
                    .iter()
                    .map(|s| (src_ctx, s))
                    .chain(hd_sels.iter().map(|s| (&hd_ctx, s)))
                    .chain(git_sels.iter().map(|(c, s)| (c, s)))
                {
                    // Heredocs and downloads (ADD <url>) are never extracted, as in dockerd.
                    if is_add
                        && !sel.is_dir
                        && from.is_none()
                        && std::ptr::eq(c, src_ctx)
                        && is_archive(&sel.path)
                    {
                        // ADD of a local tar: extracted into dest (a directory).
                        let tmp = tempfile::tempdir().map_err(|e| BuildError::io("temp dir", e))?;
                        let f = std::fs::File::open(&sel.path)
                            .map_err(|e| BuildError::io("open archive", e))?;
                        let mut r = std::io::BufReader::new(f);
                        let gz = std::io::BufRead::fill_buf(&mut r)
                            .map(|b| b.starts_with(&[0x1f, 0x8b]))
                            .unwrap_or(false);
                        if gz {
                            crate::context::unpack_safely(
                                flate2::read::GzDecoder::new(r),
                                tmp.path(),
                            )?;
                        } else {
                            crate::context::unpack_safely(r, tmp.path())?;
                        }
                        let tctx = BuildContext::for_root(tmp.path().to_path_buf());
                        let all = Selected {
                            rel: String::new(),
                            path: tmp.path().to_path_buf(),
                            is_dir: true,
                        };
                        copy_selection(&tctx, &all, &root, &dest, owner, chmod)?;
                        continue;
                    }
                    let target = if sel.is_dir || !into_dir {
                        dest.clone()
                    } else {
                        let name = sel.rel.rsplit('/').next().unwrap_or(&sel.rel);
                        clean(&format!("{dest}/{name}"))
                    };
                    copy_selection(c, sel, &root, &target, owner, chmod)?;
                }
                Ok(())
            })();
            self.unmount_layer(&layer, &root, r.is_err())?;
            r?;
            self.commit_layer(st, &layer, cc.clone(), &created_by, &key)?;
            self.say(format!(" ---> {}\n", short(st.image.as_str())));
            Ok(())
        })();
        if let Some((l, p)) = mounted {
            let _ = self.unmount_layer(&l, &p, true);
        }
        res
    }
}

/// A git source of `ADD`: its URL, the commit it resolved to and, once fetched, the checkout.
struct GitSource {
    url: GitUrl,
    commit: String,
    checkout: Option<Checkout>,
}

impl GitSource {
    fn new(raw: &str) -> std::result::Result<GitSource, String> {
        Ok(GitSource {
            url: GitUrl::parse(raw)?,
            commit: String::new(),
            checkout: None,
        })
    }

    /// Finds the commit (`git ls-remote`); a ref the remote does not advertise (a commit ID)
    /// is fetched at once to learn it.
    fn resolve(
        &mut self,
        tmp: &Path,
        keep: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> std::result::Result<(), String> {
        match self.url.resolve(cancelled)? {
            Some(c) => self.commit = c,
            None => {
                self.fetch(tmp, keep, cancelled)?;
            }
        }
        Ok(())
    }

    /// Checks the commit out (once); true if the ref had moved since [`GitSource::resolve`].
    fn fetch(
        &mut self,
        tmp: &Path,
        keep: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> std::result::Result<bool, String> {
        if self.checkout.is_some() {
            return Ok(false);
        }
        let co = self.url.checkout(tmp, keep, cancelled)?;
        let moved = !self.commit.is_empty() && co.commit != self.commit;
        self.commit = co.commit.clone();
        self.checkout = Some(co);
        Ok(moved)
    }

    /// `ADD --checksum=<commit>` pins a git source: the commit must start with it.
    fn verify(&self, checksum: Option<&str>) -> std::result::Result<(), String> {
        let Some(want) = checksum else {
            return Ok(());
        };
        let want = want.to_ascii_lowercase();
        if want.len() < 7 || !self.commit.starts_with(&want) {
            return Err(format!(
                "checksum mismatch for {}: expected commit {want}, got {}",
                self.url, self.commit
            ));
        }
        Ok(())
    }

    fn hash(&self, keep: bool) -> String {
        self.url.content_hash(&self.commit, keep)
    }

    /// The checkout as a directory source (its contents go into the destination).
    fn selection(&self) -> Option<(BuildContext, Selected)> {
        let root = self.checkout.as_ref()?.root.clone();
        Some((
            BuildContext::for_root(root.clone()),
            Selected {
                rel: String::new(),
                path: root,
                is_dir: true,
            },
        ))
    }
}

/// Marks a [`RunMount`] that carries a secret (its option value is the secret's ID).
const SECRET: &str = "berth.secret";

/// Removes the empty file (and then empty directories) a bind's mount point left in the
/// container layer, where the image below has nothing.
fn strip_mount_point(rootfs: &RootfsMount, target: &str) {
    let in_image = |rel: &str| {
        rootfs
            .lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
    };
    let mut rel = target.trim_matches('/').to_string();
    if rel.is_empty() || in_image(&rel) {
        return;
    }
    let leaf = rootfs.upper.join(&rel);
    match std::fs::symlink_metadata(&leaf) {
        Ok(m) if m.is_file() && m.len() == 0 => {
            let _ = std::fs::remove_file(&leaf);
        }
        _ => return,
    }
    while let Some((parent, _)) = rel.rsplit_once('/') {
        rel = parent.to_string();
        if in_image(&rel) || std::fs::remove_dir(rootfs.upper.join(&rel)).is_err() {
            return;
        }
    }
}

fn bool_value(s: &str) -> bool {
    !matches!(
        s.to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

impl BuildOptions {
    /// Parses `POST /build`'s query string as dockerd does (`t` repeatable, `buildargs` and
    /// `labels` JSON objects, booleans `1`/`true`, `rm` true unless given). Errors: a malformed
    /// JSON parameter, `version=2` (BuildKit), `squash`.
    pub fn from_query(query: &str) -> Result<BuildOptions> {
        let mut o = BuildOptions::default();
        let mut rm: Option<bool> = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "dockerfile" if !v.is_empty() => o.dockerfile = Some(v),
                "t" if !v.is_empty() => o.tags.push(v),
                "target" if !v.is_empty() => o.target = Some(v),
                "q" => o.quiet = bool_value(&v),
                "nocache" => o.no_cache = bool_value(&v),
                "pull" => o.pull = bool_value(&v),
                "rm" => rm = Some(bool_value(&v)),
                "forcerm" => o.force_remove = bool_value(&v),
                "networkmode" if !v.is_empty() => o.network_mode = Some(v),
                "platform" if !v.is_empty() => o.platform = Some(v),
                "memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota" | "shmsize"
                    if !v.is_empty() =>
                {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| BuildError::Invalid(format!("invalid value for {k}: {v}")))?;
                    match k.as_ref() {
                        "memory" => o.run.memory = n,
                        "memswap" => o.run.memory_swap = n,
                        "cpushares" => o.run.cpu_shares = n,
                        "cpuperiod" => o.run.cpu_period = n,
                        "cpuquota" => o.run.cpu_quota = n,
                        _ => o.run.shm_size = n,
                    }
                }
                "cpusetcpus" => o.run.cpuset_cpus = v,
                "cgroupparent" => o.run.cgroup_parent = v,
                "isolation" => o.run.isolation = v,
                "extrahosts" if !v.is_empty() => o.run.extra_hosts.extend(
                    v.split(',')
                        .map(|h| h.trim().to_string())
                        .filter(|h| !h.is_empty()),
                ),
                "buildargs" if !v.is_empty() => {
                    o.build_args = serde_json::from_str(&v).map_err(|e| {
                        BuildError::Invalid(format!("error reading build args: {e}"))
                    })?
                }
                "labels" if !v.is_empty() => {
                    o.labels = serde_json::from_str(&v)
                        .map_err(|e| BuildError::Invalid(format!("error reading labels: {e}")))?
                }
                "remote" if !v.is_empty() => o.remote = Some(v),
                "version" if v == "2" => {
                    return Err(BuildError::Invalid(
                        "BuildKit (version=2) is not supported: use the classic builder (DOCKER_BUILDKIT=0)".into(),
                    ));
                }
                "squash" if bool_value(&v) => {
                    return Err(BuildError::Invalid(
                        "squash is only supported with experimental mode".into(),
                    ));
                }
                _ => {}
            }
        }
        o.remove = rm.unwrap_or(true);
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_like_dockerd() {
        let o = BuildOptions::from_query(
            "t=a%3A1&t=b&dockerfile=sub%2FDockerfile&buildargs=%7B%22A%22%3A%22x%22%2C%22B%22%3Anull%7D&labels=%7B%22l%22%3A%22v%22%7D&nocache=1&q=true&rm=0&forcerm=1&pull=1&target=t&networkmode=host&platform=linux%2Farm64",
        )
        .unwrap();
        assert_eq!(o.tags, vec!["a:1", "b"]);
        assert_eq!(o.dockerfile.as_deref(), Some("sub/Dockerfile"));
        assert_eq!(o.build_args.get("A"), Some(&Some("x".to_string())));
        assert_eq!(o.build_args.get("B"), Some(&None));
        assert_eq!(o.labels.get("l").map(String::as_str), Some("v"));
        assert!(o.no_cache && o.quiet && !o.remove && o.force_remove && o.pull);
        assert_eq!(o.target.as_deref(), Some("t"));
        assert_eq!(o.network_mode.as_deref(), Some("host"));
        assert_eq!(o.platform.as_deref(), Some("linux/arm64"));
        let o = BuildOptions::from_query(
            "memory=1048576&shmsize=65536&extrahosts=a%3A1.2.3.4%2Cb%3A5.6.7.8&cpusetcpus=0-1",
        )
        .unwrap();
        assert_eq!((o.run.memory, o.run.shm_size), (1_048_576, 65_536));
        assert_eq!(o.run.extra_hosts, vec!["a:1.2.3.4", "b:5.6.7.8"]);
        assert_eq!(o.run.cpuset_cpus, "0-1");
        assert!(BuildOptions::from_query("memory=lots").is_err());
        assert!(BuildOptions::from_query("").unwrap().remove);
        assert!(BuildOptions::from_query("buildargs=nope").is_err());
        assert!(BuildOptions::from_query("version=2").is_err());
        let o = BuildOptions::from_query("remote=https%3A%2F%2Fh%2Fr.git%23main%3Asub").unwrap();
        assert_eq!(o.remote.as_deref(), Some("https://h/r.git#main:sub"));
    }

    #[test]
    fn go_quoting_and_ids() {
        assert_eq!(go_q(&["a".into(), "b c".into()]), "[\"a\" \"b c\"]");
        assert_eq!(new_id().len(), 64);
        assert_ne!(new_id(), new_id());
        let e = BuildError::NonZero {
            command: "/bin/sh -c exit 3".into(),
            code: 3,
        };
        let line = error_message(&e).to_line();
        assert_eq!(
            line,
            "{\"errorDetail\":{\"code\":3,\"message\":\"The command '/bin/sh -c exit 3' returned a non-zero code: 3\"},\"error\":\"The command '/bin/sh -c exit 3' returned a non-zero code: 3\"}\r\n"
        );
    }
}
