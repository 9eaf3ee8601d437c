//! The kernel tree the mutants patch: Debian's linux-source package pinned in
//! `mutants/source.toml`, fetched with `apt-get download` and unpacked once into daxtest's cache
//! (or any tree given with `--src`); one mutant applied at a time, and the tree given back.
//!
//! Applying saves each file the patch changes under `TREE/.daxtest-mutant/` first; restoring
//! copies them back (a new mtime, so make rebuilds them) and removes it. A run that was killed
//! with a mutant applied leaves that directory, and the next run restores the tree before
//! anything else.

use super::Mutant;
use crate::machine::apt::Apt;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

pub const PIN_PATH: &str = "mutants/source.toml";
/// Where an applied mutant's saved files and name are, in the tree.
const STASH: &str = ".daxtest-mutant";

/// The pinned source package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub package: String,
    pub version: String,
}

impl Pin {
    pub fn load(root: &Path) -> anyhow::Result<Pin> {
        let path = root.join(PIN_PATH);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| crate::exit::input(format!("{PIN_PATH}: {e}")))
    }
}

/// The unpacked tree of `pin` in `cache/sources/`, fetched and unpacked the first time.
pub fn fetch(sh: &Shell, cache: &Path, pin: &Pin) -> anyhow::Result<PathBuf> {
    let dir = cache.join("sources").join(format!("{}_{}", pin.package, pin.version));
    let tree = dir.join(&pin.package);
    if dir.join(".unpacked").exists() {
        return Ok(tree);
    }
    eprintln!(
        "daxtest: fetching {}={} from the host's apt sources and unpacking it into {}",
        pin.package,
        pin.version,
        dir.display()
    );
    let tmp = dir.with_file_name(format!(".tmp-{}-{}", pin.package, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    download(sh, &tmp, pin)?;
    let deb = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let unpacked = tmp.join("deb");
    cmd!(sh, "dpkg-deb -x {deb} {unpacked}").run()?;
    // linux-source-X.Y ships the tree as usr/src/linux-source-X.Y.tar.xz.
    let tarball = unpacked.join("usr/src").join(format!("{}.tar.xz", pin.package));
    if !tarball.is_file() {
        bail!("{} has no {}", deb.display(), tarball.display());
    }
    cmd!(sh, "tar -xJf {tarball} -C {tmp}").run()?;
    std::fs::remove_dir_all(&unpacked)?;
    std::fs::remove_file(&deb)?;
    if !tmp.join(&pin.package).join("Makefile").is_file() {
        bail!("{}'s tarball has no {}/Makefile", pin.package, pin.package);
    }
    std::fs::write(tmp.join(".unpacked"), "")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(tree)
}

/// `apt-get download PACKAGE=VERSION` from the host's sources, their lists brought up to date
/// once when that fails.
fn download(sh: &Shell, dest: &Path, pin: &Pin) -> anyhow::Result<()> {
    let apt = Apt::Host;
    let wanted = [format!("{}={}", pin.package, pin.version)];
    if apt.download(sh, dest, &wanted).is_ok() {
        return Ok(());
    }
    if apt.can_update() {
        apt.update(sh)?;
        if apt.download(sh, dest, &wanted).is_ok() {
            return Ok(());
        }
    }
    Err(crate::exit::input(format!(
        "apt-get download {} failed: if `apt-cache madison {}` does not list {}, pin a version it \
         lists in {PIN_PATH} (or give a tree with --src DIR)",
        wanted[0], pin.package, pin.version
    )))
}

/// The mutant applied to the tree, if one is (a run ended before restoring it).
pub fn applied(tree: &Path) -> Option<String> {
    std::fs::read_to_string(tree.join(STASH).join("name")).ok().map(|s| s.trim().to_string())
}

/// Whether `patch` would apply the mutant cleanly, changing nothing; why not, in patch's words.
pub fn check_applies(sh: &Shell, tree: &Path, mutant: &Mutant) -> Result<(), String> {
    run_patch(sh, tree, mutant, &["--dry-run"])
        .map_err(|why| format!("does not apply to {}: {why}", tree.display()))
}

/// `patch -p1` of the mutant in `tree` (with `extra` options), once: no backup or reject files
/// left behind; on failure, what patch said, on one line.
fn run_patch(sh: &Shell, tree: &Path, mutant: &Mutant, extra: &[&str]) -> Result<(), String> {
    let patch = abs(&mutant.path, sh);
    let out = cmd!(
        sh,
        "patch -p1 {extra...} --batch --forward --no-backup-if-mismatch --reject-file=- -d {tree} -i {patch}"
    )
    .quiet()
    .ignore_status()
    .output()
    .map_err(|e| format!("running patch: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stdout).trim().replace('\n', " | ")),
    }
}

/// Saves the files the mutant changes and applies it. The tree must have no mutant applied.
pub fn apply(sh: &Shell, tree: &Path, mutant: &Mutant) -> anyhow::Result<()> {
    if let Some(other) = applied(tree) {
        bail!("{} has mutant {other} applied: restore it first", tree.display());
    }
    let stash = tree.join(STASH);
    for file in &mutant.files {
        let (from, to) = (tree.join(file), stash.join("orig").join(file));
        std::fs::create_dir_all(to.parent().expect("a file in the stash has a parent"))?;
        std::fs::copy(&from, &to).with_context(|| format!("saving {}", from.display()))?;
    }
    std::fs::write(stash.join("name"), &mutant.name)?;
    if let Err(why) = run_patch(sh, tree, mutant, &[]) {
        restore(tree)?;
        bail!("{} does not apply to {}: {why}", mutant.path.display(), tree.display());
    }
    Ok(())
}

/// Gives the tree back its saved files, if a mutant is applied; returns the mutant's name.
pub fn restore(tree: &Path) -> anyhow::Result<Option<String>> {
    let stash = tree.join(STASH);
    let Some(name) = applied(tree) else {
        let _ = std::fs::remove_dir_all(&stash);
        return Ok(None);
    };
    let orig = stash.join("orig");
    let mut pending = vec![orig.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let to = tree.join(path.strip_prefix(&orig).expect("under the stash"));
            std::fs::copy(&path, &to).with_context(|| format!("restoring {}", to.display()))?;
        }
    }
    std::fs::remove_dir_all(&stash)?;
    Ok(Some(name))
}

/// A patch's path as patch -d sees it: absolute.
fn abs(path: &Path, sh: &Shell) -> PathBuf {
    match path.is_absolute() {
        true => path.to_path_buf(),
        false => sh.current_dir().join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_then_restore_gives_the_tree_back_and_a_stale_mutant_is_found() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux");
        std::fs::create_dir_all(tree.join("fs")).unwrap();
        let original = "int a;\nint b;\nint c;\n";
        std::fs::write(tree.join("fs/dax.c"), original).unwrap();
        let patch = dir.path().join("m.patch");
        let text = "Behaviour: b is gone\nSource: fs/dax.c\nCases: x\n\n--- a/fs/dax.c\n+++ \
                    b/fs/dax.c\n@@ -1,3 +1,2 @@\n int a;\n-int b;\n int c;\n";
        std::fs::write(&patch, text).unwrap();
        let m = super::super::parse(&patch, text).unwrap();
        check_applies(&sh, &tree, &m).unwrap();
        apply(&sh, &tree, &m).unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("fs/dax.c")).unwrap(), "int a;\nint c;\n");
        assert_eq!(applied(&tree).as_deref(), Some("m"));
        // Applied twice is refused; the dry run says it would not apply either.
        assert!(apply(&sh, &tree, &m).unwrap_err().to_string().contains("has mutant m applied"));
        assert_eq!(restore(&tree).unwrap().as_deref(), Some("m"));
        assert_eq!(std::fs::read_to_string(tree.join("fs/dax.c")).unwrap(), original);
        assert_eq!(applied(&tree), None);
        assert_eq!(restore(&tree).unwrap(), None);
        // A patch for another tree does not apply, and leaves nothing behind.
        std::fs::write(tree.join("fs/dax.c"), "int z;\n").unwrap();
        let e = check_applies(&sh, &tree, &m).unwrap_err();
        assert!(e.starts_with("does not apply to"), "{e}");
        assert!(apply(&sh, &tree, &m).is_err());
        assert_eq!(std::fs::read_to_string(tree.join("fs/dax.c")).unwrap(), "int z;\n");
        assert_eq!(applied(&tree), None);
    }
}
