//! Prometheus metrics of the warm mode, as plain atomics rendered by hand.
//!
//! Recording is a handful of relaxed atomic adds per invocation: no lock, no allocation.
//! Names follow the control plane's rules (docs/metrics.md): every one starts with
//! `nanofaas_watchdog_`, counters end `_total`, the histogram `_seconds`. The watchdog keeps this
//! small renderer instead of the control plane's `prometheus-client`: it is copied into every
//! function image and started with every instance, so its binary and dependency tree stay small,
//! and six fixed families with one fixed label need no registry, escaping or second format. The
//! test below checks the README's table against what is rendered.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The function answered successfully.
    Success,
    /// The function failed, the runtime was lost, or no runtime could be started.
    Error,
    /// The invocation's timeout passed (waiting for a slot or running).
    Timeout,
    /// Refused before anything ran: a bad request, or the watchdog is shutting down.
    Rejected,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
        }
    }
}

/// Upper bounds of the duration histogram, in microseconds.
const BOUNDS_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 4],
    /// Per-bucket (not cumulative) counts; the last slot is +Inf.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    pub inflight: AtomicUsize,
    /// Invocations whose timeout passed while running (the runtime or command was killed).
    pub timeouts: AtomicU64,
    /// Runtime processes replaced (after a crash, a timeout kill or max invocations).
    pub restarts: AtomicU64,
    /// Runtime processes started, the first one included.
    pub starts: AtomicU64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts an invocation's outcome, and its duration unless it was rejected.
    pub fn record(&self, outcome: Outcome, elapsed: Duration) {
        self.outcomes[outcome as usize].fetch_add(1, Relaxed);
        if outcome == Outcome::Rejected {
            return;
        }
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let idx = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        s.push_str("# HELP nanofaas_watchdog_invocations_total Invocations by outcome.\n");
        s.push_str("# TYPE nanofaas_watchdog_invocations_total counter\n");
        for o in Outcome::ALL {
            let _ = writeln!(
                s,
                "nanofaas_watchdog_invocations_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.count(o)
            );
        }
        s.push_str("# HELP nanofaas_watchdog_invocation_duration_seconds Time from request to answer, rejected requests excluded.\n");
        s.push_str("# TYPE nanofaas_watchdog_invocation_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BOUNDS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "nanofaas_watchdog_invocation_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        cumulative += self.buckets[BOUNDS_US.len()].load(Relaxed);
        let _ = writeln!(
            s,
            "nanofaas_watchdog_invocation_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            s,
            "nanofaas_watchdog_invocation_duration_seconds_sum {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "nanofaas_watchdog_invocation_duration_seconds_count {cumulative}"
        );
        let gauges: [(&str, &str, &str, u64); 4] = [
            (
                "nanofaas_watchdog_inflight",
                "gauge",
                "Invocations being served now.",
                self.inflight.load(Relaxed) as u64,
            ),
            (
                "nanofaas_watchdog_timeouts_total",
                "counter",
                "Invocations killed by their timeout while running.",
                self.timeouts.load(Relaxed),
            ),
            (
                "nanofaas_watchdog_runtime_restarts_total",
                "counter",
                "Runtime processes replaced (crash, timeout kill, max invocations).",
                self.restarts.load(Relaxed),
            ),
            (
                "nanofaas_watchdog_runtime_starts_total",
                "counter",
                "Runtime processes started.",
                self.starts.load(Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_and_buckets_are_cumulative() {
        let m = Metrics::new();
        m.record(Outcome::Success, Duration::from_micros(300));
        m.record(Outcome::Success, Duration::from_millis(3));
        m.record(Outcome::Timeout, Duration::from_secs(100));
        m.record(Outcome::Rejected, Duration::from_secs(1));
        m.timeouts.fetch_add(1, Relaxed);
        m.starts.fetch_add(2, Relaxed);
        m.restarts.fetch_add(1, Relaxed);
        let text = m.render();
        for needle in [
            "nanofaas_watchdog_invocations_total{outcome=\"success\"} 2",
            "nanofaas_watchdog_invocations_total{outcome=\"error\"} 0",
            "nanofaas_watchdog_invocations_total{outcome=\"timeout\"} 1",
            "nanofaas_watchdog_invocations_total{outcome=\"rejected\"} 1",
            "nanofaas_watchdog_invocation_duration_seconds_bucket{le=\"0.0005\"} 1",
            "nanofaas_watchdog_invocation_duration_seconds_bucket{le=\"0.005\"} 2",
            "nanofaas_watchdog_invocation_duration_seconds_bucket{le=\"60\"} 2",
            "nanofaas_watchdog_invocation_duration_seconds_bucket{le=\"+Inf\"} 3",
            "nanofaas_watchdog_invocation_duration_seconds_count 3",
            "nanofaas_watchdog_inflight 0",
            "nanofaas_watchdog_timeouts_total 1",
            "nanofaas_watchdog_runtime_restarts_total 1",
            "nanofaas_watchdog_runtime_starts_total 2",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // Every sample line is `name{labels} number`, of a family announced before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| *b == family)
                .unwrap_or(name);
            assert_eq!(base, family, "{line}");
        }
    }

    /// The same naming rules as the control plane's, and the README lists exactly these families.
    #[test]
    fn names_carry_the_prefix_and_the_readme_lists_them() {
        let text = Metrics::new().render();
        let mut rendered = Vec::new();
        for line in text.lines() {
            let name = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            assert!(name.starts_with("nanofaas_watchdog_"), "{line}");
            if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
            {
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert_eq!(kind == "histogram", name.ends_with("_seconds"), "{line}");
                rendered.push((name.to_string(), kind.to_string()));
            }
        }
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let documented: Vec<(String, String)> = readme
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix("`nanofaas_watchdog_")?;
                let name = name.split(['`', '{']).next()?;
                Some((
                    format!("nanofaas_watchdog_{name}"),
                    cells.get(2)?.to_string(),
                ))
            })
            .collect();
        assert_eq!(
            documented, rendered,
            "crates/watchdog/README.md's metrics table"
        );
    }
}
