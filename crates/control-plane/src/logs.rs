//! What functions print: kept per execution, per function (the recent lines of its instances),
//! and streamed live to followers.
//!
//! Lines reach this module from the providers, which read each instance's output (the
//! watchdog's stderr) and hand every line to [`Logs::instance_line`]. The watchdog tags the
//! lines its runtime writes (see the watchdog's `warm::output`):
//!
//! - `NANOFAAS_LOG <o|e> <execution id|-> <text>`: a line the runtime wrote on stdout (`o`) or
//!   stderr (`e`), attributed to the execution it served. An instance serving one call at a time
//!   attributes every line written between the start and the end of the call; one serving several
//!   at once attributes only the lines its runtime's logger tagged (`@exec:<id> text`, see
//!   docs/logs.md), the rest are `-`.
//! - `NANOFAAS_LOG_END <execution id>`: nothing more will come for that execution from this
//!   instance (written before the watchdog answers the call, once it has read the runtime's
//!   output up to then); the execution's logs are complete.
//! - anything else: the watchdog's own line, kept in the instance's log only.
//!
//! An execution id named by an instance is trusted only when that execution is one of the
//! instance's function (an instance cannot write into another function's executions).
//!
//! Bounds (documented in docs/logs.md): per execution [`MAX_EXEC_BYTES`] of text and
//! [`MAX_EXEC_LINES`] lines, then a marker line and `truncated: true`; in all, the logs of at
//! most [`MAX_TOTAL_BYTES`] (oldest finished executions' logs go first); per function, the last
//! [`RECENT_LINES`] lines (at most [`RECENT_BYTES`]). Async executions' logs are journaled with
//! their record and come back after a restart.
//!
//! This module does not read processes or sockets and does not dispatch anything.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Text kept per execution (the sum of its lines' lengths).
pub const MAX_EXEC_BYTES: usize = 64 << 10;
/// Lines kept per execution.
pub const MAX_EXEC_LINES: usize = 1000;
/// Text of all executions' logs kept in memory.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;
/// Recent lines kept per function for `GET /v1/functions/{name}/logs`.
pub const RECENT_LINES: usize = 500;
/// ...holding at most this much text.
pub const RECENT_BYTES: usize = 256 << 10;
/// One-shot instances remembered at once (their lines are their execution's).
const MAX_JOBS: usize = 4096;
/// Lines a follower may fall behind before it is told some were skipped.
pub const FOLLOW_BUFFER: usize = 1024;
/// How long `GET /v1/executions/{id}/logs` waits for the logs of a finished execution whose
/// instance has not yet said "no more lines".
pub const SEAL_WAIT: Duration = Duration::from_secs(1);
/// How long [`Logs::execution`] waits for an execution's first line once the stream of an
/// instance that may have written it opened.
pub const LATE_GRACE: Duration = Duration::from_millis(200);
/// How long after its end an execution still takes its first lines, until its instance's end
/// marker: a provider that reads output through an API (the kubernetes provider follows
/// `pods/log`) may hand them over after the call has answered.
pub const LATE_LINES_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn code(self) -> &'static str {
        match self {
            Stream::Stdout => "o",
            Stream::Stderr => "e",
        }
    }
}

/// One line, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ts_ms: u64,
    pub stream: Stream,
    /// Shared with the function's recent lines (one allocation per line).
    pub text: Arc<str>,
}

/// One line, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineView {
    pub ts: String,
    pub stream: Stream,
    pub text: String,
}

impl Line {
    pub fn view(&self) -> LineView {
        LineView {
            ts: rfc3339_ms(self.ts_ms),
            stream: self.stream,
            text: self.text.to_string(),
        }
    }
}

/// `GET /v1/executions/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionLogs {
    pub execution_id: String,
    pub truncated: bool,
    pub lines: Vec<LineView>,
}

/// A line of a function's instances (`GET /v1/functions/{name}/logs`, and each event of
/// `?follow=true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionLine {
    pub ts: String,
    pub stream: Stream,
    pub text: String,
    pub execution_id: Option<String>,
    pub instance_id: String,
}

/// `GET /v1/functions/{name}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionLogs {
    pub function: String,
    pub lines: Vec<FunctionLine>,
}

#[derive(Debug, Clone)]
struct Event {
    ts_ms: u64,
    stream: Stream,
    text: Arc<str>,
    execution: Option<Arc<str>>,
    instance: Arc<str>,
}

