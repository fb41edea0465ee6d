//! The docker provider against a real container engine: the gated tier. Without a reachable
//! engine every test here prints SKIPPED and passes, unless `NANOFAAS_REQUIRE_DOCKER=1` (CI's
//! `.ci/run` sets it), which turns a missing engine into a failure.
//!
//! Images come from `scripts/docker-images.sh` (reused when their inputs did not change; the
//! first run on a machine builds a local Debian base and takes a few minutes), plus a small test
//! function image built here on top of `nanofaas/python-runtime`. Every test uses function
//! names unique to its process, and checks the engine itself (containers by label) for what the
//! provider claims.

mod common;

use common::docker::*;
use common::*;
use nanofaas_control_plane::provider::docker::api::Engine;
use nanofaas_control_plane::provider::docker::{
    Address, DockerProvider, DockerSettings, Pull, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_OWNER,
};
use nanofaas_control_plane::provider::{Provider, StartRequest};
use nanofaas_testkit::Proc;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const EXAMPLE_IMAGE: &str = "nanofaas/example-python-hello:latest";
const JAVA_EXAMPLE_IMAGE: &str = "nanofaas/example-java-hello:latest";
const TEST_IMAGE: &str = "nanofaas/test-python:latest";

/// The test function: who served the call (process, container host name, nanofaas instance),
/// how many calls that process served, and an optional sleep.
const TEST_HANDLER: &str = r#"
import os, socket, time

_calls = 0

def handle(request):
    global _calls
    _calls += 1
    data = request.get("input") or {}
    if isinstance(data, dict) and data.get("sleepMs"):
        time.sleep(int(data["sleepMs"]) / 1000)
    if isinstance(data, dict) and data.get("allocMb"):
        hog = b"x" * (int(data["allocMb"]) << 20)  # touched, so it counts against the limit
        del hog
    return {"pid": os.getpid(), "host": socket.gethostname(), "calls": _calls, "echo": data,
            "instance": os.environ.get("NANOFAAS_INSTANCE")}
"#;

/// The engine (after building the images the tests run), or `None` after a loud skip.
async fn docker() -> Option<Engine> {
    let engine = engine_or_skip().await?;
    tokio::task::spawn_blocking(prepare_images)
        .await
        .expect("image preparation");
    Some(engine)
}

/// Builds (or reuses) every image the tests run.
fn prepare_images() {
    docker_images("examples");
    build_test_image();
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker command")
}

