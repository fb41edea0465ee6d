//! The supervisor owns the warm HTTP runtime process: it starts it, watches it, replaces it,
//! and stops it. Nothing else touches the child.
//!
//! Its state is published on a `watch` channel ([`RtState`]) that invocations read without
//! locking anything across I/O; everything that changes the runtime goes through a closed set
//! of commands ([`Cmd`]) answered on a oneshot, so that a caller knows the state has moved on
//! (e.g. that the next invocation will not reach a runtime it just saw time out).
//!
//! Lifecycle of one runtime: `Starting → Ready → (exited | killed | retired) → Starting ...`.
//! A runtime that keeps failing to start, or exits on its own without serving anything, is
//! restarted after a doubling pause (50 ms ... 5 s) during which invocations get
//! `STARTUP_ERROR` at once instead of waiting; a runtime that served and then crashed or timed
//! out is replaced immediately.

use crate::client::Pool;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::{process, runtime};
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{ErrorBody, ErrorCode};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

/// A runtime that served nothing and exited within this long counts as a failed start.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// The pause before the next start after `n` failed starts in a row.
const PAUSE: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// One live runtime process and its connection pool.
pub struct Runtime {
    /// Increases with every process started; commands name the runtime they are about.
    pub gen: u64,
    pub pid: u32,
    pub pool: Pool,
    /// How long this runtime took to start (spawn to ready).
    pub start_took: Duration,
    assigned: AtomicU64,
    inflight: AtomicUsize,
    drained: Notify,
}

impl Runtime {
    /// Reserves the next invocation slot: its 1-based index on this runtime, or `None` when
    /// `max` (0 = unlimited) invocations were already assigned to it.
    fn claim(&self, max: u64) -> Option<u64> {
        let index = if max == 0 {
            self.assigned.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            let mut cur = self.assigned.load(Ordering::Relaxed);
            loop {
                if cur >= max {
                    return None;
                }
                match self.assigned.compare_exchange_weak(
                    cur,
                    cur + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break cur + 1,
                    Err(now) => cur = now,
                }
            }
        };
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Some(index)
    }

    fn release(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_one();
        }
    }
}

/// What invocations see of the runtime.
#[derive(Clone)]
pub enum RtState {
    /// A runtime is being started; invocations wait for it (within their deadline).
    Starting,
    Ready(Arc<Runtime>),
    /// Starting failed; the supervisor retries after a pause. Invocations fail at once.
    Failed(Arc<str>),
    /// Shutting down: no runtime any more.
    Stopped,
}

/// Why a runtime is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// An invocation's timeout passed.
    Timeout,
    /// The runtime dropped a connection or refused one mid-call.
    Lost,
}

enum Cmd {
    Kill {
        gen: u64,
        reason: KillReason,
        ack: oneshot::Sender<()>,
    },
    /// The runtime reached `WARM_MAX_INVOCATIONS`: replace it once its calls are done.
    Retire {
        gen: u64,
        ack: oneshot::Sender<()>,
    },
    Stop {
        ack: oneshot::Sender<()>,
    },
}

impl Cmd {
    /// Acknowledges a command that concerns a runtime that is already gone.
    fn ack_stale(self) -> Option<oneshot::Sender<()>> {
        match self {
            Cmd::Kill { ack, .. } | Cmd::Retire { ack, .. } => {
                let _ = ack.send(());
                None
            }
            Cmd::Stop { ack } => Some(ack),
        }
    }
}

/// A reserved slot on a ready runtime; releases it when dropped.
pub struct Lease {
    pub runtime: Arc<Runtime>,
    /// 1-based index of this invocation on the runtime.
    pub index: u64,
    /// The invocation waited for this runtime to start (a restart after a kill or a crash).
    pub waited_for_start: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.runtime.release();
    }
}

/// Why the first runtime could not be brought up.
#[derive(Debug)]
pub enum BootError {
    Spawn(String),
    Startup(String),
}

