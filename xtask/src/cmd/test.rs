//! `cargo xtask test [FILTER|FILE.toml|DIR]... [--fs FS]`: run scenario cases in the guest and
//! report each one. Scenario errors stop it before anything boots (exit 2). `--repeat` and
//! `--until-fail` run cases many times; `--bisect` maps the outcome to `git bisect run`'s codes.

use super::Ctx;
use crate::flags;
use anyhow::Context;
use daxtest::exit;
use daxtest::machine::image::Image;
use daxtest::machine::vm::VmOptions;
use daxtest::report;
use daxtest::run::events::{CaseResult, Event, KernelInfo, RerunInfo, RunInfo, Selection};
use daxtest::run::plan::{self, PlannedCase, Resolution};
use daxtest::run::runner::{Outcome, Runner};
use daxtest::run::shard::{self, Durations, Shard};
use daxtest::scenario::{Case, CaseTimeouts};
use daxtest::version::KernelVersion;
use std::path::PathBuf;
use std::time::Instant;

/// What `test` selected: the cases, and the durations `--durations` names.
struct Selected {
    cases: Vec<Case>,
    durations: Option<Durations>,
}

/// `git bisect run`: 0 good, 1 bad, 125 this revision cannot be tested, > 127 stop bisecting.
pub mod bisect {
    pub const GOOD: i32 = 0;
    pub const BAD: i32 = 1;
    pub const UNTESTABLE: i32 = 125;
    pub const ABORT: i32 = 255;
}

/// Cases with no expectation for the kernel under test (`Case::resolve` fails), found once the
/// image tells the kernel's version and before anything boots: the scenario's fault, not the
/// kernel's, so an input error (exit 2) and with `--bisect` the end of the bisection (255).
#[derive(Debug)]
struct Unresolved(Vec<String>);

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for Unresolved {}

/// An [`Unresolved`] becomes an input error (exit 2); any other error stays as it is.
fn unresolved_is_input(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<Unresolved>() {
        Ok(u) => exit::input(u.to_string()),
        Err(e) => e,
    }
}

