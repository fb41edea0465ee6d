//! The `kubernetes` provider: each instance is a Pod that the pool creates and deletes (no
//! Deployment or ReplicaSet in between: the pool decides an instance's life), reached at its
//! pod IP and the watchdog's port. Built on `kube` and `k8s-openapi`.
//!
//! - [`config`]: credentials (service account or kubeconfig and context) and the token bucket
//!   every API request goes through (`api_qps`, `api_burst`).
//! - [`pod`]: the pods, as pure functions of the settings and the spec: the function's image
//!   with the watchdog as its command (warm mode, or one-shot for JOB), resources as requests
//!   and limits, a readiness probe on `/health`, the restricted security context, labels
//!   `app.kubernetes.io/managed-by=nanofaas`, `nanofaas.dev/function`, `nanofaas.dev/instance`,
//!   `nanofaas.dev/owner` (this control plane's id) and the configured labels and annotations.
//! - [`watch`]: one watcher over this control plane's pods drives every instance's state:
//!   ready, start errors (image pulls, crash loops, unschedulable), and loss (deleted from
//!   outside, evicted, its node gone, its container ended), which fires the instance's
//!   `exited` so the pool replaces it and calls fail over as for a killed process.
//! - [`orphans`]: at start, pods of this owner that the provider does not know are deleted;
//!   in a cluster every pod also carries an owner reference to the control plane's own pod
//!   (`POD_NAME`, `POD_UID` from the downward API), so Kubernetes' garbage collector removes
//!   them if that pod goes.
//!
//! `stop`, scale-down, idle reaping, `DELETE` and shutdown delete pods with the stop grace as
//! their grace period and return once the watch has seen them go (then forced, bounded).
//! A start fails with the reason Kubernetes gives (the pod's status, its warning events and,
//! for a container that ended, its log's last lines) within `provider.startup_timeout_ms`.

pub mod config;
mod orphans;
pub mod pod;
pub mod watch;

use super::shared::{join_all, TAIL_LINES};
use super::{
    ExitWatch, Instance, InstanceInfo, Job, JobRequest, Provider, StartFailure, StartRequest,
};
use crate::dispatch::BoxFuture;
use config::{ApiStats, Source};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event as K8sEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{ExecutionMode, FunctionSpec, ValidationError};
use pod::{PodSettings, LABEL_OWNER};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as tw;
use tokio::time::Instant;
use watch::PodState;

/// How long a deletion may take beyond its grace period before it is forced, and a forced one
/// before the provider stops waiting.
const DELETE_EXTRA: Duration = Duration::from_secs(10);
/// Limit on the calls that only add detail to an error (events, logs).
const DETAIL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the logs hub is told that a ready pod's log stream is still opening, at most.
const LOG_OPEN_MAX: Duration = Duration::from_secs(10);
/// Not-yet-created marker of [`Entry::created_gen`].
const NOT_CREATED: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    pub source: Source,
    /// Empty: the credentials' namespace.
    pub namespace: String,
    pub api_qps: f64,
    pub api_burst: u32,
    pub pod: PodSettings,
    /// Base of JOB callback URLs (the control plane's Service); empty: as given.
    pub callback_url: String,
    /// This control plane's pod namespace (`POD_NAMESPACE`): an owner reference only works
    /// within one namespace.
    pub own_namespace: Option<String>,
    /// `timeoutSeconds` of each watch request.
    pub watch_timeout_s: u32,
    /// A start fails once its pod has been unschedulable this long (`None`: only at the start
    /// timeout, so that a cluster autoscaler has that long to add a node).
    pub unschedulable_grace: Option<Duration>,
    /// Follow each pod's log (`pods/log?follow=true`) into the logs hub.
    pub follow_logs: bool,
}

/// One pod this provider knows.
struct Entry {
    instance: String,
    function: String,
    kind: &'static str,
    state: tw::Sender<PodState>,
    exit: tw::Sender<Option<String>>,
    gone: tw::Sender<bool>,
    /// The watch generation when the pod's creation returned ([`NOT_CREATED`] before).
    created_gen: AtomicU64,
    /// A deletion was sent.
    deleting: AtomicBool,
    /// A deletion was sent once the pod was terminal.
    terminal_delete: AtomicBool,
    /// Its start is under way: a pod that ends now is deleted by the start (after it read the
    /// pod's events and log for the error), not at once by the watch.
    starting: AtomicBool,
}

impl Entry {
    fn exited(&self) -> ExitWatch {
        self.exit.subscribe()
    }

    fn end(&self, why: &str) {
        self.exit.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(why.to_string());
                true
            } else {
                false
            }
        });
    }
}

