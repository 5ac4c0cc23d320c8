//! BYOK mode (bridge-and-ai.md §12): the account's AI mode (`PUT /users/me/ai-mode`), each
//! workspace's override, provider, model and provider key (`GET/PUT /workspaces/{ws}/ai-config`),
//! and what follows from the effective mode: the AI part of the guest's environment and the
//! proxy's per-request refusal.
//!
//! The effective mode of a workspace is its override, else its account's mode. In `byok` the
//! proxy answers 403 `managed_ai_disabled` (it learns the mode through the wallet's account
//! lookup, cached per workspace and dropped when [`App::ai_generation`] moves, which every
//! change here does after its commit), the managed `OPENROUTER_*` pair leaves
//! `/etc/rigbox/env` and the user's key, opened with the master key, takes its place under the
//! provider's variable. A workspace whose effective mode becomes `managed` loses its stored key.
//! The provider key is sealed at rest ([`crate::sealing`]) and never returned nor logged.

use super::auth::Principal;
use super::credits::Credits;
use super::{ApiError, ApiResult, App};
use crate::store::{StoreError, WorkspaceAiRow, WorkspaceRow};
use rigbox_types::agent::{EnvVar, ProxyEnvVar};
use rigbox_types::api::{
    AiMode, AiModeUpdate, AiProvider, AiStatus, WorkspaceAiConfig, WorkspaceAiConfigUpdate,
};
use rigbox_types::time_fmt::from_micros;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest provider key accepted.
const MAX_API_KEY_LEN: usize = 4096;
/// Longest model name accepted.
const MAX_MODEL_LEN: usize = 200;

/// The effective mode: the workspace's override, else the account's (an unreadable stored
/// value counts as `managed`, the mode every account starts in).
pub fn effective_mode(workspace: Option<&str>, account: &str) -> AiMode {
    workspace
        .and_then(AiMode::parse)
        .or_else(|| AiMode::parse(account))
        .unwrap_or(AiMode::Managed)
}

/// The AI part of a workspace's guest configuration.
#[derive(Debug, Default)]
pub(crate) struct GuestAi {
    /// Platform variables of `/etc/rigbox/env` (before the user's).
    pub env: Vec<EnvVar>,
    /// `~/.rigbox/proxy.env`.
    pub proxy_env: Vec<ProxyEnvVar>,
}

fn check_update(u: &WorkspaceAiConfigUpdate) -> ApiResult<()> {
    if let Some(Some(m)) = &u.model {
        if m.trim().is_empty() || m.len() > MAX_MODEL_LEN || m.chars().any(char::is_control) {
            return Err(ApiError::field(
                "model",
                format!("must be 1 to {MAX_MODEL_LEN} characters without control characters"),
            ));
        }
    }
    if let Some(Some(k)) = &u.api_key {
        // It becomes one line of /etc/rigbox/env.
        if k.is_empty()
            || k.len() > MAX_API_KEY_LEN
            || k.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ApiError::field(
                "api_key",
                format!("must be 1 to {MAX_API_KEY_LEN} characters without spaces or control characters"),
            ));
        }
    }
    Ok(())
}

/// `GET /workspaces/{ws}/ai-config` of a workspace; `has_key`: a key is stored and opens with
/// the master key (one that no longer does, the master key lost or replaced, is missing: the
/// guest does not get it and the user stores it again).
fn view(
    row: &WorkspaceRow,
    account_mode: &str,
    ai: Option<&WorkspaceAiRow>,
    has_key: bool,
) -> WorkspaceAiConfig {
    let mode = effective_mode(row.ai_mode.as_deref(), account_mode);
    WorkspaceAiConfig {
        mode,
        provider: ai
            .and_then(|a| a.provider.as_deref())
            .and_then(AiProvider::parse),
        model: ai.and_then(|a| a.model.clone()),
        status: match (mode, has_key) {
            (AiMode::Managed, _) => AiStatus::ManagedActive,
            (AiMode::Byok, true) => AiStatus::ByokActive,
            (AiMode::Byok, false) => AiStatus::InvalidMissingKey,
        },
        updated_at: from_micros(ai.map_or(row.created_at, |a| a.updated_at)),
    }
}

