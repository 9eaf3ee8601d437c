//! End-to-end test of a run on several kernels: the same case on Debian's 6.1 and 6.12, where
//! its behaviour differs (see fixtures/bisect.toml), gives one table, one results.json spanning
//! both kernels, and a complete run directory per kernel whose results.json has the same schema;
//! `repro RUN/KERNEL/CASE` runs the case again on that kernel.

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
    assert_eq!(results["schema_version"], 4);
    assert_eq!(results["counts"], serde_json::json!({"fail": 1, "pass": 1}));
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
        assert!(k["qemu_command_lines"][0].as_str().unwrap().contains("nvdimm"), "{k}");
        let mine: serde_json::Value =
            serde_json::from_slice(&std::fs::read(own.join("results.json")).unwrap()).unwrap();
        assert_eq!(mine["schema_version"], 4);
        assert_eq!(mine["kernels"].as_array().unwrap().len(), 1);
        assert_eq!(mine["kernels"][0]["dir"], ".");
        assert_eq!(mine["kernels"][0]["counts"], k["counts"]);
        assert_eq!(mine["cases"][0]["status"], case["status"]);
        let log = dir.join(case["kernel_log_path"].as_str().unwrap());
        assert!(std::fs::read_to_string(&log).unwrap().contains("XFS (pmem0)"), "{log:?}");
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 2);

    // repro takes the case on one kernel: RUN/KERNEL/CASE, where KERNEL is its directory.
    let out = run(&["repro", &format!("{}/{id}", dir.display())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give RUN/KERNEL/CASE"), "{}", text(&out.stderr));
    let on_6_1 = kernels[0]["dir"].as_str().unwrap();
    let out = run(&["repro", &format!("{}/{on_6_1}/{id}", dir.display())]);
    assert_eq!(out.status.code(), Some(0), "it fails on 6.1 again");
    assert!(text(&out.stderr).contains("originally fail, now fail: the same outcome"));
}
