//! One module per command group. Every command takes the invocation's [`Ctx`], makes its API
//! calls and returns an `Out` (`crate::output`) for the printer (waiting commands print
//! their NDJSON events as they go); none prints errors or exits the process itself.
//!
//! - `account`: login, logout, whoami, status, limits, capacity, templates
//! - `workspace`: `workspace …` (alias `ws`)
//! - `ai`: `workspace ai …` (also `ai …`), a workspace's AI mode and BYOK key
//! - `apps`: `app …`, in both modes
//! - `keys`: `ssh-key …` and `api-key …`
//! - `api`: the raw `api` command and `completions`
//! - `inside`: the workspace-mode variants of whoami, status and `workspace get`
//! - `credits`: `credits`, `credits ledger` and `usage`, in both modes
//! - `proxy`: `proxy …`, the AI proxy's environment (workspace mode only)
//! - `agent`: the guest agent (`rig agent`), run by `rigbox-agent.service` in every VM

pub mod account;
pub mod agent;
pub mod ai;
pub mod api;
pub mod apps;
pub mod credits;
pub mod inside;
pub mod keys;
pub mod proxy;
pub mod workspace;

use crate::client::Api;
use crate::config::{ConfigFile, Effective};
use crate::output::Printer;

/// What every local-mode command gets.
#[derive(Debug)]
pub struct Ctx {
    /// Client of `<api_url>/api/v1` with the effective key (if any).
    pub api: Api,
    pub printer: Printer,
    /// The config file as read (login and logout rewrite it).
    pub file: ConfigFile,
    /// The effective settings and where they came from.
    pub effective: Effective,
    pub verbose: bool,
}

impl Ctx {
    /// A client of the same API without credential, for the public endpoints: a stale stored
    /// key must not break `capacity` or `templates ls`.
    pub fn anonymous(&self) -> Api {
        self.api.with_key(None)
    }
}
