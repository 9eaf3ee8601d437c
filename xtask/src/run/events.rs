//! The interface between the runner and the reporters: the runner only emits [`Event`]s (whose
//! order is the run's state machine); the console, results.json, junit.xml and the per-case
//! kernel logs are separate consumers.

use daxtest_proto::case::{CasePhase, Expect, Observed};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every step met its expectation and the kernel log is clean.
    Pass,
    /// A step did not meet its expectation, or the kernel log has a warning, or the taint changed.
    Fail,
    /// A requirement of the case (kernel version, feature) is not met; the message says which.
    Skip,
    /// Failed as a known kernel bug says it will (the message names the bug).
    Xfail,
    /// The guest kernel panicked or oopsed during the case.
    Crash,
    /// The case did not finish within its timeout.
    Hang,
    /// The case could not be run or judged (set-up failed, the VM or SSH died, bad report).
    Error,
}

impl Status {
    /// Every status, in the order of their declaration (`status as usize` indexes this).
    pub const ALL: [Status; 7] = [
        Status::Pass,
        Status::Fail,
        Status::Skip,
        Status::Xfail,
        Status::Crash,
        Status::Hang,
        Status::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Xfail => "xfail",
            Status::Crash => "crash",
            Status::Hang => "hang",
            Status::Error => "error",
        }
    }

    /// Whether the run as a whole fails because of this case.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Fail | Status::Crash | Status::Hang | Status::Error)
    }
}

/// The step that decided a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedStep {
    /// 1-based position in the case.
    pub number: usize,
    /// Line in the scenario file.
    pub line: usize,
    pub op: String,
    pub expected: Expect,
    pub observed: Observed,
}

/// One reason a case did not pass, as data: the judge finds them, reporters render them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// mkfs or mount failed: the case could not run.
    Setup { message: String },
    /// The mounted filesystem does not give the DAX mode its options promise, on a device the
    /// boot proved does DAX: the kernel's failure (the steps did not run).
    DaxState { message: String },
    /// A step did not meet its expectation.
    Step(FailedStep),
    /// daxtest could not do a step (a mapping whose process is gone, a race that never raced).
    Framework { number: usize, line: usize, op: String, message: String },
    /// The agent stopped before the last step without a failing one.
    StepsMissing { ran: usize, of: usize },
    /// A kernel-log line that matches a failure pattern.
    KernelLine { line: String },
    /// An expected kernel-log pattern that matched no line.
    MissingPattern { pattern: String },
    /// Kernel-log records may be missing: the case cannot be judged.
    IncompleteLog { why: String },
    /// /proc/sys/kernel/tainted changed during the case.
    Taint { before: u64, after: u64 },
    /// Teardown could not undo what the case did (unmount, thaw, a process that would not die).
    Teardown { message: String },
    /// Processes of the case still running at its end (killed then).
    LeftBehind { processes: Vec<String> },
    /// The case passed where the scenario expects a known bug.
    UnexpectedPass { reason: String, link: String },
    /// The kernel crashed, the case hung, the guest was lost, the agent failed: `message` says
    /// which (the status says it too).
    Run { message: String },
}

