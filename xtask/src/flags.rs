//! The whole command line of `cargo xtask`, in one place.

use clap::{Args, Parser, Subcommand};
use daxtest::machine::accel::AccelChoice;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "daxtest: Linux DAX filesystem tests in QEMU with emulated NVDIMMs"
)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the guest image (kernel, modules, tools, agent), or say that the cached one is current.
    Image(Image),
    /// Boot a VM, run a command in it through /bin/sh, print its output, exit with its status.
    Run(Run),
    /// Boot a VM and open an interactive root shell in it.
    Shell(Shell),
    /// Measure things; `bench boot` compares boot-to-ready with a bare boot of the same kernel.
    Bench(Bench),
    /// Run DAX scenario cases in the guest and report each one.
    Test(Test),
    /// List the case ids that `test` with the same arguments would run.
    List(List),
    /// Validate scenario files without booting anything.
    Check(Check),
    /// Run one case of an earlier run again (same kernel, seed, scenario, VM options) and write
    /// a bug-report bundle: README, scenario, case spec, kernel log, qemu.sh, reproduce.sh.
    Repro(Repro),
    /// Configure a kernel source tree for daxtest and build it; then
    /// `cargo xtask test --kernel DIR` runs the cases on it.
    Kernel(Kernel),
    /// Build kernels with deliberate DAX bugs (mutants/*.patch) and run the cases each names:
    /// which the catalogue catches (killed) and which it misses (survived), and the kill rate.
    Mutants(Mutants),
    /// Work with finished runs: `report merge` makes shards' run directories one, `report kcidb`
    /// writes a run as KCIDB JSON.
    Report(Report),
}

