//! Request extractors whose rejections are API errors in the envelope: JSON bodies (content
//! type, size, syntax, unknown fields), query strings and path parameters.

use crate::app::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::json;

/// A JSON request body that must be present.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// A JSON request body whose fields are all optional: an empty body means `T::default()`.
#[derive(Debug)]
pub struct OptJson<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::validation("The request body is too large.")
                .with("fields", json!({"(body)": "too large"}))
        } else {
            ApiError::validation(format!("Could not read the request body: {e}."))
        }
    })
}

/// Parses JSON into `T`, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let (field, reason) = if let Some(rest) = msg.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            // The path already ends with the unknown field's name.
            let field = if path == "." || path.is_empty() {
                name.to_owned()
            } else {
                path
            };
            (field, "unknown field".to_owned())
        } else if let Some(rest) = msg.strip_prefix("missing field `") {
            (
                rest.split('`').next().unwrap_or_default().to_owned(),
                "is required".to_owned(),
            )
        } else if inner.is_syntax() || inner.is_eof() {
            ("(body)".to_owned(), format!("malformed JSON: {msg}"))
        } else {
            let field = if path == "." {
                "(body)".to_owned()
            } else {
                path
            };
            (
                field,
                msg.split(" at line ").next().unwrap_or(&msg).to_owned(),
            )
        };
        ApiError::validation(format!("Invalid request body: {field}: {reason}."))
            .with("fields", json!({ field: reason }))
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(
                ApiError::validation("Content-Type must be application/json.").with(
                    "fields",
                    json!({"(content-type)": "must be application/json"}),
                ),
            );
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJson(T::default()));
        }
        if !json {
            return Err(
                ApiError::validation("Content-Type must be application/json.").with(
                    "fields",
                    json!({"(content-type)": "must be application/json"}),
                ),
            );
        }
        parse_json(&bytes).map(OptJson)
    }
}

/// A query string.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::validation(format!("Invalid query string: {}.", e.body_text())))
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::not_found(&format!("Resource ({})", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigbox_types::api::CreateWorkspaceRequest;

    #[test]
    fn names_unknown_and_missing_fields() {
        let e = parse_json::<CreateWorkspaceRequest>(br#"{"name":"a","bogus":1}"#)
            .expect_err("unknown field");
        assert_eq!(e.details["fields"]["bogus"], "unknown field");
        let e = parse_json::<CreateWorkspaceRequest>(br#"{}"#).expect_err("missing name");
        assert_eq!(e.details["fields"]["name"], "is required");
        let e = parse_json::<CreateWorkspaceRequest>(br#"{"name": 5}"#).expect_err("wrong type");
        assert!(e.details["fields"].get("name").is_some(), "{:?}", e.details);
        let e = parse_json::<CreateWorkspaceRequest>(b"{").expect_err("syntax");
        assert!(e.details["fields"].get("(body)").is_some());
    }
}
