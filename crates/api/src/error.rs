//! Error codes and the error body used by the API, the runtime contract and callbacks.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `{ "code": "...", "message": "..." }`. The code is a string on the wire so that runtimes may
/// report codes of their own; the ones nanofaas itself produces are listed in [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// Every error code nanofaas produces.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($(#[$doc])* $variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text,)* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    /// The runtime process could not be started (command not found, not executable...).
    SpawnError => "SPAWN_ERROR",
    /// The runtime or instance started but never became healthy.
    StartupError => "STARTUP_ERROR",
    /// The function ran and failed (non-zero exit, unusable output, runtime 5xx).
    FunctionError => "FUNCTION_ERROR",
    /// The user's handler raised; reported by the language runtimes.
    HandlerError => "HANDLER_ERROR",
    /// The invocation did not finish within its timeout.
    Timeout => "TIMEOUT",
    /// The function was deleted while the invocation was queued or running.
    FunctionRemoved => "FUNCTION_REMOVED",
    /// The function's queue was full.
    QueueFull => "QUEUE_FULL",
    /// The instance serving the invocation died or stopped answering.
    InstanceLost => "INSTANCE_LOST",
    /// The function went over its `resources.memory` limit and was killed; the message names
    /// the limit. A function failure: retried only as the function's own failures are.
    OutOfMemory => "OUT_OF_MEMORY",
    /// A request was malformed: the message names the field and the reason.
    InvalidRequest => "INVALID_REQUEST",
    /// No such function or execution.
    NotFound => "NOT_FOUND",
    /// A function with that name already exists.
    AlreadyExists => "ALREADY_EXISTS",
    /// The idempotency key was used before with a different request.
    IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
    /// The request was refused by backpressure or a rate limit.
    Backpressure => "BACKPRESSURE",
    /// The request body is larger than the configured limit.
    PayloadTooLarge => "PAYLOAD_TOO_LARGE",
    /// A callback came without a token, or an API request without a valid bearer token.
    Unauthorized => "UNAUTHORIZED",
    /// A callback came with a token that does not match, or the API token's role (or the
    /// request's origin) does not allow the request.
    Forbidden => "FORBIDDEN",
    /// A request body that is not JSON (`Content-Type: application/json`).
    UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
    /// The request's `Host` is not a name this server answers for (DNS rebinding).
    MisdirectedRequest => "MISDIRECTED_REQUEST",
    /// The server is shutting down and accepts no new work.
    ShuttingDown => "SHUTTING_DOWN",
    /// The HTTP method is not allowed on that route.
    MethodNotAllowed => "METHOD_NOT_ALLOWED",
    /// The control plane restarted while the execution was running and could not resume it.
    Interrupted => "INTERRUPTED",
    /// A bug or an unexpected condition inside nanofaas.
    Internal => "INTERNAL",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
        let body = ErrorBody::new(ErrorCode::Timeout, "took too long");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"code":"TIMEOUT","message":"took too long"}"#);
    }
}
