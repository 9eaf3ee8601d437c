//! Bad input is refused before anything boots: exit status 2, and a message that says what is
//! wrong, where (`file:line:column` for a scenario file) and how to fix it. Table-driven over the
//! real binary: the scenario files in `xtask/tests/fixtures/bad/` (each wrong in one way, given to
//! `check`, `list` and `test`) and bad command lines. Every run must end within a few seconds
//! without building an image or starting QEMU; a run that does not is killed and fails the test.

mod common;

use common::root;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Refusing bad input takes milliseconds; a run still going after this has started to boot.
const LIMIT: Duration = Duration::from_secs(10);

const BAD: &str = "xtask/tests/fixtures/bad";

/// Exit statuses (xtask/src/exit.rs).
const INPUT: i32 = 2;

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the xtask binary from the project root, in a process group of its own; if it outlives
/// LIMIT, kills that group (xtask and whatever it started) and fails.
fn xtask(args: &[&str]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            panic!(
                "xtask {args:?} still ran after {LIMIT:?}: bad input must be refused before \
                 anything is built or booted\n--- stderr\n{}",
                stderr.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Output ends when the last holder of the pipes exits; a helper that outlives xtask fails.
    let read = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(LIMIT).expect("xtask exited but something it started holds its output")
    };
    Run { status: status.code(), stdout: read(stdout), stderr: read(stderr) }
}

/// Runs `args` and asserts the exit status, every wanted fragment on stderr, and that nothing was
/// prepared or booted.
fn refused(args: &[&str], status: i32, wants: &[&str]) {
    let run = xtask(args);
    let err = &run.stderr;
    assert_eq!(run.status, Some(status), "xtask {args:?}: exit status\n--- stderr\n{err}");
    for want in wants {
        assert!(err.contains(want), "xtask {args:?}:\n  want {want:?}\n  in stderr:\n{err}");
    }
    // What a run prints once it gets past input checks: the guest build, the image, the
    // accelerator, the boot.
    for booted in
        ["daxtest: guest ", "$ cargo build", "daxtest: image ", "built image", "accelerator:"]
    {
        assert!(!err.contains(booted), "xtask {args:?}: got as far as {booted:?}:\n{err}");
    }
    assert_eq!(run.stdout, "", "xtask {args:?}: nothing on stdout");
}

