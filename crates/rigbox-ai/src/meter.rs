//! Metering of upstream answers (bridge-and-ai.md §7): reading usage from JSON bodies and from
//! SSE streams as they pass, and splicing `cost_micro`/`cost_credits` where the spec wants them.
//!
//! A stream is relayed event by event: every complete SSE event in an upstream chunk goes out
//! as soon as that chunk arrives, unchanged, except the one event that carries the final usage
//! of an OpenAI-style stream (rewritten with the cost). Only the incomplete tail of a chunk
//! waits for the rest of its event.

use crate::pricing::{usd_to_micro, Tokens};
use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// The wire format of a metered route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/responses`.
    Responses,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/messages` (Anthropic).
    Messages,
}

impl Flavor {
    /// Whether cost fields are added to the body (all but Messages).
    fn reports_cost_in_body(self) -> bool {
        self != Flavor::Messages
    }
}

/// Usage as an upstream reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub tokens: Tokens,
    /// `usage.cost` (USD), when the upstream reports it.
    pub cost_usd: Option<f64>,
}

/// Prices a usage: `(cost_micro, cost_usd)`.
pub type Pricer<'a> = &'a (dyn Fn(&Usage) -> (i64, f64) + Send + Sync);

/// The fields of a `usage` object the meter reads, from its text or from a `Value`; any other
/// (the nested `*_details` objects included) is skipped unparsed. A field present with a value
/// that is no number reads as 0, as `Value::as_u64` would read it; a repeated field fails the
/// read (the body is then read whole, into a `Value`, where the last one counts).
#[derive(Deserialize, Default)]
struct UsageFields {
    #[serde(default, deserialize_with = "present")]
    prompt_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    completion_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    output_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_creation_input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_read_input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cost: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cost_micro: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    cost_credits: Option<IgnoredAny>,
}

/// A field that is present, `null` included (which `Option`'s own reading makes `None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl UsageFields {
    /// The fields of `usage`, which must be an object.
    fn of(usage: &Value) -> Option<Self> {
        usage
            .is_object()
            .then(|| UsageFields::deserialize(usage).ok())?
    }

    /// OpenAI-style usage (`prompt_tokens`/`completion_tokens`, or Responses'
    /// `input_tokens`/`output_tokens`), with OpenRouter's `cost`.
    fn openai(&self) -> Usage {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = self.prompt_tokens.as_ref().or(self.input_tokens.as_ref());
        let output = self
            .completion_tokens
            .as_ref()
            .or(self.output_tokens.as_ref());
        Usage {
            tokens: Tokens {
                input: n(input),
                output: n(output),
                ..Tokens::default()
            },
            cost_usd: self.cost.as_ref().and_then(Value::as_f64),
        }
    }

    /// Anthropic usage, merged into `into`: counts are cumulative, so a later value replaces
    /// an earlier one and is never added to it.
    fn merge_anthropic(&self, into: &mut Usage) {
        let t = &mut into.tokens;
        for (field, to) in [
            (&self.input_tokens, &mut t.input),
            (&self.output_tokens, &mut t.output),
            (&self.cache_creation_input_tokens, &mut t.cache_write),
            (&self.cache_read_input_tokens, &mut t.cache_read),
        ] {
            if let Some(v) = field.as_ref().and_then(Value::as_u64) {
                *to = v;
            }
        }
    }

    /// The usage, read as `flavor` writes it.
    fn usage(&self, flavor: Flavor) -> Usage {
        match flavor {
            Flavor::Messages => {
                let mut u = Usage::default();
                self.merge_anthropic(&mut u);
                u
            }
            _ => self.openai(),
        }
    }
}

/// OpenAI-style `usage`; `None` when it is no object.
fn openai_usage(usage: &Value) -> Option<Usage> {
    UsageFields::of(usage).map(|f| f.openai())
}

/// Anthropic `usage`, merged into `into` (see [`UsageFields::merge_anthropic`]).
fn anthropic_usage(usage: &Value, into: &mut Usage) {
    if let Some(f) = UsageFields::of(usage) {
        f.merge_anthropic(into);
    }
}

fn add_cost(usage: &mut Value, micro: i64) {
    if let Some(o) = usage.as_object_mut() {
        o.insert("cost_micro".into(), micro.into());
        o.insert("cost_credits".into(), (micro as f64 / 1_000_000.0).into());
    }
}

fn chars(v: &Value) -> u64 {
    v.as_str().map_or(0, |s| s.chars().count() as u64)
}

