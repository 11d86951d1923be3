//! `POST /containers/{id}/attach`: connecting a client to the shim's stdio, with detach keys.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::{Ctr, PendingAttach};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shim;

/// Docker's default detach sequence, ctrl-p ctrl-q.
pub const DEFAULT_DETACH: [u8; 2] = [16, 17];

/// Parses a detach-keys string such as `ctrl-p,ctrl-q` (Docker's `term.ToBytes`).
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let bad = || Error::invalid(format!("Invalid detach keys ({s}) provided"));
    let mut out = Vec::new();
    for key in s.split(',') {
        if let Some(k) = key.strip_prefix("ctrl-") {
            let c = k.as_bytes();
            if c.len() != 1 {
                return Err(bad());
            }
            let b = c[0].to_ascii_lowercase();
            out.push(match b {
                b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(bad()),
            });
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

/// Finds the detach sequence in a stream of input, holding back a partial match.
#[derive(Debug)]
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// A scanner for `keys` (empty: never detaches).
    pub fn new(keys: Vec<u8>) -> Self {
        DetachScanner { keys, matched: 0 }
    }

    /// Feeds input; returns the bytes to forward and whether the sequence was completed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return false;
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// Where an attach session's shim connection comes from.
#[derive(Debug)]
pub enum Source {
    /// The container runs: connected.
    Ready(UnixStream),
    /// The container has not started: the connection arrives at start.
    Pending(oneshot::Receiver<UnixStream>),
}

impl Source {
    /// Waits for the shim connection.
    pub async fn connect(self) -> Option<UnixStream> {
        match self {
            Source::Ready(s) => Some(s),
            Source::Pending(rx) => rx.await.ok(),
        }
    }
}

/// Registers an attach: connects now when running, or at the next start.
pub async fn open(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<Source> {
    let _op = c.op.lock().await;
    let rec = c.snapshot();
    if rec.state.paused {
        return Err(Error::Conflict(
            "You cannot attach to a paused container, unpause it first".into(),
        ));
    }
    if rec.state.status == "removing" || c.events.borrow().removed {
        return Err(Error::Conflict(format!(
            "container {} is marked for removal",
            rec.id
        )));
    }
    d.events.container(&rec, "attach", &[]);
    if rec.state.running {
        let s = shim::attach(&d.paths(&c.id).shim_sock(), stdin, stdout, stderr)
            .await
            .map_err(|e| Error::internal(format!("attach: {e}")))?;
        return Ok(Source::Ready(s));
    }
    let (tx, rx) = oneshot::channel();
    c.pending.lock().expect("pending").push(PendingAttach {
        stdin,
        stdout,
        stderr,
        tx,
    });
    Ok(Source::Pending(rx))
}

/// Work to do after the output has ended and before the client connection is closed.
pub type Finish = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Splices a client connection with a shim attach connection until the container's output ends,
/// the client detaches with the key sequence, or the client goes away.
pub async fn splice<C>(
    client: C,
    shim: UnixStream,
    stdin: bool,
    keys: Vec<u8>,
    finish: Option<Finish>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = shim.into_split();
    let output = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.flush().await;
        if let Some(f) = finish {
            f.await;
        }
        let _ = cw.shutdown().await;
    };
    let input = async {
        let mut scanner = DetachScanner::new(keys);
        let mut buf = vec![0u8; 32 * 1024];
        let mut fwd = Vec::new();
        let mut open = true;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if stdin && open {
                        let _ = sw.shutdown().await;
                    }
                    // Keep the output flowing after the client half-closes.
                    std::future::pending::<()>().await;
                    return;
                }
                Ok(n) => n,
            };
            tracing::trace!("attach input {:?}", &buf[..n.min(64)]);
            if !stdin {
                continue;
            }
            fwd.clear();
            let detach = scanner.feed(&buf[..n], &mut fwd);
            if !fwd.is_empty() && open && sw.write_all(&fwd).await.is_err() {
                open = false;
            }
            if detach {
                tracing::debug!("client detached");
                return;
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), DEFAULT_DETACH);
        assert_eq!(
            parse_detach_keys("a,ctrl-@,ctrl-[").unwrap(),
            vec![b'a', 0, 27]
        );
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("abc").is_err());
    }

    #[test]
    fn scanner() {
        let mut s = DetachScanner::new(DEFAULT_DETACH.to_vec());
        let mut out = Vec::new();
        assert!(!s.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        out.clear();
        assert!(!s.feed(b"x", &mut out));
        assert_eq!(out, b"\x10x");
        out.clear();
        assert!(!s.feed(b"\x10\x10", &mut out));
        assert_eq!(out, b"\x10");
        out.clear();
        assert!(s.feed(b"\x11", &mut out));
        assert!(out.is_empty());
        let mut none = DetachScanner::new(vec![]);
        assert!(!none.feed(b"\x10\x11", &mut out));
    }
}
