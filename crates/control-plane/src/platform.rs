//! The platform: what every API route calls. It owns the registry, the execution store, the
//! idempotency keys and the callback authority, and runs executions: admission, attempts and
//! retries through the function's backend, completion, metrics and the per-execution log line.
//!
//! It must not know HTTP (the `api` module maps its results to responses) nor what a backend
//! does behind [`Backend::dispatch`].

use crate::admission::{Admission, Permit, Reject};
use crate::auth::{CallbackAuth, TokenError};
use crate::dispatch::{Backend, BoxFuture, Call, EndpointBackend, HttpClient, StartKind};
use crate::error::ApiError;
use crate::executions::{
    CallbackVerdict, Execution, ExecutionStore, Failure, FailureKind, Mode, Outcome, StoreLimits,
};
use crate::idempotency::{self, Claim, Idempotency};
use crate::metrics::{FunctionMetrics, Metrics};
use crate::persist::{FinishedRecord, Journal, Pending, SpecStore};
use crate::ratelimit::TokenBucket;
use crate::registry::{Function, Registry};
use bytes::Bytes;
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{
    CallbackPayload, ErrorBody, ErrorCode, ExecutionMode, FunctionSpec, ValidationError,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Builds what serves a function. The default handles `POOL`; providers add `DEPLOYMENT` and `JOB`.
pub trait BackendFactory: Send + Sync + 'static {
    /// Checks that this control plane can run `spec` and builds its backend. Errors name the
    /// spec field at fault.
    fn create(
        &self,
        spec: &Arc<FunctionSpec>,
        metrics: &Arc<FunctionMetrics>,
    ) -> Result<Arc<dyn Backend>, ValidationError>;

    /// Called once at start-up, before any function is registered: clean up what a previous
    /// run left behind.
    fn prepare(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Called once at shutdown, after every function's backend was shut down.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The instances serving function `name`, if this factory manages any.
    fn instances(&self, _name: &str) -> Option<serde_json::Value> {
        None
    }

    /// The prewarmed instances per runtime kind (`GET /v1/prewarmed`).
    fn prewarmed(&self) -> serde_json::Value {
        serde_json::json!([])
    }

    /// How many prewarmed instances a cold start of `spec` could take now.
    fn prewarmed_for(&self, _spec: &FunctionSpec) -> usize {
        0
    }
}

/// Serves `POOL` functions only.
pub struct EndpointFactory {
    pub client: HttpClient,
}

impl BackendFactory for EndpointFactory {
    fn create(
        &self,
        spec: &Arc<FunctionSpec>,
        _metrics: &Arc<FunctionMetrics>,
    ) -> Result<Arc<dyn Backend>, ValidationError> {
        match spec.execution_mode {
            ExecutionMode::Pool => {
                let url = spec.endpoint_url.as_deref().unwrap_or_default();
                let b = EndpointBackend::new(self.client.clone(), url)
                    .map_err(|r| ValidationError::new("endpointUrl", r))?;
                Ok(Arc::new(b))
            }
            other => Err(ValidationError::new(
                "executionMode",
                format!(
                    "{} needs an instance provider, and none is configured",
                    other.as_str()
                ),
            )),
        }
    }
}

/// Behaviour settings of the platform (from the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of the callback URL handed to instances: `{base}/{executionId}:complete`.
    pub callback_base_url: String,
    pub max_output_bytes: usize,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub store: StoreLimits,
    pub global_rate_per_second: Option<f64>,
}

/// An invocation as the API received it.
#[derive(Debug, Default)]
pub struct InvokeInput {
    /// A validated InvocationRequest, forwarded as is.
    pub body: Bytes,
    pub trace_id: Option<String>,
    /// A valid `traceparent` the caller sent (its trace id is then `trace_id`).
    pub traceparent: Option<crate::trace::TraceParent>,
    pub timeout_ms: Option<u64>,
    pub idempotency_key: Option<String>,
}

/// Where specs and the async journal are kept; `None` in [`Platform::new`] keeps nothing.
pub struct Persistence {
    pub specs: SpecStore,
    pub journal: Journal,
}

