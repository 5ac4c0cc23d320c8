//! Test harness for Rigbox.
//!
//! - [`TestPlatform`]: the whole platform (control plane + simulated node) in-process on an
//!   OS-chosen port with a temporary data dir; restartable on the same data dir.
//! - [`Daemon`]: a real `rigboxd up --vmm sim` process (for tests of the `rig` binary).
//! - [`Client`]: a small JSON client that returns `(status, body)` so tests assert what a user
//!   of the API sees.

pub mod fake_ai;
pub mod python;

use rigbox_control::app::accounts::NewUser;
pub use rigboxd::config::{Config, TlsMode, VmmKind};
use rigboxd::Platform;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A default password for test accounts.
pub const PASSWORD: &str = "correct-horse-battery";

/// Configuration for tests: fast simulated VMs, plain HTTP, OS-chosen port.
pub fn test_config(data_dir: &Path) -> Config {
    let mut cfg = Config {
        data_dir: Some(data_dir.to_path_buf()),
        http_port: 0,
        // The gateway takes a free port too: tests run side by side.
        ssh_port: 0,
        tls: TlsMode::Off,
        vmm: VmmKind::Sim,
        ..Config::default()
    };
    cfg.sim.provision_ms = 50;
    cfg.sim.boot_ms = 300;
    cfg.sim.stop_ms = 100;
    cfg.node.memory_mb = Some(64 * 1024);
    cfg
}

/// A JSON API client bound to one credential.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    /// Path prefix of every request (`/api/v1`, or empty for [`Client::with_base`]).
    prefix: &'static str,
    http: reqwest::Client,
}

/// Status and parsed body (`Value::Null` when empty or not JSON).
pub type Resp = (u16, Value);

