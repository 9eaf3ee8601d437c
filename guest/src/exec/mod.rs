//! Owns a case: `daxtest-agent case` and `serve` run a [`CaseSpec`] and report each step.
//! May use the root's support modules (`kmsg`, `stat`) and `daxtest_proto`; never `boot`.
//!
//! Steps run with real system calls. Set-up makes a fresh filesystem (or mounts the one the host
//! wrote, `CaseSpec::formatted`) and verifies that DAX is in the state the mount asks for; every
//! process the case starts runs in its cgroup and is swept at the end; teardown always runs and must leave the guest as the case found it, except where
//! the host cuts the power (`CaseSpec::cut_at_end`): there everything is left to die with the
//! VM, and the part after the cut mounts what it left instead of making a filesystem; the kernel
//! messages of the case's window, and of the stretch before it, come from PID 1's copy of
//! /dev/kmsg (`crate::kmsg`).
//!
//! One handler per kind of operation: files (`files`), mappings (`mapping`, each held by a
//! process of its own), the filesystem as a whole (`filesystem`), races (`race`).

mod files;
mod filesystem;
pub mod isolation;
pub mod mapping;
pub mod race;
pub mod sys;
mod trace;

use daxtest_proto::case::{
    CasePhase, CaseReport, CaseSpec, Expect, Extent, Observed, Op, StepReport,
};
pub use filesystem::mkfs;
use mapping::{Holder, Map};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn run(spec: &CaseSpec) -> CaseReport {
    let start = Instant::now();
    let mut clock = Clock::default();
    let window = crate::kmsg::Window::open(&spec.id);
    let shell = spec.steps.iter().any(|s| matches!(s.op, Op::Shell { .. }));
    let baseline = isolation::Baseline::take(shell);
    let tainted_before = tainted();
    let mut report = CaseReport {
        id: spec.id.clone(),
        setup_error: None,
        dax_state_error: None,
        mount_options: String::new(),
        steps: Vec::new(),
        teardown_error: None,
        left_behind: Vec::new(),
        residue: Vec::new(),
        kernel_log_before: Vec::new(),
        kernel_log: Vec::new(),
        kernel_log_gap: None,
        tainted_before,
        tainted_after: tainted_before,
        millis: 0,
        awaiting_power_cut: false,
        phases: Vec::new(),
    };
    let unit = isolation::Unit::enter();
    let mut ex = Executor::new(spec, unit.as_ref().ok());
    clock.lap("open");
    progress("setup");
    match &unit {
        Err(e) => report.setup_error = Some(format!("case cgroup: {e}")),
        // After a power cut, the power_cut step mounts what the cut left.
        Ok(_) if spec.after_cut => match ex.mount_point() {
            Ok(()) => {
                clock.lap("mount");
                ex.steps(&mut report.steps);
                clock.lap("steps");
            }
            Err(e) => report.setup_error = Some(e),
        },
        Ok(_) => match ex.setup(&mut clock) {
            Ok(options) => {
                let dax_state = ex.verify_dax_state(&options);
                clock.lap("dax-state");
                report.mount_options = options;
                match dax_state {
                    Ok(()) => {
                        ex.steps(&mut report.steps);
                        clock.lap("steps");
                    }
                    Err(e) => report.dax_state_error = Some(e),
                }
            }
            Err(e) => report.setup_error = Some(e),
        },
    }
    let all_met = report.setup_error.is_none()
        && report.dax_state_error.is_none()
        && report.steps.len() == spec.steps.len()
        && spec.steps.iter().zip(&report.steps).all(|(s, r)| s.expect.check(&r.observed).is_ok());
    if spec.cut_at_end && all_met {
        // The power goes now: no teardown, no sync. The processes, mappings and handles of the
        // case stay as they are (forgotten, not dropped: dropping would end them) until QEMU dies.
        progress("awaiting the power cut");
        std::mem::forget(ex);
        report.awaiting_power_cut = true;
        return close(report, window, clock, start);
    }
    progress("teardown");
    let mut teardown = ex.release();
    if let Ok(unit) = &unit {
        let sweep = unit.sweep();
        report.left_behind = sweep.left_behind;
        teardown.extend(sweep.error.map(|e| format!("processes of the case: {e}")));
    }
    clock.lap("release");
    teardown.extend(ex.unmount());
    if spec.fsck && !teardown.iter().any(|t| t.starts_with("umount")) {
        teardown.extend(filesystem::fsck(spec));
    }
    clock.lap("unmount");
    // The next case's mkfs needs the device: nobody may hold it.
    if let Err(e) = sys::open_exclusive(Path::new(&spec.device)) {
        teardown.push(format!("{} is still in use after the unmount: {e}", spec.device));
    }
    report.teardown_error = (!teardown.is_empty()).then(|| teardown.join("; "));
    report.residue = baseline.changes();
    clock.lap("residue");
    // Let what the case set off reach the log before its window closes: writeback, and the
    // kernel's deferred work.
    rustix::fs::sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    close(report, window, clock, start)
}

