//! HTTP surface of the control plane: the `/api/v1` router, its middleware (request IDs, panic
//! containment, credentials, CSRF, rate limits) and the console pages. Handlers are thin: parse,
//! call one `App` function, map the error.

mod accounts;
mod apps;
mod console;
pub mod error;
mod extract;
mod keys;
mod middleware;
pub mod openapi;
mod public;
pub mod rig_v1;
mod workspaces;

use crate::app::App;
use axum::routing::{delete, get, post, put};
use axum::Router;
use std::sync::Arc;

pub use error::REQUEST_ID;

/// Shared state of every handler.
pub type AppState = Arc<App>;

/// The `/api/v1` routes (relative).
fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/capacity", get(public::capacity))
        .route("/templates", get(public::templates))
        .route("/openapi.json", get(public::openapi))
        .route("/auth/signup", post(accounts::signup))
        .route("/auth/login", post(accounts::login))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/me", get(accounts::me))
        .route("/auth/change-password", post(accounts::change_password))
        .route("/auth/cli-session", post(accounts::create_cli_session))
        .route("/auth/cli-session/{code}", get(accounts::poll_cli_session))
        .route(
            "/auth/cli-session/{code}/details",
            get(accounts::cli_session_details),
        )
        .route(
            "/auth/cli-session/{code}/approve",
            post(accounts::approve_cli_session),
        )
        .route(
            "/auth/cli-session/{code}/deny",
            post(accounts::deny_cli_session),
        )
        .route(
            "/api-keys",
            get(keys::list_api_keys).post(keys::create_api_key),
        )
        .route("/api-keys/{id}", delete(keys::delete_api_key))
        .route(
            "/ssh-keys",
            get(keys::list_ssh_keys).post(keys::add_ssh_key),
        )
        .route("/ssh-keys/{id}", delete(keys::delete_ssh_key))
        .route("/users/me/limits", get(accounts::limits))
        .route("/users/me/credits", get(accounts::credits))
        .route("/users/me/credits/ledger", get(accounts::ledger))
        .route("/users/me/ai-usage", get(accounts::ai_usage))
        .route("/users/me/ai-mode", put(accounts::set_ai_mode))
        .route("/users/me/regions", get(accounts::regions))
        .route(
            "/users/me/settings",
            get(accounts::settings).put(accounts::update_settings),
        )
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/workspaces/{ws}",
            get(workspaces::get).delete(workspaces::delete),
        )
        .route("/workspaces/{ws}/start", post(workspaces::start))
        .route("/workspaces/{ws}/stop", post(workspaces::stop))
        .route("/workspaces/{ws}/restart", post(workspaces::restart))
        .route("/workspaces/{ws}/cancel", post(workspaces::cancel))
        .route("/workspaces/{ws}/retry", post(workspaces::retry))
        .route("/workspaces/{ws}/resources", put(workspaces::resize))
        .route(
            "/workspaces/{ws}/env",
            get(workspaces::get_env).patch(workspaces::patch_env),
        )
        .route(
            "/workspaces/{ws}/ai-config",
            get(workspaces::ai_config).put(workspaces::update_ai_config),
        )
        .route("/apps", get(apps::list).post(apps::create))
        .route(
            "/apps/{app}",
            get(apps::get).patch(apps::patch).delete(apps::delete),
        )
        .route("/apps/{app}/visibility", put(apps::visibility))
        .route("/apps/{app}/health", get(apps::health))
        .route("/workspaces/{ws}/ssh-keys", get(workspaces::ssh_keys))
        .route(
            "/workspaces/{ws}/ssh-keys/sync",
            post(workspaces::sync_ssh_keys),
        )
}

/// The whole control-plane router: console at `/`, API at `/api/v1`.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.max_body_bytes;
    let api = api_routes()
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::not_found_route)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::authenticate,
        ));
    Router::new()
        .nest("/api/v1", api)
        .merge(console::routes())
        .fallback(error::not_found_route)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(app)
}
