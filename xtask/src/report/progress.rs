//! The live progress line of a run on a terminal: cases done of all, the failures so far, the
//! cases running now and an estimate of the time left. Several cases may run at once: each
//! `CaseStarted` adds a running case and the `CaseFinished` naming its id removes it. The
//! estimate takes each case's time from an earlier run (`runs/latest`, read before this run
//! moves it) when it has one, else the mean of this run's cases so far.

use super::stats::Counts;
use crate::run::events::{Event, Status};
use crate::run::shard::Durations;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// A kernel's cases as planned, in order: each id, and whether it runs in a VM (a skip, or a
/// case that cannot be resolved, takes no time).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedKernel {
    /// `uname -r`, as results.json names a case's kernel.
    pub release: String,
    pub cases: Vec<(String, bool)>,
}

/// The latest run's case durations, if it left a readable results.json; none otherwise (a first
/// run, or a run that was interrupted): the estimate then comes from this run's cases.
pub fn latest(root: &Path) -> Durations {
    super::results::read(&root.join("target/daxtest/runs/latest"))
        .map(|r| Durations::from_results(&r))
        .unwrap_or_default()
}

/// What the progress line shows, updated from the run's events; the counts come from
/// [`super::stats::RunStats`], where they are counted once.
#[derive(Debug)]
pub struct Progress {
    plan: Vec<PlannedKernel>,
    earlier: Durations,
    /// The kernel whose cases run, by its position in the plan (kernels run one after another).
    kernel: Option<usize>,
    /// Ids of the kernel's cases that have started.
    started: HashSet<String>,
    /// Cases running now, each with when it started, in the order they started.
    running: Vec<(String, Instant)>,
    /// Sum and number of the durations of this run's cases that ran in a VM.
    ran: (f64, usize),
    /// The most cases seen running at once: the estimate divides the work left by it.
    parallel: usize,
    finished: bool,
}

impl Progress {
    pub fn new(plan: Vec<PlannedKernel>, earlier: Durations) -> Progress {
        Progress {
            plan,
            earlier,
            kernel: None,
            started: HashSet::new(),
            running: Vec::new(),
            ran: (0.0, 0),
            parallel: 1,
            finished: false,
        }
    }

    pub fn update(&mut self, e: &Event, now: Instant) {
        match e {
            Event::KernelStarted(_) => {
                self.kernel = Some(self.kernel.map_or(0, |k| k + 1));
                self.started.clear();
                self.running.clear();
            }
            Event::CaseStarted { id } => {
                self.started.insert(id.clone());
                self.running.push((id.clone(), now));
                self.parallel = self.parallel.max(self.running.len());
            }
            Event::CaseFinished(r) => {
                self.running.retain(|(id, _)| *id != r.id);
                if r.status != Status::Skip && !r.duration.is_zero() {
                    self.ran.0 += r.duration.as_secs_f64();
                    self.ran.1 += 1;
                }
            }
            Event::RunFinished { .. } => self.finished = true,
            Event::RunStarted(_)
            | Event::VmBooted { .. }
            | Event::BootFailed { .. }
            | Event::KernelLogOutsideCases(_)
            | Event::KernelFinished { .. } => {}
        }
    }

    /// Whether there is a line to show: from the first kernel's start to the run's end.
    pub fn shown(&self) -> bool {
        self.kernel.is_some() && !self.finished
    }

    /// A case's expected time: its earlier record, else the mean of this run's cases so far,
    /// else the mean of the earlier records of the planned cases; `None` when nothing is known.
    fn expected(&self, kernel: &str, id: &str) -> Option<f64> {
        if let Some(d) = self.earlier.per_run(kernel, id) {
            return Some(d);
        }
        if self.ran.1 > 0 {
            return Some(self.ran.0 / self.ran.1 as f64);
        }
        let known: Vec<f64> = (self.plan.iter())
            .flat_map(|k| k.cases.iter().filter_map(|(id, _)| self.earlier.per_run(&k.release, id)))
            .collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }

    /// The time left: the expected time of every case not started yet, and what is left of the
    /// running cases' (none once a case has outrun its expectation), over the cases that run at
    /// once. `None` until some duration is known.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let current = self.kernel.unwrap_or(0);
        let mut left = 0.0;
        for (i, k) in self.plan.iter().enumerate().skip(current) {
            for (id, runs) in &k.cases {
                if !runs || (i == current && self.started.contains(id)) {
                    continue;
                }
                left += self.expected(&k.release, id)?;
            }
        }
        let release = self.plan.get(current).map_or("", |k| k.release.as_str());
        for (id, since) in &self.running {
            let runs = (self.plan.get(current))
                .and_then(|k| k.cases.iter().find(|(c, _)| c == id))
                .is_none_or(|(_, runs)| *runs);
            if runs {
                let spent = now.saturating_duration_since(*since).as_secs_f64();
                left += (self.expected(release, id)? - spent).max(0.0);
            }
        }
        Some(Duration::from_secs_f64(left / self.parallel as f64))
    }

    /// `[ 12/139] 2 failures (1 fail, 1 crash) | ETA 3m05s | running: 14s a, 3s b`; `counts`
    /// over the whole run. With several kernels, the kernel's position follows the counts. The
    /// running cases come last, each time before its id: a line too wide for the terminal loses
    /// the end of their ids.
    pub fn line(&self, counts: &Counts, now: Instant) -> String {
        let total: usize = self.plan.iter().map(|k| k.cases.len()).sum();
        let width = total.to_string().len().max(3);
        let mut line = format!("[{:>width$}/{total}]", counts.total());
        let failed: Vec<String> = [Status::Fail, Status::Crash, Status::Hang, Status::Error]
            .iter()
            .filter(|&&s| counts.get(s) > 0)
            .map(|&s| format!("{} {}", counts.get(s), s.name()))
            .collect();
        match counts.failures() {
            0 => line.push_str(" no failures"),
            1 => line.push_str(&format!(" 1 failure ({})", failed.join(", "))),
            n => line.push_str(&format!(" {n} failures ({})", failed.join(", "))),
        }
        if let (Some(k), true) = (self.kernel, self.plan.len() > 1) {
            line.push_str(&format!(
                " | kernel {}/{} {}",
                k + 1,
                self.plan.len(),
                self.plan[k].release
            ));
        }
        match self.eta(now) {
            Some(left) => line.push_str(&format!(" | ETA {}", short(left))),
            None => line.push_str(" | ETA after the first case"),
        }
        if !self.running.is_empty() {
            let running: Vec<String> = (self.running.iter())
                .map(|(id, since)| format!("{} {id}", short(now.saturating_duration_since(*since))))
                .collect();
            line.push_str(&format!(" | running: {}", running.join(", ")));
        }
        line
    }
}

