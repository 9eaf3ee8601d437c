//! Makes every NVDIMM an fsdax device and proves that DAX works on it. A namespace in raw mode
//! is a block device too, but XFS then logs "DAX unsupported by block device. Turning off DAX"
//! and mounts without DAX, so the only trustworthy proof is a dax=always mount and statx.
//!
//! The proof uses a one-file erofs at the start of the device: erofs asks the block device for its
//! dax_device the way ext4 and XFS do (fs_dax_get_by_bdev), turns DAX off without one (so statx
//! tells), and sets S_DAX on a plain regular file (fs/erofs/super.c, inode.c). Its module is a
//! tenth of the ext4 chain (ext4, jbd2, mbcache, crc16), which under TCG took 0.4 s on the boot's
//! path to ready; ext4 now loads in the background with xfs.

use super::latch::Latch;
use super::tool::tool;
use crate::stat::statx_dax;
use anyhow::{bail, Context};
use daxtest_proto::{DaxProof, PmemDevice};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The module chains the devices need (the others may still be loading while they appear).
pub const DEVICE_MODULES: &[&str] = &["nfit", "nd_pmem"];
/// What the proof's mount needs: the image is written while the module loads.
pub const FS_MODULES: &[&str] = &["erofs"];

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

/// The image's one-file erofs written to the device, mount -o dax=always, statx the file.
/// Leaves the device's start as it found it.
pub fn prove(name: &str, fs_ready: &dyn Fn() -> anyhow::Result<()>) -> DaxProof {
    let mut result = DaxProof {
        filesystem: "erofs".into(),
        queue_dax: queue_dax(name).unwrap_or(false),
        mount_options: String::new(),
        statx_dax: false,
        ok: false,
        detail: String::new(),
    };
    match mount_and_stat(name, &mut result, fs_ready) {
        Ok(()) if !result.statx_dax => {
            result.detail = format!(
                "a file on erofs mounted with dax=always has no STATX_ATTR_DAX (mount options: {})",
                result.mount_options
            )
        }
        Ok(()) => {
            result.ok = true;
            result.detail = "STATX_ATTR_DAX set on a file of a dax=always erofs".into();
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
    // Made on the host (a plain 4 KiB file: only a block-mapped one gets S_DAX), written through
    // the block device and flushed, so that DAX reads of the file find it on the media.
    let image = std::fs::read(daxtest_proto::DAX_PROOF_IMAGE_PATH)
        .with_context(|| format!("reading {}", daxtest_proto::DAX_PROOF_IMAGE_PATH))?;
    // What the proof overwrites is given back afterwards: zeroes on a new backing file, the
    // filesystem a power cut left on one booted again (a power_cut step).
    let found = read_start(&dev).with_context(|| format!("reading the start of {dev}"))?;
    write_start(&dev, &image).with_context(|| format!("writing the proof's erofs to {dev}"))?;
    fs_ready().context("the modules the proof's mount needs")?;
    mount(dev.as_str(), dir.as_str(), "erofs", MountFlags::RDONLY, Some(c"dax=always"))
        .with_context(|| format!("mount -t erofs -o dax=always {dev}"))?;
    let inner = (|| -> anyhow::Result<()> {
        result.mount_options = mount_options(&dir)?;
        let file = format!("{dir}/probe");
        result.statx_dax = statx_dax(&file)?.unwrap_or(false);
        Ok(())
    })();
    unmount(dir.as_str(), UnmountFlags::empty()).with_context(|| format!("umount {dir}"))?;
    inner?;
    write_start(&dev, &found)
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

/// The start of the device, as long as what the proof may write there: the proof's erofs is
/// 8 KiB (superblock, metadata, the file's block), well inside it.
fn read_start(dev: &str) -> anyhow::Result<Vec<u8>> {
    let mut head = vec![0u8; 64 << 10];
    std::fs::File::open(dev)?.read_exact(&mut head)?;
    Ok(head)
}

/// Writes `bytes` at the start of the device and flushes them to the media.
fn write_start(dev: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
