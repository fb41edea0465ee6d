//! Prometheus metrics: declared once, recorded with atomics, rendered as text.
//!
//! Every family is declared in [`FUNCTION_FAMILIES`] or [`GLOBAL_FAMILIES`]; rendering walks those
//! lists, so HELP/TYPE lines cannot drift from what is recorded. A test drives every code path and
//! fails if a declared family is never emitted with a non-zero value.
//! This module records numbers only; it knows nothing of HTTP or of executions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of histogram buckets: 100 µs to 60 s.
pub const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The per-bucket counts (not cumulative) of [`BUCKETS`], and the total count (which also
    /// counts observations above the last bucket).
    pub fn snapshot(&self) -> ([u64; BUCKETS.len()], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            self.count.load(Relaxed),
        )
    }
}

/// Metrics of one function.
#[derive(Default)]
pub struct FunctionMetrics {
    pub enqueue: Counter,
    pub dispatch: Counter,
    pub success: Counter,
    pub error: Counter,
    pub retry: Counter,
    pub timeout: Counter,
    pub queue_rejected: Counter,
    pub rate_limited: Counter,
    pub queue_depth: Gauge,
    pub inflight: Gauge,
    pub cold_start: Counter,
    pub warm_start: Counter,
    pub start_failed: Counter,
    pub out_of_memory: Counter,
    pub latency: Histogram,
    pub queue_wait: Histogram,
    pub e2e_latency: Histogram,
    pub cold_start_duration: Histogram,
    pub prewarmed_start: Counter,
    pub prewarmed_start_duration: Histogram,
    pub runtime: Histogram,
}

