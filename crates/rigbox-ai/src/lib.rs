//! The managed AI proxy on a node's bridge (`http://172.16.0.1:9090`, bridge-and-ai.md §5–9).
//!
//! Code in a VM calls `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
//! `/v1/embeddings`, `/v1/models`, `/v1/messages` (+ `count_tokens`) and `/brave/*` without a
//! key. The bridge has already identified the caller by its lease (a [`BridgeCaller`]
//! extension) and dropped its credential headers; this crate prices the request, reserves an
//! estimate in the owner's wallet, injects the operator's key, forwards to the configured
//! upstream, relays the answer (streams unbuffered) while metering it, and settles the real
//! cost exactly once.
//!
//! - [`config`]: `[ai]` of `rigboxd.toml`;
//! - [`pricing`]: price table, estimate, cost, microcredit rounding;
//! - [`meter`]: usage from JSON bodies and SSE streams, cost splicing;
//! - [`Wallet`] (in `rigbox-types`): what the control plane's wallet offers (holds,
//!   settlement, ledger);
//! - [`subject`]: per-subject attribution, budgets and rates;
//! - `proxy`: the pipeline.
//!
//! It talks to the upstreams over HTTP(S) (`upstream`: hyper's pooled client, rustls) and to
//! the wallet through the trait; it never logs prompts, outputs, search terms or keys.

mod body;
pub mod config;
mod error;
pub mod meter;
pub mod pricing;
mod proxy;
pub mod subject;
mod upstream;

pub use config::AiConfig;
pub use error::GatewayError;
pub use rigbox_types::wallet::{self, Wallet};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use meter::Flavor;
use proxy::{ModelRoute, Target, Upstream};
use rigbox_types::agent::BridgeCaller;
use std::sync::Arc;
use std::time::Duration;

/// Open holds older than this are settled at their reserved amount by the reconciler.
pub const ORPHAN_HOLD_SECS: u64 = 30 * 60;

/// The proxy of one node.
pub struct AiProxy {
    cfg: AiConfig,
    prices: pricing::PriceTable,
    wallet: Arc<dyn Wallet>,
    http: upstream::Client,
    /// The configured upstreams.
    targets: Targets,
    node_id: String,
    /// This process; holds another incarnation left open are reconciled at start.
    incarnation: String,
}

/// Each upstream the operator configured.
#[derive(Debug)]
struct Targets {
    openrouter: Option<Target>,
    anthropic: Option<Target>,
    brave: Option<Target>,
}

