use super::*;
// The cases as a run resolves them for a kernel: what the expansion is for.
use crate::run::plan::{resolve, Resolution};
use crate::version::KernelVersion;
use daxtest_proto::case::Outcome;
use daxtest_proto::Device;

const GOOD: &str = r#"
format = 1
name = "demo"
summary = "A demo"
references = ["Documentation/filesystems/dax.rst"]

[matrix]
fs = ["xfs", "ext4"]
mount = ["dax=always", "dax=never"]

[vars.mount."dax=always"]
new = "on"
[vars.mount."dax=never"]
new = "off"

[mkfs]
xfs = ["-m", "reflink=1"]

[[case]]
id = "new-file"
summary = "a new file follows the mount option"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "statx", file = "f", expect = { dax = "${new}" } },
  { op = "clone", src = "f", dst = "g", expect = [
      { when = { fs = "ext4" }, errno = "EOPNOTSUPP" },
      { when = { kernel = "<6.2", mount = "dax=always" }, errno = "EINVAL" },
      { ok = true },
  ] },
]

[[case]]
id = "new-kernels-only"
summary = "skipped before 6.2"
requires = { kernel = ">=6.2" }
matrix = { fs = ["xfs"], mount = ["dax=always"] }
steps = [{ op = "create", file = "f" }]
"#;

fn parse_ok(text: &str) -> Scenario {
    parse(text, Path::new("demo.toml")).unwrap_or_else(|d| panic!("{d:?}"))
}

fn errors(text: &str) -> Vec<String> {
    parse(text, Path::new("bad.toml")).unwrap_err().iter().map(|d| d.to_string()).collect()
}

#[test]
fn matrix_expands_to_stable_ids() {
    let s = parse_ok(GOOD);
    let ids: Vec<&str> = s.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "demo/new-file/xfs/dax=always",
            "demo/new-file/xfs/dax=never",
            "demo/new-file/ext4/dax=always",
            "demo/new-file/ext4/dax=never",
            "demo/new-kernels-only/xfs/dax=always",
        ]
    );
    assert_eq!(s.cases[0].mkfs, ["-m", "reflink=1"]);
    assert!(s.cases[2].mkfs.is_empty());
    assert_eq!(s.cases[0].line, 19);
    assert_eq!(s.cases[0].steps[1].line, 24);
    // Seeds are stable and differ between cases.
    assert_eq!(s.cases[0].seed, parse_ok(GOOD).cases[0].seed);
    assert_ne!(s.cases[0].seed, s.cases[1].seed);
}

fn o(outcome: Outcome) -> Expect {
    Expect::outcome(outcome)
}

fn expectations(c: &Case, kernel: KernelVersion) -> Vec<Expect> {
    match resolve(c, kernel, Device::Nvdimm, None).unwrap() {
        Resolution::Run { spec, .. } => spec.steps.into_iter().map(|s| s.expect).collect(),
        Resolution::Skip(r) => panic!("skipped: {r}"),
    }
}

#[test]
fn variables_and_kernel_conditions_pick_the_expectation() {
    let s = parse_ok(GOOD);
    let old = KernelVersion(6, 1, 192);
    let new = KernelVersion(6, 12, 117);
    assert_eq!(
        expectations(&s.cases[0], old)[1..],
        [o(Outcome::Dax(true)), o(Outcome::Errno("EINVAL".into()))]
    );
    assert_eq!(expectations(&s.cases[0], new)[1..], [o(Outcome::Dax(true)), o(Outcome::Ok)]);
    assert_eq!(expectations(&s.cases[1], old)[1..], [o(Outcome::Dax(false)), o(Outcome::Ok)]);
    assert_eq!(expectations(&s.cases[2], new)[2], o(Outcome::Errno("EOPNOTSUPP".into())));
}

