//! `cargo xtask test --bisect`: exit statuses for `git bisect run`, against real boots. A case
//! that holds since 6.2 is good on Debian's 6.12 (0) and bad on its 6.1 (1); a kernel that cannot
//! boot, or lacks options daxtest needs, cannot be tested (125); a bad scenario stops the
//! bisection (255), and so does a case with no expectation for the kernel under test.

mod common;

use common::{root, run as xtask};
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURE: &str = "xtask/tests/fixtures/bisect.toml";

/// An install root (boot/, lib/modules/) made of Debian's 6.12 package, hard-linked.
fn install_root(dir: &Path) -> PathBuf {
    assert!(xtask(&["image"]).status.success());
    let kernels = root().join("target/daxtest/cache/kernels");
    let pkg = std::fs::read_dir(&kernels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("linux-image-6.12"))
        .expect("the 6.12 package is unpacked");
    let dest = dir.join("kroot");
    std::fs::create_dir(&dest).unwrap();
    for sub in ["boot", "lib"] {
        let ok = Command::new("cp")
            .args(["-al", &pkg.join("root").join(sub).to_string_lossy(), &dest.to_string_lossy()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    dest
}

/// The single file under `dir/boot` whose name starts with `prefix`.
fn boot_file(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap()
}

#[test]
fn good_is_0_and_bad_is_1() {
    let good = xtask(&["test", "--bisect", "--kernel", "debian:6.12", FIXTURE]);
    assert_eq!(good.status.code(), Some(0));
    let bad = xtask(&["test", "--bisect", "--kernel", "debian:6.1", FIXTURE]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected success, got error EINVAL"));
}

#[test]
fn a_kernel_that_cannot_be_tested_is_125() {
    let tmp = tempfile::tempdir().unwrap();
    let kroot = install_root(tmp.path());
    let spec = kroot.to_string_lossy().into_owned();

    // The same kernel as an install root boots and passes: the path form works.
    let ok = xtask(&["test", "--bisect", "--kernel", &spec, FIXTURE]);
    assert_eq!(ok.status.code(), Some(0));

    // A configuration without the NVDIMM drivers is refused before anything is built.
    let config = boot_file(&kroot, "config-");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("CONFIG_ACPI_NFIT=") && !l.starts_with("CONFIG_BLK_DEV_PMEM="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, stripped).unwrap();
    let out = xtask(&["test", "--bisect", "--kernel", &spec, FIXTURE]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lacks options daxtest needs"), "{err}");
    assert!(err.contains("CONFIG_ACPI_NFIT, CONFIG_BLK_DEV_PMEM"), "{err}");
    std::fs::write(&config, text).unwrap();

    // A kernel image that does not boot.
    let vmlinuz = boot_file(&kroot, "vmlinuz-");
    std::fs::remove_file(&vmlinuz).unwrap();
    std::fs::write(&vmlinuz, vec![0u8; 1 << 20]).unwrap();
    let out = xtask(&[
        "test",
        "--bisect",
        "--kernel",
        &spec,
        "--boot-timeout",
        "60",
        "--repeat",
        "3",
        FIXTURE,
    ]);
    assert_eq!(out.status.code(), Some(125));
    // Booted twice (the retry), then not again for the other two runs; each is an error.
    let dir = common::run_dir(&out);
    let results = common::results(&out);
    assert!(dir.join("boot-failure-2.log").is_file());
    assert!(!dir.join("boot-failure-3.log").exists());
    assert_eq!(results["kernels"][0]["boot_failures"].as_array().unwrap().len(), 2);
    let cases = results["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        assert_eq!(c["status"], "error", "{c}");
        assert!(c["message"].as_str().unwrap().contains("not booted again"), "{c}");
    }
}

#[test]
fn a_bad_scenario_stops_the_bisection() {
    let out = xtask(&["test", "--bisect", "no-such-case-anywhere"]);
    assert_eq!(out.status.code(), Some(255));
}

/// A case with no expectation for the kernel under test is bad input at every revision: 255
/// with --bisect (it had been reported as an error case, exit 1: "bad"), 2 without, and in both
/// nothing boots (the image is prepared to learn the kernel's version, the accelerator is not
/// chosen, no run starts).
#[test]
fn a_case_without_an_expectation_for_the_kernel_stops_the_bisection() {
    const UNRESOLVED: &str = "xtask/tests/fixtures/bisect-unresolved.toml";
    let want = format!(
        "error: bisect-unresolved/old-kernels-only/xfs/dax=always: {UNRESOLVED}:19: no \
         expectation of this step applies to kernel 6.12."
    );
    for (bisect, status) in [(true, 255), (false, 2)] {
        let mut args = vec!["test", "--kernel", "debian:6.12", UNRESOLVED];
        if bisect {
            args.insert(1, "--bisect");
        }
        let out = xtask(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}\n{err}");
        assert!(err.contains(&want), "{args:?}: want {want:?} in\n{err}");
        for booted in ["accelerator:", "daxtest: VM ready", "results: "] {
            assert!(!err.contains(booted), "{args:?} got as far as {booted:?}:\n{err}");
        }
    }
}