/// Clears [`Entry::starting`] when the start is done (or dropped).
struct StartingGuard<'a>(&'a Entry);

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        self.0.starting.store(false, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Shared {
    /// By pod name.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Incremented by every (re-)list of the watch.
    generation: AtomicU64,
}

impl Shared {
    fn get(&self, pod: &str) -> Option<Arc<Entry>> {
        self.entries.lock().unwrap().get(pod).cloned()
    }

    /// A pod event: its state to its entry; a pod that ended is deleted (once).
    fn apply(&self, p: &Pod, pods: &Api<Pod>) {
        let Some(name) = p.metadata.name.as_deref() else {
            return;
        };
        let Some(e) = self.get(name) else { return };
        let st = watch::interpret(p);
        if let PodState::Ended { reason, .. } = &st {
            e.end(reason);
            // A pod that ended is deleted at once; so is one whose graceful deletion left it
            // terminal (its containers stopped: nothing is left to wait for).
            let terminal = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            if e.starting.load(Ordering::SeqCst) {
                e.state.send_replace(st);
                return;
            }
            let first = !e.deleting.swap(true, Ordering::SeqCst);
            let again = terminal && !e.terminal_delete.swap(true, Ordering::SeqCst);
            if first || again {
                let pods = pods.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    let _ = pods
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                });
            }
        }
        e.state.send_replace(st);
    }

    /// The pod is gone from the API.
    fn deleted(&self, pod: &str, why: &str) {
        let Some(e) = self.entries.lock().unwrap().remove(pod) else {
            return;
        };
        e.end(why);
        e.state.send_replace(PodState::Ended {
            reason: why.to_string(),
            exit_code: None,
        });
        e.gone.send_replace(true);
    }

    /// After a (re-)list that began at generation `generation`: the pods created before it
    /// that it did not show were deleted while nobody watched.
    fn missing(&self, listed: &HashSet<String>, generation: u64) {
        let lost: Vec<String> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, e)| {
                e.created_gen.load(Ordering::SeqCst) < generation && !listed.contains(*name)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in lost {
            self.deleted(
                &name,
                "the pod was deleted (seen when the watch listed again)",
            );
        }
    }
}

/// What connecting gives.
struct Conn {
    pods: Api<Pod>,
    events: Api<K8sEvent>,
    namespace: String,
    /// `settings.pod` with the owner reference this namespace allows.
    pod: PodSettings,
    watcher: tokio::task::AbortHandle,
}

pub struct KubernetesProvider {
    settings: KubernetesSettings,
    shared: Arc<Shared>,
    conn: tokio::sync::OnceCell<Conn>,
    closed: AtomicBool,
    stats: Arc<ApiStats>,
    /// Where the lines pods write go (see `crate::logs`).
    logs: std::sync::OnceLock<Arc<crate::logs::Logs>>,
}

/// Reconnections of one pod's log stream that ended while its pod still ran.
const LOG_RECONNECTS: u32 = 5;
/// How long to watch for the pod's exit before reconnection `n` of its log stream.
const LOG_RECONNECT_WAIT: Backoff =
    Backoff::new(Duration::from_millis(400), Duration::from_millis(6400));

/// Follows a pod's log (`pods/log?follow=true`) and hands every line to `logs` (the watchdog
/// tags its runtime's lines; see `crate::logs`), until the stream ends with the container or
/// the instance has ended. A stream that ends while the instance still lives (an API server or
/// kubelet restart) is resumed from then on (`tailLines=0`: lines written in between are lost,
/// none is repeated), at most [`LOG_RECONNECTS`] times.
async fn follow_pod_log(
    pods: Api<Pod>,
    name: String,
    function: String,
    instance: String,
    exited: ExitWatch,
    logs: Arc<crate::logs::Logs>,
    opened: Option<tokio::sync::oneshot::Sender<()>>,
) {
    use futures_util::io::AsyncReadExt;
    let mut opened = opened;
    let mut attempt = 0u32;
    loop {
        let lp = LogParams {
            container: Some(pod::CONTAINER.into()),
            follow: true,
            tail_lines: (attempt > 0).then_some(0),
            ..Default::default()
        };
        // The first request is made even when the instance has ended: a terminated
        // container's log is served whole while its pod exists (a quick JOB).
        let mut exited_now = exited.clone();
        let stream = tokio::select! {
            r = pods.log_stream(&name, &lp) => Some(r),
            _ = super::exit::wait_exit(&mut exited_now), if attempt > 0 => None,
        };
        // The start waits for this (bounded): lines written from now on are followed live.
        if let Some(tx) = opened.take() {
            let _ = tx.send(());
        }
        match stream {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(pod = %name, error = %e, "cannot follow the pod's log");
            }
            Some(Ok(stream)) => {
                let mut stream = Box::pin(stream);
                let mut cutter = super::shared::LineCutter::default();
                let mut chunk = vec![0u8; 8 << 10];
                let mut emit = |line: String| logs.instance_line(&function, &instance, &line);
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => cutter.push(&chunk[..n], &mut emit),
                    }
                }
                if let Some(l) = cutter.finish() {
                    emit(l);
                }
            }
        }
        attempt += 1;
        if exited.borrow().is_some() || attempt > LOG_RECONNECTS {
            break;
        }
        // The container may have ended without the watch having said so yet.
        let mut exited_now = exited.clone();
        if tokio::time::timeout(
            LOG_RECONNECT_WAIT.delay(attempt),
            super::exit::wait_exit(&mut exited_now),
        )
        .await
        .is_ok()
        {
            break;
        }
        tracing::debug!(pod = %name, attempt, "the pod's log stream ended while it runs; following it again");
    }
    logs.instance_ended(&instance);
}

