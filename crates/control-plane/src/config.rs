//! Configuration of the control plane: defaults, an optional TOML file, `NANOFAAS_*` environment
//! variables and command-line overrides, applied in that order.
//!
//! Every setting is listed once in [`SETTINGS`] with its default and meaning; the environment
//! variable of `a.b_c` is `NANOFAAS_A_B_C`. The docs' configuration reference is checked against
//! this table by a test, and a unit test checks the table's defaults against [`Config::default`].

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One documented setting.
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

impl Setting {
    pub fn env_var(&self) -> String {
        format!(
            "NANOFAAS_{}",
            self.key.replace('.', "_").to_ascii_uppercase()
        )
    }
}

macro_rules! settings {
    ($($key:literal = $default:literal : $doc:literal,)*) => {
        /// Every configuration setting, its default (as TOML) and what it does.
        pub const SETTINGS: &[Setting] = &[$(Setting { key: $key, default: $default, doc: $doc },)*];
    };
}

settings! {
    "listen" = "\"127.0.0.1:8080\"" : "Address and port the API listens on (port 0 picks a free port).",
    "worker_threads" = "0" : "Threads serving the API, each with its own event loop; a connection and all its requests stay on one of them. 0 = half the CPUs (at least one), leaving the rest to the function instances that run on the same machine.",
    "max_body_bytes" = "6291456" : "Largest request body accepted (bytes); larger ones get 413.",
    "max_output_bytes" = "6291456" : "Largest function output accepted (bytes); larger outputs fail the execution with FUNCTION_ERROR.",
    "shutdown_grace_ms" = "30000" : "On SIGTERM/SIGINT, how long running executions may take to finish before instances are stopped anyway.",
    "log_level" = "\"info\"" : "Log level: error, warn, info, debug or trace; or a filter such as \"info,nanofaas::execution=warn\".",
    "log_format" = "\"text\"" : "Log format: text or json (one JSON object per line).",
    "callback_secret" = "\"\"" : "Secret that signs callback tokens. Empty: a random secret per start (callbacks minted before a restart are then refused).",
    "callback_base_url" = "\"\"" : "Base URL instances post callbacks to ({base}/{executionId}:complete). Empty: derived from the bound listen address.",
    "state_dir" = "\".nanofaas/state\"" : "Folder for what survives a restart: function specs, the journal of accepted async invocations, instance markers. Empty: keep nothing (functions and queued async work are lost on restart).",
    "journal_fsync" = "false" : "Flush each journal record to disk before answering 202 (survives a machine crash, not just a process crash; slower).",
    "executions.ttl_ms" = "600000" : "How long a finished execution stays visible (and its idempotency key remembered).",
    "executions.max_records" = "100000" : "Most execution records kept; the oldest finished ones are dropped first.",
    "executions.max_payload_bytes" = "67108864" : "Most output bytes kept across all finished executions; the oldest are dropped first.",
    "executions.sweep_interval_ms" = "1000" : "How often expired executions and idempotency keys are dropped.",
    "admission.global_rate_per_second" = "0.0" : "Invocations accepted per second over all functions (burst: one second's worth); 0 = unlimited.",
    "admission.retry_backoff_ms" = "50" : "Delay before the second attempt of a retried execution; doubles on each further attempt.",
    "admission.retry_backoff_max_ms" = "2000" : "Longest delay between two attempts.",
    "dispatch.connect_timeout_ms" = "2000" : "Timeout for opening a connection to an instance or endpoint.",
    "dispatch.idle_connection_timeout_ms" = "60000" : "Idle keep-alive connections to instances are closed after this long.",
    "dispatch.max_idle_connections_per_host" = "256" : "Most idle keep-alive connections kept per instance or endpoint.",
    "provider.type" = "\"process\"" : "What starts instances of DEPLOYMENT and JOB functions: process (local child processes), docker (containers on a Docker or Podman engine), kubernetes (pods in a Kubernetes cluster) or none (POOL functions only).",
    "provider.startup_timeout_ms" = "30000" : "How long an instance may take to become ready; a dispatch waits at most this long (or the function's timeout if longer) for one.",
    "provider.stop_grace_ms" = "5000" : "How long a stopping instance may take to finish its invocation before it is killed.",
    "provider.log_lines_per_second" = "100" : "Lines of each instance's output forwarded to the log per second; the rest are counted and dropped.",
    "provider.process.watchdog" = "\"\"" : "Path of nanofaas-watchdog. Empty: next to the nanofaas binary, else on PATH.",
    "provider.process.bind" = "\"127.0.0.1\"" : "Address instances of the process provider listen on.",
    "provider.process.unix_socket" = "true" : "Reach each instance's watchdog over a Unix socket (a name in Linux's abstract namespace) instead of its loopback TCP port, and offer the runtime one too (used if the runtime serves it, as the Rust SDK does): the same HTTP, without the TCP stack. The ports stay open for checks by hand. false: TCP only.",
    "provider.process.env_allow" = "\"PATH,LANG,LANGUAGE,LC_*,TZ,TMPDIR\"" : "Variables of the control plane's environment that instances of the process provider inherit (comma-separated names; NAME* matches a prefix). Nothing else passes: instances start from a clean environment, then get the spec's env and the platform's own variables.",
    "provider.process.user" = "\"auto\"" : "Who process instances run as. auto: when the control plane runs as root, each instance as a user id of its own from provider.process.uid_range (no entry in the user database needed), else as the control plane's user; dynamic: always a user id of its own (needs root); inherit: as the control plane's user (not recommended as root); or a user name, uid or uid:gid shared by every instance (needs root).",
    "provider.process.uid_range" = "\"2000000000-2000065535\"" : "User ids (first-last) given to instances with user auto or dynamic; group id = user id. Pick ids no one else uses.",
    "provider.process.max_open_files" = "16384" : "RLIMIT_NOFILE (soft and hard) of every process instance; 0 = inherited.",
    "provider.process.max_processes" = "4096" : "Processes and threads per instance: RLIMIT_NPROC (counted per user id, so per instance with users of their own) and, when instances share a user id, their cgroup's pids.max where the pids controller is available; 0 = no limit set.",
    "provider.process.limits" = "\"enforce\"" : "What the process provider does with resources.memory and resources.cpu it cannot enforce (no cgroup access: not root, no delegation): enforce refuses such specs with 400 naming the field; best-effort accepts them, logs a warning and runs them unlimited.",
    "provider.process.cgroup_parent" = "\"\"" : "Folder, relative to each cgroup hierarchy's root, under which instance cgroups are created (<parent>/cp-<pid>-<start>/<instance>). Empty: nanofaas below the control plane's own cgroup (cgroup v2: at the top of the hierarchy when the own cgroup cannot delegate controllers).",
    "provider.process.prewarm" = "1" : "Prewarmed instances kept per runtime kind (a function's command with runtimeMode HTTP and executionMode DEPLOYMENT): started, healthy and generic, one is taken and specialized for a function by its cold start instead of starting one, and replaced in the background. 0 turns prewarming off; at most 16. A runtime that cannot be specialized (it does not answer POST /_nanofaas/specialize) is started cold as before, and its kind is not prewarmed again.",
    // --- docker provider (provider/docker/) ---
    "provider.docker.socket" = "\"\"" : "Container engine API socket: a path or unix:// URL. Empty: DOCKER_HOST when it is a unix:// URL, else /var/run/docker.sock. Podman's Docker-compatible socket works too.",
    "provider.docker.network" = "\"\"" : "Network warm and JOB containers join (e.g. a user-defined bridge). Empty: the engine's default bridge. JOB containers whose callback URL is a loopback address use the host's network instead, so that the URL works as is.",
    "provider.docker.address" = "\"auto\"" : "How the control plane reaches a warm container: auto (the container's address if this host reaches it, found with the first container, else published), published (the watchdog's port 8080 published on 127.0.0.1 at a port the engine picks; works with every engine, through the engine's port proxy) or container (the container's IP on its network, port 8080; one proxy hop less, about half the time of a warm call; needs the control plane on the engine's Linux host or on that network).",
    "provider.docker.pull" = "\"missing\"" : "Whether an image the engine does not have is pulled before its first container: missing (pull it) or never (fail the start with STARTUP_ERROR).",
    "provider.docker.api_timeout_ms" = "30000" : "Timeout of one call to the container engine (image pulls excepted: up to 10 minutes).",
    "provider.docker.prewarm" = "1" : "Generic containers kept per image (of DEPLOYMENT functions with runtimeMode HTTP; the image, its runtimeCommand, instanceConcurrency and timeoutMs make the kind): created, started and healthy with the watchdog waiting, one is taken by a cold start, gets the function's memory and CPU limits (the engine's update) and then its environment (POST /specialize), and is replaced in the background; the engine's create and start are skipped. Each distinct image holds that many idle containers. 0 turns it off; at most 16. An image whose runtime cannot be specialized is started cold as before.",
    // --- end docker provider ---
    // --- kubernetes provider (provider/kubernetes/, docs/kubernetes.md) ---
    "provider.kubernetes.kubeconfig" = "\"\"" : "Kubeconfig file the kubernetes provider uses. Empty: the pod's service account when the control plane runs in a cluster (KUBERNETES_SERVICE_HOST set), else KUBECONFIG, else ~/.kube/config.",
    "provider.kubernetes.context" = "\"\"" : "Context of the kubeconfig to use. Empty: its current context.",
    "provider.kubernetes.namespace" = "\"\"" : "Namespace of instance pods. Empty: the service account's namespace in a cluster, else the context's, else default.",
    "provider.kubernetes.pull_policy" = "\"IfNotPresent\"" : "imagePullPolicy of instance pods: Always, IfNotPresent or Never.",
    "provider.kubernetes.pull_secrets" = "[]" : "Names of the image pull secrets (in the instances' namespace) every pod gets: a list, or names separated by commas.",
    "provider.kubernetes.watchdog_port" = "8080" : "Port the watchdog serves on inside instance pods; the control plane reaches a pod at its IP and this port.",
    "provider.kubernetes.api_qps" = "20.0" : "Requests per second the provider sends to the Kubernetes API at most (a token bucket over every request, watches included); 0 = unlimited.",
    "provider.kubernetes.api_burst" = "40" : "Requests the provider may send at once above provider.kubernetes.api_qps before it waits (the token bucket's size).",
    "provider.kubernetes.labels" = "{}" : "Labels added to every instance pod: a table, or KEY=VALUE pairs separated by commas.",
    "provider.kubernetes.annotations" = "{}" : "Annotations added to every instance pod: a table, or KEY=VALUE pairs separated by commas.",
    "provider.kubernetes.callback_url" = "\"\"" : "Base URL JOB pods post their result to, such as http://nanofaas.nanofaas.svc:8080 (the control plane's Service); the callback path is appended. Empty: callback_base_url (or the listen address), which a pod can reach only if it is routable from the cluster.",
    "provider.kubernetes.watch_timeout_s" = "290" : "How long one watch request of the pod watch lasts (its timeoutSeconds, at most 294) before the provider renews it from the last resourceVersion; a version the API server no longer has (410 Gone) makes it list again.",
    "provider.kubernetes.owner" = "\"\"" : "This control plane's id in the nanofaas.dev/owner label of its pods; at start it deletes every pod of that label it does not know. Empty: POD_NAME (set from the downward API in a cluster), else the host name. Give two control planes sharing a namespace different ids.",
    "provider.kubernetes.unschedulable_grace_ms" = "0" : "How long a starting pod may stay unschedulable (PodScheduled=False, reason Unschedulable) before its start fails with the scheduler's reason; 0 = wait the whole provider.startup_timeout_ms (a cluster autoscaler may add a node meanwhile).",
    "provider.kubernetes.follow_logs" = "true" : "Follow each instance pod's log (pods/log, follow=true) and hand its lines to the logs of executions and functions; false: no log stream per pod (output is then only in the cluster's own logging).",
    // --- end kubernetes provider ---
    // --- API access (access.rs, docs/security.md) ---
    "api.tokens" = "[]" : "Bearer tokens of the API, as SHA-256 hashes with a role (admin, deployer, invoker, viewer) and, for invokers, optional function-name patterns: a list of tables {role, sha256, functions}, or entries ROLE:SHA256[:PATTERN,...] separated by spaces (handy in the environment). `nanofaas token create` makes one. Empty: no authentication, and the API may listen on loopback only.",
    "api.allowed_hosts" = "[]" : "Host names (besides localhost, *.localhost and IP addresses) that requests may name in their Host header; others get 421 (against DNS rebinding). A list, or names separated by commas. \"*\" allows any name (behind a proxy that checks it).",
    "api.allowed_origins" = "[]" : "Web origins (such as https://app.example.com) whose pages may call the API; they get CORS answers. A request with any other Origin header gets 403. A list, or origins separated by commas.",
    "api.protect_metrics" = "false" : "With tokens configured, GET /metrics needs a token of a role that may read metrics (admin, deployer, viewer). false: /metrics stays open like the health probes.",
    "api.insecure_no_auth" = "false" : "Allow listening on a non-loopback address with no tokens configured: anyone who can reach the port can then run commands. Also the flag --insecure-no-auth.",
    "api.tls_cert" = "\"\"" : "PEM file of the API's TLS certificate chain; with api.tls_key, the API is served over HTTPS only. Empty: plain HTTP.",
    "api.tls_key" = "\"\"" : "PEM file of the private key of api.tls_cert (PKCS#8, PKCS#1 or SEC1).",
    // --- end API access ---
    "pool.health_check_interval_ms" = "10000" : "How often idle instances are health-checked; 0 = never.",
    "pool.start_backoff_ms" = "500" : "Delay after an instance fails to start before another start is tried; doubles with each consecutive failure.",
    "pool.start_backoff_max_ms" = "30000" : "Longest delay between start attempts of a function whose instances keep failing.",
    "pool.timeout_grace_ms" = "1000" : "Extra time given to an instance beyond the function's timeout to report the timeout itself (it then restarts its runtime and stays in service).",
    // --- traces (trace.rs, otlp.rs, docs/observability.md#traces) ---
    "telemetry.otlp_endpoint" = "\"\"" : "Collector that receives every execution's trace over OTLP/HTTP with JSON encoding: an http:// URL, to which /v1/traces is added when it has no path. Empty: no export (traces are still served by GET /v1/executions/{id}/trace).",
    "telemetry.otlp_queue" = "4096" : "Finished executions waiting to be exported; when the collector is slow or down and the queue is full, further traces are dropped and counted in nanofaas_traces_dropped_total.",
    // --- end traces ---
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub worker_threads: usize,
    pub max_body_bytes: usize,
    pub max_output_bytes: usize,
    pub shutdown_grace_ms: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    pub callback_secret: String,
    pub callback_base_url: String,
    pub state_dir: String,
    pub journal_fsync: bool,
    pub executions: ExecutionsConfig,
    pub admission: AdmissionConfig,
    pub dispatch: DispatchConfig,
    pub provider: ProviderConfig,
    pub pool: PoolConfig,
    pub api: ApiConfig,
    pub telemetry: TelemetryConfig,
}

