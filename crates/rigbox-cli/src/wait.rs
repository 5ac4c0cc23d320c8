//! Waiting for a workspace to reach a status: polls `GET /workspaces/{ws}` (every 2 s, or
//! `RIGBOX_POLL_INTERVAL_MS`), shows a spinner on a terminal, emits NDJSON `status` events in
//! JSON mode, fails on `failed` (with the retry hint) and on `--timeout`.

use crate::client::{urlencode, Api};
use crate::error::{exit, CliError, CliResult};
use crate::output::{stderr_tty, Printer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn interval() -> Duration {
    std::env::var("RIGBOX_POLL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
}

/// The error a failed workspace gives while waiting.
pub fn failed_error(ws: &Value) -> CliError {
    let f = &ws["failure"];
    let name = ws["name"].as_str().unwrap_or_default();
    let mut msg = format!(
        "workspace {name} failed: {} ({})",
        f["message"].as_str().unwrap_or("no details"),
        f["code"].as_str().unwrap_or("unknown")
    );
    if f["retryable"].as_bool() == Some(true) {
        msg.push_str(&format!("; retry with: rig workspace retry {name}"));
    }
    let mut e = CliError::new("workspace_failed", msg, exit::ERROR);
    e.details = json!({"failure": f.clone(), "workspace_id": ws["id"].clone()});
    e
}

/// Polls until `status` is one of `targets`; returns the final workspace.
pub async fn until(
    api: &Api,
    p: &Printer,
    ws_id: &str,
    targets: &[&str],
    timeout: Duration,
    mut last: Option<String>,
) -> CliResult<Value> {
    let start = Instant::now();
    let spinner = (!p.ndjson() && stderr_tty()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let result = loop {
        let ws = match api.get(&format!("/workspaces/{}", urlencode(ws_id))).await {
            Ok(ws) => ws,
            Err(e) => break Err(e),
        };
        let status = ws["status"].as_str().unwrap_or_default().to_owned();
        if last.as_deref() != Some(status.as_str()) {
            if p.ndjson() {
                p.event("status", json!({"status": status}))?;
            }
            if let Some(s) = &spinner {
                s.set_message(format!(
                    "{} is {status}",
                    ws["name"].as_str().unwrap_or(ws_id)
                ));
            }
            last = Some(status.clone());
        }
        if targets.contains(&status.as_str()) {
            break Ok(ws);
        }
        if status == "failed" {
            break Err(failed_error(&ws));
        }
        if start.elapsed() >= timeout {
            let mut e = CliError::new(
                "timeout",
                format!(
                    "timed out after {} s waiting for {} (now {status}); the operation continues",
                    timeout.as_secs(),
                    targets.join(" or ")
                ),
                exit::ERROR,
            );
            e.details = json!({"status": status});
            break Err(e);
        }
        tokio::time::sleep(interval()).await;
    };
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result
}
