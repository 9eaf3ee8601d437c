//! `images/kernel.config`: the options a kernel needs for daxtest, each for the kernel versions
//! it applies to. Kconfig options are removed and renamed upstream (CONFIG_LIBCRC32C is gone
//! from 6.15 on), so an option line may carry one annotation after its value:
//!
//! - `CONFIG_X=y  # until 6.15`: kernels before 6.15 only (the option is gone from 6.15 on);
//! - `CONFIG_X=y  # since 6.15`: kernels from 6.15 on;
//! - `CONFIG_X=y  # until 6.15, then CONFIG_Y=y`: X before 6.15, Y from 6.15 on (a replacement).
//!
//! A kernel is then never asked for an option it cannot know, and one that lacks an option of
//! its own version is still refused, naming it. Any other text after `#` on an option line is an
//! error: a mistyped annotation must not quietly turn into "every version".

use crate::version::KernelVersion;
use anyhow::Context;
use std::fmt;
use std::path::Path;

pub const PATH: &str = "images/kernel.config";

/// One option a kernel of some versions must have, built in or as a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// `CONFIG_FS_DAX`.
    pub name: String,
    /// `y` or `m` (either satisfies it: drivers and filesystems may be modules).
    pub value: String,
    /// The first version that has it.
    pub since: Option<KernelVersion>,
    /// The first version that no longer has it.
    pub until: Option<KernelVersion>,
    /// The fragment line it was written on, 1-based.
    pub line: usize,
}

impl Requirement {
    pub fn applies_to(&self, v: KernelVersion) -> bool {
        self.since.is_none_or(|s| v >= s) && self.until.is_none_or(|u| v < u)
    }

    /// The versions it applies to, as the fragment says it: `until 6.15`, `since 6.15`.
    pub fn range(&self) -> String {
        match (self.since, self.until) {
            (None, None) => "every version".into(),
            (Some(s), None) => format!("since {}", short(s)),
            (None, Some(u)) => format!("until {}", short(u)),
            (Some(s), Some(u)) => format!("since {}, until {}", short(s), short(u)),
        }
    }
}

/// `6.15` for 6.15.0, `6.1.50` otherwise: versions as the fragment writes them.
fn short(v: KernelVersion) -> String {
    match v.2 {
        0 => format!("{}.{}", v.0, v.1),
        _ => v.to_string(),
    }
}

/// The parsed fragment, every option in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub requirements: Vec<Requirement>,
}

/// A line of the fragment that is neither a comment nor a valid option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PATH}:{}: {}", self.line, self.message)
    }
}

impl Fragment {
    pub fn load(root: &Path) -> anyhow::Result<Fragment> {
        let text = std::fs::read_to_string(root.join(PATH))
            .with_context(|| format!("reading {}", root.join(PATH).display()))?;
        Fragment::parse(&text).map_err(|e| crate::exit::input(e.to_string()))
    }

    pub fn parse(text: &str) -> Result<Fragment, ParseError> {
        let mut requirements = vec![];
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let err = |message: String| ParseError { line, message };
            let (option, note) = match l.split_once('#') {
                Some((o, n)) => (o.trim(), Some(n.trim())),
                None => (l, None),
            };
            let (name, value) = option_of(option).map_err(err)?;
            let mut r = Requirement { name, value, since: None, until: None, line };
            match note.map(annotation).transpose().map_err(err)? {
                None => requirements.push(r),
                Some(Note::Since(v)) => requirements.push(Requirement { since: Some(v), ..r }),
                Some(Note::Until(v, then)) => {
                    r.until = Some(v);
                    requirements.push(r);
                    if let Some((name, value)) = then {
                        requirements.push(Requirement {
                            name,
                            value,
                            since: Some(v),
                            until: None,
                            line,
                        });
                    }
                }
            }
        }
        Ok(Fragment { requirements })
    }

    /// The options a kernel of version `v` must have.
    pub fn for_version(&self, v: KernelVersion) -> impl Iterator<Item = &Requirement> {
        self.requirements.iter().filter(move |r| r.applies_to(v))
    }

    /// The options of version `v` that `config` (a .config) has neither built in nor as a module.
    pub fn missing(&self, config: &str, v: KernelVersion) -> Vec<String> {
        let set: std::collections::HashSet<&str> = config
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(_, v)| *v == "y" || *v == "m")
            .map(|(k, _)| k)
            .collect();
        self.for_version(v)
            .filter(|r| !set.contains(r.name.as_str()))
            .map(|r| r.name.clone())
            .collect()
    }

    /// The fragment for scripts/kconfig/merge_config.sh on a tree of version `v`: its options
    /// only, so that Kconfig is never given one it does not know.
    pub fn merge_text(&self, v: KernelVersion) -> String {
        let mut text = format!(
            "# {PATH} for Linux {}, written by daxtest: the options of this version only.\n",
            short(v)
        );
        for r in self.for_version(v) {
            text.push_str(&format!("{}={}\n", r.name, r.value));
        }
        text
    }

    /// The options left out for version `v`, with the versions they are for:
    /// `CONFIG_LIBCRC32C (until 6.15)`.
    pub fn left_out(&self, v: KernelVersion) -> Vec<String> {
        self.requirements
            .iter()
            .filter(|r| !r.applies_to(v))
            .map(|r| format!("{} ({})", r.name, r.range()))
            .collect()
    }
}

