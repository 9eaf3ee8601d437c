//! The boot snapshot: the state of a guest that booted, got ready and loaded its modules, before
//! any case ran, saved once per run through QEMU's migration to a file. A VM that would boot
//! again (after a power cut, or for a case that asks for a fresh one) is restored from it
//! instead: ready in 0.4 to 0.8 s under TCG, against a 4 to 6 s boot plus 1.5 s of XFS module
//! loading; in 0.2 to 0.3 s after a power cut, whose [`Standby`] loaded the snapshot while the
//! case ran. Taking it stops the first VM for about 0.2 s (130 MB of guest RAM written).
//!
//! What a restored guest knows of its pmem comes from the devices alone, as after a boot:
//! - The NVDIMMs' memory is not in the snapshot (QEMU's `x-ignore-shared`: the backing files are
//!   shared file-backed memory), so a restored guest sees the backing files as they are now.
//! - The kernel in the snapshot has mounted nothing on them: only the boot's DAX proof read and
//!   wrote their first 64 KiB through the block device, and the restored guest drops every clean
//!   page cache page (`vm.drop_caches`) before its first case or mkfs (the agent's `restored`,
//!   run ahead of that command: [`Booted::agent_command`]).
//! - Its namespaces are the ones the backing files describe: a VM is restored only onto backing
//!   files whose fsdax info block (which the kernel read at boot) is the snapshot's.
//! - The kernel's part of each backing file is put back as it was at the snapshot: an fsdax
//!   namespace's info block and the reserve up to its data, which with `--map=dev` holds the
//!   struct pages of the device's memory. A boot initialises them; a restored kernel would find
//!   them as the killed kernel left them (page->mapping of its files: "WARNING at
//!   fs/dax.c:372 dax_insert_entry" on 6.12 in the first try). The filesystem's part, from the
//!   namespace's data offset on, is the backing file's as it is.
//! - Its wall clock is set to the host's (a snapshot's clock stopped when it was taken), by the
//!   same `restored`.

use crate::cleanup;
use crate::machine::image::Image;
use crate::machine::monitor::Monitor;
use crate::machine::qemu::{Nvdimm, Qemu, QemuConfig};
use crate::machine::vm::{read_start, Booted, FsdaxTemplate, Vm, VmOptions, INFO_BLOCK};
use anyhow::{bail, Context};
use daxtest_proto::{ReadyReport, AGENT_PATH};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct BootSnapshot {
    /// Removed with the snapshot (the sweep after a killed run removes it too: it is a `vm-`
    /// directory with its owner's pid).
    dir: tempfile::TempDir,
    file: PathBuf,
    /// Each backing file's kernel part ([`kernel_part`]) when the snapshot was taken.
    parts: Vec<Vec<u8>>,
    report: ReadyReport,
    /// What it is of, for the VMs restored from it ("the snapshot of VM 1's boot").
    pub source: String,
}

impl Drop for BootSnapshot {
    fn drop(&mut self) {
        cleanup::unregister_dir(self.dir.path());
    }
}

