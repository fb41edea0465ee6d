//! Traces of executions: W3C `traceparent`, the timestamps an execution collects on its way, and
//! the spans built from them.
//!
//! Each execution is one trace (docs/observability.md#traces). While it runs it only stores a few
//! timestamps in atomics on its record ([`Trace`]): no span object, no allocation, no lock on the
//! hot path. Spans are built from those timestamps when someone asks
//! (`GET /v1/executions/{id}/trace`, [`spans`]) or when the record is exported over OTLP
//! ([`crate::otlp`]).
//!
//! Ids: the trace id is the caller's `traceparent` trace-id when it sent a valid one, else its
//! `X-Trace-Id` when that is 32 lower-case hex digits, else a new random one. Span ids are derived
//! from a per-execution random seed and the span's place in the trace, so they need no storage
//! and the instance is told the dispatch span's id before that span is built.
//!
//! This module knows no HTTP and sends nothing.

use crate::executions::Execution;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `traceparent` header (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex only, as the W3C format requires.
fn parse_hex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &b in s {
        v = (v << 4) | hex_val(b)? as u128;
    }
    Some(v)
}

impl TraceParent {
    /// Parses `version-traceid-parentid-flags` strictly: lower-case hex, version not `ff`, no
    /// all-zero ids, exactly 55 characters for version `00` (a later version may append
    /// `-...`). Anything else is `None`: the caller then starts a new trace.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let b = s.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = parse_hex(&b[0..2])? as u8;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = parse_hex(&b[3..35])?;
        let parent_id = parse_hex(&b[36..52])? as u64;
        let flags = parse_hex(&b[53..55])? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], v: u128) {
    let n = out.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// 32 lower-case hex digits.
pub fn trace_id_hex(id: u128) -> String {
    let mut b = [0u8; 32];
    put_hex(&mut b, id);
    String::from_utf8(b.to_vec()).expect("hex is ASCII")
}

/// 16 lower-case hex digits.
pub fn span_id_hex(id: u64) -> String {
    let mut b = [0u8; 16];
    put_hex(&mut b, id as u128);
    String::from_utf8(b.to_vec()).expect("hex is ASCII")
}

/// A `traceparent` value, formatted on the stack (the hot path sends one per attempt).
pub struct TraceParentBuf([u8; 55]);

impl TraceParentBuf {
    pub fn new(trace_id: u128, span_id: u64, flags: u8) -> Self {
        let mut b = [b'-'; 55];
        b[0] = b'0';
        b[1] = b'0';
        put_hex(&mut b[3..35], trace_id);
        put_hex(&mut b[36..52], span_id as u128);
        put_hex(&mut b[53..55], flags as u128);
        Self(b)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }
}

/// The trace id an execution's `X-Trace-Id` stands for, when it is one (32 lower-case hex
/// digits, not all zero).
pub fn w3c_trace_id(s: &str) -> Option<u128> {
    if s.len() != 32 {
        return None;
    }
    parse_hex(s.as_bytes()).filter(|v| *v != 0)
}

/// Unix time in nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Attempts kept per trace: the first `ATTEMPT_SLOTS - 1` and the latest.
pub const ATTEMPT_SLOTS: usize = 4;

#[derive(Default)]
struct AttemptMarks {
    n: AtomicU32,
    start_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Cold start: how long the attempt waited for its instance, µs + 1 (0: warm).
    init_us: AtomicU64,
    /// The runtime's own time as its watchdog measured it, µs + 1 (0: not reported).
    runtime_us: AtomicU64,
}

/// Where a span sits in the trace; span ids derive from it.
#[derive(Debug, Clone, Copy)]
enum Part {
    Root,
    Admission,
    Queue,
    Dispatch(u32),
    InstanceStart(u32),
    Runtime(u32),
}

/// What an execution remembers for its trace: ids and a handful of timestamps.
pub struct Trace {
    pub trace_id: u128,
    seed: u64,
    /// The caller's span (from `traceparent`); 0: none.
    parent: AtomicU64,
    flags: AtomicU8,
    created_ns: AtomicU64,
    queued_ns: AtomicU64,
    admitted_ns: AtomicU64,
    finished_ns: AtomicU64,
    attempts: [AttemptMarks; ATTEMPT_SLOTS],
}

/// Sampled, the default flag when the caller sent none.
pub const FLAG_SAMPLED: u8 = 1;

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Trace {
    /// A trace for an execution whose `X-Trace-Id` is `trace_id`, starting now.
    pub fn new(trace_id: &str) -> Self {
        Self::starting(trace_id, now_ns())
    }

    /// A trace whose execution was created at `created_ns` (0: unknown, read back from disk).
    pub fn starting(trace_id: &str, created_ns: u64) -> Self {
        let trace_id = w3c_trace_id(trace_id).unwrap_or_else(|| {
            ((crate::ids::random_u64() as u128) << 64) | crate::ids::random_u64() as u128 | 1
        });
        Self {
            trace_id,
            seed: crate::ids::random_u64(),
            parent: AtomicU64::new(0),
            flags: AtomicU8::new(FLAG_SAMPLED),
            created_ns: AtomicU64::new(created_ns),
            queued_ns: AtomicU64::new(0),
            admitted_ns: AtomicU64::new(0),
            finished_ns: AtomicU64::new(0),
            attempts: Default::default(),
        }
    }

    /// Joins the caller's trace: its span becomes the parent of the execution's root span.
    /// The trace id is the execution's (set from the same header by the platform).
    pub fn set_parent(&self, tp: &TraceParent) {
        self.parent.store(tp.parent_id, Relaxed);
        self.flags.store(tp.flags, Relaxed);
    }

    pub fn parent(&self) -> Option<u64> {
        Some(self.parent.load(Relaxed)).filter(|p| *p != 0)
    }

    pub fn flags(&self) -> u8 {
        self.flags.load(Relaxed)
    }

    pub fn sampled(&self) -> bool {
        self.flags() & FLAG_SAMPLED != 0
    }

    fn span_id(&self, part: Part) -> u64 {
        let k: u64 = match part {
            Part::Root => 0,
            Part::Admission => 1,
            Part::Queue => 2,
            Part::Dispatch(n) => 16 + 4 * n as u64,
            Part::InstanceStart(n) => 17 + 4 * n as u64,
            Part::Runtime(n) => 18 + 4 * n as u64,
        };
        mix(self
            .seed
            .wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .max(1)
    }

    /// The span id of attempt `n`'s dispatch: the parent the instance is told.
    pub fn dispatch_span(&self, n: u32) -> u64 {
        self.span_id(Part::Dispatch(n))
    }

    /// The `traceparent` sent with attempt `n`.
    pub fn traceparent(&self, n: u32) -> TraceParentBuf {
        TraceParentBuf::new(self.trace_id, self.dispatch_span(n), self.flags())
    }

    /// The execution entered admission (its queue, or a free slot).
    pub fn mark_queued(&self) {
        self.queued_ns.store(now_ns(), Relaxed);
    }

    /// The execution got its slot.
    pub fn mark_admitted(&self) {
        self.admitted_ns.store(now_ns(), Relaxed);
    }

    pub fn mark_finished(&self) {
        self.finished_ns.store(now_ns(), Relaxed);
    }

    fn slot(&self, n: u32) -> &AttemptMarks {
        let i = (n.max(1) as usize - 1).min(ATTEMPT_SLOTS - 1);
        &self.attempts[i]
    }

    pub fn attempt_started(&self, n: u32) {
        let s = self.slot(n);
        s.n.store(n, Relaxed);
        s.start_ns.store(now_ns(), Relaxed);
        s.end_ns.store(0, Relaxed);
        s.init_us.store(0, Relaxed);
        s.runtime_us.store(0, Relaxed);
    }

    /// Attempt `n` ended; `init` is how long it waited for a new instance (a cold start).
    pub fn attempt_ended(&self, n: u32, init: Option<Duration>) {
        let s = self.slot(n);
        if s.n.load(Relaxed) != n {
            return;
        }
        if let Some(d) = init {
            s.init_us.store(d.as_micros() as u64 + 1, Relaxed);
        }
        s.end_ns.store(now_ns(), Relaxed);
    }

    /// The runtime's own time in attempt `n`, if its watchdog reported it.
    pub fn runtime_of(&self, n: u32) -> Option<Duration> {
        let s = self.slot(n);
        match (s.n.load(Relaxed) == n, s.runtime_us.load(Relaxed)) {
            (true, us) if us > 0 => Some(Duration::from_micros(us - 1)),
            _ => None,
        }
    }

    /// The runtime of attempt `n` reported its own time.
    pub fn runtime_took(&self, n: u32, us: u64) {
        let s = self.slot(n);
        if s.n.load(Relaxed) == n {
            s.runtime_us.store(us.saturating_add(1), Relaxed);
        }
    }
}

/// One span, as `GET /v1/executions/{id}/trace` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpanView {
    pub name: &'static str,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<&'static str, String>,
}

/// An execution's trace: `GET /v1/executions/{id}/trace`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceView {
    pub trace_id: String,
    pub spans: Vec<SpanView>,
}

