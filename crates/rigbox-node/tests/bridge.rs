//! The bridge service over real TCP on loopback: identity by source address only (IPv4 and
//! IPv4-mapped), credential headers dropped before the upstream, the agent's long poll and
//! report, and the error envelope for everything that goes wrong.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use rigbox_node::bridge::{self, BridgeState};
use rigbox_node::guest::GuestChannel;
use rigbox_types::agent::{AgentConfig, BridgeCaller, WorkspaceMeta, BRIDGE_URL};
use rigbox_types::node::{ControlLink, DesiredVm, GuestConfig, LinkError, Report};
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(ws: &WorkspaceId, revision: i64) -> GuestConfig {
    AgentConfig {
        revision,
        workspace: WorkspaceMeta {
            schema_version: 1,
            workspace_id: ws.to_string(),
            name: "demo".into(),
            owner_email: "dev@example.com".into(),
            region: "local".into(),
            node_id: "node-7".into(),
            bridge_url: BRIDGE_URL.into(),
            created_at: "2026-05-01T10:00:00Z".into(),
        },
        hostname: "demo".into(),
        authorized_keys: vec![],
        gateway_authorized_keys: vec![],
        env: vec![],
        proxy_env: vec![],
        volumes: vec![],
        requests: vec![],
    }
}

/// A control plane that knows one workspace's guest config, counts fetches and can be down.
struct FakeLink {
    config: GuestConfig,
    fetches: AtomicUsize,
    down: AtomicBool,
}

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
        if self.down.load(Ordering::SeqCst) {
            return Err(LinkError::Unavailable("test says so".into()));
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(self.config.clone())
    }
}

/// What reached a service behind the bridge: the caller and the credential headers.
fn echo(served_by: &str, c: &BridgeCaller, headers: &axum::http::HeaderMap) -> Json<Value> {
    Json(json!({
        "served_by": served_by,
        "workspace_id": c.workspace_id.as_str(),
        "node_id": c.node_id,
        "ip": c.ip.to_string(),
        "authorization": headers.contains_key("authorization"),
        "cookie": headers.contains_key("cookie"),
        "proxy_authorization": headers.contains_key("proxy-authorization"),
    }))
}

/// An upstream router that shows what reached it.
fn upstream() -> Router {
    Router::new().route(
        "/rig/v1/echo",
        get(
            |Extension(c): Extension<BridgeCaller>, headers: axum::http::HeaderMap| async move {
                echo("router", &c, &headers)
            },
        ),
    )
}

/// A direct service claiming `/direct/*` that shows what reached it.
fn direct() -> bridge::Direct {
    bridge::Direct {
        claims: |path| path.starts_with("/direct/"),
        call: Arc::new(|c, req| {
            Box::pin(async move {
                if req.uri().path() == "/direct/thread" {
                    // Which thread serves the connection.
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    return name.into_response();
                }
                echo("direct", &c, req.headers()).into_response()
            })
        }),
    }
}

struct Bridge {
    url: String,
    ws: WorkspaceId,
    guest: Arc<GuestChannel>,
    link: Arc<FakeLink>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bridge on `bind` where only 127.0.0.1 holds a lease.
async fn bridge_on(bind: &str, with_upstream: bool) -> Bridge {
    let ws = WorkspaceId::generate();
    let guest = Arc::new(GuestChannel::default());
    let link = Arc::new(FakeLink {
        config: config(&ws, 7),
        fetches: AtomicUsize::new(0),
        down: AtomicBool::new(false),
    });
    let owner = ws.clone();
    let state = BridgeState {
        node_id: "node-7".into(),
        leases: Arc::new(move |ip| (ip == Ipv4Addr::LOCALHOST).then(|| owner.clone())),
        guest: guest.clone(),
        link: link.clone(),
        direct: Some(direct()),
        upstream: with_upstream.then(upstream),
    };
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(bridge::serve(listener, state));
    Bridge {
        url: format!("http://127.0.0.1:{port}"),
        ws,
        guest,
        link,
        task,
    }
}

async fn bridge() -> Bridge {
    bridge_on("127.0.0.1:0", true).await
}

/// A client whose connections come from `ip`.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("client")
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

/// The envelope with a code, a message and `details.request_id` matching `X-Request-Id`.
async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("X-Request-Id");
    let e = json_of(r).await;
    assert_eq!(e["error"]["code"], code, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(e["error"]["details"]["request_id"], id.as_str());
    e
}

#[tokio::test]
async fn callers_are_known_by_their_address_only() {
    let b = bridge().await;
    let http = client_from(Ipv4Addr::LOCALHOST);
    // Credentials and claimed identities change nothing and never reach the router, nor the
    // direct service, which takes the paths it claims ahead of the router.
    for (path, served_by) in [("/rig/v1/echo", "router"), ("/direct/echo", "direct")] {
        let r = http
            .get(format!("{}{path}", b.url))
            .header("Authorization", "Bearer rb_someone-elses-key")
            .header("Proxy-Authorization", "Basic eDp5")
            .header("Cookie", "rigbox_session=rbs_x")
            .header("X-Workspace-Id", "ws-zzzzzzzz")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-request-id"));
        let v = json_of(r).await;
        assert_eq!(v["served_by"], served_by);
        assert_eq!(v["workspace_id"], b.ws.as_str());
        assert_eq!(v["node_id"], "node-7");
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["authorization"], false);
        assert_eq!(v["cookie"], false);
        assert_eq!(v["proxy_authorization"], false);
    }

