//! Runs resolved cases in VMs, one boot for many cases, and turns each agent report into a
//! [`CaseResult`]. It only emits [`Event`]s: display and files are the reporters' business.
//!
//! A case that crashes the kernel, hangs or loses the guest ends that VM: the case is reported
//! with what the serial console shows, and the next case boots a fresh VM.

use crate::machine::image::Image;
use crate::machine::ssh::Conversation;
use crate::machine::vm::{Booted, Vm, VmOptions};
use crate::recipe::Timeouts;
use crate::run::events::{CaseResult, Event, FailedStep, OutsideCases, Problem, Status};
use crate::run::kernel_log;
use crate::run::plan::{PlannedCase, Resolution};
use crate::scenario::{Case, CaseTimeouts, Symptom, SymptomKind, Xfail};
use daxtest_proto::case::{CaseReport, CaseSpec, Observed, PROGRESS};
use daxtest_proto::AGENT_PATH;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Runner<'a> {
    pub image: &'a Image,
    pub root: &'a Path,
    pub vm_options: &'a VmOptions,
    pub run_dir: &'a Path,
    /// The recipe's timeouts.
    pub timeouts: Timeouts,
    /// The command line's, which win over a scenario's.
    pub overrides: CaseTimeouts,
    /// Stop at the first case that fails, crashes, hangs or errs (`--until-fail`).
    pub stop_at_failure: bool,
}

struct Limits {
    step: Duration,
    case: Duration,
}

/// Why the host stopped waiting for a case.
#[derive(Debug)]
enum Stop {
    Hang(String),
    Crash,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Hang(why) => f.write_str(why),
            Stop::Crash => f.write_str("the kernel crashed"),
        }
    }
}
impl std::error::Error for Stop {}

/// Watches a running case: its progress lines (for the step and case deadlines) and the serial
/// console (a panic or a hang detector's report ends the wait at once).
struct Watch<'a> {
    serial_log: PathBuf,
    serial_start: u64,
    serial_checked: Instant,
    limits: Limits,
    spec: &'a CaseSpec,
    started: Instant,
    /// The latest progress line and when it came.
    phase: (String, Instant),
}

impl<'a> Watch<'a> {
    fn new(serial_log: &Path, limits: Limits, spec: &'a CaseSpec) -> Self {
        let now = Instant::now();
        Watch {
            serial_log: serial_log.to_path_buf(),
            serial_start: std::fs::metadata(serial_log).map(|m| m.len()).unwrap_or(0),
            serial_checked: now,
            limits,
            spec,
            started: now,
            phase: ("start".into(), now),
        }
    }

    /// What the case was doing, for messages: `step 3 (line 12, write)`.
    fn step(&self) -> String {
        let phase = &self.phase.0;
        let step = phase.strip_prefix("step ").and_then(|n| n.parse::<usize>().ok());
        match step.and_then(|n| Some((n, self.spec.steps.get(n.checked_sub(1)?)?))) {
            Some((n, s)) => format!("step {n} (line {}, {})", s.line, s.op.name()),
            None => phase.clone(),
        }
    }

