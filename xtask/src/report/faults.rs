//! `bench faults`: what a page fault costs, by file layout, mapping, filesystem and page size.
//! The grid is a scenario file of `store_profile` cases ([`scenario`]) that the normal runner
//! runs; its results.json holds each case's samples, which are read back into cells
//! ([`cells`]) and reported as a table with ratios against the written + MAP_SHARED DAX cell
//! ([`table`]), the raw samples as JSON and a latency CDF per layout as SVG ([`write`]), which
//! report.html shows ([`plots`]). Times under TCG are inflated: only ratios within one run mean
//! something, and nothing here is judged.

use super::results::{CaseEntry, Results};
use crate::run::events::Status;
use crate::version::KernelVersion;
use daxtest_proto::case::{FaultProfile, Fs};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The scenario's name: case ids are `faults/LAYOUT-KIND-PAGE/FS/MOUNT`.
pub const NAME: &str = "faults";

/// First stores per cell: a page each (4 KiB: a 1 MiB mapping, which can hold no PMD entry) or a
/// PMD each (2 MiB: 32 MiB mapped 2 MiB into the file). Chosen so that the whole grid (42 cases)
/// runs in a few minutes under TCG.
pub const PTE_SAMPLES: u64 = 256;
pub const PMD_SAMPLES: u64 = 16;

/// How the mapped file's blocks are before the mmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// pwrite of every byte, then fsync: allocated, written, durable ("immutable extents").
    Written,
    /// fallocate, then fsync: allocated, unwritten extents.
    Unwritten,
    /// truncate up, then fsync: a hole.
    Sparse,
    /// FICLONE of a written file (xfs): every block shared, a store must copy it.
    Reflinked,
}

impl Layout {
    pub const ALL: [Layout; 4] =
        [Layout::Written, Layout::Unwritten, Layout::Sparse, Layout::Reflinked];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Written => "written",
            Layout::Unwritten => "unwritten",
            Layout::Sparse => "sparse",
            Layout::Reflinked => "reflinked",
        }
    }
}

/// How the file is mapped, and whether DAX serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// MAP_SHARED on a dax=always mount.
    SharedDax,
    /// MAP_SHARED_VALIDATE | MAP_SYNC on a dax=always mount.
    SyncDax,
    /// MAP_SHARED on a dax=never mount: the page cache.
    SharedPageCache,
}

impl Mapping {
    pub const ALL: [Mapping; 3] = [Mapping::SharedDax, Mapping::SyncDax, Mapping::SharedPageCache];

    pub fn label(self) -> &'static str {
        match self {
            Mapping::SharedDax => "MAP_SHARED dax",
            Mapping::SyncDax => "MAP_SYNC dax",
            Mapping::SharedPageCache => "MAP_SHARED no dax",
        }
    }

    /// The scenario's mmap kind and the mount.
    fn kind_and_mount(self) -> (&'static str, &'static str) {
        match self {
            Mapping::SharedDax => ("shared", "dax=always"),
            Mapping::SyncDax => ("sync", "dax=always"),
            Mapping::SharedPageCache => ("shared", "dax=never"),
        }
    }
}

/// The size of what each sample's first store touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Page {
    #[serde(rename = "4k")]
    Pte,
    #[serde(rename = "2m")]
    Pmd,
}

impl Page {
    pub const ALL: [Page; 2] = [Page::Pte, Page::Pmd];

    pub fn name(self) -> &'static str {
        match self {
            Page::Pte => "4k",
            Page::Pmd => "2m",
        }
    }

    pub fn stride(self) -> u64 {
        match self {
            Page::Pte => 4096,
            Page::Pmd => 2 << 20,
        }
    }

    fn samples(self) -> u64 {
        match self {
            Page::Pte => PTE_SAMPLES,
            Page::Pmd => PMD_SAMPLES,
        }
    }

    /// Where the mapping starts in the file. A PMD mapping skips the file's first 2 MiB: on a
    /// fresh ext4 a new file's first allocation goes to the block after the inode tables, off a
    /// 2 MiB boundary, whatever the stripe (scenarios/huge-faults.toml).
    fn map_offset(self) -> u64 {
        match self {
            Page::Pte => 0,
            Page::Pmd => 2 << 20,
        }
    }
}