/// The test function's image, rebuilt only when the handler or the runtime image changed.
fn build_test_image() {
    use sha2::{Digest, Sha256};
    let dir = std::env::temp_dir().join(format!("nanofaas-test-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dockerfile = "FROM nanofaas/python-runtime:latest\nCOPY handler.py /function/\n";
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("handler.py"), TEST_HANDLER).unwrap();
    let runtime = docker_cli(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "nanofaas/python-runtime:latest",
    ]);
    let mut h = Sha256::new();
    h.update(dockerfile);
    h.update(TEST_HANDLER);
    h.update(&runtime.stdout);
    let hash: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    // One build at a time across test processes.
    let lock = std::fs::File::create(std::env::temp_dir().join("nanofaas-test-image.lock"))
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

fn unique(tag: &str) -> String {
    format!("dk-{tag}-{}", std::process::id())
}

async fn deploy(cp: &Cp, name: &str, image: &str, extra: Value) {
    let mut spec = json!({"name": name, "image": image, "timeoutMs": 20000});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let r = cp.post("/v1/functions", spec).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn invoke(cp: &Cp, name: &str, input: Value) -> nanofaas_testkit::client::Response {
    cp.post(
        &format!("/v1/functions/{name}:invoke"),
        json!({ "input": input }),
    )
    .await
}

async fn instances(cp: &Cp, name: &str) -> Vec<Value> {
    cp.get(&format!("/v1/functions/{name}/instances"))
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_python_function_is_cold_once_then_warm_in_the_same_container_and_process() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("warm");
    deploy(&cp, &name, EXAMPLE_IMAGE, json!({})).await;
    assert!(
        containers(&engine, &name).await.is_empty(),
        "nothing before the first call"
    );

    let first = invoke(&cp, &name, json!({"name": "Ada"})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cold-start"), Some("true"));
    let out = first.json()["output"].clone();
    assert_eq!(out["greeting"], "Hello, Ada!");
    let pid = out["pid"].as_u64().unwrap();
    let inst = instances(&cp, &name).await;
    assert_eq!(inst.len(), 1, "{inst:?}");
    let container = inst[0]["container"].as_str().unwrap().to_string();
    for i in 0..20 {
        let r = invoke(&cp, &name, json!({"name": format!("n{i}")})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cold-start"), Some("false"), "call {i} was cold");
        assert_eq!(
            r.json()["output"]["pid"].as_u64().unwrap(),
            pid,
            "call {i} ran in another process"
        );
    }
    let inst = instances(&cp, &name).await;
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0]["container"].as_str().unwrap(), container);
    assert_eq!(inst[0]["invocations"], 21);
    // The engine agrees: one container, that one, labelled as ours.
    let summaries = engine
        .list(&[format!("{LABEL_FUNCTION}={name}")])
        .await
        .unwrap();
    assert_eq!(summaries.len(), 1);
    assert!(summaries[0].id.starts_with(&container));
    assert_eq!(
        summaries[0].label(LABEL_INSTANCE),
        inst[0]["id"].as_str(),
        "instance label"
    );
    let owner = summaries[0].label(LABEL_OWNER).unwrap_or_default();
    assert!(
        owner.contains(&format!("/{}:", std::process::id())),
        "owner label {owner:?} names this process"
    );

    cp.shutdown().await;
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "shutdown left containers: {left:?}");
}

#[tokio::test]
async fn a_java_function_runs_warm_in_its_container() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("java");
    deploy(&cp, &name, JAVA_EXAMPLE_IMAGE, json!({})).await;
    let first = invoke(&cp, &name, json!({"name": "Ada"})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cold-start"), Some("true"));
    assert_eq!(first.json()["output"]["greeting"], "Hello, Ada!");
    assert_eq!(first.json()["output"]["runtime"], "java");
    let pid = first.json()["output"]["pid"].as_u64().unwrap();
    for i in 0..5 {
        let r = invoke(&cp, &name, json!({"name": i.to_string()})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cold-start"), Some("false"));
        assert_eq!(r.json()["output"]["pid"].as_u64().unwrap(), pid, "same JVM");
    }
    assert_eq!(containers(&engine, &name).await.len(), 1);
    cp.shutdown().await;
    assert!(none_left(&engine, &name).await.is_empty());
}

#[tokio::test]
async fn a_runtime_that_cannot_start_gives_startup_error_with_its_output() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("broken");
    deploy(
        &cp,
        &name,
        TEST_IMAGE,
        json!({"runtimeCommand": "python3 -c \"import sys; print('boom: the handler is missing', file=sys.stderr); sys.exit(3)\""}),
    )
    .await;
    let r = invoke(&cp, &name, json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], "STARTUP_ERROR");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("boom: the handler is missing") && msg.contains("failed to start"),
        "the container's output is in the message: {msg}"
    );
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "a failed start left containers: {left:?}");
    cp.shutdown().await;
}

