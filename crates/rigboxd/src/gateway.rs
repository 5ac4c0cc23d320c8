//! The SSH gateway's view of this one-machine platform: routes come from the control plane,
//! streams to VMs from the node ingress.

use rigbox_control::App;
use rigbox_node::ingress::Ingress;
use rigbox_types::gateway::SshRoute;
use std::sync::Arc;
use tokio::net::TcpStream;

pub struct PlatformDirectory {
    pub app: Arc<App>,
    /// None with the simulated VMM, whose workspaces have no sshd to reach.
    pub ingress: Option<Ingress>,
}

#[async_trait::async_trait]
impl rigbox_ssh::Directory for PlatformDirectory {
    async fn route(&self, user: &str, fingerprint: &str) -> Result<Option<SshRoute>, String> {
        self.app
            .ssh_route(user, fingerprint)
            .await
            .map_err(|e| e.message)
    }

    async fn connect(&self, route: &SshRoute) -> std::io::Result<TcpStream> {
        let Some(ingress) = &self.ingress else {
            return Err(std::io::Error::other(
                "simulated workspaces have no SSH server",
            ));
        };
        ingress
            .connect(&route.workspace_id, 22)
            .await
            .map_err(std::io::Error::other)
    }
}
