//! `daxtest-agent case`: runs one [`CaseSpec`] with real system calls and reports what each step
//! did. Set-up makes a fresh filesystem and checks that DAX is in the state the mount asks for;
//! teardown always runs; the kernel messages of the case's window come from /dev/kmsg.

pub mod kmsg;
pub mod race;
pub mod sys;

use daxtest_proto::case::{
    runs, CaseReport, CaseSpec, Expect, Extent, FallocMode, Fs, MapKind, Observed, Op, StepReport,
};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(spec: &CaseSpec) -> CaseReport {
    let start = Instant::now();
    let window = kmsg::Window::open(&spec.id);
    let tainted_before = tainted();
    let mut ex = Executor::new(spec);
    let mut report = CaseReport {
        id: spec.id.clone(),
        setup_error: None,
        mount_options: String::new(),
        steps: Vec::new(),
        teardown_error: None,
        kernel_log: Vec::new(),
        tainted_before,
        tainted_after: tainted_before,
        millis: 0,
    };
    progress("setup");
    match ex.setup() {
        Ok(options) => {
            report.mount_options = options;
            for (index, step) in spec.steps.iter().enumerate() {
                let t = Instant::now();
                progress(&format!("step {}", index + 1));
                let observed = ex.step(&step.op, &step.expect);
                let failed = step.expect.check(&observed).is_err();
                report.steps.push(StepReport {
                    index,
                    line: step.line,
                    op: step.op.name(),
                    observed,
                    millis: t.elapsed().as_millis() as u64,
                });
                // Later steps build on this one: nothing they show would mean much.
                if failed {
                    break;
                }
            }
        }
        Err(e) => report.setup_error = Some(e),
    }
    progress("teardown");
    report.teardown_error = ex.teardown().err();
    report.kernel_log =
        window.map(|w| w.read()).unwrap_or_else(|e| vec![format!("(/dev/kmsg: {e})")]);
    report.tainted_after = tainted();
    report.millis = start.elapsed().as_millis() as u64;
    report
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

struct Map {
    map: sys::Mapping,
    _file: File,
}

struct Executor<'a> {
    spec: &'a CaseSpec,
    mnt: PathBuf,
    mounted: bool,
    handles: HashMap<String, File>,
    maps: HashMap<String, Map>,
    saved: HashMap<String, Vec<Extent>>,
    swapped: Vec<PathBuf>,
    frozen: bool,
}

fn errno(e: &std::io::Error) -> Observed {
    match e.raw_os_error() {
        Some(code) => Observed::Errno(sys::errno_name(code)),
        None => Observed::Errno(format!("DAXTEST-ERROR: {e}")),
    }
}

/// Framework misuse (a name no step made): always fails the expectation, with the reason.
fn misuse(what: String) -> Observed {
    Observed::Errno(format!("DAXTEST-ERROR: {what}"))
}

fn done(r: std::io::Result<()>) -> Observed {
    match r {
        Ok(()) => Observed::Ok,
        Err(e) => errno(&e),
    }
}

