//! Every function of `examples/manifest.yaml`, deployed through a real control plane
//! (`nanofaas serve`) on the process provider, after the manifest's setup steps:
//!
//! - DEPLOYMENT (as the manifest has them): two invocations with the expected outputs, the
//!   first cold and the second warm on the same instance; for the HTTP runtimes the same runtime
//!   process served both (the `pid` they report is the instance's `runtimePid` or a child of it,
//!   and is the same both times); a failing handler gives the caller a clear 500 with the
//!   right code and the reason, and the instance keeps serving; an async invocation of the
//!   failing handler ends as an `error` execution.
//! - JOB (a copy of each function with `executionMode: JOB`): the one-shot instance completes
//!   the execution by callback. Every callback passes through a recording proxy (the control
//!   plane's `callback_base_url` points at it): the failing one carries `success: false`, the
//!   error code and reason, the trace id and the callback token.
//!
//! The setup steps install what the examples need (a Python venv, the Java runtime and handler
//! jar, a release build of `rust-hello`); the first run takes minutes, later ones seconds. A
//! missing JDK or Python is not skipped: the step fails and the test with it, with its output.

use nanofaas_api::{ExecutionMode, FunctionSpec};
use nanofaas_e2e::{
    is_or_descends_from, parent_pid, repo_root, run_setup, ControlPlane, RecordingProxy, TempDir,
};
use nanofaas_testkit::{http, Response};
use serde_json::{json, Value};
use std::time::Duration;

/// What each example is expected to do.
struct Case {
    /// `runtime` in its output.
    runtime: &'static str,
    /// The error code of `{"fail": ...}`.
    fail_code: &'static str,
    /// A long-lived HTTP runtime (else STDIO/FILE: a process per invocation).
    warm_process: bool,
}

fn case(name: &str) -> Case {
    match name {
        "hello-python" => Case { runtime: "python", fail_code: "HANDLER_ERROR", warm_process: true },
        "hello-java" => Case { runtime: "java", fail_code: "HANDLER_ERROR", warm_process: true },
        "hello-rust" => Case { runtime: "rust", fail_code: "HANDLER_ERROR", warm_process: true },
        "hello-stdio" => Case { runtime: "stdio", fail_code: "FUNCTION_ERROR", warm_process: false },
        "hello-file" => Case { runtime: "file", fail_code: "FUNCTION_ERROR", warm_process: false },
        other => panic!(
            "examples/manifest.yaml has a function {other:?} that this test does not know: add a case for it"
        ),
    }
}

const SETUP_LIMIT: Duration = Duration::from_secs(20 * 60);

async fn invoke(cp: &ControlPlane, name: &str, input: Value, trace: &str) -> Response {
    http(
        "POST",
        &cp.url(&format!("/v1/functions/{name}:invoke")),
        &[("X-Trace-Id", trace)],
        json!({ "input": input }).to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: invoke: {e}"))
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

fn ok_output(name: &str, r: &Response) -> Value {
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "success", "{name}: {body}");
    assert_eq!(
        r.header("x-execution-id"),
        body["executionId"].as_str(),
        "{name}"
    );
    body["output"].clone()
}

fn check_greeting(name: &str, c: &Case, out: &Value, who: &str) -> u32 {
    assert_eq!(out["greeting"], format!("Hello, {who}!"), "{name}: {out}");
    assert_eq!(out["runtime"], c.runtime, "{name}: {out}");
    out["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: no pid in {out}")) as u32
}

fn check_failure(name: &str, c: &Case, r: &Response, why: &str) -> String {
    assert_eq!(
        r.status,
        500,
        "{name}: a failing handler must give 500: {}",
        r.text()
    );
    let body = r.json();
    assert_eq!(body["status"], "error", "{name}: {body}");
    assert_eq!(body["output"], Value::Null, "{name}: {body}");
    assert_eq!(body["error"]["code"], c.fail_code, "{name}: {body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(why),
        "{name}: the message should give the reason {why:?}: {body}"
    );
    body["executionId"]
        .as_str()
        .expect("executionId")
        .to_string()
}

