//! Mappings that stay live: each `mmap` of a case is made by a holder process of its own (a fork
//! of the agent), which keeps the mapping and its page-table entries
//! from one step to the next and does every access through it, until `munmap`, `evict`,
//! `remount` or the end of the case. A `clone`, `fallocate` or `truncate` in between therefore
//! meets entries the kernel must write-protect or unmap.
//!
//! An access that raises SIGBUS or SIGSEGV kills its holder: the step observes the signal, and
//! the mapping is gone (a later access is a daxtest error, not a kernel failure). The holder
//! catches both only to write its siginfo (si_code, si_addr_lsb, si_addr) as its answer before
//! it dies of the signal; one that came while the holder waited between requests (a
//! memory-failure kill of another process's making) is the answer to the next request. Each
//! access reports the page faults the holder took around it (getrusage of its thread), so a
//! scenario can tell an access that found its page-table entry (0 faults) from one that had to
//! fault. A `fork` access is made by a child of the holder instead, which inherits the mapping
//! (and whatever entries fork copies), reports as the holder would and exits; a signal kills
//! that child alone.

use super::sys;
use daxtest_proto::case::{
    runs_into, FaultProfile, MapKind, Observed, Prot, Removal, Run, SigInfo, MAX_RUNS,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// What the agent asks a holder to do, one JSON line each; the holder answers each with one
/// [`Observed`] line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Store {
        offset: usize,
        len: usize,
        byte: u8,
        fork: bool,
    },
    Load {
        offset: usize,
        len: usize,
        fork: bool,
    },
    Msync,
    /// store_profile: the first store to every `stride` bytes, each timed.
    StoreProfile {
        offset: usize,
        len: usize,
        stride: usize,
        byte: u8,
    },
    /// mprotect of the whole mapping: PROT_READ, with PROT_WRITE when `write`.
    Mprotect {
        write: bool,
    },
    /// mremap to a new PMD-aligned address, `len` bytes long (the same when `None`).
    Mremap {
        len: Option<usize>,
    },
    /// madvise(MADV_HWPOISON) on the page at `offset`.
    Poison {
        offset: usize,
    },
    /// read(2)/write(2) of a file whose buffer is the mapping, by the holder (with O_DIRECT:
    /// whose pages are pinned).
    MappedBufferIo {
        offset: usize,
        len: usize,
        path: PathBuf,
        file_offset: u64,
        write: bool,
        direct: bool,
    },
    /// race_store_clone, run where the mapping lives.
    RaceStoreClone {
        mnt: PathBuf,
        file: String,
        rounds: u64,
        seed: u64,
    },
    /// race_direct_io_remove, run where the mapping lives.
    RaceDirectIoRemove {
        file: PathBuf,
        remove: Removal,
        rounds: u64,
        seed: u64,
    },
    /// race_private_cow, run where the mapping lives.
    RacePrivateCow {
        rounds: u64,
        seed: u64,
    },
    /// store_loop: answers once the serial console is open, then stores records until the
    /// mapping ends (or the power does), serving nothing more.
    StoreLoop {
        msync: bool,
    },
    /// munmap and exit.
    Unmap,
}

/// The holder's answer to a `fork` access: what its child observed (a signal there killed the
/// child, not the holder).
#[derive(Debug, Serialize, Deserialize)]
struct ChildAnswer {
    child: Observed,
}

/// The agent's side of a holder.
pub struct Holder {
    pid: libc::pid_t,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    reaped: bool,
}

/// A mapping of the case: held by a live process, or gone (why, for the message).
pub enum Map {
    Live(Holder),
    Gone(String),
}

