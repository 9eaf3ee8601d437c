//! Makes every NVDIMM an fsdax device of the layout its kind asks for, checks that every pmem
//! device is what its kind says (sysfs: the bus's provider, the namespace's mode, map and
//! alignment), and proves that DAX works on it. A namespace in raw mode
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
use daxtest_proto::{DaxProof, Device, DeviceLayout, PmemDevice};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The module chains a kind of device needs (the others may still be loading while it appears):
/// the driver that registers its nvdimm bus, and the pmem block driver.
pub fn device_modules(device: Device) -> [&'static str; 2] {
    [device.bus_module(), "nd_pmem"]
}
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
    device: Device,
    payload: &Latch,
    fs_ready: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<PmemDevice> {
    let formatted_now = match device.fsdax_layout() {
        Some(_) => ensure_fsdax(name, device, payload)?,
        // virtio-pmem and e820 regions map their pages (ND_REGION_PAGEMAP: drivers/nvdimm/
        // virtio_pmem.c, e820.c), so the pmem driver gives their raw namespace DAX as it is.
        None => false,
    };
    let layout = layout(name)?;
    if let Some(wrong) = mismatch(device, &layout, queue_dax(name)?) {
        bail!("/dev/{name} is not the {device} it should be: {wrong}");
    }
    let size_bytes = read_sys(&format!("/sys/block/{name}/size"))?
        .parse::<u64>()
        .context("block device size")?
        * 512;
    let dax_proof = prove(name, fs_ready);
    Ok(PmemDevice { name: name.to_string(), size_bytes, formatted_now, dax_proof, layout })
}

/// How `layout` differs from what `device` is (with DAX on: `queue_dax`), or `None`.
pub fn mismatch(device: Device, layout: &DeviceLayout, queue_dax: bool) -> Option<String> {
    let (mode, map, align) = match device.fsdax_layout() {
        Some((map, align)) => ("fsdax", map, align),
        None => ("raw", "mem", 0),
    };
    let mut wrong = Vec::new();
    if layout.provider != device.provider() {
        wrong.push(format!("bus provider {:?}, not {:?}", layout.provider, device.provider()));
    }
    if layout.mode != mode {
        wrong.push(format!("namespace mode {}, not {mode}", layout.mode));
    }
    if layout.map != map {
        wrong.push(format!("struct pages in {:?}, not {map}", layout.map));
    }
    if layout.align != align {
        wrong.push(format!("alignment {}, not {align}", layout.align));
    }
    if !queue_dax {
        wrong.push("queue/dax is 0".into());
    }
    match wrong.is_empty() {
        true => None,
        false => Some(format!("{} ({})", wrong.join(", "), layout.region)),
    }
}

/// What sysfs says of the device behind `name`: /sys/block/NAME/device is the pfn device of an
/// fsdax namespace (drivers/nvdimm/pfn_devs.c: `mode` ram or pmem, `align`) or the namespace
/// itself; its parent is the region, whose parent is the bus with its `provider`.
fn layout(name: &str) -> anyhow::Result<DeviceLayout> {
    let dev = std::fs::canonicalize(format!("/sys/block/{name}/device"))
        .with_context(|| format!("/sys/block/{name}/device"))?;
    let region = dev.parent().context("a pmem device without a region")?;
    let bus = region.parent().context("a region without a bus")?;
    let attr = |dir: &Path, a: &str| read_sys(&dir.join(a).to_string_lossy());
    let node = dev.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let (mode, map, align) = if node.starts_with("pfn") {
        let map = match attr(&dev, "mode")?.as_str() {
            "ram" => "mem".to_string(),
            "pmem" => "dev".to_string(),
            other => other.to_string(),
        };
        let align = attr(&dev, "align")?.parse().context("the pfn device's align")?;
        ("fsdax".to_string(), map, align)
    } else if node.starts_with("namespace") {
        // A raw namespace's pages are mapped (in RAM) when it has DAX at all.
        let map = if queue_dax(name)? { "mem" } else { "none" };
        ("raw".to_string(), map.to_string(), 0)
    } else {
        (node.clone(), String::new(), 0)
    };
    Ok(DeviceLayout {
        provider: attr(bus, "provider")?,
        mode,
        map,
        align,
        region: region.to_string_lossy().into_owned(),
    })
}

