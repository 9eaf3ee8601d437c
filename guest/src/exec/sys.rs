//! The system calls rustix does not wrap (DAX-related ioctls, mappings, swap, fault counters,
//! moving a child into a cgroup). Every unsafe block of the agent is here, each with its SAFETY
//! note.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// FS_XFLAG_DAX (include/uapi/linux/fs.h)
pub const FS_XFLAG_DAX: u32 = 0x0000_8000;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS: declared with `long`, but every filesystem reads and
/// writes an int (fs/ioctl.c, ioctl_getflags).
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
/// FS_JOURNAL_DATA_FL (chattr +j)
pub const FS_JOURNAL_DATA_FL: libc::c_int = 0x0000_4000;
const FICLONE: libc::c_ulong = 0x4004_9409;
const FICLONERANGE: libc::c_ulong = 0x4020_940d;
const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;
const FIFREEZE: libc::c_ulong = 0xc004_5877;
const FITHAW: libc::c_ulong = 0xc004_5878;
/// BLKFLSBUF (include/uapi/linux/fs.h, _IO(0x12, 97)): writes the block device's dirty page
/// cache and drops what is clean (block/ioctl.c, blkdev_flushbuf).
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// mman.h: MAP_SYNC works only with MAP_SHARED_VALIDATE, which rejects unknown flags.
pub const MAP_SHARED_VALIDATE: libc::c_int = 0x03;
pub const MAP_SYNC: libc::c_int = 0x80000;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// A libc return as an io::Result: below zero means failed, with the reason in errno.
fn result(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn get_xflags(fd: BorrowedFd) -> io::Result<u32> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one struct fsxattr (28 bytes, the layout above).
    result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) })?;
    Ok(x.xflags)
}

/// FS_IOC_GETFLAGS: the inode's chattr flags.
fn get_inode_flags(fd: BorrowedFd) -> io::Result<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through a valid pointer.
    result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) })?;
    Ok(flags)
}

/// Reads the chattr flags, sets or clears `flag`, writes them back (FS_IOC_SETFLAGS).
pub fn set_inode_flag(fd: BorrowedFd, flag: libc::c_int, on: bool) -> io::Result<()> {
    let mut flags = get_inode_flags(fd)?;
    if on {
        flags |= flag;
    } else {
        flags &= !flag;
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int from a valid pointer.
    result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &flags) })
}

/// Reads the attributes, sets or clears FS_XFLAG_DAX, writes them back.
pub fn set_dax_flag(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let mut x = FsXattr::default();
    // SAFETY: as in get_xflags.
    result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) })?;
    if on {
        x.xflags |= FS_XFLAG_DAX;
    } else {
        x.xflags &= !FS_XFLAG_DAX;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads one struct fsxattr from a valid pointer.
    result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &x) })
}

pub fn ficlone(dst: BorrowedFd, src: BorrowedFd) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument.
    result(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd() as libc::c_ulong) })
}

pub fn ficlonerange(
    dst: BorrowedFd,
    src: BorrowedFd,
    src_offset: u64,
    len: u64,
    dst_offset: u64,
) -> io::Result<()> {
    let arg = FileCloneRange {
        src_fd: src.as_raw_fd() as i64,
        src_offset,
        src_length: len,
        dest_offset: dst_offset,
    };
    // SAFETY: FICLONERANGE reads one struct file_clone_range.
    result(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONERANGE, &arg) })
}

