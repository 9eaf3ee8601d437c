//! What the reporters count, counted once (as nextest's `RunStats`): cases per status on each
//! kernel and over the whole run, and the case x kernel grid whose rows say where the kernels
//! differ. [`super::Reporters`] updates it from each event before any reporter sees that event,
//! and hands it to every reporter with the event.

use crate::run::events::{Event, Status};
use std::collections::{BTreeMap, HashMap};

/// The median of `values`: the middle one, the upper of the two middle ones for an even count
/// (every median daxtest prints); `None` for none.
pub fn median<T: PartialOrd + Copy>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// Cases per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([usize; Status::ALL.len()]);

impl Counts {
    pub fn add(&mut self, s: Status) {
        self.0[s as usize] += 1;
    }

    pub fn get(&self, s: Status) -> usize {
        self.0[s as usize]
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// Cases that fail the run: failed, crashed, hung or errored.
    pub fn failures(&self) -> usize {
        Status::ALL.iter().filter(|s| s.is_failure()).map(|&s| self.get(s)).sum()
    }

    /// The statuses that occur, by name, with their counts: results.json's `counts`.
    pub fn by_name(&self) -> BTreeMap<String, usize> {
        Status::ALL
            .iter()
            .filter(|&&s| self.get(s) > 0)
            .map(|&s| (s.name().to_string(), self.get(s)))
            .collect()
    }
}

/// A case as it finished, as far as the statistics need it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseStatus {
    pub id: String,
    pub status: Status,
    /// The result's one-line message (why it failed, why it was skipped...).
    pub message: String,
}

/// One kernel's share of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelStats {
    /// `uname -r`.
    pub release: String,
    pub counts: Counts,
    /// Its cases in the order they finished.
    pub cases: Vec<CaseStatus>,
}

/// The run's statistics so far.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Every kernel's that has started, in order; the last is the one running.
    pub kernels: Vec<KernelStats>,
    /// Over every kernel.
    pub counts: Counts,
}

/// A row of the case x kernel grid.
#[derive(Debug, PartialEq)]
pub struct Row<'a> {
    pub id: &'a str,
    /// The case on each kernel, in the kernels' order; `None` where it did not run.
    pub cells: Vec<Option<&'a CaseStatus>>,
}

impl Row<'_> {
    /// Whether the case's status is not the same on every kernel.
    pub fn differs(&self) -> bool {
        self.cells.windows(2).any(|w| w[0].map(|c| c.status) != w[1].map(|c| c.status))
    }
}

impl RunStats {
    pub fn update(&mut self, e: &Event) {
        match e {
            Event::KernelStarted(info) => self.kernels.push(KernelStats {
                release: info.kernel_release.clone(),
                counts: Counts::default(),
                cases: Vec::new(),
            }),
            Event::CaseFinished(r) => {
                self.counts.add(r.status);
                if let Some(k) = self.kernels.last_mut() {
                    k.counts.add(r.status);
                    k.cases.push(CaseStatus {
                        id: r.id.clone(),
                        status: r.status,
                        message: r.message.clone(),
                    });
                }
            }
            // Only what finished counts.
            Event::CaseStarted { .. } => {}
            // Not about cases: the reporters that show them take them from the event.
            Event::RunStarted(_)
            | Event::VmBooted { .. }
            | Event::BootFailed { .. }
            | Event::KernelLogOutsideCases(_)
            | Event::KernelFinished { .. }
            | Event::RunFinished { .. } => {}
        }
    }

    /// The kernel whose cases run now (or ran last).
    pub fn current(&self) -> Option<&KernelStats> {
        self.kernels.last()
    }

    /// Case ids in the order they first finished, each with the case on every kernel.
    pub fn grid(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (k, kernel) in self.kernels.iter().enumerate() {
            for c in &kernel.cases {
                let row = *index.entry(&c.id).or_insert_with(|| {
                    rows.push(Row { id: &c.id, cells: vec![None; self.kernels.len()] });
                    rows.len() - 1
                });
                // A case runs once on a kernel (a repeat has an id of its own).
                rows[row].cells[k].get_or_insert(c);
            }
        }
        rows
    }

    /// The ids of the cases whose status is not the same on every kernel.
    pub fn differing(&self) -> Vec<&str> {
        self.grid().into_iter().filter(Row::differs).map(|r| r.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_indexes_its_own_count() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "{s:?}");
        }
        let mut c = Counts::default();
        for s in [Status::Pass, Status::Pass, Status::Xfail, Status::Hang, Status::Error] {
            c.add(s);
        }
        assert_eq!((c.get(Status::Pass), c.total(), c.failures()), (2, 5, 2));
        let names: Vec<(String, usize)> = c.by_name().into_iter().collect();
        assert_eq!(
            names,
            [("error".into(), 1), ("hang".into(), 1), ("pass".into(), 2), ("xfail".into(), 1)]
        );
    }
}
