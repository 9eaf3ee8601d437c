//! A test case as the guest agent runs it, and what the agent reports back.
//!
//! The host expands scenario files (matrix, kernel conditions, variables) into [`CaseSpec`]s in
//! which every expectation is concrete; the agent executes the steps with real system calls and
//! returns one [`Observed`] per step. [`Expect::check`] is the single judge, used by the agent (to
//! stop at the first mismatch) and by the host (to report it).

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
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Line of the step in its scenario file, for messages.
    pub line: usize,
    pub op: Op,
    pub expect: Expect,
}

/// How an mmap is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    /// MAP_SHARED
    Shared,
    /// MAP_SHARED_VALIDATE | MAP_SYNC (needs DAX: EOPNOTSUPP otherwise)
    Sync,
    /// MAP_PRIVATE
    Private,
}

/// fallocate(2) modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallocMode {
    /// 0: allocate (unwritten extents), extend the size.
    Default,
    KeepSize,
    PunchHole,
    ZeroRange,
    CollapseRange,
    InsertRange,
    UnshareRange,
}

/// An operation. Paths are relative to the case's mount point; handles and maps are names
/// that later steps use to refer to an open file descriptor or a mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// open(O_CREAT|O_WRONLY), close.
    Create {
        file: String,
    },
    Mkdir {
        dir: String,
    },
    /// pwrite `len` bytes of `pattern` at `offset`, creating the file if needed.
    Write {
        file: String,
        offset: u64,
        len: u64,
        pattern: char,
    },
    /// pread; observed as byte runs.
    Read {
        file: String,
        offset: u64,
        len: u64,
    },
    Fsync {
        file: String,
    },
    Truncate {
        file: String,
        size: u64,
    },
    Fallocate {
        file: String,
        mode: FallocMode,
        offset: u64,
        len: u64,
    },
    /// statx: observed STATX_ATTR_DAX.
    Statx {
        file: String,
    },
    /// FS_IOC_FSGETXATTR: observed FS_XFLAG_DAX.
    GetFlag {
        file: String,
    },
    /// FS_IOC_FSGETXATTR, change FS_XFLAG_DAX, FS_IOC_FSSETXATTR.
    SetFlag {
        file: String,
        on: bool,
    },
    /// FICLONE: `dst` (created or truncated) becomes a clone of `src`.
    Clone {
        src: String,
        dst: String,
    },
    /// FICLONERANGE.
    CloneRange {
        src: String,
        dst: String,
        src_offset: u64,
        len: u64,
        dst_offset: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        file: String,
    },
    /// Keep a file descriptor open (O_RDWR) under `handle` until `close` or `evict`.
    Open {
        file: String,
        handle: String,
    },
    Close {
        handle: String,
    },
    Mmap {
        file: String,
        map: String,
        offset: u64,
        len: u64,
        kind: MapKind,
    },
    Munmap {
        map: String,
    },
    /// Store `len` bytes of `pattern` through a mapping, at `offset` into it.
    Store {
        map: String,
        offset: u64,
        len: u64,
        pattern: char,
    },
    /// Load through a mapping; observed as byte runs.
    Load {
        map: String,
        offset: u64,
        len: u64,
    },
    Msync {
        map: String,
    },
    /// FIEMAP over [offset, offset+len) (len 0: to EOF); `save` keeps the result under a name.
    Fiemap {
        file: String,
        offset: u64,
        len: u64,
        save: Option<String>,
    },
    /// Close every handle and mapping, syncfs, drop caches: the inode is evicted and reloaded.
    Evict,
    /// Close everything, unmount, mount again with the same options.
    Remount,
    Mkswap {
        file: String,
    },
    Swapon {
        file: String,
    },
    Swapoff {
        file: String,
    },
    /// FIFREEZE / FITHAW on the mount point.
    Freeze,
    Thaw,
    /// Race: one process toggles FS_XFLAG_DAX `rounds` times while another writes record i
    /// (4 KiB) at offset i * 4 KiB; afterwards every record must read back intact, then again
    /// after the inode is evicted and after a remount. Ends every handle and mapping (as
    /// `remount` does); a race in which the file's DAX mode never changed is an error.
    RaceToggleWrite {
        file: String,
        rounds: u64,
    },
    /// Race: one thread stores pass numbers through mapping `map` (8-byte slots, one per 512
    /// bytes) while another clones the file `rounds` times (`<file>.clone<N>`); afterwards the
    /// source must hold every last value, and every slot of every clone a pass between the ones
    /// running when its FICLONE began and when it returned.
    RaceStoreClone {
        map: String,
        file: String,
        rounds: u64,
    },
    /// Pause (for tests of the framework itself, and for timeouts).
    Sleep {
        millis: u64,
    },
    /// A shell command in the guest (escape hatch; observed as its exit status). Processes it
    /// leaves running fail the case, unless `background` says it starts them on purpose; they
    /// are killed at the end of the case either way.
    Shell {
        command: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        background: bool,
    },
}