impl Event {
    fn view(&self) -> FunctionLine {
        FunctionLine {
            ts: rfc3339_ms(self.ts_ms),
            stream: self.stream,
            text: self.text.to_string(),
            execution_id: self.execution.as_ref().map(|e| e.to_string()),
            instance_id: self.instance.to_string(),
        }
    }
}

/// The logs of one execution.
#[derive(Debug, Default)]
struct ExecBuf {
    /// Its id, shared by the events that name it.
    id: Arc<str>,
    function: Arc<str>,
    lines: Vec<Line>,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// The instance said it is done (or it ended, or the logs came from the journal).
    sealed: bool,
    /// Journal the logs when sealed.
    journal: bool,
}

impl ExecBuf {
    fn push(&mut self, line: Line) {
        if self.lines.len() >= MAX_EXEC_LINES || self.bytes + line.text.len() > MAX_EXEC_BYTES {
            self.dropped_lines += 1;
            self.dropped_bytes += line.text.len() as u64;
            return;
        }
        self.bytes += line.text.len();
        self.lines.push(line);
    }

    fn truncated(&self) -> bool {
        self.dropped_lines > 0
    }

    fn view(&self, id: &str) -> ExecutionLogs {
        let mut lines: Vec<LineView> = self.lines.iter().map(Line::view).collect();
        if self.truncated() {
            lines.push(LineView {
                ts: lines.last().map(|l| l.ts.clone()).unwrap_or_default(),
                stream: Stream::Stderr,
                text: truncation_marker(self.dropped_lines, self.dropped_bytes),
            });
        }
        ExecutionLogs {
            execution_id: id.to_string(),
            truncated: self.truncated(),
            lines,
        }
    }
}

/// The line that ends truncated logs.
pub fn truncation_marker(lines: u64, bytes: u64) -> String {
    format!(
        "[... logs truncated: {lines} more lines ({bytes} bytes) not kept; the limit is {MAX_EXEC_LINES} lines or {} KiB per execution]",
        MAX_EXEC_BYTES >> 10
    )
}

#[derive(Default)]
struct FnLog {
    recent: VecDeque<Event>,
    bytes: usize,
    tx: Option<broadcast::Sender<Event>>,
}

#[derive(Default)]
struct Inner {
    execs: HashMap<Box<str>, ExecBuf>,
    /// Executions with logs, oldest first (for the total cap).
    order: VecDeque<Box<str>>,
    total_bytes: usize,
    /// Unsealed executions and the instance writing them.
    open: HashMap<Box<str>, Arc<str>>,
    /// One-shot (JOB) instances and the execution each runs: all their lines are its.
    jobs: HashMap<Box<str>, Box<str>>,
    functions: HashMap<Arc<str>, FnLog>,
    /// Per function, instances whose output stream is not open yet (see
    /// [`Logs::stream_pending`]): what they print now reaches the hub later.
    pending_streams: HashMap<Arc<str>, usize>,
    closed: bool,
}

/// What the logs need to know of an execution: its function, whether its record is journaled
/// (async), and when it finished (ms since the epoch; `None` while it runs). Answered by the
/// platform.
pub trait Lookup: Send + Sync {
    fn execution(&self, id: &str) -> Option<(Arc<str>, bool, Option<u64>)>;
    /// Journals the logs of an async execution (`json`: see [`Logs::journal_json`]).
    fn journal_logs(&self, id: &str, json: Vec<u8>);
}

/// The logs hub: one per control plane, shared by the providers and the API.
#[derive(Default)]
pub struct Logs {
    inner: Mutex<Inner>,
    sealed: Notify,
    lookup: OnceLock<Weak<dyn Lookup>>,
}

/// The variable that asks the watchdog to tag its runtime's lines (see the watchdog's
/// `warm::output`).
pub const ENV_LOG_TAGS: &str = "NANOFAAS_LOG_TAGS";

/// What a line shows in the server's log and an instance's tail: (stream, text) without the
/// watchdog's tag; `None` for the end markers.
pub fn display(raw: &str) -> Option<(&'static str, &str)> {
    if raw.starts_with(TAG_END) {
        return None;
    }
    Some(match parse_tagged(raw) {
        Some((Stream::Stdout, _, text)) => ("stdout", text),
        Some((Stream::Stderr, _, text)) => ("stderr", text),
        None => ("stderr", raw),
    })
}

/// Tags written by the watchdog (see the module docs).
pub const TAG_LINE: &str = "NANOFAAS_LOG ";
pub const TAG_END: &str = "NANOFAAS_LOG_END ";

