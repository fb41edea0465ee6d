//! The vocabulary every nanofaas component shares: wire types of the public API and of the
//! runtime contract, header names, error codes and validation.
//!
//! This crate owns *shapes and rules*, never behaviour: it performs no I/O, starts no tasks and
//! depends on nothing but serde. The control plane, the watchdog, the runtime SDK and the CLI all
//! speak through these types so that a field renamed here is renamed everywhere.
//!
//! # Layout
//! - [`headers`]: HTTP header names of the public API and the runtime contract.
//! - [`error`]: error codes and the `{code, message}` body.
//! - [`invocation`]: invocation request/response, callback payload, the watchdog envelope.
//! - [`json`]: the strict JSON checker of request bodies (no value built).
//! - [`execution`]: execution status and the view returned by `GET /v1/executions/{id}`.
//! - [`spec`]: `FunctionSpec`, its defaults and its validation.
//! - [`command`]: splitting a command line into argv without a shell.
//! - [`procnet`]: the address columns of `/proc/net/tcp{,6}` text.
//! - [`backoff`]: the doubling, capped wait of every retry loop.
//! - [`log_limit`]: the rate limit of log lines a function can trigger.

pub mod backoff;
pub mod command;
pub mod error;
pub mod execution;
pub mod headers;
pub mod invocation;
pub mod json;
pub mod log_limit;
pub mod procnet;
pub mod spec;

pub use error::{ErrorBody, ErrorCode};
pub use execution::{ExecutionStatus, ExecutionView};
pub use invocation::{CallbackPayload, InvocationRequest, InvokeResponse, WarmEnvelope};
pub use spec::{ExecutionMode, FunctionSpec, RuntimeMode, ValidationError};

/// Function names: `^[a-zA-Z][a-zA-Z0-9._-]{0,62}$`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err("must not be empty".into());
    };
    if !first.is_ascii_alphabetic() {
        return Err("must start with a letter (pattern ^[a-zA-Z][a-zA-Z0-9._-]{0,62}$)".into());
    }
    if bytes.len() > 63 {
        return Err(format!(
            "must be at most 63 characters, got {}",
            bytes.len()
        ));
    }
    if let Some(bad) = bytes
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        return Err(format!(
            "contains {:?}; only letters, digits, '.', '_' and '-' are allowed",
            *bad as char
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names() {
        for ok in ["a", "echo", "A.b_c-9", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "9a",
            "-a",
            "a b",
            "a/b",
            "é",
            &"x".repeat(64),
            "a:invoke",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
