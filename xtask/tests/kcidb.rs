//! `report kcidb` validated by KCIDB's own schema: PyPI's `kcidb-io` (pinned to the release
//! whose LATEST the report writes), installed once into a venv under target/. A run with every
//! status on two kernels (results.json as the report tests' golden file has it, with a second
//! kernel, a case no VM ran and a repeated case) becomes a document the validator accepts, with
//! the statuses, paths, ids, logs and known bug expected; a document with a status KCIDB does not
//! have is refused, so the validation can fail. Boots nothing.

mod common;

use common::{root, run, text};
use daxtest::recipe::HostFile;
use daxtest::report::kcidb::KCIDB_IO;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Validates stdin's document against the pinned schema version, exactly (not an older one).
const VALIDATE: &str = r#"import json, sys, kcidb_io
v = kcidb_io.schema.LATEST
assert (v.major, v.minor) == (int(sys.argv[1]), int(sys.argv[2])), f'kcidb-io LATEST is {v}'
try:
    v.validate_exactly(json.load(sys.stdin))
except Exception as e:
    where = '/'.join(map(str, getattr(e, 'absolute_path', [])))
    message = getattr(e, 'message', e)
    sys.exit(f'invalid at {where}: {message}')
print('valid')"#;

/// The venv's python with kcidb-io installed: made once (a marker says it is complete).
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = root().join(format!("target/kcidb-io-{KCIDB_IO}"));
        let py = venv.join("bin/python");
        let done = venv.join("installed");
        if done.is_file() {
            return py;
        }
        let _ = std::fs::remove_dir_all(&venv);
        if !make_venv(&venv) {
            // Debian's python3 needs python3-venv (ensurepip) for `-m venv`.
            let minor = cmd_out("python3", &["-c", "import sys; print(sys.version_info[1])"]);
            let ensurepip = format!("/usr/lib/python3.{}/ensurepip/__init__.py", minor.trim());
            let need =
                [HostFile { path: ensurepip.into(), package: "python3-venv".into(), boot: false }];
            daxtest::machine::host::ensure_files(&xshell::Shell::new().unwrap(), &need).unwrap();
            let _ = std::fs::remove_dir_all(&venv);
            assert!(make_venv(&venv), "python3 -m venv {} failed", venv.display());
        }
        let pip = venv.join("bin/pip");
        let pkg = format!("kcidb-io=={KCIDB_IO}");
        let st = Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check", &pkg])
            .status()
            .unwrap();
        assert!(st.success(), "pip install {pkg} failed");
        std::fs::write(&done, &pkg).unwrap();
        py
    })
}

fn make_venv(dir: &Path) -> bool {
    Command::new("python3").args(["-m", "venv"]).arg(dir).status().is_ok_and(|s| s.success())
}

