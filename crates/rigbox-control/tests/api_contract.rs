//! Every endpoint of the foundation through real HTTP, with the error paths the spec names.

use rigbox_testkit::{Client, TestPlatform, PASSWORD};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

async fn session(tp: &TestPlatform, email: &str) -> Client {
    let (c, s) = tp
        .anon()
        .post("/auth/login", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(c, 200, "{s}");
    Client::new(&tp.url(), s["token"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn login_logout_me_and_lockout() {
    let tp = TestPlatform::start().await;
    let key = tp.user("Me@Example.com").await;
    let anon = tp.anon();
    let (c, wrong) = anon
        .post(
            "/auth/login",
            json!({"email": "me@example.com", "password": "wrong-password"}),
        )
        .await;
    assert_eq!((c, code(&wrong)), (401, "invalid_credentials"));
    let (c, unknown) = anon
        .post(
            "/auth/login",
            json!({"email": "nobody@example.com", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(c, 401);
    assert_eq!(
        wrong["error"]["message"], unknown["error"]["message"],
        "same message whether the email exists or not"
    );

    let s = session(&tp, " ME@example.com ").await;
    let (c, me) = s.get("/auth/me").await;
    assert_eq!(c, 200);
    assert_eq!(
        (me["email"].as_str(), me["auth_method"].as_str()),
        (Some("me@example.com"), Some("session"))
    );
    let (_, me) = key.get("/auth/me").await;
    assert_eq!(me["auth_method"], "api_key");
    assert!(me["api_key_id"].is_string());
    assert!(me["id"].as_str().is_some_and(|id| id.starts_with("usr-")));

    // Logout revokes the session; an API key cannot log out.
    assert_eq!(key.post("/auth/logout", json!({})).await.0, 400);
    assert_eq!(s.post("/auth/logout", json!({})).await.0, 204);
    let (c, body) = s.get("/auth/me").await;
    assert_eq!((c, code(&body)), (401, "unauthorized"));

    // Ten failures lock the email for a while (429), even with the right password.
    for _ in 0..10 {
        anon.post(
            "/auth/login",
            json!({"email": "me@example.com", "password": "wrong-password"}),
        )
        .await;
    }
    let r = anon
        .raw(
            "POST",
            "/auth/login",
            Some(json!({"email": "me@example.com", "password": PASSWORD}).to_string()),
            true,
        )
        .await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn signup_switch_and_disabled_accounts() {
    let tp = TestPlatform::start().await;
    let (c, b) = tp
        .anon()
        .post(
            "/auth/signup",
            json!({"email": "s@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!((c, code(&b)), (403, "signup_disabled"));

    let tp = TestPlatform::start_with(|c| c.signup_enabled = true).await;
    let r = tp
        .anon()
        .raw(
            "POST",
            "/auth/signup",
            Some(json!({"email": "s@example.com", "password": PASSWORD, "name": "S"}).to_string()),
            true,
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.starts_with("rigbox_session=rbs_")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], false);
    let (c, b) = tp
        .anon()
        .post(
            "/auth/signup",
            json!({"email": "S@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!((c, code(&b)), (409, "email_taken"));
    let (c, b) = tp
        .anon()
        .post(
            "/auth/signup",
            json!({"email": "x@example.com", "password": "short"}),
        )
        .await;
    assert_eq!((c, code(&b)), (400, "validation_failed"));
    assert!(b["error"]["details"]["fields"]["password"].is_string());

    let key = tp.user("d@example.com").await;
    tp.platform()
        .app
        .admin_set_flag(
            "d@example.com",
            rigbox_control::store::UserFlag::Disabled,
            true,
        )
        .await
        .expect("disable");
    let (c, b) = key.get("/workspaces").await;
    assert_eq!((c, code(&b)), (403, "account_disabled"));
    let (c, b) = tp
        .anon()
        .post(
            "/auth/login",
            json!({"email": "d@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!((c, code(&b)), (403, "account_disabled"));
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_header_and_password_change_revokes_other_sessions() {
    let tp = TestPlatform::start().await;
    let key = tp.user("c@example.com").await;
    let s1 = session(&tp, "c@example.com").await;
    let s2 = session(&tp, "c@example.com").await;
    let token = s1.token.clone().expect("token");
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1{p}", tp.url());
    let r = http
        .get(url("/workspaces"))
        .header("cookie", format!("rigbox_session={token}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(url("/api-keys"))
        .header("cookie", format!("rigbox_session={token}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .post(url("/api-keys"))
        .header("cookie", format!("rigbox_session={token}"))
        .header("x-rigbox-csrf", "1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);

    let (c, b) = key
        .post(
            "/auth/change-password",
            json!({"current_password": PASSWORD, "new_password": "another-password"}),
        )
        .await;
    assert_eq!((c, code(&b)), (403, "forbidden"));
    let (c, b) = s1
        .post(
            "/auth/change-password",
            json!({"current_password": "nope-nope-nope", "new_password": "another-password"}),
        )
        .await;
    assert_eq!((c, code(&b)), (401, "invalid_credentials"));
    let (c, _) = s1
        .post(
            "/auth/change-password",
            json!({"current_password": PASSWORD, "new_password": "another-password"}),
        )
        .await;
    assert_eq!(c, 204);
    assert_eq!(s1.get("/auth/me").await.0, 200, "the current session stays");
    assert_eq!(
        s2.get("/auth/me").await.0,
        401,
        "other sessions are revoked"
    );
    assert_eq!(key.get("/auth/me").await.0, 200, "API keys stay");
}

#[tokio::test]
async fn device_login_flow() {
    let tp = TestPlatform::start().await;
    let key = tp.user("dev@example.com").await;
    let s = session(&tp, "dev@example.com").await;
    let anon = tp.anon();
    let start = |anon: Client| async move {
        let (c, cs) = anon
            .post("/auth/cli-session", json!({"client_name": "me@laptop"}))
            .await;
        assert_eq!(c, 201, "{cs}");
        cs
    };
    let cs = start(anon.clone()).await;
    let uc = cs["user_code"].as_str().expect("user_code");
    assert!(
        uc.len() == 9
            && uc.as_bytes()[4] == b'-'
            && uc
                .chars()
                .filter(|c| *c != '-')
                .all(|c| "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789".contains(c)),
        "{uc}"
    );
    assert!(cs["verification_url"]
        .as_str()
        .expect("url")
        .ends_with(&format!(
            "/cli-login?code={}",
            cs["code"].as_str().expect("code")
        )));
    let code_ = cs["code"].as_str().expect("code").to_owned();
    let poll = |secret: &str| {
        let anon = anon.clone();
        let path = format!("/auth/cli-session/{code_}");
        let secret = secret.to_owned();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v1{path}", anon.base))
                .header("x-rigbox-poll-secret", secret)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let secret = cs["poll_secret"].as_str().expect("secret").to_owned();
    assert_eq!(poll("wrong").await.0, 404);
    assert_eq!(poll(&secret).await.1["status"], "pending");
    let (c, b) = key.get(&format!("/auth/cli-session/{code_}/details")).await;
    assert_eq!(
        (c, code(&b)),
        (403, "forbidden"),
        "an API key cannot see or approve"
    );
    let (c, d) = s.get(&format!("/auth/cli-session/{code_}/details")).await;
    assert_eq!(c, 200);
    assert_eq!(
        (d["client_name"].as_str(), d["user_code"].as_str()),
        (Some("me@laptop"), Some(uc))
    );
    assert_eq!(
        key.post(&format!("/auth/cli-session/{code_}/approve"), json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        s.post(&format!("/auth/cli-session/{code_}/approve"), json!({}))
            .await
            .0,
        204
    );
    let (c, b) = s
        .post(&format!("/auth/cli-session/{code_}/approve"), json!({}))
        .await;
    assert_eq!((c, code(&b)), (409, "invalid_state"));
    let (_, first) = poll(&secret).await;
    assert_eq!(first["status"], "approved");
    assert_eq!(first["email"], "dev@example.com");
    let cli_key = first["api_key"].as_str().expect("key once").to_owned();
    let (_, again) = poll(&secret).await;
    assert_eq!(again["status"], "consumed");
    assert!(again.get("api_key").is_none());
    let cli = Client::new(&tp.url(), Some(cli_key));
    assert_eq!(cli.get("/auth/me").await.0, 200);

    // A second device login replaces the first "CLI login" key.
    let cs2 = start(anon.clone()).await;
    let code2 = cs2["code"].as_str().expect("code");
    assert_eq!(
        s.post(&format!("/auth/cli-session/{code2}/approve"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(
        cli.get("/auth/me").await.0,
        401,
        "signing in elsewhere signs the first machine out"
    );
    let (_, keys) = s.get("/api-keys").await;
    let cli_keys = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|k| k["name"] == "CLI login")
        .count();
    assert_eq!(cli_keys, 1);

    // Deny.
    let cs3 = start(anon.clone()).await;
    let code3 = cs3["code"].as_str().expect("code");
    assert_eq!(
        s.post(&format!("/auth/cli-session/{code3}/deny"), json!({}))
            .await
            .0,
        204
    );
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/auth/cli-session/{code3}", tp.url()))
        .header(
            "x-rigbox-poll-secret",
            cs3["poll_secret"].as_str().expect("secret"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "denied");
}

#[tokio::test]
async fn api_keys() {
    let tp = TestPlatform::start_with(|c| c.control.max_api_keys = 3).await;
    let key = tp.user("k@example.com").await; // holds 1 key
    let (c, k) = key.post("/api-keys", json!({"name": "ci"})).await;
    assert_eq!(c, 201);
    let plain = k["key"].as_str().expect("key");
    assert!(
        plain.starts_with("rb_")
            && plain.len() == 43
            && plain[3..].chars().all(|c| c.is_ascii_alphanumeric())
    );
    assert_eq!(
        k["key_preview"],
        format!("rb_...{}", &plain[plain.len() - 8..])
    );
    let (c, b) = key.post("/api-keys", json!({"name": "CLI login"})).await;
    assert_eq!((c, code(&b)), (400, "validation_failed"));
    let (c, _) = key.post("/api-keys", json!({})).await;
    assert_eq!(c, 201, "default name");
    let (c, b) = key.post("/api-keys", json!({"name": "one too many"})).await;
    assert_eq!((c, code(&b)), (402, "limit_exceeded"));
    assert_eq!(b["error"]["details"]["limit"], "max_api_keys");
    let (_, list) = key.get("/api-keys").await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.get("key").is_none()));
    let ci = Client::new(&tp.url(), Some(plain.to_owned()));
    assert_eq!(ci.get("/auth/me").await.0, 200);
    let id = k["id"].as_str().expect("id");
    assert_eq!(key.delete(&format!("/api-keys/{id}")).await.0, 204);
    assert_eq!(
        ci.get("/auth/me").await.0,
        401,
        "revocation takes effect on the next request"
    );
    assert_eq!(key.delete(&format!("/api-keys/{id}")).await.0, 404);
}

fn keygen(dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let p = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(args)
        .args(["-N", "", "-q", "-C", "me@box", "-f"])
        .arg(&p)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(p.with_extension("pub")).expect("pub");
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(p.with_extension("pub"))
        .output()
        .expect("ssh-keygen -l");
    let fp = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (public, fp)
}

#[tokio::test]
async fn ssh_keys() {
    let tp = TestPlatform::start().await;
    let key = tp.user("ssh@example.com").await;
    let other = tp.user("other@example.com").await;
    let dir = tempfile::tempdir().expect("dir");
    let (ed, ed_fp) = keygen(dir.path(), "ed", &["-t", "ed25519"]);
    let (c, k) = key
        .post("/ssh-keys", json!({"name": "laptop", "public_key": ed}))
        .await;
    assert_eq!(c, 201, "{k}");
    assert_eq!(
        (
            k["key_type"].as_str(),
            k["fingerprint"].as_str(),
            k["comment"].as_str()
        ),
        (Some("ssh-ed25519"), Some(ed_fp.as_str()), Some("me@box"))
    );
    let (c, b) = key
        .post("/ssh-keys", json!({"name": "again", "public_key": ed}))
        .await;
    assert_eq!((c, code(&b)), (409, "duplicate_key"));
    let (small, _) = keygen(dir.path(), "rsa1024", &["-t", "rsa", "-b", "1024"]);
    let (c, b) = key
        .post("/ssh-keys", json!({"name": "old", "public_key": small}))
        .await;
    assert_eq!((c, code(&b)), (400, "invalid_public_key"));
    let (rsa, _) = keygen(dir.path(), "rsa2048", &["-t", "rsa", "-b", "2048"]);
    assert_eq!(
        key.post("/ssh-keys", json!({"name": "rsa", "public_key": rsa}))
            .await
            .0,
        201
    );
    let private = std::fs::read_to_string(dir.path().join("ed")).expect("private");
    assert_eq!(
        code(
            &key.post("/ssh-keys", json!({"name": "p", "public_key": private}))
                .await
                .1
        ),
        "invalid_public_key"
    );
    assert_eq!(
        code(
            &key.post(
                "/ssh-keys",
                json!({"name": "g", "public_key": "ssh-ed25519 AAAAnotbase64"})
            )
            .await
            .1
        ),
        "invalid_public_key"
    );
    assert_eq!(
        code(
            &key.post("/ssh-keys", json!({"name": "", "public_key": ed}))
                .await
                .1
        ),
        "validation_failed"
    );
    for i in 0..3 {
        let (k, _) = keygen(dir.path(), &format!("k{i}"), &["-t", "ed25519"]);
        assert_eq!(
            key.post(
                "/ssh-keys",
                json!({"name": format!("k{i}"), "public_key": k})
            )
            .await
            .0,
            201
        );
    }
    let (k6, _) = keygen(dir.path(), "k6", &["-t", "ed25519"]);
    let (c, b) = key
        .post("/ssh-keys", json!({"name": "sixth", "public_key": k6}))
        .await;
    assert_eq!((c, code(&b)), (402, "limit_exceeded"));
    assert_eq!(b["error"]["details"]["limit"], "max_ssh_keys");
    let id = k["id"].as_str().expect("id");
    assert_eq!(
        other.delete(&format!("/ssh-keys/{id}")).await.0,
        404,
        "another user's key is not found"
    );
    assert_eq!(other.get("/ssh-keys").await.1["items"], json!([]));
    assert_eq!(key.delete(&format!("/ssh-keys/{id}")).await.0, 204);
    assert_eq!(key.delete(&format!("/ssh-keys/{id}")).await.0, 404);
    assert_eq!(
        key.get("/users/me/limits").await.1["usage"]["ssh_key_count"],
        4
    );
}

#[tokio::test]
async fn users_limits_regions_settings_credits() {
    let tp = TestPlatform::start().await;
    let key = tp.user("u@example.com").await;
    let (c, l) = key.get("/users/me/limits").await;
    assert_eq!(c, 200);
    assert_eq!(
        (l["plan"].as_str(), l["custom"].as_bool()),
        (Some("free"), Some(false))
    );
    assert_eq!(l["limits"].as_object().map(|o| o.len()), Some(12));
    assert_eq!(l["limits"]["max_vms"], 2);
    for k in [
        "workspace_count",
        "running_vcpus",
        "total_disk_mb",
        "total_ram_mb",
        "running_workspace_count",
        "ssh_key_count",
    ] {
        assert_eq!(l["usage"][k], 0, "{k}");
    }
    tp.platform()
        .app
        .admin_set_limit("u@example.com", Some("max_vms"), Some(7))
        .await
        .expect("override");
    let (_, l) = key.get("/users/me/limits").await;
    assert_eq!(
        (l["custom"].as_bool(), l["limits"]["max_vms"].as_i64()),
        (Some(true), Some(7))
    );

    assert_eq!(
        key.get("/users/me/regions").await.1,
        json!({"regions": ["local"], "default_region": "local"})
    );
    let (c, b) = key
        .put("/users/me/settings", json!({"default_region": "mars-1"}))
        .await;
    assert_eq!((c, code(&b)), (400, "unknown_region"));
    let (c, s) = key
        .put(
            "/users/me/settings",
            json!({"default_region": "local", "name": "Ada"}),
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(
        (s["default_region"].as_str(), s["name"].as_str()),
        (Some("local"), Some("Ada"))
    );
    assert_eq!(key.get("/auth/me").await.1["name"], "Ada");
    let (_, s) = key.put("/users/me/settings", json!({"name": null})).await;
    assert!(s["name"].is_null());
    assert_eq!(
        key.put("/users/me/settings", json!({"bogus": 1})).await.0,
        400
    );

    let (c, cr) = key.get("/users/me/credits").await;
    assert_eq!(c, 200);
    assert_eq!(
        (cr["remaining_micro"].as_i64(), cr["total"].as_f64()),
        (Some(250_000_000), Some(250.0))
    );
    let (_, ledger) = key.get("/users/me/credits/ledger").await;
    assert_eq!(ledger["items"][0]["kind"], "monthly_reset");
    assert_eq!(ledger["items"][0]["amount_micro"], 250_000_000);
}

#[tokio::test]
async fn workspace_create_rules() {
    let tp = TestPlatform::start().await;
    let key = tp.user_on_plan("w@example.com", Some("pro")).await;
    let other = tp.user("x@example.com").await;
    let (c, w) = key
        .post(
            "/workspaces",
            json!({"name": "  My Project!! ", "ram_mb": 100, "vcpu_count": 0}),
        )
        .await;
    assert_eq!(c, 201, "{w}");
    assert_eq!(w["name"], "my-project");
    assert_eq!(w["status"], "provisioning");
    assert_eq!(
        (
            w["ram_mb"].as_i64(),
            w["vcpu_count"].as_i64(),
            w["disk_size_mb"].as_i64()
        ),
        (Some(512), Some(1), Some(3072)),
        "floors raise"
    );
    let id = w["id"].as_str().expect("id");
    let suffix = &id[3..];
    assert_eq!(w["ssh"]["user"], format!("my-project-{suffix}"));
    // The published port is the gateway's (a free one in tests).
    let port = tp.platform().ssh_addr.port();
    assert_eq!(w["ssh"]["port"], port);
    assert_eq!(
        w["ssh"]["command"],
        format!("ssh my-project-{suffix}@local.rigbox.localhost -p {port}")
    );
    assert!(w["ssh"]["host_key_fingerprints"][0]
        .as_str()
        .is_some_and(|f| f.starts_with("SHA256:")));
    let (c, d) = key
        .post(
            "/workspaces",
            json!({"name": "dev-box", "template_id": "dev", "ram_mb": 2048}),
        )
        .await;
    assert_eq!(c, 201);
    assert_eq!(
        (d["ram_mb"].as_i64(), d["disk_size_mb"].as_i64()),
        (Some(2048), Some(4096))
    );

    for (body, want) in [
        (json!({"name": "a"}), "invalid_name"),
        (json!({"name": "a".repeat(41)}), "invalid_name"),
        (json!({"name": "ws-abcdefgh"}), "invalid_name"),
        (
            json!({"name": "ok-name", "template_id": "windows"}),
            "unknown_template",
        ),
        (
            json!({"name": "ok-name", "ram_mb": -1}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "ram_mb": "lots"}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "env_vars": {"RIGBOX_X": "1"}}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "env_vars": {"1BAD": "1"}}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "env_vars": {"NUL": "a\u{0}b"}}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "env_vars": {"BIG": "x".repeat(33 * 1024)}}),
            "validation_failed",
        ),
        (
            json!({"name": "ok-name", "colour": "red"}),
            "validation_failed",
        ),
        (json!({"name": "My Project"}), "name_taken"),
    ] {
        let (c, b) = key.post("/workspaces", body.clone()).await;
        assert_eq!(code(&b), want, "{body}: {c} {b}");
        let status = match want {
            "name_taken" => 409,
            _ => 400,
        };
        assert_eq!(c, status, "{body}");
    }
    let (_, b) = key
        .post(
            "/workspaces",
            json!({"name": "ok-name", "env_vars": {"RIGBOX_X": "1"}}),
        )
        .await;
    assert!(
        b["error"]["details"]["fields"]["RIGBOX_X"].is_string(),
        "{b}"
    );
    let (_, b) = key
        .post("/workspaces", json!({"name": "ok-name", "colour": "red"}))
        .await;
    assert_eq!(b["error"]["details"]["fields"]["colour"], "unknown field");

    // By ID and by name; another user's is 404; limits and listing.
    assert_eq!(
        key.get(&format!("/workspaces/{id}")).await.1["name"],
        "my-project"
    );
    assert_eq!(key.get("/workspaces/my-project").await.1["id"], id);
    assert_eq!(other.get(&format!("/workspaces/{id}")).await.0, 404);
    assert_eq!(other.delete(&format!("/workspaces/{id}")).await.0, 404);
    key.wait_status(id, "provisioned", T).await;
    let (_, page) = key.get("/workspaces?limit=1").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let cursor = page["next_cursor"].as_str().expect("more");
    let (_, page2) = key
        .get(&format!("/workspaces?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"][0]["name"], "dev-box");
    assert!(page2["next_cursor"].is_null());
    assert_eq!(key.get("/workspaces?cursor=garbage").await.0, 400);
    assert_eq!(key.get("/workspaces?limit=0").await.0, 400);
    assert_eq!(key.get("/workspaces?limit=201").await.0, 400);
    assert_eq!(key.get("/workspaces?status=bogus").await.0, 400);
    let (_, prov) = key.get("/workspaces?status=provisioned").await;
    assert!(prov["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|w| w["status"] == "provisioned"));
}

#[tokio::test]
async fn lifecycle_actions_and_invalid_states() {
    let tp = TestPlatform::start().await;
    let key = tp.user("l@example.com").await;
    let (_, w) = key.post("/workspaces", json!({"name": "life"})).await;
    let id = w["id"].as_str().expect("id").to_owned();
    let p = |a: &str| format!("/workspaces/{id}/{a}");
    key.wait_status(&id, "provisioned", T).await;
    let (c, b) = key.post(&p("stop"), json!({})).await;
    assert_eq!((c, code(&b)), (409, "invalid_state"));
    assert_eq!(b["error"]["details"]["status"], "provisioned");
    assert_eq!(b["error"]["details"]["allowed_from"], json!(["running"]));
    let (c, s) = key.post(&p("start"), json!({})).await;
    assert_eq!((c, s["status"].as_str()), (202, Some("starting")));
    let w = key.wait_status(&id, "running", T).await;
    assert!(w["ip_address"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("172.16.0.")));
    assert!(w["started_at"].is_string());
    assert_eq!(
        code(&key.post(&p("start"), json!({})).await.1),
        "invalid_state"
    );
    assert_eq!(
        code(&key.delete(&format!("/workspaces/{id}")).await.1),
        "invalid_state"
    );
    let (c, b) = key.put(&p("resources"), json!({"ram_mb": 1024})).await;
    assert_eq!((c, code(&b)), (409, "invalid_state"));
    assert_eq!(key.post(&p("ssh-keys/sync"), json!({})).await.0, 200);
    let (c, env) = key.patch(&p("env"), json!({"env_vars": {"A": "1"}})).await;
    assert_eq!((c, env["applied"].as_bool()), (200, Some(true)), "{env}");

    let (c, r) = key.post(&p("restart"), json!({})).await;
    assert_eq!((c, r["status"].as_str()), (202, Some("stopping")));
    key.wait_status(&id, "running", T).await;
    let (_, s) = key.post(&p("stop"), json!({})).await;
    assert_eq!(s["status"], "stopping");
    let w = key.wait_status(&id, "stopped", T).await;
    assert_eq!(w["stop_reason"], "requested");
    assert!(w["ip_address"].is_null());
    let (_, env) = key
        .patch(&p("env"), json!({"env_vars": {"A": null, "B": "2"}}))
        .await;
    assert_eq!(
        (env["applied"].as_bool(), env["env_vars"].clone()),
        (Some(false), json!({"B": "2"}))
    );
    assert_eq!(
        code(&key.post(&p("ssh-keys/sync"), json!({})).await.1),
        "invalid_state"
    );

    // Resize: floors, shrink refused, at least one field, limits.
    let (c, r) = key
        .put(&p("resources"), json!({"ram_mb": 1, "disk_size_mb": 4096}))
        .await;
    assert_eq!(
        (c, r["ram_mb"].as_i64(), r["disk_size_mb"].as_i64()),
        (200, Some(512), Some(4096))
    );
    let (c, b) = key
        .put(&p("resources"), json!({"disk_size_mb": 3500}))
        .await;
    assert_eq!((c, code(&b)), (400, "disk_shrink_not_supported"));
    assert_eq!(key.put(&p("resources"), json!({})).await.0, 400);
    let (c, b) = key.put(&p("resources"), json!({"vcpu_count": 2})).await;
    assert_eq!(
        (c, b["error"]["details"]["limit"].as_str()),
        (402, Some("max_vcpu_per_vm"))
    );

    // Delete: 202 deleting, repeat 202, then gone.
    let (c, d) = key.delete(&format!("/workspaces/{id}")).await;
    assert_eq!((c, d["status"].as_str()), (202, Some("deleting")));
    // Repeating it answers 202 again while it is still deleting (or 404 once it is gone).
    let (c, again) = key.delete(&format!("/workspaces/{id}")).await;
    assert!(
        c == 404 || (c == 202 && again["status"] == "deleting"),
        "{c} {again}"
    );
    key.wait_gone(&id, T).await;
    assert_eq!(key.post(&p("start"), json!({})).await.0, 404);
}

#[tokio::test]
async fn cancel_retry_failures_and_unrequested_exits() {
    let tp = TestPlatform::start_with(|c| {
        c.sim.provision_ms = 800;
        c.sim.fail_launch = vec!["broken".into()];
        c.sim.fail_image = vec!["noimage".into()];
        c.sim.hang_boot = vec!["hangs".into()];
        c.control.boot_timeout_secs = 1;
    })
    .await;
    let key = tp.user_on_plan("f@example.com", Some("pro")).await;
    let new = |name: &'static str| {
        let key = key.clone();
        async move {
            key.post("/workspaces", json!({"name": name})).await.1["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };

    // Cancel while provisioning → failed/cancelled, retryable; retry provisions again.
    let a = new("cancel-me").await;
    let (c, w) = key
        .post(&format!("/workspaces/{a}/cancel"), json!({}))
        .await;
    assert_eq!(
        (c, w["status"].as_str(), w["failure"]["code"].as_str()),
        (202, Some("failed"), Some("cancelled"))
    );
    assert_eq!(w["failure"]["retryable"], true);
    let (c, w) = key.post(&format!("/workspaces/{a}/retry"), json!({})).await;
    assert_eq!((c, w["status"].as_str()), (202, Some("provisioning")));
    key.wait_status(&a, "provisioned", T).await;
    assert_eq!(
        code(
            &key.post(&format!("/workspaces/{a}/retry"), json!({}))
                .await
                .1
        ),
        "invalid_state"
    );

    // Launch failure → boot_failed (disk kept); retry fails again with attempts 2.
    let b = new("broken").await;
    key.wait_status(&b, "provisioned", T).await;
    key.post(&format!("/workspaces/{b}/start"), json!({})).await;
    let w = key.wait_status(&b, "failed", T).await;
    assert_eq!(
        (
            w["failure"]["code"].as_str(),
            w["failure"]["attempts"].as_i64()
        ),
        (Some("boot_failed"), Some(1))
    );
    key.post(&format!("/workspaces/{b}/retry"), json!({})).await;
    let w = key.wait_status(&b, "failed", T).await;
    assert_eq!(w["failure"]["attempts"], 2);

    // Missing image → image_unavailable, not retryable.
    let c_ = new("noimage").await;
    let w = key.wait_status(&c_, "failed", T).await;
    assert_eq!(
        (
            w["failure"]["code"].as_str(),
            w["failure"]["retryable"].as_bool()
        ),
        (Some("image_unavailable"), Some(false))
    );
    let (c, body) = key
        .post(&format!("/workspaces/{c_}/retry"), json!({}))
        .await;
    assert_eq!((c, code(&body)), (409, "not_retryable"));
    assert_eq!(
        key.delete(&format!("/workspaces/{c_}")).await.0,
        202,
        "failed workspaces can be deleted"
    );

    // A guest that never reports ready → boot_timeout.
    let d = new("hangs").await;
    key.wait_status(&d, "provisioned", T).await;
    key.post(&format!("/workspaces/{d}/start"), json!({})).await;
    let w = key.wait_status(&d, "failed", T).await;
    assert_eq!(w["failure"]["code"], "boot_timeout");

    // Cancel while starting → back to where the start came from.
    let e = new("cancel-start").await;
    key.wait_status(&e, "provisioned", T).await;
    key.post(&format!("/workspaces/{e}/start"), json!({})).await;
    let (_, w) = key
        .post(&format!("/workspaces/{e}/cancel"), json!({}))
        .await;
    assert_eq!(w["status"], "stopping");
    let w = key.wait_status(&e, "provisioned", T).await;
    assert_eq!(w["stop_reason"], "cancelled");

    // Crash and guest power-off of a running VM → stopped with the reason.
    let sim = tp.platform().sim.clone().expect("sim driver");
    key.post(&format!("/workspaces/{e}/start"), json!({})).await;
    key.wait_status(&e, "running", T).await;
    sim.crash(&rigbox_types::WorkspaceId::parse(&e).expect("id"));
    let w = key.wait_status(&e, "stopped", T).await;
    assert_eq!(w["stop_reason"], "crashed");
    key.post(&format!("/workspaces/{e}/start"), json!({})).await;
    key.wait_status(&e, "running", T).await;
    sim.guest_poweroff(&rigbox_types::WorkspaceId::parse(&e).expect("id"));
    let w = key.wait_status(&e, "stopped", T).await;
    assert_eq!(w["stop_reason"], "guest_shutdown");

    // Forced delete of a running workspace.
    key.post(&format!("/workspaces/{e}/start"), json!({})).await;
    key.wait_status(&e, "running", T).await;
    assert_eq!(
        key.delete(&format!("/workspaces/{e}?force=true")).await.0,
        202
    );
    key.wait_gone(&e, T).await;
}

#[tokio::test]
async fn per_vm_and_total_limits() {
    let tp = TestPlatform::start().await;
    let key = tp.user("lim@example.com").await;
    for (body, limit) in [
        (
            json!({"name": "big-ram", "ram_mb": 2048}),
            "max_ram_per_vm_mb",
        ),
        (
            json!({"name": "big-cpu", "vcpu_count": 2}),
            "max_vcpu_per_vm",
        ),
        (
            json!({"name": "big-disk", "disk_size_mb": 5000}),
            "max_disk_per_vm_mb",
        ),
    ] {
        let (c, b) = key.post("/workspaces", body).await;
        assert_eq!(
            (c, b["error"]["details"]["limit"].as_str()),
            (402, Some(limit)),
            "{b}"
        );
        let d = &b["error"]["details"];
        assert!(
            d["max"].is_i64()
                && d["requested"].is_i64()
                && d["plan"] == "free"
                && d["current"].is_i64()
        );
        assert!(b["error"]["message"]
            .as_str()
            .expect("message")
            .contains(limit));
    }
    tp.platform()
        .app
        .admin_set_limit("lim@example.com", Some("max_disk_total_mb"), Some(5000))
        .await
        .expect("override");
    let (c, _) = key.post("/workspaces", json!({"name": "one"})).await;
    assert_eq!(c, 201);
    let (c, b) = key.post("/workspaces", json!({"name": "two"})).await;
    assert_eq!(
        (c, b["error"]["details"]["limit"].as_str()),
        (402, Some("max_disk_total_mb"))
    );
    tp.platform()
        .app
        .admin_set_limit("lim@example.com", None, None)
        .await
        .expect("clear");
    let (_, w2) = key
        .post("/workspaces", json!({"name": "two", "ram_mb": 1024}))
        .await;
    let (_, w1) = key.get("/workspaces/one").await;
    tp.platform()
        .app
        .admin_set_limit("lim@example.com", Some("max_ram_total_mb"), Some(1024))
        .await
        .expect("override");
    for w in [&w1, &w2] {
        key.wait_status(w["id"].as_str().expect("id"), "provisioned", T)
            .await;
    }
    assert_eq!(key.post("/workspaces/one/start", json!({})).await.0, 202);
    let (c, b) = key.post("/workspaces/two/start", json!({})).await;
    assert_eq!(
        (c, b["error"]["details"]["limit"].as_str()),
        (402, Some("max_ram_total_mb"))
    );
    assert_eq!(b["error"]["details"]["current"], 512);
    assert_eq!(
        key.get("/workspaces/two").await.1["status"],
        "provisioned",
        "a refused start changes nothing"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_in_the_envelope() {
    let tp = TestPlatform::start().await;
    let key = tp.user("bad@example.com").await;
    let cases: Vec<(&str, &str, Option<String>, bool, u16)> = vec![
        ("POST", "/workspaces", Some("{not json".into()), true, 400),
        (
            "POST",
            "/workspaces",
            Some(r#"{"name":"x1"}"#.into()),
            false,
            400,
        ),
        ("POST", "/workspaces", Some("[]".into()), true, 400),
        (
            "POST",
            "/workspaces",
            Some(format!(r#"{{"name":"{}"}}"#, "x".repeat(2 * 1024 * 1024))),
            true,
            400,
        ),
        (
            "PATCH",
            "/workspaces/nope/env",
            Some(r#"{"env_vars":{"A":1}}"#.into()),
            true,
            400,
        ),
        ("GET", "/workspaces/%FF%FE", None, false, 404),
        ("GET", "/no/such/route", None, false, 404),
        ("PATCH", "/workspaces", None, false, 404),
        ("DELETE", "/capacity", None, false, 404),
        ("GET", "/workspaces/ws-00000000", None, false, 404),
    ];
    for (method, path, body, json_ct, want) in cases {
        let r = key.raw(method, path, body, json_ct).await;
        let status = r.status().as_u16();
        let rid = r
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{method} {path}: {b}");
        assert!(
            b["error"]["code"].is_string() && b["error"]["message"].is_string(),
            "{method} {path}: {b}"
        );
        assert_eq!(
            b["error"]["details"]["request_id"].as_str(),
            rid.as_deref(),
            "request IDs match"
        );
    }
    // Without a credential, protected endpoints are 401 in the envelope.
    let (c, b) = tp.anon().get("/workspaces").await;
    assert_eq!((c, code(&b)), (401, "unauthorized"));
    let (c, _) = Client::new(&tp.url(), Some("Bearer-junk".into()))
        .get("/workspaces")
        .await;
    assert_eq!(c, 401);
}
