//! BYOK mode through the whole platform (simulated VM, bridge on loopback, the fake upstream of
//! `rigbox-testkit`): once a workspace is in `byok`, by its own override or by its account's
//! mode, every proxy route answers 403 `managed_ai_disabled` from the very next request, nothing
//! reaches the upstream and no credits move; back in `managed` the next request is served again.
//!
//! A simulated VM holding `172.16.0.N` is reached from `127.16.0.N` (`[sim] bridge_port`).

use rigbox_testkit::fake_ai::FakeAi;
use rigbox_testkit::{vm_client, Client, TestPlatform};
use serde_json::{json, Value};
use std::time::Duration;

struct Env {
    _tp: TestPlatform,
    fake: FakeAi,
    user: Client,
    ws: String,
    bridge: String,
    vm: reqwest::Client,
}

async fn start() -> Env {
    let fake = FakeAi::start().await;
    let ai = fake.ai_config();
    let tp = TestPlatform::start_with(|c| {
        c.sim.bridge_port = Some(0);
        c.ai = ai;
    })
    .await;
    let bridge = format!(
        "http://{}",
        tp.platform().bridge_addr.expect("the sim bridge listens")
    );
    let user = tp.user("byok@example.com").await;
    let (ws, local) = user.running_workspace("box").await;
    let vm = vm_client(local);
    Env {
        _tp: tp,
        fake,
        user,
        ws,
        bridge,
        vm,
    }
}

fn msgs() -> Value {
    json!([{"role": "user", "content": "Hello there, proxy"}])
}

/// Every proxy route with a body it would serve: (method, path, body).
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "openai/gpt-4o", "messages": msgs()})),
        ),
        (
            "POST",
            "/v1/completions",
            Some(
                json!({"model": "openai/gpt-4o-mini", "prompt": "Once upon a time", "max_tokens": 5}),
            ),
        ),
        (
            "POST",
            "/v1/responses",
            Some(json!({"model": "openai/gpt-4o", "input": "Describe the proxy"})),
        ),
        (
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "openai/text-embedding-3-small", "input": "embed me"})),
        ),
        (
            "POST",
            "/v1/messages",
            Some(json!({"model": "claude-sonnet-4", "max_tokens": 16, "messages": msgs()})),
        ),
        (
            "POST",
            "/v1/messages/count_tokens",
            Some(json!({"model": "claude-sonnet-4", "messages": msgs()})),
        ),
        ("GET", "/v1/models", None),
        ("GET", "/brave/res/v1/web/search?q=micro+vms", None),
    ]
}

impl Env {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> reqwest::Response {
        let url = format!("{}{path}", self.bridge);
        let req = match method {
            "GET" => self.vm.get(url),
            _ => self.vm.post(url),
        };
        // What Anthropic clients send (the fake upstream insists).
        let req = if path.starts_with("/v1/messages") {
            req.header("anthropic-version", "2023-06-01")
        } else {
            req
        };
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        req.send().await.expect("the proxy answers")
    }

    async fn chat(&self) -> reqwest::Response {
        self.call(
            "POST",
            "/v1/chat/completions",
            Some(&json!({"model": "openai/gpt-4o", "messages": msgs()})),
        )
        .await
    }

    async fn put_config(&self, body: Value) -> Value {
        let (code, c) = self
            .user
            .put(&format!("/workspaces/{}/ai-config", self.ws), body)
            .await;
        assert_eq!(code, 200, "{c}");
        c
    }

    async fn account_mode(&self, mode: &str) {
        let (code, c) = self
            .user
            .put("/users/me/ai-mode", json!({"mode": mode}))
            .await;
        assert_eq!(code, 200, "{c}");
        assert_eq!(c["mode"], mode, "{c}");
    }

    /// The configuration revision the guest last confirmed (`GET …/ssh-keys`).
    async fn applied_revision(&self) -> i64 {
        let (code, k) = self
            .user
            .get(&format!("/workspaces/{}/ssh-keys", self.ws))
            .await;
        assert_eq!(code, 200, "{k}");
        k["revision"].as_i64().expect("revision")
    }

