//! Golden tests: fixed lists of events through every reporter: a run on one kernel with one of
//! each kind of case, and a run on two kernels whose statuses differ. `UPDATE_GOLDEN=1 cargo test
//! -p xtask report::` rewrites the files; read them before you commit them.

use super::*;
use crate::run::events::{
    fixtures, CaseResult, Event, KernelInfo, OutsideCases, Problem, RerunInfo, RunInfo, Status,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RELEASE_6_1: &str = "6.1.0-41-amd64";
const RELEASE_6_12: &str = "6.12.117+deb12-amd64";
const PACKAGE_6_12: &str = "6.12.117-1~deb12u1";

fn case(id: &str, status: Status, message: &str) -> CaseResult {
    CaseResult {
        message: message.into(),
        problems: match status {
            Status::Pass | Status::Skip => vec![],
            _ => vec![Problem::Run { message: message.into() }],
        },
        kernel_log: vec!["[   3.100000] XFS (pmem0): Mounting V5 Filesystem".into()],
        seed: 42,
        // As the verdict writes it: the message names the bug, and so does known_bug.
        known_bug: message.strip_prefix("known bug: ").map(|_| crate::run::events::KnownBug {
            reason: "WARN in dax_insert_entry".into(),
            link: "https://example.org".into(),
        }),
        ..fixtures::result(id, status)
    }
}

fn run_started(run_dir: &Path, kernels: usize) -> Event {
    Event::RunStarted(RunInfo {
        run_id: "20261124-150000-1".into(),
        run_dir: run_dir.into(),
        kernels,
        runs_per_case: 1,
        stop_at_failure: false,
        selection: None,
    })
}

/// Debian's kernel `version` (its `release` and `package` version), its image `key`, its share
/// of the run in `dir` with `cases` to run.
fn kernel_started(
    dir: &str,
    version: &str,
    release: &str,
    package: &str,
    key: &str,
    cases: usize,
) -> Event {
    Event::KernelStarted(KernelInfo {
        dir: dir.into(),
        kernel_id: format!("debian:{version} (linux-image-{release}={package})"),
        kernel_release: release.into(),
        accel: "tcg".into(),
        qemu_version: "QEMU emulator version 7.2.22".into(),
        cases,
        rerun: RerunInfo {
            kernel_spec: format!("debian:{version}"),
            image_key: key.into(),
            image_dir: format!("/cache/images/{key}").into(),
            memory_mib: 1024,
            cpus: 2,
            device: daxtest_proto::Device::Nvdimm,
            nvdimms: 1,
            nvdimm_size: 2 << 30,
            boot_timeout_s: 60,
            step_timeout_s: None,
            case_timeout_s: Some(120),
        },
    })
}

fn vm_booted(reason: &str) -> Event {
    Event::VmBooted {
        vm: 1,
        boot_time: Duration::from_millis(2840),
        reason: reason.into(),
        command_line: "qemu-system-x86_64 -nodefaults -machine pc,nvdimm=on,accel=tcg".into(),
    }
}

fn boot_failed(log: PathBuf) -> Event {
    Event::BootFailed {
        message: "QEMU exited (exit status: 1) before the guest was ready\n--- QEMU stderr ---\nqemu: oops".into(),
        log,
        retrying: true,
    }
}

/// A run on one kernel with one case of each kind, a failed boot and a warning between cases.
fn one_kernel(run_dir: &Path, serial: &Path) -> Vec<Event> {
    let mut fail = case(
        "demo/clone/xfs/dax=always",
        Status::Fail,
        "step 3 (line 20, read): expected every byte 'b', got bytes ['c' x4096 at 0]; kernel log: [   3.2] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x",
    );
    fail.problems = vec![
        fixtures::read_failure(),
        Problem::KernelLine { line: "[   3.2] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x".into() },
    ];
    let mut skip =
        case("demo/new/xfs/dax=always", Status::Skip, "needs kernel >=6.2, this is 6.1.192");
    skip.duration = Duration::ZERO;
    skip.kernel_log.clear();
    skip.vm = None;
    vec![
        run_started(run_dir, 1),
        kernel_started(".", "6.12", RELEASE_6_12, PACKAGE_6_12, "0123456789abcdef", 7),
        boot_failed(run_dir.join("boot-failure-1.log")),
        vm_booted("first case"),
        Event::CaseStarted { id: "demo/flag/xfs/dax=inode".into() },
        Event::CaseFinished(case("demo/flag/xfs/dax=inode", Status::Pass, "")),
        Event::CaseFinished(fail),
        Event::KernelLogOutsideCases(OutsideCases {
            place: "between demo/clone/xfs/dax=always and demo/new/xfs/dax=always (VM 1)".into(),
            bad: vec!["[   4.0] WARNING: CPU: 1 PID: 9 at fs/dax.c:2 y".into()],
            gap: None,
            lines: vec![
                "[   3.9] XFS (pmem0): Unmounting Filesystem".into(),
                "[   4.0] WARNING: CPU: 1 PID: 9 at fs/dax.c:2 y".into(),
            ],
        }),
        Event::CaseFinished(skip),
        Event::CaseFinished(case(
            "demo/old-bug/xfs/dax=always",
            Status::Xfail,
            "known bug: WARN in dax_insert_entry (https://example.org): step 2 ...",
        )),
        Event::CaseFinished(case(
            "demo/panic/xfs/dax=always",
            Status::Crash,
            "kernel crash: Kernel panic - not syncing: sysrq triggered crash",
        )),
        Event::CaseFinished(case(
            "demo/stuck/xfs/dax=always",
            Status::Hang,
            "no result within 300s; the VM was killed",
        )),
        Event::CaseFinished(case(
            "demo/setup/ext4/dax=always",
            Status::Error,
            "set-up: DAX is off on a dax=always mount",
        )),
        Event::KernelFinished {
            elapsed: Duration::from_secs(61),
            serial_logs: vec![serial.into()],
            boot_failures: vec![run_dir.join("boot-failure-1.log")],
        },
        Event::RunFinished { elapsed: Duration::from_secs(61) },
    ]
}

/// A run on 6.1 and 6.12 until a case fails: a case that fails on 6.1 and passes on 6.12, one
/// that ran on 6.12 alone, a failed boot and a warning after the last case on 6.12.
fn two_kernels(run_dir: &Path, serials: &[PathBuf]) -> Vec<Event> {
    let on = |release: &str, id: &str, status: Status, message: &str| {
        let mut c = case(id, status, message);
        c.kernel = release.into();
        Event::CaseFinished(c)
    };
    let dir_6_12 = run_dir.join(RELEASE_6_12);
    let flag = "demo/flag/xfs/dax=inode";
    vec![
        Event::RunStarted(RunInfo {
            run_id: "20261124-150000-1".into(),
            run_dir: run_dir.into(),
            kernels: 2,
            runs_per_case: 1,
            stop_at_failure: true,
            selection: None,
        }),
        kernel_started(RELEASE_6_1, "6.1", RELEASE_6_1, "6.1.158-1", "fedcba9876543210", 3),
        vm_booted("first case"),
        on(RELEASE_6_1, "demo/a/xfs/dax=always", Status::Pass, ""),
        on(RELEASE_6_1, flag, Status::Fail, "step 2 (line 9, set_flag): expected ok, got EINVAL"),
        Event::KernelFinished {
            elapsed: Duration::from_secs(20),
            serial_logs: vec![serials[0].clone()],
            boot_failures: vec![],
        },
        kernel_started(RELEASE_6_12, "6.12", RELEASE_6_12, PACKAGE_6_12, "0123456789abcdef", 3),
        boot_failed(dir_6_12.join("boot-failure-1.log")),
        vm_booted("first case"),
        on(RELEASE_6_12, "demo/a/xfs/dax=always", Status::Pass, ""),
        on(RELEASE_6_12, flag, Status::Pass, ""),
        on(RELEASE_6_12, "demo/new/xfs/dax=always", Status::Pass, ""),
        Event::KernelLogOutsideCases(OutsideCases {
            place: "after demo/new/xfs/dax=always, the last case of VM 1".into(),
            bad: vec![],
            gap: Some("the kernel log buffer wrapped".into()),
            lines: vec!["[   9.0] XFS (pmem0): Unmounting Filesystem".into()],
        }),
        Event::KernelFinished {
            elapsed: Duration::from_secs(30),
            serial_logs: vec![serials[1].clone()],
            boot_failures: vec![dir_6_12.join("boot-failure-1.log")],
        },
        Event::RunFinished { elapsed: Duration::from_secs(51) },
    ]
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/report/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, want, "{name} differs from its golden file (UPDATE_GOLDEN=1 to rewrite)");
}