#[test]
fn an_unmet_requirement_skips_with_the_reason() {
    let s = parse_ok(GOOD);
    assert_eq!(
        resolve(&s.cases[4], KernelVersion(6, 1, 192), Device::Nvdimm, None).unwrap(),
        Resolution::Skip("needs kernel >=6.2, this is 6.1.192".into())
    );
    assert!(matches!(
        resolve(&s.cases[4], KernelVersion(6, 12, 0), Device::Nvdimm, None).unwrap(),
        Resolution::Run { .. }
    ));
}

#[test]
fn a_seed_given_on_the_command_line_wins() {
    let s = parse_ok(GOOD);
    let Resolution::Run { spec, .. } =
        resolve(&s.cases[0], KernelVersion(6, 12, 0), Device::Nvdimm, Some(42)).unwrap()
    else {
        panic!()
    };
    assert_eq!(spec.seed, 42);
}

const DEVICES: &str = r#"
format = 1
name = "devices"
summary = "expectations that depend on the run's device"

[[case]]
id = "map-sync"
summary = "MAP_SYNC is refused on an asynchronous device"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "mmap", file = "f", map = "m", offset = 0, len = 4096, kind = "sync", expect = [
      { when = { device = "virtio-pmem" }, errno = "EOPNOTSUPP" },
      { when = { device = ["nvdimm-4k", "nvdimm-mem"], kernel = "<6.2" }, errno = "EINVAL" },
      { ok = true },
  ] },
]
xfail = [{ when = { device = "!nvdimm" }, reason = "r", link = "https://x", step = 2, errno = "EIO" }]

[[case]]
id = "nvdimms-only"
summary = "runs on the NVDIMM kinds alone"
requires = { device = ["nvdimm", "nvdimm-mem", "nvdimm-4k"] }
steps = [{ op = "create", file = "f" }]

[[case]]
id = "cut"
summary = "a power cut"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "power_cut" },
  { op = "read", file = "f", offset = 0, len = 4096, expect = { content = "a" } },
]
"#;

fn resolved(c: &Case, kernel: KernelVersion, device: Device) -> Resolution {
    resolve(c, kernel, device, None).unwrap()
}

#[test]
fn the_device_picks_the_expectation_and_the_xfail() {
    let s = parse_ok(DEVICES);
    let new = KernelVersion(6, 12, 117);
    let mmap = |device, kernel| match resolved(&s.cases[0], kernel, device) {
        Resolution::Run { spec, xfail } => (spec.steps[1].expect.outcome.clone(), xfail.is_some()),
        Resolution::Skip(r) => panic!("skipped: {r}"),
    };
    assert_eq!(mmap(Device::Nvdimm, new), (Outcome::Ok, false));
    assert_eq!(mmap(Device::VirtioPmem, new), (Outcome::Errno("EOPNOTSUPP".into()), true));
    assert_eq!(mmap(Device::Memmap, new), (Outcome::Ok, true));
    // Both conditions of an alternative must hold.
    assert_eq!(mmap(Device::Nvdimm4k, new), (Outcome::Ok, true));
    let old = KernelVersion(6, 1, 192);
    assert_eq!(mmap(Device::Nvdimm4k, old), (Outcome::Errno("EINVAL".into()), true));
    assert_eq!(mmap(Device::Nvdimm, old), (Outcome::Ok, false));
}

#[test]
fn a_case_for_other_devices_or_a_power_cut_on_ram_is_skipped_with_the_reason() {
    let s = parse_ok(DEVICES);
    let k = KernelVersion(6, 12, 117);
    assert!(matches!(resolved(&s.cases[1], k, Device::NvdimmMem), Resolution::Run { .. }));
    assert_eq!(
        resolved(&s.cases[1], k, Device::VirtioPmem),
        Resolution::Skip(
            "needs a device other than virtio-pmem and memmap, this run's is virtio-pmem".into()
        )
    );
    assert!(matches!(resolved(&s.cases[2], k, Device::VirtioPmem), Resolution::Run { .. }));
    let mut all_but = s.cases[1].clone();
    all_but.requires_device = Device::ALL.into_iter().filter(|d| *d != Device::Memmap).collect();
    assert_eq!(
        resolved(&all_but, k, Device::Memmap),
        Resolution::Skip("needs a device other than memmap, this run's is memmap".into())
    );
    let Resolution::Skip(why) = resolved(&s.cases[2], k, Device::Memmap) else { panic!() };
    assert!(why.starts_with("cuts the power, and the memmap device is guest RAM"), "{why}");
}

