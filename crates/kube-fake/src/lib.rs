//! A fake Kubernetes API server for pods and events, with a simulated scheduler and kubelet
//! that run every accepted pod for real, as a Docker container of the pod's image (or, in the
//! fake-containers mode, as nothing at all, for scale tests).
//!
//! No cluster can run on the test machines (no image pulls, no API server binary), so the
//! `kubernetes` provider is tested against this: real HTTP, spoken by `kube`'s unchanged
//! client, on loopback. The fake works on JSON objects (no typed Kubernetes structs), serves
//! plain HTTP without authentication, and answers the calls a client makes for pods and events
//! as the real API does, including the `Status` error bodies.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nanofaas_kube_fake::{Containers, FakeApi, Options};
//! let fake = FakeApi::start(Options { containers: Containers::Fake, ..Options::default() }).await?;
//! let url = fake.url(); // http://127.0.0.1:PORT: the kubeconfig's server
//! std::fs::write("kubeconfig", fake.kubeconfig("default"))?;
//! // ... drive it with kube::Client, and /_fake/ for faults ...
//! fake.shutdown().await; // removes every container it started
//! # Ok(()) }
//! ```
//!
//! The binary `nanofaas-kube-fake` serves the same on `127.0.0.1:0` and prints
//! `listening on http://127.0.0.1:PORT` on stdout (see `--help`).
//!
//! # Layout
//! - [`cluster`]: the state (pods, events, the resourceVersion counter, the watch history,
//!   nodes, request statistics) behind the [`Cluster`] handle; create, delete, garbage
//!   collection by owner reference.
//! - [`server`]: paths, query parameters, lists, watch streams and the `/_fake/` endpoints.
//! - [`kubelet`]: one task per pod: scheduling, image check, start, readiness probe,
//!   restarts with back-off, stop on delete, eviction and node loss.
//! - [`docker`]: the `docker` command: a container spec to `docker run` arguments, state.
//! - [`selector`]: label and field selectors.
//! - [`status`]: `Status` error objects, timestamps, uids and generated names.
//!
//! # Call by call: the real API, and the fake
//!
//! | call | the real API server | the fake | differences |
//! | --- | --- | --- | --- |
//! | `POST /api/v1/namespaces/{ns}/pods` | validates, defaults, stores; `201` with the object; `409 AlreadyExists` for a taken name; `422 Invalid` with `details.causes` for a bad object; `generateName` gets a 5-character suffix | the same; sets `uid`, `resourceVersion`, `creationTimestamp`, `status.phase=Pending`, `qosClass`, and the spec defaults a client reads (`restartPolicy`, `terminationGracePeriodSeconds`, `dnsPolicy`, `schedulerName`, `imagePullPolicy`, ...) | validation covers names, `spec.containers` (present, named, unique, with an image) and `restartPolicy` only; every namespace exists (the real one answers `404` for a missing namespace); no admission (no service-account token volume, no LimitRanges); a taken `generateName` is not retried |
//! | `GET .../pods/{name}` | the object, or `404 NotFound` (`pods "x" not found`) | the same | |
//! | `GET .../pods`, `GET /api/v1/pods` (list) | `PodList` with `metadata.resourceVersion`; `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!`), `fieldSelector` on the supported fields; `limit` and `continue` pages | the same, items sorted by namespace and name, without `kind`/`apiVersion` as on the wire | a `continue` page reads the current state (the real one a snapshot at the first page's version); `resourceVersion`/`resourceVersionMatch` are accepted and ignored: every list is the latest state |
//! | `GET ...?watch=true` | newline-delimited `{"type","object"}`: `ADDED`, `MODIFIED`, `DELETED`; from `resourceVersion=N` the changes after N; unset or `0`: synthetic `ADDED` for every existing object first; `BOOKMARK` with `allowWatchBookmarks`; a version older than the compacted history: an `ERROR` event with `Status` `410 Expired` (`too old resource version: N (M)`); closed after `timeoutSeconds` | the same; the history keeps the last `Options::history_window` changes (or `POST /_fake/compact` drops it all), bookmarks come every `Options::bookmark_interval` | bookmarks are more frequent than the real minute; a watcher too slow for `Options::watch_buffer` changes gets the same `410 ERROR` (the real cache closes it without an event); a version in the future streams from it (the real one waits, then `504`); a label change does not produce a `DELETED` for a selector that stops matching (no client changes labels here) |
//! | `DELETE .../pods/{name}` | with the pod's or the request's `gracePeriodSeconds` (query or `DeleteOptions` body, `preconditions.uid`): sets `deletionTimestamp` (MODIFIED), the kubelet stops the containers (SIGTERM, SIGKILL at the grace's end) and removes the object (DELETED); grace `0`, an unbound or a terminal pod: DELETED at once; `200` with the object | the same (the kubelet's `docker stop -t grace` kills at the grace's end); if the kubelet never reports, the object goes `Options::delete_slack` after the grace | `propagationPolicy` is ignored: dependents are always collected in the background |
//! | `DELETE .../pods?labelSelector=` | deletes every match, `200` with a `PodList` of them | the same | |
//! | `GET .../pods/{name}/log` | the container's output from the kubelet; `container`, `previous`, `tailLines`, `timestamps`, `sinceSeconds`, `limitBytes`; `400` while it waits to start (`container "x" in pod "y" is waiting to start: ContainerCreating`) or without a previous container; `follow=true`: a chunked `text/plain` stream of the lines as they are written (from the start, or from the last `tailLines`; `tailLines=0`: only new ones) that ends when the container terminates; a terminated container's log is served whole while its pod exists | the same, from `docker logs` (stdout and stderr merged: by time for a whole log, as they are read for `follow`, which runs `docker logs --follow`); the kubelet keeps a pod's last two containers for it | `sinceSeconds`, `limitBytes` are ignored; fake containers have empty logs, and their `follow` stream stays open and empty until the container terminates or is replaced (checked every 200 ms) |
//! | scheduling conditions | the scheduler binds (`spec.nodeName`, condition `PodScheduled=True`, event `Scheduled` from `default-scheduler`), or sets `PodScheduled=False` with reason `Unschedulable` and a message such as `0/3 nodes are available: 3 Insufficient cpu. preemption: ...`, and writes a `Warning` event `FailedScheduling` with the same message (repeats aggregated); it retries when the cluster changes, and a cluster autoscaler may add a node | the same condition, reason, message and event while `POST /_fake/scheduling {"refuse": true, "message"}` holds or every node has failed; the pod is bound as soon as scheduling is accepted again or a node recovers | no resources, affinities or taints are evaluated: refusal is all or nothing; the message is the one given (default: `Insufficient cpu` on every node) |
//! | owner references | the garbage collector deletes a dependent once all its owners are gone, and one created with owners that do not exist | the same for owners of kind `Pod` (by `uid`); owners of other kinds count as present | no foreground deletion, no `blockOwnerDeletion` |
//! | `GET/LIST/WATCH .../events` | core/v1 Events, `fieldSelector` on `involvedObject.*`, `reason`, `type`, ... | the events its scheduler and kubelet write: `Scheduled`, `FailedScheduling`, `Pulling`, `Pulled`, `Failed` (`ErrImagePull`, `ImagePullBackOff`, start errors), `BackOff`, `Created`, `Started`, `Killing`, `Evicted`; repeats aggregate into `count` | events cannot be created by clients (`405`); `events.k8s.io/v1` is not served; at most `Options::max_events` are kept |
//! | `PATCH/PUT .../pods/{name}/status` | a kubelet's status writes | internal ([`Cluster::update_pod`]); over HTTP `405` | |
//! | `/api`, `/api/v1`, `/version`, `/healthz` | discovery | minimal answers (`kube`'s `Api<Pod>` calls the resource paths directly and needs none) | no `/apis` groups, no OpenAPI |
//! | authentication | tokens, certificates, RBAC | none: plain HTTP on loopback | RBAC is tested by the manifests' own tests, not here |
//!
//! # The simulated kubelet
//!
//! Nodes are `fake-node-1..N` (round-robin, `Options::nodes`), hostIP `192.168.49.1x`. For each
//! pod: bind (`PodScheduled`, event `Scheduled`), or while scheduling is refused or every node
//! has failed, `PodScheduled=False` `Unschedulable` and a `FailedScheduling` event. Then the
//! first container (a pod's other containers are reported waiting: the fake runs one):
//! - **image**: never pulled. Absent from the engine: `Pulling`, `Failed` events, `waiting:
//!   ErrImagePull`, then `ImagePullBackOff`, retried with back-off (`Options::backoff` doubling
//!   to `Options::backoff_max`; the real kubelet's is 10 s to 5 min). `imagePullPolicy: Always`
//!   is treated as `IfNotPresent`.
//! - **start**: `docker run` on the default bridge with the pod's `command` (ENTRYPOINT) and
//!   `args` (CMD) as Kubernetes maps them, `env` (values, and fieldRefs to `metadata.*`,
//!   `spec.nodeName`, `status.hostIP`; not `status.podIP`), `workingDir`, limits (`--memory`,
//!   `--cpus`), and the security context (`runAsUser`/`runAsGroup`, `readOnlyRootFilesystem`,
//!   `allowPrivilegeEscalation: false`, capabilities, `privileged`; `runAsNonRoot` is checked
//!   against the image's user as the kubelet does: `CreateContainerConfigError`). Containers
//!   carry the label `dev.nanofaas.kube-fake=<instance>`. `status.podIP` is the container's
//!   bridge IP, reachable from the host.
//! - **readiness**: the `readinessProbe` (`httpGet` on podIP, `tcpSocket`; `exec` counts as
//!   passing) with its `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, thresholds;
//!   without a probe, Ready once running. Liveness and startup probes are not run.
//! - **exit**: by `restartPolicy`: `Never`, or `OnFailure` with code 0: `terminated`, phase
//!   `Succeeded`/`Failed`. Otherwise restarted: the first at once, then `CrashLoopBackOff` with
//!   back-off and a `BackOff` event; `restartCount` and `lastState.terminated` as the kubelet.
//! - **delete**: `Killing` event, `docker stop -t grace`, `terminated`, then DELETED.
//!
//! Fake-containers mode ([`Containers::Fake`]): no engine; a pod becomes Running and Ready
//! `Options::fake_ready_delay` after it is bound, with a fresh IP in `10.244.0.0/16`; probes
//! are not run; `POST /_fake/images` marks an image absent, `/_fake/pods/{ns}/{name}/exit`
//! makes its container exit.
//!
//! # Control endpoints (`/_fake/`)
//! - `POST /_fake/pods/{ns}/{name}/evict` (`{"message"}`): the kubelet kills the container,
//!   status `Failed` reason `Evicted`, event `Evicted`, then the pod is deleted.
//! - `POST /_fake/pods/{ns}/{name}/exit?code=N`: fake containers only: the container exits.
//! - `POST /_fake/nodes/{node}/fail` | `recover`, `GET /_fake/nodes`: a failed node takes no new
//!   pods; its pods' containers die at once, `Ready=False` (`NodeLost`) and a
//!   `DisruptionTarget` condition, then after `Options::node_lost_delay` they are deleted (the
//!   real node lifecycle takes minutes and needs a force delete; the outcome is the same).
//! - `POST /_fake/scheduling` `{"refuse": true|false, "message"}`: refuse (or accept again).
//! - `POST /_fake/images` `{"image", "missing": true|false}`: fake containers: image absent.
//! - `POST /_fake/compact`: drops the watch history (every older version then gets `410`);
//!   `POST /_fake/history?window=N`: keep only N changes.
//! - `GET /_fake/stats`: API requests per verb (`get`, `list`, `watch`, `create`, `delete`,
//!   `deletecollection`, ...) and each request's time in ms since start; each pod's creation
//!   and first Ready (`pods`: `createdMs`, `readyMs`, with its name and labels; the first 100,000
//!   pods since a reset), so a client can subtract the simulated start from its own timings; `POST
//!   /_fake/stats/reset` clears both.

