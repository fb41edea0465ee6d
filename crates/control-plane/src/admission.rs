//! Admission of one function's invocations: a concurrency limit and a bounded FIFO queue.
//!
//! A slot is a [`Permit`]. When a permit is dropped, the slot goes straight to the first waiter
//! (a synchronous caller parked on a oneshot, or an asynchronous execution started on the spot):
//! nothing polls, and the number of permits alive never exceeds the limit, however requests race.
//! Every function has its own admission, so a flood on one function cannot take another's slots
//! or queue places: under saturation each function is served at its own concurrency.
//!
//! Backpressure: a full queue refuses with `depth`; a synchronous caller whose estimated wait
//! (queue position × observed service time ÷ concurrency) exceeds its deadline is refused at once
//! with `est_wait`; one that waits until its deadline is refused with `timeout`.
//! The state is one small mutex, never held while a waiter is woken or work is started.

use crate::metrics::FunctionMetrics;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Why an invocation was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// The queue is full.
    Depth { retry_after: Duration },
    /// The estimated wait exceeds the caller's deadline.
    EstWait { retry_after: Duration },
    /// The caller's deadline passed while queued.
    Timeout { retry_after: Duration },
    /// The function was removed or replaced and accepts no more work here.
    Closed,
}

impl Reject {
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Depth { .. } => "depth",
            Reject::EstWait { .. } => "est_wait",
            Reject::Timeout { .. } => "timeout",
            Reject::Closed => "closed",
        }
    }
}

/// The admission was closed while the work waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

type AsyncStart = Box<dyn FnOnce(Result<Permit, Closed>) + Send>;

enum WaiterKind {
    Sync(oneshot::Sender<Result<Permit, Closed>>),
    Async(AsyncStart),
}

struct Waiter {
    id: u64,
    kind: WaiterKind,
}

struct State {
    inflight: u32,
    queue: VecDeque<Waiter>,
    next_id: u64,
    closed: bool,
    /// Exponentially weighted mean time a permit is held, in seconds.
    service_s: f64,
    samples: u64,
}

pub struct Admission {
    limit: u32,
    queue_cap: usize,
    state: Mutex<State>,
    idle: Notify,
    metrics: Arc<FunctionMetrics>,
}

/// A slot. Dropping it hands the slot to the next waiter or frees it.
pub struct Permit {
    adm: Option<Arc<Admission>>,
    acquired: Instant,
}

impl Permit {
    /// When the slot was obtained.
    pub fn acquired(&self) -> Instant {
        self.acquired
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(adm) = self.adm.take() {
            adm.release(self.acquired.elapsed());
        }
    }
}

const MIN_SAMPLES_FOR_ESTIMATE: u64 = 5;

