//! Account commands: login, logout, whoami, status, limits, capacity, templates, credits.

use super::Ctx;
use crate::client::{urlencode, Api};
use crate::config;
use crate::error::{exit, CliError, CliResult};
use crate::output::{cell, Out};
use serde_json::{json, Value};
use std::time::Duration;

fn client_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// Saves a verified credential.
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
    config::save(&f)
}

/// `rig login` (device flow).
pub async fn login_device(ctx: &Ctx, no_browser: bool) -> CliResult<Out> {
    let p = &ctx.printer;
    let s = ctx
        .api
        .post("/auth/cli-session", &json!({"client_name": client_name()}))
        .await?;
    let (code, user_code, url) = (
        s["code"].as_str().unwrap_or_default().to_owned(),
        s["user_code"].as_str().unwrap_or_default().to_owned(),
        s["verification_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let secret = s["poll_secret"].as_str().unwrap_or_default().to_owned();
    if p.ndjson() {
        p.event("session_created", json!({"code": code, "user_code": user_code, "verification_url": url, "expires_at": s["expires_at"]}))?;
    } else {
        eprintln!("Open this URL to sign in:\n\n  {url}\n\nand check that it shows the code {user_code}\n");
    }
    if !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let interval = std::env::var("RIGBOX_POLL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            Duration::from_secs(s["interval_seconds"].as_u64().unwrap_or(2)),
            Duration::from_millis,
        );
    let poll_path = format!("/auth/cli-session/{}", urlencode(&code));
    loop {
        tokio::time::sleep(interval).await;
        let raw = ctx
            .api
            .raw(
                reqwest::Method::GET,
                &poll_path,
                None,
                &[("x-rigbox-poll-secret", &secret)],
            )
            .await?;
        let body: Value = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
        if raw.status != 200 {
            return Err(CliError::from_api(raw.status, &body));
        }
        match body["status"].as_str().unwrap_or_default() {
            "approved" => {
                let key = body["api_key"].as_str().unwrap_or_default();
                let email = body["email"].as_str().unwrap_or_default();
                if p.ndjson() {
                    p.event("approved", json!({"email": email}))?;
                }
                let path =
                    save_login(ctx, key, body["api_key_id"].as_str(), email, "device_login")?;
                let result = json!({"email": email, "api_url": ctx.api.origin, "config_path": path.display().to_string()});
                if p.ndjson() {
                    p.event("saved", json!({"path": path.display().to_string()}))?;
                    p.event("done", json!({"result": result}))?;
                    return Ok(Out::silent());
                }
                return Ok(Out::doc(result).with_message(format!("Logged in as {email}")));
            }
            "pending" => continue,
            "denied" => {
                return Err(CliError::new(
                    "login_denied",
                    "The sign-in request was denied in the console.",
                    exit::AUTH,
                ))
            }
            "expired" => {
                return Err(CliError::new(
                    "login_expired",
                    "The sign-in request expired; run rig login again.",
                    exit::AUTH,
                ))
            }
            other => {
                return Err(CliError::new(
                    "login_failed",
                    format!("The sign-in request is {other}; run rig login again."),
                    exit::AUTH,
                ))
            }
        }
    }
}

/// `rig login --token` / `--import-token`.
pub async fn login_token(ctx: &Ctx, from_stdin: bool) -> CliResult<Out> {
    let key = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
        line.trim().to_owned()
    } else {
        rpassword::prompt_password("API key: ")
            .map_err(|e| CliError::usage(format!("cannot read the key: {e}")))?
            .trim()
            .to_owned()
    };
    if key.is_empty() {
        return Err(CliError::usage("no API key given"));
    }
    let api = Api::new(&ctx.api.origin, "/api/v1", Some(key.clone()), ctx.verbose)?;
    let me = api.get("/auth/me").await?;
    let email = me["email"].as_str().unwrap_or_default();
    let path = save_login(ctx, &key, me["api_key_id"].as_str(), email, "token")?;
    Ok(Out::doc(json!({"email": email, "api_url": ctx.api.origin, "config_path": path.display().to_string()}))
        .with_message(format!("Logged in as {email}")))
}

/// `rig logout`.
pub async fn logout(ctx: &Ctx) -> CliResult<Out> {
    let f = &ctx.file;
    if f.credential_source.as_deref() == Some("device_login") {
        if let Some(id) = &f.api_key_id {
            // Best effort: the key may already be revoked.
            let _ = ctx
                .api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api-keys/{}", urlencode(id)),
                    None,
                )
                .await;
        }
    }
    let mut f = f.clone();
    f.api_key = None;
    f.api_key_id = None;
    f.email = None;
    f.credential_source = None;
    config::save(&f)?;
    Ok(Out::doc(json!({"logged_out": true})).with_message("Logged out"))
}

