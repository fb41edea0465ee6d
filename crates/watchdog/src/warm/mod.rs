//! Warm mode: start the runtime once, serve many invocations, keep every promise (timeouts,
//! idle exit, max invocations, crash recovery, graceful stop).
//!
//! ```text
//!  boot:  spawn runtime ─► probe health (1 ms, then 5 ms) ─► bind WARM_PORT ─► print NANOFAAS_READY
//!  serve: accept ─► connection task ─► App::route ─► supervisor lease ─► pooled keep-alive POST
//!  stop:  SIGTERM/SIGINT or idle ─► refuse new work ─► drain in-flight ─► stop runtime ─► exit 0
//!         lease expired (control plane gone) ─► stop runtime at once ─► exit 0
//! ```
//!
//! - [`supervisor`]: owns the runtime process and its lifecycle.
//! - [`server`]: the HTTP handlers and the invocation path.
//! - [`specialize`]: prewarmed (generic) runtimes and `POST /specialize`.
//! - [`announce`]: `WARM_ANNOUNCE`, one datagram to the gateway so the host learns the container's
//!   address before its first connection.

pub mod announce;
pub mod output;
pub mod peer;
pub mod server;
pub mod specialize;
pub mod supervisor;

use crate::config::{Config, RuntimeKind};
use crate::exit::ExitCode;
use crate::metrics::Metrics;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use server::App;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{Announcer, BootError};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Period of the timer heartbeat (see `run`).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Why the watchdog stops when its control plane is gone.
const LEASE_EXPIRED: &str =
    "nobody holds the lease any more (WARM_LEASE_MS): the control plane is gone";

/// Why the watchdog stops on SIGHUP, the process provider's parent-death signal.
const PARENT_GONE: &str = "SIGHUP: the control plane is gone";

/// Extra time allowed after the latest in-flight deadline for answers and callbacks to finish.
const DRAIN_SLACK: Duration = Duration::from_secs(2);

