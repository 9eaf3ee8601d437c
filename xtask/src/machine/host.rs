//! Host packages: finds which of the recipe's host and guest files are missing and installs their
//! Debian packages when running as root on Debian/Ubuntu, or says the exact command to run.
//! Installing never removes a package: on a fresh machine, installing qemu-system-x86 from
//! Debian 12 would remove the qemu-utils 10.0 from bookworm-backports that the machine came with
//! (it breaks qemu-system-common << 8.0). apt's plan is simulated first; a plan that removes
//! anything is tried again with the release's backports preferred (what such a package came
//! from), and one that still removes something is left to the user, with the command that would
//! carry it out.

use crate::machine::apt::Apt;
use crate::recipe::{HostFile, Recipe};
use anyhow::{bail, Context};
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

/// The command for a user to install `packages`; `--no-remove` makes apt fail rather than remove
/// a package to make room for them.
pub fn install_command(packages: &[String]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends --no-remove {}",
        packages.join(" ")
    )
}

/// The packages a simulated `apt-get -s install` (in the C locale) would remove: its `Remv NAME
/// [VERSION]` lines.
pub fn removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Why daxtest stops instead of installing `packages`: apt would remove `removed` for them. The
/// command given has no `-y`: apt lists what it removes and asks.
fn removal_refused(packages: &[String], removed: &[String]) -> String {
    format!(
        "installing the missing host packages {} would remove {} (apt-get -s install says so); \
         daxtest never removes a package. Decide yourself, e.g. with:\n  \
         sudo apt-get install --no-install-recommends {}\n\
         (apt lists what it removes and asks), or install the packages another way",
        packages.join(" "),
        removed.join(" "),
        packages.join(" ")
    )
}

/// apt's plan for installing `packages` (`apt-get -s install`, in the C locale so that its lines
/// can be read).
fn simulate(
    sh: &Shell,
    apt: &Apt,
    target: &[String],
    packages: &[String],
) -> anyhow::Result<String> {
    let o = apt.options();
    cmd!(sh, "apt-get {o...} -s install --no-install-recommends {target...} {packages...}")
        .env("LC_ALL", "C")
        .read()
        .with_context(|| format!("simulating the install from {}", apt.describe()))
}

/// The host's release's backports beside its sources, when installing `packages` from there
/// (`-t CODENAME-backports`) removes nothing: the lists' directory, the apt and the suite. The
/// lists are fetched into a directory of their own: the host's apt configuration is not changed.
fn backports(
    sh: &Shell,
    packages: &[String],
) -> anyhow::Result<Option<(tempfile::TempDir, Apt, String)>> {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let Some(codename) = codename(&release) else { return Ok(None) };
    let suite = format!("{codename}-backports");
    let dir = tempfile::Builder::new().prefix("daxtest-apt-").tempdir()?;
    let apt = Apt::beside_host(dir.path(), &backports_line(&suite));
    apt.update(sh)?;
    let plan = simulate(sh, &apt, &["-t".into(), suite.clone()], packages)?;
    Ok(removals(&plan).is_empty().then_some((dir, apt, suite)))
}

/// A Debian release's codename from /etc/os-release (`VERSION_CODENAME=bookworm`); None on
/// another distribution, whose backports, if any, live elsewhere.
pub fn codename(os_release: &str) -> Option<&str> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().trim_matches('"'))
    };
    (field("ID=")? == "debian")
        .then(|| field("VERSION_CODENAME="))
        .flatten()
        .filter(|c| !c.is_empty())
}

/// The sources.list line of a Debian backports suite.
fn backports_line(suite: &str) -> String {
    format!(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian {suite} main"
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
    let packages = &missing;
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
    let removed = removals(&simulate(sh, &Apt::Host, &[], packages)?);
    // `_lists`, the backports' lists and downloads, stays until the install is done.
    let (apt, target, _lists) = match removed.is_empty() {
        true => (Apt::Host, vec![], None),
        false => match backports(sh, packages) {
            Ok(Some((dir, apt, suite))) => {
                eprintln!(
                    "daxtest: from the host's sources they would remove {}; from {suite} they \
                     remove nothing: installing from there",
                    removed.join(" ")
                );
                (apt, vec!["-t".to_string(), suite], Some(dir))
            }
            Ok(None) => bail!(
                "{}\n(nor did the release's backports offer them without a removal)",
                removal_refused(&missing, &removed)
            ),
            Err(e) => bail!("{}\n({e:#})", removal_refused(&missing, &removed)),
        },
    };
    let o = apt.options();
    // --no-remove as well: the plan may change between the simulation and the install.
    let flags = ["-y", "-q", "--no-install-recommends", "--no-remove"];
    cmd!(sh, "apt-get {o...} install {flags...} {target...} {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\napt-get did not install {} (with --no-remove it fails rather than remove a \
                 package); see its messages above, then install them yourself, e.g. with:\n  \
                 sudo apt-get install --no-install-recommends {}",
                missing.join(" "),
                missing.join(" ")
            )
        })?;
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
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends --no-remove \
             apkg zpkg"
        );
    }

    /// `LC_ALL=C apt-get -s install --no-install-recommends chrony` on Debian 12 with
    /// systemd-timesyncd installed (chrony conflicts with it).
    const REMOVING: &str = "\
Reading package lists...
Building dependency tree...
Reading state information...
Suggested packages:
  dnsutils networkd-dispatcher
The following packages will be REMOVED:
  systemd-timesyncd
The following NEW packages will be installed:
  chrony
0 upgraded, 1 newly installed, 1 to remove and 124 not upgraded.
Remv systemd-timesyncd [252.39-1~deb12u2]
Inst chrony (4.3-2+deb12u3 Debian:12.15/oldstable [amd64])
Conf chrony (4.3-2+deb12u3 Debian:12.15/oldstable [amd64])
";

    #[test]
    fn a_simulated_removal_is_found_and_refused_with_the_command() {
        assert_eq!(removals(REMOVING), vec!["systemd-timesyncd"]);
        let msg = removal_refused(&["chrony".into()], &removals(REMOVING));
        assert!(msg.contains("would remove systemd-timesyncd"), "{msg}");
        assert!(msg.contains("\n  sudo apt-get install --no-install-recommends chrony\n"), "{msg}");
        // The same plan without the conflict removes nothing.
        let plain: String = REMOVING.lines().filter(|l| !l.starts_with("Remv")).collect();
        assert!(removals(&plain).is_empty());
        // Several removals, each named once by its package (not its version).
        let two = "Remv qemu-utils [1:9.2+ds-1]\nRemv qemu-block-extra [1:9.2+ds-1]\nInst x (1)\n";
        assert_eq!(removals(two), vec!["qemu-utils", "qemu-block-extra"]);
    }

    #[test]
    fn the_codename_is_debians_only() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                        VERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(codename(bookworm), Some("bookworm"));
        assert_eq!(
            backports_line("bookworm-backports").split(' ').nth(3),
            Some("bookworm-backports")
        );
        // Ubuntu's backports are a suite of its own archive, not Debian's.
        assert_eq!(codename("ID=ubuntu\nVERSION_CODENAME=noble\n"), None);
        assert_eq!(codename("ID=debian\nVERSION_CODENAME=\n"), None);
        assert_eq!(codename(""), None);
    }
}
