//! The QEMU driver: one `qemu-system-x86_64 -M microvm` process per running workspace.
//!
//! Per workspace it keeps a directory `<state_dir>/<workspace-id>/` with
//! - `disk.qcow2`: the root disk, a qcow2 overlay on the template's read-only ext4 image, kept
//!   across stop/start, grown on resize (the guest agent grows the filesystem at boot);
//! - `console.log`: the serial console, appended across boots; `qemu.log`: QEMU's own output;
//! - `qmp.sock` (commands) and `events.sock` (a watcher's event stream): two QMP monitors;
//! - `state.json`: what the driver must remember across a restart of `rigboxd` (pid, lease,
//!   generation, whether the guest reported ready, why the last VM went away).
//!
//! VMs are started in their own process group, so they outlive `rigboxd`; a new driver re-adopts
//! every VM whose process is still alive. QEMU runs with `-no-shutdown`: when the guest powers
//! off, QEMU stays (status `shutdown`), the watcher records a guest shutdown and quits it; a
//! process that vanishes without that record crashed. Stop is ACPI power-off over QMP with a
//! grace period, then SIGKILL.

use crate::guest::GuestChannel;
use crate::net::{Net, BRIDGE_IP};
use crate::vmm::{LaunchSpec, VmState, Vmm, VmmError};
use rigbox_types::node::{ExitReason, GuestAck, GuestConfig};
use rigbox_types::WorkspaceId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// Settings of the QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// Where per-workspace directories live (`<data-dir>/vms`).
    pub state_dir: PathBuf,
    /// The guest kernel (uncompressed `vmlinux`, booted via PVH).
    pub kernel: PathBuf,
    /// Read-only base image per image name (`base`, `dev`).
    pub images: BTreeMap<String, PathBuf>,
    pub accel: Accel,
    /// `qemu-system-x86_64` or a path to it.
    pub qemu_bin: PathBuf,
    /// TCG translation cache size in MiB (bounds QEMU's RSS under TCG).
    pub tb_size_mb: u32,
    /// Resolvers handed to guests (`vm_dns_servers`).
    pub dns: Vec<Ipv4Addr>,
}

/// What the driver remembers of one VM process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiveVm {
    pid: i32,
    generation: i64,
    ip: Ipv4Addr,
    mac: String,
    /// The guest reported ready during this boot.
    #[serde(default)]
    booted: bool,
    /// The node asked for this VM to stop (its exit is not news).
    #[serde(default)]
    stop_requested: bool,
    /// The guest powered itself off.
    #[serde(default)]
    guest_shutdown: bool,
}

/// `state.json` of one workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    disk_mb: Option<i64>,
    vm: Option<LiveVm>,
    last_generation: Option<i64>,
    exit: Option<ExitReason>,
}

/// The QEMU driver.
pub struct QemuVmm {
    /// Itself, for the watcher tasks it spawns.
    me: std::sync::Weak<QemuVmm>,
    config: QemuConfig,
    net: Arc<Net>,
    guest: Arc<GuestChannel>,
    records: Mutex<HashMap<WorkspaceId, Record>>,
    tsc_khz: Option<u64>,
}

