//! `cargo xtask bench boot`: boot-to-ready against a bare boot of the same kernel, same QEMU
//! configuration (NVDIMMs, network, CPUs, memory), in one run, alternating the two kinds so that
//! a change in the machine's load affects both alike. `bench image`: a rebuild against a cache
//! hit. `bench suite`: the whole catalogue's wall time and where it goes. `bench check`: scenario
//! validation over generated files of growing size, to show its cost per case stays flat.
//! `bench faults`: what a page fault costs, by file layout, mapping and filesystem
//! (daxtest::report::faults).

use super::Ctx;
use crate::flags::{self, BenchWhat};
use anyhow::Context;
use daxtest::machine::vm::{Vm, VmOptions};
use daxtest::report::stats::median;
use daxtest_proto::AGENT_PATH;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

impl flags::Bench {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        match self.what {
            BenchWhat::Boot { vm, reps } => boot(ctx, &vm, reps.max(1)),
            BenchWhat::Run { vm, reps } => run(ctx, &vm, reps.max(1)),
            BenchWhat::Image { kernel, reps } => image(ctx, kernel.as_deref(), reps.max(1)),
            BenchWhat::Suite { vm, jobs, no_boot_snapshot, mkfs_in_guest } => {
                suite(ctx, vm, jobs, no_boot_snapshot, mkfs_in_guest)
            }
            BenchWhat::Check { sizes, reps } => check(&sizes, reps.max(1)),
            BenchWhat::Faults { vm, figures } => faults(ctx, vm, figures.as_deref()),
        }
    }
}

fn boot(ctx: &Ctx, flags: &flags::Vm, reps: usize) -> anyhow::Result<i32> {
    let (image, opts) = ctx.prepare(flags)?;
    // A failed boot is shown and counted, and that boot is done once more (as the runner does):
    // one failure must not cost the whole measurement, and a kernel that cannot boot still
    // fails it.
    let mut failed_boots = 0;
    let mut failed = |e: &anyhow::Error, retrying: bool| {
        failed_boots += 1;
        let then = if retrying { "booting once more" } else { "giving up" };
        eprintln!("daxtest: a boot failed ({then}); it is not in the figures:\n{e:#}");
    };
    // One boot first, untimed: it fills the fsdax template cache, as any earlier run would have.
    let (vm, ready) = Vm::start_or_retry(&image, &ctx.root, &opts, &mut failed)?;
    vm.shutdown(ready)?;

    let (mut bare, mut full, mut xfs) = (Vec::new(), Vec::new(), Vec::new());
    let mut phases: Vec<Vec<(String, f64)>> = Vec::new();
    println!("{:>4} {:>12} {:>16} {:>15}", "rep", "bare boot s", "boot-to-ready s", "fs ready s");
    for rep in 1..=reps {
        let (b, _) =
            daxtest::machine::vm::once_more(|| bare_boot(ctx, &image, &opts), &mut failed)?;

        let (vm, ready) = Vm::start_or_retry(&image, &ctx.root, &opts, &mut failed)?;
        let r = ready.boot_time;
        // What the boot leaves to the background once ready: xfs.ko and the other payload
        // modules. From QEMU's start to the agent saying they are in.
        let x = r + preloaded(&ready)?;
        let timeline = &ready.report.timeline;
        phases.push(timeline.iter().map(|p| (p.name.clone(), p.uptime_s)).collect());
        vm.shutdown(ready)?;

        println!("{rep:>4} {:>12.2} {:>16.2} {:>15.2}", secs(b), secs(r), secs(x));
        bare.push(b);
        full.push(r);
        xfs.push(x);
    }
    let (mb, mf, mx) = (median_of(&bare), median_of(&full), median_of(&xfs));
    println!();
    println!("kernel:               {}", image.kernel.id);
    println!("accelerator:          {}", opts.accel);
    println!(
        "device:               {} x {} MiB {}",
        opts.nvdimms,
        opts.nvdimm_size >> 20,
        opts.device.describe()
    );
    println!("bare boot (median):   {:.2} s  QEMU start to exit; init only powers off", secs(mb));
    println!(
        "boot-to-ready (med):  {:.2} s  QEMU start to the ready report and an SSH session",
        secs(mf)
    );
    println!("ratio:                {:.2}", secs(mf) / secs(mb));
    println!("failed boots:         {failed_boots}  each shown above and done once more");
    println!(
        "fs ready (median):    {:.2} s  QEMU start to xfs and ext4 loaded, in the \
         background after ready",
        secs(mx)
    );
    if let Some(first) = phases.first() {
        println!("guest uptime at the end of each boot phase (median over {reps}):");
        for (i, (name, _)) in first.iter().enumerate() {
            let v: Vec<f64> = phases.iter().filter_map(|p| p.get(i).map(|x| x.1)).collect();
            println!("  {name:<10} {:.2} s", median(&v).unwrap_or_default());
        }
    }
    Ok(0)
}