/// FS_IOC_FIEMAP over [start, start+len), with FIEMAP_FLAG_SYNC; (logical, physical, length,
/// flags) per extent.
pub fn fiemap(fd: BorrowedFd, start: u64, len: u64) -> io::Result<Vec<(u64, u64, u64, u32)>> {
    const HEADER: usize = 32;
    const EXTENT: usize = 56;
    const SLOTS: usize = 256;
    let mut out = Vec::new();
    let end = start.saturating_add(len);
    let mut pos = start;
    loop {
        // u64 words keep the buffer aligned for the struct's u64 fields.
        let mut buf = vec![0u64; (HEADER + SLOTS * EXTENT) / 8];
        buf[0] = pos;
        buf[1] = end - pos;
        let words = buf.as_mut_ptr() as *mut u32;
        // SAFETY: the buffer holds the header and SLOTS extents; fm_flags is u32 at offset 16,
        // fm_extent_count u32 at offset 24.
        unsafe {
            *words.add(4) = FIEMAP_FLAG_SYNC;
            *words.add(6) = SLOTS as u32;
        }
        // SAFETY: FS_IOC_FIEMAP fills at most fm_extent_count extents after the header.
        result(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP, buf.as_mut_ptr()) })?;
        // SAFETY: fm_mapped_extents is the u32 at offset 20.
        let mapped = unsafe { *words.add(5) } as usize;
        let mut last = false;
        for i in 0..mapped.min(SLOTS) {
            let w = (HEADER + i * EXTENT) / 8;
            let flags = (buf[w + 5] & 0xffff_ffff) as u32;
            out.push((buf[w], buf[w + 1], buf[w + 2], flags));
            last = flags & FIEMAP_EXTENT_LAST != 0;
        }
        match out.last() {
            Some(&(l, _, n, _)) if mapped == SLOTS && !last && l + n < end => pos = l + n,
            _ => return Ok(out),
        }
    }
}

pub fn freeze(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let op = if on { FIFREEZE } else { FITHAW };
    // SAFETY: FIFREEZE/FITHAW take an unused int argument.
    result(unsafe { libc::ioctl(fd.as_raw_fd(), op, 0) })
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub fn swapon(path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: a valid NUL-terminated path and no flags.
    result(unsafe { libc::swapon(p.as_ptr(), 0) })
}

pub fn swapoff(path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: a valid NUL-terminated path.
    result(unsafe { libc::swapoff(p.as_ptr()) })
}

pub fn fallocate(fd: BorrowedFd, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    result(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) })
}

/// A live mapping. Not unmapped on drop: steps decide (munmap, evict, teardown).
pub struct Mapping {
    pub addr: usize,
    pub len: usize,
}

pub fn mmap(
    fd: BorrowedFd,
    offset: u64,
    len: u64,
    prot: libc::c_int,
    flags: libc::c_int,
) -> io::Result<Mapping> {
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of a valid fd; nothing aliases it.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len as usize, prot, flags, fd.as_raw_fd(), offset as i64)
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping { addr: p as usize, len: len as usize })
}

/// Private anonymous memory, as a [`Mapping`] (scratch space for the mapping holder).
pub fn anonymous(len: usize) -> io::Result<Mapping> {
    // SAFETY: a fresh anonymous mapping chosen by the kernel; nothing aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping { addr: p as usize, len })
}

pub fn munmap(m: &Mapping) -> io::Result<()> {
    // SAFETY: the range was returned by mmap and is unmapped once (the caller forgets it).
    result(unsafe { libc::munmap(m.addr as *mut libc::c_void, m.len) })
}

pub fn msync(m: &Mapping) -> io::Result<()> {
    // SAFETY: the range is a live mapping.
    result(unsafe { libc::msync(m.addr as *mut libc::c_void, m.len, libc::MS_SYNC) })
}

pub fn mprotect(m: &Mapping, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: the range is a live mapping; changing its protection touches no memory of ours.
    result(unsafe { libc::mprotect(m.addr as *mut libc::c_void, m.len, prot) })
}

/// The size of a PMD entry: where a mapping must start to take PMD faults.
pub const PMD_SIZE: usize = 2 << 20;

