//! The bridge service on `172.16.0.1:9090`: the only platform endpoint a VM can reach.
//!
//! The caller is whoever holds the TCP source address's lease on this node (bridge-and-ai.md
//! §2): nothing the caller sends (headers, body, path, `workspace.json`) takes part, and an
//! address without a lease gets 403 `unknown_workspace`. Credential headers (`Authorization`,
//! `Proxy-Authorization`, `Cookie`) are removed before any handler runs, so nothing behind the
//! bridge can use or log them.
//!
//! A [`Direct`] service (the AI proxy) takes the paths it claims first, called with the
//! [`BridgeCaller`]. The bridge itself serves the guest agent's endpoints
//! (`/rig/v1/agent/config` by long poll and `/rig/v1/agent/report`) from the node's
//! [`GuestChannel`]; everything else is handed to an upstream router (the control plane's
//! workspace-scoped `/rig/v1` API), the caller as a [`BridgeCaller`] extension. The bridge's
//! errors use the control-plane envelope `{"error":{"code","message","details"}}` with
//! `details.request_id`, and every response carries `X-Request-Id`.
//!
//! `rigboxd` serves it with [`serve_threads`]: one single-threaded runtime per core, each
//! connection on the one serving the fewest, so a request never crosses threads; [`serve`] runs
//! it in the caller's runtime instead (tests).

use crate::guest::GuestChannel;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rigbox_types::agent::{AgentReport, BridgeCaller};
use rigbox_types::node::ControlLink;
use rigbox_types::{ErrorBody, ErrorDetail, WorkspaceId};
use serde::Deserialize;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Longest long poll a caller may ask for (`wait`, seconds).
pub const MAX_WAIT_SECS: u64 = 30;

/// Looks up the workspace holding an address on this node's bridge (its active leases).
pub type LeaseLookup = Arc<dyn Fn(Ipv4Addr) -> Option<WorkspaceId> + Send + Sync>;

/// What the bridge needs.
#[derive(Clone)]
pub struct BridgeState {
    /// This node, as the control plane knows it.
    pub node_id: String,
    /// Source address -> workspace, from the node's active leases.
    pub leases: LeaseLookup,
    pub guest: Arc<GuestChannel>,
    /// Where a configuration comes from when the channel has none (e.g. after a node restart).
    pub link: Arc<dyn ControlLink>,
    /// Serves the paths it claims ahead of everything else (the AI proxy); see [`Direct`].
    pub direct: Option<Direct>,
    /// Serves the rest of the bridge (`/rig/v1/whoami`, `/rig/v1/workspace`, …); requests reach
    /// it identified and without credential headers. `None`: everything else is 404.
    pub upstream: Option<Router>,
}

/// A service the bridge calls directly for the paths it claims, before its own routes and
/// without a router's layers: the AI proxy, on the path of every AI call (bench/ai-proxy).
/// Requests reach it identified and without credential headers; an answer without
/// `X-Request-Id` gets one.
#[derive(Clone)]
pub struct Direct {
    /// Whether a path is the service's (its routes and its own 404s).
    pub claims: fn(&str) -> bool,
    /// Serves a request of the caller's on a claimed path.
    pub call: Arc<dyn Fn(BridgeCaller, Request) -> BoxResponse + Send + Sync>,
}

/// A direct service's answer to come.
pub type BoxResponse = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

tokio::task_local! {
    /// The ID of the request being served, repeated in error bodies.
    static REQUEST_ID: String;
}

/// An error in the control-plane envelope.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    error_with(status, code, message, serde_json::Map::new())
}

fn error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> Response {
    if let Ok(id) = REQUEST_ID.try_with(Clone::clone) {
        details.insert("request_id".into(), id.into());
    }
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            details,
        },
    };
    (status, Json(body)).into_response()
}

/// `details.fields` for a validation error of one field.
fn field(name: &str, reason: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert(name.into(), reason.into());
    let mut details = serde_json::Map::new();
    details.insert("fields".into(), fields.into());
    details
}

/// The IPv4 address of a peer (IPv4-mapped IPv6 included: a dual-stack socket reports
/// `::ffff:a.b.c.d`).
fn peer_v4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// The bridge's connections and what serves their requests.
struct Bridge {
    st: Arc<BridgeState>,
    router: Router,
    http: auto::Builder<TokioExecutor>,
}

impl Bridge {
    fn new(state: BridgeState) -> Arc<Self> {
        Arc::new(Bridge {
            router: router(state.clone()),
            st: Arc::new(state),
            http: auto::Builder::new(TokioExecutor::new()),
        })
    }