/// The one watch over this control plane's pods.
async fn run_watch(pods: Api<Pod>, owner: String, timeout_s: u32, shared: Arc<Shared>) {
    let cfg = watcher::Config::default()
        .labels(&format!("{LABEL_OWNER}={owner}"))
        .timeout(timeout_s);
    let stream = kube::runtime::utils::StreamBackoff::new(
        watcher(pods.clone(), cfg),
        watch::WatchBackoff::default(),
    );
    futures_util::pin_mut!(stream);
    let mut listed = HashSet::new();
    let mut generation = 0;
    let mut errors = 0u64;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => {
                generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
                listed.clear();
            }
            Ok(watcher::Event::InitApply(p)) => {
                if let Some(n) = &p.metadata.name {
                    listed.insert(n.clone());
                }
                shared.apply(&p, &pods);
            }
            Ok(watcher::Event::InitDone) => {
                shared.missing(&listed, generation);
                listed.clear();
                if errors > 0 {
                    tracing::info!(after_errors = errors, "the pod watch is listening again");
                    errors = 0;
                }
            }
            Ok(watcher::Event::Apply(p)) => shared.apply(&p, &pods),
            Ok(watcher::Event::Delete(p)) => {
                if let Some(n) = &p.metadata.name {
                    shared.deleted(n, "the pod was deleted");
                }
            }
            Err(e) => {
                errors += 1;
                let gone = matches!(&e, watcher::Error::WatchError(s) if s.code == 410);
                if gone {
                    tracing::debug!("the pod watch expired (410 Gone): listing again");
                } else if let watcher::Error::WatchFailed(kube::Error::Api(s)) = &e {
                    // A line of the stream that is not a pod event (kube reads any other JSON
                    // object as a Status): that event is lost, the stream goes on.
                    if errors == 1 || errors.is_power_of_two() {
                        tracing::warn!(error = %e, code = s.code, errors, "the pod watch sent an event that is not a pod; skipped");
                    }
                } else if errors == 1 || errors.is_power_of_two() {
                    tracing::warn!(error = %e, errors, "the pod watch failed; reconnecting with back-off");
                }
            }
        }
    }
}

fn owner_id(configured: &str, pod_name: Option<&str>, host: &str) -> String {
    let raw = [configured, pod_name.unwrap_or(""), host]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or("nanofaas");
    let v = pod::label_value(raw);
    if v.is_empty() {
        "nanofaas".into()
    } else {
        v
    }
}

fn api_failure(what: &str, e: &kube::Error) -> StartFailure {
    let permanent = matches!(e, kube::Error::Api(s) if s.code == 400 || s.code == 422);
    let hint = match e {
        kube::Error::Api(s) if s.code == 403 => {
            " (the control plane's service account may not create pods there: see docs/kubernetes.md for the Role it needs)"
        }
        _ => "",
    };
    StartFailure {
        message: format!("cannot {what}: {e}{hint}"),
        permanent,
    }
}

impl KubernetesProvider {
    pub fn new(settings: KubernetesSettings) -> KubernetesProvider {
        KubernetesProvider {
            settings,
            shared: Arc::default(),
            conn: tokio::sync::OnceCell::new(),
            closed: AtomicBool::new(false),
            stats: Arc::default(),
            logs: std::sync::OnceLock::new(),
        }
    }

    /// Hands the lines pods write to `logs` (once, before the first instance starts).
    pub fn set_logs(&self, logs: Arc<crate::logs::Logs>) {
        let _ = self.logs.set(logs);
    }

    /// Following the pod's log, if configured.
    fn follower(
        &self,
        conn: &Conn,
        name: &str,
        function: &str,
        instance: &str,
        entry: &Entry,
        opened: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let logs = self.logs.get().filter(|_| self.settings.follow_logs)?;
        Some(follow_pod_log(
            conn.pods.clone(),
            name.to_string(),
            function.to_string(),
            instance.to_string(),
            entry.exited(),
            logs.clone(),
            opened,
        ))
    }

    /// Starts following the pod's log, if configured, and waits (at most [`DETAIL_TIMEOUT`])
    /// for its stream to be open, so that what the instance prints during its first call is
    /// read as it is written.
    async fn follow(&self, conn: &Conn, name: &str, function: &str, instance: &str, entry: &Entry) {
        if let Some(rx) = self.start_follow(conn, name, function, instance, entry) {
            let _ = tokio::time::timeout(DETAIL_TIMEOUT, rx).await;
        }
    }

