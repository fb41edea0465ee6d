//! What survives a restart of the control plane: registered function specs, and the journal of
//! async invocations.
//!
//! Specs are one JSON file each under `{state_dir}/functions/`, replaced atomically (write, then
//! rename). The journal `{state_dir}/journal.jsonl` has one line per accepted async invocation,
//! one per attempt started, and one per finished invocation carrying its result (status, output,
//! error, attempts). At start-up it is read back: accepted-but-unfinished invocations run again
//! (knowing how many attempts had started), finished ones answer with their result until their
//! TTL, and the file is rewritten with only those.
//!
//! One writer thread owns the file: records are handed to it over a channel, written in groups
//! (one `write` per group, one `fsync` per group with `journal_fsync`), and an acceptance is
//! acknowledged only once its group is written, so a 202 survives a crash of the process (and of
//! the machine with `journal_fsync`). The writer knows which records are live and compacts the
//! file while the server runs, whenever it exceeds twice their size plus
//! [`COMPACT_SLACK_BYTES`]; finished records leave it under the execution store's TTL and caps.
//!
//! This module does file I/O only; the platform decides what to do with what it reads.

use bytes::Bytes;
use nanofaas_api::{ErrorBody, ExecutionStatus, FunctionSpec};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Function specs on disk.
pub struct SpecStore {
    dir: PathBuf,
}

impl SpecStore {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let dir = state_dir.join("functions");
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        // Names are validated (letters, digits, . _ -, not starting with a dot): safe file names.
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, spec: &FunctionSpec) -> Result<(), String> {
        let path = self.path(&spec.name);
        let tmp = self.dir.join(format!(".{}.json.tmp", spec.name));
        let body = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        fs::write(&tmp, body).map_err(|e| io_err("cannot write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err("cannot replace", &path, e))
    }

    pub fn remove(&self, name: &str) -> Result<(), String> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path, e)),
        }
    }

    /// Every stored spec, and a message for each file that could not be used.
    pub fn load(&self) -> (Vec<FunctionSpec>, Vec<String>) {
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (specs, vec![io_err("cannot list", &self.dir, e)]),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            })
            .collect();
        paths.sort();
        for p in paths {
            match fs::read(&p) {
                Ok(b) => match FunctionSpec::from_json(&b) {
                    Ok(s) => specs.push(s),
                    Err(e) => problems.push(format!("{}: {e}", p.display())),
                },
                Err(e) => problems.push(io_err("cannot read", &p, e)),
            }
        }
        (specs, problems)
    }
}

/// One journal line as written. Borrowed, so the request body is not copied to write it.
#[derive(Serialize)]
struct LineOut<'a> {
    /// `a`: accepted, `s`: an attempt started, `f`: finished (with its result), `x`: dropped
    /// (accepted, then refused before it ran).
    t: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
    /// `a`: runs before the last compaction; `s`: the attempt's number; `f`: attempts in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cold: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<&'a str>,
    /// `l`: the execution's logs (see `logs.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<&'a RawValue>,
}

impl<'a> LineOut<'a> {
    fn new(t: &'a str, id: &'a str) -> Self {
        Self {
            t,
            id,
            function: None,
            trace: None,
            at: None,
            body: None,
            n: None,
            status: None,
            output: None,
            error: None,
            started: None,
            finished: None,
            cold: None,
            init: None,
            resumed: None,
            start: None,
            logs: None,
        }
    }

    fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// One journal line as read back.
#[derive(Deserialize)]
struct LineIn<'a> {
    t: String,
    id: String,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    at: Option<u64>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    status: Option<ExecutionStatus>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    started: Option<u64>,
    #[serde(default)]
    finished: Option<u64>,
    #[serde(default)]
    cold: Option<bool>,
    #[serde(default)]
    init: Option<u64>,
    #[serde(default)]
    resumed: Option<bool>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default, borrow)]
    logs: Option<&'a RawValue>,
}

/// Only what compaction needs of a line.
#[derive(Deserialize)]
struct LineKey {
    t: String,
    id: String,
}

