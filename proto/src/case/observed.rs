//! What a step did, as the agent observes it: success, an errno or a signal, bytes as runs,
//! the DAX state, extents, a race's findings, a shell's exit, or daxtest's own error.

use serde::{Deserialize, Serialize};
use std::fmt;

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

/// What the siginfo of a signal said, as the mapping's holder caught it (SIGBUS and SIGSEGV: its
/// handler reports the fields below before the process dies of the signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigInfo {
    /// si_code by name (`BUS_ADRERR`, `BUS_MCEERR_AR`, `BUS_MCEERR_AO`, `SEGV_ACCERR`, ...; the
    /// number when it has none).
    pub code: String,
    /// si_addr_lsb: log2 of the size of what the kernel reports lost around si_addr (12 for a
    /// page, 21 for a PMD); 0 for codes that carry none.
    pub addr_lsb: u16,
    /// si_addr as an offset into the mapping; `None` when it lies outside it.
    pub offset: Option<u64>,
    /// The signal came while the holder waited between requests, so not from this step's
    /// access: another process's doing (an action-optional memory-failure kill).
    pub idle: bool,
}

impl fmt::Display for SigInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)?;
        // SIGSEGV carries no si_addr_lsb (the handler reports 0).
        if !self.code.starts_with("SEGV_") {
            write!(f, ", si_addr_lsb {}", self.addr_lsb)?;
        }
        if let Some(o) = self.offset {
            write!(f, ", at offset {o}")?;
        }
        if self.idle {
            f.write_str(", while idle before this step")?;
        }
        Ok(())
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    Ok,
    Errno(String),
    /// The mapping's holder died of this signal; `info` is its siginfo when the holder caught
    /// it (SIGBUS, SIGSEGV).
    Signal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<SigInfo>,
    },
    /// A store through a mapping that completed, with the faults it took (and the PMD faults
    /// among them, when the step asked: from the fs_dax tracepoints).
    Stored {
        faults: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pmd_faults: Option<u64>,
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pmd_faults: Option<u64>,
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
    /// A power cut's aftermath: what the recovery mount, the unmount, the filesystem check and
    /// the mount after it found (empty: the filesystem came back clean).
    Recovered {
        problems: Vec<String>,
        /// After a `store_loop`: its completed records and how many of them the cut lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records: Option<Records>,
    },
    /// A `store_profile`'s figures: measured, never judged (success is all it can be expected
    /// to show).
    Profile(FaultProfile),
    /// daxtest could not do the step (a mapping whose process is gone, a helper that failed, a
    /// race that never raced): says nothing about the kernel, so the case is an error.
    Error(String),
}

impl Observed {
    /// A death by `name` with no siginfo (a signal the holder does not catch).
    pub fn signal(name: &str) -> Observed {
        Observed::Signal { name: name.to_string(), info: None }
    }

    /// The page faults an access took, for observations that count them.
    pub fn faults(&self) -> Option<u64> {
        match self {
            Observed::Stored { faults, .. } => Some(*faults),
            Observed::Bytes { faults, .. } => *faults,
            _ => None,
        }
    }

    /// The DAX PMD faults an access took, when the step counted them.
    pub fn pmd_faults(&self) -> Option<u64> {
        match self {
            Observed::Stored { pmd_faults, .. } | Observed::Bytes { pmd_faults, .. } => *pmd_faults,
            _ => None,
        }
    }

    /// Records the PMD faults of an access; other observations are left as they are.
    pub fn set_pmd_faults(&mut self, n: u64) {
        if let Observed::Stored { pmd_faults, .. } | Observed::Bytes { pmd_faults, .. } = self {
            *pmd_faults = Some(n);
        }
    }
}

/// What the first stores of a `store_profile` cost: the time of each, the page faults they took
/// by size, and the metadata work the filesystem did meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultProfile {
    /// The stride: one sample per `stride` bytes of the range (4096: a page; 2097152: a PMD).
    pub stride: u64,
    /// Nanoseconds of each first store, in address order (CLOCK_MONOTONIC around a volatile
    /// one-byte store, in the mapping's process).
    pub samples_ns: Vec<u64>,
    /// The median time of an empty pair of clock reads in the same loop: what each sample
    /// includes besides the store.
    pub clock_ns: u64,
    /// Minor plus major faults of the process over the whole loop (getrusage).
    pub faults: u64,
    /// DAX faults served with a PTE (4 KiB) entry: `dax_pte_fault_done` events.
    pub pte_faults: u64,
    /// DAX faults served with a PMD (2 MiB) entry: `dax_pmd_fault_done` events with NOPAGE, or
    /// with NEEDDSYNC (MAP_SYNC: the entry is installed once the metadata is durable).
    pub pmd_faults: u64,
    /// DAX PMD faults that fell back to PTEs: `dax_pmd_fault_done` with FALLBACK.
    pub pmd_fallbacks: u64,
    /// The filesystem's own counter of metadata made durable, read before and after the loop.
    pub metadata: Option<MetadataWork>,
}

