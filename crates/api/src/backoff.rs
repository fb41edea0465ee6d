//! Exponential back-off: the wait after a run of failures, doubling from a first delay up to a
//! ceiling. The one computation every retry loop of nanofaas uses (execution retries, instance
//! start failures, callback deliveries, watch and log reconnections, the CLI's polling).

use std::time::Duration;

/// `base` after the first failure, doubled after each further one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The wait after the `failures`-th failure in a row: `base * 2^(failures - 1)`, at most
    /// `max`; 0 counts as 1. Saturating: any count, however large, gives `max` (or less).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        let grown = match 1u32.checked_shl(doublings) {
            Some(factor) => self.base.saturating_mul(factor),
            None if self.base.is_zero() => Duration::ZERO,
            None => Duration::MAX,
        };
        grown.min(self.max)
    }

    /// The delays one after the other, from the first failure on.
    pub const fn delays(self) -> Delays {
        Delays {
            backoff: self,
            failures: 0,
        }
    }
}

/// A [`Backoff`] with its count of failures in a row: each [`Delays::next_delay`] is the wait
/// after one more failure; [`Delays::reset`] starts again from `base` (after a success).
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    failures: u32,
}

impl Delays {
    /// Counts one more failure and returns the wait after it.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// Forgets the failures: the next delay is `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the start or the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_the_first_failure_and_stops_at_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let ms: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.delay(0), b.delay(1), "no failure yet counts as the first");
    }

    #[test]
    fn a_base_above_the_cap_gives_the_cap() {
        let b = Backoff::new(5000 * MS, 1000 * MS);
        assert_eq!(b.delay(1), 1000 * MS);
    }

    #[test]
    fn huge_counts_and_durations_saturate_instead_of_overflowing() {
        let b = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(b.delay(3), Duration::MAX);
        for n in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(b.delay(n), Duration::MAX, "{n}");
            let capped = Backoff::new(MS, Duration::from_secs(30));
            assert_eq!(capped.delay(n), Duration::from_secs(30), "{n}");
        }
        // Doubling past 2^16 still doubles (no hidden ceiling below `max`).
        let wide = Backoff::new(MS, Duration::MAX);
        assert_eq!(wide.delay(21), 1_048_576 * MS);
        assert_eq!(wide.delay(32), Duration::from_millis(1 << 31));
    }

    #[test]
    fn a_zero_base_stays_zero() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        for n in [0, 1, 2, 40, u32::MAX] {
            assert_eq!(b.delay(n), Duration::ZERO, "{n}");
        }
    }

    #[test]
    fn delays_grow_and_reset() {
        let mut d = Backoff::new(20 * MS, 10_000 * MS).delays();
        let first: Vec<u128> = (0..3).map(|_| d.next_delay().as_millis()).collect();
        assert_eq!(first, [20, 40, 80]);
        assert_eq!(d.failures(), 3);
        for _ in 0..20 {
            d.next_delay();
        }
        assert_eq!(d.next_delay(), 10_000 * MS);
        d.reset();
        assert_eq!(d.failures(), 0);
        assert_eq!(d.next_delay(), 20 * MS);
    }

    #[test]
    fn delays_saturate_their_count() {
        let mut d = Backoff::new(MS, Duration::from_secs(1)).delays();
        d.failures = u32::MAX;
        assert_eq!(d.next_delay(), Duration::from_secs(1));
        assert_eq!(d.failures(), u32::MAX);
    }
}
