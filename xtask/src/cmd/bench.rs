//! `cargo xtask bench boot`: boot-to-ready against a bare boot of the same kernel, same QEMU
//! configuration (NVDIMMs, network, CPUs, memory), in one run, alternating the two kinds so that
//! a change in the machine's load affects both alike.

use super::Ctx;
use crate::flags::{self, BenchWhat};
use crate::vm::Vm;
use std::time::{Duration, Instant};

impl flags::Bench {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        match self.what {
            BenchWhat::Boot { vm, reps } => boot(ctx, &vm, reps.max(1)),
        }
    }
}

fn boot(ctx: &Ctx, flags: &flags::Vm, reps: usize) -> anyhow::Result<i32> {
    let (image, opts) = ctx.prepare(flags)?;
    // One boot first, untimed: it fills the fsdax template cache, as any earlier run would have.
    let (vm, ready) = Vm::start(&image, &ctx.root, &opts)?;
    vm.shutdown(ready)?;

    let (mut bare, mut full, mut xfs) = (Vec::new(), Vec::new(), Vec::new());
    let mut phases: Vec<Vec<(String, f64)>> = Vec::new();
    println!(
        "{:>4} {:>12} {:>16} {:>15}",
        "rep", "bare boot s", "boot-to-ready s", "modprobe xfs s"
    );
    for rep in 1..=reps {
        let mut vm = Vm::spawn(&image, &ctx.root, &opts, &image.bare_initramfs(), true)?;
        let b = vm.wait_exit(opts.boot_timeout)?;
        drop(vm);

        let (vm, ready) = Vm::start(&image, &ctx.root, &opts)?;
        let r = ready.boot_time;
        // What the boot leaves to first use: xfs.ko, loaded by the guest's modprobe.
        let t = Instant::now();
        let out = ready.guest.capture("modprobe xfs")?;
        anyhow::ensure!(
            out.status == 0,
            "modprobe xfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let x = t.elapsed();
        let timeline = &ready.report.timeline;
        phases.push(timeline.iter().map(|p| (p.name.clone(), p.uptime_s)).collect());
        vm.shutdown(ready)?;

        println!("{rep:>4} {:>12.2} {:>16.2} {:>15.2}", secs(b), secs(r), secs(x));
        bare.push(b);
        full.push(r);
        xfs.push(x);
    }
    let (mb, mf, mx) = (median(&mut bare), median(&mut full), median(&mut xfs));
    println!();
    println!("kernel:               {}", image.kernel.id);
    println!("accelerator:          {}", opts.accel);
    println!("NVDIMMs:              {} x {} MiB", opts.nvdimms, opts.nvdimm_size >> 20);
    println!("bare boot (median):   {:.2} s  QEMU start to exit; init only powers off", secs(mb));
    println!("boot-to-ready (med):  {:.2} s  QEMU start to the agent's report over SSH", secs(mf));
    println!("ratio:                {:.2}", secs(mf) / secs(mb));
    println!(
        "modprobe xfs (med):   {:.2} s  on-demand, after ready; paid by the first XFS use",
        secs(mx)
    );
    if let Some(first) = phases.first() {
        println!("guest uptime at the end of each boot phase (median over {reps}):");
        for (i, (name, _)) in first.iter().enumerate() {
            let mut v: Vec<f64> = phases.iter().filter_map(|p| p.get(i).map(|x| x.1)).collect();
            v.sort_by(f64::total_cmp);
            println!("  {name:<10} {:.2} s", v[v.len() / 2]);
        }
    }
    Ok(0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