/// A span before formatting.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: &'static str,
    pub span_id: u64,
    pub parent: Option<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Still running when built: `end_ns` is the time it was built.
    pub open: bool,
    pub error: bool,
    pub attributes: Vec<(&'static str, String)>,
}

/// Builds the spans of `exec` from what it recorded so far. Spans still open end now (and
/// carry `nanofaas.open`). A record read back after a restart knows only its own times: it has
/// a root span alone.
pub fn spans(exec: &Execution) -> Vec<Span> {
    let t = &exec.trace;
    let now = now_ns();
    let facts = exec.trace_facts();
    let created = match t.created_ns.load(Relaxed) {
        0 => exec.created_at.saturating_mul(1_000_000),
        v => v,
    };
    let finished = match t.finished_ns.load(Relaxed) {
        0 => facts.finished_at.map(|ms| ms.saturating_mul(1_000_000)),
        v => Some(v),
    };
    let root_id = t.span_id(Part::Root);
    let mut out = Vec::with_capacity(8);
    let mut root_attrs = vec![
        ("function", exec.function.to_string()),
        ("execution.id", exec.id.to_string()),
        ("execution.mode", exec.mode.as_str().to_string()),
        ("execution.status", facts.status.as_str().to_string()),
        ("execution.attempts", facts.attempts.to_string()),
    ];
    if let Some(s) = facts.start {
        root_attrs.push(("execution.start", s.as_str().to_string()));
    }
    if facts.resumed {
        root_attrs.push(("execution.resumed", "true".into()));
    }
    let error = matches!(
        facts.status,
        nanofaas_api::ExecutionStatus::Error | nanofaas_api::ExecutionStatus::Timeout
    );
    out.push(Span {
        name: "execution",
        span_id: root_id,
        parent: t.parent(),
        start_ns: created,
        end_ns: finished.unwrap_or(now),
        open: finished.is_none(),
        error,
        attributes: root_attrs,
    });
    let queued = t.queued_ns.load(Relaxed);
    let admitted = t.admitted_ns.load(Relaxed);
    if queued != 0 {
        out.push(Span {
            name: "admission",
            span_id: t.span_id(Part::Admission),
            parent: Some(root_id),
            start_ns: created,
            end_ns: queued.max(created),
            open: false,
            error: false,
            attributes: vec![],
        });
        let end = if admitted != 0 {
            admitted
        } else {
            finished.unwrap_or(now)
        };
        out.push(Span {
            name: "queue",
            span_id: t.span_id(Part::Queue),
            parent: Some(root_id),
            start_ns: queued,
            end_ns: end.max(queued),
            open: admitted == 0 && finished.is_none(),
            error: false,
            attributes: vec![],
        });
    }
    for s in &t.attempts {
        let n = s.n.load(Relaxed);
        let start = s.start_ns.load(Relaxed);
        if n == 0 || start == 0 {
            continue;
        }
        let end_mark = s.end_ns.load(Relaxed);
        let open = end_mark == 0 && finished.is_none();
        let end = match end_mark {
            0 => finished.unwrap_or(now),
            v => v,
        }
        .max(start);
        let dispatch_id = t.span_id(Part::Dispatch(n));
        let init = s.init_us.load(Relaxed);
        let mut attrs = vec![("attempt", n.to_string())];
        attrs.push(("start", if init > 0 { "cold" } else { "warm" }.to_string()));
        out.push(Span {
            name: "dispatch",
            span_id: dispatch_id,
            parent: Some(root_id),
            start_ns: start,
            end_ns: end,
            open,
            error: false,
            attributes: attrs,
        });
        if init > 0 {
            let d = (init - 1).saturating_mul(1000);
            out.push(Span {
                name: "instance.start",
                span_id: t.span_id(Part::InstanceStart(n)),
                parent: Some(dispatch_id),
                start_ns: start,
                end_ns: start.saturating_add(d).min(end),
                open: false,
                error: false,
                attributes: vec![("start", "cold".into())],
            });
        }
        let rt = s.runtime_us.load(Relaxed);
        if rt > 0 {
            // The watchdog reports a duration; the runtime's answer is the end of the hop.
            let d = (rt - 1).saturating_mul(1000);
            out.push(Span {
                name: "runtime",
                span_id: t.span_id(Part::Runtime(n)),
                parent: Some(dispatch_id),
                start_ns: end.saturating_sub(d).max(start),
                end_ns: end,
                open: false,
                error: false,
                attributes: vec![],
            });
        }
    }
    out
}

