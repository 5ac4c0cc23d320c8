//! `rig agent`: the guest agent, run as root by `rigbox-agent.service` in every workspace VM
//! (bridge-and-ai.md §4). It is the only way the platform changes files inside a running guest.
//!
//! It long-polls `GET /rig/v1/agent/config` on the node bridge, writes what the configuration
//! says (workspace.json, hostname, the managed block of `authorized_keys`, the gateway key,
//! `/etc/rigbox/env`, `~/.rigbox/proxy.env`), atomically, and confirms with
//! `POST /rig/v1/agent/report`. After the first configuration of a boot it grows the root
//! filesystem to the disk's size and waits for sshd before reporting `ready`, which is what
//! moves the workspace to `running`. The bridge knows the VM by its address, so nothing here
//! carries a credential.
//!
//! `--root` puts every path under another directory (tests run the agent against a temp dir;
//! then the live-system steps, hostname, resize and the sshd wait, are skipped).

use clap::Parser;
use rigbox_types::agent::{AgentConfig, AgentReport, ReportedKey, BRIDGE_URL};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BEGIN: &str = "# BEGIN RIGBOX MANAGED KEYS";
const END: &str = "# END RIGBOX MANAGED KEYS";
/// Longest long poll (the bridge caps `wait` at 30 s).
const POLL_WAIT_SECS: u64 = 30;
/// The long poll while sshd is not up yet (its check runs between polls).
const NOT_READY_POLL_SECS: u64 = 5;

/// `rig agent`.
#[derive(Parser, Debug)]
#[command(
    name = "rig agent",
    bin_name = "rig agent",
    about = "The Rigbox guest agent (runs in every workspace VM as rigbox-agent.service)"
)]
pub struct AgentArgs {
    /// The node bridge.
    #[arg(long, default_value = BRIDGE_URL)]
    pub bridge_url: String,
    /// Directory every written path is under (tests); `/` in a VM.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Apply one configuration, report, and exit.
    #[arg(long)]
    pub once: bool,
    /// Wait for sshd before reporting ready even with another `--root` (tests; with `/` the
    /// agent always waits).
    #[arg(long, hide = true)]
    pub wait_sshd: bool,
    /// Where sshd is expected to greet.
    #[arg(long, hide = true, default_value = "127.0.0.1:22")]
    pub sshd_addr: std::net::SocketAddr,
    /// How long the first report waits for sshd, in seconds.
    #[arg(long, hide = true, default_value_t = 60)]
    pub sshd_wait_secs: u64,
}

impl AgentArgs {
    /// The defaults of the command line with another bridge and root (for tests).
    pub fn new(bridge_url: &str, root: &Path) -> Self {
        Self {
            bridge_url: bridge_url.to_owned(),
            root: root.to_owned(),
            once: false,
            wait_sshd: false,
            sshd_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 22)),
            sshd_wait_secs: 60,
        }
    }
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("rig agent: {msg}");
}

/// Entry point of `rig agent …`; returns the exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let args = match AgentArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => 0,
        Err(e) => {
            log(e);
            1
        }
    }
}

