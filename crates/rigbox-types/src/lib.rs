//! Shared vocabulary of Rigbox: typed IDs, resource names, the wire types of the control-plane
//! API (`/api/v1`), the error envelope and the contract between the control plane and a compute
//! node. This crate does no I/O and depends on no other Rigbox crate, so every role (and the
//! `rig` CLI) can speak the same types.

pub mod agent;
pub mod api;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod names;
pub mod node;
pub mod time_fmt;
pub mod wallet;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use ids::{AppId, UserId, WorkspaceId};
