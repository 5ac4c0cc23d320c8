//! BYOK mode through real HTTP (bridge-and-ai.md §12, api.md `PUT /users/me/ai-mode`,
//! `GET/PUT /workspaces/{ws}/ai-config`): the account's mode and the workspace's override,
//! inheritance, validation in the API's envelope, a provider key that is never returned and is
//! sealed at rest, what the guest gets in `/etc/rigbox/env` and through `/rig/v1` in both
//! modes, and the proxy's account lookup seeing a switch at the very next call.

use rigbox_control::config::ManagedAi;
use rigbox_control::sealing::MasterKey;
use rigbox_control::App;
use rigbox_testkit::{rig_v1_client, Client, TestPlatform};
use rigbox_types::wallet::Wallet;
use rigbox_types::WorkspaceId;
use serde_json::{json, Value};
use std::sync::Arc;

/// A key no response, log or database page may contain.
const SECRET: &str = "sk-byok-Secret-0123456789abcdef";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

async fn workspace(c: &Client, name: &str, body: Value) -> String {
    let mut body = body;
    body["name"] = json!(name);
    let (s, w) = c.post("/workspaces", body).await;
    assert_eq!(s, 201, "{w}");
    w["id"].as_str().expect("id").to_owned()
}

async fn config(c: &Client, ws: &str) -> Value {
    let (s, v) = c.get(&format!("/workspaces/{ws}/ai-config")).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn put_config(c: &Client, ws: &str, body: Value) -> (u16, Value) {
    c.put(&format!("/workspaces/{ws}/ai-config"), body).await
}

async fn account_mode(c: &Client, mode: &str) -> Value {
    let (s, v) = c.put("/users/me/ai-mode", json!({"mode": mode})).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// `(mode, provider, model, status)` of a configuration.
fn summary(c: &Value) -> (Value, Value, Value, Value) {
    (
        c["mode"].clone(),
        c["provider"].clone(),
        c["model"].clone(),
        c["status"].clone(),
    )
}

/// The stored sealed key of `ws`, read straight from the `workspace_ai` row.
async fn sealed_key(tp: &TestPlatform, ws: &str) -> Option<String> {
    let mut tx = tp.platform().app.store.begin().await.expect("tx");
    let v: Option<Option<String>> =
        sqlx::query_scalar("SELECT api_key_sealed FROM workspace_ai WHERE workspace_id = $1")
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await
            .expect("read");
    v.flatten()
}

/// Every byte of the database files (the database and its WAL).
fn database_bytes(tp: &TestPlatform) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(tp.data_dir()).expect("data dir") {
        let p = entry.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("rigbox.db") && p.is_file() {
            all.extend(std::fs::read(&p).expect("read"));
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn modes_inherit_and_override_and_the_key_is_never_returned_nor_stored_in_clear() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let other = tp.user("other@example.com").await;
    let ws = workspace(&me, "alpha", json!({})).await;

    // A new account is managed; a new workspace inherits (null).
    let c = config(&me, &ws).await;
    assert_eq!(
        summary(&c),
        (
            json!("managed"),
            Value::Null,
            Value::Null,
            json!("managed_active")
        )
    );
    assert!(c["updated_at"].is_string(), "{c}");
    let (_, w) = me.get(&format!("/workspaces/{ws}")).await;
    assert_eq!(w["ai_mode"], Value::Null, "{w}");
    let (_, credits) = me.get("/users/me/credits").await;
    assert_eq!(credits["mode"], "managed");

    // The account goes byok: the answer is the credits body with the new mode; the workspace
    // inherits it and has no key yet.
    let r = account_mode(&me, "byok").await;
    assert!(
        r["remaining_micro"].is_i64() && r["period_end"].is_string(),
        "{r}"
    );
    assert_eq!(me.get("/users/me/credits").await.1["mode"], "byok");
    assert_eq!(
        summary(&config(&me, &ws).await),
        (
            json!("byok"),
            Value::Null,
            Value::Null,
            json!("invalid_missing_key")
        )
    );
    assert_eq!(
        me.get(&format!("/workspaces/{ws}")).await.1["ai_mode"],
        Value::Null
    );
    // Another account is not affected.
    assert_eq!(other.get("/users/me/credits").await.1["mode"], "managed");

    // The key is stored with its provider and model; no answer ever carries it.
    let (s, c) = put_config(
        &me,
        &ws,
        json!({"provider": "openai", "model": "gpt-4o", "api_key": SECRET}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        summary(&c),
        (
            json!("byok"),
            json!("openai"),
            json!("gpt-4o"),
            json!("byok_active")
        )
    );
    let mut keys: Vec<&String> = c.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["mode", "model", "provider", "status", "updated_at"]);
    for path in [
        format!("/workspaces/{ws}/ai-config"),
        format!("/workspaces/{ws}"),
        "/workspaces".to_owned(),
    ] {
        let (s, v) = me.get(&path).await;
        assert_eq!(s, 200);
        assert!(!v.to_string().contains(SECRET), "{path} returned the key");
    }

    // At rest it is sealed: the row holds `v1:…`, and no database page holds the plaintext.
    let sealed = sealed_key(&tp, &ws).await.expect("a sealed key is stored");
    assert!(sealed.starts_with("v1:"), "{sealed}");
    assert!(!sealed.contains(SECRET));
    assert!(
        !contains(&database_bytes(&tp), SECRET),
        "the plaintext key is in the database files"
    );

    // Omitted keeps, null clears.
    let (_, c) = put_config(&me, &ws, json!({"model": null})).await;
    assert_eq!(
        summary(&c),
        (
            json!("byok"),
            json!("openai"),
            Value::Null,
            json!("byok_active")
        )
    );

    // A workspace override of `managed` wins over the account's byok, and deletes the key;
    // the provider stays.
    let (_, c) = put_config(&me, &ws, json!({"mode": "managed"})).await;
    assert_eq!(
        summary(&c),
        (
            json!("managed"),
            json!("openai"),
            Value::Null,
            json!("managed_active")
        )
    );
    assert_eq!(
        me.get(&format!("/workspaces/{ws}")).await.1["ai_mode"],
        "managed"
    );
    assert_eq!(
        sealed_key(&tp, &ws).await,
        None,
        "switching to managed deletes the key"
    );
    // …and a key is not taken while managed.
    let (s, e) = put_config(&me, &ws, json!({"api_key": SECRET})).await;
    assert_eq!((s, code(&e)), (400, "validation_failed"), "{e}");
    assert!(
        e["error"]["details"]["fields"]["api_key"].is_string(),
        "{e}"
    );

    // Back to inherit: byok again (the account's), without a key.
    let (_, c) = put_config(&me, &ws, json!({"mode": null})).await;
    assert_eq!(summary(&c).3, json!("invalid_missing_key"));
    assert_eq!(
        me.get(&format!("/workspaces/{ws}")).await.1["ai_mode"],
        Value::Null
    );

    // An account switch to managed deletes the keys of the workspaces that inherit it.
    let (s, c) = put_config(&me, &ws, json!({"api_key": SECRET})).await;
    assert_eq!((s, summary(&c).3), (200, json!("byok_active")), "{c}");
    assert_eq!(account_mode(&me, "managed").await["mode"], "managed");
    assert_eq!(summary(&config(&me, &ws).await).3, json!("managed_active"));
    account_mode(&me, "byok").await;
    assert_eq!(
        summary(&config(&me, &ws).await).3,
        json!("invalid_missing_key")
    );
    assert_eq!(sealed_key(&tp, &ws).await, None);

    // Another user's workspace does not exist for me.
    let (s, e) = other.get(&format!("/workspaces/{ws}/ai-config")).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
    let (s, _) = put_config(&other, &ws, json!({"mode": "byok"})).await;
    assert_eq!(s, 404);
    // The workspace's name works as well as its ID.
    assert_eq!(config(&me, "alpha").await["mode"], "byok");
}

#[tokio::test]
async fn validation_errors_use_the_api_envelope() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "alpha", json!({})).await;
    let field = |e: &Value, f: &str| {
        e["error"]["details"]["fields"][f]
            .as_str()
            .map(str::to_owned)
    };

    let (s, e) = me.put("/users/me/ai-mode", json!({"mode": "free"})).await;
    assert_eq!((s, code(&e)), (400, "validation_failed"), "{e}");
    assert!(field(&e, "mode").is_some(), "{e}");
    let (s, e) = me
        .put("/users/me/ai-mode", json!({"mode": "byok", "extra": 1}))
        .await;
    assert_eq!(
        (s, field(&e, "extra").as_deref()),
        (400, Some("unknown field")),
        "{e}"
    );
    let (s, e) = me.put("/users/me/ai-mode", json!({})).await;
    assert_eq!(
        (s, field(&e, "mode").as_deref()),
        (400, Some("is required")),
        "{e}"
    );
    assert_eq!(
        me.get("/users/me/credits").await.1["mode"],
        "managed",
        "nothing changed"
    );

    let path = format!("/workspaces/{ws}/ai-config");
    for (body, f) in [
        (json!({"bogus": true}), "bogus"),
        (json!({"provider": "mistral"}), "provider"),
        (json!({"mode": "inherit"}), "mode"),
        (json!({"model": 7}), "model"),
        (json!({"model": " "}), "model"),
        // A key needs byok and a provider, and must fit on one line of /etc/rigbox/env.
        (json!({"mode": "byok", "api_key": SECRET}), "provider"),
        (
            json!({"mode": "byok", "provider": "google", "api_key": "two words"}),
            "api_key",
        ),
        (
            json!({"mode": "byok", "provider": "google", "api_key": ""}),
            "api_key",
        ),
        (json!({"provider": "google", "api_key": SECRET}), "api_key"),
    ] {
        let (s, e) = me.put(&path, body.clone()).await;
        assert_eq!((s, code(&e)), (400, "validation_failed"), "{body}: {e}");
        assert!(field(&e, f).is_some(), "{body}: {e}");
        assert!(e["error"]["details"]["request_id"].is_string(), "{e}");
        assert!(!e.to_string().contains(SECRET), "an error repeated the key");
    }
    // A refused request changed nothing.
    assert_eq!(
        summary(&config(&me, &ws).await),
        (
            json!("managed"),
            Value::Null,
            Value::Null,
            json!("managed_active")
        )
    );

    // A key that is stored cannot lose its provider (it could not be delivered).
    let (s, _) = put_config(
        &me,
        &ws,
        json!({"mode": "byok", "provider": "google", "api_key": SECRET}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = put_config(&me, &ws, json!({"provider": null})).await;
    assert_eq!((s, field(&e, "provider").is_some()), (400, true), "{e}");
    let (s, c) = put_config(&me, &ws, json!({"provider": null, "api_key": null})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        summary(&c),
        (
            json!("byok"),
            Value::Null,
            Value::Null,
            json!("invalid_missing_key")
        )
    );
}

/// A control plane over the platform's store whose proxy offers managed AI.
fn app_with(tp: &TestPlatform, ai: ManagedAi) -> Arc<App> {
    let base = &tp.platform().app;
    let mut config = base.config.clone();
    config.managed_ai = ai;
    App::new(base.store.clone(), config, base.clock.clone(), Vec::new())
}

/// `/etc/rigbox/env` and `~/.rigbox/proxy.env` as the agent would write them.
async fn guest_env(app: &Arc<App>, ws: &str) -> (Vec<(String, String)>, usize) {
    let row = {
        let mut tx = app.store.begin().await.expect("tx");
        app.store
            .workspace_by_id(&mut *tx, ws)
            .await
            .expect("read")
            .expect("the workspace")
    };
    let cfg = app.guest_config_of(&row).await.expect("config");
    (
        cfg.env.into_iter().map(|e| (e.key, e.value)).collect(),
        cfg.proxy_env.len(),
    )
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_guest_gets_the_proxy_pair_in_managed_and_the_provider_key_in_byok() {
    let tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "envy", json!({"env_vars": {"A": "1"}})).await;
    let app = app_with(
        &tp,
        ManagedAi {
            enabled: true,
            openrouter: true,
            anthropic: true,
            brave: false,
        },
    );
    let vm = rig_v1_client(app.clone(), &ws).await;
    let managed = pairs(&[
        ("OPENROUTER_BASE_URL", "http://172.16.0.1:9090/v1"),
        ("OPENROUTER_API_KEY", "managed-by-rigbox"),
        ("A", "1"),
    ]);

    // Managed.
    let (env, proxy_env) = guest_env(&app, &ws).await;
    assert_eq!(env, managed);
    assert_eq!(proxy_env, 7, "the `all` group");
    let (_, p) = vm.get("/proxy/env").await;
    assert_eq!(p["mode"], "managed");
    assert_eq!(
        p["login_variables"],
        json!(["OPENROUTER_BASE_URL", "OPENROUTER_API_KEY"])
    );
    assert_eq!(vm.get("/workspace").await.1["ai_mode"], "managed");

    // BYOK with an Anthropic key: the key under its provider's name, no proxy variables.
    let (s, _) = put_config(
        &me,
        &ws,
        json!({"mode": "byok", "provider": "anthropic", "api_key": SECRET}),
    )
    .await;
    assert_eq!(s, 200);
    let (env, proxy_env) = guest_env(&app, &ws).await;
    assert_eq!(env, pairs(&[("ANTHROPIC_API_KEY", SECRET), ("A", "1")]));
    assert_eq!(proxy_env, 0);
    let (s, p) = vm.get("/proxy/env").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (&p["mode"], &p["groups"], &p["login_variables"]),
        (&json!("byok"), &json!({}), &json!(["ANTHROPIC_API_KEY"]))
    );
    assert!(
        !p.to_string().contains(SECRET),
        "the bridge returned the key"
    );
    assert_eq!(vm.get("/workspace").await.1["ai_mode"], "byok");

    // Another provider: the same key under that provider's name.
    for (provider, var) in [("openai", "OPENAI_API_KEY"), ("google", "GOOGLE_API_KEY")] {
        let (s, _) = put_config(&me, &ws, json!({"provider": provider})).await;
        assert_eq!(s, 200);
        assert_eq!(
            guest_env(&app, &ws).await.0,
            pairs(&[(var, SECRET), ("A", "1")])
        );
    }
    // A user variable of the same name wins, as for the platform's other variables.
    let (s, _) = me
        .patch(
            &format!("/workspaces/{ws}/env"),
            json!({"env_vars": {"GOOGLE_API_KEY": "mine"}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        guest_env(&app, &ws).await.0,
        pairs(&[("A", "1"), ("GOOGLE_API_KEY", "mine")])
    );
    me.patch(
        &format!("/workspaces/{ws}/env"),
        json!({"env_vars": {"GOOGLE_API_KEY": null}}),
    )
    .await;

    // BYOK by the account's mode with the key removed: nothing AI at all.
    account_mode(&me, "byok").await;
    put_config(&me, &ws, json!({"mode": null, "api_key": null})).await;
    assert_eq!(guest_env(&app, &ws).await, (pairs(&[("A", "1")]), 0));
    let (_, p) = vm.get("/proxy/env").await;
    assert_eq!(
        (&p["mode"], &p["login_variables"]),
        (&json!("byok"), &json!([]))
    );

    // Back to managed: the proxy's pair again and no key.
    account_mode(&me, "managed").await;
    assert_eq!(guest_env(&app, &ws).await, (managed, 7));
    assert_eq!(vm.get("/proxy/env").await.1["mode"], "managed");
}

#[tokio::test]
async fn the_proxys_account_lookup_sees_a_switch_at_the_very_next_call() {
    let tp = TestPlatform::start().await;
    let app = tp.platform().app.clone();
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "alpha", json!({})).await;
    let id = WorkspaceId::parse(&ws).expect("id");
    let wallet = app.wallet();
    let managed = |w: &Option<rigbox_types::wallet::Account>| w.as_ref().map(|a| a.managed);

    // The first answer is cached (for 2 s); every switch below comes well within that.
    assert_eq!(
        managed(&wallet.account(&id).await.expect("account")),
        Some(true)
    );
    put_config(&me, &ws, json!({"mode": "byok"})).await;
    assert_eq!(
        managed(&wallet.account(&id).await.expect("account")),
        Some(false)
    );
    put_config(&me, &ws, json!({"mode": null})).await;
    assert_eq!(
        managed(&wallet.account(&id).await.expect("account")),
        Some(true)
    );
    account_mode(&me, "byok").await;
    assert_eq!(
        managed(&wallet.account(&id).await.expect("account")),
        Some(false)
    );
    account_mode(&me, "managed").await;
    let a = wallet.account(&id).await.expect("account").expect("exists");
    assert!(a.managed);
    assert_eq!(a.workspace_name, "alpha");
}

/// A platform with one workspace in BYOK with [`SECRET`] stored, restarted with `master_key`
/// (`None`: the one generated into the data dir at the first start); its user is connected
/// anew (the old connection may still reach the stopped server).
async fn stored_then_restarted(
    master_key: Option<MasterKey>,
) -> (TestPlatform, Client, String, Arc<App>) {
    let mut tp = TestPlatform::start().await;
    let me = tp.user("me@example.com").await;
    let ws = workspace(&me, "alpha", json!({})).await;
    let (s, _) = put_config(
        &me,
        &ws,
        json!({"mode": "byok", "provider": "openai", "api_key": SECRET}),
    )
    .await;
    assert_eq!(s, 200);
    if master_key.is_some() {
        tp.config.master_key = master_key;
    }
    tp.restart().await;
    let me = Client::new(&tp.url(), me.token.clone());
    let app = tp.platform().app.clone();
    (tp, me, ws, app)
}

#[tokio::test]
async fn a_stored_key_still_opens_after_a_restart() {
    // The master key was generated into the data dir and is read back at the next start.
    let (_tp, me, ws, app) = stored_then_restarted(None).await;
    assert_eq!(
        guest_env(&app, &ws).await,
        (pairs(&[("OPENAI_API_KEY", SECRET)]), 0)
    );
    assert_eq!(summary(&config(&me, &ws).await).3, json!("byok_active"));
}

#[tokio::test]
async fn a_key_the_master_key_no_longer_opens_is_missing_until_stored_again() {
    // The operator replaces the master key: what was sealed with the old one no longer opens.
    let (_tp, me, ws, app) = stored_then_restarted(Some(MasterKey::generate())).await;
    assert_eq!(guest_env(&app, &ws).await, (pairs(&[]), 0));
    assert_eq!(
        summary(&config(&me, &ws).await).3,
        json!("invalid_missing_key")
    );
    // Stored again, under the new master key.
    let (s, c) = put_config(&me, &ws, json!({"api_key": SECRET})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "byok_active", "{c}");
    assert_eq!(
        guest_env(&app, &ws).await,
        (pairs(&[("OPENAI_API_KEY", SECRET)]), 0)
    );
}
