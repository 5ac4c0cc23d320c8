//! The request pipeline (bridge-and-ai.md §6): identify, parse, price, reserve, rewrite,
//! forward, relay while metering, settle exactly once.
//!
//! A request is admitted and relayed in the task of its connection, but a client that leaves
//! (even before the head) does not cut it short: the unfinished work moves to a task of its own
//! ([`Detach`]), so every hold is settled or released by the code that made it. A stream's
//! events are relayed by a task of their own once its head is out. If the process dies
//! instead, the reconciler settles the orphan on the next start.

use crate::body::Fields;
use crate::error::GatewayError;
use crate::meter::{cost_of, meter_body, Flavor, StreamMeter, Usage};
use crate::pricing::{micro_to_credits, usd_to_micro, Price, Tokens};
use crate::subject::{self, SubjectLimits};
use crate::upstream;
use crate::AiProxy;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use rigbox_types::agent::BridgeCaller;
use rigbox_types::wallet::{Account, Admission, Charge, Committed, Hold};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never passed on in either direction, and the body
/// length, which changes when a body is rewritten.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request headers not forwarded upstream besides [`HOP_BY_HOP`]: credentials of any kind (the
/// VM's placeholder key included) and what the proxy sets or reads itself.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-subscription-token",
    "cookie",
    "proxy-authorization",
    "host",
    // Bodies are read and rewritten: never let the upstream compress them.
    "accept-encoding",
    "x-rigbox-subject",
    "x-rigbox-subject-budget",
    "x-rigbox-subject-rate",
];

/// `X-Rigbox-Request-Id`: the request's ID, on every proxy answer (the hold's and the ledger's
/// key on metered routes).
pub(crate) const X_RIGBOX_REQUEST_ID: HeaderName = HeaderName::from_static("x-rigbox-request-id");

/// Response headers not relayed besides [`HOP_BY_HOP`].
const DROPPED_RESPONSE_HEADERS: &[&str] = &["set-cookie"];

fn dropped(name: &HeaderName, extra: &[&str]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || extra.contains(&name)
}

/// Which upstream a route goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    OpenRouter,
    Anthropic,
    Brave,
}

/// A metered model route.
#[derive(Debug, Clone, Copy)]
pub struct ModelRoute {
    pub flavor: Flavor,
    /// Path under the upstream base, e.g. `chat/completions`.
    pub path: &'static str,
    /// As recorded in the ledger, e.g. `/v1/chat/completions`.
    pub endpoint: &'static str,
}

impl ModelRoute {
    /// Every metered route.
    pub(crate) const ALL: [ModelRoute; 5] = [
        ModelRoute::new(Flavor::Chat, "chat/completions", "/v1/chat/completions"),
        ModelRoute::new(Flavor::Completions, "completions", "/v1/completions"),
        ModelRoute::new(Flavor::Responses, "responses", "/v1/responses"),
        ModelRoute::new(Flavor::Embeddings, "embeddings", "/v1/embeddings"),
        ModelRoute::new(Flavor::Messages, "messages", "/v1/messages"),
    ];

    const fn new(flavor: Flavor, path: &'static str, endpoint: &'static str) -> Self {
        ModelRoute {
            flavor,
            path,
            endpoint,
        }
    }

    fn upstream(self) -> Upstream {
        if self.flavor == Flavor::Messages {
            Upstream::Anthropic
        } else {
            Upstream::OpenRouter
        }
    }
}

/// A request's answer: the response head (with its body), or an error.
type Head = Result<Response, GatewayError>;

