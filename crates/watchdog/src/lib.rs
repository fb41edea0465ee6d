//! `nanofaas-watchdog`: the small process that runs inside every function instance.
//!
//! One-shot modes run the function once and post the result to a callback URL; warm mode
//! starts the runtime once and serves invocations over HTTP, enforcing timeouts, idle exit, max
//! invocations, crash recovery and graceful stop. Configuration is environment variables only
//! (see the README).
//!
//! # Layout
//! - [`config`]: every environment variable, parsed and validated; [`exit`]: exit codes.
//! - [`oneshot`]: the `HTTP`, `STDIO` and `FILE` one-shot modes.
//! - [`warm`]: the warm mode: [`warm::supervisor`] owns the runtime process,
//!   [`warm::server`] serves `/invoke`, `/health`, `/metrics`.
//! - [`runtime`]: spawning an HTTP runtime and waiting until it is healthy.
//! - [`exec`]: running a command per invocation (STDIO/FILE), one-shot or warm.
//! - [`process`]: process groups, parent-death signal, stopping with a grace period.
//! - [`client`]: the HTTP/1.1 client side: runtime connection pool, probes, single requests.
//! - [`callback`]: callback bodies and delivery with bounded retries.
//! - [`lease`]: the control plane's lease; the instance stops when nobody holds it.
//! - [`oom`]: telling an out-of-memory kill of the runtime from any other death.
//! - [`metrics`]: Prometheus counters and histogram on atomics.
//! - [`log`]: a minimal leveled stderr logger (no per-invocation lines).

pub mod callback;
pub mod client;
pub mod config;
pub mod exec;
pub mod exit;
pub mod lease;
pub mod log;
pub mod metrics;
pub mod oneshot;
pub mod oom;
pub mod process;
pub mod runtime;
pub mod warm;

pub use config::{Config, ConfigError, Mode};
pub use exit::ExitCode;

/// Runs the configured mode to completion; whatever the runtime left running (children that
/// left its process group included) is killed before returning.
///
/// SIGHUP means "the control plane is gone" (the process provider sets it as the watchdog's
/// parent-death signal): warm mode stops at once without draining, and a one-shot run is
/// abandoned (nobody is left to take its result).
pub async fn run(cfg: Config) -> ExitCode {
    let code = match cfg.mode {
        Mode::Warm => warm::run(cfg).await,
        Mode::Http | Mode::Stdio | Mode::File => {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::hangup()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut hup), Ok(mut term)) => {
                    // Kept alive until the tree is killed: dropping it first would kill the
                    // child alone and orphan its children.
                    let run = oneshot::run(&cfg);
                    tokio::pin!(run);
                    let why = tokio::select! {
                        c = &mut run => return finish(c),
                        _ = hup.recv() => "SIGHUP: the control plane is gone; abandoning the execution",
                        _ = term.recv() => "SIGTERM: stopping before the execution finished",
                    };
                    crate::warn!("{why}");
                    process::kill_descendants();
                    ExitCode::CallbackFailed
                }
                (Err(e), _) | (_, Err(e)) => {
                    crate::error!("cannot install signal handlers: {e}");
                    ExitCode::Internal
                }
            }
        }
    };
    finish(code)
}

fn finish(code: ExitCode) -> ExitCode {
    let n = process::kill_descendants();
    if n > 0 {
        crate::debug!("killed {n} process(es) the runtime left behind");
    }
    code
}
