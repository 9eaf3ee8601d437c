//! `cargo xtask shell`: boot and open an interactive root shell; power off when it exits.

use super::Ctx;
use crate::flags;
use daxtest::machine::vm::Vm;

impl flags::Shell {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let (image, opts) = ctx.prepare(&self.vm)?;
        let (vm, ready) = Vm::start_reporting(&image, &ctx.root, &opts)?;
        eprintln!(
            "daxtest: guest {} ready in {:.2} s; /dev/pmem0.. are fsdax devices. Exit the shell to power off.",
            ready.report.kernel_release,
            ready.boot_time.as_secs_f64()
        );
        let status = ready.connection.shell()?;
        vm.shutdown(ready)?;
        Ok(status)
    }
}
