//! The warm runtime's output, tagged with the execution it belongs to.
//!
//! With `NANOFAAS_LOG_TAGS=1` (set by the control plane's providers) the runtime's stdout and
//! stderr are pipes read here, and every line goes to the watchdog's stderr as
//! `NANOFAAS_LOG <o|e> <execution id|-> <text>`; once an invocation's lines are all out,
//! `NANOFAAS_LOG_END <execution id>` follows (only for invocations that wrote something). Without
//! it the runtime writes straight to the watchdog's stderr, as before.
//!
//! Attribution:
//! - a line a runtime's logger tagged `@exec:<id> <text>` belongs to `<id>` when that invocation
//!   is in flight here (the tag is stripped);
//! - with `WARM_CONCURRENCY=1`, every other line written while an invocation is in flight
//!   belongs to it. Exactly: when an invocation starts and when its answer has arrived, the
//!   pipes are read until empty (a non-blocking read, not the reactor's readiness, which could
//!   lag), so what the runtime wrote before answering is attributed before the answer is sent on;
//! - anything else is `-` (the instance's own log).
//!
//! Lines are cut at [`MAX_LINE`] bytes as they are read (the rest is counted, not kept).
//!
//! Cost: what a call reads is read on its own path (the drains above, one non-blocking read per
//! pipe when there is nothing), and the lines it owns go out in one write with its end marker:
//! lines of a call in flight that the pipe task reads are held with the call (up to
//! [`PENDING_MAX`] bytes, then written), so the control plane's reader wakes once per call.
//! Lines of no invocation wait (at most [`COALESCE`], or [`PENDING_MAX`] bytes) to go out with
//! the next write; after writing them, the task that follows each pipe waits [`COALESCE`], so a
//! busy instance's output costs a few writes and wake-ups per [`COALESCE`], not per line. With
//! several invocations at once, untagged lines cannot be anyone's: the start of a call does not
//! read the pipes then.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;

/// Longest line forwarded; the rest of a longer one is dropped and counted in a marker.
pub const MAX_LINE: usize = 16 << 10;
/// The prefix a runtime's logger puts before a line to name its execution.
pub const RUNTIME_TAG: &str = "@exec:";
/// The variable that turns tagging on.
pub const ENV_LOG_TAGS: &str = "NANOFAAS_LOG_TAGS";

/// How long the task following a pipe waits after a read before it looks again (lines that
/// belong to no invocation are forwarded within this).
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);
/// Lines of no invocation held back at most (then written at once).
pub const PENDING_MAX: usize = 32 << 10;

/// Whether the providers asked for tagged output.
pub fn enabled() -> bool {
    std::env::var(ENV_LOG_TAGS).is_ok_and(|v| v == "1")
}

struct Pipe {
    id: u64,
    stream: u8,
    file: std::fs::File,
    buf: Vec<u8>,
    cut: u64,
    eof: bool,
}

struct InFlight {
    id: String,
    wrote: bool,
    /// Its formatted lines not yet written (they go out with its end marker).
    buf: Vec<u8>,
}

#[derive(Default)]
struct State {
    pipes: Vec<Pipe>,
    inflight: Vec<InFlight>,
    next_pipe: u64,
    /// Formatted lines of no invocation, not yet written (see the module docs).
    pending: Vec<u8>,
}

/// Tags and forwards the runtime's output (see the module docs).
pub struct Output {
    state: Mutex<State>,
    /// `WARM_CONCURRENCY=1`: untagged lines belong to the one invocation in flight.
    exclusive: bool,
}

/// Ends an invocation's attribution when dropped.
pub struct Span<'a> {
    out: &'a Output,
    id: String,
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        self.out.end(&self.id);
    }
}

impl Output {
    pub fn new(concurrency: usize) -> Arc<Output> {
        Arc::new(Output {
            state: Mutex::new(State::default()),
            exclusive: concurrency == 1,
        })
    }