impl Problem {
    /// Whether the problem means the case could not be run or judged (an error), rather than that
    /// the kernel did something wrong (a failure).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Problem::Setup { .. }
                | Problem::Framework { .. }
                | Problem::StepsMissing { .. }
                | Problem::IncompleteLog { .. }
                | Problem::Run { .. }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Setup { message } => write!(f, "set-up: {message}"),
            Problem::DaxState { message } => write!(f, "DAX state after mount: {message}"),
            Problem::Step(s) => write!(
                f,
                "step {} (line {}, {}): expected {}, got {}",
                s.number, s.line, s.op, s.expected, s.observed
            ),
            Problem::Framework { number, line, op, message } => {
                write!(f, "step {number} (line {line}, {op}): daxtest error: {message}")
            }
            Problem::StepsMissing { ran, of } => {
                write!(f, "the agent ran {ran} of {of} steps and reported no failure")
            }
            Problem::KernelLine { line } => write!(f, "kernel log: {line}"),
            Problem::MissingPattern { pattern } => {
                write!(f, "kernel log: nothing matched the expected pattern {pattern:?}")
            }
            Problem::IncompleteLog { why } => write!(f, "kernel log incomplete: {why}"),
            Problem::Taint { before, after } => write!(
                f,
                "the kernel taint changed from {before} ({}) to {after} ({})",
                crate::run::kernel_log::taint_flags(*before),
                crate::run::kernel_log::taint_flags(*after)
            ),
            Problem::Teardown { message } => write!(f, "teardown: {message}"),
            Problem::LeftBehind { processes } => write!(
                f,
                "left {} process{} behind: {} (a step that starts them on purpose says \
                 background = true)",
                processes.len(),
                if processes.len() == 1 { "" } else { "es" },
                processes.join(", ")
            ),
            Problem::UnexpectedPass { reason, link } => write!(
                f,
                "passed, but the scenario expects it to fail on this kernel because of a known bug \
                 ({reason}, {link}): if the bug is fixed here, narrow the xfail's kernel condition"
            ),
            Problem::Run { message } => f.write_str(message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    pub id: String,
    /// The scenario file the case comes from.
    pub file: PathBuf,
    /// `uname -r` of the kernel the case ran on.
    pub kernel: String,
    pub status: Status,
    pub duration: Duration,
    /// One line: the problems rendered, why it was skipped...; empty for a pass.
    pub message: String,
    /// Why the case did not pass, as data; empty for a pass and a skip.
    pub problems: Vec<Problem>,
    /// Kernel messages emitted between the case's start and its end.
    pub kernel_log: Vec<String>,
    /// Where the case's time went in the guest (set-up, steps, teardown, kernel-log window), when
    /// the agent reported it.
    pub phases: Vec<CasePhase>,
    /// The seed the case ran with.
    pub seed: u64,
    /// What the case measured without judging it (the records a power cut lost where losses are
    /// allowed), one line each; judged counts are listed too.
    pub measurements: Vec<String>,
    /// The figures of its `store_profile` steps, in step order.
    pub profiles: Vec<StepProfile>,
    /// The VM that ran it (after a power cut, the one booted after the last cut), as numbered
    /// by [`Event::VmBooted`]; none for a case that no VM ran.
    pub vm: Option<usize>,
    /// The scenario's known bug its status refers to: an xfail, or a pass of an intermittent
    /// one.
    pub known_bug: Option<KnownBug>,
}

/// A known bug (a scenario's `xfail`) as results carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownBug {
    pub reason: String,
    pub link: String,
}

/// A `store_profile` step's figures, as results.json keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProfile {
    /// The step's number (from 1) and its line in the scenario file.
    pub step: usize,
    pub line: usize,
    #[serde(flatten)]
    pub profile: daxtest_proto::case::FaultProfile,
}

impl CaseResult {
    /// The step problem that decided a failure, if one did.
    pub fn failed_step(&self) -> Option<&FailedStep> {
        self.problems.iter().find_map(|p| match p {
            Problem::Step(s) => Some(s),
            _ => None,
        })
    }

