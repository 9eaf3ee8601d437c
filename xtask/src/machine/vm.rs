//! One test VM: a private directory with the NVDIMM backing files and logs, QEMU, and the wait
//! until the agent answers over SSH. The directory and QEMU go away when the `Vm` is dropped; a
//! power cut kills QEMU and starts it again in the same directory, on the same backing files.
//!
//! Backing files start with an fsdax info block captured from an earlier boot (see
//! `FsdaxTemplate`), so the kernel finds fsdax namespaces at once instead of paying for
//! `ndctl create-namespace` (about 6 s under TCG) at every boot.

use crate::cleanup;
use crate::exit;
use crate::machine::image::Image;
use crate::machine::monitor::Monitor;
use crate::machine::qemu::{self, Accel, Nvdimm, Qemu, QemuConfig};
use crate::machine::snapshot::{BootSnapshot, Standby};
use crate::machine::ssh::{self, Connection};
use anyhow::{bail, Context};
use daxtest_proto::{console, Device, ReadyReport, AGENT_PATH, CMDLINE_DEVICE, CMDLINE_PMEM_COUNT};
use std::io::{Read, Seek, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    /// The kind of pmem device (`--device`); `nvdimms` of them, `nvdimm_size` each.
    pub device: Device,
    pub nvdimms: usize,
    pub nvdimm_size: u64,
    pub boot_timeout: Duration,
    /// The guest kernel's hung-task timeout: a task blocked this long is reported by the kernel.
    pub hung_task_secs: u64,
    /// A fixed SSH port on 127.0.0.1 (`--ssh-port`); `None` picks a free one per VM.
    pub ssh_port: Option<u16>,
}

/// An fsdax namespace needs a size that is a multiple of 16 MiB, and room for its info block.
pub fn validate_nvdimm_size(bytes: u64) -> Result<(), String> {
    if bytes < 64 << 20 || !bytes.is_multiple_of(16 << 20) {
        return Err("use a multiple of 16 MiB of at least 64 MiB (e.g. 2G), which an fsdax \
                    namespace needs"
            .into());
    }
    Ok(())
}

impl VmOptions {
    /// Sizes QEMU and the kernel can use, checked before anything boots.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.nvdimms == 0 {
            return Err(exit::input("--nvdimms 0: the guest needs at least one NVDIMM"));
        }
        match self.ssh_port {
            Some(0) => {
                return Err(exit::input(
                    "--ssh-port 0: give a port from 1 to 65535, or leave --ssh-port out to use \
                     any free one",
                ))
            }
            // Bound and released at once: QEMU binds it the same way (SO_REUSEADDR).
            Some(port) => {
                if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                    return Err(exit::input(format!(
                        "--ssh-port {port}: cannot listen on 127.0.0.1:{port} ({e}): give a free \
                         port, or leave --ssh-port out to use any free one"
                    )));
                }
            }
            None => {}
        }
        validate_nvdimm_size(self.nvdimm_size)
            .map_err(|e| exit::input(format!("NVDIMM size {} bytes: {e}", self.nvdimm_size)))?;
        if self.memory_mib < 256 {
            return Err(exit::input(format!(
                "--memory {}: the guest needs at least 256 MiB (default 1024)",
                self.memory_mib
            )));
        }
        if self.boot_timeout.is_zero() {
            return Err(exit::input("--boot-timeout 0: give a number of seconds above 0"));
        }
        if self.cpus == 0 || self.cpus > 64 {
            return Err(exit::input(format!("--cpus {}: use 1 to 64 (default 2)", self.cpus)));
        }
        if self.device == Device::Memmap && self.guest_ram_mib() >= MEMMAP_RAM_LIMIT_MIB {
            return Err(exit::input(format!(
                "--device memmap: the pmem is guest RAM below 4 GiB, and --memory {} with {} x \
                 {} MiB needs {} MiB of it (at most {}): give a smaller --nvdimm-size, fewer \
                 --nvdimms or less --memory",
                self.memory_mib,
                self.nvdimms,
                self.nvdimm_size >> 20,
                self.guest_ram_mib(),
                MEMMAP_RAM_LIMIT_MIB - 1
            )));
        }
        Ok(())
    }

    /// The RAM QEMU gives the guest: `memory_mib`, and for memmap the pmem ranges after it.
    pub fn guest_ram_mib(&self) -> u64 {
        match self.device {
            Device::Memmap => {
                memmap_ranges(self.memory_mib, self.nvdimms, self.nvdimm_size >> 20).1
            }
            _ => self.memory_mib,
        }
    }

    /// The kernel command line. quiet: the console only gets warnings and worse, which is what
    /// the host watches for; a case's full log is read from the ring buffer. panic=-1 with
    /// QEMU's -no-reboot: a panic ends QEMU at once. oops=panic: an oops leaves locks held and
    /// a half-dead kernel, so it ends the VM too and the next case gets a fresh one. The
    /// hung-task detector reports a task blocked for `hung_task_secs` (the default is 120 s).
    /// sysrq_always_enabled: Debian's kernel.sysrq (438) refuses w and l from the keyboard.
    ///
    /// Under TCG, tsc=unstable: it keeps the kernel from marking sched_clock stable at
    /// late_initcall, which flips a static key in sched_clock_cpu() while the other vCPU runs
    /// it in every interrupt. QEMU 7.2's multi-threaded TCG can keep a translation of the
    /// half-patched code (the int3) and run it after patching is over: "Oops: int3" at
    /// sched_clock_cpu+0x9, with the new instruction already in memory. 1 boot in 100 under
    /// load here, and the CI's boots twice; a false crash of the kernel under test.
    pub fn kernel_command_line(&self) -> String {
        let tcg = if self.accel == Accel::Tcg { " tsc=unstable" } else { "" };
        // memmap=SIZE!OFFSET: the range becomes e820 type 12 (persistent, legacy), which
        // nd_e820 registers as a pmem region (arch/x86/kernel/e820.c, drivers/nvdimm/e820.c).
        let memmap: String = match self.device {
            Device::Memmap => memmap_ranges(self.memory_mib, self.nvdimms, self.nvdimm_size >> 20)
                .0
                .iter()
                .map(|(offset, size)| format!(" memmap={size}M!{offset}M"))
                .collect(),
            _ => String::new(),
        };
        format!(
            "console=ttyS0 quiet panic=-1 oops=panic sysrq_always_enabled \
             sysctl.kernel.hung_task_timeout_secs={} sysctl.kernel.hung_task_warnings=-1 \
             {CMDLINE_DEVICE}={}{memmap} {CMDLINE_PMEM_COUNT}={}{tcg}",
            self.hung_task_secs, self.device, self.nvdimms
        )
    }
}

