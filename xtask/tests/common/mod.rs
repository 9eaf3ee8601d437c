//! What the end-to-end tests share: the project root, running the xtask binary there, and the
//! run directory a `test` run names on its last console line.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The xtask binary, to run in the project root.
pub fn xtask(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args).current_dir(root());
    c
}

/// Runs xtask with no stdin and logs what it printed (shown when a test fails).
pub fn run(args: &[&str]) -> Output {
    let out = xtask(args).stdin(Stdio::null()).output().unwrap();
    eprintln!(
        "xtask {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run directory of a `test` run, from its `results: DIR` line.
pub fn run_dir(out: &Output) -> PathBuf {
    let stderr = text(&out.stderr);
    let dir = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("results: "))
        .expect("the console names the run directory");
    PathBuf::from(dir.trim())
}

/// The run's results.json.
pub fn results(out: &Output) -> serde_json::Value {
    let path = run_dir(out).join("results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// VM directories of running QEMU processes started from this checkout.
pub fn qemu_vm_dirs() -> Vec<PathBuf> {
    let tmps = daxtest::paths::tmp_roots(&root());
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(text).collect();
        if !args.first().is_some_and(|a| a.ends_with("qemu-system-x86_64")) {
            continue;
        }
        for a in &args {
            if let Some(rest) = a.strip_prefix("file,id=serial0,path=") {
                let dir = Path::new(rest).parent().unwrap().to_path_buf();
                if tmps.iter().any(|t| dir.starts_with(t)) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}
