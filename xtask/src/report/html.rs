//! report.html: a run directory as one self-contained page (inline CSS, JS and SVG; nothing
//! fetched): the summary, every case in a table that filters by words and status, the case x
//! kernel matrix with the rows that differ marked, each failed, crashed, hung or errored case with
//! its problems and its kernel log, and timing plots (case durations, where the cases' time went,
//! the VMs' boot phases from the serial logs). Made from results.json and the files beside it,
//! so `cargo xtask report html` and a run's reporter write the same page. maud escapes every
//! interpolated string; case ids and kernel logs hold `<` and `&`.
//!
//! Sized for thousands of cases: one row per case, one matrix row per case id, every plot of
//! bounded size (a histogram and the slowest cases, not a bar per case), and kernel logs only for
//! failures, each cut to its head and tail and all of them to [`LOG_BUDGET`] bytes.

use super::results::{self, CaseEntry, Results};
use super::stats::{median, RunStats};
use super::Reporter;
use crate::run::events::{Event, Problem, Status};
use anyhow::Context;
use daxtest_proto::console;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CSS: &str = include_str!("html.css");
const JS: &str = include_str!("html.js");

/// Lines kept from the start and from the end of a failed case's kernel log: the start shows the
/// set-up, the end the oops or the hung-task dump.
const LOG_HEAD: usize = 40;
const LOG_TAIL: usize = 260;
/// Characters kept of one kernel-log line.
const LINE_MAX: usize = 1000;
/// Bytes of kernel log in one page: past it, a failure links its log file instead.
const LOG_BUDGET: usize = 8 << 20;
/// Bars in the slowest-cases plot.
const SLOWEST: usize = 25;
/// Boots drawn per kernel in the boot-phase plot (the medians count every boot).
const BOOTS_DRAWN: usize = 60;

/// Writes `run_dir/report.html` from its results.json and kernel logs.
pub fn write_dir(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let results = results::read(run_dir)?;
    write(run_dir, &results)
}

/// Writes `run_dir/report.html` for `results` (the run directory's, with its kernel logs).
pub fn write(run_dir: &Path, results: &Results) -> anyhow::Result<PathBuf> {
    let path = run_dir.join("report.html");
    std::fs::write(&path, render(run_dir, results).into_string())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes report.html into the run directory when the run finishes, from what the files reporter
/// wrote (so it comes after it), and into each kernel's directory of a run on several kernels.
pub struct Html {
    dir: PathBuf,
    kernel_dir: Option<PathBuf>,
}

impl Html {
    pub fn new(dir: &Path) -> Html {
        Html { dir: dir.to_path_buf(), kernel_dir: None }
    }
}

impl Reporter for Html {
    fn event(&mut self, e: &Event, _: &RunStats) -> anyhow::Result<()> {
        match e {
            Event::KernelStarted(info) => self.kernel_dir = Some(info.dir.clone()),
            Event::KernelFinished { .. } => match self.kernel_dir.take() {
                Some(d) if d != Path::new(".") => _ = write_dir(&self.dir.join(d))?,
                _ => {}
            },
            Event::RunFinished { .. } => _ = write_dir(&self.dir)?,
            Event::RunStarted(_)
            | Event::CaseStarted { .. }
            | Event::CaseFinished(_)
            | Event::VmBooted { .. }
            | Event::BootFailed { .. }
            | Event::KernelLogOutsideCases(_) => {}
        }
        Ok(())
    }
}

/// The page.
pub fn render(run_dir: &Path, r: &Results) -> Markup {
    let mut budget = LOG_BUDGET;
    let failures: Vec<(usize, &CaseEntry)> =
        r.cases.iter().enumerate().filter(|(_, c)| c.status.is_failure()).collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "daxtest " (r.run_id) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "daxtest run " code { (r.run_id) } }
                (summary(r))
                @if r.kernels.len() > 1 { (matrix(r)) }
                (case_table(r))
                @if !r.kernel_log_outside_cases.is_empty() { (outside(r)) }
                h2 id="failures" { "Failures (" (failures.len()) ")" }
                @if failures.is_empty() { p { "No case failed, crashed, hung or errored." } }
                @for (i, c) in &failures { (failure(run_dir, *i, c, &mut budget)) }
                @if let Some((table, svgs)) = super::faults::plots(run_dir) {
                    (fault_costs(&table, &svgs))
                }
                h2 id="timing" { "Timing" }
                (durations(r))
                (slowest(r))
                (phases(r))
                (boots(run_dir, r))
                script { (PreEscaped(JS)) }
            }
        }
    }
}