/// Moves the mapping to a new PMD-aligned address (MREMAP_MAYMOVE|MREMAP_FIXED), `len` bytes
/// long from then on. The address is found by reserving `len` + 2 MiB of inaccessible anonymous
/// memory and taking its first aligned address: the kernel puts nothing else there, and mremap
/// replaces the part it moves onto; the rest of the reservation is unmapped. On failure the
/// mapping stays where it was (mremap moves nothing when it fails).
pub fn mremap_aligned(m: &Mapping, len: usize) -> io::Result<Mapping> {
    let reserved = len.checked_add(PMD_SIZE).ok_or(io::ErrorKind::InvalidInput)?;
    // SAFETY: a fresh anonymous PROT_NONE mapping chosen by the kernel; nothing aliases it.
    let r = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserved,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = r as usize;
    let to = (start + PMD_SIZE - 1) & !(PMD_SIZE - 1);
    // SAFETY: moves the live mapping onto `to`..`to + len`, inside the reservation made above
    // (which MREMAP_FIXED replaces); the old range is not touched again.
    let p = unsafe {
        libc::mremap(
            m.addr as *mut libc::c_void,
            m.len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to as *mut libc::c_void,
        )
    };
    let moved = if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) };
    // What is left of the reservation before and after the moved mapping (all of it when the
    // move failed).
    let keep = if moved.is_ok() { to..to + len } else { to..to };
    for (a, b) in [(start, keep.start), (keep.end, start + reserved)] {
        if b > a {
            // SAFETY: part of the reservation above, which nothing else uses.
            unsafe { libc::munmap(a as *mut libc::c_void, b - a) };
        }
    }
    moved.map(|()| Mapping { addr: to, len })
}

/// Forks a child that runs `child` with the write end of a pipe to this process and exits with
/// what it returns; returns its pid and the read end. Only for a single-threaded caller (a
/// mapping holder between requests): the child inherits this process's mappings.
pub fn fork_reporting(
    child: impl FnOnce(std::fs::File) -> i32,
) -> io::Result<(libc::pid_t, std::fs::File)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, owned from here on.
    result(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both are fresh descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller is single-threaded, so the child may run ordinary code until it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(r);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child(std::fs::File::from(w))
        }))
        .unwrap_or(101);
        // SAFETY: ends the child without running the holder's exit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    Ok((pid, std::fs::File::from(r)))
}

/// Ok when `len` bytes at `offset` lie inside the mapping: what makes a raw access to it sound.
fn within(m: &Mapping, offset: usize, len: usize) -> io::Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > m.len) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "access outside the mapping"));
    }
    Ok(())
}

/// Stores `len` bytes of `byte` at `offset` of the mapping, in this process: its page-table
/// entries are the ones under test. A SIGBUS kills the process (the mapping holder).
pub fn store(m: &Mapping, offset: usize, len: usize, byte: u8) -> io::Result<()> {
    within(m, offset, len)?;
    // SAFETY: the range lies inside the live mapping (`within` above); other processes may
    // change the same bytes, which is what a shared file mapping is for.
    unsafe { std::ptr::write_bytes((m.addr + offset) as *mut u8, byte, len) };
    Ok(())
}

/// Times the first store to every `stride` bytes of [offset, offset + len) of the mapping, in
/// this process: CLOCK_MONOTONIC read right before and right after a volatile one-byte store of
/// `byte`, sample i into `samples[i]` (which the caller has written already, so that recording a
/// sample takes no fault of its own). Returns the median of 63 empty clock pairs, what each
/// sample includes besides the store. A SIGBUS kills the process, as with [`store`].
pub fn store_profile(
    m: &Mapping,
    offset: usize,
    stride: usize,
    byte: u8,
    samples: &mut [u64],
) -> io::Result<u64> {
    if stride == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "stride 0"));
    }
    within(m, offset, samples.len() * stride)?;
    let mut pairs = [0u64; 63];
    for p in pairs.iter_mut() {
        let t = monotonic_ns();
        *p = monotonic_ns() - t;
    }
    pairs.sort_unstable();
    for (i, sample) in samples.iter_mut().enumerate() {
        let at = (m.addr + offset + i * stride) as *mut u8;
        let t = monotonic_ns();
        // SAFETY: inside the live mapping (`within` above); volatile, so that the store is made
        // here, between the two clock reads, and not merged with or moved past them.
        unsafe { std::ptr::write_volatile(at, byte) };
        *sample = monotonic_ns() - t;
    }
    Ok(pairs[pairs.len() / 2])
}

