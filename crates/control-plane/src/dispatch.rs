//! The dispatch interface, and dispatch to an HTTP endpoint speaking the runtime contract.
//!
//! A [`Backend`] runs one attempt of an execution and returns its [`DispatchResult`]. The invoker
//! never knows what is behind it: an external endpoint (`POOL`), a managed warm pool
//! (`DEPLOYMENT`) or a fresh instance per call (`JOB`). [`invoke_http`] is the one hop shared by
//! every backend that talks to a warm watchdog or runtime: keep-alive connection, contract
//! headers, the attempt's timeout, and classification of what went wrong.

use crate::executions::{Execution, Failure, FailureKind, Outcome};
use bytes::Bytes;
use http::{StatusCode, Uri};
use nanofaas_api::{headers as h, ErrorCode, FunctionSpec};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shared keep-alive HTTP client used for every dispatch.
pub type HttpClient = crate::h1::Client;

pub use crate::h1::{ClientSettings, Endpoint};

pub fn http_client(s: &ClientSettings) -> HttpClient {
    crate::h1::Client::new(s.clone())
}

/// Where an instance must send its callback, and the proof it may.
#[derive(Debug, Clone)]
pub struct CallbackInfo {
    pub url: String,
    pub token: String,
}

/// One attempt to run.
pub struct Call {
    pub exec: Arc<Execution>,
    pub spec: Arc<FunctionSpec>,
    pub attempt: u32,
    pub body: Bytes,
    pub timeout: Duration,
    /// Base of the callback URL; the token is minted only when a backend asks for it.
    pub callback_base: Arc<str>,
    pub auth: crate::auth::CallbackAuth,
    /// Largest output accepted from the function.
    pub max_output_bytes: usize,
}

impl Call {
    /// Where and how this attempt's instance must report by callback.
    pub fn callback(&self) -> CallbackInfo {
        CallbackInfo {
            url: self.callback_base.to_string(),
            token: self.auth.token(&self.exec.id, self.attempt),
        }
    }
}

/// How an attempt got its instance. Every dispatch is exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartKind {
    /// An instance (or endpoint) that was already running and ready.
    Warm,
    /// It waited for a runtime to start, a new instance or a restart of the runtime inside one,
    /// which took `init`.
    Cold { init: Duration },
    /// It waited for a prewarmed (generic) instance to be specialized for its function, which
    /// took `init`: a cold start that skipped starting the runtime.
    Prewarmed { init: Duration },
    /// It reached no instance: the start it waited for failed (or did not finish in time).
    StartFailed,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Warm => "warm",
            StartKind::Cold { .. } => "cold",
            StartKind::Prewarmed { .. } => "prewarmed",
            StartKind::StartFailed => "start_failed",
        }
    }

    /// The start time of a cold or prewarmed start.
    pub fn init(self) -> Option<Duration> {
        match self {
            StartKind::Cold { init } | StartKind::Prewarmed { init } => Some(init),
            _ => None,
        }
    }

    /// Reads [`StartKind::as_str`] back (`init_ms` is a cold or prewarmed start's time).
    pub fn parse(s: Option<&str>, init_ms: Option<u64>) -> Option<StartKind> {
        match s? {
            "warm" => Some(StartKind::Warm),
            "cold" => Some(StartKind::Cold {
                init: Duration::from_millis(init_ms.unwrap_or(0)),
            }),
            "prewarmed" => Some(StartKind::Prewarmed {
                init: Duration::from_millis(init_ms.unwrap_or(0)),
            }),
            "start_failed" => Some(StartKind::StartFailed),
            _ => None,
        }
    }
}

/// What a backend reports for one attempt.
#[derive(Debug)]
pub struct DispatchResult {
    pub outcome: Outcome,
    pub start: StartKind,
}

impl DispatchResult {
    /// An attempt that reached no instance.
    pub fn start_failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            start: StartKind::StartFailed,
        }
    }
}

