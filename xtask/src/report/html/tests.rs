use super::*;
use crate::report::results::KernelEntry;
use crate::run::events::{fixtures, RerunInfo};
use daxtest_proto::case::CasePhase;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn kernel(release: &str, dir: &str) -> KernelEntry {
    KernelEntry {
        kernel_id: format!("debian:x (linux-image-{release})"),
        kernel_release: release.into(),
        accel: "tcg".into(),
        qemu_version: "QEMU emulator version 7.2.22".into(),
        elapsed_s: 60.0,
        counts: BTreeMap::new(),
        dir: dir.into(),
        rerun: RerunInfo::default(),
        qemu_command_lines: vec!["qemu-system-x86_64".into()],
        boot_failures: vec![],
    }
}

fn case(id: &str, kernel: &str, status: Status, duration_s: f64) -> CaseEntry {
    CaseEntry {
        id: id.into(),
        file: "scenarios/demo.toml".into(),
        kernel: kernel.into(),
        status,
        duration_s,
        message: match status {
            Status::Pass => String::new(),
            s => format!("{} of {id}", s.name()),
        },
        problems: vec![],
        phases: vec![
            CasePhase { name: "mkfs".into(), micros: 900_000 },
            CasePhase { name: "steps".into(), micros: 300_000 },
        ],
        seed: 7,
        kernel_log_path: kernel_log_path(id),
        vm: Some(1),
        measurements: vec![],
        profiles: vec![],
        known_bug: None,
    }
}

fn results(kernels: Vec<KernelEntry>, cases: Vec<CaseEntry>, differing: Vec<String>) -> Results {
    let mut counts = BTreeMap::new();
    for c in &cases {
        *counts.entry(c.status.name().to_string()).or_insert(0) += 1;
    }
    Results {
        schema_version: results::SCHEMA_VERSION,
        run_id: "20261201-000000-1".into(),
        elapsed_s: 100.0,
        counts,
        kernels,
        cases,
        differing,
        kernel_log_outside_cases: vec![],
        selection: None,
    }
}

use crate::report::kernel_log_path;

/// Writes each case's kernel log into `dir` (`lines` lines each, numbered).
fn write_logs(dir: &Path, r: &Results, lines: usize) {
    for c in &r.cases {
        let path = dir.join(&c.kernel_log_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String =
            (1..=lines).map(|i| format!("[ {i}.0] line {i} of {}\n", c.id)).collect();
        std::fs::write(path, text).unwrap();
    }
}

const RELEASE: &str = "6.12.117+deb12-amd64";

#[test]
fn text_is_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let nasty = "demo/<script>alert(1)</script>&amp;/xfs";
    let mut c = case(nasty, RELEASE, Status::Fail, 1.0);
    c.message = "expected <b>bold</b> & got \"quotes\"".into();
    c.problems = vec![Problem::Teardown { message: "umount: <busy> & stuck".into() }];
    let r = results(vec![kernel(RELEASE, ".")], vec![c], vec![]);
    write_logs(dir.path(), &r, 1);
    std::fs::write(dir.path().join(&r.cases[0].kernel_log_path), "[ 1.0] <4>WARNING & </pre>\n")
        .unwrap();
    let page = render(dir.path(), &r).into_string();
    for raw in ["<script>alert", "<b>bold", "<busy>", "<4>WARNING", "& </pre>", "&amp;/xfs"] {
        assert!(!page.contains(raw), "{raw} unescaped");
    }
    for escaped in [
        "demo/&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;/xfs",
        "expected &lt;b&gt;bold&lt;/b&gt; &amp; got &quot;quotes&quot;",
        "umount: &lt;busy&gt; &amp; stuck",
        "[ 1.0] &lt;4&gt;WARNING &amp; &lt;/pre&gt;",
    ] {
        assert!(page.contains(escaped), "{escaped} missing");
    }
    // The only script is the page's own.
    assert_eq!(page.matches("<script>").count(), 1);
}

