//! Execution records: their lifecycle, the one-outcome-per-attempt rule, and the bounded store.
//!
//! An [`Execution`] owns its mutable state behind one small mutex that is never held across an
//! `.await`. Each attempt gets exactly one outcome, whichever of the dispatcher's answer and a
//! callback arrives first ([`Execution::resolve_attempt`], [`Execution::deliver_callback`]); later
//! ones are reported as duplicate or stale so the caller can count and drop them.
//!
//! The [`ExecutionStore`] keeps records for a TTL after they finish and bounds memory with a cap on
//! records and on retained output bytes, evicting the oldest finished first. Unfinished records
//! are never evicted (their number is bounded by the admission queues).
//! This module does not dispatch anything and knows nothing of HTTP.

use crate::metrics::GlobalMetrics;
use bytes::Bytes;
use nanofaas_api::{ErrorBody, ErrorCode, ExecutionStatus, ExecutionView};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }
}

/// Why an attempt failed; decides whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function ran and failed.
    Function,
    /// The function did not finish in time.
    Timeout,
    /// nanofaas could not run the attempt (connection refused, instance lost): retryable.
    Platform,
    /// Final without retry (function removed, startup failure after backoff...).
    Fatal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: ErrorBody,
    pub kind: FailureKind,
}

impl Failure {
    pub fn new(kind: FailureKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody::new(code, message),
            kind,
        }
    }
}

/// The outcome of one attempt. `Success` carries the output as JSON bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Bytes),
    Failure(Failure),
}

impl Outcome {
    pub fn status(&self) -> ExecutionStatus {
        match self {
            Outcome::Success(_) => ExecutionStatus::Success,
            Outcome::Failure(f) if f.kind == FailureKind::Timeout => ExecutionStatus::Timeout,
            Outcome::Failure(_) => ExecutionStatus::Error,
        }
    }
}

/// What became of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackVerdict {
    Recorded,
    /// The attempt already had an outcome.
    Duplicate,
    /// The callback names an attempt that is not the current one, or the execution is finished.
    Stale,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct State {
    status: ExecutionStatus,
    attempt: u32,
    attempt_outcome: Option<Outcome>,
    request: Option<Bytes>,
    started_at: Option<u64>,
    finished_at: Option<u64>,
    result: Option<Outcome>,
    cold_start: bool,
    init_ms: Option<u64>,
    /// Run again after a restart of the control plane.
    resumed: bool,
    /// How the last attempt got its instance.
    start: Option<crate::dispatch::StartKind>,
}

pub struct Execution {
    pub id: Arc<str>,
    pub function: Arc<str>,
    pub mode: Mode,
    pub trace_id: Arc<str>,
    pub created_at: u64,
    pub created: Instant,
    /// Timestamps and ids of its trace (`trace.rs`).
    pub trace: crate::trace::Trace,
    state: Mutex<State>,
    changed: Notify,
}

/// What a trace needs of an execution's state (`trace.rs`).
pub struct TraceFacts {
    pub status: ExecutionStatus,
    pub attempts: u32,
    pub finished_at: Option<u64>,
    pub start: Option<crate::dispatch::StartKind>,
    pub resumed: bool,
}

impl Execution {
    pub fn new(
        id: Arc<str>,
        function: Arc<str>,
        mode: Mode,
        trace_id: Arc<str>,
        request: Bytes,
    ) -> Arc<Self> {
        Self::with_created_at(id, function, mode, trace_id, request, now_ms())
    }

