//! `reproduce.sh`: one resolved case as a plain POSIX sh script of xfs_io and standard tools, the
//! form a kernel mailing list expects in a bug report. It formats and mounts the device as the
//! case does, runs the steps in order, prints for each what was expected and what happened,
//! stops at the first mismatch as the agent does, and ends with a PASS or FAIL line judged like
//! the case (steps, then kernel log and taint).
//!
//! Live handles and mappings belong to one long-lived xfs_io (the "session", fed through a
//! fifo; see the helpers in `repro_script/prelude.sh`): an mmap must outlive the steps between
//! the mmap and the munmap, while other steps (clone, punch, truncate...) run as their own
//! processes, exactly as the agent holds its mappings while it calls other syscalls.

use crate::scenario::{KernelLogRules, Xfail};
use crate::sh::quote;
use daxtest_proto::case::{
    CaseSpec, Expect, FallocMode, Fs, InodeFlag, MapKind, Op, Outcome, Prot, Shared, Step,
};
use std::fmt::Write as _;

const PRELUDE: &str = include_str!("script/prelude.sh");

/// What the script is made from: the case spec as the agent got it, and what the host judges
/// beyond the steps.
pub struct Input<'a> {
    pub spec: &'a CaseSpec,
    pub kernel_log: &'a KernelLogRules,
    pub xfail: Option<&'a Xfail>,
    pub kernel_release: &'a str,
}

pub struct Script {
    pub text: String,
    /// Steps the script cannot express (each also said loudly in the script).
    pub unsupported: Vec<String>,
}

/// A path under the mount point as one sh word: `"$MNT"/'rel'`.
fn mnt(rel: &str) -> String {
    format!("\"$MNT\"/{}", quote(rel))
}

/// Whether `rel` can go into an xfs_io command string (split on blanks by xfs_io, inside
/// double quotes for sh) unchanged.
fn xfs_io_safe(rel: &str) -> bool {
    crate::sh::is_plain(rel)
}

/// The file table and mapping table of the session xfs_io, tracked here as the steps change
/// them (xfs_io numbers both by position; `close` and `munmap` shift later entries down). The
/// script stops at the first unexpected outcome, so the tables follow the expected outcomes.
#[derive(Default)]
struct Session {
    running: bool,
    /// Paths (relative) of open files, with what holds them: a handle or a mapping's own fd.
    files: Vec<(Holder, String)>,
    maps: Vec<MapSlot>,
}

#[derive(Clone, PartialEq)]
enum Holder {
    Handle(String),
    Map(String),
}

#[derive(Clone)]
struct MapSlot {
    name: String,
    offset: u64,
    len: u64,
    kind: MapKind,
}

struct Gen {
    out: String,
    session: Session,
    unsupported: Vec<String>,
    /// The step's expectation has been checked already (before a respawn or a close).
    checked: bool,
    /// Names of extent maps saved before the last power cut.
    saved_before_cut: Vec<String>,
}

fn hex(c: char) -> String {
    format!("{:02x}", c as u32 as u8)
}

fn mmap_flags(kind: MapKind) -> &'static str {
    match kind {
        MapKind::Sync => "-rw -S",
        _ => "-rw",
    }
}

impl Gen {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn ensure_session(&mut self) {
        if !self.session.running {
            self.line("s_start");
            self.session.running = true;
        }
    }

    fn stop_session(&mut self) {
        if self.session.running {
            self.line("s_stop");
        }
        self.session = Session::default();
    }

    /// Session commands that make `map` current: `mmap N`.
    fn select_map(&self, map: &str) -> Option<String> {
        self.session.maps.iter().position(|m| m.name == map).map(|i| format!("mmap {i}"))
    }

    fn map_slot(&self, map: &str) -> Option<&MapSlot> {
        self.session.maps.iter().find(|m| m.name == map)
    }

    /// Says loudly that a step cannot be expressed, in the script and in its output.
    fn unsupported(&mut self, n: usize, step: &Step, why: &str) {
        let what = format!("step {n} (line {}, {}): {why}", step.line, step.op.name());
        let _ = writeln!(
            self.out,
            "# !!! NOT REPRODUCED: {what}\nsay '!!! NOT REPRODUCED: {}'\nUNSUPPORTED=1",
            what.replace('\'', "")
        );
        self.unsupported.push(what);
    }

