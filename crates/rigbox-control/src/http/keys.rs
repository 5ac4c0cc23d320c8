//! Handlers of `/api-keys` and `/ssh-keys`.

use super::extract::{ApiJson, ApiPath, ApiQuery, OptJson};
use super::AppState;
use crate::app::auth::Principal;
use crate::app::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rigbox_types::api::*;
use rigbox_types::ErrorBody;
use serde::Deserialize;

/// `limit` and `cursor` of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "keys", request_body = CreateApiKeyRequest,
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody)))]
pub async fn create_api_key(
    State(app): State<AppState>,
    p: Principal,
    OptJson(r): OptJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_api_key(&p, r.name).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = List<ApiKey>), (status = 401, body = ErrorBody)))]
pub async fn list_api_keys(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<ApiKey>>, ApiError> {
    Ok(Json(
        app.list_api_keys(&p, q.limit, q.cursor.as_deref()).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_api_key(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_api_key(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/ssh-keys", tag = "keys", request_body = CreateSshKeyRequest,
    responses((status = 201, body = SshKey), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_ssh_key(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<CreateSshKeyRequest>,
) -> Result<(StatusCode, Json<SshKey>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(app.add_ssh_key(&p, r.name, r.public_key).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/ssh-keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = List<SshKey>), (status = 401, body = ErrorBody)))]
pub async fn list_ssh_keys(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<List<SshKey>>, ApiError> {
    Ok(Json(
        app.list_ssh_keys(&p, q.limit, q.cursor.as_deref()).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/ssh-keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_ssh_key(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_ssh_key(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
