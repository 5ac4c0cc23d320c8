//! Workspaces and their environment variables.

use super::{paginate, Db, Page, Store, StoreError, Tx};
use sqlx::{Executor, FromRow};
use std::collections::BTreeMap;

/// A `workspaces` row: everything the control plane knows of one workspace.
#[derive(Debug, Clone, FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub status: String,
    pub template_id: String,
    pub image: String,
    pub region: String,
    pub node_id: String,
    pub ip_address: Option<String>,
    pub ram_mb: i64,
    pub vcpu_count: i64,
    pub disk_size_mb: i64,
    pub desired_state: String,
    pub generation: i64,
    pub force_delete: bool,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub failure_retryable: Option<bool>,
    pub failure_at: Option<i64>,
    pub failure_attempts: i64,
    pub failed_step: Option<String>,
    pub stop_reason: Option<String>,
    pub start_from: Option<String>,
    pub restart_pending: bool,
    pub status_changed_at: i64,
    pub env_updated_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// The workspace's AI mode override (`managed`, `byok`); `None` inherits the account's.
    /// Written only by [`Store::set_workspace_ai`].
    pub ai_mode: Option<String>,
}

const WS_COLS: &str =
    "id, user_id, name, status, template_id, image, region, node_id, ip_address, \
    ram_mb, vcpu_count, disk_size_mb, desired_state, generation, force_delete, failure_code, \
    failure_message, failure_retryable, failure_at, failure_attempts, failed_step, stop_reason, \
    start_from, restart_pending, status_changed_at, env_updated_at, created_at, updated_at, \
    started_at, stopped_at, ai_mode";

/// Resource usage of one user, as the limits count it.
#[derive(Debug, Clone, Copy, Default, FromRow)]
pub struct UsageRow {
    pub workspace_count: i64,
    pub total_disk_mb: i64,
    pub running_workspace_count: i64,
    pub running_vcpus: i64,
    pub total_ram_mb: i64,
}

