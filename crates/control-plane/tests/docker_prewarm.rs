//! Prewarmed containers of the docker provider against a real container engine (the gated
//! Docker tier, like `docker.rs`: without a reachable engine every test prints SKIPPED and
//! passes, unless `NANOFAAS_REQUIRE_DOCKER=1`).
//!
//! With `provider.docker.prewarm=1`, a cold start of a Python function takes a generic container
//! of its image and specializes it: the first call is `prewarmed`; the function's environment
//! and memory limit (the container's cgroup) are in force at the top of its handler module; two
//! functions of one image never share a container; the pool is refilled after each take; a
//! handler that fails to import is `STARTUP_ERROR` with the import error and does not poison the
//! next container; the last function of the image takes its generic container along; after
//! shutdown the engine has no container of this control plane left, generic ones included.

mod common;

use common::docker::*;
use common::*;
use nanofaas_control_plane::provider::docker::api::Engine;
use nanofaas_control_plane::provider::docker::{container_name, LABEL_KIND, LABEL_OWNER};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "nanofaas/test-python-prewarm:latest";

/// The test function: what it was imported with (its environment, folder, user, and the memory
/// limit of its container's cgroup as the container sees it: cgroup v2's `memory.max` or v1's
/// `memory.limit_in_bytes` at the container's own mount), and a call counter.
const HANDLER: &str = r#"
import os

def _memory_limit():
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(f):
            return open(f).read().strip()
    return None

AT_IMPORT = {
    "pid": os.getpid(),
    "env": {k: os.environ.get(k) for k in ("PREWARM_MARK", "NANOFAAS_FUNCTION")},
    "cwd": os.getcwd(),
    "uid": os.getuid(),
    "memoryLimit": _memory_limit(),
}
COUNTER = 0

def handle(request):
    global COUNTER
    COUNTER += 1
    return {"atImport": AT_IMPORT, "pid": os.getpid(), "counter": COUNTER,
            "mark": os.environ.get("PREWARM_MARK")}
"#;

