//! Mappings that stay live: each `mmap` of a case is made by a holder process of its own (this
//! agent again, `daxtest-agent hold-mapping`), which keeps the mapping and its page-table entries
//! from one step to the next and does every access through it, until `munmap`, `evict`,
//! `remount` or the end of the case. A `clone`, `fallocate` or `truncate` in between therefore
//! meets entries the kernel must write-protect or unmap.
//!
//! An access that raises SIGBUS kills its holder: the step observes the signal, and the mapping
//! is gone (a later access is a daxtest error, not a kernel failure). Each access reports the
//! page faults the holder took around it (getrusage of its thread), so a scenario can tell an access that
//! found its page-table entry (0 faults) from one that had to fault.

use super::sys;
use daxtest_proto::case::{runs_into, MapKind, Observed, MAX_RUNS};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What the agent asks a holder to do, one JSON line each; the holder answers each with one
/// [`Observed`] line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Store {
        offset: usize,
        len: usize,
        byte: u8,
    },
    Load {
        offset: usize,
        len: usize,
    },
    Msync,
    /// race_store_clone, run where the mapping lives.
    RaceStoreClone {
        mnt: PathBuf,
        file: String,
        rounds: u64,
        seed: u64,
    },
    /// munmap and exit.
    Unmap,
}

/// The agent's side of a holder.
pub struct Holder {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

/// A mapping of the case: held by a live process, or gone (why, for the message).
pub enum Map {
    Live(Holder),
    Gone(String),
}

impl Holder {
    /// Starts a holder that maps `path` as asked; `Err` is what the mmap observed (an errno) or
    /// why the holder could not start. `cgroup_procs`: the case's cgroup, for the teardown sweep.
    pub fn start(
        path: &Path,
        offset: u64,
        len: u64,
        kind: MapKind,
        cgroup_procs: Option<&Path>,
    ) -> Result<Holder, Observed> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("hold-mapping")
            .arg(path)
            .arg(offset.to_string())
            .arg(len.to_string())
            .arg(kind_name(kind))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(procs) = cgroup_procs {
            sys::spawn_into_cgroup(&mut cmd, procs)
                .map_err(|e| Observed::Error(format!("mapping holder: {e}")))?;
        }
        let mut child =
            cmd.spawn().map_err(|e| Observed::Error(format!("starting a mapping holder: {e}")))?;
        let to = child.stdin.take().expect("piped stdin");
        let from = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut h = Holder { child, to, from };
        match h.answer() {
            Observed::Ok => Ok(h),
            other => {
                let _ = h.child.kill();
                let _ = h.child.wait();
                Err(other)
            }
        }
    }

    pub fn store(&mut self, offset: u64, len: u64, byte: u8) -> Observed {
        self.ask(&Request::Store { offset: offset as usize, len: len as usize, byte })
    }

    pub fn load(&mut self, offset: u64, len: u64) -> Observed {
        self.ask(&Request::Load { offset: offset as usize, len: len as usize })
    }

    pub fn msync(&mut self) -> Observed {
        self.ask(&Request::Msync)
    }

    pub fn race_store_clone(&mut self, mnt: &Path, file: &str, rounds: u64, seed: u64) -> Observed {
        self.ask(&Request::RaceStoreClone {
            mnt: mnt.to_path_buf(),
            file: file.to_string(),
            rounds,
            seed,
        })
    }

    /// munmap, then the holder exits.
    pub fn unmap(mut self) -> Observed {
        let o = self.ask(&Request::Unmap);
        let _ = self.child.wait();
        o
    }

    fn ask(&mut self, r: &Request) -> Observed {
        let line = serde_json::to_string(r).expect("a request serializes");
        if writeln!(self.to, "{line}").and_then(|()| self.to.flush()).is_err() {
            return self.died();
        }
        self.answer()
    }

