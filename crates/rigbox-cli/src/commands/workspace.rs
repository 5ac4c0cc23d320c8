//! `workspace` (alias `ws`) in local mode: create (`new`, `spawn`), list, show, the lifecycle
//! actions with their waits (`start`, `stop`, `restart`, `retry`, `cancel`, `rm`), `resize`,
//! SSH details, environment variables (masked unless `--reveal`, in every format) and the keys
//! inside the VM. Request bodies are the wire types of `rigbox_types::api`.

use super::account::labelled;
use super::Ctx;
use crate::cli::{NewFlags, WaitFlags};
use crate::client::urlencode;
use crate::error::{CliError, CliResult};
use crate::output::{cell, mask, Out};
use crate::prompt;
use crate::wait::Wait;
use reqwest::Method;
use rigbox_types::api::{CreateWorkspaceRequest, EnvPatch, ResizeRequest};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `--timeout` of the waits, and of `stop`.
const TIMEOUT_SECS: u64 = 300;
const STOP_TIMEOUT_SECS: u64 = 120;

fn ws_path(ws: &str) -> String {
    format!("/workspaces/{}", urlencode(ws))
}

/// Parses `KEY=VALUE` arguments (the value may contain `=`; it may be empty).
pub fn parse_assignments(args: &[String]) -> CliResult<BTreeMap<String, Option<String>>> {
    let mut m = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("expected KEY=VALUE, got {a:?}")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!("empty key in {a:?}")));
        }
        m.insert(k.to_owned(), Some(v.to_owned()));
    }
    Ok(m)
}

const COLUMNS: [(&str, &str); 8] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("TEMPLATE", "template_id"),
    ("RAM_MB", "ram_mb"),
    ("VCPU", "vcpu_count"),
    ("DISK_MB", "disk_size_mb"),
    ("REGION", "region"),
];

/// The labelled block `get` prints: all fields, the SSH command, the failure when failed.
fn describe(ws: &Value) -> String {
    let mut s = labelled(&[
        ("ID", &ws["id"]),
        ("Name", &ws["name"]),
        ("Status", &ws["status"]),
        ("Template", &ws["template_id"]),
        ("Image", &ws["image"]),
        ("Region", &ws["region"]),
        ("Node", &ws["node_id"]),
        ("IP address", &ws["ip_address"]),
        ("RAM (MB)", &ws["ram_mb"]),
        ("vCPUs", &ws["vcpu_count"]),
        ("Disk (MB)", &ws["disk_size_mb"]),
        ("AI mode", &ws["ai_mode"]),
        ("Stop reason", &ws["stop_reason"]),
        ("Created", &ws["created_at"]),
        ("Started", &ws["started_at"]),
        ("Stopped", &ws["stopped_at"]),
        ("SSH", &ws["ssh"]["command"]),
    ]);
    let f = &ws["failure"];
    if !f.is_null() {
        s.push_str(&format!(
            "\n\nFailure: {} ({}), attempt {}, {}",
            cell(&f["message"]),
            cell(&f["code"]),
            cell(&f["attempts"]),
            if f["retryable"] == true {
                format!(
                    "retry with: {} workspace retry {}",
                    crate::bin_name(),
                    cell(&ws["name"])
                )
            } else {
                "not retryable".to_owned()
            }
        ));
    }
    s
}

impl Ctx {
    fn waiter(&self, timeout: Option<u64>, default: u64) -> Wait<'_> {
        Wait {
            api: &self.api,
            printer: &self.printer,
            verbose: self.verbose,
            timeout: Duration::from_secs(timeout.unwrap_or(default)),
        }
    }
}

/// Ends a successful wait: NDJSON `done`, or the object with its human sentence.
fn finish(ctx: &Ctx, ws: Value, message: impl FnOnce(&Value) -> String) -> CliResult<Out> {
    if ctx.printer.ndjson() {
        ctx.printer.event("done", json!({ "result": ws }))?;
        return Ok(Out::silent());
    }
    let m = message(&ws);
    Ok(Out::doc(ws).with_message(m))
}

fn status_of(ws: &Value) -> Option<&str> {
    ws["status"].as_str()
}

fn id_of<'a>(ws: &'a Value, fallback: &'a str) -> &'a str {
    ws["id"].as_str().unwrap_or(fallback)
}

