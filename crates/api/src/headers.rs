//! Header names. Lower case, as HTTP/1.1 compares them case-insensitively and `http` stores
//! them lower case.

/// The execution an invocation belongs to (control plane → watchdog → runtime).
pub const EXECUTION_ID: &str = "x-execution-id";
/// Correlates one request across client, control plane, watchdog, runtime and callback.
pub const TRACE_ID: &str = "x-trace-id";
/// Per-request timeout in milliseconds (client → control plane, control plane → watchdog).
pub const TIMEOUT_MS: &str = "x-timeout-ms";
/// Base URL the runtime posts its result to: `POST {url}/{executionId}:complete`.
pub const CALLBACK_URL: &str = "x-callback-url";
/// Proof that a callback comes from whoever was sent the execution attempt.
pub const CALLBACK_TOKEN: &str = "x-callback-token";
/// Attempt number (1-based) of this dispatch of an execution.
pub const DISPATCH_ATTEMPT: &str = "x-dispatch-attempt";
/// Client-chosen key that makes an invocation idempotent within the execution TTL.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Why a sync invocation was refused with 429: `depth`, `est_wait`, `timeout` or `rate`.
pub const QUEUE_REJECT_REASON: &str = "x-queue-reject-reason";
/// Set on responses to say whether the invocation paid a cold start (`true`/`false`); absent
/// when it reached no instance because the start it waited for failed (see [`START`]).
pub const COLD_START: &str = "x-cold-start";
/// Set on responses: how the (last) attempt got its instance: `warm`, `cold` or `start_failed`.
pub const START: &str = "x-start";
/// Set by the watchdog on an answer that waited for its runtime to (re)start: how long the
/// start took, in milliseconds. The control plane reports such a call as cold.
pub const RUNTIME_START_MS: &str = "x-runtime-start-ms";
/// W3C Trace Context, sent with each attempt (its parent is the attempt's dispatch span) and
/// passed on by the watchdog to the runtime and with callbacks.
pub const TRACEPARENT: &str = "traceparent";
/// Set by the watchdog on its answers: how long the runtime took to answer (HTTP runtimes) or
/// the command took to run (STDIO/FILE), in microseconds; the control plane's `runtime` span.
pub const RUNTIME_DURATION_US: &str = "x-runtime-duration-us";