    /// Starts following the pod's log, if configured; the receiver resolves once its stream is
    /// open (or could not be).
    fn start_follow(
        &self,
        conn: &Conn,
        name: &str,
        function: &str,
        instance: &str,
        entry: &Entry,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let f = self.follower(conn, name, function, instance, entry, Some(tx))?;
        tokio::spawn(f);
        Some(rx)
    }

    /// This control plane's `nanofaas.dev/owner` value.
    pub fn owner(&self) -> &str {
        &self.settings.pod.owner
    }

    /// Requests sent to the API so far, and how many waited for the token bucket.
    pub fn api_requests(&self) -> (u64, u64) {
        (
            self.stats.requests.load(Ordering::Relaxed),
            self.stats.throttled.load(Ordering::Relaxed),
        )
    }

    /// The client, the namespace and the watch, made on first use (and again after a failure).
    async fn conn(&self) -> Result<&Conn, String> {
        self.conn
            .get_or_try_init(|| async {
                let s = &self.settings;
                let (client, namespace) = config::client(
                    &s.source,
                    &s.namespace,
                    s.api_qps,
                    s.api_burst,
                    self.stats.clone(),
                )
                .await?;
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                let mut pod = s.pod.clone();
                if pod.owner_ref.is_some()
                    && s.own_namespace.as_deref().is_some_and(|n| n != namespace)
                {
                    tracing::warn!(namespace = %namespace, "instance pods are in another namespace than the control plane's pod: they get no owner reference (Kubernetes allows none across namespaces)");
                    pod.owner_ref = None;
                }
                let watcher = tokio::spawn(run_watch(
                    pods.clone(),
                    pod.owner.clone(),
                    s.watch_timeout_s,
                    self.shared.clone(),
                ))
                .abort_handle();
                Ok::<_, String>(Conn {
                    events: Api::namespaced(client, &namespace),
                    pods,
                    namespace,
                    pod,
                    watcher,
                })
            })
            .await
    }

    /// Makes the instance's pod known (before it is created, so that no event is missed);
    /// `None` when that pod is known already.
    fn register(
        &self,
        instance: &str,
        function: &str,
        kind: &'static str,
    ) -> Option<(String, Arc<Entry>)> {
        let name = pod::pod_name(instance);
        let e = self.insert_entry(&name, instance, function, kind, NOT_CREATED)?;
        Some((name, e))
    }

    /// Makes a pod that exists already known (an orphan being deleted).
    fn register_pod(&self, name: &str, kind: &'static str) -> Option<Arc<Entry>> {
        self.insert_entry(name, name, "", kind, 0)
    }

    fn insert_entry(
        &self,
        name: &str,
        instance: &str,
        function: &str,
        kind: &'static str,
        created_gen: u64,
    ) -> Option<Arc<Entry>> {
        let mut entries = self.shared.entries.lock().unwrap();
        if entries.contains_key(name) {
            return None;
        }
        let e = Arc::new(Entry {
            instance: instance.to_string(),
            function: function.to_string(),
            kind,
            state: tw::channel(PodState::Waiting {
                reason: None,
                started: false,
            })
            .0,
            exit: tw::channel(None).0,
            gone: tw::channel(false).0,
            created_gen: AtomicU64::new(created_gen),
            deleting: AtomicBool::new(false),
            terminal_delete: AtomicBool::new(false),
            starting: AtomicBool::new(created_gen == NOT_CREATED),
        });
        entries.insert(name.to_string(), e.clone());
        Some(e)
    }

