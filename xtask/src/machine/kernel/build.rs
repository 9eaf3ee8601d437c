//! Configuring and building a kernel source tree for daxtest (`cargo xtask kernel --src DIR`):
//! what a source tree is, the configuration steps of each `--config` choice as command lines,
//! the host packages a build needs, and why Kconfig dropped an option of images/kernel.config.

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

/// Checks that `dir` is the top of a Linux source tree; its canonical path.
pub fn check_tree(dir: &str) -> anyhow::Result<PathBuf> {
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

/// The value of `name` in a .config (`y`, `m`, a string with its quotes), `None` when unset.
pub fn config_value<'c>(config: &'c str, name: &str) -> Option<&'c str> {
    config.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
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

/// A Kconfig entry, as far as saying why an option is not set needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `depends on` expressions, as written.
    pub depends: Vec<String>,
    /// Whether a user can set it; an entry without a prompt is only ever selected by others.
    pub prompt: bool,
}

/// The entry of `config NAME` (or `menuconfig NAME`) in one Kconfig file's text.
pub fn parse_entry(kconfig: &str, name: &str) -> Option<Entry> {
    // `if X` ... `endif` blocks around the entry are dependencies too (drivers/virtio/Kconfig
    // puts every driver inside `if VIRTIO_MENU`).
    let mut blocks: Vec<&str> = vec![];
    let mut lines = kconfig.lines();
    // Help text ends at the first line indented no deeper than its `help` (kconfig-language.rst);
    // its words ("if there are ...") are not structure.
    let mut help_indent = None;
    loop {
        let raw = lines.next()?;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match help_indent {
            Some(h) if indent(raw) > h => continue,
            _ => help_indent = None,
        }
        if line == "help" || line == "---help---" {
            help_indent = Some(indent(raw));
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("if") => blocks.push(line["if".len()..].trim()),
            Some("endif") => {
                blocks.pop();
            }
            Some("config" | "menuconfig") if words.next() == Some(name) => break,
            _ => {}
        }
    }
    let depends = blocks.iter().map(|b| b.to_string()).collect();
    let mut entry = Entry { depends, prompt: false };
    // The entry's attributes are its indented lines (help text included, which is skipped).
    let mut in_help = false;
    for line in lines.take_while(|l| l.trim().is_empty() || l.starts_with([' ', '\t'])) {
        let line = line.trim();
        if in_help || line.is_empty() {
            continue;
        }
        if line == "help" || line == "---help---" {
            in_help = true;
        } else if let Some(dep) = line.strip_prefix("depends on") {
            entry.depends.push(dep.trim().to_string());
        } else if line.starts_with("prompt")
            || ["bool", "tristate", "string", "int", "hex"]
                .iter()
                .any(|t| line.strip_prefix(t).is_some_and(|r| r.trim_start().starts_with('"')))
        {
            entry.prompt = true;
        }
    }
    Some(entry)
}

/// The width of a line's leading white space, a tab counting 8.
fn indent(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 8 } else { 1 }).sum()
}

/// The symbols an expression needs set, leaving out negated ones (`X86_64 && !(ARM || MIPS)
/// && ACPI` -> `X86_64`, `ACPI`): the unset ones among them are why a dependency fails.
pub fn symbols(expr: &str) -> Vec<&str> {
    let mut out = vec![];
    // Negation of each open parenthesis, and a `!` waiting for its operand.
    let mut negated = vec![false];
    let mut bang = false;
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        let here = *negated.last().unwrap_or(&false);
        let len = if c.is_ascii_alphanumeric() || c == '_' {
            let word = &rest[..rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())];
            let value =
                matches!(word, "y" | "m" | "n") || !word.chars().any(|c| c.is_ascii_uppercase());
            if !(here ^ bang) && !value {
                out.push(word);
            }
            bang = false;
            word.len()
        } else {
            match c {
                '!' if !rest[1..].starts_with('=') => bang = true,
                '(' => {
                    negated.push(here ^ bang);
                    bang = false;
                }
                ')' => {
                    negated.pop();
                }
                _ => {}
            }
            c.len_utf8()
        };
        rest = &rest[len..];
    }
    out
}

