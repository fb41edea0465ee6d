//! Prewarmed instances ("stem cells"): per runtime kind, a few started, healthy, generic
//! instances that a cold start can take and specialize for its function instead of starting one
//! (see `docs/concepts.md#prewarmed-instances` and the watchdog's `POST /specialize`).
//!
//! A [`Kind`] is what a generic instance can become: the runtime `command` (argv exactly; for a
//! container provider the `image` and its `runtimeCommand`), with `runtimeMode: HTTP`,
//! `executionMode: DEPLOYMENT`, and the watchdog settings that are fixed at its start
//! (`instanceConcurrency`, `timeoutMs`). Kinds are learned from the registered
//! functions (counted: a kind goes, and its instances are stopped, with the last function of
//! it). The pool keeps `count` instances per kind, refilled in the background after each take;
//! start failures back off exponentially; a kind whose runtime turns out not to speak the
//! protocol is disabled (logged once). A taken instance is the caller's: it is never handed out
//! again.
//!
//! Owns: which generic instances exist per kind and when to start more. It does not start,
//! specialize or stop processes itself; a [`Stems`] does (the process provider). The state sits
//! behind one mutex, never held across an `.await`.

use crate::dispatch::BoxFuture;
use crate::provider::{Instance, StartFailure};
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{ExecutionMode, FunctionSpec, RuntimeMode};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// What a generic instance answered to `POST /specialize` (see [`specialize`]).
#[derive(Debug)]
pub enum Specialized {
    /// It is the function's now.
    Done,
    /// 501: its runtime cannot be specialized (the kind should be turned off).
    NotSpecializable(String),
    /// 500: the function's code failed to load in it (`STARTUP_ERROR` with this message).
    LoadFailed(String),
    /// Anything else (unreachable, no answer, another status): start one cold instead.
    Refused(String),
}

/// Sends the watchdog of generic instance `stem` its function (`body`: the `POST /specialize`
/// document) and sorts the answer. `what` names the instance in messages ("instance",
/// "container").
pub async fn specialize(
    client: &crate::dispatch::HttpClient,
    stem: &Instance,
    body: &[u8],
    timeout: Duration,
    what: &str,
) -> Specialized {
    let endpoint =
        match crate::dispatch::instance_endpoint(&stem.invoke_url, stem.socket.as_deref()) {
            Ok(e) => e,
            Err(e) => {
                return Specialized::Refused(format!("cannot reach the prewarmed {what}: {e}"))
            }
        };
    let uri: http::Uri = match stem
        .invoke_url
        .to_string()
        .replace("/invoke", "/specialize")
        .parse()
    {
        Ok(u) => u,
        Err(e) => {
            return Specialized::Refused(format!("no specialize URL for the prewarmed {what}: {e}"))
        }
    };
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    let r = crate::dispatch::send(
        client,
        &endpoint,
        &uri,
        "POST",
        &[("content-type", "application/json")],
        body,
        64 * 1024,
        deadline,
    )
    .await;
    match r {
        Ok(resp) if (200..300).contains(&resp.status) => Specialized::Done,
        Ok(resp) => {
            let e = nanofaas_api::invocation::error_from_response(resp.status, &resp.body);
            match resp.status {
                501 => Specialized::NotSpecializable(e.message),
                500 => Specialized::LoadFailed(e.message),
                _ => Specialized::Refused(format!("the prewarmed {what} refused: {}", e.message)),
            }
        }
        Err(e) => Specialized::Refused(format!("the prewarmed {what} did not answer: {e}")),
    }
}