/// The function image: the Python runtime image with the test function (`handler.py`) and the
/// runtime's test handler that fails to import.
fn build_image() {
    docker_images("python");
    let handlers = repo_root().join("runtimes/python/tests/handlers");
    let dir = std::env::temp_dir().join(format!("nanofaas-prewarm-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("handler.py"), HANDLER).unwrap();
    std::fs::copy(
        handlers.join("raises_on_import.py"),
        dir.join("raises_on_import.py"),
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM nanofaas/python-runtime:latest\nCOPY handler.py raises_on_import.py /function/\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "--pull=false", "-t", IMAGE])
        .arg(&dir)
        .output()
        .expect("run docker build");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "building {IMAGE} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn docker() -> Option<Engine> {
    let engine = engine_or_skip().await?;
    tokio::task::spawn_blocking(build_image)
        .await
        .expect("image build");
    Some(engine)
}

fn unique(tag: &str) -> String {
    format!("dkpw-{tag}-{}", std::process::id())
}

async fn register(cp: &Cp, name: &str, env: Value, extra: Value) {
    let mut spec = json!({"name": name, "image": IMAGE, "timeoutMs": 20000, "env": env});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let r = cp.post("/v1/functions", spec).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn invoke(cp: &Cp, name: &str) -> nanofaas_testkit::client::Response {
    cp.post(
        &format!("/v1/functions/{name}:invoke"),
        json!({"input": null}),
    )
    .await
}

/// The ready generic containers of the test image once there are `n` (within 60 s).
async fn ready(cp: &Cp, n: usize) -> Vec<String> {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = cp.get("/v1/prewarmed").await.json();
        if let Some(k) = last
            .as_array()
            .and_then(|a| a.iter().find(|k| k["image"] == IMAGE))
        {
            let ids: Vec<String> = k["ready"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            if ids.len() >= n {
                return ids;
            }
        }
        // Polled: the pool has no change feed; bounded by the loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {n} prewarmed container(s) of {IMAGE} within 60 s: {last}");
}

/// This process's containers as the engine sees them (any kind, running or not).
async fn mine(engine: &Engine) -> Vec<(String, String)> {
    let me = format!("/{}:", std::process::id());
    engine
        .list(&[LABEL_OWNER.to_string()])
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| c.label(LABEL_OWNER).unwrap_or_default().contains(&me))
        .map(|c| {
            let kind = c.label(LABEL_KIND).unwrap_or_default().to_string();
            (c.id, kind)
        })
        .collect()
}

#[tokio::test]
async fn a_python_function_starts_in_a_prewarmed_container_with_its_env_and_limits() {
    let Some(engine) = docker().await else { return };
    let mut cfg = docker_config();
    cfg.provider.docker.prewarm = 1;
    let cp = Cp::start(cfg).await;
    let (a, b, bad, c) = (unique("a"), unique("b"), unique("bad"), unique("c"));

    register(
        &cp,
        &a,
        json!({"PREWARM_MARK": "a"}),
        json!({"resources": {"memory": "96Mi"}}),
    )
    .await;
    let first = ready(&cp, 1).await;
    let kinds: Vec<String> = mine(&engine).await.into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds, ["prewarmed"], "one generic container waits");

    // The first call takes it.
    let r = invoke(&cp, &a).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"), "{}", r.text());
    assert_eq!(r.header("x-cold-start"), Some("true"));
    let body = r.json();
    let out = body["output"].clone();
    let at = &out["atImport"];
    assert_eq!(at["env"]["PREWARM_MARK"], "a", "its env at import: {out}");
    assert_eq!(at["env"]["NANOFAAS_FUNCTION"], a.as_str(), "{out}");
    assert_eq!(
        at["memoryLimit"],
        (96u64 << 20).to_string(),
        "its memory limit was in force at import: {out}"
    );
    assert_eq!(at["cwd"], "/function", "the image's WORKDIR: {out}");
    let id = body["executionId"].as_str().unwrap();
    let rec = cp.get(&format!("/v1/executions/{id}")).await.json();
    assert_eq!(rec["start"], "prewarmed", "{rec}");
    let inst = cp.get(&format!("/v1/functions/{a}/instances")).await.json();
    assert_eq!(inst[0]["id"], first[0].as_str(), "{inst}");
    let container = inst[0]["container"].as_str().unwrap().to_string();
    let i = engine.inspect(&container).await.unwrap();
    assert_eq!(i.host_config.memory, 96 << 20, "the engine agrees");
    assert_eq!(i.host_config.memory_swap, 96 << 20);

    // Refilled: a new generic container, not the one taken.
    let second = ready(&cp, 1).await;
    assert_ne!(second, first);

    // Another function of the image gets a container of its own, with its own environment.
    register(&cp, &b, json!({"PREWARM_MARK": "b"}), json!({})).await;
    let r = invoke(&cp, &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"));
    let ob = r.json()["output"].clone();
    assert_eq!(ob["atImport"]["env"]["PREWARM_MARK"], "b", "{ob}");
    assert_eq!(ob["counter"], 1, "{ob}");
    assert_ne!(
        ob["atImport"]["memoryLimit"],
        (96u64 << 20).to_string(),
        "not the other function's limit: {ob}"
    );
    assert_ne!(ob["atImport"]["pid"], Value::Null);
    assert_ne!(
        cp.get(&format!("/v1/functions/{b}/instances")).await.json()[0]["id"],
        inst[0]["id"],
        "never shared"
    );
    // The first is still its function's alone, warm.
    let r = invoke(&cp, &a).await;
    assert_eq!(r.header("x-start"), Some("warm"));
    let again = r.json()["output"].clone();
    assert_eq!(
        (again["mark"].as_str(), again["counter"].as_u64()),
        (Some("a"), Some(2)),
        "{again}"
    );

    // A handler that cannot be imported: STARTUP_ERROR with the import error...
    ready(&cp, 1).await;
    register(
        &cp,
        &bad,
        json!({"HANDLER_MODULE": "raises_on_import"}),
        json!({}),
    )
    .await;
    let r = invoke(&cp, &bad).await;
    let e = r.json();
    assert_eq!(e["error"]["code"], "STARTUP_ERROR", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("database not reachable"),
        "{e}"
    );
    // ...and the next generic container of the image is not poisoned by it.
    ready(&cp, 1).await;
    register(&cp, &c, json!({"PREWARM_MARK": "c"}), json!({})).await;
    let r = invoke(&cp, &c).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"));
    assert_eq!(r.json()["output"]["mark"], "c");

    // The last function of the image goes: its waiting generic container goes too.
    let waiting = ready(&cp, 1).await;
    let stem = container_name(&waiting[0]);
    assert!(engine.inspect(&stem).await.is_ok(), "{stem} exists");
    for f in [&a, &b, &bad, &c] {
        let r = nanofaas_testkit::http("DELETE", &cp.url(&format!("/v1/functions/{f}")), &[], "")
            .await
            .unwrap();
        assert!(r.status < 300, "delete {f}: {}", r.text());
    }
    let mut gone = false;
    for _ in 0..150 {
        if matches!(engine.inspect(&stem).await, Err(e) if e.is_not_found()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{stem} outlived the last function of its image");
    assert_eq!(cp.get("/v1/prewarmed").await.json(), json!([]));

    // Shutdown: no container of this control plane is left.
    register(&cp, &a, json!({"PREWARM_MARK": "a"}), json!({})).await;
    ready(&cp, 1).await;
    assert!(mine(&engine).await.iter().any(|(_, k)| k == "prewarmed"));
    cp.shutdown().await;
    let mut left = mine(&engine).await;
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = mine(&engine).await;
    }
    assert!(left.is_empty(), "shutdown left containers: {left:?}");
}
