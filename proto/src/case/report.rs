//! What the agent reports about a case: each step's observation, set-up and teardown, what the
//! case left behind, its kernel log and where its time went.

use super::Observed;
use serde::{Deserialize, Serialize};

/// Outcome of one step, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    pub line: usize,
    pub op: String,
    pub observed: Observed,
    pub millis: u64,
}

/// Everything the agent reports about one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub id: String,
    /// Why the case could not be set up (mkfs, mount).
    pub setup_error: Option<String>,
    /// How the mounted filesystem does not give the DAX mode its options promise (a new file on
    /// a dax=always mount without DAX; under dax=inode, FS_XFLAG_DAX that does not turn it on).
    /// The boot proved the device does DAX, so this is the filesystem's failure, not set-up's.
    #[serde(default)]
    pub dax_state_error: Option<String>,
    /// The mount's options as /proc/mounts shows them.
    pub mount_options: String,
    /// Steps run, in order; the agent stops after the first one that does not meet its
    /// expectation.
    pub steps: Vec<StepReport>,
    /// What teardown could not undo (thaw, swapoff, unmount, a process that would not die, the
    /// device still open): the guest is not in a known state, the next case needs a fresh VM.
    pub teardown_error: Option<String>,
    /// Processes of the case still running at its end, as `command line (pid N)`, which the agent
    /// killed; steps that leave processes running on purpose are not listed.
    pub left_behind: Vec<String>,
    /// What the case changed in the guest beyond its own filesystem (a sysctl, a mount): not a
    /// failure, but the next case gets a fresh VM.
    pub residue: Vec<String>,
    /// Kernel messages logged after the previous case's window closed and before this one
    /// opened (for the first case of a VM: since boot), as `[seconds] text`.
    pub kernel_log_before: Vec<String>,
    /// Kernel messages logged from the case's start to its end, as `[seconds] text`.
    pub kernel_log: Vec<String>,
    /// Why some kernel messages of these windows may be missing (records lost before the agent
    /// read them): the case cannot be judged.
    pub kernel_log_gap: Option<String>,
    pub tainted_before: u64,
    pub tainted_after: u64,
    pub millis: u64,
    /// The steps of a part before a `power_cut` all met their expectations and the agent left
    /// everything as it was, untorn down: the host cuts the power now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_power_cut: bool,
    /// Where the case's time went, in order: set-up, steps, teardown and the kernel-log window,
    /// each part on its own.
    pub phases: Vec<CasePhase>,
}

/// A part of a case and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CasePhase {
    pub name: String,
    pub micros: u64,
}