impl BootSnapshot {
    /// A new backing file of `size` bytes starting as device `i`'s did at the snapshot.
    pub(super) fn create_backing_file(
        &self,
        i: usize,
        path: &Path,
        size: u64,
    ) -> anyhow::Result<()> {
        let part = self.parts.get(i).context("the snapshot has fewer NVDIMMs than the VM")?;
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(size).with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
        f.write_all(part).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Puts the kernel's part of each backing file back as it was at the snapshot, after
    /// checking that the file holds the same namespace (the restored kernel believes in it).
    fn put_back_kernel_parts(&self, nvdimms: &[Nvdimm]) -> anyhow::Result<()> {
        put_back(&self.parts, nvdimms)
    }
}

/// Writes each device's kernel part back into its backing file, once the file is known to hold
/// the same namespace (the same info block: the restored kernel believes in it).
fn put_back(parts: &[Vec<u8>], nvdimms: &[Nvdimm]) -> anyhow::Result<()> {
    if nvdimms.len() != parts.len() {
        bail!("the VM has {} pmem devices, the snapshot {}", nvdimms.len(), parts.len());
    }
    for (nv, part) in nvdimms.iter().zip(parts) {
        // The info block only: the whole part is megabytes of struct pages.
        let head = read_start(&nv.path, FsdaxTemplate::LEN)?;
        let now = FsdaxTemplate::is_valid(&head).then(|| &head[INFO_BLOCK]);
        let same = match (now, part.get(INFO_BLOCK)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        if !same {
            bail!(
                "{} holds another fsdax info block than the snapshot's backing file did",
                nv.path.display()
            );
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&nv.path)
            .and_then(|mut f| f.write_all(part))
            .with_context(|| format!("writing {}", nv.path.display()))?;
    }
    Ok(())
}

/// The kernel's part of a backing file: up to the data of its fsdax namespace, or nothing
/// without one (a raw namespace is the filesystem's from its first byte).
fn kernel_part(path: &Path) -> anyhow::Result<Vec<u8>> {
    match FsdaxTemplate::data_start(path)? {
        Some(end) => read_start(path, end as usize),
        None => Ok(Vec::new()),
    }
}

/// The monitor's commands wait at most this long (a migration of 1 GiB of guest RAM, mostly
/// zero pages, takes about a second under TCG).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

impl Vm {
    /// Takes the boot snapshot of this guest, which must have run nothing yet: waits until its
    /// modules are loaded, takes its kernel log so far into `boot_log`, stops it, saves its
    /// state (guest RAM and devices, not the NVDIMMs), and lets it go on.
    pub fn take_snapshot(
        &mut self,
        root: &Path,
        ready: &Booted,
        source: String,
        boot_log: &mut Vec<String>,
    ) -> anyhow::Result<BootSnapshot> {
        // The modules the payload loads after ready (xfs, ext4) are in the snapshot too.
        let out = ready.connection.capture(&format!("{AGENT_PATH} preloaded --wait-ms 60000"))?;
        if out.status != 0 {
            bail!(
                "waiting for the modules to load: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // The boot's kernel lines leave the guest's log first: the VMs restored from the
        // snapshot must not show them again. They are the caller's, whatever becomes of it.
        boot_log.extend(ready.kernel_log_rest()?);
        let dir = crate::machine::vm::private_dir(root, "vm-snapshot-")?;
        let file = dir.path().join("boot.snapshot");
        let target = shell_word(&file)?;
        let mut monitor = Monitor::connect(&self.monitor_path(), Duration::ZERO)?;
        monitor.run("stop", MIGRATION_TIMEOUT)?;
        let saved = (|| {
            expect_silence(&mut monitor, "migrate_set_capability x-ignore-shared on")?;
            // QEMU throttles a migration to 128 MiB/s by default, and HMP's `migrate` without -d
            // looks for its end once a second: 1.0 s for the 130 MB, against 0.2 s unthrottled,
            // detached and polled here.
            expect_silence(&mut monitor, "migrate_set_parameter max-bandwidth 100G")?;
            expect_silence(&mut monitor, &format!("migrate -d \"exec:cat > {target}\""))?;
            migration_done(&mut monitor, Instant::now() + MIGRATION_TIMEOUT)?;
            // While the guest stands still, as its RAM was saved.
            self.nvdimms.iter().map(|nv| kernel_part(&nv.path)).collect::<anyhow::Result<Vec<_>>>()
        })();
        // The guest goes on whatever became of the snapshot.
        monitor.run("cont", MIGRATION_TIMEOUT)?;
        let parts = saved.context("saving the guest's state")?;
        let mut report = ready.report.clone();
        for d in &mut report.devices {
            // Restored VMs made no namespace of their own.
            d.formatted_now = false;
        }
        Ok(BootSnapshot { dir, file, parts, report, source })
    }

    /// A new VM restored from `snapshot`: its backing files hold the snapshot's kernel parts,
    /// zeroes after them.
    pub fn restore(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
        snapshot: &BootSnapshot,
    ) -> anyhow::Result<(Vm, Booted)> {
        Vm::start_from(image, root, opts, Some(snapshot))
    }

    /// Starts the [`Standby`] for a power cut to come: a QEMU on this VM's backing files that
    /// loads `snapshot` now and stays stopped until [`Vm::restore_after_cut`]. Not for a port
    /// the user chose (two QEMUs cannot both forward it) or pmem that a cut loses.
    pub fn prepare_restore(&mut self, snapshot: &BootSnapshot) -> anyhow::Result<()> {
        self.standby = None;
        if self.options.ssh_port.is_some() || !self.options.device.persistent() {
            return Ok(());
        }
        let serial_log = self.dir.path().join("serial-standby.log");
        let monitor = self.dir.path().join("monitor-standby.sock");
        let _ = std::fs::remove_file(&serial_log);
        let _ = std::fs::remove_file(&monitor);
        let mut config = self.config.clone();
        if config.ssh_port.is_some() {
            config.ssh_port = Some(crate::machine::vm::free_port()?);
        }
        config.serial_log = serial_log.clone();
        config.monitor = Some(monitor.clone());
        config.incoming = true;
        let qemu = Qemu::spawn(&config, &self.dir.path().join("qemu-stderr-standby.log"))?;
        let (source, path) = (shell_word(&snapshot.file)?, monitor.clone());
        // QEMU takes about 40 ms to listen on its monitor: the case goes on meanwhile.
        let loading = std::thread::spawn(move || {
            let mut m = Monitor::connect(&path, Duration::from_secs(10))?;
            start_loading(&mut m, &source)?;
            Ok(m)
        });
        self.standby = Some(Standby { qemu, config, serial_log, monitor, loading });
        Ok(())
    }

    /// The power cut did not come (the case failed before it): its standby goes.
    pub fn drop_standby(&mut self) {
        self.standby = None;
    }

    /// After [`Vm::cut_power`]: restores `snapshot` on the same backing files (QEMU as before,
    /// a new serial log and SSH port), their kernel parts put back as they were at the snapshot.
    /// The standby takes over when there is one; if it cannot, QEMU starts anew.
    pub fn restore_after_cut(
        &mut self,
        image: &Image,
        snapshot: &BootSnapshot,
    ) -> anyhow::Result<Booted> {
        snapshot.put_back_kernel_parts(&self.nvdimms)?;
        if let Some(standby) = self.standby.take() {
            match self.take_over(standby, image, snapshot) {
                Ok(ready) => return Ok(ready),
                Err(e) => {
                    eprintln!("daxtest: the standby VM did not take over; restoring anew: {e:#}");
                    // Its guest may have run on the backing files.
                    snapshot.put_back_kernel_parts(&self.nvdimms)?;
                }
            }
        }
        self.restart_then(true, |vm| vm.resume(image, snapshot))
    }

    /// The standby becomes this VM's QEMU (its serial log and monitor under this VM's names)
    /// once it has loaded the snapshot; then the guest runs and is connected to.
    fn take_over(
        &mut self,
        mut standby: Standby,
        image: &Image,
        snapshot: &BootSnapshot,
    ) -> anyhow::Result<Booted> {
        // Ready counts from the cut.
        self.started = Instant::now();
        let deadline = self.started + self.options.boot_timeout;
        if let Some(status) = standby.qemu.try_wait()? {
            bail!("its QEMU exited ({status}): {}", standby.qemu.stderr().trim());
        }
        let mut monitor = match standby.loading.join() {
            Ok(m) => m.context("loading the boot snapshot")?,
            Err(_) => bail!("the thread loading the boot snapshot panicked"),
        };
        migration_done(&mut monitor, deadline)?;
        let _ = std::fs::remove_file(&self.serial_log);
        std::fs::rename(&standby.serial_log, &self.serial_log)
            .with_context(|| format!("renaming {}", standby.serial_log.display()))?;
        std::fs::rename(&standby.monitor, self.monitor_path())
            .with_context(|| format!("renaming {}", standby.monitor.display()))?;
        standby.config.serial_log = self.serial_log.clone();
        standby.config.monitor = Some(self.monitor_path());
        self.command_line = crate::machine::qemu::command_line(&standby.config);
        self.port = standby.config.ssh_port.unwrap_or(self.port);
        self.config = standby.config;
        // The killed QEMU is reaped as it goes.
        self.qemu = standby.qemu;
        // The snapshot was taken of a stopped guest: it comes back stopped.
        monitor.run("cont", MIGRATION_TIMEOUT)?;
        self.restored(image, snapshot, deadline)
    }

    /// Loads the snapshot into the QEMU that waits for it, lets the guest run and connects.
    pub(super) fn resume(
        &mut self,
        image: &Image,
        snapshot: &BootSnapshot,
    ) -> anyhow::Result<Booted> {
        let deadline = self.started + self.options.boot_timeout;
        let source = shell_word(&snapshot.file)?;
        let mut monitor = Monitor::connect(&self.monitor_path(), Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!(self.failure(&format!("{e:#}"))))?;
        let loaded = (|| {
            start_loading(&mut monitor, &source)?;
            migration_done(&mut monitor, deadline)?;
            // The snapshot was taken of a stopped guest: it comes back stopped.
            monitor.run("cont", MIGRATION_TIMEOUT)
        })();
        if let Err(e) = loaded {
            bail!(self.failure(&format!("restoring the boot snapshot: {e:#}")));
        }
        self.restored(image, snapshot, deadline)
    }

    /// The restored guest, once it answers over SSH. Its clock and page cache are still the
    /// snapshot's: the first agent command sets them right (`unsettled`,
    /// [`Booted::agent_command`]).
    fn restored(
        &mut self,
        image: &Image,
        snapshot: &BootSnapshot,
        deadline: Instant,
    ) -> anyhow::Result<Booted> {
        let connection = self.connect(image, deadline, false)?;
        Ok(Booted {
            connection,
            report: snapshot.report.clone(),
            boot_time: self.started.elapsed(),
            restored_from: Some(snapshot.source.clone()),
            unsettled: true,
        })
    }
}

/// A QEMU started ahead of a power cut on a VM's backing files, stopped, loading the boot
/// snapshot while the case's last part before the cut runs: the restore after the cut is then
/// `cont` and the SSH connection. QEMU's start and the load (0.15 to 0.3 s under TCG) were on
/// the case's path. The standby's guest runs nothing before the cut: a stopped guest touches
/// no memory, and the snapshot's load skips the NVDIMMs (x-ignore-shared).
pub(super) struct Standby {
    qemu: Qemu,
    config: QemuConfig,
    serial_log: PathBuf,
    monitor: PathBuf,
    /// Connects to the monitor and starts the load; the monitor, once the load began.
    loading: std::thread::JoinHandle<anyhow::Result<Monitor>>,
}

/// Starts loading the snapshot at `source` (a [`shell_word`]) into a QEMU waiting for it; the
/// shared memory (the NVDIMMs) is not in it.
fn start_loading(monitor: &mut Monitor, source: &str) -> anyhow::Result<()> {
    expect_silence(monitor, "migrate_set_capability x-ignore-shared on")?;
    expect_silence(monitor, &format!("migrate_incoming \"exec:cat {source}\""))
}

/// A monitor command that answers nothing when it works (an answer is QEMU's error).
fn expect_silence(monitor: &mut Monitor, command: &str) -> anyhow::Result<()> {
    match monitor.run(command, MIGRATION_TIMEOUT)?.as_str() {
        "" => Ok(()),
        said => bail!("`{command}`: {said}"),
    }
}

/// Waits until `info migrate` says the migration completed; its error when it failed.
fn migration_done(monitor: &mut Monitor, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let info = monitor.run("info migrate", MIGRATION_TIMEOUT)?;
        let status = info
            .lines()
            .find_map(|l| l.strip_prefix("Migration status: "))
            .unwrap_or_default()
            .trim();
        match status {
            "completed" => return Ok(()),
            s if s.starts_with("failed") || s == "cancelled" => bail!("migration {s}: {info}"),
            _ if Instant::now() > deadline => bail!("the migration did not end in time: {info}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `path` single-quoted for the shell QEMU's `exec:` runs, inside the monitor's double quotes.
fn shell_word(path: &Path) -> anyhow::Result<String> {
    let s = path.to_str().context("a snapshot path that is not UTF-8")?;
    if s.contains(['\'', '"', '\\']) {
        bail!("a snapshot path with quotes or backslashes: {s}");
    }
    Ok(format!("'{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backing file of 64 MiB whose fsdax info block puts the data at `dataoff` (and whose
    /// struct pages, after it, are `fill`).
    fn backing(dir: &Path, name: &str, dataoff: u64, uuid: u8, fill: u8) -> Nvdimm {
        let path = dir.join(name);
        let mut bytes = vec![0u8; dataoff as usize + 4096];
        bytes[4096..4112].copy_from_slice(b"NVDIMM_PFN_INFO\0");
        bytes[4096 + 16] = uuid;
        bytes[4096 + 56..4096 + 64].copy_from_slice(&dataoff.to_le_bytes());
        bytes[8192..dataoff as usize].fill(fill);
        // The filesystem's first block.
        bytes[dataoff as usize..].fill(0xf5);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_len(64 << 20).unwrap();
        Nvdimm { path, size: 64 << 20 }
    }

    #[test]
    fn the_kernel_part_ends_where_the_namespace_data_begins() {
        let d = tempfile::tempdir().unwrap();
        let nv = backing(d.path(), "nv", 2 << 20, 1, 0x5a);
        let part = kernel_part(&nv.path).unwrap();
        assert_eq!(part.len(), 2 << 20);
        assert_eq!(part[(2 << 20) - 1], 0x5a);
        // A raw namespace is the filesystem's from its first byte.
        let raw = d.path().join("raw");
        std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
        assert!(kernel_part(&raw).unwrap().is_empty());
        // A data offset beyond half the device is no info block of ours.
        let odd = backing(d.path(), "odd", 40 << 20, 1, 0);
        assert!(kernel_part(&odd.path).unwrap_err().to_string().contains("data offset"));
    }

    #[test]
    fn struct_pages_go_back_and_the_filesystem_stays() {
        let d = tempfile::tempdir().unwrap();
        let snapshot =
            vec![kernel_part(&backing(d.path(), "snap", 2 << 20, 1, 0x11).path).unwrap()];
        // The killed kernel's struct pages, the same namespace.
        let cut = backing(d.path(), "cut", 2 << 20, 1, 0x99);
        put_back(&snapshot, std::slice::from_ref(&cut)).unwrap();
        let now = std::fs::read(&cut.path).unwrap();
        assert!(now[8192..2 << 20].iter().all(|b| *b == 0x11));
        assert!(now[2 << 20..(2 << 20) + 4096].iter().all(|b| *b == 0xf5));
        // Another namespace (another uuid) is refused, and left alone.
        let other = backing(d.path(), "other", 2 << 20, 2, 0x99);
        let e = put_back(&snapshot, std::slice::from_ref(&other)).unwrap_err().to_string();
        assert!(e.contains("another fsdax info block"), "{e}");
        assert_eq!(std::fs::read(&other.path).unwrap()[8192], 0x99);
    }

    #[test]
    fn paths_are_quoted_for_exec_or_refused() {
        assert_eq!(shell_word(Path::new("/a b/s")).unwrap(), "'/a b/s'");
        assert!(shell_word(Path::new("/a'b/s")).is_err());
    }
}
