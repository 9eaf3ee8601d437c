//! Scenario files (`scenarios/*.toml`, format 1, documented in scenarios/README.md) and the case
//! model they expand into: `def` (as written), `expand` (matrix, variables, expectations),
//! `lint` and `limits` (what a step may not say), `select` (which cases a command line picks).
//! Uses only the crate's support modules and the protocol's types.

use crate::version::{Constraint, KernelVersion};
use anyhow::Context;
use daxtest_proto::case::{Expect, Fs, Op};
use daxtest_proto::Device;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub const FORMAT: u32 = 1;
pub const SCENARIO_DIR: &str = "scenarios";

/// A user error in a scenario file, with where it is and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelLogRules {
    /// Patterns the case must log.
    #[serde(default)]
    pub expected: Vec<String>,
    /// Lines that match a failure pattern but are accepted.
    #[serde(default)]
    pub benign: Vec<String>,
    /// Extra failure patterns.
    #[serde(default)]
    pub forbidden: Vec<String>,
}

/// `timeout = { step_s = 30, case_s = 120 }`: seconds before a case is reported as hung.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseTimeouts {
    pub step_s: Option<u64>,
    pub case_s: Option<u64>,
}

/// A known kernel bug: the case is expected to fail on the kernels it names, with this symptom.
#[derive(Debug, Clone, PartialEq)]
pub struct Xfail {
    pub kernel: Vec<Constraint>,
    /// The devices it shows on (empty: every one).
    pub device: Vec<Device>,
    pub reason: String,
    pub link: String,
    pub symptom: Symptom,
    /// The bug shows only when a race is lost: the case may pass on an affected kernel, and a
    /// pass is then a pass (saying the bug did not show), not an unexpected one.
    pub intermittent: bool,
}

impl Xfail {
    /// The bug as results name it.
    pub fn known_bug(&self) -> crate::run::events::KnownBug {
        crate::run::events::KnownBug { reason: self.reason.clone(), link: self.link.clone() }
    }
}

/// How a known bug shows: a step's errno or signal, or a message (a step's observation or a
/// kernel-log line) matching a regular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Symptom {
    /// 1-based; `None` for a kernel-log symptom.
    pub step: Option<usize>,
    pub what: SymptomKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SymptomKind {
    Errno(String),
    Signal(String),
    Message(String),
}

impl fmt::Display for Symptom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.step, &self.what) {
            (Some(n), SymptomKind::Errno(e)) => write!(f, "step {n} fails with {e}"),
            (Some(n), SymptomKind::Signal(s)) => write!(f, "step {n} is killed by {s}"),
            (Some(n), SymptomKind::Message(m)) => write!(f, "step {n} shows /{m}/"),
            (None, SymptomKind::Message(m)) => write!(f, "the kernel logs /{m}/"),
            (None, other) => write!(f, "{other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: usize,
    pub op: Op,
    /// Alternatives, the first whose conditions hold for the run's kernel and device wins.
    pub expect: Vec<(When, Expect)>,
}

/// The run-time part of an expectation's `when`: the kernel's version and the run's device (the
/// matrix's fs and mount are chosen when the case is expanded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct When {
    pub kernel: Vec<Constraint>,
    /// Empty: every device.
    pub device: Vec<Device>,
}

impl When {
    pub fn holds(&self, kernel: KernelVersion, device: Device) -> bool {
        self.kernel.iter().all(|c| c.holds(kernel))
            && (self.device.is_empty() || self.device.contains(&device))
    }
}

/// One matrix cell of one case of one scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub scenario: String,
    pub file: PathBuf,
    pub line: usize,
    pub summary: String,
    pub fs: Fs,
    pub mount: String,
    pub mkfs: Vec<String>,
    pub requires: Vec<Constraint>,
    /// The devices the case runs on (empty: every one); elsewhere it is skipped.
    pub requires_device: Vec<Device>,
    pub xfail: Vec<Xfail>,
    pub kernel_log: KernelLogRules,
    pub seed: u64,
    /// Runs on a VM of its own, booted for it and ended after it.
    pub fresh_vm: bool,
    /// The filesystem is checked after the unmount (xfs_repair -n -P, e2fsck -fn).
    pub fsck: bool,
    /// The case's own timeouts, else the file's; unset: the recipe's.
    pub timeout: CaseTimeouts,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    /// Line and column of `name` in the file, for diagnostics.
    name_at: (usize, usize),
    pub summary: String,
    pub references: Vec<String>,
    pub tags: Vec<String>,
    pub cases: Vec<Case>,
}

pub const DEVICE: &str = "/dev/pmem0";
pub const MOUNT_POINT: &str = "/mnt/test";

/// Every `.toml` file under the given paths (files as they are, directories recursively),
/// sorted, without README or hidden files, each once. A path that does not exist, or a directory
/// without scenario files, is an input error.
pub fn find_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let mut found = Vec::new();
        if p.is_dir() {
            toml_files_under(p, &mut found)?;
            if found.is_empty() {
                return Err(crate::exit::input(format!(
                    "{}: no scenario files (*.toml) in this directory",
                    p.display()
                )));
            }
        } else if p.exists() {
            found.push(p.clone());
        } else {
            return Err(crate::exit::input(format!("{}: no such file or directory", p.display())));
        }
        // The same file named twice (`scenarios/ scenarios/reflink.toml`) is loaded once.
        out.extend(
            found.into_iter().filter(|f| seen.insert(f.canonicalize().unwrap_or(f.clone()))),
        );
    }
    Ok(out)
}

fn toml_files_under(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|e| !e.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    entries.sort();
    let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
    out.extend(files.into_iter().filter(|f| f.extension().is_some_and(|x| x == "toml")));
    for d in &dirs {
        toml_files_under(d, out)?;
    }
    Ok(())
}

/// Loads and validates every file; all diagnostics of all files, not just the first.
pub fn load_all(files: &[PathBuf]) -> (Vec<Scenario>, Vec<Diagnostic>) {
    let mut scenarios = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => match parse(&text, f) {
                Ok(s) => scenarios.push(s),
                Err(d) => diags.extend(d),
            },
            Err(e) => diags.push(Diagnostic {
                file: f.clone(),
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    // Ids are stable names: a duplicate would make results ambiguous.
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut names: HashMap<String, (PathBuf, (usize, usize))> = HashMap::new();
    for s in &scenarios {
        if let Some((other, (line, col))) =
            names.insert(s.name.clone(), (s.file.clone(), s.name_at))
        {
            diags.push(Diagnostic {
                file: s.file.clone(),
                line: s.name_at.0,
                col: s.name_at.1,
                message: format!(
                    "scenario name {:?} is also used by {}:{line}:{col}: names must be unique \
                     (every case id starts with it); rename one of them",
                    s.name,
                    other.display()
                ),
            });
        }
        for c in &s.cases {
            if let Some((file, line)) = seen.insert(c.id.clone(), (c.file.clone(), c.line)) {
                diags.push(Diagnostic {
                    file: c.file.clone(),
                    line: c.line,
                    col: 1,
                    message: format!(
                        "case id {} is also made by {}:{}: give the case another id",
                        c.id,
                        file.display(),
                        line
                    ),
                });
            }
        }
    }
    diags.sort();
    diags.dedup();
    (scenarios, diags)
}

mod def;
mod expand;
mod limits;
mod lint;
mod select;

pub use expand::parse;
pub use limits::op_paths;
pub use select::Selection;

#[cfg(test)]
mod tests;
