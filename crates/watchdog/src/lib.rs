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
//! - [`metrics`]: Prometheus counters and histogram on atomics.
//! - [`log`]: a minimal leveled stderr logger (no per-invocation lines).

pub mod callback;
pub mod client;
pub mod config;
pub mod exec;
pub mod exit;
pub mod log;
pub mod metrics;
pub mod oneshot;
pub mod process;
pub mod runtime;
pub mod warm;

pub use config::{Config, ConfigError, Mode};
pub use exit::ExitCode;

/// Runs the configured mode to completion.
pub async fn run(cfg: Config) -> ExitCode {
    match cfg.mode {
        Mode::Warm => warm::run(cfg).await,
        Mode::Http | Mode::Stdio | Mode::File => oneshot::run(&cfg).await,
    }
}