/// `POST /workspaces` from the flags of `new`/`spawn`.
async fn create(ctx: &Ctx, a: &NewFlags) -> CliResult<Value> {
    ctx.api.require_key()?;
    let body = CreateWorkspaceRequest {
        name: a.name.clone(),
        template_id: a.template.clone(),
        ram_mb: a.ram,
        vcpu_count: a.vcpu,
        disk_size_mb: a.disk,
        env_vars: if a.env.is_empty() {
            None
        } else {
            Some(parse_assignments(&a.env)?)
        },
    };
    let ws = ctx.api.post("/workspaces", &body).await?;
    ctx.printer.event(
        "created",
        json!({"id": ws["id"], "name": ws["name"], "status": ws["status"]}),
    )?;
    Ok(ws)
}

/// Notes on values the server raised to the template's floor.
fn floor_notes(a: &NewFlags, ws: &Value) -> Vec<String> {
    [
        ("--ram", a.ram, "ram_mb"),
        ("--vcpu", a.vcpu, "vcpu_count"),
        ("--disk", a.disk, "disk_size_mb"),
    ]
    .into_iter()
    .filter_map(|(flag, req, key)| match (req, ws[key].as_i64()) {
        (Some(r), Some(eff)) if eff > r => Some(format!(
            "{flag} {r} was raised to the template's floor {eff}"
        )),
        _ => None,
    })
    .collect()
}

/// `workspace new`.
pub async fn new(ctx: &Ctx, a: &NewFlags, w: WaitFlags) -> CliResult<Out> {
    let ws = create(ctx, a).await?;
    let ws = if w.no_wait {
        ws
    } else {
        ctx.waiter(w.timeout, TIMEOUT_SECS)
            .until(id_of(&ws, &a.name), &["provisioned"], status_of(&ws))
            .await?
    };
    let bin = crate::bin_name();
    finish(ctx, ws, |ws| {
        let mut m = format!(
            "Created {} ({}), {}\nResources: {} MB RAM, {} vCPU, {} MB disk",
            cell(&ws["name"]),
            cell(&ws["id"]),
            cell(&ws["status"]),
            cell(&ws["ram_mb"]),
            cell(&ws["vcpu_count"]),
            cell(&ws["disk_size_mb"]),
        );
        for n in floor_notes(a, ws) {
            m.push_str(&format!("\nNote: {n}"));
        }
        m.push_str(&format!(
            "\nStart it with: {bin} workspace start {}\nThen connect with: {}",
            cell(&ws["name"]),
            cell(&ws["ssh"]["command"])
        ));
        m
    })
}

/// `workspace spawn`: create, wait for `provisioned`, start, wait for `running`.
pub async fn spawn(ctx: &Ctx, a: &NewFlags, timeout: Option<u64>) -> CliResult<Out> {
    let p = &ctx.printer;
    let ws = create(ctx, a).await?;
    let id = id_of(&ws, &a.name).to_owned();
    p.note(&format!(
        "Created {} ({}); waiting for its disk…",
        cell(&ws["name"]),
        id
    ));
    let waiter = ctx.waiter(timeout, TIMEOUT_SECS);
    let ws = waiter.until(&id, &["provisioned"], status_of(&ws)).await?;
    let started = ctx
        .api
        .post(&format!("{}/start", ws_path(&id)), &json!({}))
        .await?;
    p.note(&format!("Starting {}…", cell(&ws["name"])));
    let ws = waiter.until(&id, &["running"], status_of(&started)).await?;
    p.event(
        "ready",
        json!({"id": ws["id"], "name": ws["name"], "ssh_target": ws["ssh"]["ssh_target"],
               "port": ws["ssh"]["port"], "command": ws["ssh"]["command"]}),
    )?;
    finish(ctx, ws, |ws| {
        format!("Running. Connect with:\n  {}", cell(&ws["ssh"]["command"]))
    })
}

/// `workspace ls`.
pub async fn ls(ctx: &Ctx, status: Option<&str>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let path = match status {
        Some(s) => format!("/workspaces?status={}", urlencode(s)),
        None => "/workspaces".into(),
    };
    Ok(Out::list(ctx.api.list_all(&path).await?, COLUMNS.to_vec()))
}

/// `workspace get`.
pub async fn get(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx.api.get(&ws_path(ws)).await?;
    let m = describe(&w);
    Ok(Out::doc(w).with_message(m))
}

/// The sentence after a lifecycle action.
fn is_now(ws: &Value) -> String {
    let mut m = format!("{} is {}", cell(&ws["name"]), cell(&ws["status"]));
    if ws["status"] == "running" {
        m.push_str(&format!("\nConnect with: {}", cell(&ws["ssh"]["command"])));
    }
    m
}

