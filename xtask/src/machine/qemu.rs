//! QEMU: the command line, built by a pure function, and the process, held in a guard that
//! kills and reaps it on drop. PR_SET_PDEATHSIG kills it even if xtask itself is SIGKILLed.

use crate::cleanup;
use anyhow::Context;
use daxtest_proto::Device;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// A pmem device's backing file on the host (an NVDIMM's or a virtio-pmem device's memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvdimm {
    pub path: PathBuf,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub accel: Accel,
    /// Guest RAM (for [`Device::Memmap`] it holds the pmem ranges as well).
    pub memory_mib: u64,
    pub cpus: u32,
    /// How the backing files are attached: NVDIMMs or virtio-pmem devices (memmap has none).
    pub device: Device,
    pub nvdimms: Vec<Nvdimm>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Read-only disk image attached as the first virtio-blk device.
    pub payload: Option<PathBuf>,
    pub append: String,
    pub serial_log: PathBuf,
    /// Unix socket of the human monitor (for sysrq keys to a guest that no longer answers).
    pub monitor: Option<PathBuf>,
    /// Host port on 127.0.0.1 forwarded to the guest's port 22; no network device when `None`.
    pub ssh_port: Option<u16>,
    /// The guest's state comes from a boot snapshot through the monitor (`-incoming defer`),
    /// not from a boot.
    pub incoming: bool,
}

