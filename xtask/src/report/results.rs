//! results.json, schema 4: its types, written by the files reporter and read by `repro`,
//! `bench suite` and the tests. One shape for a run on one kernel and on several: each case says
//! its kernel, each kernel its run directory, and every path is relative to the directory that
//! holds the file. README's "results.json" section documents it field by field.

use crate::run::events::{
    KnownBug, OutsideCases, Problem, RerunInfo, Selection, Status, StepProfile,
};
use anyhow::Context;
use daxtest_proto::case::CasePhase;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Raised when a field changes meaning, goes or moves; a reader refuses other versions.
pub const SCHEMA_VERSION: u32 = 4;

/// A run's results.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub run_id: String,
    pub elapsed_s: f64,
    /// Cases per status over every kernel; a status that did not occur is left out.
    pub counts: BTreeMap<String, usize>,
    /// The kernels in the order they ran: one, or one per `--kernel`.
    pub kernels: Vec<KernelEntry>,
    /// Every case on every kernel, kernel after kernel, each in the order it finished.
    pub cases: Vec<CaseEntry>,
    /// Ids of the cases whose status is not the same on every kernel (none with one kernel).
    pub differing: Vec<String>,
    /// Kernel messages outside every case window that failed the run.
    pub kernel_log_outside_cases: Vec<OutsideEntry>,
    /// What the run was asked to run (absent for runs of one case, such as `repro`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
}

/// A kernel's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelEntry {
    /// Kernel spec and package, e.g. `debian:6.12 (linux-image-...=...)`, or the path.
    pub kernel_id: String,
    /// `uname -r`, as cases name their kernel.
    pub kernel_release: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub qemu_version: String,
    pub elapsed_s: f64,
    /// Its cases per status.
    pub counts: BTreeMap<String, usize>,
    /// Its run directory: `.` on one kernel; on several, a directory of its own, a complete run
    /// directory whose results.json has this kernel alone.
    pub dir: PathBuf,
    /// What `cargo xtask repro` needs to run a case again as this run did.
    pub rerun: RerunInfo,
    /// Each VM's QEMU command line, in the order they booted (a case's `vm` counts from 1).
    pub qemu_command_lines: Vec<String>,
    /// Logs of the VM boots that failed (each was retried once).
    pub boot_failures: Vec<PathBuf>,
}

/// A case as it ran on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEntry {
    /// `ID#k` for run k of a repeated case.
    pub id: String,
    /// The scenario file it comes from.
    pub file: PathBuf,
    /// `uname -r` of the kernel it ran on.
    pub kernel: String,
    pub status: Status,
    pub duration_s: f64,
    /// One line: the problems rendered, why it was skipped...; empty for a pass.
    pub message: String,
    /// Why it did not pass, as data (each with a `kind`).
    pub problems: Vec<Problem>,
    /// Where the time went in the guest, part by part.
    pub phases: Vec<CasePhase>,
    pub seed: u64,
    /// The kernel messages of its window.
    pub kernel_log_path: PathBuf,
    /// The VM that ran it, in its kernel's `qemu_command_lines`; null when none did (a skip, a
    /// VM that did not boot).
    pub vm: Option<usize>,
    /// What it measured, one line each (a store_loop's records across a power cut).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<String>,
    /// The figures of its `store_profile` steps: samples, faults by size, metadata work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<StepProfile>,
    /// The known bug its status refers to (an xfail; a pass of an intermittent one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_bug: Option<KnownBug>,
}

/// Kernel messages outside every case window that failed the run, and the kernel that logged
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutsideEntry {
    /// `uname -r`.
    pub kernel: String,
    #[serde(flatten)]
    pub outside: OutsideCases,
}

/// Reads `run_dir/results.json`, refusing another schema than this daxtest's.
pub fn read(run_dir: &Path) -> anyhow::Result<Results> {
    let path = run_dir.join("results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let version = value.get("schema_version").and_then(serde_json::Value::as_u64);
    anyhow::ensure!(
        version == Some(SCHEMA_VERSION.into()),
        "{}: schema_version {}, where this daxtest reads {SCHEMA_VERSION}: another version of \
         daxtest wrote it",
        path.display(),
        version.map_or("absent".to_string(), |v| v.to_string())
    );
    serde_json::from_value(value)
        .with_context(|| format!("{}: not results.json schema {SCHEMA_VERSION}", path.display()))
}

impl Results {
    /// Each case phase's time (µs) summed over each kernel's cases, the kernels in their order:
    /// the phases in the order they first appear.
    pub fn phase_totals(&self) -> Vec<(&str, Vec<u64>)> {
        let mut totals: Vec<(&str, Vec<u64>)> = Vec::new();
        for c in &self.cases {
            let Some(k) = self.kernels.iter().position(|k| k.kernel_release == c.kernel) else {
                continue;
            };
            for p in &c.phases {
                let at = match totals.iter().position(|(n, _)| *n == p.name) {
                    Some(at) => at,
                    None => {
                        totals.push((&p.name, vec![0; self.kernels.len()]));
                        totals.len() - 1
                    }
                };
                totals[at].1[k] += p.micros;
            }
        }
        totals
    }
}

/// `path` under `dir`, where `dir` may be `.`.
pub fn under(dir: &Path, path: &Path) -> PathBuf {
    if dir == Path::new(".") {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}
