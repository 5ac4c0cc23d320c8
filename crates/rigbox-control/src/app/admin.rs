//! Operator actions (`rigboxd admin …`, limits-and-accounts.md §9).

use super::{auth, ApiError, ApiResult, App};
use crate::store::{StoreError, UserFlag, UserRow};
use rigbox_types::api::Limits;
use std::collections::BTreeMap;

impl App {
    /// The account with this email.
    pub async fn user_by_email(&self, email: &str) -> ApiResult<UserRow> {
        self.store
            .user_by_email(&email.trim().to_lowercase())
            .await?
            .ok_or_else(|| ApiError::not_found(&format!("user {email}")))
    }

    /// Sets a new password and revokes every session.
    pub async fn admin_set_password(&self, email: &str, password: String) -> ApiResult<()> {
        let u = self.user_by_email(email).await?;
        auth::check_password("password", &password)?;
        let hash = auth::hash_password(self.config.argon2, password).await?;
        self.store.set_password_hash(&u.id, &hash).await?;
        self.store.delete_sessions_except(&u.id, None).await?;
        Ok(())
    }

    /// Changes the plan; a higher allowance is credited at once.
    pub async fn admin_set_plan(&self, email: &str, plan: &str) -> ApiResult<()> {
        let u = self.user_by_email(email).await?;
        if !self.config.plans.contains_key(plan) {
            let known: Vec<&str> = self.config.plans.keys().map(String::as_str).collect();
            return Err(ApiError::field(
                "plan",
                format!("unknown plan {plan:?}; configured: {}", known.join(", ")),
            ));
        }
        let (old, _) = self.limits_of(&u);
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &u.id).await?;
        self.store.set_user_plan(&mut tx, &u.id, plan).await?;
        let new_user = UserRow {
            plan: plan.to_owned(),
            ..u.clone()
        };
        let (new, _) = self.limits_of(&new_user);
        self.write_plan_change(
            &mut tx,
            &u.id,
            old.monthly_ai_credits,
            new.monthly_ai_credits,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Overrides one limit for one user (`value` None clears every override).
    pub async fn admin_set_limit(
        &self,
        email: &str,
        key: Option<&str>,
        value: Option<i64>,
    ) -> ApiResult<()> {
        let u = self.user_by_email(email).await?;
        let mut overrides: BTreeMap<String, i64> = u
            .limit_overrides
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        match (key, value) {
            (Some(k), Some(v)) => {
                if !Limits::KEYS.contains(&k) {
                    return Err(ApiError::field(
                        "key",
                        format!(
                            "unknown limit key {k:?}; known: {}",
                            Limits::KEYS.join(", ")
                        ),
                    ));
                }
                if v < 0 {
                    return Err(ApiError::field("value", "must be 0 or more"));
                }
                overrides.insert(k.to_owned(), v);
            }
            _ => overrides.clear(),
        }
        let json =
            (!overrides.is_empty()).then(|| serde_json::to_string(&overrides).unwrap_or_default());
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &u.id).await?;
        self.store
            .set_limit_overrides(&mut tx, &u.id, json.as_deref())
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn admin_set_flag(&self, email: &str, flag: UserFlag, value: bool) -> ApiResult<()> {
        let u = self.user_by_email(email).await?;
        self.store.set_user_flag(&u.id, flag, value).await?;
        Ok(())
    }
}