/// With `memmap`, QEMU's pc machine keeps all RAM below 4 GiB while it is under 3.5 GiB
/// (hw/i386/pc_piix.c: above that, RAM over 3 GiB moves above 4 GiB, around the PCI hole).
const MEMMAP_RAM_LIMIT_MIB: u64 = 3584;

/// The memmap ranges (offset, size in MiB) for `count` devices of `size_mib` after `memory_mib`
/// of RAM, and the guest RAM that holds them. Each range starts on a 128 MiB boundary (a memory
/// section, which devm_memremap_pages maps) and is followed by 128 MiB of plain RAM: adjacent
/// ranges of one e820 type are merged into one (e820__update_table), which would make one
/// device of two, and the top of RAM holds the firmware's tables.
fn memmap_ranges(memory_mib: u64, count: usize, size_mib: u64) -> (Vec<(u64, u64)>, u64) {
    const SECTION: u64 = 128;
    let mut at = memory_mib.div_ceil(SECTION) * SECTION;
    let mut ranges = Vec::new();
    for _ in 0..count {
        ranges.push((at, size_mib));
        at += size_mib.div_ceil(SECTION) * SECTION + SECTION;
    }
    (ranges, at)
}

pub struct Vm {
    // Field order matters: QEMU must die before its directory is removed.
    pub(super) qemu: Qemu,
    /// A QEMU waiting to take over after a power cut ([`Vm::prepare_restore`]).
    pub(super) standby: Option<Standby>,
    pub(super) dir: tempfile::TempDir,
    pub serial_log: PathBuf,
    pub port: u16,
    pub command_line: String,
    pub(super) started: Instant,
    pub(super) nvdimms: Vec<Nvdimm>,
    templates: PathBuf,
    kernel_release: String,
    pub(super) options: VmOptions,
    /// How QEMU was started, for a boot after a power cut on the same backing files.
    pub(super) config: QemuConfig,
}

/// A guest that answered: its connection, its boot report, and how long it took.
pub struct Booted {
    pub connection: Connection,
    pub report: ReadyReport,
    pub boot_time: Duration,
    /// Not booted but restored from a boot snapshot: what the snapshot is of.
    pub restored_from: Option<String>,
    /// Restored, and its clock and page cache are still the snapshot's: the first agent command
    /// ([`Booted::agent_command`]) runs `daxtest-agent restored` first.
    pub unsettled: bool,
}