impl From<Outcome> for DispatchResult {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            start: StartKind::Warm,
        }
    }
}

/// Runs attempts for the functions of one execution mode.
pub trait Backend: Send + Sync + 'static {
    fn dispatch<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, DispatchResult>;

    /// Stops everything the backend started for this function (instances). Called once, after
    /// the function was removed or replaced and its in-flight work drained.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// `POOL` mode: an endpoint the user runs.
pub struct EndpointBackend {
    client: HttpClient,
    uri: Uri,
    /// Its address and idle connections, closed when the function goes.
    endpoint: Endpoint,
}

impl EndpointBackend {
    pub fn new(client: HttpClient, url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
        let endpoint = Endpoint::http(&uri).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Self {
            client,
            uri,
            endpoint,
        })
    }
}

impl Backend for EndpointBackend {
    fn dispatch<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, DispatchResult> {
        Box::pin(async move {
            invoke_http(
                &self.client,
                &self.uri,
                &self.endpoint,
                call,
                false,
                Duration::ZERO,
            )
            .await
            .0
            .into()
        })
    }
}

/// How the HTTP exchange with an instance went, apart from what it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// It answered (any status).
    Answered,
    /// No connection could be made.
    ConnectFailed,
    /// The connection broke before a complete answer.
    Lost,
    /// No answer within the timeout (plus grace).
    NoAnswer,
}

/// Where an instance is reached: its Unix socket if it has one, else the host of its URL.
pub fn instance_endpoint(invoke: &Uri, socket: Option<&str>) -> Result<Endpoint, String> {
    match socket {
        Some(s) => Ok(Endpoint::unix(s)),
        None => Endpoint::http(invoke).map_err(|e| e.to_string()),
    }
}

/// Sends a request to `endpoint`, with `uri`'s path and `Host`, answered before `deadline`.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    client: &HttpClient,
    endpoint: &Endpoint,
    uri: &Uri,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    max_body: usize,
    deadline: tokio::time::Instant,
) -> Result<crate::h1::Response, crate::h1::Error> {
    let host = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    client
        .send_to(
            endpoint, host, method, path, headers, body, max_body, deadline,
        )
        .await
}

/// Posts the attempt to `endpoint` (path and `Host` from `uri`) in the header form of the runtime
/// contract and classifies the answer. With `send_callback`, the instance is also given the callback URL and token. The
/// instance is told the attempt's timeout (`X-Timeout-Ms`) and given `grace` more to answer.
/// The third value is the start time of the runtime when the answer says (`X-Runtime-Start-Ms`)
/// that the call waited for the runtime inside the instance to (re)start.
pub async fn invoke_http(
    client: &HttpClient,
    uri: &Uri,
    endpoint: &Endpoint,
    call: &Call,
    send_callback: bool,
    grace: Duration,
) -> (Outcome, Transport, Option<Duration>) {
    let attempt = call.attempt.to_string();
    let timeout_ms = (call.timeout.as_millis() as u64).to_string();
    let cb = send_callback.then(|| call.callback());
    let traceparent = call.exec.trace.traceparent(call.attempt);
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(8);
    headers.push(("content-type", "application/json"));
    headers.push((h::EXECUTION_ID, &call.exec.id));
    headers.push((h::TRACE_ID, &call.exec.trace_id));
    headers.push((crate::trace::TRACEPARENT, traceparent.as_str()));
    headers.push((h::DISPATCH_ATTEMPT, &attempt));
    headers.push((h::TIMEOUT_MS, &timeout_ms));
    if let Some(cb) = &cb {
        headers.push((h::CALLBACK_URL, &cb.url));
        headers.push((h::CALLBACK_TOKEN, &cb.token));
    }
    let max = call.max_output_bytes;
    // The exchange's deadline: the attempt's timeout, plus the grace to answer it.
    let deadline = tokio::time::Instant::now() + call.timeout + grace;
    use crate::h1::Error as E;
    let sent = send(
        client, endpoint, uri, "POST", &headers, &call.body, max, deadline,
    )
    .await;
    let fail = |kind, code, msg: String| Outcome::Failure(Failure::new(kind, code, msg));
    let (outcome, transport) = match sent {
        Ok(r) => {
            if let Some(us) = r.runtime_duration_us {
                call.exec.trace.runtime_took(call.attempt, us);
            }
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let start = r.runtime_start_ms.map(Duration::from_millis);
            return (classify(status, r.body), Transport::Answered, start);
        }
        Err(E::Timeout) => (
            fail(
                FailureKind::Timeout,
                ErrorCode::Timeout,
                format!(
                    "the function did not answer within {} ms",
                    call.timeout.as_millis()
                ),
            ),
            Transport::NoAnswer,
        ),
        Err(E::TooLarge(_)) => (
            fail(
                FailureKind::Function,
                ErrorCode::FunctionError,
                format!("the function's output is larger than the {max}-byte limit"),
            ),
            Transport::Answered,
        ),
        Err(E::Connect(m)) => (
            fail(
                FailureKind::Platform,
                ErrorCode::InstanceLost,
                format!("could not connect to the instance: {uri}: {m}"),
            ),
            Transport::ConnectFailed,
        ),
        // The request may have reached the instance: never sent again inside this attempt.
        Err(e) => (
            fail(
                FailureKind::Platform,
                ErrorCode::InstanceLost,
                format!("the instance was lost before it answered: {uri}: {e}"),
            ),
            Transport::Lost,
        ),
    };
    (outcome, transport, None)
}

