//! Runs side by side on one machine: an exclusive lock around filling the cache (kernel trees,
//! images), and the sweep of what a killed run left behind. Everything else a run uses is its
//! own: a port picked and bound by QEMU (retried if taken), a private VM directory, a run
//! directory named by time and pid.

use anyhow::Context;
use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::path::Path;

/// Held while the cache is being filled; released when dropped (or when the process dies).
pub struct CacheLock(#[allow(dead_code)] File);

impl CacheLock {
    pub fn acquire(cache: &Path) -> anyhow::Result<CacheLock> {
        std::fs::create_dir_all(cache)?;
        let path = cache.join(".lock");
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            eprintln!("daxtest: another daxtest run is preparing the cache; waiting for it");
            flock(&f, FlockOperation::LockExclusive)
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(CacheLock(f))
    }
}

/// A process with this id exists (it may be another program if ids were reused: then the
/// directory is only kept longer, never removed under a live run).
fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// The owner's pid of `name`: `<prefix>...-<pid>` or, for VM directories, the `pid` file inside.
fn owner(dir: &Path) -> Option<u32> {
    if let Ok(text) = std::fs::read_to_string(dir.join("pid")) {
        return text.trim().parse().ok();
    }
    let name = dir.file_name()?.to_string_lossy().into_owned();
    name.rsplit('-').next()?.parse().ok()
}

/// Removes the entries of `dir` whose names start with one of `prefixes` and whose owning
/// process is gone. Returns what was removed.
pub fn sweep(dir: &Path, prefixes: &[&str]) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = e.path();
        match owner(&path) {
            Some(pid) if pid == std::process::id() || alive(pid) => continue,
            // A VM directory without its pid file yet is being created right now.
            None if path.is_dir() && name.starts_with("vm-") => continue,
            _ => {}
        }
        let r = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if r.is_ok() {
            removed.push(path.display().to_string());
        }
    }
    removed
}

/// Sweeps everything a killed run can leave: VM directories (backing files, sockets), and
/// half-built cache entries.
pub fn sweep_stale(root: &Path) {
    let d = root.join("target/daxtest");
    let mut removed: Vec<String> =
        crate::paths::tmp_roots(root).iter().flat_map(|t| sweep(t, &["vm-"])).collect();
    removed.extend(sweep(&d.join("cache/images"), &[".tmp-", ".old-"]));
    removed.extend(sweep(&d.join("cache/kernels"), &[".tmp-"]));
    removed.extend(sweep(&d.join("cache"), &["kvm-probe-"]));
    for r in removed {
        eprintln!("daxtest: removed {r}, left by a run that is gone");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_dead_runs_left_is_swept() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // pid_max is at most 2^22: this one cannot exist.
        let dead = 5_000_000;
        for n in [format!(".tmp-abc-{me}"), format!(".tmp-abc-{dead}"), "keep".into()] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        for (n, pid) in [("vm-live", Some(me)), ("vm-dead", Some(dead)), ("vm-new", None)] {
            std::fs::create_dir(d.path().join(n)).unwrap();
            if let Some(pid) = pid {
                std::fs::write(d.path().join(n).join("pid"), pid.to_string()).unwrap();
            }
        }
        // The KVM probe's directories: tempfile's random part, then the pid.
        for n in [format!("kvm-probe-x9Yz-{me}"), format!("kvm-probe-x9Yz-{dead}")] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let mut removed = sweep(d.path(), &[".tmp-", "vm-", "kvm-probe-"]);
        removed.sort();
        let dp = d.path().display();
        assert_eq!(
            removed,
            [
                format!("{dp}/.tmp-abc-{dead}"),
                format!("{dp}/kvm-probe-x9Yz-{dead}"),
                format!("{dp}/vm-dead")
            ]
        );
    }
}
