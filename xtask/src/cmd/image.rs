//! `cargo xtask image`: build the guest image or report the cached one.

use super::Ctx;
use crate::flags;

impl flags::Image {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let image = ctx.image(self.kernel.as_deref(), self.force)?;
        println!("{}", image.dir.display());
        Ok(0)
    }
}
