//! What must not outlive xtask: QEMU processes, VM directories with their backing files, and a
//! terminal left in raw mode. Drop guards handle normal exits and errors; the Ctrl-C/SIGTERM
//! handler installed here handles signals; PR_SET_PDEATHSIG (see `qemu`) handles SIGKILL of xtask.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static TERMINAL: Mutex<Option<rustix::termios::Termios>> = Mutex::new(None);

/// On SIGINT, SIGTERM or SIGHUP: kill every QEMU, remove every VM directory, restore the
/// terminal, exit 130.
pub fn install_signal_handler() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        clean_all();
        eprintln!("\ndaxtest: interrupted; VMs stopped and their files removed");
        std::process::exit(130);
    })?;
    Ok(())
}

pub fn clean_all() {
    for pid in PIDS.lock().map(|p| p.clone()).unwrap_or_default() {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    for dir in DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
        let _ = std::fs::remove_dir_all(dir);
    }
    restore_terminal();
}

pub fn register_pid(pid: u32) {
    PIDS.lock().unwrap().push(pid as i32);
}

pub fn unregister_pid(pid: u32) {
    PIDS.lock().unwrap().retain(|p| *p != pid as i32);
}

pub fn register_dir(dir: &Path) {
    DIRS.lock().unwrap().push(dir.to_path_buf());
}

pub fn unregister_dir(dir: &Path) {
    DIRS.lock().unwrap().retain(|d| d != dir);
}

/// Remembers the terminal settings to restore, before switching to raw mode.
pub fn save_terminal(t: rustix::termios::Termios) {
    *TERMINAL.lock().unwrap() = Some(t);
}

pub fn restore_terminal() {
    if let Some(t) = TERMINAL.lock().ok().and_then(|mut t| t.take()) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &t,
        );
    }
}
