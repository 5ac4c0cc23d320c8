//! Guest artefacts: the kernel and the per-template root filesystem images, built from the
//! recipes in `images/` and cached by a hash of what they are made of.
//!
//! - kernel: `images/kernel/*` → `<cache>/kernel-<hash>/vmlinux`
//! - image: `images/rootfs/**`, the template and the `rig` binary →
//!   `<cache>/image-<template>-<hash>/rootfs.ext4` (the slow debootstrap stage is cached
//!   separately by `images/rootfs/build.sh`, keyed by its own inputs only, so a new `rig` costs
//!   a repack, not a bootstrap).
//!
//! The recipes are embedded in the binary at compile time (`build.rs`), so a deployed `rigboxd`
//! needs no source tree: before a build they are written to `<cache>/recipes/<part>-<hash>/`
//! and run from there. `RIGBOX_IMAGES_DIR` points at a recipe tree on disk instead (for
//! working on the recipes without rebuilding `rigboxd`).
//!
//! Artefacts are built under a temporary name and renamed when complete, under a lock file, so
//! an interrupted or concurrent build never leaves or uses half an artefact. Old artefacts are
//! never removed automatically: workspace disks are overlays on the image they were made from.

use sha2::{Digest, Sha256};
use std::borrow::Cow;
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
    #[error("no {part} recipe in {dir} (RIGBOX_IMAGES_DIR must name a copy of the repository's images/)")]
    NoRecipes { part: &'static str, dir: PathBuf },
    #[error("the rig binary is not at {0} (build it with `cargo build -p rigbox-cli`, or set RIGBOX_RIG_BIN)")]
    NoRig(PathBuf),
    #[error("{step} failed ({status}); last output:\n{tail}")]
    Step {
        step: &'static str,
        /// How the recipe script ended (`exit status: 1`, `signal: 9 (SIGKILL)`).
        status: std::process::ExitStatus,
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

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new step begins (the recipes' `==> …` lines, and the cached/not cached decisions).
    Step(String),
    /// Any other output line of the current step.
    Output(String),
}

/// One file of the recipes, relative to `images/`.
struct RecipeFile {
    path: &'static str,
    /// `st_mode` (0 for symlinks).
    mode: u32,
    link: Option<&'static str>,
    data: &'static [u8],
}

/// The recipes this binary was built with.
static EMBEDDED: &[RecipeFile] = include!(concat!(env!("OUT_DIR"), "/recipes.rs"));

/// A recipe file, embedded or read from `RIGBOX_IMAGES_DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recipe {
    /// Relative to the part's directory (`build.sh`, `overlay/etc/...`).
    path: String,
    mode: u32,
    link: Option<String>,
    data: Cow<'static, [u8]>,
}

/// The parts of `images/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Kernel,
    Rootfs,
}

impl Part {
    fn dir(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::Rootfs => "rootfs",
        }
    }
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

/// `$RIGBOX_IMAGES_DIR` when set: recipes read from disk instead of the embedded ones.
fn recipes_override() -> Option<PathBuf> {
    std::env::var_os("RIGBOX_IMAGES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
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

fn embedded(part: Part) -> Vec<Recipe> {
    let prefix = format!("{}/", part.dir());
    EMBEDDED
        .iter()
        .filter_map(|f| {
            Some(Recipe {
                path: f.path.strip_prefix(&prefix)?.to_owned(),
                mode: f.mode,
                link: f.link.map(str::to_owned),
                data: Cow::Borrowed(f.data),
            })
        })
        .collect()
}

/// Every file and symlink under `dir` (directories only through their contents).
fn read_tree(dir: &Path, rel: &Path, out: &mut Vec<Recipe>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir.join(rel))? {
        let name = entry?.file_name();
        let rel = rel.join(&name);
        let abs = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&abs)?;
        let path = rel.to_string_lossy().into_owned();
        if meta.is_dir() {
            read_tree(dir, &rel, out)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&abs)?;
            out.push(Recipe {
                path,
                mode: 0,
                link: Some(target.to_string_lossy().into_owned()),
                data: Cow::Borrowed(&[]),
            });
        } else {
            out.push(Recipe {
                path,
                mode: meta.permissions().mode(),
                link: None,
                data: Cow::Owned(std::fs::read(&abs)?),
            });
        }
    }
    Ok(())
}

