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
