//! Real guest faults (xtask/tests/fixtures/faults.toml): a panic, a step that never returns, a
//! write to a frozen filesystem, a kernel warning, a guest that powers itself off and one whose
//! sshd stops answering, between healthy cases. Each is reported as what it is, with the kernel's own text, every case after
//! it still runs and passes, and nothing is left behind.

mod common;

use common::{results, root, run, run_dir};

/// QEMUs of this checkout's runs: other checkouts on the machine may boot VMs meanwhile.
fn qemu_count() -> usize {
    common::qemu_vm_dirs().len()
}

#[test]
fn every_fault_is_reported_as_what_it_is_and_the_run_goes_on() {
    let since = started();
    let qemus_before = qemu_count();
    let out = run(&["test", "xtask/tests/fixtures/faults.toml"]);
    assert_eq!(out.status.code(), Some(1), "failed, crashed and hung cases exit 1");

    let run = run_dir(&out);
    let results = results(&out);
    let cases = results["cases"].as_array().unwrap();
    let case = |name: &str| {
        let id = format!("faults/{name}/xfs/dax=always");
        cases.iter().find(|c| c["id"] == id.as_str()).unwrap_or_else(|| panic!("no {id}"))
    };
    let log = |name: &str| {
        std::fs::read_to_string(run.join(case(name)["kernel_log_path"].as_str().unwrap())).unwrap()
    };
    let message = |name: &str| case(name)["message"].as_str().unwrap().to_string();

    for healthy in ["healthy-1", "healthy-2", "healthy-3"] {
        assert_eq!(case(healthy)["status"], "pass", "{healthy}: {}", message(healthy));
    }

    assert_eq!(case("panic")["status"], "crash");
    assert!(message("panic").contains("Kernel panic - not syncing: sysrq triggered crash"));
    assert!(log("panic").contains("sysrq_handle_crash"), "the back-trace is kept");

    assert_eq!(case("never-returns")["status"], "hang");
    assert_eq!(
        message("never-returns"),
        "step 2 (line 40, sleep) did not return within 5 s (the step timeout)"
    );
    let dump = log("never-returns");
    assert!(dump.contains("sysrq: Show Blocked State"), "sysrq w ran:\n{dump}");
    assert!(dump.contains("sysrq: Show backtrace of all active CPUs"), "sysrq l ran:\n{dump}");

    // The kernel's detector (hung_task_s = 10 in the recipe) names the task before the step
    // timeout (120 s here) would.
    assert_eq!(case("frozen-write")["status"], "hang");
    let m = message("frozen-write");
    assert!(m.starts_with("the kernel reported a hang in step 3 (line 50, write): "), "{m}");
    assert!(m.contains("INFO: task daxtest-agent:"), "{m}");
    assert!(m.contains("blocked for more than 10 seconds"), "{m}");
    let dump = log("frozen-write");
    assert!(dump.contains("percpu_rwsem") || dump.contains("sb_start_write"), "{dump}");

    assert_eq!(case("warning")["status"], "fail");
    assert!(message("warning").contains("WARNING: CPU: 0 PID: 1 at fs/dax.c:1 injected by daxtest"));

    assert_eq!(case("vanishes")["status"], "error");
    assert!(message("vanishes").starts_with("lost the guest: step 1 (line 63, shell)"));
    assert!(message("vanishes").contains("QEMU: exited"));

    // Nothing answers over SSH: the dumps come from the console, by keyboard.
    assert_eq!(case("sshd-stopped")["status"], "hang");
    let dump = log("sshd-stopped");
    assert!(dump.contains("sysrq: Show Blocked State"), "{dump}");
    assert!(dump.contains("--- sysrq w and l by keyboard; last serial lines ---"), "{dump}");

    // A VM per fault that ends one: the first, then after the panic, the two hangs, the
    // power-off and the silent sshd.
    for i in 1..=6 {
        assert!(run.join(format!("serial-{i}.log")).exists(), "serial-{i}.log");
    }
    assert_eq!(qemu_count(), qemus_before, "no QEMU is left running");
    let leftovers: Vec<_> = daxtest::paths::tmp_roots(&root())
        .iter()
        .filter_map(|t| std::fs::read_dir(t).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .collect();
    let mine: Vec<_> = leftovers
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.modified().unwrap() > since))
        .collect();
    assert!(mine.is_empty(), "VM directories left behind: {mine:?}");
}

fn started() -> std::time::SystemTime {
    static START: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::SystemTime::now)
}
