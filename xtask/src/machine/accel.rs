//! Chooses KVM or TCG. /dev/kvm existing proves little: in nested virtualisation it can open and
//! still fail at run time ("KVM internal error", "failed to set MSR 0x10a"). So `auto` boots the
//! bare initramfs under KVM once and uses KVM only if that boot powers off cleanly. The verdict
//! is cached per QEMU version and host kernel.

use crate::machine::image::Image;
use crate::machine::qemu::{Accel, Qemu, QemuConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use xshell::Shell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    /// As `--accel` takes it.
    pub fn name(self) -> &'static str {
        match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Verdict {
    host: String,
    kvm_works: bool,
    reason: String,
}

/// The accelerator to use and a line saying why.
pub fn resolve(
    sh: &Shell,
    choice: AccelChoice,
    image: &Image,
    cache: &Path,
) -> anyhow::Result<(Accel, String)> {
    if choice == AccelChoice::Tcg {
        return Ok((Accel::Tcg, "tcg (asked for)".into()));
    }
    let host = format!(
        "{} / {}",
        crate::machine::qemu::version(sh)?,
        rustix::system::uname().release().to_string_lossy()
    );
    let path = cache.join("accel.json");
    let cached = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Verdict>(&t).ok())
        .filter(|v| v.host == host);
    let verdict = match cached {
        Some(v) => v,
        None => {
            let (kvm_works, reason) = probe_kvm(image, cache)?;
            let v = Verdict { host, kvm_works, reason };
            std::fs::create_dir_all(cache)?;
            // Atomic: a concurrent run reads either no verdict or a whole one.
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
            std::fs::rename(&tmp, &path)?;
            v
        }
    };
    match (choice, verdict.kvm_works) {
        (_, true) => Ok((Accel::Kvm, "kvm".into())),
        (AccelChoice::Kvm, false) => anyhow::bail!(
            "--accel kvm: KVM does not work here: {} (verdict cached in {}; delete it to test again)",
            verdict.reason,
            path.display()
        ),
        _ => Ok((Accel::Tcg, format!("tcg (KVM unusable: {})", verdict.reason))),
    }
}

fn probe_kvm(image: &Image, cache: &Path) -> anyhow::Result<(bool, String)> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Ok((false, format!("/dev/kvm: {e}")));
    }
    eprintln!("daxtest: checking whether KVM works here (once; the verdict is cached)");
    std::fs::create_dir_all(cache)?;
    // Named with our pid last: another run's sweep removes only the probe directories of runs
    // that are gone (a name without a pid read as a dead run's, and went under a live probe).
    let dir = tempfile::Builder::new()
        .prefix("kvm-probe-")
        .suffix(&format!("-{}", std::process::id()))
        .tempdir_in(cache)?;
    let serial = dir.path().join("serial.log");
    let config = QemuConfig {
        accel: Accel::Kvm,
        memory_mib: 256,
        cpus: 1,
        device: daxtest_proto::Device::Nvdimm,
        nvdimms: vec![],
        kernel: image.kernel.vmlinuz.clone(),
        initrd: image.bare_initramfs(),
        payload: None,
        append: "console=ttyS0 panic=-1 quiet".into(),
        serial_log: serial.clone(),
        monitor: None,
        ssh_port: None,
        incoming: false,
    };
    let mut qemu = Qemu::spawn(&config, &dir.path().join("stderr.log"))?;
    let status = qemu.wait_timeout(Duration::from_secs(60))?;
    let serial = std::fs::read_to_string(&serial).unwrap_or_default();
    let stderr = qemu.stderr();
    Ok(match status {
        Some(s) if s.success() && serial.contains("reboot: Power down") => {
            (true, "a test boot under KVM powered off cleanly".into())
        }
        Some(s) => {
            (false, format!("a test boot under KVM failed ({s}): {}", last_line(&stderr, &serial)))
        }
        None => (
            false,
            format!(
                "a test boot under KVM did not finish in 60 s: {}",
                last_line(&stderr, &serial)
            ),
        ),
    })
}

fn last_line(stderr: &str, serial: &str) -> String {
    stderr
        .lines()
        .chain(serial.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}
