//! The kernel log, whole: PID 1 copies every /dev/kmsg record to [`LOG_PATH`] as it is logged
//! ([`log_forever`]), noting any records the ring buffer lost before it read them. A case's
//! window is cut out of that file by marker records the case logs at its start and end, so
//! every line from boot to poweroff belongs either to a case window or to the stretch before
//! it (the boot, or the time between two cases), and both reach the host.
//!
//! The file keeps each record as /dev/kmsg gives it (`level,seq,usec,flags;text`, text escaped),
//! one per line; lost records are lines starting with [`LOST`].

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Every kernel record since boot, as PID 1 read them.
pub const LOG_PATH: &str = "/run/daxtest/kmsg.log";
/// How far earlier windows have consumed [`LOG_PATH`] (a byte offset).
const CONSUMED_PATH: &str = "/run/daxtest/kmsg.consumed";
/// The text of the record that opens a case's window (user-space records are not printed on the
/// console with `quiet`).
pub const BEGIN: &str = "daxtest: case begins: ";
/// The text of the record that closes a window.
pub const END: &str = "daxtest: window ends: ";
/// A line of [`LOG_PATH`] that says records are missing.
pub const LOST: &str = "!";

/// PID 1's copier: reads /dev/kmsg from its first record on and appends each record to
/// [`LOG_PATH`]. A jump in the sequence numbers (the ring buffer overwrote records before they
/// were read) is written down as a [`LOST`] line. Returns only if /dev/kmsg cannot be read.
pub fn log_forever() -> std::io::Result<()> {
    let mut kmsg = File::open("/dev/kmsg")?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(LOG_PATH)?;
    let mut buf = vec![0u8; 8192];
    let mut next_seq = 0u64;
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                let first = record.lines().next().unwrap_or_default();
                let seq = first.split(',').nth(1).and_then(|s| s.parse::<u64>().ok());
                let mut out = String::new();
                if let Some(seq) = seq {
                    if seq > next_seq {
                        out.push_str(&format!(
                            "{LOST}{} kernel log records lost (sequence numbers {next_seq} to \
                             {}): the ring buffer wrapped before daxtest read them\n",
                            seq - next_seq,
                            seq - 1
                        ));
                    }
                    next_seq = seq + 1;
                }
                out.push_str(first);
                out.push('\n');
                // One write per record: readers never see half a line for long.
                log.write_all(out.as_bytes())?;
            }
            // EPIPE: the next read returns the oldest record still there; the jump in sequence
            // numbers says how many were lost.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = writeln!(log, "{LOST}/dev/kmsg read failed, no more records: {e}");
                return Err(e);
            }
        }
    }
}

/// The kernel log of a case: what came before its window opened, the window, and what may be
/// missing from either.
#[derive(Debug, Default, PartialEq)]
pub struct Lines {
    /// Since the previous window closed (or the boot).
    pub before: Vec<String>,
    pub window: Vec<String>,
    /// Why records may be missing, when they may.
    pub gap: Option<String>,
}

/// An open window: its begin marker is logged.
pub struct Window {
    begin: String,
}

impl Window {
    /// Logs the marker that opens the window of `case`.
    pub fn open(case: &str) -> Window {
        let begin = format!("{BEGIN}{case} ({})", nonce());
        let _ = std::fs::write("/dev/kmsg", format!("{begin}\n"));
        Window { begin }
    }

    /// Logs the closing marker, waits until PID 1 has copied it, and returns every record since
    /// the previous window closed, split at this window's begin marker.
    pub fn close(self) -> Lines {
        match consume_through_marker() {
            Ok((lines, gap)) => {
                let mut out = split(lines, &self.begin);
                out.gap = gap.or(out.gap);
                out
            }
            Err(e) => Lines { gap: Some(e), ..Lines::default() },
        }
    }
}

