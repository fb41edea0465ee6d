//! Prometheus metrics: declared once, recorded with atomics, encoded by `prometheus-client`.
//!
//! Every family is declared in [`FUNCTION_FAMILIES`] or [`GLOBAL_FAMILIES`]: a base name, a kind
//! and a HELP text. One [`Collector`] walks those lists on each scrape and hands every value to
//! `prometheus-client`'s encoders, which write the names, HELP/TYPE lines, labels and numbers, so
//! what is declared is what is emitted. Tests drive every code path and fail if a declared family
//! is never emitted with a non-zero value, or if an emitted one is missing from docs/metrics.md.
//!
//! Names: every exposed name is `nanofaas_<base>`, plus `_total` for a counter and `_seconds` for a
//! histogram (all histograms here measure durations); [`Family::name`] gives it.
//!
//! Formats: [`Metrics::render`] writes the Prometheus text format 0.0.4 (what `curl`, greps and
//! older scrapers read); [`Metrics::render_openmetrics`] writes OpenMetrics 1.0 text; the API
//! picks one by the scrape's `Accept` header ([`Format::from_accept`]).
//!
//! Hot path: a function's series are one [`FunctionMetrics`] created when it is registered and
//! held by the registry's `Function`, so counting an invocation is a few relaxed atomic adds on
//! handles already in hand: no label lookup, no lock, no allocation. Counters and gauges are
//! `prometheus-client`'s own; the histogram is ours, lock-free (the crate's takes a mutex per
//! observation) and readable bucket by bucket by the dashboard's sampler (the crate's keeps its
//! buckets private).
//!
//! This module records numbers only; it knows nothing of HTTP or of executions.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{counter, gauge, MetricType};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The first part of every exposed name (`nanofaas_...`).
pub const PREFIX: &str = "nanofaas";