/// The workspace is already where the action would take it: exit 0, saying so.
fn already(ctx: &Ctx, ws: Value, what: &str) -> CliResult<Out> {
    ctx.printer
        .event("status", json!({"status": ws["status"]}))?;
    let msg = format!("{} is already {what}", cell(&ws["name"]));
    if ctx.printer.ndjson() {
        return finish(ctx, ws, |_| msg);
    }
    Ok(Out::doc(ws).with_message(msg))
}

/// Sends a lifecycle action and, unless `--no-wait`, waits for one of `targets`.
async fn action(
    ctx: &Ctx,
    ws: &str,
    verb: &str,
    targets: &[&str],
    w: WaitFlags,
    default_timeout: u64,
) -> CliResult<Out> {
    let answer = ctx
        .api
        .post(&format!("{}/{verb}", ws_path(ws)), &json!({}))
        .await?;
    if w.no_wait {
        let m = is_now(&answer);
        return Ok(Out::doc(answer).with_message(m));
    }
    let done = ctx
        .waiter(w.timeout, default_timeout)
        .until(id_of(&answer, ws), targets, status_of(&answer))
        .await?;
    finish(ctx, done, is_now)
}

/// Waits for a transition that is already under way.
async fn follow(
    ctx: &Ctx,
    cur: &Value,
    ws: &str,
    target: &str,
    w: WaitFlags,
    default_timeout: u64,
) -> CliResult<Out> {
    ctx.printer
        .event("status", json!({"status": cur["status"]}))?;
    let done = ctx
        .waiter(w.timeout, default_timeout)
        .until(id_of(cur, ws), &[target], status_of(cur))
        .await?;
    finish(ctx, done, is_now)
}

/// `workspace start`.
pub async fn start(ctx: &Ctx, ws: &str, w: WaitFlags) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    match status_of(&cur) {
        Some("running") => already(ctx, cur, "running"),
        Some("starting") if !w.no_wait => follow(ctx, &cur, ws, "running", w, TIMEOUT_SECS).await,
        _ => action(ctx, ws, "start", &["running"], w, TIMEOUT_SECS).await,
    }
}

/// `workspace stop`.
pub async fn stop(ctx: &Ctx, ws: &str, w: WaitFlags) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    match status_of(&cur) {
        Some("stopped") => already(ctx, cur, "stopped"),
        Some("stopping") if !w.no_wait => {
            follow(ctx, &cur, ws, "stopped", w, STOP_TIMEOUT_SECS).await
        }
        _ => action(ctx, ws, "stop", &["stopped"], w, STOP_TIMEOUT_SECS).await,
    }
}

/// `workspace restart`: waits until it runs again.
pub async fn restart(ctx: &Ctx, ws: &str, w: WaitFlags) -> CliResult<Out> {
    ctx.api.require_key()?;
    action(ctx, ws, "restart", &["running"], w, TIMEOUT_SECS).await
}

/// `workspace retry`: waits for the end of the retried step (`provisioned` or `running`).
pub async fn retry(ctx: &Ctx, ws: &str, w: WaitFlags) -> CliResult<Out> {
    ctx.api.require_key()?;
    let answer = ctx
        .api
        .post(&format!("{}/retry", ws_path(ws)), &json!({}))
        .await?;
    if w.no_wait {
        let m = is_now(&answer);
        return Ok(Out::doc(answer).with_message(m));
    }
    let target = if answer["status"] == "provisioning" {
        "provisioned"
    } else {
        "running"
    };
    let done = ctx
        .waiter(w.timeout, TIMEOUT_SECS)
        .until(id_of(&answer, ws), &[target], status_of(&answer))
        .await?;
    finish(ctx, done, is_now)
}

/// `workspace cancel`.
pub async fn cancel(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let w = ctx
        .api
        .post(&format!("{}/cancel", ws_path(ws)), &json!({}))
        .await?;
    let m = format!("Cancelled; {} is {}", cell(&w["name"]), cell(&w["status"]));
    Ok(Out::doc(w).with_message(m))
}

/// `workspace rm`: asks first (unless `--yes`/`--force`); `--force` deletes in any state.
pub async fn rm(ctx: &Ctx, ws: &str, yes: bool, force: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let cur = ctx.api.get(&ws_path(ws)).await?;
    let (name, id) = (cell(&cur["name"]), id_of(&cur, ws).to_owned());
    prompt::confirm(
        format!("Delete workspace {name} ({id}) and all its data?"),
        yes || force,
    )
    .await?;
    let path = if force {
        format!("{}?force=true", ws_path(&id))
    } else {
        ws_path(&id)
    };
    let w = ctx.api.call::<Value>(Method::DELETE, &path, None).await?;
    Ok(Out::doc(w).with_message(format!("Deleting {name}")))
}

