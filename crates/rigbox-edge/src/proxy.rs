//! An app request, from access check to the VM and back (apps-and-routing.md §3 steps 2–7, §4,
//! §7): streamed both ways, upgrades (WebSockets) spliced after the 101.

use crate::pool::{self, ConnectError, UpBody, Upstream};
use crate::response::{self, EdgeBody};
use crate::{AppRoute, Conn, Edge, EdgeUser};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rigbox_types::api::{AppStatus, AppVisibility};

const X_RIGBOX_KEY: &str = "x-rigbox-key";
const X_USER_ID: &str = "x-rigbox-user-id";
const X_USER_EMAIL: &str = "x-rigbox-user-email";
pub(crate) const APP_COOKIE: &str = "rigbox_app_session";

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded as such.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) async fn app_request(
    edge: &Edge,
    name: String,
    host: String,
    req: Request<Incoming>,
    conn: &Conn,
) -> Response<EdgeBody> {
    let route = match edge.routes.get(&*edge.dir, &name).await {
        Ok(Some(r)) => r,
        Ok(None) => return response::app_not_found(&req),
        Err(e) => {
            tracing::error!(app = %name, error = %e, "edge: route lookup failed");
            return response::error(
                &req,
                500,
                "internal",
                "The platform could not look up this app.",
            );
        }
    };
    // 2. The edge's own paths are never forwarded.
    if req.uri().path().starts_with("/.rigbox/") {
        return crate::auth::own_path(edge, &host, &req, conn).await;
    }
    // 3. CORS preflights go through unchecked; 4. everything else is checked.
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let user = if preflight || route.visibility == AppVisibility::Public {
        None
    } else {
        match check_access(edge, &route, &host, &req, conn).await {
            Ok(u) => Some(u),
            Err(resp) => return resp,
        }
    };
    // 5–6. State, told only to callers that passed the check.
    if route.status == AppStatus::Inactive {
        return response::error(
            &req,
            503,
            "app_inactive",
            "This app is switched off by its owner.",
        );
    }
    if !route.workspace_running {
        return response::error(
            &req,
            503,
            "workspace_not_running",
            "The workspace behind this app is not running.",
        );
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > edge.cfg.max_body_bytes {
            return response::error(
                &req,
                413,
                "payload_too_large",
                "The request body is too large.",
            );
        }
    }
    forward(edge, &route, &host, req, conn, user.as_ref()).await
}

/// Section 4: the caller's identity, or the response that refuses it.
async fn check_access(
    edge: &Edge,
    route: &AppRoute,
    host: &str,
    req: &Request<Incoming>,
    conn: &Conn,
) -> Result<EdgeUser, Response<EdgeBody>> {
    if let Some(key) = req.headers().get(X_RIGBOX_KEY) {
        let user = match key.to_str() {
            Ok(k) => edge.dir.key_user(k.trim()).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "edge: key lookup failed");
                None
            }),
            Err(_) => None,
        };
        return match user {
            Some(u) if route.allows(&u) => Ok(u),
            _ => Err(response::error(
                req,
                403,
                "app_forbidden",
                "This key does not give access to this app.",
            )),
        };
    }
    if let Some(token) = crate::auth::app_cookie(req.headers()) {
        let user = edge
            .dir
            .session_user(&token, host)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "edge: app session lookup failed");
                None
            });
        if let Some(u) = user {
            if route.allows(&u) {
                return Ok(u);
            }
            return Err(crate::auth::forbidden_for(req, &u));
        }
        // An expired or revoked cookie counts as no credential.
    }
    if response::is_browser_navigation(req) {
        let scheme = if conn.tls { "https" } else { "http" };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let original = format!("{scheme}://{}{path}", authority_of(req, host));
        return Err(response::redirect(&format!(
            "{}/app-auth?return_to={}",
            edge.cfg.console_origin,
            urlencode(&original)
        )));
    }
    Err(response::error(
        req,
        403,
        "app_auth_required",
        "This app is private: sign in, or send an allowed user's API key in X-Rigbox-Key.",
    ))
}

/// The host as the client wrote it (with its port), for URLs back to the same place.
pub(crate) fn authority_of(req: &Request<Incoming>, host: &str) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_else(|| host.to_owned())
}

