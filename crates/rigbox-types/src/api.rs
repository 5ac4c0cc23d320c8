//! Wire types of the control-plane API (`/api/v1`), named and shaped exactly as api.md says.
//! Request bodies reject unknown fields; responses are what clients parse.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub email_verified: bool,
    pub plan: String,
    pub created_at: String,
}

/// `GET /auth/me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: User,
    /// `session` or `api_key`.
    pub auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// Answer of login and signup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    pub token: String,
    pub expires_at: String,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CliSessionRequest {
    #[serde(default)]
    pub client_name: Option<String>,
}

/// `POST /auth/cli-session` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CliSessionCreated {
    pub code: String,
    pub user_code: String,
    pub poll_secret: String,
    pub verification_url: String,
    pub expires_at: String,
    pub interval_seconds: u32,
}

/// `GET /auth/cli-session/{code}` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CliSessionPoll {
    /// `pending`, `approved`, `denied`, `expired`, `consumed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `GET /auth/cli-session/{code}/details` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CliSessionDetails {
    pub user_code: String,
    pub client_name: Option<String>,
    pub status: String,
    pub created_at: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /api-keys` answer: the only time `key` is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    pub key: String,
    pub key_preview: String,
    pub created_at: String,
}

/// An API key as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub key_preview: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSshKeyRequest {
    pub name: String,
    pub public_key: String,
}

/// An account SSH public key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub key_type: String,
    pub fingerprint: String,
    pub comment: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// A key the guest agent reported as present in the VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceSshKey {
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
}

/// `GET /workspaces/{ws}/ssh-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceSshKeys {
    pub items: Vec<WorkspaceSshKey>,
    pub synced_at: Option<String>,
    pub revision: i64,
}

/// `POST /workspaces/{ws}/ssh-keys/sync`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKeySync {
    pub synced: bool,
    pub keys: i64,
    pub synced_at: Option<String>,
}

/// Every limit key of a plan (limits-and-accounts.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_vms: i64,
    pub max_ram_per_vm_mb: i64,
    pub max_ram_total_mb: i64,
    pub max_disk_total_mb: i64,
    pub max_vcpu_per_vm: i64,
    pub max_running_vcpus: i64,
    pub max_disk_per_vm_mb: i64,
    pub max_apps_per_vm: i64,
    pub max_snapshots_per_vm: i64,
    pub max_volumes_per_vm: i64,
    pub max_ssh_keys: i64,
    pub monthly_ai_credits: i64,
}

impl Limits {
    /// The `free` plan's defaults.
    pub const FREE: Limits = Limits {
        max_vms: 2,
        max_ram_per_vm_mb: 1024,
        max_ram_total_mb: 2048,
        max_disk_total_mb: 8192,
        max_vcpu_per_vm: 1,
        max_running_vcpus: 2,
        max_disk_per_vm_mb: 4096,
        max_apps_per_vm: 5,
        max_snapshots_per_vm: 3,
        max_volumes_per_vm: 4,
        max_ssh_keys: 5,
        monthly_ai_credits: 250,
    };

    /// The `pro` plan's defaults.
    pub const PRO: Limits = Limits {
        max_vms: 10,
        max_ram_per_vm_mb: 4096,
        max_ram_total_mb: 40960,
        max_disk_total_mb: 102400,
        max_vcpu_per_vm: 4,
        max_running_vcpus: 40,
        max_disk_per_vm_mb: 10240,
        max_apps_per_vm: 20,
        max_snapshots_per_vm: 10,
        max_volumes_per_vm: 4,
        max_ssh_keys: 20,
        monthly_ai_credits: 2000,
    };

    /// Every limit key, in the order the API lists them.
    pub const KEYS: [&'static str; 12] = [
        "max_vms",
        "max_ram_per_vm_mb",
        "max_ram_total_mb",
        "max_disk_total_mb",
        "max_vcpu_per_vm",
        "max_running_vcpus",
        "max_disk_per_vm_mb",
        "max_apps_per_vm",
        "max_snapshots_per_vm",
        "max_volumes_per_vm",
        "max_ssh_keys",
        "monthly_ai_credits",
    ];