    /// Creates the pod of a registered entry.
    async fn create(
        &self,
        conn: &Conn,
        name: &str,
        entry: &Entry,
        pod: &Pod,
    ) -> Result<(), StartFailure> {
        match conn.pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                entry.created_gen.store(
                    self.shared.generation.load(Ordering::SeqCst),
                    Ordering::SeqCst,
                );
                Ok(())
            }
            Err(e) => {
                self.shared.entries.lock().unwrap().remove(name);
                entry.end("the pod could not be created");
                entry.gone.send_replace(true);
                Err(match &e {
                    kube::Error::Api(s) if s.code == 409 => StartFailure {
                        message: format!(
                            "a pod named {name} already exists in namespace {}",
                            conn.namespace
                        ),
                        permanent: false,
                    },
                    _ => api_failure(
                        &format!("create pod {name} in namespace {}", conn.namespace),
                        &e,
                    ),
                })
            }
        }
    }

    /// Deletes a pod and waits for the watch to see it go: `grace`, then forced.
    async fn delete_and_wait(
        &self,
        conn: &Conn,
        name: &str,
        entry: Option<Arc<Entry>>,
        grace: Duration,
    ) {
        let secs = grace.as_secs_f64().ceil() as u32;
        let send = |secs: u32| async move {
            match conn
                .pods
                .delete(name, &DeleteParams::default().grace_period(secs))
                .await
            {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 404 => false,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot delete the pod");
                    true
                }
            }
        };
        let Some(entry) = entry else {
            send(secs).await;
            return;
        };
        let mut gone = entry.gone.subscribe();
        if *gone.borrow() {
            return;
        }
        entry.deleting.store(true, Ordering::SeqCst);
        if !send(secs).await {
            self.shared.deleted(name, "the pod was deleted");
            return;
        }
        let wait = |gone: &mut tw::Receiver<bool>, limit: Duration| {
            let mut g = gone.clone();
            async move {
                tokio::time::timeout(limit, g.wait_for(|g| *g))
                    .await
                    .is_ok()
            }
        };
        if wait(&mut gone, grace + DELETE_EXTRA).await {
            return;
        }
        tracing::warn!(pod = %name, "the pod did not go within its grace period; deleting it by force");
        if !send(0).await || wait(&mut gone, DELETE_EXTRA).await {
            self.shared.deleted(name, "the pod was deleted");
            return;
        }
        tracing::warn!(pod = %name, "the pod is still there after a forced deletion; no longer waiting for it");
        self.shared
            .deleted(name, "the pod was deleted (not confirmed)");
    }

    /// The pod's warning events, last first, as one line (best effort, bounded).
    async fn events(&self, conn: &Conn, name: &str) -> String {
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        let Ok(Ok(list)) = tokio::time::timeout(DETAIL_TIMEOUT, conn.events.list(&lp)).await else {
            return String::new();
        };
        let mut seen: Vec<String> = Vec::new();
        for e in list.items.iter().rev() {
            if e.type_.as_deref() != Some("Warning") {
                continue;
            }
            let line = format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or("Warning"),
                e.message.as_deref().unwrap_or("").trim()
            );
            if !seen.contains(&line) {
                seen.push(line);
            }
            if seen.len() == 3 {
                break;
            }
        }
        if seen.is_empty() {
            String::new()
        } else {
            format!("; events: {}", seen.join("; "))
        }
    }

    /// The last lines of the pod's container log (best effort, bounded).
    async fn log_tail(&self, conn: &Conn, name: &str) -> String {
        let lp = LogParams {
            container: Some(pod::CONTAINER.into()),
            tail_lines: Some(TAIL_LINES as i64),
            ..Default::default()
        };
        match tokio::time::timeout(DETAIL_TIMEOUT, conn.pods.logs(name, &lp)).await {
            Ok(Ok(text)) if !text.trim().is_empty() => {
                format!("; its last output:\n{}", text.trim_end())
            }
            _ => String::new(),
        }
    }

    /// A start that failed after the pod was created: say why, delete it.
    async fn fail_start(
        &self,
        conn: &Conn,
        name: &str,
        spec: &FunctionSpec,
        entry: Arc<Entry>,
        reason: String,
        permanent: bool,
        with_log: bool,
    ) -> StartFailure {
        let events = self.events(conn, name).await;
        let log = if with_log {
            self.log_tail(conn, name).await
        } else {
            String::new()
        };
        self.delete_and_wait(conn, name, Some(entry), Duration::ZERO)
            .await;
        StartFailure {
            message: format!(
                "the pod {name} of {:?} (image {:?}) failed to start: {reason}{events}{log}",
                spec.name,
                spec.image.as_deref().unwrap_or_default(),
            ),
            permanent,
        }
    }

    fn closed_failure() -> StartFailure {
        StartFailure {
            message: "the control plane is shutting down".into(),
            permanent: false,
        }
    }

    async fn connected(&self) -> Result<&Conn, StartFailure> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Self::closed_failure());
        }
        self.conn().await.map_err(|e| StartFailure {
            message: format!("cannot reach the Kubernetes API: {e}"),
            permanent: false,
        })
    }

    /// Waits for the pod's state to satisfy `done` until `deadline`, or (with `grace`) until
    /// it has been unschedulable for `grace` without a break; the last state seen, and whether
    /// the wait ended by that grace.
    async fn wait_state(
        entry: &Entry,
        deadline: Instant,
        grace: Option<Duration>,
        done: impl Fn(&PodState) -> bool,
    ) -> (PodState, bool) {
        let mut rx = entry.state.subscribe();
        let mut unschedulable_since: Option<Instant> = None;
        loop {
            let st = rx.borrow_and_update().clone();
            if done(&st) {
                return (st, false);
            }
            if matches!(st, PodState::Unschedulable { .. }) {
                unschedulable_since.get_or_insert_with(Instant::now);
            } else {
                unschedulable_since = None;
            }
            let by_grace = grace
                .zip(unschedulable_since)
                .map(|(g, since)| since + g)
                .filter(|t| *t < deadline);
            let until = by_grace.unwrap_or(deadline);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The entry is gone (its sender dropped): nothing more will come.
                Ok(Err(_)) => return (st, false),
                Err(_) => {
                    let st = rx.borrow().clone();
                    let by_grace =
                        by_grace.is_some() && matches!(st, PodState::Unschedulable { .. });
                    return (st, by_grace);
                }
            }
        }
    }

    fn permanent_exit(code: Option<i32>) -> bool {
        matches!(
            code.map(i64::from),
            Some(super::docker::WATCHDOG_EXIT_CONFIG | super::docker::WATCHDOG_EXIT_SPAWN)
        )
    }

    /// Why a start that saw `st` last ended at its deadline (or, `by_grace`, once it had been
    /// unschedulable for `unschedulable_grace`).
    fn timeout_reason(&self, st: &PodState, by_grace: bool) -> String {
        let ms = self.settings.pod.startup_timeout.as_millis();
        match st {
            PodState::Unschedulable { message } if by_grace => {
                let g = self
                    .settings
                    .unschedulable_grace
                    .unwrap_or_default()
                    .as_millis();
                format!("the pod stayed unschedulable for {g} ms (provider.kubernetes.unschedulable_grace_ms): PodScheduled=False, {message}")
            }
            PodState::Unschedulable { message } => {
                format!(
                    "the pod could not be scheduled within {ms} ms: PodScheduled=False, {message}"
                )
            }
            PodState::Waiting {
                reason: Some(r), ..
            } => {
                format!("the pod was not ready within {ms} ms (last seen: {r})")
            }
            _ => format!("the pod was not ready within {ms} ms"),
        }
    }
}