/// An accepted async invocation that had not finished when the journal was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: String,
    pub function: String,
    pub trace_id: String,
    pub created_at: u64,
    pub body: Bytes,
    /// Attempts that had started before the restart (each one a run that may have happened).
    pub attempts: u32,
}

/// A finished async execution, as journaled: enough to answer `GET /v1/executions/{id}` after
/// a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRecord {
    pub id: String,
    pub function: String,
    pub trace_id: String,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: u64,
    pub status: ExecutionStatus,
    /// The output as JSON text, on success.
    pub output: Option<Bytes>,
    pub error: Option<ErrorBody>,
    pub attempts: u32,
    pub cold_start: bool,
    pub init_ms: Option<u64>,
    pub resumed: bool,
    /// How the last attempt got its instance (`warm`, `cold`, `start_failed`).
    pub start: Option<String>,
}

impl FinishedRecord {
    fn payload_bytes(&self) -> usize {
        self.output.as_ref().map_or(0, |o| o.len())
            + self
                .error
                .as_ref()
                .map_or(0, |e| e.message.len() + e.code.len())
    }

    fn to_line(&self) -> Vec<u8> {
        let output: Option<&RawValue> = self.output.as_ref().map(|o| raw_or_null(o));
        let mut l = LineOut::new("f", &self.id);
        l.function = Some(&self.function);
        l.trace = Some(&self.trace_id);
        l.at = Some(self.created_at);
        l.n = Some(self.attempts);
        l.status = Some(self.status.as_str());
        l.output = output;
        l.error = self.error.as_ref();
        l.started = self.started_at;
        l.finished = Some(self.finished_at);
        l.cold = self.cold_start.then_some(true);
        l.init = self.init_ms;
        l.resumed = self.resumed.then_some(true);
        l.start = self.start.as_deref();
        l.to_line()
    }
}

fn raw_or_null(b: &[u8]) -> &RawValue {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .unwrap_or_else(|| serde_json::from_str("null").unwrap())
}

/// What the journal held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Accepted, not finished: to run again, in the order they were accepted.
    pub pending: Vec<Pending>,
    /// Finished within the TTL and the record caps, oldest first.
    pub finished: Vec<FinishedRecord>,
    /// Logs of those executions: (id, function, logs as journaled).
    pub logs: Vec<(String, String, Vec<u8>)>,
    /// Lines that could not be used.
    pub problems: Vec<String>,
}

/// How the journal is kept.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Flush each group of records to disk before acknowledging it.
    pub fsync: bool,
    /// Finished records are kept this long (wall clock, from their end)...
    pub ttl: std::time::Duration,
    /// ...and at most this many of them...
    pub max_records: usize,
    /// ...holding at most this many output and error bytes in all (the execution store's caps).
    pub max_payload_bytes: usize,
}

impl JournalSettings {
    pub fn new(fsync: bool) -> Self {
        Self {
            fsync,
            ttl: std::time::Duration::from_secs(3600),
            max_records: 100_000,
            max_payload_bytes: 64 << 20,
        }
    }
}

/// The file is rewritten with only its live records once it is larger than twice what they
/// take plus this much.
pub const COMPACT_SLACK_BYTES: u64 = 1 << 20;

enum Effect {
    Accepted,
    Started,
    Finished { at_ms: u64, payload: usize },
    Dropped,
    Logs,
}

