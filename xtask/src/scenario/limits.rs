//! What a step's arguments may be beyond their types: paths that stay inside the filesystem
//! under test, byte counts the agent can hold in memory, ranges that fit in a file offset, and
//! the dax mount options the kernel knows. Each problem is a message that names the fix.

use super::MOUNT_POINT;
use daxtest_proto::case::{Op, MAX_PROFILE_SAMPLES};

/// The most bytes one write, read, store or load may move. The agent holds them in memory: a
/// write or read buffer of `len` bytes, and for a load up to three copies (the buffer, the
/// copy-on-write copy the forked child fills, the bytes read back from it), in a guest of 1 GiB
/// (images/recipe.toml [vm] memory_mib) whose NVDIMM is 1 GiB by default. 64 MiB keeps a load
/// under 200 MiB; the catalogue's largest I/O is 16 MiB (a swap file).
pub const MAX_IO: u64 = 64 << 20;

/// What O_DIRECT wants file offsets, lengths and buffer addresses to be multiples of: the
/// logical block size of the guest's pmem devices (512, /sys/block/pmem0/queue/logical_block_size;
/// dma_alignment 511). fs/xfs/xfs_file.c xfs_file_dio_write (bt_logical_sectormask) and
/// fs/iomap/direct-io.c iomap_dio_bio_iter (bdev_logical_block_size, bdev_iter_is_aligned)
/// refuse others with EINVAL; a mapping starts page-aligned, so map_offset decides the address.
const DIRECT_IO_ALIGN: u64 = 512;

/// The largest file offset (off_t): the agent passes offsets to the kernel as i64, so a larger
/// one would arrive negative and test something else than the step says.
/// What a `poison` step poisons: one page (madvise(MADV_HWPOISON) works page by page).
pub const POISON_LEN: u64 = 4096;

const MAX_OFFSET: u64 = i64::MAX as u64;

/// What `dax` may say in a mount option (Documentation/filesystems/dax.rst; `dax` alone is the
/// old spelling of dax=always).
const DAX_OPTIONS: &[&str] = &["dax", "dax=always", "dax=inode", "dax=never"];

/// Every problem with the arguments of `op`, each a message with its fix.
pub fn problems(op: &Op) -> Vec<String> {
    // Op::name serialises the op: only for a step that has a problem.
    let name = || op.name();
    let mut out: Vec<String> =
        op_paths(op).into_iter().filter_map(|(key, path)| path_problem(op, key, path)).collect();
    if let Some(len) = io_len(op) {
        if len == 0 {
            let why = match op {
                Op::Read { .. } | Op::Load { .. } => "it passes any content check",
                _ => "no byte reaches the file",
            };
            out.push(format!(
                "{} len = 0 moves no byte, so the step checks nothing ({why}): give the number \
                 of bytes",
                name()
            ));
        } else if len > MAX_IO {
            out.push(format!(
                "{} len = {len}: at most {MAX_IO} bytes ({} MiB) per write, read, store or load, \
                 which the agent holds in the guest's memory: split it into several steps",
                name(),
                MAX_IO >> 20
            ));
        }
    }
    if let Op::MappedBufferIo { map_offset, offset, len, direct: true, .. } = op {
        let odd: Vec<String> = [("map_offset", map_offset), ("offset", offset), ("len", len)]
            .iter()
            .filter(|(_, v)| **v % DIRECT_IO_ALIGN != 0)
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        if !odd.is_empty() {
            out.push(format!(
                "mapped_buffer_io {} with direct = true: O_DIRECT wants every offset and \
                 length a multiple of the device's {DIRECT_IO_ALIGN}-byte logical block (the \
                 kernel refuses others with EINVAL): round them, or say direct = false",
                odd.join(", ")
            ));
        }
    }
    if let Op::StoreProfile { offset, len, stride, .. } = op {
        out.extend(profile_problem(*offset, *len, *stride));
    }
    if let Op::Mremap { len: Some(0), .. } = op {
        out.push(
            "mremap len = 0: the kernel refuses a mapping of no bytes (EINVAL); give the new \
             length in bytes, or leave len out to keep the mapping's"
                .into(),
        );
    }
    if let Op::Poison { offset, .. } = op {
        if offset % POISON_LEN != 0 {
            out.push(format!(
                "poison offset = {offset}: it poisons one page, so the offset into the mapping \
                 is a multiple of {POISON_LEN}: write {}",
                offset / POISON_LEN * POISON_LEN
            ));
        }
    }
    for (what, end) in file_ranges(op) {
        if end.is_none_or(|end| end > MAX_OFFSET) {
            out.push(format!(
                "{} {what} is past the largest file offset (2^63 - 1 = {MAX_OFFSET}): give a \
                 smaller offset or length",
                name()
            ));
        }
    }
    out
}

