//! The Java example through a prewarmed instance, end to end: a real control plane
//! (`nanofaas serve`, process provider, `provider.process.prewarm=1`) keeps a generic Java
//! runtime of hello-java's kind; a cold start of a function of that kind takes it, the
//! watchdog forwards `POST /specialize` to the Java runtime's `/_nanofaas/specialize`, and the
//! handler is loaded there.
//!
//! - the first call of a new function of the kind is answered by the prewarmed process (its
//!   `pid` is that generic instance's runtime), recorded as a `prewarmed` start, `x-cold-start:
//!   true`; the next call is warm on the same process;
//! - the pool is refilled after the take (another ready generic instance, not the one taken);
//! - a function of the kind whose handler cannot be loaded fails its call (503) with
//!   `STARTUP_ERROR` naming the class, and the next prewarmed instance is not poisoned: a
//!   further function of the kind specializes and serves.
//!
//! Only the Java runtime and the example jar are built (`examples/java-hello/build.sh`); a
//! missing JDK is not skipped: the build fails and the test with it. The first call's time is
//! printed (targets live in `bench/run.sh runtimes`, not here).

use nanofaas_e2e::{is_or_descends_from, repo_root, ControlPlane, TempDir};
use nanofaas_testkit::{http, Proc, Response};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);
const READY_LIMIT: Duration = Duration::from_secs(90);

fn launcher() -> String {
    repo_root()
        .join("runtimes/java/bin/nanofaas-java-runtime")
        .display()
        .to_string()
}

fn spec(name: &str, handler: Option<&str>) -> Value {
    let ex = repo_root().join("examples/java-hello");
    let mut env = json!({ "HANDLER_CLASSPATH": ex.join("build/hello.jar").display().to_string() });
    if let Some(h) = handler {
        env["FUNCTION_HANDLER"] = json!(h);
    }
    json!({
        "name": name,
        "command": [launcher()],
        "workingDir": ex.display().to_string(),
        "env": env,
        "timeoutMs": 10000,
    })
}

async fn register(cp: &ControlPlane, body: &Value) {
    let r = http("POST", &cp.url("/v1/functions"), &[], body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "registration refused: {}", r.text());
}

async fn invoke(cp: &ControlPlane, name: &str, input: Value) -> Response {
    http(
        "POST",
        &cp.url(&format!("/v1/functions/{name}:invoke")),
        &[],
        json!({ "input": input }).to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: invoke: {e}"))
}

/// The ready generic instances of the Java launcher's kind in `GET /v1/prewarmed` (wherever the
/// kind sits in that answer), and the kind itself.
fn java_kind(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get("command")
                .and_then(Value::as_str)
                .is_some_and(|c| c.contains("nanofaas-java-runtime"))
            {
                return Some(v.clone());
            }
            m.values().find_map(java_kind)
        }
        Value::Array(a) => a.iter().find_map(java_kind),
        _ => None,
    }
}

