use super::*;
use crate::run::events::StepProfile;
use daxtest_proto::case::MetadataWork;

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&v, 50.0), Some(50));
    assert_eq!(percentile(&v, 99.0), Some(99));
    assert_eq!(percentile(&v, 100.0), Some(100));
    assert_eq!(percentile(&v, 0.0), Some(1));
    // Few samples: p99 of 16 is the largest, p50 the 8th.
    let few: Vec<u64> = (1..=16).map(|i| i * 10).collect();
    assert_eq!(percentile(&few, 50.0), Some(80));
    assert_eq!(percentile(&few, 99.0), Some(160));
    assert_eq!(percentile(&[7], 50.0), Some(7));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn a_summary_sorts_its_samples_first() {
    let s = summary(&[5, 1, 4, 2, 3, 1000]).unwrap();
    assert_eq!(s, Summary { count: 6, p50: 3, p99: 1000, max: 1000, total: 1015 });
    assert_eq!(summary(&[]), None);
}

fn profile(samples: Vec<u64>, pte: u64, meta: u64) -> FaultProfile {
    FaultProfile {
        stride: 4096,
        faults: samples.len() as u64,
        samples_ns: samples,
        clock_ns: 100,
        pte_faults: pte,
        pmd_faults: 0,
        pmd_fallbacks: 0,
        metadata: Some(MetadataWork { counter: "xfs log forces".into(), count: meta }),
    }
}

fn entry(id: &str, status: Status, p: Option<FaultProfile>) -> CaseEntry {
    CaseEntry {
        id: id.into(),
        file: "target/daxtest/bench/faults.toml".into(),
        kernel: "6.12.0-test".into(),
        status,
        duration_s: 1.0,
        message: if status == Status::Skip { "needs kernel >=6.2".into() } else { String::new() },
        problems: vec![],
        phases: vec![],
        seed: 1,
        kernel_log_path: "kernel-logs/x.log".into(),
        vm: Some(1),
        measurements: vec![],
        profiles: p.into_iter().map(|profile| StepProfile { step: 4, line: 30, profile }).collect(),
        known_bug: None,
    }
}

fn results(cases: Vec<CaseEntry>) -> Results {
    Results {
        schema_version: super::super::results::SCHEMA_VERSION,
        run_id: "r".into(),
        elapsed_s: 1.0,
        counts: Default::default(),
        kernels: vec![],
        cases,
        differing: vec![],
        kernel_log_outside_cases: vec![],
        selection: None,
    }
}

/// Two cells of one kernel: sparse + MAP_SYNC at p50 40 us, total 160 us, 3 log forces; and its
/// baseline, written + MAP_SHARED, at p50 10 us, total 40 us.
fn sparse_sync_and_written_shared() -> [CaseEntry; 2] {
    [
        entry(
            "faults/sparse-sync-4k/xfs/dax=always",
            Status::Pass,
            Some(profile(vec![40_000, 40_000, 80_000], 3, 3)),
        ),
        entry(
            "faults/written-shared-4k/xfs/dax=always",
            Status::Pass,
            Some(profile(vec![10_000, 10_000, 20_000], 3, 0)),
        ),
    ]
}

#[test]
fn cells_come_from_the_case_ids_and_ratios_from_the_written_shared_dax_cell() {
    let [sparse, written] = sparse_sync_and_written_shared();
    let r = results(vec![
        sparse,
        entry(
            "faults/written-shared-4k/xfs/dax=never",
            Status::Pass,
            Some(profile(vec![5000, 5000, 5000], 0, 0)),
        ),
        written,
        entry("faults/reflinked-sync-4k/xfs/dax=always", Status::Skip, None),
        entry("other/written-shared-4k/xfs/dax=always", Status::Pass, Some(profile(vec![1], 1, 0))),
    ]);
    let cells = cells(&r);
    let got: Vec<(Layout, Mapping)> = cells.iter().map(|c| (c.layout, c.mapping)).collect();
    assert_eq!(
        got,
        [
            (Layout::Written, Mapping::SharedDax),
            (Layout::Written, Mapping::SharedPageCache),
            (Layout::Sparse, Mapping::SyncDax),
            (Layout::Reflinked, Mapping::SyncDax),
        ]
    );
    let t = table(&cells);
    let line = |what: &str| t.lines().find(|l| l.contains(what)).unwrap().to_string();
    // p50 40 against 10, total 160 against 40.
    let sparse = line("sparse");
    let cols: Vec<&str> = sparse.split_whitespace().collect();
    assert!(cols.windows(2).any(|w| w == ["4.0", "4.0"]), "{sparse}");
    assert_eq!(cols[cols.len() - 5..], ["3", "0", "0", "3", "3"], "{sparse}");
    assert!(line("no dax").contains(" 0.5 "), "{t}");
    assert!(line("reflinked").contains("skipped: needs kernel >=6.2"), "{t}");
}