    /// An execution accepted earlier (read back from the journal after a restart).
    pub fn with_created_at(
        id: Arc<str>,
        function: Arc<str>,
        mode: Mode,
        trace_id: Arc<str>,
        request: Bytes,
        created_at: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            trace: crate::trace::Trace::new(&trace_id),
            id,
            function,
            mode,
            trace_id,
            created_at,
            created: Instant::now(),
            state: Mutex::new(State {
                status: ExecutionStatus::Queued,
                attempt: 0,
                attempt_outcome: None,
                request: Some(request),
                started_at: None,
                finished_at: None,
                result: None,
                cold_start: false,
                init_ms: None,
                resumed: false,
                start: None,
            }),
            changed: Notify::new(),
        })
    }

    /// An accepted execution read back from the journal after a restart, to run again:
    /// `attempts` had started before (its next attempt is `attempts + 1`).
    pub fn resumed(
        id: Arc<str>,
        function: Arc<str>,
        trace_id: Arc<str>,
        request: Bytes,
        created_at: u64,
        attempts: u32,
    ) -> Arc<Self> {
        let e = Self::with_created_at(id, function, Mode::Async, trace_id, request, created_at);
        {
            let mut st = e.state.lock().unwrap();
            st.attempt = attempts;
            st.resumed = true;
        }
        e
    }

    /// A finished async execution read back from the journal after a restart.
    pub fn from_finished(r: crate::persist::FinishedRecord) -> Arc<Self> {
        let result = match r.status {
            ExecutionStatus::Success => {
                Outcome::Success(r.output.unwrap_or_else(|| Bytes::from_static(b"null")))
            }
            status => Outcome::Failure(Failure {
                error: r.error.unwrap_or_else(|| {
                    ErrorBody::new(ErrorCode::FunctionError, "the execution failed")
                }),
                kind: if status == ExecutionStatus::Timeout {
                    FailureKind::Timeout
                } else {
                    FailureKind::Function
                },
            }),
        };
        Arc::new(Self {
            trace: crate::trace::Trace::starting(&r.trace_id, 0),
            id: r.id.into(),
            function: r.function.into(),
            mode: Mode::Async,
            trace_id: r.trace_id.into(),
            created_at: r.created_at,
            created: Instant::now(),
            state: Mutex::new(State {
                status: result.status(),
                attempt: r.attempts,
                attempt_outcome: None,
                request: None,
                started_at: r.started_at,
                finished_at: Some(r.finished_at),
                result: Some(result),
                cold_start: r.cold_start,
                start: crate::dispatch::StartKind::parse(r.start.as_deref(), r.init_ms),
                init_ms: r.init_ms,
                resumed: r.resumed,
            }),
            changed: Notify::new(),
        })
    }

    /// The finished execution as the journal keeps it; `None` while unfinished.
    pub fn finished_record(&self) -> Option<crate::persist::FinishedRecord> {
        let st = self.state.lock().unwrap();
        let result = st.result.as_ref()?;
        let (output, error) = match result {
            Outcome::Success(b) => (Some(b.clone()), None),
            Outcome::Failure(f) => (None, Some(f.error.clone())),
        };
        Some(crate::persist::FinishedRecord {
            id: self.id.to_string(),
            function: self.function.to_string(),
            trace_id: self.trace_id.to_string(),
            created_at: self.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at.unwrap_or_else(now_ms),
            status: st.status,
            output,
            error,
            attempts: st.attempt,
            cold_start: st.cold_start,
            init_ms: st.init_ms,
            resumed: st.resumed,
            start: st.start.map(|s| s.as_str().to_string()),
        })
    }

    /// Starts attempt `n` and returns the request body to send, or `None` if already finished.
    pub fn begin_attempt(&self, n: u32) -> Option<Bytes> {
        let mut st = self.state.lock().unwrap();
        if st.status.is_final() {
            return None;
        }
        st.status = ExecutionStatus::Running;
        st.attempt = n;
        st.attempt_outcome = None;
        st.started_at.get_or_insert_with(now_ms);
        st.request.clone()
    }

    pub fn attempt(&self) -> u32 {
        self.state.lock().unwrap().attempt
    }

    /// Records the dispatcher's outcome for attempt `n` unless a callback was first; returns the
    /// outcome that counts.
    pub fn resolve_attempt(&self, n: u32, outcome: Outcome) -> Outcome {
        let mut st = self.state.lock().unwrap();
        if st.attempt == n {
            if let Some(first) = &st.attempt_outcome {
                return first.clone();
            }
            st.attempt_outcome = Some(outcome.clone());
            drop(st);
            self.changed.notify_waiters();
        }
        outcome
    }

    /// Replaces the outcome of attempt `n` while it is current: the dispatcher learned more
    /// than the callback said (the instance was killed for going over its memory limit).
    pub fn amend_attempt(&self, n: u32, outcome: Outcome) {
        let mut st = self.state.lock().unwrap();
        if st.attempt == n && !st.status.is_final() {
            st.attempt_outcome = Some(outcome);
        }
    }

    /// A callback's outcome for attempt `n`.
    pub fn deliver_callback(&self, n: u32, outcome: Outcome) -> CallbackVerdict {
        let mut st = self.state.lock().unwrap();
        if st.status.is_final() || st.attempt != n || st.status != ExecutionStatus::Running {
            return CallbackVerdict::Stale;
        }
        if st.attempt_outcome.is_some() {
            return CallbackVerdict::Duplicate;
        }
        st.attempt_outcome = Some(outcome);
        drop(st);
        self.changed.notify_waiters();
        CallbackVerdict::Recorded
    }

    /// Waits until attempt `n` has an outcome (from a callback or the dispatcher).
    pub async fn wait_attempt(&self, n: u32) -> Outcome {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state.lock().unwrap();
                if st.attempt == n {
                    if let Some(o) = &st.attempt_outcome {
                        return o.clone();
                    }
                }
            }
            notified.await;
        }
    }

    /// Records how the current attempt got its instance; `cold_start` stays set once any
    /// attempt was cold.
    pub fn mark_start(&self, kind: crate::dispatch::StartKind) {
        let mut st = self.state.lock().unwrap();
        st.start = Some(kind);
        if let Some(init) = kind.init() {
            st.cold_start = true;
            st.init_ms = Some(init.as_millis() as u64);
        }
    }

    /// How the last attempt got its instance.
    pub fn start(&self) -> Option<crate::dispatch::StartKind> {
        self.state.lock().unwrap().start
    }

    /// Makes `outcome` final. Returns false if the execution had already finished.
    fn finish(&self, outcome: Outcome) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.status.is_final() {
            return false;
        }
        st.status = outcome.status();
        st.finished_at = Some(now_ms());
        self.trace.mark_finished();
        st.request = None;
        // The attempt's outcome may share the connection buffer; the final one is an exact copy.
        st.attempt_outcome = None;
        st.result = Some(outcome);
        drop(st);
        self.changed.notify_waiters();
        true
    }

    pub fn status(&self) -> ExecutionStatus {
        self.state.lock().unwrap().status
    }

    /// The final outcome, if finished.
    pub fn result(&self) -> Option<Outcome> {
        self.state.lock().unwrap().result.clone()
    }

    /// Waits for the final outcome.
    pub async fn wait_final(&self) -> Outcome {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.result() {
                return r;
            }
            notified.await;
        }
    }

    pub fn view(&self) -> ExecutionView {
        let st = self.state.lock().unwrap();
        let (output, error) = match &st.result {
            Some(Outcome::Success(b)) => (serde_json::from_slice(b).ok(), None),
            Some(Outcome::Failure(f)) => (None, Some(f.error.clone())),
            None => (None, None),
        };
        ExecutionView {
            execution_id: self.id.to_string(),
            function: self.function.to_string(),
            status: st.status,
            output,
            error,
            attempts: st.attempt,
            cold_start: st.cold_start,
            init_duration_ms: st.init_ms,
            created_at: self.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            trace_id: Some(self.trace_id.to_string()),
            mode: self.mode.as_str().to_string(),
            resumed: st.resumed,
            start: st.start.map(|s| s.as_str().to_string()),
        }
    }

    /// What the trace's spans say of the execution's state.
    pub fn trace_facts(&self) -> TraceFacts {
        let st = self.state.lock().unwrap();
        TraceFacts {
            status: st.status,
            attempts: st.attempt,
            finished_at: st.finished_at,
            start: st.start,
            resumed: st.resumed,
        }
    }

    pub fn cold_start(&self) -> (bool, Option<u64>) {
        let st = self.state.lock().unwrap();
        (st.cold_start, st.init_ms)
    }

    /// What a status page shows of this execution, without its input or output.
    pub fn summary(&self) -> Summary {
        let st = self.state.lock().unwrap();
        Summary {
            status: st.status,
            attempts: st.attempt,
            cold_start: st.cold_start,
            start: st.start,
            started_at: st.started_at,
            finished_at: st.finished_at,
        }
    }
}

