//! Resource names: slugification and validation rules from the spec.

/// Slugifies a submitted workspace name: lowercase, every run of characters outside `[a-z0-9]`
/// becomes one `-`, leading and trailing `-` removed.
pub fn slugify(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut pending_dash = false;
    for c in input.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    out
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must be 2-40 characters of [a-z0-9-] after slugification, got {0:?}")]
    Length(String),
    #[error("name must be 2-63 characters of [a-z0-9-] after slugification, got {0:?}")]
    AppLength(String),
    #[error("name {0:?} looks like an ID")]
    LooksLikeId(String),
}

/// Slugifies and validates a workspace name.
pub fn workspace_name(input: &str) -> Result<String, NameError> {
    let slug = slugify(input);
    if !(2..=40).contains(&slug.len()) {
        return Err(NameError::Length(slug));
    }
    if crate::ids::has_id_shape(&slug, "ws-") {
        return Err(NameError::LooksLikeId(slug));
    }
    Ok(slug)
}

/// Slugifies and validates an app name (2–63 characters: one DNS label).
pub fn app_name(input: &str) -> Result<String, NameError> {
    let slug = slugify(input);
    if !(2..=63).contains(&slug.len()) {
        return Err(NameError::AppLength(slug));
    }
    if crate::ids::has_id_shape(&slug, "app-") {
        return Err(NameError::LooksLikeId(slug));
    }
    Ok(slug)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`A-Za-z0-9-._~`): safe as
/// a path segment or a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Region names: 2–32 characters of `[a-z0-9-]`.
pub fn is_region_name(s: &str) -> bool {
    (2..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Env var keys: `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
pub fn is_env_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("My Project!!"), "my-project");
        assert_eq!(slugify("--a__b--"), "a-b");
        assert_eq!(slugify("ÄBC"), "bc");
        assert_eq!(workspace_name("My Project").as_deref(), Ok("my-project"));
        assert!(workspace_name("a").is_err());
        assert!(workspace_name("ws-abcdefgh").is_err());
        assert!(workspace_name("WS-ABCDEFGH").is_err());
        assert!(workspace_name(&"a".repeat(41)).is_err());
        assert!(is_env_key("_A1"));
        assert!(!is_env_key("1A"));
        assert!(!is_env_key("A-B"));
    }
}
