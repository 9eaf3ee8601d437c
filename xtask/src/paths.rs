//! Places of the project's own: where a run's temporary files go.

use std::path::{Path, PathBuf};

/// Where VM directories (backing files, serial log, monitor socket) go: `$DAXTEST_TMPDIR/daxtest`,
/// for backing files on another filesystem (a bigger disk, or a tmpfs for RAM-backed NVDIMMs),
/// else target/daxtest/tmp. A directory of our own, because the sweep after a killed run removes
/// what it finds there.
pub fn tmp_root(root: &Path) -> PathBuf {
    match std::env::var_os("DAXTEST_TMPDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("daxtest"),
        _ => root.join("target/daxtest/tmp"),
    }
}
