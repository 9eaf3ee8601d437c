//! The run directory's files: one kernel log per case (written as each case finishes, so a run
//! cut short keeps what it had), serial.log as each kernel finishes, and results.json (see
//! [`super::results`]) at the end. A run on several kernels gives each kernel a complete run
//! directory of its own under the run's, with a results.json of that kernel alone.

use super::results::{under, CaseEntry, KernelEntry, OutsideEntry, Results, SCHEMA_VERSION};
use super::stats::{Counts, RunStats};
use super::Reporter;
use crate::run::events::{Event, KernelInfo, RunInfo};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `kernel-logs/<id>.log`, relative to the run directory; `/` in the id becomes `__`.
pub fn kernel_log_path(id: &str) -> PathBuf {
    let name = crate::names::safe(&id.replace('/', "__"), "-_=.,");
    Path::new("kernel-logs").join(format!("{name}.log"))
}

pub struct Files {
    dir: PathBuf,
    run: Option<RunInfo>,
    /// Every kernel's that has started; the last is the one running.
    kernels: Vec<KernelFiles>,
}

/// What a kernel's results hold so far, with paths relative to its own run directory.
struct KernelFiles {
    info: KernelInfo,
    cases: Vec<CaseEntry>,
    outside: Vec<OutsideEntry>,
    /// QEMU command lines of the VMs booted so far, by number.
    vms: Vec<String>,
    /// Set when the kernel finishes.
    elapsed: Duration,
    counts: Counts,
    boot_failures: Vec<PathBuf>,
}

impl Files {
    pub fn new(dir: &Path) -> Files {
        Files { dir: dir.to_path_buf(), run: None, kernels: Vec::new() }
    }

    fn kernel(&mut self, what: &str) -> anyhow::Result<&mut KernelFiles> {
        self.kernels.last_mut().with_context(|| format!("{what} before KernelStarted"))
    }
}

impl KernelFiles {
    /// Its entry in a results.json from which its run directory is `dir` (`.` in its own).
    fn entry(&self, dir: &Path) -> KernelEntry {
        let info = &self.info;
        KernelEntry {
            kernel_id: info.kernel_id.clone(),
            kernel_release: info.kernel_release.clone(),
            accel: info.accel.clone(),
            qemu_version: info.qemu_version.clone(),
            elapsed_s: self.elapsed.as_secs_f64(),
            counts: self.counts.by_name(),
            dir: dir.to_path_buf(),
            rerun: info.rerun.clone(),
            qemu_command_lines: self.vms.clone(),
            boot_failures: self.boot_failures.iter().map(|p| under(dir, p)).collect(),
        }
    }
}

/// The results of `kernels`, each with its run directory (relative to the file's).
fn results(
    run_id: String,
    elapsed: Duration,
    counts: &Counts,
    differing: Vec<String>,
    kernels: &[(&KernelFiles, &Path)],
) -> Results {
    let mut r = Results {
        schema_version: SCHEMA_VERSION,
        run_id,
        elapsed_s: elapsed.as_secs_f64(),
        counts: counts.by_name(),
        kernels: Vec::new(),
        cases: Vec::new(),
        differing,
        kernel_log_outside_cases: Vec::new(),
        selection: None,
    };
    for (k, dir) in kernels {
        r.kernels.push(k.entry(dir));
        r.cases.extend(
            k.cases.iter().map(|c| CaseEntry {
                kernel_log_path: under(dir, &c.kernel_log_path),
                ..c.clone()
            }),
        );
        r.kernel_log_outside_cases.extend(k.outside.iter().cloned());
    }
    r
}

fn write(dir: &Path, results: &Results) -> anyhow::Result<()> {
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("writing {}", path.display()))
}

