//! `api <METHOD> <PATH> [--body FILE|-]` (a raw request, the body printed unchanged and the
//! exit code taken from the HTTP status) and `completions [SHELL]`.

use super::Ctx;
use crate::error::{exit_for_status, CliError, CliResult};
use reqwest::Method;
use std::io::{IsTerminal, Read, Write};

/// Parses METHOD (any case).
fn method(m: &str) -> CliResult<Method> {
    Ok(match m.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        _ => {
            return Err(CliError::usage(format!(
                "METHOD must be GET, POST, PUT, PATCH or DELETE, not {m:?}"
            )))
        }
    })
}

/// The path relative to `/api/v1` (a leading `/api/v1` is stripped), always starting with `/`.
fn api_path(path: &str) -> String {
    let p = path.trim();
    let p = p
        .strip_prefix("/api/v1")
        .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
        .unwrap_or(p);
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

async fn read_body(src: &str) -> CliResult<Vec<u8>> {
    let bytes = if src == "-" {
        tokio::task::spawn_blocking(|| {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map(|_| b)
        })
        .await
        .map_err(|e| CliError::usage(format!("reading stdin failed: {e}")))?
        .map_err(|e| CliError::io("cannot read stdin", &e))?
    } else {
        std::fs::read(src).map_err(|e| CliError::io(format!("cannot read {src}"), &e))?
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| CliError::usage(format!("--body is not valid JSON: {e}")))?;
    Ok(bytes)
}

/// `api`: prints the response body unchanged (pretty-printed JSON on a terminal); returns the
/// exit code of the HTTP status.
pub async fn api(ctx: &Ctx, m: &str, path: &str, body: Option<&str>) -> CliResult<i32> {
    let method = method(m)?;
    let bytes = match body {
        Some(_) if method == Method::GET => {
            return Err(CliError::usage("--body cannot be used with GET"))
        }
        Some(src) => Some(read_body(src).await?),
        None => None,
    };
    ctx.api.require_key()?;
    let raw = ctx.api.raw(method, &api_path(path), bytes, &[]).await?;
    if ctx.verbose {
        eprintln!("< HTTP {}", raw.status);
        for (k, v) in &raw.headers {
            eprintln!("< {k}: {v}");
        }
    }
    let mut out = std::io::stdout();
    let pretty = out.is_terminal();
    let written = match serde_json::from_slice::<serde_json::Value>(&raw.body) {
        Ok(v) if pretty => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        ),
        _ if raw.body.is_empty() => Ok(()),
        _ => out.write_all(&raw.body).and_then(|()| {
            if raw.body.ends_with(b"\n") {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        }),
    };
    written.map_err(|e| CliError::io("cannot write the response", &e))?;
    Ok(exit_for_status(raw.status))
}

/// `completions [SHELL]`: the shell defaults to the one in `$SHELL`.
pub fn completions(
    shell: Option<clap_complete::Shell>,
    mut cmd: clap::Command,
    bin: &str,
) -> CliResult<()> {
    let shell = shell
        .or_else(clap_complete::Shell::from_env)
        .ok_or_else(|| {
            CliError::usage(
                "cannot tell the shell from $SHELL; name it: bash, zsh, fish, powershell or elvish",
            )
        })?;
    clap_complete::generate(shell, &mut cmd, bin.to_owned(), &mut std::io::stdout());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_paths() {
        assert_eq!(method("get").expect("ok"), Method::GET);
        assert_eq!(method("Patch").expect("ok"), Method::PATCH);
        assert!(method("HEAD").is_err());
        assert_eq!(
            api_path("/api/v1/workspaces?limit=1"),
            "/workspaces?limit=1"
        );
        assert_eq!(api_path("workspaces"), "/workspaces");
        assert_eq!(api_path("/workspaces"), "/workspaces");
        assert_eq!(api_path("/api/v1"), "/");
        assert_eq!(api_path("/api/v10/x"), "/api/v10/x");
    }
}
