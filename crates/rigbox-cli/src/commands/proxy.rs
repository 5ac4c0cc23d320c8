//! `rig proxy` (workspace mode only; bridge-and-ai.md §10): the opt-in environment that points
//! provider SDKs at the platform's AI proxy. Every subcommand but `path` reads
//! `GET /rig/v1/proxy/env`, which lists only the groups whose upstream is configured.
//!
//! - `on [GROUP]` / `env [GROUP]`: `export NAME='value'` lines, for `eval "$(rig proxy on)"`
//! - `off [GROUP]`: one `unset NAME …` line, for `eval "$(rig proxy off)"`
//! - `dotenv [PATH]`: `NAME=value` lines into a dotenv file, other lines kept
//! - `path`: where the agent keeps the same exports (`~/.rigbox/proxy.env`)
//! - `status`: mode, bridge, groups, which variables this shell has, available credits

use super::account::labelled;
use super::agent::sh_quote;
use super::credits::credits_text;
use crate::client::Api;
use crate::error::{exit, CliError, CliResult};
use crate::output::{Format, Out, Printer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// `~/.rigbox/proxy.env` of the workspace user, as the agent writes it.
pub const PROXY_ENV_PATH: &str = "/home/developer/.rigbox/proxy.env";
/// The group used when none is named.
pub const DEFAULT_GROUP: &str = "all";
/// The groups of the spec, in its order.
pub const GROUPS: [&str; 5] = ["openrouter", "openai", "v1", "anthropic", "all"];

/// One variable of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Var {
    name: String,
    value: String,
}

/// `GET /rig/v1/proxy/env`.
async fn fetch(bridge: &Api) -> CliResult<Value> {
    bridge.get("/proxy/env").await
}

/// Refuses when managed AI is not this workspace's mode.
fn require_managed(env: &Value) -> CliResult<()> {
    match env["mode"].as_str() {
        Some("managed") => Ok(()),
        other => Err(CliError::new(
            "managed_ai_disabled",
            format!(
                "managed AI is off for this workspace (mode: {})",
                other.unwrap_or("unknown")
            ),
            exit::ERROR,
        )),
    }
}

/// The configured group names, in the spec's order.
fn configured(env: &Value) -> Vec<&'static str> {
    GROUPS
        .into_iter()
        .filter(|g| env["groups"][*g].is_array())
        .collect()
}

/// The variables of `group`; an error naming the configured groups when it is not one.
fn group_vars(env: &Value, group: &str) -> CliResult<Vec<Var>> {
    let Some(vars) = env["groups"][group].as_array() else {
        let have = configured(env);
        let msg = if have.is_empty() {
            "managed AI is not offered here: the platform has no AI upstream configured".to_owned()
        } else {
            format!(
                "the {group} group is not available here; configured groups: {}",
                have.join(", ")
            )
        };
        return Err(CliError::new("group_unavailable", msg, exit::ERROR));
    };
    Ok(vars
        .iter()
        .filter_map(|v| {
            Some(Var {
                name: v["name"].as_str()?.to_owned(),
                value: v["value"].as_str()?.to_owned(),
            })
        })
        .collect())
}

fn items(vars: &[Var]) -> Vec<Value> {
    vars.iter()
        .map(|v| json!({"name": v.name, "value": v.value}))
        .collect()
}

/// `proxy on|env [GROUP]`: `export NAME='value'` lines (human); the variables otherwise.
pub async fn on(bridge: &Api, group: Option<&str>) -> CliResult<Out> {
    let group = group.unwrap_or(DEFAULT_GROUP);
    let env = fetch(bridge).await?;
    require_managed(&env)?;
    let vars = group_vars(&env, group)?;
    let script = vars
        .iter()
        .map(|v| format!("export {}={}", v.name, sh_quote(&v.value)))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Out::doc(json!({"group": group, "items": items(&vars)}))
        .with_view(items(&vars), vec![("NAME", "name"), ("VALUE", "value")])
        .with_message(script))
}