pub struct Platform {
    pub registry: Registry,
    persistence: Option<Persistence>,
    /// Serialises register/replace/delete so the registry and the spec files agree.
    mutations: std::sync::Mutex<()>,
    pub store: ExecutionStore,
    pub idempotency: Idempotency,
    pub metrics: Arc<Metrics>,
    auth: CallbackAuth,
    callback_base: Arc<str>,
    factory: Arc<dyn BackendFactory>,
    settings: Settings,
    global_rate: Option<TokenBucket>,
    shutting_down: AtomicBool,
    running: AtomicUsize,
    running_changed: Notify,
    /// Export of finished executions' traces, when `telemetry.otlp_endpoint` is set.
    exporter: std::sync::OnceLock<Arc<crate::otlp::Exporter>>,
}

/// Runs a future inline, in the caller's task; if it is dropped before it finishes (the HTTP
/// client went away and the server dropped the request), what is left of it runs to the end in
/// a task of its own. An accepted execution thus always finishes, without paying a task
/// hand-off per invocation.
struct Detach<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static> {
    fut: Option<std::pin::Pin<Box<F>>>,
}

impl<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static> Detach<F, T> {
    fn new(fut: F) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static> std::future::Future
    for Detach<F, T>
{
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let fut = self.fut.as_mut().expect("polled after completion");
        let out = fut.as_mut().poll(cx);
        if out.is_ready() {
            self.fut = None;
        }
        out
    }
}

impl<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static> Drop for Detach<F, T> {
    fn drop(&mut self) {
        if let Some(rest) = self.fut.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = rest.await;
                });
            }
        }
    }
}

/// Counts an execution as running (for the shutdown drain) while alive.
struct RunningGuard<'a>(&'a Platform);

impl<'a> RunningGuard<'a> {
    fn new(p: &'a Platform) -> Self {
        p.running.fetch_add(1, Ordering::SeqCst);
        Self(p)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.running_changed.notify_waiters();
        }
    }
}

fn backpressure(r: Reject, function: &str) -> ApiError {
    let (reason, retry_after, message) = match r {
        Reject::Depth { retry_after } => (
            "depth",
            retry_after,
            format!("the queue of function {function:?} is full"),
        ),
        Reject::EstWait { retry_after } => (
            "est_wait",
            retry_after,
            format!("function {function:?} is saturated: the estimated wait exceeds the timeout"),
        ),
        Reject::Timeout { retry_after } => (
            "timeout",
            retry_after,
            format!("function {function:?} had no free slot before the timeout"),
        ),
        Reject::Closed => {
            return ApiError::NotFound(format!("function {function:?} was removed"));
        }
    };
    ApiError::Backpressure {
        reason,
        retry_after,
        message,
    }
}

