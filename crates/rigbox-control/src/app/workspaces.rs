//! Workspaces: create, list, get, the user actions of the lifecycle state machine
//! (workspaces.md §3), template floors and plan ceilings (§4), resize (§5), env vars (§6) and
//! SSH info (§8). The node carries out what these functions record; `lifecycle` applies its
//! reports.

use super::auth::Principal;
use super::{page_params, ApiError, ApiResult, App};
use crate::store::{StoreError, UsageRow, WorkspaceRow};
use rigbox_types::agent::{
    BridgeCaller, BridgeWorkspace, EnvVar, Whoami, WorkspaceMeta, BRIDGE_URL,
};
use rigbox_types::api::{
    AiMode, CreateWorkspaceRequest, EnvPatched, EnvVars, Failure, Limits, List, ResizeRequest,
    SshInfo, SshKeySync, Template, Workspace, WorkspaceSshKey, WorkspaceSshKeys,
    WorkspaceStatus as S,
};
use rigbox_types::gateway::{parse_ssh_user, SshRoute};
use rigbox_types::node::{DesiredState, GuestConfig};
use rigbox_types::time_fmt::from_micros;
use rigbox_types::{ErrorCode, WorkspaceId};
use std::collections::BTreeMap;
use std::time::Duration;

/// Env var rules of workspaces.md §6.
const MAX_ENV_KEYS: usize = 200;
const MAX_ENV_VALUE: usize = 32 * 1024;
const MAX_ENV_TOTAL: usize = 256 * 1024;

pub(crate) fn status_of(row: &WorkspaceRow) -> S {
    S::parse(&row.status).unwrap_or(S::Failed)
}

pub(crate) fn desired_str(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Disk => "disk",
        DesiredState::Running => "running",
        DesiredState::Idle => "idle",
        DesiredState::Absent => "absent",
    }
}

pub(crate) fn desired_of(row: &WorkspaceRow) -> DesiredState {
    match row.desired_state.as_str() {
        "running" => DesiredState::Running,
        "idle" => DesiredState::Idle,
        "absent" => DesiredState::Absent,
        _ => DesiredState::Disk,
    }
}

/// Sets a new status (and the time it changed).
pub(crate) fn set_status(row: &mut WorkspaceRow, status: S, now: i64) {
    row.status = status.as_str().to_owned();
    row.status_changed_at = now;
    row.updated_at = now;
}

/// Asks the node for a new desired state (bumps the generation).
pub(crate) fn set_desired(row: &mut WorkspaceRow, d: DesiredState) {
    row.desired_state = desired_str(d).to_owned();
    row.generation += 1;
}

/// Effective resources of a request: omitted or 0 takes the template's value, anything below the
/// template's floor is raised to it.
fn floored(value: Option<i64>, floor: i64) -> i64 {
    value.filter(|v| *v > 0).map_or(floor, |v| v.max(floor))
}

fn check_resource_field(name: &str, v: Option<i64>) -> ApiResult<()> {
    match v {
        Some(v) if v < 0 => Err(ApiError::field(name, "must be an integer >= 0")),
        Some(v) if v > 1 << 30 => Err(ApiError::field(name, "is out of range")),
        _ => Ok(()),
    }
}

/// Checks the per-workspace ceilings of the plan.
fn check_per_vm(l: &Limits, plan: &str, ram: i64, vcpu: i64, disk: i64) -> ApiResult<()> {
    if ram > l.max_ram_per_vm_mb {
        return Err(ApiError::limit(
            "max_ram_per_vm_mb",
            l.max_ram_per_vm_mb,
            0,
            ram,
            plan,
            "RAM per workspace",
        ));
    }
    if vcpu > l.max_vcpu_per_vm {
        return Err(ApiError::limit(
            "max_vcpu_per_vm",
            l.max_vcpu_per_vm,
            0,
            vcpu,
            plan,
            "vCPUs per workspace",
        ));
    }
    if disk > l.max_disk_per_vm_mb {
        return Err(ApiError::limit(
            "max_disk_per_vm_mb",
            l.max_disk_per_vm_mb,
            0,
            disk,
            plan,
            "disk per workspace",
        ));
    }
    Ok(())
}

