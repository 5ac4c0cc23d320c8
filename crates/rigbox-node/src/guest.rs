//! The node's side of every guest agent: the configuration each agent should apply, what it last
//! confirmed, and whether it reported ready during the current boot.
//!
//! Shared by the VMM driver (which pushes configurations and asks whether a guest is ready) and
//! the bridge service (which serves the configuration to the agent by long poll and records its
//! reports). Everything here is in memory: after a restart of the node the agent simply fetches
//! and confirms again.

use rigbox_types::agent::{AgentReport, ReportedKey};
use rigbox_types::node::{GuestAck, GuestConfig};
use rigbox_types::WorkspaceId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug)]
struct Slot {
    /// The latest configuration; `None` until the first push or fetch.
    config: watch::Sender<Option<GuestConfig>>,
    /// The latest confirmation of the agent.
    ack: watch::Sender<Option<GuestAck>>,
    /// `boot_id` of the first ready report of the current boot.
    ready_boot: Option<String>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            config: watch::channel(None).0,
            ack: watch::channel(None).0,
            ready_boot: None,
        }
    }
}

/// The state of every guest agent on this node.
#[derive(Debug, Default)]
pub struct GuestChannel {
    slots: Mutex<HashMap<WorkspaceId, Slot>>,
}

impl GuestChannel {
    fn with<T>(&self, ws: &WorkspaceId, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        f(g.entry(ws.clone()).or_default())
    }

    /// Makes `cfg` the configuration the workspace's agent should apply, waking its long poll.
    pub fn push(&self, ws: &WorkspaceId, cfg: GuestConfig) {
        self.with(ws, |s| s.config.send_replace(Some(cfg)));
    }

    /// The configuration the agent should apply, if one was pushed since the VM launched.
    pub fn current(&self, ws: &WorkspaceId) -> Option<GuestConfig> {
        self.with(ws, |s| s.config.borrow().clone())
    }

    /// Waits up to `wait` for a configuration whose revision differs from `known`.
    pub async fn changed(
        &self,
        ws: &WorkspaceId,
        known: i64,
        wait: Duration,
    ) -> Option<GuestConfig> {
        let mut rx = self.with(ws, |s| s.config.subscribe());
        let differs = |c: &Option<GuestConfig>| c.as_ref().is_some_and(|c| c.revision != known);
        let r = tokio::time::timeout(wait, rx.wait_for(differs)).await;
        match r {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }

    /// Records a report of the agent: its confirmation, and readiness for this boot.
    pub fn record_report(&self, ws: &WorkspaceId, report: &AgentReport, at_micros: i64) {
        let keys: Vec<ReportedKey> = report.authorized_keys.clone();
        self.with(ws, |s| {
            if report.ready && s.ready_boot.as_deref() != Some(report.boot_id.as_str()) {
                s.ready_boot = Some(report.boot_id.clone());
            }
            s.ack.send_replace(Some(GuestAck {
                revision: report.revision,
                ssh_keys: keys,
                at: at_micros,
            }));
        });
    }

    /// What the agent last confirmed.
    pub fn ack(&self, ws: &WorkspaceId) -> Option<GuestAck> {
        self.with(ws, |s| s.ack.borrow().clone())
    }

    /// Waits up to `wait` for the agent to confirm `revision` (or a later one).
    pub async fn wait_ack(
        &self,
        ws: &WorkspaceId,
        revision: i64,
        wait: Duration,
    ) -> Option<GuestAck> {
        let mut rx = self.with(ws, |s| s.ack.subscribe());
        let done = |a: &Option<GuestAck>| a.as_ref().is_some_and(|a| a.revision >= revision);
        let r = match tokio::time::timeout(wait, rx.wait_for(done)).await {
            Ok(Ok(a)) => a.clone(),
            _ => None,
        };
        r
    }

    /// The boot the agent reported ready in, if it did since the VM launched.
    pub fn ready_boot(&self, ws: &WorkspaceId) -> Option<String> {
        self.with(ws, |s| s.ready_boot.clone())
    }

    /// Forgets the workspace's agent (its VM launched anew or went away).
    pub fn forget(&self, ws: &WorkspaceId) {
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = g.get_mut(ws) {
            s.config.send_replace(None);
            s.ack.send_replace(None);
            s.ready_boot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigbox_types::agent::WorkspaceMeta;

    fn cfg(revision: i64) -> GuestConfig {
        GuestConfig {
            revision,
            workspace: WorkspaceMeta {
                schema_version: 1,
                workspace_id: "ws-abcdefgh".into(),
                name: "w".into(),
                owner_email: "a@b.c".into(),
                region: "local".into(),
                node_id: "node-1".into(),
                bridge_url: rigbox_types::agent::BRIDGE_URL.into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            hostname: "w".into(),
            authorized_keys: vec![],
            gateway_authorized_keys: vec![],
            env: vec![],
            proxy_env: vec![],
            volumes: vec![],
            requests: vec![],
        }
    }

    fn report(revision: i64, boot: &str) -> AgentReport {
        AgentReport {
            revision,
            boot_id: boot.into(),
            ready: true,
            authorized_keys: vec![],
            metrics: None,
            results: None,
        }
    }

    #[tokio::test]
    async fn long_poll_wakes_on_push_and_times_out_without() {
        let ch = std::sync::Arc::new(GuestChannel::default());
        let ws = WorkspaceId::generate();
        ch.push(&ws, cfg(1));
        assert_eq!(
            ch.changed(&ws, 0, Duration::from_secs(1))
                .await
                .map(|c| c.revision),
            Some(1)
        );
        assert!(ch
            .changed(&ws, 1, Duration::from_millis(50))
            .await
            .is_none());
        let (ch2, ws2) = (ch.clone(), ws.clone());
        let poll = tokio::spawn(async move { ch2.changed(&ws2, 1, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ch.push(&ws, cfg(2));
        assert_eq!(poll.await.ok().flatten().map(|c| c.revision), Some(2));
    }

    #[tokio::test]
    async fn acks_readiness_and_forget() {
        let ch = GuestChannel::default();
        let ws = WorkspaceId::generate();
        assert!(ch
            .wait_ack(&ws, 5, Duration::from_millis(20))
            .await
            .is_none());
        ch.record_report(&ws, &report(5, "boot-1"), 1);
        assert_eq!(
            ch.wait_ack(&ws, 5, Duration::from_millis(20))
                .await
                .map(|a| a.revision),
            Some(5)
        );
        assert_eq!(ch.ready_boot(&ws).as_deref(), Some("boot-1"));
        ch.forget(&ws);
        assert!(ch.ready_boot(&ws).is_none());
        assert!(ch.ack(&ws).is_none());
        assert!(ch.current(&ws).is_none());
    }
}
