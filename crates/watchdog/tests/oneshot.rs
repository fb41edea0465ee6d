//! One-shot HTTP, STDIO and FILE modes: run once, call back, exit.

mod common;

use common::*;
use nanofaas_testkit::{
    free_port, pid_alive, wait_until, CallbackSink, Proc, Recorded, SinkConfig, Stream,
};
use serde_json::{json, Value};

/// Runs a one-shot watchdog to completion; returns its exit code and the callbacks received.
async fn run_oneshot(sink: &CallbackSink, env: &[(&str, String)]) -> (i32, Vec<Recorded>, Proc) {
    let mut all: Vec<(&str, String)> = vec![
        ("EXECUTION_ID", "exec-1".into()),
        (
            "CALLBACK_URL",
            format!("{}/v1/internal/executions", sink.url()),
        ),
        ("TRACE_ID", "trace-1".into()),
        (
            "TRACEPARENT",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ),
        ("CALLBACK_TOKEN", "tok-1".into()),
    ];
    for (k, v) in env {
        all.retain(|(kk, _)| kk != k);
        all.push((k, v.clone()));
    }
    let mut p = Proc::spawn(watchdog_command(&all)).expect("spawn");
    let st = p
        .wait_exit_async(T)
        .await
        .unwrap_or_else(|| panic!("did not exit\n{}", p.output()));
    (st.code().unwrap_or(-1), sink.requests(), p)
}

fn only_callback(code: i32, reqs: &[Recorded], p: &Proc) -> Value {
    assert_eq!(code, 0, "{}", p.output());
    assert_eq!(reqs.len(), 1, "exactly one callback: {reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/internal/executions/exec-1:complete");
    assert_eq!(r.header("x-trace-id"), Some("trace-1"));
    assert_eq!(
        r.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(r.header("x-callback-token"), Some("tok-1"));
    r.json()
}

fn http_env(payload: &str) -> Vec<(&'static str, String)> {
    let port = free_port();
    vec![
        ("EXECUTION_MODE", "HTTP".into()),
        ("WATCHDOG_CMD", test_runtime()),
        ("PORT", port.to_string()),
        ("RUNTIME_URL", format!("http://127.0.0.1:{port}/invoke")),
        ("INVOCATION_PAYLOAD", payload.into()),
    ]
}

#[tokio::test]
async fn http_mode_calls_back_once_with_the_result_and_stops_the_runtime() {
    let sink = CallbackSink::start().await;
    let (code, reqs, p) = run_oneshot(
        &sink,
        &http_env(r#"{"input": {"x": 1}, "metadata": {"k": "v"}}"#),
    )
    .await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["success"], true);
    assert_eq!(cb["error"], Value::Null);
    let out = &cb["output"];
    assert_eq!(out["echo"], json!({"x": 1}));
    assert_eq!(out["executionId"], "exec-1");
    assert_eq!(out["traceId"], "trace-1");
    let runtime = out["pid"].as_u64().unwrap() as u32;
    assert!(
        wait_until(T, || !pid_alive(runtime)).await,
        "the runtime outlived the one-shot watchdog"
    );
}

#[tokio::test]
async fn http_mode_reports_a_handler_failure_and_still_exits_0() {
    let sink = CallbackSink::start().await;
    let (code, reqs, p) = run_oneshot(&sink, &http_env(r#"{"input": {"fail": "nope"}}"#)).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(
        cb,
        json!({"success": false, "output": null, "error": {"code": "HANDLER_ERROR", "message": "nope"}})
    );
}

#[tokio::test]
async fn http_mode_timeout_and_startup_failure() {
    let sink = CallbackSink::start().await;
    let mut env = http_env(r#"{"input": {"sleepMs": 5000}}"#);
    env.push(("TIMEOUT_MS", "200".into()));
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["error"]["code"], "TIMEOUT");

    let sink = CallbackSink::start().await;
    let mut env = http_env("{}");
    env.push(("FIXTURE_FAIL_START", "1".into()));
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["error"]["code"], "STARTUP_ERROR");
    assert!(
        cb["error"]["message"].as_str().unwrap().contains("code 3"),
        "{cb}"
    );

    let sink = CallbackSink::start().await;
    let mut env = http_env("{}");
    env.retain(|(k, _)| *k != "WATCHDOG_CMD");
    env.push(("WATCHDOG_CMD", "/nonexistent/runtime --flag".into()));
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["error"]["code"], "SPAWN_ERROR");
}