/// `telemetry.*`: export of traces (`otlp.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub otlp_endpoint: String,
    pub otlp_queue: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_queue: 4096,
        }
    }
}

/// `api.*`: who may call the API and how it is served (see [`crate::access`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    #[serde(deserialize_with = "tokens_de")]
    pub tokens: Vec<TokenConfig>,
    #[serde(deserialize_with = "list_de")]
    pub allowed_hosts: Vec<String>,
    #[serde(deserialize_with = "list_de")]
    pub allowed_origins: Vec<String>,
    pub protect_metrics: bool,
    pub insecure_no_auth: bool,
    pub tls_cert: String,
    pub tls_key: String,
}

/// One configured API token: its role, the SHA-256 of the token (hex) and, for invokers, the
/// function-name patterns it may use (empty: all).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub role: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

impl TokenConfig {
    /// `ROLE:SHA256[:PATTERN,...]`.
    pub fn parse_entry(s: &str) -> Result<TokenConfig, String> {
        let mut parts = s.splitn(3, ':');
        let role = parts.next().unwrap_or("").trim();
        let sha = parts.next().unwrap_or("").trim();
        if role.is_empty() || sha.is_empty() {
            return Err(format!(
                "token entry {s:?} must be ROLE:SHA256 or ROLE:SHA256:PATTERN,..."
            ));
        }
        let functions = parts
            .next()
            .map(|f| {
                f.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(TokenConfig {
            role: role.into(),
            sha256: sha.to_ascii_lowercase(),
            functions,
        })
    }

    /// The entry form of this token.
    pub fn entry(&self) -> String {
        let mut s = format!("{}:{}", self.role, self.sha256);
        if !self.functions.is_empty() {
            s.push(':');
            s.push_str(&self.functions.join(","));
        }
        s
    }
}

/// A list given as a TOML array or as one string of items separated by commas or spaces.
fn list_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        One(String),
        Many(Vec<String>),
    }
    Ok(match L::deserialize(d)? {
        L::One(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
        L::Many(v) => v,
    })
}

/// A string map given as a TOML table or as one string of `KEY=VALUE` pairs separated by commas.
fn map_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum M {
        One(String),
        Many(std::collections::BTreeMap<String, String>),
    }
    match M::deserialize(d)? {
        M::Many(m) => Ok(m),
        M::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(serde::de::Error::custom(format!("{kv:?} is not KEY=VALUE"))),
            })
            .collect(),
    }
}

