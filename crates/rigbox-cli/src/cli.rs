//! The command tree (clap derive) exactly as cli.md §3 and §6 name it, for the [P1] commands
//! this binary implements. Parsing only: what each command does lives in `commands`.
//!
//! Help text never hard-codes the binary's name; clap is given the invoked name (`rig` or
//! `rigbox`) at run time.

use crate::error::{CliError, CliResult};
use crate::output::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    version,
    disable_version_flag = true,
    about = "Rigbox: cloud developer workspaces",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Output format [default: human, or the config's `output`].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// JMESPath expression applied to the command's JSON document before formatting.
    #[arg(long, global = true, value_name = "JMESPATH")]
    pub query: Option<String>,
    /// Diagnostics on stderr: HTTP requests, poll states, retries (never credentials).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the version.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Sign in: device login in the browser, or an API key with --token / --import-token.
    Login(LoginArgs),
    /// Forget the stored credential (and revoke it when it came from device login).
    Logout,
    /// Show who the CLI is signed in as.
    Whoami,
    /// Account summary: plan, workspaces by status, usage against limits.
    Status,
    /// Plan limits and current usage.
    Limits,
    /// AI credits: available, allowance, balance, reserved (`credits ledger`: the entries).
    Credits(CreditsArgs),
    /// AI usage per day and workspace (inside a workspace: per subject, with --subject).
    Usage(UsageArgs),
    /// Platform capacity (no sign-in needed).
    Capacity,
    /// Workspace templates (no sign-in needed).
    #[command(alias = "template", subcommand)]
    Templates(TemplatesCmd),
    /// Create, run and manage workspaces.
    #[command(alias = "ws", subcommand)]
    Workspace(WsCmd),
    /// Open an SSH session to a workspace through the gateway (runs the system `ssh`).
    ///
    /// Arguments after the workspace go to ssh after the target: options, then a command to
    /// run (`rig ssh my-ws -L 8000:localhost:8000`, `rig ssh my-ws uname -a`).
    Ssh {
        /// Workspace ID (ws-…) or name.
        #[arg(value_name = "WS")]
        ws: String,
        /// Passed to ssh after the target.
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
    /// Apps: HTTPS routes to ports of your workspaces.
    #[command(subcommand)]
    App(AppCmd),
    /// AI configuration of a workspace: managed AI or your own provider key (same as
    /// `workspace ai`).
    #[command(subcommand)]
    Ai(AiCmd),
    /// The AI proxy's environment variables (inside a workspace).
    #[command(subcommand)]
    Proxy(ProxyCmd),
    /// SSH public keys of the account.
    #[command(subcommand)]
    SshKey(SshKeyCmd),
    /// API keys of the account.
    #[command(subcommand)]
    ApiKey(ApiKeyCmd),
    /// Send a raw request to the API, e.g. `api GET /workspaces`.
    Api(ApiArgs),
    /// Print a shell completion script.
    Completions {
        /// Shell [default: the one in $SHELL].
        #[arg(value_enum)]
        shell: Option<clap_complete::Shell>,
    },
}

/// `login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Control-plane URL to sign in to (stored in the config).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Paste an API key at a prompt that does not echo.
    #[arg(long, conflicts_with = "import_token")]
    pub token: bool,
    /// Read an API key from the first line of stdin.
    #[arg(long)]
    pub import_token: bool,
}

/// `credits [ledger …]`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreditsArgs {
    #[command(subcommand)]
    pub cmd: Option<CreditsCmd>,
}

/// `credits …`.
#[derive(Subcommand, Debug)]
pub enum CreditsCmd {
    /// Ledger entries, newest first: allowance, plan changes, AI charges, adjustments.
    Ledger {
        /// How many entries [default: 20].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Only the charges of this workspace (ID or name; a deleted one by its ID).
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
    },
}

