//! The pool's state and the one function that changes it: [`Core::step`] takes an [`Event`]
//! (a dispatch asks for an instance or gives one back, a start ended, an instance died, the
//! timer fired, a health check failed, the function went away) and answers with a [`Reply`]
//! for the caller and the [`Action`]s the driver must carry out (start or stop an instance,
//! hand a lease to a waiting dispatch, fail one, wake the timer).
//!
//! Sans-IO: nothing here awaits, spawns, sends or sleeps; time is the `now` each event carries.
//! Its only side effects are the instance counters of [`Metrics`] and log lines, which name the
//! states. The driver (`mod.rs`) holds the core behind one mutex, never across an `.await`.
//!
//! The pool's phase is [`Phase`]: `Open`, `Failing` (the last start failed: no start before the
//! backoff ends, none at all while nothing lives when the failure is permanent) or `Closed`.
//! Each instance is a [`Slot`] in `Starting → Ready ⇄ Busy → Draining → Stopped`, or `Failed`.

use super::Conn;
use crate::executions::{Failure, FailureKind};
use crate::metrics::Metrics;
use crate::provider::StartFailure;
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{ErrorCode, FunctionSpec};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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

/// What the pool needs of its function's spec and of the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub min: usize,
    pub max: usize,
    /// Leases one instance takes at once (`instanceConcurrency`).
    pub concurrency: u32,
    /// Leases after which an instance is recycled (0 = never).
    pub max_invocations: u64,
    /// How long an instance may stay idle before it is stopped (0 = forever).
    pub idle: Duration,
    /// First delay after a failed start; doubles with each consecutive failure, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Limits {
    pub fn of(spec: &FunctionSpec, backoff: Duration, backoff_max: Duration) -> Limits {
        Limits {
            min: spec.min_instances as usize,
            max: spec.max_instances as usize,
            concurrency: spec.instance_concurrency,
            max_invocations: spec.max_invocations,
            idle: Duration::from_millis(spec.idle_timeout_ms),
            backoff,
            backoff_max,
        }
    }
}

/// The pool as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Starts instances as dispatches and `minInstances` need them.
    Open,
    /// The last start failed (`failures` in a row).
    Failing(Failing),
    /// The function is gone: no lease is given, instances that come up are stopped.
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failing {
    pub failures: u32,
    /// No start before this.
    pub until: Instant,
    pub last_error: String,
    /// Trying again cannot help: no start at all while no instance lives.
    pub permanent: bool,
}

/// One instance.
pub struct Slot {
    pub seq: u64,
    pub id: String,
    pub state: InstanceState,
    pub conn: Option<Arc<Conn>>,
    pub inflight: u32,
    pub invocations: u64,
    pub last_used: Instant,
    pub asked_at: Instant,
    pub ready_after: Option<Duration>,
    /// A prewarmed instance specialized for this function (not a full start).
    pub prewarmed: bool,
}

impl Slot {
    fn alive(&self) -> bool {
        !matches!(self.state, InstanceState::Stopped | InstanceState::Failed)
    }

    fn idle(&self) -> bool {
        self.state == InstanceState::Ready && self.inflight == 0
    }
}

/// A lease the core gave: the driver wraps it in a `Lease` that gives it back when dropped.
#[derive(Debug, Clone)]
pub struct Grant {
    pub seq: u64,
    pub conn: Arc<Conn>,
    /// `Some(start time)` when the dispatch waited for the instance to start.
    pub cold: Option<Duration>,
    pub prewarmed: bool,
}

/// A started instance, as the driver reports it.
pub struct Ready {
    pub conn: Arc<Conn>,
    pub prewarmed: bool,
}

/// Everything that can happen to a pool. `W` is how the driver reaches a waiting dispatch.
pub enum Event<W> {
    /// A dispatch wants an instance now: [`Reply::Leased`], [`Reply::Refused`] or
    /// [`Reply::MustWait`] (then the driver sends [`Event::Wait`]).
    Acquire,
    /// The dispatch waits in line: [`Reply::Queued`] with its ticket.
    Wait(W),
    /// The dispatch stopped waiting: [`Reply::Withdrawn`] tells whether it was still in line (if
    /// not, its answer is on its way).
    Withdraw(u64),
    /// A lease came back; `broken` says why the instance must go.
    Release { seq: u64, broken: Option<String> },
    /// A lease the core gave never reached its waiter (it went away): undone, not counted.
    Unused { seq: u64, cold: Option<Duration> },
    /// A start asked for by [`Action::Start`] ended: [`Reply::Watch`] when the driver must
    /// watch the instance for its end.
    Started {
        seq: u64,
        result: Result<Ready, StartFailure>,
    },
    /// The instance behind `seq` is gone.
    Lost { seq: u64, why: String },
    /// The timer fired (and once at creation): idle instances past the idle timeout stop,
    /// missing ones start. [`Reply::Timer`] says when to fire next.
    Tick,
    /// The idle instance behind `seq` did not answer its health check.
    HealthFailed { seq: u64 },
    /// The function was removed or replaced: [`Reply::Closed`] tells whether it was open.
    Close,
}