fn tokens_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TokenConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum T {
        Entry(String),
        Table(TokenConfig),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        One(String),
        Many(Vec<T>),
    }
    let entries: Vec<T> = match L::deserialize(d)? {
        L::One(s) => s
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(|x| T::Entry(x.to_string()))
            .collect(),
        L::Many(v) => v,
    };
    entries
        .into_iter()
        .map(|t| match t {
            T::Entry(s) => TokenConfig::parse_entry(&s).map_err(serde::de::Error::custom),
            T::Table(t) => Ok(t),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    pub startup_timeout_ms: u64,
    pub stop_grace_ms: u64,
    pub log_lines_per_second: u32,
    pub process: ProcessConfig,
    pub docker: DockerConfig,
    pub kubernetes: KubernetesConfig,
}

/// `provider.kubernetes.*` (see the kubernetes provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub kubeconfig: String,
    pub context: String,
    pub namespace: String,
    pub pull_policy: PullPolicy,
    #[serde(deserialize_with = "list_de")]
    pub pull_secrets: Vec<String>,
    pub watchdog_port: u16,
    pub api_qps: f64,
    pub api_burst: u32,
    #[serde(deserialize_with = "map_de")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(deserialize_with = "map_de")]
    pub annotations: std::collections::BTreeMap<String, String>,
    pub callback_url: String,
    pub watch_timeout_s: u32,
    pub owner: String,
    pub unschedulable_grace_ms: u64,
    pub follow_logs: bool,
}