    /// Reads a new runtime's stdout and stderr (each in a task of its own, until its end).
    pub fn attach(self: &Arc<Self>, stdout: Option<OwnedFd>, stderr: Option<OwnedFd>) {
        for (stream, fd) in [(b'o', stdout), (b'e', stderr)] {
            let Some(fd) = fd else { continue };
            set_nonblocking(&fd);
            let Ok(dup) = fd.try_clone() else { continue };
            let id = {
                let mut st = self.state.lock().unwrap();
                st.next_pipe += 1;
                let id = st.next_pipe;
                st.pipes.push(Pipe {
                    id,
                    stream,
                    file: std::fs::File::from(fd),
                    buf: Vec::new(),
                    cut: 0,
                    eof: false,
                });
                id
            };
            // SAFETY: the AsyncFd owns the descriptor, so it stays open while registered.
            let Ok(afd) =
                (unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) })
            else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(mut guard) = afd.readable().await else {
                        break;
                    };
                    guard.clear_ready();
                    drop(guard);
                    let (open, busy) = me.drain_pipe(id);
                    if !open {
                        break;
                    }
                    if busy {
                        // Lines of no call were written: let more gather before the next
                        // write. Readiness that comes meanwhile is kept: the next wait returns
                        // at once. (Lines of a call in flight wait for its end instead, so a
                        // runtime that prints while it serves costs no timer per call.)
                        tokio::time::sleep(COALESCE).await;
                    }
                }
            });
        }
    }

    /// An invocation starts (holding its slot): lines from now on may be its.
    pub fn begin(&self, id: &str) -> Span<'_> {
        let id = if id.is_empty() || id.bytes().any(|b| !b.is_ascii_graphic()) {
            "-".to_string()
        } else {
            id.to_string()
        };
        let mut st = self.state.lock().unwrap();
        if self.exclusive {
            // What is in the pipes now was written before this call: not its.
            self.drain_all(&mut st, false);
        }
        st.inflight.push(InFlight {
            id: id.clone(),
            wrote: false,
            buf: Vec::new(),
        });
        Span { out: self, id }
    }

    fn end(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(i) = st.inflight.iter().position(|f| f.id == id) else {
            return;
        };
        self.drain_all(&mut st, self.exclusive);
        let f = st.inflight.swap_remove(i);
        let mut owned = f.buf;
        if f.wrote && f.id != "-" {
            owned.extend_from_slice(b"NANOFAAS_LOG_END ");
            owned.extend_from_slice(f.id.as_bytes());
            owned.push(b'\n');
        }
        flush(&mut st.pending, &owned, false);
    }

    /// Reads one pipe until it is empty and writes what waits, except the lines of calls in
    /// flight (held for their end, unless they grew past [`PENDING_MAX`]). Returns whether the
    /// pipe is still open, and whether anything was written (lines of no call, or a call's that
    /// grew too big).
    fn drain_pipe(&self, pipe: u64) -> (bool, bool) {
        let mut st = self.state.lock().unwrap();
        let State {
            pipes,
            inflight,
            pending,
            ..
        } = &mut *st;
        let Some(i) = pipes.iter().position(|p| p.id == pipe) else {
            return (false, false);
        };
        read_pipe(&mut pipes[i], inflight, self.exclusive, false, pending);
        let mut busy = !pending.is_empty();
        let open = !pipes[i].eof;
        if !open {
            pipes.swap_remove(i);
        }
        for f in inflight.iter_mut() {
            if f.buf.len() >= PENDING_MAX {
                busy = true;
                flush(pending, &f.buf, false);
                f.buf.clear();
                if f.buf.capacity() > 2 * PENDING_MAX {
                    f.buf.shrink_to(PENDING_MAX);
                }
            }
        }
        flush(pending, &[], true);
        (open, busy)
    }

    /// Reads every pipe until empty: an invocation's lines into its buffer, the rest held back.
    fn drain_all(&self, st: &mut State, flush_partial: bool) {
        let State {
            pipes,
            inflight,
            pending,
            ..
        } = st;
        for p in pipes.iter_mut() {
            read_pipe(p, inflight, self.exclusive, flush_partial, pending);
        }
        pipes.retain(|p| !p.eof);
    }
}

