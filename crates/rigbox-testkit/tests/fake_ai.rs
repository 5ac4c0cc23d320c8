//! The fake AI upstream speaks the real wire formats: the real `openai` and `anthropic` Python
//! SDKs parse every route (streams included) and see the usage the fake says it reported; the
//! scenarios do what they promise on the wire.

use rigbox_testkit::fake_ai::{Endpoint, FakeAi, FakeConfig, Reported, SCENARIO_HEADER};
use rigbox_testkit::python::run_sdk_script;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const OPENAI_SCRIPT: &str = include_str!("py/openai_sdk.py");
const ANTHROPIC_SCRIPT: &str = include_str!("py/anthropic_sdk.py");

/// The OpenAI-family usage the SDK parsed equals what the fake recorded for that answer.
fn assert_openai_usage(fake: &FakeAi, id: &str, usage: &Value, endpoint: Endpoint, stream: bool) {
    let r = fake
        .reported_for(id)
        .unwrap_or_else(|| panic!("the fake reported nothing for {id}"));
    assert_eq!(r.endpoint, endpoint, "{id}");
    assert_eq!(r.stream, stream, "{id}");
    let (input, output) = if endpoint == Endpoint::Responses {
        ("input_tokens", "output_tokens")
    } else {
        ("prompt_tokens", "completion_tokens")
    };
    assert_eq!(usage[input].as_u64(), Some(r.input_tokens), "{id}: {usage}");
    if endpoint != Endpoint::Embeddings {
        assert_eq!(
            usage[output].as_u64(),
            Some(r.output_tokens),
            "{id}: {usage}"
        );
    }
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(r.input_tokens + r.output_tokens),
        "{id}: {usage}"
    );
    assert_eq!(usage["cost"].as_f64(), r.cost_usd, "{id}: {usage}");
}