/// What `bench faults` left in the run directory: its table and its latency CDFs, the SVG text
/// inline (plotters' output, whose text is ours: the case names and figures).
fn fault_costs(table: &str, svgs: &[(String, String)]) -> Markup {
    html! {
        h2 id="faults" { "Fault costs (bench faults)" }
        pre { (table) }
        @for (name, svg) in svgs {
            figure {
                (PreEscaped(svg))
                figcaption { (name) }
            }
        }
    }
}

fn badge(s: Status) -> Markup {
    html! { span class={ "st st-" (s.name()) } { (s.name()) } }
}

/// Cases per status, in the order of the statuses (not of their names).
fn counts(c: &std::collections::BTreeMap<String, usize>) -> Markup {
    html! {
        span.counts {
            @for s in Status::ALL {
                @if let Some(n) = c.get(s.name()) { (badge(s)) " " (n) " " }
            }
        }
    }
}

fn secs(s: f64) -> String {
    match s {
        s if s >= 100.0 => format!("{s:.0} s"),
        s if s >= 10.0 => format!("{s:.1} s"),
        s => format!("{s:.2} s"),
    }
}

fn summary(r: &Results) -> Markup {
    html! {
        dl.facts {
            dt { "cases" } dd { (r.cases.len()) ": " (counts(&r.counts)) }
            dt { "elapsed" } dd { (secs(r.elapsed_s)) }
            @if let Some(s) = &r.selection {
                dt { "selection" }
                dd {
                    (s.cases) " cases selected, digest " code { (s.digest) }
                    @if let Some(shard) = &s.shard { ", shard " (shard) }
                }
            }
            @if !r.differing.is_empty() {
                dt { "kernels differ" }
                dd { a href="#kernel-matrix" { (r.differing.len()) " cases" } }
            }
        }
        table.kernels {
            thead { tr {
                th { "kernel" } th { "release" } th { "image" } th { "accel" } th { "QEMU" }
                th.n { "elapsed" } th.n { "VMs" } th { "cases" } th { "failed boots" }
            } }
            tbody {
                @for k in &r.kernels { tr {
                    td { (k.kernel_id) } td { code { (k.kernel_release) } }
                    td { code { (k.rerun.image_key) } } td { (k.accel) } td { (k.qemu_version) }
                    td.n { (secs(k.elapsed_s)) } td.n { (k.qemu_command_lines.len()) }
                    td { (counts(&k.counts)) }
                    td {
                        @for b in &k.boot_failures {
                            @let p = results::under(&k.dir, b);
                            a href=(p.display().to_string()) { (p.display().to_string()) } " "
                        }
                    }
                } }
            }
        }
    }
}