/// Characters of generated output in a complete (non-streamed) answer.
fn output_chars(flavor: Flavor, body: &Value) -> u64 {
    let mut n = 0;
    match flavor {
        Flavor::Chat => {
            for c in body["choices"].as_array().into_iter().flatten() {
                n += chars(&c["message"]["content"]);
                for t in c["message"]["tool_calls"].as_array().into_iter().flatten() {
                    n += chars(&t["function"]["arguments"]);
                }
            }
        }
        Flavor::Completions => {
            for c in body["choices"].as_array().into_iter().flatten() {
                n += chars(&c["text"]);
            }
        }
        Flavor::Responses => {
            for o in body["output"].as_array().into_iter().flatten() {
                for c in o["content"].as_array().into_iter().flatten() {
                    n += chars(&c["text"]);
                }
                n += chars(&o["arguments"]);
            }
        }
        Flavor::Messages => {
            for c in body["content"].as_array().into_iter().flatten() {
                n += chars(&c["text"]);
                if let Some(input) = c.get("input").filter(|_| c["type"] == "tool_use") {
                    n += input.to_string().chars().count() as u64;
                }
            }
        }
        Flavor::Embeddings => {}
    }
    n
}

/// A complete answer's top level as far as the meter reads it: `usage`, as its raw text (which
/// also tells where in the body it is), everything else skipped unparsed.
#[derive(serde::Deserialize)]
struct UsageOnly<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// A complete answer's usage and, when it reports none, its output size (the estimate's
/// basis; 0 otherwise); adds the cost fields to the body's `usage` when the flavor reports
/// them. Returns the (possibly rewritten) body.
///
/// Only `usage` is parsed: the cost fields are spliced into the upstream's bytes just before
/// the object's closing brace, and the rest of the answer goes out as the upstream sent it.
pub fn meter_body(
    flavor: Flavor,
    body: Bytes,
    price: Pricer<'_>,
) -> (Bytes, Option<Usage>, u64, Option<i64>) {
    match splice_cost(flavor, &body, price) {
        Some((out, usage, micro)) => (out, Some(usage), 0, Some(micro)),
        None => meter_value(flavor, body, price),
    }
}

/// The fast path of [`meter_body`]: the body with the cost spliced into its `usage` (as it is
/// when the flavor reports no cost in bodies), the usage and its cost; `None` for an answer
/// without a usage object, or whose usage has cost fields already.
fn splice_cost(flavor: Flavor, body: &Bytes, price: Pricer<'_>) -> Option<(Bytes, Usage, i64)> {
    let raw = serde_json::from_slice::<UsageOnly<'_>>(body).ok()?.usage?;
    let text = raw.get();
    if !text.starts_with('{') {
        return None;
    }
    let fields: UsageFields = serde_json::from_str(text).ok()?;
    let usage = fields.usage(flavor);
    let (micro, _) = price(&usage);
    if !flavor.reports_cost_in_body() {
        return Some((body.clone(), usage, micro));
    }
    // Replaced, not repeated: the whole-value path does that.
    if fields.cost_micro.is_some() || fields.cost_credits.is_some() {
        return None;
    }
    // `raw` borrows from `body`: where it starts is its distance from the body's start; it
    // is an object, so it ends with its closing brace.
    let start = text.as_ptr() as usize - body.as_ptr() as usize;
    let close = start + text.len() - 1;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(&body[..close]);
    if !text[1..text.len() - 1].trim().is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b"\"cost_micro\":");
    serde_json::to_writer(&mut out, &micro).ok()?;
    out.extend_from_slice(b",\"cost_credits\":");
    serde_json::to_writer(&mut out, &(micro as f64 / 1_000_000.0)).ok()?;
    out.extend_from_slice(&body[close..]);
    Some((Bytes::from(out), usage, micro))
}

/// The usage an answer's `usage` object reports, read as the flavor writes it.
fn usage_of(flavor: Flavor, usage: &Value) -> Option<Usage> {
    UsageFields::of(usage).map(|f| f.usage(flavor))
}

