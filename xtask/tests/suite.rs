//! End-to-end tests of `cargo xtask test`: the real guest runs the scenarios. A deliberately wrong
//! expectation of every kind must fail with a message naming the step, the expectation and what
//! happened; bad scenario files must be refused before anything boots.

mod common;

use common::{results, run};
use std::time::{Duration, Instant};

#[test]
fn each_kind_of_wrong_expectation_fails_with_step_expectation_and_observation() {
    let out = run(&["test", "xtask/tests/fixtures/wrong-expectations.toml"]);
    assert_eq!(out.status.code(), Some(1), "a failed case exits 1");
    let results = results(&out);
    let want: &[(&str, &str, &str)] = &[
        ("wrong/control/xfs/dax=always", "pass", ""),
        (
            "wrong/ok-but-errno/xfs/dax=always",
            "fail",
            "step 1 (line 25, write): expected success, got error ENOENT",
        ),
        (
            "wrong/errno-but-ok/xfs/dax=always",
            "fail",
            "step 1 (line 30, mkdir): expected error EEXIST, got success",
        ),
        (
            "wrong/wrong-errno/xfs/dax=always",
            "fail",
            "step 1 (line 35, unlink): expected error EINVAL, got error ENOENT",
        ),
        (
            "wrong/signal-but-bytes/xfs/dax=always",
            "fail",
            "step 3 (line 43, load): expected killed by SIGBUS, got bytes ['a' x4096 at 0]",
        ),
        (
            "wrong/content/xfs/dax=always",
            "fail",
            "step 2 (line 51, read): expected every byte 'b', got bytes ['a' x4096 at 0]",
        ),
        (
            "wrong/dax/xfs/dax=always",
            "fail",
            "step 2 (line 59, statx): expected STATX_ATTR_DAX off, got STATX_ATTR_DAX on",
        ),
        (
            "wrong/flag/xfs/dax=always",
            "fail",
            "step 2 (line 67, get_flag): expected FS_XFLAG_DAX on, got FS_XFLAG_DAX off",
        ),
        (
            "wrong/extents/xfs/dax=always",
            "fail",
            "step 5 (line 78, fiemap): expected extents unchanged since \"before\", got extents [",
        ),
        (
            "wrong/shared/xfs/dax=always",
            "fail",
            "step 2 (line 86, fiemap): expected all extents shared, got extents [",
        ),
        (
            "wrong/exit/xfs/dax=always",
            "fail",
            "step 1 (line 92, shell): expected exit status 0, got exit 3: out",
        ),
        (
            "wrong/kernel-log/xfs/dax=always",
            "fail",
            "kernel log: nothing matched the expected pattern \"this line is never logged\"",
        ),
        // Faults are counted by the process that holds the mapping, whose entries stay live.
        (
            "wrong/faults/xfs/dax=always",
            "fail",
            "step 3 (line 106, load): expected every byte 'a' with faults = 0, got bytes ['a' \
             x4096 at 0], ",
        ),
        (
            "wrong/no-fault-again/xfs/dax=always",
            "fail",
            "step 4 (line 116, load): expected every byte 'b' with faults >= 1, got bytes ['b' \
             x4096 at 0], 0 faults",
        ),
        (
            "wrong/short-read/xfs/dax=always",
            "fail",
            "step 2 (line 124, read): expected every byte 'b', got bytes [] (asked 4096, got 0)",
        ),
        (
            "wrong/hole-is-not-unshared/xfs/dax=always",
            "fail",
            "step 3 (line 133, fiemap): expected none extents shared, got no extents",
        ),
        (
            "wrong/xfail-and-a-warning/xfs/dax=always",
            "fail",
            "step 2 (line 142, unlink): expected success, got error ENOENT; kernel log: [",
        ),
        // The check after the unmount (fsck = true) finds what the case did to the filesystem.
        (
            "wrong/fsck-finds-damage/xfs/dax=always",
            "fail",
            "teardown: xfs_repair -n -P /dev/pmem0: exit status: 1: ",
        ),
        // PMD faults, counted from the fs_dax tracepoints.
        (
            "wrong/pmd-faults/xfs/dax=always",
            "fail",
            "step 3 (line 167, load): expected every byte 'a' and PMD faults = 0, got bytes ['a' \
             x4096 at 0], 1 fault (1 PMD)",
        ),
        (
            "wrong/direct-io/xfs/dax=always",
            "fail",
            "step 4 (line 177, mapped_buffer_io): expected error EFAULT, got success",
        ),
        // Issue 13: exec, a read-only remount, a read-only mapping, ext4's journal flag.
        (
            "wrong/exec-signal/xfs/dax=always",
            "fail",
            "step 2 (line 185, exec): expected killed by SIGBUS, got exit 0: 0.1.0",
        ),
        (
            "wrong/write-after-read-only-remount/xfs/dax=always",
            "fail",
            "step 3 (line 194, write): expected success, got error EROFS",
        ),
        (
            "wrong/o-direct-read-into-a-read-only-mapping/xfs/dax=always",
            "fail",
            "step 5 (line 205, mapped_buffer_io): expected error EINVAL, got error EFAULT",
        ),
        (
            "wrong/journal-flag-on-a-dax-file/ext4/dax=always",
            "fail",
            "step 2 (line 214, set_flag): expected success, got error EBUSY",
        ),
        (
            "wrong/direct-io-remove-short-reads/xfs/dax=inode",
            "fail",
            "step 6 (line 227, race_direct_io_remove): expected success, got 2 rounds, 4 problems: \
             thread 0 round 0: O_DIRECT read: the file ended;",
        ),
        // A poison's SIGBUS, named with its siginfo as the holder caught it.
        (
            "wrong/poison-si-code/xfs/dax=always",
            "fail",
            "step 3 (line 239, poison): expected killed by SIGBUS with si_code BUS_MCEERR_AO, got \
             killed by SIGBUS (BUS_MCEERR_AR, si_addr_lsb 12, at offset 4096)",
        ),
        (
            "wrong/poison-no-sigbus/xfs/dax=always",
            "fail",
            "step 3 (line 250, poison): expected success, got killed by SIGBUS (BUS_MCEERR_AR, \
             si_addr_lsb 12, at offset 0)",
        ),
        // A power cut loses a page-cache store nothing wrote back; the check after the recovery
        // mount finds damage done before the cut.
        (
            "wrong/store-lost-in-a-power-cut/xfs/dax=never",
            "fail",
            "step 6 (line 265, read): expected every byte 'b', got bytes ['a' x4096 at 0]",
        ),
        (
            "wrong/damage-found-after-a-power-cut/xfs/dax=always",
            "fail",
            "step 3 (line 275, power_cut): expected success, got after the cut: xfs_repair -n \
             -P /dev/pmem0: exit status: 1: ",
        ),
        (
            "wrong/records-lost-in-a-power-cut/xfs/dax=never",
            "fail",
            "step 5 (line 289, power_cut): expected 0 completed records lost, got recovered and \
             checked clean; ",
        ),
        // Issue 13: a PMD moved by mremap, an entry fork does not copy, mprotect's SIGSEGV.
        (
            "wrong/mremap-faults-again/xfs/dax=always",
            "fail",
            "step 5 (line 302, load): expected every byte 'a' with faults >= 1, got bytes ['a' \
             x4096 at 0], 0 faults",
        ),
        (
            "wrong/fork-child-has-the-pmd/xfs/dax=always",
            "fail",
            "step 4 (line 314, load): expected every byte 'a' with faults = 0, got bytes ['a' \
             x4096 at 0], ",
        ),
        (
            "wrong/mprotect-segv-code/xfs/dax=always",
            "fail",
            "step 4 (line 325, store): expected killed by SIGSEGV with si_code SEGV_MAPERR, got \
             killed by SIGSEGV (SEGV_ACCERR, at offset 4096)",
        ),
        // generic/413: a buffered read(2) into a DAX mapping changes the DAX file.
        (
            "wrong/buffered-read-into-a-dax-mapping/xfs/dax=inode",
            "fail",
            "step 8 (line 342, read): expected every byte 'a', got bytes ['a' x1000 at 0, 'p' \
             x1000 at 1000, 'a' x2096 at 2000]",
        ),
        (
            "wrong/map-sync-refused-as-on-virtio-pmem/xfs/dax=always",
            "fail",
            "step 2 (line 354, mmap): expected error EOPNOTSUPP, got success",
        ),
        (
            "wrong/xfail-symptom/xfs/dax=always",
            "xfail",
            "known bug: the missing file (https://example.org/bug): step 1 (line 149, unlink): \
             expected success, got error ENOENT",
        ),
    ];
    let cases = results["cases"].as_array().unwrap();
    assert_eq!(cases.len(), want.len());
    for (id, status, message) in want {
        let c = cases.iter().find(|c| c["id"] == *id).unwrap_or_else(|| panic!("no {id}"));
        assert_eq!(c["status"], *status, "{id}: {c}");
        let got = c["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{id}:\n  got  {got}\n  want {message}...");
    }
    // The power cuts' VMs (and the poison cases' own) were restored from the boot snapshot, and
    // the power-cut oracles above failed on them all the same.
    let console = common::text(&out.stderr);
    let restored = console.matches("restored from the snapshot of VM 1's boot").count();
    assert!(restored >= 3, "{restored} VMs restored:\n{console}");
    // The VMs after the cuts loaded the snapshot while the part before the cut ran (a
    // standby); none had to start anew.
    for fallback in ["no standby VM", "restoring anew"] {
        assert!(!console.contains(fallback), "{fallback}:\n{console}");
    }
    let log = common::run_dir(&out)
        .join("kernel-logs/wrong__store-lost-in-a-power-cut__xfs__dax=never.log");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("(the snapshot of VM 1's boot, restored)"), "{log}");
}

