//! Which host a request is for, parsed strictly: the one place untrusted `Host`, `:authority`
//! and absolute-form URIs are read.

use http::Request;

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The base domain itself, an IP address or `localhost`: the console and API.
    Platform,
    /// `<label>.<base-domain>`: the app named `label`.
    App(String),
    /// Anything else (another domain, a deeper subdomain): no app is there.
    Unknown,
}

/// Why a request's host was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request names no host")]
    Missing,
    #[error("the Host header does not match the request URI's authority")]
    Conflict,
    #[error("the host is not a valid host name")]
    Invalid,
    #[error("the request has more than one Host header")]
    Repeated,
}

/// The host of `req`: the URI's authority (HTTP/2 `:authority`, HTTP/1.1 absolute form) and
/// the `Host` header must agree when both are present.
pub fn request_host<B>(req: &Request<B>) -> Result<String, HostError> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let header = header
        .map(|h| h.to_str().map_err(|_| HostError::Invalid))
        .transpose()?;
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = match (authority, header) {
        (Some(a), Some(h)) => {
            let (a, h) = (normalize(a)?, normalize(h)?);
            if a != h {
                return Err(HostError::Conflict);
            }
            return Ok(a);
        }
        (Some(a), None) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(HostError::Missing),
    };
    normalize(raw)
}

/// Lowercases, drops a port suffix and one trailing dot; refuses anything that is not a DNS
/// name or an IP literal.
pub fn normalize(raw: &str) -> Result<String, HostError> {
    if raw.contains('@') {
        return Err(HostError::Invalid);
    }
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':').ok_or(HostError::Invalid)?)) {
            return Err(HostError::Invalid);
        }
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| HostError::Invalid)?;
        return Ok(format!("[{}]", v6.to_ascii_lowercase()));
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if valid_port(port) => h,
            Some(_) => return Err(HostError::Invalid),
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err(HostError::Invalid);
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(HostError::Invalid);
        }
    }
    Ok(host)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// What a normalized host names under `base_domain`.
pub fn classify(host: &str, base_domain: &str) -> Target {
    if host == base_domain
        || host == "localhost"
        || host.starts_with('[')
        || host.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Target::Platform;
    }
    match host
        .strip_suffix(base_domain)
        .and_then(|p| p.strip_suffix('.'))
    {
        Some(label) if !label.is_empty() && !label.contains('.') => Target::App(label.to_owned()),
        _ => Target::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(
            normalize("Shop.Rigbox.Localhost").as_deref(),
            Ok("shop.rigbox.localhost")
        );
        assert_eq!(
            normalize("shop.rigbox.localhost.").as_deref(),
            Ok("shop.rigbox.localhost")
        );
        assert_eq!(
            normalize("shop.rigbox.localhost:8443").as_deref(),
            Ok("shop.rigbox.localhost")
        );
        assert_eq!(normalize("127.0.0.1:8080").as_deref(), Ok("127.0.0.1"));
        assert_eq!(normalize("[::1]:8080").as_deref(), Ok("[::1]"));
        for bad in [
            "",
            ":80",
            "shop..rigbox.localhost",
            "shop.rigbox.localhost:",
            "shop.rigbox.localhost:99999",
            "shop.rigbox.localhost:80:80",
            "sh op.rigbox.localhost",
            "shop_x.rigbox.localhost",
            "-shop.rigbox.localhost",
            "user@shop.rigbox.localhost",
            "[::1",
            "[nope]:80",
            "shop.rigbox.localhost..",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn authority_and_host_header_must_agree() {
        assert_eq!(
            request_host(&req("/x", &["a.rigbox.localhost"])).as_deref(),
            Ok("a.rigbox.localhost")
        );
        assert_eq!(
            request_host(&req(
                "https://a.rigbox.localhost/x",
                &["A.rigbox.localhost:443"]
            ))
            .as_deref(),
            Ok("a.rigbox.localhost")
        );
        assert_eq!(
            request_host(&req(
                "https://a.rigbox.localhost/x",
                &["b.rigbox.localhost"]
            )),
            Err(HostError::Conflict)
        );
        assert_eq!(request_host(&req("/x", &[])), Err(HostError::Missing));
        assert_eq!(
            request_host(&req("/x", &["a.rigbox.localhost", "b.rigbox.localhost"])),
            Err(HostError::Repeated)
        );
    }

    #[test]
    fn hosts_classify_under_the_base_domain() {
        let b = "rigbox.localhost";
        assert_eq!(classify("rigbox.localhost", b), Target::Platform);
        assert_eq!(classify("127.0.0.1", b), Target::Platform);
        assert_eq!(classify("localhost", b), Target::Platform);
        assert_eq!(
            classify("shop.rigbox.localhost", b),
            Target::App("shop".into())
        );
        assert_eq!(classify("a.shop.rigbox.localhost", b), Target::Unknown);
        assert_eq!(classify("evilrigbox.localhost", b), Target::Unknown);
        assert_eq!(classify("example.com", b), Target::Unknown);
    }
}
