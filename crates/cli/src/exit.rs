//! Exit codes of the `nanofaas` command (documented in docs/cli.md; keep the two in step).

use std::process::ExitCode;

/// Every exit code the command uses besides 0 (success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Something unexpected went wrong (including an internal error of the server).
    Failure = 1,
    /// The command line or a configuration is invalid (clap also uses 2 for usage errors).
    Usage = 2,
    /// The server could not start (address in use, state folder unusable, no watchdog...).
    StartFailed = 3,
    /// The control plane cannot be reached (connection refused, no answer) or is shutting down.
    Unreachable = 4,
    /// The function or execution does not exist (HTTP 404).
    NotFound = 5,
    /// The manifest or the request is invalid (a manifest problem; HTTP 400 or 413).
    Invalid = 6,
    /// The function ran and failed, or could not start (HTTP 500/502/503 with an execution,
    /// 410 when it was deleted meanwhile; an execution that ended in `error`).
    FunctionError = 7,
    /// The invocation timed out (HTTP 408, an execution that ended in `timeout`), or a wait of
    /// the CLI itself (`exec get --watch`, deployment) ran out of time.
    Timeout = 8,
    /// Refused by backpressure or a rate limit (HTTP 429); retry after the time printed.
    Backpressure = 9,
    /// A conflict (HTTP 409): the function exists, or the idempotency key was used with a
    /// different request.
    Conflict = 10,
    /// A setup step of the manifest failed.
    SetupFailed = 11,
    /// `serve` or `up` refused to listen on a non-loopback address with no API tokens
    /// configured (pass `--insecure-no-auth` to accept the risk).
    Exposed = 12,
    /// The API refused the caller: no token or an unknown one (HTTP 401), or the token's role
    /// does not allow the request (HTTP 403).
    Denied = 13,
    /// `nanofaas up` was stopped by SIGINT/SIGTERM before it was up (during setup or
    /// deployment); once it is up, a signal is the normal way to stop it and it exits 0.
    Interrupted = 130,
}

impl Exit {
    /// Every code, for the documentation test.
    pub const ALL: &'static [Exit] = &[
        Exit::Failure,
        Exit::Usage,
        Exit::StartFailed,
        Exit::Unreachable,
        Exit::NotFound,
        Exit::Invalid,
        Exit::FunctionError,
        Exit::Timeout,
        Exit::Backpressure,
        Exit::Conflict,
        Exit::SetupFailed,
        Exit::Exposed,
        Exit::Denied,
        Exit::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that carries the exit code it should end the process with.
#[derive(Debug)]
pub struct Coded {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

pub fn err(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        exit,
        message: message.into(),
    })
}

/// The exit code an error ends the process with (1 unless it carries one).
pub fn exit_of(e: &anyhow::Error) -> Exit {
    match e.downcast_ref::<Coded>() {
        Some(c) => c.exit,
        None => Exit::Failure,
    }
}

pub fn code_of(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(exit_of(e).code())
}
