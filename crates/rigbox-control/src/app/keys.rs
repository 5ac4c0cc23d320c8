//! API keys and account SSH keys.

use super::accounts::CLI_LOGIN_KEY;
use super::auth::{self, Principal};
use super::{page_params, ApiError, ApiResult, App};
use crate::store::{ApiKeyRow, SshKeyRow, StoreError};
use rigbox_types::api::{ApiKey, ApiKeyCreated, List, SshKey};
use rigbox_types::node::GuestKey;
use rigbox_types::time_fmt::from_micros;
use rigbox_types::ErrorCode;

/// `rb_...` + the last 8 characters.
pub fn preview(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("rb_...{tail}")
}

fn api_key_view(k: &ApiKeyRow) -> ApiKey {
    ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        key_preview: k.key_preview.clone(),
        created_at: from_micros(k.created_at),
        last_used_at: k.last_used_at.map(from_micros),
    }
}

fn ssh_key_view(k: &SshKeyRow) -> SshKey {
    SshKey {
        id: k.id.clone(),
        name: k.name.clone(),
        public_key: k.public_key.clone(),
        key_type: k.key_type.clone(),
        fingerprint: k.fingerprint.clone(),
        comment: k.comment.clone(),
        created_at: from_micros(k.created_at),
        last_used_at: k.last_used_at.map(from_micros),
    }
}

/// A parsed, accepted OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// Normalized `type base64 [comment]` line.
    pub line: String,
    pub key_type: String,
    pub fingerprint: String,
    pub comment: String,
}

/// Parses one OpenSSH public-key line, refusing DSA, RSA under 2048 bits, private keys and
/// anything else that is not a single public key.
pub fn parse_public_key(raw: &str) -> Result<ParsedKey, String> {
    let text = raw.trim();
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key; paste the public key (the .pub file) instead".into());
    }
    if text.lines().count() != 1 {
        return Err("expected exactly one OpenSSH public key line".into());
    }
    let key = ssh_key::PublicKey::from_openssh(text)
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    let key_type = key.algorithm().as_str().to_owned();
    const ALLOWED: [&str; 7] = [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-rsa",
    ];
    if !ALLOWED.contains(&key_type.as_str()) {
        return Err(format!("key type {key_type} is not accepted"));
    }
    if let ssh_key::public::KeyData::Rsa(rsa) = key.key_data() {
        let n = rsa.n.as_positive_bytes().unwrap_or_default();
        let lead = n.iter().position(|b| *b != 0).unwrap_or(n.len());
        let bytes = &n[lead..];
        let bits = bytes
            .first()
            .map(|b| (bytes.len() * 8) as u32 - b.leading_zeros())
            .unwrap_or(0);
        if bits < 2048 {
            return Err(format!(
                "RSA keys must have at least 2048 bits (this one has {bits})"
            ));
        }
    }
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let comment = key.comment().to_owned();
    let line = key
        .to_openssh()
        .map_err(|e| format!("cannot encode key: {e}"))?;
    Ok(ParsedKey {
        line,
        key_type,
        fingerprint,
        comment,
    })
}

