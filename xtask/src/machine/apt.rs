//! apt for kernel and host packages: the host's own sources, or a source the host does not have
//! (Debian unstable for the newest kernel; the release's backports for a host package that would
//! otherwise remove one) through a private sources list whose lists and cache live under
//! daxtest's cache or a directory of their own. Every apt call on a private source names its own
//! files with `-o` options, so the host's /etc/apt is read only for its sources beside one (the
//! backports) and /var/lib/apt is never written.

use anyhow::Context;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// Where packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apt {
    /// The host's apt configuration, as `apt-get` uses it.
    Host,
    /// One sources.list line (`deb [signed-by=...] URI SUITE COMPONENT`) in a directory of its own;
    /// with `and_host`, the host's sources beside it (read, never written).
    Private { line: String, dir: PathBuf, and_host: bool },
}

impl Apt {
    /// The private source for `line`, in `cache/apt/<hash of line>/`: a changed line gets fresh
    /// lists rather than the old source's.
    pub fn private(cache: &Path, line: &str) -> Apt {
        let hash = crate::names::hash(line.as_bytes());
        Apt::Private { line: line.to_string(), dir: cache.join("apt").join(hash), and_host: false }
    }

    /// The host's sources and `line`, with lists and cache of their own in `dir`.
    pub fn beside_host(dir: &Path, line: &str) -> Apt {
        Apt::Private { line: line.to_string(), dir: dir.to_path_buf(), and_host: true }
    }

    /// `-o` options that point apt at the private source's files alone.
    pub fn options(&self) -> Vec<String> {
        let Apt::Private { dir, and_host, .. } = self else { return vec![] };
        let d = dir.display();
        [
            Some(format!("Dir::Etc::SourceList={d}/sources.list")),
            // No sources.list.d: the host's other sources stay out.
            (!and_host).then(|| "Dir::Etc::SourceParts=/dev/null".into()),
            Some(format!("Dir::State::Lists={d}/lists")),
            Some(format!("Dir::Cache={d}/cache")),
        ]
        .into_iter()
        .flatten()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// For messages: `the host's apt sources`, `deb ... unstable main`.
    pub fn describe(&self) -> String {
        match self {
            Apt::Host => "the host's apt sources".into(),
            Apt::Private { line, and_host: false, .. } => format!("`{line}`"),
            Apt::Private { line, and_host: true, .. } => {
                format!("the host's apt sources and `{line}`")
            }
        }
    }

    /// Whether `update` can run: always for a private source, only as root for the host's.
    pub fn can_update(&self) -> bool {
        matches!(self, Apt::Private { .. }) || rustix::process::geteuid().is_root()
    }

    /// `apt-get update` (for a private source: of that source alone, into its own lists).
    pub fn update(&self, sh: &Shell) -> anyhow::Result<()> {
        if let Apt::Private { line, dir, .. } = self {
            for sub in ["lists/partial", "cache/archives/partial"] {
                std::fs::create_dir_all(dir.join(sub))
                    .with_context(|| format!("creating {}", dir.join(sub).display()))?;
            }
            std::fs::write(dir.join("sources.list"), format!("{line}\n"))?;
        }
        let o = self.options();
        cmd!(sh, "apt-get -q {o...} update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .with_context(|| format!("apt-get update of {}", self.describe()))
    }

    /// Whether a private source has package lists (the host's always counts as having them).
    pub fn has_lists(&self) -> bool {
        match self {
            Apt::Host => true,
            Apt::Private { dir, .. } => std::fs::read_dir(dir.join("lists")).is_ok_and(|d| {
                d.flatten().any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            }),
        }
    }

    /// `apt-get download PACKAGE=VERSION...` into `dest`; apt's complaint stays on stderr.
    pub fn download(&self, sh: &Shell, dest: &Path, wanted: &[String]) -> anyhow::Result<()> {
        let o = self.options();
        let _cd = sh.push_dir(dest);
        cmd!(sh, "apt-get download -q {o...} {wanted...}").quiet().run().with_context(|| {
            format!("apt-get download {} from {}", wanted.join(" "), self.describe())
        })
    }

    /// `apt-cache ARGS...`'s output; empty when it fails (a lookup for a message only).
    fn cache_query(&self, sh: &Shell, args: &[&str]) -> String {
        let o = self.options();
        cmd!(sh, "apt-cache {o...} {args...}").quiet().ignore_stderr().read().unwrap_or_default()
    }

    /// Every version of every package whose name starts with `prefix`: (package, version).
    pub fn versions(&self, sh: &Shell, prefix: &str) -> Vec<(String, String)> {
        let names = self.cache_query(sh, &["pkgnames", prefix]);
        let mut names: Vec<&str> = names.lines().map(str::trim).collect();
        names.sort();
        names
            .iter()
            .flat_map(|name| parse_madison(&self.cache_query(sh, &["madison", name])))
            .collect()
    }

    /// The `Depends:` of the candidate version of `package`.
    pub fn depends(&self, sh: &Shell, package: &str) -> String {
        let show = self.cache_query(sh, &["show", "--no-all-versions", package]);
        show.lines().find_map(|l| l.strip_prefix("Depends:")).unwrap_or_default().trim().into()
    }
}

/// `apt-cache madison` lines (`linux-image-X |   7.2.13-1 | http://... Packages`) as
/// (package, version).
pub fn parse_madison(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut fields = l.split('|').map(str::trim);
            let (package, version) = (fields.next()?, fields.next()?);
            let packages = fields.next().is_some_and(|f| f.ends_with("Packages"));
            (packages && !package.is_empty()).then(|| (package.to_string(), version.to_string()))
        })
        .collect()
}