/// [`meter_body`] over the whole answer parsed into a value: for answers without usage (their
/// output is counted) and the odd shapes the splice leaves alone.
fn meter_value(
    flavor: Flavor,
    body: Bytes,
    price: Pricer<'_>,
) -> (Bytes, Option<Usage>, u64, Option<i64>) {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return (body, None, 0, None);
    };
    let Some(usage) = v.get("usage").and_then(|u| usage_of(flavor, u)) else {
        let out = output_chars(flavor, &v);
        return (body, None, out, None);
    };
    let (micro, _) = price(&usage);
    if !flavor.reports_cost_in_body() {
        return (body, Some(usage), 0, Some(micro));
    }
    add_cost(&mut v["usage"], micro);
    let body = serde_json::to_vec(&v).map(Bytes::from).unwrap_or(body);
    (body, Some(usage), 0, Some(micro))
}

/// Meters one SSE stream as it is relayed.
pub struct StreamMeter {
    flavor: Flavor,
    tail: BytesMut,
    /// Usage seen so far (Anthropic: merged from `message_start` and `message_delta`).
    pub usage: Option<Usage>,
    /// Characters of generated output seen.
    pub output_chars: u64,
    /// The stream's own end marker passed (`[DONE]`, `message_stop`, `response.completed`).
    pub finished: bool,
    /// Cost spliced into the stream, if any.
    pub cost_micro: Option<i64>,
}

/// Where one SSE event ends in `buf` (after its blank line), if it is complete.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `event:` name and the joined `data:` of one event.
fn parse_event(ev: &[u8]) -> (Option<&str>, String) {
    let text = std::str::from_utf8(ev).unwrap_or("");
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (name, data)
}

impl StreamMeter {
    pub fn new(flavor: Flavor) -> Self {
        StreamMeter {
            flavor,
            tail: BytesMut::new(),
            usage: None,
            output_chars: 0,
            finished: false,
            cost_micro: None,
        }
    }

    /// Takes one upstream chunk; returns what to send to the client now.
    pub fn push(&mut self, chunk: Bytes, price: Pricer<'_>) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut buf = if self.tail.is_empty() {
            BytesMut::from(&chunk[..])
        } else {
            let mut b = std::mem::take(&mut self.tail);
            b.extend_from_slice(&chunk);
            b
        };
        while let Some(end) = event_end(&buf) {
            let ev = buf.split_to(end).freeze();
            out.push(self.event(ev, price));
        }
        self.tail = buf;
        out
    }

    /// Whatever is left when the upstream ends (an unterminated last event), as is.
    pub fn finish(&mut self, price: Pricer<'_>) -> Option<Bytes> {
        if self.tail.is_empty() {
            return None;
        }
        let ev = std::mem::take(&mut self.tail).freeze();
        Some(self.event(ev, price))
    }

    fn event(&mut self, ev: Bytes, price: Pricer<'_>) -> Bytes {
        let (name, data) = parse_event(&ev);
        let name = name.map(str::to_owned);
        if data.is_empty() {
            return ev;
        }
        if data == "[DONE]" {
            self.finished = true;
            return ev;
        }
        // Most events carry a few words of output: read typed, no `Value` built.
        match self.flavor {
            Flavor::Chat | Flavor::Completions => {
                if let Some(n) = chunk_output_chars(&data) {
                    self.output_chars += n;
                    return ev;
                }
            }
            Flavor::Messages => {
                if let Some((n, stop)) = messages_event(&data) {
                    self.output_chars += n;
                    self.finished |= stop;
                    return ev;
                }
            }
            Flavor::Responses | Flavor::Embeddings => {}
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            return ev;
        };
        match self.flavor {
            Flavor::Chat | Flavor::Completions => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    self.output_chars += chars(&c["delta"]["content"]) + chars(&c["text"]);
                    for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                        self.output_chars += chars(&t["function"]["arguments"]);
                    }
                }
                if let Some(usage) = v.get("usage").and_then(openai_usage) {
                    self.usage = Some(usage);
                    let (micro, _) = price(&usage);
                    self.cost_micro = Some(micro);
                    add_cost(&mut v["usage"], micro);
                    return reencode(name.as_deref(), &v).unwrap_or(ev);
                }
                ev
            }
            Flavor::Responses => {
                let kind = v["type"].as_str().unwrap_or_default().to_owned();
                if kind == "response.output_text.delta"
                    || kind == "response.function_call_arguments.delta"
                {
                    self.output_chars += chars(&v["delta"]);
                }
                if let Some(usage) = v["response"].get("usage").and_then(openai_usage) {
                    self.usage = Some(usage);
                    if kind == "response.completed" {
                        self.finished = true;
                        let (micro, _) = price(&usage);
                        self.cost_micro = Some(micro);
                        add_cost(&mut v["response"]["usage"], micro);
                        return reencode(name.as_deref(), &v).unwrap_or(ev);
                    }
                }
                if kind == "response.failed" || kind == "response.incomplete" {
                    self.finished = true;
                }
                ev
            }
            Flavor::Messages => {
                match v["type"].as_str() {
                    Some("message_start") => {
                        let mut u = self.usage.unwrap_or_default();
                        anthropic_usage(&v["message"]["usage"], &mut u);
                        self.usage = Some(u);
                    }
                    Some("message_delta") => {
                        let mut u = self.usage.unwrap_or_default();
                        anthropic_usage(&v["usage"], &mut u);
                        self.usage = Some(u);
                    }
                    Some("content_block_delta") => {
                        self.output_chars +=
                            chars(&v["delta"]["text"]) + chars(&v["delta"]["partial_json"]);
                    }
                    Some("message_stop") => self.finished = true,
                    _ => {}
                }
                ev
            }
            Flavor::Embeddings => ev,
        }
    }
}

