//! `report kcidb`: a finished run as KCIDB I/O data, schema v5.3 (the newest that PyPI's
//! `kcidb-io` 141 validates, `kcidb_io.schema.LATEST`), for submission to KernelCI's common
//! database. Reads results.json (and the kernel logs it names) only.
//!
//! What the objects are here:
//! - a checkout per kernel: the kernel source under test (Debian's `linux` source at the
//!   package's version, or the tree of a self-built kernel; daxtest records no git commit, so
//!   none is claimed);
//! - a build per kernel: the binary package or the build tree, x86_64;
//! - a test per case per kernel, its `path` `daxtest.<case id, one component per part>`;
//! - for an xfail, an issue (the known bug: its reason and link) and an incident linking the
//!   test to it: KCIDB's way of saying "a known bug" (v5 turned the old `waived` flag into
//!   exactly such an issue and incident, kcidb_io/schema/v05_00.py `_inherit`).
//!
//! Ids are `ORIGIN:RUN/KERNEL[/CASE]`: the same run gives the same ids, and two runs never share
//! one (RUN is the run id, a UTC time and a process id; a merged run's id names no time, so a
//! hash of its results.json is added to it).

use super::results::{self, CaseEntry, KernelEntry};
use crate::run::events::{KnownBug, Problem, Status};
use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The schema version written, and the `kcidb-io` release whose `LATEST` it is (the tests and
/// .ci/run validate with that release).
pub const MAJOR: u32 = 5;
pub const MINOR: u32 = 3;
pub const KCIDB_IO: &str = "141";
pub const DEFAULT_ORIGIN: &str = "daxtest";
/// The schema's maxLength of a `log_excerpt`.
const EXCERPT_MAX: usize = 16384;
/// Log lines in an excerpt taken from the end of a kernel log.
const EXCERPT_TAIL_LINES: usize = 60;

pub struct Options {
    /// The CI system's name in KCIDB: `[a-z0-9_]+`.
    pub origin: String,
    /// Where the run directory is published (a CI artifact URL): log URLs are this plus the
    /// log's path in the run directory. Without it, `file://` URLs of the logs on this machine.
    pub log_url_base: Option<String>,
}

/// The KCIDB document of the run in `run_dir`.
pub fn document(run_dir: &Path, opts: &Options) -> anyhow::Result<Value> {
    if !valid_origin(&opts.origin) {
        bail!("origin {:?}: KCIDB origins are lower-case letters, digits and _", opts.origin);
    }
    let results = results::read(run_dir)?;
    let run = run_key(&results.run_id, &serde_json::to_vec(&results)?);
    let start = start_time(&results.run_id);
    let dir = run_dir.canonicalize().with_context(|| format!("{}", run_dir.display()))?;
    let logs = Logs { dir: &dir, base: opts.log_url_base.as_deref() };
    let origin = opts.origin.as_str();

    let mut kernels: BTreeMap<&str, (String, &KernelEntry)> = BTreeMap::new();
    let (mut checkouts, mut builds) = (Vec::new(), Vec::new());
    for k in &results.kernels {
        let id = format!("{origin}:{run}/{}", k.kernel_release);
        if kernels.insert(&k.kernel_release, (id.clone(), k)).is_some() {
            bail!(
                "results.json names two kernels with release {}: their cases cannot be told apart",
                k.kernel_release
            );
        }
        checkouts.push(checkout(&id, origin, k, start.as_deref()));
        builds.push(build(&id, origin, k, start.as_deref()));
    }

    let (mut tests, mut issues, mut incidents) = (Vec::new(), BTreeMap::new(), Vec::new());
    // Per kernel: each path and the case (without `#k`) it was made from.
    let mut paths: BTreeMap<(&str, String), &str> = BTreeMap::new();
    for c in &results.cases {
        let Some((build_id, k)) = kernels.get(c.kernel.as_str()) else {
            bail!("case {} ran on kernel {}, which results.json does not list", c.id, c.kernel);
        };
        let (base, _) = split_repeat(&c.id);
        let path = test_path(base);
        if let Some(other) = paths.insert((&c.kernel, path.clone()), base) {
            if other != base {
                bail!("cases {other} and {base} have the same KCIDB path {path}");
            }
        }
        let test_id = format!("{build_id}/{}", c.id);
        let mut t = test(&test_id, build_id, origin, c, k, &path, &logs, start.as_deref());
        if c.status == Status::Xfail {
            let Some(KnownBug { reason, link }) = &c.known_bug else {
                bail!("case {} is an xfail without its known bug in results.json", c.id);
            };
            let issue_id = format!(
                "{origin}:known-bug-{}",
                crate::names::hash(format!("{reason}\0{link}").as_bytes())
            );
            t["misc"]["xfail"] = json!({ "reason": reason, "link": link, "issue_id": issue_id });
            issues
                .entry(issue_id.clone())
                .or_insert_with(|| issue(&issue_id, origin, reason, link));
            incidents.push(json!({
                "id": format!("{test_id}@{issue_id}"),
                "origin": origin,
                "issue_id": issue_id,
                "issue_version": 1,
                "test_id": test_id,
                "present": true,
                "comment": "daxtest xfail: failed as this known bug says it will",
            }));
        }
        tests.push(t);
    }
    Ok(json!({
        "version": { "major": MAJOR, "minor": MINOR },
        "checkouts": checkouts,
        "builds": builds,
        "tests": tests,
        "issues": issues.into_values().collect::<Vec<_>>(),
        "incidents": incidents,
    }))
}

/// KCIDB's status of a case, and why:
/// - pass → PASS, fail → FAIL;
/// - crash, hang → FAIL: the kernel panicked or stopped making progress under the test, which
///   is the tested code reported faulty (`misc.daxtest_status` says which, and the test carries
///   the case's kernel log);
/// - xfail → FAIL: the kernel did fail, as a known bug says it will. PASS would report the
///   kernel correct; KCIDB marks a known failure by linking it to an issue (see the module
///   comment), so consumers triage it as known rather than new;
/// - error → ERROR when a VM ran the case (the case could not be run or judged: its set-up
///   failed, the guest was lost; "the test didn't complete ... the status of the tested code is
///   unknown"), MISS when none did (the VM did not boot twice and the case was never started:
///   "the test didn't run due to a failure in the test harness");
/// - skip → SKIP: a requirement of the case is not met by this kernel ("not applicable").
pub fn status(s: Status, ran: bool) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail | Status::Crash | Status::Hang | Status::Xfail => "FAIL",
        Status::Error if ran => "ERROR",
        Status::Error => "MISS",
        Status::Skip => "SKIP",
    }
}