/// A filesystem counter of metadata work over a `store_profile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataWork {
    /// What it counts: `xfs log forces` (/sys/fs/xfs/DEV/stats/stats, `log` line, xs_log_force)
    /// or `jbd2 commits` (/proc/fs/jbd2/DEV-8/info, its transactions).
    pub counter: String,
    /// After minus before.
    pub count: u64,
}

impl FaultProfile {
    /// The median sample, for one-line summaries.
    pub fn median_ns(&self) -> u64 {
        let mut v = self.samples_ns.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} first stores every {} bytes, median {} ns, total {} ns (a clock pair {} ns); {}, \
             {} PTE and {} PMD DAX faults ({} PMD fallbacks)",
            self.samples_ns.len(),
            self.stride,
            self.median_ns(),
            self.samples_ns.iter().sum::<u64>(),
            self.clock_ns,
            plural(self.faults, "fault"),
            self.pte_faults,
            self.pmd_faults,
            self.pmd_fallbacks
        )?;
        match &self.metadata {
            Some(m) => write!(f, "; {} {}", m.count, m.counter),
            None => Ok(()),
        }
    }
}

/// A `store_loop`'s records across a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Reported completed to the host before the cut.
    pub completed: u64,
    /// Of those, the ones not in the file after the reboot.
    pub lost: u64,
}

impl fmt::Display for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} records completed before the cut, {} lost", self.completed, self.lost)
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
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        let n = run_length(&data[i..], b);
        match out.last_mut() {
            Some(r) if r.byte == b => r.len += n as u64,
            _ => {
                if out.len() == MAX_RUNS {
                    return true;
                }
                out.push(Run { offset: base + i as u64, len: n as u64, byte: b })
            }
        }
        i += n;
    }
    false
}

/// How many bytes at the start of `data` are `b`. Eight bytes at a time: in the guest, under
/// TCG, a byte loop over a 64 MiB read took seconds.
fn run_length(data: &[u8], b: u8) -> usize {
    let word = u64::from_ne_bytes([b; 8]);
    let mut words = data.chunks_exact(8);
    let mut n = 0;
    for w in words.by_ref() {
        if u64::from_ne_bytes(w.try_into().expect("chunks of 8")) != word {
            break;
        }
        n += 8;
    }
    n + data[n..].iter().take_while(|&&x| x == b).count()
}

pub(super) fn show_byte(b: u8) -> String {
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
            Observed::Signal { name, info: None } => write!(f, "killed by {name}"),
            Observed::Signal { name, info: Some(i) } => write!(f, "killed by {name} ({i})"),
            Observed::Stored { faults, pmd_faults } => {
                write!(f, "stored, {}", plural(*faults, "fault"))?;
                match pmd_faults {
                    Some(n) => write!(f, " ({n} PMD)"),
                    None => Ok(()),
                }
            }
            Observed::Bytes { asked, got, runs, truncated, faults, pmd_faults } => {
                let parts: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{} x{} at {}", show_byte(r.byte), r.len, r.offset))
                    .collect();
                write!(f, "bytes [{}{}]", parts.join(", "), if *truncated { ", ..." } else { "" })?;
                if got != asked {
                    write!(f, " (asked {asked}, got {got})")?;
                }
                if let Some(n) = faults {
                    write!(f, ", {}", plural(*n, "fault"))?;
                }
                match pmd_faults {
                    Some(n) => write!(f, " ({n} PMD)"),
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
            Observed::Recovered { problems, records } => {
                match problems.is_empty() {
                    true => f.write_str("recovered and checked clean")?,
                    false => write!(f, "after the cut: {}", problems.join("; "))?,
                }
                match records {
                    Some(r) => write!(f, "; {r}"),
                    None => Ok(()),
                }
            }
            Observed::Profile(p) => write!(f, "{p}"),
            Observed::Error(e) => write!(f, "daxtest error: {e}"),
        }
    }
}

pub(super) fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
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
        // Runs that start and end inside and across 8-byte words, against a byte-by-byte count.
        let mut data = vec![b'x'; 61];
        data[7..9].fill(b'y');
        data[9..33].fill(b'z');
        data[60] = b'y';
        let (r, _) = runs(5, &data);
        let bytes: Vec<u8> = r.iter().flat_map(|r| vec![r.byte; r.len as usize]).collect();
        assert_eq!(bytes, data);
        assert_eq!(r.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 12, 14, 38, 65]);
        let many: Vec<u8> = (0..40u8).collect();
        let (r, t) = runs(0, &many);
        assert_eq!(r.len(), MAX_RUNS);
        assert!(t);
    }
}
