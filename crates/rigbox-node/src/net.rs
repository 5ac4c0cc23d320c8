//! The node network: one network namespace per node holding bridge `rbx0` (`172.16.0.1/24`),
//! one tap per running VM, and the nftables rules of bridge-and-ai.md §1.
//!
//! `rigboxd` itself stays in the host namespace. Whatever must live in the node namespace is
//! either a command run there (`ip -n`, `ip netns exec … nft`, the QEMU processes) or a socket
//! *created* there by a short-lived thread that entered the namespace ([`Net::run_in`]): a
//! socket keeps the namespace it was created in, so the bridge service listener and every node
//! ingress stream are ordinary tokio sockets afterwards.
//!
//! Rules (tables `bridge rigbox` and `inet rigbox`, owned entirely by this module):
//! - A frame from a tap must carry that tap's MAC and leased IPv4 (ARP included); anything else,
//!   IPv6 too, is dropped at the bridge (`vms` set: tap . MAC . IP, one element per lease).
//! - Nothing is bridged from one VM port to another (`forward` drop); taps are also isolated
//!   bridge ports, so VM→VM is cut twice.
//! - Towards the node itself only TCP 9090 may be opened; replies of connections the node opened
//!   (ingress) pass as `established`.
//! - No routing out of the namespace: the namespace has no uplink and forwarding is dropped.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::PathBuf;
use tokio::process::Command;

/// The node's address on its bridge.
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The bridge service port (the only port of the node a VM may open).
pub const BRIDGE_PORT: u16 = 9090;
/// Name of the bridge device inside the namespace.
const BRIDGE: &str = "rbx0";
/// Prefix of tap names; the suffix is the lease's host number.
const TAP_PREFIX: &str = "rbt";

/// Errors of the node network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("could not run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("network namespace {name}")]
    Namespace {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// The node's network namespace and what is attached to it.
#[derive(Debug)]
pub struct Net {
    name: String,
    /// `/run/netns/<name>`, held open so socket threads can enter it.
    ns: File,
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs a command, mapping a non-zero exit to [`NetError::Command`] with its stderr.
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let cmd = format!("{program} {}", args.join(" "));
    let mut c = Command::new(program);
    c.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let mut child = c.spawn().map_err(|source| NetError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|source| NetError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ruleset of the namespace, applied atomically by `nft -f`.
fn ruleset() -> String {
    format!(
        r#"table bridge rigbox
delete table bridge rigbox
table bridge rigbox {{
    set vms {{ type ifname . ether_addr . ipv4_addr; }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        iifname "{TAP_PREFIX}*" drop
        oifname "{TAP_PREFIX}*" drop
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname != "{TAP_PREFIX}*" accept
        ether type arp iifname . ether saddr . arp saddr ip @vms iifname . arp saddr ether . arp saddr ip @vms accept
        ether type ip iifname . ether saddr . ip saddr @vms accept
        drop
    }}
}}
table inet rigbox
delete table inet rigbox
table inet rigbox {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{BRIDGE}" ct state established,related accept
        iifname "{BRIDGE}" ip daddr {BRIDGE_IP} tcp dport {BRIDGE_PORT} accept
        iifname "{BRIDGE}" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
    }}
}}
"#
    )
}