/// The case x kernel matrix: one row per case id, a cell per kernel.
fn matrix(r: &Results) -> Markup {
    let kernel_index: HashMap<&str, usize> =
        r.kernels.iter().enumerate().map(|(i, k)| (k.kernel_release.as_str(), i)).collect();
    let mut rows: Vec<(&str, Vec<Option<Status>>)> = Vec::new();
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for c in &r.cases {
        let row = *row_of.entry(&c.id).or_insert_with(|| {
            rows.push((&c.id, vec![None; r.kernels.len()]));
            rows.len() - 1
        });
        if let Some(&k) = kernel_index.get(c.kernel.as_str()) {
            rows[row].1[k] = Some(c.status);
        }
    }
    let differing: std::collections::HashSet<&str> =
        r.differing.iter().map(String::as_str).collect();
    html! {
        h2 id="kernel-matrix" { "Kernel matrix" }
        @let only = !r.differing.is_empty();
        p {
            (r.differing.len()) " of " (rows.len()) " cases differ between kernels (marked). "
            label { input #only-differing type="checkbox" checked[only]; " only the rows that differ" }
        }
        // Opens on the rows that differ, when some do: with thousands of cases, those are the
        // rows to read.
        table #matrix class=[only.then_some("only-differing")] {
            thead { tr {
                th { "case" }
                @for k in &r.kernels { th { code { (k.kernel_release) } } }
            } }
            tbody {
                @for (id, cells) in &rows {
                    tr class=[differing.contains(id).then_some("differs")] data-id=(id) {
                        td.id { (id) }
                        @for cell in cells {
                            td { @match cell {
                                Some(s) => (badge(*s)),
                                None => span.st.st-missing { "-" },
                            } }
                        }
                    }
                }
            }
        }
    }
}

fn case_table(r: &Results) -> Markup {
    let present: Vec<Status> =
        Status::ALL.into_iter().filter(|s| r.counts.contains_key(s.name())).collect();
    html! {
        h2 id="cases-heading" { "Cases" }
        div.filters {
            input #filter-text type="search" placeholder="filter: words of the id, kernel or message";
            select #filter-status {
                option value="" { "every status" }
                option value="failures" { "failed, crashed, hung, errored" }
                @for s in &present { option value=(s.name()) { (s.name()) } }
            }
            span { span #shown { (r.cases.len()) } " of " (r.cases.len()) " shown" }
        }
        table #cases {
            colgroup {
                col.c-status; col.c-id; col.c-kernel; col.c-time; col.c-message;
            }
            thead { tr {
                th { "status" } th { "case" } th { "kernel" } th.n { "time" } th { "message" }
            } }
            tbody {
                @for (i, c) in r.cases.iter().enumerate() {
                    tr data-status=(c.status.name()) data-failure[c.status.is_failure()]
                        data-id=(c.id) data-kernel=(c.kernel) {
                        td { (badge(c.status)) }
                        td.id {
                            @if c.status.is_failure() { a href={ "#f-" (i) } { (c.id) } }
                            @else { (c.id) }
                        }
                        td.k { (c.kernel) }
                        td.n { (format!("{:.2}", c.duration_s)) }
                        td { (c.message) }
                    }
                }
            }
        }
    }
}

fn outside(r: &Results) -> Markup {
    html! {
        h2 id="outside" { "Kernel log outside every case (fails the run)" }
        @for o in &r.kernel_log_outside_cases {
            section.failure {
                h3 { (o.kernel) ": " (o.outside.place) }
                @if let Some(g) = &o.outside.gap { p { "records may be missing: " (g) } }
                @if !o.outside.bad.is_empty() {
                    ul { @for b in &o.outside.bad { li { code { (b) } } } }
                }
                details {
                    summary { "the lines (" (o.outside.lines.len()) ")" }
                    pre.log { (o.outside.lines.join("\n")) }
                }
            }
        }
    }
}

