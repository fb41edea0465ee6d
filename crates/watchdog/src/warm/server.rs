//! The warm HTTP API: `POST /invoke` (header form and envelope form), `GET /health`,
//! `GET /metrics`.
//!
//! The header form is the hot path: the body is checked to be JSON without building a value,
//! and forwarded byte for byte over a kept-alive connection; the runtime's answer is returned
//! byte for byte. Nothing on that path logs, locks across I/O or re-serialises.

use super::supervisor::{Handle, KillReason};
use crate::callback::{self, Target};
use crate::client::CallError;
use crate::config::{Config, HttpUrl, RuntimeKind, WarmConfig};
use crate::exec::{self, Run, TempDir};
use crate::metrics::{Metrics, Outcome};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use nanofaas_api::invocation::{error_from_response, status_for_error};
use nanofaas_api::{headers, ErrorBody, ErrorCode, WarmEnvelope};
use serde::de::IgnoredAny;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

const H_EXECUTION_ID: HeaderName = HeaderName::from_static(headers::EXECUTION_ID);
const H_TRACE_ID: HeaderName = HeaderName::from_static(headers::TRACE_ID);
const H_TRACEPARENT: HeaderName = HeaderName::from_static(headers::TRACEPARENT);
const H_TIMEOUT_MS: HeaderName = HeaderName::from_static(headers::TIMEOUT_MS);
const H_CALLBACK_URL: HeaderName = HeaderName::from_static(headers::CALLBACK_URL);
const H_CALLBACK_TOKEN: HeaderName = HeaderName::from_static(headers::CALLBACK_TOKEN);
const H_DISPATCH_ATTEMPT: HeaderName = HeaderName::from_static(headers::DISPATCH_ATTEMPT);
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// When the last invocation started or ended, and a signal for "nothing in flight any more".
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    pub inflight: AtomicUsize,
    pub went_idle: Notify,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            went_idle: Notify::new(),
        }
    }

    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    fn end(&self) {
        self.touch();
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.went_idle.notify_one();
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves when nothing has been in flight for `idle`.
pub async fn idle_timeout(activity: &Activity, idle: Duration) {
    loop {
        if activity.inflight.load(Ordering::Acquire) > 0 {
            activity.went_idle.notified().await;
            continue;
        }
        let due = activity.last() + idle;
        if Instant::now() >= due {
            if activity.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = activity.went_idle.notified() => {}
        }
    }
}

/// Everything the handlers share.
pub struct App {
    cfg: Arc<Config>,
    warm: WarmConfig,
    pub metrics: Arc<Metrics>,
    pub activity: Activity,
    sup: Option<Handle>,
    permits: Semaphore,
    pub draining: AtomicBool,
    served: AtomicU64,
    /// The latest deadline of any invocation so far (ms since `activity.base`), to bound the drain.
    latest_deadline_ms: AtomicU64,
    pub tasks: Tasks,
    /// The control plane's lease (`WARM_LEASE_MS`), when there is one.
    pub lease: Option<crate::lease::Lease>,
}

/// Counts background tasks (connections, invocations, callbacks) so that shutdown can wait for them.
#[derive(Clone, Default)]
pub struct Tasks(Arc<(AtomicUsize, Notify)>);

pub struct TaskGuard(Tasks);

impl Tasks {
    pub fn enter(&self) -> TaskGuard {
        self.0 .0.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0 .0.load(Ordering::Acquire)
    }

    /// Resolves when no task is left.
    pub async fn idle(&self) {
        while self.count() > 0 {
            self.0 .1.notified().await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0 .0 .0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0 .0 .1.notify_one();
        }
    }
}

/// How the result goes back to the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Header,
    Envelope,
}

/// A parsed invocation.
struct Invocation {
    form: Form,
    execution_id: HeaderValue,
    trace_id: Option<HeaderValue>,
    /// W3C trace context, passed on as it came (the control plane checked it).
    traceparent: Option<HeaderValue>,
    attempt: Option<HeaderValue>,
    body: Bytes,
    timeout: Duration,
    callback: Option<(HttpUrl, Option<String>)>,
    /// Set when the call waited for the runtime to (re)start: how long the start took, in ms,
    /// plus one (0: it did not wait). Answered as `X-Runtime-Start-Ms`.
    runtime_start: AtomicU64,
    /// How long the runtime (or command) took, in µs, plus one (0: it was not reached).
    /// Answered as `X-Runtime-Duration-Us`.
    runtime_took: AtomicU64,
}

