//! `daxtest-agent stat PATH`: the DAX state of a file as the kernel reports it.

use anyhow::Context;
use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};

/// One line: the path, whether statx knows STATX_ATTR_DAX, and whether it is set.
pub fn describe(path: &str) -> anyhow::Result<String> {
    let dax = statx_dax(path)?;
    let state = match dax {
        None => "unknown (filesystem does not report it)",
        Some(true) => "on",
        Some(false) => "off",
    };
    Ok(format!("{path}: STATX_ATTR_DAX={state}"))
}

/// `Some(set)` when the filesystem reports the attribute (it is in stx_attributes_mask).
pub fn statx_dax(path: &str) -> anyhow::Result<Option<bool>> {
    let st = statx(CWD, path, AtFlags::empty(), StatxFlags::BASIC_STATS)
        .with_context(|| format!("statx {path}"))?;
    let mask = st.stx_attributes_mask;
    let attrs = st.stx_attributes;
    Ok(mask.contains(StatxAttributes::DAX).then(|| attrs.contains(StatxAttributes::DAX)))
}

/// STATX_ATTR_DAX of an open file (the inode the fd holds), when the filesystem reports it.
pub fn fd_dax(fd: std::os::fd::BorrowedFd) -> Option<bool> {
    let st = statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).ok()?;
    let (mask, attrs) = (st.stx_attributes_mask, st.stx_attributes);
    mask.contains(StatxAttributes::DAX).then(|| attrs.contains(StatxAttributes::DAX))
}
