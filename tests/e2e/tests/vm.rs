//! Real micro-VMs: `rigboxd up --vmm qemu` boots Debian guests under QEMU (TCG on these
//! machines), and the tests talk to them as a user would: the API for the lifecycle, real
//! OpenSSH as `developer` with an account key (from inside the node namespace, the way node
//! ingress reaches a VM), and commands run inside the guests for the network rules.
//!
//! Needs root, QEMU, nft and the guest artefacts (`rigboxd image build base`); `scripts/test`
//! provides all of them and sets `RIGBOX_VM_TESTS=1`. Without that variable these tests say
//! so and pass, so a plain `cargo test` on a laptop stays usable.

use rigbox_testkit::{Client, Daemon, PASSWORD};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(180);

fn enabled() -> bool {
    let on = std::env::var("RIGBOX_VM_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("RIGBOX_VM_TESTS is not 1: skipping the real-VM test (scripts/test runs it)");
    }
    on
}

/// A QEMU platform with one account that has an SSH key.
struct Vms {
    daemon: Daemon,
    api: Client,
    key: PathBuf,
    _keydir: tempfile::TempDir,
}

impl Vms {
    async fn start() -> Self {
        let daemon = Daemon::start_qemu("").await.expect("rigboxd up --vmm qemu");
        let token = daemon
            .create_user("vm@example.com", PASSWORD)
            .await
            .expect("user");
        let api = Client::new(&daemon.api_url(), Some(token));
        let keydir = tempfile::tempdir().expect("tempdir");
        let key = keydir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "vm-test", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let (code, body) = api
            .post(
                "/ssh-keys",
                json!({"name": "laptop", "public_key": public.trim()}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        Self {
            daemon,
            api,
            key,
            _keydir: keydir,
        }
    }

    fn netns(&self) -> &str {
        self.daemon
            .netns()
            .expect("a QEMU daemon has a node namespace")
    }

    async fn create(&self, name: &str) -> String {
        let (code, ws) = self.api.post("/workspaces", json!({"name": name})).await;
        assert_eq!(code, 201, "{ws}");
        let id = ws["id"].as_str().expect("id").to_owned();
        self.wait(&id, "provisioned").await;
        id
    }

    /// Waits for `want`, failing at once (with the logs) if the workspace fails instead.
    async fn wait(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let (code, body) = self.api.get(&format!("/workspaces/{id}")).await;
            if code == 200 && body["status"] == want {
                return body;
            }
            if body["status"] == "failed" && want != "failed" {
                panic!(
                    "workspace {id} failed while waiting for {want}: {body}\n{}",
                    self.diagnostics(id)
                );
            }
            assert!(
                start.elapsed() < BOOT,
                "workspace {id} did not reach {want} within {BOOT:?}; last: {code} {body}\n{}",
                self.diagnostics(id)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn diagnostics(&self, id: &str) -> String {
        let dir = self.daemon.data_dir().join("vms").join(id);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let console = read("console.log");
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        format!(
            "--- rigboxd log (tail) ---\n{}\n--- qemu.log ---\n{}\n--- console (tail) ---\n{}",
            self.daemon
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            read("qemu.log"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    async fn start_ws(&self, id: &str) -> Value {
        let (code, body) = self
            .api
            .post(&format!("/workspaces/{id}/start"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
        self.wait(id, "running").await
    }

    async fn stop_ws(&self, id: &str) -> Value {
        let (code, body) = self
            .api
            .post(&format!("/workspaces/{id}/stop"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
        self.wait(id, "stopped").await
    }

    /// Runs `cmd` in the VM at `ip` as `developer` over real OpenSSH from the node namespace.
    fn ssh(&self, ip: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.netns(), "ssh"])
            .args([
                "-i",
                &self.key.display().to_string(),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=15",
                "-o",
                "LogLevel=ERROR",
                &format!("developer@{ip}"),
                cmd,
            ])
            .output()
            .expect("run ssh")
    }

    /// `ssh` that must succeed; returns stdout.
    fn run(&self, ip: &str, cmd: &str) -> String {
        let out = self.ssh(ip, cmd);
        assert!(
            out.status.success(),
            "ssh {ip} {cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.daemon.data_dir().join("vms").join(id)
    }

    fn tap_exists(&self, ip: &str) -> bool {
        let host = ip.rsplit('.').next().unwrap_or_default();
        Command::new("ip")
            .args(["-n", self.netns(), "link", "show", &format!("rbt{host}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

fn ip_of(ws: &Value) -> String {
    ws["ip_address"]
        .as_str()
        .expect("a running VM has an IP")
        .to_owned()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

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