impl Holder {
    /// Starts a holder (a fork of the agent, in the case's cgroup as the agent is) that maps
    /// `path` as asked; `Err` is what the mmap observed (an errno) or why the holder could not
    /// start.
    pub fn start(
        path: &Path,
        offset: u64,
        len: u64,
        kind: MapKind,
        prot: Prot,
    ) -> Result<Holder, Observed> {
        let flags = match kind {
            MapKind::Shared => libc::MAP_SHARED,
            MapKind::Sync => sys::MAP_SHARED_VALIDATE | sys::MAP_SYNC,
            MapKind::Private => libc::MAP_PRIVATE,
        };
        let forked = sys::fork_serving(|input, output| {
            match serve(path, offset, len, (kind, prot), flags, input, output) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
        .map_err(|e| Observed::Error(format!("starting a mapping holder: {e}")))?;
        let mut h = Holder {
            pid: forked.pid,
            to: forked.to,
            from: BufReader::new(forked.from),
            reaped: false,
        };
        match h.answer() {
            Observed::Ok => Ok(h),
            other => Err(other),
        }
    }

    pub fn store(&mut self, offset: u64, len: u64, byte: u8, fork: bool) -> Observed {
        self.ask(&Request::Store { offset: offset as usize, len: len as usize, byte, fork })
    }

    pub fn load(&mut self, offset: u64, len: u64, fork: bool) -> Observed {
        self.ask(&Request::Load { offset: offset as usize, len: len as usize, fork })
    }

    /// The first stores' times and the faults the holder took over them (the agent adds what
    /// the kernel's tracepoints and counters say).
    pub fn store_profile(&mut self, offset: u64, len: u64, stride: u64, byte: u8) -> Observed {
        self.ask(&Request::StoreProfile {
            offset: offset as usize,
            len: len as usize,
            stride: stride as usize,
            byte,
        })
    }

    pub fn mprotect(&mut self, write: bool) -> Observed {
        self.ask(&Request::Mprotect { write })
    }

    pub fn mremap(&mut self, len: Option<u64>) -> Observed {
        self.ask(&Request::Mremap { len: len.map(|l| l as usize) })
    }

    pub fn msync(&mut self) -> Observed {
        self.ask(&Request::Msync)
    }

    pub fn poison(&mut self, offset: u64) -> Observed {
        self.ask(&Request::Poison { offset: offset as usize })
    }

    pub fn mapped_buffer_io(
        &mut self,
        (offset, len): (u64, u64),
        path: &Path,
        file_offset: u64,
        write: bool,
        direct: bool,
    ) -> Observed {
        self.ask(&Request::MappedBufferIo {
            offset: offset as usize,
            len: len as usize,
            path: path.to_path_buf(),
            file_offset,
            write,
            direct,
        })
    }

    pub fn race_store_clone(&mut self, mnt: &Path, file: &str, rounds: u64, seed: u64) -> Observed {
        self.ask(&Request::RaceStoreClone {
            mnt: mnt.to_path_buf(),
            file: file.to_string(),
            rounds,
            seed,
        })
    }

    pub fn race_direct_io_remove(
        &mut self,
        file: &Path,
        remove: Removal,
        rounds: u64,
        seed: u64,
    ) -> Observed {
        self.ask(&Request::RaceDirectIoRemove { file: file.to_path_buf(), remove, rounds, seed })
    }

    pub fn race_private_cow(&mut self, rounds: u64, seed: u64) -> Observed {
        self.ask(&Request::RacePrivateCow { rounds, seed })
    }

    /// Starts the record loop; the holder serves no other request afterwards.
    pub fn store_loop(&mut self, msync: bool) -> Observed {
        self.ask(&Request::StoreLoop { msync })
    }

    /// Whether the holder is gone (it died of a signal, or exited): its mapping with it.
    pub fn ended(&self) -> bool {
        self.reaped
    }

    /// munmap, then the holder exits.
    pub fn unmap(mut self) -> Observed {
        let o = self.ask(&Request::Unmap);
        let _ = self.reap();
        o
    }

    fn ask(&mut self, r: &Request) -> Observed {
        let line = serde_json::to_string(r).expect("a request serializes");
        // A holder that died meanwhile may have left its SIGBUS line: the answer reads it.
        let _ = writeln!(self.to, "{line}").and_then(|()| self.to.flush());
        self.answer()
    }

    fn answer(&mut self) -> Observed {
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            // A child's observation, relayed: its signal is not the holder's death.
            Ok(n) if n > 0 => match serde_json::from_str::<ChildAnswer>(&line) {
                Ok(ChildAnswer { child }) => child,
                Err(_) => match serde_json::from_str(&line) {
                    Ok(Observed::Signal { name, info }) => self.caught(name, info),
                    Ok(o) => o,
                    Err(e) => Observed::Error(format!("mapping holder answered {line:?}: {e}")),
                },
            },
            _ => self.died(),
        }
    }

    /// The holder wrote the siginfo of a signal it caught: it must then have died of it.
    fn caught(&mut self, name: String, info: Option<SigInfo>) -> Observed {
        match self.reap() {
            Ok(sys::Ended::Signalled(sig)) if sys::signal_name(sig) == name => {
                Observed::Signal { name, info }
            }
            Ok(sys::Ended::Signalled(sig)) => Observed::Error(format!(
                "the mapping holder reported {name} but died of {}",
                sys::signal_name(sig)
            )),
            Ok(sys::Ended::Exited(code)) => Observed::Error(format!(
                "the mapping holder reported {name} but exited with status {code}"
            )),
            Err(e) => Observed::Error(format!("waiting for the mapping holder: {e}")),
        }
    }

    /// The holder is gone: a signal (SIGBUS from the access) is the observation.
    fn died(&mut self) -> Observed {
        match self.reap() {
            Ok(sys::Ended::Signalled(sig)) => Observed::signal(&sys::signal_name(sig)),
            Ok(sys::Ended::Exited(code)) => {
                Observed::Error(format!("the mapping holder exited with status {code}"))
            }
            Err(e) => Observed::Error(format!("waiting for the mapping holder: {e}")),
        }
    }

    fn reap(&mut self) -> std::io::Result<sys::Ended> {
        self.reaped = true;
        sys::wait(self.pid)
    }
}

impl Drop for Holder {
    /// A holder nobody asked to unmap (a step that went wrong): it must not outlive the case.
    fn drop(&mut self) {
        if !self.reaped {
            sys::kill(self.pid);
            let _ = self.reap();
        }
    }
}

/// The holder: maps the file, closes the fd (the mapping alone holds the file, as in the
/// scenarios that count on it), answers `Ok` or the mmap's errno, then serves requests from
/// `input` until `unmap` or the end of its input.
fn serve(
    path: &Path,
    offset: u64,
    len: u64,
    (kind, prot): (MapKind, Prot),
    flags: libc::c_int,
    input: std::fs::File,
    mut output: std::fs::File,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let out = output.try_clone()?;
    // One write per answer: a SIGBUS line the handler writes meanwhile stays a line of its own.
    // A forked child's observation goes as a ChildAnswer.
    let mut answer = |o: &Observed, child: bool| -> anyhow::Result<()> {
        let mut line = match child {
            true => serde_json::to_string(&ChildAnswer { child: o.clone() })?,
            false => serde_json::to_string(o)?,
        };
        line.push('\n');
        output.write_all(line.as_bytes())?;
        Ok(())
    };
    // Write access to the file only where the mapping can write it back: a private mapping's
    // stores stay in its copies (so a read-only mount can be mapped), and a read-only mapping
    // of a read-only fd can never be made writable (mprotect would be refused).
    let shared_write = prot == Prot::ReadWrite && kind != MapKind::Private;
    let file = std::fs::OpenOptions::new().read(true).write(shared_write).open(path);
    let prot = match prot {
        Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Prot::Read => libc::PROT_READ,
    };
    let map = match file.and_then(|f| sys::mmap(f.as_fd(), offset, len, prot, flags)) {
        Ok(m) => m,
        Err(e) => return answer(&super::errno(&e), false),
    };
    let mut map = map;
    sys::report_signals(out.as_fd(), &map)?;
    warm_up();
    answer(&Observed::Ok, false)?;
    let mut runs = Vec::with_capacity(MAX_RUNS);
    for line in BufReader::new(input).lines() {
        let line = line?;
        sys::set_idle(false);
        let request: Request = serde_json::from_str(&line).context("mapping holder: request")?;
        let child =
            matches!(request, Request::Store { fork: true, .. } | Request::Load { fork: true, .. });
        let observed = match request {
            Request::Store { offset, len, byte, fork } => {
                let store = |_: &mut Vec<Run>| {
                    let before = sys::faults();
                    match sys::store(&map, offset, len, byte) {
                        Ok(()) => {
                            Observed::Stored { faults: sys::faults() - before, pmd_faults: None }
                        }
                        Err(e) => Observed::Error(format!("store: {e}")),
                    }
                };
                match fork {
                    true => forked(&mut runs, store),
                    false => store(&mut runs),
                }
            }
            Request::Load { offset, len, fork } => {
                let load = |runs: &mut Vec<Run>| {
                    runs.clear();
                    let before = sys::faults();
                    match sys::load_runs(&map, offset, len, runs) {
                        Ok(truncated) => {
                            let faults = sys::faults() - before;
                            Observed::Bytes {
                                asked: len as u64,
                                got: len as u64,
                                runs: runs.clone(),
                                truncated,
                                faults: Some(faults),
                                pmd_faults: None,
                            }
                        }
                        Err(e) => Observed::Error(format!("load: {e}")),
                    }
                };
                match fork {
                    true => forked(&mut runs, load),
                    false => load(&mut runs),
                }
            }
            Request::StoreProfile { offset, len, stride, byte } => {
                store_profile(&map, offset, len, stride, byte)
            }
            Request::Mprotect { write } => {
                let prot = match write {
                    true => libc::PROT_READ | libc::PROT_WRITE,
                    false => libc::PROT_READ,
                };
                super::done(sys::mprotect(&map, prot))
            }
            Request::Mremap { len } => match sys::mremap_aligned(&map, len.unwrap_or(map.len)) {
                Ok(moved) => {
                    map = moved;
                    sys::report_mapping(&map);
                    Observed::Ok
                }
                Err(e) => super::errno(&e),
            },
            Request::Msync => super::done(sys::msync(&map)),
            Request::Poison { offset } => super::done(sys::hwpoison(&map, offset)),
            Request::MappedBufferIo { offset, len, path, file_offset, write, direct } => {
                match sys::mapped_buffer_io(&map, offset, len, &path, file_offset, write, direct) {
                    Ok(()) => Observed::Ok,
                    // The scenario asked for bytes the file does not have: not the kernel's doing.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Observed::Error(
                        format!("mapped_buffer_io: {} ended before {len} bytes", path.display()),
                    ),
                    Err(e) => super::errno(&e),
                }
            }
            Request::RaceStoreClone { mnt, file, rounds, seed } => {
                super::race::store_clone(&map, &mnt, &file, rounds, seed)
            }
            Request::RaceDirectIoRemove { file, remove, rounds, seed } => {
                super::race::direct_io_remove(&map, (path, offset), &file, remove, rounds, seed)
            }
            Request::RacePrivateCow { rounds, seed } => {
                super::race::private_cow((path, offset, map.len as u64), rounds, seed)
            }
            Request::StoreLoop { msync } => {
                let console = match std::fs::OpenOptions::new().write(true).open(CONSOLE) {
                    Ok(c) => c,
                    Err(e) => {
                        return answer(
                            &Observed::Error(format!("store_loop: opening {CONSOLE}: {e}")),
                            false,
                        )
                    }
                };
                answer(&Observed::Ok, false)?;
                store_loop(&map, msync, console);
            }
            Request::Unmap => return answer(&super::done(sys::munmap(&map)), false),
        };
        answer(&observed, child)?;
        sys::set_idle(true);
    }
    Ok(())
}

