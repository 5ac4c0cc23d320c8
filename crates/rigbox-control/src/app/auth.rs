//! Credentials: password hashing, token minting and resolving a bearer token or session cookie
//! to the calling user.

use super::{ApiError, ApiResult, App};
use crate::config::Argon2Params;
use crate::store::UserRow;
use rand::distributions::{Alphanumeric, DistString};
use rigbox_types::ErrorCode;
use sha2::{Digest, Sha256};

/// Console sessions expire 30 days after creation...
pub const SESSION_TTL_US: i64 = 30 * 24 * 3600 * 1_000_000;
/// ...or after 7 days unused.
pub const SESSION_IDLE_US: i64 = 7 * 24 * 3600 * 1_000_000;
const MINUTE_US: i64 = 60 * 1_000_000;

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A console session, by bearer token or by the `rigbox_session` cookie.
    Session {
        id: String,
        via_cookie: bool,
    },
    ApiKey {
        id: String,
    },
    /// A workspace calling through its node's bridge, acting for its owner (`/rig/v1`).
    Workspace {
        id: String,
    },
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserRow,
    pub method: AuthMethod,
}

impl Principal {
    /// Console-only actions (approving device logins, changing the password) need a session.
    pub fn require_session(&self) -> ApiResult<&str> {
        match &self.method {
            AuthMethod::Session { id, .. } => Ok(id),
            AuthMethod::ApiKey { .. } | AuthMethod::Workspace { .. } => Err(ApiError::forbidden(
                "This action needs a console session; API keys cannot do it.",
            )),
        }
    }
}

/// `prefix` + 40 characters of `[A-Za-z0-9]`.
pub fn mint_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
    )
}

/// Hex SHA-256 of a token: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn argon2(params: Argon2Params) -> ApiResult<argon2::Argon2<'static>> {
    let p = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "invalid argon2 parameters");
        ApiError::internal()
    })?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        p,
    ))
}

/// Hashes a password with argon2id on the blocking pool.
pub async fn hash_password(params: Argon2Params, password: String) -> ApiResult<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let a = argon2(params)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        a.hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::internal()
    })
}

/// Checks a password against a stored hash on the blocking pool.
pub async fn verify_password(hash: String, password: String) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Password length rule: 10–256 characters.
pub fn check_password(field: &str, pw: &str) -> ApiResult<()> {
    let n = pw.chars().count();
    if !(10..=256).contains(&n) {
        return Err(ApiError::field(field, "must be 10-256 characters"));
    }
    Ok(())
}

/// Trims, lowercases and checks an email address.
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.matches('@').count() == 1
        && e.split('@').all(|p| !p.is_empty())
        && !e.chars().any(char::is_whitespace);
    if !ok {
        return Err(ApiError::field(
            "email",
            "must be an email address (one @, at most 254 characters)",
        ));
    }
    Ok(e)
}

impl App {
    /// Resolves a credential (`rb_…` API key or `rbs_…` session token) to its user.
    /// `Ok(None)` when it is unknown, revoked or expired.
    pub async fn authenticate(
        &self,
        credential: &str,
        via_cookie: bool,
    ) -> ApiResult<Option<Principal>> {
        let now = self.now();
        let hash = token_hash(credential);
        let (user_id, method) = if credential.starts_with("rb_") && !via_cookie {
            let Some(k) = self.store.api_key_by_hash(&hash).await? else {
                return Ok(None);
            };
            if k.last_used_at.is_none_or(|t| t < now - MINUTE_US) {
                self.store
                    .touch_api_key(&k.id, now, now - MINUTE_US)
                    .await?;
            }
            (k.user_id, AuthMethod::ApiKey { id: k.id })
        } else if credential.starts_with("rbs_") {
            let Some(s) = self.store.session_by_hash(&hash).await? else {
                return Ok(None);
            };
            if s.expires_at <= now || s.last_used_at + SESSION_IDLE_US <= now {
                self.store.delete_session(&s.id).await?;
                return Ok(None);
            }
            if s.last_used_at < now - MINUTE_US {
                self.store.touch_session(&s.id, now).await?;
            }
            (
                s.user_id,
                AuthMethod::Session {
                    id: s.id,
                    via_cookie,
                },
            )
        } else {
            return Ok(None);
        };
        let Some(user) = self.store.user_by_id(&user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Err(ApiError::new(
                ErrorCode::AccountDisabled,
                "This account is disabled.",
            ));
        }
        Ok(Some(Principal { user, method }))
    }
}