/// The path arguments of `op`, by their key in the scenario file (relative to the mount point).
pub fn op_paths(op: &Op) -> Vec<(&'static str, &str)> {
    match op {
        Op::Create { file }
        | Op::Write { file, .. }
        | Op::Read { file, .. }
        | Op::Fsync { file }
        | Op::Truncate { file, .. }
        | Op::Fallocate { file, .. }
        | Op::Statx { file }
        | Op::GetFlag { file }
        | Op::SetFlag { file, .. }
        | Op::Exec { file, .. }
        | Op::Unlink { file }
        | Op::Open { file, .. }
        | Op::Mmap { file, .. }
        | Op::Fiemap { file, .. }
        | Op::Mkswap { file }
        | Op::Swapon { file }
        | Op::Swapoff { file }
        | Op::RaceToggleWrite { file, .. }
        | Op::RaceStoreClone { file, .. }
        | Op::RaceDirectIoRemove { file, .. }
        | Op::MappedBufferIo { file, .. } => vec![("file", file)],
        Op::Mkdir { dir } => vec![("dir", dir)],
        Op::Clone { src, dst } | Op::CloneRange { src, dst, .. } => {
            vec![("src", src), ("dst", dst)]
        }
        Op::Rename { from, to } => vec![("from", from), ("to", to)],
        // No path: names of handles and mappings, the mount point itself, a shell command (the
        // escape hatch, run in the mount point).
        Op::Close { .. }
        | Op::Munmap { .. }
        | Op::Msync { .. }
        | Op::Mprotect { .. }
        | Op::Mremap { .. }
        | Op::StoreProfile { .. }
        | Op::Store { .. }
        | Op::Load { .. }
        | Op::RacePrivateCow { .. }
        | Op::Poison { .. }
        | Op::Evict
        | Op::Remount { .. }
        | Op::PowerCut
        | Op::StoreLoop { .. }
        | Op::Freeze
        | Op::Thaw
        | Op::Sleep { .. }
        | Op::Shell { .. } => vec![],
    }
}

/// A path must name something inside the filesystem under test: the agent joins it to the mount
/// point, so an absolute path replaces the mount point and `..` climbs out of it.
fn path_problem(op: &Op, key: &str, path: &str) -> Option<String> {
    let why = if path.is_empty() {
        "name a file or directory under the case's mount point, such as \"f\" or \"d/f\"".into()
    } else if path.contains('\0') {
        "a path cannot hold a NUL byte (the kernel reads it as the end of the path): remove it"
            .into()
    } else if path.starts_with('/') {
        format!(
            "paths are relative to the case's mount point ({MOUNT_POINT}), and an absolute one \
             would leave the filesystem under test: write {:?}",
            path.trim_start_matches('/')
        )
    } else if path.split('/').any(|c| c == "..") {
        "a \"..\" component can leave the filesystem under test: name the path from the case's \
         mount point, without \"..\""
            .into()
    } else {
        return None;
    };
    Some(format!("{} {key} = {path:?}: {why}", op.name()))
}

