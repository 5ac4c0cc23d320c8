//! Typed identifiers. Resource IDs are a prefix plus 8 characters of `[a-z0-9]`
//! (`ws-ctbxi8lb`, `usr-…`); keys, sessions and request IDs are UUIDs.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Eight random characters of `[a-z0-9]`.
pub fn random_suffix() -> String {
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// True when `s` is `prefix` followed by exactly 8 characters of `[a-z0-9]`.
pub fn has_id_shape(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every ID of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random ID.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
            }

            /// Parses an ID, refusing anything that does not have the exact shape.
            pub fn parse(s: &str) -> Option<Self> {
                has_id_shape(s, $prefix).then(|| Self(s.to_owned()))
            }

            /// The 8-character part after the prefix.
            pub fn suffix(&self) -> &str {
                &self.0[$prefix.len()..]
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("not a valid {} ID: {s:?}", $prefix))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A workspace: `ws-` + 8 characters.
    WorkspaceId,
    "ws-"
);
prefixed_id!(
    /// A user: `usr-` + 8 characters.
    UserId,
    "usr-"
);
prefixed_id!(
    /// An app: `app-` + 8 characters.
    AppId,
    "app-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let id = WorkspaceId::generate();
        assert!(WorkspaceId::parse(id.as_str()).is_some());
        assert_eq!(id.suffix().len(), 8);
        assert!(WorkspaceId::parse("ws-ABCDEFGH").is_none());
        assert!(WorkspaceId::parse("ws-abc").is_none());
        assert!(WorkspaceId::parse("usr-abcdefgh").is_none());
        assert!(UserId::parse("usr-abcd1234").is_some());
    }
}