/// DEPLOYMENT: cold then warm on one instance, the same runtime process, the error path.
async fn check_warm(cp: &ControlPlane, name: &str) {
    let c = case(name);
    let r1 = invoke(cp, name, json!({"name": "Ada"}), &format!("{name}-t1")).await;
    let pid1 = check_greeting(name, &c, &ok_output(name, &r1), "Ada");
    assert_eq!(
        r1.header("x-cold-start"),
        Some("true"),
        "{name}: the first call starts the instance"
    );
    let r2 = invoke(cp, name, json!({"name": "Bo"}), &format!("{name}-t2")).await;
    let pid2 = check_greeting(name, &c, &ok_output(name, &r2), "Bo");
    assert_eq!(
        r2.header("x-cold-start"),
        Some("false"),
        "{name}: the second call is warm"
    );

    let list = instances(cp, name).await;
    assert_eq!(
        list.len(),
        1,
        "{name}: one warm instance served both calls: {list:?}"
    );
    let inst = &list[0];
    assert_eq!(inst["kind"], "warm", "{name}: {inst}");
    assert_eq!(inst["invocations"], 2, "{name}: {inst}");
    let watchdog = inst["pid"].as_u64().expect("watchdog pid") as u32;
    assert_eq!(
        parent_pid(watchdog),
        Some(cp.proc.pid()),
        "{name}: the control plane started the watchdog"
    );
    if c.warm_process {
        let runtime = inst["runtimePid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no runtimePid: {inst}"))
            as u32;
        assert_eq!(
            parent_pid(runtime),
            Some(watchdog),
            "{name}: the watchdog started the runtime"
        );
        assert_eq!(
            pid1, pid2,
            "{name}: the same runtime process served both calls"
        );
        assert!(
            is_or_descends_from(pid1, runtime),
            "{name}: the handler ran in pid {pid1}, which is not the runtime {runtime} or a child of it"
        );
    } else {
        // A STDIO/FILE command runs once per invocation under the one warm watchdog.
        assert_eq!(inst["runtimePid"], Value::Null, "{name}: {inst}");
        assert_ne!(
            pid1, pid2,
            "{name}: each invocation runs its own command process"
        );
    }

    let why = format!("e2e-{name}");
    let bad = invoke(cp, name, json!({"fail": why}), &format!("{name}-t3")).await;
    check_failure(name, &c, &bad, &why);

    // The failure did not cost the instance: the next call is warm, on the same processes.
    let r4 = invoke(cp, name, json!({}), &format!("{name}-t4")).await;
    let pid4 = check_greeting(name, &c, &ok_output(name, &r4), "world");
    assert_eq!(r4.header("x-cold-start"), Some("false"), "{name}");
    let after = instances(cp, name).await;
    assert_eq!(after.len(), 1, "{name}: {after:?}");
    assert_eq!(after[0]["id"], inst["id"], "{name}: the same instance");
    if c.warm_process {
        assert_eq!(
            after[0]["runtimePid"], inst["runtimePid"],
            "{name}: the same runtime process"
        );
        assert_eq!(
            pid4, pid1,
            "{name}: the same runtime process after a failure"
        );
    }
}

