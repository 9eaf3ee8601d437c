//! The connection to the guest: SSH with the `ssh2` crate, key-only, host key pinned to the one
//! generated for the image. One session serves every command of a VM.

use anyhow::Context;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use ssh2::{Channel, Session};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Connection {
    session: Session,
    tcp: TcpStream,
}

/// The guest's host key differs from the pinned one: never retried, never ignored.
#[derive(Debug)]
pub struct HostKeyMismatch(pub String);

impl std::fmt::Display for HostKeyMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SSH host key mismatch: {}", self.0)
    }
}
impl std::error::Error for HostKeyMismatch {}

/// A command did not finish before its deadline.
#[derive(Debug)]
pub struct Timeout;

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the guest command did not finish before its deadline")
    }
}
impl std::error::Error for Timeout {}

/// A command that answers a line per line of input, started by [`Connection::converse`].
pub struct Conversation {
    /// `None` once abandoned (see [`Connection::ask`]).
    channel: Option<Channel>,
    /// What came on stdout after the last answer.
    stdout: Vec<u8>,
}

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Connection {
    pub fn connect(
        addr: SocketAddr,
        key: &Path,
        host_key: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        let mut session = Session::new()?;
        session.set_tcp_stream(tcp.try_clone()?);
        session.set_timeout(timeout.as_millis() as u32);
        session.handshake().context("SSH handshake")?;
        let (seen, _) = session.host_key().context("the guest sent no host key")?;
        if seen != host_key {
            return Err(HostKeyMismatch(format!(
                "the guest on {addr} is not the VM this run started (or its image was rebuilt)"
            ))
            .into());
        }
        session
            .userauth_pubkey_file("root", None, key, None)
            .context("SSH public key authentication as root")?;
        // Commands run as long as they run; deadlines are the caller's.
        session.set_timeout(0);
        Ok(Connection { session, tcp })
    }

    /// Runs `command` (through the guest's /bin/sh, as ssh does) and collects its output.
    pub fn capture(&self, command: &str) -> anyhow::Result<Output> {
        let mut out = Output::default();
        out.status = self.stream(command, &mut out.stdout, &mut out.stderr)?;
        Ok(out)
    }

    /// Runs `command`, copying its output as it comes; returns its exit status.
    pub fn stream(
        &self,
        command: &str,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> anyhow::Result<i32> {
        self.exec(command, false, stdout, stderr)
    }

    /// [`Connection::stream`], with the local stdin copied to the command's (EOF at its end): a
    /// script can be piped in, `cargo xtask run -- sh -s < script.sh`.
    pub fn stream_with_stdin(
        &self,
        command: &str,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> anyhow::Result<i32> {
        self.exec(command, true, stdout, stderr)
    }

    fn exec(
        &self,
        command: &str,
        with_stdin: bool,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> anyhow::Result<i32> {
        let mut channel = self.session.channel_session()?;
        channel.exec(command).with_context(|| format!("starting {command:?} in the guest"))?;
        self.pump(&mut channel, with_stdin, stdout, stderr)
    }

    /// Runs `command` with `input` on its stdin; fails with [`Timeout`] past `deadline`.
    pub fn capture_until(
        &self,
        command: &str,
        input: &[u8],
        deadline: Instant,
    ) -> anyhow::Result<Output> {
        self.capture_watched(command, input, &mut |_| match Instant::now() > deadline {
            true => Err(Timeout.into()),
            false => Ok(()),
        })
    }

    /// Runs `command` with `input` on its stdin. `watch` sees its stderr so far between reads
    /// (at least every 20 ms); an error from it abandons the command (the channel is dropped, the
    /// guest process is left alone) and is returned.
    pub fn capture_watched(
        &self,
        command: &str,
        input: &[u8],
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Output> {
        let mut channel = self.session.channel_session()?;
        channel.exec(command).with_context(|| format!("starting {command:?} in the guest"))?;
        channel.write_all(input).context("sending the command's input")?;
        channel.send_eof()?;
        let mut out = Output::default();
        self.session.set_blocking(false);
        let pumped = self.pump_watched(&mut channel, &mut out, watch);
        self.session.set_blocking(true);
        if let Err(e) = pumped {
            // The command is abandoned, and so is this VM. Closing the channel would wait for a
            // guest process that cannot exit, so it is leaked; anything after must not wait
            // forever on a guest that may no longer answer.
            std::mem::forget(channel);
            self.session.set_timeout(5000);
            return Err(e);
        }
        out.status = finish(&mut channel)?;
        Ok(out)
    }

    /// Starts `command` as a conversation: it reads one line of input per request and answers
    /// each with one line of output (`daxtest-agent serve`), so a VM's cases share one process
    /// and one channel instead of paying for a new one each.
    pub fn converse(&self, command: &str) -> anyhow::Result<Conversation> {
        let mut channel = self.session.channel_session()?;
        channel.exec(command).with_context(|| format!("starting {command:?} in the guest"))?;
        Ok(Conversation { channel: Some(channel), stdout: Vec::new() })
    }

    /// Sends `request` (one line) and returns the answer line (without its newline) and what
    /// the command wrote on stderr meanwhile. `watch` sees that stderr so far between reads (at
    /// least every 20 ms); an error from it abandons the conversation (its channel is leaked: a
    /// guest process that cannot exit would make closing it wait) and is returned.
    pub fn ask(
        &self,
        c: &mut Conversation,
        request: &[u8],
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Output> {
        let channel = c.channel.as_mut().context("the conversation was abandoned")?;
        channel.write_all(request).context("sending the request")?;
        channel.write_all(b"\n").context("sending the request")?;
        channel.flush()?;
        let mut out = Output::default();
        self.session.set_blocking(false);
        let answered = self.pump_answer(channel, &mut c.stdout, &mut out, watch);
        self.session.set_blocking(true);
        if let Err(e) = answered {
            // As capture_watched does: the guest may no longer answer, so nothing after this
            // may wait for it without a deadline, and the channel is not closed.
            std::mem::forget(c.channel.take());
            self.session.set_timeout(5000);
            return Err(e);
        }
        Ok(out)
    }

    /// Reads until a whole line is on stdout; stderr goes to `out.stderr` as it comes.
    fn pump_answer(
        &self,
        channel: &mut Channel,
        pending: &mut Vec<u8>,
        out: &mut Output,
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                out.stdout = pending.drain(..=i).collect();
                out.stdout.pop();
                return Ok(());
            }
            watch(&out.stderr)?;
            let mut progressed = false;
            for id in [0, 1] {
                match channel.stream(id).read(&mut buf) {
                    Ok(0) if id == 0 => {
                        anyhow::bail!(
                            "the guest command ended without answering: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                    }
                    Ok(0) => {}
                    Ok(n) if id == 0 => {
                        pending.extend_from_slice(&buf[..n]);
                        progressed = true;
                    }
                    Ok(n) => {
                        out.stderr.extend_from_slice(&buf[..n]);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("reading from the guest"),
                }
            }
            if !progressed {
                let mut fds = [PollFd::new(&self.tcp, PollFlags::IN)];
                poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 20_000_000 }))?;
            }
        }
    }

    /// Ends a conversation: its input closes, the command exits, within 5 s.
    pub fn hang_up(&self, mut c: Conversation) -> anyhow::Result<()> {
        let Some(ch) = c.channel.as_mut() else { return Ok(()) };
        self.session.set_timeout(5000);
        let r = ch.send_eof().and_then(|()| ch.wait_eof()).and_then(|()| ch.close());
        let r = r.and_then(|()| ch.wait_close());
        self.session.set_timeout(0);
        Ok(r?)
    }

    /// An interactive login shell on a pty, the local terminal in raw mode meanwhile.
    pub fn shell(&self) -> anyhow::Result<i32> {
        use rustix::termios;
        let stdin = rustix::stdio::stdin();
        let size = termios::tcgetwinsize(rustix::stdio::stdout()).ok();
        let mut channel = self.session.channel_session()?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        channel.request_pty(
            &term,
            None,
            size.map(|s| (u32::from(s.ws_col), u32::from(s.ws_row), 0, 0)),
        )?;
        channel.shell()?;
        let raw = termios::tcgetattr(stdin).ok().map(|saved| {
            crate::cleanup::save_terminal(saved.clone());
            let mut raw = saved;
            raw.make_raw();
            let _ = termios::tcsetattr(stdin, termios::OptionalActions::Now, &raw);
        });
        let result = self.pump(&mut channel, true, &mut std::io::stdout(), &mut std::io::stderr());
        if raw.is_some() {
            crate::cleanup::restore_terminal();
        }
        result
    }

    /// Moves bytes between the channel and the local streams until the command ends.
    fn pump(
        &self,
        ch: &mut Channel,
        with_stdin: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<i32> {
        self.session.set_blocking(false);
        let result = self.pump_nonblocking(ch, with_stdin, out, err, &mut || Ok(()));
        self.session.set_blocking(true);
        result?;
        finish(ch)
    }

    /// [`Connection::pump`] into an [`Output`]; `watch` sees the stderr so far between reads.
    fn pump_watched(
        &self,
        ch: &mut Channel,
        out: &mut Output,
        watch: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        // A cell, so that the watcher can read what the pump writes.
        let stderr = std::cell::RefCell::new(Vec::new());
        let r = self.pump_nonblocking(
            ch,
            false,
            &mut out.stdout,
            &mut CellWriter(&stderr),
            &mut || watch(&stderr.borrow()),
        );
        out.stderr = stderr.into_inner();
        r
    }

    fn pump_nonblocking(
        &self,
        ch: &mut Channel,
        mut stdin_open: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
        check: &mut dyn FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            check()?;
            let mut progressed = false;
            for (id, done) in [(0, &mut out_done), (1, &mut err_done)] {
                if *done {
                    continue;
                }
                match ch.stream(id).read(&mut buf) {
                    Ok(0) => *done = true,
                    Ok(n) => {
                        let sink: &mut dyn Write = if id == 0 { &mut *out } else { &mut *err };
                        sink.write_all(&buf[..n])?;
                        sink.flush()?;
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("reading from the guest"),
                }
            }
            let stdin = rustix::stdio::stdin();
            let mut fds = vec![PollFd::new(&self.tcp, PollFlags::IN)];
            if stdin_open {
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
            if !progressed {
                let timeout = Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
                poll(&mut fds, Some(&timeout))?;
            }
            if stdin_open && !fds[1].revents().is_empty() {
                let n = rustix::io::read(stdin.as_fd(), &mut buf)?;
                if n == 0 {
                    stdin_open = false;
                    retry(|| ch.send_eof())?;
                } else {
                    write_all_nonblocking(ch, &buf[..n])?;
                }
            }
        }
        Ok(())
    }
}

/// Waits for the channel to close; the exit status, 128 + N for a signal as the shell says.
fn finish(ch: &mut Channel) -> anyhow::Result<i32> {
    ch.wait_close()?;
    let status = ch.exit_status()?;
    if let Some(sig) = ch.exit_signal()?.exit_signal {
        eprintln!("daxtest: guest command killed by SIG{sig}");
        return Ok(128 + signal_number(&sig));
    }
    Ok(status)
}

struct CellWriter<'a>(&'a std::cell::RefCell<Vec<u8>>);

impl Write for CellWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn retry(mut f: impl FnMut() -> Result<(), ssh2::Error>) -> anyhow::Result<()> {
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {
                // LIBSSH2_ERROR_EAGAIN
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all_nonblocking(ch: &mut Channel, mut data: &[u8]) -> anyhow::Result<()> {
    while !data.is_empty() {
        match ch.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e).context("writing to the guest"),
        }
    }
    Ok(())
}

/// Signal names as SSH reports them ("KILL") to numbers, for a shell-style 128+N status.
fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 127,
    }
}

/// Whether an error from `connect` must stop the retries.
pub fn is_fatal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HostKeyMismatch>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_statuses_follow_the_shell() {
        assert_eq!(128 + signal_number("KILL"), 137);
        assert_eq!(128 + signal_number("SEGV"), 139);
    }

    #[test]
    fn host_key_mismatch_is_fatal() {
        let e: anyhow::Error = HostKeyMismatch("x".into()).into();
        assert!(is_fatal(&e));
        assert!(!is_fatal(&anyhow::anyhow!("connection refused")));
    }

    #[test]
    fn a_bail_is_not_fatal() {
        let e = (|| -> anyhow::Result<()> { anyhow::bail!("handshake") })().unwrap_err();
        assert!(!is_fatal(&e));
    }
}
