//! Scenario files as written: the serde structs TOML is read into, with the spans that
//! diagnostics need. Raw forms only (`*Def`); `expand` turns them into the model.

use super::{CaseTimeouts, KernelLogRules};
use daxtest_proto::case::Fs;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDef {
    pub(super) format: toml::Spanned<u32>,
    pub(super) name: toml::Spanned<String>,
    pub(super) summary: String,
    #[serde(default)]
    pub(super) references: Vec<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) matrix: MatrixDef,
    /// vars.<dimension>.<value>.<name> = "value", used as ${name} in expectations.
    #[serde(default)]
    pub(super) vars: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// Extra mkfs arguments per filesystem.
    #[serde(default)]
    pub(super) mkfs: BTreeMap<Fs, Vec<String>>,
    /// Check the filesystem after every case's unmount (default false).
    #[serde(default)]
    pub(super) fsck: bool,
    #[serde(default)]
    pub(super) kernel_log: KernelLogDef,
    /// Timeouts for every case of the file (the recipe's otherwise).
    #[serde(default)]
    pub(super) timeout: TimeoutDef,
    pub(super) case: Vec<toml::Spanned<CaseDef>>,
}

/// `timeout` as written, each value with its place in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutDef {
    pub(super) step_s: Option<toml::Spanned<u64>>,
    pub(super) case_s: Option<toml::Spanned<u64>>,
}

impl TimeoutDef {
    pub(super) fn plain(&self) -> CaseTimeouts {
        CaseTimeouts {
            step_s: self.step_s.as_ref().map(|v| *v.get_ref()),
            case_s: self.case_s.as_ref().map(|v| *v.get_ref()),
        }
    }

    /// A timeout of 0 s would report every case as hung: (offset, message) for each.
    pub(super) fn errors(&self) -> Vec<(usize, String)> {
        [("step_s", &self.step_s), ("case_s", &self.case_s)]
            .into_iter()
            .filter_map(|(what, v)| v.as_ref().filter(|v| *v.get_ref() == 0).map(|v| (what, v)))
            .map(|(what, v)| {
                (
                    v.span().start,
                    format!(
                        "timeout {what} = 0: give a number of seconds above 0, or leave it out \
                         for the default of images/recipe.toml [timeouts]"
                    ),
                )
            })
            .collect()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatrixDef {
    pub(super) fs: Option<Vec<Fs>>,
    pub(super) mount: Option<Vec<String>>,
}

/// `kernel_log` as written, each pattern with its place in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KernelLogDef {
    #[serde(default)]
    pub(super) expected: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) benign: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) forbidden: Vec<toml::Spanned<String>>,
}

impl KernelLogDef {
    pub(super) fn plain(&self) -> KernelLogRules {
        let strings = |v: &[toml::Spanned<String>]| v.iter().map(|p| p.get_ref().clone()).collect();
        KernelLogRules {
            expected: strings(&self.expected),
            benign: strings(&self.benign),
            forbidden: strings(&self.forbidden),
        }
    }

    /// Every pattern that is not a regular expression: (offset, message).
    pub(super) fn errors(&self) -> Vec<(usize, String)> {
        let lists = [
            ("expected", &self.expected),
            ("benign", &self.benign),
            ("forbidden", &self.forbidden),
        ];
        let mut out = Vec::new();
        for (key, patterns) in lists {
            for p in patterns {
                if let Err(e) = regex::Regex::new(p.get_ref()) {
                    // The regex crate's message spans lines (the pattern, a caret, the error).
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                    out.push((
                        p.span().start,
                        format!(
                            "kernel_log.{key} pattern {:?} is not a regular expression: {why} \
                             (a literal ( [ {{ . * + ? | needs a backslash: \"\\\\(\" in a TOML \
                             string)",
                            p.get_ref()
                        ),
                    ));
                }
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseDef {
    pub(super) id: String,
    pub(super) summary: String,
    pub(super) requires: Option<toml::Spanned<Requires>>,
    pub(super) matrix: Option<toml::Spanned<MatrixDef>>,
    #[serde(default)]
    pub(super) xfail: Vec<toml::Spanned<XfailDef>>,
    #[serde(default)]
    pub(super) kernel_log: KernelLogDef,
    /// Replaces the file's [mkfs] arguments for the filesystems it names.
    #[serde(default)]
    pub(super) mkfs: BTreeMap<Fs, Vec<String>>,
    /// Boot a new VM for this case (default false: one VM serves many cases).
    #[serde(default)]
    pub(super) fresh_vm: bool,
    /// Check the filesystem after the unmount (default: the file's `fsck`).
    pub(super) fsck: Option<bool>,
    pub(super) seed: Option<u64>,
    #[serde(default)]
    pub(super) timeout: TimeoutDef,
    pub(super) steps: toml::Spanned<Vec<toml::Spanned<toml::Table>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Requires {
    /// Version constraints, all of which must hold: ">=6.2".
    #[serde(default)]
    pub(super) kernel: OneOrMany,
    /// The devices (`--device`) the case means something on: names, or all but `"!name"`s.
    #[serde(default)]
    pub(super) device: OneOrMany,
}

/// `xfail = [{ when = ..., reason, link, step = 3, errno = "EINVAL" }]`: a known bug, named by its
/// symptom, so that no other failure of the case passes for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct XfailDef {
    #[serde(default)]
    pub(super) when: WhenDef,
    pub(super) reason: String,
    pub(super) link: String,
    /// The step (1-based) that fails; absent: the symptom is a kernel-log line.
    pub(super) step: Option<usize>,
    pub(super) errno: Option<String>,
    pub(super) signal: Option<String>,
    /// A regular expression: over the failing step's observation, or over the kernel-log line.
    pub(super) message: Option<String>,
    /// The bug shows only when a race is lost: a pass is no sign of a fix.
    #[serde(default)]
    pub(super) intermittent: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhenDef {
    #[serde(default)]
    pub(super) kernel: OneOrMany,
    #[serde(default)]
    pub(super) fs: OneOrMany,
    #[serde(default)]
    pub(super) mount: OneOrMany,
    /// The run's device (`--device`): names, or all but `"!name"`s.
    #[serde(default)]
    pub(super) device: OneOrMany,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::None => vec![],
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One alternative of a step's expectation: `{ when = {...}, errno = "EINVAL" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectDef {
    #[serde(default)]
    pub(super) when: WhenDef,
    pub(super) ok: Option<bool>,
    pub(super) errno: Option<String>,
    pub(super) signal: Option<String>,
    pub(super) content: Option<String>,
    pub(super) dax: Option<String>,
    pub(super) flag: Option<String>,
    pub(super) extents: Option<String>,
    pub(super) since: Option<String>,
    pub(super) shared: Option<String>,
    pub(super) exit: Option<i32>,
    /// Page faults of a store or load: `0` or a comparison such as `">=1"`.
    pub(super) faults: Option<CountDef>,
    /// DAX PMD faults of a store or load (fs_dax tracepoints), written as `faults` is.
    pub(super) pmd_faults: Option<CountDef>,
    /// With `signal = "SIGBUS"`: the siginfo's si_code (`BUS_MCEERR_AR`, ...).
    pub(super) si_code: Option<String>,
    /// With `signal = "SIGBUS"`: the siginfo's si_addr_lsb (12 a page, 21 a PMD).
    pub(super) si_addr_lsb: Option<u16>,
    /// Completed store_loop records a power cut may lose: a number, or "any" (measured).
    pub(super) lost: Option<CountDef>,
}

/// A count as written: `faults = 0` or `faults = ">=1"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum CountDef {
    Number(u64),
    Text(String),
}
