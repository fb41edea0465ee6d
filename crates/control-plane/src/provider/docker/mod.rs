//! The `docker` provider: each instance is a container on a Docker Engine (or Podman's
//! compatible API) reached over its Unix socket. `image` in the spec names the image.
//!
//! # Instances
//! - The container's entrypoint is `nanofaas-watchdog` at [`WATCHDOG_PATH`] (the nanofaas
//!   runtime images put it there, see `deploy/`). Warm instances run it in `WARM` mode on port
//!   [`WATCHDOG_PORT`]; the runtime it starts is the image's `WATCHDOG_CMD`, or the spec's
//!   `runtimeCommand`, and listens on [`RUNTIME_PORT`] inside the container (and on the Unix
//!   socket [`RUNTIME_SOCKET`] the watchdog offers, where it can: the Python runtime and the
//!   Rust SDK do, and the watchdog then calls it there). JOB instances run
//!   it in one-shot mode (`runtimeMode`), once per attempt.
//! - Labels mark every container: [`LABEL_FUNCTION`], [`LABEL_INSTANCE`], [`LABEL_KIND`] and
//!   [`LABEL_OWNER`] (`hostname/pid:starttime` of the control plane). The spec's `env` is the
//!   container's environment; `resources.cpu` becomes `NanoCpus`, `resources.memory` becomes
//!   `Memory` (and `MemorySwap`, so the limit is not stretched by swap). An init process
//!   (`Init: true`) is PID 1, so runtimes that fork have their children reaped.
//! - `command` and `workingDir` are process-provider fields and are ignored here, so that one
//!   spec can carry both an image and a local command.
//!
//! # How the control plane reaches an instance (`provider.docker.address`)
//! - `auto` (default): ports are published until the first container is ready; if its own
//!   address answers from here, that mode is kept for every later container, else `published`.
//!   Measured with `bench/run.sh docker` (both modes side by side): the engine's port proxy
//!   roughly doubles a warm call (Rust 1.22 → 0.65 ms, Python 2.55 → 1.44 ms with `container`).
//! - `published`: the watchdog port is published on `127.0.0.1` at a port the engine
//!   picks (`127.0.0.1::8080`). It works with every engine, rootless Podman and Docker Desktop
//!   included; the engine's port proxy adds a hop.
//! - `container`: the container's own IP on its network, port 8080. One hop less; it needs the
//!   control plane on the engine's Linux host or on the same network.
//!
//! Readiness is the watchdog's `GET /health`, probed every few milliseconds until the startup
//! timeout, while the container's exit is watched so a crash fails the start at once with the
//! container's last output. Warm containers get `WARM_ANNOUNCE=1`: their watchdog sends one
//! datagram to the bridge's gateway at start, so the host has the container's link address
//! before the first probe (without it, a probe sent as the engine's start returned often
//! waited for the host's next ARP retry, up to a second).
//!
//! # JOB callbacks
//! A one-shot container posts its result to the callback URL. When that URL's host is a
//! loopback address (the default: the control plane on `127.0.0.1`), the job container uses
//! the host's network (`NetworkMode: host`) so the URL works unchanged. Otherwise it joins
//! `provider.docker.network`; a callback host of `host.docker.internal` is mapped to the
//! engine's host gateway, for a control plane listening on the bridge (set
//! `callback_base_url = "http://host.docker.internal:PORT/v1/internal/executions"`).
//!
//! # Limits checked at registration
//! `validate` refuses what the engine would refuse at the first start: `resources.memory` below
//! Docker's [`MIN_MEMORY`] (6 MiB) or above this machine's memory, `resources.cpu` above its
//! CPUs, and an `image` that cannot be an image reference.
//!
//! # No immortal containers
//! Every warm container gets `WARM_LEASE_MS` ([`super::lease::LEASE`]) and, once ready, a lease
//! holder: one `POST /lease` kept open with a byte a second. When this control plane dies its
//! connections close, and each watchdog stops within a second (runtime killed, no drain): the
//! container stops by itself and the next control plane removes it at start-up. A runtime killed
//! for memory inside a container is told apart by the watchdog (the container's cgroup), which
//! answers `OUT_OF_MEMORY`; a container killed whole says so in its exit reason.
//!
//! # Exits, logs, orphans
//! - `exited` fires when the engine's `wait` returns; the container is then removed (nothing is
//!   left behind) after its last lines of output are read for the exit reason.
//! - The container's output is followed and forwarded to the log (target
//!   `nanofaas::function`, rate-limited per instance); the last lines are kept for error
//!   messages and can be read with [`DockerProvider::logs`].
//! - At start-up, containers carrying [`LABEL_OWNER`] of a dead control plane of this host are
//!   removed; shutdown removes every container this control plane owns; `stop` removes one.
//!
//! # Prewarmed containers
//! With `provider.docker.prewarm` > 0, each image of a DEPLOYMENT HTTP function has that many
//! generic containers waiting (started by [`DockerProvider::start_warm`] with `stem`, labelled
//! `prewarmed`); a cold start takes one, applies the function's limits with the engine's update
//! and specializes it (`prewarm`).
//!
//! The engine is reached through [`api::Transport`]: [`unix::UnixTransport`] in production, a
//! scripted fake in the unit tests below. This module must not shell out to a `docker` CLI.

pub mod api;
#[cfg(test)]
mod fake;
mod prewarm;
pub mod unix;

use super::exit::wait_exit;
use super::shared::{identity_alive, join_all, process_identity, LogTail, OutputLog, TAIL_LINES};
use super::{
    ExitWatch, Instance, InstanceInfo, Job, JobRequest, PrewarmError, Provider, StartFailure,
    StartRequest,
};
use crate::dispatch::BoxFuture;
use crate::prewarm::{PrewarmPool, PrewarmSettings};
use api::{ContainerInspect, Engine, EngineError, LogDemux, LogStream};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use nanofaas_api::{ExecutionMode, FunctionSpec, RuntimeMode, ValidationError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Labels on every container nanofaas starts.
pub const LABEL_OWNER: &str = "dev.nanofaas.owner";
pub const LABEL_FUNCTION: &str = "dev.nanofaas.function";
pub const LABEL_INSTANCE: &str = "dev.nanofaas.instance";
pub const LABEL_KIND: &str = "dev.nanofaas.kind";

/// Where images keep the watchdog (the container's entrypoint).
pub const WATCHDOG_PATH: &str = "/usr/local/bin/nanofaas-watchdog";
/// The warm watchdog's port inside the container.
pub const WATCHDOG_PORT: u16 = 8080;
/// The runtime's port inside the container (`PORT`).
pub const RUNTIME_PORT: u16 = 8081;
/// The Unix socket the watchdog offers its runtime inside the container (`WARM_RUNTIME_SOCKET`;
/// runtimes that do not serve it are reached on [`RUNTIME_PORT`]).
pub const RUNTIME_SOCKET: &str = "@nanofaas/runtime";

/// The variable that names an instance's function (in a generic container: `(prewarmed)`).
const ENV_FUNCTION: &str = "NANOFAAS_FUNCTION";

/// Watchdog exit codes that mean "the command itself cannot run".
pub(crate) const WATCHDOG_EXIT_CONFIG: i64 = 2;
pub(crate) const WATCHDOG_EXIT_SPAWN: i64 = 4;
/// How long an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Health probes back off from 1 ms to this.
const PROBE_MAX_DELAY: Duration = Duration::from_millis(5);
/// Consecutive failed `wait` calls before the instance is declared lost.
const WAIT_ATTEMPTS: u32 = 30;
/// Largest JOB payload: it travels in `INVOCATION_PAYLOAD`, and Linux caps one environment
/// string at 128 KiB (`MAX_ARG_STRLEN`, name included).
pub(crate) const MAX_ENV_PAYLOAD: usize = 128 * 1024 - 64;

/// The smallest memory limit Docker accepts for a container.
pub const MIN_MEMORY: u64 = 6 << 20;

/// Whether `image` can be an image reference at all (`[registry[:port]/]path[:tag][@digest]`,
/// path components in lowercase); the engine would refuse it at the first start otherwise.
pub(crate) fn check_image_reference(image: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{image:?} is not a valid image reference: {why}"));
    if image.len() > 255 {
        return bad("longer than 255 characters");
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return bad("the digest after @ must be algorithm:hex (sha256:...)");
        }
    }
    // A tag is after the last colon that follows the last slash.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry when it has a dot or a port, or is localhost.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        let host_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
        if !host_ok || !port_ok {
            return bad("the registry host is not a valid host[:port]");
        }
    }
    for p in &parts {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return bad("each part of the name is lowercase letters and digits, separated by '.', '_' or '-'");
        }
    }
    Ok(())
}