fn cmd_out(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(out.status.success(), "{prog} {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The validator's verdict: Ok, or its message.
fn validate(doc: &Value) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(python())
        .args(["-c", VALIDATE, "5", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(doc.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.success() && text(&out.stdout).trim() == "valid" {
        true => Ok(()),
        false => Err(format!("{}{}", text(&out.stdout), text(&out.stderr))),
    }
}

const K1: &str = "6.12.117+deb12-amd64";
const K2: &str = "6.1.0-55-amd64";

/// A run directory with every status on two kernels, its kernel logs written.
fn fixture(dir: &Path, run_id: &str) {
    let golden = root().join("xtask/src/report/golden/results.json");
    let mut r: Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    r["run_id"] = json!(run_id);
    let cases = r["cases"].as_array_mut().unwrap();
    // A case no VM ran (the VM did not boot twice), and run 2 of a repeated case.
    let mut missed = cases.iter().find(|c| c["status"] == "error").unwrap().clone();
    missed["id"] = json!("demo/never-ran/xfs/dax=always");
    missed["vm"] = Value::Null;
    missed["kernel_log_path"] = json!("kernel-logs/demo__never-ran__xfs__dax=always.log");
    let mut repeat = cases[0].clone();
    repeat["id"] = json!(format!("{}#2", cases[0]["id"].as_str().unwrap()));
    cases.push(missed);
    cases.push(repeat);
    // The second kernel: the same cases, passing, in its own directory.
    let mut k2 = r["kernels"][0].clone();
    k2["kernel_id"] = json!(format!("debian:6.1 (linux-image-{K2}=6.1.192-1)"));
    k2["kernel_release"] = json!(K2);
    k2["dir"] = json!(K2);
    r["kernels"][0]["dir"] = json!(K1);
    r["kernels"].as_array_mut().unwrap().push(k2);
    let mut all = Vec::new();
    for k in [K1, K2] {
        for c in r["cases"].as_array().unwrap() {
            let mut c = c.clone();
            c["kernel"] = json!(k);
            c["kernel_log_path"] = json!(format!("{k}/{}", c["kernel_log_path"].as_str().unwrap()));
            if k == K2 && c["status"] != "skip" {
                c["status"] = json!("pass");
                c["message"] = json!("");
                c["problems"] = json!([]);
            }
            if c["vm"].is_number() {
                let log = dir.join(c["kernel_log_path"].as_str().unwrap());
                std::fs::create_dir_all(log.parent().unwrap()).unwrap();
                std::fs::write(&log, format!("[    1.0] the log of {}\n", c["id"])).unwrap();
            }
            all.push(c);
        }
    }
    r["cases"] = json!(all);
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&r).unwrap()).unwrap();
}

fn kcidb(dir: &Path, extra: &[&str]) -> Value {
    let out = dir.join("kcidb.json");
    let mut args = vec!["report", "kcidb", dir.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn test_of<'a>(doc: &'a Value, kernel: &str, case: &str) -> &'a Value {
    let id = format!("daxtest:20261124-150000-1/{kernel}/{case}");
    doc["tests"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap()
}

#[test]
fn every_status_validates_and_maps() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path(), "20261124-150000-1");
    let doc = kcidb(tmp.path(), &[]);
    validate(&doc).unwrap();

    assert_eq!(doc["version"], json!({ "major": 5, "minor": 3 }));
    assert_eq!(doc["checkouts"].as_array().unwrap().len(), 2);
    assert_eq!(doc["builds"][1]["architecture"], "x86_64");
    assert_eq!(doc["builds"][1]["config_name"], "debian amd64");
    assert_eq!(doc["checkouts"][1]["misc"]["version"], "6.1.192-1");
    let tests = doc["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 18);
    let ids: BTreeSet<&str> = tests.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), tests.len(), "test ids are unique");

    let expect = [
        ("demo/flag/xfs/dax=inode", "PASS", "daxtest.demo.flag.xfs.dax_inode"),
        ("demo/clone/xfs/dax=always", "FAIL", "daxtest.demo.clone.xfs.dax_always"),
        ("demo/new/xfs/dax=always", "SKIP", "daxtest.demo.new.xfs.dax_always"),
        ("demo/old-bug/xfs/dax=always", "FAIL", "daxtest.demo.old-bug.xfs.dax_always"),
        ("demo/panic/xfs/dax=always", "FAIL", "daxtest.demo.panic.xfs.dax_always"),
        ("demo/stuck/xfs/dax=always", "FAIL", "daxtest.demo.stuck.xfs.dax_always"),
        ("demo/setup/ext4/dax=always", "ERROR", "daxtest.demo.setup.ext4.dax_always"),
        ("demo/never-ran/xfs/dax=always", "MISS", "daxtest.demo.never-ran.xfs.dax_always"),
        ("demo/flag/xfs/dax=inode#2", "PASS", "daxtest.demo.flag.xfs.dax_inode"),
    ];
    for (case, status, path) in expect {
        let t = test_of(&doc, K1, case);
        assert_eq!((t["status"].as_str(), t["path"].as_str()), (Some(status), Some(path)), "{t}");
        assert_eq!(t["build_id"], format!("daxtest:20261124-150000-1/{K1}"));
    }
    assert_eq!(test_of(&doc, K2, "demo/clone/xfs/dax=always")["status"], "PASS");
    assert_eq!(test_of(&doc, K1, "demo/flag/xfs/dax=inode#2")["misc"]["repeat"], 2);

    // A crash and a hang: FAIL with the case's log and what kind.
    for (case, kind) in
        [("demo/panic/xfs/dax=always", "crash"), ("demo/stuck/xfs/dax=always", "hang")]
    {
        let t = test_of(&doc, K1, case);
        assert_eq!(t["misc"]["daxtest_status"], kind);
        assert!(t["misc"]["failure"].as_str().unwrap().starts_with(kind), "{t}");
        let url = t["log_url"].as_str().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let log = format!("file://{}/{}/kernel-logs/", dir.display(), K1.replace('+', "%2B"));
        assert!(url.starts_with(&log), "{url}");
        assert!(t["log_excerpt"].as_str().unwrap().contains("the log of"), "{t}");
    }
    // Nothing ran: no log.
    assert!(test_of(&doc, K1, "demo/never-ran/xfs/dax=always").get("log_url").is_none());

    // The xfail: a known issue (its reason, its link) and the incident linking the test.
    let t = test_of(&doc, K1, "demo/old-bug/xfs/dax=always");
    let issue = &doc["issues"][0];
    assert_eq!(doc["issues"].as_array().unwrap().len(), 1);
    assert_eq!(issue["comment"], "WARN in dax_insert_entry");
    assert_eq!(issue["report_url"], "https://example.org");
    assert_eq!(t["misc"]["xfail"]["issue_id"], issue["id"]);
    let incident = &doc["incidents"][0];
    assert_eq!((&incident["test_id"], &incident["issue_id"]), (&t["id"], &issue["id"]));
    assert_eq!(incident["present"], true);

    // The same run gives the same document; another origin and published logs.
    assert_eq!(kcidb(tmp.path(), &[]), doc);
    let other =
        kcidb(tmp.path(), &["--origin", "my_ci", "--log-url-base", "https://ci.example/a/"]);
    validate(&other).unwrap();
    let t = &other["tests"][4];
    assert!(t["id"].as_str().unwrap().starts_with("my_ci:20261124-150000-1/"));
    assert_eq!(t["origin"], "my_ci");
    assert_eq!(
        t["log_url"],
        "https://ci.example/a/6.12.117%2Bdeb12-amd64/kernel-logs/demo__panic__xfs__dax%3Dalways.log"
    );
    let bad = run(&["report", "kcidb", tmp.path().to_str().unwrap(), "--origin", "My-CI"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("KCIDB origins are lower-case letters, digits and _"));
}

#[test]
fn a_merged_run_gets_ids_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        fixture(d, "merge-of-2");
    }
    // Another merge of two runs: the same id in results.json, other results.
    let path = b.join("results.json");
    let changed = std::fs::read_to_string(&path).unwrap().replace("61.0", "62.0");
    std::fs::write(&path, changed).unwrap();
    let (da, db) = (kcidb(&a, &[]), kcidb(&b, &[]));
    validate(&da).unwrap();
    let id = |d: &Value| d["checkouts"][0]["id"].as_str().unwrap().to_string();
    assert!(id(&da).starts_with("daxtest:merge-of-2-"), "{}", id(&da));
    assert_ne!(id(&da), id(&db));
    assert!(da["checkouts"][0].get("start_time").is_none(), "a merged run's id has no time");
}

#[test]
fn the_validator_refuses_a_broken_document() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path(), "20261124-150000-1");
    let doc = kcidb(tmp.path(), &[]);
    validate(&doc).unwrap();
    // daxtest's status name where KCIDB has none.
    let mut wrong = doc.clone();
    wrong["tests"][3]["status"] = json!("XFAIL");
    let e = validate(&wrong).unwrap_err();
    assert!(e.contains("'XFAIL' is not one of"), "{e}");
    // A case id as the path: '=' and '/' are not path characters.
    let mut wrong = doc.clone();
    wrong["tests"][0]["path"] = json!("daxtest.demo/flag/xfs/dax=inode");
    assert!(validate(&wrong).unwrap_err().contains("does not match"));
    // A log as a path relative to the run directory: not a URI (hence file:// URLs).
    let mut wrong = doc.clone();
    wrong["tests"][4]["log_url"] = json!("kernel-logs/demo__panic__xfs__dax=always.log");
    assert!(validate(&wrong).unwrap_err().contains("is not a 'uri'"));
    // An id without its origin.
    let mut wrong = doc;
    wrong["builds"][0]["id"] = json!("20261124-150000-1");
    assert!(validate(&wrong).unwrap_err().contains("does not match"));
}