/// store_profile in the holder: the samples are written once before the loop (a fresh vector's
/// pages would otherwise fault during it, counted as the mapping's).
fn store_profile(
    map: &sys::Mapping,
    offset: usize,
    len: usize,
    stride: usize,
    byte: u8,
) -> Observed {
    if stride == 0 || !len.is_multiple_of(stride) {
        return Observed::Error(format!(
            "store_profile: len {len} is not a multiple of stride {stride}"
        ));
    }
    let mut samples = vec![u64::MAX; len / stride];
    let before = sys::faults();
    match sys::store_profile(map, offset, stride, byte, &mut samples) {
        Ok(clock_ns) => Observed::Profile(FaultProfile {
            stride: stride as u64,
            samples_ns: samples,
            clock_ns,
            faults: sys::faults() - before,
            pte_faults: 0,
            pmd_faults: 0,
            pmd_fallbacks: 0,
            metadata: None,
        }),
        Err(e) => Observed::Error(format!("store_profile: {e}")),
    }
}

/// Runs `access` in a child forked for it: the child inherits the mapping (fork copies page-table
/// entries only where the kernel must: mm/memory.c vma_needs_copy), so what it counts are its
/// own faults. Its observation comes back as the holder's [`ChildAnswer`]; a signal kills the
/// child, whose handler reports the siginfo on the child's pipe first.
fn forked(runs: &mut Vec<Run>, access: impl FnOnce(&mut Vec<Run>) -> Observed) -> Observed {
    // Fork leaves the holder's own memory copy-on-write in both processes: the first store of
    // each into its stack or into `runs` faults, which must not be counted as the mapping's.
    let rewarm = |runs: &mut Vec<Run>| {
        warm_up();
        runs.clear();
        let _ = runs_into(0, b"w", runs);
        runs.clear();
    };
    let child = |mut out: std::fs::File| -> i32 {
        sys::report_to(out.as_fd());
        rewarm(runs);
        let observed = access(runs);
        let line = serde_json::to_string(&observed).unwrap_or_default() + "\n";
        match out.write_all(line.as_bytes()) {
            Ok(()) => 0,
            Err(_) => 2,
        }
    };
    let relayed = match sys::fork_reporting(child) {
        Ok((pid, from)) => {
            let mut line = String::new();
            let read = BufReader::new(from).read_line(&mut line);
            let parsed = match read {
                Ok(n) if n > 0 => serde_json::from_str::<Observed>(&line)
                    .map_err(|e| format!("the forked child answered {line:?}: {e}")),
                Ok(_) => Err("the forked child ended without an answer".to_string()),
                Err(e) => Err(format!("reading the forked child's answer: {e}")),
            };
            match (parsed, sys::wait(pid)) {
                (_, Err(e)) => Observed::Error(format!("waiting for the forked child: {e}")),
                (Ok(o @ Observed::Signal { .. }), Ok(sys::Ended::Signalled(sig))) if matches!(&o, Observed::Signal { name, .. } if *name == sys::signal_name(sig)) => {
                    o
                }
                (Ok(Observed::Signal { name, .. }), Ok(_)) => Observed::Error(format!(
                    "the forked child reported {name} but did not die of it"
                )),
                (Ok(o), Ok(sys::Ended::Exited(0))) => o,
                // Killed by a signal its handler does not catch: the signal is the observation.
                (_, Ok(sys::Ended::Signalled(sig))) => Observed::signal(&sys::signal_name(sig)),
                (Err(e), Ok(_)) => Observed::Error(e),
                (Ok(_), Ok(sys::Ended::Exited(code))) => {
                    Observed::Error(format!("the forked child exited with status {code}"))
                }
            }
        }
        Err(e) => Observed::Error(format!("fork for the access: {e}")),
    };
    rewarm(runs);
    relayed
}

