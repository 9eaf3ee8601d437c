use super::*;
use crate::run::plan::{resolve, Resolution};
use crate::scenario::parse;
use crate::version::KernelVersion;
use daxtest_proto::case::{Observed, StepReport};
use daxtest_proto::Device;
use std::path::Path;
use std::time::Duration;

const SCENARIO: &str = r#"
format = 1
name = "j"
summary = "judge tests"

[[case]]
id = "c"
summary = "two steps"
xfail = [
  { when = { kernel = "6.1" }, reason = "bug X", link = "https://example.org/bug", step = 2, message = "'b' x4096" },
  { when = { kernel = "6.2" }, reason = "bug Y", link = "https://example.org/y", message = "WARNING: .* dax_insert_entry" },
]
kernel_log = { benign = ["WARNING: harmless thing"] }
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "read", file = "f", offset = 0, len = 4096, expect = { content = "a" } },
]
"#;

fn setup(kernel: KernelVersion) -> (Case, CaseSpec, Option<Xfail>) {
    let s = parse(SCENARIO, Path::new("j.toml")).unwrap();
    let case = s.cases[0].clone();
    let Resolution::Run { spec, xfail } = resolve(&case, kernel, Device::Nvdimm, None).unwrap()
    else {
        panic!()
    };
    (case, *spec, xfail)
}

fn report(read: Observed) -> CaseReport {
    CaseReport {
        id: "j/c".into(),
        setup_error: None,
        dax_state_error: None,
        mount_options: "rw,dax=always".into(),
        steps: vec![
            StepReport {
                index: 0,
                line: 13,
                op: "write".into(),
                observed: Observed::Ok,
                millis: 1,
            },
            StepReport { index: 1, line: 14, op: "read".into(), observed: read, millis: 1 },
        ],
        teardown_error: None,
        left_behind: vec![],
        residue: vec![],
        kernel_log_before: vec![],
        kernel_log: vec!["[    5.000000] XFS (pmem0): Mounting V5 Filesystem".into()],
        kernel_log_gap: None,
        phases: vec![],
        tainted_before: 0,
        tainted_after: 0,
        millis: 5,
        awaiting_power_cut: false,
    }
}

fn bytes(data: &[u8]) -> Observed {
    let (runs, truncated) = daxtest_proto::case::runs(0, data);
    let n = data.len() as u64;
    Observed::Bytes { asked: 4096, got: n, runs, truncated, faults: None, pmd_faults: None }
}

fn base() -> CaseResult {
    CaseResult {
        file: "j.toml".into(),
        duration: Duration::from_millis(5),
        ..crate::run::events::fixtures::result("j/c", Status::Pass)
    }
}

const NEW: KernelVersion = KernelVersion(6, 12, 117);
const OLD: KernelVersion = KernelVersion(6, 1, 192);
const Y: KernelVersion = KernelVersion(6, 2, 0);

fn judged(kernel: KernelVersion, r: &CaseReport) -> CaseResult {
    let (case, spec, xfail) = setup(kernel);
    judge(&case, &spec, xfail.as_ref(), r, base())
}

#[test]
fn all_met_and_a_clean_log_pass() {
    let r = judged(NEW, &report(bytes(&[b'a'; 4096])));
    assert_eq!((r.status, r.message.as_str()), (Status::Pass, ""));
    assert_eq!(r.kernel_log.len(), 1);
}

#[test]
fn a_wrong_value_fails_naming_step_line_expectation_and_observation() {
    let mut data = vec![b'a'; 4096];
    data[100] = b'z';
    let r = judged(NEW, &report(bytes(&data)));
    assert_eq!(r.status, Status::Fail);
    assert_eq!(
        r.message,
        "step 2 (line 16, read): expected every byte 'a', got bytes ['a' x100 at 0, 'z' x1 at 100, 'a' x3995 at 101]"
    );
    let step = r.failed_step().unwrap();
    assert_eq!((step.number, step.line, step.op.as_str()), (2, 16, "read"));
}

#[test]
fn an_errno_instead_of_success_fails() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.steps[0].observed = Observed::Errno("ENOSPC".into());
    rep.steps.truncate(1);
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.message, "step 1 (line 15, write): expected success, got error ENOSPC");
}

#[test]
fn a_kernel_warning_fails_a_passing_case_and_is_quoted() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    let line = "[    6.100000] WARNING: CPU: 1 PID: 77 at fs/dax.c:1234 dax_insert_entry+0x1/0x2";
    rep.kernel_log.push(line.into());
    rep.kernel_log.push("[    6.200000] WARNING: harmless thing happened".into());
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.bad_kernel_lines(), [line]);
    assert!(r.message.contains("dax_insert_entry"), "{}", r.message);
}

#[test]
fn a_taint_change_fails() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.tainted_after = 512;
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("the kernel taint changed from 0"), "{}", r.message);
}

