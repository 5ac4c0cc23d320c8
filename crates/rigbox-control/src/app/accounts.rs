//! Accounts: signup, login and logout, the current user, password changes, the CLI device
//! login, settings, regions and plan limits.

use super::auth::{self, AuthMethod, Principal, SESSION_TTL_US};
use super::{ApiError, ApiResult, App};
use crate::store::{ApiKeyRow, CliSessionRow, SessionRow, UserRow};
use rand::Rng;
use rigbox_types::api::{
    CliSessionCreated, CliSessionDetails, CliSessionPoll, Limits, LimitsResponse, Me, Regions,
    SessionResponse, Settings, SettingsUpdate, Usage, User,
};
use rigbox_types::time_fmt::from_micros;
use rigbox_types::{ErrorCode, UserId};
use std::collections::BTreeMap;

/// Name of the one API key device login manages per user.
pub const CLI_LOGIN_KEY: &str = "CLI login";
const CLI_SESSION_TTL_US: i64 = 10 * 60 * 1_000_000;

/// Renders a user for the API.
pub fn user_view(u: &UserRow) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        email_verified: u.email_verified,
        plan: u.plan.clone(),
        created_at: from_micros(u.created_at),
    }
}

/// A new user as the admin command or signup creates it.
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    pub password: String,
    pub plan: Option<String>,
    pub email_verified: bool,
}

fn check_name(name: Option<&str>) -> ApiResult<()> {
    if name.is_some_and(|n| n.chars().count() > 100) {
        return Err(ApiError::field("name", "must be at most 100 characters"));
    }
    Ok(())
}

impl App {
    /// Effective limits of a user: plan values with per-user overrides; `custom` when overridden.
    pub fn limits_of(&self, u: &UserRow) -> (Limits, bool) {
        let mut limits = self
            .config
            .plans
            .get(&u.plan)
            .or_else(|| self.config.plans.get(&self.config.default_plan))
            .copied()
            .unwrap_or(Limits::FREE);
        let overrides: BTreeMap<String, i64> = u
            .limit_overrides
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for (k, v) in &overrides {
            if let Some(slot) = limits.get_mut(k) {
                *slot = *v;
            }
        }
        (limits, !overrides.is_empty())
    }

