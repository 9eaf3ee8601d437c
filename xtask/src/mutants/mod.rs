//! Kernel mutants (`cargo xtask mutants`): deliberate DAX bugs that measure what the catalogue
//! catches. Each is one patch under `mutants/`, a small change to the kernel source that breaks
//! one behaviour a scenario claims to check; a header before its diff says which behaviour, the
//! kernel source it cites, the cases that must catch it, and (rarely) why today's catalogue is
//! expected to miss it:
//!
//! ```text
//! Behaviour: the reflink prep unmaps the destination range of a live mapping
//! Source: fs/xfs/xfs_reflink.c xfs_reflink_remap_prep (6.12.117)
//! Cases: reflink/destination-mapping-sees-the-clone/
//!
//! --- a/fs/xfs/xfs_reflink.c
//! +++ b/fs/xfs/xfs_reflink.c
//! ```
//!
//! `source` holds the kernel tree they patch, `verdict` what a run of them means.

pub mod source;
pub mod verdict;

use crate::scenario::Selection;
use std::path::{Path, PathBuf};

/// Where the patches live, from the project root.
pub const DIR: &str = "mutants";
/// A mutant is a small change: at most this many lines removed or added.
pub const MAX_CHANGED_LINES: usize = 15;

/// One mutant, as its patch file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutant {
    /// The file's stem: `mutants/NAME.patch`.
    pub name: String,
    pub path: PathBuf,
    /// The behaviour the change breaks.
    pub behaviour: String,
    /// The kernel source it cites (file, function, version), one or more.
    pub sources: Vec<String>,
    /// Case filters, as `test` takes them: the cases that must catch the mutant.
    pub cases: Vec<String>,
    /// Why today's catalogue is expected to miss it, and what will catch it; `None`: it must
    /// be killed.
    pub survives: Option<String>,
    /// The files the patch changes, relative to the top of the tree.
    pub files: Vec<String>,
    /// The larger of the lines removed and the lines added.
    pub changed_lines: usize,
}

/// Every `mutants/*.patch`, sorted by name; every error of every file, each with its place.
pub fn load_all(root: &Path) -> anyhow::Result<Vec<Mutant>> {
    let dir = root.join(DIR);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| crate::exit::input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    paths.sort();
    let mut mutants = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let shown = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&shown, &text) {
                Ok(m) => mutants.push(m),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(format!("{}: {e}", shown.display())),
        }
    }
    if !errors.is_empty() {
        return Err(crate::exit::input(errors.join("\n")));
    }
    if mutants.is_empty() {
        return Err(crate::exit::input(format!(
            "{}: no NAME.patch in it (see README.md, Kernel mutants)",
            dir.display()
        )));
    }
    Ok(mutants)
}

/// The mutants `only` names (all of them when it is empty); a name that is no mutant is an
/// input error listing the names there are.
pub fn select(mutants: Vec<Mutant>, only: &[String]) -> anyhow::Result<Vec<Mutant>> {
    if let Some(unknown) = only.iter().find(|n| !mutants.iter().any(|m| &m.name == *n)) {
        let names: Vec<&str> = mutants.iter().map(|m| m.name.as_str()).collect();
        return Err(crate::exit::input(format!(
            "--only {unknown}: no mutants/{unknown}.patch; the mutants are {}",
            names.join(", ")
        )));
    }
    Ok(mutants.into_iter().filter(|m| only.is_empty() || only.contains(&m.name)).collect())
}

/// Each `Cases:` filter that selects no case of `ids`, as `FILE: Cases: FILTER ...` with the fix.
pub fn unknown_cases(mutants: &[Mutant], ids: &[&str]) -> Vec<String> {
    mutants
        .iter()
        .flat_map(|m| {
            m.cases.iter().filter_map(|f| {
                let sel = Selection { files: vec![], filters: vec![f.clone()] };
                (!ids.iter().any(|id| sel.matches(id))).then(|| {
                    format!(
                        "{}: Cases: {f} selects no case of scenarios/ (`cargo xtask list` shows \
                         the case ids)",
                        m.path.display()
                    )
                })
            })
        })
        .collect()
}

const KEYS: &str = "Behaviour, Source, Cases and Survives";

