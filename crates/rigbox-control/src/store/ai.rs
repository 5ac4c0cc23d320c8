//! BYOK mode (bridge-and-ai.md §12): the account's AI mode, each workspace's override and its
//! own provider, model and sealed provider key.

use super::{Db, Store, StoreError, Tx};
use sqlx::{Executor, FromRow};

/// A `workspace_ai` row: a workspace's own AI configuration besides its mode override (which
/// is `workspaces.ai_mode`).
#[derive(Debug, Clone, Default, FromRow)]
pub struct WorkspaceAiRow {
    pub workspace_id: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The provider key sealed with the master key (`crate::sealing`), never the plaintext.
    pub api_key_sealed: Option<String>,
    pub updated_at: i64,
}

/// What the AI proxy needs to know of a workspace: who pays, and both modes.
#[derive(Debug, Clone, FromRow)]
pub struct AiAccountRow {
    pub user_id: String,
    pub workspace_name: String,
    /// The workspace's override (`None`: inherit).
    pub workspace_mode: Option<String>,
    /// The account's mode.
    pub account_mode: String,
}

impl Store {
    /// The workspace's own AI configuration (`None` until it was first changed).
    pub async fn workspace_ai(
        &self,
        exec: impl Executor<'_, Database = Db>,
        workspace_id: &str,
    ) -> Result<Option<WorkspaceAiRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT workspace_id, provider, model, api_key_sealed, updated_at \
             FROM workspace_ai WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(exec)
        .await?)
    }

    /// Writes a workspace's mode override and its own AI configuration.
    pub async fn set_workspace_ai(
        &self,
        tx: &mut Tx<'_>,
        mode: Option<&str>,
        ai: &WorkspaceAiRow,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET ai_mode = $1 WHERE id = $2")
            .bind(mode)
            .bind(&ai.workspace_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO workspace_ai (workspace_id, provider, model, api_key_sealed, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (workspace_id) DO UPDATE SET provider = $2, model = $3, \
             api_key_sealed = $4, updated_at = $5",
        )
        .bind(&ai.workspace_id)
        .bind(&ai.provider)
        .bind(&ai.model)
        .bind(&ai.api_key_sealed)
        .bind(ai.updated_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Sets the account's AI mode.
    pub async fn set_user_ai_mode(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        mode: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET ai_mode = $1 WHERE id = $2")
            .bind(mode)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Deletes the stored provider keys of the user's workspaces that inherit the account's
    /// mode (they become managed with it); returns how many were deleted.
    pub async fn delete_inherited_ai_keys(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE workspace_ai SET api_key_sealed = NULL, updated_at = $2 \
             WHERE api_key_sealed IS NOT NULL AND workspace_id IN \
             (SELECT id FROM workspaces WHERE user_id = $1 AND ai_mode IS NULL)",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Owner, name and both AI modes of a workspace, in one read (the proxy's account lookup).
    pub async fn ai_account(&self, workspace_id: &str) -> Result<Option<AiAccountRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.user_id AS user_id, w.name AS workspace_name, \
             w.ai_mode AS workspace_mode, u.ai_mode AS account_mode \
             FROM workspaces w JOIN users u ON u.id = w.user_id WHERE w.id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(self.pool())
        .await?)
    }
}