/// A failed case: what it is, each problem (a failed step with its expectation and observation),
/// its measurements and phases, and its kernel log.
fn failure(run_dir: &Path, i: usize, c: &CaseEntry, budget: &mut usize) -> Markup {
    let log_path = c.kernel_log_path.display().to_string();
    html! {
        section class={ "failure failure-" (c.status.name()) } id={ "f-" (i) } data-id=(c.id) data-kernel=(c.kernel) {
            h3 { (badge(c.status)) " " span.id { (c.id) } " on " code { (c.kernel) } }
            dl.facts {
                dt { "message" } dd.message { (c.message) }
                dt { "scenario" } dd { code { (c.file.display().to_string()) } }
                dt { "time" } dd { (secs(c.duration_s)) }
                dt { "seed" } dd { code { (c.seed) } }
                dt { "VM" } dd { @match c.vm { Some(v) => (v), None => "none" } }
                @if !c.phases.is_empty() {
                    dt { "phases" }
                    dd { @for p in &c.phases {
                        (p.name) " " (secs(p.micros as f64 / 1e6)) "; "
                    } }
                }
            }
            @let steps: Vec<_> = c.problems.iter().filter_map(|p| match p {
                Problem::Step(s) => Some(s),
                _ => None,
            }).collect();
            @if !steps.is_empty() {
                table.steps {
                    thead { tr {
                        th.n { "step" } th.n { "line" } th { "operation" } th { "expected" }
                        th { "observed" }
                    } }
                    tbody { @for s in &steps { tr {
                        td.n { (s.number) } td.n { (s.line) } td { code { (s.op) } }
                        td.expected { (s.expected.to_string()) }
                        td.observed { (s.observed.to_string()) }
                    } } }
                }
            }
            @let others: Vec<_> = c.problems.iter()
                .filter(|p| !matches!(p, Problem::Step(_) | Problem::KernelLine { .. }))
                .collect();
            @if !others.is_empty() {
                ul.problems { @for p in &others { li { (p.to_string()) } } }
            }
            @let lines: Vec<&str> = c.problems.iter().filter_map(|p| match p {
                Problem::KernelLine { line } => Some(line.as_str()),
                _ => None,
            }).collect();
            @if !lines.is_empty() {
                details.bad-lines open[lines.len() <= 10] {
                    summary { "kernel-log lines that fail the case: " (lines.len()) }
                    pre.log { (lines.join("\n")) }
                }
            }
            @if !c.measurements.is_empty() {
                p { "measured:" }
                ul { @for m in &c.measurements { li { (m) } } }
            }
            (kernel_log(&run_dir.join(&c.kernel_log_path), &log_path, budget))
        }
    }
}

/// A case's kernel log, cut to its head and tail, within what is left of the page's budget.
fn kernel_log(path: &Path, href: &str, budget: &mut usize) -> Markup {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return html! { p.note { "kernel log " (href) " unreadable: " (e.to_string()) } },
    };
    let lines: Vec<&str> = text.lines().collect();
    let cut = |l: &&str| -> String {
        match l.char_indices().nth(LINE_MAX) {
            Some((at, _)) => format!("{} [... line cut]", &l[..at]),
            None => l.to_string(),
        }
    };
    let (head, tail, left_out) = match lines.len() > LOG_HEAD + LOG_TAIL {
        true => (
            &lines[..LOG_HEAD],
            &lines[lines.len() - LOG_TAIL..],
            lines.len() - LOG_HEAD - LOG_TAIL,
        ),
        false => (&lines[..], &lines[..0], 0),
    };
    let head: Vec<String> = head.iter().map(cut).collect();
    let tail: Vec<String> = tail.iter().map(cut).collect();
    let size: usize = head.iter().chain(&tail).map(|l| l.len() + 1).sum();
    if size > *budget {
        return html! {
            p.note {
                "kernel log (" (lines.len()) " lines) left out: the page holds "
                (LOG_BUDGET >> 20) " MiB of kernel logs; it is " a href=(href) { (href) }
            }
        };
    }
    *budget -= size;
    html! {
        details.klog open {
            summary { "kernel log: " a href=(href) { (href) } " (" (lines.len()) " lines)" }
            @if lines.is_empty() { p.note { "empty" } }
            @else {
                pre.log {
                    (head.join("\n"))
                    @if left_out > 0 {
                        "\n" span.note { "[... " (left_out) " lines left out: the whole log is "
                        (href) " ...]" } "\n"
                        (tail.join("\n"))
                    }
                }
            }
        }
    }
}