/// `provider.type`: which backend runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Process,
    Docker,
    Kubernetes,
    /// No instances: only `POOL` functions.
    None,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Process => "process",
            ProviderKind::Docker => "docker",
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::None => "none",
        }
    }
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// `provider.docker.address`: how the control plane reaches a warm container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerAddress {
    /// The container's address when this host reaches it (tried with the first container that
    /// starts), else published.
    Auto,
    Published,
    Container,
}

/// `provider.docker.pull`: whether a missing image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerPull {
    Never,
    Missing,
}

/// `provider.process.limits`: what the process provider does with limits it cannot enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitsMode {
    /// Refuse such specs (400 naming the field).
    Enforce,
    /// Accept them, warn, and run them unlimited.
    BestEffort,
}

/// `provider.kubernetes.pull_policy`: the pods' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: String::new(),
            context: String::new(),
            namespace: String::new(),
            pull_policy: PullPolicy::IfNotPresent,
            pull_secrets: Vec::new(),
            watchdog_port: 8080,
            api_qps: 20.0,
            api_burst: 40,
            labels: Default::default(),
            annotations: Default::default(),
            callback_url: String::new(),
            watch_timeout_s: 290,
            owner: String::new(),
            unschedulable_grace_ms: 0,
            follow_logs: true,
        }
    }
}