    fn answer(&mut self) -> Observed {
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or_else(|e| {
                Observed::Error(format!("mapping holder answered {line:?}: {e}"))
            }),
            _ => self.died(),
        }
    }

    /// The holder is gone: a signal (SIGBUS from the access) is the observation.
    fn died(&mut self) -> Observed {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait() {
            Ok(status) => match status.signal() {
                Some(sig) => Observed::Signal(sys::signal_name(sig)),
                None => Observed::Error(format!("the mapping holder exited ({status})")),
            },
            Err(e) => Observed::Error(format!("waiting for the mapping holder: {e}")),
        }
    }
}

impl Drop for Holder {
    /// A holder nobody asked to unmap (a step that went wrong): it must not outlive the case.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn kind_name(kind: MapKind) -> &'static str {
    match kind {
        MapKind::Shared => "shared",
        MapKind::Sync => "sync",
        MapKind::Private => "private",
    }
}

/// `daxtest-agent hold-mapping PATH OFFSET LEN KIND`: the holder process. Maps the file, closes
/// the fd (the mapping alone holds the file, as in the scenarios that count on it), answers `Ok`
/// or the mmap's errno, then serves requests until `unmap` or the end of its input.
pub fn serve(path: &str, offset: &str, len: &str, kind: &str) -> anyhow::Result<i32> {
    use anyhow::Context;
    let offset: u64 = offset.parse().context("hold-mapping: offset")?;
    let len: u64 = len.parse().context("hold-mapping: len")?;
    let flags = match kind {
        "shared" => libc::MAP_SHARED,
        "sync" => sys::MAP_SHARED_VALIDATE | sys::MAP_SYNC,
        "private" => libc::MAP_PRIVATE,
        other => anyhow::bail!("hold-mapping: kind {other:?}"),
    };
    let mut out = std::io::stdout().lock();
    let mut reply = |o: &Observed| -> anyhow::Result<()> {
        writeln!(out, "{}", serde_json::to_string(o)?)?;
        out.flush()?;
        Ok(())
    };
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path);
    let map = match file.and_then(|f| sys::mmap(f.as_fd(), offset, len, flags)) {
        Ok(m) => m,
        Err(e) => {
            reply(&super::errno(&e))?;
            return Ok(0);
        }
    };
    warm_up();
    reply(&Observed::Ok)?;
    let mut runs = Vec::with_capacity(MAX_RUNS);
    for line in std::io::stdin().lock().lines() {
        let request: Request = serde_json::from_str(&line?).context("hold-mapping: request")?;
        let observed = match request {
            Request::Store { offset, len, byte } => {
                let before = sys::faults();
                match sys::store(&map, offset, len, byte) {
                    Ok(()) => Observed::Stored { faults: sys::faults() - before },
                    Err(e) => Observed::Error(format!("store: {e}")),
                }
            }
            Request::Load { offset, len } => {
                runs.clear();
                let before = sys::faults();
                match sys::load_runs(&map, offset, len, &mut runs) {
                    Ok(truncated) => {
                        let faults = sys::faults() - before;
                        Observed::Bytes {
                            asked: len as u64,
                            got: len as u64,
                            runs: runs.clone(),
                            truncated,
                            faults: Some(faults),
                        }
                    }
                    Err(e) => Observed::Error(format!("load: {e}")),
                }
            }
            Request::Msync => super::done(sys::msync(&map)),
            Request::RaceStoreClone { mnt, file, rounds, seed } => {
                super::race::store_clone(&map, &mnt, &file, rounds, seed)
            }
            Request::Unmap => {
                reply(&super::done(sys::munmap(&map)))?;
                return Ok(0);
            }
        };
        reply(&observed)?;
    }
    Ok(0)
}

/// Runs the access paths once on memory of the holder's own, so that the faults counted around a
/// real access are the mapping's, not the first touch of this program's code or stack.
fn warm_up() {
    let Ok(scratch) = sys::anonymous(2 * 4096) else { return };
    let mut runs = Vec::with_capacity(MAX_RUNS);
    for _ in 0..2 {
        let before = sys::faults();
        let _ = sys::store(&scratch, 0, 4096, b'w');
        let _ = sys::load_runs(&scratch, 0, 4096, &mut runs);
        let _ = sys::faults() - before;
        runs.clear();
        let _ = runs_into(0, b"w", &mut runs);
        runs.clear();
    }
    let _ = sys::munmap(&scratch);
}