const STATUS_COLOURS: [(Status, &str); 7] = [
    (Status::Pass, "#2e7d32"),
    (Status::Fail, "#c62828"),
    (Status::Skip, "#9e9e9e"),
    (Status::Xfail, "#1565c0"),
    (Status::Crash, "#6a1b9a"),
    (Status::Hang, "#e65100"),
    (Status::Error, "#5d4037"),
];

fn colour(s: Status) -> &'static str {
    STATUS_COLOURS[s as usize].1
}

const PALETTE: [&str; 8] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

fn legend(items: &[(&str, &str)]) -> Markup {
    html! {
        div.legend { @for (name, c) in items { span { i style={ "background:" (c) } {} (name) } } }
    }
}

/// Histogram of the case durations on a log scale, each bar split by status.
fn durations(r: &Results) -> Markup {
    let timed: Vec<(f64, Status)> =
        r.cases.iter().filter(|c| c.duration_s > 0.0).map(|c| (c.duration_s, c.status)).collect();
    if timed.is_empty() {
        return html! {};
    }
    const PER_DECADE: f64 = 5.0;
    let (min, max) =
        timed.iter().fold((f64::MAX, 0.0f64), |(lo, hi), (d, _)| (lo.min(*d), hi.max(*d)));
    let lo = min.log10().floor();
    let hi = (max.log10().ceil()).max(lo + 1.0);
    let bins = ((hi - lo) * PER_DECADE) as usize;
    let mut counts = vec![[0usize; 7]; bins];
    for (d, s) in &timed {
        let b = (((d.log10() - lo) * PER_DECADE) as usize).min(bins - 1);
        counts[b][*s as usize] += 1;
    }
    let tallest = counts.iter().map(|c| c.iter().sum::<usize>()).max().unwrap_or(1).max(1);
    let (w, h, left, bottom, right) = (760.0, 200.0, 40.0, 24.0, 30.0);
    let bw = (w - left - right) / bins as f64;
    let y = |n: usize| (h - bottom) * n as f64 / tallest as f64;
    let used: Vec<(&str, &str)> = STATUS_COLOURS
        .iter()
        .filter(|(s, _)| timed.iter().any(|(_, t)| t == s))
        .map(|(s, c)| (s.name(), *c))
        .collect();
    let skipped = r.cases.len() - timed.len();
    // Each bin's statuses stacked, in the order of the statuses.
    let mut bars = Vec::new();
    for (b, c) in counts.iter().enumerate() {
        let mut below = 0;
        for s in Status::ALL.into_iter().filter(|&s| c[s as usize] > 0) {
            let n = c[s as usize];
            let x = left + b as f64 * bw + 1.0;
            bars.push((x, h - bottom - y(below + n), y(n), s, n, b));
            below += n;
        }
    }
    html! {
        h3 { "Case durations (" (timed.len()) " cases, log scale)" }
        svg width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
            title { "histogram of case durations" }
            line x1=(left) y1=(h - bottom) x2=(w - right) y2=(h - bottom) stroke="#999" {}
            text x="2" y="12" { (tallest) }
            text x="2" y=(h - bottom) { "0" }
            @for (x, y, height, s, n, b) in &bars {
                rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", bw - 2.0))
                    height=(format!("{height:.1}")) fill=(colour(*s)) {
                    title {
                        (n) " " (s.name()) ", " (secs(10f64.powf(lo + *b as f64 / PER_DECADE)))
                        " to " (secs(10f64.powf(lo + (b + 1) as f64 / PER_DECADE)))
                    }
                }
            }
            @for d in 0..=((hi - lo) as usize) {
                @let x = left + d as f64 * PER_DECADE * bw;
                line x1=(x) y1=(h - bottom) x2=(x) y2=(h - bottom + 4.0) stroke="#999" {}
                text x=(x) y=(h - 6.0) text-anchor="middle" { (decade(lo as i32 + d as i32)) }
            }
        }
        (legend(&used))
        @if skipped > 0 { p.note { (skipped) " cases took no time (skipped) and are not drawn." } }
    }
}