impl Logs {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connects the hub to what knows the executions (once, at start-up).
    pub fn bind(&self, lookup: Weak<dyn Lookup>) {
        let _ = self.lookup.set(lookup);
    }

    fn lookup(&self) -> Option<Arc<dyn Lookup>> {
        self.lookup.get().and_then(Weak::upgrade)
    }

    /// One line an instance of `function` wrote (see the module docs for its forms). Providers
    /// use an [`InstanceLog`], which names the instance once for all its lines.
    pub fn instance_line(&self, function: &str, instance: &str, raw: &str) {
        self.line_at(
            &function.into(),
            &instance.into(),
            raw,
            crate::executions::now_ms(),
        )
    }

    /// The handle through which a provider files the lines of one instance.
    pub fn instance(self: &Arc<Self>, function: &str, instance: &str) -> InstanceLog {
        InstanceLog {
            logs: self.clone(),
            function: function.into(),
            instance: instance.into(),
        }
    }

    /// Files one line, under one lock on the common path; only the first line of an execution
    /// asks the platform about it (outside the lock).
    fn line_at(&self, function: &Arc<str>, instance: &Arc<str>, raw: &str, ts_ms: u64) {
        if let Some(id) = raw.strip_prefix(TAG_END) {
            self.seal(id.trim());
            return;
        }
        let (stream, tagged, text) = match parse_tagged(raw) {
            Some(t) => t,
            None => (Stream::Stderr, None, raw),
        };
        let mut g = self.inner.lock().unwrap();
        // A one-shot instance's untagged lines are its execution's.
        let job: Option<Box<str>> = match tagged {
            None if !g.jobs.is_empty() => g.jobs.get(&**instance).cloned(),
            _ => None,
        };
        let named = tagged.or(job.as_deref());
        let mut exec = None;
        if let Some(id) = named {
            match g.execs.get(id) {
                // Trust an execution id only when it is one of this function's executions.
                Some(buf) if buf.function != *function => {}
                Some(buf) if !buf.sealed => exec = Some(buf.id.clone()),
                // Unknown, or sealed (only a retry, a new attempt of an unfinished execution,
                // reopens it): ask the platform, without holding the lock.
                _ => {
                    drop(g);
                    exec = self.accept(function, instance, id);
                    g = self.inner.lock().unwrap();
                }
            }
        }
        let inner = &mut *g;
        let text: Arc<str> = text.into();
        if let Some(id) = &exec {
            if let Some(buf) = inner.execs.get_mut(&**id) {
                let before = buf.bytes;
                buf.push(Line {
                    ts_ms,
                    stream,
                    text: text.clone(),
                });
                inner.total_bytes += buf.bytes - before;
            }
        }
        let f = match inner.functions.get_mut(&**function) {
            Some(f) => f,
            None => inner.functions.entry(function.clone()).or_default(),
        };
        let len = text.len();
        while f.recent.len() >= RECENT_LINES
            || (f.bytes + len > RECENT_BYTES && !f.recent.is_empty())
        {
            if let Some(old) = f.recent.pop_front() {
                f.bytes -= old.text.len();
            }
        }
        f.bytes += len;
        let ev = Event {
            ts_ms,
            stream,
            text,
            execution: exec,
            instance: instance.clone(),
        };
        if let Some(tx) = &f.tx {
            if tx.receiver_count() > 0 {
                let _ = tx.send(ev.clone());
            } else {
                f.tx = None;
            }
        }
        f.recent.push_back(ev);
        if inner.total_bytes > MAX_TOTAL_BYTES {
            evict_locked(inner);
        }
    }

    /// The execution `id` as named by an instance of `function`, if it is one of that
    /// function's and has not finished, or finished less than [`LATE_LINES_MS`] ago and its
    /// logs were never sealed; opens (or, for a retry of an unfinished one, reopens) its logs.
    fn accept(&self, function: &Arc<str>, instance: &Arc<str>, id: &str) -> Option<Arc<str>> {
        let (f, journal, finished_at) = self.lookup()?.execution(id)?;
        if f != *function {
            return None;
        }
        let finished = finished_at.is_some();
        if let Some(t) = finished_at {
            if crate::executions::now_ms().saturating_sub(t) > LATE_LINES_MS {
                return None;
            }
        }
        let mut g = self.inner.lock().unwrap();
        let key: Box<str> = id.into();
        let shared = match g.execs.get_mut(id) {
            // After its end marker, a finished execution takes nothing more.
            Some(buf) if finished && buf.sealed => return None,
            Some(buf) => {
                buf.sealed = false;
                buf.id.clone()
            }
            None => {
                let shared: Arc<str> = id.into();
                g.execs.insert(
                    key.clone(),
                    ExecBuf {
                        id: shared.clone(),
                        function: f,
                        journal,
                        ..Default::default()
                    },
                );
                g.order.push_back(key.clone());
                shared
            }
        };
        g.open.insert(key, instance.clone());
        Some(shared)
    }