#[test]
fn a_set_up_error_is_an_error_not_a_failure() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.setup_error = Some("mkfs.xfs -m reflink=1: cannot open /dev/pmem0".into());
    rep.steps.clear();
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.message, "set-up: mkfs.xfs -m reflink=1: cannot open /dev/pmem0");
}

/// The boot proved the device does DAX: a mount that does not give the mode its options promise
/// is the filesystem's failure (a kernel mutant that ignores FS_XFLAG_DAX was an error before).
#[test]
fn a_mount_without_the_dax_mode_it_promises_is_a_failure() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.dax_state_error = Some("DAX does not work on this dax=inode mount".into());
    rep.steps.clear();
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.message, "DAX state after mount: DAX does not work on this dax=inode mount");
    assert_eq!(serde_json::to_value(&r.problems[0]).unwrap()["kind"], "dax_state");
}

#[test]
fn steps_missing_without_a_failure_is_an_error() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.steps.truncate(1);
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.message, "the agent ran 1 of 2 steps and reported no failure");
}

#[test]
fn a_known_bug_turns_its_symptom_into_xfail_and_a_pass_into_a_failure() {
    let r = judged(OLD, &report(bytes(&[b'b'; 4096])));
    assert_eq!(r.status, Status::Xfail);
    assert!(
        r.message.starts_with("known bug: bug X (https://example.org/bug): step 2"),
        "{}",
        r.message
    );
    // As data too, for KCIDB's issue.
    let bug = r.known_bug.unwrap();
    assert_eq!((bug.reason.as_str(), bug.link.as_str()), ("bug X", "https://example.org/bug"));
    let r = judged(OLD, &report(bytes(&[b'a'; 4096])));
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.known_bug, None);
    assert!(r.message.starts_with("passed, but the scenario expects it to fail"), "{}", r.message);
    assert!(matches!(r.problems[..], [Problem::UnexpectedPass { .. }]), "{:?}", r.problems);
    // The xfail names 6.1 only: on 6.12 a failure is a failure.
    assert_eq!(judged(NEW, &report(bytes(&[b'b'; 4096]))).status, Status::Fail);
}

/// A bug that needs a lost race may not show: a pass is a pass that says so, and the symptom is
/// still an xfail, anything else a failure.
#[test]
fn an_intermittent_known_bug_lets_a_pass_pass() {
    let (case, spec, xfail) = setup(OLD);
    let xfail = xfail.map(|x| Xfail { intermittent: true, ..x });
    let judge_it = |r: &CaseReport| judge(&case, &spec, xfail.as_ref(), r, base());
    let r = judge_it(&report(bytes(&[b'a'; 4096])));
    assert_eq!(r.status, Status::Pass);
    assert_eq!(
        r.message,
        "the known bug did not show this time (it needs a lost race): bug X \
         (https://example.org/bug)"
    );
    assert!(r.problems.is_empty());
    assert_eq!(judge_it(&report(bytes(&[b'b'; 4096]))).status, Status::Xfail);
    assert_eq!(judge_it(&report(bytes(&[b'c'; 4096]))).status, Status::Fail);
}

/// An xfail covers its symptom and nothing else: another observation of the same step, another
/// step, a kernel warning or a taint change in an xfail case is a failure.
#[test]
fn an_xfail_absorbs_only_its_symptom() {
    // Another observation at the symptom's step.
    let r = judged(OLD, &report(bytes(&[b'c'; 4096])));
    assert_eq!(r.status, Status::Fail, "{}", r.message);
    // The symptom, and a kernel warning besides.
    let mut rep = report(bytes(&[b'b'; 4096]));
    rep.kernel_log.push("[    6.1] WARNING: CPU: 0 PID: 1 at fs/xfs/x.c:1 y".into());
    rep.tainted_after = 512;
    let r = judged(OLD, &rep);
    assert_eq!(r.status, Status::Fail, "{}", r.message);
    assert!(r.message.contains("WARNING"), "{}", r.message);
    // Another step fails.
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.steps[0].observed = Observed::Errno("ENOSPC".into());
    rep.steps.truncate(1);
    assert_eq!(judged(OLD, &rep).status, Status::Fail);
    // A kernel-log symptom covers its line and the W taint it brings, not another line.
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.kernel_log
        .push("[    6.1] WARNING: CPU: 0 PID: 1 at fs/dax.c:9 dax_insert_entry+0x1".into());
    rep.tainted_after = 512;
    let r = judged(Y, &rep);
    assert_eq!(r.status, Status::Xfail, "{}", r.message);
    rep.kernel_log.push("[    6.2] XFS (pmem0): Metadata corruption detected at x".into());
    assert_eq!(judged(Y, &rep).status, Status::Fail);
    // A taint beyond W (here O, an out-of-tree module) is not the warning's.
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.kernel_log
        .push("[    6.1] WARNING: CPU: 0 PID: 1 at fs/dax.c:9 dax_insert_entry+0x1".into());
    rep.tainted_after = 512 | 4096;
    assert_eq!(judged(Y, &rep).status, Status::Fail);
}

