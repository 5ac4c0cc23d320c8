//! Guest artefacts: the kernel and the per-template root filesystem images, built from the
//! recipes in `images/` and cached by a hash of what they are made of.
//!
//! - kernel: `images/kernel/*` → `<cache>/kernel-<hash>/vmlinux`
//! - image: `images/rootfs/**`, the template and the `rig` binary →
//!   `<cache>/image-<template>-<hash>/rootfs.ext4` (the slow debootstrap stage is cached
//!   separately by `images/rootfs/build.sh`, keyed by its own inputs only, so a new `rig` costs
//!   a repack, not a bootstrap).
//!
//! Artefacts are built under a temporary name and renamed when complete, under a lock file, so
//! an interrupted or concurrent build never leaves or uses half an artefact. Old artefacts are
//! never removed automatically: workspace disks are overlays on the image they were made from.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Templates with an image recipe.
pub const TEMPLATES: [&str; 2] = ["base", "dev"];

/// Errors of an artefact build.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown image {0} (known: base, dev)")]
    UnknownTemplate(String),
    #[error(
        "the image recipes are not at {0} (set RIGBOX_IMAGES_DIR to the repository's images/)"
    )]
    NoRecipes(PathBuf),
    #[error("the rig binary is not at {0} (build it with `cargo build -p rigbox-cli`, or set RIGBOX_RIG_BIN)")]
    NoRig(PathBuf),
    #[error("{step} failed (exit {code:?}); last output:\n{tail}")]
    Step {
        step: &'static str,
        code: Option<i32>,
        tail: String,
    },
    #[error("I/O error during the image build")]
    Io(#[from] std::io::Error),
}

/// The artefacts a node boots a template with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artefacts {
    pub kernel: PathBuf,
    pub image: PathBuf,
    pub kernel_hash: String,
    pub image_hash: String,
}

/// `$RIGBOX_CACHE_DIR`, else `~/.cache/rigbox`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RIGBOX_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/rigbox")
}

/// The recipes: `$RIGBOX_IMAGES_DIR`, else the `images/` of the source tree this was built from.
pub fn recipes_dir() -> PathBuf {
    std::env::var_os("RIGBOX_IMAGES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images"))
}

/// The `rig` binary installed into images: `$RIGBOX_RIG_BIN`, else the `rig` beside the
/// running executable.
pub fn rig_binary() -> Result<PathBuf, ImageError> {
    let p = match std::env::var_os("RIGBOX_RIG_BIN").filter(|d| !d.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("rig"))
            .unwrap_or_else(|| PathBuf::from("rig")),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(ImageError::NoRig(p))
    }
}

/// Every file under `dir`, sorted, relative paths and contents into `h`.
fn hash_tree(h: &mut Sha256, dir: &Path) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p)?;
        h.update(
            p.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        if meta.is_dir() {
            h.update(b"/");
            hash_tree(h, &p)?;
        } else if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.update(meta.permissions().mode().to_le_bytes());
            h.update(std::fs::read(&p)?);
        }
    }
    Ok(())
}

fn short(h: Sha256) -> String {
    hex::encode(h.finalize())[..16].to_owned()
}

/// Hash of the kernel recipe.
pub fn kernel_hash() -> Result<String, ImageError> {
    let dir = recipes_dir().join("kernel");
    if !dir.is_dir() {
        return Err(ImageError::NoRecipes(recipes_dir()));
    }
    let mut h = Sha256::new();
    hash_tree(&mut h, &dir)?;
    Ok(short(h))
}

/// Hash of an image: its recipe, the template and the `rig` binary it carries.
pub fn image_hash(template: &str, rig: &Path) -> Result<String, ImageError> {
    if !TEMPLATES.contains(&template) {
        return Err(ImageError::UnknownTemplate(template.to_owned()));
    }
    let dir = recipes_dir().join("rootfs");
    if !dir.is_dir() {
        return Err(ImageError::NoRecipes(recipes_dir()));
    }
    let mut h = Sha256::new();
    hash_tree(&mut h, &dir)?;
    h.update(template.as_bytes());
    let mut f = std::fs::File::open(rig).map_err(|_| ImageError::NoRig(rig.to_path_buf()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(short(h))
}

fn paths(template: &str, rig: &Path) -> Result<Artefacts, ImageError> {
    let (kh, ih) = (kernel_hash()?, image_hash(template, rig)?);
    let cache = cache_dir();
    Ok(Artefacts {
        kernel: cache.join(format!("kernel-{kh}")).join("vmlinux"),
        image: cache
            .join(format!("image-{template}-{ih}"))
            .join("rootfs.ext4"),
        kernel_hash: kh,
        image_hash: ih,
    })
}

/// The artefacts of `template` if they are already built.
pub fn locate(template: &str, rig: &Path) -> Option<Artefacts> {
    let a = paths(template, rig).ok()?;
    (a.kernel.is_file() && a.image.is_file()).then_some(a)
}

/// Runs a recipe script, streaming its output lines to `progress`.
fn run_step(
    step: &'static str,
    mut cmd: Command,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take();
    // stderr on its own thread so neither pipe fills up; its lines are kept for the error.
    let errs = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(e) = stderr {
            for l in BufReader::new(e).lines().map_while(Result::ok) {
                lines.push(l);
            }
        }
        lines
    });
    let mut tail: Vec<String> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&line);
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait()?;
    let err_lines = errs.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    tail.extend(err_lines.into_iter().rev().take(20).rev());
    Err(ImageError::Step {
        step,
        code: status.code(),
        tail: tail.join("\n"),
    })
}

/// Holds an exclusive lock on `<dir>.lock` while alive.
fn lock(dir: &Path) -> Result<std::fs::File, ImageError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.with_extension("lock"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)?;
    Ok(f)
}

/// Builds whatever of `template`'s artefacts is missing (everything with `force`).
pub fn build(
    template: &str,
    rig: &Path,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Artefacts, ImageError> {
    let a = paths(template, rig)?;
    let recipes = recipes_dir();
    std::fs::create_dir_all(cache_dir())?;

    let kdir = a.kernel.parent().unwrap_or(Path::new(".")).to_path_buf();
    let _k = lock(&kdir)?;
    if force || !a.kernel.is_file() {
        progress(&format!(
            "==> guest kernel {} (a few minutes)",
            a.kernel_hash
        ));
        let tmp = kdir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = Command::new("bash");
        cmd.arg(recipes.join("kernel/build.sh")).arg(&tmp);
        run_step("the kernel build", cmd, progress)?;
        let _ = std::fs::remove_dir_all(&kdir);
        std::fs::rename(&tmp, &kdir)?;
    } else {
        progress(&format!("==> guest kernel {} cached", a.kernel_hash));
    }

    let idir = a.image.parent().unwrap_or(Path::new(".")).to_path_buf();
    let _i = lock(&idir)?;
    if force || !a.image.is_file() {
        progress(&format!("==> {template} image {}", a.image_hash));
        let tmp = idir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = Command::new("bash");
        cmd.arg(recipes.join("rootfs/build.sh"))
            .arg(template)
            .arg(&tmp)
            .env("RIG_BIN", rig)
            .env("STAGE_DIR", cache_dir().join("stage"));
        if force {
            cmd.env("FORCE_BOOTSTRAP", "1");
        }
        run_step("the image build", cmd, progress)?;
        let _ = std::fs::remove_dir_all(&idir);
        std::fs::rename(&tmp, &idir)?;
    } else {
        progress(&format!("==> {template} image {} cached", a.image_hash));
    }
    Ok(a)
}
