//! `berth build` (the classic builder's `POST /build`, as `DOCKER_BUILDKIT=0 docker build` speaks it)
//! and `berth builder prune`.
//!
//! The context is tarred on a blocking thread straight into the request body, honouring
//! `.dockerignore` (or `<Dockerfile>.dockerignore`) like the docker CLI, so a large context is
//! streamed, never held in memory. A directory context goes to berthd incrementally instead
//! ([`incremental`]: a manifest, then only the contents the daemon lacks); a daemon without the
//! extension (404), or `BERTH_BUILD_CONTEXT=tar`, gets the tar.

mod incremental;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use berth_api::progress::JsonMessage;
use berth_build::dockerignore::DockerIgnore;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{ClientError, channel_body, decode, json_body, next_chunk, q};

/// `build`'s grammar.
pub const BUILD: Command = Command {
    path: "build",
    usage: "[OPTIONS] PATH | URL | -",
    about: "Build an image from a Dockerfile",
    flags: &[
        l(
            "add-host",
            None,
            "Add a custom host-to-IP mapping (\"host:ip\")",
        ),
        l("build-arg", None, "Set build-time variables"),
        v(
            "cgroup-parent",
            None,
            "Set the parent cgroup for the \"RUN\" instructions during build",
        ),
        b("compress", None, "Compress the build context using gzip"),
        v(
            "cpu-period",
            None,
            "Limit the CPU CFS (Completely Fair Scheduler) period",
        ),
        v(
            "cpu-quota",
            None,
            "Limit the CPU CFS (Completely Fair Scheduler) quota",
        ),
        v("cpu-shares", Some('c'), "CPU shares (relative weight)"),
        v(
            "cpuset-cpus",
            None,
            "CPUs in which to allow execution (0-3, 0,1)",
        ),
        v(
            "file",
            Some('f'),
            "Name of the Dockerfile (Default is \"PATH/Dockerfile\")",
        ),
        b("force-rm", None, "Always remove intermediate containers"),
        v("iidfile", None, "Write the image ID to the file"),
        l("label", None, "Set metadata for an image"),
        l(
            "secret",
            None,
            "Secret to expose to the build (format: \"id=mysecret[,src=/local/secret]\" or \"id=x,env=VAR\")",
        ),
        v("memory", Some('m'), "Memory limit"),
        v(
            "memory-swap",
            None,
            "Swap limit equal to memory plus swap: -1 to enable unlimited swap",
        ),
        v(
            "network",
            None,
            "Set the networking mode for the RUN instructions during build",
        ),
        b("no-cache", None, "Do not use cache when building the image"),
        v(
            "platform",
            None,
            "Set platform if server is multi-platform capable",
        ),
        v(
            "progress",
            None,
            "Set type of progress output (auto, plain, tty)",
        ),
        b(
            "pull",
            None,
            "Always attempt to pull a newer version of the image",
        ),
        b(
            "quiet",
            Some('q'),
            "Suppress the build output and print image ID on success",
        ),
        b(
            "rm",
            None,
            "Remove intermediate containers after a successful build (default true)",
        ),
        v("shm-size", None, "Size of \"/dev/shm\""),
        l(
            "tag",
            Some('t'),
            "Name and optionally a tag in the \"name:tag\" format",
        ),
        v("target", None, "Set the target build stage to build."),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

/// `builder prune`'s grammar.
pub const PRUNE: Command = Command {
    path: "builder prune",
    usage: "",
    about: "Remove build cache",
    flags: &[
        b(
            "all",
            Some('a'),
            "Remove all unused build cache, not just dangling ones",
        ),
        l("filter", None, "Provide filter values (e.g. \"until=24h\")"),
        b("force", Some('f'), "Do not prompt for confirmation"),
        v(
            "keep-storage",
            None,
            "Amount of disk space to keep for cache",
        ),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// The command paths this module serves (for the dispatcher).
pub fn handles(path: &str) -> bool {
    matches!(
        path,
        "build" | "image build" | "builder build" | "builder prune"
    )
}

/// Runs `build` or `builder prune`.
pub async fn dispatch(ctx: &Ctx, path: &str, m: Matches) -> CmdResult {
    if path == "builder prune" {
        prune(ctx, m).await
    } else {
        build(ctx, m).await
    }
}

fn msg(s: impl Into<String>) -> CliError {
    CliError::Msg(s.into(), 1)
}

/// go-units `HumanSize` (4 significant digits), as in "Sending build context ... 3.072kB".
fn human4(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut s = size as f64;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", crate::format::go_fmt_g(s, 4), UNITS[i])
}

/// A `Write` that hands chunks to the request body (blocking: the tar is written on its own thread).
struct ChanWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ChanWriter {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.sent
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "daemon closed"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.push()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

/// What goes into the context tar.
enum Source {
    /// A directory, with the exclusion patterns and an extra Dockerfile (name, text) to add.
    Dir {
        root: PathBuf,
        ignore: DockerIgnore,
        keep: Vec<String>,
        extra: Option<(String, Vec<u8>)>,
    },
    /// A tar (maybe compressed) given as is: stdin or a file; `head` was already read.
    Tar {
        head: Vec<u8>,
        rest: Box<dyn Read + Send>,
    },
    /// A lone Dockerfile (stdin that is not an archive): the context holds only it.
    Dockerfile(Vec<u8>),
}

fn is_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar")
}

fn read_head(r: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let k = r.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    head.truncate(n);
    Ok(head)
}

fn header_for(meta: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    // The docker CLI sends the context owned by root (ChownOpts 0:0).
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    h
}

/// What a directory context visits: (path relative to the root, host path, metadata).
type Visit<'a> = &'a mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> std::io::Result<()>;

/// Visits what the context of `dir` (relative path `rel`) holds, in tar order: directories,
/// symlinks and regular files that are not excluded; an excluded directory is still entered when
/// some exception pattern could re-include something in it.
fn walk(
    f: Visit<'_>,
    root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    keep: &[String],
    has_exceptions: bool,
) -> std::io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let p = root.join(&r);
        let meta = std::fs::symlink_metadata(&p)?;
        let excluded = !keep.contains(&r) && ignore.excluded(&r);
        if excluded && !(meta.is_dir() && has_exceptions) {
            continue;
        }
        if !excluded {
            if meta.is_dir() || meta.file_type().is_symlink() || meta.is_file() {
                f(&r, &p, &meta)?;
            } else {
                // Sockets, fifos, devices: docker skips what it cannot archive meaningfully.
                continue;
            }
        }
        if meta.is_dir() {
            walk(f, root, &r, ignore, keep, has_exceptions)?;
        }
    }
    Ok(())
}

/// Appends one visited entry to the context tar.
fn append_entry(
    t: &mut tar::Builder<impl Write>,
    r: &str,
    p: &Path,
    meta: &std::fs::Metadata,
) -> std::io::Result<()> {
    let mut h = header_for(meta);
    if meta.is_dir() {
        h.set_size(0);
        t.append_data(&mut h, format!("{r}/"), std::io::empty())
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(p)?;
        h.set_size(0);
        t.append_link(&mut h, r, target)
    } else {
        let f = std::fs::File::open(p)?;
        if h.set_path(r).is_ok() {
            append_file(t.get_mut(), &mut h, f, meta.len())
        } else {
            // Long names need the GNU long-name entry the tar crate writes.
            t.append_data(&mut h, r, f)
        }
    }
}

/// Writes a file's header and data straight to the stream, the data read in 1 MiB chunks (the
/// tar crate's copy reads 8 KiB at a time). Exactly `len` bytes go, as the header says, even if
/// the file changes meanwhile.
fn append_file(
    w: &mut impl Write,
    h: &mut tar::Header,
    f: std::fs::File,
    len: u64,
) -> std::io::Result<()> {
    h.set_size(len);
    h.set_cksum();
    w.write_all(h.as_bytes())?;
    let mut buf = vec![0u8; (len as usize).clamp(1, 1 << 20)];
    let mut r = f.take(len);
    let mut left = len;
    while left > 0 {
        let n = match r.read(&mut buf)? {
            0 => {
                // Shrunk: zeros up to the promised size.
                buf.fill(0);
                buf.len().min(left as usize)
            }
            n => n,
        };
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let pad = (512 - (len % 512) as usize) % 512;
    w.write_all(&[0u8; 512][..pad])
}

fn write_context(src: Source, w: ChanWriter, compress: bool) -> std::io::Result<()> {
    match src {
        Source::Tar { head, mut rest } => {
            let mut w = w;
            w.write_all(&head)?;
            std::io::copy(&mut rest, &mut w)?;
            w.flush()
        }
        Source::Dockerfile(text) => {
            let mut t = tar::Builder::new(w);
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(chrono::Utc::now().timestamp() as u64);
            t.append_data(&mut h, "Dockerfile", &text[..])?;
            t.into_inner()?.flush()
        }
        Source::Dir {
            root,
            ignore,
            keep,
            extra,
        } => {
            let has_exceptions = ignore.texts().iter().any(|p| p.starts_with('!'));
            let out: Box<dyn Write> = if compress {
                Box::new(GzipWriter::new(w))
            } else {
                Box::new(w)
            };
            let mut t = tar::Builder::new(out);
            walk(
                &mut |r, p, m| append_entry(&mut t, r, p, m),
                &root,
                "",
                &ignore,
                &keep,
                has_exceptions,
            )?;
            if let Some((name, text)) = extra {
                let mut h = tar::Header::new_gnu();
                h.set_size(text.len() as u64);
                h.set_mode(0o600);
                h.set_mtime(chrono::Utc::now().timestamp() as u64);
                t.append_data(&mut h, name, &text[..])?;
            }
            t.finish()?;
            let mut out = t.into_inner()?;
            out.flush()
        }
    }
}

/// `--compress`: the docker CLI gzips the context; flate2 is not a dependency of the CLI, so the
/// stream is stored-deflate gzip (valid gzip, no size gain) — the daemon accepts either.
struct GzipWriter {
    inner: ChanWriter,
    crc: u32,
    len: u64,
    started: bool,
}

impl GzipWriter {
    fn new(inner: ChanWriter) -> Self {
        GzipWriter {
            inner,
            crc: 0,
            len: 0,
            started: false,
        }
    }
}

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Write for GzipWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !self.started {
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.started = true;
        }
        for chunk in data.chunks(65535) {
            let n = chunk.len() as u16;
            self.inner.write_all(&[0])?;
            self.inner.write_all(&n.to_le_bytes())?;
            self.inner.write_all(&(!n).to_le_bytes())?;
            self.inner.write_all(chunk)?;
        }
        self.crc = crc32_update(self.crc, data);
        self.len += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for GzipWriter {
    fn drop(&mut self) {
        if !self.started {
            let _ = self
                .inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        }
        // Final empty stored block, CRC and length.
        let _ = self.inner.write_all(&[1, 0, 0, 0xff, 0xff]);
        let _ = self.inner.write_all(&self.crc.to_le_bytes());
        let _ = self.inner.write_all(&(self.len as u32).to_le_bytes());
        let _ = self.inner.flush();
    }
}

fn random_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}{:x}", t.as_nanos() & 0xffff_ffff, std::process::id())
}

fn read_ignore(path: &Path) -> Result<Option<DockerIgnore>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(t) => DockerIgnore::parse(&t).map(Some).map_err(msg),
        Err(_) => Ok(None),
    }
}

