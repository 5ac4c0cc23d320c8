//! Account commands of local mode: `login` (device flow of limits-and-accounts.md §3, or a
//! pasted/imported key), `logout`, `whoami`, `status`, `limits`, and the public `capacity` and
//! `templates ls`.

use super::credits::credits_cell as credits_fmt;
use super::Ctx;
use crate::client::urlencode;
use crate::config::{self, SOURCE_DEVICE, SOURCE_TOKEN};
use crate::error::{exit, CliError, CliResult};
use crate::output::{cell, warn, Out};
use crate::prompt;
use rigbox_types::api::{CliSessionCreated, CliSessionPoll, CliSessionRequest};
use serde_json::{json, Value};
use std::time::Duration;

/// `<local user>@<hostname>`: the client name of device login and the default SSH key name.
pub fn user_at_host() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut s = format!("{user}@{host}");
    s.truncate(100);
    s
}

/// Saves a verified credential (with the API URL it belongs to) and returns the file's path.
fn save_login(
    ctx: &Ctx,
    key: &str,
    key_id: Option<&str>,
    email: &str,
    source: &str,
) -> CliResult<std::path::PathBuf> {
    let mut f = ctx.file.clone();
    f.api_url = Some(ctx.api.origin.clone());
    f.api_key = Some(key.to_owned());
    f.api_key_id = key_id.map(str::to_owned);
    f.email = Some(email.to_owned());
    f.credential_source = Some(source.to_owned());
    let path = config::save(&f)?;
    if ctx.effective.api_key_source == config::Source::Env {
        warn("RIGBOX_API_KEY is set and takes precedence over the saved key");
    }
    Ok(path)
}

fn login_result(ctx: &Ctx, email: &str, path: &std::path::Path) -> Value {
    json!({"email": email, "api_url": ctx.api.origin, "config_path": path.display().to_string()})
}

/// Whether an RFC 3339 instant has passed (unknown formats never expire locally; the server
/// decides).
fn expired(at: &str) -> bool {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| t <= time::OffsetDateTime::now_utc())
}

