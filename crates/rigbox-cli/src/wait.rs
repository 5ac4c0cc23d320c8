//! Waiting for a workspace to reach a status (cli.md §5): polls `GET /workspaces/{ws}` every
//! 2 s (`RIGBOX_POLL_INTERVAL_MS` overrides it, for tests), shows a spinner on a terminal,
//! prints an NDJSON `status` event on every observed change, fails with the failure block and
//! the retry hint when the workspace becomes `failed`, and gives up with code `timeout` after
//! `--timeout` (the operation itself continues on the server).

use crate::client::{urlencode, Api};
use crate::error::{exit, CliError, CliResult};
use crate::output::{stderr_tty, Printer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The poll interval: 2 s unless `RIGBOX_POLL_INTERVAL_MS` says otherwise.
pub fn interval() -> Duration {
    interval_override().unwrap_or(Duration::from_secs(2))
}

/// `RIGBOX_POLL_INTERVAL_MS` (hidden; for tests), which also paces device-login polls.
pub fn interval_override() -> Option<Duration> {
    interval_from(std::env::var("RIGBOX_POLL_INTERVAL_MS").ok().as_deref())
}

fn interval_from(v: Option<&str>) -> Option<Duration> {
    v.and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
}

/// The error a workspace that became `failed` gives: its failure code and message, plus the
/// retry command when the failure is retryable.
pub fn failed_error(ws: &Value) -> CliError {
    let f = &ws["failure"];
    let name = ws["name"].as_str().unwrap_or_default();
    let mut msg = format!(
        "workspace {name} failed: {} ({})",
        f["message"].as_str().unwrap_or("no details"),
        f["code"].as_str().unwrap_or("unknown")
    );
    if f["retryable"].as_bool() == Some(true) {
        msg.push_str(&format!(
            "; retry with: {} workspace retry {name}",
            crate::bin_name()
        ));
    }
    CliError::new("workspace_failed", msg, exit::ERROR)
        .with_details(json!({"failure": f.clone(), "workspace_id": ws["id"].clone()}))
}

/// How one wait goes.
pub struct Wait<'a> {
    pub api: &'a Api,
    pub printer: &'a Printer,
    pub verbose: bool,
    pub timeout: Duration,
}

impl Wait<'_> {
    /// Polls until the status is one of `targets` and returns the final workspace. `last` is the
    /// status already reported (from the action's answer), so it is not repeated.
    pub async fn until(
        &self,
        ws_id: &str,
        targets: &[&str],
        last: Option<&str>,
    ) -> CliResult<Value> {
        let start = Instant::now();
        let spinner = (!self.printer.ndjson() && stderr_tty()).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(match last {
                Some(st) => format!("{ws_id} is {st}"),
                None => format!("waiting for {ws_id}"),
            });
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        let result = self
            .poll(ws_id, targets, last, start, spinner.as_ref())
            .await;
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        result
    }

    async fn poll(
        &self,
        ws_id: &str,
        targets: &[&str],
        last: Option<&str>,
        start: Instant,
        spinner: Option<&indicatif::ProgressBar>,
    ) -> CliResult<Value> {
        let mut last = last.map(str::to_owned);
        let path = format!("/workspaces/{}", urlencode(ws_id));
        loop {
            let ws = self.api.get(&path).await?;
            let status = ws["status"].as_str().unwrap_or_default().to_owned();
            if last.as_deref() != Some(status.as_str()) {
                self.printer.event("status", json!({"status": status}))?;
                if self.verbose {
                    eprintln!("  {ws_id} is {status}");
                }
                if let Some(s) = spinner {
                    s.set_message(format!(
                        "{} is {status}",
                        ws["name"].as_str().unwrap_or(ws_id)
                    ));
                }
                last = Some(status.clone());
            }
            if targets.contains(&status.as_str()) {
                return Ok(ws);
            }
            if status == "failed" {
                return Err(failed_error(&ws));
            }
            if start.elapsed() >= self.timeout {
                return Err(CliError::new(
                    "timeout",
                    format!(
                        "timed out after {} s waiting for {} (it is {status}); the operation continues",
                        self.timeout.as_secs(),
                        targets.join(" or ")
                    ),
                    exit::ERROR,
                )
                .with_details(json!({"status": status, "workspace_id": ws_id})));
            }
            tokio::time::sleep(interval()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_override() {
        assert_eq!(interval_from(Some("50")), Some(Duration::from_millis(50)));
        assert_eq!(interval_from(Some("0")), Some(Duration::from_millis(1)));
        assert_eq!(interval_from(Some("x")), None);
        assert_eq!(interval_from(None), None);
    }

    #[test]
    fn failure_message_has_code_and_retry_hint() {
        let ws = json!({"id": "ws-1", "name": "box", "status": "failed",
            "failure": {"code": "boot_failed", "message": "VM could not launch", "retryable": true}});
        let e = failed_error(&ws);
        assert_eq!(e.exit, 1);
        assert!(
            e.message.contains("VM could not launch (boot_failed)"),
            "{}",
            e.message
        );
        assert!(e.message.contains("workspace retry box"), "{}", e.message);
        assert_eq!(e.details["failure"]["code"], "boot_failed");
        let mut ws = ws;
        ws["failure"]["retryable"] = json!(false);
        assert!(!failed_error(&ws).message.contains("retry"));
    }
}
