//! Scenario files (`scenarios/*.toml`, format 1, documented in scenarios/README.md): parsing with
//! file:line:column diagnostics, matrix expansion into cases with stable ids, variables, kernel
//! conditions, and a validation pass over every file before anything boots.

use crate::lines::LineIndex;
use anyhow::Context;
use daxtest_proto::case::{
    CaseSpec, Count, Expect, Fs, MapKind, Op, Outcome, Shared, Step, RACE_SLOT,
};
use daxtest_proto::errno;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub const FORMAT: u32 = 1;
pub const SCENARIO_DIR: &str = "scenarios";

/// A user error in a scenario file, with where it is and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    format: toml::Spanned<u32>,
    name: toml::Spanned<String>,
    summary: String,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    matrix: MatrixDef,
    /// vars.<dimension>.<value>.<name> = "value", used as ${name} in expectations.
    #[serde(default)]
    vars: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// Extra mkfs arguments per filesystem.
    #[serde(default)]
    mkfs: BTreeMap<Fs, Vec<String>>,
    #[serde(default)]
    kernel_log: KernelLogSrc,
    /// Timeouts for every case of the file (the recipe's otherwise).
    #[serde(default)]
    timeout: TimeoutSrc,
    case: Vec<toml::Spanned<CaseDef>>,
}

/// `timeout = { step_s = 30, case_s = 120 }`: seconds before a case is reported as hung.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutDef {
    pub step_s: Option<u64>,
    pub case_s: Option<u64>,
}

/// `timeout` as written, each value with its place in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutSrc {
    step_s: Option<toml::Spanned<u64>>,
    case_s: Option<toml::Spanned<u64>>,
}

impl TimeoutSrc {
    fn plain(&self) -> TimeoutDef {
        TimeoutDef {
            step_s: self.step_s.as_ref().map(|v| *v.get_ref()),
            case_s: self.case_s.as_ref().map(|v| *v.get_ref()),
        }
    }