/// Feeds `events` to every reporter writing into `dir`; returns what the console printed.
fn report(dir: &Path, events: Vec<Event>) -> String {
    let console_out = Shared::default();
    let mut reporters = Reporters::new(vec![
        Box::new(console::Console::new(Box::new(console_out.clone()))),
        Box::new(files::Files::new(dir)),
        Box::new(junit::Junit::new(dir)),
        Box::new(html::Html::new(dir)),
    ]);
    for e in events {
        reporters.event(&e).unwrap();
    }
    let out = console_out.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// results.json reads back as the schema's types, and writes back as it was.
fn reads_back(dir: &Path) -> results::Results {
    let r = results::read(dir).unwrap();
    assert_eq!(serde_json::to_string_pretty(&r).unwrap(), read(&dir.join("results.json")));
    r
}

#[test]
fn every_reporter_matches_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = Path::new("/run-dir");
    let serial = dir.path().join("serial-1.log");
    std::fs::write(&serial, "daxtest-agent: ready at 2.23s\n").unwrap();
    golden("console.txt", &report(dir.path(), one_kernel(run_dir, &serial)));
    golden("results.json", &read(&dir.path().join("results.json")));
    golden("junit.xml", &read(&dir.path().join("junit.xml")));
    assert_eq!(
        read(&dir.path().join("kernel-logs/demo__flag__xfs__dax=inode.log")),
        "[   3.100000] XFS (pmem0): Mounting V5 Filesystem\n"
    );
    assert_eq!(read(&dir.path().join("kernel-logs/demo__new__xfs__dax=always.log")), "");
    assert_eq!(read(&dir.path().join("serial.log")), "daxtest-agent: ready at 2.23s\n");
    let results = reads_back(dir.path());
    assert_eq!(results.kernels[0].dir, Path::new("."));
    // report.html is made of the files beside it: a row per case, the failures' details.
    let page = read(&dir.path().join("report.html"));
    assert_eq!(page.matches("<tr data-status=").count(), results.cases.len());
    assert_eq!(page.matches("<section class=\"failure failure-").count(), 4, "{page}");
}