/// `workspace resize`: prints old → new and notes they apply at the next start.
pub async fn resize(
    ctx: &Ctx,
    ws: &str,
    ram: Option<i64>,
    vcpu: Option<i64>,
    disk: Option<i64>,
) -> CliResult<Out> {
    if ram.is_none() && vcpu.is_none() && disk.is_none() {
        return Err(CliError::usage(
            "give at least one of --ram, --vcpu, --disk",
        ));
    }
    ctx.api.require_key()?;
    let old = ctx.api.get(&ws_path(ws)).await?;
    let body = ResizeRequest {
        ram_mb: ram,
        vcpu_count: vcpu,
        disk_size_mb: disk,
    };
    let new = ctx
        .api
        .call(
            Method::PUT,
            &format!("{}/resources", ws_path(id_of(&old, ws))),
            Some(&body),
        )
        .await?;
    let mut msg = String::new();
    for (label, k) in [
        ("RAM (MB)", "ram_mb"),
        ("vCPUs", "vcpu_count"),
        ("Disk (MB)", "disk_size_mb"),
    ] {
        let changed = if old[k] == new[k] { "" } else { "  (changed)" };
        msg.push_str(&format!(
            "{label:<10} {} -> {}{changed}\n",
            cell(&old[k]),
            cell(&new[k])
        ));
    }
    msg.push_str("The new values apply at the next start.");
    Ok(Out::doc(new).with_message(msg))
}

/// `workspace ssh-info`.
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
    let mut msg = format!(
        "{}\n(or: {} ssh {})\n\n{}\nHost key fingerprints:",
        cell(&s["command"]),
        crate::bin_name(),
        cell(&w["name"]),
        labelled(&[
            ("User", &s["user"]),
            ("Host", &s["host"]),
            ("Port", &s["port"]),
            ("Status", &w["status"]),
        ])
    );
    if fps.is_empty() {
        msg.push_str(" (none published)");
    }
    for f in fps {
        msg.push_str(&format!("\n  {f}"));
    }
    Ok(Out::doc(doc).with_message(msg))
}

/// The `ssh` arguments that reach a workspace's ssh block: `-p` unless 22, and for a
/// `*.localhost` host (one-machine mode) the loopback address, which RFC 6761 reserves it for
/// but the system resolver may not know.
pub fn ssh_args(ssh: &Value) -> CliResult<Vec<String>> {
    let (Some(user), Some(host), Some(port)) = (
        ssh["user"].as_str(),
        ssh["host"].as_str(),
        ssh["port"].as_u64(),
    ) else {
        return Err(CliError::new(
            "invalid_response",
            "The API returned a workspace without SSH details.",
            crate::exit::ERROR,
        ));
    };
    let mut args = Vec::new();
    if port != 22 {
        args.extend(["-p".to_owned(), port.to_string()]);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        args.extend(["-o".to_owned(), "HostName=127.0.0.1".to_owned()]);
    }
    args.push(format!("{user}@{host}"));
    Ok(args)
}

/// `ssh <WS> [ARGS]…`: replaces this process with the system ssh, so the session's exit status
/// is rig's.
pub async fn ssh(ctx: &Ctx, ws: &str, extra: &[String]) -> CliResult<Out> {
    use std::os::unix::process::CommandExt;
    ctx.api.require_key()?;
    let w = ctx.api.get(&ws_path(ws)).await?;
    // ssh reads options after the destination too (the spec's own `ssh <target> -p <port>`),
    // so whatever follows is passed on as typed: options, then the remote command.
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(ssh_args(&w["ssh"])?).args(extra);
    let err = cmd.exec();
    Err(CliError::new(
        "ssh_unavailable",
        format!(
            "Cannot run ssh: {err}. Install the OpenSSH client (apt-get install openssh-client)."
        ),
        crate::exit::ERROR,
    ))
}

/// `{key, value}` items of an env map, sorted by key, values masked unless `reveal`.
fn env_items(vars: &Value, reveal: bool) -> Vec<Value> {
    let mut items: Vec<(String, String)> = vars
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
        .into_iter()
        .map(|(k, v)| json!({"key": k, "value": mask(&v, reveal)}))
        .collect()
}

