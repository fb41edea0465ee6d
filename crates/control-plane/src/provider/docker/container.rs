//! What a container of the docker provider is made of: the create body of warm and JOB
//! containers (entrypoint, environment, labels, limits, network, the published watchdog port)
//! and the names and constants it is built from, the image reference check `validate` uses,
//! and the address the control plane reaches a warm container at.
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
//! # JOB callbacks
//! A one-shot container posts its result to the callback URL. When that URL's host is a
//! loopback address (the default: the control plane on `127.0.0.1`), the job container uses
//! the host's network (`NetworkMode: host`) so the URL works unchanged. Otherwise it joins
//! `provider.docker.network`; a callback host of `host.docker.internal` is mapped to the
//! engine's host gateway, for a control plane listening on the bridge (set
//! `callback_base_url = "http://host.docker.internal:PORT/v1/internal/executions"`).

use super::api::ContainerInspect;
use super::watch::probe_health;
use super::{Address, DockerProvider, AUTO_CONTAINER, AUTO_PUBLISHED, AUTO_UNKNOWN};
use crate::provider::{JobRequest, StartFailure};
use nanofaas_api::{FunctionSpec, RuntimeMode};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

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
pub(super) const ENV_FUNCTION: &str = "NANOFAAS_FUNCTION";

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

pub(super) fn free_loopback_port() -> Result<u16, StartFailure> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartFailure {
            message: format!("cannot find a free port on 127.0.0.1: {e}"),
            permanent: false,
        })
}

impl DockerProvider {
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

    /// The create body of a warm container of `spec`, or (`stem`) of a generic one of its
    /// kind (`WARM_PREWARM=1`, labelled `prewarmed`); with the kind it is labelled with.
    pub(super) fn warm_config(
        &self,
        spec: &FunctionSpec,
        id: &str,
        stem: bool,
    ) -> (Value, &'static str) {
        let mut env = crate::provider::shared::container_warm_env(
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
        (config, kind)
    }

    /// The create body of a JOB container: the invocation in its environment (refused when too
    /// large for it), the host's network for a loopback callback URL, else the configured one.
    pub(super) fn job_config(&self, req: &JobRequest) -> Result<Value, StartFailure> {
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
        Ok(self.container_config(spec, &req.instance_id, "job", env, host))
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
    pub(super) async fn choose_address(
        &self,
        published: SocketAddr,
        i: &ContainerInspect,
    ) -> SocketAddr {
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
    pub(super) fn address(&self, i: &ContainerInspect) -> Result<SocketAddr, String> {
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
}

#[cfg(test)]
mod tests {
    use super::super::api;
    use super::super::tests::{env_of, inspect_json, provider, settings, spec};
    use super::*;
    use crate::provider::Provider;
    use bytes::Bytes;

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
    fn loopback_callback_urls_and_their_hosts() {
        assert!(loopback_url("http://127.0.0.1:8080/v1/internal/executions"));
        assert!(loopback_url("http://localhost/x"));
        assert!(loopback_url("http://[::1]:80/x"));
        assert!(!loopback_url("http://172.17.0.1:8080/x"));
        assert!(!loopback_url("http://host.docker.internal:8080/x"));
        assert_eq!(
            url_host("http://host.docker.internal:8080/x"),
            "host.docker.internal"
        );
    }
}
