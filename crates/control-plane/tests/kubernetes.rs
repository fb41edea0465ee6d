//! The `kubernetes` provider end to end: the real `nanofaas serve` binary with
//! `provider.type = "kubernetes"` and a kubeconfig pointing at the fake API server of
//! `crates/kube-fake` (plain HTTP on loopback, no authentication), whose simulated kubelet runs
//! every pod as a real container of its image on this machine's Docker engine. `kube`'s client
//! is used unchanged; the tests look at the cluster through the fake's own API (pods by label)
//! and act on it through its `/_fake/` control endpoints (evict, node failure, compaction).
//!
//! Docker is needed: without a reachable engine every test prints SKIPPED and passes, unless
//! `NANOFAAS_REQUIRE_DOCKER=1`, which turns a missing engine into a failure (as the Docker tier).
//! The images: `nanofaas/python-runtime` (from `scripts/docker-images.sh python` when the engine
//! does not have it, or always with `NANOFAAS_K8S_REBUILD_IMAGES=1`) plus a small test function
//! built here on top of it.
//!
//! The control plane listens on the Docker bridge's gateway address (with
//! `api.insecure_no_auth`, for the test only), so that JOB pods, which are containers on that
//! bridge, reach its callback URL; warm pods are reached at their pod IP (the container's
//! bridge IP) and the watchdog's port, as in a cluster.
//!
//! # Where the fake differs from a real cluster
//! The fake's crate documents its API call by call; what matters for these tests:
//! - Images are never pulled: an image the engine lacks is `ErrImagePull`, then
//!   `ImagePullBackOff` (the real kubelet would try the registry first; the pod status and
//!   the events are the same).
//! - A failed node's pods are marked `Ready=False` with a `DisruptionTarget` condition and
//!   deleted after a moment; a real node lifecycle controller takes about 5 minutes (and the
//!   pods of an unreachable kubelet need a forced deletion). The provider treats the condition
//!   as the loss, so it reacts the same way in both, only sooner here.
//! - Every namespace exists, there is no RBAC and no admission (no LimitRange, no Pod
//!   Security admission; the pods' restricted security context is checked by the unit tests
//!   of `pod.rs`, and `runAsNonRoot` by the fake's kubelet as a real one does).
//! - Compaction (`/_fake/compact`) drops the whole watch history at once; a real API server
//!   compacts every 5 minutes. A watch renewed after it gets `410 Gone` as from a real one.
//! - Pod IPs are Docker bridge addresses reachable from this machine; in a cluster the
//!   control plane reaches pod IPs through the cluster network.

#![cfg(feature = "kubernetes")]

mod common;

use common::docker::{docker_images, engine_or_skip};
use nanofaas_kube_fake::{FakeApi, Options};
use nanofaas_testkit::{http, workspace_bin, Proc, Stream};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

const NS: &str = "nanofaas-fns";
const TEST_IMAGE: &str = "nanofaas/test-python-k8s:latest";

/// Who served the call (pod host name, nanofaas instance, process), how many calls that
/// process served, an optional sleep, and optional lines printed on stdout and stderr.
const HANDLER: &str = r#"
import os, socket, sys, time

_calls = 0

def handle(request):
    global _calls
    _calls += 1
    data = request.get("input") or {}
    if isinstance(data, dict) and data.get("sleepMs"):
        time.sleep(int(data["sleepMs"]) / 1000)
    if isinstance(data, dict) and data.get("say"):
        print("out: " + str(data["say"]), flush=True)
        print("err: " + str(data["say"]), file=sys.stderr, flush=True)
    return {"pid": os.getpid(), "host": socket.gethostname(), "calls": _calls, "echo": data,
            "instance": os.environ.get("NANOFAAS_INSTANCE"), "uid": os.getuid()}
"#;

fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker command")
}