/// The agent loop: poll, apply, report; with `--once`, until the first configuration is
/// applied and reported. Returns only on a setup error or after `--once`.
pub async fn run(args: &AgentArgs) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(POLL_WAIT_SECS + 15))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let base = args.bridge_url.trim_end_matches('/');
    let live = args.root == Path::new("/");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    // The revision whose files are all written: the only one the agent ever claims.
    let mut applied: i64 = 0;
    let mut first = true;
    // Outside a VM (`--root`) there is no sshd to wait for, unless a test provides one.
    let check_sshd = live || args.wait_sshd;
    let mut ready = !check_sshd;
    let mut backoff = Backoff::default();
    loop {
        // Until sshd is up, poll briefly so that readiness is reported soon after it is.
        let wait = if ready {
            POLL_WAIT_SECS
        } else {
            NOT_READY_POLL_SECS
        };
        let url = format!("{base}/rig/v1/agent/config?revision={applied}&wait={wait}");
        let cfg = match http.get(&url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => None,
            Ok(r) if r.status().is_success() => match r.json::<AgentConfig>().await {
                Ok(c) => Some(c),
                Err(e) => {
                    log(format!("unreadable configuration: {e}"));
                    backoff.sleep().await;
                    continue;
                }
            },
            Ok(r) => {
                log(format!("bridge answered {}", r.status()));
                backoff.sleep().await;
                continue;
            }
            Err(e) => {
                log(format!("bridge unreachable: {e}"));
                backoff.sleep().await;
                continue;
            }
        };
        let mut failed = false;
        let mut report_now = false;
        let mut waited = false;
        if let Some(cfg) = &cfg {
            if apply(&args.root, cfg, live) {
                applied = cfg.revision;
            } else {
                failed = true;
            }
            report_now = true;
            if first && check_sshd {
                if live {
                    grow_root_filesystem();
                }
                let limit = Duration::from_secs(args.sshd_wait_secs);
                ready = wait_for_sshd(&args.root, args.sshd_addr, limit).await;
                waited = true;
                if !ready {
                    log(format!(
                        "sshd does not accept logins after {} s; reporting not ready",
                        limit.as_secs()
                    ));
                }
            }
            first = false;
        }
        // Late sshd: checked between polls once there is something applied to report.
        if !first && !ready && !waited && sshd_ready(&args.root, args.sshd_addr).await {
            ready = true;
            report_now = true;
        }
        if report_now {
            let report = AgentReport {
                revision: applied,
                boot_id: boot_id.clone(),
                ready,
                authorized_keys: managed_keys(&args.root),
                metrics: None,
                results: None,
            };
            send_report(&http, base, &report).await;
        }
        if args.once && !first {
            return Ok(());
        }
        if failed {
            // The bridge would hand the same configuration back at once: do not spin.
            backoff.sleep().await;
        } else {
            backoff = Backoff::default();
        }
    }
}

/// Posts `report` until the bridge takes it.
async fn send_report(http: &reqwest::Client, base: &str, report: &AgentReport) {
    let mut backoff = Backoff::default();
    loop {
        match http
            .post(format!("{base}/rig/v1/agent/report"))
            .json(report)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => log(format!("report answered {}", r.status())),
            Err(e) => log(format!("cannot report: {e}")),
        }
        backoff.sleep().await;
    }
}

/// Retry delays: 1 s, doubling up to 30 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_secs(1))
    }
}

impl Backoff {
    async fn sleep(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

/// Owner and group of `developer` from `<root>/etc/passwd` (1000 when absent).
fn developer_ids(root: &Path) -> (u32, u32) {
    std::fs::read_to_string(root.join("etc/passwd"))
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&"developer") && f.len() > 3)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
        })
        .unwrap_or((1000, 1000))
}

/// Writes `content` to `path` atomically (temp file in the same directory, fsync, rename) with
/// `mode` and, when given, owner `uid:gid`. The temp file is created exclusively (never through
/// a symlink someone left in a user-writable directory) and removed on failure.
fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rigbox-tmp"));
    // A leftover of an interrupted write (or anything else by that name) goes first.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        // The umask may have narrowed the mode at creation.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// `'…'` quoting for sh and systemd `EnvironmentFile=`.
