//! `FunctionSpec`: what a user registers, its documented defaults and its validation.
//!
//! Parsing rejects unknown fields; [`FunctionSpec::from_json`] reports the JSON path of the field
//! that failed. [`FunctionSpec::validate`] checks what types cannot: ranges, formats and which
//! fields each execution mode needs. What a particular provider needs (a `command` for the process
//! provider, an `image` for containers) is checked by the control plane, which knows the provider.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Documented defaults of every optional spec field.
pub mod defaults {
    pub const TIMEOUT_MS: u64 = 30_000;
    pub const CONCURRENCY: u32 = 4;
    pub const QUEUE_SIZE: u32 = 100;
    /// Attempts in all, the first one included.
    pub const MAX_RETRIES: u32 = 3;
    pub const MIN_INSTANCES: u32 = 0;
    pub const MAX_INSTANCES: u32 = 4;
    pub const IDLE_TIMEOUT_MS: u64 = 300_000;
    /// 0 = an instance is never recycled for its invocation count.
    pub const MAX_INVOCATIONS: u64 = 0;
    pub const INSTANCE_CONCURRENCY: u32 = 1;
}

/// Upper bounds enforced by validation.
pub mod limits {
    pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
    pub const MAX_CONCURRENCY: u32 = 10_000;
    pub const MAX_QUEUE_SIZE: u32 = 1_000_000;
    pub const MAX_RETRIES: u32 = 10;
    pub const MAX_INSTANCES: u32 = 1_000;
    pub const MAX_INSTANCE_CONCURRENCY: u32 = 1_000;
    pub const MAX_ENV_VARS: usize = 256;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExecutionMode {
    /// A managed warm pool through the configured provider.
    #[default]
    Deployment,
    /// An external endpoint the user runs (`endpointUrl`).
    Pool,
    /// One fresh instance per invocation, completed by callback.
    Job,
}

impl ExecutionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "DEPLOYMENT",
            Self::Pool => "POOL",
            Self::Job => "JOB",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuntimeMode {
    /// The runtime is an HTTP server speaking the runtime contract.
    #[default]
    Http,
    /// The command reads the request on stdin and writes the output on stdout.
    Stdio,
    /// The command reads `INPUT_FILE` and writes `OUTPUT_FILE`.
    File,
}

impl RuntimeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Stdio => "STDIO",
            Self::File => "FILE",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU as Kubernetes writes it: `"500m"`, `"1"`, `"1.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory as Kubernetes writes it: `"128Mi"`, `"1Gi"`, `"500M"`, `"1048576"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A registered function. Field names are camelCase on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: String,
    /// Container image (docker provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Local command line of the runtime (process provider): a string split like a shell
    /// would (quotes, no expansion) or an array of arguments.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "command_from_string_or_list"
    )]
    pub command: Option<Vec<String>>,
    /// Working directory of `command` (process provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Invocations of this function running at once, all instances together.
    #[serde(default = "d_concurrency")]
    pub concurrency: u32,
    /// Invocations waiting for a free slot before new ones are refused.
    #[serde(default = "d_queue")]
    pub queue_size: u32,
    /// Attempts in all (first one included) for retryable failures.
    #[serde(default = "d_retries")]
    pub max_retries: u32,
    /// Whether an asynchronous invocation whose function failed (an error or a timeout) is
    /// retried, up to `max_retries` attempts. Off by default, as in OpenWhisk: code that is not
    /// idempotent runs once unless asked (platform failures are retried either way).
    #[serde(default)]
    pub retry_function_errors: bool,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    #[serde(default)]
    pub runtime_mode: RuntimeMode,
    /// Command the watchdog runs inside an image, overriding the image's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_command: Option<String>,
    /// `POOL` mode: the URL invocations are posted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default = "d_min")]
    pub min_instances: u32,
    #[serde(default = "d_max")]
    pub max_instances: u32,
    #[serde(default = "d_idle")]
    pub idle_timeout_ms: u64,
    #[serde(default = "d_max_inv")]
    pub max_invocations: u64,
    #[serde(default = "d_inst_conc")]
    pub instance_concurrency: u32,
    /// Optional per-function rate limit (invocations per second, burst of one second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<f64>,
}

