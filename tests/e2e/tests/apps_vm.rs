//! Apps end to end with a real VM: a Python server inside a Debian guest under QEMU, published
//! through the edge of `rigboxd up --vmm qemu` (plain HTTP here: the daemon runs `--tls off`),
//! reached with real HTTP clients for each visibility and caller, a WebSocket round trip, a
//! large upload, and the states a user can run into.
//!
//! Same conditions as the other VM suites (`RIGBOX_VM_TESTS=1`, set by `scripts/test`).

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{enabled, ip_of, Vms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP_SERVER: &str = include_str!("support/app_server.py");

fn code(v: &Value) -> String {
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_reach_a_real_vm_through_the_edge() {
    if !enabled() {
        return;
    }
    let vms = Vms::start().await;
    let id = vms.create("apps").await;
    let ws = vms.start_ws(&id).await;
    let ip = ip_of(&ws);
    vms.run(
        &ip,
        &format!(
            "cat > /tmp/app.py <<'PYEOF'\n{APP_SERVER}\nPYEOF\n(setsid python3 /tmp/app.py 8000 >/tmp/app.log 2>&1 &)"
        ),
    );
    let edge: SocketAddr = vms
        .daemon
        .api_url()
        .trim_start_matches("http://")
        .parse()
        .expect("edge address");
    let port = edge.port();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    for app in ["hello", "secret", "friends", "closed"] {
        b = b.resolve(&format!("{app}.rigbox.localhost"), edge);
    }
    let c = b.build().expect("client");
    let url = |app: &str, path: &str| format!("http://{app}.rigbox.localhost:{port}{path}");
    let key = vms.token.clone();
    let other = vms
        .daemon
        .create_user("other@example.com", rigbox_testkit::PASSWORD)
        .await
        .expect("other user");
    let friend = vms
        .daemon
        .create_user("friend@example.com", rigbox_testkit::PASSWORD)
        .await
        .expect("friend");

    // A public app: the page from inside the VM.
    let create = |name: &str, port: u16, extra: Value| {
        let mut body = json!({"workspace_id": id, "name": name, "port": port});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let (s, app) = vms
        .api
        .post(
            "/apps",
            create("hello", 8000, json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201, "{app}");
    assert_eq!(app["url"], url("hello", "").as_str());
    let start = Instant::now();
    let body = loop {
        let r = c.get(url("hello", "/hello")).send().await.expect("send");
        if r.status().as_u16() == 200 {
            break r.text().await.expect("text");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the app never served: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(body, "hello from the vm\n");

    // A private app on the same port: who gets in, and what the app learns.
    let (s, _) = vms
        .api
        .post("/apps", create("secret", 8000, json!({})))
        .await;
    assert_eq!(s, 201);
    let r = c.get(url("secret", "/headers")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(code(&r.json().await.expect("json")), "app_auth_required");
    let r = c
        .get(url("secret", "/headers"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .expect("location")
        .contains("/app-auth?return_to=http%3A%2F%2Fsecret.rigbox.localhost"));
    let r = c
        .get(url("secret", "/headers"))
        .header("x-rigbox-key", &key)
        .header("x-rigbox-user-email", "forged@example.com")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let h: Value = r.json().await.expect("json");
    assert_eq!(h["x-rigbox-user-email"], "vm@example.com");
    assert!(h["x-rigbox-user-id"]
        .as_str()
        .is_some_and(|u| u.starts_with("usr-")));
    assert_eq!(
        h["host"],
        format!("secret.rigbox.localhost:{port}").as_str()
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.get("x-rigbox-key").is_none(), "{h}");
    let r = c
        .get(url("secret", "/headers"))
        .header("x-rigbox-key", &other)
        .send()
        .await
        .expect("send");
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.expect("json"))),
        (403, "app_forbidden".into())
    );

    // Privileged: the owner plus the listed (verified) emails.
    let (s, _) = vms
        .api
        .post(
            "/apps",
            create(
                "friends",
                8000,
                json!({"visibility": "privileged", "allowed_emails": ["Friend@Example.com"]}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    for (k, want) in [(&friend, 200), (&key, 200), (&other, 403)] {
        let r = c
            .get(url("friends", "/hello"))
            .header("x-rigbox-key", k)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), want);
    }

    // In a real browser: the private app sends it to the console, the user signs in and lands
    // on the app page (screenshot kept in target/test-artifacts/).
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("private_app_login.png");
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (scripts/test does)"
    );
    let out = tokio::process::Command::new("node")
        .current_dir(&browser_dir)
        .arg("app_login.mjs")
        .args([
            &url("secret", "/hello"),
            "vm@example.com",
            rigbox_testkit::PASSWORD,
            "hello from the vm",
        ])
        .arg(&shot)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "browser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shot.exists(), "screenshot saved");

    // A 5 MiB upload streams through.
    let r = c
        .post(url("hello", "/upload"))
        .body(vec![7u8; 5 << 20])
        .send()
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json")["received"], 5 << 20);

    // A WebSocket round trip (RFC 6455 handshake and one masked text frame).
    let mut s = tokio::net::TcpStream::connect(edge).await.expect("connect");
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: hello.rigbox.localhost:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("handshake");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the VM's Sec-WebSocket-Accept comes through: {head}"
    );
    let mask = [1u8, 2, 3, 4];
    let payload = b"hi";
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("frame");
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    assert_eq!(&buf[..n], b"\x81\x08echo: hi");

    // Nothing on the port: 502. A stopped workspace: 503.
    let (s, _) = vms
        .api
        .post(
            "/apps",
            create("closed", 8999, json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201);
    let r = c.get(url("closed", "/")).send().await.expect("send");
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.expect("json"))),
        (502, "upstream_unreachable".into())
    );
    // The health probe runs from the node, whatever the visibility.
    let (s, h) = vms.api.get("/apps/secret/health").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        (
            &h["live"],
            &h["port_open"],
            &h["http_status"],
            &h["workspace_status"],
            &h["service_status"]
        ),
        (
            &json!(true),
            &json!(true),
            &json!(404),
            &json!("running"),
            &json!("unmanaged")
        ),
        "the app answers / with 404, which is alive: {h}"
    );
    assert!(h["latency_ms"].is_u64(), "{h}");
    let (_, h) = vms.api.get("/apps/closed/health").await;
    assert_eq!(
        (&h["live"], &h["port_open"], &h["http_status"]),
        (&json!(false), &json!(false), &Value::Null)
    );

    vms.stop_ws(&id).await;
    let (_, h) = vms.api.get("/apps/hello/health").await;
    assert_eq!(
        (&h["live"], &h["workspace_status"]),
        (&json!(false), &json!("stopped"))
    );
    let r = c.get(url("hello", "/hello")).send().await.expect("send");
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.expect("json"))),
        (503, "workspace_not_running".into())
    );
}