    /// Mutable access to one limit by its key.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut i64> {
        Some(match key {
            "max_vms" => &mut self.max_vms,
            "max_ram_per_vm_mb" => &mut self.max_ram_per_vm_mb,
            "max_ram_total_mb" => &mut self.max_ram_total_mb,
            "max_disk_total_mb" => &mut self.max_disk_total_mb,
            "max_vcpu_per_vm" => &mut self.max_vcpu_per_vm,
            "max_running_vcpus" => &mut self.max_running_vcpus,
            "max_disk_per_vm_mb" => &mut self.max_disk_per_vm_mb,
            "max_apps_per_vm" => &mut self.max_apps_per_vm,
            "max_snapshots_per_vm" => &mut self.max_snapshots_per_vm,
            "max_volumes_per_vm" => &mut self.max_volumes_per_vm,
            "max_ssh_keys" => &mut self.max_ssh_keys,
            "monthly_ai_credits" => &mut self.monthly_ai_credits,
            _ => return None,
        })
    }
}

/// Current usage counted against the limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub workspace_count: i64,
    pub running_vcpus: i64,
    pub total_disk_mb: i64,
    pub total_ram_mb: i64,
    pub running_workspace_count: i64,
    pub ssh_key_count: i64,
}

/// `GET /users/me/limits`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LimitsResponse {
    pub plan: String,
    pub custom: bool,
    pub limits: Limits,
    pub usage: Usage,
}

/// `GET /users/me/regions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Regions {
    pub regions: Vec<String>,
    pub default_region: String,
}

/// `GET /users/me/settings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    pub default_region: Option<String>,
    pub name: Option<String>,
    pub updated_at: String,
}

/// `PUT /users/me/settings`: omitted keeps, null clears.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_region: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
}

/// `GET /capacity`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub available: bool,
    pub total: i64,
    pub used: i64,
}

/// A deployable template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub image: String,
    pub ram_mb: i64,
    pub vcpu_count: i64,
    pub disk_size_mb: i64,
    pub packages: Vec<String>,
}

/// `{"items": [Template]}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Templates {
    pub items: Vec<Template>,
}

/// Workspace lifecycle status (workspaces.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    Provisioning,
    Provisioned,
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Failed,
}

impl WorkspaceStatus {
    pub const ALL: [WorkspaceStatus; 8] = [
        Self::Provisioning,
        Self::Provisioned,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Deleting,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Provisioned => "provisioned",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Deleting => "deleting",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True while the VM holds RAM/vCPU quota and an IP lease.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }
}

impl std::fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a workspace failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub occurred_at: String,
    pub attempts: i64,
}

/// How to reach a workspace over SSH.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshInfo {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub ssh_target: String,
    pub command: String,
    pub host_key_fingerprints: Vec<String>,
}

/// A workspace as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub status: WorkspaceStatus,
    pub failure: Option<Failure>,
    pub stop_reason: Option<String>,
    pub template_id: String,
    pub image: String,
    pub region: String,
    pub node_id: String,
    pub ip_address: Option<String>,
    pub ram_mb: i64,
    pub vcpu_count: i64,
    pub disk_size_mb: i64,
    pub ssh: SshInfo,
    /// The workspace's AI mode override; `None` (null) inherits the account's mode.
    pub ai_mode: Option<AiMode>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
}

/// How the edge talks to an app's port (apps-and-routing.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppProtocol {
    #[default]
    Http,
    H2c,
}

/// Who may reach an app (apps-and-routing.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppVisibility {
    #[default]
    Private,
    Public,
    Privileged,
}

/// Whether an app's route serves (`inactive` answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    #[default]
    Active,
    Inactive,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}
str_enum!(AppProtocol { Http => "http", H2c => "h2c" });
str_enum!(AppVisibility { Private => "private", Public => "public", Privileged => "privileged" });
str_enum!(AppStatus { Active => "active", Inactive => "inactive" });

