//! The fixture runtime does what its documentation promises.

use nanofaas_testkit::{http, pid_alive, CallbackSink, Proc, Response, Stream};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn start(env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanofaas-test-runtime"));
    cmd.env("PORT", "0")
        .env_remove("EXECUTION_ID")
        .env_remove("CALLBACK_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = Proc::spawn(cmd).unwrap();
    let line = p
        .wait_line(Stream::Stderr, T, |l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("runtime did not start\n{}", p.output()));
    let port = line.rsplit(':').next().unwrap().to_string();
    (p, format!("http://127.0.0.1:{port}"))
}

async fn invoke(base: &str, headers: &[(&str, &str)], body: serde_json::Value) -> Response {
    http("POST", &format!("{base}/invoke"), headers, body.to_string())
        .await
        .unwrap()
}

#[tokio::test]
async fn health_echo_and_count() {
    let (p, base) = start(&[]);
    let r = http("GET", &format!("{base}/health"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    for n in 1..=2 {
        let r = invoke(
            &base,
            &[
                ("x-execution-id", "e1"),
                ("x-trace-id", "t1"),
                ("x-dispatch-attempt", "2"),
            ],
            json!({"input": {"a": n}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["echo"], json!({"a": n}));
        assert_eq!(v["pid"], p.pid());
        assert_eq!(v["executionId"], "e1");
        assert_eq!(v["traceId"], "t1");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["count"], n);
    }
}

#[tokio::test]
async fn execution_id_required_and_env_fallback() {
    let (_p, base) = start(&[]);
    let r = invoke(&base, &[], json!({"input": 1})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("execution id"));
    let r = http(
        "POST",
        &format!("{base}/invoke"),
        &[("x-execution-id", "e")],
        "{nope",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);

    let (_p, base) = start(&[("EXECUTION_ID", "from-env")]);
    let r = invoke(&base, &[], json!({"input": 1})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["executionId"], "from-env");
    assert_eq!(r.json()["traceId"], json!(null));
}

#[tokio::test]
async fn fail_sends_error_and_callback() {
    let sink = CallbackSink::start().await;
    let (_p, base) = start(&[("CALLBACK_TOKEN", "tok")]);
    let r = invoke(
        &base,
        &[
            ("x-execution-id", "e2"),
            ("x-trace-id", "t2"),
            ("x-callback-url", &sink.url()),
        ],
        json!({"input": {"fail": "boom"}}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "HANDLER_ERROR", "message": "boom"}})
    );
    let reqs = sink.wait_for(1, T).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/e2:complete");
    assert_eq!(reqs[0].header("x-trace-id"), Some("t2"));
    assert_eq!(reqs[0].header("x-callback-token"), Some("tok"));
    let cb = reqs[0].json();
    assert_eq!(cb["success"], false);
    assert_eq!(cb["error"]["code"], "HANDLER_ERROR");
}

#[tokio::test]
async fn crash_and_crash_on_attempt() {
    let (mut p, base) = start(&[]);
    let r = invoke(
        &base,
        &[("x-execution-id", "e"), ("x-dispatch-attempt", "1")],
        json!({"input": {"crashOnAttempt": 2}}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http(
        "POST",
        &format!("{base}/invoke"),
        &[("x-execution-id", "e"), ("x-dispatch-attempt", "2")],
        json!({"input": {"crashOnAttempt": 2}}).to_string(),
    )
    .await;
    assert!(r.is_err(), "crash must drop the connection: {r:?}");
    assert_eq!(p.wait_exit_async(T).await.and_then(|s| s.code()), Some(1));

    let (mut p, base) = start(&[]);
    let r = http(
        "POST",
        &format!("{base}/invoke"),
        &[("x-execution-id", "e")],
        json!({"input": {"sleepMs": 20, "crash": true}}).to_string(),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(p.wait_exit_async(T).await.and_then(|s| s.code()), Some(1));
}

#[tokio::test]
async fn grandchild_is_reported_and_dies_with_the_group() {
    let (p, base) = start(&[]);
    let r = invoke(
        &base,
        &[("x-execution-id", "e")],
        json!({"input": {"spawnGrandchild": true}}),
    )
    .await;
    let gc = r.json()["grandchildPid"].as_u64().unwrap() as u32;
    assert!(pid_alive(gc));
    drop(p);
    assert!(nanofaas_testkit::wait_until(T, || !pid_alive(gc)).await);
}

#[tokio::test]
async fn fixture_env_switches() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanofaas-test-runtime"));
    cmd.env("FIXTURE_FAIL_START", "1");
    let mut p = Proc::spawn(cmd).unwrap();
    assert_eq!(p.wait_exit_async(T).await.and_then(|s| s.code()), Some(3));
    // The reader thread may still be catching up with the exited process: wait for the line.
    assert!(p
        .wait_line_async(Stream::Stderr, T, |l| l.contains("FIXTURE_FAIL_START"))
        .await
        .is_some());

    let t = std::time::Instant::now();
    let (mut p, _base) = start(&[
        ("FIXTURE_START_DELAY_MS", "50"),
        ("FIXTURE_EXIT_AFTER_MS", "50"),
    ]);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(p.wait_exit_async(T).await.and_then(|s| s.code()), Some(0));
}
