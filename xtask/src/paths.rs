//! Places of the project's own: where a run's temporary files go.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The RAM-backed place is taken only with this much free: NVDIMM backing files are sparse, but
/// a full tmpfs would kill QEMU with SIGBUS at the guest's next store.
const RAM_FLOOR: u64 = 4 << 30;

/// Where VM directories (backing files, serial log, monitor socket, boot snapshot) go:
/// `$DAXTEST_TMPDIR/daxtest` when set; else a directory of this checkout's on /dev/shm when that
/// is a tmpfs with [`RAM_FLOOR`] free, because the guest's first store to each NVDIMM page costs
/// about 6 µs on a disk-backed file (a fresh VM's first mkfs.xfs took 1.11 s against 0.30 s on
/// tmpfs, 6.12 under TCG); else target/daxtest/tmp. A directory of our own, because the sweep
/// after a killed run removes what it finds there.
pub fn tmp_root(root: &Path) -> PathBuf {
    chosen_root().unwrap_or_else(|| {
        ram_root(root).filter(|_| ram_has_room()).unwrap_or_else(|| disk_root(root))
    })
}

/// Every place [`tmp_root`] may have chosen for this checkout (its choice follows free space):
/// where the sweep after a killed run and the tests look for VM directories.
pub fn tmp_roots(root: &Path) -> Vec<PathBuf> {
    match chosen_root() {
        Some(dir) => vec![dir],
        None => [ram_root(root), Some(disk_root(root))].into_iter().flatten().collect(),
    }
}

/// `$DAXTEST_TMPDIR/daxtest`, when the user set it: then the only place.
fn chosen_root() -> Option<PathBuf> {
    std::env::var_os("DAXTEST_TMPDIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("daxtest"))
}

fn disk_root(root: &Path) -> PathBuf {
    root.join("target/daxtest/tmp")
}

/// /dev/shm/daxtest-HASH, HASH naming the checkout: two checkouts never sweep or count each
/// other's VMs.
fn ram_root(root: &Path) -> Option<PathBuf> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new("/dev/shm");
    let st = rustix::fs::statfs(shm).ok()?;
    if st.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let hash = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    Some(shm.join(format!("daxtest-{hex}")))
}

fn ram_has_room() -> bool {
    rustix::fs::statvfs("/dev/shm").is_ok_and(|st| st.f_bavail * st.f_frsize >= RAM_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_place_is_one_the_sweep_visits() {
        let root = Path::new("/work/some-checkout");
        assert!(tmp_roots(root).contains(&tmp_root(root)));
        // Two checkouts, two places.
        let other = Path::new("/work/another-checkout");
        assert!(tmp_roots(root).iter().all(|p| !tmp_roots(other).contains(p)));
    }
}
