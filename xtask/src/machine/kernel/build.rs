//! Configuring and building a kernel source tree for daxtest (`cargo xtask kernel --src DIR`):
//! what a source tree is, the configuration steps of each `--config` choice as command lines,
//! the host packages a build needs; why Kconfig dropped an option of images/kernel.config is
//! `kconfig`'s business.

use super::config::config_value;
use crate::exit;
use crate::recipe::HostFile;
use crate::version::KernelVersion;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the configuration starts from (`--config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Base {
    /// `make x86_64_defconfig`: the smallest build that boots daxtest's guest.
    Minimal,
    /// The config of the pinned Debian kernel of the tree's version: close to `debian:6.1`,
    /// `debian:6.12` or `debian:7.2`, but every driver as a module (thousands: hours on 2 cores).
    Debian,
    /// The tree's existing .config.
    Keep,
}

impl Base {
    /// The name `--config` takes.
    pub fn name(self) -> &'static str {
        match self {
            Base::Minimal => "minimal",
            Base::Debian => "debian",
            Base::Keep => "keep",
        }
    }
}

/// What makes a directory a kernel source tree, for the build and for the config merge.
const TREE_ENTRIES: [&str; 3] = ["Makefile", "arch/x86", "scripts/kconfig/merge_config.sh"];

/// The canonical path of the Linux source tree whose top is `dir`; an input error when `dir` is
/// not the top of one.
pub fn source_tree(dir: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(dir);
    if !path.is_dir() {
        return Err(exit::input(format!(
            "--src {dir}: no such directory (give the top of a Linux source checkout, e.g. \
             ~/linux)"
        )));
    }
    let missing: Vec<&str> =
        TREE_ENTRIES.iter().copied().filter(|e| !path.join(e).exists()).collect();
    if !missing.is_empty() {
        return Err(exit::input(format!(
            "--src {dir}: not a kernel source tree (no {}): give the top of a Linux source \
             checkout, the directory with Makefile, arch/ and scripts/",
            missing.join(", no ")
        )));
    }
    Ok(path.canonicalize()?)
}

/// `VERSION`, `PATCHLEVEL` and `SUBLEVEL` (0 when absent) of the tree's top Makefile: 6.1.192
/// for Debian's linux-source-6.1.
pub fn tree_version(makefile: &str) -> Option<KernelVersion> {
    let value = |key: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    Some(KernelVersion(value("VERSION")?, value("PATCHLEVEL")?, value("SUBLEVEL").unwrap_or(0)))
}

/// One configuration step, run in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Copy this file to the tree's .config.
    CopyConfig(PathBuf),
    /// A program (`make`, or a script of the tree, relative to it) and its arguments.
    Run(Vec<String>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CopyConfig(from) => write!(f, "cp {} .config", from.display()),
            Step::Run(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

fn run(argv: &[&str]) -> Step {
    Step::Run(argv.iter().map(|s| s.to_string()).collect())
}

/// The configuration steps for `base`: start from its config, merge the fragment (`-m`: merge
/// only; the one `make olddefconfig` at the end resolves dependencies), adjust what the base
/// gets wrong for a build outside its own packaging, resolve. `base_config` is the Debian
/// kernel's config file, for [`Base::Debian`].
pub fn config_steps(base: Base, fragment: &Path, base_config: Option<&Path>) -> Vec<Step> {
    let fragment = fragment.to_string_lossy();
    let mut steps = match base {
        Base::Minimal => vec![run(&["make", "x86_64_defconfig"])],
        Base::Debian => {
            vec![Step::CopyConfig(base_config.expect("the Debian config").to_path_buf())]
        }
        Base::Keep => vec![],
    };
    steps.push(run(&["scripts/kconfig/merge_config.sh", "-m", ".config", &fragment]));
    match base {
        // BTF needs pahole and adds minutes to every link; nothing in the guest uses it.
        Base::Minimal => steps.push(run(&["scripts/config", "--disable", "DEBUG_INFO_BTF"])),
        // A distribution config may name the distribution's certificates (Ubuntu's
        // debian/canonical-certs.pem), which a source tree lacks and without which the build
        // stops at certs/. The pinned Debian packages' configs leave them out; clearing them
        // keeps that true whatever config the recipe pins.
        Base::Debian => steps.push(run(&[
            "scripts/config",
            "--set-str",
            "SYSTEM_TRUSTED_KEYS",
            "",
            "--set-str",
            "SYSTEM_REVOCATION_KEYS",
            "",
        ])),
        Base::Keep => {}
    }
    steps.push(run(&["make", "olddefconfig"]));
    steps
}

/// The make targets of the build: modules only where the config has them.
pub fn build_command(jobs: usize, config: &str) -> Vec<String> {
    let mut argv = vec!["make".to_string(), format!("-j{jobs}"), "bzImage".into()];
    if config_value(config, "CONFIG_MODULES") == Some("y") {
        argv.push("modules".into());
    }
    argv
}

fn tool(path: &str, package: &str) -> HostFile {
    HostFile { path: path.into(), package: package.into(), boot: false }
}

/// Host files any kernel build needs (Documentation/process/changes.rst), with their Debian
/// packages.
pub fn build_tools() -> Vec<HostFile> {
    vec![
        tool("/usr/bin/gcc", "gcc"),
        tool("/usr/bin/make", "make"),
        tool("/usr/bin/flex", "flex"),
        tool("/usr/bin/bison", "bison"),
        tool("/usr/bin/bc", "bc"),
        tool("/usr/bin/perl", "perl"),
        // objtool and resolve_btfids link against libelf; module signing and certs need OpenSSL.
        tool("/usr/include/libelf.h", "libelf-dev"),
        tool("/usr/include/openssl/ssl.h", "libssl-dev"),
    ]
}

/// Host files the configured options need on top of [`build_tools`].
pub fn config_tools(config: &str) -> Vec<HostFile> {
    let on = |name: &str| config_value(config, name).is_some_and(|v| v == "y" || v == "m");
    let mut tools = vec![];
    if on("CONFIG_DEBUG_INFO_BTF") {
        tools.push(tool("/usr/bin/pahole", "dwarves"));
    }
    if on("CONFIG_KERNEL_ZSTD") || on("CONFIG_MODULE_COMPRESS_ZSTD") {
        tools.push(tool("/usr/bin/zstd", "zstd"));
    }
    if on("CONFIG_KERNEL_XZ") || on("CONFIG_MODULE_COMPRESS_XZ") {
        tools.push(tool("/usr/bin/xz", "xz-utils"));
    }
    if on("CONFIG_KERNEL_LZ4") {
        tools.push(tool("/usr/bin/lz4", "lz4"));
    }
    if on("CONFIG_IKHEADERS") {
        tools.push(tool("/usr/bin/cpio", "cpio"));
    }
    tools
}

/// `75.2 s`, `41 min 3 s`.
pub fn human(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_base_merges_the_fragment_then_resolves_once() {
        let frag = Path::new("/d/images/kernel.config");
        assert_eq!(
            lines(&config_steps(Base::Minimal, frag, None)),
            [
                "make x86_64_defconfig",
                "scripts/kconfig/merge_config.sh -m .config /d/images/kernel.config",
                "scripts/config --disable DEBUG_INFO_BTF",
                "make olddefconfig",
            ]
        );
        let deb = Path::new("/c/root/boot/config-6.1.0-55-amd64");
        let steps = config_steps(Base::Debian, frag, Some(deb));
        assert_eq!(steps[0], Step::CopyConfig(deb.into()));
        assert_eq!(
            steps[2],
            run(&[
                "scripts/config",
                "--set-str",
                "SYSTEM_TRUSTED_KEYS",
                "",
                "--set-str",
                "SYSTEM_REVOCATION_KEYS",
                ""
            ])
        );
        assert_eq!(
            lines(&config_steps(Base::Keep, frag, None)),
            [
                "scripts/kconfig/merge_config.sh -m .config /d/images/kernel.config",
                "make olddefconfig"
            ]
        );
    }

    #[test]
    fn modules_are_built_only_when_the_config_has_them() {
        assert_eq!(build_command(2, "CONFIG_MODULES=y\n"), ["make", "-j2", "bzImage", "modules"]);
        assert_eq!(build_command(8, "# CONFIG_MODULES is not set\n"), ["make", "-j8", "bzImage"]);
    }

    #[test]
    fn tools_follow_the_config() {
        let paths = |c: &str| -> Vec<String> {
            config_tools(c).iter().map(|t| t.package.clone()).collect()
        };
        assert!(paths("# CONFIG_DEBUG_INFO_BTF is not set\nCONFIG_KERNEL_GZIP=y\n").is_empty());
        assert_eq!(
            paths("CONFIG_DEBUG_INFO_BTF=y\nCONFIG_MODULE_COMPRESS_XZ=y\nCONFIG_KERNEL_ZSTD=y\n"),
            ["dwarves", "zstd", "xz-utils"]
        );
        assert!(build_tools().iter().any(|t| t.package == "libelf-dev"));
    }

    #[test]
    fn a_directory_that_is_no_kernel_tree_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Makefile"), "all:\n").unwrap();
        let d = dir.path().to_string_lossy();
        let e = source_tree(&d).unwrap_err();
        assert!(e.downcast_ref::<exit::InputError>().is_some());
        assert!(
            e.to_string().contains("not a kernel source tree (no arch/x86, no scripts/kconfig/"),
            "{e}"
        );
        let e = source_tree("/nonexistent/linux").unwrap_err().to_string();
        assert!(e.starts_with("--src /nonexistent/linux: no such directory"), "{e}");
        std::fs::create_dir_all(dir.path().join("arch/x86")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts/kconfig")).unwrap();
        std::fs::write(dir.path().join("scripts/kconfig/merge_config.sh"), "").unwrap();
        assert_eq!(source_tree(&d).unwrap(), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn version_of_the_top_makefile() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n";
        assert_eq!(tree_version(mk), Some(KernelVersion(6, 1, 192)));
        assert_eq!(tree_version("VERSION = 7\nPATCHLEVEL = 2\n"), Some(KernelVersion(7, 2, 0)));
        assert_eq!(tree_version("all:\n"), None);
    }
}