impl Provider for KubernetesProvider {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn validate(&self, spec: &FunctionSpec) -> Result<(), ValidationError> {
        if matches!(spec.execution_mode, ExecutionMode::Pool) {
            return Ok(());
        }
        let Some(image) = spec.image.as_deref() else {
            return Err(ValidationError::new(
                "image",
                "the kubernetes provider runs container images; this spec has only a command (use the process provider for local commands)",
            ));
        };
        super::docker::check_image_reference(image)
            .map_err(|why| ValidationError::new("image", why))
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        Box::pin(async move {
            let conn = self.connected().await?;
            let spec = &req.spec;
            let id = &req.instance_id;
            let Some((name, entry)) = self.register(id, &spec.name, "warm") else {
                return Err(StartFailure {
                    message: format!("instance {id} is already running"),
                    permanent: false,
                });
            };
            let pod = pod::warm_pod(&conn.pod, spec, id);
            let asked = Instant::now();
            let starting = StartingGuard(&entry);
            self.create(conn, &name, &entry, &pod).await?;
            let created = Instant::now();
            let deadline = created + self.settings.pod.startup_timeout;
            let grace = self.settings.unschedulable_grace;
            let done = |s: &PodState| {
                matches!(
                    s,
                    PodState::Ready { .. } | PodState::StartError { .. } | PodState::Ended { .. }
                )
            };
            // The pod's log is followed from its container's start, while its readiness probe
            // is still to pass: opening the stream (an API request, behind the rate limit)
            // then overlaps the wait for Ready instead of following it.
            let (st, by_grace) = Self::wait_state(&entry, deadline, grace, |s| {
                done(s) || matches!(s, PodState::Waiting { started: true, .. })
            })
            .await;
            let log_opened = match st {
                PodState::Waiting { started: true, .. } | PodState::Ready { .. } => {
                    self.start_follow(conn, &name, &spec.name, id, &entry)
                }
                _ => None,
            };
            let (st, by_grace) = match st {
                PodState::Waiting { .. } => Self::wait_state(&entry, deadline, grace, done).await,
                st => (st, by_grace),
            };
            let ready_at = Instant::now();
            drop(starting);
            if !matches!(st, PodState::Ready { .. }) {
                // The watch left the deletion to this start (see `Entry::starting`).
                entry.deleting.store(true, Ordering::SeqCst);
            }
            let ip = match st {
                PodState::Ready { ip } => ip,
                PodState::StartError { reason, permanent } => {
                    return Err(self
                        .fail_start(conn, &name, spec, entry, reason, permanent, false)
                        .await)
                }
                PodState::Ended { reason, exit_code } => {
                    let permanent = Self::permanent_exit(exit_code);
                    return Err(self
                        .fail_start(conn, &name, spec, entry, reason, permanent, true)
                        .await);
                }
                other => {
                    let why = self.timeout_reason(&other, by_grace);
                    return Err(self
                        .fail_start(conn, &name, spec, entry, why, false, false)
                        .await);
                }
            };
            if self.closed.load(Ordering::SeqCst) {
                self.delete_and_wait(conn, &name, Some(entry), Duration::ZERO)
                    .await;
                return Err(Self::closed_failure());
            }
            // Ready is not held back for the log stream (under a busy rate limit opening it
            // can take seconds): until it is open, the logs hub knows that lines of this
            // function may still come, and a finished execution's logs wait for them.
            if let (Some(rx), Some(logs)) = (log_opened, self.logs.get()) {
                let pending = logs.stream_pending(&spec.name);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LOG_OPEN_MAX, rx).await;
                    drop(pending);
                });
            }
            // Ready means the kubelet's probe of the watchdog's /health passed: the pod is
            // used as Kubernetes' own Services would use it, with no probe of our own.
            let addr = SocketAddr::new(ip, self.settings.pod.watchdog_port);
            tracing::debug!(
                instance = %id,
                pod = %name,
                create_ms = (created - asked).as_secs_f64() * 1e3,
                until_ready_ms = (ready_at - created).as_secs_f64() * 1e3,
                "pod ready"
            );
            // Held while the instance lives: if this control plane dies, the watchdog stops
            // and its pod ends (then the next control plane, or the garbage collector,
            // deletes it).
            tokio::spawn(super::lease::hold(
                id.clone(),
                addr,
                entry.exited(),
                super::lease::BEAT,
            ));
            let base = format!("http://{addr}");
            Ok(Instance {
                id: id.clone(),
                invoke_url: format!("{base}/invoke").parse().expect("valid URL"),
                health_url: format!("{base}/health").parse().expect("valid URL"),
                socket: None,
                exited: entry.exited(),
            })
        })
    }

    fn start_job(&self, req: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>> {
        Box::pin(async move {
            if req.payload.len() > super::docker::MAX_ENV_PAYLOAD {
                return Err(StartFailure {
                    message: format!(
                        "the invocation is {} bytes; a JOB instance gets it in an environment variable, which holds at most {} bytes (use executionMode DEPLOYMENT for larger payloads)",
                        req.payload.len(),
                        super::docker::MAX_ENV_PAYLOAD
                    ),
                    permanent: true,
                });
            }
            let conn = self.connected().await?;
            let spec = &req.spec;
            if let Some(l) = self.logs.get() {
                l.job_instance(&req.instance_id, &req.execution_id);
            }
            let Some((name, entry)) = self.register(&req.instance_id, &spec.name, "job") else {
                return Err(StartFailure {
                    message: format!("instance {} is already running", req.instance_id),
                    permanent: false,
                });
            };
            let callback = pod::callback_url(&self.settings.callback_url, &req.callback_url);
            let params = pod::JobParams {
                execution_id: &req.execution_id,
                trace_id: &req.trace_id,
                attempt: req.attempt,
                payload: &req.payload,
                timeout: req.timeout,
                callback_url: &callback,
                callback_token: &req.callback_token,
            };
            let pod = pod::job_pod(&conn.pod, spec, &req.instance_id, &params);
            let starting = StartingGuard(&entry);
            self.create(conn, &name, &entry, &pod).await?;
            // Until its container runs (or it ended: a quick job): a pod that cannot start is a
            // failed start, not a job that never reports.
            let deadline = Instant::now() + self.settings.pod.startup_timeout;
            let grace = self.settings.unschedulable_grace;
            let (st, by_grace) = Self::wait_state(&entry, deadline, grace, |s| {
                !matches!(
                    s,
                    PodState::Waiting { started: false, .. } | PodState::Unschedulable { .. }
                )
            })
            .await;
            drop(starting);
            if let PodState::Ended { reason, .. } = &st {
                // A quick job: ended before this start looked. Its log is read whole, then its
                // pod goes as the watch would have deleted it.
                entry.end(reason);
                entry.deleting.store(true, Ordering::SeqCst);
                let pods = conn.pods.clone();
                let n = name.clone();
                let log = self.follower(conn, &name, &spec.name, &req.instance_id, &entry, None);
                tokio::spawn(async move {
                    if let Some(log) = log {
                        let _ = tokio::time::timeout(DETAIL_TIMEOUT * 2, log).await;
                    }
                    let _ = pods
                        .delete(&n, &DeleteParams::default().grace_period(0))
                        .await;
                });
            }
            match st {
                PodState::StartError { reason, permanent } => Err(self
                    .fail_start(conn, &name, spec, entry, reason, permanent, false)
                    .await),
                PodState::Waiting { started: false, .. } | PodState::Unschedulable { .. } => {
                    let why = self.timeout_reason(&st, by_grace);
                    Err(self
                        .fail_start(conn, &name, spec, entry, why, false, false)
                        .await)
                }
                PodState::Ended { .. } => Ok(Job {
                    id: req.instance_id.clone(),
                    exited: entry.exited(),
                }),
                _ => {
                    self.follow(conn, &name, &spec.name, &req.instance_id, &entry)
                        .await;
                    Ok(Job {
                        id: req.instance_id.clone(),
                        exited: entry.exited(),
                    })
                }
            }
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(conn) = self.conn.get() else { return };
            let name = pod::pod_name(instance_id);
            let entry = self.shared.get(&name);
            self.delete_and_wait(conn, &name, entry, self.settings.pod.stop_grace)
                .await;
        })
    }

    fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<InstanceInfo> = self
            .shared
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.kind != "orphan")
            .map(|(name, e)| InstanceInfo {
                id: e.instance.clone(),
                function: e.function.clone(),
                kind: e.kind,
                pid: None,
                runtime_pid: None,
                container: Some(name.clone()),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "the kubernetes provider cannot reach the API; DEPLOYMENT and JOB functions will fail to start until it is reachable");
                    return 0;
                }
            };
            orphans::remove(self, conn).await
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::SeqCst);
            let Some(conn) = self.conn.get() else { return };
            let all: Vec<(String, Arc<Entry>)> = self
                .shared
                .entries
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let grace = self.settings.pod.stop_grace;
            join_all(all.into_iter().map(|(name, e)| async move {
                self.delete_and_wait(conn, &name, Some(e), grace).await
            }))
            .await;
            // Anything created but not yet known (a start in flight) goes too.
            orphans::remove(self, conn).await;
            conn.watcher.abort();
        })
    }
}

