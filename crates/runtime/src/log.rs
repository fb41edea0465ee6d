//! One line per event on stderr (`nanofaas-runtime <level>: <message>`) and a rate limiter for
//! the lines a function can trigger (handler errors, failed callbacks).
//!
//! Nothing is logged per successful invocation.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn line(level: &str, msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "nanofaas-runtime {level}: {msg}");
}

macro_rules! log_info {
    ($($arg:tt)+) => { $crate::log::line("info", format_args!($($arg)+)) };
}
macro_rules! log_warn {
    ($($arg:tt)+) => { $crate::log::line("warn", format_args!($($arg)+)) };
}
macro_rules! log_error {
    ($($arg:tt)+) => { $crate::log::line("error", format_args!($($arg)+)) };
}
pub(crate) use {log_error, log_info, log_warn};

/// At most `burst` events per `window`; the others are counted.
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    allowed: u32,
    dropped: u64,
}

impl RateLimiter {
    pub const fn new(burst: u32, window: Duration) -> Self {
        RateLimiter {
            burst,
            window,
            state: Mutex::new(Window {
                start: None,
                allowed: 0,
                dropped: 0,
            }),
        }
    }

    /// `Some(n)` when the event may be logged, with `n` the events dropped since the last one
    /// logged; `None` when it must be dropped.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = match w.start {
            None => true,
            Some(s) => now.duration_since(s) >= self.window,
        };
        if expired {
            w.start = Some(now);
            w.allowed = 0;
        }
        if w.allowed < self.burst {
            w.allowed += 1;
            Some(std::mem::take(&mut w.dropped))
        } else {
            w.dropped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_drop_then_report() {
        let r = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), None);
    }
}