/// Everything not yet given to a window, up to now (at the end of a VM's life); the gap, if any.
pub fn rest() -> (Vec<String>, Option<String>) {
    match consume_through_marker() {
        Ok((lines, gap)) => (lines.iter().filter_map(|l| shown(l)).collect(), gap),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Logs an end marker, waits for it in [`LOG_PATH`], and returns the raw lines from the consumed
/// offset up to it (marker excluded), moving the offset past it.
fn consume_through_marker() -> Result<(Vec<String>, Option<String>), String> {
    let end = format!("{END}{}", nonce());
    std::fs::write("/dev/kmsg", format!("{end}\n"))
        .map_err(|e| format!("writing the end marker to /dev/kmsg: {e}"))?;
    let consumed: u64 = std::fs::read_to_string(CONSUMED_PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = read_from(Path::new(LOG_PATH), consumed)
            .map_err(|e| format!("reading {LOG_PATH}: {e} (is PID 1 copying /dev/kmsg?)"))?;
        let mut offset = consumed;
        let mut lines = Vec::new();
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') {
                break; // being written
            }
            offset += line.len() as u64;
            let line = line.trim_end_matches('\n');
            if text_of(line) == Some(end.as_str()) {
                let _ = std::fs::write(CONSUMED_PATH, offset.to_string());
                let gap = lines
                    .iter()
                    .find_map(|l: &String| l.strip_prefix(LOST))
                    .map(|why| why.to_string());
                return Ok((lines, gap));
            }
            lines.push(line.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the kernel log copier did not record the end marker within 5 s ({LOG_PATH})"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Splits raw lines at the begin marker into what came before and the window, as dmesg lines.
fn split(lines: Vec<String>, begin: &str) -> Lines {
    let mut out = Lines::default();
    let at = lines.iter().position(|l| text_of(l) == Some(begin));
    if at.is_none() {
        out.gap = Some(format!("the window's begin marker ({begin:?}) is not in the kernel log"));
    }
    for (i, l) in lines.iter().enumerate() {
        let Some(shown) = shown(l) else { continue };
        match at {
            Some(a) if i > a => out.window.push(shown),
            Some(a) if i == a => {}
            _ => out.before.push(shown),
        }
    }
    out
}

/// A raw line as the host shows it: `[seconds.micros] text`; lost-record lines as they are;
/// markers of other windows' ends are kept (they say where a window closed).
fn shown(line: &str) -> Option<String> {
    if let Some(why) = line.strip_prefix(LOST) {
        return Some(format!("(daxtest: {why})"));
    }
    parse(line).map(|(_, shown)| shown)
}

fn text_of(line: &str) -> Option<&str> {
    line.split_once(';').map(|(_, t)| t)
}

/// Process id and time: markers of different windows never look alike.
fn nonce() -> String {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    format!("{}.{}.{}", std::process::id(), t.tv_sec, t.tv_nsec)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

/// Blocks until the kernel logs a record whose text contains `text`, from now on: for a shell step
/// that must act right after something is logged (a window's end marker, a kernel message).
/// `ready` is created once the wait has begun, for a caller that must not go on before.
pub fn wait_for(text: &str, ready: Option<&Path>) -> std::io::Result<()> {
    let mut kmsg = File::open("/dev/kmsg")?;
    // SEEK_END on /dev/kmsg skips to the record after the newest one: only what comes next.
    kmsg.seek(SeekFrom::End(0))?;
    if let Some(ready) = ready {
        File::create(ready)?;
    }
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                let first = record.lines().next().unwrap_or_default();
                if text_of(first).is_some_and(|t| unescape(t).contains(text)) {
                    return Ok(());
                }
            }
            // Records overwritten before this read: the next one is still to come.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The records since the last begin marker (all of them when there is none), marker excluded:
/// what `daxtest-agent dump` shows of a case that never returned.
pub fn since_last_marker() -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(LOG_PATH)?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| text_of(l).is_some_and(|t| t.starts_with(BEGIN)))
        .map_or(0, |i| i + 1);
    Ok(lines[start..].iter().filter_map(|l| shown(l)).collect())
}

/// `6,339,5140900,-;text` -> the text and `[    5.140900] text` (dmesg's form).
fn parse(record: &str) -> Option<(String, String)> {
    let (header, rest) = record.split_once(';')?;
    let usec: u64 = header.split(',').nth(2)?.parse().ok()?;
    let text = unescape(rest);
    let line = format!("[{:>5}.{:06}] {}", usec / 1_000_000, usec % 1_000_000, text);
    Some((text, line))
}

/// /dev/kmsg escapes non-printable bytes as \xNN.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 2..i + 4).unwrap_or(""), 16) {
            Ok(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_like_dmesg() {
        let line = |r: &str| parse(r).map(|(_, line)| line);
        assert_eq!(
            line("4,1201,12345678,-;XFS (pmem0): Mounting V5 Filesystem"),
            Some("[   12.345678] XFS (pmem0): Mounting V5 Filesystem".into())
        );
        assert_eq!(line("6,1,5,-;tab\\x09here"), Some("[    0.000005] tab\there".into()));
        assert_eq!(line("garbage"), None);
    }

    /// What came before the begin marker is `before` (the boot, or a late message of the
    /// previous case); lost records are shown where they happened and make a gap.
    #[test]
    fn a_window_splits_at_its_marker() {
        let raw = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let begin = "daxtest: case begins: a/b (1.2.3)";
        let lines = raw(&[
            "4,10,1000000,-;WARNING: late from the previous case",
            "12,11,1100000,-;daxtest: case begins: a/b (1.2.3)",
            "6,12,1200000,-;XFS (pmem0): Mounting V5 Filesystem",
        ]);
        let got = split(lines, begin);
        assert_eq!(got.before, ["[    1.000000] WARNING: late from the previous case"]);
        assert_eq!(got.window, ["[    1.200000] XFS (pmem0): Mounting V5 Filesystem"]);
        assert_eq!(got.gap, None);
        let missing = split(raw(&["6,12,1200000,-;x"]), begin);
        assert!(missing.gap.unwrap().contains("begin marker"));
        assert_eq!(shown("!3 records lost").as_deref(), Some("(daxtest: 3 records lost)"));
    }
}