    /// Ends every follower (the server stops); later ones end at once.
    pub fn close(&self) {
        let mut g = self.inner.lock().unwrap();
        g.closed = true;
        for f in g.functions.values_mut() {
            f.tx = None;
        }
    }

    /// No more lines will come for `id`: its logs are complete (and journaled, if async).
    pub fn seal(&self, id: &str) {
        let journal = {
            let mut g = self.inner.lock().unwrap();
            g.open.remove(id);
            match g.execs.get_mut(id) {
                Some(buf) if !buf.sealed => {
                    buf.sealed = true;
                    buf.journal.then(|| journal_json(buf))
                }
                _ => None,
            }
        };
        self.sealed.notify_waiters();
        if let (Some(json), Some(l)) = (journal, self.lookup()) {
            l.journal_logs(id, json);
        }
    }

    /// A one-shot instance runs execution `id`: every line it writes is that execution's.
    pub fn job_instance(&self, instance: &str, id: &str) {
        let mut g = self.inner.lock().unwrap();
        // An instance that failed to start never ends here: keep the map bounded.
        if g.jobs.len() >= MAX_JOBS {
            if let Some(k) = g.jobs.keys().next().cloned() {
                g.jobs.remove(&k);
            }
        }
        g.jobs.insert(instance.into(), id.into());
    }

    /// The instance is gone: whatever it was writing is complete.
    pub fn instance_ended(&self, instance: &str) {
        let ids: Vec<Box<str>> = {
            let mut g = self.inner.lock().unwrap();
            g.jobs.remove(instance);
            g.open
                .iter()
                .filter(|(_, i)| &***i == instance)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            self.seal(&id);
        }
    }

    fn evict(&self) {
        evict_locked(&mut self.inner.lock().unwrap());
    }

    /// An instance of `function` whose output the hub cannot read yet (a pod whose log stream
    /// is still being opened): until the guard is dropped, a finished execution of `function`
    /// with no lines yet is not answered as empty at once (see [`Logs::execution`]).
    pub fn stream_pending(self: &Arc<Self>, function: &str) -> PendingStream {
        let function: Arc<str> = function.into();
        *self
            .inner
            .lock()
            .unwrap()
            .pending_streams
            .entry(function.clone())
            .or_default() += 1;
        PendingStream {
            logs: self.clone(),
            function,
        }
    }

    /// The logs of execution `id` (empty when it printed nothing). When they are still open and
    /// `finished`, waits up to [`SEAL_WAIT`] for the instance to finish them; when there are none
    /// yet but an instance of its function has its output stream still opening, waits (within
    /// the same bound) for that stream and then [`LATE_GRACE`] for its lines.
    pub async fn execution(&self, id: &str, finished: bool) -> ExecutionLogs {
        let deadline = tokio::time::Instant::now() + SEAL_WAIT;
        let function = finished
            .then(|| self.lookup().and_then(|l| l.execution(id)).map(|e| e.0))
            .flatten();
        let mut grace_until: Option<tokio::time::Instant> = None;
        let mut saw_pending = false;
        loop {
            let wait = self.sealed.notified();
            let mut wake_at = deadline;
            {
                let g = self.inner.lock().unwrap();
                match g.execs.get(id) {
                    None => {
                        let now = tokio::time::Instant::now();
                        let pending = function
                            .as_ref()
                            .and_then(|f| g.pending_streams.get(f))
                            .is_some_and(|n| *n > 0);
                        if pending {
                            saw_pending = true;
                        } else if saw_pending && grace_until.is_none() {
                            // The stream opened: its first lines follow shortly.
                            grace_until = Some((now + LATE_GRACE).min(deadline));
                        }
                        let done = match (pending, grace_until) {
                            (true, _) => now >= deadline,
                            (false, Some(t)) => now >= t,
                            (false, None) => true,
                        };
                        if done {
                            return ExecutionLogs {
                                execution_id: id.to_string(),
                                truncated: false,
                                lines: Vec::new(),
                            };
                        }
                        wake_at = grace_until.unwrap_or(deadline);
                    }
                    Some(b) if b.sealed || !finished => return b.view(id),
                    Some(b) if tokio::time::Instant::now() >= deadline => return b.view(id),
                    Some(_) => {}
                }
            }
            let _ = tokio::time::timeout_at(wake_at, wait).await;
        }
    }

