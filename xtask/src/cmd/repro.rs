//! `cargo xtask repro RUN/CASE`: runs one case of an earlier run again, with the same kernel
//! spec, scenario file, seed and VM options, through the normal runner (a new run directory),
//! says whether the outcome is the same, and writes a bundle a kernel developer can use without
//! daxtest: README, the scenario, the resolved case, the kernel log, `qemu.sh` and `reproduce.sh`.

use super::test::{execute, KernelPlan, RunSetup};
use super::Ctx;
use crate::flags;
use anyhow::Context;
use daxtest::exit;
use daxtest::report::results::{self, CaseEntry, KernelEntry};
use daxtest::repro::script;
use daxtest::run::events::CaseResult;
use daxtest::run::plan::{self, PlannedCase, Resolution};
use daxtest::scenario::{self, CaseTimeouts};
use daxtest::version::KernelVersion;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The earlier run and the case in it.
struct Original {
    /// The run directory of the case's kernel: the run's, on one kernel.
    run_dir: PathBuf,
    kernel: KernelEntry,
    /// The case as the run wrote it (its id with `#k` for a repeat).
    case: CaseEntry,
}

impl flags::Repro {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<i32> {
        let orig = find(&ctx.root, &self.target)?;
        let base_id = orig.case.id.rsplit_once('#').map_or(orig.case.id.as_str(), |(b, _)| b);
        let base_id = base_id.to_string();
        let rerun = &orig.kernel.rerun;
        let file = &orig.case.file;
        let file = if file.is_absolute() { file.clone() } else { ctx.root.join(file) };
        let accel = match orig.kernel.accel.as_str() {
            "kvm" => daxtest::machine::accel::AccelChoice::Kvm,
            _ => daxtest::machine::accel::AccelChoice::Tcg,
        };
        let vm = flags::Vm {
            kernel: vec![rerun.kernel_spec.clone()],
            accel,
            device: rerun.device,
            nvdimms: Some(rerun.nvdimms),
            nvdimm_size: Some(format!("{}M", rerun.nvdimm_size >> 20)),
            memory: Some(rerun.memory_mib),
            cpus: Some(rerun.cpus),
            boot_timeout: Some(rerun.boot_timeout_s),
            ssh_port: None,
        };

        // The case as the scenario file defines it today.
        let (scenarios, diags) = scenario::load_all(std::slice::from_ref(&file));
        super::check::report_diagnostics(&diags)?;
        let case =
            scenarios.into_iter().flat_map(|s| s.cases).find(|c| c.id == base_id).ok_or_else(
                || {
                    exit::input(format!(
                        "{} no longer has the case {base_id}: it changed since the run",
                        file.display()
                    ))
                },
            )?;

        let (image, opts) = ctx.prepare(&vm)?;
        let old_key = &rerun.image_key;
        let same_image = *old_key == image.manifest.key;
        if !same_image {
            eprintln!(
                "daxtest: WARNING: the image is {} now, the run used {old_key}: the recipe, the \
                 kernel package or the agent changed since",
                image.manifest.key
            );
        }
        let version = KernelVersion::parse(&image.kernel.version)
            .with_context(|| format!("cannot read a version in {:?}", image.kernel.version))?;
        let resolved = plan::resolve(&case, version, opts.device, Some(orig.case.seed));
        let kernel = KernelPlan {
            image: &image,
            opts: &opts,
            kernel_spec: rerun.kernel_spec.clone(),
            planned: vec![PlannedCase { resolution: resolved.clone(), case: case.clone() }],
        };
        let setup = RunSetup {
            overrides: CaseTimeouts { step_s: rerun.step_timeout_s, case_s: rerun.case_timeout_s },
            stop_at_failure: false,
            runs_per_case: 1,
            selection: None,
            jobs: 1,
            // Every VM booted: qemu.sh gives the command line of the case's VM to run by hand.
            boot_snapshot: false,
            // Every case's own mkfs, as the bundle's script runs it.
            mkfs_images: false,
        };
        let mut result: Option<CaseResult> = None;
        let (_, run_dir) =
            execute(ctx, &setup, std::slice::from_ref(&kernel), &mut |r| result = Some(r.clone()))?;
        let result = result.context("the runner reported no result for the case")?;
        let original_status = orig.case.status.name();
        let same = result.status == orig.case.status;

