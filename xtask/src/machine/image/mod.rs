//! Builds the guest image: a small uncompressed initramfs with what the boot needs (the agent as
//! /init, busybox, dropbear, mkfs.ext4, the boot modules, keys) and a read-only squashfs
//! "payload" disk with everything else (xfsprogs, ndctl, kmod, on-demand modules such as xfs.ko),
//! which the agent mounts at /payload; every payload file has a symlink at its own path in the
//! initramfs, so the guest sees one ordinary tree.
//!
//! Why two parts: under TCG a large initramfs delays init (measured: a 30 MB archive starts init
//! 0.7 s later than a 2 MB one, compressed or not; the boot's 12 MB, uncompressed, no later than
//! the 2 MB one: see `build`), while a squashfs on virtio-blk costs only what is read. Modules
//! are stored decompressed (in-kernel xz is slow under TCG) with a fresh depmod index, so the
//! guest's modprobe (kmod) loads on-demand modules.
//!
//! Cached under a content hash of every input; built in a private directory and renamed into
//! place, so concurrent builds never see half an image. Every file is owned by root in the guest
//! whoever builds it (cpio headers written here, `mksquashfs -all-root`).

mod archive;
mod layout;
mod quick;

pub use archive::{Node, Plan, Source};
pub use layout::Layout;
use layout::{base_layout, stage_modules, Modules};
use quick::{quick_hit, quick_key, remember_quick};

use crate::machine::kernel::{self, Kernel};
use crate::recipe::Recipe;
use anyhow::{bail, Context};
use base64::Engine;
use daxtest_proto::{BootConfig, Payload, BOOT_CONFIG_PATH};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use xshell::{cmd, Shell};

/// What `build` adds beyond the layout (keys, the sshd command, the boot configuration's shape)
/// is not hashed: change this with it, so no cached image of the old shape is reused.
const BUILD_FORMAT: &str = "2";
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
        self.dir.join("initramfs.cpio")
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
    h.update(BUILD_FORMAT);
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

/// The erofs the boot's DAX proof mounts: one plain 4 KiB file (not inlined in its inode: only
/// a block-mapped file gets S_DAX), made here so that the guest runs no mkfs on its path to
/// ready and its initramfs carries no mkfs.erofs with its libraries.
fn dax_proof_image(sh: &Shell, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("probe"), vec![b'd'; 4096])?;
    let img = dir.join("proof.erofs");
    cmd!(sh, "mkfs.erofs --quiet -Enoinline_data -T0 --all-root {img} {src}").run()?;
    Ok(std::fs::read(&img)?)
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
    layout.boot.add_bytes(
        daxtest_proto::DAX_PROOF_IMAGE_PATH,
        dax_proof_image(sh, &stage.join("dax-proof"))?,
        0o644,
    );
    let module_chains = stage_modules(sh, kernel, modules, &mut layout, &stage.join("modules"))?;
    let ssh_port = daxtest_proto::GUEST_SSH_PORT.to_string();
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
            &ssh_port,
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
    // Not compressed either: LZ4 cost the kernel 0.08 s of decompression, the plain copy
    // nothing measurable at this size (median guest uptime at poweroff of 12 boots each under
    // TCG, this initramfs followed by the bare one's init: 2.126 s uncompressed, 12 MB; 2.204 s
    // as LZ4; 2.128 s for the 2 MB bare initramfs alone).
    layout.boot.write_cpio(&out.join("initramfs.cpio"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_line_decodes() {
        assert_eq!(host_key_blob("ecdsa-sha2-nistp256 aGVsbG8= root@x").unwrap(), b"hello");
        assert!(host_key_blob("garbage").is_err());
    }
}
