//! Logging set-up: one `init` for the whole process. Logs go to stderr as text or JSON lines.
//! Every execution logs one line (target `nanofaas::execution`) with its function, execution id
//! and trace id, so "what happened to execution X" is one grep.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `level` is a level or a filter such as
/// `"info,nanofaas::execution=warn"`. Fails on a malformed filter or if called twice.
pub fn init(level: &str, json: bool) -> Result<(), String> {
    let filter: Targets = level
        .parse()
        .map_err(|e| format!("log level {level:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt.with_ansi(false)).try_init()
    };
    result.map_err(|e| e.to_string())
}
