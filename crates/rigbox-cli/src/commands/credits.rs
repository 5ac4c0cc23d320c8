//! AI credits and usage (cli.md §6, Account): `credits` in both modes (local mode reads
//! `/users/me/credits`, workspace mode the owner's wallet through `/rig/v1/credits`),
//! `credits ledger` and `usage [--days N]` in local mode, and `usage --subject S [--window W]`
//! inside a workspace (`/rig/v1/usage`).

use super::account::labelled;
use crate::client::{urlencode, Api};
use crate::error::{CliError, CliResult};
use crate::output::{cell, Column, Format, Out, Printer};
use serde_json::{json, Value};

/// Entries `credits ledger` shows when `--limit` is not given.
pub const DEFAULT_LEDGER_LIMIT: u32 = 20;
/// The largest page the API serves.
const PAGE: u32 = 200;

/// Microcredits as credits: at least two decimals, up to six (a charge can be a few
/// microcredits), without trailing zeros beyond the second.
pub fn credits_text(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    let mut frac = format!("{:06}", abs % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac}", abs / 1_000_000)
}

/// [`credits_text`] of a JSON number (empty when absent).
pub fn credits_cell(v: &Value) -> String {
    v.as_i64().map(credits_text).unwrap_or_default()
}

/// The labelled block of a `GET …/credits` body.
fn describe_credits(c: &Value) -> String {
    labelled(&[
        (
            "Available",
            &json!(format!(
                "{} of {} credits",
                credits_cell(&c["remaining_micro"]),
                credits_cell(&c["total_micro"])
            )),
        ),
        ("Balance", &json!(credits_cell(&c["balance_micro"]))),
        ("Reserved", &json!(credits_cell(&c["reserved_micro"]))),
        ("Mode", &c["mode"]),
        ("Period end", &c["period_end"]),
    ])
}

/// `credits`: available / allowance, balance, reserved, mode, period end. `api` is the
/// control-plane API (`/users/me/credits`) or, inside a workspace, the bridge (`/credits`).
pub async fn credits(api: &Api, inside: bool) -> CliResult<Out> {
    let c = if inside {
        api.get("/credits").await?
    } else {
        api.require_key()?;
        api.get("/users/me/credits").await?
    };
    let msg = describe_credits(&c);
    Ok(Out::doc(c).with_message(msg))
}

const LEDGER_COLUMNS: [Column; 6] = [
    ("TIME", "time"),
    ("KIND", "kind"),
    ("AMOUNT", "amount"),
    ("BALANCE", "balance"),
    ("WORKSPACE", "workspace"),
    ("MODEL", "model"),
];