pub mod cluster;
pub mod docker;
pub mod kubelet;
pub mod selector;
pub mod server;
pub mod status;

pub use cluster::Cluster;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the simulated kubelet runs containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containers {
    /// For real, on the local Docker engine.
    Docker,
    /// Not at all: pods become Running and Ready after `fake_ready_delay`.
    Fake,
}

/// The fake's settings; [`Options::default`] is what the binary uses without flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub containers: Containers,
    /// Address to bind (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// Simulated nodes (default 3).
    pub nodes: usize,
    /// Changes the watch history keeps (default 10,000); older versions get 410.
    pub history_window: usize,
    /// Changes a watcher may fall behind before it is closed with 410 (default 65,536).
    pub watch_buffer: usize,
    /// Between bookmarks on watches that allow them (default 5 s).
    pub bookmark_interval: Duration,
    /// A watch without `timeoutSeconds` ends after this (default 30 min, as the real minimum).
    pub watch_timeout_default: Duration,
    /// Back-off after the first failure, doubling (default 1 s; the kubelet's is 10 s).
    pub backoff: Duration,
    /// Back-off ceiling (default 10 s; the kubelet's is 5 min).
    pub backoff_max: Duration,
    /// Fake containers: from bound to Running and Ready (default 50 ms).
    pub fake_ready_delay: Duration,
    /// Fake containers: how long a stop takes (default 0).
    pub fake_stop_delay: Duration,
    /// From a node's failure to its pods' deletion (default 200 ms).
    pub node_lost_delay: Duration,
    /// After a graceful delete's grace, how long the API waits for the kubelet's report before
    /// removing the object anyway (default 30 s; the real API waits for ever).
    pub delete_slack: Duration,
    /// Events kept (default 20,000).
    pub max_events: usize,
    /// This fake's id, the value of the label on its containers (default random).
    pub instance: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            containers: Containers::Docker,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 3,
            history_window: 10_000,
            watch_buffer: 65_536,
            bookmark_interval: Duration::from_secs(5),
            watch_timeout_default: Duration::from_secs(1800),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            fake_ready_delay: Duration::from_millis(50),
            fake_stop_delay: Duration::ZERO,
            node_lost_delay: Duration::from_millis(200),
            delete_slack: Duration::from_secs(30),
            max_events: 20_000,
            instance: format!("{:012x}", status::random_u64() & 0xffff_ffff_ffff),
        }
    }
}