/// A context the daemon fetches itself: a git URL (`#ref:subdir` allowed) or an http(s) URL of
/// a tar or a Dockerfile, as the docker CLI tells them from paths (an existing local path, say a
/// directory `github.com/x`, stays local).
fn is_remote(arg: &str) -> bool {
    (arg.starts_with("http://")
        || arg.starts_with("https://")
        || berth_build::remote::is_git_url(arg))
        && !Path::new(arg).exists()
}

/// Works out what to send and the `dockerfile` query value.
fn prepare(arg: &str, file: Option<&str>) -> Result<(Source, Option<String>), CliError> {
    let stdin_df = file == Some("-");
    if arg == "-" {
        if stdin_df {
            return Err(msg(
                "invalid argument: can't use stdin for both build context and dockerfile",
            ));
        }
        let mut stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        let head = read_head(&mut stdin)?;
        if is_archive(&head) {
            return Ok((Source::Tar { head, rest: stdin }, file.map(str::to_string)));
        }
        let mut text = head;
        stdin.read_to_end(&mut text)?;
        return Ok((Source::Dockerfile(text), None));
    }
    if is_remote(arg) {
        if stdin_df {
            return Err(msg(
                "invalid argument: a remote context cannot take its Dockerfile from stdin",
            ));
        }
        // berthd fetches it (`remote=` in the query): the body stays empty.
        let none: Box<dyn Read + Send> = Box::new(std::io::empty());
        let src = Source::Tar {
            head: Vec::new(),
            rest: none,
        };
        return Ok((src, file.map(str::to_string)));
    }
    let p = Path::new(arg);
    let meta = std::fs::metadata(p)
        .map_err(|_| msg(format!("unable to prepare context: path {arg:?} not found")))?;
    if meta.is_file() {
        let mut f: Box<dyn Read + Send> = Box::new(std::fs::File::open(p)?);
        let head = read_head(&mut f)?;
        if !is_archive(&head) {
            return Err(msg(format!(
                "unable to prepare context: {arg} is not a directory or an archive"
            )));
        }
        return Ok((Source::Tar { head, rest: f }, file.map(str::to_string)));
    }
    let root = std::fs::canonicalize(p)?;
    let (rel, extra) = if stdin_df {
        let mut text = Vec::new();
        std::io::stdin().read_to_end(&mut text)?;
        let name = format!(".dockerfile.{}", random_suffix());
        (name.clone(), Some((name, text)))
    } else {
        // Like the docker CLI: a relative -f is relative to the working directory.
        let df = match file {
            Some(f) => std::path::absolute(f)?,
            None => root.join("Dockerfile"),
        };
        let df = if file.is_none() && !df.exists() && root.join("dockerfile").exists() {
            root.join("dockerfile")
        } else {
            df
        };
        let dfc = std::fs::canonicalize(&df).map_err(|_| {
            msg(format!(
                "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory",
                df.display()
            ))
        })?;
        match dfc.strip_prefix(&root) {
            Ok(r) => (r.to_string_lossy().into_owned(), None),
            Err(_) => {
                // Outside the context: sent inside the tar under a private name, as docker does.
                let text = std::fs::read(&dfc)?;
                let name = format!(".dockerfile.{}", random_suffix());
                (name.clone(), Some((name, text)))
            }
        }
    };
    let own = root.join(format!("{rel}.dockerignore"));
    let ignore = match read_ignore(&own)? {
        Some(i) if extra.is_none() => i,
        _ => read_ignore(&root.join(".dockerignore"))?
            .unwrap_or_else(|| DockerIgnore::parse("").expect("empty patterns parse")),
    };
    // The Dockerfile and ignore files always go (TrimBuildFilesFromExcludes).
    let keep = vec![
        rel.clone(),
        ".dockerignore".to_string(),
        format!("{rel}.dockerignore"),
    ];
    Ok((
        Source::Dir {
            root,
            ignore,
            keep,
            extra,
        },
        Some(rel),
    ))
}

