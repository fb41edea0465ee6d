//! The pool's driver against the scripted fake provider, in paused time: every provider call
//! the pool makes is expected by the test (or fails it), and every timing (backoffs, idle
//! timeouts, waits) is exact to the millisecond of the paused clock.

use super::fake::{pair, settle, Script};
use super::*;
use serde_json::json;

const MS: Duration = Duration::from_millis(1);

struct H {
    pool: Arc<Pool>,
    s: Script,
    metrics: Arc<Metrics>,
}

fn settings() -> PoolSettings {
    PoolSettings {
        health_check_interval: Duration::ZERO,
        start_backoff: 100 * MS,
        start_backoff_max: 400 * MS,
        startup_timeout: Duration::from_secs(10),
        timeout_grace: Duration::from_secs(1),
    }
}

fn client() -> HttpClient {
    crate::dispatch::http_client(&crate::dispatch::ClientSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: 4,
    })
}

/// A pool for a function with these spec fields (idle timeout off unless given).
async fn pool_with(extra: serde_json::Value, settings: PoolSettings) -> H {
    let mut spec = json!({"name": "f", "command": ["run"], "idleTimeoutMs": 0});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let spec: FunctionSpec = serde_json::from_value(spec).unwrap();
    let (fake, mut s) = pair();
    let metrics = Arc::new(Metrics::default());
    let pool = Pool::new(
        Arc::new(spec),
        Arc::new(fake),
        client(),
        metrics.clone(),
        settings,
    );
    s.expect_other("prewarm_register").await;
    H { pool, s, metrics }
}

async fn pool(extra: serde_json::Value) -> H {
    pool_with(extra, settings()).await
}

type Acquiring = tokio::task::JoinHandle<Result<Lease, Failure>>;

impl H {
    /// An acquire running in the background.
    fn acquire(&self, wait: Duration) -> Acquiring {
        let p = self.pool.clone();
        let t = tokio::spawn(async move { p.acquire(wait).await });
        t
    }

    /// An acquire that must be answered at once (no provider call).
    async fn acquire_now(&self) -> Result<Lease, Failure> {
        let t = self.acquire(Duration::from_secs(30));
        settle().await;
        assert!(t.is_finished(), "the acquire waited");
        t.await.unwrap()
    }

    /// A call that starts an instance and gets it, cold.
    async fn cold(&mut self) -> Lease {
        let t = self.acquire(Duration::from_secs(30));
        self.s.start_ok().await;
        let l = t.await.unwrap().expect("a lease");
        assert!(l.cold.is_some(), "it waited for the start");
        l
    }

    fn states(&self) -> Vec<(String, InstanceState)> {
        self.pool
            .instances()
            .into_iter()
            .map(|i| (i.id, i.state))
            .collect()
    }

    fn running(&self) -> i64 {
        self.metrics.global.instances_running.get()
    }
}

