//! Shared by the real-VM suites: a QEMU platform with one account that has an SSH key, and the
//! user's ways of waiting on and reaching its workspaces.
#![allow(dead_code)] // each test binary uses its own part

use rigbox_testkit::{Client, Daemon, PASSWORD};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BOOT: Duration = Duration::from_secs(180);

pub fn enabled() -> bool {
    let on = std::env::var("RIGBOX_VM_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("RIGBOX_VM_TESTS is not 1: skipping the real-VM test (scripts/test runs it)");
    }
    on
}

/// A QEMU platform with one account that has an SSH key.
pub struct Vms {
    pub daemon: Daemon,
    pub api: Client,
    /// The account's API key (for the `rig` CLI).
    pub token: String,
    pub key: PathBuf,
    _keydir: tempfile::TempDir,
}

impl Vms {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Same, with extra TOML after the `[node]` keys (e.g. whole `[ai]` sections).
    pub async fn start_with(toml: &str) -> Self {
        let daemon = Daemon::start_qemu(toml)
            .await
            .expect("rigboxd up --vmm qemu");
        let token = daemon
            .create_user("vm@example.com", PASSWORD)
            .await
            .expect("user");
        let api = Client::new(&daemon.api_url(), Some(token.clone()));
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
            token,
            key,
            _keydir: keydir,
        }
    }

    pub fn netns(&self) -> &str {
        self.daemon
            .netns()
            .expect("a QEMU daemon has a node namespace")
    }

    pub async fn create(&self, name: &str) -> String {
        let (code, ws) = self.api.post("/workspaces", json!({"name": name})).await;
        assert_eq!(code, 201, "{ws}");
        let id = ws["id"].as_str().expect("id").to_owned();
        self.wait(&id, "provisioned").await;
        id
    }

    /// Waits for `want`, failing at once (with the logs) if the workspace fails instead.
    pub async fn wait(&self, id: &str, want: &str) -> Value {
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

    pub fn diagnostics(&self, id: &str) -> String {
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

    pub async fn start_ws(&self, id: &str) -> Value {
        let (code, body) = self
            .api
            .post(&format!("/workspaces/{id}/start"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
        self.wait(id, "running").await
    }

    pub async fn stop_ws(&self, id: &str) -> Value {
        let (code, body) = self
            .api
            .post(&format!("/workspaces/{id}/stop"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
        self.wait(id, "stopped").await
    }

    /// OpenSSH from the node namespace to the VM at `ip` as `developer`, running `cmd`.
    fn ssh_command(&self, ip: &str, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.netns(), "ssh"]).args([
            "-i",
            &self.key.display().to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "LogLevel=ERROR",
            &format!("developer@{ip}"),
            cmd,
        ]);
        c
    }

    /// Runs `cmd` in the VM at `ip` as `developer` over real OpenSSH from the node namespace.
    pub fn ssh(&self, ip: &str, cmd: &str) -> Output {
        self.ssh_command(ip, cmd).output().expect("run ssh")
    }

    /// Same with `stdin` from a file (e.g. a tarball to unpack).
    pub fn ssh_stdin(&self, ip: &str, cmd: &str, stdin: &Path) -> Output {
        self.ssh_command(ip, cmd)
            .stdin(std::fs::File::open(stdin).expect("stdin file"))
            .output()
            .expect("run ssh")
    }

    /// `ssh` that must succeed; returns stdout.
    pub fn run(&self, ip: &str, cmd: &str) -> String {
        let out = self.ssh(ip, cmd);
        assert!(
            out.status.success(),
            "ssh {ip} {cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.daemon.data_dir().join("vms").join(id)
    }

    pub fn tap_exists(&self, ip: &str) -> bool {
        let host = ip.rsplit('.').next().unwrap_or_default();
        Command::new("ip")
            .args(["-n", self.netns(), "link", "show", &format!("rbt{host}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

pub fn ip_of(ws: &Value) -> String {
    ws["ip_address"]
        .as_str()
        .expect("a running VM has an IP")
        .to_owned()
}

pub fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
