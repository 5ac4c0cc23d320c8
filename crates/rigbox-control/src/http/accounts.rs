//! Handlers of `/auth/*` and `/users/me/*`.

use super::extract::{ApiJson, ApiPath, ApiQuery, OptJson};
use super::AppState;
use crate::app::auth::Principal;
use crate::app::credits::{AiUsage, AiUsageQuery, Credits, LedgerEntry, LedgerQuery};
use crate::app::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rigbox_types::api::*;
use rigbox_types::ErrorBody;

fn with_cookie(app: &AppState, status: StatusCode, s: SessionResponse) -> Response {
    let secure = if app.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "rigbox_session={}; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age=2592000",
        s.token
    );
    let mut resp = (status, Json(s)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = SessionResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn signup(
    State(app): State<AppState>,
    ApiJson(r): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    let s = app.signup(r.email, r.password, r.name).await?;
    Ok(with_cookie(&app, StatusCode::CREATED, s))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SessionResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    ApiJson(r): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let s = app.login(&r.email, r.password).await?;
    Ok(with_cookie(&app, StatusCode::OK, s))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn logout(State(app): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    app.logout(&p).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("rigbox_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(app): State<AppState>, p: Principal) -> Json<Me> {
    Json(app.me(&p))
}

#[utoipa::path(post, path = "/api/v1/auth/change-password", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn change_password(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    app.change_password(&p, r.current_password, r.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/auth/cli-session", tag = "auth", request_body = CliSessionRequest,
    responses((status = 201, body = CliSessionCreated), (status = 400, body = ErrorBody)))]
pub async fn create_cli_session(
    State(app): State<AppState>,
    OptJson(r): OptJson<CliSessionRequest>,
) -> Result<(StatusCode, Json<CliSessionCreated>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(app.create_cli_session(r.client_name).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/auth/cli-session/{code}", tag = "auth",
    params(("code" = String, Path), ("X-Rigbox-Poll-Secret" = String, Header)),
    responses((status = 200, body = CliSessionPoll), (status = 404, body = ErrorBody)))]
pub async fn poll_cli_session(
    State(app): State<AppState>,
    ApiPath(code): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<CliSessionPoll>, ApiError> {
    let secret = headers
        .get("x-rigbox-poll-secret")
        .and_then(|v| v.to_str().ok());
    Ok(Json(app.poll_cli_session(&code, secret).await?))
}

#[utoipa::path(get, path = "/api/v1/auth/cli-session/{code}/details", tag = "auth", params(("code" = String, Path)),
    responses((status = 200, body = CliSessionDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cli_session_details(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(code): ApiPath<String>,
) -> Result<Json<CliSessionDetails>, ApiError> {
    Ok(Json(app.cli_session_details(&p, &code).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/cli-session/{code}/approve", tag = "auth", params(("code" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve_cli_session(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(code): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.decide_cli_session(&p, &code, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/auth/cli-session/{code}/deny", tag = "auth", params(("code" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deny_cli_session(
    State(app): State<AppState>,
    p: Principal,
    ApiPath(code): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.decide_cli_session(&p, &code, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/me/limits", tag = "users",
    responses((status = 200, body = LimitsResponse), (status = 401, body = ErrorBody)))]
pub async fn limits(
    State(app): State<AppState>,
    p: Principal,
) -> Result<Json<LimitsResponse>, ApiError> {
    Ok(Json(app.limits(&p).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/credits", tag = "users",
    responses((status = 200, body = Credits), (status = 401, body = ErrorBody)))]
pub async fn credits(State(app): State<AppState>, p: Principal) -> Result<Json<Credits>, ApiError> {
    Ok(Json(app.credits(&p).await?))
}

#[utoipa::path(put, path = "/api/v1/users/me/ai-mode", tag = "users", request_body = AiModeUpdate,
    responses((status = 200, body = Credits, description = "The account's credits; `mode` is the new account mode"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn set_ai_mode(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<AiModeUpdate>,
) -> Result<Json<Credits>, ApiError> {
    Ok(Json(app.set_ai_mode(&p, r).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/credits/ledger", tag = "users", params(LedgerQuery),
    responses((status = 200, body = List<LedgerEntry>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn ledger(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> Result<Json<List<LedgerEntry>>, ApiError> {
    Ok(Json(app.ledger(&p, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/ai-usage", tag = "users", params(AiUsageQuery),
    responses((status = 200, body = AiUsage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn ai_usage(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AiUsageQuery>,
) -> Result<Json<AiUsage>, ApiError> {
    Ok(Json(app.ai_usage(&p, q.days).await?))
}

#[utoipa::path(get, path = "/api/v1/users/me/regions", tag = "users",
    responses((status = 200, body = Regions), (status = 401, body = ErrorBody)))]
pub async fn regions(State(app): State<AppState>, p: Principal) -> Json<Regions> {
    Json(app.regions(&p))
}

#[utoipa::path(get, path = "/api/v1/users/me/settings", tag = "users",
    responses((status = 200, body = Settings), (status = 401, body = ErrorBody)))]
pub async fn settings(State(app): State<AppState>, p: Principal) -> Json<Settings> {
    Json(app.settings_view(&p.user))
}

#[utoipa::path(put, path = "/api/v1/users/me/settings", tag = "users", request_body = SettingsUpdate,
    responses((status = 200, body = Settings), (status = 400, body = ErrorBody)))]
pub async fn update_settings(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(r): ApiJson<SettingsUpdate>,
) -> Result<Json<Settings>, ApiError> {
    Ok(Json(app.update_settings(&p, r).await?))
}
