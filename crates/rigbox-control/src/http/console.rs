//! The server-rendered console: sign-in, a workspace overview and the device-login approval page
//! (`/cli-login?code=…`). Pages talk to `/api/v1` with the `rigbox_session` cookie and the CSRF
//! header, exactly like any other client.

use super::AppState;
use crate::app::auth::Principal;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/cli-login", get(cli_login))
        .route("/app-auth", get(app_auth))
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title} · Rigbox</title><style>
body{{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}}
h1{{font-size:1.5rem}} input{{display:block;width:100%;padding:.5rem;margin:.3rem 0 1rem;box-sizing:border-box}}
button{{padding:.5rem 1.2rem;margin-right:.5rem;cursor:pointer}} .code{{font:600 2rem monospace;letter-spacing:.2rem}}
.err{{color:#b00020}} table{{border-collapse:collapse;width:100%}} td,th{{text-align:left;padding:.3rem;border-bottom:1px solid #ddd}}
</style></head><body><h1>{title}</h1>{body}</body></html>"#,
        title = esc(title)
    ))
}

async fn session(app: &AppState, headers: &HeaderMap) -> Option<Principal> {
    let cookie = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("rigbox_session=").map(str::to_owned))
        })?;
    app.authenticate(&cookie, true).await.ok().flatten()
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

const LOGIN_JS: &str = r#"<script>
document.getElementById('f').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/api/v1/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({email: document.getElementById('email').value, password: document.getElementById('password').value})});
  if (r.ok) { location.href = document.getElementById('f').dataset.next; return; }
  const j = await r.json().catch(() => ({error: {message: 'Sign-in failed'}}));
  document.getElementById('msg').textContent = j.error.message;
});
</script>"#;

async fn login_page(Query(q): Query<NextQuery>) -> Html<String> {
    // Only same-site relative paths are followed after sign-in.
    let next = q
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .unwrap_or_else(|| "/".into());
    page(
        "Sign in to Rigbox",
        &format!(
            r#"<form id="f" data-next="{}"><label>Email<input id="email" type="email" autocomplete="username" required></label>
<label>Password<input id="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button><p id="msg" class="err" role="alert"></p></form>{LOGIN_JS}"#,
            esc(&next)
        ),
    )
}

async fn home(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(p) = session(&app, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    page(
        "Rigbox",
        &format!(
            r##"<p>Signed in as <b>{}</b> · <a href="#" id="out">Sign out</a></p><h2>Workspaces</h2>
<table><thead><tr><th>Name</th><th>Status</th><th>SSH</th></tr></thead><tbody id="ws"></tbody></table>
<script>
const api = (m, p) => fetch('/api/v1' + p, {{method: m, headers: {{'X-Rigbox-CSRF': '1'}}}});
api('GET', '/workspaces').then(r => r.json()).then(j => {{
  const tb = document.getElementById('ws');
  for (const w of j.items) {{ const tr = tb.insertRow(); for (const v of [w.name, w.status, w.ssh.command]) tr.insertCell().textContent = v; }}
}});
document.getElementById('out').onclick = async (e) => {{ e.preventDefault(); await api('POST', '/auth/logout'); location.href = '/login'; }};
</script>"##,
            esc(&p.user.email)
        ),
    )
    .into_response()
}

use rigbox_types::names::percent_encode as pct;

#[derive(Debug, Deserialize)]
struct AppAuthQuery {
    return_to: Option<String>,
    prompt: Option<String>,
}

/// Step 2–3 of the app login round-trip (apps-and-routing.md §5): sign in if needed, then send
/// the browser to the app's callback with a one-time code.
async fn app_auth(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AppAuthQuery>,
) -> Response {
    let return_to = q.return_to.unwrap_or_default();
    let invalid = || {
        (
            axum::http::StatusCode::BAD_REQUEST,
            page(
                "Cannot sign in to this app",
                "<p class=\"err\">invalid_return_to: the link does not point to an app of this platform.</p>",
            ),
        )
            .into_response()
    };
    if app.parse_return_to(&return_to).is_err() {
        return invalid();
    }
    let session = match q.prompt.as_deref() {
        // "Switch account": always show the sign-in form.
        Some("login") => None,
        _ => session(&app, &headers).await,
    };
    let Some(p) = session else {
        let next = format!("/app-auth?return_to={}", pct(&return_to));
        return Redirect::to(&format!("/login?next={}", pct(&next))).into_response();
    };
    match app.mint_app_code(&p, &return_to).await {
        Ok(callback) => Redirect::to(&callback).into_response(),
        Err(_) => invalid(),
    }
}

#[derive(Debug, Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

async fn cli_login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Response {
    let code = q.code.unwrap_or_default();
    let Some(p) = session(&app, &headers).await else {
        let next = format!(
            "/cli-login?code={}",
            code.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        );
        return Redirect::to(&format!("/login?next={}", pct(&next))).into_response();
    };
    let details = match app.cli_session_details(&p, &code).await {
        Ok(d) => d,
        Err(_) => {
            return page("Sign in the CLI", "<p class=\"err\">This sign-in request does not exist or has expired. Run <code>rig login</code> again.</p>")
                .into_response()
        }
    };
    if details.status != "pending" {
        return page(
            "Sign in the CLI",
            &format!(
                "<p>This request is already <b>{}</b>.</p>",
                esc(&details.status)
            ),
        )
        .into_response();
    }
    page(
        "Sign in the CLI",
        &format!(
            r#"<p>A command-line client asks to sign in as <b>{email}</b>.</p>
<p>Client: <b id="client">{client}</b></p><p>Check that this code matches the one in your terminal:</p>
<p class="code" id="user-code">{user_code}</p>
<button id="approve">Approve</button><button id="deny">Deny</button><p id="msg" role="status"></p>
<script>
const decide = async (what) => {{
  const r = await fetch('/api/v1/auth/cli-session/{code}/' + what, {{method: 'POST', headers: {{'X-Rigbox-CSRF': '1'}}}});
  const msg = document.getElementById('msg');
  if (r.ok) {{ msg.textContent = what === 'approve' ? 'Approved. You can return to your terminal.' : 'Denied.'; }}
  else {{ const j = await r.json().catch(() => null); msg.textContent = j ? j.error.message : 'Failed'; msg.className = 'err'; }}
  document.getElementById('approve').disabled = true; document.getElementById('deny').disabled = true;
}};
document.getElementById('approve').onclick = () => decide('approve');
document.getElementById('deny').onclick = () => decide('deny');
</script>"#,
            email = esc(&p.user.email),
            client = esc(details.client_name.as_deref().unwrap_or("unknown client")),
            user_code = esc(&details.user_code),
            code = esc(&code),
        ),
    )
    .into_response()
}
