//! Rigbox control plane: owns all platform state (accounts, sessions, API keys, SSH keys, plans
//! and limits, workspaces and their desired state) and serves the REST API under `/api/v1` and
//! the console at `/`.
//!
//! Layers: [`http`] holds thin handlers that parse requests and map errors; [`app`] holds the
//! logic per resource; [`store`] holds all SQL. Compute nodes are reached through the
//! [`rigbox_types::node::NodeHandle`] trait, and they read desired state and report back through
//! [`app::lifecycle::LocalLink`] (in-process in one-machine mode).

pub mod app;
pub mod config;
pub mod http;
pub mod sealing;
pub mod store;

pub use app::App;
pub use config::ControlConfig;
pub use store::Store;
