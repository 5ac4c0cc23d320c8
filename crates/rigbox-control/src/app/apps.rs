//! Apps (apps-and-routing.md §1–§4, api.md §11): `https://<name>.<base-domain>` routed to a
//! port of one of the caller's workspaces. Names are global (they are host labels); the edge
//! reads routes through [`App::edge_route`] and keeps them while [`App::route_generation`]
//! stays the same.

use super::auth::{AuthMethod, Principal};
use super::{page_params, ApiError, ApiResult, App};
use crate::store::{AppRow, StoreError, WorkspaceRow};
use rigbox_types::agent::BridgeCaller;
use rigbox_types::api::{
    App as AppView, AppHealth, AppProtocol, AppStatus, AppVisibility, CreateAppRequest, List,
    PatchAppRequest, VisibilityRequest, WorkspaceStatus,
};
use rigbox_types::time_fmt::from_micros;
use rigbox_types::{AppId, ErrorCode, WorkspaceId};
use std::sync::atomic::Ordering;

/// Names no app may take, besides the regions and the operator's list.
const RESERVED: &[&str] = &["www", "api", "console", "admin", "ssh", "mail"];
const MAX_ALLOWED_EMAILS: usize = 100;
const MAX_DESCRIPTION: usize = 500;
const DEFAULT_PORT: i64 = 3000;

impl App {
    /// Renders an app for the API.
    pub fn app_view(&self, a: &AppRow) -> AppView {
        AppView {
            id: a.id.clone(),
            url: format!(
                "{}://{}.{}{}",
                self.config.apps_scheme,
                a.name,
                self.config.base_domain,
                self.config.apps_port_suffix
            ),
            name: a.name.clone(),
            workspace_id: a.workspace_id.clone(),
            user_id: a.user_id.clone(),
            port: a.port,
            protocol: AppProtocol::parse(&a.protocol).unwrap_or_default(),
            visibility: AppVisibility::parse(&a.visibility).unwrap_or_default(),
            allowed_emails: serde_json::from_str(&a.allowed_emails).unwrap_or_default(),
            status: AppStatus::parse(&a.status).unwrap_or_default(),
            description: a.description.clone(),
            custom_domain: None,
            custom_domain_verified: false,
            created_at: from_micros(a.created_at),
            updated_at: from_micros(a.updated_at),
        }
    }

    /// The slug of a submitted app name, refused when malformed or reserved.
    fn app_name_of(&self, input: &str) -> ApiResult<String> {
        let name = rigbox_types::names::app_name(input).map_err(|e| {
            ApiError::new(ErrorCode::InvalidName, format!("Invalid app name: {e}."))
                .with("name", input)
        })?;
        let reserved = RESERVED.contains(&name.as_str())
            || self.config.regions.contains(&name)
            || self.config.reserved_app_names.contains(&name);
        if reserved {
            return Err(ApiError::new(
                ErrorCode::NameReserved,
                format!("The app name {name:?} is reserved."),
            )
            .with("name", name));
        }
        Ok(name)
    }

