//! `rigboxd` killed with SIGKILL (no clean shutdown) while workspaces are starting and stopping,
//! then started again on the same data dir: each workspace ends in the right state, and the SSH
//! gateway presents the same host key (users' known_hosts stay valid).

use rigbox_testkit::{Client, Daemon, PASSWORD};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn sigkill_mid_start_and_mid_stop_converges() {
    let mut d =
        Daemon::start_with_config("[sim]\nprovision_ms = 50\nboot_ms = 3000\nstop_ms = 3000\n")
            .await
            .expect("rigboxd");
    let key = d
        .create_user("kill@example.com", PASSWORD)
        .await
        .expect("user");
    let c = Client::new(&d.api_url(), Some(key.clone()));
    let t = Duration::from_secs(30);
    let (_, a) = c
        .post(
            "/workspaces",
            json!({"name": "starting", "env_vars": {"X": "1"}}),
        )
        .await;
    let (_, b) = c.post("/workspaces", json!({"name": "stopping"})).await;
    let (a, b) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
    );
    let before = c.wait_status(&a, "provisioned", t).await["ssh"].clone();
    c.wait_status(&b, "provisioned", t).await;
    c.post(&format!("/workspaces/{b}/start"), json!({})).await;
    c.wait_status(&b, "running", t).await;
    assert_eq!(
        c.post(&format!("/workspaces/{a}/start"), json!({})).await.1["status"],
        "starting"
    );
    assert_eq!(
        c.post(&format!("/workspaces/{b}/stop"), json!({})).await.1["status"],
        "stopping"
    );

    d.kill_and_restart().await.expect("restarted");
    let c = Client::new(&d.api_url(), Some(key));

    let w = c.wait_status(&a, "running", t).await;
    assert!(w["ip_address"].is_string());
    let w = c.wait_status(&b, "stopped", t).await;
    assert_eq!(w["stop_reason"], "requested");
    assert_eq!(
        c.get(&format!("/workspaces/{a}/env")).await.1["env_vars"],
        json!({"X": "1"})
    );
    let after = &w_a_ssh(&c, &a).await;
    assert_eq!(
        after["host_key_fingerprints"],
        before["host_key_fingerprints"]
    );
    assert_eq!(after["user"], before["user"]);
    // The gateway (on its new port) presents that same key.
    assert_eq!(after["port"], d.ssh_port());
    let scan = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keyscan -t ed25519 -p {} 127.0.0.1 2>/dev/null | ssh-keygen -lf -",
            d.ssh_port()
        ))
        .output()
        .expect("ssh-keyscan");
    let presented = String::from_utf8_lossy(&scan.stdout);
    let published = before["host_key_fingerprints"][0]
        .as_str()
        .expect("fingerprint");
    assert!(presented.contains(published), "{presented} vs {published}");
}

async fn w_a_ssh(c: &Client, id: &str) -> serde_json::Value {
    c.get(&format!("/workspaces/{id}")).await.1["ssh"].clone()
}
