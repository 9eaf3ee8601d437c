//! `cargo xtask ARGS`: builds xtask and runs it with ARGS. The alias runs this small program
//! quietly (it has no dependencies, so it builds in about a second), and it builds xtask with
//! cargo's own output, of which a warm build leaves nothing: a first build on a fresh clone (some
//! minutes, most of them vendored OpenSSL) shows cargo's lines and progress bar, and a build that
//! finds everything fresh prints nothing, as the alias's `--quiet` used to for both.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

/// What to do with cargo's output so far.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// It may still be the lone `Finished` line of a warm build: wait for more.
    Undecided,
    /// A warm build's `Finished` line, and nothing before it: print nothing.
    Warm,
    /// Anything else (compiling, waiting for a lock, an error): print it all as it comes.
    Show,
}

/// `text` without its ANSI escape sequences (cargo colours its status words on a terminal).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether cargo's stderr so far is a warm build's: its first line is `Finished` (cargo says
/// `Compiling` before it when it builds anything).
fn verdict(so_far: &[u8]) -> Verdict {
    let text = plain(&String::from_utf8_lossy(so_far));
    let start = text.trim_start();
    let word = "Finished";
    let prefix = &start[..start.len().min(word.len())];
    if !word.starts_with(prefix) {
        return Verdict::Show;
    }
    match start.starts_with(word) && text.contains('\n') {
        true => Verdict::Warm,
        false => Verdict::Undecided,
    }
}

fn main() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--package", "xtask", "--bin", "xtask"]).stderr(Stdio::piped());
    // Cargo's stderr is a pipe here: on a terminal, ask for its colours and progress bar anyway.
    let err = std::io::stderr();
    if err.is_terminal() {
        for (k, v) in [("CARGO_TERM_COLOR", "always"), ("CARGO_TERM_PROGRESS_WHEN", "always")] {
            if std::env::var_os(k).is_none() {
                build.env(k, v);
            }
        }
        if std::env::var_os("CARGO_TERM_PROGRESS_WIDTH").is_none() {
            build.env("CARGO_TERM_PROGRESS_WIDTH", columns().to_string());
        }
    }
    let mut child = match build.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daxtest: running cargo build for xtask: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cargo_err = child.stderr.take().expect("piped");
    let (mut held, mut decided) = (Vec::new(), Verdict::Undecided);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match cargo_err.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if decided == Verdict::Undecided {
            held.extend_from_slice(&chunk[..n]);
            decided = verdict(&held);
            if decided == Verdict::Show {
                let _ = err.lock().write_all(&held);
            }
        } else if decided == Verdict::Show {
            let _ = err.lock().write_all(&chunk[..n]);
        }
    }
    if decided == Verdict::Undecided {
        let _ = err.lock().write_all(&held);
    }
    match child.wait() {
        Ok(s) if s.success() => {}
        Ok(s) => return ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("daxtest: waiting for cargo build: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Built into the same directory as this program, by the same profile.
    let xtask = match std::env::current_exe() {
        Ok(me) => me.with_file_name("xtask"),
        Err(e) => {
            eprintln!("daxtest: finding xtask beside the launcher: {e}");
            return ExitCode::FAILURE;
        }
    };
    let e = Command::new(&xtask).args(std::env::args_os().skip(1)).exec();
    eprintln!("daxtest: running {}: {e}", xtask.display());
    ExitCode::FAILURE
}

/// The terminal's width, from `COLUMNS` or `stty size` on the terminal; 80 when neither says
/// (a terminal of no size, as `script` makes, included).
fn columns() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c| c > 0) {
        return c;
    }
    Command::new("stty")
        .arg("size")
        .stdin(std::fs::File::open("/dev/tty").map_or(Stdio::null(), Stdio::from))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).and_then(|c| c.parse().ok()))
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_finished_line_is_a_warm_build() {
        let warm = "    Finished `dev` profile [unoptimized + debuginfo] target(s) in 0.14s\n";
        assert_eq!(verdict(warm.as_bytes()), Verdict::Warm);
        // Coloured, as cargo writes it with CARGO_TERM_COLOR=always.
        let coloured = "\x1b[1m\x1b[92m    Finished\x1b[0m `dev` profile in 0.10s\n";
        assert_eq!(verdict(coloured.as_bytes()), Verdict::Warm);
        // Cut anywhere before its newline, it may still be one.
        for cut in [0, 3, 8, 20, warm.len() - 1] {
            assert_eq!(verdict(&warm.as_bytes()[..cut]), Verdict::Undecided, "cut at {cut}");
        }
        assert_eq!(verdict(&coloured.as_bytes()[..6]), Verdict::Undecided);
    }

    #[test]
    fn anything_else_is_shown_as_soon_as_it_cannot_be_that_line() {
        assert_eq!(verdict(b"   Compiling openssl-src v300"), Verdict::Show);
        assert_eq!(verdict(b"    Blocking waiting for file lock"), Verdict::Show);
        assert_eq!(verdict(b"\x1b[1m\x1b[32m   Compiling\x1b[0m xtask"), Verdict::Show);
        // The progress bar, drawn before any line is complete.
        assert_eq!(verdict(b"    Building [=>   ] 12/150: openssl-sys(build)\r"), Verdict::Show);
        assert_eq!(verdict(b"error: could not compile"), Verdict::Show);
    }
}
