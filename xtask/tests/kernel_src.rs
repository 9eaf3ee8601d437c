//! `cargo xtask kernel --src DIR` refuses what is not a kernel source tree with exit status 2 and
//! a message naming what is missing, before it installs, configures or builds anything. (A whole
//! build takes about an hour on 2 cores, too long for this suite: README.md, "Reproducing a kernel
//! bug", has its measured times.)

mod common;

use std::time::{Duration, Instant};

/// Exit status for usage or input errors (xtask/src/exit.rs).
const INPUT: i32 = 2;

/// Runs `cargo xtask kernel ARGS`; it must be refused quickly, with exit status 2 and `want` on
/// stderr, having run nothing (no apt-get, no make).
fn refused(args: &[&str], want: &str) {
    let start = Instant::now();
    let out = common::run(&[&["kernel"], args].concat());
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(INPUT), "{stderr}");
    assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
    for ran in ["$ apt-get", "$ make", "$ cp "] {
        assert!(!stderr.contains(ran), "ran {ran:?} on bad input:\n{stderr}");
    }
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

#[test]
fn a_directory_that_is_not_a_kernel_tree_is_refused_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Makefile"), "all:\n\ttrue\n").unwrap();
    let d = dir.path().to_string_lossy();
    refused(
        &["--src", &d],
        &format!(
            "error: --src {d}: not a kernel source tree (no arch/x86, no \
             scripts/kconfig/merge_config.sh): give the top of a Linux source checkout"
        ),
    );
    refused(
        &["--src", "/nonexistent/linux"],
        "error: --src /nonexistent/linux: no such directory (give the top of a Linux source \
         checkout, e.g. ~/linux)",
    );
}

#[test]
fn keep_without_a_config_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("arch/x86")).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/kconfig")).unwrap();
    std::fs::write(dir.path().join("scripts/kconfig/merge_config.sh"), "").unwrap();
    std::fs::write(dir.path().join("Makefile"), "").unwrap();
    let d = dir.path().to_string_lossy();
    refused(
        &["--src", &d, "--config", "keep"],
        "--config keep: the tree has no .config; use --config minimal or --config debian",
    );
    refused(&["--src", &d, "--jobs", "0"], "error: invalid value '0' for '--jobs <N>'");
    refused(&["--src", &d, "--config", "tiny"], "[possible values: minimal, debian, keep]");
    refused(&[], "--src <DIR>");
}
