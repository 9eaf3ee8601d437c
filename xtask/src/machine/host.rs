//! Host packages: finds which of the recipe's host and guest files are missing and installs their
//! Debian packages when running as root on Debian/Ubuntu, or says the exact command to run.

use crate::recipe::{HostFile, Recipe};
use anyhow::bail;
use std::collections::BTreeSet;
use std::path::Path;
use xshell::{cmd, Shell};

/// Packages providing the files that are absent, sorted and without repeats.
pub fn missing_packages<'a>(files: impl IntoIterator<Item = &'a HostFile>) -> Vec<String> {
    files
        .into_iter()
        .filter(|f| !f.path.exists())
        .map(|f| f.package.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub fn install_command(packages: &[String]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Makes sure every host and guest tool of the recipe is present.
pub fn ensure(sh: &Shell, recipe: &Recipe) -> anyhow::Result<()> {
    let all: Vec<HostFile> = recipe
        .host_tools
        .iter()
        .chain(&recipe.guest_tools)
        .chain(&recipe.guest_files)
        .cloned()
        .collect();
    ensure_files(sh, &all)
}

/// Makes sure every file is present: installs the missing ones' packages when running as root
/// on Debian/Ubuntu, or fails with the command that does.
pub fn ensure_files(sh: &Shell, files: &[HostFile]) -> anyhow::Result<()> {
    let missing = missing_packages(files);
    let packages = missing.clone();
    if missing.is_empty() {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").exists();
    if !debian || !rustix::process::geteuid().is_root() {
        bail!(
            "missing host packages: {}\nInstall them with:\n  {}",
            missing.join(" "),
            install_command(&missing)
        );
    }
    eprintln!("daxtest: installing missing host packages: {}", missing.join(" "));
    cmd!(sh, "apt-get update -q").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    cmd!(sh, "apt-get install -y -q --no-install-recommends {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let still = missing_packages(files);
    if !still.is_empty() {
        bail!("installed {} but files of {} are still missing", missing.join(" "), still.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn f(path: &str, package: &str) -> HostFile {
        HostFile { path: PathBuf::from(path), package: package.into(), boot: false }
    }

    #[test]
    fn only_absent_files_count_and_packages_are_deduplicated() {
        let files = [
            f("/", "present"),
            f("/nonexistent/daxtest/a", "zpkg"),
            f("/nonexistent/daxtest/b", "apkg"),
            f("/nonexistent/daxtest/c", "zpkg"),
        ];
        assert_eq!(missing_packages(&files), vec!["apkg", "zpkg"]);
        assert_eq!(
            install_command(&missing_packages(&files)),
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends apkg zpkg"
        );
    }
}