/// CLOCK_MONOTONIC in nanoseconds.
fn monotonic_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid for clock_gettime to overwrite.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock and pointer: clock_gettime cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// madvise(MADV_HWPOISON) on the page at `offset` of the mapping, in this process: the kernel
/// takes the page behind it as failed (mm/madvise.c madvise_inject_error, then memory_failure
/// with MF_ACTION_REQUIRED) and may send this process a SIGBUS before the call returns.
pub fn hwpoison(m: &Mapping, offset: usize) -> io::Result<()> {
    within(m, offset, PAGE)?;
    // SAFETY: the page lies inside the live mapping (`within` above); madvise does not touch
    // memory this program owns in any other way.
    result(unsafe {
        libc::madvise((m.addr + offset) as *mut libc::c_void, PAGE, libc::MADV_HWPOISON)
    })
}

const PAGE: usize = 4096;

/// Where a caught SIGBUS or SIGSEGV is reported: the holder's output (or a forked child's
/// pipe), and its mapping (for si_addr as an offset). Statics, because a signal handler has
/// nothing else to reach.
static SIGNAL_OUT: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_MAP_START: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_MAP_LEN: AtomicUsize = AtomicUsize::new(0);
/// True while the holder waits for its next request.
static IDLE: AtomicBool = AtomicBool::new(true);

