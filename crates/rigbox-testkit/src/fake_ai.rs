//! A fake upstream AI provider for tests and benchmarks.
//!
//! One loopback HTTP server speaks the three upstream wire formats the AI proxy talks to, exactly
//! as the real providers do, so the real `openai` and `anthropic` SDKs parse its answers (streams
//! included; `tests/fake_ai.rs` proves it with the real SDKs):
//!
//! | Family | Base URL | Routes under the base |
//! |---|---|---|
//! | OpenRouter-compatible | [`FakeAi::openrouter_url`] `http://127.0.0.1:P/api/v1` | `POST /chat/completions`, `POST /completions`, `POST /responses`, `POST /embeddings`, `GET /models` |
//! | Anthropic-native | [`FakeAi::anthropic_url`] `http://127.0.0.1:P` | `POST /v1/messages`, `POST /v1/messages/count_tokens` |
//! | Brave Search | [`FakeAi::brave_url`] `http://127.0.0.1:P` | `GET`/`POST /res/v1/{path}` (`web/search` answers results) |
//!
//! Anything else answers 404.
//!
//! # Authentication
//!
//! - OpenRouter routes (all of them, `/models` included): `Authorization: Bearer <openrouter_key>`,
//!   else 401 with an OpenAI-style body `{"error":{"message","type","param","code"}}`.
//! - Anthropic routes: `x-api-key: <anthropic_key>` or `Authorization: Bearer <anthropic_key>`
//!   (the `anthropic` SDK ≥ 2 sends its API key as a Bearer token), else 401
//!   `{"type":"error","error":{"type":"authentication_error","message"},"request_id"}`. An
//!   `anthropic-version` header is required (400 `invalid_request_error` without it).
//! - Brave: `X-Subscription-Token: <brave_key>`, else 422 `SUBSCRIPTION_TOKEN_INVALID` (what
//!   Brave really answers for a missing or wrong token).
//!
//! # Determinism
//!
//! - `chars` = Unicode scalar values of the request's text: every string under chat `messages`
//!   (their `content`, or the `text` of content parts), completions `prompt`, responses `input`
//!   and `instructions`, embeddings `input`, Anthropic `system` and `messages`. A number (a token
//!   id in a token-array prompt) counts as 4 chars.
//! - input tokens (`prompt_tokens` / `input_tokens`) = `max(1, ceil(chars / 4))`.
//! - The natural answer length is [`FakeConfig::completion_tokens`] (12) tokens, or the
//!   `completion_tokens=N` scenario. The request's own limit caps it (`max_completion_tokens`,
//!   `max_tokens`, `max_output_tokens`); when it does, the answer is truncated: `finish_reason:
//!   "length"`, Anthropic `stop_reason: "max_tokens"`, Responses `status: "incomplete"` (and its
//!   stream ends with `response.incomplete` instead of `response.completed`).
//! - The text is one word per output token, from a fixed word list; a stream carries it in
//!   [`FakeConfig::chunks`] (4) content deltas (or `chunks=N`), at most one per word.
//! - Cost (OpenRouter routes): `input × prompt price + output × completion price` from
//!   [`FakeConfig::prices`] (USD per million tokens; unknown models use
//!   [`FakeConfig::default_price`]), reported as `usage.cost` (with `is_byok: false`) when the
//!   request has `"usage": {"include": true}` (chat, completions, responses) and always on
//!   embeddings. Anthropic never reports a cost.
//! - IDs count up per server: `gen-fake-N` (chat, completions, embeddings), `resp_fakeN`
//!   (responses), `msg_fakeN` (messages).
//!
//! # Scenarios
//!
//! Each request may carry `x-fake-scenario: a=1,b,c=2` (on top of
//! [`FakeConfig::default_scenario`]); an unknown name answers 400 `text/plain`.
//!
//! | Name | Effect |
//! |---|---|
//! | `error=STATUS` | the family's real error body with that status (after auth); `retry-after: 1` on 429 |
//! | `headers_delay_ms=N` | wait N ms before answering at all |
//! | `chunk_delay_ms=N` | wait N ms between body frames (SSE events) |
//! | `stall_after=N` | send N frames (JSON: N body bytes), then hang with the connection open |
//! | `break_after=N` | send N frames (JSON: N body bytes), then drop the connection mid-body |
//! | `stream_error_after=N` | after N frames, the family's in-stream error event, then end the stream |
//! | `no_usage` | no usage anywhere (no usage chunk, `usage` omitted or `null`) |
//! | `no_cost` | usage without `cost` |
//! | `cost_usd=X` | report cost X instead of the price-table cost (same conditions) |
//! | `prompt_tokens=N` | report N input tokens instead of the computed count |
//! | `completion_tokens=N` | natural answer length N tokens (the request's limit still caps it) |
//! | `chunks=N` | N content deltas in a stream (at most one per word) |
//! | `cache_read_tokens=N` | Anthropic `cache_read_input_tokens` / OpenAI `prompt_tokens_details.cached_tokens` |
//! | `cache_write_tokens=N` | Anthropic `cache_creation_input_tokens` |
//! | `processing_comment` | OpenRouter: start the stream with `: OPENROUTER PROCESSING` comments |
//! | `delta_usage_full` | Anthropic: `message_delta` usage also carries input and cache counts |
//!
//! A "frame" is one SSE event (`data: …\n\n`, `event: …\ndata: …\n\n` or a `: comment\n\n`).
//!
//! # Records
//!
//! [`FakeAi::requests`] lists every request as received; [`FakeAi::reported`] lists, in order,
//! the usage and cost of every answer whose usage actually went out (a stream broken or stalled
//! before its usage event is not listed). Both can be switched off ([`FakeConfig::record`]) for
//! benchmarks; [`FakeAi::request_count`] always counts.

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The request header that selects scenarios (comma-separated, see the module docs).
pub const SCENARIO_HEADER: &str = "x-fake-scenario";

/// The largest request body the fake reads.
const MAX_BODY_BYTES: usize = 64 << 20;

/// The words of every answer, cycled.
const WORDS: [&str; 16] = [
    "The",
    "fake",
    "upstream",
    "answers",
    "with",
    "predictable",
    "words",
    "so",
    "tests",
    "can",
    "count",
    "every",
    "token",
    "it",
    "sends",
    "back",
];

/// A model's fake price (USD per million tokens) and limits, also listed by `GET /models`.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePrice {
    pub model: String,
    pub prompt_usd_per_mtok: f64,
    pub completion_usd_per_mtok: f64,
    pub context_length: u64,
    pub max_completion_tokens: u64,
}

