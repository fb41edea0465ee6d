//! Starting and stopping the control plane: binds the listener, builds the platform, serves
//! HTTP/1.1 with keep-alive, and shuts down in order (stop accepting, drain executions, stop
//! instances, close connections).

use crate::access::{is_loopback, Access};
use crate::api::AppState;
use crate::auth::CallbackAuth;
use crate::config::Config;
use crate::dispatch::{http_client, ClientSettings, HttpClient};
use crate::executions::StoreLimits;
use crate::managed::ManagedFactory;
use crate::metrics::Metrics;
use crate::persist::{Journal, JournalSettings, SpecStore};
use crate::platform::{BackendFactory, EndpointFactory, Persistence, Platform, Settings};
use crate::pool::PoolSettings;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a backend factory may use when it is built.
pub struct Context {
    pub config: Config,
    pub client: HttpClient,
    pub metrics: Arc<Metrics>,
    /// `{base}/{executionId}:complete` is where instances send callbacks.
    pub callback_base_url: String,
    /// The address the API is bound to.
    pub addr: SocketAddr,
    /// Where providers hand the lines instances write.
    pub logs: Arc<crate::logs::Logs>,
}

/// A running control plane.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub platform: Arc<Platform>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Stops the server as SIGTERM would and waits until it has stopped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`ServerHandle::stop_signal`] or a fatal error).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that asks the server to stop.
    pub fn stop_signal(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    /// Asked to listen beyond loopback with no API tokens and without accepting the risk.
    #[error("{0}")]
    Insecure(String),
}

/// Refuses an open API (no tokens) on a non-loopback address unless `api.insecure_no_auth`.
pub fn check_exposure(config: &Config, access: &Access) -> Result<(), StartError> {
    let Ok(addr) = config.listen.parse::<SocketAddr>() else {
        return Ok(());
    };
    if access.requires_tokens() || is_loopback(addr.ip()) || config.api.insecure_no_auth {
        return Ok(());
    }
    Err(StartError::Insecure(format!(
        "refusing to listen on {} with no API tokens: anyone who can reach that address could run commands on this machine. \
Create a token (`nanofaas token create --role admin`) and configure its hash in api.tokens, or listen on 127.0.0.1, \
or accept the risk with --insecure-no-auth (setting api.insecure_no_auth); see docs/security.md",
        config.listen
    )))
}

/// Starts with the backends the configuration names (`provider.type`).
pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
    start_with(config, default_factory).await
}

/// The backend factory for `provider.type`: `none` serves POOL functions only; `process` also
/// runs DEPLOYMENT and JOB functions as local processes, `docker` as containers, `kubernetes`
/// as pods ([`crate::provider::from_config`] picks the provider).
pub fn default_factory(ctx: &Context) -> Result<Arc<dyn BackendFactory>, String> {
    let c = &ctx.config;
    match crate::provider::from_config(c, &ctx.logs)? {
        None => Ok(Arc::new(EndpointFactory {
            client: ctx.client.clone(),
        })),
        Some(provider) => Ok(Arc::new(ManagedFactory::new(
            provider,
            ctx.client.clone(),
            ctx.metrics.clone(),
            pool_settings(c),
        ))),
    }
}

/// Pool settings from the configuration.
pub fn pool_settings(c: &Config) -> PoolSettings {
    PoolSettings {
        health_check_interval: Duration::from_millis(c.pool.health_check_interval_ms),
        start_backoff: Duration::from_millis(c.pool.start_backoff_ms),
        start_backoff_max: Duration::from_millis(c.pool.start_backoff_max_ms),
        startup_timeout: Duration::from_millis(c.provider.startup_timeout_ms),
        timeout_grace: Duration::from_millis(c.pool.timeout_grace_ms),
    }
}

/// Starts on a listener the caller bound already (`nanofaas up` binds first, so that a busy
/// address is reported before any setup); `config.listen` is then only used in messages.
pub async fn start_on(config: Config, listener: TcpListener) -> Result<ServerHandle, StartError> {
    start_inner(config, Some(listener), default_factory).await
}

/// Starts with the backend factory `make_factory` builds from the [`Context`].
pub async fn start_with(
    config: Config,
    make_factory: impl FnOnce(&Context) -> Result<Arc<dyn BackendFactory>, String>,
) -> Result<ServerHandle, StartError> {
    start_inner(config, None, make_factory).await
}

/// What `start` refuses before it binds (tokens, exposure, TLS files), checked on its own: `up`
/// calls it before its setup steps, so that such a mistake is reported at once too.
pub fn preflight(config: &Config) -> Result<(), StartError> {
    let access = Access::from_config(&config.api).map_err(StartError::Setup)?;
    check_exposure(config, &access)?;
    if !config.api.tls_cert.is_empty() {
        crate::tls::acceptor(&config.api.tls_cert, &config.api.tls_key)
            .map_err(StartError::Setup)?;
    }
    Ok(())
}

