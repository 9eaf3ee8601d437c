//! End-to-end tests: the real xtask binary builds the real image and boots real VMs (TCG here,
//! KVM where it works). Nothing is mocked. The tests share caches and CPU, so they run one at a
//! time.

mod common;

use common::{qemu_vm_dirs, run, run_dir, text, xtask};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The README's first command: XFS with dax=always on /dev/pmem0, and a file on it with DAX on.
#[test]
fn xfs_on_pmem0_really_has_dax() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&[
        "run",
        "--",
        "mkfs.xfs -q -f -m reflink=1 /dev/pmem0 && mount -t xfs -o dax=always /dev/pmem0 /mnt \
         && grep pmem0 /proc/mounts && echo hello > /mnt/f && daxtest-agent stat /mnt/f",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let mount = stdout.lines().find(|l| l.starts_with("/dev/pmem0 /mnt xfs ")).expect("mount line");
    assert!(mount.split(' ').nth(3).unwrap().split(',').any(|o| o == "dax=always"), "{mount}");
    assert!(stdout.contains("/mnt/f: STATX_ATTR_DAX=on"), "{stdout}");
    assert!(text(&out.stderr).contains("NVDIMM in fsdax mode"));
}

/// Without dax=always on a dax=never mount, the same check must say off: the check can fail.
#[test]
fn dax_never_mount_reports_dax_off() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&[
        "run",
        "--",
        "mkfs.xfs -q -f /dev/pmem0 && mount -t xfs -o dax=never /dev/pmem0 /mnt \
         && echo hello > /mnt/f && daxtest-agent stat /mnt/f",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("/mnt/f: STATX_ATTR_DAX=off"));
}

#[test]
fn run_passes_output_and_exit_status_through() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&["run", "--", "echo to-stdout; echo to-stderr >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert!(text(&out.stderr).contains("to-stderr\n"));
}

/// A command that panics the guest (a reproducer of a crash, say) is reported as a kernel crash
/// with the panic text; one that powers it off as a lost guest. Both exit 255.
#[test]
fn run_names_a_kernel_crash_and_a_lost_guest() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&["run", "--", "echo c > /proc/sysrq-trigger"]);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains("error: the guest kernel crashed while the command ran ("), "{err}");
    assert!(err.contains("Kernel panic - not syncing: sysrq triggered crash"), "{err}");
    let out = run(&["run", "--", "poweroff -f"]);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains("error: lost the guest while the command ran: "), "{err}");
    assert!(!err.contains("crashed"), "{err}");
}

#[test]
fn two_nvdimms_of_a_chosen_size_are_both_fsdax() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&[
        "run",
        "--nvdimms",
        "2",
        "--nvdimm-size",
        "256M",
        "--",
        "cat /sys/block/pmem0/queue/dax /sys/block/pmem1/queue/dax; daxtest-agent probe",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("1\n1\n"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout[4..]).unwrap();
    let devices = report["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        assert_eq!(d["dax_proof"]["ok"], true, "{d}");
        // 256 MiB minus the fsdax info block and struct page reserve.
        let size = d["size_bytes"].as_u64().unwrap();
        assert!(size > 200 << 20 && size < 256 << 20, "{size}");
    }
}