/// What the agent could not judge is an error, never a pass or an xfail.
#[test]
fn a_daxtest_error_or_a_gap_in_the_log_is_an_error_even_in_an_xfail_case() {
    let mut rep = report(Observed::Error("mapping \"m\" is gone".into()));
    let r = judged(OLD, &rep);
    assert_eq!(r.status, Status::Error, "{}", r.message);
    assert_eq!(r.message, "step 2 (line 16, read): daxtest error: mapping \"m\" is gone");
    rep.steps[1].observed = bytes(&[b'a'; 4096]);
    rep.kernel_log_gap = Some("3 kernel log records lost".into());
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.message, "kernel log incomplete: 3 kernel log records lost");
}

/// A process the case left running fails it, naming the process; teardown trouble too.
#[test]
fn processes_left_behind_and_teardown_trouble_fail_the_case() {
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.left_behind = vec!["sh (pid 212)".into()];
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.starts_with("left 1 process behind: sh (pid 212)"), "{}", r.message);
    let mut rep = report(bytes(&[b'a'; 4096]));
    rep.teardown_error = Some("umount /mnt/test: Device or resource busy (detached)".into());
    let r = judged(NEW, &rep);
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.message, "teardown: umount /mnt/test: Device or resource busy (detached)");
}

/// Short reads: a content check needs every byte asked for.
#[test]
fn a_short_read_fails_a_content_check() {
    let r = judged(NEW, &report(bytes(&[b'a'; 100])));
    assert_eq!(r.status, Status::Fail);
    assert_eq!(
        r.message,
        "step 2 (line 16, read): expected every byte 'a', got bytes ['a' x100 at 0] (asked 4096, \
         got 100)"
    );
}

#[test]
fn kernel_lines_outside_windows_are_judged_by_the_built_in_patterns() {
    let quiet = vec!["[ 1.0] XFS (pmem0): Unmounting Filesystem".to_string()];
    assert_eq!(outside_cases("boot".into(), quiet), None);
    let o = outside_cases(
        "between a and b".into(),
        vec!["[ 1.0] x".into(), "[ 1.1] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 y".into()],
    )
    .unwrap();
    assert_eq!(o.bad, ["[ 1.1] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 y"]);
    let lost = outside_cases("after b".into(), vec!["(daxtest: 3 records lost)".into()]).unwrap();
    assert_eq!(lost.gap.as_deref(), Some("(daxtest: 3 records lost)"));
}

/// A hang is a known bug only when the xfail names it by a kernel-log message that the hang's
/// report and every bad line of its dump match; a step's symptom or a timeout stays a hang.
#[test]
fn a_hang_is_a_known_bug_only_by_its_kernel_report() {
    let hang = |message: &str, lines: &[&str]| {
        let mut r = base();
        r.status = Status::Hang;
        r.message = message.to_string();
        r.problems = vec![Problem::Run { message: message.to_string() }];
        r.problems.extend(lines.iter().map(|l| Problem::KernelLine { line: l.to_string() }));
        r
    };
    let report = "the kernel reported a hang in step 9 (line 77, race_direct_io_remove): [ 31.6] \
                  INFO: task daxtest-agent:121 blocked for more than 10 seconds.";
    let line = "[ 31.6] INFO: task daxtest-agent:121 blocked for more than 10 seconds.";
    let xfail = |re: &str| {
        let (_, _, x) = setup(Y);
        let mut x = x.unwrap();
        x.symptom.what = SymptomKind::Message(re.into());
        x
    };
    let known = xfail("task daxtest-agent:\\d+ blocked for more than");
    let mut r = hang(report, &[line]);
    judge_hang(&mut r, Some(&known));
    assert_eq!(r.status, Status::Xfail, "{}", r.message);
    assert!(r.message.starts_with("known bug: bug Y (https://example.org/y): the kernel"));
    // Another bad line in the dump.
    let mut r = hang(report, &[line, "[ 31.7] BUG: unable to handle page fault"]);
    judge_hang(&mut r, Some(&known));
    assert_eq!(r.status, Status::Hang);
    // The step's own timeout, with no report from the kernel.
    let mut r = hang("step 9 (line 77) did not finish within 60 s", &[]);
    judge_hang(&mut r, Some(&known));
    assert_eq!(r.status, Status::Hang);
    // No xfail, or one for a step's observation.
    let mut r = hang(report, &[line]);
    judge_hang(&mut r, None);
    assert_eq!(r.status, Status::Hang);
    let (_, _, step_symptom) = setup(OLD);
    judge_hang(&mut r, step_symptom.as_ref());
    assert_eq!(r.status, Status::Hang);
}