/// An async invocation of a failing handler ends as an `error` execution with the reason.
async fn check_async_failure(cp: &ControlPlane, name: &str) {
    let c = case(name);
    let why = format!("async-{name}");
    let (_, view) = cp
        .enqueue_and_wait(name, &json!({"input": {"fail": why}}), &format!("{name}: "))
        .await;
    assert_eq!(view["status"], "error", "{name}: {view}");
    assert_eq!(view["error"]["code"], c.fail_code, "{name}: {view}");
    assert!(
        view["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&why),
        "{name}: {view}"
    );
}

/// JOB: a fresh one-shot instance per invocation, completed by callback through the proxy.
async fn check_job(cp: &ControlPlane, proxy: &RecordingProxy, name: &str, job: &str) {
    let c = case(name);
    let trace_ok = format!("{job}-ok");
    let r = invoke(cp, job, json!({"name": "Job"}), &trace_ok).await;
    let out = ok_output(job, &r);
    check_greeting(job, &c, &out, "Job");
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let path = format!("/v1/internal/executions/{id}:complete");
    let cb = proxy
        .wait_for_path(&path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{job}: no callback {path} through the proxy; it saw: {:?}",
                proxy
                    .requests()
                    .iter()
                    .map(|r| (&r.path, r.answered))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(cb.json()["success"], true, "{job}: {}", cb.json());
    assert_eq!(cb.json()["output"], out, "{job}");
    assert_eq!(cb.header("x-trace-id"), Some(trace_ok.as_str()), "{job}");
    assert_eq!(
        cb.answered, 204,
        "{job}: the control plane accepted the callback"
    );

    let why = format!("job-{name}");
    let trace_bad = format!("{job}-bad");
    let bad = invoke(cp, job, json!({"fail": why}), &trace_bad).await;
    let id = check_failure(job, &c, &bad, &why);
    let path = format!("/v1/internal/executions/{id}:complete");
    let cb = proxy
        .wait_for_path(&path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{job}: no callback for the failing execution {id}"));
    let body = cb.json();
    assert_eq!(body["success"], false, "{job}: {body}");
    assert_eq!(body["output"], Value::Null, "{job}: {body}");
    assert_eq!(body["error"]["code"], c.fail_code, "{job}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&why),
        "{job}: {body}"
    );
    assert_eq!(cb.header("x-trace-id"), Some(trace_bad.as_str()), "{job}");
    assert!(
        cb.header("x-callback-token").is_some_and(|t| !t.is_empty()),
        "{job}: no token"
    );
    assert_eq!(
        cb.answered, 204,
        "{job}: the control plane accepted the callback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_deploys_and_serves_through_the_control_plane() {
    let manifest_path = repo_root().join("examples/manifest.yaml");
    let manifest = nanofaas_cli::manifest::load(&manifest_path)
        .unwrap_or_else(|e| panic!("examples/manifest.yaml does not load: {e}"));
    let names: Vec<String> = manifest.functions.iter().map(|f| f.name.clone()).collect();
    for n in &names {
        case(n);
    }
    for required in [
        "hello-python",
        "hello-java",
        "hello-rust",
        "hello-stdio",
        "hello-file",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "the manifest lost {required}: {names:?}"
        );
    }
    run_setup(&manifest, SETUP_LIMIT);

    let proxy = RecordingProxy::start().await;
    let state = TempDir::new("examples");
    let cp = ControlPlane::start(
        state.path(),
        &[
            format!("callback_base_url={}/v1/internal/executions", proxy.url()),
            "provider.stop_grace_ms=2000".into(),
        ],
    )
    .await;
    proxy.set_target(&cp.base);

    let mut specs: Vec<FunctionSpec> = manifest.functions.clone();
    for f in &manifest.functions {
        assert_eq!(
            f.execution_mode,
            ExecutionMode::Deployment,
            "{}: the manifest deploys warm functions",
            f.name
        );
        let mut job = f.clone();
        job.name = format!("{}-job", f.name);
        job.execution_mode = ExecutionMode::Job;
        specs.push(job);
    }
    for spec in &specs {
        let body = serde_json::to_string(spec).unwrap();
        let r = http("POST", &cp.url("/v1/functions"), &[], body)
            .await
            .unwrap();
        assert_eq!(
            r.status,
            201,
            "{}: registration refused: {}",
            spec.name,
            r.text()
        );
    }

    for name in &names {
        check_warm(&cp, name).await;
    }
    check_async_failure(&cp, "hello-python").await;
    check_async_failure(&cp, "hello-file").await;
    for name in &names {
        check_job(&cp, &proxy, name, &format!("{name}-job")).await;
    }
}