/// `provider.docker.*` (see the docker provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    pub socket: String,
    pub network: String,
    pub address: DockerAddress,
    pub pull: DockerPull,
    pub api_timeout_ms: u64,
    pub prewarm: u32,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: String::new(),
            network: String::new(),
            address: DockerAddress::Auto,
            pull: DockerPull::Missing,
            api_timeout_ms: 30_000,
            prewarm: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    pub watchdog: String,
    pub bind: String,
    pub unix_socket: bool,
    pub env_allow: String,
    pub user: String,
    pub uid_range: String,
    pub max_open_files: u64,
    pub max_processes: u64,
    pub limits: LimitsMode,
    pub cgroup_parent: String,
    pub prewarm: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub health_check_interval_ms: u64,
    pub start_backoff_ms: u64,
    pub start_backoff_max_ms: u64,
    pub timeout_grace_ms: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Process,
            startup_timeout_ms: 30_000,
            stop_grace_ms: 5000,
            log_lines_per_second: 100,
            process: ProcessConfig::default(),
            docker: DockerConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            watchdog: String::new(),
            bind: "127.0.0.1".into(),
            unix_socket: true,
            env_allow: "PATH,LANG,LANGUAGE,LC_*,TZ,TMPDIR".into(),
            user: "auto".into(),
            uid_range: "2000000000-2000065535".into(),
            max_open_files: 16384,
            max_processes: 4096,
            limits: LimitsMode::Enforce,
            cgroup_parent: String::new(),
            prewarm: 1,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            health_check_interval_ms: 10_000,
            start_backoff_ms: 500,
            start_backoff_max_ms: 30_000,
            timeout_grace_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionsConfig {
    pub ttl_ms: u64,
    pub max_records: usize,
    pub max_payload_bytes: usize,
    pub sweep_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    pub global_rate_per_second: f64,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    pub connect_timeout_ms: u64,
    pub idle_connection_timeout_ms: u64,
    pub max_idle_connections_per_host: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            worker_threads: 0,
            max_body_bytes: 6 << 20,
            max_output_bytes: 6 << 20,
            shutdown_grace_ms: 30_000,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            callback_secret: String::new(),
            callback_base_url: String::new(),
            state_dir: ".nanofaas/state".into(),
            journal_fsync: false,
            executions: ExecutionsConfig::default(),
            admission: AdmissionConfig::default(),
            dispatch: DispatchConfig::default(),
            provider: ProviderConfig::default(),
            pool: PoolConfig::default(),
            api: ApiConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for ExecutionsConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 600_000,
            max_records: 100_000,
            max_payload_bytes: 64 << 20,
            sweep_interval_ms: 1000,
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            global_rate_per_second: 0.0,
            retry_backoff_ms: 50,
            retry_backoff_max_ms: 2000,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2000,
            idle_connection_timeout_ms: 60_000,
            max_idle_connections_per_host: 256,
        }
    }
}

