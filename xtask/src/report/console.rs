//! The console: a line per case as it finishes, then a summary table and the totals.

use super::stats::{Counts, RunStats};
use super::Reporter;
use crate::run::events::{CaseResult, Event, OutsideCases, Status};
use std::io::Write;

pub struct Console {
    out: Box<dyn Write>,
    results: Vec<CaseResult>,
    outside: Vec<OutsideCases>,
    run_dir: String,
    total: usize,
}

impl Console {
    pub fn new(out: Box<dyn Write>) -> Console {
        Console { out, results: Vec::new(), outside: Vec::new(), run_dir: String::new(), total: 0 }
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

impl Reporter for Console {
    fn event(&mut self, e: &Event, stats: &RunStats) -> anyhow::Result<()> {
        let counts = stats.current().map(|k| k.counts).unwrap_or_default();
        match e {
            Event::RunStarted(info) => {
                self.run_dir = info.run_dir.display().to_string();
                self.total = info.cases;
                writeln!(
                    self.out,
                    "daxtest: {} cases on {} ({}), {}",
                    info.cases, info.kernel_release, info.kernel_id, info.accel
                )?;
            }
            // The finished line says everything; a start line would double the output.
            Event::CaseStarted { .. } => {}
            Event::CaseFinished(r) => {
                writeln!(
                    self.out,
                    "[{:>3}/{}] {:<5} {:>6}  {}",
                    counts.total(),
                    self.total,
                    r.status.name().to_uppercase(),
                    secs(r.duration),
                    r.id
                )?;
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
            Event::RunFinished { elapsed, boot_failures, .. } => {
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
                writeln!(self.out, "\n{} in {}", totals(&counts), secs(*elapsed))?;
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
                writeln!(self.out, "results: {}", self.run_dir)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}
