//! The mappings of a case stay live across its steps, on Debian's 6.1 and 6.12: a store through a
//! mapping, a load that takes no fault (its page-table entry is still there), a clone, and a store
//! that faults because the clone write-protected the entry (xtask/tests/fixtures/live.toml).

mod common;

use common::{results, run};

#[test]
fn a_clone_invalidates_live_entries_on_both_kernels() {
    let out = run(&[
        "test",
        "--kernel",
        "debian:6.1",
        "--kernel",
        "debian:6.12",
        "xtask/tests/fixtures/live.toml",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let results = results(&out);
    let cases = results["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4, "two mount options on two kernels");
    for c in cases {
        assert_eq!(c["status"], "pass", "{c}");
    }
    let kernels: Vec<&str> =
        cases.iter().map(|c| c["kernel"].as_str().unwrap()).collect::<Vec<_>>();
    assert!(kernels.iter().any(|k| k.starts_with("6.1.")), "{kernels:?}");
    assert!(kernels.iter().any(|k| k.starts_with("6.12.")), "{kernels:?}");
}
