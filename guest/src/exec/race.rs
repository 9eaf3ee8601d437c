//! The race steps: two processes or threads, jitter from the case's seed, and a check afterwards of what a
//! correct kernel guarantees.

use super::sys;
use daxtest_proto::case::{Observed, Removal};
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// xorshift64*: enough to vary interleavings reproducibly from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Spins or yields a little, at random.
    fn jitter(&mut self) {
        match self.next() % 4 {
            0 => std::thread::yield_now(),
            1 => (0..self.next() % 2000).for_each(|_| std::hint::spin_loop()),
            _ => {}
        }
    }
}

const RECORD: u64 = 4096;

fn record(i: u64) -> Vec<u8> {
    (i + 1).to_le_bytes().repeat((RECORD / 8) as usize)
}

/// What the toggler prints once it runs.
pub const TOGGLER_READY: &str = "toggler ready";

/// One round of the toggler, as it prints it: `mode on` when a lookup right after the toggle
/// found the file in DAX mode, `mode off` when not, or the refusal.
pub fn toggle(path: &Path, rounds: u64, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut lines = Vec::new();
    for i in 0..rounds {
        let r = File::open(path).and_then(|f| sys::set_dax_flag(f.as_fd(), i % 2 == 0));
        match r {
            Err(e) => lines
                .push(format!("toggle {i}: {}", sys::errno_name(e.raw_os_error().unwrap_or(0)))),
            Ok(()) => lines.push(match dax_mode(path) {
                Some(true) => "mode on".into(),
                Some(false) => "mode off".into(),
                None => format!("toggle {i}: statx failed"),
            }),
        }
        rng.jitter();
    }
    lines
}

/// STATX_ATTR_DAX of the file at `path` (a lookup: it loads the inode if it was evicted).
fn dax_mode(path: &Path) -> Option<bool> {
    crate::stat::statx_dax(&path.to_string_lossy()).ok().flatten()
}

/// What the two sides of race_toggle_write saw.
pub struct ToggleRace {
    /// Refused toggles, failed writes, a toggler that did not run.
    pub problems: Vec<String>,
    /// How often the file's DAX mode was seen to change, by the writer (through each write's
    /// fd) and by the toggler (at a lookup after each toggle).
    pub writer_transitions: usize,
    pub toggler_transitions: usize,
}

/// Two processes, as the catalogue asks: a child (this agent again, `toggle-dax-flag`) toggles
/// FS_XFLAG_DAX `rounds` times while this process writes record i at i * 4 KiB. The records are
/// checked by the caller ([`check_records`]), also after eviction and remount. A toggle refused
/// by the kernel is a problem too: the scenarios use this only where the flag may change.
pub fn toggle_write(path: &Path, rounds: u64, seed: u64) -> ToggleRace {
    let failed = |why: String| ToggleRace {
        problems: vec![why],
        writer_transitions: 0,
        toggler_transitions: 0,
    };
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("toggle-dax-flag")
        .arg(path)
        .arg(rounds.to_string())
        .arg(seed.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut toggler = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("toggler: {e}")),
    };
    // Exec takes longer than the writes: wait for the toggler to begin.
    let mut out = std::io::BufReader::new(toggler.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    if std::io::BufRead::read_line(&mut out, &mut first).is_err() || first.trim() != TOGGLER_READY {
        let _ = toggler.kill();
        let _ = toggler.wait();
        return failed(format!("toggler did not start: {first:?}"));
    }
    let (writes, modes) = write_records(path, rounds, seed);
    let mut rest = String::new();
    let read = std::io::Read::read_to_string(&mut out, &mut rest);
    let mut problems = Vec::new();
    let mut toggler_modes = Vec::new();
    match (toggler.wait(), read) {
        (Ok(status), Ok(_)) if status.success() => {
            for line in rest.lines() {
                match line {
                    "mode on" => toggler_modes.push(true),
                    "mode off" => toggler_modes.push(false),
                    other => problems.push(other.to_string()),
                }
            }
        }
        (Ok(status), _) => problems.push(format!("toggler exited with {status}: {}", rest.trim())),
        (Err(e), _) => problems.push(format!("toggler: {e}")),
    }
    problems.extend(writes);
    ToggleRace {
        problems,
        writer_transitions: transitions(&modes),
        toggler_transitions: transitions(&toggler_modes),
    }
}

