//! Write a nanofaas function in Rust: a function from [`Request`] to a JSON-serialisable
//! result, plus one call that serves the nanofaas runtime contract.
//!
//! ```no_run
//! use nanofaas_runtime::Request;
//! use serde_json::json;
//!
//! fn main() -> std::process::ExitCode {
//!     nanofaas_runtime::serve(|req: Request| async move {
//!         let name = req.input["name"].as_str().unwrap_or("world").to_string();
//!         if name.is_empty() {
//!             return Err("name must not be empty".to_string()); // → 500 HANDLER_ERROR
//!         }
//!         Ok(json!({ "greeting": format!("hello {name}") })) // → 200 with this JSON
//!     })
//! }
//! ```
//!
//! [`serve_sync`] takes a blocking function instead. Both read their configuration from the
//! environment ([`Config`]: `HOST`, `PORT`, `EXECUTION_ID`, `CALLBACK_URL`, ...), listen, serve
//! `GET /health` and `POST /invoke` until SIGTERM or SIGINT, let the in-flight invocation
//! finish, and return the process exit code ([`exit`]). The contract is the one the Python and
//! Java runtimes serve: execution id from `X-Execution-Id` else `EXECUTION_ID` else 400;
//! `X-Trace-Id`; a callback `POST {url}/{executionId}:complete` with `{success, output, error}`
//! when `X-Callback-Url` or `CALLBACK_URL` gives a URL; errors as
//! `{"error": {"code", "message"}}`. See the crate's README for the tables.
//!
//! Embedders and tests use [`Server`] directly: bind on port 0, run with their own shutdown
//! future.
//!
//! # Layout
//! - [`config`]: environment variables, defaults, validation.
//! - [`handler`]: [`Request`], [`Handler`] (sync/async closures erased, panics caught).
//! - [`server`]: routes, the invocation path, graceful stop.
//! - [`callback`]: callback URL parsing, the POST and its bounded retry (the shared sender,
//!   `nanofaas-callback`).
//! - `log`: stderr lines and the rate limiter for function-triggered lines.

pub mod callback;
pub mod config;
#[cfg(test)]
mod log_tests {
    #[test]
    fn lines_are_tagged_only_when_asked() {
        assert_eq!(super::tag_with(false, "e1", "hi"), "hi");
        assert_eq!(super::tag_with(true, "e1", "hi"), "@exec:e1 hi");
        assert_eq!(
            super::tag_with(true, "e1", "a\nb"),
            "@exec:e1 a\n@exec:e1 b"
        );
        assert_eq!(super::tag_with(true, "", "hi"), "hi");
    }
}
pub mod handler;
mod log;
pub mod server;

pub use config::{Config, ConfigError};
pub use handler::{Handler, Outcome, Request};
pub use server::{BindError, Server};

use serde::Serialize;
use std::fmt::Display;

/// The variable nanofaas's providers set to have lines tagged with their execution.
const ENV_LOG_TAGS: &str = "NANOFAAS_LOG_TAGS";

fn log_tags() -> bool {
    static TAGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TAGS.get_or_init(|| std::env::var(ENV_LOG_TAGS).is_ok_and(|v| v == "1"))
}

/// `@exec:<id> <line>` when nanofaas asked for tags (`NANOFAAS_LOG_TAGS=1`), else `line`; each
/// line of a multi-line text is tagged.
pub fn tag_line(execution_id: &str, line: &str) -> String {
    tag_with(log_tags(), execution_id, line)
}

fn tag_with(tags: bool, execution_id: &str, line: &str) -> String {
    if !tags || execution_id.is_empty() || execution_id.contains(char::is_whitespace) {
        return line.to_string();
    }
    line.split('\n')
        .map(|l| format!("@exec:{execution_id} {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `line` on stderr as a line of execution `execution_id` (what [`Request::log`] does;
/// usable from any thread the handler starts, with a copy of the id).
pub fn log_line(execution_id: &str, line: impl Display) {
    use std::io::Write;
    let text = tag_line(execution_id, &line.to_string());
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
use std::future::Future;
use std::process::ExitCode;

/// Exit codes of a function served by [`serve`], [`serve_sync`] or [`serve_handler`].
pub mod exit {
    /// Stopped by SIGTERM or SIGINT.
    pub const STOPPED: u8 = 0;
    /// Unexpected internal error (cannot start the async runtime or install signal handlers).
    pub const INTERNAL: u8 = 1;
    /// Invalid configuration (an environment variable); one line on stderr names it.
    pub const CONFIG: u8 = 2;
    /// Cannot listen on `HOST:PORT`.
    pub const LISTEN: u8 = 4;
}

/// Serves an async function until SIGTERM/SIGINT; returns the exit code for `main`.
pub fn serve<F, Fut, T, E>(f: F) -> ExitCode
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize,
    E: Display,
{
    serve_handler(Handler::from_async(f))
}

/// Serves a blocking function (each call on tokio's blocking pool) until SIGTERM/SIGINT.
pub fn serve_sync<F, T, E>(f: F) -> ExitCode
where
    F: Fn(Request) -> Result<T, E> + Send + Sync + 'static,
    T: Serialize,
    E: Display,
{
    serve_handler(Handler::from_sync(f))
}

/// Serves `handler` with the configuration of the environment until SIGTERM/SIGINT.
pub fn serve_handler(handler: Handler) -> ExitCode {
    let started = std::time::Instant::now();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log::log_error!("{e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut builder = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::log_error!("cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    ExitCode::from(rt.block_on(run(config, handler, started)))
}

async fn run(config: Config, handler: Handler, started: std::time::Instant) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            log::log_error!("cannot install the SIGTERM/SIGINT handlers: {e}");
            return exit::INTERNAL;
        }
    };
    let server = match Server::bind(config, handler).await {
        Ok(s) => s,
        Err(e) => {
            log::log_error!("{e}");
            return exit::LISTEN;
        }
    };
    log::log_info!(
        "listening on {}{} (pid {}, startup {} us)",
        server.local_addr(),
        server
            .socket()
            .map(|s| format!(" and unix:{s}"))
            .unwrap_or_default(),
        std::process::id(),
        started.elapsed().as_micros()
    );
    server
        .run(async {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            log::log_info!("{which}: finishing in-flight invocations, then stopping");
        })
        .await;
    log::log_info!("stopped");
    exit::STOPPED
}