    /// Waits until the guest confirmed a configuration newer than `before`.
    async fn pushed_after(&self, before: i64) {
        for _ in 0..100 {
            if self.applied_revision().await > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the change was not pushed to the running workspace");
    }

    /// Balance, reserved and the number of ledger entries.
    async fn books(&self) -> (Value, Value, usize) {
        let (code, c) = self.user.get("/users/me/credits").await;
        assert_eq!(code, 200, "{c}");
        let (code, l) = self.user.get("/users/me/credits/ledger?limit=200").await;
        assert_eq!(code, 200, "{l}");
        (
            c["balance_micro"].clone(),
            c["reserved_micro"].clone(),
            l["items"].as_array().map_or(0, Vec::len),
        )
    }

    /// Every route answers 403 `managed_ai_disabled` in the gateway envelope; nothing reaches
    /// the upstream and no credits move.
    async fn assert_every_route_refused(&self) {
        let books = self.books().await;
        let upstream = self.fake.request_count();
        let mut all = routes();
        all.push((
            "POST",
            "/brave/res/v1/web/search",
            Some(json!({"q": "micro vms"})),
        ));
        for (method, path, body) in all {
            let r = self.call(method, path, body.as_ref()).await;
            assert_eq!(r.status().as_u16(), 403, "{method} {path}");
            assert!(
                r.headers().contains_key("x-rigbox-request-id"),
                "{method} {path}: every proxy answer has a request ID"
            );
            let v: Value = r.json().await.expect("json");
            assert_eq!(
                v["error"]["code"], "managed_ai_disabled",
                "{method} {path}: {v}"
            );
            assert_eq!(v["error"]["type"], "rigbox_gateway_error", "{v}");
        }
        assert_eq!(
            self.fake.request_count(),
            upstream,
            "nothing reached the upstream"
        );
        assert_eq!(self.books().await, books, "no credits moved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_refuses_every_proxy_route_from_the_next_request_and_managed_serves_again() {
    let env = start().await;

    // Managed: served and charged (this also fills the proxy's account cache).
    let r = env.chat().await;
    assert_eq!(r.status().as_u16(), 200);
    let (balance, _, entries) = env.books().await;

    // The workspace's override: the very next request is refused, on every route, and the new
    // environment is pushed to the running VM.
    let revision = env.applied_revision().await;
    let c = env
        .put_config(json!({"mode": "byok", "provider": "openai", "api_key": "sk-test-byok-0001"}))
        .await;
    assert_eq!(
        (&c["mode"], &c["status"]),
        (&json!("byok"), &json!("byok_active"))
    );
    let r = env.chat().await;
    assert_eq!(r.status().as_u16(), 403, "refused at once after the switch");
    env.pushed_after(revision).await;
    env.assert_every_route_refused().await;

    // Inherit (the account is managed): served again at once; the key was deleted.
    let c = env.put_config(json!({"mode": null})).await;
    assert_eq!(
        (&c["mode"], &c["status"]),
        (&json!("managed"), &json!("managed_active"))
    );
    for (method, path, body) in routes() {
        let r = env.call(method, path, body.as_ref()).await;
        assert_eq!(r.status().as_u16(), 200, "{method} {path} after managed");
    }
    let (after, reserved, _) = env.books().await;
    assert!(
        after.as_i64() < balance.as_i64(),
        "managed requests are charged again: {balance} -> {after}"
    );
    assert_eq!(reserved, 0);

    // The account's mode, inherited: refused at once, then served again at once.
    let revision = env.applied_revision().await;
    env.account_mode("byok").await;
    env.pushed_after(revision).await;
    env.assert_every_route_refused().await;
    env.account_mode("managed").await;
    assert_eq!(env.chat().await.status().as_u16(), 200);

    // A workspace override wins over the account's mode, both ways.
    env.put_config(json!({"mode": "managed"})).await;
    env.account_mode("byok").await;
    assert_eq!(env.chat().await.status().as_u16(), 200);
    env.account_mode("managed").await;
    env.put_config(json!({"mode": "byok"})).await;
    assert_eq!(env.chat().await.status().as_u16(), 403);
    let (_, _, n) = env.books().await;
    assert!(n > entries, "the managed requests in between were charged");
}
