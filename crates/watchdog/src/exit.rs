//! The process exit codes of `nanofaas-watchdog`, documented in the README. Nothing else in the
//! crate calls `std::process::exit`: every failure ends up here through `main`.

/// Why the watchdog exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// One-shot: the callback was delivered (whatever the function's result). Warm: a clean stop
    /// (SIGTERM/SIGINT, or the idle timeout).
    Ok = 0,
    /// The configuration is invalid: a required variable is missing, a value is malformed, the
    /// mode is unknown. One line on stderr names the variable and the reason.
    Config = 2,
    /// One-shot: the callback could not be delivered after every attempt.
    CallbackFailed = 3,
    /// Warm: the runtime command could not be spawned at start (not found, not executable).
    SpawnFailed = 4,
    /// Warm: the runtime did not become healthy at start (it exited, or the startup timeout
    /// passed).
    StartupFailed = 5,
    /// Warm: the listener could not be bound to `WARM_BIND:WARM_PORT`.
    BindFailed = 6,
    /// An unexpected internal failure (cannot create the async runtime, write to stdout...).
    Internal = 70,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}
