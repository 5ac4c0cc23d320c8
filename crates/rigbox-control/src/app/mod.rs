//! The control plane's logic, one module per resource. Handlers in `http/` parse a request and
//! call one function here; these functions check permissions, limits and state machines and call
//! the store. Everything is reachable without HTTP so tests and admin commands share it.

pub mod accounts;
pub mod admin;
pub mod app_auth;
pub mod apps;
pub mod auth;
pub mod byok;
pub mod credits;
pub mod error;
pub mod keys;
pub mod lifecycle;
pub mod proxy_env;
pub mod ratelimit;
pub mod wallet;
pub mod workspaces;

pub use error::{ApiError, ApiResult};

use crate::config::ControlConfig;
use crate::store::Store;
use rigbox_types::node::NodeHandle;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// Source of the current time (a trait so tests can move time).
pub trait Clock: Send + Sync + 'static {
    /// Unix microseconds.
    fn now_micros(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        rigbox_types::time_fmt::now_micros()
    }
}

/// The control plane: configuration, store, nodes and in-memory limiters.
pub struct App {
    pub store: Store,
    pub config: ControlConfig,
    pub clock: Arc<dyn Clock>,
    pub(crate) rate: ratelimit::RateLimiter,
    pub(crate) logins: ratelimit::LoginLockout,
    nodes: Vec<Arc<dyn NodeHandle>>,
    node_signals: HashMap<String, Arc<Notify>>,
    /// Resolves waiters when the control plane shuts down.
    pub(crate) shutdown: Notify,
    /// Bumped after every committed change that can alter an app route (see
    /// [`App::route_generation`]).
    pub(crate) route_generation: std::sync::atomic::AtomicU64,
    /// The wallet writer's queue, once [`App::wallet`] was first called (for [`App::wallet_synced`]).
    pub(crate) wallet_queue: std::sync::OnceLock<wallet::Queue>,
    /// Bumped after every committed change of an AI mode or BYOK key (see
    /// [`App::ai_generation`]).
    pub(crate) ai_generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the control plane over `store` with the given compute nodes.
    pub fn new(
        store: Store,
        config: ControlConfig,
        clock: Arc<dyn Clock>,
        nodes: Vec<Arc<dyn NodeHandle>>,
    ) -> Arc<Self> {
        let node_signals = nodes
            .iter()
            .map(|n| (n.node_id().to_owned(), Arc::new(Notify::new())))
            .collect();
        Arc::new(Self {
            rate: ratelimit::RateLimiter::new(config.rate_limits),
            logins: ratelimit::LoginLockout::new(config.rate_limits),
            store,
            config,
            clock,
            nodes,
            node_signals,
            shutdown: Notify::new(),
            route_generation: std::sync::atomic::AtomicU64::new(0),
            wallet_queue: std::sync::OnceLock::new(),
            ai_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    pub(crate) fn node(&self, node_id: &str) -> Option<&Arc<dyn NodeHandle>> {
        self.nodes.iter().find(|n| n.node_id() == node_id)
    }

    pub(crate) fn nodes(&self) -> &[Arc<dyn NodeHandle>] {
        &self.nodes
    }

    /// Wakes the node so it re-reads its desired state.
    pub(crate) fn notify_node(&self, node_id: &str) {
        if let Some(n) = self.node_signals.get(node_id) {
            n.notify_one();
        }
    }

    /// Waits until the desired state of `node_id` may have changed.
    pub(crate) async fn node_changed(&self, node_id: &str) {
        match self.node_signals.get(node_id) {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Starts background work: boot timeouts and the monthly credit reset.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = app.shutdown.notified() => return,
                }
                if let Err(e) = app.sweep_boot_timeouts().await {
                    tracing::warn!(error = ?e, "boot-timeout sweep failed");
                }
                if n.is_multiple_of(60) {
                    if let Err(e) = app.sweep_monthly_resets().await {
                        tracing::warn!(error = ?e, "monthly credit reset failed");
                    }
                    app.rate.prune();
                }
                n += 1;
            }
        })
    }

    /// Stops background work.
    pub fn shutdown(&self) {
        self.shutdown.notify_waiters();
    }
}

/// Validates `limit` and decodes `cursor` of a list request.
pub fn page_params(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> ApiResult<(i64, Option<(i64, String)>)> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(
            crate::store::decode_cursor(c)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API issued"))?,
        ),
    };
    Ok((limit, after))
}
