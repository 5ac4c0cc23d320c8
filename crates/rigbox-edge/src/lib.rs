//! The Rigbox edge (apps-and-routing.md §3–§7): every HTTP(S) request to the platform arrives
//! here. Requests for the base domain (or an IP, or `localhost`) go to the control plane's
//! console and API; requests for `<app>.<base-domain>` are checked against the app's
//! visibility and forwarded as HTTP/1.1 to the app's port in its VM through node ingress.
//!
//! Routes come from the control plane through [`Directory`] and are kept in memory until the
//! platform's route generation changes (`routes`), so an app created, renamed, deleted or
//! re-shared serves (or stops serving) from the next request on, without touching other
//! connections. TLS identities come from a [`tls::CertSource`].
//!
//! Private apps in a browser use the login round-trip of §5: the console's `/app-auth` mints a
//! one-time code, the edge's `/.rigbox/auth/callback` redeems it for a host-only
//! `rigbox_app_session` cookie, `/.rigbox/auth/logout` ends it.
//!
//! Upstream connections are kept open between requests (`pool`). WebSockets arrive as HTTP/1.1
//! upgrades or HTTP/2 extended CONNECTs and reach the app as HTTP/1.1 upgrades. A client
//! connection on which nothing moved for `idle_timeout` is closed (`idle`).

mod auth;
pub mod host;
mod idle;
mod pool;
mod proxy;
mod response;
mod routes;
pub mod tls;

pub use response::{full as full_body, EdgeBody};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rigbox_types::api::{AppStatus, AppVisibility};
use rigbox_types::WorkspaceId;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers) the edge reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Everything the edge needs to know about an app to serve a request for it.
#[derive(Debug, Clone)]
pub struct AppRoute {
    pub app_id: String,
    pub name: String,
    pub workspace_id: WorkspaceId,
    pub workspace_running: bool,
    /// Changes whenever the workspace's VM may have changed (every start and stop): upstream
    /// connections made under one value are never reused under another.
    pub workspace_generation: i64,
    pub status: AppStatus,
    pub port: u16,
    /// Speak HTTP/2 with prior knowledge to the app (`protocol: h2c`), else HTTP/1.1.
    pub h2c: bool,
    pub visibility: AppVisibility,
    /// Lowercased; used only for `privileged`.
    pub allowed_emails: Vec<String>,
    pub owner_id: String,
}

/// A user the edge identified (by `X-Rigbox-Key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUser {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
}

impl AppRoute {
    /// Whether `user` may reach this app (section 4's allowed users).
    pub fn allows(&self, user: &EdgeUser) -> bool {
        match self.visibility {
            AppVisibility::Public => true,
            AppVisibility::Private => user.id == self.owner_id,
            AppVisibility::Privileged => {
                user.id == self.owner_id
                    || (user.email_verified
                        && self.allowed_emails.contains(&user.email.to_lowercase()))
            }
        }
    }
}

/// What the edge asks of the rest of the platform.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// A number that changes (after the commit) with every change that can alter any answer
    /// of [`Directory::app`]. The edge keeps a route read while the number stays what it was
    /// before the read. None: routes are never kept, every request reads its route.
    fn route_generation(&self) -> Option<u64>;
    /// The app named `name`, if any.
    async fn app(&self, name: &str) -> Result<Option<AppRoute>, String>;
    /// The user an API key (`rb_…`) belongs to, if it is valid and active.
    async fn key_user(&self, key: &str) -> Result<Option<EdgeUser>, String>;
    /// A TCP stream to `port` of the workspace's VM.
    async fn connect(&self, ws: &WorkspaceId, port: u16) -> std::io::Result<TcpStream>;
    /// The user of a live app session (`rigbox_app_session`) on `host`.
    async fn session_user(&self, token: &str, host: &str) -> Result<Option<EdgeUser>, String>;
    /// Redeems a login code on `host`: a new app session, or None when the code is not valid
    /// there (unknown, used, expired, another host).
    async fn redeem(&self, code: &str, host: &str) -> Result<Option<NewSession>, String>;
    /// Ends an app session.
    async fn end_session(&self, token: &str) -> Result<(), String>;
}

/// An app session just created by a login code.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    /// Path and query to send the browser to.
    pub path: String,
    pub max_age_secs: i64,
}

/// Edge settings (apps-and-routing.md §7 defaults).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub base_domain: String,
    /// Where the console is, for the private-app redirect: `https://<base-domain>:8443`.
    pub console_origin: String,
    /// Largest request body forwarded to an app.
    pub max_body_bytes: u64,
    /// How long an app may take to send its response headers.
    pub header_timeout: Duration,
    /// When TLS is on, the HTTPS port: plain-HTTP requests for apps are redirected there.
    pub https_port: Option<u16>,
    /// Idle upstream HTTP/1.1 connections kept per workspace port (0: none are kept).
    pub pool_max_idle: usize,
    /// How long an unused upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// A client connection (WebSockets included) on which no byte moved for this long is
    /// closed.
    pub idle_timeout: Duration,
}

