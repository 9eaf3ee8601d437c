//! Makes every NVDIMM an fsdax device and proves that DAX works on it. A namespace in raw mode
//! is a block device too, but XFS then logs "DAX unsupported by block device. Turning off DAX"
//! and mounts without DAX, so the only trustworthy proof is a dax=always mount and statx.
//!
//! The proof uses a small ext4 (64 MiB, no journal) at the start of the device: both filesystems
//! ask the block device for its dax_device the same way, ext4 refuses dax=always without one, and
//! its module loads in a quarter of the time of xfs.ko, which keeps the proof off the boot's
//! critical path.

use super::latch::Latch;
use super::tool::tool;
use crate::stat::statx_dax;
use anyhow::{bail, Context};
use daxtest_proto::{DaxProof, PmemDevice};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The module chains the devices need (the others may still be loading while they appear).
pub const DEVICE_MODULES: &[&str] = &["nfit", "nd_pmem"];
/// What the proof's mount needs: its mkfs runs while ext4.ko (the largest boot module) loads.
pub const FS_MODULES: &[&str] = &["ext4"];

/// Waits until `count` pmem block devices exist; returns their names, pmem0 first.
pub fn wait_for_pmem(count: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("pmem{i}")).collect();
    let deadline = Instant::now() + timeout;
    for name in &names {
        // queue/dax, not just the device's directory: sysfs creates the directory first and the
        // queue attributes a moment later (a boot that read in between failed, rarely, in CI).
        while !Path::new("/sys/block").join(name).join("queue/dax").exists() {
            if Instant::now() > deadline {
                let present = std::fs::read_dir("/sys/bus/nd/devices")
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|e| format!("(none: {e})"));
                bail!("/dev/{name} did not appear within {timeout:?}; nd devices: {present}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(names)
}

/// `fs_ready` waits for the proof's filesystem module.
pub fn prepare_and_prove(
    name: &str,
    payload: &Latch,
    fs_ready: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<PmemDevice> {
    let formatted_now = ensure_fsdax(name, payload)?;
    let size_bytes = read_sys(&format!("/sys/block/{name}/size"))?
        .parse::<u64>()
        .context("block device size")?
        * 512;
    let dax_proof = prove(name, fs_ready);
    Ok(PmemDevice { name: name.to_string(), size_bytes, formatted_now, dax_proof })
}

/// Puts the namespace behind `name` in fsdax mode unless it already is (the host keeps backing
/// files that already hold the fsdax info block, which saves ndctl's seconds at every boot).
fn ensure_fsdax(name: &str, payload: &Latch) -> anyhow::Result<bool> {
    if queue_dax(name)? {
        return Ok(false);
    }
    let link = std::fs::read_link(format!("/sys/block/{name}/device"))
        .with_context(|| format!("/sys/block/{name}/device"))?;
    let namespace =
        link.file_name().context("device link without a name")?.to_string_lossy().into_owned();
    if !namespace.starts_with("namespace") {
        bail!("/dev/{name} sits on {namespace}, not a raw namespace, and has no DAX");
    }
    // ndctl lives on the payload disk.
    payload
        .wait()
        .map_err(|e| anyhow::anyhow!("ndctl is on the payload disk, which failed: {e}"))?;
    tool("ndctl", &["create-namespace", "--force", "--reconfig", &namespace, "--mode", "fsdax"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queue_dax(name).unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("/dev/{name} has no DAX 20 s after ndctl create-namespace -m fsdax");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(true)
}

fn queue_dax(name: &str) -> anyhow::Result<bool> {
    Ok(read_sys(&format!("/sys/block/{name}/queue/dax"))? == "1")
}

fn read_sys(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_string())
}

/// mkfs.ext4, mount -o dax=always, create a file, statx it. Leaves the device wiped.
fn prove(name: &str, fs_ready: &dyn Fn() -> anyhow::Result<()>) -> DaxProof {
    let mut result = DaxProof {
        filesystem: "ext4".into(),
        queue_dax: queue_dax(name).unwrap_or(false),
        mount_options: String::new(),
        statx_dax: false,
        ok: false,
        detail: String::new(),
    };
    match mount_and_stat(name, &mut result, fs_ready) {
        Ok(()) if !result.statx_dax => {
            result.detail = format!(
                "a file on ext4 mounted with dax=always has no STATX_ATTR_DAX (mount options: {})",
                result.mount_options
            )
        }
        Ok(()) => {
            result.ok = true;
            result.detail = "STATX_ATTR_DAX set on a file of a dax=always ext4".into();
        }
        Err(e) => result.detail = format!("{e:#}"),
    }
    result
}

fn mount_and_stat(
    name: &str,
    result: &mut DaxProof,
    fs_ready: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dev = format!("/dev/{name}");
    let dir = format!("/run/daxtest/proof-{name}");
    std::fs::create_dir_all(&dir)?;
    // Small and journal-less: formatting the whole device would cost a second under TCG.
    tool(
        "mkfs.ext4",
        &["-q", "-F", "-b", "4096", "-O", "^has_journal", "-E", "nodiscard", &dev, "64M"],
    )?;
    fs_ready().context("the modules the proof's mount needs")?;
    mount(dev.as_str(), dir.as_str(), "ext4", MountFlags::empty(), Some(c"dax=always"))
        .with_context(|| format!("mount -t ext4 -o dax=always {dev}"))?;
    let inner = (|| -> anyhow::Result<()> {
        result.mount_options = mount_options(&dir)?;
        let file = format!("{dir}/probe");
        std::fs::write(&file, b"daxtest")?;
        result.statx_dax = statx_dax(&file)?.unwrap_or(false);
        Ok(())
    })();
    unmount(dir.as_str(), UnmountFlags::empty()).with_context(|| format!("umount {dir}"))?;
    inner?;
    wipe(&dev)
}

/// The options column of /proc/mounts for the mount on `dir`.
fn mount_options(dir: &str) -> anyhow::Result<String> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[1] == dir)
        .map(|f| f[3].to_string())
        .with_context(|| format!("{dir} not in /proc/mounts"))
}

/// Zeroes the start of the device so the user finds a blank one (mkfs without -f would refuse):
/// the proof's 64 MiB ext4 has one block group, so no backup superblock lies beyond its first
/// blocks.
fn wipe(dev: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    f.write_all(&vec![0u8; 64 << 10])?;
    f.sync_all()?;
    Ok(())
}
