//! `cargo xtask list [FILTER|FILE|DIR]... [--fs FS]`: the case ids a `test` with the same
//! arguments would run, one per line, with their summaries.

use super::Ctx;
use crate::exit;
use crate::flags;
use crate::scenario::Selection;

impl flags::List {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let sel = Selection::new(&ctx.root, &self.select)?;
        for s in super::load_scenarios(&sel)? {
            for c in s.cases.iter().filter(|c| sel.matches(&c.id)) {
                if self.fs.is_none_or(|fs| fs == c.fs) {
                    println!("{:<60} {}", c.id, c.summary);
                }
            }
        }
        Ok(exit::SUCCESS)
    }
}