/// Each fixture in xtask/tests/fixtures/bad/: the place and the whole message (or its start,
/// where it goes on to list every allowed value). `file:` is prefixed by the test.
const SCENARIOS: &[(&str, &str, &str)] = &[
    // 1. TOML syntax.
    ("syntax.toml", "3:19", "invalid basic string"),
    // 2, 3. The format.
    ("no-format.toml", "1:1", "missing field `format`: begin the file with format = 1"),
    ("format-2.toml", "2:10", "format = 2: this daxtest reads format 1 (scenarios/README.md)"),
    // 4. Unknown top-level key.
    ("unknown-key.toml", "5:1", "unknown field `colour`, expected one of `format`, `name`, "),
    // 5, 6, 7. Operations and their arguments.
    (
        "unknown-op.toml",
        "11:3",
        "step op = \"frobnicate\": unknown variant `frobnicate`, expected one of `create`, ",
    ),
    ("wrong-type.toml", "10:3", "step op = \"write\": invalid type: string \"zero\", expected u64"),
    ("missing-arg.toml", "10:3", "step op = \"write\": missing field `len`"),
    // 8, 9. Names of errnos and signals.
    (
        "unknown-errno.toml",
        "10:3",
        "expect: errno = \"EFOO\": not an errno name (EINVAL, EOPNOTSUPP, ETXTBSY, ...)",
    ),
    (
        "unknown-signal.toml",
        "12:3",
        "expect: signal = \"SIGFOO\": an access can raise SIGBUS or SIGSEGV",
    ),
    // Second names of an errno number: the agent reports the first, so they never match.
    (
        "errno-enotsup.toml",
        "11:3",
        "expect: errno = \"ENOTSUP\": write EOPNOTSUPP: ENOTSUP is the same number on Linux and \
         the agent reports it as EOPNOTSUPP",
    ),
    (
        "errno-efscorrupted.toml",
        "12:3",
        "expect: errno = \"EFSCORRUPTED\": write EUCLEAN: EFSCORRUPTED is the same number on \
         Linux and the agent reports it as EUCLEAN",
    ),
    // 10. Case ids.
    (
        "duplicate-case-id.toml",
        "11:1",
        "case id \"same\" appears twice in this file (first at line 6): give each case its own id",
    ),
    // 12, 13. Handles, mappings and saved extent maps used while they do not exist.
    (
        "used-after-munmap.toml",
        "13:3",
        "store uses mapping \"m\", which no earlier step opened since the munmap at line 12 \
         closed it: mmap it again before this step, or move this step before that one",
    ),
    (
        "used-after-evict.toml",
        "13:3",
        "msync uses mapping \"m\", which no earlier step opened since the evict at line 12 closed \
         it: mmap it again before this step",
    ),
    (
        "used-after-power-cut.toml",
        "13:3",
        "store uses mapping \"m\", which no earlier step opened since the power_cut at line 12 \
         closed it: mmap it again before this step",
    ),
    (
        "store-loop-without-cut.toml",
        "13:3",
        "the store_loop at line 12 runs until the power is cut: the step after it must be \
         { op = \"power_cut\" }",
    ),
    (
        "handle-never-opened.toml",
        "11:3",
        "close uses handle \"h\", which no earlier step opened: open it first ({ op = \"open\", \
         file = ..., handle = \"h\" }; open handles here: none)",
    ),
    (
        "map-never-made.toml",
        "12:3",
        "load uses mapping \"n\", which no earlier step opened: mmap it first ({ op = \"mmap\", \
         ..., map = \"n\" }; mappings here: \"m\")",
    ),
    (
        "fiemap-never-saved.toml",
        "12:3",
        "fiemap uses saved extent map \"befor\", which no earlier step opened or saved: give an \
         earlier fiemap step save = \"befor\" (saved so far: \"before\")",
    ),
    // Accesses a mapping cannot serve.
    (
        "store-past-mapping.toml",
        "12:3",
        "store offset 4096 + len 8192 runs past the end of mapping \"m\" (8192 bytes, mmapped at \
         line 11): keep offset + len within its len, or mmap more",
    ),
    (
        "store-through-read-only-mapping.toml",
        "12:3",
        "store through mapping \"m\", mmapped read-only at line 11: the store can only be \
         refused (SIGSEGV); mmap it with prot = \"read_write\", or write the file with a write step",
    ),
    // store_profile (issue 16): whole strides of whole pages, inside the mapping, never judged.
    (
        "profile-stride-not-pages.toml",
        "12:3",
        "store_profile stride = 1000: one first store per stride, so a stride is whole pages: \
         4096 (a sample per 4 KiB page) or 2097152",
    ),
    (
        "profile-len-not-strides.toml",
        "12:3",
        "store_profile len = 10000: the range is a whole number of strides (4096 bytes each), one \
         sample each: write 8192",
    ),
    (
        "profile-past-mapping.toml",
        "12:3",
        "store_profile offset 0 + len 2097152 runs past the end of mapping \"m\" (1048576 bytes, \
         mmapped at line 11)",
    ),
    (
        "profile-judges-faults.toml",
        "12:3",
        "store_profile measures its faults and records them, never judges them: leave faults and \
         pmd_faults out",
    ),
    // mprotect and mremap (issue 13): a mapping that exists, a length, what mprotect allows.
    (
        "mremap-unknown-map.toml",
        "11:3",
        "mremap uses mapping \"m\", which no earlier step opened: mmap it first ({ op = \
         \"mmap\", ..., map = \"m\" }; mappings here: none)",
    ),
    (
        "mremap-len-zero.toml",
        "12:3",
        "mremap len = 0: the kernel refuses a mapping of no bytes (EINVAL); give the new length \
         in bytes, or leave len out to keep the mapping's",
    ),
    (
        "store-after-mprotect-read.toml",
        "13:3",
        "store through mapping \"m\", made read-only by the mprotect at line 12: the store can \
         only be refused; expect { signal = \"SIGSEGV\" }, or mprotect it prot = \"read_write\" \
         before this step",
    ),
    (
        "mprotect-write-of-read-only-mapping.toml",
        "12:3",
        "mprotect prot = \"read_write\" of mapping \"m\", mmapped read-only at line 11 (its file \
         opened O_RDONLY), cannot succeed: the kernel refuses PROT_WRITE there with EACCES; \
         expect { errno = \"EACCES\" }, or mmap it with prot = \"read_write\"",
    ),
    (
        "race-direct-io-remove-private.toml",
        "12:3",
        "race_direct_io_remove reads into mapping \"m\" (mmapped at line 11), which must be a \
         writable shared mapping of the file whose blocks it removes: mmap it with kind = \
         \"shared\" or \"sync\" and prot = \"read_write\"",
    ),
    (
        "race-without-slot.toml",
        "12:3",
        "race_store_clone needs a mapping of at least one slot of 512 bytes (it stores into an \
         8-byte slot at the start of each); mapping \"m\" (mmapped at line 11) is 256 bytes: mmap \
         at least 512",
    ),
    // An access expected to die of a signal kills the mapping's process: the mapping is gone.
    (
        "used-after-sigbus.toml",
        "15:3",
        "load uses mapping \"m\", which no earlier step opened since the SIGBUS expected at line \
         14 (it kills the mapping's process) closed it: mmap it again before this step",
    ),
    // Only an access through a mapping counts faults.
    (
        "faults-on-a-read.toml",
        "11:3",
        "op read cannot observe faults: only store and load count them",
    ),
    // O_DIRECT wants offsets and lengths aligned to the logical block (buffered I/O does not);
    // the op says which it is; a read cannot fill a read-only mapping.
    (
        "mapped-buffer-io-unaligned.toml",
        "19:3",
        "mapped_buffer_io map_offset = 256, len = 1000 with direct = true: O_DIRECT wants every \
         offset and length a multiple of the device's 512-byte logical block (the kernel refuses \
         others with EINVAL): round them, or say direct = false",
    ),
    (
        "mapped-buffer-io-without-direct.toml",
        "14:3",
        "step op = \"mapped_buffer_io\": missing field `direct`: say direct = true (O_DIRECT) or \
         direct = false (buffered, through the page cache or DAX)",
    ),
    (
        "mapped-buffer-io-read-into-read-only.toml",
        "15:3",
        "mapped_buffer_io direction = \"read\" fills mapping \"m\", made read-only by the \
         mprotect at line 14: the kernel can only refuse it; expect { errno = \"EFAULT\" }, or \
         make the mapping writable (mmap prot = \"read_write\")",
    ),
    // A poison is of whole pages; a siginfo goes with a SIGBUS.
    (
        "poison-unaligned.toml",
        "12:3",
        "poison offset = 100: it poisons one page, so the offset into the mapping is a multiple \
         of 4096: write 0",
    ),
    (
        "si-code-without-sigbus.toml",
        "12:3",
        "expect: si_code describes the siginfo of a signal, not every byte 'a': add signal = \
         \"SIGBUS\" or \"SIGSEGV\", or drop it",
    ),
    (
        "pmd-faults-on-a-read.toml",
        "11:3",
        "op read cannot observe faults: only store and load count them",
    ),
    // A race that cannot race.
    (
        "race-toggle-fixed-mode.toml",
        "11:3",
        "race_toggle_write cannot race under dax=always: the mount option fixes the DAX mode, so \
         toggling the flag never changes it; restrict the case to dax=inode",
    ),
    // A known bug must say how it shows, or it would absorb any failure.
    (
        "xfail-without-symptom.toml",
        "9:10",
        "xfail without a symptom: name the symptom of the bug: step = N with errno = \"E...\" or \
         signal = \"SIG...\", or message = \"regex\"",
    ),
    // 14, 15. Success the kernel cannot give, in the matrix cells where the applicable
    // alternative says ok (refused once, for that cell only).
    (
        "clone-on-ext4.toml",
        "14:3",
        "clone cannot succeed on ext4 (it has no reflink: FICLONE and FICLONERANGE fail with \
         EOPNOTSUPP): expect { errno = \"EOPNOTSUPP\" } there ({ when = { fs = \"ext4\" }, \
         errno = \"EOPNOTSUPP\" }), or restrict the case to xfs",
    ),
    (
        "clone-range-on-ext4-alternatives.toml",
        "15:3",
        "clone_range cannot succeed on ext4 (it has no reflink",
    ),
    (
        "map-sync-dax-never.toml",
        "14:3",
        "mmap kind = \"sync\" (MAP_SYNC) cannot succeed under dax=never: without DAX the kernel \
         refuses it with EOPNOTSUPP; expect { errno = \"EOPNOTSUPP\" } there ({ when = { mount = \
         \"dax=never\" }, errno = \"EOPNOTSUPP\" }), or take dax=never out of the case's matrix",
    ),
    // 16. Kernel conditions.
    (
        "kernel-condition.toml",
        "9:12",
        "\">>6.1\" is not a kernel version condition: write >=6.2, <6.2, 6.1 or =6.1.192",
    ),
    (
        "kernel-condition-in-when.toml",
        "10:3",
        "\"6.x\" is not a kernel version condition: write >=6.2, <6.2, 6.1 or =6.1.192",
    ),
    // 17. The matrix.
    ("unknown-fs.toml", "7:14", "unknown variant `btrfs`, expected `xfs` or `ext4`"),
    ("unknown-dimension.toml", "8:1", "unknown field `arch`, expected `fs` or `mount`"),
    // 18. An expectation the operation cannot observe.
    (
        "expectation-misfit.toml",
        "10:3",
        "op write cannot observe \"STATX_ATTR_DAX on\": only statx can; expect { ok = true } or \
         an errno here and check it with a statx step",
    ),
    // 26. Kernel-log patterns, at the pattern itself.
    (
        "bad-regex.toml",
        "7:25",
        "kernel_log.forbidden pattern \"(unclosed\" is not a regular expression: unclosed group \
         (a literal ( [ { . * + ? | needs a backslash: \"\\\\(\" in a TOML string)",
    ),
    (
        "bad-regex-in-case.toml",
        "9:26",
        "kernel_log.benign pattern \"a[b\" is not a regular expression: unclosed character class",
    ),
    // Timeouts.
    (
        "zero-timeout.toml",
        "7:10",
        "timeout case_s = 0: give a number of seconds above 0, or leave it out for the default \
         of images/recipe.toml [timeouts]",
    ),
    // A case that checks nothing.
    (
        "steps-empty.toml",
        "9:9",
        "steps = []: a case without steps checks nothing and always passes: give it the steps \
         that show what its summary says",
    ),
    // Paths outside the filesystem under test (paths are relative to the case's mount point).
    (
        "path-absolute.toml",
        "10:3",
        "write file = \"/etc/x\": paths are relative to the case's mount point (/mnt/test), and \
         an absolute one would leave the filesystem under test: write \"etc/x\"",
    ),
    (
        "path-parent.toml",
        "11:3",
        "rename to = \"a/../../b\": a \"..\" component can leave the filesystem under test: name \
         the path from the case's mount point, without \"..\"",
    ),
    (
        "path-empty.toml",
        "10:3",
        "unlink file = \"\": name a file or directory under the case's mount point, such as \"f\" \
         or \"d/f\"",
    ),
    (
        "path-nul.toml",
        "10:3",
        "create file = \"a\\0b\": a path cannot hold a NUL byte (the kernel reads it as the end of \
         the path): remove it",
    ),
    // Sizes the agent cannot hold, steps that move no byte, ranges past a file offset.
    (
        "len-too-large.toml",
        "10:3",
        "write len = 1099511627776: at most 67108864 bytes (64 MiB) per write, read, store or \
         load, which the agent holds in the guest's memory: split it into several steps",
    ),
    (
        "read-nothing.toml",
        "11:3",
        "read len = 0 moves no byte, so the step checks nothing (it passes any content check): \
         give the number of bytes",
    ),
    (
        "range-past-off-t.toml",
        "11:3",
        "fallocate offset 9223372036854771712 + len 8192 is past the largest file offset (2^63 - \
         1 = 9223372036854775807): give a smaller offset or length",
    ),
    // Mount options: a dax mode the kernel does not know.
    (
        "mount-unknown-dax.toml",
        "9:1",
        "mount option \"dax=sometimes\": \"dax=sometimes\" is not a DAX mode: write dax=always, \
         dax=inode or dax=never",
    ),
];

