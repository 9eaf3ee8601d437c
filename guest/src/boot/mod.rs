//! Owns what PID 1 does until the guest is ready (and its reaping of orphans ever after).
//! May use the root's support modules (`kmsg`, `stat`) and `daxtest_proto`; never `exec`.
//!
//! PID 1 of the test VM: mounts the pseudo filesystems, starts the kernel-log copy, loads the
//! modules (`modules`), brings up the network and sshd, mounts the payload disk, makes every
//! NVDIMM an fsdax device and proves DAX works on it (`dax_proof`), and writes the boot report
//! for `daxtest-agent probe`. Its threads share a `latch` and a way to run a `tool`.
//!
//! Ordering is chosen for boot-to-ready time under TCG: sshd starts as soon as the network
//! module is in, while the NVDIMM and filesystem modules are still loading on other threads.

mod dax_proof;
mod latch;
mod modules;
mod tool;

use anyhow::{bail, Context};
use daxtest_proto::{
    console, BootConfig, Phase, ReadyReport, BOOT_CONFIG_PATH, CMDLINE_PMEM_COUNT, GUEST_SSH_PORT,
    PRELOADED_PATH, READY_PATH,
};
use latch::Latch;
use modules::Loader;
use rustix::mount::{mount, MountFlags};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tool::tool;

pub fn run() -> ! {
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    let mut report = ReadyReport {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: String::new(),
        ok: false,
        errors: Vec::new(),
        timeline: vec![phase("init")],
        modules: Vec::new(),
        devices: Vec::new(),
    };
    println!("{}{:.2}s", console::INIT, report.timeline[0].uptime_s);
    let preload = match boot(&mut report) {
        Ok(modules) => modules,
        Err(e) => {
            report.errors.push(format!("{e:#}"));
            Vec::new()
        }
    };
    report.ok = report.errors.is_empty();
    report.timeline.push(phase("ready"));
    if let Err(e) = write_report(&report) {
        println!("daxtest-agent: cannot write {READY_PATH}: {e:#}");
    }
    // One line on the serial console, so a boot log alone says how the boot ended.
    match report.ok {
        true => {
            match serde_json::to_string(&report) {
                Ok(json) => println!("{}{json}", console::REPORT),
                Err(e) => println!("daxtest-agent: cannot encode the report: {e}"),
            }
            println!("{}{:.2}s", console::READY, uptime())
        }
        false => println!("{}{}", console::NOT_READY, report.summary()),
    }
    // A process of its own, not a thread: PID 1 reaps every child it can (reap_forever), and a
    // thread's wait for its modprobe would lose that race (ECHILD).
    if report.ok && !preload.is_empty() {
        if let Err(e) = Command::new("/proc/self/exe").arg("preload").args(&preload).spawn() {
            println!("daxtest-agent: cannot start loading {}: {e}", preload.join(" "));
        }
    }
    reap_forever()
}

/// `daxtest-agent preload MODULE...`: `modprobe -a` of the modules the boot left to the payload,
/// then [`PRELOADED_PATH`] says when it ended and how.
pub fn preload(modules: &[&str]) {
    let mut args = vec!["-a"];
    args.extend(modules);
    let error = tool("modprobe", &args).err().map(|e| format!("{e:#}"));
    let done = daxtest_proto::Preloaded { uptime_s: uptime(), error };
    let tmp = format!("{PRELOADED_PATH}.tmp");
    let written = serde_json::to_vec(&done)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, PRELOADED_PATH));
    if let Err(e) = written {
        println!("daxtest-agent: cannot write {PRELOADED_PATH}: {e}");
    }
}

