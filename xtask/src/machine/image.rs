//! Builds the guest image: a small LZ4 initramfs with what the boot needs (the agent as /init,
//! busybox, dropbear, mkfs.ext4, the boot modules, keys) and a read-only squashfs "payload" disk
//! with everything else (xfsprogs, ndctl, kmod, on-demand modules such as xfs.ko), which the agent
//! mounts at /payload; every payload file has a symlink at its own path in the initramfs, so the
//! guest sees one ordinary tree.
//!
//! Why two parts: under TCG the kernel writes the initramfs into RAM at about 40 MB/s (measured:
//! a 30 MB archive starts init 0.7 s later than a 2 MB one, compressed or not), while a squashfs
//! on virtio-blk costs only what is read. Modules are stored decompressed (in-kernel xz is slow
//! under TCG) with a fresh depmod index, so the guest's modprobe (kmod) loads on-demand modules.
//!
//! Cached under a content hash of every input; built in a private directory and renamed into
//! place, so concurrent builds never see half an image. Every file is owned by root in the guest
//! whoever builds it (cpio headers written here, `mksquashfs -all-root`).

use crate::machine::kernel::{self, Chain, Kernel};
use crate::recipe::Recipe;
use anyhow::{bail, Context};
use base64::Engine;
use daxtest_proto::{BootConfig, ModuleChain, Payload, AGENT_PATH, BOOT_CONFIG_PATH};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xshell::{cmd, Shell};

const HOST_KEY_GUEST_PATH: &str = "/etc/dropbear/dropbear_ecdsa_host_key";
/// Where the agent mounts the payload disk (the first virtio-blk device).
pub const PAYLOAD_MOUNT: &str = "/payload";
const PAYLOAD_DEVICE: &str = "/dev/vda";

/// A built image, ready to boot.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub kernel: Kernel,
    /// `true` when this call reused a cached image.
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub kernel_id: String,
    pub kernel_release: String,
    /// The guest's SSH host key, `ecdsa-sha2-nistp256 AAAA...`: pinned by the host.
    pub host_key: String,
    pub build_seconds: f64,
}

impl Image {
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio.lz4")
    }
    pub fn payload(&self) -> PathBuf {
        self.dir.join("payload.squashfs")
    }
    /// An initramfs whose init powers off at once: the baseline of `bench boot` and the KVM probe.
    pub fn bare_initramfs(&self) -> PathBuf {
        self.dir.join("bare.cpio")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ecdsa")
    }
    /// The pinned host key blob, as the SSH protocol carries it. Read from the image directory
    /// as it is now: an `image --force` (bench image) meanwhile replaces the image, keys and all,
    /// and a VM booted from the new files answers with the new key.
    pub fn host_key_blob(&self) -> anyhow::Result<Vec<u8>> {
        let now = std::fs::read_to_string(self.dir.join("manifest.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Manifest>(&text).ok());
        host_key_blob(&now.as_ref().unwrap_or(&self.manifest).host_key)
    }
}

/// What goes into an archive at one guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { source: Source, mode: u32 },
    Symlink { target: String },
    CharDev { major: u32, minor: u32, mode: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Source::Bytes(b) => Ok(b.clone()),
            Source::Host(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        }
    }
}

/// An archive's contents, by guest path ("/usr/bin/x"). A BTreeMap sorts every directory
/// before what it holds, as cpio extraction needs.
#[derive(Debug, Default)]
pub struct Plan {
    pub nodes: BTreeMap<String, Node>,
}

