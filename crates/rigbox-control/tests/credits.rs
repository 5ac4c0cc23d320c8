//! The read side of the credit wallet through real HTTP: `GET /users/me/credits` (open holds
//! reserve funds), the ledger with its filters and pages, `GET /users/me/ai-usage`, and what a
//! VM reads through its bridge (`/rig/v1/credits`, `/rig/v1/proxy/env`, `/rig/v1/usage`), plus
//! the managed AI variables in the guest's configuration. Charges and holds are written straight
//! into the store, as the wallet would. What the proxy offers ([`ManagedAi`]) is set on a second
//! `App` over the platform's store, so these tests do not depend on how `rigboxd` derives it.

use rigbox_control::config::ManagedAi;
use rigbox_control::store::LedgerRow;
use rigbox_control::App;
use rigbox_testkit::{rig_v1_client, Client, TestPlatform};
use serde_json::{json, Value};
use std::sync::Arc;

const DAY_US: i64 = 86_400_000_000;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// One `charge` as the wallet writes it.
struct Charge<'a> {
    workspace: (&'a str, &'a str),
    model: Option<&'a str>,
    tokens: (i64, i64),
    micro: i64,
    ago_us: i64,
    subject: Option<&'a str>,
}

async fn charge(app: &Arc<App>, user_id: &str, c: Charge<'_>) -> String {
    let mut tx = app.store.begin().await.expect("tx");
    app.store.lock_user(&mut tx, user_id).await.expect("lock");
    let last = app
        .store
        .last_ledger_entry(&mut *tx, user_id)
        .await
        .expect("last")
        .expect("the first monthly reset");
    let request_id = uuid::Uuid::new_v4().to_string();
    let at = app.now() - c.ago_us;
    app.store
        .insert_ledger(
            &mut *tx,
            &LedgerRow {
                id: uuid::Uuid::new_v4().to_string(),
                user_id: user_id.to_owned(),
                seq: last.seq + 1,
                kind: "charge".into(),
                amount_micro: -c.micro,
                balance_after_micro: last.balance_after_micro - c.micro,
                period_start: last.period_start,
                created_at: at,
                workspace_id: Some(c.workspace.0.to_owned()),
                workspace_name: Some(c.workspace.1.to_owned()),
                request_id: Some(request_id.clone()),
                endpoint: Some("/v1/chat/completions".into()),
                model: c.model.map(str::to_owned),
                input_tokens: Some(c.tokens.0),
                output_tokens: Some(c.tokens.1),
                cost_usd: Some(c.micro as f64 / 100_000_000.0),
                estimated: c.tokens.1 == 0,
                subject: c.subject.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
        .expect("charge written");
    tx.commit().await.expect("commit");
    request_id
}

/// A hold in `state` as the wallet keeps it.
async fn hold(app: &Arc<App>, user_id: &str, ws: &str, amount: i64, state: &str) {
    let mut tx = app.store.begin().await.expect("tx");
    sqlx::query(
        "INSERT INTO ai_holds (id, user_id, workspace_id, workspace_name, node_id, incarnation, \
         endpoint, model, subject, amount_micro, state, created_at) \
         VALUES ($1, $2, $3, 'alpha', 'node-1', 'test', '/v1/chat/completions', 'm', NULL, $4, \
         $5, $6)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(user_id)
    .bind(ws)
    .bind(amount)
    .bind(state)
    .bind(app.now())
    .execute(&mut *tx)
    .await
    .expect("hold written");
    tx.commit().await.expect("commit");
}

/// A control plane over the platform's store whose proxy offers `ai`.
fn app_with(tp: &TestPlatform, ai: ManagedAi, workspaces_per_minute: u32) -> Arc<App> {
    let base = &tp.platform().app;
    let mut config = base.config.clone();
    config.managed_ai = ai;
    config.rate_limits.workspaces = workspaces_per_minute;
    App::new(base.store.clone(), config, base.clock.clone(), Vec::new())
}

async fn workspace(c: &Client, name: &str) -> String {
    let (s, w) = c.post("/workspaces", json!({"name": name})).await;
    assert_eq!(s, 201, "{w}");
    w["id"].as_str().expect("id").to_owned()
}

const MANAGED: ManagedAi = ManagedAi {
    enabled: true,
    openrouter: true,
    anthropic: true,
    brave: false,
};

#[tokio::test]
async fn credits_ledger_and_ai_usage() {
    let tp = TestPlatform::start().await;
    let app = tp.platform().app.clone();
    let me = tp.user("me@example.com").await;
    let other = tp.user("other@example.com").await;
    let uid = me.user_id().await;
    let ws = workspace(&me, "alpha").await;
    let gone = "ws-deleted1";

    // 250 credits, then three charges (one two days ago, one in a deleted workspace) and an
    // old one outside 30 days.
    charge(
        &app,
        &uid,
        Charge {
            workspace: (&ws, "alpha"),
            model: Some("openai/gpt-4o"),
            tokens: (100, 50),
            micro: 1_500_000,
            ago_us: 0,
            subject: Some("tenant-42"),
        },
    )
    .await;
    charge(
        &app,
        &uid,
        Charge {
            workspace: (&ws, "alpha"),
            model: Some("anthropic/claude-sonnet-4"),
            tokens: (10, 0),
            micro: 500_000,
            ago_us: 2 * DAY_US,
            subject: None,
        },
    )
    .await;
    charge(
        &app,
        &uid,
        Charge {
            workspace: (gone, "gone"),
            model: Some("openai/gpt-4o"),
            tokens: (1, 2),
            micro: 250_000,
            ago_us: 3600 * 1_000_000,
            subject: None,
        },
    )
    .await;
    charge(
        &app,
        &uid,
        Charge {
            workspace: (gone, "gone"),
            model: Some("openai/gpt-4o"),
            tokens: (1000, 1000),
            micro: 7_000_000,
            ago_us: 40 * DAY_US,
            subject: Some("tenant-42"),
        },
    )
    .await;
    app.adjust_credits(&uid, 1.5, "goodwill".into())
        .await
        .expect("adjustment");
    hold(&app, &uid, &ws, 2_000_000, "open").await;
    hold(&app, &uid, &ws, 300_000, "open").await;
    hold(&app, &uid, &ws, 9_000_000, "settled").await;
    hold(&app, &uid, &ws, 9_000_000, "released").await;

    // Credits: open holds are reserved, settled and released ones are not.
    let balance = 250_000_000 - 1_500_000 - 500_000 - 250_000 - 7_000_000 + 1_500_000;
    let (s, c) = me.get("/users/me/credits").await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["balance_micro"], balance);
    assert_eq!(c["reserved_micro"], 2_300_000);
    assert_eq!(c["remaining_micro"], balance - 2_300_000);
    assert_eq!(c["remaining"], (balance - 2_300_000) as f64 / 1e6);
    assert_eq!(
        (c["total_micro"].as_i64(), c["mode"].as_str()),
        (Some(250_000_000), Some("managed"))
    );
    // Another account's wallet is untouched.
    let (_, oc) = other.get("/users/me/credits").await;
    assert_eq!(
        (oc["balance_micro"].as_i64(), oc["reserved_micro"].as_i64()),
        (Some(250_000_000), Some(0))
    );

    // The ledger, newest first, with every charge field.
    let (s, l) = me.get("/users/me/credits/ledger").await;
    assert_eq!(s, 200, "{l}");
    let items = l["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "adjustment",
            "charge",
            "charge",
            "charge",
            "charge",
            "monthly_reset"
        ]
    );
    assert_eq!(items[0]["note"], "goodwill");
    assert_eq!(items[0]["balance_after_micro"], balance);
    let first = &items[4];
    assert_eq!(first["amount_micro"], -1_500_000);
    assert_eq!(first["workspace_id"], ws.as_str());
    assert_eq!(first["workspace_name"], "alpha");
    assert_eq!(first["endpoint"], "/v1/chat/completions");
    assert_eq!(first["model"], "openai/gpt-4o");
    assert_eq!(
        (
            first["input_tokens"].as_i64(),
            first["output_tokens"].as_i64()
        ),
        (Some(100), Some(50))
    );
    assert_eq!(first["cost_usd"], 0.015);
    assert_eq!(
        (first["estimated"].as_bool(), first["subject"].as_str()),
        (Some(false), Some("tenant-42"))
    );
    assert!(first["request_id"].is_string() && first["note"].is_null());
    assert_eq!(items[3]["estimated"], true);
    assert!(items[5]["workspace_id"].is_null() && items[5]["model"].is_null());

    // Filters: kind, workspace, both; a bad kind is a 400 naming the field.
    let (_, l) = me.get("/users/me/credits/ledger?kind=charge").await;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(4));
    let (_, l) = me
        .get(&format!("/users/me/credits/ledger?workspace_id={gone}"))
        .await;
    let names: Vec<&str> = l["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["workspace_name"].as_str())
        .collect();
    assert_eq!(names, ["gone", "gone"]);
    let (_, l) = me
        .get(&format!(
            "/users/me/credits/ledger?workspace_id={ws}&kind=adjustment"
        ))
        .await;
    assert_eq!(l["items"], json!([]));
    let (s, e) = me.get("/users/me/credits/ledger?kind=refund").await;
    assert_eq!((s, code(&e)), (400, "validation_failed"));
    assert!(e["error"]["details"]["fields"]["kind"].is_string(), "{e}");
    let (s, e) = me.get("/users/me/credits/ledger?limit=0").await;
    assert_eq!((s, code(&e)), (400, "validation_failed"));
    assert_eq!(me.get("/users/me/credits/ledger?cursor=nope").await.0, 400);
    assert_eq!(
        other
            .get(&format!("/users/me/credits/ledger?workspace_id={ws}"))
            .await
            .1["items"],
        json!([])
    );

    // Pages of two, following next_cursor, give the same entries.
    let mut seen = Vec::new();
    let mut path = "/users/me/credits/ledger?limit=2&kind=charge".to_owned();
    loop {
        let (s, page) = me.get(&path).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/users/me/credits/ledger?limit=2&kind=charge&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4);

    // AI usage: every day of the window, per workspace (deleted ones by their last name) and
    // per model; the 40-day-old charge only in a window that reaches it.
    let (s, u) = me.get("/users/me/ai-usage?days=7").await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["window_days"], 7);
    let daily = u["daily"].as_array().expect("daily");
    assert_eq!(daily.len(), 7);
    let today = time::OffsetDateTime::now_utc().date();
    let ymd = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    assert_eq!(daily[6]["day"], ymd(today));
    let two_ago = &daily[4];
    assert_eq!(two_ago["day"], ymd(today - time::Duration::days(2)));
    assert_eq!(
        (
            two_ago["requests"].as_i64(),
            two_ago["credits_micro"].as_i64()
        ),
        (Some(1), Some(500_000))
    );
    assert_eq!(two_ago["credits"], 0.5);
    assert_eq!(daily[0]["requests"], 0);
    let total: i64 = daily
        .iter()
        .filter_map(|d| d["credits_micro"].as_i64())
        .sum();
    let requests: i64 = daily.iter().filter_map(|d| d["requests"].as_i64()).sum();
    // The charge an hour ago may fall on yesterday just after midnight; either way it counts.
    assert_eq!((total, requests), (2_250_000, 3));
    assert_eq!(
        u["by_workspace"],
        json!([
            {"workspace_id": ws, "workspace_name": "alpha", "input_tokens": 110, "output_tokens": 50,
             "credits": 2.0, "credits_micro": 2_000_000, "requests": 2},
            {"workspace_id": gone, "workspace_name": "gone", "input_tokens": 1, "output_tokens": 2,
             "credits": 0.25, "credits_micro": 250_000, "requests": 1},
        ])
    );
    assert_eq!(
        u["by_model"],
        json!([
            {"model": "openai/gpt-4o", "input_tokens": 101, "output_tokens": 52,
             "credits": 1.75, "credits_micro": 1_750_000, "requests": 2},
            {"model": "anthropic/claude-sonnet-4", "input_tokens": 10, "output_tokens": 0,
             "credits": 0.5, "credits_micro": 500_000, "requests": 1},
        ])
    );
    let (_, u) = me.get("/users/me/ai-usage").await;
    assert_eq!(
        (
            u["window_days"].as_i64(),
            u["daily"].as_array().map(Vec::len)
        ),
        (Some(30), Some(30))
    );
    let (_, u) = me.get("/users/me/ai-usage?days=90").await;
    assert_eq!(u["by_workspace"][0]["workspace_name"], "gone");
    assert_eq!(u["by_workspace"][0]["credits_micro"], 7_250_000);
    for bad in ["0", "91", "-1", "many"] {
        let (s, e) = me.get(&format!("/users/me/ai-usage?days={bad}")).await;
        assert_eq!((s, code(&e)), (400, "validation_failed"), "days={bad}: {e}");
    }
    let (_, u) = other.get("/users/me/ai-usage").await;
    assert_eq!(
        (u["by_workspace"].clone(), u["by_model"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(tp.anon().get("/users/me/ai-usage").await.0, 401);

    // Through the bridge: the owner's wallet, and the subject's charges in a window.
    let vm = rig_v1_client(app_with(&tp, MANAGED, 1000), &ws).await;
    let (s, vc) = vm.get("/credits").await;
    assert_eq!(s, 200, "{vc}");
    assert_eq!(vc["remaining_micro"], c["remaining_micro"]);
    assert_eq!(vc["reserved_micro"], 2_300_000);
    let (s, su) = vm.get("/usage?subject=tenant-42").await;
    assert_eq!(s, 200, "{su}");
    assert_eq!(
        su,
        json!({"subject": "tenant-42", "window_seconds": 86_400, "credits": 1.5,
               "credits_micro": 1_500_000, "input_tokens": 100, "output_tokens": 50, "requests": 1})
    );
    // The 40-day-old charge of the same subject is beyond the longest window.
    let (_, su) = vm.get("/usage?subject=tenant-42&window=30d").await;
    assert_eq!(
        (su["window_seconds"].as_i64(), su["requests"].as_i64()),
        (Some(30 * 86_400), Some(1))
    );
    let (_, su) = vm.get("/usage?subject=nobody&window=3600").await;
    assert_eq!(
        (su["window_seconds"].as_i64(), su["credits_micro"].as_i64()),
        (Some(3600), Some(0))
    );
    for bad in [
        "/usage",
        "/usage?subject=",
        "/usage?subject=%20",
        "/usage?subject=x&window=31d",
        "/usage?subject=x&window=1w",
        "/usage?subject=x&window=0",
    ] {
        let (s, e) = vm.get(bad).await;
        assert_eq!((s, code(&e)), (400, "validation_failed"), "{bad}: {e}");
    }
    let long = "x".repeat(257);
    assert_eq!(vm.get(&format!("/usage?subject={long}")).await.0, 400);
}

#[tokio::test]
async fn proxy_env_and_the_guest_environment() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let (s, w) = me
        .post(
            "/workspaces",
            json!({"name": "envy", "env_vars": {"OPENROUTER_API_KEY": "mine", "A": "1"}}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let ws = w["id"].as_str().expect("id").to_owned();
    let app = app_with(&tp, MANAGED, 1000);
    let vm = rig_v1_client(app.clone(), &ws).await;
    let (s, p) = vm.get("/proxy/env").await;
    assert_eq!(s, 200, "{p}");
    let v1 = json!([{"name": "OPENAI_BASE_URL", "value": "http://172.16.0.1:9090/v1"},
                    {"name": "OPENAI_API_KEY", "value": "managed-by-rigbox"}]);
    assert_eq!(
        p,
        json!({
            "mode": "managed",
            "bridge_url": "http://172.16.0.1:9090",
            "proxy_env_path": "/home/developer/.rigbox/proxy.env",
            "groups": {
                "openrouter": [{"name": "OPENROUTER_BASE_URL", "value": "http://172.16.0.1:9090/v1"},
                               {"name": "OPENROUTER_API_KEY", "value": "managed-by-rigbox"}],
                "openai": v1,
                "v1": v1,
                "anthropic": [{"name": "ANTHROPIC_BASE_URL", "value": "http://172.16.0.1:9090"},
                              {"name": "ANTHROPIC_AUTH_TOKEN", "value": "managed-by-rigbox"}],
                "all": [{"name": "OPENROUTER_BASE_URL", "value": "http://172.16.0.1:9090/v1"},
                        {"name": "OPENROUTER_API_KEY", "value": "managed-by-rigbox"},
                        {"name": "OPENAI_BASE_URL", "value": "http://172.16.0.1:9090/v1"},
                        {"name": "OPENAI_API_KEY", "value": "managed-by-rigbox"},
                        {"name": "ANTHROPIC_BASE_URL", "value": "http://172.16.0.1:9090"},
                        {"name": "ANTHROPIC_AUTH_TOKEN", "value": "managed-by-rigbox"},
                        {"name": "RIGBOX_AI_PROXY_URL", "value": "http://172.16.0.1:9090"}],
            },
            "login_variables": ["OPENROUTER_BASE_URL", "OPENROUTER_API_KEY"],
        })
    );

    // The guest: platform variables first, a user variable of the same name replaces the
    // platform's; proxy.env gets the `all` group.
    let row = {
        let mut tx = app.store.begin().await.expect("tx");
        app.store
            .workspace_by_id(&mut *tx, &ws)
            .await
            .expect("read")
            .expect("the workspace")
    };
    let cfg = app.guest_config_of(&row).await.expect("config");
    let env: Vec<(&str, &str)> = cfg
        .env
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("OPENROUTER_BASE_URL", "http://172.16.0.1:9090/v1"),
            ("A", "1"),
            ("OPENROUTER_API_KEY", "mine")
        ]
    );
    assert_eq!(
        serde_json::to_value(&cfg.proxy_env).expect("json"),
        p["groups"]["all"]
    );
}

#[tokio::test]
async fn without_managed_ai_nothing_is_offered() {
    let tp = TestPlatform::start().await;
    let app = app_with(&tp, ManagedAi::default(), 3);
    let me = tp.user("me@example.com").await;
    let (s, w) = me
        .post(
            "/workspaces",
            json!({"name": "plain", "env_vars": {"A": "1"}}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let ws = w["id"].as_str().expect("id").to_owned();
    let vm = rig_v1_client(app.clone(), &ws).await;
    let (s, p) = vm.get("/proxy/env").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["groups"].clone(), p["login_variables"].clone()),
        (json!({}), json!([]))
    );
    let row = {
        let mut tx = app.store.begin().await.expect("tx");
        app.store
            .workspace_by_id(&mut *tx, &ws)
            .await
            .expect("read")
            .expect("ws")
    };
    let cfg = app.guest_config_of(&row).await.expect("config");
    assert_eq!(cfg.env.len(), 1);
    assert!(cfg.proxy_env.is_empty());

    // `/rig/v1` shares the control plane's rate limits, keyed by the workspace.
    assert_eq!(vm.get("/credits").await.0, 200);
    assert_eq!(vm.get("/usage?subject=a").await.0, 200);
    let r = vm.raw("GET", "/credits", None, false).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["details"]["class"], "workspaces");
    // The owner's own API calls have their own bucket.
    assert_eq!(me.get("/users/me/credits").await.0, 200);
}