impl App {
    /// `POST /api-keys`.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        name: Option<String>,
    ) -> ApiResult<ApiKeyCreated> {
        let name = name.unwrap_or_else(|| "API key".into());
        let len = name.chars().count();
        if !(1..=64).contains(&len) {
            return Err(ApiError::field("name", "must be 1-64 characters"));
        }
        if name == CLI_LOGIN_KEY {
            return Err(ApiError::field(
                "name",
                "the name \"CLI login\" is reserved for device login",
            ));
        }
        let key = auth::mint_token("rb_");
        let now = self.now();
        let row = ApiKeyRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: p.user.id.clone(),
            name,
            key_preview: preview(&key),
            created_at: now,
            last_used_at: None,
        };
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let count = self.store.count_api_keys(&mut *tx, &p.user.id).await?;
        let max = self.config.max_api_keys;
        if count + 1 > max {
            return Err(ApiError::limit(
                "max_api_keys",
                max,
                count,
                1,
                &p.user.plan,
                "API keys",
            ));
        }
        self.store
            .insert_api_key(&mut *tx, &row, &auth::token_hash(&key))
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ApiKeyCreated {
            id: row.id,
            name: row.name,
            key,
            key_preview: row.key_preview,
            created_at: from_micros(row.created_at),
        })
    }

    pub async fn list_api_keys(
        &self,
        p: &Principal,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<List<ApiKey>> {
        let (limit, after) = page_params(limit, cursor)?;
        let page = self.store.list_api_keys(&p.user.id, after, limit).await?;
        Ok(List {
            items: page.items.iter().map(api_key_view).collect(),
            next_cursor: page.next_cursor,
        })
    }

    pub async fn delete_api_key(&self, p: &Principal, id: &str) -> ApiResult<()> {
        if self.store.delete_api_key(&p.user.id, id).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("API key"))
        }
    }

    /// `POST /ssh-keys`.
    pub async fn add_ssh_key(
        &self,
        p: &Principal,
        name: String,
        public_key: String,
    ) -> ApiResult<SshKey> {
        let len = name.chars().count();
        if !(1..=64).contains(&len) {
            return Err(ApiError::field("name", "must be 1-64 characters"));
        }
        let parsed = parse_public_key(&public_key).map_err(|reason| {
            ApiError::new(
                ErrorCode::InvalidPublicKey,
                format!("Invalid SSH public key: {reason}."),
            )
        })?;
        let row = SshKeyRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: p.user.id.clone(),
            name,
            public_key: parsed.line,
            key_type: parsed.key_type,
            fingerprint: parsed.fingerprint,
            comment: parsed.comment,
            created_at: self.now(),
            last_used_at: None,
        };
        let mut tx = self.store.begin().await?;
        self.store.lock_user(&mut tx, &p.user.id).await?;
        let count = self.store.count_ssh_keys(&mut *tx, &p.user.id).await?;
        let (limits, _) = self.limits_of(&p.user);
        if count + 1 > limits.max_ssh_keys {
            return Err(ApiError::limit(
                "max_ssh_keys",
                limits.max_ssh_keys,
                count,
                1,
                &p.user.plan,
                "SSH keys on the account",
            ));
        }
        self.store
            .insert_ssh_key(&mut *tx, &row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ApiError::new(
                    ErrorCode::DuplicateKey,
                    "This SSH key is already on your account.",
                )
                .with("fingerprint", row.fingerprint.as_str()),
                e => e.into(),
            })?;
        tx.commit().await.map_err(StoreError::from)?;
        self.keys_changed(&p.user.id).await;
        Ok(ssh_key_view(&row))
    }

    pub async fn list_ssh_keys(
        &self,
        p: &Principal,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> ApiResult<List<SshKey>> {
        let (limit, after) = page_params(limit, cursor)?;
        let page = self.store.list_ssh_keys(&p.user.id, after, limit).await?;
        Ok(List {
            items: page.items.iter().map(ssh_key_view).collect(),
            next_cursor: page.next_cursor,
        })
    }

    pub async fn delete_ssh_key(&self, p: &Principal, id: &str) -> ApiResult<()> {
        if !self.store.delete_ssh_key(&p.user.id, id).await? {
            return Err(ApiError::not_found("SSH key"));
        }
        self.keys_changed(&p.user.id).await;
        Ok(())
    }

    /// Every key of the account, as written into its guests.
    pub async fn guest_keys(&self, user_id: &str) -> ApiResult<Vec<GuestKey>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list_ssh_keys(user_id, after, 200).await?;
            out.extend(page.items.iter().map(|k| GuestKey {
                line: k.public_key.clone(),
                key_type: k.key_type.clone(),
                fingerprint: k.fingerprint.clone(),
                comment: k.comment.clone(),
            }));
            match page
                .next_cursor
                .as_deref()
                .and_then(crate::store::decode_cursor)
            {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl dev@laptop";

    #[test]
    fn parses_ed25519() {
        let k = parse_public_key(ED).expect("valid key");
        assert_eq!(k.key_type, "ssh-ed25519");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert_eq!(k.comment, "dev@laptop");
    }

    #[test]
    fn refuses_garbage_and_private_keys() {
        assert!(parse_public_key("ssh-ed25519 AAAA").is_err());
        assert!(parse_public_key("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").is_err());
        assert!(parse_public_key(&format!("{ED}\n{ED}")).is_err());
        assert!(parse_public_key("").is_err());
    }

    #[test]
    fn preview_shape() {
        assert_eq!(preview("rb_abcdefghijKLMNOPQR"), "rb_...KLMNOPQR");
    }
}
