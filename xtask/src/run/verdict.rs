//! The verdict on a case: the agent's report judged into structured problems (steps, kernel log,
//! taint, teardown, processes left behind), the status they give (a known bug only when every
//! problem is its symptom), and whether the guest can be trusted afterwards. Kernel lines outside
//! every case window are judged here too.

use crate::run::events::{CaseResult, FailedStep, OutsideCases, Problem, Status, StepProfile};
use crate::run::kernel_log;
use crate::scenario::{Case, Symptom, SymptomKind, Xfail};
use daxtest_proto::case::{CaseReport, CaseSpec, Observed};

/// Decides a case from the agent's report: the steps against their expectations, the kernel log,
/// the taint and teardown, as structured problems; then the status (an error when the case
/// could not be run or judged; a known bug only when every problem is its symptom). `base`
/// carries id, kernel, seed, time.
pub fn judge(
    case: &Case,
    spec: &CaseSpec,
    xfail: Option<&Xfail>,
    report: &CaseReport,
    base: CaseResult,
) -> CaseResult {
    let mut r = base;
    r.kernel_log = report.kernel_log.clone();
    r.phases = report.phases.clone();
    r.measurements = report
        .steps
        .iter()
        .filter_map(|s| match &s.observed {
            Observed::Recovered { records: Some(records), .. } => {
                Some(format!("step {} (line {}, {}): {records}", s.index + 1, s.line, s.op))
            }
            Observed::Profile(p) => {
                Some(format!("step {} (line {}, {}): {p}", s.index + 1, s.line, s.op))
            }
            _ => None,
        })
        .collect();
    r.profiles = report
        .steps
        .iter()
        .filter_map(|s| match &s.observed {
            Observed::Profile(p) => {
                Some(StepProfile { step: s.index + 1, line: s.line, profile: p.clone() })
            }
            _ => None,
        })
        .collect();
    let problems = problems(case, spec, report);
    let (status, problems) = verdict(problems, xfail);
    r.status = status;
    r.message = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
    match (status, xfail) {
        (Status::Xfail, Some(x)) => {
            r.message = format!("known bug: {} ({}): {}", x.reason, x.link, r.message);
            r.known_bug = Some(x.known_bug());
        }
        (Status::Pass, Some(x)) => {
            r.message = format!(
                "the known bug did not show this time (it needs a lost race): {} ({})",
                x.reason, x.link
            );
            r.known_bug = Some(x.known_bug());
        }
        _ => {}
    }
    r.problems = problems;
    r
}

/// Everything wrong with a case, in the order a developer reads it.
fn problems(case: &Case, spec: &CaseSpec, report: &CaseReport) -> Vec<Problem> {
    let mut problems = Vec::new();
    match (&report.setup_error, &report.dax_state_error) {
        (Some(e), _) => problems.push(Problem::Setup { message: e.clone() }),
        (None, Some(e)) => problems.push(Problem::DaxState { message: e.clone() }),
        (None, None) => {
            // The host judges again from the observations: the agent's own stop is only an
            // optimisation.
            let failed =
                spec.steps.iter().zip(&report.steps).enumerate().find_map(|(i, (step, seen))| {
                    step.expect.check(&seen.observed).err().map(|_| match &seen.observed {
                        Observed::Error(message) => Problem::Framework {
                            number: i + 1,
                            line: step.line,
                            op: seen.op.clone(),
                            message: message.clone(),
                        },
                        observed => Problem::Step(FailedStep {
                            number: i + 1,
                            line: step.line,
                            op: seen.op.clone(),
                            expected: step.expect.clone(),
                            observed: observed.clone(),
                        }),
                    })
                });
            match failed {
                Some(p) => problems.push(p),
                None if report.steps.len() < spec.steps.len() => problems
                    .push(Problem::StepsMissing { ran: report.steps.len(), of: spec.steps.len() }),
                None => {}
            }
        }
    }
    let log = &case.kernel_log;
    match kernel_log::Classifier::new(&log.expected, &log.benign, &log.forbidden) {
        Ok(classifier) => {
            let verdict = classifier.classify(&report.kernel_log);
            problems.extend(verdict.bad.into_iter().map(|line| Problem::KernelLine { line }));
            // What a case that never ran its steps did not log says nothing.
            if report.setup_error.is_none() && report.dax_state_error.is_none() {
                problems.extend(
                    verdict.missing.into_iter().map(|pattern| Problem::MissingPattern { pattern }),
                );
            }
        }
        Err(e) => problems.push(Problem::Run { message: format!("kernel log patterns: {e:#}") }),
    }
    if let Some(why) = &report.kernel_log_gap {
        problems.push(Problem::IncompleteLog { why: why.clone() });
    }
    if report.tainted_after != report.tainted_before {
        problems
            .push(Problem::Taint { before: report.tainted_before, after: report.tainted_after });
    }
    if let Some(t) = &report.teardown_error {
        problems.push(Problem::Teardown { message: t.clone() });
    }
    if !report.left_behind.is_empty() {
        problems.push(Problem::LeftBehind { processes: report.left_behind.clone() });
    }
    problems
}

