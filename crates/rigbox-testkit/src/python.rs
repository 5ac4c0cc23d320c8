//! Python with the real AI SDKs, for tests that must prove a wire format against the clients
//! users actually run.
//!
//! [`sdk_venv`] creates, once per machine, a virtualenv with pinned [`SDK_REQUIREMENTS`] under
//! `${RIGBOX_CACHE:-$HOME/.cache/rigbox}/venv-ai-sdk-<hash of the pins>` (PyPI is needed the first
//! time only). Concurrent creators build in private temporary directories and publish with an
//! atomic rename; the first one wins and the others discard their copy.
//! [`run_sdk_script`] runs a script with that venv's interpreter.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The SDK pins installed in the venv (changing them creates a new venv).
pub const SDK_REQUIREMENTS: &[&str] = &["openai==3.57.0", "anthropic==2.14.0"];

/// What a Python run produced.
#[derive(Debug)]
pub struct PyOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PyOutput {
    /// Panics with the script's output unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "python failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The last non-empty stdout line parsed as JSON (panics when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "python stdout's last line is not JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// The cache root: `$RIGBOX_CACHE`, else `$HOME/.cache/rigbox`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RIGBOX_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache").join("rigbox")
}

/// The venv with [`SDK_REQUIREMENTS`], created on first use (blocking; minutes the first time).
/// Panics with pip's output when it cannot be created. The base interpreter is `$RIGBOX_PYTHON`
/// or `python3`.
pub fn sdk_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = cache_dir().join(format!("venv-ai-sdk-{}", pins_hash()));
        if !is_complete(&dir) {
            create_venv(&dir);
        }
        dir
    })
    .clone()
}

/// The venv's interpreter.
pub fn sdk_python() -> PathBuf {
    sdk_venv().join("bin").join("python")
}

/// Runs `script` (Python source) with the SDK venv's interpreter and `env` added to the
/// environment. Blocking; see [`run_sdk_script`] inside a Tokio runtime.
pub fn run_sdk_script_blocking(script: &str, env: &[(&str, &str)]) -> PyOutput {
    let out = python_command(script, env)
        .output()
        .expect("run the SDK venv's python");
    PyOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run_sdk_script_blocking`] without blocking the runtime (so a server on the same
/// runtime, such as a `FakeAi`, keeps answering the script).
pub async fn run_sdk_script(script: &str, env: &[(&str, &str)]) -> PyOutput {
    tokio::task::spawn_blocking(sdk_venv)
        .await
        .expect("the venv setup task does not panic");
    let out = tokio::process::Command::from(python_command(script, env))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the SDK venv's python");
    PyOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn python_command(script: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(sdk_python());
    cmd.arg("-c")
        .arg(script)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Loopback must never go through a proxy from the environment.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// FNV-1a of the pins: stable across Rust versions, unlike `DefaultHasher`.
fn pins_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SDK_REQUIREMENTS.join("\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

const COMPLETE_MARKER: &str = ".rigbox-complete";

fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).exists() && dir.join("bin").join("python").exists()
}

fn create_venv(dir: &Path) {
    let parent = dir.parent().expect("the venv path has a parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let base = std::env::var_os("RIGBOX_PYTHON").unwrap_or_else(|| "python3".into());
    let built = run(
        Command::new(&base).args(["-m", "venv"]).arg(&tmp),
        "python3 -m venv",
    )
    .and_then(|()| {
        run(
            Command::new(tmp.join("bin").join("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .args(SDK_REQUIREMENTS),
            "pip install",
        )
    })
    .and_then(|()| {
        std::fs::write(tmp.join(COMPLETE_MARKER), SDK_REQUIREMENTS.join("\n"))
            .map_err(|e| format!("write the venv marker: {e}"))
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!("creating the SDK venv failed: {e}");
    }
    // The interpreter finds its prefix from `pyvenv.cfg` beside it, so a renamed venv works
    // (pip's own script shebangs would not, and are never used).
    if std::fs::rename(&tmp, dir).is_ok() {
        return;
    }
    if !is_complete(dir) {
        // An incomplete leftover (not a concurrent winner): replace it.
        let _ = std::fs::remove_dir_all(dir);
        if std::fs::rename(&tmp, dir).is_ok() {
            return;
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        is_complete(dir),
        "could not publish the SDK venv at {}",
        dir.display()
    );
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
