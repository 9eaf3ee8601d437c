//! The guest image recipe, `images/recipe.toml`: pinned kernels, modules, guest tools, host tools
//! and VM defaults. Unknown keys are errors, reported with file, line and column.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const RECIPE_PATH: &str = "images/recipe.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub kernels: Kernels,
    pub modules: Modules,
    pub guest_tools: Vec<HostFile>,
    #[serde(default)]
    pub guest_files: Vec<HostFile>,
    pub host_tools: Vec<HostFile>,
    pub vm: VmDefaults,
    pub timeouts: Timeouts,
    /// The recipe's own bytes: part of the image cache key.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernels {
    /// A kernel spec such as `debian:6.12`.
    pub default: String,
    pub debian: BTreeMap<String, DebianKernel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianKernel {
    pub package: String,
    pub version: String,
    /// A sources.list line for a source the host's apt does not have (Debian unstable), used
    /// through a private sources list under daxtest's cache. Default: the host's apt sources.
    #[serde(default)]
    pub apt_source: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// Loaded by the agent before the guest is ready.
    pub load: Vec<String>,
    /// Installed for modprobe, loaded at first use.
    #[serde(default)]
    pub on_demand: Vec<String>,
}

/// A file on the host and the Debian package that provides it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub path: PathBuf,
    pub package: String,
    /// Guest tools only: needed before the guest is ready (initramfs), else on the payload disk.
    #[serde(default)]
    pub boot: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    pub memory_mib: u64,
    pub cpus: u32,
    pub nvdimms: usize,
    /// With a K, M or G suffix (powers of 1024).
    pub nvdimm_size: String,
    pub boot_timeout_s: u64,
    /// The guest kernel's hung-task timeout (kernel.hung_task_timeout_secs).
    pub hung_task_s: u64,
    pub address: String,
    pub gateway: String,
}

/// Default step and case timeouts, in seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub step_s: u64,
    pub case_s: u64,
}

impl Recipe {
    pub fn load(root: &Path) -> anyhow::Result<Recipe> {
        let path = root.join(RECIPE_PATH);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Recipe> {
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, col) = crate::lines::LineIndex::new(text).line_col(s.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message())
        })?;
        recipe.source = text.to_string();
        if !recipe.kernels.debian.contains_key(
            recipe.kernels.default.strip_prefix("debian:").unwrap_or(&recipe.kernels.default),
        ) {
            bail!(
                "{}: [kernels] default = {:?} names no [kernels.debian.\"...\"] table",
                path.display(),
                recipe.kernels.default
            );
        }
        for (name, k) in &recipe.kernels.debian {
            // apt would take another line as a sources.list line and fail far from here.
            if let Some(line) = k.apt_source.as_deref().filter(|l| !l.starts_with("deb ")) {
                bail!(
                    "{}: [kernels.debian.\"{name}\"] apt_source = {line:?}: write a sources.list \
                     line, `deb [signed-by=KEYRING] URI SUITE COMPONENT`",
                    path.display()
                );
            }
        }
        parse_size(&recipe.vm.nvdimm_size)
            .with_context(|| format!("{}: [vm] nvdimm_size", path.display()))?;
        Ok(recipe)
    }
}

/// "2G", "512M", "65536K" or a plain byte count.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{s:?} is not a size: write it like 2G, 512M or 65536K"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => bail!("{s:?}: unknown unit {unit:?}; use K, M or G"),
    };
    n.checked_mul(mult).with_context(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_recipe_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let r = Recipe::load(root).unwrap();
        assert!(r.kernels.debian.contains_key("6.12"));
        assert!(r.kernels.debian.contains_key("6.1"));
        assert!(r.kernels.debian["7.2"]
            .apt_source
            .as_deref()
            .is_some_and(|l| l.contains("unstable")));
        assert!(r.modules.load.iter().any(|m| m == "nd_pmem"));
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join(RECIPE_PATH)).unwrap();
        let bad = text.replace("memory_mib = ", "memroy_mib = ");
        let line = bad.lines().position(|l| l.starts_with("memroy_mib")).unwrap() + 1;
        let e = Recipe::parse(&bad, Path::new("r.toml")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("r.toml:{line}:1: unknown field `memroy_mib`")), "{e}");
    }

    #[test]
    fn an_apt_source_must_be_a_sources_list_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join(RECIPE_PATH)).unwrap();
        let bad = text.replace("apt_source = \"deb ", "apt_source = \"");
        let e = Recipe::parse(&bad, Path::new("r.toml")).unwrap_err().to_string();
        assert!(
            e.starts_with("r.toml: [kernels.debian.\"7.2\"] apt_source = \"[signed-by="),
            "{e}"
        );
        assert!(
            e.ends_with("write a sources.list line, `deb [signed-by=KEYRING] URI SUITE COMPONENT`")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("2T").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse_size("G").unwrap_err().to_string().contains("not a size"));
    }
}