async fn patch_env(
    ctx: &Ctx,
    ws: &str,
    env_vars: BTreeMap<String, Option<String>>,
) -> CliResult<Value> {
    ctx.api
        .call(
            Method::PATCH,
            &format!("{}/env", ws_path(ws)),
            Some(&EnvPatch { env_vars }),
        )
        .await
}

/// `workspace env set <WS> KEY=VALUE…`: says which keys were set and whether the running VM
/// has them already. Values are never echoed.
pub async fn env_set(ctx: &Ctx, ws: &str, pairs: &[String]) -> CliResult<Out> {
    let vars = parse_assignments(pairs)?;
    ctx.api.require_key()?;
    let keys: Vec<String> = vars.keys().cloned().collect();
    let r = patch_env(ctx, ws, vars).await?;
    let applied = r["applied"] == true;
    let doc = json!({"set": keys, "applied": applied, "updated_at": r["updated_at"]});
    let msg = format!(
        "Set {}; {}",
        keys.join(", "),
        if applied {
            "applied to the running VM"
        } else {
            "they apply at the next start (or the agent's next poll)"
        }
    );
    Ok(Out::doc(doc).with_message(msg))
}

/// `workspace env unset <WS> KEY…`: sends null for each key.
pub async fn env_unset(ctx: &Ctx, ws: &str, keys: &[String]) -> CliResult<Out> {
    ctx.api.require_key()?;
    let vars = keys.iter().map(|k| (k.clone(), None)).collect();
    let r = patch_env(ctx, ws, vars).await?;
    let applied = r["applied"] == true;
    let doc = json!({"unset": keys, "applied": applied, "updated_at": r["updated_at"]});
    let msg = format!(
        "Removed {}; {}",
        keys.join(", "),
        if applied {
            "applied to the running VM"
        } else {
            "the change applies at the next start (or the agent's next poll)"
        }
    );
    Ok(Out::doc(doc).with_message(msg))
}

/// `workspace env get <WS> KEY [--reveal]`; a missing key exits 3.
pub async fn env_get(ctx: &Ctx, ws: &str, key: &str, reveal: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx.api.get(&format!("{}/env", ws_path(ws))).await?;
    let v = r["env_vars"][key]
        .as_str()
        .ok_or_else(|| CliError::not_found(format!("{ws} has no environment variable {key}")))?;
    let value = mask(v, reveal);
    Ok(Out::doc(json!({"key": key, "value": value})).with_message(value))
}

/// `workspace env ls <WS> [--reveal]`.
pub async fn env_ls(ctx: &Ctx, ws: &str, reveal: bool) -> CliResult<Out> {
    ctx.api.require_key()?;
    let r = ctx.api.get(&format!("{}/env", ws_path(ws))).await?;
    Ok(Out::list(
        env_items(&r["env_vars"], reveal),
        vec![("KEY", "key"), ("VALUE", "value")],
    ))
}

/// `workspace ssh-keys ls <WS>`: what the guest agent last reported.
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

/// `workspace ssh-keys sync <WS>`.
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
        assert_eq!(m["A"].as_deref(), Some("1"));
        assert_eq!(m["B"].as_deref(), Some("x=y"));
        assert_eq!(m["C"].as_deref(), Some(""));
        assert!(parse_assignments(&["novalue".into()]).is_err());
        assert!(parse_assignments(&["=v".into()]).is_err());
    }

    #[test]
    fn env_values_are_masked_and_sorted() {
        let vars = json!({"Z": "last", "A": "first"});
        assert_eq!(
            env_items(&vars, false),
            vec![
                json!({"key": "A", "value": "********"}),
                json!({"key": "Z", "value": "********"})
            ]
        );
        assert_eq!(env_items(&vars, true)[0]["value"], "first");
    }

    #[test]
    fn floors_are_noted() {
        let flags = NewFlags {
            name: "a".into(),
            template: None,
            ram: Some(128),
            vcpu: Some(1),
            disk: None,
            env: vec![],
        };
        let ws = json!({"ram_mb": 512, "vcpu_count": 1, "disk_size_mb": 3072});
        assert_eq!(
            floor_notes(&flags, &ws),
            ["--ram 128 was raised to the template's floor 512"]
        );
    }

    #[test]
    fn failed_workspaces_show_their_failure() {
        let ws = json!({"id": "ws-1", "name": "box", "status": "failed", "ssh": {"command": "ssh x"},
            "failure": {"code": "boot_failed", "message": "no", "retryable": true, "attempts": 1}});
        let d = describe(&ws);
        assert!(d.contains("Failure: no (boot_failed), attempt 1"), "{d}");
        assert!(d.contains("workspace retry box"), "{d}");
    }
}