/// How the control plane reaches a warm container, and whether a missing image is pulled: the
/// configuration's own types.
pub use crate::config::{DockerAddress as Address, DockerPull as Pull};

#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Network containers join; `None`: the engine's default bridge.
    pub network: Option<String>,
    pub address: Address,
    pub pull: Pull,
    pub startup_timeout: Duration,
    pub stop_grace: Duration,
    /// Lines of an instance's output forwarded to the log per second; the rest are counted.
    pub log_lines_per_second: u32,
    /// Generic containers kept per image (`provider.docker.prewarm`, see `prewarm`).
    pub prewarm: PrewarmSettings,
}

struct Entry {
    /// The function it serves (a prewarmed container: `(prewarmed)` until it is specialized).
    function: Mutex<String>,
    /// `warm`, `job` or `prewarmed`.
    kind: Mutex<&'static str>,
    container: String,
    host_pid: Mutex<Option<u32>>,
    exit_code: Mutex<Option<i64>>,
    exited: ExitWatch,
    log: Arc<LogTail>,
}

type Entries = Arc<Mutex<HashMap<String, Arc<Entry>>>>;

pub struct DockerProvider {
    /// Where the lines instances write go (see `logs`).
    logs: std::sync::OnceLock<Arc<crate::logs::Logs>>,
    engine: Engine,
    settings: DockerSettings,
    owner: String,
    entries: Entries,
    closed: AtomicBool,
    /// `auto`'s finding: [`AUTO_UNKNOWN`], [`AUTO_CONTAINER`] or [`AUTO_PUBLISHED`].
    auto: AtomicU8,
    /// Generic containers per image (`provider.docker.prewarm`).
    prewarm: PrewarmPool,
    /// Sends `POST /specialize` to prewarmed containers.
    client: crate::dispatch::HttpClient,
}

const AUTO_UNKNOWN: u8 = 0;
const AUTO_CONTAINER: u8 = 1;
const AUTO_PUBLISHED: u8 = 2;

/// `hostname/pid:starttime` of this process: unique across PID reuse, and tells which host's
/// process table can answer whether the owner lives.
fn owner_identity() -> String {
    format!("{}/{}", hostname(), process_identity())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `owner` is a dead control plane of this host (only those can be judged here; the
/// containers of another host's control plane are never touched).
fn owner_dead_here(owner: &str, my_host: &str) -> bool {
    let Some((host, proc_id)) = owner.rsplit_once('/') else {
        return false;
    };
    if host != my_host {
        return false;
    }
    // An identity we cannot read is left alone; one that reads but is not running is dead.
    let parses = proc_id
        .split_once(':')
        .is_some_and(|(p, t)| p.parse::<u32>().is_ok() && t.parse::<u64>().is_ok());
    parses && !identity_alive(proc_id)
}

/// The container name of an instance.
pub fn container_name(instance_id: &str) -> String {
    format!("nanofaas-{instance_id}")
}

/// Whether a callback URL points at this machine's loopback interface.
fn loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn url_host(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn free_loopback_port() -> Result<u16, StartFailure> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartFailure {
            message: format!("cannot find a free port on 127.0.0.1: {e}"),
            permanent: false,
        })
}

/// One `GET /health` on a fresh connection.
async fn probe_health(addr: SocketAddr, limit: Duration) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get("/health")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(true)))
}

/// The one child of process `pid` on this machine (the first when there are several).
fn only_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Why a container ended, from its exit code and what the engine knows of it.
fn exit_reason(code: i64, inspect: Option<&ContainerInspect>) -> String {
    if let Some(i) = inspect {
        if i.state.oom_killed {
            let limit = if i.host_config.memory > 0 {
                format!(" (memory limit {} bytes)", i.host_config.memory)
            } else {
                String::new()
            };
            return format!("the container was killed for running out of memory{limit}");
        }
        if !i.state.error.is_empty() {
            return format!("the container failed: {}", i.state.error);
        }
    }
    match code {
        137 => "the container was killed (SIGKILL, exit code 137)".into(),
        143 => "the container was stopped (SIGTERM, exit code 143)".into(),
        c => format!("the container exited with code {c}"),
    }
}

impl DockerProvider {
    /// Hands the lines instances write to `logs` (once, before the first instance starts).
    pub fn set_logs(&self, logs: Arc<crate::logs::Logs>) {
        let _ = self.logs.set(logs);
    }

    pub fn new(engine: Engine, settings: DockerSettings) -> DockerProvider {
        DockerProvider {
            logs: std::sync::OnceLock::new(),
            engine,
            prewarm: PrewarmPool::new(settings.prewarm.clone()),
            settings,
            owner: owner_identity(),
            entries: Arc::default(),
            closed: AtomicBool::new(false),
            auto: AtomicU8::new(AUTO_UNKNOWN),
            client: crate::dispatch::http_client(&crate::dispatch::ClientSettings {
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                max_idle_per_host: 1,
            }),
        }
    }

    /// This control plane's [`LABEL_OWNER`] value.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The last lines an instance's container wrote (from the engine while it exists, else
    /// what was kept when it ended). `None` for an unknown instance.
    pub async fn logs(&self, instance_id: &str) -> Option<Vec<String>> {
        let entry = self.entries.lock().unwrap().get(instance_id).cloned()?;
        match self.engine.logs_tail(&entry.container, TAIL_LINES).await {
            Ok(lines) => Some(lines),
            Err(_) => Some(entry.log.snapshot()),
        }
    }

    fn labels(&self, spec: &FunctionSpec, instance_id: &str, kind: &str) -> Value {
        json!({
            LABEL_OWNER: self.owner,
            LABEL_FUNCTION: spec.name,
            LABEL_INSTANCE: instance_id,
            LABEL_KIND: kind,
        })
    }

