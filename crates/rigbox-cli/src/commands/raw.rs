//! `rig api` (raw requests) and `rig completions`.

use super::Ctx;
use crate::error::{exit_for_status, CliError, CliResult};
use reqwest::Method;
use std::io::{IsTerminal, Read};

/// `rig api <METHOD> <PATH> [--body FILE|-]`; returns the exit code of the HTTP status.
pub async fn api(ctx: &Ctx, method: &str, path: &str, body: Option<&str>) -> CliResult<i32> {
    let m = method.to_ascii_uppercase();
    let method = match m.as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        _ => {
            return Err(CliError::usage(format!(
                "METHOD must be GET, POST, PUT, PATCH or DELETE, not {method:?}"
            )))
        }
    };
    let bytes = match body {
        Some(_) if method == Method::GET => {
            return Err(CliError::usage("--body is not allowed with GET"))
        }
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
            Some(b)
        }
        Some(f) => {
            Some(std::fs::read(f).map_err(|e| CliError::usage(format!("cannot read {f}: {e}")))?)
        }
        None => None,
    };
    if let Some(b) = &bytes {
        serde_json::from_slice::<serde_json::Value>(b)
            .map_err(|e| CliError::usage(format!("--body is not JSON: {e}")))?;
    }
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let raw = ctx.api.raw(method, &path, bytes, &[]).await?;
    if ctx.verbose {
        eprintln!("< HTTP {}", raw.status);
        for (k, v) in &raw.headers {
            eprintln!("< {k}: {v}");
        }
    }
    let pretty = std::io::stdout().is_terminal();
    match serde_json::from_slice::<serde_json::Value>(&raw.body) {
        Ok(v) if pretty => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        _ if !raw.body.is_empty() => {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(&raw.body);
            if !raw.body.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
        }
        _ => {}
    }
    Ok(exit_for_status(raw.status))
}
