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

/// Which way a `direct_io` step moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDirection {
    /// From the file into the mapping.
    Read,
    /// From the mapping into the file.
    Write,
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
    /// FS_IOC_FSGETXATTR, change FS_XFLAG_DAX, FS_IOC_FSSETXATTR.
    SetFlag {
        file: String,
        on: bool,
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
    },
    Munmap {
        map: String,
    },
    /// Store `len` bytes of `pattern` through a mapping, at `offset` into it.
    Store {
        map: String,
        offset: u64,
        len: u64,
        pattern: char,
    },
    /// Load through a mapping; observed as byte runs.
    Load {
        map: String,
        offset: u64,
        len: u64,
    },
    Msync {
        map: String,
    },
    /// O_DIRECT I/O between `file` and mapping `map`, done by the process that holds the
    /// mapping: `read` preads `len` bytes of the file at `offset` into the mapping at
    /// `map_offset`, `write` pwrites them from there. The kernel pins the mapping's pages
    /// (get_user_pages): DAX pages, when the mapping is of a DAX file. Offsets and `len` are
    /// multiples of 4096, as O_DIRECT wants.
    DirectIo {
        map: String,
        map_offset: u64,
        file: String,
        offset: u64,
        len: u64,
        direction: IoDirection,
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
    /// Close everything, unmount, mount again with the same options.
    Remount,
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
    /// agent mounts the filesystem (log recovery), unmounts it, checks it (xfs_repair -n,
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

/// store_loop's record: an 8-byte number at the start of every 64 bytes of the mapping.
pub const RECORD: usize = 64;

/// How store_loop reports a completed record on the serial console: this, then its index.
pub const RECORD_MARK: &str = "@daxtest-record ";

/// race_store_clone's slot: one 8-byte value at the start of every 512 bytes of the mapping.
pub const RACE_SLOT: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_are_the_scenario_words() {
        assert_eq!(Op::Evict.name(), "evict");
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
