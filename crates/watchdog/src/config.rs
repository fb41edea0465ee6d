//! Configuration from environment variables: one typed [`Config`], parsed and validated up
//! front so that a bad value stops the watchdog with one clear line (exit code 2) instead of
//! a surprise later. An empty variable counts as unset. Only the variables of the selected mode
//! are read.
//!
//! Parsing takes a lookup function rather than reading the process environment, so every rule
//! is unit-tested here without touching global state.

use crate::log::Level;
use bytes::Bytes;
use hyper::Uri;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the watchdog does (`EXECUTION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One-shot: start an HTTP runtime, POST the payload once, call back, exit.
    Http,
    /// One-shot: run the command with the payload on stdin, stdout is the output.
    Stdio,
    /// One-shot: the command reads `INPUT_FILE` and writes `OUTPUT_FILE`.
    File,
    /// Serve many invocations on `WARM_PORT` from a runtime started once.
    Warm,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Some(Mode::Http),
            "STDIO" => Some(Mode::Stdio),
            "FILE" => Some(Mode::File),
            "WARM" => Some(Mode::Warm),
            _ => None,
        }
    }
}

/// How a warm watchdog talks to its runtime (`WARM_RUNTIME_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// A long-lived HTTP server started once (the warm case proper).
    Http,
    /// The command is run once per invocation, payload on stdin.
    Stdio,
    /// The command is run once per invocation with a fresh input/output file pair.
    File,
}

impl RuntimeKind {
    fn name(self) -> &'static str {
        match self {
            RuntimeKind::Http => "HTTP",
            RuntimeKind::Stdio => "STDIO",
            RuntimeKind::File => "FILE",
        }
    }

    fn parse(s: &str) -> Option<RuntimeKind> {
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Some(RuntimeKind::Http),
            "STDIO" => Some(RuntimeKind::Stdio),
            "FILE" => Some(RuntimeKind::File),
            _ => None,
        }
    }
}

/// A boolean switch as the original nanofaas accepted it (`WARM=true`), case-insensitive.
fn parse_switch(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A plain-HTTP URL split into what a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host without IPv6 brackets, e.g. `127.0.0.1`, `::1`, `runtime.local`.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, always starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{s:?}: scheme {other:?} is not supported, only http"
                ))
            }
            None => return Err(format!("{s:?} is not an absolute http:// URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(HttpUrl {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: path.to_string(),
        })
    }

    /// The same scheme, host and port with another path.
    pub fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// Whether the host is this machine (a loopback or unspecified address, or `localhost`).
    pub fn is_local(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Callback delivery: bounded attempts with doubling backoff, at most [`CALLBACK_MAX_BACKOFF`]
/// between two (the shared sender's policy).
pub type CallbackPolicy = nanofaas_callback::Policy;

/// Settings of the one-shot modes.
#[derive(Debug, Clone, PartialEq)]
pub struct OneShotConfig {
    pub execution_id: String,
    pub callback_url: HttpUrl,
    pub callback_token: Option<String>,
    pub trace_id: Option<String>,
    /// `TRACEPARENT`: W3C trace context, passed on to the runtime and the callback.
    pub traceparent: Option<String>,
    /// `INVOCATION_PAYLOAD`, checked to be JSON, forwarded byte for byte.
    pub payload: Bytes,
    pub input_file: PathBuf,
    pub output_file: PathBuf,
}

/// Settings of the warm mode.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmConfig {
    pub port: u16,
    pub bind: IpAddr,
    /// `WARM_SOCKET`: a Unix socket to serve on besides the TCP port; a leading `@` names the
    /// Linux abstract namespace (no file).
    pub socket: Option<String>,
    /// `WARM_RUNTIME_SOCKET`: offer each HTTP runtime a Unix socket (this prefix plus `.<n>`) in
    /// `NANOFAAS_RUNTIME_SOCKET`; used for invocations when the runtime answers on it.
    pub runtime_socket: Option<String>,
    /// `WARM_PEER_UID`: accept connections (TCP and Unix) only from processes of this user.
    pub peer_uid: Option<u32>,
    /// `None`: never exit when idle.
    pub idle_timeout: Option<Duration>,
    /// 0: unlimited.
    pub max_invocations: u64,
    pub concurrency: usize,
    pub runtime: RuntimeKind,
    /// `WARM_LEASE_MS`: serve only while a control plane holds the lease (see `lease`);
    /// `None`: no lease.
    pub lease: Option<Duration>,
    /// `WARM_PREWARM`: start the HTTP runtime generic (`NANOFAAS_PREWARM=1`, no handler) and
    /// wait for `POST /specialize` before serving (see `warm::specialize`).
    pub prewarm: bool,
    /// `WARM_ANNOUNCE`: at start, send one empty UDP datagram to the default gateway, so that the
    /// host learns this container's link-layer address before its first connection to it (see
    /// `warm::announce`).
    pub announce: bool,
}

