//! Remote build sources: git repositories (`ADD <git url> <dest>` and `POST /build?remote=<git
//! url>`) fetched with the `git` binary, and the context a downloaded file makes (a tar, or a
//! lone Dockerfile), as dockerd and BuildKit treat them.
//!
//! A git URL is `https://host/repo.git`, `git://...`, `ssh://...`, `git@host:repo.git` or
//! `github.com/owner/repo`, with an optional fragment `#ref:subdir` (branch, tag, full commit
//! or any ref such as `refs/pull/1/head`; the subdirectory of the repository to use). Only the
//! `http(s)`, `git` and `ssh` transports are allowed (also for submodules): a client must not
//! make the daemon read repositories from its own disk through `file://` or a bare path.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::context::resolve_in_root;
use crate::error::{BuildError, Result};

/// The transports git may use for a build (`GIT_ALLOW_PROTOCOL`); `file` is not one of them.
const ALLOWED_PROTOCOLS: &str = "http:https:git:ssh";

/// Whether `s` names a git repository rather than a file to download: the prefixes `git@`,
/// `git://`, `ssh://`, `github.com/`, or an `http(s)` URL whose path ends in `.git` (before an
/// optional `#fragment`), as the docker CLI and BuildKit decide.
pub fn is_git_url(s: &str) -> bool {
    if ["git@", "git://", "ssh://", "github.com/"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        return true;
    }
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return false;
    }
    let base = s.split('#').next().unwrap_or(s);
    let path = base.split('?').next().unwrap_or(base);
    path.trim_end_matches('/').ends_with(".git")
}

/// A git source: where the repository is, which ref, which subdirectory.
#[derive(Clone, PartialEq, Eq)]
pub struct GitUrl {
    /// The URL git fetches from (no fragment; `github.com/x` becomes `https://github.com/x`).
    pub remote: String,
    /// The ref of the fragment (None: the remote's HEAD).
    pub reference: Option<String>,
    /// The subdirectory of the fragment, cleaned and relative (None: the whole repository).
    pub subdir: Option<String>,
}

impl std::fmt::Debug for GitUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for GitUrl {
    /// The URL as given, with any password or token in it hidden (errors and logs show it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.remote))?;
        match (&self.reference, &self.subdir) {
            (None, None) => Ok(()),
            (r, None) => write!(f, "#{}", r.as_deref().unwrap_or("")),
            (r, Some(s)) => write!(f, "#{}:{s}", r.as_deref().unwrap_or("")),
        }
    }
}