impl Op {
    /// The operation's name as written in scenario files.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str().map(str::to_string)))
            .unwrap_or_default()
    }
}

/// race_store_clone's slot: one 8-byte value at the start of every 512 bytes of the mapping.
pub const RACE_SLOT: usize = 512;

/// Which extents of a FIEMAP range carry FIEMAP_EXTENT_SHARED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shared {
    All,
    None,
    Some,
}

/// What a step must produce: its outcome and, for `store` and `load`, how many page faults the
/// access may take. Written in scenario files as `{ errno = "EINVAL" }`,
/// `{ content = "c", faults = ">=1" }` and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub outcome: Outcome,
    /// Minor plus major faults of the process that owns the mapping, counted around the access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Count>,
}

impl Expect {
    /// An expectation of this outcome alone.
    pub fn outcome(outcome: Outcome) -> Expect {
        Expect { outcome, faults: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call succeeds (whatever it returns).
    Ok,
    /// The call fails with this errno name.
    Errno(String),
    /// The access is killed by this signal (SIGBUS).
    Signal(String),
    /// Success, exactly the bytes asked for, and every one equals this character.
    Content(char),
    /// Success, and STATX_ATTR_DAX is set (true) or clear (false).
    Dax(bool),
    /// Success, and FS_XFLAG_DAX is set (true) or clear (false).
    Flag(bool),
    /// Success, and the extent map equals (true) or differs from (false) the one saved as `since`.
    Extents { since: String, same: bool },
    /// Success, and the range has no extent at all (a hole).
    NoExtents,
    /// Success, the range has extents, and this is which of them are shared.
    Shared(Shared),
    /// Success, and the shell command exits with this status.
    Exit(i32),
}

/// A comparison of a count, as scenario files write it: `0`, `">=1"`, `"<4"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub cmp: Cmp,
    pub n: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Count {
    /// `"3"`, `"=3"`, `">=1"`, `">0"`, `"<=2"`, `"<2"`.
    pub fn parse(s: &str) -> Option<Count> {
        let t = s.trim();
        let (cmp, rest) =
            [(">=", Cmp::Ge), ("<=", Cmp::Le), (">", Cmp::Gt), ("<", Cmp::Lt), ("=", Cmp::Eq)]
                .into_iter()
                .find_map(|(p, c)| t.strip_prefix(p).map(|r| (c, r)))
                .unwrap_or((Cmp::Eq, t));
        let n = rest.trim().parse().ok()?;
        Some(Count { cmp, n })
    }

    pub fn holds(self, v: u64) -> bool {
        match self.cmp {
            Cmp::Eq => v == self.n,
            Cmp::Ge => v >= self.n,
            Cmp::Gt => v > self.n,
            Cmp::Le => v <= self.n,
            Cmp::Lt => v < self.n,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.cmp {
            Cmp::Eq => "=",
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
        };
        write!(f, "{op} {}", self.n)
    }
}

/// A run of equal bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
    pub byte: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// FIEMAP_EXTENT_SHARED
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    Ok,
    Errno(String),
    Signal(String),
    /// A store through a mapping that completed, with the faults it took.
    Stored {
        faults: u64,
    },
    /// Bytes read or loaded: how many were asked for and how many came back, as runs (at most
    /// [`MAX_RUNS`]; `truncated` if there were more); a load also counts its faults.
    Bytes {
        asked: u64,
        got: u64,
        runs: Vec<Run>,
        truncated: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        faults: Option<u64>,
    },
    Dax(bool),
    Flag(bool),
    /// FIEMAP result, with the saved map named by the expectation when there is one.
    Extents {
        extents: Vec<Extent>,
        saved: Option<Vec<Extent>>,
    },
    /// A race step's findings: empty when nothing was lost or torn.
    Race {
        rounds: u64,
        problems: Vec<String>,
    },
    Exit {
        status: i32,
        output: String,
    },
    /// daxtest could not do the step (a mapping whose process is gone, a helper that failed, a
    /// race that never raced): says nothing about the kernel, so the case is an error.
    Error(String),
}

impl Observed {
    /// The page faults an access took, for observations that count them.
    pub fn faults(&self) -> Option<u64> {
        match self {
            Observed::Stored { faults } => Some(*faults),
            Observed::Bytes { faults, .. } => *faults,
            _ => None,
        }
    }
}

pub const MAX_RUNS: usize = 16;

/// Byte runs of `data`, which starts at file or mapping offset `base`.
pub fn runs(base: u64, data: &[u8]) -> (Vec<Run>, bool) {
    let mut out: Vec<Run> = Vec::with_capacity(MAX_RUNS);
    let truncated = runs_into(base, data, &mut out);
    (out, truncated)
}

/// [`runs`] into a vector the caller made (with capacity [`MAX_RUNS`], so that pushing never
/// allocates: a load counts its page faults around this); true when there were more runs.
pub fn runs_into(base: u64, data: &[u8], out: &mut Vec<Run>) -> bool {
    for (i, &b) in data.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.byte == b => r.len += 1,
            _ => {
                if out.len() == MAX_RUNS {
                    return true;
                }
                out.push(Run { offset: base + i as u64, len: 1, byte: b })
            }
        }
    }
    false
}

