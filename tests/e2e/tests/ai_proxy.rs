//! The managed AI proxy through the whole platform (simulated VMs, bridge on loopback): the
//! real Python `openai` and `anthropic` SDKs call it as code in a VM would, against the fake
//! upstream of `rigbox-testkit`; every ledger entry is compared with what the upstream
//! reported. Also: the proxy's own errors, 402s, subject limits, 100 streaming clients dropped
//! at random points, and a proxy killed mid-stream.
//!
//! A simulated VM holding `172.16.0.N` is reached from `127.16.0.N` (`[sim] bridge_port`).

use rigbox_ai::pricing::usd_to_micro;
use rigbox_ai::AiConfig;
use rigbox_testkit::fake_ai::{Endpoint, FakeAi};
use rigbox_testkit::python::run_sdk_script;
use rigbox_testkit::{vm_client, Client, Daemon, TestPlatform};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A platform with one running workspace whose VM address is `local`.
struct Env {
    tp: TestPlatform,
    fake: FakeAi,
    user: Client,
    /// `http://127.0.0.1:<port>`.
    bridge: String,
    /// The loopback address standing for the workspace's VM.
    local: Ipv4Addr,
    /// An HTTP client connecting from `local`.
    vm: reqwest::Client,
}

async fn start_with(tweak: impl FnOnce(&mut AiConfig)) -> Env {
    let fake = FakeAi::start().await;
    let mut ai = fake.ai_config();
    tweak(&mut ai);
    let tp = TestPlatform::start_with(|c| {
        c.sim.bridge_port = Some(0);
        c.ai = ai;
        // The tests poll the ledger while streams settle.
        c.control.rate_limits.auth = 100_000;
    })
    .await;
    let bridge = format!(
        "http://{}",
        tp.platform().bridge_addr.expect("the sim bridge listens")
    );
    let user = tp.user("dev@example.com").await;
    let (_, local) = user.running_workspace("box").await;
    Env {
        tp,
        fake,
        user,
        bridge,
        local,
        vm: vm_client(local),
    }
}

async fn start() -> Env {
    start_with(|_| {}).await
}

impl Env {
    async fn charges(&self) -> Vec<Value> {
        let (code, l) = self
            .user
            .get("/users/me/credits/ledger?kind=charge&limit=200")
            .await;
        assert_eq!(code, 200, "{l}");
        let mut items = l["items"].as_array().expect("items").clone();
        items.reverse();
        items
    }

    async fn credits(&self) -> Value {
        let (code, c) = self.user.get("/users/me/credits").await;
        assert_eq!(code, 200, "{c}");
        c
    }

    /// Waits until no hold is open and at least `charges` charges are in the ledger.
    async fn wait_settled(&self, charges: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let c = self.credits().await;
            if c["reserved_micro"] == 0 && self.charges().await.len() >= charges {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "holds still open: {c}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Balance = the sum of the whole ledger, and nothing is held.
    async fn assert_books_balance(&self) {
        let (code, l) = self.user.get("/users/me/credits/ledger?limit=200").await;
        assert_eq!(code, 200);
        let sum: i64 = l["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["amount_micro"].as_i64().expect("amount"))
            .sum();
        let c = self.credits().await;
        assert_eq!(c["balance_micro"].as_i64(), Some(sum), "{c}");
        assert_eq!(c["reserved_micro"].as_i64(), Some(0), "{c}");
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.vm.post(format!("{}{path}", self.bridge)).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("proxy answers")
    }
}

async fn gateway_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert!(
        r.headers().contains_key("x-rigbox-request-id"),
        "every proxy answer has a request ID"
    );
    assert!(
        r.headers().contains_key("x-request-id"),
        "every bridge answer has X-Request-Id"
    );
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["type"], "rigbox_gateway_error", "{v}");
    assert!(v["error"]["param"].is_null(), "{v}");
    v
}

const SDK_SCRIPT: &str = r#"
import json, os, openai, anthropic
import httpx2 as httpx  # what these SDK versions use

local, base = os.environ["LOCAL_ADDR"], os.environ["BRIDGE"]
def http():
    return httpx.Client(transport=httpx.HTTPTransport(local_address=local), timeout=60)
# What a VM has: the exported base URL and the placeholder key.
oa = openai.OpenAI(base_url=os.environ["OPENROUTER_BASE_URL"],
                   api_key=os.environ["OPENROUTER_API_KEY"], http_client=http())
an = anthropic.Anthropic(base_url=base, auth_token="managed-by-rigbox", http_client=http())
out = {}
msgs = [{"role": "user", "content": "Say hello to everyone reading the proxy tests"}]

raw = oa.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=msgs)
r = raw.parse()
out["chat"] = {"text": r.choices[0].message.content, "usage": r.usage.model_dump(),
               "cost_header": raw.headers.get("x-rigbox-cost-micro")}