/// `scheme://user:secret@host/...` → `scheme://user:xxxxx@host/...` (a lone user name, like the
/// `git` of `git@host:repo`, stays: it is no secret).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            let hidden = if rest[..at].contains(':') {
                format!("{user}:xxxxx")
            } else {
                "xxxxx".to_string()
            };
            format!("{scheme}://{hidden}{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

impl GitUrl {
    /// Parses a git URL with its optional `#ref:subdir` fragment. A subdirectory that climbs
    /// out of the repository (`..`) is refused here; symlinks in it are resolved inside the
    /// checkout later.
    pub fn parse(s: &str) -> std::result::Result<GitUrl, String> {
        let (base, fragment) = match s.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (s, None),
        };
        if base.is_empty() {
            return Err(format!("invalid git URL: {s:?}"));
        }
        let remote = if base.starts_with("github.com/") {
            format!("https://{base}")
        } else {
            base.to_string()
        };
        if remote.starts_with('-') {
            return Err(format!("invalid git URL: {s:?}"));
        }
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (Some(r), Some(d)),
                None => (Some(f), None),
            },
        };
        let reference = reference
            .map(str::to_string)
            .filter(|r| !r.is_empty())
            .map(|r| {
                // A ref starting with `-` would be read by git as an option.
                if r.starts_with('-') || r.contains("..") || r.chars().any(char::is_whitespace) {
                    Err(format!("invalid git reference {r:?} in {}", redact(s)))
                } else {
                    Ok(r)
                }
            })
            .transpose()?;
        let subdir = match subdir {
            None => None,
            Some(d) => {
                let mut parts: Vec<&str> = Vec::new();
                for c in d.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => {
                            if parts.pop().is_none() {
                                return Err(format!(
                                    "subdirectory {d:?} of {} is outside of the repository",
                                    redact(s)
                                ));
                            }
                        }
                        c => parts.push(c),
                    }
                }
                (!parts.is_empty()).then(|| parts.join("/"))
            }
        };
        Ok(GitUrl {
            remote,
            reference,
            subdir,
        })
    }

    /// The commit the ref names on the remote now (`git ls-remote`), without fetching anything;
    /// None when the remote advertises no such ref (a commit ID, which only a fetch resolves).
    pub fn resolve(
        &self,
        cancelled: &dyn Fn() -> bool,
    ) -> std::result::Result<Option<String>, String> {
        let r = self.reference.as_deref().unwrap_or("HEAD");
        if is_full_commit(r) {
            return Ok(Some(r.to_ascii_lowercase()));
        }
        let out = git(None, &["ls-remote", "--", &self.remote, r], cancelled)
            .map_err(|e| format!("failed to resolve {self}: {e}"))?;
        let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
        // The order of preference of `git fetch <ref>`: the exact name, a branch, a tag (its
        // commit, `^{}`, when annotated).
        let want = [
            r.to_string(),
            format!("refs/heads/{r}"),
            format!("refs/tags/{r}^{{}}"),
            format!("refs/tags/{r}"),
        ];
        Ok(want
            .iter()
            .find_map(|w| refs.iter().find(|(_, name)| name == w))
            .map(|(sha, _)| sha.to_string()))
    }

    /// Fetches the ref (shallow when the transport allows) into a new directory under
    /// `tmp_parent` and checks it out, with submodules. Without `keep_git_dir` every `.git` is
    /// removed. File modes are made independent of the daemon's umask (0644, or 0755 for
    /// executables and directories), as git records no more than the executable bit.
    pub fn checkout(
        &self,
        tmp_parent: &Path,
        keep_git_dir: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> std::result::Result<Checkout, String> {
        fs::create_dir_all(tmp_parent)
            .map_err(|e| format!("create {}: {e}", tmp_parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(tmp_parent)
            .map_err(|e| format!("create a temporary directory: {e}"))?;
        let repo = tmp.path().join("repo");
        let fail = |what: &str, e: String| format!("failed to {what} {self}: {e}");
        let repo_s = repo.to_string_lossy().into_owned();
        git(None, &["init", "-q", &repo_s], cancelled).map_err(|e| fail("clone", e))?;
        let g = |args: &[&str]| git(Some(&repo), args, cancelled);
        g(&["remote", "add", "origin", &self.remote]).map_err(|e| fail("clone", e))?;
        let r = self.reference.as_deref().unwrap_or("HEAD");
        // Shallow first; the dumb HTTP transport cannot. A (short) commit ID that the server
        // does not let us ask for directly needs the whole history to be found in.
        let fetched = g(&[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "origin",
            "--",
            r,
        ])
        .or_else(|_| g(&["fetch", "-q", "--no-tags", "origin", "--", r]));
        let target = match fetched {
            Ok(_) => "FETCH_HEAD".to_string(),
            Err(e) if !may_be_commit(r) => return Err(fail("fetch", e)),
            Err(_) => {
                g(&[
                    "fetch",
                    "-q",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ])
                .map_err(|e| fail("fetch", e))?;
                g(&["rev-parse", "--verify", "-q", &format!("{r}^{{commit}}")])
                    .map_err(|_| format!("failed to fetch {self}: reference {r:?} not found"))?
                    .trim()
                    .to_string()
            }
        };
        g(&["checkout", "-q", "--detach", &target]).map_err(|e| fail("check out", e))?;
        let commit = g(&["rev-parse", "HEAD"])
            .map_err(|e| fail("check out", e))?
            .trim()
            .to_string();
        if repo.join(".gitmodules").exists() {
            let sub = ["submodule", "update", "-q", "--init", "--recursive"];
            let shallow = [&sub[..], &["--depth", "1"]].concat();
            if g(&shallow).is_err() {
                g(&sub).map_err(|e| fail("fetch the submodules of", e))?;
            }
        }
        let root = match &self.subdir {
            None => repo.clone(),
            Some(d) => {
                let p = resolve_in_root(&repo, d, true)
                    .map_err(|e| format!("subdirectory {d:?} of {self}: {e}"))?;
                if !fs::metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(format!(
                        "subdirectory {d:?} of {self} is not a directory in the repository"
                    ));
                }
                p
            }
        };
        normalize(&repo, !keep_git_dir).map_err(|e| fail("check out", e.to_string()))?;
        Ok(Checkout {
            _tmp: tmp,
            root,
            commit,
        })
    }

    /// The content hash of this source at `commit` for cache keys: the commit stands for the
    /// files (with `keep_git_dir` for the `.git` too).
    pub fn content_hash(&self, commit: &str, keep_git_dir: bool) -> String {
        let mut h = Sha256::new();
        h.update(
            format!(
                "git\0{}\0{commit}\0{}\0{keep_git_dir}",
                self.remote,
                self.subdir.as_deref().unwrap_or("")
            )
            .as_bytes(),
        );
        hex::encode(h.finalize())
    }
}

/// A checked-out repository in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct Checkout {
    _tmp: tempfile::TempDir,
    /// The directory to use: the checkout, or the fragment's subdirectory in it.
    pub root: PathBuf,
    /// The commit checked out.
    pub commit: String,
}

