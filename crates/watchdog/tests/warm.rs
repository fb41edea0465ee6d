//! Warm mode against the real binary and the scriptable test runtime.

mod common;

use common::*;
use nanofaas_testkit::{get_json, http, pid_alive, wait_until, CallbackSink, Response, Stream};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn invoke(w: &Warm, headers: &[(&str, &str)], body: Value) -> Response {
    http("POST", &w.url("/invoke"), headers, body.to_string())
        .await
        .expect("the watchdog answers")
}

async fn call(w: &Warm, id: &str, input: Value) -> Response {
    invoke(w, &[("x-execution-id", id)], json!({ "input": input })).await
}

fn pid_of(r: &Response) -> u32 {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["pid"].as_u64().expect("pid") as u32
}

async fn metric(w: &Warm, name: &str) -> f64 {
    let text = http("GET", &w.url("/metrics"), &[], "")
        .await
        .unwrap()
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn ready_line_health_and_the_same_runtime_for_2_then_100_calls() {
    let w = start_warm(&[]).await;
    assert!(w.runtime_pid > 0 && pid_alive(w.runtime_pid));
    let (status, health) = get_json(&w.url("/health")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["runtimePid"], w.runtime_pid);

    for n in 1..=2 {
        let r = call(&w, &format!("e{n}"), json!(n)).await;
        assert_eq!(pid_of(&r), w.runtime_pid);
        assert_eq!(r.json()["count"], n);
    }
    for n in 3..=102 {
        let r = call(&w, &format!("e{n}"), json!(n)).await;
        assert_eq!(pid_of(&r), w.runtime_pid, "call {n}");
        assert_eq!(r.json()["count"], n);
    }
    let (_, health) = get_json(&w.url("/health")).await.unwrap();
    assert_eq!(health["invocations"], 102);
    assert_eq!(health["inflight"], 0);
    assert!(w.restarts().is_empty());
    assert_eq!(
        metric(&w, "nanofaas_watchdog_runtime_starts_total").await,
        1.0
    );
    assert_eq!(
        metric(
            &w,
            "nanofaas_watchdog_invocations_total{outcome=\"success\"}"
        )
        .await,
        102.0
    );
}

#[tokio::test]
async fn header_form_forwards_and_returns_bytes_unchanged() {
    let w = start_warm(&[]).await;
    let r = invoke(
        &w,
        &[
            ("x-execution-id", "e-1"),
            ("x-trace-id", "tr-1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-dispatch-attempt", "2"),
            ("x-timeout-ms", "5000"),
        ],
        json!({"input": {"k": [1, 2]}, "metadata": {"m": "v"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-execution-id"), Some("e-1"));
    // The runtime got the trace context; the answer says how long the runtime took.
    assert_eq!(
        r.json()["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    let took: u64 = r
        .header("x-runtime-duration-us")
        .expect("duration")
        .parse()
        .unwrap();
    assert!(took > 0 && took < 60_000_000, "{took}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["echo"], json!({"k": [1, 2]}));
    assert_eq!(
        (
            v["executionId"].clone(),
            v["traceId"].clone(),
            v["attempt"].clone()
        ),
        (json!("e-1"), json!("tr-1"), json!(2))
    );

    // A handler failure: the runtime's error, normalised, with status 500.
    let r = call(&w, "e-2", json!({"fail": "boom"})).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "HANDLER_ERROR", "message": "boom"}})
    );
    assert_eq!(r.header("x-execution-id"), Some("e-2"));
}

#[tokio::test]
async fn envelope_form_answers_a_callback_payload() {
    let w = start_warm(&[]).await;
    let env = json!({"execution_id": "env-1", "trace_id": "t9", "payload": {"input": "hi"}, "timeout_ms": 5000});
    let r = invoke(&w, &[], env).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["output"]["echo"], "hi");
    assert_eq!(v["output"]["executionId"], "env-1");
    assert_eq!(v["output"]["traceId"], "t9");

    let r = invoke(
        &w,
        &[],
        json!({"execution_id": "env-2", "payload": {"input": {"fail": "bad"}}}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!({"success": false, "output": null, "error": {"code": "HANDLER_ERROR", "message": "bad"}})
    );
}

#[tokio::test]
async fn bad_requests_get_400_with_a_clear_message() {
    let w = start_warm(&[]).await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("x-execution-id", "e")],
            "{not json",
            400,
            "not valid JSON",
        ),
        (vec![("x-execution-id", "e")], "", 400, "not valid JSON"),
        (vec![], "{\"payload\": {}}", 400, "execution_id"),
        (vec![], "{oops", 400, "x-execution-id"),
        (vec![], "", 400, "x-execution-id"),
        (
            vec![],
            "{\"execution_id\": \"\", \"payload\": {}}",
            400,
            "execution_id is empty",
        ),
        (
            vec![("x-execution-id", "e"), ("x-timeout-ms", "soon")],
            "{}",
            400,
            "x-timeout-ms",
        ),
        (
            vec![("x-execution-id", "e"), ("x-timeout-ms", "0")],
            "{}",
            400,
            "x-timeout-ms",
        ),
        (
            vec![("x-execution-id", "e"), ("x-callback-url", "nowhere")],
            "{}",
            400,
            "x-callback-url",
        ),
        (
            vec![],
            "{\"execution_id\": \"e\", \"payload\": {}, \"callback_url\": \"ftp://x\"}",
            400,
            "callback_url",
        ),
    ];
    // Bodies no runtime could read are refused here as well, in both forms, with 400.
    let deep = format!("{{\"input\":{}}}", "[".repeat(100));
    let deep_env = format!("{{\"execution_id\":\"e\",\"payload\":{deep}}}");
    type ByteCase<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let strict: Vec<ByteCase> = vec![
        (
            vec![("x-execution-id", "e")],
            b"{\"input\":1}}".to_vec(),
            "trailing characters",
        ),
        (
            vec![("x-execution-id", "e")],
            b"{\"input\":1e400}".to_vec(),
            "out of range",
        ),
        (
            vec![("x-execution-id", "e")],
            b"{\"input\":\"\xff\"}".to_vec(),
            "UTF-8",
        ),
        (
            vec![("x-execution-id", "e")],
            b"{\"input\":\"\\ud800\"}".to_vec(),
            "surrogate",
        ),
        (
            vec![("x-execution-id", "e")],
            deep.clone().into_bytes(),
            "nested deeper",
        ),
        (
            vec![],
            b"{\"execution_id\":\"e\",\"payload\":{}}}".to_vec(),
            "trailing characters",
        ),
        (
            vec![],
            b"{\"execution_id\":\"e\",\"payload\":{\"input\":-1e999}}".to_vec(),
            "out of range",
        ),
        (vec![], b"{\"execution_id\":\"\xc3\"}".to_vec(), "UTF-8"),
        (vec![], deep_env.into_bytes(), "nested deeper"),
    ];
    for (headers, body, needle) in &strict {
        let r = http("POST", &w.url("/invoke"), headers, body.clone())
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{headers:?} {shown}: {}", r.text());
        let err = &r.json()["error"];
        assert_eq!(err["code"], "INVALID_REQUEST", "{shown}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{shown}: {err}"
        );
    }
    for (headers, body, status, needle) in &cases {
        let r = http("POST", &w.url("/invoke"), headers, body.to_string())
            .await
            .unwrap();
        assert_eq!(r.status, *status, "{headers:?} {body:?}: {}", r.text());
        let err = &r.json()["error"];
        assert_eq!(err["code"], "INVALID_REQUEST", "{body:?}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{body:?}: {err}"
        );
    }
    let r = http("GET", &w.url("/invoke"), &[], "").await.unwrap();
    assert_eq!(r.status, 405);
    let r = http("GET", &w.url("/nope"), &[], "").await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        metric(
            &w,
            "nanofaas_watchdog_invocations_total{outcome=\"rejected\"}"
        )
        .await,
        (cases.len() + strict.len()) as f64
    );
    // None of them reached the runtime.
    assert_eq!(call(&w, "ok", json!(1)).await.json()["count"], 1);
}