    /// The recent lines of `function`'s instances, oldest first.
    pub fn recent(&self, function: &str) -> FunctionLogs {
        let g = self.inner.lock().unwrap();
        FunctionLogs {
            function: function.to_string(),
            lines: g
                .functions
                .get(function)
                .map(|f| f.recent.iter().map(Event::view).collect())
                .unwrap_or_default(),
        }
    }

    /// A live feed of `function`'s lines from now on, as server-sent events (`data: {json}\n\n`
    /// per line), until `stop` resolves or the reader goes away.
    pub fn follow(&self, function: &str) -> Follower {
        let mut g = self.inner.lock().unwrap();
        if g.closed {
            let (_, rx) = broadcast::channel(1);
            return Follower { rx };
        }
        let f = match g.functions.get_mut(function) {
            Some(f) => f,
            None => g.functions.entry(function.into()).or_default(),
        };
        let rx = match &f.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FOLLOW_BUFFER);
                f.tx = Some(tx);
                rx
            }
        };
        Follower { rx }
    }

    /// Puts back the logs of an execution read from the journal (sealed).
    pub fn restore(&self, id: &str, function: &str, json: &[u8]) -> Result<(), String> {
        let j: JournalLogs =
            serde_json::from_slice(json).map_err(|e| format!("logs of {id}: {e}"))?;
        let mut buf = ExecBuf {
            id: id.into(),
            function: function.into(),
            sealed: true,
            dropped_lines: j.dropped.0,
            dropped_bytes: j.dropped.1,
            ..Default::default()
        };
        for (ts_ms, s, text) in j.lines {
            let stream = if s == "o" {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            buf.bytes += text.len();
            buf.lines.push(Line {
                ts_ms,
                stream,
                text: text.into(),
            });
        }
        let mut g = self.inner.lock().unwrap();
        g.total_bytes += buf.bytes;
        let key: Box<str> = id.into();
        if let Some(old) = g.execs.insert(key.clone(), buf) {
            g.total_bytes -= old.bytes;
        } else {
            g.order.push_back(key);
        }
        drop(g);
        self.evict();
        Ok(())
    }

    /// Bytes of text kept for executions (for tests and metrics).
    pub fn total_bytes(&self) -> usize {
        self.inner.lock().unwrap().total_bytes
    }
}

/// How an execution's logs are journaled: `{"lines": [[ts_ms, "o"|"e", text], ...],
/// "dropped": [lines, bytes]}`.
#[derive(Serialize, Deserialize)]
struct JournalLogs {
    lines: Vec<(u64, String, String)>,
    #[serde(default)]
    dropped: (u64, u64),
}

fn journal_json(buf: &ExecBuf) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        lines: Vec<(u64, &'static str, &'a str)>,
        dropped: (u64, u64),
    }
    serde_json::to_vec(&Out {
        lines: buf
            .lines
            .iter()
            .map(|l| (l.ts_ms, l.stream.code(), &*l.text))
            .collect(),
        dropped: (buf.dropped_lines, buf.dropped_bytes),
    })
    .unwrap_or_default()
}

/// Drops the oldest finished executions' logs while the total is over [`MAX_TOTAL_BYTES`].
fn evict_locked(g: &mut Inner) {
    while g.total_bytes > MAX_TOTAL_BYTES {
        let Some(id) = g.order.pop_front() else { break };
        if g.open.contains_key(&id) {
            // Still being written: keep it, look again later.
            g.order.push_back(id);
            if g.order.len() == g.open.len() {
                break;
            }
            continue;
        }
        if let Some(b) = g.execs.remove(&id) {
            g.total_bytes -= b.bytes;
        }
    }
}

/// See [`Logs::stream_pending`]: dropped once the instance's output stream is open (or will
/// never be).
pub struct PendingStream {
    logs: Arc<Logs>,
    function: Arc<str>,
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        {
            let mut g = self.logs.inner.lock().unwrap();
            if let Some(n) = g.pending_streams.get_mut(&self.function) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    g.pending_streams.remove(&self.function);
                }
            }
        }
        self.logs.sealed.notify_waiters();
    }
}

