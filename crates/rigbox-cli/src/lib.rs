//! `rig` (also installed as `rigbox`): the Rigbox command-line client, as specified in
//! `spec/cli.md`.
//!
//! [`main`] is the whole program: it detects the runtime mode (`mode`), refuses commands a
//! workspace does not offer, parses the command line (`cli`), resolves configuration
//! (`config`), runs the command (`commands`, talking HTTP through `client`, waiting through
//! `wait`), prints the result or the error in the chosen format (`output`) and returns the exit
//! code of cli.md §7 (`error`). Ctrl-C ends any command with 130.

mod cli;
mod client;
pub mod commands;
mod config;
mod error;
mod mode;
mod output;
mod prompt;
mod wait;

use clap::{CommandFactory, FromArgMatches};
use cli::{
    AiCmd, ApiKeyCmd, AppCmd, Cli, Cmd, CreditsArgs, CreditsCmd, EnvCmd, ProxyCmd, SshKeyCmd,
    TemplatesCmd, UsageArgs, WsCmd, WsKeysCmd,
};
use commands::{account, api, credits, inside, keys, proxy, workspace, Ctx};
use error::{exit, CliError, CliResult};
use mode::Mode;
use output::{Format, Out, Printer};
use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

static BIN_NAME: OnceLock<String> = OnceLock::new();

/// The name this process was invoked as: `rigbox` when called through that name, else `rig`.
pub fn bin_name() -> &'static str {
    BIN_NAME.get().map_or("rig", String::as_str)
}

fn invoked_name(argv0: Option<&OsString>) -> String {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|n| n == "rigbox")
        .unwrap_or_else(|| "rig".into())
}

/// The clap command for this mode, named as invoked.
fn command(mode: &Mode, bin: &str) -> clap::Command {
    let cmd = Cli::command().name(bin.to_owned()).bin_name(bin.to_owned());
    match mode {
        Mode::Local => mode::hide_for_local(cmd),
        Mode::Workspace { .. } => mode::hide_for_workspace(cmd),
    }
}

/// Runs the CLI with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The guest agent is a service of the VM, not a user command: it bypasses mode detection.
    if args.get(1).is_some_and(|a| a == "agent") {
        return commands::agent::main(args.into_iter().skip(1));
    }
    let bin = BIN_NAME.get_or_init(|| invoked_name(args.first())).as_str();
    let mode = mode::detect();
    let cmd = command(&mode, bin);
    let rest = args.get(1..).unwrap_or_default();

    let refused = match mode {
        Mode::Workspace { .. } => mode::refusal(&cmd, bin, rest),
        Mode::Local => mode::local_refusal(&cmd, bin, rest),
    };
    if let Some(msg) = refused {
        let format = mode::raw_output_flag(rest)
            .and_then(|f| Format::parse(&f))
            .unwrap_or(Format::Human);
        Printer::plain(format).error(&CliError::new("not_available", msg, exit::ERROR));
        return exit::ERROR;
    }

    let matches = match cmd.clone().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; every parse error exits 1 (cli.md §7).
            return if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return exit::ERROR;
        }
    };

    // Local mode reads the config file once; its `output` is the default format.
    let file = match mode {
        Mode::Local => Some(config::load()),
        Mode::Workspace { .. } => None,
    };
    let file_format = file
        .as_ref()
        .and_then(|f| f.as_ref().ok())
        .and_then(|f| f.output.as_deref())
        .and_then(Format::parse);
    let format = cli.output.or(file_format).unwrap_or(Format::Human);
    let printer = Printer {
        format,
        query: cli.query.clone(),
        streaming: cli.cmd.streams(),
        color: format == Format::Human && output::stdout_color(),
    };

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&CliError::io("cannot start the async runtime", &e));
            return exit::ERROR;
        }
    };
    rt.block_on(async {
        let run = async {
            match mode {
                Mode::Local => {
                    let file = file.unwrap_or_else(|| Ok(Default::default()))?;
                    run_local(cli, file, &printer, cmd).await
                }
                Mode::Workspace { bridge_url } => {
                    run_workspace(cli, &bridge_url, cmd, printer.color)
                        .await
                        .map(|o| (o, exit::OK))
                }
            }
        };
        tokio::select! {
            r = run => match r.and_then(|(out, code)| printer.print(&out).map(|()| code)) {
                Ok(code) => code,
                Err(e) => {
                    printer.error(&e);
                    e.exit
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!();
                exit::INTERRUPTED
            }
        }
    })
}