/// The fields of a Chat/Completions stream chunk the meter reads, borrowed from its text (most
/// chunks carry a few words of output; building a `Value` of each cost more than relaying it).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// The characters of an optional text field read typed (as [`chars`] counts a `Value`'s).
fn text_len(s: &Option<Cow<'_, str>>) -> u64 {
    s.as_deref().map_or(0, |s| s.chars().count() as u64)
}

/// The output characters of a Chat/Completions stream chunk that carries no usage, as the value
/// path counts them (`delta.content`, `text`, tool call arguments); `None` for a chunk with a
/// usage, or of a shape the typed read does not take, which the value path meters.
fn chunk_output_chars(data: &str) -> Option<u64> {
    let chunk: Chunk<'_> = serde_json::from_str(data).ok()?;
    if chunk.usage.is_some_and(|u| u.get() != "null") {
        return None;
    }
    Some(
        chunk
            .choices
            .iter()
            .flatten()
            .map(|c| {
                text_len(&c.text)
                    + c.delta.as_ref().map_or(0, |d| {
                        text_len(&d.content)
                            + d.tool_calls
                                .iter()
                                .flatten()
                                .filter_map(|t| t.function.as_ref())
                                .map(|f| text_len(&f.arguments))
                                .sum::<u64>()
                    })
            })
            .sum(),
    )
}

/// The fields of an Anthropic Messages stream event the meter reads without its usage.
#[derive(Deserialize)]
struct MessagesEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<MessagesDelta<'a>>,
}

#[derive(Deserialize)]
struct MessagesDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
}

/// A Messages stream event that carries no usage, as the value path meters it: its output
/// characters and whether it ends the message; `None` for `message_start` and `message_delta`
/// (their usage) and for shapes the typed read does not take, which the value path meters.
fn messages_event(data: &str) -> Option<(u64, bool)> {
    let ev: MessagesEvent<'_> = serde_json::from_str(data).ok()?;
    match &*ev.kind {
        "message_start" | "message_delta" => None,
        "content_block_delta" => Some((
            ev.delta
                .as_ref()
                .map_or(0, |d| text_len(&d.text) + text_len(&d.partial_json)),
            false,
        )),
        "message_stop" => Some((0, true)),
        _ => Some((0, false)),
    }
}

fn reencode(name: Option<&str>, v: &Value) -> Option<Bytes> {
    let json = serde_json::to_string(v).ok()?;
    Some(Bytes::from(match name {
        Some(n) => format!("event: {n}\ndata: {json}\n\n"),
        None => format!("data: {json}\n\n"),
    }))
}

