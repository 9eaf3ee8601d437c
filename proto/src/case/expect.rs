//! What a step must produce, and the one judge of it ([`Expect::check`]), used by the agent (to
//! stop at the first mismatch) and by the host (to report it).

use super::observed::{on_off, show_byte};
use super::{Observed, FIEMAP_EXTENT_SHARED};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    /// DAX faults served with a PMD (2 MiB) entry during the access: `dax_pmd_fault_done`
    /// events with result NOPAGE, from the fs_dax tracepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmd_faults: Option<Count>,
    /// With a signal: the si_code its siginfo must carry (`BUS_MCEERR_AR`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub si_code: Option<String>,
    /// With a signal: the si_addr_lsb its siginfo must carry (12 a page, 21 a PMD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub si_addr_lsb: Option<u16>,
}

impl Expect {
    /// An expectation of this outcome alone.
    pub fn outcome(outcome: Outcome) -> Expect {
        Expect { outcome, faults: None, pmd_faults: None, si_code: None, si_addr_lsb: None }
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
    /// After a power cut that came during a `store_loop`: this many of its completed records are
    /// gone (`None`: any number, measured and reported, not judged).
    Lost(Option<u64>),
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
            Outcome::Lost(Some(n)) => write!(f, "{n} completed records lost"),
            Outcome::Lost(None) => f.write_str("any number of completed records lost"),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.outcome)?;
        if let Some(c) = self.faults {
            write!(f, " with faults {c}")?;
        }
        if let Some(c) = self.pmd_faults {
            write!(f, " and PMD faults {c}")?;
        }
        if let Some(c) = &self.si_code {
            write!(f, " with si_code {c}")?;
        }
        match self.si_addr_lsb {
            Some(l) => write!(f, " and si_addr_lsb {l}"),
            None => Ok(()),
        }
    }
}

impl Outcome {
    fn met_by(&self, observed: &Observed) -> bool {
        match (self, observed) {
            (_, Observed::Error(_)) => false,
            (_, Observed::Race { problems, .. }) | (_, Observed::Recovered { problems, .. })
                if !problems.is_empty() =>
            {
                false
            }
            (Outcome::Ok, o) => {
                !matches!(o, Observed::Errno(_) | Observed::Signal { .. } | Observed::Exit { .. })
                    || matches!(o, Observed::Exit { status: 0, .. })
            }
            (Outcome::Errno(e), Observed::Errno(o)) => e == o,
            (Outcome::Signal(s), Observed::Signal { name, .. }) => s == name,
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
            (Outcome::Lost(want), Observed::Recovered { records: Some(r), .. }) => {
                want.is_none_or(|n| r.lost == n)
            }
            _ => false,
        }
    }
}