    /// Writes the line that compares the step's result with `expect` and prints the verdict.
    fn verdict_line(&mut self, expect: &Expect) {
        let check = match &expect.outcome {
            Outcome::Ok => "expect_success".to_string(),
            Outcome::Errno(e) => format!("expect_errno {}", quote(e)),
            Outcome::Signal(s) => format!("expect_signal {}", quote(s)),
            Outcome::Content(_) => "expect_content".to_string(),
            Outcome::Dax(on) => format!("expect_got 'STATX_ATTR_DAX {}'", on_off(*on)),
            Outcome::Flag(on) => format!("expect_got 'FS_XFLAG_DAX {}'", on_off(*on)),
            Outcome::Extents { since, same } => format!(
                "expect_extents {} {}",
                quote(&fiemap_name(since)),
                if *same { "same" } else { "changed" }
            ),
            Outcome::NoExtents => "expect_shared hole".to_string(),
            Outcome::Shared(s) => format!(
                "expect_shared {}",
                match s {
                    Shared::All => "all",
                    Shared::None => "none",
                    Shared::Some => "some",
                }
            ),
            Outcome::Exit(n) => format!("expect_exit {n}"),
            // The records of a store_loop, which the script cannot run (NOT REPRODUCED above).
            Outcome::Lost(_) => "expect_success".to_string(),
        };
        if expect.si_code.is_some() || expect.si_addr_lsb.is_some() {
            let _ = writeln!(
                self.out,
                "say '  (si_code and si_addr_lsb not checked: a shell sees only the signal)'"
            );
        }
        // xfs_io cannot count the faults of its own accesses.
        for (what, count) in [("faults", expect.faults), ("PMD faults", expect.pmd_faults)] {
            if let Some(c) = count {
                let _ = writeln!(
                    self.out,
                    "say '  ({what} {c} not checked: the agent counts them, a shell cannot)'"
                );
            }
        }
        self.line(&check);
        self.checked = true;
    }

