//! Per-subject attribution, budgets and rates (bridge-and-ai.md §9): an app serving its own
//! users names them with `X-Rigbox-Subject` (or the body's `user`) and may cap each with
//! `X-Rigbox-Subject-Budget` / `-Rate`. The wallet stays the hard cap; these are the app's
//! own policy, checked against settled spend and admitted requests in trailing windows.

use crate::error::GatewayError;
use axum::http::{HeaderMap, StatusCode};
use rigbox_types::wallet::{SubjectUse, WalletError};
use serde_json::{json, Map};
use std::future::Future;

/// Longest subject ID.
pub const MAX_SUBJECT_CHARS: usize = 256;
/// Longest window a limit may use: 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 86_400;

const MALFORMED: &str = "Malformed X-Rigbox-Subject-Budget/-Rate header: expected '<amount>;period=<window>' (amount is credits, or a request count with a 'req' suffix).";

/// The subject of a request: the header, else the body's `user` (`user`: that field when it
/// is a string); trimmed, empty = none.
pub fn subject_of(headers: &HeaderMap, user: Option<&str>) -> Result<Option<String>, GatewayError> {
    let raw = match headers.get("x-rigbox-subject") {
        Some(v) => v
            .to_str()
            .map_err(|_| GatewayError::invalid("X-Rigbox-Subject must be text."))?,
        None => user.unwrap_or_default(),
    };
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_SUBJECT_CHARS {
        return Err(GatewayError::invalid(format!(
            "The subject is longer than {MAX_SUBJECT_CHARS} characters."
        )));
    }
    Ok(Some(s.to_owned()))
}

/// An amount: credits (microcredits) or a request count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Micro(i64),
    Requests(u64),
}

/// One limit: at most `amount` per trailing `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub amount: Amount,
    pub window_secs: u64,
}

/// The limits a request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectLimits {
    pub budget: Option<Limit>,
    pub rates: Vec<Limit>,
}

fn malformed() -> GatewayError {
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "subject_limit_malformed",
        MALFORMED,
    )
}

/// `<n>s|m|h|d` or bare seconds, 1 s to 30 days.
pub fn parse_window(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<u64>().ok()?.checked_mul(mult)?;
    (1..=MAX_WINDOW_SECS).contains(&secs).then_some(secs)
}

fn parse_amount(s: &str) -> Option<Amount> {
    let s = s.trim();
    if let Some(n) = s.strip_suffix("req") {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return n.parse().ok().map(Amount::Requests);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let credits: f64 = s.parse().ok()?;
    (credits.is_finite() && credits >= 0.0)
        .then(|| Amount::Micro((credits * 1_000_000.0).round() as i64))
}

/// `<amount>;<param>=<window>`.
fn parse_limit(v: &str, param: &str) -> Option<Limit> {
    let (amount, rest) = v.split_once(';')?;
    let (key, window) = rest.split_once('=')?;
    if key.trim() != param {
        return None;
    }
    Some(Limit {
        amount: parse_amount(amount)?,
        window_secs: parse_window(window)?,
    })
}

fn credits_of(micro: i64) -> f64 {
    micro as f64 / 1_000_000.0
}

fn amount_text(a: Amount) -> String {
    match a {
        Amount::Micro(m) => format!("{} credits", credits_of(m)),
        Amount::Requests(n) => format!("{n} requests"),
    }
}

impl SubjectLimits {
    /// Reads the limit headers; any malformed one is a 400.
    pub fn parse(headers: &HeaderMap) -> Result<Self, GatewayError> {
        let mut budgets = headers.get_all("x-rigbox-subject-budget").iter();
        let budget = match (budgets.next(), budgets.next()) {
            (None, _) => None,
            (Some(v), None) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| parse_limit(s, "period"))
                    .ok_or_else(malformed)?,
            ),
            (Some(_), Some(_)) => return Err(malformed()),
        };
        let mut rates = Vec::new();
        for v in headers.get_all("x-rigbox-subject-rate") {
            let s = v.to_str().map_err(|_| malformed())?;
            rates.push(parse_limit(s, "window").ok_or_else(malformed)?);
        }
        Ok(SubjectLimits { budget, rates })
    }

    pub fn is_empty(&self) -> bool {
        self.budget.is_none() && self.rates.is_empty()
    }

    /// Checks the budget first, then each rate, against `use_in(window)`.
    pub async fn check<F, Fut>(&self, subject: &str, use_in: F) -> Result<(), GatewayError>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<SubjectUse, WalletError>>,
    {
        let limits = self
            .budget
            .iter()
            .map(|l| (true, l))
            .chain(self.rates.iter().map(|l| (false, l)));
        for (is_budget, limit) in limits {
            let used = use_in(limit.window_secs).await.map_err(|e| {
                tracing::error!(error = %e, "cannot read a subject's use");
                GatewayError::internal()
            })?;
            let over = match limit.amount {
                Amount::Micro(max) => used.credits_micro >= max,
                Amount::Requests(max) => used.requests >= max,
            };
            if over {
                return Err(refusal(subject, is_budget, limit, used));
            }
        }
        Ok(())
    }
}

