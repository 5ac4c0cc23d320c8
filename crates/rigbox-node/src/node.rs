//! The node agent: converges VMs and disks to the control plane's desired state and reports.

use crate::leases::Leases;
use crate::vmm::{LaunchSpec, VmState, Vmm};
use rigbox_types::node::{
    ControlLink, DesiredState, DesiredVm, ExitReason, FailureCode, GuestAck, GuestConfig,
    NodeCapacity, NodeHandle, Observed, Report,
};
use rigbox_types::WorkspaceId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The node re-reads its whole desired state at least this often, even without a signal.
pub const RESYNC: Duration = Duration::from_secs(5);

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub region: String,
    /// At most this many running VMs (capped at 253, the lease count).
    pub max_running_vms: i64,
    /// Memory given to VMs in all, in MiB.
    pub memory_mb: i64,
    /// Grace period of a graceful stop before the VM is killed.
    pub stop_grace: Duration,
    /// How often the node re-checks its VMs when nothing else wakes it.
    pub poll_interval: Duration,
}

impl NodeConfig {
    /// Defaults for a node on this host: 80% of its memory for VMs.
    pub fn for_host(node_id: &str, region: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            region: region.to_owned(),
            max_running_vms: 253,
            memory_mb: host_memory_mb().map_or(4096, |m| m * 4 / 5),
            stop_grace: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn host_memory_mb() -> Option<i64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// One compute node.
pub struct Node {
    config: NodeConfig,
    vmm: Arc<dyn Vmm>,
    leases: Mutex<Leases>,
    /// Workspaces with an operation in flight (the loop skips them until it ends).
    inflight: Mutex<HashSet<WorkspaceId>>,
    /// The last report sent per workspace, so unchanged observations are not re-sent.
    reported: Mutex<HashMap<WorkspaceId, Report>>,
    wake: Notify,
    stop: Notify,
    /// The node network, where VMs are reached (QEMU driver only).
    net: std::sync::OnceLock<Arc<crate::net::Net>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("vmm", &self.vmm.kind())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node over `vmm`, re-adopting the leases of VMs that are still running.
    pub async fn new(config: NodeConfig, vmm: Arc<dyn Vmm>) -> Arc<Self> {
        let mut leases = Leases::default();
        for (ws, st) in vmm.list().await {
            if let VmState::Running { ip, .. } = st {
                tracing::info!(workspace = %ws, %ip, "re-adopted running VM");
                leases.adopt(&ws, ip);
            }
        }
        Arc::new(Self {
            config,
            vmm,
            leases: Mutex::new(leases),
            inflight: Mutex::new(HashSet::new()),
            reported: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            stop: Notify::new(),
            net: std::sync::OnceLock::new(),
        })
    }

    /// Gives the node its network (QEMU driver), so it can reach its VMs' ports.
    pub fn attach_net(&self, net: Arc<crate::net::Net>) {
        let _ = self.net.set(net);
    }

    /// A TCP stream to `port` of the workspace's running VM, made inside the node namespace.
    pub async fn connect(
        &self,
        ws: &WorkspaceId,
        port: u16,
    ) -> Result<tokio::net::TcpStream, crate::ingress::IngressError> {
        use crate::ingress::IngressError;
        let (Some(ip), Some(net)) = (self.lease_of(ws), self.net.get()) else {
            return Err(IngressError::NotRunning(ws.clone()));
        };
        let addr = std::net::SocketAddrV4::new(ip, port);
        net.connect(addr)
            .await
            .map_err(|source| IngressError::Connect { addr, source })
    }

    pub fn vmm(&self) -> &Arc<dyn Vmm> {
        &self.vmm
    }

    /// The workspace whose running VM holds `ip` on this node's bridge.
    pub fn workspace_at(&self, ip: std::net::Ipv4Addr) -> Option<WorkspaceId> {
        self.leases().owner(ip).cloned()
    }

    /// The bridge address of the workspace's running VM.
    pub fn lease_of(&self, ws: &WorkspaceId) -> Option<std::net::Ipv4Addr> {
        self.leases().held(ws)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the reconcile loop until [`Node::stop`].
    ///
    /// The desired state is re-read when the control plane signals a change, and every
    /// [`RESYNC`] in any case; in between, each tick only re-checks the VMs against the cached
    /// desired state (cheap), which is how boots, crashes and guest power-offs are noticed.
    pub async fn run(self: Arc<Self>, link: Arc<dyn ControlLink>) {
        let mut desired: Option<Vec<DesiredVm>> = None;
        let mut fetched_at = Instant::now();
        let mut changed = true;
        loop {
            if changed || desired.is_none() || fetched_at.elapsed() >= RESYNC {
                match link.desired(&self.config.node_id).await {
                    Ok(d) => {
                        desired = Some(d);
                        fetched_at = Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read desired state"),
                }
            }
            if let Some(d) = &desired {
                self.reconcile_all(&link, d).await;
            }
            changed = tokio::select! {
                _ = link.changed(&self.config.node_id) => true,
                // An operation finished: its report may have changed the desired state.
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(self.config.poll_interval) => false,
                _ = self.stop.notified() => return,
            };
        }
    }

    /// Ends the loop.
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }

    /// Stops every running VM (for `--stop-vms-on-exit`) and reports them stopped by a node restart.
    pub async fn stop_all_vms(&self, link: &Arc<dyn ControlLink>) {
        let desired = link.desired(&self.config.node_id).await.unwrap_or_default();
        for (ws, st) in self.vmm.list().await {
            if matches!(st, VmState::Running { .. }) {
                if let Err(e) = self.vmm.shutdown(&ws, self.config.stop_grace).await {
                    tracing::warn!(workspace = %ws, error = %e, "shutdown failed");
                }
                self.leases().release(&ws);
                if let Some(d) = desired.iter().find(|d| d.workspace_id == ws) {
                    let r = Report {
                        workspace_id: ws.clone(),
                        generation: d.generation,
                        observed: Observed::DiskReady {
                            exit: Some(ExitReason::NodeRestart),
                        },
                    };
                    let _ = link.report(&self.config.node_id, r).await;
                }
            }
        }
    }

    async fn reconcile_all(self: &Arc<Self>, link: &Arc<dyn ControlLink>, desired: &[DesiredVm]) {
        let wanted: HashSet<WorkspaceId> = desired.iter().map(|d| d.workspace_id.clone()).collect();
        for d in desired {
            if self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&d.workspace_id)
            {
                continue;
            }
            let st = self.vmm.inspect(&d.workspace_id).await;
            if let Some(obs) = self.settled(d, &st) {
                if let Some(obs) = obs {
                    self.report(link, d, obs).await;
                }
                continue;
            }
            // Something to do: run it beside the loop so one slow stop never blocks the others.
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(d.workspace_id.clone());
            let (node, link, d) = (Arc::clone(self), Arc::clone(link), d.clone());
            tokio::spawn(async move {
                let obs = node.act(&link, &d, st).await;
                if let Some(obs) = obs {
                    node.report(&link, &d, obs).await;
                }
                node.inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&d.workspace_id);
                node.wake.notify_one();
            });
        }
        // VMs of workspaces the control plane no longer knows are killed (their disks are kept).
        for (ws, st) in self.vmm.list().await {
            if !wanted.contains(&ws) && matches!(st, VmState::Running { .. }) {
                tracing::warn!(workspace = %ws, "killing VM of an unknown workspace");
                let _ = self.vmm.kill(&ws).await;
                self.leases().release(&ws);
            }
        }
    }

    /// `Some(observation to report, if any)` when the workspace already matches its desired
    /// state; `None` when the node has to act.
    fn settled(&self, d: &DesiredVm, st: &VmState) -> Option<Option<Observed>> {
        match (d.state, st) {
            (DesiredState::Absent, VmState::NoDisk) => Some(Some(Observed::Gone)),
            (DesiredState::Disk, VmState::Off { disk_mb, .. }) if *disk_mb >= d.disk_size_mb => {
                Some(Some(Observed::DiskReady { exit: None }))
            }
            (DesiredState::Idle, VmState::Off { .. } | VmState::NoDisk) => Some(None),
            (
                DesiredState::Running,
                VmState::Running {
                    booted: false, ip, ..
                },
            ) => Some(Some(Observed::Booting { ip: ip.to_string() })),
            (
                DesiredState::Running,
                VmState::Running {
                    booted: true, ip, ..
                },
            ) => {
                // Ready was reported for this generation: nothing to do until something changes.
                let ready = Report {
                    workspace_id: d.workspace_id.clone(),
                    generation: d.generation,
                    observed: Observed::Ready { ip: ip.to_string() },
                };
                let reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
                (reported.get(&d.workspace_id) == Some(&ready)).then_some(None)
            }
            (
                DesiredState::Running,
                VmState::Off {
                    last_generation: Some(g),
                    exit,
                    ..
                },
            ) if *g == d.generation => {
                // The VM of this generation went away by itself: report it, never relaunch.
                self.leases().release(&d.workspace_id);
                Some(Some(Observed::DiskReady {
                    exit: Some(exit.unwrap_or(ExitReason::NodeRestart)),
                }))
            }
            _ => None,
        }
    }

    /// Brings one workspace toward its desired state; returns what to report.
    async fn act(
        &self,
        link: &Arc<dyn ControlLink>,
        d: &DesiredVm,
        st: VmState,
    ) -> Option<Observed> {
        let ws = &d.workspace_id;
        match d.state {
            DesiredState::Absent => {
                if matches!(st, VmState::Running { .. }) {
                    let r = if d.force {
                        self.vmm.kill(ws).await
                    } else {
                        self.vmm.shutdown(ws, self.config.stop_grace).await
                    };
                    if let Err(e) = r {
                        tracing::warn!(workspace = %ws, error = %e, "stopping VM for delete failed");
                    }
                }
                self.leases().release(ws);
                match self.vmm.delete_disk(ws).await {
                    Ok(()) => Some(Observed::Gone),
                    Err(e) => {
                        tracing::warn!(workspace = %ws, error = %e, "delete failed; will retry");
                        None
                    }
                }
            }
            DesiredState::Idle => {
                if matches!(st, VmState::Running { .. }) {
                    let _ = self.vmm.kill(ws).await;
                }
                self.leases().release(ws);
                None
            }
            DesiredState::Disk => {
                if matches!(st, VmState::Running { .. }) {
                    if let Err(e) = self.vmm.shutdown(ws, self.config.stop_grace).await {
                        tracing::warn!(workspace = %ws, error = %e, "graceful stop failed; killing");
                        let _ = self.vmm.kill(ws).await;
                    }
                    self.leases().release(ws);
                }
                match self
                    .vmm
                    .ensure_disk(ws, &d.name, &d.image, d.disk_size_mb)
                    .await
                {
                    Ok(()) => Some(Observed::DiskReady { exit: None }),
                    Err(e) => Some(Observed::Failed {
                        code: e.failure_code(false),
                        message: e.to_string(),
                    }),
                }
            }
            DesiredState::Running => match st {
                VmState::Running {
                    booted: true, ip, ..
                } => {
                    // Running means the agent applied the current configuration; a real
                    // agent's ready report already confirms one, a bare boot needs a push.
                    if self.vmm.guest_ack(ws).await.is_none() {
                        let cfg = link.guest_config(ws).await.ok()?;
                        self.vmm
                            .apply_guest_config(ws, &cfg, Duration::from_secs(1))
                            .await?;
                    }
                    Some(Observed::Ready { ip: ip.to_string() })
                }
                VmState::Running { .. } => None,
                VmState::NoDisk | VmState::Off { .. } => {
                    if let Err(e) = self
                        .vmm
                        .ensure_disk(ws, &d.name, &d.image, d.disk_size_mb)
                        .await
                    {
                        return Some(Observed::Failed {
                            code: e.failure_code(true),
                            message: e.to_string(),
                        });
                    }
                    let Some(ip) = self.leases().take(ws) else {
                        return Some(Observed::Failed {
                            code: FailureCode::InsufficientCapacity,
                            message: "no free IP lease on the node".into(),
                        });
                    };
                    let spec = LaunchSpec {
                        workspace_id: ws.clone(),
                        name: d.name.clone(),
                        generation: d.generation,
                        image: d.image.clone(),
                        ip,
                        mac: Leases::mac(ip),
                        ram_mb: d.ram_mb,
                        vcpu_count: d.vcpu_count,
                    };
                    match self.vmm.launch(&spec).await {
                        Ok(()) => Some(Observed::Booting { ip: ip.to_string() }),
                        Err(e) => {
                            self.leases().release(ws);
                            Some(Observed::Failed {
                                code: e.failure_code(true),
                                message: e.to_string(),
                            })
                        }
                    }
                }
            },
        }
    }

    async fn report(&self, link: &Arc<dyn ControlLink>, d: &DesiredVm, observed: Observed) {
        let r = Report {
            workspace_id: d.workspace_id.clone(),
            generation: d.generation,
            observed,
        };
        {
            let reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if reported.get(&d.workspace_id) == Some(&r) {
                return;
            }
        }
        match link.report(&self.config.node_id, r.clone()).await {
            Ok(()) => {
                self.reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(d.workspace_id.clone(), r);
            }
            Err(e) => tracing::warn!(error = %e, "report failed; will retry"),
        }
    }
}

#[async_trait::async_trait]
impl NodeHandle for Node {
    async fn probe_port(
        &self,
        ws: &WorkspaceId,
        port: u16,
        host: &str,
    ) -> rigbox_types::node::PortProbe {
        crate::ingress::probe_http(self, ws, port, host).await
    }

    fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn region(&self) -> &str {
        &self.config.region
    }

    async fn capacity(&self) -> NodeCapacity {
        NodeCapacity {
            slots: self.config.max_running_vms.min(Leases::CAPACITY as i64),
            memory_mb: self.config.memory_mb,
        }
    }

    fn healthy(&self) -> bool {
        true
    }

    async fn push_config(
        &self,
        ws: &WorkspaceId,
        config: GuestConfig,
        wait: Duration,
    ) -> Option<GuestAck> {
        self.vmm.apply_guest_config(ws, &config, wait).await
    }

    async fn guest_ack(&self, ws: &WorkspaceId) -> Option<GuestAck> {
        self.vmm.guest_ack(ws).await
    }
}
