//! A fresh filesystem without mkfs in the guest. Under TCG a case's mkfs costs 0.1 to 0.2 s
//! (mkfs.xfs's start-up and the zeroing of its 64 MiB log, emulated), the largest part of a
//! short case. So mkfs runs once per filesystem and options in a run, on a device the host
//! zeroed, and the blocks it wrote are kept ([`MkfsImage`]); each later case asking for the same
//! mkfs gets its device zeroed again and those blocks written back, from the host, in a few
//! milliseconds.
//!
//! The case cannot tell the difference from a mkfs of its own on a zeroed device: the device
//! holds the same bytes (the same UUID in every case of a run, as a copied image has). Against
//! the mkfs over the last case's leftovers that it replaces, only the free space differs (zero
//! now), and a filesystem gives no file the contents of free space.
//!
//! Zeroing punches the device's part of the backing file out: tmpfs frees the pages and QEMU's
//! shared mapping of the file reads zeroes where the guest touches them next. The device's
//! part is the fsdax namespace's data: the info block and the struct pages before it are the
//! kernel's and stay. The guest drops the device's cached blocks before it mounts
//! (`CaseSpec::formatted`).

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What mkfs wrote on a zeroed device: its blocks that are not zero, in runs, by offset from
/// the device's first byte.
#[derive(Debug, PartialEq)]
pub struct MkfsImage {
    runs: Vec<(u64, Vec<u8>)>,
}

/// Compared, kept and written in blocks of this size: mkfs writes nothing smaller than a sector,
/// and a 4 KiB page is what tmpfs allocates.
const BLOCK: usize = 4096;

impl MkfsImage {
    /// The blocks of `file` from `start` on that are not zero. Only the file's data is read
    /// (SEEK_DATA): what was zeroed and not written since is a hole.
    pub fn capture(file: &Path, start: u64) -> anyhow::Result<MkfsImage> {
        let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f.metadata()?.len();
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = start;
        while at < size {
            let data = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(at)) {
                Ok(data) => data,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e).context(format!("SEEK_DATA in {}", file.display())),
            };
            let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(data))?;
            // Block-aligned from the device's start (data offsets are page-aligned anyway).
            let mut pos = start + (data - start) / BLOCK as u64 * BLOCK as u64;
            while pos < hole {
                let n = buf.len().min((hole - pos) as usize);
                f.read_exact_at(&mut buf[..n], pos)
                    .with_context(|| format!("reading {}", file.display()))?;
                for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                    if block.iter().all(|b| *b == 0) {
                        continue;
                    }
                    let off = pos - start + (i * BLOCK) as u64;
                    match runs.last_mut() {
                        Some((o, bytes)) if *o + bytes.len() as u64 == off => {
                            bytes.extend_from_slice(block)
                        }
                        _ => runs.push((off, block.to_vec())),
                    }
                }
                pos += n as u64;
            }
            at = hole;
        }
        Ok(MkfsImage { runs })
    }

    /// Zeroes `file` from `start` on and writes the image there.
    pub fn write(&self, file: &Path, start: u64) -> anyhow::Result<()> {
        zero(file, start)?;
        let f = OpenOptions::new()
            .write(true)
            .open(file)
            .with_context(|| format!("opening {}", file.display()))?;
        for (off, bytes) in &self.runs {
            f.write_all_at(bytes, start + off)
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(())
    }

    /// Whether a filesystem of this kind begins here: XFS's superblock magic at the device's
    /// first byte, ext4's at 1080 (the superblock at 1024, s_magic at 56). A copy taken from
    /// a backing file that is not the device mkfs ran on would have neither.
    pub fn holds(&self, fs: daxtest_proto::case::Fs) -> bool {
        let Some((0, first)) = self.runs.first() else { return false };
        match fs {
            daxtest_proto::case::Fs::Xfs => first.starts_with(b"XFSB"),
            daxtest_proto::case::Fs::Ext4 => first.get(1080..1082) == Some(&[0x53, 0xef][..]),
        }
    }
}

/// The first line of a saved image: a file that does not begin so is no image of ours.
const MAGIC: &[u8] = b"daxtest mkfs image 1\n";

impl MkfsImage {
    /// Writes the image to `path` (whole: a run reading it at the same time sees the old file or
    /// the new one). After the magic line, each run as its offset
    /// and length (8 bytes each, little-endian), then its bytes.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = MAGIC.to_vec();
        for (off, run) in &self.runs {
            bytes.extend(off.to_le_bytes());
            bytes.extend((run.len() as u64).to_le_bytes());
            bytes.extend(run);
        }
        crate::machine::vm::write_whole(path, &bytes)
    }

    /// The image [`MkfsImage::save`] wrote to `path`; None when there is none. A file that is not
    /// one whole image is an error (the caller takes the image anew).
    pub fn load(path: &Path) -> anyhow::Result<Option<MkfsImage>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(format!("reading {}", path.display())),
        };
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .with_context(|| format!("{} is not a saved mkfs image", path.display()))?;
        let mut runs = Vec::new();
        while !rest.is_empty() {
            let number = |at: &[u8]| at.try_into().map(u64::from_le_bytes).ok();
            let run = (|| {
                let (off, len) = (number(rest.get(..8)?)?, number(rest.get(8..16)?)?);
                let data = rest.get(16..16usize.checked_add(usize::try_from(len).ok()?)?)?;
                Some((off, data))
            })();
            let (off, data) =
                run.with_context(|| format!("{} ends inside a run", path.display()))?;
            runs.push((off, data.to_vec()));
            rest = &rest[16 + data.len()..];
        }
        Ok(Some(MkfsImage { runs }))
    }
}