/// Prints the lines the process provider reads on stdout, in order: one `NANOFAAS_READY` line,
/// then a `NANOFAAS_RUNTIME` line per runtime started after it.
#[derive(Default)]
pub struct Announcer {
    ready_printed: Mutex<bool>,
}

impl Announcer {
    /// Prints `NANOFAAS_READY port=.. [socket=..] pid=.. runtime_pid=..`, reading the runtime pid
    /// under the same lock the supervisor announces restarts with, so no restart goes unreported.
    pub fn ready(
        &self,
        port: u16,
        socket: Option<&str>,
        runtime_pid: impl FnOnce() -> u32,
    ) -> std::io::Result<()> {
        let mut printed = self.ready_printed.lock().unwrap();
        let mut out = std::io::stdout().lock();
        let socket = socket.map(|s| format!(" socket={s}")).unwrap_or_default();
        writeln!(
            out,
            "NANOFAAS_READY port={port}{socket} pid={} runtime_pid={}",
            std::process::id(),
            runtime_pid()
        )?;
        out.flush()?;
        *printed = true;
        Ok(())
    }

    /// Announces a new runtime (once READY was printed) and then publishes it, both under the
    /// lock [`Announcer::ready`] takes: the line is out before any invocation can reach the
    /// runtime, and READY either names this runtime or precedes this line.
    fn runtime(&self, pid: u32, publish: impl FnOnce()) {
        let printed = self.ready_printed.lock().unwrap();
        if *printed {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "NANOFAAS_RUNTIME pid={pid}");
            let _ = out.flush();
        }
        publish();
    }
}

/// The invocations' side of the supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    /// The runtime's output, tagged per invocation (`None` unless the providers asked).
    pub output: Option<Arc<super::output::Output>>,
    state: watch::Receiver<RtState>,
    cmds: mpsc::Sender<Cmd>,
    max_invocations: u64,
    /// `WARM_PREWARM`: the specialization the runtime waits for, then is restarted with.
    pub prewarm: Option<Arc<super::specialize::Prewarm>>,
}