const DUP_A: &str = "xtask/tests/fixtures/bad/duplicate-name-a.toml";
const DUP_B: &str = "xtask/tests/fixtures/bad/duplicate-name-b.toml";
/// 11. Two files, each valid, with the same `name`.
const DUP_NAME: &str = "xtask/tests/fixtures/bad/duplicate-name-b.toml:3:8: scenario name \
     \"bad-duplicate-name\" is also used by xtask/tests/fixtures/bad/duplicate-name-a.toml:3:8: \
     names must be unique (every case id starts with it); rename one of them";

#[test]
fn each_bad_scenario_file_is_refused_with_its_place_and_fix() {
    assert!(SCENARIOS.len() >= 20);
    for (file, at, message) in SCENARIOS {
        let path = format!("{BAD}/{file}");
        let want = format!("{path}:{at}: {message}");
        for verb in ["check", "list", "test"] {
            refused(
                &[verb, &path],
                INPUT,
                &[&want, "error: 1 error(s) in scenario files (see scenarios/README.md"],
            );
        }
    }
    for verb in ["check", "list", "test"] {
        refused(&[verb, DUP_A, DUP_B], INPUT, &[DUP_NAME, "error: 1 error(s)"]);
    }
}

/// The whole directory at once: every file's error, each once, nothing else.
#[test]
fn every_error_of_every_file_is_reported_together() {
    let run = xtask(&["check", BAD]);
    assert_eq!(run.status, Some(INPUT), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let n = SCENARIOS.len() + 1;
    assert_eq!(
        lines.last().copied(),
        Some(&*format!(
            "error: {n} error(s) in scenario files (see scenarios/README.md for the format)"
        ))
    );
    assert_eq!(lines.len(), n + 1, "one line per error:\n{}", run.stderr);
    for (file, at, message) in SCENARIOS {
        let want = format!("{BAD}/{file}:{at}: {message}");
        assert_eq!(lines.iter().filter(|l| l.starts_with(&want)).count(), 1, "{want}");
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with(DUP_NAME)).count(), 1);
}