#[tokio::test]
async fn the_openai_sdk_parses_every_openrouter_route() {
    let fake = FakeAi::start().await;
    let out = run_sdk_script(
        OPENAI_SCRIPT,
        &[
            ("FAKE_OPENROUTER_URL", &fake.openrouter_url()),
            ("FAKE_OPENROUTER_KEY", "sk-or-fake"),
        ],
    )
    .await;
    let out = out.assert_success().json();
    let price = fake.config().price("openai/gpt-4o").clone();
    let words12 = "The fake upstream answers with predictable words so tests can count every";

    // Chat: "Be brief." (9) + "Say hello to the fake upstream" (30) = 39 chars = 10 tokens.
    let chat = &out["chat"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["role"], "assistant");
    assert_eq!(chat["text"], words12);
    assert_eq!(chat["finish"], "stop");
    assert_eq!(chat["usage"]["prompt_tokens"], 10);
    assert_eq!(chat["usage"]["completion_tokens"], 12);
    assert_eq!(
        chat["usage"]["cost"].as_f64(),
        Some(price.cost_usd(10, 12)),
        "cost from the price table"
    );
    let id = chat["id"].as_str().expect("chat id");
    assert_openai_usage(&fake, id, &chat["usage"], Endpoint::ChatCompletions, false);

    let s = &out["chat_stream"];
    assert_eq!(
        s["ids"].as_array().map(Vec::len),
        Some(1),
        "one id per stream"
    );
    assert_eq!(s["text"], words12);
    assert_eq!(s["deltas"], 4, "the default chunk count");
    assert_eq!(s["finish"], "stop");
    let id = s["ids"][0].as_str().expect("stream id");
    assert_openai_usage(&fake, id, &s["usage"], Endpoint::ChatCompletions, true);

    // Without `usage.include` there is no cost.
    let h = &out["chat_stream_helper"];
    assert_eq!(h["text"], words12);
    assert!(h["usage"].get("cost").is_none(), "{h}");
    let id = h["id"].as_str().expect("helper id");
    assert_openai_usage(&fake, id, &h["usage"], Endpoint::ChatCompletions, true);

    // Completions: "Once upon a time" = 16 chars = 4 tokens; max_tokens 5 truncates.
    let c = &out["completions"];
    assert_eq!(c["text"], "The fake upstream answers with");
    assert_eq!(c["finish"], "length");
    assert_eq!(c["usage"]["prompt_tokens"], 4);
    assert_eq!(c["usage"]["completion_tokens"], 5);
    let id = c["id"].as_str().expect("completion id");
    assert_openai_usage(&fake, id, &c["usage"], Endpoint::Completions, false);
    let cs = &out["completions_stream"];
    assert_eq!(cs["text"], words12);
    let id = cs["ids"][0].as_str().expect("completion stream id");
    assert_openai_usage(&fake, id, &cs["usage"], Endpoint::Completions, true);

    // Responses: instructions (9) + input (30) = 10 tokens.
    let r = &out["responses"];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["text"], words12);
    assert_eq!(r["usage"]["input_tokens"], 10);
    let id = r["id"].as_str().expect("response id");
    assert_openai_usage(&fake, id, &r["usage"], Endpoint::Responses, false);
    let rs = &out["responses_stream"];
    let types: Vec<&str> = rs["types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "response.output_text.delta")
            .count(),
        4
    );
    let seqs: Vec<u64> = rs["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs, (0..types.len() as u64).collect::<Vec<_>>());
    assert_eq!(rs["text"], words12);
    assert_eq!(rs["output_text"], words12);
    let id = rs["id"].as_str().expect("response stream id");
    assert_openai_usage(&fake, id, &rs["usage"], Endpoint::Responses, true);
    let rh = &out["responses_stream_helper"];
    assert_eq!(rh["text"], words12);
    assert_eq!(rh["usage"]["input_tokens"], 2, "\"Hi there\" = 8 chars");

    // Embeddings: base64 by default, decoded by the SDK; "abcd" + "efghijkl" = 3 tokens.
    let e = &out["embeddings"];
    assert_eq!(e["count"], 2);
    assert_eq!(e["dims"], 8);
    assert_eq!(e["first"][0].as_f64(), Some(-0.5));
    assert_eq!(e["usage"]["prompt_tokens"], 3);
    let id = e["id"].as_str().expect("embedding id");
    assert_openai_usage(&fake, id, &e["usage"], Endpoint::Embeddings, false);
    let ef = &out["embeddings_float"];
    assert_eq!(ef["first"].as_array().map(Vec::len), Some(4));
    assert_eq!(ef["first"][0].as_f64(), Some(-0.5));
    assert_eq!(
        e["first"][1].as_f64().map(|x| x as f32),
        ef["first"][1].as_f64().map(|x| x as f32),
        "base64 and float encodings carry the same f32s"
    );

    let ids: Vec<&str> = out["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let want: Vec<&str> = fake
        .config()
        .prices
        .iter()
        .map(|p| p.model.as_str())
        .collect();
    assert_eq!(ids, want);
    assert_eq!(out["models"][0]["object"], "model");
    assert_eq!(out["models"][0]["owned_by"], "openai");

    assert_eq!(out["auth_error"]["status"], 401);
    assert_eq!(out["auth_error"]["code"], "invalid_api_key");
    assert_eq!(out["rate_limited"]["status"], 429);
    assert_eq!(out["rate_limited"]["code"], "rate_limit_exceeded");

    // 10 metered answers reported usage; every one was parsed above.
    assert_eq!(fake.reported().len(), 10, "{:#?}", fake.reported());

    // What the SDK put on the wire.
    let seen = fake.requests();
    let chat_req = seen
        .iter()
        .find(|s| s.path == "/api/v1/chat/completions")
        .expect("a chat request");
    assert_eq!(chat_req.method, "POST");
    assert_eq!(chat_req.header("Authorization"), Some("Bearer sk-or-fake"));
    assert_eq!(chat_req.body["usage"]["include"], true);
    let stream_req = seen
        .iter()
        .find(|s| s.body["stream"] == true && s.path.ends_with("/chat/completions"))
        .expect("a chat stream request");
    assert_eq!(stream_req.body["stream_options"]["include_usage"], true);
    let emb = seen
        .iter()
        .find(|s| s.path == "/api/v1/embeddings")
        .expect("an embeddings request");
    assert_eq!(emb.body["encoding_format"], "base64");
    assert!(seen
        .iter()
        .any(|s| s.method == "GET" && s.path == "/api/v1/models"));
}

#[tokio::test]
async fn the_anthropic_sdk_parses_messages_and_streams() {
    let fake = FakeAi::start().await;
    let out = run_sdk_script(
        ANTHROPIC_SCRIPT,
        &[
            ("FAKE_ANTHROPIC_URL", &fake.anthropic_url()),
            ("FAKE_ANTHROPIC_KEY", "sk-ant-fake"),
        ],
    )
    .await;
    let out = out.assert_success().json();

    // System "Be brief." (9) + "Say hello to the fake upstream" (30) = 10 tokens.
    let m = &out["messages"];
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"]["input_tokens"], 10);
    assert_eq!(m["usage"]["output_tokens"], 12);
    let id = m["id"].as_str().expect("message id");
    let r = fake.reported_for(id).expect("reported");
    assert_eq!(
        r,
        Reported {
            id: id.to_owned(),
            endpoint: Endpoint::Messages,
            model: "claude-sonnet-5".into(),
            stream: false,
            input_tokens: 10,
            output_tokens: 12,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: None,
        }
    );

    // The SDK's accumulator: input from message_start, output from message_delta.
    let s = &out["messages_stream"];
    assert_eq!(s["streamed"], "The fake upstream answers with");
    assert_eq!(s["text"], s["streamed"]);
    assert_eq!(s["stop_reason"], "max_tokens");
    let u = &s["usage"];
    let id = s["id"].as_str().expect("stream id");
    let r = fake.reported_for(id).expect("reported");
    assert!(r.stream);
    assert_eq!(u["input_tokens"].as_u64(), Some(r.input_tokens));
    assert_eq!(u["output_tokens"].as_u64(), Some(r.output_tokens));
    assert_eq!(r.output_tokens, 5);
    assert_eq!(u["cache_read_input_tokens"], 7);
    assert_eq!(u["cache_creation_input_tokens"], 3);
    assert_eq!((r.cache_read_tokens, r.cache_write_tokens), (7, 3));

    let events: Vec<&str> = out["messages_raw_stream"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(events.contains(&"message_delta"));

    assert_eq!(out["count_tokens"], 10);
    assert_eq!(out["overloaded"]["status"], 529);
    assert_eq!(out["overloaded"]["type"], "overloaded_error");
    assert_eq!(fake.reported().len(), 3, "count_tokens is not metered");

    let seen = fake.requests();
    let first = &seen[0];
    assert_eq!(first.path, "/v1/messages");
    assert!(first.header("anthropic-version").is_some());
    // The SDK sends its API key as a Bearer token.
    assert_eq!(first.header("authorization"), Some("Bearer sk-ant-fake"));
    assert!(seen.iter().any(|s| s.path == "/v1/messages/count_tokens"));
}

// ---- scenarios, on the wire ----

async fn post(url: &str, headers: &[(&str, &str)], body: Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("the fake answers")
}

fn or_auth() -> (&'static str, &'static str) {
    ("authorization", "Bearer sk-or-fake")
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "abcdefgh"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
        "usage": {"include": true},
    })
}