/// Turns an instance's HTTP answer into an outcome.
pub fn classify(status: StatusCode, body: Bytes) -> Outcome {
    if status.is_success() {
        if body.is_empty() {
            return Outcome::Success(Bytes::from_static(b"null"));
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Outcome::Failure(Failure::new(
                FailureKind::Function,
                ErrorCode::FunctionError,
                "the function answered with a body that is not JSON",
            ));
        }
        return Outcome::Success(body);
    }
    let error = nanofaas_api::invocation::error_from_response(status.as_u16(), &body);
    let kind = match ErrorCode::parse(&error.code) {
        Some(ErrorCode::Timeout) => FailureKind::Timeout,
        Some(
            ErrorCode::InstanceLost
            | ErrorCode::StartupError
            | ErrorCode::SpawnError
            | ErrorCode::ShuttingDown,
        ) => FailureKind::Platform,
        _ if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY => {
            FailureKind::Platform
        }
        _ => FailureKind::Function,
    };
    Outcome::Failure(Failure { error, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(StatusCode::OK, Bytes::from_static(b"{\"a\":1}")),
            Outcome::Success(Bytes::from_static(b"{\"a\":1}"))
        );
        assert_eq!(
            classify(StatusCode::OK, Bytes::new()),
            Outcome::Success(Bytes::from_static(b"null"))
        );
        let kind = |s: u16, b: &'static [u8]| match classify(
            StatusCode::from_u16(s).unwrap(),
            Bytes::from_static(b),
        ) {
            Outcome::Failure(f) => (f.kind, f.error.code),
            o => panic!("{o:?}"),
        };
        assert_eq!(
            kind(200, b"not json"),
            (FailureKind::Function, "FUNCTION_ERROR".into())
        );
        assert_eq!(
            kind(500, br#"{"error":"boom"}"#),
            (FailureKind::Function, "HANDLER_ERROR".into())
        );
        assert_eq!(
            kind(504, br#"{"error":{"code":"TIMEOUT","message":"x"}}"#),
            (FailureKind::Timeout, "TIMEOUT".into())
        );
        assert_eq!(
            kind(502, br#"{"error":{"code":"INSTANCE_LOST","message":"x"}}"#),
            (FailureKind::Platform, "INSTANCE_LOST".into())
        );
        assert_eq!(
            kind(503, b"unavailable"),
            (FailureKind::Platform, "FUNCTION_ERROR".into())
        );
    }
}
