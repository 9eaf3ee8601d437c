//! Runs resolved cases in VMs, one boot for many cases, and turns each agent report into a
//! [`CaseResult`]. It only emits [`Event`]s: display and files are the reporters' business.
//!
//! A case that crashes the kernel, hangs or loses the guest ends that VM: the case is reported
//! with what the serial console shows, and the next case boots a fresh VM.

use crate::events::{CaseResult, Event, FailedStep, Status};
use crate::image::Image;
use crate::kernel_log;
use crate::recipe::Timeouts;
use crate::scenario::{Case, Resolved, TimeoutDef, Xfail};
use crate::vm::{Ready, Vm, VmOptions};
use daxtest_proto::case::{CaseReport, CaseSpec, PROGRESS};
use daxtest_proto::AGENT_PATH;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A case and what it became for the kernel under test.
pub struct Planned {
    pub case: Case,
    /// `Err` when the case cannot be resolved for this kernel (no expectation applies).
    pub resolved: Result<Resolved, String>,
}

pub struct Runner<'a> {
    pub image: &'a Image,
    pub root: &'a Path,
    pub vm_options: &'a VmOptions,
    pub run_dir: &'a Path,
    /// The recipe's timeouts.
    pub timeouts: Timeouts,
    /// The command line's, which win over a scenario's.
    pub overrides: TimeoutDef,
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
    ready: Ready,
}