#[test]
fn map_sync_success_on_an_asynchronous_device_is_refused_before_a_boot() {
    let text = r#"
format = 1
name = "demo"
summary = "s"

[[case]]
id = "c"
summary = "MAP_SYNC expected to work everywhere"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "mmap", file = "f", map = "m", offset = 0, len = 4096, kind = "sync" },
]
"#;
    let s = parse_ok(text);
    let e = resolve(&s.cases[0], KernelVersion(6, 12, 117), Device::VirtioPmem, None).unwrap_err();
    assert!(e.starts_with("demo.toml:"), "{e}");
    assert!(e.contains("MAP_SYNC) cannot succeed on virtio-pmem"), "{e}");
    assert!(e.contains("requires = { device = \"!virtio-pmem\" }"), "{e}");
    assert!(matches!(
        resolve(&s.cases[0], KernelVersion(6, 12, 117), Device::Memmap, None).unwrap(),
        Resolution::Run { .. }
    ));
}

#[test]
fn device_names_are_checked_where_they_are_written() {
    let case = |cond: &str| {
        format!(
            "format = 1\nname = \"d\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\n{cond}"
        )
    };
    let e = errors(&case(
        "steps = [{ op = \"create\", file = \"f\", expect = [{ when = { device = \"pmem\" }, ok = true }, { ok = true }] }]",
    ));
    assert_eq!(
        e,
        ["bad.toml:7:10: when unknown device \"pmem\": use one of nvdimm, nvdimm-mem, \
          nvdimm-4k, virtio-pmem, memmap"]
    );
    let e = errors(&case(
        "requires = { device = [\"nvdimm\", \"!memmap\"] }\nsteps = [{ op = \"create\", file = \"f\" }]",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("requires device = [\"nvdimm\", \"!memmap\"]: list the devices"),
        "{e:?}"
    );
    let e = errors(&case(
        "requires = { device = \"nvdimm-2m\" }\nsteps = [{ op = \"create\", file = \"f\" }]",
    ));
    assert!(e[0].starts_with("bad.toml:7:12: requires unknown device \"nvdimm-2m\""), "{e:?}");
}

/// Each bad input gives file:line:column and says what is allowed.
#[test]
fn errors_name_the_place_and_the_fix() {
    let table: &[(&str, &str, &str)] = &[
        ("name = \"demo\"", "name = \"demo\"\nextra = 1", "bad.toml:4:1: unknown field `extra`"),
        // GOOD starts with an empty line: `format` is on line 2, its value at column 10.
        ("format = 1", "format = 2", "bad.toml:2:10: format = 2: this daxtest reads format 1"),
        ("name = \"demo\"", "name = \"Demo!\"", "name = \"Demo!\": use lower-case letters"),
        (
            "op = \"statx\"",
            "op = \"stax\"",
            ":24:3: step op = \"stax\": unknown variant `stax`, expected one of",
        ),
        (
            "len = 4096, pattern",
            "lenght = 4096, pattern",
            ":23:3: step op = \"write\": unknown field `lenght`",
        ),
        (
            "errno = \"EOPNOTSUPP\"",
            "errno = \"ENOTREAL\"",
            ":25:3: expect: errno = \"ENOTREAL\": not an errno name",
        ),
        (
            "dax = \"${new}\"",
            "dax = \"${old}\"",
            "variable ${old} is not defined for this matrix cell (defined: new)",
        ),
        ("dax = \"${new}\"", "dax = \"yes\"", "dax = \"yes\": write \"on\" or \"off\""),
        ("dax = \"${new}\"", "content = \"a\"", "op statx cannot observe \"every byte 'a'\""),
        (
            "{ ok = true },",
            "",
            ":25:3: no expectation of this step applies here: add one without `when`",
        ),
        (
            "kernel = \">=6.2\"",
            "kernel = \"new\"",
            ":35:12: \"new\" is not a kernel version condition",
        ),
        (
            "id = \"new-kernels-only\"",
            "id = \"new-file\"",
            ":32:1: case id \"new-file\" appears twice in this file",
        ),
        (
            "mount = [\"dax=always\"] }",
            "mount = [\"noatime\"] }",
            "mount option \"noatime\" has no dax=...: say dax=always",
        ),
        (
            "steps = [{ op = \"create\", file = \"f\" }]",
            "steps = []",
            ":37:9: steps = []: a case without steps checks nothing and always passes",
        ),
        (
            "[vars.mount.\"dax=never\"]",
            "[vars.mount.\"dax=sometimes\"]",
            "[vars.mount.\"dax=sometimes\"]: \"dax=sometimes\" is not in matrix.mount",
        ),
    ];
    for (from, to, want) in table {
        assert!(GOOD.contains(from), "test table: {from:?} not in GOOD");
        let bad = GOOD.replacen(from, to, 1);
        let errs = errors(&bad);
        assert!(errs.iter().any(|e| e.contains(want)), "want {want:?} in {errs:#?}");
    }
}

#[test]
fn names_must_exist_while_they_are_used() {
    let steps = |s: &str| {
        format!(
            "format = 1\nname = \"u\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\nsteps = [\n{s}\n]\n"
        )
    };
    let e = errors(&steps(
        "{ op = \"mmap\", file = \"f\", map = \"m\", offset = 0, len = 4096, kind = \"shared\" },\n\
         { op = \"munmap\", map = \"m\" },\n\
         { op = \"store\", map = \"m\", offset = 0, len = 1, pattern = \"x\" },",
    ));
    assert!(
        e[0].starts_with("bad.toml:10:1: store uses mapping \"m\", which no earlier step opened"),
        "{e:?}"
    );
    let e = errors(&steps(
        "{ op = \"fiemap\", file = \"f\", offset = 0, len = 0, expect = { extents = \"unchanged\", since = \"before\" } },",
    ));
    assert!(
        e[0].contains("uses saved extent map \"before\", which no earlier step opened"),
        "{e:?}"
    );
    let e = errors(&steps("{ op = \"close\", handle = \"h\" },"));
    assert!(e[0].contains("close uses handle \"h\""), "{e:?}");
}

/// Accesses through a mapping stay inside it; the race needs a slot and a shared mapping.
#[test]
fn mappings_serve_what_they_cover() {
    let case = |kind: &str, len: u64, step: &str| {
        format!(
            "format = 1\nname = \"u\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\n\
             steps = [\n\
             {{ op = \"mmap\", file = \"f\", map = \"m\", offset = 4096, len = {len}, \
             kind = \"{kind}\" }},\n{step},\n]\n"
        )
    };
    let load = |offset: u64, len: u64| {
        format!("{{ op = \"load\", map = \"m\", offset = {offset}, len = {len} }}")
    };
    // Offsets are into the mapping, whatever its offset in the file.
    parse_ok(&case("shared", 8192, &load(4096, 4096)));
    let e = errors(&case("shared", 8192, &load(4096, 4097)));
    assert_eq!(
        e,
        ["bad.toml:9:1: load offset 4096 + len 4097 runs past the end of mapping \"m\" (8192 \
          bytes, mmapped at line 8): keep offset + len within its len, or mmap more"]
    );
    let race = "{ op = \"race_store_clone\", map = \"m\", file = \"f\", rounds = 2 }";
    parse_ok(&case("shared", 512, race));
    parse_ok(&case("sync", 512, race));
    assert!(errors(&case("shared", 511, race))[0].contains("is 511 bytes: mmap at least 512"));
    let e = errors(&case("private", 4096, race));
    assert!(e[0].contains("race_store_clone needs a shared mapping: mapping \"m\""), "{e:?}");
}

/// A file with one case whose first step maps 8 KiB of `f` as `m` (shared), then `steps`.
fn one_mapping_case(steps: &str) -> String {
    format!(
        "format = 1\nname = \"u\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\n\
         steps = [\n\
         {{ op = \"mmap\", file = \"f\", map = \"m\", offset = 0, len = 8192, \
         kind = \"shared\" }},\n{steps}\n]\n"
    )
}

/// A poison goes through a live mapping, one page inside it; its SIGBUS may name the siginfo,
/// and a later use of the mapping it killed is refused.
#[test]
fn poison_and_siginfo_expectations() {
    let case = one_mapping_case;
    let poison = |offset: u64, expect: &str| {
        format!("{{ op = \"poison\", map = \"m\", offset = {offset}, expect = {expect} }},")
    };
    let s = parse_ok(&case(&poison(
        4096,
        "{ signal = \"SIGBUS\", si_code = \"BUS_MCEERR_AO\", si_addr_lsb = 21 }",
    )));
    let want = Expect {
        si_code: Some("BUS_MCEERR_AO".into()),
        si_addr_lsb: Some(21),
        ..o(Outcome::Signal("SIGBUS".into()))
    };
    assert_eq!(expectations(&s.cases[0], KernelVersion(6, 12, 117))[1], want);
    let refused = |steps: &str, want: &str| {
        let e = errors(&case(steps));
        assert!(e.iter().any(|e| e.contains(want)), "want {want:?} in {e:#?}");
    };
    refused(&poison(8192, "{ ok = true }"), "poison offset 8192 + len 4096 runs past the end");
    refused(
        &poison(0, "{ signal = \"SIGBUS\", si_code = \"BUS_MCEERR\" }"),
        "si_code = \"BUS_MCEERR\": a SIGBUS carries one of BUS_ADRALN",
    );
    refused(
        &poison(0, "{ signal = \"SIGBUS\", si_addr_lsb = 13 }"),
        "si_addr_lsb = 13: the kernel reports",
    );
    refused(
        &poison(0, "{ signal = \"SIGSEGV\", si_code = \"BUS_ADRERR\" }"),
        "si_code = \"BUS_ADRERR\": a SIGSEGV carries one of SEGV_MAPERR, SEGV_ACCERR",
    );
    refused(
        &poison(0, "{ signal = \"SIGSEGV\", si_addr_lsb = 12 }"),
        "si_addr_lsb describes the siginfo of a SIGBUS, not killed by SIGSEGV",
    );
    let store = "{ op = \"store\", map = \"m\", offset = 0, len = 1, pattern = \"b\", \
                 expect = { signal = \"SIGSEGV\", si_code = \"SEGV_ACCERR\" } },";
    let s = parse_ok(&case(store));
    let want =
        Expect { si_code: Some("SEGV_ACCERR".into()), ..o(Outcome::Signal("SIGSEGV".into())) };
    assert_eq!(expectations(&s.cases[0], KernelVersion(6, 12, 117))[1], want);
    refused(
        &format!(
            "{}\n{{ op = \"load\", map = \"m\", offset = 0, len = 1 }},",
            poison(0, "{ signal = \"SIGBUS\" }")
        ),
        "load uses mapping \"m\", which no earlier step opened since the SIGBUS expected",
    );
    refused(
        "{ op = \"statx\", file = \"f\", expect = { signal = \"SIGBUS\" } },",
        "only store, load, store_profile, poison or exec can",
    );
}

#[test]
fn duplicate_ids_across_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.toml", "b.toml"] {
        std::fs::write(dir.path().join(name), GOOD).unwrap();
    }
    let files = find_files(&[dir.path().to_path_buf()]).unwrap();
    let (_, diags) = load_all(&files);
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(text.iter().any(|d| d.contains("scenario name \"demo\" is also used by")), "{text:?}");
    assert!(text
        .iter()
        .any(|d| d.contains("case id demo/new-file/xfs/dax=always is also made by")));
}

