//! Users, console sessions and CLI device sessions.

use super::{Db, Store, StoreError, Tx};
use sqlx::{Executor, FromRow};

/// A `users` row.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub email_verified: bool,
    pub plan: String,
    pub limit_overrides: Option<String>,
    pub disabled: bool,
    pub default_region: Option<String>,
    pub settings_updated_at: i64,
    pub created_at: i64,
    /// The account's AI mode, `managed` or `byok` (written by [`Store::set_user_ai_mode`]; a
    /// new account is `managed`).
    pub ai_mode: String,
}

const USER_COLS: &str = "id, email, name, password_hash, email_verified, plan, limit_overrides, \
    disabled, default_region, settings_updated_at, created_at, ai_mode";

/// A `sessions` row.
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
}

/// A `cli_sessions` row.
#[derive(Debug, Clone, FromRow)]
pub struct CliSessionRow {
    pub code: String,
    pub user_code: String,
    pub poll_secret_hash: String,
    pub client_name: Option<String>,
    pub status: String,
    pub user_id: Option<String>,
    pub api_key_plain: Option<String>,
    pub api_key_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Store {
    pub async fn insert_user(&self, tx: &mut Tx<'_>, u: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, email_verified, plan, \
             limit_overrides, disabled, default_region, settings_updated_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.email_verified)
        .bind(&u.plan)
        .bind(&u.limit_overrides)
        .bind(u.disabled)
        .bind(&u.default_region)
        .bind(u.settings_updated_at)
        .bind(u.created_at)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
                .bind(email)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Every user (operator sweeps such as the monthly credit reset).
    pub async fn all_user_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM users ORDER BY created_at")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Takes the user's row lock for the rest of `tx`: every quota-checked mutation starts here,
    /// so two of them for one user never interleave (SQLite: the write lock; PostgreSQL: the row
    /// lock).
    pub async fn lock_user(&self, tx: &mut Tx<'_>, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET quota_version = quota_version + 1 WHERE id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_user_plan(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        plan: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET plan = $1 WHERE id = $2")
            .bind(plan)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn set_limit_overrides(
        &self,
        tx: &mut Tx<'_>,
        user_id: &str,
        overrides: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET limit_overrides = $1 WHERE id = $2")
            .bind(overrides)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn set_user_flag(
        &self,
        user_id: &str,
        column: UserFlag,
        value: bool,
    ) -> Result<(), StoreError> {
        let sql = match column {
            UserFlag::Disabled => "UPDATE users SET disabled = $1 WHERE id = $2",
            UserFlag::EmailVerified => "UPDATE users SET email_verified = $1 WHERE id = $2",
        };
        sqlx::query(sql)
            .bind(value)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn update_settings(
        &self,
        user_id: &str,
        default_region: Option<&str>,
        name: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET default_region = $1, name = $2, settings_updated_at = $3 WHERE id = $4",
        )
        .bind(default_region)
        .bind(name)
        .bind(now)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- sessions ----

    pub async fn insert_session(
        &self,
        exec: impl Executor<'_, Database = Db>,
        s: &SessionRow,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_used_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id)
        .bind(token_hash)
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(s.expires_at)
        .execute(exec)
        .await?;
        Ok(())
    }

    pub async fn session_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, created_at, last_used_at, expires_at FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Revokes every session of the user except `keep`.
    pub async fn delete_sessions_except(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- CLI device sessions ----

    pub async fn insert_cli_session(&self, s: &CliSessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cli_sessions (code, user_code, poll_secret_hash, client_name, status, \
             user_id, api_key_plain, api_key_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.code)
        .bind(&s.user_code)
        .bind(&s.poll_secret_hash)
        .bind(&s.client_name)
        .bind(&s.status)
        .bind(&s.user_id)
        .bind(&s.api_key_plain)
        .bind(&s.api_key_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn cli_session(&self, code: &str) -> Result<Option<CliSessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT code, user_code, poll_secret_hash, client_name, status, user_id, api_key_plain, \
             api_key_id, created_at, expires_at FROM cli_sessions WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Moves a session from `from` to `to` status; false when it was not in `from`.
    pub async fn transition_cli_session(
        &self,
        exec: impl Executor<'_, Database = Db>,
        code: &str,
        from: &str,
        to: &str,
        user_id: Option<&str>,
        api_key: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE cli_sessions SET status = $1, user_id = COALESCE($2, user_id), \
             api_key_plain = $3, api_key_id = COALESCE($4, api_key_id) \
             WHERE code = $5 AND status = $6",
        )
        .bind(to)
        .bind(user_id)
        .bind(api_key.map(|k| k.0))
        .bind(api_key.map(|k| k.1))
        .bind(code)
        .bind(from)
        .execute(exec)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// Boolean account flags the operator sets.
#[derive(Debug, Clone, Copy)]
pub enum UserFlag {
    Disabled,
    EmailVerified,
}
