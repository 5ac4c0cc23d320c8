//! The credit wallet's ledger: the monthly allowance, plan changes and operator adjustments,
//! and the read side (`GET /users/me/credits`, `/credits/ledger`). Per-request AI charges and
//! holds are added by the AI proxy on top of the same ledger.

use super::auth::Principal;
use super::{ApiError, ApiResult, App};
use crate::store::{LedgerRow, Tx};
use serde::Serialize;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const MICRO: i64 = 1_000_000;

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

/// `GET /users/me/credits`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Credits {
    pub remaining: f64,
    pub remaining_micro: i64,
    pub total: f64,
    pub total_micro: i64,
    pub balance_micro: i64,
    pub reserved_micro: i64,
    pub mode: String,
    pub period_start: String,
    pub period_end: String,
}

/// One ledger entry as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    pub kind: String,
    pub amount_micro: i64,
    pub balance_after_micro: i64,
    pub workspace_id: Option<String>,
    pub request_id: Option<String>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub estimated: bool,
    pub note: Option<String>,
    pub created_at: String,
}

impl App {
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
        let old = last.as_ref().map(|l| l.balance_after_micro).unwrap_or(0);
        let new = balance_of(old);
        self.store
            .insert_ledger(
                &mut **tx,
                &LedgerRow {
                    id: uuid::Uuid::new_v4().to_string(),
                    user_id: user_id.to_owned(),
                    seq: last.map(|l| l.seq + 1).unwrap_or(1),
                    kind: kind.to_owned(),
                    amount_micro: new - old,
                    balance_after_micro: new,
                    period_start: period_of(now).0,
                    note,
                    created_at: now,
                },
            )
            .await?;
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

    /// `GET /users/me/credits`.
    pub async fn credits(&self, p: &Principal) -> ApiResult<Credits> {
        let (limits, _) = self.limits_of(&p.user);
        let last = self
            .store
            .last_ledger_entry(self.store.pool(), &p.user.id)
            .await?;
        let balance = last.map(|l| l.balance_after_micro).unwrap_or(0);
        let reserved = 0;
        let (start, end) = period_of(self.now());
        let total = limits.monthly_ai_credits * MICRO;
        Ok(Credits {
            remaining: (balance - reserved) as f64 / MICRO as f64,
            remaining_micro: balance - reserved,
            total: total as f64 / MICRO as f64,
            total_micro: total,
            balance_micro: balance,
            reserved_micro: reserved,
            mode: "managed".into(),
            period_start: rigbox_types::time_fmt::from_micros(start),
            period_end: rigbox_types::time_fmt::from_micros(end),
        })
    }

    /// `GET /users/me/credits/ledger`, newest first.
    pub async fn ledger(
        &self,
        p: &Principal,
        kind: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<rigbox_types::api::List<LedgerEntry>> {
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::field("limit", "must be between 1 and 200"));
        }
        let before = match cursor {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| ApiError::field("cursor", "is not a cursor this API issued"))?,
            ),
        };
        let mut rows = self
            .store
            .ledger_page(&p.user.id, kind, before, limit)
            .await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.seq.to_string())
        } else {
            None
        };
        Ok(rigbox_types::api::List {
            items: rows
                .into_iter()
                .map(|r| LedgerEntry {
                    id: r.id,
                    kind: r.kind,
                    amount_micro: r.amount_micro,
                    balance_after_micro: r.balance_after_micro,
                    workspace_id: None,
                    request_id: None,
                    endpoint: None,
                    model: None,
                    input_tokens: None,
                    output_tokens: None,
                    cost_usd: None,
                    estimated: false,
                    note: r.note,
                    created_at: rigbox_types::time_fmt::from_micros(r.created_at),
                })
                .collect(),
            next_cursor: next,
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
}
