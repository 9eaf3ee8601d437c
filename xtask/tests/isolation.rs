//! A case's verdict depends on that case alone (xtask/tests/fixtures/isolation.toml, in its order
//! and reversed): what it leaves running fails it, by name, and is killed before the unmount, so
//! no later case inherits a busy device or a late warning; a changed sysctl gets the next case
//! a fresh VM. Kernel messages between two cases fail the run, naming where they came from, and
//! the case that ran on the warned kernel runs again on a fresh VM
//! (xtask/tests/fixtures/outside-cases.toml).

mod common;

use common::{results, run, text};

/// The fixture with its cases in reverse order, in a file of its own.
fn reversed(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::root().join("xtask/tests/fixtures/isolation.toml"))
        .unwrap();
    let mut parts: Vec<&str> = text.split("\n[[case]]").collect();
    let head = parts.remove(0);
    parts.reverse();
    let path = dir.join("isolation-reversed.toml");
    std::fs::write(&path, format!("{head}\n[[case]]{}", parts.join("\n[[case]]"))).unwrap();
    path
}

fn check_isolation(file: &str) {
    let out = run(&["test", file]);
    assert_eq!(out.status.code(), Some(1), "the two cases that leave processes fail");
    let results = results(&out);
    let cases = results["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for c in cases {
        let id = c["id"].as_str().unwrap();
        let message = c["message"].as_str().unwrap();
        if id.contains("/leaves-") {
            assert_eq!(c["status"], "fail", "{id}: {message}");
            assert!(message.starts_with("left "), "{id}: {message}");
            // The process by its command line: the shell's child, or the sleep it became,
            // depending on how far it got when the case ended.
            assert!(
                message.contains("sleep 300") || message.contains("sleep 2"),
                "{id}: {message}"
            );
            assert!(message.contains(" (pid "), "{id} names what it left: {message}");
            assert_eq!(c["problems"][0]["kind"], "left_behind", "{id}: {c}");
        } else {
            assert_eq!(c["status"], "pass", "{id}: {message}");
        }
    }
    assert_eq!(
        results["kernel_log_outside_cases"].as_array().unwrap().len(),
        0,
        "the late warning was never logged: its process died with its case"
    );
    // The run's mkfs image is kept beside the guest image for later runs (machine::mkfs_image).
    let line = results["kernels"][0]["qemu_command_lines"][0].as_str().unwrap();
    let initrd = line.split(' ').skip_while(|w| *w != "-initrd").nth(1).unwrap();
    let kept = std::path::Path::new(initrd).with_file_name("mkfs");
    let names: Vec<String> = std::fs::read_dir(&kept)
        .unwrap_or_else(|e| panic!("{}: {e}", kept.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("xfs-") && n.ends_with(".img")), "{names:?}");
    let console = text(&out.stderr);
    assert!(
        console.contains(
            "left the guest in doubt: sysctl vm.dirty_expire_centisecs changed from \"3000\" to \
             \"1234\")"
        ),
        "the case after the sysctl change runs on a fresh VM:\n{console}"
    );
}

#[test]
fn what_a_case_leaves_behind_fails_it_and_no_other_in_file_order() {
    check_isolation("xtask/tests/fixtures/isolation.toml");
}

#[test]
fn what_a_case_leaves_behind_fails_it_and_no_other_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    check_isolation(reversed(dir.path()).to_str().unwrap());
}

#[test]
fn a_warning_between_two_cases_fails_the_run_and_the_next_case_runs_again() {
    let out = run(&["test", "xtask/tests/fixtures/outside-cases.toml"]);
    assert_eq!(out.status.code(), Some(1), "a warning outside every case fails the run");
    let results = results(&out);
    for c in results["cases"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c}");
    }
    let outside = results["kernel_log_outside_cases"].as_array().unwrap();
    assert_eq!(outside.len(), 1, "{outside:?}");
    assert_eq!(
        outside[0]["place"],
        "between outside/escapes-and-warns-between-cases/xfs/dax=always and \
         outside/next/xfs/dax=always (VM 1)"
    );
    assert!(
        outside[0]["bad"][0].as_str().unwrap().contains("WARNING: CPU: 0 PID: 1 at a warning"),
        "{outside:?}"
    );
    let console = text(&out.stderr);
    assert!(
        console.contains(
            "(the kernel logged a failure before outside/next/xfs/dax=always began; the case \
             runs again)"
        ),
        "{console}"
    );
    let junit = std::fs::read_to_string(common::run_dir(&out).join("junit.xml")).unwrap();
    assert!(junit.contains("kernel-log/between outside/escapes"), "{junit}");
}
