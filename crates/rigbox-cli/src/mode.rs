//! Runtime modes (cli.md §2): local mode talks to `<api_url>/api/v1` with an API key;
//! workspace mode — inside a VM, when `/etc/rigbox/workspace.json` exists and is readable, or
//! when `RIGBOX_MODE=workspace` — talks to the node bridge (`<bridge_url>/rig/v1`) with no
//! credential and never reads the config file or `RIGBOX_API_KEY`.
//!
//! Workspace mode offers only a few commands; the others are hidden from help and refused
//! with `rig <command> is not available inside a workspace; run it on your own machine`
//! (exit 1) *before* their arguments are checked. `proxy` is the reverse: it exists only inside
//! a workspace, so local mode hides and refuses it the same way.

use std::ffi::OsString;

/// Where workspace mode reads its metadata.
pub const WORKSPACE_JSON: &str = "/etc/rigbox/workspace.json";
/// The bridge when the metadata names none.
pub const DEFAULT_BRIDGE_URL: &str = "http://172.16.0.1:9090";

/// The mode of this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Local,
    Workspace { bridge_url: String },
}

/// Detects the mode from the process environment and the metadata file.
pub fn detect() -> Mode {
    detect_with(
        std::env::var("RIGBOX_MODE").ok().as_deref(),
        std::env::var("RIGBOX_BRIDGE_URL").ok().as_deref(),
        std::fs::read_to_string(WORKSPACE_JSON).ok().as_deref(),
    )
}

/// [`detect`] from explicit inputs: `RIGBOX_MODE`, `RIGBOX_BRIDGE_URL` and the metadata file.
pub fn detect_with(forced: Option<&str>, bridge_env: Option<&str>, meta: Option<&str>) -> Mode {
    let inside = match forced.map(str::trim) {
        Some("workspace") => true,
        Some("local") => false,
        _ => meta.is_some(),
    };
    if !inside {
        return Mode::Local;
    }
    let from_file = meta
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| v["bridge_url"].as_str().map(str::to_owned));
    let bridge_url = bridge_env
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or(from_file)
        .unwrap_or_else(|| DEFAULT_BRIDGE_URL.to_owned());
    Mode::Workspace {
        bridge_url: bridge_url.trim_end_matches('/').to_owned(),
    }
}

/// Top-level commands available in workspace mode (besides `help`).
const WORKSPACE_COMMANDS: &[&str] = &[
    "whoami",
    "status",
    "credits",
    "usage",
    "workspace",
    "app",
    "proxy",
    "completions",
];
/// `workspace` subcommands available in workspace mode.
const WORKSPACE_WS_COMMANDS: &[&str] = &["get"];
/// Top-level commands that exist only in workspace mode.
const WORKSPACE_ONLY_COMMANDS: &[&str] = &["proxy"];
/// Commands whose subcommands are refused in workspace mode unless listed (only the command
/// itself runs there, e.g. `credits` but not `credits ledger`).
const WORKSPACE_LIMITED: &[(&str, &[&str])] =
    &[("workspace", WORKSPACE_WS_COMMANDS), ("credits", &[])];

/// Global flags that take a value (skipped when looking for the command words).
const VALUE_FLAGS: &[&str] = &["--output", "--query"];

/// Whether the canonical command path `path` (e.g. `["workspace", "ls"]`) may run in
/// workspace mode.
pub fn allowed_in_workspace(path: &[&str]) -> bool {
    match path {
        [] => true,
        ["help", ..] => true,
        [top, sub, ..] if limited(top).is_some() => {
            limited(top).is_some_and(|subs| subs.contains(sub)) || *sub == "help"
        }
        [top, ..] => WORKSPACE_COMMANDS.contains(top),
    }
}

/// The subcommands workspace mode allows of a command it limits.
fn limited(top: &str) -> Option<&'static [&'static str]> {
    WORKSPACE_LIMITED
        .iter()
        .find(|(t, _)| *t == top)
        .map(|(_, subs)| *subs)
}

/// Whether the canonical command path `path` may run in local mode.
pub fn allowed_locally(path: &[&str]) -> bool {
    !path
        .first()
        .is_some_and(|top| WORKSPACE_ONLY_COMMANDS.contains(top))
}

/// The command words of an argument list (after argv[0]), resolved to canonical subcommand
/// names through `cmd` (aliases such as `ws` become `workspace`). Stops at the first word that
/// is not a subcommand.
pub fn command_path(cmd: &clap::Command, args: &[OsString]) -> Vec<String> {
    let mut path = Vec::new();
    let mut cur = cmd;
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if VALUE_FLAGS.contains(&a.as_ref()) {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        match cur.find_subcommand(a.as_ref()) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                cur = sub;
            }
            None => break,
        }
    }
    path
}

/// The refusal message for a command not available in workspace mode, if `args` is one.
pub fn refusal(cmd: &clap::Command, bin: &str, args: &[OsString]) -> Option<String> {
    let path = command_path(cmd, args);
    let words: Vec<&str> = path.iter().map(String::as_str).collect();
    if allowed_in_workspace(&words) {
        return None;
    }
    // Name the command down to the first word that is refused (`workspace ls`, `api-key`).
    let shown = if words.first().is_some_and(|t| limited(t).is_some()) {
        words.iter().take(2).copied().collect::<Vec<_>>().join(" ")
    } else {
        words.first().copied().unwrap_or_default().to_owned()
    };
    Some(format!(
        "{bin} {shown} is not available inside a workspace; run it on your own machine"
    ))
}