fn code(r: Result<Lease, Failure>) -> (String, String) {
    match r {
        Ok(l) => panic!("a lease on {}", l.conn.instance_id),
        Err(f) => (f.error.code.clone(), f.error.message.clone()),
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_call_starts_an_instance_and_later_calls_reuse_it_warm() {
    let mut h = pool(json!({})).await;
    h.s.quiet(Duration::from_secs(5)).await;
    assert!(
        h.pool.instances().is_empty(),
        "minInstances 0: nothing runs"
    );
    let first = h.cold().await;
    let id = first.conn.instance_id.clone();
    assert!(id.starts_with("f-"), "{id}");
    drop(first);
    for _ in 0..3 {
        let l = h.acquire_now().await.unwrap();
        assert_eq!(l.conn.instance_id, id);
        assert_eq!(l.cold, None, "warm");
    }
    let st = h.pool.instances();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, InstanceState::Ready);
    assert_eq!(st[0].invocations, 4);
    assert_eq!(
        st[0].endpoint.as_deref(),
        Some(format!("unix:@nanofaas-pool-test/{id}").as_str())
    );
    assert_eq!(h.metrics.global.instances_started.get(), 1);
    assert_eq!(h.running(), 1);
    h.s.quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn failed_starts_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
    let mut h = pool(json!({})).await;
    // 100 ms, then 200, 400, and 400 again (the cap).
    for delay in [100u32, 200, 400, 400] {
        let t = h.acquire(Duration::from_secs(30));
        h.s.start_err("boom", false).await;
        let (c, m) = code(t.await.unwrap());
        assert_eq!(c, "STARTUP_ERROR");
        assert_eq!(m, format!("boom (next start attempt in {delay} ms)"));
        // While backing off, calls fail at once and start nothing.
        tokio::time::sleep((delay - 1) * MS).await;
        let (c, m) = code(h.acquire_now().await);
        assert_eq!(c, "STARTUP_ERROR");
        assert_eq!(m, "boom (next start attempt in 1 ms)");
        h.s.quiet(Duration::ZERO).await;
        tokio::time::sleep(MS).await;
    }
    assert_eq!(h.metrics.global.instances_failed.get(), 4);
    assert_eq!(h.running(), 0);
    let l = h.cold().await;
    assert_eq!(
        h.pool.core.lock().unwrap().phase(),
        &self::core::Phase::Open
    );
    // After a success the next failure waits the first delay again.
    let mut l = l;
    l.mark_broken("connection refused".into());
    drop(l);
    h.s.expect_stop().await;
    let t = h.acquire(Duration::from_secs(30));
    h.s.start_err("boom", false).await;
    assert_eq!(
        code(t.await.unwrap()).1,
        "boom (next start attempt in 100 ms)"
    );
    h.s.quiet(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_start_error_fails_calls_at_once_and_is_not_retried_by_itself() {
    let mut h = pool(json!({"minInstances": 1})).await;
    h.s.start_err("/nonexistent: no such file", true).await;
    for _ in 0..3 {
        let (c, m) = code(h.acquire_now().await);
        assert_eq!(c, "STARTUP_ERROR");
        assert!(m.starts_with("/nonexistent: no such file"), "{m}");
    }
    // Long after the backoff: still refused at once, and no start for minInstances either.
    h.s.quiet(Duration::from_secs(60)).await;
    let (c, m) = code(h.acquire_now().await);
    assert_eq!(
        (c.as_str(), m.as_str()),
        ("STARTUP_ERROR", "/nonexistent: no such file")
    );
    h.s.quiet(Duration::from_secs(60)).await;
    assert_eq!(h.metrics.global.instances_failed.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn min_instances_start_with_the_pool_and_are_retried_after_a_backoff() {
    let mut h = pool(json!({"minInstances": 2, "maxInstances": 3})).await;
    let a = h.s.expect_start().await;
    let b = h.s.expect_start().await;
    h.s.quiet(Duration::from_secs(1)).await;
    h.s.ready(a).await;
    h.s.fail(b, "flaky", false).await;
    // The missing one is started again when the backoff ends, not before.
    h.s.quiet(99 * MS).await;
    let c = h.s.expect_start().await;
    h.s.fail(c, "flaky", false).await;
    h.s.quiet(199 * MS).await;
    h.s.start_ok().await;
    assert_eq!(
        h.states()
            .iter()
            .filter(|(_, s)| *s == InstanceState::Ready)
            .count(),
        2
    );
    // A call is served warm by one of them.
    assert_eq!(h.acquire_now().await.unwrap().cold, None);
    h.s.quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn idle_instances_stop_after_the_idle_timeout_oldest_first_down_to_min() {
    let mut h = pool(json!({"minInstances": 1, "maxInstances": 3, "idleTimeoutMs": 1000})).await;
    let kept = h.s.start_ok().await;
    // Three calls at once: the ready one and two more, started for them.
    let a = h.acquire_now().await.unwrap();
    let b = h.cold().await;
    let c = h.cold().await;
    assert_eq!(h.pool.instances().len(), 3);
    drop(a);
    tokio::time::sleep(500 * MS).await;
    drop(b);
    tokio::time::sleep(200 * MS).await;
    drop(c);
    // a went idle at 0, b at 500 ms, c at 700 ms; one must stay (minInstances).
    h.s.quiet(299 * MS).await;
    assert_eq!(
        h.s.expect_stop().await,
        kept,
        "the one idle longest stops first"
    );
    h.s.quiet(499 * MS).await;
    h.s.expect_stop().await;
    h.s.quiet(Duration::from_secs(60)).await;
    assert_eq!(h.pool.instances().len(), 1);
    assert_eq!(h.running(), 1);
    assert_eq!(h.metrics.global.instances_stopped.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_moves_the_idle_deadline_and_the_pool_scales_to_zero() {
    let mut h = pool(json!({"idleTimeoutMs": 1000})).await;
    drop(h.cold().await);
    tokio::time::sleep(600 * MS).await;
    drop(h.acquire_now().await.unwrap());
    // Idle since 600 ms: stops at 1600 ms, not at 1000.
    h.s.quiet(999 * MS).await;
    h.s.expect_stop().await;
    assert!(h.pool.instances().is_empty());
    assert!(
        h.cold().await.cold.is_some(),
        "after scaling to zero the next call is cold"
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_is_recycled_after_max_invocations_once_its_calls_end() {
    let mut h =
        pool(json!({"maxInvocations": 2, "instanceConcurrency": 2, "maxInstances": 2})).await;
    let a = h.cold().await;
    let id = a.conn.instance_id.clone();
    let b = h.acquire_now().await.unwrap();
    assert_eq!(b.conn.instance_id, id, "second place on the same instance");
    // Its invocations are used up: a third call gets a new instance.
    let c = h.cold().await;
    assert_ne!(c.conn.instance_id, id);
    drop(a);
    assert_eq!(h.states()[0], (id.clone(), InstanceState::Draining));
    h.s.quiet(Duration::from_secs(1)).await;
    drop(b);
    assert_eq!(
        h.s.expect_stop().await,
        id,
        "recycled once its last call ended"
    );
    assert_eq!(h.pool.instances().len(), 1);
    assert_eq!(h.metrics.global.instances_stopped.get(), 1);
    assert_eq!(h.metrics.global.instances_failed.get(), 0);
    h.s.quiet(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_instance_is_replaced_to_keep_min_instances() {
    let mut h = pool(json!({"minInstances": 1})).await;
    let first = h.s.start_ok().await;
    let lease = h.acquire_now().await.unwrap();
    h.s.kill(&first, "killed by signal 9").await;
    let replacement = h.s.start_ok().await;
    assert_ne!(first, replacement);
    assert_eq!(h.metrics.global.instances_failed.get(), 1);
    // The lease on the dead one comes back later: nothing to stop, nothing counted.
    drop(lease);
    h.s.quiet(Duration::from_secs(5)).await;
    assert_eq!(h.acquire_now().await.unwrap().conn.instance_id, replacement);
    assert_eq!(h.running(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_min_instances_a_lost_instance_is_replaced_by_the_next_call() {
    let mut h = pool(json!({})).await;
    let first = h.cold().await.conn.instance_id.clone();
    h.s.kill(&first, "exited with code 1").await;
    h.s.quiet(Duration::from_secs(5)).await;
    assert!(h.pool.instances().is_empty());
    assert_ne!(h.cold().await.conn.instance_id, first);
}

#[tokio::test(start_paused = true)]
async fn a_broken_lease_takes_its_instance_out() {
    let mut h = pool(json!({})).await;
    let mut l = h.cold().await;
    let id = l.conn.instance_id.clone();
    l.mark_broken("Lost(\"connection reset\")".into());
    drop(l);
    assert_eq!(h.s.expect_stop().await, id);
    assert_eq!(h.metrics.global.instances_failed.get(), 1);
    assert_eq!(h.running(), 0);
    assert_ne!(h.cold().await.conn.instance_id, id);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_gets_the_first_instance_that_frees_up() {
    let mut h = pool(json!({"maxInstances": 1})).await;
    let a = h.cold().await;
    let waiting = h.acquire(Duration::from_secs(30));
    settle().await;
    h.s.quiet(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "no room: it waits");
    let id = a.conn.instance_id.clone();
    drop(a);
    let b = waiting.await.unwrap().unwrap();
    assert_eq!(b.conn.instance_id, id);
    assert_eq!(b.cold, None, "handed over warm");
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_no_longer_than_its_deadline() {
    let mut h = pool(json!({"maxInstances": 1})).await;
    let a = h.cold().await;
    let start = Instant::now();
    let waiting = h.acquire(500 * MS);
    let (c, m) = code(waiting.await.unwrap());
    assert_eq!(start.elapsed(), 500 * MS);
    assert_eq!(c, "TIMEOUT");
    assert!(m.contains("within 500 ms"), "{m}");
    // The waiter left the line: the freed instance waits idle for the next call.
    drop(a);
    assert_eq!(h.pool.core.lock().unwrap().waiting(), 0);
    assert_eq!(h.acquire_now().await.unwrap().cold, None);
    h.s.quiet(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_start_slower_than_the_wait_serves_the_next_call() {
    let mut h = pool(json!({})).await;
    let waiting = h.acquire(200 * MS);
    let p = h.s.expect_start().await;
    assert_eq!(code(waiting.await.unwrap()).0, "TIMEOUT");
    h.s.ready(p).await;
    assert_eq!(h.states()[0].1, InstanceState::Ready);
    assert_eq!(h.acquire_now().await.unwrap().cold, None);
}

#[tokio::test(start_paused = true)]
async fn a_lease_whose_caller_went_away_goes_to_the_next_one_uncounted() {
    let mut h = pool(json!({"maxInstances": 1, "maxInvocations": 2})).await;
    let a = h.cold().await;
    let id = a.conn.instance_id.clone();
    let gone = h.acquire(Duration::from_secs(30));
    let next = h.acquire(Duration::from_secs(30));
    settle().await;
    gone.abort();
    settle().await;
    drop(a);
    // The place offered to the one that left went to the next in line, on the same instance:
    // had it counted, the instance would have used up its two invocations.
    let b = next.await.unwrap().unwrap();
    assert_eq!((b.conn.instance_id.as_str(), b.cold), (id.as_str(), None));
    assert_eq!(h.pool.instances()[0].invocations, 2);
    drop(b);
    assert_eq!(h.s.expect_stop().await, id, "recycled after a and b");
    h.s.quiet(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiters_stops_instances_and_returns_once_they_are_stopped() {
    let mut h = pool(json!({"maxInstances": 2})).await;
    let held = h.cold().await;
    let starting = h.acquire(Duration::from_secs(30));
    let late = h.s.expect_start().await;
    let pool = h.pool.clone();
    let closing = tokio::spawn(async move { pool.close().await });
    h.s.expect_other("prewarm_unregister").await;
    let (id, done) = h.s.expect_stop_held().await;
    assert_eq!(id, held.conn.instance_id);
    let (c, _) = code(starting.await.unwrap());
    assert_eq!(c, "FUNCTION_REMOVED");
    settle().await;
    assert!(
        !closing.is_finished(),
        "close returned before its instances were stopped"
    );
    let _ = done.send(());
    closing.await.unwrap();
    // New calls are refused; the lease still held comes back harmlessly.
    assert_eq!(code(h.acquire_now().await).0, "FUNCTION_REMOVED");
    drop(held);
    // The instance that was starting is stopped as soon as it is up.
    let late_id = late.id.clone();
    h.s.ready(late).await;
    assert_eq!(h.s.expect_stop().await, late_id);
    assert_eq!(h.running(), 0);
    // Closing again does nothing.
    h.pool.close().await;
    h.s.quiet(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_fails_its_health_check_is_replaced() {
    let mut s = settings();
    s.health_check_interval = Duration::from_secs(5);
    let mut h = pool_with(json!({"minInstances": 1}), s).await;
    // Nothing listens on its socket: the first check fails.
    let first = h.s.start_ok().await;
    h.s.quiet(Duration::from_millis(4999)).await;
    assert_eq!(h.s.expect_stop().await, first);
    let second = h.s.expect_start().await;
    // This one answers its checks.
    let server = health_server(&second.id).await;
    let id = second.id.clone();
    let socket = format!("@nanofaas-pool-health/{id}");
    h.s.ready_at(second, Some(&socket)).await;
    h.s.quiet(Duration::from_secs(30)).await;
    assert_eq!(h.states(), vec![(id, InstanceState::Ready)]);
    assert!(
        server.answered() >= 5,
        "checked every 5 s: {}",
        server.answered()
    );
    assert_eq!(h.metrics.global.instances_failed.get(), 1);
}

struct HealthServer {
    count: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    fn answered(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers `200` to every request on the abstract socket `@nanofaas-pool-health/{id}`.
async fn health_server(id: &str) -> HealthServer {
    use std::os::linux::net::SocketAddrExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("nanofaas-pool-health/{id}"))
            .unwrap();
    let std = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    std.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(std).unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = Vec::new();
                loop {
                    let n = match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    HealthServer { count, task }
}