pub(crate) use rigbox_types::names::percent_encode as urlencode;

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
        })
}

/// The request as the app sees it: origin-form HTTP/1.1, the original Host, no hop-by-hop
/// headers (but an upgrade's), no platform credentials, the `X-Forwarded-*` and identity
/// headers set by the edge.
fn upstream_headers(
    src: &HeaderMap,
    host: &str,
    conn: &Conn,
    user: Option<&EdgeUser>,
) -> HeaderMap {
    let upgrade = is_upgrade(src);
    let listed: Vec<String> = src
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(src.len() + 6);
    for (name, value) in src {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || listed.iter().any(|l| l == n)
            || n == X_RIGBOX_KEY
            || n == X_USER_ID
            || n == X_USER_EMAIL
            || n == "x-forwarded-proto"
            || n == "x-forwarded-host"
        {
            continue;
        }
        if name == header::COOKIE {
            if let Some(v) = strip_app_cookie(value) {
                out.append(header::COOKIE, v);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if upgrade {
        if let Some(u) = src.get(header::UPGRADE) {
            out.insert(header::UPGRADE, u.clone());
        }
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !out.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            out.insert(header::HOST, v);
        }
    }
    let ip = conn.client.ip().to_string();
    let xff = match src.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    let set = |out: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), v);
        }
    };
    set(&mut out, "x-forwarded-for", &xff);
    set(
        &mut out,
        "x-forwarded-proto",
        if conn.tls { "https" } else { "http" },
    );
    set(&mut out, "x-forwarded-host", host);
    if let Some(u) = user {
        set(&mut out, X_USER_ID, &u.id);
        set(&mut out, X_USER_EMAIL, &u.email);
    }
    out
}

/// A `Cookie` header without the app session cookie (None when nothing is left).
fn strip_app_cookie(v: &HeaderValue) -> Option<HeaderValue> {
    let s = v.to_str().ok()?;
    let kept: Vec<&str> = s
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split('=').next().map(str::trim) != Some(APP_COOKIE))
        .collect();
    if kept.is_empty() {
        None
    } else {
        HeaderValue::from_str(&kept.join("; ")).ok()
    }
}

/// An HTTP/2 extended CONNECT for a WebSocket (RFC 8441).
fn is_h2_websocket(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64).
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let nonce: [u8; 16] = rand::random();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(nonce))
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

async fn forward(
    edge: &Edge,
    route: &AppRoute,
    host: &str,
    mut req: Request<Incoming>,
    conn: &Conn,
    user: Option<&EdgeUser>,
) -> Response<EdgeBody> {
    let page = response::is_browser_navigation(&req);
    let unreachable = || {
        response::error_for(
            page,
            502,
            "upstream_unreachable",
            "Nothing answered on the app's port in the workspace.",
        )
    };
    // WebSockets reach the app as an HTTP/1.1 upgrade, whether the client asked with one or
    // (over HTTP/2) with an extended CONNECT.
    let h2_websocket = !route.h2c && is_h2_websocket(&req);
    let wants_upgrade = !route.h2c && (h2_websocket || is_upgrade(req.headers()));
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut headers = upstream_headers(req.headers(), host, conn, user);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut method = req.method().clone();
    let body = req.into_body();
    let (body, replayable): (UpBody, bool) = if h2_websocket {
        method = Method::GET;
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
        (empty_body(), false)
    } else {
        // A request without a body can be sent again when a kept connection turns out closed.
        let replayable =
            body.is_end_stream() && matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let limit = edge.cfg.max_body_bytes as usize;
        (
            http_body_util::Limited::new(body, limit).boxed(),
            replayable,
        )
    };
    let mut up = Request::new(body);
    *up.method_mut() = method;
    if route.h2c {
        // HTTP/2 with prior knowledge: the original host travels as :authority.
        let authority = headers
            .remove(header::HOST)
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| host.to_owned());
        *up.uri_mut() = format!("http://{authority}{path}")
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *up.version_mut() = Version::HTTP_2;
    } else {
        *up.uri_mut() = path
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *up.version_mut() = Version::HTTP_11;
    }
    *up.headers_mut() = headers;
    let upstream = Upstream {
        workspace: route.workspace_id.clone(),
        generation: route.workspace_generation,
        port: route.port,
    };
    let sent = tokio::time::timeout(
        edge.cfg.header_timeout,
        send(edge, &upstream, route.h2c, up, replayable, !wants_upgrade),
    )
    .await;
    let mut resp = match sent {
        Err(_) => {
            return response::error_for(
                page,
                504,
                "upstream_timeout",
                "The app did not answer in time.",
            )
        }
        Ok(Err(e)) => {
            tracing::debug!(app = %route.name, error = %e, "edge: upstream request failed");
            return unreachable();
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            let activity = conn.activity.clone();
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                        _ = activity.idle() => tracing::debug!("edge: idle WebSocket closed"),
                    }
                }
            });
            if h2_websocket {
                // RFC 8441 §5: the HTTP/2 client gets a 200 and keeps the stream.
                let mut ok = Response::new(response::full(bytes::Bytes::new()));
                for name in [
                    header::SEC_WEBSOCKET_PROTOCOL,
                    header::SEC_WEBSOCKET_EXTENSIONS,
                ] {
                    if let Some(v) = resp.headers().get(&name) {
                        ok.headers_mut().insert(name, v.clone());
                    }
                }
                return ok;
            }
        }
    }
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// Why a request got no response from the app.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the app's connection failed")]
    Request(#[source] hyper::Error),
}

