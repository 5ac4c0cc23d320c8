//! Holds of the credit wallet (`ai_holds`, bridge-and-ai.md §8): created at admission, moved
//! out of `open` exactly once by a conditional update. The ledger side is `store/ledger.rs`.

use super::{Db, Store, StoreError};
use sqlx::{Executor, FromRow};

/// An `ai_holds` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HoldRow {
    /// The request ID.
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub node_id: String,
    pub incarnation: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub subject: Option<String>,
    pub amount_micro: i64,
    /// `open`, `settled` or `released`.
    pub state: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

/// The columns of [`HoldRow`], in order (a macro so statements are `&'static str`, for the
/// statement cache without a `format!` per call).
macro_rules! hold_cols {
    () => {
        "id, user_id, workspace_id, workspace_name, node_id, incarnation, endpoint, model, \
         subject, amount_micro, state, created_at, closed_at"
    };
}

impl HoldRow {
    /// The row of a hold admitted at `now`.
    pub fn open(h: &rigbox_types::wallet::Hold, now: i64) -> Self {
        HoldRow {
            id: h.request_id.clone(),
            user_id: h.user_id.clone(),
            workspace_id: h.workspace_id.clone(),
            workspace_name: h.workspace_name.clone(),
            node_id: h.node_id.clone(),
            incarnation: h.incarnation.clone(),
            endpoint: h.endpoint.clone(),
            model: h.model.clone(),
            subject: h.subject.clone(),
            amount_micro: h.amount_micro.max(0),
            state: "open".into(),
            created_at: now,
            closed_at: None,
        }
    }
}

impl Store {
    pub async fn insert_hold(
        &self,
        exec: impl Executor<'_, Database = Db>,
        h: &HoldRow,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO ai_holds (",
            hold_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&h.id)
        .bind(&h.user_id)
        .bind(&h.workspace_id)
        .bind(&h.workspace_name)
        .bind(&h.node_id)
        .bind(&h.incarnation)
        .bind(&h.endpoint)
        .bind(&h.model)
        .bind(&h.subject)
        .bind(h.amount_micro)
        .bind(&h.state)
        .bind(h.created_at)
        .bind(h.closed_at)
        .execute(exec)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// Moves an open hold to `state` (`settled` or `released`); false when it is not open
    /// (already closed, or unknown).
    pub async fn close_hold(
        &self,
        exec: impl Executor<'_, Database = Db>,
        id: &str,
        state: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE ai_holds SET state = $1, closed_at = $2 WHERE id = $3 AND state = 'open'",
        )
        .bind(state)
        .bind(now)
        .bind(id)
        .execute(exec)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The hold `id` if it is open.
    pub async fn open_hold(
        &self,
        exec: impl Executor<'_, Database = Db>,
        id: &str,
    ) -> Result<Option<HoldRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            hold_cols!(),
            " FROM ai_holds WHERE id = $1 AND state = 'open'"
        ))
        .bind(id)
        .fetch_optional(exec)
        .await?)
    }

    /// Open holds that `node_id` admitted in another incarnation, or that were created before
    /// `before` (µs) by anyone, oldest first.
    pub async fn orphaned_holds(
        &self,
        exec: impl Executor<'_, Database = Db>,
        node_id: &str,
        incarnation: &str,
        before: i64,
    ) -> Result<Vec<HoldRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            hold_cols!(),
            " FROM ai_holds WHERE state = 'open' \
             AND ((node_id = $1 AND incarnation <> $2) OR created_at < $3) ORDER BY created_at"
        ))
        .bind(node_id)
        .bind(incarnation)
        .bind(before)
        .fetch_all(exec)
        .await?)
    }

    /// Requests admitted for `subject` of `user_id` since `since` (µs), in any state.
    pub async fn subject_admitted(
        &self,
        user_id: &str,
        subject: &str,
        since: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM ai_holds WHERE user_id = $1 AND subject = $2 \
             AND created_at >= $3",
        )
        .bind(user_id)
        .bind(subject)
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }
}