text, usage = "", None
for ch in oa.chat.completions.create(model="openai/gpt-4o", messages=msgs, stream=True):
    if ch.choices and ch.choices[0].delta.content:
        text += ch.choices[0].delta.content
    if ch.usage:
        usage = ch.usage.model_dump()
out["chat_stream"] = {"text": text, "usage": usage}

c = oa.completions.create(model="openai/gpt-4o-mini", prompt="Once upon a time", max_tokens=5)
out["completions"] = {"text": c.choices[0].text, "usage": c.usage.model_dump()}

r = oa.responses.create(model="openai/gpt-4o", input="Describe the proxy")
out["responses"] = {"text": r.output_text, "usage": r.usage.model_dump()}

done = None
for ev in oa.responses.create(model="openai/gpt-4o", input="Describe it streaming", stream=True):
    if ev.type == "response.completed":
        done = ev.response
out["responses_stream"] = {"text": done.output_text, "usage": done.usage.model_dump()}

e = oa.embeddings.create(model="openai/text-embedding-3-small", input="embed me")
out["embeddings"] = {"dims": len(e.data[0].embedding), "usage": e.usage.model_dump()}

out["models"] = [m.id for m in oa.models.list().data]

m = an.messages.create(model="claude-sonnet-4", max_tokens=64, messages=msgs)
out["messages"] = {"text": m.content[0].text, "usage": m.usage.model_dump()}

with an.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=msgs) as s:
    final = s.get_final_message()
out["messages_stream"] = {"text": final.content[0].text, "usage": final.usage.model_dump()}