    /// The container to create: entrypoint, environment (the spec's, then ours), labels,
    /// limits, network.
    fn container_config(
        &self,
        spec: &FunctionSpec,
        instance_id: &str,
        kind: &str,
        env: Vec<(String, String)>,
        host: Map<String, Value>,
    ) -> Value {
        let mut ours = env;
        ours.push(("NANOFAAS_INSTANCE".into(), instance_id.into()));
        ours.push((ENV_FUNCTION.into(), spec.name.clone()));
        ours.push((crate::logs::ENV_LOG_TAGS.into(), "1".into()));
        if let Some(rc) = &spec.runtime_command {
            ours.push(("WATCHDOG_CMD".into(), rc.clone()));
        }
        // The spec's variables, then ours; a name set by both is ours (one entry per name).
        let vars: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, _)| !ours.iter().any(|(o, _)| o == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .chain(ours.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let mut host_config = host;
        host_config.insert("Init".into(), json!(true));
        if let Some(res) = &spec.resources {
            if let Some(cpu) = res
                .cpu
                .as_deref()
                .and_then(|c| nanofaas_api::spec::parse_cpu_millis(c).ok())
            {
                host_config.insert("NanoCpus".into(), json!(cpu * 1_000_000));
            }
            if let Some(mem) = res
                .memory
                .as_deref()
                .and_then(|m| nanofaas_api::spec::parse_memory_bytes(m).ok())
            {
                host_config.insert("Memory".into(), json!(mem));
                host_config.insert("MemorySwap".into(), json!(mem));
            }
        }
        let mut config = json!({
            "Image": spec.image.clone().unwrap_or_default(),
            "Entrypoint": [WATCHDOG_PATH],
            "Cmd": [],
            "Env": vars,
            "Labels": self.labels(spec, instance_id, kind),
            "HostConfig": Value::Object(host_config),
        });
        if kind != "job" && self.mode() == Address::Published {
            config["ExposedPorts"] = json!({ format!("{WATCHDOG_PORT}/tcp"): {} });
        }
        config
    }

    /// The host config of a warm container: its network, and the published watchdog port.
    fn warm_host_config(&self) -> Map<String, Value> {
        let mut h = Map::new();
        if let Some(net) = &self.settings.network {
            h.insert("NetworkMode".into(), json!(net));
        }
        if self.mode() == Address::Published {
            h.insert(
                "PortBindings".into(),
                json!({ format!("{WATCHDOG_PORT}/tcp"): [{"HostIp": "127.0.0.1", "HostPort": ""}] }),
            );
        }
        h
    }

    /// Creates the container, pulling its image first when it is missing and the policy allows.
    async fn create(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        config: &Value,
    ) -> Result<String, StartFailure> {
        let image = spec.image.as_deref().unwrap_or_default();
        let name = container_name(instance_id);
        let failed = |e: EngineError| StartFailure {
            message: format!("cannot create a container of image {image:?}: {e}"),
            permanent: false,
        };
        match self.engine.create(&name, config).await {
            Ok(id) => Ok(id),
            Err(e) if e.is_not_found() && e.message().to_ascii_lowercase().contains("image") => {
                if self.settings.pull == Pull::Never {
                    return Err(StartFailure {
                        message: format!(
                            "image {image:?} is not on the container engine (build or pull it; provider.docker.pull is \"never\")"
                        ),
                        permanent: true,
                    });
                }
                tracing::info!(function = %spec.name, image, "pulling a missing image");
                self.engine
                    .pull(image, PULL_TIMEOUT)
                    .await
                    .map_err(|e| StartFailure {
                        message: format!(
                            "image {image:?} is not on the container engine and pulling it failed: {}",
                            e.message()
                        ),
                        permanent: true,
                    })?;
                self.engine.create(&name, config).await.map_err(failed)
            }
            Err(e) if e.is_not_found() => Err(StartFailure {
                message: format!(
                    "cannot create a container of image {image:?}: {}",
                    e.message()
                ),
                permanent: true,
            }),
            Err(e) => Err(failed(e)),
        }
    }

    /// Registers a created container, starts it and the tasks that follow its output and wait
    /// for its end.
    async fn launch(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        kind: &'static str,
        container: String,
    ) -> Result<Arc<Entry>, StartFailure> {
        let (exit_tx, exited) = watch::channel(None);
        let entry = Arc::new(Entry {
            function: Mutex::new(spec.name.clone()),
            kind: Mutex::new(kind),
            container: container.clone(),
            host_pid: Mutex::new(None),
            exit_code: Mutex::new(None),
            exited,
            log: Arc::new(LogTail::default()),
        });
        self.entries
            .lock()
            .unwrap()
            .insert(instance_id.to_string(), entry.clone());
        if let Err(e) = self.engine.start(&container).await {
            self.entries.lock().unwrap().remove(instance_id);
            let _ = self.engine.remove(&container).await;
            let msg = e.message();
            let lower = msg.to_ascii_lowercase();
            // A missing entrypoint: the image has no watchdog, retrying cannot help.
            let permanent =
                lower.contains("no such file or directory") || lower.contains("not found");
            return Err(StartFailure {
                message: format!(
                    "cannot start the container of {:?} (image {:?}): {msg}{}",
                    spec.name,
                    spec.image.as_deref().unwrap_or_default(),
                    if permanent {
                        format!(
                            "; images must contain the watchdog at {WATCHDOG_PATH} (build them FROM a nanofaas runtime image)"
                        )
                    } else {
                        String::new()
                    }
                ),
                permanent,
            });
        }
        tokio::spawn(follow_output(
            self.engine.clone(),
            entry.clone(),
            instance_id.to_string(),
            self.settings.log_lines_per_second,
            self.logs.get().cloned(),
        ));
        tokio::spawn(watch_container(
            self.engine.clone(),
            self.entries.clone(),
            instance_id.to_string(),
            entry.clone(),
            exit_tx,
        ));
        Ok(entry)
    }

    /// The address mode in force: `auto` is published until the container address is known to
    /// work (ports are published, so that the fallback exists).
    fn mode(&self) -> Address {
        match self.settings.address {
            Address::Auto if self.auto.load(Ordering::Relaxed) == AUTO_CONTAINER => {
                Address::Container
            }
            Address::Auto => Address::Published,
            m => m,
        }
    }

    /// `auto` on its first ready container: use the container's address if it answers from
    /// here, and remember which mode won. Returns the address to use.
    async fn choose_address(&self, published: SocketAddr, i: &ContainerInspect) -> SocketAddr {
        if self.settings.address != Address::Auto
            || self.auto.load(Ordering::Relaxed) != AUTO_UNKNOWN
        {
            return published;
        }
        let direct = self.address_in(Address::Container, i).ok();
        let reachable = match direct {
            Some(a) => probe_health(a, Duration::from_millis(500)).await,
            None => false,
        };
        let (choice, name) = if reachable {
            (AUTO_CONTAINER, "container")
        } else {
            (AUTO_PUBLISHED, "published")
        };
        if self
            .auto
            .compare_exchange(AUTO_UNKNOWN, choice, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            tracing::info!(
                mode = name,
                "provider.docker.address is auto: {}",
                if reachable {
                    "this host reaches containers at their own address; using it (one proxy hop less)"
                } else {
                    "this host cannot reach containers at their own address; using published ports"
                }
            );
        }
        match direct {
            Some(a) if reachable => a,
            _ => published,
        }
    }

    /// Where the control plane reaches the watchdog of a started warm container.
    fn address(&self, i: &ContainerInspect) -> Result<SocketAddr, String> {
        self.address_in(self.mode(), i)
    }

    fn address_in(&self, mode: Address, i: &ContainerInspect) -> Result<SocketAddr, String> {
        match mode {
            Address::Published | Address::Auto => {
                let key = format!("{WATCHDOG_PORT}/tcp");
                let bindings = i
                    .network_settings
                    .ports
                    .get(&key)
                    .cloned()
                    .flatten()
                    .unwrap_or_default();
                let b = bindings
                    .iter()
                    .find(|b| b.host_ip == "127.0.0.1")
                    .or_else(|| bindings.first())
                    .ok_or_else(|| format!("the engine published no host port for {key}"))?;
                let port: u16 = b
                    .host_port
                    .parse()
                    .map_err(|_| format!("the engine published port {:?}", b.host_port))?;
                Ok(SocketAddr::from(([127, 0, 0, 1], port)))
            }
            Address::Container => {
                let ns = &i.network_settings;
                let ip = self
                    .settings
                    .network
                    .as_ref()
                    .and_then(|n| ns.networks.get(n))
                    .map(|e| e.ip_address.clone())
                    .filter(|s| !s.is_empty())
                    .or_else(|| Some(ns.ip_address.clone()).filter(|s| !s.is_empty()))
                    .or_else(|| {
                        ns.networks
                            .values()
                            .map(|e| e.ip_address.clone())
                            .find(|s| !s.is_empty())
                    })
                    .ok_or("the container has no IP address on its network")?;
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("the container's IP address {ip:?} is not valid"))?;
                Ok(SocketAddr::new(ip, WATCHDOG_PORT))
            }
        }
    }

