//! The credit ledger and the read side of the wallet: entries (allowance, plan changes,
//! adjustments, AI charges), the sum of open holds, and the aggregates of `charge` entries that
//! `GET /users/me/ai-usage` and `GET /rig/v1/usage` report. Holds themselves are written by the
//! wallet (`store/wallet.rs`).

use super::{Db, Store, StoreError};
use sqlx::{Executor, FromRow};

/// A `ledger` row. The charge columns are `None`/`false` on every kind but `charge`; build
/// other rows with `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, FromRow)]
pub struct LedgerRow {
    /// UUID.
    pub id: String,
    pub user_id: String,
    /// Per user, 1, 2, 3…: the order of entries (and the ledger's cursor).
    pub seq: i64,
    /// `monthly_reset`, `plan_change`, `charge` or `adjustment`.
    pub kind: String,
    /// Signed; charges are negative (`−cost_micro`).
    pub amount_micro: i64,
    pub balance_after_micro: i64,
    /// Start of the calendar month (UTC, µs) the entry belongs to.
    pub period_start: i64,
    /// Operator note of an `adjustment`.
    pub note: Option<String>,
    /// Unix microseconds.
    pub created_at: i64,
    /// The charged workspace (kept after the workspace is deleted).
    pub workspace_id: Option<String>,
    /// The workspace's name when charged (what a deleted workspace is reported as).
    pub workspace_name: Option<String>,
    /// The proxy request (`X-Rigbox-Request-Id`); at most one charge per request.
    pub request_id: Option<String>,
    /// Proxy route, e.g. `/v1/chat/completions`.
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// Upstream cost in USD, when known.
    pub cost_usd: Option<f64>,
    /// Computed without upstream usage (bridge-and-ai.md §8).
    pub estimated: bool,
    /// Attributed subject (bridge-and-ai.md §9).
    pub subject: Option<String>,
}

/// The columns of [`LedgerRow`], in order (a macro so statements are `&'static str`).
macro_rules! ledger_cols {
    () => {
        "id, user_id, seq, kind, amount_micro, balance_after_micro, period_start, note, \
         created_at, workspace_id, workspace_name, request_id, endpoint, model, input_tokens, \
         output_tokens, cost_usd, estimated, subject"
    };
}

/// Sums over a set of `charge` entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
pub struct ChargeTotals {
    /// Number of charges.
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Credits spent (the charges' amounts negated).
    pub credits_micro: i64,
}

/// Charges of one UTC day (`day` = days since 1970-01-01).
#[derive(Debug, Clone, FromRow)]
pub struct ChargeDay {
    pub day: i64,
    #[sqlx(flatten)]
    pub totals: ChargeTotals,
}

/// Charges of one workspace under one name (`last_at`: the newest charge with that name).
#[derive(Debug, Clone, FromRow)]
pub struct ChargeWorkspace {
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub last_at: i64,
    #[sqlx(flatten)]
    pub totals: ChargeTotals,
}

/// Charges of one model.
#[derive(Debug, Clone, FromRow)]
pub struct ChargeModel {
    pub model: Option<String>,
    #[sqlx(flatten)]
    pub totals: ChargeTotals,
}

const DAY_US: i64 = 86_400_000_000;

const TOTALS: &str = "COUNT(*) AS requests, \
    COALESCE(SUM(COALESCE(input_tokens, 0)), 0) AS input_tokens, \
    COALESCE(SUM(COALESCE(output_tokens, 0)), 0) AS output_tokens, \
    COALESCE(SUM(-amount_micro), 0) AS credits_micro";

impl Store {
    /// The user's newest entry (its `balance_after_micro` is the balance).
    pub async fn last_ledger_entry(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
    ) -> Result<Option<LedgerRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM ledger WHERE user_id = $1 ORDER BY seq DESC LIMIT 1"
        ))
        .bind(user_id)
        .fetch_optional(exec)
        .await?)
    }

    /// Appends an entry with every column of `e`. A second charge for the same `request_id`
    /// (or a taken `(user_id, seq)`) is [`StoreError::Conflict`].
    pub async fn insert_ledger(
        &self,
        exec: impl Executor<'_, Database = Db>,
        e: &LedgerRow,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO ledger (",
            ledger_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19)"
        ))
        .bind(&e.id)
        .bind(&e.user_id)
        .bind(e.seq)
        .bind(&e.kind)
        .bind(e.amount_micro)
        .bind(e.balance_after_micro)
        .bind(e.period_start)
        .bind(&e.note)
        .bind(e.created_at)
        .bind(&e.workspace_id)
        .bind(&e.workspace_name)
        .bind(&e.request_id)
        .bind(&e.endpoint)
        .bind(&e.model)
        .bind(e.input_tokens)
        .bind(e.output_tokens)
        .bind(e.cost_usd)
        .bind(e.estimated)
        .bind(&e.subject)
        .execute(exec)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// Ledger entries newest first, keyset-paginated on `seq` (`limit + 1` rows are fetched so
    /// the caller knows whether there is a next page).
    pub async fn ledger_page(
        &self,
        user_id: &str,
        kind: Option<&str>,
        workspace_id: Option<&str>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM ledger WHERE user_id = $1 AND ($2 IS NULL OR kind = $2) \
             AND ($3 IS NULL OR workspace_id = $3) AND ($4 IS NULL OR seq < $4) \
             ORDER BY seq DESC LIMIT $5"
        ))
        .bind(user_id)
        .bind(kind)
        .bind(workspace_id)
        .bind(before_seq)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?)
    }

    /// Sum of the user's open holds (the wallet's `reserved`).
    pub async fn sum_open_holds_micro(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount_micro), 0) FROM ai_holds \
             WHERE user_id = $1 AND state = 'open'",
        )
        .bind(user_id)
        .fetch_one(exec)
        .await?)
    }

    /// The user's charges since `since` (µs) per UTC day, oldest first.
    pub async fn charges_by_day(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<ChargeDay>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT created_at / {DAY_US} AS day, {TOTALS} FROM ledger \
             WHERE user_id = $1 AND kind = 'charge' AND created_at >= $2 \
             GROUP BY created_at / {DAY_US} ORDER BY day"
        ))
        .bind(user_id)
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// The user's charges since `since` (µs) per workspace and recorded name.
    pub async fn charges_by_workspace(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<ChargeWorkspace>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT workspace_id, workspace_name, MAX(created_at) AS last_at, {TOTALS} FROM ledger \
             WHERE user_id = $1 AND kind = 'charge' AND created_at >= $2 \
             GROUP BY workspace_id, workspace_name"
        ))
        .bind(user_id)
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// The user's charges since `since` (µs) per model.
    pub async fn charges_by_model(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<ChargeModel>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT model, {TOTALS} FROM ledger \
             WHERE user_id = $1 AND kind = 'charge' AND created_at >= $2 GROUP BY model"
        ))
        .bind(user_id)
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// The user's charges attributed to `subject` since `since` (µs).
    pub async fn subject_charges(
        &self,
        user_id: &str,
        subject: &str,
        since: i64,
    ) -> Result<ChargeTotals, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TOTALS} FROM ledger \
             WHERE user_id = $1 AND kind = 'charge' AND subject = $2 AND created_at >= $3"
        ))
        .bind(user_id)
        .bind(subject)
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }
}
