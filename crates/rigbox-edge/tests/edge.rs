//! The edge over real sockets: an HTTP client (reqwest, also over TLS with the local CA) in
//! front, a real HTTP server on loopback behind, and a table for the directory.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rigbox_edge::{AppRoute, Directory, Edge, EdgeConfig, EdgeUser, NewSession, PlatformService};
use rigbox_types::api::{AppStatus, AppVisibility};
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BASE: &str = "rigbox.localhost";

/// The backend "in the VM": echoes what it received; `/ws` upgrades and echoes bytes;
/// `/slow` never answers in time.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    if req.uri().path() == "/ws" {
                        let up = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(io) = up.await {
                                let mut io = TokioIo::new(io);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let r = Response::builder()
                            .status(101)
                            .header("upgrade", "echo")
                            .header("connection", "upgrade")
                            .body(Full::new(Bytes::new()))
                            .expect("101");
                        return Ok::<_, hyper::Error>(r);
                    }
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    if req.uri().path() == "/big" {
                        let body = Bytes::from(vec![b'x'; 4 << 20]);
                        return Ok(Response::new(Full::new(body)));
                    }
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or(""))))
                        .collect();
                    let method = req.method().to_string();
                    let path = req.uri().to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    let doc = json!({"method": method, "path": path, "headers": headers, "body_len": body.len()});
                    Ok(Response::new(Full::new(Bytes::from(doc.to_string()))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A backend that speaks only HTTP/2 with prior knowledge (like a gRPC server).
async fn h2c_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let doc = json!({
                        "version": format!("{:?}", req.version()),
                        "authority": req.uri().authority().map(|a| a.to_string()),
                        "path": req.uri().path(),
                    });
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(doc.to_string()))))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    addr
}

/// A backend that answers the first request of each connection (keep-alive), then closes the
/// connection when the next request arrives, without answering: a server that dropped an idle
/// connection just as the edge reused it.
async fn one_shot_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\none-shot";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                // The next request is read and dropped with the connection.
                let _ = s.read(&mut chunk).await;
            });
        }
    });
    addr
}

struct Table {
    apps: Mutex<HashMap<String, AppRoute>>,
    /// Bumped after every change of `apps`, like the control plane's route generation.
    generation: AtomicU64,
    /// Route reads, to tell the edge's memory from the table.
    reads: AtomicUsize,
    /// TCP connections opened to the backends.
    connects: AtomicUsize,
    keys: HashMap<String, EdgeUser>,
    backend: SocketAddr,
    h2c_backend: SocketAddr,
    one_shot_backend: SocketAddr,
}

#[async_trait::async_trait]
impl Directory for Table {
    fn route_generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::SeqCst))
    }
    async fn app(&self, name: &str) -> Result<Option<AppRoute>, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.apps.lock().expect("lock").get(name).cloned())
    }
    async fn key_user(&self, key: &str) -> Result<Option<EdgeUser>, String> {
        Ok(self.keys.get(key).cloned())
    }
    async fn session_user(&self, token: &str, _host: &str) -> Result<Option<EdgeUser>, String> {
        Ok(self.keys.get(token).cloned())
    }
    async fn redeem(&self, code: &str, host: &str) -> Result<Option<NewSession>, String> {
        Ok(
            (code == "good-code" && host == format!("mine.{BASE}")).then(|| NewSession {
                token: "rb_owner".into(),
                path: "/back?to=1".into(),
                max_age_secs: 43200,
            }),
        )
    }
    async fn end_session(&self, _token: &str) -> Result<(), String> {
        Ok(())
    }
    async fn connect(&self, _ws: &WorkspaceId, port: u16) -> std::io::Result<TcpStream> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        if port == 1 {
            return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        }
        if port == 2 {
            return TcpStream::connect(self.h2c_backend).await;
        }
        if port == 3 {
            return TcpStream::connect(self.one_shot_backend).await;
        }
        TcpStream::connect(self.backend).await
    }
}