fn show_byte(b: u8) -> String {
    match b {
        0 => "\\0".into(),
        0x20..=0x7e => format!("'{}'", b as char),
        _ => format!("0x{b:02x}"),
    }
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Ok => f.write_str("success"),
            Observed::Errno(e) => write!(f, "error {e}"),
            Observed::Signal(s) => write!(f, "killed by {s}"),
            Observed::Stored { faults } => write!(f, "stored, {}", plural(*faults, "fault")),
            Observed::Bytes { asked, got, runs, truncated, faults } => {
                let parts: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{} x{} at {}", show_byte(r.byte), r.len, r.offset))
                    .collect();
                write!(f, "bytes [{}{}]", parts.join(", "), if *truncated { ", ..." } else { "" })?;
                if got != asked {
                    write!(f, " (asked {asked}, got {got})")?;
                }
                match faults {
                    Some(n) => write!(f, ", {}", plural(*n, "fault")),
                    None => Ok(()),
                }
            }
            Observed::Dax(on) => write!(f, "STATX_ATTR_DAX {}", on_off(*on)),
            Observed::Flag(on) => write!(f, "FS_XFLAG_DAX {}", on_off(*on)),
            Observed::Extents { extents, .. } if extents.is_empty() => f.write_str("no extents"),
            Observed::Extents { extents, .. } => {
                let parts: Vec<String> = extents
                    .iter()
                    .map(|e| {
                        format!("{}+{}@{} flags 0x{:x}", e.logical, e.length, e.physical, e.flags)
                    })
                    .collect();
                write!(f, "extents [{}]", parts.join(", "))
            }
            Observed::Race { rounds, problems } if problems.is_empty() => {
                write!(f, "{rounds} rounds, nothing lost or torn")
            }
            Observed::Race { rounds, problems } => {
                write!(f, "{rounds} rounds, {} problems: {}", problems.len(), problems.join("; "))
            }
            Observed::Exit { status, output } => write!(f, "exit {status}: {}", output.trim()),
            Observed::Error(e) => write!(f, "daxtest error: {e}"),
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("success"),
            Outcome::Errno(e) => write!(f, "error {e}"),
            Outcome::Signal(s) => write!(f, "killed by {s}"),
            Outcome::Content(c) => write!(f, "every byte {}", show_byte(*c as u8)),
            Outcome::Dax(on) => write!(f, "STATX_ATTR_DAX {}", on_off(*on)),
            Outcome::Flag(on) => write!(f, "FS_XFLAG_DAX {}", on_off(*on)),
            Outcome::Extents { since, same: true } => {
                write!(f, "extents unchanged since {since:?}")
            }
            Outcome::Extents { since, same: false } => write!(f, "extents changed since {since:?}"),
            Outcome::NoExtents => f.write_str("no extents (a hole)"),
            Outcome::Shared(s) => write!(f, "{} extents shared", format!("{s:?}").to_lowercase()),
            Outcome::Exit(s) => write!(f, "exit status {s}"),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.outcome)?;
        match self.faults {
            Some(c) => write!(f, " with faults {c}"),
            None => Ok(()),
        }
    }
}

