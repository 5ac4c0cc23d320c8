//! The workspace-scoped API a VM reaches through its node's bridge (`/rig/v1`,
//! bridge-and-ai.md §3). The bridge identifies the calling workspace from the connection and
//! hands it over as a [`BridgeCaller`] extension; these handlers never look at credentials.

use super::AppState;
use crate::app::ApiError;
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use rigbox_types::agent::{BridgeCaller, BridgeWorkspace, Whoami};

async fn whoami(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
) -> Result<Json<Whoami>, ApiError> {
    Ok(Json(app.bridge_whoami(&caller).await?))
}

async fn workspace(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
) -> Result<Json<BridgeWorkspace>, ApiError> {
    Ok(Json(app.bridge_workspace(&caller).await?))
}

/// `/rig/v1` routes served by the control plane (the bridge serves the agent's own), with the
/// control plane's error envelope, request IDs and panic containment. The node's bridge mounts
/// this as its upstream; every request must carry a [`BridgeCaller`] extension (without one
/// the extractor answers 500, which the bridge makes impossible).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/rig/v1/whoami", get(whoami))
        .route("/rig/v1/workspace", get(workspace))
        .fallback(super::error::not_found_route)
        .method_not_allowed_fallback(super::error::not_found_route)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::error::panic_response,
        ))
        .layer(axum::middleware::from_fn(super::middleware::request_id))
        .with_state(app)
}