/// A guest restored from the host's boot snapshot (xtask/src/machine/snapshot.rs) becomes what a
/// boot on the devices as they are now would give: the clean pages cached before the snapshot
/// (the DAX proof read and wrote the start of each pmem device through its page cache) go, so
/// the next mount reads the media; and the wall clock, stopped while the snapshot lay on disk,
/// is the host's `realtime_ns` again (e2fsck questions a last mount time in the future).
pub fn after_restore(realtime_ns: u128) -> anyhow::Result<()> {
    let now = rustix::time::Timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as i64,
        tv_nsec: (realtime_ns % 1_000_000_000) as _,
    };
    rustix::time::clock_settime(rustix::time::ClockId::Realtime, now)
        .context("setting the wall clock")?;
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing vm.drop_caches")?;
    Ok(())
}

/// The boot's DAX proof on `device` (a name under /dev) of a booted guest, whose modules are in.
pub fn prove_dax(device: &str) -> daxtest_proto::DaxProof {
    dax_proof::prove(device, &|| Ok(()))
}

/// Boots; returns the modules to load in the background once the guest is ready.
fn boot(report: &mut ReadyReport) -> anyhow::Result<Vec<String>> {
    mount_pseudo_filesystems()?;
    // Every kernel record from here to poweroff, for the case windows (crate::kmsg).
    std::thread::spawn(|| {
        if let Err(e) = crate::kmsg::log_forever() {
            println!("daxtest-agent: copying /dev/kmsg: {e}");
        }
    });
    let _ = rustix::system::sethostname(b"daxtest");
    report.kernel_release = rustix::system::uname().release().to_string_lossy().into_owned();
    report.timeline.push(phase("mounts"));

    let config: BootConfig = serde_json::from_slice(
        &std::fs::read(BOOT_CONFIG_PATH).with_context(|| format!("reading {BOOT_CONFIG_PATH}"))?,
    )
    .with_context(|| format!("parsing {BOOT_CONFIG_PATH}"))?;
    if config.kernel_release != report.kernel_release {
        bail!(
            "image built for kernel {} but booted {}: rebuild the image",
            config.kernel_release,
            report.kernel_release
        );
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline")?;
    let pmem_count = pmem_count_from_cmdline(&cmdline)?;
    let device = daxtest_proto::Device::from_cmdline(&cmdline).map_err(anyhow::Error::msg)?;
    // The bus drivers of the other kinds stay out (nothing of theirs is there to probe).
    let other_buses: Vec<&str> = daxtest_proto::Device::ALL
        .iter()
        .map(|d| d.bus_module())
        .filter(|m| *m != device.bus_module())
        .collect();
    let module_chains: Vec<_> = config
        .module_chains
        .iter()
        .filter(|c| !other_buses.contains(&c.target.as_str()))
        .cloned()
        .collect();

    // Every chain on its own thread. The DAX proof waits only for the NVDIMM drivers and erofs,
    // not for the network or payload chains.
    let loader = Loader::default();
    let device_modules = dax_proof::device_modules(device);
    let payload_mounted = Latch::default();
    let (net, payload, devices) = std::thread::scope(|s| {
        for chain in &module_chains {
            let loader = &loader;
            s.spawn(move || loader.run_chain(chain));
        }
        let payload = s.spawn(|| {
            let r = mount_payload(&config, &loader);
            payload_mounted.set(r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
            r
        });
        let chains = &module_chains;
        let devices = s.spawn(|| match loader.wait_for(&device_modules, chains).as_slice() {
            [] => {
                let fs_ready = || match loader.wait_for(dax_proof::FS_MODULES, chains).as_slice() {
                    [] => Ok(()),
                    errors => Err(anyhow::anyhow!("{}", errors.join("; "))),
                };
                prove_devices(pmem_count, device, &payload_mounted, &fs_ready)
            }
            errors => Err(anyhow::anyhow!("{}", errors.join("; "))),
        });
        let net = start_network_and_sshd(&config);
        let payload = payload.join().expect("payload thread panicked");
        (net, payload, devices.join().expect("device thread panicked"))
    });
    report.errors.extend(loader.errors());
    report.modules = loader.into_log();
    report.timeline.push(phase("modules"));
    match net {
        Ok(at) => report.timeline.push(at),
        Err(e) => report.errors.push(format!("network/sshd: {e:#}")),
    }
    match payload {
        Ok(at) => report.timeline.push(at),
        Err(e) => report.errors.push(format!("payload disk: {e:#}")),
    }
    match devices {
        Ok((devices, at)) => {
            report.devices = devices;
            report.timeline.push(at);
        }
        Err(e) => report.errors.push(format!("{device} devices: {e:#}")),
    }
    for d in &report.devices {
        if !d.dax_proof.ok {
            report
                .errors
                .push(format!("/dev/{}: DAX does not work: {}", d.name, d.dax_proof.detail));
        }
    }
    report.timeline.sort_by(|a, b| a.uptime_s.total_cmp(&b.uptime_s));
    Ok(config.preload)
}

/// Waits for the pmem devices, makes them what `device` says, proves DAX on each (in parallel).
fn prove_devices(
    count: usize,
    device: daxtest_proto::Device,
    payload: &Latch,
    fs_ready: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<(Vec<daxtest_proto::PmemDevice>, Phase)> {
    let names = dax_proof::wait_for_pmem(count, Duration::from_secs(20))?;
    let devices = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| s.spawn(move || dax_proof::prepare_and_prove(n, device, payload, fs_ready)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("device thread panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok((devices, phase("dax-proof")))
}

/// Mounts the read-only payload disk, where most tools and the on-demand modules live.
fn mount_payload(config: &BootConfig, loader: &Loader) -> anyhow::Result<Phase> {
    let p = &config.payload;
    let needs: Vec<&str> = p.needs.iter().map(String::as_str).collect();
    if let errors @ [_, ..] = loader.wait_for(&needs, &config.module_chains).as_slice() {
        bail!("{}", errors.join("; "));
    }
    // devtmpfs creates the node while virtio_blk is still probing the disk; until the disk is
    // live, opening it fails with ENXIO ("Can't open blockdev", seen on 6.1), so retry.
    let what = format!("mount -t {} -o ro {} {}", p.fstype, p.device, p.mount_point);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = match Path::new(&p.device).exists() {
            true => mount(
                p.device.as_str(),
                p.mount_point.as_str(),
                p.fstype.as_str(),
                MountFlags::RDONLY,
                None,
            ),
            false => Err(rustix::io::Errno::NOENT),
        };
        match r {
            Ok(()) => return Ok(phase("payload")),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NXIO)
                if Instant::now() <= deadline =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e @ (rustix::io::Errno::NOENT | rustix::io::Errno::NXIO)) => {
                return Err(e).with_context(|| format!("{what} (still failing after 10 s)"))
            }
            Err(e) => return Err(e).context(what),
        }
    }
}

fn mount_pseudo_filesystems() -> anyhow::Result<()> {
    let mounts: [(&str, &str, &str, &str); 6] = [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", ""),
        ("devpts", "/dev/pts", "devpts", "ptmxmode=0666"),
        ("tmpfs", "/run", "tmpfs", "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
    ];
    for (source, target, fstype, data) in mounts {
        std::fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
        let data = std::ffi::CString::new(data)?;
        mount(source, target, fstype, MountFlags::empty(), Some(data.as_c_str()))
            .with_context(|| format!("mount {fstype} on {target}"))?;
    }
    // A cgroup per case, so that what a case starts can be killed as one (exec::isolation). The
    // agent moves into and out of it at every case: favordynmods (6.0 and later) spares each
    // move the RCU grace period a cgroup migration otherwise waits for (percpu_down_write of
    // cgroup_threadgroup_rwsem), about 15 ms under TCG; older kernels mount without it.
    let cgroup = |data: &std::ffi::CStr| {
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MountFlags::empty(), Some(data))
    };
    cgroup(c"favordynmods").or_else(|_| cgroup(c"")).context("mount cgroup2 on /sys/fs/cgroup")?;
    // tracefs, for steps that count PMD faults (exec::trace), mounted before any case so that no
    // case leaves it as a mount of its own. A kernel without tracefs boots all the same.
    let _ = mount("tracefs", "/sys/kernel/tracing", "tracefs", MountFlags::empty(), Some(c""));
    std::fs::create_dir_all(Path::new(READY_PATH).parent().expect("READY_PATH has a parent"))?;
    Ok(())
}

/// Waits for eth0 (virtio_net loads on another thread), configures it and starts sshd.
fn start_network_and_sshd(config: &BootConfig) -> anyhow::Result<Phase> {
    // sshd first: binding the wildcard address needs no interface, and its start (a dynamically
    // linked program under TCG) overlaps the wait for virtio_net.
    let (program, args) = config.sshd.split_first().context("empty sshd command")?;
    let log = std::fs::File::create("/run/daxtest/sshd.log")?;
    Command::new(program)
        .arg0(Path::new(program).file_name().context("sshd command without a file name")?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !Path::new("/sys/class/net/eth0").exists() {
        if Instant::now() > deadline {
            bail!("no eth0 after 15 s: is the virtio-net module in the recipe?");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tool("ip", &["link", "set", "lo", "up"])?;
    tool("ip", &["addr", "add", &config.address, "dev", "eth0"])?;
    tool("ip", &["link", "set", "eth0", "up"])?;
    tool("ip", &["route", "add", "default", "via", &config.gateway])?;
    // Only a listening sshd answers: a connection before that is refused by the guest after
    // slirp accepted it, and the host would pay a failed handshake and a retry.
    while !listening(GUEST_SSH_PORT)? {
        if Instant::now() > deadline {
            bail!("{program} is not listening on port {GUEST_SSH_PORT} after 15 s (see /run/daxtest/sshd.log)");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The host waits for this line before its first connection attempt.
    println!("{}{:.2}s", console::SSHD_STARTED, uptime());
    Ok(phase("sshd"))
}

/// Whether a TCP socket listens on `port` (IPv4, any address), from /proc/net/tcp.
fn listening(port: u16) -> anyhow::Result<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    Ok(listens_in(&table, port))
}

/// `/proc/net/tcp` lines: `sl local_address rem_address st ...`, addresses as hex `IP:PORT`;
/// state 0A is LISTEN.
fn listens_in(table: &str, port: u16) -> bool {
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
    })
}

/// `daxtest.pmem=N` on the kernel command line: how many NVDIMMs QEMU was given.
pub fn pmem_count_from_cmdline(cmdline: &str) -> anyhow::Result<usize> {
    let key = format!("{CMDLINE_PMEM_COUNT}=");
    let value = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .with_context(|| format!("no {key}N on the kernel command line"))?;
    value.parse().with_context(|| format!("{key}{value}: not a count"))
}

fn write_report(report: &ReadyReport) -> anyhow::Result<()> {
    let tmp = format!("{READY_PATH}.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
    // Atomic: `probe` never sees half a report.
    std::fs::rename(&tmp, READY_PATH)?;
    Ok(())
}

fn phase(name: &str) -> Phase {
    Phase { name: name.to_string(), uptime_s: uptime() }
}

fn uptime() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn reap_forever() -> ! {
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
             0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000\n   \
             1: 0F02000A:0016 0202000A:ED3C 01 00000000:00000000 00:00000000\n";
        assert!(listens_in(table, 22));
        assert!(!listens_in(table, 2222));
        // An established connection on the port is not a listener.
        let established = table.replace(" 0A ", " 06 ");
        assert!(!listens_in(&established, 22));
    }

    #[test]
    fn pmem_count_parsing() {
        assert_eq!(pmem_count_from_cmdline("quiet daxtest.pmem=2 x").unwrap(), 2);
        let e = pmem_count_from_cmdline("quiet").unwrap_err().to_string();
        assert!(e.contains("no daxtest.pmem=N"), "{e}");
        let e = pmem_count_from_cmdline("daxtest.pmem=two").unwrap_err().to_string();
        assert!(e.contains("not a count"), "{e}");
    }
}
