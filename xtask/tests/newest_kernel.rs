//! The newest kernel, Debian unstable's 7.2: fetched through daxtest's private apt source without
//! a change to the host's apt configuration or state, and usable as `--kernel DIR` once its
//! packages are unpacked into a usr-merged install root (usr/lib/modules/REL with vmlinuz and
//! config, no boot/ and no lib/), whose config has no CONFIG_LIBCRC32C (gone since 6.15).

mod common;

use common::{results, root, run, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The first test empties the cache entries the second one reads.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cache() -> PathBuf {
    root().join("target/daxtest/cache")
}

/// The unpacked 7.2 packages in the cache.
fn unpacked_7_2() -> Option<PathBuf> {
    std::fs::read_dir(cache().join("kernels"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("linux-image-7.2."))
}

/// Size, modification time and (for /etc/apt, which is small) content of every file under the
/// host's apt configuration, package lists and package cache.
fn host_apt() -> BTreeMap<PathBuf, (u64, SystemTime, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut dirs: Vec<PathBuf> =
        ["/etc/apt", "/var/lib/apt", "/var/cache/apt"].map(PathBuf::from).to_vec();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                dirs.push(e.path());
                continue;
            }
            let content = match e.path().starts_with("/etc/apt") {
                true => std::fs::read(e.path()).unwrap_or_default(),
                false => vec![],
            };
            files.insert(e.path(), (meta.len(), meta.modified().unwrap(), content));
        }
    }
    files
}

#[test]
fn the_unstable_kernel_comes_through_a_private_apt_source_and_the_hosts_apt_stays_as_it_was() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A real fetch: without the unpacked packages and the private lists of an earlier run.
    if let Some(old) = unpacked_7_2() {
        std::fs::remove_dir_all(old).unwrap();
    }
    let _ = std::fs::remove_dir_all(cache().join("apt"));
    let before = host_apt();
    let out = run(&["image", "--kernel", "debian:7.2"]);
    assert_eq!(out.status.code(), Some(0));
    let after = host_apt();
    let changed: Vec<&PathBuf> =
        before.keys().chain(after.keys()).filter(|p| before.get(*p) != after.get(*p)).collect();
    assert!(changed.is_empty(), "the host's apt files changed: {changed:?}");

    let stderr = text(&out.stderr);
    assert!(stderr.contains("from `deb [signed-by="), "{stderr}");
    assert!(stderr.contains("debian unstable main`"), "{stderr}");
    assert!(stderr.contains("is split into linux-base-7.2."), "{stderr}");
    // Its lists are daxtest's own.
    let lists: Vec<String> = std::fs::read_dir(cache().join("apt"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path().join("lists")).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(lists.iter().any(|l| l.contains("unstable") && l.contains("_Packages")), "{lists:?}");
    let root = unpacked_7_2().expect("the packages are unpacked").join("root");
    let release = std::fs::read_dir(root.join("usr/lib/modules")).unwrap().next().unwrap().unwrap();
    for f in ["vmlinuz", "config", "modules.dep"] {
        assert!(release.path().join(f).is_file(), "{f} in {}", release.path().display());
    }
}

/// Replaces a file that may be a hard link into the cache with new content.
fn rewrite(path: &Path, content: &str) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn a_usr_merged_install_root_of_the_7_2_packages_is_a_kernel_to_test() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(run(&["image", "--kernel", "debian:7.2"]).status.success());
    let packages = unpacked_7_2().unwrap().join("root");
    // A fixed path: the image built for it is reused by the next run of this test.
    let kroot = root().join("target/daxtest/tests/usr-merged-7.2");
    let _ = std::fs::remove_dir_all(&kroot);
    std::fs::create_dir_all(&kroot).unwrap();
    let copied = Command::new("cp")
        .args(["-al", &packages.join("usr").to_string_lossy(), &kroot.to_string_lossy()])
        .status()
        .unwrap();
    assert!(copied.success());
    assert!(!kroot.join("boot").exists() && !kroot.join("lib").exists());
    let modules = std::fs::read_dir(kroot.join("usr/lib/modules")).unwrap().next().unwrap();
    let modules = modules.unwrap().path();
    // As unpacked by hand: without the index Debian makes at install time (daxtest runs depmod).
    for index in ["modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin"] {
        std::fs::remove_file(modules.join(index)).unwrap();
    }
    let spec = kroot.to_string_lossy().into_owned();
    let config = modules.join("config");
    let text_of_config = std::fs::read_to_string(&config).unwrap();
    assert!(!text_of_config.contains("CONFIG_LIBCRC32C"), "7.2 has no LIBCRC32C");

    // Without FS_DAX it is refused before anything boots, naming the option.
    rewrite(&config, &text_of_config.replace("CONFIG_FS_DAX=y", "# CONFIG_FS_DAX is not set"));
    let out = run(&["test", "--kernel", &spec, "reflink"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lacks options daxtest needs (images/kernel.config, for 7.2.13)"));
    assert!(stderr.contains(": CONFIG_FS_DAX. "), "only FS_DAX is missing: {stderr}");
    assert!(!stderr.contains("ready in"), "nothing boots: {stderr}");

    // Its own config passes (LIBCRC32C is not asked of 7.2), and the cases pass on it.
    rewrite(&config, &text_of_config);
    let out = run(&["test", "--kernel", &spec, "reflink"]);
    assert_eq!(out.status.code(), Some(0));
    let results = results(&out);
    assert_eq!(results["kernels"][0]["kernel_release"], "7.2.13+deb14-amd64");
    let cases = results["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "{}", cases.len());
    assert!(cases.iter().all(|c| c["status"] == "pass"), "{cases:?}");
    assert!(modules.join("modules.dep").is_file(), "daxtest indexed the modules");
}
