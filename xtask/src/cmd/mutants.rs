//! `cargo xtask mutants [--src DIR] [--only NAME]... [--all] [--dry-run]`: the catalogue's power
//! to catch broken DAX kernels. The unmutated tree is built and must pass every case the mutants
//! name (else nothing counts: exit 3); then each mutant is applied, built incrementally, booted,
//! its cases run, and the tree given back. Exit 0 when every mutant expected to be killed was,
//! 1 otherwise, 2 for bad patches or cases that do not exist.

use super::test::{execute, kernel_spec, KernelPlan, RunSetup};
use super::{kernel, Ctx};
use crate::flags;
use daxtest::exit;
use daxtest::machine::kernel::build::{self, Base};
use daxtest::mutants::verdict::{self, Baseline, KillRate, MutantResult, Outcome, Verdict};
use daxtest::mutants::{self, source, Mutant};
use daxtest::run::plan;
use daxtest::scenario::{Case, CaseTimeouts, Selection};
use daxtest::version::KernelVersion;
use std::path::{Path, PathBuf};
use std::time::Instant;

impl flags::Mutants {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let started = Instant::now();
        let chosen = mutants::select(mutants::load_all(&ctx.root)?, &self.only)?;
        let catalogue = super::select_cases(&ctx.root, &[], None)?;
        let cases_of = |m: &Mutant| -> Vec<Case> {
            match self.all {
                true => catalogue.clone(),
                false => {
                    let sel = Selection { files: vec![], filters: m.cases.clone() };
                    catalogue.iter().filter(|c| sel.matches(&c.id)).cloned().collect()
                }
            }
        };
        // Every case a header names exists, before anything is fetched or built.
        let ids: Vec<&str> = catalogue.iter().map(|c| c.id.as_str()).collect();
        let unknown = mutants::unknown_cases(&chosen, &ids);
        if !unknown.is_empty() {
            return Err(exit::input(unknown.join("\n")));
        }

        // patch, dpkg-deb, apt-get: the recipe's host tools.
        daxtest::machine::host::ensure_files(&ctx.sh, &ctx.recipe.host_tools)?;
        let tree = match &self.src {
            Some(dir) => build::source_tree(dir)?,
            None => {
                let pin = source::Pin::load(&ctx.root)?;
                source::fetch(&ctx.sh, &ctx.cache(), &pin)?
            }
        };
        if let Some(name) = source::restore(&tree)? {
            eprintln!(
                "daxtest: {} had mutant {name} applied (a run was cut short): restored",
                tree.display()
            );
        }
        let version = build::tree_version(&std::fs::read_to_string(tree.join("Makefile"))?)
            .ok_or_else(|| {
                exit::input(format!("{}: its Makefile sets no version", tree.display()))
            })?;
        let not_applying: Vec<String> = chosen
            .iter()
            .filter_map(|m| {
                source::check_applies(&ctx.sh, &tree, m)
                    .err()
                    .map(|e| format!("{}: {e}", m.path.display()))
            })
            .collect();
        if !not_applying.is_empty() {
            return Err(exit::input(not_applying.join("\n")));
        }
        // Every case some chosen mutant names, once: what the unmutated tree must pass.
        let mut baseline_cases: Vec<Case> = vec![];
        for m in &chosen {
            for c in cases_of(m) {
                if !baseline_cases.iter().any(|b| b.id == c.id) {
                    baseline_cases.push(c);
                }
            }
        }
        if self.dry_run {
            eprintln!(
                "daxtest: {} mutants apply cleanly to {} ({version}); the {} cases they name \
                 exist. Nothing built (--dry-run)",
                chosen.len(),
                tree.display(),
                baseline_cases.len()
            );
            return Ok(exit::SUCCESS);
        }

