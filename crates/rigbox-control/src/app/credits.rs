//! The credit wallet's ledger and its read side: the monthly allowance, plan changes and
//! operator adjustments (written here), and what users see of the wallet:
//! `GET /users/me/credits` (balance, open holds, available), `/credits/ledger`,
//! `/users/me/ai-usage` (charges per day, workspace and model) and, for a VM through its
//! bridge, `/rig/v1/credits` and `/rig/v1/usage` (charges per subject). Per-request AI charges
//! and holds are written by the wallet (`wallet.rs`) on the same ledger.

use super::auth::Principal;
use super::{ApiError, ApiResult, App};
use crate::store::{ChargeTotals, LedgerRow, Tx, UserRow};
use rigbox_types::agent::BridgeCaller;
use rigbox_types::api::List;
use rigbox_types::time_fmt::from_micros;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const MICRO: i64 = 1_000_000;
const DAY_US: i64 = 86_400 * MICRO;
/// Ledger entry kinds (the `kind` filter of the ledger accepts only these).
pub const LEDGER_KINDS: [&str; 4] = ["monthly_reset", "plan_change", "charge", "adjustment"];
/// `window` of `GET /rig/v1/usage` when none is given.
pub const DEFAULT_USAGE_WINDOW_SECS: i64 = 86_400;
/// The longest subject window (bridge-and-ai.md §9).
pub const MAX_WINDOW_SECS: i64 = 30 * 86_400;
/// The longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 256;

/// Start of the calendar month (UTC) containing `us`, and the start of the next one.
pub fn period_of(us: i64) -> (i64, i64) {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let start = Date::from_calendar_date(t.year(), t.month(), 1).unwrap_or(t.date());
    let (ny, nm) = if t.month() == Month::December {
        (t.year() + 1, Month::January)
    } else {
        (t.year(), t.month().next())
    };
    let next = Date::from_calendar_date(ny, nm, 1).unwrap_or(start);
    let micros = |d: Date| {
        (PrimitiveDateTime::new(d, Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp_nanos()
            / 1000) as i64
    };
    (micros(start), micros(next))
}

/// Microcredits as credits (the float fields of the API).
pub fn credits_of_micro(micro: i64) -> f64 {
    micro as f64 / MICRO as f64
}

/// A subject window (bridge-and-ai.md §9): `<n>s`, `<n>m`, `<n>h`, `<n>d` or bare seconds,
/// from 1 s to 30 days; `None` for anything else.
pub fn parse_window(s: &str) -> Option<i64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3_600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<i64>().ok()?.checked_mul(unit)?;
    (1..=MAX_WINDOW_SECS).contains(&secs).then_some(secs)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC).
fn day_string(day: i64) -> String {
    let d = OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400))
        .map(|t| t.date())
        .unwrap_or(Date::MIN);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn add(a: ChargeTotals, b: ChargeTotals) -> ChargeTotals {
    ChargeTotals {
        requests: a.requests + b.requests,
        input_tokens: a.input_tokens + b.input_tokens,
        output_tokens: a.output_tokens + b.output_tokens,
        credits_micro: a.credits_micro + b.credits_micro,
    }
}

/// `GET /users/me/credits` (and `/rig/v1/credits`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Credits {
    /// Available funds = balance − reserved, in credits.
    pub remaining: f64,
    pub remaining_micro: i64,
    /// The month's allowance, in credits.
    pub total: f64,
    pub total_micro: i64,
    /// Funds after all settled entries, before open holds (may be negative).
    pub balance_micro: i64,
    /// Sum of open holds.
    pub reserved_micro: i64,
    /// The account's AI mode: `managed` or `byok`.
    pub mode: String,
    pub period_start: String,
    pub period_end: String,
}

/// Query of `GET /users/me/credits/ledger`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only entries of this kind: `monthly_reset`, `plan_change`, `charge` or `adjustment`.
    #[param(pattern = "^(monthly_reset|plan_change|charge|adjustment)$")]
    pub kind: Option<String>,
    /// Only charges of this workspace (its ID; deleted workspaces included).
    pub workspace_id: Option<String>,
}

