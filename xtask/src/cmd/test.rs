//! `cargo xtask test [FILTER|FILE.toml|DIR]... [--fs FS]`: run scenario cases in the guest and
//! report each one. Scenario errors stop it before anything boots (exit 2). `--repeat` and
//! `--until-fail` run cases many times; `--bisect` maps the outcome to `git bisect run`'s codes.

use super::Ctx;
use crate::events::{CaseResult, Event, RerunInfo, RunInfo, Status};
use crate::exit;
use crate::flags;
use crate::image::Image;
use crate::reporters;
use crate::runner::{Outcome, Planned, Runner};
use crate::scenario::{Case, KernelVersion, Selection, TimeoutDef};
use crate::vm::VmOptions;

/// `git bisect run`: 0 good, 1 bad, 125 this revision cannot be tested, > 127 stop bisecting.
pub mod bisect {
    pub const GOOD: i32 = 0;
    pub const BAD: i32 = 1;
    pub const UNTESTABLE: i32 = 125;
    pub const ABORT: i32 = 255;
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
        let result = self.run_cases(ctx, cases);
        if !self.bisect {
            return result;
        }
        Ok(match result {
            Ok(exit::SUCCESS) => bisect::GOOD,
            Ok(exit::CASES_FAILED) => bisect::BAD,
            Ok(_) => bisect::UNTESTABLE,
            Err(e) => {
                eprintln!("error: {e:#}\ndaxtest: this kernel cannot be tested (exit 125)");
                bisect::UNTESTABLE
            }
        })
    }

    fn select_cases(&self, ctx: &Ctx) -> anyhow::Result<Vec<Case>> {
        let sel =
            Selection::new(&ctx.root, &self.select).map_err(|e| exit::input(format!("{e:#}")))?;
        let scenarios = super::load_scenarios(&sel)?;
        let cases: Vec<_> = scenarios
            .into_iter()
            .flat_map(|s| s.cases)
            .filter(|c| sel.matches(&c.id) && self.fs.is_none_or(|fs| fs == c.fs))
            .collect();
        if cases.is_empty() {
            return Err(exit::input(format!(
                "no case matches {:?}; `cargo xtask list` shows the case ids",
                self.select
            )));
        }
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

    fn run_cases(&self, ctx: &Ctx, cases: Vec<Case>) -> anyhow::Result<i32> {
        let (image, opts) = ctx.prepare(&self.vm)?;
        let version = KernelVersion::parse(&image.kernel.version).ok_or_else(|| {
            anyhow::anyhow!("cannot read a version in {:?}", image.kernel.version)
        })?;
        let runs = self.runs();
        let mut planned = Vec::new();
        for k in 1..=runs {
            for case in &cases {
                let mut case = case.clone();
                let seed = self.seed.or((k > 1).then(|| repeat_seed(case.seed, k)));
                if runs > 1 {
                    case.id = format!("{}#{k}", case.id);
                }
                planned.push(Planned { resolved: case.resolve(version, seed), case });
            }
        }

        let mut failures: Vec<(String, Status, u64)> = Vec::new();
        let mut finished = 0;
        let setup = RunSetup {
            kernel_spec: kernel_spec(ctx, &self.vm),
            overrides: TimeoutDef { step_s: self.step_timeout, case_s: self.case_timeout },
            stop_at_failure: self.until_fail,
        };
        let (outcome, _) = execute(ctx, &image, &opts, &setup, &planned, &mut |r| {
            finished += 1;
            if r.status.is_failure() {
                failures.push((r.id.clone(), r.status, r.seed));
            }
        })?;
        if runs > 1 {
            eprintln!(
                "daxtest: {} of {finished} runs failed ({} cases x up to {runs} runs{})",
                failures.len(),
                cases.len(),
                if self.until_fail { ", stopping at the first failure" } else { "" }
            );
            for (id, status, seed) in &failures {
                let (case, _) = id.rsplit_once('#').unwrap_or((id, ""));
                eprintln!(
                    "daxtest:   {id}: {}; again with: cargo xtask test '{case}' --seed {seed}",
                    status.name()
                );
            }
        }
        Ok(if outcome.infrastructure_failed {
            exit::INFRASTRUCTURE
        } else if outcome.any_failure {
            exit::CASES_FAILED
        } else {
            exit::SUCCESS
        })
    }
}

/// How a run goes, beyond its cases and VM.
pub(super) struct RunSetup {
    /// As given to `--kernel` (or the recipe's default), a path made absolute.
    pub kernel_spec: String,
    pub overrides: TimeoutDef,
    pub stop_at_failure: bool,
}

/// The kernel spec a run was asked for, in the form `--kernel` takes it back.
pub(super) fn kernel_spec(ctx: &Ctx, vm: &flags::Vm) -> String {
    let spec = vm.kernel.clone().unwrap_or_else(|| ctx.recipe.kernels.default.clone());
    if crate::local_kernel::is_path(&spec) {
        if let Ok(abs) = std::fs::canonicalize(&spec) {
            return abs.to_string_lossy().into_owned();
        }
    }
    spec
}

/// Runs planned cases in a new run directory with the standard reporters; `on_result` sees
/// each case's result. Returns the outcome and the run directory.
pub(super) fn execute(
    ctx: &Ctx,
    image: &Image,
    opts: &VmOptions,
    setup: &RunSetup,
    planned: &[Planned],
    on_result: &mut dyn FnMut(&CaseResult),
) -> anyhow::Result<(Outcome, std::path::PathBuf)> {
    let (run_id, run_dir) = reporters::prepare_run_dir(&ctx.root)?;
    let info = RunInfo {
        run_id,
        run_dir: run_dir.clone(),
        kernel_id: image.kernel.id.clone(),
        kernel_release: image.kernel.release.clone(),
        accel: opts.accel.to_string(),
        qemu_version: crate::qemu::version(&ctx.sh)?,
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
    let mut reporters = reporters::Reporters::standard(&run_dir, Box::new(std::io::stderr()));
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
        run_dir: &run_dir,
        timeouts: ctx.recipe.timeouts,
        overrides: setup.overrides,
        stop_at_failure: setup.stop_at_failure,
    };
    let outcome = runner.run(planned, &mut emit);
    Ok((outcome, run_dir))
}

/// Run k of a repeated case gets its own seed, derived from the case's and k (SplitMix64).
fn repeat_seed(seed: u64, k: u32) -> u64 {
    let mut z = seed.wrapping_add(u64::from(k).wrapping_mul(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_runs_get_distinct_stable_seeds() {
        let seeds: std::collections::BTreeSet<u64> = (2..100).map(|k| repeat_seed(7, k)).collect();
        assert_eq!(seeds.len(), 98);
        assert_eq!(repeat_seed(7, 5), repeat_seed(7, 5));
    }
}