fn transitions(modes: &[bool]) -> usize {
    modes.windows(2).filter(|w| w[0] != w[1]).count()
}

/// The writing side: record i at i * 4 KiB, each through a fresh open; returns the errors and
/// the DAX mode each write went through (STATX_ATTR_DAX of its fd).
fn write_records(path: &Path, rounds: u64, seed: u64) -> (Vec<String>, Vec<bool>) {
    let mut rng = Rng::new(seed.rotate_left(17));
    let mut errors = Vec::new();
    let mut modes = Vec::new();
    for i in 0..rounds {
        let r = OpenOptions::new().write(true).open(path).and_then(|f| {
            f.write_all_at(&record(i), i * RECORD)?;
            Ok(crate::stat::fd_dax(f.as_fd()))
        });
        match r {
            Ok(Some(mode)) => modes.push(mode),
            Ok(None) => {}
            Err(e) => errors.push(format!("write {i}: {e}")),
        }
        rng.jitter();
    }
    (errors, modes)
}

/// Every record must read back as written; `when` says at which point of the check.
pub fn check_records(path: &Path, rounds: u64, when: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match File::open(path) {
        Ok(f) => {
            let mut buf = vec![0u8; RECORD as usize];
            for i in 0..rounds {
                match f.read_exact_at(&mut buf, i * RECORD) {
                    Ok(()) if buf == record(i) => {}
                    Ok(()) => problems.push(format!(
                        "{when}: record {i} at {}: expected the value {} in every word, found \
                         {:?}...",
                        i * RECORD,
                        i + 1,
                        &buf[..16]
                    )),
                    Err(e) => problems.push(format!("{when}: record {i}: {e}")),
                }
                if problems.len() > 20 {
                    problems.push(format!("{when}: (more problems not listed)"));
                    break;
                }
            }
        }
        Err(e) => problems.push(format!("{when}: reopen: {e}")),
    }
    problems
}

use daxtest_proto::case::RACE_SLOT as SLOT;