impl Handle {
    /// A slot on a ready runtime, waiting (until `deadline`) while one is being started.
    pub async fn lease(&self, deadline: Instant) -> Result<Lease, ErrorBody> {
        if let RtState::Ready(rt) = &*self.state.borrow() {
            if let Some(index) = rt.claim(self.max_invocations) {
                return Ok(Lease {
                    runtime: rt.clone(),
                    index,
                    waited_for_start: false,
                });
            }
        }
        let mut rx = self.state.clone();
        let mut waited = false;
        loop {
            {
                let state = rx.borrow_and_update();
                match &*state {
                    RtState::Ready(rt) => {
                        if let Some(index) = rt.claim(self.max_invocations) {
                            return Ok(Lease {
                                runtime: rt.clone(),
                                index,
                                waited_for_start: waited,
                            });
                        }
                        // Exhausted: the next runtime is the one this call waits for.
                        waited = true;
                    }
                    RtState::Failed(msg) => {
                        return Err(ErrorBody::new(ErrorCode::StartupError, msg.to_string()))
                    }
                    RtState::Stopped => return Err(shutting_down()),
                    RtState::Starting => waited = true,
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(shutting_down()),
                Err(_) => {
                    return Err(ErrorBody::new(
                        ErrorCode::Timeout,
                        "no runtime became ready within the invocation's timeout",
                    ))
                }
            }
        }
    }

    /// Kills runtime `gen` (if still current) and returns once it is no longer served.
    pub async fn kill(&self, gen: u64, reason: KillReason) {
        self.send(|ack| Cmd::Kill { gen, reason, ack }).await
    }

    /// Replaces runtime `gen` once its in-flight calls end; returns once it is no longer served.
    pub async fn retire(&self, gen: u64) {
        self.send(|ack| Cmd::Retire { gen, ack }).await
    }

    /// Stops the runtime (SIGTERM, grace, SIGKILL) and the supervisor.
    pub async fn stop(&self) {
        self.send(|ack| Cmd::Stop { ack }).await
    }

    async fn send(&self, cmd: impl FnOnce(oneshot::Sender<()>) -> Cmd) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(cmd(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The pid of the runtime being served, if any.
    pub fn runtime_pid(&self) -> Option<u32> {
        match &*self.state.borrow() {
            RtState::Ready(rt) => Some(rt.pid),
            _ => None,
        }
    }

    /// `ok`, `starting` or `draining`, for `/health`.
    pub fn status(&self) -> &'static str {
        match &*self.state.borrow() {
            RtState::Ready(_) => "ok",
            RtState::Starting | RtState::Failed(_) => "starting",
            RtState::Stopped => "draining",
        }
    }
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "the watchdog is shutting down")
}

/// Starts the supervisor task. The receiver tells whether the first runtime became ready.
pub fn start(
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    announcer: Arc<Announcer>,
) -> (Handle, oneshot::Receiver<Result<(), BootError>>) {
    let (state_tx, state_rx) = watch::channel(RtState::Starting);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (boot_tx, boot_rx) = oneshot::channel();
    let max_invocations = cfg.warm.as_ref().map_or(0, |w| w.max_invocations);
    let output = super::output::enabled()
        .then(|| super::output::Output::new(cfg.warm.as_ref().map_or(1, |w| w.concurrency)));
    let prewarm = cfg
        .warm
        .as_ref()
        .is_some_and(|w| w.prewarm)
        .then(|| Arc::new(super::specialize::Prewarm::default()));
    let sup = Supervisor {
        prewarm: prewarm.clone(),
        output: output.clone(),
        cfg,
        metrics,
        announcer,
        state: state_tx,
        cmds: cmd_rx,
        boot: Some(boot_tx),
    };
    tokio::spawn(sup.run());
    (
        Handle {
            output,
            state: state_rx,
            cmds: cmd_tx,
            max_invocations,
            prewarm,
        },
        boot_rx,
    )
}

struct Supervisor {
    prewarm: Option<Arc<super::specialize::Prewarm>>,
    output: Option<Arc<super::output::Output>>,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    announcer: Arc<Announcer>,
    state: watch::Sender<RtState>,
    cmds: mpsc::Receiver<Cmd>,
    boot: Option<oneshot::Sender<Result<(), BootError>>>,
}

/// How a served runtime ended.
enum End {
    Exited(String),
    Killed(KillReason),
    Retired,
    Stop(Option<oneshot::Sender<()>>),
}

impl Supervisor {
    async fn run(mut self) {
        let mut gen = 0u64;
        let mut failures = 0u32;
        loop {
            gen += 1;
            self.state.send_replace(RtState::Starting);
            let t0 = Instant::now();
            let started = match self.start_one(gen).await {
                Ok(Some(s)) => s,
                Ok(None) => return, // stopped while starting
                Err(err) => {
                    let msg = match &err {
                        BootError::Spawn(m) | BootError::Startup(m) => m.clone(),
                    };
                    if let Some(boot) = self.boot.take() {
                        self.state.send_replace(RtState::Stopped);
                        let _ = boot.send(Err(err));
                        return;
                    }
                    failures += 1;
                    if self.pause(failures, &msg).await.is_none() {
                        return;
                    }
                    continue;
                }
            };
            let (mut child, rt) = (started.0, Arc::new(started.1.with_gen(gen, t0.elapsed())));
            let pid = rt.pid;
            match self.boot.take() {
                Some(boot) => {
                    self.state.send_replace(RtState::Ready(rt.clone()));
                    crate::info!("runtime pid {pid} is ready");
                    let _ = boot.send(Ok(()));
                }
                None => {
                    let state = &self.state;
                    self.announcer.runtime(pid, || {
                        state.send_replace(RtState::Ready(rt.clone()));
                    });
                    crate::info!("runtime pid {pid} is ready (restart)");
                }
            }
            let born = Instant::now();
            let end = self.serve(&mut child, &rt).await;
            // A socket file (not an abstract name) the runtime served on goes with it.
            let leftover = rt
                .pool
                .socket()
                .filter(|s| !s.starts_with('@'))
                .map(str::to_string);
            match end {
                End::Stop(ack) => {
                    self.state.send_replace(RtState::Stopped);
                    process::stop(&mut child, pid, self.cfg.stop_grace).await;
                    if let Some(f) = &leftover {
                        remove_socket_file(f);
                    }
                    crate::info!("runtime pid {pid} stopped");
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    self.refuse_all().await;
                    return;
                }
                End::Exited(how) => {
                    let served = rt.assigned.load(Ordering::Relaxed) > 0;
                    if !served && born.elapsed() < QUICK_EXIT {
                        failures += 1;
                    } else {
                        failures = 0;
                    }
                    crate::warn!("runtime pid {pid} {how}; restarting it");
                    if failures > 0
                        && self
                            .pause(failures, &format!("the runtime {how} without serving"))
                            .await
                            .is_none()
                    {
                        return;
                    }
                }
                End::Killed(reason) => {
                    failures = 0;
                    crate::warn!("runtime pid {pid} killed ({reason:?}); restarting it");
                }
                End::Retired => {
                    failures = 0;
                    crate::info!("runtime pid {pid} reached WARM_MAX_INVOCATIONS; replaced");
                }
            }
            if let Some(f) = &leftover {
                remove_socket_file(f);
            }
            self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spawns a runtime and waits until healthy, answering commands meanwhile.
    /// `Ok(None)`: a stop arrived.
    async fn start_one(&mut self, gen: u64) -> Result<Option<(Child, Unnumbered)>, BootError> {
        let cfg = self.cfg.clone();
        let socket = cfg
            .warm
            .as_ref()
            .and_then(|w| w.runtime_socket.as_ref())
            .map(|prefix| format!("{prefix}.{gen}"));
        if let Some(s) = socket.as_deref().filter(|s| !s.starts_with('@')) {
            remove_socket_file(s);
        }
        let launch = self
            .prewarm
            .as_deref()
            .map_or(super::specialize::Launch::Normal, |p| p.launch());
        let (mut child, pid) =
            runtime::spawn_launch(&cfg, socket.as_deref(), self.output.is_some(), launch)
                .map_err(BootError::Spawn)?;
        if let Some(out) = &self.output {
            out.attach(
                child.stdout.take().and_then(|s| s.into_owned_fd().ok()),
                child.stderr.take().and_then(|s| s.into_owned_fd().ok()),
            );
        }
        self.metrics.starts.fetch_add(1, Ordering::Relaxed);
        let http = crate::client::runtime_client(cfg.warm.as_ref().map_or(1, |w| w.concurrency));
        enum Early<T> {
            Done(T),
            Stop(Option<oneshot::Sender<()>>),
        }
        let outcome = {
            let healthy = runtime::wait_healthy(&cfg, &mut child, cfg.startup_timeout, &http);
            tokio::pin!(healthy);
            loop {
                tokio::select! {
                    r = &mut healthy => break Early::Done(r),
                    cmd = self.cmds.recv() => match cmd {
                        None => break Early::Stop(None),
                        Some(cmd) => {
                            if let Some(ack) = cmd.ack_stale() {
                                break Early::Stop(Some(ack));
                            }
                        }
                    }
                }
            }
        };
        let outcome = match outcome {
            Early::Done(r) => r,
            Early::Stop(ack) => {
                self.state.send_replace(RtState::Stopped);
                process::kill(&mut child, pid).await;
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                self.refuse_all().await;
                return Ok(None);
            }
        };
        let (_, health_endpoint) = match outcome {
            Ok(x) => x,
            Err(msg) => {
                process::kill(&mut child, pid).await;
                return Err(BootError::Startup(msg));
            }
        };
        let same = cfg.runtime_url.host == cfg.runtime_health_url.host
            && cfg.runtime_url.port == cfg.runtime_health_url.port;
        let endpoint = if same {
            health_endpoint
        } else {
            match crate::client::resolve(&cfg.runtime_url).await {
                Ok(a) => nanofaas_h1::Endpoint::tcp(a),
                Err(e) => {
                    process::kill(&mut child, pid).await;
                    return Err(BootError::Startup(format!(
                        "cannot resolve {}: {e}",
                        cfg.runtime_url.host
                    )));
                }
            }
        };
        // Same client as the probe: when the health URL is on the runtime's address, the
        // probe's connection serves the first invocation.
        let mut pool = match Pool::new(&cfg.runtime_url, endpoint, cfg.max_payload_bytes, http) {
            Ok(p) => p,
            Err(msg) => {
                process::kill(&mut child, pid).await;
                return Err(BootError::Startup(msg));
            }
        };
        // A runtime that took up the offered socket answers its health check there too; one
        // that did not (it is optional) is reached on its port.
        if let Some(socket) = socket {
            let endpoint = nanofaas_h1::Endpoint::unix(&socket);
            let probe = crate::client::probe(
                pool.client(),
                &endpoint,
                &cfg.runtime_health_url,
                Duration::from_millis(500),
            );
            match probe.await {
                Ok(()) => {
                    crate::debug!("runtime pid {pid} answers on unix:{socket}");
                    pool = pool.with_socket(endpoint);
                }
                _ => {
                    crate::debug!("runtime pid {pid} does not serve unix:{socket}; using its port")
                }
            }
        }
        Ok(Some((child, Unnumbered { pid, pool })))
    }

    /// Serves a ready runtime until it exits or a command ends it.
    async fn serve(&mut self, child: &mut Child, rt: &Arc<Runtime>) -> End {
        loop {
            tokio::select! {
                st = child.wait() => {
                    self.state.send_replace(RtState::Starting);
                    return End::Exited(match st {
                        Ok(st) => process::describe(&st),
                        Err(e) => format!("could not be waited for ({e})"),
                    });
                }
                cmd = self.cmds.recv() => match cmd {
                    None => return End::Stop(None),
                    Some(Cmd::Stop { ack }) => return End::Stop(Some(ack)),
                    Some(Cmd::Kill { gen, reason, ack }) if gen == rt.gen => {
                        self.state.send_replace(RtState::Starting);
                        if reason == KillReason::Timeout {
                            self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        process::kill(child, rt.pid).await;
                        let _ = ack.send(());
                        return End::Killed(reason);
                    }
                    Some(Cmd::Retire { gen, ack }) if gen == rt.gen => {
                        self.state.send_replace(RtState::Starting);
                        let _ = ack.send(());
                        return self.retire(child, rt).await;
                    }
                    Some(stale) => {
                        stale.ack_stale();
                    }
                }
            }
        }
    }

    /// Waits for the retiring runtime's in-flight calls, then stops it gracefully.
    async fn retire(&mut self, child: &mut Child, rt: &Arc<Runtime>) -> End {
        while rt.inflight.load(Ordering::Acquire) > 0 {
            tokio::select! {
                _ = rt.drained.notified() => {}
                st = child.wait() => {
                    return End::Exited(match st {
                        Ok(st) => process::describe(&st),
                        Err(e) => format!("could not be waited for ({e})"),
                    });
                }
                cmd = self.cmds.recv() => match cmd {
                    None => return End::Stop(None),
                    Some(Cmd::Stop { ack }) => return End::Stop(Some(ack)),
                    Some(Cmd::Kill { gen, reason, ack }) if gen == rt.gen => {
                        if reason == KillReason::Timeout {
                            self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        process::kill(child, rt.pid).await;
                        let _ = ack.send(());
                        return End::Killed(reason);
                    }
                    Some(stale) => {
                        stale.ack_stale();
                    }
                }
            }
        }
        process::stop(child, rt.pid, self.cfg.stop_grace).await;
        End::Retired
    }

    /// Publishes `Failed` and waits before the next start. `None`: a stop arrived.
    async fn pause(&mut self, failures: u32, why: &str) -> Option<()> {
        let pause = PAUSE.delay(failures);
        crate::warn!("{why}; next start in {} ms", pause.as_millis());
        self.state.send_replace(RtState::Failed(
            format!("{why}; restarting in {} ms", pause.as_millis()).into(),
        ));
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Some(()),
                cmd = self.cmds.recv() => match cmd {
                    None => return None,
                    Some(cmd) => {
                        if let Some(ack) = cmd.ack_stale() {
                            self.state.send_replace(RtState::Stopped);
                            let _ = ack.send(());
                            self.refuse_all().await;
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// After stopping: acknowledge whatever still arrives so that no caller waits forever.
    async fn refuse_all(&mut self) {
        self.cmds.close();
        while let Some(cmd) = self.cmds.recv().await {
            if let Some(ack) = cmd.ack_stale() {
                let _ = ack.send(());
            }
        }
    }
}

/// A started runtime before it gets its generation number.
struct Unnumbered {
    pid: u32,
    pool: Pool,
}

impl Unnumbered {
    fn with_gen(self, gen: u64, start_took: Duration) -> Runtime {
        Runtime {
            gen,
            start_took,
            pid: self.pid,
            pool: self.pool,
            assigned: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }
}

/// Removes a socket file left from an earlier run; anything that is not a socket is left alone.
pub fn remove_socket_file(path: &str) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        let url = crate::config::HttpUrl::parse("http://127.0.0.1:1/invoke").unwrap();
        Unnumbered {
            pid: 1,
            pool: Pool::new(
                &url,
                nanofaas_h1::Endpoint::tcp("127.0.0.1:1".parse().unwrap()),
                10,
                crate::client::runtime_client(1),
            )
            .unwrap(),
        }
        .with_gen(1, Duration::ZERO)
    }

    #[test]
    fn claims_stop_at_max() {
        let r = rt();
        assert_eq!(r.claim(2), Some(1));
        assert_eq!(r.claim(2), Some(2));
        assert_eq!(r.claim(2), None);
        assert_eq!(r.inflight.load(Ordering::Relaxed), 2);
        r.release();
        r.release();
        assert_eq!(r.inflight.load(Ordering::Relaxed), 0);
        let u = rt();
        for i in 1..=5 {
            assert_eq!(u.claim(0), Some(i));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lease_waits_for_ready_and_respects_deadline() {
        let (tx, rx) = watch::channel(RtState::Starting);
        let (cmd_tx, _cmd_rx) = mpsc::channel(1);
        let h = Handle {
            output: None,
            state: rx,
            cmds: cmd_tx,
            max_invocations: 1,
            prewarm: None,
        };
        // Starting past the deadline: TIMEOUT.
        let e = h
            .lease(Instant::now() + Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, "TIMEOUT");
        // Becomes ready while waiting.
        let r = Arc::new(rt());
        let h2 = h.clone();
        let waiter = tokio::spawn(async move {
            h2.lease(Instant::now() + Duration::from_secs(5))
                .await
                .map(|l| (l.index, l.waited_for_start))
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send_replace(RtState::Ready(r.clone()));
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            (1, true),
            "it waited for the start, and says so"
        );
        // Exhausted (max 1): waits for the next runtime instead of overusing this one.
        let e = h
            .lease(Instant::now() + Duration::from_millis(20))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, "TIMEOUT");
        tx.send_replace(RtState::Failed("boom".into()));
        let e = h
            .lease(Instant::now() + Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("STARTUP_ERROR", "boom")
        );
        tx.send_replace(RtState::Stopped);
        let e = h
            .lease(Instant::now() + Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, "SHUTTING_DOWN");
    }
}