        let bundle = write_bundle(&Bundle {
            ctx,
            orig: &orig,
            base_id: &base_id,
            scenario_file: &file,
            case: &case,
            resolution: &resolved,
            result: &result,
            run_dir: &run_dir,
            image: &image,
            same_image,
        })?;
        eprintln!(
            "daxtest: {base_id}: originally {original_status}, now {}: {}",
            result.status.name(),
            if same { "the same outcome" } else { "A DIFFERENT OUTCOME" }
        );
        eprintln!("daxtest: re-run: {}", run_dir.display());
        println!("bundle: {}", bundle.display());
        Ok(if same { exit::SUCCESS } else { exit::CASES_FAILED })
    }
}

/// Finds RUN and CASE in `target` (RUN/CASE, or RUN/KERNEL/CASE for a run on several kernels):
/// RUN is a run directory, a run id under target/daxtest/runs/, or `latest`; KERNEL the
/// directory of a kernel in it; the case id has slashes too, so every split is tried.
fn find(root: &Path, target: &str) -> anyhow::Result<Original> {
    let runs = root.join("target/daxtest/runs");
    let mut found_run = None;
    for (i, _) in target.match_indices('/') {
        let (run, case) = (&target[..i], &target[i + 1..]);
        for dir in [PathBuf::from(run), root.join(run), runs.join(run)] {
            if dir.join("results.json").is_file() && !case.is_empty() {
                found_run = Some((dir, case.to_string()));
                break;
            }
        }
        if found_run.is_some() {
            break;
        }
    }
    let Some((run_dir, id)) = found_run else {
        return Err(exit::input(format!(
            "{target:?}: no run found; give RUN/CASE, where RUN is a run directory, a run id \
             under {} or `latest` (a run that finished has a results.json), and CASE a case id \
             from it, e.g. latest/reflink/store-after-clone-copies-the-block/xfs/dax=always",
            runs.display()
        )));
    };
    let results = read_results(&run_dir)?;
    // A run on several kernels: each kernel's directory is a run directory of its own, which
    // holds its cases.
    let (run_dir, id, results) = match results.kernels.as_slice() {
        kernels if kernels.len() > 1 => {
            let dirs: Vec<String> = kernels.iter().map(|k| k.dir.display().to_string()).collect();
            let Some((dir, rest)) =
                dirs.iter().find_map(|d| Some((d, id.strip_prefix(&format!("{d}/"))?)))
            else {
                return Err(exit::input(format!(
                    "{} is a run on several kernels: give RUN/KERNEL/CASE, KERNEL one of {}",
                    run_dir.display(),
                    dirs.join(", ")
                )));
            };
            let dir = run_dir.join(dir);
            let results = read_results(&dir)?;
            (dir, rest.to_string(), results)
        }
        _ => (run_dir, id, results),
    };
    // A kernel's own results.json, as a run's on one kernel, has that kernel alone.
    let [kernel] = results.kernels.as_slice() else {
        return Err(exit::input(format!(
            "{}/results.json lists {} kernels where one was expected",
            run_dir.display(),
            results.kernels.len()
        )));
    };
    let Some(case) = results.cases.iter().find(|c| c.id == id) else {
        let mut ids: Vec<String> =
            results.cases.iter().map(|c| format!("{} ({})", c.id, c.status.name())).collect();
        if ids.len() > 20 {
            ids.truncate(20);
            ids.push("...".into());
        }
        return Err(exit::input(format!(
            "{}: no case {id:?}; the run has: {}",
            run_dir.display(),
            if ids.is_empty() { "no cases".into() } else { ids.join(", ") }
        )));
    };
    Ok(Original { run_dir, kernel: kernel.clone(), case: case.clone() })
}

/// A run directory's results.json; one this daxtest cannot read is the user's to replace.
fn read_results(run_dir: &Path) -> anyhow::Result<results::Results> {
    results::read(run_dir).map_err(|e| {
        exit::input(format!("{e:#}; run the case again with `cargo xtask test` and repro that run"))
    })
}