/// The status the problems give, with the problem an unexpected pass adds.
fn verdict(mut problems: Vec<Problem>, xfail: Option<&Xfail>) -> (Status, Vec<Problem>) {
    let status = match xfail {
        _ if problems.iter().any(Problem::is_error) => Status::Error,
        None if problems.is_empty() => Status::Pass,
        None => Status::Fail,
        Some(x) if problems.is_empty() && x.intermittent => Status::Pass,
        Some(x) if problems.is_empty() => {
            problems
                .push(Problem::UnexpectedPass { reason: x.reason.clone(), link: x.link.clone() });
            Status::Fail
        }
        Some(x) if symptom_covers(&x.symptom, &problems) => Status::Xfail,
        Some(_) => Status::Fail,
    };
    (status, problems)
}

/// Whether every problem is the known bug's symptom. A kernel-log symptom covers the taint a
/// warning or an oops brings (W, D), nothing else.
fn symptom_covers(symptom: &Symptom, problems: &[Problem]) -> bool {
    const TAINT_DIE: u64 = 1 << 7;
    const TAINT_WARN: u64 = 1 << 9;
    let matches = |text: &str| match &symptom.what {
        SymptomKind::Message(re) => regex::Regex::new(re).is_ok_and(|r| r.is_match(text)),
        _ => false,
    };
    let kernel_line_matched = symptom.step.is_none()
        && problems.iter().any(|p| matches!(p, Problem::KernelLine { line } if matches(line)));
    problems.iter().all(|p| match p {
        Problem::Step(s) => {
            symptom.step == Some(s.number)
                && match (&symptom.what, &s.observed) {
                    (SymptomKind::Errno(e), Observed::Errno(o)) => e == o,
                    (SymptomKind::Signal(e), Observed::Signal { name, .. }) => e == name,
                    (SymptomKind::Message(_), observed) => matches(&observed.to_string()),
                    _ => false,
                }
        }
        Problem::KernelLine { line } => symptom.step.is_none() && matches(line),
        Problem::Taint { before, after } => {
            kernel_line_matched && (after & !before) & !(TAINT_WARN | TAINT_DIE) == 0
        }
        _ => false,
    })
}

/// A case that hung: a known bug when its xfail's symptom is a kernel-log message (no step) that
/// the kernel's hung-task report (the first kernel line the hang names) and every kernel line the
/// dump adds match; a hang with no such xfail, or with other lines, stays a hang.
pub fn judge_hang(r: &mut CaseResult, xfail: Option<&Xfail>) {
    let Some(x) = xfail else { return };
    if x.symptom.step.is_some() {
        return;
    }
    let SymptomKind::Message(re) = &x.symptom.what else { return };
    let Ok(re) = regex::Regex::new(re) else { return };
    let covered = r.problems.iter().all(|p| match p {
        Problem::Run { message } => re.is_match(message),
        Problem::KernelLine { line } => re.is_match(line),
        _ => false,
    });
    if covered {
        r.status = Status::Xfail;
        r.message = format!("known bug: {} ({}): {}", x.reason, x.link, r.message);
        r.known_bug = Some(x.known_bug());
    }
}

/// Why the guest cannot be trusted after this case, if it cannot: what the kernel logged or its
/// taint, what teardown could not undo, what the case changed beyond its filesystem.
pub(super) fn doubt(result: &CaseResult, report: &CaseReport) -> Option<String> {
    let mut why: Vec<String> = result
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p,
                Problem::KernelLine { .. }
                    | Problem::Taint { .. }
                    | Problem::Teardown { .. }
                    | Problem::IncompleteLog { .. }
            )
        })
        .map(|p| p.to_string())
        .collect();
    why.extend(report.residue.iter().cloned());
    (!why.is_empty()).then(|| why.join("; "))
}

/// Kernel messages outside every window (the boot, between cases, after the last), judged by
/// the built-in failure patterns alone (no case's benign list applies): `Some` when they fail
/// the run, a failure pattern or a note that records were lost.
pub(super) fn outside_cases(place: String, lines: Vec<String>) -> Option<OutsideCases> {
    let bad = kernel_log::Classifier::new(&[], &[], &[])
        .map(|c| c.classify(&lines).bad)
        .unwrap_or_default();
    let gap = lines.iter().find(|l| l.starts_with("(daxtest: ")).cloned();
    (!bad.is_empty() || gap.is_some()).then_some(OutsideCases { place, bad, gap, lines })
}

#[cfg(test)]
mod tests;