impl Booted {
    /// The shell command that runs the agent with `args`. On a guest restored from the boot
    /// snapshot the first such command runs `daxtest-agent restored` before it, in the same SSH
    /// session (a session of its own cost 0.1 s a restore under TCG): the wall clock is the
    /// host's and the snapshot's cached pages are gone before any case or mkfs runs.
    pub fn agent_command(&mut self, args: &str) -> String {
        let command = format!("{AGENT_PATH} {args}");
        if !std::mem::take(&mut self.unsettled) {
            return command;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{AGENT_PATH} restored --realtime-ns {now} && {command}")
    }

    /// The kernel's lines that no case window took, up to now; they leave the guest's log.
    pub fn kernel_log_rest(&self) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = self
            .connection
            .capture_until(&format!("{AGENT_PATH} kmsg-rest"), &[], deadline)
            .context("reading the rest of the kernel log")?;
        anyhow::ensure!(
            out.status == 0,
            "reading the rest of the kernel log: exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }
}

/// Where the first bytes of an fsdax-formatted backing file are kept, per kernel and size.
pub(super) struct FsdaxTemplate;

impl FsdaxTemplate {
    /// The info block lives at 4 KiB; 64 KiB holds it with room to spare.
    pub(super) const LEN: usize = 64 << 10;
    const SIGNATURE: &'static [u8] = b"NVDIMM_PFN_INFO\0";

    /// One per kind of device: an nvdimm-mem's info block (struct pages on the device) or a
    /// 4 KiB-aligned one would come up as another kind's namespace.
    fn path(dir: &Path, release: &str, size: u64, device: Device) -> PathBuf {
        match device {
            Device::Nvdimm => dir.join(format!("{release}-{}M.head", size >> 20)),
            d => dir.join(format!("{release}-{}M-{d}.head", size >> 20)),
        }
    }

    pub(super) fn is_valid(head: &[u8]) -> bool {
        head.len() == Self::LEN && head[4096..4096 + Self::SIGNATURE.len()] == *Self::SIGNATURE
    }

    /// Where the data of the fsdax namespace in a backing file begins (`start_pad + dataoff` of
    /// its info block): the device's first byte. None without an info block.
    pub(super) fn data_start(path: &Path) -> anyhow::Result<Option<u64>> {
        let head = read_start(path, Self::LEN)?;
        if !Self::is_valid(&head) {
            return Ok(None);
        }
        let sb = &head[INFO_BLOCK];
        let le =
            |at: usize, n: usize| sb[at..at + n].iter().rev().fold(0u64, |v, b| v << 8 | *b as u64);
        // struct nd_pfn_sb: dataoff at 56 (8 bytes), start_pad at 76 (4 bytes).
        let start = le(76, 4) + le(56, 8);
        let size = std::fs::metadata(path)?.len();
        if start < INFO_BLOCK.end as u64 || start > size / 2 {
            anyhow::bail!("{}: an fsdax info block whose data offset is {start}", path.display());
        }
        Ok(Some(start))
    }
}

/// The last ready report on a serial log, if its line is whole JSON.
fn report_on_console(serial: &str) -> Option<ReadyReport> {
    let line = serial.lines().rev().find_map(|l| l.trim_end().strip_prefix(console::REPORT))?;
    serde_json::from_str(line).ok()
}

/// The first `len` bytes of a backing file.
pub(super) fn read_start(path: &Path, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .with_context(|| format!("reading the start of {}", path.display()))?;
    Ok(bytes)
}

/// Writes `bytes` as the file at `path` (its directory made if need be), whole: they go to a
/// temporary file beside it, renamed into place, so a run reading it meanwhile sees the old file
/// or the new one, and a failed write leaves neither. Readable by all, as `std::fs::write` makes
/// it under the usual umask.
pub(super) fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("a file's directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Where an fsdax namespace's info block (struct nd_pfn_sb, drivers/nvdimm/pfn.h) lies in a
/// backing file (a label-less NVDIMM is one namespace from its first byte).
pub(super) const INFO_BLOCK: std::ops::Range<usize> = 4096..8192;

impl Vm {
    /// `start`, and once more if that boot fails; `failed` hears of each failure (and whether
    /// another boot follows) before the next boot begins. A kernel that cannot boot fails both;
    /// a fault of the emulator's (see `kernel_command_line`) is not repeated by a second boot.
    pub fn start_or_retry(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
        failed: &mut dyn FnMut(&anyhow::Error, bool),
    ) -> anyhow::Result<(Vm, Booted)> {
        once_more(|| Vm::start(image, root, opts), failed)
    }

    /// `start_or_retry` for the commands that have no run directory: the failure goes to stderr.
    pub fn start_reporting(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
    ) -> anyhow::Result<(Vm, Booted)> {
        Vm::start_or_retry(image, root, opts, &mut |e, retrying| {
            if retrying {
                eprintln!("daxtest: the VM did not boot; booting once more. What it left:\n{e:#}");
            }
        })
    }

    /// Boots the image and waits until the agent reports a usable guest.
    pub fn start(image: &Image, root: &Path, opts: &VmOptions) -> anyhow::Result<(Vm, Booted)> {
        Vm::start_from(image, root, opts, None)
    }

    /// [`Vm::start`], or with `snapshot` a VM restored from it.
    pub(super) fn start_from(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
        snapshot: Option<&BootSnapshot>,
    ) -> anyhow::Result<(Vm, Booted)> {
        opts.validate()?;
        let mut attempts = 0;
        loop {
            let mut vm = Vm::spawn_from(image, root, opts, &image.initramfs(), true, snapshot)?;
            let ready = match snapshot {
                Some(s) => vm.resume(image, s),
                None => vm.wait_ready(image),
            };
            match ready {
                Ok(ready) => return Ok((vm, ready)),
                // Another process took the port between our check and QEMU's bind: pick again
                // (unless the user chose the port).
                Err(e) if attempts < 5 && vm.port_was_taken() => {
                    attempts += 1;
                    eprintln!("daxtest: port {} was taken, retrying: {e:#}", vm.port);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts QEMU with `initrd`; `network` adds the forwarded SSH port.
    pub fn spawn(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
        initrd: &Path,
        network: bool,
    ) -> anyhow::Result<Vm> {
        Vm::spawn_from(image, root, opts, initrd, network, None)
    }

    /// [`Vm::spawn`]; with `snapshot`, QEMU waits for the snapshot's state (`-incoming`) and
    /// the backing files start as the snapshot's did.
    pub(super) fn spawn_from(
        image: &Image,
        root: &Path,
        opts: &VmOptions,
        initrd: &Path,
        network: bool,
        snapshot: Option<&BootSnapshot>,
    ) -> anyhow::Result<Vm> {
        ensure_free_space(&crate::paths::tmp_root(root), opts)?;
        let dir = private_dir(root, "vm-")?;
        let templates = root.join("target/daxtest/cache/fsdax");
        let release = image.kernel.release.clone();
        let mut nvdimms = Vec::new();
        // memmap's pmem is guest RAM: no backing file.
        let files = if opts.device == Device::Memmap { 0 } else { opts.nvdimms };
        for i in 0..files {
            let path = dir.path().join(format!("nvdimm{i}.img"));
            let template = FsdaxTemplate::path(&templates, &release, opts.nvdimm_size, opts.device);
            match snapshot {
                Some(s) => s.create_backing_file(i, &path, opts.nvdimm_size)?,
                None => create_backing_file(&path, opts.nvdimm_size, &template)?,
            }
            nvdimms.push(Nvdimm { path, size: opts.nvdimm_size });
        }
        let port = match (network, opts.ssh_port) {
            (false, _) => 0,
            (true, Some(p)) => p,
            (true, None) => free_port()?,
        };
        let serial_log = dir.path().join("serial.log");
        let config = QemuConfig {
            accel: opts.accel,
            memory_mib: opts.guest_ram_mib(),
            cpus: opts.cpus,
            device: opts.device,
            nvdimms: nvdimms.clone(),
            kernel: image.kernel.vmlinuz.clone(),
            initrd: initrd.to_path_buf(),
            payload: Some(image.payload()),
            append: opts.kernel_command_line(),
            serial_log: serial_log.clone(),
            monitor: Some(dir.path().join("monitor.sock")),
            ssh_port: network.then_some(port),
            incoming: snapshot.is_some(),
        };
        let started = Instant::now();
        let qemu = Qemu::spawn(&config, &dir.path().join("qemu-stderr.log"))?;
        Ok(Vm {
            qemu,
            standby: None,
            dir,
            serial_log,
            port,
            command_line: qemu::command_line(&config),
            started,
            nvdimms,
            templates,
            kernel_release: release,
            options: opts.clone(),
            config,
        })
    }

    /// Power loss: QEMU is killed with SIGKILL, the guest warned of nothing (no sync, no
    /// unmount), and its serial log is kept as `dest`. What reached the NVDIMMs is in the backing
    /// files (shared file-backed memory), which stay; the guest's memory is gone.
    pub fn cut_power(&mut self, dest: &Path) {
        self.qemu.kill();
        if let Err(e) = std::fs::copy(&self.serial_log, dest) {
            eprintln!("daxtest: keeping the serial log as {}: {e}", self.serial_log.display());
        }
    }

    /// After [`Vm::cut_power`]: boots again on the same backing files (QEMU as before, a new
    /// serial log and SSH port) and waits until the agent answers.
    pub fn boot_after_cut(&mut self, image: &Image) -> anyhow::Result<Booted> {
        self.restart_then(false, |vm| vm.wait_ready(image))
    }

    /// [`Vm::restart`], then `up` (the guest waited for); again with another port, up to 5
    /// times, when QEMU found its SSH port taken.
    pub(super) fn restart_then(
        &mut self,
        incoming: bool,
        mut up: impl FnMut(&mut Vm) -> anyhow::Result<Booted>,
    ) -> anyhow::Result<Booted> {
        let mut attempts = 0;
        loop {
            self.restart(incoming)?;
            match up(self) {
                Err(e) if attempts < 5 && self.port_was_taken() => {
                    attempts += 1;
                    eprintln!("daxtest: port {} was taken, retrying: {e:#}", self.port);
                }
                done => return done,
            }
        }
    }

    /// Starts QEMU again in this VM's directory, on the same backing files, with a new serial
    /// log and SSH port; `incoming`: waiting for a boot snapshot instead of booting. The dead
    /// QEMU goes (its Drop reaps it) once the new one runs.
    fn restart(&mut self, incoming: bool) -> anyhow::Result<()> {
        if !self.options.device.persistent() {
            bail!(
                "a power cut on --device {}: its pmem was guest RAM and is gone (the plan skips \
                 such cases)",
                self.options.device
            );
        }
        let _ = std::fs::remove_file(&self.serial_log);
        if self.config.ssh_port.is_some() && self.options.ssh_port.is_none() {
            self.port = free_port()?;
            self.config.ssh_port = Some(self.port);
        }
        self.started = Instant::now();
        self.config.incoming = incoming;
        self.command_line = qemu::command_line(&self.config);
        self.qemu = Qemu::spawn(&self.config, &self.dir.path().join("qemu-stderr.log"))?;
        Ok(())
    }

    /// QEMU could not listen on the SSH port it was given: another process took it after we
    /// found it free (never retried for a port the user chose).
    pub(super) fn port_was_taken(&mut self) -> bool {
        self.options.ssh_port.is_none() && self.qemu.stderr().contains("host forwarding rule")
    }

    /// The SSH connection to the guest's sshd, once it answers. `after_marker`: connect only
    /// once the console says sshd runs (a boot), else at once (a restored guest).
    pub(super) fn connect(
        &mut self,
        image: &Image,
        deadline: Instant,
        after_marker: bool,
    ) -> anyhow::Result<Connection> {
        let host_key = image.host_key_blob()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            self.ensure_alive("before the guest was ready")?;
            if Instant::now() > deadline {
                bail!(self.failure(&format!(
                    "the guest did not answer over SSH within {:?}",
                    self.options.boot_timeout
                )));
            }
            let serial = self.serial();
            if let Some(line) = serial.lines().find(|l| l.contains(console::NOT_READY)) {
                bail!(self.failure(&format!("the guest could not get ready: {}", line.trim())));
            }
            // Connect only once sshd runs: a SYN sent earlier is retransmitted by QEMU's slirp
            // with a backoff of seconds, which would dominate boot-to-ready time.
            if after_marker && !serial.contains(console::SSHD_STARTED) {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            match Connection::connect(addr, &image.client_key(), &host_key, Duration::from_secs(10))
            {
                Ok(g) => return Ok(g),
                Err(e) if ssh::is_fatal(&e) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn wait_ready(&mut self, image: &Image) -> anyhow::Result<Booted> {
        let deadline = self.started + self.options.boot_timeout;
        let connection = self.connect(image, deadline, true)?;
        let report = match self.console_report(deadline)? {
            Some(report) => report,
            None => {
                let wait_ms = deadline.saturating_duration_since(Instant::now()).as_millis();
                let out = connection.capture(&format!("{AGENT_PATH} probe --wait-ms {wait_ms}"))?;
                serde_json::from_slice(&out.stdout).with_context(|| {
                    self.failure(&format!(
                        "the agent's probe answered no report (exit {}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                })?
            }
        };
        let boot_time = self.started.elapsed();
        if !report.ok {
            bail!(
                self.failure(&format!("the guest booted but is not usable: {}", report.summary()))
            );
        }
        Ok(Booted { connection, report, boot_time, restored_from: None, unsettled: false })
    }

    /// The ready report init wrote on the console, once the boot's end is there; None when the
    /// boot did not end ready (the probe says why) or the line is not whole JSON.
    fn console_report(&mut self, deadline: Instant) -> anyhow::Result<Option<ReadyReport>> {
        loop {
            self.ensure_alive("before the guest was ready")?;
            let serial = self.serial();
            if serial.contains(console::NOT_READY) || Instant::now() > deadline {
                return Ok(None);
            }
            if serial.contains(console::READY) {
                return Ok(report_on_console(&serial));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`Vm::shutdown`], then copies the serial log (complete, QEMU having exited) to `dest`.
    pub fn shutdown_keeping_serial(mut self, ready: Booted, dest: &Path) -> anyhow::Result<()> {
        let result = self.shutdown_in_place(ready);
        std::fs::copy(&self.serial_log, dest)
            .with_context(|| format!("keeping the serial log as {}", dest.display()))?;
        result
    }

    /// Kills QEMU (a crashed or hung guest) and copies the serial log to `dest`.
    pub fn kill_keeping_serial(mut self, dest: &Path) {
        self.qemu.kill();
        if let Err(e) = std::fs::copy(&self.serial_log, dest) {
            eprintln!("daxtest: keeping the serial log as {}: {e}", dest.display());
        }
    }

    /// One line on QEMU: running, or how it exited and the end of its stderr.
    pub fn status_line(&mut self) -> String {
        match self.qemu.try_wait() {
            Ok(None) => "still running".into(),
            Ok(Some(s)) => match self.qemu.stderr().trim() {
                "" => format!("exited ({s}), nothing on its stderr"),
                e => format!("exited ({s}): {e}"),
            },
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// Stops the VM and keeps fsdax info blocks for next time.
    pub fn shutdown(mut self, ready: Booted) -> anyhow::Result<()> {
        self.shutdown_in_place(ready)
    }

    /// QEMU is stopped, not the guest powered off: nothing outlives the VM but the fsdax info
    /// blocks, which the guest wrote to the NVDIMMs (QEMU's shared file-backed memory, already
    /// in the backing files) when it made the namespaces, so an orderly power-off would only cost
    /// time. The caller has taken what it needs from the guest (output, the kernel log's end).
    fn shutdown_in_place(&mut self, ready: Booted) -> anyhow::Result<()> {
        drop(ready.connection);
        self.qemu.kill();
        for (device, nv) in ready.report.devices.iter().zip(&self.nvdimms) {
            if device.formatted_now {
                self.save_template(nv)?;
            }
        }
        Ok(())
    }

    fn save_template(&self, nv: &Nvdimm) -> anyhow::Result<()> {
        let head = read_start(&nv.path, FsdaxTemplate::LEN)?;
        if !FsdaxTemplate::is_valid(&head) {
            eprintln!("daxtest: {} holds no fsdax info block; not keeping it", nv.path.display());
            return Ok(());
        }
        let path = FsdaxTemplate::path(
            &self.templates,
            &self.kernel_release,
            nv.size,
            self.options.device,
        );
        write_whole(&path, &head)
    }

    /// Waits for QEMU to exit on its own (a bare boot powering off).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        match self.qemu.wait_timeout(timeout)? {
            Some(s) if s.success() => Ok(self.started.elapsed()),
            Some(s) => bail!(self.failure(&format!("QEMU exited with {s}"))),
            None => bail!(self.failure(&format!("QEMU still running after {timeout:?}"))),
        }
    }

    /// After the guest was lost: a panicking kernel is still printing, and QEMU exits after
    /// it. Gives both up to 3 s to end, so that the serial log holds the whole report.
    pub fn let_a_panic_finish(&mut self) {
        let _ = self.qemu.wait_timeout(Duration::from_secs(3));
    }

    pub(super) fn ensure_alive(&mut self, when: &str) -> anyhow::Result<()> {
        if let Some(status) = self.qemu.try_wait()? {
            bail!(self.failure(&format!("QEMU exited ({status}) {when}")));
        }
        Ok(())
    }

    /// Device `i` as the host can write it: its backing file and the offset of its first byte
    /// there (the fsdax namespace's data). None for the kinds without an fsdax info block in a
    /// backing file.
    pub fn device_file(&self, i: usize) -> anyhow::Result<Option<(&Path, u64)>> {
        let Some(nv) = self.nvdimms.get(i).filter(|_| self.options.device.is_nvdimm()) else {
            return Ok(None);
        };
        Ok(FsdaxTemplate::data_start(&nv.path)?.map(|start| (nv.path.as_path(), start)))
    }

    /// Presses Alt+SysRq+`key` on the guest's PS/2 keyboard through QEMU's monitor: works when
    /// nothing in the guest answers any more, as long as the kernel takes interrupts.
    pub fn sysrq_key(&self, key: char) -> anyhow::Result<()> {
        let mut monitor = Monitor::connect(&self.monitor_path(), Duration::ZERO)?;
        monitor.run(&format!("sendkey alt-sysrq-{key}"), Duration::from_secs(5))?;
        Ok(())
    }

    pub(super) fn monitor_path(&self) -> PathBuf {
        self.dir.path().join("monitor.sock")
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    /// An error message with what a developer needs: QEMU's stderr and the serial log's tail.
    pub fn failure(&self, what: &str) -> String {
        let serial = self.serial();
        let lines: Vec<&str> = serial.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "{what}\n--- QEMU stderr ---\n{}\n--- last serial lines ---\n{tail}\n--- QEMU command ---\n{}",
            self.qemu.stderr().trim(),
            self.command_line
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        cleanup::unregister_dir(self.dir.path());
    }
}

/// `boot()`, and once more if it fails; `failed` hears of each failure and whether another
/// attempt follows.
pub fn once_more<T>(
    mut boot: impl FnMut() -> anyhow::Result<T>,
    failed: &mut dyn FnMut(&anyhow::Error, bool),
) -> anyhow::Result<T> {
    boot().or_else(|e| {
        failed(&e, true);
        boot().inspect_err(|e| failed(e, false))
    })
}

/// The backing files are sparse, but what the guest writes to its NVDIMMs lands in them: a full
/// disk would show up in the guest as a SIGBUS from QEMU. Refuse to start below a floor instead.
pub fn ensure_free_space(dir: &Path, opts: &VmOptions) -> anyhow::Result<()> {
    const FLOOR: u64 = 512 << 20;
    // The directory may not exist yet: ask its nearest existing ancestor's filesystem.
    let probe = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    let st = rustix::fs::statvfs(probe).with_context(|| format!("statvfs {}", probe.display()))?;
    let free = st.f_bavail * st.f_frsize;
    if free < FLOOR {
        bail!(
            "only {} MiB free for the VM's backing files in {} (at least {} MiB needed; a VM may \
             write up to {} x {} MiB there): free some space (e.g. `rm -r target/daxtest/runs`) or \
             point DAXTEST_TMPDIR at a directory with room",
            free >> 20,
            dir.display(),
            FLOOR >> 20,
            opts.nvdimms,
            opts.nvdimm_size >> 20
        );
    }
    Ok(())
}

/// A directory of this run's under the tmp root (`prefix` begins with "vm-"), removed when
/// dropped, by Ctrl-C, or by the sweep after a run killed with SIGKILL (it holds its owner's pid).
pub(super) fn private_dir(root: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let tmp_root = crate::paths::tmp_root(root);
    std::fs::create_dir_all(&tmp_root)
        .with_context(|| format!("creating {}", tmp_root.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&tmp_root)
        .with_context(|| format!("creating a directory in {}", tmp_root.display()))?;
    cleanup::register_dir(dir.path());
    std::fs::write(dir.path().join("pid"), std::process::id().to_string())?;
    Ok(dir)
}

/// A sparse file of `size` bytes, starting with the fsdax template when there is one.
fn create_backing_file(path: &Path, size: u64, template: &Path) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size).with_context(|| {
        format!("sizing {} to {size} bytes (is the disk full?)", path.display())
    })?;
    if let Ok(head) = std::fs::read(template) {
        if FsdaxTemplate::is_valid(&head) {
            f.rewind()?;
            f.write_all(&head)
                .with_context(|| format!("writing {} (is the disk full?)", path.display()))?;
        }
    }
    Ok(())
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(super) fn free_port() -> anyhow::Result<u16> {
    let l =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_report_is_read_from_the_console_only_when_its_line_is_whole() {
        let report = ReadyReport {
            agent_version: "0.1.0".into(),
            kernel_release: "6.12.117+deb12-amd64".into(),
            ok: true,
            errors: Vec::new(),
            timeline: vec![daxtest_proto::Phase { name: "ready".into(), uptime_s: 2.9 }],
            modules: Vec::new(),
            devices: Vec::new(),
        };
        let json = serde_json::to_string(&report).unwrap();
        let serial = format!(
            "{}2.31s\r\n{}{json}\r\n{}2.93s\r\n",
            console::INIT,
            console::REPORT,
            console::READY
        );
        assert_eq!(report_on_console(&serial), Some(report));
        // A kernel message written into the line: the probe is asked instead.
        let (head, tail) = json.split_at(json.len() / 2);
        let cut = format!("{}{head}[    2.9] WARNING: at x\r\n{tail}\r\n", console::REPORT);
        assert_eq!(report_on_console(&cut), None);
        assert_eq!(report_on_console(&format!("{}2.93s\n", console::READY)), None);
    }

    fn opts(count: usize, size: u64) -> VmOptions {
        VmOptions {
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            device: Device::Nvdimm,
            nvdimms: count,
            nvdimm_size: size,
            boot_timeout: Duration::from_secs(1),
            hung_task_secs: 10,
            ssh_port: None,
        }
    }

    #[test]
    fn nvdimm_sizes_are_checked() {
        assert!(opts(1, 2 << 30).validate().is_ok());
        let e = opts(1, (2 << 30) + 4096).validate().unwrap_err().to_string();
        assert!(e.contains("multiple of 16 MiB"), "{e}");
        assert!(opts(1, 32 << 20).validate().is_err());
        assert!(opts(0, 2 << 30).validate().unwrap_err().to_string().contains("--nvdimms 0"));
    }

    #[test]
    fn kernel_command_line_keeps_sched_clock_unstable_only_under_tcg() {
        let tcg = opts(2, 2 << 30).kernel_command_line();
        assert!(tcg.starts_with("console=ttyS0 quiet panic=-1 oops=panic "), "{tcg}");
        assert!(tcg.contains("hung_task_timeout_secs=10 "), "{tcg}");
        assert!(tcg.ends_with("daxtest.device=nvdimm daxtest.pmem=2 tsc=unstable"), "{tcg}");
        let kvm = VmOptions { accel: Accel::Kvm, ..opts(1, 2 << 30) }.kernel_command_line();
        assert!(kvm.ends_with("daxtest.pmem=1"), "{kvm}");
    }

    #[test]
    fn memmap_ranges_sit_after_the_ram_on_section_boundaries_apart() {
        let one = VmOptions { device: Device::Memmap, ..opts(1, 1 << 30) };
        assert_eq!(one.guest_ram_mib(), 1024 + 1024 + 128);
        let line = one.kernel_command_line();
        assert!(
            line.contains(" daxtest.device=memmap memmap=1024M!1024M daxtest.pmem=1"),
            "{line}"
        );
        let two = VmOptions { device: Device::Memmap, memory_mib: 1000, ..opts(2, 512 << 20) };
        let line = two.kernel_command_line();
        assert!(line.contains(" memmap=512M!1024M memmap=512M!1664M daxtest.pmem=2"), "{line}");
        assert_eq!(two.guest_ram_mib(), 2304);
        assert!(two.validate().is_ok());
        // Other devices leave the RAM and the command line's memmap alone.
        let nv = opts(1, 1 << 30);
        assert_eq!(nv.guest_ram_mib(), 1024);
        assert!(!nv.kernel_command_line().contains("memmap"));
    }

    #[test]
    fn memmap_beyond_the_low_ram_is_refused_with_the_numbers() {
        let big = VmOptions { device: Device::Memmap, ..opts(1, 4 << 30) };
        let e = big.validate().unwrap_err().to_string();
        assert!(e.starts_with("--device memmap: the pmem is guest RAM below 4 GiB"), "{e}");
        assert!(e.contains("needs 5248 MiB of it (at most 3583)"), "{e}");
    }

    #[test]
    fn each_device_kind_has_its_own_template() {
        let p = |d| FsdaxTemplate::path(Path::new("/c"), "6.12.1", 1 << 30, d);
        assert_eq!(p(Device::Nvdimm), Path::new("/c/6.12.1-1024M.head"));
        assert_eq!(p(Device::NvdimmMem), Path::new("/c/6.12.1-1024M-nvdimm-mem.head"));
        assert_eq!(p(Device::Nvdimm4k), Path::new("/c/6.12.1-1024M-nvdimm-4k.head"));
    }

    #[test]
    fn templates_are_checked_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut head = vec![0u8; FsdaxTemplate::LEN];
        assert!(!FsdaxTemplate::is_valid(&head));
        head[4096..4112].copy_from_slice(FsdaxTemplate::SIGNATURE);
        assert!(FsdaxTemplate::is_valid(&head));
        let template = dir.path().join("t.head");
        std::fs::write(&template, &head).unwrap();
        let backing = dir.path().join("nv.img");
        create_backing_file(&backing, 64 << 20, &template).unwrap();
        let written = std::fs::read(&backing).unwrap();
        assert_eq!(written.len(), 64 << 20);
        assert_eq!(&written[..FsdaxTemplate::LEN], &head[..]);
        // A missing template gives a blank (raw) device, which the guest formats itself.
        create_backing_file(&backing, 64 << 20, &dir.path().join("none")).unwrap();
        assert!(std::fs::read(&backing).unwrap().iter().all(|b| *b == 0));
    }
}