impl Outcome {
    fn met_by(&self, observed: &Observed) -> bool {
        match (self, observed) {
            (_, Observed::Error(_)) => false,
            (_, Observed::Race { problems, .. }) if !problems.is_empty() => false,
            (Outcome::Ok, o) => {
                !matches!(o, Observed::Errno(_) | Observed::Signal(_) | Observed::Exit { .. })
                    || matches!(o, Observed::Exit { status: 0, .. })
            }
            (Outcome::Errno(e), Observed::Errno(o)) => e == o,
            (Outcome::Signal(s), Observed::Signal(o)) => s == o,
            // A short read, or one cut into more runs than reported, proves nothing about the
            // bytes that did not come back.
            (Outcome::Content(c), Observed::Bytes { asked, got, runs, truncated, .. }) => {
                got == asked && !truncated && runs.iter().all(|r| r.byte == *c as u8)
            }
            (Outcome::Dax(e), Observed::Dax(o)) => e == o,
            (Outcome::Flag(e), Observed::Flag(o)) => e == o,
            (Outcome::Extents { same, .. }, Observed::Extents { extents, saved: Some(saved) }) => {
                (extents == saved) == *same
            }
            (Outcome::NoExtents, Observed::Extents { extents, .. }) => extents.is_empty(),
            // A range with no extents is a hole, not a range whose extents are (not) shared.
            (Outcome::Shared(s), Observed::Extents { extents, .. }) if !extents.is_empty() => {
                let shared = extents.iter().filter(|e| e.flags & FIEMAP_EXTENT_SHARED != 0).count();
                match s {
                    Shared::All => shared == extents.len(),
                    Shared::None => shared == 0,
                    Shared::Some => shared > 0 && shared < extents.len(),
                }
            }
            (Outcome::Exit(e), Observed::Exit { status, .. }) => e == status,
            _ => false,
        }
    }
}