    /// Stops an instance: SIGTERM, the grace period, then forced removal. Returns once the
    /// container is gone (or the engine failed to answer within its timeouts).
    async fn stop_entry(&self, id: &str, entry: Arc<Entry>) {
        let mut exited = entry.exited.clone();
        if exited.borrow().is_none() {
            if let Err(e) = self.engine.kill(&entry.container, "SIGTERM").await {
                tracing::warn!(instance = %id, error = %e, "cannot signal the container");
            }
            let gone = tokio::time::timeout(self.settings.stop_grace, wait_exit(&mut exited)).await;
            if gone.is_err() {
                tracing::warn!(instance = %id, "container did not stop within the grace period; removing it by force");
            }
        }
        if exited.borrow().is_none() {
            if let Err(e) = self.engine.remove(&entry.container).await {
                tracing::warn!(instance = %id, error = %e, "cannot remove the container");
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), wait_exit(&mut exited)).await;
        }
        // The watcher removes the container after its exit; make sure even if it could not.
        if exited.borrow().is_none() {
            let _ = self.engine.remove(&entry.container).await;
            self.entries.lock().unwrap().remove(id);
        }
    }

    /// A start that failed after the container was created: read its output, remove it, say why.
    async fn fail_start(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        entry: Arc<Entry>,
        why: Option<String>,
    ) -> StartFailure {
        if entry.exited.borrow().is_none() {
            // Still running (not ready in time, or no address): keep what it printed.
            if let Ok(lines) = self.engine.logs_tail(&entry.container, TAIL_LINES).await {
                entry.log.replace(lines);
            }
        }
        self.stop_entry(instance_id, entry.clone()).await;
        let why = why
            .or_else(|| entry.exited.borrow().clone())
            .unwrap_or_else(|| "the container stopped".into());
        let code = *entry.exit_code.lock().unwrap();
        StartFailure {
            message: format!(
                "the container of {:?} (image {:?}) failed to start: {why}; its last output:\n{}",
                spec.name,
                spec.image.as_deref().unwrap_or_default(),
                entry.log.render("(the container wrote nothing)")
            ),
            permanent: matches!(code, Some(WATCHDOG_EXIT_CONFIG | WATCHDOG_EXIT_SPAWN)),
        }
    }

    /// Starts a warm container of `req.spec`, or (`stem`) a generic one of its kind: no
    /// function's variables, `WARM_PREWARM=1`, labelled `prewarmed`, waiting for
    /// `POST /specialize` (see `prewarm`).
    async fn start_warm(&self, req: StartRequest, stem: bool) -> Result<Instance, StartFailure> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Self::closed_failure());
        }
        let spec = &req.spec;
        let id = &req.instance_id;
        let mut env = super::shared::container_warm_env(
            spec,
            WATCHDOG_PORT,
            RUNTIME_PORT,
            self.settings.startup_timeout,
            self.settings.stop_grace,
        );
        if spec.runtime_mode == RuntimeMode::Http {
            // The watchdog reaches a runtime that serves it over a Unix socket (abstract: it
            // lives in the container's network namespace and goes with it). Over the loopback
            // TCP connection a kept-alive call to the Python runtime took ~45 ms from the second
            // call on (measured: 0.6 ms over the socket).
            env.push(("WARM_RUNTIME_SOCKET".into(), RUNTIME_SOCKET.into()));
        }
        // The host learns the container's link address from the container at once, instead of
        // holding the first probe's SYN until its next ARP retry (0.5-1 s: bench/run.sh
        // kubernetes, Docker column; warm/announce.rs in the watchdog).
        env.push(("WARM_ANNOUNCE".into(), "1".into()));
        let kind = if stem {
            env.push(("WARM_PREWARM".into(), "1".into()));
            "prewarmed"
        } else {
            "warm"
        };
        let config = self.container_config(spec, id, kind, env, self.warm_host_config());
        let container = self.create(id, spec, &config).await?;
        let entry = self.launch(id, spec, kind, container).await?;
        // From the container's start (an image pull before it does not count).
        let deadline = Instant::now() + self.settings.startup_timeout;
        if self.closed.load(Ordering::SeqCst) {
            self.stop_entry(id, entry).await;
            return Err(Self::closed_failure());
        }
        let (addr, inspected) = match self.engine.inspect(&entry.container).await {
            Ok(i) => (self.address(&i), Some(i)),
            Err(e) => (Err(e.to_string()), None),
        };
        let addr = match addr {
            Ok(a) => a,
            Err(why) => return Err(self.fail_start(id, spec, entry, Some(why)).await),
        };
        let mut exited = entry.exited.clone();
        let mut delay = Duration::from_millis(1);
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            tokio::select! {
                biased;
                _ = wait_exit(&mut exited) => break false,
                ok = probe_health(addr, left.min(Duration::from_secs(1))) => if ok { break true },
            }
            tokio::select! {
                _ = wait_exit(&mut exited) => break false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(PROBE_MAX_DELAY);
        };
        if !ready {
            let why = entry.exited.borrow().is_none().then(|| {
                format!(
                    "the instance was not ready within {} ms",
                    self.settings.startup_timeout.as_millis()
                )
            });
            return Err(self.fail_start(id, spec, entry, why).await);
        }
        let addr = match &inspected {
            Some(i) => self.choose_address(addr, i).await,
            None => addr,
        };
        // Held while the instance lives: if this control plane dies, the instance follows.
        tokio::spawn(super::lease::hold(
            id.clone(),
            addr,
            entry.exited.clone(),
            super::lease::BEAT,
        ));
        let base = format!("http://{addr}");
        Ok(Instance {
            id: id.clone(),
            invoke_url: format!("{base}/invoke").parse().expect("valid URL"),
            socket: None,
            health_url: format!("{base}/health").parse().expect("valid URL"),
            exited: entry.exited.clone(),
        })
    }

    fn closed_failure() -> StartFailure {
        StartFailure {
            message: "the control plane is shutting down".into(),
            permanent: false,
        }
    }
}

/// Follows a container's output: keeps the tail, forwards lines to the log, rate-limited.
async fn follow_output(
    engine: Engine,
    entry: Arc<Entry>,
    instance: String,
    per_second: u32,
    hub: Option<Arc<crate::logs::Logs>>,
) {
    let Ok(mut body) = engine.follow_logs(&entry.container).await else {
        return;
    };
    let tail = entry.log.clone();
    let mut demux = LogDemux::default();
    let mut function = entry.function.lock().unwrap().clone();
    let stem = *entry.kind.lock().unwrap() == "prewarmed";
    let mut logs = hub.as_ref().map(|l| l.instance(&function, &instance));
    let mut out = OutputLog::new(function.clone(), instance.clone(), per_second);
    let mut emit = |stream: LogStream, line: String| {
        // A prewarmed container's lines belong to its function once specialized.
        if stem {
            let now = entry.function.lock().unwrap();
            if *now != function {
                function = now.clone();
                drop(now);
                logs = hub.as_ref().map(|l| l.instance(&function, &instance));
                out = OutputLog::new(function.clone(), instance.clone(), per_second);
            }
        }
        // The watchdog's stderr carries its runtime's lines, tagged (see `logs`).
        if let Some(l) = &logs {
            l.line(&line);
        }
        let (s, text) = match crate::logs::display(&line) {
            Some((s, text)) if stream == LogStream::Stderr => (s, text),
            Some(_) => ("stdout", line.as_str()),
            None => return,
        };
        tail.push(text);
        out.line(s, text);
    };
    while let Some(Ok(chunk)) = body.next().await {
        for (s, l) in demux.push(&chunk) {
            emit(s, l);
        }
    }
    for (s, l) in demux.finish() {
        emit(s, l);
    }
    if let Some(l) = &logs {
        l.ended();
    }
}