/// Cases that are no cell of the grid, run before each page size's cells with that page size's
/// fault paths (DAX and page cache, shared and sync; written, unwritten and sparse files). Under
/// TCG the first run of a kernel path pays for translating it, and the cells of one page size
/// right after those of the other ran slower for a few seconds (seen on 6.1, 6.12 and 7.2: the
/// first two dax=always 2 MiB cases after the 4 KiB ones took about 100 us a PMD fault, the same
/// cases alone or a few seconds later 15 to 18 us, whichever of MAP_SHARED and MAP_SYNC came
/// first). Without them the baseline, written + MAP_SHARED with DAX, would carry that.
fn warm_up(page: Page) -> String {
    // The cells' own shape: the same file size, mapping and number of first stores.
    let (len, offset, stride) = (page.samples() * page.stride(), page.map_offset(), page.stride());
    let size = offset + len;
    let mut s = String::new();
    for (kind, mount) in [("shared", ""), ("sync", "\nmatrix = { mount = [\"dax=always\"] }")] {
        let _ = write!(
            s,
            r#"
[[case]]
id = "warm-up-{kind}-{page}"
summary = "Not a cell: the {kind} fault paths of each layout taken once before the {page} cells"{mount}
steps = [
  {{ op = "write", file = "w", offset = 0, len = {size}, pattern = "a" }},
  {{ op = "create", file = "u" }},
  {{ op = "fallocate", file = "u", mode = "default", offset = 0, len = {size} }},
  {{ op = "create", file = "s" }},
  {{ op = "truncate", file = "s", size = {size} }},
  {{ op = "fsync", file = "w" }},
  {{ op = "fsync", file = "u" }},
  {{ op = "fsync", file = "s" }},
  {{ op = "mmap", file = "w", map = "w", offset = {offset}, len = {len}, kind = "{kind}" }},
  {{ op = "store_profile", map = "w", offset = 0, len = {len}, stride = {stride}, pattern = "b" }},
  {{ op = "mmap", file = "u", map = "u", offset = {offset}, len = {len}, kind = "{kind}" }},
  {{ op = "store_profile", map = "u", offset = 0, len = {len}, stride = {stride}, pattern = "b" }},
  {{ op = "mmap", file = "s", map = "s", offset = {offset}, len = {len}, kind = "{kind}" }},
  {{ op = "store_profile", map = "s", offset = 0, len = {len}, stride = {stride}, pattern = "b" }},
]
"#,
            page = page.name(),
        );
    }
    s
}

/// One case of the grid: its name in the scenario file, and what it measures.
fn case_name(layout: Layout, mapping: Mapping, page: Page) -> String {
    format!("{}-{}-{}", layout.name(), mapping.kind_and_mount().0, page.name())
}