/// A thread stores (slot << 32 | pass) into every 8-byte slot (one per 512 bytes) of a shared
/// mapping, pass after pass, publishing each pass number before it begins, while another thread
/// clones the file `rounds` times and notes the pass running right before each FICLONE and
/// right after it returned. Checked afterwards ([`check_clone`]):
/// - the source holds the last pass in every slot (no store lost to a clone's copy-on-write);
/// - every clone is as long as the source, and every slot of it holds a pass between the one
///   completed before its FICLONE began and the one running when it returned: a clone that
///   went on receiving the source's stores afterwards holds a later pass.
///
/// A clone is not checked for being one instant's snapshot across slots: the write-protection of
/// the source range (xfs_reflink_remap_prep) proceeds page by page while stores go on.
pub fn store_clone(map: &sys::Mapping, mnt: &Path, file: &str, rounds: u64, seed: u64) -> Observed {
    let slots = map.len / SLOT;
    let src = mnt.join(file);
    let cloning_done = AtomicBool::new(false);
    let current = AtomicU64::new(0);
    let (last_pass, (clone_errors, bounds)) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = Rng::new(seed);
            let mut pass = 0u64;
            // At least one full pass after the last clone, so every clone saw older data.
            let mut after_done = 0;
            while after_done < 2 {
                pass += 1;
                current.store(pass, Ordering::SeqCst);
                for k in 0..slots {
                    sys::store_u64(map, k * SLOT, ((k as u64) << 32) | pass);
                }
                if cloning_done.load(Ordering::Acquire) {
                    after_done += 1;
                }
                rng.jitter();
            }
            pass
        });
        let cloner = s.spawn(|| {
            let mut rng = Rng::new(seed.rotate_left(23));
            let mut errors = Vec::new();
            let mut bounds = Vec::new();
            for r in 0..rounds {
                let dst = mnt.join(format!("{file}.clone{r}"));
                let res = File::open(&src).and_then(|sf| {
                    let df =
                        OpenOptions::new().write(true).create(true).truncate(true).open(&dst)?;
                    let lo = current.load(Ordering::SeqCst);
                    sys::ficlone(df.as_fd(), sf.as_fd())?;
                    Ok((lo, current.load(Ordering::SeqCst)))
                });
                match res {
                    Ok(b) => bounds.push(Some(b)),
                    Err(e) => {
                        bounds.push(None);
                        errors.push(format!(
                            "clone {r}: {}",
                            sys::errno_name(e.raw_os_error().unwrap_or(0))
                        ));
                    }
                }
                rng.jitter();
            }
            cloning_done.store(true, Ordering::Release);
            (errors, bounds)
        });
        (writer.join().expect("writer panicked"), cloner.join().expect("cloner panicked"))
    });
    let mut problems = clone_errors;
    if let Err(e) = sys::msync(map) {
        problems.push(format!("msync: {e}"));
    }
    match std::fs::read(&src) {
        Ok(data) if data.len() >= slots * SLOT => {
            for (k, v) in slot_values(&data, slots).iter().enumerate() {
                let want = ((k as u64) << 32) | last_pass;
                if *v != want {
                    problems.push(format!(
                        "source slot {k}: lost store, holds {v:#x}, last written {want:#x}"
                    ));
                }
            }
        }
        Ok(data) => problems.push(format!(
            "the source is {} bytes long, shorter than its mapping ({})",
            data.len(),
            slots * SLOT
        )),
        Err(e) => problems.push(format!("reading the source: {e}")),
    }
    for (r, b) in bounds.iter().enumerate() {
        // A clone that failed is reported above.
        let Some((lo, hi)) = *b else { continue };
        let data = std::fs::read(mnt.join(format!("{file}.clone{r}")));
        problems.extend(check_clone(r, data, slots, lo, hi));
        if problems.len() > 20 {
            problems.push("(more problems not listed)".into());
            break;
        }
    }
    Observed::Race { rounds, problems }
}

fn slot_values(data: &[u8], slots: usize) -> Vec<u64> {
    (0..slots)
        .map(|k| u64::from_ne_bytes(data[k * SLOT..k * SLOT + 8].try_into().expect("8 bytes")))
        .collect()
}

/// The problems of clone `r`, read as `data`, of a mapping with `slots` slots, whose FICLONE
/// began while pass `lo` was running and returned while pass `hi` was: every slot must hold pass
/// `lo - 1` (complete before it began) up to `hi`, and be the slot's own value; pass 0 is the
/// file's initial zeros.
fn check_clone(
    r: usize,
    data: std::io::Result<Vec<u8>>,
    slots: usize,
    lo: u64,
    hi: u64,
) -> Vec<String> {
    let data = match data {
        Ok(d) if d.len() >= slots * SLOT => d,
        Ok(d) => {
            return vec![format!(
                "clone {r}: {} bytes long, the source {}: not a copy of the whole file",
                d.len(),
                slots * SLOT
            )]
        }
        Err(e) => return vec![format!("clone {r}: unreadable: {e}")],
    };
    let mut problems = Vec::new();
    for (k, v) in slot_values(&data, slots).iter().enumerate() {
        let pass = v & 0xffff_ffff;
        if *v != 0 && v >> 32 != k as u64 {
            problems.push(format!("clone {r} slot {k}: {v:#x} was never stored there"));
        } else if pass > hi {
            problems.push(format!(
                "clone {r} slot {k}: pass {pass}, later than pass {hi} that was running when its \
                 FICLONE returned: the clone went on receiving the source's stores"
            ));
        } else if pass + 1 < lo {
            problems.push(format!(
                "clone {r} slot {k}: pass {pass}, older than pass {} that was complete before \
                 its FICLONE began",
                lo - 1
            ));
        }
    }
    problems
}