/// `X-Registry-Config`: every login in docker's config.json, keyed by registry.
fn registry_config() -> String {
    let path = super::registry::config_dir().join("config.json");
    let cfg: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    if let Some(auths) = cfg["auths"].as_object() {
        for (k, a) in auths {
            let dec = a["auth"]
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let (u, p) = dec.split_once(':').unwrap_or(("", ""));
            out.insert(
                k.clone(),
                serde_json::json!({"username": u, "password": p, "serveraddress": k}),
            );
        }
    }
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::Value::Object(out).to_string())
}

fn build_query(m: &Matches, dockerfile: Option<&str>) -> Result<String, CliError> {
    let mut qs: Vec<String> = Vec::new();
    for t in m.values("tag") {
        qs.push(format!("t={}", q(t)));
    }
    if let Some(d) = dockerfile {
        qs.push(format!("dockerfile={}", q(d)));
    }
    if is_remote(&m.args[0]) {
        qs.push(format!("remote={}", q(&m.args[0])));
    }
    if let Some(t) = m.value("target") {
        qs.push(format!("target={}", q(t)));
    }
    let mut args = serde_json::Map::new();
    for a in m.values("build-arg") {
        match a.split_once('=') {
            Some((k, v)) => {
                args.insert(k.into(), serde_json::json!(v));
            }
            // `--build-arg K` takes K from the environment, or leaves it unset.
            None => {
                let v = std::env::var(a).ok();
                args.insert(a.clone(), serde_json::json!(v));
            }
        }
    }
    qs.push(format!(
        "buildargs={}",
        q(&serde_json::Value::Object(args).to_string())
    ));
    let mut labels = serde_json::Map::new();
    for a in m.values("label") {
        let (k, v) = a.split_once('=').unwrap_or((a, ""));
        labels.insert(k.into(), serde_json::json!(v));
    }
    qs.push(format!(
        "labels={}",
        q(&serde_json::Value::Object(labels).to_string())
    ));
    if m.flag("no-cache") {
        qs.push("nocache=1".into());
    }
    if m.flag("pull") {
        qs.push("pull=1".into());
    }
    if m.flag("quiet") {
        qs.push("q=1".into());
    }
    let rm = !m.has("rm") || m.flag("rm");
    qs.push(format!("rm={}", u8::from(rm)));
    if m.flag("force-rm") {
        qs.push("forcerm=1".into());
    }
    if let Some(n) = m.value("network") {
        qs.push(format!("networkmode={}", q(n)));
    }
    if let Some(p) = m.value("platform") {
        qs.push(format!("platform={}", q(p)));
    }
    for (flag, key) in [
        ("memory", "memory"),
        ("memory-swap", "memswap"),
        ("shm-size", "shmsize"),
    ] {
        if let Some(v) = m.value(flag) {
            let n = if v == "-1" {
                -1
            } else {
                crate::format::ram_in_bytes(v).map_err(|e| m.bad_value(flag, v, &e))?
            };
            qs.push(format!("{key}={n}"));
        }
    }
    for (flag, key) in [
        ("cpu-shares", "cpushares"),
        ("cpu-period", "cpuperiod"),
        ("cpu-quota", "cpuquota"),
    ] {
        if let Some(n) = m.int(flag)? {
            qs.push(format!("{key}={n}"));
        }
    }
    if let Some(c) = m.value("cpuset-cpus") {
        qs.push(format!("cpusetcpus={}", q(c)));
    }
    if let Some(c) = m.value("cgroup-parent") {
        qs.push(format!("cgroupparent={}", q(c)));
    }
    let hosts = m.values("add-host");
    if !hosts.is_empty() {
        qs.push(format!("extrahosts={}", q(&hosts.join(","))));
    }
    Ok(qs.join("&"))
}

