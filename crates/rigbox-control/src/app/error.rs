//! The one error type of the logic layer. It carries the API code, a message meant for the
//! client and structured details; internal causes are logged, never sent. `http::error` maps it
//! to a response in exactly one place.

use crate::store::StoreError;
use rigbox_types::ErrorCode;
use serde_json::{json, Map, Value};

/// An error the API reports to its client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
    /// Seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    /// Adds one key to `details`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "Missing, invalid, revoked or expired credential.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 400 `validation_failed` naming one field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            ErrorCode::ValidationFailed,
            format!("Invalid field {field}: {reason}"),
        )
        .with("fields", json!({ field: reason }))
    }

    /// 400 `validation_failed` without a field.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// 409 `invalid_state` with the current status and the statuses that would allow it.
    pub fn invalid_state(action: &str, status: &str, allowed_from: &[&str]) -> Self {
        Self::new(
            ErrorCode::InvalidState,
            format!(
                "Cannot {action} a workspace that is {status}; allowed from: {}.",
                allowed_from.join(", ")
            ),
        )
        .with("status", status)
        .with(
            "allowed_from",
            allowed_from
                .iter()
                .map(|s| Value::from(*s))
                .collect::<Vec<_>>(),
        )
    }

    /// 402 `limit_exceeded`.
    pub fn limit(
        limit: &str,
        max: i64,
        current: i64,
        requested: i64,
        plan: &str,
        what: &str,
    ) -> Self {
        Self::new(
            ErrorCode::LimitExceeded,
            format!("Plan limit {limit} reached: {what} (limit {max}, in use {current}, requested {requested})."),
        )
        .with("limit", limit)
        .with("max", max)
        .with("current", current)
        .with("requested", requested)
        .with("plan", plan)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "Internal server error.")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = ?e, "store error");
        ApiError::internal()
    }
}
