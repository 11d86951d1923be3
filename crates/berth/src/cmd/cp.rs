//! `cp` both ways as the docker CLI does it: tar streams through `/containers/{id}/archive`, the
//! destination rules of moby's `archive.CopyTo` (into an existing directory, or renamed to a new path),
//! `-` for a tar on stdin/stdout, `-a` (`copyUIDGID`) and `-L` (follow a symlink source).

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value as J;

use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Matches, b};
use crate::client::{Client, channel_body, next_chunk, q};
use crate::format::human_size;

/// `cp`'s grammar.
pub const CP: Command = Command {
    path: "cp",
    usage: "[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\tberth cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    about: "Copy files/folders between a container and the local filesystem",
    flags: &[
        b(
            "archive",
            Some('a'),
            "Archive mode (copy all uid/gid information)",
        ),
        b(
            "follow-link",
            Some('L'),
            "Always follow symbol link in SRC_PATH",
        ),
        b(
            "quiet",
            Some('q'),
            "Suppress progress output during copy. Progress output is automatically suppressed if no terminal is attached",
        ),
    ],
    interspersed: true,
    min_args: 2,
    max_args: Some(2),
};

/// Splits `container:path`; absolute or `./`-relative paths are always local, as docker's `splitCpArg`.
pub fn split_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../") {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() => (Some(c), p),
        _ => (None, arg),
    }
}

/// The decoded `X-Docker-Container-Path-Stat` header.
#[derive(Debug, Clone, Default)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Go `FileMode` bits.
    pub mode: u64,
    /// Symlink target, if any.
    pub link_target: String,
}

const MODE_DIR: u64 = 1 << 31;
const MODE_SYMLINK: u64 = 1 << 27;

impl PathStat {
    fn is_dir(&self) -> bool {
        self.mode & MODE_DIR != 0
    }
    fn is_symlink(&self) -> bool {
        self.mode & MODE_SYMLINK != 0
    }
}

fn decode_stat(h: Option<&http::HeaderValue>) -> Option<PathStat> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h?.to_str().ok()?)
        .ok()?;
    let v: J = serde_json::from_slice(&raw).ok()?;
    Some(PathStat {
        name: v["name"].as_str().unwrap_or("").into(),
        mode: v["mode"].as_u64().unwrap_or(0),
        link_target: v["linkTarget"].as_str().unwrap_or("").into(),
    })
}

