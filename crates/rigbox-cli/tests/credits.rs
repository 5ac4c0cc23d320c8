//! `rig credits`, `rig credits ledger`, `rig usage` and `rig proxy` as a user runs them: in
//! local mode against the in-process platform, and in workspace mode through the node's bridge
//! (127.0.0.1 holds the workspace's lease), whose control plane offers managed AI. Charges are
//! written straight into the store, as the wallet would.

use rigbox_control::config::ManagedAi;
use rigbox_control::store::LedgerRow;
use rigbox_control::App;
use rigbox_testkit::TestPlatform;
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

const DAY_US: i64 = 86_400_000_000;

/// Variables a test's `rig` must not inherit from the environment running the tests.
const AMBIENT: [&str; 12] = [
    "RIGBOX_API_KEY",
    "RIGBOX_API_URL",
    "RIGBOX_BRIDGE_URL",
    "RIGBOX_MODE",
    "OPENROUTER_BASE_URL",
    "OPENROUTER_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "RIGBOX_AI_PROXY_URL",
    "NO_COLOR",
];

/// Runs `program args…` with exactly `envs` on top of a cleaned environment.
async fn run(program: &str, args: &[&str], envs: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    for k in AMBIENT {
        c.env_remove(k);
    }
    c.envs(envs.iter().copied());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    tokio::task::spawn_blocking(move || c.output().expect("runs"))
        .await
        .expect("join")
}

async fn rig(args: &[&str], envs: &[(&str, &str)]) -> Output {
    run(env!("CARGO_BIN_EXE_rig"), args, envs, None).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

#[track_caller]
fn json_of(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).expect("JSON on stdout")
}

/// One charge as the wallet writes it.
async fn charge(app: &Arc<App>, user: &str, ws: (&str, &str), model: &str, micro: i64, ago: i64) {
    charge_for(app, user, ws, model, micro, ago, None).await
}

