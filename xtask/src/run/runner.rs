//! Runs resolved cases in VMs, one boot for many cases, and turns each agent report into a
//! [`CaseResult`]. It only emits [`Event`]s: display and files are the reporters' business.
//!
//! A case that crashes the kernel, hangs or loses the guest ends that VM: the case is reported
//! with what the serial console shows, and the next case boots a fresh VM. A case that cuts the
//! power kills its VM on purpose and goes on in one booted on the same backing files.

use crate::machine::image::Image;
use crate::machine::mkfs_image::MkfsImage;
use crate::machine::snapshot::BootSnapshot;
use crate::machine::ssh::Conversation;
use crate::machine::vm::{Booted, Vm, VmOptions};
use crate::recipe::Timeouts;
use crate::run::events::{CaseResult, Event, KernelInfo, OutsideCases, Problem, Status};
use crate::run::kernel_log;
use crate::run::plan::{PlannedCase, Resolution};
use crate::run::verdict::{doubt, judge, judge_hang, outside_cases};
use crate::run::watch::{Limits, Stop, Watch};
use crate::scenario::{Case, CaseTimeouts, Xfail};
use anyhow::Context;
use daxtest_proto::case::{
    CasePhase, CaseReport, CaseSpec, Extent, Fs, Observed, Op, RecordCheck, PROGRESS, RECORD_MARK,
};
use daxtest_proto::AGENT_PATH;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Runner<'a> {
    pub image: &'a Image,
    pub root: &'a Path,
    pub vm_options: &'a VmOptions,
    /// The kernel's run directory: boot failures and serial logs go there.
    pub run_dir: &'a Path,
    /// The recipe's timeouts.
    pub timeouts: Timeouts,
    /// The command line's, which win over a scenario's.
    pub overrides: CaseTimeouts,
    /// Stop at the first case that fails, crashes, hangs or errs (`--until-fail`).
    pub stop_at_failure: bool,
    /// VMs that run cases at the same time (`--jobs`), each taking the next case when free.
    pub jobs: usize,
    /// VMs after the first may be restored from a boot snapshot (off: `--no-boot-snapshot`).
    pub boot_snapshot: bool,
    /// A case's filesystem may be written from the host, a copy of the same mkfs's
    /// (machine::mkfs_image; off: `--mkfs-in-guest`).
    pub mkfs_images: bool,
}

/// How the run went for the exit status.
pub struct Outcome {
    pub any_failure: bool,
    /// A VM could not be booted at all.
    pub infrastructure_failed: bool,
}

/// A booted VM as the runner uses it: the QEMU process, what its boot gave, its agent.
struct Guest {
    vm: Vm,
    ready: Booted,
    /// `daxtest-agent serve`, started at the first case: the VM's cases share it.
    agent: Option<Conversation>,
    /// Its place in the run (1-based), for messages.
    number: usize,
    /// The last case it ran, for naming where kernel messages outside windows came from.
    last_case: Option<String>,
    /// Its boot's kernel lines, taken out of the guest's log before the boot snapshot (a VM
    /// restored from it starts after them): its first case judges them as lines before its
    /// window, as it would have found them there.
    boot_log: Vec<String>,
}

impl Guest {
    /// Runs one case in the agent (started at the first), as its JSON line; the answer is the
    /// report's line.
    fn ask(
        &mut self,
        case: &[u8],
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<crate::machine::ssh::Output> {
        let agent = match &mut self.agent {
            Some(agent) => agent,
            None => {
                let serve = self.ready.agent_command("serve");
                self.agent.insert(self.ready.connection.converse(&serve)?)
            }
        };
        self.ready.connection.ask(agent, case, watch)
    }

    /// Where kernel messages logged since the last window closed come from.
    fn place(&self, next: Option<&str>) -> String {
        match (&self.last_case, next) {
            (None, Some(_)) => match &self.ready.restored_from {
                Some(source) => format!("VM {}, restored from {source}", self.number),
                None => format!("the boot of VM {}", self.number),
            },
            (None, None) => format!("VM {}, which ran no case", self.number),
            (Some(prev), Some(next)) => format!("between {prev} and {next} (VM {})", self.number),
            (Some(prev), None) => format!("after {prev}, the last case of VM {}", self.number),
        }
    }
}

/// What the VMs running at the same time share: the cases not yet taken, and one numbering of
/// the kernel's VMs and boot failures (their files in the run directory).
struct Lanes<'p> {
    planned: &'p [PlannedCase],
    next_case: AtomicUsize,
    vms: AtomicUsize,
    boot_failures: AtomicUsize,
    /// A case failed under `--until-fail`: no lane takes another.
    stopped: AtomicBool,
    /// Lanes whose VM still boots: a lane that cannot boot leaves its cases to those.
    booting: AtomicUsize,
    snapshot: Mutex<Snapshot>,
    /// What each mkfs (filesystem and options) wrote on a zeroed device; None when it could not
    /// be taken (the cases run that mkfs themselves).
    mkfs_images: Mutex<HashMap<MkfsKey, Option<Arc<MkfsImage>>>>,
}

