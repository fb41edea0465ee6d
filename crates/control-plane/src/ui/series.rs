//! Per-function time series for the dashboard, kept in bounded in-memory ring buffers.
//!
//! Nothing here runs on the invocation path: a background task ([`super::Dashboard::start`])
//! samples the Prometheus counters and histograms that [`crate::metrics`] already keeps, once
//! per [`RESOLUTION`], and stores the differences. The cost of an invocation is unchanged.
//!
//! Bounds: [`POINTS`] points per function (5 minutes at 1 s), at most [`MAX_FUNCTIONS`]
//! functions tracked (the first ones by name; the others are counted as untracked), a point is
//! [`POINT_BYTES`] (48) bytes: at most 256 x 300 x 48 B, about 3.5 MiB, in all. Nothing is
//! written to disk; a restart starts the series empty.

use crate::metrics::{FunctionMetrics, Metrics, BUCKETS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Time covered by one point.
pub const RESOLUTION: Duration = Duration::from_secs(1);
/// Points kept per function (the window is `POINTS * RESOLUTION`).
pub const POINTS: usize = 300;
/// Functions tracked at most.
pub const MAX_FUNCTIONS: usize = 256;
/// Size of one point in memory.
pub const POINT_BYTES: usize = std::mem::size_of::<Point>();

/// One second of one function.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Unix time (seconds) at the end of the interval.
    pub t: u64,
    /// Executions that finished (success or error).
    pub done: u32,
    /// Of those, errors (timeouts included).
    pub errors: u32,
    /// Invocations refused by backpressure or rate limits.
    pub rejected: u32,
    /// Dispatches that waited for a new instance / were served by a running one.
    pub cold: u32,
    pub warm: u32,
    /// Percentiles of the end-to-end latency of the executions finished in the interval
    /// (milliseconds, interpolated inside the histogram's buckets); `NaN` when none finished.
    pub p50_ms: f32,
    pub p99_ms: f32,
    /// Invocations holding a slot and waiting in the queue at the end of the interval.
    pub inflight: i32,
    pub queued: i32,
}

/// A fixed-capacity ring: the newest [`POINTS`] points, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    buf: Vec<Point>,
    next: usize,
}