/// Where the image of one mkfs (`fs` and its `options`) on a device of `kind` and `size` bytes is
/// kept, in the guest image's directory `image_dir`.
pub fn cache_path(
    image_dir: &Path,
    kind: daxtest_proto::Device,
    size: u64,
    fs: daxtest_proto::case::Fs,
    options: &[String],
) -> std::path::PathBuf {
    let key = format!("{kind} {size} {fs} {}", options.join("\0"));
    image_dir.join("mkfs").join(format!("{fs}-{}.img", crate::names::hash(key.as_bytes())))
}

/// Zeroes `file` from `start` to its end: punched out, so the blocks cost nothing until written.
pub fn zero(file: &Path, start: u64) -> anyhow::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let size = f.metadata()?.len();
    let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&f, flags, start, size.saturating_sub(start))
        .with_context(|| format!("punching {} from {start} on", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxtest_proto::case::Fs;

    const START: u64 = 2 << 20;

    /// A backing file with a kernel part that must stay, and a device of 8 MiB.
    fn backing(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("nvdimm0");
        let f = File::create(&path).unwrap();
        f.set_len(START + (8 << 20)).unwrap();
        f.write_all_at(&[0x5a; START as usize], 0).unwrap();
        path
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_written_image_is_the_device_as_mkfs_left_it_on_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let path = backing(dir.path());
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        // "mkfs": a superblock, a block two blocks on, and a run across a 1 MiB boundary.
        let mut sb = vec![0u8; 512];
        sb[..4].copy_from_slice(b"XFSB");
        f.write_all_at(&sb, START).unwrap();
        f.write_all_at(&[7; 100], START + 3 * 4096 + 10).unwrap();
        f.write_all_at(&[9; 3 * 4096], START + (1 << 20) - 4096).unwrap();
        let made = read(&path);
        let image = MkfsImage::capture(&path, START).unwrap();
        assert_eq!(image.runs.len(), 3, "{:?}", image.runs.iter().map(|r| r.0).collect::<Vec<_>>());
        assert_eq!(image.runs.iter().map(|(_, b)| b.len()).sum::<usize>(), 5 * 4096);
        assert!(image.holds(Fs::Xfs) && !image.holds(Fs::Ext4));

        // A case's leftovers everywhere on the device, then the image again.
        f.write_all_at(&vec![0xee; 8 << 20], START).unwrap();
        image.write(&path, START).unwrap();
        assert!(read(&path) == made, "the device differs from mkfs's on zeroes");
    }

    #[test]
    fn a_saved_image_loads_as_it_was_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = MkfsImage { runs: vec![(0, b"XFSB".repeat(1024)), (3 << 20, vec![7; 8192])] };
        let path = dir.path().join("mkfs").join("xfs.img");
        assert_eq!(MkfsImage::load(&path).unwrap(), None);
        image.save(&path).unwrap();
        assert_eq!(MkfsImage::load(&path).unwrap(), Some(image));
        // Cut short, or not ours at all.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = MkfsImage::load(&path).unwrap_err().to_string();
        assert!(e.ends_with("ends inside a run"), "{e}");
        std::fs::write(&path, b"XFSB").unwrap();
        assert!(MkfsImage::load(&path).is_err());
        // An empty image (mkfs wrote nothing) is one too.
        let empty = MkfsImage { runs: vec![] };
        empty.save(&path).unwrap();
        assert_eq!(MkfsImage::load(&path).unwrap(), Some(empty));
    }

    #[test]
    fn each_mkfs_device_kind_and_size_has_a_file_of_its_own() {
        use daxtest_proto::Device;
        let d = Path::new("/img");
        let p = |kind, size, fs, opts: &[&str]| {
            cache_path(d, kind, size, fs, &opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        };
        let xfs = p(Device::Nvdimm, 1 << 30, Fs::Xfs, &["-m", "reflink=1"]);
        assert!(xfs.starts_with("/img/mkfs") && xfs.to_string_lossy().contains("/xfs-"));
        assert_eq!(xfs, p(Device::Nvdimm, 1 << 30, Fs::Xfs, &["-m", "reflink=1"]));
        assert_ne!(xfs, p(Device::Nvdimm4k, 1 << 30, Fs::Xfs, &["-m", "reflink=1"]));
        assert_ne!(xfs, p(Device::Nvdimm, 2 << 30, Fs::Xfs, &["-m", "reflink=1"]));
        assert_ne!(xfs, p(Device::Nvdimm, 1 << 30, Fs::Xfs, &["-m reflink=1"]));
        assert_ne!(xfs, p(Device::Nvdimm, 1 << 30, Fs::Ext4, &["-m", "reflink=1"]));
    }

    #[test]
    fn zeroing_leaves_the_kernel_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = backing(dir.path());
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[1; 4096], START + 4096).unwrap();
        zero(&path, START).unwrap();
        let bytes = read(&path);
        assert!(bytes[..START as usize].iter().all(|b| *b == 0x5a));
        assert!(bytes[START as usize..].iter().all(|b| *b == 0));
        assert!(MkfsImage::capture(&path, START).unwrap().runs.is_empty());
    }

    #[test]
    fn a_copy_without_the_filesystems_superblock_is_not_taken_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = backing(dir.path());
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"XFSB", START + 4096)
            .unwrap();
        let image = MkfsImage::capture(&path, START).unwrap();
        assert!(!image.holds(Fs::Xfs) && !image.holds(Fs::Ext4));
    }
}