/// Parses a patch file: the header (`Key: value` lines, a value continued on indented lines),
/// then the unified diff `patch -p1` applies. Errors are `FILE:LINE: what is wrong: the fix`.
pub fn parse(path: &Path, text: &str) -> Result<Mutant, String> {
    let shown = path.display();
    let at = |line: usize, msg: String| format!("{shown}:{line}: {msg}");
    let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let (mut behaviour, mut sources, mut cases, mut survives) =
        (None::<String>, Vec::new(), Vec::new(), None::<String>);
    // The key whose value the next indented line continues.
    let mut last: Option<&str> = None;
    let mut diff_start = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with("--- ") || line.starts_with("diff ") {
            diff_start = Some(i);
            break;
        }
        if line.trim().is_empty() {
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let more = line.trim();
            if last == Some("Cases") {
                cases.extend(more.split_whitespace().map(str::to_string));
                continue;
            }
            let target = match last {
                Some("Behaviour") => behaviour.as_mut(),
                Some("Source") => sources.last_mut(),
                Some("Survives") => survives.as_mut(),
                _ => None,
            };
            match target {
                Some(value) => {
                    value.push(' ');
                    value.push_str(more);
                }
                None => {
                    return Err(at(
                        n,
                        "an indented line continues no header line: unindent it as a `Key: \
                         value` line"
                            .into(),
                    ))
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(at(
                n,
                format!("expected a `Key: value` header line ({KEYS}) or the diff: {line:?}"),
            ));
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(at(n, format!("{key}: has no value")));
        }
        match key {
            "Behaviour" if behaviour.is_some() => {
                return Err(at(n, "a second Behaviour: a mutant breaks one behaviour".into()))
            }
            "Behaviour" => behaviour = Some(value),
            "Source" => sources.push(value),
            "Cases" => cases.extend(value.split_whitespace().map(str::to_string)),
            "Survives" => survives = Some(value),
            _ => return Err(at(n, format!("unknown header key {key:?}: the keys are {KEYS}"))),
        }
        last = Some(key);
    }
    let Some(diff_start) = diff_start else {
        return Err(at(
            1,
            "no diff: the header is followed by `--- a/FILE` and `+++ b/FILE`".into(),
        ));
    };
    let behaviour = behaviour.ok_or_else(|| {
        at(1, "no Behaviour: say which behaviour the change breaks (`Behaviour: ...`)".into())
    })?;
    if sources.is_empty() {
        return Err(at(
            1,
            "no Source: cite the kernel source it changes (`Source: FILE FUNCTION (VERSION)`)"
                .into(),
        ));
    }
    if cases.is_empty() {
        return Err(at(
            1,
            "no Cases: name the case ids that must catch it (`Cases: SCENARIO/CASE/...`)".into(),
        ));
    }
    let (files, changed_lines) = diff_stats(text, diff_start).map_err(|(n, m)| at(n, m))?;
    if changed_lines > MAX_CHANGED_LINES {
        return Err(at(
            diff_start + 1,
            format!(
                "the diff changes {changed_lines} lines: a mutant is a small change of at most \
                 {MAX_CHANGED_LINES}, breaking one behaviour"
            ),
        ));
    }
    Ok(Mutant {
        name,
        path: path.to_path_buf(),
        behaviour,
        sources,
        cases,
        survives,
        files,
        changed_lines,
    })
}

/// The files a diff changes and the larger of its removed and added line counts; an error is
/// (1-based line, message).
fn diff_stats(text: &str, start: usize) -> Result<(Vec<String>, usize), (usize, String)> {
    let (mut files, mut removed, mut added) = (Vec::<String>::new(), 0, 0);
    let mut in_hunk = false;
    for (i, line) in text.lines().enumerate().skip(start) {
        let n = i + 1;
        if let Some(target) = line.strip_prefix("+++ ") {
            let target = target.split('\t').next().unwrap_or_default().trim();
            let Some(file) = target.strip_prefix("b/") else {
                return Err((
                    n,
                    format!(
                        "{target:?}: the new file's name starts with b/ (a diff for patch -p1, \
                         as `git diff` or `diff -u a/... b/...` writes it)"
                    ),
                ));
            };
            if file.starts_with('/') || file.split('/').any(|c| c == "..") {
                return Err((n, format!("{file:?}: a path inside the kernel tree, relative")));
            }
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
            in_hunk = false;
        } else if line.starts_with("--- ") || line.starts_with("diff ") {
            in_hunk = false;
        } else if line.starts_with("@@") {
            in_hunk = true;
        } else if in_hunk && line.starts_with('-') {
            removed += 1;
        } else if in_hunk && line.starts_with('+') {
            added += 1;
        }
    }
    if files.is_empty() || removed + added == 0 {
        return Err((start + 1, "the diff changes no line: a mutant changes 1 to 15 lines".into()));
    }
    Ok((files, removed.max(added)))
}

#[cfg(test)]
mod tests;
