//! The contract between the control plane and a compute node.
//!
//! The control plane owns the *desired* state of every workspace and bumps a `generation`
//! whenever it changes. A node repeatedly reads the desired state of its workspaces, makes its
//! VMs and disks match (level-triggered, so a restart of either side simply converges) and
//! reports what it observes, tagged with the generation it acted on. In one-machine mode the
//! link is an in-process call; splitting roles swaps only the transport behind [`ControlLink`].

use crate::ids::WorkspaceId;
use serde::{Deserialize, Serialize};

/// What the control plane wants a node to hold for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// A root disk and no VM (`provisioning`, `provisioned`, `stopping`, `stopped`).
    Disk,
    /// A running VM on the root disk (`starting`, `running`).
    Running,
    /// No VM; leave the disk as it is (`failed`: no automatic retry, disk kept for a retry).
    Idle,
    /// Nothing: VM killed, disk removed (`deleting`).
    Absent,
}

/// One workspace as the node should hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVm {
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// Bumped by the control plane on every change of `state` or resources.
    pub generation: i64,
    pub state: DesiredState,
    pub image: String,
    pub ram_mb: i64,
    pub vcpu_count: i64,
    pub disk_size_mb: i64,
    /// Kill a live VM at once instead of a graceful shutdown (forced delete).
    pub force: bool,
}

/// Why a VM stopped without the control plane asking for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    GuestShutdown,
    Crashed,
    NodeRestart,
}

impl ExitReason {
    /// The `stop_reason` the API shows for this exit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuestShutdown => "guest_shutdown",
            Self::Crashed => "crashed",
            Self::NodeRestart => "node_restart",
        }
    }
}

/// What the node observed of one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Observed {
    /// The disk exists and no VM runs. `exit` is set when a VM of this generation went away
    /// without being asked to.
    DiskReady { exit: Option<ExitReason> },
    /// The VM was launched and holds `ip`; the guest has not reported ready yet.
    Booting { ip: String },
    /// The guest reported ready.
    Ready { ip: String },
    /// Everything of the workspace is gone from the node.
    Gone,
    /// The step the desired state asked for failed.
    Failed { code: FailureCode, message: String },
}

/// Failure codes a node can report (workspaces.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    ProvisionFailed,
    ImageUnavailable,
    InsufficientCapacity,
    BootFailed,
    BootTimeout,
    NodeUnavailable,
    Cancelled,
    Internal,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvisionFailed => "provision_failed",
            Self::ImageUnavailable => "image_unavailable",
            Self::InsufficientCapacity => "insufficient_capacity",
            Self::BootFailed => "boot_failed",
            Self::BootTimeout => "boot_timeout",
            Self::NodeUnavailable => "node_unavailable",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }

    /// Whether `retry` may be used on a workspace that failed with this code.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::ImageUnavailable)
    }
}

/// A report from a node about one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub workspace_id: WorkspaceId,
    /// The desired-state generation the node acted on.
    pub generation: i64,
    pub observed: Observed,
}

/// A node's resources, for placement and `GET /capacity`. The control plane subtracts what its
/// live workspaces on the node use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// Running-VM slots: `min(253, max_running_vms)`.
    pub slots: i64,
    /// Memory the node gives to VMs in all, in MiB.
    pub memory_mb: i64,
}

/// One account key as written into a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestKey {
    /// The OpenSSH public key line.
    pub line: String,
    pub key_type: String,
    pub fingerprint: String,
    pub comment: String,
}

/// The configuration the guest agent applies: the body of `/rig/v1/agent/config`.
pub type GuestConfig = crate::agent::AgentConfig;

/// What the guest agent last confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAck {
    pub revision: i64,
    /// The keys the agent found in the managed block of `authorized_keys`.
    pub ssh_keys: Vec<crate::agent::ReportedKey>,
    /// Unix microseconds.
    pub at: i64,
}

/// Errors crossing the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
}

/// The node's view of the control plane.
#[async_trait::async_trait]
pub trait ControlLink: Send + Sync + 'static {
    /// Desired state of every workspace placed on `node_id`.
    async fn desired(&self, node_id: &str) -> Result<Vec<DesiredVm>, LinkError>;
    /// Records an observation; returns once the control plane has applied it.
    async fn report(&self, node_id: &str, report: Report) -> Result<(), LinkError>;
    /// Resolves when the desired state of `node_id` may have changed.
    async fn changed(&self, node_id: &str);
    /// The current guest configuration of a workspace (what its agent applies at boot).
    async fn guest_config(&self, workspace: &WorkspaceId) -> Result<GuestConfig, LinkError>;
}

/// The control plane's view of a node.
#[async_trait::async_trait]
pub trait NodeHandle: Send + Sync + 'static {
    fn node_id(&self) -> &str;
    fn region(&self) -> &str;
    /// Capacity right now.
    async fn capacity(&self) -> NodeCapacity;
    /// Whether the node is reachable and schedulable.
    fn healthy(&self) -> bool;
    /// Hands a new guest configuration to the workspace's agent and waits up to `wait` for its
    /// confirmation; `None` when the VM is not running or did not confirm in time.
    async fn push_config(
        &self,
        workspace: &WorkspaceId,
        config: GuestConfig,
        wait: std::time::Duration,
    ) -> Option<GuestAck>;
    /// What the workspace's agent last confirmed, if anything.
    async fn guest_ack(&self, workspace: &WorkspaceId) -> Option<GuestAck>;
    /// Probes `port` of the workspace's VM from the node (apps-and-routing.md §8): a TCP
    /// connect within 2 s, then `GET /` with `Host: host` answered within 5 s. Nodes that
    /// cannot reach VMs (the simulated driver) report the port closed.
    async fn probe_port(&self, workspace: &WorkspaceId, port: u16, host: &str) -> PortProbe {
        let _ = (workspace, port, host);
        PortProbe::default()
    }
}

/// What [`NodeHandle::probe_port`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortProbe {
    pub port_open: bool,
    /// Status of `GET /`, when it answered in time.
    pub http_status: Option<u16>,
    /// Milliseconds to the response headers of that request.
    pub latency_ms: Option<u64>,
}
