//! Prices, estimates and costs (bridge-and-ai.md §7). 1 credit = USD 0.01, 1 credit =
//! 1,000,000 microcredits, so USD × 10⁸ = microcredits; every amount charged is rounded up.

use crate::config::PriceEntry;
use std::collections::HashMap;
use std::sync::RwLock;

/// Microcredits per USD.
pub const MICRO_PER_USD: f64 = 100.0 * 1_000_000.0;

/// `ceil(usd × 10⁸)`, without charging an extra microcredit for floating-point noise
/// (`0.0000036 × 10⁸` is `360.00000000000006`).
pub fn usd_to_micro(usd: f64) -> i64 {
    if !usd.is_finite() || usd <= 0.0 {
        return 0;
    }
    let x = usd * MICRO_PER_USD;
    let r = x.round();
    if (x - r).abs() < 1e-6 {
        r as i64
    } else {
        x.ceil() as i64
    }
}

/// `cost_credits` as reported: micro ÷ 10⁶.
pub fn micro_to_credits(micro: i64) -> f64 {
    micro as f64 / 1_000_000.0
}

/// A model's price (USD per token) and its known bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub max_output_tokens: Option<u64>,
    pub context_tokens: Option<u64>,
}

impl From<&PriceEntry> for Price {
    fn from(e: &PriceEntry) -> Self {
        Price {
            input: e.input_usd_per_mtok / 1e6,
            output: e.output_usd_per_mtok / 1e6,
            cache_read: e.cache_read_usd_per_mtok.map(|p| p / 1e6),
            cache_write: e.cache_write_usd_per_mtok.map(|p| p / 1e6),
            max_output_tokens: e.max_output_tokens,
            context_tokens: e.context_tokens,
        }
    }
}

/// Token counts an upstream reported (or the proxy counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_write: u64,
    pub cache_read: u64,
}

impl Price {
    /// USD for these counts; cache tokens cost the input price unless priced separately.
    pub fn cost_usd(&self, t: Tokens) -> f64 {
        t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_write as f64 * self.cache_write.unwrap_or(self.input)
            + t.cache_read as f64 * self.cache_read.unwrap_or(self.input)
    }

    /// `min(ceil(body_bytes / 3), context_tokens)`.
    pub fn input_estimate(&self, body_bytes: usize) -> u64 {
        let est = (body_bytes as u64).div_ceil(3);
        self.context_tokens.map_or(est, |c| est.min(c))
    }

    /// The hold for a request: input estimate at the input price plus the output bound at the
    /// output price, in microcredits.
    pub fn estimate_micro(&self, input_est: u64, output_bound: u64) -> i64 {
        usd_to_micro(input_est as f64 * self.input + output_bound as f64 * self.output)
    }
}

/// Operator prices (always win) over prices loaded from the upstream's model list.
#[derive(Debug, Default)]
pub struct PriceTable {
    operator: HashMap<String, Price>,
    loaded: RwLock<HashMap<String, Price>>,
}

impl PriceTable {
    pub fn new(entries: &[PriceEntry]) -> Self {
        PriceTable {
            operator: entries
                .iter()
                .map(|e| (e.model.clone(), Price::from(e)))
                .collect(),
            loaded: RwLock::new(HashMap::new()),
        }
    }

    /// The price of `model`, if known.
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.operator.get(model) {
            return Some(*p);
        }
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .copied()
    }

    /// Replaces the loaded prices with those of an OpenRouter-style model list
    /// (`data[].pricing.prompt/completion` in USD per token, as strings); returns how many.
    pub fn load_model_list(&self, list: &serde_json::Value) -> usize {
        let mut loaded = HashMap::new();
        for m in list["data"].as_array().into_iter().flatten() {
            let Some(id) = m["id"].as_str() else { continue };
            let num = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.parse::<f64>().ok(),
                v => v.as_f64(),
            };
            let (Some(input), Some(output)) = (
                num(&m["pricing"]["prompt"]),
                num(&m["pricing"]["completion"]),
            ) else {
                continue;
            };
            if input < 0.0 || output < 0.0 {
                // OpenRouter lists "-1" for router models whose price varies.
                continue;
            }
            let cache_read = num(&m["pricing"]["input_cache_read"]);
            let cache_write = num(&m["pricing"]["input_cache_write"]);
            let max_out = m["top_provider"]["max_completion_tokens"].as_u64();
            let ctx = m["context_length"]
                .as_u64()
                .or(m["top_provider"]["context_length"].as_u64());
            loaded.insert(
                id.to_owned(),
                Price {
                    input,
                    output,
                    cache_read,
                    cache_write,
                    max_output_tokens: max_out,
                    context_tokens: ctx,
                },
            );
        }
        let n = loaded.len();
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_rounds_up_but_not_for_float_noise() {
        assert_eq!(usd_to_micro(0.0000036), 360);
        assert_eq!(usd_to_micro(0.00000361), 361);
        assert_eq!(usd_to_micro(0.000003601), 361);
        assert_eq!(usd_to_micro(1e-9), 1);
        assert_eq!(usd_to_micro(0.0), 0);
        assert_eq!(usd_to_micro(-1.0), 0);
        assert_eq!(usd_to_micro(f64::NAN), 0);
    }

    #[test]
    fn estimate_follows_the_spec() {
        let p = Price::from(&PriceEntry {
            model: "m".into(),
            input_usd_per_mtok: 3.0,
            output_usd_per_mtok: 15.0,
            cache_read_usd_per_mtok: None,
            cache_write_usd_per_mtok: None,
            max_output_tokens: None,
            context_tokens: Some(100),
        });
        // 1000 bytes → 334 tokens, capped at the context of 100.
        assert_eq!(p.input_estimate(1000), 100);
        assert_eq!(p.input_estimate(10), 4);
        // 100 × $3/M + 1000 × $15/M = $0.0153 = 1,530,000 micro.
        assert_eq!(p.estimate_micro(100, 1000), 1_530_000);
    }

    #[test]
    fn operator_prices_win_over_loaded_ones() {
        let t = PriceTable::new(&[PriceEntry {
            model: "a/x".into(),
            input_usd_per_mtok: 1.0,
            output_usd_per_mtok: 2.0,
            cache_read_usd_per_mtok: None,
            cache_write_usd_per_mtok: None,
            max_output_tokens: None,
            context_tokens: None,
        }]);
        let n = t.load_model_list(&serde_json::json!({"data": [
            {"id": "a/x", "pricing": {"prompt": "0.5", "completion": "0.5"}},
            {"id": "b/y", "pricing": {"prompt": "0.000001", "completion": "0.000004"},
             "context_length": 1000, "top_provider": {"max_completion_tokens": 50}},
            {"id": "router", "pricing": {"prompt": "-1", "completion": "-1"}},
        ]}));
        assert_eq!(n, 2);
        assert_eq!(t.get("a/x").map(|p| p.input), Some(1e-6));
        let y = t.get("b/y").expect("loaded");
        assert_eq!(
            (y.max_output_tokens, y.context_tokens),
            (Some(50), Some(1000))
        );
        assert!(t.get("router").is_none());
    }
}
