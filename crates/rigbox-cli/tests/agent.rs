//! The guest agent against the real bridge service over TCP on loopback: identity by source
//! address, the long poll, the files the agent writes (into a temp root) and its report.

use rigbox_cli::commands::agent::{self, AgentArgs};
use rigbox_node::bridge::{self, BridgeState};
use rigbox_node::guest::GuestChannel;
use rigbox_types::agent::{AgentConfig, EnvVar, ProxyEnvVar, WorkspaceMeta, BRIDGE_URL};
use rigbox_types::node::{ControlLink, DesiredVm, GuestConfig, LinkError, Report};
use rigbox_types::WorkspaceId;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjTo4T0N1y0WxVb2dM0cQWm3xZ5r2vR3n8m1i9pPq0A dev@laptop";

fn config(ws: &WorkspaceId, revision: i64) -> AgentConfig {
    AgentConfig {
        revision,
        workspace: WorkspaceMeta {
            schema_version: 1,
            workspace_id: ws.to_string(),
            name: "demo".into(),
            owner_email: "dev@example.com".into(),
            region: "local".into(),
            node_id: "node-1".into(),
            bridge_url: BRIDGE_URL.into(),
            created_at: "2026-05-01T10:00:00Z".into(),
        },
        hostname: "demo".into(),
        authorized_keys: vec![KEY.into()],
        gateway_authorized_keys: vec!["ssh-ed25519 AAAAgateway rigbox-gateway".into()],
        env: vec![
            EnvVar {
                key: "GREETING".into(),
                value: "it's alive".into(),
            },
            EnvVar {
                key: "EMPTY".into(),
                value: String::new(),
            },
        ],
        proxy_env: vec![ProxyEnvVar {
            name: "OPENAI_BASE_URL".into(),
            value: "http://172.16.0.1:9090/v1".into(),
        }],
        volumes: vec![],
        requests: vec![],
    }
}

/// A control plane that only knows one workspace's guest config.
struct FakeLink(GuestConfig);

#[async_trait::async_trait]
impl ControlLink for FakeLink {
    async fn desired(&self, _: &str) -> Result<Vec<DesiredVm>, LinkError> {
        Ok(vec![])
    }
    async fn report(&self, _: &str, _: Report) -> Result<(), LinkError> {
        Ok(())
    }
    async fn changed(&self, _: &str) {
        std::future::pending::<()>().await
    }
    async fn guest_config(&self, _: &WorkspaceId) -> Result<GuestConfig, LinkError> {
        Ok(self.0.clone())
    }
}

struct Bridge {
    url: String,
    guest: Arc<GuestChannel>,
    ws: WorkspaceId,
    _task: tokio::task::JoinHandle<()>,
}

