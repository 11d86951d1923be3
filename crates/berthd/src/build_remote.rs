//! `POST /build?remote=<url>`: the context comes from a URL instead of the request body, as with
//! dockerd. A git URL (`#ref:subdir` fragment allowed) is cloned on the daemon's host; an
//! http(s) URL is downloaded as it is read (size-capped): a tar (plain or gzip) is the context,
//! anything else is taken for a lone Dockerfile. Either way the build reads a context tar, so
//! the rest of `POST /build` is the same for both.

use std::io::{Cursor, Read};
use std::path::Path;
use std::time::Duration;

use berth_build::remote::{
    Capped, dockerfile_tar, git_context_tar, is_git_url, looks_like_archive,
};
use berth_build::{BuildError, BuildOptions};
use bytes::{Buf, Bytes};

use crate::error::{Error, Result};

/// The largest remote context berthd downloads (a tar, before decompression).
pub const MAX_REMOTE_CONTEXT: u64 = 2 << 30;

/// The largest remote Dockerfile (a URL whose content is no archive).
const MAX_REMOTE_DOCKERFILE: u64 = 16 << 20;

/// Enough of a download to tell a tar from a Dockerfile (`ustar` is at 257).
const SNIFF: usize = 512;

fn remote_err(e: BuildError) -> Error {
    Error::invalid(format!("unable to prepare context: {e}"))
}

/// The context tar of `opts.remote` (None without one: the request body is the context). Errors
/// (an unreachable URL, a bad ref, a non-2xx answer) are the client's: HTTP 400.
pub async fn context_reader(
    opts: &BuildOptions,
    tmp: &Path,
) -> Result<Option<Box<dyn Read + Send>>> {
    let Some(url) = opts.remote.clone() else {
        return Ok(None);
    };
    if is_git_url(&url) {
        let tmp = tmp.to_path_buf();
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create build/tmp", e))?;
        let f = tokio::task::spawn_blocking(move || git_context_tar(&url, &tmp))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(remote_err)?;
        return Ok(Some(Box::new(std::io::BufReader::new(f))));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid(format!(
            "remoteURL ({url}) could not be recognized as URL"
        )));
    }
    let shown = berth_build::remote::redact(&url);
    let fail = |e: String| Error::invalid(format!("unable to prepare context: {e}"));
    // A server that stalls fails the request instead of holding a blocking thread forever.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(format!("failed to GET {shown}: {}", without_url(e))))?;
    if !resp.status().is_success() {
        return Err(fail(format!(
            "failed to GET {shown} with status {}",
            resp.status()
        )));
    }
    // Read until it is clear what the download is: a tar streams on from here, a Dockerfile is
    // read whole (it is small).
    let mut head = Vec::new();
    while head.len() < SNIFF {
        match resp.chunk().await {
            Ok(Some(c)) => head.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => return Err(fail(format!("failed to read {shown}: {}", without_url(e)))),
        }
    }
    if looks_like_archive(&head) {
        let r = HttpReader {
            rt: tokio::runtime::Handle::current(),
            resp,
            cur: Bytes::from(head),
        };
        return Ok(Some(Box::new(Capped::new(r, MAX_REMOTE_CONTEXT))));
    }
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| fail(format!("failed to read {shown}: {}", without_url(e))))?
    {
        head.extend_from_slice(&c);
        if head.len() as u64 > MAX_REMOTE_DOCKERFILE {
            return Err(fail(format!(
                "{shown} is neither an archive nor a Dockerfile of at most {MAX_REMOTE_DOCKERFILE} bytes"
            )));
        }
    }
    let tar = dockerfile_tar(&head, opts.dockerfile.as_deref()).map_err(remote_err)?;
    Ok(Some(Box::new(Cursor::new(tar))))
}

/// reqwest's message without the URL it appends (which may carry credentials).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// A download read from the blocking pool (the context is read there).
struct HttpReader {
    rt: tokio::runtime::Handle,
    resp: reqwest::Response,
    cur: Bytes,
}

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.cur.has_remaining() {
            match self.rt.block_on(self.resp.chunk()) {
                Ok(Some(c)) => self.cur = c,
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(without_url(e))),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
