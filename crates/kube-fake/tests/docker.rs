//! The simulated kubelet on the real engine: a pod of a project image runs as a container,
//! reports its bridge IP and becomes Ready by its readiness probe; an image the engine does not
//! have is `ErrImagePull`; a container that exits ends a `Never` pod `Failed`; delete and
//! shutdown leave no container behind.
//!
//! Needs a Docker engine: without one every test prints SKIPPED and passes, unless
//! `NANOFAAS_REQUIRE_DOCKER=1`, which turns a missing engine into a failure.

mod common;

use common::*;
use nanofaas_kube_fake::{docker::LABEL_INSTANCE, Containers, FakeApi, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "nanofaas/kube-fake-hello:latest";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the engine answers; `NANOFAAS_REQUIRE_DOCKER=1` turns "no" into a panic.
fn engine_or_skip() -> bool {
    let required = std::env::var("NANOFAAS_REQUIRE_DOCKER").as_deref() == Ok("1");
    let why = match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run docker: {e}"),
    };
    if required {
        panic!("NANOFAAS_REQUIRE_DOCKER=1 but the container engine does not answer: {why}");
    }
    eprintln!("SKIPPED: the kube-fake Docker tests need a container engine: {why}");
    false
}

/// The Python runtime image (scripts/docker-images.sh, reused when unchanged) and the hello
/// example on it.
fn images() {
    let out = Command::new(repo_root().join("scripts/docker-images.sh"))
        .arg("python")
        .env("NANOFAAS_IMAGE_TAG", "latest")
        .output()
        .expect("run scripts/docker-images.sh");
    assert!(
        out.status.success(),
        "scripts/docker-images.sh python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = repo_root();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE, "-f"])
        .arg(root.join("deploy/examples/python-hello/Dockerfile"))
        .arg(root.join("examples/python-hello"))
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "building {IMAGE} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn containers_of(instance: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={LABEL_INSTANCE}={instance}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn hello_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "hello"}},
    "spec": {
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "function",
            "image": IMAGE,
            "env": [
                {"name": "EXECUTION_MODE", "value": "WARM"},
                {"name": "WARM_PORT", "value": "8080"},
                {"name": "WARM_BIND", "value": "0.0.0.0"},
                {"name": "PORT", "value": "8081"},
                {"name": "RUNTIME_URL", "value": "http://127.0.0.1:8081/invoke"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        }],
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_as_a_container_and_becomes_ready_with_its_ip() {
    if !engine_or_skip() {
        return;
    }
    tokio::task::spawn_blocking(images)
        .await
        .expect("image preparation");
    let instance = format!("test{:08x}", std::process::id());
    let f = FakeApi::start(Options {
        containers: Containers::Docker,
        backoff: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        instance: instance.clone(),
        ..Options::default()
    })
    .await
    .expect("start the fake");
    let base = f.url();
    // Generous: a bound, not a measure (a loaded machine starts Python slowly).
    let t = Duration::from_secs(120);
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    create(&base, "ns", &hello_pod("hello")).await;
    let running = w
        .until(t, |e| {
            is(e, "MODIFIED", "hello") && e["object"]["status"]["phase"] == "Running"
        })
        .await;
    assert!(
        !ready(&running["object"]),
        "not Ready before the probe passed: {running}"
    );
    let ev = w
        .until(t, |e| is(e, "MODIFIED", "hello") && ready(&e["object"]))
        .await;
    let st = &ev["object"]["status"];
    let ip = st["podIP"].as_str().expect("podIP").to_string();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "podIP {ip}");
    assert!(st["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .starts_with("docker://"));
    assert!(st["containerStatuses"][0]["state"]["running"].is_object());
    // The pod answers at its IP, from the host, like a pod IP in a cluster.
    let r = nanofaas_testkit::http("GET", &format!("http://{ip}:8080/health"), &[], "")
        .await
        .expect("GET /health on the pod IP");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(containers_of(&instance).len(), 1);
    let (_, evs) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/events?fieldSelector=involvedObject.name%3Dhello"),
        None,
    )
    .await;
    let reasons: Vec<&str> = evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for r in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(reasons.contains(&r), "{r} in {reasons:?}");
    }

    // Delete with grace: Killing, terminated, DELETED, and the container is gone.
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/hello"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    w.until(t, |e| is(e, "DELETED", "hello")).await;
    assert!(
        containers_of(&instance).is_empty(),
        "the container was removed"
    );

    // An image the engine does not have: never pulled, ErrImagePull.
    let mut p = hello_pod("nope");
    p["spec"]["containers"][0]["image"] = json!("nanofaas/does-not-exist:1");
    create(&base, "ns", &p).await;
    w.until(t, |e| {
        is(e, "MODIFIED", "nope")
            && e.pointer("/object/status/containerStatuses/0/state/waiting/reason")
                == Some(&json!("ErrImagePull"))
    })
    .await;

    // A container that exits, restartPolicy Never: Failed with its exit code.
    let mut p = hello_pod("exits");
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["command"] = json!(["/bin/sh", "-c", "echo boom >&2; exit 3"]);
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    create(&base, "ns", &p).await;
    let e = w
        .until(t, |e| {
            is(e, "MODIFIED", "exits") && e["object"]["status"]["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        e["object"]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3,
        "{e}"
    );
    // Its output stays readable through pods/log until the pod is deleted.
    let r = nanofaas_testkit::http(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/exits/log"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.text()), (200, "boom\n".to_string()));
    let (code, st) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/exits/log?previous=true"),
        None,
    )
    .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (400, Some("BadRequest")),
        "{st}"
    );

    // pods/log?follow=true: the lines as they are written, stdout and stderr, until the
    // container ends.
    let mut p = hello_pod("talks");
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["command"] = json!([
        "/bin/sh",
        "-c",
        "echo one; sleep 1; echo two >&2; sleep 1; echo three"
    ]);
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    create(&base, "ns", &p).await;
    w.until(t, |e| {
        is(e, "MODIFIED", "talks") && e["object"]["status"]["phase"] == "Running"
    })
    .await;
    let (code, text, ended) = read_stream(
        &format!("{base}/api/v1/namespaces/ns/pods/talks/log?follow=true"),
        t,
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(ended, "the stream ends with the container");
    assert_eq!(text, "one\ntwo\nthree\n");

    // A container that keeps exiting, restartPolicy Always: restarted, then CrashLoopBackOff.
    let mut p = hello_pod("crashes");
    p["spec"]["containers"][0]["command"] = json!(["/bin/sh", "-c", "echo crash >&2; exit 1"]);
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    create(&base, "ns", &p).await;
    let e = w
        .until(t, |e| {
            is(e, "MODIFIED", "crashes")
                && e.pointer("/object/status/containerStatuses/0/state/waiting/reason")
                    == Some(&json!("CrashLoopBackOff"))
        })
        .await;
    let cs = &e["object"]["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{cs}");
    assert!(cs["restartCount"].as_u64().unwrap() >= 2, "{cs}");
    let r = nanofaas_testkit::http(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/crashes/log?previous=true"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.text()), (200, "crash\n".to_string()));

    // Shutdown removes whatever is left.
    create(&base, "ns", &hello_pod("left")).await;
    w.until(t, |e| {
        is(e, "MODIFIED", "left") && e["object"]["status"]["phase"] == "Running"
    })
    .await;
    assert!(!containers_of(&instance).is_empty());
    f.shutdown().await;
    assert!(
        containers_of(&instance).is_empty(),
        "shutdown removed every container"
    );
}