impl Client {
    /// The signed-in user's ID (`GET /auth/me`).
    pub async fn user_id(&self) -> String {
        let (status, me) = self.get("/auth/me").await;
        assert_eq!(status, 200, "{me}");
        me["id"].as_str().expect("the user's id").to_owned()
    }

    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            prefix: "/api/v1",
            http: reqwest::Client::new(),
        }
    }

    /// A client of another API root, e.g. a bridge's `http://…/rig/v1`.
    pub fn with_base(base: &str, token: Option<String>) -> Self {
        Self {
            prefix: "",
            ..Self::new(base, token)
        }
    }

    /// Sends a request to `/api/v1{path}` with an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let r = self
            .raw(method, path, body.map(|b| b.to_string()), true)
            .await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The raw response, for header assertions; `json` sets the content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        json: bool,
    ) -> reqwest::Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut req = self
            .http
            .request(m, format!("{}{}{path}", self.base, self.prefix));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            if json {
                req = req.header("content-type", "application/json");
            }
            req = req.body(b);
        }
        req.send().await.expect("request reaches the server")
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None).await
    }

    /// Polls `GET /workspaces/{ws}` until its status is `want` (panics after `timeout`).
    pub async fn wait_status(&self, ws: &str, want: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (code, body) = self.get(&format!("/workspaces/{ws}")).await;
            if code == 200 && body["status"] == want {
                return body;
            }
            assert!(
                start.elapsed() < timeout,
                "workspace {ws} did not reach {want} within {timeout:?}; last: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates the workspace `name`, starts it and waits until it runs (simulated VMM);
    /// returns its ID and the loopback address that stands for its VM on a sim bridge
    /// (`127.16.0.N` for the lease `172.16.0.N`).
    pub async fn running_workspace(&self, name: &str) -> (String, std::net::Ipv4Addr) {
        let (code, ws) = self
            .post("/workspaces", serde_json::json!({"name": name}))
            .await;
        assert_eq!(code, 201, "{ws}");
        let id = ws["id"].as_str().expect("id").to_owned();
        self.wait_status(&id, "provisioned", Duration::from_secs(20))
            .await;
        let (code, _) = self
            .post(&format!("/workspaces/{id}/start"), serde_json::json!({}))
            .await;
        assert_eq!(code, 202);
        let ws = self
            .wait_status(&id, "running", Duration::from_secs(20))
            .await;
        let ip: std::net::Ipv4Addr = ws["ip_address"]
            .as_str()
            .expect("a running workspace has an address")
            .parse()
            .expect("IPv4");
        let [172, 16, 0, n] = ip.octets() else {
            panic!("unexpected lease {ip}")
        };
        (id, std::net::Ipv4Addr::new(127, 16, 0, n))
    }

    /// Polls until `GET /workspaces/{ws}` answers 404.
    pub async fn wait_gone(&self, ws: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let (code, body) = self.get(&format!("/workspaces/{ws}")).await;
            if code == 404 {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "workspace {ws} still exists after {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The platform in-process.
pub struct TestPlatform {
    pub platform: Option<Platform>,
    pub config: Config,
    dir: tempfile::TempDir,
}

/// A node bridge on loopback, in process, for workspace `ws` (its VM is the caller from
/// `127.0.0.1`), whose `/rig/v1` is served by `app`; `guest` is what the agent's long poll
/// reads. Returns the bridge's base URL; the server lives as long as the runtime.
pub async fn loopback_bridge(
    app: std::sync::Arc<rigbox_control::App>,
    ws: &rigbox_types::WorkspaceId,
    guest: std::sync::Arc<rigbox_node::guest::GuestChannel>,
) -> String {
    use rigbox_node::bridge::{self, BridgeState};
    let lease = ws.clone();
    let state = BridgeState {
        node_id: "node-1".into(),
        leases: std::sync::Arc::new(move |ip| {
            (ip == std::net::Ipv4Addr::LOCALHOST).then(|| lease.clone())
        }),
        guest,
        link: std::sync::Arc::new(rigbox_control::app::lifecycle::LocalLink(app.clone())),
        direct: None,
        upstream: Some(rigbox_control::http::rig_v1::router(app)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the bridge");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(bridge::serve(listener, state));
    url
}

/// An HTTP client whose connections come from `local`: a workspace's VM as a sim bridge sees
/// it (see [`Client::running_workspace`]).
pub fn vm_client(local: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(local))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// A client of `app`'s `/rig/v1` as workspace `ws`'s VM reaches it, through a
/// [`loopback_bridge`].
pub async fn rig_v1_client(app: std::sync::Arc<rigbox_control::App>, ws: &str) -> Client {
    let ws = rigbox_types::WorkspaceId::parse(ws).expect("a workspace ID");
    let url = loopback_bridge(app, &ws, std::sync::Arc::default()).await;
    Client::with_base(&format!("{url}/rig/v1"), None)
}

impl TestPlatform {
    /// Starts with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with [`test_config`] changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let platform = Platform::start(&config).await.expect("platform starts");
        Self {
            platform: Some(platform),
            config,
            dir,
        }
    }

    pub fn platform(&self) -> &Platform {
        self.platform.as_ref().expect("platform is running")
    }

    pub fn url(&self) -> String {
        self.platform().api_url()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// An unauthenticated client.
    pub fn anon(&self) -> Client {
        Client::new(&self.url(), None)
    }

    /// Creates an account (as the operator would) and returns a client with a fresh API key.
    pub async fn user(&self, email: &str) -> Client {
        self.user_on_plan(email, None).await
    }

    pub async fn user_on_plan(&self, email: &str, plan: Option<&str>) -> Client {
        let app = &self.platform().app;
        app.create_user(NewUser {
            email: email.into(),
            name: None,
            password: PASSWORD.into(),
            plan: plan.map(str::to_owned),
            email_verified: true,
        })
        .await
        .expect("user created");
        let (code, s) = self
            .anon()
            .post(
                "/auth/login",
                serde_json::json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(code, 200, "login: {s}");
        let session = Client::new(&self.url(), s["token"].as_str().map(str::to_owned));
        let (code, k) = session
            .post("/api-keys", serde_json::json!({"name": "tests"}))
            .await;
        assert_eq!(code, 201, "api key: {k}");
        Client::new(&self.url(), k["key"].as_str().map(str::to_owned))
    }

    /// Stops the platform (VMs keep running) and starts it again on the same data dir and port.
    pub async fn restart(&mut self) {
        let old = self.platform.take().expect("platform is running");
        self.config.http_port = old.http_addr.port();
        old.shutdown(false).await;
        self.platform = Some(
            Platform::start(&self.config)
                .await
                .expect("platform restarts"),
        );
    }
}

/// A `rigboxd up --vmm sim` process on OS-chosen ports with a temporary data dir; killed (by
/// PID) on drop.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    api_url: String,
    /// Where the SSH gateway listens (from `ready.json`).
    ssh_port: u16,
    cfg_path: PathBuf,
    vmm: &'static str,
    /// The node namespace of a QEMU daemon (removed on drop, with its VMs).
    netns: Option<String>,
}

/// Path of a binary built from this workspace (`target/debug/<name>`, or `$CARGO_TARGET_DIR`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

impl Daemon {
    /// Starts `rigboxd up` and waits for its `ready.json`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_config("").await
    }

    /// Same with extra TOML configuration (e.g. `[sim]` failures).
    pub async fn start_with_config(toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg_path = dir.path().join("rigboxd.toml");
        let base = "[sim]\nprovision_ms = 50\nboot_ms = 300\nstop_ms = 100\n";
        let text = if toml.contains("[sim]") {
            toml.to_owned()
        } else {
            format!("{base}{toml}")
        };
        std::fs::write(&cfg_path, text)?;
        let child = Self::spawn("sim", &cfg_path, &dir.path().join("data"), 0)?;
        let mut d = Self {
            child,
            dir,
            api_url: String::new(),
            ssh_port: 0,
            cfg_path,
            vmm: "sim",
            netns: None,
        };
        d.wait_ready().await?;
        Ok(d)
    }

    /// Starts `rigboxd up --vmm qemu` with real VMs, in a node namespace of its own, with extra
    /// TOML under `[node]`. The guest kernel and image must have been built
    /// (`rigboxd image build base`).
    pub async fn start_qemu(node_toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg_path = dir.path().join("rigboxd.toml");
        let netns = format!(
            "rbxt-{}",
            rigbox_types::WorkspaceId::generate()
                .as_str()
                .trim_start_matches("ws-")
        );
        std::fs::write(
            &cfg_path,
            format!("[node]\nnetns = \"{netns}\"\nstop_grace_secs = 20\n{node_toml}\n"),
        )?;
        let child = Self::spawn("qemu", &cfg_path, &dir.path().join("data"), 0)?;
        let mut d = Self {
            child,
            dir,
            api_url: String::new(),
            ssh_port: 0,
            cfg_path,
            vmm: "qemu",
            netns: Some(netns),
        };
        d.wait_ready().await?;
        Ok(d)
    }

    /// The node namespace of a QEMU daemon.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// What rigboxd wrote to stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rigboxd.log")).unwrap_or_default()
    }

    fn spawn(vmm: &str, cfg_path: &Path, data: &Path, port: u16) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cfg_path.with_file_name("rigboxd.log"))?;
        Command::new(workspace_bin("rigboxd"))
            .args([
                "up",
                "--vmm",
                vmm,
                "--tls",
                "off",
                "--ssh-port",
                "0",
                "--https-port",
                "0",
            ])
            .arg("--http-port")
            .arg(port.to_string())
            .arg("--config")
            .arg(cfg_path)
            .arg("--data-dir")
            .arg(data)
            .env("RIGBOX_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
    }

    /// Kills the daemon with SIGKILL (no clean shutdown at all) and starts it again on the same
    /// data dir and port.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let port: u16 = self
            .api_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SIGKILL leaves the readiness file behind; the new process rewrites it.
        let _ = std::fs::remove_file(self.data_dir().join("ready.json"));
        self.child = Self::spawn(self.vmm, &self.cfg_path, &self.data_dir(), port)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let d = self;
        let ready = d.data_dir().join("ready.json");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    d.api_url = v["api_url"].as_str().unwrap_or_default().to_owned();
                    d.ssh_port = v["ssh"]["port"].as_u64().unwrap_or_default() as u16;
                    return Ok(());
                }
            }
            if let Some(status) = d.child.try_wait()? {
                anyhow::bail!("rigboxd exited before it was ready: {status}");
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "rigboxd not ready within 60 s:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn api_url(&self) -> String {
        self.api_url.clone()
    }

    /// The SSH gateway's port on 127.0.0.1.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates an account with `rigboxd admin user create` and returns an API key for it.
    pub async fn create_user(&self, email: &str, password: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut admin = Command::new(workspace_bin("rigboxd"))
            .args(["admin", "--data-dir"])
            .arg(self.data_dir())
            .args(["user", "create", "--email", email])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        admin
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            .write_all(format!("{password}\n").as_bytes())?;
        let out = admin.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "admin user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let anon = Client::new(&self.api_url, None);
        let (code, s) = anon
            .post(
                "/auth/login",
                serde_json::json!({"email": email, "password": password}),
            )
            .await;
        anyhow::ensure!(code == 200, "login failed: {s}");
        let session = Client::new(&self.api_url, s["token"].as_str().map(str::to_owned));
        let (code, k) = session
            .post("/api-keys", serde_json::json!({"name": "cli tests"}))
            .await;
        anyhow::ensure!(code == 201, "api key creation failed: {k}");
        Ok(k["key"].as_str().unwrap_or_default().to_owned())
    }

    /// Stops the daemon with SIGTERM and waits for it (clean shutdown).
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        // std has no SIGTERM API: signal our own child by its PID with kill(1).
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.child.wait()
    }
}

impl Daemon {
    /// PIDs of the QEMU processes of this daemon's VMs (from the driver's state files).
    pub fn vm_pids(&self) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.data_dir().join("vms")) else {
            return out;
        };
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(pid) = v["vm"]["pid"].as_i64() {
                out.push((e.file_name().to_string_lossy().into_owned(), pid as i32));
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // VMs outlive rigboxd by design; a test's VMs and namespace must not outlive the test.
        for (_, pid) in self.vm_pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(ns) = &self.netns {
            std::thread::sleep(Duration::from_millis(200));
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
