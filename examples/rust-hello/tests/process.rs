//! The example binary as a real process: what `nanofaas_runtime::serve` does for a whole
//! program (environment, listening line, exit codes, SIGTERM with an invocation in flight).

use nanofaas_testkit::{http, CallbackSink, Proc, Stream};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn spawn(env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rust-hello"));
    cmd.env_clear().env("PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(cmd).expect("spawn rust-hello")
}

/// Waits for the `listening on HOST:PORT` line and returns `http://HOST:PORT`.
async fn base_url(p: &Proc) -> String {
    let line = p
        .wait_line_async(Stream::Stderr, WAIT, |l| l.contains("listening on "))
        .await
        .unwrap_or_else(|| panic!("no listening line\n{}", p.output()));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    format!("http://{addr}")
}

async fn invoke(base: &str, id: &str, body: Value) -> (u16, Value) {
    let r = http(
        "POST",
        &format!("{base}/invoke"),
        &[("X-Execution-Id", id)],
        body.to_string(),
    )
    .await
    .unwrap();
    (r.status, r.json())
}

#[tokio::test]
async fn serves_greets_fails_on_purpose_and_stops_on_sigterm() {
    let mut p = spawn(&[]);
    let base = base_url(&p).await;
    let r = http("GET", &format!("{base}/health"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (s, out) = invoke(&base, "e1", json!({"input": {"name": "Ada"}})).await;
    assert_eq!(s, 200);
    assert_eq!(
        out,
        json!({"greeting": "Hello, Ada!", "runtime": "rust", "pid": p.pid()})
    );
    let (s, out) = invoke(&base, "e2", json!({})).await;
    assert_eq!((s, out["greeting"].as_str()), (200, Some("Hello, world!")));
    let (s, out) = invoke(&base, "e3", json!({"input": {"fail": "why"}})).await;
    assert_eq!(s, 500);
    assert_eq!(
        out,
        json!({"error": {"code": "HANDLER_ERROR", "message": "failing on purpose: why"}})
    );
    let (s, out) = invoke(&base, "e4", json!({"input": [1]})).await;
    assert_eq!(
        (s, out["error"]["code"].as_str()),
        (500, Some("HANDLER_ERROR"))
    );
    let (s, out) = invoke(&base, "", json!({})).await;
    assert_eq!(
        (s, out["error"]["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );

    p.signal(libc::SIGTERM).unwrap();
    let st = p.wait_exit_async(WAIT).await.expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", p.output());
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_invocation_finish() {
    let mut p = spawn(&[]);
    let base = base_url(&p).await;
    let b = base.clone();
    let slow = tokio::spawn(async move {
        invoke(
            &b,
            "slow",
            json!({"input": {"name": "late", "sleepMs": 1000}}),
        )
        .await
    });
    // Give the request time to reach the handler, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal(libc::SIGTERM).unwrap();
    let (s, out) = slow.await.unwrap();
    assert_eq!((s, out["greeting"].as_str()), (200, Some("Hello, late!")));
    let st = p.wait_exit_async(WAIT).await.expect("exits after the call");
    assert_eq!(st.code(), Some(0), "{}", p.output());
    assert!(http("GET", &format!("{base}/health"), &[], "")
        .await
        .is_err());
}

#[tokio::test]
async fn env_execution_id_and_callback_url_one_shot_style() {
    let sink = CallbackSink::start().await;
    let url = format!("{}/cb", sink.url());
    let p = spawn(&[
        ("EXECUTION_ID", "exec-env"),
        ("TRACE_ID", "trace-env"),
        ("CALLBACK_URL", &url),
        ("CALLBACK_TOKEN", "tok"),
    ]);
    let base = base_url(&p).await;
    let ok = http(
        "POST",
        &format!("{base}/invoke"),
        &[],
        r#"{"input": {"name": "Bo"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let bad = http(
        "POST",
        &format!("{base}/invoke"),
        &[],
        r#"{"input": {"fail": "no"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 500);
    let reqs = sink.wait_for(2, WAIT).await;
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.path, "/cb/exec-env:complete");
        assert_eq!(r.header("x-trace-id"), Some("trace-env"));
        assert_eq!(r.header("x-callback-token"), Some("tok"));
    }
    assert_eq!(
        reqs[0].json(),
        json!({"success": true, "output": ok.json(), "error": null})
    );
    assert_eq!(
        reqs[1].json(),
        json!({"success": false, "output": null,
               "error": {"code": "HANDLER_ERROR", "message": "failing on purpose: no"}})
    );
}

#[tokio::test]
async fn bad_configuration_exits_2_and_a_busy_port_exits_4() {
    for (var, value) in [
        ("PORT", "not-a-port"),
        ("CALLBACK_URL", "https://cp/cb"),
        ("THREADS", "0"),
    ] {
        let mut p = spawn(&[(var, value)]);
        let st = p.wait_exit_async(WAIT).await.expect("exits");
        assert_eq!(st.code(), Some(2), "{var}={value}\n{}", p.output());
        // Wait for the reader to see the stream close, then look at everything it printed.
        let _ = p.wait_line_async(Stream::Stderr, WAIT, |_| false).await;
        let err = p.lines(Stream::Stderr);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains(var), "{err:?}");
    }

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let mut p = spawn(&[("PORT", &port)]);
    let st = p.wait_exit_async(WAIT).await.expect("exits");
    assert_eq!(st.code(), Some(4), "{}", p.output());
    let line = p
        .wait_line_async(Stream::Stderr, WAIT, |l| l.contains("cannot listen"))
        .await;
    assert!(line.expect("a cannot-listen line").contains(&port));
}

#[tokio::test]
async fn threads_setting_serves_the_same() {
    let p = spawn(&[("THREADS", "2")]);
    let base = base_url(&p).await;
    let (s, out) = invoke(&base, "e", json!({"input": {"name": "T"}})).await;
    assert_eq!((s, out["pid"].as_u64()), (200, Some(p.pid() as u64)));
}
