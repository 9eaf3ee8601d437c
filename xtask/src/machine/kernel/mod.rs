//! Guest kernels: fetches a pinned Debian kernel package, unpacks it, finds its files in either
//! layout of an installed kernel, and resolves the modules the guest must load, with their
//! dependencies, from the package's own metadata.

pub mod build;
pub mod config;
pub mod kconfig;
pub mod local;
mod modules;

pub use modules::{resolve_modules, Chain};

use crate::machine::apt::{self, Apt};
use crate::recipe::{DebianKernel, Recipe};
use crate::version::KernelVersion;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// A kernel ready to boot: its image and an unpacked module tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Stable identity for cache keys and reports: `debian:6.12 (PACKAGE=VERSION)`.
    pub id: String,
    /// A directory whose `lib/modules/RELEASE` is the kernel's module tree, as `modprobe -d` and
    /// `depmod -b` (kmod 30) want it.
    pub root: PathBuf,
    /// `uname -r` of the kernel, the directory name under lib/modules.
    pub release: String,
    /// Upstream version (Debian's 6.1.0-55 package is 6.1.192): what scenario conditions compare.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// The kernel's .config (it may be missing next to a self-built kernel).
    pub config: PathBuf,
}

impl Kernel {
    /// The upstream version as scenario conditions and images/kernel.config compare it.
    pub fn upstream(&self) -> anyhow::Result<KernelVersion> {
        KernelVersion::parse(&self.version)
            .with_context(|| format!("cannot read a kernel version in {:?}", self.version))
    }
}

/// Where an installed kernel's files are. Two layouts: Debian's packages up to 6.x and `make
/// install modules_install` put `boot/vmlinuz-REL`, `boot/config-REL` and `lib/modules/REL/`;
/// Debian's usr-merged 7.x packages put `vmlinuz` and `config` into the module directory,
/// `usr/lib/modules/REL/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The config found, else where it belongs beside the kernel image.
    pub config: PathBuf,
}

/// The one kernel installed under `root`, in either layout; why not, as a sentence to quote.
pub fn find_installed(root: &Path) -> Result<Installed, String> {
    // (release, its directory, that directory's real path): a release counts once, also where
    // lib is a symlink to usr/lib.
    let mut found: Vec<(String, PathBuf, PathBuf)> = vec![];
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(entries) = std::fs::read_dir(root.join(base)) else { continue };
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            let real = e.path().canonicalize().unwrap_or_else(|_| e.path());
            if !found.iter().any(|(_, _, r)| *r == real) {
                found.push((e.file_name().to_string_lossy().into_owned(), e.path(), real));
            }
        }
    }
    let [(release, modules, _)] = found.as_slice() else {
        let names: Vec<&str> = found.iter().map(|(r, _, _)| r.as_str()).collect();
        return Err(format!(
            "expected exactly one kernel release under lib/modules/ or usr/lib/modules/, found \
             {names:?}"
        ));
    };
    let in_modules = |file: &str| modules.join(file);
    let in_boot = |file: &str| root.join("boot").join(format!("{file}-{release}"));
    let first_file = |paths: [PathBuf; 2]| paths.into_iter().find(|p| p.is_file());
    let vmlinuz = first_file([in_modules("vmlinuz"), in_boot("vmlinuz")]).ok_or_else(|| {
        format!(
            "no kernel image for {release}: neither {} nor {}",
            in_boot("vmlinuz").display(),
            in_modules("vmlinuz").display()
        )
    })?;
    let config = first_file([in_modules("config"), in_boot("config")]).unwrap_or_else(|| {
        match vmlinuz.starts_with(modules) {
            true => in_modules("config"),
            false => in_boot("config"),
        }
    });
    Ok(Installed { release: release.clone(), vmlinuz, config })
}