/// The workspace ID `--workspace` names: an ID as given, a name through `GET /workspaces/{ws}`
/// (a deleted workspace is found by its ID only).
async fn workspace_id(api: &Api, ws: &str) -> CliResult<String> {
    if ws.starts_with("ws-") {
        return Ok(ws.to_owned());
    }
    let w = api.get(&format!("/workspaces/{}", urlencode(ws))).await?;
    w["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::network("unexpected answer to GET /workspaces: no id"))
}

/// `credits ledger [--limit N] [--workspace WS]`: the newest `N` entries (following pages).
pub async fn ledger(api: &Api, limit: Option<u32>, workspace: Option<&str>) -> CliResult<Out> {
    api.require_key()?;
    let want = limit.unwrap_or(DEFAULT_LEDGER_LIMIT).max(1) as usize;
    let mut query = String::new();
    if let Some(ws) = workspace {
        query = format!("&workspace_id={}", urlencode(&workspace_id(api, ws).await?));
    }
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < want {
        let page_size = (want - items.len()).min(PAGE as usize);
        let mut path = format!("/users/me/credits/ledger?limit={page_size}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page = api.get(&path).await?;
        let got = page["items"].as_array().ok_or_else(|| {
            CliError::network("unexpected answer to GET /users/me/credits/ledger: no items")
        })?;
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() && cursor.as_deref() != Some(c) => cursor = Some(c.into()),
            _ => break,
        }
    }
    items.truncate(want);
    let rows = items
        .iter()
        .map(|e| {
            let ws = if e["workspace_name"].is_string() {
                &e["workspace_name"]
            } else {
                &e["workspace_id"]
            };
            json!({
                "time": e["created_at"], "kind": e["kind"],
                "amount": credits_cell(&e["amount_micro"]),
                "balance": credits_cell(&e["balance_after_micro"]),
                "workspace": ws, "model": e["model"],
            })
        })
        .collect();
    Ok(Out::doc(json!({ "items": items })).with_view(rows, LEDGER_COLUMNS.to_vec()))
}

const DAY_COLUMNS: [Column; 5] = [
    ("DAY", "day"),
    ("REQUESTS", "requests"),
    ("INPUT", "input_tokens"),
    ("OUTPUT", "output_tokens"),
    ("CREDITS", "credits"),
];

const WORKSPACE_COLUMNS: [Column; 5] = [
    ("WORKSPACE", "workspace"),
    ("REQUESTS", "requests"),
    ("INPUT", "input_tokens"),
    ("OUTPUT", "output_tokens"),
    ("CREDITS", "credits"),
];

/// A usage row with its credits as text.
fn usage_row(v: &Value, key: &str, label: Value) -> Value {
    json!({
        key: label, "requests": v["requests"], "input_tokens": v["input_tokens"],
        "output_tokens": v["output_tokens"], "credits": credits_cell(&v["credits_micro"]),
    })
}

/// `usage [--days N]` (local mode): `GET /users/me/ai-usage`. Tables list the days with
/// requests (the JSON document has every day of the window) and the totals per workspace.
pub async fn usage(api: &Api, days: Option<i64>, color: bool) -> CliResult<Out> {
    api.require_key()?;
    let path = match days {
        Some(d) => format!("/users/me/ai-usage?days={d}"),
        None => "/users/me/ai-usage".to_owned(),
    };
    let u = api.get(&path).await?;
    let empty = Vec::new();
    let daily: Vec<Value> = u["daily"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|d| d["requests"].as_i64().unwrap_or(0) > 0)
        .map(|d| usage_row(d, "day", d["day"].clone()))
        .collect();
    let by_ws: Vec<Value> = u["by_workspace"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|w| {
            let name = if w["workspace_name"].is_string() {
                w["workspace_name"].clone()
            } else {
                w["workspace_id"].clone()
            };
            usage_row(w, "workspace", name)
        })
        .collect();
    let sum = |k: &str| -> i64 {
        u["daily"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|d| d[k].as_i64())
            .sum()
    };
    let table = |rows: &[Value], cols: &[Column]| {
        Printer {
            color,
            ..Printer::plain(Format::Human)
        }
        .render(&Out::list(rows.to_vec(), cols.to_vec()))
    };
    let window = cell(&u["window_days"]);
    let mut msg = format!(
        "AI usage in the last {window} days: {} requests, {} credits",
        sum("requests"),
        credits_text(sum("credits_micro"))
    );
    if !daily.is_empty() {
        msg.push_str(&format!("\n\n{}", table(&daily, &DAY_COLUMNS)?));
        msg.push_str(&format!("\n\n{}", table(&by_ws, &WORKSPACE_COLUMNS)?));
    }
    Ok(Out::doc(u)
        .with_view(daily, DAY_COLUMNS.to_vec())
        .with_message(msg))
}

/// `usage --subject S [--window W]` (workspace mode): `GET /rig/v1/usage`.
pub async fn subject_usage(bridge: &Api, subject: &str, window: Option<&str>) -> CliResult<Out> {
    let mut path = format!("/usage?subject={}", urlencode(subject));
    if let Some(w) = window {
        path.push_str(&format!("&window={}", urlencode(w)));
    }
    let u = bridge.get(&path).await?;
    let msg = labelled(&[
        ("Subject", &u["subject"]),
        (
            "Window",
            &json!(format!("{} s", cell(&u["window_seconds"]))),
        ),
        ("Requests", &u["requests"]),
        ("Input tokens", &u["input_tokens"]),
        ("Output tokens", &u["output_tokens"]),
        ("Credits", &json!(credits_cell(&u["credits_micro"]))),
    ]);
    Ok(Out::doc(u).with_message(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_keep_small_amounts_readable() {
        assert_eq!(credits_text(250_000_000), "250.00");
        assert_eq!(credits_text(1_500_000), "1.50");
        assert_eq!(credits_text(-360), "-0.00036");
        assert_eq!(credits_text(-1), "-0.000001");
        assert_eq!(credits_text(0), "0.00");
        assert_eq!(credits_text(-2_250_000), "-2.25");
        assert_eq!(credits_cell(&Value::Null), "");
    }

    #[test]
    fn credits_block() {
        let c = json!({"remaining_micro": 247_700_000, "total_micro": 250_000_000,
                       "balance_micro": 250_000_000, "reserved_micro": 2_300_000,
                       "mode": "managed", "period_end": "2026-07-01T00:00:00Z"});
        assert_eq!(
            describe_credits(&c),
            "Available   247.70 of 250.00 credits\nBalance     250.00\nReserved    2.30\n\
             Mode        managed\nPeriod end  2026-07-01T00:00:00Z"
        );
    }
}
