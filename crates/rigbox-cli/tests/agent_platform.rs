//! The bridge in front of the real control plane (in-process platform, simulated VMs): the agent
//! applies the configuration the control plane builds for a workspace (the account's key, its
//! env vars, its metadata), and `rig` in workspace mode reads `/rig/v1/whoami` and
//! `/rig/v1/workspace` through the bridge, identified by its address alone.

use rigbox_node::guest::GuestChannel;
use rigbox_testkit::TestPlatform;
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjTo4T0N1y0WxVb2dM0cQWm3xZ5r2vR3n8m1i9pPq0A dev@laptop";

async fn rig(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rig"))
            .args(&args)
            .envs(envs)
            .stdin(Stdio::null())
            .output()
            .expect("rig runs")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_workspace_mode_through_the_bridge() {
    let tp = TestPlatform::start().await;
    let user = tp.user("owner@example.com").await;
    let (code, _) = user
        .post("/ssh-keys", json!({"name": "laptop", "public_key": KEY}))
        .await;
    assert_eq!(code, 201);
    let (code, ws) = user
        .post(
            "/workspaces",
            json!({"name": "inside", "env_vars": {"GREETING": "it's here"}}),
        )
        .await;
    assert_eq!(code, 201, "{ws}");
    let ws_id = WorkspaceId::parse(ws["id"].as_str().expect("id")).expect("an ID");

    // The node's bridge: 127.0.0.1 holds this workspace's lease.
    let app = tp.platform().app.clone();
    let guest = Arc::new(GuestChannel::default());
    let url = rigbox_testkit::loopback_bridge(app, &ws_id, guest.clone()).await;

    // The agent applies what the control plane says about this workspace.
    let root = tempfile::tempdir().expect("root");
    let out = rig(
        &["agent", "--once", "--bridge-url", &url, "--root"]
            .into_iter()
            .chain([root.path().to_str().expect("utf-8 path")])
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect(p);
    let meta: Value = serde_json::from_str(&read("etc/rigbox/workspace.json")).expect("json");
    assert_eq!(meta["workspace_id"], ws_id.as_str());
    assert_eq!(meta["name"], "inside");
    assert_eq!(meta["owner_email"], "owner@example.com");
    assert_eq!(meta["bridge_url"], "http://172.16.0.1:9090");
    assert!(read("etc/rigbox/env").contains("GREETING='it'\\''s here'\n"));
    assert!(read("home/developer/.ssh/authorized_keys").contains(KEY));
    assert_eq!(read("etc/hostname"), "inside\n");
    let gw = read("etc/rigbox/ssh/gateway_authorized_keys");
    assert!(gw.starts_with("ssh-"), "the gateway's key: {gw}");
    let ack = guest.ack(&ws_id).expect("the report reached the node");
    assert_eq!(ack.ssh_keys.len(), 1);
    assert_eq!(ack.ssh_keys[0].comment, "dev@laptop");

    // `rig` inside the VM: identity from the address, no credential, even if one is around.
    let inside = [
        ("RIGBOX_MODE", "workspace"),
        ("RIGBOX_BRIDGE_URL", url.as_str()),
        ("RIGBOX_API_KEY", "rb_not-used-inside"),
    ];
    let out = rig(&["whoami", "--output", "json"], &inside).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["auth_method"], "workspace_ip");
    assert_eq!(v["workspace_id"], ws_id.as_str());
    assert_eq!(v["workspace_name"], "inside");
    assert_eq!(v["owner_email"], "owner@example.com");
    assert_eq!(v["node_id"], "node-1");
    assert_eq!(v["ip_address"], "127.0.0.1");

    let out = rig(&["ws", "get", "--output", "json"], &inside).await;
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["id"], ws_id.as_str());
    assert_eq!(v["name"], "inside");
    assert_eq!(v["ai_mode"], "managed");
    assert_eq!(v["apps"], json!([]));
    assert_eq!(v["template_id"], ws["template_id"]);
    assert!(v["ssh"]["ssh_target"]
        .as_str()
        .is_some_and(|t| t.starts_with("inside-")));

    // Errors of the control-plane part come in the envelope with a request ID.
    let r = reqwest::get(format!("{url}/rig/v1/apps-not-yet"))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("X-Request-Id");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "not_found");
    assert_eq!(e["error"]["details"]["request_id"], id.as_str());
}

/// BYOK through the real agent: the provider key lands in `/etc/rigbox/env` at a sync and
/// leaves it once the workspace is back in managed; `rig proxy on` refuses meanwhile. (Each sync
/// goes through a fresh bridge, which asks the control plane: the push of a change to a running
/// VM is covered by tests/e2e/tests/byok.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_the_byok_key_and_removes_it_back_in_managed() {
    const SECRET: &str = "AIza-agent-Secret-0123456789";
    let tp = TestPlatform::start().await;
    let user = tp.user("owner@example.com").await;
    let (code, ws) = user
        .post(
            "/workspaces",
            json!({"name": "keyed", "env_vars": {"A": "1"}}),
        )
        .await;
    assert_eq!(code, 201, "{ws}");
    let ws_id = WorkspaceId::parse(ws["id"].as_str().expect("id")).expect("an ID");
    let app = tp.platform().app.clone();
    let bridge = || rigbox_testkit::loopback_bridge(app.clone(), &ws_id, Arc::default());
    let url = bridge().await;
    let root = tempfile::tempdir().expect("root");
    let root_path = root.path().to_str().expect("utf-8 path").to_owned();
    let sync = || async {
        let url = bridge().await;
        let out = rig(
            &[
                "agent",
                "--once",
                "--bridge-url",
                &url,
                "--root",
                &root_path,
            ],
            &[],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(root.path().join("etc/rigbox/env")).expect("env written")
    };
    let inside = [
        ("RIGBOX_MODE", "workspace"),
        ("RIGBOX_BRIDGE_URL", url.as_str()),
    ];

    let env = sync().await;
    assert!(!env.contains("GOOGLE_API_KEY"), "{env}");
    let (code, c) = user
        .put(
            &format!("/workspaces/{ws_id}/ai-config"),
            json!({"mode": "byok", "provider": "google", "api_key": SECRET}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let env = sync().await;
    assert!(
        env.contains(&format!("GOOGLE_API_KEY='{SECRET}'\n")),
        "{env}"
    );
    assert!(env.contains("A='1'\n"), "{env}");
    let out = rig(&["proxy", "on"], &inside).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("managed AI is off for this workspace (mode: byok)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rig(&["ws", "get", "--output", "json"], &inside).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ai_mode"], "byok");

    let (code, _) = user
        .put(
            &format!("/workspaces/{ws_id}/ai-config"),
            json!({"mode": "managed"}),
        )
        .await;
    assert_eq!(code, 200);
    let env = sync().await;
    assert!(!env.contains(SECRET), "the key stayed in the guest: {env}");
    assert!(env.contains("A='1'\n"), "{env}");
}
