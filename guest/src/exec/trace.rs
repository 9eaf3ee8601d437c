//! DAX fault sizes from the kernel's own fs_dax tracepoints: how many faults of an access were
//! served with a PMD (2 MiB) entry. `dax_pmd_fault_done` is logged at the end of every PMD fault
//! attempt with its result; NOPAGE means a PMD entry was installed (a block or the huge zero
//! page), FALLBACK that the fault went on with PTEs. `dax_pte_fault_done` ends every DAX fault
//! handled with a PTE (include/trace/events/fs_dax.h; fs/dax.c dax_iomap_pte_fault), enabled only
//! for a `store_profile` (it fires on every 4 KiB fault).

use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/fs_dax/dax_pmd_fault_done/enable";
const PTE_EVENT: &str = "events/fs_dax/dax_pte_fault_done/enable";

/// The trace of one access, from an emptied buffer.
pub struct PmdTrace {
    /// `dax_pte_fault_done` is enabled too, until the trace is read.
    pte: bool,
}

/// A step's DAX faults by size, from the trace.
pub struct FaultSizes {
    pub pte: u64,
    pub pmd: u64,
    pub pmd_fallbacks: u64,
}

impl PmdTrace {
    /// Enables `dax_pmd_fault_done` (tracefs is mounted at boot) and empties the buffer.
    pub fn start() -> Result<PmdTrace, String> {
        Self::enable(false)
    }

    /// As [`PmdTrace::start`], with `dax_pte_fault_done` as well, for [`PmdTrace::sizes`].
    pub fn start_sizes() -> Result<PmdTrace, String> {
        Self::enable(true)
    }

    fn enable(pte: bool) -> Result<PmdTrace, String> {
        let root = Path::new(TRACEFS);
        if !root.join("trace").exists() {
            return Err(format!("no tracefs at {TRACEFS}: the kernel has no tracing support"));
        }
        std::fs::write(root.join(EVENT), "1").map_err(|e| {
            format!(
                "{TRACEFS}/{EVENT}: {e}: the kernel has no fs_dax tracepoints (CONFIG_FS_DAX and \
                 CONFIG_EVENT_TRACING), so PMD faults cannot be counted"
            )
        })?;
        if pte {
            std::fs::write(root.join(PTE_EVENT), "1")
                .map_err(|e| format!("{TRACEFS}/{PTE_EVENT}: {e}"))?;
        }
        // Opening `trace` for writing with O_TRUNC empties the ring buffer.
        std::fs::write(root.join("trace"), "").map_err(|e| format!("{TRACEFS}/trace: {e}"))?;
        Ok(PmdTrace { pte })
    }

    /// The PMD faults served since [`PmdTrace::start`].
    pub fn pmd_faults(self) -> Result<u64, String> {
        Ok(served(&self.read()?))
    }

    /// The DAX faults since [`PmdTrace::start_sizes`], by size; `dax_pte_fault_done` is
    /// disabled again.
    pub fn sizes(self) -> Result<FaultSizes, String> {
        let text = self.read()?;
        Ok(sizes(&text))
    }

    fn read(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(Path::new(TRACEFS).join("trace"))
            .map_err(|e| format!("{TRACEFS}/trace: {e}"))?;
        if self.pte {
            std::fs::write(Path::new(TRACEFS).join(PTE_EVENT), "0")
                .map_err(|e| format!("{TRACEFS}/{PTE_EVENT}: {e}"))?;
        }
        Ok(text)
    }
}

/// `dax_pte_fault_done` lines, and `dax_pmd_fault_done` lines by result.
fn sizes(trace: &str) -> FaultSizes {
    let pte = trace.lines().filter(|l| l.contains("dax_pte_fault_done:")).count() as u64;
    let pmd_done = trace.lines().filter(|l| l.contains("dax_pmd_fault_done:")).count() as u64;
    // A MAP_SYNC fault whose metadata was not yet durable ends NEEDDSYNC: the filesystem then
    // syncs and dax_finish_sync_fault installs the PMD entry (fs/dax.c dax_insert_pfn_mkwrite).
    let pmd = trace
        .lines()
        .filter(|l| l.contains("dax_pmd_fault_done:"))
        .filter(|l| {
            let result = l.split_whitespace().last().unwrap_or_default();
            result.split('|').any(|r| r == "NOPAGE" || r == "NEEDDSYNC")
                && !result.contains("FALLBACK")
        })
        .count() as u64;
    let pmd_fallbacks = trace
        .lines()
        .filter(|l| l.contains("dax_pmd_fault_done:"))
        .filter(|l| l.split_whitespace().last().unwrap_or_default().contains("FALLBACK"))
        .count() as u64;
    debug_assert!(pmd + pmd_fallbacks <= pmd_done);
    FaultSizes { pte, pmd, pmd_fallbacks }
}

/// `dax_pmd_fault_done` lines whose result is NOPAGE (and not FALLBACK).
fn served(trace: &str) -> u64 {
    trace
        .lines()
        .filter(|l| l.contains("dax_pmd_fault_done:"))
        .filter(|l| {
            let result = l.split_whitespace().last().unwrap_or_default();
            result.split('|').any(|r| r == "NOPAGE") && !result.contains("FALLBACK")
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_pmd_faults_are_the_nopage_results() {
        let trace = "\
# tracer: nop
daxtest-agent-112 [001] ..... 12.1: dax_pmd_fault: dev 259:0 ino 0x83 shared WRITE|ALLOW_RETRY address 0x7f0000000000 vm_start 0x7f0000000000 vm_end 0x7f0000400000 pgoff 0x0 max_pgoff 0x3ff
daxtest-agent-112 [001] ..... 12.2: dax_pmd_fault_done: dev 259:0 ino 0x83 shared WRITE|ALLOW_RETRY address 0x7f0000000000 vm_start 0x7f0000000000 vm_end 0x7f0000400000 pgoff 0x0 max_pgoff 0x3ff NOPAGE
daxtest-agent-112 [001] ..... 12.3: dax_pmd_fault_done: dev 259:0 ino 0x83 shared ALLOW_RETRY address 0x7f0000200000 vm_start 0x7f0000000000 vm_end 0x7f0000400000 pgoff 0x200 max_pgoff 0x3ff FALLBACK
";
        assert_eq!(served(trace), 1);
        assert_eq!(served("# tracer: nop\n"), 0);
        let s = sizes(trace);
        assert_eq!((s.pte, s.pmd, s.pmd_fallbacks), (0, 1, 1));
        let sync = trace.replace("max_pgoff 0x3ff NOPAGE", "max_pgoff 0x3ff NEEDDSYNC");
        assert_eq!(served(&sync), 0);
        assert_eq!(sizes(&sync).pmd, 1);
        let pte = "a-1 [000] ..... 1.0: dax_pte_fault_done: dev 259:0 ino 0x83 shared WRITE|MKWRITE|ALLOW_RETRY address 0x7f0000001000 pgoff 0x1 NOPAGE\n";
        assert_eq!(sizes(&pte.repeat(3)).pte, 3);
    }
}