#[derive(Debug, Args)]
pub struct Report {
    #[command(subcommand)]
    pub what: ReportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge run directories (the shards of one `test` run, or runs of the same cases on other
    /// kernels) into one: results.json, junit.xml, kernel logs, serial logs, the case x kernel
    /// table. A case in two runs, runs of different scenario sets and one kernel from two images
    /// are refused.
    Merge {
        /// The run directories (each with its results.json).
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<std::path::PathBuf>,
        /// The merged run directory: new, or empty.
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Write a run as KCIDB v5.3 JSON (KernelCI's common database): a checkout and a build per
    /// kernel, a test per case per kernel (path daxtest.CASE.PARTS), xfails as known issues.
    Kcidb {
        /// The run directory (with its results.json).
        #[arg(value_name = "RUN_DIR")]
        run: std::path::PathBuf,
        /// The file to write; stdout without it.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The CI system's name in KCIDB (lower-case letters, digits, _): the origin of every
        /// object and the prefix of its id.
        #[arg(long, value_name = "NAME", default_value = daxtest::report::kcidb::DEFAULT_ORIGIN)]
        origin: String,
        /// Where the run directory is published (e.g. a CI artifact URL): log URLs are this plus
        /// the log's path in the run directory. Default: file:// URLs on this machine.
        #[arg(long, value_name = "URL")]
        log_url_base: Option<String>,
    },
    /// Write RUN_DIR/report.html (every run writes one): one self-contained page with the
    /// summary, a filterable case table, the case x kernel matrix, each failure with its problems
    /// and kernel log, and timing plots.
    Html {
        /// The run directory (with its results.json).
        #[arg(value_name = "RUN_DIR")]
        run: std::path::PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct Mutants {
    /// The kernel source tree to mutate. Default: Debian's linux-source package pinned in
    /// mutants/source.toml, fetched and unpacked once into daxtest's cache.
    #[arg(long, value_name = "DIR")]
    pub src: Option<String>,
    /// Only this mutant (the NAME of mutants/NAME.patch); may be given more than once.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Run the whole catalogue on each mutant, not only the cases its header names.
    #[arg(long)]
    pub all: bool,
    /// Fetch and unpack the tree, check that every patch applies cleanly and that every case it
    /// names exists; build and boot nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct Repro {
    /// RUN/CASE: RUN is a run directory, a run id under target/daxtest/runs/ or `latest`; CASE a
    /// case id of that run (a `#k` repeat suffix allowed).
    #[arg(value_name = "RUN/CASE")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct Test {
    #[command(flatten)]
    pub vm: Vm,
    /// Case-id filters (substring, or a glob with *), scenario files (.toml) or directories.
    /// Default: every file under scenarios/.
    pub select: Vec<String>,
    /// Only cases on this filesystem.
    #[arg(long, value_enum)]
    pub fs: Option<FsArg>,
    /// Seed for every case (default: each case's own stable seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds a step may take before the case is reported as hung (default: the scenario's,
    /// else images/recipe.toml's [timeouts]).
    #[arg(long, value_name = "SECS")]
    pub step_timeout: Option<u64>,
    /// Seconds a whole case may take (default as for --step-timeout).
    #[arg(long, value_name = "SECS")]
    pub case_timeout: Option<u64>,
    /// Run the selected cases N times in one boot (one per --jobs lane; a fresh VM after a crash
    /// or hang); run k > 1 of a case uses a seed derived from its own and k, unless --seed fixes
    /// it.
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
    /// Stop at the first failing run (with --repeat N: at most N runs, else 1000).
    #[arg(long)]
    pub until_fail: bool,
    /// Exit statuses for `git bisect run`: 0 every case passed, 1 a case failed, crashed or hung,
    /// 125 the kernel cannot be tested (image, boot), 255 bad input (stops the bisection).
    #[arg(long)]
    pub bisect: bool,
    /// Run shard I of N (1-based) of the kernel x case pairs: each pair is in exactly one shard
    /// (CI jobs on N machines, merged with `cargo xtask report merge`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<daxtest::run::shard::Shard>,
    /// With --shard: balance the shards by the case durations of this earlier run (its
    /// results.json or run directory) instead of by count.
    #[arg(long, value_name = "RESULTS", requires = "shard")]
    pub durations: Option<std::path::PathBuf>,
    /// Run cases on N VMs at once, each taking the next case when free (default 1). Under TCG
    /// a VM keeps about one core busy: more than the host's cores only slows every case.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Boot every VM. By default, when cases need VMs after the first (power cuts, fresh VMs),
    /// the first VM's state is saved once it is ready and the later ones are restored from it
    /// (0.2 to 0.8 s instead of a boot and module loading; the NVDIMMs are not in the snapshot).
    #[arg(long)]
    pub no_boot_snapshot: bool,
    /// Run every case's mkfs in the guest. By default (NVDIMM kinds) the run's first case with
    /// a given filesystem and mkfs options runs it on a device the host zeroed, and later such
    /// cases get the blocks it wrote copied onto their zeroed device by the host (the same
    /// bytes: milliseconds instead of 0.1 to 0.2 s of mkfs under TCG).
    #[arg(long)]
    pub mkfs_in_guest: bool,
}

impl Test {
    /// `test` of `select` with every other flag at its default, as the benches run it.
    pub fn plain(vm: Vm, select: Vec<String>) -> Test {
        Test {
            vm,
            select,
            fs: None,
            seed: None,
            step_timeout: None,
            case_timeout: None,
            repeat: None,
            until_fail: false,
            bisect: false,
            shard: None,
            durations: None,
            jobs: 1,
            no_boot_snapshot: false,
            mkfs_in_guest: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct List {
    /// As for `test`.
    pub select: Vec<String>,
    #[arg(long, value_enum)]
    pub fs: Option<FsArg>,
}

#[derive(Debug, Args)]
pub struct Kernel {
    /// The kernel source tree: the top of a Linux checkout (Makefile, arch/x86, scripts/).
    #[arg(long, value_name = "DIR")]
    pub src: String,
    /// Where the .config starts from; images/kernel.config is merged into it in every case.
    /// minimal: x86_64_defconfig; debian: the pinned Debian kernel's config (thousands of
    /// modules: hours on 2 cores); keep: the tree's own .config.
    #[arg(long, value_enum, default_value = "minimal")]
    pub config: daxtest::machine::kernel::build::Base,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct Check {
    /// Scenario files or directories (default: scenarios/).
    pub paths: Vec<String>,
}

/// A filesystem under test, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsArg {
    Xfs,
    Ext4,
}

impl PartialEq<daxtest_proto::case::Fs> for FsArg {
    fn eq(&self, other: &daxtest_proto::case::Fs) -> bool {
        matches!(
            (self, other),
            (FsArg::Xfs, daxtest_proto::case::Fs::Xfs)
                | (FsArg::Ext4, daxtest_proto::case::Fs::Ext4)
        )
    }
}

#[derive(Debug, Args)]
pub struct Image {
    /// Kernel: debian:6.12, debian:6.1, debian:7.2 (pinned in images/recipe.toml), or the path of
    /// a kernel build tree or install root. Default: the recipe's.
    #[arg(long)]
    pub kernel: Option<String>,
    /// Rebuild even if a cached image has the same inputs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args, Clone)]
pub struct Vm {
    /// Kernel: debian:6.12, debian:6.1, debian:7.2 (pinned in images/recipe.toml), or the path
    /// of a kernel build tree or install root. Default: the recipe's. `test` takes it more than
    /// once and runs the same cases on each kernel.
    #[arg(long)]
    pub kernel: Vec<String>,
    /// auto uses KVM only where a test boot under KVM works, TCG otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// The kind of persistent-memory device: nvdimm (an NVDIMM in fsdax mode, struct pages on
    /// the device, 2 MiB alignment), nvdimm-mem (struct pages in RAM), nvdimm-4k (4 KiB
    /// alignment), virtio-pmem (asynchronous: no MAP_SYNC) or memmap (legacy e820 pmem in guest
    /// RAM, lost when the VM stops).
    #[arg(long, default_value = "nvdimm", value_parser = parse_device)]
    pub device: daxtest_proto::Device,
    /// Number of pmem devices, of the `--device` kind (default from images/recipe.toml).
    #[arg(long)]
    pub nvdimms: Option<usize>,
    /// Size of each NVDIMM, like 2G or 512M: a multiple of 16 MiB.
    #[arg(long)]
    pub nvdimm_size: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Guest CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Seconds from QEMU's start until the guest must answer.
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// The port of 127.0.0.1 forwarded to the guest's sshd (default: a free one), e.g. to log
    /// in from another terminal while `shell` runs. A port in use is refused before any boot.
    #[arg(long)]
    pub ssh_port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub vm: Vm,
    /// The command, joined with spaces and run by the guest's /bin/sh (as ssh does).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Shell {
    #[command(flatten)]
    pub vm: Vm,
}

#[derive(Debug, Args)]
pub struct Bench {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Boot-to-ready (QEMU start to the agent answering over SSH) against a bare boot (an
    /// initramfs whose init powers off at once) of the same kernel and QEMU configuration.
    Boot {
        #[command(flatten)]
        vm: Vm,
        /// Repetitions of each kind of boot; the medians are compared.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Image build time: a rebuild with every input already fetched (`--force`), and the
    /// check that finds the cached image current.
    Image {
        /// Kernel, as for `image`.
        #[arg(long)]
        kernel: Option<String>,
        /// Repetitions of each; the medians are reported.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// What a user waits for: `run -- true` from invoking it to its exit (split into the image
    /// check, QEMU start to ready, the command and the stop), paired in the same run with a bare
    /// boot and, when installed, virtme-ng's `vng --run` of the same kernel.
    Run {
        #[command(flatten)]
        vm: Vm,
        /// Repetitions of each; medians, minima and maxima are reported.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Whole-suite time: `test` over every scenario file, split into preparation (image,
    /// accelerator), boots and cases.
    Suite {
        #[command(flatten)]
        vm: Vm,
        /// As for `test --jobs`.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
        /// As for `test --no-boot-snapshot`.
        #[arg(long)]
        no_boot_snapshot: bool,
        /// As for `test --mkfs-in-guest`.
        #[arg(long)]
        mkfs_in_guest: bool,
    },
    /// What a page fault costs: the first store to every page (4 KiB) or PMD (2 MiB) of a
    /// mapping, timed in the process that holds it, by file layout (written, unwritten, sparse,
    /// reflinked), mapping (MAP_SHARED or MAP_SYNC with DAX, MAP_SHARED without) and filesystem,
    /// as generated `store_profile` cases on one VM. Prints a table (p50, p99, max, total, ratios
    /// against written + MAP_SHARED with DAX, faults by size, log forces or journal commits) and
    /// writes RUN_DIR/faults/ (table, raw samples as JSON, latency CDFs as SVG, shown by
    /// report.html). `--kernel` more than once: the grid on each.
    Faults {
        #[command(flatten)]
        vm: Vm,
        /// Also copy the table (table.md) and the CDFs to DIR, replacing the CDFs there: the
        /// README's figures are `--figures xtask/figures/faults`.
        #[arg(long, value_name = "DIR")]
        figures: Option<std::path::PathBuf>,
    },
    /// Scenario validation time: generated files of each size, loaded and validated as `check`
    /// does; cases per CPU second at each size and the per-case cost against the smallest (a
    /// linear check keeps it near 1). Boots nothing.
    Check {
        /// Cases in each generated file, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1000, 4000, 16000, 20000])]
        sizes: Vec<usize>,
        /// Repetitions at each size; the median is reported.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

impl Vm {
    /// The recipe's defaults, as a command line with no VM flags gives them (clap's own
    /// defaults, so that the two cannot drift apart).
    pub fn defaults() -> Vm {
        use clap::FromArgMatches;
        let cmd = Vm::augment_args(clap::Command::new("defaults"));
        Vm::from_arg_matches(&cmd.get_matches_from(["defaults"]))
            .expect("every VM flag is optional")
    }

    /// The flags as a command line takes them back (for a `run` that `bench run` times).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for k in &self.kernel {
            args.extend(["--kernel".to_string(), k.clone()]);
        }
        args.extend(["--accel".to_string(), self.accel.name().to_string()]);
        if self.device != daxtest_proto::Device::default() {
            args.extend(["--device".to_string(), self.device.to_string()]);
        }
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                args.extend([flag.to_string(), v]);
            }
        };
        opt("--nvdimms", self.nvdimms.map(|v| v.to_string()));
        opt("--nvdimm-size", self.nvdimm_size.clone());
        opt("--memory", self.memory.map(|v| v.to_string()));
        opt("--cpus", self.cpus.map(|v| v.to_string()));
        opt("--boot-timeout", self.boot_timeout.map(|v| v.to_string()));
        opt("--ssh-port", self.ssh_port.map(|v| v.to_string()));
        args
    }

    /// The one kernel of a verb that boots one VM.
    pub fn single_kernel(&self) -> anyhow::Result<Option<&str>> {
        match self.kernel.as_slice() {
            [] => Ok(None),
            [k] => Ok(Some(k)),
            _ => Err(daxtest::exit::input(format!(
                "--kernel given {} times: only `cargo xtask test` runs several kernels",
                self.kernel.len()
            ))),
        }
    }
}

/// `--device NAME`: an unknown name is refused with the list, before anything is built or booted.
fn parse_device(s: &str) -> Result<daxtest_proto::Device, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_defaults_are_a_command_line_without_vm_flags() {
        let d = Vm::defaults();
        assert!(d.kernel.is_empty());
        assert_eq!(d.accel, AccelChoice::Auto);
        assert_eq!(d.to_args(), ["--accel", "auto"]);
    }

    #[test]
    fn test_takes_several_kernels_and_run_only_one() {
        let f = Flags::try_parse_from([
            "xtask",
            "test",
            "--kernel",
            "debian:6.1",
            "--kernel",
            "debian:6.12",
            "reflink",
        ])
        .unwrap();
        let Command::Test(t) = f.command else { panic!() };
        assert_eq!(t.vm.kernel, ["debian:6.1", "debian:6.12"]);
        let f =
            Flags::try_parse_from(["xtask", "run", "--kernel", "a", "--kernel", "b", "--", "x"])
                .unwrap();
        let Command::Run(r) = f.command else { panic!() };
        let e = r.vm.single_kernel().unwrap_err();
        assert!(e.to_string().contains("only `cargo xtask test`"), "{e}");
    }

    #[test]
    fn run_takes_the_command_after_the_double_dash() {
        let f = Flags::try_parse_from(["xtask", "run", "--nvdimms", "2", "--", "ls", "-l", "/"])
            .unwrap();
        let Command::Run(r) = f.command else { panic!() };
        assert_eq!(r.command, ["ls", "-l", "/"]);
        assert_eq!(r.vm.nvdimms, Some(2));
        assert_eq!(r.vm.accel, AccelChoice::Auto);
    }

    #[test]
    fn run_without_a_command_is_a_usage_error() {
        assert!(Flags::try_parse_from(["xtask", "run"]).is_err());
    }

    #[test]
    fn kernel_needs_src_and_defaults_to_a_minimal_config() {
        let f = Flags::try_parse_from(["xtask", "kernel", "--src", "/l"]).unwrap();
        let Command::Kernel(k) = f.command else { panic!() };
        assert_eq!(
            (k.src.as_str(), k.config, k.jobs),
            ("/l", daxtest::machine::kernel::build::Base::Minimal, None)
        );
        let f = Flags::try_parse_from([
            "xtask", "kernel", "--src", "/l", "--config", "keep", "--jobs", "3",
        ])
        .unwrap();
        let Command::Kernel(k) = f.command else { panic!() };
        assert_eq!((k.config, k.jobs), (daxtest::machine::kernel::build::Base::Keep, Some(3)));
        assert!(Flags::try_parse_from(["xtask", "kernel"]).is_err());
        assert!(Flags::try_parse_from(["xtask", "kernel", "--src", "/l", "--jobs", "0"]).is_err());
        assert!(Flags::try_parse_from(["xtask", "kernel", "--src", "/l", "--config", "x"]).is_err());
    }

    #[test]
    fn bench_boot_defaults_to_five_repetitions() {
        let f = Flags::try_parse_from(["xtask", "bench", "boot", "--accel", "tcg"]).unwrap();
        let Command::Bench(Bench { what: BenchWhat::Boot { reps, vm } }) = f.command else {
            panic!()
        };
        assert_eq!((reps, vm.accel), (5, AccelChoice::Tcg));
    }

    #[test]
    fn vm_flags_go_back_to_a_command_line() {
        let f = Flags::try_parse_from([
            "xtask",
            "run",
            "--kernel",
            "debian:6.1",
            "--accel",
            "tcg",
            "--nvdimms",
            "2",
            "--nvdimm-size",
            "512M",
            "--device",
            "virtio-pmem",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(r) = f.command else { panic!() };
        let args = r.vm.to_args();
        assert!(args.windows(2).any(|w| w == ["--device", "virtio-pmem"]), "{args:?}");
        let mut again = vec!["xtask".to_string(), "run".into()];
        again.extend(args);
        again.extend(["--".into(), "true".into()]);
        let Command::Run(back) = Flags::try_parse_from(again).unwrap().command else { panic!() };
        assert_eq!(format!("{:?}", back.vm), format!("{:?}", r.vm));
    }

    #[test]
    fn bench_check_takes_sizes_as_a_list() {
        let f = Flags::try_parse_from(["xtask", "bench", "check", "--sizes", "10,20"]).unwrap();
        let Command::Bench(Bench { what: BenchWhat::Check { sizes, reps } }) = f.command else {
            panic!()
        };
        assert_eq!((sizes, reps), (vec![10, 20], 3));
    }
}