    fn step(&mut self, n: usize, step: &Step) {
        let op_name = step.op.name();
        let _ = writeln!(self.out, "\n# step {n} (line {}): {}", step.line, describe(&step.op));
        let _ = writeln!(self.out, "EXPECT={}", quote(&step.expect.to_string()));
        if let Outcome::Content(c) = &step.expect.outcome {
            let _ = writeln!(self.out, "WANT_HEX={}", hex(*c));
        } else {
            self.line("WANT_HEX=");
        }
        let _ = writeln!(self.out, "step {n} {} {op_name}", step.line);
        self.checked = false;
        // Paths that xfs_io would split or sh would expand cannot go into a -c string as they are.
        // Extent maps saved before a power cut were in the killed VM's /tmp.
        if let Outcome::Extents { since, .. } = &step.expect.outcome {
            if self.saved_before_cut.contains(since) {
                let why = format!(
                    "compares with the extent map {since:?} saved before the power cut, which \
                     the script kept in the killed VM's /tmp"
                );
                self.unsupported(n, step, &why);
                return;
            }
        }
        let paths = crate::scenario::op_paths(&step.op);
        if let Some((_, p)) = paths.iter().find(|(_, p)| !xfs_io_safe(p)) {
            let why = format!("the path {p:?} has characters xfs_io commands cannot take");
            self.unsupported(n, step, &why);
            return;
        }
        match &step.op {
            // The cut itself is done by hand (`power_cut` in the part before ends the script);
            // here, in the VM booted after it, the filesystem is recovered and checked.
            Op::PowerCut => self.line("recover"),
            // Its records are reported over daxtest's serial console, which a script lacks.
            Op::StoreLoop { .. } => {
                let why = "store_loop reports each completed record to daxtest's host on the \
                           serial console and is cut at a random moment: by hand, store records \
                           through the mapping, note the last one completed, cut the power and \
                           count what the file holds after the reboot";
                self.unsupported(n, step, why);
                return;
            }
            Op::Create { file } => self.line(&format!("run touch {}", mnt(file))),
            Op::Mkdir { dir } => self.line(&format!("run mkdir {}", mnt(dir))),
            Op::Write { file, offset, len, pattern } => self.line(&format!(
                "run xfs_io -f -c \"pwrite -q -S 0x{} {offset} {len}\" {}",
                hex(*pattern),
                mnt(file)
            )),
            Op::Read { file, offset, len } => {
                self.line(&format!("read_data {offset} {len} {}", mnt(file)))
            }
            Op::Fsync { file } => self.line(&format!("run xfs_io -c fsync {}", mnt(file))),
            Op::Truncate { file, size } => {
                self.line(&format!("run xfs_io -c \"truncate {size}\" {}", mnt(file)))
            }
            Op::Fallocate { file, mode, offset, len } => {
                let cmd = match mode {
                    FallocMode::Default => "falloc",
                    FallocMode::KeepSize => "falloc -k",
                    FallocMode::PunchHole => "fpunch",
                    FallocMode::ZeroRange => "fzero",
                    FallocMode::CollapseRange => "fcollapse",
                    FallocMode::InsertRange => "finsert",
                    FallocMode::UnshareRange => "funshare",
                };
                self.line(&format!("run xfs_io -c \"{cmd} {offset} {len}\" {}", mnt(file)))
            }
            Op::Statx { file } => self.line(&format!("statx_dax {}", mnt(file))),
            Op::GetFlag { file } => self.line(&format!("get_flag {}", mnt(file))),
            Op::SetFlag { file, on, flag: InodeFlag::Dax } => self.line(&format!(
                "run xfs_io -r -c \"chattr {}x\" {}",
                if *on { "+" } else { "-" },
                mnt(file)
            )),
            // e2fsprogs' chattr: FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS, as the agent does.
            Op::SetFlag { file, on, flag: InodeFlag::JournalData } => {
                self.line(&format!("run chattr {}j {}", if *on { "+" } else { "-" }, mnt(file)))
            }
            // xfs_io's reflink prints the error but exits 0: the output is what tells.
            Op::Clone { src, dst } => {
                self.line(&format!("run xfs_io -f -t -c \"reflink $MNT/{src}\" {}", mnt(dst)))
            }
            Op::CloneRange { src, dst, src_offset, len, dst_offset } => self.line(&format!(
                "run xfs_io -f -c \"reflink $MNT/{src} {src_offset} {dst_offset} {len}\" {}",
                mnt(dst)
            )),
            // busybox and coreutils mv call rename(2) within one filesystem.
            Op::Rename { from, to } => self.line(&format!("run mv {} {}", mnt(from), mnt(to))),
            Op::Unlink { file } => self.line(&format!("run unlink {}", mnt(file))),
            Op::Open { file, handle } => {
                self.ensure_session();
                self.line(&format!("s_do \"open $MNT/{file}\""));
                if matches!(step.expect.outcome, Outcome::Ok) {
                    self.session.files.push((Holder::Handle(handle.clone()), file.clone()));
                }
            }
            Op::Close { handle } => {
                let holder = Holder::Handle(handle.clone());
                match self.session.files.iter().position(|(h, _)| *h == holder) {
                    Some(i) => {
                        self.line(&format!("s_do \"file {i}\" close"));
                        self.session.files.remove(i);
                    }
                    None => self.line(&format!(
                        "GOT='error DAXTEST-ERROR: no handle {}'",
                        handle.replace('\'', "")
                    )),
                }
            }
            Op::Mmap { file, map, offset, len, kind, prot } => {
                if *kind == MapKind::Private {
                    self.unsupported(
                        n,
                        step,
                        "xfs_io's mmap has no MAP_PRIVATE (only MAP_SHARED and -S for \
                         MAP_SHARED_VALIDATE|MAP_SYNC)",
                    );
                    return;
                }
                self.ensure_session();
                // xfs_io's -r opens read-only and mmap -r maps PROT_READ.
                let (open, mflags) = match prot {
                    Prot::Read => ("open -r", "-r"),
                    Prot::ReadWrite => ("open", mmap_flags(*kind)),
                };
                self.line(&format!("s_do \"{open} $MNT/{file}\" \"mmap {mflags} {offset} {len}\""));
                if matches!(step.expect.outcome, Outcome::Ok) {
                    self.session.files.push((Holder::Map(map.clone()), file.clone()));
                    self.session.maps.push(MapSlot {
                        name: map.clone(),
                        offset: *offset,
                        len: *len,
                        kind: *kind,
                    });
                } else {
                    // The mmap failed as expected: the agent drops the fd it opened for it.
                    self.verdict_line(&step.expect);
                    self.line("s_do close >/dev/null");
                }
            }
            Op::Munmap { map } => match self.select_map(map) {
                Some(sel) => {
                    let holder = Holder::Map(map.clone());
                    let fd = self.session.files.iter().position(|(h, _)| *h == holder);
                    let mut cmds = vec![sel, "munmap".to_string()];
                    if let Some(i) = fd {
                        cmds.push(format!("file {i}"));
                        cmds.push("close".into());
                        self.session.files.remove(i);
                    }
                    let i = self.session.maps.iter().position(|m| m.name == *map).expect("found");
                    self.session.maps.remove(i);
                    let words: Vec<String> = cmds.iter().map(|c| quote(c)).collect();
                    self.line(&format!("s_do {}", words.join(" ")));
                }
                None => self.no_map(map),
            },
            // xfs_io has no fork: its accesses are its own.
            Op::Store { fork: true, .. } | Op::Load { fork: true, .. } => {
                self.unsupported(
                    n,
                    step,
                    "an access by a child the mapping's process forks (fork = true): xfs_io has \
                     no fork, and its mread and mwrite run in xfs_io itself",
                );
                return;
            }
            Op::StoreProfile { .. } => {
                self.unsupported(
                    n,
                    step,
                    "timed first stores with the kernel's fault tracepoints and metadata counters \
                     around them: xfs_io cannot time its stores; by hand, `mwrite -S 0xPP OFFSET \
                     1` at each stride of the range stores what the agent stores",
                );
                return;
            }
            Op::Mprotect { .. } => {
                self.unsupported(n, step, "mprotect of a mapping: xfs_io has no mprotect command");
                return;
            }
            // xfs_io's `mremap -f ADDR -m LEN` moves to a fixed address, which the script would
            // have to find free and 2 MiB-aligned in the xfs_io process it cannot look into.
            Op::Mremap { .. } => {
                self.unsupported(
                    n,
                    step,
                    "mremap to a new 2 MiB-aligned address: the agent reserves a free aligned \
                     area first; xfs_io's mremap -f takes an address the script cannot pick free \
                     in the session's xfs_io",
                );
                return;
            }
            Op::Store { map, offset, len, pattern, fork: false } => {
                match self.map_slot(map).cloned() {
                    Some(m) => {
                        let sel = self.select_map(map).expect("mapped");
                        self.line(&format!(
                            "s_do {} \"mwrite -S 0x{} {} {len}\"",
                            quote(&sel),
                            hex(*pattern),
                            m.offset + offset
                        ));
                        self.respawn_after_signal(&step.expect);
                    }
                    None => self.no_map(map),
                }
            }
            Op::Load { map, offset, len, fork: false } => match self.map_slot(map).cloned() {
                Some(m) => {
                    let sel = self.select_map(map).expect("mapped");
                    self.line(&format!("s_do {} >/dev/null", quote(&sel)));
                    self.line(&format!("s_load {} {len}", m.offset + offset));
                    self.respawn_after_signal(&step.expect);
                }
                None => self.no_map(map),
            },
            Op::Poison { .. } => {
                self.unsupported(
                    n,
                    step,
                    "madvise(MADV_HWPOISON) on a mapping: xfs_io's madvise has no hwpoison \
                     advice",
                );
                return;
            }
            Op::RacePrivateCow { .. } => {
                self.unsupported(
                    n,
                    step,
                    "two threads on one private mapping, each loading, storing and dropping it: \
                     xfs_io runs one command at a time",
                );
                return;
            }
            Op::MappedBufferIo { .. } | Op::RaceDirectIoRemove { .. } => {
                self.unsupported(
                    n,
                    step,
                    "read(2) or write(2), O_DIRECT or buffered, whose buffer is another file's \
                     mapping: xfs_io's pread and pwrite use buffers of its own memory, never a \
                     region its mmap command mapped",
                );
                return;
            }
            Op::Msync { map } => match self.select_map(map) {
                Some(sel) => self.line(&format!("s_do {} \"msync -s\"", quote(&sel))),
                None => self.no_map(map),
            },
            Op::Fiemap { file, offset, len, save } => {
                let range = if *len == 0 && *offset == 0 {
                    String::new()
                } else if *len == 0 {
                    // To EOF: FIEMAP takes a length; xfs_io then asks for everything after.
                    format!("{offset} {}", u64::MAX / 2)
                } else {
                    format!("{offset} {len}")
                };
                self.line(&format!("fiemap {} {}", quote(&range), mnt(file)));
                if let Some(name) = save {
                    let _ = writeln!(
                        self.out,
                        "case $GOT in extents*) cp \"$W/ext\" \"$W/fiemap.{}\" ;; esac",
                        fiemap_name(name)
                    );
                }
            }
            Op::Evict => {
                self.line("# The agent closes every handle and mapping, syncs and drops caches.");
                self.stop_session();
                self.line("run xfs_io -r -c syncfs \"$MNT\"");
                self.line(
                    "[ \"$GOT\" = success ] && { echo 2 >/proc/sys/vm/drop_caches || GOT='error EIO'; }",
                );
            }
            Op::Remount { read_only } => {
                self.stop_session();
                let ro = if *read_only { "-r " } else { "" };
                self.line("run umount \"$MNT\"");
                self.line(&format!("if [ \"$GOT\" = success ]; then MOUNTED=0; run mount {ro}-t \"$FS\" -o \"$MOUNT_OPTS\" \"$DEV\" \"$MNT\"; [ \"$GOT\" = success ] && MOUNTED=1; fi"));
            }
            Op::Mkswap { file } => self.line(&format!("run mkswap {}", mnt(file))),
            Op::Swapon { file } => {
                self.line(&format!("run swapon {}", mnt(file)));
                let _ = writeln!(
                    self.out,
                    "[ \"$GOT\" = success ] && SWAPPED=\"$SWAPPED $MNT/{file}\""
                );
            }
            Op::Swapoff { file } => {
                self.line(&format!("run swapoff {}", mnt(file)));
                let _ = writeln!(
                    self.out,
                    "[ \"$GOT\" = success ] && SWAPPED=$(echo \"$SWAPPED\" | sed \"s| $MNT/{file}||\")"
                );
            }
            Op::Freeze => {
                self.line("run xfs_io -x -r -c freeze \"$MNT\"");
                self.line("[ \"$GOT\" = success ] && FROZEN=1");
            }
            Op::Thaw => {
                self.line("run xfs_io -x -r -c thaw \"$MNT\"");
                self.line("[ \"$GOT\" = success ] && FROZEN=0");
            }
            Op::RaceToggleWrite { file, rounds } => self.race_toggle_write(file, *rounds),
            Op::RaceStoreClone { map, file, rounds } => match self.map_slot(map).cloned() {
                Some(m) => self.race_store_clone(&m, file, *rounds),
                None => self.no_map(map),
            },
            Op::Sleep { millis } => {
                self.line(&format!("run sleep {}.{:03}", millis / 1000, millis % 1000))
            }
            Op::Exec { file, args } => {
                let words: Vec<String> = args.iter().map(|a| quote(a)).collect();
                let _ = writeln!(
                    self.out,
                    "printf '  $ (cd \"$MNT\" && %s)\\n' {}\n\
                     (cd \"$MNT\" && {} {}) >\"$W/o\" 2>&1 </dev/null\n\
                     RC=$?\n\
                     if [ $RC -gt 128 ]; then GOT=\"killed by $(signal_name $((RC - 128)))\"; \
                     else GOT=\"exit $RC: $(head -c 300 \"$W/o\" | tr '\\n' ' ')\"; fi",
                    quote(&format!("./{file} {}", words.join(" "))),
                    quote(&format!("./{file}")),
                    words.join(" ")
                );
            }
            Op::Shell { command, .. } => {
                let _ = writeln!(
                    self.out,
                    "printf '  $ (cd \"$MNT\" && /bin/sh -c %s)\\n' {}\n\
                     (cd \"$MNT\" && /bin/sh -c {}) >\"$W/o\" 2>&1 </dev/null\n\
                     RC=$?\n\
                     GOT=\"exit $RC: $(head -c 300 \"$W/o\" | tr '\\n' ' ')\"",
                    quote(&quote(command)),
                    quote(command)
                );
            }
        }
        if !self.checked {
            self.verdict_line(&step.expect);
        }
    }

