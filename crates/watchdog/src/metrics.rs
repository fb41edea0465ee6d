//! Prometheus metrics of the warm mode, as plain atomics rendered by hand.
//!
//! Recording is a handful of relaxed atomic adds per invocation: no lock, no allocation.

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
        s.push_str("# HELP watchdog_invocations_total Invocations by outcome.\n");
        s.push_str("# TYPE watchdog_invocations_total counter\n");
        for o in Outcome::ALL {
            let _ = writeln!(
                s,
                "watchdog_invocations_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.count(o)
            );
        }
        s.push_str("# HELP watchdog_invocation_duration_seconds Time from request to answer, rejected requests excluded.\n");
        s.push_str("# TYPE watchdog_invocation_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BOUNDS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "watchdog_invocation_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        cumulative += self.buckets[BOUNDS_US.len()].load(Relaxed);
        let _ = writeln!(
            s,
            "watchdog_invocation_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            s,
            "watchdog_invocation_duration_seconds_sum {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "watchdog_invocation_duration_seconds_count {cumulative}");
        let gauges: [(&str, &str, &str, u64); 4] = [
            (
                "watchdog_inflight",
                "gauge",
                "Invocations being served now.",
                self.inflight.load(Relaxed) as u64,
            ),
            (
                "watchdog_timeouts_total",
                "counter",
                "Invocations killed by their timeout while running.",
                self.timeouts.load(Relaxed),
            ),
            (
                "watchdog_runtime_restarts_total",
                "counter",
                "Runtime processes replaced (crash, timeout kill, max invocations).",
                self.restarts.load(Relaxed),
            ),
            (
                "watchdog_runtime_starts_total",
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
            "watchdog_invocations_total{outcome=\"success\"} 2",
            "watchdog_invocations_total{outcome=\"error\"} 0",
            "watchdog_invocations_total{outcome=\"timeout\"} 1",
            "watchdog_invocations_total{outcome=\"rejected\"} 1",
            "watchdog_invocation_duration_seconds_bucket{le=\"0.0005\"} 1",
            "watchdog_invocation_duration_seconds_bucket{le=\"0.005\"} 2",
            "watchdog_invocation_duration_seconds_bucket{le=\"60\"} 2",
            "watchdog_invocation_duration_seconds_bucket{le=\"+Inf\"} 3",
            "watchdog_invocation_duration_seconds_count 3",
            "watchdog_inflight 0",
            "watchdog_timeouts_total 1",
            "watchdog_runtime_restarts_total 1",
            "watchdog_runtime_starts_total 2",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
