//! What one case leaves behind must not fail, or pass, another. Every process a case starts runs
//! in a cgroup of its own ([`Unit`]), which the agent empties at the end of the case: what was
//! still running is named and killed. The guest state a case could change beyond its filesystem
//! (mounts, sysctls) is compared with how it was before ([`Baseline`]); a difference makes the
//! host boot a fresh VM before the next case.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const CASE: &str = "/sys/fs/cgroup/daxtest-case";
/// Where the processes of steps that leave them running on purpose go.
const BACKGROUND: &str = "/sys/fs/cgroup/daxtest-case/background";

/// The case's cgroup, which the agent itself joins so that everything it starts is inside.
pub struct Unit;

/// What the sweep at the end of a case found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Processes still running that no step asked for, as `command line (pid N)`.
    pub left_behind: Vec<String>,
    /// Processes that did not die: the guest is not in a known state.
    pub error: Option<String>,
}

impl Unit {
    /// Makes the case's cgroup, once per boot (making and removing one costs milliseconds under
    /// TCG), empties it of anything a lost case left, and moves the agent into it.
    pub fn enter() -> Result<Unit, String> {
        if !Path::new(BACKGROUND).exists() {
            std::fs::create_dir_all(BACKGROUND).map_err(|e| format!("mkdir {BACKGROUND}: {e}"))?;
        } else if populated(Path::new(CASE)) {
            if let Some(e) = kill_all(Path::new(CASE)).error {
                return Err(format!("a previous case's processes would not die: {e}"));
            }
        }
        join(Path::new(CASE))?;
        Ok(Unit)
    }

    /// `cgroup.procs` of the cgroup for steps that leave processes running on purpose.
    pub fn background_procs(&self) -> PathBuf {
        Path::new(BACKGROUND).join("cgroup.procs")
    }

    /// Leaves the cgroup, names what is still running in it and kills it all.
    pub fn sweep(&self) -> Sweep {
        if let Err(e) = join(Path::new(ROOT)) {
            return Sweep { error: Some(e), ..Sweep::default() };
        }
        kill_all(Path::new(CASE))
    }
}

fn join(cgroup: &Path) -> Result<(), String> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("joining {}: {e}", procs.display()))
}

