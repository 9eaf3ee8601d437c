//! `cargo xtask check [FILE|DIR]...`: validate scenario files without booting anything.

use super::Ctx;
use crate::exit;
use crate::flags;
use crate::scenario::{self, Selection};

impl flags::Check {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        // `check` takes paths only: a word that names none is a mistake, not a case filter.
        for p in &self.paths {
            let path = std::path::Path::new(p);
            if !path.exists() {
                return Err(exit::input(format!("{p}: no such file or directory")));
            }
            if !path.is_dir() && !p.ends_with(".toml") {
                return Err(exit::input(format!(
                    "{p}: not a scenario file (scenario files end in .toml; see scenarios/README.md)"
                )));
            }
        }
        let sel = Selection::new(&ctx.root, &self.paths)?;
        let scenarios = super::load_scenarios(&sel)?;
        let cases: usize = scenarios.iter().map(|s| s.cases.len()).sum();
        println!("{} scenario files, {cases} cases: all valid", scenarios.len());
        Ok(exit::SUCCESS)
    }
}

/// Prints every diagnostic; an input error if there was any.
pub fn report_diagnostics(diags: &[scenario::Diagnostic]) -> anyhow::Result<()> {
    if diags.is_empty() {
        return Ok(());
    }
    for d in diags {
        eprintln!("{d}");
    }
    Err(exit::input(format!(
        "{} error(s) in scenario files (see scenarios/README.md for the format)",
        diags.len()
    )))
}