/// fstests generic/503 (t_mmap_collision), in the process that holds the mapping of `mapped`
/// (at file offset `at`): two threads, `rounds` rounds each, read the whole of `source` with
/// O_DIRECT into the mapping, then take the mapped range's blocks away as `remove` says. What a
/// correct kernel guarantees beyond surviving it (the step's timeout and the kernel log judge
/// that): every fallocate and truncate succeeds, and where the removal keeps the pages mapped,
/// every read moves every byte.
pub fn direct_io_remove(
    map: &sys::Mapping,
    (mapped, at): (&Path, u64),
    source: &Path,
    remove: Removal,
    rounds: u64,
    seed: u64,
) -> Observed {
    let len = map.len as u64;
    let side = |thread: u64| {
        let mut rng = Rng::new(seed.rotate_left(thread as u32 * 7 + 3));
        let mut problems = Vec::new();
        let file = match OpenOptions::new().read(true).write(true).open(mapped) {
            Ok(f) => f,
            Err(e) => return vec![format!("thread {thread}: opening the mapped file: {e}")],
        };
        let (keep, punch, zero) =
            (libc::FALLOC_FL_KEEP_SIZE, libc::FALLOC_FL_PUNCH_HOLE, libc::FALLOC_FL_ZERO_RANGE);
        for r in 0..rounds {
            let fd = file.as_fd();
            let removed = match remove {
                Removal::PunchHole => sys::fallocate(fd, punch | keep, at, len),
                Removal::ZeroRange => sys::fallocate(fd, zero | keep, at, len),
                Removal::Truncate => rustix::fs::ftruncate(fd, 0)
                    .map_err(std::io::Error::from)
                    .and_then(|()| sys::fallocate(fd, 0, at, len)),
                Removal::CollapseRange => sys::fallocate(fd, 0, at, len)
                    .and_then(|()| sys::fallocate(fd, libc::FALLOC_FL_COLLAPSE_RANGE, at, 4096))
                    .and_then(|()| sys::fallocate(fd, 0, at, len)),
            };
            if let Err(e) = removed {
                problems.push(format!("thread {thread} round {r}: {remove:?}: {e}"));
            }
            match sys::mapped_buffer_io(map, 0, map.len, source, 0, false, true) {
                Err(e) if remove.keeps_size() => {
                    problems.push(format!("thread {thread} round {r}: O_DIRECT read: {e}"))
                }
                _ => {}
            }
            rng.jitter();
            if problems.len() > 20 {
                problems.push(format!("thread {thread}: (more problems not listed)"));
                break;
            }
        }
        problems
    };
    let problems = std::thread::scope(|s| {
        let a = s.spawn(|| side(0));
        let b = s.spawn(|| side(1));
        let mut p = a.join().expect("race thread panicked");
        p.extend(b.join().expect("race thread panicked"));
        p
    });
    Observed::Race { rounds, problems }
}