#[derive(Debug)]
pub enum Reply {
    None,
    Leased(Grant),
    Refused(Failure),
    MustWait,
    Queued(u64),
    Withdrawn(bool),
    Watch,
    /// `None`: nothing is due; the timer waits to be woken.
    Timer(Option<Instant>),
    Closed {
        was_open: bool,
    },
}

/// What the driver must do.
#[derive(Debug)]
pub enum Action<W> {
    /// Start an instance (a prewarmed one if the provider has one) and report it with
    /// [`Event::Started`].
    Start { seq: u64, id: String },
    /// Stop an instance (already out of the pool).
    Stop { id: String },
    /// Hand a lease to a waiting dispatch.
    Grant { to: W, grant: Grant },
    /// Fail a waiting dispatch.
    Fail { to: W, failure: Failure },
    /// Something is due earlier than the timer knows: send it [`Event::Tick`].
    WakeTimer,
}

/// The answer to one event.
pub struct Step<W> {
    pub reply: Reply,
    /// `None` when there is nothing to do (the common case, which then costs nothing).
    pub actions: Option<Vec<Action<W>>>,
}

impl<W> Step<W> {
    pub fn actions(&self) -> &[Action<W>] {
        self.actions.as_deref().unwrap_or(&[])
    }
}

struct Waiter<W> {
    ticket: u64,
    to: W,
}

pub struct Core<W> {
    name: Arc<str>,
    limits: Limits,
    metrics: Arc<Metrics>,
    phase: Phase,
    slots: Vec<Slot>,
    waiters: VecDeque<Waiter<W>>,
    next_seq: u64,
    /// When the driver's timer fires next, as last told (`None`: it waits to be woken).
    timer: Option<Instant>,
    /// Whether an instance going idle may ever be reaped: false from a tick that found the
    /// idle timeout off or no more instances than `minInstances` until the next start.
    reapable: bool,
    out: Vec<Action<W>>,
}

fn instance_id(name: &str) -> String {
    let id = crate::ids::trace_id();
    format!("{name}-{}", &id[..12])
}

