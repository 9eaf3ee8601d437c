//! End-to-end test of `cargo xtask repro`: a run with a passing reflink case and a deliberately
//! failing one (xtask/tests/fixtures/repro.toml); each is run again from the run's results.json,
//! its bundle must hold every file, and its reproduce.sh, run in the guest, must report the same
//! outcome as the case: PASS for the pass, FAIL at the same step for the failure.

mod common;

use common::{root, run, text, xtask};
use std::path::PathBuf;
use std::process::Stdio;

const FIXTURE: &str = "xtask/tests/fixtures/repro.toml";

/// Runs `repro RUN/CASE`; returns its exit status and the bundle directory.
fn repro(run_dir: &std::path::Path, id: &str) -> (Option<i32>, PathBuf) {
    let out = run(&["repro", &format!("{}/{id}", run_dir.display())]);
    let bundle = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("bundle: ").map(PathBuf::from))
        .expect("repro names the bundle");
    (out.status.code(), bundle)
}

/// Runs the bundle's reproduce.sh in the guest (`run -- sh -s < reproduce.sh`).
fn run_script(bundle: &std::path::Path) -> (Option<i32>, String) {
    let script = std::fs::File::open(bundle.join("reproduce.sh")).unwrap();
    let out = xtask(&["run", "--", "sh", "-s"]).stdin(Stdio::from(script)).output().unwrap();
    let stdout = text(&out.stdout);
    eprintln!("reproduce.sh: {}\n{stdout}\n{}", out.status, text(&out.stderr));
    (out.status.code(), stdout)
}

#[test]
fn repro_reruns_the_case_and_its_script_agrees() {
    let out = run(&["test", FIXTURE]);
    assert_eq!(out.status.code(), Some(1), "the wrong case fails");
    let run_dir = common::run_dir(&out);
    let results = common::results(&out);
    let kernel = &results["kernels"][0];
    assert_eq!(kernel["rerun"]["kernel_spec"], "debian:6.12");
    assert!(kernel["qemu_command_lines"][0].as_str().unwrap().contains("nvdimm"));

    let (status, bundle) = repro(&run_dir, "repro/wrong-clone-content/xfs/dax=always");
    assert_eq!(status, Some(0), "the re-run fails again: the same outcome");
    for f in ["README.md", "scenario.toml", "case.json", "kernel.log", "qemu.sh", "reproduce.sh"] {
        assert!(bundle.join(f).is_file(), "{f} missing in {}", bundle.display());
    }
    let readme = std::fs::read_to_string(bundle.join("README.md")).unwrap();
    assert!(readme.contains("Originally") && readme.contains("**fail**"), "{readme}");
    assert!(std::fs::read_to_string(bundle.join("qemu.sh")).unwrap().contains("exec qemu-system"));
    let (code, output) = run_script(&bundle);
    assert_eq!(code, Some(1), "reproduce.sh fails as the case does");
    assert!(
        output.contains(
            "FAIL: step 7 (line 43, read): expected every byte 'c', got bytes ['b' x4096 at 0]"
        ),
        "{output}"
    );

    let (status, bundle) = repro(&run_dir, "repro/store-after-clone/xfs/dax=always");
    assert_eq!(status, Some(0));
    let (code, output) = run_script(&bundle);
    assert_eq!(code, Some(0), "reproduce.sh passes as the case does");
    assert!(output.contains("PASS: every step met its expectation"), "{output}");
}

#[test]
fn bad_targets_say_what_to_give() {
    let out = run(&["repro", "no-such-run/x/y"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no run found"), "{}", text(&out.stderr));
    // A results.json of the schema before 2 (no schema_version, the kernel's fields at the top).
    let dir = tempfile::tempdir_in(root().join("target")).unwrap();
    std::fs::write(
        dir.path().join("results.json"),
        r#"{"accel":"tcg","cases":[{"id":"a/b","status":"fail","seed":1,"file":"x.toml"}]}"#,
    )
    .unwrap();
    let out = run(&["repro", &format!("{}/a/b", dir.path().display())]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("schema_version absent, where this daxtest reads 4"), "{stderr}");
    assert!(stderr.contains("run the case again with `cargo xtask test`"), "{stderr}");
}