impl flags::Test {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let selected = match self.select_cases(ctx) {
            Ok(selected) => selected,
            // Bad input is the same at every revision: bisecting on would be meaningless.
            Err(e) if self.bisect => {
                eprintln!("error: {e:#}");
                return Ok(bisect::ABORT);
            }
            Err(e) => return Err(e),
        };
        let result = self.run_cases(ctx, selected).map(|(status, _)| status);
        if !self.bisect {
            return result.map_err(unresolved_is_input);
        }
        Ok(match result {
            Ok(exit::SUCCESS) => bisect::GOOD,
            Ok(exit::CASES_FAILED) => bisect::BAD,
            Ok(_) => bisect::UNTESTABLE,
            // Not this revision's fault: the same scenario has the same gap at every revision.
            Err(e) if e.is::<Unresolved>() => {
                eprintln!("error: {e:#}\ndaxtest: the scenario is bad input (exit 255)");
                bisect::ABORT
            }
            Err(e) => {
                eprintln!("error: {e:#}\ndaxtest: this kernel cannot be tested (exit 125)");
                bisect::UNTESTABLE
            }
        })
    }

    /// A run without `--bisect`: its exit status and its run directory.
    pub(super) fn run_in_dir(self, ctx: &Ctx) -> anyhow::Result<(i32, PathBuf)> {
        let selected = self.select_cases(ctx)?;
        self.run_cases(ctx, selected).map_err(unresolved_is_input)
    }

    /// The selected cases, and `--durations` read (so that a bad file stops the run before an
    /// image is built).
    fn select_cases(&self, ctx: &Ctx) -> anyhow::Result<Selected> {
        let cases = super::select_cases(&ctx.root, &self.select, self.fs)?;
        for (flag, value) in
            [("--step-timeout", self.step_timeout), ("--case-timeout", self.case_timeout)]
        {
            if value == Some(0) {
                return Err(exit::input(format!("{flag} 0: give a number of seconds above 0")));
            }
        }
        let durations = self.durations()?;
        if self.repeat == Some(0) {
            return Err(exit::input("--repeat 0: give how many times to run, 1 or more"));
        }
        let kernels = &self.vm.kernel;
        if kernels.len() > 1 && self.bisect {
            return Err(exit::input("--bisect tests one kernel per revision: give --kernel once"));
        }
        if let Some(k) =
            kernels.iter().enumerate().find_map(|(i, k)| kernels[..i].contains(k).then_some(k))
        {
            return Err(exit::input(format!("--kernel {k} given twice")));
        }
        Ok(Selected { cases, durations })
    }

    /// How many times each case runs.
    fn runs(&self) -> u32 {
        match (self.repeat, self.until_fail) {
            (Some(n), _) => n,
            (None, true) => 1000,
            (None, false) => 1,
        }
    }

    fn run_cases(&self, ctx: &Ctx, selected: Selected) -> anyhow::Result<(i32, PathBuf)> {
        let Selected { cases, durations } = selected;
        let specs: Vec<Option<&str>> = match self.vm.kernel.as_slice() {
            [] => vec![None],
            ks => ks.iter().map(|k| Some(k.as_str())).collect(),
        };
        // Every image first: a kernel that cannot be had fails the run before anything boots.
        let mut images = Vec::new();
        for spec in &specs {
            images.push(ctx.prepare_image(&self.vm, *spec)?);
        }
        // Then every case for every kernel, before the accelerator check (which may boot a probe)
        // and the first case boot anything.
        let unresolved: Vec<String> = images
            .iter()
            .map(|(image, opts)| unresolved(&cases, image, opts.device))
            .collect::<anyhow::Result<Vec<_>>>()?
            .concat();
        if !unresolved.is_empty() {
            return Err(Unresolved(unresolved).into());
        }
        let mut prepared = Vec::new();
        for (image, opts) in images {
            prepared.push(ctx.choose_accel(&self.vm, image, opts)?);
        }
        let mine = self.shard_of(&cases, &prepared, durations.as_ref());
        let kernels = specs
            .iter()
            .zip(&prepared)
            .zip(&mine)
            .map(|((spec, (image, opts)), mine)| {
                Ok(KernelPlan {
                    image,
                    opts,
                    kernel_spec: kernel_spec(ctx, *spec),
                    planned: self.plan(mine, image, opts.device)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let setup = RunSetup {
            overrides: CaseTimeouts { step_s: self.step_timeout, case_s: self.case_timeout },
            stop_at_failure: self.until_fail,
            runs_per_case: self.runs(),
            selection: Some(selection(&cases, self.shard)?),
            jobs: self.jobs.into(),
            boot_snapshot: !self.no_boot_snapshot,
            mkfs_images: !self.mkfs_in_guest,
        };
        execute(ctx, &setup, &kernels, &mut |_| {})
    }

    /// `--durations`: an earlier run's results.json, or its run directory.
    fn durations(&self) -> anyhow::Result<Option<Durations>> {
        let Some(p) = &self.durations else { return Ok(None) };
        let dir = match p.file_name().is_some_and(|n| n == "results.json") {
            true => p.parent().unwrap_or(std::path::Path::new(".")),
            false => p.as_path(),
        };
        let r = report::results::read(dir)
            .map_err(|e| exit::input(format!("--durations {}: {e:#}", p.display())))?;
        Ok(Some(Durations::from_results(&r)))
    }

    /// Each kernel's cases in this run: all of them, or with `--shard` this shard's.
    fn shard_of(
        &self,
        cases: &[Case],
        kernels: &[(Image, VmOptions)],
        durations: Option<&Durations>,
    ) -> Vec<Vec<Case>> {
        let Some(shard) = self.shard else {
            return kernels.iter().map(|_| cases.to_vec()).collect();
        };
        let pairs: Vec<_> = kernels
            .iter()
            .flat_map(|(image, _)| {
                cases.iter().map(|c| (image.kernel.release.clone(), c.id.clone()))
            })
            .collect();
        let shard_of = shard::assign(&pairs, shard.total, durations);
        let mut mine: Vec<Vec<Case>> = kernels.iter().map(|_| Vec::new()).collect();
        for (n, s) in shard_of.iter().enumerate() {
            if *s == shard.index {
                mine[n / cases.len()].push(cases[n % cases.len()].clone());
            }
        }
        let count: usize = mine.iter().map(Vec::len).sum();
        eprintln!(
            "daxtest: shard {}/{}: {count} of {} kernel x case pairs ({})",
            shard.index,
            shard.total,
            pairs.len(),
            match &self.durations {
                Some(p) => format!("balanced by the durations in {}", p.display()),
                None => "balanced by count".to_string(),
            }
        );
        mine
    }

    /// The planned runs of every case on one kernel: `--repeat` copies, seeds, resolution.
    fn plan(
        &self,
        cases: &[Case],
        image: &Image,
        device: daxtest_proto::Device,
    ) -> anyhow::Result<Vec<PlannedCase>> {
        Ok(plan::plan(cases, kernel_version(image)?, device, self.runs(), self.seed))
    }
}

/// The exit status of a kernel's share of a run.
fn exit_status(outcome: &Outcome) -> i32 {
    if outcome.infrastructure_failed {
        exit::INFRASTRUCTURE
    } else if outcome.any_failure {
        exit::CASES_FAILED
    } else {
        exit::SUCCESS
    }
}

/// How a run goes, beyond its kernels and cases.
pub(super) struct RunSetup {
    pub overrides: CaseTimeouts,
    pub stop_at_failure: bool,
    /// How many times each case runs (`--repeat`).
    pub runs_per_case: u32,
    pub selection: Option<Selection>,
    /// VMs running cases at once (`--jobs`).
    pub jobs: usize,
    /// VMs after the first may be restored from a boot snapshot (`--no-boot-snapshot`: no).
    pub boot_snapshot: bool,
    /// Filesystems may be copies of the run's first mkfs of each kind (`--mkfs-in-guest`: no).
    pub mkfs_images: bool,
}

/// A kernel's share of a run: its image and VM options, the spec it was asked as, the cases
/// planned for it.
pub(super) struct KernelPlan<'a> {
    pub image: &'a Image,
    pub opts: &'a VmOptions,
    /// As given to `--kernel` (or the recipe's default), a path made absolute.
    pub kernel_spec: String,
    pub planned: Vec<PlannedCase>,
}

/// The kernel spec a run was asked for, in the form `--kernel` takes it back.
pub(super) fn kernel_spec(ctx: &Ctx, spec: Option<&str>) -> String {
    let spec = spec.unwrap_or(&ctx.recipe.kernels.default);
    if daxtest::machine::kernel::local::is_path(spec) {
        if let Ok(abs) = std::fs::canonicalize(spec) {
            return abs.to_string_lossy().into_owned();
        }
    }
    spec.to_string()
}

/// Runs each kernel's planned cases in turn, in a new run directory (with a directory of its own
/// for each kernel when there are several), through the standard reporters; `on_result` sees
/// each case's result. Returns the worst of the kernels' exit statuses, and the run directory.
pub(super) fn execute(
    ctx: &Ctx,
    setup: &RunSetup,
    kernels: &[KernelPlan],
    on_result: &mut dyn FnMut(&CaseResult),
) -> anyhow::Result<(i32, PathBuf)> {
    let qemu_version = daxtest::machine::qemu::version(&ctx.sh)?;
    // Before this run becomes the latest: the progress line's durations are the latest run's.
    let console = report::Console::stderr(&ctx.root, progress_plan(kernels));
    let (run_id, run_dir) = report::prepare_run_dir(&ctx.root)?;
    let mut reporters = report::Reporters::standard(&run_dir, console);
    let mut emit = |e: &Event| {
        if let Event::CaseFinished(r) = e {
            on_result(r);
        }
        if let Err(err) = reporters.event(e) {
            eprintln!("daxtest: reporting: {err:#}");
        }
    };
    let started = Instant::now();
    emit(&Event::RunStarted(RunInfo {
        run_id,
        run_dir: run_dir.clone(),
        kernels: kernels.len(),
        runs_per_case: setup.runs_per_case,
        stop_at_failure: setup.stop_at_failure,
        selection: setup.selection.clone(),
    }));
    let mut status = exit::SUCCESS;
    let mut dirs: Vec<String> = Vec::new();
    for k in kernels {
        let (image, opts) = (k.image, k.opts);
        let dir = match kernels.len() {
            1 => ".".to_string(),
            _ => report::kernel_dir_name(&image.kernel.release, &dirs),
        };
        dirs.push(dir.clone());
        let kernel_dir = run_dir.join(&dir);
        std::fs::create_dir_all(&kernel_dir)
            .with_context(|| format!("creating {}", kernel_dir.display()))?;
        let info = KernelInfo {
            dir: dir.into(),
            kernel_id: image.kernel.id.clone(),
            kernel_release: image.kernel.release.clone(),
            accel: opts.accel.to_string(),
            qemu_version: qemu_version.clone(),
            cases: k.planned.len(),
            rerun: RerunInfo {
                kernel_spec: k.kernel_spec.clone(),
                image_key: image.manifest.key.clone(),
                image_dir: image.dir.clone(),
                memory_mib: opts.memory_mib,
                cpus: opts.cpus,
                device: opts.device,
                nvdimms: opts.nvdimms,
                nvdimm_size: opts.nvdimm_size,
                boot_timeout_s: opts.boot_timeout.as_secs(),
                step_timeout_s: setup.overrides.step_s,
                case_timeout_s: setup.overrides.case_s,
            },
        };
        let runner = Runner {
            image,
            root: &ctx.root,
            vm_options: opts,
            run_dir: &kernel_dir,
            timeouts: ctx.recipe.timeouts,
            overrides: setup.overrides,
            stop_at_failure: setup.stop_at_failure,
            jobs: setup.jobs,
            boot_snapshot: setup.boot_snapshot,
            mkfs_images: setup.mkfs_images,
        };
        let outcome = runner.run(info, &k.planned, &mut emit);
        status = status.max(exit_status(&outcome));
    }
    emit(&Event::RunFinished { elapsed: started.elapsed() });
    Ok((status, run_dir))
}

/// Each kernel's planned case ids for the progress line, and whether each runs in a VM.
fn progress_plan(kernels: &[KernelPlan]) -> Vec<report::progress::PlannedKernel> {
    kernels
        .iter()
        .map(|k| report::progress::PlannedKernel {
            release: k.image.kernel.release.clone(),
            cases: (k.planned.iter())
                .map(|p| (p.case.id.clone(), matches!(p.resolution, Ok(Resolution::Run { .. }))))
                .collect(),
        })
        .collect()
}

/// The digest of the selected cases: each id with the bytes of its scenario file.
fn selection(cases: &[Case], shard: Option<Shard>) -> anyhow::Result<Selection> {
    use sha2::{Digest, Sha256};
    let mut files = std::collections::BTreeMap::new();
    let mut ids: Vec<(&str, &std::path::Path)> =
        cases.iter().map(|c| (c.id.as_str(), c.file.as_path())).collect();
    ids.sort();
    let mut h = Sha256::new();
    for (id, file) in ids {
        if !files.contains_key(file) {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            files.insert(file, Sha256::digest(bytes));
        }
        h.update(id.as_bytes());
        h.update([0]);
        h.update(files[file]);
    }
    Ok(Selection {
        digest: h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect(),
        cases: cases.len(),
        shard: shard.map(|s| format!("{}/{}", s.index, s.total)),
    })
}

fn kernel_version(image: &Image) -> anyhow::Result<KernelVersion> {
    KernelVersion::parse(&image.kernel.version)
        .ok_or_else(|| anyhow::anyhow!("cannot read a version in {:?}", image.kernel.version))
}

/// Why each case that cannot be resolved for `image`'s kernel and `device` cannot, with the
/// case's id.
fn unresolved(
    cases: &[Case],
    image: &Image,
    device: daxtest_proto::Device,
) -> anyhow::Result<Vec<String>> {
    let version = kernel_version(image)?;
    Ok(cases
        .iter()
        .filter_map(|c| {
            plan::resolve(c, version, device, None).err().map(|e| format!("{}: {e}", c.id))
        })
        .collect())
}
