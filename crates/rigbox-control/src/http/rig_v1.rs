//! The workspace-scoped API a VM reaches through its node's bridge (`/rig/v1`,
//! bridge-and-ai.md §3). The bridge identifies the calling workspace from the connection and
//! hands it over as a [`BridgeCaller`] extension; these handlers never look at credentials.

use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::app::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use rigbox_types::agent::{BridgeCaller, BridgeWorkspace, Whoami};
use rigbox_types::api::{App, CreateAppRequest, PatchAppRequest, VisibilityRequest};

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

/// `{items: [App]}` of `GET /rig/v1/apps`.
#[derive(serde::Serialize)]
struct Apps {
    items: Vec<App>,
}

async fn list_apps(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
) -> Result<Json<Apps>, ApiError> {
    Ok(Json(Apps {
        items: app.bridge_apps(&caller).await?,
    }))
}

async fn create_app(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiJson(r): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    let (p, row) = app.bridge_principal(&caller).await?;
    if r.workspace_id
        .as_ref()
        .is_some_and(|w| *w != row.id && *w != row.name)
    {
        return Err(ApiError::field(
            "workspace_id",
            "a workspace creates apps for itself only",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(app.create_app(&p, &row.id, r).await?),
    ))
}

async fn get_app(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<App>, ApiError> {
    let (p, id) = app.bridge_app(&caller, &name).await?;
    Ok(Json(app.get_app(&p, &id).await?))
}

async fn patch_app(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(r): ApiJson<PatchAppRequest>,
) -> Result<Json<App>, ApiError> {
    let (p, id) = app.bridge_app(&caller, &name).await?;
    Ok(Json(app.patch_app(&p, &id, r).await?))
}

async fn delete_app(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let (p, id) = app.bridge_app(&caller, &name).await?;
    app.delete_app(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn app_visibility(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(r): ApiJson<VisibilityRequest>,
) -> Result<Json<App>, ApiError> {
    let (p, id) = app.bridge_app(&caller, &name).await?;
    Ok(Json(app.set_app_visibility(&p, &id, r).await?))
}

/// `/rig/v1` routes served by the control plane (the bridge serves the agent's own), with the
/// control plane's error envelope, request IDs and panic containment. The node's bridge mounts
/// this as its upstream; every request must carry a [`BridgeCaller`] extension (without one
/// the extractor answers 500, which the bridge makes impossible).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/rig/v1/whoami", get(whoami))
        .route("/rig/v1/workspace", get(workspace))
        .route("/rig/v1/apps", get(list_apps).post(create_app))
        .route(
            "/rig/v1/apps/{app}",
            get(get_app).patch(patch_app).delete(delete_app),
        )
        .route("/rig/v1/apps/{app}/visibility", put(app_visibility))
        .fallback(super::error::not_found_route)
        .method_not_allowed_fallback(super::error::not_found_route)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::error::panic_response,
        ))
        .layer(axum::middleware::from_fn(super::middleware::request_id))
        .with_state(app)
}
