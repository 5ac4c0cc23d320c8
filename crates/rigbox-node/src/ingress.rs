//! Node ingress: the single path by which other roles (the edge, the SSH gateway) open a TCP
//! stream to a port of a running workspace on this node. It resolves the workspace to its
//! current lease and connects from inside the node namespace, so nothing else ever needs a
//! route to the bridge network.

use crate::net::Net;
use crate::node::Node;
use rigbox_types::WorkspaceId;
use std::net::SocketAddrV4;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The workspace has no running VM on this node.
    #[error("workspace {0} is not running on this node")]
    NotRunning(WorkspaceId),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
}

/// Opens streams to workspace ports.
#[derive(Debug, Clone)]
pub struct Ingress {
    node: Arc<Node>,
    net: Arc<Net>,
}

impl Ingress {
    pub fn new(node: Arc<Node>, net: Arc<Net>) -> Self {
        Self { node, net }
    }

    /// A TCP stream to `port` of the workspace's VM.
    pub async fn connect(&self, ws: &WorkspaceId, port: u16) -> Result<TcpStream, IngressError> {
        let ip = self
            .node
            .lease_of(ws)
            .ok_or_else(|| IngressError::NotRunning(ws.clone()))?;
        let addr = SocketAddrV4::new(ip, port);
        self.net
            .connect(addr)
            .await
            .map_err(|source| IngressError::Connect { addr, source })
    }
}