/// Looks a `--kernel` spec up in the recipe: `debian:NAME` (or just `NAME`).
pub fn debian_spec<'r>(
    spec: &str,
    recipe: &'r Recipe,
) -> anyhow::Result<(String, &'r DebianKernel)> {
    let name = spec.strip_prefix("debian:").unwrap_or(spec);
    match recipe.kernels.debian.get(name) {
        Some(k) => Ok((format!("debian:{name}"), k)),
        None => Err(crate::exit::input(format!(
            "unknown kernel {spec:?}: images/recipe.toml pins {} (or give a path to a kernel \
             build tree or install root)",
            recipe
                .kernels
                .debian
                .keys()
                .map(|k| format!("debian:{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Downloads and unpacks the package once; later calls reuse the unpacked tree, also once the
/// archive no longer has the package.
pub fn fetch_debian(
    sh: &Shell,
    cache: &Path,
    name: &str,
    pkg: &DebianKernel,
) -> anyhow::Result<Kernel> {
    let dir = cache.join("kernels").join(format!("{}_{}", pkg.package, pkg.version));
    let id = format!("{name} ({}={})", pkg.package, pkg.version);
    if !dir.join("release").exists() {
        let apt = match &pkg.apt_source {
            Some(line) => Apt::private(cache, line),
            None => Apt::Host,
        };
        unpack(sh, &apt, &dir, name, pkg)?;
    }
    let root = dir.join("root");
    let found = find_installed(&root)
        .map_err(|e| anyhow::anyhow!("{}: {e}: remove {} and retry", pkg.package, dir.display()))?;
    Ok(Kernel {
        id,
        root,
        release: found.release,
        version: pkg.version.clone(),
        vmlinuz: found.vmlinuz,
        config: found.config,
    })
}

fn unpack(sh: &Shell, apt: &Apt, dir: &Path, name: &str, pkg: &DebianKernel) -> anyhow::Result<()> {
    eprintln!(
        "daxtest: fetching kernel package {}={} from {}",
        pkg.package,
        pkg.version,
        apt.describe()
    );
    let tmp = dir.with_file_name(format!(
        ".tmp-{}-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    download_pinned(sh, apt, &tmp, name, pkg)?;
    let image = debs(&tmp)?.into_iter().next().context("apt-get download produced no .deb")?;
    // Debian's 7.x linux-image package is a meta package: the kernel, its modules and the rest
    // are separate packages of the same version, which it depends on exactly.
    let depends = cmd!(sh, "dpkg-deb -f {image} Depends").quiet().read()?;
    let parts: Vec<String> = apt::exact_dependencies(&depends, &pkg.version)
        .into_iter()
        .map(|p| format!("{p}={}", pkg.version))
        .collect();
    if !parts.is_empty() {
        eprintln!("daxtest: {} is split into {}", pkg.package, parts.join(" "));
        apt.download(sh, &tmp, &parts)?;
    }
    let root = tmp.join("root");
    for deb in debs(&tmp)? {
        cmd!(sh, "dpkg-deb -x {deb} {root}").run()?;
        std::fs::remove_file(&deb)?;
    }
    // The usr-merged packages have only usr/lib/modules; modprobe -d and depmod -b look under
    // ROOT/lib/modules, which a usr-merged system's /lib -> usr/lib symlink provides.
    if !root.join("lib").exists() && root.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    }
    let found = find_installed(&root).map_err(|e| anyhow::anyhow!("{}: {e}", pkg.package))?;
    let release = &found.release;
    // Debian generates modules.dep at install time; the package does not ship it.
    cmd!(sh, "depmod -b {root} {release}").run()?;
    std::fs::write(tmp.join("release"), release)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

/// The .deb files in `dir`, sorted.
fn debs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// `apt-get download PACKAGE=VERSION`, with the source's lists brought up to date when that
/// fails; a version the source no longer has is an input error that names what it has now.
fn download_pinned(
    sh: &Shell,
    apt: &Apt,
    dest: &Path,
    name: &str,
    pkg: &DebianKernel,
) -> anyhow::Result<()> {
    let wanted = [format!("{}={}", pkg.package, pkg.version)];
    if !apt.has_lists() {
        apt.update(sh)?;
    }
    if apt.download(sh, dest, &wanted).is_ok() {
        return Ok(());
    }
    if !apt.can_update() {
        bail!(
            "apt-get download {} failed. If apt's package lists are old, run `sudo apt-get \
             update` and retry; if `apt-cache madison {}` does not list version {}, pin one it \
             lists in images/recipe.toml",
            wanted[0],
            pkg.package,
            pkg.version
        );
    }
    apt.update(sh)?;
    if apt.download(sh, dest, &wanted).is_ok() {
        return Ok(());
    }
    let series = name.strip_prefix("debian:").unwrap_or(name);
    let wanted_flavour = flavour(&pkg.package).unwrap_or("amd64");
    let same_series: Vec<(String, String)> = apt
        .versions(sh, &format!("linux-image-{series}."))
        .into_iter()
        .filter(|(p, _)| flavour(p) == Some(wanted_flavour))
        .collect();
    // The flavour's meta package (linux-image-amd64) depends on the source's current kernel.
    let meta = format!("linux-image-{wanted_flavour}");
    let current = apt::pinned_dependencies(&apt.depends(sh, &meta))
        .into_iter()
        .find(|(p, _)| p.starts_with("linux-image-"));
    Err(crate::exit::input(gone_message(name, pkg, &apt.describe(), &same_series, current)))
}

/// A kernel package's flavour: `amd64` for linux-image-7.2.13+deb14-amd64 and
/// linux-image-6.1.0-55-amd64, `cloud-amd64`, `rt-amd64`, `amd64-dbg` for the others.
pub fn flavour(package: &str) -> Option<&str> {
    let rest = package.strip_prefix("linux-image-")?;
    // The release ends before the first dash-separated word that starts with a letter.
    let start = rest
        .match_indices('-')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].starts_with(|c: char| c.is_ascii_alphabetic()))?;
    Some(&rest[start..])
}

/// The error for a pinned package the source no longer has: what it has now (`same_series`, the
/// same kernel series and flavour; else `current`, the flavour's newest kernel) and how to pin it.
pub fn gone_message(
    name: &str,
    pkg: &DebianKernel,
    source: &str,
    same_series: &[(String, String)],
    current: Option<(String, String)>,
) -> String {
    let key = name.strip_prefix("debian:").unwrap_or(name);
    let newest = same_series
        .iter()
        .max_by_key(|(p, v)| (KernelVersion::parse(v), p.clone(), v.clone()))
        .cloned();
    let (now, key, (p, v)) = match (newest, current) {
        (Some(pv), _) => (format!("It has {} {} now", pv.0, pv.1), key.to_string(), pv),
        (None, Some(pv)) => {
            let series = KernelVersion::parse(pv.0.trim_start_matches("linux-image-"))
                .map_or(key.to_string(), |k| format!("{}.{}", k.0, k.1));
            (format!("It has no {key} kernel now; its newest is {} {}", pv.0, pv.1), series, pv)
        }
        (None, None) => {
            return format!(
                "{name}: {}={} is not in {source}, nor is any other {key} kernel: pin a kernel \
                 package it has in images/recipe.toml",
                pkg.package, pkg.version
            )
        }
    };
    format!(
        "{name}: {}={} is not in {source} any more (an archive such as unstable keeps only a \
         package's newest upload). {now}: pin it in images/recipe.toml:\n  \
         [kernels.debian.\"{key}\"]\n  package = \"{p}\"\n  version = \"{v}\"\n\
         A kernel fetched before stays in target/daxtest/cache/kernels/ and keeps working where \
         it was fetched",
        pkg.package, pkg.version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `files` (paths relative to a fresh directory) and returns the directory.
    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            match f.ends_with('/') {
                true => std::fs::create_dir_all(&p).unwrap(),
                false => std::fs::write(&p, "x").unwrap(),
            }
        }
        dir
    }

    #[test]
    fn both_install_layouts_are_found() {
        const R6: &str = "6.12.117+deb12-amd64";
        const R7: &str = "7.2.13+deb14-amd64";
        let classic = tree(&[
            &format!("boot/vmlinuz-{R6}"),
            &format!("boot/config-{R6}"),
            &format!("lib/modules/{R6}/kernel/fs/xfs/xfs.ko.xz"),
        ]);
        let c = classic.path();
        assert_eq!(
            find_installed(c).unwrap(),
            Installed {
                release: R6.into(),
                vmlinuz: c.join(format!("boot/vmlinuz-{R6}")),
                config: c.join(format!("boot/config-{R6}")),
            }
        );
        // No config: the warning names where it belongs, beside the image.
        std::fs::remove_file(c.join(format!("boot/config-{R6}"))).unwrap();
        assert_eq!(find_installed(c).unwrap().config, c.join(format!("boot/config-{R6}")));
        // Debian's 7.x split packages, unpacked: everything under usr/lib/modules/REL.
        let merged = tree(&[
            &format!("usr/lib/modules/{R7}/vmlinuz"),
            &format!("usr/lib/modules/{R7}/config"),
            &format!("usr/lib/modules/{R7}/kernel/fs/xfs/xfs.ko.xz"),
        ]);
        let m = merged.path();
        let modules = m.join("usr/lib/modules").join(R7);
        let want = Installed {
            release: R7.into(),
            vmlinuz: modules.join("vmlinuz"),
            config: modules.join("config"),
        };
        assert_eq!(find_installed(m).unwrap(), want);
        // With lib -> usr/lib (a usr-merged system, or daxtest's unpacked package) the release
        // counts once, found through lib/modules.
        std::os::unix::fs::symlink("usr/lib", m.join("lib")).unwrap();
        let through_lib = find_installed(m).unwrap();
        assert_eq!(through_lib.release, R7);
        assert_eq!(through_lib.vmlinuz, m.join("lib/modules").join(R7).join("vmlinuz"));
    }

    #[test]
    fn an_install_root_without_one_kernel_is_refused_saying_why() {
        let none = tree(&["boot/"]);
        let e = find_installed(none.path()).unwrap_err();
        assert!(e.starts_with("expected exactly one kernel release under lib/modules/"), "{e}");
        let two = tree(&["lib/modules/6.1.0-55-amd64/", "usr/lib/modules/7.2.13+deb14-amd64/"]);
        let e = find_installed(two.path()).unwrap_err();
        assert!(e.contains("found [\"6.1.0-55-amd64\", \"7.2.13+deb14-amd64\"]"), "{e}");
        let no_image = tree(&["usr/lib/modules/7.2.13+deb14-amd64/config"]);
        let e = find_installed(no_image.path()).unwrap_err();
        assert!(e.starts_with("no kernel image for 7.2.13+deb14-amd64: neither "), "{e}");
        assert!(e.ends_with("usr/lib/modules/7.2.13+deb14-amd64/vmlinuz"), "{e}");
    }

    #[test]
    fn flavours() {
        assert_eq!(flavour("linux-image-7.2.13+deb14-amd64"), Some("amd64"));
        assert_eq!(flavour("linux-image-6.1.0-55-amd64"), Some("amd64"));
        assert_eq!(flavour("linux-image-7.2.13+deb14-cloud-amd64"), Some("cloud-amd64"));
        assert_eq!(flavour("linux-image-7.2.13+deb14-amd64-dbg"), Some("amd64-dbg"));
        assert_eq!(flavour("linux-image-amd64"), None);
        assert_eq!(flavour("linux-binary-7.2.13+deb14-amd64"), None);
    }

    fn pin(package: &str, version: &str) -> DebianKernel {
        DebianKernel { package: package.into(), version: version.into(), apt_source: None }
    }

    #[test]
    fn a_pin_the_source_dropped_names_what_it_has_and_how_to_pin_it() {
        let pkg = pin("linux-image-7.2.13+deb14-amd64", "7.2.13-1");
        let src = "`deb http://deb.debian.org/debian unstable main`";
        let newer = [
            ("linux-image-7.2.14+deb14-amd64".to_string(), "7.2.14-1".to_string()),
            ("linux-image-7.2.15+deb14-amd64".to_string(), "7.2.15-1".to_string()),
        ];
        let m = gone_message("debian:7.2", &pkg, src, &newer, None);
        assert!(
            m.starts_with(
                "debian:7.2: linux-image-7.2.13+deb14-amd64=7.2.13-1 is not in `deb \
                 http://deb.debian.org/debian unstable main` any more"
            ),
            "{m}"
        );
        assert!(
            m.contains(
                "It has linux-image-7.2.15+deb14-amd64 7.2.15-1 now: pin it in \
                 images/recipe.toml:\n  [kernels.debian.\"7.2\"]\n  package = \
                 \"linux-image-7.2.15+deb14-amd64\"\n  version = \"7.2.15-1\"\n"
            ),
            "{m}"
        );
        assert!(m.ends_with("keeps working where it was fetched"), "{m}");
        // Unstable moved on to another series: the flavour's newest kernel, pinned under its own.
        let current = ("linux-image-7.3.1+deb14-amd64".to_string(), "7.3.1-1".to_string());
        let m = gone_message("debian:7.2", &pkg, src, &[], Some(current));
        assert!(
            m.contains(
                "It has no 7.2 kernel now; its newest is linux-image-7.3.1+deb14-amd64 7.3.1-1: \
                 pin it in images/recipe.toml:\n  [kernels.debian.\"7.3\"]"
            ),
            "{m}"
        );
        let m = gone_message("debian:7.2", &pkg, src, &[], None);
        assert!(m.contains("nor is any other 7.2 kernel"), "{m}");
    }

    #[test]
    fn unknown_kernel_spec_lists_the_pinned_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let recipe = Recipe::load(root).unwrap();
        let (name, _) = debian_spec("debian:6.1", &recipe).unwrap();
        assert_eq!(name, "debian:6.1");
        let e = debian_spec("debian:5.10", &recipe).unwrap_err().to_string();
        assert!(e.contains("pins debian:6.1, debian:6.12, debian:7.2"), "{e}");
    }
}
