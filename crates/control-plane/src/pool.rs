//! A warm pool per `DEPLOYMENT` function: instances started through a [`Provider`], leased one
//! invocation at a time (or `instanceConcurrency` at a time), recycled, stopped when idle, and
//! replaced when they die.
//!
//! Each instance is a small state machine: `Starting → Ready ⇄ Busy → Draining → Stopped`, or
//! `Failed`. A dispatch leases the most recently used ready instance (so surplus instances go idle
//! and are reaped); if none is ready and the pool is below `maxInstances` it starts one and waits;
//! otherwise it queues and is handed the first instance that frees up or becomes ready. Nothing
//! polls on that path: a freed or new instance goes straight to the first waiter.
//!
//! Start failures back off exponentially; while a function has no live instance and is backing
//! off, dispatches fail at once with STARTUP_ERROR and the last failure's message.
//! The pool's state sits behind one mutex that is never held across an `.await`.

use crate::dispatch::{
    invoke_http, Backend, BoxFuture, Call, DispatchResult, HttpClient, StartKind, Transport,
};
use crate::executions::{Failure, FailureKind, Outcome};
use crate::metrics::Metrics;
use crate::provider::{ExitWatch, Instance, Provider, StartRequest};
use http::Uri;
use nanofaas_api::{ErrorCode, FunctionSpec};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Pool behaviour shared by every function (from the configuration).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// How often idle instances are health-checked (0 = never).
    pub health_check_interval: Duration,
    /// First delay after a failed start; doubles with each consecutive failure.
    pub start_backoff: Duration,
    pub start_backoff_max: Duration,
    /// How long a dispatch may wait for an instance that is starting.
    pub startup_timeout: Duration,
    /// Extra time the control plane waits beyond a function's timeout for the watchdog to
    /// answer TIMEOUT itself (it then restarts its runtime and the instance stays usable).
    pub timeout_grace: Duration,
}

/// The lifecycle of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Starting,
    Ready,
    Busy,
    Draining,
    Stopped,
    Failed,
}

/// Where to reach a ready instance.
#[derive(Debug)]
pub struct Conn {
    pub instance_id: String,
    pub invoke: Uri,
    pub health: Uri,
    /// Where its requests go (its Unix socket if it has one); holds its idle connections, which
    /// close when the last lease of a stopped instance is dropped.
    pub endpoint: crate::h1::Endpoint,
}

struct Slot {
    seq: u64,
    id: String,
    state: InstanceState,
    conn: Option<Arc<Conn>>,
    inflight: u32,
    invocations: u64,
    last_used: Instant,
    asked_at: Instant,
    ready_after: Option<Duration>,
    /// A prewarmed instance specialized for this function (not a full start).
    prewarmed: bool,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Lease, Failure>>,
}

struct State {
    slots: Vec<Slot>,
    waiters: VecDeque<Waiter>,
    next_seq: u64,
    closed: bool,
    failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
    permanent_error: bool,
    /// When the idle reaper wakes next; `None` while it waits to be told of a change.
    reaper_deadline: Option<Instant>,
}

pub struct Pool {
    name: Arc<str>,
    spec: Arc<FunctionSpec>,
    provider: Arc<dyn Provider>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    settings: PoolSettings,
    state: Mutex<State>,
    changed: Notify,
    me: Weak<Pool>,
}

/// One leased place on an instance. Dropping it gives the place back.
pub struct Lease {
    pool: Arc<Pool>,
    seq: u64,
    pub conn: Arc<Conn>,
    /// `Some(start time)` when this dispatch waited for the instance to start.
    pub cold: Option<Duration>,
    /// That start specialized a prewarmed instance (`cold` is then its specialization time).
    pub prewarmed: bool,
    broken: Option<String>,
}

impl Lease {
    /// The instance misbehaved (connection refused or lost, no answer in time): take it out.
    pub fn mark_broken(&mut self, why: String) {
        self.broken = Some(why);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.seq, self.broken.take());
    }
}

