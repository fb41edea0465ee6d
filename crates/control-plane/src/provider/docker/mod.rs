//! The `docker` provider: each instance is a container on a Docker Engine (or Podman's
//! compatible API) reached over its Unix socket. `image` in the spec names the image.
//!
//! # Files
//! - `mod.rs`: [`DockerProvider`] and its state (an entry per container it started, the
//!   address mode `auto` settled on, the prewarm pool), [`DockerSettings`], [`from_config`],
//!   and the [`Provider`] impl that wires the parts below together (`validate`, `start`,
//!   `start_job`, `stop`, `list`, `shutdown`).
//! - `container.rs`: what a container is made of: the create body of warm and JOB containers
//!   (entrypoint, environment, labels, limits, network, published port), the image reference
//!   check, and the address the control plane reaches a warm container at
//!   (`provider.docker.address`).
//! - `lifecycle.rs`: one container through the engine: created (a missing image pulled),
//!   registered and started, a warm one probed until ready and leased, stopped, a failed start
//!   cleaned up and explained.
//! - `watch.rs`: a running container followed: its output (to the log, the tail kept), its end
//!   (why, removal, `exited`), the watchdog's health probe, its processes on this host.
//! - `orphans.rs`: this control plane's owner identity and, at start-up, the engine checked and
//!   the containers of dead control planes of this host removed.
//! - `prewarm.rs`: generic containers per image (the prewarm pool's `Stems`) and their
//!   specialization.
//! - [`api`]: the Engine API client; [`unix`]: its production transport; `fake.rs` (unit tests
//!   only): a scripted engine.
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
//! # Prewarmed containers
//! With `provider.docker.prewarm` > 0, each image of a DEPLOYMENT HTTP function has that many
//! generic containers waiting (started by [`DockerProvider::start_warm`] with `stem`, labelled
//! `prewarmed`); a cold start takes one, applies the function's limits with the engine's update
//! and specializes it (`prewarm`).
//!
//! The engine is reached through [`api::Transport`]: [`unix::UnixTransport`] in production, a
//! scripted fake (`fake.rs`) in the unit tests. This module must not shell out to a `docker` CLI.

pub mod api;
mod container;
#[cfg(test)]
mod fake;
mod lifecycle;
mod orphans;
mod prewarm;
pub mod unix;
mod watch;

pub(crate) use container::{check_image_reference, MAX_ENV_PAYLOAD};
pub use container::{
    container_name, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_KIND, LABEL_OWNER, MIN_MEMORY,
    RUNTIME_PORT, RUNTIME_SOCKET, WATCHDOG_PATH, WATCHDOG_PORT,
};
pub(crate) use lifecycle::{WATCHDOG_EXIT_CONFIG, WATCHDOG_EXIT_SPAWN};

use super::shared::{join_all, LogTail, TAIL_LINES};
use super::{
    ExitWatch, Instance, InstanceInfo, Job, JobRequest, PrewarmError, Provider, StartFailure,
    StartRequest,
};
use crate::dispatch::BoxFuture;
use crate::prewarm::{PrewarmPool, PrewarmSettings};
use api::Engine;
use nanofaas_api::{ExecutionMode, FunctionSpec, ValidationError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use watch::only_child;

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
            owner: orphans::owner_identity(),
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

    fn prewarmed_for(&self, spec: &FunctionSpec) -> usize {
        crate::prewarm::Kind::of_image(spec).map_or(0, |k| self.prewarm.ready(&k))
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
            let config = self.job_config(&req)?;
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
        Box::pin(orphans::cleanup(self))
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
    use crate::provider::exit::wait_exit;
    use bytes::Bytes;
    use serde_json::{json, Value};
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
}
