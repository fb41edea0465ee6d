//! Functions written for the original nanofaas's Python SDK (`from nanofaas.sdk import
//! nanofaas_function, context`), deployed unchanged through a real control plane (`nanofaas
//! serve`, process provider) on our Python runtime: a word count and an async JSON transform
//! (`runtimes/python/tests/handlers/sdk_*.py`). Each answers cold once, then warm from the same
//! runtime process; `context.get_execution_id()` is the execution's id, sync and async; the
//! function's log line reaches the control plane's log tagged with that id.
//!
//! Needs the Python venv `.nanofaas/python` (made here by `scripts/python-env.sh`, as the
//! examples' setup does; seconds when it is up to date).

use nanofaas_e2e::{repo_root, ControlPlane, TempDir};
use nanofaas_testkit::{http, wait_until, Proc, Response, Stream};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn python_env() -> String {
    let root = repo_root();
    let venv = root.join(".nanofaas/python");
    let mut cmd = Command::new(root.join("scripts/python-env.sh"));
    cmd.arg(&venv);
    let mut p = Proc::spawn(cmd).expect("run scripts/python-env.sh");
    match p.wait_exit(Duration::from_secs(15 * 60)) {
        Some(st) if st.success() => {}
        other => panic!(
            "scripts/python-env.sh {} ended with {other:?}:\n{}",
            venv.display(),
            p.output()
        ),
    }
    venv.join("bin/python").display().to_string()
}

async fn deploy(cp: &ControlPlane, name: &str, python: &str, module: &str) {
    let handlers = repo_root().join("runtimes/python/tests/handlers");
    let spec = json!({
        "name": name,
        "command": format!("{python} -m nanofaas_runtime"),
        "workingDir": handlers.display().to_string(),
        // The functions' own modules; HANDLER_FUNCTION stays the default, `handle`.
        "env": {"HANDLER_MODULE": module},
        "timeoutMs": 10000,
    });
    let r = http("POST", &cp.url("/v1/functions"), &[], spec.to_string())
        .await
        .expect("register");
    assert_eq!(r.status, 201, "{name}: {}", r.text());
}

async fn invoke(cp: &ControlPlane, name: &str, input: &Value) -> Response {
    http(
        "POST",
        &cp.url(&format!("/v1/functions/{name}:invoke")),
        &[],
        json!({ "input": input }).to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: invoke: {e}"))
}

/// Three sync calls: cold, warm, warm, from one runtime process; returns the outputs.
async fn cold_then_warm(cp: &ControlPlane, name: &str, input: &Value) -> Vec<Value> {
    let mut outs = Vec::new();
    for i in 0..3 {
        let r = invoke(cp, name, input).await;
        assert_eq!(r.status, 200, "{name} call {i}: {}", r.text());
        let want = if i == 0 { "true" } else { "false" };
        assert_eq!(r.header("x-cold-start"), Some(want), "{name} call {i}");
        let body = r.json();
        assert_eq!(
            body["output"]["executionId"], body["executionId"],
            "{name}: context.get_execution_id() is the execution's id: {body}"
        );
        outs.push(body);
    }
    assert!(
        outs.iter()
            .all(|o| o["output"]["pid"] == outs[0]["output"]["pid"]),
        "{name}: one warm runtime process served every call: {outs:?}"
    );
    let list = http(
        "GET",
        &cp.url(&format!("/v1/functions/{name}/instances")),
        &[],
        "",
    )
    .await
    .unwrap()
    .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{name}: {list}");
    assert_eq!(list[0]["invocations"], 3, "{name}: {list}");
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_written_for_the_original_sdk_run_unchanged_cold_and_warm() {
    let python = python_env();
    let state = TempDir::new("sdk");
    let cp = ControlPlane::start(state.path(), &["provider.stop_grace_ms=2000".into()]).await;

    deploy(&cp, "sdk-word-count", &python, "sdk_word_count").await;
    let input = json!({"text": "the cat and the hat and the bat", "top": 1});
    let outs = cold_then_warm(&cp, "sdk-word-count", &input).await;
    for o in &outs {
        let out = &o["output"];
        assert_eq!(
            (out["words"].as_u64(), out["distinct"].as_u64()),
            (Some(8), Some(5)),
            "{o}"
        );
        assert_eq!(out["top"], json!([["the", 3]]), "{o}");
    }
    assert_eq!(
        outs.iter()
            .map(|o| o["output"]["calls"].clone())
            .collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)],
        "module state survives between warm calls"
    );
    // Its log line (logger from context.get_logger) carries the execution id.
    let id = outs[1]["executionId"].as_str().unwrap().to_string();
    let tagged = wait_until(Duration::from_secs(10), || {
        cp.proc
            .lines(Stream::Stderr)
            .iter()
            .chain(cp.proc.lines(Stream::Stdout).iter())
            .any(|l| l.contains("counted 8 words") && l.contains(&id))
    })
    .await;
    assert!(
        tagged,
        "no log line of the function tagged with {id}:\n{}",
        cp.proc.output()
    );

    deploy(&cp, "sdk-json-transform", &python, "sdk_json_transform").await;
    let input = json!({
        "records": [{"k": "b", "v": 2}, {"k": "a", "v": 1}],
        "rename": {"k": "key"},
        "sortBy": "key",
    });
    for o in cold_then_warm(&cp, "sdk-json-transform", &input).await {
        assert_eq!(
            o["output"]["records"],
            json!([{"key": "a", "v": 1}, {"key": "b", "v": 2}]),
            "{o}"
        );
    }

    // Async: the execution id the function sees is the one the caller got back.
    let (id, done) = cp
        .enqueue_and_wait("sdk-word-count", &json!({"input": {"text": "a b"}}), "")
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"]["executionId"], json!(id), "{done}");
    assert_eq!(done["output"]["words"], 2, "{done}");
}
