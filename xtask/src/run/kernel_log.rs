//! Kernel-log classification: which lines fail a case (warnings, oopses, corruption, hung tasks,
//! the list of ../shared/dax-semantics.md in the style of fstests' _check_dmesg), panics in a
//! serial log, and taint flags for messages.

use anyhow::Context;
use regex::Regex;

/// Lines that fail a case. Case-sensitive, as in fstests: 6.1's "DAX enabled. Warning:
/// EXPERIMENTAL, use at your own risk" is not a `WARNING:`.
pub const FAILURE_PATTERNS: &[&str] = &[
    r"kernel BUG at",
    r"WARNING:",
    r"\bBUG:",
    r"Oops",
    r"general protection fault",
    r"UBSAN:",
    r"BUG: KASAN:",
    r"BUG: KFENCE:",
    r"possible recursive locking detected",
    r"suspicious RCU usage",
    r"possible circular locking dependency",
    r"INFO: task .* blocked for more than",
    r"rcu: INFO: .*stall",
    r"watchdog: BUG: soft lockup",
    r"hard LOCKUP",
    r"Kernel panic - not syncing",
    r"oom-kill",
    r"Internal error",
    r"Corruption detected",
    r"Metadata corruption detected",
    r"Metadata CRC error",
    r"Shutting down filesystem",
    r"XFS: Assertion failed",
    r"EXT4-fs error",
    r"Remounting filesystem read-only",
    r"Aborting journal",
    r"Memory failure:",
    // The namespace is not fsdax: the case silently ran without DAX.
    r"Turning off DAX",
];

/// Lines that mean the kernel is dead or damaged, to find in a serial log.
const CRASH_START: &[&str] = &[
    "Kernel panic - not syncing",
    "Oops",
    "kernel BUG at",
    "general protection fault",
    "BUG: unable to handle",
    "BUG: kernel NULL pointer dereference",
];

/// The kernel's own hang detectors: hung task, soft lockup, RCU stall.
const HANG_START: &[&str] =
    &["blocked for more than", "BUG: soft lockup", "detected stalls", "self-detected stall"];

#[derive(Debug)]
pub struct Classifier {
    failure: Vec<Regex>,
    benign: Vec<Regex>,
    expected: Vec<(String, Regex)>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Lines that fail the case, in order.
    pub bad: Vec<String>,
    /// Expected patterns that matched no line.
    pub missing: Vec<String>,
}

fn compile(patterns: &[String]) -> anyhow::Result<Vec<Regex>> {
    patterns.iter().map(|p| Regex::new(p).with_context(|| format!("pattern {p:?}"))).collect()
}