/// One instance as `GET /v1/functions/{name}/instances` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub id: String,
    pub state: InstanceState,
    pub inflight: u32,
    pub invocations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u64>,
    pub idle_ms: u64,
    /// Where the control plane sends the instance's invocations: `unix:<socket>` or
    /// `http://host:port`; absent until it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn instance_id(name: &str) -> String {
    let id = crate::ids::trace_id();
    format!("{name}-{}", &id[..12])
}

impl Pool {
    pub fn new(
        spec: Arc<FunctionSpec>,
        provider: Arc<dyn Provider>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        settings: PoolSettings,
    ) -> Arc<Self> {
        let pool = Arc::new_cyclic(|me| Pool {
            name: spec.name.as_str().into(),
            spec,
            provider,
            client,
            metrics,
            settings,
            state: Mutex::new(State {
                slots: Vec::new(),
                waiters: VecDeque::new(),
                next_seq: 0,
                closed: false,
                failures: 0,
                backoff_until: None,
                last_error: None,
                permanent_error: false,
                reaper_deadline: None,
            }),
            changed: Notify::new(),
            me: me.clone(),
        });
        pool.provider.prewarm_register(&pool.spec);
        pool.ensure_min();
        let weak = Arc::downgrade(&pool);
        tokio::spawn(reaper(weak.clone()));
        if !pool.settings.health_check_interval.is_zero() {
            tokio::spawn(health_checker(weak, pool.settings.health_check_interval));
        }
        pool
    }

    fn arc(&self) -> Arc<Pool> {
        self.me.upgrade().expect("pool alive while used")
    }

    fn alive(st: &State) -> usize {
        st.slots
            .iter()
            .filter(|s| !matches!(s.state, InstanceState::Stopped | InstanceState::Failed))
            .count()
    }

    fn in_backoff(st: &State) -> bool {
        st.backoff_until.is_some_and(|t| Instant::now() < t)
    }

    fn startup_failure(&self, st: &State) -> Failure {
        let last = st
            .last_error
            .clone()
            .unwrap_or_else(|| "no instance could be started".into());
        let retry = st
            .backoff_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
            .map(|d| format!(" (next start attempt in {} ms)", d.as_millis()))
            .unwrap_or_default();
        Failure::new(
            FailureKind::Fatal,
            ErrorCode::StartupError,
            format!("{last}{retry}"),
        )
    }

    /// A lease on a ready instance with room, preferring the most recently used.
    fn take_ready(&self, st: &mut State) -> Option<Lease> {
        let cap = self.spec.instance_concurrency;
        let max_inv = self.spec.max_invocations;
        let slot = st
            .slots
            .iter_mut()
            .filter(|s| {
                matches!(s.state, InstanceState::Ready | InstanceState::Busy)
                    && s.inflight < cap
                    && (max_inv == 0 || s.invocations < max_inv)
            })
            .max_by_key(|s| (s.last_used, s.seq))?;
        Some(self.lease_slot(slot, None))
    }

    fn lease_slot(&self, slot: &mut Slot, cold: Option<Duration>) -> Lease {
        let prewarmed = cold.is_some() && slot.prewarmed;
        slot.inflight += 1;
        slot.invocations += 1;
        slot.last_used = Instant::now();
        if slot.inflight >= self.spec.instance_concurrency {
            slot.state = InstanceState::Busy;
        }
        Lease {
            pool: self.arc(),
            seq: slot.seq,
            conn: slot.conn.clone().expect("ready slot has a connection"),
            cold,
            prewarmed,
            broken: None,
        }
    }