/// The provider on its own against the engine: start, logs, list, stop.
#[tokio::test]
async fn the_provider_reads_an_instances_logs_and_stops_it() {
    let Some(engine) = docker().await else { return };
    let provider = DockerProvider::new(
        engine.clone(),
        DockerSettings {
            network: None,
            address: Address::Published,
            pull: Pull::Never,
            startup_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
            log_lines_per_second: 100,
            prewarm: nanofaas_control_plane::prewarm::PrewarmSettings {
                count: 0,
                backoff: Duration::from_millis(100),
                backoff_max: Duration::from_millis(400),
            },
        },
    );
    let name = unique("logs");
    let spec = nanofaas_api::FunctionSpec::from_json(
        json!({"name": name, "image": TEST_IMAGE})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let id = format!("{name}-i1");
    let inst = provider
        .start(StartRequest {
            instance_id: id.clone(),
            spec: Arc::new(spec),
        })
        .await
        .unwrap_or_else(|f| panic!("start failed: {}", f.message));
    let health = http("GET", &inst.health_url.to_string(), &[], "")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    let logs = provider.logs(&id).await.expect("a known instance");
    assert!(
        logs.iter().any(|l| l.starts_with("NANOFAAS_READY ")),
        "the watchdog's READY line is in the logs: {logs:?}"
    );
    let listed = provider.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert!(
        listed[0].pid.is_some_and(|p| p > 1),
        "the host PID of the container"
    );
    let container = listed[0].container.clone().unwrap();
    assert_eq!(containers(&engine, &name).await.len(), 1);
    provider.stop(&id).await;
    assert!(provider.list().is_empty());
    assert!(
        containers(&engine, &name).await.is_empty(),
        "stop returns once the container {container} is gone"
    );
    assert!(inst.exited.borrow().is_some(), "exited fired");
    assert!(provider.logs(&id).await.is_none());
}

#[tokio::test]
async fn parallel_load_grows_containers_up_to_max_instances_and_no_further() {
    let Some(engine) = docker().await else { return };
    let cp = Arc::new(Cp::start(docker_config()).await);
    let name = unique("grow");
    deploy(
        &cp,
        &name,
        TEST_IMAGE,
        json!({"maxInstances": 3, "concurrency": 8, "queueSize": 20}),
    )
    .await;
    let mut calls = Vec::new();
    for i in 0..8 {
        let (cp, name) = (cp.clone(), name.clone());
        calls.push(tokio::spawn(async move {
            invoke(&cp, &name, json!({"sleepMs": 1500, "i": i})).await
        }));
    }
    // While the load runs, the engine never holds more than maxInstances containers.
    let mut most = 0;
    for _ in 0..40 {
        most = most.max(containers(&engine, &name).await.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut hosts = std::collections::BTreeSet::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        hosts.insert(r.json()["output"]["host"].as_str().unwrap().to_string());
    }
    assert!(most <= 3, "{most} containers for maxInstances 3");
    assert_eq!(
        hosts.len(),
        3,
        "eight slow calls spread over three containers: {hosts:?}"
    );
    assert_eq!(instances(&cp, &name).await.len(), 3);
    assert_eq!(containers(&engine, &name).await.len(), 3);
    Arc::into_inner(cp).unwrap().shutdown().await;
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "shutdown left containers: {left:?}");
}

#[tokio::test]
async fn killing_a_container_mid_call_fails_cleanly_and_the_pool_replaces_it() {
    let Some(engine) = docker().await else { return };
    let cp = Arc::new(Cp::start(docker_config()).await);
    let name = unique("kill");
    // One attempt only, so the killed call's own outcome is visible.
    deploy(&cp, &name, TEST_IMAGE, json!({"maxRetries": 1})).await;
    let warm = invoke(&cp, &name, json!({})).await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let victim = warm.json()["output"]["host"].as_str().unwrap().to_string();

    let slow = tokio::spawn({
        let (cp, name) = (cp.clone(), name.clone());
        async move { invoke(&cp, &name, json!({"sleepMs": 10000})).await }
    });
    let mut busy = false;
    for _ in 0..100 {
        let inst = instances(&cp, &name).await;
        if inst.first().is_some_and(|i| i["inflight"] == 1) {
            busy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(busy, "the slow call never reached the instance");
    engine.kill(&victim, "SIGKILL").await.expect("docker kill");
    let r = tokio::time::timeout(Duration::from_secs(15), slow)
        .await
        .expect("the killed call ends promptly, it does not hang")
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "INSTANCE_LOST", "{}", r.text());

    // The dead container is removed, and the next call gets a fresh one.
    let gone = async {
        for _ in 0..100 {
            let all = containers(&engine, &name).await;
            if !all.iter().any(|c| c.starts_with(&victim)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(gone.await, "the killed container was not removed");
    let next = invoke(&cp, &name, json!({})).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_ne!(next.json()["output"]["host"].as_str().unwrap(), victim);
    Arc::into_inner(cp).unwrap().shutdown().await;
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "shutdown left containers: {left:?}");
}

#[tokio::test]
async fn memory_and_cpu_limits_are_applied_to_the_container() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("limits");
    deploy(
        &cp,
        &name,
        TEST_IMAGE,
        json!({"resources": {"memory": "96Mi", "cpu": "500m"}, "env": {"GREETING": "hi"}}),
    )
    .await;
    let r = invoke(&cp, &name, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids = containers(&engine, &name).await;
    assert_eq!(ids.len(), 1);
    let i = engine.inspect(&ids[0]).await.unwrap();
    assert_eq!(i.host_config.memory, 96 << 20);
    assert_eq!(i.host_config.memory_swap, 96 << 20);
    assert_eq!(i.host_config.nano_cpus, 500_000_000);
    assert!(i
        .config
        .env
        .unwrap_or_default()
        .contains(&"GREETING=hi".to_string()));
    cp.shutdown().await;
    assert!(none_left(&engine, &name).await.is_empty());
}

#[tokio::test]
async fn a_runtime_killed_for_memory_ends_out_of_memory_at_once_tried_once() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("oom");
    deploy(
        &cp,
        &name,
        TEST_IMAGE,
        json!({"resources": {"memory": "64Mi"}, "maxInstances": 1}),
    )
    .await;
    let r = invoke(&cp, &name, json!({})).await;
    assert_eq!(r.status, 200, "warm first: {}", r.text());
    let started = std::time::Instant::now();
    let r = invoke(&cp, &name, json!({"allocMb": 200})).await;
    let took = started.elapsed();
    assert_eq!(r.status, 500, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "OUT_OF_MEMORY", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("64 MiB"), "the limit is named: {msg}");
    let id = v["executionId"].as_str().unwrap();
    let rec = cp.get(&format!("/v1/executions/{id}")).await.json();
    assert_eq!(
        rec["attempts"], 1,
        "a function failure is not retried: {rec}"
    );
    assert!(
        took < Duration::from_secs(3),
        "named within about a second of the kill, took {took:?}"
    );
    eprintln!(
        "OUT_OF_MEMORY answered {} ms after the call",
        took.as_millis()
    );
    // The watchdog survived (the runtime is the kernel's first choice) and restarted it: the
    // same container serves the next call.
    let before = containers(&engine, &name).await;
    let r = invoke(&cp, &name, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(containers(&engine, &name).await, before);
    let m = cp.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!("nanofaas_function_out_of_memory_total{{function=\"{name}\"}}")
        ),
        Some(1.0),
        "{m}"
    );
    cp.shutdown().await;
    assert!(none_left(&engine, &name).await.is_empty());
}

#[tokio::test]
async fn delete_removes_the_functions_containers() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("delete");
    deploy(&cp, &name, TEST_IMAGE, json!({"minInstances": 2})).await;
    let ready = async {
        for _ in 0..300 {
            let inst = instances(&cp, &name).await;
            if inst.len() == 2 && inst.iter().all(|i| i["state"] == "ready") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(ready.await, "minInstances 2 never became ready");
    assert_eq!(containers(&engine, &name).await.len(), 2);
    let r = http("DELETE", &cp.url(&format!("/v1/functions/{name}")), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "DELETE left containers: {left:?}");
    cp.shutdown().await;
}

#[tokio::test]
async fn job_mode_runs_one_container_per_call_and_completes_by_callback() {
    let Some(engine) = docker().await else { return };
    let cp = Cp::start(docker_config()).await;
    let name = unique("job");
    deploy(&cp, &name, TEST_IMAGE, json!({"executionMode": "JOB"})).await;
    let mut seen = Vec::new();
    for i in 0..2 {
        let r = invoke(&cp, &name, json!({"job": i})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cold-start"), Some("true"));
        let out = r.json()["output"].clone();
        assert_eq!(out["echo"], json!({"job": i}));
        assert_eq!(out["calls"], 1, "a fresh process per JOB call");
        let instance = out["instance"].as_str().unwrap().to_string();
        assert!(instance.starts_with(&format!("{name}-job-")), "{instance}");
        seen.push(instance);
        // Each call's container is removed once its result is in.
        let left = none_left(&engine, &name).await;
        assert!(left.is_empty(), "job container left behind: {left:?}");
    }
    assert_ne!(seen[0], seen[1], "one container per call");
    // A JOB result arrives only by the callback the container posts (JOB never reads an
    // answer from the instance), so the outputs above prove the callback path.
    cp.shutdown().await;
}

#[tokio::test]
async fn specs_docker_cannot_run_are_refused_at_registration() {
    let Some(_engine) = docker().await else {
        return;
    };
    let cp = Cp::start(docker_config()).await;
    for (spec, field, says) in [
        (
            json!({"name": "lim", "image": TEST_IMAGE, "resources": {"memory": "4Mi"}}),
            "resources.memory",
            "6 MiB",
        ),
        (
            json!({"name": "lim", "image": TEST_IMAGE, "resources": {"cpu": "100000"}}),
            "resources.cpu",
            "CPU",
        ),
        (
            json!({"name": "lim", "image": "Not/A:Valid:Reference"}),
            "image",
            "not a valid image reference",
        ),
    ] {
        let r = cp.post("/v1/functions", spec.clone()).await;
        assert_eq!(r.status, 400, "{spec}: {}", r.text());
        let text = r.text();
        assert!(
            text.contains(field) && text.contains(says),
            "{spec}: {text}"
        );
    }
    assert_eq!(cp.get("/v1/functions/lim").await.status, 404);
    cp.shutdown().await;
}

/// The real `nanofaas serve` on the docker provider.
struct Serve {
    proc: Proc,
    base: String,
}

async fn serve(state: &Path) -> Serve {
    let settings = [
        "provider.type=docker".to_string(),
        "provider.stop_grace_ms=2000".to_string(),
        // One generic container per image waits too (it must not outlive a killed control
        // plane either).
        "provider.docker.prewarm=1".to_string(),
    ];
    let (proc, base) = nanofaas_testkit::serve_nanofaas(state, &settings).await;
    Serve { proc, base }
}

async fn ready_instances(base: &str, name: &str, n: usize) -> bool {
    for _ in 0..300 {
        let r = http(
            "GET",
            &format!("{base}/v1/functions/{name}/instances"),
            &[],
            "",
        )
        .await
        .unwrap();
        if let Some(a) = r.json().as_array() {
            if a.len() == n && a.iter().all(|i| i["state"] == "ready") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The container name of the generic container waiting for `TEST_IMAGE`, once there is one.
async fn waiting_generic_container(base: &str) -> String {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = http("GET", &format!("{base}/v1/prewarmed"), &[], "")
            .await
            .unwrap()
            .json();
        let id = last.as_array().and_then(|a| {
            a.iter()
                .find(|k| k["image"] == TEST_IMAGE)
                .and_then(|k| k["ready"][0].as_str().map(String::from))
        });
        if let Some(id) = id {
            return nanofaas_control_plane::provider::docker::container_name(&id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no generic container of {TEST_IMAGE} within 60 s: {last}");
}

#[tokio::test]
async fn after_kill_9_of_the_control_plane_its_containers_stop_and_a_restart_removes_them() {
    let Some(engine) = docker().await else { return };
    let state = temp_state_dir("docker-restart");
    let name = unique("restart");
    let mut first = serve(&state).await;
    let r = http(
        "POST",
        &format!("{}/v1/functions", first.base),
        &[],
        json!({"name": name, "image": TEST_IMAGE, "minInstances": 2}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(ready_instances(&first.base, &name, 2).await);
    // Both started at the registration, before any generic container could be ready: cold,
    // labelled with the function.
    let old = containers(&engine, &name).await;
    assert_eq!(old.len(), 2);
    let stem = waiting_generic_container(&first.base).await;

    first.proc.signal(libc::SIGKILL).unwrap();
    assert!(first
        .proc
        .wait_exit_async(Duration::from_secs(10))
        .await
        .is_some());
    // Their lease connection closed with the control plane: every container stops by itself
    // within the documented time (the lease's 1 s reconnect grace, then the runtime's stop),
    // with no control plane running.
    let killed = std::time::Instant::now();
    let mut running = old.clone();
    while !running.is_empty() && killed.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        running = engine
            .list(&[format!("{LABEL_FUNCTION}={name}")])
            .await
            .expect("list containers")
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.id)
            .collect();
    }
    assert!(
        running.is_empty(),
        "containers still running {:?} after the control plane was killed: {running:?}",
        killed.elapsed()
    );
    let mut stem_running = true;
    while stem_running && killed.elapsed() < Duration::from_secs(8) {
        stem_running = engine
            .inspect(&stem)
            .await
            .map(|i| i.state.running)
            .unwrap_or(false);
        if stem_running {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        !stem_running,
        "the generic container {stem} still runs after the control plane was killed"
    );
    eprintln!(
        "the containers of a killed control plane stopped {} ms after the kill",
        killed.elapsed().as_millis()
    );
    // Stopped, not removed (their exit reason stays readable): the next start removes them
    // before it serves (and then brings the stored function back with fresh instances). Any
    // control plane starting on this host meanwhile (another test's) may remove them first.
    let mut second = serve(&state).await;
    let now = containers(&engine, &name).await;
    assert!(
        old.iter().all(|o| !now.contains(o)),
        "the dead control plane's containers survived the restart: {old:?} in {now:?}"
    );
    assert!(
        matches!(engine.inspect(&stem).await, Err(e) if e.is_not_found()),
        "the dead control plane's generic container {stem} survived the restart"
    );
    assert!(ready_instances(&second.base, &name, 2).await);

    // An orderly stop leaves nothing.
    second.proc.signal(libc::SIGTERM).unwrap();
    assert!(
        second
            .proc
            .wait_exit_async(Duration::from_secs(30))
            .await
            .is_some(),
        "serve did not stop on SIGTERM: {}",
        second.proc.output()
    );
    let left = none_left(&engine, &name).await;
    assert!(left.is_empty(), "containers left after SIGTERM: {left:?}");
    std::fs::remove_dir_all(state).ok();
}
