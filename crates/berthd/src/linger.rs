//! Lingering close for API connections. hyper closes a connection whose request body a handler
//! did not read (an error found before the body was needed, e.g. `POST /containers/nosuch/update`);
//! a client still sending that body then gets EPIPE and reports the write error instead of our
//! answer (the docker CLI prints "write: broken pipe"). As Go's server does, the socket is read
//! and discarded for a short while after the response (bounded in time and bytes) before it is
//! closed, so the client always gets to read the answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// How long a closed connection is drained at most.
const LINGER: Duration = Duration::from_secs(2);
/// How much of a closed connection's unread input is discarded at most.
const LINGER_BYTES: u64 = 4 << 20;

/// A connection that drains its unread input when dropped (see the module docs).
#[derive(Debug)]
pub struct LingerIo {
    inner: Option<UnixStream>,
}

impl LingerIo {
    /// Wraps an accepted connection.
    pub fn new(s: UnixStream) -> Self {
        LingerIo { inner: Some(s) }
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut UnixStream> {
        Pin::new(
            self.get_mut()
                .inner
                .as_mut()
                .expect("stream present until drop"),
        )
    }
}

impl Drop for LingerIo {
    fn drop(&mut self) {
        let Some(mut s) = self.inner.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut sink = tokio::io::sink();
            let mut limited = (&mut s).take(LINGER_BYTES);
            let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut limited, &mut sink)).await;
        });
    }
}

impl AsyncRead for LingerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for LingerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Shuts the write half only: the client sees the end of our answer, we go on reading.
        self.stream().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_dropped_connection_still_takes_the_peer_s_writes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        drop(LingerIo::new(a));
        // Without the drain the second write would fail with EPIPE.
        let big = vec![7u8; 1 << 20];
        b.write_all(&big).await.unwrap();
        b.write_all(&big).await.unwrap();
        b.shutdown().await.unwrap();
    }
}