/// The SSE events of a whole body, or the events before the body failed.
async fn read_events(mut resp: reqwest::Response) -> (Vec<String>, Result<(), String>) {
    let mut text = String::new();
    let end = loop {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
    };
    let events = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    (events, end)
}

#[tokio::test]
async fn auth_and_required_headers_fail_like_the_providers() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let r = post(&chat, &[], chat_body(false)).await;
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "invalid_api_key");
    assert!(b["error"]["message"].is_string());
    assert!(b["error"]["type"].is_string());

    let msgs = format!("{}/v1/messages", fake.anthropic_url());
    let body = json!({"model": "claude-sonnet-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(
        &msgs,
        &[("x-api-key", "nope"), ("anthropic-version", "2023-06-01")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "authentication_error");

    let r = post(&msgs, &[("x-api-key", "sk-ant-fake")], body.clone()).await;
    assert_eq!(r.status(), 400, "anthropic-version is required");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["type"], "invalid_request_error");

    let r = post(
        &msgs,
        &[
            ("x-api-key", "sk-ant-fake"),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");

    let brave = format!("{}/res/v1/web/search?q=rust%20async", fake.brave_url());
    let r = reqwest::get(&brave).await.expect("answer");
    assert_eq!(r.status(), 422);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "SUBSCRIPTION_TOKEN_INVALID");
    let r = reqwest::Client::new()
        .get(&brave)
        .header("X-Subscription-Token", "brave-fake")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["query"]["original"], "rust async");
    assert_eq!(b["web"]["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        fake.reported().last().map(|r| r.endpoint),
        Some(Endpoint::BraveSearch)
    );

    let r = post(
        &format!("{}/nope", fake.openrouter_url()),
        &[or_auth()],
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn error_scenarios_answer_the_providers_error_bodies() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "error=429")],
        chat_body(true),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "rate_limit_exceeded");

    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "error=500")],
        chat_body(false),
    )
    .await;
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["type"], "server_error");

    let msgs = format!("{}/v1/messages", fake.anthropic_url());
    let r = post(
        &msgs,
        &[
            ("x-api-key", "sk-ant-fake"),
            ("anthropic-version", "2023-06-01"),
            (SCENARIO_HEADER, "error=429"),
        ],
        json!({"model": "m", "max_tokens": 5, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["type"], "rate_limit_error");

    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "no_such_thing")],
        chat_body(false),
    )
    .await;
    assert_eq!(r.status(), 400, "a typo in a scenario is loud");
    assert!(fake.reported().is_empty(), "errors report no usage");
}