/// Catches SIGBUS and SIGSEGV in this process (a mapping holder): the handler writes the
/// siginfo, as one JSON line of [`daxtest_proto::case::Observed`], to `out`, and the process
/// then dies of the signal as it would have without the handler (so its waiter still sees it).
pub fn report_signals(out: BorrowedFd, m: &Mapping) -> io::Result<()> {
    report_to(out);
    report_mapping(m);
    for sig in [libc::SIGBUS, libc::SIGSEGV] {
        // SAFETY: an all-zero sigaction is valid to fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as usize;
        // SA_RESETHAND: the handler runs once, and the raise in it meets the default action;
        // SA_NODEFER: that raise is not blocked while the handler runs.
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        // SAFETY: installs a handler that only does async-signal-safe things (atomics, write,
        // raise).
        result(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    }
    Ok(())
}

/// Where the handler writes from now on (a forked child's own pipe to the holder).
pub fn report_to(out: BorrowedFd) {
    SIGNAL_OUT.store(out.as_raw_fd(), Ordering::SeqCst);
}

/// The mapping si_addr is reported against (again after mremap moved it).
pub fn report_mapping(m: &Mapping) {
    SIGNAL_MAP_START.store(m.addr, Ordering::SeqCst);
    SIGNAL_MAP_LEN.store(m.len, Ordering::SeqCst);
}

/// Whether the holder is waiting between requests (a SIGBUS then is not from its own access).
pub fn set_idle(idle: bool) {
    IDLE.store(idle, Ordering::SeqCst);
}

/// A fixed buffer that a signal handler can format into without allocating.
struct LineBuf {
    bytes: [u8; 256],
    len: usize,
}

impl LineBuf {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The signal's line: `{"signal":{"name":"SIGBUS","info":{...}}}` as serde writes
/// `Observed::Signal` (the tests below parse it back). SIGSEGV carries no si_addr_lsb: 0.
fn signal_line(sig: i32, code: i32, addr: usize, addr_lsb: i16, idle: bool) -> LineBuf {
    let mut b = LineBuf { bytes: [0; 256], len: 0 };
    let (name, addr_lsb) = match sig {
        libc::SIGSEGV => ("SIGSEGV", 0),
        _ => ("SIGBUS", addr_lsb.max(0)),
    };
    b.push(br#"{"signal":{"name":""#);
    b.push(name.as_bytes());
    b.push(br#"","info":{"code":""#);
    match daxtest_proto::errno::code_name(sig, code) {
        Some(name) => b.push(name.as_bytes()),
        None => b.number(code as u64),
    }
    b.push(br#"","addr_lsb":"#);
    b.number(addr_lsb as u64);
    b.push(br#","offset":"#);
    let start = SIGNAL_MAP_START.load(Ordering::SeqCst);
    match addr.checked_sub(start) {
        Some(o) if o < SIGNAL_MAP_LEN.load(Ordering::SeqCst) => b.number(o as u64),
        _ => b.push(b"null"),
    }
    b.push(br#","idle":"#);
    b.push(if idle { b"true" } else { b"false" });
    b.push(b"}}}\n");
    b
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler. si_addr_lsb is the
    // short after si_addr in the SIGBUS fields (include/uapi/asm-generic/siginfo.h: the union
    // at offset 16 on 64-bit, _addr then _addr_lsb), which libc does not name.
    let (code, addr, lsb) = unsafe {
        let i = &*info;
        (i.si_code, i.si_addr() as usize, *((info as *const u8).add(24) as *const i16))
    };
    let line = signal_line(sig, code, addr, lsb, IDLE.load(Ordering::SeqCst));
    let fd = SIGNAL_OUT.load(Ordering::SeqCst);
    // SAFETY: write and raise are async-signal-safe; the buffer lives on this stack. The
    // handler was reset to the default action (SA_RESETHAND), so the raise ends the process.
    unsafe {
        libc::write(fd, line.bytes.as_ptr() as *const libc::c_void, line.len);
        libc::raise(sig);
    }
}

/// read(2) or write(2) of `path` whose buffer is `len` bytes at `offset` of the mapping, in this
/// process. `direct`: the file is opened O_DIRECT, and for a page-cache file the kernel pins the
/// mapping's pages for the bio (DAX pages, for a mapping of a DAX file); otherwise it copies
/// through the mapping. `write`: from the mapping into the file at `file_offset`; otherwise from
/// the file into the mapping. Loops over short transfers; a file that ends first is an error of
/// its own kind.
pub fn mapped_buffer_io(
    m: &Mapping,
    offset: usize,
    len: usize,
    path: &std::path::Path,
    file_offset: u64,
    write: bool,
    direct: bool,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    within(m, offset, len)?;
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)?;
    let mut done = 0usize;
    while done < len {
        let at = (m.addr + offset + done) as *mut libc::c_void;
        let pos = (file_offset + done as u64) as i64;
        // SAFETY: the buffer lies inside the live mapping (`within` above); the kernel reads
        // or fills it, as the step asks.
        let n = unsafe {
            match write {
                true => libc::pwrite(file.as_raw_fd(), at, len - done, pos),
                false => libc::pread(file.as_raw_fd(), at, len - done, pos),
            }
        };
        match n {
            n if n < 0 => return Err(io::Error::last_os_error()),
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ended")),
            n => done += n as usize,
        }
    }
    Ok(())
}

/// The `len` bytes at `offset` of the mapping, read in place (no copy: the only memory touched
/// is the mapping's), as runs into `out`; true when there were more runs than `out` keeps.
pub fn load_runs(
    m: &Mapping,
    offset: usize,
    len: usize,
    out: &mut Vec<daxtest_proto::case::Run>,
) -> io::Result<bool> {
    within(m, offset, len)?;
    // SAFETY: the range lies inside the live mapping (`within` above) and is only read here.
    let data = unsafe { std::slice::from_raw_parts((m.addr + offset) as *const u8, len) };
    Ok(daxtest_proto::case::runs_into(offset as u64, data, out))
}

/// Page faults the calling thread has taken so far (minor plus major), from getrusage: the
/// thread that does the access, whatever other threads of the process do meanwhile.
pub fn faults() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    (u.ru_minflt + u.ru_majflt) as u64
}

/// Makes `cmd`'s child join the cgroup whose `cgroup.procs` is `procs` before it executes, so
/// that it and everything it forks can be killed as one.
pub fn spawn_into_cgroup(cmd: &mut std::process::Command, procs: &Path) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let path = cpath(procs)?;
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (open, write, close) on a path prepared before the fork: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0": the writing process itself.
            let ok = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) == 1;
            let err = io::Error::last_os_error();
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(err)
            }
        })
    };
    Ok(())
}

/// A process made by [`fork_serving`]: its pid, a pipe to its input and one from its output.
pub struct Forked {
    pub pid: libc::pid_t,
    pub to: std::fs::File,
    pub from: std::fs::File,
}

/// How a forked process ended.
pub enum Ended {
    Exited(i32),
    Signalled(i32),
}