enum Op {
    Write {
        id: Box<str>,
        line: Vec<u8>,
        effect: Effect,
        ack: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The journal of async invocations. Records are handed to one writer thread, which writes
/// whatever has queued up in one `write` (group commit), syncs it when `fsync` is set, and only
/// then acknowledges the acceptances waiting for it. The same thread compacts the file while the
/// server runs: it knows which records are live (pending, or finished within the TTL and caps).
pub struct Journal {
    path: PathBuf,
    tx: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Opens the journal, returns what it held (pending and finished invocations), rewrites the
    /// file with only those, and starts its writer thread.
    pub fn open(
        state_dir: &Path,
        settings: JournalSettings,
    ) -> Result<(Journal, Recovered), String> {
        fs::create_dir_all(state_dir).map_err(|e| io_err("cannot create", state_dir, e))?;
        let path = state_dir.join("journal.jsonl");
        let mut rec = read_journal(&path, &settings)?;
        let mut live = Live::default();
        let tmp = state_dir.join(".journal.jsonl.tmp");
        {
            let mut buf = Vec::new();
            for p in &rec.pending {
                let mut l = LineOut::new("a", &p.id);
                l.function = Some(&p.function);
                l.trace = Some(&p.trace_id);
                l.at = Some(p.created_at);
                l.body = Some(raw_or_null(&p.body));
                l.n = (p.attempts > 0).then_some(p.attempts);
                let line = l.to_line();
                live.pending.insert(p.id.clone().into(), line.len());
                live.bytes += line.len();
                buf.extend_from_slice(&line);
            }
            for f in &rec.finished {
                let line = f.to_line();
                live.add_finished(
                    f.id.clone().into(),
                    line.len(),
                    f.finished_at,
                    f.payload_bytes(),
                );
                buf.extend_from_slice(&line);
            }
            for (id, _, json) in &rec.logs {
                let line = logs_line(id, json);
                live.apply(id, line.len(), &Effect::Logs, &settings);
                buf.extend_from_slice(&line);
            }
            let mut f = File::create(&tmp).map_err(|e| io_err("cannot write", &tmp, e))?;
            f.write_all(&buf)
                .map_err(|e| io_err("cannot write", &tmp, e))?;
            f.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| io_err("cannot replace", &path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            tmp,
            file,
            file_len,
            live,
            settings,
        };
        let thread = std::thread::Builder::new()
            .name("nanofaas-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        rec.problems.shrink_to_fit();
        Ok((
            Journal {
                path,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            },
            rec,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) -> bool {
        match &*self.tx.lock().unwrap() {
            Some(tx) => tx.send(op).is_ok(),
            None => false,
        }
    }

    /// Journals an accepted invocation; resolves once it is written (and synced, with `fsync`).
    pub fn accepted(
        &self,
        id: &str,
        function: &str,
        trace_id: &str,
        created_at: u64,
        body: &[u8],
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let mut l = LineOut::new("a", id);
        l.function = Some(function);
        l.trace = Some(trace_id);
        l.at = Some(created_at);
        l.body = Some(raw_or_null(body));
        let line = l.to_line();
        let (ack, rx) = tokio::sync::oneshot::channel();
        let sent = self.send(Op::Write {
            id: id.into(),
            line,
            effect: Effect::Accepted,
            ack: Some(ack),
        });
        async move {
            if !sent {
                return Err("the journal is closed".to_string());
            }
            rx.await
                .unwrap_or_else(|_| Err("the journal writer stopped".to_string()))
        }
    }

    /// Journals that attempt `n` of an accepted invocation starts (not waited for).
    pub fn started(&self, id: &str, n: u32) {
        let mut l = LineOut::new("s", id);
        l.n = Some(n);
        self.send(Op::Write {
            id: id.into(),
            line: l.to_line(),
            effect: Effect::Started,
            ack: None,
        });
    }

    /// Journals the end of an invocation with its result (not waited for: if the process dies
    /// before it is written, the invocation runs again after the restart, and says so).
    pub fn finished(&self, rec: &FinishedRecord) {
        self.send(Op::Write {
            id: rec.id.as_str().into(),
            line: rec.to_line(),
            effect: Effect::Finished {
                at_ms: rec.finished_at,
                payload: rec.payload_bytes(),
            },
            ack: None,
        });
    }

    /// Journals the logs of an execution (not waited for), kept as long as its record, within
    /// [`MAX_LOG_BYTES`] for all of them (the oldest go first).
    pub fn logs(&self, id: &str, json: Vec<u8>) {
        self.send(Op::Write {
            id: id.into(),
            line: logs_line(id, &json),
            effect: Effect::Logs,
            ack: None,
        });
    }

    /// Journals that an accepted invocation was refused before it ran: it is forgotten.
    pub fn dropped(&self, id: &str) {
        self.send(Op::Write {
            id: id.into(),
            line: LineOut::new("x", id).to_line(),
            effect: Effect::Dropped,
            ack: None,
        });
    }

    /// Resolves once everything sent before it is written.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.send(Op::Flush(tx)) {
            let _ = rx.await;
        }
    }

    /// Writes what is queued and stops the writer thread.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Journaled logs of all executions together are kept within this many bytes (the in-memory
/// cap of `logs.rs`).
pub const MAX_LOG_BYTES: usize = crate::logs::MAX_TOTAL_BYTES;

fn logs_line(id: &str, json: &[u8]) -> Vec<u8> {
    let mut l = LineOut::new("l", id);
    l.logs = Some(raw_or_null(json));
    l.to_line()
}

/// What the writer knows of the file: which records are live and how many bytes they take.
#[derive(Default)]
struct Live {
    /// Logs of live records: bytes of their line, and the order they came in.
    logs: HashMap<Box<str>, usize>,
    logs_order: VecDeque<Box<str>>,
    logs_bytes: usize,
    /// Accepted, not finished: bytes of their lines.
    pending: HashMap<Box<str>, usize>,
    /// Finished and kept: bytes of their line.
    finished: HashMap<Box<str>, usize>,
    /// Finished ones, oldest first: (id, end in ms since the epoch, payload bytes).
    order: VecDeque<(Box<str>, u64, usize)>,
    payload: usize,
    /// Bytes of every live line.
    bytes: usize,
}

impl Live {
    fn add_finished(&mut self, id: Box<str>, line: usize, at_ms: u64, payload: usize) {
        if let Some(old) = self.finished.insert(id.clone(), line) {
            self.bytes -= old;
        }
        self.bytes += line;
        self.payload += payload;
        self.order.push_back((id, at_ms, payload));
    }

    /// Forgets finished records past the TTL or over the caps, oldest first.
    fn expire(&mut self, s: &JournalSettings, now_ms: u64) {
        let ttl = s.ttl.as_millis() as u64;
        while let Some((_, at, _)) = self.order.front() {
            let old = at.saturating_add(ttl) <= now_ms;
            if !(old || self.order.len() > s.max_records || self.payload > s.max_payload_bytes) {
                break;
            }
            let (id, _, payload) = self.order.pop_front().unwrap();
            self.payload -= payload;
            if let Some(b) = self.finished.remove(&id) {
                self.bytes -= b;
            }
            self.forget_logs(&id);
        }
    }

    fn forget_logs(&mut self, id: &str) {
        if let Some(b) = self.logs.remove(id) {
            self.bytes -= b;
            self.logs_bytes -= b;
        }
    }

    fn apply(&mut self, id: &str, line: usize, effect: &Effect, s: &JournalSettings) {
        match *effect {
            Effect::Accepted => {
                *self.pending.entry(id.into()).or_default() += line;
                self.bytes += line;
            }
            Effect::Started => {
                if let Some(b) = self.pending.get_mut(id) {
                    *b += line;
                    self.bytes += line;
                }
            }
            Effect::Finished { at_ms, payload } => {
                if let Some(b) = self.pending.remove(id) {
                    self.bytes -= b;
                }
                self.add_finished(id.into(), line, at_ms, payload);
                self.expire(s, crate::executions::now_ms());
            }
            Effect::Dropped => {
                if let Some(b) = self.pending.remove(id) {
                    self.bytes -= b;
                }
                self.forget_logs(id);
            }
            Effect::Logs => {
                if !self.pending.contains_key(id) && !self.finished.contains_key(id) {
                    return;
                }
                self.forget_logs(id);
                self.logs.insert(id.into(), line);
                self.logs_order.push_back(id.into());
                self.bytes += line;
                self.logs_bytes += line;
                while self.logs_bytes > MAX_LOG_BYTES {
                    let Some(old) = self.logs_order.pop_front() else {
                        break;
                    };
                    self.forget_logs(&old);
                }
                // Ids whose logs were replaced or forgotten stay in the order until reached.
                if self.logs_order.len() > 2 * self.logs.len() + 64 {
                    let logs = &self.logs;
                    self.logs_order.retain(|i| logs.contains_key(i));
                }
            }
        }
    }

    fn keeps(&self, key: &LineKey) -> bool {
        match key.t.as_str() {
            "a" | "s" => self.pending.contains_key(key.id.as_str()),
            "f" => self.finished.contains_key(key.id.as_str()),
            "l" => self.logs.contains_key(key.id.as_str()),
            _ => false,
        }
    }
}

struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    file_len: u64,
    live: Live,
    settings: JournalSettings,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Op>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        let mut last_expiry = std::time::Instant::now();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            // Group commit: everything queued by now goes in one write.
            while let Some(op) = next.take().or_else(|| rx.try_recv().ok()) {
                match op {
                    Op::Write {
                        id,
                        line,
                        effect,
                        ack,
                    } => {
                        buf.extend_from_slice(&line);
                        self.live.apply(&id, line.len(), &effect, &self.settings);
                        acks.extend(ack);
                    }
                    Op::Flush(tx) => flushes.push(tx),
                }
                if buf.len() >= 4 << 20 {
                    break;
                }
            }
            let result = self.write(&buf);
            if let Err(e) = &result {
                if acks.is_empty() {
                    tracing::error!(error = %e, "cannot write to the journal; finished executions may run again after a restart");
                }
            }
            buf.clear();
            if buf.capacity() > 1 << 20 {
                buf = Vec::new();
            }
            for a in acks.drain(..) {
                let _ = a.send(result.clone());
            }
            if last_expiry.elapsed() >= std::time::Duration::from_secs(1) {
                last_expiry = std::time::Instant::now();
                self.live
                    .expire(&self.settings, crate::executions::now_ms());
            }
            if self.file_len > 2 * self.live.bytes as u64 + COMPACT_SLACK_BYTES {
                if let Err(e) = self.compact() {
                    tracing::error!(error = %e, "cannot compact the journal");
                }
            }
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        }
        let _ = self.file.sync_all();
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf)
            .map_err(|e| io_err("cannot append to", &self.path, e))?;
        self.file_len += buf.len() as u64;
        if self.settings.fsync {
            self.file
                .sync_data()
                .map_err(|e| io_err("cannot sync", &self.path, e))?;
        }
        Ok(())
    }

    /// Rewrites the file with only its live lines, streaming (a line at a time).
    fn compact(&mut self) -> Result<(), String> {
        let src = File::open(&self.path).map_err(|e| io_err("cannot read", &self.path, e))?;
        let out = File::create(&self.tmp).map_err(|e| io_err("cannot write", &self.tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(64 << 10, out);
        let mut kept: u64 = 0;
        for line in BufReader::with_capacity(64 << 10, src).split(b'\n') {
            let line = line.map_err(|e| io_err("cannot read", &self.path, e))?;
            let Ok(key) = serde_json::from_slice::<LineKey>(&line) else {
                continue;
            };
            if self.live.keeps(&key) {
                w.write_all(&line)
                    .and_then(|_| w.write_all(b"\n"))
                    .map_err(|e| io_err("cannot write", &self.tmp, e))?;
                kept += line.len() as u64 + 1;
            }
        }
        let out = w
            .into_inner()
            .map_err(|e| io_err("cannot write", &self.tmp, e.into_error()))?;
        out.sync_all()
            .map_err(|e| io_err("cannot sync", &self.tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| io_err("cannot replace", &self.path, e))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io_err("cannot open", &self.path, e))?;
        tracing::debug!(before = self.file_len, after = kept, "journal compacted");
        self.file_len = kept;
        // What was counted and what was kept agree unless lines were unreadable.
        self.live.bytes = self.live.bytes.min(kept as usize);
        Ok(())
    }
}

fn read_journal(path: &Path, s: &JournalSettings) -> Result<Recovered, String> {
    let mut rec = Recovered::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rec),
        Err(e) => return Err(io_err("cannot read", path, e)),
    };
    let mut order: Vec<String> = Vec::new();
    let mut open: HashMap<String, Pending> = HashMap::new();
    let mut done: HashMap<String, (usize, FinishedRecord)> = HashMap::new();
    let mut logs: HashMap<String, Vec<u8>> = HashMap::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| io_err("cannot read", path, e))?;
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let r = match serde_json::from_slice::<LineIn>(&line) {
            Ok(r) => r,
            // A crash in the middle of a write leaves a torn last line; anything else is damage.
            Err(e) => {
                rec.problems
                    .push(format!("{}: unreadable record skipped: {e}", at()));
                continue;
            }
        };
        match r.t.as_str() {
            "a" => {
                let (Some(function), Some(body)) = (r.function, r.body) else {
                    rec.problems.push(format!(
                        "{}: accepted record without function or body",
                        at()
                    ));
                    continue;
                };
                order.push(r.id.clone());
                open.insert(
                    r.id.clone(),
                    Pending {
                        id: r.id,
                        function,
                        trace_id: r.trace.unwrap_or_default(),
                        created_at: r.at.unwrap_or(0),
                        body: Bytes::copy_from_slice(body.get().as_bytes()),
                        attempts: r.n.unwrap_or(0),
                    },
                );
            }
            "s" => {
                if let Some(p) = open.get_mut(&r.id) {
                    p.attempts = p.attempts.max(r.n.unwrap_or(0));
                }
            }
            "x" => {
                open.remove(&r.id);
            }
            "f" => {
                let pending = open.remove(&r.id);
                // A finished record of an older version carries no result: only forget.
                let (Some(status), Some(finished_at)) = (r.status, r.finished) else {
                    continue;
                };
                let function = r
                    .function
                    .or_else(|| pending.as_ref().map(|p| p.function.clone()))
                    .unwrap_or_default();
                done.insert(
                    r.id.clone(),
                    (
                        n,
                        FinishedRecord {
                            id: r.id,
                            function,
                            trace_id: r.trace.unwrap_or_default(),
                            created_at: r.at.unwrap_or(0),
                            started_at: r.started,
                            finished_at,
                            status,
                            output: r.output.map(|o| Bytes::copy_from_slice(o.get().as_bytes())),
                            error: r.error,
                            attempts: r.n.unwrap_or(0),
                            cold_start: r.cold.unwrap_or(false),
                            init_ms: r.init,
                            resumed: r.resumed.unwrap_or(false),
                            start: r.start,
                        },
                    ),
                );
            }
            "l" => {
                if let Some(l) = r.logs {
                    logs.insert(r.id, l.get().as_bytes().to_vec());
                }
            }
            other => rec
                .problems
                .push(format!("{}: unknown record type {other:?}", at())),
        }
    }
    rec.pending = order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect();
    // In the order they were written, which is the order they finished.
    let mut finished: Vec<(usize, FinishedRecord)> = done.into_values().collect();
    finished.sort_by_key(|f| f.0);
    let mut finished: Vec<FinishedRecord> = finished.into_iter().map(|f| f.1).collect();
    // The same caps as while running: newest kept.
    let now = crate::executions::now_ms();
    let ttl = s.ttl.as_millis() as u64;
    finished.retain(|f| f.finished_at.saturating_add(ttl) > now);
    let mut payload: usize = 0;
    let mut keep_from = finished.len();
    for (i, f) in finished.iter().enumerate().rev() {
        if finished.len() - i > s.max_records || payload + f.payload_bytes() > s.max_payload_bytes {
            break;
        }
        payload += f.payload_bytes();
        keep_from = i;
    }
    finished.drain(..keep_from);
    rec.finished = finished;
    let owners = rec
        .pending
        .iter()
        .map(|p| (&p.id, &p.function))
        .chain(rec.finished.iter().map(|f| (&f.id, &f.function)));
    let mut kept = Vec::new();
    for (id, function) in owners {
        if let Some(l) = logs.remove(id) {
            kept.push((id.clone(), function.clone(), l));
        }
    }
    rec.logs = kept;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nanofaas-persist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn settings() -> JournalSettings {
        JournalSettings::new(false)
    }

    fn finished(id: &str, at: u64, output: &str) -> FinishedRecord {
        FinishedRecord {
            id: id.into(),
            function: "f".into(),
            trace_id: "t".into(),
            created_at: at - 1,
            started_at: Some(at - 1),
            finished_at: at,
            status: ExecutionStatus::Success,
            output: Some(Bytes::copy_from_slice(output.as_bytes())),
            error: None,
            attempts: 2,
            cold_start: true,
            init_ms: Some(7),
            resumed: false,
            start: Some("cold".into()),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn journal_replays_unfinished_keeps_results_and_compacts() {
        let d = tempdir("journal");
        let now = crate::executions::now_ms();
        {
            let (j, rec) = Journal::open(&d, settings()).unwrap();
            assert!(rec.pending.is_empty() && rec.problems.is_empty());
            block_on(async {
                j.accepted("e1", "f", "t1", 1, br#"{"input": 1}"#)
                    .await
                    .unwrap();
                j.accepted("e2", "f", "t2", 2, br#"{"input": {"deep": [1, 2]}}"#)
                    .await
                    .unwrap();
                j.accepted("e3", "g", "t3", 3, br#"{"input": null}"#)
                    .await
                    .unwrap();
                j.accepted("e5", "g", "t5", 5, br#"{"input": 5}"#)
                    .await
                    .unwrap();
            });
            j.started("e1", 1);
            j.started("e2", 1);
            j.started("e2", 2);
            j.finished(&finished("e1", now, r#"{"ok":true}"#));
            j.dropped("e5");
            block_on(j.flush());
        }
        // A torn last line, as a crash mid-write leaves.
        let path = d.join("journal.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"t":"a","id":"e4","fun"#).unwrap();
        drop(f);
        let (j, rec) = Journal::open(&d, JournalSettings::new(true)).unwrap();
        let ids: Vec<_> = rec.pending.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["e2", "e3"]);
        assert_eq!(
            rec.pending[0].body,
            Bytes::from_static(br#"{"input": {"deep": [1, 2]}}"#)
        );
        assert_eq!(rec.pending[0].attempts, 2, "started attempts are counted");
        assert_eq!(rec.pending[1].attempts, 0);
        assert_eq!(rec.pending[1].function, "g");
        assert_eq!(rec.finished, vec![finished("e1", now, r#"{"ok":true}"#)]);
        assert_eq!(rec.problems.len(), 1, "{:?}", rec.problems);
        let mut e2 = finished("e2", now + 1, "[1]");
        e2.resumed = true;
        e2.status = ExecutionStatus::Error;
        e2.output = None;
        e2.error = Some(ErrorBody::new(
            nanofaas_api::ErrorCode::FunctionError,
            "boom",
        ));
        j.finished(&e2);
        drop(j);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            4,
            "compacted to two pending and one finished, then one finish: {text}"
        );
        let (_, rec) = Journal::open(&d, settings()).unwrap();
        assert_eq!(rec.pending.len(), 1);
        assert_eq!(rec.finished.len(), 2);
        assert_eq!(rec.finished[1], e2);
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn finished_records_obey_ttl_and_caps_at_open() {
        let d = tempdir("caps");
        let now = crate::executions::now_ms();
        {
            let (j, _) = Journal::open(&d, settings()).unwrap();
            j.finished(&finished("old", now - 10_000, "1"));
            for i in 0..5 {
                j.finished(&finished(&format!("e{i}"), now - 5 + i, "12345"));
            }
        }
        let mut s = settings();
        s.ttl = std::time::Duration::from_secs(5);
        s.max_records = 4;
        s.max_payload_bytes = 15;
        let (_, rec) = Journal::open(&d, s).unwrap();
        let ids: Vec<_> = rec.finished.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            ["e2", "e3", "e4"],
            "TTL, then the byte cap, newest kept"
        );
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn the_journal_stays_bounded_while_it_runs() {
        let d = tempdir("bounded");
        let mut s = settings();
        s.max_records = 100;
        let (j, _) = Journal::open(&d, s.clone()).unwrap();
        let body = format!(r#"{{"input":"{}"}}"#, "x".repeat(1000));
        let path = d.join("journal.jsonl");
        let mut biggest = 0;
        block_on(async {
            for i in 0..20_000u32 {
                let id = format!("e{i}");
                j.accepted(&id, "f", "t", 1, body.as_bytes()).await.unwrap();
                j.started(&id, 1);
                j.finished(&finished(&id, crate::executions::now_ms(), "[1]"));
                if i % 1000 == 999 {
                    j.flush().await;
                    biggest = biggest.max(fs::metadata(&path).unwrap().len());
                }
            }
        });
        // 20 MB went through; what is kept is 100 finished records plus the slack.
        assert!(
            biggest < 2 * COMPACT_SLACK_BYTES + (1 << 20),
            "journal grew to {biggest} bytes"
        );
        drop(j);
        let (_, rec) = Journal::open(&d, s).unwrap();
        assert_eq!(rec.finished.len(), 100);
        assert_eq!(rec.finished.last().unwrap().id, "e19999");
        assert!(rec.pending.is_empty());
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn logs_are_kept_with_their_records_and_bounded() {
        let d = tempdir("logs");
        let mut s = settings();
        s.max_records = 50;
        let (j, _) = Journal::open(&d, s.clone()).unwrap();
        let logs = format!(
            r#"{{"lines":[[1,"o","{}"]],"dropped":[0,0]}}"#,
            "y".repeat(2000)
        );
        let path = d.join("journal.jsonl");
        let mut biggest = 0;
        block_on(async {
            for i in 0..5000u32 {
                let id = format!("e{i}");
                j.accepted(&id, "f", "t", 1, b"{}").await.unwrap();
                // Sealed before the record ends (the instance said so before it answered).
                j.logs(&id, logs.clone().into_bytes());
                j.finished(&finished(&id, crate::executions::now_ms(), "1"));
                if i % 500 == 499 {
                    j.flush().await;
                    biggest = biggest.max(fs::metadata(&path).unwrap().len());
                }
            }
            // Logs of an execution the journal does not know are not kept.
            j.logs("stranger", logs.clone().into_bytes());
            j.flush().await;
        });
        assert!(
            biggest < 2 * COMPACT_SLACK_BYTES + (1 << 20),
            "journal grew to {biggest} bytes"
        );
        drop(j);
        let (_, rec) = Journal::open(&d, s).unwrap();
        assert_eq!(rec.finished.len(), 50);
        assert_eq!(rec.logs.len(), 50, "one per kept record");
        let (id, function, json) = rec.logs.iter().find(|l| l.0 == "e4999").unwrap();
        assert_eq!((id.as_str(), function.as_str()), ("e4999", "f"));
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(v["lines"][0][2].as_str().unwrap().len(), 2000);
        assert!(!rec.logs.iter().any(|l| l.0 == "stranger"));
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn an_acceptance_is_acknowledged_only_when_written() {
        let d = tempdir("ack");
        let (j, _) = Journal::open(&d, JournalSettings::new(true)).unwrap();
        block_on(j.accepted("e1", "f", "t", 1, b"{}")).unwrap();
        // Written by the time the acknowledgement came: another reader sees it.
        let text = fs::read_to_string(d.join("journal.jsonl")).unwrap();
        assert!(text.contains("\"e1\""), "{text}");
        j.close();
        assert!(block_on(j.accepted("e2", "f", "t", 1, b"{}")).is_err());
        fs::remove_dir_all(d).ok();
    }

    #[test]
    fn specs_round_trip() {
        let d = tempdir("specs");
        let s = SpecStore::open(&d).unwrap();
        let mut spec = FunctionSpec::named("echo");
        spec.command = Some(vec!["./run".into()]);
        s.save(&spec).unwrap();
        fs::write(d.join("functions/broken.json"), "{").unwrap();
        let (specs, problems) = s.load();
        assert_eq!(specs, vec![spec]);
        assert_eq!(problems.len(), 1);
        s.remove("echo").unwrap();
        s.remove("echo").unwrap();
        assert!(s.load().0.is_empty());
        fs::remove_dir_all(d).ok();
    }
}