/// The scenario file of the whole grid, for `cargo xtask test`: a case per layout, mmap kind
/// and page size, on xfs and ext4 (reflinked: xfs alone), each on the mounts its mapping needs.
/// Both filesystems are made with 2 MiB-aligned blocks, as scenarios/huge-faults.toml makes them,
/// so that a PMD-sized fault can be served by a PMD entry.
pub fn scenario() -> String {
    let mut s = format!(
        r#"# Generated by `cargo xtask bench faults` (xtask/src/report/faults.rs): what a page fault
# costs. Measured, never judged by time; every step but the profile only has to succeed.
format = 1
name = "{NAME}"
summary = "The first store to every page (4 KiB) or PMD (2 MiB) of a mapping, timed, by file layout (written, unwritten, sparse, reflinked), mapping (MAP_SHARED or MAP_SYNC with DAX, MAP_SHARED without) and filesystem"
references = [
  "fs/dax.c dax_iomap_pte_fault, dax_iomap_pmd_fault, dax_fault_iter (a shared extent is copied: dax_iomap_copy_around), dax_finish_sync_fault (MAP_SYNC: vfs_fsync_range when the fault's metadata is not yet durable, IOMAP_F_DIRTY)",
  "fs/xfs/xfs_iomap.c xfs_bmbt_to_iomap (IOMAP_F_DIRTY while the inode is pinned with unlogged changes), fs/ext4/inode.c ext4_iomap_begin (IOMAP_F_DIRTY when the inode has a journal commit pending)",
  "include/trace/events/fs_dax.h (dax_pte_fault_done, dax_pmd_fault_done), fs/xfs/xfs_stats.c (the log line: xs_log_force), fs/jbd2/journal.c jbd2_seq_info_show (transactions committed)",
  "../shared/dax-semantics.md: MAP_SYNC and immutable extents",
]
tags = ["bench", "faults"]

# Both dimensions named file-wide, so that every case id has both (a case narrows them).
[matrix]
fs = ["xfs", "ext4"]
mount = ["dax=always", "dax=never"]

[mkfs]
xfs = ["-m", "reflink=1", "-d", "su=2m,sw=1"]
ext4 = ["-b", "4096", "-E", "stride=512,stripe_width=512"]
"#
    );
    for page in Page::ALL {
        s.push_str(&warm_up(page));
        for layout in Layout::ALL {
            for (kind, mounts) in
                [("shared", "\"dax=always\", \"dax=never\""), ("sync", "\"dax=always\"")]
            {
                let mapping = if kind == "sync" { Mapping::SyncDax } else { Mapping::SharedDax };
                let fs = if layout == Layout::Reflinked { "\"xfs\"" } else { "\"xfs\", \"ext4\"" };
                let len = page.samples() * page.stride();
                let offset = page.map_offset();
                let size = offset + len;
                let prepare = match layout {
                    Layout::Written => format!(
                        "  {{ op = \"write\", file = \"f\", offset = 0, len = {size}, pattern = \"a\" }},\n"
                    ),
                    Layout::Unwritten => format!(
                        "  {{ op = \"create\", file = \"f\" }},\n  {{ op = \"fallocate\", file = \"f\", mode = \"default\", offset = 0, len = {size} }},\n"
                    ),
                    Layout::Sparse => format!(
                        "  {{ op = \"create\", file = \"f\" }},\n  {{ op = \"truncate\", file = \"f\", size = {size} }},\n"
                    ),
                    Layout::Reflinked => format!(
                        "  {{ op = \"write\", file = \"src\", offset = 0, len = {size}, pattern = \"a\" }},\n  {{ op = \"fsync\", file = \"src\" }},\n  {{ op = \"clone\", src = \"src\", dst = \"f\" }},\n"
                    ),
                };
                // FICLONE of a file on a dax=always XFS needs 6.2 ("xfs: remove restrictions
                // for fsdax and reflink"); before it the clone is refused with EINVAL.
                let requires = match (layout, kind) {
                    (Layout::Reflinked, _) => "requires = { kernel = \">=6.2\" }\n",
                    _ => "",
                };
                let _ = write!(
                    s,
                    r#"
[[case]]
id = "{id}"
summary = "{layout} file, {kind} mapping, the first store to each of {n} strides of {stride} bytes timed"
matrix = {{ fs = [{fs}], mount = [{mounts}] }}
{requires}steps = [
{prepare}  {{ op = "fsync", file = "f" }},
  {{ op = "mmap", file = "f", map = "m", offset = {offset}, len = {len}, kind = "{kind}" }},
  {{ op = "store_profile", map = "m", offset = 0, len = {len}, stride = {stride}, pattern = "b" }},
  {{ op = "munmap", map = "m" }},
]
"#,
                    id = case_name(layout, mapping, page),
                    layout = layout.name(),
                    n = page.samples(),
                    stride = page.stride(),
                );
            }
        }
    }
    s
}

/// A cell of the grid as one run measured it.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// `uname -r`.
    pub kernel: String,
    pub fs: Fs,
    pub page: Page,
    pub layout: Layout,
    pub mapping: Mapping,
    /// The case id, its status and message.
    pub case: String,
    pub status: Status,
    pub message: String,
    /// None when the case did not get as far as its profile (a skip, a failure).
    pub profile: Option<FaultProfile>,
}