    /// A load or store expected to die of a signal kills the session's xfs_io with it; the
    /// steps after it still need the handles and mappings, so a new session opens them again.
    fn respawn_after_signal(&mut self, expect: &Expect) {
        if !matches!(expect.outcome, Outcome::Signal(_)) {
            return;
        }
        self.verdict_line(expect);
        self.line("s_respawn");
        let mut cmds = Vec::new();
        for (_, path) in &self.session.files {
            cmds.push(format!("open $MNT/{path}"));
        }
        for m in &self.session.maps {
            let holder = Holder::Map(m.name.clone());
            if let Some(i) = self.session.files.iter().position(|(h, _)| *h == holder) {
                cmds.push(format!("file {i}"));
                cmds.push(format!("mmap {} {} {}", mmap_flags(m.kind), m.offset, m.len));
            }
        }
        let words: Vec<String> = cmds.iter().map(|c| format!("\"{c}\"")).collect();
        self.line(&format!("s_do {}", words.join(" ")));
        self.line("[ \"$GOT\" = success ] || finish_error \"could not map the files again: $GOT\"");
    }

    fn no_map(&mut self, map: &str) {
        self.line(&format!("GOT='error DAXTEST-ERROR: no mapping {}'", map.replace('\'', "")));
    }

    /// One thread toggles FS_XFLAG_DAX while another writes record i (the little-endian u64
    /// i + 1, repeated over 4 KiB) at i * 4 KiB; afterwards every record must read back.
    fn race_toggle_write(&mut self, file: &str, rounds: u64) {
        let _ = writeln!(
            self.out,
            r#"# The agent runs two threads with seeded jitter; here two shell loops run side by
# side (one xfs_io or dd per iteration), so the interleaving differs: a PASS here does not
# clear the kernel, a FAIL is a real finding.
f={path}
rounds={rounds}
: >"$W/toggle.err"
(
	i=0
	while [ $i -lt $rounds ]; do
		if [ $((i % 2)) -eq 0 ]; then s=+x; else s=-x; fi
		xfs_io -r -c "chattr $s" "$f" >"$W/t.o" 2>&1
		e=$(errno_in "$W/t.o") && echo "toggle $i: $e" >>"$W/toggle.err"
		i=$((i + 1))
	done
) &
toggler=$!
record() {{
	v=$(($1 + 1))
	printf "\\$(printf %o $((v & 255)))\\$(printf %o $(((v >> 8) & 255)))\\$(printf %o $(((v >> 16) & 255)))\\0\\0\\0\\0\\0" >"$W/rec"
	for _ in 1 2 3 4 5 6 7 8 9; do cat "$W/rec" "$W/rec" >"$W/rec2"; mv "$W/rec2" "$W/rec"; done
}}
problems=0
i=0
while [ $i -lt $rounds ]; do
	record $i
	dd if="$W/rec" of="$f" bs=4096 seek=$i conv=notrunc 2>"$W/dd.err" || {{ say "  write $i: $(cat "$W/dd.err")"; problems=$((problems + 1)); }}
	i=$((i + 1))
done
wait $toggler
if [ -s "$W/toggle.err" ]; then sed 's/^/  /' "$W/toggle.err"; problems=$((problems + $(wc -l <"$W/toggle.err"))); fi
i=0
while [ $i -lt $rounds ]; do
	record $i
	dd if="$f" bs=4096 skip=$i count=1 2>/dev/null | cmp -s - "$W/rec" || {{ say "  record $i at $((i * 4096)) does not read back"; problems=$((problems + 1)); }}
	i=$((i + 1))
done
if [ $problems -eq 0 ]; then GOT=success; else GOT="exit 1: $rounds rounds, $problems problems"; fi"#,
            path = mnt(file),
        );
    }

