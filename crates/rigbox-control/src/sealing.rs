//! Secrets at rest: the operator's master key and the sealing of BYOK provider keys with it
//! (bridge-and-ai.md §12). A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag) of
//! ChaCha20-Poly1305 (RFC 8439) under the master key, with a fresh random 12-byte nonce per
//! sealing and associated data naming what the value belongs to (the workspace ID), so a
//! sealed key copied onto another workspace's row does not open.
//!
//! The master key comes from the operator (`master_key` in `rigboxd.toml`) or is generated once
//! into the data dir by `rigboxd`; losing it makes every stored provider key unreadable (users
//! store their keys again). Neither the key nor a plaintext is ever logged: [`MasterKey`]'s
//! `Debug` prints nothing of it.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const VERSION: &str = "v1:";

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be {MASTER_KEY_LEN} bytes written as {} hex digits", MASTER_KEY_LEN * 2)]
    BadKey,
    #[error("the sealed value is not in a format this version writes")]
    Malformed,
    /// Wrong master key, another record's value, or altered bytes.
    #[error("the sealed value does not open with this master key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// The operator's 32-byte master key. `Debug` never shows it; it (de)serializes as hex.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut k = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// Parses 64 hex digits (surrounding whitespace allowed, as in a key file).
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SealError::BadKey)?;
        let k: [u8; MASTER_KEY_LEN] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self(k))
    }

    /// The key as 64 lowercase hex digits (for the key file).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.0.into())
    }

    /// Seals `plaintext`, bound to `aad` (which must be given again to open it).
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{VERSION}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        ))
    }

    /// Opens what [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, SealError> {
        let b64 = sealed.strip_prefix(VERSION).ok_or(SealError::Malformed)?;
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let plain = self
            .cipher()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }
}

impl Serialize for MasterKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for MasterKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MasterKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_its_record() {
        let k = MasterKey::generate();
        let a = k.seal("sk-secret-value", "ws-1").expect("seal");
        let b = k.seal("sk-secret-value", "ws-1").expect("seal");
        assert_ne!(a, b, "a fresh nonce per sealing");
        assert!(a.starts_with("v1:"));
        assert!(!a.contains("sk-secret-value"));
        assert_eq!(k.open(&a, "ws-1").expect("open"), "sk-secret-value");
        // Another record's associated data, another key, altered bytes: nothing opens.
        assert!(matches!(k.open(&a, "ws-2"), Err(SealError::Open)));
        assert!(matches!(
            MasterKey::generate().open(&a, "ws-1"),
            Err(SealError::Open)
        ));
        let mut t = a.clone().into_bytes();
        let last = t.len() - 2;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).expect("ascii");
        assert!(k.open(&t, "ws-1").is_err());
        assert!(matches!(k.open("plain", "ws-1"), Err(SealError::Malformed)));
    }

    #[test]
    fn hex_form_and_redacted_debug() {
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&k.to_hex()).expect("hex"), k);
        assert_eq!(
            MasterKey::from_hex(&format!(" {}\n", k.to_hex())).expect("trim"),
            k
        );
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }
}