/// Workspace mode: only what [`mode::allowed_in_workspace`] lets through gets here.
async fn run_workspace(
    cli: Cli,
    bridge_url: &str,
    cmd: clap::Command,
    color: bool,
) -> CliResult<Out> {
    let bridge = client::Api::new(bridge_url, "/rig/v1", None, cli.verbose)?;
    if cli.verbose {
        eprintln!("workspace mode; bridge {bridge_url}");
    }
    match cli.cmd {
        Cmd::Whoami => inside::whoami(&bridge).await,
        Cmd::Status => inside::status(&bridge).await,
        Cmd::Workspace(WsCmd::Get { ws }) if !ws.is_given() => inside::workspace(&bridge).await,
        Cmd::Workspace(WsCmd::Get { .. }) => Err(CliError::usage(format!(
            "inside a workspace, `{} workspace get` shows the current workspace and takes no argument",
            bin_name()
        ))),
        Cmd::Completions { shell } => {
            api::completions(shell, cmd, bin_name())?;
            Ok(Out::silent())
        }
        Cmd::App(a) => run_app_cmd(&bridge, a, false).await,
        Cmd::Credits(CreditsArgs { cmd: None }) => credits::credits(&bridge, true).await,
        Cmd::Usage(UsageArgs {
            subject: Some(s),
            window,
            ..
        }) => credits::subject_usage(&bridge, &s, window.as_deref()).await,
        Cmd::Usage(_) => Err(CliError::usage(format!(
            "inside a workspace, usage needs --subject; the account's usage is `{} usage` on your own machine",
            bin_name()
        ))),
        Cmd::Proxy(p) => match p {
            ProxyCmd::On { group } | ProxyCmd::Env { group } => {
                proxy::on(&bridge, group.as_deref()).await
            }
            ProxyCmd::Off { group } => proxy::off(&bridge, group.as_deref()).await,
            ProxyCmd::Dotenv { path } => proxy::dotenv(&bridge, path.as_deref()).await,
            ProxyCmd::Path => Ok(proxy::path()),
            ProxyCmd::Status => proxy::status(&bridge, color).await,
        },
        _ => Err(CliError::usage(format!(
            "{} {} is not available inside a workspace; run it on your own machine",
            bin_name(),
            mode::command_path(&cmd, &std::env::args_os().skip(1).collect::<Vec<_>>()).join(" ")
        ))),
    }
}