#[test]
fn filters_are_substrings_or_globs() {
    let sel = Selection { files: vec![], filters: vec!["reflink/*/xfs".into()] };
    assert!(sel.matches("reflink/clone/xfs/dax=always"));
    assert!(!sel.matches("dax-flag/clone/xfs"));
    let sel = Selection { files: vec![], filters: vec!["dax=inode".into()] };
    assert!(sel.matches("dax-flag/x/xfs/dax=inode"));
    assert!(Selection { files: vec![], filters: vec![] }.matches("anything"));
}

#[test]
fn the_project_scenarios_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = find_files(&[root.join(SCENARIO_DIR)]).unwrap();
    let (_, diags) = load_all(&files);
    assert!(
        diags.is_empty(),
        "{}",
        diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
    );
}

/// A success the kernel cannot give is refused only in the matrix cells where the alternative
/// that applies there says ok (some kernel reaching it is enough).
#[test]
fn impossible_successes_are_refused_only_where_they_apply() {
    let case = |matrix: &str, step: &str| {
        format!(
            "format = 1\nname = \"i\"\nsummary = \"s\"\n[matrix]\n{matrix}\n[[case]]\nid = \"c\"\n\
             summary = \"s\"\nsteps = [\n  {{ op = \"create\", file = \"f\" }},\n  {step},\n]\n"
        )
    };
    let both = "fs = [\"xfs\", \"ext4\"]";
    let mounts = "mount = [\"dax=always\", \"dax=inode\", \"dax=never\"]";
    let clone = |expect: &str| {
        case(both, &format!("{{ op = \"clone\", src = \"f\", dst = \"g\"{expect} }}"))
    };
    let sync = |expect: &str| {
        case(
            mounts,
            &format!(
                "{{ op = \"mmap\", file = \"f\", map = \"m\", offset = 0, len = 4096, \
                 kind = \"sync\"{expect} }}"
            ),
        )
    };
    // Accepted: the alternative for ext4 / dax=never names the errno.
    parse_ok(&clone(
        ", expect = [{ when = { fs = \"ext4\" }, errno = \"EOPNOTSUPP\" }, { ok = true }]",
    ));
    parse_ok(&sync(
        ", expect = [{ when = { mount = \"dax=never\" }, errno = \"EOPNOTSUPP\" }, { ok = true }]",
    ));
    // Accepted: ok on ext4 is unreachable behind an alternative without kernel conditions.
    parse_ok(&clone(", expect = [{ errno = \"EOPNOTSUPP\" }, { ok = true }]"));
    let refused = [
        (clone(""), "bad.toml:11:3: clone cannot succeed on ext4"),
        // Only old kernels get the errno: a new one reaches { ok = true } on ext4.
        (
            clone(
                ", expect = [{ when = { fs = \"ext4\", kernel = \"<6.2\" }, \
                 errno = \"EOPNOTSUPP\" }, \
                 { ok = true }]",
            ),
            "bad.toml:11:3: clone cannot succeed on ext4",
        ),
        // The errno is for xfs; ext4 falls through to ok.
        (
            clone(", expect = [{ when = { fs = \"xfs\" }, errno = \"EINVAL\" }, { ok = true }]"),
            "clone cannot succeed on ext4",
        ),
        (sync(""), "bad.toml:11:3: mmap kind = \"sync\" (MAP_SYNC) cannot succeed under dax=never"),
        (
            sync(
                ", expect = [{ when = { mount = \"dax=inode\" }, errno = \"EOPNOTSUPP\" }, \
                 { ok = true }]",
            ),
            "cannot succeed under dax=never",
        ),
        (
            case(
                both,
                "{ op = \"mmap\", file = \"f\", map = \"m\", offset = 0, len = 4096, \
                 kind = \"shared\" },\n  \
                 { op = \"race_store_clone\", map = \"m\", file = \"f\", rounds = 2 }",
            ),
            "bad.toml:12:3: race_store_clone cannot succeed on ext4",
        ),
    ];
    for (text, want) in &refused {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "one cell is impossible: {errs:#?}");
        assert!(errs[0].contains(want), "want {want:?} in {errs:#?}");
    }
}