/// `run -- true` as a user runs it (this program again, as a process of its own), against a bare
/// boot and virtme-ng's `vng --run` of the same kernel, in turns, so that a change in the
/// machine's load touches all three alike. A rep's run and bare boot are a pair, back to back,
/// in alternating order (neither always follows vng), and each pair's ratio is shown: under TCG
/// here a single boot varies by a third, and the two boots of a pair were no more alike than
/// any two (correlation 0.25 to 0.9 over six runs), so the summary is the ratio of the medians,
/// with the pairs' median and range beside it for the spread.
fn run(ctx: &Ctx, flags: &flags::Vm, reps: usize) -> anyhow::Result<i32> {
    let (image, opts) = ctx.prepare(flags)?;
    let mut failed = |e: &anyhow::Error, retrying: bool| {
        let then = if retrying { "booting once more" } else { "giving up" };
        eprintln!("daxtest: a boot failed ({then}); it is not in the figures:\n{e:#}");
    };
    // Untimed: the fsdax template cache, as any earlier run would have filled it.
    let (vm, ready) = Vm::start_or_retry(&image, &ctx.root, &opts, &mut failed)?;
    vm.shutdown(ready)?;
    let mut vng = find_on_path("vng");
    if vng.is_none() {
        println!("virtme-ng: not installed (`pip install virtme-ng`): its column is left out");
    }
    let exe = std::env::current_exe()?;
    let timings = tempfile::NamedTempFile::new()?;
    let mut rows: Vec<Row> = Vec::new();
    // "outside": of a boot, what the guest's clock did not see (QEMU's start, the firmware,
    // loading the kernel and initramfs; for a run also the host noticing the ready report, for
    // a bare boot QEMU's exit). Both kinds of boot run the same QEMU configuration.
    println!(
        "{:>4} {:>6} {:>7} {:>5} {:>7} {:>6} {:>5} {:>7} {:>4} {:>6} {:>7} {:>6} {:>8} {:>6}",
        "rep",
        "run s",
        "prepare",
        "boot",
        "outside",
        "kernel",
        "init",
        "command",
        "stop",
        "bare s",
        "outside",
        "kernel",
        "run/bare",
        "vng s"
    );
    for rep in 1..=reps {
        let run_true = || -> anyhow::Result<(Duration, crate::cmd::run::Timings)> {
            let t = Instant::now();
            let out = std::process::Command::new(&exe)
                .arg("run")
                .args(flags.to_args())
                .args(["--", "true"])
                .env(crate::cmd::run::TIMINGS_ENV, timings.path())
                .current_dir(&ctx.root)
                .stdin(std::process::Stdio::null())
                .output()?;
            let whole = t.elapsed();
            anyhow::ensure!(
                out.status.success(),
                "`run -- true` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok((whole, serde_json::from_slice(&std::fs::read(timings.path())?)?))
        };
        let mut bare_once =
            || daxtest::machine::vm::once_more(|| bare_boot(ctx, &image, &opts), &mut failed);
        let ((whole, parts), (bare, bare_up)) = match rep % 2 {
            1 => (run_true()?, bare_once()?),
            _ => {
                let bare = bare_once()?;
                (run_true()?, bare)
            }
        };
        // A vng run that does not prove it ran the command (a guest that died first: 1 in
        // about 50 here) goes again; twice, and vng's column is left out rather than filled with
        // runs that may not have run the command.
        let vng_took = match vng.clone() {
            Some(v) => {
                let once = || vng_run(&v, &image.kernel.vmlinuz, opts.cpus, opts.memory_mib);
                match once().or_else(|e| {
                    eprintln!("daxtest: {e:#}\ndaxtest: vng --run once more");
                    once()
                }) {
                    Ok(took) => Some(took),
                    Err(e) => {
                        println!("virtme-ng: {e:#}\nvirtme-ng: twice: its column is left out");
                        vng = None;
                        None
                    }
                }
            }
            None => None,
        };
        let row = Row { whole, parts, bare, bare_up, vng: vng_took };
        let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{rep:>4} {:>6.2} {:>7.2} {:>5.2} {:>7.2} {:>6.2} {:>5.2} {:>7.2} {:>4.2} {:>6.2} {:>7} {:>6} {:>8.2} {:>6}",
            secs(row.whole),
            row.parts.prepare,
            row.parts.boot,
            row.run_outside(),
            row.parts.kernel,
            row.parts.init,
            row.parts.command,
            row.parts.stop,
            secs(row.bare),
            or_dash(row.bare_outside()),
            or_dash(row.bare_up),
            row.run_over_bare(),
            or_dash(row.vng.map(secs)),
        );
        rows.push(row);
    }
    let stats = |v: Vec<f64>| -> (f64, f64, f64) {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(&v).unwrap_or_default(), min, max)
    };
    let show = |name: &str, v: Vec<f64>, what: &str| {
        let (med, min, max) = stats(v);
        println!("{name:<22}{med:>6.2} s  (min {min:.2}, max {max:.2})  {what}");
        med
    };
    println!();
    println!("kernel:               {}", image.kernel.id);
    println!("accelerator:          {}", opts.accel);
    let run_med = show(
        "run -- true (median):",
        rows.iter().map(|r| secs(r.whole)).collect(),
        "invoking it to its exit",
    );
    show("  prepare:", rows.iter().map(|r| r.parts.prepare).collect(), "image check, accelerator");
    show("  boot:", rows.iter().map(|r| r.parts.boot).collect(), "QEMU start to ready");
    show("    outside:", rows.iter().map(Row::run_outside).collect(), "not on the guest's clock");
    show("    kernel:", rows.iter().map(|r| r.parts.kernel).collect(), "guest uptime at init");
    show("    init:", rows.iter().map(|r| r.parts.init).collect(), "guest: init to ready");
    show("  command:", rows.iter().map(|r| r.parts.command).collect(), "the command over SSH");
    show("  stop:", rows.iter().map(|r| r.parts.stop).collect(), "QEMU stopped");
    let bare_med = show(
        "bare boot (median):",
        rows.iter().map(|r| secs(r.bare)).collect(),
        "QEMU start to exit, init only powers off",
    );
    if rows.iter().all(|r| r.bare_up.is_some()) {
        show("    outside:", rows.iter().filter_map(Row::bare_outside).collect(), "as above");
        show(
            "    kernel:",
            rows.iter().filter_map(|r| r.bare_up).collect(),
            "guest uptime at power-off",
        );
    }
    let (paired, min, max) = stats(rows.iter().map(Row::run_over_bare).collect());
    println!(
        "run / bare boot:      {:.2}  of the medians; the {} pairs' ratios: median {paired:.2}, \
         min {min:.2}, max {max:.2}",
        run_med / bare_med,
        rows.len(),
    );
    if rows.iter().all(|r| r.vng.is_some()) {
        let vng_med = show(
            "vng --run (median):",
            rows.iter().filter_map(|r| r.vng.map(secs)).collect(),
            "virtme-ng, same kernel, --disable-kvm --force-9p -- echo",
        );
        let (paired, min, max) =
            stats(rows.iter().filter_map(|r| r.vng.map(|v| secs(r.whole) / secs(v))).collect());
        println!(
            "run / vng:            {:.2}  of the medians; the pairs' ratios: median {paired:.2}, \
             min {min:.2}, max {max:.2}",
            run_med / vng_med
        );
    }
    Ok(0)
}