/// A configuration that cannot be used; the message names the source and the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), value);
            return Ok(());
        }
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError(format!("setting {key:?}: {p:?} is not a table")))?;
    }
    Ok(())
}

/// Parses a value given as text (environment or `--set`): as TOML if it is a TOML value of the
/// setting's type, else as a string.
fn parse_value(setting: &Setting, raw: &str) -> toml::Value {
    let default_is_string = setting.default.starts_with('"');
    if default_is_string {
        return toml::Value::String(raw.to_string());
    }
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

impl Config {
    /// Builds the configuration from the defaults, `file`, the environment `env` and `overrides`
    /// (`key=value` pairs from the command line), later sources winning.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", p.display()))
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        for s in SETTINGS {
            if let Some(raw) = env.get(&s.env_var()) {
                set_path(&mut table, s.key, parse_value(s, raw))?;
            }
        }
        for (k, v) in overrides {
            let s = SETTINGS.iter().find(|s| s.key == k).ok_or_else(|| {
                ConfigError(format!(
                    "unknown setting {k:?} (see the configuration reference)"
                ))
            })?;
            set_path(&mut table, s.key, parse_value(s, v))?;
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError(format!("setting {:?}: {}", e.path().to_string(), e.inner()))
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("setting {k:?}: {why}")));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address such as 127.0.0.1:8080");
        }
        if self.worker_threads > 256 {
            return bad("worker_threads", "must be at most 256");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.max_output_bytes < 1024 {
            return bad("max_output_bytes", "must be at least 1024");
        }
        if !self.telemetry.otlp_endpoint.is_empty() {
            if let Err(e) = nanofaas_api::spec::check_http_url(&self.telemetry.otlp_endpoint) {
                return bad("telemetry.otlp_endpoint", &e);
            }
        }
        if self.telemetry.otlp_queue == 0 || self.telemetry.otlp_queue > 1 << 20 {
            return bad("telemetry.otlp_queue", "must be 1 to 1048576");
        }
        if !self.callback_base_url.is_empty() {
            if let Err(e) = nanofaas_api::spec::check_http_url(&self.callback_base_url) {
                return bad("callback_base_url", &e);
            }
        }
        if self.executions.ttl_ms == 0 {
            return bad("executions.ttl_ms", "must be more than 0");
        }
        if self.executions.max_records == 0 {
            return bad("executions.max_records", "must be more than 0");
        }
        if self.executions.sweep_interval_ms == 0 {
            return bad("executions.sweep_interval_ms", "must be more than 0");
        }
        let rate = self.admission.global_rate_per_second;
        if !(rate.is_finite() && rate >= 0.0) {
            return bad(
                "admission.global_rate_per_second",
                "must be 0 or a positive number",
            );
        }
        if self.admission.retry_backoff_max_ms < self.admission.retry_backoff_ms {
            return bad(
                "admission.retry_backoff_max_ms",
                "must be at least admission.retry_backoff_ms",
            );
        }
        if self.dispatch.connect_timeout_ms == 0 {
            return bad("dispatch.connect_timeout_ms", "must be more than 0");
        }
        let k = &self.provider.kubernetes;
        if !(k.api_qps.is_finite() && k.api_qps >= 0.0) {
            return bad(
                "provider.kubernetes.api_qps",
                "must be 0 or a positive number",
            );
        }
        if k.api_qps > 0.0 && k.api_burst == 0 {
            return bad("provider.kubernetes.api_burst", "must be at least 1");
        }
        if !(1..=294).contains(&k.watch_timeout_s) {
            return bad("provider.kubernetes.watch_timeout_s", "must be 1 to 294");
        }
        if k.watchdog_port == 0 {
            return bad(
                "provider.kubernetes.watchdog_port",
                "must be a port (1-65535)",
            );
        }
        if !k.callback_url.is_empty() {
            if let Err(e) = nanofaas_api::spec::check_http_url(&k.callback_url) {
                return bad("provider.kubernetes.callback_url", &e);
            }
        }
        if self.provider.docker.api_timeout_ms == 0 {
            return bad("provider.docker.api_timeout_ms", "must be more than 0");
        }
        if self
            .provider
            .process
            .bind
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return bad(
                "provider.process.bind",
                "must be an IP address such as 127.0.0.1",
            );
        }
        if let Err(e) = parse_uid_range(&self.provider.process.uid_range) {
            return bad("provider.process.uid_range", &e);
        }
        if self.provider.process.cgroup_parent.contains("..") {
            return bad("provider.process.cgroup_parent", "must not contain ..");
        }
        if self.provider.process.prewarm > 16 {
            return bad("provider.process.prewarm", "must be at most 16");
        }
        if self.provider.docker.prewarm > 16 {
            return bad("provider.docker.prewarm", "must be at most 16");
        }
        if self.provider.startup_timeout_ms == 0 {
            return bad("provider.startup_timeout_ms", "must be more than 0");
        }
        if let Err(e) = crate::access::Access::from_config(&self.api) {
            return Err(ConfigError(e));
        }
        if self.api.tls_cert.is_empty() != self.api.tls_key.is_empty() {
            return bad(
                "api.tls_cert",
                "api.tls_cert and api.tls_key go together: set both or neither",
            );
        }
        if self.pool.start_backoff_max_ms < self.pool.start_backoff_ms {
            return bad(
                "pool.start_backoff_max_ms",
                "must be at least pool.start_backoff_ms",
            );
        }
        Ok(())
    }
}

