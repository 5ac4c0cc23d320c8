//! Upstream connections kept open between requests, per workspace run and port.
//!
//! HTTP/1.1: a request takes an idle connection that is ready (the most recently used first)
//! or opens one; once its response has been read to the end the connection goes back, unless
//! it closed, was upgraded (WebSockets never come back), or the pool of that upstream already
//! holds `max_idle`. HTTP/2 (`protocol: h2c`): all requests to one upstream share one
//! connection while it stays open.
//!
//! The key holds the workspace's generation, which changes at every start and stop, so a
//! connection made to one run of a VM is never used for the next one (whose address may be
//! reused by another VM). Idle connections are closed after `idle_timeout` by a sweeper task.

use bytes::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rigbox_types::WorkspaceId;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The body of every request sent upstream.
pub(crate) type UpBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Where a connection goes: one run of a workspace's VM, one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Upstream {
    pub workspace: WorkspaceId,
    pub generation: i64,
    pub port: u16,
}

struct Idle {
    tx: http1::SendRequest<UpBody>,
    since: Instant,
}

struct Shared {
    tx: http2::SendRequest<UpBody>,
    used: Instant,
}

pub(crate) struct Pool {
    h1: Mutex<HashMap<Upstream, VecDeque<Idle>>>,
    h2: Mutex<HashMap<Upstream, Shared>>,
    max_idle: usize,
    idle_timeout: Duration,
    sweeping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            h1: Mutex::default(),
            h2: Mutex::default(),
            max_idle,
            idle_timeout,
            sweeping: AtomicBool::new(false),
        })
    }

    /// An idle HTTP/1.1 connection to `up` that is ready for a request, if any.
    pub(crate) fn take_h1(&self, up: &Upstream) -> Option<http1::SendRequest<UpBody>> {
        let mut map = lock(&self.h1);
        let list = map.get_mut(up)?;
        let mut found = None;
        while let Some(idle) = list.pop_back() {
            if idle.since.elapsed() < self.idle_timeout && idle.tx.is_ready() {
                found = Some(idle.tx);
                break;
            }
        }
        if list.is_empty() {
            map.remove(up);
        }
        found
    }

    /// Gives `tx` back once the response it carries has been read to the end (a task waits
    /// for that); a connection that closes meanwhile is dropped.
    pub(crate) fn put_h1_when_done(
        self: &Arc<Self>,
        up: Upstream,
        mut tx: http1::SendRequest<UpBody>,
    ) {
        if self.max_idle == 0 {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if tx.ready().await.is_err() {
                return;
            }
            if let Some(pool) = pool.upgrade() {
                pool.put_h1(up, tx);
            }
        });
    }

    fn put_h1(&self, up: Upstream, tx: http1::SendRequest<UpBody>) {
        let now = Instant::now();
        let mut map = lock(&self.h1);
        let list = map.entry(up).or_default();
        // Oldest first: expired ones, then any beyond the bound, are closed (by dropping).
        while list
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout)
        {
            list.pop_front();
        }
        while list.len() >= self.max_idle {
            list.pop_front();
        }
        list.push_back(Idle { tx, since: now });
    }

    /// The shared HTTP/2 connection to `up`, while it is open.
    pub(crate) fn h2(&self, up: &Upstream) -> Option<http2::SendRequest<UpBody>> {
        let mut map = lock(&self.h2);
        let shared = map.get_mut(up)?;
        if shared.tx.is_closed() {
            map.remove(up);
            return None;
        }
        shared.used = Instant::now();
        Some(shared.tx.clone())
    }

    pub(crate) fn put_h2(&self, up: Upstream, tx: http2::SendRequest<UpBody>) {
        lock(&self.h2).insert(
            up,
            Shared {
                tx,
                used: Instant::now(),
            },
        );
    }

    /// Closes idle connections past the idle timeout and forgets closed ones.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let fresh = |t: Instant| now.duration_since(t) < self.idle_timeout;
        lock(&self.h1).retain(|_, list| {
            list.retain(|i| fresh(i.since) && !i.tx.is_closed());
            !list.is_empty()
        });
        // Requests in flight hold their own handle: dropping ours only ends the connection
        // once they are done.
        lock(&self.h2).retain(|_, s| fresh(s.used) && !s.tx.is_closed());
    }

    /// Starts the sweeper (once); it ends with the pool.
    pub(crate) fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }
}

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot connect to the app's port")]
    Connect(#[source] std::io::Error),
    #[error("the HTTP handshake with the app failed")]
    Handshake(#[source] hyper::Error),
}

/// A new HTTP/1.1 connection over `stream` (upgrades allowed).
pub(crate) async fn handshake_h1(
    stream: tokio::net::TcpStream,
) -> Result<http1::SendRequest<UpBody>, ConnectError> {
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(tx)
}

/// A new HTTP/2 connection with prior knowledge over `stream`.
pub(crate) async fn handshake_h2(
    stream: tokio::net::TcpStream,
) -> Result<http2::SendRequest<UpBody>, ConnectError> {
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(conn);
    Ok(tx)
}