impl Plan {
    pub fn add(&mut self, path: &str, node: Node) {
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
            self.nodes.entry(d.to_string_lossy().into_owned()).or_insert(Node::Dir { mode: 0o755 });
            dir = d.parent();
        }
        self.nodes.insert(path.to_string(), node);
    }

    fn add_bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.add(path, Node::File { source: Source::Bytes(bytes.into()), mode });
    }

    /// Hash of everything in the plan: paths, modes, link targets and file contents.
    pub fn hash_into(&self, h: &mut Sha256) -> anyhow::Result<()> {
        for (path, node) in &self.nodes {
            h.update(path.as_bytes());
            h.update([0]);
            match node {
                Node::Dir { mode } => h.update(format!("d{mode:o}")),
                Node::Symlink { target } => h.update(format!("l{target}")),
                Node::CharDev { major, minor, mode } => {
                    h.update(format!("c{major}:{minor}:{mode:o}"))
                }
                Node::File { source, mode } => {
                    h.update(format!("f{mode:o}"));
                    h.update(source.read()?);
                }
            }
            h.update([0]);
        }
        Ok(())
    }

    /// Writes a newc cpio archive; every entry owned by root whoever builds it.
    pub fn write_cpio(&self, out: &Path) -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let b = cpio::newc::Builder::new(name).ino(ino as u32 + 1).uid(0).gid(0).mtime(0);
            let (b, data): (_, Vec<u8>) = match node {
                Node::Dir { mode } => (b.mode(0o040000 | mode).nlink(2), vec![]),
                Node::File { source, mode } => (b.mode(0o100000 | mode).nlink(1), source.read()?),
                Node::Symlink { target } => (b.mode(0o120777).nlink(1), target.as_bytes().to_vec()),
                Node::CharDev { major, minor, mode } => {
                    (b.mode(0o020000 | mode).nlink(1).rdev_major(*major).rdev_minor(*minor), vec![])
                }
            };
            let size =
                u32::try_from(data.len()).with_context(|| format!("{path} is over 4 GiB"))?;
            let mut entry = b.write(&mut w, size);
            entry.write_all(&data)?;
            entry.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }

    /// Writes the plan as a directory tree under `dir` (for mksquashfs).
    pub fn write_tree(&self, dir: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (path, node) in &self.nodes {
            let dest = dir.join(path.trim_start_matches('/'));
            match node {
                Node::Dir { .. } => std::fs::create_dir_all(&dest)?,
                Node::File { source, mode } => {
                    std::fs::write(&dest, source.read()?)?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Node::Symlink { target } => std::os::unix::fs::symlink(target, &dest)?,
                Node::CharDev { .. } => bail!("{path}: device nodes cannot go into the payload"),
            }
        }
        Ok(())
    }
}

/// The two parts of the image: what the boot needs, and the payload disk.
#[derive(Debug, Default)]
pub struct Layout {
    pub boot: Plan,
    pub payload: Plan,
}

impl Layout {
    /// Adds a file to the boot archive, or to the payload unless the boot archive has it. A file
    /// in the payload that a boot file turns out to need moves to the boot archive.
    fn add_file(&mut self, path: &str, node: Node, boot: bool) {
        if boot {
            self.payload.nodes.remove(path);
            self.boot.add(path, node);
        } else if !self.boot.nodes.contains_key(path) {
            self.payload.add(path, node);
        }
    }

    /// Adds a host program under its own path with the libraries ldd lists for it. A symlink
    /// (mkfs.ext4 -> mke2fs) stays a symlink: some tools read their argv[0].
    pub fn add_program(&mut self, sh: &Shell, path: &Path, boot: bool) -> anyhow::Result<()> {
        let real = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
        if real != path {
            let target = real.to_string_lossy().into_owned();
            self.boot.add(&path.to_string_lossy(), Node::Symlink { target });
        }
        self.add_binary(sh, &real, &real.to_string_lossy(), boot)
    }

    /// Adds a host binary at `guest` with the libraries ldd lists for it, at their host paths.
    pub fn add_binary(
        &mut self,
        sh: &Shell,
        host: &Path,
        guest: &str,
        boot: bool,
    ) -> anyhow::Result<()> {
        self.add_file(
            guest,
            Node::File { source: Source::Host(host.to_path_buf()), mode: 0o755 },
            boot,
        );
        // ldd exits 1 on static binaries ("not a dynamic executable").
        let out = cmd!(sh, "ldd {host}").quiet().ignore_status().output()?;
        if out.status.success() {
            for lib in parse_ldd(&String::from_utf8_lossy(&out.stdout))
                .with_context(|| format!("libraries of {}", host.display()))?
            {
                let node = Node::File { source: Source::Host(lib.clone()), mode: 0o755 };
                self.add_file(&lib.to_string_lossy(), node, boot);
            }
        }
        Ok(())
    }

    /// Points every payload file's path in the boot archive at its place under /payload.
    fn link_payload(&mut self) {
        for (path, node) in &self.payload.nodes {
            if matches!(node, Node::File { .. }) {
                let target = format!("{PAYLOAD_MOUNT}{path}");
                self.boot.add(path, Node::Symlink { target });
            }
        }
    }
}