pub enum Value<'a> {
    Counter(&'a Counter),
    Gauge(&'a Gauge),
    Histogram(&'a Histogram),
}

pub struct Family<T> {
    pub name: &'static str,
    pub help: &'static str,
    pub get: fn(&T) -> Value<'_>,
}

macro_rules! fam {
    ($name:literal, $help:literal, $kind:ident, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            get: |m| Value::$kind(&m.$field),
        }
    };
}

/// Per-function families, labelled `function="<name>"`.
pub static FUNCTION_FAMILIES: &[Family<FunctionMetrics>] = &[
    fam!(
        "function_enqueue_total",
        "Asynchronous invocations accepted.",
        Counter,
        enqueue
    ),
    fam!(
        "function_dispatch_total",
        "Attempts dispatched to an instance or endpoint.",
        Counter,
        dispatch
    ),
    fam!(
        "function_success_total",
        "Executions that finished successfully.",
        Counter,
        success
    ),
    fam!(
        "function_error_total",
        "Executions that finished with an error (timeouts included).",
        Counter,
        error
    ),
    fam!(
        "function_retry_total",
        "Attempts retried after a retryable failure.",
        Counter,
        retry
    ),
    fam!(
        "function_timeout_total",
        "Executions that finished by timing out.",
        Counter,
        timeout
    ),
    fam!(
        "function_queue_rejected_total",
        "Invocations refused by backpressure (queue full, estimated wait, queue timeout).",
        Counter,
        queue_rejected
    ),
    fam!(
        "function_rate_limited_total",
        "Invocations refused by the function's or the global rate limit.",
        Counter,
        rate_limited
    ),
    fam!(
        "function_queue_depth",
        "Invocations waiting for a free slot.",
        Gauge,
        queue_depth
    ),
    fam!(
        "function_inflight",
        "Invocations holding a slot (dispatching or running).",
        Gauge,
        inflight
    ),
    fam!(
        "function_cold_start_total",
        "Dispatches that waited for a new instance to start.",
        Counter,
        cold_start
    ),
    fam!(
        "function_prewarmed_start_total",
        "Dispatches that waited for a prewarmed instance to be specialized for the function.",
        Counter,
        prewarmed_start
    ),
    fam!(
        "function_warm_start_total",
        "Dispatches served by an already running instance.",
        Counter,
        warm_start
    ),
    fam!(
        "function_start_failed_total",
        "Dispatches that reached no instance: the start they waited for failed.",
        Counter,
        start_failed
    ),
    fam!(
        "function_out_of_memory_total",
        "Attempts that ended OUT_OF_MEMORY: the function went over resources.memory and was killed.",
        Counter,
        out_of_memory
    ),
    fam!(
        "function_latency_seconds",
        "Duration of one dispatched attempt.",
        Histogram,
        latency
    ),
    fam!(
        "function_queue_wait_seconds",
        "Time from acceptance to getting a slot.",
        Histogram,
        queue_wait
    ),
    fam!(
        "function_e2e_latency_seconds",
        "Time from acceptance to the final outcome.",
        Histogram,
        e2e_latency
    ),
    fam!(
        "function_cold_start_seconds",
        "Time from asking for a new instance to it being ready.",
        Histogram,
        cold_start_duration
    ),
    fam!(
        "function_prewarmed_start_seconds",
        "Time from taking a prewarmed instance to it being specialized (its function's code loaded).",
        Histogram,
        prewarmed_start_duration
    ),
    fam!(
        "function_runtime_seconds",
        "The runtime's own time in one attempt, as the instance's watchdog measured it (warm instances: DEPLOYMENT functions).",
        Histogram,
        runtime
    ),
];

/// Process-wide metrics.
#[derive(Default)]
pub struct GlobalMetrics {
    pub callbacks_recorded: Counter,
    pub callbacks_ignored: Counter,
    pub callbacks_rejected: Counter,
    pub executions_stored: Gauge,
    pub executions_evicted: Counter,
    pub idempotent_replays: Counter,
    pub http_requests: Counter,
    pub instances_started: Counter,
    pub instances_stopped: Counter,
    pub instances_failed: Counter,
    pub instances_running: Gauge,
    pub traces_exported: Counter,
    pub traces_dropped: Counter,
}

pub static GLOBAL_FAMILIES: &[Family<GlobalMetrics>] = &[
    fam!(
        "callbacks_recorded_total",
        "Callbacks whose result was recorded.",
        Counter,
        callbacks_recorded
    ),
    fam!(
        "callbacks_ignored_total",
        "Callbacks ignored because the attempt was stale or already had a result.",
        Counter,
        callbacks_ignored
    ),
    fam!(
        "callbacks_rejected_total",
        "Callbacks refused for a missing or wrong token.",
        Counter,
        callbacks_rejected
    ),
    fam!(
        "executions_stored",
        "Execution records currently kept.",
        Gauge,
        executions_stored
    ),
    fam!(
        "executions_evicted_total",
        "Execution records dropped by TTL or by the record and payload caps.",
        Counter,
        executions_evicted
    ),
    fam!(
        "idempotent_replays_total",
        "Invocations answered from an earlier execution with the same idempotency key.",
        Counter,
        idempotent_replays
    ),
    fam!(
        "http_requests_total",
        "HTTP requests received by the API.",
        Counter,
        http_requests
    ),
    fam!(
        "instances_started_total",
        "Function instances started by a provider.",
        Counter,
        instances_started
    ),
    fam!(
        "instances_stopped_total",
        "Function instances stopped (idle, recycled, replaced, deleted, shut down).",
        Counter,
        instances_stopped
    ),
    fam!(
        "instances_failed_total",
        "Function instances that failed to start or died.",
        Counter,
        instances_failed
    ),
    fam!(
        "instances_running",
        "Function instances currently starting or running.",
        Gauge,
        instances_running
    ),
    fam!(
        "traces_exported_total",
        "Execution traces delivered to the OTLP collector (telemetry.otlp_endpoint).",
        Counter,
        traces_exported
    ),
    fam!(
        "traces_dropped_total",
        "Execution traces not exported: the export queue was full or the collector failed.",
        Counter,
        traces_dropped
    ),
];

/// All metrics of the control plane.
#[derive(Default)]
pub struct Metrics {
    pub global: GlobalMetrics,
    functions: RwLock<BTreeMap<String, Arc<FunctionMetrics>>>,
}

impl Metrics {
    /// The metrics of `name`, created on first use; kept across a spec replacement.
    pub fn function(&self, name: &str) -> Arc<FunctionMetrics> {
        if let Some(m) = self.functions.read().unwrap().get(name) {
            return m.clone();
        }
        self.functions
            .write()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Every function's metrics, by name (for the dashboard's sampler).
    pub fn functions(&self) -> Vec<(String, Arc<FunctionMetrics>)> {
        self.functions
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets a deleted function's series.
    pub fn remove_function(&self, name: &str) {
        self.functions.write().unwrap().remove(name);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        for f in GLOBAL_FAMILIES {
            header(&mut out, f.name, f.help, &(f.get)(&self.global));
            sample(&mut out, f.name, "", &(f.get)(&self.global));
        }
        let functions: Vec<(String, Arc<FunctionMetrics>)> = self
            .functions
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for f in FUNCTION_FAMILIES {
            let probe = FunctionMetrics::default();
            header(&mut out, f.name, f.help, &(f.get)(&probe));
            for (name, m) in &functions {
                let label = format!("function=\"{}\"", escape_label(name));
                sample(&mut out, f.name, &label, &(f.get)(m));
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, v: &Value<'_>) {
    let kind = match v {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, v: &Value<'_>) {
    let braces = |extra: &str| -> String {
        match (labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{{{labels}}}"),
            (true, false) => format!("{{{extra}}}"),
            (false, false) => format!("{{{labels},{extra}}}"),
        }
    };
    match v {
        Value::Counter(c) => {
            let _ = writeln!(out, "{name}{} {}", braces(""), c.get());
        }
        Value::Gauge(g) => {
            let _ = writeln!(out, "{name}{} {}", braces(""), g.get());
        }
        Value::Histogram(h) => {
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    braces(&format!("le=\"{b}\""))
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{} {count}", braces("le=\"+Inf\""));
            let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{} {sum}", braces(""));
            let _ = writeln!(out, "{name}_count{} {count}", braces(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_declared_families() {
        let m = Metrics::default();
        let f = m.function("echo");
        f.success.inc();
        f.latency.observe(Duration::from_micros(300));
        f.latency.observe(Duration::from_secs(100));
        let text = m.render();
        assert!(text.contains("# TYPE function_success_total counter"));
        assert!(text.contains("function_success_total{function=\"echo\"} 1"));
        assert!(text.contains("function_latency_seconds_bucket{function=\"echo\",le=\"0.0005\"} 1"));
        assert!(text.contains("function_latency_seconds_bucket{function=\"echo\",le=\"+Inf\"} 2"));
        assert!(text.contains("function_latency_seconds_count{function=\"echo\"} 2"));
        for fam in FUNCTION_FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {} ", fam.name)),
                "{}",
                fam.name
            );
        }
        m.remove_function("echo");
        assert!(!m.render().contains("function=\"echo\""));
    }

    /// What one invocation costs the metrics: 1e6 times the success counter and the latency
    /// histogram through the function's held handle (the dispatch path holds
    /// `registry::Function::metrics`; it never looks a series up by name), and for comparison the
    /// same through a by-name lookup. Prints ns/op; run with
    /// `cargo test -p nanofaas-control-plane --lib hot_path_cost -- --ignored --nocapture`
    /// (an optimised build gives the meaningful figures).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn hot_path_cost() {
        use std::hint::black_box;
        use std::time::Instant;
        const N: u32 = 1_000_000;
        let m = Metrics::default();
        for i in 0..64 {
            m.function(&format!("fn-{i}"));
        }
        let f = m.function("fn-7");
        let d = Duration::from_micros(750);
        let per_op = |t: Instant| t.elapsed().as_nanos() as f64 / f64::from(N);
        let t = Instant::now();
        for _ in 0..N {
            black_box(&f).success.inc();
        }
        let counter = per_op(t);
        let t = Instant::now();
        for _ in 0..N {
            black_box(&f).latency.observe(black_box(d));
        }
        let histogram = per_op(t);
        let t = Instant::now();
        for _ in 0..N {
            let f = black_box(&f);
            f.success.inc();
            f.latency.observe(black_box(d));
        }
        let both = per_op(t);
        let t = Instant::now();
        for _ in 0..N {
            let f = m.function(black_box("fn-7"));
            f.success.inc();
            f.latency.observe(black_box(d));
        }
        let by_name = per_op(t);
        assert_eq!(f.success.get(), 3 * u64::from(N));
        eprintln!(
            "held handle: counter {counter:.1} ns/op, histogram {histogram:.1} ns/op, both {both:.1} ns/op; looked up by name each time: {by_name:.1} ns/op"
        );
    }
}
