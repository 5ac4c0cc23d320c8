//! The edge inside the whole platform (simulated VMs): HTTPS with the local CA `rigboxd`
//! generates, the console and API on the base domain, app routes read live from the control
//! plane, visibility with real API keys, and plain HTTP for apps redirected to HTTPS.

use rigbox_testkit::{TestPlatform, TlsMode};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn https_with_the_local_ca_and_live_app_routes() {
    let tp = TestPlatform::start_with(|c| {
        c.tls = TlsMode::LocalCa;
        c.https_port = 0;
    })
    .await;
    let p = tp.platform();
    let https = p.https_addr.expect("HTTPS listens");
    let ca = std::fs::read(p.ca_cert.as_ref().expect("local CA")).expect("ca.pem");
    let base = "rigbox.localhost";
    let me = tp.user("me@example.com").await;
    let other = tp.user("other@example.com").await;
    let key = me.token.clone().expect("key");
    let other_key = other.token.clone().expect("key");

    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .no_proxy()
        .resolve(base, https);
    for app in ["site", "blog", "gone"] {
        b = b.resolve(&format!("{app}.{base}"), https);
    }
    let c = b.build().expect("client");
    let port = https.port();
    let url = |host: &str, path: &str| format!("https://{host}:{port}{path}");

    // The console and API over HTTPS on the base domain, trusted through ca.pem.
    let r = c
        .get(url(base, "/api/v1/templates"))
        .send()
        .await
        .expect("TLS to the base domain");
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(url(base, "/api/v1/auth/me"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.json::<Value>().await.expect("json")["email"],
        "me@example.com"
    );

    // An app: its URL is on the HTTPS port; it routes from the next request on.
    let (s, ws) = me.post("/workspaces", json!({"name": "web"})).await;
    assert_eq!(s, 201, "{ws}");
    let ws_id = ws["id"].as_str().expect("id").to_owned();
    let (s, app) = me
        .post(
            "/apps",
            json!({"workspace_id": ws_id, "name": "site", "port": 8000}),
        )
        .await;
    assert_eq!(s, 201, "{app}");
    assert_eq!(app["url"], url("site.rigbox.localhost", "").as_str());
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    let get = |host: &str| c.get(url(host, "/")).send();
    let r = get("site.rigbox.localhost").await.expect("send");
    assert_eq!(r.status().as_u16(), 403, "private by default");
    assert_eq!(code(&r.json().await.expect("json")), "app_auth_required");
    // The owner's key passes the check; the workspace is not running yet.
    let r = c
        .get(url("site.rigbox.localhost", "/"))
        .header("x-rigbox-key", &key)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        code(&r.json().await.expect("json")),
        "workspace_not_running"
    );
    let r = c
        .get(url("site.rigbox.localhost", "/"))
        .header("x-rigbox-key", &other_key)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.json().await.expect("json")), "app_forbidden");
    // Public, renamed: the old host stops, the new one answers at once.
    assert_eq!(
        me.put("/apps/site/visibility", json!({"visibility": "public"}))
            .await
            .0,
        200
    );
    assert_eq!(me.patch("/apps/site", json!({"name": "blog"})).await.0, 200);
    let r = get("site.rigbox.localhost").await.expect("send");
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.expect("json"))),
        (404, "app_not_found".into())
    );
    let r = get("blog.rigbox.localhost").await.expect("send");
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.expect("json"))),
        (503, "workspace_not_running".into())
    );
    // Disabled apps answer 503 app_inactive; deleted ones 404.
    assert_eq!(
        me.patch("/apps/blog", json!({"status": "inactive"}))
            .await
            .0,
        200
    );
    let r = get("blog.rigbox.localhost").await.expect("send");
    assert_eq!(code(&r.json().await.expect("json")), "app_inactive");
    assert_eq!(me.delete("/apps/blog").await.0, 204);
    assert_eq!(
        get("blog.rigbox.localhost")
            .await
            .expect("send")
            .status()
            .as_u16(),
        404
    );

    // Plain HTTP for an app host is sent to HTTPS; the API stays on plain HTTP.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve("gone.rigbox.localhost", p.http_addr)
        .build()
        .expect("client");
    let r = plain
        .get(format!(
            "http://gone.rigbox.localhost:{}/x?y=1",
            p.http_addr.port()
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().expect("location"),
        format!("https://gone.rigbox.localhost:{port}/x?y=1")
    );
    let r = plain
        .get(format!("http://{}/api/v1/templates", p.http_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
}

/// A tiny keep-alive HTTP/1.1 server standing in for every app port of the simulated VMs:
/// answers `hello` to each bodiless request.
async fn hello_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// The edge keeps routes in memory; every committed change (app, visibility, workspace state,
/// workspace deletion) still shows on the first request after the API call returns.
#[tokio::test]
async fn route_changes_show_on_the_next_request() {
    let upstream = hello_upstream().await;
    let tp = TestPlatform::start_with(|c| c.sim.app_upstream = Some(upstream)).await;
    let p = tp.platform();
    let me = tp.user("me@example.com").await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .resolve("live.rigbox.localhost", p.http_addr)
        .build()
        .expect("client");
    let url = format!("http://live.rigbox.localhost:{}/", p.http_addr.port());
    let get = || async {
        let r = c.get(&url).send().await.expect("send");
        let s = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (s, body["error"]["code"].as_str().unwrap_or("").to_owned())
    };

    let (s, ws) = me.post("/workspaces", json!({"name": "live"})).await;
    assert_eq!(s, 201, "{ws}");
    let ws_id = ws["id"].as_str().expect("id").to_owned();
    me.wait_status(&ws_id, "provisioned", Duration::from_secs(10))
        .await;
    let (s, app) = me
        .post(
            "/apps",
            json!({"workspace_id": ws_id, "name": "live", "port": 8000, "visibility": "public"}),
        )
        .await;
    assert_eq!(s, 201, "{app}");
    for _ in 0..3 {
        assert_eq!(get().await, (503, "workspace_not_running".into()));
    }
    // Started: serves as soon as the workspace reports running.
    assert_eq!(
        me.post(&format!("/workspaces/{ws_id}/start"), json!({}))
            .await
            .0,
        202
    );
    me.wait_status(&ws_id, "running", Duration::from_secs(10))
        .await;
    for _ in 0..3 {
        assert_eq!(get().await, (200, String::new()));
    }
    // Visibility, status and port changes: the very next request.
    assert_eq!(
        me.put("/apps/live/visibility", json!({"visibility": "private"}))
            .await
            .0,
        200
    );
    assert_eq!(get().await, (403, "app_auth_required".into()));
    assert_eq!(
        me.put("/apps/live/visibility", json!({"visibility": "public"}))
            .await
            .0,
        200
    );
    assert_eq!(get().await, (200, String::new()));
    assert_eq!(
        me.patch("/apps/live", json!({"status": "inactive"}))
            .await
            .0,
        200
    );
    assert_eq!(get().await, (503, "app_inactive".into()));
    assert_eq!(
        me.patch("/apps/live", json!({"status": "active"})).await.0,
        200
    );
    assert_eq!(get().await, (200, String::new()));
    // Stopped: 503 from the moment the stop is accepted.
    assert_eq!(
        me.post(&format!("/workspaces/{ws_id}/stop"), json!({}))
            .await
            .0,
        202
    );
    assert_eq!(get().await, (503, "workspace_not_running".into()));
    me.wait_status(&ws_id, "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(get().await, (503, "workspace_not_running".into()));
    // Deleted with its workspace: 404 once the workspace is gone.
    assert_eq!(me.delete(&format!("/workspaces/{ws_id}")).await.0, 202);
    me.wait_gone(&ws_id, Duration::from_secs(10)).await;
    assert_eq!(get().await, (404, "app_not_found".into()));
}
