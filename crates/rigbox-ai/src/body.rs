//! A metered request's JSON body, read one level deep.
//!
//! The proxy reads and rewrites a handful of top-level fields (`model`, `stream`, the output
//! limit, `usage`, `stream_options`, `user`); the rest, the prompt above all, is carried as the
//! caller's own text and never parsed into values. Parsing it into a `serde_json::Value` and
//! writing it back cost more than the rest of the rewrite (bench/ai-proxy).

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// A JSON object's top-level fields, each value as its raw text.
#[derive(Debug)]
pub(crate) struct Fields(BTreeMap<String, Box<RawValue>>);

/// Why a body is not a JSON object; the text is meant for the caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    #[error("The request body is not valid JSON: {0}.")]
    Json(serde_json::Error),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
}

impl Fields {
    /// Parses `bytes`, which must hold one JSON object (a repeated key keeps its last value,
    /// as a `serde_json::Value` would).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        match serde_json::from_slice(bytes) {
            Ok(fields) => Ok(Fields(fields)),
            Err(e) => Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => Invalid::NotAnObject,
                Err(_) => Invalid::Json(e),
            }),
        }
    }

    /// The field `key` as a `T`; `None` when it is missing or not a `T` (as `Value::as_*`).
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.0.get(key)?.get()).ok()
    }

    /// Sets the field `key` to `value`.
    pub(crate) fn set(&mut self, key: &str, value: &impl Serialize) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.0.insert(key.to_owned(), raw);
        }
    }

    /// Sets `inner` to `value` in the object field `key`, which is created (or replaces a
    /// field that is no object).
    pub(crate) fn set_in(&mut self, key: &str, inner: &str, value: serde_json::Value) {
        let mut object: serde_json::Map<String, serde_json::Value> =
            self.get(key).unwrap_or_default();
        object.insert(inner.to_owned(), value);
        self.set(key, &object);
    }

    /// The object as JSON text.
    pub(crate) fn to_bytes(&self) -> Bytes {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn fields_are_read_and_rewritten_and_the_rest_is_carried_as_sent() {
        let sent = br#"{"model":"a/b","messages":[{"role":"user","content":"caf\u00e9 \"q\"  x"}],"max_tokens":64,"stream":true,"usage":{"other":1},"stream_options":"junk"}"#;
        let mut f = Fields::parse(sent).expect("object");
        assert_eq!(f.get::<String>("model").as_deref(), Some("a/b"));
        assert_eq!(f.get::<u64>("max_tokens"), Some(64));
        assert_eq!(f.get::<bool>("stream"), Some(true));
        assert_eq!(f.get::<u64>("model"), None, "wrong type reads as missing");
        assert_eq!(f.get::<u64>("max_output_tokens"), None);
        f.set("model", &"c/d");
        f.set_in("usage", "include", true.into());
        f.set_in("stream_options", "include_usage", true.into());
        let out = f.to_bytes();
        let text = std::str::from_utf8(&out).expect("utf-8");
        // The prompt goes out byte for byte, escapes and spacing included.
        assert!(
            text.contains(r#""messages":[{"role":"user","content":"caf\u00e9 \"q\"  x"}]"#),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["model"], "c/d");
        assert_eq!(v["usage"], json!({"other": 1, "include": true}));
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["max_tokens"], 64);
    }

    #[test]
    fn a_body_that_is_no_object_is_refused_with_the_reason() {
        assert!(matches!(Fields::parse(b"[1,2]"), Err(Invalid::NotAnObject)));
        assert!(matches!(Fields::parse(b"\"x\""), Err(Invalid::NotAnObject)));
        let Err(Invalid::Json(e)) = Fields::parse(b"{\"model\":") else {
            panic!("truncated JSON is invalid JSON");
        };
        assert!(e.is_eof(), "{e}");
    }
}
