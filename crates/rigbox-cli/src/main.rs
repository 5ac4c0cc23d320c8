//! `rig` (also installed as `rigbox`): the Rigbox command-line client.
//!
//! Local mode talks to `<api_url>/api/v1` with an API key; workspace mode (inside a VM, when
//! `/etc/rigbox/workspace.json` exists) talks to the node bridge with no credential. The command
//! tree is clap's; every command returns an [`output::Out`] that the printer renders in the
//! chosen format. Exit codes follow cli.md §7.

mod client;
mod commands;
mod config;
mod error;
mod output;
mod wait;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use commands::{account, keys, raw, workspace, Ctx};
use error::{exit, CliError, CliResult};
use output::{Format, Out, Printer};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    disable_version_flag = true,
    about = "Rigbox: cloud developer workspaces"
)]
struct Cli {
    /// Output format: human (default), json, yaml, text, table.
    #[arg(long, global = true, value_enum)]
    output: Option<Format>,
    /// JMESPath expression applied to the JSON document before formatting.
    #[arg(long, global = true)]
    query: Option<String>,
    /// Diagnostics on stderr (requests, statuses, timings, retries).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print the version.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sign in (device login in the browser, or an API key with --token/--import-token).
    Login(LoginArgs),
    /// Forget the stored credential (and revoke it when it came from device login).
    Logout,
    /// Who the CLI is signed in as.
    Whoami,
    /// Account (or, inside a workspace, workspace) summary.
    Status,
    /// Plan limits and usage.
    Limits,
    /// Platform capacity (no sign-in needed).
    Capacity,
    /// Workspace templates.
    #[command(alias = "template", subcommand)]
    Templates(TemplatesCmd),
    /// Workspaces.
    #[command(alias = "ws", subcommand)]
    Workspace(WsCmd),
    /// SSH public keys of the account.
    #[command(subcommand)]
    SshKey(SshKeyCmd),
    /// API keys of the account.
    #[command(subcommand)]
    ApiKey(ApiKeyCmd),
    /// AI credits.
    Credits(CreditsArgs),
    /// Raw API request: rig api GET /workspaces.
    Api {
        /// GET, POST, PUT, PATCH or DELETE.
        method: String,
        /// Path under /api/v1, with an optional query string.
        path: String,
        /// JSON body from a file, or - for stdin.
        #[arg(long)]
        body: Option<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, powershell or elvish (default: from $SHELL).
        shell: Option<clap_complete::Shell>,
    },
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Control-plane URL to sign in to (stored in the config).
    #[arg(long)]
    api_url: Option<String>,
    /// Do not open a browser.
    #[arg(long)]
    no_browser: bool,
    /// Paste an API key at a no-echo prompt.
    #[arg(long, conflicts_with = "import_token")]
    token: bool,
    /// Read an API key from stdin.
    #[arg(long)]
    import_token: bool,
}

#[derive(Subcommand, Debug)]
enum TemplatesCmd {
    /// List templates.
    Ls,
}

#[derive(Args, Debug, Clone)]
struct WsArg {
    /// Workspace ID or name.
    ws: Option<String>,
    /// Workspace ID or name.
    #[arg(short = 'w', long = "workspace")]
    workspace: Option<String>,
}

