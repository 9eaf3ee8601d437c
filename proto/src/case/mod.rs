//! A test case as the guest agent runs it, and what the agent reports back.
//!
//! The host expands scenario files (matrix, kernel conditions, variables) into [`CaseSpec`]s in
//! which every expectation is concrete; the agent executes the steps with real system calls and
//! returns one [`Observed`] per step. [`Expect::check`] is the single judge, used by the agent (to
//! stop at the first mismatch) and by the host (to report it).

mod expect;
mod observed;
mod op;
mod report;

pub use expect::{Cmp, Count, Expect, Outcome, Shared};
pub use observed::{
    runs, runs_into, Extent, FaultProfile, MetadataWork, Observed, Records, Run, SigInfo,
    FIEMAP_EXTENT_SHARED, MAX_RUNS,
};
pub use op::{
    FallocMode, InodeFlag, IoDirection, MapKind, Op, Prot, Removal, MAX_PROFILE_SAMPLES, RACE_SLOT,
    RECORD, RECORD_MARK,
};
pub use report::{CasePhase, CaseReport, StepReport};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Filesystems under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Xfs,
    Ext4,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Xfs => "xfs",
            Fs::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Prefix of the agent's progress lines on stderr (`@daxtest: step 3`), read by the host for
/// step timeouts.
pub const PROGRESS: &str = "@daxtest: ";

/// One case, fully resolved for one matrix cell and one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// Stable id: `scenario/case/fs/mount-option`.
    pub id: String,
    pub fs: Fs,
    /// Extra mkfs arguments (the device comes last; `-f`/`-F` and quiet are added by the agent).
    pub mkfs_options: Vec<String>,
    /// Mount options, e.g. `dax=always`.
    pub mount_options: String,
    /// Block device to format, `/dev/pmem0`.
    pub device: String,
    /// Where the filesystem is mounted; step paths are relative to it.
    pub mount_point: String,
    /// Seed for every random choice (race jitter, patterns).
    pub seed: u64,
    /// The host wrote onto the zeroed device the blocks this case's mkfs wrote there once (on
    /// a zeroed device, in this run): set-up drops the device's cached blocks and mounts,
    /// without mkfs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub formatted: bool,
    /// After the unmount, check the filesystem (xfs_repair -n -P, e2fsck -fn): what it finds fails
    /// the case, as a teardown that could not undo the case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fsck: bool,
    /// These steps are the part of a case before a `power_cut`: when every one met its
    /// expectation, the agent reports without teardown or sync, leaving processes, mappings and
    /// the mount as they are (`CaseReport::awaiting_power_cut`), and the host kills the VM.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_at_end: bool,
    /// These steps are the part after a `power_cut` (their first step): the device holds the
    /// filesystem the cut left, so set-up makes none and mounts nothing; the `power_cut` step
    /// recovers and checks it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_cut: bool,
    /// The records a `store_loop` completed before the cut, which the `power_cut` step checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordCheck>,
    /// Extent maps saved by `fiemap` steps of the parts before the cut, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub saved: std::collections::BTreeMap<String, Vec<Extent>>,
    pub steps: Vec<Step>,
}

/// Where a `store_loop` stored its records and how many it reported completed before the cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCheck {
    /// The mapped file, relative to the mount point.
    pub file: String,
    /// The mapping's offset in the file: record i is at `offset + i * RECORD`.
    pub offset: u64,
    pub completed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Line of the step in its scenario file, for messages.
    pub line: usize,
    pub op: Op,
    pub expect: Expect,
}