/// `42s`, `3m05s`, `1h02m`.
fn short(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `line` cut to `width` columns less one (a line filling the last column makes some terminals
/// wrap, and a wrapped line is not cleared by a carriage return), `…` marking the cut.
pub fn fit(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(1);
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::events::{CaseResult, KernelInfo, RerunInfo};

    fn plan(release: &str, ids: &[(&str, bool)]) -> PlannedKernel {
        PlannedKernel {
            release: release.into(),
            cases: ids.iter().map(|(id, runs)| (id.to_string(), *runs)).collect(),
        }
    }

    fn earlier(records: &[(&str, &str, f64)]) -> Durations {
        Durations::from_records(records.iter().copied())
    }

    fn started(id: &str) -> Event {
        Event::CaseStarted { id: id.into() }
    }

    fn finished(id: &str, status: Status, secs: u64) -> (Event, Status) {
        let r = CaseResult {
            kernel: "6.12".into(),
            duration: Duration::from_secs(secs),
            ..crate::run::events::fixtures::result(id, status)
        };
        (Event::CaseFinished(r), status)
    }

    /// What the line shows of a kernel comes from the plan: the event's contents do not count.
    fn kernel_started() -> Event {
        Event::KernelStarted(KernelInfo {
            dir: ".".into(),
            kernel_id: String::new(),
            kernel_release: String::new(),
            accel: "tcg".into(),
            qemu_version: String::new(),
            cases: 0,
            rerun: RerunInfo::default(),
        })
    }

    #[test]
    fn the_estimate_takes_earlier_durations_per_case_and_kernel() {
        let e = earlier(&[("6.12", "a", 10.0), ("6.12", "b", 20.0), ("6.1", "b", 40.0)]);
        // `c` has no record and nothing ran yet: the mean of the planned cases' records.
        let mut p = Progress::new(
            vec![plan("6.12", &[("a", true), ("b", true), ("c", true), ("s", false)])],
            e,
        );
        let t0 = Instant::now();
        p.update(&kernel_started(), t0);
        // 10 + 20 + the mean of a's and b's records on this kernel for c; the skip takes nothing.
        assert_eq!(p.eta(t0), Some(Duration::from_secs(10 + 20 + 15)));
        p.update(&started("a"), t0);
        // 4 s into a: 6 s of it left.
        let t4 = t0 + Duration::from_secs(4);
        assert_eq!(p.eta(t4), Some(Duration::from_secs(6 + 20 + 15)));
        // a outruns its record: nothing left of it, not less than nothing.
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(p.eta(t30), Some(Duration::from_secs(20 + 15)));
        // Once a case ran, an unrecorded case takes the mean of this run's.
        p.update(&finished("a", Status::Pass, 30).0, t30);
        assert_eq!(p.eta(t30), Some(Duration::from_secs(20 + 30)));
    }

    #[test]
    fn without_earlier_durations_the_mean_so_far_and_none_before_it() {
        let mut p = Progress::new(
            vec![plan("6.12", &[("a", true), ("b", true), ("c", true)])],
            Durations::default(),
        );
        let t0 = Instant::now();
        p.update(&kernel_started(), t0);
        p.update(&started("a"), t0);
        assert_eq!(p.eta(t0), None);
        p.update(&finished("a", Status::Pass, 8).0, t0);
        p.update(&started("b"), t0);
        p.update(&finished("b", Status::Skip, 0).0, t0);
        // The skip does not lower the mean: c takes 8 s.
        assert_eq!(p.eta(t0), Some(Duration::from_secs(8)));
    }

    #[test]
    fn interleaved_cases_each_finish_by_id_and_share_the_work_left() {
        let e = earlier(&[
            ("6.12", "a", 10.0),
            ("6.12", "b", 10.0),
            ("6.12", "c", 10.0),
            ("6.12", "d", 10.0),
        ]);
        let mut p = Progress::new(
            vec![plan("6.12", &[("a", true), ("b", true), ("c", true), ("d", true)])],
            e,
        );
        let t0 = Instant::now();
        p.update(&kernel_started(), t0);
        p.update(&started("a"), t0);
        p.update(&started("b"), t0 + Duration::from_secs(2));
        let t5 = t0 + Duration::from_secs(5);
        let mut counts = Counts::default();
        assert_eq!(
            p.line(&counts, t5),
            // Two at once: (5 + 7 + 10 + 10) / 2.
            "[  0/4] no failures | ETA 16s | running: 5s a, 3s b"
        );
        // b finishes first, and fails.
        let (e, s) = finished("b", Status::Crash, 3);
        p.update(&e, t5);
        counts.add(s);
        assert_eq!(p.line(&counts, t5), "[  1/4] 1 failure (1 crash) | ETA 13s | running: 5s a");
        p.update(&started("c"), t5);
        let (e, s) = finished("a", Status::Fail, 12);
        p.update(&e, t0 + Duration::from_secs(12));
        counts.add(s);
        assert_eq!(
            p.line(&counts, t0 + Duration::from_secs(12)),
            "[  2/4] 2 failures (1 fail, 1 crash) | ETA 7s | running: 7s c"
        );
    }

    #[test]
    fn several_kernels_count_every_kernels_cases_and_name_the_current_one() {
        let e = earlier(&[("6.1", "a", 30.0), ("6.12", "a", 60.0)]);
        let mut p =
            Progress::new(vec![plan("6.1", &[("a", true)]), plan("6.12", &[("a", true)])], e);
        let t0 = Instant::now();
        p.update(&kernel_started(), t0);
        assert!(p.shown());
        assert_eq!(
            p.line(&Counts::default(), t0),
            "[  0/2] no failures | kernel 1/2 6.1 | ETA 1m30s"
        );
        p.update(&started("a"), t0);
        let (e, s) = finished("a", Status::Pass, 30);
        p.update(&e, t0);
        p.update(&kernel_started(), t0);
        let mut counts = Counts::default();
        counts.add(s);
        assert_eq!(p.line(&counts, t0), "[  1/2] no failures | kernel 2/2 6.12 | ETA 1m00s");
        p.update(&Event::RunFinished { elapsed: Duration::ZERO }, t0);
        assert!(!p.shown());
    }

    #[test]
    fn repeated_runs_take_their_case_s_record() {
        let e = earlier(&[("6.12", "a#1", 4.0), ("6.12", "a#2", 6.0)]);
        let p =
            Progress::new(vec![plan("6.12", &[("a#1", true), ("a#2", true), ("a#3", true)])], e);
        assert_eq!(p.eta(Instant::now()), Some(Duration::from_secs(15)));
    }

    #[test]
    fn durations_read_short_and_lines_fit_the_terminal() {
        assert_eq!(short(Duration::from_millis(41_600)), "42s");
        assert_eq!(short(Duration::from_secs(185)), "3m05s");
        assert_eq!(short(Duration::from_secs(3720)), "1h02m");
        assert_eq!(fit("abcdef", 7), "abcdef");
        assert_eq!(fit("abcdefg", 7), "abcde…");
        assert_eq!(fit("abc", 0), "…");
    }
}