    /// Serves one connection to its end, in the current runtime.
    async fn serve_connection(self: Arc<Self>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        // Without TCP_NODELAY a write after a response head waits for the client's delayed ACK
        // (~40 ms): streamed AI tokens would be held back.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a bridge connection");
        }
        let bridge = self.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let bridge = bridge.clone();
            async move { Ok::<_, Infallible>(bridge.handle(peer, req.map(Body::new)).await) }
        });
        if let Err(e) = self.http.serve_connection(TokioIo::new(tcp), svc).await {
            tracing::debug!(error = %e, "bridge connection ended with an error");
        }
    }

    /// What every request goes through first: its caller is resolved from the connection alone
    /// and credential headers are dropped; then the direct service takes the paths it claims and
    /// the router the rest. Every answer carries `X-Request-Id` (repeated as
    /// `details.request_id` in the bridge's errors; an answer that sets its own keeps it, so the
    /// header always matches the body).
    async fn handle(&self, peer: SocketAddr, mut req: Request) -> Response {
        let caller = identify(&self.st, peer);
        let headers = req.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::PROXY_AUTHORIZATION);
        headers.remove(header::COOKIE);
        match (caller, &self.st.direct) {
            (Some(caller), Some(direct)) if (direct.claims)(req.uri().path()) => {
                with_request_id((direct.call)(caller, req).await, new_id)
            }
            (caller, _) => {
                let id = new_id();
                let resp = REQUEST_ID
                    // Boxed: the router's future is large and the direct path is the hot one.
                    .scope(id.clone(), Box::pin(self.route(peer, caller, req)))
                    .await;
                with_request_id(resp, || id)
            }
        }
    }

    /// Hands an identified request to the router; an unknown caller gets 403.
    async fn route(
        &self,
        peer: SocketAddr,
        caller: Option<BridgeCaller>,
        mut req: Request,
    ) -> Response {
        let Some(caller) = caller else {
            let path = req.uri().path();
            tracing::debug!(peer = %peer, path, "bridge request without a lease");
            let message = "This address holds no workspace lease on this node.";
            if path.starts_with("/v1/") || path.starts_with("/brave/") {
                // The AI proxy's routes answer in the gateway envelope (bridge-and-ai.md §11).
                let body = serde_json::json!({"error": {"code": "unknown_workspace", "message": message,
                    "type": "rigbox_gateway_error", "param": null}});
                return (StatusCode::FORBIDDEN, Json(body)).into_response();
            }
            return error(StatusCode::FORBIDDEN, "unknown_workspace", message);
        };
        req.extensions_mut().insert(caller);
        req.extensions_mut().insert(ConnectInfo(peer));
        match self.router.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

const X_REQUEST_ID: &str = "x-request-id";

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Sets `X-Request-Id` to `id()` unless the answer has one.
fn with_request_id(mut resp: Response, id: impl FnOnce() -> String) -> Response {
    if !resp.headers().contains_key(X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(&id()) {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
    }
    resp
}

/// The workspace holding the lease of the connection's source address on this node.
fn identify(st: &BridgeState, peer: SocketAddr) -> Option<BridgeCaller> {
    let ip = peer_v4(peer)?;
    (st.leases)(ip).map(|workspace_id| BridgeCaller {
        workspace_id,
        node_id: st.node_id.clone(),
        ip,
    })
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    #[serde(default)]
    revision: i64,
    #[serde(default)]
    wait: u64,
}

/// `GET /rig/v1/agent/config?revision=&wait=`: 200 with the config when its revision differs
/// from `revision`, else 204 after up to `wait` seconds.
async fn agent_config(
    State(st): State<BridgeState>,
    Extension(caller): Extension<BridgeCaller>,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) if q.wait <= MAX_WAIT_SECS => q,
        Ok(_) => {
            return error_with(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "wait must be between 0 and 30 seconds.",
                field("wait", "must be an integer between 0 and 30"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                &format!("Invalid query: {}.", e.body_text()),
            )
        }
    };
    let ws = &caller.workspace_id;
    if st.guest.current(ws).is_none() {
        match st.link.guest_config(ws).await {
            // Only if nothing was pushed meanwhile: a push is newer than this fetch.
            Ok(cfg) if st.guest.current(ws).is_none() => st.guest.push(ws, cfg),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(workspace = %ws, error = %e, "cannot fetch a guest config");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "node_unavailable",
                    "The control plane cannot be reached from this node; retry.",
                );
            }
        }
    }
    match st
        .guest
        .config_changed(ws, q.revision, Duration::from_secs(q.wait))
        .await
    {
        Some(cfg) => Json(cfg).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `POST /rig/v1/agent/report`: 204 once recorded.
async fn agent_report(
    State(st): State<BridgeState>,
    Extension(caller): Extension<BridgeCaller>,
    body: Result<Json<AgentReport>, JsonRejection>,
) -> Response {
    let report = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                &format!("Invalid report: {}.", e.body_text()),
            )
        }
    };
    tracing::debug!(
        workspace = %caller.workspace_id,
        revision = report.revision,
        ready = report.ready,
        "agent report"
    );
    st.guest.record_report(&caller.workspace_id, report);
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("No route for {method} {}.", uri.path()),
    )
}