#[test]
fn patterns_and_timeouts_are_placed_where_they_are_written() {
    let text =
        "format = 1\nname = \"p\"\nsummary = \"s\"\n[kernel_log]\nbenign = [\"ok\", \"a(b\"]\n\
                [timeout]\nstep_s = 0\n[[case]]\nid = \"c\"\nsummary = \"s\"\n\
                timeout = { case_s = 0 }\nkernel_log = { expected = [\"x[\"] }\n\
                steps = [{ op = \"create\", file = \"f\" }]\n";
    assert_eq!(
        errors(text)
            .iter()
            .map(|e| e.split(" is not").next().unwrap().split(": give").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "bad.toml:5:17: kernel_log.benign pattern \"a(b\"",
            "bad.toml:7:10: timeout step_s = 0",
            "bad.toml:11:22: timeout case_s = 0",
            "bad.toml:12:28: kernel_log.expected pattern \"x[\"",
        ]
    );
}

#[test]
fn paths_are_checked_and_loaded_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.toml");
    std::fs::write(&f, GOOD).unwrap();
    let files = find_files(&[dir.path().to_path_buf(), f.clone()]).unwrap();
    assert_eq!(files, std::slice::from_ref(&f));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for bad in [empty, dir.path().join("missing.toml")] {
        let e = find_files(&[bad]).unwrap_err();
        assert!(e.downcast_ref::<crate::exit::InputError>().is_some(), "exit status 2: {e}");
    }
}