/// `10^e` seconds as a tick label: `0.01 s`, `1 s`, `100 s`.
fn decade(e: i32) -> String {
    match e {
        e if e < 0 => format!("{:.*} s", (-e) as usize, 10f64.powi(e)),
        e => format!("{} s", 10u64.pow(e as u32)),
    }
}

/// The slowest cases, a bar each.
fn slowest(r: &Results) -> Markup {
    let mut by_time: Vec<&CaseEntry> = r.cases.iter().filter(|c| c.duration_s > 0.0).collect();
    if by_time.is_empty() {
        return html! {};
    }
    by_time.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    by_time.truncate(SLOWEST);
    let several = r.kernels.len() > 1;
    let (w, row, label) = (1000.0, 16.0, 520.0);
    let h = row * by_time.len() as f64 + 4.0;
    let longest = by_time[0].duration_s;
    let scale = (w - label - 80.0) / longest;
    html! {
        h3 { "The " (by_time.len()) " slowest cases" }
        svg width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
            title { "the slowest cases" }
            @for (i, c) in by_time.iter().enumerate() {
                @let y = i as f64 * row;
                @let name = match several {
                    true => format!("{} ({})", c.id, c.kernel),
                    false => c.id.clone(),
                };
                text x="0" y=(y + 12.0) { (shorten(&name, 80)) title { (name) } }
                rect x=(label) y=(y + 3.0) width=(format!("{:.1}", c.duration_s * scale))
                    height=(row - 5.0) fill=(colour(c.status)) {}
                text x=(format!("{:.1}", label + c.duration_s * scale + 4.0)) y=(y + 12.0) {
                    (secs(c.duration_s))
                }
            }
        }
    }
}

fn shorten(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Where the cases' time went in the guest: each phase's total over the cases, per kernel.
fn phases(r: &Results) -> Markup {
    let ordered = r.phase_totals();
    let names: Vec<&str> = ordered.iter().map(|(n, _)| *n).collect();
    let totals: HashMap<&str, Vec<u64>> = ordered.into_iter().collect();
    if names.is_empty() {
        return html! {};
    }
    let kernel_totals: Vec<u64> =
        (0..r.kernels.len()).map(|k| totals.values().map(|t| t[k]).sum()).collect();
    let longest = totals.values().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let (w, row, label) = (900.0, 14.0, 110.0);
    let group = row * r.kernels.len() as f64 + 6.0;
    let h = group * names.len() as f64;
    let scale = (w - label - 150.0) / longest;
    let kernels: Vec<(&str, &str)> = r
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| (k.kernel_release.as_str(), PALETTE[i % PALETTE.len()]))
        .collect();
    html! {
        h3 { "Case phases: the guest's time, summed over the cases" }
        svg width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
            title { "time per case phase" }
            @for (n, name) in names.iter().enumerate() {
                @let y0 = n as f64 * group;
                text x="0" y=(y0 + 11.0) { (name) }
                @for (k, micros) in totals[name].iter().enumerate() {
                    @let y = y0 + k as f64 * row;
                    @let width = *micros as f64 * scale;
                    rect x=(label) y=(y + 2.0) width=(format!("{width:.1}")) height=(row - 3.0)
                        fill=(kernels[k].1) {}
                    text x=(format!("{:.1}", label + width + 4.0)) y=(y + 11.0) {
                        (secs(*micros as f64 / 1e6))
                        (format!(" ({:.0}%)", 100.0 * *micros as f64
                            / kernel_totals[k].max(1) as f64))
                    }
                }
            }
        }
        @if kernels.len() > 1 { (legend(&kernels)) }
    }
}

/// A VM's boot as its serial console tells it: the guest's uptime when the agent started (init),
/// when sshd ran and when the agent said it was ready.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Boot {
    pub init: Option<f64>,
    pub sshd: Option<f64>,
    pub ready: Option<f64>,
}