#[test]
fn every_case_has_a_row_and_every_failure_its_details() {
    let dir = tempfile::tempdir().unwrap();
    let statuses = [Status::Pass, Status::Fail, Status::Skip, Status::Xfail, Status::Crash];
    let mut cases: Vec<CaseEntry> = statuses
        .iter()
        .chain(&[Status::Hang, Status::Error])
        .enumerate()
        .map(|(i, &s)| case(&format!("demo/c{i}/xfs/dax=always"), RELEASE, s, 1.0 + i as f64))
        .collect();
    cases[1].problems = vec![fixtures::read_failure()];
    cases[1].measurements = vec!["records: 10 completed, 0 lost".into()];
    let (expected, observed) = match &cases[1].problems[0] {
        Problem::Step(s) => (s.expected.to_string(), s.observed.to_string()),
        _ => unreachable!(),
    };
    let r = results(vec![kernel(RELEASE, ".")], cases, vec![]);
    write_logs(dir.path(), &r, 3);
    let page = render(dir.path(), &r).into_string();
    assert_eq!(page.matches("<tr data-status=").count(), r.cases.len());
    for c in &r.cases {
        assert!(page.contains(&format!("data-id=\"{}\" data-kernel=\"{RELEASE}\"", c.id)), "{c:?}");
    }
    // Fail, crash, hang, error: a section each, with the message and the kernel log.
    assert_eq!(page.matches("<section class=\"failure failure-").count(), 4);
    for (i, c) in r.cases.iter().enumerate() {
        let detail = page.find(&format!("id=\"f-{i}\""));
        assert_eq!(detail.is_some(), c.status.is_failure(), "{c:?}");
        if let Some(at) = detail {
            let section = &page[at..at + page[at..].find("</section>").unwrap()];
            assert!(section.contains(&c.message), "{section}");
            assert!(section.contains(&format!("[ 3.0] line 3 of {}", c.id)), "{section}");
        }
    }
    let fail = &page[page.find("id=\"f-1\"").unwrap()..];
    let fail = &fail[..fail.find("</section>").unwrap()];
    let measured = "records: 10 completed, 0 lost".to_string();
    for want in [html_text(&expected), html_text(&observed), measured] {
        assert!(fail.contains(&want), "{want} not in {fail}");
    }
    assert!(fail.contains("<td class=\"n\">3</td><td class=\"n\">20</td><td><code>read</code>"));
}

/// `s` as maud writes it in text.
fn html_text(s: &str) -> String {
    maud::html! { (s) }.into_string()
}

#[test]
fn the_matrix_marks_the_rows_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let old = "6.1.0-41-amd64";
    let cases = vec![
        case("demo/same/xfs", old, Status::Pass, 1.0),
        case("demo/differs/xfs", old, Status::Xfail, 1.0),
        case("demo/same/xfs", RELEASE, Status::Pass, 1.0),
        case("demo/differs/xfs", RELEASE, Status::Pass, 1.0),
        case("demo/new/xfs", RELEASE, Status::Pass, 1.0),
    ];
    let kernels = vec![kernel(old, old), kernel(RELEASE, RELEASE)];
    let r = results(kernels, cases, vec!["demo/differs/xfs".into(), "demo/new/xfs".into()]);
    let page = render(dir.path(), &r).into_string();
    let matrix = &page[page.find("<table id=\"matrix\" class=\"only-differing\">").unwrap()..];
    let matrix = &matrix[..matrix.find("</table>").unwrap()];
    assert!(matrix.contains("<tr data-id=\"demo/same/xfs\">"), "{matrix}");
    assert!(matrix.contains("<tr class=\"differs\" data-id=\"demo/differs/xfs\">"), "{matrix}");
    // A case that did not run on a kernel has an empty cell there.
    let new = &matrix[matrix.find("<tr class=\"differs\" data-id=\"demo/new/xfs\">").unwrap()..];
    assert!(new.find("st-missing").unwrap() < new.find("st-pass").unwrap(), "{new}");
    assert_eq!(matrix.matches("<tr").count(), 3 + 1, "a row per case id, and the header's");
    // One kernel: no matrix.
    let one =
        results(vec![kernel(RELEASE, ".")], vec![case("a", RELEASE, Status::Pass, 1.0)], vec![]);
    assert!(!render(dir.path(), &one).into_string().contains("id=\"matrix\""));
}

#[test]
fn a_long_kernel_log_keeps_its_head_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let r = results(
        vec![kernel(RELEASE, ".")],
        vec![case("demo/oops", RELEASE, Status::Crash, 1.0)],
        vec![],
    );
    write_logs(dir.path(), &r, 1000);
    let page = render(dir.path(), &r).into_string();
    let line = |i: usize| format!("[ {i}.0] line {i} of demo/oops\n");
    assert!(page.contains(&line(LOG_HEAD)) && !page.contains(&line(LOG_HEAD + 1)));
    assert!(page.contains(&line(1000 - LOG_TAIL + 1)) && !page.contains(&line(1000 - LOG_TAIL)));
    assert!(page.contains(&format!("[... {} lines left out", 1000 - LOG_HEAD - LOG_TAIL)));
    assert!(page.contains("(1000 lines)"));
}