impl App {
    /// Moves after every committed change of an AI mode or key; the proxy's cached account
    /// answers are only reused while it has not moved.
    pub fn ai_generation(&self) -> u64 {
        self.ai_generation.load(Ordering::SeqCst)
    }

    fn ai_changed(&self) {
        self.ai_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// `PUT /users/me/ai-mode`: answers with the account's credits, whose `mode` is the new
    /// mode. Switching to `managed` deletes the keys of the workspaces that inherit it.
    pub async fn set_ai_mode(&self, p: &Principal, r: AiModeUpdate) -> ApiResult<Credits> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        self.store
            .set_user_ai_mode(&mut tx, &p.user.id, r.mode.as_str())
            .await?;
        if r.mode == AiMode::Managed {
            self.store
                .delete_inherited_ai_keys(&mut tx, &p.user.id, now)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.ai_changed();
        // Running workspaces get their new environment at once (the agent applies it).
        self.keys_changed(&p.user.id).await;
        let user = self
            .store
            .user_by_id(&p.user.id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        self.credits_of(&user).await
    }

    /// `GET /workspaces/{ws}/ai-config`.
    pub async fn ai_config(&self, p: &Principal, ws: &str) -> ApiResult<WorkspaceAiConfig> {
        let row = self.find_workspace(p, ws).await?;
        let ai = self.store.workspace_ai(self.store.pool(), &row.id).await?;
        let has_key = self.open_key(&row.id, ai.as_ref()).is_ok();
        Ok(view(&row, &p.user.ai_mode, ai.as_ref(), has_key))
    }

    /// `PUT /workspaces/{ws}/ai-config`: omitted keeps, null clears. A key needs `byok` and a
    /// provider; a workspace whose effective mode is `managed` keeps no key.
    pub async fn update_ai_config(
        &self,
        p: &Principal,
        ws: &str,
        u: WorkspaceAiConfigUpdate,
    ) -> ApiResult<WorkspaceAiConfig> {
        check_update(&u)?;
        let found = self.find_workspace(p, ws).await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let row = self
            .store
            .workspace_by_id(&mut *tx, &found.id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))?;
        let mut ai = self
            .store
            .workspace_ai(&mut *tx, &row.id)
            .await?
            .unwrap_or_else(|| WorkspaceAiRow {
                workspace_id: row.id.clone(),
                ..Default::default()
            });
        let mut mode_override = row.ai_mode.clone();
        if let Some(m) = u.mode {
            mode_override = m.map(|m| m.as_str().to_owned());
        }
        if let Some(provider) = u.provider {
            ai.provider = provider.map(|p| p.as_str().to_owned());
        }
        if let Some(model) = u.model {
            ai.model = model;
        }
        let mode = effective_mode(mode_override.as_deref(), &p.user.ai_mode);
        match u.api_key {
            Some(Some(key)) => {
                if mode == AiMode::Managed {
                    return Err(ApiError::field(
                        "api_key",
                        "is only stored in byok mode (set mode to byok)",
                    ));
                }
                if ai.provider.is_none() {
                    return Err(ApiError::field(
                        "provider",
                        "is required to store an api_key",
                    ));
                }
                let Some(master) = self.config.master_key.as_ref() else {
                    tracing::error!("no master key is configured: a BYOK key cannot be stored");
                    return Err(ApiError::internal());
                };
                ai.api_key_sealed = Some(master.seal(&key, &row.id).map_err(|e| {
                    tracing::error!(error = %e, "cannot seal a BYOK key");
                    ApiError::internal()
                })?);
            }
            Some(None) => ai.api_key_sealed = None,
            None => {}
        }
        if mode == AiMode::Managed {
            // Switching to managed deletes the stored key (bridge-and-ai.md §12).
            ai.api_key_sealed = None;
        }
        if ai.provider.is_none() && ai.api_key_sealed.is_some() {
            return Err(ApiError::field(
                "provider",
                "cannot be cleared while an api_key is stored (clear api_key too)",
            ));
        }
        ai.updated_at = now;
        self.store
            .set_workspace_ai(&mut tx, mode_override.as_deref(), &ai)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.ai_changed();
        let row = WorkspaceRow {
            ai_mode: mode_override,
            ..row
        };
        if let Err(e) = self.push_config(&row, Duration::ZERO).await {
            tracing::warn!(workspace = %row.id, error = ?e, "could not push the new AI configuration");
        }
        let has_key = self.open_key(&row.id, Some(&ai)).is_ok();
        Ok(view(&row, &p.user.ai_mode, Some(&ai), has_key))
    }

    /// The effective AI mode of a workspace owned by an account in `account_mode`.
    pub(crate) fn workspace_ai_mode(&self, row: &WorkspaceRow, account_mode: &str) -> AiMode {
        effective_mode(row.ai_mode.as_deref(), account_mode)
    }

    /// The AI part of a workspace's guest configuration: managed, the proxy's variables; byok,
    /// the user's key (opened with the master key) under its provider's variable, if stored.
    pub(crate) async fn guest_ai(
        &self,
        row: &WorkspaceRow,
        account_mode: &str,
    ) -> ApiResult<GuestAi> {
        if self.workspace_ai_mode(row, account_mode) == AiMode::Managed {
            return Ok(GuestAi {
                env: self.platform_env(),
                proxy_env: self.proxy_groups().all.unwrap_or_default(),
            });
        }
        let Some(ai) = self.store.workspace_ai(self.store.pool(), &row.id).await? else {
            return Ok(GuestAi::default());
        };
        let Some(provider) = ai.provider.as_deref().and_then(AiProvider::parse) else {
            return Ok(GuestAi::default());
        };
        match self.open_key(&row.id, Some(&ai)) {
            Ok(key) => Ok(GuestAi {
                env: vec![EnvVar {
                    key: provider.env_var().to_owned(),
                    value: key,
                }],
                proxy_env: Vec::new(),
            }),
            Err(None) => Ok(GuestAi::default()),
            Err(Some(e)) => {
                // The guest gets no key rather than a wrong one; the user can store it again.
                tracing::error!(workspace = %row.id, error = %e, "cannot open the workspace's BYOK key");
                Ok(GuestAi::default())
            }
        }
    }

    /// The workspace's stored provider key, opened: `Err(None)` when none is stored,
    /// `Err(Some(why))` when it does not open (no master key, or not the one it was sealed with).
    fn open_key(&self, ws_id: &str, ai: Option<&WorkspaceAiRow>) -> Result<String, Option<String>> {
        let sealed = ai.and_then(|a| a.api_key_sealed.as_deref()).ok_or(None)?;
        match self.config.master_key.as_ref() {
            Some(master) => master.open(sealed, ws_id).map_err(|e| Some(e.to_string())),
            None => Err(Some("no master key is configured".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_override_wins_and_null_inherits() {
        assert_eq!(effective_mode(None, "managed"), AiMode::Managed);
        assert_eq!(effective_mode(None, "byok"), AiMode::Byok);
        assert_eq!(effective_mode(Some("managed"), "byok"), AiMode::Managed);
        assert_eq!(effective_mode(Some("byok"), "managed"), AiMode::Byok);
        assert_eq!(effective_mode(None, "???"), AiMode::Managed);
    }

    #[test]
    fn keys_and_models_that_cannot_be_one_env_line_are_refused() {
        let key = |k: &str| WorkspaceAiConfigUpdate {
            api_key: Some(Some(k.to_owned())),
            ..Default::default()
        };
        assert!(check_update(&key("sk-abc_123")).is_ok());
        for bad in ["", "sk abc", "sk\nabc", "sk\u{7}"] {
            let e = check_update(&key(bad)).expect_err(bad);
            assert!(e.details["fields"]["api_key"].is_string(), "{bad:?}");
        }
        let model = WorkspaceAiConfigUpdate {
            model: Some(Some(" ".into())),
            ..Default::default()
        };
        assert!(check_update(&model).is_err());
    }
}
