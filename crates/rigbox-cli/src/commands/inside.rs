//! Workspace mode (inside a VM): `whoami`, `status` and `workspace get` ask the node bridge
//! (`<bridge_url>/rig/v1`, bridge-and-ai.md) about the current workspace; the network position
//! is the identity, so no credential is sent.

use super::account::{credits_line, labelled};
use crate::client::Api;
use crate::error::{exit, CliResult};
use crate::output::{cell, Out};
use serde_json::Value;

/// `whoami` in workspace mode: `GET /rig/v1/whoami`.
pub async fn whoami(bridge: &Api) -> CliResult<Out> {
    let w = bridge.get("/whoami").await?;
    let msg = labelled(&[
        ("Auth method", &w["auth_method"]),
        ("Workspace", &w["workspace_name"]),
        ("Workspace ID", &w["workspace_id"]),
        ("Owner", &w["owner_email"]),
        ("Region", &w["region"]),
    ]);
    Ok(Out::doc(w).with_message(msg))
}

/// The labelled block of the current workspace.
fn describe(ws: &Value) -> String {
    let mut s = labelled(&[
        ("Workspace", &ws["name"]),
        ("ID", &ws["id"]),
        ("Status", &ws["status"]),
        ("Template", &ws["template_id"]),
        ("Region", &ws["region"]),
        ("IP address", &ws["ip_address"]),
        ("RAM (MB)", &ws["ram_mb"]),
        ("vCPUs", &ws["vcpu_count"]),
        ("Disk (MB)", &ws["disk_size_mb"]),
        ("SSH", &ws["ssh"]["command"]),
    ]);
    if let Some(apps) = ws["apps"].as_array().filter(|a| !a.is_empty()) {
        s.push_str("\n\nApps:");
        for a in apps {
            s.push_str(&format!(
                "\n  {}  {}  {}",
                cell(&a["name"]),
                cell(&a["url"]),
                cell(&a["visibility"])
            ));
        }
    }
    s
}

/// `workspace get` in workspace mode: `GET /rig/v1/workspace`.
pub async fn workspace(bridge: &Api) -> CliResult<Out> {
    let ws = bridge.get("/workspace").await?;
    let msg = describe(&ws);
    Ok(Out::doc(ws).with_message(msg))
}

/// `status` in workspace mode: the current workspace, plus credits when the bridge offers them.
pub async fn status(bridge: &Api) -> CliResult<Out> {
    let mut ws = bridge.get("/workspace").await?;
    let mut msg = describe(&ws);
    match bridge.get("/credits").await {
        Ok(c) => {
            msg.push_str(&format!("\n\n{}", credits_line(&c)));
            ws["credits"] = c;
        }
        Err(e) if e.exit == exit::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    Ok(Out::doc(ws).with_message(msg))
}
