//! The operations a step can do, as scenario files name them.

use serde::{Deserialize, Serialize};

/// How an mmap is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    /// MAP_SHARED
    Shared,
    /// MAP_SHARED_VALIDATE | MAP_SYNC (needs DAX: EOPNOTSUPP otherwise)
    Sync,
    /// MAP_PRIVATE
    Private,
}

/// What a mapping lets its process do (mmap's `prot`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prot {
    /// PROT_READ | PROT_WRITE, of a file opened O_RDWR (O_RDONLY for a private mapping).
    #[default]
    ReadWrite,
    /// PROT_READ, of a file opened O_RDONLY: the mapping can never be made writable.
    Read,
}

/// An inode flag that `set_flag` changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InodeFlag {
    /// FS_XFLAG_DAX, through FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR.
    #[default]
    Dax,
    /// FS_JOURNAL_DATA_FL (chattr +j, ext4's data journaling), through FS_IOC_GETFLAGS /
    /// FS_IOC_SETFLAGS.
    JournalData,
}

/// Which way a `mapped_buffer_io` step moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDirection {
    /// From the file into the mapping.
    Read,
    /// From the mapping into the file.
    Write,
}

/// How `race_direct_io_remove` takes the mapped file's blocks away (fstests generic/503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// fallocate(PUNCH_HOLE | KEEP_SIZE) over the mapped range.
    PunchHole,
    /// fallocate(ZERO_RANGE | KEEP_SIZE) over the mapped range.
    ZeroRange,
    /// ftruncate to 0, then fallocate the range again.
    Truncate,
    /// fallocate the range, COLLAPSE_RANGE its first 4 KiB, fallocate it again.
    CollapseRange,
}

impl Removal {
    /// Whether the mapping keeps its pages through the removal: a read into it must then move
    /// every byte. Truncate and collapse take pages away for a moment (EFAULT or a short read).
    pub fn keeps_size(self) -> bool {
        matches!(self, Removal::PunchHole | Removal::ZeroRange)
    }
}

/// fallocate(2) modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallocMode {
    /// 0: allocate (unwritten extents), extend the size.
    Default,
    KeepSize,
    PunchHole,
    ZeroRange,
    CollapseRange,
    InsertRange,
    UnshareRange,
}