/// A request ID (`X-Rigbox-Request-Id`, the hold's and the ledger's key): a UUIDv7, time-ordered,
/// so the wallet's indexes on it grow at one end instead of touching a random page per insert.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Runs `upstream` while the hold commits. A failed commit means no hold exists and nothing
/// may be relayed: the upstream's answer is dropped and the client gets 500. (A combinator, not
/// an `async fn`: that would hold `upstream` twice, as its argument and inside the join, and
/// the future of every metered request would be twice its size to move around.)
fn beside_commit<'a, T>(
    request_id: &'a str,
    upstream: impl Future<Output = T> + 'a,
    committed: Committed,
) -> impl Future<Output = Result<T, GatewayError>> + 'a {
    futures::future::join(upstream, committed).map(move |(out, committed)| match committed {
        Ok(()) => Ok(out),
        Err(e) => {
            tracing::error!(request_id, error = %e, "cannot commit a hold");
            Err(GatewayError::internal())
        }
    })
}

/// A future run in the task awaiting it, moved to a task of its own if that task stops waiting
/// (the client left): it always runs to its end, so whatever it holds (a hold in the wallet)
/// is settled or released by it, as if spawned, without a task per request.
struct Detach(Option<Pin<Box<dyn Future<Output = Head> + Send>>>);

impl Detach {
    fn new(f: impl Future<Output = Head> + Send + 'static) -> Self {
        Detach(Some(Box::pin(f)))
    }
}

impl Future for Detach {
    type Output = Head;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Head> {
        let Some(f) = self.0.as_mut() else {
            return Poll::Ready(Err(GatewayError::internal()));
        };
        let out = f.as_mut().poll(cx);
        if out.is_ready() {
            self.0 = None;
        }
        out
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            // Outside a runtime (the process is ending) the reconciler settles the hold.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(f);
            }
        }
    }
}

/// Where an upstream's requests go and the operator's key for it, as a header, made once.
#[derive(Debug)]
pub(crate) struct Target {
    /// The base URL, without a trailing `/`.
    pub(crate) base: String,
    /// `None`: the operator's key is not a valid header value.
    key: Option<(HeaderName, HeaderValue)>,
    /// `Host` for its requests, as the HTTP client would make it from each request's URI
    /// (`None`: the base URL has no host; the client then fails the request).
    host: Option<HeaderValue>,
}

impl Target {
    /// The target of `up` at `base` with the operator's `key`.
    pub(crate) fn new(up: Upstream, base: &str, key: &str) -> Self {
        let (name, value) = match up {
            Upstream::OpenRouter => (header::AUTHORIZATION, format!("Bearer {key}")),
            Upstream::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
            Upstream::Brave => (
                HeaderName::from_static("x-subscription-token"),
                key.to_owned(),
            ),
        };
        let key = HeaderValue::from_str(&value).ok().map(|mut v| {
            v.set_sensitive(true);
            (name, v)
        });
        let host = base.parse::<http::Uri>().ok().and_then(|uri| {
            let host = uri.host()?;
            let default_port = match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            };
            let host = match uri.port_u16().filter(|p| Some(*p) != default_port) {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            HeaderValue::from_str(&host).ok()
        });
        Target {
            base: base.trim_end_matches('/').to_owned(),
            key,
            host,
        }
    }
}