impl FakePrice {
    pub fn new(model: &str, prompt_usd_per_mtok: f64, completion_usd_per_mtok: f64) -> Self {
        Self {
            model: model.to_owned(),
            prompt_usd_per_mtok,
            completion_usd_per_mtok,
            context_length: 128_000,
            max_completion_tokens: 16_384,
        }
    }

    /// USD for these token counts.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        input_tokens as f64 * self.prompt_usd_per_mtok / 1e6
            + output_tokens as f64 * self.completion_usd_per_mtok / 1e6
    }
}

/// Configuration of a [`FakeAi`].
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Expected `Authorization: Bearer` key of the OpenRouter routes.
    pub openrouter_key: String,
    /// Expected `x-api-key` (or Bearer) key of the Anthropic routes.
    pub anthropic_key: String,
    /// Expected `X-Subscription-Token` of the Brave routes.
    pub brave_key: String,
    /// Keep [`FakeAi::requests`] and [`FakeAi::reported`] (off for benchmarks).
    pub record: bool,
    /// Scenarios applied to every request before its own `x-fake-scenario` header.
    pub default_scenario: String,
    /// Natural answer length in tokens.
    pub completion_tokens: u64,
    /// Content deltas per stream.
    pub chunks: usize,
    /// Embedding vector length when the request gives no `dimensions`.
    pub embedding_dimensions: usize,
    /// The price table (also the `GET /models` list, in this order).
    pub prices: Vec<FakePrice>,
    /// Price of models not in `prices`.
    pub default_price: FakePrice,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            openrouter_key: "sk-or-fake".into(),
            anthropic_key: "sk-ant-fake".into(),
            brave_key: "brave-fake".into(),
            record: true,
            default_scenario: String::new(),
            completion_tokens: 12,
            chunks: 4,
            embedding_dimensions: 8,
            prices: vec![
                FakePrice::new("openai/gpt-4o", 2.5, 10.0),
                FakePrice::new("openai/gpt-4o-mini", 0.15, 0.6),
                FakePrice {
                    context_length: 200_000,
                    max_completion_tokens: 64_000,
                    ..FakePrice::new("anthropic/claude-sonnet-4", 3.0, 15.0)
                },
                FakePrice {
                    context_length: 8_192,
                    max_completion_tokens: 0,
                    ..FakePrice::new("openai/text-embedding-3-small", 0.02, 0.0)
                },
            ],
            default_price: FakePrice::new("*", 1.0, 2.0),
        }
    }
}

impl FakeConfig {
    /// The price the fake uses for `model`.
    pub fn price(&self, model: &str) -> &FakePrice {
        self.prices
            .iter()
            .find(|p| p.model == model)
            .unwrap_or(&self.default_price)
    }

