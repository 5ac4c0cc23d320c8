//! The workspace-scoped API a VM reaches through its node's bridge (`/rig/v1`,
//! bridge-and-ai.md §3). The bridge identifies the calling workspace from the connection and
//! hands it over as a [`BridgeCaller`] extension; these handlers never look at credentials.
//! Rate limits are those of the control plane's classes, keyed by the calling workspace.

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::app::credits::{Credits, SubjectUsage};
use crate::app::proxy_env::ProxyEnv;
use crate::app::ratelimit::Class;
use crate::app::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
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

async fn credits(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
) -> Result<Json<Credits>, ApiError> {
    Ok(Json(app.bridge_credits(&caller).await?))
}

async fn proxy_env(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
) -> Result<Json<ProxyEnv>, ApiError> {
    Ok(Json(app.bridge_proxy_env(&caller).await?))
}

/// Query of `GET /rig/v1/usage`.
#[derive(Debug, serde::Deserialize)]
struct UsageQuery {
    subject: Option<String>,
    window: Option<String>,
}

async fn usage(
    State(app): State<AppState>,
    Extension(caller): Extension<BridgeCaller>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<SubjectUsage>, ApiError> {
    Ok(Json(
        app.bridge_usage(&caller, q.subject.as_deref(), q.window.as_deref())
            .await?,
    ))
}

/// Takes a rate-limit token of the request's class for the calling workspace (apps under
/// `apps`, everything else under `workspaces`).
async fn rate_limit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(caller) = req.extensions().get::<BridgeCaller>() {
        let class = if req.uri().path().starts_with("/rig/v1/apps") {
            Class::Apps
        } else {
            Class::Workspaces
        };
        let key = format!("ws:{}", caller.workspace_id.as_str());
        if let Err(secs) = app.rate.take(&key, class) {
            return super::middleware::rate_limited(&app, class, secs);
        }
    }
    next.run(req).await
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
        .route("/rig/v1/credits", get(credits))
        .route("/rig/v1/proxy/env", get(proxy_env))
        .route("/rig/v1/usage", get(usage))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rate_limit,
        ))
        .fallback(super::error::not_found_route)
        .method_not_allowed_fallback(super::error::not_found_route)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::error::panic_response,
        ))
        .layer(axum::middleware::from_fn(super::middleware::request_id))
        .with_state(app)
}