/// Puts the namespace behind `name` in fsdax mode with the kind's map and alignment unless it
/// already is (the host keeps backing files that already hold the info block of that kind, which
/// saves ndctl's seconds at every boot). `true` when ndctl ran.
fn ensure_fsdax(name: &str, device: Device, payload: &Latch) -> anyhow::Result<bool> {
    let (map, align) = device.fsdax_layout().context("not an NVDIMM kind")?;
    if queue_dax(name)? && mismatch(device, &layout(name)?, true).is_none() {
        return Ok(false);
    }
    let dev = std::fs::canonicalize(format!("/sys/block/{name}/device"))
        .with_context(|| format!("/sys/block/{name}/device"))?;
    let node =
        dev.file_name().context("device link without a name")?.to_string_lossy().into_owned();
    let namespace = if node.starts_with("namespace") {
        node
    } else {
        // An fsdax namespace of another layout: its pfn device names the namespace.
        read_sys(&dev.join("namespace").to_string_lossy())?
    };
    if !namespace.starts_with("namespace") {
        bail!("/dev/{name} sits on {namespace}, not a namespace ndctl can reconfigure");
    }
    // ndctl lives on the payload disk.
    payload
        .wait()
        .map_err(|e| anyhow::anyhow!("ndctl is on the payload disk, which failed: {e}"))?;
    let align = align.to_string();
    tool(
        "ndctl",
        &[
            "create-namespace",
            "--force",
            "--reconfig",
            &namespace,
            "--mode",
            "fsdax",
            "--map",
            map,
            "--align",
            &align,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queue_dax(name).unwrap_or(false) {
        if Instant::now() > deadline {
            bail!(
                "/dev/{name} has no DAX 20 s after ndctl create-namespace -m fsdax -M {map} \
                 --align {align}"
            );
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
    open_when_live(dev)?.read_exact(&mut head)?;
    Ok(head)
}

/// Opens the device once its disk is live: sysfs and the node appear while the driver still
/// probes, and an open in between fails with ENXIO (seen once in a CI boot of 6.1).
fn open_when_live(dev: &str) -> std::io::Result<std::fs::File> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::File::open(dev) {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

/// Writes `bytes` at the start of the device and flushes them to the media.
fn write_start(dev: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(provider: &str, mode: &str, map: &str, align: u64) -> DeviceLayout {
        DeviceLayout {
            provider: provider.into(),
            mode: mode.into(),
            map: map.into(),
            align,
            region: "/sys/devices/x/ndbus0/region0".into(),
        }
    }

    #[test]
    fn each_kind_accepts_its_own_layout_only() {
        let nfit_dev = layout("ACPI.NFIT", "fsdax", "dev", 2 << 20);
        assert_eq!(mismatch(Device::Nvdimm, &nfit_dev, true), None);
        let nfit_mem = layout("ACPI.NFIT", "fsdax", "mem", 2 << 20);
        assert_eq!(mismatch(Device::NvdimmMem, &nfit_mem, true), None);
        assert_eq!(
            mismatch(Device::Nvdimm, &nfit_mem, true).unwrap(),
            "struct pages in \"mem\", not dev (/sys/devices/x/ndbus0/region0)"
        );
        let small = layout("ACPI.NFIT", "fsdax", "dev", 4096);
        assert_eq!(mismatch(Device::Nvdimm4k, &small, true), None);
        assert!(mismatch(Device::Nvdimm, &small, true)
            .unwrap()
            .contains("alignment 4096, not 2097152"));
        let virtio = layout("virtio-pmem", "raw", "mem", 0);
        assert_eq!(mismatch(Device::VirtioPmem, &virtio, true), None);
        let e = mismatch(Device::Memmap, &virtio, true).unwrap();
        assert!(e.starts_with("bus provider \"virtio-pmem\", not \"e820\""), "{e}");
        let e820 = layout("e820", "raw", "mem", 0);
        assert_eq!(mismatch(Device::Memmap, &e820, true), None);
        assert!(mismatch(Device::Memmap, &e820, false).unwrap().contains("queue/dax is 0"));
        // A raw NVDIMM namespace (no fsdax info block) is not an nvdimm device.
        let raw = layout("ACPI.NFIT", "raw", "mem", 0);
        assert!(mismatch(Device::Nvdimm, &raw, true)
            .unwrap()
            .contains("namespace mode raw, not fsdax"));
    }
}
