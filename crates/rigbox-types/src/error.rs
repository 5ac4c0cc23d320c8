//! The control plane's error envelope `{"error":{"code","message","details"}}` and its codes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every error code of the control-plane API with its HTTP status (api.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationFailed,
    InvalidName,
    UnknownTemplate,
    UnknownRegion,
    InvalidPublicKey,
    DiskShrinkNotSupported,
    Unauthorized,
    InvalidCredentials,
    LimitExceeded,
    Forbidden,
    AccountDisabled,
    SignupDisabled,
    NotFound,
    InvalidState,
    NotRetryable,
    NameTaken,
    NameReserved,
    EmailTaken,
    DuplicateKey,
    RateLimited,
    Internal,
    NodeUnavailable,
    InsufficientCapacity,
}

impl ErrorCode {
    /// HTTP status of this code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            ValidationFailed
            | InvalidName
            | UnknownTemplate
            | UnknownRegion
            | InvalidPublicKey
            | DiskShrinkNotSupported => 400,
            Unauthorized | InvalidCredentials => 401,
            LimitExceeded => 402,
            Forbidden | AccountDisabled | SignupDisabled => 403,
            NotFound => 404,
            InvalidState | NotRetryable | NameTaken | NameReserved | EmailTaken | DuplicateKey => {
                409
            }
            RateLimited => 429,
            Internal => 500,
            NodeUnavailable | InsufficientCapacity => 503,
        }
    }

    /// The wire string of this code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            ValidationFailed => "validation_failed",
            InvalidName => "invalid_name",
            UnknownTemplate => "unknown_template",
            UnknownRegion => "unknown_region",
            InvalidPublicKey => "invalid_public_key",
            DiskShrinkNotSupported => "disk_shrink_not_supported",
            Unauthorized => "unauthorized",
            InvalidCredentials => "invalid_credentials",
            LimitExceeded => "limit_exceeded",
            Forbidden => "forbidden",
            AccountDisabled => "account_disabled",
            SignupDisabled => "signup_disabled",
            NotFound => "not_found",
            InvalidState => "invalid_state",
            NotRetryable => "not_retryable",
            NameTaken => "name_taken",
            NameReserved => "name_reserved",
            EmailTaken => "email_taken",
            DuplicateKey => "duplicate_key",
            RateLimited => "rate_limited",
            Internal => "internal",
            NodeUnavailable => "node_unavailable",
            InsufficientCapacity => "insufficient_capacity",
        }
    }
}

/// The inner object of the envelope.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Always an object; holds at least `request_id` when sent by the server.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
