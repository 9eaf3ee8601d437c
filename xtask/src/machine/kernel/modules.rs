//! The modules a guest loads, each with everything to load before it, resolved from the kernel's
//! own metadata (`modprobe --show-depends` on its module tree, and modules.dep for what is a hard
//! dependency).

use super::Kernel;
use anyhow::{bail, Context};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// A wanted module and everything to load before it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub target: String,
    /// Host paths of the module files (`.ko`, `.ko.xz`, ...), dependencies first.
    pub files: Vec<PathBuf>,
    /// Soft dependencies: loaded when they can be, not needed by the module itself.
    pub optional: Vec<PathBuf>,
}

/// One line of `modprobe --show-depends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependsLine {
    Insmod(PathBuf),
    Builtin(String),
}

pub fn parse_show_depends(out: &str) -> anyhow::Result<Vec<DependsLine>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("insmod"), Some(path)) => Ok(DependsLine::Insmod(path.into())),
                (Some("builtin"), Some(name)) => Ok(DependsLine::Builtin(name.into())),
                _ => bail!("unexpected line from modprobe --show-depends: {l:?}"),
            }
        })
        .collect()
}

/// modules.dep: module path (relative to the release directory) -> its hard dependencies.
pub fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (m.trim().to_string(), deps.split_whitespace().map(str::to_string).collect())
        })
        .collect()
}

/// The module name of a file: `kernel/fs/xfs/xfs.ko.xz` -> `xfs`.
pub fn module_file_stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.split(".ko").next().unwrap_or(&name).to_string()
}

/// Builds a chain from modprobe's order, marking as optional what modules.dep does not require.
pub fn chain_from(
    target: &str,
    lines: &[DependsLine],
    modules_dep: &HashMap<String, Vec<String>>,
) -> anyhow::Result<Chain> {
    let files: Vec<PathBuf> = lines
        .iter()
        .filter_map(|l| match l {
            DependsLine::Insmod(p) => Some(p.clone()),
            DependsLine::Builtin(_) => None,
        })
        .collect();
    let Some(last) = files.last() else {
        // Built in: nothing to load.
        return Ok(Chain { target: target.into(), files, optional: vec![] });
    };
    let hard: HashSet<String> = modules_dep
        .iter()
        .find(|(m, _)| last.ends_with(m.as_str()))
        .map(|(_, deps)| deps.iter().map(|d| module_file_stem(Path::new(d))).collect())
        .with_context(|| format!("{} is not in modules.dep", last.display()))?;
    let optional = files[..files.len() - 1]
        .iter()
        .filter(|f| !hard.contains(&module_file_stem(f)))
        .cloned()
        .collect();
    Ok(Chain { target: target.into(), files, optional })
}

pub fn resolve_modules(
    sh: &Shell,
    kernel: &Kernel,
    names: &[String],
) -> anyhow::Result<Vec<Chain>> {
    let release_dir = kernel.root.join("lib/modules").join(&kernel.release);
    let modules_dep = parse_modules_dep(&std::fs::read_to_string(release_dir.join("modules.dep"))?);
    let (root, release) = (&kernel.root, &kernel.release);
    names
        .iter()
        .map(|name| {
            // -C /dev/null: the host's modprobe.d must not change the guest's modules (ndctl
            // installs a rule that would hide libnvdimm).
            let out =
                cmd!(sh, "modprobe -C /dev/null -d {root} -S {release} --show-depends {name}")
                    .quiet()
                    .read()
                    .with_context(|| {
                        format!("module {name} of images/recipe.toml in {}", kernel.id)
                    })?;
            chain_from(name, &parse_show_depends(&out)?, &modules_dep)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_XFS: &str = "\
insmod /k/lib/modules/6.12/kernel/arch/x86/crypto/crc32c-intel.ko.xz 
insmod /k/lib/modules/6.12/kernel/crypto/crc32c_generic.ko.xz 
insmod /k/lib/modules/6.12/kernel/lib/libcrc32c.ko.xz 
insmod /k/lib/modules/6.12/kernel/fs/xfs/xfs.ko.xz 
";
    const DEP: &str = "\
kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko.xz
kernel/lib/libcrc32c.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
";

    #[test]
    fn show_depends_lines() {
        let lines = parse_show_depends("insmod /a/b.ko.xz opt=1\nbuiltin crc32c\n\n").unwrap();
        assert_eq!(
            lines,
            vec![DependsLine::Insmod("/a/b.ko.xz".into()), DependsLine::Builtin("crc32c".into())]
        );
        assert!(parse_show_depends("FATAL: Module x not found").is_err());
    }

    #[test]
    fn soft_dependencies_are_optional_and_order_is_kept() {
        let chain =
            chain_from("xfs", &parse_show_depends(SHOW_XFS).unwrap(), &parse_modules_dep(DEP))
                .unwrap();
        let stems: Vec<String> = chain.files.iter().map(|f| module_file_stem(f)).collect();
        assert_eq!(stems, ["crc32c-intel", "crc32c_generic", "libcrc32c", "xfs"]);
        let optional: Vec<String> = chain.optional.iter().map(|f| module_file_stem(f)).collect();
        assert_eq!(optional, ["crc32c-intel", "crc32c_generic"]);
    }

    #[test]
    fn builtin_module_gives_an_empty_chain() {
        let lines = parse_show_depends("builtin ext4\n").unwrap();
        let chain = chain_from("ext4", &lines, &HashMap::new()).unwrap();
        assert!(chain.files.is_empty());
    }

    #[test]
    fn stems() {
        assert_eq!(module_file_stem(Path::new("a/nd_pmem.ko.xz")), "nd_pmem");
        assert_eq!(module_file_stem(Path::new("a/nd_pmem.ko")), "nd_pmem");
    }
}