enum Note {
    Since(KernelVersion),
    /// The version, and the option that replaces it from then on.
    Until(KernelVersion, Option<(String, String)>),
}

const SYNTAX: &str = "write `# until 6.15`, `# since 6.15` or `# until 6.15, then CONFIG_NEW=y` \
                      after the value, or put the comment on a line of its own";

fn annotation(note: &str) -> Result<Note, String> {
    let unknown = || format!("unknown annotation `# {note}`: {SYNTAX}");
    let (word, rest) = note.split_once(char::is_whitespace).ok_or_else(unknown)?;
    let (version, then) = match rest.split_once(',') {
        Some((v, then)) => (v.trim(), Some(then.trim())),
        None => (rest.trim(), None),
    };
    let version = version_of(version).ok_or_else(unknown)?;
    match (word, then) {
        ("since", None) => Ok(Note::Since(version)),
        ("until", None) => Ok(Note::Until(version, None)),
        ("until", Some(then)) => {
            let option = then.strip_prefix("then ").ok_or_else(unknown)?;
            Ok(Note::Until(version, Some(option_of(option.trim())?)))
        }
        _ => Err(unknown()),
    }
}

/// `6.15` or `6.1.50`, digits and dots only.
fn version_of(s: &str) -> Option<KernelVersion> {
    let plain = s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.split('.').count() >= 2;
    KernelVersion::parse(s).filter(|_| plain)
}