/// fstests generic/437 (t_mmap_cow_race): `rounds` times, a private mapping of `len` bytes of
/// `path` at `offset`, and two threads that each, 10 times, load and store its first byte and
/// drop the whole range (MADV_DONTNEED), so that a PMD read fault and a PTE copy-on-write fault
/// of the same range collide. What a correct kernel guarantees beyond surviving it (the step's
/// timeout and the kernel log judge that): every mmap, madvise and munmap succeeds.
pub fn private_cow((path, offset, len): (&Path, u64, u64), rounds: u64, seed: u64) -> Observed {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Observed::Error(format!("opening {}: {e}", path.display())),
    };
    let mut problems = Vec::new();
    for r in 0..rounds {
        let map = match sys::mmap(
            file.as_fd(),
            offset,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
        ) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("round {r}: private mmap: {e}"));
                break;
            }
        };
        let side = |thread: u64| {
            let mut rng = Rng::new(seed.rotate_left((r * 2 + thread) as u32 % 64));
            let mut problems = Vec::new();
            for i in 0..10 {
                sys::load_then_store_u8(&map, 0);
                if let Err(e) = sys::madvise_dontneed(&map) {
                    problems.push(format!("round {r} thread {thread} pass {i}: madvise: {e}"));
                }
                rng.jitter();
            }
            problems
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| side(0));
            let b = s.spawn(|| side(1));
            (a.join().expect("race thread panicked"), b.join().expect("race thread panicked"))
        });
        problems.extend(a);
        problems.extend(b);
        if let Err(e) = sys::munmap(&map) {
            problems.push(format!("round {r}: munmap: {e}"));
        }
        if problems.len() > 20 {
            problems.push("(more problems not listed)".into());
            break;
        }
    }
    Observed::Race { rounds, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((a.next(), a.next()), (b.next(), b.next()));
        assert_ne!(Rng::new(7).next(), Rng::new(8).next());
    }

    /// The two sides of race_toggle_write, each on its own (the race itself needs the agent
    /// binary and a DAX filesystem: the catalogue's toggle-while-writing runs it in the guest).
    /// On the host's filesystem a toggle is refused or followed by the mode a lookup found;
    /// every record is checked.
    #[test]
    fn toggles_report_refusals_and_records_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let toggles = toggle(&path, 4, 1);
        assert_eq!(toggles.len(), 4, "{toggles:?}");
        assert!(
            toggles.iter().all(|p| p.starts_with("toggle ") || p.starts_with("mode o")),
            "{toggles:?}"
        );
        let (errors, _modes) = write_records(&path, 8, 1);
        assert!(errors.is_empty());
        assert!(check_records(&path, 8, "after").is_empty());
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[4096..4104], &2u64.to_le_bytes());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"x", 8192)
            .unwrap();
        let problems = check_records(&path, 8, "after eviction");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("after eviction: record 2 at 8192: expected the value 3"),
            "{problems:?}"
        );
        assert_eq!(transitions(&[true, true, false, true]), 2);
        assert_eq!(transitions(&[false, false]), 0);
    }

    fn clone_of(values: &[u64]) -> std::io::Result<Vec<u8>> {
        let mut data = vec![0u8; values.len() * SLOT];
        for (k, v) in values.iter().enumerate() {
            data[k * SLOT..k * SLOT + 8].copy_from_slice(&v.to_ne_bytes());
        }
        Ok(data)
    }

    /// The snapshot check on synthetic records: a clone taken while passes 3 to 4 ran may hold
    /// passes 2 to 4; one that kept receiving stores after FICLONE returned holds a later pass;
    /// a short or unreadable clone is a problem, never zeros.
    #[test]
    fn a_clone_that_is_not_a_snapshot_is_caught() {
        let v = |k: u64, pass: u64| (k << 32) | pass;
        assert!(check_clone(0, clone_of(&[v(0, 2), v(1, 4), v(2, 3)]), 3, 3, 4).is_empty());
        // Pass 0: the initial zeros, complete before a clone that began during pass 1.
        assert!(check_clone(0, clone_of(&[0, v(1, 1)]), 2, 1, 1).is_empty());
        let later = check_clone(1, clone_of(&[v(0, 9), v(1, 4)]), 2, 3, 4);
        assert_eq!(later.len(), 1, "{later:?}");
        assert!(later[0].starts_with("clone 1 slot 0: pass 9, later than pass 4"), "{later:?}");
        let older = check_clone(2, clone_of(&[v(0, 1), v(1, 4)]), 2, 3, 4);
        assert!(older[0].starts_with("clone 2 slot 0: pass 1, older than pass 2"), "{older:?}");
        let foreign = check_clone(0, clone_of(&[v(1, 3)]), 1, 3, 4);
        assert!(foreign[0].contains("was never stored there"), "{foreign:?}");
        let short = check_clone(3, Ok(vec![0u8; SLOT]), 2, 1, 1);
        assert!(short[0].starts_with("clone 3: 512 bytes long, the source 1024"), "{short:?}");
        let gone = check_clone(4, Err(std::io::ErrorKind::NotFound.into()), 2, 1, 1);
        assert!(gone[0].starts_with("clone 4: unreadable"), "{gone:?}");
    }
}