/// Names the processes of `cgroup` (not of its `background` child), kills them all with
/// cgroup.kill and waits until the cgroup is empty.
fn kill_all(cgroup: &Path) -> Sweep {
    let background = cgroup.join("background");
    if !populated(cgroup) {
        return Sweep::default();
    }
    // Frozen, so that what is named is what gets killed. A process caught inside execve has no
    // command line yet (busybox's applets re-exec /proc/self/exe, and showed as "exe" or "sh"
    // under load), and the freezer may hold it there: the cgroup is thawed for a moment to let
    // it finish, up to 3 s, spent only by a case that left such a process behind.
    // The names are read once, frozen, and judged as read: a task inside execve runs on in the
    // kernel while its cgroup freezes, so a check before naming could pass and the name then
    // come out empty (CI saw "sh").
    let deadline = Instant::now() + Duration::from_secs(3);
    let (frozen, left_behind) = loop {
        let frozen = freeze(cgroup, true);
        let procs: Vec<(u32, String)> = pids(cgroup).into_iter().map(|p| (p, cmdline(p))).collect();
        if procs.iter().all(|(_, c)| !c.is_empty()) || !frozen || Instant::now() > deadline {
            break (frozen, procs.into_iter().map(|(pid, c)| shown(pid, c)).collect());
        }
        freeze(cgroup, false);
        std::thread::sleep(Duration::from_millis(5));
    };
    // The background cgroup's processes were started to be left running: not named.
    let mut sweep = Sweep { left_behind, error: None };
    let kill = std::fs::write(cgroup.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while populated(cgroup) {
        if Instant::now() > deadline {
            let mut still = members(cgroup);
            still.extend(members(&background));
            sweep.error = Some(format!(
                "still running 5 s after cgroup.kill ({}): {}",
                match &kill {
                    Ok(()) => "written".to_string(),
                    Err(e) => format!("failed: {e}"),
                },
                still.join(", ")
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Thawed for the next case, which runs in the same cgroup.
    if frozen {
        freeze(cgroup, false);
    }
    sweep
}

/// Freezes (or thaws) `cgroup` and waits up to 1 s for it to say so (a task blocked in the
/// kernel freezes only when it returns). Whether the freeze was asked for.
fn freeze(cgroup: &Path, on: bool) -> bool {
    if std::fs::write(cgroup.join("cgroup.freeze"), if on { "1" } else { "0" }).is_err() {
        return false;
    }
    let want = if on { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// The processes in a cgroup (not its children), as `command line (pid N)`.
fn members(cgroup: &Path) -> Vec<String> {
    pids(cgroup).into_iter().map(|pid| shown(pid, cmdline(pid))).collect()
}

/// A process as `command line (pid N)`, shortened; its name when the command line is empty (a
/// process being killed, or one inside execve).
fn shown(pid: u32, cmdline: String) -> String {
    let mut shown = cmdline;
    if shown.is_empty() {
        shown = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "?".into());
    }
    if shown.chars().count() > 80 {
        shown = shown.chars().take(77).collect::<String>() + "...";
    }
    format!("{shown} (pid {pid})")
}

/// The processes in a cgroup (not its children).
fn pids(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|procs| procs.lines().filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// A process's command line, its arguments joined by spaces; empty for one that has none (in
/// the middle of an exec, or a zombie).
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn populated(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// The guest state a case must give back: mounts and sysctls.
pub struct Baseline {
    mounts: Vec<String>,
    sysctls: Vec<(String, String)>,
}

/// Sysctls that change by themselves (counters, the last pid) or are checked otherwise (taint).
const VOLATILE_SYSCTLS: &[&str] = &[
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/kernel/tainted",
    "/proc/sys/kernel/random/",
    "/proc/sys/fs/dentry-state",
    "/proc/sys/fs/inode-nr",
    "/proc/sys/fs/inode-state",
    "/proc/sys/fs/file-nr",
    "/proc/sys/kernel/hung_task_detect_count",
];

impl Baseline {
    /// The mounts, and the sysctls when the case can change them: only a shell step can (no
    /// other operation writes a sysctl), and reading them all costs about 0.2 s under TCG.
    pub fn take(with_sysctls: bool) -> Baseline {
        Baseline { mounts: mounts(), sysctls: if with_sysctls { sysctls() } else { Vec::new() } }
    }

    /// What differs now, one line each.
    pub fn changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let now = mounts();
        for m in now.iter().filter(|m| !self.mounts.contains(m)) {
            out.push(format!("a mount the case left: {m}"));
        }
        for m in self.mounts.iter().filter(|m| !now.contains(m)) {
            out.push(format!("a mount the case removed: {m}"));
        }
        let now = if self.sysctls.is_empty() { Vec::new() } else { sysctls() };
        for (path, before) in &self.sysctls {
            match now.iter().find(|(p, _)| p == path) {
                Some((_, after)) if after != before => out.push(format!(
                    "sysctl {} changed from {before:?} to {after:?}",
                    path.trim_start_matches("/proc/sys/").replace('/', ".")
                )),
                _ => {}
            }
        }
        out
    }
}

fn mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Every sysctl that root can read and write under the parts a DAX case could touch.
fn sysctls() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["/proc/sys/vm", "/proc/sys/fs", "/proc/sys/kernel"] {
        collect(Path::new(dir), &mut out);
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let shown = path.to_string_lossy().into_owned();
        if VOLATILE_SYSCTLS.iter().any(|v| shown.starts_with(v)) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            collect(&path, out);
        } else if meta.permissions().mode() & 0o600 == 0o600 {
            if let Ok(value) = std::fs::read_to_string(&path) {
                out.push((shown, value.trim().to_string()));
            }
        }
    }
}
