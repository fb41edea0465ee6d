//! Exit codes of the `nanofaas` command (documented in docs/cli.md).

use std::process::ExitCode;

/// Every exit code the command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Something unexpected went wrong.
    Failure = 1,
    /// The command line or a configuration is invalid (clap also uses 2 for usage errors).
    Usage = 2,
    /// The server could not start (address in use, state folder unusable...).
    StartFailed = 3,
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

pub fn code_of(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<Coded>() {
        Some(c) => ExitCode::from(c.exit as u8),
        None => ExitCode::from(Exit::Failure as u8),
    }
}
