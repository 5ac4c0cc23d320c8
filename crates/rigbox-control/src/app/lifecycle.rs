//! The control plane's side of the node contract: it serves each node its desired state, applies
//! the node's reports to the workspace state machine (workspaces.md §3.3) and times out boots.

use super::workspaces::{desired_of, fail, set_desired, set_status, status_of};
use super::{ApiResult, App};
use crate::store::WorkspaceRow;
use rigbox_types::api::WorkspaceStatus as S;
use rigbox_types::node::{
    ControlLink, DesiredState, DesiredVm, FailureCode, GuestConfig, LinkError, Observed, Report,
};
use rigbox_types::WorkspaceId;
use std::sync::Arc;

/// How a report changes a workspace: `None` = ignore, `Delete` = the workspace is gone.
enum Outcome {
    Ignore,
    Update,
    Delete,
}

fn apply(w: &mut WorkspaceRow, observed: &Observed, now: i64) -> Outcome {
    use Observed::*;
    match (status_of(w), observed) {
        (S::Provisioning, DiskReady { .. }) => {
            w.failure_attempts = 0;
            set_status(w, S::Provisioned, now);
            Outcome::Update
        }
        (S::Provisioning, Failed { code, message }) => {
            fail(w, "provision", *code, message, now);
            Outcome::Update
        }
        (S::Starting, Booting { ip }) => {
            if w.ip_address.as_deref() == Some(ip) {
                return Outcome::Ignore;
            }
            w.ip_address = Some(ip.clone());
            Outcome::Update
        }
        (S::Starting, Ready { ip }) => {
            w.ip_address = Some(ip.clone());
            w.started_at = Some(now);
            w.failure_attempts = 0;
            set_status(w, S::Running, now);
            Outcome::Update
        }
        (S::Starting, Failed { code, message }) => {
            fail(w, "start", *code, message, now);
            Outcome::Update
        }
        (S::Starting, DiskReady { exit: Some(reason) }) => {
            let msg = format!("The VM exited while booting ({}).", reason.as_str());
            fail(w, "start", FailureCode::BootFailed, &msg, now);
            Outcome::Update
        }
        (S::Running, Ready { ip }) if w.ip_address.as_deref() != Some(ip) => {
            w.ip_address = Some(ip.clone());
            Outcome::Update
        }
        (S::Running, DiskReady { exit }) => {
            w.stop_reason = Some(exit.map_or("crashed", |e| e.as_str()).to_owned());
            w.ip_address = None;
            w.stopped_at = Some(now);
            set_status(w, S::Stopped, now);
            set_desired(w, DesiredState::Disk);
            Outcome::Update
        }
        (S::Stopping, DiskReady { .. }) => {
            w.ip_address = None;
            w.stopped_at = Some(now);
            if w.restart_pending {
                w.restart_pending = false;
                w.start_from = Some("stopped".into());
                set_status(w, S::Starting, now);
                set_desired(w, DesiredState::Running);
            } else if w.stop_reason.as_deref() == Some("cancelled") {
                let back = w
                    .start_from
                    .as_deref()
                    .and_then(S::parse)
                    .unwrap_or(S::Stopped);
                set_status(w, back, now);
            } else {
                set_status(w, S::Stopped, now);
            }
            Outcome::Update
        }
        (S::Stopping, Failed { code, message }) => {
            fail(w, "start", *code, message, now);
            Outcome::Update
        }
        (S::Deleting, Gone) => Outcome::Delete,
        _ => Outcome::Ignore,
    }
}

impl App {
    /// Desired state of every workspace on `node_id`.
    pub async fn desired_for(&self, node_id: &str) -> ApiResult<Vec<DesiredVm>> {
        let rows = self.store.workspaces_on_node(node_id).await?;
        Ok(rows
            .iter()
            .filter_map(|w| {
                Some(DesiredVm {
                    workspace_id: WorkspaceId::parse(&w.id)?,
                    name: w.name.clone(),
                    generation: w.generation,
                    state: desired_of(w),
                    image: w.image.clone(),
                    ram_mb: w.ram_mb,
                    vcpu_count: w.vcpu_count,
                    disk_size_mb: w.disk_size_mb,
                    force: w.force_delete,
                })
            })
            .collect())
    }

    /// Applies a node's report. Reports about another generation than the current one are stale
    /// and ignored: the node will act on the new desired state and report again.
    pub async fn apply_report(&self, node_id: &str, report: &Report) -> ApiResult<()> {
        for _ in 0..5 {
            let Some(row) = self
                .store
                .workspace_by_id(self.store.pool(), report.workspace_id.as_str())
                .await?
            else {
                return Ok(());
            };
            if row.node_id != node_id || row.generation != report.generation {
                return Ok(());
            }
            let mut new = row.clone();
            let now = self.now();
            match apply(&mut new, &report.observed, now) {
                Outcome::Ignore => return Ok(()),
                Outcome::Delete => {
                    self.store
                        .delete_workspace_row(&row.id, row.generation)
                        .await?;
                    self.routes_changed();
                    return Ok(());
                }
                Outcome::Update => {
                    new.updated_at = now;
                    if self
                        .store
                        .save_workspace(self.store.pool(), &new, &row.status, row.generation)
                        .await?
                    {
                        self.routes_changed();
                        if new.generation != row.generation {
                            self.notify_node(node_id);
                        }
                        tracing::info!(workspace = %row.id, from = %row.status, to = %new.status, "workspace status");
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Fails starts that got no ready report within the boot timeout.
    pub async fn sweep_boot_timeouts(&self) -> ApiResult<()> {
        let now = self.now();
        let limit = now - (self.config.boot_timeout_secs as i64) * 1_000_000;
        for row in self.store.workspaces_stuck("starting", limit).await? {
            let mut new = row.clone();
            let msg = format!(
                "The guest did not report ready within {} s.",
                self.config.boot_timeout_secs
            );
            fail(&mut new, "start", FailureCode::BootTimeout, &msg, now);
            if self
                .store
                .save_workspace(self.store.pool(), &new, &row.status, row.generation)
                .await?
            {
                self.routes_changed();
                tracing::warn!(workspace = %row.id, "boot timeout");
                self.notify_node(&row.node_id);
            }
        }
        Ok(())
    }
}

/// The in-process [`ControlLink`] of one-machine mode.
#[derive(Debug, Clone)]
pub struct LocalLink(pub Arc<App>);

#[async_trait::async_trait]
impl ControlLink for LocalLink {
    async fn desired(&self, node_id: &str) -> Result<Vec<DesiredVm>, LinkError> {
        self.0
            .desired_for(node_id)
            .await
            .map_err(|e| LinkError::Unavailable(e.message))
    }

    async fn report(&self, node_id: &str, report: Report) -> Result<(), LinkError> {
        self.0
            .apply_report(node_id, &report)
            .await
            .map_err(|e| LinkError::Unavailable(e.message))
    }

    async fn changed(&self, node_id: &str) {
        self.0.node_changed(node_id).await
    }

    async fn guest_config(&self, workspace: &WorkspaceId) -> Result<GuestConfig, LinkError> {
        let row = self
            .0
            .store
            .workspace_by_id(self.0.store.pool(), workspace.as_str())
            .await
            .map_err(|e| LinkError::Unavailable(e.to_string()))?
            .ok_or_else(|| LinkError::Unavailable(format!("no workspace {workspace}")))?;
        self.0
            .guest_config_of(&row)
            .await
            .map_err(|e| LinkError::Unavailable(e.message))
    }
}