struct Bundle<'a> {
    ctx: &'a Ctx,
    orig: &'a Original,
    base_id: &'a str,
    scenario_file: &'a Path,
    case: &'a scenario::Case,
    resolution: &'a Result<Resolution, String>,
    result: &'a CaseResult,
    run_dir: &'a Path,
    image: &'a daxtest::machine::image::Image,
    same_image: bool,
}

/// A file-name-safe form of a case id.
fn slug(id: &str) -> String {
    daxtest::names::safe(id, "-")
}

fn write_bundle(b: &Bundle) -> anyhow::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = b.ctx.root.join("target/daxtest/repro").join(format!(
        "{}-{}",
        slug(b.base_id),
        daxtest::report::utc_stamp(secs)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: &str| -> anyhow::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    std::fs::copy(b.scenario_file, dir.join("scenario.toml"))
        .with_context(|| format!("copying {}", b.scenario_file.display()))?;
    let log_rel = daxtest::report::kernel_log_path(&b.result.id);
    let rerun_log = std::fs::read_to_string(b.run_dir.join(&log_rel)).unwrap_or_default();
    write("kernel.log", &rerun_log)?;
    let orig_log = b.orig.run_dir.join(&b.orig.case.kernel_log_path);
    let has_orig_log = match std::fs::read_to_string(orig_log) {
        Ok(text) => write("original-kernel.log", &text).map(|_| true)?,
        Err(_) => false,
    };

    let mut unsupported = Vec::new();
    let spec = match b.resolution {
        Ok(Resolution::Run { spec, xfail }) => {
            write("case.json", &serde_json::to_string_pretty(spec)?)?;
            let script = script::generate(&script::Input {
                spec,
                kernel_log: &b.case.kernel_log,
                xfail: xfail.as_ref(),
                kernel_release: &b.image.kernel.release,
            });
            write("reproduce.sh", &script.text)?;
            set_executable(&dir.join("reproduce.sh"))?;
            unsupported = script.unsupported;
            Some(spec)
        }
        Ok(Resolution::Skip(why)) => {
            write("case.json", &format!("{{\"skipped\": {:?}}}\n", why))?;
            None
        }
        Err(e) => {
            write("case.json", &format!("{{\"error\": {:?}}}\n", e))?;
            None
        }
    };

    // The QEMU command line of the VM that ran the case again.
    let command_line = results::read(b.run_dir)
        .ok()
        .and_then(|r| {
            let lines = &r.kernels.first()?.qemu_command_lines;
            let vm = r.cases.first().and_then(|c| c.vm);
            vm.and_then(|n| lines.get(n.checked_sub(1)?)).or(lines.last()).cloned()
        })
        .unwrap_or_default();
    write("qemu.sh", &qemu_script(&command_line, b.image))?;
    set_executable(&dir.join("qemu.sh"))?;

    let readme = readme(b, spec.is_some(), has_orig_log, &unsupported, &command_line);
    write("README.md", &readme)?;
    Ok(dir)
}

fn set_executable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The VM directory of a command line: where `nvdimm0.img` lives.
fn vm_dir(command_line: &str) -> Option<&str> {
    let start = command_line.find("mem-path=")? + "mem-path=".len();
    let rest = &command_line[start..];
    let end = rest.find("/nvdimm0.img")?;
    Some(&rest[..end])
}

/// `qemu.sh`: the exact command line as a comment, and a runnable form with the VM's private
/// directory (gone after the run) made anew.
pub fn qemu_script(command_line: &str, image: &daxtest::machine::image::Image) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# The QEMU command line of the VM that ran the case again, exactly:\n#   {command_line}\n#\n\
         # It references these files of daxtest's cache (image {}, kernel {}):\n\
         #   {}  (the kernel)\n\
         #   {}  (initramfs: the daxtest agent is /init; it loads the NVDIMM drivers, checks that\n\
         #        each NVDIMM is an fsdax namespace, making it one with ndctl on a blank device,\n\
         #        mounts the payload and starts dropbear)\n\
         #   {}  (payload disk: xfsprogs, e2fsprogs, ndctl, on-demand modules)\n\
         # and, in a private directory of the run that no longer exists: the NVDIMM backing files,\n\
         # the serial log and the monitor socket. This script makes that directory anew (VMDIR).\n\
         # Log in (key-only, as root) with:\n\
         #   ssh -i {} -o StrictHostKeyChecking=no -p PORT root@127.0.0.1\n\
         # where PORT is the one in hostfwd= below; then run the reproducer with\n\
         #   ssh ... sh -s < reproduce.sh",
        image.manifest.key,
        image.kernel.release,
        image.kernel.vmlinuz.display(),
        image.initramfs().display(),
        image.payload().display(),
        image.client_key().display(),
    );
    match vm_dir(command_line) {
        Some(dir) if !dir.is_empty() => {
            let runnable = command_line.replace(dir, "\"$VMDIR\"");
            let sizes: Vec<(String, String)> = command_line
                .split_whitespace()
                .filter_map(|a| {
                    let p = a.split("mem-path=").nth(1)?;
                    let (path, size) = p.split_once(",size=")?;
                    Some((path.replace(dir, "\"$VMDIR\""), size.to_string()))
                })
                .collect();
            s.push_str("set -eu\nVMDIR=${VMDIR:-$(mktemp -d /tmp/daxtest-vm.XXXXXX)}\n");
            for (path, size) in sizes {
                let _ = writeln!(s, "truncate -s {size} {path}");
            }
            s.push_str("echo \"serial console: $VMDIR/serial.log\" >&2\n");
            let _ = writeln!(s, "exec {runnable}");
        }
        _ => {
            s.push_str(
                "echo 'qemu.sh: no QEMU command line was recorded for this run' >&2\nexit 1\n",
            );
        }
    }
    s
}

