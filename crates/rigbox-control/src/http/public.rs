//! Public endpoints: capacity, templates and the OpenAPI document.

use super::AppState;
use crate::app::ApiError;
use axum::extract::State;
use axum::Json;
use rigbox_types::api::{Capacity, Templates};

/// Workspace slots across schedulable nodes.
#[utoipa::path(get, path = "/api/v1/capacity", tag = "public",
    responses((status = 200, body = Capacity), (status = 429, body = rigbox_types::ErrorBody)))]
pub async fn capacity(State(app): State<AppState>) -> Result<Json<Capacity>, ApiError> {
    app.capacity().await.map(Json)
}

/// Deployable templates.
#[utoipa::path(get, path = "/api/v1/templates", tag = "public", responses((status = 200, body = Templates)))]
pub async fn templates(State(app): State<AppState>) -> Json<Templates> {
    Json(Templates {
        items: app.config.templates.clone(),
    })
}

/// This API's OpenAPI document.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}
