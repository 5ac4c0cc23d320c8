//! The edge's half of the app login round-trip (apps-and-routing.md §5): `/.rigbox/auth/callback`
//! turns a one-time code into the host-only `rigbox_app_session` cookie; `/.rigbox/auth/logout`
//! ends it and sends the browser to the console's sign-in form.

use crate::proxy::{authority_of, urlencode, APP_COOKIE};
use crate::response::{self, EdgeBody};
use crate::{Conn, Edge, EdgeUser};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

/// The value of the `rigbox_app_session` cookie, if sent.
pub(crate) fn app_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k.trim() == APP_COOKIE && !v.is_empty()).then(|| v.trim().to_owned())
        })
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn cookie(conn: &Conn, value: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if conn.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{APP_COOKIE}={value}; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age={max_age}"
    ))
    .ok()
}

/// `/.rigbox/…` on an app host.
pub(crate) async fn own_path(
    edge: &Edge,
    host: &str,
    req: &Request<Incoming>,
    conn: &Conn,
) -> Response<EdgeBody> {
    match req.uri().path() {
        "/.rigbox/auth/callback" => {
            let code = query_param(req, "code").unwrap_or_default();
            let session = match edge.dir.redeem(code, host).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "edge: code redemption failed");
                    None
                }
            };
            let Some(s) = session else {
                return response::error(
                    req,
                    403,
                    "app_forbidden",
                    "This sign-in link is invalid, used or expired. Open the app again to sign in.",
                );
            };
            // Only the stored return path is followed, never a URL from this request.
            let mut r = response::redirect(&s.path);
            if let Some(c) = cookie(conn, &s.token, s.max_age_secs) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        "/.rigbox/auth/logout" => {
            if let Some(token) = app_cookie(req.headers()) {
                if let Err(e) = edge.dir.end_session(&token).await {
                    tracing::error!(error = %e, "edge: ending an app session failed");
                }
            }
            let scheme = if conn.tls { "https" } else { "http" };
            let root = format!("{scheme}://{}/", authority_of(req, host));
            let mut r = response::redirect(&format!(
                "{}/app-auth?return_to={}&prompt=login",
                edge.cfg.console_origin,
                urlencode(&root)
            ));
            if let Some(c) = cookie(conn, "", 0) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        _ => response::error(req, 404, "not_found", "No such page."),
    }
}

/// 403 for a signed-in user who may not use this app; the page names them and offers to
/// switch account.
pub(crate) fn forbidden_for(req: &Request<Incoming>, user: &EdgeUser) -> Response<EdgeBody> {
    if !response::is_browser_navigation(req) {
        return response::error(
            req,
            403,
            "app_forbidden",
            "You do not have access to this app.",
        );
    }
    let email = response::html_escape(&user.email);
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>403 Forbidden</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>No access</h1>\
         <p>You are signed in as <b id=\"email\">{email}</b>, who does not have access to this app.</p>\
         <p><a id=\"switch\" href=\"/.rigbox/auth/logout\">Switch account</a></p>\
         <p><small>app_forbidden</small></p></body></html>"
    );
    let mut r = Response::new(response::full(body));
    *r.status_mut() = http::StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
