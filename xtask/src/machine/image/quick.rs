//! The image cache without a build: a quick key over the inputs as read, mapped to the key of the
//! image a build from them gave.

use super::{Image, Manifest};
use crate::machine::kernel::Kernel;
use crate::recipe::Recipe;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A key over what an image is made from, read without running anything: the recipe, the kernel
/// fragment and spec, this program (the code that lays the image out), the agent's sources,
/// manifests and lock file and the toolchain that builds it, and the host files the image
/// copies (any package change shows in dpkg's status file; each listed file by size and time).
/// Equal keys give equal images: the image key (a hash of the built contents) is then looked up,
/// not recomputed.
pub fn quick_key(root: &Path, recipe: &Recipe, kernel_spec: &str) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(&recipe.source);
    h.update(kernel_spec);
    h.update(std::fs::read(root.join(crate::machine::kernel::config::PATH))?);
    stamp(&mut h, &std::env::current_exe()?);
    for dir in ["guest", "proto"] {
        hash_tree(&mut h, root, &root.join(dir))?;
    }
    for f in ["Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        h.update(f);
        h.update(std::fs::read(root.join(f)).unwrap_or_default());
    }
    // The toolchain: cargo's own path names it (rustup's toolchain directory), and its compiler
    // beside it changes when the toolchain is updated in place.
    match std::env::var_os("CARGO") {
        Some(cargo) => {
            let cargo = PathBuf::from(cargo);
            stamp(&mut h, &cargo);
            stamp(&mut h, &cargo.with_file_name("rustc"));
        }
        None => h.update(std::process::Command::new("rustc").arg("-V").output()?.stdout),
    }
    stamp(&mut h, Path::new("/var/lib/dpkg/status"));
    for f in recipe.guest_tools.iter().chain(&recipe.guest_files).chain(&recipe.host_tools) {
        stamp(&mut h, &f.path);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// A file's path, size and modification time (nothing when it is missing).
fn stamp(h: &mut Sha256, path: &Path) {
    h.update(path.as_os_str().as_encoded_bytes());
    if let Ok(m) = std::fs::metadata(path) {
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(format!("{} {:?}", m.len(), mtime));
    }
}

/// Every file under `dir` (but `target/`), by path relative to `root` and content, in order.
fn hash_tree(h: &mut Sha256, root: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "target"))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_tree(h, root, &p)?;
        } else {
            h.update(p.strip_prefix(root).unwrap_or(&p).as_os_str().as_encoded_bytes());
            h.update(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        }
    }
    Ok(())
}

/// `cache/images/quick/<quick key>`: the image key a build from those inputs gave.
fn quick_path(cache: &Path, quick: &str) -> PathBuf {
    cache.join("images/quick").join(quick)
}

pub(super) fn quick_hit(cache: &Path, quick: &str, kernel: &Kernel) -> Option<Image> {
    let key = std::fs::read_to_string(quick_path(cache, quick)).ok()?;
    let dir = cache.join("images").join(key.trim());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    Some(Image { dir, manifest, kernel: kernel.clone(), reused: true })
}

pub(super) fn remember_quick(cache: &Path, quick: &str, key: &str) {
    let path = quick_path(cache, quick);
    // Best effort: without it the next run only takes the slow way to the same image.
    let _ = std::fs::create_dir_all(path.parent().expect("quick/ has a parent"));
    let _ = std::fs::write(&path, key);
}