/// A store_profile's range: whole strides of whole pages, at most MAX_PROFILE_SAMPLES of them.
fn profile_problem(offset: u64, len: u64, stride: u64) -> Option<String> {
    const PAGE: u64 = 4096;
    if stride == 0 || !stride.is_multiple_of(PAGE) {
        return Some(format!(
            "store_profile stride = {stride}: one first store per stride, so a stride is whole \
             pages: 4096 (a sample per 4 KiB page) or 2097152 (a sample per 2 MiB, where PMD \
             faults can serve it)"
        ));
    }
    if !offset.is_multiple_of(PAGE) {
        return Some(format!(
            "store_profile offset = {offset}: the first store of each stride is at its start, \
             so the range starts on a page: write {}",
            offset / PAGE * PAGE
        ));
    }
    if len == 0 || !len.is_multiple_of(stride) {
        return Some(format!(
            "store_profile len = {len}: the range is a whole number of strides ({stride} bytes \
             each), one sample each: write {}",
            (len / stride).max(1) * stride
        ));
    }
    (len / stride > MAX_PROFILE_SAMPLES).then(|| {
        format!(
            "store_profile len = {len}: {} strides, at most {MAX_PROFILE_SAMPLES} samples per \
             step (each travels in results.json): split it into several steps",
            len / stride
        )
    })
}

/// The byte count of a step that moves bytes through a buffer or a mapping.
fn io_len(op: &Op) -> Option<u64> {
    match op {
        Op::Write { len, .. }
        | Op::Read { len, .. }
        | Op::Store { len, .. }
        | Op::Load { len, .. }
        | Op::MappedBufferIo { len, .. } => Some(*len),
        _ => None,
    }
}

/// The file ranges of `op` (what, end offset; None when offset + len overflows).
fn file_ranges(op: &Op) -> Vec<(String, Option<u64>)> {
    let range = |offset_key: &str, offset: u64, len: u64| {
        (format!("{offset_key} {offset} + len {len}"), offset.checked_add(len))
    };
    match op {
        Op::Write { offset, len, .. }
        | Op::Read { offset, len, .. }
        | Op::Fallocate { offset, len, .. }
        | Op::Mmap { offset, len, .. }
        | Op::MappedBufferIo { offset, len, .. } => vec![range("offset", *offset, *len)],
        // The mapping's range: past it, the lint says so; an overflow is said here.
        Op::StoreProfile { offset, len, .. } => vec![range("offset", *offset, *len)],
        Op::CloneRange { src_offset, len, dst_offset, .. } => {
            vec![range("src_offset", *src_offset, *len), range("dst_offset", *dst_offset, *len)]
        }
        Op::Truncate { size, .. } => vec![(format!("size {size}"), Some(*size))],
        _ => vec![],
    }
}