impl Cell {
    pub fn summary(&self) -> Option<Summary> {
        self.profile.as_ref().and_then(|p| summary(&p.samples_ns))
    }
}

/// The grid's cells in `results`, in table order (kernel, fs, page, layout, mapping). Cases of
/// other scenarios are left out.
pub fn cells(results: &Results) -> Vec<Cell> {
    let mut out: Vec<Cell> = results.cases.iter().filter_map(cell).collect();
    out.sort_by(|a, b| {
        (release_order(&a.kernel), a.fs, a.page, a.layout, a.mapping).cmp(&(
            release_order(&b.kernel),
            b.fs,
            b.page,
            b.layout,
            b.mapping,
        ))
    });
    out
}

/// Releases in version order (6.9 before 6.12); the whole string breaks ties.
fn release_order(release: &str) -> (Option<KernelVersion>, &str) {
    (KernelVersion::parse(release), release)
}

fn cell(c: &CaseEntry) -> Option<Cell> {
    let mut parts = c.id.split('/');
    let (name, case, fs, mount) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if name != NAME {
        return None;
    }
    let fs = match fs {
        "xfs" => Fs::Xfs,
        "ext4" => Fs::Ext4,
        _ => return None,
    };
    let (layout, mapping, page) = Layout::ALL
        .iter()
        .flat_map(|&l| Mapping::ALL.iter().flat_map(move |&m| Page::ALL.map(|p| (l, m, p))))
        .find(|&(l, m, p)| case_name(l, m, p) == case && m.kind_and_mount().1 == mount)?;
    Some(Cell {
        kernel: c.kernel.clone(),
        fs,
        page,
        layout,
        mapping,
        case: c.id.clone(),
        status: c.status,
        message: c.message.clone(),
        profile: c.profiles.first().map(|p| p.profile.clone()),
    })
}

/// The figures of a cell's samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub total: u64,
}

/// count, p50, p99 (nearest rank), max and total of `samples`; None when there are none.
pub fn summary(samples: &[u64]) -> Option<Summary> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    Some(Summary {
        count: v.len(),
        p50: percentile(&v, 50.0)?,
        p99: percentile(&v, 99.0)?,
        max: *v.last()?,
        total: v.iter().sum(),
    })
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `p` percent
/// of the samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(n).checked_sub(1)?).copied()
}

/// The cell every other of its kernel, filesystem and page size is compared with.
fn baseline<'a>(cells: &'a [Cell], c: &Cell) -> Option<&'a Cell> {
    cells.iter().find(|b| {
        b.kernel == c.kernel
            && b.fs == c.fs
            && b.page == c.page
            && b.layout == Layout::Written
            && b.mapping == Mapping::SharedDax
    })
}

fn ratio(a: u64, b: u64) -> String {
    match b {
        0 => "-".into(),
        _ => format!("{:.1}", a as f64 / b as f64),
    }
}

fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The table: a line per cell with count, p50, p99, max (us), total (ms), p50 and total against
/// the written + MAP_SHARED DAX cell of the same kernel, filesystem and page size, the DAX faults
/// by size (PTE, PMD, PMD attempts that fell back), all faults the process took, and the
/// filesystem's metadata work (XFS log forces, jbd2 commits). A cell without figures says why.
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<4} {:<4} {:<9} {:<17} {:>5} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>4} {:>5} {:>6} {:>6}",
        "kernel", "fs", "page", "layout", "mapping", "n", "p50 us", "p99 us", "max us",
        "total ms", "p50 x", "tot x", "PTE", "PMD", "fallb", "faults", "meta"
    );
    let mut last = None;
    for c in cells {
        let group = (&c.kernel, c.fs, c.page);
        if last.is_some_and(|l| l != group) {
            s.push('\n');
        }
        last = Some(group);
        let kernel: String = c.kernel.chars().take(10).collect();
        let head = format!(
            "{kernel:<10} {:<4} {:<4} {:<9} {:<17}",
            c.fs.name(),
            c.page.name(),
            c.layout.name(),
            c.mapping.label()
        );
        let (Some(p), Some(sum)) = (&c.profile, c.summary()) else {
            let why = match c.status {
                Status::Skip => format!("skipped: {}", c.message),
                s => format!("{}: {}", s.name(), c.message),
            };
            let _ = writeln!(s, "{head} {}", why.chars().take(110).collect::<String>());
            continue;
        };
        let base = baseline(cells, c).and_then(Cell::summary);
        let _ = writeln!(
            s,
            "{head} {:>5} {:>8} {:>8} {:>8} {:>8.2} {:>6} {:>6} {:>5} {:>4} {:>5} {:>6} {:>6}",
            sum.count,
            micros(sum.p50),
            micros(sum.p99),
            micros(sum.max),
            sum.total as f64 / 1e6,
            base.map_or("-".into(), |b| ratio(sum.p50, b.p50)),
            base.map_or("-".into(), |b| ratio(sum.total, b.total)),
            p.pte_faults,
            p.pmd_faults,
            p.pmd_fallbacks,
            p.faults,
            p.metadata.as_ref().map_or("-".into(), |m| m.count.to_string()),
        );
    }
    s.push_str(
        "\np50 x, tot x: against written + MAP_SHARED dax of the same kernel, fs and page. PTE, PMD, \
         fallb: DAX faults by size (fs_dax tracepoints). faults: all faults of the process \
         (getrusage). meta: xfs log forces / jbd2 commits during the stores.\n",
    );
    s
}

/// The table as the README shows it: a row per filesystem, page size, layout and mapping, a
/// column per kernel (by its version, "6.12"); each cell "p50 x / total x; faults by size,
/// metadata work", or why the cell has no figures.
pub fn markdown(cells: &[Cell]) -> String {
    let mut kernels: Vec<&str> = cells.iter().map(|c| c.kernel.as_str()).collect();
    kernels.dedup();
    let mut rows: Vec<(Fs, Page, Layout, Mapping)> =
        cells.iter().map(|c| (c.fs, c.page, c.layout, c.mapping)).collect();
    rows.sort();
    rows.dedup();
    let mut s = String::from("| fs | page | layout | mapping |");
    for k in &kernels {
        let _ = write!(s, " {} |", version_of(k));
    }
    s.push_str("\n| --- | --- | --- | --- |");
    s.push_str(&" --- |".repeat(kernels.len()));
    s.push('\n');
    for (fs, page, layout, mapping) in rows {
        let size = if page == Page::Pte { "4 KiB" } else { "2 MiB" };
        let _ = write!(s, "| {} | {size} | {} | {} |", fs.name(), layout.name(), mapping.label());
        for k in &kernels {
            let cell = cells.iter().find(|c| {
                c.kernel == *k && (c.fs, c.page, c.layout, c.mapping) == (fs, page, layout, mapping)
            });
            let text = cell.map_or("-".to_string(), |c| markdown_cell(cells, c));
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    s
}

fn markdown_cell(cells: &[Cell], c: &Cell) -> String {
    let (Some(p), Some(sum)) = (&c.profile, c.summary()) else {
        let why = c.message.split(',').next().unwrap_or_default();
        return format!("{} ({why})", c.status.name());
    };
    let base = baseline(cells, c).and_then(Cell::summary);
    let ratios = base.map_or("-".into(), |b| {
        format!("{} / {}", ratio(sum.p50, b.p50), ratio(sum.total, b.total))
    });
    let faults = match (c.mapping, c.page) {
        (Mapping::SharedPageCache, _) => format!("{} faults", p.faults),
        (_, Page::Pte) => format!("{} PTE", p.pte_faults),
        (_, Page::Pmd) => format!("{} PMD", p.pmd_faults),
    };
    let what = if c.fs == Fs::Xfs { "forces" } else { "commits" };
    let meta = p.metadata.as_ref().map_or("-".into(), |m| m.count.to_string());
    format!("{ratios}; {faults}, {meta} {what}")
}

/// "6.12" of "6.12.117+deb12-amd64": the kernel's version as a column names it.
fn version_of(release: &str) -> String {
    release.split(['.', '-', '+']).take(2).collect::<Vec<_>>().join(".")
}

/// The raw figures, as `faults/samples.json` holds them.
#[derive(Serialize)]
struct Raw<'a> {
    /// The command that measured them.
    command: &'a str,
    run_id: &'a str,
    cells: Vec<RawCell<'a>>,
}

#[derive(Serialize)]
struct RawCell<'a> {
    #[serde(flatten)]
    cell: &'a Cell,
    summary: Option<Summary>,
}