/// An app: `https://<name>.<base-domain>` routed to a port of a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub url: String,
    pub workspace_id: String,
    pub user_id: String,
    pub port: i64,
    pub protocol: AppProtocol,
    pub visibility: AppVisibility,
    pub allowed_emails: Vec<String>,
    pub status: AppStatus,
    pub description: Option<String>,
    pub custom_domain: Option<String>,
    pub custom_domain_verified: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /apps/{app}/health`: a live probe from the workspace's node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppHealth {
    pub live: bool,
    pub port_open: bool,
    /// `unmanaged` until managed services exist.
    pub service_status: String,
    pub workspace_status: WorkspaceStatus,
    pub http_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub checked_at: String,
}

/// `POST /apps` (and `POST /rig/v1/apps`, where `workspace_id` is the caller's workspace).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    #[serde(default)]
    pub workspace_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<AppProtocol>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub visibility: Option<AppVisibility>,
    #[serde(default)]
    pub allowed_emails: Option<Vec<String>>,
}

/// `PATCH /apps/{app}`: omitted keeps; `description: null` clears.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAppRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<AppProtocol>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub status: Option<AppStatus>,
}

/// `PUT /apps/{app}/visibility`: the whole list is replaced (omitted = empty).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisibilityRequest {
    pub visibility: AppVisibility,
    #[serde(default)]
    pub allowed_emails: Option<Vec<String>>,
}

/// `POST /workspaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    pub name: String,
    #[serde(default)]
    pub template_id: Option<String>,
    #[serde(default)]
    pub ram_mb: Option<i64>,
    #[serde(default)]
    pub vcpu_count: Option<i64>,
    #[serde(default)]
    pub disk_size_mb: Option<i64>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, Option<String>>>,
}

/// `PUT /workspaces/{ws}/resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    #[serde(default)]
    pub ram_mb: Option<i64>,
    #[serde(default)]
    pub vcpu_count: Option<i64>,
    #[serde(default)]
    pub disk_size_mb: Option<i64>,
}

/// `GET /workspaces/{ws}/env`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvVars {
    pub env_vars: BTreeMap<String, String>,
    pub updated_at: String,
}

/// `PATCH /workspaces/{ws}/env` body: value sets, null removes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvPatch {
    pub env_vars: BTreeMap<String, Option<String>>,
}

/// `PATCH /workspaces/{ws}/env` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvPatched {
    pub env_vars: BTreeMap<String, String>,
    pub updated_at: String,
    pub applied: bool,
}

/// An AI mode (bridge-and-ai.md §12): the platform's managed proxy, or the user's own
/// provider key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiMode {
    Managed,
    Byok,
}

impl AiMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AiMode::Managed => "managed",
            AiMode::Byok => "byok",
        }
    }

    /// Parses a stored mode.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "managed" => Some(AiMode::Managed),
            "byok" => Some(AiMode::Byok),
            _ => None,
        }
    }
}

/// The provider of a BYOK key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiProvider {
    Google,
    Openai,
    Anthropic,
}

impl AiProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            AiProvider::Google => "google",
            AiProvider::Openai => "openai",
            AiProvider::Anthropic => "anthropic",
        }
    }

    /// Parses a stored provider.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "google" => Some(AiProvider::Google),
            "openai" => Some(AiProvider::Openai),
            "anthropic" => Some(AiProvider::Anthropic),
            _ => None,
        }
    }

    /// The variable of `/etc/rigbox/env` that carries this provider's key.
    pub fn env_var(self) -> &'static str {
        match self {
            AiProvider::Google => "GOOGLE_API_KEY",
            AiProvider::Openai => "OPENAI_API_KEY",
            AiProvider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// Whether a workspace's AI works as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiStatus {
    /// Managed mode: the platform's proxy serves it.
    ManagedActive,
    /// BYOK with a stored key.
    ByokActive,
    /// BYOK without a key: nothing serves it until one is stored.
    InvalidMissingKey,
}

/// `PUT /users/me/ai-mode`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiModeUpdate {
    pub mode: AiMode,
}

/// `GET /workspaces/{ws}/ai-config`. The provider key is write-only: never part of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceAiConfig {
    /// The effective mode: the workspace's override, else the account's.
    pub mode: AiMode,
    pub provider: Option<AiProvider>,
    pub model: Option<String>,
    pub status: AiStatus,
    pub updated_at: String,
}

/// `PUT /workspaces/{ws}/ai-config`: omitted keeps, null clears (`mode: null` inherits the
/// account's mode).
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceAiConfigUpdate {
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<AiMode>)]
    pub mode: Option<Option<AiMode>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<AiProvider>)]
    pub provider: Option<Option<AiProvider>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Option<String>>,
    /// Write-only: stored sealed, never returned.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, write_only)]
    pub api_key: Option<Option<String>>,
}

impl std::fmt::Debug for WorkspaceAiConfigUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceAiConfigUpdate")
            .field("mode", &self.mode)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field(
                "api_key",
                &self
                    .api_key
                    .as_ref()
                    .map(|k| k.as_ref().map(|_| "<redacted>")),
            )
            .finish()
    }
}

/// Distinguishes "field omitted" (`None`) from "field null" (`Some(None)`).
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}