    /// Starts an instance in the background (the caller holds the state lock).
    fn start_instance(&self, st: &mut State) {
        st.next_seq += 1;
        let seq = st.next_seq;
        let id = instance_id(&self.name);
        let now = Instant::now();
        st.slots.push(Slot {
            seq,
            id: id.clone(),
            state: InstanceState::Starting,
            conn: None,
            inflight: 0,
            invocations: 0,
            last_used: now,
            asked_at: now,
            ready_after: None,
            prewarmed: false,
        });
        self.metrics.global.instances_running.inc();
        let pool = self.arc();
        tokio::spawn(async move {
            let req = StartRequest {
                instance_id: id,
                spec: pool.spec.clone(),
            };
            // A prewarmed instance of the function's kind, specialized, if the provider keeps
            // one ready; else (or if that cannot be used) a full start.
            let prewarmed = match pool.provider.start_prewarmed(&req) {
                None => None,
                Some(fut) => match fut.await {
                    Ok(inst) => Some(Ok(inst)),
                    Err(crate::provider::PrewarmError::Failed(f)) => Some(Err(f)),
                    Err(crate::provider::PrewarmError::Fallback(why)) => {
                        tracing::info!(function = %pool.name, reason = %why, "prewarmed instance not usable; starting one cold");
                        None
                    }
                },
            };
            let (result, prewarmed) = match prewarmed {
                Some(r) => (r, true),
                None => (pool.provider.start(req).await, false),
            };
            pool.started(seq, result, prewarmed);
        });
    }

    fn started(
        &self,
        seq: u64,
        result: Result<Instance, crate::provider::StartFailure>,
        prewarmed: bool,
    ) {
        let mut st = self.state.lock().unwrap();
        let Some(idx) = st.slots.iter().position(|s| s.seq == seq) else {
            return;
        };
        // An instance whose URL the client cannot use is one that failed to start.
        let result = result.and_then(|inst| {
            match crate::dispatch::instance_endpoint(&inst.invoke_url, inst.socket.as_deref()) {
                Ok(endpoint) => Ok((inst, endpoint)),
                Err(e) => {
                    self.stop_instance(inst.id);
                    Err(crate::provider::StartFailure {
                        message: format!("the instance cannot be reached: {e}"),
                        permanent: true,
                    })
                }
            }
        });
        match result {
            Ok((inst, endpoint)) => {
                if st.closed {
                    st.slots[idx].state = InstanceState::Stopped;
                    drop(st);
                    self.stop_instance(inst.id);
                    return;
                }
                self.metrics.global.instances_started.inc();
                st.failures = 0;
                st.backoff_until = None;
                st.permanent_error = false;
                let slot = &mut st.slots[idx];
                let startup = slot.asked_at.elapsed();
                // A specialized prewarmed instance has the provider's id, not the one asked for.
                slot.id = inst.id.clone();
                slot.prewarmed = prewarmed;
                slot.state = InstanceState::Ready;
                slot.ready_after = Some(startup);
                slot.last_used = Instant::now();
                slot.conn = Some(Arc::new(Conn {
                    instance_id: inst.id.clone(),
                    invoke: inst.invoke_url,
                    health: inst.health_url,
                    endpoint,
                }));
                tracing::info!(function = %self.name, instance = %inst.id, startup_ms = startup.as_millis() as u64, prewarmed, "instance ready");
                tokio::spawn(watch_exit(self.me.clone(), seq, inst.exited));
                self.hand_over(&mut st, idx, Some(startup));
            }
            Err(f) => {
                st.slots.remove(idx);
                self.metrics.global.instances_running.dec();
                self.metrics.global.instances_failed.inc();
                st.failures += 1;
                let factor = 1u32 << (st.failures - 1).min(16);
                let delay =
                    (self.settings.start_backoff * factor).min(self.settings.start_backoff_max);
                st.backoff_until = Some(Instant::now() + delay);
                st.last_error = Some(f.message.clone());
                st.permanent_error = f.permanent;
                tracing::warn!(function = %self.name, failures = st.failures, backoff_ms = delay.as_millis() as u64, error = %f.message, "instance failed to start");
                // Waiters with no live instance to wait for get the error now.
                if Self::alive(&st) == 0 {
                    let failure = self.startup_failure(&st);
                    let waiters: Vec<Waiter> = st.waiters.drain(..).collect();
                    drop(st);
                    for w in waiters {
                        let _ = w.tx.send(Err(failure.clone()));
                    }
                    self.changed.notify_one();
                    return;
                }
            }
        }
        drop(st);
        self.changed.notify_one();
    }