/// Whether a ref could be a commit ID, full or abbreviated (git's shortest is 4 digits).
fn may_be_commit(r: &str) -> bool {
    (4..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_full_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes `.git` entries (when `strip_git`) and sets modes to 0644/0755 under `dir`, never
/// following symlinks.
fn normalize(dir: &Path, strip_git: bool) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if strip_git && e.file_name() == ".git" {
            if ft.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
            continue;
        }
        if ft.is_dir() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            // A kept `.git` stays as git wrote it.
            if e.file_name() != ".git" {
                normalize(&p, strip_git)?;
            }
        } else if ft.is_file() {
            let exec = e.metadata()?.permissions().mode() & 0o100 != 0;
            fs::set_permissions(
                &p,
                fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )?;
        }
    }
    Ok(())
}

/// Runs `git` (in `dir`) with no terminal prompts, no hooks and only the allowed transports;
/// returns its stdout, or its last stderr line (or exit status) as the error. `cancelled` is
/// polled: a cancelled build kills git.
fn git(
    dir: Option<&Path>,
    args: &[&str],
    cancelled: &dyn Fn() -> bool,
) -> std::result::Result<String, String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "advice.detachedHead=false",
        "-c",
        "init.defaultBranch=main",
        "-c",
        "protocol.file.allow=never",
        // A server that stops sending fails the fetch instead of hanging the build.
        "-c",
        "http.lowSpeedLimit=1",
        "-c",
        "http.lowSpeedTime=120",
    ])
    .args(args)
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "git is not installed on the daemon's host".to_string(),
        _ => format!("run git: {e}"),
    })?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("build cancelled".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for git: {e}")),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    let msg = err
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("hint:"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("git {} failed: {status}", args.first().unwrap_or(&"")));
    Err(redact_in(&msg))
}