/// Headers to send upstream: the caller's, minus [`HOP_BY_HOP`] and
/// [`DROPPED_REQUEST_HEADERS`], plus the operator's key for the target and its `Host` (made
/// once, where the client would format it for each request).
pub(crate) fn forward_headers(from: &HeaderMap, to: &Target) -> Result<HeaderMap, GatewayError> {
    let Some((name, value)) = &to.key else {
        return Err(GatewayError::unavailable(
            "The operator's key for this upstream is not a valid header.",
        ));
    };
    let mut h = HeaderMap::with_capacity(from.len() + 2);
    for (name, value) in from {
        if !dropped(name, DROPPED_REQUEST_HEADERS) {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(name.clone(), value.clone());
    if let Some(host) = &to.host {
        h.insert(header::HOST, host.clone());
    }
    Ok(h)
}

/// The relayed response: the upstream's status and headers (minus hop-by-hop ones), with
/// `X-Rigbox-Request-Id` and, for a charged answer, `X-Rigbox-Cost-*` (its cost in
/// microcredits).
fn relayed(
    upstream: &http::response::Parts,
    request_id: &str,
    cost_micro: Option<i64>,
    body: Body,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = upstream.status;
    let h = resp.headers_mut();
    h.reserve(upstream.headers.len() + 3);
    for (name, value) in &upstream.headers {
        if !dropped(name, DROPPED_RESPONSE_HEADERS) {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some(micro) = cost_micro {
        h.insert(
            HeaderName::from_static("x-rigbox-cost-micro"),
            HeaderValue::from(micro),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", micro_to_credits(micro))) {
            h.insert(HeaderName::from_static("x-rigbox-cost-credits"), v);
        }
    }
    with_request_id(resp, request_id)
}

/// The request's own output bound, if any (§7): a non-negative integer; another value is none.
fn own_output_bound(flavor: Flavor, body: &Fields) -> Option<u64> {
    match flavor {
        Flavor::Chat => body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens")),
        Flavor::Completions | Flavor::Messages => body.get("max_tokens"),
        Flavor::Responses => body.get("max_output_tokens"),
        Flavor::Embeddings => Some(0),
    }
}

impl AiProxy {
    /// The owner of the calling workspace, refusing BYOK workspaces.
    async fn account(&self, caller: &BridgeCaller) -> Result<Account, GatewayError> {
        match self.wallet.account(&caller.workspace_id).await {
            Ok(Some(a)) if a.managed => Ok(a),
            Ok(Some(_)) => Err(GatewayError::new(
                StatusCode::FORBIDDEN,
                "managed_ai_disabled",
                "Managed AI is off for this workspace (mode: byok); use your own provider key.",
            )),
            Ok(None) => Err(GatewayError::new(
                StatusCode::FORBIDDEN,
                "unknown_workspace",
                "This address holds no workspace lease on this node.",
            )),
            Err(e) => {
                tracing::error!(error = %e, "wallet unavailable");
                Err(GatewayError::internal())
            }
        }
    }

    fn check_enabled(&self, up: Upstream) -> Result<&Target, GatewayError> {
        if !self.cfg.enabled {
            return Err(GatewayError::unavailable(
                "Managed AI is turned off on this platform.",
            ));
        }
        let target = match up {
            Upstream::OpenRouter => &self.targets.openrouter,
            Upstream::Anthropic => &self.targets.anthropic,
            Upstream::Brave => &self.targets.brave,
        };
        target.as_ref().ok_or_else(|| {
            GatewayError::unavailable(format!(
                "No {} upstream is configured on this platform.",
                match up {
                    Upstream::OpenRouter => "OpenRouter-compatible",
                    Upstream::Anthropic => "Anthropic",
                    Upstream::Brave => "Brave Search",
                }
            ))
        })
    }

    async fn read_body(&self, body: Body) -> Result<Bytes, GatewayError> {
        axum::body::to_bytes(body, self.cfg.max_body_bytes)
            .await
            .map_err(|_| {
                GatewayError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    format!(
                        "The request body is larger than {} bytes.",
                        self.cfg.max_body_bytes
                    ),
                )
            })
    }

    /// Reserves `amount` for the request, mapping a refusal to 402. Returns once admitted,
    /// with the hold's commit to await before relaying anything (see [`Wallet::reserve`]).
    ///
    /// [`Wallet::reserve`]: rigbox_types::wallet::Wallet::reserve
    async fn reserve(&self, hold: Hold) -> Result<Committed, GatewayError> {
        let estimate = hold.amount_micro;
        let reservation = self.wallet.reserve(hold).await.map_err(|e| {
            tracing::error!(error = %e, estimate, "cannot reserve credits");
            GatewayError::internal()
        })?;
        match reservation.admission {
            Admission::Admitted => Ok(reservation.committed),
            Admission::Exhausted { available_micro } => Err(GatewayError::new(
                StatusCode::PAYMENT_REQUIRED,
                "credits_exhausted",
                format!(
                    "No AI credits are available ({:.6} credits); they renew at the start of next month.",
                    micro_to_credits(available_micro)
                ),
            )),
            Admission::Insufficient {
                available_micro,
                estimate_micro,
            } => Err(GatewayError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                format!(
                    "This request may cost up to {:.6} credits but only {:.6} are available; lower its output limit (max_tokens) or wait for the next month.",
                    micro_to_credits(estimate_micro),
                    micro_to_credits(available_micro)
                ),
            )),
        }
    }

    fn price_of(&self, model: &str, flavor: Flavor) -> Option<Price> {
        self.prices.get(model).or_else(|| {
            (flavor == Flavor::Messages && !model.contains('/'))
                .then(|| self.prices.get(&format!("anthropic/{model}")))
                .flatten()
        })
    }

    /// A metered model route (§6 steps 1–8). Admission and everything after it run to their
    /// end even when the client leaves (see [`Detach`]): a hold is never stranded.
    pub(crate) async fn model_request(
        self: Arc<Self>,
        route: ModelRoute,
        caller: BridgeCaller,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        let request_id = new_request_id();
        let id = request_id.clone();
        let job = Detach::new(async move {
            let (job, req, committed) = self
                .admit_model(route, &caller, &headers, body, &id)
                .await?;
            job.run(req, committed).await
        });
        match job.await {
            Ok(resp) => resp,
            Err(e) => with_request_id(e.into_response(), &request_id),
        }
    }

    async fn admit_model(
        self: Arc<Self>,
        route: ModelRoute,
        caller: &BridgeCaller,
        headers: &HeaderMap,
        body: Body,
        request_id: &str,
    ) -> Result<(Job, upstream::Request, Committed), GatewayError> {
        let account = self.account(caller).await?;
        let target = self.check_enabled(route.upstream())?;
        let raw = self.read_body(body).await?;
        let mut body = Fields::parse(&raw).map_err(|e| GatewayError::invalid(e.to_string()))?;
        let Some(sent_model) = body.get::<String>("model") else {
            return Err(GatewayError::invalid(
                "The request has no \"model\" (a string such as \"openai/gpt-4o\").",
            ));
        };
        let model = match self.cfg.model_aliases.get(&sent_model) {
            Some(m) => {
                body.set("model", m);
                m.clone()
            }
            None => sent_model,
        };

        let subject = if route.flavor == Flavor::Messages {
            None
        } else {
            subject::subject_of(headers, body.get::<String>("user").as_deref())?
        };
        let limits = match &subject {
            Some(_) => SubjectLimits::parse(headers)?,
            None => SubjectLimits::default(),
        };

        let Some(price) = self.price_of(&model, route.flavor) else {
            return Err(GatewayError::invalid(format!(
                "No price is known for the model \"{model}\"; it cannot be used through the managed AI proxy."
            ))
            .code("model_not_priced"));
        };
        let stream = route.flavor != Flavor::Embeddings && body.get::<bool>("stream") == Some(true);
        let bound = match own_output_bound(route.flavor, &body) {
            Some(b) => b,
            None => {
                let b = price
                    .max_output_tokens
                    .map_or(self.cfg.default_max_output_tokens, |m| {
                        m.min(self.cfg.default_max_output_tokens)
                    });
                let field = if route.flavor == Flavor::Responses {
                    "max_output_tokens"
                } else {
                    "max_tokens"
                };
                body.set(field, &b);
                b
            }
        };
        match route.flavor {
            Flavor::Chat | Flavor::Completions | Flavor::Responses => {
                body.set_in("usage", "include", true.into());
            }
            _ => {}
        }
        if stream && matches!(route.flavor, Flavor::Chat | Flavor::Completions) {
            body.set_in("stream_options", "include_usage", true.into());
        }
        let input_est = price.input_estimate(raw.len());
        let estimate = price.estimate_micro(input_est, bound);

        if let Some(s) = &subject {
            self.check_subject(&account, s, &limits).await?;
        }
        let mut fwd = forward_headers(headers, target)?;
        fwd.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let url = match route.upstream() {
            Upstream::Anthropic => format!("{}/v1/{}", target.base, route.path),
            _ => format!("{}/{}", target.base, route.path),
        };
        let req = upstream_request(Method::POST, &url, fwd, body.to_bytes())?;
        let committed = self
            .reserve(Hold {
                request_id: request_id.to_owned(),
                user_id: account.user_id.clone(),
                workspace_id: caller.workspace_id.to_string(),
                workspace_name: account.workspace_name.clone(),
                node_id: self.node_id.clone(),
                incarnation: self.incarnation.clone(),
                endpoint: route.endpoint.to_owned(),
                model: Some(model.clone()),
                subject: subject.clone(),
                amount_micro: estimate,
            })
            .await?;
        let job = Job {
            proxy: self.clone(),
            request_id: request_id.to_owned(),
            flavor: route.flavor,
            price,
            input_est,
            stream,
        };
        Ok((job, req, committed))
    }

    /// Releases a hold, logging a failure (the reconciler is the safety net).
    pub(crate) async fn release(&self, request_id: &str) {
        if let Err(e) = self.wallet.release(request_id).await {
            tracing::error!(request_id, error = %e, "cannot release a hold");
        }
    }

    /// Queues the settlement of a hold: a read of the wallet that follows sees it (see
    /// [`rigbox_types::wallet::Wallet::settle`]). Nobody waits for its commit: the request's
    /// task ends with its answer, and the wallet logs a settlement that fails (the hold then
    /// stays open for the reconciler) or finds its hold closed already.
    pub(crate) fn settle(&self, charge: Charge) {
        drop(self.wallet.settle(charge));
    }

    /// Sends an unmetered request upstream and relays the answer (`count_tokens` as is,
    /// `models` filtered by `models_allow`).
    pub(crate) async fn passthrough(
        self: Arc<Self>,
        caller: BridgeCaller,
        up: Upstream,
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        let filter_models = up == Upstream::OpenRouter && path == "models";
        let request_id = new_request_id();
        let result: Result<Response, GatewayError> = async {
            self.account(&caller).await?;
            let target = self.check_enabled(up)?;
            let body = self.read_body(body).await?;
            let fwd = forward_headers(&headers, target)?;
            let req = upstream_request(method, &format!("{}/{path}", target.base), fwd, body)?;
            let (head, bytes) = self.fetch(req).await?;
            let bytes =
                if filter_models && head.status.is_success() && !self.cfg.models_allow.is_empty() {
                    self.filter_models(bytes)
                } else {
                    bytes
                };
            Ok(relayed(&head, &request_id, None, Body::from(bytes)))
        }
        .await;
        match result {
            Ok(r) => r,
            Err(e) => with_request_id(e.into_response(), &request_id),
        }
    }

    fn filter_models(&self, bytes: Bytes) -> Bytes {
        let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
            return bytes;
        };
        if let Some(list) = v["data"].as_array_mut() {
            list.retain(|m| {
                m["id"]
                    .as_str()
                    .is_some_and(|id| self.cfg.models_allow.iter().any(|a| a == id))
            });
        }
        serde_json::to_vec(&v).map(Bytes::from).unwrap_or(bytes)
    }

    /// `/brave/{path}`: charged `usd_per_request` per 2xx answer.
    pub(crate) async fn brave(
        self: Arc<Self>,
        caller: BridgeCaller,
        method: Method,
        path_and_query: String,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        let request_id = new_request_id();
        // In a task of its own, like model routes: a hold is never stranded by a client leaving.
        let task = tokio::spawn(self.brave_call(
            caller,
            method,
            path_and_query,
            headers,
            body,
            request_id.clone(),
        ));
        match task.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => with_request_id(e.into_response(), &request_id),
            Err(_) => with_request_id(GatewayError::internal().into_response(), &request_id),
        }
    }

    async fn brave_call(
        self: Arc<Self>,
        caller: BridgeCaller,
        method: Method,
        path_and_query: String,
        headers: HeaderMap,
        body: Body,
        request_id: String,
    ) -> Result<Response, GatewayError> {
        {
            let account = self.account(&caller).await?;
            let target = self.check_enabled(Upstream::Brave)?;
            let usd = self.cfg.brave.as_ref().map_or(0.0, |b| b.usd_per_request);
            let body = self.read_body(body).await?;
            let micro = usd_to_micro(usd);
            let fwd = forward_headers(&headers, target)?;
            let url = format!("{}/{path_and_query}", target.base);
            let req = upstream_request(method, &url, fwd, body)?;
            let committed = self
                .reserve(Hold {
                    request_id: request_id.clone(),
                    user_id: account.user_id.clone(),
                    workspace_id: caller.workspace_id.to_string(),
                    workspace_name: account.workspace_name.clone(),
                    node_id: self.node_id.clone(),
                    incarnation: self.incarnation.clone(),
                    endpoint: "/brave".into(),
                    model: None,
                    subject: None,
                    amount_micro: micro,
                })
                .await?;
            let outcome = beside_commit(&request_id, self.fetch(req), committed).await?;
            match outcome {
                Ok((head, bytes)) if head.status.is_success() => {
                    self.settle(Charge {
                        request_id: request_id.clone(),
                        cost_micro: micro,
                        cost_usd: Some(usd),
                        input_tokens: None,
                        output_tokens: None,
                        estimated: false,
                    });
                    Ok(relayed(&head, &request_id, Some(micro), Body::from(bytes)))
                }
                Ok((head, bytes)) => {
                    self.release(&request_id).await;
                    Ok(relayed(&head, &request_id, None, Body::from(bytes)))
                }
                Err(e) => {
                    self.release(&request_id).await;
                    Err(e)
                }
            }
        }
    }

    /// Sends a request and reads its whole answer (unmetered and Brave routes).
    async fn fetch(
        &self,
        req: upstream::Request,
    ) -> Result<(http::response::Parts, Bytes), GatewayError> {
        let (head, body) = self.send(req).await?.into_parts();
        let bytes = upstream::read_all(body)
            .await
            .map_err(|_| upstream_unreachable())?;
        Ok((head, bytes))
    }

    /// Sends a request, mapping failures to 502 and a missing head to 504.
    async fn send(&self, req: upstream::Request) -> Result<upstream::Response, GatewayError> {
        let timeout = Duration::from_secs(self.cfg.upstream_timeout_seconds);
        match tokio::time::timeout(timeout, self.http.send(req)).await {
            Err(_) => Err(GatewayError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "The upstream sent no response within {} s; nothing was charged.",
                    timeout.as_secs()
                ),
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream unreachable");
                Err(upstream_unreachable())
            }
            Ok(Ok(r)) => Ok(r),
        }
    }

    async fn check_subject(
        &self,
        account: &Account,
        subject: &str,
        limits: &SubjectLimits,
    ) -> Result<(), GatewayError> {
        if limits.is_empty() {
            return Ok(());
        }
        let wallet = self.wallet.clone();
        let user = account.user_id.clone();
        let s = subject.to_owned();
        limits
            .check(subject, move |window| {
                let wallet = wallet.clone();
                let user = user.clone();
                let s = s.clone();
                async move { wallet.subject_use(&user, &s, window).await }
            })
            .await
    }
}