/// `--secret id=x[,src=FILE|,env=VAR]` (BuildKit's syntax; with neither, the variable `x` if
/// set, else the file `x`), as berthd's `X-Berth-Build-Secrets` header: base64url JSON of
/// ID → base64 content.
fn secrets_header(m: &Matches) -> Result<Option<String>, CliError> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut out = serde_json::Map::new();
    for spec in m.values("secret") {
        let (mut id, mut src, mut env) = (None, None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => return Err(msg(format!("invalid secret: {spec:?}"))),
            }
        }
        let id = id
            .or_else(|| {
                src.as_deref()
                    .and_then(|s| s.rsplit('/').next())
                    .map(str::to_string)
            })
            .or_else(|| env.clone())
            .ok_or_else(|| msg(format!("invalid secret: {spec:?}: id is required")))?;
        let bytes = match (&src, &env) {
            (Some(f), _) => std::fs::read(f)
                .map_err(|e| msg(format!("failed to read secret {id} from {f}: {e}")))?,
            (None, Some(v)) => std::env::var(v)
                .map_err(|_| msg(format!("secret {id}: environment variable {v} is not set")))?
                .into_bytes(),
            (None, None) => match std::env::var(&id) {
                Ok(v) => v.into_bytes(),
                Err(_) => std::fs::read(&id)
                    .map_err(|e| msg(format!("failed to read secret {id}: {e}")))?,
            },
        };
        out.insert(id, serde_json::json!(b64.encode(bytes)));
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::Value::Object(out).to_string()),
    ))
}

