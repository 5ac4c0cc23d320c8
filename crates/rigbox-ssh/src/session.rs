//! The gateway's side towards the user: authentication, then every channel and request relayed
//! to the VM.
//!
//! What the user sends is forwarded from the handler callbacks (so the upstream window is the
//! back-pressure); what the VM sends is carried by a [`relay::pump`] per channel. A channel
//! request the user wants answered is forwarded with `want_reply` and answered with the VM's
//! reply, in order.

use crate::relay::{self, PendingUpstream, Upstream};
use crate::{ConnLog, Shared};
use bytes::Bytes;
use rigbox_types::api::WorkspaceStatus;
use rigbox_types::gateway::SshRoute;
use russh::server::{
    self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, Pty, Sig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What a user who asked for `-R` reads on stderr (TCP and Unix-socket forwarding alike).
const NO_REMOTE_FORWARDING: &str =
    "remote port forwarding (-R) is not available through the Rigbox gateway";

/// How long a channel request waits for the VM's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves one user connection to its end and logs it.
pub(crate) async fn run(shared: Arc<Shared>, socket: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let log = Arc::new(ConnLog::default());
    let conn = Conn {
        shared: shared.clone(),
        peer,
        log: log.clone(),
        candidate: None,
        route: None,
        upstream: None,
        chans: HashMap::new(),
        notices: Vec::new(),
    };
    let error = match server::run_stream(shared.server.clone(), socket, conn).await {
        Ok(session) => session.await.err(),
        Err(e) => Some(e),
    };
    // A client that leaves is not an error worth a line of its own.
    let error = error.map(|e| e.to_string());
    log.emit(peer, started, error.as_deref());
}

/// One channel of a user connection.
enum Chan {
    /// Relayed to the VM.
    Relay {
        up: ChannelWriteHalf<russh::client::Msg>,
        replies: mpsc::Receiver<bool>,
    },
    /// The workspace cannot be reached: any program request gets `message` and exit status 1.
    Refused { message: String },
}

pub(crate) struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    log: Arc<ConnLog>,
    /// The last (user, fingerprint) looked up, and its answer.
    candidate: Option<(String, String, Option<SshRoute>)>,
    route: Option<SshRoute>,
    upstream: Option<PendingUpstream>,
    chans: HashMap<ChannelId, Chan>,
    /// Refusals to tell the user on the stderr of their next shell or command.
    notices: Vec<&'static str>,
}

/// The ways a user channel maps onto a VM channel.
enum Open {
    Session,
    DirectTcpip {
        host: String,
        port: u32,
        origin: String,
        origin_port: u32,
    },
}

impl Conn {
    /// The route for `user` with `key`, asking the control plane once per pair.
    async fn lookup(&mut self, user: &str, key: &russh::keys::PublicKey) -> Option<SshRoute> {
        let fp = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        if let Some((u, f, route)) = &self.candidate {
            if u == user && *f == fp {
                return route.clone();
            }
        }
        let ip = self.peer.ip();
        let route = if self.shared.limiter.blocked(ip) {
            None
        } else {
            match self.shared.dir.route(user, &fp).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "ssh: cannot look up the route");
                    None
                }
            }
        };
        if route.is_none() && self.shared.limiter.fail(ip) {
            tracing::warn!(peer = %self.peer, "ssh: too many failed authentications; refusing this address for a while");
        }
        self.candidate = Some((user.to_owned(), fp, route.clone()));
        route
    }

    /// Opens the VM side of a new user channel.
    async fn open_up(&mut self, open: Open) -> Result<russh::Channel<russh::client::Msg>, String> {
        let Some(route) = &self.route else {
            return Err("not authenticated".into());
        };
        if route.status != WorkspaceStatus::Running {
            return Err(format!(
                "workspace {name} is {status}; start it with: rig workspace start {name}",
                name = route.workspace_name,
                status = route.status.as_str(),
            ));
        }
        let Some(pending) = self.upstream.clone() else {
            return Err("not authenticated".into());
        };
        let up: Upstream = pending.await.map_err(|e| e.to_string())?;
        let opened = match open {
            Open::Session => up.channel_open_session().await,
            Open::DirectTcpip {
                host,
                port,
                origin,
                origin_port,
            } => {
                up.channel_open_direct_tcpip(host, port, origin, origin_port)
                    .await
            }
        };
        opened.map_err(|e| match e {
            russh::Error::ChannelOpenFailure(f) => format!("the workspace refused: {f:?}"),
            e => e.to_string(),
        })
    }

    /// Wires an opened VM channel to the user's channel.
    fn relay(
        &mut self,
        down: Channel<Msg>,
        up: russh::Channel<russh::client::Msg>,
        session: &Session,
    ) {
        let id = down.id();
        let (up_read, up_write) = up.split();
        let (_down_read, down_write) = down.split();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(relay::pump(
            up_read,
            down_write,
            session.handle(),
            id,
            tx,
            self.log.clone(),
        ));
        self.chans.insert(
            id,
            Chan::Relay {
                up: up_write,
                replies: rx,
            },
        );
    }

    /// Forwards a request the user wants answered and answers with the VM's reply.
    async fn forward<F>(
        &mut self,
        id: ChannelId,
        session: &mut Session,
        send: F,
    ) -> Result<(), russh::Error>
    where
        F: for<'a> FnOnce(
            &'a ChannelWriteHalf<russh::client::Msg>,
        ) -> futures::future::BoxFuture<'a, Result<(), russh::Error>>,
    {
        let ok = match self.chans.get_mut(&id) {
            Some(Chan::Relay { up, replies }) => {
                while replies.try_recv().is_ok() {}
                send(up).await.is_ok()
                    && matches!(
                        tokio::time::timeout(REPLY_TIMEOUT, replies.recv()).await,
                        Ok(Some(true))
                    )
            }
            Some(Chan::Refused { .. }) => true,
            None => false,
        };
        reply(session, id, ok)
    }

    /// Starts a program (shell, command or subsystem) on a channel.
    async fn start<F>(
        &mut self,
        id: ChannelId,
        session: &mut Session,
        program: bool,
        send: F,
    ) -> Result<(), russh::Error>
    where
        F: for<'a> FnOnce(
            &'a ChannelWriteHalf<russh::client::Msg>,
        ) -> futures::future::BoxFuture<'a, Result<(), russh::Error>>,
    {
        if let Some(Chan::Refused { message }) = self.chans.get(&id) {
            let line = format!("{message}\r\n");
            session.channel_success(id)?;
            session.extended_data(id, 1, Bytes::from(line))?;
            session.exit_status_request(id, 1)?;
            session.eof(id)?;
            session.close(id)?;
            return Ok(());
        }
        if program && !self.notices.is_empty() {
            let text: String = self
                .notices
                .drain(..)
                .map(|n| format!("rigbox: {n}\r\n"))
                .collect();
            session.extended_data(id, 1, Bytes::from(text))?;
        }
        self.forward(id, session, send).await
    }

    fn up(&self, id: ChannelId) -> Option<&ChannelWriteHalf<russh::client::Msg>> {
        match self.chans.get(&id) {
            Some(Chan::Relay { up, .. }) => Some(up),
            _ => None,
        }
    }
}

fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<(), russh::Error> {
    if ok {
        session.channel_success(id)
    } else {
        session.channel_failure(id)
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.lookup(user, offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(route) = self.lookup(user, key.public_key).await else {
            return Ok(Auth::reject());
        };
        if let Ok(mut who) = self.log.who.lock() {
            *who = Some((user.to_owned(), route.workspace_id.to_string()));
        }
        self.route = Some(route);
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(route) = &self.route {
            tracing::info!(peer = %self.peer, workspace = %route.workspace_id, owner = %route.owner_email, "ssh connection authenticated");
            if route.status == WorkspaceStatus::Running {
                self.upstream = Some(relay::connect(
                    self.shared.clone(),
                    route.clone(),
                    session.handle(),
                ));
            }
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.open_up(Open::Session).await {
            Ok(up) => {
                reply.accept().await;
                self.relay(channel, up, session);
            }
            Err(message) => {
                // The session is accepted so the user reads why on stderr.
                reply.accept().await;
                self.chans.insert(channel.id(), Chan::Refused { message });
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let open = Open::DirectTcpip {
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            origin: originator_address.to_owned(),
            origin_port: originator_port,
        };
        match self.open_up(open).await {
            Ok(up) => {
                reply.accept().await;
                self.relay(channel, up, session);
            }
            Err(reason) => {
                reply
                    .reject(ChannelOpenFailure::Other { code: 2, reason })
                    .await
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.up(id) {
            self.log.add_in(data.len());
            // Waits for the VM's window: the user's connection is paced by the VM.
            let _ = up.data_bytes(Bytes::copy_from_slice(data)).await;
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        id: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.up(id) {
            self.log.add_in(data.len());
            let _ = up
                .extended_data_bytes(code, Bytes::copy_from_slice(data))
                .await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.up(id) {
            let _ = up.eof().await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(Chan::Relay { up, .. }) = self.chans.remove(&id) {
            let _ = up.close().await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let term = term.to_owned();
        let modes = modes.to_vec();
        self.forward(id, session, move |up| {
            Box::pin(async move {
                up.request_pty(
                    true, &term, col_width, row_height, pix_width, pix_height, &modes,
                )
                .await
            })
        })
        .await
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // OpenSSH sends these without asking for a reply; the VM's sshd decides what it accepts.
        if let Some(up) = self.up(id) {
            let _ = up.set_env(false, name, value).await;
        }
        reply(session, id, self.chans.contains_key(&id))
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(id, session, true, |up| {
            Box::pin(async move { up.request_shell(true).await })
        })
        .await
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = data.to_vec();
        self.start(id, session, true, move |up| {
            Box::pin(async move { up.exec(true, command).await })
        })
        .await
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let name = name.to_owned();
        self.start(id, session, false, move |up| {
            Box::pin(async move { up.request_subsystem(true, name).await })
        })
        .await
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.up(id) {
            let _ = up
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.up(id) {
            let _ = up.signal(signal).await;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.notices
            .push("X11 forwarding is not available through the Rigbox gateway");
        session.channel_failure(id)
    }

    async fn agent_request(
        &mut self,
        _id: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.notices
            .push("agent forwarding (-A) is not available through the Rigbox gateway");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.notices.push(NO_REMOTE_FORWARDING);
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.notices.push(NO_REMOTE_FORWARDING);
        Ok(false)
    }
}