#[tokio::test]
async fn break_after_drops_the_connection_mid_stream() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "break_after=2")],
        chat_body(true),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (events, end) = read_events(r).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains("\"role\":\"assistant\""));
    assert!(end.is_err(), "the body must fail, not end cleanly");
    assert!(fake.reported().is_empty(), "the usage chunk never went out");

    // A JSON answer is cut after N bytes.
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "break_after=10")],
        chat_body(false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());

    // Anthropic: broken after message_start and content_block_start.
    let msgs = format!("{}/v1/messages", fake.anthropic_url());
    let r = post(
        &msgs,
        &[
            ("x-api-key", "sk-ant-fake"),
            ("anthropic-version", "2023-06-01"),
            (SCENARIO_HEADER, "break_after=2"),
        ],
        json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let (events, end) = read_events(r).await;
    assert_eq!(events.len(), 2);
    assert!(events[0].starts_with("event: message_start\n"));
    assert!(end.is_err());
}

#[tokio::test]
async fn stall_after_keeps_the_connection_open_and_silent() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let mut r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "stall_after=1")],
        chat_body(true),
    )
    .await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.expect("first frame").expect("not the end");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let next = tokio::time::timeout(Duration::from_millis(500), r.chunk()).await;
    assert!(next.is_err(), "nothing more arrives: {next:?}");
    // Dropping the fake ends the stalled stream.
    drop(fake);
    let end = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the stalled stream ends when the fake stops");
    assert!(end.is_err(), "a stalled stream ends broken: {end:?}");
}

