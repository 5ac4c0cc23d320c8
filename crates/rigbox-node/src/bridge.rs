//! The bridge service on `172.16.0.1:9090`: the only platform endpoint a VM can reach.
//!
//! The caller is whoever holds the TCP source address's lease on this node (bridge-and-ai.md
//! §2): nothing the caller sends (headers, body, path, `workspace.json`) takes part, and an
//! address without a lease gets 403 `unknown_workspace`. Credential headers (`Authorization`,
//! `Proxy-Authorization`, `Cookie`) are removed before any handler runs, so nothing behind the
//! bridge can use or log them. Identified requests carry a [`BridgeCaller`] extension.
//!
//! The bridge itself serves the guest agent's endpoints (`/rig/v1/agent/config` by long poll and
//! `/rig/v1/agent/report`) from the node's [`GuestChannel`]; everything else is handed to an
//! upstream router (the control plane's workspace-scoped `/rig/v1` API, later the AI proxy).
//! Errors use the control-plane envelope `{"error":{"code","message","details"}}` with
//! `details.request_id`, and every response carries `X-Request-Id`.

use crate::guest::GuestChannel;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rigbox_types::agent::{AgentReport, BridgeCaller};
use rigbox_types::node::ControlLink;
use rigbox_types::{ErrorBody, ErrorDetail, WorkspaceId};
use serde::Deserialize;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
    /// Serves the rest of the bridge (`/rig/v1/whoami`, `/rig/v1/workspace`, …); requests reach
    /// it identified and without credential headers. `None`: everything else is 404.
    pub upstream: Option<Router>,
}

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

/// What every request goes through first (one layer: each costs an allocation or two per
/// request): it gets an ID (`X-Request-Id`, and `details.request_id` in errors; an upstream
/// that sets its own header keeps it, so the header always matches the body), and its caller
/// is resolved from the connection alone, credential headers dropped.
async fn enter(
    State(st): State<Arc<BridgeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let mut resp = REQUEST_ID
        .scope(id.clone(), identify(&st, peer, req, next))
        .await;
    if !resp.headers().contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-request-id", v);
        }
    }
    resp
}

/// Resolves the caller from the connection alone and drops credential headers.
async fn identify(st: &BridgeState, peer: SocketAddr, mut req: Request, next: Next) -> Response {
    let caller = peer_v4(peer).and_then(|ip| {
        (st.leases)(ip).map(|workspace_id| BridgeCaller {
            workspace_id,
            node_id: st.node_id.clone(),
            ip,
        })
    });
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
    let headers = req.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::COOKIE);
    req.extensions_mut().insert(caller);
    next.run(req).await
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

/// The bridge's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (as [`serve`] does): identity comes from the connection.
pub fn router(state: BridgeState) -> Router {
    let agent = Router::new()
        .route("/rig/v1/agent/config", get(agent_config))
        .route("/rig/v1/agent/report", post(agent_report))
        // Like the control plane: a wrong method is an unknown route.
        .method_not_allowed_fallback(not_found);
    let app = match state.upstream.clone() {
        Some(up) => agent.fallback_service(up),
        None => agent.fallback(not_found),
    };
    app.layer(axum::middleware::from_fn_with_state(
        Arc::new(state.clone()),
        enter,
    ))
    .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (a long poll lasts at most [`MAX_WAIT_SECS`]).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let svc = router.into_make_service_with_connect_info::<SocketAddr>();
    // Without TCP_NODELAY a write after a response head waits for the client's delayed ACK
    // (~40 ms): streamed AI tokens would be held back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a bridge connection");
        }
    });
    if let Err(e) = axum::serve(listener, svc)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "bridge service failed");
    }
}

/// Serves `router` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    serve_until(listener, router, std::future::pending()).await
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