    /// The fake's prices as operator price entries.
    pub fn price_entries(&self) -> Vec<rigbox_ai::config::PriceEntry> {
        self.prices
            .iter()
            .map(|p| rigbox_ai::config::PriceEntry {
                model: p.model.clone(),
                input_usd_per_mtok: p.prompt_usd_per_mtok,
                output_usd_per_mtok: p.completion_usd_per_mtok,
                cache_read_usd_per_mtok: None,
                cache_write_usd_per_mtok: None,
                max_output_tokens: (p.max_completion_tokens > 0).then_some(p.max_completion_tokens),
                context_tokens: Some(p.context_length),
            })
            .collect()
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/api/v1/chat/completions` or `/res/v1/web/search?q=x`.
    pub path: String,
    /// Header names are lowercase; values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as received.
    pub raw: Bytes,
}

impl Seen {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The metered endpoint an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    Messages,
    BraveSearch,
}

/// The usage and cost one answer reported to its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The answer's `id` (`gen-fake-N`, `resp_fakeN`, `msg_fakeN`; `brave-fake-N` for Brave,
    /// whose answers carry no id).
    pub id: String,
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    /// `prompt_tokens` / `input_tokens` (Anthropic: without cache tokens).
    pub input_tokens: u64,
    /// `completion_tokens` / `output_tokens` (0 for embeddings and Brave).
    pub output_tokens: u64,
    /// Anthropic `cache_read_input_tokens`; OpenAI `cached_tokens` (part of `input_tokens`).
    pub cache_read_tokens: u64,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_write_tokens: u64,
    /// `usage.cost` as sent, if it was.
    pub cost_usd: Option<f64>,
}

/// The fake upstream, serving on a loopback port until dropped.
pub struct FakeAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeAi {
    /// Starts with [`FakeConfig::default`] on `127.0.0.1:0`.
    pub async fn start() -> FakeAi {
        Self::start_with(FakeConfig::default()).await
    }

    /// Starts with `config` on `127.0.0.1:0`.
    pub async fn start_with(config: FakeConfig) -> FakeAi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake AI upstream");
        Self::start_on(listener, config)
    }

    /// Serves on `listener` (on the current Tokio runtime). Panics when
    /// `config.default_scenario` does not parse.
    pub fn start_on(listener: TcpListener, config: FakeConfig) -> FakeAi {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let mut default_scenario = Scenario::default();
        if let Err(e) = default_scenario.apply(&config.default_scenario) {
            panic!("FakeConfig::default_scenario: {e}");
        }
        let (shutdown, mut stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            default_scenario,
            seen: Mutex::new(Vec::new()),
            reported: Mutex::new(Vec::new()),
            request_count: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            shutdown,
        });
        // hyper directly, without a router: the fake shares the benchmark's cores with the
        // proxy it serves (bench/ai-proxy), so what it costs per request is kept small.
        let serving = shared.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.wait_for(|stopped| *stopped) => return,
                };
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // SSE frames must leave at once, not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(serving.clone(), tcp));
            }
        });
        FakeAi { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// OpenRouter-style base including the path prefix: requests go to `{this}/chat/completions`.
    pub fn openrouter_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Anthropic base: requests go to `{this}/v1/messages`.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Brave base: requests go to `{this}/res/v1/web/search?q=…`.
    pub fn brave_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    /// The proxy's `[ai]` configured against this fake: its three upstreams with its keys
    /// (Brave at 0.005 USD a request), its price list as the operator's table (so the proxy's
    /// costs match the fake's), no price refresh.
    pub fn ai_config(&self) -> rigbox_ai::AiConfig {
        use rigbox_ai::config::{BraveConfig, UpstreamConfig};
        let cfg = self.config();
        rigbox_ai::AiConfig {
            base_url: Some(self.openrouter_url()),
            api_key: Some(cfg.openrouter_key.clone()),
            anthropic: Some(UpstreamConfig {
                base_url: self.anthropic_url(),
                api_key: cfg.anthropic_key.clone(),
            }),
            brave: Some(BraveConfig {
                base_url: self.brave_url(),
                api_key: cfg.brave_key.clone(),
                usd_per_request: 0.005,
            }),
            prices: cfg.price_entries(),
            price_refresh: false,
            ..rigbox_ai::AiConfig::default()
        }
    }

    /// Every request received so far, in arrival order (empty when recording is off).
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// The usage and cost of every answer that reported them, in the order they went out
    /// (empty when recording is off).
    pub fn reported(&self) -> Vec<Reported> {
        lock(&self.shared.reported).clone()
    }

    /// What the answer with this `id` reported.
    pub fn reported_for(&self, id: &str) -> Option<Reported> {
        lock(&self.shared.reported)
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Requests received, recorded or not.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count.load(Ordering::Relaxed)
    }

    /// Forgets the recorded requests and reports.
    pub fn clear(&self) {
        lock(&self.shared.seen).clear();
        lock(&self.shared.reported).clear();
    }
}

impl Drop for FakeAi {
    fn drop(&mut self) {
        // Stops accepting, closes idle connections and ends stalled streams.
        self.shared.shutdown.send_replace(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Shared {
    config: FakeConfig,
    default_scenario: Scenario,
    seen: Mutex<Vec<Seen>>,
    reported: Mutex<Vec<Reported>>,
    request_count: AtomicU64,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn report(&self, r: Reported) {
        if self.config.record {
            lock(&self.reported).push(r);
        }
    }
}

/// Per-request behaviour (see the module docs).
#[derive(Debug, Clone, Default)]
struct Scenario {
    error: Option<StatusCode>,
    headers_delay: Option<Duration>,
    chunk_delay: Option<Duration>,
    stall_after: Option<usize>,
    break_after: Option<usize>,
    stream_error_after: Option<usize>,
    no_usage: bool,
    no_cost: bool,
    cost_usd: Option<f64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    chunks: Option<usize>,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    processing_comment: bool,
    delta_usage_full: bool,
}

impl Scenario {
    fn apply(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            let num = || -> Result<u64, String> {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("fake scenario {name} needs an integer value"))
            };
            let ms = || num().map(Duration::from_millis);
            match name {
                "error" => {
                    let code = num()?;
                    let status = u16::try_from(code)
                        .ok()
                        .filter(|c| (400..600).contains(c))
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or_else(|| format!("fake scenario error={code}: not a 4xx/5xx"))?;
                    self.error = Some(status);
                }
                "headers_delay_ms" => self.headers_delay = Some(ms()?),
                "chunk_delay_ms" => self.chunk_delay = Some(ms()?),
                "stall_after" => self.stall_after = Some(num()? as usize),
                "break_after" => self.break_after = Some(num()? as usize),
                "stream_error_after" => self.stream_error_after = Some(num()? as usize),
                "no_usage" => self.no_usage = true,
                "no_cost" => self.no_cost = true,
                "cost_usd" => {
                    let x = value
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|x| x.is_finite())
                        .ok_or("fake scenario cost_usd needs a number")?;
                    self.cost_usd = Some(x);
                }
                "prompt_tokens" => self.prompt_tokens = Some(num()?),
                "completion_tokens" => self.completion_tokens = Some(num()?),
                "chunks" => self.chunks = Some((num()? as usize).max(1)),
                "cache_read_tokens" => self.cache_read_tokens = num()?,
                "cache_write_tokens" => self.cache_write_tokens = num()?,
                "processing_comment" => self.processing_comment = true,
                "delta_usage_full" => self.delta_usage_full = true,
                other => return Err(format!("unknown fake scenario {other:?}")),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    OpenRouter,
    Anthropic,
    Brave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Responses,
    Embeddings,
    Models,
    Messages,
    CountTokens,
    Brave,
}

impl Route {
    fn of(method: &Method, path: &str) -> Option<Route> {
        if let Some(rest) = path.strip_prefix("/api/v1") {
            return match (method, rest.trim_end_matches('/')) {
                (&Method::POST, "/chat/completions") => Some(Route::Chat),
                (&Method::POST, "/completions") => Some(Route::Completions),
                (&Method::POST, "/responses") => Some(Route::Responses),
                (&Method::POST, "/embeddings") => Some(Route::Embeddings),
                (&Method::GET, "/models") => Some(Route::Models),
                _ => None,
            };
        }
        match (method, path) {
            (&Method::POST, "/v1/messages") => Some(Route::Messages),
            (&Method::POST, "/v1/messages/count_tokens") => Some(Route::CountTokens),
            (&Method::GET | &Method::POST, p) if p.starts_with("/res/v1/") => Some(Route::Brave),
            _ => None,
        }
    }

    fn family(self) -> Family {
        match self {
            Route::Messages | Route::CountTokens => Family::Anthropic,
            Route::Brave => Family::Brave,
            _ => Family::OpenRouter,
        }
    }
}

/// An answer before the scenario's delivery effects (delays, stalls, breaks).
struct Reply {
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: ReplyBody,
    /// What to record once the frame with this index has gone out (JSON: index 0).
    report: Option<(usize, Reported)>,
}

enum ReplyBody {
    Json(Bytes),
    Sse(Vec<Bytes>),
}

/// Serves one connection (HTTP/1.1) until it ends or the fake shuts down, which closes it once
/// its answer in progress is out.
async fn serve_connection(shared: Arc<Shared>, tcp: tokio::net::TcpStream) {
    let mut stop = shared.shutdown.subscribe();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(shared, req.map(Body::new)).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
    let mut conn = std::pin::pin!(conn);
    let stopped = tokio::select! {
        _ = conn.as_mut() => false,
        r = stop.wait_for(|stopped| *stopped) => r.is_ok(),
    };
    if stopped {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let raw = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "fake-ai: request body unreadable or too large",
            )
        }
    };
    shared.request_count.fetch_add(1, Ordering::Relaxed);
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    if shared.config.record {
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: json.clone().unwrap_or(Value::Null),
            raw: raw.clone(),
        };
        lock(&shared.seen).push(seen);
    }
    let mut scenario = shared.default_scenario.clone();
    if let Some(spec) = parts.headers.get(SCENARIO_HEADER) {
        let applied = spec
            .to_str()
            .map_err(|_| "x-fake-scenario is not ASCII".to_owned())
            .and_then(|s| scenario.apply(s));
        if let Err(e) = applied {
            return plain(StatusCode::BAD_REQUEST, &format!("fake-ai: {e}"));
        }
    }
    if let Some(d) = scenario.headers_delay {
        tokio::time::sleep(d).await;
    }
    let Some(route) = Route::of(&parts.method, parts.uri.path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": "Not Found", "code": 404}}),
        );
    };
    let family = route.family();
    if let Some(refusal) = check_auth(&shared.config, family, &parts.headers) {
        return refusal;
    }
    if family == Family::Anthropic && !parts.headers.contains_key("anthropic-version") {
        return error_response(
            family,
            StatusCode::BAD_REQUEST,
            Some("anthropic-version: header is required"),
        );
    }
    if let Some(status) = scenario.error {
        return error_response(family, status, None);
    }
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = match route {
        Route::Models => models(&shared.config),
        Route::Brave => brave(&parts.uri, json.as_ref(), n),
        _ => {
            let Some(body) = json.as_ref().filter(|v| v.is_object()) else {
                let msg = match family {
                    Family::Anthropic => "There was an error parsing the body of your request.",
                    _ => "We could not parse the JSON body of your request.",
                };
                return error_response(family, StatusCode::BAD_REQUEST, Some(msg));
            };
            let gen = match Gen::new(&shared.config, &scenario, route, body, n) {
                Ok(g) => g,
                Err(msg) => return error_response(family, StatusCode::BAD_REQUEST, Some(msg)),
            };
            match route {
                Route::Chat => chat(&gen, &scenario, body),
                Route::Completions => completions(&gen, &scenario, body),
                Route::Responses => responses(&gen, &scenario, body),
                Route::Embeddings => embeddings(&shared.config, &gen, body),
                Route::Messages => messages(&gen, &scenario),
                _ => count_tokens(&gen),
            }
        }
    };
    deliver(&shared, &scenario, family, reply)
}

/// The family's refusal when the request does not carry the expected key.
fn check_auth(config: &FakeConfig, family: Family, headers: &HeaderMap) -> Option<Response> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = get("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let (given, expected) = match family {
        Family::OpenRouter => (bearer, &config.openrouter_key),
        Family::Anthropic => (get("x-api-key").or(bearer), &config.anthropic_key),
        Family::Brave => (get("x-subscription-token"), &config.brave_key),
    };
    let message = match (family, given) {
        (_, Some(k)) if k == expected => return None,
        (Family::Brave, _) => {
            return Some(error_response(
                family,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            ))
        }
        (Family::OpenRouter, Some(_)) => "Incorrect API key provided.",
        (Family::OpenRouter, None) => "No auth credentials found",
        (Family::Anthropic, Some(_)) => "invalid x-api-key",
        (Family::Anthropic, None) => "x-api-key header is required",
    };
    Some(error_response(
        family,
        StatusCode::UNAUTHORIZED,
        Some(message),
    ))
}

/// The provider's real error answer for `status`.
fn error_response(family: Family, status: StatusCode, message: Option<&str>) -> Response {
    let code = status.as_u16();
    let (body, headers): (Value, Vec<(&str, String)>) = match family {
        Family::OpenRouter => {
            let (ty, err_code, default_msg) = match code {
                400 => ("invalid_request_error", Value::Null, "Invalid request."),
                401 => (
                    "invalid_request_error",
                    json!("invalid_api_key"),
                    "Incorrect API key provided.",
                ),
                402 => (
                    "insufficient_quota",
                    json!("insufficient_quota"),
                    "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
                ),
                403 => (
                    "permission_error",
                    Value::Null,
                    "You are not allowed to use this model.",
                ),
                404 => (
                    "invalid_request_error",
                    json!("model_not_found"),
                    "The model does not exist or you do not have access to it.",
                ),
                429 => (
                    "requests",
                    json!("rate_limit_exceeded"),
                    "Rate limit reached for requests. Please try again in 1s.",
                ),
                c if c >= 500 => (
                    "server_error",
                    Value::Null,
                    "The server had an error while processing your request. Sorry about that!",
                ),
                _ => ("invalid_request_error", Value::Null, "Request failed."),
            };
            (
                json!({"error": {
                    "message": message.unwrap_or(default_msg),
                    "type": ty,
                    "param": null,
                    "code": err_code,
                }}),
                Vec::new(),
            )
        }
        Family::Anthropic => {
            let (ty, default_msg) = match code {
                400 => ("invalid_request_error", "Invalid request."),
                401 => ("authentication_error", "invalid x-api-key"),
                402 => ("billing_error", "Your credit balance is too low."),
                403 => ("permission_error", "Your API key does not have permission."),
                404 => ("not_found_error", "Not found."),
                413 => (
                    "request_too_large",
                    "Request exceeds the maximum allowed size.",
                ),
                429 => (
                    "rate_limit_error",
                    "Number of requests has exceeded your per-minute rate limit.",
                ),
                504 => ("timeout_error", "Request timed out."),
                529 => ("overloaded_error", "Overloaded"),
                c if c >= 500 => ("api_error", "Internal server error"),
                _ => ("invalid_request_error", "Request failed."),
            };
            let request_id = "req_fake_error".to_owned();
            (
                json!({
                    "type": "error",
                    "error": {"type": ty, "message": message.unwrap_or(default_msg)},
                    "request_id": request_id,
                }),
                vec![("request-id", request_id)],
            )
        }
        Family::Brave => {
            let (err_code, detail, meta) = match code {
                422 => (
                    "SUBSCRIPTION_TOKEN_INVALID",
                    "The provided subscription token is invalid.",
                    json!({"component": "authentication"}),
                ),
                429 => (
                    "RATE_LIMITED",
                    "Request rate limit exceeded for plan.",
                    json!({"component": "rate_limiter"}),
                ),
                c if c >= 500 => ("INTERNAL", "Internal error.", json!({})),
                _ => (
                    "VALIDATION",
                    "Unable to validate request parameter(s)",
                    json!({}),
                ),
            };
            (
                json!({
                    "type": "ErrorResponse",
                    "error": {
                        "id": "00000000-0000-4000-8000-000000000000",
                        "status": code,
                        "code": err_code,
                        "detail": message.unwrap_or(detail),
                        "meta": meta,
                    },
                    "time": unix_now(),
                }),
                Vec::new(),
            )
        }
    };
    let mut resp = json_response(status, &body);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    if code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(json_bytes(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut resp = Response::new(Body::from(text.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Unicode scalar values of the text in `v` (see the module docs).
fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => match (o.get("text"), o.get("content")) {
            (Some(t), _) => text_chars(t),
            (None, Some(c)) => text_chars(c),
            (None, None) => 0,
        },
        Value::Number(_) => 4,
        _ => 0,
    }
}

/// Input tokens for `chars` characters.
pub fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

/// One generated answer: its numbers and text.
struct Gen {
    n: u64,
    route: Route,
    model: String,
    created: u64,
    stream: bool,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    /// The request's limit cut the answer short.
    truncated: bool,
    text: String,
    pieces: Vec<String>,
    /// Usage goes out at all.
    usage: bool,
    /// The `usage.cost` that goes out, if any.
    cost: Option<f64>,
}

impl Gen {
    fn new(
        config: &FakeConfig,
        sc: &Scenario,
        route: Route,
        body: &Value,
        n: u64,
    ) -> Result<Gen, &'static str> {
        let family = route.family();
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Err(match family {
                Family::Anthropic => "model: Field required",
                _ => "you must provide a model parameter",
            });
        };
        let limit_of = |keys: &[&str]| keys.iter().find_map(|k| body.get(*k)?.as_u64());
        let (chars, limit) = match route {
            Route::Chat => (
                text_chars(&body["messages"]),
                limit_of(&["max_completion_tokens", "max_tokens"]),
            ),
            Route::Completions => (text_chars(&body["prompt"]), limit_of(&["max_tokens"])),
            Route::Responses => (
                text_chars(&body["input"]) + text_chars(&body["instructions"]),
                limit_of(&["max_output_tokens"]),
            ),
            Route::Embeddings => (text_chars(&body["input"]), Some(0)),
            Route::Messages | Route::CountTokens => {
                if !body["messages"].is_array() {
                    return Err("messages: Field required");
                }
                if route == Route::Messages && body.get("max_tokens").is_none() {
                    return Err("max_tokens: Field required");
                }
                (
                    text_chars(&body["system"]) + text_chars(&body["messages"]),
                    limit_of(&["max_tokens"]),
                )
            }
            Route::Models | Route::Brave => (0, None),
        };
        let input = sc.prompt_tokens.unwrap_or_else(|| tokens_for_chars(chars));
        let natural = sc.completion_tokens.unwrap_or(config.completion_tokens);
        let output = limit.map_or(natural, |l| l.min(natural));
        let truncated = route != Route::Embeddings && output < natural;
        let (text, pieces) = words(output, sc.chunks.unwrap_or(config.chunks));
        let cost_asked =
            route == Route::Embeddings || body["usage"]["include"].as_bool() == Some(true);
        let usage = !sc.no_usage;
        let cost =
            (family == Family::OpenRouter && usage && cost_asked && !sc.no_cost).then(|| {
                sc.cost_usd
                    .unwrap_or_else(|| config.price(model).cost_usd(input, output))
            });
        Ok(Gen {
            n,
            route,
            model: model.to_owned(),
            created: unix_now(),
            stream: body["stream"].as_bool() == Some(true),
            input,
            output,
            cache_read: sc.cache_read_tokens,
            cache_write: sc.cache_write_tokens,
            truncated,
            text,
            pieces,
            usage,
            cost,
        })
    }

    fn id(&self) -> String {
        match self.route {
            Route::Responses => format!("resp_fake{}", self.n),
            Route::Messages | Route::CountTokens => format!("msg_fake{}", self.n),
            _ => format!("gen-fake-{}", self.n),
        }
    }

    fn reported(&self, endpoint: Endpoint, stream: bool) -> Reported {
        Reported {
            id: self.id(),
            endpoint,
            model: self.model.clone(),
            stream,
            input_tokens: self.input,
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            cost_usd: self.cost,
        }
    }

    fn finish_reason(&self) -> &'static str {
        if self.truncated {
            "length"
        } else {
            "stop"
        }
    }

    /// OpenAI Chat Completions / Completions `usage`.
    fn openai_usage(&self) -> OpenAiUsage {
        OpenAiUsage {
            prompt_tokens: self.input,
            completion_tokens: self.output,
            total_tokens: self.input + self.output,
            prompt_tokens_details: CachedTokens {
                cached_tokens: self.cache_read,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: 0,
            },
            cost: self.cost_fields(),
        }
    }

    /// OpenRouter's cost fields of a `usage`, when the cost goes out.
    fn cost_fields(&self) -> Option<CostFields> {
        self.cost.map(|cost| CostFields {
            cost,
            is_byok: false,
        })
    }

    fn add_cost(&self, usage: &mut Value) {
        if let (Some(u), Some(Value::Object(fields))) =
            (usage.as_object_mut(), self.cost_fields().map(|c| json!(c)))
        {
            u.extend(fields);
        }
    }
}

// The answers the benchmark asks for (bench/ai-proxy), as types: built per request, a tree of
// `Value`s costs the fake several times what serializing these does. `()` is `null`.

/// OpenAI's `usage` of Chat Completions and Completions, with OpenRouter's cost when asked for.
#[derive(serde::Serialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
    #[serde(flatten)]
    cost: Option<CostFields>,
}

/// OpenRouter's `usage.cost` and `usage.is_byok`.
#[derive(serde::Serialize)]
struct CostFields {
    cost: f64,
    is_byok: bool,
}

#[derive(serde::Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

/// A Chat Completions answer, not streamed.
#[derive(serde::Serialize)]
struct ChatCompletion<'a> {
    id: String,
    provider: &'static str,
    model: &'a str,
    object: &'static str,
    created: u64,
    choices: [ChatChoice<'a>; 1],
    system_fingerprint: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsage>,
}

#[derive(serde::Serialize)]
struct ChatChoice<'a> {
    logprobs: (),
    finish_reason: &'static str,
    native_finish_reason: &'static str,
    index: u32,
    message: ChatMessage<'a>,
}

#[derive(serde::Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: (),
    reasoning: (),
}

/// `count` words and their split into at most `chunks` non-empty pieces.
fn words(count: u64, chunks: usize) -> (String, Vec<String>) {
    let count = count as usize;
    let mut text = String::with_capacity(count * 8);
    let mut ends = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[i % WORDS.len()]);
        ends.push(text.len());
    }
    let pieces_n = chunks.min(count);
    let mut pieces = Vec::with_capacity(pieces_n);
    let mut start = 0;
    for k in 0..pieces_n {
        let last_word = (k + 1) * count / pieces_n;
        let end = ends[last_word - 1];
        pieces.push(text[start..end].to_owned());
        start = end;
    }
    (text, pieces)
}

/// `v` as JSON text (`serde_json::to_vec`: `Display` goes through `fmt::Write`, twice as slow,
/// and the fake shares the benchmark's cores with what it measures).
fn json_bytes(v: &impl serde::Serialize) -> Bytes {
    framed(b"", v, b"")
}

/// `head`, `v` as JSON text, `tail`, in one buffer.
fn framed(head: &[u8], v: &impl serde::Serialize, tail: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head);
    serde_json::to_writer(&mut out, v).expect("the fake's answers always serialize");
    out.extend_from_slice(tail);
    Bytes::from(out)
}

fn data_frame(v: &Value) -> Bytes {
    framed(b"data: ", v, b"\n\n")
}

fn event_frame(name: &str, v: &Value) -> Bytes {
    framed(format!("event: {name}\ndata: ").as_bytes(), v, b"\n\n")
}

const DONE: &[u8] = b"data: [DONE]\n\n";
const PROCESSING: &[u8] = b": OPENROUTER PROCESSING\n\n";

fn json_reply(body: &impl serde::Serialize, report: Option<Reported>) -> Reply {
    Reply {
        content_type: "application/json",
        headers: Vec::new(),
        body: ReplyBody::Json(json_bytes(body)),
        report: report.map(|r| (0, r)),
    }
}

fn sse_reply(frames: Vec<Bytes>, report: Option<(usize, Reported)>) -> Reply {
    Reply {
        content_type: "text/event-stream",
        headers: vec![("cache-control", "no-cache".to_owned())],
        body: ReplyBody::Sse(frames),
        report,
    }
}

/// A stream's frames with the OpenRouter in-stream error after `after` frames.
fn openrouter_stream_error(gen: &Gen, object: &str, frames: &mut Vec<Bytes>, after: usize) {
    frames.truncate(after);
    frames.push(data_frame(&json!({
        "id": gen.id(),
        "object": object,
        "created": gen.created,
        "model": gen.model,
        "provider": "Fake",
        "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    })));
}

fn chat(gen: &Gen, sc: &Scenario, body: &Value) -> Reply {
    if !gen.stream {
        let answer = ChatCompletion {
            id: gen.id(),
            provider: "Fake",
            model: &gen.model,
            object: "chat.completion",
            created: gen.created,
            choices: [ChatChoice {
                logprobs: (),
                finish_reason: gen.finish_reason(),
                native_finish_reason: gen.finish_reason(),
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &gen.text,
                    refusal: (),
                    reasoning: (),
                },
            }],
            system_fingerprint: (),
            usage: gen.usage.then(|| gen.openai_usage()),
        };
        let report = gen
            .usage
            .then(|| gen.reported(Endpoint::ChatCompletions, false));
        return json_reply(&answer, report);
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": gen.id(),
            "provider": "Fake",
            "model": gen.model,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish, "logprobs": null}],
            "system_fingerprint": null,
        });
        if include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage is asked for.
            c["usage"] = Value::Null;
        }
        data_frame(&c)
    };
    let mut frames = Vec::with_capacity(gen.pieces.len() + 6);
    if sc.processing_comment {
        frames.push(Bytes::from_static(PROCESSING));
        frames.push(Bytes::from_static(PROCESSING));
    }
    frames.push(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for p in &gen.pieces {
        frames.push(chunk(json!({"content": p}), Value::Null));
    }
    frames.push(chunk(json!({}), json!(gen.finish_reason())));
    let mut report = None;
    if include_usage && gen.usage {
        report = Some((frames.len(), gen.reported(Endpoint::ChatCompletions, true)));
        frames.push(data_frame(&json!({
            "id": gen.id(),
            "provider": "Fake",
            "model": gen.model,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "choices": [],
            "system_fingerprint": null,
            "usage": gen.openai_usage(),
        })));
    }
    frames.push(Bytes::from_static(DONE));
    if let Some(after) = sc.stream_error_after.filter(|a| *a < frames.len()) {
        openrouter_stream_error(gen, "chat.completion.chunk", &mut frames, after);
        report = report.filter(|(i, _)| *i < after);
    }
    sse_reply(frames, report)
}

fn completions(gen: &Gen, sc: &Scenario, body: &Value) -> Reply {
    let chunk = |text: &str, finish: Value| {
        json!({
            "id": gen.id(),
            "provider": "Fake",
            "object": "text_completion",
            "created": gen.created,
            "model": gen.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            "system_fingerprint": null,
        })
    };
    if !gen.stream {
        let mut v = chunk(&gen.text, json!(gen.finish_reason()));
        if gen.usage {
            v["usage"] = json!(gen.openai_usage());
        }
        let report = gen
            .usage
            .then(|| gen.reported(Endpoint::Completions, false));
        return json_reply(&v, report);
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let mut frames = Vec::with_capacity(gen.pieces.len() + 5);
    if sc.processing_comment {
        frames.push(Bytes::from_static(PROCESSING));
        frames.push(Bytes::from_static(PROCESSING));
    }
    for p in &gen.pieces {
        frames.push(data_frame(&chunk(p, Value::Null)));
    }
    frames.push(data_frame(&chunk("", json!(gen.finish_reason()))));
    let mut report = None;
    if include_usage && gen.usage {
        report = Some((frames.len(), gen.reported(Endpoint::Completions, true)));
        let mut last = chunk("", Value::Null);
        last["choices"] = json!([]);
        last["usage"] = json!(gen.openai_usage());
        frames.push(data_frame(&last));
    }
    frames.push(Bytes::from_static(DONE));
    if let Some(after) = sc.stream_error_after.filter(|a| *a < frames.len()) {
        openrouter_stream_error(gen, "text_completion", &mut frames, after);
        report = report.filter(|(i, _)| *i < after);
    }
    sse_reply(frames, report)
}

fn responses(gen: &Gen, sc: &Scenario, body: &Value) -> Reply {
    let id = gen.id();
    let msg_id = format!("msg_fake{}", gen.n);
    let done_status = if gen.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let item = |status: &str, content: Value| json!({"id": msg_id, "type": "message", "status": status, "role": "assistant", "content": content});
    let usage = || {
        let mut u = json!({
            "input_tokens": gen.input,
            "input_tokens_details": {"cached_tokens": gen.cache_read, "cache_write_tokens": gen.cache_write},
            "output_tokens": gen.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": gen.input + gen.output,
        });
        gen.add_cost(&mut u);
        u
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": id,
            "object": "response",
            "created_at": gen.created,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "metadata": {},
            "model": gen.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
        })
    };
    let final_usage = || if gen.usage { usage() } else { Value::Null };
    let full = || {
        response(
            done_status,
            json!([item(done_status, json!([part(&gen.text)]))]),
            final_usage(),
        )
    };
    if !gen.stream {
        let mut v = full();
        if !gen.usage {
            if let Some(o) = v.as_object_mut() {
                o.remove("usage");
            }
        }
        let report = gen.usage.then(|| gen.reported(Endpoint::Responses, false));
        return json_reply(&v, report);
    }
    let pending = response("in_progress", json!([]), Value::Null);
    let mut events: Vec<(&str, Value)> = vec![
        ("response.created", json!({"response": pending})),
        ("response.in_progress", json!({"response": pending})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part("")}),
        ),
    ];
    for p in &gen.pieces {
        events.push((
            "response.output_text.delta",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": gen.text, "logprobs": []}),
    ));
    events.push((
        "response.content_part.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part(&gen.text)}),
    ));
    events.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": item(done_status, json!([part(&gen.text)]))}),
    ));
    let last = if gen.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push((last, json!({"response": full()})));
    if let Some(after) = sc.stream_error_after.filter(|a| *a < events.len()) {
        events.truncate(after);
        events.push((
            "error",
            json!({"code": "server_error", "message": "The server had an error while processing your request.", "param": null}),
        ));
    }
    let mut report = None;
    let mut frames = Vec::with_capacity(events.len() + 2);
    if sc.processing_comment {
        frames.push(Bytes::from_static(PROCESSING));
    }
    for (seq, (ty, mut v)) in events.into_iter().enumerate() {
        v["type"] = json!(ty);
        v["sequence_number"] = json!(seq);
        if ty == last && gen.usage {
            report = Some((frames.len(), gen.reported(Endpoint::Responses, true)));
        }
        frames.push(event_frame(ty, &v));
    }
    sse_reply(frames, report)
}

fn embeddings(config: &FakeConfig, gen: &Gen, body: &Value) -> Reply {
    let input = &body["input"];
    let inputs = match input {
        Value::Array(a) if a.iter().all(Value::is_number) && !a.is_empty() => 1,
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let dims = body["dimensions"]
        .as_u64()
        .map_or(config.embedding_dimensions, |d| d as usize)
        .max(1);
    let base64 = body["encoding_format"].as_str() == Some("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let vector = (0..dims).map(|j| ((i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.flat_map(f32::to_le_bytes).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector.collect::<Vec<f32>>())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let mut v = json!({
        "id": gen.id(),
        "object": "list",
        "data": data,
        "model": gen.model,
        "provider": "Fake",
    });
    if gen.usage {
        let mut u = json!({"prompt_tokens": gen.input, "total_tokens": gen.input});
        gen.add_cost(&mut u);
        v["usage"] = u;
    }
    let report = gen.usage.then(|| Reported {
        output_tokens: 0,
        ..gen.reported(Endpoint::Embeddings, false)
    });
    json_reply(&v, report)
}

fn models(config: &FakeConfig) -> Reply {
    let data: Vec<Value> = config
        .prices
        .iter()
        .map(|p| {
            let owner = p.model.split('/').next().unwrap_or("fake");
            json!({
                "id": p.model,
                "canonical_slug": p.model,
                "name": format!("Fake: {}", p.model),
                "created": 1_700_000_000,
                "description": "A model of the fake upstream.",
                "context_length": p.context_length,
                "architecture": {
                    "modality": "text->text",
                    "input_modalities": ["text"],
                    "output_modalities": ["text"],
                    "tokenizer": "Other",
                    "instruct_type": null,
                },
                "pricing": {
                    "prompt": per_token(p.prompt_usd_per_mtok),
                    "completion": per_token(p.completion_usd_per_mtok),
                    "request": "0",
                    "image": "0",
                    "web_search": "0",
                    "internal_reasoning": "0",
                },
                "top_provider": {
                    "context_length": p.context_length,
                    "max_completion_tokens": p.max_completion_tokens,
                    "is_moderated": false,
                },
                "per_request_limits": null,
                "supported_parameters": ["max_tokens", "temperature", "stream", "stop"],
                "object": "model",
                "owned_by": owner,
            })
        })
        .collect();
    json_reply(&json!({"data": data}), None)
}

/// USD per token as OpenRouter writes it (a decimal string, never an exponent).
fn per_token(usd_per_mtok: f64) -> String {
    format!("{}", usd_per_mtok / 1e6)
}

fn messages(gen: &Gen, sc: &Scenario) -> Reply {
    let id = gen.id();
    let stop_reason = if gen.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    let usage = |output: u64| {
        json!({
            "input_tokens": gen.input,
            "cache_creation_input_tokens": gen.cache_write,
            "cache_read_input_tokens": gen.cache_read,
            "output_tokens": output,
            "service_tier": "standard",
        })
    };
    let content = if gen.text.is_empty() {
        json!([])
    } else {
        json!([{"type": "text", "text": gen.text}])
    };
    if !gen.stream {
        let mut v = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": gen.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
        });
        if gen.usage {
            v["usage"] = usage(gen.output);
        }
        let report = gen.usage.then(|| gen.reported(Endpoint::Messages, false));
        let mut reply = json_reply(&v, report);
        reply
            .headers
            .push(("request-id", format!("req_fake{}", gen.n)));
        return reply;
    }
    let mut start = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": gen.model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
    });
    if gen.usage {
        start["usage"] = usage(1);
    }
    let mut events: Vec<(&str, Value)> = vec![("message_start", json!({"message": start}))];
    if !gen.pieces.is_empty() {
        events.push((
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
    }
    events.push(("ping", json!({})));
    for p in &gen.pieces {
        events.push((
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    if !gen.pieces.is_empty() {
        events.push(("content_block_stop", json!({"index": 0})));
    }
    let mut delta = json!({"delta": {"stop_reason": stop_reason, "stop_sequence": null}});
    if gen.usage {
        delta["usage"] = if sc.delta_usage_full {
            let mut u = usage(gen.output);
            if let Some(o) = u.as_object_mut() {
                o.remove("service_tier");
            }
            u
        } else {
            json!({"output_tokens": gen.output})
        };
    }
    let delta_index = events.len();
    events.push(("message_delta", delta));
    events.push(("message_stop", json!({})));
    let mut report = gen
        .usage
        .then(|| (delta_index, gen.reported(Endpoint::Messages, true)));
    if let Some(after) = sc.stream_error_after.filter(|a| *a < events.len()) {
        events.truncate(after);
        events.push((
            "error",
            json!({"error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        report = report.filter(|(i, _)| *i < after);
    }
    let frames = events
        .into_iter()
        .map(|(ty, mut v)| {
            v["type"] = json!(ty);
            event_frame(ty, &v)
        })
        .collect();
    let mut reply = sse_reply(frames, report);
    reply
        .headers
        .push(("request-id", format!("req_fake{}", gen.n)));
    reply
}

fn count_tokens(gen: &Gen) -> Reply {
    json_reply(&json!({"input_tokens": gen.input}), None)
}

fn brave(uri: &axum::http::Uri, body: Option<&Value>, n: u64) -> Reply {
    let params: Vec<(String, String)> = Query::try_from_uri(uri)
        .map(|Query(p)| p)
        .unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| body.and_then(|b| b[name].as_str()).map(str::to_owned))
    };
    let q = param("q").unwrap_or_default();
    let count = param("count")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(3)
        .clamp(1, 20);
    let kind = uri
        .path()
        .trim_start_matches("/res/v1/")
        .split('/')
        .next()
        .unwrap_or("web")
        .to_owned();
    let results: Vec<Value> = (1..=count)
        .map(|i| {
            json!({
                "title": format!("Result {i} for {q}"),
                "url": format!("https://example.com/{kind}/{i}"),
                "is_source_local": false,
                "is_source_both": false,
                "description": format!("A fake <strong>{q}</strong> result, number {i}."),
                "language": "en",
                "family_friendly": true,
                "type": "search_result",
                "subtype": "generic",
                "is_live": false,
                "meta_url": {
                    "scheme": "https",
                    "netloc": "example.com",
                    "hostname": "example.com",
                    "favicon": "https://imgs.search.brave.com/fake.png",
                    "path": format!("› {kind} › {i}"),
                },
            })
        })
        .collect();
    let query = json!({
        "original": q,
        "show_strict_warning": false,
        "is_navigational": false,
        "is_news_breaking": false,
        "spellcheck_off": true,
        "country": "us",
        "bad_results": false,
        "should_fallback": false,
        "postal_code": "",
        "city": "",
        "header_country": "",
        "more_results_available": true,
        "state": "",
    });
    let v = if kind == "web" {
        json!({
            "type": "search",
            "query": query,
            "mixed": {
                "type": "mixed",
                "main": (0..count).map(|i| json!({"type": "web", "index": i, "all": false})).collect::<Vec<_>>(),
                "top": [],
                "side": [],
            },
            "web": {"type": "search", "results": results, "family_friendly": true},
        })
    } else {
        json!({"type": kind, "query": query, "results": results})
    };
    let report = Reported {
        id: format!("brave-fake-{n}"),
        endpoint: Endpoint::BraveSearch,
        model: String::new(),
        stream: false,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cost_usd: None,
    };
    json_reply(&v, Some(report))
}

/// How a body ends after its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Break,
    Stall,
}

/// Sends `reply` with the scenario's delivery effects.
fn deliver(shared: &Arc<Shared>, sc: &Scenario, family: Family, reply: Reply) -> Response {
    let Reply {
        content_type,
        headers,
        body,
        mut report,
    } = reply;
    let (mut frames, is_json) = match body {
        ReplyBody::Json(b) => (vec![b], true),
        ReplyBody::Sse(f) => (f, false),
    };
    let (end, cut) = match (sc.break_after, sc.stall_after) {
        (Some(n), _) => (End::Break, n),
        (None, Some(n)) => (End::Stall, n),
        (None, None) => (End::Complete, usize::MAX),
    };
    if end != End::Complete {
        if is_json {
            // A JSON answer is cut after `cut` bytes; its usage never arrives whole.
            let b = &frames[0];
            frames = vec![b.slice(..cut.min(b.len()))];
            frames.retain(|f| !f.is_empty());
            report = None;
        } else {
            frames.truncate(cut);
            report = report.filter(|(i, _)| *i < cut);
        }
    }
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    if family == Family::OpenRouter {
        builder = builder.header("x-request-id", "req_fake");
    }
    let body = if end == End::Complete && sc.chunk_delay.is_none() {
        if let Some((_, r)) = report {
            shared.report(r);
        }
        if frames.len() == 1 {
            Body::from(frames.remove(0))
        } else {
            Body::from_stream(futures::stream::iter(
                frames.into_iter().map(Ok::<_, std::convert::Infallible>),
            ))
        }
    } else {
        let emitter = Emitter {
            frames: frames.into_iter(),
            index: 0,
            delay: sc.chunk_delay,
            end,
            report,
            shared: shared.clone(),
            shutdown: shared.shutdown.subscribe(),
            finished: false,
        };
        Body::from_stream(futures::stream::unfold(emitter, Emitter::next))
    };
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "fake-ai: bad response"))
}

/// Writes frames one by one with the scenario's pacing, then ends, breaks or stalls.
struct Emitter {
    frames: std::vec::IntoIter<Bytes>,
    index: usize,
    delay: Option<Duration>,
    end: End,
    report: Option<(usize, Reported)>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

impl Emitter {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Emitter)> {
        if self.finished {
            return None;
        }
        if let Some(frame) = self.frames.next() {
            if self.index > 0 {
                if let Some(d) = self.delay {
                    tokio::time::sleep(d).await;
                }
            }
            if self.report.as_ref().is_some_and(|(i, _)| *i == self.index) {
                if let Some((_, r)) = self.report.take() {
                    self.shared.report(r);
                }
            }
            self.index += 1;
            return Some((Ok(frame), self));
        }
        self.finished = true;
        match self.end {
            End::Complete => None,
            End::Break => {
                // Let hyper flush what was sent before the connection goes down; an error
                // in the same poll would discard its buffered headers and frames.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(aborted("break_after")), self))
            }
            End::Stall => {
                // Hang until the fake shuts down, then drop the connection.
                let _ = self.shutdown.wait_for(|stopped| *stopped).await;
                Some((Err(aborted("stall_after")), self))
            }
        }
    }
}

fn aborted(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("fake-ai scenario {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_into_pieces() {
        let (text, pieces) = words(5, 2);
        assert_eq!(text, "The fake upstream answers with");
        assert_eq!(pieces, vec!["The fake", " upstream answers with"]);
        assert_eq!(pieces.concat(), text);
        let (text, pieces) = words(2, 10);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces.concat(), text);
        assert_eq!(words(0, 4), (String::new(), Vec::new()));
    }

    #[test]
    fn token_counts_follow_the_text() {
        let msgs = json!([
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": [{"type": "text", "text": "efghi"}]},
        ]);
        assert_eq!(text_chars(&msgs), 9);
        assert_eq!(tokens_for_chars(9), 3);
        assert_eq!(tokens_for_chars(0), 1);
    }

    #[test]
    fn scenarios_parse() {
        let mut s = Scenario::default();
        s.apply("error=429, chunks=3,no_cost,cost_usd=0.5")
            .expect("valid scenario");
        assert_eq!(s.error, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(s.chunks, Some(3));
        assert!(s.no_cost);
        assert_eq!(s.cost_usd, Some(0.5));
        assert!(Scenario::default().apply("nope").is_err());
        assert!(Scenario::default().apply("error=200").is_err());
    }

    #[test]
    fn prices_are_plain_decimals() {
        assert_eq!(per_token(2.5), "0.0000025");
        assert_eq!(per_token(10.0), "0.00001");
    }
}