/// Writes `dir/faults/`: table.txt, table.md (the README's form), samples.json (every cell with its samples) and a latency CDF
/// per kernel, filesystem, page size and layout (`cdf-KERNEL-FS-PAGE-LAYOUT.svg`, a line per
/// mapping). Returns the files written.
pub fn write(dir: &Path, results: &Results, command: &str) -> anyhow::Result<Vec<PathBuf>> {
    let cells = cells(results);
    let out = dir.join("faults");
    std::fs::create_dir_all(&out)?;
    let mut written = Vec::new();
    let mut put = |name: String, text: String| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
        Ok(())
    };
    put("table.txt".into(), format!("{command}\n\n{}", table(&cells)))?;
    put("table.md".into(), markdown(&cells))?;
    let raw = Raw {
        command,
        run_id: &results.run_id,
        cells: cells.iter().map(|c| RawCell { cell: c, summary: c.summary() }).collect(),
    };
    put("samples.json".into(), serde_json::to_string_pretty(&raw)?)?;
    let mut groups: Vec<(&str, Fs, Page, Layout)> =
        cells.iter().map(|c| (c.kernel.as_str(), c.fs, c.page, c.layout)).collect();
    groups.dedup();
    for (kernel, fs, page, layout) in groups {
        let series: Vec<(&str, &[u64])> = cells
            .iter()
            .filter(|c| (c.kernel.as_str(), c.fs, c.page, c.layout) == (kernel, fs, page, layout))
            .filter_map(|c| Some((c.mapping.label(), c.profile.as_ref()?.samples_ns.as_slice())))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!(
            "{kernel} {fs}: first store per {} page, {} file",
            if page == Page::Pte { "4 KiB" } else { "2 MiB" },
            layout.name()
        );
        let name = format!("cdf-{kernel}-{fs}-{}-{}.svg", page.name(), layout.name());
        put(name.replace(['/', ' '], "_"), cdf_svg(&title, &series)?)?;
    }
    Ok(written)
}

/// Series colours, one per mapping, as plotters' palette names them.
const COLOURS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x94, 0x67, 0xbd),
];

/// An SVG of the empirical CDFs of `series` (label, samples in ns): latency on a log axis in
/// microseconds, the fraction of first stores at or below it upwards; a line per series.
pub fn cdf_svg(title: &str, series: &[(&str, &[u64])]) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let all = series.iter().flat_map(|(_, s)| s.iter().copied());
    let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    anyhow::ensure!(hi > 0, "no samples to plot");
    let (lo, hi) = ((lo.max(1) as f64 / 1000.0) / 1.5, hi as f64 / 1000.0 * 1.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plotting {title}: {e:?}");
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("first store, us (log)")
            .y_desc("fraction of stores")
            .draw()
            .map_err(e)?;
        for (i, (label, samples)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut v = samples.to_vec();
            v.sort_unstable();
            let n = v.len() as f64;
            let points: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .map(|(k, &x)| (x as f64 / 1000.0, (k + 1) as f64 / n))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(e)?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// The plots and table `bench faults` left in `run_dir/faults/`, for report.html: the SVG text
/// itself (the page stays one self-contained file), in file-name order. None when there are none.
pub fn plots(run_dir: &Path) -> Option<(String, Vec<(String, String)>)> {
    let dir = run_dir.join("faults");
    let table = std::fs::read_to_string(dir.join("table.txt")).ok()?;
    let mut svgs: Vec<(String, String)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".svg"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect();
    svgs.sort();
    Some((table, svgs))
}

#[cfg(test)]
mod tests;