/// The case's kernel-log window closed into its report, with its taint, time and phases.
fn close(
    mut report: CaseReport,
    window: crate::kmsg::Window,
    mut clock: Clock,
    start: Instant,
) -> CaseReport {
    let lines = window.close();
    clock.lap("window");
    report.kernel_log_before = lines.before;
    report.kernel_log = lines.window;
    report.kernel_log_gap = lines.gap;
    report.tainted_after = tainted();
    report.millis = start.elapsed().as_millis() as u64;
    report.phases = clock.phases;
    report
}

/// Times the parts of a case one after another.
struct Clock {
    last: Instant,
    phases: Vec<CasePhase>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { last: Instant::now(), phases: Vec::new() }
    }
}

impl Clock {
    /// Ends the part named `name`, which began at the previous lap.
    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let micros = (now - self.last).as_micros() as u64;
        self.phases.push(CasePhase { name: name.to_string(), micros });
        self.last = now;
    }
}

/// Tells the host, on stderr, what the case is doing now: it times steps out from these lines.
fn progress(what: &str) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{}{what}", daxtest_proto::case::PROGRESS);
    let _ = e.flush();
}

fn tainted() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/tainted")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn errno(e: &std::io::Error) -> Observed {
    match e.raw_os_error() {
        Some(code) => Observed::Errno(sys::errno_name(code)),
        None => Observed::Error(e.to_string()),
    }
}

pub(crate) fn done(r: std::io::Result<()>) -> Observed {
    match r {
        Ok(()) => Observed::Ok,
        Err(e) => errno(&e),
    }
}

struct Executor<'a> {
    spec: &'a CaseSpec,
    unit: Option<&'a isolation::Unit>,
    mnt: PathBuf,
    mounted: bool,
    handles: HashMap<String, File>,
    maps: HashMap<String, Map>,
    saved: HashMap<String, Vec<Extent>>,
    swapped: Vec<PathBuf>,
    frozen: bool,
    /// Mounted with MS_RDONLY (`remount` with `read_only`).
    read_only: bool,
    /// The step running now (1-based), for messages about mappings it ended.
    step: usize,
}