/// A running fake API server and its kubelet.
pub struct FakeApi {
    addr: SocketAddr,
    cluster: Cluster,
    task: JoinHandle<()>,
    cleaned: bool,
}

impl FakeApi {
    /// Binds, and serves until [`FakeApi::shutdown`] (or drop). In Docker mode, containers left
    /// by fakes that were killed are removed first.
    pub async fn start(options: Options) -> std::io::Result<FakeApi> {
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        if options.containers == Containers::Docker {
            docker::remove_all(&options.instance).await;
        }
        let cluster = Cluster::new(options);
        let c = cluster.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set so that aborting this task closes them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let c = c.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| server::handle(c.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(FakeApi {
            addr,
            cluster,
            task,
            cleaned: false,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state, for in-process tests that want to look or act without HTTP.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A kubeconfig whose current context points at this fake, with `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        kubeconfig(&self.url(), namespace)
    }

    /// Stops serving and removes every container this fake started.
    pub async fn shutdown(mut self) {
        self.task.abort();
        self.cluster.close();
        if self.cluster.options().containers == Containers::Docker {
            // A start under way removes its own container once it sees the fake closed; wait
            // (bounded: a `docker run` times out after a minute) so none is missed.
            let deadline = std::time::Instant::now() + Duration::from_secs(70);
            while self.cluster.starting() > 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            docker::remove_all(&self.cluster.options().instance).await;
        }
        self.cleaned = true;
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
        self.cluster.close();
        if !self.cleaned && self.cluster.options().containers == Containers::Docker {
            // Best effort without a runtime: the containers carry this instance's label.
            let filter = format!(
                "label={}={}",
                docker::LABEL_INSTANCE,
                self.cluster.options().instance
            );
            if let Ok(out) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let _ = std::process::Command::new("docker")
                        .arg("rm")
                        .arg("-f")
                        .args(&ids)
                        .output();
                }
            }
        }
    }
}

/// A kubeconfig (YAML) with one cluster `kube-fake` at `url`, no credentials.
pub fn kubeconfig(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-fake\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-fake\n  context:\n    cluster: kube-fake\n    user: kube-fake\n    namespace: {namespace}\ncurrent-context: kube-fake\nusers:\n- name: kube-fake\n  user: {{}}\npreferences: {{}}\n"
    )
}
