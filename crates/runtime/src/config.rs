//! Configuration from environment variables, the same names and defaults as the Python and Java
//! runtimes where they share a setting.
//!
//! Every variable is optional; an empty value counts as unset. A malformed or out-of-range value
//! is an error naming the variable, never silently replaced by the default.

use std::fmt;
use std::time::Duration;

/// What the runtime reads from its environment. Build one with [`Config::from_env`], or start
/// from [`Config::default`] in tests and embedders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HOST`: address to listen on (default `127.0.0.1`).
    pub host: String,
    /// `PORT`: port to listen on (default `8080`; `0` picks a free one).
    pub port: u16,
    /// `EXECUTION_ID`: the execution id when a request has no `X-Execution-Id`.
    pub execution_id: Option<String>,
    /// `TRACE_ID`: the trace id when a request has no `X-Trace-Id`.
    pub trace_id: Option<String>,
    /// `TRACEPARENT`: the W3C trace context when a request has no `traceparent`.
    pub traceparent: Option<String>,
    /// `CALLBACK_URL`: callback base URL when a request has no `X-Callback-Url`.
    pub callback_url: Option<String>,
    /// `CALLBACK_TOKEN`: sent as `X-Callback-Token` when a request has none.
    pub callback_token: Option<String>,
    /// `CALLBACK_ATTEMPTS`: attempts per callback, in all (default 3, 1..=10).
    pub callback_attempts: u32,
    /// `CALLBACK_TIMEOUT_MS`: connect-and-answer timeout of one attempt (default 2000).
    pub callback_timeout: Duration,
    /// `CALLBACK_BACKOFF_MS`: wait before the second attempt, doubled for each further one
    /// (default 100).
    pub callback_backoff: Duration,
    /// `MAX_REQUEST_BYTES`: largest accepted `/invoke` body (default 6 MiB); larger is 413.
    pub max_request_bytes: usize,
    /// `SHUTDOWN_GRACE_MS`: on SIGTERM, how long in-flight invocations may still run
    /// (default 10000).
    pub shutdown_grace: Duration,
    /// `THREADS`: 1 runs everything on one thread (the default, and the fastest for one
    /// invocation at a time); N > 1 uses N worker threads.
    pub threads: usize,
    /// `NANOFAAS_RUNTIME_SOCKET`: a Unix socket (a path, or `@name` in Linux's abstract
    /// namespace) to serve on besides `HOST:PORT`; the watchdog offers one and then prefers it.
    pub socket: Option<String>,
}

pub const DEFAULT_MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8080,
            execution_id: None,
            trace_id: None,
            traceparent: None,
            callback_url: None,
            callback_token: None,
            callback_attempts: 3,
            callback_timeout: Duration::from_millis(2000),
            callback_backoff: Duration::from_millis(100),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            shutdown_grace: Duration::from_millis(10_000),
            threads: 1,
            socket: None,
        }
    }
}

/// A variable with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.var, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let d = Config::default();
        let num =
            |var: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(var) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (min..=max).contains(&n) => Ok(n),
                        _ => Err(ConfigError {
                            var,
                            reason: format!("{v:?} is not a whole number from {min} to {max}"),
                        }),
                    },
                }
            };
        let ms = |var, default: Duration, min, max| {
            num(var, default.as_millis() as u64, min, max).map(Duration::from_millis)
        };
        let callback_url = get("CALLBACK_URL");
        if let Some(u) = &callback_url {
            crate::callback::Target::parse(u).map_err(|reason| ConfigError {
                var: "CALLBACK_URL",
                reason,
            })?;
        }
        Ok(Config {
            host: get("HOST").map(|h| h.trim().to_string()).unwrap_or(d.host),
            port: num("PORT", d.port.into(), 0, 65535)? as u16,
            execution_id: get("EXECUTION_ID"),
            trace_id: get("TRACE_ID"),
            traceparent: get("TRACEPARENT"),
            callback_url,
            callback_token: get("CALLBACK_TOKEN"),
            callback_attempts: num("CALLBACK_ATTEMPTS", d.callback_attempts.into(), 1, 10)? as u32,
            callback_timeout: ms("CALLBACK_TIMEOUT_MS", d.callback_timeout, 1, 600_000)?,
            callback_backoff: ms("CALLBACK_BACKOFF_MS", d.callback_backoff, 0, 60_000)?,
            max_request_bytes: num("MAX_REQUEST_BYTES", d.max_request_bytes as u64, 1, 1 << 30)?
                as usize,
            shutdown_grace: ms("SHUTDOWN_GRACE_MS", d.shutdown_grace, 0, 600_000)?,
            threads: num("THREADS", d.threads as u64, 1, 256)? as usize,
            socket: get("NANOFAAS_RUNTIME_SOCKET").map(|s| s.trim().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_when_unset_or_blank() {
        assert_eq!(cfg(&[]).unwrap(), Config::default());
        assert_eq!(
            cfg(&[("PORT", " "), ("HOST", "")]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn values_are_read() {
        let c = cfg(&[
            ("HOST", "0.0.0.0"),
            ("PORT", "0"),
            ("EXECUTION_ID", "e-1"),
            ("TRACE_ID", "t-1"),
            ("CALLBACK_URL", "http://127.0.0.1:9/cb"),
            ("CALLBACK_TOKEN", "tok"),
            ("CALLBACK_ATTEMPTS", "5"),
            ("CALLBACK_TIMEOUT_MS", "300"),
            ("CALLBACK_BACKOFF_MS", "0"),
            ("MAX_REQUEST_BYTES", "1024"),
            ("SHUTDOWN_GRACE_MS", "0"),
            ("THREADS", "4"),
        ])
        .unwrap();
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 0);
        assert_eq!(c.execution_id.as_deref(), Some("e-1"));
        assert_eq!(c.trace_id.as_deref(), Some("t-1"));
        assert_eq!(c.callback_url.as_deref(), Some("http://127.0.0.1:9/cb"));
        assert_eq!(c.callback_token.as_deref(), Some("tok"));
        assert_eq!(c.callback_attempts, 5);
        assert_eq!(c.callback_timeout, Duration::from_millis(300));
        assert_eq!(c.callback_backoff, Duration::ZERO);
        assert_eq!(c.max_request_bytes, 1024);
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.threads, 4);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "65536"),
            ("PORT", "http"),
            ("PORT", "-1"),
            ("CALLBACK_ATTEMPTS", "0"),
            ("CALLBACK_ATTEMPTS", "11"),
            ("CALLBACK_TIMEOUT_MS", "0"),
            ("MAX_REQUEST_BYTES", "0"),
            ("THREADS", "0"),
            ("THREADS", "2.5"),
            ("SHUTDOWN_GRACE_MS", "600001"),
            ("CALLBACK_URL", "ftp://x"),
            ("CALLBACK_URL", "http://"),
            ("CALLBACK_URL", "https://cp/cb"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}");
            assert!(e.to_string().contains(var), "{e}");
        }
    }
}