    /// A timeout of 0 s would report every case as hung: (offset, message) for each.
    fn errors(&self) -> Vec<(usize, String)> {
        [("step_s", &self.step_s), ("case_s", &self.case_s)]
            .into_iter()
            .filter_map(|(what, v)| v.as_ref().filter(|v| *v.get_ref() == 0).map(|v| (what, v)))
            .map(|(what, v)| {
                (
                    v.span().start,
                    format!(
                        "timeout {what} = 0: give a number of seconds above 0, or leave it out \
                         for the default of images/recipe.toml [timeouts]"
                    ),
                )
            })
            .collect()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixDef {
    fs: Option<Vec<Fs>>,
    mount: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelLogDef {
    /// Patterns the case must log.
    #[serde(default)]
    pub expected: Vec<String>,
    /// Lines that match a failure pattern but are accepted.
    #[serde(default)]
    pub benign: Vec<String>,
    /// Extra failure patterns.
    #[serde(default)]
    pub forbidden: Vec<String>,
}

/// `kernel_log` as written, each pattern with its place in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelLogSrc {
    #[serde(default)]
    expected: Vec<toml::Spanned<String>>,
    #[serde(default)]
    benign: Vec<toml::Spanned<String>>,
    #[serde(default)]
    forbidden: Vec<toml::Spanned<String>>,
}

impl KernelLogSrc {
    fn plain(&self) -> KernelLogDef {
        let strings = |v: &[toml::Spanned<String>]| v.iter().map(|p| p.get_ref().clone()).collect();
        KernelLogDef {
            expected: strings(&self.expected),
            benign: strings(&self.benign),
            forbidden: strings(&self.forbidden),
        }
    }

    /// Every pattern that is not a regular expression: (offset, message).
    fn errors(&self) -> Vec<(usize, String)> {
        let lists = [
            ("expected", &self.expected),
            ("benign", &self.benign),
            ("forbidden", &self.forbidden),
        ];
        let mut out = Vec::new();
        for (key, patterns) in lists {
            for p in patterns {
                if let Err(e) = regex::Regex::new(p.get_ref()) {
                    // The regex crate's message spans lines (the pattern, a caret, the error).
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                    out.push((
                        p.span().start,
                        format!(
                            "kernel_log.{key} pattern {:?} is not a regular expression: {why} \
                             (a literal ( [ {{ . * + ? | needs a backslash: \"\\\\(\" in a TOML \
                             string)",
                            p.get_ref()
                        ),
                    ));
                }
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDef {
    id: String,
    summary: String,
    requires: Option<toml::Spanned<Requires>>,
    matrix: Option<toml::Spanned<MatrixDef>>,
    #[serde(default)]
    xfail: Vec<toml::Spanned<XfailDef>>,
    #[serde(default)]
    kernel_log: KernelLogSrc,
    /// Replaces the file's [mkfs] arguments for the filesystems it names.
    #[serde(default)]
    mkfs: BTreeMap<Fs, Vec<String>>,
    /// Boot a new VM for this case (default false: one VM serves many cases).
    #[serde(default)]
    fresh_vm: bool,
    seed: Option<u64>,
    #[serde(default)]
    timeout: TimeoutSrc,
    steps: toml::Spanned<Vec<toml::Spanned<toml::Table>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requires {
    /// Version constraints, all of which must hold: ">=6.2".
    #[serde(default)]
    kernel: OneOrMany,
}

/// `xfail = [{ when = ..., reason, link, step = 3, errno = "EINVAL" }]`: a known bug, named by its
/// symptom, so that no other failure of the case passes for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct XfailDef {
    #[serde(default)]
    when: WhenDef,
    reason: String,
    link: String,
    /// The step (1-based) that fails; absent: the symptom is a kernel-log line.
    step: Option<usize>,
    errno: Option<String>,
    signal: Option<String>,
    /// A regular expression: over the failing step's observation, or over the kernel-log line.
    message: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenDef {
    #[serde(default)]
    kernel: OneOrMany,
    #[serde(default)]
    fs: OneOrMany,
    #[serde(default)]
    mount: OneOrMany,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::None => vec![],
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One alternative of a step's expectation: `{ when = {...}, errno = "EINVAL" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDef {
    #[serde(default)]
    when: WhenDef,
    ok: Option<bool>,
    errno: Option<String>,
    signal: Option<String>,
    content: Option<String>,
    dax: Option<String>,
    flag: Option<String>,
    extents: Option<String>,
    since: Option<String>,
    shared: Option<String>,
    exit: Option<i32>,
    /// Page faults of a store or load: `0` or a comparison such as `">=1"`.
    faults: Option<CountDef>,
}

/// A count as written: `faults = 0` or `faults = ">=1"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CountDef {
    Number(u64),
    Text(String),
}

// ---------------------------------------------------------------------------------------------
// Kernel versions and conditions.

/// A kernel version, upstream numbering (Debian's 6.1.0-55 package is 6.1.192).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// "6.12.117", "6.12.117-1~deb12u1", "6.1.0-55-amd64", "6.2".
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let core: String = s.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = core.split('.').filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(KernelVersion(major, minor, patch))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `>=6.2`, `<6.2`, `6.1` (any 6.1.x), `=6.1.192`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    op: &'static str,
    version: KernelVersion,
    /// How many components were written: `6.1` matches every 6.1.x.
    depth: usize,
    text: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let t = s.trim();
        let (op, rest) = [">=", "<=", ">", "<", "="]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", t));
        let rest = rest.trim();
        let depth = rest.split('.').count();
        let version = KernelVersion::parse(rest)
            .filter(|_| rest.chars().all(|c| c.is_ascii_digit() || c == '.') && depth <= 3)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a kernel version condition: write >=6.2, <6.2, 6.1 or =6.1.192"
                )
            })?;
        Ok(Constraint { op, version, depth, text: t.to_string() })
    }

    pub fn holds(&self, v: KernelVersion) -> bool {
        let trunc = |k: KernelVersion| match self.depth {
            1 => KernelVersion(k.0, 0, 0),
            2 => KernelVersion(k.0, k.1, 0),
            _ => k,
        };
        let v = trunc(v);
        match self.op {
            ">=" => v >= self.version,
            "<=" => v <= self.version,
            ">" => v > self.version,
            "<" => v < self.version,
            _ => v == self.version,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------------------------
// The expanded model.

/// A known kernel bug: the case is expected to fail on the kernels it names, with this symptom.
#[derive(Debug, Clone, PartialEq)]
pub struct Xfail {
    pub kernel: Vec<Constraint>,
    pub reason: String,
    pub link: String,
    pub symptom: Symptom,
}

/// How a known bug shows: a step's errno or signal, or a message (a step's observation or a
/// kernel-log line) matching a regular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Symptom {
    /// 1-based; `None` for a kernel-log symptom.
    pub step: Option<usize>,
    pub what: SymptomKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SymptomKind {
    Errno(String),
    Signal(String),
    Message(String),
}

impl fmt::Display for Symptom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.step, &self.what) {
            (Some(n), SymptomKind::Errno(e)) => write!(f, "step {n} fails with {e}"),
            (Some(n), SymptomKind::Signal(s)) => write!(f, "step {n} is killed by {s}"),
            (Some(n), SymptomKind::Message(m)) => write!(f, "step {n} shows /{m}/"),
            (None, SymptomKind::Message(m)) => write!(f, "the kernel logs /{m}/"),
            (None, other) => write!(f, "{other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseStep {
    pub line: usize,
    pub op: Op,
    /// Alternatives, the first whose kernel conditions hold wins.
    pub expect: Vec<(Vec<Constraint>, Expect)>,
}

/// One matrix cell of one case of one scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub scenario: String,
    pub file: PathBuf,
    pub line: usize,
    pub summary: String,
    pub fs: Fs,
    pub mount: String,
    pub mkfs: Vec<String>,
    pub requires: Vec<Constraint>,
    pub xfail: Vec<Xfail>,
    pub kernel_log: KernelLogDef,
    pub seed: u64,
    /// Runs on a VM of its own, booted for it.
    pub fresh_vm: bool,
    /// The case's own timeouts, else the file's; unset: the recipe's.
    pub timeout: TimeoutDef,
    pub steps: Vec<CaseStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    /// Line and column of `name` in the file, for diagnostics.
    name_at: (usize, usize),
    pub summary: String,
    pub references: Vec<String>,
    pub tags: Vec<String>,
    pub cases: Vec<Case>,
}

/// A case made concrete for one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Run { spec: Box<CaseSpec>, xfail: Option<Xfail> },
    Skip(String),
}

pub const DEVICE: &str = "/dev/pmem0";
pub const MOUNT_POINT: &str = "/mnt/test";

impl Case {
    pub fn resolve(&self, kernel: KernelVersion, seed: Option<u64>) -> Result<Resolved, String> {
        if let Some(c) = self.requires.iter().find(|c| !c.holds(kernel)) {
            return Ok(Resolved::Skip(format!("needs kernel {c}, this is {kernel}")));
        }
        let mut steps = Vec::new();
        for s in &self.steps {
            let expect = s
                .expect
                .iter()
                .find(|(when, _)| when.iter().all(|c| c.holds(kernel)))
                .map(|(_, e)| e.clone())
                .ok_or_else(|| {
                    format!(
                        "{}:{}: no expectation of this step applies to kernel {kernel}: add one \
                         without `when`",
                        self.file.display(),
                        s.line
                    )
                })?;
            steps.push(Step { line: s.line, op: s.op.clone(), expect });
        }
        let xfail = self.xfail.iter().find(|x| x.kernel.iter().all(|c| c.holds(kernel))).cloned();
        Ok(Resolved::Run {
            spec: Box::new(CaseSpec {
                id: self.id.clone(),
                fs: self.fs,
                mkfs_options: self.mkfs.clone(),
                mount_options: self.mount.clone(),
                device: DEVICE.into(),
                mount_point: MOUNT_POINT.into(),
                seed: seed.unwrap_or(self.seed),
                steps,
            }),
            xfail,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Every `.toml` file under the given paths (files as they are, directories recursively),
/// sorted, without README or hidden files, each once. A path that does not exist, or a directory
/// without scenario files, is an input error.
pub fn find_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let mut found = Vec::new();
        if p.is_dir() {
            toml_files_under(p, &mut found)?;
            if found.is_empty() {
                return Err(crate::exit::input(format!(
                    "{}: no scenario files (*.toml) in this directory",
                    p.display()
                )));
            }
        } else if p.exists() {
            found.push(p.clone());
        } else {
            return Err(crate::exit::input(format!("{}: no such file or directory", p.display())));
        }
        // The same file named twice (`scenarios/ scenarios/reflink.toml`) is loaded once.
        out.extend(
            found.into_iter().filter(|f| seen.insert(f.canonicalize().unwrap_or(f.clone()))),
        );
    }
    Ok(out)
}

fn toml_files_under(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|e| !e.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    entries.sort();
    let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
    out.extend(files.into_iter().filter(|f| f.extension().is_some_and(|x| x == "toml")));
    for d in &dirs {
        toml_files_under(d, out)?;
    }
    Ok(())
}

/// Loads and validates every file; all diagnostics of all files, not just the first.
pub fn load_all(files: &[PathBuf]) -> (Vec<Scenario>, Vec<Diagnostic>) {
    let mut scenarios = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => match parse(&text, f) {
                Ok(s) => scenarios.push(s),
                Err(d) => diags.extend(d),
            },
            Err(e) => diags.push(Diagnostic {
                file: f.clone(),
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    // Ids are stable names: a duplicate would make results ambiguous.
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut names: HashMap<String, (PathBuf, (usize, usize))> = HashMap::new();
    for s in &scenarios {
        if let Some((other, (line, col))) =
            names.insert(s.name.clone(), (s.file.clone(), s.name_at))
        {
            diags.push(Diagnostic {
                file: s.file.clone(),
                line: s.name_at.0,
                col: s.name_at.1,
                message: format!(
                    "scenario name {:?} is also used by {}:{line}:{col}: names must be unique \
                     (every case id starts with it); rename one of them",
                    s.name,
                    other.display()
                ),
            });
        }
        for c in &s.cases {
            if let Some((file, line)) = seen.insert(c.id.clone(), (c.file.clone(), c.line)) {
                diags.push(Diagnostic {
                    file: c.file.clone(),
                    line: c.line,
                    col: 1,
                    message: format!(
                        "case id {} is also made by {}:{}: give the case another id",
                        c.id,
                        file.display(),
                        line
                    ),
                });
            }
        }
    }
    diags.sort();
    diags.dedup();
    (scenarios, diags)
}

/// Parses one file; every problem found, each with its position.
pub fn parse(text: &str, file: &Path) -> Result<Scenario, Vec<Diagnostic>> {
    let lines = LineIndex::new(text);
    let at = |offset: usize, message: String| {
        let (line, col) = lines.line_col(offset);
        Diagnostic { file: file.to_path_buf(), line, col, message }
    };
    let mut def: FileDef = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if message == "missing field `format`" {
            message.push_str(&format!(": begin the file with format = {FORMAT}"));
        }
        vec![at(e.span().map(|s| s.start).unwrap_or(0), message)]
    })?;
    let mut diags = Vec::new();
    if *def.format.get_ref() != FORMAT {
        diags.push(at(
            def.format.span().start,
            format!(
                "format = {}: this daxtest reads format {FORMAT} (scenarios/README.md)",
                def.format.get_ref()
            ),
        ));
    }
    let name = def.name.get_ref();
    if !is_name(name) {
        diags.push(at(
            def.name.span().start,
            format!("name = {name:?}: use lower-case letters, digits and -"),
        ));
    }
    for (offset, e) in def.kernel_log.errors().into_iter().chain(def.timeout.errors()) {
        diags.push(at(offset, e));
    }
    for (dim, values) in &def.vars {
        if dim != "fs" && dim != "mount" {
            diags.push(at(
                0,
                format!("[vars.{dim}]: vars are keyed by a matrix dimension, fs or mount"),
            ));
        }
        let known: Vec<String> = match dim.as_str() {
            "fs" => def.matrix.fs.iter().flatten().map(|f| f.to_string()).collect(),
            _ => def.matrix.mount.clone().unwrap_or_default(),
        };
        for v in values.keys().filter(|v| !known.contains(v)) {
            diags.push(at(
                0,
                format!(
                    "[vars.{dim}.\"{v}\"]: {v:?} is not in matrix.{dim} ({})",
                    known.join(", ")
                ),
            ));
        }
    }
    let mut ids = HashMap::new();
    let mut cases = Vec::new();
    for mut spanned in std::mem::take(&mut def.case) {
        let start = spanned.span().start;
        let c = spanned.get_mut();
        if !is_name(&c.id) {
            diags.push(at(start, format!("id = {:?}: use lower-case letters, digits and -", c.id)));
        }
        let line = lines.line_col(start).0;
        if let Some(first) = ids.insert(c.id.clone(), line) {
            diags.push(at(
                start,
                format!(
                    "case id {:?} appears twice in this file (first at line {first}): give each \
                     case its own id",
                    c.id
                ),
            ));
        }
        match expand_case(&def, c, file, &lines, start) {
            Ok(mut cs) => cases.append(&mut cs),
            Err(mut d) => diags.append(&mut d),
        }
    }
    if diags.is_empty() {
        Ok(Scenario {
            file: file.to_path_buf(),
            name_at: lines.line_col(def.name.span().start),
            name: def.name.into_inner(),
            summary: def.summary,
            references: def.references,
            tags: def.tags,
            cases,
        })
    } else {
        Err(diags)
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn expand_case(
    def: &FileDef,
    c: &mut CaseDef,
    file: &Path,
    lines: &LineIndex,
    start: usize,
) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let at = |offset: usize, message: String| {
        let (line, col) = lines.line_col(offset);
        Diagnostic { file: file.to_path_buf(), line, col, message }
    };
    let mut diags = Vec::new();
    let default_matrix = MatrixDef::default();
    let matrix = c.matrix.as_ref().map_or(&default_matrix, |m| m.get_ref());
    let fs_values = matrix.fs.clone().or(def.matrix.fs.clone()).unwrap_or(vec![Fs::Xfs]);
    let mount_values =
        matrix.mount.clone().or(def.matrix.mount.clone()).unwrap_or(vec!["dax=always".into()]);
    let matrix_at = match &c.matrix {
        Some(m) if matrix.mount.is_some() => m.span().start,
        _ => start,
    };
    for m in &mount_values {
        if !m.split(',').any(|o| o.starts_with("dax")) {
            diags.push(at(
                matrix_at,
                format!(
                    "mount option {m:?} has no dax=...: say dax=always, dax=inode or dax=never"
                ),
            ));
        }
        if let Some(e) = limits::mount_problem(m) {
            diags.push(at(matrix_at, e));
        }
    }
    let constraints = |items: &[String], offset: usize, diags: &mut Vec<Diagnostic>| {
        items
            .iter()
            .filter_map(|s| Constraint::parse(s).map_err(|e| diags.push(at(offset, e))).ok())
            .collect::<Vec<_>>()
    };
    let requires = match &c.requires {
        Some(r) => constraints(&r.get_ref().kernel.items(), r.span().start, &mut diags),
        None => vec![],
    };
    // The file's patterns and timeouts are checked once, in `parse`; the case's here.
    let mut log = def.kernel_log.plain();
    let own = c.kernel_log.plain();
    log.expected.extend(own.expected);
    log.benign.extend(own.benign);
    log.forbidden.extend(own.forbidden);
    for (offset, e) in c.kernel_log.errors().into_iter().chain(c.timeout.errors()) {
        diags.push(at(offset, e));
    }
    if c.steps.get_ref().is_empty() {
        diags.push(at(
            c.steps.span().start,
            "steps = []: a case without steps checks nothing and always passes: give it the \
             steps that show what its summary says"
                .into(),
        ));
    }
    let (own_timeout, file_timeout) = (c.timeout.plain(), def.timeout.plain());
    let line = lines.line_col(start).0;
    // Each step's operation and expectations as written, parsed once: a matrix cell only chooses
    // among the expectations.
    let steps_def: Vec<(usize, Result<StepDef, String>)> = std::mem::take(c.steps.get_mut())
        .into_iter()
        .map(|s| (s.span().start, parse_step(s.into_inner())))
        .collect();
    let mut cases = Vec::new();
    for fs in &fs_values {
        for mount in &mount_values {
            let cell: [(&str, String); 2] = [("fs", fs.to_string()), ("mount", mount.clone())];
            let vars: BTreeMap<String, String> = cell
                .iter()
                .filter_map(|(dim, value)| def.vars.get(*dim).and_then(|v| v.get(value)))
                .flat_map(|v| v.clone())
                .collect();
            let mut xfail = Vec::new();
            for spanned in &c.xfail {
                let x = spanned.get_ref();
                let symptom = match symptom(x, steps_def.len()) {
                    Ok(s) => s,
                    Err(e) => {
                        diags.push(at(spanned.span().start, e));
                        continue;
                    }
                };
                if cell_matches(&x.when, *fs, mount) {
                    xfail.push(Xfail {
                        kernel: constraints(
                            &x.when.kernel.items(),
                            spanned.span().start,
                            &mut diags,
                        ),
                        reason: x.reason.clone(),
                        link: x.link.clone(),
                        symptom,
                    });
                }
            }
            let mut steps = Vec::new();
            let mut checker = Usage::default();
            for (offset, parsed) in &steps_def {
                let offset = *offset;
                let alternatives = parsed.as_ref().map_err(String::clone).and_then(|(op, defs)| {
                    Ok((op.clone(), alternatives(op, defs, *fs, mount, &vars)?))
                });
                match alternatives {
                    Ok((op, expect)) => {
                        let step_line = lines.line_col(offset).0;
                        for e in checker.check(&op, &expect, step_line) {
                            diags.push(at(offset, e));
                        }
                        if let Some(e) = impossible(&op, &expect, *fs, mount) {
                            diags.push(at(offset, e));
                        }
                        for e in limits::problems(&op) {
                            diags.push(at(offset, e));
                        }
                        steps.push(CaseStep { line: step_line, op, expect })
                    }
                    Err(e) => diags.push(at(offset, e)),
                }
            }
            let mut id = format!("{}/{}", def.name.get_ref(), c.id);
            // Only dimensions with a choice go into the id, so adding one later keeps old ids.
            if fs_values.len() > 1 || def.matrix.fs.is_some() {
                id.push_str(&format!("/{fs}"));
            }
            if mount_values.len() > 1 || def.matrix.mount.is_some() {
                id.push_str(&format!("/{mount}"));
            }
            cases.push(Case {
                seed: c.seed.unwrap_or_else(|| stable_seed(&id)),
                id,
                scenario: def.name.get_ref().clone(),
                file: file.to_path_buf(),
                line,
                summary: c.summary.clone(),
                fs: *fs,
                mount: mount.clone(),
                mkfs: c.mkfs.get(fs).or(def.mkfs.get(fs)).cloned().unwrap_or_default(),
                requires: requires.clone(),
                xfail,
                kernel_log: log.clone(),
                fresh_vm: c.fresh_vm,
                timeout: TimeoutDef {
                    step_s: own_timeout.step_s.or(file_timeout.step_s),
                    case_s: own_timeout.case_s.or(file_timeout.case_s),
                },
                steps,
            });
        }
    }
    diags.sort();
    diags.dedup();
    if diags.is_empty() {
        Ok(cases)
    } else {
        Err(diags)
    }
}

/// The symptom an xfail names, checked: exactly one of errno, signal and message; errno and
/// signal with the step they happen at; a step the case has; a message that is a regex.
fn symptom(x: &XfailDef, steps: usize) -> Result<Symptom, String> {
    let fix = "name the symptom of the bug: step = N with errno = \"E...\" or signal = \
               \"SIG...\", or message = \"regex\" (of the step's observation with step, of the \
               kernel-log line without)";
    let what = match (&x.errno, &x.signal, &x.message) {
        (Some(e), None, None) => {
            if let Some(problem) = errno_problem(e) {
                return Err(format!("xfail {problem}"));
            }
            SymptomKind::Errno(e.clone())
        }
        (None, Some(s), None) => {
            if !errno::ACCESS_SIGNALS.contains(&s.as_str()) {
                let can = errno::ACCESS_SIGNALS.join(" or ");
                return Err(format!("xfail signal = {s:?}: an access can raise {can}"));
            }
            SymptomKind::Signal(s.clone())
        }
        (None, None, Some(m)) => {
            regex::Regex::new(m).map_err(|e| {
                let e = e.to_string();
                let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                format!("xfail message {m:?} is not a regular expression: {why}")
            })?;
            SymptomKind::Message(m.clone())
        }
        (None, None, None) => return Err(format!("xfail without a symptom: {fix}")),
        _ => return Err(format!("xfail names more than one symptom: {fix}")),
    };
    match x.step {
        Some(n) if n == 0 || n > steps => {
            Err(format!("xfail step = {n}: the case has steps 1 to {steps}"))
        }
        None if !matches!(what, SymptomKind::Message(_)) => {
            Err(format!("xfail errno or signal without `step`: say which step shows it ({fix})"))
        }
        step => Ok(Symptom { step, what }),
    }
}

/// FNV-1a of the id: a seed that stays the same from run to run and differs between cases.
fn stable_seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// An expectation of success the kernel cannot meet in this matrix cell, whatever its version.
fn impossible(
    op: &Op,
    expect: &[(Vec<Constraint>, Expect)],
    fs: Fs,
    mount: &str,
) -> Option<String> {
    // The alternatives some kernel can reach: up to the first without kernel conditions.
    let reachable = match expect.iter().position(|(k, _)| k.is_empty()) {
        Some(i) => &expect[..=i],
        None => expect,
    };
    if !reachable.iter().any(|(_, e)| matches!(e.outcome, Outcome::Ok)) {
        return None;
    }
    match op {
        Op::Clone { .. } | Op::CloneRange { .. } if fs == Fs::Ext4 => Some(format!(
            "{} cannot succeed on ext4 (it has no reflink: FICLONE and FICLONERANGE fail with \
             EOPNOTSUPP): expect {{ errno = \"EOPNOTSUPP\" }} there \
             ({{ when = {{ fs = \"ext4\" }}, errno = \"EOPNOTSUPP\" }}), or restrict the case \
             to xfs",
            op.name()
        )),
        Op::RaceStoreClone { .. } if fs == Fs::Ext4 => Some(
            "race_store_clone cannot succeed on ext4 (it clones with FICLONE, which fails with \
             EOPNOTSUPP there: ext4 has no reflink): restrict the case to xfs \
             (matrix = { fs = [\"xfs\"] })"
                .into(),
        ),
        Op::RaceToggleWrite { .. }
            if mount.split(',').any(|o| matches!(o, "dax" | "dax=always" | "dax=never")) =>
        {
            Some(format!(
                "race_toggle_write cannot race under {mount}: the mount option fixes the DAX \
                 mode, so toggling the flag never changes it; restrict the case to dax=inode \
                 (matrix = {{ mount = [\"dax=inode\"] }})"
            ))
        }
        Op::Mmap { kind: MapKind::Sync, .. } if mount.split(',').any(|o| o == "dax=never") => Some(
            "mmap kind = \"sync\" (MAP_SYNC) cannot succeed under dax=never: without DAX \
                 the kernel refuses it with EOPNOTSUPP; expect { errno = \"EOPNOTSUPP\" } there \
                 ({ when = { mount = \"dax=never\" }, errno = \"EOPNOTSUPP\" }), or take dax=never \
                 out of the case's matrix"
                .into(),
        ),
        _ => None,
    }
}

fn cell_matches(w: &WhenDef, fs: Fs, mount: &str) -> bool {
    let fss = w.fs.items();
    let mounts = w.mount.items();
    (fss.is_empty() || fss.iter().any(|f| f == fs.name()))
        && (mounts.is_empty() || mounts.iter().any(|m| m == mount))
}

/// Expectation alternatives of a step, each with the kernel conditions under which it holds.
type Alternatives = Vec<(Vec<Constraint>, Expect)>;

/// A step as written: its operation and its expectations (alternatives), not yet chosen for a
/// matrix cell.
type StepDef = (Op, Vec<ExpectDef>);

fn parse_step(mut table: toml::Table) -> Result<StepDef, String> {
    let expect = table.remove("expect");
    let op_name = table.get("op").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let op = Op::deserialize(toml::Value::Table(table))
        .map_err(|e| format!("step op = {op_name:?}: {}", e.message().trim()))?;
    let defs: Vec<ExpectDef> = match expect {
        None => vec![ExpectDef { ok: Some(true), ..empty_expect() }],
        Some(v @ toml::Value::Table(_)) => {
            vec![ExpectDef::deserialize(v).map_err(|e| format!("expect: {}", e.message().trim()))?]
        }
        Some(v @ toml::Value::Array(_)) => Vec::<ExpectDef>::deserialize(v)
            .map_err(|e| format!("expect: {}", e.message().trim()))?,
        Some(other) => {
            return Err(format!(
                "expect = {other}: write a table such as {{ errno = \"EINVAL\" }} or a list of them"
            ))
        }
    };
    Ok((op, defs))
}

/// The expectation alternatives of a step for a matrix cell, each with the kernel conditions
/// under which it holds.
fn alternatives(
    op: &Op,
    defs: &[ExpectDef],
    fs: Fs,
    mount: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Alternatives, String> {
    let mut alternatives = Vec::new();
    for d in defs {
        if !cell_matches(&d.when, fs, mount) {
            continue;
        }
        let mut kernel = Vec::new();
        for k in d.when.kernel.items() {
            kernel.push(Constraint::parse(&k)?);
        }
        alternatives.push((kernel, expectation(d, vars).map_err(|e| format!("expect: {e}"))?));
    }
    if alternatives.is_empty() {
        return Err("no expectation of this step applies here: add one without `when`".into());
    }
    check_fits(op, &alternatives)?;
    Ok(alternatives)
}

fn empty_expect() -> ExpectDef {
    ExpectDef {
        when: WhenDef::default(),
        ok: None,
        errno: None,
        signal: None,
        content: None,
        dax: None,
        flag: None,
        extents: None,
        since: None,
        shared: None,
        exit: None,
        faults: None,
    }
}

/// Replaces `${name}` with the cell's variable.
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| format!("{s:?}: ${{ without }}"))? + i;
        let name = &rest[i + 2..end];
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "variable ${{{name}}} is not defined for this matrix cell (defined: {}); \
                 define it under [vars.fs.\"...\"] or [vars.mount.\"...\"] for every value",
                vars.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn on_off(what: &str, s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{what} = {s:?}: write \"on\" or \"off\"")),
    }
}

fn expectation(d: &ExpectDef, vars: &BTreeMap<String, String>) -> Result<Expect, String> {
    let sub = |s: &Option<String>| s.as_deref().map(|s| substitute(s, vars)).transpose();
    let given: Vec<&str> = [
        ("ok", d.ok.is_some()),
        ("errno", d.errno.is_some()),
        ("signal", d.signal.is_some()),
        ("content", d.content.is_some()),
        ("dax", d.dax.is_some()),
        ("flag", d.flag.is_some()),
        ("extents", d.extents.is_some()),
        ("shared", d.shared.is_some()),
        ("exit", d.exit.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    let faults = match &d.faults {
        None => None,
        Some(CountDef::Number(n)) => Some(Count { cmp: daxtest_proto::case::Cmp::Eq, n: *n }),
        Some(CountDef::Text(t)) => Some(Count::parse(&substitute(t, vars)?).ok_or_else(|| {
            format!("faults = {t:?}: write a count (0) or a comparison (\">=1\", \"<4\")")
        })?),
    };
    // `faults` alone: the access must succeed, with that many faults.
    let given = if given.is_empty() && faults.is_some() { vec!["ok"] } else { given };
    if given.len() != 1 {
        return Err(format!(
            "an expectation names exactly one of ok, errno, signal, content, dax, flag, extents, \
             shared, exit; this one has {}",
            if given.is_empty() { "none".to_string() } else { given.join(", ") }
        ));
    }
    if faults.is_some() && !["ok", "content"].contains(&given[0]) {
        return Err(format!(
            "faults go with an access that completes (ok or content), not with {}: a faulting \
             access killed by a signal has no count",
            given[0]
        ));
    }
    let extents = sub(&d.extents)?;
    if extents.as_deref() == Some("none") {
        if d.since.is_some() {
            return Err("extents = \"none\" (a hole) compares with nothing: drop `since`".into());
        }
    } else if d.since.is_some() != d.extents.is_some() {
        return Err("`since` goes with `extents` (and `extents` needs `since`)".into());
    }
    let outcome = match given[0] {
        "ok" if d.ok != Some(false) => Outcome::Ok,
        "ok" => return Err("ok = false says nothing: name the errno or signal".into()),
        "errno" => {
            let e = sub(&d.errno)?.unwrap_or_default();
            if let Some(problem) = errno_problem(&e) {
                return Err(problem);
            }
            Outcome::Errno(e)
        }
        "signal" => {
            let s = sub(&d.signal)?.unwrap_or_default();
            if !errno::ACCESS_SIGNALS.contains(&s.as_str()) {
                let can = errno::ACCESS_SIGNALS.join(" or ");
                return Err(format!("signal = {s:?}: an access can raise {can}"));
            }
            Outcome::Signal(s)
        }
        "content" => {
            let c = sub(&d.content)?.unwrap_or_default();
            let mut chars = c.chars();
            match (chars.next(), chars.next()) {
                (Some(ch), None) if ch.is_ascii() => Outcome::Content(ch),
                _ if c == "\\0" || c == "zero" => Outcome::Content('\0'),
                _ => return Err(format!("content = {c:?}: one ASCII character, or \"zero\"")),
            }
        }
        "dax" => Outcome::Dax(on_off("dax", &sub(&d.dax)?.unwrap_or_default())?),
        "flag" => Outcome::Flag(on_off("flag", &sub(&d.flag)?.unwrap_or_default())?),
        "extents" => {
            let since = sub(&d.since)?.unwrap_or_default();
            match extents.unwrap_or_default().as_str() {
                "unchanged" => Outcome::Extents { since, same: true },
                "changed" => Outcome::Extents { since, same: false },
                "none" => Outcome::NoExtents,
                other => {
                    return Err(format!(
                        "extents = {other:?}: write \"unchanged\" or \"changed\" (with since), \
                         or \"none\" for a hole"
                    ))
                }
            }
        }
        "shared" => match sub(&d.shared)?.unwrap_or_default().as_str() {
            "all" => Outcome::Shared(Shared::All),
            "none" => Outcome::Shared(Shared::None),
            "some" => Outcome::Shared(Shared::Some),
            other => {
                return Err(format!("shared = {other:?}: write \"all\", \"none\" or \"some\""))
            }
        },
        _ => Outcome::Exit(d.exit.unwrap_or_default()),
    };
    Ok(Expect { outcome, faults })
}

/// Whether each expectation can be observed by the operation (content needs read or load...).
fn check_fits(op: &Op, alternatives: &[(Vec<Constraint>, Expect)]) -> Result<(), String> {
    let access = matches!(op, Op::Store { .. } | Op::Load { .. });
    for (_, e) in alternatives {
        if e.faults.is_some() && !access {
            return Err(format!(
                "op {} cannot observe faults: only store and load count them (the faults of \
                 the process that holds the mapping)",
                op.name()
            ));
        }
        // Whether `op` can observe `e`, and which ops can.
        let (fits, by) = match &e.outcome {
            Outcome::Ok | Outcome::Errno(_) => (true, "every op"),
            Outcome::Signal(_) => (access, "store and load"),
            Outcome::Content(_) => {
                (matches!(op, Op::Read { .. } | Op::Load { .. }), "read and load")
            }
            Outcome::Dax(_) => (matches!(op, Op::Statx { .. }), "statx"),
            Outcome::Flag(_) => (matches!(op, Op::GetFlag { .. }), "get_flag"),
            Outcome::Extents { .. } | Outcome::NoExtents | Outcome::Shared(_) => {
                (matches!(op, Op::Fiemap { .. }), "fiemap")
            }
            Outcome::Exit(_) => (matches!(op, Op::Shell { .. }), "shell"),
        };
        if !fits {
            return Err(format!(
                "op {} cannot observe \"{}\": only {by} can; expect {{ ok = true }} or an errno \
                 here and check it with a {by} step",
                op.name(),
                e.outcome
            ));
        }
    }
    Ok(())
}

/// Tracks handles, mappings and saved extent maps through a case, so that a name is used only
/// while it exists.
#[derive(Default)]
struct Usage {
    handles: HashSet<String>,
    maps: HashMap<String, LiveMap>,
    saved: HashSet<String>,
    /// What ended a handle or mapping that is gone: ("handle" or "mapping", name) -> "the munmap
    /// at line 12".
    ended: HashMap<(&'static str, String), String>,
}

/// A mapping made by an earlier step: what later steps may do through it.
struct LiveMap {
    len: u64,
    kind: MapKind,
    /// The line of its mmap step.
    line: usize,
}

impl Usage {
    fn check(&mut self, op: &Op, expect: &[(Vec<Constraint>, Expect)], line: usize) -> Vec<String> {
        let mut errors = Vec::new();
        let need = |set: Vec<&String>,
                    ended: &HashMap<(&'static str, String), String>,
                    kind: &'static str,
                    name: &str,
                    errors: &mut Vec<String>| {
            if set.iter().any(|k| *k == name) {
                return;
            }
            let mut known: Vec<String> = set.iter().map(|k| format!("{k:?}")).collect();
            known.sort();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            let op = op.name();
            errors.push(match (kind, ended.get(&(kind, name.to_string()))) {
                (_, Some(what)) => format!(
                    "{op} uses {kind} {name:?}, which no earlier step opened since {what} closed \
                     it: {} it again before this step, or move this step before that one",
                    if kind == "handle" { "open" } else { "mmap" }
                ),
                ("handle", None) => format!(
                    "{op} uses handle {name:?}, which no earlier step opened: open it first \
                     ({{ op = \"open\", file = ..., handle = {name:?} }}; open handles here: \
                     {known})"
                ),
                ("mapping", None) => format!(
                    "{op} uses mapping {name:?}, which no earlier step opened: mmap it first \
                     ({{ op = \"mmap\", ..., map = {name:?} }}; mappings here: {known})"
                ),
                (_, None) => format!(
                    "{op} uses {kind} {name:?}, which no earlier step opened or saved: give an \
                     earlier fiemap step save = {name:?} (saved so far: {known})"
                ),
            });
        };
        // Op::name serialises the op: only for the steps that end something.
        let what = || format!("the {} at line {line}", op.name());
        match op {
            Op::Open { handle, .. } if !self.handles.insert(handle.clone()) => {
                errors.push(format!(
                    "handle {handle:?} is already open: close it first, or give this one \
                     another name"
                ));
            }
            Op::Close { handle } => {
                need(self.handles.iter().collect(), &self.ended, "handle", handle, &mut errors);
                self.handles.remove(handle);
                self.ended.insert(("handle", handle.clone()), what());
            }
            Op::Mmap { map, .. } if self.maps.contains_key(map) => {
                errors.push(format!(
                    "mapping {map:?} already exists: munmap it first, or give this one \
                     another name"
                ));
            }
            Op::Mmap { map, len, kind, .. } => {
                self.maps.insert(map.clone(), LiveMap { len: *len, kind: *kind, line });
            }
            Op::Munmap { map } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                self.maps.remove(map);
                self.ended.insert(("mapping", map.clone()), what());
            }
            Op::Store { map, offset, len, .. } | Op::Load { map, offset, len } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                // The agent refuses an access outside the mapping, so such a step always fails.
                match self.maps.get(map) {
                    Some(m) if offset.checked_add(*len).is_none_or(|end| end > m.len) => errors
                        .push(format!(
                            "{} offset {offset} + len {len} runs past the end of mapping {map:?} \
                             ({} bytes, mmapped at line {}): keep offset + len within its len, \
                             or mmap more",
                            op.name(),
                            m.len,
                            m.line
                        )),
                    _ => {}
                }
                // A signal kills the process that holds the mapping: the mapping goes with it.
                if let Some(sig) = expect.iter().find_map(|(_, e)| match &e.outcome {
                    Outcome::Signal(s) => Some(s),
                    _ => None,
                }) {
                    self.maps.remove(map);
                    self.ended.insert(
                        ("mapping", map.clone()),
                        format!(
                            "the {sig} expected at line {line} (it kills the mapping's process)"
                        ),
                    );
                }
            }
            Op::Msync { map } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors)
            }
            Op::RaceStoreClone { map, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                match self.maps.get(map) {
                    Some(m) if m.len < RACE_SLOT as u64 => errors.push(format!(
                        "race_store_clone needs a mapping of at least one slot of {RACE_SLOT} \
                         bytes (it stores into an 8-byte slot at the start of each); mapping \
                         {map:?} (mmapped at line {}) is {} bytes: mmap at least {RACE_SLOT}",
                        m.line, m.len
                    )),
                    // Stores through a private mapping never reach the file the race clones.
                    Some(m) if m.kind == MapKind::Private => errors.push(format!(
                        "race_store_clone needs a shared mapping: mapping {map:?} (mmapped at \
                         line {}) is private, so its stores never reach the file: mmap it with \
                         kind = \"shared\" or \"sync\"",
                        m.line
                    )),
                    _ => {}
                }
            }
            Op::Evict | Op::Remount | Op::RaceToggleWrite { .. } => {
                let what = what();
                for h in self.handles.drain() {
                    self.ended.insert(("handle", h), what.clone());
                }
                for (m, _) in self.maps.drain() {
                    self.ended.insert(("mapping", m), what.clone());
                }
            }
            _ => {}
        }
        for (_, e) in expect {
            if let Outcome::Extents { since, .. } = &e.outcome {
                need(
                    self.saved.iter().collect(),
                    &self.ended,
                    "saved extent map",
                    since,
                    &mut errors,
                );
            }
        }
        if let Op::Fiemap { save: Some(name), .. } = op {
            self.saved.insert(name.clone());
        }
        errors
    }
}

/// Why a step cannot expect `name`: not an errno, or a second name of a number the agent
/// reports under its first (daxtest_proto::errno), which no observation could ever match.
fn errno_problem(name: &str) -> Option<String> {
    if let Some(reported) = errno::alias_of(name) {
        return Some(format!(
            "errno = {name:?}: write {reported}: {name} is the same number on Linux and the agent \
             reports it as {reported}"
        ));
    }
    errno::errno_number(name)
        .is_none()
        .then(|| format!("errno = {name:?}: not an errno name (EINVAL, EOPNOTSUPP, ETXTBSY, ...)"))
}

/// Which cases a command line selects: paths load files; other words filter case ids.
pub struct Selection {
    pub files: Vec<PathBuf>,
    pub filters: Vec<String>,
}

impl Selection {
    pub fn new(root: &Path, args: &[String]) -> anyhow::Result<Selection> {
        let (paths, filters): (Vec<&String>, Vec<&String>) =
            args.iter().partition(|a| a.ends_with(".toml") || Path::new(a.as_str()).is_dir());
        let paths: Vec<PathBuf> = if paths.is_empty() {
            vec![root.join(SCENARIO_DIR)]
        } else {
            paths.into_iter().map(PathBuf::from).collect()
        };
        Ok(Selection {
            files: find_files(&paths)?,
            filters: filters.into_iter().cloned().collect(),
        })
    }

    /// Substring match, or a glob with `*`.
    pub fn matches(&self, id: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| glob_match(f, id))
    }
}

/// A glob is anchored at the start only: `reflink/*/xfs` selects `reflink/clone/xfs/dax=always`.
fn glob_match(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let pattern = format!("{pattern}*");
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = id;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return part.is_empty() || rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(j) => rest = &rest[j + part.len()..],
                None => return false,
            }
        }
    }
    true
}

mod limits;
pub use limits::op_paths;

#[cfg(test)]
mod tests;
