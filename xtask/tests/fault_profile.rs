//! store_profile end to end on Debian's 6.12 (xtask/tests/fixtures/profile.toml): results.json
//! keeps each profile's samples and counts, and the counts are the kernel's: one log force (XFS)
//! or journal commit (ext4) per fault of a sparse MAP_SYNC mapping, none for a written file's.

mod common;

use common::{results, run};

#[test]
fn profiles_record_samples_faults_and_metadata_work() {
    let out = run(&["test", "--kernel", "debian:6.12", "xtask/tests/fixtures/profile.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out.stderr));
    let results = results(&out);
    let cases = results["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "xfs and ext4");
    for c in cases {
        assert_eq!(c["status"], "pass", "{c}");
        let profiles = c["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2, "{c}");
        let counter = if c["id"].as_str().unwrap().contains("/xfs/") {
            "xfs log forces"
        } else {
            "jbd2 commits"
        };
        for (p, step, forced) in [(&profiles[0], 7, 16), (&profiles[1], 9, 0)] {
            assert_eq!(p["step"], step, "{p}");
            assert_eq!(p["stride"], 4096);
            let samples = p["samples_ns"].as_array().unwrap();
            assert_eq!(samples.len(), 16, "{p}");
            assert!(samples.iter().all(|s| s.as_u64().unwrap() > 0), "{p}");
            assert_eq!((p["faults"].as_u64(), p["pte_faults"].as_u64()), (Some(16), Some(16)));
            assert_eq!(p["pmd_faults"], 0);
            assert_eq!(p["metadata"]["counter"], counter);
            assert_eq!(p["metadata"]["count"], forced, "{p}");
        }
        let lines = c["measurements"].as_array().unwrap();
        assert!(lines[0].as_str().unwrap().contains("16 first stores every 4096 bytes"), "{c}");
    }
}