/// `CONFIG_FS_DAX=y` -> (`CONFIG_FS_DAX`, `y`).
fn option_of(s: &str) -> Result<(String, String), String> {
    let bad = || {
        format!(
            "{s:?} is not an option line: write CONFIG_NAME=y or CONFIG_NAME=m (a comment starts \
             the line with #)"
        )
    };
    let (name, value) = s.split_once('=').ok_or_else(bad)?;
    let valid_name = name.strip_prefix("CONFIG_").is_some_and(|n| {
        !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    if !valid_name || !matches!(value, "y" | "m") {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// The value of `name` in a .config (`y`, `m`, a string with its quotes), `None` when unset.
pub fn config_value<'c>(config: &'c str, name: &str) -> Option<&'c str> {
    config.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6_1: KernelVersion = KernelVersion(6, 1, 192);
    const V6_12: KernelVersion = KernelVersion(6, 12, 117);
    const V7_2: KernelVersion = KernelVersion(7, 2, 13);

    fn project() -> Fragment {
        Fragment::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    /// The packaged kernels' options that matter here, as their configs write them.
    const CONFIG_6_12: &str =
        "CONFIG_FS_DAX=y\nCONFIG_XFS_FS=m\nCONFIG_LIBCRC32C=m\nCONFIG_CRC32=y\n";
    const CONFIG_7_2: &str = "CONFIG_FS_DAX=y\nCONFIG_XFS_FS=m\nCONFIG_CRC32=y\n";

    #[test]
    fn annotations_give_each_option_its_versions() {
        let f = Fragment::parse(
            "# a comment\nCONFIG_A=y\nCONFIG_OLD=m  # until 6.15, then CONFIG_NEW=y\n\
             CONFIG_GONE=y # until 6.1.50\nCONFIG_LATE=y #since 7.0\n",
        )
        .unwrap();
        let names = |v| f.for_version(v).map(|r| r.name.as_str()).collect::<Vec<_>>();
        assert_eq!(names(V6_1), ["CONFIG_A", "CONFIG_OLD"]);
        assert_eq!(names(KernelVersion(6, 1, 49)), ["CONFIG_A", "CONFIG_OLD", "CONFIG_GONE"]);
        assert_eq!(names(KernelVersion(6, 15, 0)), ["CONFIG_A", "CONFIG_NEW"]);
        assert_eq!(names(V7_2), ["CONFIG_A", "CONFIG_NEW", "CONFIG_LATE"]);
        let new = &f.requirements[2];
        assert_eq!((new.name.as_str(), new.value.as_str(), new.line), ("CONFIG_NEW", "y", 3));
        assert_eq!(f.left_out(V7_2), ["CONFIG_OLD (until 6.15)", "CONFIG_GONE (until 6.1.50)"]);
        assert_eq!(
            f.left_out(V6_1),
            ["CONFIG_NEW (since 6.15)", "CONFIG_GONE (until 6.1.50)", "CONFIG_LATE (since 7.0)"]
        );
        assert_eq!(
            f.merge_text(V7_2).lines().skip(1).collect::<Vec<_>>(),
            ["CONFIG_A=y", "CONFIG_NEW=y", "CONFIG_LATE=y"]
        );
    }

    #[test]
    fn a_mistyped_annotation_or_option_is_an_error_naming_the_line() {
        for (text, want) in [
            ("CONFIG_A=y  # till 6.15\n", "2: unknown annotation `# till 6.15`"),
            ("CONFIG_A=y  # until six\n", "2: unknown annotation"),
            ("CONFIG_A=y  # until 6\n", "2: unknown annotation"),
            ("CONFIG_A=y  # needed by XFS\n", "2: unknown annotation `# needed by XFS`"),
            ("CONFIG_A=y  # until 6.15, CONFIG_B=y\n", "2: unknown annotation"),
            ("CONFIG_A=y  # until 6.15, then CRC32\n", "2: \"CRC32\" is not an option line"),
            ("CONFIG_A=n\n", "2: \"CONFIG_A=n\" is not an option line"),
            ("FS_DAX=y\n", "2: \"FS_DAX=y\" is not an option line"),
        ] {
            let e = Fragment::parse(&format!("# c\n{text}")).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{PATH}:{want}")), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_7x_config_without_libcrc32c_passes_and_6x_still_needs_it() {
        let f = Fragment::parse(
            "CONFIG_FS_DAX=y\nCONFIG_XFS_FS=y\nCONFIG_LIBCRC32C=y  # until 6.15, then CONFIG_CRC32=y\n",
        )
        .unwrap();
        assert!(f.missing(CONFIG_7_2, V7_2).is_empty());
        assert!(f.missing(CONFIG_6_12, V6_12).is_empty());
        // The same 7.x config claimed by a 6.12 kernel: LIBCRC32C is required there.
        assert_eq!(f.missing(CONFIG_7_2, V6_12), ["CONFIG_LIBCRC32C"]);
        // A 7.x kernel without the CRC32 library lacks the replacement, named.
        assert_eq!(f.missing("CONFIG_FS_DAX=y\nCONFIG_XFS_FS=m\n", V7_2), ["CONFIG_CRC32"]);
    }

    #[test]
    fn a_config_without_fs_dax_is_refused_on_every_version() {
        let f = project();
        for (config, v) in [(CONFIG_7_2, V7_2), (CONFIG_6_12, V6_12)] {
            let without = config.replace("CONFIG_FS_DAX=y", "# CONFIG_FS_DAX is not set");
            assert!(f.missing(&without, v).contains(&"CONFIG_FS_DAX".to_string()), "{v}");
        }
        let modules = "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n";
        let f = Fragment::parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_D=y\n").unwrap();
        assert_eq!(f.missing(modules, V7_2), ["CONFIG_C", "CONFIG_D"]);
    }

    #[test]
    fn the_project_fragment_asks_each_kernel_for_its_own_crc32c_option() {
        let f = project();
        let names = |v| f.for_version(v).map(|r| r.name.clone()).collect::<Vec<_>>();
        for v in [V6_1, V6_12] {
            assert!(names(v).contains(&"CONFIG_LIBCRC32C".into()), "{v}");
            assert!(!names(v).contains(&"CONFIG_CRC32".into()), "{v}");
        }
        assert!(!names(V7_2).contains(&"CONFIG_LIBCRC32C".into()));
        assert!(names(V7_2).contains(&"CONFIG_CRC32".into()));
        assert!(names(V7_2).contains(&"CONFIG_FS_DAX".into()));
    }
}
