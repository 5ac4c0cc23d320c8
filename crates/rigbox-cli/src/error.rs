//! The CLI's one error type: a code (the API's, or a CLI code such as `timeout`,
//! `not_logged_in`, `network_error`, `invalid_arguments`), a message, details, and the exit code
//! of cli.md §7. Every failure of every command ends up here; `output` prints it in the chosen
//! format and `lib` exits with [`CliError::exit`].

use serde_json::{json, Value};

/// Exit codes of cli.md §7.
pub mod exit {
    /// Success, including "already running/stopped".
    pub const OK: i32 = 0;
    /// Anything else: usage, 400, 403, 409, 5xx, network, timeout, failed wait, wrong mode.
    pub const ERROR: i32 = 1;
    /// No credential, 401, device login denied or expired.
    pub const AUTH: i32 = 2;
    /// 404, or a name that resolves to nothing.
    pub const NOT_FOUND: i32 = 3;
    /// 402: plan limits or credits.
    pub const QUOTA: i32 = 4;
    /// 429 still returned after the automatic retries.
    pub const RATE_LIMITED: i32 = 5;
    /// Ctrl-C.
    pub const INTERRUPTED: i32 = 130;
}

/// An error the CLI reports and exits with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Machine-readable code: the API's `error.code` or a CLI code.
    pub code: String,
    /// One sentence for people.
    pub message: String,
    /// Always an object.
    pub details: Value,
    /// Process exit code.
    pub exit: i32,
}

/// Result of everything a command does.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An error with empty details.
    pub fn new(code: &str, message: impl Into<String>, exit: i32) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            details: json!({}),
            exit,
        }
    }

    /// Adds details (an object).
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A usage or local error (exit 1).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new("invalid_arguments", message, exit::ERROR)
    }

    /// No credential is configured (exit 2).
    pub fn not_logged_in() -> Self {
        Self::new(
            "not_logged_in",
            format!(
                "Not signed in. Run `{} login` (or set RIGBOX_API_KEY).",
                crate::bin_name()
            ),
            exit::AUTH,
        )
    }

    /// Something named on the command line does not exist (exit 3).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message, exit::NOT_FOUND)
    }

    /// The server could not be reached or answered garbage (exit 1).
    pub fn network(message: impl Into<String>) -> Self {
        Self::new("network_error", message, exit::ERROR)
    }

    /// A local I/O failure (exit 1).
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Self::new("io_error", format!("{what}: {e}"), exit::ERROR)
    }

    /// From an API (or bridge) error response; `body` is the parsed body, `Null` if none.
    pub fn from_api(status: u16, body: &Value) -> Self {
        let e = &body["error"];
        let code = e["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| default_code(status).to_owned());
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

    /// The envelope printed in json/yaml mode: `{"error": {code, message, details}}`.
    pub fn envelope(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

/// The code used when an error response carries no envelope.
fn default_code(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        402 => "limit_exceeded",
        403 => "forbidden",
        404 => "not_found",
        409 => "invalid_state",
        429 => "rate_limited",
        500..=599 => "internal",
        _ => "http_error",
    }
}

/// Exit code for an HTTP status (cli.md §7).
pub fn exit_for_status(status: u16) -> i32 {
    match status {
        100..=399 => exit::OK,
        401 => exit::AUTH,
        402 => exit::QUOTA,
        404 => exit::NOT_FOUND,
        429 => exit::RATE_LIMITED,
        _ => exit::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        for (status, code) in [
            (200, 0),
            (202, 0),
            (204, 0),
            (400, 1),
            (401, 2),
            (402, 4),
            (403, 1),
            (404, 3),
            (409, 1),
            (429, 5),
            (500, 1),
            (503, 1),
        ] {
            assert_eq!(exit_for_status(status), code, "HTTP {status}");
        }
    }

    #[test]
    fn api_envelope_is_kept() {
        let body = json!({"error": {"code": "limit_exceeded", "message": "Plan limit max_vms reached", "details": {"limit": "max_vms"}}});
        let e = CliError::from_api(402, &body);
        assert_eq!(e.code, "limit_exceeded");
        assert_eq!(e.exit, exit::QUOTA);
        assert_eq!(e.to_string(), "Plan limit max_vms reached");
        assert_eq!(e.envelope()["error"]["details"]["limit"], "max_vms");
    }

    #[test]
    fn bodyless_errors_get_a_code_and_message() {
        let e = CliError::from_api(404, &Value::Null);
        assert_eq!(e.code, "not_found");
        assert_eq!(e.exit, exit::NOT_FOUND);
        assert!(e.message.contains("404"));
        assert_eq!(e.envelope()["error"]["details"], json!({}));
    }

    #[test]
    fn cli_codes_have_their_exit_codes() {
        assert_eq!(CliError::not_logged_in().exit, exit::AUTH);
        assert_eq!(CliError::not_logged_in().code, "not_logged_in");
        assert_eq!(CliError::not_found("x").exit, exit::NOT_FOUND);
        assert_eq!(CliError::usage("x").exit, exit::ERROR);
        assert_eq!(CliError::network("x").code, "network_error");
    }
}
