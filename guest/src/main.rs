//! daxtest guest agent. As PID 1 it boots the test VM (see `boot`); over SSH the host calls its
//! subcommands: `probe` (readiness and boot report), `serve` and `case` (cases), `mkfs` (a
//! case's mkfs alone), `stat` (DAX state of a file), `prove-dax` (the boot's DAX proof, again),
//! `kmsg-rest`, `poweroff`.
//!
//! The folders follow the flow and neither uses the other: `boot` (PID 1 until the guest is
//! ready), then `exec` (the cases). The modules at the root are support for both: `kmsg` (the
//! kernel log PID 1 copies and cases cut windows from) and `stat` (a file's DAX state). Unsafe
//! code is denied here and allowed only in `exec::sys`.
#![deny(unsafe_code)]

mod boot;
#[cfg(test)]
mod errno_table;
mod exec;
mod kmsg;
mod stat;

use anyhow::{bail, Context};
use daxtest_proto::READY_PATH;
use std::time::{Duration, Instant};

fn main() {
    if rustix::process::getpid().is_init() {
        // PID 1 must never return: the kernel panics if init exits.
        boot::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("daxtest-agent: {e:#}");
            std::process::exit(2);
        }
    }
}

const USAGE: &str =
    "usage: daxtest-agent probe [--wait-ms N] | preloaded --wait-ms N | stat PATH... | prove-dax DEVICE | case < CASE.json | mkfs < CASE.json | serve | dump | wait-kmsg TEXT [--ready FILE [--then-log MESSAGE]] | kmsg-rest | restored --realtime-ns N | poweroff | version";

