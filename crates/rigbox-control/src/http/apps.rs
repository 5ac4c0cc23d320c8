//! Handlers of `/apps*`.

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::app::auth::Principal;
use crate::app::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rigbox_types::api::*;
use rigbox_types::ErrorBody;
use serde::Deserialize;

/// Query of `GET /apps`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only the apps of this workspace (ID or name).
    pub workspace_id: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", params(ListQuery),
    responses((status = 200, body = List<App>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<App>>, ApiError> {
    Ok(Json(
        app.list_apps(&p, q.workspace_id.as_deref(), q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", request_body = CreateAppRequest,
    responses((status = 201, body = App), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    let Some(ws) = r.workspace_id.clone() else {
        return Err(ApiError::field("workspace_id", "is required"));
    };
    Ok((StatusCode::CREATED, Json(app.create_app(&p, &ws, r).await?)))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "apps", params(("app" = String, Path)),
    responses((status = 200, body = App), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<App>, ApiError> {
    Ok(Json(app.get_app(&p, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/apps/{app}", tag = "apps", params(("app" = String, Path)), request_body = PatchAppRequest,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn patch(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<PatchAppRequest>,
) -> Result<Json<App>, ApiError> {
    Ok(Json(app.patch_app(&p, &id, r).await?))
}

#[utoipa::path(delete, path = "/api/v1/apps/{app}", tag = "apps", params(("app" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_app(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/apps/{app}/visibility", tag = "apps", params(("app" = String, Path)), request_body = VisibilityRequest,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn visibility(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<VisibilityRequest>,
) -> Result<Json<App>, ApiError> {
    Ok(Json(app.set_app_visibility(&p, &id, r).await?))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}/health", tag = "apps", params(("app" = String, Path)),
    responses((status = 200, body = AppHealth), (status = 404, body = ErrorBody)))]
pub async fn health(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AppHealth>, ApiError> {
    Ok(Json(app.app_health(&p, &id).await?))
}