/// The bridge's own routes (the guest agent's), then the upstream router.
fn router(state: BridgeState) -> Router {
    let agent = Router::new()
        .route("/rig/v1/agent/config", get(agent_config))
        .route("/rig/v1/agent/report", post(agent_report))
        // Like the control plane: a wrong method is an unknown route.
        .method_not_allowed_fallback(not_found);
    let app = match state.upstream.clone() {
        Some(up) => agent.fallback_service(up),
        None => agent.fallback(not_found),
    };
    app.with_state(state)
}

/// Serves the bridge of `state` on `listener` until the task is dropped or aborted.
///
/// Connections are served by hyper directly (HTTP/1.1, or HTTP/2 with prior knowledge), each
/// request handed to [`BridgeState::direct`] or the router without layers in between: the AI
/// proxy's calls all pass here.
pub async fn serve(listener: tokio::net::TcpListener, state: BridgeState) {
    let bridge = Bridge::new(state);
    accept_loop(listener, |tcp, peer| {
        tokio::spawn(bridge.clone().serve_connection(tcp, peer));
    })
    .await
}

/// Accepts connections from `listener` and hands each to `serve`, forever.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => serve(tcp, peer),
            Err(e) => {
                // Out of descriptors, most likely: let connections end before the next.
                tracing::warn!(error = %e, "bridge accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The bridge served by one single-threaded runtime per thread ([`serve_threads`]).
pub struct BridgeThreads {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BridgeThreads {
    /// Stops accepting, drops every connection and waits until the listener is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One of [`serve_threads`]' runtimes and how many connections it serves.
struct Worker {
    rt: tokio::runtime::Handle,
    open: std::sync::atomic::AtomicUsize,
}

/// Counts a connection as its worker's while it lives (dropped when it ends, or with the
/// runtime).
struct Open(Arc<[Worker]>, usize);

impl Drop for Open {
    fn drop(&mut self) {
        self.0[self.1]
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves the bridge of `state` on `listener` from `threads` threads, each running a
/// single-threaded runtime: a connection and every task of its requests stay on one thread.
/// Measured against the multi-thread runtime (bench/ai-proxy): its work stealing and
/// cross-thread wake-ups cost ~15% of the CPU of a metered AI request. Tasks a request spawns
/// (a detached AI request, a stream's relay) run on its thread too.
///
/// The first thread accepts and hands each connection to the thread serving the fewest. (With
/// every thread accepting from the same socket, whichever woke first took the connections that
/// arrived together: 32 at once all went to one thread, which then served them alone while the
/// other core idled.)
pub fn serve_threads(
    listener: std::net::TcpListener,
    state: BridgeState,
    threads: usize,
) -> std::io::Result<BridgeThreads> {
    use std::sync::atomic::Ordering;
    listener.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runtimes = (0..threads.max(1))
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let workers: Arc<[Worker]> = runtimes
        .iter()
        .map(|rt| Worker {
            rt: rt.handle().clone(),
            open: 0.into(),
        })
        .collect();
    let bridge = Bridge::new(state);
    let accept = {
        let workers = workers.clone();
        let _in_runtime = runtimes[0].enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        accept_loop(listener, move |tcp, peer| {
            let Some((i, w)) = workers
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.open.load(Ordering::Relaxed))
            else {
                return;
            };
            // Registered again with the reactor of the runtime that serves it.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "bridge cannot hand a connection over");
                    return;
                }
            };
            w.open.fetch_add(1, Ordering::Relaxed);
            let open = Open(workers.clone(), i);
            let bridge = bridge.clone();
            w.rt.spawn(async move {
                let _open = open;
                match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => bridge.serve_connection(tcp, peer).await,
                    Err(e) => tracing::warn!(error = %e, "bridge cannot serve a connection"),
                }
            });
        })
    };
    let mut accept = Some(accept);
    let mut handles = Vec::new();
    for (i, rt) in runtimes.into_iter().enumerate() {
        let mut stopped = stopped.clone();
        let accept = accept.take();
        handles.push(
            std::thread::Builder::new()
                .name(format!("rigbox-bridge-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let stop = stopped.wait_for(|s| *s);
                        match accept {
                            Some(accept) => {
                                tokio::select! {
                                    () = accept => {}
                                    _ = stop => {}
                                }
                            }
                            None => drop(stop.await),
                        }
                    });
                    // Dropping the runtime ends its connections (and closes the listener).
                    drop(rt);
                })?,
        );
    }
    Ok(BridgeThreads {
        stop,
        threads: handles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_ipv4_including_mapped_ones() {
        let v4: SocketAddr = "172.16.0.5:4000".parse().expect("addr");
        assert_eq!(peer_v4(v4), Some(Ipv4Addr::new(172, 16, 0, 5)));
        let mapped: SocketAddr = "[::ffff:172.16.0.5]:4000".parse().expect("addr");
        assert_eq!(peer_v4(mapped), Some(Ipv4Addr::new(172, 16, 0, 5)));
        let v6: SocketAddr = "[fe80::1]:4000".parse().expect("addr");
        assert_eq!(peer_v4(v6), None);
    }
}
