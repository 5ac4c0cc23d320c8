//! Embeds the guest artefact recipes (`images/` at the repository root) into the crate, so a
//! deployed `rigboxd` builds the kernel and images without the source tree (see `src/image.rs`).
//! Generates `$OUT_DIR/recipes.rs`: one entry per file or symlink, with its path relative to
//! `images/`, its mode and its bytes (`include_bytes!` of the absolute path).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        if meta.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let images = manifest.join("../../images");
    let images = images
        .canonicalize()
        .unwrap_or_else(|e| panic!("cannot find the recipes at {}: {e}", images.display()));
    // A directory makes cargo rescan every file under it (added, removed or changed files).
    println!("cargo:rerun-if-changed={}", images.display());

    let mut files = Vec::new();
    walk(&images, &mut files);
    let mut src = String::from("&[\n");
    for p in files {
        let rel = p.strip_prefix(&images).expect("under images/");
        let rel = rel.to_str().expect("recipe paths are UTF-8");
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).expect("symlink target");
            let target = target.to_str().expect("symlink targets are UTF-8");
            writeln!(
                src,
                "    RecipeFile {{ path: {rel:?}, mode: 0, link: Some({target:?}), data: &[] }},"
            )
            .expect("write to a String");
        } else {
            let mode = meta.permissions().mode();
            let abs = p.to_str().expect("recipe paths are UTF-8");
            writeln!(
                src,
                "    RecipeFile {{ path: {rel:?}, mode: {mode:#o}, link: None, data: include_bytes!({abs:?}) }},"
            )
            .expect("write to a String");
        }
    }
    src.push_str("]\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("recipes.rs");
    std::fs::write(&out, src).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
