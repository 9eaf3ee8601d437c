//! Golden tests: a fixed list of events, one of each kind of case, through every reporter.
//! `UPDATE_GOLDEN=1 cargo test -p xtask report::` rewrites the files; read them before you
//! commit them.

use super::*;
use crate::run::events::{CaseResult, Event, FailedStep, OutsideCases, Problem, RunInfo, Status};
use daxtest_proto::case::{Expect, Observed, Outcome, Run};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn case(id: &str, status: Status, message: &str) -> CaseResult {
    CaseResult {
        id: id.into(),
        file: "scenarios/demo.toml".into(),
        kernel: "6.12.117+deb12-amd64".into(),
        status,
        duration: Duration::from_millis(1250),
        message: message.into(),
        problems: match status {
            Status::Pass | Status::Skip => vec![],
            _ => vec![Problem::Run { message: message.into() }],
        },
        kernel_log: vec!["[   3.100000] XFS (pmem0): Mounting V5 Filesystem".into()],
        phases: vec![],
        seed: 42,
    }
}

fn events(run_dir: &Path, serial: &Path) -> Vec<Event> {
    let mut fail = case(
        "demo/clone/xfs/dax=always",
        Status::Fail,
        "step 3 (line 20, read): expected every byte 'b', got bytes ['c' x4096 at 0]; kernel log: [   3.2] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x",
    );
    fail.problems = vec![
        Problem::Step(FailedStep {
            number: 3,
            line: 20,
            op: "read".into(),
            expected: Expect::outcome(Outcome::Content('b')),
            observed: Observed::Bytes {
                asked: 4096,
                got: 4096,
                runs: vec![Run { offset: 0, len: 4096, byte: b'c' }],
                truncated: false,
                faults: None,
            },
        }),
        Problem::KernelLine { line: "[   3.2] WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x".into() },
    ];
    let mut skip =
        case("demo/new/xfs/dax=always", Status::Skip, "needs kernel >=6.2, this is 6.1.192");
    skip.duration = Duration::ZERO;
    skip.kernel_log.clear();
    vec![
        Event::RunStarted(RunInfo {
            run_id: "20261124-150000-1".into(),
            run_dir: run_dir.into(),
            kernel_id: "debian:6.12 (linux-image-6.12.117+deb12-amd64=6.12.117-1~deb12u1)".into(),
            kernel_release: "6.12.117+deb12-amd64".into(),
            accel: "tcg".into(),
            qemu_version: "QEMU emulator version 7.2.22".into(),
            cases: 7,
            rerun: crate::run::events::RerunInfo {
                kernel_spec: "debian:6.12".into(),
                image_key: "0123456789abcdef".into(),
                image_dir: "/cache/images/0123456789abcdef".into(),
                memory_mib: 1024,
                cpus: 2,
                nvdimms: 1,
                nvdimm_size: 2 << 30,
                boot_timeout_s: 60,
                step_timeout_s: None,
                case_timeout_s: Some(120),
            },
        }),
        Event::BootFailed {
            message: "QEMU exited (exit status: 1) before the guest was ready\n--- QEMU stderr ---\nqemu: oops".into(),
            log: run_dir.join("boot-failure-1.log"),
            retrying: true,
        },
        Event::VmBooted {
            boot_time: Duration::from_millis(2840),
            reason: "first case".into(),
            command_line: "qemu-system-x86_64 -nodefaults -machine pc,nvdimm=on,accel=tcg".into(),
        },
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
        Event::RunFinished {
            elapsed: Duration::from_secs(61),
            serial_logs: vec![serial.into()],
            boot_failures: vec![run_dir.join("boot-failure-1.log")],
        },
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

#[test]
fn every_reporter_matches_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = Path::new("/run-dir");
    let serial = dir.path().join("serial-1.log");
    std::fs::write(&serial, "daxtest-agent: ready at 2.23s\n").unwrap();
    let console_out = Shared::default();
    let mut reporters = Reporters::new(vec![
        Box::new(console::Console::new(Box::new(console_out.clone()))),
        Box::new(files::Files::new(dir.path())),
        Box::new(junit::Junit::new(dir.path())),
    ]);
    for e in events(run_dir, &serial) {
        reporters.event(&e).unwrap();
    }
    golden("console.txt", &String::from_utf8(console_out.0.lock().unwrap().clone()).unwrap());
    golden("results.json", &std::fs::read_to_string(dir.path().join("results.json")).unwrap());
    golden("junit.xml", &std::fs::read_to_string(dir.path().join("junit.xml")).unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kernel-logs/demo__flag__xfs__dax=inode.log"))
            .unwrap(),
        "[   3.100000] XFS (pmem0): Mounting V5 Filesystem\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kernel-logs/demo__new__xfs__dax=always.log"))
            .unwrap(),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("serial.log")).unwrap(),
        "daxtest-agent: ready at 2.23s\n"
    );
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