/// [`Execution::summary`].
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub status: ExecutionStatus,
    pub attempts: u32,
    pub cold_start: bool,
    pub start: Option<crate::dispatch::StartKind>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

fn retained_bytes(o: &Outcome) -> usize {
    match o {
        Outcome::Success(b) => b.len(),
        Outcome::Failure(f) => f.error.message.len() + f.error.code.len(),
    }
}

/// Limits of the store.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    pub ttl: Duration,
    pub max_records: usize,
    pub max_payload_bytes: usize,
}

struct Finished {
    at: Instant,
    id: Arc<str>,
    bytes: usize,
}

const SHARDS: usize = 16;

/// FNV-1a over the id's bytes: ids are random, so a cheap hash spreads them as well as SipHash
/// does, and nothing here needs protection from chosen keys (ids are minted by us).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type IdMap = HashMap<Arc<str>, Arc<Execution>, std::hash::BuildHasherDefault<IdHasher>>;

pub struct ExecutionStore {
    shards: Vec<Mutex<IdMap>>,
    finished: Mutex<VecDeque<Finished>>,
    records: AtomicUsize,
    payload_bytes: AtomicUsize,
    limits: StoreLimits,
    metrics: Arc<crate::metrics::Metrics>,
}

fn shard_of(id: &str) -> usize {
    // Ids are random; their last bytes spread well enough.
    let b = id.as_bytes();
    let mut h: usize = 0;
    for &x in &b[b.len().saturating_sub(4)..] {
        h = h.wrapping_mul(31).wrapping_add(x as usize);
    }
    h % SHARDS
}

