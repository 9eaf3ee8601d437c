//! `cargo xtask run -- CMD...`: boot, run CMD in the guest, print its output, power off, exit
//! with CMD's status. A non-terminal stdin is copied to CMD's stdin.

use super::Ctx;
use crate::flags;
use crate::kernel_log;
use crate::vm::Vm;

impl flags::Run {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let (image, opts) = ctx.prepare(&self.vm)?;
        let (vm, ready) = Vm::start_reporting(&image, &ctx.root, &opts)?;
        eprintln!(
            "daxtest: guest {} ready in {:.2} s ({} x {} MiB NVDIMM in fsdax mode)",
            ready.report.kernel_release,
            ready.boot_time.as_secs_f64(),
            ready.report.devices.len(),
            opts.nvdimm_size >> 20
        );
        // As ssh does: the words are joined with spaces and the guest's shell parses them.
        let command = self.command.join(" ");
        // A terminal's stdin stays here (as before); a file or pipe goes to the command, so
        // `cargo xtask run -- sh -s < script.sh` runs a script of any length (an SSH exec
        // command line is limited in length by dropbear).
        let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
        let streamed = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            ready.guest.stream(&command, out, err)
        } else {
            ready.guest.stream_with_stdin(&command, out, err)
        };
        let status = match streamed {
            Ok(status) => status,
            Err(e) => return Err(lost_guest(vm, e)),
        };
        vm.shutdown(ready)?;
        Ok(status)
    }
}

/// What ended the connection: a kernel crash (a reproducer that panics the guest, say) is named
/// with its report; otherwise QEMU's state and the serial tail.
fn lost_guest(mut vm: Vm, e: anyhow::Error) -> anyhow::Error {
    vm.let_a_panic_finish();
    match kernel_log::crash_report(&vm.serial()) {
        Some(report) => {
            anyhow::anyhow!("the guest kernel crashed while the command ran ({e:#}):\n{report}")
        }
        None => {
            anyhow::anyhow!(vm.failure(&format!("lost the guest while the command ran: {e:#}")))
        }
    }
}