/// A power cut kills the VM: the case is cut into parts at it, on the VM that is up (the one
/// booted after the cut goes on for the next cases).
#[test]
fn a_power_cut_runs_in_parts() {
    let s = parse_ok(
        r#"
format = 1
name = "cut"
summary = "s"

[[case]]
id = "a"
summary = "s"
steps = [
  { op = "write", file = "f", offset = 0, len = 4096, pattern = "a" },
  { op = "power_cut" },
  { op = "read", file = "f", offset = 0, len = 4096, expect = { content = "a" } },
]

[[case]]
id = "b"
summary = "s"
steps = [{ op = "create", file = "f" }]
"#,
    );
    assert!(!s.cases[0].fresh_vm);
    let Ok(Resolution::Run { spec, .. }) =
        resolve(&s.cases[0], KernelVersion::parse("6.12").unwrap(), Device::Nvdimm, None)
    else {
        panic!("the case runs on 6.12")
    };
    let parts = crate::run::plan::power_cut_parts(&spec);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].cut_at_end && !parts[0].after_cut);
    assert_eq!(parts[0].steps.len(), 1);
    assert!(!parts[1].cut_at_end && parts[1].after_cut);
    assert_eq!(parts[1].steps[0].op, Op::PowerCut);
    assert_eq!(parts[1].steps.len(), 2);
    // One part, as it always was, without a cut.
    let one = daxtest_proto::case::CaseSpec { steps: parts[0].steps.clone(), ..*spec.clone() };
    let whole = crate::run::plan::power_cut_parts(&one);
    assert_eq!(whole.len(), 1);
    assert!(!whole[0].cut_at_end && !whole[0].after_cut);
}

