//! A warm pool per `DEPLOYMENT` function: instances started through a [`Provider`], leased one
//! invocation at a time (or `instanceConcurrency` at a time), recycled after `maxInvocations`,
//! stopped when idle, replaced when they die or fail a health check, and stopped when the
//! function goes.
//!
//! Layout:
//! - [`core`]: the state (the pool's phase, its instances, the dispatches waiting) and
//!   `Core::step`, the one function that changes it: an event in, a reply and actions out. No
//!   I/O, no clock of its own; unit-tested event by event.
//! - this file: the public handle ([`Pool`], [`Lease`]) and the thin driver around the core.
//!   It holds the core behind one mutex (never across an `.await`), feeds it events, and carries
//!   out its actions: provider starts and stops, handing leases to waiting dispatches, the timer
//!   (idle reaping, restarts after a backoff), exit watches and health checks.
//! - [`backend`]: the `DEPLOYMENT` [`Backend`](crate::dispatch::Backend), one HTTP hop through
//!   a lease.
//!
//! A dispatch leases the most recently used ready instance (so surplus instances go idle and
//! are reaped); if none is ready and the pool is below `maxInstances` it starts one and waits;
//! otherwise it queues and is handed the first instance that frees up or becomes ready. Nothing
//! polls on that path: a freed or new instance goes straight to the first waiter. A lease and a
//! release are one short critical section each, with no channel hop.
//!
//! Start failures back off exponentially; while a function has no live instance and is backing
//! off (or its last failure was permanent), dispatches fail at once with STARTUP_ERROR and the
//! last failure's message.

mod backend;
pub mod core;

pub use self::core::{InstanceState, InstanceStatus};
pub use backend::{out_of_memory, PoolBackend};

use self::core::{Action, Core, Event, Grant, Limits, Ready, Reply};
use crate::dispatch::HttpClient;
use crate::executions::{Failure, FailureKind};
use crate::metrics::Metrics;
use crate::provider::{ExitWatch, Provider, StartFailure, StartRequest};
use http::Uri;
use nanofaas_api::{ErrorCode, FunctionSpec};
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

/// How the core reaches a waiting dispatch.
type Waiter = oneshot::Sender<Result<Lease, Failure>>;

pub struct Pool {
    name: Arc<str>,
    spec: Arc<FunctionSpec>,
    provider: Arc<dyn Provider>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    settings: PoolSettings,
    core: Mutex<Core<Waiter>>,
    /// Wakes the timer task when something is due earlier than it sleeps (its own `Arc`, so a
    /// sleeping timer does not keep the pool alive).
    timer: Arc<Notify>,
    me: Weak<Pool>,
}

/// One leased place on an instance. Dropping it gives the place back.
pub struct Lease {
    pool: Arc<Pool>,
    /// `None` once given back (or never handed out).
    seq: Option<u64>,
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
        if let Some(seq) = self.seq.take() {
            let broken = self.broken.take();
            // The reply (always `None`) is left where it is, not moved out: on this path, the
            // one run after every invocation, that copy cost more than the rest of the release.
            let step = (self.pool.core.lock().unwrap())
                .step(Instant::now(), Event::Release { seq, broken });
            if let Some(actions) = step.actions {
                self.pool.perform(actions);
            }
        }
    }
}

impl Pool {
    pub fn new(
        spec: Arc<FunctionSpec>,
        provider: Arc<dyn Provider>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        settings: PoolSettings,
    ) -> Arc<Self> {
        let name: Arc<str> = spec.name.as_str().into();
        let limits = Limits::of(&spec, settings.start_backoff, settings.start_backoff_max);
        let core = Core::new(name.clone(), limits, metrics.clone());
        let pool = Arc::new_cyclic(|me| Pool {
            name,
            spec,
            provider,
            client,
            metrics,
            settings,
            core: Mutex::new(core),
            timer: Arc::new(Notify::new()),
            me: me.clone(),
        });
        pool.provider.prewarm_register(&pool.spec);
        let weak = Arc::downgrade(&pool);
        // The first tick starts `minInstances`.
        tokio::spawn(timer(weak.clone()));
        if !pool.settings.health_check_interval.is_zero() {
            tokio::spawn(health_checker(weak, pool.settings.health_check_interval));
        }
        pool
    }

    fn arc(&self) -> Arc<Pool> {
        self.me.upgrade().expect("pool alive while used")
    }

    /// Feeds one event to the core and carries out what it asks; returns its reply.
    #[inline(always)]
    fn step(&self, ev: Event<Waiter>) -> Reply {
        let step = self.core.lock().unwrap().step(Instant::now(), ev);
        if let Some(actions) = step.actions {
            self.perform(actions);
        }
        step.reply
    }

    /// Carries out the core's actions (outside its lock: a refused lease comes back as an
    /// event).
    fn perform(&self, actions: Vec<Action<Waiter>>) {
        for a in actions {
            match a {
                Action::Start { seq, id } => self.spawn_start(seq, id),
                Action::Stop { id } => {
                    let provider = self.provider.clone();
                    tokio::spawn(async move { provider.stop(&id).await });
                }
                Action::Grant { to, grant } => self.hand(to, grant),
                Action::Fail { to, failure } => {
                    let _ = to.send(Err(failure));
                }
                Action::WakeTimer => self.timer.notify_one(),
            }
        }
    }

    fn lease(&self, g: Grant) -> Lease {
        Lease {
            pool: self.arc(),
            seq: Some(g.seq),
            conn: g.conn,
            cold: g.cold,
            prewarmed: g.prewarmed,
            broken: None,
        }
    }