/// A build's response and what "Sending build context" reports.
type Sent = (http::Response<hyper::body::Incoming>, String);

/// `POST /build` with the body `write` makes on a blocking thread (streamed as it is written);
/// gives the response and the bytes sent.
async fn post_build(
    client: &crate::client::Client,
    query: &str,
    headers: &[(&'static str, String)],
    write: impl FnOnce(ChanWriter) -> std::io::Result<()> + Send + 'static,
) -> Result<(http::Response<hyper::body::Incoming>, u64), CliError> {
    let (tx, body) = channel_body();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w = ChanWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(256 * 1024),
        sent: sent.clone(),
    };
    let writer = tokio::task::spawn_blocking(move || {
        if let Err(e) = write(w) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let resp = client
        .send_headers(
            http::Method::POST,
            &format!("/build?{query}"),
            body,
            Some("application/x-tar"),
            headers,
        )
        .await;
    let _ = writer.await;
    Ok((resp?, sent.load(std::sync::atomic::Ordering::Relaxed)))
}

/// `POST /build` with the context as a tar body (what the docker CLI sends).
async fn send_tar(
    client: &crate::client::Client,
    src: Source,
    compress: bool,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<Sent, CliError> {
    let (resp, size) = post_build(client, query, headers, move |w| {
        write_context(src, w, compress)
    })
    .await?;
    Ok((resp, human4(size)))
}

/// `POST /berth/build/context` with the manifest of a directory context, then `POST /build` with
/// `X-Berth-Context` and only the blobs the daemon lacks. Gives the source back when the daemon
/// does not know the extension (404: dockerd, an older berthd).
async fn send_incremental(
    client: &crate::client::Client,
    src: Source,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<Result<Sent, Source>, CliError> {
    let (src, prepared) = tokio::task::spawn_blocking(move || {
        let Source::Dir {
            root,
            ignore,
            keep,
            extra,
        } = &src
        else {
            return (src, Ok(incremental::Prepared::default()));
        };
        let has_exceptions = ignore.texts().iter().any(|p| p.starts_with('!'));
        let p = incremental::prepare(
            root,
            |f| walk(f, root, "", ignore, keep, has_exceptions),
            extra.as_ref(),
        );
        (src, p)
    })
    .await
    .map_err(|e| msg(e.to_string()))?;
    let prepared = prepared?;
    let reply = match client
        .send(
            http::Method::POST,
            "/berth/build/context",
            json_body(&prepared.manifest),
            Some("application/json"),
        )
        .await
    {
        Err(ClientError::Daemon { status: 404, .. }) => return Ok(Err(src)),
        r => r?,
    };
    let reply: berth_build::incremental::SessionReply = decode(reply).await?;
    let missing: std::collections::HashSet<&String> = reply.missing.iter().collect();
    let files = prepared
        .manifest
        .entries
        .iter()
        .filter(|e| e.kind == "file");
    let (total, changed) = files.fold((0, 0), |(t, c), e| {
        (t + 1, c + usize::from(missing.contains(&e.digest)))
    });
    let mut headers = headers.to_vec();
    headers.push(("X-Berth-Context", reply.session));
    let missing = reply.missing;
    let sent = post_build(client, query, &headers, move |w| {
        // Nothing missing: an empty body.
        if missing.is_empty() {
            return Ok(());
        }
        incremental::write_blobs(&prepared.blobs, &missing, w)
    })
    .await;
    let (resp, size) = match sent {
        // The session went (a daemon restart in between, or it timed out): the tar still works.
        Err(CliError::Client(ClientError::Daemon {
            status: 400,
            message,
        })) if message.contains("unknown build context session") => {
            return Ok(Err(src));
        }
        r => r?,
    };
    Ok(Ok((
        resp,
        format!("{} ({changed} of {total} files sent)", human4(size)),
    )))
}

/// `berth build`.
async fn build(ctx: &Ctx, m: Matches) -> CmdResult {
    let arg = m.args[0].clone();
    let file = m.value("file").map(str::to_string);
    let quiet = m.flag("quiet");
    let compress = m.flag("compress");
    let (src, dockerfile) = {
        let arg = arg.clone();
        tokio::task::spawn_blocking(move || prepare(&arg, file.as_deref()))
            .await
            .map_err(|e| msg(e.to_string()))??
    };
    let query = build_query(&m, dockerfile.as_deref())?;
    let mut headers = vec![("X-Registry-Config", registry_config())];
    if let Some(h) = secrets_header(&m)? {
        headers.push(("X-Berth-Build-Secrets", h));
    }
    let client = ctx.client().await?;
    let tty = crate::tty::stdout_is_tty();
    let progress = m.value("progress").unwrap_or("auto");
    let fancy = !quiet
        && match progress {
            "tty" => true,
            "plain" => false,
            _ => tty,
        };
    let started = Instant::now();
    let tar_only = std::env::var("BERTH_BUILD_CONTEXT").is_ok_and(|v| v == "tar");
    let (resp, size) = match src {
        Source::Dir { .. } if !tar_only => {
            match send_incremental(&client, src, &query, &headers).await? {
                Ok(r) => r,
                Err(src) => send_tar(&client, src, compress, &query, &headers).await?,
            }
        }
        src => send_tar(&client, src, compress, &query, &headers).await?,
    };
    if !quiet && !is_remote(&arg) {
        println!("Sending build context to Docker daemon  {size}");
    }
    let mut body = resp.into_body();
    let mut view = View::new(fancy, started);
    let mut buf = Vec::new();
    let mut id: Option<String> = None;
    let mut quiet_stream = String::new();
    let mut failure: Option<(String, i32)> = None;
    let mut handle = |line: &str, view: &mut View| {
        let Ok(msg) = serde_json::from_str::<JsonMessage>(line) else {
            return;
        };
        if let Some(e) = &msg.error_detail {
            let code = e.code.filter(|c| *c != 0).unwrap_or(1) as i32;
            failure = Some((e.message.clone(), code));
            return;
        }
        if let Some(e) = &msg.error {
            failure = Some((e.clone(), 1));
            return;
        }
        if let Some(aux) = &msg.aux {
            if let Some(i) = aux.get("ID").and_then(|v| v.as_str()) {
                id = Some(i.to_string());
            }
            return;
        }
        if quiet {
            if let Some(s) = &msg.stream {
                quiet_stream.push_str(s);
            }
            return;
        }
        view.message(&msg);
    };
    while let Some(chunk) = next_chunk(&mut body).await? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if !text.is_empty() {
                handle(text, &mut view);
            }
        }
    }
    let rest = String::from_utf8_lossy(&buf).trim().to_string();
    if !rest.is_empty() {
        handle(&rest, &mut view);
    }
    view.finish(failure.is_none());
    if let Some((message, code)) = failure {
        if quiet && !quiet_stream.is_empty() {
            eprint!("{quiet_stream}");
        }
        return Err(CliError::Msg(message, code));
    }
    let id = id.or_else(|| {
        let s = quiet_stream.trim();
        s.starts_with("sha256:").then(|| s.to_string())
    });
    if quiet {
        if let Some(i) = &id {
            println!("{i}");
        }
    }
    if let (Some(path), Some(i)) = (m.value("iidfile"), &id) {
        std::fs::write(path, i).map_err(|e| msg(format!("failed to write iidfile: {e}")))?;
    }
    Ok(0)
}

/// Renders the stream: docker's classic lines as they come (plain), or a step view with cache
/// hits and times (terminal).
struct View {
    fancy: bool,
    started: Instant,
    step: Option<(String, Instant, bool)>,
    steps: usize,
    cached: usize,
}

impl View {
    fn new(fancy: bool, started: Instant) -> View {
        View {
            fancy,
            started,
            step: None,
            steps: 0,
            cached: 0,
        }
    }

    fn end_step(&mut self) {
        if let Some((_, t, cached)) = self.step.take() {
            if cached {
                println!("  \x1b[36m=> CACHED\x1b[0m");
            } else {
                println!("  \x1b[32m=> done\x1b[0m {:.1}s", t.elapsed().as_secs_f64());
            }
        }
    }

    fn message(&mut self, msg: &JsonMessage) {
        let Some(text) = msg.stream.as_deref().or(msg.status.as_deref()) else {
            return;
        };
        if !self.fancy {
            if msg.stream.is_some() {
                print!("{text}");
            } else {
                println!("{text}");
            }
            let _ = std::io::stdout().flush();
            return;
        }
        for line in text.split_inclusive('\n') {
            let l = line.trim_end_matches('\n');
            if let Some(s) = l.strip_prefix("Step ") {
                self.end_step();
                self.steps += 1;
                println!(
                    "\x1b[1m[{:>5.1}s] Step {s}\x1b[0m",
                    self.started.elapsed().as_secs_f64()
                );
                self.step = Some((s.to_string(), Instant::now(), false));
            } else if l == " ---> Using cache" {
                self.cached += 1;
                if let Some(st) = self.step.as_mut() {
                    st.2 = true;
                }
            } else if l.starts_with(" ---> ") || l.starts_with("Removing intermediate container") {
                // IDs of intermediate results: the step view shows times instead.
            } else if l.starts_with("Successfully ") {
                self.end_step();
                println!("{l}");
            } else if !l.is_empty() {
                println!("  \x1b[2m│\x1b[0m {l}");
            }
        }
        let _ = std::io::stdout().flush();
    }

    fn finish(&mut self, ok: bool) {
        if !self.fancy {
            return;
        }
        if ok {
            self.end_step();
        } else if let Some((s, t, _)) = self.step.take() {
            println!(
                "  \x1b[31m=> failed\x1b[0m {:.1}s ({s})",
                t.elapsed().as_secs_f64()
            );
        }
        println!(
            "\x1b[1mBuild {} in {:.1}s\x1b[0m ({} steps, {} cached)",
            if ok { "finished" } else { "failed" },
            self.started.elapsed().as_secs_f64(),
            self.steps,
            self.cached
        );
    }
}

/// `berth builder prune`.
async fn prune(ctx: &Ctx, m: Matches) -> CmdResult {
    if !m.flag("force") {
        print!(
            "WARNING! This will remove all dangling build cache.\nAre you sure you want to continue? [y/N] "
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let mut filters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in m.values("filter") {
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        filters.entry(k.into()).or_default().push(v.into());
    }
    let mut qs = vec![format!(
        "filters={}",
        q(&serde_json::to_string(&filters).unwrap_or_default())
    )];
    if m.flag("all") {
        qs.push("all=1".into());
    }
    if let Some(k) = m.value("keep-storage") {
        let n = crate::format::ram_in_bytes(k).map_err(|e| m.bad_value("keep-storage", k, &e))?;
        qs.push(format!("keep-storage={n}"));
    }
    let client = ctx.client().await?;
    let resp = client
        .send(
            http::Method::POST,
            &format!("/build/prune?{}", qs.join("&")),
            crate::client::empty(),
            None,
        )
        .await?;
    let v: serde_json::Value = crate::client::decode(resp).await?;
    if let Some(ids) = v["CachesDeleted"].as_array().filter(|a| !a.is_empty()) {
        println!("Deleted build cache objects:");
        for i in ids {
            println!("{}", i.as_str().unwrap_or(""));
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::format::human_size(v["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human4(3072), "3.072kB");
        assert_eq!(human4(52_428_800), "52.43MB");
        assert_eq!(human4(2), "2B");
    }

    #[test]
    fn archives_are_recognised() {
        assert!(is_archive(&[0x1f, 0x8b, 8]));
        assert!(!is_archive(b"FROM busybox\n"));
    }

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xCBF4_3926);
    }
}
