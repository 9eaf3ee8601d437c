//! `cargo xtask report merge RUN... -o DIR`: the run directories of the shards of one run (or of
//! runs of the same cases on other kernels) made into one run directory, as if one process had
//! run them all. Their results are read back and replayed as events through the standard
//! reporters, so the merged results.json, junit.xml, kernel logs, serial logs and case x kernel
//! table are written by the code that writes every run's. Refused before anything is written: a
//! case present twice, runs of different scenario sets, the same kernel from different images.

use super::results::{self, Results};
use super::Reporters;
use crate::run::events::{CaseResult, Event, KernelInfo, OutsideCases, RunInfo};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One input run: its directory and its results.
struct Input {
    dir: PathBuf,
    results: Results,
}

/// Merges `runs` into the new directory `out` (which must not exist, or be empty); the console
/// summary goes to `console`. Returns the merged results.
pub fn merge(runs: &[PathBuf], out: &Path, console: Box<dyn Write>) -> anyhow::Result<Results> {
    if runs.is_empty() {
        bail!("give the run directories to merge");
    }
    let inputs = runs
        .iter()
        .map(|d| Ok(Input { dir: d.clone(), results: results::read(d)? }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check(&inputs)?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty: give a new directory to -o", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut reporters = Reporters::standard(out, super::Console::new(console));
    let mut emit = |e: &Event| reporters.event(e);
    replay(&inputs, out, &mut emit)?;
    results::read(out)
}

/// Everything that makes the inputs unmergeable, said at once.
fn check(inputs: &[Input]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let first = &inputs[0];
    for i in inputs {
        match (&i.results.selection, &first.results.selection) {
            (None, _) => problems.push(format!(
                "{}: its results.json does not say which cases were selected (a `repro` run, or \
                 a daxtest older than `--shard`): merge only runs of `cargo xtask test`",
                i.dir.display()
            )),
            (Some(a), Some(b)) if a.digest != b.digest || a.cases != b.cases => {
                problems.push(format!(
                    "{} ran another scenario set than {} ({} cases, digest {}, against {} cases, \
                     digest {}): merge only shards of one selection, from the same scenario files",
                    i.dir.display(),
                    first.dir.display(),
                    a.cases,
                    a.digest,
                    b.cases,
                    b.digest
                ))
            }
            _ => {}
        }
    }
    let mut image: HashMap<&str, (&str, &Path)> = HashMap::new();
    for i in inputs {
        for k in &i.results.kernels {
            match image.get(k.kernel_id.as_str()) {
                Some((key, dir)) if *key != k.rerun.image_key => problems.push(format!(
                    "{} ran {} from image {}, {} from image {}: merge only runs of one image per \
                     kernel",
                    i.dir.display(),
                    k.kernel_id,
                    k.rerun.image_key,
                    dir.display(),
                    key
                )),
                Some(_) => {}
                None => {
                    image.insert(&k.kernel_id, (&k.rerun.image_key, &i.dir));
                }
            }
        }
    }
    let mut seen: HashMap<(&str, &str), &Path> = HashMap::new();
    for i in inputs {
        for c in &i.results.cases {
            if let Some(other) = seen.insert((&c.kernel, &c.id), &i.dir) {
                problems.push(format!(
                    "case {} on {} is in {} and in {}: a case may be in one of the runs only",
                    c.id,
                    c.kernel,
                    other.display(),
                    i.dir.display()
                ));
            }
        }
    }
    const SHOWN: usize = 8;
    if problems.len() > SHOWN {
        let more = problems.len() - SHOWN;
        problems.truncate(SHOWN);
        problems.push(format!("and {more} more"));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => bail!("cannot merge:\n  {}", problems.join("\n  ")),
    }
}

/// The events a run of every input's cases would have sent: per kernel (in the order the
/// inputs first name them), each input's VMs and cases in the order they ran.
fn replay(
    inputs: &[Input],
    out: &Path,
    emit: &mut dyn FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut kernels: Vec<&str> = Vec::new();
    for i in inputs {
        for k in &i.results.kernels {
            if !kernels.contains(&k.kernel_id.as_str()) {
                kernels.push(&k.kernel_id);
            }
        }
    }
    let selection = inputs[0].results.selection.clone().map(|mut s| {
        s.shard = None;
        s
    });
    let elapsed = inputs.iter().map(|i| i.results.elapsed_s).fold(0.0, f64::max);
    emit(&Event::RunStarted(RunInfo {
        run_id: format!("merge-of-{}", inputs.len()),
        run_dir: out.to_path_buf(),
        kernels: kernels.len(),
        runs_per_case: 1,
        stop_at_failure: false,
        selection,
    }))?;
    let kernel_count = kernels.len();
    let mut dirs: Vec<String> = Vec::new();
    for kernel_id in kernels {
        let parts: Vec<(&Input, &results::KernelEntry)> = inputs
            .iter()
            .filter_map(|i| {
                i.results.kernels.iter().find(|k| k.kernel_id == kernel_id).map(|k| (i, k))
            })
            .collect();
        let (_, first) = parts[0];
        // As a run lays them out: one kernel in the run directory, several in one each.
        let dir = match kernel_count {
            1 => ".".to_string(),
            _ => super::kernel_dir_name(&first.kernel_release, &dirs),
        };
        dirs.push(dir.clone());
        let own = results::under(out, Path::new(&dir));
        std::fs::create_dir_all(&own)?;
        let cases = parts
            .iter()
            .map(|(i, k)| i.results.cases.iter().filter(|c| c.kernel == k.kernel_release).count())
            .sum();
        emit(&Event::KernelStarted(KernelInfo {
            dir: dir.into(),
            kernel_id: first.kernel_id.clone(),
            kernel_release: first.kernel_release.clone(),
            accel: first.accel.clone(),
            qemu_version: first.qemu_version.clone(),
            cases,
            rerun: first.rerun.clone(),
        }))?;
        let mut serial_logs = Vec::new();
        let mut boot_failures = Vec::new();
        // Each part's VMs numbered on after the parts before it.
        let mut vms_before = 0;
        for (n, (input, k)) in parts.iter().enumerate() {
            let src = results::under(&input.dir, &k.dir);
            for (v, command_line) in k.qemu_command_lines.iter().enumerate() {
                emit(&Event::VmBooted {
                    vm: vms_before + v + 1,
                    boot_time: Duration::ZERO,
                    reason: format!("as in {}", input.dir.display()),
                    command_line: command_line.clone(),
                })?;
            }
            for c in input.results.cases.iter().filter(|c| c.kernel == k.kernel_release) {
                emit_case(&input.dir, c, c.vm.map(|v| vms_before + v), emit)?;
            }
            vms_before += k.qemu_command_lines.len();
            for o in input.results.kernel_log_outside_cases.iter() {
                if o.kernel == k.kernel_release {
                    emit(&Event::KernelLogOutsideCases(OutsideCases::clone(&o.outside)))?;
                }
            }
            serial_logs.push(src.join("serial.log"));
            for b in &k.boot_failures {
                let to = own.join(format!("part-{}-{}", n + 1, b.display()));
                std::fs::copy(src.join(b), &to)
                    .with_context(|| format!("copying {}", src.join(b).display()))?;
                boot_failures.push(to);
            }
        }
        let elapsed = parts.iter().map(|(_, k)| k.elapsed_s).fold(0.0, f64::max);
        emit(&Event::KernelFinished {
            elapsed: Duration::from_secs_f64(elapsed),
            serial_logs,
            boot_failures,
        })?;
    }
    emit(&Event::RunFinished { elapsed: Duration::from_secs_f64(elapsed) })
}

fn emit_case(
    dir: &Path,
    c: &results::CaseEntry,
    vm: Option<usize>,
    emit: &mut dyn FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let log = dir.join(&c.kernel_log_path);
    let kernel_log = std::fs::read_to_string(&log)
        .with_context(|| format!("reading {}", log.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    emit(&Event::CaseStarted { id: c.id.clone() })?;
    emit(&Event::CaseFinished(CaseResult {
        id: c.id.clone(),
        file: c.file.clone(),
        kernel: c.kernel.clone(),
        status: c.status,
        duration: Duration::from_secs_f64(c.duration_s),
        message: c.message.clone(),
        problems: c.problems.clone(),
        kernel_log,
        phases: c.phases.clone(),
        seed: c.seed,
        measurements: c.measurements.clone(),
        profiles: c.profiles.clone(),
        vm,
        known_bug: c.known_bug.clone(),
    }))
}
