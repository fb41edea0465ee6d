//! One line per event on stderr (`nanofaas-runtime <level>: <message>`) and the rate limit
//! (`nanofaas_api`'s `LogLimiter`) of the lines a function can trigger (handler errors, failed
//! callbacks).
//!
//! Nothing is logged per successful invocation.

use nanofaas_api::log_limit::LogLimiter;
use std::sync::Mutex;
use std::time::Instant;

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

/// `Some(n)` when a line of the kind `limit` counts may be logged at `now`, with `n` the lines
/// dropped since the last one logged; `None` when it must be dropped.
pub fn allow(limit: &Mutex<LogLimiter>, now: Instant) -> Option<u64> {
    limit.lock().unwrap_or_else(|p| p.into_inner()).allow(now)
}
