//! The built `rig` binary against a running `rigboxd up --vmm sim`: what a user sees on stdout,
//! stderr and in exit codes. Each test has its own daemon, its own config directory
//! (`XDG_CONFIG_HOME`) and a fast poll interval.

use rigbox_testkit::{Client, Daemon, PASSWORD};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// One user's CLI environment: its own config dir and credentials.
struct Rig {
    home: tempfile::TempDir,
    api_url: String,
    key: Option<String>,
}

impl Rig {
    fn new(d: &Daemon, key: Option<String>) -> Self {
        Self {
            home: tempfile::tempdir().expect("temp dir"),
            api_url: d.api_url(),
            key,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rig"));
        c.args(args)
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env("RIGBOX_API_URL", &self.api_url)
            .env("RIGBOX_POLL_INTERVAL_MS", "100")
            .env("RIGBOX_MODE", "local")
            .env_remove("RIGBOX_API_KEY")
            .env_remove("RIGBOX_BRIDGE_URL")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(k) = &self.key {
            c.env("RIGBOX_API_KEY", k);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("rig runs")
    }

    /// Runs with `--output json` and parses stdout.
    fn json(&self, args: &[&str]) -> (i32, Value, String) {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.run(&a);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// NDJSON events of a waiting command.
    fn events(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.run(&a);
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
            .collect();
        (out.status.code().unwrap_or(-1), events)
    }
}

async fn setup() -> (Daemon, Rig) {
    let d = Daemon::start().await.expect("rigboxd starts");
    let key = d
        .create_user("cli@example.com", PASSWORD)
        .await
        .expect("user");
    let rig = Rig::new(&d, Some(key));
    (d, rig)
}

#[tokio::test]
async fn not_signed_in_exits_2_and_public_commands_work() {
    let d = Daemon::start().await.expect("rigboxd starts");
    let rig = Rig::new(&d, None);
    let (code, _, stderr) = rig.json(&["whoami"]);
    assert_eq!(code, 2);
    let err: Value = serde_json::from_str(&stderr).expect("json error on stderr");
    assert_eq!(err["error"]["code"], "not_logged_in");
    let (code, t, _) = rig.json(&["templates", "ls"]);
    assert_eq!(code, 0);
    let ids: Vec<&str> = t["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["base", "dev"]);
    let (code, c, _) = rig.json(&["capacity"]);
    assert_eq!(code, 0);
    assert_eq!(c["available"], true);
    let human = rig.run(&["capacity"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("available: yes"));
    // A wrong key is 401 → exit 2.
    let bad = Rig::new(
        &d,
        Some("rb_0000000000000000000000000000000000000000".into()),
    );
    assert_eq!(bad.json(&["whoami"]).0, 2);
}

#[tokio::test]
async fn spawn_streams_events_and_lifecycle_commands_wait() {
    let (_d, rig) = setup().await;
    let (code, events) = rig.events(&[
        "workspace",
        "spawn",
        "--name",
        "Demo Box",
        "--env",
        "GREETING=hi",
    ]);
    assert_eq!(code, 0, "{events:?}");
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"created"));
    assert!(names.contains(&"ready"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"));
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "status")
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert!(statuses.contains(&"running"), "{statuses:?}");
    let done = events.last().expect("done");
    assert_eq!(done["result"]["status"], "running");
    assert_eq!(done["result"]["name"], "demo-box");

    // ls with --query
    let (code, ids, _) = rig.json(&["ws", "ls", "--query", "items[].name"]);
    assert_eq!(code, 0);
    assert_eq!(ids, serde_json::json!(["demo-box"]));

    // start on a running workspace: already running, exit 0.
    let out = rig.run(&["ws", "start", "demo-box"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already running"));

    // stop waits for stopped.
    let (code, events) = rig.events(&["ws", "stop", "demo-box"]);
    assert_eq!(code, 0);
    assert_eq!(events.last().expect("done")["result"]["status"], "stopped");
    let out = rig.run(&["ws", "stop", "demo-box"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already stopped"));

    // Resize while stopped prints old -> new.
    let out = rig.run(&["ws", "resize", "demo-box", "--disk", "4096"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3072 -> 4096"));
    let (_, w, _) = rig.json(&["ws", "get", "demo-box"]);
    assert_eq!(w["disk_size_mb"], 4096);

    // Restarting a stopped workspace is a 409 → exit 1; a streaming command reports it as the
    // last NDJSON line.
    let (code, events) = rig.events(&["ws", "restart", "demo-box"]);
    assert_eq!(code, 1);
    let last = events.last().expect("error event");
    assert_eq!(
        (last["event"].as_str(), last["code"].as_str()),
        (Some("error"), Some("invalid_state"))
    );

    // rm needs --yes without a TTY.
    let out = rig.run(&["ws", "rm", "demo-box"]);
    assert_eq!(out.status.code(), Some(1));
    let out = rig.run(&["ws", "rm", "demo-box", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deleting demo-box"));
}

#[tokio::test]
async fn exit_codes_for_not_found_and_quota() {
    let (_d, rig) = setup().await;
    assert_eq!(rig.json(&["ws", "get", "nope"]).0, 3);
    assert_eq!(rig.json(&["ws", "new", "--name", "one", "--no-wait"]).0, 0);
    assert_eq!(rig.json(&["ws", "new", "--name", "two", "--no-wait"]).0, 0);
    let (code, _, stderr) = rig.json(&["ws", "new", "--name", "three", "--no-wait"]);
    assert_eq!(code, 4, "free plan allows 2 workspaces");
    let err: Value = serde_json::from_str(&stderr).expect("json error");
    assert_eq!(err["error"]["details"]["limit"], "max_vms");
    // Human errors go to stderr as `error: <message>`.
    let out = rig.run(&["ws", "new", "--name", "three", "--no-wait"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: Plan limit max_vms"));
    // Both positional and --workspace is a usage error (exit 1); so is an unknown flag.
    assert_eq!(
        rig.run(&["ws", "get", "one", "-w", "two"]).status.code(),
        Some(1)
    );
    assert_eq!(rig.run(&["ws", "get", "--bogus"]).status.code(), Some(1));
}

#[tokio::test]
async fn env_values_are_masked_unless_revealed() {
    let (_d, rig) = setup().await;
    assert_eq!(
        rig.json(&["ws", "new", "--name", "envy", "--env", "SECRET=s3cr3t"])
            .0,
        0
    );
    let (code, ls, _) = rig.json(&["ws", "env", "ls", "envy"]);
    assert_eq!(code, 0);
    assert_eq!(ls["items"][0]["key"], "SECRET");
    assert_eq!(ls["items"][0]["value"], "********");
    let (_, ls, _) = rig.json(&["ws", "env", "ls", "envy", "--reveal"]);
    assert_eq!(ls["items"][0]["value"], "s3cr3t");
    let out = rig.run(&[
        "ws", "env", "get", "envy", "SECRET", "--output", "text", "--query", "value",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "********");
    let out = rig.run(&["ws", "env", "get", "envy", "SECRET", "--reveal"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s3cr3t");
    assert_eq!(
        rig.run(&["ws", "env", "get", "envy", "MISSING"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(rig.json(&["ws", "env", "set", "envy", "B=2", "C=3"]).0, 0);
    assert_eq!(rig.json(&["ws", "env", "unset", "envy", "SECRET"]).0, 0);
    let (_, ls, _) = rig.json(&[
        "ws",
        "env",
        "ls",
        "envy",
        "--reveal",
        "--query",
        "items[].key",
    ]);
    assert_eq!(ls, serde_json::json!(["B", "C"]));
}

fn keygen(dir: &Path, name: &str, kind: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(kind)
        .args(["-N", "", "-q", "-C", "me@laptop", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    path
}

#[tokio::test]
async fn ssh_and_api_keys() {
    let (_d, rig) = setup().await;
    let key = keygen(rig.home.path(), "id_ed25519", &["-t", "ed25519"]);
    let pubfile = key.with_extension("pub");
    let (code, k, stderr) =
        rig.json(&["ssh-key", "add", "--file", pubfile.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(k["name"], "me@laptop");
    let lf = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pubfile)
        .output()
        .expect("ssh-keygen -l");
    let fp = String::from_utf8_lossy(&lf.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(k["fingerprint"], fp.as_str());
    // A private key file is refused locally.
    assert_eq!(
        rig.run(&["ssh-key", "add", "--file", key.to_str().expect("utf-8")])
            .status
            .code(),
        Some(1)
    );
    // The default file is ~/.ssh/id_ed25519.pub; adding it again is a duplicate (409 → 1).
    std::fs::create_dir_all(rig.home.path().join(".ssh")).expect("mkdir");
    std::fs::copy(&pubfile, rig.home.path().join(".ssh/id_ed25519.pub")).expect("copy");
    let (code, _, stderr) = rig.json(&["ssh-key", "add"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("duplicate_key"), "{stderr}");
    let (_, ls, _) = rig.json(&["ssh-key", "ls"]);
    assert_eq!(ls["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rig.json(&["ssh-key", "rm", "me@laptop"]).0, 0);
    assert_eq!(rig.json(&["ssh-key", "rm", "me@laptop"]).0, 3);

    // API keys: create shows the key once; the new key works; rm by name revokes it.
    let (code, created, _) = rig.json(&["api-key", "create", "--name", "ci"]);
    assert_eq!(code, 0);
    let new_key = created["key"].as_str().expect("key").to_owned();
    assert!(new_key.starts_with("rb_") && new_key.len() == 43);
    let (_, ls, _) = rig.json(&["api-key", "ls"]);
    assert!(ls["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|k| k.get("key").is_none()));
    let other = Rig {
        home: tempfile::tempdir().expect("dir"),
        api_url: rig.api_url.clone(),
        key: Some(new_key),
    };
    assert_eq!(other.json(&["whoami"]).1["email"], "cli@example.com");
    assert_eq!(rig.json(&["api-key", "rm", "ci"]).0, 0);
    assert_eq!(
        other.json(&["whoami"]).0,
        2,
        "revoked key signs out at once"
    );
}

#[tokio::test]
async fn token_login_saves_config_and_logout_forgets_it() {
    let (d, rig) = setup().await;
    let key = rig.key.clone().expect("key");
    let fresh = Rig::new(&d, None);
    let mut c = fresh.cmd(&["login", "--import-token"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().expect("rig runs");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{key}\n").as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("rig exits");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Logged in as cli@example.com"));
    let cfg_path = fresh.home.path().join("rigbox/config.json");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("config written"))
            .expect("json");
    assert_eq!(cfg["credential_source"], "token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg_path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(fresh.json(&["whoami"]).1["email"], "cli@example.com");
    // A bad token is refused with exit 2 and nothing saved over the good one.
    let mut c = fresh.cmd(&["login", "--import-token"]);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().expect("rig runs");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"rb_wrong\n")
            .expect("write");
    }
    assert_eq!(child.wait().expect("exit").code(), Some(2));
    let out = fresh.run(&["logout"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Logged out"));
    assert_eq!(fresh.json(&["whoami"]).0, 2);
}

#[tokio::test]
async fn raw_api_limits_status_and_completions() {
    let (_d, rig) = setup().await;
    let out = rig.run(&["api", "GET", "/api/v1/workspaces"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("body unchanged");
    assert_eq!(v["items"], serde_json::json!([]));
    assert_eq!(
        rig.run(&["api", "GET", "/workspaces/ws-zzzzzzzz"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        rig.run(&["api", "get", "/workspaces", "--body", "-"])
            .status
            .code(),
        Some(1)
    );
    let (code, l, _) = rig.json(&["limits"]);
    assert_eq!(code, 0);
    assert_eq!(l["plan"], "free");
    assert_eq!(l["limits"]["max_vms"], 2);
    let out = rig.run(&["limits", "--output", "table"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LIMIT"));
    let (code, s, _) = rig.json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(s["email"], "cli@example.com");
    let out = rig.run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("complete"));
    let out = rig.run(&["-V"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rig {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn failed_start_prints_the_failure_and_retry_hint() {
    let d = Daemon::start_with_config(
        "[sim]\nprovision_ms = 20\nboot_ms = 100\nstop_ms = 20\nfail_launch = [\"broken\"]\n",
    )
    .await
    .expect("rigboxd");
    let key = d
        .create_user("f@example.com", PASSWORD)
        .await
        .expect("user");
    let rig = Rig::new(&d, Some(key));
    let (code, events) = rig.events(&["ws", "spawn", "--name", "broken"]);
    assert_eq!(code, 1);
    let last = events.last().expect("error event");
    assert_eq!(last["event"], "error");
    assert_eq!(last["code"], "workspace_failed");
    let msg = last["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("boot_failed") && msg.contains("rig workspace retry broken"),
        "{msg}"
    );
    // get shows the failure block with the hint; a human wait failure goes to stderr.
    let out = rig.run(&["ws", "get", "broken"]);
    assert!(stdout(&out).contains("Failure:"), "{}", stdout(&out));
    let out = rig.run(&["ws", "retry", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: workspace broken failed"),
        "{}",
        stderr(&out)
    );
    let (_, w, _) = rig.json(&["ws", "get", "broken"]);
    assert_eq!(w["failure"]["attempts"], 2);
}

#[tokio::test]
async fn workspace_mode_refuses_local_commands() {
    let d = Daemon::start().await.expect("rigboxd");
    let rig = Rig::new(&d, None);
    let mut c = rig.cmd(&["ws", "ls"]);
    c.env("RIGBOX_MODE", "workspace")
        .env("RIGBOX_BRIDGE_URL", "http://127.0.0.1:9");
    let out = c.output().expect("rig runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "rig workspace ls is not available inside a workspace; run it on your own machine"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A console session token (device login is approved from the console, never with a key).
async fn console_session(d: &Daemon, email: &str) -> Client {
    let (code, s) = Client::new(&d.api_url(), None)
        .post("/auth/login", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(code, 200, "{s}");
    Client::new(&d.api_url(), s["token"].as_str().map(str::to_owned))
}

/// Starts `rig login --no-browser --output json` and returns it with its first NDJSON event.
fn start_device_login(rig: &Rig) -> (Child, BufReader<std::process::ChildStdout>, Value) {
    let mut c = rig.cmd(&["login", "--no-browser", "--output", "json"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("rig runs");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first event");
    let ev: Value = serde_json::from_str(&line).expect("NDJSON line");
    (child, out, ev)
}

fn rest_events(out: BufReader<std::process::ChildStdout>) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("NDJSON line"))
        .collect()
}

#[tokio::test]
async fn device_login_approved_then_logout_revokes_the_key() {
    let (d, _) = setup().await;
    let rig = Rig::new(&d, None);
    let (child, out, ev) = start_device_login(&rig);
    assert_eq!(ev["event"], "session_created");
    let code = ev["code"].as_str().expect("code").to_owned();
    let user_code = ev["user_code"].as_str().expect("user code");
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert!(ev["verification_url"]
        .as_str()
        .expect("url")
        .contains(&code));

    let console = console_session(&d, "cli@example.com").await;
    let (status, body) = console
        .post(&format!("/auth/cli-session/{code}/approve"), json!({}))
        .await;
    assert_eq!(status, 204, "{body}");

    let events = rest_events(out);
    let output = child.wait_with_output().expect("rig exits");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names, ["approved", "saved", "done"]);
    assert_eq!(events[0]["email"], "cli@example.com");
    assert_eq!(events[2]["result"]["email"], "cli@example.com");

    let cfg_path = rig.home.path().join("rigbox/config.json");
    assert_eq!(
        events[1]["path"].as_str(),
        Some(cfg_path.to_str().expect("utf-8"))
    );
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("config")).expect("json");
    assert_eq!(cfg["credential_source"], "device_login");
    assert_eq!(cfg["email"], "cli@example.com");
    assert_eq!(cfg["api_url"], d.api_url());
    let key = cfg["api_key"].as_str().expect("key").to_owned();
    assert!(cfg["api_key_id"].is_string());

    // The saved key works without RIGBOX_API_KEY; whoami reports the API key.
    let (code, me, _) = rig.json(&["whoami"]);
    assert_eq!(code, 0);
    assert_eq!(me["auth_method"], "api_key");
    assert_eq!(me["api_key_id"], cfg["api_key_id"]);

    // Logout revokes a device-login key on the server.
    let out = rig.run(&["logout"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), "Logged out");
    assert_eq!(rig.json(&["whoami"]).0, 2);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("config")).expect("json");
    assert!(cfg.get("api_key").is_none());
    let revoked = Rig::new(&d, Some(key));
    assert_eq!(revoked.json(&["whoami"]).0, 2, "the key is revoked");
}

#[tokio::test]
async fn device_login_denied_exits_2() {
    let (d, _) = setup().await;
    let rig = Rig::new(&d, None);
    let (child, out, ev) = start_device_login(&rig);
    let code = ev["code"].as_str().expect("code").to_owned();
    let console = console_session(&d, "cli@example.com").await;
    let (status, _) = console
        .post(&format!("/auth/cli-session/{code}/deny"), json!({}))
        .await;
    assert_eq!(status, 204);
    let events = rest_events(out);
    let output = child.wait_with_output().expect("rig exits");
    assert_eq!(output.status.code(), Some(2));
    let last = events.last().expect("error event");
    assert_eq!(last["event"], "error");
    assert_eq!(last["code"], "login_denied");
    assert!(!rig.home.path().join("rigbox/config.json").exists());
}

#[tokio::test]
async fn ctrl_c_exits_130() {
    let d = Daemon::start().await.expect("rigboxd");
    let rig = Rig::new(&d, None);
    let mut c = rig.cmd(&["login", "--no-browser"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("rig runs");
    // Wait until the session exists (the URL is printed), then interrupt.
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("http") {
        let mut l = String::new();
        assert!(err.read_line(&mut l).expect("read") > 0, "{seen}");
        seen.push_str(&l);
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    assert_eq!(child.wait().expect("exits").code(), Some(130));
}

#[tokio::test]
async fn formats_verbose_and_config_defaults() {
    let (_d, rig) = setup().await;
    assert_eq!(
        rig.json(&["ws", "new", "--name", "fmt", "--env", "TOKEN=abc"])
            .0,
        0
    );
    // text: one line per item, tab-separated, no header.
    let out = rig.run(&["ws", "ls", "--output", "text"]);
    let line = stdout(&out);
    let cells: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(cells[1..4], ["fmt", "provisioned", "base"]);
    assert!(cells[0].starts_with("ws-"));
    // table: a header; human lists are tables too.
    let out = rig.run(&["ws", "ls", "--output", "table"]);
    assert!(stdout(&out).starts_with("ID "));
    let out = rig.run(&["ws", "ls"]);
    assert!(stdout(&out).contains("STATUS"));
    // yaml masks env values like every format.
    let out = rig.run(&["ws", "env", "ls", "fmt", "--output", "yaml"]);
    let y = stdout(&out);
    assert!(
        y.contains("value: '********'") || y.contains("value: \"********\""),
        "{y}"
    );
    assert!(!y.contains("abc"));
    let out = rig.run(&["ws", "env", "ls", "fmt", "--output", "table"]);
    assert!(!stdout(&out).contains("abc"));
    // ssh-info in JSON for scripts.
    let (code, info, _) = rig.json(&["ws", "ssh-info", "-w", "fmt"]);
    assert_eq!(code, 0);
    assert_eq!(info["workspace"], "fmt");
    let target = info["ssh_target"].as_str().expect("target");
    assert!(target.starts_with("fmt-"), "{target}");
    assert!(info["command"]
        .as_str()
        .expect("command")
        .starts_with("ssh "));
    // -v: every request on stderr, never the key.
    let out = rig.run(&["-v", "whoami"]);
    let err = stderr(&out);
    assert!(
        err.contains("GET ") && err.contains("/api/v1/auth/me -> 200"),
        "{err}"
    );
    assert!(!err.contains(rig.key.as_deref().expect("key")), "{err}");
    // The config's `output` is the default format; a world-readable file draws a warning.
    let dir = rig.home.path().join("rigbox");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("config.json"), r#"{"output": "json"}"#).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("config.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = rig.run(&["templates", "ls"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json by default");
    assert!(v["items"].is_array());
    assert!(
        stderr(&out).contains("readable by other users"),
        "{}",
        stderr(&out)
    );
    // --output beats the config.
    let out = rig.run(&["capacity", "--output", "text"]);
    assert!(stdout(&out).contains("available\ttrue") || stdout(&out).contains("available\tyes"));
}

#[tokio::test]
async fn wait_timeout_and_invalid_state() {
    let (_d, rig) = setup().await;
    let (code, events) = rig.events(&["ws", "spawn", "--name", "slow", "--timeout", "0"]);
    assert_eq!(code, 1);
    let last = events.last().expect("error event");
    assert_eq!(
        (last["event"].as_str(), last["code"].as_str()),
        (Some("error"), Some("timeout"))
    );
    // The operation continues on the server: provisioning ends (and a start, if it was sent,
    // goes on); `start` then succeeds either way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, w, _) = rig.json(&["ws", "get", "slow"]);
        if matches!(w["status"].as_str(), Some("provisioned" | "running")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{w}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = rig.run(&["ws", "start", "slow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, events) = rig.events(&["ws", "start", "slow"]);
    assert_eq!(code, 0);
    assert_eq!(events.last().expect("done")["event"], "done");
    assert_eq!(events.last().expect("done")["result"]["status"], "running");
    // A resize while running is 409 → exit 1, error envelope on stderr in json.
    let (code, _, err) = rig.json(&["ws", "resize", "slow", "--ram", "768"]);
    assert_eq!(code, 1);
    let e: Value = serde_json::from_str(&err).expect("json error");
    assert_eq!(e["error"]["code"], "invalid_state");
    // rm -f deletes in any state.
    let (code, w, _) = rig.json(&["ws", "rm", "slow", "-f"]);
    assert_eq!(code, 0);
    assert_eq!(w["status"], "deleting");
}

#[test]
fn invoked_as_rigbox() {
    let dir = tempfile::tempdir().expect("dir");
    let link = dir.path().join("rigbox");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rig"), &link).expect("symlink");
    let out = Command::new(&link).arg("-V").output().expect("runs");
    assert_eq!(
        stdout(&out).trim(),
        format!("rigbox {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(&link)
        .args(["ws", "--help"])
        .env("RIGBOX_MODE", "local")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("Usage: rigbox workspace"),
        "{}",
        stdout(&out)
    );
    // Parse errors exit 1, not clap's 2.
    let out = Command::new(&link)
        .args(["ws", "frobnicate"])
        .env("RIGBOX_MODE", "local")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    // Completions default to $SHELL.
    let out = Command::new(&link)
        .arg("completions")
        .env("SHELL", "/usr/bin/zsh")
        .env("RIGBOX_MODE", "local")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("#compdef rigbox"),
        "{}",
        stdout(&out)
    );
}

/// What a fake server answers: status line, extra headers, JSON body.
type Answer = (&'static str, Vec<(&'static str, String)>, Value);

/// A tiny HTTP/1.1 server on a free port: answers every request with `handler(request line
/// path, n-th request)` and records `"<path> auth=<bool>"` for each request.
async fn fake_server(
    handler: impl Fn(&str, usize) -> Answer + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let auth = req.to_ascii_lowercase().contains("authorization:");
                let nth = {
                    let mut l = log.lock().expect("lock");
                    l.push(format!("{path} auth={auth}"));
                    l.len()
                };
                let (status, headers, body) = handler(&path, nth);
                let body = body.to_string();
                let mut resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn not_found() -> Answer {
    (
        "404 Not Found",
        vec![],
        json!({"error": {"code": "not_found", "message": "no such route", "details": {}}}),
    )
}

/// A stand-in for the node bridge: answers `/rig/v1/whoami` and `/rig/v1/workspace`.
async fn fake_bridge() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    fake_server(|path, _| match path {
        "/rig/v1/whoami" => (
            "200 OK",
            vec![],
            json!({"auth_method": "workspace_ip", "workspace_id": "ws-abcd1234",
                   "workspace_name": "inside", "owner_email": "o@example.com", "region": "local"}),
        ),
        "/rig/v1/workspace" => (
            "200 OK",
            vec![],
            json!({"id": "ws-abcd1234", "name": "inside", "status": "running", "apps": []}),
        ),
        _ => not_found(),
    })
    .await
}

/// Runs rig in local mode against a fake API with a key, off the async runtime.
async fn rig_against(url: &str, args: &[&str]) -> (Output, std::time::Duration) {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().expect("dir");
        let start = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_rig"))
            .args(&args)
            .env("RIGBOX_MODE", "local")
            .env("RIGBOX_API_URL", &url)
            .env("RIGBOX_API_KEY", "rb_fake")
            .env("XDG_CONFIG_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .expect("rig runs");
        (out, start.elapsed())
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn rate_limits_are_retried_three_times_then_exit_5() {
    let limited = || -> Answer {
        (
            "429 Too Many Requests",
            vec![("retry-after", "1".to_owned())],
            json!({"error": {"code": "rate_limited", "message": "Slow down.",
                   "details": {"class": "auth", "limit_per_minute": 120, "retry_after_seconds": 1}}}),
        )
    };
    let (url, seen) = fake_server(move |_, _| limited()).await;
    let (out, took) = rig_against(&url, &["whoami", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let e: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(e["error"]["code"], "rate_limited");
    assert_eq!(
        seen.lock().expect("lock").len(),
        4,
        "one try and three retries"
    );
    assert!(took >= std::time::Duration::from_secs(3), "{took:?}");

    // A 429 that clears up is invisible to the user.
    let (url, _) = fake_server(move |_, n| {
        if n == 1 {
            limited()
        } else {
            (
                "200 OK",
                vec![],
                json!({"id": "usr-1", "email": "a@b.c", "plan": "free"}),
            )
        }
    })
    .await;
    let (out, _) = rig_against(&url, &["whoami", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["email"], "a@b.c");
}

#[tokio::test]
async fn lists_follow_next_cursor_to_the_end() {
    let (url, seen) = fake_server(|path, _| {
        if path.starts_with("/api/v1/ssh-keys") && path.contains("cursor=page%202") {
            (
                "200 OK",
                vec![],
                json!({"items": [{"id": "k3", "name": "c"}], "next_cursor": null}),
            )
        } else if path.starts_with("/api/v1/ssh-keys") {
            (
                "200 OK",
                vec![],
                json!({"items": [{"id": "k1", "name": "a"}, {"id": "k2", "name": "b"}],
                       "next_cursor": "page 2"}),
            )
        } else {
            not_found()
        }
    })
    .await;
    let (out, _) = rig_against(&url, &["ssh-key", "ls", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v,
        json!({"items": [{"id": "k1", "name": "a"}, {"id": "k2", "name": "b"},
                                   {"id": "k3", "name": "c"}]})
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
    // A name resolves across pages; an unknown one exits 3.
    let (out, _) = rig_against(&url, &["ssh-key", "rm", "zz"]).await;
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn workspace_mode_uses_the_bridge_and_hides_local_commands() {
    let (bridge, seen) = fake_bridge().await;
    let home = tempfile::tempdir().expect("dir");
    // A config file with a key exists but workspace mode must not read it.
    std::fs::create_dir_all(home.path().join("rigbox")).expect("dir");
    std::fs::write(
        home.path().join("rigbox/config.json"),
        r#"{"api_key": "rb_mustnotbeused", "output": "yaml"}"#,
    )
    .expect("write");
    let inside = |args: &[&str]| {
        let bridge = bridge.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let home = home.path().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_rig"))
                    .args(&args)
                    .env("RIGBOX_MODE", "workspace")
                    .env("RIGBOX_BRIDGE_URL", bridge)
                    .env("XDG_CONFIG_HOME", &home)
                    .env("RIGBOX_API_KEY", "rb_mustnotbeusedeither")
                    .stdin(Stdio::null())
                    .output()
                    .expect("rig runs")
            })
            .await
            .expect("join")
        }
    };
    let out = inside(&["whoami", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json (not the config's yaml)");
    assert_eq!(v["auth_method"], "workspace_ip");
    let out = inside(&["ws", "get", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["name"], "inside");
    let out = inside(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("inside"));
    {
        let seen = seen.lock().expect("lock");
        assert!(
            seen.contains(&"/rig/v1/whoami auth=false".to_owned()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"/rig/v1/workspace auth=false".to_owned()),
            "{seen:?}"
        );
    }
    // Refused before argument checks (ws new has a required --name), in the chosen format.
    let out = inside(&["ws", "new"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: rig workspace new is not available inside a workspace; run it on your own machine"
    );
    let out = inside(&["api-key", "ls", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(e["error"]["code"], "not_available");
    // Help lists only what works here.
    let out = inside(&["--help"]).await;
    let help = stdout(&out);
    assert!(
        help.contains("whoami") && help.contains("workspace"),
        "{help}"
    );
    assert!(
        !help.contains("api-key") && !help.contains("login"),
        "{help}"
    );
}

#[tokio::test]
async fn apps_from_the_cli() {
    let (_d, rig) = setup().await;
    assert_eq!(rig.json(&["ws", "new", "--name", "site", "--no-wait"]).0, 0);
    // new needs a workspace outside one.
    let (code, _, err) = rig.json(&["app", "new", "--name", "x1"]);
    assert_eq!(code, 1, "{err}");
    let out = rig.run(&[
        "app", "new", "--name", "My Blog", "-w", "site", "--port", "8080", "--public",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("://my-blog.rigbox.localhost") && text.contains("public"),
        "{text}"
    );
    assert!(text.contains("The name became my-blog"), "{text}");
    let (code, a, _) = rig.json(&["app", "get", "my-blog"]);
    assert_eq!(code, 0);
    assert_eq!(
        (a["port"].as_i64(), a["visibility"].as_str()),
        (Some(8080), Some("public"))
    );
    // ls: table with the spec's columns.
    let out = rig.run(&["app", "ls", "-w", "site"]);
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("my-blog") && table.contains("8080"),
        "{table}"
    );
    // share: exactly one option; --emails makes it privileged with that list.
    let out = rig.run(&[
        "app",
        "share",
        "my-blog",
        "--emails",
        "a@example.com,B@example.com",
    ]);
    assert!(stdout(&out).contains("privileged"), "{}", stdout(&out));
    let (_, a, _) = rig.json(&["app", "get", "my-blog"]);
    assert_eq!(
        a["allowed_emails"],
        json!(["a@example.com", "b@example.com"])
    );
    assert_ne!(rig.run(&["app", "share", "my-blog"]).status.code(), Some(0));
    // update: a rename prints the new URL; --disable keeps the app.
    let out = rig.run(&["app", "update", "my-blog", "--name", "journal", "--disable"]);
    assert!(
        stdout(&out).contains("://journal.rigbox.localhost"),
        "{}",
        stdout(&out)
    );
    let (_, a, _) = rig.json(&["app", "get", "journal"]);
    assert_eq!(a["status"], "inactive");
    // Errors keep the API's code and exit status.
    let (code, _, err) = rig.json(&["app", "new", "--name", "www", "-w", "site"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("name_reserved"), "{err}");
    let (code, _, _) = rig.json(&["app", "get", "nope"]);
    assert_eq!(code, 3);
    // rm with --yes.
    assert_eq!(rig.json(&["app", "rm", "journal", "--yes"]).0, 0);
    assert_eq!(rig.json(&["app", "get", "journal"]).0, 3);
}
