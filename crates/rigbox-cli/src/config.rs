//! The CLI configuration file (`$XDG_CONFIG_HOME/rigbox/config.json`) and the precedence
//! flags > environment > file > built-in default.

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Built-in default API origin.
pub const DEFAULT_API_URL: &str = "http://rigbox.localhost:8080";

/// The file's contents; every key optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Path of the config file.
pub fn path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".config")
        });
    base.join("rigbox").join("config.json")
}

/// Reads the file (missing = empty); warns when others can read it.
pub fn load() -> CliResult<ConfigFile> {
    use std::os::unix::fs::PermissionsExt;
    let p = path();
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(CliError::usage(format!("cannot read {}: {e}", p.display()))),
    };
    if let Ok(meta) = std::fs::metadata(&p) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by other users; run: chmod 600 {}",
                p.display(),
                p.display()
            );
        }
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("invalid config file {}: {e}", p.display())))
}

/// Writes the file with mode 0600 in a 0700 directory.
pub fn save(cfg: &ConfigFile) -> CliResult<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let p = path();
    let dir = p.parent().map(PathBuf::from).unwrap_or_default();
    let io = |e: std::io::Error| CliError::usage(format!("cannot write {}: {e}", p.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let text = serde_json::to_string_pretty(cfg).map_err(|e| CliError::usage(e.to_string()))?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)?;
    Ok(p)
}

/// Normalizes an API origin: trims a trailing `/` and `/api/v1`.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix("/api/v1")
        .unwrap_or(u)
        .trim_end_matches('/')
        .to_owned()
}

/// The effective API origin and key.
#[derive(Debug, Clone)]
pub struct Effective {
    pub api_url: String,
    pub api_key: Option<String>,
}

/// Resolves `flag > RIGBOX_API_URL/RIGBOX_API_KEY > file > default`.
pub fn effective(file: &ConfigFile, flag_url: Option<&str>) -> Effective {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let api_url = flag_url
        .map(str::to_owned)
        .or_else(|| env("RIGBOX_API_URL"))
        .or_else(|| file.api_url.clone())
        .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
    let api_key = env("RIGBOX_API_KEY").or_else(|| file.api_key.clone());
    Effective {
        api_url: normalize_url(&api_url),
        api_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_normalization() {
        assert_eq!(normalize_url("http://h:1/api/v1/"), "http://h:1");
        assert_eq!(normalize_url("http://h:1/"), "http://h:1");
        assert_eq!(normalize_url("https://rigbox.dev"), "https://rigbox.dev");
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file = ConfigFile {
            api_url: Some("http://file:1".into()),
            ..Default::default()
        };
        // RIGBOX_API_URL is not set in unit tests.
        if std::env::var_os("RIGBOX_API_URL").is_none() {
            assert_eq!(
                effective(&file, Some("http://flag:2")).api_url,
                "http://flag:2"
            );
            assert_eq!(effective(&file, None).api_url, "http://file:1");
            assert_eq!(
                effective(&ConfigFile::default(), None).api_url,
                DEFAULT_API_URL
            );
        }
    }
}
