//! DAX fault sizes from the kernel's own fs_dax tracepoints: how many faults of an access were
//! served with a PMD (2 MiB) entry. `dax_pmd_fault_done` is logged at the end of every PMD fault
//! attempt with its result; NOPAGE means a PMD entry was installed (a block or the huge zero
//! page), FALLBACK that the fault went on with PTEs.

use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/fs_dax/dax_pmd_fault_done/enable";

/// The trace of one access, from an emptied buffer.
pub struct PmdTrace;

impl PmdTrace {
    /// Enables `dax_pmd_fault_done` (tracefs is mounted at boot) and empties the buffer.
    pub fn start() -> Result<PmdTrace, String> {
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
        // Opening `trace` for writing with O_TRUNC empties the ring buffer.
        std::fs::write(root.join("trace"), "").map_err(|e| format!("{TRACEFS}/trace: {e}"))?;
        Ok(PmdTrace)
    }

    /// The PMD faults served since [`PmdTrace::start`].
    pub fn pmd_faults(self) -> Result<u64, String> {
        let text = std::fs::read_to_string(Path::new(TRACEFS).join("trace"))
            .map_err(|e| format!("{TRACEFS}/trace: {e}"))?;
        Ok(served(&text))
    }
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
    }
}
