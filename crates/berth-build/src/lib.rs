//! Berth's builder: the Dockerfile parser and a classic-builder-compatible build engine
//! (`POST /build` with the classic builder's JSON stream, image configs and history).
//!
//! # Pieces
//! * [`parser`]: parser directives (`# syntax=`, `# escape=`), comments, continuations (with comments
//!   and empty lines inside), heredocs, flags, every instruction, typed; errors read
//!   `dockerfile parse error on line 7: unknown instruction: RUNN` ([`BuildError::line`]).
//! * [`shell`]: Docker's shell-lexer substitution (`$V`, `${V:-x}`, `${V+x}`, quotes, escapes).
//! * [`dockerignore`]: `.dockerignore` patterns (Go `filepath.Match` + `**`, `!` exceptions).
//! * [`context`]: the build context from a tar (plain/gzip: spooled and indexed in one pass, unpacked
//!   without escaping only when a step needs the files) or a directory; every read is resolved inside
//!   it.
//! * [`incremental`] and [`blobs`]: berth's incremental context (a manifest of the client's tree,
//!   only the contents the daemon's blob store lacks uploaded, each verified against its digest),
//!   indexed like a tar so selection and cache keys are the same.
//! * [`graph`]: stage dependencies, `--target`, unused stages skipped, waves of independent stages.
//! * [`cache`]: the cache index in `<data-root>/build/cache.json` (crash-safe), `prune`, `du`.
//! * [`builder`]: [`builder::Builder`] runs a build against the [`berth_image::ImageStore`] and a
//!   [`builder::BuildBackend`] that the daemon implements.
//!
//! # How a build runs
//! * FROM: `scratch` is an empty, layerless image made once; a stage name is that stage's image;
//!   anything else goes to [`builder::BuildBackend::get_image`] (local or pull).
//! * Metadata steps (ENV, ARG, LABEL, CMD, ENTRYPOINT, EXPOSE, VOLUME, USER, STOPSIGNAL, HEALTHCHECK,
//!   SHELL, ONBUILD, MAINTAINER, and WORKDIR when the directory exists) make a new image config with a
//!   history entry `/bin/sh -c #(nop)  CMD ["sh"]`, `empty_layer: true`, through
//!   [`berth_image::ImageStore::add_config_image`] (parent recorded); no container.
//! * RUN: the builder prepares a container layer (`ImageStore::prepare_container_layer(id, image)`),
//!   prints ` ---> Running in <id>`, calls [`builder::BuildBackend::run`] with a
//!   [`builder::RunSpec`], commits the layer with `ImageStore::commit` (`created_by`
//!   `|1 A=b /bin/sh -c echo hi` when build args are in scope), then removes container and layer.
//! * COPY/ADD and creating a WORKDIR: a fresh container layer is mounted through
//!   [`builder::BuildBackend::mount`], files are written into it (destinations resolved inside the
//!   rootfs), it is unmounted and committed (`/bin/sh -c #(nop) COPY file:<sha> in /dst `).
//!   `COPY --from` mounts the source image's layer the same way, read-only in practice.
//! * Cache: key = sha256(parent image ID, expanded instruction, build args in scope, content hash of
//!   the COPY/ADD sources: path, type, mode, uid/gid, size, content, link target; not mtime). A hit
//!   prints ` ---> Using cache` and reuses the image if it still exists.
//! * Only the stages the target needs are built. Independent stages ([`graph::Plan::waves`]) run
//!   in parallel threads; their streams are buffered and flushed in stage order, so the output
//!   reads like the classic builder's sequential `Step N/M` lines (the next stage in order streams
//!   live). The backend must therefore accept concurrent calls.
//!
//! # Plugging into berthd (`POST /build`)
//! 1. Once at start: `let cache = Arc::new(CacheIndex::open(&data_root)?);` (empties
//!    `<data-root>/build/tmp`).
//! 2. Per request: `let opts = BuildOptions::from_query(uri.query().unwrap_or(""))?;` (answers 400 on
//!    error). Decode `X-Registry-Config` (base64url JSON map of registry host → auth config, the same
//!    shape as `X-Registry-Auth` per registry) and give it to the backend for pulls. `version=2`
//!    (BuildKit) is refused by `from_query`; the CLI then needs `DOCKER_BUILDKIT=0`.
//! 3. Read the body (a tar, maybe gzip) into the context inside `spawn_blocking`:
//!    `BuildContext::from_tar(body_reader, &cache.tmp_dir(), opts.dockerfile.as_deref())` (the
//!    temp dir goes when the context is dropped). Errors here are HTTP 400 (`is_client_error`).
//! 4. `Builder::new(store.clone(), cache.clone(), Arc::new(DaemonBackend { .. }))` and
//!    `builder.build(&ctx, &opts, &mut |m| tx.blocking_send(m.to_line()))` on the blocking pool;
//!    stream each [`berth_api::progress::JsonMessage`] as a line (`application/json`, 200). On error
//!    after the first line send [`builder::error_message`]`(&e).to_line()` as the last line.
//!    Cancel: make `BuildBackend::cancelled` true when the client disconnects.
//! 5. Implement [`builder::BuildBackend`] in berthd:
//!    * `get_image`: `store.resolve(ref)`, else (or when `always_pull`) pull through berth-registry
//!      with the auth from `X-Registry-Config`, forwarding its progress messages to `out`.
//!    * `mount`/`unmount`: `berth_runtime::mount_overlay(target, lowers, upper, work)` of the given
//!      [`berth_image::RootfsMount`] on a directory under `<exec-root>/build/<layer_id>`, and
//!      `berth_runtime::unmount`.
//!    * `run`: create a container whose ID is `spec.container_id` through the normal create path
//!      (its `prepare_container_layer` call returns the builder's layer: same ID, same image), with
//!      process `spec.args`, `spec.env` (add the default PATH if absent, as for `docker run`),
//!      `spec.user`, `spec.workdir`, network `spec.network` (`none`/`host`/default bridge), the
//!      `spec.mounts` as binds/tmpfs, `spec.resources` (memory, CPU, shm size, extra hosts) as
//!      its host config, no TTY, stdin closed; start it through the shim, copy its
//!      output to `output`, wait, and return the exit code. Do not remove its layer; emit the
//!      usual container events. `remove_container` then drops the container record.
//! 6. `POST /build/prune` → `cache.prune(&PruneOptions{..})` → `{"CachesDeleted": deleted,
//!    "SpaceReclaimed": n}` (and optionally `ImageStore::remove` of `report.images` that are
//!    untagged and unused); `GET /system/df` → `BuildCache: cache.du().map(|(k, r)| r.to_api(&k))`.
//!
//! # Known gaps
//! * `RUN --mount=type=ssh` (no session to carry an agent); `COPY --parents`; `COPY --exclude`
//!   patterns match paths relative to the context root; private git repositories over SSH
//!   need the daemon's own SSH setup (no agent forwarding).
//! * `RUN <<EOF` scripts starting with `#!` are bind-mounted at `/dev/pipes/EOF` and executed, as in
//!   BuildKit: the runtime must create the mount point of a file bind under `/dev`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blobs;
pub mod builder;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerignore;
pub mod error;
pub mod graph;
pub mod incremental;
pub mod parser;
pub mod remote;
pub mod shell;

pub use builder::{
    BuildBackend, BuildOptions, BuildResult, Builder, RunMount, RunResources, RunSpec,
    error_message,
};
pub use cache::{CacheIndex, PruneOptions, PruneReport};
pub use context::BuildContext;
pub use error::{BuildError, Result};