impl Platform {
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        auth: CallbackAuth,
        factory: Arc<dyn BackendFactory>,
        persistence: Option<Persistence>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry: Registry::default(),
            persistence,
            mutations: std::sync::Mutex::new(()),
            store: ExecutionStore::new(settings.store.clone(), metrics.clone()),
            idempotency: Idempotency::default(),
            metrics,
            auth,
            callback_base: settings.callback_base_url.as_str().into(),
            factory,
            global_rate: settings.global_rate_per_second.map(TokenBucket::new),
            settings,
            shutting_down: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            running_changed: Notify::new(),
            exporter: std::sync::OnceLock::new(),
        })
    }

    /// Exports every finished execution's trace from now on (set once, at start-up).
    pub fn set_exporter(&self, x: Arc<crate::otlp::Exporter>) {
        let _ = self.exporter.set(x);
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    fn build(&self, spec: FunctionSpec) -> Result<Arc<Function>, ApiError> {
        spec.validate()?;
        let spec = Arc::new(spec);
        let metrics = self.metrics.function(&spec.name);
        let backend = self.factory.create(&spec, &metrics)?;
        Ok(Arc::new(Function {
            name: spec.name.as_str().into(),
            admission: Admission::new(spec.concurrency, spec.queue_size, metrics.clone()),
            rate: spec.rate_limit_per_second.map(TokenBucket::new),
            backend,
            metrics,
            spec,
        }))
    }

    /// `POST /v1/functions`.
    pub fn register(self: &Arc<Self>, spec: FunctionSpec) -> Result<Arc<FunctionSpec>, ApiError> {
        let _serial = self.mutations.lock().unwrap();
        if self.registry.get(&spec.name).is_some() {
            return Err(ApiError::AlreadyExists(spec.name));
        }
        let f = self.build(spec)?;
        if let Err(e) = self.save_spec(&f.spec) {
            self.retire(f, true);
            return Err(e);
        }
        if let Err(lost) = self.registry.insert_new(f.clone()) {
            let name = lost.name.to_string();
            self.retire(lost, true);
            return Err(ApiError::AlreadyExists(name));
        }
        tracing::info!(function = %f.name, mode = f.spec.execution_mode.as_str(), "function registered");
        Ok(f.spec.clone())
    }

    fn save_spec(&self, spec: &FunctionSpec) -> Result<(), ApiError> {
        match &self.persistence {
            Some(p) => p
                .specs
                .save(spec)
                .map_err(|e| ApiError::Internal(format!("cannot store the function: {e}"))),
            None => Ok(()),
        }
    }

    /// Registers the specs, keeps the results of async invocations that had finished, and
    /// resumes those that had not, from before a restart. Invocations of functions that are gone
    /// fail visibly with INTERRUPTED.
    pub fn restore(
        self: &Arc<Self>,
        specs: Vec<FunctionSpec>,
        pending: Vec<Pending>,
        finished: Vec<FinishedRecord>,
    ) {
        for spec in specs {
            let name = spec.name.clone();
            match self.build(spec) {
                Ok(f) => {
                    self.registry.upsert(f);
                }
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "a stored function can no longer be registered")
                }
            }
        }
        let now = crate::executions::now_ms();
        let kept = finished.len();
        for r in finished {
            let age = Duration::from_millis(now.saturating_sub(r.finished_at));
            self.store.insert_finished(Execution::from_finished(r), age);
        }
        let resumed = pending.len();
        for p in pending {
            let exec = Execution::resumed(
                p.id.as_str().into(),
                p.function.as_str().into(),
                p.trace_id.as_str().into(),
                p.body,
                p.created_at,
                p.attempts,
            );
            self.store.insert(exec.clone());
            let Some(f) = self.registry.get(&p.function) else {
                let outcome = Outcome::Failure(Failure::new(
                    FailureKind::Fatal,
                    ErrorCode::Interrupted,
                    format!(
                        "the control plane restarted and function {:?} is no longer registered",
                        p.function
                    ),
                ));
                self.store.finish(&exec, outcome);
                self.journal_finished(&exec);
                continue;
            };
            let timeout = Duration::from_millis(f.spec.timeout_ms);
            let (me, func, ex) = (self.clone(), f.clone(), exec.clone());
            exec.trace.mark_queued();
            let _ = f.admission.submit_accepted(move |permit| match permit {
                Ok(permit) => {
                    tokio::spawn(async move {
                        let _running = RunningGuard::new(&me);
                        me.run(&func, &ex, permit, timeout).await;
                    });
                }
                Err(_closed) => me.finish(&func, &ex, removed_outcome(&func.name)),
            });
        }
        if resumed > 0 || kept > 0 {
            tracing::info!(
                resumed,
                finished = kept,
                "resumed async invocations accepted before the restart, kept the results of finished ones"
            );
        }
    }

    /// Journals the logs of an async execution (beside its record; see `logs`).
    fn journal_logs_of(&self, id: &str, json: Vec<u8>) {
        if let Some(p) = &self.persistence {
            p.journal.logs(id, json);
        }
    }

    fn journal_finished(&self, exec: &Execution) {
        if exec.mode != Mode::Async {
            return;
        }
        if let (Some(p), Some(rec)) = (&self.persistence, exec.finished_record()) {
            p.journal.finished(&rec);
        }
    }

    /// `PUT /v1/functions/{name}`: creates or replaces. Returns whether it was created.
    pub fn put(
        self: &Arc<Self>,
        spec: FunctionSpec,
    ) -> Result<(bool, Arc<FunctionSpec>), ApiError> {
        let _serial = self.mutations.lock().unwrap();
        let f = self.build(spec)?;
        if let Err(e) = self.save_spec(&f.spec) {
            self.retire(f, true);
            return Err(e);
        }
        let old = self.registry.upsert(f.clone());
        let created = old.is_none();
        if let Some(old) = old {
            tracing::info!(function = %f.name, "function replaced; the previous version drains");
            self.retire(old, false);
        } else {
            tracing::info!(function = %f.name, mode = f.spec.execution_mode.as_str(), "function registered");
        }
        Ok((created, f.spec.clone()))
    }

    /// `DELETE /v1/functions/{name}`.
    pub fn delete(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        let _serial = self.mutations.lock().unwrap();
        let f = self.registry.remove(name).ok_or_else(|| not_found(name))?;
        if let Some(p) = &self.persistence {
            if let Err(e) = p.specs.remove(name) {
                tracing::error!(function = %name, error = %e, "cannot remove the stored function; it will come back after a restart");
            }
        }
        self.idempotency.forget_function(name);
        self.metrics.remove_function(name);
        tracing::info!(function = %name, "function deleted");
        self.retire(f, true);
        Ok(())
    }

    /// Lets a function that left the registry finish its work, then stops its backend. A removed
    /// function fails its queued work with FUNCTION_REMOVED; a replaced one drains its queue.
    fn retire(self: &Arc<Self>, f: Arc<Function>, removed: bool) {
        if removed {
            f.admission.close();
        }
        tokio::spawn(async move {
            f.admission.wait_idle().await;
            f.admission.close();
            f.backend.shutdown().await;
        });
    }

    fn lookup(&self, name: &str) -> Result<Arc<Function>, ApiError> {
        if self.is_shutting_down() {
            return Err(ApiError::ShuttingDown);
        }
        self.registry.get(name).ok_or_else(|| not_found(name))
    }

    fn check_rate(&self, f: &Function) -> Result<(), ApiError> {
        let limited = |wait: Duration, scope: &str| {
            f.metrics.rate_limited.inc();
            ApiError::Backpressure {
                reason: "rate",
                retry_after: wait,
                message: format!("the {scope} rate limit is exceeded"),
            }
        };
        if let Some(g) = &self.global_rate {
            g.try_take().map_err(|w| limited(w, "global"))?;
        }
        if let Some(r) = &f.rate {
            r.try_take()
                .map_err(|w| limited(w, &format!("function {:?}", f.name.as_ref())))?;
        }
        Ok(())
    }

    fn timeout_of(f: &Function, input: &InvokeInput) -> Duration {
        let ms = input
            .timeout_ms
            .map_or(f.spec.timeout_ms, |t| t.min(f.spec.timeout_ms))
            .max(1);
        Duration::from_millis(ms)
    }

    /// Creates the execution, honouring the idempotency key. `Err(existing)` when the key
    /// names an earlier execution with the same request.
    fn open(
        &self,
        f: &Function,
        input: &InvokeInput,
        mode: Mode,
    ) -> Result<Result<Arc<Execution>, Arc<Execution>>, ApiError> {
        let trace: Arc<str> = match &input.trace_id {
            Some(t) => t.as_str().into(),
            None => crate::ids::trace_id().into(),
        };
        let exec = Execution::new(
            crate::ids::execution_id().into(),
            f.name.clone(),
            mode,
            trace,
            match mode {
                // Queued work may wait long: keep an exact-size copy, not a slice pinning the
                // connection's read buffer.
                Mode::Async => Bytes::copy_from_slice(&input.body),
                Mode::Sync => input.body.clone(),
            },
        );
        if let Some(tp) = &input.traceparent {
            exec.trace.set_parent(tp);
        }
        self.store.insert(exec.clone());
        if let Some(key) = &input.idempotency_key {
            match self.idempotency.claim(
                &f.name,
                key,
                idempotency::digest(&input.body),
                &exec,
                &self.store,
            ) {
                Claim::New => {}
                Claim::Existing(prev) => {
                    self.store.discard(&exec.id);
                    self.metrics.global.idempotent_replays.inc();
                    return Ok(Err(prev));
                }
                Claim::Conflict(id) => {
                    self.store.discard(&exec.id);
                    return Err(ApiError::IdempotencyConflict {
                        key: key.clone(),
                        execution_id: id.to_string(),
                    });
                }
            }
        }
        Ok(Ok(exec))
    }

    /// `:invoke`: runs the function and waits for its outcome. Once accepted, the execution
    /// runs to its end in its own task even if the caller goes away.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        input: InvokeInput,
    ) -> Result<(Arc<Execution>, Outcome), ApiError> {
        let f = self.lookup(name)?;
        self.check_rate(&f)?;
        let exec = match self.open(&f, &input, Mode::Sync)? {
            Ok(e) => e,
            Err(prev) => {
                let outcome = prev.wait_final().await;
                return Ok((prev, outcome));
            }
        };
        let timeout = Self::timeout_of(&f, &input);
        let (me, ex) = (self.clone(), exec.clone());
        let task = Detach::new(async move {
            let _running = RunningGuard::new(&me);
            ex.trace.mark_queued();
            match f.admission.acquire(Instant::now() + timeout).await {
                Ok(permit) => Ok(me.run(&f, &ex, permit, timeout).await),
                Err(Reject::Closed) => {
                    let outcome = removed_outcome(&f.name);
                    me.finish(&f, &ex, outcome.clone());
                    Ok(outcome)
                }
                Err(r) => {
                    me.store.discard(&ex.id);
                    f.metrics.queue_rejected.inc();
                    Err(backpressure(r, &f.name))
                }
            }
        });
        task.await.map(|o| (exec, o))
    }

    /// `:enqueue`: accepts the invocation (journaled before the answer) and runs it in the
    /// background.
    pub async fn enqueue(
        self: &Arc<Self>,
        name: &str,
        input: InvokeInput,
    ) -> Result<Arc<Execution>, ApiError> {
        let f = self.lookup(name)?;
        self.check_rate(&f)?;
        let exec = match self.open(&f, &input, Mode::Async)? {
            Ok(e) => e,
            Err(prev) => return Ok(prev),
        };
        if let Some(p) = &self.persistence {
            let written = p.journal.accepted(
                &exec.id,
                &f.name,
                &exec.trace_id,
                exec.created_at,
                &input.body,
            );
            // Finishes (submits, or discards) even if the caller goes away meanwhile.
            let me = self.clone();
            return Detach::new(async move {
                if let Err(e) = written.await {
                    me.store.discard(&exec.id);
                    return Err(ApiError::Internal(format!(
                        "cannot record the invocation durably: {e}"
                    )));
                }
                me.submit_async(f, exec, input)
            })
            .await;
        }
        self.submit_async(f, exec, input)
    }

    fn submit_async(
        self: &Arc<Self>,
        f: Arc<Function>,
        exec: Arc<Execution>,
        input: InvokeInput,
    ) -> Result<Arc<Execution>, ApiError> {
        let name = f.name.clone();
        let timeout = Self::timeout_of(&f, &input);
        let (me, func, ex) = (self.clone(), f.clone(), exec.clone());
        exec.trace.mark_queued();
        let submitted = f.admission.submit(move |permit| match permit {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _running = RunningGuard::new(&me);
                    me.run(&func, &ex, permit, timeout).await;
                });
            }
            Err(_closed) => {
                me.finish(&func, &ex, removed_outcome(&func.name));
            }
        });
        match submitted {
            Ok(()) => {
                f.metrics.enqueue.inc();
                Ok(exec)
            }
            Err(r) => {
                self.store.discard(&exec.id);
                if let Some(p) = &self.persistence {
                    p.journal.dropped(&exec.id);
                }
                f.metrics.queue_rejected.inc();
                Err(backpressure(r, &name))
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.settings.retry_backoff, self.settings.retry_backoff_max).delay(attempt)
    }

    /// Runs the attempts of `exec` while holding `permit`, and records the final outcome.
    async fn run(
        &self,
        f: &Function,
        exec: &Arc<Execution>,
        permit: Permit,
        timeout: Duration,
    ) -> Outcome {
        let m = &f.metrics;
        exec.trace.mark_admitted();
        m.queue_wait
            .observe(permit.acquired().saturating_duration_since(exec.created));
        // A resumed execution continues its count; its runs before the restart use up its
        // budget, but it always gets at least one more.
        let mut attempt = exec.attempt();
        let max_attempts = f.spec.max_retries.max(1).max(attempt + 1);
        let outcome = loop {
            attempt += 1;
            let Some(body) = exec.begin_attempt(attempt) else {
                return exec.result().unwrap_or_else(|| removed_outcome(&f.name));
            };
            if exec.mode == Mode::Async {
                if let Some(p) = &self.persistence {
                    p.journal.started(&exec.id, attempt);
                }
            }
            m.dispatch.inc();
            exec.trace.attempt_started(attempt);
            let call = Call {
                exec: exec.clone(),
                spec: f.spec.clone(),
                attempt,
                body,
                timeout,
                callback_base: self.callback_base.clone(),
                auth: self.auth.clone(),
                max_output_bytes: self.settings.max_output_bytes,
            };
            let started = Instant::now();
            // The backend enforces the timeout; this bound only guards against a backend bug.
            let guard = timeout + Duration::from_secs(5);
            let result = match tokio::time::timeout(guard, f.backend.dispatch(&call)).await {
                Ok(r) => r,
                Err(_) => Outcome::Failure(Failure::new(
                    FailureKind::Timeout,
                    ErrorCode::Timeout,
                    format!(
                        "the function did not answer within {} ms",
                        timeout.as_millis()
                    ),
                ))
                .into(),
            };
            m.latency.observe(started.elapsed());
            exec.trace.attempt_ended(attempt, result.start.init());
            if let Some(d) = exec.trace.runtime_of(attempt) {
                m.runtime.observe(d);
            }
            exec.mark_start(result.start);
            match result.start {
                StartKind::Cold { init } => {
                    m.cold_start.inc();
                    m.cold_start_duration.observe(init);
                }
                StartKind::Prewarmed { init } => {
                    m.prewarmed_start.inc();
                    m.prewarmed_start_duration.observe(init);
                }
                StartKind::StartFailed => m.start_failed.inc(),
                _ => m.warm_start.inc(),
            }
            let outcome = exec.resolve_attempt(attempt, result.outcome);
            if let Outcome::Failure(fail) = &outcome {
                let retryable = match fail.kind {
                    FailureKind::Platform => true,
                    FailureKind::Function | FailureKind::Timeout => {
                        exec.mode == Mode::Async && f.spec.retry_function_errors
                    }
                    FailureKind::Fatal => false,
                };
                if retryable && attempt < max_attempts {
                    m.retry.inc();
                    tracing::debug!(function = %f.name, execution_id = %exec.id, attempt, error = %fail.error, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            }
            break outcome;
        };
        self.finish(f, exec, outcome.clone());
        drop(permit);
        outcome
    }

    fn finish(&self, f: &Function, exec: &Arc<Execution>, outcome: Outcome) {
        let status = outcome.status();
        if !self.store.finish(exec, outcome) {
            return;
        }
        if let Some(x) = self.exporter.get() {
            x.offer(exec);
        }
        self.journal_finished(exec);
        let m = &f.metrics;
        match status {
            nanofaas_api::ExecutionStatus::Success => m.success.inc(),
            nanofaas_api::ExecutionStatus::Timeout => {
                m.timeout.inc();
                m.error.inc();
            }
            _ => m.error.inc(),
        }
        let e2e = exec.created.elapsed();
        m.e2e_latency.observe(e2e);
        let (cold, _) = exec.cold_start();
        tracing::info!(
            target: "nanofaas::execution",
            function = %exec.function,
            execution_id = %exec.id,
            trace_id = %exec.trace_id,
            mode = exec.mode.as_str(),
            status = status.as_str(),
            attempts = exec.attempt(),
            cold_start = cold,
            start = exec.start().map_or("none", |s| s.as_str()),
            duration_us = e2e.as_micros() as u64,
            "execution finished"
        );
    }

    /// `GET /v1/prewarmed`.
    pub fn prewarmed(&self) -> serde_json::Value {
        self.factory.prewarmed()
    }

    /// The prewarmed instances a cold start of `spec` could take now (the dashboard's count).
    pub fn prewarmed_for(&self, spec: &FunctionSpec) -> usize {
        self.factory.prewarmed_for(spec)
    }

    /// `GET /v1/functions/{name}/instances`.
    pub fn instances(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        self.registry.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .factory
            .instances(name)
            .unwrap_or_else(|| serde_json::json!([])))
    }

    /// `POST /v1/internal/executions/{id}:complete`.
    pub fn complete(
        &self,
        id: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<CallbackVerdict, ApiError> {
        let g = &self.metrics.global;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            g.callbacks_rejected.inc();
            return Err(ApiError::Unauthorized);
        };
        let attempt = match self.auth.verify(id, token) {
            Ok(a) => a,
            Err(TokenError::Malformed | TokenError::Mismatch) => {
                g.callbacks_rejected.inc();
                return Err(ApiError::Forbidden);
            }
        };
        let payload: CallbackPayload = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("callback body is not a valid result: {e}"))
        })?;
        let verdict = match self.store.get(id) {
            None => CallbackVerdict::Stale,
            Some(exec) => exec.deliver_callback(attempt, callback_outcome(payload)),
        };
        match verdict {
            CallbackVerdict::Recorded => g.callbacks_recorded.inc(),
            CallbackVerdict::Duplicate | CallbackVerdict::Stale => {
                g.callbacks_ignored.inc();
                tracing::debug!(execution_id = %id, attempt, ?verdict, "callback ignored");
            }
        }
        Ok(verdict)
    }

    /// Drops expired execution records and idempotency keys. Runs every `interval` until the
    /// platform is dropped.
    pub fn spawn_housekeeping(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                p.store.sweep();
                p.idempotency.sweep(&p.store);
            }
        })
    }

    /// Stops accepting invocations, waits up to `grace` for running ones, then stops every
    /// function's backend.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let n = self.running_changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let running = self.running.load(Ordering::SeqCst);
            if running == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                tracing::warn!(
                    running,
                    "shutdown grace period over; stopping with executions still running"
                );
                break;
            }
        }
        let functions = self.registry.drain();
        for f in &functions {
            f.admission.close();
        }
        for f in functions {
            f.backend.shutdown().await;
        }
        self.factory.shutdown().await;
        // What ended during the drain is on disk before the process exits.
        if let Some(p) = &self.persistence {
            p.journal.flush().await;
        }
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("function {name:?} does not exist"))
}