/// 14, 15: the same operations with alternatives that name the errno where the kernel gives
/// it are accepted, in every matrix cell.
#[test]
fn impossible_successes_are_refused_only_where_the_applicable_alternative_says_ok() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alternatives.toml");
    std::fs::write(
        &file,
        r#"format = 1
name = "alternatives"
summary = "s"

[matrix]
fs = ["xfs", "ext4"]
mount = ["dax=always", "dax=inode", "dax=never"]

[[case]]
id = "a"
summary = "s"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "clone", src = "f", dst = "g", expect = [
      { when = { fs = "ext4" }, errno = "EOPNOTSUPP" },
      { when = { kernel = "<6.2", mount = "dax=always" }, errno = "EINVAL" },
      { ok = true },
  ] },
  { op = "mmap", file = "f", map = "m", offset = 0, len = 4096, kind = "sync", expect = [
      { when = { mount = "dax=never" }, errno = "EOPNOTSUPP" },
      { when = { mount = "dax=inode" }, errno = "EOPNOTSUPP" },
      { ok = true },
  ] },
]
"#,
    )
    .unwrap();
    let f = file.to_string_lossy();
    let check = xtask(&["check", &f]);
    assert_eq!(check.status, Some(0), "{}", check.stderr);
    assert_eq!(check.stdout, "1 scenario files, 6 cases: all valid\n");
    let list = xtask(&["list", &f]);
    assert_eq!(list.status, Some(0), "{}", list.stderr);
    assert!(list.stdout.contains("alternatives/a/ext4/dax=never "), "{}", list.stdout);
}

