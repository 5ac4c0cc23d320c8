//! Apps through real HTTP: `/api/v1/apps` with every error the spec names, and the
//! workspace-scoped `/rig/v1/apps` a VM uses through its bridge.

use rigbox_testkit::{Client, TestPlatform};
use rigbox_types::agent::BridgeCaller;
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

async fn workspace(c: &Client, name: &str) -> String {
    let (s, w) = c.post("/workspaces", json!({"name": name})).await;
    assert_eq!(s, 201, "{w}");
    w["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn create_list_get_patch_share_delete() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "web").await;

    // Defaults, slugified name, URL on the base domain.
    let (s, a) = me
        .post("/apps", json!({"workspace_id": "web", "name": "My Site!"}))
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["name"], "my-site");
    // TLS is off in these tests: apps are served on the plain HTTP port.
    let port = tp.platform().http_addr.port();
    assert_eq!(
        a["url"],
        format!("http://my-site.rigbox.localhost:{port}").as_str()
    );
    assert_eq!(a["workspace_id"], ws.as_str());
    assert_eq!(a["port"], 3000);
    assert_eq!(a["protocol"], "http");
    assert_eq!(a["visibility"], "private");
    assert_eq!(a["status"], "active");
    assert_eq!(a["allowed_emails"], json!([]));
    assert_eq!(a["custom_domain"], Value::Null);
    let id = a["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("app-"));

    // By ID or by name.
    assert_eq!(me.get(&format!("/apps/{id}")).await.1["name"], "my-site");
    assert_eq!(me.get("/apps/my-site").await.1["id"], id.as_str());
    let (s, list) = me.get("/apps?workspace_id=web").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    // Rename moves the host; the old name is free at once.
    let (s, a) = me
        .patch(
            "/apps/my-site",
            json!({"name": "blog", "port": 8080, "protocol": "h2c", "description": "d", "status": "inactive"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (
            &a["name"],
            &a["port"],
            &a["protocol"],
            &a["status"],
            &a["description"]
        ),
        (
            &json!("blog"),
            &json!(8080),
            &json!("h2c"),
            &json!("inactive"),
            &json!("d")
        )
    );
    assert_eq!(me.get("/apps/my-site").await.0, 404);
    let (s, _) = me
        .post(
            "/apps",
            json!({"workspace_id": ws, "name": "my-site", "port": 80}),
        )
        .await;
    assert_eq!(s, 201, "the old name is free again");
    let (_, a) = me.patch("/apps/blog", json!({"description": null})).await;
    assert_eq!(a["description"], Value::Null);

    // Visibility: the list is replaced whole, lowercased and de-duplicated.
    let (s, a) = me
        .put(
            "/apps/blog/visibility",
            json!({"visibility": "privileged", "allowed_emails": ["A@Example.com", "a@example.com", "b@example.com"]}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["visibility"], "privileged");
    assert_eq!(
        a["allowed_emails"],
        json!(["a@example.com", "b@example.com"])
    );
    let (_, a) = me
        .put("/apps/blog/visibility", json!({"visibility": "public"}))
        .await;
    assert_eq!(
        (&a["visibility"], &a["allowed_emails"]),
        (&json!("public"), &json!([]))
    );

    // Health without a running workspace: no probe.
    let (s, h) = me.get("/apps/blog/health").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        (
            &h["live"],
            &h["port_open"],
            &h["http_status"],
            &h["service_status"]
        ),
        (
            &json!(false),
            &json!(false),
            &Value::Null,
            &json!("unmanaged")
        )
    );
    assert!(h["checked_at"].is_string());
    assert_eq!(me.get("/apps/nope/health").await.0, 404);

    // Delete: 204, then 404.
    assert_eq!(me.delete("/apps/blog").await.0, 204);
    assert_eq!(me.get("/apps/blog").await.0, 404);
    assert_eq!(me.delete("/apps/blog").await.0, 404);

    // Apps go with their workspace.
    me.wait_status(&ws, "provisioned", T).await;
    let (s, body) = me.delete(&format!("/workspaces/{ws}")).await;
    assert_eq!(s, 202, "{body}");
    let start = std::time::Instant::now();
    while me.get("/apps/my-site").await.0 != 404 {
        assert!(start.elapsed() < T, "the app outlived its workspace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn names_limits_and_other_users() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let other = tp.user("other@example.com").await;
    let ws = workspace(&me, "web").await;
    let theirs = workspace(&other, "theirs").await;

    let create = |name: &str| json!({"workspace_id": ws, "name": name});
    for (name, want) in [
        ("a", "invalid_name"),
        (&"x".repeat(64), "invalid_name"),
        ("app-abcdefgh", "invalid_name"),
        ("!!", "invalid_name"),
        ("www", "name_reserved"),
        ("API", "name_reserved"),
        ("local", "name_reserved"),
    ] {
        let (s, e) = me.post("/apps", create(name)).await;
        assert_eq!(code(&e), want, "{name:?}: {s} {e}");
    }
    for body in [
        json!({"workspace_id": ws, "name": "p", "port": 0}),
        json!({"workspace_id": ws, "name": "pp", "port": 65536}),
        json!({"workspace_id": ws, "name": "pp", "protocol": "gopher"}),
        json!({"workspace_id": ws, "name": "pp", "visibility": "secret"}),
        json!({"workspace_id": ws, "name": "pp", "allowed_emails": ["nope"]}),
        json!({"workspace_id": ws, "name": "pp", "description": "x".repeat(501)}),
        json!({"workspace_id": ws, "name": "pp", "unknown": 1}),
        json!({"name": "pp"}),
    ] {
        let (s, e) = me.post("/apps", body.clone()).await;
        assert_eq!(s, 400, "{body}: {e}");
    }

    // Names are global: another user cannot take mine, and sees none of my apps.
    assert_eq!(me.post("/apps", create("shop")).await.0, 201);
    let (s, e) = other
        .post("/apps", json!({"workspace_id": theirs, "name": "Shop"}))
        .await;
    assert_eq!((s, code(&e)), (409, "name_taken"));
    assert_eq!(other.get("/apps/shop").await.0, 404);
    assert_eq!(other.delete("/apps/shop").await.0, 404);
    assert_eq!(other.get("/apps").await.1["items"], json!([]));
    let (s, _) = other
        .post("/apps", json!({"workspace_id": ws, "name": "x2"}))
        .await;
    assert_eq!(s, 404, "another user's workspace does not exist for them");
    let (s, e) = me
        .post("/apps", json!({"workspace_id": ws, "name": "shop2"}))
        .await;
    assert_eq!(s, 201, "{e}");
    let (s, e) = me.patch("/apps/shop2", json!({"name": "shop"})).await;
    assert_eq!((s, code(&e)), (409, "name_taken"));

    // The free plan allows 5 apps per workspace.
    for i in 3..=5 {
        assert_eq!(me.post("/apps", create(&format!("app{i}"))).await.0, 201);
    }
    let (s, e) = me.post("/apps", create("app6")).await;
    assert_eq!((s, code(&e)), (402, "limit_exceeded"), "{e}");
    assert_eq!(e["error"]["details"]["limit"], "max_apps_per_vm");
}

#[tokio::test]
async fn a_workspace_manages_its_own_apps_through_the_bridge() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "inside").await;
    let other_ws = workspace(&me, "second").await;
    assert_eq!(
        me.post(
            "/apps",
            json!({"workspace_id": other_ws, "name": "elsewhere"})
        )
        .await
        .0,
        201
    );

    // The bridge hands the control plane's /rig/v1 router the caller it identified.
    let caller = BridgeCaller {
        workspace_id: WorkspaceId::parse(&ws).expect("id"),
        node_id: "node-1".into(),
        ip: [172, 16, 0, 2].into(),
    };
    let router = rigbox_control::http::rig_v1::router(tp.platform().app.clone())
        .layer(axum::Extension(caller));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let vm = Client::with_base(&format!("http://{addr}/rig/v1"), None);

    let (s, a) = vm
        .post(
            "/apps",
            json!({"name": "from-inside", "port": 8000, "visibility": "public"}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["workspace_id"], ws.as_str());
    let (s, list) = vm.get("/apps").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["from-inside"], "only this workspace's apps");
    assert_eq!(vm.get("/apps/elsewhere").await.0, 404);
    assert_eq!(vm.delete("/apps/elsewhere").await.0, 404);
    let (s, e) = vm
        .post("/apps", json!({"workspace_id": other_ws, "name": "sneaky"}))
        .await;
    assert_eq!((s, code(&e)), (400, "validation_failed"));
    let (s, a) = vm
        .put(
            "/apps/from-inside/visibility",
            json!({"visibility": "privileged", "allowed_emails": ["friend@example.com"]}),
        )
        .await;
    assert_eq!((s, &a["visibility"]), (200, &json!("privileged")));
    let (s, a) = vm.patch("/apps/from-inside", json!({"port": 8001})).await;
    assert_eq!((s, &a["port"]), (200, &json!(8001)));
    // The workspace document lists them too.
    let (_, w) = vm.get("/workspace").await;
    assert_eq!(w["apps"][0]["name"], "from-inside");
    // And the owner sees what the VM made.
    assert_eq!(me.get("/apps/from-inside").await.1["port"], 8001);
    assert_eq!(vm.delete("/apps/from-inside").await.0, 204);
    assert_eq!(me.get("/apps/from-inside").await.0, 404);
}
