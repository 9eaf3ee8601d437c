//! The verbs of `cargo xtask`, one module each, and what they share: the project context and
//! the step from VM flags to a built image and VM options.

mod bench;
mod check;
mod image;
mod kernel;
mod list;
mod mutants;
mod report;
mod repro;
pub(crate) mod run;
mod shell;
mod test;

use crate::flags;
use daxtest::machine::accel;
use daxtest::machine::image::Image;
use daxtest::machine::vm::VmOptions;
use daxtest::recipe::{parse_size, Recipe};
use daxtest::scenario::{self, Scenario, Selection};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Ctx {
    pub sh: xshell::Shell,
    pub root: PathBuf,
    pub recipe: Recipe,
}

impl Ctx {
    pub fn new(sh: xshell::Shell, root: PathBuf) -> anyhow::Result<Ctx> {
        let recipe = Recipe::load(&root)?;
        daxtest::concurrent::sweep_stale(&root);
        Ok(Ctx { sh, root, recipe })
    }

    pub fn cache(&self) -> PathBuf {
        self.root.join("target/daxtest/cache")
    }

    pub fn image(&self, kernel: Option<&str>, force: bool) -> anyhow::Result<Image> {
        let spec = kernel.unwrap_or(&self.recipe.kernels.default);
        let image =
            daxtest::machine::image::ensure(&self.sh, &self.root, &self.recipe, spec, force)?;
        if image.reused {
            eprintln!(
                "daxtest: image {} for {} is up to date (reused {})",
                image.manifest.key,
                image.kernel.id,
                image.dir.display()
            );
        } else {
            eprintln!(
                "daxtest: built image {} for {} in {:.1} s ({})",
                image.manifest.key,
                image.kernel.id,
                image.manifest.build_seconds,
                image.dir.display()
            );
        }
        Ok(image)
    }

    /// Everything a verb needs before it boots: the image and the VM options, all checked.
    pub fn prepare(&self, f: &flags::Vm) -> anyhow::Result<(Image, VmOptions)> {
        self.prepare_kernel(f, f.single_kernel()?)
    }

    /// [`Ctx::prepare`] for one of several kernels.
    pub fn prepare_kernel(
        &self,
        f: &flags::Vm,
        kernel: Option<&str>,
    ) -> anyhow::Result<(Image, VmOptions)> {
        let (image, opts) = self.prepare_image(f, kernel)?;
        self.choose_accel(f, image, opts)
    }

    /// The image and the checked VM options, the accelerator not yet chosen: nothing has booted
    /// (choosing may boot a KVM probe).
    pub fn prepare_image(
        &self,
        f: &flags::Vm,
        kernel: Option<&str>,
    ) -> anyhow::Result<(Image, VmOptions)> {
        let d = &self.recipe.vm;
        let size = f.nvdimm_size.as_deref().unwrap_or(&d.nvdimm_size);
        let opts = VmOptions {
            accel: daxtest::machine::qemu::Accel::Tcg,
            memory_mib: f.memory.unwrap_or(d.memory_mib),
            cpus: f.cpus.unwrap_or(d.cpus),
            device: f.device,
            nvdimms: f.nvdimms.unwrap_or(d.nvdimms),
            nvdimm_size: parse_size(size)
                .and_then(|b| {
                    daxtest::machine::vm::validate_nvdimm_size(b)
                        .map(|()| b)
                        .map_err(anyhow::Error::msg)
                })
                .map_err(|e| {
                    // Name where the size came from: the flag, or the recipe's default.
                    let source = match &f.nvdimm_size {
                        Some(s) => format!("--nvdimm-size {s}"),
                        None => format!("images/recipe.toml [vm] nvdimm_size = {size:?}"),
                    };
                    daxtest::exit::input(format!("{source}: {e:#}"))
                })?,
            boot_timeout: Duration::from_secs(f.boot_timeout.unwrap_or(d.boot_timeout_s)),
            hung_task_secs: d.hung_task_s,
            ssh_port: f.ssh_port,
        };
        // Bad sizes, a busy port and a full disk are refused before the image build and before
        // anything boots.
        opts.validate()?;
        daxtest::machine::vm::ensure_free_space(&daxtest::paths::tmp_root(&self.root), &opts)?;
        let image = self.image(kernel, false)?;
        Ok((image, opts))
    }

    /// The accelerator for `image` (`auto` boots a bare VM under KVM once to see that it works).
    pub fn choose_accel(
        &self,
        f: &flags::Vm,
        image: Image,
        mut opts: VmOptions,
    ) -> anyhow::Result<(Image, VmOptions)> {
        let (accel, why) = accel::resolve(&self.sh, f.accel, &image, &self.cache())?;
        eprintln!("daxtest: accelerator: {why}");
        opts.accel = accel;
        Ok((image, opts))
    }
}

/// The cases that `select` (scenario files or directories, and case id filters) and `--fs`
/// choose, in file order, as `test` runs them and `list` shows them; none is an input error.
pub fn select_cases(
    root: &Path,
    select: &[String],
    fs: Option<flags::FsArg>,
) -> anyhow::Result<Vec<scenario::Case>> {
    let sel = Selection::new(root, select).map_err(|e| daxtest::exit::input(format!("{e:#}")))?;
    let cases: Vec<scenario::Case> = load_scenarios(&sel)?
        .into_iter()
        .flat_map(|s| s.cases)
        .filter(|c| sel.matches(&c.id) && fs.is_none_or(|fs| fs == c.fs))
        .collect();
    if cases.is_empty() {
        return Err(daxtest::exit::input(format!(
            "no case matches {select:?}; `cargo xtask list` shows the case ids"
        )));
    }
    Ok(cases)
}

/// Loads the selected scenario files; every error of every file is reported before failing.
pub fn load_scenarios(sel: &Selection) -> anyhow::Result<Vec<Scenario>> {
    let (scenarios, diags) = scenario::load_all(&sel.files);
    check::report_diagnostics(&diags)?;
    Ok(scenarios)
}