/// Why `name` (without `CONFIG_`) is not set in `config`, from its Kconfig entry.
pub fn reason(name: &str, entry: Option<&Entry>, selected_by: &[String], config: &str) -> String {
    let Some(entry) = entry else {
        return "no such option in this tree's Kconfig files (renamed or removed in this version? \
                then say in images/kernel.config which versions it is for)"
            .into();
    };
    let unmet: Vec<String> = entry
        .depends
        .iter()
        .flat_map(|d| symbols(d))
        .filter(|s| config_value(config, &format!("CONFIG_{s}")).is_none())
        .map(|s| format!("{s} is not set"))
        .collect();
    match (unmet.is_empty(), entry.prompt) {
        (false, _) => format!("depends on {}: {}", entry.depends.join(" && "), unmet.join(", ")),
        (true, false) if selected_by.is_empty() => "it has no prompt and nothing selects it".into(),
        (true, false) => format!(
            "it has no prompt: it is set when selected, by {}{}",
            selected_by.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if selected_by.len() > 5 { ", ..." } else { "" }
        ),
        (true, true) => format!(
            "its dependencies ({}) look met: see `make menuconfig`, / {name}",
            if entry.depends.is_empty() { "none".into() } else { entry.depends.join(" && ") }
        ),
    }
}