impl Expect {
    /// `Ok(())` when `observed` meets the expectation; otherwise why not, in one line.
    pub fn check(&self, observed: &Observed) -> Result<(), String> {
        let faults_ok = match (self.faults, observed.faults()) {
            (None, _) => true,
            (Some(c), Some(n)) => c.holds(n),
            (Some(_), None) => false,
        };
        if self.outcome.met_by(observed) && faults_ok {
            Ok(())
        } else {
            Err(format!("expected {self}, got {observed}"))
        }
    }
}

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
    /// Why the case could not be set up (mkfs, mount, DAX not in the state the mount asks for).
    pub setup_error: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_and_cap() {
        let (r, t) = runs(100, b"aaabbc");
        assert_eq!(
            r,
            [
                Run { offset: 100, len: 3, byte: b'a' },
                Run { offset: 103, len: 2, byte: b'b' },
                Run { offset: 105, len: 1, byte: b'c' }
            ]
        );
        assert!(!t);
        let many: Vec<u8> = (0..40u8).collect();
        let (r, t) = runs(0, &many);
        assert_eq!(r.len(), MAX_RUNS);
        assert!(t);
    }

    fn bytes(data: &[u8]) -> Observed {
        let (runs, truncated) = runs(0, data);
        let n = data.len() as u64;
        Observed::Bytes { asked: n, got: n, runs, truncated, faults: None }
    }

    fn ext(flags: u32) -> Extent {
        Extent { logical: 0, physical: 4096, length: 4096, flags }
    }

    fn just(o: Outcome) -> Expect {
        Expect::outcome(o)
    }

    fn faults(o: Outcome, c: &str) -> Expect {
        Expect { outcome: o, faults: Some(Count::parse(c).unwrap()) }
    }

    /// Every kind of expectation, met and not met, with the message a developer reads.
    #[test]
    fn each_expectation_fails_with_what_was_expected_and_seen() {
        let extents = |v: Vec<Extent>| Observed::Extents { extents: v, saved: None };
        let cases: Vec<(Expect, Observed, Option<&str>)> = vec![
            (just(Outcome::Ok), Observed::Ok, None),
            (
                just(Outcome::Ok),
                Observed::Errno("EINVAL".into()),
                Some("expected success, got error EINVAL"),
            ),
            (just(Outcome::Errno("EINVAL".into())), Observed::Errno("EINVAL".into()), None),
            (
                just(Outcome::Errno("EINVAL".into())),
                Observed::Ok,
                Some("expected error EINVAL, got success"),
            ),
            (
                just(Outcome::Errno("EOPNOTSUPP".into())),
                Observed::Errno("EINVAL".into()),
                Some("expected error EOPNOTSUPP, got error EINVAL"),
            ),
            (just(Outcome::Signal("SIGBUS".into())), Observed::Signal("SIGBUS".into()), None),
            (
                just(Outcome::Signal("SIGBUS".into())),
                bytes(b"\0\0"),
                Some("expected killed by SIGBUS, got bytes [\\0 x2 at 0]"),
            ),
            (just(Outcome::Content('b')), bytes(b"bb"), None),
            (
                just(Outcome::Content('b')),
                bytes(b"bc"),
                Some("expected every byte 'b', got bytes ['b' x1 at 0, 'c' x1 at 1]"),
            ),
            // A short read proves nothing about the bytes that did not come back.
            (
                just(Outcome::Content('b')),
                Observed::Bytes {
                    asked: 4096,
                    got: 0,
                    runs: vec![],
                    truncated: false,
                    faults: None,
                },
                Some("expected every byte 'b', got bytes [] (asked 4096, got 0)"),
            ),
            (
                just(Outcome::Content('b')),
                Observed::Bytes {
                    asked: 4096,
                    got: 2,
                    runs: vec![Run { offset: 0, len: 2, byte: b'b' }],
                    truncated: false,
                    faults: None,
                },
                Some("expected every byte 'b', got bytes ['b' x2 at 0] (asked 4096, got 2)"),
            ),
            (just(Outcome::Dax(true)), Observed::Dax(true), None),
            (
                just(Outcome::Dax(true)),
                Observed::Dax(false),
                Some("expected STATX_ATTR_DAX on, got STATX_ATTR_DAX off"),
            ),
            (
                just(Outcome::Flag(false)),
                Observed::Flag(true),
                Some("expected FS_XFLAG_DAX off, got FS_XFLAG_DAX on"),
            ),
            (
                just(Outcome::Extents { since: "b".into(), same: true }),
                Observed::Extents { extents: vec![ext(0)], saved: Some(vec![ext(0)]) },
                None,
            ),
            (
                just(Outcome::Extents { since: "b".into(), same: true }),
                Observed::Extents { extents: vec![ext(0x800)], saved: Some(vec![ext(0)]) },
                Some(
                    "expected extents unchanged since \"b\", got extents [0+4096@4096 flags 0x800]",
                ),
            ),
            (
                just(Outcome::Extents { since: "b".into(), same: false }),
                Observed::Extents { extents: vec![ext(0)], saved: Some(vec![ext(0)]) },
                Some("expected extents changed since \"b\""),
            ),
            (just(Outcome::Shared(Shared::All)), extents(vec![ext(0x2000)]), None),
            (
                just(Outcome::Shared(Shared::None)),
                extents(vec![ext(0x2000)]),
                Some("expected none extents shared"),
            ),
            // A hole has no extents that could be shared or not.
            (
                just(Outcome::Shared(Shared::None)),
                extents(vec![]),
                Some("expected none extents shared, got no extents"),
            ),
            (
                just(Outcome::Shared(Shared::All)),
                extents(vec![]),
                Some("expected all extents shared, got no extents"),
            ),
            (just(Outcome::NoExtents), extents(vec![]), None),
            (
                just(Outcome::NoExtents),
                extents(vec![ext(0)]),
                Some("expected no extents (a hole), got extents [0+4096@4096 flags 0x0]"),
            ),
            (
                just(Outcome::Ok),
                Observed::Race { rounds: 5, problems: vec!["slot 3 lost".into()] },
                Some("expected success, got 5 rounds, 1 problems: slot 3 lost"),
            ),
            (
                just(Outcome::Exit(0)),
                Observed::Exit { status: 1, output: "no".into() },
                Some("expected exit status 0, got exit 1: no"),
            ),
            // daxtest's own failures never meet an expectation, whatever it is.
            (
                just(Outcome::Ok),
                Observed::Error("no mapping \"m\"".into()),
                Some("expected success, got daxtest error: no mapping \"m\""),
            ),
            (
                just(Outcome::Errno("EINVAL".into())),
                Observed::Error("x".into()),
                Some("expected error EINVAL, got daxtest error: x"),
            ),
            // Faults: counted by the process that owns the mapping.
            (just(Outcome::Ok), Observed::Stored { faults: 3 }, None),
            (faults(Outcome::Ok, ">=1"), Observed::Stored { faults: 1 }, None),
            (
                faults(Outcome::Ok, ">=1"),
                Observed::Stored { faults: 0 },
                Some("expected success with faults >= 1, got stored, 0 faults"),
            ),
            (
                faults(Outcome::Content('a'), "0"),
                Observed::Bytes {
                    asked: 1,
                    got: 1,
                    runs: vec![Run { offset: 0, len: 1, byte: b'a' }],
                    truncated: false,
                    faults: Some(1),
                },
                Some("expected every byte 'a' with faults = 0, got bytes ['a' x1 at 0], 1 fault"),
            ),
            (
                faults(Outcome::Ok, "0"),
                Observed::Ok,
                Some("expected success with faults = 0, got success"),
            ),
        ];
        for (expect, observed, want) in cases {
            let got = expect.check(&observed);
            match want {
                None => assert_eq!(got, Ok(()), "{expect:?} vs {observed:?}"),
                Some(msg) => {
                    let e = got.expect_err(&format!("{expect:?} vs {observed:?} must fail"));
                    assert!(e.starts_with(msg), "{e}\n  does not start with\n{msg}");
                }
            }
        }
    }

    #[test]
    fn counts_parse_and_compare() {
        let c = |s: &str| Count::parse(s).unwrap();
        assert!(c("0").holds(0) && !c("0").holds(1));
        assert!(c(">=1").holds(1) && !c(">=1").holds(0));
        assert!(c(">0").holds(1) && c("<2").holds(1) && !c("<2").holds(2));
        assert!(c("<=2").holds(2) && c("=3").holds(3));
        assert_eq!(c(" >= 4 ").to_string(), ">= 4");
        assert_eq!(Count::parse("many"), None);
        assert_eq!(Count::parse(">=-1"), None);
    }

    #[test]
    fn op_names_are_the_scenario_words() {
        assert_eq!(Op::Evict.name(), "evict");
        assert_eq!(
            Op::CloneRange {
                src: "a".into(),
                dst: "b".into(),
                src_offset: 0,
                len: 1,
                dst_offset: 0
            }
            .name(),
            "clone_range"
        );
    }
}