/// Bad command lines: (arguments, exit status, fragments of stderr). `SEL` is replaced by a
/// valid scenario file with one case of one step, so that a missing check would go on to boot
/// (and be killed after LIMIT).
const COMMAND_LINES: &[(&[&str], i32, &[&str])] = &[
    // 19. A filter that selects nothing.
    (
        &["test", "no-such-case-xyz"],
        INPUT,
        &["error: no case matches [\"no-such-case-xyz\"]; `cargo xtask list` shows the case ids"],
    ),
    (&["test", "SEL", "--fs", "ext4"], INPUT, &["error: no case matches ["]),
    // 20. Paths that do not exist, or hold no scenario files.
    (
        &["test", "/nonexistent/x.toml"],
        INPUT,
        &["error: /nonexistent/x.toml: no such file or directory"],
    ),
    (
        &["list", "/nonexistent/x.toml"],
        INPUT,
        &["error: /nonexistent/x.toml: no such file or directory"],
    ),
    (
        &["check", "/nonexistent/x.toml"],
        INPUT,
        &["error: /nonexistent/x.toml: no such file or directory"],
    ),
    (&["check", "EMPTY"], INPUT, &["/empty: no scenario files (*.toml) in this directory"]),
    (&["test", "EMPTY"], INPUT, &["/empty: no scenario files (*.toml) in this directory"]),
    // 21. An unknown kernel spec.
    (
        &["test", "--kernel", "debian:9.9", "SEL"],
        INPUT,
        &["error: unknown kernel \"debian:9.9\": images/recipe.toml pins debian:6.1, debian:6.12, \
           debian:7.2 (or give a path to a kernel build tree or install root)"],
    ),
    (&["image", "--kernel", "debian:9.9"], INPUT, &["error: unknown kernel \"debian:9.9\""]),
    (
        &["run", "--kernel", "debian:9.9", "--", "true"],
        INPUT,
        &["error: unknown kernel \"debian:9.9\""],
    ),
    // 22. NVDIMM sizes an fsdax namespace cannot use (the command of xtask/tests/vm.rs, and test).
    (
        &["test", "--nvdimm-size", "1000M", "SEL"],
        INPUT,
        &["error: --nvdimm-size 1000M: use a multiple of 16 MiB of at least 64 MiB (e.g. 2G), \
           which an fsdax namespace needs"],
    ),
    (&["run", "--nvdimm-size", "1000M", "--", "true"], INPUT, &["use a multiple of 16 MiB"]),
    (&["run", "--nvdimm-size", "32M", "--", "true"], INPUT, &["of at least 64 MiB"]),
    (&["test", "--nvdimm-size", "lots", "SEL"], INPUT, &["error: --nvdimm-size lots: "]),
    (
        &["test", "--boot-timeout", "0", "SEL"],
        INPUT,
        &["error: --boot-timeout 0: give a number of seconds above 0"],
    ),
    (
        &["test", "--nvdimms", "0", "SEL"],
        INPUT,
        &["error: --nvdimms 0: the guest needs at least one NVDIMM"],
    ),
    // 23. A kernel that is not there, or not a kernel tree.
    (
        &["test", "--kernel", "/nonexistent/bzImage", "SEL"],
        INPUT,
        &["error: --kernel /nonexistent/bzImage: no such file or directory (give a kernel build \
           tree, an install root with boot/ and lib/modules/ or with usr/lib/modules/, or a \
           kernel images/recipe.toml pins, such as debian:6.12)"],
    ),
    (
        &["test", "--kernel", "EMPTY", "SEL"],
        INPUT,
        &["/empty: neither a build tree (no arch/x86/boot/bzImage) nor an install root"],
    ),
    // 24. Accelerators and other enumerations.
    (
        &["test", "--accel", "foo", "SEL"],
        INPUT,
        &["error: invalid value 'foo' for '--accel <ACCEL>'", "[possible values: auto, kvm, tcg]"],
    ),
    (
        &["test", "--fs", "btrfs", "SEL"],
        INPUT,
        &["error: invalid value 'btrfs' for '--fs <FS>'", "[possible values: xfs, ext4]"],
    ),
    (&["test", "--seed", "x", "SEL"], INPUT, &["error: invalid value 'x' for '--seed <SEED>'"]),
    (
        &["run", "--device", "pmem", "--", "true"],
        INPUT,
        &["error: invalid value 'pmem' for '--device <DEVICE>': unknown device \"pmem\": use one \
           of nvdimm, nvdimm-mem, nvdimm-4k, virtio-pmem, memmap"],
    ),
    (
        &["test", "--device", "memmap", "--nvdimm-size", "4G", "SEL"],
        INPUT,
        &["error: --device memmap: the pmem is guest RAM below 4 GiB, and --memory 1024 with 1 x \
           4096 MiB needs 5248 MiB of it (at most 3583)"],
    ),
    // 25. Guest memory and CPUs.
    (
        &["test", "--memory", "0", "SEL"],
        INPUT,
        &["error: --memory 0: the guest needs at least 256 MiB"],
    ),
    (
        &["test", "--memory", "100", "SEL"],
        INPUT,
        &["error: --memory 100: the guest needs at least 256 MiB"],
    ),
    (&["test", "--cpus", "0", "SEL"], INPUT, &["error: --cpus 0: use 1 to 64"]),
    (&["test", "--cpus", "65", "SEL"], INPUT, &["error: --cpus 65: use 1 to 64"]),
    (
        &["run", "--ssh-port", "0", "--", "true"],
        INPUT,
        &["error: --ssh-port 0: give a port from 1"],
    ),
    (
        &["test", "--ssh-port", "70000", "SEL"],
        INPUT,
        &["error: invalid value '70000' for '--ssh-port"],
    ),
    (&["run", "--cpus", "0", "--", "true"], INPUT, &["error: --cpus 0: use 1 to 64"]),
    // Runs and timeouts.
    (
        &["test", "--repeat", "0", "SEL"],
        INPUT,
        &["error: --repeat 0: give how many times to run, 1 or more"],
    ),
    (
        &["test", "--shard", "0/2", "SEL"],
        INPUT,
        &["error: invalid value '0/2' for '--shard <I/N>': --shard \"0/2\": write I/N"],
    ),
    (
        &["test", "--shard", "1/2", "--durations", "no/such/run", "SEL"],
        INPUT,
        &["error: --durations no/such/run: reading no/such/run/results.json"],
    ),
    (
        &["test", "--step-timeout", "0", "SEL"],
        INPUT,
        &["error: --step-timeout 0: give a number of seconds above 0"],
    ),
    (
        &["test", "--case-timeout", "0", "SEL"],
        INPUT,
        &["error: --case-timeout 0: give a number of seconds above 0"],
    ),
    (
        &["test", "--kernel", "debian:6.1", "--kernel", "debian:6.1", "SEL"],
        INPUT,
        &["error: --kernel debian:6.1 given twice"],
    ),
    (
        &["test", "--bisect", "--kernel", "debian:6.1", "--kernel", "debian:6.12", "SEL"],
        255,
        &["error: --bisect tests one kernel per revision: give --kernel once"],
    ),
    (
        &["run", "--kernel", "debian:6.1", "--kernel", "debian:6.12", "--", "true"],
        INPUT,
        &["error: --kernel given 2 times: only `cargo xtask test` runs several kernels"],
    ),
    // Mutants: a name that is no patch, a tree that is no kernel tree; nothing fetched or built.
    (
        &["mutants", "--only", "no-such-mutant", "--dry-run"],
        INPUT,
        &["error: --only no-such-mutant: no mutants/no-such-mutant.patch; the mutants are "],
    ),
    (
        &["mutants", "--src", "EMPTY", "--dry-run"],
        INPUT,
        &["/empty: not a kernel source tree (no Makefile, no arch/x86"],
    ),
    (&["mutants", "--jobs", "0", "--dry-run"], INPUT, &["error: invalid value '0' for '--jobs"]),
];

