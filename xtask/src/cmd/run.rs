//! `cargo xtask run -- CMD...`: boot, run CMD in the guest, print its output, stop the VM, exit
//! with CMD's status. A non-terminal stdin is copied to CMD's stdin.

use super::Ctx;
use crate::flags;
use daxtest::machine::vm::Vm;
use daxtest::run::kernel_log;

/// When set to a file, `run` writes there how long each of its parts took (JSON, seconds):
/// `bench run` times a whole `run` process and splits it with this.
pub const TIMINGS_ENV: &str = "DAXTEST_RUN_TIMINGS";

/// The parts of a `run`, in seconds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Image check, accelerator, VM options.
    pub prepare: f64,
    /// QEMU start to the guest's ready report and an SSH connection.
    pub boot: f64,
    /// Of the boot, as the guest's clock says: the kernel's part (uptime when init began) and
    /// init's (to ready).
    pub kernel: f64,
    pub init: f64,
    pub command: f64,
    /// QEMU stopped.
    pub stop: f64,
}

impl flags::Run {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let mut timings = Timings::default();
        let mut t = std::time::Instant::now();
        let mut lap = |part: &mut f64| {
            *part = t.elapsed().as_secs_f64();
            t = std::time::Instant::now();
        };
        let (image, opts) = ctx.prepare(&self.vm)?;
        lap(&mut timings.prepare);
        let (vm, ready) = Vm::start_reporting(&image, &ctx.root, &opts)?;
        lap(&mut timings.boot);
        let uptime = |phase| ready.report.phase(phase).unwrap_or_default();
        (timings.kernel, timings.init) = (uptime("init"), uptime("ready") - uptime("init"));
        eprintln!(
            "daxtest: guest {} ready in {:.2} s ({} x {} MiB {})",
            ready.report.kernel_release,
            ready.boot_time.as_secs_f64(),
            ready.report.devices.len(),
            opts.nvdimm_size >> 20,
            opts.device.describe()
        );
        // As ssh does: the words are joined with spaces and the guest's shell parses them.
        let command = self.command.join(" ");
        // A terminal's stdin stays here (as before); a file or pipe goes to the command, so
        // `cargo xtask run -- sh -s < script.sh` runs a script of any length (an SSH exec
        // command line is limited in length by dropbear).
        let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
        let streamed = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            ready.connection.stream(&command, out, err)
        } else {
            ready.connection.stream_with_stdin(&command, out, err)
        };
        let status = match streamed {
            Ok(status) => status,
            Err(e) => return Err(lost_guest(vm, e)),
        };
        lap(&mut timings.command);
        vm.shutdown(ready)?;
        lap(&mut timings.stop);
        if let Some(path) = std::env::var_os(TIMINGS_ENV) {
            std::fs::write(&path, serde_json::to_vec(&timings)?)?;
        }
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