impl std::fmt::Debug for AiProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiProxy")
            .field("cfg", &self.cfg)
            .field("node_id", &self.node_id)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl AiProxy {
    pub fn new(
        cfg: AiConfig,
        wallet: Arc<dyn Wallet>,
        node_id: &str,
    ) -> Result<Arc<Self>, BuildError> {
        let http = upstream::Client::new()?;
        let targets = Targets {
            openrouter: cfg
                .openrouter()
                .map(|o| Target::new(Upstream::OpenRouter, &o.base_url, &o.api_key)),
            anthropic: cfg
                .anthropic
                .as_ref()
                .map(|a| Target::new(Upstream::Anthropic, &a.base_url, &a.api_key)),
            brave: cfg
                .brave
                .as_ref()
                .map(|b| Target::new(Upstream::Brave, &b.base_url, &b.api_key)),
        };
        Ok(Arc::new(AiProxy {
            targets,
            prices: pricing::PriceTable::new(&cfg.prices),
            cfg,
            wallet,
            http,
            node_id: node_id.to_owned(),
            incarnation: uuid::Uuid::new_v4().to_string(),
        }))
    }

    /// The routes: `/v1/*` and `/brave/*`. Other paths fall through to `rest` (the bridge's
    /// `/rig/v1` API).
    pub fn router(self: &Arc<Self>, rest: Router) -> Router {
        let model = |flavor, path, endpoint| {
            let route = ModelRoute {
                flavor,
                path,
                endpoint,
            };
            post(
                move |State(p): State<Arc<AiProxy>>,
                      Extension(c): Extension<BridgeCaller>,
                      headers: HeaderMap,
                      body: Body| async move {
                    p.model_request(route, c, headers, body).await
                },
            )
        };
        Router::new()
            .route(
                "/v1/chat/completions",
                model(Flavor::Chat, "chat/completions", "/v1/chat/completions"),
            )
            .route(
                "/v1/completions",
                model(Flavor::Completions, "completions", "/v1/completions"),
            )
            .route(
                "/v1/responses",
                model(Flavor::Responses, "responses", "/v1/responses"),
            )
            .route(
                "/v1/embeddings",
                model(Flavor::Embeddings, "embeddings", "/v1/embeddings"),
            )
            .route(
                "/v1/messages",
                model(Flavor::Messages, "messages", "/v1/messages"),
            )
            .route("/v1/models", get(models))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/brave/{*path}", get(brave).post(brave))
            .route("/v1/{*rest}", any(not_found))
            .route("/v1", any(not_found))
            .method_not_allowed_fallback(not_found)
            .layer(axum::middleware::map_response(request_id))
            .with_state(self.clone())
            .fallback_service(rest)
    }

    /// Settles orphaned holds now, then every five minutes; refreshes prices from the
    /// upstream model list at start and hourly when `price_refresh` is on.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let p = self.clone();
        tokio::spawn(async move {
            let mut reconcile = tokio::time::interval(Duration::from_secs(300));
            let mut refresh = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = reconcile.tick() => p.reconcile().await,
                    _ = refresh.tick(), if p.cfg.price_refresh && p.targets.openrouter.is_some() => {
                        p.refresh_prices().await
                    }
                }
            }
        })
    }

    /// Settles this node's holds left open by an earlier process, and any hold open longer
    /// than [`ORPHAN_HOLD_SECS`], at their reserved amount.
    pub async fn reconcile(&self) {
        match self
            .wallet
            .reconcile(&self.node_id, &self.incarnation, ORPHAN_HOLD_SECS)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                holds = n,
                "settled orphaned AI holds at their reserved amount"
            ),
            Err(e) => tracing::error!(error = %e, "cannot reconcile AI holds"),
        }
    }

    /// Loads prices from the upstream's model list (operator prices still win).
    pub async fn refresh_prices(&self) {
        let Some(up) = &self.targets.openrouter else {
            return;
        };
        let res = async {
            let mut req = http::Request::get(format!("{}/models", up.base))
                .body(Default::default())
                .map_err(|e| e.to_string())?;
            *req.headers_mut() =
                proxy::forward_headers(&HeaderMap::new(), up).map_err(|e| e.message)?;
            let resp = tokio::time::timeout(Duration::from_secs(30), self.http.send(req))
                .await
                .map_err(|_| "no answer within 30 s".to_owned())?
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let body = upstream::read_all(resp.into_body())
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
        }
        .await;
        match res {
            Ok(list) => {
                let n = self.prices.load_model_list(&list);
                tracing::info!(models = n, "loaded AI prices from the upstream");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load AI prices from the upstream")
            }
        }
    }
}

async fn models(
    State(p): State<Arc<AiProxy>>,
    Extension(c): Extension<BridgeCaller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    p.passthrough(
        c,
        Upstream::OpenRouter,
        Method::GET,
        "models".into(),
        headers,
        body,
    )
    .await
}

async fn count_tokens(
    State(p): State<Arc<AiProxy>>,
    Extension(c): Extension<BridgeCaller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    p.passthrough(
        c,
        Upstream::Anthropic,
        Method::POST,
        "v1/messages/count_tokens".into(),
        headers,
        body,
    )
    .await
}

async fn brave(
    State(p): State<Arc<AiProxy>>,
    Extension(c): Extension<BridgeCaller>,
    Path(path): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    p.brave(c, method, path_and_query, headers, body).await
}

/// Every proxy answer carries `X-Rigbox-Request-Id`; metered routes set their hold's ID, the
/// others get a fresh one here.
async fn request_id(mut resp: Response) -> Response {
    if !resp.headers().contains_key(proxy::X_RIGBOX_REQUEST_ID) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&proxy::new_request_id()) {
            resp.headers_mut().insert(proxy::X_RIGBOX_REQUEST_ID, v);
        }
    }
    resp
}

async fn not_found(method: Method, uri: Uri) -> Response {
    GatewayError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("The AI proxy has no route {method} {}.", uri.path()),
    )
    .into_response()
}

/// The proxy's upstream HTTP client could not be built (TLS).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the AI proxy's upstream client")]
pub struct BuildError(#[source] rustls::Error);