    // Another address holds no lease: 403 whatever it sends, on every path.
    let stranger = client_from(Ipv4Addr::new(127, 0, 0, 2));
    for path in ["/rig/v1/echo", "/rig/v1/agent/config", "/direct/echo"] {
        let r = stranger
            .get(format!("{}{path}", b.url))
            .header("Authorization", "Bearer rb_a-valid-looking-key")
            .send()
            .await
            .expect("get");
        assert_error(r, 403, "unknown_workspace").await;
    }
    // The AI proxy's paths answer in the gateway envelope.
    let r = stranger
        .post(format!("{}/v1/chat/completions", b.url))
        .header("Authorization", "Bearer rb_a-valid-looking-key")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let e = json_of(r).await;
    assert_eq!(e["error"]["code"], "unknown_workspace", "{e}");
    assert_eq!(e["error"]["type"], "rigbox_gateway_error", "{e}");
    let r = stranger
        .post(format!("{}/rig/v1/agent/report", b.url))
        .json(&json!({"revision": 7, "boot_id": "b", "ready": true}))
        .send()
        .await
        .expect("post");
    assert_error(r, 403, "unknown_workspace").await;
    assert!(b.guest.ack(&b.ws).is_none(), "nobody's report is recorded");

    // Unknown routes and wrong methods: 404 in the envelope.
    let r = http
        .get(format!("{}/rig/v1/nope", b.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{}/rig/v1/agent/config", b.url))
        .send()
        .await
        .expect("post");
    assert_error(r, 404, "not_found").await;
}

/// The bridge on threads of its own answers like the one in the caller's runtime, and once
/// stopped it has closed its socket: the address can be bound again at once (a restart).
#[tokio::test]
async fn bridge_threads_serve_and_stop_closing_their_socket() {
    let b = bridge().await;
    b.task.abort();
    let state = BridgeState {
        node_id: "node-7".into(),
        leases: {
            let owner = b.ws.clone();
            Arc::new(move |ip| (ip == Ipv4Addr::LOCALHOST).then(|| owner.clone()))
        },
        guest: b.guest.clone(),
        link: b.link.clone(),
        direct: Some(direct()),
        upstream: Some(upstream()),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let threads = bridge::serve_threads(listener, state, 2).expect("threads");
    for i in 0..8 {
        let path = if i % 2 == 0 {
            "/direct/echo"
        } else {
            "/rig/v1/echo"
        };
        // A new connection each time: both threads serve.
        let r = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(json_of(r).await["workspace_id"], b.ws.as_str());
    }
    // Connections open together are spread over the threads: each goes to the one serving the
    // fewest.
    let clients: Vec<reqwest::Client> = (0..4).map(|_| reqwest::Client::new()).collect();
    let mut served = Vec::new();
    for c in &clients {
        let r = c
            .get(format!("http://{addr}/direct/thread"))
            .send()
            .await
            .expect("get");
        served.push(r.text().await.expect("body"));
    }
    served.sort();
    assert_eq!(
        served,
        [
            "rigbox-bridge-0",
            "rigbox-bridge-0",
            "rigbox-bridge-1",
            "rigbox-bridge-1"
        ]
    );
    let stranger = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let r = stranger
        .get(format!("http://{addr}/direct/echo"))
        .send()
        .await
        .expect("get");
    assert_error(r, 403, "unknown_workspace").await;
    threads.stop().await;
    std::net::TcpListener::bind(addr).expect("the address is free again");
}

#[tokio::test]
async fn ipv4_mapped_peers_of_a_dual_stack_socket_are_ipv4() {
    let b = bridge_on("[::]:0", false).await;
    let r = client_from(Ipv4Addr::LOCALHOST)
        .get(format!("{}/rig/v1/agent/config?revision=0&wait=0", b.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "::ffff:127.0.0.1 holds 127.0.0.1's lease");
    // Without an upstream, the rest is 404 in the envelope.
    let r = client_from(Ipv4Addr::LOCALHOST)
        .get(format!("{}/rig/v1/whoami", b.url))
        .send()
        .await
        .expect("get");
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn agent_config_long_poll() {
    let b = bridge().await;
    let http = client_from(Ipv4Addr::LOCALHOST);
    let url =
        |rev: i64, wait: &str| format!("{}/rig/v1/agent/config?revision={rev}&wait={wait}", b.url);

    // Nothing pushed: the bridge fetches the config from the control plane, once.
    let r = http.get(url(0, "30")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let c: AgentConfig = r.json().await.expect("config");
    assert_eq!(c.revision, 7);
    assert_eq!(c.workspace.workspace_id, b.ws.as_str());
    assert_eq!(b.guest.current(&b.ws).map(|c| c.revision), Some(7));

    // Unchanged: 204 after the wait, without asking the control plane again.
    let t = Instant::now();
    let r = http.get(url(7, "1")).send().await.expect("get");
    assert_eq!(r.status(), 204);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    let r = http.get(url(7, "0")).send().await.expect("get");
    assert_eq!(r.status(), 204);
    assert_eq!(b.link.fetches.load(Ordering::SeqCst), 1);

    // A push answers a pending poll at once.
    let poll = tokio::spawn({
        let (http, url) = (http.clone(), url(7, "30"));
        async move { http.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    let t = Instant::now();
    b.guest.push(&b.ws, config(&b.ws, 8));
    let r = poll.await.expect("join").expect("poll");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<AgentConfig>().await.expect("cfg").revision, 8);

    // A new boot (the driver forgets the guest): the next poll fetches again.
    b.guest.forget(&b.ws);
    let r = http.get(url(8, "0")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(b.link.fetches.load(Ordering::SeqCst), 2);

    // Bad parameters.
    let e = assert_error(
        http.get(url(7, "31")).send().await.expect("get"),
        400,
        "validation_failed",
    )
    .await;
    assert!(e["error"]["details"]["fields"]["wait"].is_string(), "{e}");
    assert_error(
        http.get(url(7, "-1")).send().await.expect("get"),
        400,
        "validation_failed",
    )
    .await;
    assert_error(
        http.get(format!("{}/rig/v1/agent/config?revision=x", b.url))
            .send()
            .await
            .expect("get"),
        400,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn agent_config_when_the_control_plane_is_down() {
    let b = bridge().await;
    b.link.down.store(true, Ordering::SeqCst);
    let r = client_from(Ipv4Addr::LOCALHOST)
        .get(format!("{}/rig/v1/agent/config?revision=0&wait=5", b.url))
        .send()
        .await
        .expect("get");
    assert_error(r, 503, "node_unavailable").await;
    assert!(b.guest.current(&b.ws).is_none());
}

#[tokio::test]
async fn agent_reports_reach_the_channel() {
    let b = bridge().await;
    let http = client_from(Ipv4Addr::LOCALHOST);
    let report = |body: Value| {
        http.post(format!("{}/rig/v1/agent/report", b.url))
            .json(&body)
            .send()
    };
    // The driver waits for a confirmation while the agent reports.
    let waiter = tokio::spawn({
        let (guest, ws) = (b.guest.clone(), b.ws.clone());
        async move { guest.wait_ack(&ws, 9, Duration::from_secs(10)).await }
    });
    let r = report(json!({
        "revision": 9,
        "boot_id": "boot-a",
        "ready": true,
        "authorized_keys": [
            {"fingerprint": "SHA256:abc", "key_type": "ssh-ed25519", "comment": "dev@laptop"}
        ]
    }))
    .await
    .expect("post");
    assert_eq!(r.status(), 204);
    let ack = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("in time")
        .expect("join")
        .expect("acked");
    assert_eq!(ack.revision, 9);
    assert_eq!(ack.ssh_keys[0].fingerprint, "SHA256:abc");
    assert_eq!(b.guest.ready_boot(&b.ws).as_deref(), Some("boot-a"));

    // Malformed JSON, wrong types and unknown fields are refused and change nothing.
    let r = http
        .post(format!("{}/rig/v1/agent/report", b.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_error(r, 400, "validation_failed").await;
    for bad in [
        json!({"revision": "10", "boot_id": "boot-b", "ready": true}),
        json!({"revision": 10, "boot_id": "boot-b", "ready": true, "workspace_id": "ws-x"}),
        json!({"boot_id": "boot-b", "ready": true}),
    ] {
        assert_error(report(bad).await.expect("post"), 400, "validation_failed").await;
    }
    assert_eq!(b.guest.ack(&b.ws).map(|a| a.revision), Some(9));
    assert_eq!(b.guest.ready_boot(&b.ws).as_deref(), Some("boot-a"));
}
