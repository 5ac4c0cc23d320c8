//! HTTP client of the API and the bridge: JSON in and out, `-v` diagnostics, automatic retries of
//! 429 (honouring `Retry-After`, at most 60 s, 3 times), errors mapped to [`CliError`].

use crate::error::{exit, CliError, CliResult};
use reqwest::Method;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A client of one API base (`<origin>/api/v1` or `<bridge>/rig/v1`).
#[derive(Debug, Clone)]
pub struct Api {
    pub origin: String,
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    verbose: bool,
}

/// A raw response.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Api {
    /// A client of `<origin><prefix>`. Hosts under `.localhost` resolve to loopback (RFC 6761)
    /// even where the system resolver does not know them.
    pub fn new(origin: &str, prefix: &str, key: Option<String>, verbose: bool) -> CliResult<Self> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("rig/", env!("CARGO_PKG_VERSION")));
        if let Ok(u) = reqwest::Url::parse(origin) {
            if let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) {
                if host == "localhost" || host.ends_with(".localhost") {
                    b = b.resolve(host, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
                }
            }
        } else {
            return Err(CliError::usage(format!("invalid API URL {origin:?}")));
        }
        let http = b.build().map_err(|e| {
            CliError::new(
                "network_error",
                format!("cannot build HTTP client: {e}"),
                exit::ERROR,
            )
        })?;
        Ok(Self {
            origin: origin.to_owned(),
            base: format!("{origin}{prefix}"),
            key,
            http,
            verbose,
        })
    }

    /// Fails with `not_logged_in` unless a credential is configured.
    pub fn require_key(&self) -> CliResult<()> {
        if self.key.is_some() {
            Ok(())
        } else {
            Err(CliError::not_logged_in())
        }
    }

    /// Sends a request and returns the raw response (no status mapping), retrying 429s.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> CliResult<Raw> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let start = Instant::now();
            let resp = req.send().await.map_err(|e| {
                CliError::new(
                    "network_error",
                    format!("cannot reach {}: {}", self.origin, root_cause(&e)),
                    exit::ERROR,
                )
            })?;
            let status = resp.status().as_u16();
            if self.verbose {
                eprintln!(
                    "> {method} {url} -> {status} ({} ms)",
                    start.elapsed().as_millis()
                );
            }
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let retry_after = headers
                .iter()
                .find(|(k, _)| k == "retry-after")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            let bytes = resp.bytes().await.map_err(|e| {
                CliError::new(
                    "network_error",
                    format!("reading the response failed: {e}"),
                    exit::ERROR,
                )
            })?;
            if status == 429 && attempt < 3 {
                attempt += 1;
                let wait = retry_after.unwrap_or(1).clamp(1, 60);
                if self.verbose {
                    eprintln!("  rate limited; retry {attempt}/3 in {wait} s");
                }
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return Ok(Raw {
                status,
                headers,
                body: bytes.to_vec(),
            });
        }
    }

    /// Sends a JSON request; 2xx gives the parsed body (`Null` when empty), anything else the
    /// API's error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let raw = self.raw(method, path, body, &[]).await?;
        let parsed: Value = if raw.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw.body).unwrap_or(Value::Null)
        };
        if (200..300).contains(&raw.status) {
            Ok(parsed)
        } else {
            Err(CliError::from_api(raw.status, &parsed))
        }
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Every item of a paginated list, following `next_cursor`.
    pub async fn list_all(&self, path: &str) -> CliResult<Vec<Value>> {
        let mut items = Vec::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut cursor: Option<String> = None;
        loop {
            let p = match &cursor {
                Some(c) => format!("{path}{sep}limit=200&cursor={}", urlencode(c)),
                None => format!("{path}{sep}limit=200"),
            };
            let page = self.get(&p).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(items),
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