impl<W> Core<W> {
    pub fn new(name: Arc<str>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Core {
            name,
            limits,
            metrics,
            phase: Phase::Open,
            slots: Vec::new(),
            waiters: VecDeque::new(),
            next_seq: 0,
            timer: None,
            reapable: false,
            out: Vec::new(),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Changes the state for `ev` at `now`. Always inlined, so that where the event is known
    /// (a lease, a release on the hot path) the dispatch on it folds away.
    #[inline(always)]
    pub fn step(&mut self, now: Instant, ev: Event<W>) -> Step<W> {
        let reply = match ev {
            Event::Acquire => self.acquire(now),
            Event::Wait(to) => self.wait(now, to),
            Event::Withdraw(ticket) => {
                let before = self.waiters.len();
                self.waiters.retain(|w| w.ticket != ticket);
                Reply::Withdrawn(before != self.waiters.len())
            }
            Event::Release { seq, broken } => {
                self.release(now, seq, broken);
                Reply::None
            }
            Event::Unused { seq, cold } => {
                self.unused(now, seq, cold);
                Reply::None
            }
            Event::Started { seq, result } => self.started(now, seq, result),
            Event::Lost { seq, why } => {
                self.lost(now, seq, why);
                Reply::None
            }
            Event::Tick => Reply::Timer(self.tick(now)),
            Event::HealthFailed { seq } => {
                self.health_failed(now, seq);
                Reply::None
            }
            Event::Close => self.close(),
        };
        let actions = if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        };
        Step { reply, actions }
    }

    fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.alive()).count()
    }

    fn starting(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == InstanceState::Starting)
            .count()
    }

    fn in_backoff(&self, now: Instant) -> bool {
        matches!(&self.phase, Phase::Failing(f) if now < f.until)
    }

    fn index(&self, seq: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.seq == seq)
    }

    fn can_lease(&self, s: &Slot) -> bool {
        matches!(s.state, InstanceState::Ready | InstanceState::Busy)
            && s.inflight < self.limits.concurrency
            && (self.limits.max_invocations == 0 || s.invocations < self.limits.max_invocations)
    }

    fn startup_failure(&self, now: Instant) -> Failure {
        let (last, retry) = match &self.phase {
            Phase::Failing(f) => {
                let left = f.until.saturating_duration_since(now);
                let retry = if left.is_zero() {
                    String::new()
                } else {
                    format!(" (next start attempt in {} ms)", left.as_millis())
                };
                (f.last_error.as_str(), retry)
            }
            _ => ("no instance could be started", String::new()),
        };
        Failure::new(
            FailureKind::Fatal,
            ErrorCode::StartupError,
            format!("{last}{retry}"),
        )
    }

    fn removed(&self) -> Failure {
        Failure::new(
            FailureKind::Fatal,
            ErrorCode::FunctionRemoved,
            format!("function {:?} was removed", self.name),
        )
    }

    fn lease(&mut self, idx: usize, now: Instant, cold: Option<Duration>) -> Grant {
        let cap = self.limits.concurrency;
        let slot = &mut self.slots[idx];
        slot.inflight += 1;
        slot.invocations += 1;
        slot.last_used = now;
        if slot.inflight >= cap {
            slot.state = InstanceState::Busy;
        }
        Grant {
            seq: slot.seq,
            conn: slot.conn.clone().expect("a ready slot has a connection"),
            cold,
            prewarmed: cold.is_some() && slot.prewarmed,
        }
    }

    /// [`Event::Acquire`], which never has actions: the driver's hot path calls it directly,
    /// saving the copy of its reply into a [`Step`] (measurable on the path every invocation takes).
    #[inline]
    pub fn acquire(&mut self, now: Instant) -> Reply {
        if self.phase == Phase::Closed {
            return Reply::Refused(self.removed());
        }
        // The most recently used ready instance with room, so surplus ones go idle.
        let best = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| self.can_lease(s))
            .max_by_key(|(_, s)| (s.last_used, s.seq))
            .map(|(i, _)| i);
        if let Some(idx) = best {
            return Reply::Leased(self.lease(idx, now, None));
        }
        let refuse = match &self.phase {
            Phase::Failing(f) => f.permanent || now < f.until,
            _ => false,
        };
        if refuse && self.alive() == 0 {
            return Reply::Refused(self.startup_failure(now));
        }
        Reply::MustWait
    }

    fn wait(&mut self, now: Instant, to: W) -> Reply {
        if self.phase == Phase::Closed {
            self.out.push(Action::Fail {
                to,
                failure: self.removed(),
            });
            return Reply::None;
        }
        let blocked = match &self.phase {
            Phase::Failing(f) => f.permanent || now < f.until,
            _ => false,
        };
        // One more start unless enough are already under way for those waiting.
        if !blocked && self.alive() < self.limits.max && self.starting() <= self.waiters.len() {
            self.start(now);
        }
        self.next_seq += 1;
        let ticket = self.next_seq;
        self.waiters.push_back(Waiter { ticket, to });
        Reply::Queued(ticket)
    }

    fn start(&mut self, now: Instant) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let id = instance_id(&self.name);
        self.slots.push(Slot {
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
        self.reapable = !self.limits.idle.is_zero();
        self.out.push(Action::Start { seq, id });
    }

    fn stop(&mut self, id: String) {
        self.metrics.global.instances_stopped.inc();
        self.out.push(Action::Stop { id });
    }

    /// Removes the slot at `idx`, still counted as running, and stops its instance.
    fn retire(&mut self, idx: usize) {
        let s = self.slots.remove(idx);
        self.metrics.global.instances_running.dec();
        self.stop(s.id);
    }

    /// Starts instances for waiters that have none to wait for, and up to `minInstances`.
    fn replenish(&mut self, now: Instant) {
        if self.phase == Phase::Closed || self.in_backoff(now) {
            return;
        }
        let alive = self.alive();
        let wanted = self
            .waiters
            .len()
            .saturating_sub(self.starting())
            .max(self.limits.min.saturating_sub(alive));
        for _ in 0..wanted.min(self.limits.max.saturating_sub(alive)) {
            self.start(now);
        }
    }

    /// Gives the slot at `idx` to waiters while it has room.
    #[inline]
    fn hand_over(&mut self, idx: usize, now: Instant, cold: Option<Duration>) {
        while !self.waiters.is_empty() && self.can_lease(&self.slots[idx]) {
            let w = self.waiters.pop_front().expect("not empty");
            let grant = self.lease(idx, now, cold);
            self.out.push(Action::Grant { to: w.to, grant });
        }
    }

    /// The slot at `idx` went idle: the timer must hear of it if it sleeps without a deadline
    /// and the instance may be reaped.
    #[inline]
    fn went_idle(&mut self, idx: usize, now: Instant) {
        if !self.reapable || self.timer.is_some() || !self.slots[idx].idle() {
            return;
        }
        self.timer = Some(now + self.limits.idle);
        self.out.push(Action::WakeTimer);
    }

    #[inline]
    fn release(&mut self, now: Instant, seq: u64, broken: Option<String>) {
        let Some(idx) = self.index(seq) else { return };
        let cap = self.limits.concurrency;
        let max_inv = self.limits.max_invocations;
        let slot = &mut self.slots[idx];
        slot.inflight -= 1;
        slot.last_used = now;
        let mut stop = false;
        if let Some(why) = broken {
            if slot.alive() {
                // Logged once it has ended, with why ("instance died"), busy or idle alike.
                tracing::debug!(function = %self.name, instance = %slot.id, reason = %why, "instance taken out of service");
                slot.state = InstanceState::Failed;
                self.metrics.global.instances_failed.inc();
                stop = true;
            }
        } else if max_inv != 0
            && slot.invocations >= max_inv
            && slot.state != InstanceState::Stopped
        {
            slot.state = InstanceState::Draining;
            if slot.inflight == 0 {
                tracing::info!(function = %self.name, instance = %slot.id, invocations = slot.invocations, "instance recycled after maxInvocations");
                slot.state = InstanceState::Stopped;
                stop = true;
            }
        } else if slot.state == InstanceState::Busy && slot.inflight < cap {
            slot.state = InstanceState::Ready;
        }
        if stop {
            self.retire(idx);
            self.replenish(now);
        } else {
            self.hand_over(idx, now, None);
            self.went_idle(idx, now);
        }
    }

    fn unused(&mut self, now: Instant, seq: u64, cold: Option<Duration>) {
        let Some(idx) = self.index(seq) else { return };
        let slot = &mut self.slots[idx];
        slot.inflight -= 1;
        slot.invocations -= 1;
        if slot.state == InstanceState::Busy && slot.inflight < self.limits.concurrency {
            slot.state = InstanceState::Ready;
        }
        self.hand_over(idx, now, cold);
        self.went_idle(idx, now);
    }

    fn started(&mut self, now: Instant, seq: u64, result: Result<Ready, StartFailure>) -> Reply {
        let Some(idx) = self.index(seq) else {
            // Not ours (any more): nothing may be left running.
            if let Ok(r) = result {
                self.stop(r.conn.instance_id.clone());
            }
            return Reply::None;
        };
        match result {
            Ok(_) if self.phase == Phase::Closed => {
                self.retire(idx);
                Reply::None
            }
            Ok(ready) => {
                self.metrics.global.instances_started.inc();
                self.phase = Phase::Open;
                let slot = &mut self.slots[idx];
                let startup = now.saturating_duration_since(slot.asked_at);
                // A specialized prewarmed instance has the provider's id, not the one asked for.
                slot.id = ready.conn.instance_id.clone();
                slot.prewarmed = ready.prewarmed;
                slot.state = InstanceState::Ready;
                slot.ready_after = Some(startup);
                slot.last_used = now;
                slot.conn = Some(ready.conn);
                tracing::info!(function = %self.name, instance = %slot.id, startup_ms = startup.as_millis() as u64, prewarmed = ready.prewarmed, "instance ready");
                self.hand_over(idx, now, Some(startup));
                self.out.push(Action::WakeTimer);
                Reply::Watch
            }
            Err(f) => {
                self.slots.remove(idx);
                self.metrics.global.instances_running.dec();
                self.metrics.global.instances_failed.inc();
                if self.phase == Phase::Closed {
                    return Reply::None;
                }
                let failures = match &self.phase {
                    Phase::Failing(f) => f.failures + 1,
                    _ => 1,
                };
                let delay =
                    Backoff::new(self.limits.backoff, self.limits.backoff_max).delay(failures);
                tracing::warn!(function = %self.name, failures, backoff_ms = delay.as_millis() as u64, error = %f.message, "instance failed to start");
                self.phase = Phase::Failing(Failing {
                    failures,
                    until: now + delay,
                    last_error: f.message,
                    permanent: f.permanent,
                });
                // Waiters with no live instance to wait for get the error now.
                if self.alive() == 0 {
                    let failure = self.startup_failure(now);
                    for w in std::mem::take(&mut self.waiters) {
                        self.out.push(Action::Fail {
                            to: w.to,
                            failure: failure.clone(),
                        });
                    }
                }
                self.out.push(Action::WakeTimer);
                Reply::None
            }
        }
    }

    fn lost(&mut self, now: Instant, seq: u64, why: String) {
        let Some(idx) = self.index(seq) else { return };
        let slot = self.slots.remove(idx);
        if slot.state != InstanceState::Stopped {
            self.metrics.global.instances_running.dec();
            if slot.state != InstanceState::Failed {
                self.metrics.global.instances_failed.inc();
            }
            tracing::warn!(function = %self.name, instance = %slot.id, reason = %why, inflight = slot.inflight, "instance died");
        }
        self.replenish(now);
        self.out.push(Action::WakeTimer);
    }

    fn health_failed(&mut self, now: Instant, seq: u64) {
        let Some(idx) = self.slots.iter().position(|s| s.seq == seq && s.idle()) else {
            return;
        };
        tracing::warn!(function = %self.name, instance = %self.slots[idx].id, "instance failed its health check; replacing it");
        self.metrics.global.instances_failed.inc();
        self.retire(idx);
        self.replenish(now);
        self.out.push(Action::WakeTimer);
    }

    /// Stops idle instances past the idle timeout (oldest first, keeping `minInstances`),
    /// starts missing ones once a backoff is over; returns when to look again.
    fn tick(&mut self, now: Instant) -> Option<Instant> {
        if self.phase == Phase::Closed {
            self.timer = None;
            return None;
        }
        let idle = self.limits.idle;
        if !idle.is_zero() {
            while self.alive() > self.limits.min {
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.idle() && now.saturating_duration_since(s.last_used) >= idle)
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i);
                let Some(i) = oldest else { break };
                tracing::info!(function = %self.name, instance = %self.slots[i].id, "instance stopped after the idle timeout");
                self.retire(i);
            }
        }
        // A permanent failure is retried on demand only, never by the clock.
        if !matches!(&self.phase, Phase::Failing(f) if f.permanent) {
            self.replenish(now);
        }
        let alive = self.alive();
        self.reapable = !idle.is_zero() && alive > self.limits.min;
        let reap = if self.reapable {
            self.slots
                .iter()
                .filter(|s| s.idle())
                .map(|s| s.last_used + idle)
                .min()
        } else {
            None
        };
        let retry = match &self.phase {
            Phase::Failing(f) if !f.permanent && alive < self.limits.min => Some(f.until),
            _ => None,
        };
        self.timer = match (reap, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.timer
    }

    fn close(&mut self) -> Reply {
        if self.phase == Phase::Closed {
            return Reply::Closed { was_open: false };
        }
        self.phase = Phase::Closed;
        // Starting instances are stopped when their start ends.
        let mut ids = Vec::new();
        for s in &mut self.slots {
            if s.alive() && s.state != InstanceState::Starting {
                s.state = InstanceState::Stopped;
                ids.push(s.id.clone());
            }
        }
        for id in ids {
            self.metrics.global.instances_running.dec();
            self.stop(id);
        }
        for w in std::mem::take(&mut self.waiters) {
            self.out.push(Action::Fail {
                to: w.to,
                failure: Failure::new(
                    FailureKind::Fatal,
                    ErrorCode::FunctionRemoved,
                    "the function was removed",
                ),
            });
        }
        self.out.push(Action::WakeTimer);
        Reply::Closed { was_open: true }
    }

    /// The idle ready instances, for health checks.
    pub fn idle_instances(&self) -> Vec<(u64, Arc<Conn>)> {
        self.slots
            .iter()
            .filter(|s| s.idle())
            .filter_map(|s| s.conn.clone().map(|c| (s.seq, c)))
            .collect()
    }

    /// The instances, for status pages.
    pub fn instances(&self, now: Instant) -> Vec<InstanceStatus> {
        self.slots
            .iter()
            .map(|s| InstanceStatus {
                id: s.id.clone(),
                state: s.state,
                inflight: s.inflight,
                invocations: s.invocations,
                startup_ms: s.ready_after.map(|d| d.as_millis() as u64),
                idle_ms: if s.inflight == 0 {
                    now.saturating_duration_since(s.last_used).as_millis() as u64
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
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
