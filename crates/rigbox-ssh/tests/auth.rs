//! The gateway's authentication and refusals with the real OpenSSH client, without a VM: the
//! directory is a table here, so these run anywhere `ssh` and `ssh-keygen` exist.

use rigbox_ssh::{Directory, FailureLimit, Gateway, GatewayConfig};
use rigbox_types::api::WorkspaceStatus;
use rigbox_types::gateway::{parse_ssh_user, SshRoute};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// One workspace `demo-abcdefgh`, stopped, whose owner has one key.
struct Table {
    fingerprint: String,
}

#[async_trait::async_trait]
impl Directory for Table {
    async fn route(&self, user: &str, fingerprint: &str) -> Result<Option<SshRoute>, String> {
        let Some((name, id)) = parse_ssh_user(user) else {
            return Ok(None);
        };
        Ok(
            (name == "demo" && id.as_str() == "ws-abcdefgh" && fingerprint == self.fingerprint)
                .then(|| SshRoute {
                    workspace_id: id,
                    workspace_name: "demo".into(),
                    status: WorkspaceStatus::Stopped,
                    node_id: "node-1".into(),
                    owner_email: "me@example.com".into(),
                }),
        )
    }

    async fn connect(&self, _route: &SshRoute) -> std::io::Result<TcpStream> {
        Err(std::io::Error::other("no VM in this test"))
    }
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    key
}

fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen -lf");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}

struct Env {
    _dir: tempfile::TempDir,
    good: PathBuf,
    bad: PathBuf,
    port: u16,
}

impl Env {
    async fn start(limit: FailureLimit) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = keygen(dir.path(), "good");
        let bad = keygen(dir.path(), "bad");
        let host = rigbox_ssh::load_key(&keygen(dir.path(), "host")).expect("host key");
        let client = rigbox_ssh::load_key(&keygen(dir.path(), "client")).expect("client key");
        let mut cfg = GatewayConfig::new(host, client);
        cfg.auth_failures = limit;
        let gw = Gateway::new(
            cfg,
            Arc::new(Table {
                fingerprint: fingerprint(&good),
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _tx = _tx;
            gw.serve(listener, rx).await
        });
        Self {
            _dir: dir,
            good,
            bad,
            port,
        }
    }

    /// `ssh -i key user@127.0.0.1 true`, off the async runtime's threads.
    async fn ssh(&self, key: &Path, user: &str) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(key)
            .args([
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
                "-p",
                &self.port.to_string(),
                &format!("{user}@127.0.0.1"),
                "true",
            ])
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("run ssh"))
            .await
            .expect("join")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_denied(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(255), "{what}: {}", stderr(o));
    assert!(
        stderr(o).contains("Permission denied (publickey)"),
        "{what}: {}",
        stderr(o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_workspace_says_why_and_exits_1() {
    let env = Env::start(FailureLimit::default()).await;
    let out = env.ssh(&env.good, "demo-abcdefgh").await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "workspace demo is stopped; start it with: rig workspace start demo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_look_alike_and_repeated_failures_lock_the_address_out() {
    let env = Env::start(FailureLimit {
        max: 3,
        window: Duration::from_secs(60),
    })
    .await;
    assert_denied(
        &env.ssh(&env.bad, "demo-abcdefgh").await,
        "a key not on the account",
    );
    assert_denied(&env.ssh(&env.good, "other-abcdefgh").await, "a wrong name");
    assert_denied(&env.ssh(&env.good, "demo").await, "no suffix");
    // Three failures used up the allowance: even the right key is refused now.
    assert_denied(
        &env.ssh(&env.good, "demo-abcdefgh").await,
        "the right key after too many failures",
    );
}