    /// Gives the slot at `idx` to waiters while it has room.
    fn hand_over(&self, st: &mut State, idx: usize, cold: Option<Duration>) {
        let cap = self.spec.instance_concurrency;
        let max_inv = self.spec.max_invocations;
        while let Some(w) = st.waiters.pop_front() {
            let slot = &mut st.slots[idx];
            if !matches!(slot.state, InstanceState::Ready | InstanceState::Busy)
                || slot.inflight >= cap
                || (max_inv != 0 && slot.invocations >= max_inv)
            {
                st.waiters.push_front(w);
                return;
            }
            let lease = self.lease_slot(slot, cold);
            if let Err(Ok(mut returned)) = w.tx.send(Ok(lease)) {
                // The dispatch went away: undo without running release (we hold the lock).
                let slot = &mut st.slots[idx];
                slot.inflight -= 1;
                slot.invocations -= 1;
                if slot.inflight < cap && slot.state == InstanceState::Busy {
                    slot.state = InstanceState::Ready;
                }
                returned.seq = u64::MAX;
            }
        }
    }

    /// Waits for a lease until `wait`. Errors are the dispatch's outcome.
    pub async fn acquire(&self, wait: Duration) -> Result<Lease, Failure> {
        let (id, rx) = {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return Err(Failure::new(
                    FailureKind::Fatal,
                    ErrorCode::FunctionRemoved,
                    format!("function {:?} was removed", self.name),
                ));
            }
            if let Some(lease) = self.take_ready(&mut st) {
                return Ok(lease);
            }
            let alive = Self::alive(&st);
            let starting = st
                .slots
                .iter()
                .filter(|s| s.state == InstanceState::Starting)
                .count();
            if Self::in_backoff(&st) || (st.permanent_error && st.backoff_until.is_some()) {
                if alive == 0 {
                    return Err(self.startup_failure(&st));
                }
            } else if alive < self.spec.max_instances as usize && starting <= st.waiters.len() {
                // Start one more instance unless enough are already starting for those waiting.
                self.start_instance(&mut st);
            }
            st.next_seq += 1;
            let id = st.next_seq;
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter { id, tx });
            (id, rx)
        };
        let mut rx = rx;
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Failure::new(
                FailureKind::Platform,
                ErrorCode::InstanceLost,
                "the pool stopped",
            )),
            Err(_) => {
                let removed = {
                    let mut st = self.state.lock().unwrap();
                    let before = st.waiters.len();
                    st.waiters.retain(|w| w.id != id);
                    before != st.waiters.len()
                };
                if !removed {
                    if let Ok(r) = rx.await {
                        return r;
                    }
                }
                Err(Failure::new(
                    FailureKind::Timeout,
                    ErrorCode::Timeout,
                    format!(
                        "no instance of {:?} became available within {} ms",
                        self.name,
                        wait.as_millis()
                    ),
                ))
            }
        }
    }

    fn release(&self, seq: u64, broken: Option<String>) {
        if seq == u64::MAX {
            return;
        }
        let mut st = self.state.lock().unwrap();
        let Some(idx) = st.slots.iter().position(|s| s.seq == seq) else {
            return;
        };
        let cap = self.spec.instance_concurrency;
        let max_inv = self.spec.max_invocations;
        let slot = &mut st.slots[idx];
        slot.inflight -= 1;
        slot.last_used = Instant::now();
        let mut stop = None;
        if let Some(why) = broken {
            if !matches!(slot.state, InstanceState::Stopped | InstanceState::Failed) {
                // Logged once it has ended, with why ("instance died"), busy or idle alike.
                tracing::debug!(function = %self.name, instance = %slot.id, reason = %why, "instance taken out of service");
                slot.state = InstanceState::Failed;
                self.metrics.global.instances_failed.inc();
                stop = Some(slot.id.clone());
            }
        } else if max_inv != 0
            && slot.invocations >= max_inv
            && slot.state != InstanceState::Stopped
        {
            slot.state = InstanceState::Draining;
            if slot.inflight == 0 {
                tracing::info!(function = %self.name, instance = %slot.id, invocations = slot.invocations, "instance recycled after maxInvocations");
                slot.state = InstanceState::Stopped;
                stop = Some(slot.id.clone());
            }
        } else if slot.state == InstanceState::Busy && slot.inflight < cap {
            slot.state = InstanceState::Ready;
        }
        if stop.is_some() {
            st.slots.remove(idx);
            self.metrics.global.instances_running.dec();
            self.replenish(&mut st);
        } else {
            self.hand_over(&mut st, idx, None);
        }
        // A release only moves idle deadlines later, so a reaper that is already sleeping until
        // a deadline need not hear of it; one waiting without a deadline must.
        let wake_reaper = self.spec.idle_timeout_ms > 0
            && st.reaper_deadline.is_none()
            && st.slots.get(idx).is_some_and(|s| s.inflight == 0);
        drop(st);
        if let Some(id) = stop {
            self.stop_instance(id);
        }
        if wake_reaper {
            self.changed.notify_one();
        }
    }

    /// Starts instances for waiters that have none to wait for, and up to `minInstances`.
    fn replenish(&self, st: &mut State) {
        if st.closed || Self::in_backoff(st) {
            return;
        }
        let max = self.spec.max_instances as usize;
        let starting = st
            .slots
            .iter()
            .filter(|s| s.state == InstanceState::Starting)
            .count();
        let mut wanted = st.waiters.len().saturating_sub(starting);
        let alive = Self::alive(st);
        wanted = wanted.max((self.spec.min_instances as usize).saturating_sub(alive));
        for _ in 0..wanted.min(max.saturating_sub(alive)) {
            self.start_instance(st);
        }
    }

    fn ensure_min(&self) {
        let mut st = self.state.lock().unwrap();
        self.replenish(&mut st);
    }

    fn stop_instance(&self, id: String) {
        self.metrics.global.instances_stopped.inc();
        let provider = self.provider.clone();
        tokio::spawn(async move { provider.stop(&id).await });
    }

    /// The instance behind `seq` is gone.
    fn lost(&self, seq: u64, why: String) {
        let mut st = self.state.lock().unwrap();
        let Some(idx) = st.slots.iter().position(|s| s.seq == seq) else {
            return;
        };
        let slot = st.slots.remove(idx);
        if !matches!(slot.state, InstanceState::Stopped) {
            self.metrics.global.instances_running.dec();
            if slot.state != InstanceState::Failed {
                self.metrics.global.instances_failed.inc();
            }
            tracing::warn!(function = %self.name, instance = %slot.id, reason = %why, inflight = slot.inflight, "instance died");
        }
        self.replenish(&mut st);
        drop(st);
        self.changed.notify_one();
    }

    /// Stops idle instances past the idle timeout, keeping `minInstances`. Returns when to look
    /// again.
    fn reap(&self) -> Option<Instant> {
        let idle = Duration::from_millis(self.spec.idle_timeout_ms);
        if idle.is_zero() {
            return None;
        }
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return None;
        }
        let now = Instant::now();
        let min = self.spec.min_instances as usize;
        let mut stops = Vec::new();
        loop {
            let alive = Self::alive(&st);
            if alive <= min {
                break;
            }
            let oldest = st
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.state == InstanceState::Ready
                        && s.inflight == 0
                        && now.saturating_duration_since(s.last_used) >= idle
                })
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i);
            let Some(i) = oldest else { break };
            let s = st.slots.remove(i);
            tracing::info!(function = %self.name, instance = %s.id, "instance stopped after the idle timeout");
            self.metrics.global.instances_running.dec();
            stops.push(s.id);
        }
        let next = if Self::alive(&st) > min {
            st.slots
                .iter()
                .filter(|s| s.state == InstanceState::Ready && s.inflight == 0)
                .map(|s| s.last_used + idle)
                .min()
        } else {
            None
        };
        st.reaper_deadline = next;
        drop(st);
        for id in stops {
            self.stop_instance(id);
        }
        next
    }

    /// The instances, for status pages.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let st = self.state.lock().unwrap();
        st.slots
            .iter()
            .map(|s| InstanceStatus {
                id: s.id.clone(),
                state: s.state,
                inflight: s.inflight,
                invocations: s.invocations,
                startup_ms: s.ready_after.map(|d| d.as_millis() as u64),
                idle_ms: if s.inflight == 0 {
                    s.last_used.elapsed().as_millis() as u64
                } else {
                    0
                },
                endpoint: s.conn.as_ref().map(|c| match c.endpoint.socket() {
                    Some(_) => c.endpoint.to_string(),
                    None => format!(
                        "http://{}",
                        c.invoke.authority().map(|a| a.as_str()).unwrap_or("")
                    ),
                }),
            })
            .collect()
    }

    /// Stops every instance and fails waiting dispatches. Idempotent.
    pub async fn close(&self) {
        let (ids, waiters) = {
            let mut st = self.state.lock().unwrap();
            if !st.closed {
                self.provider.prewarm_unregister(&self.spec);
            }
            st.closed = true;
            let ids: Vec<String> = st
                .slots
                .iter_mut()
                .filter(|s| {
                    !matches!(
                        s.state,
                        InstanceState::Stopped | InstanceState::Failed | InstanceState::Starting
                    )
                })
                .map(|s| {
                    s.state = InstanceState::Stopped;
                    s.id.clone()
                })
                .collect();
            (ids, st.waiters.drain(..).collect::<Vec<_>>())
        };
        for w in waiters {
            let _ = w.tx.send(Err(Failure::new(
                FailureKind::Fatal,
                ErrorCode::FunctionRemoved,
                "the function was removed",
            )));
        }
        let stops = ids.into_iter().map(|id| {
            self.metrics.global.instances_stopped.inc();
            self.metrics.global.instances_running.dec();
            let provider = self.provider.clone();
            async move { provider.stop(&id).await }
        });
        crate::provider::shared::join_all(stops).await;
        self.changed.notify_one();
    }

    /// Health-checks idle ready instances; those that do not answer are replaced.
    async fn check_health(&self) {
        let idle: Vec<(u64, Arc<Conn>)> = {
            let st = self.state.lock().unwrap();
            st.slots
                .iter()
                .filter(|s| s.state == InstanceState::Ready && s.inflight == 0)
                .filter_map(|s| s.conn.clone().map(|c| (s.seq, c)))
                .collect()
        };
        for (seq, conn) in idle {
            let ok = matches!(
                crate::dispatch::send(&self.client, &conn.endpoint, &conn.health, "GET", &[], b"", 64 * 1024, tokio::time::Instant::now() + Duration::from_secs(2)).await,
                Ok(r) if (200..300).contains(&r.status)
            );
            if !ok {
                let id = {
                    let mut st = self.state.lock().unwrap();
                    match st
                        .slots
                        .iter()
                        .position(|s| s.seq == seq && s.inflight == 0)
                    {
                        Some(i) => {
                            let s = st.slots.remove(i);
                            self.metrics.global.instances_running.dec();
                            self.metrics.global.instances_failed.inc();
                            self.replenish(&mut st);
                            Some(s.id)
                        }
                        None => None,
                    }
                };
                if let Some(id) = id {
                    tracing::warn!(function = %self.name, instance = %id, "instance failed its health check; replacing it");
                    let provider = self.provider.clone();
                    tokio::spawn(async move { provider.stop(&id).await });
                }
            }
        }
    }
}