/// The dependencies of a `Depends:` field pinned to one version (`NAME (= VERSION)`), in order,
/// as (package, version); alternatives (`a | b`) are left out.
pub fn pinned_dependencies(depends: &str) -> Vec<(String, String)> {
    depends
        .split(',')
        .map(str::trim)
        .filter(|dep| !dep.contains('|'))
        .filter_map(|dep| {
            let (name, constraint) = dep.split_once('(')?;
            let v = constraint.trim_end_matches(')').trim().strip_prefix('=')?.trim();
            Some((name.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// The packages of a `Depends:` field pinned to exactly `version`: the parts of a split kernel
/// package, built from the same source.
pub fn exact_dependencies(depends: &str, version: &str) -> Vec<String> {
    pinned_dependencies(depends).into_iter().filter(|(_, v)| v == version).map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_source_names_only_its_own_files() {
        let apt = Apt::private(Path::new("/c"), "deb http://deb.debian.org/debian unstable main");
        let Apt::Private { dir, .. } = &apt else { panic!() };
        let d = dir.display().to_string();
        assert!(d.starts_with("/c/apt/"), "{d}");
        assert_eq!(
            apt.options(),
            [
                "-o".to_string(),
                format!("Dir::Etc::SourceList={d}/sources.list"),
                "-o".into(),
                "Dir::Etc::SourceParts=/dev/null".into(),
                "-o".into(),
                format!("Dir::State::Lists={d}/lists"),
                "-o".into(),
                format!("Dir::Cache={d}/cache"),
            ]
        );
        assert!(Apt::Host.options().is_empty());
        // Beside the host's sources: sources.list.d stays in.
        let beside = Apt::beside_host(Path::new("/b"), "deb http://deb.debian.org/debian x main");
        assert_eq!(beside.options().len(), 6);
        assert!(!beside.options().iter().any(|o| o.contains("SourceParts")));
        assert_ne!(apt, Apt::private(Path::new("/c"), "deb http://deb.debian.org/debian sid main"));
    }

    #[test]
    fn lists_count_compressed_or_not() {
        let cache = tempfile::tempdir().unwrap();
        let apt = Apt::private(cache.path(), "deb http://deb.debian.org/debian unstable main");
        let Apt::Private { dir, .. } = &apt else { panic!() };
        assert!(!apt.has_lists());
        std::fs::create_dir_all(dir.join("lists/partial")).unwrap();
        std::fs::write(dir.join("lists/lock"), "").unwrap();
        assert!(!apt.has_lists());
        // apt keeps lists compressed where its configuration says so (lz4 here).
        let name = "deb.debian.org_debian_dists_unstable_main_binary-amd64_Packages.lz4";
        std::fs::write(dir.join("lists").join(name), "").unwrap();
        assert!(apt.has_lists());
    }

    #[test]
    fn madison_lines() {
        let out = "linux-image-7.2.13+deb14-amd64 |   7.2.13-1 | http://deb.debian.org/debian \
                   unstable/main amd64 Packages\n   linux | 7.2.13-1 | http://x unstable/main \
                   Sources\n";
        assert_eq!(
            parse_madison(out),
            [("linux-image-7.2.13+deb14-amd64".to_string(), "7.2.13-1".to_string())]
        );
    }

    #[test]
    fn split_packages_are_the_exact_version_dependencies() {
        let meta = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                    linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 \
                    (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)";
        assert_eq!(
            exact_dependencies(meta, "7.2.13-1"),
            [
                "linux-base-7.2.13+deb14-amd64",
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64"
            ]
        );
        // The single package of 6.x depends on nothing of its own version.
        let single = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | \
                      linux-initramfs-tool";
        assert!(exact_dependencies(single, "6.1.192-1").is_empty());
    }
}
