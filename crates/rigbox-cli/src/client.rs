//! HTTP client of the control-plane API (`<api_url>/api/v1`, bearer API key) and of the
//! workspace bridge (`<bridge_url>/rig/v1`, no credential): JSON in and out, `-v` diagnostics
//! (method, URL, status, duration — never credentials), automatic retries of 429 (honouring
//! `Retry-After`, at most 60 s each, 3 times), and every non-2xx answer mapped to a
//! [`CliError`] carrying the API's error envelope and the exit code of cli.md §7.

use crate::error::{CliError, CliResult};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// How often a 429 is retried before it becomes exit code 5.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_SECS: u64 = 60;
/// Page size used when following `next_cursor`.
const PAGE_LIMIT: u32 = 200;

/// A client of one API base.
#[derive(Debug, Clone)]
pub struct Api {
    /// The origin (`http://host:port`), as shown to the user and stored by login.
    pub origin: String,
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    verbose: bool,
}

/// A response as received (`rig api` prints it unchanged).
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
        let url = reqwest::Url::parse(origin)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "invalid API URL {origin:?}: expected http(s)://host[:port]"
                ))
            })?;
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("rig/", env!("CARGO_PKG_VERSION")));
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            if host == "localhost" || host.ends_with(".localhost") {
                b = b.resolve(host, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            }
        }
        let http = b
            .build()
            .map_err(|e| CliError::network(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            origin: origin.to_owned(),
            base: format!("{origin}{prefix}"),
            key,
            http,
            verbose,
        })
    }

    /// The same client with another credential (token login checks a key before saving it).
    pub fn with_key(&self, key: Option<String>) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// Whether a credential is configured.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Fails with `not_logged_in` (exit 2) unless a credential is configured.
    pub fn require_key(&self) -> CliResult<()> {
        if self.has_key() {
            Ok(())
        } else {
            Err(CliError::not_logged_in())
        }
    }

    /// Sends a request and returns the response without status mapping, retrying 429s.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> CliResult<Raw> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let start = Instant::now();
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if self.verbose {
                        eprintln!(
                            "> {method} {url} -> failed ({} ms)",
                            start.elapsed().as_millis()
                        );
                    }
                    return Err(CliError::network(format!(
                        "cannot reach {}: {}",
                        self.origin,
                        root_cause(&e)
                    )));
                }
            };
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let bytes = resp.bytes().await.map_err(|e| {
                CliError::network(format!("reading the answer of {url} failed: {e}"))
            })?;
            if self.verbose {
                eprintln!(
                    "> {method} {url} -> {status} ({} ms)",
                    start.elapsed().as_millis()
                );
            }
            if status == 429 && attempt < RATE_LIMIT_RETRIES {
                attempt += 1;
                let wait = retry_after(&headers);
                if self.verbose {
                    eprintln!("  rate limited; retry {attempt}/{RATE_LIMIT_RETRIES} in {wait} s");
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

    /// Sends a JSON request: a 2xx answer gives the parsed body (`Null` when empty), anything
    /// else the API's error.
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> CliResult<Value> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CliError::usage(format!("cannot encode the request: {e}")))?;
        let raw = self.raw(method, path, body, &[]).await?;
        parse_answer(&raw)
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.call::<Value>(Method::GET, path, None).await
    }

    /// `POST` with a JSON body.
    pub async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> CliResult<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> CliResult<Value> {
        self.call::<Value>(Method::DELETE, path, None).await
    }

    /// Every item of a paginated list, following `next_cursor` to the end.
    pub async fn list_all(&self, path: &str) -> CliResult<Vec<Value>> {
        let mut items = Vec::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut cursor: Option<String> = None;
        loop {
            let p = match &cursor {
                Some(c) => format!("{path}{sep}limit={PAGE_LIMIT}&cursor={}", urlencode(c)),
                None => format!("{path}{sep}limit={PAGE_LIMIT}"),
            };
            let page = self.get(&p).await?;
            match page["items"].as_array() {
                Some(a) => items.extend(a.iter().cloned()),
                None => {
                    return Err(CliError::network(format!(
                        "unexpected answer to GET {path}: no items"
                    )))
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) if !c.is_empty() && cursor.as_deref() != Some(c) => {
                    cursor = Some(c.to_owned())
                }
                _ => return Ok(items),
            }
        }
    }
}

/// Maps a response to its JSON body or its error.
pub fn parse_answer(raw: &Raw) -> CliResult<Value> {
    let parsed = if raw.body.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Null)
    } else {
        serde_json::from_slice(&raw.body).ok()
    };
    match parsed {
        Some(v) if (200..300).contains(&raw.status) => Ok(v),
        None if (200..300).contains(&raw.status) => Err(CliError::network(format!(
            "the server answered HTTP {} with a body that is not JSON",
            raw.status
        ))),
        v => Err(CliError::from_api(raw.status, &v.unwrap_or(Value::Null))),
    }
}

/// Seconds to wait before retrying a 429: `Retry-After`, between 1 and 60.
fn retry_after(headers: &[(String, String)]) -> u64 {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_RETRY_AFTER_SECS)
}

pub use rigbox_types::names::percent_encode as urlencode;

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, body: &str) -> Raw {
        Raw {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_map_to_values_or_errors() {
        assert_eq!(parse_answer(&raw(204, "")).expect("empty ok"), Value::Null);
        assert_eq!(parse_answer(&raw(200, r#"{"a":1}"#)).expect("ok")["a"], 1);
        assert_eq!(
            parse_answer(&raw(200, "<html>")).expect_err("garbage").code,
            "network_error"
        );
        let e = parse_answer(&raw(
            404,
            r#"{"error":{"code":"not_found","message":"No workspace x.","details":{}}}"#,
        ))
        .expect_err("404");
        assert_eq!((e.code.as_str(), e.exit), ("not_found", 3));
        let e = parse_answer(&raw(502, "Bad Gateway")).expect_err("502");
        assert_eq!((e.code.as_str(), e.exit), ("internal", 1));
    }

    #[test]
    fn retry_after_is_bounded() {
        let h = |v: &str| vec![("retry-after".to_owned(), v.to_owned())];
        assert_eq!(retry_after(&h("7")), 7);
        assert_eq!(retry_after(&h("0")), 1);
        assert_eq!(retry_after(&h("3600")), 60);
        assert_eq!(retry_after(&h("soon")), 1);
        assert_eq!(retry_after(&[]), 1);
    }

    #[test]
    fn encoding_and_urls() {
        assert_eq!(urlencode("my ws/ä"), "my%20ws%2F%C3%A4");
        assert_eq!(urlencode("ws-abc_1.2~"), "ws-abc_1.2~");
        assert!(Api::new("not a url", "/api/v1", None, false).is_err());
        assert!(Api::new("ftp://h", "/api/v1", None, false).is_err());
        let a = Api::new("http://rigbox.localhost:8080", "/api/v1", None, false).expect("ok");
        assert!(!a.has_key());
        assert_eq!(a.require_key().expect_err("no key").exit, 2);
        assert!(a.with_key(Some("rb_x".into())).has_key());
    }
}
