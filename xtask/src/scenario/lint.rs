//! What a step may not say, whatever the kernel: success the kernel cannot give in a matrix
//! cell, an expectation its operation cannot observe, a name used while it does not exist, an
//! errno the agent never reports.

use super::limits::POISON_LEN;
use daxtest_proto::case::{Expect, Fs, IoDirection, MapKind, Op, Outcome, Prot, RACE_SLOT, RECORD};
use daxtest_proto::errno;
use std::collections::{HashMap, HashSet};

/// An expectation of success the kernel cannot meet in this matrix cell, whatever its version.
pub(super) fn impossible(
    op: &Op,
    expect: &[(super::When, Expect)],
    fs: Fs,
    mount: &str,
) -> Option<String> {
    // The alternatives some kernel and device can reach: up to the first without conditions.
    let reachable = match expect.iter().position(|(w, _)| *w == super::When::default()) {
        Some(i) => &expect[..=i],
        None => expect,
    };
    if !reachable.iter().any(|(_, e)| matches!(e.outcome, Outcome::Ok)) {
        return None;
    }
    match op {
        Op::Clone { .. } | Op::CloneRange { .. } if fs == Fs::Ext4 => Some(format!(
            "{} cannot succeed on ext4 (it has no reflink: FICLONE and FICLONERANGE fail with \
             EOPNOTSUPP): expect {{ errno = \"EOPNOTSUPP\" }} there \
             ({{ when = {{ fs = \"ext4\" }}, errno = \"EOPNOTSUPP\" }}), or restrict the case \
             to xfs",
            op.name()
        )),
        Op::RaceStoreClone { .. } if fs == Fs::Ext4 => Some(
            "race_store_clone cannot succeed on ext4 (it clones with FICLONE, which fails with \
             EOPNOTSUPP there: ext4 has no reflink): restrict the case to xfs \
             (matrix = { fs = [\"xfs\"] })"
                .into(),
        ),
        Op::RaceToggleWrite { .. }
            if mount.split(',').any(|o| matches!(o, "dax" | "dax=always" | "dax=never")) =>
        {
            Some(format!(
                "race_toggle_write cannot race under {mount}: the mount option fixes the DAX \
                 mode, so toggling the flag never changes it; restrict the case to dax=inode \
                 (matrix = {{ mount = [\"dax=inode\"] }})"
            ))
        }
        Op::Mmap { kind: MapKind::Sync, .. } if mount.split(',').any(|o| o == "dax=never") => Some(
            "mmap kind = \"sync\" (MAP_SYNC) cannot succeed under dax=never: without DAX \
                 the kernel refuses it with EOPNOTSUPP; expect { errno = \"EOPNOTSUPP\" } there \
                 ({ when = { mount = \"dax=never\" }, errno = \"EOPNOTSUPP\" }), or take dax=never \
                 out of the case's matrix"
                .into(),
        ),
        _ => None,
    }
}
/// Whether each expectation can be observed by the operation (content needs read or load...).
pub(super) fn fits(op: &Op, alternatives: &[(super::When, Expect)]) -> Result<(), String> {
    let access = matches!(op, Op::Store { .. } | Op::Load { .. });
    for (_, e) in alternatives {
        if (e.faults.is_some() || e.pmd_faults.is_some()) && matches!(op, Op::StoreProfile { .. }) {
            return Err("store_profile measures its faults and records them, never judges them: \
                        leave faults and pmd_faults out (a store step judges them)"
                .into());
        }
        if (e.faults.is_some() || e.pmd_faults.is_some()) && !access {
            return Err(format!(
                "op {} cannot observe faults: only store and load count them (the faults of \
                 the process that holds the mapping)",
                op.name()
            ));
        }
        // Whether `op` can observe `e`, and which ops can.
        let (fits, by) = match &e.outcome {
            Outcome::Ok | Outcome::Errno(_) => (true, "every op"),
            Outcome::Signal(_) => (
                access
                    || matches!(op, Op::Poison { .. } | Op::Exec { .. } | Op::StoreProfile { .. }),
                "store, load, store_profile, poison or exec",
            ),
            Outcome::Content(_) => {
                (matches!(op, Op::Read { .. } | Op::Load { .. }), "read and load")
            }
            Outcome::Dax(_) => (matches!(op, Op::Statx { .. }), "statx"),
            Outcome::Flag(_) => (matches!(op, Op::GetFlag { .. }), "get_flag"),
            Outcome::Extents { .. } | Outcome::NoExtents | Outcome::Shared(_) => {
                (matches!(op, Op::Fiemap { .. }), "fiemap")
            }
            Outcome::Exit(_) => {
                (matches!(op, Op::Shell { .. } | Op::Exec { .. }), "shell and exec")
            }
            Outcome::Lost(_) => (matches!(op, Op::PowerCut), "power_cut (after a store_loop)"),
        };
        if !fits {
            return Err(format!(
                "op {} cannot observe \"{}\": only {by} can; expect {{ ok = true }} or an errno \
                 here and check it with a {by} step",
                op.name(),
                e.outcome
            ));
        }
    }
    Ok(())
}

