//! The guarantees that matter most under stress: a restart of rigboxd in the middle of any
//! operation converges with nothing lost; concurrent requests at a quota's edge never exceed it;
//! the rate limit answers 429 with Retry-After.

use futures::future::join_all;
use rigbox_testkit::{Client, TestPlatform};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

async fn create(c: &Client, name: &str) -> String {
    let (code, w) = c
        .post(
            "/workspaces",
            json!({"name": name, "env_vars": {"KEEP": name}}),
        )
        .await;
    assert_eq!(code, 201, "{w}");
    w["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn restart_mid_operation_converges_without_losing_anything() {
    // Slow simulated VMs so each operation is still in flight when the platform restarts.
    let mut tp = TestPlatform::start_with(|c| {
        c.sim.provision_ms = 1500;
        c.sim.boot_ms = 2500;
        c.sim.stop_ms = 2500;
    })
    .await;
    let c = tp.user_on_plan("r@example.com", Some("pro")).await;
    let steady = create(&c, "steady").await;
    let to_stop = create(&c, "to-stop").await;
    let to_delete = create(&c, "to-delete").await;
    for ws in [&steady, &to_stop, &to_delete] {
        c.wait_status(ws, "provisioned", T).await;
    }
    for ws in [&steady, &to_stop] {
        assert_eq!(
            c.post(&format!("/workspaces/{ws}/start"), json!({}))
                .await
                .0,
            202
        );
        c.wait_status(ws, "running", T).await;
    }
    let steady_ip = c.get(&format!("/workspaces/{steady}")).await.1["ip_address"].clone();

    // Now put one workspace in each transitional state.
    let starting = create(&c, "starting").await;
    c.wait_status(&starting, "provisioned", T).await;
    let provisioning = create(&c, "provisioning").await;
    assert_eq!(
        c.post(&format!("/workspaces/{starting}/start"), json!({}))
            .await
            .1["status"],
        "starting"
    );
    assert_eq!(
        c.post(&format!("/workspaces/{to_stop}/stop"), json!({}))
            .await
            .1["status"],
        "stopping"
    );
    assert_eq!(
        c.delete(&format!("/workspaces/{to_delete}")).await.1["status"],
        "deleting"
    );
    assert_eq!(
        c.get(&format!("/workspaces/{provisioning}")).await.1["status"],
        "provisioning"
    );

    tp.restart().await;
    let c = Client::new(&tp.url(), c.token.clone());

    c.wait_status(&provisioning, "provisioned", T).await;
    let w = c.wait_status(&starting, "running", T).await;
    assert!(
        w["ip_address"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("172.16.0.")),
        "{w}"
    );
    let w = c.wait_status(&to_stop, "stopped", T).await;
    assert_eq!(w["stop_reason"], "requested");
    c.wait_gone(&to_delete, T).await;
    // The running workspace was re-adopted: still running, same lease, never restarted.
    let w = c.get(&format!("/workspaces/{steady}")).await.1;
    assert_eq!(w["status"], "running");
    assert_eq!(w["ip_address"], steady_ip);
    // Nothing lost: every surviving workspace still has its env vars.
    for ws in [&steady, &to_stop, &provisioning, &starting] {
        let (code, env) = c.get(&format!("/workspaces/{ws}/env")).await;
        assert_eq!(code, 200);
        assert!(env["env_vars"]["KEEP"].is_string(), "{ws}: {env}");
    }
    let (_, list) = c.get("/workspaces").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn concurrent_creates_never_exceed_max_vms() {
    let tp = TestPlatform::start().await;
    let c = tp.user("quota@example.com").await;
    let app = &tp.platform().app;
    app.admin_set_limit("quota@example.com", Some("max_vms"), Some(5))
        .await
        .expect("override");
    app.admin_set_limit(
        "quota@example.com",
        Some("max_disk_total_mb"),
        Some(1_000_000),
    )
    .await
    .expect("override");
    let results = join_all((0..20).map(|i| {
        let c = c.clone();
        async move {
            c.post("/workspaces", json!({"name": format!("w{i}")}))
                .await
        }
    }))
    .await;
    let created = results.iter().filter(|(code, _)| *code == 201).count();
    let refused: Vec<_> = results.iter().filter(|(code, _)| *code == 402).collect();
    assert_eq!(created, 5, "{results:?}");
    assert_eq!(refused.len(), 15);
    assert!(refused
        .iter()
        .all(|(_, b)| b["error"]["details"]["limit"] == "max_vms"
            && b["error"]["details"]["max"] == 5));
    let (_, limits) = c.get("/users/me/limits").await;
    assert_eq!(limits["usage"]["workspace_count"], 5);
}

#[tokio::test]
async fn concurrent_starts_never_exceed_running_vcpus() {
    let tp = TestPlatform::start().await;
    let c = tp.user_on_plan("vcpu@example.com", Some("pro")).await;
    let app = &tp.platform().app;
    app.admin_set_limit("vcpu@example.com", Some("max_running_vcpus"), Some(3))
        .await
        .expect("override");
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(create(&c, &format!("s{i}")).await);
    }
    for id in &ids {
        c.wait_status(id, "provisioned", T).await;
    }
    let results = join_all(ids.iter().map(|id| {
        let c = c.clone();
        let id = id.clone();
        async move { c.post(&format!("/workspaces/{id}/start"), json!({})).await }
    }))
    .await;
    let started = results.iter().filter(|(code, _)| *code == 202).count();
    assert_eq!(started, 3, "{results:?}");
    for (code, body) in results.iter().filter(|(code, _)| *code != 202) {
        assert_eq!(*code, 402);
        assert_eq!(body["error"]["details"]["limit"], "max_running_vcpus");
        assert_eq!(body["error"]["details"]["current"], 3);
    }
    let (_, limits) = c.get("/users/me/limits").await;
    assert_eq!(limits["usage"]["running_vcpus"], 3);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let tp = TestPlatform::start_with(|c| c.control.rate_limits.workspaces = 5).await;
    let a = tp.user("rl-a@example.com").await;
    let b = tp.user("rl-b@example.com").await;
    for _ in 0..5 {
        assert_eq!(a.get("/workspaces").await.0, 200);
    }
    let r = a.raw("GET", "/workspaces", None, false).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["class"], "workspaces");
    assert_eq!(body["error"]["details"]["limit_per_minute"], 5);
    assert_eq!(body["error"]["details"]["retry_after_seconds"], retry);
    // Other classes and other users have their own buckets.
    assert_eq!(a.get("/users/me/limits").await.0, 200);
    assert_eq!(b.get("/workspaces").await.0, 200);
}

#[tokio::test]
async fn unauthenticated_requests_are_limited_per_client_ip() {
    let tp = TestPlatform::start_with(|c| c.control.rate_limits.auth = 3).await;
    let anon = tp.anon();
    for _ in 0..3 {
        assert_eq!(anon.get("/templates").await.0, 200);
    }
    let (code, body) = anon.get("/capacity").await;
    assert_eq!(code, 429);
    assert_eq!(body["error"]["details"]["class"], "auth");
}