impl Admission {
    pub fn new(limit: u32, queue_cap: u32, metrics: Arc<FunctionMetrics>) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            queue_cap: queue_cap as usize,
            state: Mutex::new(State {
                inflight: 0,
                queue: VecDeque::new(),
                next_id: 0,
                closed: false,
                service_s: 0.0,
                samples: 0,
            }),
            idle: Notify::new(),
            metrics,
        })
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            adm: Some(self.clone()),
            acquired: Instant::now(),
        }
    }

    fn estimate(&self, st: &State, position: usize) -> Option<Duration> {
        (st.samples >= MIN_SAMPLES_FOR_ESTIMATE).then(|| {
            Duration::from_secs_f64(st.service_s * (position as f64 + 1.0) / self.limit as f64)
        })
    }

    fn retry_after(&self, st: &State) -> Duration {
        let est = self
            .estimate(st, st.queue.len())
            .unwrap_or(Duration::from_secs(1));
        est.max(Duration::from_secs(1))
    }

    /// Waits for a slot until `deadline`.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Permit, Reject> {
        let (id, rx) = {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return Err(Reject::Closed);
            }
            if st.inflight < self.limit && st.queue.is_empty() {
                st.inflight += 1;
                drop(st);
                self.metrics.inflight.inc();
                return Ok(self.permit());
            }
            if st.queue.len() >= self.queue_cap {
                return Err(Reject::Depth {
                    retry_after: self.retry_after(&st),
                });
            }
            if let Some(est) = self.estimate(&st, st.queue.len()) {
                if Instant::now() + est > deadline {
                    return Err(Reject::EstWait {
                        retry_after: est.max(Duration::from_secs(1)),
                    });
                }
            }
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            st.queue.push_back(Waiter {
                id,
                kind: WaiterKind::Sync(tx),
            });
            (id, rx)
        };
        self.metrics.queue_depth.inc();
        let mut guard = QueuedGuard {
            adm: self,
            id,
            armed: true,
        };
        let mut rx = rx;
        let result = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(r)) => r.map_err(|_| Reject::Closed),
            Ok(Err(_)) => Err(Reject::Closed),
            Err(_) => {
                if self.remove_waiter(id) {
                    guard.armed = false;
                    let st = self.state.lock().unwrap();
                    return Err(Reject::Timeout {
                        retry_after: self.retry_after(&st),
                    });
                }
                // Popped at the very moment the deadline passed: the hand-over is in flight.
                match rx.await {
                    Ok(r) => r.map_err(|_| Reject::Closed),
                    Err(_) => Err(Reject::Closed),
                }
            }
        };
        guard.armed = false;
        result
    }

    /// Admits asynchronous work: `start` runs at once (on this thread) if a slot is free,
    /// later with the permit of the first slot to free up, or with `Err(Closed)` if the function
    /// is removed first. Refuses when the queue is full.
    pub fn submit(
        self: &Arc<Self>,
        start: impl FnOnce(Result<Permit, Closed>) + Send + 'static,
    ) -> Result<(), Reject> {
        self.submit_inner(start, false)
    }

    /// Like [`Admission::submit`], but never refused for a full queue: for work that was
    /// accepted before a restart.
    pub fn submit_accepted(
        self: &Arc<Self>,
        start: impl FnOnce(Result<Permit, Closed>) + Send + 'static,
    ) -> Result<(), Reject> {
        self.submit_inner(start, true)
    }

    fn submit_inner(
        self: &Arc<Self>,
        start: impl FnOnce(Result<Permit, Closed>) + Send + 'static,
        unbounded: bool,
    ) -> Result<(), Reject> {
        {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return Err(Reject::Closed);
            }
            if !(st.inflight < self.limit && st.queue.is_empty()) {
                if st.queue.len() >= self.queue_cap && !unbounded {
                    return Err(Reject::Depth {
                        retry_after: self.retry_after(&st),
                    });
                }
                st.next_id += 1;
                let id = st.next_id;
                st.queue.push_back(Waiter {
                    id,
                    kind: WaiterKind::Async(Box::new(start)),
                });
                drop(st);
                self.metrics.queue_depth.inc();
                return Ok(());
            }
            st.inflight += 1;
        }
        self.metrics.inflight.inc();
        start(Ok(self.permit()));
        Ok(())
    }

    fn remove_waiter(&self, id: u64) -> bool {
        let mut st = self.state.lock().unwrap();
        if let Some(pos) = st.queue.iter().position(|w| w.id == id) {
            st.queue.remove(pos);
            drop(st);
            self.metrics.queue_depth.dec();
            true
        } else {
            false
        }
    }

    fn release(self: Arc<Self>, held: Duration) {
        let mut st = self.state.lock().unwrap();
        let s = held.as_secs_f64();
        st.service_s = if st.samples == 0 {
            s
        } else {
            st.service_s * 0.8 + s * 0.2
        };
        st.samples += 1;
        loop {
            let Some(w) = st.queue.pop_front() else {
                st.inflight -= 1;
                let idle = st.inflight == 0;
                drop(st);
                self.metrics.inflight.dec();
                if idle {
                    self.idle.notify_waiters();
                }
                return;
            };
            drop(st);
            self.metrics.queue_depth.dec();
            let permit = self.permit();
            match w.kind {
                WaiterKind::Sync(tx) => match tx.send(Ok(permit)) {
                    Ok(()) => return,
                    Err(returned) => {
                        // The caller went away; keep the slot for the next waiter.
                        if let Ok(mut p) = returned {
                            p.adm = None;
                        }
                    }
                },
                WaiterKind::Async(start) => {
                    start(Ok(permit));
                    return;
                }
            }
            st = self.state.lock().unwrap();
        }
    }

    /// Refuses new work and fails every queued invocation with `Closed`. In-flight ones go on.
    pub fn close(&self) {
        let drained: Vec<Waiter> = {
            let mut st = self.state.lock().unwrap();
            st.closed = true;
            st.queue.drain(..).collect()
        };
        for w in drained {
            self.metrics.queue_depth.dec();
            match w.kind {
                WaiterKind::Sync(tx) => {
                    let _ = tx.send(Err(Closed));
                }
                WaiterKind::Async(start) => start(Err(Closed)),
            }
        }
    }

    /// Waits until no permit is held.
    pub async fn wait_idle(&self) {
        loop {
            let n = self.idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.state.lock().unwrap().inflight == 0 {
                return;
            }
            n.await;
        }
    }

    pub fn inflight(&self) -> u32 {
        self.state.lock().unwrap().inflight
    }

    pub fn queued(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// Removes a queued synchronous waiter whose caller went away (its future was dropped).
struct QueuedGuard<'a> {
    adm: &'a Admission,
    id: u64,
    armed: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.adm.remove_waiter(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn adm(limit: u32, queue: u32) -> Arc<Admission> {
        Admission::new(limit, queue, Arc::new(FunctionMetrics::default()))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn limit_holds_under_racing_callers() {
        let a = adm(4, 1000);
        let live = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (a, live, peak) = (a.clone(), live.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _p = a.acquire(far()).await.unwrap();
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + i % 7)).await;
                live.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert_eq!(a.inflight(), 0);
        assert_eq!(a.queued(), 0);
        assert_eq!(a.metrics.inflight.get(), 0);
        assert_eq!(a.metrics.queue_depth.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_hand_over_without_polling() {
        let a = adm(1, 10);
        let first = a.acquire(far()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (a, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = a.acquire(far()).await.unwrap();
                order.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(a.queued(), 3);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn depth_and_timeout_rejections() {
        let a = adm(1, 1);
        let _held = a.acquire(far()).await.unwrap();
        let a2 = a.clone();
        let queued = tokio::spawn(async move {
            a2.acquire(Instant::now() + Duration::from_secs(2))
                .await
                .map(|_| ())
        });
        tokio::task::yield_now().await;
        assert!(matches!(a.acquire(far()).await, Err(Reject::Depth { .. })));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(queued.await.unwrap(), Err(Reject::Timeout { .. })));
        assert_eq!(a.queued(), 0, "the timed-out waiter left the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn estimated_wait_refuses_early() {
        let a = adm(1, 100);
        for _ in 0..MIN_SAMPLES_FOR_ESTIMATE {
            let p = a.acquire(far()).await.unwrap();
            tokio::time::advance(Duration::from_secs(2)).await;
            drop(p);
        }
        let _held = a.acquire(far()).await.unwrap();
        let r = a.acquire(Instant::now() + Duration::from_millis(500)).await;
        match r {
            Err(Reject::EstWait { retry_after }) => assert!(retry_after >= Duration::from_secs(1)),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn async_work_starts_when_a_slot_frees_and_close_fails_the_rest() {
        let a = adm(1, 2);
        let held = a.acquire(far()).await.unwrap();
        let started = Arc::new(Mutex::new(Vec::new()));
        let permits = Arc::new(Mutex::new(Vec::new()));
        for i in 0..2 {
            let (s, keep) = (started.clone(), permits.clone());
            a.submit(move |p| {
                s.lock().unwrap().push((i, p.is_ok()));
                if let Ok(p) = p {
                    keep.lock().unwrap().push(p); // still running
                }
            })
            .unwrap();
        }
        assert!(matches!(a.submit(|_| {}), Err(Reject::Depth { .. })));
        drop(held);
        assert_eq!(*started.lock().unwrap(), vec![(0, true)]);
        a.close();
        assert_eq!(*started.lock().unwrap(), vec![(0, true), (1, false)]);
        assert!(matches!(a.submit(|_| {}), Err(Reject::Closed)));
        assert_eq!(a.inflight(), 1);
        permits.lock().unwrap().clear();
        assert_eq!(a.inflight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_waiters_do_not_hold_queue_places() {
        let a = adm(1, 1);
        let held = a.acquire(far()).await.unwrap();
        let a2 = a.clone();
        let t = tokio::spawn(async move { a2.acquire(far()).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 1);
        t.abort();
        let _ = t.await;
        assert_eq!(a.queued(), 0);
        drop(held);
        assert_eq!(a.inflight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_after_close() {
        let a = adm(2, 2);
        let p = a.acquire(far()).await.unwrap();
        a.close();
        let a2 = a.clone();
        let w = tokio::spawn(async move { a2.wait_idle().await });
        tokio::task::yield_now().await;
        assert!(!w.is_finished());
        drop(p);
        w.await.unwrap();
    }
}