fn removed_outcome(name: &str) -> Outcome {
    Outcome::Failure(Failure::new(
        FailureKind::Fatal,
        ErrorCode::FunctionRemoved,
        format!("function {name:?} was removed before the invocation ran"),
    ))
}

/// A callback's body as an outcome.
pub fn callback_outcome(p: CallbackPayload) -> Outcome {
    if p.success {
        let out = p.output.unwrap_or(serde_json::Value::Null);
        return Outcome::Success(Bytes::from(
            serde_json::to_vec(&out).unwrap_or_else(|_| b"null".to_vec()),
        ));
    }
    let error = p.error.unwrap_or_else(|| {
        ErrorBody::new(
            ErrorCode::FunctionError,
            "the function reported a failure without details",
        )
    });
    let kind = match ErrorCode::parse(&error.code) {
        Some(ErrorCode::Timeout) => FailureKind::Timeout,
        Some(ErrorCode::InstanceLost | ErrorCode::StartupError | ErrorCode::SpawnError) => {
            FailureKind::Platform
        }
        _ => FailureKind::Function,
    };
    Outcome::Failure(Failure { error, kind })
}

impl crate::logs::Lookup for Platform {
    fn execution(&self, id: &str) -> Option<(Arc<str>, bool, Option<u64>)> {
        let e = self.store.get(id)?;
        let finished_at = match e.status().is_final() {
            true => Some(e.trace_facts().finished_at.unwrap_or(0)),
            false => None,
        };
        Some((
            e.function.clone(),
            e.mode == Mode::Async && self.persistence.is_some(),
            finished_at,
        ))
    }

    fn journal_logs(&self, id: &str, json: Vec<u8>) {
        self.journal_logs_of(id, json);
    }
}