/// A path inside a QEMU option value: commas are doubled, as QEMU's option syntax escapes them.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The argument vector (without the program name).
pub fn args(c: &QemuConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // Nothing implicit: no default NIC (its option ROM alone costs boot time), no VGA, no monitor.
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    let cpu = match c.accel {
        // The host CPU's features, as a kernel developer's machine has them.
        Accel::Kvm => "host",
        // Every feature TCG can emulate (SSE4.2 for crc32c-intel, and so on) but ERMS and FSRM:
        // with them the kernel copies and clears with `rep movsb` and `rep stosb`, which QEMU
        // 7.2's TCG runs one byte per iteration (a 64 MiB read(2) from a DAX file took 1.8 s;
        // 0.28 s with the 8-byte loops the kernel takes without them). Only the kernel's choice
        // of copy routine changes (arch/x86/lib: memcpy, copy_user, copy_mc, clear_page); no case
        // depends on it: no machine check is raised under QEMU (memory failure is
        // madvise(MADV_HWPOISON)), so copy_mc's recovery from one is not under test.
        Accel::Tcg => "max,-erms,-fsrm",
    };
    // nvdimm=on only for NVDIMMs: it adds the NFIT (an empty one otherwise, and an nvdimm bus).
    let nvdimm = if c.device.is_nvdimm() { ",nvdimm=on" } else { "" };
    push(&["-machine", &format!("pc{nvdimm},accel={}", c.accel), "-cpu", cpu]);
    push(&["-smp", &c.cpus.to_string()]);
    let nv_total_mib: u64 = c.nvdimms.iter().map(|n| n.size >> 20).sum();
    // NVDIMMs and virtio-pmem devices are memory devices: they need slots, and maxmem above RAM
    // by their total size.
    let memory = match c.nvdimms.len() {
        0 => format!("{}M", c.memory_mib),
        n => {
            format!("{}M,slots={},maxmem={}M", c.memory_mib, n.max(4), c.memory_mib + nv_total_mib)
        }
    };
    push(&["-m", &memory]);
    for (i, nv) in c.nvdimms.iter().enumerate() {
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=nvmem{i},share=on,mem-path={},size={}M",
                opt_path(&nv.path),
                nv.size >> 20
            ),
            "-device",
            &match c.device {
                Device::VirtioPmem => format!("virtio-pmem-pci,id=vpmem{i},memdev=nvmem{i}"),
                _ => format!("nvdimm,id=nv{i},memdev=nvmem{i}"),
            },
        ]);
    }
    push(&["-kernel", &c.kernel.to_string_lossy(), "-initrd", &c.initrd.to_string_lossy()]);
    push(&["-append", &c.append]);
    if let Some(p) = &c.payload {
        // readonly: concurrent VMs share the image's payload file.
        let drive = format!("file={},if=virtio,format=raw,readonly=on", opt_path(p));
        push(&["-drive", &drive]);
    }
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={}", opt_path(&c.serial_log)),
        "-serial",
        "chardev:serial0",
    ]);
    if let Some(m) = &c.monitor {
        push(&["-monitor", &format!("unix:{},server=on,wait=off", opt_path(m))]);
    }
    if let Some(port) = c.ssh_port {
        push(&[
            "-netdev",
            // restrict=on: the guest reaches nothing outside; 127.0.0.1 only: nothing but this
            // machine reaches the guest.
            &format!(
                "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{}",
                daxtest_proto::GUEST_SSH_PORT
            ),
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
    }
    if c.incoming {
        a.extend(["-incoming".to_string(), "defer".to_string()]);
    }
    a
}

/// `QEMU emulator version 7.2.22 (...)`, the first line of `--version`.
pub fn version(sh: &xshell::Shell) -> anyhow::Result<String> {
    let out = xshell::cmd!(sh, "{QEMU} --version").quiet().read()?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

/// Shell-quoted command line, for logs and error messages.
pub fn command_line(c: &QemuConfig) -> String {
    std::iter::once(QEMU.to_string())
        .chain(args(c))
        .map(|a| crate::sh::quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running QEMU. Dropping it kills and reaps the process.
pub struct Qemu {
    child: Child,
    pub stderr_log: PathBuf,
}

impl Qemu {
    /// Must be called from a thread that outlives the VM: PDEATHSIG fires when the *thread*
    /// that forked exits.
    pub fn spawn(c: &QemuConfig, stderr_log: &Path) -> anyhow::Result<Qemu> {
        let stderr = std::fs::File::create(stderr_log)
            .with_context(|| format!("creating {}", stderr_log.display()))?;
        let mut cmd = Command::new(QEMU);
        cmd.args(args(c))
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            // Its own process group: the terminal's Ctrl-C reaches xtask, which stops QEMU itself.
            .process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {QEMU}"))?;
        cleanup::register_pid(child.id());
        Ok(Qemu { child, stderr_log: stderr_log.to_path_buf() })
    }

    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for QEMU to exit; `None` if it is still running at the deadline.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills QEMU now and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup::unregister_pid(self.child.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel, nvdimms: usize) -> QemuConfig {
        QemuConfig {
            accel,
            memory_mib: 1024,
            cpus: 2,
            device: Device::Nvdimm,
            nvdimms: (0..nvdimms)
                .map(|i| Nvdimm { path: format!("/t/nv{i}.img").into(), size: 2 << 30 })
                .collect(),
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initramfs.cpio".into(),
            payload: Some("/k/payload.squashfs".into()),
            append: "console=ttyS0 daxtest.pmem=1".into(),
            serial_log: "/t/serial.log".into(),
            monitor: Some("/t/monitor.sock".into()),
            ssh_port: Some(40022),
            incoming: false,
        }
    }

    #[test]
    fn tcg_command_line_with_one_nvdimm() {
        assert_eq!(
            command_line(&config(Accel::Tcg, 1)),
            "qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
             -machine pc,nvdimm=on,accel=tcg -cpu max,-erms,-fsrm -smp 2 -m 1024M,slots=4,maxmem=3072M \
             -object memory-backend-file,id=nvmem0,share=on,mem-path=/t/nv0.img,size=2048M \
             -device nvdimm,id=nv0,memdev=nvmem0 -kernel /k/vmlinuz -initrd /k/initramfs.cpio \
             -append 'console=ttyS0 daxtest.pmem=1' \
             -drive file=/k/payload.squashfs,if=virtio,format=raw,readonly=on -chardev file,id=serial0,path=/t/serial.log \
             -serial chardev:serial0 -monitor unix:/t/monitor.sock,server=on,wait=off \
             -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22 \
             -device virtio-net-pci,netdev=net0,romfile="
        );
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut c = config(Accel::Tcg, 1);
        c.nvdimms[0].path = "/a,b/nv0.img".into();
        assert!(args(&c).iter().any(|a| a.contains("mem-path=/a,,b/nv0.img,size=")));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let a = args(&config(Accel::Kvm, 1));
        let i = a.iter().position(|x| x == "-cpu").unwrap();
        assert_eq!(a[i + 1], "host");
        assert!(a.contains(&"pc,nvdimm=on,accel=kvm".to_string()));
    }

    #[test]
    fn nvdimm_slots_and_maxmem_grow_with_the_count() {
        let a = args(&config(Accel::Tcg, 5));
        assert!(a.contains(&"1024M,slots=5,maxmem=11264M".to_string()), "{a:?}");
        assert!(a.contains(&"nvdimm,id=nv4,memdev=nvmem4".to_string()));
    }

    #[test]
    fn no_port_means_no_network_device() {
        let mut c = config(Accel::Tcg, 1);
        c.ssh_port = None;
        assert!(!args(&c).iter().any(|a| a.contains("netdev")));
    }

    #[test]
    fn virtio_pmem_is_a_virtio_device_on_the_same_backing_file_without_an_nfit() {
        let mut c = config(Accel::Tcg, 1);
        c.device = Device::VirtioPmem;
        let line = command_line(&c);
        assert!(
            line.contains(
                "-machine pc,accel=tcg -cpu max,-erms,-fsrm -smp 2 -m 1024M,slots=4,maxmem=3072M \
                 -object memory-backend-file,id=nvmem0,share=on,mem-path=/t/nv0.img,size=2048M \
                 -device virtio-pmem-pci,id=vpmem0,memdev=nvmem0 -kernel"
            ),
            "{line}"
        );
        assert!(!line.contains("nvdimm"), "{line}");
    }

    #[test]
    fn memmap_is_ram_alone() {
        let mut c = config(Accel::Tcg, 0);
        c.device = Device::Memmap;
        c.memory_mib = 2176;
        let line = command_line(&c);
        assert!(
            line.contains("-machine pc,accel=tcg -cpu max,-erms,-fsrm -smp 2 -m 2176M -kernel"),
            "{line}"
        );
        assert!(!line.contains("-object") && !line.contains("nvdimm"), "{line}");
    }

    #[test]
    fn no_nvdimm_means_no_memory_slots() {
        let a = args(&config(Accel::Kvm, 0));
        let i = a.iter().position(|x| x == "-m").unwrap();
        assert_eq!(a[i + 1], "1024M");
    }
}