        let jobs = kernel::jobs(self.jobs);
        configure_once(ctx, &tree, version)?;
        // The unmutated tree first: a kill counts only where the same cases pass without it.
        let t = Instant::now();
        let built = kernel::build(ctx, &tree, jobs)?;
        let build_s = t.elapsed().as_secs_f64();
        eprintln!(
            "daxtest: built the unmutated {} in {}",
            built.release,
            build::human(t.elapsed())
        );
        let (outcomes, run_dir, test_s) = self.run_cases(ctx, &tree, &baseline_cases)?;
        let baseline = Baseline {
            cases: baseline_cases.iter().map(|c| c.id.clone()).collect(),
            build_s,
            test_s,
            run_dir: run_dir.display().to_string(),
        };
        let problems = verdict::baseline_problems(&outcomes);
        if !problems.is_empty() {
            eprintln!(
                "daxtest: the unmutated tree does not pass the mutants' cases, so no kill would \
                 mean anything (void, exit 3):\n  {}",
                problems.join("\n  ")
            );
            return Ok(exit::INFRASTRUCTURE);
        }

        let mut results = Vec::new();
        for m in &chosen {
            let result = self.run_mutant(ctx, &tree, jobs, m, &cases_of(m));
            // The tree is given back whatever happened to the mutant.
            source::restore(&tree)?;
            let r = result?;
            eprintln!("daxtest: mutant {}: {}", m.name, describe(&r));
            results.push(r);
        }
        if self.src.is_some() {
            // A tree of the user's: built unmutated again, as it was given.
            kernel::build(ctx, &tree, jobs)?;
        }

        let rate = KillRate::of(&results);
        print_table(&baseline, &results);
        eprintln!("{rate}");
        let (_, dir) = daxtest::report::prepare_run_dir(&ctx.root)?;
        let report = verdict::Report {
            schema_version: 1,
            source: tree.display().to_string(),
            kernel_version: version.to_string(),
            baseline: &baseline,
            mutants: &results,
            kill_rate: rate,
            total_s: started.elapsed().as_secs_f64(),
        };
        let path = dir.join("mutants.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("results: {}", path.display());
        Ok(verdict::exit_status(&results))
    }

    /// Applies, builds and tests one mutant; a patch or build that fails is its verdict
    /// (untested), not the run's end.
    fn run_mutant(
        &self,
        ctx: &Ctx,
        tree: &Path,
        jobs: usize,
        m: &Mutant,
        cases: &[Case],
    ) -> anyhow::Result<MutantResult> {
        let mut r = MutantResult {
            name: m.name.clone(),
            behaviour: m.behaviour.clone(),
            sources: m.sources.clone(),
            cases: cases.iter().map(|c| c.id.clone()).collect(),
            expected_to_survive: m.survives.clone(),
            verdict: Verdict::Survived,
            build_s: 0.0,
            test_s: 0.0,
            run_dir: None,
        };
        eprintln!("daxtest: mutant {}: {}", m.name, m.behaviour);
        let t = Instant::now();
        let built = source::apply(&ctx.sh, tree, m).and_then(|()| kernel::build(ctx, tree, jobs));
        r.build_s = t.elapsed().as_secs_f64();
        if let Err(e) = built {
            r.verdict = Verdict::Untested { why: format!("{e:#}") };
            return Ok(r);
        }
        match self.run_cases(ctx, tree, cases) {
            Ok((outcomes, run_dir, test_s)) => {
                r.verdict = verdict::judge(&outcomes);
                r.run_dir = Some(run_dir.display().to_string());
                r.test_s = test_s;
            }
            // The mutant kernel could not be imaged or booted at all.
            Err(e) => r.verdict = Verdict::Untested { why: format!("{e:#}") },
        }
        Ok(r)
    }

