//! The SSH gateway end to end: the real OpenSSH client (ssh, scp, sftp, under tmux for the
//! interactive shell) against `rigboxd`'s gateway on 127.0.0.1, relaying to a real Debian VM
//! under QEMU. Everything a user does with `ssh <name>-<id>@<region-host>`.
//!
//! Needs what the VM suites need (`scripts/test` provides it and sets `RIGBOX_VM_TESTS=1`),
//! plus tmux.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{enabled, Vms};

/// A user's side: a key, a known_hosts file that pins the gateway, and the ssh options.
struct User {
    key: PathBuf,
    known_hosts: PathBuf,
    port: u16,
}

impl User {
    fn opts(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-i",
            &self.key.display().to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn ssh(&self, user: &str, extra: &[&str], cmd: &str) -> Output {
        Command::new("ssh")
            .args(self.opts())
            .args(["-p", &self.port.to_string()])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// `ssh user cmd` that must succeed; returns stdout.
    fn run(&self, user: &str, cmd: &str) -> String {
        let out = self.ssh(user, &[], cmd);
        assert!(
            out.status.success(),
            "ssh {user} {cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn scp(&self, extra: &[&str], from: &str, to: &str) {
        let out = Command::new("scp")
            .args(self.opts())
            .args(["-P", &self.port.to_string()])
            .args(extra)
            .args([from, to])
            .output()
            .expect("run scp");
        assert!(
            out.status.success(),
            "scp {from} {to} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public.trim().to_owned())
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tmux server of its own (killed on drop), for driving an interactive ssh.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits until the pane shows `want`.
    fn expect(&self, want: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(want) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the terminal never showed {want:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_through_the_gateway_like_a_user() {
    if !enabled() {
        return;
    }
    let vms = Vms::start().await;
    let port = vms.daemon.ssh_port();
    assert_ne!(port, 0, "ready.json publishes the gateway port");
    let dir = tempfile::tempdir().expect("tempdir");
    let id = vms.create("gw").await;
    let ws = vms.start_ws(&id).await;

    // The ssh block tells the user everything; the host key the gateway presents is the one
    // it publishes, so the user can pin it.
    let ssh = &ws["ssh"];
    let user = format!("gw-{}", id.trim_start_matches("ws-"));
    assert_eq!(ssh["user"], user.as_str(), "{ssh}");
    assert_eq!(ssh["port"], port, "{ssh}");
    assert_eq!(
        ssh["command"],
        format!("ssh {user}@local.rigbox.localhost -p {port}").as_str()
    );
    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, &scan.stdout).expect("known_hosts");
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&known_hosts)
        .output()
        .expect("ssh-keygen -lf");
    let fp = String::from_utf8_lossy(&fp.stdout).into_owned();
    let published = ssh["host_key_fingerprints"][0]
        .as_str()
        .expect("fingerprint");
    assert!(
        fp.contains(published),
        "presented {fp:?}, published {published}"
    );
    let me = User {
        key: vms.key.clone(),
        known_hosts: known_hosts.clone(),
        port,
    };

    // Commands: the VM answers, as developer, with exit codes and stderr kept apart.
    assert_eq!(me.run(&user, "whoami; hostname").trim(), "developer\ngw");
    let out = me.ssh(&user, &[], "echo to-out; echo to-err >&2; exit 7");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(stderr(&out), "to-err\n");
    // stdin reaches the command and its EOF ends it.
    let mut child = Command::new("ssh")
        .args(me.opts())
        .args([
            "-p",
            &port.to_string(),
            &format!("{user}@127.0.0.1"),
            "wc -c",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ssh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&[b'x'; 100_000]).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    // `rig ssh` runs the system ssh with the workspace's target (its `*.localhost` host goes
    // to the loopback address) and exits with the session's status.
    let rig = |args: &[&str]| {
        Command::new(rigbox_testkit::workspace_bin("rig"))
            .args(args)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("RIGBOX_MODE", "local")
            .env("RIGBOX_API_URL", vms.daemon.api_url())
            .env("RIGBOX_API_KEY", &vms.token)
            .stdin(Stdio::null())
            .output()
            .expect("run rig")
    };
    let info = rig(&["workspace", "ssh-info", "gw"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains(published) && text.contains("rig ssh gw"),
        "{text}"
    );
    let key = me.key.display().to_string();
    let out = rig(&[
        "ssh",
        "gw",
        "-i",
        &key,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "echo via-rig; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-rig\n");

    // An interactive shell with a pty: typing, the window size and its changes, Ctrl-C, and
    // the exit status of the session.
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let ssh_cmd = format!(
        "ssh {} -p {port} -t {user}@127.0.0.1; echo SESSION-ENDED=$?; sleep 600",
        me.opts().join(" ")
    );
    assert!(tmux
        .tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            &ssh_cmd
        ])
        .status
        .success());
    tmux.expect("developer@gw");
    tmux.send(&[
        "[ -n \"$TERM\" ] && echo size=$(stty size) sum=$((6*7))",
        "Enter",
    ]);
    tmux.expect("size=40 120 sum=42");
    assert!(tmux
        .tmux(&["resize-window", "-t", "t", "-x", "100", "-y", "30"])
        .status
        .success());
    tmux.send(&["clear; echo now=$(stty size)", "Enter"]);
    tmux.expect("now=30 100");
    tmux.send(&["sleep 300", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.send(&["C-c"]);
    tmux.send(&["echo interrupted-ok", "Enter"]);
    tmux.expect("interrupted-ok");
    tmux.send(&["exit 3", "Enter"]);
    tmux.expect("SESSION-ENDED=3");
    drop(tmux);

    // 100 MiB each way with scp (SFTP protocol, the default), checksums equal.
    let big = dir.path().join("big.bin");
    let out = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"])
        .arg(format!("of={}", big.display()))
        .status()
        .expect("dd");
    assert!(out.success());
    let remote = format!("{user}@127.0.0.1:/home/developer/big.bin");
    let t = Instant::now();
    me.scp(&[], &big.display().to_string(), &remote);
    let up = t.elapsed();
    let back = dir.path().join("back.bin");
    let t = Instant::now();
    me.scp(&[], &remote, &back.display().to_string());
    eprintln!("scp 100 MiB: up {up:?}, down {:?}", t.elapsed());
    assert_eq!(
        sha256(&big),
        sha256(&back),
        "the round trip kept every byte"
    );
    assert_eq!(
        me.run(&user, "sha256sum /home/developer/big.bin | cut -d' ' -f1")
            .trim(),
        sha256(&big)
    );
    // The legacy scp protocol rides on exec.
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "legacy scp\n").expect("write");
    me.scp(
        &["-O"],
        &small.display().to_string(),
        &format!("{user}@127.0.0.1:/tmp/legacy.txt"),
    );
    assert_eq!(me.run(&user, "cat /tmp/legacy.txt"), "legacy scp\n");

    // sftp put and get.
    let batch = dir.path().join("batch");
    let got = dir.path().join("got.txt");
    std::fs::write(
        &batch,
        format!(
            "put {} sftp-put.txt\nget /tmp/legacy.txt {}\n",
            small.display(),
            got.display()
        ),
    )
    .expect("batch");
    let out = Command::new("sftp")
        .args(me.opts())
        .args(["-P", &port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{user}@127.0.0.1"))
        .output()
        .expect("sftp");
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert_eq!(me.run(&user, "cat sftp-put.txt"), "legacy scp\n");
    assert_eq!(std::fs::read_to_string(&got).expect("got"), "legacy scp\n");

    // ssh -L to a port inside the VM.
    me.run(
        &user,
        "mkdir -p /tmp/www && echo hello-from-the-vm > /tmp/www/hello.txt && \
         cd /tmp/www && (setsid python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &)",
    );
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut forward = Command::new("ssh")
        .args(me.opts())
        .args([
            "-p",
            &port.to_string(),
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("{local}:127.0.0.1:8000"),
            &format!("{user}@127.0.0.1"),
        ])
        .spawn()
        .expect("ssh -L");
    let start = Instant::now();
    let body = loop {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{local}/hello.txt"))
            .output()
            .expect("curl");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ssh -L never served the VM's page"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(body, "hello-from-the-vm\n");

    // Remote forwarding is refused, and the user is told.
    let out = me.ssh(
        &user,
        &["-o", "ExitOnForwardFailure=yes", "-R", "9999:127.0.0.1:22"],
        "true",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );

    // 20 sessions at once.
    let many: Vec<_> = (0..20)
        .map(|i| {
            Command::new("ssh")
                .args(me.opts())
                .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1")])
                .arg(format!("sleep 2; echo session-{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ssh")
        })
        .collect();
    for (i, child) in many.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "session {i}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("session-{i}")
        );
    }

    // Refusals all read the same, whatever the reason.
    let denied = |out: &Output, what: &str| {
        assert_eq!(out.status.code(), Some(255), "{what}: {}", stderr(out));
        assert!(
            stderr(out).contains("Permission denied (publickey)"),
            "{what}: {}",
            stderr(out)
        );
    };
    let (stranger_key, _) = keygen(dir.path(), "stranger");
    let stranger = User {
        key: stranger_key,
        known_hosts: known_hosts.clone(),
        port,
    };
    denied(
        &stranger.ssh(&user, &[], "true"),
        "a key not on the account",
    );
    denied(
        &me.ssh(
            &format!("other-{}", id.trim_start_matches("ws-")),
            &[],
            "true",
        ),
        "a wrong name",
    );
    denied(&me.ssh("gw-zzzzzzzz", &[], "true"), "an unknown workspace");

    // A key works from the next connection after it is added, and stops after it is removed.
    let (second_key, second_pub) = keygen(dir.path(), "second");
    let second = User {
        key: second_key,
        known_hosts: known_hosts.clone(),
        port,
    };
    let (code, added) = vms
        .api
        .post(
            "/ssh-keys",
            json!({"name": "second", "public_key": second_pub}),
        )
        .await;
    assert_eq!(code, 201, "{added}");
    assert_eq!(second.run(&user, "echo second-ok").trim(), "second-ok");
    let (code, _) = vms
        .api
        .delete(&format!("/ssh-keys/{}", added["id"].as_str().expect("id")))
        .await;
    assert_eq!(code, 204);
    denied(&second.ssh(&user, &[], "true"), "a removed key");

    // Another user's workspace: neither key opens the other's workspace.
    let token = vms
        .daemon
        .create_user("other@example.com", rigbox_testkit::PASSWORD)
        .await
        .expect("second user");
    let other_api = rigbox_testkit::Client::new(&vms.daemon.api_url(), Some(token));
    let (other_key, other_pub) = keygen(dir.path(), "other");
    let (code, body) = other_api
        .post(
            "/ssh-keys",
            json!({"name": "other", "public_key": other_pub}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let other = User {
        key: other_key,
        known_hosts: known_hosts.clone(),
        port,
    };
    let (code, theirs) = other_api
        .post("/workspaces", json!({"name": "theirs"}))
        .await;
    assert_eq!(code, 201, "{theirs}");
    let their_user = theirs["ssh"]["user"].as_str().expect("user").to_owned();
    denied(
        &me.ssh(&their_user, &[], "true"),
        "another user's workspace",
    );
    denied(
        &other.ssh(&user, &[], "true"),
        "someone else's key on my workspace",
    );

    // The gateway logs each connection with its user, workspace and bytes.
    let log = vms.daemon.log();
    let line = log
        .lines()
        .filter(|l| l.contains("ssh connection closed") && l.contains(&id))
        .find_map(|l| {
            let n: u64 = l
                .split("bytes_in=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (n >= 100 << 20).then_some(l)
        });
    assert!(
        line.is_some(),
        "no log line shows the 100 MiB upload:\n{log}"
    );

    // Stopping the workspace ends the sessions in it; afterwards a session is accepted, says
    // why on stderr and exits 1.
    let mut open = Command::new("ssh")
        .args(me.opts())
        .args([
            "-p",
            &port.to_string(),
            &format!("{user}@127.0.0.1"),
            "echo started; sleep 600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh");
    {
        use std::io::BufRead;
        let mut line = String::new();
        let mut out = std::io::BufReader::new(open.stdout.as_mut().expect("stdout"));
        out.read_line(&mut line).expect("read");
        assert_eq!(line, "started\n");
    }
    vms.stop_ws(&id).await;
    let start = Instant::now();
    let ended = loop {
        if let Some(status) = open.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the session outlived its workspace"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!ended.success());
    let out = me.ssh(&user, &[], "true");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "workspace gw is stopped; start it with: rig workspace start gw"
    );
}
