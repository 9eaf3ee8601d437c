//! `cargo xtask check [FILE|DIR]...`: validate scenario files without booting anything.

use super::Ctx;
use crate::flags;
use daxtest::exit;
use daxtest::scenario::{self, Selection};

impl flags::Check {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let sel = Selection::new(&ctx.root, &self.paths)?;
        // `check` takes paths only (Selection has checked that they exist): a word that names
        // no .toml file or directory is a mistake, not a case filter.
        if let Some(word) = sel.filters.first() {
            let what = if std::path::Path::new(word).exists() {
                "not a scenario file (scenario files end in .toml; see scenarios/README.md)"
            } else {
                "no such file or directory"
            };
            return Err(exit::input(format!("{word}: {what}")));
        }
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
