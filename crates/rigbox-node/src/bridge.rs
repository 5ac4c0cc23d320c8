//! The bridge service on `172.16.0.1:9090`: the only platform endpoint a VM can reach.
//!
//! The caller is whoever holds the TCP source address's lease on this node (bridge-and-ai.md
//! §2): nothing the caller sends (headers, body, path, `workspace.json`) takes part, and an
//! address without a lease gets 403 `unknown_workspace`. Identified requests carry a
//! [`BridgeCaller`] extension.
//!
//! The bridge itself serves the guest agent's endpoints (`/rig/v1/agent/config` by long poll and
//! `/rig/v1/agent/report`) from the node's [`GuestChannel`]; everything else is handed to an
//! upstream router (the control plane's workspace-scoped `/rig/v1` API, later the AI proxy).

use crate::guest::GuestChannel;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rigbox_types::agent::{AgentReport, BridgeCaller};
use rigbox_types::node::ControlLink;
use rigbox_types::{ErrorBody, ErrorDetail, WorkspaceId};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Looks up the workspace holding an address on this node's bridge.
pub type LeaseLookup = Arc<dyn Fn(Ipv4Addr) -> Option<WorkspaceId> + Send + Sync>;

/// What the bridge needs.
#[derive(Clone)]
pub struct BridgeState {
    pub node_id: String,
    pub leases: LeaseLookup,
    pub guest: Arc<GuestChannel>,
    pub link: Arc<dyn ControlLink>,
    /// Serves the rest of the bridge (`/rig/v1/whoami`, `/rig/v1/workspace`, …).
    pub upstream: Option<Router>,
}

/// An error in the control-plane envelope.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            details: Default::default(),
        },
    };
    (status, Json(body)).into_response()
}

/// The IPv4 address of a peer (IPv4-mapped IPv6 included).
fn peer_v4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// Resolves the caller from the connection alone.
async fn identify(
    State(st): State<BridgeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = peer_v4(peer).and_then(|ip| {
        (st.leases)(ip).map(|workspace_id| BridgeCaller {
            workspace_id,
            node_id: st.node_id.clone(),
            ip,
        })
    });
    let Some(caller) = caller else {
        return error(
            StatusCode::FORBIDDEN,
            "unknown_workspace",
            "this address holds no workspace lease on this node",
        );
    };
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

/// `GET /rig/v1/agent/config?revision=&wait=`: 200 with the config when its revision differs,
/// else 204 after up to `wait` seconds.
async fn agent_config(
    State(st): State<BridgeState>,
    axum::Extension(caller): axum::Extension<BridgeCaller>,
    q: Result<Query<ConfigQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "revision and wait must be integers",
        );
    };
    if q.wait > 30 {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "wait must be between 0 and 30 seconds",
        );
    }
    let ws = &caller.workspace_id;
    if st.guest.current(ws).is_none() {
        match st.link.guest_config(ws).await {
            // Only if nothing was pushed meanwhile (a push is newer than this fetch).
            Ok(cfg) if st.guest.current(ws).is_none() => st.guest.push(ws, cfg),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(workspace = %ws, error = %e, "cannot fetch guest config");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "node_unavailable",
                    "the control plane is unavailable; retry",
                );
            }
        }
    }
    match st
        .guest
        .changed(ws, q.revision, Duration::from_secs(q.wait))
        .await
    {
        Some(cfg) => Json(cfg).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `POST /rig/v1/agent/report`.
async fn agent_report(
    State(st): State<BridgeState>,
    axum::Extension(caller): axum::Extension<BridgeCaller>,
    body: Result<Json<AgentReport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let report = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                &format!("invalid report: {}", e.body_text()),
            )
        }
    };
    st.guest.record_report(
        &caller.workspace_id,
        &report,
        rigbox_types::time_fmt::now_micros(),
    );
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint on the bridge",
    )
}

/// The bridge's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (as [`serve`] does): identity comes from the connection.
pub fn router(state: BridgeState) -> Router {
    let agent = Router::new()
        .route("/rig/v1/agent/config", get(agent_config))
        .route("/rig/v1/agent/report", post(agent_report));
    let app = match state.upstream.clone() {
        Some(up) => agent.fallback_service(up),
        None => agent.fallback(not_found),
    };
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        identify,
    ))
    .with_state(state)
}

/// Serves `router` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    let svc = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, svc).await {
        tracing::error!(error = %e, "bridge service failed");
    }
}