/// Forks without exec (a mapping holder costs about 30 ms less under TCG than a new agent
/// process). The child runs `serve` on the read end of a pipe from the caller and the write end
/// of one to it, with every other descriptor but stderr closed (the case's open handles must not
/// be held by it), and exits with what `serve` returns. Only for a single-threaded caller:
/// the agent between steps.
pub fn fork_serving(serve: impl FnOnce(std::fs::File, std::fs::File) -> i32) -> io::Result<Forked> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let pipe = || -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds, owned from here on.
        result(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: both are fresh descriptors nobody else owns.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    };
    let (req_r, req_w) = pipe()?;
    let (resp_r, resp_w) = pipe()?;
    // SAFETY: the caller is single-threaded, so the child may run ordinary code (allocate,
    // serialise) until it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop((req_w, resp_r));
        // stdin and stdout too: they are the agent's SSH channel, which a holder must not keep open.
        let keep = {
            let mut k = [2, req_r.as_raw_fd() as u32, resp_w.as_raw_fd() as u32];
            k.sort();
            k
        };
        let mut first = 0u32;
        for fd in keep.into_iter().chain([u32::MAX]) {
            if fd > first {
                // SAFETY: closes descriptors this child does not use; none is owned by a live
                // Rust object it will touch again.
                unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
            }
            first = fd.saturating_add(1);
        }
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(std::fs::File::from(req_r), std::fs::File::from(resp_w))
        }))
        .unwrap_or(101);
        // SAFETY: ends the child without running the parent's exit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(Forked { pid, to: std::fs::File::from(req_w), from: std::fs::File::from(resp_r) })
}

/// Waits for a child of this process.
pub fn wait(pid: libc::pid_t) -> io::Result<Ended> {
    let mut status = 0;
    // SAFETY: waits for our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if libc::WIFSIGNALED(status) {
        Ended::Signalled(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    })
}

/// SIGKILL to a child of this process.
pub fn kill(pid: libc::pid_t) {
    // SAFETY: a signal to our own child, which has not been reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Writes out a block device's cached blocks and drops them: the next reads come from the
/// device.
pub fn flush_buffers(dev: &Path) -> io::Result<()> {
    let f = std::fs::File::open(dev)?;
    // SAFETY: an ioctl without argument on an open block device.
    result(unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) })
}

/// Opens a block device with O_EXCL, which fails with EBUSY while it is mounted or claimed:
/// the check that the next case's mkfs will find it free.
pub fn open_exclusive(dev: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(dev).map(drop)
}

/// An 8-byte atomic store into a shared mapping (race_store_clone's writer).
pub fn store_u64(m: &Mapping, offset: usize, value: u64) {
    assert!(offset.is_multiple_of(8) && offset + 8 <= m.len, "slot outside the mapping");
    // SAFETY: aligned, inside the live mapping; AtomicU64 makes concurrent access defined.
    let slot = unsafe { &*((m.addr + offset) as *const std::sync::atomic::AtomicU64) };
    slot.store(value, std::sync::atomic::Ordering::Release);
}

/// Loads a byte of the mapping, then stores it back: two accesses, so a read fault and then a
/// write (copy-on-write, in a private mapping) fault (race_private_cow).
pub fn load_then_store_u8(m: &Mapping, offset: usize) {
    assert!(offset < m.len, "byte outside the mapping");
    // SAFETY: inside the live mapping; AtomicU8 makes the threads' concurrent access defined.
    let byte = unsafe { &*((m.addr + offset) as *const std::sync::atomic::AtomicU8) };
    let v = byte.load(std::sync::atomic::Ordering::Acquire);
    byte.store(v, std::sync::atomic::Ordering::Release);
}

/// MADV_DONTNEED over the whole mapping: its page-table entries go (a private mapping's copies
/// with them), the next access faults again.
pub fn madvise_dontneed(m: &Mapping) -> io::Result<()> {
    // SAFETY: the range is a live mapping; dropping its entries is what the caller wants.
    result(unsafe { libc::madvise(m.addr as *mut libc::c_void, m.len, libc::MADV_DONTNEED) })
}

pub fn signal_name(sig: i32) -> String {
    daxtest_proto::errno::signal_name(sig).map_or_else(|| format!("SIG{sig}"), str::to_string)
}

/// The errno's name, as scenario files write it.
pub fn errno_name(code: i32) -> String {
    daxtest_proto::errno::errno_name(code).map_or_else(|| format!("E{code}"), str::to_string)
}