/// `proxy off [GROUP]`: one `unset NAME …` line (human); the names otherwise.
pub async fn off(bridge: &Api, group: Option<&str>) -> CliResult<Out> {
    let group = group.unwrap_or(DEFAULT_GROUP);
    let env = fetch(bridge).await?;
    let vars = group_vars(&env, group)?;
    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    let rows: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    Ok(Out::doc(json!({"group": group, "items": rows}))
        .with_view(rows, vec![("NAME", "name")])
        .with_message(format!("unset {}", names.join(" "))))
}

/// The variable an env-file line assigns (`NAME=…` or `export NAME=…`), if any.
fn assigned_name(line: &str) -> Option<&str> {
    let l = line.trim_start();
    let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
    let (name, _) = l.split_once('=')?;
    let name = name.trim_end();
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some(name)
}

/// `existing` with `vars` as `NAME=value` lines: the first line assigning a name is replaced,
/// later ones dropped, names not present appended; every other line is kept.
fn merge_dotenv(existing: &str, vars: &[Var]) -> String {
    let mut written = std::collections::HashSet::new();
    let mut out = String::new();
    for line in existing.lines() {
        match assigned_name(line).and_then(|n| vars.iter().find(|v| v.name == n)) {
            Some(v) if written.insert(v.name.clone()) => {
                out.push_str(&format!("{}={}\n", v.name, v.value));
            }
            Some(_) => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for v in vars.iter().filter(|v| !written.contains(&v.name)) {
        out.push_str(&format!("{}={}\n", v.name, v.value));
    }
    out
}

/// `proxy dotenv [PATH]`: writes the `all` group into a dotenv file (default `./.env`),
/// reporting the count on stderr.
pub async fn dotenv(bridge: &Api, path: Option<&Path>) -> CliResult<Out> {
    let path: PathBuf = path.map(Path::to_path_buf).unwrap_or_else(|| ".env".into());
    let env = fetch(bridge).await?;
    require_managed(&env)?;
    let vars = group_vars(&env, DEFAULT_GROUP)?;
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CliError::io(format!("cannot read {}", path.display()), &e)),
    };
    let merged = merge_dotenv(&existing, &vars);
    std::fs::write(&path, merged)
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), &e))?;
    let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    eprintln!("wrote {} variables to {}", vars.len(), shown.display());
    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    Ok(Out::doc(json!({
        "path": shown.display().to_string(),
        "written": vars.len(),
        "names": names,
    }))
    .with_message(""))
}

/// `proxy path`.
pub fn path() -> Out {
    Out::doc(json!(PROXY_ENV_PATH)).with_message(PROXY_ENV_PATH)
}