/// The README's form of the same cells: a column per kernel in version order (6.9 before 6.12,
/// which a string comparison would put first), a row per cell of the grid.
#[test]
fn the_markdown_table_has_a_column_per_kernel_and_the_ratios() {
    let [sparse, written] = sparse_sync_and_written_shared();
    let mut cases =
        vec![sparse, written, entry("faults/sparse-sync-4k/xfs/dax=always", Status::Skip, None)];
    cases[2].kernel = "6.9.12-amd64".into();
    let md = markdown(&cells(&results(cases)));
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "| fs | page | layout | mapping | 6.9 | 6.12 |");
    assert_eq!(lines[1], "| --- | --- | --- | --- | --- | --- |");
    assert_eq!(
        lines[2],
        "| xfs | 4 KiB | written | MAP_SHARED dax | - | 1.0 / 1.0; 3 PTE, 0 forces |"
    );
    assert_eq!(
        lines[3],
        "| xfs | 4 KiB | sparse | MAP_SYNC dax | skip (needs kernel >=6.2) | 4.0 / 4.0; 3 PTE, 3 \
         forces |"
    );
    assert_eq!(lines.len(), 4);
}

#[test]
fn the_generated_grid_is_a_valid_scenario_file_with_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faults.toml");
    std::fs::write(&file, scenario()).unwrap();
    let (scenarios, diags) = crate::scenario::load_all(std::slice::from_ref(&file));
    assert!(diags.is_empty(), "{}", diags[0]);
    let ids: Vec<String> =
        scenarios.iter().flat_map(|s| s.cases.iter().map(|c| c.id.clone())).collect();
    // 3 layouts x (2 shared mounts + 1 sync) x 2 fs + reflinked x 3 on xfs, at each page size.
    assert_eq!(ids.len(), 2 * (6 + 3 * 3 * 2 + 3));
    let warm_up = ids.iter().filter(|id| id.contains("/warm-up-")).count();
    // At each page size: shared on 2 fs x 2 mounts, sync on 2 fs.
    assert_eq!(warm_up, 12);
    for id in ids.iter().filter(|id| !id.contains("/warm-up-")) {
        let e = entry(id, Status::Pass, None);
        assert!(cell(&e).is_some(), "{id} is not a cell");
    }
    assert!(ids.contains(&"faults/sparse-sync-2m/ext4/dax=always".to_string()));
}

#[test]
fn the_plot_has_a_line_per_series_with_a_point_per_sample() {
    let a: Vec<u64> = vec![1000, 2000, 3000, 4000];
    let b: Vec<u64> = vec![50_000, 60_000];
    let svg = cdf_svg("demo plot", &[("MAP_SHARED dax", &a), ("MAP_SYNC dax", &b)]).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for text in ["demo plot", "MAP_SHARED dax", "MAP_SYNC dax", "first store, us (log)"] {
        assert!(svg.contains(text), "{text} not in the SVG");
    }
    // Each series is one polyline in its colour, a point per sample.
    let line_of = |colour: &str| {
        svg.lines()
            .find(|l| {
                l.starts_with("<polyline") && l.contains(colour) && l.contains("stroke-width=\"2\"")
            })
            .unwrap_or_else(|| panic!("no line in {colour}:\n{svg}"))
            .to_string()
    };
    let points = |l: &str| {
        l.split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .filter(|p| !p.is_empty())
            .count()
    };
    assert_eq!(points(&line_of("#1F77B4")), 4);
    assert_eq!(points(&line_of("#D62728")), 2);
    assert!(cdf_svg("empty", &[("x", &[])]).is_err());
}
