//! `workspace ai show|mode` (also `ai show|mode`): a workspace's AI configuration through
//! `GET/PUT /workspaces/{ws}/ai-config` (bridge-and-ai.md §12). The provider key is read from a
//! no-echo prompt or from stdin, never from an argument, and never printed.

use super::account::labelled;
use super::Ctx;
use crate::cli::{AiModeArg, AiProviderArg};
use crate::client::urlencode;
use crate::error::{CliError, CliResult};
use crate::output::{cell, Out};
use crate::prompt;
use reqwest::Method;
use serde_json::{json, Map, Value};

fn path(ws: &str) -> String {
    format!("/workspaces/{}/ai-config", urlencode(ws))
}

/// The labelled block of one configuration.
fn describe(c: &Value) -> String {
    labelled(&[
        ("Mode", &c["mode"]),
        ("Provider", &c["provider"]),
        ("Model", &c["model"]),
        ("Status", &c["status"]),
        ("Updated", &c["updated_at"]),
    ])
}

/// What to do about a BYOK workspace without a key.
fn hint(ws: &str, c: &Value) -> Option<String> {
    (c["status"] == "invalid_missing_key").then(|| {
        format!(
            "No provider key is stored: {} workspace ai mode {ws} byok --provider <PROVIDER> --api-key",
            crate::bin_name()
        )
    })
}

/// `ai show <WS>`.
pub async fn show(ctx: &Ctx, ws: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let c = ctx.api.get(&path(ws)).await?;
    let mut m = describe(&c);
    if let Some(h) = hint(ws, &c) {
        m.push_str(&format!("\n\n{h}"));
    }
    Ok(Out::doc(c).with_message(m))
}

/// Where the provider key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    None,
    Prompt,
    Stdin,
}

/// The body of `PUT …/ai-config` for `ai mode` (the key added by the caller).
pub fn mode_body(mode: AiModeArg, provider: Option<AiProviderArg>, model: Option<&str>) -> Value {
    let mut b = Map::new();
    b.insert(
        "mode".into(),
        match mode {
            AiModeArg::Managed => json!("managed"),
            AiModeArg::Byok => json!("byok"),
            AiModeArg::Inherit => Value::Null,
        },
    );
    if let Some(p) = provider {
        let p = match p {
            AiProviderArg::Google => "google",
            AiProviderArg::Openai => "openai",
            AiProviderArg::Anthropic => "anthropic",
        };
        b.insert("provider".into(), json!(p));
    }
    if let Some(m) = model {
        b.insert("model".into(), json!(m));
    }
    Value::Object(b)
}

/// `ai mode <WS> managed|byok|inherit [--provider P] [--model M] [--api-key|--api-key-stdin]`.
pub async fn mode(
    ctx: &Ctx,
    ws: &str,
    mode: AiModeArg,
    provider: Option<AiProviderArg>,
    model: Option<&str>,
    key: KeySource,
) -> CliResult<Out> {
    if key != KeySource::None && mode == AiModeArg::Managed {
        return Err(CliError::usage(
            "a provider key is only stored in byok mode (switching to managed deletes it)",
        ));
    }
    ctx.api.require_key()?;
    let mut body = mode_body(mode, provider, model);
    let api_key = match key {
        KeySource::None => None,
        KeySource::Stdin => Some(prompt::stdin_line().await?),
        KeySource::Prompt => {
            if !prompt::interactive() {
                return Err(CliError::usage(
                    "--api-key needs a terminal to ask on; use --api-key-stdin to read the key from stdin",
                ));
            }
            Some(
                prompt::secret("Provider API key: ")
                    .await?
                    .trim()
                    .to_owned(),
            )
        }
    };
    if let Some(k) = api_key {
        if k.is_empty() {
            return Err(CliError::usage("no provider key given"));
        }
        body["api_key"] = json!(k);
    }
    let c = ctx.api.call(Method::PUT, &path(ws), Some(&body)).await?;
    let mut m = format!(
        "{ws}: AI mode {}{} ({})",
        cell(&c["mode"]),
        if mode == AiModeArg::Inherit {
            ", inherited from the account"
        } else {
            ""
        },
        cell(&c["status"]),
    );
    if c["mode"] == "byok" && c["status"] == "byok_active" {
        m.push_str(
            "\nThe key reaches the VM's /etc/rigbox/env at the next sync; new sessions see it.",
        );
    }
    if let Some(h) = hint(ws, &c) {
        m.push_str(&format!("\n{h}"));
    }
    Ok(Out::doc(c).with_message(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_sends_null_and_only_given_fields() {
        assert_eq!(
            mode_body(AiModeArg::Inherit, None, None),
            json!({"mode": null})
        );
        assert_eq!(
            mode_body(AiModeArg::Byok, Some(AiProviderArg::Openai), Some("gpt-4o")),
            json!({"mode": "byok", "provider": "openai", "model": "gpt-4o"})
        );
    }
}
