//! `cargo xtask list [FILTER|FILE|DIR]... [--fs FS]`: the case ids a `test` with the same
//! arguments would run, one per line, with their summaries.

use super::Ctx;
use crate::flags;
use daxtest::exit;

impl flags::List {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        for c in super::select_cases(&ctx.root, &self.select, self.fs)? {
            println!("{:<60} {}", c.id, c.summary);
        }
        Ok(exit::SUCCESS)
    }
}
