//! The interface between the runner and the reporters: the runner only emits [`Event`]s; the
//! console, results.json, junit.xml and the per-case kernel logs are separate consumers.

use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedStep {
    /// 1-based position in the case.
    pub number: usize,
    /// Line in the scenario file.
    pub line: usize,
    pub op: String,
    pub expected: String,
    pub observed: String,
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
    /// One line: why it failed, was skipped, crashed...; empty for a pass.
    pub message: String,
    pub failed_step: Option<FailedStep>,
    /// Kernel messages emitted between the case's start and its end.
    pub kernel_log: Vec<String>,
    /// The kernel lines that made the case fail (warnings, oopses...), quoted in the message too.
    pub bad_kernel_lines: Vec<String>,
    /// The seed the case ran with.
    pub seed: u64,
}

/// What is known about the run when it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_dir: PathBuf,
    /// Kernel spec and package, e.g. `debian:6.12 (linux-image-...=...)`.
    pub kernel_id: String,
    pub kernel_release: String,
    pub accel: String,
    pub qemu_version: String,
    /// Cases to run, skips included.
    pub cases: usize,
    /// What `cargo xtask repro` needs to run a case again as this run did.
    pub rerun: RerunInfo,
}

/// The inputs of a run beyond the cases: the kernel spec as `--kernel` takes it, the image, the
/// VM's options and the command line's timeouts. The QEMU command lines come with
/// [`Event::VmBooted`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct RerunInfo {
    /// `debian:6.12`, or the absolute path of a self-built kernel.
    pub kernel_spec: String,
    /// The image's content hash (its directory name under `cache/images/`).
    pub image_key: String,
    pub image_dir: PathBuf,
    pub memory_mib: u64,
    pub cpus: u32,
    pub nvdimms: usize,
    /// Bytes.
    pub nvdimm_size: u64,
    pub boot_timeout_s: u64,
    /// `--step-timeout` and `--case-timeout`, when given.
    pub step_timeout_s: Option<u64>,
    pub case_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    RunStarted(RunInfo),
    CaseStarted {
        id: String,
    },
    CaseFinished(CaseResult),
    /// A fresh VM was booted (after a crash or hang, or for a case that asks for one).
    VmBooted {
        boot_time: Duration,
        reason: String,
        /// QEMU's command line, shell-quoted.
        command_line: String,
    },
    /// A VM did not get ready: `message` says why, with QEMU's stderr and the end of its serial
    /// console, and is kept as `log` in the run directory. `retrying`: the runner boots once more before giving up.
    BootFailed {
        message: String,
        log: PathBuf,
        retrying: bool,
    },
    /// The run is over; `serial_logs` are the serial consoles of every VM of the run, in order,
    /// and `boot_failures` the logs of the boots that failed.
    RunFinished {
        elapsed: Duration,
        serial_logs: Vec<PathBuf>,
        boot_failures: Vec<PathBuf>,
    },
}
