//! Operator-configurable settings of the control plane. Every field has the spec's default, and
//! the struct deserializes from the `rigboxd` TOML file so any value can be changed there.

use rigbox_types::api::{Limits, Template};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings of the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Apps at `<app>.<base-domain>`, regional SSH at `<region>.<base-domain>`.
    pub base_domain: String,
    /// Origin users reach the console and API at (`verification_url` of device login).
    pub public_url: String,
    /// Self-service signup (`POST /auth/signup`).
    pub signup_enabled: bool,
    /// Plan of new accounts.
    pub default_plan: String,
    /// Plans by name; `free` and `pro` ship by default.
    pub plans: BTreeMap<String, Limits>,
    /// API keys per user (`max_api_keys`).
    pub max_api_keys: i64,
    pub rate_limits: RateLimits,
    pub argon2: Argon2Params,
    /// Seconds a start may wait for the guest's ready report before `boot_timeout`.
    pub boot_timeout_secs: u64,
    /// Regions offered; the first is the default region.
    pub regions: Vec<String>,
    /// Deployable templates (their numbers are defaults and floors).
    pub templates: Vec<Template>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// SSH port users connect to (published in each workspace's `ssh` block).
    pub ssh_port: u16,
    /// `SHA256:` fingerprints of the gateway host keys (published by ssh-info).
    pub ssh_host_key_fingerprints: Vec<String>,
    /// OpenSSH public key lines the SSH gateway authenticates to VMs with (written into every
    /// guest's `/etc/rigbox/ssh/gateway_authorized_keys`).
    pub gateway_authorized_keys: Vec<String>,
    /// Console session cookie gets `Secure` (off only for plain-HTTP local runs).
    pub secure_cookies: bool,
    /// App names refused besides the built-in ones and the region names.
    pub reserved_app_names: Vec<String>,
    /// Scheme of app URLs: `https`, or `http` when TLS is off.
    pub apps_scheme: String,
    /// Origin suffix of app URLs: `<scheme>://<app>.<base-domain><apps_port_suffix>`, e.g.
    /// `:8443` when the edge is not on the scheme's default port.
    pub apps_port_suffix: String,
    /// Which managed AI upstreams the platform's proxy offers (what `/rig/v1/proxy/env` and the
    /// guest's environment advertise). Set by `rigboxd` from its `[ai]` section, so it is not a
    /// key of the control-plane configuration itself.
    #[serde(skip)]
    pub managed_ai: ManagedAi,
    /// The operator's master key, which seals BYOK provider keys at rest
    /// ([`crate::sealing`]). Set by `rigboxd` (from its `master_key` setting or the key file
    /// in the data dir), so it is not a key of the control-plane configuration itself; without
    /// it a BYOK key cannot be stored (500) nor delivered.
    #[serde(skip)]
    pub master_key: Option<crate::sealing::MasterKey>,
}

/// The managed AI proxy as the control plane advertises it to workspaces (bridge-and-ai.md §5,
/// §10). All false by default: no AI variables are exported and no proxy groups offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManagedAi {
    /// `ai.enabled`: the proxy serves requests at all.
    pub enabled: bool,
    /// The OpenRouter-compatible upstream is configured (`/v1/chat/completions`, …).
    pub openrouter: bool,
    /// The Anthropic-native upstream is configured (`/v1/messages`).
    pub anthropic: bool,
    /// The Brave Search upstream is configured (`/brave/…`).
    pub brave: bool,
}

/// Requests per minute per class (limits-and-accounts.md §6).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub auth: u32,
    pub workspaces: u32,
    pub apps: u32,
    /// Failed logins per email within `login_lockout_secs` before 429.
    pub login_failures: u32,
    pub login_lockout_secs: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            auth: 120,
            workspaces: 180,
            apps: 240,
            login_failures: 10,
            login_lockout_secs: 900,
        }
    }
}

/// argon2id cost.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The `base` and `dev` templates of workspaces.md §4.
pub fn default_templates() -> Vec<Template> {
    let base_pkgs = [
        "openssh-server",
        "sudo",
        "ca-certificates",
        "python3",
        "python3-venv",
        "python3-pip",
        "git",
        "curl",
        "jq",
        "vim",
        "tmux",
        "nodejs",
        "npm",
    ];
    let dev_extra = [
        "build-essential",
        "cmake",
        "gdb",
        "strace",
        "postgresql-client",
    ];
    vec![
        Template {
            id: "base".into(),
            name: "Base".into(),
            description: "Debian 12 with SSH, Python, Node.js, git and the usual tools".into(),
            image: "base".into(),
            ram_mb: 512,
            vcpu_count: 1,
            disk_size_mb: 3072,
            packages: base_pkgs.iter().map(|s| s.to_string()).collect(),
        },
        Template {
            id: "dev".into(),
            name: "Development".into(),
            description: "Base plus compilers, cmake, gdb, strace and the PostgreSQL client".into(),
            image: "dev".into(),
            ram_mb: 1024,
            vcpu_count: 1,
            disk_size_mb: 4096,
            packages: base_pkgs
                .iter()
                .chain(dev_extra.iter())
                .map(|s| s.to_string())
                .collect(),
        },
    ]
}

impl Default for ControlConfig {
    fn default() -> Self {
        let mut plans = BTreeMap::new();
        plans.insert("free".to_owned(), Limits::FREE);
        plans.insert("pro".to_owned(), Limits::PRO);
        Self {
            base_domain: "rigbox.localhost".into(),
            public_url: "http://rigbox.localhost:8080".into(),
            signup_enabled: false,
            default_plan: "free".into(),
            plans,
            max_api_keys: 50,
            rate_limits: RateLimits::default(),
            argon2: Argon2Params::default(),
            boot_timeout_secs: 120,
            regions: vec!["local".into()],
            templates: default_templates(),
            max_body_bytes: 1024 * 1024,
            ssh_port: 2222,
            ssh_host_key_fingerprints: Vec::new(),
            reserved_app_names: Vec::new(),
            apps_scheme: "https".into(),
            apps_port_suffix: String::new(),
            gateway_authorized_keys: Vec::new(),
            secure_cookies: true,
            managed_ai: ManagedAi::default(),
            master_key: None,
        }
    }
}

impl ControlConfig {
    /// The operator's default region.
    pub fn default_region(&self) -> &str {
        self.regions.first().map(String::as_str).unwrap_or("local")
    }

    /// Checks cross-field consistency at startup.
    pub fn validate(&self) -> Result<(), String> {
        if !self.plans.contains_key(&self.default_plan) {
            return Err(format!(
                "default_plan {:?} is not a configured plan",
                self.default_plan
            ));
        }
        if self.regions.is_empty() {
            return Err("at least one region is required".into());
        }
        for r in &self.regions {
            if !rigbox_types::names::is_region_name(r) {
                return Err(format!(
                    "region name {r:?} must be 2-32 characters of [a-z0-9-]"
                ));
            }
        }
        Ok(())
    }
}