/// `HEAD /containers/{id}/archive`: the path's stat, `None` when it does not exist.
async fn stat_in(client: &Client, c: &str, path: &str) -> Result<Option<PathStat>, CliError> {
    let r = client
        .send(
            http::Method::HEAD,
            &format!("/containers/{}/archive?path={}", q(c), q(path)),
            crate::client::empty(),
            None,
        )
        .await;
    match r {
        Ok(resp) => Ok(decode_stat(
            resp.headers().get("x-docker-container-path-stat"),
        )),
        Err(e) if e.is_not_found() => {
            // A missing container is an error; a missing path is "does not exist".
            match client.get::<J>(&format!("/containers/{}/json", q(c))).await {
                Ok(_) => Ok(None),
                Err(e2) => Err(e2.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    Path::new(t)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| t.to_string())
}

fn parent_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => t[..i].into(),
        None => ".".into(),
    }
}

/// Renames a tar entry's first component `from` to `to` (empty `to`: the contents go to the root).
fn rebase(path: &Path, from: &str, to: &str) -> PathBuf {
    let mut comps = path.components();
    match comps.next() {
        Some(first) if first.as_os_str() == from => {
            let rest = comps.as_path();
            if to.is_empty() {
                rest.to_path_buf()
            } else {
                Path::new(to).join(rest)
            }
        }
        _ => path.to_path_buf(),
    }
}

/// `berth cp`.
pub async fn cp(ctx: &Ctx, m: Matches) -> CmdResult {
    let (src_c, src) = split_arg(&m.args[0]);
    let (dst_c, dst) = split_arg(&m.args[1]);
    let (src, dst) = (src.to_string(), dst.to_string());
    match (src_c, dst_c) {
        (None, None) => Err(CliError::Msg(
            "must specify at least one container source".into(),
            1,
        )),
        (Some(_), Some(_)) => Err(CliError::Msg(
            "copying between containers is not supported".into(),
            1,
        )),
        (Some(c), None) => from_container(ctx, &m, c, &src, &dst).await,
        (None, Some(c)) => to_container(ctx, &m, c, &src, &dst).await,
    }
}

fn progress_done(m: &Matches, n: u64, dst: &str) {
    if !m.flag("quiet") && rustix::termios::isatty(std::io::stderr()) {
        eprintln!("Successfully copied {} to {dst}", human_size(n as f64));
    }
}

async fn from_container(ctx: &Ctx, m: &Matches, c: &str, src: &str, dst: &str) -> CmdResult {
    if src.is_empty() {
        return Err(CliError::Msg("source can not be empty".into(), 1));
    }
    let client = ctx.client().await?;
    let mut src_path = src.to_string();
    // The name the copy gets when it is not renamed: the link's own name even when following it.
    let link_name = base_name(src);
    if m.flag("follow-link")
        && let Some(st) = stat_in(&client, c, src).await?
        && st.is_symlink()
        && !st.link_target.is_empty()
    {
        src_path = if st.link_target.starts_with('/') {
            st.link_target.clone()
        } else {
            format!("{}/{}", parent_of(src), st.link_target)
        };
    }
    let resp = client
        .send(
            http::Method::GET,
            &format!("/containers/{}/archive?path={}", q(c), q(&src_path)),
            crate::client::empty(),
            None,
        )
        .await?;
    let stat = decode_stat(resp.headers().get("x-docker-container-path-stat")).unwrap_or_default();
    let mut body = resp.into_body();
    if dst == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = next_chunk(&mut body).await? {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        return Ok(0);
    }
    let tar_root = if stat.name.is_empty() {
        base_name(&src_path)
    } else {
        stat.name.clone()
    };
    let dst_path = Path::new(dst);
    let dst_meta = std::fs::metadata(dst_path).ok();
    // Where to extract and what to call the copied root (moby's PrepareArchiveCopy).
    let copy_contents = src.ends_with("/.");
    let (into, new_root): (PathBuf, String) = match dst_meta {
        Some(md) if md.is_dir() => (
            dst_path.to_path_buf(),
            if copy_contents {
                String::new()
            } else {
                link_name.clone()
            },
        ),
        Some(_) if stat.is_dir() => {
            return Err(CliError::Msg(
                format!("cannot copy directory to file: {dst}"),
                1,
            ));
        }
        Some(_) => (PathBuf::from(parent_of(dst)), base_name(dst)),
        None => {
            if dst.ends_with('/') && !stat.is_dir() {
                return Err(CliError::Msg(
                    format!("destination directory {dst} must exist"),
                    1,
                ));
            }
            let parent = PathBuf::from(parent_of(dst));
            if !parent.is_dir() {
                return Err(CliError::Msg(
                    format!("lstat {}: no such file or directory", parent.display()),
                    1,
                ));
            }
            (parent, base_name(dst))
        }
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
    let into2 = into.clone();
    let extract = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let reader = ChanReader {
            rx,
            cur: Bytes::new(),
        };
        let mut ar = tar::Archive::new(reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        let mut total = 0u64;
        for e in ar.entries()? {
            let mut e = e?;
            let p = e.path()?.into_owned();
            let rel = rebase(&p, &tar_root, &new_root);
            if rel.as_os_str().is_empty() {
                continue;
            }
            let target = safe_join(&into2, &rel)?;
            total += e.size();
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if e.header().entry_type() == tar::EntryType::Link {
                // A hard link names another entry of the archive: rebase it the same way.
                let Some(l) = e.link_name()? else { continue };
                let from = safe_join(&into2, &rebase(&l, &tar_root, &new_root))?;
                let _ = std::fs::remove_file(&target);
                std::fs::hard_link(from, &target)?;
                continue;
            }
            if target.symlink_metadata().is_ok_and(|md| !md.is_dir()) {
                std::fs::remove_file(&target)?;
            }
            e.unpack(&target)?;
        }
        Ok(total)
    });
    let mut failed = None;
    while let Some(chunk) = next_chunk(&mut body).await? {
        if tx.send(chunk).is_err() {
            break;
        }
    }
    drop(tx);
    let n = match extract.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            failed = Some(e.to_string());
            0
        }
        Err(e) => {
            failed = Some(e.to_string());
            0
        }
    };
    if let Some(e) = failed {
        return Err(CliError::Msg(e, 1));
    }
    progress_done(m, n, dst);
    Ok(0)
}

