//! `rigboxd`: one binary for every role. This library holds the wiring so tests can start the
//! whole platform in-process; `main.rs` only parses the command line.
//!
//! With `--role all` one process runs the control plane (store, API, console), and one compute
//! node whose reconcile loop talks to the control plane in-process.

pub mod check;
pub mod config;
pub mod edge;
pub mod gateway;

use anyhow::Context;
use config::{Config, Role, TlsMode, VmmKind};
use rigbox_control::app::lifecycle::LocalLink;
use rigbox_control::config::ManagedAi;
use rigbox_control::{App, Store};
use rigbox_node::bridge::BridgeState;
use rigbox_node::guest::GuestChannel;
use rigbox_node::net::{Net, BRIDGE_IP, BRIDGE_PORT};
use rigbox_node::qemu::{QemuConfig, QemuVmm};
use rigbox_node::{Node, NodeConfig, SimVmm, Vmm};
use rigbox_types::node::{ControlLink, NodeHandle};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Version and build info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Creates a directory (and parents) with mode 0700.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Opens the control-plane store in the data dir.
pub async fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    use std::os::unix::fs::PermissionsExt;
    private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let db = data_dir.join("rigbox.db");
    let store = Store::open_sqlite(&db)
        .await
        .with_context(|| format!("cannot open store {}", db.display()))?;
    let _ = std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600));
    Ok(store)
}

/// The SSH gateway's keys, generated on first start and kept in `<data-dir>/ssh/` so they are
/// stable across restarts.
pub struct GatewayKeys {
    /// What clients see; its fingerprint is published by ssh-info.
    pub host: rigbox_ssh::PrivateKey,
    /// What the gateway signs in to VMs with; its public line goes into every guest's
    /// `gateway_authorized_keys`.
    pub client: rigbox_ssh::PrivateKey,
}

impl GatewayKeys {
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("ssh");
        private_dir(&dir)?;
        let load = |name: &str, comment: &str| -> anyhow::Result<rigbox_ssh::PrivateKey> {
            let path = dir.join(name);
            if !path.exists() {
                generate_key(&path, comment)?;
            }
            rigbox_ssh::load_key(&path).map_err(anyhow::Error::msg)
        };
        Ok(Self {
            host: load("gateway_host_ed25519", "rigbox-gateway-host")?,
            client: load("gateway_client_ed25519", "rigbox-gateway")?,
        })
    }

    /// The host key's `SHA256:` fingerprint.
    pub fn host_fingerprint(&self) -> String {
        self.host
            .public_key()
            .fingerprint(rigbox_ssh::HashAlg::Sha256)
            .to_string()
    }

    /// The client key's public OpenSSH line.
    pub fn client_public_line(&self) -> anyhow::Result<String> {
        self.client
            .public_key()
            .to_openssh()
            .context("cannot encode the gateway client key")
    }
}