fn refusal(subject: &str, budget: bool, limit: &Limit, used: SubjectUse) -> GatewayError {
    let (status, code, message) = if budget {
        (
            StatusCode::PAYMENT_REQUIRED,
            "subject_over_budget",
            format!(
                "Subject '{subject}' is over its budget: {} per {}s.",
                amount_text(limit.amount),
                limit.window_secs
            ),
        )
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            "subject_rate_limited",
            format!(
                "Subject '{subject}' hit a rate limit: {} per {}s.",
                amount_text(limit.amount),
                limit.window_secs
            ),
        )
    };
    let (kind, amount, used) = match limit.amount {
        Amount::Micro(m) => (
            "credits",
            json!(credits_of(m)),
            json!({"credits": credits_of(used.credits_micro), "credits_micro": used.credits_micro}),
        ),
        Amount::Requests(n) => ("requests", json!(n), json!({"requests": used.requests})),
    };
    let resets = rigbox_types::time_fmt::from_micros(
        rigbox_types::time_fmt::now_micros() + (limit.window_secs as i64) * 1_000_000,
    );
    let mut d = Map::new();
    d.insert("reason".into(), code.into());
    d.insert("subject".into(), subject.into());
    d.insert(
        "limit".into(),
        json!({"kind": kind, "amount": amount, "window_seconds": limit.window_secs}),
    );
    d.insert("used".into(), used);
    d.insert("resets_at".into(), resets.into());
    d.insert("retry_after".into(), limit.window_secs.into());
    let e = GatewayError::new(status, code, message).with_details(d);
    if budget {
        e
    } else {
        e.with_retry_after(limit.window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_amounts() {
        assert_eq!(parse_window("90"), Some(90));
        assert_eq!(parse_window("5m"), Some(300));
        assert_eq!(parse_window("2h"), Some(7200));
        assert_eq!(parse_window("30d"), Some(MAX_WINDOW_SECS));
        for bad in ["31d", "0", "", "m", "-5s", "1.5h", "5w"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
        assert_eq!(parse_amount("100req"), Some(Amount::Requests(100)));
        assert_eq!(parse_amount("0.5"), Some(Amount::Micro(500_000)));
        assert_eq!(parse_amount("req"), None);
        assert_eq!(parse_amount("-1"), None);
    }

    #[test]
    fn headers_parse_or_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-rigbox-subject-budget",
            "2.5;period=1d".parse().expect("v"),
        );
        h.append(
            "x-rigbox-subject-rate",
            "10req;window=60".parse().expect("v"),
        );
        h.append("x-rigbox-subject-rate", "1;window=1h".parse().expect("v"));
        let l = SubjectLimits::parse(&h).expect("valid");
        assert_eq!(
            l.budget,
            Some(Limit {
                amount: Amount::Micro(2_500_000),
                window_secs: 86_400
            })
        );
        assert_eq!(l.rates.len(), 2);
        for bad in ["2.5", "2.5;window=1d", "x;period=1d", "1;period=40d"] {
            let mut h = HeaderMap::new();
            h.insert("x-rigbox-subject-budget", bad.parse().expect("v"));
            let e = SubjectLimits::parse(&h).expect_err(bad);
            assert_eq!(e.code, "subject_limit_malformed");
            assert_eq!(e.message, MALFORMED);
        }
    }

    #[test]
    fn subject_from_header_or_user() {
        let mut h = HeaderMap::new();
        let body = Some(" tenant-1 ");
        assert_eq!(
            subject_of(&h, body).expect("ok").as_deref(),
            Some("tenant-1")
        );
        h.insert("x-rigbox-subject", "  ".parse().expect("v"));
        assert_eq!(subject_of(&h, body).expect("ok"), None);
        h.insert("x-rigbox-subject", "x".repeat(257).parse().expect("v"));
        assert_eq!(
            subject_of(&h, body).expect_err("long").code,
            "invalid_request"
        );
    }
}