/// Waits until everything written to the terminal `fd` has been transmitted (tcdrain): on the
/// serial console, until QEMU has it.
pub fn drain(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: tcdrain on a valid descriptor touches no memory of ours.
    result(unsafe { libc::tcdrain(fd.as_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's line is what serde makes of `Observed::Signal`, whatever the fields.
    #[test]
    fn signal_lines_parse_as_observations() {
        use daxtest_proto::case::{Observed, SigInfo};
        SIGNAL_MAP_START.store(0x10000, Ordering::SeqCst);
        SIGNAL_MAP_LEN.store(0x4000, Ordering::SeqCst);
        let parse = |b: LineBuf| -> Observed {
            let text = std::str::from_utf8(&b.bytes[..b.len]).unwrap();
            assert!(text.ends_with('\n'));
            serde_json::from_str(text).unwrap()
        };
        let named = |name: &str, code: &str, addr_lsb, offset, idle| Observed::Signal {
            name: name.into(),
            info: Some(SigInfo { code: code.into(), addr_lsb, offset, idle }),
        };
        let info =
            |code: &str, addr_lsb, offset, idle| named("SIGBUS", code, addr_lsb, offset, idle);
        let bus = libc::SIGBUS;
        assert_eq!(
            parse(signal_line(bus, libc::BUS_MCEERR_AR, 0x11000, 12, false)),
            info("BUS_MCEERR_AR", 12, Some(0x1000), false)
        );
        assert_eq!(
            parse(signal_line(bus, libc::BUS_MCEERR_AO, 0x14000, 21, true)),
            info("BUS_MCEERR_AO", 21, None, true)
        );
        assert_eq!(parse(signal_line(bus, 77, 0, -1, false)), info("77", 0, None, false));
        // SEGV_ACCERR (2) with whatever lies where a SIGBUS has si_addr_lsb: reported as 0.
        assert_eq!(
            parse(signal_line(libc::SIGSEGV, 2, 0x12000, 5, false)),
            named("SIGSEGV", "SEGV_ACCERR", 0, Some(0x2000), false)
        );
        for (name, n) in daxtest_proto::errno::BUS_CODES {
            let libc_value = match *name {
                "BUS_ADRALN" => libc::BUS_ADRALN,
                "BUS_ADRERR" => libc::BUS_ADRERR,
                "BUS_OBJERR" => libc::BUS_OBJERR,
                "BUS_MCEERR_AR" => libc::BUS_MCEERR_AR,
                _ => libc::BUS_MCEERR_AO,
            };
            assert_eq!(*n, libc_value, "{name}");
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::ENOTSUP), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::ETXTBSY), "ETXTBSY");
        assert_eq!(errno_name(4000), "E4000");
    }

    /// Real syscalls on the host's filesystem: stores through a shared mapping reach the file,
    /// loads read them back in place, and the fault counter sees the first touch of a page but
    /// not a second one.
    #[test]
    fn shared_stores_land_and_faults_are_counted() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'a'; 16384]).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let m = mmap(f.as_fd(), 0, 16384, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
            .unwrap();
        let mut runs = Vec::with_capacity(daxtest_proto::case::MAX_RUNS);
        // Warm the code paths: their first run may fault in the test binary's own pages.
        load_runs(&m, 0, 1, &mut runs).unwrap();
        runs.clear();
        let before = faults();
        store(&m, 4096, 4096, b'b').unwrap();
        assert!(faults() > before, "the first store to a page faults");
        let before = faults();
        store(&m, 4096, 4096, b'c').unwrap();
        assert!(load_runs(&m, 4096, 4096, &mut runs).is_ok());
        assert_eq!(faults(), before, "the page is mapped now");
        assert_eq!(runs, [daxtest_proto::case::Run { offset: 4096, len: 4096, byte: b'c' }]);
        assert_eq!(&std::fs::read(&path).unwrap()[4096..8192], &[b'c'; 4096][..]);
        assert!(store(&m, 16380, 8, b'x').is_err(), "past the end of the mapping");
        munmap(&m).unwrap();
    }
}