/// A VM restored after a power cut runs on the host's clock, not the snapshot's.
#[test]
fn a_vm_restored_after_a_cut_has_the_hosts_clock() {
    let out = run(&["test", "xtask/tests/fixtures/restore.toml"]);
    let console = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{console}");
    assert!(console.contains("restored from the snapshot of VM 1's boot"), "{console}");
    assert!(!console.contains("restoring anew"), "the standby did not take over:\n{console}");
    assert_eq!(results(&out)["cases"][0]["status"], "pass");
}

/// `--no-boot-snapshot`: the VM after a power cut boots, and a store lost in the cut is lost
/// there too.
#[test]
fn without_the_boot_snapshot_the_vm_after_a_cut_boots() {
    let out = run(&[
        "test",
        "--no-boot-snapshot",
        "xtask/tests/fixtures/wrong-expectations.toml",
        "wrong/store-lost-in-a-power-cut",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed case exits 1");
    let console = common::text(&out.stderr);
    assert!(!console.contains("restored from"), "{console}");
    assert!(console.contains("booted on the same NVDIMM backing files"), "{console}");
    let case = &results(&out)["cases"][0];
    assert_eq!(case["id"], "wrong/store-lost-in-a-power-cut/xfs/dax=never");
    let got = case["message"].as_str().unwrap();
    assert!(got.starts_with("step 6 (line 265, read): expected every byte 'b', got"), "{got}");
}

#[test]
fn a_bad_scenario_is_refused_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "format = 1\nname = \"bad\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\n\
         steps = [\n  { op = \"wirte\", file = \"f\" },\n]\n",
    )
    .unwrap();
    let start = Instant::now();
    let out = run(&["test", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:8:3: step op = \"wirte\": unknown variant `wirte`",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "nothing may boot");
    let check = run(&["check", bad.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2));
}