/// Tracks handles, mappings and saved extent maps through a case, so that a name is used only
/// while it exists.
#[derive(Default)]
pub(super) struct Usage {
    handles: HashSet<String>,
    maps: HashMap<String, LiveMap>,
    saved: HashSet<String>,
    /// What ended a handle or mapping that is gone: ("handle" or "mapping", name) -> "the munmap
    /// at line 12".
    ended: HashMap<(&'static str, String), String>,
    /// The line of a store_loop the step after it must cut the power of.
    store_loop: Option<usize>,
}

/// A mapping made by an earlier step: what later steps may do through it.
struct LiveMap {
    len: u64,
    kind: MapKind,
    prot: Prot,
    /// The line of its mmap step.
    line: usize,
    /// The line of the mprotect that made it read-only, while it is.
    read_only_since: Option<usize>,
}

impl Usage {
    /// What is wrong with `op` (at `line`) given the names made and ended before it; records
    /// what it makes and ends.
    pub(super) fn step(
        &mut self,
        op: &Op,
        expect: &[(super::When, Expect)],
        line: usize,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let need = |set: Vec<&String>,
                    ended: &HashMap<(&'static str, String), String>,
                    kind: &'static str,
                    name: &str,
                    errors: &mut Vec<String>| {
            if set.iter().any(|k| *k == name) {
                return;
            }
            let mut known: Vec<String> = set.iter().map(|k| format!("{k:?}")).collect();
            known.sort();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            let op = op.name();
            errors.push(match (kind, ended.get(&(kind, name.to_string()))) {
                (_, Some(what)) => format!(
                    "{op} uses {kind} {name:?}, which no earlier step opened since {what} closed \
                     it: {} it again before this step, or move this step before that one",
                    if kind == "handle" { "open" } else { "mmap" }
                ),
                ("handle", None) => format!(
                    "{op} uses handle {name:?}, which no earlier step opened: open it first \
                     ({{ op = \"open\", file = ..., handle = {name:?} }}; open handles here: \
                     {known})"
                ),
                ("mapping", None) => format!(
                    "{op} uses mapping {name:?}, which no earlier step opened: mmap it first \
                     ({{ op = \"mmap\", ..., map = {name:?} }}; mappings here: {known})"
                ),
                (_, None) => format!(
                    "{op} uses {kind} {name:?}, which no earlier step opened or saved: give an \
                     earlier fiemap step save = {name:?} (saved so far: {known})"
                ),
            });
        };
        // Op::name serialises the op: only for the steps that end something.
        let what = || format!("the {} at line {line}", op.name());
        let measures_loss = expect.iter().any(|(_, e)| matches!(e.outcome, Outcome::Lost(_)));
        match (self.store_loop.take(), op) {
            (Some(at), Op::PowerCut) if !measures_loss => errors.push(format!(
                "this power_cut ends the store_loop at line {at}: say what it may lose, \
                 expect = {{ lost = 0 }} (judged) or {{ lost = \"any\" }} (measured)"
            )),
            (Some(_), Op::PowerCut) => {}
            (Some(at), _) => errors.push(format!(
                "the store_loop at line {at} runs until the power is cut: the step after it must \
                 be {{ op = \"power_cut\" }}"
            )),
            (None, Op::PowerCut) if measures_loss => errors.push(
                "lost counts the records of a store_loop: put one right before this power_cut, \
                 or expect { ok = true }"
                    .into(),
            ),
            _ => {}
        }
        match op {
            Op::Open { handle, .. } if !self.handles.insert(handle.clone()) => {
                errors.push(format!(
                    "handle {handle:?} is already open: close it first, or give this one \
                     another name"
                ));
            }
            Op::Close { handle } => {
                need(self.handles.iter().collect(), &self.ended, "handle", handle, &mut errors);
                self.handles.remove(handle);
                self.ended.insert(("handle", handle.clone()), what());
            }
            Op::Mmap { map, .. } if self.maps.contains_key(map) => {
                errors.push(format!(
                    "mapping {map:?} already exists: munmap it first, or give this one \
                     another name"
                ));
            }
            Op::Mmap { map, len, kind, prot, .. } => {
                let m =
                    LiveMap { len: *len, kind: *kind, prot: *prot, line, read_only_since: None };
                self.maps.insert(map.clone(), m);
            }
            Op::Munmap { map } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                self.maps.remove(map);
                self.ended.insert(("mapping", map.clone()), what());
            }
            Op::Store { map, offset, .. }
            | Op::Load { map, offset, .. }
            | Op::Poison { map, offset } => {
                let len = match op {
                    Op::Store { len, .. } | Op::Load { len, .. } => *len,
                    _ => POISON_LEN,
                };
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                errors.extend(self.past_the_end(op, map, "offset", *offset, len));
                // The store would kill the holder with SIGSEGV, a fault of the scenario.
                if let (Op::Store { .. }, Some(m)) = (op, self.maps.get(map)) {
                    if m.prot == Prot::Read {
                        errors.push(format!(
                            "store through mapping {map:?}, mmapped read-only at line {}: the store can \
                             only be refused (SIGSEGV); mmap it with prot = \"read_write\", or \
                             write the file with a write step",
                            m.line
                        ));
                    } else if let Some(at) = m.read_only_since {
                        let refused =
                            |e: &Expect| matches!(&e.outcome, Outcome::Signal(s) if s == "SIGSEGV");
                        if !expect.iter().all(|(_, e)| refused(e)) {
                            errors.push(format!(
                                "store through mapping {map:?}, made read-only by the mprotect at \
                                 line {at}: the store can only be refused; expect {{ signal = \
                                 \"SIGSEGV\" }}, or mprotect it prot = \"read_write\" before \
                                 this step"
                            ));
                        }
                    }
                }
                // A signal kills the process that makes the access: the holder, and the mapping
                // with it (a `fork` access's child dies alone).
                let forked =
                    matches!(op, Op::Store { fork: true, .. } | Op::Load { fork: true, .. });
                if let Some(sig) = expect.iter().find_map(|(_, e)| match &e.outcome {
                    Outcome::Signal(s) if !forked => Some(s),
                    _ => None,
                }) {
                    self.maps.remove(map);
                    self.ended.insert(
                        ("mapping", map.clone()),
                        format!(
                            "the {sig} expected at line {line} (it kills the mapping's process)"
                        ),
                    );
                }
            }
            Op::StoreProfile { map, offset, len, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                errors.extend(self.past_the_end(op, map, "offset", *offset, *len));
                match self.maps.get(map) {
                    Some(m) if m.prot == Prot::Read || m.read_only_since.is_some() => {
                        errors.push(format!(
                            "store_profile stores through mapping {map:?} (mmapped at line {}), \
                             which is read-only here: every store would be refused (SIGSEGV); \
                             mmap it with prot = \"read_write\" (and no mprotect read before)",
                            m.line
                        ))
                    }
                    _ => {}
                }
                if expect.iter().any(|(_, e)| matches!(e.outcome, Outcome::Signal(_))) {
                    self.maps.remove(map);
                    self.ended.insert(
                        ("mapping", map.clone()),
                        format!(
                            "the signal expected at line {line} (it kills the mapping's process)"
                        ),
                    );
                }
            }
            Op::Mprotect { map, prot } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                let succeeds = expect.iter().any(|(_, e)| matches!(e.outcome, Outcome::Ok));
                match self.maps.get_mut(map) {
                    // mm/mprotect.c do_mprotect_pkey: a shared mapping of a file opened
                    // read-only has no VM_MAYWRITE, and PROT_WRITE is refused with EACCES.
                    Some(m)
                        if succeeds
                            && *prot == Prot::ReadWrite
                            && m.prot == Prot::Read
                            && m.kind != MapKind::Private =>
                    {
                        errors.push(format!(
                            "mprotect prot = \"read_write\" of mapping {map:?}, mmapped read-only \
                             at line {} (its file opened O_RDONLY), cannot succeed: the kernel \
                             refuses PROT_WRITE there with EACCES; expect {{ errno = \"EACCES\" \
                             }}, or mmap it with prot = \"read_write\"",
                            m.line
                        ))
                    }
                    Some(m) if succeeds => {
                        m.read_only_since = (*prot == Prot::Read).then_some(line);
                    }
                    _ => {}
                }
            }
            Op::Mremap { map, len } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                let succeeds = expect.iter().any(|(_, e)| matches!(e.outcome, Outcome::Ok));
                if let (Some(m), Some(len), true) = (self.maps.get_mut(map), len, succeeds) {
                    m.len = *len;
                }
            }
            Op::Msync { map } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors)
            }
            Op::MappedBufferIo { map, map_offset, len, direction, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                errors.extend(self.past_the_end(op, map, "map_offset", *map_offset, *len));
                // A read stores into the buffer: the kernel's copy or pin for writing needs a
                // writable VMA (mm/gup.c check_vma_flags; copy_to_user faults), else EFAULT
                // (fstests generic/462).
                let succeeds = expect.iter().any(|(_, e)| matches!(e.outcome, Outcome::Ok));
                let read_only = self.maps.get(map).and_then(|m| match m.prot {
                    Prot::Read => Some(format!("mmapped read-only at line {}", m.line)),
                    Prot::ReadWrite => m
                        .read_only_since
                        .map(|at| format!("made read-only by the mprotect at line {at}")),
                });
                if let (IoDirection::Read, true, Some(why)) = (direction, succeeds, read_only) {
                    errors.push(format!(
                        "mapped_buffer_io direction = \"read\" fills mapping {map:?}, {why}: \
                         the kernel can only refuse it; expect {{ errno = \"EFAULT\" }}, or make \
                         the mapping writable (mmap prot = \"read_write\")"
                    ));
                }
            }
            Op::RaceStoreClone { map, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                match self.maps.get(map) {
                    Some(m) if m.len < RACE_SLOT as u64 => errors.push(format!(
                        "race_store_clone needs a mapping of at least one slot of {RACE_SLOT} \
                         bytes (it stores into an 8-byte slot at the start of each); mapping \
                         {map:?} (mmapped at line {}) is {} bytes: mmap at least {RACE_SLOT}",
                        m.line, m.len
                    )),
                    // Stores through a private mapping never reach the file the race clones.
                    Some(m) if m.kind == MapKind::Private => errors.push(format!(
                        "race_store_clone needs a shared mapping: mapping {map:?} (mmapped at \
                         line {}) is private, so its stores never reach the file: mmap it with \
                         kind = \"shared\" or \"sync\"",
                        m.line
                    )),
                    Some(m) if m.prot == Prot::Read => errors.push(format!(
                        "race_store_clone stores through mapping {map:?}, mmapped read-only at \
                         line {}: mmap it with prot = \"read_write\"",
                        m.line
                    )),
                    _ => {}
                }
            }
            // O_DIRECT must pin the file's own pages: a private mapping's stores and copies
            // are anonymous memory, and a read-only one cannot be read into.
            Op::RaceDirectIoRemove { map, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                match self.maps.get(map) {
                    Some(m) if m.kind == MapKind::Private || m.prot == Prot::Read => {
                        errors.push(format!(
                            "race_direct_io_remove reads into mapping {map:?} (mmapped at line \
                             {}), which must be a writable shared mapping of the file whose \
                             blocks it removes: mmap it with kind = \"shared\" or \"sync\" and \
                             prot = \"read_write\"",
                            m.line
                        ))
                    }
                    Some(m) if m.len % 4096 != 0 => errors.push(format!(
                        "race_direct_io_remove reads into the whole of mapping {map:?} (mmapped \
                         at line {}) with O_DIRECT, which wants a multiple of 4096 bytes; it is \
                         {}: mmap a multiple of 4096",
                        m.line, m.len
                    )),
                    _ => {}
                }
            }
            Op::RacePrivateCow { map, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors)
            }
            Op::StoreLoop { map, .. } => {
                need(self.maps.keys().collect(), &self.ended, "mapping", map, &mut errors);
                self.store_loop = Some(line);
                match self.maps.get(map) {
                    Some(m) if m.len < RECORD as u64 => errors.push(format!(
                        "store_loop needs a mapping of at least one record of {RECORD} bytes; \
                         mapping {map:?} (mmapped at line {}) is {} bytes: mmap more",
                        m.line, m.len
                    )),
                    Some(m) if m.kind == MapKind::Private => errors.push(format!(
                        "store_loop needs a shared mapping: mapping {map:?} (mmapped at line {}) \
                         is private, so its stores never reach the file: mmap it with kind = \
                         \"shared\" or \"sync\"",
                        m.line
                    )),
                    _ => {}
                }
            }
            Op::Evict | Op::Remount { .. } | Op::RaceToggleWrite { .. } | Op::PowerCut => {
                let what = what();
                for h in self.handles.drain() {
                    self.ended.insert(("handle", h), what.clone());
                }
                for (m, _) in self.maps.drain() {
                    self.ended.insert(("mapping", m), what.clone());
                }
            }
            _ => {}
        }
        for (_, e) in expect {
            if let Outcome::Extents { since, .. } = &e.outcome {
                need(
                    self.saved.iter().collect(),
                    &self.ended,
                    "saved extent map",
                    since.as_str(),
                    &mut errors,
                );
            }
        }
        if let Op::Fiemap { save: Some(name), .. } = op {
            self.saved.insert(name.clone());
        }
        errors
    }

    /// What is wrong once the case's steps are over: a store_loop whose power is never cut.
    pub(super) fn end(&mut self) -> Option<String> {
        self.store_loop.take().map(|at| {
            format!(
                "the store_loop at line {at} runs until the power is cut: end the case with \
                 {{ op = \"power_cut\", expect = {{ lost = 0 }} }} (or lost = \"any\") and \
                 the steps after it"
            )
        })
    }

    /// An access of `len` bytes at `offset` (written as `key`) of mapping `map` that runs past
    /// its end: the agent refuses it, so such a step always fails.
    fn past_the_end(&self, op: &Op, map: &str, key: &str, offset: u64, len: u64) -> Option<String> {
        let m = self.maps.get(map)?;
        offset.checked_add(len).is_none_or(|end| end > m.len).then(|| {
            format!(
                "{} {key} {offset} + len {len} runs past the end of mapping {map:?} ({} bytes, \
                 mmapped at line {}): keep {key} + len within its len, or mmap more",
                op.name(),
                m.len,
                m.line
            )
        })
    }
}

/// Why a step cannot expect `name`: not an errno, or a second name of a number the agent
/// reports under its first (daxtest_proto::errno), which no observation could ever match.
pub(super) fn errno_problem(name: &str) -> Option<String> {
    if let Some(reported) = errno::alias_of(name) {
        return Some(format!(
            "errno = {name:?}: write {reported}: {name} is the same number on Linux and the agent \
             reports it as {reported}"
        ));
    }
    errno::errno_number(name)
        .is_none()
        .then(|| format!("errno = {name:?}: not an errno name (EINVAL, EOPNOTSUPP, ETXTBSY, ...)"))
}