/// A valid scenario file (one case of one step) and an empty directory, for `SEL` and `EMPTY`.
fn command_line_inputs() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let sel = dir.path().join("one.toml");
    let text = "format = 1\nname = \"one\"\nsummary = \"s\"\n\
                [[case]]\nid = \"a\"\nsummary = \"s\"\n\
                steps = [{ op = \"create\", file = \"f\" }]\n";
    std::fs::write(&sel, text).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (sel, empty) = (sel.to_string_lossy().into_owned(), empty.to_string_lossy().into_owned());
    (dir, sel, empty)
}

fn substitute<'a>(args: &[&'a str], sel: &'a str, empty: &'a str) -> Vec<&'a str> {
    args.iter()
        .map(|a| match *a {
            "SEL" => sel,
            "EMPTY" => empty,
            a => a,
        })
        .collect()
}

#[test]
fn bad_command_lines_are_refused_before_anything_boots() {
    let (_dir, sel, empty) = command_line_inputs();
    // The selection itself is good: `list` shows its case.
    let list = xtask(&["list", &sel]);
    assert_eq!(list.status, Some(0), "{}", list.stderr);
    assert!(list.stdout.starts_with("one/a "), "{}", list.stdout);
    for (args, status, wants) in COMMAND_LINES {
        refused(&substitute(args, &sel, &empty), *status, wants);
    }
}