/// `proxy status`: what the bridge offers and how this shell's environment compares.
pub async fn status(bridge: &Api, color: bool) -> CliResult<Out> {
    let env = match fetch(bridge).await {
        Ok(e) => Some(e),
        Err(e) if e.code == "network_error" => {
            let doc = json!({
                "mode": null, "bridge_url": bridge.origin, "bridge_answers": false,
                "error": e.message, "groups": [], "variables": [], "credits": null,
            });
            let msg = labelled(&[
                (
                    "Bridge",
                    &json!(format!("{} (not answering)", bridge.origin)),
                ),
                ("Error", &doc["error"]),
            ]);
            return Ok(Out::doc(doc).with_message(msg));
        }
        Err(e) => return Err(e),
    };
    let env = env.unwrap_or_default();
    let credits = match bridge.get("/credits").await {
        Ok(c) => c,
        Err(e) if e.exit == exit::NOT_FOUND => Value::Null,
        Err(e) => return Err(e),
    };
    let groups = configured(&env);
    // `all` holds every variable, the login ones included.
    let vars = if groups.contains(&DEFAULT_GROUP) {
        group_vars(&env, DEFAULT_GROUP)?
    } else {
        Vec::new()
    };
    let login: Vec<&str> = env["login_variables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let rows: Vec<Value> = vars
        .iter()
        .map(|v| {
            let current = std::env::var(&v.name).ok();
            let state = match &current {
                Some(c) if *c == v.value => "set",
                Some(_) => "differs",
                None => "unset",
            };
            json!({
                "name": v.name, "value": v.value, "current": current,
                "matches": current.as_deref() == Some(v.value.as_str()),
                "state": state, "login": login.contains(&v.name.as_str()),
            })
        })
        .collect();
    let doc = json!({
        "mode": env["mode"], "bridge_url": bridge.origin, "bridge_answers": true,
        "proxy_env_path": env["proxy_env_path"], "groups": groups, "variables": rows,
        "credits": credits,
    });
    let available = if credits.is_null() {
        Value::Null
    } else {
        json!(format!(
            "{} of {} available",
            credits["remaining_micro"]
                .as_i64()
                .map(credits_text)
                .unwrap_or_default(),
            credits["total_micro"]
                .as_i64()
                .map(credits_text)
                .unwrap_or_default()
        ))
    };
    let groups_text = if groups.is_empty() {
        "none (managed AI is not offered here)".to_owned()
    } else {
        groups.join(", ")
    };
    let mut msg = labelled(&[
        ("Mode", &env["mode"]),
        ("Bridge", &json!(format!("{} (answers)", bridge.origin))),
        ("Groups", &json!(groups_text)),
        ("proxy.env", &env["proxy_env_path"]),
        ("Credits", &available),
    ]);
    if !rows.is_empty() {
        let table: Vec<Value> = rows
            .iter()
            .map(|r| {
                let shell = match r["state"].as_str() {
                    Some("set") => "yes",
                    Some("differs") => "no (differs)",
                    _ => "no (unset)",
                };
                json!({"name": r["name"], "shell": shell,
                       "where": if r["login"] == true { "login shells" } else { "rig proxy on" }})
            })
            .collect();
        let t = Printer {
            color,
            ..Printer::plain(Format::Human)
        }
        .render(&Out::list(
            table,
            vec![
                ("VARIABLE", "name"),
                ("IN THIS SHELL", "shell"),
                ("EXPORTED BY", "where"),
            ],
        ))?;
        msg.push_str(&format!("\n\n{t}"));
    }
    Ok(Out::doc(doc)
        .with_view(
            rows.clone(),
            vec![("VARIABLE", "name"), ("STATE", "state"), ("VALUE", "value")],
        )
        .with_message(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, value: &str) -> Var {
        Var {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn dotenv_replaces_names_and_keeps_the_rest() {
        let existing = "# mine\nOPENAI_API_KEY=sk-old\nDEBUG=1\nexport OPENAI_BASE_URL = x\n\
                        OPENAI_API_KEY=dup\n";
        let vars = [
            v("OPENAI_BASE_URL", "http://b/v1"),
            v("OPENAI_API_KEY", "k"),
            v("NEW", "n"),
        ];
        assert_eq!(
            merge_dotenv(existing, &vars),
            "# mine\nOPENAI_API_KEY=k\nDEBUG=1\nOPENAI_BASE_URL=http://b/v1\nNEW=n\n"
        );
        assert_eq!(
            merge_dotenv("", &vars[..1]),
            "OPENAI_BASE_URL=http://b/v1\n"
        );
        // Idempotent.
        let once = merge_dotenv(existing, &vars);
        assert_eq!(merge_dotenv(&once, &vars), once);
    }

    #[test]
    fn assignments_are_recognised() {
        assert_eq!(assigned_name("A=1"), Some("A"));
        assert_eq!(assigned_name("  export  B_2 =x"), Some("B_2"));
        assert_eq!(assigned_name("# A=1"), None);
        assert_eq!(assigned_name("1A=1"), None);
        assert_eq!(assigned_name("no assignment"), None);
    }

    #[test]
    fn groups_and_modes() {
        let env = json!({"mode": "managed", "groups": {
            "openai": [{"name": "OPENAI_BASE_URL", "value": "u"}], "all": []}});
        assert_eq!(configured(&env), ["openai", "all"]);
        assert_eq!(
            group_vars(&env, "openai").expect("group"),
            [v("OPENAI_BASE_URL", "u")]
        );
        let e = group_vars(&env, "anthropic").expect_err("not configured");
        assert!(e.message.contains("openai, all"), "{}", e.message);
        let e = group_vars(&json!({"groups": {}}), "all").expect_err("nothing");
        assert!(e.message.contains("not offered"), "{}", e.message);
        assert!(require_managed(&env).is_ok());
        let e = require_managed(&json!({"mode": "byok"})).expect_err("byok");
        assert_eq!(
            (e.message.as_str(), e.exit),
            ("managed AI is off for this workspace (mode: byok)", 1)
        );
    }
}