/// The test function's image, rebuilt only when its inputs changed.
fn build_test_image() {
    use sha2::{Digest, Sha256};
    let dir = std::env::temp_dir().join(format!("nanofaas-k8s-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dockerfile = "FROM nanofaas/python-runtime:latest\nCOPY handler.py /function/\n";
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("handler.py"), HANDLER).unwrap();
    let base = docker_cli(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "nanofaas/python-runtime:latest",
    ]);
    let mut h = Sha256::new();
    h.update(dockerfile);
    h.update(HANDLER);
    h.update(&base.stdout);
    let hash: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let lock = std::fs::File::create(std::env::temp_dir().join("nanofaas-k8s-image.lock"))
        .expect("lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe {
        libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX);
    }
    let current = docker_cli(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"dev.nanofaas.inputs\"}}",
        TEST_IMAGE,
    ]);
    if String::from_utf8_lossy(&current.stdout).trim() != hash {
        let label = format!("dev.nanofaas.inputs={hash}");
        let out = docker_cli(&[
            "build",
            "-q",
            "--label",
            &label,
            "-t",
            TEST_IMAGE,
            dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "building {TEST_IMAGE} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    std::fs::remove_dir_all(dir).ok();
}

/// The Docker bridge's gateway: an address of this machine that containers on the bridge reach
/// (the engine's `Gateway`, else the first address of its subnet, as the engine assigns it).
fn bridge_gateway() -> String {
    let out = docker_cli(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let (first, second) = (parts.next().unwrap_or(""), parts.next());
    let gw = match (first.parse::<std::net::Ipv4Addr>(), second) {
        (Ok(ip), _) if !first.contains('/') => ip,
        _ => {
            let subnet = if first.contains('/') {
                first
            } else {
                second.unwrap_or("")
            };
            let net: std::net::Ipv4Addr = subnet
                .split('/')
                .next()
                .unwrap_or("")
                .parse()
                .unwrap_or_else(|_| panic!("cannot find the docker bridge's address in {text:?}"));
            std::net::Ipv4Addr::from(u32::from(net) + 1)
        }
    };
    gw.to_string()
}

/// A fake cluster, its kubeconfig, and where the control plane listens.
struct Cluster {
    fake: FakeApi,
    dir: PathBuf,
    kubeconfig: PathBuf,
    gateway: String,
    tag: String,
}

/// The fake cluster for one test, or `None` after a loud skip (no Docker engine).
async fn cluster(tag: &str, options: Options) -> Option<Cluster> {
    engine_or_skip().await?;
    tokio::task::spawn_blocking(|| {
        // The provider is under test, not the image: a runtime image already on the engine is
        // used as it is (the Docker tier checks the images themselves), so that these tests do
        // not queue behind image builds of other checkouts on a shared engine.
        let have = docker_cli(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            "nanofaas/python-runtime:latest",
        ]);
        if !have.status.success()
            || std::env::var("NANOFAAS_K8S_REBUILD_IMAGES").as_deref() == Ok("1")
        {
            docker_images("python");
        }
        build_test_image();
    })
    .await
    .expect("image preparation");
    let fake = FakeApi::start(options)
        .await
        .expect("start the fake API server");
    let tag = format!("{tag}-{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("nanofaas-k8s-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(NS)).unwrap();
    Some(Cluster {
        fake,
        dir,
        kubeconfig,
        gateway: bridge_gateway(),
        tag,
    })
}

fn options() -> Options {
    Options {
        backoff: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        node_lost_delay: Duration::from_millis(300),
        ..Options::default()
    }
}

/// A running `nanofaas serve`.
struct Cp {
    proc: Proc,
    base: String,
}

impl Cluster {
    /// Starts `nanofaas serve` on the bridge gateway with the kubernetes provider, owner id
    /// `owner`, the test's state folder, and `extra` settings.
    async fn serve(&self, owner: &str, extra: &[&str]) -> Cp {
        let mut cmd = Command::new(workspace_bin("nanofaas"));
        cmd.args([
            "serve",
            "--listen",
            &format!("{}:0", self.gateway),
            "--state-dir",
        ])
        .arg(self.dir.join("state"));
        let mut settings = vec![
            "provider.type=kubernetes".to_string(),
            format!(
                "provider.kubernetes.kubeconfig={}",
                self.kubeconfig.display()
            ),
            format!("provider.kubernetes.owner={owner}"),
            "provider.kubernetes.labels=team=tests".to_string(),
            "provider.stop_grace_ms=2000".to_string(),
            "provider.startup_timeout_ms=30000".to_string(),
            "pool.start_backoff_ms=50".to_string(),
            "admission.retry_backoff_ms=20".to_string(),
            "api.insecure_no_auth=true".to_string(),
        ];
        settings.extend(extra.iter().map(|s| s.to_string()));
        for s in settings {
            cmd.arg("--set").arg(s);
        }
        cmd.env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAME")
            .env_remove("POD_UID");
        let proc = Proc::spawn(cmd).expect("start nanofaas serve");
        let line = proc
            .wait_line_async(Stream::Stdout, Duration::from_secs(60), |l| {
                l.starts_with("nanofaas listening on ")
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "nanofaas serve printed no listening line:\n{}",
                    proc.output()
                )
            });
        let base = line
            .trim_start_matches("nanofaas listening on ")
            .trim()
            .to_string();
        Cp { proc, base }
    }

    /// The pods of `owner` (the fake's view), as JSON objects.
    async fn pods(&self, selector: &str) -> Vec<Value> {
        let url = format!(
            "{}/api/v1/namespaces/{NS}/pods?labelSelector={}",
            self.fake.url(),
            selector.replace('=', "%3D").replace(',', "%2C")
        );
        let r = http("GET", &url, &[], "").await.expect("list pods");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().cloned().unwrap_or_default()
    }

    async fn owned(&self, owner: &str) -> Vec<Value> {
        self.pods(&format!("nanofaas.dev/owner={owner}")).await
    }

    /// Waits until `owner`'s pods satisfy `ok`; fails with them after `within`.
    async fn wait_pods(
        &self,
        owner: &str,
        within: Duration,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let pods = self.owned(owner).await;
            if ok(&pods) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "pods of {owner} never reached the expected state: {:#?}",
                pods.iter().map(summary).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = http(
            "POST",
            &format!("{}/_fake/{path}", self.fake.url()),
            &[],
            body.to_string(),
        )
        .await
        .expect("fake control call");
        assert!(r.status < 300, "/_fake/{path}: {} {}", r.status, r.text());
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    async fn delete_pod(&self, name: &str) {
        let url = format!(
            "{}/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0",
            self.fake.url()
        );
        let r = http("DELETE", &url, &[], "").await.expect("delete pod");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    async fn stats(&self) -> Value {
        let r = http("GET", &format!("{}/_fake/stats", self.fake.url()), &[], "")
            .await
            .expect("stats");
        r.json()
    }

    async fn finish(self) {
        let dir = self.dir.clone();
        self.fake.shutdown().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

fn summary(p: &Value) -> String {
    format!(
        "{} phase={} deleting={} node={}",
        p["metadata"]["name"].as_str().unwrap_or("?"),
        p["status"]["phase"].as_str().unwrap_or("?"),
        p["metadata"]["deletionTimestamp"].is_string(),
        p["spec"]["nodeName"].as_str().unwrap_or("-"),
    )
}

fn live(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| {
            !p["metadata"]["deletionTimestamp"].is_string()
                && p["status"]["phase"].as_str() == Some("Running")
        })
        .collect()
}

impl Cp {
    async fn post(&self, path: &str, body: Value) -> nanofaas_testkit::client::Response {
        http(
            "POST",
            &format!("{}{path}", self.base),
            &[],
            body.to_string(),
        )
        .await
        .expect("request to the control plane")
    }

    async fn deploy(&self, name: &str, extra: Value) {
        let mut spec = json!({"name": name, "image": TEST_IMAGE, "timeoutMs": 20000});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let r = self.post("/v1/functions", spec).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }

    async fn invoke(&self, name: &str, input: Value) -> nanofaas_testkit::client::Response {
        self.post(
            &format!("/v1/functions/{name}:invoke"),
            json!({ "input": input }),
        )
        .await
    }

    async fn instances(&self, name: &str) -> Vec<Value> {
        let r = http(
            "GET",
            &format!("{}/v1/functions/{name}/instances", self.base),
            &[],
            "",
        )
        .await
        .unwrap();
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (shutdown deletes the pods first).
    async fn stop(mut self) {
        self.proc.signal(libc::SIGTERM).unwrap();
        let st = self.proc.wait_exit_async(Duration::from_secs(60)).await;
        assert!(
            st.is_some(),
            "nanofaas serve did not exit after SIGTERM:\n{}",
            self.proc.output()
        );
    }
}

fn ok_output(r: &nanofaas_testkit::client::Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["output"].clone()
}

#[tokio::test]
async fn a_cold_start_then_warm_calls_on_the_same_pod_and_shutdown_deletes_it() {
    let Some(k) = cluster("warm", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy(
        "hello",
        json!({"resources": {"memory": "256Mi", "cpu": "500m"}}),
    )
    .await;
    assert!(
        k.owned(&owner).await.is_empty(),
        "no pod before the first call"
    );

    let first = cp.invoke("hello", json!({"n": 0})).await;
    let out = ok_output(&first);
    assert_eq!(first.header("x-cold-start"), Some("true"));
    let pods = k.owned(&owner).await;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod = &pods[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(out["host"], name, "served by the pod's container");
    assert_ne!(out["uid"], 0, "not root");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "nanofaas");
    assert_eq!(labels["nanofaas.dev/function"], "hello");
    assert_eq!(labels["nanofaas.dev/owner"], owner.as_str());
    assert_eq!(labels["nanofaas.dev/instance"], name);
    assert_eq!(labels["team"], "tests");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));

    for i in 1..=10 {
        let r = cp.invoke("hello", json!({"n": i})).await;
        let o = ok_output(&r);
        assert_eq!(r.header("x-cold-start"), Some("false"), "call {i} was cold");
        assert_eq!(o["host"], name, "call {i} on another pod");
        assert_eq!(o["pid"], out["pid"], "call {i} in another process");
    }
    assert_eq!(o_calls(&cp, "hello").await, 11);
    assert_eq!(k.owned(&owner).await.len(), 1);

    cp.stop().await;
    let left = k.owned(&owner).await;
    assert!(left.is_empty(), "shutdown left pods: {left:#?}");
    k.finish().await;
}

async fn o_calls(cp: &Cp, name: &str) -> u64 {
    let inst = cp.instances(name).await;
    inst.iter()
        .map(|i| i["invocations"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn the_pool_grows_to_max_instances_and_back_after_the_idle_timeout() {
    let Some(k) = cluster("grow", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = std::sync::Arc::new(k.serve(&owner, &[]).await);
    cp.deploy(
        "grow",
        json!({"maxInstances": 3, "instanceConcurrency": 1, "concurrency": 6, "queueSize": 20, "idleTimeoutMs": 1500}),
    )
    .await;
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let cp = cp.clone();
            tokio::spawn(async move { cp.invoke("grow", json!({"sleepMs": 1500, "i": i})).await })
        })
        .collect();
    let mut hosts = std::collections::BTreeSet::new();
    for c in calls {
        let r = c.await.unwrap();
        hosts.insert(ok_output(&r)["host"].as_str().unwrap().to_string());
    }
    assert_eq!(hosts.len(), 3, "six slow calls on three pods: {hosts:?}");
    let pods = k.owned(&owner).await;
    assert_eq!(pods.len(), 3, "never more than maxInstances: {pods:#?}");
    // Idle for 1.5 s: every pod is deleted.
    k.wait_pods(&owner, Duration::from_secs(20), |p| p.is_empty())
        .await;
    let cp = std::sync::Arc::into_inner(cp).unwrap();
    cp.stop().await;
    k.finish().await;
}

#[tokio::test]
async fn a_job_runs_in_its_own_pod_which_is_deleted_when_it_ends() {
    let Some(k) = cluster("job", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy("job", json!({"executionMode": "JOB"})).await;
    let mut hosts = Vec::new();
    for i in 0..2 {
        let r = cp.invoke("job", json!({"i": i})).await;
        let o = ok_output(&r);
        assert_eq!(o["echo"]["i"], i);
        assert_eq!(o["calls"], 1, "a fresh process per JOB");
        hosts.push(o["host"].as_str().unwrap().to_string());
        // The pod goes once the execution ends.
        k.wait_pods(&owner, Duration::from_secs(15), |p| p.is_empty())
            .await;
    }
    assert_ne!(hosts[0], hosts[1], "one pod per execution");
    assert!(hosts[0].starts_with("nf-job-job-"), "{hosts:?}");
    cp.stop().await;
    k.finish().await;
}

#[tokio::test]
async fn a_pod_deleted_from_outside_mid_call_fails_over_to_a_new_pod() {
    let Some(k) = cluster("lost", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = std::sync::Arc::new(k.serve(&owner, &[]).await);
    cp.deploy("lost", json!({"maxRetries": 2, "minInstances": 1}))
        .await;
    let first = ok_output(&cp.invoke("lost", json!({})).await);
    let victim = first["host"].as_str().unwrap().to_string();
    let slow = {
        let cp = cp.clone();
        tokio::spawn(async move { cp.invoke("lost", json!({"sleepMs": 4000})).await })
    };
    // Wait until the slow call runs on the pod, then delete the pod under it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inst = cp.instances("lost").await;
        if inst.iter().any(|i| i["inflight"].as_u64() == Some(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow call never started: {inst:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    k.delete_pod(&victim).await;
    let r = slow.await.unwrap();
    let o = ok_output(&r);
    assert_ne!(
        o["host"].as_str().unwrap(),
        victim,
        "the retry ran on a new pod"
    );
    // The pool replaced the lost pod (minInstances 1): one pod, not the victim.
    let pods = k
        .wait_pods(&owner, Duration::from_secs(20), |p| {
            p.len() == 1 && p[0]["metadata"]["name"].as_str() != Some(victim.as_str())
        })
        .await;
    assert_eq!(live(&pods).len(), 1);
    let cp = std::sync::Arc::into_inner(cp).unwrap();
    cp.stop().await;
    assert!(k.owned(&owner).await.is_empty());
    k.finish().await;
}

#[tokio::test]
async fn a_node_failure_under_load_loses_no_call() {
    let Some(k) = cluster("node", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = std::sync::Arc::new(k.serve(&owner, &[]).await);
    cp.deploy(
        "node",
        json!({"minInstances": 3, "maxInstances": 3, "instanceConcurrency": 1, "concurrency": 3,
               "queueSize": 100, "maxRetries": 3}),
    )
    .await;
    let pods = k
        .wait_pods(&owner, Duration::from_secs(30), |p| live(p).len() == 3)
        .await;
    let node = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    let on_node: Vec<String> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(&node))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let load: Vec<_> = (0..30)
        .map(|i| {
            let cp = cp.clone();
            tokio::spawn(async move { cp.invoke("node", json!({"sleepMs": 200, "i": i})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    k.control(&format!("nodes/{node}/fail"), json!({})).await;
    for (i, c) in load.into_iter().enumerate() {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "call {i} failed: {}", r.text());
    }
    // The lost pods are replaced on the nodes that are left.
    let pods = k
        .wait_pods(&owner, Duration::from_secs(30), |p| {
            live(p).len() == 3
                && p.iter().all(|x| {
                    !on_node.contains(&x["metadata"]["name"].as_str().unwrap_or("").to_string())
                })
        })
        .await;
    assert!(pods
        .iter()
        .all(|p| p["spec"]["nodeName"].as_str() != Some(&node)));
    let cp = std::sync::Arc::into_inner(cp).unwrap();
    cp.stop().await;
    assert!(k.owned(&owner).await.is_empty());
    k.finish().await;
}

#[tokio::test]
async fn an_unpullable_image_is_a_startup_error_naming_err_image_pull() {
    let Some(k) = cluster("pull", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "nopull", "image": "nanofaas/not-on-this-engine:1.0"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = Instant::now();
    let r = cp.invoke("nopull", json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], "STARTUP_ERROR", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("ErrImagePull"), "{msg}");
    assert!(msg.contains("not-on-this-engine"), "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "well within the start timeout"
    );
    k.wait_pods(&owner, Duration::from_secs(10), |p| p.is_empty())
        .await;
    cp.stop().await;
    k.finish().await;
}

#[tokio::test]
async fn delete_removes_the_pods_and_a_restart_removes_what_a_killed_control_plane_left() {
    let Some(k) = cluster("restart", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy("gone", json!({"minInstances": 2, "maxInstances": 2}))
        .await;
    k.wait_pods(&owner, Duration::from_secs(30), |p| live(p).len() == 2)
        .await;
    // DELETE answers at once; the function's pods are deleted right after.
    let r = http("DELETE", &format!("{}/v1/functions/gone", cp.base), &[], "")
        .await
        .unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    k.wait_pods(&owner, Duration::from_secs(15), |p| p.is_empty())
        .await;

    // Killed with pods running: the next start with the same owner id deletes them.
    cp.deploy("kept", json!({"minInstances": 2, "maxInstances": 2}))
        .await;
    let before = k
        .wait_pods(&owner, Duration::from_secs(30), |p| live(p).len() == 2)
        .await;
    let mut cp = cp;
    cp.proc.kill();
    let names: Vec<String> = before
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(k.owned(&owner).await.len(), 2, "the pods outlive a kill -9");
    let cp = k.serve(&owner, &[]).await;
    // Ready to serve means the orphans are gone (the restored function may start new ones).
    let now = k.owned(&owner).await;
    assert!(
        now.iter()
            .all(|p| !names.contains(&p["metadata"]["name"].as_str().unwrap().to_string())),
        "orphans left: {:#?}",
        now.iter().map(summary).collect::<Vec<_>>()
    );
    cp.stop().await;
    assert!(k.owned(&owner).await.is_empty());
    k.finish().await;
}

#[tokio::test]
async fn a_watch_that_expires_lists_again_and_keeps_tracking_pods() {
    let Some(k) = cluster("gone410", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k
        .serve(&owner, &["provider.kubernetes.watch_timeout_s=1"])
        .await;
    cp.deploy("expire", json!({"maxRetries": 2})).await;
    let first = ok_output(&cp.invoke("expire", json!({})).await);
    let stats = k.stats().await;
    let lists_before = stats["counts"]["list"].as_u64().unwrap();
    // A change the control plane's watch does not see (another owner's pod), then the history
    // dropped: the renewal of its watch (within a second) asks for a version older than what
    // is left, gets 410, and lists again.
    let other = json!({"metadata": {"name": "someone-else", "labels": {"nanofaas.dev/owner": "another"}},
        "spec": {"containers": [{"name": "c", "image": "nanofaas/not-on-this-engine:1.0"}]}});
    let r = http(
        "POST",
        &format!("{}/api/v1/namespaces/{NS}/pods", k.fake.url()),
        &[],
        other.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    k.control("compact", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lists = k.stats().await["counts"]["list"].as_u64().unwrap();
        if lists > lists_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch never listed again after the compaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still tracked after the re-list: a pod deleted from outside is replaced.
    let victim = first["host"].as_str().unwrap().to_string();
    k.delete_pod(&victim).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let inst = cp.instances("expire").await;
        if inst.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lost pod stayed in the pool: {inst:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = ok_output(&cp.invoke("expire", json!({})).await);
    assert_ne!(o["host"].as_str().unwrap(), victim);
    cp.stop().await;
    assert!(k.owned(&owner).await.is_empty());
    k.finish().await;
}

#[tokio::test]
async fn an_unschedulable_pod_fails_its_start_after_the_grace_naming_the_schedulers_reason() {
    let Some(k) = cluster("unsched", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k
        .serve(&owner, &["provider.kubernetes.unschedulable_grace_ms=1500"])
        .await;
    cp.deploy("nowhere", json!({})).await;
    k.control(
        "scheduling",
        json!({"refuse": true, "message": "0/3 nodes are available: 3 Insufficient memory."}),
    )
    .await;
    let t = Instant::now();
    let r = cp.invoke("nowhere", json!({})).await;
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], "STARTUP_ERROR", "{err}");
    let msg = err["message"].as_str().unwrap();
    for part in [
        "PodScheduled=False",
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient memory.",
        "unschedulable_grace_ms",
        "FailedScheduling",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    // After the grace (1.5 s), well before the start timeout (30 s).
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    k.wait_pods(&owner, Duration::from_secs(10), |p| p.is_empty())
        .await;
    // Schedulable again: a pod starts once the pool's start back-off (50 ms, doubling; while
    // it lasts calls fail at once with the last reason) has passed.
    k.control("scheduling", json!({"refuse": false})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cp.invoke("nowhere", json!({})).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.json()["error"]["code"], "STARTUP_ERROR", "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "never started again: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.stop().await;
    assert!(k.owned(&owner).await.is_empty());
    k.finish().await;
}

#[tokio::test]
async fn an_unschedulable_pod_without_a_grace_fails_at_the_start_timeout_naming_the_reason() {
    let Some(k) = cluster("unsched-to", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &["provider.startup_timeout_ms=2500"]).await;
    cp.deploy("stuck", json!({})).await;
    k.control("scheduling", json!({"refuse": true})).await;
    let t = Instant::now();
    let r = cp.invoke("stuck", json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("could not be scheduled within 2500 ms: PodScheduled=False, Unschedulable: 0/3 nodes are available"),
        "{msg}"
    );
    assert!(t.elapsed() >= Duration::from_millis(2500));
    k.wait_pods(&owner, Duration::from_secs(10), |p| p.is_empty())
        .await;
    k.control("scheduling", json!({"refuse": false})).await;
    cp.stop().await;
    k.finish().await;
}

#[tokio::test]
async fn a_container_that_crashes_at_start_is_a_startup_error_with_its_output_every_time() {
    let Some(k) = cluster("crash", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy(
        "crashy",
        json!({"runtimeCommand": "python3 -c \"import sys; print('boom: no handler here', file=sys.stderr); sys.exit(3)\""}),
    )
    .await;
    // Each call's start fails the same way (the pool's restarts are a crash loop): every
    // answer names the reason, within the start timeout.
    for _ in 0..2 {
        let t = Instant::now();
        let r = cp.invoke("crashy", json!({})).await;
        assert_eq!(r.status, 503, "{}", r.text());
        let err = &r.json()["error"];
        assert_eq!(err["code"], "STARTUP_ERROR", "{err}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains("failed to start"), "{msg}");
        assert!(msg.contains("boom: no handler here"), "{msg}");
        assert!(msg.contains("exit code"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    }
    k.wait_pods(&owner, Duration::from_secs(10), |p| p.is_empty())
        .await;
    cp.stop().await;
    k.finish().await;
}

/// The pod's log stream reaches the logs hub: what the function prints (stdout and stderr) is
/// in `GET /v1/functions/{name}/logs`, with its instance.
#[tokio::test]
async fn what_a_function_prints_in_its_pod_is_in_its_functions_logs() {
    let Some(k) = cluster("flogs", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy("talkative", json!({"instanceConcurrency": 1}))
        .await;
    let r = cp.invoke("talkative", json!({"say": "hello-logs"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = http(
            "GET",
            &format!("{}/v1/functions/talkative/logs", cp.base),
            &[],
            "",
        )
        .await
        .unwrap();
        assert_eq!(f.status, 200, "{}", f.text());
        let v = f.json();
        let has = |stream: &str, text: &str| {
            v["lines"].as_array().is_some_and(|ls| {
                ls.iter().any(|l| {
                    l["stream"] == stream
                        && l["text"] == text
                        && l["instanceId"].as_str().is_some_and(|i| !i.is_empty())
                })
            })
        };
        if has("stdout", "out: hello-logs") && has("stderr", "err: hello-logs") {
            break;
        }
        assert!(Instant::now() < deadline, "the lines never arrived: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.stop().await;
    k.finish().await;
}

/// The lines reach the hub through the pod's log stream, possibly after the call has answered
/// (kubelet and API server latency; here `docker logs --follow` through the fake): the hub
/// keeps an execution's late lines until the watchdog's end marker (`logs::LATE_LINES_MS`).
#[tokio::test]
async fn what_a_function_prints_in_its_pod_is_in_its_executions_logs() {
    let Some(k) = cluster("logs", options()).await else {
        return;
    };
    let owner = format!("cp-{}", k.tag);
    let cp = k.serve(&owner, &[]).await;
    cp.deploy("talker", json!({"instanceConcurrency": 1})).await;
    let mut seen = Vec::new();
    for word in ["first-call", "second-call"] {
        let r = cp.invoke("talker", json!({"say": word})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.json()["executionId"].as_str().unwrap().to_string();
        // The lines travel the pod's log stream (kubelet, API server), which may deliver them
        // after the call's answer: read until the execution's logs are sealed by the
        // watchdog's end marker, bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        let logs = loop {
            let r = http(
                "GET",
                &format!("{}/v1/executions/{id}/logs", cp.base),
                &[],
                "",
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let logs = r.json();
            if logs["lines"].as_array().is_some_and(|l| l.len() >= 2) {
                break logs;
            }
            if Instant::now() >= deadline {
                let f = http(
                    "GET",
                    &format!("{}/v1/functions/talker/logs", cp.base),
                    &[],
                    "",
                )
                .await
                .unwrap();
                panic!("no lines for {id}: {logs}; the function's: {}", f.text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let lines: Vec<(String, String)> = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["stream"].as_str().unwrap_or("").to_string(),
                    l["text"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(
            lines.contains(&("stdout".into(), format!("out: {word}"))),
            "{logs}"
        );
        assert!(
            lines.contains(&("stderr".into(), format!("err: {word}"))),
            "{logs}"
        );
        // Only this call's lines.
        assert!(
            lines
                .iter()
                .all(|(_, t)| seen.iter().all(|w: &String| !t.contains(w.as_str()))),
            "{logs}"
        );
        seen.push(word.to_string());
    }
    cp.stop().await;
    k.finish().await;
}

/// The provider's own cost of a cold start, printed for `bench/run.sh kubernetes` (run with
/// `--ignored`; `NANOFAAS_K8S_BENCH_STARTS` starts, default 50): the provider alone against
/// the fake in fake-containers mode with no start delay, so the time from `start` to a ready
/// `Instance` is what the provider and the API add (pod built, rate-limited create, the
/// kubelet's status writes as watch events, the event to the waiting start) with no container
/// start at all. One line `BENCH {json}` on stdout. The pods stay until the end (deleted
/// together by the provider's shutdown), so that only starts are timed.
///
/// `cargo nextest run -p nanofaas-control-plane --test kubernetes --run-ignored only
/// --no-capture bench_`
#[tokio::test]
#[ignore]
async fn bench_provider_cold_start_overhead() {
    use nanofaas_control_plane::provider::kubernetes::{config::Source, pod::PodSettings};
    use nanofaas_control_plane::provider::kubernetes::{KubernetesProvider, KubernetesSettings};
    use nanofaas_control_plane::provider::{Provider, StartRequest};
    let n: usize = std::env::var("NANOFAAS_K8S_BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let fake = FakeApi::start(Options {
        containers: nanofaas_kube_fake::Containers::Fake,
        fake_ready_delay: Duration::ZERO,
        ..Options::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("nanofaas-k8s-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, fake.kubeconfig(NS)).unwrap();
    let p = KubernetesProvider::new(KubernetesSettings {
        source: Source::File {
            path: kc,
            context: None,
        },
        namespace: String::new(),
        api_qps: 0.0,
        api_burst: 1,
        callback_url: String::new(),
        own_namespace: None,
        watch_timeout_s: 290,
        unschedulable_grace: None,
        follow_logs: false,
        pod: PodSettings {
            pull_policy: nanofaas_control_plane::config::PullPolicy::IfNotPresent,
            pull_secrets: vec![],
            watchdog_port: 8080,
            labels: Default::default(),
            annotations: Default::default(),
            owner: format!("bench-{}", std::process::id()),
            owner_ref: None,
            startup_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(1),
            log_tags: false,
        },
    });
    p.cleanup_orphans().await;
    let spec = std::sync::Arc::new(
        nanofaas_api::FunctionSpec::from_json(
            json!({"name": "bench", "image": TEST_IMAGE})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    let mut ms = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let inst = p
            .start(StartRequest {
                instance_id: format!("bench-{i:012x}"),
                spec: spec.clone(),
            })
            .await
            .unwrap_or_else(|f| panic!("start {i}: {}", f.message));
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(inst);
    }
    let (requests, _) = p.api_requests();
    p.shutdown().await;
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "BENCH {}",
        json!({"label": "k8s-provider-cold-start-overhead", "starts": n,
               "p50_ms": pick(0.5), "p90_ms": pick(0.9), "min_ms": ms[0],
               "api_requests": requests})
    );
    fake.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

/// The fake's watch stream under load, line by line, as `kube` reads it: 1,000 pods created at
/// once (fake containers: no engine needed), then all deleted with a grace; every line of a
/// watch over them must parse as a `WatchEvent<Pod>`, as every line of the real API does.
/// kube's watcher turns a line that does not into a watch error (`Status` with code 0) and
/// loses that event; the fake once wrote `startedAt: ""` in the terminated state of a stopped
/// fake container, which is not a Time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_busy_watch_parses_as_a_pod_event() {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::WatchEvent;
    const N: usize = 1000;
    let fake = FakeApi::start(Options {
        containers: nanofaas_kube_fake::Containers::Fake,
        history_window: 100_000,
        ..Options::default()
    })
    .await
    .unwrap();
    let url = format!(
        "{}/api/v1/namespaces/{NS}/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=120&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnanofaas",
        fake.url()
    );
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().unwrap()).await.expect("watch");
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let (mut ready, mut bad, mut lines) = (std::collections::HashSet::new(), Vec::new(), 0);
        let mut deleted = 0;
        while deleted < N {
            let Some(frame) = body.frame().await else {
                break;
            };
            let Ok(data) = frame.expect("watch body").into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                lines += 1;
                match serde_json::from_str::<WatchEvent<Pod>>(&line) {
                    Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                        let st = p.status.unwrap_or_default();
                        let is_ready = st
                            .conditions
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True");
                        if is_ready && st.pod_ip.is_some() {
                            ready.insert(p.metadata.name.unwrap_or_default());
                        }
                    }
                    Ok(WatchEvent::Deleted(_)) => deleted += 1,
                    Ok(WatchEvent::Error(s)) => bad.push(format!("ERROR event {s:?}")),
                    Ok(_) => {}
                    Err(e) => bad.push(format!("{e}: {line}")),
                }
            }
        }
        (ready.len(), deleted, bad, lines)
    });
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..N {
        let sem = sem.clone();
        let url = format!("{}/api/v1/namespaces/{NS}/pods", fake.url());
        creates.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let pod = json!({"metadata": {"name": format!("nf-busy-{i}"),
                    "labels": {"app.kubernetes.io/managed-by": "nanofaas", "nanofaas.dev/owner": "busy"}},
                "spec": {"restartPolicy": "Always", "containers": [{"name": "function", "image": "bench/echo:1",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
                    "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]}});
            let r = http("POST", &url, &[], pod.to_string()).await.unwrap();
            assert_eq!(r.status, 201, "{}", r.text());
        });
    }
    while let Some(r) = creates.join_next().await {
        r.unwrap();
    }
    // Once all are running: a graceful delete stops each container (terminated, Succeeded),
    // then the pod goes.
    let list = format!(
        "{}/api/v1/namespaces/{NS}/pods?labelSelector=nanofaas.dev%2Fowner%3Dbusy",
        fake.url()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = http("GET", &list, &[], "").await.unwrap();
        let items = r.json()["items"].as_array().cloned().unwrap_or_default();
        if items.len() == N && items.iter().all(|p| p["status"]["phase"] == "Running") {
            break;
        }
        assert!(Instant::now() < deadline, "the pods never all ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http("DELETE", &list, &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (ready, deleted, bad, lines) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("every pod's readiness and deletion on the watch within 2 minutes")
        .unwrap();
    assert_eq!(deleted, N);
    assert!(
        bad.is_empty(),
        "{} of {lines} watch lines are not pod events, first ones:\n{}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(ready, N);
    fake.shutdown().await;
}