/// Sends `req` on a kept connection to `up` or a new one. When a kept connection was closed
/// before the request went out (or, for a replayable request, before any answer), the request
/// goes again on a new connection. `keep`: the connection may serve later requests (not for
/// upgrades).
async fn send(
    edge: &Edge,
    up: &Upstream,
    h2c: bool,
    mut req: Request<UpBody>,
    replayable: bool,
    keep: bool,
) -> Result<Response<Incoming>, SendError> {
    if h2c {
        if let Some(mut tx) = edge.pool.h2(up) {
            match tx.try_send_request(req).await {
                Ok(r) => return Ok(r),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let stream = edge
            .dir
            .connect(&up.workspace, up.port)
            .await
            .map_err(ConnectError::Connect)?;
        let mut tx = pool::handshake_h2(stream).await?;
        edge.pool.put_h2(up.clone(), tx.clone());
        return tx.send_request(req).await.map_err(SendError::Request);
    }
    if let Some(mut tx) = edge.pool.take_h1(up) {
        let again = replayable.then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                req.headers().clone(),
            )
        });
        match tx.try_send_request(req).await {
            Ok(r) => {
                if keep {
                    edge.pool.put_h1_when_done(up.clone(), tx);
                }
                return Ok(r);
            }
            Err(mut e) => {
                req = match e.take_message() {
                    Some(r) => r,
                    None => match again {
                        Some((method, uri, version, headers)) => {
                            let mut r = Request::new(empty_body());
                            *r.method_mut() = method;
                            *r.uri_mut() = uri;
                            *r.version_mut() = version;
                            *r.headers_mut() = headers;
                            r
                        }
                        None => return Err(SendError::Request(e.into_error())),
                    },
                };
                tracing::debug!("edge: a kept upstream connection had closed; sending again");
            }
        }
    }
    let stream = edge
        .dir
        .connect(&up.workspace, up.port)
        .await
        .map_err(ConnectError::Connect)?;
    let mut tx = pool::handshake_h1(stream).await?;
    let r = tx.send_request(req).await.map_err(SendError::Request)?;
    if keep {
        edge.pool.put_h1_when_done(up.clone(), tx);
    }
    Ok(r)
}

fn empty_body() -> UpBody {
    http_body_util::Empty::<bytes::Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_cookie_is_removed_and_others_kept() {
        let v = HeaderValue::from_static("a=1; rigbox_app_session=secret; b=2");
        assert_eq!(
            strip_app_cookie(&v).as_ref().and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
        assert!(strip_app_cookie(&HeaderValue::from_static("rigbox_app_session=x")).is_none());
    }

    #[test]
    fn return_to_is_percent_encoded() {
        assert_eq!(
            urlencode("https://a.b:8443/x?y=1&z=2"),
            "https%3A%2F%2Fa.b%3A8443%2Fx%3Fy%3D1%26z%3D2"
        );
    }
}
