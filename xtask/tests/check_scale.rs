//! `cargo xtask check` grows linearly with the size of a scenario file. `bench check` checks
//! generated files 16 times apart in size, in one run, and reports the per-case CPU cost of the
//! larger against the smaller: about 1 when checking is linear, 16 when it is quadratic (as it
//! was while every step's line number was counted from the start of the file). A ratio, not a
//! time, so the machine's speed and load cancel out.

mod common;

#[test]
fn checking_cost_per_case_does_not_grow_with_the_file() {
    let out = common::run(&["bench", "check", "--sizes", "1000,16000", "--reps", "3"]);
    assert!(out.status.success(), "bench check failed");
    let stdout = common::text(&out.stdout);
    let ratio: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("per-case cost, 16000 vs 1000 cases: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no per-case cost ratio in:\n{stdout}"));
    assert!(ratio < 3.0, "checking 16 times the cases costs {ratio:.1} times as much per case");
}