#[tokio::test]
async fn callback_only_when_a_url_is_given() {
    let sink = CallbackSink::start().await;
    let w = start_warm(&[]).await;
    let base = format!("{}/v1/internal/executions", sink.url());

    let r = call(&w, "no-cb", json!(1)).await;
    assert_eq!(r.status, 200);

    let r = invoke(
        &w,
        &[
            ("x-execution-id", "cb-1"),
            ("x-trace-id", "t-cb"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-callback-url", &base),
            ("x-callback-token", "tok"),
        ],
        json!({"input": {"v": 1}}),
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = sink.wait_for(1, T).await;
    assert_eq!(reqs.len(), 1);
    let cb = &reqs[0];
    assert_eq!(cb.method, "POST");
    assert_eq!(cb.path, "/v1/internal/executions/cb-1:complete");
    assert_eq!(cb.header("x-trace-id"), Some("t-cb"));
    assert_eq!(
        cb.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(cb.header("x-callback-token"), Some("tok"));
    let body = cb.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["output"], r.json(), "the callback carries the answer");
    assert_eq!(body["error"], Value::Null);

    // The envelope's callback, for a failing call.
    let env = json!({"execution_id": "cb-2", "callback_url": base, "trace_id": "t2", "payload": {"input": {"fail": "x"}}});
    assert_eq!(invoke(&w, &[], env).await.status, 500);
    let reqs = sink.wait_for(2, T).await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].path, "/v1/internal/executions/cb-2:complete");
    assert_eq!(reqs[1].header("x-trace-id"), Some("t2"));
    assert_eq!(reqs[1].header("x-callback-token"), None);
    assert_eq!(reqs[1].json()["error"]["code"], "HANDLER_ERROR");

    // Nothing else arrives: the runtime was not given the callback URL, and the call without
    // one produced none.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.requests().len(), 2);
}

