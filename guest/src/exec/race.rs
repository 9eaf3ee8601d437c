//! The race steps: two processes or threads, jitter from the case's seed, and a check afterwards of what a
//! correct kernel guarantees.

use super::sys;
use daxtest_proto::case::Observed;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Toggles FS_XFLAG_DAX on `path` `rounds` times, opening the file anew each time (the mode
/// may only change while nothing holds the inode); returns the refusals.
pub fn toggle(path: &Path, rounds: u64, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut errors = Vec::new();
    for i in 0..rounds {
        let r = File::open(path).and_then(|f| sys::set_dax_flag(f.as_fd(), i % 2 == 0));
        if let Err(e) = r {
            errors.push(format!("toggle {i}: {}", sys::errno_name(e.raw_os_error().unwrap_or(0))));
        }
        rng.jitter();
    }
    errors
}

/// Two processes, as the catalogue asks: a child (this agent again, `toggle-dax-flag`) toggles
/// FS_XFLAG_DAX `rounds` times while this process writes record i at i * 4 KiB; then every
/// record must read back. A toggle refused by the kernel is a problem too: the scenarios use
/// this only where the flag may change.
pub fn toggle_write(path: &Path, rounds: u64, seed: u64) -> Observed {
    let mut problems = Vec::new();
    let toggler = std::process::Command::new("/proc/self/exe")
        .arg("toggle-dax-flag")
        .arg(path)
        .arg(rounds.to_string())
        .arg(seed.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut toggler = match toggler {
        Ok(child) => child,
        Err(e) => return Observed::Race { rounds, problems: vec![format!("toggler: {e}")] },
    };
    // Exec takes longer than the writes: wait for the toggler to begin.
    let mut out = std::io::BufReader::new(toggler.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    if std::io::BufRead::read_line(&mut out, &mut first).is_err() || first.trim() != TOGGLER_READY {
        let _ = toggler.kill();
        let _ = toggler.wait();
        return Observed::Race {
            rounds,
            problems: vec![format!("toggler did not start: {first:?}")],
        };
    }
    let writes = write_records(path, rounds, seed);
    let mut rest = String::new();
    let read = std::io::Read::read_to_string(&mut out, &mut rest);
    let toggles = match (toggler.wait(), read) {
        (Ok(status), Ok(_)) if status.success() => rest.lines().map(str::to_string).collect(),
        (Ok(status), _) => vec![format!("toggler exited with {status}: {}", rest.trim())],
        (Err(e), _) => vec![format!("toggler: {e}")],
    };
    problems.extend(toggles);
    problems.extend(writes);
    problems.extend(check_records(path, rounds));
    Observed::Race { rounds, problems }
}

/// The writing side: record i at i * 4 KiB, each through a fresh open; returns the errors.
fn write_records(path: &Path, rounds: u64, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed.rotate_left(17));
    let mut errors = Vec::new();
    for i in 0..rounds {
        let r = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.write_all_at(&record(i), i * RECORD));
        if let Err(e) = r {
            errors.push(format!("write {i}: {e}"));
        }
        rng.jitter();
    }
    errors
}

/// Every record must read back as written.
fn check_records(path: &Path, rounds: u64) -> Vec<String> {
    let mut problems = Vec::new();
    match File::open(path) {
        Ok(f) => {
            let mut buf = vec![0u8; RECORD as usize];
            for i in 0..rounds {
                match f.read_exact_at(&mut buf, i * RECORD) {
                    Ok(()) if buf == record(i) => {}
                    Ok(()) => problems.push(format!(
                        "record {i} at {}: expected the value {} in every word, found {:?}...",
                        i * RECORD,
                        i + 1,
                        &buf[..16]
                    )),
                    Err(e) => problems.push(format!("record {i}: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("reopen: {e}")),
    }
    problems
}

const SLOT: usize = 512;

/// A thread stores (slot << 32 | seq) into every 8-byte slot (one per 512 bytes) of a shared
/// mapping, pass after pass, while another clones the file `rounds` times. Checked afterwards:
/// - the source holds the last pass in every slot (no store lost to a clone's copy-on-write);
/// - every clone holds, in every slot, 0 or a value of that slot from a pass that happened;
/// - clones are taken one after another, so per slot a later clone never holds an older pass.
///
/// A clone is not checked for being one instant's snapshot across slots: the write-protection of
/// the source range (xfs_reflink_remap_prep) proceeds page by page while stores go on.
pub fn store_clone(map: &sys::Mapping, mnt: &Path, file: &str, rounds: u64, seed: u64) -> Observed {
    let slots = map.len / SLOT;
    let src = mnt.join(file);
    let cloning_done = AtomicBool::new(false);
    let (last_pass, clone_errors) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = Rng::new(seed);
            let mut pass = 0u64;
            // At least one full pass after the last clone, so every clone saw older data.
            let mut after_done = 0;
            while after_done < 2 {
                pass += 1;
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
            for r in 0..rounds {
                let dst = mnt.join(format!("{file}.clone{r}"));
                let res = File::open(&src).and_then(|sf| {
                    let df =
                        OpenOptions::new().write(true).create(true).truncate(true).open(&dst)?;
                    sys::ficlone(df.as_fd(), sf.as_fd())
                });
                if let Err(e) = res {
                    errors.push(format!(
                        "clone {r}: {}",
                        sys::errno_name(e.raw_os_error().unwrap_or(0))
                    ));
                }
                rng.jitter();
            }
            cloning_done.store(true, Ordering::Release);
            errors
        });
        (writer.join().expect("writer panicked"), cloner.join().expect("cloner panicked"))
    });
    let mut problems = clone_errors;
    if let Err(e) = sys::msync(map) {
        problems.push(format!("msync: {e}"));
    }
    let read_slots = |path: &Path| -> std::io::Result<Vec<u64>> {
        let data = std::fs::read(path)?;
        Ok((0..slots)
            .map(|k| {
                let b = data.get(k * SLOT..k * SLOT + 8).unwrap_or(&[0; 8]);
                u64::from_ne_bytes(b.try_into().expect("8 bytes"))
            })
            .collect())
    };
    match read_slots(&src) {
        Ok(values) => {
            for (k, v) in values.iter().enumerate() {
                let want = ((k as u64) << 32) | last_pass;
                if *v != want {
                    problems.push(format!(
                        "source slot {k}: lost store, holds {v:#x}, last written {want:#x}"
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("reading the source: {e}")),
    }
    let mut previous: Vec<u64> = vec![0; slots];
    for r in 0..rounds {
        let path = mnt.join(format!("{file}.clone{r}"));
        let Ok(values) = read_slots(&path) else {
            continue; // its clone failed, already reported
        };
        for (k, v) in values.iter().enumerate() {
            let pass = v & 0xffff_ffff;
            if *v != 0 && (v >> 32 != k as u64 || pass > last_pass) {
                problems.push(format!("clone {r} slot {k}: {v:#x} was never stored there"));
            } else if pass < previous[k] {
                problems.push(format!(
                    "clone {r} slot {k}: pass {pass} older than the previous clone's {}",
                    previous[k]
                ));
            } else {
                previous[k] = pass;
            }
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
    /// On the host's filesystem every toggle is refused and reported; every record is checked.
    #[test]
    fn toggles_report_refusals_and_records_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let toggles = toggle(&path, 4, 1);
        assert!(toggles.iter().all(|p| p.starts_with("toggle")), "{toggles:?}");
        assert!(write_records(&path, 8, 1).is_empty());
        assert!(check_records(&path, 8).is_empty());
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[4096..4104], &2u64.to_le_bytes());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"x", 8192)
            .unwrap();
        let problems = check_records(&path, 8);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("record 2 at 8192: expected the value 3"), "{problems:?}");
    }
}