/// Library paths from ldd's output; a library that is "not found" is an error.
pub fn parse_ldd(out: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("shared library {} not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        // linux-vdso.so.1 has no file; it is mapped by the kernel.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `ecdsa-sha2-nistp256 AAAA... comment` -> the decoded key blob.
pub fn host_key_blob(line: &str) -> anyhow::Result<Vec<u8>> {
    let b64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("not an SSH public key line: {line:?}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .with_context(|| format!("bad base64 in SSH public key {line:?}"))
}

/// Builds the image for `kernel_spec` unless a cached one has the same inputs.
pub fn ensure(
    sh: &Shell,
    root: &Path,
    recipe: &Recipe,
    kernel_spec: &str,
    force: bool,
) -> anyhow::Result<Image> {
    let start = Instant::now();
    // Input first: a bad images/kernel.config is refused before anything is installed.
    let fragment = crate::machine::kernel::config::Fragment::load(root)?;
    crate::machine::host::ensure(sh, recipe)?;
    let cache = root.join("target/daxtest/cache");
    let debian = match crate::machine::kernel::local::is_path(kernel_spec) {
        true => None,
        false => Some(kernel::debian_spec(kernel_spec, recipe)?),
    };
    // Concurrent runs build one at a time; the second then finds the first one's result.
    let _lock = crate::concurrent::CacheLock::acquire(&cache)?;
    let kernel = match debian {
        Some((name, pkg)) => {
            let k = kernel::fetch_debian(sh, &cache, &name, pkg)?;
            // The packaged config must have what the fragment lists for its version, as a
            // self-built one must.
            let version = k.upstream()?;
            let config = std::fs::read_to_string(&k.config).unwrap_or_default();
            let missing = fragment.missing(&config, version);
            if !missing.is_empty() {
                bail!(
                    "{} lacks {} (from {}, for {version})",
                    k.config.display(),
                    missing.join(", "),
                    crate::machine::kernel::config::PATH
                );
            }
            k
        }
        None => crate::machine::kernel::local::prepare(sh, &cache, kernel_spec, &fragment)?,
    };
    // A rebuild needs the agent built and every file resolved and hashed (cargo, modprobe, ldd:
    // about a second); whether anything changed is told by reading the inputs alone.
    let quick = match force || crate::machine::kernel::local::is_path(kernel_spec) {
        false => Some(quick_key(root, recipe, kernel_spec)?),
        true => None,
    };
    if let Some(image) = quick.as_deref().and_then(|q| quick_hit(&cache, q, &kernel)) {
        return Ok(image);
    }
    let modules = Modules {
        boot: kernel::resolve_modules(sh, &kernel, &recipe.modules.load)?,
        on_demand: kernel::resolve_modules(sh, &kernel, &recipe.modules.on_demand)?,
    };

    // The agent is built for the host's target: the guest runs the host's glibc, copied below.
    cmd!(sh, "cargo build --release --quiet --package daxtest-guest").run()?;
    let agent = root.join("target/release/daxtest-agent");

    let layout = base_layout(sh, recipe, &agent)?;
    let mut h = Sha256::new();
    h.update(&recipe.source);
    h.update(&kernel.id);
    for c in modules.boot.iter().chain(&modules.on_demand) {
        h.update(format!("{c:?}"));
    }
    layout.boot.hash_into(&mut h)?;
    layout.payload.hash_into(&mut h)?;
    let key: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();

    let images = cache.join("images");
    let dir = images.join(&key);
    if let Some(q) = &quick {
        remember_quick(&cache, q, &key);
    }
    if !force {
        if let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) {
            let manifest: Manifest = serde_json::from_str(&text)?;
            return Ok(Image { dir, manifest, kernel, reused: true });
        }
    }
    let tmp = images.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let manifest = match build(sh, recipe, &kernel, &modules, layout, &tmp, &key, start) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        // --force, or another run finished the same image meanwhile: move the old one aside
        // rather than delete it under a VM that may be booting from it.
        // Unique per build of this process (bench image rebuilds in a loop); the pid comes last
        // for the sweep of dead runs' leftovers.
        static OLD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = OLD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = images.join(format!(".old-{key}-{n}-{}", std::process::id()));
        std::fs::rename(&dir, &old)
            .with_context(|| format!("moving the old image aside to {}", old.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving the image to {}", dir.display()))?;
    Ok(Image { dir, manifest, kernel, reused: false })
}

/// A key over what an image is made from, read without running anything: the recipe, the kernel
/// fragment and spec, this program (the code that lays the image out), the agent's sources,
/// manifests and lock file and the toolchain that builds it, and the host files the image
/// copies (any package change shows in dpkg's status file; each listed file by size and time).
/// Equal keys give equal images: the image key (a hash of the built contents) is then looked up,
/// not recomputed.
pub fn quick_key(root: &Path, recipe: &Recipe, kernel_spec: &str) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(&recipe.source);
    h.update(kernel_spec);
    h.update(std::fs::read(root.join(crate::machine::kernel::config::PATH))?);
    stamp(&mut h, &std::env::current_exe()?);
    for dir in ["guest", "proto"] {
        hash_tree(&mut h, root, &root.join(dir))?;
    }
    for f in ["Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        h.update(f);
        h.update(std::fs::read(root.join(f)).unwrap_or_default());
    }
    // The toolchain: cargo's own path names it (rustup's toolchain directory), and its compiler
    // beside it changes when the toolchain is updated in place.
    match std::env::var_os("CARGO") {
        Some(cargo) => {
            let cargo = PathBuf::from(cargo);
            stamp(&mut h, &cargo);
            stamp(&mut h, &cargo.with_file_name("rustc"));
        }
        None => h.update(std::process::Command::new("rustc").arg("-V").output()?.stdout),
    }
    stamp(&mut h, Path::new("/var/lib/dpkg/status"));
    for f in recipe.guest_tools.iter().chain(&recipe.guest_files).chain(&recipe.host_tools) {
        stamp(&mut h, &f.path);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// A file's path, size and modification time (nothing when it is missing).
fn stamp(h: &mut Sha256, path: &Path) {
    h.update(path.as_os_str().as_encoded_bytes());
    if let Ok(m) = std::fs::metadata(path) {
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(format!("{} {:?}", m.len(), mtime));
    }
}

/// Every file under `dir` (but `target/`), by path relative to `root` and content, in order.
fn hash_tree(h: &mut Sha256, root: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "target"))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_tree(h, root, &p)?;
        } else {
            h.update(p.strip_prefix(root).unwrap_or(&p).as_os_str().as_encoded_bytes());
            h.update(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        }
    }
    Ok(())
}

/// `cache/images/quick/<quick key>`: the image key a build from those inputs gave.
fn quick_path(cache: &Path, quick: &str) -> PathBuf {
    cache.join("images/quick").join(quick)
}

fn quick_hit(cache: &Path, quick: &str, kernel: &Kernel) -> Option<Image> {
    let key = std::fs::read_to_string(quick_path(cache, quick)).ok()?;
    let dir = cache.join("images").join(key.trim());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    Some(Image { dir, manifest, kernel: kernel.clone(), reused: true })
}

fn remember_quick(cache: &Path, quick: &str, key: &str) {
    let path = quick_path(cache, quick);
    // Best effort: without it the next run only takes the slow way to the same image.
    let _ = std::fs::create_dir_all(path.parent().expect("quick/ has a parent"));
    let _ = std::fs::write(&path, key);
}

/// Everything that does not depend on the kernel or on freshly generated keys.
fn base_layout(sh: &Shell, recipe: &Recipe, agent: &Path) -> anyhow::Result<Layout> {
    let mut l = Layout::default();
    let boot = &mut l.boot;
    for d in
        ["/dev", "/proc", "/sys", "/run", "/tmp", "/mnt", "/var", "/etc/dropbear", PAYLOAD_MOUNT]
    {
        boot.add(d, Node::Dir { mode: 0o755 });
    }
    boot.add("/root", Node::Dir { mode: 0o700 });
    boot.add("/root/.ssh", Node::Dir { mode: 0o700 });
    // The kernel opens /dev/console for init before anything is mounted.
    boot.add("/dev/console", Node::CharDev { major: 5, minor: 1, mode: 0o600 });
    boot.add_bytes("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    boot.add_bytes("/etc/group", "root:x:0:\n", 0o644);
    // "*": no password can match; dropbear only accepts the key (and -s forbids passwords).
    boot.add_bytes("/etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600);
    boot.add_bytes("/etc/shells", "/bin/sh\n/bin/ash\n", 0o644);
    boot.add_bytes(
        "/etc/profile",
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='daxtest:\\w# '\n",
        0o644,
    );
    boot.add("/init", Node::Symlink { target: AGENT_PATH.into() });
    l.add_binary(sh, agent, AGENT_PATH, true)?;
    // Boot tools first, so that the libraries they share with the rest stay in the archive.
    let (boot_tools, payload_tools): (Vec<_>, Vec<_>) =
        recipe.guest_tools.iter().partition(|t| t.boot);
    for tool in boot_tools.iter().chain(&payload_tools) {
        l.add_program(sh, &tool.path, tool.boot)?;
    }
    for file in &recipe.guest_files {
        let node = Node::File { source: Source::Host(file.path.clone()), mode: 0o644 };
        l.add_file(&file.path.to_string_lossy(), node, true);
    }

    // An applet named like a real tool (modprobe, chattr, ...) points at the tool: the kernel
    // calls /sbin/modprobe, and kmod's understands the depmod index that busybox's does not.
    let tools: BTreeMap<String, String> = recipe
        .guest_tools
        .iter()
        .filter_map(|t| {
            let name = t.path.file_name()?.to_string_lossy().into_owned();
            Some((name, t.path.to_string_lossy().into_owned()))
        })
        .collect();
    let applets = cmd!(sh, "/bin/busybox --list-full").quiet().read()?;
    for applet in applets.lines().map(|a| format!("/{}", a.trim())) {
        if l.boot.nodes.contains_key(&applet) || l.payload.nodes.contains_key(&applet) {
            continue;
        }
        let name = applet.rsplit('/').next().unwrap_or_default();
        let target = tools.get(name).cloned().unwrap_or_else(|| "/bin/busybox".into());
        l.boot.add(&applet, Node::Symlink { target });
    }
    Ok(l)
}

#[allow(clippy::too_many_arguments)]
fn build(
    sh: &Shell,
    recipe: &Recipe,
    kernel: &Kernel,
    modules: &Modules,
    mut layout: Layout,
    out: &Path,
    key: &str,
    start: Instant,
) -> anyhow::Result<Manifest> {
    // Keys made for this image only: the client key never leaves the cache directory.
    let client = out.join("id_ecdsa");
    cmd!(sh, "ssh-keygen -q -t ecdsa -b 256 -m PEM -N '' -C daxtest-{key} -f {client}").run()?;
    let host = out.join("host_key");
    cmd!(sh, "dropbearkey -t ecdsa -s 256 -f {host}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()?;
    let host_pub = cmd!(sh, "dropbearkey -y -f {host}").quiet().read()?;
    let host_key = host_pub
        .lines()
        .find(|l| l.starts_with("ecdsa-sha2-"))
        .context("dropbearkey -y printed no public key")?
        .to_string();
    host_key_blob(&host_key)?;
    let authorized = std::fs::read(out.join("id_ecdsa.pub"))?;
    layout.boot.add_bytes("/root/.ssh/authorized_keys", authorized, 0o600);
    layout.boot.add_bytes(HOST_KEY_GUEST_PATH, std::fs::read(&host)?, 0o600);
    std::fs::remove_file(&host)?;

    let stage = out.join("stage");
    let module_chains = stage_modules(sh, kernel, modules, &mut layout, &stage.join("modules"))?;
    let boot = BootConfig {
        kernel_release: kernel.release.clone(),
        module_chains,
        payload: Payload {
            device: PAYLOAD_DEVICE.into(),
            mount_point: PAYLOAD_MOUNT.into(),
            fstype: "squashfs".into(),
            needs: vec!["virtio_blk".into(), "squashfs".into()],
        },
        sshd: [
            "/usr/sbin/dropbear",
            "-F", // foreground: init keeps it as a child
            "-E", // log to stderr (init sends it to /run/daxtest/sshd.log)
            "-s", // no password logins at all
            "-j",
            "-k", // no port forwarding
            "-p",
            "22",
            "-r",
            HOST_KEY_GUEST_PATH,
        ]
        .map(String::from)
        .to_vec(),
        preload: recipe.modules.on_demand.clone(),
        address: recipe.vm.address.clone(),
        gateway: recipe.vm.gateway.clone(),
    };
    layout.boot.add_bytes(BOOT_CONFIG_PATH, serde_json::to_vec_pretty(&boot)?, 0o644);
    layout.link_payload();

    let tree = stage.join("payload");
    layout.payload.write_tree(&tree)?;
    let payload = out.join("payload.squashfs");
    // Uncompressed (-noI -noD -noF -noX): decompression is what TCG does worst.
    cmd!(sh, "mksquashfs {tree} {payload} -all-root -noappend -quiet -no-progress -noI -noD -noF -noX -no-xattrs")
        .run()?;
    let cpio = out.join("initramfs.cpio");
    layout.boot.write_cpio(&cpio)?;
    cmd!(sh, "lz4 -l -q -f {cpio} {cpio}.lz4").run()?;
    std::fs::remove_file(&cpio)?;
    std::fs::remove_dir_all(&stage)?;

    let mut bare = Plan::default();
    bare.add("/dev/console", Node::CharDev { major: 5, minor: 1, mode: 0o600 });
    bare.add(
        "/bin/busybox",
        Node::File { source: Source::Host("/bin/busybox".into()), mode: 0o755 },
    );
    bare.add_bytes("/init", "#!/bin/busybox sh\n/bin/busybox poweroff -f\n", 0o755);
    bare.write_cpio(&out.join("bare.cpio"))?;

    let manifest = Manifest {
        key: key.to_string(),
        kernel_id: kernel.id.clone(),
        kernel_release: kernel.release.clone(),
        host_key,
        build_seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// The modules the image carries: loaded at boot, or at first use through modprobe.
struct Modules {
    boot: Vec<Chain>,
    on_demand: Vec<Chain>,
}

/// Decompresses every module into a module tree under `stage` and indexes it with depmod (so the
/// guest's modprobe resolves aliases such as fs-xfs). Boot modules and the index go into the
/// boot archive, the others into the payload. Returns the boot chains with their guest paths.
fn stage_modules(
    sh: &Shell,
    kernel: &Kernel,
    modules: &Modules,
    layout: &mut Layout,
    stage: &Path,
) -> anyhow::Result<Vec<ModuleChain>> {
    let release = &kernel.release;
    let source = kernel.root.join("lib/modules").join(release);
    let target = stage.join("lib/modules").join(release);
    // kernel/fs/xfs/xfs.ko.xz -> kernel/fs/xfs/xfs.ko
    let relative = |f: &Path| -> anyhow::Result<String> {
        let rel = f
            .strip_prefix(&source)
            .with_context(|| format!("{} is outside {}", f.display(), source.display()))?;
        let rel = rel.to_string_lossy();
        Ok(match rel.find(".ko") {
            Some(i) => format!("{}.ko", &rel[..i]),
            None => rel.into_owned(),
        })
    };
    let mut files: BTreeMap<String, bool> = BTreeMap::new();
    for (chains, boot) in [(&modules.boot, true), (&modules.on_demand, false)] {
        for file in chains.iter().flat_map(|c| &c.files) {
            let rel = relative(file)?;
            let dest = target.join(&rel);
            if !dest.exists() {
                std::fs::create_dir_all(dest.parent().expect("module path has a parent"))?;
                std::fs::write(&dest, decompress(sh, file)?)?;
            }
            *files.entry(rel).or_default() |= boot;
        }
    }
    // A kernel with every recipe module built in (`cargo xtask kernel --src`'s minimal config)
    // stages no module file, and the index still needs its directory.
    std::fs::create_dir_all(&target)?;
    for index in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        std::fs::copy(source.join(index), target.join(index))
            .with_context(|| format!("copying {}", source.join(index).display()))?;
    }
    cmd!(sh, "depmod -b {stage} {release}").run()?;
    for entry in std::fs::read_dir(&target)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = format!("/lib/modules/{release}/{}", entry.file_name().to_string_lossy());
            layout.add_file(
                &name,
                Node::File { source: Source::Bytes(std::fs::read(entry.path())?), mode: 0o644 },
                true,
            );
        }
    }
    for (rel, boot) in &files {
        let bytes = std::fs::read(target.join(rel))?;
        let node = Node::File { source: Source::Bytes(bytes), mode: 0o644 };
        layout.add_file(&format!("/lib/modules/{release}/{rel}"), node, *boot);
    }

    let guest = |f: &PathBuf| relative(f).map(|r| format!("/lib/modules/{release}/{r}"));
    modules
        .boot
        .iter()
        .map(|chain| {
            Ok(ModuleChain {
                target: chain.target.clone(),
                paths: chain.files.iter().map(guest).collect::<anyhow::Result<_>>()?,
                optional: chain.optional.iter().map(guest).collect::<anyhow::Result<_>>()?,
            })
        })
        .collect()
}

fn decompress(sh: &Shell, file: &Path) -> anyhow::Result<Vec<u8>> {
    let tool = match file.extension().and_then(|e| e.to_str()) {
        Some("ko") => return Ok(std::fs::read(file)?),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("{}: unknown module compression", file.display()),
    };
    Ok(cmd!(sh, "{tool} -dc {file}").quiet().output()?.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd)\n\
        \tlibndctl.so.6 => /lib/x86_64-linux-gnu/libndctl.so.6 (0x00007f1)\n\
        \t/lib64/ld-linux-x86-64.so.2 (0x00007f2)\n";

    #[test]
    fn ldd_output() {
        let libs = parse_ldd(LDD).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libndctl.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().to_string();
        assert_eq!(e, "shared library libfoo.so.1 not found");
    }

    #[test]
    fn parents_are_added_before_children() {
        let mut plan = Plan::default();
        plan.add("/usr/bin/x", Node::Symlink { target: "/y".into() });
        let paths: Vec<&String> = plan.nodes.keys().collect();
        assert_eq!(paths, ["/usr", "/usr/bin", "/usr/bin/x"]);
    }

    fn bytes(s: &str) -> Node {
        Node::File { source: Source::Bytes(s.into()), mode: 0o644 }
    }

    #[test]
    fn payload_files_are_linked_and_boot_files_win() {
        let mut l = Layout::default();
        l.add_file("/lib/libshared.so", bytes("s"), false);
        l.add_file("/usr/sbin/mkfs.xfs", bytes("x"), false);
        // A boot tool needs the same library: it moves into the boot archive.
        l.add_file("/lib/libshared.so", bytes("s"), true);
        l.add_file("/lib/libshared.so", bytes("s"), false);
        l.link_payload();
        assert_eq!(l.boot.nodes["/lib/libshared.so"], bytes("s"));
        assert!(!l.payload.nodes.contains_key("/lib/libshared.so"));
        assert_eq!(
            l.boot.nodes["/usr/sbin/mkfs.xfs"],
            Node::Symlink { target: "/payload/usr/sbin/mkfs.xfs".into() }
        );
        assert_eq!(l.payload.nodes["/usr/sbin/mkfs.xfs"], bytes("x"));
    }

    fn key_of(plan: &Plan) -> Vec<u8> {
        let mut h = Sha256::new();
        plan.hash_into(&mut h).unwrap();
        h.finalize().to_vec()
    }

    #[test]
    fn cache_key_follows_contents_modes_and_paths() {
        let mut a = Plan::default();
        a.add_bytes("/etc/x", "one", 0o644);
        let mut same = Plan::default();
        same.add_bytes("/etc/x", "one", 0o644);
        assert_eq!(key_of(&a), key_of(&same));
        for changed in
            [("/etc/x", "two", 0o644), ("/etc/x", "one", 0o600), ("/etc/y", "one", 0o644)]
        {
            let mut p = Plan::default();
            p.add_bytes(changed.0, changed.1, changed.2);
            assert_ne!(key_of(&a), key_of(&p), "{changed:?}");
        }
    }

    #[test]
    fn cpio_entries_are_owned_by_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::default();
        plan.add_bytes("/etc/x", "hello", 0o600);
        plan.add("/dev/console", Node::CharDev { major: 5, minor: 1, mode: 0o600 });
        let path = dir.path().join("a.cpio");
        plan.write_cpio(&path).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut seen = Vec::new();
        loop {
            let r = cpio::newc::Reader::new(&mut file).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            seen.push((e.name().to_string(), e.uid(), e.gid(), e.mode(), e.file_size()));
            r.finish().unwrap();
        }
        assert_eq!(
            seen,
            [
                ("dev".into(), 0, 0, 0o040755, 0),
                ("dev/console".into(), 0, 0, 0o020600, 0),
                ("etc".into(), 0, 0, 0o040755, 0),
                ("etc/x".into(), 0, 0, 0o100600, 5),
            ]
        );
    }

    #[test]
    fn host_key_line_decodes() {
        assert_eq!(host_key_blob("ecdsa-sha2-nistp256 aGVsbG8= root@x").unwrap(), b"hello");
        assert!(host_key_blob("garbage").is_err());
    }
}