impl ExecutionStore {
    pub fn new(limits: StoreLimits, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(IdMap::default())).collect(),
            finished: Mutex::new(VecDeque::new()),
            records: AtomicUsize::new(0),
            payload_bytes: AtomicUsize::new(0),
            limits,
            metrics,
        }
    }

    fn global(&self) -> &GlobalMetrics {
        &self.metrics.global
    }

    pub fn insert(&self, exec: Arc<Execution>) {
        let prev = self.shards[shard_of(&exec.id)]
            .lock()
            .unwrap()
            .insert(exec.id.clone(), exec);
        if prev.is_none() {
            let n = self.records.fetch_add(1, Relaxed) + 1;
            self.global().executions_stored.set(n as i64);
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        self.shards[shard_of(id)].lock().unwrap().get(id).cloned()
    }

    /// Forgets an execution that was never accepted (refused by backpressure).
    pub fn discard(&self, id: &str) {
        if self.shards[shard_of(id)]
            .lock()
            .unwrap()
            .remove(id)
            .is_some()
        {
            let n = self.records.fetch_sub(1, Relaxed) - 1;
            self.global().executions_stored.set(n as i64);
        }
    }

    /// Makes `outcome` final for `exec` and applies the caps. Returns false if it was already final.
    /// Adds a finished execution read back from the journal; `age` is how long ago it finished
    /// (its TTL counts from then).
    pub fn insert_finished(&self, exec: Arc<Execution>, age: Duration) {
        let bytes = exec.result().as_ref().map_or(0, retained_bytes);
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let id = exec.id.clone();
        self.insert(exec);
        self.payload_bytes.fetch_add(bytes, Relaxed);
        self.finished
            .lock()
            .unwrap()
            .push_back(Finished { at, id, bytes });
        self.enforce_caps();
    }

    pub fn finish(&self, exec: &Execution, outcome: Outcome) -> bool {
        // Keep an exact-size copy: the bytes may be a slice of a connection's read buffer, and
        // holding the slice would hold the whole buffer for the record's lifetime.
        let outcome = match outcome {
            Outcome::Success(b) => Outcome::Success(Bytes::copy_from_slice(&b)),
            other => other,
        };
        let bytes = retained_bytes(&outcome);
        if !exec.finish(outcome) {
            return false;
        }
        self.payload_bytes.fetch_add(bytes, Relaxed);
        self.finished.lock().unwrap().push_back(Finished {
            at: Instant::now(),
            id: exec.id.clone(),
            bytes,
        });
        self.enforce_caps();
        true
    }

    fn evict_front(&self, q: &mut VecDeque<Finished>) -> bool {
        let Some(f) = q.pop_front() else { return false };
        self.payload_bytes.fetch_sub(f.bytes, Relaxed);
        if self.shards[shard_of(&f.id)]
            .lock()
            .unwrap()
            .remove(&f.id)
            .is_some()
        {
            let n = self.records.fetch_sub(1, Relaxed) - 1;
            self.global().executions_stored.set(n as i64);
            self.global().executions_evicted.inc();
        }
        true
    }

    fn enforce_caps(&self) {
        let over = |s: &Self| {
            s.records.load(Relaxed) > s.limits.max_records
                || s.payload_bytes.load(Relaxed) > s.limits.max_payload_bytes
        };
        if !over(self) {
            return;
        }
        let mut q = self.finished.lock().unwrap();
        while over(self) && self.evict_front(&mut q) {}
    }

    /// Drops finished records older than the TTL. Called periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut q = self.finished.lock().unwrap();
        while q
            .front()
            .is_some_and(|f| now.saturating_duration_since(f.at) >= self.limits.ttl)
        {
            self.evict_front(&mut q);
        }
    }

    pub fn len(&self) -> usize {
        self.records.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes.load(Relaxed)
    }

    /// The `n` most recently finished executions still kept, newest first (for status pages;
    /// reads the eviction queue's tail, so it costs `n` lookups whatever the store's size).
    pub fn recent_finished(&self, n: usize) -> Vec<Arc<Execution>> {
        let q = self.finished.lock().unwrap();
        q.iter()
            .rev()
            .take(n)
            .filter_map(|f| self.get(&f.id))
            .collect()
    }

    /// Every unfinished execution (for shutdown bookkeeping).
    pub fn unfinished(&self) -> Vec<Arc<Execution>> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(
                s.lock()
                    .unwrap()
                    .values()
                    .filter(|e| !e.status().is_final())
                    .cloned(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn exec(id: &str) -> Arc<Execution> {
        Execution::new(
            id.into(),
            "f".into(),
            Mode::Sync,
            "t".into(),
            Bytes::from_static(b"{}"),
        )
    }

    fn store(ttl_s: u64, max_records: usize, max_bytes: usize) -> ExecutionStore {
        ExecutionStore::new(
            StoreLimits {
                ttl: Duration::from_secs(ttl_s),
                max_records,
                max_payload_bytes: max_bytes,
            },
            Arc::new(Metrics::default()),
        )
    }

    fn ok(s: &str) -> Outcome {
        Outcome::Success(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn first_outcome_of_an_attempt_wins() {
        let e = exec("e1");
        e.begin_attempt(1);
        assert_eq!(e.deliver_callback(1, ok("1")), CallbackVerdict::Recorded);
        assert_eq!(e.deliver_callback(1, ok("2")), CallbackVerdict::Duplicate);
        assert_eq!(e.resolve_attempt(1, ok("3")), ok("1"));
        assert_eq!(e.deliver_callback(7, ok("4")), CallbackVerdict::Stale);
        e.begin_attempt(2);
        assert_eq!(e.deliver_callback(1, ok("5")), CallbackVerdict::Stale);
        assert_eq!(e.resolve_attempt(2, ok("6")), ok("6"));
        assert_eq!(e.deliver_callback(2, ok("7")), CallbackVerdict::Duplicate);
    }

    #[test]
    fn callbacks_after_finish_are_stale() {
        let s = store(60, 10, 1000);
        let e = exec("e1");
        s.insert(e.clone());
        e.begin_attempt(1);
        assert!(s.finish(&e, ok("1")));
        assert!(!s.finish(&e, ok("2")));
        assert_eq!(e.deliver_callback(1, ok("3")), CallbackVerdict::Stale);
        assert_eq!(e.result(), Some(ok("1")));
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_eviction() {
        let s = store(10, 100, 1 << 20);
        for i in 0..3 {
            let e = exec(&format!("e{i}"));
            s.insert(e.clone());
            s.finish(&e, ok("1"));
            tokio::time::advance(Duration::from_secs(4)).await;
        }
        let running = exec("running");
        s.insert(running.clone());
        assert_eq!(s.len(), 4);
        s.sweep(); // e0 is 12 s old
        assert!(s.get("e0").is_none());
        assert!(s.get("e1").is_some());
        tokio::time::advance(Duration::from_secs(100)).await;
        s.sweep();
        assert_eq!(s.len(), 1, "only the unfinished record stays");
        assert!(s.get("running").is_some());
        assert_eq!(s.payload_bytes(), 0);
    }

    #[test]
    fn record_cap_evicts_oldest_finished_first() {
        let s = store(3600, 3, 1 << 20);
        let unfinished = exec("u");
        s.insert(unfinished.clone());
        for i in 0..5 {
            let e = exec(&format!("e{i}"));
            s.insert(e.clone());
            s.finish(&e, ok("1"));
        }
        assert_eq!(s.len(), 3);
        assert!(s.get("u").is_some());
        assert!(s.get("e0").is_none() && s.get("e2").is_none());
        assert!(s.get("e3").is_some() && s.get("e4").is_some());
    }

    #[test]
    fn payload_cap_evicts_by_bytes() {
        let s = store(3600, 1000, 250);
        for i in 0..5 {
            let e = exec(&format!("e{i}"));
            s.insert(e.clone());
            s.finish(&e, Outcome::Success(Bytes::from(vec![b'1'; 100])));
        }
        assert!(s.payload_bytes() <= 250);
        assert_eq!(s.len(), 2);
        assert!(s.get("e4").is_some() && s.get("e3").is_some());
    }

    #[tokio::test]
    async fn waiters_see_the_attempt_and_final_outcomes() {
        let e = exec("e1");
        e.begin_attempt(1);
        let e2 = e.clone();
        let w = tokio::spawn(async move { e2.wait_attempt(1).await });
        tokio::task::yield_now().await;
        e.deliver_callback(1, ok("9"));
        assert_eq!(w.await.unwrap(), ok("9"));
        let s = store(60, 10, 1000);
        let e3 = e.clone();
        let fin = tokio::spawn(async move { e3.wait_final().await });
        tokio::task::yield_now().await;
        s.finish(&e, ok("9"));
        assert_eq!(fin.await.unwrap(), ok("9"));
    }
}