type Resp = Response<Full<Bytes>>;

impl Invocation {
    /// Records how long the runtime (or command) took since `started`.
    fn took(&self, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.runtime_took
            .store(us.saturating_add(1), Ordering::Relaxed);
    }
}

impl App {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, sup: Option<Handle>) -> App {
        let warm = cfg.warm.clone().expect("warm mode has a warm config");
        App {
            lease: warm.lease.map(crate::lease::Lease::new),
            permits: Semaphore::new(warm.concurrency),
            warm,
            cfg,
            metrics,
            activity: Activity::new(),
            sup,
            draining: AtomicBool::new(false),
            served: AtomicU64::new(0),
            latest_deadline_ms: AtomicU64::new(0),
            tasks: Tasks::default(),
        }
    }

    /// The latest deadline of any invocation accepted so far.
    pub fn latest_deadline(&self) -> Instant {
        self.activity.base + Duration::from_millis(self.latest_deadline_ms.load(Ordering::Relaxed))
    }

    pub async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/invoke") => match self.not_specialized(&req) {
                Some(r) => r,
                None => self.invoke(req).await,
            },
            (&Method::POST, "/specialize") => {
                super::specialize::handle(self.sup.as_ref(), &self.cfg, req).await
            }
            (&Method::GET, "/health") => self.health(),
            (&Method::POST, "/lease") => match &self.lease {
                Some(l) => {
                    l.hold(req.into_body()).await;
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                None => error_response(
                    StatusCode::NOT_FOUND,
                    &ErrorBody::new(
                        ErrorCode::NotFound,
                        "this watchdog has no lease (WARM_LEASE_MS is not set)",
                    ),
                    None,
                ),
            },
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (_, "/invoke" | "/health" | "/metrics" | "/lease" | "/specialize") => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &ErrorBody::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{} is not allowed on {}", req.method(), req.uri().path()),
                ),
                None,
            ),
            _ => error_response(
                StatusCode::NOT_FOUND,
                &ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "no route {}; try POST /invoke, GET /health, GET /metrics",
                        req.uri().path()
                    ),
                ),
                None,
            ),
        }
    }

    /// A prewarmed watchdog that is not specialized yet answers `/invoke` with why.
    fn not_specialized(&self, req: &Request<Incoming>) -> Option<Resp> {
        let e = self.sup.as_ref()?.prewarm.as_ref()?.not_ready()?;
        let id = req.headers().get(H_EXECUTION_ID).cloned();
        Some(self.reject(StatusCode::SERVICE_UNAVAILABLE, e, id))
    }

    fn health(&self) -> Resp {
        let status = if self.draining.load(Ordering::Relaxed) {
            "draining"
        } else {
            self.sup.as_ref().map_or("ok", |s| s.status())
        };
        let pid = self.sup.as_ref().and_then(|s| s.runtime_pid());
        let body = serde_json::json!({
            "status": status,
            "runtimePid": pid,
            "invocations": self.served.load(Ordering::Relaxed),
            "inflight": self.activity.inflight.load(Ordering::Relaxed),
        });
        let mut r = json_response(Bytes::from(body.to_string()));
        if status != "ok" {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        r
    }

    async fn invoke(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        let arrived = Instant::now();
        if self.draining.load(Ordering::Relaxed) {
            return self.reject(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(ErrorCode::ShuttingDown, "the watchdog is shutting down"),
                req.headers().get(H_EXECUTION_ID).cloned(),
            );
        }
        let inv = match self.parse(req).await {
            Ok(inv) => inv,
            Err((status, err, id)) => return self.reject(status, err, id),
        };
        // The invocation runs in its own task: if the client disconnects and hyper drops this
        // handler, the call still finishes in order (the slot stays taken until the runtime
        // answers), is counted, and its callback is still sent.
        let app = self.clone();
        let guard = self.tasks.enter();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let result = app.run_invocation(&inv, arrived).await;
            (inv, result)
        });
        match task.await {
            Ok((inv, result)) => self.respond(&inv, result),
            Err(e) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ErrorBody::new(
                    ErrorCode::Internal,
                    format!("the invocation task failed: {e}"),
                ),
                None,
            ),
        }
    }

    /// Runs one accepted invocation to the end: slot, execution, metrics, callback.
    async fn run_invocation(&self, inv: &Invocation, arrived: Instant) -> Result<Bytes, ErrorBody> {
        let deadline = arrived + inv.timeout;
        self.latest_deadline_ms.fetch_max(
            deadline
                .saturating_duration_since(self.activity.base)
                .as_millis() as u64,
            Ordering::Relaxed,
        );
        self.activity.begin();
        self.metrics.inflight.fetch_add(1, Ordering::Relaxed);
        let result = self.execute(inv, deadline).await;
        self.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(e) if e.code == ErrorCode::Timeout.as_str() => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        self.metrics.record(outcome, arrived.elapsed());
        if let Some((url, token)) = &inv.callback {
            self.spawn_callback(inv, url.clone(), token.clone(), &result);
        }
        self.activity.end();
        result
    }

    fn reject(&self, status: StatusCode, err: ErrorBody, id: Option<HeaderValue>) -> Resp {
        self.metrics.record(Outcome::Rejected, Duration::ZERO);
        error_response(status, &err, id.as_ref())
    }

    /// Reads and validates a request in either form.
    async fn parse(
        &self,
        req: Request<Incoming>,
    ) -> Result<Invocation, (StatusCode, ErrorBody, Option<HeaderValue>)> {
        let (parts, body) = req.into_parts();
        let h = &parts.headers;
        let header_id = h.get(H_EXECUTION_ID).cloned();
        let bad = |msg: String| {
            (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(ErrorCode::InvalidRequest, msg),
                header_id.clone(),
            )
        };
        let timeout = match h.get(H_TIMEOUT_MS) {
            None => self.cfg.timeout,
            Some(v) => parse_timeout(v.as_bytes()).ok_or_else(|| {
                bad(format!(
                    "{} must be a positive whole number of milliseconds",
                    headers::TIMEOUT_MS
                ))
            })?,
        };
        let body = match Limited::new(body, self.cfg.max_payload_bytes)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorBody::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "the body is larger than MAX_PAYLOAD_BYTES ({} bytes)",
                            self.cfg.max_payload_bytes
                        ),
                    ),
                    header_id.clone(),
                ))
            }
            Err(e) => return Err(bad(format!("cannot read the body: {e}"))),
        };
        if let Some(id) = header_id.clone() {
            if id.is_empty() {
                return Err(bad(format!("{} is empty", headers::EXECUTION_ID)));
            }
            if let Err(e) = check_body(&body) {
                return Err(bad(e));
            }
            let callback = match h.get(H_CALLBACK_URL) {
                None => None,
                Some(v) => {
                    let url = v
                        .to_str()
                        .ok()
                        .and_then(|s| HttpUrl::parse(s).ok())
                        .ok_or_else(|| {
                            bad(format!("{} is not an http:// URL", headers::CALLBACK_URL))
                        })?;
                    let token = h
                        .get(H_CALLBACK_TOKEN)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    Some((url, token))
                }
            };
            return Ok(Invocation {
                form: Form::Header,
                execution_id: id,
                trace_id: h.get(H_TRACE_ID).cloned(),
                traceparent: h.get(H_TRACEPARENT).cloned(),
                attempt: h.get(H_DISPATCH_ATTEMPT).cloned(),
                body,
                timeout,
                callback,
                runtime_start: AtomicU64::new(0),
                runtime_took: AtomicU64::new(0),
            });
        }
        let env = parse_envelope(&body, h.get(H_TRACE_ID), timeout).map_err(bad)?;
        Ok(Invocation {
            form: Form::Envelope,
            execution_id: env.execution_id,
            trace_id: env.trace_id,
            traceparent: h.get(H_TRACEPARENT).cloned(),
            attempt: h.get(H_DISPATCH_ATTEMPT).cloned(),
            body: env.payload,
            timeout: env.timeout,
            callback: env.callback,
            runtime_start: AtomicU64::new(0),
            runtime_took: AtomicU64::new(0),
        })
    }

    /// Waits for a slot (FIFO), then runs the invocation.
    async fn execute(&self, inv: &Invocation, deadline: Instant) -> Result<Bytes, ErrorBody> {
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(ErrorBody::new(ErrorCode::ShuttingDown, "the watchdog is shutting down"))
            }
            Err(_) => {
                return Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    format!(
                        "the invocation waited {} ms for a free slot (WARM_CONCURRENCY={}) and timed out",
                        inv.timeout.as_millis(),
                        self.warm.concurrency
                    ),
                ))
            }
        };
        match self.warm.runtime {
            RuntimeKind::Http => {
                let id = inv.execution_id.to_str().unwrap_or("");
                let _span = self
                    .sup
                    .as_ref()
                    .and_then(|s| s.output.as_ref())
                    .map(|o| o.begin(id));
                self.call_runtime(inv, deadline).await
            }
            RuntimeKind::Stdio => {
                let started = Instant::now();
                let r = exec::run_stdio(self.command_run(inv, deadline), inv.body.clone()).await;
                inv.took(started);
                self.count_timeout(&r);
                r
            }
            RuntimeKind::File => {
                let dir = TempDir::new().map_err(|e| {
                    ErrorBody::new(
                        ErrorCode::Internal,
                        format!("cannot create a temporary directory: {e}"),
                    )
                })?;
                let (input, output) = (
                    dir.path().join("input.json"),
                    dir.path().join("output.json"),
                );
                let started = Instant::now();
                let r = exec::run_file(self.command_run(inv, deadline), &inv.body, &input, &output)
                    .await;
                inv.took(started);
                self.count_timeout(&r);
                r
            }
        }
    }

    fn count_timeout(&self, r: &Result<Bytes, ErrorBody>) {
        if matches!(r, Err(e) if e.code == ErrorCode::Timeout.as_str()) {
            self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn command_run(&self, inv: &Invocation, deadline: Instant) -> Run<'_> {
        let mut env: Vec<(&'static str, OsString)> =
            vec![("EXECUTION_ID", header_os(&inv.execution_id))];
        if let Some(t) = &inv.trace_id {
            env.push(("TRACE_ID", header_os(t)));
        }
        if let Some(t) = &inv.traceparent {
            env.push(("TRACEPARENT", header_os(t)));
        }
        Run {
            argv: &self.cfg.command,
            env,
            deadline,
            timeout: inv.timeout,
            max_output: self.cfg.max_payload_bytes,
            // One process per call: all its output is this invocation's.
            tag: crate::warm::output::enabled()
                .then(|| inv.execution_id.to_str().ok().map(str::to_string))
                .flatten(),
        }
    }

    /// The hot path: forward to the warm HTTP runtime.
    async fn call_runtime(&self, inv: &Invocation, deadline: Instant) -> Result<Bytes, ErrorBody> {
        let sup = self.sup.as_ref().expect("an HTTP runtime has a supervisor");
        let lease = sup.lease(deadline).await?;
        if lease.waited_for_start {
            let ms = lease.runtime.start_took.as_millis() as u64;
            inv.runtime_start.store(ms + 1, Ordering::Relaxed);
        }
        let mut h = HeaderMap::with_capacity(5);
        h.insert(CONTENT_TYPE, JSON);
        h.insert(H_EXECUTION_ID, inv.execution_id.clone());
        if let Some(t) = &inv.trace_id {
            h.insert(H_TRACE_ID, t.clone());
        }
        if let Some(t) = &inv.traceparent {
            h.insert(H_TRACEPARENT, t.clone());
        }
        if let Some(a) = &inv.attempt {
            h.insert(H_DISPATCH_ATTEMPT, a.clone());
        }
        let started = Instant::now();
        let result = lease.runtime.pool.post(h, inv.body.clone(), deadline).await;
        inv.took(started);
        let gen = lease.runtime.gen;
        let last = self.warm.max_invocations > 0 && lease.index == self.warm.max_invocations;
        drop(lease);
        match result {
            Err(CallError::Timeout) => {
                sup.kill(gen, KillReason::Timeout).await;
                Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    format!(
                        "the invocation did not finish within {} ms; the runtime was killed and is being restarted",
                        inv.timeout.as_millis()
                    ),
                ))
            }
            Err(CallError::TooLarge(n)) => {
                if last {
                    sup.retire(gen).await;
                }
                Err(ErrorBody::new(
                    ErrorCode::FunctionError,
                    format!("the runtime's answer is larger than MAX_PAYLOAD_BYTES ({n} bytes)"),
                ))
            }
            Err(e) => {
                sup.kill(gen, KillReason::Lost).await;
                if let Some(oom) = crate::oom::error("the runtime") {
                    return Err(oom);
                }
                Err(ErrorBody::new(
                    ErrorCode::InstanceLost,
                    format!("{e}; the runtime is being restarted"),
                ))
            }
            Ok((status, body)) => {
                if last {
                    sup.retire(gen).await;
                }
                if status.is_success() {
                    Ok(body)
                } else {
                    Err(error_from_response(status.as_u16(), &body))
                }
            }
        }
    }

    fn respond(&self, inv: &Invocation, result: Result<Bytes, ErrorBody>) -> Resp {
        let mut r = self.respond_with(inv, result);
        let start = inv.runtime_start.load(Ordering::Relaxed);
        if start > 0 {
            r.headers_mut().insert(
                headers::RUNTIME_START_MS,
                HeaderValue::from_str(&(start - 1).to_string()).expect("digits"),
            );
        }
        let took = inv.runtime_took.load(Ordering::Relaxed);
        if took > 0 {
            r.headers_mut()
                .insert(headers::RUNTIME_DURATION_US, HeaderValue::from(took - 1));
        }
        r
    }

    fn respond_with(&self, inv: &Invocation, result: Result<Bytes, ErrorBody>) -> Resp {
        match (inv.form, result) {
            (Form::Header, Ok(body)) => {
                let mut r = json_response(body);
                r.headers_mut()
                    .insert(H_EXECUTION_ID, inv.execution_id.clone());
                r
            }
            (Form::Header, Err(e)) => error_response(status_of(&e), &e, Some(&inv.execution_id)),
            (Form::Envelope, Ok(body)) => {
                let body = if body.is_empty() || serde_json::from_slice::<IgnoredAny>(&body).is_ok()
                {
                    body
                } else {
                    exec::to_json(&body)
                };
                let mut r = json_response(callback::body(&Ok(body)));
                r.headers_mut()
                    .insert(H_EXECUTION_ID, inv.execution_id.clone());
                r
            }
            (Form::Envelope, Err(e)) => {
                let mut r = json_response(callback::body(&Err(e.clone())));
                *r.status_mut() = status_of(&e);
                r.headers_mut()
                    .insert(H_EXECUTION_ID, inv.execution_id.clone());
                r
            }
        }
    }

    /// Posts the callback off the hot path; shutdown waits for it.
    fn spawn_callback(
        &self,
        inv: &Invocation,
        url: HttpUrl,
        token: Option<String>,
        result: &Result<Bytes, ErrorBody>,
    ) {
        let result = match result {
            Ok(b) if !b.is_empty() && serde_json::from_slice::<IgnoredAny>(b).is_err() => {
                Ok(exec::to_json(b))
            }
            other => other.clone(),
        };
        let target = Target {
            base: url,
            execution_id: String::from_utf8_lossy(inv.execution_id.as_bytes()).into_owned(),
            trace_id: inv
                .trace_id
                .as_ref()
                .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned()),
            traceparent: inv
                .traceparent
                .as_ref()
                .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned()),
            token,
        };
        let policy = self.cfg.callback.clone();
        let guard = self.tasks.enter();
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = callback::deliver(&target, callback::body(&result), &policy).await {
                crate::warn!(
                    "callback for execution {} not delivered: {e}",
                    target.execution_id
                );
            }
        });
    }
}

