//! `app …`: the same commands on the user's machine (`/api/v1/apps`, with `-w` naming the
//! workspace) and inside a workspace (`/rig/v1/apps`, always the current workspace).

use super::account::labelled;
use crate::client::{urlencode, Api};
use crate::error::{CliError, CliResult};
use crate::output::{cell, Out};
use crate::prompt;
use reqwest::Method;
use serde_json::{json, Map, Value};

/// Where the command runs.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// On the user's machine, with the workspace `-w` names (if any).
    Local(Option<&'a str>),
    /// Inside a workspace: its own apps only.
    Workspace,
}

const COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("URL", "url"),
    ("PORT", "port"),
    ("VISIBILITY", "visibility"),
    ("STATUS", "status"),
    ("WORKSPACE", "workspace_id"),
];

/// Who may reach the app, from the mutually exclusive `--public/--private/--emails`.
#[derive(Debug, Default, Clone)]
pub struct Share {
    pub public: bool,
    pub private: bool,
    pub emails: Option<Vec<String>>,
}

impl Share {
    /// `{visibility, allowed_emails?}`, or None when no option was given.
    fn body(&self) -> CliResult<Option<Value>> {
        let given = [self.public, self.private, self.emails.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given > 1 {
            return Err(CliError::usage(
                "give only one of --public, --private, --emails",
            ));
        }
        Ok(if self.public {
            Some(json!({"visibility": "public"}))
        } else if self.private {
            Some(json!({"visibility": "private"}))
        } else {
            self.emails
                .as_ref()
                .map(|e| json!({"visibility": "privileged", "allowed_emails": e}))
        })
    }
}

fn app_path(app: &str) -> String {
    format!("/apps/{}", urlencode(app))
}

fn check_key(api: &Api, scope: Scope) -> CliResult<()> {
    match scope {
        Scope::Local(_) => api.require_key(),
        Scope::Workspace => Ok(()),
    }
}

/// The labelled block `get` and `new` print.
fn describe(a: &Value) -> String {
    let emails = a["allowed_emails"]
        .as_array()
        .map(|e| e.iter().map(cell).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    labelled(&[
        ("Name", &a["name"]),
        ("URL", &a["url"]),
        ("ID", &a["id"]),
        ("Workspace", &a["workspace_id"]),
        ("Port", &a["port"]),
        ("Protocol", &a["protocol"]),
        ("Visibility", &a["visibility"]),
        ("Allowed", &Value::from(emails)),
        ("Status", &a["status"]),
        ("Description", &a["description"]),
    ])
}

/// `app new`.
pub async fn new(
    api: &Api,
    scope: Scope<'_>,
    name: &str,
    port: Option<i64>,
    protocol: Option<&str>,
    share: &Share,
    description: Option<&str>,
) -> CliResult<Out> {
    check_key(api, scope)?;
    let mut body = Map::new();
    if let Scope::Local(ws) = scope {
        let ws = ws.ok_or_else(|| {
            CliError::usage("name the workspace with -w/--workspace (or run this inside it)")
        })?;
        body.insert("workspace_id".into(), ws.into());
    }
    body.insert("name".into(), name.into());
    if let Some(p) = port {
        body.insert("port".into(), p.into());
    }
    if let Some(p) = protocol {
        body.insert("protocol".into(), p.into());
    }
    if let Some(d) = description {
        body.insert("description".into(), d.into());
    }
    if let Some(Value::Object(v)) = share.body()? {
        body.extend(v);
    }
    let a = api.post("/apps", &Value::Object(body)).await?;
    let msg = format!(
        "{} → port {} ({})\n{}",
        cell(&a["url"]),
        cell(&a["port"]),
        cell(&a["visibility"]),
        if a["name"].as_str() != Some(name) {
            format!("The name became {}.", cell(&a["name"]))
        } else {
            String::new()
        }
    );
    Ok(Out::doc(a).with_message(msg.trim_end().to_owned()))
}

/// `app ls`.
pub async fn ls(api: &Api, scope: Scope<'_>) -> CliResult<Out> {
    check_key(api, scope)?;
    let path = match scope {
        Scope::Local(Some(ws)) => format!("/apps?workspace_id={}", urlencode(ws)),
        _ => "/apps".into(),
    };
    Ok(Out::list(api.list_all(&path).await?, COLUMNS.to_vec()))
}

/// `app get`.
pub async fn get(api: &Api, scope: Scope<'_>, app: &str) -> CliResult<Out> {
    check_key(api, scope)?;
    let a = api.get(&app_path(app)).await?;
    let m = describe(&a);
    Ok(Out::doc(a).with_message(m))
}

/// `app rm`.
pub async fn rm(api: &Api, scope: Scope<'_>, app: &str, yes: bool) -> CliResult<Out> {
    check_key(api, scope)?;
    let a = api.get(&app_path(app)).await?;
    let (name, id) = (cell(&a["name"]), cell(&a["id"]));
    prompt::confirm(format!("Delete app {name} ({})?", cell(&a["url"])), yes).await?;
    api.delete(&app_path(&id)).await?;
    Ok(Out::doc(json!({"deleted": id, "name": name})).with_message(format!("Deleted {name}")))
}

/// `app share`.
pub async fn share(api: &Api, scope: Scope<'_>, app: &str, share: &Share) -> CliResult<Out> {
    check_key(api, scope)?;
    let Some(body) = share.body()? else {
        return Err(CliError::usage(
            "give one of --public, --private, --emails a,b,…",
        ));
    };
    let a = api
        .call(
            Method::PUT,
            &format!("{}/visibility", app_path(app)),
            Some(&body),
        )
        .await?;
    let mut msg = format!("{} is {}", cell(&a["name"]), cell(&a["visibility"]));
    if a["visibility"] == "privileged" {
        msg.push_str(&format!(
            " (owner and {})",
            a["allowed_emails"]
                .as_array()
                .map(|e| e.iter().map(cell).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ));
    }
    Ok(Out::doc(a).with_message(msg))
}

/// The changes of `app update`.
#[derive(Debug, Default, Clone)]
pub struct Update {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub description: Option<String>,
    pub enable: bool,
    pub disable: bool,
}

/// `app update`.
pub async fn update(api: &Api, scope: Scope<'_>, app: &str, u: &Update) -> CliResult<Out> {
    check_key(api, scope)?;
    let mut body = Map::new();
    if let Some(n) = &u.name {
        body.insert("name".into(), n.as_str().into());
    }
    if let Some(p) = u.port {
        body.insert("port".into(), p.into());
    }
    if let Some(p) = &u.protocol {
        body.insert("protocol".into(), p.as_str().into());
    }
    if let Some(d) = &u.description {
        body.insert("description".into(), d.as_str().into());
    }
    match (u.enable, u.disable) {
        (true, true) => return Err(CliError::usage("give only one of --enable, --disable")),
        (true, false) => {
            body.insert("status".into(), "active".into());
        }
        (false, true) => {
            body.insert("status".into(), "inactive".into());
        }
        (false, false) => {}
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "give at least one of --name, --port, --protocol, --description, --enable, --disable",
        ));
    }
    let a = api
        .call(Method::PATCH, &app_path(app), Some(&Value::Object(body)))
        .await?;
    let msg = if u.name.is_some() {
        format!("Updated; the app is now at {}", cell(&a["url"]))
    } else {
        format!("Updated {}", cell(&a["name"]))
    };
    Ok(Out::doc(a).with_message(msg))
}

/// `app health` (exit 0 even when the app is not live).
pub async fn health(api: &Api, app: &str) -> CliResult<Out> {
    api.require_key()?;
    let h = api.get(&format!("{}/health", app_path(app))).await?;
    let live = if h["live"] == true { "yes" } else { "no" };
    let open = if h["port_open"] == true { "yes" } else { "no" };
    let latency = match h["latency_ms"].as_u64() {
        Some(ms) => Value::from(format!("{ms} ms")),
        None => Value::Null,
    };
    let msg = labelled(&[
        ("Live", &Value::from(live)),
        ("Port open", &Value::from(open)),
        ("HTTP status", &h["http_status"]),
        ("Latency", &latency),
        ("Workspace", &h["workspace_status"]),
        ("Checked", &h["checked_at"]),
    ]);
    Ok(Out::doc(h).with_message(msg))
}
