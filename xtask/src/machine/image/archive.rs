//! An archive's contents by guest path, its hash (part of the image key) and its two writers:
//! a cpio archive (the initramfs, every entry owned by root) and a directory tree (for
//! mksquashfs).

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    pub(super) fn read(&self) -> anyhow::Result<Vec<u8>> {
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

    pub(super) fn add_bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added_before_children() {
        let mut plan = Plan::default();
        plan.add("/usr/bin/x", Node::Symlink { target: "/y".into() });
        let paths: Vec<&String> = plan.nodes.keys().collect();
        assert_eq!(paths, ["/usr", "/usr/bin", "/usr/bin/x"]);
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
}
