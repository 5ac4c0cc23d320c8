//! The gateway's side towards the VM: one SSH client connection per user connection, and one
//! pump per channel carrying what the VM sends back to the user.

use crate::{ConnLog, Shared};
use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use rigbox_types::gateway::SshRoute;
use russh::client;
use russh::keys::PrivateKeyWithHashAlg;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The SSH connection to a VM, shared by every channel of one user connection.
pub(crate) type Upstream = Arc<client::Handle<UpHandler>>;

/// The upstream connection being made (started as soon as the user is authenticated, so its
/// handshake overlaps the user's channel setup).
pub(crate) type PendingUpstream = SharedFuture<BoxFuture<'static, Result<Upstream, Arc<str>>>>;

/// The client side of the upstream connection. When it ends (the workspace stopped, the VM
/// went away), the user's connection is ended too.
pub(crate) struct UpHandler {
    down: russh::server::Handle,
}

impl client::Handler for UpHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The VM is reached only through the node namespace, where the anti-spoofing rules tie
        // its address to its tap: the address is the identity, as for the bridge.
        Ok(true)
    }
}

impl Drop for UpHandler {
    fn drop(&mut self) {
        let down = self.down.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = down
                    .disconnect(
                        Disconnect::ByApplication,
                        "the workspace closed the connection".into(),
                        String::new(),
                    )
                    .await;
            });
        }
    }
}

/// Starts connecting to the VM of `route` and signing in as the gateway.
pub(crate) fn connect(
    shared: Arc<Shared>,
    route: SshRoute,
    down: russh::server::Handle,
) -> PendingUpstream {
    async move {
        let name = route.workspace_name.clone();
        let unreachable = |e: String| -> Arc<str> {
            tracing::warn!(workspace = %route.workspace_id, error = %e, "ssh: cannot reach the VM");
            format!("workspace {name} cannot be reached right now; try again in a moment").into()
        };
        let stream = shared
            .dir
            .connect(&route)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut handle = client::connect_stream(shared.client.clone(), stream, UpHandler { down })
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let key = PrivateKeyWithHashAlg::new(shared.client_key.clone(), None);
        let auth = handle
            .authenticate_publickey(shared.upstream_user.clone(), key)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !auth.success() {
            return Err(unreachable("the VM refused the gateway key".into()));
        }
        Ok(Arc::new(handle))
    }
    .boxed()
    .shared()
}

/// Carries what the VM sends on one channel to the user's channel until either side closes.
/// Replies to channel requests go to `replies`, where the request handler waits for them.
pub(crate) async fn pump(
    mut up: ChannelReadHalf,
    down: ChannelWriteHalf<russh::server::Msg>,
    down_session: russh::server::Handle,
    id: ChannelId,
    replies: mpsc::Sender<bool>,
    log: Arc<ConnLog>,
) {
    while let Some(msg) = up.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                log.add_out(data.len());
                down.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                log.add_out(data.len());
                down.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => down.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => down.exit_status(exit_status).await,
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => down_session
                .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                .await
                .map_err(|_| russh::Error::SendError),
            ChannelMsg::Success => {
                let _ = replies.try_send(true);
                Ok(())
            }
            ChannelMsg::Failure => {
                let _ = replies.try_send(false);
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            // The user's side is gone.
            break;
        }
    }
    let _ = down.close().await;
}
