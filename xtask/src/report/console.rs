//! The console: a line per case as it finishes, then for each kernel a summary table, the
//! totals and the cases that did not pass, again (a CI log is read from its end); after a run
//! on several kernels, the case x kernel table and its differences. On a terminal, a progress
//! line (see [`super::progress`]) stays below those lines, redrawn each second; elsewhere (CI
//! logs, pipes, the tests) the lines are all there is.

use super::progress::{fit, latest, PlannedKernel, Progress};
use super::stats::{Counts, RunStats};
use super::Reporter;
use crate::run::events::{CaseResult, Event, KernelInfo, OutsideCases, RunInfo, Status};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Console {
    out: Box<dyn Write>,
    /// On a terminal: the progress line, drawn below what `out` prints.
    live: Option<Live>,
    run: Option<RunInfo>,
    kernel: Option<KernelInfo>,
    /// The kernel's results, for its summary table.
    results: Vec<CaseResult>,
    /// The kernel's failures outside every case, for its summary.
    outside: Vec<OutsideCases>,
}

impl Console {
    /// Plain lines on `out`.
    pub fn new(out: Box<dyn Write>) -> Console {
        Console {
            out,
            live: None,
            run: None,
            kernel: None,
            results: Vec::new(),
            outside: Vec::new(),
        }
    }

    /// The console on stderr: with the progress line of the `plan`ned cases when stderr is a
    /// terminal (and `TERM` is not `dumb`), plain lines otherwise. The earlier durations are the
    /// latest run's under `root`: make this console before the run's directory becomes the
    /// latest.
    pub fn stderr(root: &Path, plan: Vec<PlannedKernel>) -> Console {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        if !terminal {
            return Console::new(Box::new(std::io::stderr()));
        }
        let live = Live::start(Progress::new(plan, latest(root)));
        let out = LiveOut { screen: live.screen.clone(), buf: Vec::new() };
        Console { live: Some(live), ..Console::new(Box::new(out)) }
    }
}

/// Erases the terminal's current line and returns to its start.
const CLEAR_LINE: &[u8] = b"\r\x1b[2K";

/// The progress line and what it shows, shared with the thread that redraws it.
struct Screen {
    progress: Progress,
    /// Over the whole run, from [`RunStats`].
    counts: Counts,
    /// Whether the line is on the terminal, the cursor at its end.
    drawn: bool,
    stop: bool,
}

impl Screen {
    /// `bytes` (whole lines) above the progress line, and the line redrawn below them: one
    /// write, so that the terminal never shows the line half drawn.
    fn print(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(bytes.len() + 200);
        if self.drawn {
            text.extend_from_slice(CLEAR_LINE);
        }
        text.extend_from_slice(bytes);
        self.drawn = self.progress.shown();
        if self.drawn {
            let line = self.progress.line(&self.counts, Instant::now());
            text.extend_from_slice(fit(&line, columns()).as_bytes());
        }
        let mut err = std::io::stderr().lock();
        err.write_all(&text)?;
        err.flush()
    }
}

/// The terminal's width on stderr; 80 when it does not say.
fn columns() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(w) if w.ws_col > 0 => w.ws_col.into(),
        _ => 80,
    }
}

/// The progress line's screen, and the thread that redraws it each second (the running cases'
/// times and the estimate move between events).
struct Live {
    screen: Arc<(Mutex<Screen>, Condvar)>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

fn lock(screen: &(Mutex<Screen>, Condvar)) -> MutexGuard<'_, Screen> {
    screen.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Live {
    fn start(progress: Progress) -> Live {
        let screen = Arc::new((
            Mutex::new(Screen { progress, counts: Counts::default(), drawn: false, stop: false }),
            Condvar::new(),
        ));
        let shared = screen.clone();
        let ticker = std::thread::spawn(move || {
            let mut s = lock(&shared);
            while !s.stop {
                s = (shared.1.wait_timeout(s, Duration::from_secs(1)))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                if !s.stop && s.drawn {
                    let _ = s.print(&[]);
                }
            }
        });
        Live { screen, ticker: Some(ticker) }
    }
}

impl Drop for Live {
    /// The ticker stops; a line still drawn (a run cut short) is kept, and what follows starts
    /// on a line of its own.
    fn drop(&mut self) {
        lock(&self.screen).stop = true;
        self.screen.1.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        if lock(&self.screen).drawn {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
}

/// The console's output on a terminal: what an event prints is held until the event's flush,
/// then printed above the progress line.
struct LiveOut {
    screen: Arc<(Mutex<Screen>, Condvar)>,
    buf: Vec<u8>,
}

impl Write for LiveOut {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let printed = lock(&self.screen).print(&self.buf);
        self.buf.clear();
        printed
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

/// What the summary says of a case: the failed step, or else the message.
fn details(r: &CaseResult) -> String {
    match r.failed_step() {
        Some(s) if r.status == Status::Fail || r.status == Status::Xfail => format!(
            "step {} (line {}, {}): expected {}, got {}",
            s.number, s.line, s.op, s.expected, s.observed
        ),
        _ => r.message.clone(),
    }
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
            writeln!(
                self.out,
                "{:<width$}  {:<6} {:>7}  {}",
                r.id,
                r.status.name(),
                secs(r.duration),
                details(r)
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
        // The failures again, last: a CI log is read from its end, and a table of a hundred
        // cases hides its one error.
        let failures: Vec<&CaseResult> =
            self.results.iter().filter(|r| r.status.is_failure()).collect();
        if runs == 1 && !failures.is_empty() {
            writeln!(self.out, "not passed, {} of {}:", failures.len(), self.results.len())?;
            for r in failures {
                writeln!(self.out, "  {:<6} {}: {}", r.status.name(), r.id, details(r))?;
            }
        }
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
        if let Some(live) = &self.live {
            let mut s = lock(&live.screen);
            s.progress.update(e, Instant::now());
            s.counts = stats.counts;
        }
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
