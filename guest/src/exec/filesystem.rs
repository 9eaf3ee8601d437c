//! The filesystem as a whole: set-up (mkfs, mount), verifying that DAX is as the mount asks,
//! unmount, eviction, freezing, swap, and shell steps.

use super::{sys, Executor};
use daxtest_proto::case::{CaseSpec, Fs, Observed, RecordCheck, Records, RECORD};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

impl Executor<'_> {
    /// mkfs (or, when the host already wrote mkfs's blocks onto the device, dropping the
    /// device's cached blocks) and mount. Returns the mount's options.
    pub(super) fn setup(&mut self, clock: &mut super::Clock) -> Result<String, String> {
        let s = self.spec;
        if s.formatted {
            // What the last case's filesystem left in the block device's page cache (ext4's
            // metadata) is not what the device holds now.
            sys::flush_buffers(Path::new(&s.device))
                .map_err(|e| format!("flushing {}'s buffers: {e}", s.device))?;
            clock.lap("flush-buffers");
        } else {
            mkfs(s)?;
            clock.lap("mkfs");
        }
        self.mount_point()?;
        self.mount()?;
        clock.lap("mount");
        Ok(mount_options(&self.mnt).unwrap_or_default())
    }

    pub(super) fn mount_point(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.mnt).map_err(|e| format!("mkdir {}: {e}", self.mnt.display()))
    }

    /// The power_cut step, in the VM booted after the cut: the filesystem the cut left is
    /// mounted (the kernel replays its log), unmounted, checked (`xfs_repair -n` refuses a dirty
    /// log, so the check comes after the recovery mount: it sees what recovery made), and mounted
    /// again, DAX as the options ask. A mount the kernel refuses is its errno.
    pub(super) fn recover(&mut self) -> Observed {
        if let Err(e) = self.mount_raw() {
            return Observed::Errno(sys::errno_name(e.raw_os_error()));
        }
        let mut problems = Vec::new();
        if let Some(e) = self.unmount() {
            return Observed::Error(format!("after the recovery mount: {e}"));
        }
        problems.extend(fsck(self.spec));
        if let Err(e) = self.mount() {
            problems.push(format!("the mount after the check: {e}"));
            return Observed::Recovered { problems, records: None };
        }
        let options = mount_options(&self.mnt).unwrap_or_default();
        if let Err(e) = self.verify_dax_state(&options) {
            problems.push(format!("DAX state after the recovery: {e}"));
        }
        let records = match &self.spec.records {
            Some(check) => match lost_records(&self.path(&check.file), check) {
                Ok(lost) => Some(Records { completed: check.completed, lost }),
                Err(e) => return Observed::Error(format!("reading the records back: {e}")),
            },
            None => None,
        };
        Observed::Recovered { problems, records }
    }

    pub(super) fn mount(&mut self) -> Result<(), String> {
        let s = self.spec;
        self.mount_raw().map_err(|e| {
            let ro = if self.read_only { "-r " } else { "" };
            format!("mount {ro}-t {} -o {} {}: {e}", s.fs, s.mount_options, s.device)
        })
    }

    fn mount_raw(&mut self) -> rustix::io::Result<()> {
        let s = self.spec;
        // A NUL byte would end the options early: refused as the kernel refuses bad options.
        let data = std::ffi::CString::new(s.mount_options.clone())
            .map_err(|_| rustix::io::Errno::INVAL)?;
        let flags = match self.read_only {
            true => rustix::mount::MountFlags::RDONLY,
            false => rustix::mount::MountFlags::empty(),
        };
        rustix::mount::mount(
            s.device.as_str(),
            &self.mnt,
            s.fs.name(),
            flags,
            Some(data.as_c_str()),
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts at the end of the case, retrying for a second (a process being killed may
    /// still hold the filesystem); what would not unmount is detached and reported.
    pub(super) fn unmount(&mut self) -> Option<String> {
        if !self.mounted {
            return None;
        }
        self.mounted = false;
        let mut last = None;
        for _ in 0..20 {
            match rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty()) {
                Ok(()) => return None,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
        last.map(|e| format!("umount {}: {e} (detached)", self.mnt.display()))
    }

    /// dax=always: a new file must have STATX_ATTR_DAX. dax=inode: a new file given the flag
    /// must have it. dax=never: the mount must say so. Anything else means the case would run
    /// without the DAX it is about (a raw namespace makes XFS silently turn DAX off).
    /// Whether DAX is as the mount's options ask, on a probe file; how not.
    pub(super) fn verify_dax_state(&self, options: &str) -> Result<(), String> {
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
}

/// The case's mkfs on its device. The device's cached blocks are dropped before (what the page
/// cache holds of an earlier filesystem is not read into this one) and after it (all it wrote
/// is on the device: the host may copy it from the backing file).
pub fn mkfs(s: &CaseSpec) -> Result<(), String> {
    let device = Path::new(&s.device);
    let flush =
        || sys::flush_buffers(device).map_err(|e| format!("flushing {}'s buffers: {e}", s.device));
    flush()?;
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
    flush()
}

/// How many of the records a store_loop completed are not in the file: record i holds i + 1
/// (little-endian) at `offset + i * RECORD`; a file that ends before it lost it.
fn lost_records(path: &Path, check: &RecordCheck) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let mut buf = vec![0u8; check.completed as usize * RECORD];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], check.offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok((0..check.completed as usize)
        .filter(|&i| {
            let at = i * RECORD;
            at + 8 > got || buf[at..at + 8] != (i as u64 + 1).to_le_bytes()
        })
        .count() as u64)
}

/// The filesystem checker's verdict on the unmounted device: `xfs_repair -n` or `e2fsck -fn`
/// (change nothing); what it reports when it finds something.
pub fn fsck(spec: &CaseSpec) -> Option<String> {
    let mut cmd = match spec.fs {
        Fs::Xfs => Command::new("xfs_repair"),
        Fs::Ext4 => Command::new("e2fsck"),
    };
    // -P: no prefetching of inode and directory blocks (the same checks, in one thread: 0.36 s
    // against 0.53 s under TCG on a small reflinked filesystem, medians of 5 paired runs).
    let args: &[&str] = if spec.fs == Fs::Xfs { &["-n", "-P"] } else { &["-f", "-n"] };
    let name = if spec.fs == Fs::Xfs { "xfs_repair -n -P" } else { "e2fsck -fn" };
    match cmd.args(args).arg(&spec.device).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
            said.push_str(&String::from_utf8_lossy(&out.stderr));
            let found: Vec<&str> = said
                .lines()
                .filter(|l| {
                    !l.trim().is_empty()
                        && !l.starts_with("Phase ")
                        && !l.trim_start().starts_with("- ")
                })
                .take(5)
                .collect();
            Some(format!("{name} {}: {}: {}", spec.device, out.status, found.join(" | ")))
        }
        Err(e) => Some(format!("{name}: {e}")),
    }
}