/// Each boot on a serial log, in order (a new one at each `daxtest-agent: init at`).
pub fn boots_of(serial: &str) -> Vec<Boot> {
    let mut boots: Vec<Boot> = Vec::new();
    let at = |l: &str, what: &str| -> Option<f64> {
        let rest = l.split_once(what)?.1;
        rest.trim().trim_end_matches('s').parse().ok()
    };
    for l in serial.lines() {
        if let Some(t) = at(l, console::INIT) {
            boots.push(Boot { init: Some(t), ..Boot::default() });
        } else if let Some(b) = boots.last_mut() {
            if let Some(t) = at(l, console::SSHD_STARTED) {
                b.sshd = Some(t);
            } else if let Some(t) = at(l, console::READY) {
                b.ready = Some(t);
            }
        }
    }
    boots
}

/// The VMs' boot phases, per kernel: a stacked bar per boot (kernel to init, init to sshd, sshd
/// to ready) and the medians.
fn boots(run_dir: &Path, r: &Results) -> Markup {
    let per_kernel: Vec<(&str, Vec<Boot>)> = r
        .kernels
        .iter()
        .map(|k| {
            let serial = results::under(run_dir, &k.dir).join("serial.log");
            let text =
                String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default()).into_owned();
            (k.kernel_release.as_str(), boots_of(&text))
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    if per_kernel.is_empty() {
        return html! {};
    }
    const SEGMENTS: [(&str, &str); 3] =
        [("kernel to init", "#1f77b4"), ("init to sshd", "#ff7f0e"), ("sshd to ready", "#2ca02c")];
    let longest = per_kernel
        .iter()
        .flat_map(|(_, b)| b)
        .filter_map(|b| b.ready.or(b.sshd).or(b.init))
        .fold(0.0f64, f64::max)
        .max(0.1);
    let (w, row, label) = (900.0, 12.0, 230.0);
    let scale = (w - label - 60.0) / longest;
    html! {
        h3 { "VM boot phases (the guest's uptime, from the serial console)" }
        (legend(&SEGMENTS))
        @for (release, boots) in &per_kernel {
            @let drawn = &boots[..boots.len().min(BOOTS_DRAWN)];
            @let h = row * drawn.len() as f64 + 4.0;
            p {
                code { (release) } ": " (boots.len()) " boots; median "
                @for (name, v) in [
                    ("init", median(&boots.iter().filter_map(|b| b.init).collect::<Vec<_>>())),
                    ("sshd", median(&boots.iter().filter_map(|b| b.sshd).collect::<Vec<_>>())),
                    ("ready", median(&boots.iter().filter_map(|b| b.ready).collect::<Vec<_>>())),
                ] {
                    @if let Some(v) = v { (name) " at " (secs(v)) "; " }
                }
                @if drawn.len() < boots.len() { "the first " (drawn.len()) " drawn" }
            }
            svg width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
                title { "boot phases on " (release) }
                @for (i, b) in drawn.iter().enumerate() {
                    @let y = i as f64 * row;
                    @let marks = [Some(0.0), b.init, b.sshd, b.ready];
                    text x="0" y=(y + 10.0) { "boot " (i + 1)
                        @if b.ready.is_none() { " (not ready)" } }
                    @for (s, (name, c)) in SEGMENTS.iter().enumerate() {
                        @if let (Some(a), Some(z)) = (marks[s], marks[s + 1]) {
                            rect x=(format!("{:.1}", label + a * scale)) y=(y + 2.0)
                                width=(format!("{:.1}", (z - a).max(0.0) * scale))
                                height=(row - 3.0) fill=(c) {
                                title { (name) ": " (secs(z - a)) }
                            }
                        }
                    }
                    @if let Some(t) = b.ready.or(b.sshd).or(b.init) {
                        text x=(format!("{:.1}", label + t * scale + 4.0)) y=(y + 10.0) {
                            (secs(t))
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