/// Checks the running totals for a start of `row`.
fn check_start_totals(
    l: &Limits,
    plan: &str,
    usage: &UsageRow,
    row: &WorkspaceRow,
) -> ApiResult<()> {
    check_per_vm(l, plan, row.ram_mb, row.vcpu_count, row.disk_size_mb)?;
    if usage.total_ram_mb + row.ram_mb > l.max_ram_total_mb {
        return Err(ApiError::limit(
            "max_ram_total_mb",
            l.max_ram_total_mb,
            usage.total_ram_mb,
            row.ram_mb,
            plan,
            "RAM of running workspaces",
        ));
    }
    if usage.running_vcpus + row.vcpu_count > l.max_running_vcpus {
        return Err(ApiError::limit(
            "max_running_vcpus",
            l.max_running_vcpus,
            usage.running_vcpus,
            row.vcpu_count,
            plan,
            "vCPUs of running workspaces",
        ));
    }
    Ok(())
}

/// Validates an env map update (`None` value = remove) and applies it to `current`.
pub fn apply_env_patch(
    current: &mut BTreeMap<String, String>,
    patch: &BTreeMap<String, Option<String>>,
) -> ApiResult<()> {
    let mut bad = serde_json::Map::new();
    for (k, v) in patch {
        if !rigbox_types::names::is_env_key(k) {
            bad.insert(
                k.clone(),
                "key must match ^[A-Za-z_][A-Za-z0-9_]{0,127}$".into(),
            );
        } else if k.starts_with("RIGBOX_") {
            bad.insert(k.clone(), "keys starting with RIGBOX_ are reserved".into());
        } else if let Some(v) = v {
            if v.contains('\0') {
                bad.insert(k.clone(), "value must not contain NUL".into());
            } else if v.len() > MAX_ENV_VALUE {
                bad.insert(k.clone(), "value must be at most 32 KiB".into());
            }
        }
    }
    if !bad.is_empty() {
        let keys: Vec<&String> = bad.keys().collect();
        return Err(
            ApiError::validation(format!("Invalid env vars: {keys:?}.")).with("fields", bad)
        );
    }
    for (k, v) in patch {
        match v {
            Some(v) => current.insert(k.clone(), v.clone()),
            None => current.remove(k),
        };
    }
    if current.len() > MAX_ENV_KEYS {
        return Err(ApiError::field("env_vars", "at most 200 keys"));
    }
    if current
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        > MAX_ENV_TOTAL
    {
        return Err(ApiError::field("env_vars", "at most 256 KiB in total"));
    }
    Ok(())
}