impl<'a> Executor<'a> {
    fn new(spec: &'a CaseSpec, unit: Option<&'a isolation::Unit>) -> Self {
        Executor {
            spec,
            unit,
            mnt: PathBuf::from(&spec.mount_point),
            mounted: false,
            handles: HashMap::new(),
            maps: HashMap::new(),
            saved: spec.saved.clone().into_iter().collect(),
            swapped: Vec::new(),
            frozen: false,
            read_only: false,
            step: 0,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Runs the steps until the first that does not meet its expectation: later steps build on
    /// it, so nothing they show would mean much.
    fn steps(&mut self, out: &mut Vec<StepReport>) {
        for (index, step) in self.spec.steps.iter().enumerate() {
            let t = Instant::now();
            self.step = index + 1;
            progress(&format!("step {}", index + 1));
            let observed = match step.expect.pmd_faults {
                Some(_) => self.traced_step(&step.op, &step.expect),
                None => self.step(&step.op, &step.expect),
            };
            let failed = step.expect.check(&observed).is_err();
            out.push(StepReport {
                index,
                line: step.line,
                op: step.op.name(),
                observed,
                millis: t.elapsed().as_millis() as u64,
            });
            if failed {
                break;
            }
        }
    }

    /// A store or load whose DAX PMD faults are counted from the fs_dax tracepoints.
    fn traced_step(&mut self, op: &Op, expect: &Expect) -> Observed {
        let trace = match trace::PmdTrace::start() {
            Ok(t) => t,
            Err(e) => return Observed::Error(e),
        };
        let mut observed = self.step(op, expect);
        match trace.pmd_faults() {
            Ok(n) => observed.set_pmd_faults(n),
            Err(e) => return Observed::Error(e),
        }
        observed
    }

    fn step(&mut self, op: &Op, expect: &Expect) -> Observed {
        match op {
            Op::Create { file } => files::create(&self.path(file)),
            Op::Mkdir { dir } => done(std::fs::create_dir(self.path(dir))),
            Op::Write { file, offset, len, pattern } => {
                files::write(&self.path(file), *offset, *len, *pattern as u8)
            }
            Op::Read { file, offset, len } => files::read(&self.path(file), *offset, *len),
            Op::Fsync { file } => files::fsync(&self.path(file)),
            Op::Truncate { file, size } => files::truncate(&self.path(file), *size),
            Op::Fallocate { file, mode, offset, len } => {
                files::fallocate(&self.path(file), *mode, *offset, *len)
            }
            Op::Statx { file } => files::statx(&self.path(file)),
            Op::GetFlag { file } => files::get_flag(&self.path(file)),
            Op::SetFlag { file, on, flag } => files::set_flag(&self.path(file), *flag, *on),
            Op::Clone { src, dst } => files::clone(&self.path(src), &self.path(dst)),
            Op::CloneRange { src, dst, src_offset, len, dst_offset } => {
                files::clone_range(&self.path(src), &self.path(dst), *src_offset, *len, *dst_offset)
            }
            Op::Rename { from, to } => done(std::fs::rename(self.path(from), self.path(to))),
            Op::Unlink { file } => done(std::fs::remove_file(self.path(file))),
            Op::Open { file, handle } => match files::open_rw(&self.path(file)) {
                Ok(f) => {
                    self.handles.insert(handle.clone(), f);
                    Observed::Ok
                }
                Err(e) => errno(&e),
            },
            Op::Close { handle } => match self.handles.remove(handle) {
                Some(_) => Observed::Ok,
                None => Observed::Error(format!("no handle {handle:?}")),
            },
            Op::Fiemap { file, offset, len, save } => {
                let since = match &expect.outcome {
                    daxtest_proto::case::Outcome::Extents { since, .. } => Some(since.as_str()),
                    _ => None,
                };
                files::fiemap(&self.path(file), *offset, *len, save, since, &mut self.saved)
            }
            Op::Mmap { file, map, offset, len, kind, prot } => {
                match Holder::start(&self.path(file), *offset, *len, *kind, *prot) {
                    Ok(h) => {
                        self.maps.insert(map.clone(), Map::Live(h));
                        Observed::Ok
                    }
                    Err(observed) => observed,
                }
            }
            Op::Munmap { map } => match self.maps.remove(map) {
                Some(Map::Live(h)) => h.unmap(),
                Some(Map::Gone(why)) => Observed::Error(format!("mapping {map:?} {why}")),
                None => Observed::Error(format!("no mapping {map:?}")),
            },
            Op::Msync { map } => self.with_map(map, |h| h.msync()),
            Op::StoreProfile { map, offset, len, stride, pattern } => {
                self.store_profile(map, *offset, *len, *stride, *pattern as u8)
            }
            Op::MappedBufferIo { map, map_offset, file, offset, len, direction, direct } => {
                let path = self.path(file);
                let write = *direction == daxtest_proto::case::IoDirection::Write;
                self.with_map(map, |h| {
                    h.mapped_buffer_io((*map_offset, *len), &path, *offset, write, *direct)
                })
            }
            Op::Store { map, offset, len, pattern, fork } => {
                self.with_map(map, |h| h.store(*offset, *len, *pattern as u8, *fork))
            }
            Op::Load { map, offset, len, fork } => {
                self.with_map(map, |h| h.load(*offset, *len, *fork))
            }
            Op::Mprotect { map, prot } => {
                let write = *prot == daxtest_proto::case::Prot::ReadWrite;
                self.with_map(map, |h| h.mprotect(write))
            }
            Op::Mremap { map, len } => self.with_map(map, |h| h.mremap(*len)),
            Op::Poison { map, offset } => self.with_map(map, |h| h.poison(*offset)),
            Op::RaceStoreClone { map, file, rounds } => {
                let (mnt, seed) = (self.mnt.clone(), self.spec.seed);
                self.with_map(map, |h| h.race_store_clone(&mnt, file, *rounds, seed))
            }
            Op::RaceDirectIoRemove { map, file, remove, rounds } => {
                let (file, seed) = (self.path(file), self.spec.seed);
                self.with_map(map, |h| h.race_direct_io_remove(&file, *remove, *rounds, seed))
            }
            Op::RacePrivateCow { map, rounds } => {
                let seed = self.spec.seed;
                self.with_map(map, |h| h.race_private_cow(*rounds, seed))
            }
            Op::Evict => {
                self.release_handles_and_maps();
                done(filesystem::evict(&self.mnt))
            }
            Op::Remount { read_only } => {
                self.release_handles_and_maps();
                self.read_only = *read_only;
                self.remount()
            }
            Op::Mkswap { file } => filesystem::mkswap(&self.path(file), &self.mnt),
            Op::Swapon { file } => {
                let p = self.path(file);
                let r = sys::swapon(&p);
                if r.is_ok() {
                    self.swapped.push(p);
                }
                done(r)
            }
            Op::Swapoff { file } => {
                let p = self.path(file);
                let r = sys::swapoff(&p);
                if r.is_ok() {
                    self.swapped.retain(|s| s != &p);
                }
                done(r)
            }
            Op::Freeze => {
                let r = filesystem::freeze(&self.mnt, true);
                self.frozen |= r.is_ok();
                done(r)
            }
            Op::Thaw => {
                let r = filesystem::freeze(&self.mnt, false);
                self.frozen &= r.is_err();
                done(r)
            }
            Op::RaceToggleWrite { file, rounds } => self.race_toggle_write(file, *rounds),
            Op::PowerCut => self.recover(),
            Op::StoreLoop { map, msync } => self.with_map(map, |h| h.store_loop(*msync)),
            Op::Sleep { millis } => {
                std::thread::sleep(std::time::Duration::from_millis(*millis));
                Observed::Ok
            }
            // A child of the agent, so in the case's cgroup as the agent is.
            Op::Exec { file, args } => filesystem::exec(&self.path(file), args, &self.mnt),
            Op::Shell { command, background } => {
                // A step that starts processes on purpose puts them where the sweep expects them.
                let procs = match (background, self.unit) {
                    (true, Some(u)) => Some(u.background_procs()),
                    _ => None,
                };
                filesystem::shell(command, &self.mnt, procs.as_deref())
            }
        }
    }

    /// An access through a live mapping. A signal that kills its holder ends the mapping: it is
    /// gone from then on, and saying so is all a later step can get (a `fork` access's signal
    /// kills the child the holder forked, and the mapping stays).
    fn with_map(&mut self, name: &str, access: impl FnOnce(&mut Holder) -> Observed) -> Observed {
        let (observed, ended) = match self.maps.get_mut(name) {
            Some(Map::Live(h)) => {
                let o = access(h);
                let ended = h.ended();
                (o, ended)
            }
            Some(Map::Gone(why)) => return Observed::Error(format!("mapping {name:?} {why}")),
            None => return Observed::Error(format!("no mapping {name:?}")),
        };
        if ended {
            let how = match &observed {
                Observed::Signal { name: sig, .. } => format!("was killed by {sig}"),
                _ => "ended".to_string(),
            };
            let why = format!(
                "is gone: its process {how} at step {}; mmap the file again for another access",
                self.step
            );
            self.maps.insert(name.to_string(), Map::Gone(why));
        }
        observed
    }

    /// A store_profile through a live mapping, with the faults by size from the fs_dax
    /// tracepoints and the filesystem's metadata counter read before and after.
    fn store_profile(
        &mut self,
        map: &str,
        offset: u64,
        len: u64,
        stride: u64,
        byte: u8,
    ) -> Observed {
        let (fs, device) = (self.spec.fs, self.spec.device.clone());
        let trace = match trace::PmdTrace::start_sizes() {
            Ok(t) => t,
            Err(e) => return Observed::Error(e),
        };
        let before = match filesystem::metadata_counter(fs, &device) {
            Ok(c) => c,
            Err(e) => return Observed::Error(e),
        };
        let mut observed = self.with_map(map, |h| h.store_profile(offset, len, stride, byte));
        let after = filesystem::metadata_counter(fs, &device);
        let sizes = trace.sizes();
        if let Observed::Profile(p) = &mut observed {
            match (after, sizes) {
                (Ok((counter, after)), Ok(sizes)) => {
                    p.pte_faults = sizes.pte;
                    p.pmd_faults = sizes.pmd;
                    p.pmd_fallbacks = sizes.pmd_fallbacks;
                    p.metadata = Some(daxtest_proto::case::MetadataWork {
                        counter: counter.to_string(),
                        count: after.saturating_sub(before.1),
                    });
                }
                (Err(e), _) | (_, Err(e)) => return Observed::Error(e),
            }
        }
        observed
    }

    /// The race, then its records read back three times: as the race left them, after the
    /// inode is evicted (nothing left in the page cache) and after a remount.
    fn race_toggle_write(&mut self, file: &str, rounds: u64) -> Observed {
        self.release_handles_and_maps();
        let path = self.path(file);
        let race = race::toggle_write(&path, rounds, self.spec.seed);
        let mut problems = race.problems;
        problems.extend(race::check_records(&path, rounds, "after the race"));
        match filesystem::evict(&self.mnt) {
            Ok(()) => problems.extend(race::check_records(&path, rounds, "after eviction")),
            Err(e) => return Observed::Error(format!("evicting after the race: {e}")),
        }
        match self.remount() {
            Observed::Ok => problems.extend(race::check_records(&path, rounds, "after a remount")),
            other => return Observed::Error(format!("remounting after the race: {other}")),
        }
        if problems.is_empty() && race.writer_transitions + race.toggler_transitions == 0 {
            return Observed::Error(format!(
                "the file's DAX mode never changed during the race ({rounds} toggles, {rounds} \
                 writes): nothing raced; more rounds, or a mount where the flag decides \
                 (dax=inode)"
            ));
        }
        Observed::Race { rounds, problems }
    }

    fn remount(&mut self) -> Observed {
        match rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => {
                self.mounted = false;
                match self.mount() {
                    Ok(()) => Observed::Ok,
                    Err(e) => Observed::Error(e),
                }
            }
            Err(e) => Observed::Errno(sys::errno_name(e.raw_os_error())),
        }
    }

    /// Every mapping unmapped (its holder gone) and every handle closed.
    fn release_handles_and_maps(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, m) in self.maps.drain() {
            if let Map::Live(h) = m {
                match h.unmap() {
                    Observed::Ok => {}
                    other => problems.push(format!("munmap of mapping {name:?}: {other}")),
                }
            }
        }
        self.handles.clear();
        problems
    }

    /// What teardown undoes before the sweep: a frozen filesystem, active swapfiles, handles and
    /// mappings. Returns what could not be undone.
    fn release(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.frozen {
            if let Err(e) = filesystem::freeze(&self.mnt, false) {
                problems.push(format!("thaw: {e}"));
            }
        }
        for p in std::mem::take(&mut self.swapped) {
            if let Err(e) = sys::swapoff(&p) {
                problems.push(format!("swapoff {}: {e}", p.display()));
            }
        }
        problems.extend(self.release_handles_and_maps());
        problems
    }
}