impl Store {
    pub async fn insert_workspace(
        &self,
        tx: &mut Tx<'_>,
        w: &WorkspaceRow,
    ) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO workspaces ({WS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, \
             $28, $29, $30, $31)"
        ))
        .bind(&w.id)
        .bind(&w.user_id)
        .bind(&w.name)
        .bind(&w.status)
        .bind(&w.template_id)
        .bind(&w.image)
        .bind(&w.region)
        .bind(&w.node_id)
        .bind(&w.ip_address)
        .bind(w.ram_mb)
        .bind(w.vcpu_count)
        .bind(w.disk_size_mb)
        .bind(&w.desired_state)
        .bind(w.generation)
        .bind(w.force_delete)
        .bind(&w.failure_code)
        .bind(&w.failure_message)
        .bind(w.failure_retryable)
        .bind(w.failure_at)
        .bind(w.failure_attempts)
        .bind(&w.failed_step)
        .bind(&w.stop_reason)
        .bind(&w.start_from)
        .bind(w.restart_pending)
        .bind(w.status_changed_at)
        .bind(w.env_updated_at)
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.started_at)
        .bind(w.stopped_at)
        .bind(&w.ai_mode)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// Writes every mutable column of `w`, but only if the stored row still has `expect_status`
    /// and `expect_generation` (optimistic concurrency). Returns false when it changed meanwhile.
    pub async fn save_workspace(
        &self,
        exec: impl Executor<'_, Database = Db>,
        w: &WorkspaceRow,
        expect_status: &str,
        expect_generation: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE workspaces SET status = $1, ip_address = $2, ram_mb = $3, vcpu_count = $4, \
             disk_size_mb = $5, desired_state = $6, generation = $7, force_delete = $8, \
             failure_code = $9, failure_message = $10, failure_retryable = $11, failure_at = $12, \
             failure_attempts = $13, failed_step = $14, stop_reason = $15, start_from = $16, \
             restart_pending = $17, status_changed_at = $18, env_updated_at = $19, updated_at = $20, \
             started_at = $21, stopped_at = $22 \
             WHERE id = $23 AND status = $24 AND generation = $25",
        )
        .bind(&w.status)
        .bind(&w.ip_address)
        .bind(w.ram_mb)
        .bind(w.vcpu_count)
        .bind(w.disk_size_mb)
        .bind(&w.desired_state)
        .bind(w.generation)
        .bind(w.force_delete)
        .bind(&w.failure_code)
        .bind(&w.failure_message)
        .bind(w.failure_retryable)
        .bind(w.failure_at)
        .bind(w.failure_attempts)
        .bind(&w.failed_step)
        .bind(&w.stop_reason)
        .bind(&w.start_from)
        .bind(w.restart_pending)
        .bind(w.status_changed_at)
        .bind(w.env_updated_at)
        .bind(w.updated_at)
        .bind(w.started_at)
        .bind(w.stopped_at)
        .bind(&w.id)
        .bind(expect_status)
        .bind(expect_generation)
        .execute(exec)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn workspace_by_id(
        &self,
        exec: impl Executor<'_, Database = Db>,
        id: &str,
    ) -> Result<Option<WorkspaceRow>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {WS_COLS} FROM workspaces WHERE id = $1"))
                .bind(id)
                .fetch_optional(exec)
                .await?,
        )
    }

    /// The user's workspace by ID or by name.
    pub async fn user_workspace(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
        id_or_name: &str,
    ) -> Result<Option<WorkspaceRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {WS_COLS} FROM workspaces WHERE user_id = $1 AND (id = $2 OR name = $2)"
        ))
        .bind(user_id)
        .bind(id_or_name)
        .fetch_optional(exec)
        .await?)
    }

    pub async fn list_workspaces(
        &self,
        user_id: &str,
        status: Option<&str>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Page<WorkspaceRow>, StoreError> {
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows: Vec<WorkspaceRow> = sqlx::query_as(&format!(
            "SELECT {WS_COLS} FROM workspaces WHERE user_id = $1 AND ($2 IS NULL OR status = $2) \
             AND (created_at, id) > ($3, $4) ORDER BY created_at, id LIMIT $5"
        ))
        .bind(user_id)
        .bind(status)
        .bind(t)
        .bind(&id)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(paginate(rows, limit, |r| (r.created_at, r.id.as_str())))
    }

    /// Every workspace placed on a node (the node's desired state).
    pub async fn workspaces_on_node(&self, node_id: &str) -> Result<Vec<WorkspaceRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {WS_COLS} FROM workspaces WHERE node_id = $1 ORDER BY created_at, id"
        ))
        .bind(node_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Workspaces in `status` whose status has not changed since `before` (timeouts).
    pub async fn workspaces_stuck(
        &self,
        status: &str,
        before: i64,
    ) -> Result<Vec<WorkspaceRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {WS_COLS} FROM workspaces WHERE status = $1 AND status_changed_at < $2"
        ))
        .bind(status)
        .bind(before)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn delete_workspace_row(
        &self,
        id: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM workspaces WHERE id = $1 AND generation = $2")
            .bind(id)
            .bind(generation)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// What the user's workspaces use, as the limits count it.
    pub async fn usage(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
    ) -> Result<UsageRow, StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*) AS workspace_count, \
             COALESCE(SUM(disk_size_mb), 0) AS total_disk_mb, \
             COALESCE(SUM(CASE WHEN status IN ('starting', 'running', 'stopping') THEN 1 ELSE 0 END), 0) AS running_workspace_count, \
             COALESCE(SUM(CASE WHEN status IN ('starting', 'running', 'stopping') THEN vcpu_count ELSE 0 END), 0) AS running_vcpus, \
             COALESCE(SUM(CASE WHEN status IN ('starting', 'running', 'stopping') THEN ram_mb ELSE 0 END), 0) AS total_ram_mb \
             FROM workspaces WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(exec)
        .await?)
    }

    /// Live workspaces on a node (holding a lease) and the RAM they use.
    pub async fn node_live_usage(&self, node_id: &str) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(ram_mb), 0) FROM workspaces \
             WHERE node_id = $1 AND status IN ('starting', 'running', 'stopping')",
        )
        .bind(node_id)
        .fetch_one(self.pool())
        .await?)
    }

    // ---- env vars ----

    pub async fn env_vars(
        &self,
        exec: impl Executor<'_, Database = Db>,
        workspace_id: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM workspace_env WHERE workspace_id = $1")
                .bind(workspace_id)
                .fetch_all(exec)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Replaces the workspace's whole env map.
    pub async fn replace_env_vars(
        &self,
        tx: &mut Tx<'_>,
        workspace_id: &str,
        vars: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workspace_env WHERE workspace_id = $1")
            .bind(workspace_id)
            .execute(&mut **tx)
            .await?;
        for (k, v) in vars {
            sqlx::query("INSERT INTO workspace_env (workspace_id, key, value) VALUES ($1, $2, $3)")
                .bind(workspace_id)
                .bind(k)
                .bind(v)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE workspaces SET env_updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(workspace_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