impl Expect {
    /// `Ok(())` when `observed` meets the expectation; otherwise why not, in one line.
    pub fn check(&self, observed: &Observed) -> Result<(), String> {
        let holds = |want: Option<Count>, seen: Option<u64>| match (want, seen) {
            (None, _) => true,
            (Some(c), Some(n)) => c.holds(n),
            (Some(_), None) => false,
        };
        let counts_ok =
            holds(self.faults, observed.faults()) && holds(self.pmd_faults, observed.pmd_faults());
        // siginfo fields asked for must have been caught, and be these.
        let info = match observed {
            Observed::Signal { info, .. } => info.as_ref(),
            _ => None,
        };
        let siginfo_ok = self.si_code.as_ref().is_none_or(|c| info.is_some_and(|i| &i.code == c))
            && self.si_addr_lsb.is_none_or(|l| info.is_some_and(|i| i.addr_lsb == l));
        if self.outcome.met_by(observed) && counts_ok && siginfo_ok {
            Ok(())
        } else {
            Err(format!("expected {self}, got {observed}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{runs, Extent, Run, SigInfo};

    fn bytes(data: &[u8]) -> Observed {
        let (runs, truncated) = runs(0, data);
        let n = data.len() as u64;
        Observed::Bytes { asked: n, got: n, runs, truncated, faults: None, pmd_faults: None }
    }

    fn recovered(completed: u64, lost: u64) -> Observed {
        Observed::Recovered {
            problems: vec![],
            records: Some(crate::case::Records { completed, lost }),
        }
    }

    fn ext(flags: u32) -> Extent {
        Extent { logical: 0, physical: 4096, length: 4096, flags }
    }

    fn just(o: Outcome) -> Expect {
        Expect::outcome(o)
    }

    fn pmd(c: &str) -> Expect {
        Expect { pmd_faults: Some(Count::parse(c).unwrap()), ..just(Outcome::Ok) }
    }

    fn faults(o: Outcome, c: &str) -> Expect {
        Expect { faults: Some(Count::parse(c).unwrap()), ..just(o) }
    }

    fn sigbus(code: Option<&str>, lsb: Option<u16>) -> Expect {
        Expect {
            si_code: code.map(str::to_string),
            si_addr_lsb: lsb,
            ..just(Outcome::Signal("SIGBUS".into()))
        }
    }

    fn killed(code: &str, addr_lsb: u16, idle: bool) -> Observed {
        Observed::Signal {
            name: "SIGBUS".into(),
            info: Some(SigInfo { code: code.into(), addr_lsb, offset: Some(4096), idle }),
        }
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
            (just(Outcome::Signal("SIGBUS".into())), Observed::signal("SIGBUS"), None),
            // siginfo: what the holder's handler caught.
            (sigbus(Some("BUS_MCEERR_AR"), Some(12)), killed("BUS_MCEERR_AR", 12, false), None),
            (sigbus(None, None), killed("BUS_MCEERR_AO", 21, true), None),
            (
                sigbus(Some("BUS_MCEERR_AR"), None),
                killed("BUS_MCEERR_AO", 12, true),
                Some(
                    "expected killed by SIGBUS with si_code BUS_MCEERR_AR, got killed by SIGBUS \
                     (BUS_MCEERR_AO, si_addr_lsb 12, at offset 4096, while idle before this step)",
                ),
            ),
            (
                sigbus(Some("BUS_MCEERR_AR"), Some(12)),
                killed("BUS_MCEERR_AR", 21, false),
                Some("expected killed by SIGBUS with si_code BUS_MCEERR_AR and si_addr_lsb 12"),
            ),
            // A siginfo asked for and none caught (a death the handler did not see) fails.
            (
                sigbus(Some("BUS_ADRERR"), None),
                Observed::signal("SIGBUS"),
                Some("expected killed by SIGBUS with si_code BUS_ADRERR, got killed by SIGBUS"),
            ),
            (sigbus(Some("BUS_MCEERR_AR"), None), Observed::Ok, Some("expected killed by SIGBUS")),
            (
                just(Outcome::Signal("SIGBUS".into())),
                bytes(b"\0\0"),
                Some("expected killed by SIGBUS, got bytes [\\0 x2 at 0]"),
            ),
            (just(Outcome::Content('b')), bytes(b"bb"), None),
            // A power cut's recovery: clean, or what the check found.
            (just(Outcome::Ok), Observed::Recovered { problems: vec![], records: None }, None),
            (
                just(Outcome::Ok),
                Observed::Recovered {
                    problems: vec!["xfs_repair -n /dev/pmem0: exit 1".into()],
                    records: None,
                },
                Some("expected success, got after the cut: xfs_repair -n /dev/pmem0: exit 1"),
            ),
            // A store_loop's records: judged when a number is expected, measured for "any".
            (just(Outcome::Lost(Some(0))), recovered(5, 0), None),
            (
                just(Outcome::Lost(Some(0))),
                recovered(5, 2),
                Some(
                    "expected 0 completed records lost, got recovered and checked clean; 5 \
                     records completed before the cut, 2 lost",
                ),
            ),
            (just(Outcome::Lost(None)), recovered(5, 2), None),
            (
                just(Outcome::Lost(None)),
                Observed::Recovered { problems: vec![], records: None },
                Some(
                    "expected any number of completed records lost, got recovered and checked \
                     clean",
                ),
            ),
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
                    pmd_faults: None,
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
                    pmd_faults: None,
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
            (just(Outcome::Ok), Observed::Stored { faults: 3, pmd_faults: None }, None),
            (faults(Outcome::Ok, ">=1"), Observed::Stored { faults: 1, pmd_faults: None }, None),
            (
                faults(Outcome::Ok, ">=1"),
                Observed::Stored { faults: 0, pmd_faults: None },
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
                    pmd_faults: None,
                },
                Some("expected every byte 'a' with faults = 0, got bytes ['a' x1 at 0], 1 fault"),
            ),
            (
                faults(Outcome::Ok, "0"),
                Observed::Ok,
                Some("expected success with faults = 0, got success"),
            ),
            // PMD faults: from the fs_dax tracepoints, when the step asks for them.
            (pmd(">=1"), Observed::Stored { faults: 1, pmd_faults: Some(1) }, None),
            (
                pmd("0"),
                Observed::Stored { faults: 1, pmd_faults: Some(1) },
                Some("expected success and PMD faults = 0, got stored, 1 fault (1 PMD)"),
            ),
            (
                pmd(">=1"),
                Observed::Stored { faults: 1, pmd_faults: None },
                Some("expected success and PMD faults >= 1, got stored, 1 fault"),
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
}
