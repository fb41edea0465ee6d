//! Rate limiting of log lines a function can trigger (its output, its errors, its failed
//! callbacks): at most a burst of lines per window, the rest counted and reported with the first
//! line of a later window. The one limiter of log lines of nanofaas; the time is the caller's
//! (`now`), so that tests need no clock.

use std::time::{Duration, Instant};

/// At most `burst` lines per `window`; a window starts with the first line after the previous
/// one ended (or the very first line).
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    start: Option<Instant>,
    passed: u32,
    dropped: u64,
}

/// What [`LogLimiter::check`] says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Log the line (otherwise it is dropped and counted).
    pub log: bool,
    /// Lines dropped before this window, reported once, with the window's first line (logged
    /// unless the burst is 0).
    pub dropped: u64,
}

impl LogLimiter {
    pub const fn new(burst: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            burst,
            window,
            start: None,
            passed: 0,
            dropped: 0,
        }
    }

    /// The verdict on a line at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let mut reported = 0;
        let ended = match self.start {
            None => true,
            Some(s) => now.saturating_duration_since(s) >= self.window,
        };
        if ended {
            self.start = Some(now);
            self.passed = 0;
            reported = std::mem::take(&mut self.dropped);
        }
        let log = self.passed < self.burst;
        if log {
            self.passed += 1;
        } else {
            self.dropped += 1;
        }
        Verdict {
            log,
            dropped: reported,
        }
    }

    /// `Some(n)` when the line at `now` may be logged, `n` the lines dropped since the last one
    /// logged; `None` when it must be dropped. (With a burst of 0 nothing is logged, and the
    /// count is only seen through [`LogLimiter::check`].)
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let v = self.check(now);
        v.log.then_some(v.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn burst_then_drop_then_report() {
        let mut r = LogLimiter::new(2, 10 * S);
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + S), None);
        assert_eq!(r.allow(t0 + 9 * S), None);
        assert_eq!(r.allow(t0 + 10 * S), Some(2));
        assert_eq!(r.allow(t0 + 10 * S), Some(0));
        assert_eq!(r.allow(t0 + 11 * S), None);
    }

    #[test]
    fn the_window_starts_with_the_first_line() {
        let mut r = LogLimiter::new(1, S);
        let t0 = Instant::now();
        assert_eq!(r.allow(t0 + 5 * S), Some(0));
        assert_eq!(r.allow(t0 + 5 * S + S / 2), None);
        // One window after the first line, not after `t0`.
        assert_eq!(r.allow(t0 + 6 * S), Some(1));
    }

    #[test]
    fn drops_are_reported_once_even_after_quiet_windows() {
        let mut r = LogLimiter::new(1, S);
        let t0 = Instant::now();
        r.allow(t0);
        for _ in 0..5 {
            assert_eq!(r.allow(t0), None);
        }
        assert_eq!(r.allow(t0 + 60 * S), Some(5));
        assert_eq!(r.allow(t0 + 120 * S), Some(0));
    }

    #[test]
    fn a_zero_burst_logs_nothing_but_still_reports_the_count() {
        let mut r = LogLimiter::new(0, S);
        let t0 = Instant::now();
        let at = |r: &mut LogLimiter, t| r.check(t);
        assert_eq!(
            at(&mut r, t0),
            Verdict {
                log: false,
                dropped: 0
            }
        );
        assert_eq!(
            at(&mut r, t0),
            Verdict {
                log: false,
                dropped: 0
            }
        );
        assert_eq!(
            at(&mut r, t0 + S),
            Verdict {
                log: false,
                dropped: 2
            }
        );
        assert_eq!(r.allow(t0 + 2 * S), None);
    }

    #[test]
    fn time_going_backwards_stays_in_the_window() {
        let t0 = Instant::now() + 10 * S;
        let mut r = LogLimiter::new(1, S);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 - 5 * S), None);
        assert_eq!(r.allow(t0 + S), Some(1));
    }
}
