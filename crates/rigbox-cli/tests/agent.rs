//! The guest agent against the real bridge service over TCP on loopback: the files the agent
//! writes (into a temp root), their owners and modes, the managed block of `authorized_keys`,
//! its report, what it does when a write fails, and the long poll and identity seen by a client.

use rigbox_cli::commands::agent::{self, AgentArgs};
use rigbox_node::bridge::{self, BridgeState};
use rigbox_node::guest::GuestChannel;
use rigbox_types::agent::{AgentConfig, EnvVar, ProxyEnvVar, WorkspaceMeta, BRIDGE_URL};
use rigbox_types::node::{ControlLink, DesiredVm, GuestConfig, LinkError, Report};
use rigbox_types::WorkspaceId;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
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
    bridge_with(ws.clone(), config(&ws, 7)).await
}

async fn bridge_with(ws: WorkspaceId, first: AgentConfig) -> Bridge {
    let guest = Arc::new(GuestChannel::default());
    let owner = ws.clone();
    let state = BridgeState {
        node_id: "node-1".into(),
        // Only 127.0.0.1 holds a lease.
        leases: Arc::new(move |ip| (ip == Ipv4Addr::LOCALHOST).then(|| owner.clone())),
        guest: guest.clone(),
        link: Arc::new(FakeLink(first)),
        direct: None,
        upstream: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(bridge::serve(listener, state));
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
        once: true,
        ..AgentArgs::new(&b.url, root.path())
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

const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ci@runner";

/// A temp root with `/etc/passwd` giving `developer` the ids 1234:1235 (so ownership provably
/// comes from it) and an `authorized_keys` with the user's own lines around an old block.
fn guest_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/bash\ndeveloper:x:1234:1235::/home/developer:/bin/bash\n",
    )
    .expect("passwd");
    std::fs::write(
        root.path().join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n",
    )
    .expect("hosts");
    let ssh = root.path().join("home/developer/.ssh");
    std::fs::create_dir_all(&ssh).expect("ssh dir");
    std::fs::write(
        ssh.join("authorized_keys"),
        "ssh-ed25519 AAAAmine before\n# BEGIN RIGBOX MANAGED KEYS\nssh-ed25519 AAAAstale gone\n# END RIGBOX MANAGED KEYS\nssh-ed25519 AAAAmine after\n",
    )
    .expect("seed authorized_keys");
    root
}