impl App {
    fn template(&self, id: &str) -> ApiResult<&Template> {
        self.config
            .templates
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownTemplate,
                    format!("Unknown template {id:?}."),
                )
                .with("template_id", id)
                .with(
                    "known",
                    self.config
                        .templates
                        .iter()
                        .map(|t| t.id.clone())
                        .collect::<Vec<_>>(),
                )
            })
    }

    /// The SSH block of a workspace.
    pub fn ssh_info(&self, row: &WorkspaceRow) -> SshInfo {
        let id = WorkspaceId::parse(&row.id);
        let suffix = id.as_ref().map(|i| i.suffix()).unwrap_or("");
        let user = format!("{}-{suffix}", row.name);
        let host = format!("{}.{}", row.region, self.config.base_domain);
        let port = self.config.ssh_port;
        let ssh_target = format!("{user}@{host}");
        let command = if port == 22 {
            format!("ssh {ssh_target}")
        } else {
            format!("ssh {ssh_target} -p {port}")
        };
        SshInfo {
            user,
            host,
            port,
            ssh_target,
            command,
            host_key_fingerprints: self.config.ssh_host_key_fingerprints.clone(),
        }
    }

    /// Renders a workspace for the API.
    pub fn workspace_view(&self, row: &WorkspaceRow) -> Workspace {
        let status = status_of(row);
        let failure = (status == S::Failed).then(|| Failure {
            code: row
                .failure_code
                .clone()
                .unwrap_or_else(|| "internal".into()),
            message: row.failure_message.clone().unwrap_or_default(),
            retryable: row.failure_retryable.unwrap_or(true),
            occurred_at: from_micros(row.failure_at.unwrap_or(row.updated_at)),
            attempts: row.failure_attempts.max(1),
        });
        Workspace {
            id: row.id.clone(),
            name: row.name.clone(),
            user_id: row.user_id.clone(),
            status,
            failure,
            stop_reason: row.stop_reason.clone(),
            template_id: row.template_id.clone(),
            image: row.image.clone(),
            region: row.region.clone(),
            node_id: row.node_id.clone(),
            ip_address: if status.is_live() {
                row.ip_address.clone()
            } else {
                None
            },
            ram_mb: row.ram_mb,
            vcpu_count: row.vcpu_count,
            disk_size_mb: row.disk_size_mb,
            ssh: self.ssh_info(row),
            ai_mode: row.ai_mode.as_deref().and_then(AiMode::parse),
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
            started_at: row.started_at.map(from_micros),
            stopped_at: row.stopped_at.map(from_micros),
        }
    }

    /// Picks the node for a new workspace in `region`: the healthy node with the most free memory.
    async fn place(&self, region: &str) -> ApiResult<String> {
        let mut best: Option<(i64, String)> = None;
        for n in self
            .nodes()
            .iter()
            .filter(|n| n.region() == region && n.healthy())
        {
            let cap = n.capacity().await;
            let (_, used) = self.store.node_live_usage(n.node_id()).await?;
            let free = cap.memory_mb - used;
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, n.node_id().to_owned()));
            }
        }
        best.map(|(_, id)| id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InsufficientCapacity,
                format!("No node in region {region} can host a workspace now; try later."),
            )
        })
    }

    /// Whether the workspace's node can start `row` now (free memory and a free lease).
    async fn node_can_start(&self, row: &WorkspaceRow) -> ApiResult<()> {
        let node = self
            .node(&row.node_id)
            .filter(|n| n.healthy())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NodeUnavailable,
                    "The workspace's compute node is unreachable.",
                )
            })?;
        let cap = node.capacity().await;
        let (live, ram) = self.store.node_live_usage(&row.node_id).await?;
        if live >= cap.slots || ram + row.ram_mb > cap.memory_mb {
            return Err(ApiError::new(
                ErrorCode::InsufficientCapacity,
                "The workspace's node has no room to start it now; nothing changed, try later.",
            ));
        }
        Ok(())
    }

    /// `POST /workspaces`.
    pub async fn create_workspace(
        &self,
        p: &Principal,
        req: CreateWorkspaceRequest,
    ) -> ApiResult<Workspace> {
        let name = rigbox_types::names::workspace_name(&req.name).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidName,
                format!("Invalid workspace name: {e}."),
            )
            .with("name", req.name.as_str())
        })?;
        let template = self
            .template(req.template_id.as_deref().unwrap_or("base"))?
            .clone();
        check_resource_field("ram_mb", req.ram_mb)?;
        check_resource_field("vcpu_count", req.vcpu_count)?;
        check_resource_field("disk_size_mb", req.disk_size_mb)?;
        let ram = floored(req.ram_mb, template.ram_mb);
        let vcpu = floored(req.vcpu_count, template.vcpu_count);
        let disk = floored(req.disk_size_mb, template.disk_size_mb);
        let mut env = BTreeMap::new();
        if let Some(vars) = &req.env_vars {
            apply_env_patch(&mut env, vars)?;
        }
        let region = self.user_region(&p.user).to_owned();
        let node_id = self.place(&region).await?;
        let (limits, _) = self.limits_of(&p.user);
        let plan = p.user.plan.as_str();
        let now = self.now();
        let row = WorkspaceRow {
            id: WorkspaceId::generate().to_string(),
            user_id: p.user.id.clone(),
            name,
            status: S::Provisioning.as_str().into(),
            template_id: template.id.clone(),
            image: template.image.clone(),
            region,
            node_id,
            ip_address: None,
            ram_mb: ram,
            vcpu_count: vcpu,
            disk_size_mb: disk,
            desired_state: desired_str(DesiredState::Disk).into(),
            generation: 1,
            force_delete: false,
            failure_code: None,
            failure_message: None,
            failure_retryable: None,
            failure_at: None,
            failure_attempts: 0,
            failed_step: None,
            stop_reason: None,
            start_from: None,
            restart_pending: false,
            status_changed_at: now,
            env_updated_at: now,
            created_at: now,
            updated_at: now,
            started_at: None,
            stopped_at: None,
            ai_mode: None,
        };
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let usage = self.store.usage(&mut *tx, &p.user.id).await?;
        if usage.workspace_count + 1 > limits.max_vms {
            return Err(ApiError::limit(
                "max_vms",
                limits.max_vms,
                usage.workspace_count,
                1,
                plan,
                "workspaces",
            ));
        }
        check_per_vm(&limits, plan, ram, vcpu, disk)?;
        if usage.total_disk_mb + disk > limits.max_disk_total_mb {
            return Err(ApiError::limit(
                "max_disk_total_mb",
                limits.max_disk_total_mb,
                usage.total_disk_mb,
                disk,
                plan,
                "disk of all workspaces",
            ));
        }
        self.store
            .insert_workspace(&mut tx, &row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ApiError::new(
                    ErrorCode::NameTaken,
                    format!("You already have a workspace named {:?}.", row.name),
                )
                .with("name", row.name.as_str()),
                e => e.into(),
            })?;
        self.store
            .replace_env_vars(&mut tx, &row.id, &env, now)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.notify_node(&row.node_id);
        Ok(self.workspace_view(&row))
    }

    /// The caller's workspace by ID or name (404 for anyone else's).
    pub async fn find_workspace(&self, p: &Principal, ws: &str) -> ApiResult<WorkspaceRow> {
        self.store
            .user_workspace(self.store.pool(), &p.user.id, ws)
            .await?
            .ok_or_else(|| ApiError::not_found(&format!("Workspace {ws:?}")))
    }

    pub async fn get_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        Ok(self.workspace_view(&self.find_workspace(p, ws).await?))
    }

    pub async fn list_workspaces(
        &self,
        p: &Principal,
        status: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<List<Workspace>> {
        if let Some(s) = status {
            if S::parse(s).is_none() {
                return Err(ApiError::field("status", "must be one of provisioning, provisioned, starting, running, stopping, stopped, deleting, failed"));
            }
        }
        let (limit, after) = page_params(limit, cursor)?;
        let page = self
            .store
            .list_workspaces(&p.user.id, status, after, limit)
            .await?;
        Ok(List {
            items: page.items.iter().map(|w| self.workspace_view(w)).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Runs one state-machine step on the caller's workspace inside a transaction that holds the
    /// user's lock, so limit checks and the write are atomic. `step` sees the row, the plan's
    /// limits and current usage, and mutates the row or refuses.
    async fn transition<F>(&self, p: &Principal, ws: &str, step: F) -> ApiResult<WorkspaceRow>
    where
        F: Fn(&mut WorkspaceRow, &Limits, &UsageRow, i64) -> ApiResult<()>,
    {
        let (limits, _) = self.limits_of(&p.user);
        for _ in 0..5 {
            let mut tx = self.store.begin().await?;
            self.store.lock_user(&mut tx, &p.user.id).await?;
            let row = self
                .store
                .user_workspace(&mut *tx, &p.user.id, ws)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("Workspace {ws:?}")))?;
            let usage = self.store.usage(&mut *tx, &p.user.id).await?;
            let mut new = row.clone();
            let now = self.now();
            step(&mut new, &limits, &usage, now)?;
            new.updated_at = now;
            if self
                .store
                .save_workspace(&mut *tx, &new, &row.status, row.generation)
                .await?
            {
                tx.commit().await.map_err(StoreError::from)?;
                self.routes_changed();
                self.notify_node(&new.node_id);
                return Ok(new);
            }
            // A node report changed the row meanwhile: re-read and decide again.
        }
        Err(ApiError::internal())
    }

    /// `POST /workspaces/{ws}/start`.
    pub async fn start_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        let row = self.find_workspace(p, ws).await?;
        let template = self.template(&row.template_id).cloned().ok();
        if matches!(status_of(&row), S::Provisioned | S::Stopped) {
            self.node_can_start(&row).await?;
        }
        let plan = p.user.plan.clone();
        let row = self
            .transition(p, ws, |w, limits, usage, now| {
                let st = status_of(w);
                if !matches!(st, S::Provisioned | S::Stopped) {
                    return Err(ApiError::invalid_state(
                        "start",
                        st.as_str(),
                        &["provisioned", "stopped"],
                    ));
                }
                if let Some(t) = &template {
                    // Floors apply again on start (the operator may have raised them).
                    w.ram_mb = w.ram_mb.max(t.ram_mb);
                    w.vcpu_count = w.vcpu_count.max(t.vcpu_count);
                    w.disk_size_mb = w.disk_size_mb.max(t.disk_size_mb);
                }
                check_start_totals(limits, &plan, usage, w)?;
                w.start_from = Some(st.as_str().to_owned());
                w.stop_reason = None;
                set_status(w, S::Starting, now);
                set_desired(w, DesiredState::Running);
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `POST /workspaces/{ws}/stop`.
    pub async fn stop_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        let row = self
            .transition(p, ws, |w, _, _, now| {
                let st = status_of(w);
                if st != S::Running {
                    return Err(ApiError::invalid_state("stop", st.as_str(), &["running"]));
                }
                w.stop_reason = Some("requested".into());
                set_status(w, S::Stopping, now);
                set_desired(w, DesiredState::Disk);
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `POST /workspaces/{ws}/restart`: stop, then start again by itself.
    pub async fn restart_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        let row = self
            .transition(p, ws, |w, _, _, now| {
                let st = status_of(w);
                if st != S::Running {
                    return Err(ApiError::invalid_state(
                        "restart",
                        st.as_str(),
                        &["running"],
                    ));
                }
                w.stop_reason = Some("requested".into());
                w.restart_pending = true;
                set_status(w, S::Stopping, now);
                set_desired(w, DesiredState::Disk);
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `POST /workspaces/{ws}/cancel`.
    pub async fn cancel_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        let row = self
            .transition(p, ws, |w, _, _, now| match status_of(w) {
                S::Provisioning => {
                    fail(
                        w,
                        "provision",
                        rigbox_types::node::FailureCode::Cancelled,
                        "Cancelled while provisioning.",
                        now,
                    );
                    Ok(())
                }
                S::Starting => {
                    w.stop_reason = Some("cancelled".into());
                    w.restart_pending = false;
                    set_status(w, S::Stopping, now);
                    set_desired(w, DesiredState::Disk);
                    Ok(())
                }
                st => Err(ApiError::invalid_state(
                    "cancel",
                    st.as_str(),
                    &["provisioning", "starting"],
                )),
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `POST /workspaces/{ws}/retry`.
    pub async fn retry_workspace(&self, p: &Principal, ws: &str) -> ApiResult<Workspace> {
        let row = self.find_workspace(p, ws).await?;
        if status_of(&row) == S::Failed && row.failed_step.as_deref() == Some("start") {
            self.node_can_start(&row).await?;
        }
        let plan = p.user.plan.clone();
        let row = self
            .transition(p, ws, |w, limits, usage, now| {
                let st = status_of(w);
                if st != S::Failed {
                    return Err(ApiError::invalid_state("retry", st.as_str(), &["failed"]));
                }
                if w.failure_retryable == Some(false) {
                    return Err(ApiError::new(
                        ErrorCode::NotRetryable,
                        format!(
                            "This failure ({}) cannot be retried; delete the workspace and create it again.",
                            w.failure_code.as_deref().unwrap_or("unknown")
                        ),
                    )
                    .with("failure_code", w.failure_code.clone().unwrap_or_default()));
                }
                if w.failed_step.as_deref() == Some("start") {
                    check_start_totals(limits, &plan, usage, w)?;
                    set_status(w, S::Starting, now);
                    set_desired(w, DesiredState::Running);
                } else {
                    set_status(w, S::Provisioning, now);
                    set_desired(w, DesiredState::Disk);
                }
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `DELETE /workspaces/{ws}`.
    pub async fn delete_workspace(
        &self,
        p: &Principal,
        ws: &str,
        force: bool,
    ) -> ApiResult<Workspace> {
        let row = self
            .transition(p, ws, |w, _, _, now| {
                let st = status_of(w);
                if st == S::Deleting {
                    // Repeating a delete answers 202 again; a forced repeat upgrades it.
                    if force && !w.force_delete {
                        w.force_delete = true;
                        set_desired(w, DesiredState::Absent);
                    }
                    return Ok(());
                }
                if !force && !matches!(st, S::Provisioned | S::Stopped | S::Failed) {
                    return Err(ApiError::invalid_state(
                        "delete",
                        st.as_str(),
                        &["provisioned", "stopped", "failed"],
                    ));
                }
                w.force_delete = force;
                set_status(w, S::Deleting, now);
                set_desired(w, DesiredState::Absent);
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `PUT /workspaces/{ws}/resources`.
    pub async fn resize_workspace(
        &self,
        p: &Principal,
        ws: &str,
        req: ResizeRequest,
    ) -> ApiResult<Workspace> {
        if req.ram_mb.is_none() && req.vcpu_count.is_none() && req.disk_size_mb.is_none() {
            return Err(ApiError::validation(
                "Give at least one of ram_mb, vcpu_count, disk_size_mb.",
            )
            .with(
                "fields",
                serde_json::json!({"ram_mb": "at least one field is required"}),
            ));
        }
        check_resource_field("ram_mb", req.ram_mb)?;
        check_resource_field("vcpu_count", req.vcpu_count)?;
        check_resource_field("disk_size_mb", req.disk_size_mb)?;
        let row = self.find_workspace(p, ws).await?;
        let template = self.template(&row.template_id)?.clone();
        let plan = p.user.plan.clone();
        let row = self
            .transition(p, ws, |w, limits, usage, _| {
                let st = status_of(w);
                if !matches!(st, S::Provisioned | S::Stopped) {
                    return Err(ApiError::invalid_state(
                        "resize",
                        st.as_str(),
                        &["provisioned", "stopped"],
                    ));
                }
                let ram = req
                    .ram_mb
                    .map_or(w.ram_mb, |v| floored(Some(v), template.ram_mb));
                let vcpu = req
                    .vcpu_count
                    .map_or(w.vcpu_count, |v| floored(Some(v), template.vcpu_count));
                let disk = req
                    .disk_size_mb
                    .map_or(w.disk_size_mb, |v| floored(Some(v), template.disk_size_mb));
                if disk < w.disk_size_mb {
                    return Err(ApiError::new(
                        ErrorCode::DiskShrinkNotSupported,
                        format!(
                            "The disk can only grow: {} MB is smaller than the current {} MB.",
                            disk, w.disk_size_mb
                        ),
                    )
                    .with("disk_size_mb", w.disk_size_mb)
                    .with("requested", disk));
                }
                check_per_vm(limits, &plan, ram, vcpu, disk)?;
                let other_disk = usage.total_disk_mb - w.disk_size_mb;
                if other_disk + disk > limits.max_disk_total_mb {
                    return Err(ApiError::limit(
                        "max_disk_total_mb",
                        limits.max_disk_total_mb,
                        usage.total_disk_mb,
                        disk - w.disk_size_mb,
                        &plan,
                        "disk of all workspaces",
                    ));
                }
                let grew_disk = disk != w.disk_size_mb;
                w.ram_mb = ram;
                w.vcpu_count = vcpu;
                w.disk_size_mb = disk;
                if grew_disk {
                    // The node grows the disk image; same desired state, new generation.
                    w.generation += 1;
                }
                Ok(())
            })
            .await?;
        Ok(self.workspace_view(&row))
    }

    /// `GET /workspaces/{ws}/env`.
    pub async fn get_env(&self, p: &Principal, ws: &str) -> ApiResult<EnvVars> {
        let row = self.find_workspace(p, ws).await?;
        let env_vars = self.store.env_vars(self.store.pool(), &row.id).await?;
        Ok(EnvVars {
            env_vars,
            updated_at: from_micros(row.env_updated_at),
        })
    }

    /// The workspace calling the bridge; 404 if it no longer exists.
    async fn caller_row(&self, caller: &BridgeCaller) -> ApiResult<WorkspaceRow> {
        self.store
            .workspace_by_id(self.store.pool(), caller.workspace_id.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))
    }

    /// The SSH gateway's routing and authentication (workspaces.md §8): the workspace the
    /// username names, if the key with this `SHA256:` fingerprint is one of its owner's current
    /// account keys. Every failure is the same `None`, so nothing reveals whether a workspace
    /// exists.
    pub async fn ssh_route(&self, user: &str, fingerprint: &str) -> ApiResult<Option<SshRoute>> {
        let Some((name, id)) = parse_ssh_user(user) else {
            return Ok(None);
        };
        let Some(row) = self
            .store
            .workspace_by_id(self.store.pool(), id.as_str())
            .await?
        else {
            return Ok(None);
        };
        if row.name != name {
            return Ok(None);
        }
        let Some(owner) = self.store.user_by_id(&row.user_id).await? else {
            return Ok(None);
        };
        if owner.disabled {
            return Ok(None);
        }
        let Some(key) = self
            .store
            .ssh_key_by_fingerprint(&row.user_id, fingerprint)
            .await?
        else {
            return Ok(None);
        };
        let now = self.now();
        const MINUTE_US: i64 = 60 * 1_000_000;
        if key.last_used_at.is_none_or(|t| t < now - MINUTE_US) {
            self.store
                .touch_ssh_key(&key.id, now, now - MINUTE_US)
                .await?;
        }
        Ok(Some(SshRoute {
            status: status_of(&row),
            workspace_id: id,
            workspace_name: row.name,
            node_id: row.node_id,
            owner_email: owner.email,
        }))
    }

    /// `GET /rig/v1/whoami`.
    pub async fn bridge_whoami(&self, caller: &BridgeCaller) -> ApiResult<Whoami> {
        let row = self.caller_row(caller).await?;
        let owner = self.store.user_by_id(&row.user_id).await?;
        Ok(Whoami {
            auth_method: "workspace_ip".into(),
            workspace_id: row.id,
            workspace_name: row.name,
            owner_email: owner.map(|u| u.email).unwrap_or_default(),
            region: row.region,
            node_id: caller.node_id.clone(),
            ip_address: caller.ip.to_string(),
        })
    }

    /// `GET /rig/v1/workspace`.
    pub async fn bridge_workspace(&self, caller: &BridgeCaller) -> ApiResult<BridgeWorkspace> {
        let row = self.caller_row(caller).await?;
        let apps = self.bridge_apps(caller).await?;
        let account_mode = self
            .store
            .user_by_id(&row.user_id)
            .await?
            .map(|u| u.ai_mode)
            .unwrap_or_default();
        let ai_mode = self.workspace_ai_mode(&row, &account_mode);
        let w = self.workspace_view(&row);
        Ok(BridgeWorkspace {
            id: w.id,
            name: w.name,
            status: w.status,
            template_id: w.template_id,
            region: w.region,
            node_id: w.node_id,
            ip_address: w.ip_address,
            ram_mb: w.ram_mb,
            vcpu_count: w.vcpu_count,
            disk_size_mb: w.disk_size_mb,
            ssh: w.ssh,
            ai_mode: ai_mode.as_str().into(),
            apps,
            created_at: w.created_at,
            started_at: w.started_at,
        })
    }

    /// The configuration a workspace's agent applies (`/rig/v1/agent/config`).
    pub async fn guest_config_of(&self, row: &WorkspaceRow) -> ApiResult<GuestConfig> {
        let owner = self.store.user_by_id(&row.user_id).await?;
        let user_env = self.store.env_vars(self.store.pool(), &row.id).await?;
        let account_mode = owner.as_ref().map(|u| u.ai_mode.as_str()).unwrap_or("");
        let ai = self.guest_ai(row, account_mode).await?;
        Ok(GuestConfig {
            // Env vars and account keys change independently; the push time orders both.
            revision: self.now(),
            workspace: WorkspaceMeta {
                schema_version: 1,
                workspace_id: row.id.clone(),
                name: row.name.clone(),
                owner_email: owner.map(|u| u.email).unwrap_or_default(),
                region: row.region.clone(),
                node_id: row.node_id.clone(),
                bridge_url: BRIDGE_URL.to_owned(),
                created_at: from_micros(row.created_at),
            },
            hostname: row.name.clone(),
            authorized_keys: self
                .guest_keys(&row.user_id)
                .await?
                .into_iter()
                .map(|k| k.line)
                .collect(),
            gateway_authorized_keys: self.config.gateway_authorized_keys.clone(),
            // Managed: the proxy's pair, and the compatibility set of `~/.rigbox/proxy.env` is
            // the `all` group. BYOK: the user's provider key, and no proxy variables.
            env: guest_env(ai.env, user_env),
            proxy_env: ai.proxy_env,
            volumes: Vec::new(),
            requests: Vec::new(),
        })
    }

    /// Hands the current configuration to a running workspace; true once its agent confirmed.
    pub(crate) async fn push_config(
        &self,
        row: &WorkspaceRow,
        wait: Duration,
    ) -> ApiResult<Option<rigbox_types::node::GuestAck>> {
        if status_of(row) != S::Running {
            return Ok(None);
        }
        let Some(node) = self.node(&row.node_id) else {
            return Ok(None);
        };
        let (Some(id), cfg) = (
            WorkspaceId::parse(&row.id),
            self.guest_config_of(row).await?,
        ) else {
            return Ok(None);
        };
        Ok(node.push_config(&id, cfg, wait).await)
    }

    /// `PATCH /workspaces/{ws}/env`.
    pub async fn patch_env(
        &self,
        p: &Principal,
        ws: &str,
        patch: BTreeMap<String, Option<String>>,
    ) -> ApiResult<EnvPatched> {
        let row = self.find_workspace(p, ws).await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let mut env = self.store.env_vars(&mut *tx, &row.id).await?;
        apply_env_patch(&mut env, &patch)?;
        self.store
            .replace_env_vars(&mut tx, &row.id, &env, now)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let row = self.find_workspace(p, ws).await?;
        let applied = self
            .push_config(&row, Duration::from_secs(5))
            .await?
            .is_some();
        Ok(EnvPatched {
            env_vars: env,
            updated_at: from_micros(now),
            applied,
        })
    }

    /// Pushes the new configuration (account keys, AI mode) to every running workspace of the
    /// user (no wait).
    pub(crate) async fn keys_changed(&self, user_id: &str) {
        let Ok(page) = self
            .store
            .list_workspaces(user_id, Some("running"), None, 200)
            .await
        else {
            return;
        };
        for row in page.items {
            if let Err(e) = self.push_config(&row, Duration::ZERO).await {
                tracing::warn!(workspace = %row.id, error = ?e, "could not push new keys");
            }
        }
    }

    /// `GET /workspaces/{ws}/ssh-keys`: what the agent last reported.
    pub async fn workspace_ssh_keys(&self, p: &Principal, ws: &str) -> ApiResult<WorkspaceSshKeys> {
        let row = self.find_workspace(p, ws).await?;
        let ack = match (self.node(&row.node_id), WorkspaceId::parse(&row.id)) {
            (Some(n), Some(id)) => n.guest_ack(&id).await,
            _ => None,
        };
        Ok(match ack {
            Some(a) => WorkspaceSshKeys {
                items: a
                    .ssh_keys
                    .iter()
                    .map(|k| WorkspaceSshKey {
                        fingerprint: k.fingerprint.clone(),
                        key_type: k.key_type.clone(),
                        comment: k.comment.clone(),
                    })
                    .collect(),
                synced_at: Some(from_micros(a.at)),
                revision: a.revision,
            },
            None => WorkspaceSshKeys {
                items: Vec::new(),
                synced_at: None,
                revision: 0,
            },
        })
    }

    /// `POST /workspaces/{ws}/ssh-keys/sync`: waits up to 10 s for the agent.
    pub async fn sync_workspace_ssh_keys(&self, p: &Principal, ws: &str) -> ApiResult<SshKeySync> {
        let row = self.find_workspace(p, ws).await?;
        let st = status_of(&row);
        if st != S::Running {
            return Err(ApiError::invalid_state(
                "sync the SSH keys of",
                st.as_str(),
                &["running"],
            ));
        }
        let keys = self.guest_keys(&row.user_id).await?.len() as i64;
        let ack = self.push_config(&row, Duration::from_secs(10)).await?;
        Ok(SshKeySync {
            synced: ack.is_some(),
            keys,
            synced_at: ack.map(|a| from_micros(a.at)),
        })
    }
}

/// Marks a workspace failed at `step`; no VM is kept (`Idle`), the disk is.
pub(crate) fn fail(
    w: &mut WorkspaceRow,
    step: &str,
    code: rigbox_types::node::FailureCode,
    message: &str,
    now: i64,
) {
    let same_step = w.failed_step.as_deref() == Some(step);
    w.failure_attempts = if same_step { w.failure_attempts + 1 } else { 1 };
    w.failed_step = Some(step.to_owned());
    w.failure_code = Some(code.as_str().to_owned());
    w.failure_message = Some(message.to_owned());
    w.failure_retryable = Some(code.retryable());
    w.failure_at = Some(now);
    w.restart_pending = false;
    w.ip_address = None;
    set_status(w, S::Failed, now);
    set_desired(w, DesiredState::Idle);
}

impl App {
    /// `GET /capacity`: slots over schedulable nodes, live VMs, and whether a `base` workspace
    /// could start somewhere right now.
    pub async fn capacity(&self) -> ApiResult<rigbox_types::api::Capacity> {
        let min_ram = self
            .config
            .templates
            .iter()
            .find(|t| t.id == "base")
            .map_or(512, |t| t.ram_mb);
        let (mut total, mut used, mut available) = (0, 0, false);
        for n in self.nodes().iter().filter(|n| n.healthy()) {
            let cap = n.capacity().await;
            let slots = cap.slots.min(253);
            let (live, ram) = self.store.node_live_usage(n.node_id()).await?;
            total += slots;
            used += live;
            available |= live < slots && cap.memory_mb - ram >= min_ram;
        }
        Ok(rigbox_types::api::Capacity {
            available,
            total,
            used,
        })
    }
}

/// `/etc/rigbox/env` of a workspace: the platform variables (the managed AI pair, or in BYOK
/// mode the provider key) first, then
/// the user's; a user variable of the same name replaces the platform's (workspaces.md §6).
fn guest_env(
    platform: Vec<EnvVar>,
    user: impl IntoIterator<Item = (String, String)>,
) -> Vec<EnvVar> {
    let user: Vec<EnvVar> = user
        .into_iter()
        .map(|(key, value)| EnvVar { key, value })
        .collect();
    let mut env: Vec<EnvVar> = platform
        .into_iter()
        .filter(|p| !user.iter().any(|u| u.key == p.key))
        .collect();
    env.extend(user);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_raise_never_reject() {
        assert_eq!(floored(None, 512), 512);
        assert_eq!(floored(Some(0), 512), 512);
        assert_eq!(floored(Some(100), 512), 512);
        assert_eq!(floored(Some(1024), 512), 1024);
    }

    #[test]
    fn env_rules() {
        let mut env = BTreeMap::new();
        let mut p = BTreeMap::new();
        p.insert("GOOD_1".to_owned(), Some("v".to_owned()));
        apply_env_patch(&mut env, &p).expect("valid");
        assert_eq!(env.get("GOOD_1").map(String::as_str), Some("v"));
        p.clear();
        p.insert("RIGBOX_X".to_owned(), Some("v".to_owned()));
        assert!(apply_env_patch(&mut env, &p).is_err());
        p.clear();
        p.insert("1BAD".to_owned(), Some("v".to_owned()));
        assert!(apply_env_patch(&mut env, &p).is_err());
        p.clear();
        p.insert("GOOD_1".to_owned(), None);
        apply_env_patch(&mut env, &p).expect("removal");
        assert!(env.is_empty());
    }
}
