//! The browser login round-trip of private apps (apps-and-routing.md §5): the console mints a
//! one-time code for a signed-in user and an app URL; the edge redeems it on the app host for an
//! app session (the `rigbox_app_session` cookie), which lives at most 12 hours and never longer
//! than the console session that minted it.

use super::auth::{mint_token, token_hash, AuthMethod, Principal};
use super::{ApiError, ApiResult, App};
use crate::store::{AppCodeRow, UserRow};
use rigbox_types::ErrorCode;

const CODE_TTL_US: i64 = 60 * 1_000_000;
const APP_SESSION_TTL_US: i64 = 12 * 3600 * 1_000_000;

/// A valid `return_to`: an URL on an app host of this platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo {
    /// `host[:port]` as given (lowercased).
    pub authority: String,
    /// The host without port: what codes and sessions are bound to.
    pub host: String,
    /// Path and query (`/` when empty).
    pub path: String,
}

/// An app session handed to the edge.
#[derive(Debug, Clone)]
pub struct AppSession {
    pub token: String,
    /// Where to send the browser: the path and query of the stored `return_to`.
    pub path: String,
    pub max_age_secs: i64,
}

fn invalid_return_to() -> ApiError {
    ApiError::new(
        ErrorCode::ValidationFailed,
        "return_to must be an address of an app on this platform.",
    )
    .with("code", "invalid_return_to")
}

impl App {
    /// Checks `return_to` (scheme of the apps, host `<app>.<base-domain>`).
    pub fn parse_return_to(&self, raw: &str) -> ApiResult<ReturnTo> {
        let rest = raw
            .strip_prefix(&format!("{}://", self.config.apps_scheme))
            .ok_or_else(invalid_return_to)?;
        if rest
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '#' || c == ' ')
        {
            return Err(invalid_return_to());
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(invalid_return_to());
        }
        let authority = authority.to_ascii_lowercase();
        let host = match authority.rsplit_once(':') {
            Some((h, p))
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 =>
            {
                h
            }
            Some(_) => return Err(invalid_return_to()),
            None => authority.as_str(),
        }
        .to_owned();
        let label = host
            .strip_suffix(&self.config.base_domain)
            .and_then(|l| l.strip_suffix('.'))
            .ok_or_else(invalid_return_to)?;
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid_return_to());
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(ReturnTo {
            authority,
            host,
            path,
        })
    }

    /// Mints a one-time code for the signed-in console user; returns the app's callback URL.
    pub async fn mint_app_code(&self, p: &Principal, return_to: &str) -> ApiResult<String> {
        let rt = self.parse_return_to(return_to)?;
        let AuthMethod::Session { id, .. } = &p.method else {
            return Err(ApiError::forbidden("A console session is needed."));
        };
        let code = mint_token("");
        let row = AppCodeRow {
            user_id: p.user.id.clone(),
            session_id: id.clone(),
            app_host: rt.host.clone(),
            return_to: return_to.to_owned(),
            expires_at: self.now() + CODE_TTL_US,
        };
        self.store.insert_app_code(&token_hash(&code), &row).await?;
        Ok(format!(
            "{}://{}/.rigbox/auth/callback?code={code}",
            self.config.apps_scheme, rt.authority
        ))
    }

    /// Redeems a code on the app host it was minted for: a new app session, or None when the
    /// code is unknown, used, expired or for another host.
    pub async fn redeem_app_code(&self, code: &str, host: &str) -> ApiResult<Option<AppSession>> {
        let Some(c) = self.store.take_app_code(&token_hash(code)).await? else {
            return Ok(None);
        };
        let now = self.now();
        if c.expires_at <= now || c.app_host != host {
            return Ok(None);
        }
        let Ok(rt) = self.parse_return_to(&c.return_to) else {
            return Ok(None);
        };
        let token = mint_token("rba_");
        self.store
            .insert_app_session(
                &token_hash(&token),
                &c.user_id,
                &c.session_id,
                &c.app_host,
                now,
                now + APP_SESSION_TTL_US,
            )
            .await?;
        Ok(Some(AppSession {
            token,
            path: rt.path,
            max_age_secs: APP_SESSION_TTL_US / 1_000_000,
        }))
    }

    /// The user behind an app session cookie on `host`, if it is still valid.
    pub async fn app_session_user(&self, token: &str, host: &str) -> ApiResult<Option<UserRow>> {
        let Some(user_id) = self
            .store
            .app_session_user(&token_hash(token), host, self.now())
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .user_by_id(&user_id)
            .await?
            .filter(|u| !u.disabled))
    }

    /// Ends an app session (`/.rigbox/auth/logout`).
    pub async fn end_app_session(&self, token: &str) -> ApiResult<()> {
        Ok(self.store.delete_app_session(&token_hash(token)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn return_to_must_be_an_app_address() {
        let store = crate::Store::open_memory().await.expect("store");
        let app = App::new(
            store,
            crate::ControlConfig::default(),
            std::sync::Arc::new(crate::app::SystemClock),
            Vec::new(),
        );
        let ok = app
            .parse_return_to("https://shop.rigbox.localhost:8443/a/b?c=1")
            .expect("valid");
        assert_eq!(ok.host, "shop.rigbox.localhost");
        assert_eq!(ok.authority, "shop.rigbox.localhost:8443");
        assert_eq!(ok.path, "/a/b?c=1");
        assert_eq!(
            app.parse_return_to("https://Shop.rigbox.localhost")
                .expect("valid")
                .path,
            "/"
        );
        for bad in [
            "http://shop.rigbox.localhost/",
            "https://rigbox.localhost/",
            "https://evil.com/",
            "https://shop.rigbox.localhost.evil.com/",
            "https://a.b.rigbox.localhost/",
            "https://user@shop.rigbox.localhost/",
            "https://shop.rigbox.localhost:x/",
            "https://shop.rigbox.localhost\\@evil.com/",
            "//shop.rigbox.localhost/",
            "javascript:alert(1)",
        ] {
            assert!(app.parse_return_to(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
