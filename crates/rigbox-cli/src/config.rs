//! The configuration file of local mode (`$XDG_CONFIG_HOME/rigbox/config.json`, else
//! `~/.config/rigbox/config.json`) and the precedence
//! flags > `RIGBOX_API_URL`/`RIGBOX_API_KEY` > file > built-in default (cli.md §4).
//!
//! The file holds the credential, so it is written with mode 0600 in a 0700 directory and a
//! group- or world-readable file draws a warning. Workspace mode never reads it.

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Built-in default API origin (packagers may change it with `RIGBOX_DEFAULT_API_URL` at build
/// time).
pub const DEFAULT_API_URL: &str = match option_env!("RIGBOX_DEFAULT_API_URL") {
    Some(u) => u,
    None => "http://rigbox.localhost:8080",
};

/// `credential_source` of a key saved by device login (revoked on logout).
pub const SOURCE_DEVICE: &str = "device_login";
/// `credential_source` of a key pasted or imported by the user.
pub const SOURCE_TOKEN: &str = "token";

/// The file's contents; every key optional, unknown keys ignored.
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

impl ConfigFile {
    /// The file without its credential (what logout leaves behind).
    pub fn without_credential(&self) -> Self {
        Self {
            api_url: self.api_url.clone(),
            output: self.output.clone(),
            ..Self::default()
        }
    }
}

/// Path of the config file from the process environment.
pub fn path() -> PathBuf {
    path_from(
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// `$XDG_CONFIG_HOME/rigbox/config.json` unless that is unset or empty, then
/// `$HOME/.config/rigbox/config.json`.
fn path_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    let base = xdg
        .filter(|v| !v.as_os_str().is_empty())
        .unwrap_or_else(|| home.unwrap_or_default().join(".config"));
    base.join("rigbox").join("config.json")
}

/// Reads the config file (missing = empty).
pub fn load() -> CliResult<ConfigFile> {
    load_from(&path())
}

fn load_from(p: &Path) -> CliResult<ConfigFile> {
    use std::os::unix::fs::PermissionsExt;
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(CliError::io(format!("cannot read {}", p.display()), &e)),
    };
    if let Ok(meta) = std::fs::metadata(p) {
        if meta.permissions().mode() & 0o044 != 0 {
            crate::output::warn(&format!(
                "{} is readable by other users; run: chmod 600 {}",
                p.display(),
                p.display()
            ));
        }
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("the config file {} is not valid: {e}", p.display())))
}

/// Writes the config file; returns its path.
pub fn save(cfg: &ConfigFile) -> CliResult<PathBuf> {
    let p = path();
    save_to(&p, cfg)?;
    Ok(p)
}