/// The filesystem's own counter of metadata made durable, as (what it counts, its value now):
/// XFS's log forces (/sys/fs/xfs/DEV/stats/stats, the fourth number of its `log` line:
/// xs_log_force, fs/xfs/xfs_stats.c, counted by xfs_log_force and xfs_log_force_seq), ext4's
/// journal commits (/proc/fs/jbd2/DEV-INO/info, its first number: the transactions jbd2 has
/// committed).
pub fn metadata_counter(fs: Fs, device: &str) -> Result<(&'static str, u64), String> {
    let dev = Path::new(device).file_name().map(|d| d.to_string_lossy().into_owned());
    let dev = dev.ok_or_else(|| format!("no device name in {device:?}"))?;
    match fs {
        Fs::Xfs => {
            let path = format!("/sys/fs/xfs/{dev}/stats/stats");
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            xfs_log_forces(&text)
                .map(|n| ("xfs log forces", n))
                .ok_or_else(|| format!("{path}: no `log` line with five numbers"))
        }
        Fs::Ext4 => {
            let dir =
                std::fs::read_dir("/proc/fs/jbd2").map_err(|e| format!("/proc/fs/jbd2: {e}"))?;
            let journal = dir
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().starts_with(&format!("{dev}-")))
                .ok_or_else(|| format!("/proc/fs/jbd2 has no journal of {dev}"))?;
            let path = journal.path().join("info");
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            jbd2_transactions(&text)
                .map(|n| ("jbd2 commits", n))
                .ok_or_else(|| format!("{}: no `N transactions` line", path.display()))
        }
    }
}