/// `root/rel`, refusing `..`, absolute paths and symlinked parents, so an archive from the
/// container cannot write outside `root`.
fn safe_join(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let mut out = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                let last = i + 1 == comps.len();
                if !last
                    && out
                        .symlink_metadata()
                        .is_ok_and(|md| md.file_type().is_symlink())
                {
                    return Err(std::io::Error::other(format!(
                        "refusing to write through the symlink {}",
                        out.display()
                    )));
                }
            }
            Component::CurDir => {}
            _ => {
                return Err(std::io::Error::other(format!(
                    "invalid path in archive: {}",
                    rel.display()
                )));
            }
        }
    }
    Ok(out)
}

/// A blocking reader over chunks received from the async side.
struct ChanReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// A blocking writer that sends what it gets to the request body.
struct ChanWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    n: u64,
}

impl std::io::Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn to_container(ctx: &Ctx, m: &Matches, c: &str, src: &str, dst: &str) -> CmdResult {
    if dst.is_empty() {
        return Err(CliError::Msg("destination can not be empty".into(), 1));
    }
    let client = ctx.client().await?;
    let dst_stat = stat_in(&client, c, dst).await?;
    let copy_uid = if m.flag("archive") {
        "&copyUIDGID=true"
    } else {
        ""
    };
    let (tx, body) = channel_body();
    let (put_path, producer): (String, tokio::task::JoinHandle<std::io::Result<u64>>) =
        if src == "-" {
            match &dst_stat {
                Some(s) if s.is_dir() => {}
                _ => {
                    return Err(CliError::Msg(
                        format!("destination \"{c}:{dst}\" must be a directory"),
                        1,
                    ));
                }
            }
            let h = tokio::task::spawn_blocking(move || {
                let mut w = ChanWriter { tx, n: 0 };
                std::io::copy(&mut std::io::stdin().lock(), &mut w)?;
                Ok(w.n)
            });
            (dst.to_string(), h)
        } else {
            let follow = m.flag("follow-link");
            let md = if follow {
                std::fs::metadata(src)
            } else {
                std::fs::symlink_metadata(src)
            }
            .map_err(|_| CliError::Msg(format!("lstat {src}: no such file or directory"), 1))?;
            let (dir, name) = match &dst_stat {
                Some(s) if s.is_dir() => (dst.to_string(), base_name(src)),
                Some(_) if md.is_dir() => {
                    return Err(CliError::Msg(
                        "Error response from daemon: cannot copy directory".into(),
                        1,
                    ));
                }
                Some(_) => (parent_of(dst), base_name(dst)),
                None => {
                    if dst.ends_with('/') && !md.is_dir() {
                        return Err(CliError::Msg(
                            format!(
                                "Error response from daemon: destination directory {dst} must exist"
                            ),
                            1,
                        ));
                    }
                    (parent_of(dst), base_name(dst))
                }
            };
            let src = src.to_string();
            let h = tokio::task::spawn_blocking(move || {
                let mut w = ChanWriter { tx, n: 0 };
                {
                    let mut b = tar::Builder::new(&mut w);
                    b.follow_symlinks(false);
                    let p = Path::new(&src);
                    if md.is_dir() {
                        b.append_dir_all(&name, p)?;
                    } else if follow {
                        let mut f = std::fs::File::open(p)?;
                        b.append_file(&name, &mut f)?;
                    } else {
                        b.append_path_with_name(p, &name)?;
                    }
                    b.finish()?;
                }
                Ok(w.n)
            });
            (dir, h)
        };
    let resp = client
        .send(
            http::Method::PUT,
            &format!(
                "/containers/{}/archive?path={}{copy_uid}",
                q(c),
                q(&put_path)
            ),
            body,
            Some("application/x-tar"),
        )
        .await;
    let n = producer.await.ok().and_then(Result::ok).unwrap_or(0);
    crate::client::read_body(resp?).await?;
    progress_done(m, n, &format!("{c}:{dst}"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_like_docker() {
        assert_eq!(split_arg("web:/etc/hosts"), (Some("web"), "/etc/hosts"));
        assert_eq!(split_arg("/tmp/a:b"), (None, "/tmp/a:b"));
        assert_eq!(split_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_arg("file"), (None, "file"));
        assert_eq!(split_arg("-"), (None, "-"));
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(parent_of("/etc/hosts"), "/etc");
        assert_eq!(parent_of("/etc"), "/");
        assert_eq!(parent_of("x"), ".");
        assert_eq!(
            rebase(Path::new("hosts/a"), "hosts", "h2"),
            PathBuf::from("h2/a")
        );
        assert_eq!(rebase(Path::new("d/a"), "d", ""), PathBuf::from("a"));
    }
}
