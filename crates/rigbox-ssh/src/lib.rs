//! The Rigbox SSH gateway (workspaces.md §8).
//!
//! Users connect with `ssh <name>-<id-suffix>@<region-host>`. The gateway
//!
//! 1. authenticates the offered public key against the workspace owner's *current* account keys
//!    (asked of the control plane at every connection, through [`Directory`]); every failure is
//!    the same `Permission denied (publickey)`, and failures are rate-limited per source address;
//! 2. opens its own SSH connection to the VM's sshd (port 22, through the node ingress) as
//!    `developer` with the platform's gateway key, which the guest agent trusts via
//!    `/etc/rigbox/ssh/gateway_authorized_keys`;
//! 3. relays channels one to one: sessions (pty, shell, exec, subsystems such as sftp, env,
//!    window changes, signals, exit status) and `direct-tcpip` (`ssh -L`/`-D`). Remote
//!    forwarding, agent forwarding and X11 are refused, with a line on stderr saying so.
//!
//! A workspace that is not running gets its session accepted, a one-line reason on stderr and
//! exit status 1. Clients only ever see the gateway's host key.

mod limit;
mod relay;
mod session;

pub use limit::FailureLimit;
pub use russh::keys::{HashAlg, PrivateKey};

use rigbox_types::gateway::SshRoute;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// What the gateway needs from the rest of the platform.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The route for `user` when the key with this `SHA256:` fingerprint is one of the
    /// workspace owner's current keys; `Ok(None)` for every kind of refusal.
    async fn route(&self, user: &str, fingerprint: &str) -> Result<Option<SshRoute>, String>;

    /// A TCP stream to port 22 of the workspace's VM.
    async fn connect(&self, route: &SshRoute) -> std::io::Result<TcpStream>;
}

/// Gateway settings.
pub struct GatewayConfig {
    /// The gateway's host key: what clients see and pin.
    pub host_key: PrivateKey,
    /// The key the gateway signs in to VMs with.
    pub client_key: PrivateKey,
    /// The account the gateway logs in to in every VM.
    pub upstream_user: String,
    /// Keepalive interval towards clients and VMs (the spec says 30 s).
    pub keepalive: Duration,
    /// How many failed authentications a source address may have.
    pub auth_failures: FailureLimit,
}

impl GatewayConfig {
    /// The spec's settings with these keys.
    pub fn new(host_key: PrivateKey, client_key: PrivateKey) -> Self {
        Self {
            host_key,
            client_key,
            upstream_user: "developer".into(),
            keepalive: Duration::from_secs(30),
            auth_failures: FailureLimit::default(),
        }
    }
}

/// Loads an OpenSSH private key file.
pub fn load_key(path: &Path) -> Result<PrivateKey, String> {
    russh::keys::load_secret_key(path, None)
        .map_err(|e| format!("cannot load the SSH key {}: {e}", path.display()))
}

/// The SSH gateway.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) dir: Arc<dyn Directory>,
    pub(crate) server: Arc<russh::server::Config>,
    pub(crate) client: Arc<russh::client::Config>,
    pub(crate) client_key: Arc<PrivateKey>,
    pub(crate) upstream_user: String,
    pub(crate) limiter: limit::Limiter,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig, dir: Arc<dyn Directory>) -> Self {
        let server = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-Rigbox".into()),
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            keys: vec![cfg.host_key],
            // The "none" probe every OpenSSH client starts with is answered at once; a refused
            // key takes a constant time whatever the reason (no oracle on workspace existence).
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keepalive_interval: Some(cfg.keepalive),
            keepalive_max: 3,
            // Idle shells are fine; dead peers are found by the keepalives.
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        let client = russh::client::Config {
            keepalive_interval: Some(cfg.keepalive),
            keepalive_max: 3,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        Self {
            shared: Arc::new(Shared {
                dir,
                server: Arc::new(server),
                client: Arc::new(client),
                client_key: Arc::new(cfg.client_key),
                upstream_user: cfg.upstream_user,
                limiter: limit::Limiter::new(cfg.auth_failures),
            }),
        }
    }

    /// Accepts connections until `shutdown` turns true. Sessions in progress carry on.
    pub async fn serve(
        &self,
        listener: TcpListener,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let (socket, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "ssh accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { let _ = shutdown.wait_for(|v| *v).await; } => return,
            };
            let shared = self.shared.clone();
            tokio::spawn(async move { session::run(shared, socket, peer).await });
        }
    }
}

/// What one connection did, for its log line.
#[derive(Default)]
pub(crate) struct ConnLog {
    /// Username and workspace once authenticated.
    pub(crate) who: Mutex<Option<(String, String)>>,
    /// Bytes from the client to the VM.
    pub(crate) bytes_in: AtomicU64,
    /// Bytes from the VM to the client.
    pub(crate) bytes_out: AtomicU64,
}

impl ConnLog {
    pub(crate) fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn emit(&self, peer: SocketAddr, started: Instant, error: Option<&str>) {
        let who = self.who.lock().map(|w| w.clone()).unwrap_or_default();
        let (user, workspace) = who.unwrap_or_default();
        tracing::info!(
            %peer,
            user = %user,
            workspace = %workspace,
            authenticated = !workspace.is_empty(),
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            duration_ms = started.elapsed().as_millis() as u64,
            error = error.unwrap_or(""),
            "ssh connection closed"
        );
    }
}
