//! Node ingress: the single path by which other roles (the edge, the SSH gateway) open a TCP
//! stream to a port of a running workspace on this node. It resolves the workspace to its
//! current lease and connects from inside the node namespace, so nothing else ever needs a
//! route to the bridge network.

use crate::net::Net;
use crate::node::Node;
use rigbox_types::node::PortProbe;
use rigbox_types::WorkspaceId;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
}

impl Ingress {
    /// Ingress through `node`, which is given its network here.
    pub fn new(node: Arc<Node>, net: Arc<Net>) -> Self {
        node.attach_net(net);
        Self { node }
    }

    /// A TCP stream to `port` of the workspace's VM.
    pub async fn connect(&self, ws: &WorkspaceId, port: u16) -> Result<TcpStream, IngressError> {
        self.node.connect(ws, port).await
    }
}

/// The health probe of apps-and-routing.md §8: TCP connect within 2 s, then `GET /` with the
/// app's `Host` answered (headers) within 5 s.
pub async fn probe_http(node: &Node, ws: &WorkspaceId, port: u16, host: &str) -> PortProbe {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let mut probe = PortProbe::default();
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), node.connect(ws, port)).await
    else {
        return probe;
    };
    probe.port_open = true;
    let started = Instant::now();
    let request = async {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "rigbox-health/1")
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        send.send_request(req).await.ok()
    };
    if let Ok(Some(resp)) = tokio::time::timeout(Duration::from_secs(5), request).await {
        probe.http_status = Some(resp.status().as_u16());
        probe.latency_ms = Some(started.elapsed().as_millis() as u64);
    }
    probe
}
