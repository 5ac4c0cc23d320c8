//! `rig workspace` (alias `ws`): create, spawn, list, lifecycle actions, resize, env vars, SSH.

use super::Ctx;
use crate::client::urlencode;
use crate::error::{CliError, CliResult};
use crate::output::{cell, mask, stderr_tty, Out};
use crate::wait;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Resource flags of `new`/`spawn`.
#[derive(Debug, Clone, Default)]
pub struct NewArgs {
    pub name: String,
    pub template: Option<String>,
    pub ram: Option<i64>,
    pub vcpu: Option<i64>,
    pub disk: Option<i64>,
    pub env: Vec<String>,
}

fn ws_path(ws: &str) -> String {
    format!("/workspaces/{}", urlencode(ws))
}

/// Parses `KEY=VALUE` arguments.
pub fn parse_assignments(args: &[String]) -> CliResult<BTreeMap<String, Value>> {
    let mut m = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("expected KEY=VALUE, got {a:?}")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!("empty key in {a:?}")));
        }
        m.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(m)
}

fn columns() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ID", "id"),
        ("NAME", "name"),
        ("STATUS", "status"),
        ("TEMPLATE", "template_id"),
        ("RAM_MB", "ram_mb"),
        ("VCPU", "vcpu_count"),
        ("DISK_MB", "disk_size_mb"),
        ("REGION", "region"),
    ]
}

/// The labelled block `get` prints.
fn describe(ws: &Value) -> String {
    let mut s = String::new();
    for (label, key) in [
        ("ID", "id"),
        ("Name", "name"),
        ("Status", "status"),
        ("Template", "template_id"),
        ("Region", "region"),
        ("Node", "node_id"),
        ("IP address", "ip_address"),
        ("RAM (MB)", "ram_mb"),
        ("vCPUs", "vcpu_count"),
        ("Disk (MB)", "disk_size_mb"),
        ("Stop reason", "stop_reason"),
        ("Created", "created_at"),
        ("Started", "started_at"),
        ("Stopped", "stopped_at"),
    ] {
        if !ws[key].is_null() {
            s.push_str(&format!("{label:<12} {}\n", cell(&ws[key])));
        }
    }
    s.push_str(&format!("{:<12} {}\n", "SSH", cell(&ws["ssh"]["command"])));
    if !ws["failure"].is_null() {
        let f = &ws["failure"];
        s.push_str(&format!(
            "{:<12} {} ({}), attempts {}, retryable {}\n",
            "Failure",
            cell(&f["message"]),
            cell(&f["code"]),
            cell(&f["attempts"]),
            cell(&f["retryable"])
        ));
    }
    s.trim_end().to_owned()
}

fn timeout(secs: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(secs.unwrap_or(default))
}

/// Runs `f`; in NDJSON mode prints the error as the stream's last line.
fn finish(
    ctx: &Ctx,
    r: CliResult<Value>,
    message: impl FnOnce(&Value) -> String,
) -> CliResult<Out> {
    let p = &ctx.printer;
    match r {
        Ok(ws) if p.ndjson() => {
            p.event("done", json!({"result": ws}))?;
            Ok(Out::silent())
        }
        Ok(ws) => {
            let m = message(&ws);
            Ok(Out::doc(ws).with_message(m))
        }
        Err(e) => Err(e),
    }
}

