//! The node's side of every guest agent: the configuration each agent should apply, what it last
//! confirmed, and whether it reported ready during the current boot.
//!
//! Shared by the VMM driver (which pushes configurations and asks whether a guest is ready) and
//! the bridge service (which serves the configuration to the agent by long poll and records its
//! reports). Everything here is in memory: after a restart of the node the agent simply fetches
//! and confirms again.

use rigbox_types::agent::AgentReport;
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
    /// Runs `f` on the workspace's slot, creating it.
    fn with<T>(&self, ws: &WorkspaceId, f: impl FnOnce(&mut Slot) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the slots stay consistent.
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        f(g.entry(ws.clone()).or_default())
    }

    /// Reads the workspace's slot without creating one (the driver asks about every VM).
    fn peek<T>(&self, ws: &WorkspaceId, f: impl FnOnce(&Slot) -> Option<T>) -> Option<T> {
        let g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        g.get(ws).and_then(f)
    }

    /// Makes `cfg` the configuration the workspace's agent should apply, waking its long poll.
    pub fn push(&self, ws: &WorkspaceId, cfg: GuestConfig) {
        self.with(ws, |s| s.config.send_replace(Some(cfg)));
    }

    /// The configuration the agent should apply, if one was pushed since the VM launched.
    pub fn current(&self, ws: &WorkspaceId) -> Option<GuestConfig> {
        self.peek(ws, |s| s.config.borrow().clone())
    }

    /// The long poll of `GET /rig/v1/agent/config`: waits up to `wait` for a configuration whose
    /// revision differs from `known` (answers at once when the current one already does).
    /// `None` when nothing changed in time.
    pub async fn config_changed(
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

    /// Records a report of the agent: its confirmation (waking [`Self::wait_ack`]) and, when it
    /// says `ready`, the boot it is ready in.
    pub fn record_report(&self, ws: &WorkspaceId, report: AgentReport) {
        let at = rigbox_types::time_fmt::now_micros();
        self.with(ws, |s| {
            if report.ready {
                s.ready_boot = Some(report.boot_id);
            }
            s.ack.send_replace(Some(GuestAck {
                revision: report.revision,
                ssh_keys: report.authorized_keys,
                at,
            }));
        });
    }

    /// What the agent last confirmed.
    pub fn ack(&self, ws: &WorkspaceId) -> Option<GuestAck> {
        self.peek(ws, |s| s.ack.borrow().clone())
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
        let acked = match tokio::time::timeout(wait, rx.wait_for(done)).await {
            Ok(Ok(a)) => a.clone(),
            _ => None,
        };
        acked
    }

    /// The boot the agent reported ready in, if it did since the VM launched.
    pub fn ready_boot(&self, ws: &WorkspaceId) -> Option<String> {
        self.peek(ws, |s| s.ready_boot.clone())
    }

    /// Forgets the workspace's agent (its VM launched anew or went away), so that a new boot
    /// starts clean: no configuration (the next poll fetches it from the control plane), no
    /// confirmation, not ready.
    pub fn forget(&self, ws: &WorkspaceId) {
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = g.get_mut(ws) {
            // Nobody waits: drop the slot so deleted workspaces leave nothing behind.
            if s.config.receiver_count() == 0 && s.ack.receiver_count() == 0 {
                g.remove(ws);
                return;
            }
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
    use std::sync::Arc;
    use std::time::Instant;

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

    fn report(revision: i64, boot: &str, ready: bool) -> AgentReport {
        AgentReport {
            revision,
            boot_id: boot.into(),
            ready,
            authorized_keys: vec![],
            metrics: None,
            results: None,
        }
    }

    #[tokio::test]
    async fn long_poll_wakes_on_push_and_times_out_without() {
        let ch = Arc::new(GuestChannel::default());
        let ws = WorkspaceId::generate();
        assert!(ch.current(&ws).is_none());
        // Nothing pushed yet: nothing to answer.
        assert!(ch
            .config_changed(&ws, 0, Duration::from_millis(20))
            .await
            .is_none());
        ch.push(&ws, cfg(1));
        assert_eq!(ch.current(&ws).map(|c| c.revision), Some(1));
        let t = Instant::now();
        assert_eq!(
            ch.config_changed(&ws, 0, Duration::from_secs(5))
                .await
                .map(|c| c.revision),
            Some(1)
        );
        assert!(t.elapsed() < Duration::from_secs(1), "answered at once");
        let t = Instant::now();
        assert!(ch
            .config_changed(&ws, 1, Duration::from_millis(100))
            .await
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(100), "waited");
        let (ch2, ws2) = (ch.clone(), ws.clone());
        let poll =
            tokio::spawn(async move { ch2.config_changed(&ws2, 1, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        ch.push(&ws, cfg(2));
        assert_eq!(poll.await.ok().flatten().map(|c| c.revision), Some(2));
        assert!(t.elapsed() < Duration::from_secs(1), "woken by the push");
    }

    #[tokio::test]
    async fn wait_ack_resolves_on_the_revision_or_a_later_one() {
        let ch = Arc::new(GuestChannel::default());
        let ws = WorkspaceId::generate();
        assert!(ch
            .wait_ack(&ws, 5, Duration::from_millis(20))
            .await
            .is_none());
        let (ch2, ws2) = (ch.clone(), ws.clone());
        let waiter =
            tokio::spawn(async move { ch2.wait_ack(&ws2, 5, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // An older revision does not satisfy the waiter...
        ch.record_report(&ws, report(4, "boot-1", false));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // ...a later one does.
        let t = Instant::now();
        ch.record_report(&ws, report(6, "boot-1", false));
        let ack = waiter.await.ok().flatten().expect("acked");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(ack.revision, 6);
        assert_eq!(ch.ack(&ws).map(|a| a.revision), Some(6));
        // Not ready: no ready boot recorded.
        assert!(ch.ready_boot(&ws).is_none());
    }

    #[tokio::test]
    async fn readiness_follows_the_last_ready_boot_and_forget_starts_clean() {
        let ch = GuestChannel::default();
        let ws = WorkspaceId::generate();
        let mut r = report(5, "boot-1", true);
        r.authorized_keys = vec![rigbox_types::agent::ReportedKey {
            fingerprint: "SHA256:x".into(),
            key_type: "ssh-ed25519".into(),
            comment: "dev@laptop".into(),
        }];
        ch.record_report(&ws, r);
        let ack = ch.ack(&ws).expect("ack");
        assert_eq!(ack.revision, 5);
        assert_eq!(ack.ssh_keys.len(), 1);
        assert!(ack.at > 0);
        assert_eq!(ch.ready_boot(&ws).as_deref(), Some("boot-1"));
        // A later not-ready report keeps the readiness of the boot.
        ch.record_report(&ws, report(6, "boot-1", false));
        assert_eq!(ch.ready_boot(&ws).as_deref(), Some("boot-1"));
        ch.record_report(&ws, report(6, "boot-2", true));
        assert_eq!(ch.ready_boot(&ws).as_deref(), Some("boot-2"));
        ch.push(&ws, cfg(7));
        ch.forget(&ws);
        assert!(ch.ready_boot(&ws).is_none());
        assert!(ch.ack(&ws).is_none());
        assert!(ch.current(&ws).is_none());
        // Asking about a workspace does not create state for it.
        assert!(ch.slots.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn forget_keeps_a_pending_long_poll_waiting_for_the_next_boot() {
        let ch = Arc::new(GuestChannel::default());
        let ws = WorkspaceId::generate();
        ch.push(&ws, cfg(1));
        let (ch2, ws2) = (ch.clone(), ws.clone());
        let poll =
            tokio::spawn(async move { ch2.config_changed(&ws2, 1, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ch.forget(&ws);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!poll.is_finished(), "no config is no change");
        ch.push(&ws, cfg(3));
        assert_eq!(poll.await.ok().flatten().map(|c| c.revision), Some(3));
    }
}