/// The provider `provider.kubernetes.*` describes. Fails when its credentials cannot be read
/// (the API itself is reached, and orphans removed, when the control plane prepares).
pub fn from_config(c: &crate::config::Config) -> Result<KubernetesProvider, String> {
    let k = &c.provider.kubernetes;
    let env = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let source = config::source(
        k,
        env("KUBERNETES_SERVICE_HOST").as_deref(),
        env("KUBECONFIG").as_deref(),
        env("HOME").as_deref(),
    )?;
    config::check(&source)?;
    let pod_name = env("POD_NAME");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let owner = owner_id(&k.owner, pod_name.as_deref(), &host);
    Ok(KubernetesProvider::new(KubernetesSettings {
        source,
        namespace: k.namespace.clone(),
        api_qps: k.api_qps,
        api_burst: k.api_burst,
        callback_url: k.callback_url.clone(),
        own_namespace: env("POD_NAMESPACE"),
        watch_timeout_s: k.watch_timeout_s,
        unschedulable_grace: (k.unschedulable_grace_ms > 0)
            .then(|| Duration::from_millis(k.unschedulable_grace_ms)),
        follow_logs: k.follow_logs,
        pod: PodSettings {
            pull_policy: k.pull_policy,
            pull_secrets: k.pull_secrets.clone(),
            watchdog_port: k.watchdog_port,
            labels: k.labels.clone(),
            annotations: k.annotations.clone(),
            owner,
            owner_ref: pod::owner_reference(pod_name.as_deref(), env("POD_UID").as_deref()),
            startup_timeout: Duration::from_millis(c.provider.startup_timeout_ms),
            stop_grace: Duration::from_millis(c.provider.stop_grace_ms),
            log_tags: k.follow_logs,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_id_is_configured_or_the_pod_or_the_host() {
        assert_eq!(owner_id("cp-a", Some("pod-1"), "host"), "cp-a");
        assert_eq!(owner_id("", Some("pod-1"), "host"), "pod-1");
        assert_eq!(owner_id("", None, "my.host"), "my.host");
        assert_eq!(owner_id("", None, ""), "nanofaas");
        assert_eq!(owner_id("a b/c", None, ""), "a-b-c");
    }

    fn entry(created_gen: u64) -> Arc<Entry> {
        Arc::new(Entry {
            instance: "i".into(),
            function: "f".into(),
            kind: "warm",
            state: tw::channel(PodState::Waiting {
                reason: None,
                started: false,
            })
            .0,
            exit: tw::channel(None).0,
            gone: tw::channel(false).0,
            created_gen: AtomicU64::new(created_gen),
            deleting: AtomicBool::new(false),
            terminal_delete: AtomicBool::new(false),
            starting: AtomicBool::new(false),
        })
    }

    #[test]
    fn a_relist_reports_pods_created_before_it_that_it_did_not_show() {
        let s = Shared::default();
        let (old, shown, young, unborn) = (entry(0), entry(0), entry(1), entry(NOT_CREATED));
        let exits: Vec<ExitWatch> = [&old, &shown, &young, &unborn]
            .iter()
            .map(|e| e.exited())
            .collect();
        {
            let mut m = s.entries.lock().unwrap();
            m.insert("old".into(), old);
            m.insert("shown".into(), shown);
            m.insert("young".into(), young);
            m.insert("unborn".into(), unborn);
        }
        s.missing(&["shown".to_string()].into(), 1);
        let gone: Vec<bool> = exits.iter().map(|e| e.borrow().is_some()).collect();
        assert_eq!(gone, vec![true, false, false, false]);
        assert!(s.get("old").is_none());
        assert!(s.get("young").is_some());
    }
}
