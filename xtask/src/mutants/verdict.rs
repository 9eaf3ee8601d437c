//! What a run of mutants means: each mutant killed (a case it names failed, crashed or hung on
//! its kernel), survived (they all passed) or untested (the patch, the build or a case could not
//! say); the unmutated tree's run that makes the rest count; the kill rate and the exit status;
//! `mutants.json`.

use crate::run::events::Status;
use serde::Serialize;

/// One case's outcome on a kernel, as the verdict needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub case: String,
    pub status: Status,
    /// The first line of the case's message.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Cases caught it: they failed, crashed or hung on the mutant kernel.
    Killed { by: Vec<Outcome> },
    /// Every case that ran passed on the mutant kernel.
    Survived,
    /// It could not be judged: the patch did not apply, the kernel did not build, or no case
    /// could say (errors, skips).
    Untested { why: String },
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Killed { .. } => "killed",
            Verdict::Survived => "survived",
            Verdict::Untested { .. } => "untested",
        }
    }
}

/// The verdict on a mutant from its cases' outcomes.
pub fn judge(outcomes: &[Outcome]) -> Verdict {
    let by: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Fail | Status::Crash | Status::Hang))
        .cloned()
        .collect();
    if !by.is_empty() {
        return Verdict::Killed { by };
    }
    // An error says nothing about the kernel's behaviour: neither a kill nor a survival.
    if let Some(e) = outcomes.iter().find(|o| o.status == Status::Error) {
        return Verdict::Untested { why: format!("{}: error: {}", e.case, e.message) };
    }
    if !outcomes.iter().any(|o| matches!(o.status, Status::Pass | Status::Xfail)) {
        return Verdict::Untested {
            why: match outcomes.first() {
                None => "no case ran".into(),
                Some(o) => format!("every case was skipped ({}: {})", o.case, o.message),
            },
        };
    }
    Verdict::Survived
}

/// Why the unmutated tree's run does not count as a baseline: every case a mutant names must
/// pass there (or fail as its known bug says), or a kill on the mutant would prove nothing.
pub fn baseline_problems(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !matches!(o.status, Status::Pass | Status::Xfail))
        .map(|o| format!("{} {}: {}", o.case, o.status.name(), o.message))
        .collect()
}

/// A mutant's line of the result: its verdict against what its header expects.
#[derive(Debug, Clone, Serialize)]
pub struct MutantResult {
    pub name: String,
    pub behaviour: String,
    pub sources: Vec<String>,
    pub cases: Vec<String>,
    /// The header's Survives: why today's catalogue is expected to miss it.
    pub expected_to_survive: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Seconds: applying and the incremental build; the image, boot and cases.
    pub build_s: f64,
    pub test_s: f64,
    /// The run directory of its cases, when they ran.
    pub run_dir: Option<String>,
}

impl MutantResult {
    /// Killed, or expected to survive and not killed.
    pub fn as_expected(&self) -> bool {
        matches!(
            (&self.verdict, &self.expected_to_survive),
            (Verdict::Killed { .. }, _) | (Verdict::Survived, Some(_))
        )
    }
}

/// The kill rate: killed mutants of all mutants run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KillRate {
    pub killed: usize,
    pub total: usize,
    pub expected_survivors: usize,
}

impl KillRate {
    pub fn of(results: &[MutantResult]) -> KillRate {
        KillRate {
            killed: results.iter().filter(|r| matches!(r.verdict, Verdict::Killed { .. })).count(),
            total: results.len(),
            expected_survivors: results.iter().filter(|r| r.expected_to_survive.is_some()).count(),
        }
    }
}

impl std::fmt::Display for KillRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = match self.total {
            0 => 0.0,
            n => 100.0 * self.killed as f64 / n as f64,
        };
        write!(
            f,
            "kill rate {}/{} ({pct:.0} %); {} expected to survive",
            self.killed, self.total, self.expected_survivors
        )
    }
}

/// 0 when every mutant expected to be killed was killed, 1 otherwise.
pub fn exit_status(results: &[MutantResult]) -> i32 {
    match results.iter().all(MutantResult::as_expected) {
        true => crate::exit::SUCCESS,
        false => crate::exit::CASES_FAILED,
    }
}

