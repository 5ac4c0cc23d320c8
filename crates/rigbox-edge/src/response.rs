//! The edge's own answers: the spec's error envelope for programs, a small page for browser
//! navigations (apps-and-routing.md §3).

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// Errors of any body the edge relays.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the edge sends.
pub type EdgeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> EdgeBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A `GET` or `HEAD` whose `Accept` contains `text/html`.
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An error in the envelope, or as a page for a browser navigation.
pub fn error<B>(req: &Request<B>, status: u16, code: &str, message: &str) -> Response<EdgeBody> {
    error_for(is_browser_navigation(req), status, code, message)
}

/// [`error`] once the request is gone: `page` says whether it was a browser navigation.
pub fn error_for(page: bool, status: u16, code: &str, message: &str) -> Response<EdgeBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (ctype, body) = if page {
        let title = status.canonical_reason().unwrap_or("Error");
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} {title}</title></head>\
                 <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
                 <h1>{title}</h1><p>{}</p><p><small>{}</small></p></body></html>",
                status.as_u16(),
                html_escape(message),
                html_escape(code)
            ),
        )
    } else {
        (
            "application/json",
            serde_json::json!({"error": {"code": code, "message": message, "details": {}}})
                .to_string(),
        )
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

pub fn app_not_found<B>(req: &Request<B>) -> Response<EdgeBody> {
    error(req, 404, "app_not_found", "No app answers at this address.")
}

/// `302 Location: <to>`.
pub fn redirect(to: &str) -> Response<EdgeBody> {
    redirect_with(StatusCode::FOUND, to)
}

/// `308 Location: <to>` (plain HTTP to HTTPS, method and body kept).
pub fn permanent_redirect(to: &str) -> Response<EdgeBody> {
    redirect_with(StatusCode::PERMANENT_REDIRECT, to)
}

fn redirect_with(status: StatusCode, to: &str) -> Response<EdgeBody> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}