async fn charge_for(
    app: &Arc<App>,
    user: &str,
    ws: (&str, &str),
    model: &str,
    micro: i64,
    ago: i64,
    subject: Option<&str>,
) {
    let mut tx = app.store.begin().await.expect("tx");
    app.store.lock_user(&mut tx, user).await.expect("lock");
    let last = app
        .store
        .last_ledger_entry(&mut *tx, user)
        .await
        .expect("read")
        .expect("the first reset");
    let n = last.seq + 1;
    app.store
        .insert_ledger(
            &mut *tx,
            &LedgerRow {
                id: format!("entry-{n}"),
                user_id: user.to_owned(),
                seq: n,
                kind: "charge".into(),
                amount_micro: -micro,
                balance_after_micro: last.balance_after_micro - micro,
                period_start: last.period_start,
                created_at: app.now() - ago,
                workspace_id: Some(ws.0.to_owned()),
                workspace_name: Some(ws.1.to_owned()),
                request_id: Some(format!("req-{n}")),
                endpoint: Some("/v1/chat/completions".into()),
                model: Some(model.to_owned()),
                input_tokens: Some(10),
                output_tokens: Some(20),
                cost_usd: Some(micro as f64 / 1e8),
                subject: subject.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
        .expect("charge");
    tx.commit().await.expect("commit");
}

/// The node's bridge on loopback for `ws`, in front of a control plane offering `ai`.
async fn bridge_for(tp: &TestPlatform, ws: &WorkspaceId, ai: ManagedAi) -> String {
    let base = &tp.platform().app;
    let mut config = base.config.clone();
    config.managed_ai = ai;
    let app = App::new(base.store.clone(), config, base.clock.clone(), Vec::new());
    rigbox_testkit::loopback_bridge(app, ws, Arc::default()).await
}

const MANAGED: ManagedAi = ManagedAi {
    enabled: true,
    openrouter: true,
    anthropic: true,
    brave: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_ledger_and_usage_in_local_mode() {
    let tp = TestPlatform::start().await;
    let app = tp.platform().app.clone();
    let me = tp.user("me@example.com").await;
    let key = me.token.clone().expect("key");
    let uid = me.user_id().await;
    let (s, w) = me.post("/workspaces", json!({"name": "alpha"})).await;
    assert_eq!(s, 201, "{w}");
    let ws = w["id"].as_str().expect("id").to_owned();
    charge(&app, &uid, (&ws, "alpha"), "openai/gpt-4o", 1_500_000, 0).await;
    charge(&app, &uid, ("ws-deleted1", "gone"), "m/x", 360, DAY_US).await;
    charge(&app, &uid, (&ws, "alpha"), "openai/gpt-4o", 250_000, 0).await;

    let home = tempfile::tempdir().expect("home");
    let url = tp.url();
    let local = [
        ("RIGBOX_MODE", "local"),
        ("RIGBOX_API_URL", url.as_str()),
        ("RIGBOX_API_KEY", key.as_str()),
        ("XDG_CONFIG_HOME", home.path().to_str().expect("utf-8")),
        ("HOME", home.path().to_str().expect("utf-8")),
    ];

    // credits: the API's object in JSON, a labelled block for people.
    let c = json_of(&rig(&["credits", "--output", "json"], &local).await);
    let balance = 250_000_000 - 1_500_000 - 360 - 250_000;
    assert_eq!(
        (c["balance_micro"].as_i64(), c["remaining_micro"].as_i64()),
        (Some(balance), Some(balance))
    );
    let human = ok(&rig(&["credits"], &local).await);
    assert!(
        human.starts_with("Available   248.24964 of 250.00 credits\nBalance     248.24964\n"),
        "{human}"
    );
    assert!(
        human.contains("Reserved    0.00\nMode        managed\nPeriod end  "),
        "{human}"
    );
    let text = ok(&rig(&["credits", "--output", "text", "--query", "mode"], &local).await);
    assert_eq!(text, "managed\n");

    // credits ledger: newest first, default 20, --limit, --workspace by name or ID.
    let l = json_of(&rig(&["credits", "ledger", "--output", "json"], &local).await);
    let kinds: Vec<&str> = l["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["charge", "charge", "charge", "monthly_reset"]);
    assert_eq!(l["items"][0]["amount_micro"], -250_000);
    let table = ok(&rig(&["credits", "ledger", "--limit", "2"], &local).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for h in ["TIME", "KIND", "AMOUNT", "BALANCE", "WORKSPACE", "MODEL"] {
        assert!(lines[0].contains(h), "{table}");
    }
    assert!(
        lines[1].contains("charge") && lines[1].contains("-0.25"),
        "{table}"
    );
    assert!(
        lines[1].contains("alpha") && lines[1].contains("openai/gpt-4o"),
        "{table}"
    );
    assert!(
        lines[2].contains("-0.00036") && lines[2].contains("gone"),
        "{table}"
    );
    let l = json_of(
        &rig(
            &["credits", "ledger", "-w", "alpha", "--output", "json"],
            &local,
        )
        .await,
    );
    assert_eq!(l["items"].as_array().map(Vec::len), Some(2));
    let l = json_of(
        &rig(
            &[
                "credits",
                "ledger",
                "--workspace",
                "ws-deleted1",
                "--output",
                "json",
            ],
            &local,
        )
        .await,
    );
    assert_eq!(l["items"][0]["workspace_name"], "gone");
    let o = rig(&["credits", "ledger", "-w", "nope"], &local).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let t = ok(&rig(
        &["credits", "ledger", "--limit", "1", "--output", "text"],
        &local,
    )
    .await);
    assert_eq!(t.lines().count(), 1);
    assert!(t.contains("\tcharge\t-0.25\t"), "{t}");

    // usage: the API's document in JSON; days with requests and workspaces for people.
    let u = json_of(&rig(&["usage", "--days", "7", "--output", "json"], &local).await);
    assert_eq!(u["window_days"], 7);
    assert_eq!(u["daily"].as_array().map(Vec::len), Some(7));
    assert_eq!(u["by_workspace"][0]["workspace_name"], "alpha");
    let human = ok(&rig(&["usage"], &local).await);
    assert!(
        human.starts_with("AI usage in the last 30 days: 3 requests, 1.75036 credits\n\nDAY"),
        "{human}"
    );
    assert!(
        human.contains("WORKSPACE") && human.contains("gone"),
        "{human}"
    );
    let o = rig(&["usage", "--days", "0"], &local).await;
    assert_eq!(o.status.code(), Some(1));
    let o = rig(&["usage", "--subject", "x"], &local).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("inside a workspace"), "{}", stderr(&o));

    // Not signed in: exit 2. proxy exists only inside a workspace: hidden and refused.
    let anon = [
        ("RIGBOX_MODE", "local"),
        ("RIGBOX_API_URL", url.as_str()),
        ("XDG_CONFIG_HOME", home.path().to_str().expect("utf-8")),
    ];
    assert_eq!(rig(&["credits"], &anon).await.status.code(), Some(2));
    assert_eq!(rig(&["usage"], &anon).await.status.code(), Some(2));
    let o = rig(&["proxy", "on"], &local).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: rig proxy is only available inside a workspace\n"
    );
    assert!(!ok(&rig(&["--help"], &local).await).contains("proxy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_usage_and_proxy_inside_a_workspace() {
    let tp = TestPlatform::start().await;
    let app = tp.platform().app.clone();
    let me = tp.user("owner@example.com").await;
    let uid = me.user_id().await;
    let (s, w) = me
        .post(
            "/workspaces",
            json!({"name": "inside", "env_vars": {"GREETING": "hi"}}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let ws = WorkspaceId::parse(w["id"].as_str().expect("id")).expect("an ID");
    charge_for(
        &app,
        &uid,
        (ws.as_str(), "inside"),
        "openai/gpt-4o",
        720,
        0,
        Some("tenant-42"),
    )
    .await;
    let url = bridge_for(&tp, &ws, MANAGED).await;
    let inside = [
        ("RIGBOX_MODE", "workspace"),
        ("RIGBOX_BRIDGE_URL", url.as_str()),
    ];

    // credits through the bridge: the owner's wallet.
    let c = json_of(&rig(&["credits", "--output", "json"], &inside).await);
    assert_eq!(c["remaining_micro"], 250_000_000 - 720);
    assert!(ok(&rig(&["credits"], &inside).await)
        .starts_with("Available   249.99928 of 250.00 credits"));
    let o = rig(&["credits", "ledger"], &inside).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not available inside a workspace"));

    // usage --subject.
    let u = json_of(
        &rig(
            &[
                "usage",
                "--subject",
                "tenant-42",
                "--window",
                "1h",
                "--output",
                "json",
            ],
            &inside,
        )
        .await,
    );
    assert_eq!(
        u,
        json!({"subject": "tenant-42", "window_seconds": 3600, "credits": 0.00072,
               "credits_micro": 720, "input_tokens": 10, "output_tokens": 20, "requests": 1})
    );
    let human = ok(&rig(&["usage", "--subject", "tenant-42"], &inside).await);
    assert!(human.contains("Window         86400 s"), "{human}");
    assert!(human.contains("Credits        0.00072"), "{human}");
    let o = rig(&["usage", "--subject", "t", "--window", "45d"], &inside).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("window"), "{}", stderr(&o));
    let o = rig(&["usage"], &inside).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--subject"), "{}", stderr(&o));

    // proxy on / env: export lines that a shell can eval.
    let on = ok(&rig(&["proxy", "on"], &inside).await);
    assert_eq!(
        on,
        "export OPENROUTER_BASE_URL='http://172.16.0.1:9090/v1'\n\
         export OPENROUTER_API_KEY='managed-by-rigbox'\n\
         export OPENAI_BASE_URL='http://172.16.0.1:9090/v1'\n\
         export OPENAI_API_KEY='managed-by-rigbox'\n\
         export ANTHROPIC_BASE_URL='http://172.16.0.1:9090'\n\
         export ANTHROPIC_AUTH_TOKEN='managed-by-rigbox'\n\
         export RIGBOX_AI_PROXY_URL='http://172.16.0.1:9090'\n"
    );
    assert_eq!(ok(&rig(&["proxy", "env"], &inside).await), on);
    assert_eq!(
        ok(&rig(&["proxy", "on", "anthropic"], &inside).await),
        "export ANTHROPIC_BASE_URL='http://172.16.0.1:9090'\n\
         export ANTHROPIC_AUTH_TOKEN='managed-by-rigbox'\n"
    );
    let v1 = json_of(&rig(&["proxy", "env", "v1", "--output", "json"], &inside).await);
    assert_eq!(
        v1,
        json!({"group": "v1", "items": [
            {"name": "OPENAI_BASE_URL", "value": "http://172.16.0.1:9090/v1"},
            {"name": "OPENAI_API_KEY", "value": "managed-by-rigbox"}]})
    );
    assert_eq!(
        ok(&rig(&["proxy", "off", "openai"], &inside).await),
        "unset OPENAI_BASE_URL OPENAI_API_KEY\n"
    );
    let rig_bin = env!("CARGO_BIN_EXE_rig");
    let script = format!(
        "eval \"$({rig_bin} proxy on)\" && echo \"$OPENAI_BASE_URL|$ANTHROPIC_AUTH_TOKEN|$RIGBOX_AI_PROXY_URL\" \
         && eval \"$({rig_bin} proxy off)\" && echo \"[$OPENAI_BASE_URL$OPENROUTER_API_KEY]\""
    );
    let out = ok(&run("bash", &["-c", &script], &inside, None).await);
    assert_eq!(
        out,
        "http://172.16.0.1:9090/v1|managed-by-rigbox|http://172.16.0.1:9090\n[]\n"
    );
    let o = rig(&["proxy", "on", "google"], &inside).await;
    assert_eq!(o.status.code(), Some(1), "no such group");

    // dotenv: replaces those names, keeps every other line, counts on stderr.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("app.env");
    std::fs::write(&file, "# mine\nOPENAI_API_KEY=sk-mine\nDEBUG=1\n").expect("write");
    let o = rig(&["proxy", "dotenv", file.to_str().expect("utf-8")], &inside).await;
    assert_eq!(ok(&o), "");
    assert_eq!(
        stderr(&o),
        format!("wrote 7 variables to {}\n", file.display())
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "# mine\nOPENAI_API_KEY=managed-by-rigbox\nDEBUG=1\n\
         OPENROUTER_BASE_URL=http://172.16.0.1:9090/v1\nOPENROUTER_API_KEY=managed-by-rigbox\n\
         OPENAI_BASE_URL=http://172.16.0.1:9090/v1\n\
         ANTHROPIC_BASE_URL=http://172.16.0.1:9090\nANTHROPIC_AUTH_TOKEN=managed-by-rigbox\n\
         RIGBOX_AI_PROXY_URL=http://172.16.0.1:9090\n"
    );
    // Without a path: ./.env.
    let o = run(
        rig_bin,
        &["proxy", "dotenv", "--output", "json"],
        &inside,
        Some(dir.path()),
    )
    .await;
    let d: Value = serde_json::from_str(&ok(&o)).expect("json");
    assert_eq!(d["written"], 7);
    assert!(std::fs::read_to_string(dir.path().join(".env"))
        .expect(".env")
        .starts_with("OPENROUTER_BASE_URL=http://172.16.0.1:9090/v1\n"));

    assert_eq!(
        ok(&rig(&["proxy", "path"], &inside).await),
        "/home/developer/.rigbox/proxy.env\n"
    );

    // status: mode, bridge, groups, which variables this shell has, credits.
    let mut shell = inside.to_vec();
    shell.push(("OPENAI_BASE_URL", "http://172.16.0.1:9090/v1"));
    shell.push(("ANTHROPIC_BASE_URL", "https://api.anthropic.com"));
    let st = json_of(&rig(&["proxy", "status", "--output", "json"], &shell).await);
    assert_eq!(
        (st["mode"].as_str(), st["bridge_answers"].as_bool()),
        (Some("managed"), Some(true))
    );
    assert_eq!(st["bridge_url"], url.as_str());
    assert_eq!(
        st["groups"],
        json!(["openrouter", "openai", "v1", "anthropic", "all"])
    );
    let state = |name: &str| {
        st["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(state("OPENAI_BASE_URL").as_deref(), Some("set"));
    assert_eq!(state("ANTHROPIC_BASE_URL").as_deref(), Some("differs"));
    assert_eq!(state("OPENAI_API_KEY").as_deref(), Some("unset"));
    assert_eq!(st["credits"]["remaining_micro"], 250_000_000 - 720);
    let human = ok(&rig(&["proxy", "status"], &shell).await);
    assert!(
        human.contains(&format!("Bridge     {url} (answers)")),
        "{human}"
    );
    assert!(
        human.contains("Credits    249.99928 of 250.00 available"),
        "{human}"
    );
    assert!(human.contains("OPENAI_BASE_URL"), "{human}");
    assert!(human.contains("no (differs)"), "{human}");
    let down = [
        ("RIGBOX_MODE", "workspace"),
        ("RIGBOX_BRIDGE_URL", "http://127.0.0.1:1"),
    ];
    let st = json_of(&rig(&["proxy", "status", "--output", "json"], &down).await);
    assert_eq!(st["bridge_answers"], false);

    // The agent writes the managed pair into /etc/rigbox/env (first, then the user's) and the
    // `all` group into proxy.env; both are sourceable by sh.
    let root = tempfile::tempdir().expect("root");
    let root_s = root.path().to_str().expect("utf-8");
    ok(&rig(
        &["agent", "--once", "--bridge-url", &url, "--root", root_s],
        &[],
    )
    .await);
    let env_file = std::fs::read_to_string(root.path().join("etc/rigbox/env")).expect("env");
    assert_eq!(
        env_file,
        "OPENROUTER_BASE_URL='http://172.16.0.1:9090/v1'\n\
         OPENROUTER_API_KEY='managed-by-rigbox'\nGREETING='hi'\n"
    );
    let proxy_env = root.path().join("home/developer/.rigbox/proxy.env");
    assert_eq!(std::fs::read_to_string(&proxy_env).expect("proxy.env"), on);
    let script = format!(
        "set -a; . {root_s}/etc/rigbox/env; set +a; . {}; \
         echo \"$OPENROUTER_API_KEY|$GREETING|$ANTHROPIC_BASE_URL\"",
        proxy_env.display()
    );
    assert_eq!(
        ok(&run("sh", &["-c", &script], &[], None).await),
        "managed-by-rigbox|hi|http://172.16.0.1:9090\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_without_managed_ai() {
    let tp = TestPlatform::start().await;
    let me = tp.user("owner@example.com").await;
    let (s, w) = me.post("/workspaces", json!({"name": "plain"})).await;
    assert_eq!(s, 201, "{w}");
    let ws = WorkspaceId::parse(w["id"].as_str().expect("id")).expect("an ID");
    let url = bridge_for(&tp, &ws, ManagedAi::default()).await;
    let inside = [
        ("RIGBOX_MODE", "workspace"),
        ("RIGBOX_BRIDGE_URL", url.as_str()),
    ];
    for args in [
        &["proxy", "on"][..],
        &["proxy", "off"],
        &["proxy", "dotenv", "/nonexistent/x"],
    ] {
        let o = rig(args, &inside).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("managed AI is not offered here"),
            "{}",
            stderr(&o)
        );
    }
    let human = ok(&rig(&["proxy", "status"], &inside).await);
    assert!(
        human.contains("none (managed AI is not offered here)"),
        "{human}"
    );
}
