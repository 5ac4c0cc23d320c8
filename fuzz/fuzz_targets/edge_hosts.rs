//! Arbitrary `Host` headers and request targets into the edge's host parsing: it must never
//! panic, and whatever it accepts must be a normalized host (lowercase, no port, no trailing
//! dot) that parses to itself again and classifies to at most one app label.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rigbox_edge::host::{classify, normalize, request_host, Target};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (target, host) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let mut b = http::Request::builder();
    if let Ok(t) = std::str::from_utf8(target) {
        if let Ok(uri) = t.parse::<http::Uri>() {
            b = b.uri(uri);
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(host) {
        b = b.header(http::header::HOST, v);
    }
    let Ok(req) = b.body(()) else { return };
    if let Ok(h) = request_host(&req) {
        assert_eq!(normalize(&h).as_deref(), Ok(h.as_str()), "normalizing is idempotent");
        assert!(!h.ends_with('.') && h == h.to_ascii_lowercase(), "{h:?}");
        assert!(h.starts_with('[') || !h.contains(':'), "no port left: {h:?}");
        if let Target::App(label) = classify(&h, "rigbox.localhost") {
            assert!(!label.is_empty() && !label.contains('.'), "{label:?}");
        }
    }
});