pub(crate) fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// `authorized_keys` with its managed block replaced by `keys` (lines outside it kept).
fn merge_authorized_keys(existing: &str, keys: &[String]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        match line.trim() {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    out.push_str(BEGIN);
    out.push('\n');
    for k in key_lines(keys, "authorized key") {
        out.push_str(k);
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The usable lines of a key list: one line each, not empty, not a marker of the managed block
/// (anything else would let a bad entry break out of its place); the rest is logged and skipped.
fn key_lines<'a>(keys: &'a [String], what: &str) -> Vec<&'a str> {
    keys.iter()
        .map(|k| k.trim())
        .filter(|k| {
            let ok = !k.is_empty() && !k.contains(['\n', '\r']) && *k != BEGIN && *k != END;
            if !ok {
                log(format!("skipping a malformed {what} line"));
            }
            ok
        })
        .collect()
}

/// Whether `key` can be a variable name in sh and systemd (`[A-Za-z_][A-Za-z0-9_]*`).
fn is_var_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME='value'` lines (with `prefix`, e.g. `export `); names that are not variable names and
/// values with NUL (neither sh nor systemd can carry them) are logged and skipped.
fn assignments<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>, prefix: &str) -> String {
    vars.filter(|(k, v)| {
        let ok = is_var_name(k) && !v.contains('\0');
        if !ok {
            log(format!(
                "skipping the variable {k:?}: not writable to an env file"
            ));
        }
        ok
    })
    .map(|(k, v)| format!("{prefix}{k}={}\n", sh_quote(v)))
    .collect()
}

/// Reads a file that may not exist yet (`""` then); any other error is an error, so that a file
/// we cannot read is never replaced by one without its user-written lines.
fn read_existing(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        r => r,
    }
}

/// The keys currently in the managed block.
fn managed_keys(root: &Path) -> Vec<ReportedKey> {
    let text = std::fs::read_to_string(root.join("home/developer/.ssh/authorized_keys"))
        .unwrap_or_default();
    let mut inside = false;
    let mut keys = Vec::new();
    for line in text.lines() {
        match line.trim() {
            BEGIN => inside = true,
            END => inside = false,
            l if inside => keys.extend(ReportedKey::of_line(l)),
            _ => {}
        }
    }
    keys
}

/// Writes every file of the configuration; false if any write failed (each is logged).
pub fn apply(root: &Path, cfg: &AgentConfig, live: bool) -> bool {
    let dev = developer_ids(root);
    let mut ok = true;
    let mut step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            log(format!("cannot write {what}: {e}"));
            ok = false;
        }
    };
    let meta = serde_json::to_vec_pretty(&cfg.workspace).unwrap_or_default();
    step(
        "workspace.json",
        write_atomic(&root.join("etc/rigbox/workspace.json"), &meta, 0o644, None),
    );
    let env = assignments(
        cfg.env.iter().map(|e| (e.key.as_str(), e.value.as_str())),
        "",
    );
    step(
        "/etc/rigbox/env",
        write_atomic(
            &root.join("etc/rigbox/env"),
            env.as_bytes(),
            0o640,
            Some((0, dev.1)),
        ),
    );
    let gw: String = key_lines(&cfg.gateway_authorized_keys, "gateway key")
        .into_iter()
        .map(|k| format!("{k}\n"))
        .collect();
    step(
        "gateway_authorized_keys",
        write_atomic(
            &root.join("etc/rigbox/ssh/gateway_authorized_keys"),
            gw.as_bytes(),
            0o644,
            None,
        ),
    );
    let ssh_dir = root.join("home/developer/.ssh");
    let ak = ssh_dir.join("authorized_keys");
    // Nothing goes into a directory that failed its checks (e.g. a symlink to elsewhere).
    step(
        "authorized_keys",
        ensure_dir(&ssh_dir, 0o700, dev)
            .and_then(|()| read_existing(&ak))
            .and_then(|existing| {
                let merged = merge_authorized_keys(&existing, &cfg.authorized_keys);
                write_atomic(&ak, merged.as_bytes(), 0o600, Some(dev))
            }),
    );
    let rb_dir = root.join("home/developer/.rigbox");

    let proxy = assignments(
        cfg.proxy_env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str())),
        "export ",
    );
    step(
        "proxy.env",
        ensure_dir(&rb_dir, 0o755, dev).and_then(|()| {
            write_atomic(
                &rb_dir.join("proxy.env"),
                proxy.as_bytes(),
                0o644,
                Some(dev),
            )
        }),
    );
    step("hostname", set_hostname(root, &cfg.hostname, live));
    ok
}

/// Creates `dir` (a real directory, not a symlink) with `mode` and `owner`.
fn ensure_dir(dir: &Path, mode: u32, owner: (u32, u32)) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{} is a symlink; not following it",
            dir.display()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1))
}

/// `/etc/hostname`, the `127.0.1.1` line of `/etc/hosts` and, in a VM, the running hostname.
fn set_hostname(root: &Path, name: &str, live: bool) -> std::io::Result<()> {
    // Workspace names are DNS labels; anything else would corrupt /etc/hosts.
    let label = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !label {
        return Err(std::io::Error::other(format!(
            "{name:?} is not a valid hostname"
        )));
    }
    write_atomic(
        &root.join("etc/hostname"),
        format!("{name}\n").as_bytes(),
        0o644,
        None,
    )?;
    let hosts_path = root.join("etc/hosts");
    let mut hosts = read_existing(&hosts_path)?;
    if hosts.is_empty() {
        hosts = "127.0.0.1\tlocalhost\n".into();
    }
    let mut out: String = hosts
        .lines()
        .filter(|l| !l.starts_with("127.0.1.1"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("127.0.1.1\t{name}\n"));
    write_atomic(&hosts_path, out.as_bytes(), 0o644, None)?;
    if live {
        std::fs::write("/proc/sys/kernel/hostname", name)?;
    }
    Ok(())
}

/// The block device of the root filesystem: from the device number of `/` (the kernel calls it
/// `/dev/root` in the mount table, which is no device node).
fn root_device() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|name| format!("/dev/{name}"))
}

/// Grows the root filesystem to its disk (a no-op when it already fills it).
fn grow_root_filesystem() {
    let Some(dev) = root_device() else {
        log("root device not found; filesystem not grown");
        return;
    };
    match std::process::Command::new("resize2fs").arg(&dev).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => log(format!(
            "resize2fs {dev} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => log(format!("cannot run resize2fs: {e}")),
    }
}

/// Whether sshd answers on port 22 with its `SSH-` banner (a listening socket alone is not
/// enough: with socket activation the port accepts before any sshd runs).
async fn sshd_greets(addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"SSH-")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), probe).await,
        Ok(Some(true))
    )
}

/// Whether users can log in over SSH: sshd greets on port 22 and `/run/nologin` (present while
/// the system boots) is gone.
async fn sshd_ready(root: &Path, addr: std::net::SocketAddr) -> bool {
    !root.join("run/nologin").exists() && sshd_greets(addr).await
}

/// Waits up to `limit` until users can log in over SSH; false if they still cannot.
async fn wait_for_sshd(root: &Path, addr: std::net::SocketAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if sshd_ready(root, addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_block_is_replaced_and_the_rest_kept() {
        let before = format!("ssh-ed25519 AAAA mine\n{BEGIN}\nold key\n{END}\n# my note\n");
        let after = merge_authorized_keys(&before, &["new key".into()]);
        assert_eq!(
            after,
            format!("ssh-ed25519 AAAA mine\n# my note\n{BEGIN}\nnew key\n{END}\n")
        );
        // Idempotent.
        assert_eq!(merge_authorized_keys(&after, &["new key".into()]), after);
    }

    #[test]
    fn variable_names_and_key_lines_are_checked() {
        assert!(is_var_name("OPENAI_API_KEY") && is_var_name("_x1"));
        assert!(!is_var_name("1X") && !is_var_name("A-B") && !is_var_name(""));
        let keys = vec![
            " ssh-ed25519 AAAA a ".to_owned(),
            String::new(),
            format!("k\n{END}"),
            END.to_owned(),
        ];
        assert_eq!(key_lines(&keys, "test"), ["ssh-ed25519 AAAA a"]);
        assert_eq!(
            assignments(
                [("A", "x"), ("B C", "y"), ("D", "n\0l")].into_iter(),
                "export "
            ),
            "export A='x'\n"
        );
    }

    #[test]
    fn env_values_are_quoted_for_sh() {
        assert_eq!(sh_quote("it's $HOME"), r"'it'\''s $HOME'");
    }
}