fn header_os(v: &HeaderValue) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(v.as_bytes()).to_os_string()
}

/// The header form's body check: one complete JSON value under the platform's rules
/// ([`nanofaas_api::json`]); the body is forwarded as it is.
pub fn check_body(body: &[u8]) -> Result<(), String> {
    nanofaas_api::json::check(body, nanofaas_api::json::Rules::DATA)
        .map_err(|e| format!("the body is not valid JSON: {e}"))
}

/// An envelope-form request, checked.
#[derive(Debug)]
pub struct Envelope {
    pub execution_id: HeaderValue,
    pub trace_id: Option<HeaderValue>,
    pub timeout: Duration,
    pub callback: Option<(HttpUrl, Option<String>)>,
    /// The payload, serialised again, to forward to the runtime.
    pub payload: Bytes,
}

/// Parses and checks the envelope form's body; `header_trace` and `timeout` are what the
/// request's headers and the configuration say when the envelope does not.
pub fn parse_envelope(
    body: &[u8],
    header_trace: Option<&HeaderValue>,
    mut timeout: Duration,
) -> Result<Envelope, String> {
    let bad_envelope = |e: &dyn std::fmt::Display| {
        format!(
            "no {} header, and the body is not a valid envelope \
             {{execution_id, payload, callback_url?, trace_id?, timeout_ms?}}: {e}",
            headers::EXECUTION_ID
        )
    };
    nanofaas_api::json::check(body, nanofaas_api::json::Rules::DATA)
        .map_err(|e| bad_envelope(&e))?;
    let env: WarmEnvelope = serde_json::from_slice(body).map_err(|e| bad_envelope(&e))?;
    if env.execution_id.is_empty() {
        return Err("execution_id is empty".into());
    }
    let execution_id = HeaderValue::from_str(&env.execution_id)
        .map_err(|_| "execution_id contains characters not allowed in a header".to_string())?;
    let trace_id = match &env.trace_id {
        None => header_trace.cloned(),
        Some(t) => Some(
            HeaderValue::from_str(t)
                .map_err(|_| "trace_id contains characters not allowed in a header".to_string())?,
        ),
    };
    if let Some(ms) = env.timeout_ms {
        if ms == 0 {
            return Err("timeout_ms must be positive".into());
        }
        timeout = Duration::from_millis(ms.min(1_000_000_000));
    }
    let callback = match &env.callback_url {
        None => None,
        Some(u) if u.is_empty() => None,
        Some(u) => Some((
            HttpUrl::parse(u).map_err(|e| format!("callback_url: {e}"))?,
            env.callback_token.clone(),
        )),
    };
    let payload = serde_json::to_vec(&env.payload)
        .map_err(|e| format!("payload cannot be serialised: {e}"))?;
    Ok(Envelope {
        execution_id,
        trace_id,
        timeout,
        callback,
        payload: Bytes::from(payload),
    })
}