fn readme(
    b: &Bundle,
    has_script: bool,
    has_orig_log: bool,
    unsupported: &[String],
    command_line: &str,
) -> String {
    let o = &b.orig.case;
    let r = b.result;
    let mut s = String::new();
    let _ = writeln!(s, "# Reproduction bundle: {}\n", b.base_id);
    let _ = writeln!(
        s,
        "## What happened\n\n\
         - Originally (run `{}`, case `{}`): **{}** on kernel {}, seed {}.\n  {}\n\
         - Run again by `cargo xtask repro` (run `{}`): **{}** on kernel {}, seed {}.\n  {}\n\
         - Outcome: {}.\n\
         - Image: {}{}.\n",
        b.orig.run_dir.display(),
        o.id,
        o.status.name(),
        o.kernel,
        o.seed,
        if o.message.is_empty() { "(no message)" } else { &o.message },
        b.run_dir.display(),
        r.status.name(),
        r.kernel,
        r.seed,
        if r.message.is_empty() { "(no message)" } else { &r.message },
        if o.status == r.status {
            "the same"
        } else {
            "DIFFERENT (a flaky case, a race, or the environment changed)"
        },
        b.image.manifest.key,
        if b.same_image {
            " (the same as the original run's)"
        } else {
            " (NOT the original run's: the recipe, kernel package or agent changed)"
        },
    );
    let _ = writeln!(
        s,
        "## Files\n\n\
         - `scenario.toml`: the scenario file (a copy of `{}`); the case is `{}` in it.\n\
         - `case.json`: the case resolved for this kernel, exactly what daxtest's guest agent ran \
         (operations, expectations, mkfs and mount options, seed).\n\
         - `kernel.log`: the kernel messages of the re-run case's window{}.\n\
         - `qemu.sh`: the exact QEMU command line (in a comment) and a runnable form of it; its \
         header lists the kernel and image files it uses.\n\
         - `reproduce.sh`: the case as a plain sh script of xfs_io and standard tools.\n",
        b.scenario_file.display(),
        b.base_id,
        if has_orig_log { "; `original-kernel.log` the original run's" } else { "" },
    );
    if has_script {
        let _ = writeln!(
            s,
            "## reproduce.sh\n\n\
             Run it as root on a machine whose `/dev/pmem0` is an fsdax namespace (everything on \
             it is destroyed; `DEV=` and `MNT=` override the device and mount point). It formats \
             and mounts as the case does, runs each step printing what was expected and what \
             happened, stops at the first mismatch, checks the kernel log and the taint like \
             daxtest, and ends with `PASS` (exit 0) or `FAIL: ...` (exit 1); exit 2 when a step \
             could not be expressed, 3 on a set-up error. daxtest's status maps as: pass = PASS, \
             fail = FAIL, xfail = FAIL (a known bug, named in the script's output).\n\n\
             In daxtest's guest: `cargo xtask run --kernel {} -- sh -s < reproduce.sh`. In the VM \
             of `qemu.sh`: `ssh -i KEY -p PORT root@127.0.0.1 sh -s < reproduce.sh` (see its header).\n\n\
             How it differs from the agent, so that its verdict is read right:\n\n\
             - Live handles and mappings are held by one long-lived `xfs_io` fed through a fifo \
             (an mmap must outlive the steps between it and its munmap); stores and loads are its \
             `mwrite`/`mread`, MAP_SYNC is `mmap -S`, FS_XFLAG_DAX is `chattr +x`, STATX_ATTR_DAX \
             `statx -r`, FICLONE/FICLONERANGE `reflink`.\n\
             - xfs_io does not catch SIGBUS: an expected SIGBUS kills it, and the following steps \
             map the files again (the agent keeps its mapping, accessing it from a forked child).\n\
             - The race steps run as shell loops: their interleaving is coarser than the agent's \
             threads with seeded jitter, so a PASS there does not clear the kernel.\n",
            b.orig.kernel.rerun.kernel_spec,
        );
        let cuts = matches!(b.resolution, Ok(Resolution::Run { spec, .. })
            if spec.steps.iter().any(|s| s.op == daxtest_proto::case::Op::PowerCut));
        if cuts {
            s.push_str(
                "**This case cuts the power** (`power_cut`): daxtest kills QEMU with SIGKILL (no \
                 sync, no unmount) and boots it again on the same NVDIMM backing file, where \
                 the case goes on. By hand: start `qemu.sh` (note the VMDIR it prints), run \
                 `reproduce.sh` in the guest: it stops at the cut with exit 4. Then at once \
                 `kill -9` that QEMU (what reached the NVDIMM is in `$VMDIR/nvdimm0.img`; the \
                 guest's page cache and uncommitted metadata are lost: wait no longer than a \
                 second or two, as daxtest does, or the kernel's periodic log force may commit \
                 what the case says is lost), boot again with `VMDIR=... ./qemu.sh` (the same \
                 backing file), and run `PART=2 sh -s < reproduce.sh` in the new guest: it \
                 mounts the filesystem (log recovery), unmounts it, checks it (`xfs_repair -n -P`, \
                 `e2fsck -fn`), mounts it again and runs the remaining steps.\n\n",
            );
        }
        if unsupported.is_empty() {
            s.push_str("Every step of the case is expressed in the script.\n\n");
        } else {
            s.push_str(
                "**Steps the script CANNOT express (it says so when run and exits 2):**\n\n",
            );
            for u in unsupported {
                let _ = writeln!(s, "- {u}");
            }
            s.push('\n');
        }
    } else {
        s.push_str("## reproduce.sh\n\nNot written: the case does not run on this kernel (see case.json).\n\n");
    }
    let _ = writeln!(s, "## QEMU\n\n```\n{command_line}\n```");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_directory_comes_from_the_nvdimm_path() {
        let line = "qemu-system-x86_64 -object memory-backend-file,id=nvmem0,share=on,mem-path=/r/tmp/vm-x1/nvdimm0.img,size=2048M -chardev file,id=serial0,path=/r/tmp/vm-x1/serial.log";
        assert_eq!(vm_dir(line), Some("/r/tmp/vm-x1"));
        assert_eq!(vm_dir("qemu-system-x86_64 -m 1G"), None);
    }

    /// results.json of a run on `releases`, in `dir`, with the case `id` on each.
    fn write_results(dir: &Path, dirs: &[&str], releases: &[&str], id: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let kernel = |dir: &str, release: &str| KernelEntry {
            kernel_id: format!("debian ({release})"),
            kernel_release: release.into(),
            accel: "tcg".into(),
            qemu_version: "QEMU 7.2".into(),
            elapsed_s: 1.0,
            counts: [("fail".to_string(), 1)].into(),
            dir: dir.into(),
            rerun: Default::default(),
            qemu_command_lines: vec![],
            boot_failures: vec![],
        };
        let case = |dir: &str, release: &str| CaseEntry {
            id: id.into(),
            file: "x.toml".into(),
            kernel: release.into(),
            status: daxtest::run::events::Status::Fail,
            duration_s: 0.5,
            message: String::new(),
            problems: vec![],
            phases: vec![],
            seed: 3,
            kernel_log_path: results::under(Path::new(dir), Path::new("kernel-logs/x.log")),
            vm: Some(1),
            measurements: vec![],
            profiles: vec![],
            known_bug: None,
        };
        let r = results::Results {
            schema_version: results::SCHEMA_VERSION,
            run_id: "r".into(),
            elapsed_s: 1.0,
            counts: [("fail".to_string(), releases.len())].into(),
            kernels: dirs.iter().zip(releases).map(|(d, r)| kernel(d, r)).collect(),
            cases: dirs.iter().zip(releases).map(|(d, r)| case(d, r)).collect(),
            differing: vec![],
            kernel_log_outside_cases: vec![],
            selection: None,
        };
        std::fs::write(dir.join("results.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn run_and_case_are_found_at_any_slash() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("target/daxtest/runs/r1");
        write_results(&runs, &["."], &["6.12.1"], "a/b/xfs/dax=always");
        let o = find(dir.path(), "r1/a/b/xfs/dax=always").unwrap();
        assert_eq!(o.case.id, "a/b/xfs/dax=always");
        let o = find(dir.path(), &format!("{}/a/b/xfs/dax=always", runs.display())).unwrap();
        assert_eq!((o.case.seed, o.kernel.kernel_release.as_str()), (3, "6.12.1"));
        let e = find(dir.path(), "r1/a/c").err().unwrap().to_string();
        assert!(e.contains("no case \"a/c\"") && e.contains("a/b/xfs/dax=always (fail)"), "{e}");
        let e = find(dir.path(), "nope/a/b").err().unwrap().to_string();
        assert!(e.contains("no run found"), "{e}");
    }

    #[test]
    fn a_run_on_several_kernels_takes_the_kernel_directory() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("target/daxtest/runs/r2");
        let (dirs, releases) = (["6.1.0", "6.12.1"], ["6.1.0", "6.12.1"]);
        write_results(&run, &dirs, &releases, "a/b");
        for (d, r) in dirs.iter().zip(releases) {
            write_results(&run.join(d), &["."], &[r], "a/b");
        }
        let o = find(root.path(), "r2/6.12.1/a/b").unwrap();
        assert_eq!(o.run_dir, run.join("6.12.1"));
        assert_eq!(o.kernel.kernel_release, "6.12.1");
        assert_eq!(o.case.kernel_log_path, Path::new("kernel-logs/x.log"));
        let e = find(root.path(), "r2/a/b").err().unwrap();
        let want = "is a run on several kernels: give RUN/KERNEL/CASE, KERNEL one of 6.1.0, 6.12.1";
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(exit::for_error(&e, false), exit::INPUT);
    }

    #[test]
    fn results_of_another_schema_are_refused_with_what_to_do() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("results.json"),
            r#"{"accel":"tcg","cases":[{"id":"a/b","status":"fail","seed":1}]}"#,
        )
        .unwrap();
        let e = find(root.path(), &format!("{}/a/b", root.path().display())).err().unwrap();
        let e = e.to_string();
        let want =
            format!("schema_version absent, where this daxtest reads {}", results::SCHEMA_VERSION);
        assert!(e.contains(&want), "{e}");
        assert!(e.contains("run the case again with `cargo xtask test`"), "{e}");
    }
}