/// `rig workspace new` and the create step of `spawn`.
async fn create(ctx: &Ctx, a: &NewArgs) -> CliResult<Value> {
    ctx.api.require_key()?;
    let mut body = Map::new();
    body.insert("name".into(), json!(a.name));
    if let Some(t) = &a.template {
        body.insert("template_id".into(), json!(t));
    }
    for (k, v) in [
        ("ram_mb", a.ram),
        ("vcpu_count", a.vcpu),
        ("disk_size_mb", a.disk),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if !a.env.is_empty() {
        body.insert("env_vars".into(), json!(parse_assignments(&a.env)?));
    }
    ctx.api.post("/workspaces", &Value::Object(body)).await
}

fn floor_notes(a: &NewArgs, ws: &Value) -> String {
    let mut notes = Vec::new();
    for (flag, req, key) in [
        ("--ram", a.ram, "ram_mb"),
        ("--vcpu", a.vcpu, "vcpu_count"),
        ("--disk", a.disk, "disk_size_mb"),
    ] {
        if let (Some(r), Some(eff)) = (req, ws[key].as_i64()) {
            if eff > r {
                notes.push(format!("{flag} {r} raised to the template floor {eff}"));
            }
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("\nnote: {}", notes.join("; "))
    }
}

pub async fn new(ctx: &Ctx, a: NewArgs, no_wait: bool, t: Option<u64>) -> CliResult<Out> {
    let ws = create(ctx, &a).await?;
    let p = &ctx.printer;
    if p.ndjson() && !no_wait {
        p.event(
            "created",
            json!({"id": ws["id"], "name": ws["name"], "status": ws["status"]}),
        )?;
    }
    let id = ws["id"].as_str().unwrap_or_default().to_owned();
    let r = if no_wait {
        Ok(ws.clone())
    } else {
        wait::until(
            &ctx.api,
            p,
            &id,
            &["provisioned"],
            timeout(t, 300),
            ws["status"].as_str().map(str::to_owned),
        )
        .await
    };
    if no_wait && p.ndjson() {
        return Ok(Out::doc(ws));
    }
    finish(ctx, r, |w| {
        format!(
            "Created {} ({}), {}: {} MB RAM, {} vCPU, {} MB disk{}\nStart it with: rig workspace start {}\nThen connect with: {}",
            cell(&w["name"]),
            cell(&w["id"]),
            cell(&w["status"]),
            cell(&w["ram_mb"]),
            cell(&w["vcpu_count"]),
            cell(&w["disk_size_mb"]),
            floor_notes(&a, w),
            cell(&w["name"]),
            cell(&w["ssh"]["command"])
        )
    })
}

pub async fn spawn(ctx: &Ctx, a: NewArgs, t: Option<u64>) -> CliResult<Out> {
    let p = &ctx.printer;
    let ws = create(ctx, &a).await?;
    if p.ndjson() {
        p.event(
            "created",
            json!({"id": ws["id"], "name": ws["name"], "status": ws["status"]}),
        )?;
    } else {
        p.note(&format!(
            "Created {} ({})",
            cell(&ws["name"]),
            cell(&ws["id"])
        ));
    }
    let id = ws["id"].as_str().unwrap_or_default().to_owned();
    let to = timeout(t, 300);
    let r = async {
        let w = wait::until(&ctx.api, p, &id, &["provisioned"], to, ws["status"].as_str().map(str::to_owned)).await?;
        let started = ctx.api.post(&format!("{}/start", ws_path(&id)), &json!({})).await?;
        let _ = w;
        let w = wait::until(&ctx.api, p, &id, &["running"], to, started["status"].as_str().map(str::to_owned)).await?;
        if p.ndjson() {
            p.event(
                "ready",
                json!({"id": w["id"], "name": w["name"], "ssh_target": w["ssh"]["ssh_target"], "port": w["ssh"]["port"], "command": w["ssh"]["command"]}),
            )?;
        }
        Ok(w)
    }
    .await;
    finish(ctx, r, |w| {
        format!("Running. Connect with:\n  {}", cell(&w["ssh"]["command"]))
    })
}

pub async fn ls(ctx: &Ctx, status: Option<&str>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let path = match status {
        Some(s) => format!("/workspaces?status={}", urlencode(s)),
        None => "/workspaces".into(),
    };
    Ok(Out::list(ctx.api.list_all(&path).await?, columns()))
}

pub async fn get(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx.api.get(&ws_path(ws)).await?;
    let m = describe(&w);
    Ok(Out::doc(w).with_message(m))
}

/// Sends a lifecycle action and waits for `targets` unless `no_wait`.
async fn action(
    ctx: &Ctx,
    ws: &str,
    verb: &str,
    targets: &[&str],
    no_wait: bool,
    to: Duration,
) -> CliResult<Out> {
    let w = ctx
        .api
        .post(&format!("{}/{verb}", ws_path(ws)), &json!({}))
        .await?;
    if no_wait {
        let msg = format!("{} is {}", cell(&w["name"]), cell(&w["status"]));
        return Ok(Out::doc(w).with_message(msg));
    }
    let id = w["id"].as_str().unwrap_or(ws).to_owned();
    let r = wait::until(
        &ctx.api,
        &ctx.printer,
        &id,
        targets,
        to,
        w["status"].as_str().map(str::to_owned),
    )
    .await;
    finish(ctx, r, |w| {
        format!("{} is {}", cell(&w["name"]), cell(&w["status"]))
    })
}

pub async fn start(ctx: &Ctx, ws: &str, no_wait: bool, t: Option<u64>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    match cur["status"].as_str() {
        Some("running") => {
            let m = format!("{} is already running", cell(&cur["name"]));
            return Ok(Out::doc(cur).with_message(m));
        }
        Some("starting") if !no_wait => {
            let id = cur["id"].as_str().unwrap_or(ws).to_owned();
            let r = wait::until(
                &ctx.api,
                &ctx.printer,
                &id,
                &["running"],
                timeout(t, 300),
                None,
            )
            .await;
            return finish(ctx, r, |w| {
                format!(
                    "{} is running\nConnect with: {}",
                    cell(&w["name"]),
                    cell(&w["ssh"]["command"])
                )
            });
        }
        _ => {}
    }
    action(ctx, ws, "start", &["running"], no_wait, timeout(t, 300)).await
}

pub async fn stop(ctx: &Ctx, ws: &str, no_wait: bool, t: Option<u64>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    if cur["status"] == "stopped" {
        let m = format!("{} is already stopped", cell(&cur["name"]));
        return Ok(Out::doc(cur).with_message(m));
    }
    action(ctx, ws, "stop", &["stopped"], no_wait, timeout(t, 120)).await
}

pub async fn restart(ctx: &Ctx, ws: &str, no_wait: bool, t: Option<u64>) -> CliResult<Out> {
    ctx.api.require_key()?;
    action(ctx, ws, "restart", &["running"], no_wait, timeout(t, 300)).await
}

pub async fn retry(ctx: &Ctx, ws: &str, no_wait: bool, t: Option<u64>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx
        .api
        .post(&format!("{}/retry", ws_path(ws)), &json!({}))
        .await?;
    let target = if w["status"] == "provisioning" {
        "provisioned"
    } else {
        "running"
    };
    if no_wait {
        let msg = format!("{} is {}", cell(&w["name"]), cell(&w["status"]));
        return Ok(Out::doc(w).with_message(msg));
    }
    let id = w["id"].as_str().unwrap_or(ws).to_owned();
    let r = wait::until(
        &ctx.api,
        &ctx.printer,
        &id,
        &[target],
        timeout(t, 300),
        w["status"].as_str().map(str::to_owned),
    )
    .await;
    finish(ctx, r, |w| {
        format!("{} is {}", cell(&w["name"]), cell(&w["status"]))
    })
}

pub async fn cancel(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx
        .api
        .post(&format!("{}/cancel", ws_path(ws)), &json!({}))
        .await?;
    let m = format!("Cancelled; {} is {}", cell(&w["name"]), cell(&w["status"]));
    Ok(Out::doc(w).with_message(m))
}

/// Asks `[y/N]` on a terminal; without one `--yes` is required.
fn confirm(question: &str, yes: bool) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !stderr_tty() || !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(CliError::usage(
            "refusing to delete without confirmation: pass --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::usage("aborted"))
    }
}

pub async fn rm(ctx: &Ctx, ws: &str, yes: bool, force: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    let (name, id) = (cell(&cur["name"]), cell(&cur["id"]));
    confirm(
        &format!("Delete workspace {name} ({id}) and all its data?"),
        yes || force,
    )?;
    let path = if force {
        format!("{}?force=true", ws_path(&id))
    } else {
        ws_path(&id)
    };
    let w = ctx.api.call(Method::DELETE, &path, None).await?;
    Ok(Out::doc(w).with_message(format!("Deleting {name}")))
}

pub async fn resize(
    ctx: &Ctx,
    ws: &str,
    ram: Option<i64>,
    vcpu: Option<i64>,
    disk: Option<i64>,
) -> CliResult<Out> {
    ctx.api.require_key()?;
    if ram.is_none() && vcpu.is_none() && disk.is_none() {
        return Err(CliError::usage(
            "give at least one of --ram, --vcpu, --disk",
        ));
    }
    let old = ctx.api.get(&ws_path(ws)).await?;
    let mut body = Map::new();
    for (k, v) in [
        ("ram_mb", ram),
        ("vcpu_count", vcpu),
        ("disk_size_mb", disk),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    let new = ctx
        .api
        .call(
            Method::PUT,
            &format!("{}/resources", ws_path(ws)),
            Some(&Value::Object(body)),
        )
        .await?;
    let mut msg = String::new();
    for (label, k) in [
        ("RAM (MB)", "ram_mb"),
        ("vCPUs", "vcpu_count"),
        ("Disk (MB)", "disk_size_mb"),
    ] {
        msg.push_str(&format!(
            "{label:<10} {} -> {}\n",
            cell(&old[k]),
            cell(&new[k])
        ));
    }
    msg.push_str("The new values apply at the next start.");
    Ok(Out::doc(new).with_message(msg))
}

pub async fn ssh_info(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx.api.get(&ws_path(ws)).await?;
    let s = &w["ssh"];
    let doc = json!({
        "workspace": w["name"], "workspace_id": w["id"], "status": w["status"],
        "user": s["user"], "host": s["host"], "port": s["port"], "ssh_target": s["ssh_target"],
        "command": s["command"], "host_key_fingerprints": s["host_key_fingerprints"],
    });
    let fps: Vec<String> = s["host_key_fingerprints"]
        .as_array()
        .map(|a| a.iter().map(cell).collect())
        .unwrap_or_default();
    let msg = format!(
        "{}\n\nuser    {}\nhost    {}\nport    {}\nstatus  {}\nhost key fingerprints: {}",
        cell(&s["command"]),
        cell(&s["user"]),
        cell(&s["host"]),
        cell(&s["port"]),
        cell(&w["status"]),
        if fps.is_empty() {
            "(none published)".to_owned()
        } else {
            fps.join(", ")
        }
    );
    Ok(Out::doc(doc).with_message(msg))
}

fn masked_items(vars: &Value, reveal: bool) -> Vec<Value> {
    vars.as_object()
        .map(|m| m.iter().map(|(k, v)| json!({"key": k, "value": mask(v.as_str().unwrap_or_default(), reveal)})).collect())
        .unwrap_or_default()
}

pub async fn env_set(ctx: &Ctx, ws: &str, pairs: &[String]) -> CliResult<Out> {
    ctx.api.require_key()?;
    let vars = parse_assignments(pairs)?;
    let keys: Vec<String> = vars.keys().cloned().collect();
    let r = ctx
        .api
        .call(
            Method::PATCH,
            &format!("{}/env", ws_path(ws)),
            Some(&json!({"env_vars": vars})),
        )
        .await?;
    let applied = r["applied"] == true;
    let doc = json!({"set": keys, "applied": r["applied"], "updated_at": r["updated_at"]});
    let msg = format!(
        "Set {}; {}",
        keys.join(", "),
        if applied {
            "applied to the running VM"
        } else {
            "applies at the next start (or the agent's next poll)"
        }
    );
    Ok(Out::doc(doc).with_message(msg))
}

pub async fn env_unset(ctx: &Ctx, ws: &str, keys: &[String]) -> CliResult<Out> {
    ctx.api.require_key()?;
    let vars: Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
    let r = ctx
        .api
        .call(
            Method::PATCH,
            &format!("{}/env", ws_path(ws)),
            Some(&json!({"env_vars": vars})),
        )
        .await?;
    let doc = json!({"unset": keys, "applied": r["applied"], "updated_at": r["updated_at"]});
    Ok(Out::doc(doc).with_message(format!("Removed {}", keys.join(", "))))
}

pub async fn env_get(ctx: &Ctx, ws: &str, key: &str, reveal: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx.api.get(&format!("{}/env", ws_path(ws))).await?;
    let v = r["env_vars"][key]
        .as_str()
        .ok_or_else(|| CliError::not_found(format!("no env var {key} in this workspace")))?;
    let value = mask(v, reveal);
    Ok(Out::doc(json!({"key": key, "value": value})).with_message(value))
}

pub async fn env_ls(ctx: &Ctx, ws: &str, reveal: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx.api.get(&format!("{}/env", ws_path(ws))).await?;
    Ok(Out::list(
        masked_items(&r["env_vars"], reveal),
        vec![("KEY", "key"), ("VALUE", "value")],
    ))
}

pub async fn ssh_keys_ls(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx.api.get(&format!("{}/ssh-keys", ws_path(ws))).await?;
    let mut out = Out::list(
        r["items"].as_array().cloned().unwrap_or_default(),
        vec![
            ("FINGERPRINT", "fingerprint"),
            ("TYPE", "key_type"),
            ("COMMENT", "comment"),
        ],
    );
    out.doc["synced_at"] = r["synced_at"].clone();
    out.doc["revision"] = r["revision"].clone();
    Ok(out)
}

pub async fn ssh_keys_sync(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx
        .api
        .post(&format!("{}/ssh-keys/sync", ws_path(ws)), &json!({}))
        .await?;
    let msg = if r["synced"] == true {
        format!("synced {} keys", cell(&r["keys"]))
    } else {
        "not confirmed yet".to_owned()
    };
    Ok(Out::doc(r).with_message(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        let m = parse_assignments(&["A=1".into(), "B=x=y".into(), "C=".into()]).expect("valid");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x=y");
        assert_eq!(m["C"], "");
        assert!(parse_assignments(&["novalue".into()]).is_err());
        assert!(parse_assignments(&["=v".into()]).is_err());
    }
}