    /// Stores through the session's mapping (every byte of pass p is p) while the shell clones
    /// the file `rounds` times; then the source must hold the last pass and every clone, per
    /// 512-byte slot, 0 or a pass no older than the previous clone's.
    fn race_store_clone(&mut self, m: &MapSlot, file: &str, rounds: u64) {
        let sel = self.select_map(&m.name).expect("mapped");
        let _ = writeln!(
            self.out,
            r#"# The agent stores (slot << 32 | pass) into 8-byte slots from one thread while another
# clones; xfs_io can only store one byte value over a range, so here pass p stores the byte p
# (p <= 250) over the whole mapping, one mwrite per pass, while this shell clones. The
# interleaving is coarser than the agent's: a PASS here does not clear the kernel.
s_do {sel} >/dev/null
f={path}
rounds={rounds}
rm -f "$W/cloning-done"
(
	pass=0
	after=0
	while [ $after -lt 2 ] && [ $pass -lt 250 ]; do
		pass=$((pass + 1))
		printf 'mwrite -S %d {off} {len}\n' $pass >&4 || break
		echo $pass >"$W/last-pass"
		[ -e "$W/cloning-done" ] && after=$((after + 1))
		sleep 0.01
	done
) &
writer=$!
problems=0
r=0
while [ $r -lt $rounds ]; do
	xfs_io -f -t -c "reflink $f" "$f.clone$r" >"$W/c.o" 2>&1
	e=$(errno_in "$W/c.o") && {{ say "  clone $r: $e"; problems=$((problems + 1)); }}
	r=$((r + 1))
done
touch "$W/cloning-done"
wait $writer
s_do "msync -s"
if [ "$GOT" = success ]; then
	last=$(cat "$W/last-pass")
	slots() {{ od -A n -v -t u1 -j {off} -N {len} "$1" | awk 'NR % 32 == 1 {{ print $1 }}'; }}
	bad=$(slots "$f" | awk -v l="$last" '$1 != l' | wc -l)
	[ "$bad" -eq 0 ] || {{ say "  source: $bad slots lost the last store ($last)"; problems=$((problems + 1)); }}
	slots "$f" | sed 's/.*/0/' >"$W/prev"
	r=0
	while [ $r -lt $rounds ]; do
		if [ -f "$f.clone$r" ]; then
			slots "$f.clone$r" >"$W/cur"
			bad=$(paste "$W/prev" "$W/cur" | awk -v l="$last" '$2 > l || $2 < $1' | wc -l)
			[ "$bad" -eq 0 ] || {{ say "  clone $r: $bad slots hold a pass never stored or older than the previous clone's"; problems=$((problems + 1)); }}
			cp "$W/cur" "$W/prev"
		fi
		r=$((r + 1))
	done
	if [ $problems -eq 0 ]; then GOT=success; else GOT="exit 1: $rounds rounds, $problems problems"; fi
fi"#,
            sel = quote(&sel),
            path = mnt(file),
            off = m.offset,
            len = m.len,
        );
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// A saved extent map's file name part: only characters that are safe in a file name.
fn fiemap_name(name: &str) -> String {
    crate::names::safe(name, "-")
}

/// The step as one line of JSON, for the comment above its code.
fn describe(op: &Op) -> String {
    serde_json::to_string(op).unwrap_or_default().replace('\n', " ")
}

/// Rust regex syntax that grep -E (POSIX ERE with GNU extensions) lacks.
fn ere(pattern: &str) -> String {
    pattern.replace(r"\d", "[0-9]").replace(r"\s", "[[:space:]]")
}

pub fn generate(input: &Input) -> Script {
    let spec = input.spec;
    let mut g = Gen {
        out: String::new(),
        session: Session::default(),
        unsupported: vec![],
        checked: false,
        saved_before_cut: vec![],
    };
    let (mkfs_force, fs) = match spec.fs {
        Fs::Xfs => ("-f", "xfs"),
        Fs::Ext4 => ("-F", "ext4"),
    };
    let mkfs_args: Vec<String> = spec.mkfs_options.iter().map(|a| quote(a)).collect();
    let _ = write!(
        g.out,
        r#"#!/bin/sh
# Reproducer of the daxtest case {id}
# (generated by `cargo xtask repro` from the resolved case, case.json; seed {seed}).
# Kernel it was generated for: {release}.
#
# Run as root on a machine (or VM) whose $DEV is an fsdax pmem namespace. EVERYTHING ON $DEV
# IS DESTROYED. Needs xfs_io (xfsprogs 6.1 or later), mkfs.{fs}, mount, awk, od, dd, cmp,
# mkfifo, dmesg; busybox is enough. Exit status: 0 PASS, 1 FAIL, 2 some step could not be
# expressed (see the NOT REPRODUCED lines), 3 set-up error, 4 the power is to be cut now (a
# case with a power_cut step: the script says what to do, then PART=2 runs the rest).
#
# Each step prints what daxtest expects and what happened; the script stops at the first step
# that does not meet its expectation, as daxtest's agent does. After the last step it checks
# the kernel log since the start (and the taint) as daxtest does.
DEV=${{DEV:-{device}}}
MNT=${{MNT:-{mount_point}}}
FS={fs}
MKFS_FORCE={mkfs_force}
MKFS_ARGS={mkfs_args}
MOUNT_OPTS={mount_opts}
FSCK={fsck}
PART=${{PART:-1}}
CASE_TAG={tag}
UNSUPPORTED=0
"#,
        id = spec.id,
        seed = spec.seed,
        release = input.kernel_release,
        device = spec.device,
        mount_point = spec.mount_point,
        fsck = u8::from(spec.fsck),
        mkfs_args = quote(&mkfs_args.join(" ")),
        mount_opts = quote(&spec.mount_options),
        tag = quote(&format!("{}.{}", spec.id.replace(['/', ' '], "_"), spec.seed)),
    );
    g.out.push_str(PRELUDE);
    // Patterns for the kernel-log verdict, one per line, as grep -E -f reads them.
    let mut failure: Vec<String> =
        crate::run::kernel_log::FAILURE_PATTERNS.iter().map(|p| ere(p)).collect();
    failure.extend(input.kernel_log.forbidden.iter().map(|p| ere(p)));
    for (name, list) in [
        ("failure", failure),
        ("benign", input.kernel_log.benign.iter().map(|p| ere(p)).collect()),
        ("expected", input.kernel_log.expected.iter().map(|p| ere(p)).collect()),
    ] {
        let _ = writeln!(g.out, "cat >\"$W/{name}.re\" <<'PATTERNS'");
        for p in list {
            g.line(&p);
        }
        g.line("PATTERNS");
    }
    if let Some(x) = input.xfail {
        let _ = writeln!(
            g.out,
            "say {}",
            quote(&format!(
                "NOTE: daxtest expects this case to FAIL on this kernel (known bug: {}, {}); \
                 its status is xfail when it fails and fail when it passes",
                x.reason, x.link
            ))
        );
    }
    // A case that cuts the power runs in parts, one per boot: PART=1 (the default) formats and
    // runs the steps up to the cut, which the user then makes (see power_cut in the prelude);
    // PART=2 in the VM booted after it runs the power_cut step (recover) and what follows.
    let cuts = spec.steps.iter().any(|s| s.op == Op::PowerCut);
    g.line(if cuts { "\nif [ \"$PART\" = 1 ]; then\nsetup" } else { "\nsetup" });
    let mut part = 1;
    for (i, step) in spec.steps.iter().enumerate() {
        if step.op == Op::PowerCut {
            part += 1;
            let _ = writeln!(g.out, "power_cut {i} {part}\nfi\nif [ \"$PART\" = {part} ]; then");
            // Nothing of the killed VM's session survives; neither do the saved extent maps.
            g.session = Session::default();
            let saved = spec.steps[..i].iter().filter_map(|s| match &s.op {
                Op::Fiemap { save: Some(name), .. } => Some(name.clone()),
                _ => None,
            });
            g.saved_before_cut.extend(saved);
        }
        g.step(i + 1, step);
    }
    if cuts {
        g.line("fi");
    }
    g.line("\n[ \"$UNSUPPORTED\" = 0 ] || { teardown; say 'INCOMPLETE: some steps could not be expressed (NOT REPRODUCED above)'; exit 2; }");
    g.line("finish");
    Script { text: g.out, unsupported: g.unsupported }
}

#[cfg(test)]
mod tests;