/// Local mode: resolves URL and key, then dispatches.
async fn run_local(
    cli: Cli,
    file: config::ConfigFile,
    printer: &Printer,
    cmd: clap::Command,
) -> CliResult<(Out, i32)> {
    let flag_url = match &cli.cmd {
        Cmd::Login(a) => a.api_url.as_deref(),
        _ => None,
    };
    let effective = config::effective(&file, flag_url);
    if cli.verbose {
        eprintln!(
            "api_url {} (from {:?}); key from {:?}; config {}",
            effective.api_url,
            effective.api_url_source,
            effective.api_key_source,
            config::path().display()
        );
    }
    let ctx = Ctx {
        api: client::Api::new(
            &effective.api_url,
            "/api/v1",
            effective.api_key.clone(),
            cli.verbose,
        )?,
        printer: printer.clone(),
        file,
        effective,
        verbose: cli.verbose,
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
        Cmd::Credits(CreditsArgs { cmd: None }) => credits::credits(&ctx.api, false).await?,
        Cmd::Credits(CreditsArgs {
            cmd: Some(CreditsCmd::Ledger { limit, workspace }),
        }) => credits::ledger(&ctx.api, limit, workspace.as_deref()).await?,
        Cmd::Usage(UsageArgs { subject: Some(_), .. }) => {
            return Err(CliError::usage(format!(
                "usage --subject works inside a workspace; on your own machine, `{} usage [--days N]` shows the account's usage",
                bin_name()
            )))
        }
        Cmd::Usage(UsageArgs { days, .. }) => credits::usage(&ctx.api, days, printer.color).await?,
        Cmd::Proxy(_) => {
            return Err(CliError::usage(format!(
                "{} proxy is only available inside a workspace",
                bin_name()
            )))
        }
        Cmd::Capacity => account::capacity(&ctx).await?,
        Cmd::Templates(TemplatesCmd::Ls) => account::templates(&ctx).await?,
        Cmd::Ssh { ws, args } => workspace::ssh(&ctx, &ws, &args).await?,
        Cmd::App(a) => run_app_cmd(&ctx.api, a, true).await?,
        Cmd::SshKey(SshKeyCmd::Add { name, file }) => keys::ssh_key_add(&ctx, name, file).await?,
        Cmd::SshKey(SshKeyCmd::Ls) => keys::ssh_key_ls(&ctx).await?,
        Cmd::SshKey(SshKeyCmd::Rm { key }) => keys::ssh_key_rm(&ctx, &key).await?,
        Cmd::ApiKey(ApiKeyCmd::Create { name }) => keys::api_key_create(&ctx, name).await?,
        Cmd::ApiKey(ApiKeyCmd::Ls) => keys::api_key_ls(&ctx).await?,
        Cmd::ApiKey(ApiKeyCmd::Rm { key }) => keys::api_key_rm(&ctx, &key).await?,
        Cmd::Api(a) => {
            let code = api::api(&ctx, &a.method, &a.path, a.body.as_deref()).await?;
            return Ok((Out::silent(), code));
        }
        Cmd::Completions { shell } => {
            api::completions(shell, cmd, bin_name())?;
            Out::silent()
        }
        Cmd::Workspace(w) => run_workspace_cmd(&ctx, w).await?,
        Cmd::Ai(a) => run_ai_cmd(&ctx, a).await?,
    };
    Ok((out, exit::OK))
}

/// `app …` in either mode: `local` talks to `/api/v1`, otherwise to the bridge's `/rig/v1`.
async fn run_app_cmd(api: &client::Api, a: AppCmd, local: bool) -> CliResult<Out> {
    use commands::apps::{self, Scope, Update};
    fn scope(local: bool, ws: Option<&str>) -> CliResult<Scope<'_>> {
        match (local, ws) {
            (true, ws) => Ok(Scope::Local(ws)),
            (false, None) => Ok(Scope::Workspace),
            (false, Some(_)) => Err(CliError::usage(
                "inside a workspace, app commands act on the current workspace; drop -w",
            )),
        }
    }
    match a {
        AppCmd::New {
            name,
            workspace,
            port,
            protocol,
            share,
            description,
        } => {
            apps::new(
                api,
                scope(local, workspace.as_deref())?,
                &name,
                port,
                protocol.as_deref(),
                &share.share(),
                description.as_deref(),
            )
            .await
        }
        AppCmd::Ls { workspace } => apps::ls(api, scope(local, workspace.as_deref())?).await,
        AppCmd::Get { app } => apps::get(api, scope(local, None)?, &app).await,
        AppCmd::Rm { app, yes } => apps::rm(api, scope(local, None)?, &app, yes).await,
        AppCmd::Health { app } if local => apps::health(api, &app).await,
        AppCmd::Health { .. } => Err(CliError::usage(format!(
            "{} app health is not available inside a workspace; run it on your own machine",
            bin_name()
        ))),
        AppCmd::Share { app, share } => {
            apps::share(api, scope(local, None)?, &app, &share.share()).await
        }
        AppCmd::Update {
            app,
            name,
            port,
            protocol,
            description,
            enable,
            disable,
        } => {
            let u = Update {
                name,
                port,
                protocol,
                description,
                enable,
                disable,
            };
            apps::update(api, scope(local, None)?, &app, &u).await
        }
    }
}