#[tokio::test]
async fn usage_scenarios_shape_what_is_reported() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());

    // no_usage: no usage chunk even though the client asked, [DONE] still ends the stream.
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "no_usage")],
        chat_body(true),
    )
    .await;
    let (events, end) = read_events(r).await;
    end.expect("a clean end");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    assert!(
        !events.iter().any(|e| e.contains("\"choices\":[]")),
        "{events:?}"
    );
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "no_usage")],
        chat_body(false),
    )
    .await;
    let b: Value = r.json().await.expect("json");
    assert!(b.get("usage").is_none());
    assert!(fake.reported().is_empty());

    // Without include_usage a stream carries no usage either (as OpenAI).
    let mut body = chat_body(true);
    body["stream_options"] = json!({});
    let (events, _) = read_events(post(&chat, &[or_auth()], body).await).await;
    assert!(
        !events.iter().any(|e| e.contains("\"usage\"")),
        "{events:?}"
    );

    // The usage chunk: empty choices, usage with cost, then [DONE].
    let r = post(
        &chat,
        &[
            or_auth(),
            (
                SCENARIO_HEADER,
                "completion_tokens=30,chunks=6,prompt_tokens=100",
            ),
        ],
        chat_body(true),
    )
    .await;
    let (events, end) = read_events(r).await;
    end.expect("a clean end");
    // role chunk + 6 content chunks + finish chunk + usage chunk + [DONE]
    assert_eq!(events.len(), 10, "{events:?}");
    let usage_chunk: Value =
        serde_json::from_str(events[8].trim_start_matches("data: ")).expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 100);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 30);
    let price = fake.config().price("openai/gpt-4o").clone();
    assert_eq!(
        usage_chunk["usage"]["cost"].as_f64(),
        Some(price.cost_usd(100, 30))
    );
    let id = usage_chunk["id"].as_str().expect("id");
    assert_eq!(
        fake.reported_for(id).and_then(|r| r.cost_usd),
        Some(price.cost_usd(100, 30))
    );

    // no_cost and cost_usd.
    let b: Value = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "no_cost")],
        chat_body(false),
    )
    .await
    .json()
    .await
    .expect("json");
    assert!(b["usage"].get("cost").is_none());
    assert_eq!(b["usage"]["prompt_tokens"], 2, "8 chars");
    let b: Value = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "cost_usd=0.25")],
        chat_body(false),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(b["usage"]["cost"], 0.25);
    let id = b["id"].as_str().expect("id");
    assert_eq!(fake.reported_for(id).and_then(|r| r.cost_usd), Some(0.25));

    // Responses truncated by max_output_tokens end `incomplete`.
    let resp = format!("{}/responses", fake.openrouter_url());
    let b: Value = post(
        &resp,
        &[or_auth()],
        json!({"model": "openai/gpt-4o", "input": "hi", "max_output_tokens": 3}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(b["status"], "incomplete");
    assert_eq!(b["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(b["usage"]["output_tokens"], 3);

    // stream_error_after: the OpenRouter in-stream error, no usage.
    fake.clear();
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "stream_error_after=2")],
        chat_body(true),
    )
    .await;
    let (events, end) = read_events(r).await;
    end.expect("the stream ends cleanly after the error event");
    assert_eq!(events.len(), 3);
    assert!(events[2].contains("\"error\""));
    assert!(fake.reported().is_empty());

    // processing_comment: SSE comments first.
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "processing_comment")],
        chat_body(true),
    )
    .await;
    let (events, _) = read_events(r).await;
    assert_eq!(events[0], ": OPENROUTER PROCESSING");
}

#[tokio::test]
async fn delays_pace_the_answer() {
    let fake = FakeAi::start().await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let t = Instant::now();
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "headers_delay_ms=300")],
        chat_body(false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let t = Instant::now();
    let r = post(
        &chat,
        &[or_auth(), (SCENARIO_HEADER, "chunk_delay_ms=50")],
        chat_body(true),
    )
    .await;
    let headers_at = t.elapsed();
    let (events, end) = read_events(r).await;
    end.expect("a clean end");
    assert!(
        headers_at < Duration::from_millis(200),
        "headers come first: {headers_at:?}"
    );
    // 8 frames (role, 4 content, finish, usage, [DONE]) = 7 gaps of 50 ms.
    assert_eq!(events.len(), 8);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    // The usage went out, so it is reported.
    assert_eq!(fake.reported().len(), 2);
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let fake = FakeAi::start_with(FakeConfig {
        record: false,
        default_scenario: "completion_tokens=3".into(),
        ..FakeConfig::default()
    })
    .await;
    let chat = format!("{}/chat/completions", fake.openrouter_url());
    let b: Value = post(&chat, &[or_auth()], chat_body(false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        b["usage"]["completion_tokens"], 3,
        "the default scenario applies"
    );
    assert_eq!(fake.request_count(), 1);
    assert!(fake.requests().is_empty());
    assert!(fake.reported().is_empty());
}
