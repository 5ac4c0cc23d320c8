//! The guest agent's wire format (`/rig/v1/agent/*`, bridge-and-ai.md §4) and the
//! `/etc/rigbox/workspace.json` document (workspaces.md §7).
//!
//! The control plane builds an [`AgentConfig`] for a workspace, the node's bridge serves it to
//! the `rig agent` inside the VM by long poll, and the agent answers with an [`AgentReport`].

use serde::{Deserialize, Serialize};

/// Where a VM reaches the platform: the bridge service of its node.
pub const BRIDGE_URL: &str = "http://172.16.0.1:9090";

/// `/etc/rigbox/workspace.json`: non-secret metadata of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceMeta {
    pub schema_version: u32,
    pub workspace_id: String,
    pub name: String,
    pub owner_email: String,
    pub region: String,
    pub node_id: String,
    pub bridge_url: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// One environment variable as written to `/etc/rigbox/env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// One export of `~/.rigbox/proxy.env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEnvVar {
    pub name: String,
    pub value: String,
}

/// The body of `GET /rig/v1/agent/config`: everything the agent writes into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Bumped on every change of keys, env vars, AI mode or volumes.
    pub revision: i64,
    pub workspace: WorkspaceMeta,
    pub hostname: String,
    /// The account's OpenSSH public key lines (the managed block of `authorized_keys`).
    pub authorized_keys: Vec<String>,
    /// The SSH gateway's public key lines (`/etc/rigbox/ssh/gateway_authorized_keys`).
    pub gateway_authorized_keys: Vec<String>,
    /// Platform variables first, then the user's (a user variable of the same name wins).
    pub env: Vec<EnvVar>,
    pub proxy_env: Vec<ProxyEnvVar>,
    #[serde(default)]
    pub volumes: Vec<serde_json::Value>,
    #[serde(default)]
    pub requests: Vec<serde_json::Value>,
}

/// One key the agent found in the managed block of `authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedKey {
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
}

/// The body of `POST /rig/v1/agent/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// The config revision the agent has applied.
    pub revision: i64,
    /// `/proc/sys/kernel/random/boot_id` of the guest: a new value means a new boot.
    pub boot_id: String,
    /// True once the config is applied and sshd listens.
    pub ready: bool,
    #[serde(default)]
    pub authorized_keys: Vec<ReportedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<serde_json::Value>,
}

impl ReportedKey {
    /// The fingerprint, type and comment of one OpenSSH public key line; `None` when the line is
    /// not a public key.
    pub fn of_line(line: &str) -> Option<Self> {
        let key = ssh_key::PublicKey::from_openssh(line.trim()).ok()?;
        Some(Self {
            fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            key_type: key.algorithm().as_str().to_owned(),
            comment: key.comment().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_key_of_line() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjTo4T0N1y0WxVb2dM0cQWm3xZ5r2vR3n8m1i9pPq0A dev@laptop";
        let k = ReportedKey::of_line(line).expect("a valid key");
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.comment, "dev@laptop");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert!(ReportedKey::of_line("not a key").is_none());
    }
}

/// Who is calling the bridge: resolved by the node from the TCP source address of the request
/// and its active leases, never from anything the caller sent. Handed to the handlers of
/// `/rig/v1` as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeCaller {
    pub workspace_id: crate::WorkspaceId,
    pub node_id: String,
    pub ip: std::net::Ipv4Addr,
}

/// `GET /rig/v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// Always `workspace_ip`: the network position is the identity.
    pub auth_method: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub owner_email: String,
    pub region: String,
    pub node_id: String,
    pub ip_address: String,
}

/// `GET /rig/v1/workspace`: the calling workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeWorkspace {
    pub id: String,
    pub name: String,
    pub status: crate::api::WorkspaceStatus,
    pub template_id: String,
    pub region: String,
    pub node_id: String,
    pub ip_address: Option<String>,
    pub ram_mb: i64,
    pub vcpu_count: i64,
    pub disk_size_mb: i64,
    pub ssh: crate::api::SshInfo,
    /// `managed` (the platform's AI proxy) or `byok`.
    pub ai_mode: String,
    /// This workspace's apps.
    pub apps: Vec<crate::api::App>,
    pub created_at: String,
    pub started_at: Option<String>,
}