/// The trace of `exec` as the API shows it.
pub fn view(exec: &Execution) -> TraceView {
    TraceView {
        trace_id: trace_id_hex(exec.trace.trace_id),
        spans: spans(exec)
            .into_iter()
            .map(|s| {
                let mut attributes: BTreeMap<&'static str, String> =
                    s.attributes.into_iter().collect();
                if s.open {
                    attributes.insert("nanofaas.open", "true".into());
                }
                SpanView {
                    name: s.name,
                    span_id: span_id_hex(s.span_id),
                    parent_span_id: s.parent.map(span_id_hex),
                    start_unix_nano: s.start_ns,
                    end_unix_nano: s.end_ns,
                    attributes,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let tp = TraceParent::parse(TP).unwrap();
        assert_eq!(
            trace_id_hex(tp.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span_id_hex(tp.parent_id), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(
            TraceParentBuf::new(tp.trace_id, tp.parent_id, tp.flags).as_str(),
            TP
        );
        // A later version may carry more after a dash.
        let future = format!("01{}-extra", &TP[2..]);
        assert!(TraceParent::parse(&future).is_some());
    }

    #[test]
    fn refuses_malformed_traceparents() {
        let bad = [
            "",
            "00",
            &TP.to_uppercase(),
            &TP[..54],
            &format!("{TP}-"),
            &format!("{TP}0"),
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ];
        for b in bad {
            assert_eq!(TraceParent::parse(b), None, "{b:?}");
        }
    }

    #[test]
    fn x_trace_id_is_the_trace_id_when_it_is_hex() {
        let t = Trace::new("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace_id_hex(t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        let other = Trace::new("req-7");
        assert_ne!(other.trace_id, 0);
        assert_ne!(
            Trace::new("req-7").trace_id,
            other.trace_id,
            "random per execution"
        );
    }

    #[test]
    fn span_ids_are_distinct_and_stable() {
        let t = Trace::new("x");
        let ids: std::collections::HashSet<u64> = [
            Part::Root,
            Part::Admission,
            Part::Queue,
            Part::Dispatch(1),
            Part::InstanceStart(1),
            Part::Runtime(1),
            Part::Dispatch(2),
        ]
        .iter()
        .map(|p| t.span_id(*p))
        .collect();
        assert_eq!(ids.len(), 7);
        assert_eq!(t.dispatch_span(1), t.span_id(Part::Dispatch(1)));
        let tp = TraceParent::parse(t.traceparent(2).as_str()).unwrap();
        assert_eq!(
            (tp.trace_id, tp.parent_id),
            (t.trace_id, t.dispatch_span(2))
        );
    }
}