/// What a provider holds for one instance's output (see [`Logs::instance`]): its function and
/// instance names are made once, not per line.
pub struct InstanceLog {
    logs: Arc<Logs>,
    function: Arc<str>,
    instance: Arc<str>,
}

impl InstanceLog {
    /// One line the instance wrote (see [`Logs::instance_line`]).
    pub fn line(&self, raw: &str) {
        self.logs.line_at(
            &self.function,
            &self.instance,
            raw,
            crate::executions::now_ms(),
        );
    }

    /// The instance's output ended (see [`Logs::instance_ended`]).
    pub fn ended(&self) {
        self.logs.instance_ended(&self.instance);
    }
}

/// `NANOFAAS_LOG <o|e> <id|-> <text>` → (stream, execution, text).
fn parse_tagged(raw: &str) -> Option<(Stream, Option<&str>, &str)> {
    let rest = raw.strip_prefix(TAG_LINE)?;
    let (s, rest) = rest.split_once(' ')?;
    let stream = match s {
        "o" => Stream::Stdout,
        "e" => Stream::Stderr,
        _ => return None,
    };
    let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let exec = (id != "-" && !id.is_empty()).then_some(id);
    Some((stream, exec, text))
}

/// A follower of a function's lines.
pub struct Follower {
    rx: broadcast::Receiver<Event>,
}

impl Follower {
    /// The next event, formatted for server-sent events; `None` when the hub is gone.
    pub async fn next_event(&mut self) -> Option<Bytes> {
        match self.rx.recv().await {
            Ok(ev) => Some(sse_event(&ev.view())),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(sse_comment(&format!(
                "{n} lines skipped: this reader fell behind"
            ))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// `data: {json}\n\n`.
pub fn sse_event<T: Serialize>(v: &T) -> Bytes {
    let mut b = b"data: ".to_vec();
    let _ = serde_json::to_writer(&mut b, v);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

/// `: text\n\n` (a comment: ignored by readers, keeps the connection alive).
pub fn sse_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {}\n\n", text.replace('\n', " ")))
}

/// `2026-01-02T03:04:05.678Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        execs: Mutex<HashMap<String, (Arc<str>, bool)>>,
        finished: Mutex<Vec<String>>,
        finished_now: Mutex<Vec<String>>,
        journaled: Mutex<Vec<(String, Vec<u8>)>>,
    }

    impl Lookup for Fake {
        fn execution(&self, id: &str) -> Option<(Arc<str>, bool, Option<u64>)> {
            let e = self.execs.lock().unwrap().get(id).cloned()?;
            let now = crate::executions::now_ms();
            let done = if self.finished_now.lock().unwrap().iter().any(|f| f == id) {
                Some(now)
            } else if self.finished.lock().unwrap().iter().any(|f| f == id) {
                // Long enough ago for late lines to be refused.
                Some(now - LATE_LINES_MS - 1)
            } else {
                None
            };
            Some((e.0, e.1, done))
        }
        fn journal_logs(&self, id: &str, json: Vec<u8>) {
            self.journaled.lock().unwrap().push((id.to_string(), json));
        }
    }

    fn hub() -> (Arc<Logs>, Arc<Fake>) {
        let fake = Arc::new(Fake {
            execs: Mutex::new(HashMap::from([
                ("e1".to_string(), (Arc::from("f"), true)),
                ("e2".to_string(), (Arc::from("f"), false)),
                ("other".to_string(), (Arc::from("g"), false)),
            ])),
            journaled: Mutex::default(),
            finished: Mutex::default(),
            finished_now: Mutex::default(),
        });
        let logs = Logs::new();
        let weak: Weak<dyn Lookup> = Arc::downgrade(&(fake.clone() as Arc<dyn Lookup>));
        logs.bind(weak);
        (logs, fake)
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_767_323_045_678), "2026-01-02T03:04:05.678Z");
    }