/// xs_log_force from XFS's stats: `log writes blocks noiclogs force force_sleep`.
fn xfs_log_forces(stats: &str) -> Option<u64> {
    let line = stats.lines().find(|l| l.starts_with("log "))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// The first line of jbd2's info: `N transactions (M requested), each up to B blocks`.
fn jbd2_transactions(info: &str) -> Option<u64> {
    let first = info.lines().next()?;
    let (n, rest) = first.split_once(' ')?;
    rest.starts_with("transactions").then_some(())?;
    n.parse().ok()
}

/// syncfs, then drop clean caches, so that the next access looks the inode up again.
pub fn evict(mnt: &Path) -> std::io::Result<()> {
    let d = File::open(mnt)?;
    rustix::fs::syncfs(&d)?;
    std::fs::write("/proc/sys/vm/drop_caches", "2")
}

pub fn freeze(mnt: &Path, on: bool) -> std::io::Result<()> {
    File::open(mnt).and_then(|d| sys::freeze(d.as_fd(), on))
}

pub fn mkswap(file: &Path, cwd: &Path) -> Observed {
    match run_sh(&format!("mkswap {} >/dev/null", file.display()), cwd, None) {
        Ok((0, _)) => Observed::Ok,
        Ok((status, output)) => {
            Observed::Error(format!("mkswap: exit {status}: {}", output.trim()))
        }
        Err(e) => Observed::Error(format!("mkswap: {e}")),
    }
}

/// A shell step in the mount point; `cgroup_procs` puts it in the cgroup for processes that are
/// left running on purpose.
pub fn shell(command: &str, cwd: &Path, cgroup_procs: Option<&Path>) -> Observed {
    match run_sh(command, cwd, cgroup_procs) {
        Ok((status, output)) => Observed::Exit { status, output },
        Err(e) => Observed::Error(format!("{command}: {e}")),
    }
}

/// An `exec` step: the program itself, no shell; killed by a signal is observed as that signal.
pub fn exec(program: &Path, args: &[String], cwd: &Path) -> Observed {
    let mut cmd = Command::new(program);
    cmd.args(args);
    match run(cmd, cwd, None) {
        Ok((status, _)) if status.signal().is_some() => {
            Observed::signal(&sys::signal_name(status.signal().unwrap_or_default()))
        }
        Ok((status, output)) => Observed::Exit { status: status.code().unwrap_or(128), output },
        Err(e) => Observed::Error(format!("{}: {e}", program.display())),
    }
}

/// `/bin/sh -c` with its status and its output (stdout then stderr, at most 4 KiB).
fn run_sh(
    command: &str,
    cwd: &Path,
    cgroup_procs: Option<&Path>,
) -> std::io::Result<(i32, String)> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    let (status, output) = run(cmd, cwd, cgroup_procs)?;
    Ok((status.code().unwrap_or(128), output))
}

/// Runs `cmd` in `cwd` (in the case's cgroup when given) to its exit; its status and its output
/// (stdout then stderr, at most 4 KiB). A process it leaves in the background holds the pipes
/// open, so the output is read from files once `cmd` itself has exited.
fn run(
    mut cmd: Command,
    cwd: &Path,
    cgroup_procs: Option<&Path>,
) -> std::io::Result<(std::process::ExitStatus, String)> {
    let dir = tempfile_dir()?;
    let (out_path, err_path) = (dir.join("out"), dir.join("err"));
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    if let Some(procs) = cgroup_procs {
        sys::spawn_into_cgroup(&mut cmd, procs)?;
    }
    let status = cmd.status()?;
    let mut output = std::fs::read_to_string(&out_path).unwrap_or_default();
    output.push_str(&std::fs::read_to_string(&err_path).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
    output.truncate(4096);
    Ok((status, output))
}

/// A private directory under /run for one shell step's output.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let dir = Path::new("/run/daxtest").join(format!("sh-{}-{}", std::process::id(), t.tv_nsec));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_counters_are_read_from_the_filesystems_own_files() {
        let stats = "extent_alloc 2 16 2 16\nlog 37 296 0 12 3\npush_ail 40 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(xfs_log_forces(stats), Some(12));
        assert_eq!(xfs_log_forces("logx 1 2 3 4 5\n"), None);
        let info = "5 transactions (3 requested), each up to 8192 blocks\naverage: \n";
        assert_eq!(jbd2_transactions(info), Some(5));
        assert_eq!(jbd2_transactions("garbage\n"), None);
    }
}
