//! The console: a line per case as it finishes, then for each kernel a summary table and the
//! totals; after a run on several kernels, the case x kernel table and its differences.

use super::stats::{Counts, RunStats};
use super::Reporter;
use crate::run::events::{CaseResult, Event, KernelInfo, OutsideCases, RunInfo, Status};
use anyhow::Context;
use std::io::Write;

pub struct Console {
    out: Box<dyn Write>,
    run: Option<RunInfo>,
    kernel: Option<KernelInfo>,
    /// The kernel's results, for its summary table.
    results: Vec<CaseResult>,
    /// The kernel's failures outside every case, for its summary.
    outside: Vec<OutsideCases>,
}

impl Console {
    pub fn new(out: Box<dyn Write>) -> Console {
        Console { out, run: None, kernel: None, results: Vec::new(), outside: Vec::new() }
    }
}

/// One line on kernel messages outside every case window that fail the run.
fn outside_summary(o: &OutsideCases) -> String {
    let what = match (o.bad.len(), &o.gap) {
        (0, Some(_)) => "kernel log records lost".to_string(),
        (n, None) => format!("{n} kernel log line(s) matching a failure pattern"),
        (n, Some(_)) => format!("{n} kernel log line(s) matching a failure pattern, records lost"),
    };
    format!("{what} outside every case, {}: the run fails", o.place)
}

