//! A run on several kernels (`--kernel A --kernel B`): each kernel's run is a complete run
//! directory of its own under the run's; this writes what spans them: the case x kernel table,
//! results.json with every case and its kernel, and junit.xml with a suite per kernel.

use super::files::kernel_log_path;
use super::junit::test_case;
use crate::run::events::{CaseResult, Status};
use anyhow::Context;
use quick_junit::{Report, TestSuite};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One kernel's share of the run.
#[derive(Debug, Clone)]
pub struct KernelRun {
    /// The kernel as `test` names it: spec and package, or the path.
    pub spec: String,
    /// `uname -r`.
    pub release: String,
    /// Its run directory, under the run's.
    pub dir: String,
    pub elapsed: Duration,
    pub results: Vec<CaseResult>,
}

/// A directory name for a kernel: its release, made unique among those already taken.
pub fn dir_name(release: &str, taken: &[String]) -> String {
    let base = crate::names::safe(release, "-_.+");
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Case ids in the order they first ran, and each kernel's status for it.
fn rows(runs: &[KernelRun]) -> Vec<(&str, Vec<Option<Status>>)> {
    let mut ids: Vec<&str> = Vec::new();
    for r in runs.iter().flat_map(|k| &k.results) {
        if !ids.contains(&r.id.as_str()) {
            ids.push(&r.id);
        }
    }
    ids.into_iter()
        .map(|id| {
            let statuses = runs
                .iter()
                .map(|k| k.results.iter().find(|r| r.id == id).map(|r| r.status))
                .collect();
            (id, statuses)
        })
        .collect()
}

fn differs(statuses: &[Option<Status>]) -> bool {
    statuses.windows(2).any(|w| w[0] != w[1])
}

/// The case x kernel table; rows whose statuses differ are marked `*`, and listed again below
/// with each kernel's message so that a difference is explained where it is shown.
pub fn table(runs: &[KernelRun]) -> String {
    let rows = rows(runs);
    let width = rows.iter().map(|(id, _)| id.len()).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = runs.iter().map(|k| k.release.len().max(6)).collect();
    let mut header = format!("  {:<width$}", "case");
    for (k, w) in runs.iter().zip(&widths) {
        header.push_str(&format!("  {:<w$}", k.release));
    }
    let mut out = format!("{}\n", header.trim_end());
    let mut differing = Vec::new();
    for (id, statuses) in &rows {
        let mark = if differs(statuses) { '*' } else { ' ' };
        if mark == '*' {
            differing.push(*id);
        }
        let mut line = format!("{mark} {id:<width$}");
        for (s, w) in statuses.iter().zip(&widths) {
            line.push_str(&format!("  {:<w$}", s.map_or("-", Status::name)));
        }
        out.push_str(&format!("{}\n", line.trim_end()));
    }
    out.push_str(&format!(
        "\n{} of {} cases differ between the kernels{}\n",
        differing.len(),
        rows.len(),
        if differing.is_empty() { "" } else { " (marked *):" }
    ));
    for id in differing {
        out.push_str(&format!("  {id}\n"));
        for k in runs {
            let (status, message) = k
                .results
                .iter()
                .find(|r| r.id == id)
                .map_or(("-", "not run"), |r| (r.status.name(), r.message.as_str()));
            out.push_str(&format!(
                "    {}: {}\n",
                k.release,
                format!("{status} {message}").trim_end()
            ));
        }
    }
    out
}

#[derive(Serialize)]
struct Results<'a> {
    run_id: &'a str,
    kernels: Vec<KernelEntry<'a>>,
    /// Over every kernel.
    counts: BTreeMap<String, usize>,
    /// Ids of the cases whose status is not the same on every kernel.
    differing: Vec<&'a str>,
    cases: Vec<CaseEntry<'a>>,
}

#[derive(Serialize)]
struct KernelEntry<'a> {
    kernel_id: &'a str,
    kernel_release: &'a str,
    /// The kernel's own run directory (results.json, junit.xml, kernel-logs/, serial.log).
    dir: &'a str,
    elapsed_s: f64,
    counts: BTreeMap<String, usize>,
}

#[derive(Serialize)]
struct CaseEntry<'a> {
    id: &'a str,
    kernel: &'a str,
    status: Status,
    duration_s: f64,
    message: &'a str,
    seed: u64,
    /// Relative to this run directory.
    kernel_log_path: String,
}

fn counts<'a>(results: impl Iterator<Item = &'a CaseResult>) -> BTreeMap<String, usize> {
    let mut counts = super::stats::Counts::default();
    results.for_each(|r| counts.add(r.status));
    counts.by_name()
}

