//! The edge's view of this one-machine platform: routes and API keys from the control plane,
//! streams to VMs from node ingress, and the control plane's router for the console and API.

use http_body_util::BodyExt;
use rigbox_control::App;
use rigbox_edge::{AppRoute, EdgeUser, NewSession, PlatformService};
use rigbox_node::ingress::Ingress;
use rigbox_types::WorkspaceId;
use std::sync::Arc;
use tokio::net::TcpStream;

pub struct PlatformEdge {
    pub app: Arc<App>,
    /// None with the simulated VMM.
    pub ingress: Option<Ingress>,
    /// With the simulated VMM: the local server every app port is served from, if any.
    pub sim_upstream: Option<std::net::SocketAddr>,
}

#[async_trait::async_trait]
impl rigbox_edge::Directory for PlatformEdge {
    fn route_generation(&self) -> Option<u64> {
        Some(self.app.route_generation())
    }

    async fn app(&self, name: &str) -> Result<Option<AppRoute>, String> {
        let Some(e) = self.app.edge_route(name).await.map_err(|e| e.message)? else {
            return Ok(None);
        };
        let Some(workspace_id) = WorkspaceId::parse(&e.row.workspace_id) else {
            return Ok(None);
        };
        Ok(Some(AppRoute {
            app_id: e.row.id,
            name: e.row.name,
            workspace_id,
            workspace_running: e.workspace_running,
            workspace_generation: e.workspace_generation,
            status: e.status,
            port: u16::try_from(e.row.port).unwrap_or(0),
            h2c: e.protocol == rigbox_types::api::AppProtocol::H2c,
            visibility: e.visibility,
            allowed_emails: e.allowed_emails,
            owner_id: e.row.user_id,
        }))
    }

    async fn key_user(&self, key: &str) -> Result<Option<EdgeUser>, String> {
        Ok(self
            .app
            .edge_key_user(key)
            .await
            .map_err(|e| e.message)?
            .map(edge_user))
    }

    async fn session_user(&self, token: &str, host: &str) -> Result<Option<EdgeUser>, String> {
        Ok(self
            .app
            .app_session_user(token, host)
            .await
            .map_err(|e| e.message)?
            .map(edge_user))
    }

    async fn redeem(&self, code: &str, host: &str) -> Result<Option<NewSession>, String> {
        Ok(self
            .app
            .redeem_app_code(code, host)
            .await
            .map_err(|e| e.message)?
            .map(|s| NewSession {
                token: s.token,
                path: s.path,
                max_age_secs: s.max_age_secs,
            }))
    }

    async fn end_session(&self, token: &str) -> Result<(), String> {
        self.app.end_app_session(token).await.map_err(|e| e.message)
    }

    async fn connect(&self, ws: &WorkspaceId, port: u16) -> std::io::Result<TcpStream> {
        match (&self.ingress, self.sim_upstream) {
            (Some(ingress), _) => ingress
                .connect(ws, port)
                .await
                .map_err(std::io::Error::other),
            (None, Some(addr)) => TcpStream::connect(addr).await,
            (None, None) => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }
}

fn edge_user(u: rigbox_control::store::UserRow) -> EdgeUser {
    EdgeUser {
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
    }
}

/// The control plane's router as the edge's platform service.
pub fn platform_service(router: axum::Router) -> PlatformService {
    Arc::new(move |mut req, client| {
        let router = router.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(client));
            let resp = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            resp.map(|b| b.map_err(Into::into).boxed_unsync())
        })
    })
}