async fn run_workspace_cmd(ctx: &Ctx, w: WsCmd) -> CliResult<Out> {
    match w {
        WsCmd::New { flags, wait } => workspace::new(ctx, &flags, wait).await,
        WsCmd::Spawn { flags, timeout } => workspace::spawn(ctx, &flags, timeout).await,
        WsCmd::Ls { status } => workspace::ls(ctx, status.as_deref()).await,
        WsCmd::Get { ws } => workspace::get(ctx, &ws.resolve()?).await,
        WsCmd::Start { ws, wait } => workspace::start(ctx, &ws.resolve()?, wait).await,
        WsCmd::Stop { ws, wait } => workspace::stop(ctx, &ws.resolve()?, wait).await,
        WsCmd::Restart { ws, wait } => workspace::restart(ctx, &ws.resolve()?, wait).await,
        WsCmd::Rm { ws, yes, force } => workspace::rm(ctx, &ws.resolve()?, yes, force).await,
        WsCmd::Resize {
            ws,
            ram,
            vcpu,
            disk,
        } => workspace::resize(ctx, &ws.resolve()?, ram, vcpu, disk).await,
        WsCmd::Retry { ws, wait } => workspace::retry(ctx, &ws.resolve()?, wait).await,
        WsCmd::Cancel { ws } => workspace::cancel(ctx, &ws.resolve()?).await,
        WsCmd::SshInfo { ws } => workspace::ssh_info(ctx, &ws.resolve()?).await,
        WsCmd::Env(EnvCmd::Set { workspace: w, args }) => {
            let (ws, rest) = cli::ws_and_rest(w.as_deref(), &args)?;
            workspace::env_set(ctx, &ws, &rest).await
        }
        WsCmd::Env(EnvCmd::Unset { workspace: w, args }) => {
            let (ws, rest) = cli::ws_and_rest(w.as_deref(), &args)?;
            workspace::env_unset(ctx, &ws, &rest).await
        }
        WsCmd::Env(EnvCmd::Get {
            workspace: w,
            args,
            reveal,
        }) => {
            let (ws, rest) = cli::ws_and_rest(w.as_deref(), &args)?;
            let [key] = rest.as_slice() else {
                return Err(CliError::usage("give exactly one KEY"));
            };
            workspace::env_get(ctx, &ws, key, reveal).await
        }
        WsCmd::Env(EnvCmd::Ls { ws, reveal }) => {
            workspace::env_ls(ctx, &ws.resolve()?, reveal).await
        }
        WsCmd::SshKeys(WsKeysCmd::Ls { ws }) => workspace::ssh_keys_ls(ctx, &ws.resolve()?).await,
        WsCmd::SshKeys(WsKeysCmd::Sync { ws }) => {
            workspace::ssh_keys_sync(ctx, &ws.resolve()?).await
        }
        WsCmd::Ai(a) => run_ai_cmd(ctx, a).await,
    }
}

/// `workspace ai …` and `ai …`.
async fn run_ai_cmd(ctx: &Ctx, a: AiCmd) -> CliResult<Out> {
    use commands::ai::{self, KeySource};
    match a {
        AiCmd::Show { ws } => ai::show(ctx, &ws.resolve()?).await,
        AiCmd::Mode {
            ws,
            mode,
            provider,
            model,
            api_key,
            api_key_stdin,
        } => {
            let key = match (api_key, api_key_stdin) {
                (_, true) => KeySource::Stdin,
                (true, false) => KeySource::Prompt,
                (false, false) => KeySource::None,
            };
            ai::mode(ctx, &ws, mode, provider, model.as_deref(), key).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoked_names() {
        assert_eq!(
            invoked_name(Some(&"/usr/local/bin/rigbox".into())),
            "rigbox"
        );
        assert_eq!(invoked_name(Some(&"rig".into())), "rig");
        assert_eq!(invoked_name(Some(&"./target/debug/rig".into())), "rig");
        assert_eq!(invoked_name(None), "rig");
    }

    #[test]
    fn help_and_version_use_the_invoked_name() {
        let cmd = command(&Mode::Local, "rigbox");
        assert_eq!(
            cmd.render_version().trim(),
            format!("rigbox {}", env!("CARGO_PKG_VERSION"))
        );
        let help = command(&Mode::Local, "rigbox").render_usage().to_string();
        assert!(help.contains("rigbox"), "{help}");
    }
}