/// `1 passed, 0 failed, ...`: every status, in the order of their declaration.
fn totals(c: &Counts) -> String {
    let count = |s: Status| c.get(s);
    format!(
        "{} passed, {} failed, {} skipped, {} xfail, {} crashed, {} hung, {} errors",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
        count(Status::Xfail),
        count(Status::Crash),
        count(Status::Hang),
        count(Status::Error),
    )
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The case x kernel table; rows whose statuses differ are marked `*`, and listed again below
/// with each kernel's message so that a difference is explained where it is shown.
pub(super) fn table(stats: &RunStats) -> String {
    let rows = stats.grid();
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = stats.kernels.iter().map(|k| k.release.len().max(6)).collect();
    let mut header = format!("  {:<width$}", "case");
    for (k, w) in stats.kernels.iter().zip(&widths) {
        header.push_str(&format!("  {:<w$}", k.release));
    }
    let mut out = format!("{}\n", header.trim_end());
    for row in &rows {
        let mark = if row.differs() { '*' } else { ' ' };
        let mut line = format!("{mark} {:<width$}", row.id);
        for (c, w) in row.cells.iter().zip(&widths) {
            line.push_str(&format!("  {:<w$}", c.map_or("-", |c| c.status.name())));
        }
        out.push_str(&format!("{}\n", line.trim_end()));
    }
    let differing: Vec<_> = rows.iter().filter(|r| r.differs()).collect();
    out.push_str(&format!(
        "\n{} of {} cases differ between the kernels{}\n",
        differing.len(),
        rows.len(),
        if differing.is_empty() { "" } else { " (marked *):" }
    ));
    for row in differing {
        out.push_str(&format!("  {}\n", row.id));
        for (k, c) in stats.kernels.iter().zip(&row.cells) {
            let (status, message) =
                c.map_or(("-", "not run"), |c| (c.status.name(), c.message.as_str()));
            out.push_str(&format!(
                "    {}: {}\n",
                k.release,
                format!("{status} {message}").trim_end()
            ));
        }
    }
    out
}

impl Console {
    /// The kernel's summary: a table of its cases, the totals, what failed outside the cases, the
    /// boots that failed, and for repeated cases the runs that failed.
    fn kernel_summary(
        &mut self,
        run: &RunInfo,
        elapsed: std::time::Duration,
        boot_failures: &[std::path::PathBuf],
        counts: &Counts,
    ) -> anyhow::Result<()> {
        writeln!(self.out)?;
        let width = self.results.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
        writeln!(self.out, "{:<width$}  {:<6} {:>7}  details", "case", "status", "time")?;
        for r in &self.results {
            let details = match r.failed_step() {
                Some(s) if r.status == Status::Fail || r.status == Status::Xfail => {
                    format!(
                        "step {} (line {}, {}): expected {}, got {}",
                        s.number, s.line, s.op, s.expected, s.observed
                    )
                }
                _ => r.message.clone(),
            };
            writeln!(
                self.out,
                "{:<width$}  {:<6} {:>7}  {}",
                r.id,
                r.status.name(),
                secs(r.duration),
                details
            )?;
            for line in r.bad_kernel_lines() {
                writeln!(self.out, "{:<width$}  {:<6} {:>7}    | {line}", "", "", "")?;
            }
        }
        writeln!(self.out, "\n{} in {}", totals(counts), secs(elapsed))?;
        for o in &self.outside {
            writeln!(self.out, "{}", outside_summary(o))?;
        }
        if !boot_failures.is_empty() {
            writeln!(
                self.out,
                "{} VM boot(s) failed: {}",
                boot_failures.len(),
                boot_failures
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        let runs = run.runs_per_case;
        if runs > 1 {
            writeln!(
                self.out,
                "daxtest: {} of {} runs failed ({} cases x up to {runs} runs{})",
                counts.failures(),
                counts.total(),
                self.kernel.as_ref().map_or(0, |k| k.cases) / runs as usize,
                if run.stop_at_failure { ", stopping at the first failure" } else { "" }
            )?;
            for r in self.results.iter().filter(|r| r.status.is_failure()) {
                let (case, _) = r.id.rsplit_once('#').unwrap_or((&r.id, ""));
                writeln!(
                    self.out,
                    "daxtest:   {}: {}; again with: cargo xtask test '{case}' --seed {}",
                    r.id,
                    r.status.name(),
                    r.seed
                )?;
            }
        }
        Ok(())
    }
}

impl Reporter for Console {
    fn event(&mut self, e: &Event, stats: &RunStats) -> anyhow::Result<()> {
        let counts = stats.current().map(|k| k.counts).unwrap_or_default();
        match e {
            // The kernels say what runs.
            Event::RunStarted(info) => self.run = Some(info.clone()),
            Event::KernelStarted(info) => {
                writeln!(
                    self.out,
                    "daxtest: {} cases on {} ({}), {}",
                    info.cases, info.kernel_release, info.kernel_id, info.accel
                )?;
                self.kernel = Some(info.clone());
                self.results.clear();
                self.outside.clear();
            }
            // The finished line says everything; a start line would double the output.
            Event::CaseStarted { .. } => {}
            Event::CaseFinished(r) => {
                writeln!(
                    self.out,
                    "[{:>3}/{}] {:<5} {:>6}  {}",
                    counts.total(),
                    self.kernel.as_ref().map_or(0, |k| k.cases),
                    r.status.name().to_uppercase(),
                    secs(r.duration),
                    r.id
                )?;
                for m in &r.measurements {
                    writeln!(self.out, "              measured: {m}")?;
                }
                if r.status != Status::Pass {
                    writeln!(self.out, "              {}", r.message)?;
                }
                self.results.push(r.clone());
            }
            Event::KernelLogOutsideCases(o) => {
                writeln!(self.out, "daxtest: {}", outside_summary(o))?;
                for line in o.bad.iter().chain(&o.gap) {
                    writeln!(self.out, "    | {line}")?;
                }
                self.outside.push(o.clone());
            }
            Event::VmBooted { boot_time, reason, .. } => {
                writeln!(self.out, "daxtest: VM ready in {} ({reason})", secs(*boot_time))?;
            }
            Event::BootFailed { message, log, retrying } => {
                let then = if *retrying {
                    "booting again"
                } else {
                    "giving up: this case and the rest are errors"
                };
                writeln!(
                    self.out,
                    "daxtest: a VM did not boot ({then}); kept as {}",
                    log.display()
                )?;
                for line in message.lines() {
                    writeln!(self.out, "    | {line}")?;
                }
            }
            Event::KernelFinished { elapsed, boot_failures, .. } => {
                let run = self.run.clone().context("KernelFinished before RunStarted")?;
                self.kernel_summary(&run, *elapsed, boot_failures, &counts)?;
                // With several kernels, each kernel's directory is a run directory of its own.
                if let (true, Some(k)) = (run.kernels > 1, &self.kernel) {
                    writeln!(self.out, "results: {}", run.run_dir.join(&k.dir).display())?;
                }
            }
            Event::RunFinished { .. } => {
                let run = self.run.as_ref().context("RunFinished before RunStarted")?;
                if run.kernels > 1 {
                    write!(self.out, "\n{}", table(stats))?;
                }
                writeln!(self.out, "results: {}", run.run_dir.display())?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}