/// A request to an upstream; a base URL that makes no URI is the operator's mistake (502).
fn upstream_request(
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<upstream::Request, GatewayError> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.into())
        .map_err(|e| {
            tracing::error!(error = %e, "the AI upstream's base URL makes no valid URI");
            upstream_unreachable()
        })?;
    *req.headers_mut() = headers;
    Ok(req)
}

fn upstream_unreachable() -> GatewayError {
    GatewayError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_unreachable",
        "The AI upstream cannot be reached; nothing was charged.",
    )
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(X_RIGBOX_REQUEST_ID, v);
    }
    resp
}

impl GatewayError {
    /// The same error under another code.
    fn code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

/// One admitted request, from forwarding to settlement.
struct Job {
    proxy: Arc<AiProxy>,
    request_id: String,
    flavor: Flavor,
    price: Price,
    input_est: u64,
    stream: bool,
}

impl Job {
    fn pricer(&self) -> impl Fn(&Usage) -> (i64, f64) + Send + Sync + 'static {
        let price = self.price;
        move |u: &Usage| cost_of(u, &price)
    }

    /// The charge for what was seen: the upstream's usage when it reported it, else the price
    /// table over the input estimate and the counted output (`estimated`).
    fn charge(&self, usage: Option<Usage>, complete: bool, output_chars: u64) -> Charge {
        match usage {
            Some(u) if complete => {
                let (micro, usd) = cost_of(&u, &self.price);
                Charge {
                    request_id: self.request_id.clone(),
                    cost_micro: micro,
                    cost_usd: Some(usd),
                    input_tokens: Some(u.tokens.input + u.tokens.cache_read + u.tokens.cache_write),
                    output_tokens: Some(u.tokens.output),
                    estimated: false,
                }
            }
            partial => {
                let seen = partial.unwrap_or_default();
                let tokens = Tokens {
                    input: if seen.tokens.input > 0 {
                        seen.tokens.input
                    } else {
                        self.input_est
                    },
                    output: seen.tokens.output.max(output_chars.div_ceil(4)),
                    cache_write: seen.tokens.cache_write,
                    cache_read: seen.tokens.cache_read,
                };
                let usd = self.price.cost_usd(tokens);
                Charge {
                    request_id: self.request_id.clone(),
                    cost_micro: usd_to_micro(usd),
                    cost_usd: Some(usd),
                    input_tokens: Some(tokens.input + tokens.cache_read + tokens.cache_write),
                    output_tokens: Some(tokens.output),
                    estimated: true,
                }
            }
        }
    }

