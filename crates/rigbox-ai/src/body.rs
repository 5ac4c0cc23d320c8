//! A metered request's JSON body, read one level deep.
//!
//! The proxy reads and rewrites a handful of top-level fields (`model`, `stream`, the output
//! limit, `usage`, `stream_options`, `user`); the rest, the prompt above all, is carried as the
//! caller's own text and never parsed into values. Parsing it into a `serde_json::Value` and
//! writing it back cost more than the rest of the rewrite (bench/ai-proxy). Names and values
//! borrow from the body (a map of owned copies cost two allocations a field), and the fields
//! go out in the order they came.

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A JSON object's top-level fields, in the order sent, each value as its raw text; both
/// borrow from the body unless the proxy set them.
#[derive(Debug)]
pub(crate) struct Fields<'a>(Vec<(Key<'a>, Cow<'a, RawValue>)>);

/// A field's name, borrowed from the body unless it had escapes.
#[derive(Debug, PartialEq)]
struct Key<'a>(Cow<'a, str>);

/// Why a body is not a JSON object; the text is meant for the caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    #[error("The request body is not valid JSON: {0}.")]
    Json(serde_json::Error),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
}

impl<'a> Fields<'a> {
    /// Parses `bytes`, which must hold one JSON object (a repeated key keeps its last value,
    /// as a `serde_json::Value` would, in its first place).
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, Invalid> {
        match serde_json::from_slice(bytes) {
            Ok(fields) => Ok(fields),
            Err(e) => Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => Invalid::NotAnObject,
                Err(_) => Invalid::Json(e),
            }),
        }
    }

    fn raw(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k.0 == key).map(|(_, v)| &**v)
    }

    /// The field `key` as a `T`; `None` when it is missing or not a `T` (as `Value::as_*`).
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.raw(key)?.get()).ok()
    }

    /// Sets the field `key` to `value` (in its place, or last).
    pub(crate) fn set(&mut self, key: &str, value: &impl Serialize) {
        let Ok(raw) = serde_json::value::to_raw_value(value) else {
            return;
        };
        match self.0.iter_mut().find(|(k, _)| k.0 == key) {
            Some((_, v)) => *v = Cow::Owned(raw),
            None => self
                .0
                .push((Key(Cow::Owned(key.to_owned())), Cow::Owned(raw))),
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
        let len = self.0.iter().map(|(k, v)| k.0.len() + v.get().len() + 4);
        let mut out = Vec::with_capacity(len.sum::<usize>() + 2);
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A name is written escaped as JSON wants it (the text sent may have escaped more).
            if serde_json::to_writer(&mut out, &*k.0).is_err() {
                return Bytes::new();
            }
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Object<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields: Vec<(Key<'a>, Cow<'a, RawValue>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'a>, &'a RawValue>()? {
                    match fields.iter_mut().find(|(seen, _)| *seen == k) {
                        Some((_, old)) => *old = Cow::Borrowed(v),
                        None => fields.push((k, Cow::Borrowed(v))),
                    }
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Name<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Name(std::marker::PhantomData))
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
    fn fields_keep_their_order_and_a_repeated_one_its_last_value() {
        let sent = br#"{"z":1,"m\u006fdel":"a/b","q\"k":[1, 2],"z":{"x":2},"a":null}"#;
        let mut f = Fields::parse(sent).expect("object");
        // An escaped name reads as what it means.
        assert_eq!(f.get::<String>("model").as_deref(), Some("a/b"));
        f.set("max_tokens", &64);
        f.set("model", &"c/d");
        let out = f.to_bytes();
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"z":{"x":2},"model":"c/d","q\"k":[1, 2],"a":null,"max_tokens":64}"#
        );
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["q\"k"], json!([1, 2]));
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