    #[tokio::test]
    async fn lines_go_to_their_execution_and_the_function() {
        let (logs, fake) = hub();
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e1 hello");
        logs.instance_line("f", "i1", "NANOFAAS_LOG e e1 oops");
        logs.instance_line("f", "i1", "NANOFAAS_LOG o - idle line");
        logs.instance_line("f", "i1", "nanofaas-watchdog info: runtime started");
        // Another function's execution is not trusted: the line stays with the instance.
        logs.instance_line("f", "i1", "NANOFAAS_LOG o other spoof");
        logs.instance_line("f", "i1", "NANOFAAS_LOG o unknown x");
        logs.instance_line("f", "i1", "NANOFAAS_LOG_END e1");
        // After the end of a finished execution, nothing more is added to it.
        fake.finished.lock().unwrap().push("e1".into());
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e1 late");
        let e = logs.execution("e1", true).await;
        let texts: Vec<_> = e.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["hello", "oops"]);
        assert_eq!(e.lines[0].stream, Stream::Stdout);
        assert_eq!(e.lines[1].stream, Stream::Stderr);
        assert!(!e.truncated);
        let r = logs.recent("f");
        assert_eq!(r.lines.len(), 7);
        assert_eq!(r.lines[0].execution_id.as_deref(), Some("e1"));
        assert_eq!(r.lines[2].execution_id, None);
        assert_eq!(r.lines[4].execution_id, None);
        assert_eq!(r.lines[4].text, "spoof");
        assert!(logs.recent("g").lines.is_empty());
        // e1 is async: journaled once, when sealed.
        let j = fake.journaled.lock().unwrap().clone();
        assert_eq!(j.len(), 1);
        let back = Logs::new();
        back.restore("e1", "f", &j[0].1).unwrap();
        assert_eq!(back.execution("e1", true).await.lines, e.lines);
    }

    #[tokio::test]
    async fn lines_that_come_after_the_answer_are_kept_until_the_end_marker() {
        let (logs, fake) = hub();
        // e2 has just finished; its instance's lines arrive only now (a log stream read
        // through an API), then its end marker; anything later is refused.
        fake.finished_now.lock().unwrap().push("e2".into());
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 late but its own");
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 second");
        logs.instance_line("f", "i1", "NANOFAAS_LOG_END e2");
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 after the end");
        let e = logs.execution("e2", true).await;
        let texts: Vec<_> = e.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["late but its own", "second"]);
        // Long after its end, an execution takes no first line either.
        fake.finished.lock().unwrap().push("e1".into());
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e1 much too late");
        assert!(logs.execution("e1", true).await.lines.is_empty());
    }

    #[tokio::test]
    async fn a_retry_reopens_the_logs_of_an_unfinished_execution() {
        let (logs, _fake) = hub();
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 first attempt");
        logs.instance_line("f", "i1", "NANOFAAS_LOG_END e2");
        logs.instance_line("f", "i2", "NANOFAAS_LOG o e2 second attempt");
        logs.instance_line("f", "i2", "NANOFAAS_LOG_END e2");
        let e = logs.execution("e2", true).await;
        assert_eq!(e.lines.len(), 2);
    }

    #[tokio::test]
    async fn executions_are_bounded_and_marked() {
        let (logs, _fake) = hub();
        for i in 0..5000 {
            logs.instance_line("f", "i1", &format!("NANOFAAS_LOG o e2 line {i}"));
        }
        let e = logs.execution("e2", false).await;
        assert!(e.truncated);
        assert_eq!(e.lines.len(), MAX_EXEC_LINES + 1);
        assert!(e
            .lines
            .last()
            .unwrap()
            .text
            .contains("logs truncated: 4000 more lines"));
        let big = "x".repeat(10 << 10);
        logs.instance_line("f", "i2", &format!("NANOFAAS_LOG o e1 {big}"));
        for _ in 0..10 {
            logs.instance_line("f", "i2", &format!("NANOFAAS_LOG o e1 {big}"));
        }
        let e = logs.execution("e1", false).await;
        assert!(e.truncated);
        let kept: usize = e.lines[..e.lines.len() - 1]
            .iter()
            .map(|l| l.text.len())
            .sum();
        assert!(kept <= MAX_EXEC_BYTES, "{kept}");
        assert!(logs.recent("f").lines.len() <= RECENT_LINES);
        let recent_bytes: usize = logs.recent("f").lines.iter().map(|l| l.text.len()).sum();
        assert!(recent_bytes <= RECENT_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_execution_waits_for_its_end_marker() {
        let (logs, _fake) = hub();
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 a");
        let l2 = logs.clone();
        let reader = tokio::spawn(async move { l2.execution("e2", true).await });
        tokio::task::yield_now().await;
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 b");
        logs.instance_line("f", "i1", "NANOFAAS_LOG_END e2");
        let e = reader.await.unwrap();
        assert_eq!(e.lines.len(), 2);
        // An instance that ends seals what it was writing; an unsealed one is answered after
        // the wait, as it is.
        logs.instance_line("f", "i3", "NANOFAAS_LOG o e1 c");
        let t = tokio::time::Instant::now();
        assert_eq!(logs.execution("e1", true).await.lines.len(), 1);
        assert_eq!(t.elapsed(), SEAL_WAIT);
        logs.instance_ended("i3");
        let t = tokio::time::Instant::now();
        assert_eq!(logs.execution("e1", true).await.lines.len(), 1);
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_execution_with_no_lines_yet_waits_for_a_stream_still_opening() {
        let (logs, fake) = hub();
        fake.finished_now.lock().unwrap().push("e2".into());
        // Nothing pending: no lines means none, at once.
        let t = tokio::time::Instant::now();
        assert!(logs.execution("e2", true).await.lines.is_empty());
        assert_eq!(t.elapsed(), Duration::ZERO);
        // Another function's pending stream does not hold it up.
        let other = logs.stream_pending("g");
        assert!(logs.execution("e2", true).await.lines.is_empty());
        assert_eq!(t.elapsed(), Duration::ZERO);
        drop(other);
        // An instance of f whose stream opens 300 ms later, then writes e2's lines.
        let pending = logs.stream_pending("f");
        let l2 = logs.clone();
        let reader = tokio::spawn(async move { l2.execution("e2", true).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(pending);
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e2 from the stream");
        logs.instance_line("f", "i1", "NANOFAAS_LOG_END e2");
        let e = reader.await.unwrap();
        assert_eq!(e.lines.len(), 1);
        assert_eq!(t.elapsed(), Duration::from_millis(350));
        // A stream that opens and brings nothing: answered empty after the grace.
        let pending = logs.stream_pending("f");
        let l2 = logs.clone();
        fake.finished_now.lock().unwrap().push("e1".into());
        let reader = tokio::spawn(async move { l2.execution("e1", true).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(pending);
        let t = tokio::time::Instant::now();
        assert!(reader.await.unwrap().lines.is_empty());
        assert_eq!(t.elapsed(), LATE_GRACE);
        // One that never opens: bounded by the seal wait.
        let _stuck = logs.stream_pending("f");
        let t = tokio::time::Instant::now();
        assert!(logs.execution("e1", true).await.lines.is_empty());
        assert_eq!(t.elapsed(), SEAL_WAIT);
    }

    #[tokio::test]
    async fn followers_get_lines_as_events() {
        let (logs, _fake) = hub();
        let mut f = logs.follow("f");
        logs.instance_line("f", "i1", "NANOFAAS_LOG o e1 hi");
        logs.instance_line("g", "i9", "NANOFAAS_LOG o - not mine");
        logs.instance_line("f", "i1", "NANOFAAS_LOG e - there");
        let a = f.next_event().await.unwrap();
        let s = std::str::from_utf8(&a).unwrap();
        assert!(s.starts_with("data: {") && s.ends_with("}\n\n"), "{s}");
        let v: FunctionLine = serde_json::from_str(s[6..].trim()).unwrap();
        assert_eq!(v.text, "hi");
        assert_eq!(v.execution_id.as_deref(), Some("e1"));
        assert_eq!(v.instance_id, "i1");
        let b = f.next_event().await.unwrap();
        assert!(std::str::from_utf8(&b).unwrap().contains("\"there\""));
        // A reader that falls behind is told.
        for i in 0..FOLLOW_BUFFER + 10 {
            logs.instance_line("f", "i1", &format!("NANOFAAS_LOG o - {i}"));
        }
        let c = f.next_event().await.unwrap();
        assert!(std::str::from_utf8(&c)
            .unwrap()
            .starts_with(": 10 lines skipped"));
    }

    #[tokio::test]
    async fn the_total_is_bounded() {
        let (logs, fake) = hub();
        let big = "y".repeat(60 << 10);
        let n = MAX_TOTAL_BYTES / (60 << 10) + 20;
        for i in 0..n {
            let id = format!("x{i}");
            fake.execs
                .lock()
                .unwrap()
                .insert(id.clone(), (Arc::from("f"), false));
            logs.instance_line("f", "i", &format!("NANOFAAS_LOG o {id} {big}"));
            logs.instance_line("f", "i", &format!("NANOFAAS_LOG_END {id}"));
        }
        assert!(logs.total_bytes() <= MAX_TOTAL_BYTES);
        assert!(logs.execution("x0", true).await.lines.is_empty());
        assert_eq!(
            logs.execution(&format!("x{}", n - 1), true)
                .await
                .lines
                .len(),
            1
        );
    }
}