    fn hand(&self, to: Waiter, g: Grant) {
        let (seq, cold) = (g.seq, g.cold);
        if let Err(Ok(mut unused)) = to.send(Ok(self.lease(g))) {
            // The dispatch went away: the place goes to the next waiter, uncounted.
            unused.seq = None;
            drop(unused);
            self.step(Event::Unused { seq, cold });
        }
    }

    /// Starts an instance in the background: a prewarmed one specialized for this function if
    /// the provider has one ready, else (or if that cannot be used) a full start.
    fn spawn_start(&self, seq: u64, id: String) {
        let pool = self.arc();
        tokio::spawn(async move {
            let req = StartRequest {
                instance_id: id,
                spec: pool.spec.clone(),
            };
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
            // An instance whose URL the client cannot use is one that failed to start.
            let mut exited = None;
            let result = result.and_then(|inst| {
                match crate::dispatch::instance_endpoint(&inst.invoke_url, inst.socket.as_deref()) {
                    Ok(endpoint) => {
                        exited = Some(inst.exited);
                        Ok(Ready {
                            conn: Arc::new(Conn {
                                instance_id: inst.id,
                                invoke: inst.invoke_url,
                                health: inst.health_url,
                                endpoint,
                            }),
                            prewarmed,
                        })
                    }
                    Err(e) => {
                        pool.metrics.global.instances_stopped.inc();
                        let provider = pool.provider.clone();
                        tokio::spawn(async move { provider.stop(&inst.id).await });
                        Err(StartFailure {
                            message: format!("the instance cannot be reached: {e}"),
                            permanent: true,
                        })
                    }
                }
            });
            if let Reply::Watch = pool.step(Event::Started { seq, result }) {
                if let Some(exited) = exited {
                    tokio::spawn(watch_exit(pool.me.clone(), seq, exited));
                }
            }
        });
    }

    /// Waits for a lease until `wait`. Errors are the dispatch's outcome.
    pub async fn acquire(&self, wait: Duration) -> Result<Lease, Failure> {
        let (ticket, mut rx) = {
            let mut core = self.core.lock().unwrap();
            let now = Instant::now();
            match core.acquire(now) {
                Reply::Leased(g) => {
                    drop(core);
                    return Ok(self.lease(g));
                }
                Reply::Refused(f) => return Err(f),
                _ => {}
            }
            let (tx, rx) = oneshot::channel();
            let step = core.step(now, Event::Wait(tx));
            drop(core);
            if let Some(actions) = step.actions {
                self.perform(actions);
            }
            match step.reply {
                Reply::Queued(ticket) => (ticket, rx),
                _ => (0, rx),
            }
        };
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Failure::new(
                FailureKind::Platform,
                ErrorCode::InstanceLost,
                "the pool stopped",
            )),
            Err(_) => {
                if let Reply::Withdrawn(false) = self.step(Event::Withdraw(ticket)) {
                    // Answered while the time ran out: that answer is on its way.
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

    /// The instances, for status pages.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.core.lock().unwrap().instances(Instant::now())
    }

    /// Stops every instance and fails waiting dispatches; returns once the instances are
    /// stopped. Idempotent. (The platform lets in-flight calls finish before it closes a
    /// replaced or removed function's pool.)
    pub async fn close(&self) {
        let step = self.core.lock().unwrap().step(Instant::now(), Event::Close);
        if let Reply::Closed { was_open: true } = step.reply {
            self.provider.prewarm_unregister(&self.spec);
        }
        let mut stops = Vec::new();
        let mut rest = Vec::new();
        for a in step.actions.into_iter().flatten() {
            match a {
                Action::Stop { id } => stops.push(id),
                other => rest.push(other),
            }
        }
        self.perform(rest);
        let provider = &self.provider;
        crate::provider::shared::join_all(stops.iter().map(|id| provider.stop(id))).await;
    }

    /// Health-checks idle ready instances; those that do not answer are replaced.
    async fn check_health(&self) {
        let idle = self.core.lock().unwrap().idle_instances();
        for (seq, conn) in idle {
            let ok = matches!(
                crate::dispatch::send(&self.client, &conn.endpoint, &conn.health, "GET", &[], b"", 64 * 1024, Instant::now() + Duration::from_secs(2)).await,
                Ok(r) if (200..300).contains(&r.status)
            );
            if !ok {
                self.step(Event::HealthFailed { seq });
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Lets a timer that sleeps without a deadline see that the pool is gone.
        self.timer.notify_one();
    }
}

/// Reports the instance behind `seq` lost once it ends.
async fn watch_exit(pool: Weak<Pool>, seq: u64, mut exited: ExitWatch) {
    let why = crate::provider::exit::exit_reason(&mut exited).await;
    if let Some(p) = pool.upgrade() {
        p.step(Event::Lost { seq, why });
    }
}

/// The pool's clock: ticks the core when its next deadline comes (an idle timeout, the end of
/// a backoff) or when the core says something changed; ends when the pool closes or is dropped.
async fn timer(pool: Weak<Pool>) {
    let Some(wake) = pool.upgrade().map(|p| p.timer.clone()) else {
        return;
    };
    loop {
        let next = {
            let Some(p) = pool.upgrade() else { return };
            let (step, closed) = {
                let mut core = p.core.lock().unwrap();
                let step = core.step(Instant::now(), Event::Tick);
                (step, core.is_closed())
            };
            if let Some(actions) = step.actions {
                p.perform(actions);
            }
            if closed {
                return;
            }
            match step.reply {
                Reply::Timer(next) => next,
                _ => None,
            }
        };
        // A wake while this task ticked is kept by `Notify` as a permit, so none is missed.
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
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
        if p.core.lock().unwrap().is_closed() {
            return;
        }
        p.check_health().await;
    }
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