async fn watch_exit(pool: Weak<Pool>, seq: u64, mut exited: ExitWatch) {
    crate::provider::exit::wait_exit(&mut exited).await;
    let why = exited
        .borrow()
        .clone()
        .unwrap_or_else(|| "the provider forgot the instance".into());
    if let Some(p) = pool.upgrade() {
        p.lost(seq, why);
    }
}

async fn reaper(pool: Weak<Pool>) {
    loop {
        let (next, notified) = {
            let Some(p) = pool.upgrade() else { return };
            if p.state.lock().unwrap().closed || p.spec.idle_timeout_ms == 0 {
                return;
            }
            // Register for changes before looking, so none is missed.
            let p2 = p.clone();
            let notified = async move { p2.changed.notified().await };
            (p.reap(), notified)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

async fn health_checker(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(p) = pool.upgrade() else { return };
        if p.state.lock().unwrap().closed {
            return;
        }
        p.check_health().await;
    }
}

/// A failed attempt on an instance that the kernel killed (in part) for going over its memory
/// limit becomes `OUT_OF_MEMORY`, a function failure (retried only as the function's own
/// failures are), and is counted; the caller replaces the instance. Asked only on failures.
pub fn out_of_memory(
    provider: &dyn Provider,
    metrics: &Metrics,
    function: &str,
    instance: &str,
    outcome: Outcome,
) -> (Outcome, bool) {
    let Outcome::Failure(f) = &outcome else {
        return (outcome, false);
    };
    // The instance's watchdog saw its runtime killed for memory (its own cgroup) and said so.
    if f.error.code == ErrorCode::OutOfMemory.as_str() {
        metrics.function(function).out_of_memory.inc();
        return (outcome, false);
    }
    match provider.out_of_memory(instance) {
        Some(msg) => {
            tracing::warn!(function, instance, previous = %f.error, "{msg}");
            metrics.function(function).out_of_memory.inc();
            (
                Outcome::Failure(Failure::new(
                    FailureKind::Function,
                    ErrorCode::OutOfMemory,
                    msg,
                )),
                true,
            )
        }
        None => (outcome, false),
    }
}

/// `DEPLOYMENT` mode: dispatch through the function's warm pool.
pub struct PoolBackend {
    pub pool: Arc<Pool>,
}

impl Backend for PoolBackend {
    fn dispatch<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, DispatchResult> {
        Box::pin(async move {
            let pool = &self.pool;
            let wait = call.timeout.max(pool.settings.startup_timeout);
            let mut lease = match pool.acquire(wait).await {
                Ok(l) => l,
                Err(f) => return DispatchResult::start_failed(Outcome::Failure(f)),
            };
            let (cold, prewarmed) = (lease.cold, lease.prewarmed);
            let (outcome, transport, runtime_start) = invoke_http(
                &pool.client,
                &lease.conn.invoke,
                &lease.conn.endpoint,
                call,
                false,
                pool.settings.timeout_grace,
            )
            .await;
            let (outcome, oom) = out_of_memory(
                pool.provider.as_ref(),
                &pool.metrics,
                &pool.name,
                &lease.conn.instance_id,
                outcome,
            );
            match transport {
                _ if oom => lease.mark_broken("out of memory".into()),
                Transport::Answered => {}
                other => lease.mark_broken(format!("{other:?}")),
            }
            drop(lease);
            DispatchResult {
                outcome,
                // A call that waited for the instance, or for a restart of the runtime inside it
                // (after a timeout or a crash killed the previous one), paid a start.
                start: match (cold, runtime_start) {
                    (Some(init), _) if prewarmed => StartKind::Prewarmed { init },
                    (Some(init), _) | (None, Some(init)) => StartKind::Cold { init },
                    (None, None) => StartKind::Warm,
                },
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.pool.close().await })
    }
}