async fn bridge() -> Bridge {
    let ws = WorkspaceId::generate();
    let guest = Arc::new(GuestChannel::default());
    let owner = ws.clone();
    let state = BridgeState {
        node_id: "node-1".into(),
        // Only 127.0.0.1 holds a lease.
        leases: Arc::new(move |ip| (ip == Ipv4Addr::LOCALHOST).then(|| owner.clone())),
        guest: guest.clone(),
        link: Arc::new(FakeLink(config(&ws, 7))),
        upstream: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(bridge::serve(listener, bridge::router(state)));
    Bridge {
        url,
        guest,
        ws,
        _task: task,
    }
}

#[tokio::test]
async fn agent_applies_the_config_and_reports_ready() {
    let b = bridge().await;
    let root = tempfile::tempdir().expect("root");
    let ssh = root.path().join("home/developer/.ssh");
    std::fs::create_dir_all(&ssh).expect("ssh dir");
    std::fs::write(
        ssh.join("authorized_keys"),
        "ssh-ed25519 AAAAmine my-own-key\n",
    )
    .expect("seed authorized_keys");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/bash\ndeveloper:x:1000:1000::/home/developer:/bin/bash\n",
    )
    .expect("passwd");

    let args = AgentArgs {
        bridge_url: b.url.clone(),
        root: root.path().to_path_buf(),
        once: true,
    };
    tokio::time::timeout(Duration::from_secs(20), agent::run(&args))
        .await
        .expect("agent finished in time")
        .expect("agent succeeded");

    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect(p);
    let meta: serde_json::Value =
        serde_json::from_str(&read("etc/rigbox/workspace.json")).expect("json");
    assert_eq!(meta["workspace_id"], b.ws.as_str());
    assert_eq!(meta["bridge_url"], BRIDGE_URL);
    assert_eq!(
        read("etc/rigbox/env"),
        "GREETING='it'\\''s alive'\nEMPTY=''\n"
    );
    // The env file is valid sh: sourcing it gives the exact values back.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". {}; printf '%s' \"$GREETING\"",
            root.path().join("etc/rigbox/env").display()
        ))
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "it's alive");
    let ak = read("home/developer/.ssh/authorized_keys");
    assert!(ak.starts_with("ssh-ed25519 AAAAmine my-own-key\n"), "{ak}");
    assert!(
        ak.contains(&format!(
            "# BEGIN RIGBOX MANAGED KEYS\n{KEY}\n# END RIGBOX MANAGED KEYS\n"
        )),
        "{ak}"
    );
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .expect(p)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("home/developer/.ssh/authorized_keys"), 0o600);
    assert_eq!(mode("home/developer/.ssh"), 0o700);
    assert_eq!(mode("etc/rigbox/env"), 0o640);
    assert_eq!(mode("etc/rigbox/workspace.json"), 0o644);
    let owner = std::fs::metadata(root.path().join("home/developer/.ssh/authorized_keys"))
        .expect("meta")
        .uid();
    assert_eq!(owner, 1000, "authorized_keys belongs to developer");
    assert_eq!(
        read("etc/rigbox/ssh/gateway_authorized_keys"),
        "ssh-ed25519 AAAAgateway rigbox-gateway\n"
    );
    assert_eq!(
        read("home/developer/.rigbox/proxy.env"),
        "export OPENAI_BASE_URL='http://172.16.0.1:9090/v1'\n"
    );
    assert_eq!(read("etc/hostname"), "demo\n");
    assert!(read("etc/hosts").contains("127.0.1.1\tdemo"));

    // The report reached the node: revision applied, keys seen, ready for this boot.
    let ack = b.guest.ack(&b.ws).expect("an ack");
    assert_eq!(ack.revision, 7);
    assert_eq!(ack.ssh_keys.len(), 1);
    assert_eq!(ack.ssh_keys[0].comment, "dev@laptop");
    assert!(b.guest.ready_boot(&b.ws).is_some());
}

#[tokio::test]
async fn long_poll_identity_and_errors() {
    let b = bridge().await;
    let http = reqwest::Client::new();
    let cfg_url =
        |rev: i64, wait: u64| format!("{}/rig/v1/agent/config?revision={rev}&wait={wait}", b.url);
    // First fetch: the node asks the control plane (revision 7); headers change nothing.
    let r = http
        .get(cfg_url(0, 0))
        .header("Authorization", "Bearer someone-else")
        .header("X-Workspace-Id", "ws-zzzzzzzz")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let c: AgentConfig = r.json().await.expect("config");
    assert_eq!(c.revision, 7);
    assert_eq!(c.workspace.workspace_id, b.ws.as_str());

    // Unchanged: 204 after the wait.
    let t = Instant::now();
    let r = http.get(cfg_url(7, 1)).send().await.expect("get");
    assert_eq!(r.status(), 204);
    assert!(t.elapsed() >= Duration::from_millis(900));

    // A push wakes a pending poll at once.
    let poll = tokio::spawn({
        let (http, url) = (http.clone(), cfg_url(7, 30));
        async move { http.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    b.guest.push(&b.ws, config(&b.ws, 8));
    let r = poll.await.expect("join").expect("poll");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.json::<AgentConfig>().await.expect("cfg").revision, 8);

    // Bad input gets the envelope.
    let r = http.get(cfg_url(8, 31)).send().await.expect("get");
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "validation_failed");
    let r = http
        .post(format!("{}/rig/v1/agent/report", b.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/rig/v1/nope", b.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);

    // An address without a lease is nobody.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client");
    let r = other.get(cfg_url(0, 0)).send().await.expect("get");
    assert_eq!(r.status(), 403);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "unknown_workspace");
}