/// Upper bounds (seconds) of histogram buckets: 100 µs to 60 s.
pub const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// [`BUCKETS`] in nanoseconds, for comparing a `Duration` without floating point.
const BUCKETS_NS: [u64; BUCKETS.len()] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// The media type of [`Metrics::render`].
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The media type of [`Metrics::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotonic count: `prometheus-client`'s counter behind the signatures callers use.
#[derive(Default, Debug)]
pub struct Counter(counter::Counter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl EncodeMetric for Counter {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A value that goes up and down: `prometheus-client`'s gauge behind the signatures callers use.
#[derive(Default, Debug)]
pub struct Gauge(gauge::Gauge);

impl Gauge {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn dec(&self) {
        self.0.dec();
    }
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

impl EncodeMetric for Gauge {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A duration histogram over [`BUCKETS`]: one relaxed add to the bucket and one to the sum per
/// observation. The count is the sum of the buckets (the last slot holds observations above the
/// last bound), so a scrape always sees buckets and count that agree.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The per-bucket counts (not cumulative) of [`BUCKETS`], and the total count (which also
    /// counts observations above the last bucket).
    pub fn snapshot(&self) -> ([u64; BUCKETS.len()], u64) {
        let all: [u64; BUCKETS.len() + 1] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        (std::array::from_fn(|i| all[i]), all.iter().sum::<u64>())
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let mut count = 0;
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let n = self.buckets[i].load(Relaxed);
            count += n;
            (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n)
        });
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
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

/// What a family holds, and so its TYPE and name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        }
    }
    fn unit(self) -> Option<&'static Unit> {
        static SECONDS: Unit = Unit::Seconds;
        (self == Kind::Histogram).then_some(&SECONDS)
    }
    /// `counter`, `gauge` or `histogram`, as in a TYPE line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

pub struct Value<'a>(&'a dyn EncodeMetric);

pub struct Family<T> {
    /// The name without the prefix and the kind's suffix (`function_success`).
    pub base: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub get: fn(&T) -> Value<'_>,
}

impl<T> Family<T> {
    /// The exposed name: `nanofaas_function_success_total`, `nanofaas_function_latency_seconds`.
    pub fn name(&self) -> String {
        let suffix = match self.kind {
            Kind::Counter => "_total",
            Kind::Gauge => "",
            Kind::Histogram => "_seconds",
        };
        format!("{PREFIX}_{}{suffix}", self.base)
    }
}

macro_rules! fam {
    ($base:literal, $help:literal, $kind:ident, $field:ident) => {
        Family {
            base: $base,
            kind: Kind::$kind,
            help: $help,
            get: |m| Value(&m.$field),
        }
    };
}

/// Per-function families, labelled `function="<name>"`.
pub static FUNCTION_FAMILIES: &[Family<FunctionMetrics>] = &[
    fam!(
        "function_enqueue",
        "Asynchronous invocations accepted.",
        Counter,
        enqueue
    ),
    fam!(
        "function_dispatch",
        "Attempts dispatched to an instance or endpoint.",
        Counter,
        dispatch
    ),
    fam!(
        "function_success",
        "Executions that finished successfully.",
        Counter,
        success
    ),
    fam!(
        "function_error",
        "Executions that finished with an error (timeouts included).",
        Counter,
        error
    ),
    fam!(
        "function_retry",
        "Attempts retried after a retryable failure.",
        Counter,
        retry
    ),
    fam!(
        "function_timeout",
        "Executions that finished by timing out.",
        Counter,
        timeout
    ),
    fam!(
        "function_queue_rejected",
        "Invocations refused by backpressure (queue full, estimated wait, queue timeout).",
        Counter,
        queue_rejected
    ),
    fam!(
        "function_rate_limited",
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
        "function_cold_start",
        "Dispatches that waited for a new instance to start.",
        Counter,
        cold_start
    ),
    fam!(
        "function_prewarmed_start",
        "Dispatches that waited for a prewarmed instance to be specialized for the function.",
        Counter,
        prewarmed_start
    ),
    fam!(
        "function_warm_start",
        "Dispatches served by an already running instance.",
        Counter,
        warm_start
    ),
    fam!(
        "function_start_failed",
        "Dispatches that reached no instance: the start they waited for failed.",
        Counter,
        start_failed
    ),
    fam!(
        "function_out_of_memory",
        "Attempts that ended OUT_OF_MEMORY: the function went over resources.memory and was killed.",
        Counter,
        out_of_memory
    ),
    fam!(
        "function_latency",
        "Duration of one dispatched attempt.",
        Histogram,
        latency
    ),
    fam!(
        "function_queue_wait",
        "Time from acceptance to getting a slot.",
        Histogram,
        queue_wait
    ),
    fam!(
        "function_e2e_latency",
        "Time from acceptance to the final outcome.",
        Histogram,
        e2e_latency
    ),
    fam!(
        "function_cold_start",
        "Time from asking for a new instance to it being ready.",
        Histogram,
        cold_start_duration
    ),
    fam!(
        "function_prewarmed_start",
        "Time from taking a prewarmed instance to it being specialized (its function's code loaded).",
        Histogram,
        prewarmed_start_duration
    ),
    fam!(
        "function_runtime",
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
        "callbacks_recorded",
        "Callbacks whose result was recorded.",
        Counter,
        callbacks_recorded
    ),
    fam!(
        "callbacks_ignored",
        "Callbacks ignored because the attempt was stale or already had a result.",
        Counter,
        callbacks_ignored
    ),
    fam!(
        "callbacks_rejected",
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
        "executions_evicted",
        "Execution records dropped by TTL or by the record and payload caps.",
        Counter,
        executions_evicted
    ),
    fam!(
        "idempotent_replays",
        "Invocations answered from an earlier execution with the same idempotency key.",
        Counter,
        idempotent_replays
    ),
    fam!(
        "http_requests",
        "HTTP requests received by the API.",
        Counter,
        http_requests
    ),
    fam!(
        "instances_started",
        "Function instances started by a provider.",
        Counter,
        instances_started
    ),
    fam!(
        "instances_stopped",
        "Function instances stopped (idle, recycled, replaced, deleted, shut down).",
        Counter,
        instances_stopped
    ),
    fam!(
        "instances_failed",
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
        "traces_exported",
        "Execution traces delivered to the OTLP collector (telemetry.otlp_endpoint).",
        Counter,
        traces_exported
    ),
    fam!(
        "traces_dropped",
        "Execution traces not exported: the export queue was full or the collector failed.",
        Counter,
        traces_dropped
    ),
];

type FunctionMap = RwLock<BTreeMap<String, Arc<FunctionMetrics>>>;

/// The one collector of the registry: the declared families over the current state.
struct Families {
    global: Arc<GlobalMetrics>,
    functions: Arc<FunctionMap>,
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Families")
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for f in GLOBAL_FAMILIES {
            let m =
                encoder.encode_descriptor(f.base, f.help, f.kind.unit(), f.kind.metric_type())?;
            (f.get)(&self.global).0.encode(m)?;
        }
        // Encoded from a copy of the handles: registrations never wait for a scrape.
        let functions: Vec<(String, Arc<FunctionMetrics>)> = self
            .functions
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for f in FUNCTION_FAMILIES {
            let mut m =
                encoder.encode_descriptor(f.base, f.help, f.kind.unit(), f.kind.metric_type())?;
            for (name, fm) in &functions {
                let labels = [("function", name.as_str())];
                (f.get)(fm).0.encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition formats `/metrics` can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it at least as much as for plain text (as
    /// Prometheus does by default); the text format otherwise, and for no header or `*/*`.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let (mut open, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// All metrics of the control plane.
pub struct Metrics {
    pub global: Arc<GlobalMetrics>,
    functions: Arc<FunctionMap>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let global = Arc::new(GlobalMetrics::default());
        let functions = Arc::new(FunctionMap::default());
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Families {
            global: global.clone(),
            functions: functions.clone(),
        }));
        Metrics {
            global,
            functions,
            registry,
        }
    }
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

    /// The Prometheus text format 0.0.4 ([`TEXT_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16384);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// OpenMetrics 1.0 text, `# EOF` included ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16384);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The exposition in `format`.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::Text => self.render(),
            Format::OpenMetrics => self.render_openmetrics(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// One sample line: its name, its labels (unescaped, in a sorted map, since OpenMetrics
    /// writes `le` first and the text format last) and its value.
    fn sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("no value: {line}"),
        };
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (key, r) = rest.split_once("=\"").expect("key=\"value\"");
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next().expect("a closed label value") {
                        (_, '\\') => match chars.next().expect("an escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                assert!(labels.insert(key.to_string(), value).is_none(), "{line}");
                rest = r[end + 1..].strip_prefix(',').unwrap_or(&r[end + 1..]);
            }
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        (name.to_string(), labels, v)
    }

    /// A strict reading of the text format: every sample belongs to a family announced by HELP
    /// and TYPE before it, counters end `_total`, histogram buckets are cumulative and end with
    /// `+Inf` equal to `_count`. Returns the families (name → type) and the samples (by name and
    /// labels, `{k="v",...}` sorted).
    fn parse(text: &str, openmetrics: bool) -> (BTreeMap<String, String>, HashMap<String, f64>) {
        let mut types = BTreeMap::new();
        let mut samples = HashMap::new();
        let mut current: Option<(String, String)> = None;
        // Per histogram series (family and labels but `le`): its buckets in order, its count.
        type Series = (String, BTreeMap<String, String>);
        let mut buckets: BTreeMap<Series, Vec<(String, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<Series, f64> = BTreeMap::new();
        let body = if openmetrics {
            text.strip_suffix("# EOF\n")
                .expect("OpenMetrics ends with # EOF")
        } else {
            assert!(!text.contains("# EOF"), "no EOF marker in the 0.0.4 format");
            text
        };
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(!help.is_empty(), "{line}");
                current = Some((name.to_string(), String::new()));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(
                    current.as_ref().map(|c| c.0.as_str()),
                    Some(name),
                    "TYPE follows its HELP: {line}"
                );
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{line}"
                );
                current = Some((name.to_string(), kind.to_string()));
                continue;
            }
            if openmetrics && line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (name, mut labels, v) = sample(line);
            let (family, kind) = current.clone().expect("a sample after a TYPE");
            let ok = match kind.as_str() {
                "counter" if openmetrics => name == format!("{family}_total"),
                "counter" => name == family && name.ends_with("_total"),
                "gauge" => name == family,
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name),
                _ => false,
            };
            assert!(ok, "{line} does not belong to {family} ({kind})");
            let key = format!(
                "{name}{{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(
                samples.insert(key, v).is_none(),
                "one sample per series: {line}"
            );
            if name == format!("{family}_bucket") {
                let le = labels.remove("le").expect("a bucket has le");
                buckets.entry((family, labels)).or_default().push((le, v));
            } else if kind == "histogram" && name.ends_with("_count") {
                counts.insert((family, labels), v);
            }
        }
        assert_eq!(
            buckets.keys().collect::<Vec<_>>(),
            counts.keys().collect::<Vec<_>>()
        );
        for (series, bs) in &buckets {
            assert!(
                bs.windows(2).all(|w| w[0].1 <= w[1].1),
                "cumulative: {series:?} {bs:?}"
            );
            assert_eq!(bs.len(), BUCKETS.len() + 1, "{series:?}");
            assert_eq!(
                bs.last().unwrap(),
                &("+Inf".to_string(), counts[series]),
                "{series:?}"
            );
        }
        (types, samples)
    }

    fn exposed(kind: Kind, base: &str, openmetrics: bool) -> String {
        match (kind, openmetrics) {
            (Kind::Counter, true) => format!("{PREFIX}_{base}"),
            (Kind::Counter, false) => format!("{PREFIX}_{base}_total"),
            (Kind::Gauge, _) => format!("{PREFIX}_{base}"),
            (Kind::Histogram, _) => format!("{PREFIX}_{base}_seconds"),
        }
    }

    #[test]
    fn renders_declared_families() {
        let m = Metrics::default();
        let f = m.function("echo");
        f.success.inc();
        f.latency.observe(Duration::from_micros(300));
        f.latency.observe(Duration::from_secs(100));
        m.global.traces_exported.add(3);
        m.global.instances_running.set(2);
        let text = m.render();
        assert!(text.contains("# TYPE nanofaas_function_success_total counter\n"));
        assert!(text.contains("nanofaas_function_success_total{function=\"echo\"} 1\n"));
        assert!(text.contains(
            "nanofaas_function_latency_seconds_bucket{function=\"echo\",le=\"0.0005\"} 1\n"
        ));
        assert!(text
            .contains("nanofaas_function_latency_seconds_bucket{function=\"echo\",le=\"60\"} 1\n"));
        assert!(text.contains(
            "nanofaas_function_latency_seconds_bucket{function=\"echo\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("nanofaas_function_latency_seconds_count{function=\"echo\"} 2\n"));
        assert!(
            text.contains("nanofaas_function_latency_seconds_sum{function=\"echo\"} 100.0003\n")
        );
        assert!(text.contains("nanofaas_traces_exported_total 3\n"));
        assert!(text.contains("nanofaas_instances_running 2\n"));
        let (types, _) = parse(&text, false);
        for (kind, base) in FUNCTION_FAMILIES
            .iter()
            .map(|f| (f.kind, f.base))
            .chain(GLOBAL_FAMILIES.iter().map(|f| (f.kind, f.base)))
        {
            let name = exposed(kind, base, false);
            assert_eq!(
                types.get(&name).map(String::as_str),
                Some(kind.as_str()),
                "{name}"
            );
        }
        assert_eq!(
            types.len(),
            FUNCTION_FAMILIES.len() + GLOBAL_FAMILIES.len(),
            "every family once, nothing else: {types:?}"
        );
        m.remove_function("echo");
        assert!(!m.render().contains("function=\"echo\""));
    }

    #[test]
    fn family_names_are_what_the_encoder_writes() {
        let m = Metrics::default();
        m.function("f");
        let (types, _) = parse(&m.render(), false);
        let declared: BTreeSet<String> = FUNCTION_FAMILIES
            .iter()
            .map(Family::name)
            .chain(GLOBAL_FAMILIES.iter().map(Family::name))
            .collect();
        let emitted: BTreeSet<String> = types.keys().cloned().collect();
        assert_eq!(declared, emitted);
    }

    #[test]
    fn every_emitted_name_starts_with_the_prefix() {
        let m = Metrics::default();
        m.function("f").retry.inc();
        for text in [m.render(), m.render_openmetrics()] {
            for line in text.lines().filter(|l| *l != "# EOF") {
                let name = line
                    .strip_prefix("# HELP ")
                    .or_else(|| line.strip_prefix("# TYPE "))
                    .or_else(|| line.strip_prefix("# UNIT "))
                    .unwrap_or(line);
                assert!(name.starts_with("nanofaas_"), "{line}");
            }
        }
    }

    #[test]
    fn openmetrics_is_well_formed_too() {
        let m = Metrics::default();
        let f = m.function("a \"quoted\"\\name\n");
        f.error.inc();
        f.e2e_latency.observe(Duration::from_millis(3));
        let text = m.render_openmetrics();
        let (types, samples) = parse(&text, true);
        assert_eq!(
            types.get("nanofaas_function_error").map(String::as_str),
            Some("counter")
        );
        assert!(text.contains("# UNIT nanofaas_function_e2e_latency_seconds seconds\n"));
        // Label values are escaped.
        assert_eq!(
            samples.get("nanofaas_function_error_total{function=\"a \\\"quoted\\\"\\\\name\\n\"}"),
            Some(&1.0),
            "{text}"
        );
        let (_, samples) = parse(&m.render(), false);
        assert_eq!(
            samples.get("nanofaas_function_error_total{function=\"a \\\"quoted\\\"\\\\name\\n\"}"),
            Some(&1.0)
        );
    }

    #[test]
    fn histogram_bounds_are_inclusive_and_exact() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // exactly the first bound
        h.observe(Duration::from_nanos(100_001)); // just above it
        h.observe(Duration::from_secs(60));
        h.observe(Duration::from_secs(61)); // above every bound
        h.observe(Duration::MAX); // saturates, never panics
        let (b, count) = h.snapshot();
        assert_eq!((b[0], b[1], b[BUCKETS.len() - 1], count), (1, 1, 1, 5));
        assert_eq!(h.count(), 5);
        for (ns, s) in BUCKETS_NS.iter().zip(BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, s);
        }
    }

    #[test]
    fn the_scrape_picks_the_format() {
        use Format::*;
        let cases = [
            (None, Text),
            (Some("*/*"), Text),
            (Some("text/plain"), Text),
            (Some("application/openmetrics-text"), OpenMetrics),
            // Prometheus 2's default.
            (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), OpenMetrics),
            // Prometheus 3's, without protobuf.
            (Some("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"), OpenMetrics),
            (Some("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"), Text),
            (Some("application/openmetrics-text;q=0"), Text),
            (Some("application/json"), Text),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::from_accept(accept), want, "{accept:?}");
        }
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
        // For comparison, what this module does not do: prometheus-client's own Family (a
        // label-set hash lookup per call) and its Histogram (a mutex per observation).
        use prometheus_client::metrics::family::Family as CrateFamily;
        use prometheus_client::metrics::histogram::Histogram as CrateHistogram;
        type Labels = Vec<(String, String)>;
        let counters = CrateFamily::<Labels, counter::Counter>::default();
        let histograms: CrateFamily<Labels, CrateHistogram, fn() -> CrateHistogram> =
            CrateFamily::new_with_constructor(|| CrateHistogram::new(BUCKETS));
        for i in 0..64 {
            let l = vec![("function".to_string(), format!("fn-{i}"))];
            counters.get_or_create(&l).inc();
            let _ = histograms.get_or_create(&l);
        }
        let labels = vec![("function".to_string(), "fn-7".to_string())];
        let t = Instant::now();
        for _ in 0..N {
            counters.get_or_create(black_box(&labels)).inc();
            histograms
                .get_or_create(black_box(&labels))
                .observe(black_box(d).as_secs_f64());
        }
        let crate_family = per_op(t);
        let held = CrateHistogram::new(BUCKETS);
        let t = Instant::now();
        for _ in 0..N {
            black_box(&held).observe(black_box(d).as_secs_f64());
        }
        let crate_histogram = per_op(t);
        eprintln!(
            "prometheus-client: Family lookup per call (counter + histogram) {crate_family:.1} ns/op; its Histogram, held: {crate_histogram:.1} ns/op"
        );
    }
}
