//! `cargo xtask kernel --src DIR`: configure a kernel source tree for daxtest (a base config with
//! images/kernel.config merged in, every fragment option checked after Kconfig resolved it) and
//! build it, so that `cargo xtask test --kernel DIR` runs on it next.

use super::Ctx;
use crate::flags;
use anyhow::Context;
use daxtest::exit;
use daxtest::machine::kernel::build::{self, Base, Step};
use daxtest::machine::kernel::config::{self, Fragment};
use daxtest::machine::{host, kernel};
use daxtest::version::KernelVersion;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xshell::cmd;

impl flags::Kernel {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let tree = build::source_tree(&self.src)?;
        if self.config == Base::Keep && !tree.join(".config").exists() {
            return Err(exit::input(format!(
                "--src {} --config keep: the tree has no .config; use --config minimal or \
                 --config debian to make one",
                self.src
            )));
        }
        let version = build::tree_version(&std::fs::read_to_string(tree.join("Makefile"))?)
            .ok_or_else(|| {
                exit::input(format!(
                    "--src {}: its Makefile sets no VERSION and PATCHLEVEL: give the top of a \
                     Linux source checkout",
                    self.src
                ))
            })?;
        let jobs = jobs(self.jobs);
        let configure = configure(ctx, &tree, version, self.config)?;
        let built = build(ctx, &tree, jobs)?;
        eprintln!(
            "daxtest: built {} in {} (`{}`); configure took {}",
            built.release,
            build::human(built.took),
            built.command,
            build::human(configure)
        );
        eprintln!("next: cargo xtask test --kernel {}", tree.display());
        Ok(exit::SUCCESS)
    }
}

/// A finished build: the kernel's release, how long make took and what it ran.
pub(super) struct Built {
    pub release: String,
    pub took: std::time::Duration,
    pub command: String,
}

/// Configures `tree` from `base` with images/kernel.config merged in, and checks that Kconfig
/// kept every option of the fragment; returns how long it took.
pub(super) fn configure(
    ctx: &Ctx,
    tree: &Path,
    version: KernelVersion,
    base: Base,
) -> anyhow::Result<std::time::Duration> {
    let fragment = Fragment::load(&ctx.root)?;
    host::ensure_files(&ctx.sh, &build::build_tools())?;

    // Kconfig is given the options of the tree's version only (images/kernel.config says
    // which versions each is for), so that a removed option is never asked of it.
    let fragment_path = ctx.cache().join(format!("kernel-{version}.config"));
    std::fs::create_dir_all(ctx.cache())?;
    std::fs::write(&fragment_path, fragment.merge_text(version))
        .with_context(|| format!("writing {}", fragment_path.display()))?;
    let left_out = fragment.left_out(version);
    if !left_out.is_empty() {
        eprintln!(
            "daxtest: {} for this {version} tree leaves out {}",
            config::PATH,
            left_out.join(", ")
        );
    }
    let base_config = match base {
        Base::Debian => Some(debian_config(ctx, version)?),
        _ => None,
    };
    let sh = &ctx.sh;
    let _cd = sh.push_dir(tree);

    let start = Instant::now();
    for step in build::config_steps(base, &fragment_path, base_config.as_deref()) {
        match step {
            Step::CopyConfig(from) => {
                eprintln!("$ {}", Step::CopyConfig(from.clone()));
                std::fs::copy(&from, tree.join(".config"))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
            Step::Run(argv) => {
                let (program, args) = argv.split_first().expect("a step names its program");
                // The tree's own scripts by absolute path: the working directory is the
                // tree's, but a relative program is looked up from xtask's.
                let program: PathBuf = match program.contains('/') {
                    true => tree.join(program),
                    false => program.into(),
                };
                cmd!(sh, "{program} {args...}").run()?;
            }
        }
    }
    let took = start.elapsed();
    let config = std::fs::read_to_string(tree.join(".config"))?;
    let dropped = fragment.missing(&config, version);
    if !dropped.is_empty() {
        let why = daxtest::machine::kernel::kconfig::explain_dropped(tree, &config, &dropped);
        let fragment = config::PATH;
        return Err(exit::input(format!(
            "Kconfig dropped {} option(s) of {fragment} in {} (their dependencies are not \
             met, or the option is not in this version):\n  {}\nEnable what they depend on \
             (in {fragment}, or with --config keep in the tree's .config), or say in \
             {fragment} which versions an option is for (`# until X.Y`), and run this again",
            dropped.len(),
            tree.display(),
            why.join("\n  ")
        )));
    }
    eprintln!(
        "daxtest: configured {} in {} (--config {} + images/kernel.config, every option \
         of the fragment set)",
        tree.display(),
        build::human(took),
        base.name()
    );
    Ok(took)
}

/// Builds the configured `tree` (bzImage, and modules where the config has them).
pub(super) fn build(ctx: &Ctx, tree: &Path, jobs: usize) -> anyhow::Result<Built> {
    let sh = &ctx.sh;
    let _cd = sh.push_dir(tree);
    let config = std::fs::read_to_string(tree.join(".config"))?;
    host::ensure_files(sh, &build::config_tools(&config))?;
    let argv = build::build_command(jobs, &config);
    let start = Instant::now();
    let (make, args) = argv.split_first().expect("the build command names make");
    let built = cmd!(sh, "{make} {args...}").run();
    let took = start.elapsed();
    built.with_context(|| {
        format!(
            "`{}` in {} failed after {} (make's output above)",
            argv.join(" "),
            tree.display(),
            build::human(took)
        )
    })?;
    let release = std::fs::read_to_string(tree.join("include/config/kernel.release"))
        .context("the build wrote no include/config/kernel.release")?;
    Ok(Built { release: release.trim().to_string(), took, command: argv.join(" ") })
}

/// Parallel make jobs: `--jobs`, else one per CPU.
pub(super) fn jobs(flag: Option<u32>) -> usize {
    match flag {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The config file of the pinned Debian kernel of the tree's version (else the default one),
/// fetched and unpacked like any `--kernel debian:...`.
fn debian_config(ctx: &Ctx, version: KernelVersion) -> anyhow::Result<PathBuf> {
    let pinned = &ctx.recipe.kernels.debian;
    let series = format!("{}.{}", version.0, version.1);
    let spec = match pinned.contains_key(&series) {
        true => format!("debian:{series}"),
        false => {
            let default = ctx.recipe.kernels.default.clone();
            eprintln!(
                "daxtest: warning: images/recipe.toml pins no Debian kernel of this tree's \
                 version {series}; starting from {default}'s config (olddefconfig gives new \
                 options their defaults)"
            );
            default
        }
    };
    let (name, pkg) = kernel::debian_spec(&spec, &ctx.recipe)?;
    let k = kernel::fetch_debian(&ctx.sh, &ctx.cache(), &name, pkg)?;
    eprintln!(
        "daxtest: warning: {name}'s config builds every driver Debian ships as a module (several \
         thousand): hours on 2 cores; --config minimal builds only what daxtest needs"
    );
    Ok(k.config)
}
