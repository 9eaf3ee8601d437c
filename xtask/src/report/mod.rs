//! Reporters: consumers of runner events. The console shows progress and a summary; the files
//! of the run directory (results.json, junit.xml, kernel-logs/, serial.log, report.html) are
//! written by their own reporters. None of them decides anything about a case, and what they count is counted
//! once, in [`stats`]. Uses the run's events only.

mod console;
pub use console::Console;
mod files;
pub use files::kernel_log_path;
pub mod faults;
pub mod html;
mod junit;
pub mod kcidb;
pub mod merge;
pub mod progress;
pub mod results;
pub mod stats;

use crate::run::events::Event;
use anyhow::Context;
use stats::RunStats;
use std::path::{Path, PathBuf};

pub trait Reporter {
    /// `stats` already counts `e`.
    fn event(&mut self, e: &Event, stats: &RunStats) -> anyhow::Result<()>;
}

/// Fans each event out to every reporter, with the run's statistics; one failing reporter does
/// not silence the others.
pub struct Reporters {
    reporters: Vec<Box<dyn Reporter>>,
    stats: RunStats,
}

impl Reporters {
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Reporters {
        Reporters { reporters, stats: RunStats::default() }
    }

    /// The console, and the files of `run_dir` (report.html after the files it is made of).
    pub fn standard(run_dir: &Path, console: Console) -> Reporters {
        Reporters::new(vec![
            Box::new(console),
            Box::new(files::Files::new(run_dir)),
            Box::new(junit::Junit::new(run_dir)),
            Box::new(html::Html::new(run_dir)),
        ])
    }

    pub fn event(&mut self, e: &Event) -> anyhow::Result<()> {
        self.stats.update(e);
        let mut first_error = None;
        for r in &mut self.reporters {
            if let Err(err) = r.event(e, &self.stats) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Creates `target/daxtest/runs/<run-id>/` and points `runs/latest` at it. The id is the UTC
/// time plus the process id, so two runs at once never share a directory.
pub fn prepare_run_dir(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    let runs = root.join("target/daxtest/runs");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let id = format!("{}-{}", utc_stamp(secs), std::process::id());
    let dir = runs.join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Atomic: a new link under a private name, renamed over the old one.
    let tmp = runs.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&id, &tmp)?;
    std::fs::rename(&tmp, runs.join("latest"))?;
    Ok((id, dir))
}

/// The directory of a kernel's share of a run on several kernels: its release, made unique among
/// those already `taken`.
pub fn kernel_dir_name(release: &str, taken: &[String]) -> String {
    let base = crate::names::safe(release, "-_.+");
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The time at the start of a run id: `20261124-153012`, UTC.
pub const RUN_ID_TIME: &str = "%Y%m%d-%H%M%S";

/// `20261124-153012` from seconds since the epoch (UTC, proleptic Gregorian).
pub fn utc_stamp(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .expect("a time the system clock gave")
        .format(RUN_ID_TIME)
        .to_string()
}

#[cfg(test)]
mod tests;