/// The refusal message for a workspace-only command run in local mode, if `args` is one.
pub fn local_refusal(cmd: &clap::Command, bin: &str, args: &[OsString]) -> Option<String> {
    let path = command_path(cmd, args);
    let words: Vec<&str> = path.iter().map(String::as_str).collect();
    if allowed_locally(&words) {
        return None;
    }
    Some(format!(
        "{bin} {} is only available inside a workspace",
        words.first().copied().unwrap_or_default()
    ))
}

/// Hides from help the commands that exist only inside a workspace.
pub fn hide_for_local(cmd: clap::Command) -> clap::Command {
    WORKSPACE_ONLY_COMMANDS
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(*name, |c| c.hide(true)))
}

/// Hides from help every command workspace mode does not offer. (Every subcommand is passed
/// through `mut_subcommand`, which re-appends it, so the help keeps its order.)
pub fn hide_for_workspace(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        let top = name.clone();
        cmd.mut_subcommand(name, |c| {
            let c = c.hide(!allowed_in_workspace(&[&top]));
            if limited(&top).is_none() {
                return c;
            }
            let subs: Vec<String> = c
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect();
            subs.into_iter().fold(c, |c, sub| {
                let hide = !allowed_in_workspace(&[&top, &sub]);
                c.mut_subcommand(sub, |s| s.hide(hide))
            })
        })
    })
}

/// The value of `--output` in raw arguments (to print a refusal in the requested format before
/// clap has parsed anything).
pub fn raw_output_flag(args: &[OsString]) -> Option<String> {
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--output" {
            return it.next().map(|v| v.into_owned());
        }
        if let Some(v) = a.strip_prefix("--output=") {
            return Some(v.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn detection() {
        let meta = r#"{"workspace_id":"ws-1","bridge_url":"http://10.0.0.1:9090/"}"#;
        assert_eq!(detect_with(None, None, None), Mode::Local);
        assert_eq!(
            detect_with(None, None, Some(meta)),
            Mode::Workspace {
                bridge_url: "http://10.0.0.1:9090".into()
            }
        );
        assert_eq!(detect_with(Some("local"), None, Some(meta)), Mode::Local);
        assert_eq!(
            detect_with(Some("workspace"), None, None),
            Mode::Workspace {
                bridge_url: DEFAULT_BRIDGE_URL.into()
            }
        );
        assert_eq!(
            detect_with(None, Some("http://127.0.0.1:1"), Some(meta)),
            Mode::Workspace {
                bridge_url: "http://127.0.0.1:1".into()
            }
        );
    }

    #[test]
    fn refusals() {
        let cmd = Cli::command();
        let r = |a: &[&str]| refusal(&cmd, "rig", &args(a));
        assert_eq!(r(&["whoami"]), None);
        assert_eq!(r(&["--output", "json", "status"]), None);
        assert_eq!(r(&["ws", "get"]), None);
        assert_eq!(r(&["workspace", "--help"]), None);
        assert_eq!(r(&["completions", "bash"]), None);
        assert_eq!(r(&["help"]), None);
        assert_eq!(r(&["nonsense"]), None, "clap reports unknown commands");
        assert_eq!(
            r(&["ws", "ls"]).as_deref(),
            Some(
                "rig workspace ls is not available inside a workspace; run it on your own machine"
            )
        );
        assert_eq!(
            r(&["-v", "ws", "new"]).as_deref(),
            Some(
                "rig workspace new is not available inside a workspace; run it on your own machine"
            )
        );
        assert_eq!(
            r(&["api-key", "create"]).as_deref(),
            Some("rig api-key is not available inside a workspace; run it on your own machine")
        );
        assert!(r(&["login"]).is_some());
        assert!(r(&["api", "GET", "/x"]).is_some());
        assert_eq!(r(&["credits"]), None);
        assert_eq!(r(&["usage", "--subject", "s"]), None);
        assert_eq!(r(&["proxy", "on"]), None);
        assert_eq!(
            r(&["credits", "ledger"]).as_deref(),
            Some("rig credits ledger is not available inside a workspace; run it on your own machine")
        );
        let l = |a: &[&str]| local_refusal(&cmd, "rig", &args(a));
        assert_eq!(
            l(&["proxy", "on"]).as_deref(),
            Some("rig proxy is only available inside a workspace")
        );
        assert_eq!(l(&["credits", "ledger"]), None);
        assert_eq!(l(&["usage"]), None);
    }

    #[test]
    fn help_hides_local_commands() {
        let cmd = hide_for_workspace(Cli::command());
        let visible: Vec<&str> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        assert_eq!(
            visible,
            [
                "whoami",
                "status",
                "credits",
                "usage",
                "workspace",
                "app",
                "proxy",
                "completions"
            ]
        );
        let ws = cmd.find_subcommand("workspace").expect("workspace");
        let visible: Vec<&str> = ws
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        assert_eq!(visible, ["get"]);
        let credits = cmd.find_subcommand("credits").expect("credits");
        assert!(credits.get_subcommands().all(|s| s.is_hide_set()));
        let local = hide_for_local(Cli::command());
        let hidden: Vec<&str> = local
            .get_subcommands()
            .filter(|s| s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        assert_eq!(hidden, ["proxy"]);
    }

    #[test]
    fn output_flag_prescan() {
        assert_eq!(
            raw_output_flag(&args(&["ws", "--output", "json"])).as_deref(),
            Some("json")
        );
        assert_eq!(
            raw_output_flag(&args(&["--output=yaml", "ws"])).as_deref(),
            Some("yaml")
        );
        assert_eq!(raw_output_flag(&args(&["ws"])), None);
    }
}
