//! Handlers of `/workspaces*`.

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

type Accepted = (StatusCode, Json<Workspace>);

/// Query of `GET /workspaces`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Query of `DELETE /workspaces/{ws}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    pub force: Option<bool>,
}

/// An action body: none is expected, but an empty JSON object is accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", params(ListQuery),
    responses((status = 200, body = List<Workspace>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Workspace>>, ApiError> {
    Ok(Json(
        app.list_workspaces(&p, q.status.as_deref(), q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspaceRequest,
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<CreateWorkspaceRequest>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_workspace(&p, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path, description = "ID or name")),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(app.get_workspace(&p, &ws).await?))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}", tag = "workspaces", params(("ws" = String, Path), DeleteQuery),
    responses((status = 202, body = Workspace), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Accepted, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(
            app.delete_workspace(&p, &ws, q.force.unwrap_or(false))
                .await?,
        ),
    ))
}

macro_rules! action {
    ($name:ident, $path:literal, $method:ident) => {
        #[utoipa::path(post, path = $path, tag = "workspaces", params(("ws" = String, Path)),
            responses((status = 202, body = Workspace), (status = 402, body = ErrorBody), (status = 404, body = ErrorBody),
                      (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
        pub async fn $name(
            State(app): State<AppState>,
            p: Principal,
            ApiPath(ws): ApiPath<String>,
            OptJson(_body): OptJson<NoBody>,
        ) -> Result<Accepted, ApiError> {
            Ok((StatusCode::ACCEPTED, Json(app.$method(&p, &ws).await?)))
        }
    };
}

action!(start, "/api/v1/workspaces/{ws}/start", start_workspace);
action!(stop, "/api/v1/workspaces/{ws}/stop", stop_workspace);
action!(
    restart,
    "/api/v1/workspaces/{ws}/restart",
    restart_workspace
);
action!(cancel, "/api/v1/workspaces/{ws}/cancel", cancel_workspace);
action!(retry, "/api/v1/workspaces/{ws}/retry", retry_workspace);

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/resources", tag = "workspaces", params(("ws" = String, Path)),
    request_body = ResizeRequest,
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resize(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
    ApiJson(r): ApiJson<ResizeRequest>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(app.resize_workspace(&p, &ws, r).await?))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/env", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 200, body = EnvVars), (status = 404, body = ErrorBody)))]
pub async fn get_env(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<EnvVars>, ApiError> {
    Ok(Json(app.get_env(&p, &ws).await?))
}

#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/env", tag = "workspaces", params(("ws" = String, Path)),
    request_body = EnvPatch,
    responses((status = 200, body = EnvPatched), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patch_env(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
    ApiJson(r): ApiJson<EnvPatch>,
) -> Result<Json<EnvPatched>, ApiError> {
    Ok(Json(app.patch_env(&p, &ws, r.env_vars).await?))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ai-config", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 200, body = WorkspaceAiConfig), (status = 404, body = ErrorBody)))]
pub async fn ai_config(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<WorkspaceAiConfig>, ApiError> {
    Ok(Json(app.ai_config(&p, &ws).await?))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/ai-config", tag = "workspaces", params(("ws" = String, Path)),
    request_body(content = WorkspaceAiConfigUpdate, description = "Omitted keeps, null clears (`mode: null` inherits the account's mode); `api_key` is write-only"),
    responses((status = 200, body = WorkspaceAiConfig), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_ai_config(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
    ApiJson(r): ApiJson<WorkspaceAiConfigUpdate>,
) -> Result<Json<WorkspaceAiConfig>, ApiError> {
    Ok(Json(app.update_ai_config(&p, &ws, r).await?))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ssh-keys", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 200, body = WorkspaceSshKeys), (status = 404, body = ErrorBody)))]
pub async fn ssh_keys(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<WorkspaceSshKeys>, ApiError> {
    Ok(Json(app.workspace_ssh_keys(&p, &ws).await?))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/ssh-keys/sync", tag = "workspaces", params(("ws" = String, Path)),
    responses((status = 200, body = SshKeySync), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sync_ssh_keys(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(ws): ApiPath<String>,
) -> Result<Json<SshKeySync>, ApiError> {
    Ok(Json(app.sync_workspace_ssh_keys(&p, &ws).await?))
}