/// A store_loop runs until a power_cut that says what it may lose; `lost` goes nowhere else.
#[test]
fn a_store_loop_ends_in_a_power_cut_that_counts_its_records() {
    let case = |steps: &str| {
        format!(
            "format = 1\nname = \"u\"\nsummary = \"s\"\n[[case]]\nid = \"c\"\nsummary = \"s\"\n\
             steps = [\n\
             {{ op = \"mmap\", file = \"f\", map = \"m\", offset = 0, len = 4096, kind = \"sync\" }},\n\
             {steps}\n]\n"
        )
    };
    let looped = "{ op = \"store_loop\", map = \"m\" },";
    let s =
        parse_ok(&case(&format!("{looped}\n{{ op = \"power_cut\", expect = {{ lost = 0 }} }},")));
    assert_eq!(s.cases[0].steps[2].expect[0].1.outcome, Outcome::Lost(Some(0)));
    let s = parse_ok(&case(&format!(
        "{looped}\n{{ op = \"power_cut\", expect = {{ lost = \"any\" }} }},"
    )));
    assert_eq!(s.cases[0].steps[2].expect[0].1.outcome, Outcome::Lost(None));
    let e = errors(&case(&format!("{looped}\n{{ op = \"power_cut\" }},")));
    assert!(e[0].contains("say what it may lose"), "{e:?}");
    let e = errors(&case(looped));
    assert!(e[0].contains("runs until the power is cut: end the case with"), "{e:?}");
    let e = errors(&case("{ op = \"power_cut\", expect = { lost = 0 } },"));
    assert!(e[0].contains("lost counts the records of a store_loop"), "{e:?}");
    let e = errors(&case(
        "{ op = \"load\", map = \"m\", offset = 0, len = 8, expect = { lost = 0 } },",
    ));
    assert!(e[0].contains("op load cannot observe"), "{e:?}");
    let e = errors(&case(&format!(
        "{looped}\n{{ op = \"power_cut\", expect = {{ lost = \"some\" }} }},"
    )));
    assert!(e[0].contains("write a number of records"), "{e:?}");
}