/// 5000 cases on two kernels with a failure in every 50th: the page stays small and is made in
/// linear time (a grid or a lookup done per case per case would take seconds here).
#[test]
fn thousands_of_cases_make_a_page_of_bounded_size_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let old = "6.1.0-41-amd64";
    let make = |n: usize| {
        let mut cases = Vec::new();
        for k in [old, RELEASE] {
            for i in 0..n / 2 {
                let status = match (k, i % 50) {
                    (k, 0) if k == old => Status::Fail,
                    _ => Status::Pass,
                };
                let id = format!("generated/case-{i:05}/xfs/dax=always");
                cases.push(case(&id, k, status, 0.5 + (i % 97) as f64));
            }
        }
        let differing =
            (0..n / 2).step_by(50).map(|i| format!("generated/case-{i:05}/xfs/dax=always"));
        results(vec![kernel(old, old), kernel(RELEASE, RELEASE)], cases, differing.collect())
    };
    let r = make(5000);
    for k in &r.kernels {
        // Only failures' logs are read.
        let failed =
            r.cases.iter().filter(|c| c.kernel == k.kernel_release && c.status.is_failure());
        let mine = results(vec![], failed.cloned().collect(), vec![]);
        write_logs(&dir.path().join(&k.dir), &mine, 400);
    }
    let mut r = r;
    for c in &mut r.cases {
        let k = r.kernels.iter().find(|k| k.kernel_release == c.kernel).unwrap();
        c.kernel_log_path = k.dir.join(&c.kernel_log_path);
    }
    let started = Instant::now();
    let page = render(dir.path(), &r).into_string();
    let took = started.elapsed();
    assert_eq!(page.matches("<tr data-status=").count(), 5000);
    assert_eq!(page.matches("<section class=\"failure failure-fail\"").count(), 50);
    // About 250 bytes a case row, 90 a matrix row and 17 KiB each failure's kernel log.
    assert!(page.len() < 3 << 20, "{} bytes", page.len());
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("5000 cases: {} bytes in {took:?}", page.len());
}

#[test]
fn the_kernel_logs_of_many_failures_stop_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cases =
        (0..1000).map(|i| case(&format!("demo/broken-{i}"), RELEASE, Status::Error, 1.0)).collect();
    let r = results(vec![kernel(RELEASE, ".")], cases, vec![]);
    write_logs(dir.path(), &r, 400);
    let page = render(dir.path(), &r).into_string();
    assert!(page.len() < LOG_BUDGET + (3 << 20), "{} bytes", page.len());
    assert!(
        page.contains("MiB of kernel logs; it is <a href=\"kernel-logs/demo__broken-999.log\">")
    );
    // Every failure keeps its section and message.
    assert_eq!(page.matches("<section class=\"failure failure-error\"").count(), 1000);
}

#[test]
fn boots_are_read_from_the_serial_console() {
    let serial = "=== VM 1 ===\n\
        daxtest-agent: init at 2.66s\n[    2.9] random kernel line\n\
        daxtest-agent: sshd started at 2.99s\ndaxtest-agent: ready at 3.38s\n\
        === VM 2 ===\ndaxtest-agent: init at 1.71s\n";
    assert_eq!(
        boots_of(serial),
        [
            Boot { init: Some(2.66), sshd: Some(2.99), ready: Some(3.38) },
            Boot { init: Some(1.71), sshd: None, ready: None },
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("serial.log"), serial).unwrap();
    let r =
        results(vec![kernel(RELEASE, ".")], vec![case("a", RELEASE, Status::Pass, 1.0)], vec![]);
    let page = render(dir.path(), &r).into_string();
    assert!(page.contains("2 boots; median init at 2.66 s; sshd at 2.99 s; ready at 3.38 s;"));
    assert!(page.contains("boot 2 (not ready)"));
}

#[test]
fn the_fault_cost_plots_are_shown_when_bench_faults_left_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = results(
        vec![kernel("6.12.0", ".")],
        vec![case("a/b", "6.12.0", Status::Pass, 1.0)],
        vec![],
    );
    write_logs(dir.path(), &r, 1);
    assert!(!render(dir.path(), &r).into_string().contains("id=\"faults\""));
    let svg = super::super::faults::cdf_svg("a plot", &[("MAP_SYNC dax", &[1000, 2000])]).unwrap();
    std::fs::create_dir_all(dir.path().join("faults")).unwrap();
    std::fs::write(dir.path().join("faults/table.txt"), "kernel fs page <table>\n").unwrap();
    std::fs::write(dir.path().join("faults/cdf-6.12.0-xfs-4k-sparse.svg"), &svg).unwrap();
    let page = render(dir.path(), &r).into_string();
    assert!(page.contains("id=\"faults\""));
    // The table is text (escaped), the plot inline SVG with its series.
    assert!(page.contains("kernel fs page &lt;table&gt;"));
    assert!(page.contains(&svg) && page.contains("MAP_SYNC dax"));
    assert!(page.contains("cdf-6.12.0-xfs-4k-sparse.svg"));
}