impl std::fmt::Debug for QemuVmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuVmm")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The host TSC frequency in kHz (`tsc_early_khz=` under TCG, or about one boot in two hangs
/// calibrating the TSC).
fn host_tsc_khz() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = s
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// Whether `pid` is a live (not zombie) QEMU process of workspace `ws`.
fn alive(pid: i32, ws: &WorkspaceId) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    // While a process execs (`ip netns exec` becoming QEMU) its cmdline reads empty for a
    // moment: read again rather than call a starting VM dead.
    for _ in 0..5 {
        let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        if !c.is_empty() {
            return c
                .split(|b| *b == 0)
                .any(|arg| arg.starts_with(format!("guest={ws},").as_bytes()));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

fn kill9(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The next non-event message of a QMP stream.
async fn qmp_reply<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> std::io::Result<Value> {
    loop {
        let line = lines
            .next_line()
            .await?
            .ok_or_else(|| std::io::Error::other("QMP closed"))?;
        let v: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        if v.get("event").is_none() {
            return Ok(v);
        }
    }
}

/// One QMP exchange: greeting, capabilities, then `cmd`; events are skipped.
async fn qmp(sock: &Path, cmd: Value) -> std::io::Result<Value> {
    let exchange = async {
        let stream = UnixStream::connect(sock).await?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        qmp_reply(&mut lines).await?; // greeting
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").await?;
        qmp_reply(&mut lines).await?;
        let mut msg = serde_json::to_vec(&cmd).map_err(std::io::Error::other)?;
        msg.push(b'\n');
        w.write_all(&msg).await?;
        qmp_reply(&mut lines).await
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "QMP timeout"))?
}

impl QemuVmm {
    /// A driver over `net`, re-adopting every VM whose QEMU process is still alive.
    pub async fn new(
        config: QemuConfig,
        net: Arc<Net>,
        guest: Arc<GuestChannel>,
    ) -> Result<Arc<Self>, VmmError> {
        std::fs::create_dir_all(&config.state_dir)?;
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&config.state_dir)? {
            let entry = entry?;
            let Some(ws) = entry.file_name().to_str().and_then(WorkspaceId::parse) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(entry.path().join("state.json")) else {
                continue;
            };
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) => {
                    records.insert(ws, r);
                }
                Err(e) => tracing::warn!(workspace = %ws, error = %e, "unreadable VM state"),
            }
        }
        let tsc_khz = (config.accel == Accel::Tcg).then(host_tsc_khz).flatten();
        let vmm = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            net,
            guest,
            records: Mutex::new(records),
            tsc_khz,
        });
        let adopt: Vec<(WorkspaceId, LiveVm)> = vmm
            .lock()
            .iter()
            .filter_map(|(ws, r)| r.vm.clone().map(|vm| (ws.clone(), vm)))
            .filter(|(ws, vm)| alive(vm.pid, ws))
            .collect();
        for (ws, vm) in adopt {
            tracing::info!(workspace = %ws, pid = vm.pid, ip = %vm.ip, "re-adopting VM");
            if let Err(e) = vmm.net.attach(vm.ip, &vm.mac).await {
                tracing::warn!(workspace = %ws, error = %e, "could not re-attach the VM's tap");
            }
            vmm.watch(&ws);
        }
        Ok(vmm)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self, ws: &WorkspaceId) -> PathBuf {
        self.config.state_dir.join(ws.as_str())
    }

    /// Changes a record and writes it to `state.json` (atomically).
    fn update<T>(&self, ws: &WorkspaceId, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut g = self.lock();
        let r = g.entry(ws.clone()).or_default();
        let out = f(r);
        let dir = self.dir(ws);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join("state.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&*r)?)?;
            std::fs::rename(tmp, dir.join("state.json"))
        };
        if let Err(e) = write() {
            tracing::error!(workspace = %ws, error = %e, "could not persist VM state");
        }
        out
    }

    fn record(&self, ws: &WorkspaceId) -> Option<Record> {
        self.lock().get(ws).cloned()
    }

    /// Follows a VM's event monitor: a guest power-off is recorded and QEMU told to quit.
    fn watch(&self, ws: &WorkspaceId) {
        let Some(vmm) = self.me.upgrade() else {
            return;
        };
        let ws = ws.clone();
        tokio::spawn(async move {
            let sock = vmm.dir(&ws).join("events.sock");
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match UnixStream::connect(&sock).await {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %ws, error = %e, "no QMP event monitor");
                        return;
                    }
                }
            };
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            let _ = w
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n")
                .await;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // `guest-shutdown` is a power-off from inside; a reset (reboot, or a kernel
                // panic under `-no-reboot`) ends the VM like a crash.
                let event = v["event"] == "SHUTDOWN";
                let stopped = event || v["return"]["status"].as_str() == Some("shutdown");
                if stopped {
                    let powered_off =
                        !event || v["data"]["reason"].as_str() == Some("guest-shutdown");
                    vmm.update(&ws, |r| {
                        if let Some(vm) = r.vm.as_mut() {
                            vm.guest_shutdown = powered_off && !vm.stop_requested;
                        }
                    });
                    let _ = w.write_all(b"{\"execute\":\"quit\"}\n").await;
                }
            }
        });
    }

    /// Settles a VM whose process is gone: releases its tap and records why it went away.
    async fn reap(&self, ws: &WorkspaceId, vm: &LiveVm, adopted_dead: bool) {
        self.net.detach(vm.ip, &vm.mac).await;
        self.guest.forget(ws);
        let exit = if vm.stop_requested {
            None
        } else if vm.guest_shutdown {
            Some(ExitReason::GuestShutdown)
        } else if adopted_dead {
            Some(ExitReason::NodeRestart)
        } else {
            Some(ExitReason::Crashed)
        };
        if let Some(e) = exit {
            tracing::warn!(workspace = %ws, reason = e.as_str(), "VM went away");
        }
        self.update(ws, |r| {
            r.vm = None;
            r.last_generation = Some(vm.generation);
            r.exit = exit;
        });
    }

    async fn state(&self, ws: &WorkspaceId) -> VmState {
        let Some(rec) = self.record(ws) else {
            return VmState::NoDisk;
        };
        if let Some(vm) = &rec.vm {
            if alive(vm.pid, ws) {
                let booted = vm.booted || self.guest.ready_boot(ws).is_some();
                if booted && !vm.booted {
                    self.update(ws, |r| {
                        if let Some(v) = r.vm.as_mut() {
                            v.booted = true;
                        }
                    });
                }
                return VmState::Running {
                    generation: vm.generation,
                    ip: vm.ip,
                    booted,
                };
            }
            self.reap(ws, vm, false).await;
        }
        let rec = self.record(ws).unwrap_or_default();
        match rec.disk_mb {
            Some(disk_mb) if self.dir(ws).join("disk.qcow2").exists() => VmState::Off {
                disk_mb,
                last_generation: rec.last_generation,
                exit: rec.exit,
            },
            _ => VmState::NoDisk,
        }
    }

    async fn qemu_img(&self, args: &[&str]) -> Result<(), VmmError> {
        let out = tokio::process::Command::new("qemu-img")
            .args(args)
            .output()
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(VmmError::Disk(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }

    /// Waits until the VM's process is gone, up to `limit`; true if it is.
    async fn wait_gone(&self, ws: &WorkspaceId, pid: i32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while alive(pid, ws) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    fn command(&self, spec: &LaunchSpec, dir: &Path, tap: &str) -> Vec<String> {
        let mut append = format!(
            "console=ttyS0 root=/dev/vda rw rootfstype=ext4 quiet panic=-1 net.ifnames=0 \
             rigbox.ip={}/24 rigbox.gw={BRIDGE_IP}",
            spec.ip
        );
        if !self.config.dns.is_empty() {
            let dns: Vec<String> = self.config.dns.iter().map(|d| d.to_string()).collect();
            append.push_str(&format!(" rigbox.dns={}", dns.join(",")));
        }
        // A stable machine ID per workspace (the image ships none).
        let id = sha2::Sha256::digest(spec.workspace_id.as_str().as_bytes());
        append.push_str(&format!(" systemd.machine_id={}", &hex::encode(id)[..32]));
        if let Some(khz) = self.tsc_khz {
            append.push_str(&format!(" tsc_early_khz={khz}"));
        }
        let (accel, cpu) = match self.config.accel {
            Accel::Kvm => ("kvm".to_owned(), "host"),
            Accel::Tcg => (format!("tcg,tb-size={}", self.config.tb_size_mb), "max"),
        };
        let p = |f: &str| dir.join(f).display().to_string();
        let mut args: Vec<String> = vec![
            self.config.qemu_bin.display().to_string(),
            "-name".into(),
            format!("guest={},process=rbx-{}", spec.workspace_id, spec.name),
            "-M".into(),
            // The wall clock comes from the RTC (TLS and logs need the right time).
            "microvm,rtc=on".into(),
            "-accel".into(),
            accel,
            "-cpu".into(),
            cpu.into(),
            "-m".into(),
            spec.ram_mb.to_string(),
            "-smp".into(),
            spec.vcpu_count.to_string(),
            // qboot: a minimal firmware that jumps straight to the kernel.
            "-bios".into(),
            "qboot.rom".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-chardev".into(),
            format!("file,id=console,path={},append=on", p("console.log")),
            "-serial".into(),
            "chardev:console".into(),
            "-kernel".into(),
            self.config.kernel.display().to_string(),
            "-append".into(),
            append,
            "-drive".into(),
            format!(
                "id=root,file={},format=qcow2,if=none,discard=unmap",
                p("disk.qcow2")
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-device,netdev=n0,mac={}", spec.mac),
            // Early entropy for sshd and getrandom() without waiting on jitter.
            "-device".into(),
            "virtio-rng-device".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p("qmp.sock")),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p("events.sock")),
            "-no-reboot".into(),
            "-no-shutdown".into(),
        ];
        let mut full: Vec<String> = self.net.exec_prefix().to_vec();
        full.append(&mut args);
        full
    }

    async fn spawn(&self, spec: &LaunchSpec) -> Result<(), VmmError> {
        let ws = &spec.workspace_id;
        let dir = self.dir(ws);
        for s in ["qmp.sock", "events.sock"] {
            let _ = std::fs::remove_file(dir.join(s));
        }
        let tap = self
            .net
            .attach(spec.ip, &spec.mac)
            .await
            .map_err(|e| VmmError::Launch(e.to_string()))?;
        let argv = self.command(spec, &dir, &tap);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("qemu.log"))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C of rigboxd must not reach the VMs.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.net.detach(spec.ip, &spec.mac).await;
                return Err(VmmError::Launch(format!("{}: {e}", argv[0])));
            }
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            self.net.detach(spec.ip, &spec.mac).await;
            return Err(VmmError::Launch("QEMU exited at once".into()));
        };
        self.guest.forget(ws);
        self.update(ws, |r| {
            r.vm = Some(LiveVm {
                pid,
                generation: spec.generation,
                ip: spec.ip,
                mac: spec.mac.clone(),
                booted: false,
                stop_requested: false,
                guest_shutdown: false,
            });
            r.exit = None;
        });
        // QEMU is up once its monitor listens; a bad argument or a missing tap ends it first.
        // Our own child handle says whether it exited: `alive()` reads /proc, whose cmdline is
        // briefly empty while `ip netns exec` execs QEMU, and must not be trusted here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("qmp.sock").exists() {
            let exited = !matches!(child.try_wait(), Ok(None));
            if exited || Instant::now() >= deadline {
                kill9(pid);
                let _ = child.wait().await;
                self.update(ws, |r| r.vm = None);
                self.net.detach(spec.ip, &spec.mac).await;
                let log = tail(&dir.join("qemu.log"), 5);
                return Err(VmmError::Launch(if log.is_empty() {
                    "QEMU ended before its monitor listened (no output)".into()
                } else {
                    log
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Reap our own child when it exits (a re-adopted VM is reaped by init instead).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        self.watch(ws);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Vmm for QemuVmm {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    async fn ensure_disk(
        &self,
        ws: &WorkspaceId,
        _name: &str,
        image: &str,
        size_mb: i64,
    ) -> Result<(), VmmError> {
        let dir = self.dir(ws);
        let disk = dir.join("disk.qcow2");
        let have = self.record(ws).and_then(|r| r.disk_mb);
        match have {
            Some(mb) if disk.exists() => {
                if mb < size_mb {
                    self.qemu_img(&[
                        "resize",
                        &disk.display().to_string(),
                        &format!("{size_mb}M"),
                    ])
                    .await?;
                    self.update(ws, |r| r.disk_mb = Some(size_mb));
                }
                Ok(())
            }
            _ => {
                let base = self
                    .config
                    .images
                    .get(image)
                    .filter(|p| p.is_file())
                    .ok_or_else(|| VmmError::ImageUnavailable(image.to_owned()))?;
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join("disk.qcow2.tmp");
                self.qemu_img(&[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    &base.display().to_string(),
                    &tmp.display().to_string(),
                    &format!("{size_mb}M"),
                ])
                .await?;
                std::fs::rename(&tmp, &disk)?;
                self.update(ws, |r| r.disk_mb = Some(size_mb));
                Ok(())
            }
        }
    }

    async fn delete_disk(&self, ws: &WorkspaceId) -> Result<(), VmmError> {
        if let Some(vm) = self.record(ws).and_then(|r| r.vm) {
            if alive(vm.pid, ws) {
                kill9(vm.pid);
                self.wait_gone(ws, vm.pid, Duration::from_secs(10)).await;
            }
            self.net.detach(vm.ip, &vm.mac).await;
        }
        self.guest.forget(ws);
        match std::fs::remove_dir_all(self.dir(ws)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.lock().remove(ws);
        Ok(())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), VmmError> {
        if let Some(vm) = self.record(&spec.workspace_id).and_then(|r| r.vm) {
            if alive(vm.pid, &spec.workspace_id) {
                return Ok(());
            }
        }
        self.spawn(spec).await
    }

    async fn shutdown(&self, ws: &WorkspaceId, grace: Duration) -> Result<(), VmmError> {
        let Some(vm) = self.record(ws).and_then(|r| r.vm) else {
            return Ok(());
        };
        self.update(ws, |r| {
            if let Some(v) = r.vm.as_mut() {
                v.stop_requested = true;
            }
        });
        if alive(vm.pid, ws) {
            let sock = self.dir(ws).join("qmp.sock");
            if let Err(e) = qmp(&sock, json!({"execute": "system_powerdown"})).await {
                tracing::warn!(workspace = %ws, error = %e, "ACPI power-off request failed");
            }
            if !self.wait_gone(ws, vm.pid, grace).await {
                tracing::warn!(workspace = %ws, "guest did not power off in time; killing");
                kill9(vm.pid);
                self.wait_gone(ws, vm.pid, Duration::from_secs(10)).await;
            }
        }
        let vm = self.record(ws).and_then(|r| r.vm).unwrap_or(vm);
        self.reap(ws, &vm, false).await;
        Ok(())
    }

    async fn kill(&self, ws: &WorkspaceId) -> Result<(), VmmError> {
        let Some(vm) = self.record(ws).and_then(|r| r.vm) else {
            return Ok(());
        };
        self.update(ws, |r| {
            if let Some(v) = r.vm.as_mut() {
                v.stop_requested = true;
            }
        });
        kill9(vm.pid);
        self.wait_gone(ws, vm.pid, Duration::from_secs(10)).await;
        let vm = self.record(ws).and_then(|r| r.vm).unwrap_or(vm);
        self.reap(ws, &vm, false).await;
        Ok(())
    }

    async fn inspect(&self, ws: &WorkspaceId) -> VmState {
        self.state(ws).await
    }

    async fn list(&self) -> Vec<(WorkspaceId, VmState)> {
        let ids: Vec<WorkspaceId> = self.lock().keys().cloned().collect();
        let mut out = Vec::with_capacity(ids.len());
        for ws in ids {
            let st = self.state(&ws).await;
            out.push((ws, st));
        }
        out
    }

    async fn apply_guest_config(
        &self,
        ws: &WorkspaceId,
        config: &GuestConfig,
        wait: Duration,
    ) -> Option<GuestAck> {
        self.record(ws)?.vm?;
        self.guest.push(ws, config.clone());
        self.guest.wait_ack(ws, config.revision, wait).await
    }

    async fn guest_ack(&self, ws: &WorkspaceId) -> Option<GuestAck> {
        self.guest.ack(ws)
    }
}
