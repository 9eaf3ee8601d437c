//! End-to-end test of a run on several kernels: the same case on Debian's 6.1 and 6.12, where
//! its behaviour differs (see fixtures/bisect.toml), gives one table, one results.json spanning
//! both kernels, and a complete run directory per kernel.

mod common;

use common::{results, run, run_dir, text};

#[test]
fn two_kernels_give_one_table_and_the_difference_is_marked() {
    let out = run(&[
        "test",
        "--kernel",
        "debian:6.1",
        "--kernel",
        "debian:6.12",
        "xtask/tests/fixtures/bisect.toml",
    ]);
    assert_eq!(out.status.code(), Some(1), "the case fails on 6.1");
    let stderr = text(&out.stderr);
    let id = "bisect/dax-flag-on-a-reflinked-file/xfs/dax=inode";
    let row = stderr.lines().find(|l| l.starts_with(&format!("* {id}"))).expect("a marked row");
    let statuses: Vec<&str> = row.split_whitespace().skip(2).collect();
    assert_eq!(statuses, ["fail", "pass"], "{row}");
    assert!(stderr.contains("1 of 1 cases differ between the kernels"), "{stderr}");
    assert!(stderr.contains("expected success, got error EINVAL"), "6.1's message is shown");

    let results = results(&out);
    let kernels = results["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), 2);
    assert!(kernels[0]["kernel_release"].as_str().unwrap().starts_with("6.1."));
    assert!(kernels[1]["kernel_release"].as_str().unwrap().starts_with("6.12."));
    assert_eq!(results["differing"], serde_json::json!([id]));
    let dir = run_dir(&out);
    for (k, case) in kernels.iter().zip(results["cases"].as_array().unwrap()) {
        assert_eq!(case["kernel"], k["kernel_release"]);
        let own = dir.join(k["dir"].as_str().unwrap());
        for f in ["results.json", "junit.xml", "serial.log"] {
            assert!(own.join(f).is_file(), "{} has {f}", own.display());
        }
        let log = dir.join(case["kernel_log_path"].as_str().unwrap());
        assert!(std::fs::read_to_string(&log).unwrap().contains("XFS (pmem0)"), "{log:?}");
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 2);
}