/// Writes `cfg` atomically with mode 0600, creating the directory with mode 0700.
fn save_to(p: &Path, cfg: &ConfigFile) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| CliError::io(format!("cannot write {}", p.display()), &e);
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(cfg)
        .map_err(|e| CliError::usage(format!("cannot encode the config: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    // The mode above only applies to new files; a leftover temp file keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, p).map_err(io)?;
    Ok(())
}

/// Normalizes an API origin: trims whitespace, a trailing `/` and a trailing `/api/v1`.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix("/api/v1")
        .unwrap_or(u)
        .trim_end_matches('/')
        .to_owned()
}

/// Where the effective API URL came from (shown by `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// The effective API origin and key of one invocation.
#[derive(Debug, Clone)]
pub struct Effective {
    pub api_url: String,
    pub api_url_source: Source,
    pub api_key: Option<String>,
    pub api_key_source: Source,
}

/// Resolves `flag > RIGBOX_API_URL/RIGBOX_API_KEY > file > default` from the process
/// environment.
pub fn effective(file: &ConfigFile, flag_url: Option<&str>) -> Effective {
    effective_with(file, flag_url, |k| std::env::var(k).ok())
}

/// [`effective`] with an explicit environment (empty variables count as unset).
pub fn effective_with(
    file: &ConfigFile,
    flag_url: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Effective {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (api_url, api_url_source) = if let Some(u) = flag_url {
        (u.to_owned(), Source::Flag)
    } else if let Some(u) = env("RIGBOX_API_URL") {
        (u, Source::Env)
    } else if let Some(u) = &file.api_url {
        (u.clone(), Source::File)
    } else {
        (DEFAULT_API_URL.to_owned(), Source::Default)
    };
    let (api_key, api_key_source) = if let Some(k) = env("RIGBOX_API_KEY") {
        (Some(k.trim().to_owned()), Source::Env)
    } else if let Some(k) = &file.api_key {
        (Some(k.clone()), Source::File)
    } else {
        (None, Source::Default)
    };
    Effective {
        api_url: normalize_url(&api_url),
        api_url_source,
        api_key,
        api_key_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn url_normalization() {
        assert_eq!(normalize_url("http://h:1/api/v1/"), "http://h:1");
        assert_eq!(normalize_url("http://h:1/api/v1"), "http://h:1");
        assert_eq!(normalize_url("http://h:1/"), "http://h:1");
        assert_eq!(normalize_url(" https://rigbox.dev "), "https://rigbox.dev");
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let file = ConfigFile {
            api_url: Some("http://file:1".into()),
            api_key: Some("rb_file".into()),
            ..Default::default()
        };
        let both = env(&[
            ("RIGBOX_API_URL", "http://env:3/api/v1"),
            ("RIGBOX_API_KEY", "rb_env"),
        ]);
        let e = effective_with(&file, Some("http://flag:2"), &both);
        assert_eq!(
            (e.api_url.as_str(), e.api_url_source),
            ("http://flag:2", Source::Flag)
        );
        assert_eq!(e.api_key.as_deref(), Some("rb_env"));

        let e = effective_with(&file, None, &both);
        assert_eq!(
            (e.api_url.as_str(), e.api_url_source),
            ("http://env:3", Source::Env)
        );

        let e = effective_with(&file, None, env(&[("RIGBOX_API_URL", "")]));
        assert_eq!(
            (e.api_url.as_str(), e.api_url_source),
            ("http://file:1", Source::File)
        );
        assert_eq!(
            (e.api_key.as_deref(), e.api_key_source),
            (Some("rb_file"), Source::File)
        );

        let e = effective_with(&ConfigFile::default(), None, env(&[]));
        assert_eq!(
            (e.api_url.as_str(), e.api_url_source),
            (DEFAULT_API_URL, Source::Default)
        );
        assert_eq!(e.api_key, None);
    }

    #[test]
    fn path_uses_xdg_unless_empty() {
        assert_eq!(
            path_from(Some("/x".into()), Some("/home/u".into())),
            PathBuf::from("/x/rigbox/config.json")
        );
        assert_eq!(
            path_from(Some("".into()), Some("/home/u".into())),
            PathBuf::from("/home/u/.config/rigbox/config.json")
        );
        assert_eq!(
            path_from(None, Some("/home/u".into())),
            PathBuf::from("/home/u/.config/rigbox/config.json")
        );
    }

    #[test]
    fn save_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("rigbox").join("config.json");
        let cfg = ConfigFile {
            api_url: Some("http://h:1".into()),
            api_key: Some("rb_x".into()),
            credential_source: Some(SOURCE_TOKEN.into()),
            output: Some("json".into()),
            ..Default::default()
        };
        save_to(&p, &cfg).expect("saved");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().expect("dir")), 0o700);
        assert_eq!(load_from(&p).expect("loads"), cfg);
        let out = cfg.without_credential();
        assert_eq!(out.api_key, None);
        assert_eq!(out.output.as_deref(), Some("json"));
        assert_eq!(out.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(
            load_from(&dir.path().join("missing.json")).expect("missing is empty"),
            ConfigFile::default()
        );
    }
}