/// Waits for a container's end, records why, keeps its last output, removes it, and only then
/// tells the instance's watchers.
async fn watch_container(
    engine: Engine,
    entries: Entries,
    instance: String,
    entry: Arc<Entry>,
    exit_tx: watch::Sender<Option<String>>,
) {
    if let Ok(i) = engine.inspect(&entry.container).await {
        if i.state.pid > 0 {
            *entry.host_pid.lock().unwrap() = Some(i.state.pid as u32);
        }
    }
    let mut failures = 0;
    let why = loop {
        match engine.wait(&entry.container).await {
            Ok(code) => {
                *entry.exit_code.lock().unwrap() = Some(code);
                let inspect = engine.inspect(&entry.container).await.ok();
                break exit_reason(code, inspect.as_ref());
            }
            Err(e) if e.is_not_found() => break "the container was removed".to_string(),
            Err(e) => {
                // The engine restarted or the connection broke: ask again, within bounds.
                failures += 1;
                match engine.inspect(&entry.container).await {
                    Err(ie) if ie.is_not_found() => break "the container was removed".into(),
                    Ok(i) if !i.state.running => {
                        *entry.exit_code.lock().unwrap() = Some(i.state.exit_code);
                        break exit_reason(i.state.exit_code, Some(&i));
                    }
                    _ => {}
                }
                if failures >= WAIT_ATTEMPTS {
                    break format!("lost track of the container: {e}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    if let Ok(lines) = engine.logs_tail(&entry.container, TAIL_LINES).await {
        if !lines.is_empty() {
            entry.log.replace(lines);
        }
    }
    if let Err(e) = engine.remove(&entry.container).await {
        tracing::warn!(instance = %instance, error = %e, "cannot remove the container that ended");
    }
    entries.lock().unwrap().remove(&instance);
    let _ = exit_tx.send(Some(why));
}

impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn validate(&self, spec: &FunctionSpec) -> Result<(), ValidationError> {
        if matches!(spec.execution_mode, ExecutionMode::Pool) {
            return Ok(());
        }
        let Some(image) = spec.image.as_deref() else {
            return Err(ValidationError::new(
                "image",
                "the docker provider runs container images; this spec has only a command (use the process provider for local commands)",
            ));
        };
        check_image_reference(image).map_err(|why| ValidationError::new("image", why))?;
        let (cpus, memory) = super::shared::host_capacity();
        super::shared::check_resources(spec, cpus, memory, MIN_MEMORY)
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        Box::pin(self.start_warm(req, false))
    }

    fn prewarm_register(&self, spec: &FunctionSpec) {
        if let Some(k) = crate::prewarm::Kind::of_image(spec) {
            self.prewarm.register(k);
        }
    }

    fn prewarm_unregister(&self, spec: &FunctionSpec) {
        if let Some(k) = crate::prewarm::Kind::of_image(spec) {
            self.prewarm.unregister(&k);
        }
    }

    fn start_prewarmed(
        &self,
        req: &StartRequest,
    ) -> Option<BoxFuture<'_, Result<Instance, PrewarmError>>> {
        let kind = crate::prewarm::Kind::of_image(&req.spec)?;
        let stem = self.prewarm.take(&kind)?;
        let req = req.clone();
        Some(Box::pin(
            async move { self.specialize(stem, kind, req).await },
        ))
    }

    fn prewarmed(&self) -> Vec<crate::prewarm::KindStatus> {
        self.prewarmed_status()
    }

    fn start_job(&self, req: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>> {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Self::closed_failure());
            }
            if let Some(l) = self.logs.get() {
                l.job_instance(&req.instance_id, &req.execution_id);
            }
            let spec = &req.spec;
            if req.payload.len() > MAX_ENV_PAYLOAD {
                return Err(StartFailure {
                    message: format!(
                        "the invocation is {} bytes; a JOB instance gets it in an environment variable, which holds at most {MAX_ENV_PAYLOAD} bytes (use executionMode DEPLOYMENT for larger payloads)",
                        req.payload.len()
                    ),
                    permanent: true,
                });
            }
            let host_network = loopback_url(&req.callback_url);
            let mut env = vec![
                (
                    "EXECUTION_MODE".to_string(),
                    spec.runtime_mode.as_str().to_string(),
                ),
                ("EXECUTION_ID".into(), req.execution_id.clone()),
                ("TRACE_ID".into(), req.trace_id.clone()),
                ("TRACEPARENT".into(), req.traceparent.clone()),
                ("CALLBACK_URL".into(), req.callback_url.clone()),
                ("CALLBACK_TOKEN".into(), req.callback_token.clone()),
                (
                    "INVOCATION_PAYLOAD".into(),
                    String::from_utf8_lossy(&req.payload).into_owned(),
                ),
                (
                    "TIMEOUT_MS".into(),
                    req.timeout.as_millis().max(1).to_string(),
                ),
                ("DISPATCH_ATTEMPT".into(), req.attempt.to_string()),
            ];
            let mut host = Map::new();
            if host_network {
                // The loopback callback URL must work unchanged: share the host's network.
                host.insert("NetworkMode".into(), json!("host"));
            } else {
                if let Some(net) = &self.settings.network {
                    host.insert("NetworkMode".into(), json!(net));
                }
                if url_host(&req.callback_url).eq_ignore_ascii_case("host.docker.internal") {
                    host.insert(
                        "ExtraHosts".into(),
                        json!(["host.docker.internal:host-gateway"]),
                    );
                }
            }
            if spec.runtime_mode == RuntimeMode::Http {
                // On the host's network the runtime needs a port free on the host.
                let port = if host_network {
                    free_loopback_port()?
                } else {
                    RUNTIME_PORT
                };
                env.push(("PORT".into(), port.to_string()));
                env.push((
                    "RUNTIME_URL".into(),
                    format!("http://127.0.0.1:{port}/invoke"),
                ));
            }
            let config = self.container_config(spec, &req.instance_id, "job", env, host);
            let container = self.create(&req.instance_id, spec, &config).await?;
            let entry = self
                .launch(&req.instance_id, spec, "job", container)
                .await?;
            Ok(Job {
                id: req.instance_id.clone(),
                exited: entry.exited.clone(),
            })
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let entry = self.entries.lock().unwrap().get(instance_id).cloned();
            match entry {
                Some(e) => self.stop_entry(instance_id, e).await,
                None => {
                    // Unknown here: make sure no container of that name is left.
                    let _ = self.engine.remove(&container_name(instance_id)).await;
                }
            }
        })
    }

    fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<InstanceInfo> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|(id, e)| {
                // The engine's PID is the container's init; the watchdog is its child and the
                // runtime the watchdog's (seen only when the engine runs on this machine).
                let init = *e.host_pid.lock().unwrap();
                let watchdog = init.and_then(only_child);
                InstanceInfo {
                    id: id.clone(),
                    function: e.function.lock().unwrap().clone(),
                    kind: *e.kind.lock().unwrap(),
                    pid: watchdog,
                    runtime_pid: watchdog.and_then(only_child),
                    container: Some(e.container.chars().take(12).collect()),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            if let Err(e) = self.engine.ping().await {
                tracing::error!(error = %e, "the docker provider cannot reach its engine; DEPLOYMENT and JOB functions will fail to start until it is reachable");
                return 0;
            }
            if let Some(net) = &self.settings.network {
                match self.engine.network_exists(net).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(network = %net, "provider.docker.network names a network the engine does not have; create it (docker network create {net})")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot check provider.docker.network"),
                }
            }
            let list = match self.engine.list(&[LABEL_OWNER.to_string()]).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list containers to remove orphans");
                    return 0;
                }
            };
            let me = hostname();
            let orphans: Vec<_> = list
                .into_iter()
                .filter(|c| {
                    let owner = c.label(LABEL_OWNER).unwrap_or_default();
                    owner != self.owner && owner_dead_here(owner, &me)
                })
                .collect();
            let removed = AtomicUsize::new(0);
            join_all(orphans.iter().map(|c| {
                let removed = &removed;
                async move {
                    match self.engine.remove(&c.id).await {
                        Ok(()) => {
                            removed.fetch_add(1, Ordering::SeqCst);
                            tracing::warn!(
                                container = %c.id.chars().take(12).collect::<String>(),
                                instance = c.label(LABEL_INSTANCE).unwrap_or_default(),
                                function = c.label(LABEL_FUNCTION).unwrap_or_default(),
                                "removed a container left behind by a control plane that died"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot remove an orphaned container"),
                    }
                }
            }))
            .await;
            removed.into_inner()
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::SeqCst);
            // No more prewarmed starts; the waiting and starting ones are entries like any other.
            let _ = self.prewarm.close();
            let all: Vec<(String, Arc<Entry>)> = self
                .entries
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let stops = all
                .into_iter()
                .map(|(id, e)| async move { self.stop_entry(&id, e).await });
            join_all(stops).await;
            // Anything created but not yet registered (a start in flight) goes too.
            let mine = format!("{LABEL_OWNER}={}", self.owner);
            if let Ok(left) = self.engine.list(&[mine]).await {
                for c in left {
                    let _ = self.engine.remove(&c.id).await;
                }
            }
        })
    }
}