impl WsArg {
    fn get(&self) -> CliResult<String> {
        match (&self.ws, &self.workspace) {
            (Some(_), Some(_)) => Err(CliError::usage(
                "give the workspace either as an argument or with --workspace, not both",
            )),
            (Some(w), None) | (None, Some(w)) => Ok(w.clone()),
            (None, None) => Err(CliError::usage("which workspace? give its name or ID")),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct NewFlags {
    /// Workspace name.
    #[arg(long)]
    name: String,
    /// Template (base or dev).
    #[arg(long)]
    template: Option<String>,
    /// RAM in MB.
    #[arg(long)]
    ram: Option<i64>,
    /// vCPUs.
    #[arg(long)]
    vcpu: Option<i64>,
    /// Disk in MB.
    #[arg(long)]
    disk: Option<i64>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long)]
    env: Vec<String>,
}

impl From<NewFlags> for workspace::NewArgs {
    fn from(f: NewFlags) -> Self {
        Self {
            name: f.name,
            template: f.template,
            ram: f.ram,
            vcpu: f.vcpu,
            disk: f.disk,
            env: f.env,
        }
    }
}

#[derive(Subcommand, Debug)]
enum WsCmd {
    /// Create a workspace (waits until provisioned; does not start it).
    New {
        #[command(flatten)]
        flags: NewFlags,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Create and start a workspace, waiting until it runs.
    Spawn {
        #[command(flatten)]
        flags: NewFlags,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// List workspaces.
    Ls {
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a workspace.
    Get {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Start a workspace and wait until it runs.
    Start {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Stop a workspace and wait until it stopped.
    Stop {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Restart a running workspace.
    Restart {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Delete a workspace and all its data.
    Rm {
        #[command(flatten)]
        ws: WsArg,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
        /// Delete from any state (a live VM is killed); implies --yes.
        #[arg(short, long)]
        force: bool,
    },
    /// Change RAM, vCPUs or disk (applies at the next start).
    Resize {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        ram: Option<i64>,
        #[arg(long)]
        vcpu: Option<i64>,
        #[arg(long)]
        disk: Option<i64>,
    },
    /// Retry a failed workspace.
    Retry {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        timeout: Option<u64>,
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
    /// Environment variables.
    #[command(subcommand)]
    Env(EnvCmd),
    /// SSH keys inside the workspace.
    #[command(subcommand)]
    SshKeys(WsKeysCmd),
}

#[derive(Subcommand, Debug)]
enum EnvCmd {
    /// Set KEY=VALUE pairs.
    Set {
        #[arg(short = 'w', long = "workspace")]
        workspace: Option<String>,
        /// WS then KEY=VALUE...
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Remove keys.
    Unset {
        #[arg(short = 'w', long = "workspace")]
        workspace: Option<String>,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Show one value (masked unless --reveal).
    Get {
        #[arg(short = 'w', long = "workspace")]
        workspace: Option<String>,
        #[arg(required = true)]
        args: Vec<String>,
        #[arg(long)]
        reveal: bool,
    },
    /// List variables (values masked unless --reveal).
    Ls {
        #[command(flatten)]
        ws: WsArg,
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WsKeysCmd {
    /// Keys the guest agent last reported.
    Ls {
        #[command(flatten)]
        ws: WsArg,
    },
    /// Ask the agent to re-apply the account's keys now.
    Sync {
        #[command(flatten)]
        ws: WsArg,
    },
}

#[derive(Subcommand, Debug)]
enum SshKeyCmd {
    /// Add a public key (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).
    Add {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List keys.
    Ls,
    /// Remove a key by ID or name.
    Rm { key: String },
}

#[derive(Subcommand, Debug)]
enum ApiKeyCmd {
    /// Create a key (shown once).
    Create {
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys.
    Ls,
    /// Revoke a key by ID or unique name.
    Rm { key: String },
}

#[derive(Args, Debug)]
struct CreditsArgs {
    #[command(subcommand)]
    cmd: Option<CreditsCmd>,
}

#[derive(Subcommand, Debug)]
enum CreditsCmd {
    /// Ledger entries, newest first.
    Ledger {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// Splits `[WS] ARGS...` when the workspace may come from `-w`.
fn ws_and_rest(workspace: &Option<String>, args: &[String]) -> CliResult<(String, Vec<String>)> {
    match workspace {
        Some(w) => Ok((w.clone(), args.to_vec())),
        None => match args.split_first() {
            Some((w, rest)) if !rest.is_empty() => Ok((w.clone(), rest.to_vec())),
            _ => Err(CliError::usage("give the workspace and at least one key")),
        },
    }
}

/// Whether the command streams NDJSON in json mode.
fn streams(cmd: &Cmd) -> bool {
    match cmd {
        Cmd::Login(a) => !a.token && !a.import_token,
        Cmd::Workspace(w) => matches!(
            w,
            WsCmd::New { no_wait: false, .. }
                | WsCmd::Spawn { .. }
                | WsCmd::Start { no_wait: false, .. }
                | WsCmd::Stop { no_wait: false, .. }
                | WsCmd::Restart { no_wait: false, .. }
                | WsCmd::Retry { no_wait: false, .. }
        ),
        _ => false,
    }
}

/// The command's name as the refusal message shows it.
fn command_name(cmd: &Cmd) -> &'static str {
    match cmd {
        Cmd::Login(_) => "login",
        Cmd::Logout => "logout",
        Cmd::Whoami => "whoami",
        Cmd::Status => "status",
        Cmd::Limits => "limits",
        Cmd::Capacity => "capacity",
        Cmd::Templates(_) => "templates",
        Cmd::Workspace(_) => "workspace",
        Cmd::SshKey(_) => "ssh-key",
        Cmd::ApiKey(_) => "api-key",
        Cmd::Credits(_) => "credits",
        Cmd::Api { .. } => "api",
        Cmd::Completions { .. } => "completions",
    }
}

/// Where workspace mode's bridge is, when this process runs inside a workspace.
fn workspace_mode() -> Option<String> {
    let forced = std::env::var("RIGBOX_MODE").ok();
    let meta = std::fs::read_to_string("/etc/rigbox/workspace.json").ok();
    let inside = match forced.as_deref() {
        Some("workspace") => true,
        Some("local") => false,
        _ => meta.is_some(),
    };
    if !inside {
        return None;
    }
    let from_file = meta
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|v| v["bridge_url"].as_str().map(str::to_owned));
    Some(
        std::env::var("RIGBOX_BRIDGE_URL")
            .ok()
            .or(from_file)
            .unwrap_or_else(|| "http://172.16.0.1:9090".into()),
    )
}

async fn run_workspace_mode(
    cmd: Cmd,
    bridge: &str,
    printer: &Printer,
    verbose: bool,
    name: &str,
) -> CliResult<Out> {
    let api = client::Api::new(bridge.trim_end_matches('/'), "/rig/v1", None, verbose)?;
    match cmd {
        Cmd::Whoami => Ok(Out::doc(api.get("/whoami").await?)),
        Cmd::Status | Cmd::Workspace(WsCmd::Get { .. }) => {
            Ok(Out::doc(api.get("/workspace").await?))
        }
        Cmd::Completions { shell } => completions(shell, name),
        other => {
            let _ = printer;
            Err(CliError::usage(format!(
                "{name} {} is not available inside a workspace; run it on your own machine",
                command_name(&other)
            )))
        }
    }
}

fn completions(shell: Option<clap_complete::Shell>, name: &str) -> CliResult<Out> {
    let shell = shell
        .or_else(clap_complete::Shell::from_env)
        .ok_or_else(|| {
            CliError::usage(
                "cannot tell the shell from $SHELL; name it: bash, zsh, fish, powershell or elvish",
            )
        })?;
    let mut cmd = Cli::command()
        .name(name.to_owned())
        .bin_name(name.to_owned());
    clap_complete::generate(shell, &mut cmd, name.to_owned(), &mut std::io::stdout());
    Ok(Out::silent())
}

async fn run(cli: Cli, printer: &Printer, name: &str) -> CliResult<(Out, i32)> {
    let verbose = cli.verbose;
    if let Some(bridge) = workspace_mode() {
        return run_workspace_mode(cli.cmd, &bridge, printer, verbose, name)
            .await
            .map(|o| (o, exit::OK));
    }
    let file = config::load()?;
    let flag_url = match &cli.cmd {
        Cmd::Login(a) => a.api_url.clone(),
        _ => None,
    };
    let eff = config::effective(&file, flag_url.as_deref());
    if verbose {
        eprintln!(
            "api_url {} (config {})",
            eff.api_url,
            config::path().display()
        );
    }
    let ctx = Ctx {
        api: client::Api::new(&eff.api_url, "/api/v1", eff.api_key, verbose)?,
        printer: printer.clone(),
        file,
        verbose,
    };
    let out = match cli.cmd {
        Cmd::Login(a) if a.token || a.import_token => {
            account::login_token(&ctx, a.import_token).await?
        }
        Cmd::Login(a) => account::login_device(&ctx, a.no_browser).await?,
        Cmd::Logout => account::logout(&ctx).await?,
        Cmd::Whoami => account::whoami(&ctx).await?,
        Cmd::Status => account::status(&ctx).await?,
        Cmd::Limits => account::limits(&ctx).await?,
        Cmd::Capacity => account::capacity(&ctx).await?,
        Cmd::Templates(TemplatesCmd::Ls) => account::templates(&ctx).await?,
        Cmd::Credits(CreditsArgs { cmd: None }) => account::credits(&ctx).await?,
        Cmd::Credits(CreditsArgs {
            cmd: Some(CreditsCmd::Ledger { limit, workspace }),
        }) => account::ledger(&ctx, limit, workspace.as_deref()).await?,
        Cmd::SshKey(SshKeyCmd::Add { name, file }) => keys::ssh_key_add(&ctx, name, file).await?,
        Cmd::SshKey(SshKeyCmd::Ls) => keys::ssh_key_ls(&ctx).await?,
        Cmd::SshKey(SshKeyCmd::Rm { key }) => keys::ssh_key_rm(&ctx, &key).await?,
        Cmd::ApiKey(ApiKeyCmd::Create { name }) => keys::api_key_create(&ctx, name).await?,
        Cmd::ApiKey(ApiKeyCmd::Ls) => keys::api_key_ls(&ctx).await?,
        Cmd::ApiKey(ApiKeyCmd::Rm { key }) => keys::api_key_rm(&ctx, &key).await?,
        Cmd::Api { method, path, body } => {
            ctx.api.require_key()?;
            let code = raw::api(&ctx, &method, &path, body.as_deref()).await?;
            return Ok((Out::silent(), code));
        }
        Cmd::Completions { shell } => completions(shell, name)?,
        Cmd::Workspace(w) => match w {
            WsCmd::New {
                flags,
                no_wait,
                timeout,
            } => workspace::new(&ctx, flags.into(), no_wait, timeout).await?,
            WsCmd::Spawn { flags, timeout } => {
                workspace::spawn(&ctx, flags.into(), timeout).await?
            }
            WsCmd::Ls { status } => workspace::ls(&ctx, status.as_deref()).await?,
            WsCmd::Get { ws } => workspace::get(&ctx, &ws.get()?).await?,
            WsCmd::Start {
                ws,
                no_wait,
                timeout,
            } => workspace::start(&ctx, &ws.get()?, no_wait, timeout).await?,
            WsCmd::Stop {
                ws,
                no_wait,
                timeout,
            } => workspace::stop(&ctx, &ws.get()?, no_wait, timeout).await?,
            WsCmd::Restart {
                ws,
                no_wait,
                timeout,
            } => workspace::restart(&ctx, &ws.get()?, no_wait, timeout).await?,
            WsCmd::Rm { ws, yes, force } => workspace::rm(&ctx, &ws.get()?, yes, force).await?,
            WsCmd::Resize {
                ws,
                ram,
                vcpu,
                disk,
            } => workspace::resize(&ctx, &ws.get()?, ram, vcpu, disk).await?,
            WsCmd::Retry {
                ws,
                no_wait,
                timeout,
            } => workspace::retry(&ctx, &ws.get()?, no_wait, timeout).await?,
            WsCmd::Cancel { ws } => workspace::cancel(&ctx, &ws.get()?).await?,
            WsCmd::SshInfo { ws } => workspace::ssh_info(&ctx, &ws.get()?).await?,
            WsCmd::Env(EnvCmd::Set { workspace: w, args }) => {
                let (ws, rest) = ws_and_rest(&w, &args)?;
                workspace::env_set(&ctx, &ws, &rest).await?
            }
            WsCmd::Env(EnvCmd::Unset { workspace: w, args }) => {
                let (ws, rest) = ws_and_rest(&w, &args)?;
                workspace::env_unset(&ctx, &ws, &rest).await?
            }
            WsCmd::Env(EnvCmd::Get {
                workspace: w,
                args,
                reveal,
            }) => {
                let (ws, rest) = ws_and_rest(&w, &args)?;
                let [key] = rest.as_slice() else {
                    return Err(CliError::usage("give exactly one KEY"));
                };
                workspace::env_get(&ctx, &ws, key, reveal).await?
            }
            WsCmd::Env(EnvCmd::Ls { ws, reveal }) => {
                workspace::env_ls(&ctx, &ws.get()?, reveal).await?
            }
            WsCmd::SshKeys(WsKeysCmd::Ls { ws }) => {
                workspace::ssh_keys_ls(&ctx, &ws.get()?).await?
            }
            WsCmd::SshKeys(WsKeysCmd::Sync { ws }) => {
                workspace::ssh_keys_sync(&ctx, &ws.get()?).await?
            }
        },
    };
    Ok((out, exit::OK))
}

/// The name this binary was invoked as (`rig` or `rigbox`).
fn invoked_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .filter(|n| n == "rigbox")
        .unwrap_or_else(|| "rig".into())
}

fn main() {
    let name = invoked_name();
    let matches = match Cli::command()
        .name(name.clone())
        .bin_name(name.clone())
        .try_get_matches()
    {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(exit::ERROR);
        }
    };
    let file_format = config::load()
        .ok()
        .and_then(|f| f.output)
        .and_then(|o| Format::parse(&o));
    let printer = Printer {
        format: cli.output.or(file_format).unwrap_or(Format::Human),
        query: cli.query.clone(),
    };
    let streaming = printer.ndjson() && streams(&cli.cmd);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    let code = rt.block_on(async {
        tokio::select! {
            r = run(cli, &printer, &name) => match r {
                Ok((out, code)) => match printer.print(&out) {
                    Ok(()) => code,
                    Err(e) => { printer.error(&e, streaming); e.exit }
                },
                Err(e) => { printer.error(&e, streaming); e.exit }
            },
            _ = tokio::signal::ctrl_c() => exit::INTERRUPTED,
        }
    });
    std::process::exit(code);
}