impl Ring {
    pub fn push(&mut self, p: Point) {
        if self.buf.len() < POINTS {
            self.buf.push(p);
        } else {
            self.buf[self.next] = p;
            self.next = (self.next + 1) % POINTS;
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Point> {
        let (a, b) = self.buf.split_at(self.next);
        b.iter().chain(a.iter())
    }

    /// The points newer than `t`, oldest first.
    pub fn since(&self, t: u64) -> Vec<Point> {
        self.iter().filter(|p| p.t > t).copied().collect()
    }

    pub fn last(&self) -> Option<&Point> {
        if self.buf.is_empty() {
            None
        } else {
            Some(&self.buf[(self.next + self.buf.len() - 1) % self.buf.len()])
        }
    }
}

/// Counter values at the previous sample.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    success: u64,
    error: u64,
    rejected: u64,
    cold: u64,
    warm: u64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
}

impl Totals {
    fn read(m: &FunctionMetrics) -> Totals {
        let (buckets, count) = m.e2e_latency.snapshot();
        Totals {
            success: m.success.get(),
            error: m.error.get(),
            rejected: m.queue_rejected.get() + m.rate_limited.get(),
            cold: m.cold_start.get(),
            warm: m.warm_start.get(),
            buckets,
            count,
        }
    }
}

/// A counter's growth; a counter that went down was recreated (function deleted and
/// registered again) and counts from zero.
fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

fn d32(now: u64, before: u64) -> u32 {
    delta(now, before).min(u32::MAX as u64) as u32
}

/// The `q` quantile (0 < q <= 1) of observations counted per bucket, in seconds, interpolated
/// linearly inside its bucket; observations above the last bucket count as the last bound.
pub fn quantile(per_bucket: &[u64; BUCKETS.len()], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut cum = 0f64;
    for (i, &c) in per_bucket.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = c as f64;
        if cum + c >= rank {
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let frac = ((rank - cum) / c).clamp(0.0, 1.0);
            return Some(lower + (BUCKETS[i] - lower) * frac);
        }
        cum += c;
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

struct Track {
    ring: Ring,
    last: Totals,
}

#[derive(Default)]
struct Inner {
    functions: BTreeMap<String, Track>,
    untracked: usize,
    last_t: u64,
}

/// The series of every tracked function; one lock, taken once a second by the sampler and
/// once a second by each open dashboard.
#[derive(Default)]
pub struct Series {
    inner: Mutex<Inner>,
}

/// What a dashboard reads of one function.
#[derive(Debug, Clone)]
pub struct Read {
    pub points: Vec<Point>,
}

impl Series {
    /// Takes one sample of every function's metrics, stamped `t` (Unix seconds). Functions
    /// whose metrics are gone (deleted) are forgotten.
    pub fn sample(&self, metrics: &Metrics, t: u64) {
        let all = metrics.functions();
        let mut inner = self.inner.lock().unwrap();
        // Stamps only go forward, even if the clock steps back or two ticks land in one second.
        let t = t.max(inner.last_t + 1);
        inner.last_t = t;
        inner
            .functions
            .retain(|name, _| all.iter().any(|(n, _)| n == name));
        let mut untracked = 0;
        for (name, m) in &all {
            let now = Totals::read(m);
            if !inner.functions.contains_key(name) {
                if inner.functions.len() >= MAX_FUNCTIONS {
                    untracked += 1;
                    continue;
                }
                // Metrics start at zero when a function is first seen, at most one interval
                // ago: the first point counts from zero.
                inner.functions.insert(
                    name.clone(),
                    Track {
                        ring: Ring::default(),
                        last: Totals::default(),
                    },
                );
            }
            let track = inner.functions.get_mut(name).expect("inserted above");
            let before = track.last;
            let mut per_bucket = [0u64; BUCKETS.len()];
            for (i, b) in per_bucket.iter_mut().enumerate() {
                *b = delta(now.buckets[i], before.buckets[i]);
            }
            let count = delta(now.count, before.count);
            let q = |q: f64| quantile(&per_bucket, count, q).map_or(f32::NAN, |s| (s * 1e3) as f32);
            track.ring.push(Point {
                t,
                done: d32(now.success, before.success) + d32(now.error, before.error),
                errors: d32(now.error, before.error),
                rejected: d32(now.rejected, before.rejected),
                cold: d32(now.cold, before.cold),
                warm: d32(now.warm, before.warm),
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                inflight: m.inflight.get().clamp(0, i32::MAX as i64) as i32,
                queued: m.queue_depth.get().clamp(0, i32::MAX as i64) as i32,
            });
            track.last = now;
        }
        inner.untracked = untracked;
    }

    /// The points of `function` newer than `since` (Unix seconds), oldest first; `None` when
    /// the function is not tracked.
    pub fn read(&self, function: &str, since: u64) -> Option<Read> {
        let inner = self.inner.lock().unwrap();
        inner.functions.get(function).map(|t| Read {
            points: t.ring.since(since),
        })
    }

    /// Whether `function` has charts: it is tracked, or it is new (not sampled yet) and there is
    /// room for it, so the next sample starts its series. A function registered a moment ago
    /// is not "untracked".
    pub fn tracks(&self, function: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        inner.functions.contains_key(function) || inner.functions.len() < MAX_FUNCTIONS
    }

    /// The stamp of the newest sample (0 before the first).
    pub fn last_t(&self) -> u64 {
        self.inner.lock().unwrap().last_t
    }

    /// Functions not tracked because [`MAX_FUNCTIONS`] were already.
    pub fn untracked(&self) -> usize {
        self.inner.lock().unwrap().untracked
    }

    /// Points held in all (for the memory bound's test).
    pub fn points_held(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.functions.values().map(|t| t.ring.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_points_in_order() {
        let mut r = Ring::default();
        assert!(r.last().is_none());
        for t in 1..=(POINTS as u64 + 7) {
            r.push(Point {
                t,
                ..Point::default()
            });
        }
        assert_eq!(r.len(), POINTS);
        let ts: Vec<u64> = r.iter().map(|p| p.t).collect();
        assert_eq!(ts.first(), Some(&8));
        assert_eq!(ts.last(), Some(&(POINTS as u64 + 7)));
        assert!(ts.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(r.last().unwrap().t, POINTS as u64 + 7);
        let tail = r.since(POINTS as u64 + 5);
        assert_eq!(tail.iter().map(|p| p.t).collect::<Vec<_>>(), [306, 307]);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut b = [0u64; BUCKETS.len()];
        assert_eq!(quantile(&b, 0, 0.5), None);
        // 100 observations in (1 ms, 2.5 ms].
        b[4] = 100;
        let p50 = quantile(&b, 100, 0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        let p99 = quantile(&b, 100, 0.99).unwrap();
        assert!(p99 > 0.0024 && p99 <= 0.0025, "{p99}");
        // One slow outlier above the last bucket: p99 of 2 observations is it.
        let mut b = [0u64; BUCKETS.len()];
        b[0] = 1;
        assert_eq!(quantile(&b, 2, 0.99), Some(60.0));
        assert!(quantile(&b, 2, 0.5).unwrap() <= 0.0001);
    }

    #[test]
    fn samples_are_differences_of_the_counters() {
        let m = Metrics::default();
        let s = Series::default();
        let f = m.function("echo");
        assert!(s.read("echo", 0).is_none(), "not sampled yet");
        assert!(s.tracks("echo"), "but it will be: it is not untracked");
        f.success.add(3);
        f.error.inc();
        f.cold_start.inc();
        f.warm_start.add(3);
        f.queue_rejected.inc();
        for _ in 0..4 {
            f.e2e_latency.observe(Duration::from_micros(1500));
        }
        f.inflight.set(2);
        s.sample(&m, 100);
        let p = s.read("echo", 0).unwrap().points;
        assert_eq!(p.len(), 1);
        assert_eq!(
            (
                p[0].t,
                p[0].done,
                p[0].errors,
                p[0].rejected,
                p[0].cold,
                p[0].warm
            ),
            (100, 4, 1, 1, 1, 3)
        );
        assert_eq!(p[0].inflight, 2);
        assert!(p[0].p50_ms > 1.0 && p[0].p50_ms <= 2.5, "{}", p[0].p50_ms);
        // Nothing happened: a point of zeros, no latency.
        s.sample(&m, 101);
        let p = s.read("echo", 100).unwrap().points;
        assert_eq!((p.len(), p[0].done), (1, 0));
        assert!(p[0].p50_ms.is_nan());
        // The same second twice: stamps still go forward.
        s.sample(&m, 101);
        assert_eq!(s.last_t(), 102);
        // A deleted function is forgotten; registered again it counts from zero.
        m.remove_function("echo");
        s.sample(&m, 103);
        assert!(s.read("echo", 0).is_none());
        m.function("echo").success.inc();
        s.sample(&m, 104);
        assert_eq!(s.read("echo", 0).unwrap().points[0].done, 1);
    }

    #[test]
    fn memory_is_bounded() {
        let m = Metrics::default();
        let s = Series::default();
        for i in 0..(MAX_FUNCTIONS + 10) {
            m.function(&format!("f{i:04}"));
        }
        for t in 0..(POINTS as u64 + 50) {
            s.sample(&m, t);
        }
        assert_eq!(s.untracked(), 10);
        assert!(s.tracks("f0000"));
        assert!(
            !s.tracks(&format!("f{:04}", MAX_FUNCTIONS)),
            "over the bound"
        );
        assert!(!s.tracks("new"), "no room for a new one");
        assert_eq!(s.points_held(), MAX_FUNCTIONS * POINTS);
        // The documented bound: 48-byte points, about 3.5 MiB in all.
        const { assert!(POINT_BYTES == 48) };
        const { assert!(MAX_FUNCTIONS * POINTS * POINT_BYTES <= 3_700_000) };
    }
}