fn parse_timeout(v: &[u8]) -> Option<Duration> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn status_of(e: &ErrorBody) -> StatusCode {
    StatusCode::from_u16(status_for_error(&e.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

fn error_response(status: StatusCode, e: &ErrorBody, id: Option<&HeaderValue>) -> Resp {
    let body =
        serde_json::to_vec(&serde_json::json!({ "error": e })).expect("error body serialises");
    let mut r = json_response(Bytes::from(body));
    *r.status_mut() = status;
    if let Some(id) = id {
        r.headers_mut().insert(H_EXECUTION_ID, id.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_strictly() {
        assert_eq!(parse_timeout(b"1500"), Some(Duration::from_millis(1500)));
        for bad in [&b""[..], b"0", b"-1", b"1.5", b"abc", b"99999999999"] {
            assert_eq!(
                parse_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_after_quiet_period() {
        let a = Arc::new(Activity::new());
        let idle = Duration::from_millis(300);
        let a2 = a.clone();
        let watcher = tokio::spawn(async move { idle_timeout(&a2, idle).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // An invocation starts at 200 ms and lasts 500 ms: no exit while it runs.
        a.begin();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!watcher.is_finished());
        a.end();
        // 700 ms: idle since now; the watchdog may exit at 1000 ms, not before.
        tokio::time::sleep(Duration::from_millis(290)).await;
        assert!(!watcher.is_finished());
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::task::yield_now().await;
        assert!(watcher.is_finished());
    }

    #[tokio::test]
    async fn tasks_idle_waits_for_guards() {
        let t = Tasks::default();
        let g = t.enter();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.idle().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
