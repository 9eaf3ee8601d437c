//! The operations on files: create, write, read, fsync, truncate, fallocate, the DAX flag and
//! its effect (statx), clone and FIEMAP.

use super::{done, errno, sys};
use daxtest_proto::case::{runs, Extent, FallocMode, InodeFlag, Observed};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

pub fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

pub fn create(path: &Path) -> Observed {
    done(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop),
    )
}

/// pwrite of `len` bytes of `byte`, creating the file if needed.
pub fn write(path: &Path, offset: u64, len: u64, byte: u8) -> Observed {
    done(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .and_then(|f| f.write_all_at(&vec![byte; len as usize], offset)),
    )
}

/// pread until `len` bytes or end of file: the observation says how many came back.
pub fn read(path: &Path, offset: u64, len: u64) -> Observed {
    let result = File::open(path).and_then(|f| {
        let mut data = vec![0u8; len as usize];
        let mut got = 0;
        while got < data.len() {
            match f.read_at(&mut data[got..], offset + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        data.truncate(got);
        Ok(data)
    });
    match result {
        Ok(data) => {
            let (runs, truncated) = runs(offset, &data);
            Observed::Bytes {
                asked: len,
                got: data.len() as u64,
                runs,
                truncated,
                faults: None,
                pmd_faults: None,
            }
        }
        Err(e) => errno(&e),
    }
}

pub fn fsync(path: &Path) -> Observed {
    done(open_rw(path).and_then(|f| f.sync_all()))
}

pub fn truncate(path: &Path, size: u64) -> Observed {
    done(open_rw(path).and_then(|f| f.set_len(size)))
}

pub fn fallocate(path: &Path, mode: FallocMode, offset: u64, len: u64) -> Observed {
    let flags = match mode {
        FallocMode::Default => 0,
        FallocMode::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
        FallocMode::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        FallocMode::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
        FallocMode::CollapseRange => libc::FALLOC_FL_COLLAPSE_RANGE,
        FallocMode::InsertRange => libc::FALLOC_FL_INSERT_RANGE,
        FallocMode::UnshareRange => libc::FALLOC_FL_UNSHARE_RANGE,
    };
    done(open_rw(path).and_then(|f| sys::fallocate(f.as_fd(), flags, offset, len)))
}

pub fn statx(path: &Path) -> Observed {
    match crate::stat::statx_dax(&path.to_string_lossy()) {
        Ok(Some(on)) => Observed::Dax(on),
        Ok(None) => Observed::Error("the filesystem does not report STATX_ATTR_DAX".into()),
        Err(e) => match e.downcast_ref::<rustix::io::Errno>() {
            Some(code) => Observed::Errno(sys::errno_name(code.raw_os_error())),
            None => Observed::Error(format!("{e:#}")),
        },
    }
}

/// Opened and closed at once: an fd held longer would change the dax=inode outcome.
pub fn get_flag(path: &Path) -> Observed {
    match File::open(path).and_then(|f| sys::get_xflags(f.as_fd())) {
        Ok(flags) => Observed::Flag(flags & sys::FS_XFLAG_DAX != 0),
        Err(e) => errno(&e),
    }
}

pub fn set_flag(path: &Path, flag: InodeFlag, on: bool) -> Observed {
    done(File::open(path).and_then(|f| match flag {
        InodeFlag::Dax => sys::set_dax_flag(f.as_fd(), on),
        InodeFlag::JournalData => sys::set_inode_flag(f.as_fd(), sys::FS_JOURNAL_DATA_FL, on),
    }))
}

/// FICLONE: `dst` is created or truncated first.
pub fn clone(src: &Path, dst: &Path) -> Observed {
    done((|| {
        let s = File::open(src)?;
        let d = OpenOptions::new().write(true).create(true).truncate(true).open(dst)?;
        sys::ficlone(d.as_fd(), s.as_fd())
    })())
}

pub fn clone_range(src: &Path, dst: &Path, src_offset: u64, len: u64, dst_offset: u64) -> Observed {
    done((|| {
        let s = File::open(src)?;
        let d = OpenOptions::new().write(true).create(true).truncate(false).open(dst)?;
        sys::ficlonerange(d.as_fd(), s.as_fd(), src_offset, len, dst_offset)
    })())
}

/// FIEMAP over [offset, offset+len) (len 0: to the end); `save` keeps the map under a name,
/// `since` names the saved map the observation carries for comparison.
pub fn fiemap(
    path: &Path,
    offset: u64,
    len: u64,
    save: &Option<String>,
    since: Option<&str>,
    saved: &mut HashMap<String, Vec<Extent>>,
) -> Observed {
    let len = if len == 0 { u64::MAX - offset } else { len };
    match File::open(path).and_then(|f| sys::fiemap(f.as_fd(), offset, len)) {
        Ok(raw) => {
            let extents: Vec<Extent> = raw
                .into_iter()
                .map(|(logical, physical, length, flags)| Extent {
                    logical,
                    physical,
                    length,
                    flags,
                })
                .collect();
            if let Some(name) = save {
                saved.insert(name.clone(), extents.clone());
            }
            let saved = since.and_then(|name| saved.get(name).cloned());
            Observed::Extents { extents, saved }
        }
        Err(e) => errno(&e),
    }
}