    fn serial_since_start(&self) -> String {
        use std::io::{Read, Seek};
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial_log) {
            let _ = f.seek(std::io::SeekFrom::Start(self.serial_start));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn check(&mut self, stderr: &[u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        let text = String::from_utf8_lossy(stderr);
        if let Some(last) = text.lines().rev().find_map(|l| l.strip_prefix(PROGRESS)) {
            if last != self.phase.0 {
                self.phase = (last.to_string(), now);
            }
        }
        if now - self.started > self.limits.case {
            return Err(Stop::Hang(format!(
                "the case did not finish within {} s (the case timeout); it was in {}",
                self.limits.case.as_secs(),
                self.step()
            ))
            .into());
        }
        if self.phase.0.starts_with("step ") && now - self.phase.1 > self.limits.step {
            return Err(Stop::Hang(format!(
                "{} did not return within {} s (the step timeout)",
                self.step(),
                self.limits.step.as_secs()
            ))
            .into());
        }
        // The console is read at most every 200 ms: a panic needs no faster answer.
        if now - self.serial_checked > Duration::from_millis(200) {
            self.serial_checked = now;
            let serial = self.serial_since_start();
            if kernel_log::crash_report(&serial).is_some() {
                return Err(Stop::Crash.into());
            }
            if let Some(line) = kernel_log::hang_report(&serial) {
                return Err(Stop::Hang(format!(
                    "the kernel reported a hang in {}: {}",
                    self.step(),
                    line.trim()
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// How the run went for the exit status.
pub struct Outcome {
    pub any_failure: bool,
    /// A VM could not be booted at all.
    pub infrastructure_failed: bool,
}

struct Machine {
    vm: Vm,
    ready: Booted,
    /// `daxtest-agent serve`, started at the first case: the VM's cases share it.
    agent: Option<Conversation>,
    /// Its place in the run (1-based), for messages.
    number: usize,
    /// The last case it ran, for naming where kernel messages outside windows came from.
    last_case: Option<String>,
}

impl Machine {
    /// Runs one case in the agent (started at the first), as its JSON line; the answer is the
    /// report's line.
    fn ask(
        &mut self,
        case: &[u8],
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<crate::machine::ssh::Output> {
        let agent = match &mut self.agent {
            Some(agent) => agent,
            None => self.agent.insert(self.ready.guest.converse(&format!("{AGENT_PATH} serve"))?),
        };
        self.ready.guest.ask(agent, case, watch)
    }

    /// Where kernel messages logged since the last window closed come from.
    fn place(&self, next: Option<&str>) -> String {
        match (&self.last_case, next) {
            (None, Some(_)) => format!("the boot of VM {}", self.number),
            (None, None) => format!("VM {}, which ran no case", self.number),
            (Some(prev), Some(next)) => format!("between {prev} and {next} (VM {})", self.number),
            (Some(prev), None) => format!("after {prev}, the last case of VM {}", self.number),
        }
    }
}

/// What a case run leaves of its VM.
enum After {
    /// The VM can run the next case.
    Fine,
    /// The VM is gone (crash, hang, lost connection).
    Gone,
    /// The VM still runs but is not trustworthy (a kernel warning, a taint, a teardown that
    /// failed, a changed sysctl): the next case gets a fresh one, for this reason.
    Doubtful(String),
}

/// One run of one case: its result, what became of the VM, and any failure the kernel logged
/// before the case began.
struct CaseRun {
    result: CaseResult,
    after: After,
    before: Option<OutsideCases>,
}

impl Runner<'_> {
    pub fn run(&self, planned: &[PlannedCase], emit: &mut dyn FnMut(&Event)) -> Outcome {
        let started = Instant::now();
        let mut machine: Option<Machine> = None;
        let mut serial_logs = Vec::new();
        let mut boot_failures = Vec::new();
        let mut outcome = Outcome { any_failure: false, infrastructure_failed: false };
        // Why the next boot happens, when the previous VM was ended on purpose.
        let mut reboot_reason: Option<String> = None;
        for p in planned {
            emit(&Event::CaseStarted { id: p.case.id.clone() });
            let t = Instant::now();
            let result = match &p.resolution {
                Err(e) => self.result(p, Status::Error, e.clone(), t.elapsed()),
                Ok(Resolution::Skip(reason)) => {
                    self.result(p, Status::Skip, reason.clone(), Duration::ZERO)
                }
                Ok(Resolution::Run { spec, xfail }) => {
                    if p.case.fresh_vm {
                        if let Some(m) = machine.take() {
                            let log = self.end_vm(m, serial_logs.len(), true, emit, &mut outcome);
                            serial_logs.push(log);
                            reboot_reason = Some("the case asks for a fresh VM".into());
                        }
                    }
                    // A case whose VM logged a failure before it began ran on a kernel that
                    // was no longer trustworthy: it runs once more, on a fresh VM.
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        // A kernel that failed two boots in a row would fail them for every
                        // case: booting it again would only multiply the boot timeout.
                        if machine.is_none() && !outcome.infrastructure_failed {
                            let reason = match (serial_logs.is_empty(), reboot_reason.take()) {
                                (true, _) => "first case".to_string(),
                                (false, Some(why)) => why,
                                (false, None) => {
                                    "the previous VM crashed, hung or was lost".to_string()
                                }
                            };
                            let number = serial_logs.len() + 1;
                            match self.boot(emit, &reason, number, &mut boot_failures) {
                                Ok(m) => machine = Some(m),
                                Err(_) => outcome.infrastructure_failed = true,
                            }
                        }
                        let Some(m) = machine.as_mut() else {
                            break self.result(
                                p,
                                Status::Error,
                                format!(
                                    "no VM: it did not boot, twice (see {}); not booted again \
                                     for the remaining cases",
                                    boot_failures.last().map_or(String::new(), |p: &PathBuf| p
                                        .display()
                                        .to_string())
                                ),
                                t.elapsed(),
                            );
                        };
                        let run = self.run_case(m, p, spec, xfail.as_ref());
                        m.last_case = Some(p.case.id.clone());
                        let retry = run.before.is_some() && attempts == 1;
                        if let Some(outside) = run.before {
                            outcome.any_failure = true;
                            emit(&Event::KernelLogOutsideCases(outside));
                        }
                        let after = match run.after {
                            After::Fine if retry => After::Doubtful(format!(
                                "the kernel logged a failure before {} began; the case runs \
                                 again",
                                p.case.id
                            )),
                            other => other,
                        };
                        match after {
                            After::Fine => {}
                            After::Gone => {
                                let m = machine.take().expect("machine is there");
                                serial_logs.push(self.end_vm(
                                    m,
                                    serial_logs.len(),
                                    false,
                                    emit,
                                    &mut outcome,
                                ));
                            }
                            After::Doubtful(why) => {
                                let m = machine.take().expect("machine is there");
                                serial_logs.push(self.end_vm(
                                    m,
                                    serial_logs.len(),
                                    true,
                                    emit,
                                    &mut outcome,
                                ));
                                reboot_reason = Some(why);
                            }
                        }
                        if !retry {
                            break run.result;
                        }
                    }
                }
            };
            let failed = result.status.is_failure();
            outcome.any_failure |= failed;
            emit(&Event::CaseFinished(result));
            if failed && self.stop_at_failure {
                break;
            }
        }
        if let Some(m) = machine.take() {
            serial_logs.push(self.end_vm(m, serial_logs.len(), true, emit, &mut outcome));
        }
        emit(&Event::RunFinished { elapsed: started.elapsed(), serial_logs, boot_failures });
        outcome
    }

    /// Boots a VM, once more if the first attempt fails: a boot that fails once is reported
    /// (event, log file, summary) but does not cost a case its result; two in a row do.
    fn boot(
        &self,
        emit: &mut dyn FnMut(&Event),
        reason: &str,
        number: usize,
        failures: &mut Vec<PathBuf>,
    ) -> anyhow::Result<Machine> {
        let mut failed = |e: &anyhow::Error, retrying: bool| {
            let log = self.run_dir.join(format!("boot-failure-{}.log", failures.len() + 1));
            if let Err(w) = std::fs::write(&log, format!("{e:#}\n")) {
                eprintln!("daxtest: writing {}: {w}", log.display());
            }
            failures.push(log.clone());
            emit(&Event::BootFailed { message: format!("{e:#}"), log, retrying });
        };
        let (vm, ready) = Vm::start_or_retry(self.image, self.root, self.vm_options, &mut failed)?;
        emit(&Event::VmBooted {
            boot_time: ready.boot_time,
            reason: reason.into(),
            command_line: vm.command_line.clone(),
        });
        Ok(Machine { vm, ready, agent: None, number, last_case: None })
    }

    /// Powers off (or kills) the VM and keeps its serial log in the run directory. Before a
    /// clean power-off, the kernel messages no case window took are judged: a failure pattern
    /// or a gap there fails the run.
    fn end_vm(
        &self,
        mut m: Machine,
        index: usize,
        clean: bool,
        emit: &mut dyn FnMut(&Event),
        outcome: &mut Outcome,
    ) -> PathBuf {
        let dest = self.run_dir.join(format!("serial-{}.log", index + 1));
        if clean {
            if let Some(agent) = m.agent.take() {
                if let Err(e) = m.ready.guest.hang_up(agent) {
                    eprintln!("daxtest: ending the agent: {e:#}");
                }
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            match m.ready.guest.capture_until(&format!("{AGENT_PATH} kmsg-rest"), deadline) {
                Ok(out) if out.status == 0 => {
                    let lines: Vec<String> =
                        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
                    if let Some(outside) = outside_cases(m.place(None), lines) {
                        outcome.any_failure = true;
                        emit(&Event::KernelLogOutsideCases(outside));
                    }
                }
                Ok(out) => eprintln!(
                    "daxtest: reading the rest of the kernel log: exit {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("daxtest: reading the rest of the kernel log: {e:#}"),
            }
            if let Err(e) = m.vm.shutdown_keeping_serial(m.ready, &dest) {
                eprintln!("daxtest: {e:#}");
            }
        } else {
            m.vm.kill_keeping_serial(&dest);
        }
        dest
    }

    /// Runs one case on `m`.
    fn run_case(
        &self,
        m: &mut Machine,
        p: &PlannedCase,
        spec: &CaseSpec,
        xfail: Option<&Xfail>,
    ) -> CaseRun {
        let t = Instant::now();
        let input = serde_json::to_vec(spec).expect("a case spec serializes");
        let limits = self.limits(&p.case);
        let mut watch = Watch::new(&m.vm.serial_log, limits, spec);
        let answer = m.ask(&input, &mut |e| watch.check(e));
        let answer = match answer {
            Ok(out) => out,
            Err(e) => {
                let result = self.vm_lost(m, p, &watch, e, t);
                return CaseRun { result, after: After::Gone, before: None };
            }
        };
        let report = match serde_json::from_slice::<CaseReport>(&answer.stdout) {
            Ok(report) => report,
            Err(e) => {
                let stderr = String::from_utf8_lossy(&answer.stderr);
                let stderr: Vec<&str> =
                    stderr.lines().filter(|l| !l.starts_with(PROGRESS)).collect();
                let result = self.result(
                    p,
                    Status::Error,
                    format!("the agent's report is not valid: {e}; stderr: {}", stderr.join("\n")),
                    t.elapsed(),
                );
                let after = After::Doubtful("the agent's report was not valid".into());
                return CaseRun { result, after, before: None };
            }
        };
        let before = outside_cases(m.place(Some(&p.case.id)), report.kernel_log_before.clone());
        let result = judge(
            &p.case,
            spec,
            xfail,
            &report,
            self.result(p, Status::Pass, String::new(), t.elapsed()),
        );
        let after = match doubt(&result, &report) {
            Some(why) => After::Doubtful(format!("{} left the guest in doubt: {why}", p.case.id)),
            None => After::Fine,
        };
        CaseRun { result, after, before }
    }

    /// The case's limits: the command line's, else the scenario's, else the recipe's.
    fn limits(&self, case: &Case) -> Limits {
        let pick = |cli: Option<u64>, scenario: Option<u64>, recipe: u64| {
            Duration::from_secs(cli.or(scenario).unwrap_or(recipe))
        };
        Limits {
            step: pick(self.overrides.step_s, case.timeout.step_s, self.timeouts.step_s),
            case: pick(self.overrides.case_s, case.timeout.case_s, self.timeouts.case_s),
        }
    }

    /// The case did not come back: a hang (a timeout or the kernel's own detector), a crash
    /// seen on the console, or a lost guest. The VM is not used again.
    fn vm_lost(
        &self,
        m: &mut Machine,
        p: &PlannedCase,
        watch: &Watch,
        e: anyhow::Error,
        t: Instant,
    ) -> CaseResult {
        match e.downcast::<Stop>() {
            Ok(Stop::Hang(why)) => {
                let (dump, how) = self.hang_dump(m, watch);
                let mut r = self.result(p, Status::Hang, why, t.elapsed());
                // The case's benign and forbidden patterns apply to its dump as to its log.
                let log = &p.case.kernel_log;
                let bad = kernel_log::Classifier::new(&[], &log.benign, &log.forbidden)
                    .map(|c| c.classify(&dump).bad)
                    .unwrap_or_default();
                r.problems.extend(bad.into_iter().map(|line| Problem::KernelLine { line }));
                r.kernel_log = dump;
                r.kernel_log.push(format!("--- {how}; last serial lines ---"));
                r.kernel_log.extend(serial_tail(&watch.serial_since_start(), 40));
                r
            }
            stop => {
                // What the connection said, when it was not the watcher that stopped the case.
                let connection = match stop {
                    Err(e) => format!(" ({e:#})"),
                    _ => String::new(),
                };
                m.vm.let_a_panic_finish();
                let serial = watch.serial_since_start();
                let mut r = match kernel_log::crash_report(&serial) {
                    Some(report) => {
                        let first = report.lines().next().unwrap_or_default().to_string();
                        let mut r = self.result(
                            p,
                            Status::Crash,
                            format!("kernel crash: {first}"),
                            t.elapsed(),
                        );
                        r.problems.extend(
                            report.lines().map(|l| Problem::KernelLine { line: l.to_string() }),
                        );
                        r
                    }
                    None => self.result(
                        p,
                        Status::Error,
                        format!(
                            "lost the guest: {}{connection}; QEMU: {}",
                            watch.step(),
                            m.vm.status_line()
                        ),
                        t.elapsed(),
                    ),
                };
                r.kernel_log = serial_tail(&serial, 80);
                r
            }
        }
    }

    /// What a kernel developer needs from a hung guest: blocked tasks (sysrq w) and every CPU's
    /// back-trace (sysrq l). Over SSH when the guest still answers (the whole kernel log of the
    /// case), else through the monitor's keyboard (what reaches the console).
    fn hang_dump(&self, m: &mut Machine, watch: &Watch) -> (Vec<String>, &'static str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        match m.ready.guest.capture_until(&format!("{AGENT_PATH} dump"), deadline) {
            Ok(out) if out.status == 0 => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (text.lines().map(str::to_string).collect(), "sysrq w and l over SSH")
            }
            _ => {
                let before = watch.serial_since_start().lines().count();
                // 8: every message level to the console, so the traces reach the serial log.
                for key in ['8', 'w', 'l'] {
                    if let Err(e) = m.vm.sysrq_key(key) {
                        return (vec![format!("(no dump: SSH and the monitor failed: {e:#})")], "");
                    }
                }
                std::thread::sleep(Duration::from_secs(3));
                let serial = watch.serial_since_start();
                (
                    serial.lines().skip(before).map(str::to_string).collect(),
                    "sysrq w and l by keyboard",
                )
            }
        }
    }

    fn result(
        &self,
        p: &PlannedCase,
        status: Status,
        message: String,
        duration: Duration,
    ) -> CaseResult {
        CaseResult {
            id: p.case.id.clone(),
            file: p.case.file.clone(),
            kernel: self.image.kernel.release.clone(),
            status,
            duration,
            problems: match status.is_failure() {
                true => vec![Problem::Run { message: message.clone() }],
                false => vec![],
            },
            message,
            kernel_log: vec![],
            phases: vec![],
            seed: match &p.resolution {
                Ok(Resolution::Run { spec, .. }) => spec.seed,
                _ => p.case.seed,
            },
        }
    }
}

/// Why the guest cannot be trusted after this case, if it cannot: what the kernel logged or its
/// taint, what teardown could not undo, what the case changed beyond its filesystem.
fn doubt(result: &CaseResult, report: &CaseReport) -> Option<String> {
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
fn outside_cases(place: String, lines: Vec<String>) -> Option<OutsideCases> {
    let bad = kernel_log::Classifier::new(&[], &[], &[])
        .map(|c| c.classify(&lines).bad)
        .unwrap_or_default();
    let gap = lines.iter().find(|l| l.starts_with("(daxtest: ")).cloned();
    (!bad.is_empty() || gap.is_some()).then_some(OutsideCases { place, bad, gap, lines })
}

fn serial_tail(serial: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

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
    let problems = problems(case, spec, report);
    let (status, problems) = verdict(problems, xfail);
    r.status = status;
    r.message = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
    if let (Status::Xfail, Some(x)) = (status, xfail) {
        r.message = format!("known bug: {} ({}): {}", x.reason, x.link, r.message);
    }
    r.problems = problems;
    r
}

/// Everything wrong with a case, in the order a developer reads it.
fn problems(case: &Case, spec: &CaseSpec, report: &CaseReport) -> Vec<Problem> {
    let mut problems = Vec::new();
    match &report.setup_error {
        Some(e) => problems.push(Problem::Setup { message: e.clone() }),
        None => {
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
            if report.setup_error.is_none() {
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
                    (SymptomKind::Signal(e), Observed::Signal(o)) => e == o,
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

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
