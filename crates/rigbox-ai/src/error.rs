//! The proxy's own errors in the gateway envelope (bridge-and-ai.md §11):
//! `{"error":{"code","message","type":"rigbox_gateway_error","param":null}}`, plus `details`
//! for the subject errors. Upstream error answers are relayed as they are, never wrapped.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// A proxy error.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Map<String, Value>>,
    pub retry_after: Option<u64>,
}

impl GatewayError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            message,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The AI proxy failed unexpectedly; nothing was charged.",
        )
    }

    pub fn with_details(mut self, details: Map<String, Value>) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut err = json!({
            "code": self.code,
            "message": self.message,
            "type": "rigbox_gateway_error",
            "param": null,
        });
        if let Some(d) = self.details {
            err["details"] = Value::Object(d);
        }
        let mut resp = (self.status, axum::Json(json!({ "error": err }))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s.max(1)));
        }
        resp
    }
}