/// A forked child's signal kills the child alone: the mapping stays for later steps. mprotect
/// read-only allows a store only where it expects SIGSEGV; mremap's len bounds later accesses.
#[test]
fn fork_mprotect_and_mremap_keep_track_of_the_mapping() {
    let case = one_mapping_case;
    parse_ok(&case(
        "{ op = \"mprotect\", map = \"m\", prot = \"read\" },\n\
         { op = \"store\", map = \"m\", offset = 0, len = 1, pattern = \"b\", fork = true, \
           expect = { signal = \"SIGSEGV\" } },\n\
         { op = \"mprotect\", map = \"m\", prot = \"read_write\" },\n\
         { op = \"store\", map = \"m\", offset = 0, len = 1, pattern = \"b\" },\n\
         { op = \"mremap\", map = \"m\", len = 16384 },\n\
         { op = \"load\", map = \"m\", offset = 12288, len = 4096 },",
    ));
    let e = errors(&case(
        "{ op = \"store\", map = \"m\", offset = 0, len = 1, pattern = \"b\", \
           expect = { signal = \"SIGSEGV\" } },\n\
         { op = \"load\", map = \"m\", offset = 0, len = 1 },",
    ));
    assert!(e.iter().any(|e| e.contains("since the SIGSEGV expected")), "{e:#?}");
    let e = errors(&case(
        "{ op = \"mremap\", map = \"m\", len = 4096 },\n\
         { op = \"load\", map = \"m\", offset = 4096, len = 1 },",
    ));
    assert!(
        e.iter().any(|e| e.contains("runs past the end of mapping \"m\" (4096 bytes")),
        "{e:#?}"
    );
}
