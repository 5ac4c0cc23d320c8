//! Request middleware: request IDs, credential resolution, CSRF and rate limits.

use super::AppState;
use crate::app::auth::{AuthMethod, Principal};
use crate::app::ratelimit::Class;
use crate::app::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rigbox_types::ErrorCode;
use std::net::SocketAddr;

/// Gives every request a UUID, available to error bodies and returned as `X-Request-Id`.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let mut resp = super::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The credential of a request: bearer token first, then the session cookie.
fn credential(req: &Request) -> Option<(String, bool)> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some((token.trim().to_owned(), false));
    }
    for v in req.headers().get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some(t) = part.trim().strip_prefix("rigbox_session=") {
                return Some((t.to_owned(), true));
            }
        }
    }
    None
}

/// 429 `rate_limited` for `class`, retry in `secs`.
pub(super) fn rate_limited(app: &AppState, class: Class, secs: u64) -> Response {
    let limit = app.rate.limit(class);
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "Rate limit of {limit} requests per minute for {} reached; retry in {secs} s.",
            class.as_str()
        ),
    )
    .with("class", class.as_str())
    .with("limit_per_minute", limit)
    .with("retry_after_seconds", secs)
    .retry(secs)
    .into_response()
}

/// Resolves the caller, enforces CSRF for cookie writes and takes a rate-limit token.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = match credential(&req) {
        Some((token, via_cookie)) => match app.authenticate(&token, via_cookie).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let path = req.uri().path().trim_start_matches("/api/v1").to_owned();
    let (key, class) = match &principal {
        Some(p) => (p.user.id.clone(), Class::of_path(&path)),
        None => {
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into());
            (format!("ip:{ip}"), Class::Auth)
        }
    };
    if let Err(secs) = app.rate.take(&key, class) {
        return rate_limited(&app, class, secs);
    }
    if let Some(p) = principal {
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let csrf_ok = req.headers().get("x-rigbox-csrf").is_some_and(|v| v == "1");
        if matches!(
            p.method,
            AuthMethod::Session {
                via_cookie: true,
                ..
            }
        ) && writes
            && !csrf_ok
        {
            return ApiError::forbidden(
                "Cookie-authenticated writes need the header X-Rigbox-CSRF: 1.",
            )
            .into_response();
        }
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}