impl Table {
    /// Changes one route (None deletes it), then bumps the generation, as a commit would.
    fn set(&self, name: &str, route: Option<AppRoute>) {
        {
            let mut apps = self.apps.lock().expect("lock");
            match route {
                Some(r) => apps.insert(name.to_owned(), r),
                None => apps.remove(name),
            };
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn user(id: &str, email: &str, verified: bool) -> EdgeUser {
    EdgeUser {
        id: id.into(),
        email: email.into(),
        email_verified: verified,
    }
}

fn route(name: &str, visibility: AppVisibility) -> AppRoute {
    AppRoute {
        app_id: format!("app-{:0>8}", name.len()),
        name: name.into(),
        workspace_id: WorkspaceId::parse("ws-abcdefgh").expect("id"),
        workspace_running: true,
        workspace_generation: 1,
        status: AppStatus::Active,
        port: 8000,
        visibility,
        allowed_emails: vec!["friend@example.com".into(), "unverified@example.com".into()],
        owner_id: "usr-owner000".into(),
        h2c: false,
    }
}

struct Env {
    table: Arc<Table>,
    addr: SocketAddr,
    _tx: tokio::sync::watch::Sender<bool>,
}

impl Env {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        Self::start_with(tls, |_| {}).await
    }

    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> Self {
        let backend = backend().await;
        let mut apps = HashMap::new();
        for (n, v) in [
            ("pub", AppVisibility::Public),
            ("mine", AppVisibility::Private),
            ("shared", AppVisibility::Privileged),
        ] {
            apps.insert(n.to_owned(), route(n, v));
        }
        let mut off = route("off", AppVisibility::Public);
        off.status = AppStatus::Inactive;
        apps.insert("off".into(), off);
        let mut stopped = route("stopped", AppVisibility::Public);
        stopped.workspace_running = false;
        apps.insert("stopped".into(), stopped);
        let mut closed = route("closed", AppVisibility::Public);
        closed.port = 1;
        apps.insert("closed".into(), closed);
        let keys = [
            ("rb_owner", user("usr-owner000", "owner@example.com", true)),
            (
                "rb_friend",
                user("usr-friend00", "Friend@Example.com", true),
            ),
            (
                "rb_unverified",
                user("usr-unverif0", "unverified@example.com", false),
            ),
            (
                "rb_stranger",
                user("usr-strange0", "stranger@example.com", true),
            ),
        ]
        .into_iter()
        .map(|(k, u)| (k.to_owned(), u))
        .collect();
        let mut grpc = route("grpc", AppVisibility::Public);
        grpc.port = 2;
        grpc.h2c = true;
        apps.insert("grpc".into(), grpc);
        let table = Arc::new(Table {
            apps: Mutex::new(apps),
            generation: AtomicU64::new(0),
            reads: AtomicUsize::new(0),
            connects: AtomicUsize::new(0),
            keys,
            backend,
            h2c_backend: h2c_backend().await,
            one_shot_backend: one_shot_backend().await,
        });
        let platform: PlatformService = Arc::new(|_req, _addr| {
            Box::pin(async { Response::new(rigbox_edge::full_body("the console")) })
        });
        let mut cfg = EdgeConfig::new(BASE, "https://rigbox.localhost:8443");
        cfg.header_timeout = Duration::from_millis(500);
        cfg.max_body_bytes = 1 << 20;
        tweak(&mut cfg);
        let edge = Edge::new(cfg, table.clone(), platform);
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(edge.serve(l, tls, rx));
        Self {
            table,
            addr,
            _tx: tx,
        }
    }

    fn client(&self, scheme: &str, ca: Option<&[u8]>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        for h in [
            "pub", "mine", "shared", "off", "stopped", "closed", "nope", "a.b", "grpc",
        ] {
            b = b.resolve(&format!("{h}.{BASE}"), self.addr);
        }
        b = b.resolve(BASE, self.addr);
        if let Some(pem) = ca {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("pem"));
        }
        let _ = scheme;
        b.build().expect("client")
    }

    fn url(&self, scheme: &str, app: &str, path: &str) -> String {
        let host = if app.is_empty() {
            BASE.to_owned()
        } else {
            format!("{app}.{BASE}")
        };
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn visibility_forwarding_and_errors_over_http() {
    let env = Env::start(None).await;
    let c = env.client("http", None);
    let get = |app: &str, path: &str| c.get(env.url("http", app, path));

    // Public: forwarded with the forwarding headers, the original Host, credentials stripped.
    let (s, echo) = json_of(
        get("pub", "/a/b?c=1")
            .header("x-rigbox-key", "rb_owner")
            .header("x-rigbox-user-id", "forged")
            .header("x-forwarded-for", "10.9.9.9")
            .header("cookie", "rigbox_app_session=s; theme=dark")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(s, 200, "{echo}");
    assert_eq!(echo["path"], "/a/b?c=1");
    let h = &echo["headers"];
    assert_eq!(
        h["host"],
        format!("pub.{BASE}:{}", env.addr.port()).as_str()
    );
    assert_eq!(h["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("pub.{BASE}").as_str());
    assert_eq!(h["cookie"], "theme=dark");
    assert!(
        h.get("x-rigbox-key").is_none() && h.get("x-rigbox-user-id").is_none(),
        "{h}"
    );

    // Private: API clients get 403 app_auth_required, browsers go to the console.
    let (s, e) = json_of(get("mine", "/").send().await.expect("send")).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("app_auth_required"))
    );
    let r = get("mine", "/page?x=1")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        loc,
        format!(
            "https://rigbox.localhost:8443/app-auth?return_to=http%3A%2F%2Fmine.{BASE}%3A{}%2Fpage%3Fx%3D1",
            env.addr.port()
        )
    );
    // The owner's key passes and the app learns who it is; anyone else's is 403.
    let (s, echo) = json_of(
        get("mine", "/")
            .header("x-rigbox-key", "rb_owner")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-rigbox-user-id"], "usr-owner000");
    assert_eq!(echo["headers"]["x-rigbox-user-email"], "owner@example.com");
    for key in ["rb_friend", "rb_nonsense"] {
        let (s, e) = json_of(
            get("mine", "/")
                .header("x-rigbox-key", key)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (403, Some("app_forbidden")),
            "{key}"
        );
    }
    // Privileged: owner and verified listed emails (compared lowercased).
    for (key, want) in [
        ("rb_owner", 200),
        ("rb_friend", 200),
        ("rb_unverified", 403),
        ("rb_stranger", 403),
    ] {
        let r = get("shared", "/")
            .header("x-rigbox-key", key)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), want, "{key}");
    }
    // CORS preflight goes through without credentials.
    let r = c
        .request(reqwest::Method::OPTIONS, env.url("http", "mine", "/api"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);

    // States after the access check; unknown hosts; the platform on the base domain.
    let code = |r: (u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or("").to_owned());
    assert_eq!(
        code(json_of(get("off", "/").send().await.expect("send")).await),
        (503, "app_inactive".into())
    );
    assert_eq!(
        code(json_of(get("stopped", "/").send().await.expect("send")).await),
        (503, "workspace_not_running".into())
    );
    assert_eq!(
        code(json_of(get("closed", "/").send().await.expect("send")).await),
        (502, "upstream_unreachable".into())
    );
    assert_eq!(
        code(json_of(get("pub", "/slow").send().await.expect("send")).await),
        (504, "upstream_timeout".into())
    );
    assert_eq!(
        code(json_of(get("nope", "/").send().await.expect("send")).await),
        (404, "app_not_found".into())
    );
    assert_eq!(
        code(json_of(get("a.b", "/").send().await.expect("send")).await),
        (404, "app_not_found".into())
    );
    let (s, _) = json_of(
        get("mine", "/.rigbox/anything")
            .header("x-rigbox-key", "rb_owner")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(s, 404, "the edge's own paths are never forwarded");
    // The login callback: a good code sets the host-only cookie and goes to the stored path;
    // a bad one, or one for another host, is refused.
    let r = get("mine", "/.rigbox/auth/callback?code=good-code")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "/back?to=1");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        set.starts_with(
            "rigbox_app_session=rb_owner; HttpOnly; SameSite=Lax; Path=/; Max-Age=43200"
        ),
        "{set}"
    );
    assert!(!set.contains("Domain"), "host-only: {set}");
    assert_eq!(
        get("mine", "/.rigbox/auth/callback?code=bad")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        get("shared", "/.rigbox/auth/callback?code=good-code")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        403
    );
    // The cookie is a credential: the owner's passes, a stranger's is 403 with a page naming them.
    let (s, echo) = json_of(
        get("mine", "/")
            .header("cookie", "rigbox_app_session=rb_owner")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        echo["headers"].get("cookie").is_none(),
        "the app cookie never reaches the app"
    );
    let r = get("mine", "/")
        .header("cookie", "rigbox_app_session=rb_stranger")
        .header("accept", "text/html")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    let page = r.text().await.expect("text");
    assert!(
        page.contains("stranger@example.com") && page.contains("/.rigbox/auth/logout"),
        "{page}"
    );
    // An unknown cookie counts as none.
    let r = get("mine", "/")
        .header("cookie", "rigbox_app_session=expired")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    // Logout clears the cookie and offers the console's sign-in form.
    let r = get("mine", "/.rigbox/auth/logout")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .expect("loc")
        .ends_with("&prompt=login"));
    assert!(r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .contains("Max-Age=0"));
    let r = get("", "/").send().await.expect("send");
    assert_eq!(r.text().await.expect("text"), "the console");
    // Bodies over the limit: 413 before anything is sent upstream.
    let r = c
        .post(env.url("http", "pub", "/upload"))
        .body(vec![0u8; (1 << 20) + 1])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 413);
    let r = c
        .post(env.url("http", "pub", "/upload"))
        .body(vec![0u8; 1000])
        .send()
        .await
        .expect("send");
    assert_eq!(json_of(r).await.1["body_len"], 1000);