impl Reporter for Files {
    fn event(&mut self, e: &Event, stats: &RunStats) -> anyhow::Result<()> {
        match e {
            Event::RunStarted(info) => self.run = Some(info.clone()),
            Event::KernelStarted(info) => self.kernels.push(KernelFiles {
                info: info.clone(),
                cases: Vec::new(),
                outside: Vec::new(),
                vms: Vec::new(),
                elapsed: Duration::ZERO,
                counts: Counts::default(),
                boot_failures: Vec::new(),
            }),
            // Nothing to write until a case has a result.
            Event::CaseStarted { .. } => {}
            Event::BootFailed { .. } => {}
            Event::KernelLogOutsideCases(o) => {
                let k = self.kernel("KernelLogOutsideCases")?;
                let kernel = k.info.kernel_release.clone();
                k.outside.push(OutsideEntry { kernel, outside: o.clone() });
            }
            Event::VmBooted { vm, command_line, .. } => {
                let k = self.kernel("VmBooted")?;
                // VMs booting at once may be announced out of their order.
                if k.vms.len() < *vm {
                    k.vms.resize(*vm, String::new());
                }
                k.vms[vm - 1] = command_line.clone();
            }
            Event::CaseFinished(r) => {
                let run_dir = self.dir.clone();
                let k = self.kernel("CaseFinished")?;
                let log = kernel_log_path(&r.id);
                let path = run_dir.join(under(&k.info.dir, &log));
                std::fs::create_dir_all(path.parent().expect("kernel-logs/"))?;
                let mut text = r.kernel_log.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                k.cases.push(CaseEntry {
                    id: r.id.clone(),
                    file: r.file.clone(),
                    kernel: r.kernel.clone(),
                    status: r.status,
                    duration_s: r.duration.as_secs_f64(),
                    message: r.message.clone(),
                    problems: r.problems.clone(),
                    phases: r.phases.clone(),
                    seed: r.seed,
                    kernel_log_path: log,
                    vm: r.vm,
                    measurements: r.measurements.clone(),
                    profiles: r.profiles.clone(),
                    known_bug: r.known_bug.clone(),
                });
            }
            Event::KernelFinished { elapsed, serial_logs, boot_failures } => {
                let run_id =
                    self.run.as_ref().context("KernelFinished before RunStarted")?.run_id.clone();
                let dir = self.dir.clone();
                let k = self.kernel("KernelFinished")?;
                k.elapsed = *elapsed;
                k.counts = stats.current().map(|s| s.counts).unwrap_or_default();
                // The runner keeps them in the kernel's directory.
                k.boot_failures = boot_failures
                    .iter()
                    .map(|p| p.file_name().map_or(p.clone(), PathBuf::from))
                    .collect();
                let own = under(&dir, &k.info.dir);
                let mut serial = String::new();
                for (i, log) in serial_logs.iter().enumerate() {
                    if serial_logs.len() > 1 {
                        serial.push_str(&format!("=== VM {} ===\n", i + 1));
                    }
                    serial.push_str(&String::from_utf8_lossy(
                        &std::fs::read(log).unwrap_or_default(),
                    ));
                }
                let path = own.join("serial.log");
                std::fs::write(&path, serial)
                    .with_context(|| format!("writing {}", path.display()))?;
                // A kernel of several: its own run directory has its own results.json.
                if k.info.dir != Path::new(".") {
                    let id = format!("{run_id}/{}", k.info.dir.display());
                    let mine = results(id, k.elapsed, &k.counts, vec![], &[(k, Path::new("."))]);
                    write(&own, &mine)?;
                }
            }
            Event::RunFinished { elapsed } => {
                let run = self.run.as_ref().context("RunFinished before RunStarted")?;
                let kernels: Vec<(&KernelFiles, &Path)> =
                    self.kernels.iter().map(|k| (k, k.info.dir.as_path())).collect();
                let differing = stats.differing().into_iter().map(str::to_string).collect();
                let mut all =
                    results(run.run_id.clone(), *elapsed, &stats.counts, differing, &kernels);
                all.selection = run.selection.clone();
                write(&self.dir, &all)?;
            }
        }
        Ok(())
    }
}
