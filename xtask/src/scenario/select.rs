//! Which cases a command line selects: paths load files, other words filter case ids.

use super::{find_files, SCENARIO_DIR};
use std::path::{Path, PathBuf};

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
