//! junit.xml for CI: a test suite per kernel, one testcase per case, the kernel log in
//! system-out. A run on several kernels writes one more into each kernel's directory, with its
//! suite alone.
//!
//! xfail is reported as a skip with "xfail:" in its message: CI dashboards show skips as neither
//! green nor red, which is what a known kernel bug is; a failure would break the build, a success
//! would hide the bug.

use super::stats::RunStats;
use super::Reporter;
use crate::run::events::{CaseResult, Event, Status};
use anyhow::Context;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Junit {
    dir: PathBuf,
    /// The suites of the kernels that finished.
    suites: Vec<TestSuite>,
    /// The running kernel's suite, and its run directory relative to the run's.
    current: Option<(TestSuite, PathBuf)>,
}

impl Junit {
    pub fn new(dir: &Path) -> Junit {
        Junit { dir: dir.to_path_buf(), suites: Vec::new(), current: None }
    }

    fn suite(&mut self, what: &str) -> anyhow::Result<&mut TestSuite> {
        let current = self.current.as_mut().with_context(|| format!("{what} before KernelStarted"));
        Ok(&mut current?.0)
    }
}

/// Writes `dir/junit.xml` with a suite per kernel.
fn write(dir: &Path, suites: &[TestSuite], elapsed: Duration) -> anyhow::Result<()> {
    let mut report = Report::new("daxtest");
    report.set_time(elapsed).add_test_suites(suites.iter().cloned());
    let path = dir.join("junit.xml");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    report.serialize(file).with_context(|| format!("writing {}", path.display()))
}

impl Reporter for Junit {
    // quick_junit counts the testcases of each suite itself (the kernel-log ones among them).
    fn event(&mut self, e: &Event, _: &RunStats) -> anyhow::Result<()> {
        match e {
            // Suites are per kernel.
            Event::RunStarted(_) => {}
            Event::KernelStarted(info) => {
                let suite = TestSuite::new(format!("daxtest {}", info.kernel_release));
                self.current = Some((suite, info.dir.clone()));
            }
            // JUnit has no notion of a case in progress or of VMs.
            Event::CaseStarted { .. } | Event::VmBooted { .. } | Event::BootFailed { .. } => {}
            Event::CaseFinished(r) => {
                self.suite("CaseFinished")?.add_test_case(test_case(r));
            }
            // A testcase of its own, failing: CI must not miss it.
            Event::KernelLogOutsideCases(o) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status
                    .set_message(format!("kernel log outside every case, {}", o.place))
                    .set_type("kernel-log")
                    .set_description(
                        o.bad.iter().chain(&o.gap).cloned().collect::<Vec<_>>().join("\n"),
                    );
                let mut case = TestCase::new(format!("kernel-log/{}", o.place), status);
                case.set_classname("daxtest").set_system_out(o.lines.join("\n"));
                self.suite("KernelLogOutsideCases")?.add_test_case(case);
            }
            Event::KernelFinished { elapsed, .. } => {
                let (mut suite, dir) =
                    self.current.take().context("KernelFinished before KernelStarted")?;
                suite.set_time(*elapsed);
                // A kernel of several: its own run directory has its own junit.xml.
                if dir != Path::new(".") {
                    write(&self.dir.join(dir), std::slice::from_ref(&suite), *elapsed)?;
                }
                self.suites.push(suite);
            }
            Event::RunFinished { elapsed } => write(&self.dir, &self.suites, *elapsed)?,
        }
        Ok(())
    }
}

/// A case's testcase element: its status, message, bad kernel lines and kernel log.
fn test_case(r: &CaseResult) -> TestCase {
    let mut status = match r.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Skip | Status::Xfail => TestCaseStatus::skipped(),
        Status::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
        Status::Crash | Status::Hang | Status::Error => {
            TestCaseStatus::non_success(NonSuccessKind::Error)
        }
    };
    let message = match r.status {
        Status::Xfail => format!("xfail: {}", r.message),
        _ => r.message.clone(),
    };
    status.set_message(message).set_type(r.status.name());
    let bad = r.bad_kernel_lines();
    if !bad.is_empty() {
        status.set_description(bad.join("\n"));
    }
    let (classname, name) = r.id.split_once('/').unwrap_or(("daxtest", &r.id));
    let mut case = TestCase::new(name, status);
    case.set_classname(classname).set_time(r.duration);
    case.set_system_out(r.kernel_log.join("\n"));
    case.add_property(Property::new("kernel", r.kernel.as_str()));
    case
}