/// The boot's DAX proof can come out the other way: the same namespace in raw mode is a block
/// device without DAX, erofs turns dax=always off there, and the file has no STATX_ATTR_DAX.
#[test]
fn the_dax_proof_fails_on_a_namespace_without_dax() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(&[
        "run",
        "--",
        "daxtest-agent prove-dax pmem0; echo \"fsdax exit $?\"; \
         ndctl create-namespace --force --reconfig namespace0.0 --mode raw >/dev/null && \
         cat /sys/block/pmem0/queue/dax && daxtest-agent prove-dax pmem0; echo \"raw exit $?\"",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (fsdax, raw) = stdout.split_once("fsdax exit 0\n").expect(&stdout);
    let fsdax: serde_json::Value = serde_json::from_str(fsdax).unwrap();
    assert_eq!(fsdax["ok"], true, "{fsdax}");
    assert_eq!(fsdax["statx_dax"], true, "{fsdax}");
    let raw = raw.strip_prefix("0\n").expect(raw);
    let raw = raw.strip_suffix("raw exit 1\n").expect(raw);
    let raw: serde_json::Value = serde_json::from_str(raw).unwrap();
    assert_eq!(raw["ok"], false, "{raw}");
    assert_eq!(raw["statx_dax"], false, "{raw}");
    assert_eq!(raw["queue_dax"], false, "{raw}");
    let detail = raw["detail"].as_str().unwrap();
    assert!(detail.contains("has no STATX_ATTR_DAX"), "{detail}");
}

#[test]
fn shell_runs_what_stdin_says() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = xtask(&["shell"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"echo hi-from-$((40+2)); exit 3\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains("hi-from-42"), "{}", text(&out.stdout));
}

#[test]
fn an_unusable_nvdimm_size_is_refused_before_anything_boots() {
    let start = Instant::now();
    let out = run(&["run", "--nvdimm-size", "100M", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "an input error");
    assert!(text(&out.stderr).contains("multiple of 16 MiB"));
    assert!(start.elapsed() < Duration::from_secs(30), "it must not boot first");
}

#[test]
fn a_second_image_call_reuses_the_cache() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(run(&["image"]).status.success());
    let out = run(&["image"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("is up to date (reused"), "{}", text(&out.stderr));
}

/// --accel kvm works where KVM works, and says why not elsewhere; auto never fails for it.
#[test]
fn kvm_is_used_only_where_it_works() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let auto = run(&["run", "--", "true"]);
    assert!(auto.status.success());
    let stderr = text(&auto.stderr);
    let line = stderr.lines().find(|l| l.contains("accelerator:")).unwrap().to_string();
    let kvm = run(&["run", "--accel", "kvm", "--", "true"]);
    if line.ends_with("accelerator: kvm") {
        assert!(kvm.status.success());
    } else {
        assert!(line.contains("tcg (KVM unusable: "), "{line}");
        assert_eq!(kvm.status.code(), Some(255));
        assert!(text(&kvm.stderr).contains("--accel kvm: KVM does not work here"));
    }
}

/// Ctrl-C while a command runs: QEMU is gone and the VM directory with its backing file too.
#[test]
fn ctrl_c_leaves_no_qemu_and_no_files() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut child, vm_dir) = start_a_sleeping_guest();
    let pid = child.id();
    assert!(vm_dir.exists());
    Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(200));
    assert!(qemu_vm_dirs().is_empty(), "QEMU still runs");
    assert!(!vm_dir.exists(), "{} left behind", vm_dir.display());
}

