//! Rigbox compute node: runs the workspaces placed on it.
//!
//! [`node::Node`] reads the desired state of its workspaces from the control plane through
//! [`rigbox_types::node::ControlLink`], makes the VMs and disks match through a [`vmm::Vmm`]
//! driver, hands out bridge IP leases ([`leases`]) and reports what it observes. The loop is
//! level-triggered: after a restart of the node or of the control plane it simply converges.
//! Drivers: [`sim::SimVmm`] (no VMs, for development and fast tests); the QEMU driver plugs into
//! the same trait.

pub mod bridge;
pub mod guest;
pub mod image;
pub mod ingress;
pub mod leases;
pub mod net;
pub mod node;
pub mod qemu;
pub mod sim;
pub mod vmm;

pub use node::{Node, NodeConfig};
pub use sim::{SimConfig, SimVmm};
pub use vmm::{VmState, Vmm, VmmError};