/// Everything the watchdog needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    /// `WATCHDOG_CMD` split into argv (no shell).
    pub command: Vec<String>,
    /// Default per-invocation timeout.
    pub timeout: Duration,
    pub runtime_url: HttpUrl,
    pub runtime_health_url: HttpUrl,
    pub startup_timeout: Duration,
    pub stop_grace: Duration,
    pub callback: CallbackPolicy,
    /// Largest request body (warm) and largest function output (STDIO/FILE) accepted.
    pub max_payload_bytes: usize,
    pub log_level: Level,
    /// 1: a single-threaded async runtime; more: that many worker threads.
    pub threads: usize,
    pub oneshot: Option<OneShotConfig>,
    pub warm: Option<WarmConfig>,
}

/// A configuration problem: which variable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RUNTIME_URL: &str = "http://127.0.0.1:8080/invoke";
pub const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_STOP_GRACE_MS: u64 = 5_000;
pub const DEFAULT_CALLBACK_MAX_ATTEMPTS: u64 = 5;
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 5_000;
pub const CALLBACK_FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const CALLBACK_MAX_BACKOFF: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_INPUT_FILE: &str = "/tmp/input.json";
pub const DEFAULT_OUTPUT_FILE: &str = "/tmp/output.json";
pub const DEFAULT_WARM_PORT: u16 = 8080;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_THREADS: u64 = 1;
pub const MAX_CONCURRENCY: u64 = 4096;

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.get)(name).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.var(name).ok_or_else(|| ConfigError {
            var: name,
            message: "is required but not set".into(),
        })
    }

    /// A non-negative integer within `min..=max`.
    fn number(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(raw) = self.var(name) else {
            return Ok(default);
        };
        let bad = |why: String| ConfigError {
            var: name,
            message: why,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("{raw:?} is not a non-negative whole number")));
        }
        let n: u64 = trimmed
            .parse()
            .map_err(|_| bad(format!("{raw:?} is too large")))?;
        if n < min || n > max {
            return Err(bad(format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    fn millis(&self, name: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        // Up to about 11.6 days: enough for any timeout, small enough to never overflow an Instant.
        self.number(name, default, min, 1_000_000_000)
            .map(Duration::from_millis)
    }

    fn url(
        &self,
        name: &'static str,
        default: Option<&str>,
    ) -> Result<Option<HttpUrl>, ConfigError> {
        match self.var(name).or_else(|| default.map(str::to_string)) {
            None => Ok(None),
            Some(raw) => HttpUrl::parse(raw.trim())
                .map(Some)
                .map_err(|message| ConfigError { var: name, message }),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::parse(&|name| std::env::var(name).ok())
    }

    /// Parses a configuration from a variable lookup.
    pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env { get };
        let log_level = match env.var("WATCHDOG_LOG") {
            None => Level::Info,
            Some(v) => Level::parse(&v).ok_or_else(|| ConfigError {
                var: "WATCHDOG_LOG",
                message: format!("{v:?} is not one of error, warn, info, debug"),
            })?,
        };
        let (mode, runtime_from_mode) = Self::parse_mode(&env)?;
        let command_line = env.required("WATCHDOG_CMD")?;
        let command =
            nanofaas_api::command::split(&command_line).map_err(|message| ConfigError {
                var: "WATCHDOG_CMD",
                message,
            })?;
        let timeout = env.millis("TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 1)?;
        let runtime_url = env
            .url("RUNTIME_URL", Some(DEFAULT_RUNTIME_URL))?
            .expect("a default is given");
        let runtime_health_url = env
            .url("RUNTIME_HEALTH_URL", None)?
            .unwrap_or_else(|| runtime_url.with_path("/health"));
        let startup_timeout =
            env.millis("WARM_STARTUP_TIMEOUT_MS", DEFAULT_STARTUP_TIMEOUT_MS, 1)?;
        let stop_grace = env.millis("WARM_STOP_GRACE_MS", DEFAULT_STOP_GRACE_MS, 0)?;
        let callback = CallbackPolicy {
            max_attempts: env.number(
                "CALLBACK_MAX_ATTEMPTS",
                DEFAULT_CALLBACK_MAX_ATTEMPTS,
                1,
                20,
            )? as u32,
            attempt_timeout: env.millis("CALLBACK_TIMEOUT_MS", DEFAULT_CALLBACK_TIMEOUT_MS, 1)?,
            first_backoff: CALLBACK_FIRST_BACKOFF,
            max_backoff: CALLBACK_MAX_BACKOFF,
        };
        let max_payload_bytes =
            env.number("MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, 1, 1 << 30)? as usize;
        let threads = env.number("WATCHDOG_THREADS", DEFAULT_THREADS, 1, 64)? as usize;

        let (oneshot, warm) = if mode == Mode::Warm {
            (
                None,
                Some(Self::parse_warm(&env, &runtime_url, runtime_from_mode)?),
            )
        } else {
            (Some(Self::parse_oneshot(&env)?), None)
        };
        Ok(Config {
            mode,
            command,
            timeout,
            runtime_url,
            runtime_health_url,
            startup_timeout,
            stop_grace,
            callback,
            max_payload_bytes,
            log_level,
            threads,
            oneshot,
            warm,
        })
    }

    /// The mode, from `EXECUTION_MODE` and the original nanofaas's `WARM` switch, and the
    /// runtime kind that `EXECUTION_MODE` names when `WARM=true` gives it the original's meaning
    /// (how a warm watchdog talks to its runtime).
    ///
    /// | `WARM` | `EXECUTION_MODE` | result |
    /// | --- | --- | --- |
    /// | unset | any | `EXECUTION_MODE` (default `HTTP`) |
    /// | true | unset or `WARM` | warm |
    /// | true | `HTTP`, `STDIO`, `FILE` | warm with that runtime kind (the original's pairing) |
    /// | false | `WARM` | error: the two contradict |
    /// | false | anything else | `EXECUTION_MODE` |
    fn parse_mode(env: &Env<'_>) -> Result<(Mode, Option<RuntimeKind>), ConfigError> {
        let mode = match env.var("EXECUTION_MODE") {
            None => None,
            Some(v) => Some(Mode::parse(v.trim()).ok_or_else(|| ConfigError {
                var: "EXECUTION_MODE",
                message: format!("unknown mode {v:?}; expected HTTP, STDIO, FILE or WARM"),
            })?),
        };
        let warm = match env.var("WARM") {
            None => None,
            Some(v) => Some(parse_switch(v.trim()).ok_or_else(|| ConfigError {
                var: "WARM",
                message: format!(
                    "{v:?} is not a switch; expected true or false (also 1/0, yes/no)"
                ),
            })?),
        };
        Ok(match (warm, mode) {
            (None, m) => (m.unwrap_or(Mode::Http), None),
            (Some(true), None | Some(Mode::Warm)) => (Mode::Warm, None),
            (Some(true), Some(Mode::Http)) => (Mode::Warm, Some(RuntimeKind::Http)),
            (Some(true), Some(Mode::Stdio)) => (Mode::Warm, Some(RuntimeKind::Stdio)),
            (Some(true), Some(Mode::File)) => (Mode::Warm, Some(RuntimeKind::File)),
            (Some(false), Some(Mode::Warm)) => {
                return Err(ConfigError {
                    var: "WARM",
                    message: "is false but EXECUTION_MODE=WARM: the two contradict; set one \
                              of them (WARM=true is the original nanofaas's spelling of \
                              EXECUTION_MODE=WARM)"
                        .into(),
                })
            }
            (Some(false), m) => (m.unwrap_or(Mode::Http), None),
        })
    }

    fn parse_oneshot(env: &Env<'_>) -> Result<OneShotConfig, ConfigError> {
        let execution_id = env.required("EXECUTION_ID")?;
        let callback_url = env.url("CALLBACK_URL", None)?.ok_or_else(|| ConfigError {
            var: "CALLBACK_URL",
            message: "is required but not set".into(),
        })?;
        let payload = env.var("INVOCATION_PAYLOAD").unwrap_or_else(|| "{}".into());
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
            return Err(ConfigError {
                var: "INVOCATION_PAYLOAD",
                message: format!("is not valid JSON: {e}"),
            });
        }
        Ok(OneShotConfig {
            execution_id,
            callback_url,
            callback_token: env.var("CALLBACK_TOKEN"),
            trace_id: env.var("TRACE_ID"),
            traceparent: env.var("TRACEPARENT"),
            payload: Bytes::from(payload),
            input_file: env
                .var("INPUT_FILE")
                .unwrap_or_else(|| DEFAULT_INPUT_FILE.into())
                .into(),
            output_file: env
                .var("OUTPUT_FILE")
                .unwrap_or_else(|| DEFAULT_OUTPUT_FILE.into())
                .into(),
        })
    }

    fn parse_warm(
        env: &Env<'_>,
        runtime_url: &HttpUrl,
        runtime_from_mode: Option<RuntimeKind>,
    ) -> Result<WarmConfig, ConfigError> {
        let port = env.number("WARM_PORT", DEFAULT_WARM_PORT as u64, 0, 65535)? as u16;
        let bind = match env.var("WARM_BIND") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v.trim().parse().map_err(|_| ConfigError {
                var: "WARM_BIND",
                message: format!("{v:?} is not an IP address"),
            })?,
        };
        let socket = match env.var("WARM_SOCKET").map(|v| v.trim().to_string()) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => {
                // sun_path holds 108 bytes: 107 and a NUL for a path, 107 after the NUL for a name.
                if v.len() > 107 || v == "@" {
                    return Err(ConfigError {
                        var: "WARM_SOCKET",
                        message: format!(
                            "{v:?} is not a usable Unix socket address (a path or @name of 1 to 107 bytes)"
                        ),
                    });
                }
                Some(v)
            }
        };
        let runtime_socket = match env.var("WARM_RUNTIME_SOCKET").map(|v| v.trim().to_string()) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => {
                // Room for the `.<n>` suffix within sun_path's 107 bytes.
                if v.len() > 96 || v == "@" {
                    return Err(ConfigError {
                        var: "WARM_RUNTIME_SOCKET",
                        message: format!(
                            "{v:?} is not a usable Unix socket prefix (a path or @name of 1 to 96 bytes)"
                        ),
                    });
                }
                Some(v)
            }
        };
        let peer_uid = match env.var("WARM_PEER_UID").map(|v| v.trim().to_string()) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| ConfigError {
                var: "WARM_PEER_UID",
                message: format!("{v:?} is not a user id (a number)"),
            })?),
        };
        let idle = env.number(
            "WARM_IDLE_TIMEOUT_MS",
            DEFAULT_IDLE_TIMEOUT_MS,
            0,
            1_000_000_000,
        )?;
        let max_invocations = env.number("WARM_MAX_INVOCATIONS", 0, 0, u64::MAX)?;
        let lease = env.number("WARM_LEASE_MS", 0, 0, 86_400_000)?;
        let concurrency = env.number("WARM_CONCURRENCY", 1, 1, MAX_CONCURRENCY)? as usize;
        let runtime = match env.var("WARM_RUNTIME_MODE") {
            None => runtime_from_mode.unwrap_or(RuntimeKind::Http),
            Some(v) => {
                let kind = RuntimeKind::parse(v.trim()).ok_or_else(|| ConfigError {
                    var: "WARM_RUNTIME_MODE",
                    message: format!("unknown runtime mode {v:?}; expected HTTP, STDIO or FILE"),
                })?;
                if let Some(from_mode) = runtime_from_mode.filter(|k| *k != kind) {
                    return Err(ConfigError {
                        var: "WARM_RUNTIME_MODE",
                        message: format!(
                            "{v:?} contradicts WARM=true with EXECUTION_MODE={}, \
                             which already names the runtime mode; set only one of them",
                            from_mode.name()
                        ),
                    });
                }
                kind
            }
        };
        let prewarm = match env.var("WARM_PREWARM") {
            None => false,
            Some(v) => parse_switch(v.trim()).ok_or_else(|| ConfigError {
                var: "WARM_PREWARM",
                message: format!("{v:?} is not a switch (true/false, 1/0, yes/no, on/off)"),
            })?,
        };
        let announce = match env.var("WARM_ANNOUNCE") {
            None => false,
            Some(v) => parse_switch(v.trim()).ok_or_else(|| ConfigError {
                var: "WARM_ANNOUNCE",
                message: format!("{v:?} is not a switch (true/false, 1/0, yes/no, on/off)"),
            })?,
        };
        if prewarm && runtime != RuntimeKind::Http {
            return Err(ConfigError {
                var: "WARM_PREWARM",
                message: format!(
                    "only an HTTP runtime can be prewarmed and specialized later; this one is {}",
                    runtime.name()
                ),
            });
        }
        if runtime == RuntimeKind::Http
            && port != 0
            && port == runtime_url.port
            && runtime_url.is_local()
        {
            return Err(ConfigError {
                var: "WARM_PORT",
                message: format!(
                    "{port} is also the port of RUNTIME_URL ({runtime_url}); the watchdog and \
                     the runtime need different ports (set the runtime's PORT and RUNTIME_URL, \
                     or WARM_PORT)"
                ),
            });
        }
        Ok(WarmConfig {
            port,
            bind,
            socket,
            runtime_socket,
            peer_uid,
            idle_timeout: (idle > 0).then(|| Duration::from_millis(idle)),
            max_invocations,
            concurrency,
            runtime,
            lease: (lease > 0).then(|| Duration::from_millis(lease)),
            prewarm,
            announce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(&move |k| map.get(k).cloned())
    }

    fn err_var(vars: &[(&str, &str)]) -> (&'static str, String) {
        let e = parse(vars).unwrap_err();
        (e.var, e.message)
    }

    const ONESHOT: &[(&str, &str)] = &[
        ("WATCHDOG_CMD", "python3 -m app"),
        ("EXECUTION_ID", "e1"),
        ("CALLBACK_URL", "http://cp:8080/v1/internal/executions"),
    ];

    fn warm(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("EXECUTION_MODE", "warm".to_string()),
            ("WATCHDOG_CMD", "rt".to_string()),
            ("RUNTIME_URL", "http://127.0.0.1:9000/invoke".to_string()),
        ];
        for (k, val) in extra {
            let k: &'static str = Box::leak(k.to_string().into_boxed_str());
            v.retain(|(kk, _)| *kk != k);
            v.push((k, val.to_string()));
        }
        v
    }

    fn parse_owned(v: &[(&'static str, String)]) -> Result<Config, ConfigError> {
        let borrowed: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        parse(&borrowed)
    }

    #[test]
    fn oneshot_defaults() {
        let c = parse(ONESHOT).unwrap();
        assert_eq!(c.mode, Mode::Http);
        assert_eq!(c.command, ["python3", "-m", "app"]);
        assert_eq!(c.timeout, Duration::from_millis(30_000));
        assert_eq!(c.runtime_url.to_string(), "http://127.0.0.1:8080/invoke");
        assert_eq!(
            c.runtime_health_url.to_string(),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(c.callback.max_attempts, 5);
        assert_eq!(c.threads, 1);
        let o = c.oneshot.unwrap();
        assert_eq!(o.execution_id, "e1");
        assert_eq!(o.payload, Bytes::from_static(b"{}"));
        assert_eq!(o.callback_token, None);
        assert_eq!(o.input_file, PathBuf::from("/tmp/input.json"));
        assert_eq!(o.output_file, PathBuf::from("/tmp/output.json"));
        assert!(c.warm.is_none());
    }

    #[test]
    fn modes_case_insensitive_and_unknown_rejected() {
        for (raw, mode) in [
            ("stdio", Mode::Stdio),
            ("File", Mode::File),
            ("HTTP", Mode::Http),
        ] {
            let mut v = ONESHOT.to_vec();
            v.push(("EXECUTION_MODE", raw));
            assert_eq!(parse(&v).unwrap().mode, mode);
        }
        let mut v = ONESHOT.to_vec();
        v.push(("EXECUTION_MODE", "BATCH"));
        let (var, msg) = err_var(&v);
        assert_eq!(var, "EXECUTION_MODE");
        assert!(msg.contains("BATCH"), "{msg}");
    }

    #[test]
    fn required_variables() {
        assert_eq!(err_var(&[("EXECUTION_ID", "e")]).0, "WATCHDOG_CMD");
        assert_eq!(err_var(&[("WATCHDOG_CMD", "  ")]).0, "WATCHDOG_CMD");
        assert_eq!(err_var(&[("WATCHDOG_CMD", "a 'b")]).0, "WATCHDOG_CMD");
        assert_eq!(err_var(&[("WATCHDOG_CMD", "a")]).0, "EXECUTION_ID");
        assert_eq!(
            err_var(&[("WATCHDOG_CMD", "a"), ("EXECUTION_ID", "e")]).0,
            "CALLBACK_URL"
        );
        // Empty counts as unset.
        assert_eq!(
            err_var(&[
                ("WATCHDOG_CMD", "a"),
                ("EXECUTION_ID", ""),
                ("CALLBACK_URL", "http://x")
            ])
            .0,
            "EXECUTION_ID"
        );
        // Warm mode needs neither.
        assert!(parse(&[
            ("EXECUTION_MODE", "WARM"),
            ("WATCHDOG_CMD", "a"),
            ("WARM_PORT", "9")
        ])
        .is_ok());
    }

    #[test]
    fn malformed_numbers_are_errors_not_defaults() {
        for (var, val) in [
            ("TIMEOUT_MS", "abc"),
            ("TIMEOUT_MS", "-5"),
            ("TIMEOUT_MS", "0"),
            ("TIMEOUT_MS", "1.5"),
            ("TIMEOUT_MS", "99999999999999999999999"),
            ("CALLBACK_MAX_ATTEMPTS", "0"),
            ("CALLBACK_MAX_ATTEMPTS", "21"),
            ("WATCHDOG_THREADS", "0"),
        ] {
            let mut v = ONESHOT.to_vec();
            v.push((var, val));
            let (got, msg) = err_var(&v);
            assert_eq!(got, var, "{var}={val}: {msg}");
        }
        for (var, val) in [
            ("WARM_PORT", "70000"),
            ("WARM_PORT", "http"),
            ("WARM_CONCURRENCY", "0"),
            ("WARM_CONCURRENCY", "5000"),
            ("WARM_IDLE_TIMEOUT_MS", "soon"),
            ("WARM_MAX_INVOCATIONS", "-1"),
            ("WARM_LEASE_MS", "3s"),
            ("WARM_STARTUP_TIMEOUT_MS", "0"),
            ("WARM_BIND", "localhost"),
            ("WARM_RUNTIME_MODE", "GRPC"),
            ("WARM_SOCKET", "@"),
            ("WARM_SOCKET", &"s".repeat(108)),
            ("WARM_RUNTIME_SOCKET", &"s".repeat(97)),
        ] {
            let (got, msg) = parse_owned(&warm(&[(var, val)]))
                .map(|_| ("", String::new()))
                .unwrap_or_else(|e| (e.var, e.message));
            assert_eq!(got, var, "{var}={val}: {msg}");
        }
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://[::1]:9000/invoke?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/invoke?x=1")
        );
        assert_eq!(u.authority, "[::1]:9000");
        assert!(u.is_local());
        let u = HttpUrl::parse("http://runtime").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(!u.is_local());
        assert!(HttpUrl::parse("https://x/").unwrap_err().contains("https"));
        assert!(HttpUrl::parse("/invoke").is_err());
        assert!(HttpUrl::parse("not a url").is_err());
        let mut v = ONESHOT.to_vec();
        v.push(("RUNTIME_URL", "ftp://x/invoke"));
        assert_eq!(err_var(&v).0, "RUNTIME_URL");
        let mut v = ONESHOT.to_vec();
        v.retain(|(k, _)| *k != "CALLBACK_URL");
        v.push(("CALLBACK_URL", "cp:8080"));
        assert_eq!(err_var(&v).0, "CALLBACK_URL");
        let mut v = ONESHOT.to_vec();
        v.push(("RUNTIME_HEALTH_URL", "http://127.0.0.1:1/ready"));
        assert_eq!(parse(&v).unwrap().runtime_health_url.path, "/ready");
    }

    #[test]
    fn payload_must_be_json() {
        let mut v = ONESHOT.to_vec();
        v.push(("INVOCATION_PAYLOAD", "{\"input\": "));
        assert_eq!(err_var(&v).0, "INVOCATION_PAYLOAD");
        let mut v = ONESHOT.to_vec();
        v.push(("INVOCATION_PAYLOAD", "{\"input\": [1,2]}"));
        assert_eq!(
            parse(&v).unwrap().oneshot.unwrap().payload,
            Bytes::from_static(b"{\"input\": [1,2]}")
        );
    }

    #[test]
    fn warm_defaults_and_values() {
        let c = parse_owned(&warm(&[])).unwrap();
        let w = c.warm.unwrap();
        assert_eq!(w.port, 8080);
        assert_eq!(w.bind, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(w.idle_timeout, Some(Duration::from_millis(300_000)));
        assert_eq!((w.max_invocations, w.concurrency), (0, 1));
        assert_eq!(w.runtime, RuntimeKind::Http);
        assert_eq!(
            (w.socket.as_deref(), w.runtime_socket.as_deref()),
            (None, None)
        );
        assert!(c.oneshot.is_none());
        let w = parse_owned(&warm(&[
            ("WARM_PORT", "0"),
            ("WARM_BIND", "127.0.0.1"),
            ("WARM_IDLE_TIMEOUT_MS", "0"),
            ("WARM_MAX_INVOCATIONS", "3"),
            ("WARM_CONCURRENCY", "8"),
            ("WARM_RUNTIME_MODE", "stdio"),
            ("WARM_SOCKET", "@nanofaas-x"),
            ("WARM_PEER_UID", "0"),
        ]))
        .unwrap()
        .warm
        .unwrap();
        assert_eq!(w.socket.as_deref(), Some("@nanofaas-x"));
        assert_eq!(w.peer_uid, Some(0));
        assert!(parse_owned(&warm(&[("WARM_PEER_UID", "root")])).is_err());
        assert_eq!((w.port, w.idle_timeout, w.max_invocations), (0, None, 3));
        assert_eq!(w.lease, None);
        assert_eq!((w.concurrency, w.runtime), (8, RuntimeKind::Stdio));
        assert!(!w.prewarm);
    }

    #[test]
    fn prewarm_is_a_switch_for_http_runtimes_only() {
        let w = parse_owned(&warm(&[("WARM_PREWARM", "1")]))
            .unwrap()
            .warm
            .unwrap();
        assert!(w.prewarm);
        let w = parse_owned(&warm(&[("WARM_PREWARM", "off")]))
            .unwrap()
            .warm
            .unwrap();
        assert!(!w.prewarm);
        for bad in [
            &[("WARM_PREWARM", "maybe")][..],
            &[("WARM_PREWARM", "true"), ("WARM_RUNTIME_MODE", "STDIO")],
        ] {
            let e = parse_owned(&warm(bad)).unwrap_err();
            assert_eq!(e.var, "WARM_PREWARM", "{}", e.message);
        }
    }

    #[test]
    fn announce_is_a_switch_off_by_default() {
        let w = parse_owned(&warm(&[])).unwrap().warm.unwrap();
        assert!(!w.announce);
        let w = parse_owned(&warm(&[("WARM_ANNOUNCE", "1")]))
            .unwrap()
            .warm
            .unwrap();
        assert!(w.announce);
        let e = parse_owned(&warm(&[("WARM_ANNOUNCE", "loud")])).unwrap_err();
        assert_eq!(e.var, "WARM_ANNOUNCE", "{}", e.message);
    }

    #[test]
    fn warm_port_must_differ_from_a_local_runtime_port() {
        let (var, msg) = parse_owned(&warm(&[("WARM_PORT", "9000")]))
            .map(|_| ("", String::new()))
            .unwrap_or_else(|e| (e.var, e.message));
        assert_eq!(var, "WARM_PORT", "{msg}");
        // The default RUNTIME_URL collides with the default WARM_PORT.
        let e = parse(&[("EXECUTION_MODE", "WARM"), ("WATCHDOG_CMD", "a")]).unwrap_err();
        assert_eq!(e.var, "WARM_PORT");
        // A remote runtime on the same port number is fine, and so is a STDIO runtime.
        assert!(parse_owned(&warm(&[
            ("WARM_PORT", "9000"),
            ("RUNTIME_URL", "http://10.0.0.5:9000/invoke")
        ]))
        .is_ok());
        assert!(parse_owned(&warm(&[
            ("WARM_PORT", "9000"),
            ("WARM_RUNTIME_MODE", "STDIO")
        ]))
        .is_ok());
    }

    #[test]
    fn warm_true_is_the_originals_spelling_of_execution_mode_warm() {
        let base = [
            ("WATCHDOG_CMD", "rt"),
            ("RUNTIME_URL", "http://127.0.0.1:9000/invoke"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        let reference = with(&[("EXECUTION_MODE", "WARM")]).unwrap();
        for spelling in ["true", "TRUE", "1", "yes", " True "] {
            let c = with(&[("WARM", spelling)]).unwrap();
            assert_eq!(
                c, reference,
                "WARM={spelling:?} is EXECUTION_MODE=WARM exactly"
            );
            // Both set, agreeing.
            let c = with(&[("WARM", spelling), ("EXECUTION_MODE", "warm")]).unwrap();
            assert_eq!(c, reference);
        }
        // No EXECUTION_ID or CALLBACK_URL is asked for: warm mode needs neither.
        assert!(reference.oneshot.is_none());
        assert_eq!(reference.mode, Mode::Warm);
        // WARM=false leaves the one-shot modes as they were.
        let mut v = ONESHOT.to_vec();
        v.push(("WARM", "false"));
        assert_eq!(parse(&v).unwrap(), parse(ONESHOT).unwrap());
        v.push(("EXECUTION_MODE", "STDIO"));
        assert_eq!(parse(&v).unwrap().mode, Mode::Stdio);
        // An empty WARM counts as unset, like every variable.
        let mut v = ONESHOT.to_vec();
        v.push(("WARM", ""));
        assert_eq!(parse(&v).unwrap().mode, Mode::Http);
    }

    #[test]
    fn warm_true_with_a_one_shot_mode_names_the_runtime_kind_as_the_original_did() {
        // The original control plane sends WARM=true plus EXECUTION_MODE=<runtimeMode>: a warm
        // watchdog talking to its runtime that way.
        for (mode, kind) in [
            ("HTTP", RuntimeKind::Http),
            ("stdio", RuntimeKind::Stdio),
            ("FILE", RuntimeKind::File),
        ] {
            let c = parse(&[
                ("WARM", "true"),
                ("EXECUTION_MODE", mode),
                ("WATCHDOG_CMD", "rt"),
                ("RUNTIME_URL", "http://127.0.0.1:9000/invoke"),
            ])
            .unwrap();
            assert_eq!(c.mode, Mode::Warm, "{mode}");
            assert_eq!(c.warm.unwrap().runtime, kind, "{mode}");
            // Saying the same thing twice is fine.
            let c = parse(&[
                ("WARM", "true"),
                ("EXECUTION_MODE", mode),
                ("WARM_RUNTIME_MODE", mode),
                ("WATCHDOG_CMD", "rt"),
                ("RUNTIME_URL", "http://127.0.0.1:9000/invoke"),
            ])
            .unwrap();
            assert_eq!(c.warm.unwrap().runtime, kind);
        }
    }

    #[test]
    fn contradicting_warm_switches_are_errors() {
        let (var, msg) = err_var(&[
            ("WARM", "false"),
            ("EXECUTION_MODE", "WARM"),
            ("WATCHDOG_CMD", "rt"),
        ]);
        assert_eq!(var, "WARM");
        assert!(
            msg.contains("contradict") && msg.contains("EXECUTION_MODE=WARM"),
            "{msg}"
        );
        let (var, msg) = err_var(&[
            ("WARM", "true"),
            ("EXECUTION_MODE", "STDIO"),
            ("WARM_RUNTIME_MODE", "HTTP"),
            ("WATCHDOG_CMD", "rt"),
            ("RUNTIME_URL", "http://127.0.0.1:9000/invoke"),
        ]);
        assert_eq!(var, "WARM_RUNTIME_MODE");
        assert!(msg.contains("EXECUTION_MODE=STDIO"), "{msg}");
        for bad in ["maybe", "2", "t", "enabled"] {
            let mut v = ONESHOT.to_vec();
            v.push(("WARM", bad));
            let (var, msg) = err_var(&v);
            assert_eq!(var, "WARM", "WARM={bad}");
            assert!(msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn callback_backoff_doubles_and_caps() {
        let p = CallbackPolicy {
            max_attempts: 5,
            attempt_timeout: Duration::from_secs(1),
            first_backoff: Duration::from_millis(100),
            max_backoff: CALLBACK_MAX_BACKOFF,
        };
        let ms: Vec<u128> = (2..=7).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000]);
    }
}