impl EdgeConfig {
    pub fn new(base_domain: &str, console_origin: &str) -> Self {
        Self {
            base_domain: base_domain.to_owned(),
            console_origin: console_origin.to_owned(),
            max_body_bytes: 100 << 20,
            header_timeout: Duration::from_secs(120),
            https_port: None,
            pool_max_idle: 32,
            pool_idle_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Serves the console and API: the control plane's router, handed the client address.
pub type PlatformService = Arc<
    dyn Fn(
            Request<Incoming>,
            SocketAddr,
        ) -> Pin<Box<dyn Future<Output = Response<EdgeBody>> + Send>>
        + Send
        + Sync,
>;

/// The edge.
pub struct Edge {
    cfg: EdgeConfig,
    dir: Arc<dyn Directory>,
    platform: PlatformService,
    routes: routes::RouteTable,
    pool: Arc<pool::Pool>,
}

/// How a connection reached the edge.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub client: SocketAddr,
    /// The TLS SNI name, when over TLS.
    pub sni: Option<String>,
    pub tls: bool,
    /// When bytes last moved on the connection (its idle timeout).
    pub activity: Arc<idle::Activity>,
}

impl Edge {
    pub fn new(cfg: EdgeConfig, dir: Arc<dyn Directory>, platform: PlatformService) -> Arc<Self> {
        let pool = pool::Pool::new(cfg.pool_max_idle, cfg.pool_idle_timeout);
        Arc::new(Self {
            cfg,
            dir,
            platform,
            routes: routes::RouteTable::default(),
            pool,
        })
    }

    /// Answers one request.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<Conn>,
    ) -> Response<EdgeBody> {
        let host = match host::request_host(&req) {
            Ok(h) => h,
            Err(e) => return response::error(&req, 400, "invalid_host", &e.to_string()),
        };
        match host::classify(&host, &self.cfg.base_domain) {
            host::Target::Platform => (self.platform)(req, conn.client).await,
            host::Target::Unknown => response::app_not_found(&req),
            host::Target::App(_) if !conn.tls && self.cfg.https_port.is_some() => {
                let port = self.cfg.https_port.unwrap_or(443);
                let port = if port == 443 {
                    String::new()
                } else {
                    format!(":{port}")
                };
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                response::permanent_redirect(&format!("https://{host}{port}{path}"))
            }
            host::Target::App(name) => {
                // A client must not reuse a TLS connection made for one name to reach another.
                if conn
                    .sni
                    .as_deref()
                    .is_some_and(|sni| !sni.eq_ignore_ascii_case(&host))
                {
                    return response::error(
                        &req,
                        421,
                        "misdirected_request",
                        "This connection was made for another host name.",
                    );
                }
                proxy::app_request(&self, name, host, req, &conn).await
            }
        }
    }

    /// Serves connections from `listener` (TLS when `tls` is given) until `shutdown` is true;
    /// connections in progress finish on their own.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        self.pool.start_sweeper();
        loop {
            let (socket, client) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "edge accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { let _ = shutdown.wait_for(|v| *v).await; } => return,
            };
            let _ = socket.set_nodelay(true);
            let activity = idle::Activity::new(self.cfg.idle_timeout);
            let socket = idle::Tracked::new(socket, activity.clone());
            let edge = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let conn = Conn {
                            client,
                            sni: None,
                            tls: false,
                            activity,
                        };
                        edge.serve_connection(TokioIo::new(socket), conn).await
                    }
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(socket),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%client, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let sni = stream.get_ref().1.server_name().map(str::to_owned);
                        let conn = Conn {
                            client,
                            sni,
                            tls: true,
                            activity,
                        };
                        edge.serve_connection(TokioIo::new(stream), conn).await
                    }
                }
            });
        }
    }

    async fn serve_connection<I>(self: Arc<Self>, io: I, conn: Conn)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let activity = conn.activity.clone();
        let conn = Arc::new(conn);
        let svc = hyper::service::service_fn(move |req| {
            let edge = self.clone();
            let conn = conn.clone();
            async move { Ok::<_, std::convert::Infallible>(edge.handle(req, conn).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Request heads past 64 KiB are refused (431) rather than buffered.
        builder.http1().max_buf_size(MAX_HEAD_BYTES);
        builder
            .http2()
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            // WebSockets over HTTP/2 (RFC 8441).
            .enable_connect_protocol();
        tokio::select! {
            r = builder.serve_connection_with_upgrades(io, svc) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "edge connection ended with an error");
                }
            }
            _ = activity.idle() => tracing::debug!("edge: idle connection closed"),
        }
    }
}