fn from_dir(images: &Path, part: Part) -> Result<Vec<Recipe>, ImageError> {
    let dir = images.join(part.dir());
    if !dir.join("build.sh").is_file() {
        return Err(ImageError::NoRecipes {
            part: part.dir(),
            dir: images.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    read_tree(&dir, Path::new(""), &mut files)?;
    Ok(files)
}

fn recipes(part: Part) -> Result<Vec<Recipe>, ImageError> {
    match recipes_override() {
        Some(dir) => from_dir(&dir, part),
        None => Ok(embedded(part)),
    }
}

/// Hashes a recipe tree: a pre-order walk with sorted names, each directory as `name/`, each
/// file as name, `st_mode` and contents, each symlink as name and target. (The same bytes as
/// hashing the directory on disk recursively, so cache keys do not depend on where the recipes
/// came from.)
fn hash_recipes(h: &mut Sha256, files: &[Recipe]) {
    let mut sorted: Vec<&Recipe> = files.iter().collect();
    sorted.sort_by(|a, b| Path::new(&a.path).cmp(Path::new(&b.path)));
    let mut open: Vec<&str> = Vec::new();
    for f in sorted {
        let mut parts: Vec<&str> = f.path.split('/').filter(|c| !c.is_empty()).collect();
        let Some(name) = parts.pop() else { continue };
        let common = open.iter().zip(&parts).take_while(|(a, b)| a == b).count();
        for d in &parts[common..] {
            h.update(d.as_bytes());
            h.update(b"/");
        }
        open = parts;
        h.update(name.as_bytes());
        match &f.link {
            Some(target) => h.update(target.as_bytes()),
            None => {
                h.update(f.mode.to_le_bytes());
                h.update(&f.data);
            }
        }
    }
}

fn short(h: Sha256) -> String {
    hex::encode(h.finalize())[..16].to_owned()
}

fn kernel_hash_of(files: &[Recipe]) -> String {
    let mut h = Sha256::new();
    hash_recipes(&mut h, files);
    short(h)
}

fn image_hash_of(files: &[Recipe], template: &str, rig: &Path) -> Result<String, ImageError> {
    if !TEMPLATES.contains(&template) {
        return Err(ImageError::UnknownTemplate(template.to_owned()));
    }
    let mut h = Sha256::new();
    hash_recipes(&mut h, files);
    h.update(template.as_bytes());
    let mut f = std::fs::File::open(rig).map_err(|_| ImageError::NoRig(rig.to_path_buf()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(short(h))
}

/// Hash of the kernel recipe (every file of `images/kernel/`).
pub fn kernel_hash() -> Result<String, ImageError> {
    Ok(kernel_hash_of(&recipes(Part::Kernel)?))
}

/// Hash of an image: its recipe (every file of `images/rootfs/`), the template and the `rig`
/// binary it carries.
pub fn image_hash(template: &str, rig: &Path) -> Result<String, ImageError> {
    image_hash_of(&recipes(Part::Rootfs)?, template, rig)
}

/// The cache keys of `template`'s artefacts: (kernel hash, image hash).
pub fn recipe_hash(template: &str, rig: &Path) -> Result<(String, String), ImageError> {
    Ok((kernel_hash()?, image_hash(template, rig)?))
}

fn paths(template: &str, rig: &Path) -> Result<Artefacts, ImageError> {
    let (kh, ih) = recipe_hash(template, rig)?;
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

/// The artefacts of `template` if they are already built (no work done).
pub fn locate(template: &str, rig: &Path) -> Option<Artefacts> {
    let a = paths(template, rig).ok()?;
    (a.kernel.is_file() && a.image.is_file()).then_some(a)
}

/// Writes `files` into `dir` (modes and symlinks included), atomically: a directory that
/// exists is complete, since its name carries the hash of its contents.
fn materialize(files: &[Recipe], dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for f in files {
        let p = tmp.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match &f.link {
            Some(target) => std::os::unix::fs::symlink(target, &p)?,
            None => {
                std::fs::write(&p, &f.data)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
            }
        }
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::rename(&tmp, dir).is_err() && dir.is_dir() {
        // Another build wrote the same recipes first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if dir.is_dir() {
        Ok(())
    } else {
        Err(ImageError::Io(std::io::Error::other(format!(
            "cannot write the recipes to {}",
            dir.display()
        ))))
    }
}

/// The directory to run a part's recipe from: the override, or the embedded recipe written to
/// the cache.
fn recipe_dir(part: Part, hash: &str) -> Result<PathBuf, ImageError> {
    if let Some(dir) = recipes_override() {
        return Ok(dir.join(part.dir()));
    }
    let dir = cache_dir()
        .join("recipes")
        .join(format!("{}-{hash}", part.dir()));
    materialize(&embedded(part), &dir)?;
    Ok(dir)
}

/// Runs a recipe script, streaming its output lines to `progress`.
fn run_step(
    step: &'static str,
    mut cmd: Command,
    progress: &mut dyn FnMut(Progress),
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
            match line.strip_prefix("==> ") {
                Some(step) => progress(Progress::Step(step.to_owned())),
                None => progress(Progress::Output(line.clone())),
            }
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
        status,
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

/// Builds whatever of `template`'s artefacts is missing (everything with `force`, the
/// debootstrap stage included), streaming the recipes' output into `progress`.
pub fn build(
    template: &str,
    rig: &Path,
    force: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Artefacts, ImageError> {
    let a = paths(template, rig)?;
    std::fs::create_dir_all(cache_dir())?;

    let kdir = a.kernel.parent().unwrap_or(Path::new(".")).to_path_buf();
    {
        let _lock = lock(&kdir)?;
        if force || !a.kernel.is_file() {
            progress(Progress::Step(format!(
                "guest kernel {} (about 10 minutes)",
                a.kernel_hash
            )));
            let recipe = recipe_dir(Part::Kernel, &a.kernel_hash)?;
            let tmp = kdir.with_extension("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            let mut cmd = Command::new("bash");
            cmd.arg(recipe.join("build.sh")).arg(&tmp);
            run_step("the kernel build", cmd, progress)?;
            let _ = std::fs::remove_dir_all(&kdir);
            std::fs::rename(&tmp, &kdir)?;
        } else {
            progress(Progress::Step(format!(
                "guest kernel {} cached",
                a.kernel_hash
            )));
        }
    }

    let idir = a.image.parent().unwrap_or(Path::new(".")).to_path_buf();
    let _lock = lock(&idir)?;
    if force || !a.image.is_file() {
        progress(Progress::Step(format!("{template} image {}", a.image_hash)));
        let recipe = recipe_dir(Part::Rootfs, &a.image_hash)?;
        let tmp = idir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = Command::new("bash");
        cmd.arg(recipe.join("build.sh"))
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
        progress(Progress::Step(format!(
            "{template} image {} cached",
            a.image_hash
        )));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_images() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images")
    }

    /// The hash of the original recursive directory walk, which the cache keys of artefacts
    /// built before the recipes were embedded use. Empty directories are skipped: git does not
    /// keep them, so they are not part of a recipe.
    fn hash_dir(h: &mut Sha256, dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("readable")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.is_dir() && std::fs::read_dir(&p).expect("readable").next().is_none() {
                continue;
            }
            h.update(p.file_name().expect("name").as_encoded_bytes());
            if meta.is_dir() {
                h.update(b"/");
                hash_dir(h, &p);
            } else if meta.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(&p)
                        .expect("link")
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else {
                h.update(meta.permissions().mode().to_le_bytes());
                h.update(std::fs::read(&p).expect("readable"));
            }
        }
    }

    #[test]
    fn embedded_recipes_hash_like_the_tree_on_disk() {
        // The build script ran on this very tree, so both must agree (a file added after the
        // compile would show up here as a stale embed).
        for part in [Part::Kernel, Part::Rootfs] {
            let disk = from_dir(&repo_images(), part).expect("recipes on disk");
            let (mut a, mut b, mut c) = (Sha256::new(), Sha256::new(), Sha256::new());
            hash_recipes(&mut a, &embedded(part));
            hash_recipes(&mut b, &disk);
            hash_dir(&mut c, &repo_images().join(part.dir()));
            let (a, b, c) = (short(a), short(b), short(c));
            assert_eq!(a, b, "{part:?}: embedded vs read from disk");
            assert_eq!(a, c, "{part:?}: embedded vs the recursive walk");
        }
        assert!(embedded(Part::Kernel).iter().any(|f| f.path == "build.sh"));
        assert!(embedded(Part::Rootfs)
            .iter()
            .any(|f| f.path == "overlay/etc/ssh/sshd_config"));
    }

    #[test]
    fn materialized_recipes_keep_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = vec![
            Recipe {
                path: "build.sh".into(),
                mode: 0o100755,
                link: None,
                data: Cow::Borrowed(b"#!/bin/sh\necho '==> hello'\necho world\n"),
            },
            Recipe {
                path: "overlay/etc/sudoers.d/developer".into(),
                mode: 0o100440,
                link: None,
                data: Cow::Borrowed(b"developer ALL=(ALL) NOPASSWD:ALL\n"),
            },
            Recipe {
                path: "trim/etc/tmpfiles.d/x.conf".into(),
                mode: 0,
                link: Some("/dev/null".into()),
                data: Cow::Borrowed(&[]),
            },
        ];
        let dir = tmp.path().join("rootfs");
        materialize(&files, &dir).expect("materialize");
        let mut read = from_dir(tmp.path(), Part::Rootfs).expect("read back");
        read.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(read, files);
        let mode = std::fs::metadata(dir.join("build.sh"))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        // And the script runs from there, its lines arriving as steps and output.
        let mut seen = Vec::new();
        let mut cmd = Command::new(dir.join("build.sh"));
        cmd.current_dir(&dir);
        run_step("test", cmd, &mut |p| seen.push(p)).expect("runs");
        assert_eq!(
            seen,
            vec![
                Progress::Step("hello".into()),
                Progress::Output("world".into())
            ]
        );
    }

    #[test]
    fn a_failing_step_reports_its_last_output() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo '==> packing'; echo 'mkfs.ext4: no space' >&2; exit 3",
        ]);
        let err = run_step("the image build", cmd, &mut |_| {}).expect_err("fails");
        let msg = err.to_string();
        assert!(
            msg.starts_with("the image build failed (exit status: 3)"),
            "{msg}"
        );
        assert!(
            msg.contains("==> packing") && msg.contains("mkfs.ext4: no space"),
            "{msg}"
        );
    }

    #[test]
    fn image_hash_depends_on_template_and_rig() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (rig1, rig2) = (tmp.path().join("rig1"), tmp.path().join("rig2"));
        std::fs::write(&rig1, b"one").expect("write");
        std::fs::write(&rig2, b"two").expect("write");
        let files = embedded(Part::Rootfs);
        let base1 = image_hash_of(&files, "base", &rig1).expect("hash");
        assert_eq!(base1, image_hash_of(&files, "base", &rig1).expect("hash"));
        assert_ne!(base1, image_hash_of(&files, "dev", &rig1).expect("hash"));
        assert_ne!(base1, image_hash_of(&files, "base", &rig2).expect("hash"));
        assert_eq!(base1.len(), 16);
        assert!(matches!(
            image_hash_of(&files, "gpu", &rig1),
            Err(ImageError::UnknownTemplate(t)) if t == "gpu"
        ));
        assert!(matches!(
            image_hash_of(&files, "base", &tmp.path().join("missing")),
            Err(ImageError::NoRig(_))
        ));
    }
}
