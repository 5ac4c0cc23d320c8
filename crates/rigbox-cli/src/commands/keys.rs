//! `ssh-key add|ls|rm` and `api-key create|ls|rm`. Removal takes an ID or a name: the CLI
//! lists the keys and resolves the name, which must be unique; deletes answer
//! `{"id", "deleted": true}`.

use super::account::user_at_host;
use super::Ctx;
use crate::client::urlencode;
use crate::error::{CliError, CliResult};
use crate::output::{cell, Out};
use rigbox_types::api::{CreateApiKeyRequest, CreateSshKeyRequest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Resolves an ID or a unique name among `items` to an ID.
fn resolve(items: &[Value], what: &str, id_or_name: &str) -> CliResult<String> {
    if let Some(i) = items.iter().find(|i| i["id"] == id_or_name) {
        return Ok(cell(&i["id"]));
    }
    let named: Vec<&Value> = items.iter().filter(|i| i["name"] == id_or_name).collect();
    match named.as_slice() {
        [one] => Ok(cell(&one["id"])),
        [] => Err(CliError::not_found(format!(
            "no {what} has the ID or name {id_or_name:?}"
        ))),
        _ => Err(CliError::usage(format!(
            "{} {what}s are named {id_or_name:?}; give the ID instead",
            named.len()
        ))),
    }
}

/// The first existing default public key file under `home`.
fn default_key_file(home: &Path) -> CliResult<PathBuf> {
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::usage(
                "no public key found in ~/.ssh (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub); \
                 create one with: ssh-keygen -t ed25519",
            )
        })
}

/// The OpenSSH public key line of a key file, refusing private keys.
fn public_key_line(file: &Path, text: &str) -> CliResult<String> {
    if text.contains("PRIVATE KEY") {
        return Err(CliError::usage(format!(
            "{} is a private key; give the public key ({}.pub) instead",
            file.display(),
            file.display()
        )));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(CliError::usage(format!("{} is empty", file.display()))),
        _ => Err(CliError::usage(format!(
            "{} holds {} keys; give a file with one public key",
            file.display(),
            lines.len()
        ))),
    }
}

/// The default key name: the key's comment (at most 64 characters), else `<user>@<hostname>`.
fn default_name(line: &str) -> String {
    let comment = match ssh_key::PublicKey::from_openssh(line) {
        Ok(k) => k.comment().trim().to_owned(),
        // The server judges keys this parser does not know; take the text after the blob.
        Err(_) => line
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" "),
    };
    if comment.is_empty() {
        user_at_host().chars().take(64).collect()
    } else {
        comment.chars().take(64).collect()
    }
}

/// `ssh-key add [--name N] [--file F]`.
pub async fn ssh_key_add(ctx: &Ctx, name: Option<String>, file: Option<PathBuf>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let file = match file {
        Some(f) => f,
        None => default_key_file(
            &std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default(),
        )?,
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| CliError::io(format!("cannot read {}", file.display()), &e))?;
    let line = public_key_line(&file, &text)?;
    let name = name.unwrap_or_else(|| default_name(&line));
    let k = ctx
        .api
        .post(
            "/ssh-keys",
            &CreateSshKeyRequest {
                name,
                public_key: line,
            },
        )
        .await?;
    let msg = format!(
        "Added SSH key {} ({})",
        cell(&k["name"]),
        cell(&k["fingerprint"])
    );
    Ok(Out::doc(k).with_message(msg))
}

/// `ssh-key ls`.
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

/// Lists `collection`, resolves `id_or_name` and deletes it.
async fn remove(ctx: &Ctx, collection: &str, what: &str, id_or_name: &str) -> CliResult<Out> {
    ctx.api.require_key()?;
    let items = ctx.api.list_all(collection).await?;
    let id = resolve(&items, what, id_or_name)?;
    ctx.api
        .delete(&format!("{collection}/{}", urlencode(&id)))
        .await?;
    let shown = if id == id_or_name {
        id.clone()
    } else {
        format!("{id_or_name} ({id})")
    };
    Ok(
        Out::doc(json!({"id": id, "deleted": true}))
            .with_message(format!("Removed {what} {shown}")),
    )
}

/// `ssh-key rm <ID|NAME>`.
pub async fn ssh_key_rm(ctx: &Ctx, id_or_name: &str) -> CliResult<Out> {
    remove(ctx, "/ssh-keys", "SSH key", id_or_name).await
}

/// `api-key create [--name N]`: the key is printed once, with a warning on stderr.
pub async fn api_key_create(ctx: &Ctx, name: Option<String>) -> CliResult<Out> {
    ctx.api.require_key()?;
    let k = ctx
        .api
        .post("/api-keys", &CreateApiKeyRequest { name })
        .await?;
    crate::output::warn("this key is shown only once and cannot be retrieved later; store it now");
    let msg = format!(
        "{}\n\nName: {}\nID:   {}",
        cell(&k["key"]),
        cell(&k["name"]),
        cell(&k["id"])
    );
    Ok(Out::doc(k).with_message(msg))
}

/// `api-key ls`.
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

/// `api-key rm <ID|NAME>`.
pub async fn api_key_rm(ctx: &Ctx, id_or_name: &str) -> CliResult<Out> {
    remove(ctx, "/api-keys", "API key", id_or_name).await
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

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnIUAZ8I1YDCSRwXsJl5PaR6o+9IUyGpPs+aKr8PYNl me@laptop";

    #[test]
    fn key_files() {
        let f = Path::new("/k");
        assert_eq!(public_key_line(f, &format!("\n{ED}\n")).expect("one"), ED);
        assert!(public_key_line(f, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").is_err());
        assert!(public_key_line(f, "").is_err());
        assert!(public_key_line(f, &format!("{ED}\n{ED}\n")).is_err());
        assert_eq!(default_name(ED), "me@laptop");
        assert_eq!(default_name("ssh-foo AAAA two words"), "two words");
        assert!(default_name("ssh-foo AAAA").contains('@'));
    }

    #[test]
    fn default_file_order() {
        let home = tempfile::tempdir().expect("dir");
        assert!(default_key_file(home.path()).is_err());
        std::fs::create_dir(home.path().join(".ssh")).expect("mkdir");
        std::fs::write(home.path().join(".ssh/id_rsa.pub"), ED).expect("write");
        assert!(default_key_file(home.path())
            .expect("rsa")
            .ends_with("id_rsa.pub"));
        std::fs::write(home.path().join(".ssh/id_ed25519.pub"), ED).expect("write");
        assert!(default_key_file(home.path())
            .expect("ed25519 first")
            .ends_with("id_ed25519.pub"));
    }
}