#[test]
fn a_run_on_two_kernels_matches_its_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = Path::new("/run-dir");
    let serials: Vec<PathBuf> = (1..=2).map(|i| dir.path().join(format!("s{i}.log"))).collect();
    for (i, s) in serials.iter().enumerate() {
        std::fs::write(s, format!("VM of kernel {}\n", i + 1)).unwrap();
    }
    golden("console-two-kernels.txt", &report(dir.path(), two_kernels(run_dir, &serials)));
    golden("results-two-kernels.json", &read(&dir.path().join("results.json")));
    golden("junit-two-kernels.xml", &read(&dir.path().join("junit.xml")));
    // Each kernel's directory is a run directory of its own: its results.json has the same
    // schema with that kernel alone, its paths relative to it.
    let own = dir.path().join(RELEASE_6_12);
    golden("results-two-kernels-6.12.json", &read(&own.join("results.json")));
    let all = reads_back(dir.path());
    let (k61, k612) = (reads_back(&dir.path().join(RELEASE_6_1)), reads_back(&own));
    assert_eq!(all.kernels.len(), 2);
    for (k, mine) in [(&all.kernels[0], &k61), (&all.kernels[1], &k612)] {
        assert_eq!((mine.kernels.len(), mine.kernels[0].dir.as_path()), (1, Path::new(".")));
        assert_eq!(mine.counts, k.counts);
        for c in mine.cases.iter() {
            assert!(dir.path().join(&k.dir).join(&c.kernel_log_path).is_file(), "{c:?}");
        }
    }
    assert_eq!(read(&own.join("serial.log")), "VM of kernel 2\n");
    let junit = read(&own.join("junit.xml"));
    assert_eq!(junit.matches("<testsuite ").count(), 1, "{junit}");
    assert!(!dir.path().join("serial.log").exists() && !dir.path().join("kernel-logs").exists());
    // report.html for the run, with the matrix, and for each kernel's directory.
    assert!(read(&dir.path().join("report.html")).contains("<table id=\"matrix\""));
    assert!(read(&own.join("report.html")).contains("<tr data-status=\"pass\""));
}

#[test]
fn run_ids_are_utc_timestamps() {
    assert_eq!(utc_stamp(0), "19700101-000000");
    assert_eq!(utc_stamp(1_795_534_212), "20261124-153012");
    assert_eq!(utc_stamp(951_782_400), "20000229-000000");
}

#[test]
fn run_dirs_are_distinct_and_latest_follows() {
    let root = tempfile::tempdir().unwrap();
    let (id, dir) = prepare_run_dir(root.path()).unwrap();
    assert!(dir.is_dir());
    let latest = root.path().join("target/daxtest/runs/latest");
    assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new(&id));
}