    /// `POST /apps`; `ws` is the workspace (`workspace_id` of the request, or the caller's own
    /// workspace on the bridge).
    pub async fn create_app(
        &self,
        p: &Principal,
        ws: &str,
        req: CreateAppRequest,
    ) -> ApiResult<AppView> {
        let name = self.app_name_of(&req.name)?;
        let port = check_port(req.port.unwrap_or(DEFAULT_PORT))?;
        let description = check_description(req.description)?;
        let emails = check_emails(req.allowed_emails.unwrap_or_default())?;
        let row = self.find_workspace(p, ws).await?;
        let (limits, _) = self.limits_of(&p.user);
        let now = self.now();
        let app = AppRow {
            id: AppId::generate().to_string(),
            user_id: p.user.id.clone(),
            workspace_id: row.id.clone(),
            name,
            port,
            protocol: req.protocol.unwrap_or_default().as_str().into(),
            visibility: req.visibility.unwrap_or_default().as_str().into(),
            allowed_emails: serde_json::to_string(&emails).unwrap_or_else(|_| "[]".into()),
            status: AppStatus::Active.as_str().into(),
            description,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let count = self.store.count_workspace_apps(&mut *tx, &row.id).await?;
        if count + 1 > limits.max_apps_per_vm {
            return Err(ApiError::limit(
                "max_apps_per_vm",
                limits.max_apps_per_vm,
                count,
                1,
                &p.user.plan,
                "apps of this workspace",
            ));
        }
        self.store
            .insert_app(&mut tx, &app)
            .await
            .map_err(|e| name_taken(e, &app.name))?;
        tx.commit().await.map_err(StoreError::from)?;
        self.routes_changed();
        Ok(self.app_view(&app))
    }

    /// The caller's app by ID or name (404 for anyone else's).
    pub async fn find_app(&self, p: &Principal, app: &str) -> ApiResult<AppRow> {
        self.store
            .user_app(&p.user.id, app)
            .await?
            .ok_or_else(|| ApiError::not_found(&format!("App {app:?}")))
    }

    pub async fn get_app(&self, p: &Principal, app: &str) -> ApiResult<AppView> {
        Ok(self.app_view(&self.find_app(p, app).await?))
    }

    /// `GET /apps`, optionally of one workspace (ID or name).
    pub async fn list_apps(
        &self,
        p: &Principal,
        ws: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<List<AppView>> {
        let (limit, after) = page_params(limit, cursor)?;
        let ws: Option<WorkspaceRow> = match ws {
            Some(ws) => Some(self.find_workspace(p, ws).await?),
            None => None,
        };
        let page = self
            .store
            .list_apps(&p.user.id, ws.as_ref().map(|w| w.id.as_str()), after, limit)
            .await?;
        Ok(List {
            items: page.items.iter().map(|a| self.app_view(a)).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// `PATCH /apps/{app}`.
    pub async fn patch_app(
        &self,
        p: &Principal,
        app: &str,
        req: PatchAppRequest,
    ) -> ApiResult<AppView> {
        let mut row = self.find_app(p, app).await?;
        if let Some(name) = &req.name {
            row.name = self.app_name_of(name)?;
        }
        if let Some(port) = req.port {
            row.port = check_port(port)?;
        }
        if let Some(protocol) = req.protocol {
            row.protocol = protocol.as_str().into();
        }
        if let Some(description) = req.description {
            row.description = check_description(description)?;
        }
        if let Some(status) = req.status {
            row.status = status.as_str().into();
        }
        self.save_app(row).await
    }

    /// `PUT /apps/{app}/visibility`: the list is replaced whole.
    pub async fn set_app_visibility(
        &self,
        p: &Principal,
        app: &str,
        req: VisibilityRequest,
    ) -> ApiResult<AppView> {
        let mut row = self.find_app(p, app).await?;
        let emails = check_emails(req.allowed_emails.unwrap_or_default())?;
        row.visibility = req.visibility.as_str().into();
        row.allowed_emails = serde_json::to_string(&emails).unwrap_or_else(|_| "[]".into());
        self.save_app(row).await
    }

    async fn save_app(&self, mut row: AppRow) -> ApiResult<AppView> {
        row.updated_at = self.now();
        if !self
            .store
            .update_app(&row)
            .await
            .map_err(|e| name_taken(e, &row.name))?
        {
            return Err(ApiError::not_found("App"));
        }
        self.routes_changed();
        Ok(self.app_view(&row))
    }

    /// `GET /apps/{app}/health`: a live probe from the workspace's node, whatever the
    /// visibility; no probe unless the workspace runs.
    pub async fn app_health(&self, p: &Principal, app: &str) -> ApiResult<AppHealth> {
        let a = self.find_app(p, app).await?;
        let ws = self
            .store
            .workspace_by_id(self.store.pool(), &a.workspace_id)
            .await?
            .ok_or_else(|| ApiError::not_found(&format!("App {app:?}")))?;
        let status = super::workspaces::status_of(&ws);
        let mut probe = rigbox_types::node::PortProbe::default();
        if status == WorkspaceStatus::Running {
            if let (Some(node), Some(id)) = (self.node(&ws.node_id), WorkspaceId::parse(&ws.id)) {
                let host = format!("{}.{}", a.name, self.config.base_domain);
                let port = u16::try_from(a.port).unwrap_or(0);
                probe = node.probe_port(&id, port, &host).await;
            }
        }
        Ok(AppHealth {
            live: probe.http_status.is_some_and(|s| s < 500),
            port_open: probe.port_open,
            service_status: "unmanaged".into(),
            workspace_status: status,
            http_status: probe.http_status,
            latency_ms: probe.latency_ms,
            checked_at: from_micros(self.now()),
        })
    }

    /// `DELETE /apps/{app}`: only the route goes; nothing in the VM is touched.
    pub async fn delete_app(&self, p: &Principal, app: &str) -> ApiResult<()> {
        let row = self.find_app(p, app).await?;
        let deleted = self.store.delete_app(&p.user.id, &row.id).await?;
        self.routes_changed();
        if !deleted {
            return Err(ApiError::not_found(&format!("App {app:?}")));
        }
        Ok(())
    }
}

/// The workspace-scoped apps API (`/rig/v1/apps`): a VM acts for its owner on its own apps.
impl App {
    /// The owner of the calling workspace as a principal, and the workspace.
    pub async fn bridge_principal(
        &self,
        caller: &BridgeCaller,
    ) -> ApiResult<(Principal, WorkspaceRow)> {
        let row = self
            .store
            .workspace_by_id(self.store.pool(), caller.workspace_id.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))?;
        let user = self
            .store
            .user_by_id(&row.user_id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))?;
        let p = Principal {
            user,
            method: AuthMethod::Workspace { id: row.id.clone() },
        };
        Ok((p, row))
    }

    /// The calling workspace's apps.
    pub async fn bridge_apps(&self, caller: &BridgeCaller) -> ApiResult<Vec<AppView>> {
        let (p, row) = self.bridge_principal(caller).await?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .list_apps(&p, Some(&row.id), Some(200), cursor.as_deref())
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// An app of the calling workspace (404 for any other), with the owner as principal.
    pub async fn bridge_app(
        &self,
        caller: &BridgeCaller,
        app: &str,
    ) -> ApiResult<(Principal, String)> {
        let (p, row) = self.bridge_principal(caller).await?;
        let a = self.find_app(&p, app).await?;
        if a.workspace_id != row.id {
            return Err(ApiError::not_found(&format!("App {app:?}")));
        }
        Ok((p, a.id))
    }
}

/// What the edge reads (apps-and-routing.md §3): routes by host label and API-key users.
impl App {
    /// A counter bumped after every committed change that can alter an app route: an app
    /// created, changed or deleted, a workspace changing status or deleted (its apps go with
    /// it). The edge caches a route read at generation `g` only while this still answers `g`,
    /// reading it before the store: a read that raced a change is never kept, and a change is
    /// seen by the first request after its API call returns. Changes made by another process
    /// (another control plane on a shared PostgreSQL) are not counted here.
    pub fn route_generation(&self) -> u64 {
        self.route_generation.load(Ordering::SeqCst)
    }

    /// Records a committed change that can alter a route; call it after the commit.
    pub(crate) fn routes_changed(&self) {
        self.route_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The app named `name` with what the edge needs to route it, if it exists.
    pub async fn edge_route(&self, name: &str) -> ApiResult<Option<EdgeApp>> {
        let Some(a) = self.store.app_by_name(name).await? else {
            return Ok(None);
        };
        let Some(ws) = self
            .store
            .workspace_by_id(self.store.pool(), &a.workspace_id)
            .await?
        else {
            return Ok(None);
        };
        // Only what routing needs: this runs on every request, so no URL or timestamps.
        Ok(Some(EdgeApp {
            workspace_running: super::workspaces::status_of(&ws) == WorkspaceStatus::Running,
            workspace_generation: ws.generation,
            protocol: AppProtocol::parse(&a.protocol).unwrap_or_default(),
            visibility: AppVisibility::parse(&a.visibility).unwrap_or_default(),
            status: AppStatus::parse(&a.status).unwrap_or_default(),
            allowed_emails: serde_json::from_str(&a.allowed_emails).unwrap_or_default(),
            row: a,
        }))
    }

    /// The user of an active API key (`rb_…`), for `X-Rigbox-Key`; None when it is unknown,
    /// revoked, or its account is disabled.
    pub async fn edge_key_user(&self, key: &str) -> ApiResult<Option<crate::store::UserRow>> {
        if !key.starts_with("rb_") {
            return Ok(None);
        }
        Ok(self
            .authenticate(key, false)
            .await?
            .map(|p| p.user)
            .filter(|u| !u.disabled))
    }
}

/// An app as the edge routes it.
#[derive(Debug, Clone)]
pub struct EdgeApp {
    /// The stored app (`id`, `name`, `workspace_id`, `user_id`, `port`).
    pub row: AppRow,
    pub protocol: AppProtocol,
    pub visibility: AppVisibility,
    pub status: AppStatus,
    pub allowed_emails: Vec<String>,
    pub workspace_running: bool,
    /// The workspace's generation: it changes at every start and stop, so connections made to
    /// one run of the VM are never reused for another.
    pub workspace_generation: i64,
}

fn name_taken(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::Conflict => ApiError::new(
            ErrorCode::NameTaken,
            format!("The app name {name:?} is taken."),
        )
        .with("name", name),
        e => e.into(),
    }
}

fn check_port(port: i64) -> ApiResult<i64> {
    if (1..=65535).contains(&port) {
        Ok(port)
    } else {
        Err(ApiError::field("port", "must be between 1 and 65535"))
    }
}

fn check_description(d: Option<String>) -> ApiResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::field(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        d => Ok(d),
    }
}

/// At most 100 valid addresses, lowercased and de-duplicated (order kept).
fn check_emails(emails: Vec<String>) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(emails.len());
    for raw in emails {
        let e = super::auth::normalize_email(&raw).map_err(|_| {
            ApiError::field("allowed_emails", format!("{raw:?} is not an email address"))
        })?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.len() > MAX_ALLOWED_EMAILS {
        return Err(ApiError::field(
            "allowed_emails",
            format!("at most {MAX_ALLOWED_EMAILS} addresses"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_deduplicated_and_checked() {
        let got = check_emails(vec![
            "A@Example.com".into(),
            "a@example.com".into(),
            " b@example.com ".into(),
        ])
        .expect("valid");
        assert_eq!(got, ["a@example.com", "b@example.com"]);
        assert!(check_emails(vec!["not-an-email".into()]).is_err());
        let many: Vec<String> = (0..101).map(|i| format!("u{i}@example.com")).collect();
        assert!(check_emails(many).is_err());
    }

    #[test]
    fn ports_and_descriptions_are_bounded() {
        assert!(check_port(0).is_err());
        assert!(check_port(65536).is_err());
        assert_eq!(check_port(8080).expect("ok"), 8080);
        assert!(check_description(Some("x".repeat(501))).is_err());
        assert!(check_description(Some("x".repeat(500))).is_ok());
    }
}