    // An h2c app gets HTTP/2 with prior knowledge, the original host as :authority.
    let (s, echo) = json_of(get("grpc", "/svc/Method").send().await.expect("send")).await;
    assert_eq!(s, 200, "{echo}");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["path"], "/svc/Method");
    assert_eq!(
        echo["authority"],
        format!("grpc.{BASE}:{}", env.addr.port()).as_str()
    );

    // Routes change live: a new app serves on the next request, a deleted one stops.
    env.table
        .set("nope", Some(route("nope", AppVisibility::Public)));
    assert_eq!(
        get("nope", "/")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    env.table.set("pub", None);
    assert_eq!(
        get("pub", "/")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        404
    );
}

#[tokio::test]
async fn routes_are_kept_in_memory_and_every_change_serves_the_next_request() {
    let env = Env::start(None).await;
    let c = env.client("http", None);
    let status = |app: &str| {
        let r = c.get(env.url("http", app, "/")).send();
        async move { r.await.expect("send").status().as_u16() }
    };
    for _ in 0..20 {
        assert_eq!(status("pub").await, 200);
    }
    assert_eq!(
        env.table.reads.load(Ordering::SeqCst),
        1,
        "one route read for twenty requests"
    );
    // Every kind of change is seen by the very next request.
    let mut r = route("pub", AppVisibility::Private);
    env.table.set("pub", Some(r.clone()));
    assert_eq!(status("pub").await, 403);
    r.visibility = AppVisibility::Public;
    r.status = AppStatus::Inactive;
    env.table.set("pub", Some(r.clone()));
    assert_eq!(status("pub").await, 503);
    r.status = AppStatus::Active;
    r.workspace_running = false;
    env.table.set("pub", Some(r.clone()));
    assert_eq!(status("pub").await, 503);
    r.workspace_running = true;
    r.port = 1;
    env.table.set("pub", Some(r.clone()));
    assert_eq!(status("pub").await, 502);
    r.port = 8000;
    env.table.set("pub", Some(r.clone()));
    assert_eq!(status("pub").await, 200);
    // Renamed: the old name is gone at once, the new one serves.
    env.table.set("pub", None);
    env.table
        .set("nope", Some(route("nope", AppVisibility::Public)));
    assert_eq!(status("pub").await, 404);
    assert_eq!(status("nope").await, 200);
    // Concurrent requests while routes change: each answer matches a state the route was in,
    // and after the last change every request sees it.
    let flips = async {
        for i in 0..50 {
            let mut r = route("nope", AppVisibility::Public);
            r.status = if i % 2 == 0 {
                AppStatus::Inactive
            } else {
                AppStatus::Active
            };
            env.table.set("nope", Some(r));
            tokio::task::yield_now().await;
        }
    };
    let load = async {
        for _ in 0..100 {
            let s = status("nope").await;
            assert!(s == 200 || s == 503, "{s}");
        }
    };
    tokio::join!(flips, load);
    let mut r = route("nope", AppVisibility::Public);
    r.status = AppStatus::Inactive;
    env.table.set("nope", Some(r));
    for _ in 0..5 {
        assert_eq!(status("nope").await, 503);
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_and_reused() {
    let env = Env::start(None).await;
    let c = env.client("http", None);
    let connects = || env.table.connects.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = c
            .get(env.url("http", "pub", "/"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().await.expect("body");
    }
    assert_eq!(
        connects(),
        1,
        "twenty requests in a row share one upstream connection"
    );
    // Concurrent requests open what they need; afterwards those connections are reused.
    let burst = || async {
        let all = (0..8).map(|_| async {
            let r = c
                .get(env.url("http", "pub", "/"))
                .send()
                .await
                .expect("send");
            r.bytes().await.expect("body");
        });
        futures::future::join_all(all).await;
    };
    // A large body and an upload stream through a kept connection, which still comes back.
    let before = connects();
    for _ in 0..3 {
        let r = c
            .get(env.url("http", "pub", "/big"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.bytes().await.expect("body").len(), 4 << 20);
        let r = c
            .post(env.url("http", "pub", "/up"))
            .body(vec![0u8; 512 << 10])
            .send()
            .await
            .expect("send");
        assert_eq!(json_of(r).await.1["body_len"], 512 << 10);
    }
    assert_eq!(connects(), before);
    // Bursts of eight concurrent requests: without reuse, forty connections.
    for _ in 0..5 {
        burst().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = connects();
    assert!(after <= 10, "five bursts of 8 used {after} connections");
    // A new run of the workspace gets new connections.
    let mut r = route("pub", AppVisibility::Public);
    r.workspace_generation = 2;
    env.table.set("pub", Some(r));
    let before = connects();
    let r = c
        .get(env.url("http", "pub", "/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(connects(), before + 1);
    // An upgraded connection never goes back: after two upgrades (the first on the idle
    // connection) the next request finds the pool empty.
    for _ in 0..2 {
        let mut s = TcpStream::connect(env.addr).await.expect("connect");
        s.write_all(
            format!("GET /ws HTTP/1.1\r\nHost: pub.{BASE}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    }
    let before = connects();
    let r = c
        .get(env.url("http", "pub", "/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(connects(), before + 1);
    // h2c: one shared HTTP/2 connection.
    let before = connects();
    for _ in 0..10 {
        let r = c
            .get(env.url("http", "grpc", "/svc/M"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().await.expect("body");
    }
    assert_eq!(connects(), before + 1);
}

#[tokio::test]
async fn a_kept_connection_the_app_closed_is_replaced_for_bodiless_requests() {
    let env = Env::start(None).await;
    let mut one = route("one", AppVisibility::Public);
    one.port = 3;
    env.table.set("one", Some(one));
    let c = reqwest::Client::builder()
        .no_proxy()
        .resolve(&format!("one.{BASE}"), env.addr)
        .build()
        .expect("client");
    let url = env.url("http", "one", "/");
    for i in 0..5 {
        let r = c.get(&url).send().await.expect("send");
        assert_eq!(r.status().as_u16(), 200, "GET {i}");
        assert_eq!(r.text().await.expect("body"), "one-shot");
        // The request after this one goes to the kept connection the app will drop.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request with a body cannot be sent twice: the client learns the app failed.
    let r = c.post(&url).body("x").send().await.expect("send");
    assert_eq!(r.status().as_u16(), 502);
}

#[tokio::test]
async fn http2_websockets_use_extended_connect() {
    let env = Env::start(None).await;
    let s = TcpStream::connect(env.addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    // The SETTINGS frame that allows extended CONNECT arrives with the first exchange.
    let warmup = Request::get(format!("http://pub.{BASE}/"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    tx.send_request(warmup).await.expect("warm-up");
    let mut req = Request::connect(format!("http://pub.{BASE}/ws"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = tx.send_request(req).await.expect("CONNECT");
    assert_eq!(resp.status().as_u16(), 200);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.expect("tunnel"));
    io.write_all(b"ping over http/2").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf[..n], b"ping over http/2");
    // The access check applies as to any request.
    let mut req = Request::connect(format!("http://mine.{BASE}/ws"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = tx.send_request(req).await.expect("CONNECT");
    assert_eq!(resp.status().as_u16(), 403);
}

#[tokio::test]
async fn idle_client_connections_and_websockets_are_closed() {
    let env = Env::start_with(None, |c| c.idle_timeout = Duration::from_millis(400)).await;
    // A connection that never sends anything.
    let mut quiet = TcpStream::connect(env.addr).await.expect("connect");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), quiet.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // A WebSocket in use stays open past the timeout, then closes once quiet.
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: pub.{BASE}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let n = s.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"tick").await.expect("still open");
        let n = s.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"tick");
    }
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// Raw HTTP/1.1 on a socket, for what a client library would not send.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_a_clear_4xx() {
    let env = Env::start(None).await;
    let a = env.addr;
    let status = |resp: &str| resp.split_whitespace().nth(1).unwrap_or("").to_owned();
    // Absolute-form URI naming another host than Host.
    let r = raw(
        a,
        &format!(
            "GET http://mine.{BASE}/ HTTP/1.1\r\nHost: pub.{BASE}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&r), "400", "{r}");
    // Two Host headers.
    let r = raw(
        a,
        &format!(
            "GET / HTTP/1.1\r\nHost: pub.{BASE}\r\nHost: mine.{BASE}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&r), "400", "{r}");
    // Garbage host, port suffix nonsense.
    for host in [
        "pub_.rigbox.localhost",
        "pub.rigbox.localhost:99999",
        "pub..rigbox.localhost",
    ] {
        let r = raw(
            a,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&r), "400", "{host}: {r}");
    }
    // Uppercase and a trailing dot name the same app.
    let r = raw(
        a,
        "GET / HTTP/1.1\r\nHost: PUB.Rigbox.Localhost.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    // Content-Length with Transfer-Encoding: the HTTP layer frames by Transfer-Encoding alone
    // (RFC 9112 §6.1), the app never sees the conflicting length, and the connection is closed
    // after the answer so nothing can be smuggled behind it.
    let r = raw(
        a,
        &format!("POST / HTTP/1.1\r\nHost: pub.{BASE}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: pub.{BASE}\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert!(
        !r.contains("content-length\":") && !r.contains("/smuggled"),
        "{r}"
    );
    assert_eq!(
        r.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closes: {r}"
    );
    // Oversized headers.
    let r = raw(
        a,
        &format!(
            "GET / HTTP/1.1\r\nHost: pub.{BASE}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(200_000)
        ),
    )
    .await;
    assert!(
        status(&r).starts_with('4') || r.is_empty(),
        "{}",
        &r[..r.len().min(200)]
    );
}

#[tokio::test]
async fn websocket_style_upgrades_are_spliced() {
    let env = Env::start(None).await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: pub.{BASE}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping through the edge").await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf[..n], b"ping through the edge");
}

#[tokio::test]
async fn tls_with_the_local_ca_http2_and_sni_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rigbox_edge::tls::LocalCa::load_or_create(dir.path(), BASE).expect("local CA");
    let pem = std::fs::read(&ca.ca_cert).expect("ca.pem");
    let acceptor = tokio_rustls::TlsAcceptor::from(rigbox_edge::tls::server_config(Arc::new(
        rigbox_edge::tls::Single(ca.leaf.clone()),
    )));
    let env = Env::start(Some(acceptor)).await;
    let c = env.client("https", Some(&pem));
    let r = c
        .get(env.url("https", "pub", "/x"))
        .send()
        .await
        .expect("TLS to an app host");
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    let (s, echo) = json_of(r).await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    let r = c
        .get(env.url("https", "", "/"))
        .send()
        .await
        .expect("TLS to the base domain");
    assert_eq!(r.text().await.expect("text"), "the console");
    // The CA survives a restart: the same ca.pem, a new leaf that still chains to it.
    let again = rigbox_edge::tls::LocalCa::load_or_create(dir.path(), BASE).expect("reload");
    assert_eq!(std::fs::read(&again.ca_cert).expect("ca.pem"), pem);
    // A client that does not trust the CA is refused.
    let untrusting = reqwest::Client::builder()
        .resolve(&format!("pub.{BASE}"), env.addr)
        .build()
        .expect("client");
    assert!(untrusting
        .get(env.url("https", "pub", "/"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn tls_sessions_resume_and_aes_128_is_preferred() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rigbox_edge::tls::LocalCa::load_or_create(dir.path(), BASE).expect("local CA");
    let acceptor = tokio_rustls::TlsAcceptor::from(rigbox_edge::tls::server_config(Arc::new(
        rigbox_edge::tls::Single(ca.leaf.clone()),
    )));
    let env = Env::start(Some(acceptor)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca.ca_cert).expect("ca.pem"))
        .expect("root");
    // A client that prefers AES-256 (like OpenSSL) and keeps its sessions.
    let provider = rustls::crypto::ring::default_provider();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(env.addr).await.expect("connect");
        let name = ServerName::try_from(format!("pub.{BASE}")).expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // One request, so the session tickets sent after the handshake are read.
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: pub.{BASE}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        kinds.push(conn.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}
