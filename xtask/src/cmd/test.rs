//! `cargo xtask test [FILTER|FILE.toml|DIR]... [--fs FS]`: run scenario cases in the guest and
//! report each one. Scenario errors stop it before anything boots (exit 2). `--repeat` and
//! `--until-fail` run cases many times; `--bisect` maps the outcome to `git bisect run`'s codes.

use super::Ctx;
use crate::flags;
use daxtest::exit;
use daxtest::machine::image::Image;
use daxtest::machine::vm::VmOptions;
use daxtest::report::{self, matrix};
use daxtest::run::events::{CaseResult, Event, RerunInfo, RunInfo};
use daxtest::run::plan::{self, PlannedCase};
use daxtest::run::runner::{Outcome, Runner};
use daxtest::scenario::{Case, CaseTimeouts};
use daxtest::version::KernelVersion;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        let cases = match self.select_cases(ctx) {
            Ok(cases) => cases,
            // Bad input is the same at every revision: bisecting on would be meaningless.
            Err(e) if self.bisect => {
                eprintln!("error: {e:#}");
                return Ok(bisect::ABORT);
            }
            Err(e) => return Err(e),
        };
        let result = self.run_cases(ctx, cases).map(|(status, _)| status);
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
        let cases = self.select_cases(ctx)?;
        self.run_cases(ctx, cases).map_err(unresolved_is_input)
    }

    fn select_cases(&self, ctx: &Ctx) -> anyhow::Result<Vec<Case>> {
        let cases = super::select_cases(&ctx.root, &self.select, self.fs)?;
        for (flag, value) in
            [("--step-timeout", self.step_timeout), ("--case-timeout", self.case_timeout)]
        {
            if value == Some(0) {
                return Err(exit::input(format!("{flag} 0: give a number of seconds above 0")));
            }
        }
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
        Ok(cases)
    }

    /// How many times each case runs.
    fn runs(&self) -> u32 {
        match (self.repeat, self.until_fail) {
            (Some(n), _) => n,
            (None, true) => 1000,
            (None, false) => 1,
        }
    }

    fn run_cases(&self, ctx: &Ctx, cases: Vec<Case>) -> anyhow::Result<(i32, PathBuf)> {
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
            .map(|(image, _)| unresolved(&cases, image))
            .collect::<anyhow::Result<Vec<_>>>()?
            .concat();
        if !unresolved.is_empty() {
            return Err(Unresolved(unresolved).into());
        }
        let mut prepared = Vec::new();
        for (image, opts) in images {
            prepared.push(ctx.choose_accel(&self.vm, image, opts)?);
        }
        let (run_id, run_dir) = report::prepare_run_dir(&ctx.root)?;
        if let ([spec], [(image, opts)]) = (specs.as_slice(), prepared.as_slice()) {
            let run = self.run_on(ctx, &cases, *spec, image, opts, run_id, &run_dir)?;
            return Ok((run.exit_status(), run_dir));
        }
        let mut runs = Vec::new();
        let mut dirs = Vec::new();
        for (spec, (image, opts)) in specs.iter().zip(&prepared) {
            let dir = matrix::dir_name(&image.kernel.release, &dirs);
            dirs.push(dir.clone());
            let sub_id = format!("{run_id}/{dir}");
            runs.push(self.run_on(ctx, &cases, *spec, image, opts, sub_id, &run_dir.join(&dir))?);
        }
        let status = runs.iter().map(KernelOutcome::exit_status).max().unwrap_or(exit::SUCCESS);
        let kernel_runs: Vec<matrix::KernelRun> = runs.into_iter().map(|r| r.kernel_run).collect();
        eprint!("\n{}", matrix::table(&kernel_runs));
        matrix::write(&run_dir, &run_id, &kernel_runs)?;
        eprintln!("results: {}", run_dir.display());
        Ok((status, run_dir))
    }

    /// The planned runs of every case on one kernel: `--repeat` copies, seeds, resolution.
    fn plan(&self, cases: &[Case], image: &Image) -> anyhow::Result<Vec<PlannedCase>> {
        Ok(plan::plan(cases, kernel_version(image)?, self.runs(), self.seed))
    }

    /// Runs the cases on one kernel, reporting into `run_dir`.
    #[allow(clippy::too_many_arguments)]
    fn run_on(
        &self,
        ctx: &Ctx,
        cases: &[Case],
        spec: Option<&str>,
        image: &Image,
        opts: &VmOptions,
        run_id: String,
        run_dir: &Path,
    ) -> anyhow::Result<KernelOutcome> {
        let planned = self.plan(cases, image)?;
        let setup = RunSetup {
            kernel_spec: kernel_spec(ctx, spec),
            overrides: CaseTimeouts { step_s: self.step_timeout, case_s: self.case_timeout },
            stop_at_failure: self.until_fail,
        };
        let mut results: Vec<CaseResult> = Vec::new();
        let started = Instant::now();
        let outcome = execute(ctx, image, opts, &setup, &planned, run_id, run_dir, &mut |r| {
            results.push(r.clone())
        })?;
        let runs = self.runs();
        if runs > 1 {
            let failures: Vec<&CaseResult> =
                results.iter().filter(|r| r.status.is_failure()).collect();
            eprintln!(
                "daxtest: {} of {} runs failed ({} cases x up to {runs} runs{})",
                failures.len(),
                results.len(),
                cases.len(),
                if self.until_fail { ", stopping at the first failure" } else { "" }
            );
            for r in failures {
                let (case, _) = r.id.rsplit_once('#').unwrap_or((&r.id, ""));
                eprintln!(
                    "daxtest:   {}: {}; again with: cargo xtask test '{case}' --seed {}",
                    r.id,
                    r.status.name(),
                    r.seed
                );
            }
        }
        Ok(KernelOutcome {
            outcome,
            kernel_run: matrix::KernelRun {
                spec: image.kernel.id.clone(),
                release: image.kernel.release.clone(),
                dir: run_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                elapsed: started.elapsed(),
                results,
            },
        })
    }
}