/// Waits (bounded) until the Java kind has a ready generic instance other than `not`; returns
/// its id. Polled: the control plane has no event for it.
async fn ready_stem(cp: &ControlPlane, not: Option<&str>) -> String {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let v = http("GET", &cp.url("/v1/prewarmed"), &[], "")
            .await
            .unwrap();
        assert_eq!(v.status, 200, "GET /v1/prewarmed: {}", v.text());
        let kind = java_kind(&v.json());
        if let Some(k) = &kind {
            assert!(
                k.get("disabled").is_none(),
                "the Java kind was disabled: {k}"
            );
            if let Some(id) = k["ready"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|id| Some(*id) != not)
            {
                return id.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no ready prewarmed Java instance within {READY_LIMIT:?}: {}",
            v.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn instances(cp: &ControlPlane, name: &str) -> Vec<Value> {
    let r = http(
        "GET",
        &cp.url(&format!("/v1/functions/{name}/instances")),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{name}: instances: {}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}

async fn execution(cp: &ControlPlane, id: &str) -> Value {
    let r = http("GET", &cp.url(&format!("/v1/executions/{id}")), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "execution {id}: {}", r.text());
    r.json()
}

fn build_example() {
    let mut cmd = Command::new(repo_root().join("examples/java-hello/build.sh"));
    cmd.current_dir(repo_root());
    let mut p = Proc::spawn(cmd).expect("examples/java-hello/build.sh");
    match p.wait_exit(BUILD_LIMIT) {
        Some(st) if st.success() => {}
        other => panic!(
            "examples/java-hello/build.sh failed ({other:?}); its output:\n{}",
            p.output()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_cold_start_takes_a_prewarmed_jvm_and_specializes_it() {
    build_example();
    let state = TempDir::new("prewarm-java");
    let cp = ControlPlane::start(
        state.path(),
        &[
            "provider.process.prewarm=1".into(),
            "provider.stop_grace_ms=2000".into(),
        ],
    )
    .await;

    // The first function teaches the pool the kind; its own first call may or may not find a
    // generic instance ready, so the prewarmed path is checked on a second function.
    register(&cp, &spec("hello-java", None)).await;
    let stem = ready_stem(&cp, None).await;
    register(&cp, &spec("hello-java-2", None)).await;

    let started = Instant::now();
    let r1 = invoke(&cp, "hello-java-2", json!({"name": "Ada"})).await;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r1.status, 200, "{}", r1.text());
    let b1 = r1.json();
    assert_eq!(b1["output"]["greeting"], "Hello, Ada!", "{b1}");
    assert_eq!(r1.header("x-cold-start"), Some("true"), "{b1}");
    let exec = execution(&cp, b1["executionId"].as_str().expect("executionId")).await;
    assert_eq!(
        exec["start"], "prewarmed",
        "the record tells a prewarmed start: {exec}"
    );
    eprintln!(
        "hello-java-2: first call through a prewarmed JVM answered in {first_ms:.1} ms: {exec}"
    );

    let list = instances(&cp, "hello-java-2").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0]["id"],
        stem.as_str(),
        "the generic instance became the function's: {list:?}"
    );
    let runtime = list[0]["runtimePid"].as_u64().expect("runtimePid") as u32;
    let pid1 = b1["output"]["pid"].as_u64().expect("pid") as u32;
    assert!(
        is_or_descends_from(pid1, runtime),
        "the handler ran in {pid1}, not in the prewarmed runtime {runtime}"
    );

    let r2 = invoke(&cp, "hello-java-2", json!({"name": "Bo"})).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(r2.header("x-cold-start"), Some("false"));
    assert_eq!(
        r2.json()["output"]["pid"].as_u64(),
        Some(pid1 as u64),
        "warm on the same JVM"
    );

    // Refilled after the take: another generic instance, never the one taken.
    let next = ready_stem(&cp, Some(&stem)).await;
    assert_ne!(next, stem);

    // A handler that cannot be loaded: STARTUP_ERROR naming it...
    register(&cp, &spec("hello-java-broken", Some("com.example.Missing"))).await;
    let bad = invoke(&cp, "hello-java-broken", json!({})).await;
    // The platform answers a start that failed 503 (the instance never served).
    assert_eq!(bad.status, 503, "{}", bad.text());
    let err = bad.json();
    assert_eq!(err["error"]["code"], "STARTUP_ERROR", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("com.example.Missing"),
        "the message names the class: {err}"
    );
    // ...and the next prewarmed instance is not poisoned by it.
    let stem3 = ready_stem(&cp, Some(&next)).await;
    register(&cp, &spec("hello-java-3", None)).await;
    let r3 = invoke(&cp, "hello-java-3", json!({"name": "Cy"})).await;
    assert_eq!(r3.status, 200, "{}", r3.text());
    assert_eq!(r3.json()["output"]["greeting"], "Hello, Cy!");
    let exec3 = execution(&cp, r3.json()["executionId"].as_str().unwrap()).await;
    assert_eq!(exec3["start"], "prewarmed", "{exec3}");
    let list3 = instances(&cp, "hello-java-3").await;
    assert_eq!(list3[0]["id"], stem3.as_str(), "{list3:?}");
}