out["count_tokens"] = an.messages.count_tokens(model="claude-sonnet-4", messages=msgs).input_tokens
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdks_through_the_proxy_are_charged_what_the_upstream_reported() {
    let env = start().await;
    let local = env.local.to_string();
    let base = format!("{}/v1", env.bridge);
    let out = run_sdk_script(
        SDK_SCRIPT,
        &[
            ("LOCAL_ADDR", &local),
            ("BRIDGE", &env.bridge),
            ("OPENROUTER_BASE_URL", &base),
            ("OPENROUTER_API_KEY", "managed-by-rigbox"),
        ],
    )
    .await;
    out.assert_success();
    let got = out.json();

    // The SDKs parsed real answers, streams included.
    for k in [
        "chat",
        "chat_stream",
        "completions",
        "responses",
        "responses_stream",
        "messages",
        "messages_stream",
    ] {
        assert!(
            !got[k]["text"].as_str().unwrap_or_default().is_empty(),
            "{k}: {got}"
        );
    }
    assert_eq!(got["embeddings"]["dims"], 8);
    assert!(got["models"]
        .as_array()
        .expect("models")
        .contains(&json!("openai/gpt-4o")));
    assert!(got["count_tokens"].as_u64().expect("count") > 0);

    // One charge per metered call, in order, each exactly what the upstream reported.
    let reported = env.fake.reported();
    let charges = env.charges().await;
    let metered: Vec<_> = reported
        .iter()
        .filter(|r| r.endpoint != Endpoint::BraveSearch)
        .collect();
    assert_eq!(metered.len(), 8, "{reported:?}");
    assert_eq!(charges.len(), metered.len(), "{charges:?}");
    for (c, r) in charges.iter().zip(&metered) {
        // The operator table prices a native Anthropic name under its `anthropic/` slug.
        let slug = if r.model.contains('/') {
            r.model.clone()
        } else {
            format!("anthropic/{}", r.model)
        };
        let price = env.fake.config().price(&slug);
        let usd = r.cost_usd.unwrap_or_else(|| {
            // Anthropic reports no cost: the proxy prices it from the operator table.
            price.cost_usd(
                r.input_tokens + r.cache_read_tokens + r.cache_write_tokens,
                r.output_tokens,
            )
        });
        assert_eq!(
            c["amount_micro"].as_i64(),
            Some(-usd_to_micro(usd)),
            "{c} vs {r:?}"
        );
        assert_eq!(
            c["input_tokens"].as_u64(),
            Some(r.input_tokens + r.cache_read_tokens + r.cache_write_tokens),
            "{c} vs {r:?}"
        );
        assert_eq!(c["output_tokens"].as_u64(), Some(r.output_tokens), "{c}");
        assert_eq!(c["estimated"], false, "{c}");
        assert_eq!(c["request_id"].as_str().map(str::len), Some(36), "{c}");
        assert!(c["workspace_id"]
            .as_str()
            .is_some_and(|w| w.starts_with("ws-")));
    }
    let endpoints: Vec<&str> = charges
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        endpoints,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/responses",
            "/v1/embeddings",
            "/v1/messages",
            "/v1/messages",
        ]
    );

    // What the caller saw is what was charged.
    let first = -charges[0]["amount_micro"].as_i64().expect("amount");
    assert_eq!(got["chat"]["usage"]["cost_micro"].as_i64(), Some(first));
    assert_eq!(got["chat"]["cost_header"], first.to_string());
    let streamed = -charges[1]["amount_micro"].as_i64().expect("amount");
    assert_eq!(
        got["chat_stream"]["usage"]["cost_micro"].as_i64(),
        Some(streamed)
    );
    let resp_stream = -charges[4]["amount_micro"].as_i64().expect("amount");
    assert_eq!(
        got["responses_stream"]["usage"]["cost_micro"].as_i64(),
        Some(resp_stream)
    );

    // Keys: the operator's, never the VM's placeholder; streams asked for usage.
    let seen = env.fake.requests();
    for s in &seen {
        assert!(
            !format!("{:?}", s.headers).contains("managed-by-rigbox"),
            "placeholder forwarded: {s:?}"
        );
        if s.path.starts_with("/api/v1/") {
            assert_eq!(s.header("authorization"), Some("Bearer sk-or-fake"));
        } else if s.path.starts_with("/v1/messages") {
            assert_eq!(s.header("x-api-key"), Some("sk-ant-fake"));
            assert_eq!(s.header("authorization"), None);
        }
    }
    let stream_req = seen
        .iter()
        .find(|s| s.path.ends_with("/chat/completions") && s.body["stream"] == true)
        .expect("the streamed chat request");
    assert_eq!(stream_req.body["stream_options"]["include_usage"], true);
    assert_eq!(stream_req.body["usage"]["include"], true);
    assert_eq!(
        stream_req.body["max_tokens"], 8192,
        "the output bound is injected"
    );
    env.assert_books_balance().await;
    let c = env.credits().await;
    let spent: i64 = charges
        .iter()
        .map(|c| -c["amount_micro"].as_i64().expect("amount"))
        .sum();
    assert_eq!(c["balance_micro"].as_i64(), Some(250_000_000 - spent));
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there, proxy"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_errors_and_relayed_upstream_errors_charge_nothing() {
    let env = start_with(|ai| ai.brave = None).await;
    let url = |p: &str| format!("{}{p}", env.bridge);

    // Bad bodies, unknown models and paths never reach the upstream.
    let r = env
        .vm
        .post(url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .expect("answer");
    gateway_error(r, 400, "invalid_request").await;
    let r = env
        .post("/v1/chat/completions", json!({"messages": []}), &[])
        .await;
    gateway_error(r, 400, "invalid_request").await;
    let r = env
        .post("/v1/chat/completions", chat("nobody/unpriced"), &[])
        .await;
    let v = gateway_error(r, 400, "model_not_priced").await;
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("nobody/unpriced")));
    let r = env.post("/v1/nothing-here", json!({}), &[]).await;
    gateway_error(r, 404, "not_found").await;
    // A route asked with another method is no route either, in the same envelope.
    for path in ["/v1/chat/completions", "/v1/messages/count_tokens", "/v1"] {
        let r = env.vm.get(url(path)).send().await.expect("answer");
        let v = gateway_error(r, 404, "not_found").await;
        assert_eq!(
            v["error"]["message"],
            format!("The AI proxy has no route GET {path}."),
            "{v}"
        );
    }
    let r = env
        .vm
        .get(url("/brave/res/v1/web/search?q=rust"))
        .send()
        .await
        .expect("answer");
    gateway_error(r, 503, "provider_unavailable").await;
    assert!(
        env.fake.requests().is_empty(),
        "nothing was forwarded: {:?}",
        env.fake.requests()
    );

    // An address without a lease is refused before anything else, in the gateway envelope.
    let r = reqwest::Client::new()
        .post(url("/v1/chat/completions"))
        .json(&chat("openai/gpt-4o"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unknown_workspace", "{v}");
    assert_eq!(v["error"]["type"], "rigbox_gateway_error", "{v}");

    // An upstream refusal is relayed as it is, and the hold released.
    let r = env
        .post(
            "/v1/chat/completions",
            chat("openai/gpt-4o"),
            &[("x-fake-scenario", "error=429")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(r.headers().contains_key("x-rigbox-request-id"));
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["type"] != "rigbox_gateway_error",
        "the upstream's own body: {v}"
    );

    // Over the funds: the estimate of a huge output bound is refused before forwarding.
    let before = env.fake.requests().len();
    let mut big = chat("openai/gpt-4o");
    big["max_tokens"] = json!(1_000_000_000u64);
    let r = env.post("/v1/chat/completions", big, &[]).await;
    let v = gateway_error(r, 402, "insufficient_credits").await;
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("250.000000")));
    assert_eq!(env.fake.requests().len(), before);

    // A normal call has its cost in headers with six decimals.
    let r = env
        .post("/v1/chat/completions", chat("openai/gpt-4o"), &[])
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let micro: i64 = r.headers()["x-rigbox-cost-micro"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("integer");
    let credits = r.headers()["x-rigbox-cost-credits"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(credits, format!("{:.6}", micro as f64 / 1e6));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["usage"]["cost_micro"].as_i64(), Some(micro));

    // Completed without usage: charged from the price table, marked estimated.
    let r = env
        .post(
            "/v1/chat/completions",
            chat("openai/gpt-4o"),
            &[("x-fake-scenario", "no_usage")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    // A stream that breaks: charged for what was counted, estimated.
    let mut s = chat("openai/gpt-4o");
    s["stream"] = json!(true);
    let r = env
        .post(
            "/v1/chat/completions",
            s,
            &[("x-fake-scenario", "break_after=3")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.bytes().await;

    let charges = env.charges().await;
    assert_eq!(charges.len(), 3, "{charges:?}");
    assert_eq!(charges[0]["amount_micro"].as_i64(), Some(-micro));
    assert_eq!(charges[0]["estimated"], false);
    assert_eq!(charges[1]["estimated"], true);
    assert_eq!(charges[2]["estimated"], true);
    assert!(charges[2]["output_tokens"].as_u64().is_some_and(|t| t > 0));
    env.assert_books_balance().await;

    // With no funds left every metered call gets 402, and nothing is forwarded.
    let (_, me) = env.user.get("/auth/me").await;
    let balance = env.credits().await["balance_micro"]
        .as_i64()
        .expect("balance");
    env.tp
        .platform()
        .app
        .adjust_credits(
            me["id"].as_str().expect("id"),
            -(balance as f64) / 1e6,
            "test: spend everything".into(),
        )
        .await
        .expect("adjusted");
    let before = env.fake.requests().len();
    let r = env
        .post("/v1/chat/completions", chat("openai/gpt-4o"), &[])
        .await;
    gateway_error(r, 402, "credits_exhausted").await;
    assert_eq!(env.fake.requests().len(), before);
    // The rest of the bridge still answers.
    let r = env
        .vm
        .get(url("/rig/v1/whoami"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_and_releases_the_hold() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let env = start_with(|ai| ai.base_url = Some(dead)).await;
    let r = env
        .post("/v1/chat/completions", chat("openai/gpt-4o"), &[])
        .await;
    gateway_error(r, 502, "upstream_unreachable").await;
    assert!(env.charges().await.is_empty());
    env.assert_books_balance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_are_attributed_budgeted_and_rate_limited() {
    let env = start().await;
    let subject = [("x-rigbox-subject", "tenant-42")];
    let r = env
        .post("/v1/chat/completions", chat("openai/gpt-4o"), &subject)
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let cost = r.headers()["x-rigbox-cost-micro"]
        .to_str()
        .expect("ascii")
        .parse::<i64>()
        .expect("int");
    let charges = env.charges().await;
    assert_eq!(charges[0]["subject"], "tenant-42");

    // Budget: spent ≥ the budget → 402 with details.
    let over = format!("{};period=1d", cost as f64 / 1e6);
    let r = env
        .post(
            "/v1/chat/completions",
            chat("openai/gpt-4o"),
            &[subject[0], ("x-rigbox-subject-budget", over.as_str())],
        )
        .await;
    let v = gateway_error(r, 402, "subject_over_budget").await;
    let d = &v["error"]["details"];
    assert_eq!(d["reason"], "subject_over_budget");
    assert_eq!(d["subject"], "tenant-42");
    assert_eq!(d["limit"]["kind"], "credits");
    assert_eq!(d["limit"]["window_seconds"], 86400);
    assert_eq!(d["used"]["credits_micro"].as_i64(), Some(cost));

    // Rate: one admitted request in the window already.
    let r = env
        .post(
            "/v1/chat/completions",
            chat("openai/gpt-4o"),
            &[subject[0], ("x-rigbox-subject-rate", "1req;window=60")],
        )
        .await;
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"60"[..])
    );
    let v = gateway_error(r, 429, "subject_rate_limited").await;
    assert_eq!(
        v["error"]["message"],
        "Subject 'tenant-42' hit a rate limit: 1 requests per 60s."
    );
    // Another subject, the body's `user`, is not limited by tenant-42's use.
    let mut other = chat("openai/gpt-4o");
    other["user"] = json!("tenant-7");
    let r = env
        .post(
            "/v1/chat/completions",
            other,
            &[("x-rigbox-subject-rate", "1req;window=60")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let r = env
        .post(
            "/v1/chat/completions",
            chat("openai/gpt-4o"),
            &[subject[0], ("x-rigbox-subject-budget", "lots")],
        )
        .await;
    gateway_error(r, 400, "subject_limit_malformed").await;

    // The refusals cost nothing; usage is readable per subject from the VM.
    let charges = env.charges().await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    let r = env
        .vm
        .get(format!("{}/rig/v1/usage?subject=tenant-42", env.bridge))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    let u: Value = r.json().await.expect("json");
    assert_eq!(u["credits_micro"].as_i64(), Some(cost), "{u}");
    assert_eq!(u["requests"], 1, "{u}");
}

/// A tiny deterministic generator (no RNG dependency in tests).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_dropped_at_random_points_are_each_settled_once() {
    let env = start().await;
    let mut rng = Lcg(42);
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let vm = env.vm.clone();
        let url = format!("{}/v1/chat/completions", env.bridge);
        let drop_after = Duration::from_millis(20 + rng.next(700));
        let mut body = chat("openai/gpt-4o");
        body["stream"] = json!(true);
        // A small output bound: 100 holds fit in the free plan's credits at once.
        body["max_tokens"] = json!(64);
        tasks.push(tokio::spawn(async move {
            let req = vm
                .post(url)
                .header("x-fake-scenario", "chunk_delay_ms=50,chunks=12")
                .json(&body)
                .send();
            // Dropped before the head, mid-stream or not at all (some outlive 700 ms).
            let _ = tokio::time::timeout(drop_after, async move {
                let mut r = req.await.expect("head");
                while let Ok(Some(_)) = r.chunk().await {}
            })
            .await;
            i
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Every stream is drained upstream and settled; wait for the last holds.
    env.wait_settled(0, Duration::from_secs(60)).await;
    // Every request that reached the upstream was charged exactly once (a client gone before
    // its request was admitted cost nothing and reached nobody).
    let charges = env.charges().await;
    let ids: std::collections::HashSet<_> =
        charges.iter().map(|c| c["request_id"].clone()).collect();
    let forwarded = env.fake.requests().len();
    assert!(forwarded >= 50, "most requests were admitted: {forwarded}");
    assert_eq!(charges.len(), forwarded, "one charge per forwarded request");
    assert_eq!(ids.len(), charges.len(), "no request charged twice");
    assert!(
        charges.iter().all(|c| c["estimated"] == false),
        "the drain read every usage"
    );
    assert_eq!(env.fake.reported().len(), forwarded);
    env.assert_books_balance().await;
}

/// A client that leaves before the answer's head: the proxy still reads the answer and charges
/// what the upstream reported, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_the_answer_is_charged_what_the_upstream_reported() {
    let env = start().await;
    for _ in 0..5 {
        let req = env
            .vm
            .post(format!("{}/v1/chat/completions", env.bridge))
            .header("x-fake-scenario", "headers_delay_ms=400")
            .json(&chat("openai/gpt-4o"))
            .send();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), req)
                .await
                .is_err(),
            "the client left before the answer"
        );
    }
    env.wait_settled(5, Duration::from_secs(20)).await;
    let charges = env.charges().await;
    assert_eq!(charges.len(), 5, "{charges:?}");
    let ids: std::collections::HashSet<_> =
        charges.iter().map(|c| c["request_id"].clone()).collect();
    assert_eq!(ids.len(), 5, "no request charged twice");
    assert!(
        charges.iter().all(|c| c["estimated"] == false),
        "the upstream's usage was read: {charges:?}"
    );
    assert_eq!(env.fake.reported().len(), 5);
    env.assert_books_balance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_stream_settles_the_hold_once_after_restart() {
    let fake = FakeAi::start().await;
    let prices: String = fake.config().price_entries()
        .iter()
        .map(|p| {
            format!(
                "[[ai.prices]]\nmodel = \"{}\"\ninput_usd_per_mtok = {}\noutput_usd_per_mtok = {}\n",
                p.model, p.input_usd_per_mtok, p.output_usd_per_mtok
            )
        })
        .collect();
    let toml = format!(
        "[sim]\nprovision_ms = 50\nboot_ms = 300\nstop_ms = 100\nbridge_port = 0\n\
         [ai]\nbase_url = \"{}\"\napi_key = \"sk-or-fake\"\nprice_refresh = false\n{prices}",
        fake.openrouter_url()
    );
    let mut d = Daemon::start_with_config(&toml).await.expect("rigboxd");
    let key = d
        .create_user("crash@example.com", rigbox_testkit::PASSWORD)
        .await
        .expect("user");
    let user = Client::new(&d.api_url(), Some(key.clone()));
    let (_, local) = user.running_workspace("crashy").await;
    let ready: Value = serde_json::from_str(
        &std::fs::read_to_string(d.data_dir().join("ready.json")).expect("ready.json"),
    )
    .expect("json");
    let bridge = ready["bridge_url"].as_str().expect("bridge_url").to_owned();

    // A stream the upstream stalls after two events: its hold stays open.
    let mut body = chat("openai/gpt-4o");
    body["stream"] = json!(true);
    let vm = vm_client(local);
    let mut r = vm
        .post(format!("{bridge}/v1/chat/completions"))
        .header("x-fake-scenario", "stall_after=2")
        .json(&body)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.chunk().await;
    let (_, c) = user.get("/users/me/credits").await;
    let reserved = c["reserved_micro"].as_i64().expect("reserved");
    assert!(reserved > 0, "{c}");

    d.kill_and_restart().await.expect("restarted");
    let user = Client::new(&d.api_url(), Some(key.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let charges = loop {
        let (_, l) = user.get("/users/me/credits/ledger?kind=charge").await;
        let items = l["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            break items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned hold was not reconciled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["amount_micro"].as_i64(), Some(-reserved));
    assert_eq!(charges[0]["estimated"], true);

    // Another restart finds nothing more to settle.
    d.kill_and_restart().await.expect("restarted again");
    let user = Client::new(&d.api_url(), Some(key));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, l) = user.get("/users/me/credits/ledger?kind=charge").await;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(1), "{l}");
    let (_, c) = user.get("/users/me/credits").await;
    assert_eq!(c["reserved_micro"], 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_reserve_the_same_funds_twice() {
    let env = start().await;
    // One request's hold: max_tokens 1000 at $10/M output plus its input estimate.
    let mut body = chat("openai/gpt-4o");
    body["max_tokens"] = json!(1000);
    let bytes = serde_json::to_vec(&body).expect("json").len() as i64;
    let estimate = (bytes + 2) / 3 * 250 + 1000 * 1000; // micro: 2.5 and 10 USD/Mtok × 10⁸
                                                        // Leave funds for exactly five holds.
    let (_, me) = env.user.get("/auth/me").await;
    let balance = env.credits().await["balance_micro"]
        .as_i64()
        .expect("balance");
    let keep = 5 * estimate + estimate / 2;
    env.tp
        .platform()
        .app
        .adjust_credits(
            me["id"].as_str().expect("id"),
            -((balance - keep) as f64) / 1e6,
            "test: five holds".into(),
        )
        .await
        .expect("adjusted");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let vm = env.vm.clone();
        let url = format!("{}/v1/chat/completions", env.bridge);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            // The upstream holds each answer long enough for all 20 to be in flight.
            let r = vm
                .post(url)
                .header("x-fake-scenario", "headers_delay_ms=1500")
                .json(&body)
                .send()
                .await
                .expect("answer");
            r.status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("task"));
    }
    codes.sort_unstable();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 402).count(), 15, "{codes:?}");
    env.assert_books_balance().await;
    let c = env.credits().await;
    assert!(c["balance_micro"].as_i64().expect("balance") > 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brave_aliases_and_the_model_allow_list() {
    let env = start_with(|ai| {
        ai.model_aliases
            .insert("fast".into(), "openai/gpt-4o-mini".into());
        ai.models_allow = vec!["openai/gpt-4o-mini".into()];
    })
    .await;
    // Brave: charged usd_per_request per 2xx answer, the query passed on.
    let r = env
        .vm
        .get(format!(
            "{}/brave/res/v1/web/search?q=micro+vms",
            env.bridge
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-rigbox-cost-micro"], "500000");
    assert_eq!(r.headers()["x-rigbox-cost-credits"], "0.500000");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["query"]["original"], "micro vms", "{v}");
    let seen = env.fake.requests();
    assert_eq!(seen[0].header("x-subscription-token"), Some("brave-fake"));

    // An alias is resolved before pricing and forwarding.
    let r = env.post("/v1/chat/completions", chat("fast"), &[]).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        env.fake.requests().last().map(|s| s.body["model"].clone()),
        Some(json!("openai/gpt-4o-mini"))
    );
    // /v1/models lists only the allowed models, and costs nothing.
    let r = env
        .vm
        .get(format!("{}/v1/models", env.bridge))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["openai/gpt-4o-mini"]);

    let charges = env.charges().await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    assert_eq!(charges[0]["endpoint"], "/brave");
    assert_eq!(charges[0]["amount_micro"], -500_000);
    assert_eq!(charges[1]["model"], "openai/gpt-4o-mini");
    env.assert_books_balance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_refreshed_from_the_upstreams_model_list_price_its_models() {
    // No operator prices: the proxy learns them from the upstream's `GET /models` at start,
    // sent with the operator's key (the fake refuses it without).
    let env = start_with(|ai| {
        ai.prices.clear();
        ai.price_refresh = true;
    })
    .await;
    let model = env.fake.config().price_entries()[0].model.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let r = env.post("/v1/chat/completions", chat(&model), &[]).await;
        let status = r.status().as_u16();
        if status != 400 || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{model} was never priced");
    let listed = env
        .fake
        .requests()
        .into_iter()
        .find(|s| s.method == "GET" && s.path.ends_with("/models"))
        .expect("the model list was asked for");
    let auth = listed
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {}", env.fake.config().openrouter_key).as_str())
    );
    assert_eq!(env.charges().await.len(), 1);
    env.assert_books_balance().await;
}