/// `usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Days back, today included: 1-90 [default: 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..=90),
          conflicts_with = "subject")]
    pub days: Option<i64>,
    /// Inside a workspace: the charges attributed to this subject.
    #[arg(long, value_name = "S")]
    pub subject: Option<String>,
    /// Trailing window of --subject: <n>s, <n>m, <n>h, <n>d or seconds [default: 86400].
    #[arg(long, value_name = "W", requires = "subject")]
    pub window: Option<String>,
}

/// `proxy …` (workspace mode only).
#[derive(Subcommand, Debug)]
pub enum ProxyCmd {
    /// Print `export` lines of a group: eval "$(rig proxy on)".
    On {
        /// Group of variables [default: all].
        #[arg(value_name = "GROUP", value_parser = PROXY_GROUPS)]
        group: Option<String>,
    },
    /// Print an `unset` line for a group's variables: eval "$(rig proxy off)".
    Off {
        /// Group of variables [default: all].
        #[arg(value_name = "GROUP", value_parser = PROXY_GROUPS)]
        group: Option<String>,
    },
    /// Same output as `on`.
    Env {
        /// Group of variables [default: all].
        #[arg(value_name = "GROUP", value_parser = PROXY_GROUPS)]
        group: Option<String>,
    },
    /// Write the variables as NAME=value lines into a dotenv file, keeping its other lines.
    Dotenv {
        /// The file [default: ./.env].
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// Print the path of the generated proxy.env (source it in a shell).
    Path,
    /// Mode, bridge, configured groups, which variables this shell has, available credits.
    Status,
}

/// The groups of `proxy on|off|env` (bridge-and-ai.md §10).
const PROXY_GROUPS: [&str; 5] = crate::commands::proxy::GROUPS;

/// `templates`.
#[derive(Subcommand, Debug)]
pub enum TemplatesCmd {
    /// List the templates.
    Ls,
}

/// A workspace named by a positional `<WS>` or by `-w/--workspace` (not both).
#[derive(Args, Debug, Clone)]
pub struct WsArg {
    /// Workspace ID (ws-…) or name.
    #[arg(value_name = "WS")]
    pub ws: Option<String>,
    /// Workspace ID (ws-…) or name (instead of the positional argument).
    #[arg(short = 'w', long = "workspace", value_name = "WS")]
    pub workspace: Option<String>,
}

/// `--no-wait` and `--timeout` of the lifecycle actions.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitFlags {
    /// Return as soon as the action is accepted.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (the operation continues).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// The flags of `workspace new` and `workspace spawn`.
#[derive(Args, Debug, Clone)]
pub struct NewFlags {
    /// Workspace name.
    #[arg(long)]
    pub name: String,
    /// Template ID [default: base].
    #[arg(long)]
    pub template: Option<String>,
    /// RAM in MB (raised to the template's floor).
    #[arg(long, value_name = "MB")]
    pub ram: Option<i64>,
    /// Number of vCPUs (raised to the template's floor).
    #[arg(long, value_name = "N")]
    pub vcpu: Option<i64>,
    /// Root disk in MB (raised to the template's floor).
    #[arg(long, value_name = "MB")]
    pub disk: Option<i64>,
    /// Environment variable (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

/// `workspace …`.
#[derive(Subcommand, Debug)]
pub enum WsCmd {
    /// Create a workspace and wait until it is provisioned (it is not started).
    New {
        #[command(flatten)]
        flags: NewFlags,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Create a workspace, start it and wait until it runs.
    Spawn {
        #[command(flatten)]
        flags: NewFlags,
        /// Give up waiting after this many seconds (the operation continues).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// List workspaces.
    Ls {
        /// Only workspaces in this status.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a workspace (inside a workspace: the current one).
    Get {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Start a workspace and wait until it runs.
    Start {
        #[command(flatten)]
        ws: WsArg,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Stop a workspace and wait until it is stopped.
    Stop {
        #[command(flatten)]
        ws: WsArg,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Restart a running workspace and wait until it runs again.
    Restart {
        #[command(flatten)]
        ws: WsArg,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Delete a workspace and all its data.
    Rm {
        #[command(flatten)]
        ws: WsArg,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Delete in any state (a live VM is killed); implies --yes.
        #[arg(short, long)]
        force: bool,
    },
    /// Change RAM, vCPUs or disk (applies at the next start).
    Resize {
        #[command(flatten)]
        ws: WsArg,
        /// RAM in MB.
        #[arg(long, value_name = "MB")]
        ram: Option<i64>,
        /// Number of vCPUs.
        #[arg(long, value_name = "N")]
        vcpu: Option<i64>,
        /// Root disk in MB (grow only).
        #[arg(long, value_name = "MB")]
        disk: Option<i64>,
    },
    /// Retry the failed step of a workspace.
    Retry {
        #[command(flatten)]
        ws: WsArg,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// Cancel provisioning or starting.
    Cancel {
        #[command(flatten)]
        ws: WsArg,
    },
    /// How to connect over SSH.
    SshInfo {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Environment variables of a workspace.
    #[command(subcommand)]
    Env(EnvCmd),
    /// SSH keys inside a workspace.
    #[command(subcommand)]
    SshKeys(WsKeysCmd),
    /// AI configuration of a workspace: managed AI or your own provider key (BYOK).
    #[command(subcommand)]
    Ai(AiCmd),
}

/// `workspace ai …` (also `ai …`).
#[derive(Subcommand, Debug)]
pub enum AiCmd {
    /// Show the AI mode, provider, model and status of a workspace (a stored key is never
    /// shown).
    Show {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Set the AI mode of a workspace: managed (the platform's proxy, paid in credits), byok
    /// (your own provider key, written into the VM's /etc/rigbox/env at the next sync), or
    /// inherit (the account's mode).
    ///
    /// The key is never an argument (it would land in the shell history): --api-key asks for
    /// it without echo, --api-key-stdin reads the first line of stdin. Switching to managed
    /// deletes the stored key.
    Mode {
        /// Workspace ID (ws-…) or name.
        #[arg(value_name = "WS")]
        ws: String,
        /// managed, byok or inherit.
        #[arg(value_enum, value_name = "MODE")]
        mode: AiModeArg,
        /// Provider of the key (byok).
        #[arg(long, value_enum)]
        provider: Option<AiProviderArg>,
        /// Model to record with the configuration (byok).
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// Ask for the provider key at a prompt that does not echo.
        #[arg(long, conflicts_with = "api_key_stdin")]
        api_key: bool,
        /// Read the provider key from the first line of stdin.
        #[arg(long)]
        api_key_stdin: bool,
    },
}

/// The MODE of `ai mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiModeArg {
    Managed,
    Byok,
    Inherit,
}

/// `--provider` of `ai mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiProviderArg {
    Google,
    Openai,
    Anthropic,
}

/// `workspace env …`: the workspace is the first positional unless `-w` names it.
#[derive(Subcommand, Debug)]
pub enum EnvCmd {
    /// Set variables: env set <WS> KEY=VALUE…
    Set {
        /// Workspace ID or name (instead of the first positional argument).
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
        /// <WS> then KEY=VALUE…
        #[arg(required = true, value_name = "WS|KEY=VALUE")]
        args: Vec<String>,
    },
    /// Remove variables: env unset <WS> KEY…
    Unset {
        /// Workspace ID or name (instead of the first positional argument).
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
        /// <WS> then KEY…
        #[arg(required = true, value_name = "WS|KEY")]
        args: Vec<String>,
    },
    /// Show one value (masked unless --reveal): env get <WS> KEY
    Get {
        /// Workspace ID or name (instead of the first positional argument).
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
        /// <WS> then KEY
        #[arg(required = true, value_name = "WS|KEY")]
        args: Vec<String>,
        /// Show the value instead of ********.
        #[arg(long)]
        reveal: bool,
    },
    /// List variables (values masked unless --reveal).
    Ls {
        #[command(flatten)]
        ws: WsArg,
        /// Show the values instead of ********.
        #[arg(long)]
        reveal: bool,
    },
}

/// `--public | --private | --emails a,b` (at most one).
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct ShareFlags {
    /// Anyone may reach the app.
    #[arg(long)]
    pub public: bool,
    /// Only you may reach the app (the default for new apps).
    #[arg(long)]
    pub private: bool,
    /// You and these users (by account email): visibility `privileged`.
    #[arg(long, value_name = "EMAILS", value_delimiter = ',')]
    pub emails: Option<Vec<String>>,
}

impl ShareFlags {
    pub fn share(&self) -> crate::commands::apps::Share {
        crate::commands::apps::Share {
            public: self.public,
            private: self.private,
            emails: self.emails.clone(),
        }
    }
}

/// `app …`.
#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Publish a port of a workspace at https://<name>.<base-domain>.
    New {
        /// App name (slugified; it becomes the host name).
        #[arg(long, value_name = "N")]
        name: String,
        /// Workspace ID or name (not inside a workspace, which uses itself).
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
        /// Port inside the VM [default: 3000].
        #[arg(long, value_name = "P")]
        port: Option<i64>,
        /// How the edge talks to the port: http or h2c.
        #[arg(long, value_name = "http|h2c")]
        protocol: Option<String>,
        #[command(flatten)]
        share: ShareFlags,
        /// Free text, at most 500 characters.
        #[arg(long, value_name = "D")]
        description: Option<String>,
    },
    /// List apps (of one workspace with -w).
    Ls {
        /// Only the apps of this workspace.
        #[arg(short = 'w', long = "workspace", value_name = "WS")]
        workspace: Option<String>,
    },
    /// Show an app with every field.
    Get {
        /// App ID (app-…) or name.
        #[arg(value_name = "APP")]
        app: String,
    },
    /// Delete an app (its route only; nothing in the VM changes).
    Rm {
        /// App ID (app-…) or name.
        #[arg(value_name = "APP")]
        app: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Change who may reach an app.
    Share {
        /// App ID (app-…) or name.
        #[arg(value_name = "APP")]
        app: String,
        #[command(flatten)]
        share: ShareFlags,
    },
    /// Probe an app's port from its node: live, port open, HTTP status, latency.
    Health {
        /// App ID (app-…) or name.
        #[arg(value_name = "APP")]
        app: String,
    },
    /// Rename, re-target, describe, enable or disable an app.
    Update {
        /// App ID (app-…) or name.
        #[arg(value_name = "APP")]
        app: String,
        /// New name (the app moves to the new host at once).
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// New port inside the VM.
        #[arg(long, value_name = "P")]
        port: Option<i64>,
        /// http or h2c.
        #[arg(long, value_name = "X")]
        protocol: Option<String>,
        /// New description.
        #[arg(long, value_name = "D")]
        description: Option<String>,
        /// Serve the route again.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Keep the app but answer 503 on its route.
        #[arg(long)]
        disable: bool,
    },
}

/// `workspace ssh-keys …`.
#[derive(Subcommand, Debug)]
pub enum WsKeysCmd {
    /// Keys present in the VM, as its agent last reported them.
    Ls {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Make the agent re-apply the account's keys now.
    Sync {
        #[command(flatten)]
        ws: WsArg,
    },
}

/// `ssh-key …`.
#[derive(Subcommand, Debug)]
pub enum SshKeyCmd {
    /// Add a public key [default file: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub].
    Add {
        /// Key name [default: the key's comment, else <user>@<hostname>].
        #[arg(long)]
        name: Option<String>,
        /// Public key file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List the account's SSH keys.
    Ls,
    /// Remove an SSH key by ID or name.
    Rm {
        /// Key ID or name.
        #[arg(value_name = "ID|NAME")]
        key: String,
    },
}

/// `api-key …`.
#[derive(Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Create an API key (the key is shown only once).
    Create {
        /// Key name [default: "API key"].
        #[arg(long)]
        name: Option<String>,
    },
    /// List the account's API keys.
    Ls,
    /// Revoke an API key by ID or unique name.
    Rm {
        /// Key ID or name.
        #[arg(value_name = "ID|NAME")]
        key: String,
    },
}

/// `api`.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// GET, POST, PUT, PATCH or DELETE (any case).
    pub method: String,
    /// Path under /api/v1, optionally with a query string.
    pub path: String,
    /// JSON request body from a file, or - for stdin (not with GET).
    #[arg(long, value_name = "FILE|-")]
    pub body: Option<String>,
}

impl WsArg {
    /// The workspace named, from the positional argument or `-w`; both or neither is an error.
    pub fn resolve(&self) -> CliResult<String> {
        match (&self.ws, &self.workspace) {
            (Some(_), Some(_)) => Err(CliError::usage(
                "give the workspace either as an argument or with --workspace, not both",
            )),
            (Some(w), None) | (None, Some(w)) => Ok(w.clone()),
            (None, None) => Err(CliError::usage(
                "which workspace? give its name or ID (or --workspace)",
            )),
        }
    }

    /// Whether any workspace was named.
    pub fn is_given(&self) -> bool {
        self.ws.is_some() || self.workspace.is_some()
    }
}

/// Splits `<WS> REST…` of the `env` commands, where `-w` may name the workspace instead.
pub fn ws_and_rest(workspace: Option<&str>, args: &[String]) -> CliResult<(String, Vec<String>)> {
    match workspace {
        Some(w) if !args.is_empty() => Ok((w.to_owned(), args.to_vec())),
        None => match args.split_first() {
            Some((w, rest)) if !rest.is_empty() => Ok((w.clone(), rest.to_vec())),
            _ => Err(CliError::usage("give the workspace and at least one key")),
        },
        Some(_) => Err(CliError::usage("give at least one key")),
    }
}

impl Cmd {
    /// Whether the command waits or streams, so that `json` prints NDJSON events.
    pub fn streams(&self) -> bool {
        match self {
            Cmd::Login(a) => !a.token && !a.import_token,
            Cmd::Workspace(w) => match w {
                WsCmd::Spawn { .. } => true,
                WsCmd::New { wait, .. }
                | WsCmd::Start { wait, .. }
                | WsCmd::Stop { wait, .. }
                | WsCmd::Restart { wait, .. }
                | WsCmd::Retry { wait, .. } => !wait.no_wait,
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rig").chain(args.iter().copied()))
    }

    #[test]
    fn tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn aliases_and_globals() {
        let c = parse(&[
            "ws",
            "ls",
            "--output",
            "json",
            "--query",
            "items[].id",
            "-v",
        ])
        .expect("parses");
        assert!(matches!(c.cmd, Cmd::Workspace(WsCmd::Ls { status: None })));
        assert_eq!(c.output, Some(Format::Json));
        assert!(c.verbose);
        assert!(matches!(
            parse(&["template", "ls"]).expect("alias").cmd,
            Cmd::Templates(TemplatesCmd::Ls)
        ));
        assert!(parse(&["ws", "ls", "--output", "xml"]).is_err());
    }

    #[test]
    fn streaming_commands() {
        let s = |a: &[&str]| parse(a).expect("parses").cmd.streams();
        assert!(s(&["login"]));
        assert!(!s(&["login", "--token"]));
        assert!(s(&["ws", "spawn", "--name", "a"]));
        assert!(s(&["ws", "new", "--name", "a"]));
        assert!(!s(&["ws", "new", "--name", "a", "--no-wait"]));
        assert!(s(&["ws", "stop", "a"]));
        assert!(!s(&["ws", "stop", "a", "--no-wait"]));
        assert!(!s(&["ws", "get", "a"]));
    }

    #[test]
    fn flag_conflicts_are_parse_errors() {
        assert!(parse(&["login", "--token", "--import-token"]).is_err());
        assert!(parse(&["ws", "new"]).is_err(), "--name is required");
        assert!(parse(&["ws", "env", "set"]).is_err());
        assert!(parse(&["app", "share", "x", "--public", "--private"]).is_err());
        assert!(parse(&["app", "share", "x", "--public", "--emails", "a@b.c"]).is_err());
        assert!(parse(&["app", "update", "x", "--enable", "--disable"]).is_err());
        assert!(parse(&["app", "new"]).is_err(), "--name is required");
        assert!(
            parse(&["usage", "--window", "1h"]).is_err(),
            "--window needs --subject"
        );
        assert!(parse(&["usage", "--days", "5", "--subject", "s"]).is_err());
        assert!(parse(&["usage", "--days", "0"]).is_err());
        assert!(parse(&["usage", "--days", "91"]).is_err());
        assert!(parse(&["credits", "ledger", "--limit", "0"]).is_err());
        assert!(parse(&["proxy", "on", "google"]).is_err());
        assert!(parse(&["proxy"]).is_err());
    }

    #[test]
    fn credits_usage_and_proxy() {
        assert!(matches!(
            parse(&["credits"]).expect("parses").cmd,
            Cmd::Credits(CreditsArgs { cmd: None })
        ));
        let c = parse(&["credits", "ledger", "--limit", "5", "-w", "box"]).expect("parses");
        let Cmd::Credits(CreditsArgs {
            cmd: Some(CreditsCmd::Ledger { limit, workspace }),
        }) = c.cmd
        else {
            panic!("parsed as something else")
        };
        assert_eq!((limit, workspace.as_deref()), (Some(5), Some("box")));
        let c = parse(&["usage", "--subject", "t", "--window", "1h"]).expect("parses");
        let Cmd::Usage(u) = c.cmd else {
            panic!("parsed as something else")
        };
        assert_eq!(
            (u.subject.as_deref(), u.window.as_deref()),
            (Some("t"), Some("1h"))
        );
        assert!(matches!(
            parse(&["proxy", "on", "v1"]).expect("parses").cmd,
            Cmd::Proxy(ProxyCmd::On { group: Some(g) }) if g == "v1"
        ));
        assert!(matches!(
            parse(&["proxy", "dotenv"]).expect("parses").cmd,
            Cmd::Proxy(ProxyCmd::Dotenv { path: None })
        ));
    }

    #[test]
    fn workspace_positional_or_flag() {
        let ws = |a: Option<&str>, b: Option<&str>| WsArg {
            ws: a.map(str::to_owned),
            workspace: b.map(str::to_owned),
        };
        assert_eq!(ws(Some("a"), None).resolve().expect("pos"), "a");
        assert_eq!(ws(None, Some("b")).resolve().expect("flag"), "b");
        assert_eq!(
            ws(Some("a"), Some("b")).resolve().expect_err("both").exit,
            1
        );
        assert_eq!(ws(None, None).resolve().expect_err("none").exit, 1);
        let c = parse(&["ws", "get", "-w", "x"]).expect("parses");
        let Cmd::Workspace(WsCmd::Get { ws }) = c.cmd else {
            panic!("parsed as something else")
        };
        assert_eq!(ws.resolve().expect("flag"), "x");
    }

    #[test]
    fn env_args_split() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ws_and_rest(None, &v(&["box", "A=1", "B=2"])).expect("ok"),
            ("box".to_owned(), v(&["A=1", "B=2"]))
        );
        assert_eq!(
            ws_and_rest(Some("box"), &v(&["A=1"])).expect("ok"),
            ("box".to_owned(), v(&["A=1"]))
        );
        assert!(ws_and_rest(None, &v(&["box"])).is_err());
        assert!(ws_and_rest(Some("box"), &v(&[])).is_err());
    }
}