/// Writes a new ed25519 key in OpenSSH format, readable by its owner only.
fn generate_key(path: &Path, comment: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .context("cannot generate an SSH key")?;
    key.set_comment(comment);
    key.write_openssh_file(path, ssh_key::LineEnding::LF)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The file in the data dir holding the generated master key (hex, mode 0600).
pub const MASTER_KEY_FILE: &str = "master.key";

/// The master key that seals BYOK provider keys: the configured one, else the one generated
/// into `<data-dir>/master.key` on the first start (32 random bytes, readable by its owner
/// only). A configured key wins over the file, which is then left alone.
pub fn load_or_create_master_key(
    cfg: &Config,
    data_dir: &Path,
) -> anyhow::Result<rigbox_control::sealing::MasterKey> {
    use rigbox_control::sealing::MasterKey;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(k) = &cfg.master_key {
        return Ok(k.clone());
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    if !path.exists() {
        let key = MasterKey::generate();
        // `create_new`: two starts racing cannot both write one.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(format!("{}\n", key.to_hex()).as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated the master key");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the master key {}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    MasterKey::from_hex(&text).with_context(|| format!("invalid master key in {}", path.display()))
}

/// The accelerator `--accel` resolves to on this host.
pub fn resolve_accel(a: config::Accel) -> rigbox_node::qemu::Accel {
    match a {
        config::Accel::Kvm => rigbox_node::qemu::Accel::Kvm,
        config::Accel::Tcg => rigbox_node::qemu::Accel::Tcg,
        config::Accel::Auto if check::kvm_usable() => rigbox_node::qemu::Accel::Kvm,
        config::Accel::Auto => rigbox_node::qemu::Accel::Tcg,
    }
}

/// The QEMU driver's settings: the kernel and images from the config, else the artefacts
/// `rigboxd image build` made for this version.
pub fn qemu_config(cfg: &Config, data_dir: &Path) -> anyhow::Result<QemuConfig> {
    anyhow::ensure!(
        cfg.vm_outbound == config::Outbound::Off,
        "--vm-outbound nat is not available in this release; VMs have no outbound access"
    );
    let mut images = cfg.node.images.clone();
    let mut kernel = cfg.node.kernel.clone();
    for template in ["base", "dev"] {
        if images.contains_key(template) && kernel.is_some() {
            continue;
        }
        if let Some(a) = image_artefacts(template) {
            images.entry(template.to_owned()).or_insert(a.image);
            kernel.get_or_insert(a.kernel);
        }
    }
    let kernel = kernel
        .ok_or_else(|| anyhow::anyhow!("no guest kernel: run `rigboxd image build base` first"))?;
    Ok(QemuConfig {
        state_dir: data_dir.join("vms"),
        kernel,
        images,
        accel: resolve_accel(cfg.accel),
        qemu_bin: cfg.node.qemu_bin.clone(),
        tb_size_mb: cfg.node.tb_size_mb,
        dns: cfg.node.vm_dns_servers.clone(),
    })
}

/// The artefacts of `template` built for this version, if they exist.
pub fn image_artefacts(template: &str) -> Option<rigbox_node::image::Artefacts> {
    let rig = rigbox_node::image::rig_binary().ok()?;
    rigbox_node::image::locate(template, &rig)
}

/// The control-plane configuration with the top-level flags applied.
pub fn control_config(cfg: &Config, public_url: &str) -> rigbox_control::ControlConfig {
    let mut c = cfg.control.clone();
    c.base_domain = cfg.base_domain.clone();
    c.public_url = public_url.to_owned();
    c.signup_enabled |= cfg.signup_enabled;
    c.ssh_port = cfg.ssh_port;
    if !c.regions.contains(&cfg.region) {
        c.regions.insert(0, cfg.region.clone());
    }
    c.secure_cookies = cfg.tls != TlsMode::Off && c.secure_cookies;
    c
}

/// The HTTPS side of the edge, when TLS is on.
struct Https {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// Where the web (console, API, apps) is served and how its URLs look.
struct Web {
    https: Option<Https>,
    ca_cert: Option<PathBuf>,
    /// `https`, or `http` with `--tls off`.
    scheme: &'static str,
    /// `:<port>` unless the scheme's default port.
    port_suffix: String,
    /// `<scheme>://<base-domain><port_suffix>`.
    console_origin: String,
}

impl Web {
    async fn start(cfg: &Config, data_dir: &Path, http_addr: SocketAddr) -> anyhow::Result<Self> {
        let suffix = |port: u16, default: u16| {
            if port == default {
                String::new()
            } else {
                format!(":{port}")
            }
        };
        if cfg.tls == TlsMode::Off {
            let port_suffix = suffix(http_addr.port(), 80);
            return Ok(Self {
                https: None,
                ca_cert: None,
                scheme: "http",
                console_origin: format!("http://{}{port_suffix}", cfg.base_domain),
                port_suffix,
            });
        }
        let (cert, ca_cert) = match cfg.tls {
            TlsMode::Files => {
                let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) else {
                    anyhow::bail!("--tls files needs --tls-cert and --tls-key (PEM files)");
                };
                (rigbox_edge::tls::files(c, k)?, None)
            }
            _ => {
                let ca = rigbox_edge::tls::LocalCa::load_or_create(
                    &data_dir.join("tls"),
                    &cfg.base_domain,
                )
                .context("cannot set up the local CA")?;
                (ca.leaf, Some(ca.ca_cert))
            }
        };
        let listener = TcpListener::bind((cfg.listen.as_str(), cfg.https_port))
            .await
            .with_context(|| {
                format!("cannot listen on {}:{} (HTTPS)", cfg.listen, cfg.https_port)
            })?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(rigbox_edge::tls::server_config(Arc::new(
            rigbox_edge::tls::Single(cert),
        )));
        let port_suffix = suffix(addr.port(), 443);
        Ok(Self {
            https: Some(Https {
                listener,
                addr,
                acceptor,
            }),
            ca_cert,
            scheme: "https",
            console_origin: format!("https://{}{port_suffix}", cfg.base_domain),
            port_suffix,
        })
    }
}

/// A running platform.
pub struct Platform {
    pub app: Arc<App>,
    pub node: Arc<Node>,
    pub sim: Option<Arc<SimVmm>>,
    /// The node network (QEMU driver only).
    pub net: Option<Arc<Net>>,
    /// Node ingress: how the edge and the SSH gateway open streams to VM ports (QEMU only).
    pub ingress: Option<rigbox_node::ingress::Ingress>,
    pub http_addr: SocketAddr,
    /// Where the HTTPS edge listens (None with `--tls off`).
    pub https_addr: Option<SocketAddr>,
    /// The local CA users trust (`--tls local-ca`).
    pub ca_cert: Option<PathBuf>,
    /// Where the SSH gateway listens.
    pub ssh_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub vmm: VmmKind,
    link: Arc<dyn ControlLink>,
    bridge: Option<rigbox_node::bridge::BridgeThreads>,
    /// Where the bridge service listens (`172.16.0.1:9090` in the node namespace, or loopback
    /// with `[sim] bridge_port`).
    pub bridge_addr: Option<SocketAddr>,
    /// The AI proxy behind the bridge.
    pub ai: Arc<rigbox_ai::AiProxy>,
    ai_task: tokio::task::JoinHandle<()>,
    ssh: tokio::task::JoinHandle<()>,
    https: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    node_task: tokio::task::JoinHandle<()>,
    background: tokio::task::JoinHandle<()>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Starts every role of `cfg` and returns once they listen.
    pub async fn start(cfg: &Config) -> anyhow::Result<Self> {
        if cfg.role != Role::All {
            anyhow::bail!("only --role all is available in this release (split roles come with multi-node support)");
        }
        let data_dir = cfg.data_dir();
        let store = open_store(&data_dir).await?;
        let listener = TcpListener::bind((cfg.listen.as_str(), cfg.http_port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", cfg.listen, cfg.http_port))?;
        let http_addr = listener.local_addr()?;
        let ssh_listener = TcpListener::bind((cfg.listen.as_str(), cfg.ssh_port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (SSH gateway)",
                    cfg.listen, cfg.ssh_port
                )
            })?;
        let ssh_addr = ssh_listener.local_addr()?;
        let web = Web::start(cfg, &data_dir, http_addr).await?;
        let public_url = format!("http://{http_addr}");
        let mut control = control_config(cfg, &public_url);
        control.apps_scheme = web.scheme.to_owned();
        control.apps_port_suffix = web.port_suffix.clone();
        let keys = GatewayKeys::load_or_create(&data_dir)?;
        // With `--ssh-port 0` the published port is the one the system chose.
        control.ssh_port = ssh_addr.port();
        control.ssh_host_key_fingerprints = vec![keys.host_fingerprint()];
        control.gateway_authorized_keys = vec![keys.client_public_line()?];
        control.master_key = Some(load_or_create_master_key(cfg, &data_dir)?);
        control.managed_ai = ManagedAi {
            enabled: cfg.ai.enabled,
            openrouter: cfg.ai.openrouter().is_some(),
            anthropic: cfg.ai.anthropic.is_some(),
            brave: cfg.ai.brave.is_some(),
        };
        control
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;

        let mut node_cfg = NodeConfig::for_host(&cfg.node.node_id, &cfg.region);
        node_cfg.max_running_vms = cfg.node.max_running_vms;
        if let Some(m) = cfg.node.memory_mb {
            node_cfg.memory_mb = m;
        }
        node_cfg.stop_grace = Duration::from_secs(cfg.node.stop_grace_secs);
        let guest = Arc::new(GuestChannel::default());
        let (vmm, sim, net): (Arc<dyn Vmm>, _, _) = match cfg.vmm {
            VmmKind::Sim => {
                let sim = Arc::new(SimVmm::new(cfg.sim.clone(), Some(data_dir.join("sim")))?);
                (sim.clone(), Some(sim), None)
            }
            VmmKind::Qemu => {
                let net = Arc::new(
                    Net::setup(&cfg.node.netns())
                        .await
                        .context("cannot set up the node network")?,
                );
                let qemu = QemuVmm::new(qemu_config(cfg, &data_dir)?, net.clone(), guest.clone())
                    .await
                    .context("cannot start the QEMU driver")?;
                (qemu, None, Some(net))
            }
        };
        let node = Node::new(node_cfg, vmm).await;

        let app = App::new(
            store,
            control,
            Arc::new(rigbox_control::app::SystemClock),
            vec![node.clone() as Arc<dyn NodeHandle>],
        );
        let link: Arc<dyn ControlLink> = Arc::new(LocalLink(app.clone()));
        let node_task = tokio::spawn(node.clone().run(link.clone()));
        let background = app.spawn_background();

        // The AI proxy, charging the control plane's wallet.
        let ai =
            rigbox_ai::AiProxy::new(cfg.ai.clone(), Arc::new(app.wallet()), &cfg.node.node_id)?;
        let ai_task = ai.spawn_background();

        // The bridge service: inside the node namespace, where VMs reach it (QEMU), or on
        // loopback for simulated VMs when asked.
        let bridge_listener = match (&net, cfg.sim.bridge_port) {
            (Some(net), _) => Some((
                net.listen(SocketAddrV4::new(BRIDGE_IP, BRIDGE_PORT))
                    .context("cannot listen on the bridge (172.16.0.1:9090)")?,
                false,
            )),
            (None, Some(port)) => Some((
                TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                    .await
                    .with_context(|| format!("cannot listen on 127.0.0.1:{port} (sim bridge)"))?,
                true,
            )),
            (None, None) => None,
        };
        let bridge_addr = match &bridge_listener {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let bridge = bridge_listener.map(|(listener, loopback)| {
            let leases = node.clone();
            let state = BridgeState {
                node_id: cfg.node.node_id.clone(),
                leases: Arc::new(move |ip| {
                    let ip = if loopback { sim_lease_of(ip)? } else { ip };
                    leases.workspace_at(ip)
                }),
                guest: guest.clone(),
                link: link.clone(),
                direct: Some(rigbox_node::bridge::Direct {
                    claims: rigbox_ai::AiProxy::claims,
                    call: {
                        let ai = ai.clone();
                        Arc::new(move |caller, req| Box::pin(ai.clone().serve(caller, req)))
                    },
                }),
                upstream: Some(rigbox_control::http::rig_v1::router(app.clone())),
            };
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            rigbox_node::bridge::serve_threads(listener.into_std()?, state, threads)
        });
        let bridge = bridge
            .transpose()
            .context("cannot start the bridge's threads")?;

        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        let ingress = net
            .clone()
            .map(|n| rigbox_node::ingress::Ingress::new(node.clone(), n));
        // The edge: every HTTP(S) request, for the console and API or for an app.
        let mut edge_cfg = rigbox_edge::EdgeConfig::new(&cfg.base_domain, &web.console_origin);
        edge_cfg.https_port = web.https.as_ref().map(|h| h.addr.port());
        let edge = rigbox_edge::Edge::new(
            edge_cfg,
            Arc::new(edge::PlatformEdge {
                app: app.clone(),
                ingress: ingress.clone(),
                sim_upstream: cfg.sim.app_upstream,
            }),
            edge::platform_service(rigbox_control::http::router(app.clone())),
        );
        let server = tokio::spawn(edge.clone().serve(listener, None, shutdown_tx.subscribe()));
        let (https_addr, https) = match web.https {
            Some(h) => (
                Some(h.addr),
                Some(tokio::spawn(edge.serve(
                    h.listener,
                    Some(h.acceptor),
                    shutdown_tx.subscribe(),
                ))),
            ),
            None => (None, None),
        };
        let gateway = rigbox_ssh::Gateway::new(
            rigbox_ssh::GatewayConfig::new(keys.host, keys.client),
            Arc::new(gateway::PlatformDirectory {
                app: app.clone(),
                ingress: ingress.clone(),
            }),
        );
        let ssh_shutdown = shutdown_tx.subscribe();
        let ssh = tokio::spawn(async move { gateway.serve(ssh_listener, ssh_shutdown).await });
        Ok(Self {
            app,
            node,
            sim,
            ingress,
            net,
            http_addr,
            https_addr,
            ca_cert: web.ca_cert,
            ssh_addr,
            data_dir,
            vmm: cfg.vmm,
            bridge,
            bridge_addr,
            ai,
            ai_task,
            ssh,
            https,
            link,
            server,
            node_task,
            background,
            shutdown_tx,
        })
    }

    /// The API origin, e.g. `http://127.0.0.1:8080`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops accepting work and ends every task. Running VMs keep running unless `stop_vms`.
    pub async fn shutdown(self, stop_vms: bool) {
        let _ = self.shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.ssh.abort();
        if let Some(h) = &self.https {
            h.abort();
        }
        self.node.stop();
        self.node_task.abort();
        if let Some(b) = self.bridge {
            b.stop().await;
        }
        self.ai_task.abort();
        if stop_vms {
            self.node.stop_all_vms(&self.link).await;
        }
        self.app.shutdown();
        self.background.abort();
        // Settlements already queued (their answers may have gone out) are committed before
        // the store closes.
        if let Err(e) = self.app.wallet_synced().await {
            tracing::error!(error = %e, "wallet: queued settlements not committed at shutdown");
        }
        self.app.store.close().await;
    }
}

/// With simulated VMs the bridge listens on loopback: a caller from `127.16.0.N` stands for the
/// VM holding `172.16.0.N` (all of 127/8 is loopback on Linux, so a client binds that source).
fn sim_lease_of(ip: std::net::Ipv4Addr) -> Option<std::net::Ipv4Addr> {
    match ip.octets() {
        [127, 16, 0, n] => Some(std::net::Ipv4Addr::new(172, 16, 0, n)),
        _ => None,
    }
}

/// `ready.json`, written when every role listens.
pub fn ready_document(cfg: &Config, p: &Platform) -> serde_json::Value {
    serde_json::json!({
        "pid": std::process::id(),
        "api_url": p.api_url(),
        "https_url": p.https_addr.map(|a| format!("https://{a}")),
        "ssh": {"host": p.ssh_addr.ip().to_string(), "port": p.ssh_addr.port()},
        "base_domain": cfg.base_domain,
        "ca_cert": p.ca_cert.as_ref().map(|c| c.display().to_string()),
        "vmm": match p.vmm { VmmKind::Sim => "sim", VmmKind::Qemu => "qemu" },
        "accel": match p.vmm {
            VmmKind::Sim => None,
            VmmKind::Qemu => Some(resolve_accel(cfg.accel).as_str()),
        },
        "netns": p.net.as_ref().map(|n| n.name().to_owned()),
        "bridge_url": p.bridge_addr.map(|a| format!("http://{a}")),
        "version": VERSION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_is_generated_once_private_and_a_configured_one_wins() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let cfg = Config::default();
        let first = load_or_create_master_key(&cfg, dir.path()).expect("generated");
        let path = dir.path().join(MASTER_KEY_FILE);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read").trim(),
            first.to_hex()
        );
        // Every later start reads the same key.
        assert_eq!(
            load_or_create_master_key(&cfg, dir.path()).expect("read"),
            first
        );
        // A configured key wins and leaves the file alone.
        let configured = rigbox_control::sealing::MasterKey::generate();
        let cfg = Config {
            master_key: Some(configured.clone()),
            ..Config::default()
        };
        assert_eq!(
            load_or_create_master_key(&cfg, dir.path()).expect("configured"),
            configured
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read").trim(),
            first.to_hex()
        );
        // A damaged file is an error, not a new key (that would orphan every sealed key).
        std::fs::write(&path, "not a key").expect("write");
        assert!(load_or_create_master_key(&Config::default(), dir.path()).is_err());
        // In the TOML file: 64 hex digits.
        let toml_cfg: Config =
            toml::from_str(&format!("master_key = \"{}\"", first.to_hex())).expect("toml");
        assert_eq!(toml_cfg.master_key, Some(first));
        assert!(toml::from_str::<Config>("master_key = \"abc\"").is_err());
    }
}
