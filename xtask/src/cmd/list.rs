//! `cargo xtask list [FILTER|FILE|DIR]... [--fs FS]`: the case ids a `test` with the same
//! arguments would run, one per line, with their summaries.

use super::Ctx;
use crate::exit;
use crate::flags;
use crate::scenario::Selection;

impl flags::List {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let sel =
            Selection::new(&ctx.root, &self.select).map_err(|e| exit::input(format!("{e:#}")))?;
        let mut listed = 0;
        for s in super::load_scenarios(&sel)? {
            for c in s.cases.iter().filter(|c| sel.matches(&c.id)) {
                if self.fs.is_none_or(|fs| fs == c.fs) {
                    println!("{:<60} {}", c.id, c.summary);
                    listed += 1;
                }
            }
        }
        if listed == 0 {
            return Err(exit::input(format!(
                "no case matches {:?}; `cargo xtask list` shows the case ids",
                self.select
            )));
        }
        Ok(exit::SUCCESS)
    }
}
