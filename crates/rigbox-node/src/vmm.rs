//! The VMM driver trait: everything the node needs from a hypervisor and its disks.

use rigbox_types::node::{ExitReason, FailureCode, GuestAck, GuestConfig};
use rigbox_types::WorkspaceId;
use std::net::Ipv4Addr;
use std::time::Duration;

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// Desired-state generation this launch serves (persisted by the driver).
    pub generation: i64,
    pub image: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ram_mb: i64,
    pub vcpu_count: i64,
}

/// What the driver knows of one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    /// No root disk.
    NoDisk,
    /// A disk of `disk_mb` and no VM. `last_generation` is the generation of the last launch and
    /// `exit` why that VM went away if it was not asked to.
    Off {
        disk_mb: i64,
        last_generation: Option<i64>,
        exit: Option<ExitReason>,
    },
    /// A live VM; `booted` once the guest finished booting.
    Running {
        generation: i64,
        ip: Ipv4Addr,
        booted: bool,
    },
}

/// Driver errors, each mapping to a workspace failure code.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("image {0} is not available on this node")]
    ImageUnavailable(String),
    #[error("could not create or grow the root disk: {0}")]
    Disk(String),
    #[error("could not launch the VM: {0}")]
    Launch(String),
    #[error("node out of resources: {0}")]
    Capacity(String),
    #[error("driver I/O error")]
    Io(#[from] std::io::Error),
}

impl VmmError {
    /// The failure code a workspace gets for this error.
    pub fn failure_code(&self, launching: bool) -> FailureCode {
        match self {
            Self::ImageUnavailable(_) => FailureCode::ImageUnavailable,
            Self::Disk(_) => FailureCode::ProvisionFailed,
            Self::Launch(_) => FailureCode::BootFailed,
            Self::Capacity(_) => FailureCode::InsufficientCapacity,
            Self::Io(_) if launching => FailureCode::BootFailed,
            Self::Io(_) => FailureCode::ProvisionFailed,
        }
    }
}

/// A hypervisor with its disks.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync + 'static {
    /// `sim` or `qemu`.
    fn kind(&self) -> &'static str;
    /// Creates the root disk from `image`, or grows it to `size_mb`; idempotent.
    async fn ensure_disk(
        &self,
        ws: &WorkspaceId,
        name: &str,
        image: &str,
        size_mb: i64,
    ) -> Result<(), VmmError>;
    /// Removes the disk and everything else of the workspace; idempotent.
    async fn delete_disk(&self, ws: &WorkspaceId) -> Result<(), VmmError>;
    /// Starts a VM; returns once it is launched (not booted).
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), VmmError>;
    /// Asks the guest to power off and waits up to `grace`, then kills it. Returns when it is gone.
    async fn shutdown(&self, ws: &WorkspaceId, grace: Duration) -> Result<(), VmmError>;
    /// Kills the VM at once.
    async fn kill(&self, ws: &WorkspaceId) -> Result<(), VmmError>;
    /// Current state of one workspace.
    async fn inspect(&self, ws: &WorkspaceId) -> VmState;
    /// Every workspace the driver has state for (re-adoption after a restart).
    async fn list(&self) -> Vec<(WorkspaceId, VmState)>;
    /// Hands a configuration to the guest agent and waits up to `wait` for it to confirm.
    async fn apply_guest_config(
        &self,
        ws: &WorkspaceId,
        config: &GuestConfig,
        wait: Duration,
    ) -> Option<GuestAck>;
    /// What the guest agent last confirmed since the VM booted.
    async fn guest_ack(&self, ws: &WorkspaceId) -> Option<GuestAck>;
}
