//! Watching a running case: its progress lines (for the step and case deadlines) and the serial
//! console (a panic or a hang detector's report ends the wait at once).

use crate::run::kernel_log;
use daxtest_proto::case::{CaseSpec, PROGRESS};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(super) struct Limits {
    pub(super) step: Duration,
    pub(super) case: Duration,
}

/// Why the host stopped waiting for a case.
#[derive(Debug)]
pub(super) enum Stop {
    Hang(String),
    Crash,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Hang(why) => f.write_str(why),
            Stop::Crash => f.write_str("the kernel crashed"),
        }
    }
}
impl std::error::Error for Stop {}

/// Watches a running case: its progress lines (for the step and case deadlines) and the serial
/// console (a panic or a hang detector's report ends the wait at once).
pub(super) struct Watch<'a> {
    serial_log: PathBuf,
    serial_start: u64,
    serial_checked: Instant,
    limits: Limits,
    spec: &'a CaseSpec,
    /// Steps of the case run by earlier parts (before a power cut): the agent numbers a part's
    /// steps from 1.
    steps_before: usize,
    started: Instant,
    /// The latest progress line and when it came.
    phase: (String, Instant),
}

impl<'a> Watch<'a> {
    pub(super) fn new(serial_log: &Path, limits: Limits, spec: &'a CaseSpec) -> Self {
        let now = Instant::now();
        Watch {
            serial_log: serial_log.to_path_buf(),
            serial_start: std::fs::metadata(serial_log).map(|m| m.len()).unwrap_or(0),
            serial_checked: now,
            limits,
            spec,
            steps_before: 0,
            started: now,
            phase: ("start".into(), now),
        }
    }

    /// The watched part of the case begins after `n` steps (a power cut's).
    pub(super) fn steps_before(mut self, n: usize) -> Self {
        self.steps_before = n;
        self
    }

    /// What the case was doing, for messages: `step 3 (line 12, write)`.
    pub(super) fn step(&self) -> String {
        let phase = &self.phase.0;
        let step = phase
            .strip_prefix("step ")
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| n + self.steps_before);
        match step.and_then(|n| Some((n, self.spec.steps.get(n.checked_sub(1)?)?))) {
            Some((n, s)) => format!("step {n} (line {}, {})", s.line, s.op.name()),
            None => phase.clone(),
        }
    }

    pub(super) fn serial_since_start(&self) -> String {
        use std::io::{Read, Seek};
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial_log) {
            let _ = f.seek(std::io::SeekFrom::Start(self.serial_start));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Whether the case may go on: its step and case deadlines, and the console (a panic or a
    /// hang detector's report ends the wait at once). `stderr` is the agent's so far.
    pub(super) fn poll(&mut self, stderr: &[u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        let text = String::from_utf8_lossy(stderr);
        if let Some(last) = text.lines().rev().find_map(|l| l.strip_prefix(PROGRESS)) {
            if last != self.phase.0 {
                self.phase = (last.to_string(), now);
            }
        }
        if now - self.started > self.limits.case {
            return Err(Stop::Hang(format!(
                "the case did not finish within {} s (the case timeout); it was in {}",
                self.limits.case.as_secs(),
                self.step()
            ))
            .into());
        }
        if self.phase.0.starts_with("step ") && now - self.phase.1 > self.limits.step {
            return Err(Stop::Hang(format!(
                "{} did not return within {} s (the step timeout)",
                self.step(),
                self.limits.step.as_secs()
            ))
            .into());
        }
        // The console is read at most every 200 ms: a panic needs no faster answer.
        if now - self.serial_checked > Duration::from_millis(200) {
            self.serial_checked = now;
            let serial = self.serial_since_start();
            if kernel_log::crash_report(&serial).is_some() {
                return Err(Stop::Crash.into());
            }
            if let Some(line) = kernel_log::hang_report(&serial) {
                return Err(Stop::Hang(format!(
                    "the kernel reported a hang in {}: {}",
                    self.step(),
                    line.trim()
                ))
                .into());
            }
        }
        Ok(())
    }
}