    /// Forwards `req` while the hold commits (`committed`), then relays the answer.
    async fn run(self, req: upstream::Request, committed: Committed) -> Head {
        let p = self.proxy.clone();
        let resp = match beside_commit(&self.request_id, p.send(req), committed).await? {
            Ok(r) => r,
            Err(e) => {
                p.release(&self.request_id).await;
                return Err(e);
            }
        };
        if !resp.status().is_success() {
            // Relayed with its own status and body; nothing is charged.
            let (upstream_head, body) = resp.into_parts();
            let bytes = upstream::read_all(body).await.unwrap_or_default();
            p.release(&self.request_id).await;
            return Ok(relayed(
                &upstream_head,
                &self.request_id,
                None,
                Body::from(bytes),
            ));
        }
        let is_sse = header_str(resp.headers(), "content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if self.stream || is_sse {
            Ok(self.relay_stream(resp))
        } else {
            self.relay_body(resp).await
        }
    }

    async fn relay_body(self, resp: upstream::Response) -> Head {
        let p = self.proxy.clone();
        let (upstream_head, body) = resp.into_parts();
        let bytes = match upstream::read_all(body).await {
            Ok(b) => b,
            Err(e) => {
                // The head arrived, the body broke: the upstream may have done the work.
                tracing::warn!(request_id = %self.request_id, error = %e, "upstream body broke");
                p.settle(self.charge(None, false, 0));
                return Err(upstream_unreachable());
            }
        };
        let pricer = self.pricer();
        let (body, usage, chars, _) = meter_body(self.flavor, bytes, &pricer);
        let charge = self.charge(usage, true, chars);
        let micro = charge.cost_micro;
        p.settle(charge);
        Ok(relayed(
            &upstream_head,
            &self.request_id,
            Some(micro),
            Body::from(body),
        ))
    }

