//! `rig workspace ai show|mode` (and its short form `rig ai …`) as a user runs them in local
//! mode against the in-process platform: the API's object in JSON, a labelled block for people,
//! the key read from stdin and never echoed, errors and exit codes as cli.md §3 and §7 say.

use rigbox_testkit::TestPlatform;
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};

const SECRET: &str = "sk-cli-Secret-0123456789abcdef";

/// Variables a test's `rig` must not inherit from the environment running the tests.
const AMBIENT: [&str; 5] = [
    "RIGBOX_API_KEY",
    "RIGBOX_API_URL",
    "RIGBOX_BRIDGE_URL",
    "RIGBOX_MODE",
    "NO_COLOR",
];

struct Local {
    url: String,
    key: String,
    home: tempfile::TempDir,
}

impl Local {
    /// Runs `rig args…` in local mode with `stdin` as its standard input.
    async fn rig_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rig"));
        c.args(args);
        for k in AMBIENT {
            c.env_remove(k);
        }
        let home = self.home.path().to_str().expect("utf-8").to_owned();
        c.envs([
            ("RIGBOX_MODE", "local"),
            ("RIGBOX_API_URL", self.url.as_str()),
            ("RIGBOX_API_KEY", self.key.as_str()),
            ("XDG_CONFIG_HOME", home.as_str()),
            ("HOME", home.as_str()),
        ]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let input = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = c.spawn().expect("rig runs");
            if let Some(text) = input {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())
                    .expect("write stdin");
            }
            child.wait_with_output().expect("rig exits")
        })
        .await
        .expect("join")
    }

    async fn rig(&self, args: &[&str]) -> Output {
        self.rig_with(args, None).await
    }

    #[track_caller]
    fn ok(o: &Output) -> String {
        assert_eq!(o.status.code(), Some(0), "stderr: {}", err(o));
        out(o)
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let o = self.rig(&a).await;
        serde_json::from_str(&Self::ok(&o)).expect("JSON on stdout")
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn setup() -> (TestPlatform, Local) {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let (s, w) = me.post("/workspaces", json!({"name": "alpha"})).await;
    assert_eq!(s, 201, "{w}");
    let local = Local {
        url: tp.url(),
        key: me.token.clone().expect("key"),
        home: tempfile::tempdir().expect("home"),
    };
    (tp, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_show_and_mode_with_a_key_from_stdin() {
    let (_tp, l) = setup().await;

    // A new workspace inherits the account's managed mode.
    let c = l.json(&["workspace", "ai", "show", "alpha"]).await;
    assert_eq!(
        (&c["mode"], &c["provider"], &c["status"]),
        (&json!("managed"), &Value::Null, &json!("managed_active"))
    );
    let human = Local::ok(&l.rig(&["ai", "show", "alpha"]).await);
    assert!(
        human.starts_with("Mode      managed\nStatus    managed_active\nUpdated   "),
        "{human}"
    );

    // byok with a key from stdin: never echoed, never printed, not even with -v.
    let o = l
        .rig_with(
            &[
                "-v",
                "workspace",
                "ai",
                "mode",
                "alpha",
                "byok",
                "--provider",
                "openai",
                "--model",
                "gpt-4o",
                "--api-key-stdin",
            ],
            Some(&format!("{SECRET}\n")),
        )
        .await;
    let text = Local::ok(&o);
    assert!(
        text.starts_with("alpha: AI mode byok (byok_active)\n"),
        "{text}"
    );
    assert!(
        !text.contains(SECRET) && !err(&o).contains(SECRET),
        "the key was printed"
    );
    let c = l.json(&["ws", "ai", "show", "alpha"]).await;
    assert_eq!(
        (&c["mode"], &c["provider"], &c["model"], &c["status"]),
        (
            &json!("byok"),
            &json!("openai"),
            &json!("gpt-4o"),
            &json!("byok_active")
        )
    );
    assert!(c.get("api_key").is_none(), "{c}");
    let human = Local::ok(&l.rig(&["ai", "show", "alpha"]).await);
    assert!(
        human.starts_with(
            "Mode      byok\nProvider  openai\nModel     gpt-4o\nStatus    byok_active\n"
        ),
        "{human}"
    );
    // The workspace shows its override.
    let w = l.json(&["workspace", "get", "alpha"]).await;
    assert_eq!(w["ai_mode"], "byok");
    assert!(
        Local::ok(&l.rig(&["workspace", "get", "alpha"]).await).contains("\nAI mode      byok\n")
    );

    // inherit: back to the account's mode (managed), which deletes the key.
    let c = l.json(&["ai", "mode", "alpha", "inherit"]).await;
    assert_eq!(
        (&c["mode"], &c["status"]),
        (&json!("managed"), &json!("managed_active"))
    );
    assert_eq!(
        l.json(&["workspace", "get", "alpha"]).await["ai_mode"],
        Value::Null
    );

    // byok without a key: the status says so, and people are told how to store one.
    let o = l.rig(&["ai", "mode", "alpha", "byok"]).await;
    let text = Local::ok(&o);
    assert!(
        text.starts_with("alpha: AI mode byok (invalid_missing_key)\nNo provider key is stored: rig workspace ai mode alpha byok --provider <PROVIDER> --api-key"),
        "{text}"
    );
    assert_eq!(
        l.json(&["ai", "show", "alpha"]).await["status"],
        "invalid_missing_key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_mode_errors_and_exit_codes() {
    let (_tp, l) = setup().await;

    // No terminal to ask on.
    let o = l
        .rig(&[
            "ai",
            "mode",
            "alpha",
            "byok",
            "--provider",
            "google",
            "--api-key",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("--api-key needs a terminal"),
        "{}",
        err(&o)
    );
    // A key in managed mode is refused before any request.
    let o = l
        .rig_with(
            &["ai", "mode", "alpha", "managed", "--api-key-stdin"],
            Some("k\n"),
        )
        .await;
    assert_eq!(o.status.code(), Some(1));
    // Not a mode, not a provider: argument errors exit 1.
    assert_eq!(
        l.rig(&["ai", "mode", "alpha", "sideways"])
            .await
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        l.rig(&["ai", "mode", "alpha", "byok", "--provider", "mistral"])
            .await
            .status
            .code(),
        Some(1)
    );
    // The API's validation error, in the chosen format; the key is not repeated.
    let o = l
        .rig_with(
            &[
                "ai",
                "mode",
                "alpha",
                "byok",
                "--provider",
                "google",
                "--api-key-stdin",
                "--output",
                "json",
            ],
            Some("two words\n"),
        )
        .await;
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_str(&err(&o)).expect("JSON error on stderr");
    assert_eq!(e["error"]["code"], "validation_failed", "{e}");
    assert!(
        e["error"]["details"]["fields"]["api_key"].is_string(),
        "{e}"
    );
    // Nothing changed.
    assert_eq!(l.json(&["ai", "show", "alpha"]).await["mode"], "managed");
    // An unknown workspace exits 3.
    let o = l.rig(&["ai", "show", "nope"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    // Inside a workspace the command does not exist.
    let mut c = Command::new(env!("CARGO_BIN_EXE_rig"));
    c.args(["ai", "show", "alpha"])
        .env("RIGBOX_MODE", "workspace")
        .env("RIGBOX_BRIDGE_URL", "http://127.0.0.1:9")
        .stdin(Stdio::null());
    let o = c.output().expect("rig runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("rig ai is not available inside a workspace"),
        "{}",
        err(&o)
    );
}