/// The provider `provider.docker.*` describes. Fails when the engine's socket does not exist
/// (the engine itself is reached, and orphans removed, when the control plane prepares).
pub fn from_config(cfg: &crate::config::Config) -> Result<DockerProvider, String> {
    let c = &cfg.provider;
    let d = &c.docker;
    let socket = unix::socket_path(&d.socket, std::env::var("DOCKER_HOST").ok().as_deref())?;
    if !socket.exists() {
        return Err(format!(
            "provider.type is docker but the engine socket {} does not exist (start Docker or Podman, or set provider.docker.socket or DOCKER_HOST)",
            socket.display()
        ));
    }
    let engine = Engine::new(
        Arc::new(unix::UnixTransport::new(socket)),
        Duration::from_millis(d.api_timeout_ms),
    );
    Ok(DockerProvider::new(
        engine,
        DockerSettings {
            network: Some(d.network.clone()).filter(|n| !n.is_empty()),
            address: d.address,
            pull: d.pull,
            startup_timeout: Duration::from_millis(c.startup_timeout_ms),
            stop_grace: Duration::from_millis(c.stop_grace_ms),
            log_lines_per_second: c.log_lines_per_second,
            prewarm: PrewarmSettings {
                count: d.prewarm as usize,
                backoff: Duration::from_millis(cfg.pool.start_backoff_ms),
                backoff_max: Duration::from_millis(cfg.pool.start_backoff_max_ms),
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::fake::{pair, Verifier};
    use super::*;
    use std::collections::BTreeMap;

    pub(super) fn settings() -> DockerSettings {
        DockerSettings {
            network: None,
            address: Address::Published,
            pull: Pull::Never,
            startup_timeout: Duration::from_secs(3),
            stop_grace: Duration::from_secs(2),
            log_lines_per_second: 100,
            prewarm: PrewarmSettings {
                count: 0,
                backoff: Duration::from_millis(100),
                backoff_max: Duration::from_millis(400),
            },
        }
    }

    pub(super) fn provider(s: DockerSettings) -> (Arc<DockerProvider>, Verifier) {
        let (t, v) = pair();
        let engine = Engine::new(Arc::new(t), Duration::from_secs(5));
        (Arc::new(DockerProvider::new(engine, s)), v)
    }

    pub(super) fn spec(extra: Value) -> Arc<FunctionSpec> {
        let mut v = json!({"name": "fn1", "image": "nanofaas/example:1"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Arc::new(FunctionSpec::from_json(v.to_string().as_bytes()).unwrap())
    }

    pub(super) fn env_of(body: &Value) -> BTreeMap<String, String> {
        body["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// A tiny watchdog stand-in on loopback answering `GET /health` with 200.
    async fn healthy_server() -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        (port, task)
    }

    pub(super) fn inspect_json(port: u16, running: bool) -> Value {
        json!({
            "Id": "c0ffee0000000000",
            "State": {"Status": if running {"running"} else {"exited"}, "Running": running, "ExitCode": 0, "OOMKilled": false, "Error": "", "Pid": 4242},
            "NetworkSettings": {"IPAddress": "172.17.0.9", "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]}, "Networks": {"bridge": {"IPAddress": "172.17.0.9"}}},
            "HostConfig": {"Memory": 0, "NanoCpus": 0},
            "Config": {"Image": "nanofaas/example:1"}
        })
    }

    pub(super) fn log_frame(kind: u8, s: &str) -> Bytes {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        Bytes::from(v)
    }

    #[tokio::test]
    async fn warm_start_creates_a_labelled_limited_container_and_probes_its_health() {
        let (p, mut v) = provider(settings());
        let (port, _srv) = healthy_server().await;
        let s = spec(json!({
            "env": {"GREETING": "hi"},
            "resources": {"cpu": "500m", "memory": "64Mi"},
            "runtimeCommand": "python3 -m nanofaas_runtime",
            "instanceConcurrency": 2,
        }));
        let start = tokio::spawn({
            let p = p.clone();
            let s = s.clone();
            async move {
                p.start(StartRequest {
                    instance_id: "fn1-abc".into(),
                    spec: s,
                })
                .await
            }
        });
        let create = v
            .expect("POST", "/containers/create?name=nanofaas-fn1-abc")
            .await;
        let body = create.body();
        assert_eq!(body["Image"], "nanofaas/example:1");
        assert_eq!(body["Entrypoint"], json!([WATCHDOG_PATH]));
        assert_eq!(body["Labels"][LABEL_FUNCTION], "fn1");
        assert_eq!(body["Labels"][LABEL_INSTANCE], "fn1-abc");
        assert_eq!(body["Labels"][LABEL_KIND], "warm");
        assert_eq!(body["Labels"][LABEL_OWNER], p.owner());
        assert_eq!(body["HostConfig"]["NanoCpus"], 500_000_000u64);
        assert_eq!(body["HostConfig"]["Memory"], 64u64 << 20);
        assert_eq!(body["HostConfig"]["MemorySwap"], 64u64 << 20);
        assert_eq!(body["HostConfig"]["Init"], true);
        assert_eq!(
            body["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"],
            "127.0.0.1"
        );
        let env = env_of(&body);
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["EXECUTION_MODE"], "WARM");
        assert_eq!(env["WATCHDOG_CMD"], "python3 -m nanofaas_runtime");
        assert_eq!(env["WARM_CONCURRENCY"], "2");
        assert_eq!(env["PORT"], "8081");
        let ports = body["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.as_str().unwrap().starts_with("PORT="))
            .count();
        assert_eq!(ports, 1, "one entry per name");
        assert_eq!(env["RUNTIME_URL"], "http://127.0.0.1:8081/invoke");
        assert_eq!(env["WARM_RUNTIME_SOCKET"], RUNTIME_SOCKET);
        assert_eq!(env["WARM_ANNOUNCE"], "1");
        create.json(201, json!({"Id": "c0ffee0000000000", "Warnings": []}));
        v.expect("POST", "/containers/c0ffee0000000000/start")
            .await
            .reply(204, "");
        // Output follower, exit watcher and the address lookup, in any order.
        let logs = v
            .expect(
                "GET",
                "/containers/c0ffee0000000000/logs?stdout=true&stderr=true&follow=true",
            )
            .await
            .stream(200);
        v.expect("GET", "/containers/c0ffee0000000000/json")
            .await
            .json(200, inspect_json(port, true));
        v.expect("GET", "/containers/c0ffee0000000000/json")
            .await
            .json(200, inspect_json(port, true));
        let wait = v.expect("POST", "/containers/c0ffee0000000000/wait").await;
        let inst = tokio::time::timeout(Duration::from_secs(5), start)
            .await
            .expect("start resolves once healthy")
            .unwrap()
            .expect("started");
        assert_eq!(
            inst.invoke_url.to_string(),
            format!("http://127.0.0.1:{port}/invoke")
        );
        assert!(inst.exited.borrow().is_none());
        logs.send(Ok(log_frame(2, "runtime says hello\n")))
            .await
            .unwrap();
        let listed = p.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].container.as_deref(), Some("c0ffee000000"));
        assert_eq!(listed[0].kind, "warm");

        // The container dies: the watcher records why, removes it, then fires `exited`.
        wait.json(200, json!({"StatusCode": 137}));
        let mut after = inspect_json(port, false);
        after["State"]["ExitCode"] = json!(137);
        after["State"]["OOMKilled"] = json!(true);
        after["HostConfig"]["Memory"] = json!(64u64 << 20);
        v.expect("GET", "/containers/c0ffee0000000000/json")
            .await
            .json(200, after);
        v.expect(
            "GET",
            "/containers/c0ffee0000000000/logs?stdout=true&stderr=true&tail=",
        )
        .await
        .reply(200, log_frame(2, "Killed\n"));
        let rm = v.expect("DELETE", "/containers/c0ffee0000000000").await;
        assert!(rm.path().contains("force=true"), "{}", rm.path());
        rm.reply(204, "");
        let mut exited = inst.exited.clone();
        tokio::time::timeout(Duration::from_secs(5), wait_exit(&mut exited))
            .await
            .expect("exited fires");
        let why = exited.borrow().clone().unwrap();
        assert!(
            why.contains("out of memory") && why.contains("67108864"),
            "{why}"
        );
        assert!(p.list().is_empty());
        drop(logs);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_container_that_exits_during_start_fails_with_its_output() {
        let (p, mut v) = provider(settings());
        let start = tokio::spawn({
            let p = p.clone();
            async move {
                p.start(StartRequest {
                    instance_id: "fn1-bad".into(),
                    spec: spec(json!({})),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(201, json!({"Id": "dead"}));
        v.expect("POST", "/containers/dead/start")
            .await
            .reply(204, "");
        let _logs = v
            .expect(
                "GET",
                "/containers/dead/logs?stdout=true&stderr=true&follow",
            )
            .await
            .stream(200);
        // The address lookup points at a port where nothing listens; the watcher's first
        // inspect happens too.
        let closed_port = free_loopback_port().unwrap();
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, true));
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, true));
        v.expect("POST", "/containers/dead/wait")
            .await
            .json(200, json!({"StatusCode": 2}));
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, false));
        v.expect("GET", "/containers/dead/logs?stdout=true&stderr=true&tail=")
            .await
            .reply(
                200,
                log_frame(
                    2,
                    "invalid configuration: WATCHDOG_CMD: is required but not set\n",
                ),
            );
        v.expect("DELETE", "/containers/dead").await.reply(204, "");
        let err = tokio::time::timeout(Duration::from_secs(5), start)
            .await
            .unwrap()
            .unwrap()
            .err()
            .expect("start fails");
        assert!(err.permanent, "exit code 2 is a configuration error");
        assert!(
            err.message.contains("exited with code 2")
                && err.message.contains("WATCHDOG_CMD: is required"),
            "{}",
            err.message
        );
        assert!(p.list().is_empty());
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_missing_image_is_a_permanent_failure_when_pulling_is_off() {
        let (p, mut v) = provider(settings());
        let start = tokio::spawn({
            let p = p.clone();
            async move {
                p.start(StartRequest {
                    instance_id: "fn1-x".into(),
                    spec: spec(json!({})),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(404, json!({"message": "No such image: nanofaas/example:1"}));
        let err = start.await.unwrap().err().unwrap();
        assert!(err.permanent);
        assert!(
            err.message.contains("nanofaas/example:1")
                && err.message.contains("not on the container engine"),
            "{}",
            err.message
        );
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_missing_image_is_pulled_then_created_when_allowed() {
        let mut s = settings();
        s.pull = Pull::Missing;
        let (p, mut v) = provider(s);
        let job = tokio::spawn({
            let p = p.clone();
            async move {
                p.start_job(JobRequest {
                    instance_id: "fn1-job-1".into(),
                    spec: spec(json!({"executionMode": "JOB"})),
                    execution_id: "e1".into(),
                    trace_id: "t1".into(),
                    traceparent: String::new(),
                    attempt: 1,
                    payload: Bytes::from_static(b"{\"input\":1}"),
                    timeout: Duration::from_secs(3),
                    callback_url: "http://registry-less:9/cb".into(),
                    callback_token: "tok".into(),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(404, json!({"message": "No such image: nanofaas/example:1"}));
        let pull = v
            .expect("POST", "/images/create?fromImage=nanofaas%2Fexample&tag=1")
            .await;
        // Pull errors come inside the progress stream.
        pull.reply(
            200,
            "{\"status\":\"Pulling\"}\n{\"error\":\"no route to registry\"}\n",
        );
        let err = job.await.unwrap().err().unwrap();
        assert!(err.permanent);
        assert!(
            err.message.contains("no route to registry"),
            "{}",
            err.message
        );
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn jobs_with_a_loopback_callback_share_the_host_network() {
        let (p, mut v) = provider(settings());
        let job = tokio::spawn({
            let p = p.clone();
            async move {
                p.start_job(JobRequest {
                    instance_id: "fn1-job-2".into(),
                    spec: spec(json!({"executionMode": "JOB"})),
                    execution_id: "e2".into(),
                    trace_id: "t2".into(),
                    traceparent: String::new(),
                    attempt: 2,
                    payload: Bytes::from_static(b"{\"input\":2}"),
                    timeout: Duration::from_secs(3),
                    callback_url: "http://127.0.0.1:8080/v1/internal/executions".into(),
                    callback_token: "tok".into(),
                })
                .await
            }
        });
        let create = v
            .expect("POST", "/containers/create?name=nanofaas-fn1-job-2")
            .await;
        let body = create.body();
        assert_eq!(body["HostConfig"]["NetworkMode"], "host");
        assert!(body.get("ExposedPorts").is_none());
        assert_eq!(body["Labels"][LABEL_KIND], "job");
        let env = env_of(&body);
        assert_eq!(env["EXECUTION_MODE"], "HTTP");
        assert_eq!(env["EXECUTION_ID"], "e2");
        assert_eq!(env["CALLBACK_TOKEN"], "tok");
        assert_eq!(env["DISPATCH_ATTEMPT"], "2");
        assert_eq!(env["INVOCATION_PAYLOAD"], "{\"input\":2}");
        let port: u16 = env["PORT"].parse().unwrap();
        assert_ne!(
            port, RUNTIME_PORT,
            "a free host port, not the in-container one"
        );
        create.json(201, json!({"Id": "j2"}));
        v.expect("POST", "/containers/j2/start")
            .await
            .reply(204, "");
        let job = job.await.unwrap().expect("job started");
        let _logs = v.expect("GET", "/containers/j2/logs").await.stream(200);
        v.expect("GET", "/containers/j2/json")
            .await
            .json(200, inspect_json(1, true));
        let wait = v.expect("POST", "/containers/j2/wait").await;
        // Stop: SIGTERM, the container ends, the watcher cleans up.
        let stop = tokio::spawn({
            let p = p.clone();
            async move { p.stop("fn1-job-2").await }
        });
        let kill = v.expect("POST", "/containers/j2/kill").await;
        assert!(kill.path().ends_with("signal=SIGTERM"), "{}", kill.path());
        kill.reply(204, "");
        wait.json(200, json!({"StatusCode": 143}));
        v.expect("GET", "/containers/j2/json")
            .await
            .json(404, json!({"message": "gone"}));
        v.expect("GET", "/containers/j2/logs")
            .await
            .json(404, json!({"message": "gone"}));
        v.expect("DELETE", "/containers/j2").await.reply(204, "");
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("stop returns once the container is gone")
            .unwrap();
        assert_eq!(
            job.exited.borrow().as_deref(),
            Some("the container was stopped (SIGTERM, exit code 143)")
        );
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_job_payload_too_large_for_the_environment_is_refused_before_any_call() {
        let (p, mut v) = provider(settings());
        let err = p
            .start_job(JobRequest {
                instance_id: "fn1-job-big".into(),
                spec: spec(json!({"executionMode": "JOB"})),
                execution_id: "e".into(),
                trace_id: "t".into(),
                traceparent: String::new(),
                attempt: 1,
                payload: Bytes::from(vec![b' '; 200 * 1024]),
                timeout: Duration::from_secs(3),
                callback_url: "http://127.0.0.1:1/cb".into(),
                callback_token: "tok".into(),
            })
            .await
            .err()
            .unwrap();
        assert!(err.permanent);
        assert!(err.message.contains("DEPLOYMENT"), "{}", err.message);
        v.assert_idle(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn jobs_with_another_callback_host_join_the_configured_network() {
        let mut s = settings();
        s.network = Some("nanofaas-net".into());
        let (p, mut v) = provider(s);
        let job = tokio::spawn({
            let p = p.clone();
            async move {
                p.start_job(JobRequest {
                    instance_id: "fn1-job-3".into(),
                    spec: spec(json!({"executionMode": "JOB", "runtimeMode": "STDIO"})),
                    execution_id: "e3".into(),
                    trace_id: "t3".into(),
                    traceparent: String::new(),
                    attempt: 1,
                    payload: Bytes::from_static(b"{}"),
                    timeout: Duration::from_secs(3),
                    callback_url: "http://host.docker.internal:8080/v1/internal/executions".into(),
                    callback_token: "tok".into(),
                })
                .await
            }
        });
        let create = v.expect("POST", "/containers/create").await;
        let body = create.body();
        assert_eq!(body["HostConfig"]["NetworkMode"], "nanofaas-net");
        assert_eq!(
            body["HostConfig"]["ExtraHosts"],
            json!(["host.docker.internal:host-gateway"])
        );
        let env = env_of(&body);
        assert_eq!(env["EXECUTION_MODE"], "STDIO");
        assert!(!env.contains_key("RUNTIME_URL"));
        create.json(500, json!({"message": "disk full"}));
        let err = job.await.unwrap().err().unwrap();
        assert!(!err.permanent);
        assert!(err.message.contains("disk full"), "{}", err.message);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn orphans_of_dead_owners_on_this_host_are_removed_and_others_kept() {
        let (p, mut v) = provider(settings());
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.cleanup_orphans().await }
        });
        v.expect("GET", "/_ping").await.reply(200, "OK");
        let list = v.expect("GET", "/containers/json?all=true&filters=").await;
        assert!(
            list.path().contains("dev.nanofaas.owner"),
            "{}",
            list.path()
        );
        let host = hostname();
        list.json(
            200,
            json!([
                {"Id": "dead1", "Labels": {LABEL_OWNER: format!("{host}/1:1"), LABEL_INSTANCE: "a"}},
                // A generic (prewarmed) container a dead control plane left is an orphan too.
                {"Id": "deadstem", "Labels": {LABEL_OWNER: format!("{host}/1:1"), LABEL_KIND: "prewarmed", LABEL_FUNCTION: "(prewarmed)"}},
                {"Id": "mine", "Labels": {LABEL_OWNER: p.owner()}},
                {"Id": "other-host", "Labels": {LABEL_OWNER: "elsewhere/1:1"}},
                {"Id": "garbage", "Labels": {LABEL_OWNER: "???"}},
            ]),
        );
        v.expect("DELETE", "/containers/dead1").await.reply(204, "");
        v.expect("DELETE", "/containers/deadstem")
            .await
            .reply(204, "");
        assert_eq!(task.await.unwrap(), 2);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn an_unreachable_engine_makes_cleanup_a_logged_no_op() {
        let (p, mut v) = provider(settings());
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.cleanup_orphans().await }
        });
        v.expect("GET", "/_ping").await.fail("connection refused");
        assert_eq!(task.await.unwrap(), 0);
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn shutdown_refuses_new_starts_and_removes_what_it_owns() {
        let (p, mut v) = provider(settings());
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.shutdown().await }
        });
        let list = v.expect("GET", "/containers/json").await;
        assert!(
            list.path().contains(&encode_owner(p.owner())),
            "{}",
            list.path()
        );
        list.json(200, json!([{"Id": "straggler", "Labels": {}}]));
        v.expect("DELETE", "/containers/straggler")
            .await
            .reply(204, "");
        task.await.unwrap();
        let err = p
            .start(StartRequest {
                instance_id: "late".into(),
                spec: spec(json!({})),
            })
            .await
            .err()
            .unwrap();
        assert!(err.message.contains("shutting down"));
        v.assert_idle(Duration::from_millis(100)).await;
    }

    fn encode_owner(owner: &str) -> String {
        api::encode(owner)
    }

    #[tokio::test]
    async fn container_address_mode_uses_the_network_ip() {
        let mut s = settings();
        s.address = Address::Container;
        s.network = Some("net1".into());
        let (p, _v) = provider(s);
        let mut i: ContainerInspect = serde_json::from_value(inspect_json(1, true)).unwrap();
        i.network_settings.networks.insert(
            "net1".into(),
            api::EndpointSettings {
                ip_address: "10.1.2.3".into(),
            },
        );
        assert_eq!(p.address(&i).unwrap(), "10.1.2.3:8080".parse().unwrap());
        let cfg = p.container_config(&spec(json!({})), "i", "warm", vec![], p.warm_host_config());
        assert!(cfg.get("ExposedPorts").is_none());
        assert_eq!(cfg["HostConfig"]["NetworkMode"], "net1");
        assert!(cfg["HostConfig"].get("PortBindings").is_none());
    }

    #[test]
    fn validation_wants_an_image() {
        let (p, _v) = provider(settings());
        let only_cmd =
            FunctionSpec::from_json(br#"{"name":"f","command":"python3 x.py"}"#).unwrap();
        let e = p.validate(&only_cmd).unwrap_err();
        assert_eq!(e.field, "image");
        let pool = FunctionSpec::from_json(
            br#"{"name":"f","executionMode":"POOL","endpointUrl":"http://127.0.0.1:1/invoke"}"#,
        )
        .unwrap();
        assert!(p.validate(&pool).is_ok());
        assert!(p
            .validate(&spec(json!({"command": "ignored here"})))
            .is_ok());
    }

    #[test]
    fn image_references_that_cannot_be_valid_are_refused() {
        for ok in [
            "nanofaas/example:1",
            "python",
            "python:3.11-slim",
            "registry.example.com:5000/team/fn:v1.2_3",
            "localhost/fn",
            "ghcr.io/a/b/c",
            "fn@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image_reference(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Nanofaas/Example",
            "fn:",
            "fn:-x",
            "a//b",
            "-a",
            "a/",
            "fn@sha256:xyz",
            "fn@nope",
            "host:99999/fn",
            "fn:tag:again",
            &format!("a/{}", "b".repeat(260)),
        ] {
            let e = check_image_reference(bad).unwrap_err();
            assert!(e.contains("not a valid image reference"), "{bad}: {e}");
        }
    }

    #[test]
    fn resources_docker_cannot_honour_are_refused_at_registration() {
        let (p, _v) = provider(settings());
        let e = p
            .validate(&spec(json!({"resources": {"memory": "5Mi"}})))
            .unwrap_err();
        assert_eq!(e.field, "resources.memory");
        assert!(e.reason.contains("6 MiB"), "{}", e.reason);
        let e = p
            .validate(&spec(json!({"resources": {"cpu": "100000"}})))
            .unwrap_err();
        assert_eq!(e.field, "resources.cpu");
        let e = p
            .validate(&spec(json!({"image": "Bad/Image"})))
            .unwrap_err();
        assert_eq!(e.field, "image");
        assert!(p
            .validate(&spec(
                json!({"resources": {"memory": "64Mi", "cpu": "500m"}})
            ))
            .is_ok());
    }

    #[test]
    fn owners_loopback_and_reasons() {
        let me = hostname();
        assert!(!owner_dead_here(&owner_identity(), &me));
        assert!(owner_dead_here(&format!("{me}/1:1"), &me));
        assert!(!owner_dead_here("elsewhere/1:1", &me));
        assert!(!owner_dead_here("garbage", &me));
        assert!(loopback_url("http://127.0.0.1:8080/v1/internal/executions"));
        assert!(loopback_url("http://localhost/x"));
        assert!(loopback_url("http://[::1]:80/x"));
        assert!(!loopback_url("http://172.17.0.1:8080/x"));
        assert!(!loopback_url("http://host.docker.internal:8080/x"));
        assert_eq!(
            url_host("http://host.docker.internal:8080/x"),
            "host.docker.internal"
        );
        assert_eq!(exit_reason(3, None), "the container exited with code 3");
        assert!(exit_reason(137, None).contains("SIGKILL"));
    }
}