fn open_browser(url: &str) {
    // Best effort: no browser (or no xdg-open) just means the user opens the URL.
    let _ = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// `login` (device flow).
pub async fn login_device(ctx: &Ctx, no_browser: bool) -> CliResult<Out> {
    let p = &ctx.printer;
    let api = ctx.anonymous();
    let created = api
        .post(
            "/auth/cli-session",
            &CliSessionRequest {
                client_name: Some(user_at_host()),
            },
        )
        .await?;
    let s: CliSessionCreated = serde_json::from_value(created).map_err(|e| {
        CliError::network(format!("unexpected answer to POST /auth/cli-session: {e}"))
    })?;
    p.event(
        "session_created",
        json!({"code": s.code, "user_code": s.user_code,
               "verification_url": s.verification_url, "expires_at": s.expires_at}),
    )?;
    // On stderr in every format: without it nobody can approve (NDJSON has it on stdout too).
    eprintln!(
        "To sign in, open this URL in a browser:\n\n    {}\n\nand check that it shows the code {}\n",
        s.verification_url, s.user_code
    );
    if !no_browser {
        open_browser(&s.verification_url);
    }
    p.note("Waiting for approval…");
    let interval = crate::wait::interval_override()
        .unwrap_or(Duration::from_secs(u64::from(s.interval_seconds.max(1))));
    let poll_path = format!("/auth/cli-session/{}", urlencode(&s.code));
    loop {
        tokio::time::sleep(interval).await;
        let raw = api
            .raw(
                reqwest::Method::GET,
                &poll_path,
                None,
                &[("x-rigbox-poll-secret", &s.poll_secret)],
            )
            .await?;
        let body = crate::client::parse_answer(&raw)?;
        let poll: CliSessionPoll = serde_json::from_value(body).map_err(|e| {
            CliError::network(format!("unexpected answer to GET /auth/cli-session: {e}"))
        })?;
        match poll.status.as_str() {
            "pending" if expired(&s.expires_at) => return Err(login_expired()),
            "pending" => continue,
            "approved" | "consumed" => {
                let (Some(key), Some(email)) = (poll.api_key, poll.email) else {
                    return Err(CliError::new(
                        "login_failed",
                        format!(
                            "The sign-in was approved but its key was already collected; run `{} login` again.",
                            crate::bin_name()
                        ),
                        exit::AUTH,
                    ));
                };
                p.event("approved", json!({"email": email}))?;
                let path =
                    save_login(ctx, &key, poll.api_key_id.as_deref(), &email, SOURCE_DEVICE)?;
                p.event("saved", json!({"path": path.display().to_string()}))?;
                let result = login_result(ctx, &email, &path);
                if p.ndjson() {
                    p.event("done", json!({ "result": result }))?;
                    return Ok(Out::silent());
                }
                return Ok(Out::doc(result).with_message(format!("Logged in as {email}")));
            }
            "denied" => {
                return Err(CliError::new(
                    "login_denied",
                    "The sign-in request was denied.",
                    exit::AUTH,
                ))
            }
            "expired" => return Err(login_expired()),
            other => {
                return Err(CliError::new(
                    "login_failed",
                    format!("The sign-in request is {other}."),
                    exit::AUTH,
                ))
            }
        }
    }
}

fn login_expired() -> CliError {
    CliError::new(
        "login_expired",
        format!(
            "The sign-in request expired; run `{} login` again.",
            crate::bin_name()
        ),
        exit::AUTH,
    )
}

/// `login --token` (no-echo prompt) / `login --import-token` (first line of stdin).
pub async fn login_token(ctx: &Ctx, from_stdin: bool) -> CliResult<Out> {
    let key = if from_stdin {
        prompt::stdin_line().await?
    } else {
        if !prompt::interactive() {
            return Err(CliError::usage(
                "--token needs a terminal to ask on; use --import-token to read the key from stdin",
            ));
        }
        prompt::secret("API key: ").await?.trim().to_owned()
    };
    if key.is_empty() {
        return Err(CliError::usage("no API key given"));
    }
    let me = ctx.api.with_key(Some(key.clone())).get("/auth/me").await?;
    let email = me["email"].as_str().unwrap_or_default().to_owned();
    let path = save_login(ctx, &key, me["api_key_id"].as_str(), &email, SOURCE_TOKEN)?;
    Ok(Out::doc(login_result(ctx, &email, &path)).with_message(format!("Logged in as {email}")))
}

/// `logout`: forgets the stored credential; revokes it first when device login created it.
pub async fn logout(ctx: &Ctx) -> CliResult<Out> {
    let f = &ctx.file;
    let mut revoked = false;
    if f.credential_source.as_deref() == Some(SOURCE_DEVICE) {
        if let (Some(id), Some(key)) = (&f.api_key_id, &f.api_key) {
            // Best effort: the key may already be revoked, or the server unreachable.
            match ctx
                .api
                .with_key(Some(key.clone()))
                .delete(&format!("/api-keys/{}", urlencode(id)))
                .await
            {
                Ok(_) => revoked = true,
                Err(e) if ctx.verbose => eprintln!("  could not revoke the key: {}", e.message),
                Err(_) => {}
            }
        }
    }
    let had = f.api_key.is_some();
    let path = if had {
        Some(config::save(&f.without_credential())?)
    } else {
        None
    };
    if ctx.effective.api_key_source == config::Source::Env {
        warn("RIGBOX_API_KEY is still set in the environment");
    }
    Ok(Out::doc(json!({
        "logged_out": true,
        "had_credential": had,
        "revoked": revoked,
        "config_path": path.map(|p| p.display().to_string()),
    }))
    .with_message("Logged out"))
}

/// `whoami` (local mode).
pub async fn whoami(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let me = ctx.api.get("/auth/me").await?;
    let doc = json!({
        "email": me["email"], "user_id": me["id"], "name": me["name"], "plan": me["plan"],
        "auth_method": me["auth_method"], "api_key_id": me["api_key_id"],
        "api_url": ctx.api.origin, "config_path": config::path().display().to_string(),
    });
    let msg = labelled(&[
        ("Email", &doc["email"]),
        ("User ID", &doc["user_id"]),
        ("Plan", &doc["plan"]),
        ("Auth method", &doc["auth_method"]),
        ("API key ID", &doc["api_key_id"]),
        ("API URL", &doc["api_url"]),
        ("Config", &doc["config_path"]),
    ]);
    Ok(Out::doc(doc).with_message(msg))
}

/// A labelled block: `Label   value` lines, skipping nulls.
pub fn labelled(rows: &[(&str, &Value)]) -> String {
    let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(l, v)| format!("{l:<w$}  {}", cell(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The usage counted against a limit, where one is tracked.
fn used_for(limit: &str, usage: &Value) -> Value {
    let key = match limit {
        "max_vms" => "workspace_count",
        "max_running_vcpus" => "running_vcpus",
        "max_disk_total_mb" => "total_disk_mb",
        "max_ram_total_mb" => "total_ram_mb",
        "max_ssh_keys" => "ssh_key_count",
        _ => return Value::Null,
    };
    usage[key].clone()
}

/// `{limit, used, max}` rows of a `GET /users/me/limits` body.
fn limit_rows(l: &Value) -> Vec<Value> {
    l["limits"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"limit": k, "used": used_for(k, &l["usage"]), "max": v}))
                .collect()
        })
        .unwrap_or_default()
}

const LIMIT_COLUMNS: [(&str, &str); 3] = [("LIMIT", "limit"), ("USED", "used"), ("MAX", "max")];