    /// Creates an account with its first monthly credit allowance.
    pub async fn create_user(&self, new: NewUser) -> ApiResult<UserRow> {
        let email = auth::normalize_email(&new.email)?;
        auth::check_password("password", &new.password)?;
        check_name(new.name.as_deref())?;
        let plan = new.plan.unwrap_or_else(|| self.config.default_plan.clone());
        if !self.config.plans.contains_key(&plan) {
            return Err(ApiError::field("plan", format!("unknown plan {plan:?}")));
        }
        let hash = auth::hash_password(self.config.argon2, new.password).await?;
        let now = self.now();
        let user = UserRow {
            id: UserId::generate().to_string(),
            email,
            name: new.name.filter(|n| !n.is_empty()),
            password_hash: hash,
            email_verified: new.email_verified,
            plan,
            limit_overrides: None,
            disabled: false,
            default_region: None,
            settings_updated_at: now,
            created_at: now,
            ai_mode: rigbox_types::api::AiMode::Managed.as_str().into(),
        };
        let mut tx = self.store.begin().await?;
        self.store
            .insert_user(&mut tx, &user)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict => ApiError::new(
                    ErrorCode::EmailTaken,
                    "An account with this email already exists.",
                ),
                e => e.into(),
            })?;
        let (limits, _) = self.limits_of(&user);
        self.write_monthly_reset(&mut tx, &user.id, limits.monthly_ai_credits, now)
            .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(user)
    }

    async fn new_session(&self, user: &UserRow) -> ApiResult<SessionResponse> {
        let token = auth::mint_token("rbs_");
        let now = self.now();
        let s = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: now + SESSION_TTL_US,
        };
        self.store
            .insert_session(self.store.pool(), &s, &auth::token_hash(&token))
            .await?;
        Ok(SessionResponse {
            token,
            expires_at: from_micros(s.expires_at),
            user: user_view(user),
        })
    }

    /// `POST /auth/signup`.
    pub async fn signup(
        &self,
        email: String,
        password: String,
        name: Option<String>,
    ) -> ApiResult<SessionResponse> {
        if !self.config.signup_enabled {
            return Err(ApiError::new(
                ErrorCode::SignupDisabled,
                "Self-service signup is disabled on this installation.",
            ));
        }
        let user = self
            .create_user(NewUser {
                email,
                name,
                password,
                plan: None,
                email_verified: false,
            })
            .await?;
        self.new_session(&user).await
    }

    /// `POST /auth/login`.
    pub async fn login(&self, email: &str, password: String) -> ApiResult<SessionResponse> {
        let email = email.trim().to_lowercase();
        if let Err(secs) = self.logins.check(&email) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "Too many failed sign-in attempts for this email; try again later.",
            )
            .with("class", "auth")
            .with(
                "limit_per_minute",
                self.rate.limit(super::ratelimit::Class::Auth),
            )
            .with("retry_after_seconds", secs)
            .retry(secs));
        }
        let user = self.store.user_by_email(&email).await?;
        // Hash even for unknown emails so timing does not reveal which exist.
        let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3rNl7m8cQdIjtvR+3PmYvUaa3iVX2zSg3sCLy1mTdp4".into()
        });
        let ok = auth::verify_password(hash, password).await;
        let user = match (user, ok) {
            (Some(u), true) => u,
            _ => {
                self.logins.record_failure(&email);
                return Err(ApiError::new(
                    ErrorCode::InvalidCredentials,
                    "Wrong email or password.",
                ));
            }
        };
        if user.disabled {
            return Err(ApiError::new(
                ErrorCode::AccountDisabled,
                "This account is disabled.",
            ));
        }
        self.logins.clear(&email);
        self.new_session(&user).await
    }

    /// `POST /auth/logout`: revokes the session that authenticated the request.
    pub async fn logout(&self, p: &Principal) -> ApiResult<()> {
        match &p.method {
            AuthMethod::Session { id, .. } => Ok(self.store.delete_session(id).await?),
            AuthMethod::ApiKey { .. } | AuthMethod::Workspace { .. } => Err(ApiError::validation(
                "API keys are not signed out; revoke them with DELETE /api-keys/{id}.",
            )),
        }
    }

    /// `GET /auth/me`.
    pub fn me(&self, p: &Principal) -> Me {
        let (auth_method, api_key_id) = match &p.method {
            AuthMethod::Session { .. } => ("session", None),
            AuthMethod::ApiKey { id } => ("api_key", Some(id.clone())),
            AuthMethod::Workspace { .. } => ("workspace_ip", None),
        };
        Me {
            user: user_view(&p.user),
            auth_method: auth_method.into(),
            api_key_id,
        }
    }

    /// `POST /auth/change-password`: revokes every other session.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: String,
        new: String,
    ) -> ApiResult<()> {
        let session_id = p.require_session()?.to_owned();
        auth::check_password("new_password", &new)?;
        if !auth::verify_password(p.user.password_hash.clone(), current).await {
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "The current password is wrong.",
            ));
        }
        let hash = auth::hash_password(self.config.argon2, new).await?;
        self.store.set_password_hash(&p.user.id, &hash).await?;
        self.store
            .delete_sessions_except(&p.user.id, Some(&session_id))
            .await?;
        Ok(())
    }

    // ---- device login ----

    /// `POST /auth/cli-session`.
    pub async fn create_cli_session(
        &self,
        client_name: Option<String>,
    ) -> ApiResult<CliSessionCreated> {
        if client_name
            .as_deref()
            .is_some_and(|n| n.chars().count() > 100)
        {
            return Err(ApiError::field(
                "client_name",
                "must be at most 100 characters",
            ));
        }
        const USER_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789";
        let user_code: String = {
            let mut rng = rand::thread_rng();
            let mut pick = || USER_ALPHABET[rng.gen_range(0..USER_ALPHABET.len())] as char;
            let a: String = (0..4).map(|_| pick()).collect();
            let b: String = (0..4).map(|_| pick()).collect();
            format!("{a}-{b}")
        };
        let code = auth::mint_token("").to_lowercase();
        let poll_secret = auth::mint_token("");
        let now = self.now();
        let row = CliSessionRow {
            code: code.clone(),
            user_code: user_code.clone(),
            poll_secret_hash: auth::token_hash(&poll_secret),
            client_name,
            status: "pending".into(),
            user_id: None,
            api_key_plain: None,
            api_key_id: None,
            created_at: now,
            expires_at: now + CLI_SESSION_TTL_US,
        };
        self.store.insert_cli_session(&row).await?;
        Ok(CliSessionCreated {
            verification_url: format!(
                "{}/cli-login?code={code}",
                self.config.public_url.trim_end_matches('/')
            ),
            code,
            user_code,
            poll_secret,
            expires_at: from_micros(row.expires_at),
            interval_seconds: 2,
        })
    }

    fn cli_status(&self, row: &CliSessionRow) -> String {
        if matches!(row.status.as_str(), "pending" | "approved") && row.expires_at <= self.now() {
            "expired".into()
        } else {
            row.status.clone()
        }
    }

    /// `GET /auth/cli-session/{code}` with the poll secret: the first poll after approval hands
    /// out the key once and consumes the session.
    pub async fn poll_cli_session(
        &self,
        code: &str,
        secret: Option<&str>,
    ) -> ApiResult<CliSessionPoll> {
        let not_found = || ApiError::not_found("CLI session");
        let row = self.store.cli_session(code).await?.ok_or_else(not_found)?;
        if secret.map(auth::token_hash).as_deref() != Some(row.poll_secret_hash.as_str()) {
            return Err(not_found());
        }
        let status = self.cli_status(&row);
        if status == "approved" {
            let consumed = self
                .store
                .transition_cli_session(self.store.pool(), code, "approved", "consumed", None, None)
                .await?;
            if consumed {
                let email = match &row.user_id {
                    Some(uid) => self.store.user_by_id(uid).await?.map(|u| u.email),
                    None => None,
                };
                return Ok(CliSessionPoll {
                    status: "approved".into(),
                    api_key: row.api_key_plain,
                    api_key_id: row.api_key_id,
                    email,
                });
            }
            return Ok(CliSessionPoll {
                status: "consumed".into(),
                api_key: None,
                api_key_id: None,
                email: None,
            });
        }
        Ok(CliSessionPoll {
            status,
            api_key: None,
            api_key_id: None,
            email: None,
        })
    }

    /// `GET /auth/cli-session/{code}/details` (console session).
    pub async fn cli_session_details(
        &self,
        p: &Principal,
        code: &str,
    ) -> ApiResult<CliSessionDetails> {
        p.require_session()?;
        let row = self
            .store
            .cli_session(code)
            .await?
            .ok_or_else(|| ApiError::not_found("CLI session"))?;
        Ok(CliSessionDetails {
            user_code: row.user_code.clone(),
            client_name: row.client_name.clone(),
            status: self.cli_status(&row),
            created_at: from_micros(row.created_at),
            expires_at: from_micros(row.expires_at),
        })
    }

    /// Approves or denies a pending device login (console session only). Approval replaces the
    /// user's `CLI login` key.
    pub async fn decide_cli_session(
        &self,
        p: &Principal,
        code: &str,
        approve: bool,
    ) -> ApiResult<()> {
        p.require_session()?;
        let row = self
            .store
            .cli_session(code)
            .await?
            .ok_or_else(|| ApiError::not_found("CLI session"))?;
        let status = self.cli_status(&row);
        if status != "pending" {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("This CLI session is {status}; only a pending session can be decided."),
            )
            .with("status", status)
            .with("allowed_from", vec!["pending"]));
        }
        let mut tx = self.store.begin().await?;
        let changed = if approve {
            let key = auth::mint_token("rb_");
            let now = self.now();
            let k = ApiKeyRow {
                id: uuid::Uuid::new_v4().to_string(),
                user_id: p.user.id.clone(),
                name: CLI_LOGIN_KEY.into(),
                key_preview: super::keys::preview(&key),
                created_at: now,
                last_used_at: None,
            };
            self.store
                .delete_api_keys_named(&mut *tx, &p.user.id, CLI_LOGIN_KEY)
                .await?;
            self.store
                .insert_api_key(&mut *tx, &k, &auth::token_hash(&key))
                .await?;
            self.store
                .transition_cli_session(
                    &mut *tx,
                    code,
                    "pending",
                    "approved",
                    Some(&p.user.id),
                    Some((&key, &k.id)),
                )
                .await?
        } else {
            self.store
                .transition_cli_session(&mut *tx, code, "pending", "denied", Some(&p.user.id), None)
                .await?
        };
        if !changed {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "This CLI session was decided meanwhile.",
            )
            .with("allowed_from", vec!["pending"]));
        }
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(())
    }

    // ---- settings, regions, limits ----

    pub fn settings_view(&self, u: &UserRow) -> Settings {
        Settings {
            default_region: u.default_region.clone(),
            name: u.name.clone(),
            updated_at: from_micros(u.settings_updated_at),
        }
    }

    /// `PUT /users/me/settings`.
    pub async fn update_settings(&self, p: &Principal, upd: SettingsUpdate) -> ApiResult<Settings> {
        let mut region = p.user.default_region.clone();
        let mut name = p.user.name.clone();
        if let Some(r) = upd.default_region {
            if let Some(r) = &r {
                if !self.config.regions.contains(r) {
                    return Err(ApiError::new(
                        ErrorCode::UnknownRegion,
                        format!("Region {r:?} is not offered."),
                    )
                    .with("region", r.as_str()));
                }
            }
            region = r;
        }
        if let Some(n) = upd.name {
            check_name(n.as_deref())?;
            name = n.filter(|n| !n.is_empty());
        }
        let now = self.now();
        self.store
            .update_settings(&p.user.id, region.as_deref(), name.as_deref(), now)
            .await?;
        let user = self
            .store
            .user_by_id(&p.user.id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(self.settings_view(&user))
    }

    /// `GET /users/me/regions`.
    pub fn regions(&self, p: &Principal) -> Regions {
        Regions {
            regions: self.config.regions.clone(),
            default_region: self.user_region(&p.user).to_owned(),
        }
    }

    /// The user's default region, else the operator's.
    pub fn user_region<'a>(&'a self, u: &'a UserRow) -> &'a str {
        u.default_region
            .as_deref()
            .filter(|r| self.config.regions.iter().any(|c| c == r))
            .unwrap_or_else(|| self.config.default_region())
    }

    /// `GET /users/me/limits`.
    pub async fn limits(&self, p: &Principal) -> ApiResult<LimitsResponse> {
        let (limits, custom) = self.limits_of(&p.user);
        let u = self.store.usage(self.store.pool(), &p.user.id).await?;
        let keys = self
            .store
            .count_ssh_keys(self.store.pool(), &p.user.id)
            .await?;
        Ok(LimitsResponse {
            plan: p.user.plan.clone(),
            custom,
            limits,
            usage: Usage {
                workspace_count: u.workspace_count,
                running_vcpus: u.running_vcpus,
                total_disk_mb: u.total_disk_mb,
                total_ram_mb: u.total_ram_mb,
                running_workspace_count: u.running_workspace_count,
                ssh_key_count: keys,
            },
        })
    }
}

impl ApiError {
    /// Sets `Retry-After`.
    pub fn retry(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}