/// Command lines whose refusal came later than the table above: a word `check` cannot read, a
/// `list` that matches nothing, and the NVDIMM size naming the flag that set it.
#[test]
fn words_that_name_nothing_and_sizes_name_their_source() {
    let (_dir, sel, empty) = command_line_inputs();
    let table: &[(&[&str], i32, &[&str])] = &[
        (&["check", "no-such-file"], INPUT, &["no-such-file: no such file or directory"]),
        (
            &["check", "xtask/tests/fixtures/bad/README.md"],
            INPUT,
            &["README.md: not a scenario file"],
        ),
        (&["list", "no-such-case-xyz"], INPUT, &["no case matches [\"no-such-case-xyz\"]"]),
        (
            &["test", "--nvdimm-size", "1000M", "SEL"],
            INPUT,
            &["--nvdimm-size 1000M: use a multiple of 16 MiB"],
        ),
    ];
    for (args, status, wants) in table {
        refused(&substitute(args, &sel, &empty), *status, wants);
    }
}

/// A port that another program listens on, given with --ssh-port: refused before the image.
#[test]
fn a_busy_ssh_port_is_refused_before_anything_boots() {
    let (_dir, sel, _empty) = command_line_inputs();
    let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let want = format!(
        "error: --ssh-port {port}: cannot listen on 127.0.0.1:{port} (Address already in use"
    );
    let fix = "give a free port, or leave --ssh-port out to use any free one";
    refused(&["run", "--ssh-port", &port, "--", "true"], INPUT, &[&want, fix]);
    refused(&["test", "--ssh-port", &port, &sel], INPUT, &[&want]);
}

