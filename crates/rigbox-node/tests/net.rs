//! The node network's isolation rules, exercised with real packets: two "VMs" are network
//! namespaces plugged into the node bridge through veth pairs named like the taps QEMU would
//! use, so the bridge, the nftables rules and the namespace sockets are the real ones without
//! booting anything. Needs root, `ip` and `nft` (as the node role does).

use rigbox_node::net::{Net, BRIDGE_IP, BRIDGE_PORT};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` inside namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("thread")
    })
}

/// Whether a TCP connection from namespace `ns` to `to` is accepted within a second.
fn reaches(ns: &str, to: SocketAddrV4) -> bool {
    in_ns(ns, || {
        TcpStream::connect_timeout(&to.into(), Duration::from_millis(1000)).is_ok()
    })
}

struct FakeVm {
    ns: String,
    ip: Ipv4Addr,
}

impl FakeVm {
    /// A namespace with `eth0` on the node bridge through a veth named like the lease's tap.
    fn plug(node_ns: &str, tag: &str, host: u8) -> Self {
        let ns = format!("{tag}-vm{host}");
        let ip = Ipv4Addr::new(172, 16, 0, host);
        let tap = Net::tap_name(ip);
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "-n", node_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        let mac = rigbox_node::leases::Leases::mac(ip);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "address", &mac]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        Self { ns, ip }
    }

    fn listen(&self, port: u16) -> TcpListener {
        in_ns(&self.ns, || {
            TcpListener::bind(SocketAddrV4::new(self.ip, port)).expect("bind in VM")
        })
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Removes the node namespace even when an assertion fails.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_rules_isolate_vms_and_admit_only_the_bridge_service() {
    let tag = format!("rbxn{}", std::process::id());
    let node_ns = format!("{tag}-node");
    let _guard = NsGuard(node_ns.clone());
    let net = Net::setup(&node_ns).await.expect("node network");
    // Setting up twice is harmless (a restarted node takes its namespace over).
    let net2 = Net::setup(&node_ns).await.expect("idempotent setup");
    drop(net2);

    let a = FakeVm::plug(&node_ns, &tag, 2);
    let b = FakeVm::plug(&node_ns, &tag, 3);
    net.attach(a.ip, &rigbox_node::leases::Leases::mac(a.ip))
        .await
        .expect("attach a");
    net.attach(b.ip, &rigbox_node::leases::Leases::mac(b.ip))
        .await
        .expect("attach b");

    // The bridge service and another node port, both inside the node namespace.
    let bridge = net
        .listen(SocketAddrV4::new(BRIDGE_IP, BRIDGE_PORT))
        .expect("bridge listener");
    let other = net
        .listen(SocketAddrV4::new(BRIDGE_IP, 2222))
        .expect("other listener");
    let _b_listener = b.listen(8080);
    let _a_listener = a.listen(22);

    let bridge_addr = SocketAddrV4::new(BRIDGE_IP, BRIDGE_PORT);
    let (a_ns, b_ip) = (a.ns.clone(), b.ip);
    let checks = tokio::task::spawn_blocking(move || {
        (
            reaches(&a_ns, bridge_addr),
            reaches(&a_ns, SocketAddrV4::new(BRIDGE_IP, 2222)),
            reaches(&a_ns, SocketAddrV4::new(b_ip, 8080)),
        )
    });
    // Accept the bridge connection so the handshake completes on both sides.
    let accept = tokio::time::timeout(Duration::from_secs(3), bridge.accept()).await;
    let (to_bridge, to_other_port, to_other_vm) = checks.await.expect("checks");
    assert!(to_bridge, "a VM reaches 172.16.0.1:9090");
    assert!(
        accept.is_ok(),
        "the bridge service sees the VM's connection"
    );
    let (_, peer) = accept.expect("accepted").expect("accept");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(a.ip),
        "source IP is the VM's lease"
    );
    assert!(!to_other_port, "no other port of the node is reachable");
    assert!(!to_other_vm, "VM A cannot reach VM B");
    drop(other);

    // Node ingress reaches a VM port.
    let s = net
        .connect(SocketAddrV4::new(a.ip, 22))
        .await
        .expect("ingress to VM A:22");
    drop(s);

    // A VM that takes another address is cut off; so is one that changes its MAC.
    sh(&["ip", "-n", &a.ns, "addr", "flush", "dev", "eth0"]);
    sh(&[
        "ip",
        "-n",
        &a.ns,
        "addr",
        "add",
        "172.16.0.77/24",
        "dev",
        "eth0",
    ]);
    let a_ns = a.ns.clone();
    let spoofed_ip = tokio::task::spawn_blocking(move || reaches(&a_ns, bridge_addr))
        .await
        .expect("spoof ip");
    assert!(!spoofed_ip, "a VM with a foreign IP is dropped");
    sh(&["ip", "-n", &a.ns, "addr", "flush", "dev", "eth0"]);
    sh(&[
        "ip",
        "-n",
        &a.ns,
        "addr",
        "add",
        &format!("{}/24", a.ip),
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip",
        "-n",
        &a.ns,
        "link",
        "set",
        "eth0",
        "address",
        "52:54:00:aa:bb:cc",
    ]);
    let a_ns = a.ns.clone();
    let spoofed_mac = tokio::task::spawn_blocking(move || reaches(&a_ns, bridge_addr))
        .await
        .expect("spoof mac");
    assert!(!spoofed_mac, "a VM with a foreign MAC is dropped");

    // Detaching withdraws the lease: B's admission is gone with its tap.
    net.detach(b.ip, &rigbox_node::leases::Leases::mac(b.ip))
        .await;
    drop((a, b));
    net.teardown().await.expect("teardown");
}