async fn start_inner(
    config: Config,
    listener: Option<TcpListener>,
    make_factory: impl FnOnce(&Context) -> Result<Arc<dyn BackendFactory>, String>,
) -> Result<ServerHandle, StartError> {
    let access = Access::from_config(&config.api).map_err(StartError::Setup)?;
    check_exposure(&config, &access)?;
    let tls = if config.api.tls_cert.is_empty() {
        None
    } else {
        Some(
            crate::tls::acceptor(&config.api.tls_cert, &config.api.tls_key)
                .map_err(StartError::Setup)?,
        )
    };
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen.clone(),
                source,
            })?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Setup(e.to_string()))?;
    // Instances post callbacks in plain HTTP: beside a TLS API they get a loopback listener of
    // their own that serves the callback route only.
    let callback_listener = if tls.is_some() && config.callback_base_url.is_empty() {
        let host = if is_loopback(addr.ip()) {
            addr.ip()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        Some(
            TcpListener::bind(SocketAddr::new(host, 0))
                .await
                .map_err(|source| StartError::Bind {
                    addr: format!("{host}:0 (callback listener)"),
                    source,
                })?,
        )
    } else {
        None
    };
    let callback_addr = match &callback_listener {
        Some(l) => l
            .local_addr()
            .map_err(|e| StartError::Setup(e.to_string()))?,
        None => addr,
    };
    let callback_base_url = if config.callback_base_url.is_empty() {
        let addr = callback_addr;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("http://{host}:{}/v1/internal/executions", addr.port())
    } else {
        config.callback_base_url.trim_end_matches('/').to_string()
    };
    let auth = if config.callback_secret.is_empty() {
        CallbackAuth::new(crate::ids::secret_bytes().map_err(StartError::Setup)?)
    } else {
        CallbackAuth::from_secret(&config.callback_secret)
    };
    let metrics = Arc::new(Metrics::default());
    let client = http_client(&ClientSettings {
        connect_timeout: Duration::from_millis(config.dispatch.connect_timeout_ms),
        idle_timeout: Duration::from_millis(config.dispatch.idle_connection_timeout_ms),
        max_idle_per_host: config.dispatch.max_idle_connections_per_host,
    });
    let ctx = Context {
        config: config.clone(),
        client,
        metrics: metrics.clone(),
        callback_base_url: callback_base_url.clone(),
        addr,
        logs: crate::logs::Logs::new(),
    };
    let factory = make_factory(&ctx).map_err(StartError::Setup)?;
    factory.prepare().await;
    let rate = config.admission.global_rate_per_second;
    let settings = Settings {
        callback_base_url,
        max_output_bytes: config.max_output_bytes,
        retry_backoff: Duration::from_millis(config.admission.retry_backoff_ms),
        retry_backoff_max: Duration::from_millis(config.admission.retry_backoff_max_ms),
        store: StoreLimits {
            ttl: Duration::from_millis(config.executions.ttl_ms),
            max_records: config.executions.max_records,
            max_payload_bytes: config.executions.max_payload_bytes,
        },
        global_rate_per_second: (rate > 0.0).then_some(rate),
    };
    let (persistence, restored) = if config.state_dir.is_empty() {
        (None, None)
    } else {
        let dir = std::path::Path::new(&config.state_dir);
        let specs = SpecStore::open(dir).map_err(StartError::Setup)?;
        let journal_settings = JournalSettings {
            fsync: config.journal_fsync,
            ttl: settings.store.ttl,
            max_records: settings.store.max_records,
            max_payload_bytes: settings.store.max_payload_bytes,
        };
        let (journal, recovered) =
            Journal::open(dir, journal_settings).map_err(StartError::Setup)?;
        let (stored, spec_problems) = specs.load();
        for p in recovered.problems.iter().chain(&spec_problems) {
            tracing::warn!(problem = %p, "state folder");
        }
        (
            Some(Persistence { specs, journal }),
            Some((
                stored,
                recovered.pending,
                recovered.finished,
                recovered.logs,
            )),
        )
    };
    let platform = Platform::new(settings, metrics.clone(), auth, factory, persistence);
    if !config.telemetry.otlp_endpoint.is_empty() {
        let (x, _task) = crate::otlp::Exporter::start(
            &config.telemetry.otlp_endpoint,
            config.telemetry.otlp_queue,
            metrics,
        )
        .map_err(|e| StartError::Setup(format!("telemetry.otlp_endpoint: {e}")))?;
        platform.set_exporter(x);
    }
    let logs = ctx.logs.clone();
    let lookup: Arc<dyn crate::logs::Lookup> = platform.clone();
    logs.bind(Arc::downgrade(&lookup));
    if let Some((stored, pending, finished, exec_logs)) = restored {
        for (id, function, json) in exec_logs {
            if let Err(e) = logs.restore(&id, &function, &json) {
                tracing::warn!(problem = %e, "state folder");
            }
        }
        platform.restore(stored, pending, finished);
    }
    let housekeeping =
        platform.spawn_housekeeping(Duration::from_millis(config.executions.sweep_interval_ms));
    if !access.requires_tokens() {
        tracing::warn!(
            %addr,
            "no API tokens configured: every local user and program can use this API; it is served on loopback only (docs/security.md)"
        );
    }
    let dashboard = crate::ui::Dashboard::start(&platform);
    let callbacks_state = callback_listener.as_ref().map(|_| {
        Arc::new(AppState {
            platform: platform.clone(),
            max_body_bytes: config.max_body_bytes,
            access: Access::default(),
            callbacks_only: true,
            tls: None,
            ui: dashboard.clone(),
            logs: logs.clone(),
        })
    });
    let state = Arc::new(AppState {
        platform: platform.clone(),
        max_body_bytes: config.max_body_bytes,
        access,
        callbacks_only: false,
        tls,
        ui: dashboard,
        logs: logs.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    // Thread per core: the listener hands each new connection, in turn, to one of the workers,
    // each a current-thread runtime of its own; a connection and every request on it stay on
    // that worker's thread.
    let workers = match config.worker_threads {
        // Instances run beside the control plane: leave them half the machine.
        0 => std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1),
        n => n,
    };
    let (done, done_rx) = watch::channel(false);
    if let (Some(l), Some(st)) = (callback_listener, callbacks_state) {
        // Callbacks keep coming while running executions drain: serve until the platform stopped.
        tokio::spawn(callback_loop(l, st, done_rx.clone()));
    }
    let mut threads = Vec::new();
    let mut feeds = Vec::new();
    for i in 1..workers {
        let (feed, conns) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (st, mut done_rx) = (state.clone(), done_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("nanofaas-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker's runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let graceful = worker_loop(conns, st).await;
                    // Keep serving running requests (and the tasks they started) until the
                    // platform has drained and stopped.
                    let _ = done_rx.wait_for(|d| *d).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
                });
            })
            .map_err(|e| StartError::Setup(format!("cannot start worker thread {i}: {e}")))?;
        threads.push(t);
        feeds.push(feed);
    }
    let state_tls = state.tls.is_some();
    let task = tokio::spawn(serve(
        listener,
        state,
        stop_rx,
        grace,
        housekeeping,
        done,
        threads,
        feeds,
    ));
    tracing::info!(%addr, workers, tls = state_tls, "control plane listening");
    Ok(ServerHandle {
        addr,
        platform,
        stop,
        task,
    })
}

fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30));
    builder
}

/// Serves one connection on the current runtime, tracked for the graceful stop.
fn serve_conn(
    stream: tokio::net::TcpStream,
    state: &Arc<AppState>,
    builder: &http1::Builder,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let st = state.clone();
    let service = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(crate::ui::handle(st, req).await) }
    });
    let Some(tls) = &state.tls else {
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return;
    };
    let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
    tokio::spawn(async move {
        // A client that never finishes its handshake is dropped.
        match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
            Ok(Ok(s)) => {
                let _ = watcher
                    .watch(builder.serve_connection(TokioIo::new(s), service))
                    .await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    });
}

/// Accepts connections until asked to stop, serving them here and on the other workers in
/// turn; returns the tracker of the connections this thread still serves.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    feeds: Vec<tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http1_builder();
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                next = (next + 1) % (feeds.len() + 1);
                if next == 0 {
                    serve_conn(stream, &state, &builder, &graceful);
                    continue;
                }
                match stream.into_std() {
                    Ok(std) => {
                        if let Err(returned) = feeds[next - 1].send(std) {
                            // That worker is gone: serve the connection here.
                            if let Ok(s) = tokio::net::TcpStream::from_std(returned.0) {
                                serve_conn(s, &state, &builder, &graceful);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
                }
            }
            _ = wait_stop(&mut stop) => break,
        }
    }
    graceful
}

/// The callback listener beside a TLS API: serves until `done`.
async fn callback_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut done: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http1_builder();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => serve_conn(s, &state, &builder, &graceful),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed (callback listener)");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = wait_stop(&mut done) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// A worker: serves the connections the listener hands it until the listener stops.
async fn worker_loop(
    mut conns: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    state: Arc<AppState>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http1_builder();
    while let Some(std) = conns.recv().await {
        match tokio::net::TcpStream::from_std(std) {
            Ok(s) => serve_conn(s, &state, &builder, &graceful),
            Err(e) => tracing::warn!(error = %e, "cannot register a connection with a worker"),
        }
    }
    graceful
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    housekeeping: JoinHandle<()>,
    done: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    feeds: Vec<tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>>,
) {
    // Closing the feeds (when accept_loop returns) ends the workers' loops.
    let graceful = accept_loop(listener, state.clone(), stop, feeds).await;
    tracing::info!("shutting down: no new invocations; draining running ones");
    state.platform.shutdown(grace).await;
    // Followers of functions' logs end, so their connections can close.
    state.logs.close();
    housekeeping.abort();
    let _ = done.send(true);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    tracing::info!("control plane stopped");
}

async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            // Every sender is gone: nobody can ask us to stop; serve until the process ends.
            std::future::pending::<()>().await;
        }
    }
}

/// Runs until `shutdown` completes, then stops in order.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let handle = start(config).await?;
    let stop = handle.stop_signal();
    shutdown.await;
    let _ = stop.send(true);
    handle.wait().await;
    Ok(())
}