#[tokio::test]
async fn stdio_mode() {
    let sink = CallbackSink::start().await;
    let env = vec![
        ("EXECUTION_MODE", "stdio".to_string()),
        ("WATCHDOG_CMD", fixture("stdio.sh")),
        ("INVOCATION_PAYLOAD", r#"{"input": [1, 2, 3]}"#.to_string()),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["success"], true);
    assert_eq!(cb["output"]["request"], json!({"input": [1, 2, 3]}));
    assert_eq!(cb["output"]["executionId"], "exec-1");
    assert_eq!(cb["output"]["traceId"], "trace-1");

    let sink = CallbackSink::start().await;
    let env = vec![
        ("EXECUTION_MODE", "STDIO".to_string()),
        ("WATCHDOG_CMD", fixture("stdio.sh")),
        ("INVOCATION_PAYLOAD", r#"{"input": "fail"}"#.to_string()),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["error"]["code"], "FUNCTION_ERROR");
    let msg = cb["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("code 5") && msg.contains("failing as asked"),
        "{msg}"
    );

    let sink = CallbackSink::start().await;
    let env = vec![
        ("EXECUTION_MODE", "STDIO".to_string()),
        ("WATCHDOG_CMD", fixture("stdio.sh")),
        ("INVOCATION_PAYLOAD", r#"{"input": "slow"}"#.to_string()),
        ("TIMEOUT_MS", "200".to_string()),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    assert_eq!(only_callback(code, &reqs, &p)["error"]["code"], "TIMEOUT");
}

#[tokio::test]
async fn file_mode() {
    let sink = CallbackSink::start().await;
    let dir = std::env::temp_dir().join(format!("nanofaas-wd-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = vec![
        ("EXECUTION_MODE", "FILE".to_string()),
        ("WATCHDOG_CMD", fixture("file.sh")),
        (
            "INVOCATION_PAYLOAD",
            r#"{"input": {"f": true}}"#.to_string(),
        ),
        ("INPUT_FILE", dir.join("in.json").display().to_string()),
        ("OUTPUT_FILE", dir.join("out.json").display().to_string()),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    let cb = only_callback(code, &reqs, &p);
    assert_eq!(cb["output"]["request"], json!({"input": {"f": true}}));
    assert_eq!(
        cb["output"]["inputFile"],
        dir.join("in.json").display().to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn callback_retries_then_delivers() {
    let sink = CallbackSink::start_with(SinkConfig {
        fail_first: 2,
        ..Default::default()
    })
    .await;
    let env = vec![
        ("EXECUTION_MODE", "STDIO".to_string()),
        ("WATCHDOG_CMD", fixture("stdio.sh")),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    assert_eq!(code, 0, "{}", p.output());
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [503, 503, 204]
    );
}

#[tokio::test]
async fn undeliverable_callback_exits_3() {
    let sink = CallbackSink::start_with(SinkConfig {
        status: 500,
        ..Default::default()
    })
    .await;
    let env = vec![
        ("EXECUTION_MODE", "STDIO".to_string()),
        ("WATCHDOG_CMD", fixture("stdio.sh")),
        ("CALLBACK_MAX_ATTEMPTS", "3".to_string()),
    ];
    let (code, reqs, p) = run_oneshot(&sink, &env).await;
    assert_eq!(code, 3, "{}", p.output());
    assert_eq!(reqs.len(), 3, "bounded attempts");
    assert!(
        p.wait_line_async(Stream::Stderr, T, |l| l
            .contains("gave up after 3 attempts"))
            .await
            .is_some(),
        "{}",
        p.output()
    );

    // A 4xx is final: no retry.
    let sink = CallbackSink::start_with(SinkConfig {
        status: 403,
        ..Default::default()
    })
    .await;
    let (code, reqs, _p) = run_oneshot(&sink, &env).await;
    assert_eq!((code, reqs.len()), (3, 1));
}
