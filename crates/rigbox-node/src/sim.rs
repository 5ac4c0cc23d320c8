//! The simulated VMM: no VMs, just the timing and failures of real ones, with its state kept in
//! a file so a simulated VM outlives a restart of `rigboxd` exactly like a QEMU process does.
//! Used by `rigboxd up --vmm sim` and by the fast tests.

use crate::vmm::{LaunchSpec, VmState, Vmm, VmmError};
use rigbox_types::node::{ExitReason, GuestAck, GuestConfig};
use rigbox_types::WorkspaceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Timing and injected failures of the simulated VMM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Milliseconds to create a root disk.
    pub provision_ms: u64,
    /// Milliseconds from launch to a booted guest.
    pub boot_ms: u64,
    /// Milliseconds a graceful shutdown takes.
    pub stop_ms: u64,
    /// Workspace names whose disk creation fails (`provision_failed`).
    pub fail_provision: Vec<String>,
    /// Workspace names whose image is missing (`image_unavailable`).
    pub fail_image: Vec<String>,
    /// Workspace names whose VM fails to launch (`boot_failed`).
    pub fail_launch: Vec<String>,
    /// Workspace names whose guest never boots (ends in `boot_timeout`).
    pub hang_boot: Vec<String>,
    /// Where every port of a simulated VM is served from (a server on this machine), so apps
    /// of simulated workspaces answer: development, edge tests and `bench/edge`. None: they
    /// refuse connections like a VM with nothing listening.
    pub app_upstream: Option<std::net::SocketAddr>,
    /// Serve the bridge (`/rig/v1` and the AI proxy) on `127.0.0.1:<port>` (0 = any free
    /// port): a caller connecting from `127.16.0.N` is the VM holding `172.16.0.N`. None: no
    /// bridge (simulated guests have no network).
    pub bridge_port: Option<u16>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            provision_ms: 300,
            boot_ms: 1500,
            stop_ms: 500,
            fail_provision: Vec::new(),
            fail_image: Vec::new(),
            fail_launch: Vec::new(),
            app_upstream: None,
            bridge_port: None,
            hang_boot: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimVm {
    generation: i64,
    ip: Ipv4Addr,
    name: String,
    launched_at_ms: u64,
    /// Guest-initiated power-off deadline (simulates `poweroff` inside the VM).
    #[serde(default)]
    shutdown_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SimDisk {
    disk_mb: Option<i64>,
    vm: Option<SimVm>,
    last_generation: Option<i64>,
    exit: Option<ExitReason>,
    #[serde(skip)]
    ack: Option<GuestAck>,
}

/// The simulated driver.
#[derive(Debug)]
pub struct SimVmm {
    config: SimConfig,
    state_dir: Option<PathBuf>,
    state: Mutex<BTreeMap<WorkspaceId, SimDisk>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SimVmm {
    /// A simulated VMM keeping each workspace's state in `dir/<workspace>.json` (or only in
    /// memory), so simulated VMs outlive a restart like QEMU processes do.
    pub fn new(config: SimConfig, dir: Option<PathBuf>) -> std::io::Result<Self> {
        let mut state = BTreeMap::new();
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)?;
            for entry in std::fs::read_dir(d)? {
                let path = entry?.path();
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(WorkspaceId::parse);
                if let (Some(id), Some("json")) = (id, path.extension().and_then(|e| e.to_str())) {
                    match serde_json::from_slice::<SimDisk>(&std::fs::read(&path)?) {
                        Ok(disk) => {
                            state.insert(id, disk);
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable simulated VM state")
                        }
                    }
                }
            }
        }
        Ok(Self {
            config,
            state_dir: dir,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WorkspaceId, SimDisk>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state without changing it.
    fn read<R>(&self, f: impl FnOnce(&BTreeMap<WorkspaceId, SimDisk>) -> R) -> R {
        f(&self.lock())
    }

    /// Changes one workspace's state and persists that workspace only.
    fn update<R>(
        &self,
        ws: &WorkspaceId,
        f: impl FnOnce(&mut BTreeMap<WorkspaceId, SimDisk>) -> R,
    ) -> R {
        let mut g = self.lock();
        let r = f(&mut g);
        self.persist(ws, g.get(ws));
        r
    }

    fn persist(&self, ws: &WorkspaceId, disk: Option<&SimDisk>) {
        let Some(dir) = &self.state_dir else { return };
        let file = dir.join(format!("{ws}.json"));
        let ok = match disk {
            // Write-then-rename so a crash never leaves a torn file.
            Some(d) => {
                let tmp = dir.join(format!("{ws}.json.tmp"));
                serde_json::to_vec(d)
                    .ok()
                    .and_then(|b| std::fs::write(&tmp, b).ok())
                    .and_then(|_| std::fs::rename(&tmp, &file).ok())
                    .is_some()
            }
            None => std::fs::remove_file(&file).is_ok() || !file.exists(),
        };
        if !ok {
            tracing::warn!(file = %file.display(), "could not persist simulated VM state");
        }
    }

    /// Simulates the VM process dying (`kill -9` of QEMU).
    pub fn crash(&self, ws: &WorkspaceId) {
        self.update(ws, |m| {
            if let Some(d) = m.get_mut(ws) {
                if d.vm.take().is_some() {
                    d.exit = Some(ExitReason::Crashed);
                }
            }
        });
    }

    /// Simulates `poweroff` inside the guest.
    pub fn guest_poweroff(&self, ws: &WorkspaceId) {
        self.update(ws, |m| {
            if let Some(d) = m.get_mut(ws) {
                if let Some(vm) = d.vm.as_mut() {
                    vm.shutdown_at_ms = Some(now_ms());
                }
            }
        });
    }

    fn listed(list: &[String], name: &str) -> bool {
        list.iter().any(|n| n == name)
    }

    /// The driver view of one workspace, and whether computing it changed the state (a guest
    /// power-off that came due).
    fn state_of(&self, d: &mut SimDisk) -> (VmState, bool) {
        let mut changed = false;
        if let Some(vm) = &d.vm {
            if vm.shutdown_at_ms.is_some_and(|t| t <= now_ms()) {
                d.vm = None;
                d.exit = Some(ExitReason::GuestShutdown);
                changed = true;
            }
        }
        let st = match (&d.vm, d.disk_mb) {
            (Some(vm), _) => VmState::Running {
                generation: vm.generation,
                ip: vm.ip,
                booted: !Self::listed(&self.config.hang_boot, &vm.name)
                    && now_ms() >= vm.launched_at_ms + self.config.boot_ms,
            },
            (None, Some(disk_mb)) => VmState::Off {
                disk_mb,
                last_generation: d.last_generation,
                exit: d.exit,
            },
            (None, None) => VmState::NoDisk,
        };
        (st, changed)
    }
}

#[async_trait::async_trait]
impl Vmm for SimVmm {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn ensure_disk(
        &self,
        ws: &WorkspaceId,
        name: &str,
        image: &str,
        size_mb: i64,
    ) -> Result<(), VmmError> {
        let exists = self.read(|m| m.get(ws).and_then(|d| d.disk_mb).is_some());
        if !exists {
            tokio::time::sleep(Duration::from_millis(self.config.provision_ms)).await;
        }
        if Self::listed(&self.config.fail_image, name) {
            return Err(VmmError::ImageUnavailable(image.to_owned()));
        }
        if Self::listed(&self.config.fail_provision, name) {
            return Err(VmmError::Disk("simulated provisioning failure".into()));
        }
        self.update(ws, |m| {
            let d = m.entry(ws.clone()).or_default();
            d.disk_mb = Some(d.disk_mb.unwrap_or(0).max(size_mb));
        });
        Ok(())
    }

    async fn delete_disk(&self, ws: &WorkspaceId) -> Result<(), VmmError> {
        self.update(ws, |m| m.remove(ws));
        Ok(())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), VmmError> {
        if Self::listed(&self.config.fail_launch, &spec.name) {
            self.update(&spec.workspace_id, |m| {
                if let Some(d) = m.get_mut(&spec.workspace_id) {
                    d.last_generation = Some(spec.generation);
                }
            });
            return Err(VmmError::Launch("simulated launch failure".into()));
        }
        self.update(&spec.workspace_id, |m| {
            let d = m.entry(spec.workspace_id.clone()).or_default();
            if d.disk_mb.is_none() {
                return Err(VmmError::Launch("no root disk".into()));
            }
            d.vm = Some(SimVm {
                generation: spec.generation,
                ip: spec.ip,
                name: spec.name.clone(),
                launched_at_ms: now_ms(),
                shutdown_at_ms: None,
            });
            d.last_generation = Some(spec.generation);
            d.exit = None;
            d.ack = None;
            Ok(())
        })
    }

    async fn shutdown(&self, ws: &WorkspaceId, grace: Duration) -> Result<(), VmmError> {
        let running = self.read(|m| m.get(ws).is_some_and(|d| d.vm.is_some()));
        if running {
            tokio::time::sleep(Duration::from_millis(self.config.stop_ms).min(grace)).await;
        }
        self.kill(ws).await
    }

    async fn kill(&self, ws: &WorkspaceId) -> Result<(), VmmError> {
        self.update(ws, |m| {
            if let Some(d) = m.get_mut(ws) {
                d.vm = None;
                d.exit = None;
                d.ack = None;
            }
        });
        Ok(())
    }

    async fn inspect(&self, ws: &WorkspaceId) -> VmState {
        let mut g = self.lock();
        let Some(d) = g.get_mut(ws) else {
            return VmState::NoDisk;
        };
        let (st, changed) = self.state_of(d);
        if changed {
            self.persist(ws, Some(d));
        }
        st
    }

    async fn list(&self) -> Vec<(WorkspaceId, VmState)> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(g.len());
        for (k, d) in g.iter_mut() {
            let (st, changed) = self.state_of(d);
            if changed {
                self.persist(k, Some(d));
            }
            out.push((k.clone(), st));
        }
        out
    }

    async fn apply_guest_config(
        &self,
        ws: &WorkspaceId,
        config: &GuestConfig,
        _wait: Duration,
    ) -> Option<GuestAck> {
        // The simulated agent applies instantly once the guest has booted.
        let booted = matches!(
            self.inspect(ws).await,
            VmState::Running { booted: true, .. }
        );
        if !booted {
            return None;
        }
        let ack = GuestAck {
            revision: config.revision,
            ssh_keys: config
                .authorized_keys
                .iter()
                .filter_map(|line| rigbox_types::agent::ReportedKey::of_line(line))
                .collect(),
            at: rigbox_types::time_fmt::now_micros(),
        };
        self.update(ws, |m| m.get_mut(ws).map(|d| d.ack = Some(ack.clone())));
        Some(ack)
    }

    async fn guest_ack(&self, ws: &WorkspaceId) -> Option<GuestAck> {
        self.read(|m| m.get(ws).and_then(|d| d.ack.clone()))
    }
}