/// One ledger entry as listed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    /// `monthly_reset`, `plan_change`, `charge` or `adjustment`.
    pub kind: String,
    /// Signed; charges are negative.
    pub amount_micro: i64,
    /// The balance right after this entry.
    pub balance_after_micro: i64,
    pub workspace_id: Option<String>,
    /// The workspace's name when charged (also for deleted workspaces).
    pub workspace_name: Option<String>,
    pub request_id: Option<String>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// True when the charge was computed without upstream usage.
    pub estimated: bool,
    /// Attributed subject, or null.
    pub subject: Option<String>,
    /// Operator note of an `adjustment`.
    pub note: Option<String>,
    pub created_at: String,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(r: LedgerRow) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            amount_micro: r.amount_micro,
            balance_after_micro: r.balance_after_micro,
            workspace_id: r.workspace_id,
            workspace_name: r.workspace_name,
            request_id: r.request_id,
            endpoint: r.endpoint,
            model: r.model,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            estimated: r.estimated,
            subject: r.subject,
            note: r.note,
            created_at: from_micros(r.created_at),
        }
    }
}

/// Totals of a set of charges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageTotals {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Credits spent.
    pub credits: f64,
    pub credits_micro: i64,
    /// Charged requests.
    pub requests: i64,
}

impl From<ChargeTotals> for UsageTotals {
    fn from(t: ChargeTotals) -> Self {
        Self {
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            credits: credits_of_micro(t.credits_micro),
            credits_micro: t.credits_micro,
            requests: t.requests,
        }
    }
}

/// One UTC day of `GET /users/me/ai-usage`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// One workspace of `GET /users/me/ai-usage` (deleted ones keep their last name).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageWorkspace {
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// One model of `GET /users/me/ai-usage` (null: charges without a model, e.g. search).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageModel {
    pub model: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /users/me/ai-usage`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AiUsage {
    pub window_days: i64,
    /// Every day of the window, oldest first (days without charges have zeros).
    pub daily: Vec<UsageDay>,
    /// Most credits first.
    pub by_workspace: Vec<UsageWorkspace>,
    /// Most credits first.
    pub by_model: Vec<UsageModel>,
}

/// Query of `GET /users/me/ai-usage`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AiUsageQuery {
    /// Days back, today included: 1–90 (default 30).
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<i64>,
}

/// `GET /rig/v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectUsage {
    pub subject: String,
    pub window_seconds: i64,
    pub credits: f64,
    pub credits_micro: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub requests: i64,
}

impl App {
    /// Before a read of balances or charges: every charge settled so far is committed (see
    /// [`App::wallet_synced`]).
    async fn charges_committed(&self) -> ApiResult<()> {
        self.wallet_synced().await.map_err(|e| {
            tracing::error!(error = %e, "wallet sync before a read failed");
            ApiError::internal()
        })
    }

    async fn append_ledger(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        kind: &str,
        balance_of: impl FnOnce(i64) -> i64,
        note: Option<String>,
        now: i64,
    ) -> ApiResult<()> {
        let last = self.store.last_ledger_entry(&mut **tx, user_id).await?;
        let old = last.as_ref().map_or(0, |l| l.balance_after_micro);
        let new = balance_of(old);
        let seq = last.map_or(1, |l| l.seq + 1);
        let entry = LedgerRow {
            note,
            ..LedgerRow::entry(user_id, seq, kind, new - old, new, now)
        };
        self.store.insert_ledger(&mut **tx, &entry).await?;
        Ok(())
    }

    /// Writes a `monthly_reset`: `new balance = allowance + min(old balance, 0)`.
    pub(crate) async fn write_monthly_reset(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        credits: i64,
        now: i64,
    ) -> ApiResult<()> {
        self.append_ledger(
            tx,
            user_id,
            "monthly_reset",
            |old| credits * MICRO + old.min(0),
            None,
            now,
        )
        .await
    }

    /// Gives every user whose last reset is in an earlier month this month's allowance.
    pub async fn sweep_monthly_resets(&self) -> ApiResult<()> {
        let now = self.now();
        let (period, _) = period_of(now);
        for id in self.store.all_user_ids().await? {
            let mut tx = self.store.begin().await?;
            self.store.lock_user(&mut tx, &id).await?;
            let last = self.store.last_ledger_entry(&mut *tx, &id).await?;
            if last.is_some_and(|l| l.period_start >= period) {
                continue;
            }
            let Some(user) = self.store.user_by_id(&id).await? else {
                continue;
            };
            let (limits, _) = self.limits_of(&user);
            self.write_monthly_reset(&mut tx, &id, limits.monthly_ai_credits, now)
                .await?;
            tx.commit().await.map_err(crate::store::StoreError::from)?;
        }
        Ok(())
    }