fn d_timeout() -> u64 {
    defaults::TIMEOUT_MS
}
fn d_concurrency() -> u32 {
    defaults::CONCURRENCY
}
fn d_queue() -> u32 {
    defaults::QUEUE_SIZE
}
fn d_retries() -> u32 {
    defaults::MAX_RETRIES
}
fn d_min() -> u32 {
    defaults::MIN_INSTANCES
}
fn d_max() -> u32 {
    defaults::MAX_INSTANCES
}
fn d_idle() -> u64 {
    defaults::IDLE_TIMEOUT_MS
}
fn d_max_inv() -> u64 {
    defaults::MAX_INVOCATIONS
}
fn d_inst_conc() -> u32 {
    defaults::INSTANCE_CONCURRENCY
}

fn command_from_string_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cmd {
        Line(String),
        Argv(Vec<String>),
    }
    match Option::<Cmd>::deserialize(d)? {
        None => Ok(None),
        Some(Cmd::Argv(v)) => Ok(Some(v)),
        Some(Cmd::Line(s)) => crate::command::split(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// JSON path of the field, e.g. `timeoutMs` or `resources.memory`; empty for the whole body.
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ValidationError {}

impl FunctionSpec {
    /// A spec with every default and the given name (used by tests and tools).
    pub fn named(name: impl Into<String>) -> Self {
        serde_json::from_value(serde_json::json!({ "name": name.into() }))
            .expect("defaults deserialize")
    }

    /// Parses a JSON body, naming the failing field, then validates it.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let spec: FunctionSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            ValidationError::new(field, strip_position(&e.into_inner().to_string()))
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks ranges, formats and the fields each execution mode needs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err = |f: &str, r: String| Err(ValidationError::new(f, r));
        if let Err(r) = crate::validate_name(&self.name) {
            return err("name", r);
        }
        if !(1..=limits::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return err(
                "timeoutMs",
                format!("must be between 1 and {}", limits::MAX_TIMEOUT_MS),
            );
        }
        if !(1..=limits::MAX_CONCURRENCY).contains(&self.concurrency) {
            return err(
                "concurrency",
                format!("must be between 1 and {}", limits::MAX_CONCURRENCY),
            );
        }
        if self.queue_size > limits::MAX_QUEUE_SIZE {
            return err(
                "queueSize",
                format!("must be at most {}", limits::MAX_QUEUE_SIZE),
            );
        }
        if !(1..=limits::MAX_RETRIES).contains(&self.max_retries) {
            return err(
                "maxRetries",
                format!(
                    "counts attempts in all and must be between 1 and {}",
                    limits::MAX_RETRIES
                ),
            );
        }
        if self.retry_function_errors && self.max_retries < 2 {
            return err(
                "retryFunctionErrors",
                "retries nothing with maxRetries 1 (it counts attempts in all): set maxRetries to 2 or more".into(),
            );
        }
        if !(1..=limits::MAX_INSTANCES).contains(&self.max_instances) {
            return err(
                "maxInstances",
                format!("must be between 1 and {}", limits::MAX_INSTANCES),
            );
        }
        if self.min_instances > self.max_instances {
            return err(
                "minInstances",
                format!("must not exceed maxInstances ({})", self.max_instances),
            );
        }
        if !(1..=limits::MAX_INSTANCE_CONCURRENCY).contains(&self.instance_concurrency) {
            return err(
                "instanceConcurrency",
                format!("must be between 1 and {}", limits::MAX_INSTANCE_CONCURRENCY),
            );
        }
        if let Some(r) = self.rate_limit_per_second {
            if !(r.is_finite() && r > 0.0) {
                return err("rateLimitPerSecond", "must be a positive number".into());
            }
        }
        if self.env.len() > limits::MAX_ENV_VARS {
            return err("env", format!("at most {} variables", limits::MAX_ENV_VARS));
        }
        for (k, v) in &self.env {
            if !is_env_name(k) {
                return err(
                    &format!("env.{k}"),
                    "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)".into(),
                );
            }
            if v.contains('\0') {
                return err(&format!("env.{k}"), "must not contain a NUL byte".into());
            }
            if let Some(why) = reserved_env(k) {
                return err(
                    &format!("env.{k}"),
                    format!("is reserved: {why}; choose another name"),
                );
            }
        }
        if let Some(res) = &self.resources {
            if let Some(cpu) = &res.cpu {
                if let Err(r) = parse_cpu_millis(cpu) {
                    return err("resources.cpu", r);
                }
            }
            if let Some(mem) = &res.memory {
                if let Err(r) = parse_memory_bytes(mem) {
                    return err("resources.memory", r);
                }
            }
        }
        if let Some(cmd) = &self.command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return err("command", "must name a program".into());
            }
            if cmd.iter().any(|a| a.contains('\0')) {
                return err("command", "must not contain a NUL byte".into());
            }
        }
        if let Some(img) = &self.image {
            if img.trim().is_empty() || img.chars().any(char::is_whitespace) {
                return err("image", "must be an image reference without spaces".into());
            }
        }
        if let Some(rc) = &self.runtime_command {
            if let Err(r) = crate::command::split(rc) {
                return err("runtimeCommand", r);
            }
        }
        match self.execution_mode {
            ExecutionMode::Pool => match &self.endpoint_url {
                None => {
                    return err(
                        "endpointUrl",
                        "is required when executionMode is POOL".into(),
                    )
                }
                Some(u) => {
                    if let Err(r) = check_http_url(u) {
                        return err("endpointUrl", r);
                    }
                }
            },
            ExecutionMode::Deployment | ExecutionMode::Job => {
                if self.command.is_none() && self.image.is_none() {
                    return err(
                        "command",
                        format!(
                            "a command (process provider) or an image (container providers) is required when executionMode is {}",
                            self.execution_mode.as_str()
                        ),
                    );
                }
                if self.endpoint_url.is_some() {
                    return err(
                        "endpointUrl",
                        "is only allowed when executionMode is POOL".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Prefixes of environment variables the platform sets or its watchdog reads.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["NANOFAAS_", "WARM_", "WATCHDOG_", "CALLBACK_"];

/// Environment variables the platform sets for an instance (providers) or that configure its
/// watchdog; a spec may not name them, since they would be overridden or would change how the
/// platform drives the instance.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "EXECUTION_MODE",
    "EXECUTION_ID",
    "TRACE_ID",
    "TRACEPARENT",
    "DISPATCH_ATTEMPT",
    "TIMEOUT_MS",
    "RUNTIME_URL",
    "RUNTIME_HEALTH_URL",
    "PORT",
    "INVOCATION_PAYLOAD",
    "INPUT_FILE",
    "OUTPUT_FILE",
    "MAX_PAYLOAD_BYTES",
];

/// Why `name` may not appear in a spec's `env`, or `None` when it may.
pub fn reserved_env(name: &str) -> Option<String> {
    if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Some(format!("variables starting with {p} are set by nanofaas"));
    }
    RESERVED_ENV_NAMES
        .contains(&name)
        .then(|| "nanofaas sets this variable for every instance".to_string())
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `http://host[:port][/path]` (https is refused: nanofaas speaks plain HTTP to instances).
pub fn check_http_url(u: &str) -> Result<(), String> {
    let Some(rest) = u.strip_prefix("http://") else {
        return Err(format!("{u:?} must start with http://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{u:?} has no host"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{u:?} contains white space"));
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{u:?} has an invalid port"));
        }
    }
    Ok(())
}

/// `"500m"` → 500, `"2"` → 2000, `"0.5"` → 500.
pub fn parse_cpu_millis(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a CPU quantity (examples: \"500m\", \"1\", \"1.5\")");
    let v = if let Some(m) = s.strip_suffix('m') {
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let f: f64 = s.parse().map_err(|_| bad())?;
        if !f.is_finite() || f < 0.0 {
            return Err(bad());
        }
        (f * 1000.0).round() as u64
    };
    if v == 0 {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(v)
}

/// `"128Mi"` → 134217728; accepts Ki/Mi/Gi/Ti, K/M/G/T and plain bytes.
pub fn parse_memory_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a memory quantity (examples: \"128Mi\", \"1Gi\", \"500M\")");
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((s, 1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v < 4 * 1024 * 1024 {
        return Err(format!("{s:?} is below the 4Mi minimum"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<FunctionSpec, ValidationError> {
        FunctionSpec::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = parse(serde_json::json!({"name": "f", "command": "./run"})).unwrap();
        assert_eq!(s.timeout_ms, 30_000);
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.queue_size, 100);
        assert_eq!(s.max_retries, 3);
        assert!(
            !s.retry_function_errors,
            "function errors are not retried by default"
        );
        assert_eq!(s.execution_mode, ExecutionMode::Deployment);
        assert_eq!(s.runtime_mode, RuntimeMode::Http);
        assert_eq!(s.command, Some(vec!["./run".to_string()]));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                serde_json::json!({"name": "f", "command": "x", "bogus": 1}),
                "bogus",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "timeoutMs": "x"}),
                "timeoutMs",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "timeoutMs": 0}),
                "timeoutMs",
            ),
            (serde_json::json!({"name": "9f", "command": "x"}), "name"),
            (serde_json::json!({"name": "f"}), "command"),
            (
                serde_json::json!({"name": "f", "executionMode": "POOL"}),
                "endpointUrl",
            ),
            (
                serde_json::json!({"name": "f", "executionMode": "POOL", "endpointUrl": "ftp://x"}),
                "endpointUrl",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "executionMode": "LAMBDA"}),
                "executionMode",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "minInstances": 5, "maxInstances": 2}),
                "minInstances",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "resources": {"memory": "lots"}}),
                "resources.memory",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "env": {"1X": "a"}}),
                "env.1X",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "env": {"WARM_PORT": "1"}}),
                "env.WARM_PORT",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "env": {"NANOFAAS_CALLBACK_SECRET": "a"}}),
                "env.NANOFAAS_CALLBACK_SECRET",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "env": {"EXECUTION_MODE": "JOB"}}),
                "env.EXECUTION_MODE",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "maxRetries": 0}),
                "maxRetries",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "retryFunctionErrors": "yes"}),
                "retryFunctionErrors",
            ),
            (
                serde_json::json!({"name": "f", "command": "x", "retryFunctionErrors": true, "maxRetries": 1}),
                "retryFunctionErrors",
            ),
            (
                serde_json::json!({"name": "f", "command": "'unclosed"}),
                "command",
            ),
        ];
        for (body, field) in cases {
            let e = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(!e.reason.contains(" at line "), "{e}");
        }
        let e = parse(serde_json::json!({"name": "f", "command": "x", "bogus": 1})).unwrap_err();
        assert!(e.reason.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn reserved_environment_names() {
        for k in [
            "NANOFAAS_X",
            "WARM_SOCKET",
            "WATCHDOG_CMD",
            "CALLBACK_TOKEN",
            "PORT",
            "TRACE_ID",
        ] {
            assert!(reserved_env(k).is_some(), "{k}");
        }
        for k in [
            "GREETING",
            "PORTS",
            "MY_PORT",
            "HOME",
            "nanofaas_x",
            "HANDLER_MODULE",
        ] {
            assert_eq!(reserved_env(k), None, "{k}");
        }
        let e =
            parse(serde_json::json!({"name": "f", "command": "x", "env": {"WATCHDOG_CMD": "sh"}}))
                .unwrap_err();
        assert!(
            e.reason.contains("reserved") && e.reason.contains("WATCHDOG_"),
            "{e}"
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert!(parse_cpu_millis("0").is_err());
        assert!(parse_cpu_millis("fast").is_err());
        assert_eq!(parse_memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert!(parse_memory_bytes("1Ki").is_err());
        assert!(parse_memory_bytes("99999999999999Ti").is_err());
    }

    #[test]
    fn pool_spec() {
        let s = parse(serde_json::json!({
            "name": "p", "executionMode": "POOL", "endpointUrl": "http://127.0.0.1:9/invoke"
        }))
        .unwrap();
        assert_eq!(s.execution_mode, ExecutionMode::Pool);
        let round: FunctionSpec =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(round, s);
    }
}