fn rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl<'a> Executor<'a> {
    fn new(spec: &'a CaseSpec) -> Self {
        Executor {
            spec,
            mnt: PathBuf::from(&spec.mount_point),
            mounted: false,
            handles: HashMap::new(),
            maps: HashMap::new(),
            saved: HashMap::new(),
            swapped: Vec::new(),
            frozen: false,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// mkfs, mount, and the check that DAX is as the mount asks. Returns the mount's options.
    fn setup(&mut self) -> Result<String, String> {
        let s = self.spec;
        let mut mkfs = match s.fs {
            Fs::Xfs => Command::new("mkfs.xfs"),
            Fs::Ext4 => Command::new("mkfs.ext4"),
        };
        mkfs.arg(if s.fs == Fs::Xfs { "-f" } else { "-F" }).arg("-q").args(&s.mkfs_options);
        mkfs.arg(&s.device);
        let out = mkfs.stdin(Stdio::null()).output().map_err(|e| format!("mkfs: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.{} {}: {}",
                s.fs,
                s.mkfs_options.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        std::fs::create_dir_all(&self.mnt)
            .map_err(|e| format!("mkdir {}: {e}", self.mnt.display()))?;
        self.mount()?;
        let options = mount_options(&self.mnt).unwrap_or_default();
        self.check_dax_state(&options)?;
        Ok(options)
    }

    fn mount(&mut self) -> Result<(), String> {
        let s = self.spec;
        let data = std::ffi::CString::new(s.mount_options.clone()).map_err(|e| e.to_string())?;
        rustix::mount::mount(
            s.device.as_str(),
            &self.mnt,
            s.fs.name(),
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| format!("mount -t {} -o {} {}: {e}", s.fs, s.mount_options, s.device))?;
        self.mounted = true;
        Ok(())
    }

    /// dax=always: a new file must have STATX_ATTR_DAX. dax=inode: a new file given the flag
    /// must have it. dax=never: the mount must say so. Anything else means the case would run
    /// without the DAX it is about (a raw namespace makes XFS silently turn DAX off).
    fn check_dax_state(&self, options: &str) -> Result<(), String> {
        let asked = self
            .spec
            .mount_options
            .split(',')
            .find(|o| o.starts_with("dax"))
            .unwrap_or("dax=inode");
        let probe = self.path(".daxtest-probe");
        let result = match asked {
            "dax" | "dax=always" => {
                File::create(&probe).map_err(|e| format!("probe file: {e}"))?;
                match crate::stat::statx_dax(&probe.to_string_lossy()) {
                    Ok(Some(true)) => Ok(()),
                    other => Err(format!(
                        "DAX is off on a dax=always mount (statx: {other:?}; options {options}): \
                         is {} an fsdax namespace?",
                        self.spec.device
                    )),
                }
            }
            "dax=never" if options.split(',').any(|o| o == "dax=never") => Ok(()),
            "dax=never" => Err(format!("the mount does not show dax=never: {options}")),
            _ => {
                File::create(&probe).map_err(|e| format!("probe file: {e}"))?;
                // The flag is set on a closed file, so the next lookup loads it in DAX mode.
                let flagged = File::open(&probe).and_then(|f| sys::set_dax_flag(f.as_fd(), true));
                match (flagged, crate::stat::statx_dax(&probe.to_string_lossy())) {
                    (Ok(()), Ok(Some(true))) => Ok(()),
                    (f, st) => Err(format!(
                        "DAX does not work on this dax=inode mount: FS_XFLAG_DAX on a new file \
                         gave {f:?}, statx {st:?} (options {options})"
                    )),
                }
            }
        };
        let _ = std::fs::remove_file(&probe);
        result
    }

    fn step(&mut self, op: &Op, expect: &Expect) -> Observed {
        match op {
            Op::Create { file } => done(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(self.path(file))
                    .map(drop),
            ),
            Op::Mkdir { dir } => done(std::fs::create_dir(self.path(dir))),
            Op::Write { file, offset, len, pattern } => done(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.path(file))
                    .and_then(|f| f.write_all_at(&vec![*pattern as u8; *len as usize], *offset)),
            ),
            Op::Read { file, offset, len } => {
                match File::open(self.path(file)).and_then(|f| read_at(&f, *offset, *len)) {
                    Ok(data) => bytes(*offset, &data),
                    Err(e) => errno(&e),
                }
            }
            Op::Fsync { file } => done(rw(&self.path(file)).and_then(|f| f.sync_all())),
            Op::Truncate { file, size } => {
                done(rw(&self.path(file)).and_then(|f| f.set_len(*size)))
            }
            Op::Fallocate { file, mode, offset, len } => done(
                rw(&self.path(file))
                    .and_then(|f| sys::fallocate(f.as_fd(), falloc_flags(*mode), *offset, *len)),
            ),
            Op::Statx { file } => {
                match crate::stat::statx_dax(&self.path(file).to_string_lossy()) {
                    Ok(Some(on)) => Observed::Dax(on),
                    Ok(None) => misuse("the filesystem does not report STATX_ATTR_DAX".into()),
                    Err(e) => match e.downcast_ref::<rustix::io::Errno>() {
                        Some(code) => Observed::Errno(sys::errno_name(code.raw_os_error())),
                        None => misuse(format!("{e:#}")),
                    },
                }
            }
            // Opened and closed at once: an fd held longer would change the dax=inode outcome.
            Op::GetFlag { file } => {
                match File::open(self.path(file)).and_then(|f| sys::get_xflags(f.as_fd())) {
                    Ok(flags) => Observed::Flag(flags & sys::FS_XFLAG_DAX != 0),
                    Err(e) => errno(&e),
                }
            }
            Op::SetFlag { file, on } => {
                done(File::open(self.path(file)).and_then(|f| sys::set_dax_flag(f.as_fd(), *on)))
            }
            Op::Clone { src, dst } => done((|| {
                let s = File::open(self.path(src))?;
                let d = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.path(dst))?;
                sys::ficlone(d.as_fd(), s.as_fd())
            })()),
            Op::CloneRange { src, dst, src_offset, len, dst_offset } => done((|| {
                let s = File::open(self.path(src))?;
                let d = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.path(dst))?;
                sys::ficlonerange(d.as_fd(), s.as_fd(), *src_offset, *len, *dst_offset)
            })()),
            Op::Rename { from, to } => done(std::fs::rename(self.path(from), self.path(to))),
            Op::Unlink { file } => done(std::fs::remove_file(self.path(file))),
            Op::Open { file, handle } => match rw(&self.path(file)) {
                Ok(f) => {
                    self.handles.insert(handle.clone(), f);
                    Observed::Ok
                }
                Err(e) => errno(&e),
            },
            Op::Close { handle } => match self.handles.remove(handle) {
                Some(_) => Observed::Ok,
                None => misuse(format!("no handle {handle:?}")),
            },
            Op::Mmap { file, map, offset, len, kind } => {
                let flags = match kind {
                    MapKind::Shared => libc::MAP_SHARED,
                    MapKind::Sync => sys::MAP_SHARED_VALIDATE | sys::MAP_SYNC,
                    MapKind::Private => libc::MAP_PRIVATE,
                };
                match rw(&self.path(file))
                    .and_then(|f| Ok((sys::mmap(f.as_fd(), *offset, *len, flags)?, f)))
                {
                    Ok((m, f)) => {
                        self.maps.insert(map.clone(), Map { map: m, _file: f });
                        Observed::Ok
                    }
                    Err(e) => errno(&e),
                }
            }
            Op::Munmap { map } => match self.maps.remove(map) {
                Some(m) => done(sys::munmap(&m.map)),
                None => misuse(format!("no mapping {map:?}")),
            },
            Op::Msync { map } => match self.maps.get(map) {
                Some(m) => done(sys::msync(&m.map)),
                None => misuse(format!("no mapping {map:?}")),
            },
            Op::Store { map, offset, len, pattern } => match self.maps.get(map) {
                Some(m) => access(
                    sys::store(&m.map, *offset as usize, *len as usize, *pattern as u8),
                    *offset,
                ),
                None => misuse(format!("no mapping {map:?}")),
            },
            Op::Load { map, offset, len } => match self.maps.get(map) {
                Some(m) => access(sys::load(&m.map, *offset as usize, *len as usize), *offset),
                None => misuse(format!("no mapping {map:?}")),
            },
            Op::Fiemap { file, offset, len, save } => {
                let len = if *len == 0 { u64::MAX - offset } else { *len };
                match File::open(self.path(file)).and_then(|f| sys::fiemap(f.as_fd(), *offset, len))
                {
                    Ok(raw) => {
                        let extents: Vec<Extent> = raw
                            .into_iter()
                            .map(|(logical, physical, length, flags)| Extent {
                                logical,
                                physical,
                                length,
                                flags,
                            })
                            .collect();
                        if let Some(name) = save {
                            self.saved.insert(name.clone(), extents.clone());
                        }
                        let saved = match expect {
                            Expect::Extents { since, .. } => self.saved.get(since).cloned(),
                            _ => None,
                        };
                        Observed::Extents { extents, saved }
                    }
                    Err(e) => errno(&e),
                }
            }
            Op::Evict => {
                self.release_all();
                done(evict(&self.mnt))
            }
            Op::Remount => {
                self.release_all();
                match rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty()) {
                    Ok(()) => {
                        self.mounted = false;
                        match self.mount() {
                            Ok(()) => Observed::Ok,
                            Err(e) => misuse(e),
                        }
                    }
                    Err(e) => Observed::Errno(sys::errno_name(e.raw_os_error())),
                }
            }
            Op::Mkswap { file } => shell_observed(
                &format!("mkswap {} >/dev/null", self.path(file).display()),
                &self.mnt,
                0,
            ),
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
                let r = File::open(&self.mnt).and_then(|d| sys::freeze(d.as_fd(), true));
                self.frozen |= r.is_ok();
                done(r)
            }
            Op::Thaw => {
                let r = File::open(&self.mnt).and_then(|d| sys::freeze(d.as_fd(), false));
                self.frozen &= r.is_err();
                done(r)
            }
            Op::RaceToggleWrite { file, rounds } => {
                race::toggle_write(&self.path(file), *rounds, self.spec.seed)
            }
            Op::RaceStoreClone { map, file, rounds } => match self.maps.get(map) {
                Some(m) if !m.map.private => {
                    race::store_clone(&m.map, &self.mnt, file, *rounds, self.spec.seed)
                }
                Some(_) => {
                    misuse(format!("mapping {map:?} is private: the race needs a shared one"))
                }
                None => misuse(format!("no mapping {map:?}")),
            },
            Op::Sleep { millis } => {
                std::thread::sleep(Duration::from_millis(*millis));
                Observed::Ok
            }
            Op::Shell { command } => shell_observed(command, &self.mnt, -1),
        }
    }

    fn release_all(&mut self) {
        for (_, m) in self.maps.drain() {
            let _ = sys::munmap(&m.map);
        }
        self.handles.clear();
    }

    fn teardown(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.frozen {
            if let Err(e) = File::open(&self.mnt).and_then(|d| sys::freeze(d.as_fd(), false)) {
                problems.push(format!("thaw: {e}"));
            }
        }
        for p in std::mem::take(&mut self.swapped) {
            if let Err(e) = sys::swapoff(&p) {
                problems.push(format!("swapoff {}: {e}", p.display()));
            }
        }
        self.release_all();
        if self.mounted {
            let mut last = None;
            for _ in 0..20 {
                match rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty()) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(e) = last {
                let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
                problems.push(format!("umount {}: {e} (detached)", self.mnt.display()));
            }
            self.mounted = false;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn read_at(f: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; len as usize];
    let mut got = 0;
    while got < data.len() {
        match f.read_at(&mut data[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    data.truncate(got);
    Ok(data)
}

fn bytes(offset: u64, data: &[u8]) -> Observed {
    let (runs, truncated) = runs(offset, data);
    Observed::Bytes { runs, truncated }
}

fn access(r: std::io::Result<sys::Access>, offset: u64) -> Observed {
    match r {
        Ok(sys::Access::Signal(s)) => Observed::Signal(sys::signal_name(s)),
        Ok(sys::Access::Done(data)) if data.is_empty() => Observed::Ok,
        Ok(sys::Access::Done(data)) => bytes(offset, &data),
        Err(e) => errno(&e),
    }
}

fn falloc_flags(mode: FallocMode) -> libc::c_int {
    match mode {
        FallocMode::Default => 0,
        FallocMode::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
        FallocMode::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        FallocMode::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
        FallocMode::CollapseRange => libc::FALLOC_FL_COLLAPSE_RANGE,
        FallocMode::InsertRange => libc::FALLOC_FL_INSERT_RANGE,
        FallocMode::UnshareRange => libc::FALLOC_FL_UNSHARE_RANGE,
    }
}

/// syncfs, then drop clean caches, so that the next access looks the inode up again.
fn evict(mnt: &Path) -> std::io::Result<()> {
    let d = File::open(mnt)?;
    rustix::fs::syncfs(&d)?;
    std::fs::write("/proc/sys/vm/drop_caches", "2")
}

/// A shell command in the mount point; `expect_status` >= 0 turns a different status into an
/// error observation (for internal commands such as mkswap).
fn shell_observed(command: &str, cwd: &Path, expect_status: i32) -> Observed {
    match Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let status = out.status.code().unwrap_or(128);
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            output.truncate(4096);
            if expect_status >= 0 && status != expect_status {
                return misuse(format!("{command}: exit {status}: {}", output.trim()));
            }
            if expect_status >= 0 {
                Observed::Ok
            } else {
                Observed::Exit { status, output }
            }
        }
        Err(e) => misuse(format!("{command}: {e}")),
    }
}

/// The options column of /proc/mounts for the mount on `dir`.
fn mount_options(dir: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|f| f.len() > 3 && f[1] == dir)
        .map(|f| f[3].to_string())
}