impl Runner<'_> {
    pub fn run(&self, planned: &[Planned], emit: &mut dyn FnMut(&Event)) -> Outcome {
        let started = Instant::now();
        let mut machine: Option<Machine> = None;
        let mut serial_logs = Vec::new();
        let mut boot_failures = Vec::new();
        let mut outcome = Outcome { any_failure: false, infrastructure_failed: false };
        for p in planned {
            emit(&Event::CaseStarted { id: p.case.id.clone() });
            let t = Instant::now();
            let result = match &p.resolved {
                Err(e) => self.result(p, Status::Error, e.clone(), t.elapsed()),
                Ok(Resolved::Skip(reason)) => {
                    self.result(p, Status::Skip, reason.clone(), Duration::ZERO)
                }
                Ok(Resolved::Run { spec, xfail }) => {
                    if p.case.fresh_vm {
                        if let Some(m) = machine.take() {
                            serial_logs.push(self.end_vm(m, serial_logs.len(), true));
                        }
                    }
                    // A kernel that failed two boots in a row would fail them for every case:
                    // booting it again would only multiply the boot timeout.
                    if machine.is_none() && !outcome.infrastructure_failed {
                        let reason = match (serial_logs.is_empty(), p.case.fresh_vm) {
                            (true, _) => "first case",
                            (false, true) => "the case asks for a fresh VM",
                            (false, false) => "the previous VM crashed, hung or was lost",
                        };
                        match self.boot(emit, reason, &mut boot_failures) {
                            Ok(m) => machine = Some(m),
                            Err(_) => outcome.infrastructure_failed = true,
                        }
                    }
                    match machine.as_mut() {
                        None => self.result(
                            p,
                            Status::Error,
                            format!(
                                "no VM: it did not boot, twice (see {}); not booted again for \
                                 the remaining cases",
                                boot_failures
                                    .last()
                                    .map_or(String::new(), |p: &PathBuf| p.display().to_string())
                            ),
                            t.elapsed(),
                        ),
                        Some(m) => {
                            let (result, vm_is_gone) = self.run_case(m, p, spec, xfail.as_ref());
                            if vm_is_gone {
                                let m = machine.take().expect("machine is there");
                                serial_logs.push(self.end_vm(m, serial_logs.len(), false));
                            }
                            result
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
            serial_logs.push(self.end_vm(m, serial_logs.len(), true));
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
        Ok(Machine { vm, ready })
    }

    /// Powers off (or kills) the VM and keeps its serial log in the run directory.
    fn end_vm(&self, m: Machine, index: usize, clean: bool) -> PathBuf {
        let dest = self.run_dir.join(format!("serial-{}.log", index + 1));
        if clean {
            if let Err(e) = m.vm.shutdown_keeping_serial(m.ready, &dest) {
                eprintln!("daxtest: {e:#}");
            }
        } else {
            m.vm.kill_keeping_serial(&dest);
        }
        dest
    }

    /// Runs one case; the flag says whether the VM is gone (crash, hang, lost connection).
    fn run_case(
        &self,
        m: &mut Machine,
        p: &Planned,
        spec: &CaseSpec,
        xfail: Option<&Xfail>,
    ) -> (CaseResult, bool) {
        let t = Instant::now();
        let input = serde_json::to_vec(spec).expect("a case spec serializes");
        let limits = self.limits(&p.case);
        let mut watch = Watch::new(&m.vm.serial_log, limits, spec);
        let answer =
            m.ready
                .guest
                .capture_watched(&format!("{AGENT_PATH} case"), &input, &mut |e| watch.check(e));
        let answer = match answer {
            Ok(out) => out,
            Err(e) => return (self.vm_lost(m, p, &watch, e, t), true),
        };
        let stderr = String::from_utf8_lossy(&answer.stderr);
        let stderr: Vec<&str> = stderr.lines().filter(|l| !l.starts_with(PROGRESS)).collect();
        let result = match (answer.status, serde_json::from_slice::<CaseReport>(&answer.stdout)) {
            (0, Ok(report)) => judge(
                &p.case,
                spec,
                xfail,
                &report,
                self.result(p, Status::Pass, String::new(), t.elapsed()),
            ),
            (0, Err(e)) => self.result(
                p,
                Status::Error,
                format!("the agent's report is not valid: {e}; stderr: {}", stderr.join("\n")),
                t.elapsed(),
            ),
            (status, _) => self.result(
                p,
                Status::Error,
                format!("the agent failed (exit {status}): {}", stderr.join("\n")),
                t.elapsed(),
            ),
        };
        (result, false)
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
        p: &Planned,
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
                r.bad_kernel_lines = kernel_log::Classifier::new(&[], &log.benign, &log.forbidden)
                    .map(|c| c.classify(&dump).bad)
                    .unwrap_or_default();
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
                        r.bad_kernel_lines = report.lines().map(str::to_string).collect();
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
        p: &Planned,
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
            message,
            failed_step: None,
            kernel_log: vec![],
            bad_kernel_lines: vec![],
            seed: match &p.resolved {
                Ok(Resolved::Run { spec, .. }) => spec.seed,
                _ => p.case.seed,
            },
        }
    }
}

fn serial_tail(serial: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

/// Decides a case from the agent's report: the steps against their expectations, then the
/// kernel log and the taint, then a known bug (xfail). `base` carries id, kernel, seed, time.
pub fn judge(
    case: &Case,
    spec: &CaseSpec,
    xfail: Option<&Xfail>,
    report: &CaseReport,
    base: CaseResult,
) -> CaseResult {
    let mut r = base;
    r.kernel_log = report.kernel_log.clone();
    if let Some(e) = &report.setup_error {
        r.status = Status::Error;
        r.message = format!("set-up: {e}");
        return r;
    }
    // The host judges again from the observations: the agent's own stop is only an optimisation.
    let mut failed = None;
    for (i, (step, seen)) in spec.steps.iter().zip(&report.steps).enumerate() {
        if let Err(why) = step.expect.check(&seen.observed) {
            failed = Some(FailedStep {
                number: i + 1,
                line: step.line,
                op: seen.op.clone(),
                expected: step.expect.to_string(),
                observed: seen.observed.to_string(),
            });
            r.message = format!("step {} (line {}, {}): {why}", i + 1, step.line, seen.op);
            break;
        }
    }
    if failed.is_none() && report.steps.len() < spec.steps.len() {
        r.status = Status::Error;
        r.message = format!(
            "the agent ran {} of {} steps and reported no failure",
            report.steps.len(),
            spec.steps.len()
        );
        return r;
    }
    let mut problems: Vec<String> = Vec::new();
    if failed.is_some() {
        problems.push(r.message.clone());
    }
    match kernel_log::Classifier::new(
        &case.kernel_log.expected,
        &case.kernel_log.benign,
        &case.kernel_log.forbidden,
    ) {
        Ok(classifier) => {
            let verdict = classifier.classify(&report.kernel_log);
            if !verdict.bad.is_empty() {
                problems.push(format!("kernel log: {}", verdict.bad.join(" | ")));
                r.bad_kernel_lines = verdict.bad.clone();
            }
            for m in &verdict.missing {
                problems.push(format!("kernel log: nothing matched the expected pattern {m:?}"));
            }
        }
        Err(e) => problems.push(format!("kernel log patterns: {e:#}")),
    }
    if report.tainted_after != report.tainted_before {
        problems.push(format!(
            "the kernel taint changed from {} ({}) to {} ({})",
            report.tainted_before,
            kernel_log::taint_flags(report.tainted_before),
            report.tainted_after,
            kernel_log::taint_flags(report.tainted_after)
        ));
    }
    if let Some(t) = &report.teardown_error {
        problems.push(format!("teardown: {t}"));
    }
    r.failed_step = failed;
    let failing = !problems.is_empty();
    r.message = problems.join("; ");
    r.status = match (failing, xfail) {
        (false, None) => Status::Pass,
        (true, None) => Status::Fail,
        (true, Some(x)) => {
            r.message = format!("known bug: {} ({}): {}", x.reason, x.link, r.message);
            Status::Xfail
        }
        (false, Some(x)) => {
            r.message = format!(
                "passed, but the scenario expects it to fail on this kernel because of a known bug \
                 ({}, {}): if the bug is fixed here, narrow the xfail's kernel condition",
                x.reason, x.link
            );
            Status::Fail
        }
    };
    r
}

#[cfg(test)]
mod tests;
