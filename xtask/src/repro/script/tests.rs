//! The generated script: quoting, one translation per op, the session's tables, and what is
//! said loudly when a step cannot be expressed. `sh -n` checks the syntax of every script.

use super::*;
use daxtest_proto::case::Step;

fn spec(steps: Vec<(Op, Expect)>) -> CaseSpec {
    CaseSpec {
        id: "demo/case/xfs/dax=always".into(),
        fs: Fs::Xfs,
        mkfs_options: vec!["-m".into(), "reflink=1".into()],
        mount_options: "dax=always".into(),
        device: "/dev/pmem0".into(),
        mount_point: "/mnt/test".into(),
        seed: 7,
        fsck: false,
        formatted: false,
        cut_at_end: false,
        after_cut: false,
        records: None,
        saved: Default::default(),
        steps: steps
            .into_iter()
            .enumerate()
            .map(|(i, (op, expect))| Step { line: 10 + i, op, expect })
            .collect(),
    }
}

fn script(s: &CaseSpec) -> Script {
    generate(&Input {
        spec: s,
        kernel_log: &KernelLogRules::default(),
        xfail: None,
        kernel_release: "6.12.117+deb12-amd64",
    })
}

/// The host's sh parses the script (syntax only: nothing runs).
fn assert_parses(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reproduce.sh");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap();
    assert!(out.status.success(), "sh -n: {}\n{text}", String::from_utf8_lossy(&out.stderr));
}

fn f(s: &str) -> String {
    s.to_string()
}

/// A read-write mapping of the whole of `f` from offset 0.
fn mmap(map: &str, len: u64, kind: MapKind) -> Op {
    Op::Mmap { file: f("f"), map: f(map), offset: 0, len, kind, prot: Prot::ReadWrite }
}

/// One step of every op, each with a translation and nothing unsupported.
fn every_op() -> Vec<(Op, Expect)> {
    use Op::*;
    let ok = || Expect::outcome(Outcome::Ok);
    vec![
        (Create { file: f("c") }, ok()),
        (Mkdir { dir: f("d") }, ok()),
        (Write { file: f("f"), offset: 0, len: 65536, pattern: 'a' }, ok()),
        (Read { file: f("f"), offset: 0, len: 4096 }, Expect::outcome(Outcome::Content('a'))),
        (Fsync { file: f("f") }, ok()),
        (Truncate { file: f("f"), size: 65536 }, ok()),
        (Fallocate { file: f("f"), mode: FallocMode::PunchHole, offset: 0, len: 4096 }, ok()),
        (Statx { file: f("f") }, Expect::outcome(Outcome::Dax(true))),
        (GetFlag { file: f("f") }, Expect::outcome(Outcome::Flag(false))),
        (SetFlag { file: f("f"), on: true, flag: InodeFlag::Dax }, ok()),
        (SetFlag { file: f("f"), on: true, flag: InodeFlag::JournalData }, ok()),
        (Clone { src: f("f"), dst: f("g") }, ok()),
        (CloneRange { src: f("f"), dst: f("g"), src_offset: 0, len: 4096, dst_offset: 8192 }, ok()),
        (Rename { from: f("g"), to: f("h") }, ok()),
        (Unlink { file: f("h") }, ok()),
        (Open { file: f("f"), handle: f("h") }, ok()),
        (Close { handle: f("h") }, ok()),
        (
            Mmap {
                file: f("f"),
                map: f("r"),
                offset: 0,
                len: 4096,
                kind: MapKind::Shared,
                prot: Prot::Read,
            },
            ok(),
        ),
        (Munmap { map: f("r") }, ok()),
        (
            Mmap {
                file: f("f"),
                map: f("m"),
                offset: 0,
                len: 65536,
                kind: MapKind::Shared,
                prot: Prot::ReadWrite,
            },
            ok(),
        ),
        (Store { map: f("m"), offset: 4096, len: 4096, pattern: 'b', fork: false }, ok()),
        (
            Load { map: f("m"), offset: 4096, len: 4096, fork: false },
            Expect::outcome(Outcome::Content('b')),
        ),
        (Msync { map: f("m") }, ok()),
        (Fiemap { file: f("f"), offset: 0, len: 0, save: Some(f("before")) }, ok()),
        (
            Fiemap { file: f("f"), offset: 0, len: 0, save: None },
            Expect::outcome(Outcome::Extents { since: f("before"), same: true }),
        ),
        (
            Fiemap { file: f("f"), offset: 0, len: 4096, save: None },
            Expect::outcome(Outcome::Shared(Shared::None)),
        ),
        (RaceStoreClone { map: f("m"), file: f("f"), rounds: 3 }, ok()),
        (Munmap { map: f("m") }, ok()),
        (Evict, ok()),
        (Remount { read_only: false }, ok()),
        (Remount { read_only: true }, ok()),
        (Exec { file: f("prog"), args: vec![f("version")] }, Expect::outcome(Outcome::Exit(0))),
        (Remount { read_only: false }, ok()),
        (Write { file: f("swap"), offset: 0, len: 16777216, pattern: 's' }, ok()),
        (Mkswap { file: f("swap") }, ok()),
        (Swapon { file: f("swap") }, Expect::outcome(Outcome::Errno(f("EINVAL")))),
        (Swapoff { file: f("swap") }, Expect::outcome(Outcome::Errno(f("EINVAL")))),
        (Freeze, ok()),
        (Thaw, ok()),
        (RaceToggleWrite { file: f("t"), rounds: 4 }, ok()),
        (Sleep { millis: 1500 }, ok()),
        (
            Shell { background: false, command: f("echo 'it''s' \"$HOME\"; exit 3") },
            Expect::outcome(Outcome::Exit(3)),
        ),
    ]
}