/// `daxtest.` and the case id's parts as path components: a KCIDB path component is
/// `[a-zA-Z0-9_-]+` (v5's test_path_re), so every other character (`=`, `.`, ...) becomes `_`,
/// and an empty part `_`. `reflink/x/xfs/dax=always` → `daxtest.reflink.x.xfs.dax_always`.
pub fn test_path(case_id: &str) -> String {
    let mut path = String::from("daxtest");
    for part in case_id.split('/') {
        path.push('.');
        match part.is_empty() {
            true => path.push('_'),
            false => path.push_str(&crate::names::safe(part, "-_")),
        }
    }
    path
}

/// `ID#k` (run k of `--repeat`) as `(ID, Some(k))`: the runs of a case share its path.
fn split_repeat(id: &str) -> (&str, Option<u64>) {
    match id.rsplit_once('#') {
        Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
            (base, k.parse().ok())
        }
        _ => (id, None),
    }
}

/// The origin pattern of the schema.
fn valid_origin(o: &str) -> bool {
    !o.is_empty() && o.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What makes the run's ids unique: its id when that holds its start time (`YYYYMMDD-HHMMSS-PID`,
/// or `.../KERNEL` for a kernel's share), else the id with a hash of the results (a merged run
/// is `merge-of-N`, the same for every merge of N runs).
fn run_key(run_id: &str, results_json: &[u8]) -> String {
    match start_time(run_id) {
        Some(_) => run_id.to_string(),
        None => format!("{run_id}-{}", crate::names::hash(results_json)),
    }
}

/// The run's start, from its id (`20261201-150610-23173` → `2026-12-01T15:06:10+00:00`): the
/// only time results.json records. None for an id that does not start with a time.
fn start_time(run_id: &str) -> Option<String> {
    if run_id.as_bytes().get(15) != Some(&b'-') {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(run_id.get(..15)?, super::RUN_ID_TIME).ok()?;
    Some(t.and_utc().format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
}

/// `debian:6.12 (linux-image-REL=VERSION)` → the package and its version.
fn debian_package(kernel_id: &str) -> Option<(&str, &str)> {
    let inner = kernel_id.strip_prefix("debian:")?.split_once(" (")?.1.strip_suffix(')')?;
    inner.split_once('=')
}

fn checkout(id: &str, origin: &str, k: &KernelEntry, start: Option<&str>) -> Value {
    let mut c = json!({ "id": id, "origin": origin, "valid": true });
    let misc = match debian_package(&k.kernel_id) {
        Some((package, version)) => {
            c["tree_name"] = json!("debian");
            c["comment"] = json!(format!("Debian's linux source, version {version}"));
            json!({ "kernel_spec": k.rerun.kernel_spec, "source_package": "linux", "version": version, "binary_package": package })
        }
        None => {
            c["comment"] = json!(text(&format!("kernel source of {}", k.kernel_id)));
            json!({ "kernel_spec": k.rerun.kernel_spec })
        }
    };
    c["misc"] = misc;
    if let Some(t) = start {
        c["start_time"] = json!(t);
    }
    c
}

fn build(id: &str, origin: &str, k: &KernelEntry, start: Option<&str>) -> Value {
    let mut b = json!({
        "id": id,
        "checkout_id": id,
        "origin": origin,
        "architecture": "x86_64",
        // It booted and ran cases, or failed to boot: either way the kernel was built.
        "status": "PASS",
        "misc": {
            "kernel_id": k.kernel_id,
            "kernel_release": k.kernel_release,
            "image_key": k.rerun.image_key,
        },
    });
    match debian_package(&k.kernel_id) {
        Some((package, version)) => {
            // Debian's flavour: the release after its version parts (`6.1.0-55-cloud-amd64`).
            let flavour: Vec<&str> = k
                .kernel_release
                .split('-')
                .skip_while(|p| p.starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            b["config_name"] = json!(format!("debian {}", flavour.join("-")));
            b["comment"] = json!(format!("Debian package {package}={version}"));
        }
        None => {
            b["comment"] = json!(text(&format!("a kernel built outside daxtest: {}", k.kernel_id)))
        }
    }
    if let Some(t) = start {
        b["start_time"] = json!(t);
    }
    b
}

/// Where the kernel logs are and how to name them as URLs.
struct Logs<'a> {
    dir: &'a Path,
    base: Option<&'a str>,
}

impl Logs<'_> {
    fn url(&self, rel: &Path) -> String {
        match self.base {
            Some(base) => {
                format!("{}/{}", base.trim_end_matches('/'), encode(&rel.to_string_lossy()))
            }
            None => format!("file://{}", encode(&self.dir.join(rel).to_string_lossy())),
        }
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters and `/`.
fn encode(path: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEPT: &AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
    utf8_percent_encode(path, KEPT).to_string()
}

#[allow(clippy::too_many_arguments)]
fn test(
    id: &str,
    build_id: &str,
    origin: &str,
    c: &CaseEntry,
    k: &KernelEntry,
    path: &str,
    logs: &Logs,
    start: Option<&str>,
) -> Value {
    let mut misc = Map::new();
    misc.insert("daxtest_status".into(), json!(c.status.name()));
    misc.insert("case".into(), json!(c.id));
    misc.insert("scenario_file".into(), json!(c.file));
    misc.insert("seed".into(), json!(c.seed.to_string()));
    if let (_, Some(k)) = split_repeat(&c.id) {
        misc.insert("repeat".into(), json!(k));
    }
    if !c.message.is_empty() {
        misc.insert("message".into(), json!(c.message));
    }
    if !c.measurements.is_empty() {
        misc.insert("measurements".into(), json!(c.measurements));
    }
    match c.status {
        Status::Crash => {
            misc.insert("failure".into(), json!("crash: the guest kernel panicked or oopsed"))
        }
        Status::Hang => {
            misc.insert("failure".into(), json!("hang: the case did not finish in time"))
        }
        Status::Fail if c.problems.iter().any(|p| matches!(p, Problem::UnexpectedPass { .. })) => {
            misc.insert("failure".into(), json!("passed where a known bug was expected (xfail)"))
        }
        _ => None,
    };
    let mut t = json!({
        "id": id,
        "build_id": build_id,
        "origin": origin,
        "path": path,
        "status": status(c.status, c.vm.is_some()),
        "duration": c.duration_s,
        "environment": environment(k, c.vm),
    });
    if !c.message.is_empty() {
        t["comment"] = json!(text(&c.message));
    }
    if let Some(s) = start {
        // results.json has no case start times: the run's.
        t["start_time"] = json!(s);
    }
    let log = logs.dir.join(&c.kernel_log_path);
    if c.vm.is_some() && log.is_file() {
        t["log_url"] = json!(logs.url(&c.kernel_log_path));
    }
    if let Some(e) = excerpt(c, &log) {
        t["log_excerpt"] = json!(e);
    }
    t["misc"] = Value::Object(misc);
    t
}

/// The kernel lines of a case that did not pass (the panic and its back-trace, the warning, the
/// hung-task report), or for a crash, hang or error that has none, the end of its kernel log.
fn excerpt(c: &CaseEntry, log: &Path) -> Option<String> {
    if matches!(c.status, Status::Pass | Status::Skip) {
        return None;
    }
    let lines: Vec<&str> = c
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::KernelLine { line } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    let found = match lines.is_empty() {
        false => lines.join("\n") + "\n",
        true if matches!(c.status, Status::Crash | Status::Hang | Status::Error) => {
            let all = std::fs::read(log).ok()?;
            let all = String::from_utf8_lossy(&all);
            let tail: Vec<&str> = all.lines().rev().take(EXCERPT_TAIL_LINES).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if tail.is_empty() {
                return None;
            }
            return Some(last_chars(&text(&(tail.join("\n") + "\n")), EXCERPT_MAX));
        }
        true => return None,
    };
    Some(first_chars(&text(&found), EXCERPT_MAX))
}

fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

/// KCIDB strings outside `misc` may not hold NUL (a serial console can).
fn text(s: &str) -> String {
    s.replace('\0', "")
}

/// The VM the case ran in: QEMU, its accelerator, and the emulated NVDIMMs in fsdax mode.
fn environment(k: &KernelEntry, vm: Option<usize>) -> Value {
    let r = &k.rerun;
    let mut misc = json!({
        "accel": k.accel,
        "qemu_version": k.qemu_version,
        "cpus": r.cpus,
        "memory_mib": r.memory_mib,
        "device": r.device,
        "nvdimms": r.nvdimms,
        "nvdimm_size": r.nvdimm_size,
    });
    if let Some(line) = vm.and_then(|n| k.qemu_command_lines.get(n.wrapping_sub(1))) {
        misc["vm"] = json!(vm);
        misc["qemu_command_line"] = json!(line);
    }
    json!({
        "comment": text(&format!(
            "{} ({}), x86_64 guest, {} vCPUs, {} MiB, {}",
            k.qemu_version,
            k.accel.to_uppercase(),
            r.cpus,
            r.memory_mib,
            device_text(r.device, r.nvdimms, r.nvdimm_size)
        )),
        "misc": misc,
    })
}

/// `1 emulated NVDIMM of 1024 MiB in fsdax mode`, and the other kinds in their words.
fn device_text(device: daxtest_proto::Device, count: usize, size: u64) -> String {
    use daxtest_proto::Device;
    let s = if count == 1 { "" } else { "s" };
    let mib = size >> 20;
    match device {
        Device::Nvdimm | Device::NvdimmMem | Device::Nvdimm4k => {
            let how = device.describe().trim_start_matches("NVDIMM ");
            format!("{count} emulated NVDIMM{s} of {mib} MiB {how}")
        }
        _ => format!("{count} x {mib} MiB {}", device.describe()),
    }
}

fn issue(id: &str, origin: &str, reason: &str, link: &str) -> Value {
    let mut i = json!({
        "id": id,
        "version": 1,
        "origin": origin,
        "comment": text(reason),
        "culprit": { "code": true, "tool": false, "harness": false },
        "misc": { "link": link },
    });
    // The schema wants a URI; a scenario's link is free text.
    let url = (link.starts_with("https://") || link.starts_with("http://"))
        && !link.contains(|c: char| c.is_whitespace() || c.is_control());
    if url {
        i["report_url"] = json!(link);
    }
    i
}

/// Writes the document of `run_dir` to `out`, or to stdout when there is none.
pub fn write(run_dir: &Path, out: Option<&PathBuf>, opts: &Options) -> anyhow::Result<()> {
    let doc = document(run_dir, opts)?;
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kcidb() {
        let ran = |s| status(s, true);
        assert_eq!(ran(Status::Pass), "PASS");
        assert_eq!(ran(Status::Fail), "FAIL");
        assert_eq!(ran(Status::Crash), "FAIL");
        assert_eq!(ran(Status::Hang), "FAIL");
        assert_eq!(ran(Status::Xfail), "FAIL");
        assert_eq!(ran(Status::Error), "ERROR");
        assert_eq!(status(Status::Error, false), "MISS");
        assert_eq!(status(Status::Skip, false), "SKIP");
        // Every status has a KCIDB one, from the schema's enum.
        for s in Status::ALL {
            for r in [true, false] {
                assert!(["FAIL", "ERROR", "MISS", "PASS", "DONE", "SKIP"].contains(&status(s, r)));
            }
        }
    }

    #[test]
    fn paths_are_dotted_kcidb_components() {
        assert_eq!(
            test_path("power-loss/written-file-keeps-records-at-any-cut/xfs/dax=always"),
            "daxtest.power-loss.written-file-keeps-records-at-any-cut.xfs.dax_always"
        );
        assert_eq!(test_path("a.b//c d"), "daxtest.a_b._.c_d");
        let re = regex::Regex::new("^([a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*)?$").unwrap();
        for id in ["x/y=z/ü", "", "/", "a#1", "reflink/x/ext4/dax=never"] {
            assert!(re.is_match(&test_path(id)), "{id}: {}", test_path(id));
        }
        assert_eq!(split_repeat("a/b#12"), ("a/b", Some(12)));
        assert_eq!(split_repeat("a/b#"), ("a/b#", None));
        assert_eq!(split_repeat("a/b"), ("a/b", None));
    }

    #[test]
    fn run_ids_give_the_start_and_the_key() {
        assert_eq!(
            start_time("20261201-150610-23173").as_deref(),
            Some("2026-12-01T15:06:10+00:00")
        );
        assert_eq!(
            start_time("20261201-150610-23173/6.1.0-55-amd64").as_deref(),
            Some("2026-12-01T15:06:10+00:00")
        );
        assert_eq!(start_time("merge-of-2"), None);
        assert_eq!(run_key("20261201-150610-23173", b"x"), "20261201-150610-23173");
        assert_eq!(run_key("merge-of-2", b"a"), format!("merge-of-2-{}", crate::names::hash(b"a")));
        assert_ne!(run_key("merge-of-2", b"a"), run_key("merge-of-2", b"b"));
    }

    #[test]
    fn origins_and_urls() {
        assert!(valid_origin("daxtest") && valid_origin("my_ci2"));
        assert!(!valid_origin("") && !valid_origin("Dax") && !valid_origin("a-b"));
        assert_eq!(
            encode("kernel-logs/a__b__dax=always.log"),
            "kernel-logs/a__b__dax%3Dalways.log"
        );
        let logs = Logs { dir: Path::new("/r"), base: Some("https://ci.example/art/") };
        assert_eq!(logs.url(Path::new("k/x=y.log")), "https://ci.example/art/k/x%3Dy.log");
        let logs = Logs { dir: Path::new("/r un"), base: None };
        assert_eq!(logs.url(Path::new("x.log")), "file:///r%20un/x.log");
        assert_eq!(
            debian_package("debian:6.12 (linux-image-6.12.117+deb12-amd64=6.12.117-1~deb12u1)"),
            Some(("linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"))
        );
        assert_eq!(debian_package("/home/me/linux"), None);
    }
}