impl Net {
    /// Creates (or takes over) namespace `name` with its bridge and rules. Idempotent: taps of
    /// VMs that are still running are left alone; [`Net::attach`] re-admits them.
    pub async fn setup(name: &str) -> Result<Self, NetError> {
        if !ns_path(name).exists() {
            run("ip", &["netns", "add", name], None).await?;
        }
        let ns = File::open(ns_path(name)).map_err(|source| NetError::Namespace {
            name: name.to_owned(),
            source,
        })?;
        let net = Self {
            name: name.to_owned(),
            ns,
        };
        net.ip(&["link", "set", "lo", "up"]).await?;
        if net.ip(&["link", "show", BRIDGE]).await.is_err() {
            net.ip(&["link", "add", BRIDGE, "type", "bridge"]).await?;
        }
        let addrs = net.ip(&["-4", "addr", "show", "dev", BRIDGE]).await?;
        if !addrs.contains(&format!("{BRIDGE_IP}/24")) {
            net.ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE])
                .await?;
        }
        net.ip(&["link", "set", BRIDGE, "up"]).await?;
        net.nft(&ruleset()).await?;
        Ok(net)
    }

    /// Opens an existing namespace without touching it (tools beside a running node).
    pub fn open(name: &str) -> Result<Self, NetError> {
        let ns = File::open(ns_path(name)).map_err(|source| NetError::Namespace {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            ns,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the namespace and everything in it (tests; a node keeps its namespace).
    pub async fn teardown(&self) -> Result<(), NetError> {
        run("ip", &["netns", "del", &self.name], None)
            .await
            .map(drop)
    }

    async fn ip(&self, args: &[&str]) -> Result<String, NetError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full, None).await
    }

    async fn nft(&self, script: &str) -> Result<String, NetError> {
        run(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(script),
        )
        .await
    }

    /// The tap device of a lease.
    pub fn tap_name(ip: Ipv4Addr) -> String {
        format!("{TAP_PREFIX}{}", ip.octets()[3])
    }

    /// Creates the lease's tap on the bridge (kept if it exists) and admits its MAC and IP.
    pub async fn attach(&self, ip: Ipv4Addr, mac: &str) -> Result<String, NetError> {
        let tap = Self::tap_name(ip);
        if self.ip(&["link", "show", &tap]).await.is_err() {
            self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])
                .await?;
        }
        self.ip(&["link", "set", &tap, "master", BRIDGE]).await?;
        self.ip(&[
            "link",
            "set",
            &tap,
            "type",
            "bridge_slave",
            "isolated",
            "on",
        ])
        .await?;
        self.ip(&["link", "set", &tap, "up"]).await?;
        self.nft(&format!(
            "add element bridge rigbox vms {{ \"{tap}\" . {mac} . {ip} }}\n"
        ))
        .await?;
        Ok(tap)
    }

    /// Withdraws the lease's admission and removes its tap; idempotent.
    pub async fn detach(&self, ip: Ipv4Addr, mac: &str) {
        let tap = Self::tap_name(ip);
        let _ = self
            .nft(&format!(
                "delete element bridge rigbox vms {{ \"{tap}\" . {mac} . {ip} }}\n"
            ))
            .await;
        let _ = self.ip(&["link", "del", &tap]).await;
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> [String; 4] {
        ["ip", "netns", "exec", &self.name].map(str::to_owned)
    }

    /// Runs `f` on a thread that entered the namespace: sockets it creates live there.
    pub fn run_in<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send,
        F: FnOnce() -> io::Result<T> + Send,
    {
        let fd = self.ns.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                rustix::thread::move_into_link_name_space(
                    fd,
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                f()
            })
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
        })
    }

    /// A listener on `addr` inside the namespace (the bridge service binds `172.16.0.1:9090`).
    pub fn listen(&self, addr: SocketAddrV4) -> io::Result<tokio::net::TcpListener> {
        let std_listener = self.run_in(|| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        tokio::net::TcpListener::from_std(std_listener)
    }

    /// Node ingress: a TCP stream from the node to `addr` on the bridge. This is the one path
    /// by which other roles (edge, SSH gateway) reach a VM.
    pub async fn connect(&self, addr: SocketAddrV4) -> io::Result<tokio::net::TcpStream> {
        let socket = self.run_in(tokio::net::TcpSocket::new_v4)?;
        socket.set_nodelay(true)?;
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.connect(addr.into()),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_follow_the_lease() {
        assert_eq!(Net::tap_name(Ipv4Addr::new(172, 16, 0, 2)), "rbt2");
        assert_eq!(Net::tap_name(Ipv4Addr::new(172, 16, 0, 254)), "rbt254");
    }

    #[test]
    fn ruleset_mentions_every_promise() {
        let r = ruleset();
        assert!(r.contains("tcp dport 9090 accept"));
        assert!(r.contains("@vms"));
        assert!(r.contains("policy drop"));
    }
}
