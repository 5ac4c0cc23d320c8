//! The one place where [`ApiError`] becomes an HTTP response: the envelope
//! `{"error":{"code","message","details"}}` with `details.request_id`, and `Retry-After` on 429.

use crate::app::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rigbox_types::{ErrorBody, ErrorCode, ErrorDetail};

tokio::task_local! {
    /// The request ID of the request being served (set by the request-id middleware).
    pub static REQUEST_ID: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut details = self.details;
        if let Ok(id) = REQUEST_ID.try_with(Clone::clone) {
            details.insert("request_id".into(), id.into());
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message,
                details,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Unknown route or method.
pub async fn not_found_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("No route for {method} {}.", uri.path()),
    )
}

/// A handler panicked: answer 500 in the envelope, never the panic text.
pub fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::internal().into_response()
}