#[test]
fn every_op_translates_and_the_script_parses() {
    let s = spec(every_op());
    // A new op must get a translation: this list must name every variant.
    let names: std::collections::BTreeSet<String> = s.steps.iter().map(|s| s.op.name()).collect();
    assert_eq!(names.len(), 34, "{names:?}");
    let out = script(&s);
    assert!(out.unsupported.is_empty(), "{:?}", out.unsupported);
    assert!(!out.text.contains("!!! NOT REPRODUCED"));
    assert_parses(&out.text);
    for want in [
        "run touch \"$MNT\"/c",
        "run xfs_io -f -c \"pwrite -q -S 0x61 0 65536\" \"$MNT\"/f",
        "read_data 0 4096 \"$MNT\"/f",
        "run xfs_io -c \"fpunch 0 4096\" \"$MNT\"/f",
        "statx_dax \"$MNT\"/f\nexpect_got 'STATX_ATTR_DAX on'",
        "get_flag \"$MNT\"/f\nexpect_got 'FS_XFLAG_DAX off'",
        "run xfs_io -r -c \"chattr +x\" \"$MNT\"/f",
        "run chattr +j \"$MNT\"/f",
        "s_do \"open -r $MNT/f\" \"mmap -r 0 4096\"",
        "run mount -r -t \"$FS\"",
        "(cd \"$MNT\" && ./prog version)",
        "run xfs_io -f -t -c \"reflink $MNT/f\" \"$MNT\"/g",
        "run xfs_io -f -c \"reflink $MNT/f 0 8192 4096\" \"$MNT\"/g",
        "s_do \"open $MNT/f\"\nexpect_success",
        // The handle is file 0; closing it leaves the table empty.
        "s_do \"file 0\" close",
        // The mapping's own fd is file 0 again, and the mapping is mapping 0.
        "s_do \"open $MNT/f\" \"mmap -rw 0 65536\"",
        "s_do 'mmap 0' \"mwrite -S 0x62 4096 4096\"",
        "s_load 4096 4096\nexpect_content",
        "WANT_HEX=62",
        "s_do 'mmap 0' \"msync -s\"",
        "case $GOT in extents*) cp \"$W/ext\" \"$W/fiemap.before\" ;; esac",
        "expect_extents before same",
        "fiemap '0 4096' \"$MNT\"/f\nexpect_shared none",
        "s_do 'mmap 0' munmap 'file 0' close",
        "run swapon \"$MNT\"/swap\n[ \"$GOT\" = success ] && SWAPPED=",
        "expect_errno EINVAL",
        "run xfs_io -x -r -c freeze \"$MNT\"",
        "run sleep 1.500",
        "expect_exit 3",
        "mkfs.$FS",
    ] {
        assert!(out.text.contains(want), "missing {want:?}");
    }
    // Evict and remount close the session; the next user starts a new one.
    let evict = out.text.find("\"op\":\"evict\"").unwrap();
    assert!(out.text[evict..].find("s_stop").unwrap() < out.text[evict..].find("syncfs").unwrap());
}

