//! The managed AI proxy on a node's bridge (`http://172.16.0.1:9090`, bridge-and-ai.md §5–9).
//!
//! Code in a VM calls `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
//! `/v1/embeddings`, `/v1/models`, `/v1/messages` (+ `count_tokens`) and `/brave/*` without a
//! key. The bridge identifies the caller by its lease (a [`BridgeCaller`]), drops its
//! credential headers and calls [`AiProxy::serve`] for the paths [`AiProxy::claims`]; this
//! crate prices the request, reserves an
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
//! It talks to the upstreams over HTTP(S) (`upstream`: HTTP/1.1 connections of its own, each
//! driven by the request using it; rustls) and to
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

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
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

    /// Whether `path` is the proxy's: `/v1`, `/v1/*` and `/brave/*` (its routes and its own
    /// 404s); the bridge serves other paths.
    pub fn claims(path: &str) -> bool {
        path == "/v1" || path.starts_with("/v1/") || path.starts_with("/brave/")
    }

    /// Serves a request on one of the proxy's paths ([`AiProxy::claims`]) from an identified
    /// caller whose credential headers the bridge dropped. Every answer carries
    /// `X-Rigbox-Request-Id`: metered routes set their hold's ID, the others get a fresh one.
    ///
    /// The other routes' futures are boxed: this future is moved whole into the bridge's box
    /// on every request, so it is only as large as a metered route needs.
    pub async fn serve(self: Arc<Self>, caller: BridgeCaller, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let resp = if let Some(route) = ModelRoute::ALL.iter().find(|r| r.endpoint == path) {
            if parts.method == Method::POST {
                self.model_request(*route, caller, parts.headers, body)
                    .await
            } else {
                not_found(&parts.method, path)
            }
        } else if path == "/v1/models" && matches!(parts.method, Method::GET | Method::HEAD) {
            Box::pin(self.passthrough(
                caller,
                Upstream::OpenRouter,
                Method::GET,
                "models".into(),
                parts.headers,
                body,
            ))
            .await
        } else if path == "/v1/messages/count_tokens" && parts.method == Method::POST {
            Box::pin(self.passthrough(
                caller,
                Upstream::Anthropic,
                Method::POST,
                "v1/messages/count_tokens".into(),
                parts.headers,
                body,
            ))
            .await
        } else if let Some(rest) = path
            .strip_prefix("/brave/")
            .filter(|r| !r.is_empty() && matches!(parts.method, Method::GET | Method::POST))
        {
            // As sent (still percent-encoded): the upstream reads the path it would have read.
            let path_and_query = match parts.uri.query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            Box::pin(self.brave(caller, parts.method, path_and_query, parts.headers, body)).await
        } else {
            not_found(&parts.method, path)
        };
        with_request_id(resp)
    }

    /// Settles orphaned holds now, then every five minutes; refreshes prices from the
    /// upstream model list at start and hourly when `price_refresh` is on; closes idle upstream
    /// connections that expired or that their upstream closed, every 30 s.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let p = self.clone();
        tokio::spawn(async move {
            let mut reconcile = tokio::time::interval(Duration::from_secs(300));
            let mut refresh = tokio::time::interval(Duration::from_secs(3600));
            let mut sweep = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = reconcile.tick() => p.reconcile().await,
                    _ = sweep.tick() => {
                        p.http.sweep();
                    }
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

/// Sets a fresh `X-Rigbox-Request-Id` on an answer that has none.
fn with_request_id(mut resp: Response) -> Response {
    if !resp.headers().contains_key(proxy::X_RIGBOX_REQUEST_ID) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&proxy::new_request_id()) {
            resp.headers_mut().insert(proxy::X_RIGBOX_REQUEST_ID, v);
        }
    }
    resp
}

fn not_found(method: &Method, path: &str) -> Response {
    GatewayError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("The AI proxy has no route {method} {path}."),
    )
    .into_response()
}

/// The proxy's upstream HTTP client could not be built (TLS).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the AI proxy's upstream client")]
pub struct BuildError(#[source] rustls::Error);
