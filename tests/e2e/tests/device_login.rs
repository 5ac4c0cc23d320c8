//! `rig login` device login approved (and denied) in a real headless Chromium through the
//! console, against a running `rigboxd up`.

use rigbox_testkit::{workspace_bin, Daemon, PASSWORD};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// Runs `rig login --no-browser --output json`, hands the printed verification URL to the
/// browser script and returns rig's exit code, its NDJSON events and the config dir.
async fn login_through_browser(decision: &str) -> (i32, Vec<Value>, tempfile::TempDir, Daemon) {
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (scripts/test does)"
    );
    let daemon = Daemon::start().await.expect("rigboxd starts");
    let email = "browser@example.com";
    daemon
        .create_user(email, PASSWORD)
        .await
        .expect("user created");
    let home = tempfile::tempdir().expect("temp dir");
    let mut rig = Command::new(workspace_bin("rig"))
        .args([
            "login",
            "--no-browser",
            "--api-url",
            &daemon.api_url(),
            "--output",
            "json",
        ])
        .env("XDG_CONFIG_HOME", home.path())
        .env("HOME", home.path())
        .env_remove("RIGBOX_API_KEY")
        .env_remove("RIGBOX_API_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rig runs");
    let mut lines = BufReader::new(rig.stdout.take().expect("stdout"));
    let mut events = Vec::new();
    let mut first = String::new();
    lines.read_line(&mut first).expect("first event");
    let created: Value = serde_json::from_str(&first).expect("NDJSON event");
    events.push(created.clone());
    let field = |k: &str| {
        created
            .get(k)
            .or_else(|| created.get("session").and_then(|s| s.get(k)))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(created["event"], "session_created", "{created}");
    let (url, user_code) = (field("verification_url"), field("user_code"));
    assert!(url.contains("/cli-login?code="), "{created}");
    let shot = home.path().join("approval.png");
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("device_login.mjs")
        .args([&url, email, PASSWORD, &user_code, decision])
        .arg(&shot)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "browser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in lines.lines() {
        let line = line.expect("utf-8 output");
        if !line.trim().is_empty() {
            events.push(serde_json::from_str(&line).expect("NDJSON event"));
        }
    }
    let code = rig.wait().expect("rig exits").code().unwrap_or(-1);
    (code, events, home, daemon)
}

#[tokio::test]
async fn approving_in_the_browser_signs_the_cli_in() {
    let (code, events, home, _daemon) = login_through_browser("approve").await;
    assert_eq!(code, 0, "events: {events:?}");
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        names.contains(&"approved") && names.contains(&"saved"),
        "{names:?}"
    );
    // The saved credential works: whoami answers as the account that approved.
    let out = Command::new(workspace_bin("rig"))
        .args(["whoami", "--output", "json"])
        .env("XDG_CONFIG_HOME", home.path())
        .env("HOME", home.path())
        .output()
        .expect("rig runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(me["email"], "browser@example.com", "{me}");
}

#[tokio::test]
async fn denying_in_the_browser_ends_rig_login_with_exit_2() {
    let (code, events, _home, _daemon) = login_through_browser("deny").await;
    assert_eq!(code, 2, "events: {events:?}");
}