/// The unmutated tree's build and run of every case the mutants name.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub cases: Vec<String>,
    pub build_s: f64,
    pub test_s: f64,
    pub run_dir: String,
}

/// `mutants.json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub schema_version: u32,
    /// The tree the mutants patched, and its version.
    pub source: String,
    pub kernel_version: String,
    pub baseline: &'a Baseline,
    pub mutants: &'a [MutantResult],
    pub kill_rate: KillRate,
    /// Seconds from start to end, builds included.
    pub total_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(case: &str, status: Status) -> Outcome {
        Outcome { case: case.into(), status, message: format!("{} says so", status.name()) }
    }

    fn result(verdict: Verdict, survives: Option<&str>) -> MutantResult {
        MutantResult {
            name: "m".into(),
            behaviour: "b".into(),
            sources: vec![],
            cases: vec![],
            expected_to_survive: survives.map(str::to_string),
            verdict,
            build_s: 0.0,
            test_s: 0.0,
            run_dir: None,
        }
    }

    #[test]
    fn a_failed_crashed_or_hung_case_kills_and_names_itself() {
        for status in [Status::Fail, Status::Crash, Status::Hang] {
            let v = judge(&[o("a", Status::Pass), o("b", status), o("c", Status::Error)]);
            assert_eq!(v, Verdict::Killed { by: vec![o("b", status)] }, "{status:?}");
        }
    }

    #[test]
    fn passing_cases_let_it_survive_and_errors_or_skips_say_nothing() {
        assert_eq!(judge(&[o("a", Status::Pass), o("b", Status::Xfail)]), Verdict::Survived);
        let v = judge(&[o("a", Status::Pass), o("b", Status::Error)]);
        assert_eq!(v, Verdict::Untested { why: "b: error: error says so".into() });
        let v = judge(&[o("a", Status::Skip)]);
        assert_eq!(v, Verdict::Untested { why: "every case was skipped (a: skip says so)".into() });
        assert_eq!(judge(&[]), Verdict::Untested { why: "no case ran".into() });
    }

    #[test]
    fn the_baseline_counts_only_when_every_case_passes() {
        assert!(baseline_problems(&[o("a", Status::Pass), o("b", Status::Xfail)]).is_empty());
        assert_eq!(
            baseline_problems(&[o("a", Status::Pass), o("b", Status::Fail)]),
            ["b fail: fail says so"]
        );
        assert_eq!(baseline_problems(&[o("a", Status::Skip)]).len(), 1);
    }

    #[test]
    fn exit_status_is_1_for_a_survivor_not_expected_and_for_an_untested_mutant() {
        let killed = result(Verdict::Killed { by: vec![o("a", Status::Fail)] }, None);
        let expected = result(Verdict::Survived, Some("power loss (issue 14) will kill it"));
        assert_eq!(exit_status(&[killed.clone(), expected.clone()]), 0);
        // An expected survivor that was killed is better than expected: still 0.
        let killed_survivor = result(killed.verdict.clone(), Some("x"));
        assert_eq!(exit_status(&[killed_survivor]), 0);
        assert_eq!(exit_status(&[killed.clone(), result(Verdict::Survived, None)]), 1);
        let untested = result(Verdict::Untested { why: "build failed".into() }, None);
        assert_eq!(exit_status(&[killed.clone(), untested]), 1);
        let rate = KillRate::of(&[killed, expected]);
        assert_eq!(rate, KillRate { killed: 1, total: 2, expected_survivors: 1 });
        assert_eq!(rate.to_string(), "kill rate 1/2 (50 %); 1 expected to survive");
    }

    #[test]
    fn the_json_says_the_verdict_and_who_killed() {
        let r = result(Verdict::Killed { by: vec![o("a", Status::Hang)] }, None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "killed");
        assert_eq!(v["by"][0]["case"], "a");
        assert_eq!(v["by"][0]["status"], "hang");
        let v = serde_json::to_value(result(Verdict::Untested { why: "w".into() }, None)).unwrap();
        assert_eq!((v["verdict"].as_str(), v["why"].as_str()), (Some("untested"), Some("w")));
    }
}