/// Writes `owned` after what is pending (keeping their order), in one write; with `all` or
/// when enough is pending, the pending lines even when `owned` is empty.
fn flush(pending: &mut Vec<u8>, owned: &[u8], all: bool) {
    if owned.is_empty() && (!all || pending.is_empty()) && pending.len() < PENDING_MAX {
        return;
    }
    if pending.is_empty() {
        write_err(owned);
        return;
    }
    pending.extend_from_slice(owned);
    write_err(pending);
    pending.clear();
    if pending.capacity() > 2 * PENDING_MAX {
        pending.shrink_to(PENDING_MAX);
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Reads what the pipe holds now (non-blocking) and formats the complete lines into their
/// invocation's buffer or `pending`; with `flush_partial`, a last line without its newline too.
fn read_pipe(
    p: &mut Pipe,
    inflight: &mut [InFlight],
    exclusive: bool,
    flush_partial: bool,
    pending: &mut Vec<u8>,
) {
    let mut chunk = [0u8; 8192];
    loop {
        match p.file.read(&mut chunk) {
            Ok(0) => {
                p.eof = true;
                break;
            }
            Ok(n) => {
                let mut data = &chunk[..n];
                while !data.is_empty() {
                    let (part, rest, ended) = match memchr(data) {
                        Some(i) => (&data[..i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    let take = part.len().min(MAX_LINE - p.buf.len());
                    p.buf.extend_from_slice(&part[..take]);
                    p.cut += (part.len() - take) as u64;
                    if ended {
                        emit(p, inflight, exclusive, pending);
                    }
                    data = rest;
                }
                if n < chunk.len() {
                    // A short read: the pipe is empty now (saves the read that would say so).
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if (flush_partial || p.eof) && (!p.buf.is_empty() || p.cut > 0) {
        emit(p, inflight, exclusive, pending);
    }
}

/// Formats the pipe's current line into its invocation's buffer (or `pending`) and clears it.
fn emit(p: &mut Pipe, inflight: &mut [InFlight], exclusive: bool, pending: &mut Vec<u8>) {
    if p.cut == 0 && p.buf.last() == Some(&b'\r') {
        p.buf.pop();
    }
    let line = String::from_utf8_lossy(&p.buf);
    let (tagged, text) = match line
        .strip_prefix(RUNTIME_TAG)
        .and_then(|r| r.split_once(' '))
    {
        Some((id, text)) if inflight.iter().any(|f| f.id == id) => (Some(id), text),
        _ => (None, &*line),
    };
    let owner = match tagged {
        Some(id) => inflight.iter_mut().find(|f| f.id == id),
        None if exclusive && inflight.len() == 1 => inflight.first_mut(),
        None => None,
    };
    match owner {
        Some(f) if f.id != "-" => {
            f.wrote = true;
            format_line(&mut f.buf, p.stream, &f.id, text.as_bytes(), p.cut);
        }
        _ => format_line(pending, p.stream, "-", text.as_bytes(), p.cut),
    }
    p.buf.clear();
    p.cut = 0;
}

/// The output of a command run once per invocation (`STDIO` and `FILE` runtimes, warm): every
/// line is that invocation's, whatever else runs beside it, so it is tagged with its id as it is
/// read, and [`Tagger::end`] says when all of it is out.
pub struct Tagger {
    stream: u8,
    id: Arc<str>,
    buf: Vec<u8>,
    cut: u64,
    wrote: bool,
}

impl Tagger {
    /// A tagger for `stream` (`b'o'` or `b'e'`) of invocation `id`; `None` when `id` cannot be
    /// written on a line (empty, or not visible ASCII).
    pub fn new(stream: u8, id: &str) -> Option<Tagger> {
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic())).then(|| Tagger {
            stream,
            id: id.into(),
            buf: Vec::new(),
            cut: 0,
            wrote: false,
        })
    }

    /// Tags the complete lines of `data` and writes them to stderr (one write).
    pub fn push(&mut self, data: &[u8]) {
        let mut out = Vec::new();
        self.push_into(data, &mut out);
        write_err(&out);
    }

    fn push_into(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            let (part, rest, ended) = match memchr(data) {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            let take = part.len().min(MAX_LINE - self.buf.len());
            self.buf.extend_from_slice(&part[..take]);
            self.cut += (part.len() - take) as u64;
            if ended {
                self.line(out);
            }
            data = rest;
        }
    }

    fn line(&mut self, out: &mut Vec<u8>) {
        if self.cut == 0 && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        format_line(out, self.stream, &self.id, &self.buf, self.cut);
        self.buf.clear();
        self.cut = 0;
        self.wrote = true;
    }

    /// The stream ended: writes a last line without its newline, if any; whether anything was
    /// written for the invocation.
    pub fn finish(&mut self) -> bool {
        if !self.buf.is_empty() || self.cut > 0 {
            let mut out = Vec::new();
            self.line(&mut out);
            write_err(&out);
        }
        self.wrote
    }

    /// `NANOFAAS_LOG_END <id>`: all of the invocation's output is out.
    pub fn end(id: &str) {
        write_err(format!("NANOFAAS_LOG_END {id}\n").as_bytes());
    }
}

/// The first newline in `data`.
fn memchr(data: &[u8]) -> Option<usize> {
    data.iter().position(|b| *b == b'\n')
}

fn write_err(out: &[u8]) {
    if !out.is_empty() {
        let _ = std::io::stderr().lock().write_all(out);
    }
}

/// `NANOFAAS_LOG <stream> <id> <text>[ [... N bytes cut]]\n` (the text made valid UTF-8).
fn format_line(out: &mut Vec<u8>, stream: u8, id: &str, text: &[u8], cut: u64) {
    out.extend_from_slice(b"NANOFAAS_LOG ");
    out.push(stream);
    out.push(b' ');
    out.extend_from_slice(id.as_bytes());
    out.push(b' ');
    match std::str::from_utf8(text) {
        Ok(t) => out.extend_from_slice(t.as_bytes()),
        Err(_) => out.extend_from_slice(String::from_utf8_lossy(text).as_bytes()),
    }
    if cut > 0 {
        let _ = write!(out, " [... {cut} bytes cut]");
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe(stream: u8, fd: OwnedFd) -> Pipe {
        set_nonblocking(&fd);
        Pipe {
            id: 1,
            stream,
            file: std::fs::File::from(fd),
            buf: Vec::new(),
            cut: 0,
            eof: false,
        }
    }

    fn os_pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two new descriptors we then own.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            use std::os::fd::FromRawFd;
            (
                OwnedFd::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    fn lines_of(p: &mut Pipe, inflight: &mut [InFlight], exclusive: bool, flush: bool) -> String {
        let mut pending = Vec::new();
        read_pipe(p, inflight, exclusive, flush, &mut pending);
        let mut owned = Vec::new();
        for f in inflight.iter_mut() {
            owned.append(&mut f.buf);
        }
        owned.extend_from_slice(&pending);
        String::from_utf8(owned).unwrap()
    }

    fn in_flight(id: &str) -> InFlight {
        InFlight {
            id: id.into(),
            wrote: false,
            buf: Vec::new(),
        }
    }

    #[test]
    fn lines_are_attributed() {
        let (r, mut w) = os_pipe();
        let mut p = pipe(b'o', r);
        let mut inflight = vec![in_flight("e1")];
        w.write_all(b"hello\r\n@exec:e1 tagged\n@exec:zz not ours\npartial")
            .unwrap();
        let got = lines_of(&mut p, &mut inflight, true, true);
        assert_eq!(
            got,
            "NANOFAAS_LOG o e1 hello\nNANOFAAS_LOG o e1 tagged\nNANOFAAS_LOG o e1 @exec:zz not ours\nNANOFAAS_LOG o e1 partial\n"
        );
        assert!(inflight[0].wrote);
        // Several in flight: only tagged lines are attributed.
        let mut inflight = vec![in_flight("a"), in_flight("b")];
        w.write_all(b"@exec:b from b\nuntagged\n").unwrap();
        let got = lines_of(&mut p, &mut inflight, false, false);
        assert_eq!(got, "NANOFAAS_LOG o b from b\nNANOFAAS_LOG o - untagged\n");
        assert!(!inflight[0].wrote && inflight[1].wrote);
        // Nothing in flight.
        w.write_all(b"idle\n").unwrap();
        assert_eq!(
            lines_of(&mut p, &mut [], true, false),
            "NANOFAAS_LOG o - idle\n"
        );
    }

    #[test]
    fn long_lines_are_cut_and_reads_do_not_block() {
        let (r, mut w) = os_pipe();
        let mut p = pipe(b'e', r);
        let big = vec![b'x'; MAX_LINE + 10];
        w.write_all(&big).unwrap();
        w.write_all(b"\n").unwrap();
        // read_pipe returns at once on an empty pipe (non-blocking), with the line out.
        let got = lines_of(&mut p, &mut [], true, false);
        assert_eq!(
            got.len(),
            "NANOFAAS_LOG e - ".len() + MAX_LINE + " [... 10 bytes cut]\n".len()
        );
        assert!(
            got.ends_with(" [... 10 bytes cut]\n"),
            "{}",
            &got[got.len() - 40..]
        );
        assert!(p.buf.is_empty() && !p.eof);
        assert_eq!(lines_of(&mut p, &mut [], true, false), "");
        drop(w);
        assert_eq!(lines_of(&mut p, &mut [], true, false), "");
        assert!(p.eof);
    }

    #[test]
    fn a_one_shot_command_output_is_all_its_invocation() {
        assert!(Tagger::new(b'o', "").is_none());
        assert!(Tagger::new(b'o', "a b").is_none());
        let mut t = Tagger::new(b'e', "x1").unwrap();
        let mut out = Vec::new();
        t.push_into(b"one\r\ntw", &mut out);
        t.push_into(b"o\n\xff\n", &mut out);
        let big = vec![b'y'; MAX_LINE + 3];
        t.push_into(&big, &mut out);
        t.push_into(b"\n", &mut out);
        let got = String::from_utf8(out).unwrap();
        let want = format!(
            "NANOFAAS_LOG e x1 one\nNANOFAAS_LOG e x1 two\nNANOFAAS_LOG e x1 \u{fffd}\nNANOFAAS_LOG e x1 {} [... 3 bytes cut]\n",
            "y".repeat(MAX_LINE)
        );
        assert_eq!(got, want);
        assert!(t.wrote);
        let mut quiet = Tagger::new(b'o', "x2").unwrap();
        assert!(!quiet.finish());
    }

    #[test]
    fn lines_of_no_invocation_wait_for_the_next_write() {
        let mut pending = b"NANOFAAS_LOG o - idle\n".to_vec();
        // Nothing owned and not asked for all: held back.
        flush(&mut pending, b"", false);
        assert!(!pending.is_empty());
        // Written (after what waits) with an invocation's lines...
        flush(
            &mut pending,
            b"NANOFAAS_LOG o e1 x\nNANOFAAS_LOG_END e1\n",
            false,
        );
        assert!(pending.is_empty());
        // ...or when too much waits.
        let mut big = vec![b'z'; PENDING_MAX];
        flush(&mut big, b"", false);
        assert!(big.is_empty());
    }

    #[test]
    fn a_calls_lines_read_by_the_pipe_task_wait_for_its_end() {
        let (r, mut w) = os_pipe();
        let out = Output::new(1);
        out.state.lock().unwrap().pipes.push(pipe(b'o', r));
        let span = out.begin("e1");
        w.write_all(b"one\ntwo\n").unwrap();
        // Nothing written: no reason for the pipe task to wait before it looks again.
        assert_eq!(out.drain_pipe(1), (true, false));
        {
            let st = out.state.lock().unwrap();
            // Held with the call, not written: one write at its end, with the end marker.
            assert_eq!(
                String::from_utf8_lossy(&st.inflight[0].buf),
                "NANOFAAS_LOG o e1 one\nNANOFAAS_LOG o e1 two\n"
            );
            assert!(st.pending.is_empty());
        }
        // A call that writes much is not held without bound.
        let line = vec![b'x'; 1000];
        for _ in 0..(PENDING_MAX / 1000 + 1) {
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        assert_eq!(out.drain_pipe(1), (true, true));
        assert!(out.state.lock().unwrap().inflight[0].buf.is_empty());
        drop(span);
        assert!(out.state.lock().unwrap().inflight.is_empty());
        // Lines of no call are written too, and the pipe task then lets more gather.
        w.write_all(b"idle\n").unwrap();
        assert_eq!(out.drain_pipe(1), (true, true));
        drop(w);
        assert_eq!(out.drain_pipe(1), (false, false));
    }
}
