//! The AI proxy's environment in a workspace (bridge-and-ai.md §10): the platform variables
//! every managed workspace gets in `/etc/rigbox/env`, the opt-in groups of `~/.rigbox/proxy.env`
//! and `rig proxy`, and `GET /rig/v1/proxy/env`. What is offered follows
//! [`ManagedAi`](crate::config::ManagedAi): a group exists only when its upstream is configured.
//! A workspace in BYOK mode is offered none of it ([`super::byok`]).

use super::{ApiResult, App};
use rigbox_types::agent::{BridgeCaller, EnvVar, ProxyEnvVar, BRIDGE_URL};
use rigbox_types::api::AiMode;
use serde::Serialize;

/// The placeholder key for SDKs that insist on one; the proxy drops it.
pub const PLACEHOLDER_KEY: &str = "managed-by-rigbox";
/// Where the agent writes the compatibility set in the guest.
pub const PROXY_ENV_PATH: &str = "/home/developer/.rigbox/proxy.env";

/// The groups of `GET /rig/v1/proxy/env`, in the order of the spec's table (absent = not
/// configured).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyGroups {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openrouter: Option<Vec<ProxyEnvVar>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai: Option<Vec<ProxyEnvVar>>,
    /// Alias of `openai`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v1: Option<Vec<ProxyEnvVar>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<Vec<ProxyEnvVar>>,
    /// Every group above plus `RIGBOX_AI_PROXY_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ProxyEnvVar>>,
}

/// `GET /rig/v1/proxy/env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyEnv {
    /// `managed` or `byok`.
    pub mode: String,
    /// The bridge the variables point at.
    pub bridge_url: String,
    /// `~/.rigbox/proxy.env` as an absolute path.
    pub proxy_env_path: String,
    pub groups: ProxyGroups,
    /// Names exported to every login shell through `/etc/rigbox/env`.
    pub login_variables: Vec<String>,
}

fn var(name: &str, value: impl Into<String>) -> ProxyEnvVar {
    ProxyEnvVar {
        name: name.to_owned(),
        value: value.into(),
    }
}

impl App {
    /// Whether the OpenRouter-compatible routes are served (the managed pair is exported).
    fn openrouter_offered(&self) -> bool {
        let ai = self.config.managed_ai;
        ai.enabled && ai.openrouter
    }

    /// The groups whose upstream is configured (none while managed AI is off).
    pub fn proxy_groups(&self) -> ProxyGroups {
        let ai = self.config.managed_ai;
        if !ai.enabled {
            return ProxyGroups::default();
        }
        let v1 = format!("{BRIDGE_URL}/v1");
        let openrouter = ai.openrouter.then(|| {
            vec![
                var("OPENROUTER_BASE_URL", &v1),
                var("OPENROUTER_API_KEY", PLACEHOLDER_KEY),
            ]
        });
        let openai = ai.openrouter.then(|| {
            vec![
                var("OPENAI_BASE_URL", &v1),
                var("OPENAI_API_KEY", PLACEHOLDER_KEY),
            ]
        });
        // Anthropic clients append `/v1/messages` themselves.
        let anthropic = ai.anthropic.then(|| {
            vec![
                var("ANTHROPIC_BASE_URL", BRIDGE_URL),
                var("ANTHROPIC_AUTH_TOKEN", PLACEHOLDER_KEY),
            ]
        });
        let all = (ai.openrouter || ai.anthropic || ai.brave).then(|| {
            let mut all: Vec<ProxyEnvVar> = [&openrouter, &openai, &anthropic]
                .into_iter()
                .flatten()
                .flatten()
                .cloned()
                .collect();
            all.push(var("RIGBOX_AI_PROXY_URL", BRIDGE_URL));
            all
        });
        ProxyGroups {
            v1: openai.clone(),
            openrouter,
            openai,
            anthropic,
            all,
        }
    }

    /// The platform variables of `/etc/rigbox/env` (written before the user's).
    pub fn platform_env(&self) -> Vec<EnvVar> {
        if !self.openrouter_offered() {
            return Vec::new();
        }
        vec![
            EnvVar {
                key: "OPENROUTER_BASE_URL".into(),
                value: format!("{BRIDGE_URL}/v1"),
            },
            EnvVar {
                key: "OPENROUTER_API_KEY".into(),
                value: PLACEHOLDER_KEY.into(),
            },
        ]
    }

    /// `GET /rig/v1/proxy/env`.
    pub async fn bridge_proxy_env(&self, caller: &BridgeCaller) -> ApiResult<ProxyEnv> {
        // The caller must still exist (404 otherwise), like every other `/rig/v1` read.
        let (p, row) = self.bridge_principal(caller).await?;
        let mode = self.workspace_ai_mode(&row, &p.user.ai_mode);
        let ai = self.guest_ai(&row, &p.user.ai_mode).await?;
        Ok(ProxyEnv {
            mode: mode.as_str().into(),
            bridge_url: BRIDGE_URL.into(),
            proxy_env_path: PROXY_ENV_PATH.into(),
            // In BYOK mode the proxy serves this workspace nothing.
            groups: match mode {
                AiMode::Managed => self.proxy_groups(),
                AiMode::Byok => ProxyGroups::default(),
            },
            login_variables: ai.env.into_iter().map(|e| e.key).collect(),
        })
    }
}