/// One rep of `bench run`: `run -- true` (its whole time and parts), the bare boot beside it
/// (with its guest's uptime at power-off) and virtme-ng's run.
struct Row {
    whole: Duration,
    parts: crate::cmd::run::Timings,
    bare: Duration,
    bare_up: Option<f64>,
    vng: Option<Duration>,
}

impl Row {
    fn run_outside(&self) -> f64 {
        self.parts.boot - self.parts.kernel - self.parts.init
    }

    fn bare_outside(&self) -> Option<f64> {
        self.bare_up.map(|up| secs(self.bare) - up)
    }

    /// The pair's ratio.
    fn run_over_bare(&self) -> f64 {
        secs(self.whole) / secs(self.bare)
    }
}

/// `vng --run VMLINUZ -- echo MARK`, as virtme-ng's users start it (the host's root over 9p, no
/// KVM as here; `tsc=unstable` as daxtest's own VMs have under TCG). vng returns the status the
/// guest wrote to its `virtme.ret` port after the command (255 when the guest died first), and
/// the command's stdout comes back over a port of its own: both prove the command ran. (vng's
/// "script exited with code" log line is printed only when the host's stdio cannot be opened
/// through /proc/self/fd, its console fallback: virtme-ng 1.41 on.)
fn vng_run(vng: &Path, vmlinuz: &Path, cpus: u32, memory_mib: u64) -> anyhow::Result<Duration> {
    const MARK: &str = "daxtest-vng-ran";
    let t = Instant::now();
    let out = std::process::Command::new(vng)
        .arg("--run")
        .arg(vmlinuz)
        .args(["--disable-kvm", "--force-9p", "--append", "tsc=unstable"])
        .args(["--cpus", &cpus.to_string(), "--memory", &format!("{memory_mib}M")])
        .args(["--", "echo", MARK])
        .stdin(std::process::Stdio::null())
        .output()?;
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && stdout.trim() == MARK,
        "vng --run did not run the command ({}): stdout {:?}, stderr: {}",
        out.status,
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    Ok(took)
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// How long after `ready` the background module loads took to end, as the guest saw it; an
/// error when they failed.
fn preloaded(ready: &daxtest::machine::vm::Booted) -> anyhow::Result<Duration> {
    let out = ready.connection.capture(&format!("{AGENT_PATH} preloaded --wait-ms 60000"))?;
    let done: daxtest_proto::Preloaded =
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the agent said no preload (exit {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    if let Some(e) = done.error {
        anyhow::bail!("loading the payload's modules failed: {e}");
    }
    let ready_at = ready.report.phase("ready").unwrap_or(done.uptime_s);
    Ok(Duration::from_secs_f64((done.uptime_s - ready_at).max(0.0)))
}

/// QEMU start to exit with an init that only powers off, and the guest's uptime when it powered
/// off (None if the kernel's line is not on the console). A kernel that panicked exits QEMU too
/// (panic=-1 with -no-reboot), sooner: that is a failed boot, not a fast one.
fn bare_boot(
    ctx: &Ctx,
    image: &daxtest::machine::image::Image,
    opts: &VmOptions,
) -> anyhow::Result<(Duration, Option<f64>)> {
    let mut vm = Vm::spawn(image, &ctx.root, opts, &image.bare_initramfs(), true)?;
    let took = vm.wait_exit(opts.boot_timeout)?;
    let serial = vm.serial();
    if let Some(crash) = daxtest::run::kernel_log::crash_report(&serial) {
        anyhow::bail!(vm.failure(&format!("the kernel crashed during a bare boot: {crash}")));
    }
    Ok((took, power_down_uptime(&serial)))
}

/// The timestamp of the kernel's "reboot: Power down" (printed at emergency level, so a quiet
/// console shows it): how long the bare boot's guest was up.
fn power_down_uptime(serial: &str) -> Option<f64> {
    serial.lines().rev().find_map(|l| {
        let (stamp, rest) = l.trim_start().strip_prefix('[')?.split_once(']')?;
        match rest.trim() {
            "reboot: Power down" => stamp.trim().parse().ok(),
            _ => None,
        }
    })
}

fn image(ctx: &Ctx, kernel: Option<&str>, reps: usize) -> anyhow::Result<i32> {
    let spec = kernel.unwrap_or(&ctx.recipe.kernels.default);
    // Untimed: fetches and unpacks the kernel package if this machine has not yet.
    daxtest::machine::image::ensure(&ctx.sh, &ctx.root, &ctx.recipe, spec, false)?;
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    println!("{:>4} {:>16} {:>12}", "rep", "rebuild s", "cache hit s");
    for rep in 1..=reps {
        let t = Instant::now();
        daxtest::machine::image::ensure(&ctx.sh, &ctx.root, &ctx.recipe, spec, true)?;
        let c = t.elapsed();
        let t = Instant::now();
        let image = daxtest::machine::image::ensure(&ctx.sh, &ctx.root, &ctx.recipe, spec, false)?;
        let h = t.elapsed();
        anyhow::ensure!(image.reused, "the image was rebuilt right after a build");
        println!("{rep:>4} {:>16.2} {:>12.2}", secs(c), secs(h));
        cold.push(c);
        cached.push(h);
    }
    let (mc, mh) = (median_of(&cold), median_of(&cached));
    println!();
    println!("kernel:               {spec}");
    println!("rebuild (median):     {:.2} s  every input already fetched and unpacked", secs(mc));
    println!(
        "cache hit (median):   {:.2} s  the inputs read (no agent build, no module resolution), \
         image reused",
        secs(mh)
    );
    println!("ratio:                {:.2}", secs(mc) / secs(mh).max(1e-3));
    Ok(0)
}

/// The catalogue as `cargo xtask test` runs it; the split comes from the run's results.
fn suite(
    ctx: &Ctx,
    vm: flags::Vm,
    jobs: u16,
    no_boot_snapshot: bool,
    mkfs_in_guest: bool,
) -> anyhow::Result<i32> {
    let test =
        flags::Test { jobs, no_boot_snapshot, mkfs_in_guest, ..flags::Test::plain(vm, Vec::new()) };
    let t = Instant::now();
    // This run's own directory: runs/latest may already be another run's.
    let (status, dir) = test.run_in_dir(ctx)?;
    let total = t.elapsed();
    let results = daxtest::report::results::read(&dir)?;
    let cases = results.cases.len();
    let in_cases: f64 = results.cases.iter().map(|c| c.duration_s).sum();
    let run = results.elapsed_s;
    println!();
    println!(
        "whole suite:          {:.1} s  `cargo xtask test --jobs {jobs}`, {cases} cases, exit {status}",
        secs(total)
    );
    println!(
        "  run per case:       {:.3} s  the run's wall time over its cases, {jobs} VM(s) at once",
        run / cases.max(1) as f64
    );
    println!(
        "  before the run:     {:.1} s  image check, accelerator, scenario files",
        secs(total) - run
    );
    println!(
        "  in cases:           {in_cases:.1} s  mean {:.3} s a case",
        in_cases / cases.max(1) as f64
    );
    match jobs {
        1 => println!("  boots and the rest: {:.1} s", run - in_cases),
        // The lanes' cases overlap: their sum is no part of the wall time.
        _ => println!("  (the {jobs} lanes' case times overlap: their sum exceeds the wall time)"),
    }
    // Where a case's time goes in the guest, part by part (the rest of a case's time is the
    // host's: sending it, reading and judging its report).
    let parts: Vec<(&str, f64)> = results
        .phase_totals()
        .into_iter()
        .map(|(name, per_kernel)| (name, per_kernel.iter().sum::<u64>() as f64))
        .collect();
    if !parts.is_empty() {
        println!("  a case's mean, part by part (ms):");
        for (name, micros) in &parts {
            println!("    {name:<18} {:>7.1}", micros / 1000.0 / cases.max(1) as f64);
        }
        let guest: f64 = parts.iter().map(|(_, m)| m).sum::<f64>() / 1e6;
        println!(
            "    {:<18} {:>7.1}  the host's share: sending, reading, judging",
            "host",
            (in_cases - guest) * 1000.0 / cases.max(1) as f64
        );
    }
    // By scenario (the id's first part): where the mean comes from.
    let mut by_scenario: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for c in &results.cases {
        let e = by_scenario.entry(c.id.split('/').next().unwrap_or_default()).or_default();
        e.0 += 1;
        e.1 += c.duration_s;
    }
    println!("  a case's mean, by scenario:");
    for (name, (n, total)) in &by_scenario {
        println!("    {name:<18} {n:>4} cases  {:>6.3} s", total / *n as f64);
    }
    Ok(status)
}

/// The fault-cost grid as generated cases, run by `test` on one VM per kernel; then its table,
/// raw samples and plots in the run directory, and report.html again to show them.
fn faults(ctx: &Ctx, vm: flags::Vm, figures: Option<&Path>) -> anyhow::Result<i32> {
    use daxtest::report::faults;
    let figures_args = figures.map(|d| format!("--figures {}", d.display()));
    let command = std::iter::once("cargo xtask bench faults".to_string())
        .chain(vm.to_args())
        .chain(figures_args)
        .collect::<Vec<_>>()
        .join(" ");
    // Under target/, where `repro` finds it again from results.json's `file`.
    let rel = Path::new("target/daxtest/bench/faults.toml");
    let file = ctx.root.join(rel);
    std::fs::create_dir_all(file.parent().expect("a directory"))?;
    std::fs::write(&file, faults::scenario())
        .with_context(|| format!("writing {}", file.display()))?;
    let test = flags::Test::plain(vm, vec![rel.display().to_string()]);
    let t = Instant::now();
    let (status, dir) = test.run_in_dir(ctx)?;
    let took = t.elapsed();
    let results = daxtest::report::results::read(&dir)?;
    let written = faults::write(&dir, &results, &command)?;
    std::fs::copy(&file, dir.join("faults").join("faults.toml"))?;
    daxtest::report::html::write_dir(&dir)?;
    println!();
    println!("{command}: {} cases in {:.0} s, exit {status}", results.cases.len(), secs(took));
    println!();
    print!("{}", faults::table(&faults::cells(&results)));
    println!();
    println!(
        "written: {}/faults/ (table.txt, table.md, samples.json, faults.toml and {} latency CDFs \
         as SVG), report.html",
        dir.display(),
        written.iter().filter(|p| p.extension().is_some_and(|e| e == "svg")).count()
    );
    if let Some(to) = figures {
        let copied = copy_figures(&written, &ctx.root.join(to))?;
        println!("copied: table.md and {copied} CDFs to {}", to.display());
    }
    Ok(status)
}

/// Copies table.md and the CDFs among `written` to `to`, whose old CDFs go first: what is there
/// afterwards is this run's.
fn copy_figures(written: &[std::path::PathBuf], to: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for old in std::fs::read_dir(to)?.flatten() {
        if old.path().extension().is_some_and(|e| e == "svg") {
            std::fs::remove_file(old.path())?;
        }
    }
    let mut cdfs = 0;
    for p in written {
        let name = p.file_name().expect("a file name");
        let is_cdf = p.extension().is_some_and(|e| e == "svg");
        if is_cdf || name == "table.md" {
            std::fs::copy(p, to.join(name))
                .with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
            cdfs += usize::from(is_cdf);
        }
    }
    Ok(cdfs)
}

/// Loads and validates a generated file of each size, as `check` does (read, parse, expand,
/// validate); the per-case cost of each size against the smallest's shows how checking grows.
/// Costs are the checking thread's CPU time, which other work on the machine (VM runs) hardly
/// changes; the wall time is shown beside it.
fn check(sizes: &[usize], reps: usize) -> anyhow::Result<i32> {
    let mut sizes = sizes.to_vec();
    sizes.sort();
    sizes.dedup();
    anyhow::ensure!(sizes.first().is_some_and(|&n| n > 0), "--sizes: give case counts above 0");
    let dir = tempfile::tempdir()?;
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "cases", "wall s", "CPU s", "cases/s", "us per case", "vs smallest"
    );
    let mut smallest = None;
    let mut last = 0.0;
    for &n in &sizes {
        let file = dir.path().join(format!("generated-{n}.toml"));
        std::fs::write(&file, generated_scenarios(n))?;
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (t, c) = (Instant::now(), thread_cpu());
            let (scenarios, diags) = daxtest::scenario::load_all(std::slice::from_ref(&file));
            cpu.push(thread_cpu() - c);
            wall.push(t.elapsed());
            anyhow::ensure!(diags.is_empty(), "the generated file is invalid: {}", diags[0]);
            let cases: usize = scenarios.iter().map(|s| s.cases.len()).sum();
            anyhow::ensure!(cases == n, "the generated file made {cases} cases, not {n}");
        }
        let cpu = secs(median_of(&cpu));
        let per_case = cpu / n as f64;
        let base = *smallest.get_or_insert(per_case);
        last = per_case / base;
        println!(
            "{n:>7} {:>10.3} {cpu:>10.3} {:>10.0} {:>12.1} {last:>12.2}",
            secs(median_of(&wall)),
            1.0 / per_case,
            per_case * 1e6,
        );
    }
    println!();
    println!(
        "per-case cost, {} vs {} cases: {last:.2} (linear: about 1; quadratic: {:.0})",
        sizes[sizes.len() - 1],
        sizes[0],
        sizes[sizes.len() - 1] as f64 / sizes[0] as f64
    );
    Ok(0)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One scenario file of `n` cases (no matrix: one case each), every case with the steps and
/// expectations that validation follows: files, a mapping used and unmapped, a saved extent map,
/// kernel-conditioned alternatives.
fn generated_scenarios(n: usize) -> String {
    let mut text = format!(
        "format = 1\nname = \"generated-{n}\"\nsummary = \"{n} cases for bench check\"\n\n\
         [mkfs]\nxfs = [\"-m\", \"reflink=1\"]\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            r#"
[[case]]
id = "case-{i}"
summary = "generated case {i}"
steps = [
  {{ op = "write", file = "f{i}", offset = 0, len = 8192, pattern = "a" }},
  {{ op = "fiemap", file = "f{i}", offset = 0, len = 0, save = "before" }},
  {{ op = "mmap", file = "f{i}", map = "m", offset = 0, len = 8192, kind = "shared" }},
  {{ op = "store", map = "m", offset = 4096, len = 4096, pattern = "b" }},
  {{ op = "load", map = "m", offset = 0, len = 4096, expect = {{ content = "a" }} }},
  {{ op = "fiemap", file = "f{i}", offset = 0, len = 0, expect = {{ extents = "unchanged", since = "before" }} }},
  {{ op = "clone", src = "f{i}", dst = "d/g{i}", expect = [
      {{ when = {{ kernel = "<6.2" }}, errno = "EINVAL" }},
      {{ ok = true }},
  ] }},
  {{ op = "munmap", map = "m" }},
  {{ op = "statx", file = "d/g{i}", expect = {{ dax = "on" }} }},
]
"#
        ));
    }
    text
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The median of durations measured at least once.
fn median_of(v: &[Duration]) -> Duration {
    median(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::power_down_uptime;

    #[test]
    fn the_bare_guests_uptime_is_its_power_down_line() {
        let serial = "[    0.000000] Linux version 6.12\r\n[    2.118293] reboot: Power down\r\n";
        assert_eq!(power_down_uptime(serial), Some(2.118293));
        // Another line at the end, or none at all: no figure rather than a wrong one.
        assert_eq!(power_down_uptime("[    1.5] Kernel panic - not syncing\r\n"), None);
        assert_eq!(power_down_uptime(""), None);
    }
}