/// Runs warm mode until a signal or the idle timeout.
pub async fn run(cfg: Config) -> ExitCode {
    let cfg = Arc::new(cfg);
    let warm = cfg.warm.clone().expect("warm mode has a warm config");
    if warm.announce {
        // Before anything else: the control plane's first SYN may already be on its way.
        announce::announce();
    }
    let metrics = Arc::new(Metrics::new());
    crate::oom::global();
    let announcer = Arc::new(Announcer::default());
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            crate::error!("cannot install signal handlers: {e}");
            return ExitCode::Internal;
        }
    };

    let sup = if warm.runtime == RuntimeKind::Http {
        let (handle, boot) = supervisor::start(cfg.clone(), metrics.clone(), announcer.clone());
        tokio::select! {
            r = boot => match r {
                Ok(Ok(())) => {}
                Ok(Err(BootError::Spawn(m))) => {
                    crate::error!("{m}");
                    return ExitCode::SpawnFailed;
                }
                Ok(Err(BootError::Startup(m))) => {
                    crate::error!("{m}");
                    return ExitCode::StartupFailed;
                }
                Err(_) => return ExitCode::Internal,
            },
            _ = term.recv() => { handle.stop().await; return ExitCode::Ok; }
            _ = int.recv() => { handle.stop().await; return ExitCode::Ok; }
            _ = hup.recv() => { crate::warn!("stopping: {PARENT_GONE}"); handle.stop().await; return ExitCode::Ok; }
        }
        Some(handle)
    } else {
        None
    };

    let addr = SocketAddr::new(warm.bind, warm.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            crate::error!("cannot listen on {addr}: {e}");
            if let Some(s) = &sup {
                s.stop().await;
            }
            return ExitCode::BindFailed;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(warm.port);
    let mut unix = match warm.socket.as_deref().map(bind_unix).transpose() {
        Ok(u) => u,
        Err(e) => {
            crate::error!("{e}");
            if let Some(s) = &sup {
                s.stop().await;
            }
            return ExitCode::BindFailed;
        }
    };
    let app = Arc::new(App::new(cfg.clone(), metrics, sup.clone()));
    let pid_now = || sup.as_ref().and_then(|s| s.runtime_pid()).unwrap_or(0);
    if let Err(e) = announcer.ready(port, warm.socket.as_deref(), pid_now) {
        crate::error!("cannot write the READY line to stdout: {e}");
        if let Some(u) = unix.take() {
            u.remove();
        }
        if let Some(s) = &sup {
            s.stop().await;
        }
        return ExitCode::Internal;
    }
    crate::info!(
        "serving on {}:{port}{} (runtime {:?}, concurrency {})",
        warm.bind,
        warm.socket
            .as_deref()
            .map(|s| format!(" and unix:{s}"))
            .unwrap_or_default(),
        warm.runtime,
        warm.concurrency
    );

    // Keeps tokio's timer driver armed with a deadline at most HEARTBEAT away: registering an
    // invocation's timeout (normally much later) then never has to wake the driver through its
    // eventfd, which saves a syscall per invocation. Costs two wake-ups a second when idle.
    let heartbeat = tokio::spawn(async {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let idle = async {
        match warm.idle_timeout {
            Some(d) => server::idle_timeout(&app.activity, d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let lease = async {
        match &app.lease {
            Some(l) => l.expired().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lease);
    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if let Some(want) = warm.peer_uid {
                    let uid = stream.local_addr().ok().and_then(|l| peer::tcp_peer_uid(l, peer));
                    if uid != Some(want) {
                        refuse(uid, want);
                        continue;
                    }
                }
                let _ = stream.set_nodelay(true);
                serve_connection(stream, &app, &stop_rx);
            }
            accepted = accept_unix(unix.as_ref()) => {
                let Ok((stream, _)) = accepted else { continue };
                if let Some(want) = warm.peer_uid {
                    let uid = peer::unix_peer_uid(&stream);
                    if uid != Some(want) {
                        refuse(uid, want);
                        continue;
                    }
                }
                serve_connection(stream, &app, &stop_rx);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = &mut idle => break "idle timeout",
            _ = &mut lease => break LEASE_EXPIRED,
            _ = hup.recv() => break PARENT_GONE,
        }
    };
    if let Some(l) = &app.lease {
        l.close();
    }

    // Without a control plane nobody takes the answers: no drain.
    let drain = reason != LEASE_EXPIRED && reason != PARENT_GONE;
    if drain {
        crate::info!("stopping ({reason}): refusing new work, draining in-flight invocations");
    } else {
        crate::warn!("stopping at once: {reason}");
    }
    app.draining.store(true, Ordering::SeqCst);
    drop(listener);
    if let Some(u) = unix.take() {
        u.remove();
    }
    let _ = stop_tx.send(true);
    let limit = if !drain {
        tokio::time::Instant::now()
    } else {
        app.latest_deadline().max(tokio::time::Instant::now()) + DRAIN_SLACK
    };
    if tokio::time::timeout_at(limit, app.tasks.idle())
        .await
        .is_err()
        && drain
    {
        crate::warn!(
            "{} connection(s) or callback(s) still open after the drain limit; stopping anyway",
            app.tasks.count()
        );
    }
    heartbeat.abort();
    // What the runtime started, taken before it stops: children that left its group would be
    // orphaned (and out of reach) once it exits.
    let tree = crate::process::descendants();
    if !drain {
        // Nobody waits for a graceful stop.
        crate::process::kill_pids(&tree);
    }
    if let Some(s) = &sup {
        s.stop().await;
    }
    crate::process::kill_pids(&tree);
    crate::info!("stopped");
    ExitCode::Ok
}

/// Logs a connection closed by the `WARM_PEER_UID` check (the stream is dropped unanswered).
fn refuse(uid: Option<u32>, want: u32) {
    let who = uid.map_or_else(|| "an unknown user".to_string(), |u| format!("uid {u}"));
    crate::warn!("refused a connection from {who}: only uid {want} may connect (WARM_PEER_UID)");
}

/// Serves one accepted connection (TCP or Unix) with hyper until it closes or the watchdog stops.
fn serve_connection<I>(stream: I, app: &Arc<App>, stop: &watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = app.clone();
    let mut stop = stop.clone();
    let guard = app.tasks.enter();
    tokio::spawn(async move {
        let _guard = guard;
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.route(req).await) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    });
}

/// The Unix listener of `WARM_SOCKET`, and the file to remove at exit (none for an abstract name).
struct UnixListener {
    listener: tokio::net::UnixListener,
    file: Option<std::path::PathBuf>,
}

impl UnixListener {
    fn remove(self) {
        drop(self.listener);
        if let Some(f) = self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn bind_unix(socket: &str) -> Result<UnixListener, String> {
    let file = (!socket.starts_with('@')).then(|| std::path::PathBuf::from(socket));
    if file.is_some() {
        // A socket file left by an earlier watchdog that died.
        supervisor::remove_socket_file(socket);
    }
    let path = nanofaas_h1::unix_path(socket);
    tokio::net::UnixListener::bind(&*path)
        .map(|listener| UnixListener { listener, file })
        .map_err(|e| format!("cannot listen on WARM_SOCKET {socket:?}: {e}"))
}

async fn accept_unix(
    l: Option<&UnixListener>,
) -> std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match l {
        Some(l) => l.listener.accept().await,
        None => std::future::pending().await,
    }
}