/// One kernel's run: how it went, and its results for the matrix.
struct KernelOutcome {
    outcome: Outcome,
    kernel_run: matrix::KernelRun,
}

impl KernelOutcome {
    fn exit_status(&self) -> i32 {
        if self.outcome.infrastructure_failed {
            exit::INFRASTRUCTURE
        } else if self.outcome.any_failure {
            exit::CASES_FAILED
        } else {
            exit::SUCCESS
        }
    }
}

/// How a run goes, beyond its cases and VM.
pub(super) struct RunSetup {
    /// As given to `--kernel` (or the recipe's default), a path made absolute.
    pub kernel_spec: String,
    pub overrides: CaseTimeouts,
    pub stop_at_failure: bool,
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

/// Runs planned cases on one kernel into `run_dir` with the standard reporters; `on_result`
/// sees each case's result.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    ctx: &Ctx,
    image: &Image,
    opts: &VmOptions,
    setup: &RunSetup,
    planned: &[PlannedCase],
    run_id: String,
    run_dir: &Path,
    on_result: &mut dyn FnMut(&CaseResult),
) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(run_dir)?;
    let info = RunInfo {
        run_id,
        run_dir: run_dir.to_path_buf(),
        kernel_id: image.kernel.id.clone(),
        kernel_release: image.kernel.release.clone(),
        accel: opts.accel.to_string(),
        qemu_version: daxtest::machine::qemu::version(&ctx.sh)?,
        cases: planned.len(),
        rerun: RerunInfo {
            kernel_spec: setup.kernel_spec.clone(),
            image_key: image.manifest.key.clone(),
            image_dir: image.dir.clone(),
            memory_mib: opts.memory_mib,
            cpus: opts.cpus,
            nvdimms: opts.nvdimms,
            nvdimm_size: opts.nvdimm_size,
            boot_timeout_s: opts.boot_timeout.as_secs(),
            step_timeout_s: setup.overrides.step_s,
            case_timeout_s: setup.overrides.case_s,
        },
    };
    let mut reporters = report::Reporters::standard(run_dir, Box::new(std::io::stderr()));
    let mut emit = |e: &Event| {
        if let Event::CaseFinished(r) = e {
            on_result(r);
        }
        if let Err(err) = reporters.event(e) {
            eprintln!("daxtest: reporting: {err:#}");
        }
    };
    emit(&Event::RunStarted(info));
    let runner = Runner {
        image,
        root: &ctx.root,
        vm_options: opts,
        run_dir,
        timeouts: ctx.recipe.timeouts,
        overrides: setup.overrides,
        stop_at_failure: setup.stop_at_failure,
    };
    Ok(runner.run(planned, &mut emit))
}

fn kernel_version(image: &Image) -> anyhow::Result<KernelVersion> {
    KernelVersion::parse(&image.kernel.version)
        .ok_or_else(|| anyhow::anyhow!("cannot read a version in {:?}", image.kernel.version))
}

/// Why each case that cannot be resolved for `image`'s kernel cannot, with the case's id.
fn unresolved(cases: &[Case], image: &Image) -> anyhow::Result<Vec<String>> {
    let version = kernel_version(image)?;
    Ok(cases
        .iter()
        .filter_map(|c| plan::resolve(c, version, None).err().map(|e| format!("{}: {e}", c.id)))
        .collect())
}
