//! End to end: a selection run in two shards and merged has the cases and statuses of the same
//! selection run whole, with its kernel logs and junit; merging runs that do not belong together
//! (a case twice, another selection, one kernel from two images) is refused.

mod common;

use common::{results, run, run_dir, text};
use std::collections::BTreeMap;

fn statuses(r: &serde_json::Value) -> BTreeMap<String, String> {
    r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn two_shards_merged_are_the_whole_run() {
    const SEL: &str = "read-only-mount";
    let whole = run(&["test", SEL]);
    assert_eq!(whole.status.code(), Some(0));
    let mut shards = Vec::new();
    for s in ["1/2", "2/2"] {
        let out = run(&["test", SEL, "--shard", s]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stderr).contains(&format!("daxtest: shard {s}: ")));
        shards.push((results(&out), run_dir(&out)));
    }
    // Disjoint, and together the whole selection.
    let (a, b) = (statuses(&shards[0].0), statuses(&shards[1].0));
    assert!(!a.is_empty() && !b.is_empty());
    assert!(a.keys().all(|id| !b.contains_key(id)));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let (d1, d2) = (shards[0].1.to_str().unwrap(), shards[1].1.to_str().unwrap());
    let merged = run(&["report", "merge", d1, d2, "-o", out.to_str().unwrap()]);
    assert_eq!(merged.status.code(), Some(0));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let w = results(&whole);
    assert_eq!(statuses(&m), statuses(&w));
    assert_eq!(m["selection"], w["selection"], "the merged run is the whole selection's");
    assert_eq!(m["counts"], w["counts"]);
    // Every case's kernel log, and junit with every case.
    for c in m["cases"].as_array().unwrap() {
        assert!(out.join(c["kernel_log_path"].as_str().unwrap()).is_file(), "{c}");
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), statuses(&w).len());

    // The same shard twice: its cases would be there twice.
    let again = run(&["report", "merge", d1, d1, "-o", dir.path().join("twice").to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("a case may be in one of the runs only"));
    // A shard of another scenario set (here: its record changed, as other files would).
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut r = shards[1].0.clone();
    r["selection"]["digest"] = "0123456789abcdef01234567".into();
    std::fs::write(other.join("results.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    let refused = run(&[
        "report",
        "merge",
        d1,
        other.to_str().unwrap(),
        "-o",
        dir.path().join("mixed").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("ran another scenario set than"));
    assert!(!dir.path().join("mixed").exists(), "nothing written when refused");
    // The same kernel from another image (here: its key changed, as a rebuilt image's would).
    let rebuilt = dir.path().join("rebuilt");
    std::fs::create_dir(&rebuilt).unwrap();
    let mut r = shards[1].0.clone();
    r["kernels"][0]["rerun"]["image_key"] = "0000000000000000".into();
    std::fs::write(rebuilt.join("results.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    let refused = run(&[
        "report",
        "merge",
        d1,
        rebuilt.to_str().unwrap(),
        "-o",
        dir.path().join("two-images").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("merge only runs of one image per kernel"));
    assert!(!dir.path().join("two-images").exists(), "nothing written when refused");
}