/// An operation. Paths are relative to the case's mount point; handles and maps are names
/// that later steps use to refer to an open file descriptor or a mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// open(O_CREAT|O_WRONLY), close.
    Create {
        file: String,
    },
    Mkdir {
        dir: String,
    },
    /// pwrite `len` bytes of `pattern` at `offset`, creating the file if needed.
    Write {
        file: String,
        offset: u64,
        len: u64,
        pattern: char,
    },
    /// pread; observed as byte runs.
    Read {
        file: String,
        offset: u64,
        len: u64,
    },
    Fsync {
        file: String,
    },
    Truncate {
        file: String,
        size: u64,
    },
    Fallocate {
        file: String,
        mode: FallocMode,
        offset: u64,
        len: u64,
    },
    /// statx: observed STATX_ATTR_DAX.
    Statx {
        file: String,
    },
    /// FS_IOC_FSGETXATTR: observed FS_XFLAG_DAX.
    GetFlag {
        file: String,
    },
    /// Reads the inode's flags, sets or clears `flag` (FS_XFLAG_DAX unless named), writes them.
    SetFlag {
        file: String,
        on: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        flag: InodeFlag,
    },
    /// FICLONE: `dst` (created or truncated) becomes a clone of `src`.
    Clone {
        src: String,
        dst: String,
    },
    /// FICLONERANGE.
    CloneRange {
        src: String,
        dst: String,
        src_offset: u64,
        len: u64,
        dst_offset: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        file: String,
    },
    /// Keep a file descriptor open (O_RDWR) under `handle` until `close` or `evict`.
    Open {
        file: String,
        handle: String,
    },
    Close {
        handle: String,
    },
    Mmap {
        file: String,
        map: String,
        offset: u64,
        len: u64,
        kind: MapKind,
        #[serde(default, skip_serializing_if = "is_default")]
        prot: Prot,
    },
    Munmap {
        map: String,
    },
    /// Store `len` bytes of `pattern` through a mapping, at `offset` into it. `fork`: by a child
    /// the mapping's process forks for this access (it inherits the mapping, not necessarily its
    /// page-table entries), which reports and exits.
    Store {
        map: String,
        offset: u64,
        len: u64,
        pattern: char,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fork: bool,
    },
    /// Load through a mapping; observed as byte runs. `fork` as for `Store`.
    Load {
        map: String,
        offset: u64,
        len: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fork: bool,
    },
    Msync {
        map: String,
    },
    /// The first store to every `stride` bytes of [offset, offset+len) of a mapping, one after
    /// another in the mapping's process, each timed (CLOCK_MONOTONIC before and after a volatile
    /// one-byte store of `pattern`): what a page fault costs. Observed as the samples, the faults
    /// by size (the fs_dax tracepoints) and the metadata work they caused (XFS log forces, ext4
    /// journal commits); measured and recorded in results.json, never judged by time.
    StoreProfile {
        map: String,
        offset: u64,
        len: u64,
        stride: u64,
        pattern: char,
    },
    /// mprotect(2) of the whole mapping, by its process: `read` makes it PROT_READ, `read_write`
    /// PROT_READ|PROT_WRITE (refused with EACCES for a shared mapping of a file opened
    /// read-only, as mmap's `prot = "read"` opens it).
    Mprotect {
        map: String,
        prot: Prot,
    },
    /// mremap(2) of the whole mapping, by its process, to a new 2 MiB-aligned address it
    /// reserves first (MREMAP_MAYMOVE|MREMAP_FIXED), with a new length when `len` says; later
    /// steps reach the mapping there, at the same offsets.
    Mremap {
        map: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<u64>,
    },
    /// read(2) or write(2) of `file` whose buffer is mapping `map` (fstests generic/413), done
    /// by the process that holds the mapping: `read` preads `len` bytes of the file at `offset`
    /// into the mapping at `map_offset`, `write` pwrites them from there. With `direct` the file
    /// is opened O_DIRECT and, for a page-cache file, the kernel pins the mapping's pages for
    /// the bio (get_user_pages: DAX pages when the mapping is of a DAX file), so offsets and
    /// `len` are multiples of the device's 512-byte logical block; without it the kernel copies
    /// through the mapping (copy_from_user / copy_to_user), faulting it in as it goes.
    MappedBufferIo {
        map: String,
        map_offset: u64,
        file: String,
        offset: u64,
        len: u64,
        direction: IoDirection,
        direct: bool,
    },
    /// madvise(MADV_HWPOISON) on the page at `offset` of mapping `map`, by the process that holds
    /// it: the kernel handles a (simulated) memory failure of the DAX page behind it
    /// (mm/memory-failure.c). Every process the kernel picks for the page gets SIGBUS: the
    /// caller with BUS_MCEERR_AR, early-kill processes with BUS_MCEERR_AO. `offset` is a
    /// multiple of 4096.
    Poison {
        map: String,
        offset: u64,
    },
    /// FIEMAP over [offset, offset+len) (len 0: to EOF); `save` keeps the result under a name.
    Fiemap {
        file: String,
        offset: u64,
        len: u64,
        save: Option<String>,
    },
    /// Close every handle and mapping, syncfs, drop caches: the inode is evicted and reloaded.
    Evict,
    /// Close everything, unmount, mount again with the same options; `read_only`: with
    /// MS_RDONLY as well (a later `remount` without it makes the mount writable again).
    Remount {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
    Mkswap {
        file: String,
    },
    Swapon {
        file: String,
    },
    Swapoff {
        file: String,
    },
    /// FIFREEZE / FITHAW on the mount point.
    Freeze,
    Thaw,
    /// Race: one process toggles FS_XFLAG_DAX `rounds` times while another writes record i
    /// (4 KiB) at offset i * 4 KiB; afterwards every record must read back intact, then again
    /// after the inode is evicted and after a remount. Ends every handle and mapping (as
    /// `remount` does); a race in which the file's DAX mode never changed is an error.
    RaceToggleWrite {
        file: String,
        rounds: u64,
    },
    /// Race: one thread stores pass numbers through mapping `map` (8-byte slots, one per 512
    /// bytes) while another clones the file `rounds` times (`<file>.clone<N>`); afterwards the
    /// source must hold every last value, and every slot of every clone a pass between the ones
    /// running when its FICLONE began and when it returned.
    RaceStoreClone {
        map: String,
        file: String,
        rounds: u64,
    },
    /// Runs the program `file` (a path in the filesystem under test, no shell) with `args`, in
    /// the mount point; observed as its exit status (or the signal that killed it). Its text is
    /// mapped MAP_PRIVATE from the file: on a DAX mount, its pages are the NVDIMM's.
    Exec {
        file: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
    },
    /// Race (fstests generic/503): two threads of the process that holds mapping `map` each, for
    /// `rounds` rounds, read the whole of `file` with O_DIRECT into the mapping (its DAX pages
    /// pinned by get_user_pages for the bio) and then take the mapped file's blocks away as
    /// `remove` says. The filesystem must wait for the pins (break the DAX layouts) before it
    /// frees the blocks. Judged: no hang, no kernel warning, every fallocate and truncate
    /// succeeds, and where the pages stay (punch_hole, zero_range) every read moves every byte.
    RaceDirectIoRemove {
        map: String,
        file: String,
        remove: Removal,
        rounds: u64,
    },
    /// Race (fstests generic/437): the process that holds mapping `map`, `rounds` times, maps
    /// the same range of the same file MAP_PRIVATE and runs two threads on it that each, 10
    /// times, load and store its first byte (a read fault, then a copy-on-write fault) and drop
    /// the whole range (MADV_DONTNEED), so that huge (PMD) and 4 KiB (PTE) entries collide.
    /// Judged: no mmap, madvise or munmap fails; a hang, a crash or a kernel message (`bad pmd`
    /// where the scenario forbids it) fails the case as ever.
    RacePrivateCow {
        map: String,
        rounds: u64,
    },
    /// Records stored at an unknown moment of a power cut: the mapping's process stores record
    /// i (its number plus one, as a little-endian u64 at the start of each [`RECORD`] bytes)
    /// into one record after another to the mapping's end, each followed by msync when `msync`,
    /// and reports each completed record to the host on the serial console (written and drained
    /// before the next store). The step returns once the loop runs; the `power_cut` that must
    /// follow comes after a delay drawn from the case's seed, and checks the completed records.
    StoreLoop {
        map: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        msync: bool,
    },
    /// Power loss: the host kills the VM with no warning (no sync, no unmount) once the steps
    /// before it have run, and boots a new one on the same NVDIMM backing files: what reached
    /// the NVDIMM stays, the page cache and uncommitted metadata are lost. In the new VM the
    /// agent mounts the filesystem (log recovery), unmounts it, checks it (xfs_repair -n -P,
    /// e2fsck -fn) and mounts it again; the check's findings are this step's observation.
    /// Handles, mappings and the processes of earlier steps do not survive it.
    PowerCut,
    /// Pause (for tests of the framework itself, and for timeouts).
    Sleep {
        millis: u64,
    },
    /// A shell command in the guest (escape hatch; observed as its exit status). Processes it
    /// leaves running fail the case, unless `background` says it starts them on purpose; they
    /// are killed at the end of the case either way.
    Shell {
        command: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        background: bool,
    },
}