/// How many generic instances to keep, and how to back off when they fail to start.
#[derive(Debug, Clone)]
pub struct PrewarmSettings {
    /// Per kind; 0 turns prewarming off.
    pub count: usize,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

/// What a generic instance can become.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    /// The process provider: the runtime's argv. Container providers ([`Kind::of_image`]): the
    /// spec's `runtimeCommand` as its one element (the watchdog's `WATCHDOG_CMD`), or empty for
    /// the image's own.
    pub command: Vec<String>,
    /// Container providers: the image the generic containers run (the function's code is in
    /// it); `None` for processes.
    pub image: Option<String>,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

/// Variables a function's `env` may not set for its instance to be a specialized generic one:
/// they configure the watchdog, the runtime's address, the JVM's options, or what the Python
/// interpreter and the dynamic loader read once at their start (a generic instance has started
/// both: setting them later changes nothing, e.g. `PYTHONPATH` would not reach `sys.path`).
/// A name ending in `_` is a prefix; the others are exact names.
const FIXED_AT_START: &[&str] = &[
    "WARM_",
    "EXECUTION_MODE",
    "WATCHDOG_",
    "RUNTIME_",
    "PORT",
    "HOST",
    "NANOFAAS_",
    "TIMEOUT_MS",
    "JAVA",
    "JAVA_OPTS",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "LD_",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONHASHSEED",
    "PYTHONOPTIMIZE",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "PYTHONMALLOC",
    "PYTHONUTF8",
];

fn fixed_at_start(name: &str) -> bool {
    FIXED_AT_START.iter().any(|p| {
        if p.ends_with('_') {
            name.starts_with(p)
        } else {
            name == *p
        }
    })
}

/// Whether a generic instance can become one of `spec`'s at all: a warm HTTP runtime whose
/// environment sets nothing fixed at the start.
fn specializable(spec: &FunctionSpec) -> bool {
    spec.execution_mode == ExecutionMode::Deployment
        && spec.runtime_mode == RuntimeMode::Http
        && !spec.env.keys().any(|k| fixed_at_start(k))
}

impl Kind {
    /// The kind of `spec`, if a generic instance can become one of its instances (the process
    /// provider: by its `command`).
    pub fn of(spec: &FunctionSpec) -> Option<Kind> {
        if !specializable(spec) {
            return None;
        }
        Some(Kind {
            command: spec.command.clone()?,
            image: None,
            concurrency: spec.instance_concurrency,
            timeout_ms: spec.timeout_ms,
        })
    }

    /// The kind of `spec` for a container provider: by its `image` and `runtimeCommand`.
    pub fn of_image(spec: &FunctionSpec) -> Option<Kind> {
        if !specializable(spec) {
            return None;
        }
        Some(Kind {
            command: spec.runtime_command.clone().into_iter().collect(),
            image: Some(spec.image.clone()?),
            concurrency: spec.instance_concurrency,
            timeout_ms: spec.timeout_ms,
        })
    }

    /// The command as one would type it; for an image, the image (and its `runtimeCommand`).
    pub fn label(&self) -> String {
        match &self.image {
            None => nanofaas_api::command::join(&self.command),
            Some(i) if self.command.is_empty() => i.clone(),
            Some(i) => format!("{i} ({})", self.command.join(" ")),
        }
    }
}

/// Starts and stops generic instances (the provider).
pub trait Stems: Send + Sync + 'static {
    fn start_stem(&self, kind: &Kind, id: String) -> BoxFuture<'_, Result<Instance, StartFailure>>;
    fn stop_stem(&self, id: String) -> BoxFuture<'_, ()>;
}

/// One kind, as `GET /v1/prewarmed` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindStatus {
    pub command: String,
    /// Container providers: the image of the generic containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub instance_concurrency: u32,
    pub timeout_ms: u64,
    /// Functions of this kind.
    pub functions: usize,
    /// Ready generic instances (their ids).
    pub ready: Vec<String>,
    pub starting: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Resident memory held by the ready ones (watchdog and runtime), where the provider knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

struct Stem {
    instance: Instance,
}

#[derive(Default)]
struct KindState {
    refs: usize,
    ready: VecDeque<Stem>,
    starting: usize,
    failures: u32,
    backoff_until: Option<Instant>,
    retry_armed: bool,
    disabled: Option<String>,
    last_error: Option<String>,
}

#[derive(Default)]
struct State {
    kinds: HashMap<Kind, KindState>,
    closed: bool,
}

struct Inner {
    settings: PrewarmSettings,
    stems: OnceLock<Weak<dyn Stems>>,
    state: Mutex<State>,
}

/// The generic instances of every kind. Cheap to clone.
#[derive(Clone)]
pub struct PrewarmPool {
    inner: Arc<Inner>,
}