/// Parses `provider.process.uid_range`, `first-last`: checked at load, used by the process
/// provider's sandbox.
pub fn parse_uid_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a range of user ids such as 2000000000-2000065535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || b < a || b == u32::MAX {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(v: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
        key.split('.').try_fold(v, |cur, p| cur.get(p))
    }

    #[test]
    fn table_defaults_match_the_struct() {
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for s in SETTINGS {
            let expected: toml::Value =
                format!("v = {}", s.default).parse::<toml::Table>().unwrap()["v"].clone();
            assert_eq!(lookup(&defaults, s.key), Some(&expected), "{}", s.key);
        }
        // And every field of the struct is in the table.
        fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut keys = Vec::new();
        leaves("", &defaults, &mut keys);
        for k in keys {
            assert!(
                SETTINGS.iter().any(|s| s.key == k),
                "{k} is not documented in SETTINGS"
            );
        }
    }

    #[test]
    fn sources_in_order() {
        let dir = std::env::temp_dir().join(format!("nanofaas-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[executions]\nttl_ms = 5\nmax_records = 7\n",
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("NANOFAAS_EXECUTIONS_TTL_MS".to_string(), "9".to_string()),
            ("NANOFAAS_LOG_FORMAT".to_string(), "json".to_string()),
        ]
        .into();
        let cfg = Config::load(
            Some(&file),
            &env,
            &[("executions.max_records".into(), "11".into())],
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:1");
        assert_eq!(cfg.executions.ttl_ms, 9);
        assert_eq!(cfg.executions.max_records, 11);
        assert_eq!(cfg.log_format, LogFormat::Json);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn errors_name_the_setting() {
        let env: HashMap<String, String> =
            [("NANOFAAS_EXECUTIONS_TTL_MS".to_string(), "soon".to_string())].into();
        let e = Config::load(None, &env, &[]).unwrap_err().to_string();
        assert!(e.contains("executions.ttl_ms"), "{e}");
        let e = Config::load(None, &HashMap::new(), &[("nope".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting \"nope\""), "{e}");
        let e = Config::load(None, &HashMap::new(), &[("listen".into(), "here".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let dir = std::env::temp_dir().join(format!("nanofaas-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[executions]\nttl = 5\n").unwrap();
        let e = Config::load(Some(&file), &HashMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `ttl`"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn choices_are_typed_and_a_wrong_one_names_the_setting_and_the_choices() {
        let over = |k: &str, v: &str| Config::load(None, &HashMap::new(), &[(k.into(), v.into())]);
        let c = over("provider.process.limits", "best-effort").unwrap();
        assert_eq!(c.provider.process.limits, LimitsMode::BestEffort);
        let c = over("provider.type", "docker").unwrap();
        assert_eq!(c.provider.kind, ProviderKind::Docker);
        assert_eq!(c.provider.kind.as_str(), "docker");
        let c = over("provider.docker.address", "container").unwrap();
        assert_eq!(c.provider.docker.address, DockerAddress::Container);
        for (key, bad, choices) in [
            (
                "provider.type",
                "lambda",
                "`process`, `docker`, `kubernetes`, `none`",
            ),
            ("log_format", "xml", "`text` or `json`"),
            (
                "provider.docker.address",
                "host",
                "`auto`, `published`, `container`",
            ),
            ("provider.docker.pull", "always", "`never` or `missing`"),
            (
                "provider.process.limits",
                "best_effort",
                "`enforce` or `best-effort`",
            ),
        ] {
            let e = over(key, bad).unwrap_err().to_string();
            assert!(e.contains(&format!("setting {key:?}")), "{e}");
            assert!(e.contains(&format!("unknown variant `{bad}`")), "{e}");
            assert!(e.contains(choices), "{e}");
        }
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;

    #[test]
    fn tokens_and_lists_from_every_source() {
        let h = "a".repeat(64);
        let env: HashMap<String, String> = [
            (
                "NANOFAAS_API_TOKENS".to_string(),
                format!("admin:{h} invoker:{h}:orders-*,billing"),
            ),
            (
                "NANOFAAS_API_ALLOWED_HOSTS".to_string(),
                "a.example, b.example".to_string(),
            ),
        ]
        .into();
        let c = Config::load(None, &env, &[]).unwrap();
        assert_eq!(c.api.tokens.len(), 2);
        assert_eq!(c.api.tokens[1].role, "invoker");
        assert_eq!(c.api.tokens[1].functions, vec!["orders-*", "billing"]);
        assert_eq!(c.api.allowed_hosts, vec!["a.example", "b.example"]);
        let dir = std::env::temp_dir().join(format!("nanofaas-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!("[api]\ntokens = [{{ role = \"viewer\", sha256 = \"{h}\" }}, \"deployer:{h}\"]\nallowed_origins = [\"https://app.example.com\"]\n"),
        )
        .unwrap();
        let c = Config::load(Some(&file), &HashMap::new(), &[]).unwrap();
        std::fs::remove_dir_all(dir).ok();
        assert_eq!(c.api.tokens[0].role, "viewer");
        assert_eq!(c.api.tokens[1].entry(), format!("deployer:{h}"));
        let e = Config::load(
            None,
            &HashMap::new(),
            &[("api.tokens".into(), "root:abc".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api.tokens[0]"), "{e}");
        let e = Config::load(
            None,
            &HashMap::new(),
            &[("api.tls_cert".into(), "c.pem".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api.tls_key"), "{e}");
    }
}
