//! Real micro-VMs: `rigboxd up --vmm qemu` boots Debian guests under QEMU (TCG on these
//! machines), and the tests talk to them as a user would: the API for the lifecycle, real
//! OpenSSH as `developer` with an account key (from inside the node namespace, the way node
//! ingress reaches a VM), and commands run inside the guests for the network rules.
//!
//! Needs root, QEMU, nft and the guest artefacts (`rigboxd image build base`); `scripts/test`
//! provides all of them and sets `RIGBOX_VM_TESTS=1`. Without that variable these tests say
//! so and pass, so a plain `cargo test` on a laptop stays usable.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{enabled, ip_of, pid_alive, Vms};

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_ssh_disk_survives_stop_resize_and_delete() {
    if !enabled() {
        return;
    }
    let vms = Vms::start().await;
    let id = vms.create("life").await;
    assert!(
        vms.vm_dir(&id).join("disk.qcow2").exists(),
        "root disk created"
    );
    let (code, _) = vms
        .api
        .patch(
            &format!("/workspaces/{id}/env"),
            json!({"env_vars": {"GREETING": "it's alive"}}),
        )
        .await;
    assert_eq!(code, 200);

    let ws = vms.start_ws(&id).await;
    let ip = ip_of(&ws);
    // What the platform wrote into the guest.
    let meta: Value = serde_json::from_str(&vms.run(&ip, "cat /etc/rigbox/workspace.json"))
        .expect("workspace.json is JSON");
    assert_eq!(meta["workspace_id"], id.as_str());
    assert_eq!(meta["name"], "life");
    assert_eq!(meta["owner_email"], "vm@example.com");
    assert_eq!(vms.run(&ip, "hostname").trim(), "life");
    assert_eq!(vms.run(&ip, "id -u; id -gn").trim(), "1000\ndeveloper");
    assert_eq!(vms.run(&ip, "echo \"$GREETING\"").trim(), "it's alive");
    assert_eq!(
        vms.run(&ip, "sudo -n true && echo root-ok").trim(),
        "root-ok"
    );
    // SSH key sync reports the account key from inside the guest.
    let (code, keys) = vms.api.get(&format!("/workspaces/{id}/ssh-keys")).await;
    assert_eq!(code, 200);
    assert_eq!(keys["items"][0]["comment"], "vm-test", "{keys}");

    // Changes reach the running VM within seconds: env vars (confirmed by the agent) and a new
    // account key (in the managed block of authorized_keys).
    let (code, body) = vms
        .api
        .patch(
            &format!("/workspaces/{id}/env"),
            json!({"env_vars": {"LATER": "yes"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], true, "{body}");
    assert_eq!(vms.run(&ip, "echo \"$LATER\"").trim(), "yes");
    let extra = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjTo4T0N1y0WxVb2dM0cQWm3xZ5r2vR3n8m1i9pPq0A second@laptop";
    let (code, body) = vms
        .api
        .post("/ssh-keys", json!({"name": "second", "public_key": extra}))
        .await;
    assert_eq!(code, 201, "{body}");
    let start = Instant::now();
    while !vms
        .run(&ip, "cat ~/.ssh/authorized_keys")
        .contains("second@laptop")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a new account key did not reach the VM within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    vms.run(&ip, "echo persisted > ~/note.txt && sync");
    vms.stop_ws(&id).await;
    assert!(!vms.tap_exists(&ip), "a stopped VM's tap is gone");
    let ws = vms.start_ws(&id).await;
    let ip = ip_of(&ws);
    assert_eq!(vms.run(&ip, "cat ~/note.txt").trim(), "persisted");
    vms.stop_ws(&id).await;

    // Grow the disk while stopped; the agent grows the filesystem at the next boot.
    let (code, body) = vms
        .api
        .put(
            &format!("/workspaces/{id}/resources"),
            json!({"disk_size_mb": 4096}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ws = vms.start_ws(&id).await;
    let ip = ip_of(&ws);
    let size_mb: u64 = vms
        .run(&ip, "df --output=size -m / | tail -1")
        .trim()
        .parse()
        .expect("df size");
    assert!(
        (3700..=4096).contains(&size_mb),
        "root filesystem is {size_mb} MiB after growing the disk to 4096"
    );
    assert_eq!(vms.run(&ip, "cat ~/note.txt").trim(), "persisted");

    vms.stop_ws(&id).await;
    let (code, _) = vms.api.delete(&format!("/workspaces/{id}")).await;
    assert_eq!(code, 202);
    vms.api.wait_gone(&id, Duration::from_secs(60)).await;
    assert!(
        !vms.vm_dir(&id).exists(),
        "the disk is gone with the workspace"
    );

    // The lease is free again: the next VM gets the same address.
    let next = vms.create("next").await;
    let ws = vms.start_ws(&next).await;
    assert_eq!(ip_of(&ws), ip, "the freed lease is reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_concurrent_boots_crash_and_readoption() {
    if !enabled() {
        return;
    }
    let mut vms = Vms::start().await;
    let a = vms.create("alpha").await;
    let b = vms.create("beta").await;
    // Two VMs booting at once both come up.
    for id in [&a, &b] {
        let (code, body) = vms
            .api
            .post(&format!("/workspaces/{id}/start"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
    }
    let ip_a = ip_of(&vms.wait(&a, "running").await);
    let ip_b = ip_of(&vms.wait(&b, "running").await);
    assert_ne!(ip_a, ip_b);

    // From inside A: B is unreachable on any port, the bridge service answers with A's own
    // identity whatever A claims, and no other port of the node answers (dropped: a timeout,
    // not a refusal).
    let probe = |host: &str, port: u16| {
        format!("timeout 3 bash -c '</dev/tcp/{host}/{port}' 2>/dev/null; echo $?")
    };
    assert_ne!(
        vms.run(&ip_a, &probe(&ip_b, 22)).trim(),
        "0",
        "A reached B:22"
    );
    assert_ne!(vms.run(&ip_a, &probe(&ip_b, 9090)).trim(), "0");
    assert_eq!(
        vms.run(&ip_a, &probe("172.16.0.1", 8080)).trim(),
        "124",
        "other node ports are dropped"
    );
    let who: Value = serde_json::from_str(&vms.run(
        &ip_a,
        &format!(
            "curl -s -m 10 -H 'Authorization: Bearer x' -H 'X-Workspace-Id: {b}' \
             http://172.16.0.1:9090/rig/v1/whoami"
        ),
    ))
    .expect("whoami JSON");
    assert_eq!(who["workspace_id"], a.as_str(), "{who}");
    assert_eq!(who["auth_method"], "workspace_ip");
    assert_eq!(who["ip_address"], ip_a.as_str());
    let who_b: Value =
        serde_json::from_str(&vms.run(&ip_b, "curl -s -m 10 http://172.16.0.1:9090/rig/v1/whoami"))
            .expect("whoami JSON");
    assert_eq!(who_b["workspace_id"], b.as_str());

    // A VM that takes another IP, or another MAC, is cut off (tried from inside, reported back
    // after the original address is restored).
    let spoof = "sudo sh -c 'ip addr add 172.16.0.200/24 dev eth0; \
         curl -s -m 4 --interface 172.16.0.200 http://172.16.0.1:9090/rig/v1/whoami >/dev/null; \
         echo $?; ip addr del 172.16.0.200/24 dev eth0'";
    assert_ne!(
        vms.run(&ip_a, spoof).trim(),
        "0",
        "a foreign source IP passed"
    );
    let mac = vms.run(&ip_a, "cat /sys/class/net/eth0/address");
    vms.run(
        &ip_a,
        &format!(
            "sudo sh -c '(sleep 1; ip link set eth0 address 52:54:00:aa:bb:cc; \
             curl -s -m 4 http://172.16.0.1:9090/rig/v1/whoami >/dev/null; echo $? > /tmp/mac.rc; \
             ip link set eth0 address {}) >/dev/null 2>&1 &'",
            mac.trim()
        ),
    );
    let start = Instant::now();
    let rc = loop {
        let out = vms.ssh(&ip_a, "cat /tmp/mac.rc");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the MAC spoofing probe did not finish"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_ne!(rc, "0", "a foreign MAC passed");

    // Restart rigboxd (SIGKILL) with both VMs running: they keep running and are re-adopted.
    vms.run(&ip_a, "echo before-crash > ~/mark && sync");
    let pids_before = vms.daemon.vm_pids();
    vms.daemon
        .kill_and_restart()
        .await
        .expect("restart rigboxd");
    assert_eq!(vms.daemon.vm_pids(), pids_before, "same QEMU processes");
    assert!(pids_before.iter().all(|(_, p)| pid_alive(*p)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [&a, &b] {
        vms.wait(id, "running").await;
    }
    assert_eq!(vms.run(&ip_a, "cat ~/mark").trim(), "before-crash");

    // kill -9 of A's QEMU: the workspace stops with reason `crashed`; a start brings it back
    // with its disk intact.
    let pid_a = pids_before
        .iter()
        .find(|(w, _)| w == &a)
        .map(|(_, p)| *p)
        .expect("A's pid");
    let st = Command::new("kill")
        .args(["-KILL", &pid_a.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let ws = vms.wait(&a, "stopped").await;
    assert_eq!(ws["stop_reason"], "crashed", "{ws}");
    let ws = vms.start_ws(&a).await;
    assert_eq!(vms.run(&ip_of(&ws), "cat ~/mark").trim(), "before-crash");
    assert_eq!(vms.run(&ip_b, "hostname").trim(), "beta", "B unaffected");
}