    /// The streamed answer, its events relayed (and metered) by a task of their own as they
    /// arrive.
    fn relay_stream(self, resp: upstream::Response) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(32);
        let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        }));
        let (upstream_head, resp) = resp.into_parts();
        let r = relayed(&upstream_head, &self.request_id, None, body);
        tokio::spawn(self.pump(resp, tx));
        r
    }

    /// Relays a stream's events to `tx` while metering them, and settles once. A client that
    /// left (`tx` closed) is not waited for: the stream is drained for up to the drain timeout
    /// to learn its usage.
    async fn pump(self, mut resp: upstream::Body, tx: mpsc::Sender<Bytes>) {
        let p = self.proxy.clone();
        let mut client = true;
        let pricer = self.pricer();
        let mut meter = StreamMeter::new(self.flavor);
        let idle = Duration::from_secs(p.cfg.upstream_timeout_seconds);
        let drain = Duration::from_secs(p.cfg.drain_timeout_seconds);
        let mut drain_until: Option<Instant> = None;
        // The settlement is queued as soon as the stream's usage is final (before the end
        // marker goes out: a client that saw the end sees its charge).
        let mut settled = false;
        loop {
            let wait = match drain_until {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => idle,
            };
            let chunk = match tokio::time::timeout(wait, upstream::next_chunk(&mut resp)).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(request_id = %self.request_id, error = %e, "upstream stream broke");
                    break;
                }
                Err(_) => {
                    tracing::warn!(request_id = %self.request_id, client, "upstream stream stalled");
                    break;
                }
            };
            let out = meter.push(chunk, &pricer);
            if meter.finished && !settled {
                p.settle(self.charge(meter.usage, true, meter.output_chars));
                settled = true;
            }
            if client {
                for b in out {
                    if tx.send(b).await.is_err() {
                        client = false;
                        drain_until = Some(Instant::now() + drain);
                        break;
                    }
                }
            }
        }
        if let Some(rest) = meter.finish(&pricer) {
            if client {
                let _ = tx.send(rest).await;
            }
        }
        drop(tx);
        if !settled {
            // Ended without its end marker: broken, stalled, or the client left and the drain
            // ran out. OpenAI-style usage is final once seen; Anthropic's is not.
            let complete =
                meter.usage.is_some() && (meter.finished || self.flavor != Flavor::Messages);
            p.settle(self.charge(meter.usage, complete, meter.output_chars));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_sends_the_host_its_base_url_names_and_its_key() {
        let host = |base: &str| {
            let t = Target::new(Upstream::OpenRouter, base, "k");
            t.host.map(|h| h.to_str().expect("ascii").to_owned())
        };
        assert_eq!(
            host("http://127.0.0.1:8080/v1").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host("https://openrouter.ai/api/v1/").as_deref(),
            Some("openrouter.ai")
        );
        assert_eq!(host("https://x.example:443").as_deref(), Some("x.example"));
        assert_eq!(host("http://x.example:80/").as_deref(), Some("x.example"));
        assert_eq!(
            host("http://x.example:443/").as_deref(),
            Some("x.example:443")
        );
        assert_eq!(host("not a url"), None);

        let mut from = HeaderMap::new();
        from.insert(header::HOST, HeaderValue::from_static("172.16.0.1:9090"));
        from.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer vm"));
        from.insert("x-title", HeaderValue::from_static("mine"));
        let sent = forward_headers(
            &from,
            &Target::new(Upstream::Anthropic, "https://api.anthropic.com", "sk"),
        )
        .expect("headers");
        assert_eq!(sent[header::HOST], "api.anthropic.com");
        assert_eq!(sent["x-api-key"], "sk");
        assert_eq!(sent["x-title"], "mine");
        assert!(sent.get(header::AUTHORIZATION).is_none());
    }
}
