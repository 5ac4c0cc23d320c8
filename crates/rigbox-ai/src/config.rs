//! `[ai]` in `rigboxd.toml` (bridge-and-ai.md §5): the upstreams and their keys, model aliases,
//! the allow-list of `/v1/models`, the price table and the proxy's bounds. Provider keys live
//! here and nowhere else; `Debug` never prints them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The managed AI proxy's configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// `false`: every proxy route answers 503 `provider_unavailable`.
    pub enabled: bool,
    /// OpenRouter-compatible base URL, e.g. `https://openrouter.ai/api/v1` (requests go to
    /// `{base_url}/chat/completions`, …). Unset: those routes answer 503.
    pub base_url: Option<String>,
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Anthropic-native upstream for `/v1/messages` (requests go to `{base_url}/v1/messages`).
    pub anthropic: Option<UpstreamConfig>,
    /// Brave Search upstream for `/brave/{path}`.
    pub brave: Option<BraveConfig>,
    /// Model name a caller sends → model passed upstream.
    pub model_aliases: BTreeMap<String, String>,
    /// When non-empty, `/v1/models` lists only these.
    pub models_allow: Vec<String>,
    /// Operator prices; they win over prices loaded from the upstream.
    pub prices: Vec<PriceEntry>,
    /// Output bound written into requests that carry none.
    pub default_max_output_tokens: u64,
    /// How long a stream whose client left is still read for its usage.
    pub drain_timeout_seconds: u64,
    /// Load prices hourly from the upstream model list.
    pub price_refresh: bool,
    /// No upstream response headers within this → 504 `upstream_timeout`.
    pub upstream_timeout_seconds: u64,
    /// Largest request body forwarded.
    pub max_body_bytes: usize,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: true,
            base_url: None,
            api_key: None,
            anthropic: None,
            brave: None,
            model_aliases: BTreeMap::new(),
            models_allow: Vec::new(),
            prices: Vec::new(),
            default_max_output_tokens: 8192,
            drain_timeout_seconds: 120,
            price_refresh: true,
            upstream_timeout_seconds: 120,
            max_body_bytes: 32 << 20,
        }
    }
}

impl AiConfig {
    /// The OpenRouter-compatible upstream, when both its URL and key are set.
    pub fn openrouter(&self) -> Option<UpstreamConfig> {
        Some(UpstreamConfig {
            base_url: self.base_url.clone()?,
            api_key: self.api_key.clone()?,
        })
    }
}

impl fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiConfig")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("anthropic", &self.anthropic)
            .field("brave", &self.brave)
            .field("model_aliases", &self.model_aliases)
            .field("models_allow", &self.models_allow)
            .field("prices", &self.prices.len())
            .field("default_max_output_tokens", &self.default_max_output_tokens)
            .field("drain_timeout_seconds", &self.drain_timeout_seconds)
            .field("price_refresh", &self.price_refresh)
            .finish()
    }
}

/// An upstream's base URL and key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: String,
    #[serde(skip_serializing)]
    pub api_key: String,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Brave Search: an upstream charged per 2xx answer.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BraveConfig {
    pub base_url: String,
    #[serde(skip_serializing)]
    pub api_key: String,
    pub usd_per_request: f64,
}

impl fmt::Debug for BraveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brave")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("usd_per_request", &self.usd_per_request)
            .finish()
    }
}

/// One row of the price table (USD per million tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cache_read_usd_per_mtok: Option<f64>,
    pub cache_write_usd_per_mtok: Option<f64>,
    pub max_output_tokens: Option<u64>,
    pub context_tokens: Option<u64>,
}
