//! Why Kconfig dropped an option of images/kernel.config: the option's entry in the tree's
//! Kconfig files, its dependencies that are not set, and what selects it.

use super::config::config_value;
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;

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
