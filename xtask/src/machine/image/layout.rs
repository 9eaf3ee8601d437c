//! What goes where in the image: the boot archive and the payload disk, the host programs with
//! the libraries ldd finds for them, and the kernel modules staged with a depmod index.

use super::archive::{Node, Plan, Source};
use super::PAYLOAD_MOUNT;
use crate::machine::kernel::{Chain, Kernel};
use crate::recipe::Recipe;
use anyhow::{bail, Context};
use daxtest_proto::{ModuleChain, AGENT_PATH};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// The two parts of the image: what the boot needs, and the payload disk.
#[derive(Debug, Default)]
pub struct Layout {
    pub boot: Plan,
    pub payload: Plan,
}

impl Layout {
    /// Adds a file to the boot archive, or to the payload unless the boot archive has it. A file
    /// in the payload that a boot file turns out to need moves to the boot archive.
    pub(super) fn add_file(&mut self, path: &str, node: Node, boot: bool) {
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
    pub(super) fn link_payload(&mut self) {
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

/// Everything that does not depend on the kernel or on freshly generated keys.
pub(super) fn base_layout(sh: &Shell, recipe: &Recipe, agent: &Path) -> anyhow::Result<Layout> {
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

/// The modules the image carries: loaded at boot, or at first use through modprobe.
pub(super) struct Modules {
    pub(super) boot: Vec<Chain>,
    pub(super) on_demand: Vec<Chain>,
}

/// Decompresses every module into a module tree under `stage` and indexes it with depmod (so the
/// guest's modprobe resolves aliases such as fs-xfs). Boot modules and the index go into the
/// boot archive, the others into the payload. Returns the boot chains with their guest paths.
pub(super) fn stage_modules(
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
}