/// The entries of one Kconfig file that `select` `name`, with their condition:
/// `BLK_DEV_PMEM if NVDIMM_PFN`.
pub fn selectors(kconfig: &str, name: &str) -> Vec<String> {
    let mut current = None;
    let mut out = vec![];
    for line in kconfig.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("config" | "menuconfig"), Some(entry)) => current = Some(entry),
            (Some("select"), Some(selected)) if selected == name => {
                if let Some(entry) = current {
                    let condition: Vec<&str> = words.collect();
                    out.push([&[entry][..], &condition].concat().join(" "));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every Kconfig file of the tree (Kconfig, Kconfig.debug, ...), outside Documentation/ and
/// tools/.
pub fn kconfig_files(tree: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let top_level_skip =
                dir == tree && matches!(&*name, "Documentation" | "tools" | ".git");
            match e.file_type() {
                Ok(t) if t.is_dir() && !top_level_skip => dirs.push(path),
                Ok(t) if t.is_file() && name.starts_with("Kconfig") => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Each option of `missing` (`CONFIG_X`) with why the tree's Kconfig does not set it.
pub fn explain_dropped(tree: &Path, config: &str, missing: &[String]) -> Vec<String> {
    let files: Vec<(PathBuf, String)> = kconfig_files(tree)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect();
    missing
        .iter()
        .map(|option| {
            let name = option.strip_prefix("CONFIG_").unwrap_or(option);
            let found = files.iter().find_map(|(p, t)| parse_entry(t, name).map(|e| (p, e)));
            let selected_by: Vec<String> =
                files.iter().flat_map(|(_, t)| selectors(t, name)).collect();
            match found {
                Some((path, entry)) => format!(
                    "{option} ({}): {}",
                    path.strip_prefix(tree).unwrap_or(path).display(),
                    reason(name, Some(&entry), &selected_by, config)
                ),
                None => format!("{option}: {}", reason(name, None, &[], config)),
            }
        })
        .collect()
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
        let e = check_tree(&d).unwrap_err();
        assert!(e.downcast_ref::<exit::InputError>().is_some());
        assert!(
            e.to_string().contains("not a kernel source tree (no arch/x86, no scripts/kconfig/"),
            "{e}"
        );
        let e = check_tree("/nonexistent/linux").unwrap_err().to_string();
        assert!(e.starts_with("--src /nonexistent/linux: no such directory"), "{e}");
        std::fs::create_dir_all(dir.path().join("arch/x86")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts/kconfig")).unwrap();
        std::fs::write(dir.path().join("scripts/kconfig/merge_config.sh"), "").unwrap();
        assert_eq!(check_tree(&d).unwrap(), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn version_of_the_top_makefile() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n";
        assert_eq!(tree_version(mk), Some(KernelVersion(6, 1, 192)));
        assert_eq!(tree_version("VERSION = 7\nPATCHLEVEL = 2\n"), Some(KernelVersion(7, 2, 0)));
        assert_eq!(tree_version("all:\n"), None);
    }

    const KCONFIG: &str = "\
config ND_PFN
\ttristate

config NVDIMM_PFN
\tbool \"PFN: Map persistent (device) memory\"
\tdefault LIBNVDIMM
\tdepends on ZONE_DEVICE
\tselect ND_CLAIM
\thelp
\t  Map persistent memory.
\t  depends on nothing said here

config BLK_DEV_PMEM
\ttristate \"PMEM: Persistent memory block device support\"
\tselect ND_PFN if NVDIMM_PFN

config NVDIMM_DAX
\tbool \"NVDIMM DAX\"
\tdepends on NVDIMM_PFN

if VIRTIO_MENU
if PCI
endif
config OTHER
\tbool \"other\"
\thelp
\t  Say Y
\t  if in doubt.

config VIRTIO_PCI
\ttristate \"PCI driver for virtio devices\"
\tdepends on PCI
endif
";

    #[test]
    fn dropped_options_are_explained_from_the_trees_kconfig_files() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("drivers/nvdimm")).unwrap();
        std::fs::create_dir_all(t.join("Documentation")).unwrap();
        std::fs::write(t.join("drivers/nvdimm/Kconfig"), KCONFIG).unwrap();
        // Documentation/ is not searched: an entry there would win otherwise.
        std::fs::write(t.join("Documentation/Kconfig"), "config NVDIMM_PFN\n\tbool \"x\"\n")
            .unwrap();
        let missing = ["CONFIG_NVDIMM_PFN".to_string(), "CONFIG_GONE".to_string()];
        assert_eq!(
            explain_dropped(t, "CONFIG_LIBNVDIMM=y\n", &missing),
            [
                "CONFIG_NVDIMM_PFN (drivers/nvdimm/Kconfig): depends on ZONE_DEVICE: ZONE_DEVICE \
                 is not set",
                "CONFIG_GONE: no such option in this tree's Kconfig files (renamed or removed in \
                 this version? then say in images/kernel.config which versions it is for)",
            ]
        );
    }

    #[test]
    fn dropped_options_say_which_dependency_is_unmet() {
        let pfn = parse_entry(KCONFIG, "NVDIMM_PFN").unwrap();
        assert_eq!(pfn, Entry { depends: vec!["ZONE_DEVICE".into()], prompt: true });
        assert_eq!(
            reason("NVDIMM_PFN", Some(&pfn), &[], "CONFIG_LIBNVDIMM=y\n"),
            "depends on ZONE_DEVICE: ZONE_DEVICE is not set"
        );
        let nd = parse_entry(KCONFIG, "ND_PFN").unwrap();
        let by = selectors(KCONFIG, "ND_PFN");
        assert_eq!(by, ["BLK_DEV_PMEM if NVDIMM_PFN"]);
        assert_eq!(
            reason("ND_PFN", Some(&nd), &by, ""),
            "it has no prompt: it is set when selected, by BLK_DEV_PMEM if NVDIMM_PFN"
        );
        assert_eq!(reason("ND_PFN", Some(&nd), &[], ""), "it has no prompt and nothing selects it");
        assert!(parse_entry(KCONFIG, "NVDIMM").is_none());
        let virtio = parse_entry(KCONFIG, "VIRTIO_PCI").unwrap();
        assert_eq!(virtio.depends, ["VIRTIO_MENU", "PCI"]);
        assert!(reason("X", None, &[], "").starts_with("no such option"));
        assert_eq!(symbols("X86_64 && (ACPI || !FOO_BAR) && m"), ["X86_64", "ACPI"]);
        assert_eq!(
            symbols("MMU && !(ARM || MIPS || SPARC) && ZONE_DEVICE || FS_DAX_LIMITED"),
            ["MMU", "ZONE_DEVICE", "FS_DAX_LIMITED"]
        );
        assert_eq!(symbols("!(A && !B) && C != n"), ["B", "C"]);
    }
}
