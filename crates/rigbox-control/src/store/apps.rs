//! Apps.

use super::{paginate, Db, Page, Store, StoreError, Tx};
use sqlx::Executor;

/// A row of `apps`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppRow {
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub name: String,
    pub port: i64,
    pub protocol: String,
    pub visibility: String,
    /// JSON array of lowercased emails.
    pub allowed_emails: String,
    pub status: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const APP_COLS: &str = "id, user_id, workspace_id, name, port, protocol, visibility, \
    allowed_emails, status, description, created_at, updated_at";

impl Store {
    pub async fn insert_app(&self, tx: &mut Tx<'_>, a: &AppRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO apps ({APP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&a.id)
        .bind(&a.user_id)
        .bind(&a.workspace_id)
        .bind(&a.name)
        .bind(a.port)
        .bind(&a.protocol)
        .bind(&a.visibility)
        .bind(&a.allowed_emails)
        .bind(&a.status)
        .bind(&a.description)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// Writes every mutable column; a name already used answers [`StoreError::Conflict`].
    pub async fn update_app(&self, a: &AppRow) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE apps SET name = $1, port = $2, protocol = $3, visibility = $4, \
             allowed_emails = $5, status = $6, description = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(&a.name)
        .bind(a.port)
        .bind(&a.protocol)
        .bind(&a.visibility)
        .bind(&a.allowed_emails)
        .bind(&a.status)
        .bind(&a.description)
        .bind(a.updated_at)
        .bind(&a.id)
        .execute(self.pool())
        .await
        .map_err(StoreError::from_write)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn delete_app(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM apps WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The user's app by ID or name.
    pub async fn user_app(
        &self,
        user_id: &str,
        id_or_name: &str,
    ) -> Result<Option<AppRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {APP_COLS} FROM apps WHERE user_id = $1 AND (id = $2 OR name = $2)"
        ))
        .bind(user_id)
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Any app by name (the edge's host lookup).
    pub async fn app_by_name(&self, name: &str) -> Result<Option<AppRow>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {APP_COLS} FROM apps WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The user's apps, optionally of one workspace, oldest first.
    pub async fn list_apps(
        &self,
        user_id: &str,
        workspace_id: Option<&str>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Page<AppRow>, StoreError> {
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows: Vec<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLS} FROM apps WHERE user_id = $1 AND ($2 IS NULL OR workspace_id = $2) \
             AND (created_at, id) > ($3, $4) ORDER BY created_at, id LIMIT $5"
        ))
        .bind(user_id)
        .bind(workspace_id)
        .bind(t)
        .bind(&id)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(paginate(rows, limit, |r| (r.created_at, r.id.as_str())))
    }

    pub async fn count_workspace_apps(
        &self,
        exec: impl Executor<'_, Database = Db>,
        workspace_id: &str,
    ) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE workspace_id = $1")
                .bind(workspace_id)
                .fetch_one(exec)
                .await?,
        )
    }
}

/// A one-time code of the app login round-trip, as redeemed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppCodeRow {
    pub user_id: String,
    pub session_id: String,
    pub app_host: String,
    pub return_to: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn insert_app_code(&self, code_hash: &str, c: &AppCodeRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_auth_codes (code_hash, user_id, session_id, app_host, return_to, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash)
        .bind(&c.user_id)
        .bind(&c.session_id)
        .bind(&c.app_host)
        .bind(&c.return_to)
        .bind(c.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes and returns a code: whoever deletes it first is its only user.
    pub async fn take_app_code(&self, code_hash: &str) -> Result<Option<AppCodeRow>, StoreError> {
        Ok(sqlx::query_as(
            "DELETE FROM app_auth_codes WHERE code_hash = $1 \
             RETURNING user_id, session_id, app_host, return_to, expires_at",
        )
        .bind(code_hash)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn insert_app_session(
        &self,
        token_hash: &str,
        user_id: &str,
        session_id: &str,
        app_host: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_sessions (token_hash, user_id, session_id, app_host, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(session_id)
        .bind(app_host)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The user of a live app session for `app_host`: unexpired, and its console session
    /// still alive (console logout and password changes end it).
    pub async fn app_session_user(
        &self,
        token_hash: &str,
        app_host: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT a.user_id FROM app_sessions a JOIN sessions s ON s.id = a.session_id \
             WHERE a.token_hash = $1 AND a.app_host = $2 AND a.expires_at > $3 AND s.expires_at > $3",
        )
        .bind(token_hash)
        .bind(app_host)
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn delete_app_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM app_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
