//! The CLI's error: a code (the API's, or a CLI code such as `timeout`, `not_logged_in`,
//! `network_error`), a message, details, and the exit code of cli.md §7.

use serde_json::{json, Value};

/// Exit codes of cli.md §7.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const AUTH: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const QUOTA: i32 = 4;
    pub const RATE_LIMITED: i32 = 5;
    pub const INTERRUPTED: i32 = 130;
}

/// An error the CLI reports and exits with.
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: String,
    pub message: String,
    pub details: Value,
    pub exit: i32,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(code: &str, message: impl Into<String>, exit: i32) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            details: json!({}),
            exit,
        }
    }

    /// A usage or local error (exit 1).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new("invalid_arguments", message, exit::ERROR)
    }

    pub fn not_logged_in() -> Self {
        Self::new(
            "not_logged_in",
            "Not signed in. Run `rig login` (or set RIGBOX_API_KEY).",
            exit::AUTH,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message, exit::NOT_FOUND)
    }

    /// From an API error response.
    pub fn from_api(status: u16, body: &Value) -> Self {
        let e = &body["error"];
        let code = e["code"].as_str().unwrap_or("http_error").to_owned();
        let message = e["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("The server answered HTTP {status}."));
        let details = if e["details"].is_object() {
            e["details"].clone()
        } else {
            json!({})
        };
        Self {
            code,
            message,
            details,
            exit: exit_for_status(status),
        }
    }

    /// The envelope printed in json/yaml mode.
    pub fn envelope(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

/// Exit code for an HTTP status.
pub fn exit_for_status(status: u16) -> i32 {
    match status {
        200..=299 => exit::OK,
        401 => exit::AUTH,
        404 => exit::NOT_FOUND,
        402 => exit::QUOTA,
        429 => exit::RATE_LIMITED,
        _ => exit::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(exit_for_status(200), 0);
        assert_eq!(exit_for_status(400), 1);
        assert_eq!(exit_for_status(401), 2);
        assert_eq!(exit_for_status(402), 4);
        assert_eq!(exit_for_status(403), 1);
        assert_eq!(exit_for_status(404), 3);
        assert_eq!(exit_for_status(409), 1);
        assert_eq!(exit_for_status(429), 5);
        assert_eq!(exit_for_status(503), 1);
    }

    #[test]
    fn api_envelope_is_kept() {
        let body = json!({"error": {"code": "limit_exceeded", "message": "Plan limit max_vms reached", "details": {"limit": "max_vms"}}});
        let e = CliError::from_api(402, &body);
        assert_eq!(e.code, "limit_exceeded");
        assert_eq!(e.exit, 4);
        assert_eq!(e.envelope()["error"]["details"]["limit"], "max_vms");
    }
}