/// Hides credentials in URLs quoted in a git message.
fn redact_in(msg: &str) -> String {
    msg.split(' ')
        .map(|w| {
            let q = w.trim_matches(|c| c == '\'' || c == '"');
            if q.contains("://") {
                w.replace(q, &redact(q))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `POST /build?remote=<git url>`: the repository (at the fragment's ref, in its subdirectory)
/// as a context tar, spooled in an unnamed file under `tmp_parent` and rewound. The daemon reads
/// it like a tar a client sent ([`crate::BuildContext::from_tar`]: the same checks, the same index), so
/// `dockerfile` is relative to the subdirectory; the checkout goes at once. `.git` is left out.
pub fn git_context_tar(url: &str, tmp_parent: &Path) -> Result<fs::File> {
    let g = GitUrl::parse(url).map_err(BuildError::Invalid)?;
    let co = g
        .checkout(tmp_parent, false, &|| false)
        .map_err(BuildError::Invalid)?;
    let mut spool =
        tempfile::tempfile_in(tmp_parent).map_err(|e| BuildError::io("create a spool file", e))?;
    {
        let mut b = tar::Builder::new(&mut spool);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir_all(".", &co.root)
            .and_then(|_| b.finish())
            .map_err(|e| BuildError::io(format!("pack the checkout of {g}"), e))?;
    }
    drop(co);
    io::Seek::rewind(&mut spool).map_err(|e| BuildError::io("rewind the spool file", e))?;
    Ok(spool)
}

/// Whether the first bytes of a download are a tar or a gzip stream (else it is taken for a
/// Dockerfile).
pub fn looks_like_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// `remote=<url of a text file>`: a context tar holding only that file as the Dockerfile, as
/// dockerd does. It is named `dockerfile` (the request's, default `Dockerfile`), so the
/// `dockerfile` parameter finds it whatever it says.
pub fn dockerfile_tar(text: &[u8], dockerfile: Option<&str>) -> Result<Vec<u8>> {
    let name = dockerfile.filter(|d| !d.is_empty()).unwrap_or("Dockerfile");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, text)
        .map_err(|e| BuildError::Invalid(format!("invalid Dockerfile name {name:?}: {e}")))?;
    b.into_inner()
        .map_err(|e| BuildError::io("make the context", e))
}

/// A reader that fails once more than `cap` bytes came through (a download's size limit).
#[derive(Debug)]
pub struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R> Capped<R> {
    /// Wraps `inner`, allowing `cap` bytes.
    pub fn new(inner: R, cap: u64) -> Self {
        Capped {
            inner,
            left: cap,
            cap,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, so reaching the cap exactly is not an error.
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(io::Error::other(format!(
                "remote context is larger than the limit of {} bytes",
                self.cap
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::BuildContext;

    #[test]
    fn git_urls_like_docker() {
        for s in [
            "https://github.com/a/b.git",
            "https://h/r.git#main",
            "https://h/r.git#v1:sub/dir",
            "http://127.0.0.1:8/r.git/",
            "git@github.com:a/b.git",
            "git://h/r",
            "ssh://git@h/r.git",
            "github.com/a/b",
        ] {
            assert!(is_git_url(s), "{s}");
        }
        for s in [
            "https://h/file.tar.gz",
            "https://h/Dockerfile",
            "https://h/x.git.tar",
            "./r.git",
            "/srv/r.git",
            "file:///srv/r.git",
        ] {
            assert!(!is_git_url(s), "{s}");
        }
    }

    #[test]
    fn fragments_and_subdirs() {
        let g = GitUrl::parse("https://h/r.git#v1:a/./b/").unwrap();
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference.as_deref(), Some("v1"));
        assert_eq!(g.subdir.as_deref(), Some("a/b"));
        let g = GitUrl::parse("git@h:r.git#:sub").unwrap();
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("sub")));
        let g = GitUrl::parse("github.com/a/b#main").unwrap();
        assert_eq!(g.remote, "https://github.com/a/b");
        assert_eq!(
            GitUrl::parse("https://h/r.git#x:a/../b")
                .unwrap()
                .subdir
                .as_deref(),
            Some("b")
        );
        assert!(GitUrl::parse("https://h/r.git#main:../x").is_err());
        assert!(GitUrl::parse("https://h/r.git#main:a/../../x").is_err());
        assert!(GitUrl::parse("https://h/r.git#--upload-pack=x").is_err());
        assert!(GitUrl::parse("-u.git").is_err());
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(redact("https://u:tok@h/r.git"), "https://u:xxxxx@h/r.git");
        assert_eq!(redact("https://tok@h/r.git"), "https://xxxxx@h/r.git");
        assert_eq!(redact("https://h/a@b.git"), "https://h/a@b.git");
        assert_eq!(redact("git@h:r.git"), "git@h:r.git");
        let g = GitUrl::parse("https://u:tok@h/r.git#main:sub").unwrap();
        assert_eq!(g.to_string(), "https://u:xxxxx@h/r.git#main:sub");
        assert_eq!(
            redact_in("fatal: unable to access 'https://u:tok@h/r.git/': nope"),
            "fatal: unable to access 'https://u:xxxxx@h/r.git/': nope"
        );
    }

    #[test]
    fn capped_reader() {
        let mut s = String::new();
        assert!(Capped::new(&b"12345"[..], 5).read_to_string(&mut s).is_ok());
        assert!(
            Capped::new(&b"123456"[..], 5)
                .read_to_string(&mut s)
                .is_err()
        );
    }

    #[test]
    fn archives_and_dockerfiles() {
        assert!(looks_like_archive(&[0x1f, 0x8b, 8]));
        assert!(!looks_like_archive(b"FROM scratch\n"));
        let tmp = tempfile::tempdir().unwrap();
        for name in [None, Some("sub/Dockerfile.web")] {
            let tar = dockerfile_tar(b"FROM scratch\n", name).unwrap();
            let ctx = BuildContext::from_tar(&tar[..], tmp.path(), name).unwrap();
            assert_eq!(ctx.dockerfile(), "FROM scratch\n");
        }
    }

    /// A path on the daemon's host is no remote: git refuses the `file` transport for builds.
    #[test]
    fn local_repositories_are_refused() {
        if Command::new("git").arg("--version").output().is_err() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let ok = Command::new("git")
            .args(["init", "-q"])
            .arg(&src)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        for url in [
            src.display().to_string(),
            format!("file://{}", src.display()),
        ] {
            let g = GitUrl::parse(&url).unwrap();
            let err = g
                .checkout(&tmp.path().join("t"), false, &|| false)
                .unwrap_err();
            assert!(err.starts_with("failed to"), "{err}");
        }
    }
}