impl Classifier {
    /// The built-in failure patterns plus a scenario's `forbidden`; `benign` lines pass anyway;
    /// every `expected` pattern must match some line.
    pub fn new(
        expected: &[String],
        benign: &[String],
        forbidden: &[String],
    ) -> anyhow::Result<Self> {
        let builtin: Vec<String> = FAILURE_PATTERNS.iter().map(|p| p.to_string()).collect();
        let mut failure = compile(&builtin)?;
        failure.extend(compile(forbidden)?);
        let expected = expected
            .iter()
            .map(|p| Ok((p.clone(), Regex::new(p).with_context(|| format!("pattern {p:?}"))?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Classifier { failure, benign: compile(benign)?, expected })
    }

    pub fn classify(&self, lines: &[String]) -> Verdict {
        let bad = lines
            .iter()
            .filter(|l| self.failure.iter().any(|r| r.is_match(l)))
            .filter(|l| !self.benign.iter().any(|r| r.is_match(l)))
            .cloned()
            .collect();
        let missing = self
            .expected
            .iter()
            .filter(|(_, r)| !lines.iter().any(|l| r.is_match(l)))
            .map(|(p, _)| p.clone())
            .collect();
        Verdict { bad, missing }
    }
}

/// The first panic, oops or BUG in a serial log, with its back-trace (through the `---[ end`
/// line, at most 80 lines).
pub fn crash_report(serial: &str) -> Option<String> {
    let lines: Vec<&str> = serial.lines().collect();
    let start = lines.iter().position(|l| CRASH_START.iter().any(|p| l.contains(p)))?;
    let mut end = (start + 80).min(lines.len());
    if let Some(i) = lines[start..end].iter().position(|l| l.contains("---[ end")) {
        end = start + i + 1;
    }
    Some(lines[start..end].join("\n"))
}

/// The first report of a hang detector in a serial log.
pub fn hang_report(serial: &str) -> Option<String> {
    serial.lines().find(|l| HANG_START.iter().any(|p| l.contains(p))).map(str::to_string)
}

/// The letters of /proc/sys/kernel/tainted (Documentation/admin-guide/tainted-kernels.rst).
pub fn taint_flags(value: u64) -> String {
    const LETTERS: &[(u32, char)] = &[
        (0, 'P'),
        (1, 'F'),
        (2, 'S'),
        (3, 'R'),
        (4, 'M'),
        (5, 'B'),
        (6, 'U'),
        (7, 'D'),
        (8, 'A'),
        (9, 'W'),
        (10, 'C'),
        (11, 'I'),
        (12, 'O'),
        (13, 'E'),
        (14, 'L'),
        (15, 'K'),
        (16, 'X'),
        (17, 'T'),
        (18, 'N'),
        (19, 'J'),
    ];
    let s: String =
        LETTERS.iter().filter(|(bit, _)| value & (1 << bit) != 0).map(|(_, c)| *c).collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn warnings_fail_and_chatter_passes() {
        let c = Classifier::new(&[], &[], &[]).unwrap();
        let log = lines(&[
            "[    4.2] XFS (pmem0): Mounting V5 Filesystem",
            "[    4.3] XFS (pmem0): DAX enabled. Warning: EXPERIMENTAL, use at your own risk",
            "[    4.4] XFS (pmem0): Ending clean mount",
            "[    5.1] WARNING: CPU: 0 PID: 91 at fs/dax.c:1045 dax_insert_entry+0x2a6/0x2f0",
            "[    6.0] INFO: task xfs_io:97 blocked for more than 3 seconds.",
            "[    7.0] XFS (pmem0): Metadata corruption detected at xfs_buf_ioend+0x1/0x2",
            "[    8.0] XFS (pmem0): DAX unsupported by block device. Turning off DAX.",
        ]);
        assert_eq!(c.classify(&log).bad, log[3..].to_vec());
    }

    #[test]
    fn benign_forbidden_and_expected_patterns() {
        let c = Classifier::new(
            &["Mounting V5".into(), "never logged".into()],
            &["WARNING: .*harmless".into()],
            &["DAX enabled".into()],
        )
        .unwrap();
        let log = lines(&[
            "[1] XFS (pmem0): Mounting V5 Filesystem",
            "[2] WARNING: a harmless thing",
            "[3] XFS (pmem0): DAX enabled. Warning: EXPERIMENTAL",
        ]);
        let v = c.classify(&log);
        assert_eq!(v.bad, [log[2].clone()]);
        assert_eq!(v.missing, ["never logged"]);
        assert!(Classifier::new(&["(".into()], &[], &[])
            .unwrap_err()
            .to_string()
            .contains("\"(\""));
    }

    #[test]
    fn a_panic_is_found_with_its_trace() {
        let serial = "daxtest-agent: ready at 2.1s\n\
            [   10.1] sysrq: Trigger a crash\n\
            [   10.1] Kernel panic - not syncing: sysrq triggered crash\n\
            [   10.1] CPU: 0 PID: 120 Comm: sh\n\
            [   10.1] Call Trace:\n\
            [   10.1]  <TASK>\n\
            [   10.1] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n\
            after\n";
        let r = crash_report(serial).unwrap();
        assert!(r.starts_with("[   10.1] Kernel panic - not syncing: sysrq triggered crash"));
        assert!(r.ends_with("---[ end Kernel panic - not syncing: sysrq triggered crash ]---"));
        assert_eq!(crash_report("all fine\n"), None);
    }

    #[test]
    fn hang_detectors_are_recognised() {
        let serial = "[   30.2] INFO: task daxtest-agent:211 blocked for more than 10 seconds.\n\
            [   30.2]       Not tainted 6.12.117+deb12-amd64 #1\n";
        assert_eq!(
            hang_report(serial).as_deref(),
            Some("[   30.2] INFO: task daxtest-agent:211 blocked for more than 10 seconds.")
        );
        assert!(hang_report("[ 40.0] watchdog: BUG: soft lockup - CPU#1 stuck for 26s!").is_some());
        assert!(hang_report("[ 40.0] rcu: INFO: rcu_preempt self-detected stall on CPU").is_some());
        assert_eq!(hang_report("[ 1.0] XFS (pmem0): Mounting V5 Filesystem\n"), None);
    }

    #[test]
    fn taint_letters() {
        assert_eq!(taint_flags(0), "none");
        assert_eq!(taint_flags(1 << 9), "W");
        assert_eq!(taint_flags((1 << 12) | (1 << 13)), "OE");
    }
}
