//! The kernel-log window of a case: /dev/kmsg opened and positioned at its end before the case,
//! read to its end after, so the case gets exactly the records logged in between.
//!
//! A marker record opens each window, so that `daxtest-agent dump` can find where a case that
//! never returned (a hang) began, from another process.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// The text of the record that opens a case's window (user-space records are not printed on
/// the console with `quiet`).
pub const MARKER: &str = "daxtest: case begins: ";

pub struct Window(File);

impl Window {
    /// Opens the window and logs the marker naming `case`.
    pub fn open(case: &str) -> std::io::Result<Window> {
        let mut f = open_nonblocking()?;
        // SEEK_END on /dev/kmsg skips to the record after the newest one.
        f.seek(SeekFrom::End(0))?;
        // Best effort: without the marker only a hang's dump loses its start.
        let _ = std::fs::write("/dev/kmsg", format!("{MARKER}{case}\n"));
        Ok(Window(f))
    }

    /// Every record since `open` but the marker, as `[seconds.micros] text`.
    pub fn read(mut self) -> Vec<String> {
        read_all(&mut self.0, |text| !text.starts_with(MARKER))
    }
}

/// The records since the last case marker (all of them when there is none), marker excluded.
pub fn since_last_marker() -> std::io::Result<Vec<String>> {
    let mut f = open_nonblocking()?;
    let all = read_all(&mut f, |_| true);
    let start = all.iter().rposition(|l| l.contains(MARKER)).map_or(0, |i| i + 1);
    Ok(all[start..].to_vec())
}

fn open_nonblocking() -> std::io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")
}

fn read_all(f: &mut File, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some((text, line)) = parse(&String::from_utf8_lossy(&buf[..n])) {
                    if keep(&text) {
                        out.push(line);
                    }
                }
            }
            // EPIPE: records were overwritten before we read them; say so and go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                out.push("(kernel log records lost: ring buffer wrapped)".into())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                out.push(format!("(/dev/kmsg: {e})"));
                break;
            }
        }
    }
    out
}

/// `6,339,5140900,-;text\n SUBSYSTEM=...` -> the text and `[    5.140900] text` (dmesg's form).
fn parse(record: &str) -> Option<(String, String)> {
    let (header, rest) = record.split_once(';')?;
    let usec: u64 = header.split(',').nth(2)?.parse().ok()?;
    let text = unescape(rest.lines().next().unwrap_or_default());
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
            line("4,1201,12345678,-;XFS (pmem0): Mounting V5 Filesystem\n SUBSYSTEM=block\n"),
            Some("[   12.345678] XFS (pmem0): Mounting V5 Filesystem".into())
        );
        assert_eq!(line("6,1,5,-;tab\\x09here"), Some("[    0.000005] tab\there".into()));
        assert_eq!(line("garbage"), None);
    }
}