#[test]
fn quoting_survives_any_text() {
    assert_eq!(quote("plain-name_1.txt"), "plain-name_1.txt");
    assert_eq!(quote(""), "''");
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), r"'it'\''s'");
    assert_eq!(quote("$HOME;rm -rf /"), "'$HOME;rm -rf /'");
    // The shell command of a step runs exactly as written, and is shown as written.
    let out = script(&spec(vec![(
        Op::Shell { background: false, command: f("echo \"a'b\" $x") },
        Expect::outcome(Outcome::Exit(0)),
    )]));
    assert!(out.text.contains(r#"/bin/sh -c 'echo "a'\''b" $x'"#), "{}", out.text);
    assert_parses(&out.text);
}

#[test]
fn what_cannot_be_expressed_is_said_loudly() {
    let out = script(&spec(vec![
        (
            Op::Write { file: f("we ird"), offset: 0, len: 1, pattern: 'a' },
            Expect::outcome(Outcome::Ok),
        ),
        (mmap("p", 4096, MapKind::Private), Expect::outcome(Outcome::Ok)),
    ]));
    assert_eq!(out.unsupported.len(), 2, "{:?}", out.unsupported);
    assert!(out.unsupported[1].contains("MAP_PRIVATE"));
    assert_eq!(out.text.matches("# !!! NOT REPRODUCED").count(), 2);
    assert!(out.text.contains("INCOMPLETE"));
    assert_parses(&out.text);
    // mprotect, mremap and an access by a forked child: xfs_io has none of them.
    let ok = || Expect::outcome(Outcome::Ok);
    let out = script(&spec(vec![
        (mmap("m", 4096, MapKind::Shared), ok()),
        (Op::Mprotect { map: f("m"), prot: daxtest_proto::case::Prot::Read }, ok()),
        (Op::Mremap { map: f("m"), len: None }, ok()),
        (Op::Load { map: f("m"), offset: 0, len: 4096, fork: true }, ok()),
    ]));
    let why: Vec<&str> = out.unsupported.iter().map(String::as_str).collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("xfs_io has no mprotect"), "{why:?}");
    assert!(why[1].contains("mremap -f takes an address"), "{why:?}");
    assert!(why[2].contains("xfs_io has no fork"), "{why:?}");
    assert_parses(&out.text);
    // read(2) or write(2) whose buffer is a mapping, O_DIRECT or buffered: xfs_io's pread and
    // pwrite use buffers of their own.
    let io = |direct| Op::MappedBufferIo {
        map: f("m"),
        map_offset: 0,
        file: f("g"),
        offset: 0,
        len: 1024,
        direction: daxtest_proto::case::IoDirection::Write,
        direct,
    };
    let out = script(&spec(vec![
        (mmap("m", 4096, MapKind::Shared), ok()),
        (io(true), ok()),
        (io(false), ok()),
    ]));
    let why: Vec<&str> = out.unsupported.iter().map(String::as_str).collect();
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(why.iter().all(|w| w.contains("O_DIRECT or buffered")), "{why:?}");
    assert_parses(&out.text);
}

#[test]
fn an_expected_sigbus_maps_the_files_again_for_later_steps() {
    let out = script(&spec(vec![
        (
            Op::Write { file: f("f"), offset: 0, len: 65536, pattern: 'a' },
            Expect::outcome(Outcome::Ok),
        ),
        (mmap("m", 65536, MapKind::Shared), Expect::outcome(Outcome::Ok)),
        (Op::Truncate { file: f("f"), size: 8192 }, Expect::outcome(Outcome::Ok)),
        (
            Op::Load { map: f("m"), offset: 16384, len: 4096, fork: false },
            Expect::outcome(Outcome::Signal(f("SIGBUS"))),
        ),
        (
            Op::Load { map: f("m"), offset: 0, len: 8192, fork: false },
            Expect::outcome(Outcome::Content('a')),
        ),
    ]));
    // The steps, after the helpers.
    let t = &out.text[out.text.find("\nsetup\n").unwrap()..];
    let sigbus = t.find("expect_signal SIGBUS").unwrap();
    let respawn = t.find("s_respawn").unwrap();
    assert!(sigbus < respawn);
    assert!(t[respawn..].contains("s_do \"open $MNT/f\" \"file 0\" \"mmap -rw 0 65536\""));
    // Checked once, before the respawn.
    assert_eq!(t.matches("expect_signal").count(), 1);
    assert_parses(t);
}