/// The problem with one value of the mount matrix: a dax option the kernel does not know, or
/// more than one (the kernel applies the last, the agent's verify_dax_state reads the first).
pub fn mount_problem(mount: &str) -> Option<String> {
    let dax: Vec<&str> = mount.split(',').filter(|o| o.starts_with("dax")).collect();
    if let Some(bad) = dax.iter().find(|o| !DAX_OPTIONS.contains(o)) {
        return Some(format!(
            "mount option {mount:?}: {bad:?} is not a DAX mode: write dax=always, dax=inode or \
             dax=never"
        ));
    }
    (dax.len() > 1).then(|| {
        format!("mount option {mount:?} sets DAX {} times: keep one dax=... option", dax.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_mount() {
        let create = Op::Create { file: String::new() };
        for ok in ["f", "d/f", "d/", ".", "a.b", "..f", "f..", "d/.../f"] {
            assert_eq!(path_problem(&create, "file", ok), None, "{ok:?}");
        }
        let refused = [
            ("", "name a file or directory under the case's mount point"),
            ("/etc/x", "paths are relative to the case's mount point (/mnt/test)"),
            ("//etc/x", "write \"etc/x\""),
            ("..", "a \"..\" component can leave the filesystem under test"),
            ("../../etc/x", "a \"..\" component"),
            ("a/../../b", "a \"..\" component"),
            ("a/..", "a \"..\" component"),
            ("a\0b", "a path cannot hold a NUL byte"),
        ];
        for (path, want) in refused {
            let e = path_problem(&create, "file", path).unwrap_or_default();
            assert!(e.contains(want), "{path:?}: want {want:?} in {e:?}");
        }
    }

    #[test]
    fn every_path_of_every_op_is_checked() {
        let op = |json: &str| -> Op { serde_json::from_str(json).unwrap() };
        let bad = "../x";
        let ops = [
            op(r#"{"op":"mkdir","dir":"../x"}"#),
            op(r#"{"op":"clone","src":"f","dst":"../x"}"#),
            op(
                r#"{"op":"clone_range","src":"../x","dst":"g","src_offset":0,"len":0,"dst_offset":0}"#,
            ),
            op(r#"{"op":"rename","from":"f","to":"../x"}"#),
            op(r#"{"op":"race_store_clone","map":"m","file":"../x","rounds":1}"#),
        ];
        for op in ops {
            let p = problems(&op);
            assert_eq!(p.len(), 1, "{op:?}: {p:?}");
            assert!(p[0].contains(&format!("{bad:?}")), "{p:?}");
        }
    }

    #[test]
    fn sizes_and_ranges() {
        let write =
            |offset: u64, len: u64| Op::Write { file: "f".into(), offset, len, pattern: 'a' };
        assert!(problems(&write(0, MAX_IO)).is_empty());
        assert!(problems(&write(0, MAX_IO + 1))[0].contains("at most 67108864 bytes (64 MiB)"));
        assert!(problems(&write(0, 0))[0].contains("len = 0 moves no byte"));
        let load = Op::Load { map: "m".into(), offset: 0, len: 0, fork: false };
        assert!(problems(&load)[0].starts_with(
            "load len = 0 moves no byte, so the step checks \
             nothing (it passes any content check)"
        ));
        assert!(problems(&write(MAX_OFFSET - 4096, 4096)).is_empty());
        assert!(problems(&write(MAX_OFFSET, 1))[0].contains("past the largest file offset"));
        assert!(problems(&write(u64::MAX, 1))[0].contains("offset 18446744073709551615 + len 1"));
        let clone = Op::CloneRange {
            src: "f".into(),
            dst: "g".into(),
            src_offset: 0,
            len: 0,
            dst_offset: u64::MAX,
        };
        // len 0 clones to the end of the source (FICLONERANGE): not a zero-length step.
        assert_eq!(problems(&clone).len(), 1);
        assert!(problems(&clone)[0].starts_with("clone_range dst_offset 18446744073709551615"));
    }

    #[test]
    fn mremap_needs_bytes() {
        let mremap = |len| Op::Mremap { map: "m".into(), len };
        assert!(problems(&mremap(None)).is_empty());
        assert!(problems(&mremap(Some(4096))).is_empty());
        assert!(problems(&mremap(Some(0)))[0].starts_with("mremap len = 0: the kernel refuses"));
    }

    #[test]
    fn mount_options_are_dax_modes() {
        for ok in ["dax", "dax=always", "dax=inode", "dax=never", "noatime,dax=always"] {
            assert_eq!(mount_problem(ok), None, "{ok}");
        }
        let e = mount_problem("dax=sometimes").unwrap();
        assert!(e.starts_with("mount option \"dax=sometimes\": \"dax=sometimes\" is not"), "{e}");
        assert!(mount_problem("daxx").is_some());
        assert!(mount_problem("dax=always,dax=never").unwrap().contains("sets DAX 2 times"));
    }
}