/// Too little room for the backing files: a 64 MiB tmpfs as DAXTEST_TMPDIR, mounted in a user
/// and mount namespace of the test's own (no root needed, nothing left mounted). Exit status 3
/// for `test` (the machine, not the input; `run` keeps 255 for its own failures, as the
/// command's statuses are its), before anything is built or booted.
#[test]
fn a_full_disk_for_the_backing_files_is_refused_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    for (args, status) in [(&["test", "reflink"][..], 3), (&["run", "--", "true"][..], 255)] {
        let out = Command::new("timeout")
            .args(["60", "unshare", "--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(
                r#"d=$1 x=$2; shift 2
                mount -t tmpfs -o size=64m daxtest-full "$d" && DAXTEST_TMPDIR=$d exec "$x" "$@""#,
            )
            .arg("sh")
            .arg(dir.path())
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: exit status\n--- stderr\n{err}");
        let want = format!(
            "error: only 64 MiB free for the VM's backing files in {} (at least 512 MiB needed; a \
             VM may write up to 1 x 1024 MiB there): free some space (e.g. `rm -r \
             target/daxtest/runs`) or point DAXTEST_TMPDIR at a directory with room",
            dir.path().join("daxtest").display()
        );
        assert!(err.contains(&want), "{args:?}: want {want:?}\nin stderr:\n{err}");
        for booted in ["daxtest: guest ", "$ cargo build", "daxtest: image ", "accelerator:"] {
            assert!(!err.contains(booted), "{args:?}: got as far as {booted:?}:\n{err}");
        }
    }
}
