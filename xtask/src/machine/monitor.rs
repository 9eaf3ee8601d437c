//! QEMU's human monitor (HMP) on a VM's Unix socket: a command line in, the text QEMU printed
//! before its next prompt out. Used for keys to a guest that no longer answers and for the
//! boot snapshot (stop, migrate, cont).

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const PROMPT: &[u8] = b"(qemu) ";

pub struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects, waiting up to `wait` for QEMU to create the socket, and reads the greeting.
    pub fn connect(path: &Path, wait: Duration) -> anyhow::Result<Monitor> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("connecting to QEMU's monitor {}", path.display())
                    })
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut m = Monitor { stream };
        m.until_prompt(Duration::from_secs(5)).context("QEMU's monitor greeting")?;
        Ok(m)
    }

    /// Runs `command` and returns what QEMU answered, its echo and terminal codes removed. A
    /// command is done when the next prompt comes (a command whose socket closes before that
    /// may be lost).
    pub fn run(&mut self, command: &str, timeout: Duration) -> anyhow::Result<String> {
        writeln!(self.stream, "{command}").context("writing to QEMU's monitor")?;
        let raw = self.until_prompt(timeout).with_context(|| format!("`{command}`"))?;
        Ok(plain(&raw, command))
    }

    fn until_prompt(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
        let deadline = Instant::now() + timeout;
        while !seen.ends_with(PROMPT) {
            if Instant::now() > deadline {
                bail!("QEMU's monitor gave no prompt within {timeout:?}");
            }
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("QEMU's monitor closed the connection"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("reading QEMU's monitor"),
            }
        }
        seen.truncate(seen.len() - PROMPT.len());
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }
}

/// The answer without the terminal's escape sequences and the echoed command line: QEMU's
/// readline redraws the line as it is typed.
fn plain(raw: &str, command: &str) -> String {
    // Compiled once: `info migrate` is polled every 10 ms during a restore.
    static ESCAPES: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").expect("a valid pattern")
    });
    let text = ESCAPES.replace_all(raw, "");
    let text = text.replace('\r', "");
    let answer = match text.rfind(command) {
        Some(at) => &text[at + command.len()..],
        None => &text,
    };
    answer.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_what_follows_the_echo() {
        // As QEMU 7.2 answered `info status` (its readline echoes each key with redraws).
        let raw = "i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo status\x1b[K\r\nVM status: paused\r\n";
        assert_eq!(plain(raw, "info status"), "VM status: paused");
        assert_eq!(plain("cont\x1b[K\r\n", "cont"), "");
    }
}