/// Runs the real `rig agent --once` binary against the bridge.
async fn run_binary(url: &str, root: &std::path::Path) -> std::process::Output {
    let (url, root) = (url.to_owned(), root.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rig"))
            .args(["agent", "--once", "--bridge-url", &url, "--root"])
            .arg(&root)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("rig runs")
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn the_binary_applies_each_new_config_and_keeps_the_users_lines() {
    let b = bridge().await;
    let root = guest_root();
    let path = |p: &str| root.path().join(p);
    let read = |p: &str| std::fs::read_to_string(path(p)).expect(p);
    let owner = |p: &str| {
        let m = std::fs::metadata(path(p)).expect(p);
        (m.uid(), m.gid(), m.permissions().mode() & 0o777)
    };

    let out = run_binary(&b.url, root.path()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ak = read("home/developer/.ssh/authorized_keys");
    assert_eq!(
        ak,
        format!(
            "ssh-ed25519 AAAAmine before\nssh-ed25519 AAAAmine after\n\
             # BEGIN RIGBOX MANAGED KEYS\n{KEY}\n# END RIGBOX MANAGED KEYS\n"
        )
    );
    // Owners and modes (workspaces.md §7), developer's ids from /etc/passwd.
    assert_eq!(owner("etc/rigbox/workspace.json"), (0, 0, 0o644));
    assert_eq!(owner("etc/rigbox/env"), (0, 1235, 0o640));
    assert_eq!(
        owner("etc/rigbox/ssh/gateway_authorized_keys"),
        (0, 0, 0o644)
    );
    assert_eq!(owner("home/developer/.ssh"), (1234, 1235, 0o700));
    assert_eq!(
        owner("home/developer/.ssh/authorized_keys"),
        (1234, 1235, 0o600)
    );
    assert_eq!(
        owner("home/developer/.rigbox/proxy.env"),
        (1234, 1235, 0o644)
    );
    assert_eq!(
        read("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tdemo\n"
    );
    // No temp files are left behind.
    for dir in [
        "etc/rigbox",
        "home/developer/.ssh",
        "home/developer/.rigbox",
    ] {
        for e in std::fs::read_dir(path(dir)).expect(dir) {
            let name = e.expect("entry").file_name();
            assert!(!name.to_string_lossy().contains("rigbox-tmp"), "{name:?}");
        }
    }
    assert_eq!(b.guest.ack(&b.ws).map(|a| a.revision), Some(7));

    // The account's keys and env change: a new agent run replaces the block and the env file.
    let mut next = config(&b.ws, 8);
    next.authorized_keys = vec![KEY2.into()];
    next.env = vec![EnvVar {
        key: "GREETING".into(),
        value: "bye".into(),
    }];
    b.guest.push(&b.ws, next);
    let out = run_binary(&b.url, root.path()).await;
    assert_eq!(out.status.code(), Some(0));
    let ak = read("home/developer/.ssh/authorized_keys");
    assert_eq!(
        ak,
        format!(
            "ssh-ed25519 AAAAmine before\nssh-ed25519 AAAAmine after\n\
             # BEGIN RIGBOX MANAGED KEYS\n{KEY2}\n# END RIGBOX MANAGED KEYS\n"
        )
    );
    assert_eq!(read("etc/rigbox/env"), "GREETING='bye'\n");
    let ack = b.guest.ack(&b.ws).expect("ack");
    assert_eq!(ack.revision, 8);
    let comments: Vec<&str> = ack.ssh_keys.iter().map(|k| k.comment.as_str()).collect();
    assert_eq!(comments, ["ci@runner"]);
}

#[tokio::test]
async fn a_failed_write_is_reported_without_claiming_the_revision() {
    let b = bridge().await;
    let root = guest_root();
    // ~/.ssh replaced by a symlink to somewhere else: the agent must not write through it.
    let elsewhere = tempfile::tempdir().expect("elsewhere");
    let ssh = root.path().join("home/developer/.ssh");
    std::fs::remove_dir_all(&ssh).expect("rm");
    std::os::unix::fs::symlink(elsewhere.path(), &ssh).expect("symlink");

    let args = AgentArgs {
        once: true,
        ..AgentArgs::new(&b.url, root.path())
    };
    tokio::time::timeout(Duration::from_secs(20), agent::run(&args))
        .await
        .expect("agent finished in time")
        .expect("agent ran");
    assert!(
        std::fs::read_dir(elsewhere.path())
            .expect("dir")
            .next()
            .is_none(),
        "nothing written through the symlink"
    );
    // The other files are written; the report reaches the node but claims no revision.
    assert!(root.path().join("etc/rigbox/workspace.json").exists());
    let ack = b.guest.ack(&b.ws).expect("a report");
    assert_eq!(ack.revision, 0);
}

#[tokio::test]
async fn malformed_entries_are_skipped_and_cannot_escape_their_place() {
    let ws = WorkspaceId::generate();
    let mut cfg = config(&ws, 7);
    cfg.env.push(EnvVar {
        key: "BAD KEY;touch /tmp/x".into(),
        value: "v".into(),
    });
    cfg.authorized_keys.push(format!(
        "{KEY2}\n# END RIGBOX MANAGED KEYS\nssh-ed25519 AAAAsmuggled outside"
    ));
    cfg.proxy_env.push(ProxyEnvVar {
        name: "$(reboot)".into(),
        value: "v".into(),
    });
    let b = bridge_with(ws, cfg).await;
    let root = guest_root();
    let out = run_binary(&b.url, root.path()).await;
    assert_eq!(out.status.code(), Some(0));
    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect(p);
    assert_eq!(
        read("etc/rigbox/env"),
        "GREETING='it'\\''s alive'\nEMPTY=''\n"
    );
    assert_eq!(
        read("home/developer/.rigbox/proxy.env"),
        "export OPENAI_BASE_URL='http://172.16.0.1:9090/v1'\n"
    );
    let ak = read("home/developer/.ssh/authorized_keys");
    assert!(!ak.contains("smuggled"), "{ak}");
    assert!(
        ak.ends_with(&format!("{KEY}\n# END RIGBOX MANAGED KEYS\n")),
        "{ak}"
    );
    // Skipping bad entries still applies the revision (retrying would not make them good).
    assert_eq!(b.guest.ack(&b.ws).map(|a| a.revision), Some(7));
}

/// A stand-in for sshd on loopback: hangs up on every connection (like a socket-activated port
/// before sshd runs) until `greet` is set, then sends the SSH banner.
async fn fake_sshd(greet: Arc<AtomicBool>) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            if greet.load(Ordering::SeqCst) {
                let _ = s.write_all(b"SSH-2.0-fake\r\n").await;
            }
        }
    });
    addr
}

async fn wait_ready(b: &Bridge, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if b.guest.ready_boot(&b.ws).is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn ready_is_reported_once_sshd_greets_and_logins_are_allowed() {
    let b = bridge().await;
    let root = guest_root();
    let greet = Arc::new(AtomicBool::new(false));
    let args = AgentArgs {
        wait_sshd: true,
        sshd_addr: fake_sshd(greet.clone()).await,
        sshd_wait_secs: 1,
        ..AgentArgs::new(&b.url, root.path())
    };
    let agent = tokio::spawn(async move { agent::run(&args).await });

    // The config is applied and confirmed, but sshd does not greet: not ready.
    let ack = b
        .guest
        .wait_ack(&b.ws, 7, Duration::from_secs(10))
        .await
        .expect("confirmed");
    assert_eq!(ack.revision, 7);
    assert!(b.guest.ready_boot(&b.ws).is_none());

    // sshd greets, but the system still refuses logins (/run/nologin): not ready.
    std::fs::create_dir_all(root.path().join("run")).expect("run");
    std::fs::write(root.path().join("run/nologin"), "booting").expect("nologin");
    greet.store(true, Ordering::SeqCst);
    assert!(!wait_ready(&b, Duration::from_secs(6)).await);

    // Logins allowed: the agent reports ready on its own, within a short poll.
    std::fs::remove_file(root.path().join("run/nologin")).expect("rm");
    assert!(wait_ready(&b, Duration::from_secs(8)).await);
    assert_eq!(b.guest.ack(&b.ws).map(|a| a.revision), Some(7));
    agent.abort();
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
