//! The idle timeout of client connections (apps-and-routing.md §7: 300 s on any proxied
//! connection, WebSockets included): a connection on which no byte moved either way for that
//! long is closed.
//!
//! [`Tracked`] wraps the client's socket and marks its [`Activity`] whenever bytes move (one
//! relaxed store: no clock is read per read or write); whoever runs the connection races it
//! against [`Activity::idle`], which looks at the mark every tenth of the timeout, so a quiet
//! connection closes between 1 and 1.1 timeouts after its last byte. Upgraded connections
//! (WebSockets) keep the wrapped socket, so the splice task races the same activity.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Whether bytes moved on one connection since [`Activity::idle`] last looked.
#[derive(Debug)]
pub struct Activity {
    moved: AtomicBool,
    timeout: Duration,
}

impl Activity {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            moved: AtomicBool::new(false),
            timeout,
        })
    }

    fn touch(&self) {
        // A load first: most touches find the mark already set and write nothing.
        if !self.moved.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves once nothing moved for the timeout (give or take a tenth of it).
    pub(crate) async fn idle(&self) {
        let tick = (self.timeout / 10).max(Duration::from_millis(1));
        let mut quiet = Duration::ZERO;
        let mut next = Instant::now() + tick;
        loop {
            tokio::time::sleep_until(next).await;
            next += tick;
            if self.moved.swap(false, Ordering::Relaxed) {
                quiet = Duration::ZERO;
            } else {
                quiet += tick;
                if quiet >= self.timeout {
                    return;
                }
            }
        }
    }
}

/// A socket that records its activity.
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_the_timeout_without_traffic() {
        let activity = Activity::new(Duration::from_secs(300));
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Tracked::new(a, activity.clone());
        let idle = activity.idle();
        tokio::pin!(idle);
        // Traffic every 200 s keeps the connection alive past 300 s.
        for _ in 0..3 {
            tokio::select! {
                _ = &mut idle => panic!("idle while in use"),
                _ = tokio::time::sleep(Duration::from_secs(200)) => {}
            }
            b.write_all(b"x").await.expect("write");
            let mut one = [0u8; 1];
            a.read_exact(&mut one).await.expect("read");
        }
        let quiet = Instant::now();
        idle.await;
        let waited = quiet.elapsed().as_secs();
        assert!((300..=330).contains(&waited), "{waited}");
    }
}
