//! `nanofaas serve`: loads the configuration (file, environment, flags), starts the control
//! plane and stops it in order on SIGTERM or SIGINT.

use crate::exit::{err, Exit};
use clap::Args;
use nanofaas_control_plane::Config;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (settings: docs/configuration.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Folder for state kept across restarts ("" keeps nothing).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Log level or filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Any setting, as KEY=VALUE (repeatable), e.g. --set executions.ttl_ms=60000.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Listen beyond loopback even with no API tokens configured: anyone who reaches the port
    /// can run commands (setting api.insecure_no_auth; docs/security.md).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut overrides = Vec::new();
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(Exit::Usage, format!("--set {kv:?}: expected KEY=VALUE")))?;
        overrides.push((k.trim().to_string(), v.to_string()));
    }
    if let Some(l) = &args.listen {
        overrides.push(("listen".into(), l.clone()));
    }
    if let Some(d) = &args.state_dir {
        overrides.push(("state_dir".into(), d.clone()));
    }
    if let Some(l) = &args.log_level {
        overrides.push(("log_level".into(), l.clone()));
    }
    if args.insecure_no_auth {
        overrides.push(("api.insecure_no_auth".into(), "true".into()));
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    Config::load(args.config.as_deref(), &env, &overrides)
        .map_err(|e| err(Exit::Usage, e.to_string()))
}

/// Why the control plane did not start (exit code 3), with what to do about an address in use.
pub fn start_error(e: nanofaas_control_plane::server::StartError) -> anyhow::Error {
    if let nanofaas_control_plane::server::StartError::Insecure(m) = &e {
        return err(Exit::Exposed, m.clone());
    }
    let hint = match &e {
        nanofaas_control_plane::server::StartError::Bind { .. } => {
            "; is another nanofaas (or another program) listening there? Stop it or choose another address with --listen"
        }
        _ => "",
    };
    err(Exit::StartFailed, format!("{e}{hint}"))
}

/// The runtime of the control plane's first worker: a current-thread event loop. Further
/// workers (`worker_threads`) are started by the control plane, each on its own thread.
pub fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            err(
                Exit::StartFailed,
                format!("cannot start the async runtime: {e}"),
            )
        })
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    nanofaas_control_plane::telemetry::init(
        &config.log_level,
        config.log_format == nanofaas_control_plane::config::LogFormat::Json,
    )
    .map_err(|e| err(Exit::Usage, e))?;
    let rt = server_runtime()?;
    rt.block_on(async move {
        nanofaas_control_plane::server::preflight(&config).map_err(start_error)?;
        let listener = crate::port::bind(&config.listen, "serve").await?;
        let mut signals = Signals::new()?;
        let handle = nanofaas_control_plane::server::start_on(config, listener)
            .await
            .map_err(start_error)?;
        // Machine-readable line for scripts and tests that start the server on port 0.
        println!("nanofaas listening on http://{}", handle.addr);
        let stop = handle.stop_signal();
        tokio::spawn(async move {
            let which = signals.recv().await;
            tracing::info!("{which} received");
            let _ = stop.send(true);
        });
        handle.wait().await;
        Ok::<(), anyhow::Error>(())
    })?;
    nanofaas_control_plane::telemetry::flush();
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is created (so that neither kills the
/// process before an orderly stop).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind, name: &str| {
            signal(kind).map_err(|e| {
                err(
                    Exit::StartFailed,
                    format!("cannot install the {name} handler: {e}"),
                )
            })
        };
        Ok(Signals {
            int: handler(SignalKind::interrupt(), "SIGINT")?,
            term: handler(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