#[tokio::test]
async fn callback_is_retried_on_5xx() {
    let sink = CallbackSink::start_with(nanofaas_testkit::SinkConfig {
        fail_first: 2,
        ..Default::default()
    })
    .await;
    let w = start_warm(&[]).await;
    let r = invoke(
        &w,
        &[("x-execution-id", "r-1"), ("x-callback-url", &sink.url())],
        json!({"input": 1}),
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = sink.wait_for(3, T).await;
    assert_eq!(
        reqs.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [503, 503, 204]
    );
}

#[tokio::test]
async fn timeout_kills_and_restarts_the_runtime_and_the_next_call_succeeds() {
    let w = start_warm(&[]).await;
    let first = w.runtime_pid;
    let t = Instant::now();
    let r = invoke(
        &w,
        &[("x-execution-id", "slow"), ("x-timeout-ms", "200")],
        json!({"input": {"sleepMs": 5000}}),
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "TIMEOUT");
    assert!(
        wait_until(T, || !pid_alive(first)).await,
        "the timed-out runtime was not killed"
    );

    let r = call(&w, "next", json!(1)).await;
    let second = pid_of(&r);
    assert_ne!(second, first);
    assert_eq!(r.json()["count"], 1);
    assert_eq!(w.restarts_at_least(1).await, [second]);
    assert_eq!(metric(&w, "nanofaas_watchdog_timeouts_total").await, 1.0);
    assert_eq!(
        metric(&w, "nanofaas_watchdog_runtime_restarts_total").await,
        1.0
    );
    assert_eq!(
        metric(
            &w,
            "nanofaas_watchdog_invocations_total{outcome=\"timeout\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn envelope_timeout_ms_is_enforced() {
    let w = start_warm(&[("TIMEOUT_MS", "60000")]).await;
    let env =
        json!({"execution_id": "s", "timeout_ms": 150, "payload": {"input": {"sleepMs": 5000}}});
    let r = invoke(&w, &[], env).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "TIMEOUT");
    assert_eq!(r.json()["success"], false);
}

#[tokio::test]
async fn default_timeout_comes_from_timeout_ms() {
    let w = start_warm(&[("TIMEOUT_MS", "150")]).await;
    let r = call(&w, "s", json!({"sleepMs": 5000})).await;
    assert_eq!(r.status, 504);
}

#[tokio::test]
async fn a_crash_mid_call_fails_that_call_and_the_next_one_succeeds() {
    let w = start_warm(&[]).await;
    let first = w.runtime_pid;
    let r = call(&w, "boom", json!({"sleepMs": 30, "crash": true})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "INSTANCE_LOST");
    let r = call(&w, "after", json!(1)).await;
    let second = pid_of(&r);
    assert_ne!(second, first);
    assert!(!pid_alive(first));
    assert_eq!(w.restarts_at_least(1).await, [second]);
}

#[tokio::test]
async fn max_invocations_restarts_exactly_after_n() {
    let w = start_warm(&[("WARM_MAX_INVOCATIONS", "3")]).await;
    let mut pids = Vec::new();
    for n in 0..7 {
        let r = call(&w, &format!("m{n}"), json!(n)).await;
        pids.push((pid_of(&r), r.json()["count"].as_u64().unwrap()));
    }
    let (a, b, c) = (pids[0].0, pids[3].0, pids[6].0);
    assert_eq!(a, w.runtime_pid);
    assert!(a != b && b != c && a != c, "{pids:?}");
    assert_eq!(
        pids,
        [(a, 1), (a, 2), (a, 3), (b, 1), (b, 2), (b, 3), (c, 1)]
    );
    assert!(wait_until(T, || !pid_alive(a) && !pid_alive(b)).await);
    assert_eq!(w.restarts_at_least(2).await, [b, c]);
}

#[tokio::test]
async fn idle_timeout_exits_cleanly() {
    let mut w = start_warm(&[("WARM_IDLE_TIMEOUT_MS", "300")]).await;
    let rt = w.runtime_pid;
    assert_eq!(call(&w, "one", json!(1)).await.status, 200);
    let t = Instant::now();
    let st = w
        .proc
        .wait_exit_async(T)
        .await
        .expect("the watchdog exits when idle");
    assert_eq!(st.code(), Some(0), "{}", w.proc.output());
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert!(
        wait_until(T, || !pid_alive(rt)).await,
        "the runtime outlived the watchdog"
    );
    assert!(w
        .proc
        .wait_line_async(Stream::Stderr, T, |l| l.contains("idle timeout"))
        .await
        .is_some());
}

#[tokio::test]
async fn sigterm_during_a_call_lets_it_finish_and_leaves_no_process_behind() {
    let mut w = start_warm(&[]).await;
    let rt = w.runtime_pid;
    let url = w.url("/invoke");
    let call = tokio::spawn(async move {
        http(
            "POST",
            &url,
            &[("x-execution-id", "long")],
            json!({"input": {"sleepMs": 400, "spawnGrandchild": true}}).to_string(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.proc.signal(libc::SIGTERM).unwrap();
    let r = call.await.unwrap().expect("the in-flight call is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    let grandchild = r.json()["grandchildPid"].as_u64().unwrap() as u32;
    let st = w
        .proc
        .wait_exit_async(T)
        .await
        .expect("the watchdog exits after draining");
    assert_eq!(st.code(), Some(0), "{}", w.proc.output());
    assert!(
        wait_until(T, || !pid_alive(rt) && !pid_alive(grandchild)).await,
        "left behind: runtime {} grandchild {}",
        pid_alive(rt),
        pid_alive(grandchild)
    );
    // New connections are refused once it is gone.
    assert!(http("GET", &w.url("/health"), &[], "").await.is_err());
}

#[tokio::test]
async fn concurrency_one_serialises_and_a_queued_call_times_out_without_a_restart() {
    let w = start_warm(&[]).await;
    let url = w.url("/invoke");
    let slow = tokio::spawn(async move {
        http(
            "POST",
            &url,
            &[("x-execution-id", "slow")],
            json!({"input": {"sleepMs": 600}}).to_string(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let r = invoke(
        &w,
        &[("x-execution-id", "queued"), ("x-timeout-ms", "150")],
        json!({"input": 1}),
    )
    .await;
    assert_eq!(r.status, 504);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("free slot"),
        "{}",
        r.text()
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(
        pid_of(&slow),
        w.runtime_pid,
        "the runtime was not restarted"
    );
    assert_eq!(metric(&w, "nanofaas_watchdog_timeouts_total").await, 0.0);
}

#[tokio::test]
async fn concurrency_n_runs_calls_in_parallel() {
    let w = start_warm(&[("WARM_CONCURRENCY", "4")]).await;
    let t = Instant::now();
    let mut calls = Vec::new();
    for i in 0..4 {
        let url = w.url("/invoke");
        calls.push(tokio::spawn(async move {
            http(
                "POST",
                &url,
                &[("x-execution-id", &format!("p{i}"))],
                json!({"input": {"sleepMs": 400}}).to_string(),
            )
            .await
        }));
    }
    for c in calls {
        let r = c.await.unwrap().unwrap();
        assert_eq!(pid_of(&r), w.runtime_pid);
    }
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "not parallel: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_runtime_that_keeps_dying_is_restarted_with_backoff_not_in_a_tight_loop() {
    // Each runtime exits on its own 100 ms after starting, without serving anything. Restarted
    // at once, that would be ~15 starts in 1.5 s; with the doubling pause (50, 100, 200, 400 ms)
    // it is about 5. (100 ms also leaves the first runtime time to pass its health check.)
    let w = start_warm(&[("FIXTURE_EXIT_AFTER_MS", "100")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let starts = metric(&w, "nanofaas_watchdog_runtime_starts_total").await;
    assert!((2.0..=8.0).contains(&starts), "starts in 1.5 s: {starts}");
    // Meanwhile invocations get a clear error or a short-lived runtime, never a hang.
    let r = invoke(
        &w,
        &[("x-execution-id", "x"), ("x-timeout-ms", "3000")],
        json!({"input": 1}),
    )
    .await;
    if r.status != 200 {
        let code = r.json()["error"]["code"].as_str().unwrap().to_string();
        assert!(
            ["STARTUP_ERROR", "INSTANCE_LOST", "TIMEOUT"].contains(&code.as_str()),
            "{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn stdio_runtime_stays_warm_and_runs_the_command_per_invocation() {
    let w = start_warm(&[
        ("WARM_RUNTIME_MODE", "STDIO"),
        ("WATCHDOG_CMD", &fixture("stdio.sh")),
    ])
    .await;
    assert_eq!(w.runtime_pid, 0);
    let (_, health) = get_json(&w.url("/health")).await.unwrap();
    assert_eq!(
        (health["status"].clone(), health["runtimePid"].clone()),
        (json!("ok"), Value::Null)
    );
    let r = invoke(
        &w,
        &[("x-execution-id", "s1"), ("x-trace-id", "ts")],
        json!({"input": {"n": 1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["request"], json!({"input": {"n": 1}}));
    assert_eq!(
        (v["executionId"].clone(), v["traceId"].clone()),
        (json!("s1"), json!("ts"))
    );
    let r2 = call(&w, "s2", json!(2)).await;
    assert_ne!(r2.json()["pid"], v["pid"], "one process per invocation");

    let r = call(&w, "s3", json!("fail")).await;
    assert_eq!(r.status, 500);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "FUNCTION_ERROR");
    assert!(
        e["message"].as_str().unwrap().contains("code 5")
            && e["message"].as_str().unwrap().contains("failing as asked"),
        "{e}"
    );

    let r = call(&w, "s4", json!("text")).await;
    assert_eq!(r.json(), json!("plain text output"));

    let r = invoke(
        &w,
        &[("x-execution-id", "s5"), ("x-timeout-ms", "200")],
        json!({"input": "slow"}),
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(metric(&w, "nanofaas_watchdog_timeouts_total").await, 1.0);
}

#[tokio::test]
async fn file_runtime_gets_fresh_files_per_invocation() {
    let w = start_warm(&[
        ("WARM_RUNTIME_MODE", "FILE"),
        ("WATCHDOG_CMD", &fixture("file.sh")),
    ])
    .await;
    let r1 = call(&w, "f1", json!({"a": 1})).await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(r1.json()["request"], json!({"input": {"a": 1}}));
    assert_eq!(r1.json()["executionId"], "f1");
    let r2 = call(&w, "f2", json!(2)).await;
    let (p1, p2) = (
        r1.json()["inputFile"].as_str().unwrap().to_string(),
        r2.json()["inputFile"].as_str().unwrap().to_string(),
    );
    assert_ne!(p1, p2, "a fresh directory per invocation");
    assert!(
        !std::path::Path::new(&p1).exists(),
        "the directory is removed afterwards"
    );
    let r = call(&w, "f3", json!("nooutput")).await;
    assert_eq!(r.status, 500);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no output file"));
    let r = call(&w, "f4", json!("fail")).await;
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("code 6"));
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_cut_the_call_short() {
    use tokio::io::AsyncWriteExt;
    let sink = CallbackSink::start().await;
    let w = start_warm(&[]).await;
    // A raw request whose client goes away 50 ms into a 400 ms call.
    let body = json!({"input": {"sleepMs": 400}}).to_string();
    let raw = format!(
        "POST /invoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-execution-id: gone\r\n\
         x-callback-url: {}\r\ncontent-length: {}\r\n\r\n{body}",
        sink.url(),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", w.port))
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    // The next call waits for the abandoned one (one at a time) and reaches the same runtime.
    let t = Instant::now();
    let r = call(&w, "next", json!(1)).await;
    assert_eq!(pid_of(&r), w.runtime_pid);
    assert_eq!(r.json()["count"], 2);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "ran alongside the abandoned call: {:?}",
        t.elapsed()
    );
    // The abandoned call still completed and called back.
    let reqs = sink.wait_for(1, T).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/gone:complete");
    assert_eq!(reqs[0].json()["success"], true);
    let (_, health) = get_json(&w.url("/health")).await.unwrap();
    assert_eq!(
        (health["inflight"].clone(), health["invocations"].clone()),
        (json!(0), json!(2))
    );
}

#[tokio::test]
async fn large_payloads_pass_and_oversized_ones_get_413() {
    let w = start_warm(&[("MAX_PAYLOAD_BYTES", "2000000")]).await;
    let big = "x".repeat(1_000_000);
    let r = call(&w, "big", json!(big)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["echo"].as_str().map(str::len), Some(1_000_000));
    let huge = "y".repeat(2_100_000);
    let r = call(&w, "huge", json!(huge)).await;
    assert_eq!(r.status, 413, "{}", &r.text()[..200.min(r.text().len())]);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    // The connection and the runtime are still fine.
    assert_eq!(pid_of(&call(&w, "after", json!(1)).await), w.runtime_pid);
}

/// Sends one header-form invocation over the watchdog's Unix socket.
async fn call_unix(client: &nanofaas_h1::Client, socket: &str, id: &str) -> Value {
    let r = client
        .send_to(
            &nanofaas_h1::Endpoint::unix(socket),
            "watchdog",
            "POST",
            "/invoke",
            &[("x-execution-id", id), ("content-type", "application/json")],
            json!({"input": id}).to_string().as_bytes(),
            1 << 20,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await
        .expect("the watchdog answers on its socket");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn warm_socket_serves_the_same_runtime_as_the_port_and_goes_away_at_exit() {
    let client = nanofaas_h1::Client::new(nanofaas_h1::ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: 4,
    });
    // A name in the abstract namespace, then a path (whose file must be gone after exit).
    let dir = std::env::temp_dir().join(format!("nanofaas-wd-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.sock");
    let name = format!("@nanofaas-wd-test-{}", std::process::id());
    for socket in [name.clone(), file.display().to_string()] {
        let mut w = start_warm(&[("WARM_SOCKET", &socket)]).await;
        let line = w
            .proc
            .lines(Stream::Stdout)
            .into_iter()
            .find(|l| l.starts_with("NANOFAAS_READY"))
            .unwrap();
        assert_eq!(
            ready_socket(&line).as_deref(),
            Some(socket.as_str()),
            "{line}"
        );
        for n in 0..5 {
            let out = call_unix(&client, &socket, &format!("u{n}")).await;
            assert_eq!(out["pid"].as_u64(), Some(w.runtime_pid as u64));
        }
        // The TCP port serves the same runtime.
        assert_eq!(pid_of(&call(&w, "tcp", json!(1)).await), w.runtime_pid);
        w.proc.signal(libc::SIGTERM).unwrap();
        let st = w.proc.wait_exit_async(T).await.expect("exits");
        assert_eq!(st.code(), Some(0), "{}", w.proc.output());
        let fresh = nanofaas_h1::Client::new(nanofaas_h1::ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 4,
        });
        assert!(
            matches!(
                fresh
                    .send_to(
                        &nanofaas_h1::Endpoint::unix(&socket),
                        "w",
                        "GET",
                        "/health",
                        &[],
                        b"",
                        1024,
                        tokio::time::Instant::now() + Duration::from_secs(5),
                    )
                    .await,
                Err(nanofaas_h1::Error::Connect(_))
            ),
            "{socket} still answers after exit"
        );
    }
    assert!(!file.exists(), "the socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_warm_socket_that_cannot_be_bound_is_a_clear_startup_error() {
    let mut w = watchdog_command(
        &warm_env(&[("WARM_SOCKET", "/nonexistent-dir-for-nanofaas/w.sock")])
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>(),
    );
    let out = w.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("cannot listen on WARM_SOCKET"), "{stderr}");
}

/// Connected sockets bound to the abstract name `name` (without `@`), from /proc/net/unix.
fn connected_to(name: &str) -> usize {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; St 03 = connected.
            f.len() >= 8 && f[5] == "03" && f[7] == format!("@{name}")
        })
        .count()
}

#[tokio::test]
async fn a_runtime_that_takes_the_offered_socket_is_called_over_it_and_others_over_their_port() {
    let prefix = format!("@nanofaas-wd-rt-{}", std::process::id());
    // The echo runtime serves NANOFAAS_RUNTIME_SOCKET; it answers with the body it was sent.
    let echo = nanofaas_testkit::workspace_bin("echo-runtime")
        .to_string_lossy()
        .into_owned();
    // Invocations cannot go to the port: RUNTIME_URL names one nobody listens on (the health
    // URL names the runtime's real port), so only the socket can answer them.
    let mut env = warm_env(&[("WARM_RUNTIME_SOCKET", &prefix), ("WATCHDOG_CMD", &echo)]);
    let port = env.iter().find(|(k, _)| *k == "PORT").unwrap().1.clone();
    let dead = nanofaas_testkit::free_port();
    env.retain(|(k, _)| *k != "RUNTIME_URL");
    env.push(("RUNTIME_URL", format!("http://127.0.0.1:{dead}/invoke")));
    env.push((
        "RUNTIME_HEALTH_URL",
        format!("http://127.0.0.1:{port}/health"),
    ));
    let w = start_warm_env(&env).await;
    for n in 0..3 {
        let r = call(&w, &format!("s{n}"), json!(n)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["input"], json!(n));
    }
    let name = format!("{}.1", &prefix[1..]);
    assert!(
        connected_to(&name) >= 1,
        "no connection to unix:@{name}\n{}",
        w.proc.output()
    );

    // The test runtime ignores the offer: calls go to its port and still succeed.
    let prefix2 = format!("{prefix}-tcp");
    let w2 = start_warm(&[("WARM_RUNTIME_SOCKET", &prefix2)]).await;
    for n in 0..3 {
        assert_eq!(
            pid_of(&call(&w2, &format!("t{n}"), json!(n)).await),
            w2.runtime_pid
        );
    }
    assert_eq!(connected_to(&format!("{}.1", &prefix2[1..])), 0);
}
