//! API keys and account SSH keys.

use super::{paginate, Db, Page, Store, StoreError};
use sqlx::{Executor, FromRow};

/// An `api_keys` row.
#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub key_preview: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// An `ssh_keys` row.
#[derive(Debug, Clone, FromRow)]
pub struct SshKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub public_key: String,
    pub key_type: String,
    pub fingerprint: String,
    pub comment: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl Store {
    pub async fn insert_api_key(
        &self,
        exec: impl Executor<'_, Database = Db>,
        k: &ApiKeyRow,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, key_hash, key_preview, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.id)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(key_hash)
        .bind(&k.key_preview)
        .bind(k.created_at)
        .bind(k.last_used_at)
        .execute(exec)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, name, key_preview, created_at, last_used_at FROM api_keys WHERE key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn count_api_keys(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
    ) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(exec)
                .await?,
        )
    }

    pub async fn list_api_keys(
        &self,
        user_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Page<ApiKeyRow>, StoreError> {
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows: Vec<ApiKeyRow> = sqlx::query_as(
            "SELECT id, user_id, name, key_preview, created_at, last_used_at FROM api_keys \
             WHERE user_id = $1 AND (created_at, id) > ($2, $3) \
             ORDER BY created_at, id LIMIT $4",
        )
        .bind(user_id)
        .bind(t)
        .bind(&id)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(paginate(rows, limit, |r| (r.created_at, r.id.as_str())))
    }

    /// Deletes one key of the user; false when there was none.
    pub async fn delete_api_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM api_keys WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes the user's keys with this exact name.
    pub async fn delete_api_keys_named(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_keys WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .execute(exec)
            .await?;
        Ok(())
    }

    /// Sets `last_used_at` when it is older than `stale_before` (at most once a minute).
    pub async fn touch_api_key(
        &self,
        id: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(stale_before)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- SSH keys ----

    pub async fn insert_ssh_key(
        &self,
        exec: impl Executor<'_, Database = Db>,
        k: &SshKeyRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ssh_keys (id, user_id, name, public_key, key_type, fingerprint, comment, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&k.id)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(&k.public_key)
        .bind(&k.key_type)
        .bind(&k.fingerprint)
        .bind(&k.comment)
        .bind(k.created_at)
        .bind(k.last_used_at)
        .execute(exec)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    pub async fn count_ssh_keys(
        &self,
        exec: impl Executor<'_, Database = Db>,
        user_id: &str,
    ) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM ssh_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(exec)
                .await?,
        )
    }

    pub async fn list_ssh_keys(
        &self,
        user_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Page<SshKeyRow>, StoreError> {
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows: Vec<SshKeyRow> = sqlx::query_as(
            "SELECT id, user_id, name, public_key, key_type, fingerprint, comment, created_at, \
             last_used_at FROM ssh_keys WHERE user_id = $1 \
             AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4",
        )
        .bind(user_id)
        .bind(t)
        .bind(&id)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(paginate(rows, limit, |r| (r.created_at, r.id.as_str())))
    }

    /// The user's SSH key with this `SHA256:` fingerprint.
    pub async fn ssh_key_by_fingerprint(
        &self,
        user_id: &str,
        fingerprint: &str,
    ) -> Result<Option<SshKeyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, name, public_key, key_type, fingerprint, comment, created_at, \
             last_used_at FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2",
        )
        .bind(user_id)
        .bind(fingerprint)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Sets an SSH key's `last_used_at` when it is older than `stale_before`.
    pub async fn touch_ssh_key(
        &self,
        id: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ssh_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(stale_before)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_ssh_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM ssh_keys WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