/// `rig whoami`.
pub async fn whoami(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let me = ctx.api.get("/auth/me").await?;
    let doc = json!({
        "email": me["email"], "user_id": me["id"], "name": me["name"], "plan": me["plan"],
        "auth_method": me["auth_method"], "api_key_id": me["api_key_id"],
        "api_url": ctx.api.origin, "config_path": config::path().display().to_string(),
    });
    Ok(Out::doc(doc))
}

/// Usage counted against each limit (`None` where none is tracked).
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

/// `rig limits`.
pub async fn limits(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let l = ctx.api.get("/users/me/limits").await?;
    let rows = limit_rows(&l);
    let mut out = Out::list(
        rows,
        vec![("LIMIT", "limit"), ("USED", "used"), ("MAX", "max")],
    );
    out.doc = l.clone();
    out.doc["items"] = json!(limit_rows(&l));
    if ctx.printer.format == crate::output::Format::Human {
        let table = crate::output::Printer {
            format: crate::output::Format::Table,
            query: None,
        }
        .render(&Out::list(
            limit_rows(&l),
            vec![("LIMIT", "limit"), ("USED", "used"), ("MAX", "max")],
        ))?;
        let custom = if l["custom"] == true {
            " (custom limits)"
        } else {
            ""
        };
        out.message = Some(format!("Plan: {}{custom}\n{table}", cell(&l["plan"])));
    }
    Ok(out)
}

/// `rig capacity` (no login needed).
pub async fn capacity(ctx: &Ctx) -> CliResult<Out> {
    let c = ctx.api.get("/capacity").await?;
    let msg = format!(
        "available: {}\nused {} of {} slots",
        if c["available"] == true { "yes" } else { "no" },
        cell(&c["used"]),
        cell(&c["total"])
    );
    Ok(Out::doc(c).with_message(msg))
}

/// `rig templates ls` (no login needed).
pub async fn templates(ctx: &Ctx) -> CliResult<Out> {
    let t = ctx.api.get("/templates").await?;
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

fn credits_fmt(micro: &Value) -> String {
    micro
        .as_i64()
        .map_or_else(String::new, |m| format!("{:.2}", m as f64 / 1_000_000.0))
}

/// `rig credits`.
pub async fn credits(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    let c = ctx.api.get("/users/me/credits").await?;
    let msg = format!(
        "available: {} of {} credits\nbalance:   {}\nreserved:  {}\nmode:      {}\nperiod end: {}",
        credits_fmt(&c["remaining_micro"]),
        credits_fmt(&c["total_micro"]),
        credits_fmt(&c["balance_micro"]),
        credits_fmt(&c["reserved_micro"]),
        cell(&c["mode"]),
        cell(&c["period_end"])
    );
    Ok(Out::doc(c).with_message(msg))
}

/// `rig credits ledger`.
pub async fn ledger(ctx: &Ctx, limit: u32, workspace: Option<&str>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let mut path = format!("/users/me/credits/ledger?limit={}", limit.clamp(1, 200));
    if let Some(w) = workspace {
        path.push_str(&format!("&workspace_id={}", urlencode(w)));
    }
    let l = ctx.api.get(&path).await?;
    let items: Vec<Value> = l["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            e["amount"] = json!(credits_fmt(&e["amount_micro"]));
            e["balance"] = json!(credits_fmt(&e["balance_after_micro"]));
            e
        })
        .collect();
    Ok(Out::list(
        items,
        vec![
            ("TIME", "created_at"),
            ("KIND", "kind"),
            ("AMOUNT", "amount"),
            ("BALANCE", "balance"),
            ("WORKSPACE", "workspace_id"),
            ("MODEL", "model"),
        ],
    ))
}

/// `rig status`.
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
    let doc = json!({
        "email": me["email"], "plan": l["plan"], "custom_limits": l["custom"],
        "workspaces": {"total": workspaces.len(), "by_status": by_status},
        "limits": limit_rows(&l), "credits": credits,
    });
    let mut msg = format!(
        "Signed in as {} (plan {})\n",
        cell(&me["email"]),
        cell(&l["plan"])
    );
    let counts: Vec<String> = by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
    msg.push_str(&format!(
        "Workspaces: {}{}\n",
        workspaces.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        }
    ));
    for r in limit_rows(&l) {
        if !r["used"].is_null() {
            msg.push_str(&format!(
                "  {:<22} {} / {}\n",
                cell(&r["limit"]),
                cell(&r["used"]),
                cell(&r["max"])
            ));
        }
    }
    if let Some(c) = &credits {
        msg.push_str(&format!(
            "Credits: {} of {} available until {}",
            credits_fmt(&c["remaining_micro"]),
            credits_fmt(&c["total_micro"]),
            cell(&c["period_end"])
        ));
    }
    Ok(Out::doc(doc).with_message(msg.trim_end().to_owned()))
}