/// Prices a usage with a known price (`cost` reported by the upstream wins).
pub fn cost_of(usage: &Usage, price: &crate::pricing::Price) -> (i64, f64) {
    let usd = usage
        .cost_usd
        .unwrap_or_else(|| price.cost_usd(usage.tokens));
    (usd_to_micro(usd), usd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_event_read_typed_meters_as_the_value_path_does() {
        // What the value path counts, and whether it ends the message.
        let value_path = |data: &str| {
            let v: Value = serde_json::from_str(data).expect("json");
            let chars = match v["type"].as_str() {
                Some("content_block_delta") => {
                    chars(&v["delta"]["text"]) + chars(&v["delta"]["partial_json"])
                }
                _ => 0,
            };
            (chars, v["type"] == "message_stop")
        };
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9llo \"q\""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1"}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            assert_eq!(messages_event(data), Some(value_path(data)), "{data}");
        }
        // Left to the value path: the usage events, shapes the typed read does not take.
        for data in [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            r#"{"type":"content_block_delta","delta":{"text":["not","a string"]}}"#,
            r#"{"no":"type"}"#,
        ] {
            assert_eq!(messages_event(data), None, "{data}");
        }
    }

    #[test]
    fn a_chunk_read_typed_counts_what_the_value_path_counts() {
        let value_path = |data: &str| {
            let v: Value = serde_json::from_str(data).expect("json");
            let mut n = 0;
            for c in v["choices"].as_array().into_iter().flatten() {
                n += chars(&c["delta"]["content"]) + chars(&c["text"]);
                for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    n += chars(&t["function"]["arguments"]);
                }
            }
            n
        };
        for data in [
            r#"{"choices":[{"index":0,"delta":{"content":"h\u00e9llo \"q\"\n"}}],"usage":null}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}},{"index":1}]}}]}"#,
            r#"{"choices":[{"text":"two ","index":0},{"text":"choices","index":1}]}"#,
            r#"{"choices":[],"id":"x"}"#,
            r#"{"id":"no choices"}"#,
        ] {
            assert_eq!(chunk_output_chars(data), Some(value_path(data)), "{data}");
        }
        // Left to the value path: a usage to meter, shapes the typed read does not take.
        for data in [
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"parts"}]}}]}"#,
            r#"{"choices":{"not":"an array"}}"#,
            "not json",
        ] {
            assert_eq!(chunk_output_chars(data), None, "{data}");
        }
    }

    fn flat(_: &Usage) -> (i64, f64) {
        (360, 0.0000036)
    }

    fn run(flavor: Flavor, chunks: &[&str]) -> (StreamMeter, String) {
        let mut m = StreamMeter::new(flavor);
        let mut out = String::new();
        for c in chunks {
            for b in m.push(Bytes::copy_from_slice(c.as_bytes()), &flat) {
                out.push_str(std::str::from_utf8(&b).expect("utf-8"));
            }
        }
        if let Some(b) = m.finish(&flat) {
            out.push_str(std::str::from_utf8(&b).expect("utf-8"));
        }
        (m, out)
    }

    #[test]
    fn chat_stream_passes_through_and_gets_cost_in_the_usage_chunk() {
        let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"héllo\"}}]}\n\n";
        let (m, out) = run(
            Flavor::Chat,
            &[
                first,
                // An event split across two chunks.
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,",
                "\"completion_tokens\":5,\"cost\":0.0000036}}\n\ndata: [DONE]\n\n",
            ],
        );
        assert!(out.starts_with(first), "unchanged bytes first: {out}");
        assert!(out.contains("\"cost_micro\":360"), "{out}");
        assert!(out.contains("\"cost_credits\":0.00036"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert!(m.finished);
        assert_eq!(m.output_chars, 5);
        let u = m.usage.expect("usage");
        assert_eq!((u.tokens.input, u.tokens.output), (3, 5));
        assert_eq!(u.cost_usd, Some(0.0000036));
    }

    #[test]
    fn anthropic_counts_are_cumulative_never_summed() {
        let (m, out) = run(
            Flavor::Messages,
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"cache_read_input_tokens\":4}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"abc\"}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ],
        );
        let u = m.usage.expect("usage");
        assert_eq!(
            u.tokens,
            Tokens {
                input: 10,
                output: 9,
                cache_write: 0,
                cache_read: 4
            }
        );
        assert!(m.finished);
        assert_eq!(m.output_chars, 3);
        assert!(
            !out.contains("cost_micro"),
            "Messages streams are relayed unchanged"
        );
    }

    #[test]
    fn responses_completed_event_gets_the_cost() {
        let (m, out) = run(
            Flavor::Responses,
            &[
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}}\n\n",
            ],
        );
        assert!(m.finished);
        assert!(out.contains("event: response.completed\ndata: {"), "{out}");
        assert!(out.contains("\"cost_micro\":360"), "{out}");
    }

    #[test]
    fn bodies_get_cost_fields_except_messages() {
        let body = Bytes::from_static(
            b"{\"choices\":[{\"message\":{\"content\":\"caf\\u00e9\"}}],\"usage\":{\"prompt_tokens\":1, \"completion_tokens\":2 } ,\"x\":[]}",
        );
        let (b, u, _, micro) = meter_body(Flavor::Chat, body, &flat);
        // Spliced into the upstream's own bytes: everything else as it sent it.
        assert_eq!(
            std::str::from_utf8(&b).expect("utf-8"),
            "{\"choices\":[{\"message\":{\"content\":\"caf\\u00e9\"}}],\"usage\":{\"prompt_tokens\":1, \"completion_tokens\":2 ,\"cost_micro\":360,\"cost_credits\":0.00036} ,\"x\":[]}"
        );
        assert_eq!((u.map(|u| u.tokens.output), micro), (Some(2), Some(360)));
        let msg = Bytes::from_static(
            b"{\"content\":[{\"type\":\"text\",\"text\":\"ab\"}],\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}",
        );
        let (b, _, _, micro) = meter_body(Flavor::Messages, msg.clone(), &flat);
        assert_eq!(b, msg);
        assert_eq!(micro, Some(360));
    }

    #[test]
    fn a_usage_read_from_its_text_meters_as_the_whole_value_does() {
        // input, output, cache write, cache read, cost.
        type Read = Option<(u64, u64, u64, u64, Option<f64>)>;
        let cases: [(Flavor, &str, Read); 6] = [
            // A field present as null or as no number reads 0, and is not replaced by its
            // Responses-style name; nested details are skipped.
            (
                Flavor::Chat,
                r#"{"prompt_tokens":null,"input_tokens":5,"completion_tokens":"7","output_tokens":3,"cost":0.5,"prompt_tokens_details":{"cached_tokens":1}}"#,
                Some((0, 0, 0, 0, Some(0.5))),
            ),
            (
                Flavor::Responses,
                r#"{"input_tokens":4,"output_tokens":6,"input_tokens_details":{"cached_tokens":1}}"#,
                Some((4, 6, 0, 0, None)),
            ),
            (
                Flavor::Messages,
                r#"{"input_tokens":4,"output_tokens":6,"cache_creation_input_tokens":2,"cache_read_input_tokens":3}"#,
                Some((4, 6, 2, 3, None)),
            ),
            // A repeated field: the last counts, as in a value.
            (
                Flavor::Chat,
                r#"{"prompt_tokens":1,"prompt_tokens":9}"#,
                Some((9, 0, 0, 0, None)),
            ),
            (Flavor::Chat, r#"[1,2]"#, None),
            (Flavor::Messages, r#"5"#, None),
        ];
        for (flavor, usage, want) in cases {
            let body = Bytes::from(format!(r#"{{"id":"x","usage":{usage}}}"#));
            let (b, u, _, _) = meter_body(flavor, body.clone(), &flat);
            let (vb, vu, _, _) = meter_value(flavor, body, &flat);
            let got = u.map(|u| {
                let t = u.tokens;
                (t.input, t.output, t.cache_write, t.cache_read, u.cost_usd)
            });
            assert_eq!(got, want, "{usage}");
            assert_eq!(u, vu, "{usage}");
            let json = |b: &Bytes| serde_json::from_slice::<Value>(b).expect("json");
            assert_eq!(json(&b), json(&vb), "{usage}");
        }
    }

    #[test]
    fn an_empty_usage_or_one_with_cost_fields_gets_them_once() {
        let (b, u, _, _) = meter_body(
            Flavor::Responses,
            Bytes::from_static(b"{\"usage\":{},\"output\":[]}"),
            &flat,
        );
        assert_eq!(
            &b[..],
            b"{\"usage\":{\"cost_micro\":360,\"cost_credits\":0.00036},\"output\":[]}"
        );
        assert_eq!(u.map(|u| u.tokens.input), Some(0));
        let (b, _, _, _) = meter_body(
            Flavor::Chat,
            Bytes::from_static(b"{\"usage\":{\"prompt_tokens\":1,\"cost_micro\":5}}"),
            &flat,
        );
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["usage"]["cost_micro"], 360);
        assert_eq!(
            std::str::from_utf8(&b)
                .expect("utf-8")
                .matches("cost_micro")
                .count(),
            1
        );
    }

    #[test]
    fn an_answer_without_usage_is_counted_for_the_estimate() {
        let body =
            Bytes::from_static(b"{\"choices\":[{\"message\":{\"content\":\"h\\u00e9llo\"}}]}");
        let (b, u, chars, micro) = meter_body(Flavor::Chat, body.clone(), &flat);
        assert_eq!((b, u, chars, micro), (body, None, 5, None));
        let (_, u, chars, _) = meter_body(Flavor::Chat, Bytes::from_static(b"not json"), &flat);
        assert_eq!((u, chars), (None, 0));
    }
}