fn dispatch(args: &[String]) -> anyhow::Result<i32> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["version"] => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        ["probe"] => probe(Duration::ZERO),
        // Started by init once the guest is ready: loads the payload's modules (xfs).
        ["preload", modules @ ..] => {
            boot::preload(modules);
            Ok(0)
        }
        // When the modules left to the payload (xfs) were loaded, in the background after ready.
        ["preloaded", "--wait-ms", ms] => {
            let ms: u64 =
                ms.parse().with_context(|| format!("--wait-ms takes milliseconds, not {ms:?}"))?;
            println!("{}", wait_for(daxtest_proto::PRELOADED_PATH, Duration::from_millis(ms))?);
            Ok(0)
        }
        ["probe", "--wait-ms", ms] => {
            let ms: u64 =
                ms.parse().with_context(|| format!("--wait-ms takes milliseconds, not {ms:?}"))?;
            probe(Duration::from_millis(ms))
        }
        ["stat", paths @ ..] if !paths.is_empty() => {
            let mut code = 0;
            for p in paths {
                match stat::describe(p) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("{p}: {e:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        // The boot's DAX proof on a device of the running guest (pmem0), as JSON; exit 1 when DAX
        // does not work there. It formats the device's start and wipes it.
        ["prove-dax", device] => {
            let proof = boot::prove_dax(device);
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(if proof.ok { 0 } else { 1 })
        }
        ["case"] => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
            let spec: daxtest_proto::case::CaseSpec =
                serde_json::from_str(&input).context("the case on stdin is not a CaseSpec")?;
            println!("{}", serde_json::to_string(&exec::run(&spec))?);
            Ok(0)
        }
        // The host's cases, one JSON line each, answered with one report line each: a VM's
        // cases share this process.
        ["serve"] => {
            use std::io::{BufRead, Write};
            for line in std::io::stdin().lock().lines() {
                let spec: daxtest_proto::case::CaseSpec =
                    serde_json::from_str(&line?).context("a line on stdin is not a CaseSpec")?;
                let report = serde_json::to_string(&exec::run(&spec))?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{report}")?;
                out.flush()?;
            }
            Ok(0)
        }
        // The case's mkfs alone (its set-up's, with the device's cached blocks written and
        // dropped): the host copies what it wrote, for the later cases that ask for it.
        ["mkfs"] => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
            let spec: daxtest_proto::case::CaseSpec =
                serde_json::from_str(&input).context("the case on stdin is not a CaseSpec")?;
            exec::mkfs(&spec).map_err(anyhow::Error::msg)?;
            Ok(0)
        }
        ["dump"] => dump(),
        // First thing in a guest restored from the host's boot snapshot.
        ["restored", "--realtime-ns", ns] => {
            let ns: u128 = ns
                .parse()
                .with_context(|| format!("--realtime-ns takes nanoseconds, not {ns:?}"))?;
            boot::after_restore(ns)?;
            Ok(0)
        }
        // The toggling side of race_toggle_write, run as a process of its own by the case.
        ["toggle-dax-flag", path, rounds, seed] => {
            let rounds: u64 = rounds.parse().context("toggle-dax-flag: rounds")?;
            let seed: u64 = seed.parse().context("toggle-dax-flag: seed")?;
            // The writer starts when it reads this line: both sides run at once.
            println!("{}", exec::race::TOGGLER_READY);
            for e in exec::race::toggle(std::path::Path::new(path), rounds, seed) {
                println!("{e}");
            }
            Ok(0)
        }
        // For shell steps that must act right after the kernel logs something.
        ["wait-kmsg", text] => {
            kmsg::wait_for(text, None).context("reading /dev/kmsg")?;
            Ok(0)
        }
        ["wait-kmsg", text, "--ready", file] => {
            kmsg::wait_for(text, Some(std::path::Path::new(file))).context("reading /dev/kmsg")?;
            Ok(0)
        }
        // Logs MESSAGE the moment TEXT is logged, from this process: no exit and shell between
        // them, so that a fixture's message lands before anything the host does next.
        ["wait-kmsg", text, "--ready", file, "--then-log", message] => {
            kmsg::wait_for(text, Some(std::path::Path::new(file))).context("reading /dev/kmsg")?;
            std::fs::write("/dev/kmsg", message).context("writing /dev/kmsg")?;
            Ok(0)
        }
        // At the end of a VM's life: the kernel log no case window took, for the host to judge.
        ["kmsg-rest"] => {
            let (lines, gap) = kmsg::rest();
            for line in lines {
                println!("{line}");
            }
            if let Some(gap) = gap {
                println!("(daxtest: kernel log incomplete: {gap})");
            }
            Ok(0)
        }
        ["poweroff"] => {
            rustix::fs::sync();
            rustix::system::reboot(rustix::system::RebootCommand::PowerOff)
                .context("reboot(POWER_OFF)")?;
            Ok(0)
        }
        _ => bail!("{USAGE}"),
    }
}

/// For a case that does not return: asks the kernel for the blocked tasks (sysrq w) and every
/// CPU's back-trace (sysrq l), then prints the kernel log since the case began.
fn dump() -> anyhow::Result<i32> {
    for key in ["w", "l"] {
        // /proc/sysrq-trigger works for root whatever kernel.sysrq says.
        std::fs::write("/proc/sysrq-trigger", key).context("writing /proc/sysrq-trigger")?;
    }
    // sysrq l goes through NMIs to the other CPUs: let their back-traces land.
    std::thread::sleep(Duration::from_millis(500));
    for line in kmsg::since_last_marker().context("reading /dev/kmsg")? {
        println!("{line}");
    }
    Ok(0)
}

/// A file init writes, once it is there (waiting up to `wait` for it).
fn wait_for(path: &str, wait: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("not written yet: {path}")),
        }
    }
}

/// Prints the boot report once init has written it; exit 0 when the guest is usable.
fn probe(wait: Duration) -> anyhow::Result<i32> {
    let text = wait_for(READY_PATH, wait)?;
    let report: daxtest_proto::ReadyReport =
        serde_json::from_str(&text).with_context(|| format!("parsing {READY_PATH}"))?;
    println!("{text}");
    Ok(if report.ok { 0 } else { 1 })
}