/// `xtask run` of a command that says it started and sleeps; returns once the guest runs it,
/// with the VM directory of the one QEMU of ours.
fn start_a_sleeping_guest() -> (Child, PathBuf) {
    let mut child = xtask(&["run", "--", "echo started; sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let qemu_dirs = qemu_vm_dirs();
    assert_eq!(qemu_dirs.len(), 1, "one VM of ours runs: {qemu_dirs:?}");
    (child, qemu_dirs[0].clone())
}

/// SIGKILL leaves no handler to run: QEMU dies with its parent (PR_SET_PDEATHSIG), and the next
/// run removes the VM directory the killed one left.
#[test]
fn sigkill_leaves_no_qemu_and_the_next_run_sweeps_the_files() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut child, vm_dir) = start_a_sleeping_guest();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !qemu_vm_dirs().is_empty() {
        assert!(Instant::now() < deadline, "QEMU outlived a killed xtask");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(vm_dir.exists(), "nothing could remove it yet");
    let out = run(&["list", "no-such-case-at-all"]);
    assert!(
        text(&out.stderr).contains(&format!("removed {}", vm_dir.display())),
        "{}",
        text(&out.stderr)
    );
    assert!(!vm_dir.exists(), "{} left behind", vm_dir.display());
}

/// Two runs at once: their own ports, VM directories and run directories, both pass.
#[test]
fn two_test_runs_at_once_do_not_interfere() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let case = "dax-flag/set-and-clear-on-a-closed-file/xfs/dax=always";
    let spawn = || {
        xtask(&["test", case])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    assert_ne!(run_dir(&a), run_dir(&b));
    assert!(qemu_vm_dirs().is_empty());
}

/// `--ssh-port`: every VM of the run forwards that port, the one booted after a panic too (the
/// port is free again once the crashed VM's QEMU is gone).
#[test]
fn a_chosen_ssh_port_serves_every_vm_of_a_run() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let port = port.to_string();
    let faults = "xtask/tests/fixtures/faults.toml";
    let out = run(&["test", "--ssh-port", &port, faults, "faults/panic", "faults/healthy-2"]);
    assert_eq!(out.status.code(), Some(1), "the panic is a crash: exit 1");
    let results = common::results(&out);
    let statuses: Vec<&str> = results["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["crash", "pass"]);
    let vms = results["kernels"][0]["qemu_command_lines"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "{vms:?}");
    for vm in vms {
        let forward = format!("hostfwd=tcp:127.0.0.1:{port}-:22");
        assert!(vm.as_str().unwrap().contains(&forward), "{vm}");
    }
}

/// `--jobs 2`: two VMs take cases as they come free. Every case is reported once, with the
/// status it has alone; a crash ends only its lane's VM; the VMs' serial logs are numbered
/// once for the run; `--until-fail` stops both lanes.
#[test]
fn two_lanes_report_every_case_once_and_survive_a_crash() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let faults = "xtask/tests/fixtures/faults.toml";
    let picked = ["healthy-1", "panic", "healthy-2", "warning", "healthy-3"];
    let mut args = vec!["test", "--jobs", "2", faults];
    args.extend(picked);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "a crash and a failure: exit 1");
    let results = common::results(&out);
    let mut statuses: Vec<(String, String)> = results["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().into(), c["status"].as_str().unwrap().into()))
        .collect();
    statuses.sort();
    let expected = [
        ("healthy-1", "pass"),
        ("healthy-2", "pass"),
        ("healthy-3", "pass"),
        ("panic", "crash"),
        ("warning", "fail"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, s)| (format!("faults/{n}/xfs/dax=always"), s.to_string()))
        .collect();
    assert_eq!(statuses, expected);
    let vms = results["kernels"][0]["qemu_command_lines"].as_array().unwrap().len();
    assert!(vms >= 3, "two lanes, and a VM after the crash: {vms}");
    let dir = run_dir(&out);
    for i in 1..=vms {
        assert!(dir.join(format!("serial-{i}.log")).exists(), "serial-{i}.log of {vms}");
    }
    assert!(!dir.join(format!("serial-{}.log", vms + 1)).exists());
    // Each case names the VM that ran it, one of the run's; both lanes ran cases.
    let ran_on: std::collections::BTreeSet<u64> = results["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["vm"].as_u64().expect("every case ran on a VM"))
        .collect();
    assert!(ran_on.iter().all(|v| (1..=vms as u64).contains(v)), "{ran_on:?} of {vms}");
    assert!(ran_on.len() >= 2, "{ran_on:?}");

    // The panic stops the run: each lane finishes what it started, and takes nothing more.
    let mut args = vec!["test", "--jobs", "2", "--until-fail", faults, "panic"];
    args.extend(["healthy-1", "healthy-2", "healthy-3", "warning"]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let results = common::results(&out);
    let cases = results["cases"].as_array().unwrap();
    assert!(cases.iter().any(|c| c["status"] == "crash" || c["status"] == "fail"), "{cases:?}");
    assert!(cases.len() < 5, "the lanes stopped taking cases: {} ran", cases.len());
}
