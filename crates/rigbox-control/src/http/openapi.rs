//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/v1/openapi.json`. A checked-in copy (`docs/openapi.json`) is compared against it by a
//! test, so the published contract cannot drift from the code.

use super::{accounts, apps, keys, public, workspaces};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

/// Adds the error responses every operation can give (bad input, missing credential, rate
/// limit, internal error) so the document lists every status a client can see.
struct CommonErrors;

/// Operations that need no credential (api.md §1).
const PUBLIC: [&str; 7] = [
    "/api/v1/capacity",
    "/api/v1/templates",
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
    "/api/v1/auth/cli-session",
    "/api/v1/auth/cli-session/{code}",
    "/api/v1/openapi.json",
];

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |d: &str| {
            ResponseBuilder::new()
                .description(d)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let r = &mut op.responses.responses;
                let mut add = |code: &str, d: &str| {
                    r.entry(code.to_owned()).or_insert_with(|| error(d).into());
                };
                add("400", "validation_failed: malformed JSON, wrong content type, unknown field, bad value");
                if !public {
                    add(
                        "401",
                        "unauthorized: credential missing, malformed, revoked or expired",
                    );
                    add("403", "forbidden or account_disabled");
                    add("404", "not_found");
                }
                add("429", "rate_limited (see Retry-After)");
                add("500", "internal");
            }
        }
    }
}

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key `rb_…` or a console session token `rbs_…`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Rigbox control-plane API", description = "REST API of the Rigbox control plane. Errors use the envelope {\"error\":{\"code\",\"message\",\"details\"}}."),
    modifiers(&Security, &CommonErrors),
    security(("bearer" = [])),
    paths(
        public::capacity, public::templates,
        accounts::signup, accounts::login, accounts::logout, accounts::me, accounts::change_password,
        accounts::create_cli_session, accounts::poll_cli_session, accounts::cli_session_details,
        accounts::approve_cli_session, accounts::deny_cli_session,
        accounts::limits, accounts::credits, accounts::ledger, accounts::ai_usage, accounts::set_ai_mode, accounts::regions, accounts::settings, accounts::update_settings,
        keys::create_api_key, keys::list_api_keys, keys::delete_api_key,
        keys::add_ssh_key, keys::list_ssh_keys, keys::delete_ssh_key,
        workspaces::list, workspaces::create, workspaces::get, workspaces::delete,
        workspaces::start, workspaces::stop, workspaces::restart, workspaces::cancel, workspaces::retry,
        workspaces::resize, workspaces::get_env, workspaces::patch_env, workspaces::ssh_keys, workspaces::sync_ssh_keys,
        workspaces::ai_config, workspaces::update_ai_config,
        apps::list, apps::create, apps::get, apps::patch, apps::delete, apps::visibility, apps::health,
    ),
    components(schemas(rigbox_types::ErrorBody, rigbox_types::ErrorDetail, rigbox_types::ErrorCode))
)]
struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// The document as pretty JSON with a trailing newline (the checked-in form).
pub fn document_pretty() -> String {
    let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// The checked-in document must equal the generated one. To update it after an API change:
    /// `RIGBOX_UPDATE_OPENAPI=1 cargo test -p rigbox-control openapi`.
    #[test]
    fn openapi_document_matches_checked_in_copy() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = super::document_pretty();
        if std::env::var_os("RIGBOX_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json is out of date with the code; regenerate it with \
             `RIGBOX_UPDATE_OPENAPI=1 cargo test -p rigbox-control openapi` and commit it"
        );
    }

    #[test]
    fn every_p1_path_is_documented() {
        let doc = super::document();
        let paths = doc["paths"].as_object().expect("paths object");
        for p in [
            "/api/v1/workspaces",
            "/api/v1/workspaces/{ws}/start",
            "/api/v1/auth/login",
            "/api/v1/ssh-keys",
            "/api/v1/users/me/limits",
            "/api/v1/users/me/credits",
            "/api/v1/users/me/credits/ledger",
            "/api/v1/users/me/ai-usage",
            "/api/v1/apps",
            "/api/v1/apps/{app}/visibility",
            "/api/v1/users/me/ai-mode",
            "/api/v1/workspaces/{ws}/ai-config",
        ] {
            assert!(
                paths.contains_key(p),
                "{p} missing from the OpenAPI document"
            );
        }
    }
}