#[test]
fn an_mmap_expected_to_fail_does_not_enter_the_tables() {
    let out = script(&spec(vec![
        (mmap("m", 4096, MapKind::Sync), Expect::outcome(Outcome::Errno(f("EOPNOTSUPP")))),
        (mmap("p", 4096, MapKind::Shared), Expect::outcome(Outcome::Ok)),
        (
            Op::Load { map: f("p"), offset: 0, len: 4096, fork: false },
            Expect::outcome(Outcome::Content('a')),
        ),
    ]));
    let t = &out.text;
    assert!(t.contains("\"mmap -rw -S 0 4096\"\nexpect_errno EOPNOTSUPP\ns_do close >/dev/null"));
    // The second mapping is mapping 0.
    assert!(t.contains("s_do 'mmap 0' >/dev/null\ns_load 0 4096"), "{t}");
    assert_parses(t);
}

#[test]
fn kernel_log_rules_and_xfail_reach_the_script() {
    let s = spec(vec![(Op::Create { file: f("f") }, Expect::outcome(Outcome::Ok))]);
    let rules = KernelLogRules {
        expected: vec![r"XFS \(pmem0\): Mounting".into()],
        benign: vec![r"dax_insert_entry\d".into()],
        forbidden: vec!["nope".into()],
    };
    let xfail = Xfail {
        kernel: vec![],
        device: vec![],
        reason: "known WARN".into(),
        link: "https://x".into(),
        symptom: crate::scenario::Symptom {
            step: None,
            what: crate::scenario::SymptomKind::Message("WARNING".into()),
        },
        intermittent: false,
    };
    let out = generate(&Input {
        spec: &s,
        kernel_log: &rules,
        xfail: Some(&xfail),
        kernel_release: "6.1",
    });
    let t = &out.text;
    assert!(t.contains("WARNING:\n"));
    assert!(t.contains("nope\nPATTERNS"));
    assert!(t.contains("dax_insert_entry[0-9]\nPATTERNS"));
    assert!(t.contains("XFS \\(pmem0\\): Mounting\nPATTERNS"));
    assert!(t.contains("known WARN"));
    assert_parses(t);
}

/// A power cut splits the script into parts run in two boots: the first ends where the user
/// cuts the power, the second (PART=2) recovers and goes on; a map saved before the cut was in
/// the killed VM's /tmp, so comparing with it is said loudly.
#[test]
fn a_power_cut_splits_the_script_into_parts() {
    let ok = || Expect::outcome(Outcome::Ok);
    let out = script(&spec(vec![
        (Op::Write { file: f("f"), offset: 0, len: 4096, pattern: 'a' }, ok()),
        (Op::Fiemap { file: f("f"), offset: 0, len: 0, save: Some(f("before")) }, ok()),
        (mmap("m", 4096, MapKind::Sync), ok()),
        (Op::Store { map: f("m"), offset: 0, len: 4096, pattern: 'b', fork: false }, ok()),
        (Op::PowerCut, ok()),
        (
            Op::Fiemap { file: f("f"), offset: 0, len: 0, save: None },
            Expect::outcome(Outcome::Extents { same: true, since: f("before") }),
        ),
        (Op::Read { file: f("f"), offset: 0, len: 4096 }, Expect::outcome(Outcome::Content('b'))),
    ]));
    let text = &out.text;
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{text}"));
    assert!(at("if [ \"$PART\" = 1 ]; then\nsetup") < at("step 4 "));
    assert!(at("step 4 ") < at("power_cut 4 2\nfi\nif [ \"$PART\" = 2 ]; then"));
    assert!(at("if [ \"$PART\" = 2 ]; then") < at("step 5 "));
    assert!(at("step 5 ") < at("\nrecover\n"));
    assert!(at("\nrecover\n") < at("step 7 "));
    assert_eq!(out.unsupported.len(), 1, "{:?}", out.unsupported);
    assert!(out.unsupported[0].contains("saved before the power cut"), "{:?}", out.unsupported);
    assert_parses(text);
}