/// `limits`: JSON is the API's object; the tabular formats show LIMIT, USED, MAX.
pub async fn limits(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let l = ctx.api.get("/users/me/limits").await?;
    let rows = limit_rows(&l);
    let table = crate::output::Printer {
        color: ctx.printer.color,
        ..crate::output::Printer::plain(crate::output::Format::Human)
    }
    .render(&Out::list(rows.clone(), LIMIT_COLUMNS.to_vec()))?;
    let custom = if l["custom"] == true {
        " (custom limits)"
    } else {
        ""
    };
    let msg = format!("Plan: {}{custom}\n\n{table}", cell(&l["plan"]));
    Ok(Out::doc(l)
        .with_view(rows, LIMIT_COLUMNS.to_vec())
        .with_message(msg))
}

/// `capacity` (no sign-in needed).
pub async fn capacity(ctx: &Ctx) -> CliResult<Out> {
    let c = ctx.anonymous().get("/capacity").await?;
    let msg = format!(
        "available: {}\nused {} of {} slots",
        if c["available"] == true { "yes" } else { "no" },
        cell(&c["used"]),
        cell(&c["total"])
    );
    Ok(Out::doc(c).with_message(msg))
}

/// `templates ls` (no sign-in needed).
pub async fn templates(ctx: &Ctx) -> CliResult<Out> {
    let t = ctx.anonymous().get("/templates").await?;
    Ok(Out::list(
        t["items"].as_array().cloned().unwrap_or_default(),
        vec![
            ("ID", "id"),
            ("IMAGE", "image"),
            ("RAM_MB", "ram_mb"),
            ("VCPU", "vcpu_count"),
            ("DISK_MB", "disk_size_mb"),
            ("DESCRIPTION", "description"),
        ],
    ))
}

/// `status` (local mode): plan, workspaces by status, usage against each limit, and credits
/// when the server offers them (a 404 there means credits are not built: that part is left out).
pub async fn status(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let me = ctx.api.get("/auth/me").await?;
    let l = ctx.api.get("/users/me/limits").await?;
    let credits = match ctx.api.get("/users/me/credits").await {
        Ok(c) => Some(c),
        Err(e) if e.exit == exit::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    let workspaces = ctx.api.list_all("/workspaces").await?;
    let mut by_status = serde_json::Map::new();
    for w in &workspaces {
        let s = w["status"].as_str().unwrap_or("unknown").to_owned();
        let n = by_status.get(&s).and_then(Value::as_i64).unwrap_or(0);
        by_status.insert(s, json!(n + 1));
    }
    let mut doc = json!({
        "email": me["email"], "user_id": me["id"], "plan": l["plan"], "custom_limits": l["custom"],
        "workspaces": {"total": workspaces.len(), "by_status": by_status},
        "limits": limit_rows(&l),
    });
    if let Some(c) = &credits {
        doc["credits"] = c.clone();
    }
    let mut msg = format!(
        "Signed in as {} (plan {}{})\n",
        cell(&me["email"]),
        cell(&l["plan"]),
        if l["custom"] == true {
            ", custom limits"
        } else {
            ""
        }
    );
    let counts: Vec<String> = by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
    msg.push_str(&format!(
        "Workspaces: {}{}\n\nUsage:\n",
        workspaces.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        }
    ));
    for r in limit_rows(&l).iter().filter(|r| !r["used"].is_null()) {
        msg.push_str(&format!(
            "  {:<20} {} of {}\n",
            cell(&r["limit"]),
            cell(&r["used"]),
            cell(&r["max"])
        ));
    }
    if let Some(c) = &credits {
        msg.push_str(&format!("\n{}\n", credits_line(c)));
    }
    Ok(Out::doc(doc).with_message(msg.trim_end().to_owned()))
}

/// One line about credits (`status` in both modes).
pub fn credits_line(c: &Value) -> String {
    format!(
        "Credits: {} of {} available until {}",
        credits_fmt(&c["remaining_micro"]),
        credits_fmt(&c["total_micro"]),
        cell(&c["period_end"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_rows_pair_usage_with_limits() {
        let l = json!({"plan": "free", "limits": {"max_vms": 2, "max_apps_per_vm": 5},
                       "usage": {"workspace_count": 1}});
        let rows = limit_rows(&l);
        assert_eq!(
            rows[0],
            json!({"limit": "max_apps_per_vm", "used": null, "max": 5})
        );
        assert_eq!(rows[1], json!({"limit": "max_vms", "used": 1, "max": 2}));
    }

    #[test]
    fn expiry_and_formats() {
        assert!(expired("2000-01-01T00:00:00Z"));
        assert!(!expired("2999-01-01T00:00:00Z"));
        assert!(!expired("not a time"));
        assert_eq!(credits_fmt(&json!(250_000_000)), "250.00");
        assert_eq!(credits_fmt(&Value::Null), "");
        let who = user_at_host();
        assert!(who.contains('@') && who.len() <= 100);
    }

    #[test]
    fn labelled_blocks_skip_nulls() {
        let (a, b) = (json!("x"), Value::Null);
        assert_eq!(
            labelled(&[("Email", &a), ("Name", &b), ("ID", &a)]),
            "Email  x\nID     x"
        );
    }
}