/// The serial console, which QEMU writes to a file of the host as the guest transmits.
const CONSOLE: &str = "/dev/ttyS0";

/// Record i (i + 1, little-endian) into every RECORD bytes of the mapping in turn, msync after
/// each when asked, and each reported on the console once done: a record is reported only when
/// its store (and msync) returned, and the next store waits until the host has the report. Then
/// waits for the power cut; a failed msync or report ends the loop (the count stops there).
fn store_loop(map: &sys::Mapping, msync: bool, mut console: std::fs::File) -> ! {
    use daxtest_proto::case::{RECORD, RECORD_MARK};
    for i in 0..map.len / RECORD {
        sys::store_u64(map, i * RECORD, i as u64 + 1);
        if msync && sys::msync(map).is_err() {
            break;
        }
        // One write: a line in pieces could be split by a kernel message on the console.
        let line = format!("{RECORD_MARK}{i}\n");
        let reported =
            console.write_all(line.as_bytes()).and_then(|()| sys::drain(console.as_fd()));
        if reported.is_err() {
            break;
        }
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
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
        let _ = sys::store_profile(&scratch, 0, 4096, b'w', &mut [0; 2]);
        let _ = sys::faults() - before;
        runs.clear();
        let _ = runs_into(0, b"w", &mut runs);
        runs.clear();
    }
    let _ = sys::munmap(&scratch);
}