impl Op {
    /// The operation's name as written in scenario files.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str().map(str::to_string)))
            .unwrap_or_default()
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// store_loop's record: an 8-byte number at the start of every 64 bytes of the mapping.
pub const RECORD: usize = 64;

/// How store_loop reports a completed record on the serial console: this, then its index.
pub const RECORD_MARK: &str = "@daxtest-record ";

/// The most first stores one `store_profile` may time: its samples travel in the step's
/// observation and in results.json.
pub const MAX_PROFILE_SAMPLES: u64 = 65536;

/// race_store_clone's slot: one 8-byte value at the start of every 512 bytes of the mapping.
pub const RACE_SLOT: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fields_default_to_what_older_scenarios_meant() {
        let op = |j: &str| serde_json::from_str::<Op>(j).unwrap();
        assert_eq!(op(r#"{"op":"remount"}"#), Op::Remount { read_only: false });
        assert_eq!(
            op(r#"{"op":"set_flag","file":"f","on":true}"#),
            Op::SetFlag { file: "f".into(), on: true, flag: InodeFlag::Dax }
        );
        let mmap = r#"{"op":"mmap","file":"f","map":"m","offset":0,"len":1,"kind":"shared"}"#;
        let load = r#"{"op":"load","map":"m","offset":0,"len":1}"#;
        assert!(matches!(op(load), Op::Load { fork: false, .. }));
        assert_eq!(serde_json::to_string(&op(load)).unwrap(), load);
        let mremap = r#"{"op":"mremap","map":"m"}"#;
        assert_eq!(op(mremap), Op::Mremap { map: "m".into(), len: None });
        assert_eq!(serde_json::to_string(&op(mremap)).unwrap(), mremap);
        assert!(matches!(op(mmap), Op::Mmap { prot: Prot::ReadWrite, .. }));
        // Defaults are left out when written: every existing case's JSON stays as it was.
        assert_eq!(
            serde_json::to_string(&op(r#"{"op":"remount"}"#)).unwrap(),
            r#"{"op":"remount"}"#
        );
    }

    #[test]
    fn op_names_are_the_scenario_words() {
        assert_eq!(Op::Evict.name(), "evict");
        assert_eq!(Op::Remount { read_only: true }.name(), "remount");
        assert_eq!(
            Op::CloneRange {
                src: "a".into(),
                dst: "b".into(),
                src_offset: 0,
                len: 1,
                dst_offset: 0
            }
            .name(),
            "clone_range"
        );
    }
}
