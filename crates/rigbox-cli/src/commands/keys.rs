//! `rig ssh-key` and `rig api-key`.

use super::Ctx;
use crate::client::urlencode;
use crate::error::{CliError, CliResult};
use crate::output::{cell, Out};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Resolves an ID or a unique name among `items`.
fn resolve(items: &[Value], what: &str, id_or_name: &str) -> CliResult<String> {
    if let Some(i) = items.iter().find(|i| i["id"] == id_or_name) {
        return Ok(cell(&i["id"]));
    }
    let named: Vec<&Value> = items.iter().filter(|i| i["name"] == id_or_name).collect();
    match named.as_slice() {
        [one] => Ok(cell(&one["id"])),
        [] => Err(CliError::not_found(format!(
            "no {what} with ID or name {id_or_name:?}"
        ))),
        _ => Err(CliError::usage(format!(
            "{} {what}s are named {id_or_name:?}; use the ID",
            named.len()
        ))),
    }
}

fn default_key_file() -> CliResult<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.exists())
        .ok_or_else(|| CliError::usage("no public key in ~/.ssh (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub); create one with: ssh-keygen -t ed25519"))
}

pub async fn ssh_key_add(ctx: &Ctx, name: Option<String>, file: Option<PathBuf>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let file = match file {
        Some(f) => f,
        None => default_key_file()?,
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    if text.contains("PRIVATE KEY") {
        return Err(CliError::usage(format!(
            "{} is a private key; give the public key (.pub) instead",
            file.display()
        )));
    }
    let line = text.trim().to_owned();
    let name = name.unwrap_or_else(|| {
        let comment = line.split_whitespace().nth(2).map(str::to_owned);
        comment.unwrap_or_else(|| {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{user}@{host}")
        })
    });
    let k = ctx
        .api
        .post("/ssh-keys", &json!({"name": name, "public_key": line}))
        .await?;
    let msg = format!(
        "Added SSH key {} ({})",
        cell(&k["name"]),
        cell(&k["fingerprint"])
    );
    Ok(Out::doc(k).with_message(msg))
}

pub async fn ssh_key_ls(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    Ok(Out::list(
        ctx.api.list_all("/ssh-keys").await?,
        vec![
            ("ID", "id"),
            ("NAME", "name"),
            ("TYPE", "key_type"),
            ("FINGERPRINT", "fingerprint"),
            ("CREATED", "created_at"),
        ],
    ))
}

pub async fn ssh_key_rm(ctx: &Ctx, id_or_name: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let id = resolve(&ctx.api.list_all("/ssh-keys").await?, "SSH key", id_or_name)?;
    ctx.api
        .call(
            Method::DELETE,
            &format!("/ssh-keys/{}", urlencode(&id)),
            None,
        )
        .await?;
    Ok(Out::doc(json!({"id": id, "deleted": true}))
        .with_message(format!("Removed SSH key {id_or_name}")))
}

pub async fn api_key_create(ctx: &Ctx, name: Option<String>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let body = match name {
        Some(n) => json!({"name": n}),
        None => json!({}),
    };
    let k = ctx.api.post("/api-keys", &body).await?;
    ctx.printer
        .note("warning: this key is shown only once; store it now.");
    let msg = format!(
        "{}\n(name {}, id {})",
        cell(&k["key"]),
        cell(&k["name"]),
        cell(&k["id"])
    );
    Ok(Out::doc(k).with_message(msg))
}

pub async fn api_key_ls(ctx: &Ctx) -> CliResult<Out> {
    ctx.api.require_key()?;
    Ok(Out::list(
        ctx.api.list_all("/api-keys").await?,
        vec![
            ("ID", "id"),
            ("NAME", "name"),
            ("PREVIEW", "key_preview"),
            ("CREATED", "created_at"),
            ("LAST_USED", "last_used_at"),
        ],
    ))
}

pub async fn api_key_rm(ctx: &Ctx, id_or_name: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let id = resolve(&ctx.api.list_all("/api-keys").await?, "API key", id_or_name)?;
    ctx.api
        .call(
            Method::DELETE,
            &format!("/api-keys/{}", urlencode(&id)),
            None,
        )
        .await?;
    Ok(Out::doc(json!({"id": id, "deleted": true}))
        .with_message(format!("Revoked API key {id_or_name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ids_and_unique_names() {
        let items = vec![
            json!({"id": "1", "name": "a"}),
            json!({"id": "2", "name": "b"}),
            json!({"id": "3", "name": "b"}),
        ];
        assert_eq!(resolve(&items, "key", "1").expect("id"), "1");
        assert_eq!(resolve(&items, "key", "a").expect("name"), "1");
        assert_eq!(resolve(&items, "key", "b").expect_err("ambiguous").exit, 1);
        assert_eq!(resolve(&items, "key", "zz").expect_err("missing").exit, 3);
    }
}