    /// The kernel lines that made the case fail (warnings, oopses...), quoted in the message too.
    pub fn bad_kernel_lines(&self) -> Vec<&str> {
        self.problems
            .iter()
            .filter_map(|p| match p {
                Problem::KernelLine { line } => Some(line.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// What unit tests of the reporters and the verdict start from.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use daxtest_proto::case::{Outcome, Run};

    /// A case's result on 6.12 that ran on VM 1, with nothing else to say.
    pub fn result(id: &str, status: Status) -> CaseResult {
        CaseResult {
            id: id.into(),
            file: "scenarios/demo.toml".into(),
            kernel: "6.12.117+deb12-amd64".into(),
            status,
            duration: Duration::from_millis(1250),
            message: String::new(),
            problems: vec![],
            kernel_log: vec![],
            phases: vec![],
            seed: 1,
            measurements: vec![],
            profiles: vec![],
            vm: Some(1),
            known_bug: None,
        }
    }

    /// Step 3 (line 20) read 4096 bytes of 'c' where every byte 'b' was expected.
    pub fn read_failure() -> Problem {
        Problem::Step(FailedStep {
            number: 3,
            line: 20,
            op: "read".into(),
            expected: Expect::outcome(Outcome::Content('b')),
            observed: Observed::Bytes {
                asked: 4096,
                got: 4096,
                runs: vec![Run { offset: 0, len: 4096, byte: b'c' }],
                truncated: false,
                faults: None,
                pmd_faults: None,
            },
        })
    }
}

/// Kernel messages that no case window holds (the boot, the time between two cases, the end of
/// a VM) and that fail the run: a failure pattern, or records lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutsideCases {
    /// Where: `boot`, `between CASE and CASE`, `after CASE`.
    pub place: String,
    /// The lines that match a failure pattern.
    pub bad: Vec<String>,
    /// Why records may be missing, when they may.
    pub gap: Option<String>,
    /// Every line of that stretch.
    pub lines: Vec<String>,
}

/// What is known about the run when it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    /// The run's directory; each kernel's is [`KernelInfo::dir`] under it.
    pub run_dir: PathBuf,
    /// How many kernels the cases run on, one after another (`--kernel` given that many times).
    pub kernels: usize,
    /// How many times each case runs (`--repeat`, `--until-fail`): run k of a case is `ID#k`.
    pub runs_per_case: u32,
    /// Each kernel's cases stop at the first that fails, crashes, hangs or errs (`--until-fail`).
    pub stop_at_failure: bool,
    /// The cases the run was asked for, before `--shard` took its share: what tells shards of
    /// one run from runs of different scenario sets.
    pub selection: Option<Selection>,
}

/// The selected cases of a run, as a digest of every case id with its scenario file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub digest: String,
    pub cases: usize,
    /// `I/N` when the run was one shard; absent for a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// What is known about a kernel's share of the run when its cases start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelInfo {
    /// Its run directory, relative to the run's: `.` when the run has one kernel, else a
    /// directory of its own named by its release.
    pub dir: PathBuf,
    /// Kernel spec and package, e.g. `debian:6.12 (linux-image-...=...)`.
    pub kernel_id: String,
    pub kernel_release: String,
    pub accel: String,
    pub qemu_version: String,
    /// Cases to run on it, skips and repeats included.
    pub cases: usize,
    /// What `cargo xtask repro` needs to run a case again as this run did.
    pub rerun: RerunInfo,
}

/// The inputs of a run beyond the cases: the kernel spec as `--kernel` takes it, the image, the
/// VM's options and the command line's timeouts. The QEMU command lines come with
/// [`Event::VmBooted`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RerunInfo {
    /// `debian:6.12`, or the absolute path of a self-built kernel.
    pub kernel_spec: String,
    /// The image's content hash (its directory name under `cache/images/`).
    pub image_key: String,
    pub image_dir: PathBuf,
    pub memory_mib: u64,
    pub cpus: u32,
    /// `--device` (results of an older daxtest, which had NVDIMMs alone, read as `nvdimm`).
    #[serde(default)]
    pub device: daxtest_proto::Device,
    pub nvdimms: usize,
    /// Bytes.
    pub nvdimm_size: u64,
    pub boot_timeout_s: u64,
    /// `--step-timeout` and `--case-timeout`, when given.
    pub step_timeout_s: Option<u64>,
    pub case_timeout_s: Option<u64>,
}

/// What happens in a run, in order: the run's state machine, the one interface between the
/// runner and the reporters.
///
/// ```text
/// RunStarted
///   KernelStarted                        once per kernel, one kernel after another
///     ( BootFailed | VmBooted
///     | CaseStarted | CaseFinished
///     | KernelLogOutsideCases )*         each CaseStarted followed by its CaseFinished (with
///                                        --jobs, other cases' events may come in between)
///   KernelFinished
/// RunFinished
/// ```
///
/// Every event between `KernelStarted` and `KernelFinished` is about that kernel. A run cut
/// short (interrupted, or a kernel's directory that cannot be made) stops where it is: no
/// `KernelFinished` or `RunFinished` follows, and what the reporters wrote as cases finished
/// stays.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    RunStarted(RunInfo),
    /// A kernel's cases begin: nothing is booted yet.
    KernelStarted(KernelInfo),
    CaseStarted {
        id: String,
    },
    CaseFinished(CaseResult),
    /// A fresh VM was booted (after a crash or hang, or for a case that asks for one).
    VmBooted {
        /// Its number among the kernel's VMs, from 1 (its `serial-N.log`); with several VMs at
        /// once, numbers may arrive out of order.
        vm: usize,
        boot_time: Duration,
        reason: String,
        /// QEMU's command line, shell-quoted.
        command_line: String,
    },
    /// Kernel messages outside every case window that fail the run (see [`OutsideCases`]).
    KernelLogOutsideCases(OutsideCases),
    /// A VM did not get ready: `message` says why, with QEMU's stderr and the end of its serial
    /// console, and is kept as `log` in the kernel's run directory. `retrying`: the runner boots
    /// once more before giving up.
    BootFailed {
        message: String,
        log: PathBuf,
        retrying: bool,
    },
    /// The kernel's cases are over and its last VM is gone; `serial_logs` are the serial consoles
    /// of its VMs, in order, and `boot_failures` the logs of the boots that failed.
    KernelFinished {
        elapsed: Duration,
        serial_logs: Vec<PathBuf>,
        boot_failures: Vec<PathBuf>,
    },
    /// Every kernel's cases are over.
    RunFinished {
        elapsed: Duration,
    },
}