fn stem_id() -> String {
    let id = crate::ids::trace_id();
    format!("prewarm-{}", &id[..12])
}

impl PrewarmPool {
    pub fn new(settings: PrewarmSettings) -> Self {
        PrewarmPool {
            inner: Arc::new(Inner {
                settings,
                stems: OnceLock::new(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Who starts and stops the instances (set once, right after the provider is built).
    pub fn attach(&self, stems: Weak<dyn Stems>) {
        let _ = self.inner.stems.set(stems);
    }

    pub fn enabled(&self) -> bool {
        self.inner.settings.count > 0
    }

    /// A function of `kind` was registered.
    pub fn register(&self, kind: Kind) {
        if !self.enabled() {
            return;
        }
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            return;
        }
        st.kinds.entry(kind.clone()).or_default().refs += 1;
        Inner::refill(&self.inner, &mut st, &kind);
    }

    /// A function of `kind` is gone; with the last one, the kind's instances are stopped.
    pub fn unregister(&self, kind: &Kind) {
        let stops = {
            let mut st = self.inner.state.lock().unwrap();
            let Some(k) = st.kinds.get_mut(kind) else {
                return;
            };
            k.refs = k.refs.saturating_sub(1);
            if k.refs > 0 {
                return;
            }
            let k = st.kinds.remove(kind).expect("present");
            k.ready
                .into_iter()
                .map(|s| s.instance.id)
                .collect::<Vec<_>>()
        };
        if !stops.is_empty() {
            tracing::info!(kind = %kind.label(), instances = stops.len(), "no function of this kind is left: stopping its prewarmed instances");
        }
        self.inner.stop_all(stops);
    }

    /// A ready generic instance of `kind`, now the caller's; a new one is started to replace
    /// it. `None` when none is ready.
    pub fn take(&self, kind: &Kind) -> Option<Instance> {
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            return None;
        }
        let k = st.kinds.get_mut(kind)?;
        let mut dead = Vec::new();
        let mut found = None;
        while let Some(s) = k.ready.pop_front() {
            if s.instance.exited.borrow().is_some() {
                dead.push(s.instance.id);
                continue;
            }
            found = Some(s.instance);
            break;
        }
        Inner::refill(&self.inner, &mut st, kind);
        drop(st);
        self.inner.stop_all(dead);
        found
    }

    /// How many generic instances of `kind` are ready to be taken now (live ones only).
    pub fn ready(&self, kind: &Kind) -> usize {
        let st = self.inner.state.lock().unwrap();
        st.kinds.get(kind).map_or(0, |k| {
            k.ready
                .iter()
                .filter(|s| s.instance.exited.borrow().is_none())
                .count()
        })
    }

    /// The runtime of `kind` cannot be specialized: keep none of it any more.
    pub fn disable(&self, kind: &Kind, why: &str) {
        let stops = {
            let mut st = self.inner.state.lock().unwrap();
            let Some(k) = st.kinds.get_mut(kind) else {
                return;
            };
            if k.disabled.is_some() {
                return;
            }
            tracing::warn!(kind = %kind.label(), reason = %why, "prewarming turned off for this runtime kind");
            k.disabled = Some(why.to_string());
            k.ready.drain(..).map(|s| s.instance.id).collect::<Vec<_>>()
        };
        self.inner.stop_all(stops);
    }

    /// No more starts; the ready instances are handed back for the caller to stop (the provider
    /// stops everything it owns at shutdown, starting ones included).
    pub fn close(&self) -> Vec<String> {
        let mut st = self.inner.state.lock().unwrap();
        st.closed = true;
        st.kinds
            .values_mut()
            .flat_map(|k| k.ready.drain(..).map(|s| s.instance.id))
            .collect()
    }

    /// Whether `id` is a generic instance waiting in the pool.
    pub fn holds(&self, id: &str) -> bool {
        let st = self.inner.state.lock().unwrap();
        st.kinds
            .values()
            .any(|k| k.ready.iter().any(|s| s.instance.id == id))
    }

    pub fn status(&self) -> Vec<KindStatus> {
        let st = self.inner.state.lock().unwrap();
        let mut v: Vec<KindStatus> = st
            .kinds
            .iter()
            .map(|(kind, k)| KindStatus {
                command: kind.label(),
                image: kind.image.clone(),
                instance_concurrency: kind.concurrency,
                timeout_ms: kind.timeout_ms,
                functions: k.refs,
                ready: k.ready.iter().map(|s| s.instance.id.clone()).collect(),
                starting: k.starting,
                disabled: k.disabled.clone(),
                last_error: k.last_error.clone(),
                memory_bytes: None,
            })
            .collect();
        v.sort_by(|a, b| a.command.cmp(&b.command));
        v
    }
}

impl Inner {
    fn stems(&self) -> Option<Arc<dyn Stems>> {
        self.stems.get().and_then(Weak::upgrade)
    }

    fn stop_all(self: &Arc<Self>, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let Some(stems) = self.stems() else { return };
        for id in ids {
            let stems = stems.clone();
            tokio::spawn(async move { stems.stop_stem(id).await });
        }
    }

    /// Starts what `kind` lacks, unless it is gone, disabled or backing off (then a retry is
    /// armed for the end of the backoff). The caller holds the state lock.
    fn refill(self: &Arc<Self>, st: &mut State, kind: &Kind) {
        let closed = st.closed;
        let Some(k) = st.kinds.get_mut(kind) else {
            return;
        };
        if closed || k.refs == 0 || k.disabled.is_some() {
            return;
        }
        if let Some(until) = k.backoff_until {
            if Instant::now() < until {
                if !k.retry_armed {
                    k.retry_armed = true;
                    let inner = Arc::downgrade(self);
                    let kind = kind.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(until).await;
                        let Some(inner) = inner.upgrade() else { return };
                        let mut st = inner.state.lock().unwrap();
                        if let Some(k) = st.kinds.get_mut(&kind) {
                            k.retry_armed = false;
                        }
                        Inner::refill(&inner, &mut st, &kind);
                    });
                }
                return;
            }
        }
        let want = self
            .settings
            .count
            .saturating_sub(k.ready.len() + k.starting);
        for _ in 0..want {
            k.starting += 1;
            let inner = self.clone();
            let kind = kind.clone();
            tokio::spawn(async move {
                let id = stem_id();
                let result = match inner.stems() {
                    Some(stems) => stems.start_stem(&kind, id.clone()).await,
                    None => Err(StartFailure {
                        message: "the provider is gone".into(),
                        permanent: true,
                    }),
                };
                inner.started(&kind, result);
            });
        }
    }

    fn started(self: &Arc<Self>, kind: &Kind, result: Result<Instance, StartFailure>) {
        let mut st = self.state.lock().unwrap();
        let closed = st.closed;
        let Some(k) = st.kinds.get_mut(kind) else {
            // The kind went while this one started.
            drop(st);
            if let Ok(inst) = result {
                self.stop_all(vec![inst.id]);
            }
            return;
        };
        k.starting = k.starting.saturating_sub(1);
        match result {
            Ok(inst) => {
                if closed || k.disabled.is_some() {
                    drop(st);
                    self.stop_all(vec![inst.id]);
                    return;
                }
                k.failures = 0;
                k.backoff_until = None;
                k.last_error = None;
                tracing::debug!(kind = %kind.label(), instance = %inst.id, "prewarmed instance ready");
                let exited = inst.exited.clone();
                let id = inst.id.clone();
                k.ready.push_back(Stem { instance: inst });
                tokio::spawn(watch_stem(Arc::downgrade(self), kind.clone(), id, exited));
            }
            Err(f) => {
                k.failures += 1;
                let delay = Backoff::new(self.settings.backoff, self.settings.backoff_max)
                    .delay(k.failures);
                k.backoff_until = Some(Instant::now() + delay);
                tracing::warn!(kind = %kind.label(), failures = k.failures, backoff_ms = delay.as_millis() as u64, error = %f.message, "prewarmed instance failed to start");
                k.last_error = Some(f.message);
            }
        }
        Inner::refill(self, &mut st, kind);
    }
}

/// A ready generic instance that dies is dropped from the pool and replaced.
async fn watch_stem(
    inner: Weak<Inner>,
    kind: Kind,
    id: String,
    mut exited: crate::provider::ExitWatch,
) {
    crate::provider::exit::wait_exit(&mut exited).await;
    let Some(inner) = inner.upgrade() else { return };
    let mut st = inner.state.lock().unwrap();
    let Some(k) = st.kinds.get_mut(&kind) else {
        return;
    };
    let before = k.ready.len();
    k.ready.retain(|s| s.instance.id != id);
    if k.ready.len() < before {
        let why = exited.borrow().clone().unwrap_or_default();
        tracing::warn!(kind = %kind.label(), instance = %id, reason = %why, "prewarmed instance died while waiting; replacing it");
        Inner::refill(&inner, &mut st, &kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, oneshot, watch};

    /// What the fake was asked.
    #[derive(Debug, PartialEq, Eq)]
    enum Call {
        Start(Vec<String>),
        Stop(String),
    }

    /// A scripted provider: every start waits for the test's answer, every call is recorded
    /// in order and must be expected by the test.
    struct Fake {
        calls: mpsc::UnboundedSender<(Call, Option<oneshot::Sender<StartAnswer>>)>,
    }

    enum StartAnswer {
        Ok(watch::Receiver<Option<String>>),
        Err(&'static str),
    }

    impl Stems for Fake {
        fn start_stem(
            &self,
            kind: &Kind,
            id: String,
        ) -> BoxFuture<'_, Result<Instance, StartFailure>> {
            let (tx, rx) = oneshot::channel();
            let _ = self
                .calls
                .send((Call::Start(kind.command.clone()), Some(tx)));
            Box::pin(async move {
                match rx.await {
                    Ok(StartAnswer::Ok(exited)) => Ok(Instance {
                        id: id.clone(),
                        invoke_url: "http://127.0.0.1:1/invoke".parse().unwrap(),
                        health_url: "http://127.0.0.1:1/health".parse().unwrap(),
                        socket: None,
                        exited,
                    }),
                    Ok(StartAnswer::Err(m)) => Err(StartFailure {
                        message: m.into(),
                        permanent: false,
                    }),
                    Err(_) => Err(StartFailure {
                        message: "test dropped".into(),
                        permanent: false,
                    }),
                }
            })
        }

        fn stop_stem(&self, id: String) -> BoxFuture<'_, ()> {
            let _ = self.calls.send((Call::Stop(id), None));
            Box::pin(async {})
        }
    }

    struct Harness {
        pool: PrewarmPool,
        _fake: Arc<dyn Stems>,
        calls: mpsc::UnboundedReceiver<(Call, Option<oneshot::Sender<StartAnswer>>)>,
        /// Senders that keep the fake instances alive (drop or send to kill one).
        alive: Vec<watch::Sender<Option<String>>>,
    }

    fn kind(cmd: &str) -> Kind {
        Kind {
            command: vec![cmd.into()],
            image: None,
            concurrency: 1,
            timeout_ms: 1000,
        }
    }

    fn harness(count: usize) -> Harness {
        let (tx, rx) = mpsc::unbounded_channel();
        let fake: Arc<dyn Stems> = Arc::new(Fake { calls: tx });
        let pool = PrewarmPool::new(PrewarmSettings {
            count,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
        });
        pool.attach(Arc::downgrade(&fake));
        Harness {
            pool,
            _fake: fake,
            calls: rx,
            alive: Vec::new(),
        }
    }

    impl Harness {
        /// The next call, within a second of (paused) time: a call that never comes fails.
        async fn next(&mut self) -> (Call, Option<oneshot::Sender<StartAnswer>>) {
            tokio::time::timeout(Duration::from_secs(1), self.calls.recv())
                .await
                .expect("an expected call never came")
                .expect("fake alive")
        }

        /// Expects a start of `cmd` and lets it succeed.
        async fn start_ok(&mut self, cmd: &str) {
            let (call, tx) = self.next().await;
            assert_eq!(call, Call::Start(vec![cmd.into()]));
            let (alive, exited) = watch::channel(None);
            self.alive.push(alive);
            let _ = tx.unwrap().send(StartAnswer::Ok(exited));
            settle().await;
        }

        async fn start_err(&mut self, cmd: &str) {
            let (call, tx) = self.next().await;
            assert_eq!(call, Call::Start(vec![cmd.into()]));
            let _ = tx.unwrap().send(StartAnswer::Err("boom"));
            settle().await;
        }

        async fn stop(&mut self) -> String {
            match self.next().await {
                (Call::Stop(id), _) => id,
                (other, _) => panic!("expected a stop, got {other:?}"),
            }
        }

        /// No call is pending, nor comes within `d`.
        async fn quiet(&mut self, d: Duration) {
            if let Ok(Some((call, _))) = tokio::time::timeout(d, self.calls.recv()).await {
                panic!("unexpected call {call:?}");
            }
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_count_per_kind_and_refills_after_a_take() {
        let mut h = harness(2);
        let py = kind("python");
        assert!(h.pool.take(&py).is_none(), "unknown kind");
        assert_eq!(h.pool.ready(&py), 0);
        h.pool.register(py.clone());
        h.start_ok("python").await;
        h.start_ok("python").await;
        h.quiet(Duration::from_secs(5)).await;
        assert_eq!(h.pool.ready(&py), 2);
        assert_eq!(h.pool.ready(&kind("java")), 0, "per kind");
        // A second function of the same kind adds nothing.
        h.pool.register(py.clone());
        h.quiet(Duration::from_secs(1)).await;
        assert_eq!(h.pool.status()[0].ready.len(), 2);
        let a = h.pool.take(&py).expect("a ready one");
        assert!(!h.pool.holds(&a.id), "a taken instance is the caller's");
        // One start to replace it, no more.
        h.start_ok("python").await;
        h.quiet(Duration::from_secs(1)).await;
        let b = h.pool.take(&py).unwrap();
        let c = h.pool.take(&py).unwrap();
        assert_eq!(h.pool.ready(&py), 0, "both taken");
        assert!(a.id != b.id && b.id != c.id && a.id != c.id);
        assert!(
            h.pool.take(&py).is_none(),
            "none ready: the caller starts cold"
        );
        h.start_ok("python").await;
        h.start_ok("python").await;
        h.quiet(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn start_failures_back_off_exponentially() {
        let mut h = harness(1);
        h.pool.register(kind("java"));
        h.start_err("java").await;
        // 100 ms, then 200, then 400, capped at 400.
        for wait in [100u64, 200, 400, 400] {
            h.quiet(Duration::from_millis(wait - 1)).await;
            h.start_err("java").await;
        }
        assert_eq!(h.pool.status()[0].last_error.as_deref(), Some("boom"));
        h.quiet(Duration::from_millis(399)).await;
        h.start_ok("java").await;
        assert_eq!(h.pool.status()[0].last_error, None);
        h.quiet(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_function_of_a_kind_takes_its_instances_along() {
        let mut h = harness(2);
        let py = kind("python");
        h.pool.register(py.clone());
        h.pool.register(py.clone());
        h.start_ok("python").await;
        // The second start is still under way when the kind goes.
        let (call, pending) = h.next().await;
        assert_eq!(call, Call::Start(vec!["python".into()]));
        h.pool.unregister(&py);
        h.quiet(Duration::from_millis(10)).await;
        h.pool.unregister(&py);
        let ready = h.stop().await;
        assert!(ready.starts_with("prewarm-"));
        // The one that was starting is stopped as soon as it is up.
        let (alive, exited) = watch::channel(None);
        let _ = pending.unwrap().send(StartAnswer::Ok(exited));
        settle().await;
        let late = h.stop().await;
        assert_ne!(ready, late);
        drop(alive);
        assert!(h.pool.status().is_empty());
        h.quiet(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_waiting_instance_is_replaced_and_never_handed_out() {
        let mut h = harness(1);
        let py = kind("python");
        h.pool.register(py.clone());
        h.start_ok("python").await;
        h.alive[0].send_replace(Some("killed".into()));
        settle().await;
        h.start_ok("python").await;
        let got = h.pool.take(&py).unwrap();
        assert!(got.exited.borrow().is_none());
        h.start_ok("python").await;
        // Died between the watch and the take: skipped, stopped, and replaced.
        h.alive[2].send_replace(Some("killed".into()));
        assert!(h.pool.take(&py).is_none());
        let mut calls = vec![h.next().await.0, h.next().await.0];
        calls.sort_by_key(|c| format!("{c:?}"));
        assert!(matches!(&calls[0], Call::Start(_)), "{calls:?}");
        assert!(matches!(&calls[1], Call::Stop(_)), "{calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_kinds_and_a_closed_pool_start_nothing() {
        let mut h = harness(1);
        let py = kind("python");
        let rs = kind("rust");
        h.pool.register(py.clone());
        h.start_ok("python").await;
        h.pool.disable(&py, "answered 404");
        h.stop().await;
        assert!(h.pool.take(&py).is_none());
        assert_eq!(h.pool.status()[0].disabled.as_deref(), Some("answered 404"));
        h.quiet(Duration::from_secs(5)).await;
        h.pool.register(rs.clone());
        h.start_ok("rust").await;
        let held = h.pool.close();
        assert_eq!(held.len(), 1);
        assert!(h.pool.take(&rs).is_none());
        h.pool.register(kind("java"));
        h.quiet(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn count_zero_is_off() {
        let mut h = harness(0);
        assert!(!h.pool.enabled());
        h.pool.register(kind("python"));
        h.quiet(Duration::from_secs(5)).await;
        assert!(h.pool.status().is_empty());
    }

    #[test]
    fn kinds_of_specs() {
        let spec = |v: serde_json::Value| -> FunctionSpec { serde_json::from_value(v).unwrap() };
        let k = Kind::of(&spec(
            serde_json::json!({"name": "f", "command": ["python3", "-m", "x"]}),
        ))
        .unwrap();
        assert_eq!(k.label(), "python3 -m x");
        for not in [
            serde_json::json!({"name": "f", "image": "i"}),
            serde_json::json!({"name": "f", "command": ["c"], "runtimeMode": "STDIO"}),
            serde_json::json!({"name": "f", "command": ["c"], "executionMode": "JOB"}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"WARM_LEASE_MS": "1"}}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"PORT": "1"}}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"JAVA_OPTS": "-Xmx1g"}}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"JDK_JAVA_OPTIONS": "x"}}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"PYTHONPATH": "/lib"}}),
            serde_json::json!({"name": "f", "command": ["c"], "env": {"LD_PRELOAD": "x.so"}}),
        ] {
            assert_eq!(Kind::of(&spec(not.clone())), None, "{not}");
        }
        let img = Kind::of_image(&spec(serde_json::json!(
            {"name": "f", "image": "nanofaas/example:1", "command": ["ignored"]}
        )))
        .unwrap();
        assert_eq!(img.image.as_deref(), Some("nanofaas/example:1"));
        assert!(img.command.is_empty(), "a command is not the image's");
        assert_eq!(img.label(), "nanofaas/example:1");
        let rc = Kind::of_image(&spec(serde_json::json!(
            {"name": "f", "image": "i", "runtimeCommand": "python3 -m x"}
        )))
        .unwrap();
        assert_eq!(rc.label(), "i (python3 -m x)");
        assert_ne!(rc, img);
        for not in [
            serde_json::json!({"name": "f", "command": ["c"]}),
            serde_json::json!({"name": "f", "image": "i", "executionMode": "JOB"}),
            serde_json::json!({"name": "f", "image": "i", "env": {"WARM_PREWARM": "0"}}),
            serde_json::json!({"name": "f", "image": "i", "env": {"PYTHONHASHSEED": "0"}}),
        ] {
            assert_eq!(Kind::of_image(&spec(not.clone())), None, "{not}");
        }
        // Exact names are not prefixes: a function's own PORTAL_URL or JAVA_HOME is its env.
        for env in [
            serde_json::json!({"PORTAL_URL": "u"}),
            serde_json::json!({"JAVA_HOME": "/j"}),
        ] {
            let s = serde_json::json!({"name": "f", "command": ["c"], "env": env});
            assert!(Kind::of(&spec(s.clone())).is_some(), "{s}");
        }
    }
}
