//! From a file as written to the model: the matrix expanded into cases with stable ids,
//! variables substituted, expectations parsed with their kernel conditions, and every problem
//! found on the way reported with its place.

use super::def::*;
use super::lint::{errno_problem, fits, impossible, Usage};
use super::{
    limits, Case, CaseTimeouts, Diagnostic, Scenario, Step, Symptom, SymptomKind, When, Xfail,
    FORMAT,
};
use crate::lines::LineIndex;
use crate::version::Constraint;
use daxtest_proto::case::{Count, Expect, Fs, Op, Outcome, Shared};
use daxtest_proto::errno;
use daxtest_proto::Device;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
    let requires_device = match &c.requires {
        Some(r) => devices(&r.get_ref().device.items(), "requires")
            .map_err(|e| diags.push(at(r.span().start, e)))
            .unwrap_or_default(),
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
                        device: devices(&x.when.device.items(), "xfail when")
                            .map_err(|e| diags.push(at(spanned.span().start, e)))
                            .unwrap_or_default(),
                        reason: x.reason.clone(),
                        link: x.link.clone(),
                        symptom,
                        intermittent: x.intermittent,
                    });
                }
            }
            let mut steps = Vec::new();
            let mut usage = Usage::default();
            for (offset, parsed) in &steps_def {
                let offset = *offset;
                let alternatives = parsed.as_ref().map_err(String::clone).and_then(|(op, defs)| {
                    Ok((op.clone(), alternatives(op, defs, *fs, mount, &vars)?))
                });
                match alternatives {
                    Ok((op, expect)) => {
                        let step_line = lines.line_col(offset).0;
                        for e in usage.step(&op, &expect, step_line) {
                            diags.push(at(offset, e));
                        }
                        if let Some(e) = impossible(&op, &expect, *fs, mount) {
                            diags.push(at(offset, e));
                        }
                        for e in limits::problems(&op) {
                            diags.push(at(offset, e));
                        }
                        steps.push(Step { line: step_line, op, expect })
                    }
                    Err(e) => diags.push(at(offset, e)),
                }
            }
            if let (Some(e), Some((offset, _))) = (usage.end(), steps_def.last()) {
                diags.push(at(*offset, e));
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
                requires_device: requires_device.clone(),
                xfail,
                kernel_log: log.clone(),
                // A power cut needs no VM of its own: the earlier cases' kernel log is judged
                // when the case's window opens, and the VM booted after the cut goes on.
                fresh_vm: c.fresh_vm,
                fsck: c.fsck.unwrap_or(def.fsck),
                timeout: CaseTimeouts {
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
fn cell_matches(w: &WhenDef, fs: Fs, mount: &str) -> bool {
    let fss = w.fs.items();
    let mounts = w.mount.items();
    (fss.is_empty() || fss.iter().any(|f| f == fs.name()))
        && (mounts.is_empty() || mounts.iter().any(|m| m == mount))
}

/// Expectation alternatives of a step, each with the kernel and device conditions under which it
/// holds.
type Alternatives = Vec<(When, Expect)>;

/// `device = "virtio-pmem"`, `["nvdimm", "nvdimm-4k"]` or all but some: `"!memmap"`; empty for
/// every device. Unknown names, and names mixed with `!names`, are refused.
pub(super) fn devices(items: &[String], key: &str) -> Result<Vec<Device>, String> {
    let negated = items.iter().filter(|i| i.starts_with('!')).count();
    if negated != 0 && negated != items.len() {
        return Err(format!(
            "{key} device = {items:?}: list the devices it holds on, or the ones it does not \
             (\"!name\"), not both"
        ));
    }
    let named = items
        .iter()
        .map(|i| i.trim_start_matches('!').parse::<Device>().map_err(|e| format!("{key} {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match negated {
        0 => named,
        _ => Device::ALL.into_iter().filter(|d| !named.contains(d)).collect(),
    })
}

/// A step as written: its operation and its expectations (alternatives), not yet chosen for a
/// matrix cell.
type StepDef = (Op, Vec<ExpectDef>);

fn parse_step(mut table: toml::Table) -> Result<StepDef, String> {
    let expect = table.remove("expect");
    let op_name = table.get("op").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let op = Op::deserialize(toml::Value::Table(table)).map_err(|e| {
        let message = e.message().trim();
        // O_DIRECT or not is what a mapped_buffer_io step is about: never a silent default.
        let fix = match message {
            "missing field `direct`" => {
                ": say direct = true (O_DIRECT) or direct = false (buffered, through the page \
                 cache or DAX)"
            }
            _ => "",
        };
        format!("step op = {op_name:?}: {message}{fix}")
    })?;
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
        let device = devices(&d.when.device.items(), "when")?;
        alternatives.push((
            When { kernel, device },
            expectation(d, vars).map_err(|e| format!("expect: {e}"))?,
        ));
    }
    if alternatives.is_empty() {
        return Err("no expectation of this step applies here: add one without `when`".into());
    }
    fits(op, &alternatives)?;
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
        pmd_faults: None,
        si_code: None,
        si_addr_lsb: None,
        lost: None,
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
        ("lost", d.lost.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    let count = |key: &str, def: &Option<CountDef>| -> Result<Option<Count>, String> {
        Ok(match def {
            None => None,
            Some(CountDef::Number(n)) => Some(Count { cmp: daxtest_proto::case::Cmp::Eq, n: *n }),
            Some(CountDef::Text(t)) => {
                Some(Count::parse(&substitute(t, vars)?).ok_or_else(|| {
                    format!("{key} = {t:?}: write a count (0) or a comparison (\">=1\", \"<4\")")
                })?)
            }
        })
    };
    let faults = count("faults", &d.faults)?;
    let pmd_faults = count("pmd_faults", &d.pmd_faults)?;
    // Fault counts alone: the access must succeed, with those counts.
    let counted = faults.is_some() || pmd_faults.is_some();
    let given = if given.is_empty() && counted { vec!["ok"] } else { given };
    if given.len() != 1 {
        return Err(format!(
            "an expectation names exactly one of ok, errno, signal, content, dax, flag, extents, \
             shared, exit, lost; this one has {}",
            if given.is_empty() { "none".to_string() } else { given.join(", ") }
        ));
    }
    if counted && !["ok", "content"].contains(&given[0]) {
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
        "lost" => match &d.lost {
            Some(CountDef::Number(n)) => Outcome::Lost(Some(*n)),
            Some(CountDef::Text(t)) if substitute(t, vars)? == "any" => Outcome::Lost(None),
            other => {
                return Err(format!(
                    "lost = {other:?}: write a number of records (lost = 0) or \"any\" (measured, \
                     not judged)"
                ))
            }
        },
        _ => Outcome::Exit(d.exit.unwrap_or_default()),
    };
    let si_code = sub(&d.si_code)?;
    let signal = match &outcome {
        Outcome::Signal(s) => s.as_str(),
        _ => "",
    };
    if d.si_addr_lsb.is_some() && signal != "SIGBUS" {
        return Err(format!(
            "si_addr_lsb describes the siginfo of a SIGBUS, not {outcome}: add signal = \
             \"SIGBUS\" or drop it"
        ));
    }
    if si_code.is_some() && signal.is_empty() {
        return Err(format!(
            "si_code describes the siginfo of a signal, not {outcome}: add signal = \"SIGBUS\" \
             or \"SIGSEGV\", or drop it"
        ));
    }
    if let Some(c) = &si_code {
        let codes = errno::codes_of(signal);
        if !codes.iter().any(|(n, _)| n == c) {
            let names: Vec<&str> = codes.iter().map(|(n, _)| *n).collect();
            return Err(format!("si_code = {c:?}: a {signal} carries one of {}", names.join(", ")));
        }
    }
    if let Some(l) = d.si_addr_lsb {
        if ![0, 12, 21, 30].contains(&l) {
            return Err(format!(
                "si_addr_lsb = {l}: the kernel reports the size of what it lost as a shift: 12 (a \
                 page), 21 (a PMD), 30 (a PUD), or 0 for codes that carry none"
            ));
        }
    }
    Ok(Expect { outcome, faults, pmd_faults, si_code, si_addr_lsb: d.si_addr_lsb })
}
