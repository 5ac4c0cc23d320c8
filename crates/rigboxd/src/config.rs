//! `rigboxd` settings: the TOML file (`--config`) with flags layered on top.

use rigbox_control::ControlConfig;
use rigbox_node::SimConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which VMM the node role uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    Qemu,
    Sim,
}

/// TLS mode of the HTTPS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    LocalCa,
    Files,
    Off,
}

/// QEMU accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// Roles of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    All,
    Control,
    Edge,
    Ssh,
    Node,
}

/// VM access to the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Outbound {
    Off,
    Nat,
}

/// Node-role settings of the file (`[node]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFileConfig {
    pub node_id: String,
    pub max_running_vms: i64,
    /// MiB of memory for VMs; default 80% of the host's.
    pub memory_mb: Option<i64>,
    pub stop_grace_secs: u64,
    /// The node's network namespace; default `rigbox-<node_id>`.
    pub netns: Option<String>,
    /// Resolvers handed to guests (`vm_dns_servers`); none by default (outbound is off).
    pub vm_dns_servers: Vec<std::net::Ipv4Addr>,
    /// QEMU binary.
    pub qemu_bin: PathBuf,
    /// TCG translation cache per VM in MiB (bounds QEMU's memory under TCG).
    pub tb_size_mb: u32,
    /// Guest kernel; default: the one `rigboxd image build` made for this version.
    pub kernel: Option<PathBuf>,
    /// Base image per template image name; default: the ones `rigboxd image build` made.
    pub images: std::collections::BTreeMap<String, PathBuf>,
}

impl NodeFileConfig {
    /// The node's network namespace name.
    pub fn netns(&self) -> String {
        self.netns
            .clone()
            .unwrap_or_else(|| format!("rigbox-{}", self.node_id))
    }
}

impl Default for NodeFileConfig {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            max_running_vms: 253,
            memory_mb: None,
            stop_grace_secs: 30,
            netns: None,
            vm_dns_servers: Vec::new(),
            qemu_bin: PathBuf::from("qemu-system-x86_64"),
            tb_size_mb: 128,
            kernel: None,
            images: std::collections::BTreeMap::new(),
        }
    }
}

/// The whole configuration of `rigboxd up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: Option<PathBuf>,
    pub role: Role,
    pub base_domain: String,
    pub listen: String,
    pub http_port: u16,
    pub https_port: u16,
    pub ssh_port: u16,
    pub tls: TlsMode,
    /// `--tls files`: PEM certificate chain (for the base domain and `*.<base-domain>`).
    pub tls_cert: Option<PathBuf>,
    /// `--tls files`: its PEM private key.
    pub tls_key: Option<PathBuf>,
    pub vmm: VmmKind,
    pub accel: Accel,
    pub vm_outbound: Outbound,
    pub region: String,
    pub stop_vms_on_exit: bool,
    pub signup_enabled: bool,
    /// Plans, rate limits, templates and the other control-plane settings.
    pub control: ControlConfig,
    pub node: NodeFileConfig,
    pub sim: SimConfig,
    /// The managed AI proxy: upstreams, keys, prices (`[ai]`).
    pub ai: rigbox_ai::AiConfig,
    /// The master key sealing BYOK provider keys at rest: 64 hex digits (32 bytes). Unset:
    /// generated once into `<data-dir>/master.key` (mode 0600) and read from there at every
    /// start. Losing it makes the stored provider keys unreadable (docs/operations.md).
    pub master_key: Option<rigbox_control::sealing::MasterKey>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: None,
            role: Role::All,
            base_domain: "rigbox.localhost".into(),
            listen: "127.0.0.1".into(),
            http_port: 8080,
            https_port: 8443,
            ssh_port: 2222,
            tls: TlsMode::LocalCa,
            tls_cert: None,
            tls_key: None,
            vmm: VmmKind::Qemu,
            accel: Accel::Auto,
            vm_outbound: Outbound::Off,
            region: "local".into(),
            stop_vms_on_exit: false,
            signup_enabled: false,
            control: ControlConfig::default(),
            node: NodeFileConfig::default(),
            sim: SimConfig::default(),
            ai: rigbox_ai::AiConfig::default(),
            master_key: None,
        }
    }
}

impl Config {
    /// Reads the TOML file: the given one, else `/etc/rigbox/rigboxd.toml` if it exists, else
    /// defaults.
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let default = std::path::Path::new("/etc/rigbox/rigboxd.toml");
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None if default.exists() => Some(default.to_path_buf()),
            None => None,
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", p.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", p.display()))
            }
            None => Ok(Self::default()),
        }
    }

    /// The data directory: setting, else `$RIGBOX_DATA_DIR`, else `~/.local/share/rigbox`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("RIGBOX_DATA_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".local/share/rigbox")
    }
}
