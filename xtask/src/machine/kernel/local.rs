//! `--kernel PATH`: a kernel the developer built. PATH is either the build tree (with
//! `arch/x86/boot/bzImage`, `.config` and `include/config/kernel.release`; its modules are
//! installed into the cache with `make modules_install`) or an install root in either layout:
//! `boot/vmlinuz-REL`, `boot/config-REL`, `lib/modules/REL/` (as `make install modules_install`
//! with INSTALL_PATH/INSTALL_MOD_PATH writes them), or usr-merged, `usr/lib/modules/REL/` with
//! `vmlinuz` and `config` in it (Debian's 7.x packages). Its configuration is checked against
//! images/kernel.config, for its version, before anything is built or booted.

use crate::exit;
use crate::machine::kernel::config::{self, Fragment};
use crate::machine::kernel::{self, Kernel};
use crate::version::KernelVersion;
use anyhow::Context;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// True when a `--kernel` spec names a path rather than a pinned kernel.
pub fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.starts_with('.')
}

pub fn prepare(
    sh: &Shell,
    cache: &Path,
    spec: &str,
    fragment: &Fragment,
) -> anyhow::Result<Kernel> {
    let path = Path::new(spec);
    if !path.exists() {
        return Err(exit::input(format!(
            "--kernel {spec}: no such file or directory (give a kernel build tree, an install \
             root with boot/ and lib/modules/ or with usr/lib/modules/, or a kernel \
             images/recipe.toml pins, such as debian:6.12)"
        )));
    }
    let path = path.canonicalize()?;
    if path.is_file() {
        return Err(exit::input(format!(
            "--kernel {spec}: a bare kernel image; give its build tree (the directory with \
             arch/x86/boot/bzImage) or the root it was installed into, so that daxtest finds \
             its modules and its .config"
        )));
    }
    let (vmlinuz, release, config, modules_root) = if path.join("arch/x86/boot/bzImage").exists() {
        let release = read_trimmed(&path.join("include/config/kernel.release"))?;
        (path.join("arch/x86/boot/bzImage"), release, path.join(".config"), None)
    } else {
        let found = kernel::find_installed(&path).map_err(|e| {
            exit::input(format!(
                "--kernel {spec}: neither a build tree (no arch/x86/boot/bzImage) nor an install \
                 root: {e}"
            ))
        })?;
        let root = match path.join("lib/modules").join(&found.release).is_dir() {
            true => path.clone(),
            false => usr_merged_root(cache, &path)?,
        };
        (found.vmlinuz, found.release, found.config, Some(root))
    };
    let version = KernelVersion::parse(&release).ok_or_else(|| {
        exit::input(format!("--kernel {spec}: cannot read a kernel version in release {release:?}"))
    })?;
    match std::fs::read_to_string(&config) {
        Ok(text) => {
            let missing = fragment.missing(&text, version);
            if !missing.is_empty() {
                return Err(exit::input(format!(
                    "kernel {spec} lacks options daxtest needs ({}, for {version}): {}. In its \
                     source tree, `cargo xtask kernel --src TREE --config keep` merges them and \
                     rebuilds",
                    config::PATH,
                    missing.join(", ")
                )));
            }
        }
        Err(_) => eprintln!(
            "daxtest: warning: no {} next to the kernel: its options cannot be checked",
            config.display()
        ),
    }
    let digest = crate::names::hash(&std::fs::read(&vmlinuz)?);
    let root = match modules_root {
        Some(r) => r,
        None => install_modules(sh, cache, &path, &release, &digest)?,
    };
    if !root.join(format!("lib/modules/{release}/modules.dep")).exists() {
        cmd!(sh, "depmod -b {root} {release}").run()?;
    }
    Ok(Kernel {
        id: format!("{} ({release}, bzImage {digest})", path.display()),
        root,
        version: upstream_version(&release),
        release,
        vmlinuz,
        config,
    })
}

/// A root for modprobe -d and depmod -b (kmod 30 looks in ROOT/lib/modules) over an install root
/// that has only usr/lib/modules: a directory in the cache whose lib points at its usr/lib, as a
/// usr-merged system's /lib does.
fn usr_merged_root(cache: &Path, install_root: &Path) -> anyhow::Result<PathBuf> {
    let hash = crate::names::hash(install_root.as_os_str().as_encoded_bytes());
    let root = cache.join("kernels").join(format!("usr-merged-{hash}"));
    let lib = root.join("lib");
    let target = install_root.join("usr/lib");
    if std::fs::read_link(&lib).ok().as_deref() != Some(target.as_path()) {
        std::fs::create_dir_all(&root)?;
        let _ = std::fs::remove_file(&lib);
        std::os::unix::fs::symlink(&target, &lib)
            .with_context(|| format!("linking {} to {}", lib.display(), target.display()))?;
    }
    Ok(root)
}

fn read_trimmed(p: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {} (is the tree built?)", p.display()))?
        .trim()
        .to_string())
}

/// `make modules_install` from a build tree into the cache, once per kernel image.
fn install_modules(
    sh: &Shell,
    cache: &Path,
    tree: &Path,
    release: &str,
    digest: &str,
) -> anyhow::Result<PathBuf> {
    let dest = cache.join("kernels").join(format!("local-{release}-{digest}"));
    if dest.join("lib/modules").join(release).join("modules.dep").exists() {
        return Ok(dest);
    }
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let config = std::fs::read_to_string(tree.join(".config")).unwrap_or_default();
    if config.lines().any(|l| l == "CONFIG_MODULES=y") {
        cmd!(sh, "make -s -C {tree} INSTALL_MOD_PATH={tmp} INSTALL_MOD_STRIP=1 modules_install")
            .run()
            .context("installing the tree's modules")?;
    } else {
        std::fs::create_dir_all(tmp.join("lib/modules").join(release))?;
    }
    cmd!(sh, "depmod -b {tmp} {release}").run()?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// `6.13.0-rc3-00012-gabc+` -> `6.13.0`: what scenario kernel conditions compare.
pub fn upstream_version(release: &str) -> String {
    let end = release.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(release.len());
    release[..end].trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("6.13.0-rc3-00012-gabc+"), "6.13.0");
        assert_eq!(upstream_version("6.12.117+deb12-amd64"), "6.12.117");
        assert_eq!(upstream_version("6.1.0-55-amd64"), "6.1.0");
    }

    #[test]
    fn paths_and_names() {
        assert!(is_path("./linux") && is_path("/src/linux") && is_path("linux/"));
        assert!(!is_path("debian:6.1") && !is_path("6.12"));
    }
}