    /// Adds the difference at once when a plan change raises the allowance.
    pub(crate) async fn write_plan_change(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        old: i64,
        new: i64,
    ) -> ApiResult<()> {
        if new > old {
            let now = self.now();
            self.append_ledger(
                tx,
                user_id,
                "plan_change",
                |b| b + (new - old) * MICRO,
                None,
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Operator adjustment of `credits` (may be negative) with a note.
    pub async fn adjust_credits(&self, user_id: &str, credits: f64, note: String) -> ApiResult<()> {
        let micro = (credits * MICRO as f64).round() as i64;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, user_id).await?;
        self.append_ledger(
            &mut tx,
            user_id,
            "adjustment",
            |b| b + micro,
            Some(note),
            now,
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(())
    }

    /// The wallet of `user` as `GET /users/me/credits` shows it: `remaining` is the available
    /// amount, balance minus the open holds.
    pub(crate) async fn credits_of(&self, user: &UserRow) -> ApiResult<Credits> {
        self.charges_committed().await?;
        let (limits, _) = self.limits_of(user);
        let pool = self.store.pool();
        let last = self.store.last_ledger_entry(pool, &user.id).await?;
        let balance = last.map(|l| l.balance_after_micro).unwrap_or(0);
        let reserved = self.store.sum_open_holds_micro(pool, &user.id).await?;
        let (start, end) = period_of(self.now());
        let total = limits.monthly_ai_credits * MICRO;
        let available = balance - reserved;
        Ok(Credits {
            remaining: credits_of_micro(available),
            remaining_micro: available,
            total: credits_of_micro(total),
            total_micro: total,
            balance_micro: balance,
            reserved_micro: reserved,
            mode: super::byok::effective_mode(None, &user.ai_mode)
                .as_str()
                .into(),
            period_start: from_micros(start),
            period_end: from_micros(end),
        })
    }

    /// `GET /users/me/credits`.
    pub async fn credits(&self, p: &Principal) -> ApiResult<Credits> {
        self.credits_of(&p.user).await
    }

    /// `GET /rig/v1/credits`: the calling workspace's owner's wallet.
    pub async fn bridge_credits(&self, caller: &BridgeCaller) -> ApiResult<Credits> {
        let (p, _) = self.bridge_principal(caller).await?;
        self.credits_of(&p.user).await
    }

    /// `GET /users/me/credits/ledger`, newest first, optionally only one `kind` or one
    /// workspace's entries.
    pub async fn ledger(&self, p: &Principal, q: &LedgerQuery) -> ApiResult<List<LedgerEntry>> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::field("limit", "must be between 1 and 200"));
        }
        let before = match q.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| ApiError::field("cursor", "is not a cursor this API issued"))?,
            ),
        };
        let kind = q.kind.as_deref().filter(|k| !k.is_empty());
        if let Some(k) = kind {
            if !LEDGER_KINDS.contains(&k) {
                return Err(ApiError::field(
                    "kind",
                    format!("must be one of {}", LEDGER_KINDS.join(", ")),
                ));
            }
        }
        let workspace = q.workspace_id.as_deref().filter(|w| !w.is_empty());
        self.charges_committed().await?;
        let mut rows = self
            .store
            .ledger_page(&p.user.id, kind, workspace, before, limit)
            .await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.seq.to_string())
        } else {
            None
        };
        Ok(List {
            items: rows.into_iter().map(LedgerEntry::from).collect(),
            next_cursor: next,
        })
    }

    /// `GET /users/me/ai-usage`: charges of the last `days` UTC days (today included) per day
    /// (every day listed, oldest first), per workspace and per model (most credits first).
    pub async fn ai_usage(&self, p: &Principal, days: Option<i64>) -> ApiResult<AiUsage> {
        let days = days.unwrap_or(30);
        if !(1..=90).contains(&days) {
            return Err(ApiError::field("days", "must be between 1 and 90"));
        }
        let today = self.now().div_euclid(DAY_US);
        let first = today - days + 1;
        let since = first * DAY_US;
        let uid = &p.user.id;
        self.charges_committed().await?;

        let mut by_day: BTreeMap<i64, ChargeTotals> = (first..=today)
            .map(|d| (d, ChargeTotals::default()))
            .collect();
        for d in self.store.charges_by_day(uid, since).await? {
            by_day.insert(d.day, d.totals);
        }
        let daily = by_day
            .into_iter()
            .map(|(day, t)| UsageDay {
                day: day_string(day),
                totals: t.into(),
            })
            .collect();

        // A workspace is one row under the name of its newest charge.
        let mut ws: BTreeMap<Option<String>, (i64, Option<String>, ChargeTotals)> = BTreeMap::new();
        for w in self.store.charges_by_workspace(uid, since).await? {
            let e = ws
                .entry(w.workspace_id)
                .or_insert((i64::MIN, None, ChargeTotals::default()));
            if w.last_at > e.0 {
                e.0 = w.last_at;
                e.1 = w.workspace_name;
            }
            e.2 = add(e.2, w.totals);
        }
        let mut by_workspace: Vec<UsageWorkspace> = ws
            .into_iter()
            .map(|(id, (_, name, t))| UsageWorkspace {
                workspace_id: id,
                workspace_name: name,
                totals: t.into(),
            })
            .collect();
        by_workspace.sort_by_key(|w| std::cmp::Reverse(w.totals.credits_micro));

        let mut by_model: Vec<UsageModel> = self
            .store
            .charges_by_model(uid, since)
            .await?
            .into_iter()
            .map(|m| UsageModel {
                model: m.model,
                totals: m.totals.into(),
            })
            .collect();
        by_model.sort_by_key(|m| std::cmp::Reverse(m.totals.credits_micro));

        Ok(AiUsage {
            window_days: days,
            daily,
            by_workspace,
            by_model,
        })
    }

    /// `GET /rig/v1/usage`: what the owner's charges attributed to `subject` add up to over the
    /// trailing `window` (default one day).
    pub async fn bridge_usage(
        &self,
        caller: &BridgeCaller,
        subject: Option<&str>,
        window: Option<&str>,
    ) -> ApiResult<SubjectUsage> {
        let subject = subject.map(str::trim).unwrap_or_default();
        if subject.is_empty() {
            return Err(ApiError::field("subject", "is required"));
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(ApiError::field(
                "subject",
                format!("must be at most {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        let window_seconds = match window {
            None => DEFAULT_USAGE_WINDOW_SECS,
            Some(w) => parse_window(w).ok_or_else(|| {
                ApiError::field(
                    "window",
                    "must be <n>s, <n>m, <n>h, <n>d or bare seconds, from 1 s to 30 days",
                )
            })?,
        };
        let (p, _) = self.bridge_principal(caller).await?;
        let since = self.now() - window_seconds * 1_000_000;
        self.charges_committed().await?;
        let t = self
            .store
            .subject_charges(&p.user.id, subject, since)
            .await?;
        Ok(SubjectUsage {
            subject: subject.to_owned(),
            window_seconds,
            credits: credits_of_micro(t.credits_micro),
            credits_micro: t.credits_micro,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            requests: t.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn periods_are_calendar_months() {
        // 2026-12-15T10:00:00Z
        let (s, e) = super::period_of(1_797_328_800_000_000);
        assert_eq!(
            rigbox_types::time_fmt::from_micros(s),
            "2026-12-01T00:00:00Z"
        );
        assert_eq!(
            rigbox_types::time_fmt::from_micros(e),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn windows_follow_the_subject_grammar() {
        use super::parse_window;
        assert_eq!(parse_window("86400"), Some(86_400));
        assert_eq!(parse_window("90s"), Some(90));
        assert_eq!(parse_window("15m"), Some(900));
        assert_eq!(parse_window("2h"), Some(7_200));
        assert_eq!(parse_window("30d"), Some(30 * 86_400));
        assert_eq!(parse_window(" 1d "), Some(86_400));
        for bad in [
            "",
            "d",
            "0",
            "0s",
            "31d",
            "2592001",
            "1w",
            "-5",
            "1.5h",
            "1 h",
            "+3",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_window(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(super::day_string(0), "1970-01-01");
        // 2026-12-15T10:00:00Z
        assert_eq!(super::day_string(1_797_328_800 / 86_400), "2026-12-15");
    }
}
