//! The run directory's files: one kernel log per case (written as each case finishes, so a run
//! cut short keeps what it had), results.json and serial.log at the end.

use super::stats::RunStats;
use super::Reporter;
use crate::run::events::{CaseResult, Event, OutsideCases, RunInfo, Status};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `kernel-logs/<id>.log`, relative to the run directory; `/` in the id becomes `__`.
pub fn kernel_log_path(id: &str) -> PathBuf {
    let name = crate::names::safe(&id.replace('/', "__"), "-_=.,");
    Path::new("kernel-logs").join(format!("{name}.log"))
}

pub struct Files {
    dir: PathBuf,
    info: Option<RunInfo>,
    results: Vec<CaseResult>,
    outside: Vec<OutsideCases>,
    /// QEMU command lines of the VMs booted so far.
    vms: Vec<String>,
    /// The VM that is up (1-based), if one is: a failed boot leaves none.
    current_vm: Option<usize>,
    /// Per result, the VM (1-based) that ran it; `None` when none did (a skip).
    result_vms: Vec<Option<usize>>,
}

impl Files {
    pub fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            info: None,
            results: Vec::new(),
            outside: Vec::new(),
            vms: Vec::new(),
            current_vm: None,
            result_vms: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct Results<'a> {
    run_id: &'a str,
    kernel_id: &'a str,
    kernel_release: &'a str,
    accel: &'a str,
    qemu_version: &'a str,
    elapsed_s: f64,
    counts: std::collections::BTreeMap<String, usize>,
    /// Logs of VM boots that failed (each retried once), in the run directory.
    boot_failures: Vec<PathBuf>,
    cases: Vec<CaseEntry<'a>>,
    /// Kernel messages outside every case window that failed the run.
    kernel_log_outside_cases: &'a [OutsideCases],
    /// Added for `cargo xtask repro`: the run's inputs and each VM's QEMU command line.
    rerun: &'a crate::run::events::RerunInfo,
    qemu_command_lines: &'a [String],
}

#[derive(Serialize)]
struct CaseEntry<'a> {
    id: &'a str,
    file: &'a Path,
    kernel: &'a str,
    status: Status,
    duration_s: f64,
    message: &'a str,
    /// Why it did not pass, as data (each with a `kind`).
    problems: &'a [crate::run::events::Problem],
    /// Where the time went in the guest, part by part.
    phases: &'a [daxtest_proto::case::CasePhase],
    seed: u64,
    kernel_log_path: PathBuf,
    /// The VM that ran the case (1-based index into `qemu_command_lines`).
    vm: Option<usize>,
}

impl Reporter for Files {
    fn event(&mut self, e: &Event, stats: &RunStats) -> anyhow::Result<()> {
        match e {
            Event::RunStarted(info) => self.info = Some(info.clone()),
            // Nothing to write until a case has a result.
            Event::CaseStarted { .. } => {}
            Event::BootFailed { .. } => self.current_vm = None,
            Event::KernelLogOutsideCases(o) => self.outside.push(o.clone()),
            Event::VmBooted { command_line, .. } => {
                self.vms.push(command_line.clone());
                self.current_vm = Some(self.vms.len());
            }
            Event::CaseFinished(r) => {
                let path = self.dir.join(kernel_log_path(&r.id));
                std::fs::create_dir_all(path.parent().expect("kernel-logs/"))?;
                let mut text = r.kernel_log.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                self.results.push(r.clone());
                // Cases run one after another, each in the VM booted last, if it booted.
                let ran = r.status != Status::Skip;
                self.result_vms.push(self.current_vm.filter(|_| ran));
            }
            Event::RunFinished { elapsed, serial_logs, boot_failures } => {
                let info = self.info.as_ref().context("RunFinished before RunStarted")?;
                let results = Results {
                    run_id: &info.run_id,
                    kernel_id: &info.kernel_id,
                    kernel_release: &info.kernel_release,
                    accel: &info.accel,
                    qemu_version: &info.qemu_version,
                    elapsed_s: elapsed.as_secs_f64(),
                    counts: stats.counts.by_name(),
                    boot_failures: boot_failures
                        .iter()
                        .map(|p| p.file_name().map_or(p.clone(), PathBuf::from))
                        .collect(),
                    cases: self
                        .results
                        .iter()
                        .zip(&self.result_vms)
                        .map(|(r, vm)| CaseEntry {
                            id: &r.id,
                            file: &r.file,
                            kernel: &r.kernel,
                            status: r.status,
                            duration_s: r.duration.as_secs_f64(),
                            message: &r.message,
                            problems: &r.problems,
                            phases: &r.phases,
                            seed: r.seed,
                            kernel_log_path: kernel_log_path(&r.id),
                            vm: *vm,
                        })
                        .collect(),
                    kernel_log_outside_cases: &self.outside,
                    rerun: &info.rerun,
                    qemu_command_lines: &self.vms,
                };
                let path = self.dir.join("results.json");
                std::fs::write(&path, serde_json::to_vec_pretty(&results)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                let mut serial = String::new();
                for (i, log) in serial_logs.iter().enumerate() {
                    if serial_logs.len() > 1 {
                        serial.push_str(&format!("=== VM {} ===\n", i + 1));
                    }
                    serial.push_str(&String::from_utf8_lossy(
                        &std::fs::read(log).unwrap_or_default(),
                    ));
                }
                std::fs::write(self.dir.join("serial.log"), serial)?;
            }
        }
        Ok(())
    }
}