/// A mkfs as a case asks for it: the filesystem and the extra arguments.
type MkfsKey = (Fs, Vec<String>);

/// The kernel's boot snapshot (machine::snapshot), wanted when cases need VMs after the first
/// (power cuts, fresh VMs): the first VM booted takes it before its first case, and every VM
/// after it is restored from it. None is taken, or used again, once taking or restoring failed.
enum Snapshot {
    Unwanted,
    Wanted,
    Taking,
    Ready(Arc<BootSnapshot>),
}

impl Lanes<'_> {
    fn take(&self) -> Option<&PlannedCase> {
        if self.stopped.load(Ordering::SeqCst) {
            return None;
        }
        self.planned.get(self.next_case.fetch_add(1, Ordering::SeqCst))
    }

    fn next_vm(&self) -> usize {
        self.vms.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn snapshot(&self) -> Option<Arc<BootSnapshot>> {
        match &*self.snapshot.lock().expect("snapshot state poisoned") {
            Snapshot::Ready(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Whether the caller should take the snapshot (no one else is).
    fn claim_snapshot(&self) -> bool {
        let mut slot = self.snapshot.lock().expect("snapshot state poisoned");
        let wanted = matches!(*slot, Snapshot::Wanted);
        if wanted {
            *slot = Snapshot::Taking;
        }
        wanted
    }

    /// `restore` from the snapshot, when there is one; a failure is reported like a failed boot
    /// (one that is tried again: the caller boots) and no snapshot is used after it.
    fn restore<T>(
        &self,
        failed: &mut dyn FnMut(&anyhow::Error, bool),
        restore: impl FnOnce(&BootSnapshot) -> anyhow::Result<T>,
    ) -> Option<T> {
        let snapshot = self.snapshot()?;
        match restore(&snapshot) {
            Ok(up) => Some(up),
            Err(e) => {
                self.set_snapshot(None);
                failed(&e.context("restoring the boot snapshot (every VM boots from now)"), true);
                None
            }
        }
    }

    fn set_snapshot(&self, snapshot: Option<BootSnapshot>) {
        *self.snapshot.lock().expect("snapshot state poisoned") =
            snapshot.map_or(Snapshot::Unwanted, |s| Snapshot::Ready(Arc::new(s)));
    }
}

/// One lane's VMs: the one cases run on now, if any, and what every VM of the lane left, by
/// number.
struct Guests<'l> {
    lanes: &'l Lanes<'l>,
    up: Option<Guest>,
    serial_logs: Vec<(usize, PathBuf)>,
    boot_failures: Vec<(usize, PathBuf)>,
    /// Why the next boot happens, when the last VM was ended on purpose.
    next_reason: Option<String>,
    /// Two boots in a row failed: no more are tried.
    unbootable: bool,
    /// Kernel lines outside every case window failed the run.
    outside_failed: bool,
    any_failure: bool,
}

impl<'l> Guests<'l> {
    fn new(lanes: &'l Lanes<'l>) -> Self {
        Guests {
            lanes,
            up: None,
            serial_logs: vec![],
            boot_failures: vec![],
            next_reason: None,
            unbootable: false,
            outside_failed: false,
            any_failure: false,
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
    /// Runs the cases planned for the image's kernel, from [`Event::KernelStarted`] to
    /// [`Event::KernelFinished`].
    pub fn run(
        &self,
        kernel: KernelInfo,
        planned: &[PlannedCase],
        emit: &mut dyn FnMut(&Event),
    ) -> Outcome {
        let started = Instant::now();
        emit(&Event::KernelStarted(kernel));
        let lanes = Lanes {
            planned,
            next_case: AtomicUsize::new(0),
            vms: AtomicUsize::new(0),
            boot_failures: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            booting: AtomicUsize::new(0),
            snapshot: Mutex::new(match self.boot_snapshot && self.snapshot_wanted(planned) {
                true => Snapshot::Wanted,
                false => Snapshot::Unwanted,
            }),
            mkfs_images: Mutex::default(),
        };
        let jobs = self.jobs.clamp(1, planned.len().max(1));
        lanes.booting.store(jobs, Ordering::SeqCst);
        let ends: Vec<Guests> = if jobs == 1 {
            vec![self.lane(&lanes, emit)]
        } else {
            // The lanes' events reach the reporters from this thread, one at a time.
            let (tx, rx) = std::sync::mpsc::channel::<Event>();
            std::thread::scope(|s| {
                let lanes = &lanes;
                let handles: Vec<_> = (0..jobs)
                    .map(|_| {
                        let tx = tx.clone();
                        s.spawn(move || {
                            self.lane(lanes, &mut |e: &Event| {
                                let _ = tx.send(e.clone());
                            })
                        })
                    })
                    .collect();
                drop(tx);
                for e in rx {
                    emit(&e);
                }
                handles.into_iter().map(|h| h.join().expect("a lane panicked")).collect()
            })
        };
        let mut serial_logs = Vec::new();
        let mut boot_failures = Vec::new();
        let (mut any_failure, mut outside_failed, mut unbootable) = (false, false, false);
        for g in ends {
            serial_logs.extend(g.serial_logs);
            boot_failures.extend(g.boot_failures);
            any_failure |= g.any_failure;
            outside_failed |= g.outside_failed;
            unbootable |= g.unbootable;
        }
        serial_logs.sort();
        boot_failures.sort();
        emit(&Event::KernelFinished {
            elapsed: started.elapsed(),
            serial_logs: serial_logs.into_iter().map(|(_, p)| p).collect(),
            boot_failures: boot_failures.into_iter().map(|(_, p)| p).collect(),
        });
        Outcome { any_failure: any_failure || outside_failed, infrastructure_failed: unbootable }
    }

    /// Runs cases on one VM at a time, taking the next case of the run when free, until none is
    /// left (or a case failed under `--until-fail`).
    fn lane<'l>(&self, lanes: &'l Lanes<'l>, emit: &mut dyn FnMut(&Event)) -> Guests<'l> {
        let mut guests = Guests::new(lanes);
        while let Some(p) = lanes.take() {
            let could_boot = !guests.unbootable;
            emit(&Event::CaseStarted { id: p.case.id.clone() });
            let t = Instant::now();
            let result = match &p.resolution {
                Err(e) => self.result(p, Status::Error, e.clone(), t.elapsed()),
                Ok(Resolution::Skip(reason)) => {
                    self.result(p, Status::Skip, reason.clone(), Duration::ZERO)
                }
                Ok(Resolution::Run { spec, xfail }) => {
                    if p.case.fresh_vm && guests.up.is_some() {
                        let why = "the case asks for a fresh VM".to_string();
                        self.retire(&mut guests, true, Some(why), emit);
                    }
                    let result = self.run_trusted(&mut guests, p, spec, xfail.as_ref(), t, emit);
                    // A VM of its own: what the case did to the kernel (a poisoned page stays
                    // poisoned for the boot) never meets another case.
                    if p.case.fresh_vm && guests.up.is_some() {
                        let why = format!("{} ran on a VM of its own", p.case.id);
                        self.retire(&mut guests, true, Some(why), emit);
                    }
                    result
                }
            };
            let failed = result.status.is_failure();
            guests.any_failure |= failed;
            emit(&Event::CaseFinished(result));
            if failed && self.stop_at_failure {
                lanes.stopped.store(true, Ordering::SeqCst);
                break;
            }
            // This lane's VM stopped booting: the cases left go to lanes whose VM boots, and
            // only the last lane reports them as having no VM.
            if could_boot && guests.unbootable && lanes.booting.fetch_sub(1, Ordering::SeqCst) > 1 {
                break;
            }
        }
        if guests.up.is_some() {
            self.retire(&mut guests, true, None, emit);
        }
        guests
    }

    /// Runs a case on the guest that is up (booting one if none is). A case whose kernel logged
    /// a failure before it began ran on a kernel that was no longer trustworthy: it runs once
    /// more, on a fresh VM.
    fn run_trusted(
        &self,
        guests: &mut Guests,
        p: &PlannedCase,
        spec: &CaseSpec,
        xfail: Option<&Xfail>,
        t: Instant,
        emit: &mut dyn FnMut(&Event),
    ) -> CaseResult {
        let mut first_attempt = true;
        loop {
            let Some(guest) = self.guest(guests, emit) else {
                let log = guests
                    .boot_failures
                    .last()
                    .map_or(String::new(), |(_, p)| p.display().to_string());
                let why = format!(
                    "no VM: it did not boot, twice (see {log}); not booted again for the \
                     remaining cases"
                );
                return self.result(p, Status::Error, why, t.elapsed());
            };
            let started_on = guest.number;
            let mut run = self.run_case(guests, p, spec, xfail, emit);
            // The VM that is up now, unless the case ended it (or no VM came after a cut).
            run.result.vm = Some(guests.up.as_ref().map_or(started_on, |g| g.number));
            if let Some(guest) = guests.up.as_mut() {
                guest.last_case = Some(p.case.id.clone());
            }
            let again = run.before.is_some() && first_attempt;
            if let Some(outside) = run.before {
                guests.outside_failed = true;
                emit(&Event::KernelLogOutsideCases(outside));
            }
            match run.after {
                After::Gone => self.retire(guests, false, None, emit),
                After::Doubtful(why) => self.retire(guests, true, Some(why), emit),
                After::Fine if again => {
                    let why = format!(
                        "the kernel logged a failure before {} began; the case runs again",
                        p.case.id
                    );
                    self.retire(guests, true, Some(why), emit)
                }
                After::Fine => {}
            }
            if !again {
                return run.result;
            }
            first_attempt = false;
        }
    }

    /// The guest that is up, booting one when none is, unless two boots in a row failed: a
    /// kernel that does not boot would fail every boot, and trying again would only multiply
    /// the boot timeout.
    fn guest<'g>(
        &self,
        guests: &'g mut Guests,
        emit: &mut dyn FnMut(&Event),
    ) -> Option<&'g mut Guest> {
        if guests.up.is_none() && !guests.unbootable {
            let reason = match (guests.serial_logs.is_empty(), guests.next_reason.take()) {
                (true, _) => "first case".to_string(),
                (false, Some(why)) => why,
                (false, None) => "the previous VM crashed, hung or was lost".to_string(),
            };
            match self.boot(emit, &reason, guests.lanes, &mut guests.boot_failures) {
                Ok(g) => guests.up = Some(g),
                Err(_) => guests.unbootable = true,
            }
        }
        guests.up.as_mut()
    }

    /// Ends the guest that is up: cleanly (the kernel log's end read and judged first) or
    /// killed; `why` is the reason the next one boots.
    fn retire(
        &self,
        guests: &mut Guests,
        clean: bool,
        why: Option<String>,
        emit: &mut dyn FnMut(&Event),
    ) {
        if let Some(g) = guests.up.take() {
            let number = g.number;
            let log = self.end_vm(g, clean, emit, &mut guests.outside_failed);
            guests.serial_logs.push((number, log));
        }
        guests.next_reason = why;
    }

    /// Boots a VM, once more if the first attempt fails: a boot that fails once is reported
    /// (event, log file, summary) but does not cost a case its result; two in a row do.
    fn boot(
        &self,
        emit: &mut dyn FnMut(&Event),
        reason: &str,
        lanes: &Lanes,
        failures: &mut Vec<(usize, PathBuf)>,
    ) -> anyhow::Result<Guest> {
        let mut failed = |e: &anyhow::Error, retrying: bool| {
            self.boot_failed(lanes, failures, emit, e, retrying)
        };
        let restored =
            lanes.restore(&mut failed, |s| Vm::restore(self.image, self.root, self.vm_options, s));
        if let Some((vm, ready)) = restored {
            return Ok(self.booted(vm, ready, reason, lanes, emit));
        }
        let (vm, ready) = Vm::start_or_retry(self.image, self.root, self.vm_options, &mut failed)?;
        let mut guest = self.booted(vm, ready, reason, lanes, emit);
        if lanes.claim_snapshot() {
            let source = format!("the snapshot of VM {}'s boot", guest.number);
            match guest.vm.take_snapshot(self.root, &guest.ready, source, &mut guest.boot_log) {
                Ok(s) => lanes.set_snapshot(Some(s)),
                Err(e) => {
                    eprintln!("daxtest: no boot snapshot, every VM boots: {e:#}");
                    lanes.set_snapshot(None);
                }
            }
        }
        Ok(guest)
    }

    /// A VM that is up: numbered (once it runs: a boot that failed has no serial log or command
    /// line to match) and announced.
    fn booted(
        &self,
        vm: Vm,
        ready: Booted,
        reason: &str,
        lanes: &Lanes,
        emit: &mut dyn FnMut(&Event),
    ) -> Guest {
        let number = lanes.next_vm();
        let reason = match &ready.restored_from {
            Some(source) => format!("{reason}; restored from {source}"),
            None => reason.to_string(),
        };
        emit(&Event::VmBooted {
            vm: number,
            boot_time: ready.boot_time,
            reason,
            command_line: vm.command_line.clone(),
        });
        Guest { vm, ready, agent: None, number, last_case: None, boot_log: Vec::new() }
    }

    /// Whether to take a boot snapshot: cases will need a VM other than the lanes' first (a
    /// power cut, or a case that asks for a fresh VM; a crash or hang needs one too, but cannot
    /// be foreseen), and the device is an NVDIMM. Restored virtio-pmem guests hung at their
    /// first flush (mkfs blocked in the kernel, QEMU 7.2 and 10.0), and memmap's pmem is guest RAM.
    fn snapshot_wanted(&self, planned: &[PlannedCase]) -> bool {
        self.vm_options.device.is_nvdimm()
            && planned.iter().any(|p| match &p.resolution {
                Ok(Resolution::Run { spec, .. }) => {
                    p.case.fresh_vm || spec.steps.iter().any(|s| s.op == Op::PowerCut)
                }
                _ => false,
            })
    }

    /// Powers off (or kills) the VM and keeps its serial log in the run directory. Before a
    /// clean power-off, the kernel messages no case window took are judged: a failure pattern
    /// or a gap there fails the run.
    fn end_vm(
        &self,
        mut m: Guest,
        clean: bool,
        emit: &mut dyn FnMut(&Event),
        outside_failed: &mut bool,
    ) -> PathBuf {
        let dest = self.run_dir.join(format!("serial-{}.log", m.number));
        if clean {
            if let Some(agent) = m.agent.take() {
                if let Err(e) = m.ready.connection.hang_up(agent) {
                    eprintln!("daxtest: ending the agent: {e:#}");
                }
            }
            match m.ready.kernel_log_rest() {
                Ok(mut lines) => {
                    // A VM that ran no case still has its boot's.
                    lines.splice(0..0, std::mem::take(&mut m.boot_log));
                    if let Some(outside) = outside_cases(m.place(None), lines) {
                        *outside_failed = true;
                        emit(&Event::KernelLogOutsideCases(outside));
                    }
                }
                Err(e) => eprintln!("daxtest: {e:#}"),
            }
            if let Err(e) = m.vm.shutdown_keeping_serial(m.ready, &dest) {
                eprintln!("daxtest: {e:#}");
            }
        } else {
            m.vm.kill_keeping_serial(&dest);
        }
        dest
    }

    /// Runs one case on the guest that is up. A case that cuts the power runs part by part
    /// (`plan::power_cut_parts`): when a part's steps all met their expectations, its VM is
    /// killed and the next part runs in a VM booted on the same backing files; the parts'
    /// reports are judged as one.
    fn run_case(
        &self,
        guests: &mut Guests,
        p: &PlannedCase,
        spec: &CaseSpec,
        xfail: Option<&Xfail>,
        emit: &mut dyn FnMut(&Event),
    ) -> CaseRun {
        let t = Instant::now();
        let mut parts = crate::run::plan::power_cut_parts(spec);
        let mut merged: Option<CaseReport> = None;
        let mut before = None;
        let mut offset = 0;
        let mut records = None;
        for part in parts.iter_mut() {
            // Extent maps saved before the cut, for comparisons after it; the records a
            // store_loop completed before it.
            if let Some(earlier) = &merged {
                part.saved = saved_extents(spec, earlier);
            }
            part.records = records.take();
            let m = guests.up.as_mut().expect("run_case runs on a guest that is up");
            // The VM may have run other cases: records count from where this part began.
            let console_from = std::fs::metadata(&m.vm.serial_log).map_or(0, |f| f.len() as usize);
            // After a cut the device holds what the cut left.
            let format = match part.after_cut {
                false => self.format(m, guests.lanes, part),
                true => None,
            };
            // The VM after the cut gets ready while this part runs.
            if let (true, Some(snapshot)) = (part.cut_at_end, guests.lanes.snapshot()) {
                if let Err(e) = m.vm.prepare_restore(&snapshot) {
                    eprintln!("daxtest: no standby VM for the power cut: {e:#}");
                }
            }
            let mut report = match self.run_part(m, p, spec, part, offset, t) {
                Ok(report) => report,
                Err(mut run) => {
                    if let Some(g) = guests.up.as_mut() {
                        g.vm.drop_standby();
                    }
                    // What the parts before the cut logged belongs to the case too.
                    if let Some(earlier) = merged {
                        let mut log = earlier.kernel_log;
                        log.append(&mut run.result.kernel_log);
                        run.result.kernel_log = log;
                    }
                    run.before = run.before.or(before);
                    return *run;
                }
            };
            report.phases.splice(0..0, format);
            match merged.as_mut() {
                None => {
                    let mut lines = std::mem::take(&mut m.boot_log);
                    lines.extend(report.kernel_log_before.iter().cloned());
                    before = outside_cases(m.place(Some(&p.case.id)), lines);
                    merged = Some(report);
                }
                Some(into) => {
                    merge_after_cut(into, report, offset, m.ready.restored_from.as_deref())
                }
            }
            offset += part.steps.len();
            let into = merged.as_mut().expect("set above");
            if !into.awaiting_power_cut {
                if let Some(g) = guests.up.as_mut() {
                    g.vm.drop_standby();
                }
                break;
            }
            // A store_loop runs on: the cut comes at a moment drawn from the case's seed.
            let store_loop = match part.steps.last().map(|s| &s.op) {
                Some(Op::StoreLoop { map, .. }) => Some(map.clone()),
                _ => None,
            };
            if store_loop.is_some() {
                std::thread::sleep(cut_delay(spec.seed));
            }
            // The power cut: the agent left everything as it was; nothing is asked of the guest.
            let cut = Instant::now();
            let booted = self.cut_and_boot(guests, &p.case.id, offset, emit).and_then(|serial| {
                // The records the killed VM reported completed, from its console.
                if let Some(map) = store_loop {
                    let text = std::fs::read(&serial)
                        .with_context(|| format!("reading {}", serial.display()))?;
                    let part = text.get(console_from..).unwrap_or_default();
                    let done = completed_records(&String::from_utf8_lossy(part));
                    records = Some(record_check(spec, offset, &map, done)?);
                }
                Ok(())
            });
            match booted {
                Ok(()) => {}
                Err(e) => {
                    let mut result = self.result(
                        p,
                        Status::Error,
                        format!("no VM after the power cut: {e:#}"),
                        t.elapsed(),
                    );
                    result.kernel_log = into.kernel_log.clone();
                    return CaseRun { result, after: After::Gone, before };
                }
            }
            into.phases.push(CasePhase {
                name: "power-cut-and-boot".into(),
                micros: cut.elapsed().as_micros() as u64,
            });
        }
        let report = merged.expect("a case has at least one part");
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

    /// Writes the case's filesystem onto its device from the host (machine::mkfs_image) and
    /// marks the case `formatted`, when it can: the first case of the run asking for a mkfs has
    /// it run alone in the guest on the zeroed device, and what it wrote is kept for every case
    /// asking for the same. The host's time, as the case's "format" phase; None leaves mkfs to
    /// the case (its failure is the case's to report).
    fn format(&self, m: &mut Guest, lanes: &Lanes, part: &mut CaseSpec) -> Option<CasePhase> {
        if !self.mkfs_images {
            return None;
        }
        let t = Instant::now();
        let index = part.device.strip_prefix("/dev/pmem")?.parse().ok()?;
        let (file, start) = match m.vm.device_file(index) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("daxtest: {e:#}; the case runs its own mkfs");
                return None;
            }
        };
        let key = (part.fs, part.mkfs_options.clone());
        let known = lanes.mkfs_images.lock().expect("mkfs images poisoned").get(&key).cloned();
        let image = match known {
            Some(image) => image?,
            None => {
                let taken = self
                    .saved_or_taken(&mut m.ready, part, file, start)
                    .map_err(|e| eprintln!("daxtest: {e:#}; cases run their own mkfs {key:?}"))
                    .ok()
                    .map(Arc::new);
                lanes.mkfs_images.lock().expect("mkfs images poisoned").insert(key, taken.clone());
                taken?
            }
        };
        if let Err(e) = image.write(file, start) {
            eprintln!("daxtest: {e:#}; the case runs its own mkfs");
            return None;
        }
        part.formatted = true;
        Some(CasePhase { name: "format".into(), micros: t.elapsed().as_micros() as u64 })
    }

    /// The image of the part's mkfs that an earlier run kept for this guest image, device kind
    /// and size; else taken now in the guest (and kept). A kept file that is not a whole image of
    /// that filesystem is taken anew.
    fn saved_or_taken(
        &self,
        ready: &mut Booted,
        part: &CaseSpec,
        file: &Path,
        start: u64,
    ) -> anyhow::Result<MkfsImage> {
        let size = std::fs::metadata(file)?.len().saturating_sub(start);
        let kept = crate::machine::mkfs_image::cache_path(
            &self.image.dir,
            self.vm_options.device,
            size,
            part.fs,
            &part.mkfs_options,
        );
        match MkfsImage::load(&kept) {
            Ok(Some(image)) if image.holds(part.fs) => return Ok(image),
            Ok(Some(_)) => {
                eprintln!("daxtest: {} holds no {}; taken anew", kept.display(), part.fs)
            }
            Ok(None) => {}
            Err(e) => eprintln!("daxtest: {e:#}; taken anew"),
        }
        let image = take_mkfs_image(ready, part, file, start)?;
        if let Err(e) = image.save(&kept) {
            eprintln!("daxtest: keeping the mkfs image for later runs: {e:#}");
        }
        Ok(image)
    }

    /// Runs one part of a case (the whole case, unless it cuts the power) in the guest's agent:
    /// its report, or the case's end when the guest did not answer.
    fn run_part(
        &self,
        m: &mut Guest,
        p: &PlannedCase,
        spec: &CaseSpec,
        part: &CaseSpec,
        offset: usize,
        t: Instant,
    ) -> Result<CaseReport, Box<CaseRun>> {
        let input = serde_json::to_vec(part).expect("a case spec serializes");
        let limits = self.limits(&p.case);
        let mut watch = Watch::new(&m.vm.serial_log, limits, spec).steps_before(offset);
        let answer = match m.ask(&input, &mut |e| watch.poll(e)) {
            Ok(out) => out,
            Err(e) => {
                let result = self.vm_lost(m, p, &watch, e, t);
                return Err(Box::new(CaseRun { result, after: After::Gone, before: None }));
            }
        };
        serde_json::from_slice::<CaseReport>(&answer.stdout).map_err(|e| {
            let stderr = String::from_utf8_lossy(&answer.stderr);
            let stderr: Vec<&str> = stderr.lines().filter(|l| !l.starts_with(PROGRESS)).collect();
            let result = self.result(
                p,
                Status::Error,
                format!("the agent's report is not valid: {e}; stderr: {}", stderr.join("\n")),
                t.elapsed(),
            );
            let after = After::Doubtful("the agent's report was not valid".into());
            Box::new(CaseRun { result, after, before: None })
        })
    }

    /// Cuts the power of the guest that is up (its serial log kept like any VM's) and boots the
    /// next one on the same backing files: a VM of the run of its own, which the case goes on in
    /// and the cases after it run on.
    fn cut_and_boot(
        &self,
        guests: &mut Guests,
        case: &str,
        steps_done: usize,
        emit: &mut dyn FnMut(&Event),
    ) -> anyhow::Result<PathBuf> {
        let mut g = guests.up.take().expect("a guest is up at the cut");
        let dest = self.run_dir.join(format!("serial-{}.log", g.number));
        // QEMU first: closing the agent's session could make the guest do something.
        g.vm.cut_power(&dest);
        drop(g.agent.take());
        guests.serial_logs.push((g.number, dest.clone()));
        let (lanes, failures) = (guests.lanes, &mut guests.boot_failures);
        let mut failed = |e: &anyhow::Error, retrying: bool| {
            self.boot_failed(lanes, failures, emit, e, retrying)
        };
        let vm = &mut g.vm;
        let ready = match guests.lanes.restore(&mut failed, |s| vm.restore_after_cut(self.image, s))
        {
            Some(ready) => ready,
            None => crate::machine::vm::once_more(|| vm.boot_after_cut(self.image), &mut failed)?,
        };
        let reason = format!(
            "power cut in {case} after step {steps_done}: {} on the same NVDIMM backing files",
            if ready.restored_from.is_some() { "a VM" } else { "booted" }
        );
        guests.up = Some(self.booted(g.vm, ready, &reason, guests.lanes, emit));
        Ok(dest)
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
        m: &mut Guest,
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
                if let Ok(Resolution::Run { xfail, .. }) = &p.resolution {
                    judge_hang(&mut r, xfail.as_ref());
                }
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
    fn hang_dump(&self, m: &mut Guest, watch: &Watch) -> (Vec<String>, &'static str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        match m.ready.connection.capture_until(&format!("{AGENT_PATH} dump"), &[], deadline) {
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

    /// A boot that failed: its log kept as `boot-failure-N.log` in the run directory, and said.
    fn boot_failed(
        &self,
        lanes: &Lanes,
        failures: &mut Vec<(usize, PathBuf)>,
        emit: &mut dyn FnMut(&Event),
        e: &anyhow::Error,
        retrying: bool,
    ) {
        let number = lanes.boot_failures.fetch_add(1, Ordering::SeqCst) + 1;
        let log = self.run_dir.join(format!("boot-failure-{number}.log"));
        if let Err(w) = std::fs::write(&log, format!("{e:#}\n")) {
            eprintln!("daxtest: writing {}: {w}", log.display());
        }
        failures.push((number, log.clone()));
        emit(&Event::BootFailed { message: format!("{e:#}"), log, retrying });
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
            measurements: vec![],
            profiles: vec![],
            vm: None,
            known_bug: None,
        }
    }
}

/// The case's mkfs, run alone by the agent on its device zeroed by the host, and what it wrote.
fn take_mkfs_image(
    ready: &mut Booted,
    spec: &CaseSpec,
    file: &Path,
    start: u64,
) -> anyhow::Result<MkfsImage> {
    crate::machine::mkfs_image::zero(file, start)?;
    let input = serde_json::to_vec(spec).expect("a case spec serializes");
    let mkfs = ready.agent_command("mkfs");
    let out = ready
        .connection
        .capture_until(&mkfs, &input, Instant::now() + MKFS_TIMEOUT)
        .with_context(|| format!("the agent's mkfs (limit {MKFS_TIMEOUT:?})"))?;
    anyhow::ensure!(
        out.status == 0,
        "the agent's mkfs failed (exit {}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let image = MkfsImage::capture(file, start)?;
    anyhow::ensure!(
        image.holds(spec.fs),
        "{} holds no {} superblock after mkfs on {}",
        file.display(),
        spec.fs,
        spec.device
    );
    Ok(image)
}

/// mkfs on a device of a few GiB takes a second under TCG; longer, the guest is in trouble
/// and the case's own mkfs meets it under the case's limits.
const MKFS_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a store_loop runs before the power is cut: 200 ms to 1.2 s, drawn from the case's
/// seed (SplitMix64), so that a run with the same seed cuts at about the same moment.
fn cut_delay(seed: u64) -> Duration {
    let mut z = seed.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    Duration::from_millis(200 + (z ^ (z >> 31)) % 1000)
}

/// The records a store_loop reported completed on the console of the killed VM: one more than
/// the highest index on a whole line (a line cut by the kill was not reported).
fn completed_records(serial: &str) -> u64 {
    let whole = match serial.rfind('\n') {
        Some(end) => &serial[..end],
        None => "",
    };
    whole
        .lines()
        .filter_map(|l| l.split(RECORD_MARK).nth(1)?.trim_end().parse::<u64>().ok())
        .max()
        .map_or(0, |i| i + 1)
}

/// What the power_cut after a store_loop through `map` checks: the mapped file and offset, from
/// the last mmap of `map` before the loop (the validator made sure there is one).
fn record_check(
    spec: &CaseSpec,
    steps_done: usize,
    map: &str,
    completed: u64,
) -> anyhow::Result<RecordCheck> {
    spec.steps[..steps_done]
        .iter()
        .rev()
        .find_map(|s| match &s.op {
            Op::Mmap { file, map: m, offset, .. } if m == map => {
                Some(RecordCheck { file: file.clone(), offset: *offset, completed })
            }
            _ => None,
        })
        .with_context(|| format!("no mmap of {map:?} before its store_loop"))
}

/// The extent maps the steps reported so far saved (`fiemap` with `save`), by name.
fn saved_extents(spec: &CaseSpec, report: &CaseReport) -> BTreeMap<String, Vec<Extent>> {
    let mut saved = BTreeMap::new();
    for (step, seen) in spec.steps.iter().zip(&report.steps) {
        if let (Op::Fiemap { save: Some(name), .. }, Observed::Extents { extents, .. }) =
            (&step.op, &seen.observed)
        {
            saved.insert(name.clone(), extents.clone());
        }
    }
    saved
}

/// Joins the report of the part after a power cut to the case's: its steps (numbered on from
/// `offset`), the new VM's boot and the part's window in the kernel log after a line that marks
/// the cut, the taint and how it ended.
/// `restored_from`: the VM after the cut was restored from a boot snapshot, not booted.
fn merge_after_cut(
    into: &mut CaseReport,
    next: CaseReport,
    offset: usize,
    restored_from: Option<&str>,
) {
    into.steps.extend(next.steps.into_iter().map(|mut s| {
        s.index += offset;
        s
    }));
    let next_vm = match restored_from {
        Some(source) => {
            format!("the next one on the same NVDIMM backing files ({source}, restored)")
        }
        None => "the boot of the next one on the same NVDIMM backing files".into(),
    };
    into.kernel_log.push(format!(
        "--- power cut after step {offset}: the VM was killed; below, {next_vm}, then the case's \
         window there ---"
    ));
    into.kernel_log.extend(next.kernel_log_before);
    into.kernel_log.push("--- the case after the power cut ---".into());
    into.kernel_log.extend(next.kernel_log);
    into.kernel_log_gap = into.kernel_log_gap.take().or(next.kernel_log_gap);
    let after_cut = |e: Option<String>| e.map(|e| format!("after the power cut: {e}"));
    into.setup_error = into.setup_error.take().or(after_cut(next.setup_error));
    into.dax_state_error = into.dax_state_error.take().or(after_cut(next.dax_state_error));
    into.teardown_error = next.teardown_error;
    into.left_behind = next.left_behind;
    into.residue = next.residue;
    // The same kernel boots with the same taint: any bit either VM gained shows.
    into.tainted_after |= next.tainted_after;
    into.millis += next.millis;
    into.phases.extend(next.phases);
    into.awaiting_power_cut = next.awaiting_power_cut;
}

fn serial_tail(serial: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxtest_proto::case::StepReport;

    fn report(steps: usize, log: &[&str], tainted: (u64, u64)) -> CaseReport {
        CaseReport {
            id: "c".into(),
            setup_error: None,
            dax_state_error: None,
            mount_options: "dax=always".into(),
            steps: (0..steps)
                .map(|index| StepReport {
                    index,
                    line: 10 + index,
                    op: "write".into(),
                    observed: Observed::Ok,
                    millis: 1,
                })
                .collect(),
            teardown_error: None,
            left_behind: vec![],
            residue: vec![],
            kernel_log_before: vec!["[1.0] boot".into()],
            kernel_log: log.iter().map(|l| l.to_string()).collect(),
            kernel_log_gap: None,
            tainted_before: tainted.0,
            tainted_after: tainted.1,
            millis: 5,
            awaiting_power_cut: true,
            phases: vec![],
        }
    }

    /// A record counts when its line reached the console whole; other console lines are not
    /// records.
    #[test]
    fn completed_records_are_the_whole_lines_on_the_console() {
        assert_eq!(completed_records(""), 0);
        assert_eq!(completed_records("[ 1.0] boot\r\n"), 0);
        let serial =
            "@daxtest-record 0\r\n@daxtest-record 1\r\n[ 2.0] x\n@daxtest-record 2\r\n@daxtest-rec";
        assert_eq!(completed_records(serial), 3);
        assert_eq!(completed_records("@daxtest-record 0\n@daxtest-record 1"), 1);
        assert_ne!(cut_delay(1), cut_delay(2));
        assert!((200..1200).contains(&(cut_delay(7).as_millis() as u64)));
    }

    /// The part after a cut continues the case: its steps numbered on, the new VM's boot and its
    /// window in the case's log after the cut's marker, a taint either VM gained kept.
    #[test]
    fn the_part_after_a_cut_continues_the_report() {
        let mut into = report(2, &["[2.0] before the cut"], (0, 512));
        let mut next = report(3, &["[3.0] XFS (pmem0): Starting recovery"], (0, 0));
        next.awaiting_power_cut = false;
        next.teardown_error = Some("umount".into());
        merge_after_cut(&mut into, next, 2, None);
        let indexes: Vec<usize> = into.steps.iter().map(|s| s.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3, 4]);
        assert_eq!(into.kernel_log[0], "[2.0] before the cut");
        assert!(
            into.kernel_log[1].starts_with("--- power cut after step 2"),
            "{:?}",
            into.kernel_log
        );
        assert_eq!(into.kernel_log[2], "[1.0] boot");
        assert_eq!(into.kernel_log[4], "[3.0] XFS (pmem0): Starting recovery");
        assert_eq!((into.tainted_before, into.tainted_after), (0, 512));
        assert_eq!(into.teardown_error.as_deref(), Some("umount"));
        assert!(!into.awaiting_power_cut);
        assert_eq!(into.millis, 10);
    }
}