/// Writes results.json and junit.xml of the whole run into `dir`.
pub fn write(dir: &Path, run_id: &str, runs: &[KernelRun]) -> anyhow::Result<()> {
    let rows = rows(runs);
    let results = Results {
        run_id,
        kernels: runs
            .iter()
            .map(|k| KernelEntry {
                kernel_id: &k.spec,
                kernel_release: &k.release,
                dir: &k.dir,
                elapsed_s: k.elapsed.as_secs_f64(),
                counts: counts(k.results.iter()),
            })
            .collect(),
        counts: counts(runs.iter().flat_map(|k| &k.results)),
        differing: rows.iter().filter(|(_, s)| differs(s)).map(|(id, _)| *id).collect(),
        cases: runs
            .iter()
            .flat_map(|k| {
                k.results.iter().map(|r| CaseEntry {
                    id: &r.id,
                    kernel: &r.kernel,
                    status: r.status,
                    duration_s: r.duration.as_secs_f64(),
                    message: &r.message,
                    seed: r.seed,
                    kernel_log_path: format!("{}/{}", k.dir, kernel_log_path(&r.id).display()),
                })
            })
            .collect(),
    };
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;

    let mut report = Report::new("daxtest");
    let mut total = Duration::ZERO;
    for k in runs {
        let mut suite = TestSuite::new(format!("daxtest {}", k.release));
        suite.add_test_cases(k.results.iter().map(test_case)).set_time(k.elapsed);
        report.add_test_suite(suite);
        total += k.elapsed;
    }
    report.set_time(total);
    let path = dir.join("junit.xml");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    report.serialize(file).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, kernel: &str, status: Status, message: &str) -> CaseResult {
        CaseResult {
            id: id.into(),
            file: "scenarios/reflink.toml".into(),
            kernel: kernel.into(),
            status,
            duration: Duration::from_millis(200),
            message: message.into(),
            problems: vec![],
            kernel_log: vec![],
            phases: vec![],
            seed: 7,
        }
    }

    fn runs() -> Vec<KernelRun> {
        let run = |release: &str, flag: Status, message: &str| KernelRun {
            spec: format!("debian ({release})"),
            release: release.into(),
            dir: release.into(),
            elapsed: Duration::from_secs(20),
            results: vec![
                result("reflink/a/xfs/dax=always", release, Status::Pass, ""),
                result("reflink/flag/xfs/dax=inode", release, flag, message),
            ],
        };
        vec![
            run(
                "6.1.0-41-amd64",
                Status::Fail,
                "step 2 (line 9, set_flag): expected ok, got EINVAL",
            ),
            run("6.12.117+deb12-amd64", Status::Pass, ""),
        ]
    }

    #[test]
    fn the_table_marks_and_explains_the_rows_that_differ() {
        assert_eq!(
            table(&runs()),
            "  case                        6.1.0-41-amd64  6.12.117+deb12-amd64
  reflink/a/xfs/dax=always    pass            pass
* reflink/flag/xfs/dax=inode  fail            pass

1 of 2 cases differ between the kernels (marked *):
  reflink/flag/xfs/dax=inode
    6.1.0-41-amd64: fail step 2 (line 9, set_flag): expected ok, got EINVAL
    6.12.117+deb12-amd64: pass
"
        );
    }

    #[test]
    fn results_and_junit_carry_the_kernel_of_each_case() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "run-1", &runs()).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).unwrap())
                .unwrap();
        assert_eq!(json["differing"], serde_json::json!(["reflink/flag/xfs/dax=inode"]));
        assert_eq!(json["counts"], serde_json::json!({"fail": 1, "pass": 3}));
        assert_eq!(json["cases"][1]["kernel"], "6.1.0-41-amd64");
        assert_eq!(
            json["cases"][3]["kernel_log_path"],
            "6.12.117+deb12-amd64/kernel-logs/reflink__flag__xfs__dax=inode.log"
        );
        let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
        assert_eq!(junit.matches("<testsuite ").count(), 2, "{junit}");
        assert!(junit.contains(r#"<property name="kernel" value="6.1.0-41-amd64"/>"#), "{junit}");
    }

    #[test]
    fn directory_names_are_unique() {
        let taken = vec!["6.1.0".to_string(), "6.1.0-2".to_string()];
        assert_eq!(dir_name("6.1.0", &taken), "6.1.0-3");
        assert_eq!(dir_name("6.12 local/x", &[]), "6.12_local_x");
    }
}