    /// Runs `cases` on the kernel built in `tree`: each case's outcome, the run directory and
    /// the seconds it took (image, boot, cases).
    fn run_cases(
        &self,
        ctx: &Ctx,
        tree: &Path,
        cases: &[Case],
    ) -> anyhow::Result<(Vec<Outcome>, PathBuf, f64)> {
        let t = Instant::now();
        let vm = flags::Vm::defaults();
        let spec = tree.to_string_lossy().into_owned();
        let (image, opts) = ctx.prepare_kernel(&vm, Some(&spec))?;
        let version = KernelVersion::parse(&image.kernel.version)
            .ok_or_else(|| anyhow::anyhow!("no version in {:?}", image.kernel.version))?;
        let kernels = [KernelPlan {
            image: &image,
            opts: &opts,
            kernel_spec: kernel_spec(ctx, Some(&spec)),
            planned: plan::plan(cases, version, opts.device, 1, None),
        }];
        let setup = RunSetup {
            overrides: CaseTimeouts::default(),
            stop_at_failure: false,
            runs_per_case: 1,
            selection: None,
            jobs: 1,
            boot_snapshot: true,
            mkfs_images: true,
        };
        let mut outcomes = Vec::new();
        let (_, run_dir) = execute(ctx, &setup, &kernels, &mut |r| {
            outcomes.push(Outcome {
                case: r.id.clone(),
                status: r.status,
                message: r.message.lines().next().unwrap_or_default().to_string(),
            })
        })?;
        Ok((outcomes, run_dir, t.elapsed().as_secs_f64()))
    }
}

/// Configures the tree (minimal config + images/kernel.config) unless its .config already has
/// every option of the fragment: configuring again could cost a rebuild of everything.
fn configure_once(ctx: &Ctx, tree: &Path, version: KernelVersion) -> anyhow::Result<()> {
    let fragment = daxtest::machine::kernel::config::Fragment::load(&ctx.root)?;
    if let Ok(config) = std::fs::read_to_string(tree.join(".config")) {
        if fragment.missing(&config, version).is_empty() {
            return Ok(());
        }
    }
    kernel::configure(ctx, tree, version, Base::Minimal)?;
    Ok(())
}

fn describe(r: &MutantResult) -> String {
    let expected = match (&r.verdict, &r.expected_to_survive) {
        (Verdict::Killed { .. }, Some(_)) => " (its header expects it to survive: update it)",
        (Verdict::Survived, Some(_)) => " (as its header expects)",
        (Verdict::Survived, None) => " (NOT CAUGHT: strengthen the cases it names)",
        _ => "",
    };
    let what = match &r.verdict {
        Verdict::Killed { by } => {
            let first = &by[0];
            format!(
                "killed by {} case(s), first {} {}: {}",
                by.len(),
                first.case,
                first.status.name(),
                first.message
            )
        }
        Verdict::Survived => "survived".into(),
        Verdict::Untested { why } => format!("untested: {why}"),
    };
    format!("{what}{expected}")
}

/// The console table: mutant, behaviour, verdict, killing cases, build and test time.
fn print_table(baseline: &Baseline, results: &[MutantResult]) {
    let clip = |s: &str, n: usize| -> String {
        match s.chars().count() > n {
            true => s.chars().take(n - 3).collect::<String>() + "...",
            false => s.to_string(),
        }
    };
    let row = |name: &str, verdict: &str, build: f64, test: f64, what: &str, killers: &str| {
        eprintln!(
            "{:<34} {:<9} {:>6.0}s {:>6.0}s  {:<52} {killers}",
            clip(name, 34),
            verdict,
            build,
            test,
            clip(what, 52)
        )
    };
    eprintln!();
    eprintln!(
        "{:<34} {:<9} {:>7} {:>7}  {:<52} killing cases",
        "mutant", "verdict", "build", "test", "behaviour"
    );
    let cases = format!("{} cases pass", baseline.cases.len());
    row("(unmutated)", "baseline", baseline.build_s, baseline.test_s, &cases, "");
    for r in results {
        // Upper case where the header expected otherwise.
        let verdict = match r.as_expected() {
            true => r.verdict.name().to_string(),
            false => r.verdict.name().to_uppercase(),
        };
        let killers = match &r.verdict {
            Verdict::Killed { by } => {
                by.iter().map(|o| o.case.as_str()).collect::<Vec<_>>().join(" ")
            }
            _ => String::new(),
        };
        row(&r.name, &verdict, r.build_s, r.test_s, &r.behaviour, &killers);
    }
}
