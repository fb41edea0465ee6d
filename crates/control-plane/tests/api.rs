//! The control plane's HTTP API against scriptable endpoints (POOL functions), in process on
//! loopback: every route and status code, admission, idempotency, retries, callbacks, metrics.

mod common;

use common::*;
use nanofaas_control_plane::auth::CallbackAuth;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn function_registry_routes_and_errors() {
    let cp = Cp::start(config()).await;
    let ep = echo_endpoint().await;
    let spec = cp.register_pool("echo", &ep.url(), json!({})).await;
    assert_eq!(spec["timeoutMs"], 30000);
    assert_eq!(spec["concurrency"], 4);
    assert_eq!(spec["queueSize"], 100);
    assert_eq!(spec["maxRetries"], 3);
    assert_eq!(spec["retryFunctionErrors"], false);

    let dup = cp
        .post(
            "/v1/functions",
            json!({"name": "echo", "executionMode": "POOL", "endpointUrl": ep.url()}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["error"]["code"], "ALREADY_EXISTS");

    for (body, field) in [
        (
            json!({"name": "9bad", "executionMode": "POOL", "endpointUrl": ep.url()}),
            "name",
        ),
        (
            json!({"name": "x", "executionMode": "POOL", "endpointUrl": ep.url(), "timeoutMs": -1}),
            "timeoutMs",
        ),
        (
            json!({"name": "x", "executionMode": "POOL", "endpointUrl": ep.url(), "colour": "red"}),
            "colour",
        ),
        (json!({"name": "x", "executionMode": "POOL"}), "endpointUrl"),
        (json!({"name": "x", "command": "./run"}), "executionMode"),
    ] {
        let r = cp.post("/v1/functions", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with(&format!("{field}: ")), "{body} → {msg}");
    }
    let r = common::http("POST", &cp.url("/v1/functions"), &[], "{not json")
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    let list = cp.get("/v1/functions").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert_eq!(cp.get("/v1/functions/echo").await.json()["name"], "echo");
    assert_eq!(cp.get("/v1/functions/nope").await.status, 404);
    assert_eq!(cp.get("/v1/functions/9bad").await.status, 400);

    // PUT replaces (200) or creates (201); the path names the function.
    let put = common::http(
        "PUT",
        &cp.url("/v1/functions/echo"),
        &[],
        json!({"executionMode": "POOL", "endpointUrl": ep.url(), "timeoutMs": 1234}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(cp.get("/v1/functions/echo").await.json()["timeoutMs"], 1234);
    let put = common::http(
        "PUT",
        &cp.url("/v1/functions/other"),
        &[],
        json!({"executionMode": "POOL", "endpointUrl": ep.url()}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(put.status, 201);
    let put = common::http(
        "PUT",
        &cp.url("/v1/functions/other"),
        &[],
        json!({"name": "else", "executionMode": "POOL", "endpointUrl": ep.url()}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(put.status, 400);

    let del = common::http("DELETE", &cp.url("/v1/functions/other"), &[], "")
        .await
        .unwrap();
    assert_eq!(del.status, 204);
    let del = common::http("DELETE", &cp.url("/v1/functions/other"), &[], "")
        .await
        .unwrap();
    assert_eq!(del.status, 404);

    let r = common::http("PATCH", &cp.url("/v1/functions/echo"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(cp.get("/v2/nothing").await.status, 404);
    assert_eq!(cp.get("/healthz").await.status, 200);
    assert_eq!(cp.get("/readyz").await.status, 200);
    cp.shutdown().await;
}

#[tokio::test]
async fn invoke_enqueue_and_execution_status() {
    let cp = Cp::start(config()).await;
    let ep = echo_endpoint().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;

    let r = cp
        .post_h(
            "/v1/functions/echo:invoke",
            &[("x-trace-id", "trace-1")],
            json!({"input": {"a": 1}, "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "success");
    assert_eq!(body["output"]["echo"], json!({"a": 1}));
    assert_eq!(body["error"], Value::Null);
    let id = body["executionId"].as_str().unwrap().to_string();
    assert_eq!(r.header("x-execution-id"), Some(id.as_str()));
    assert_eq!(r.header("x-trace-id"), Some("trace-1"));
    // The runtime contract headers reached the endpoint, and the body was forwarded as is.
    let seen = ep.requests().pop().unwrap();
    assert_eq!(seen.header("x-execution-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-trace-id"), Some("trace-1"));
    assert_eq!(seen.header("x-dispatch-attempt"), Some("1"));
    assert_eq!(seen.header("x-timeout-ms"), Some("30000"));
    assert_eq!(
        seen.body,
        json!({"input": {"a": 1}, "metadata": {"k": "v"}})
    );

    let ex = cp.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(ex.status, 200);
    let ex = ex.json();
    assert_eq!(ex["status"], "success");
    assert_eq!(ex["function"], "echo");
    assert_eq!(ex["attempts"], 1);
    assert_eq!(ex["coldStart"], false);
    assert_eq!(ex["traceId"], "trace-1");
    assert!(ex["finishedAt"].as_u64().unwrap() >= ex["createdAt"].as_u64().unwrap());

    // An empty body means no input.
    let r = common::http("POST", &cp.url("/v1/functions/echo:invoke"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["output"]["echo"], Value::Null);

    // Async.
    let r = cp
        .post("/v1/functions/echo:enqueue", json!({"input": "later"}))
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let ex = wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
    assert_eq!(ex["output"]["echo"], "later");
    assert_eq!(ex["mode"], "async");

    // Bad input.
    for (path, body) in [
        ("/v1/functions/echo:invoke", "[1,2]"),
        ("/v1/functions/echo:invoke", "{\"input\": 1, \"extra\": 2}"),
        ("/v1/functions/echo:invoke", "{\"metadata\": {\"k\": 1}}"),
        ("/v1/functions/echo:enqueue", "{oops"),
    ] {
        let r = common::http("POST", &cp.url(path), &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["code"], "INVALID_REQUEST");
    }
    for (h, v) in [
        ("x-timeout-ms", "soon"),
        ("x-timeout-ms", "0"),
        ("idempotency-key", ""),
    ] {
        let r = cp
            .post_h("/v1/functions/echo:invoke", &[(h, v)], json!({}))
            .await;
        assert_eq!(r.status, 400, "{h}: {v}");
    }
    assert_eq!(
        cp.post("/v1/functions/nope:invoke", json!({})).await.status,
        404
    );
    assert_eq!(
        cp.post("/v1/functions/nope:enqueue", json!({}))
            .await
            .status,
        404
    );
    assert_eq!(cp.get("/v1/executions/does-not-exist").await.status, 404);
    let r = common::http("GET", &cp.url("/v1/functions/echo:invoke"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    cp.shutdown().await;
}

#[tokio::test]
async fn body_size_limit_is_413() {
    let mut cfg = config();
    cfg.max_body_bytes = 2048;
    let cp = Cp::start(cfg).await;
    let ep = echo_endpoint().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    let big = json!({"input": "x".repeat(4096)});
    let r = cp.post("/v1/functions/echo:invoke", big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(ep.count(), 0);
    cp.shutdown().await;
}

#[tokio::test]
async fn function_errors_and_timeouts_of_sync_calls_are_not_retried() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|s, _| match s.body["input"].as_str() {
        Some("fail") => Reply::Json(
            500,
            json!({"error": {"code": "HANDLER_ERROR", "message": "boom"}}),
        ),
        Some("slow") => Reply::After(Duration::from_millis(500), 200, json!("late")),
        _ => Reply::Json(200, json!("ok")),
    })
    .await;
    cp.register_pool("f", &ep.url(), json!({"timeoutMs": 150}))
        .await;
    let r = cp
        .post("/v1/functions/f:invoke", json!({"input": "fail"}))
        .await;
    assert_eq!(r.status, 500);
    let b = r.json();
    assert_eq!(b["status"], "error");
    assert_eq!(b["error"]["code"], "HANDLER_ERROR");
    assert_eq!(b["error"]["message"], "boom");
    assert!(b["executionId"].is_string());
    assert_eq!(ep.count(), 1);

    let r = cp
        .post("/v1/functions/f:invoke", json!({"input": "slow"}))
        .await;
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["status"], "timeout");
    assert_eq!(r.json()["error"]["code"], "TIMEOUT");
    assert_eq!(ep.count(), 2);
    // X-Timeout-Ms shortens the function's timeout for one call.
    let started = std::time::Instant::now();
    let r = cp
        .post_h(
            "/v1/functions/f:invoke",
            &[("x-timeout-ms", "50")],
            json!({"input": "slow"}),
        )
        .await;
    assert_eq!(r.status, 408);
    assert!(
        started.elapsed() < Duration::from_millis(140),
        "{:?}",
        started.elapsed()
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_function_timeout_total{function=\"f\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "nanofaas_function_retry_total{function=\"f\"}"),
        Some(0.0)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn platform_failures_are_retried_with_the_same_execution_id() {
    let cp = Cp::start(config()).await;
    // First attempt: the connection is dropped before any answer; second: success.
    let ep = Endpoint::start(|s, _| match s.header("x-dispatch-attempt") {
        Some("1") => Reply::Drop,
        _ => Reply::Json(200, json!({"attempt": s.header("x-dispatch-attempt")})),
    })
    .await;
    cp.register_pool("flaky", &ep.url(), json!({})).await;
    let r = cp
        .post("/v1/functions/flaky:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"]["attempt"], "2");
    let seen = ep.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("x-execution-id"),
        seen[1].header("x-execution-id")
    );
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    assert_eq!(
        cp.get(&format!("/v1/executions/{id}")).await.json()["attempts"],
        2
    );

    // Nothing listens: every attempt fails to connect; 3 attempts in all, then 502.
    let dead = format!("http://127.0.0.1:{}/invoke", nanofaas_testkit::free_port());
    cp.register_pool("dead", &dead, json!({})).await;
    let r = cp.post("/v1/functions/dead:invoke", json!({})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "INSTANCE_LOST");
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    assert_eq!(
        cp.get(&format!("/v1/executions/{id}")).await.json()["attempts"],
        3
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_function_retry_total{function=\"dead\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "nanofaas_function_dispatch_total{function=\"dead\"}"),
        Some(3.0)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn async_function_errors_run_once_unless_retry_function_errors() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|s, _| match s.header("x-dispatch-attempt") {
        Some("3") => Reply::Json(200, json!("third time lucky")),
        _ => Reply::Json(500, json!({"error": "not yet"})),
    })
    .await;
    // By default (as in OpenWhisk) a function error is final, async or not.
    cp.register_pool("once", &ep.url(), json!({})).await;
    let r = cp.post("/v1/functions/once:enqueue", json!({})).await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let ex = wait_status(&cp, &id, "error", Duration::from_secs(5)).await;
    assert_eq!(ex["attempts"], 1);
    assert_eq!(ex["error"]["code"], "HANDLER_ERROR");
    assert_eq!(ep.count(), 1, "a function error was retried by default");

    cp.register_pool(
        "eventually",
        &ep.url(),
        json!({"retryFunctionErrors": true}),
    )
    .await;
    let r = cp.post("/v1/functions/eventually:enqueue", json!({})).await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let ex = wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
    assert_eq!(ex["attempts"], 3);
    assert_eq!(ex["output"], "third time lucky");

    cp.register_pool(
        "never",
        &ep.url(),
        json!({"maxRetries": 2, "retryFunctionErrors": true}),
    )
    .await;
    // `never` shares the endpoint; its attempts are 1 and 2, both failing.
    let r = cp.post("/v1/functions/never:enqueue", json!({})).await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let ex = wait_status(&cp, &id, "error", Duration::from_secs(5)).await;
    assert_eq!(ex["attempts"], 2);
    assert_eq!(ex["error"]["code"], "HANDLER_ERROR");
    // A synchronous caller gets the error and decides, whatever the field says.
    let r = cp.post("/v1/functions/never:invoke", json!({})).await;
    assert_eq!(r.status, 500, "{}", r.text());
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    assert_eq!(
        cp.get(&format!("/v1/executions/{id}")).await.json()["attempts"],
        1
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn concurrency_limit_holds_under_200_racing_requests() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|_, _| Reply::After(Duration::from_millis(5), 200, json!("ok"))).await;
    cp.register_pool(
        "limited",
        &ep.url(),
        json!({"concurrency": 3, "queueSize": 1000}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = cp.url("/v1/functions/limited:invoke");
        tasks.push(tokio::spawn(async move {
            common::http("POST", &url, &[], json!({"input": i}).to_string())
                .await
                .unwrap()
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(ep.count(), 200);
    assert_eq!(
        ep.peak.load(Ordering::SeqCst),
        3,
        "concurrency limit exceeded or never reached"
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_function_inflight{function=\"limited\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "nanofaas_function_queue_depth{function=\"limited\"}"),
        Some(0.0)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn a_saturated_function_does_not_starve_another() {
    let cp = Cp::start(config()).await;
    let slow =
        Endpoint::start(|_, _| Reply::After(Duration::from_millis(300), 200, json!("slow"))).await;
    let fast = echo_endpoint().await;
    cp.register_pool(
        "slow",
        &slow.url(),
        json!({"concurrency": 1, "queueSize": 50}),
    )
    .await;
    cp.register_pool("fast", &fast.url(), json!({"concurrency": 1}))
        .await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        let url = cp.url("/v1/functions/slow:enqueue");
        flood.push(tokio::spawn(async move {
            common::http("POST", &url, &[], "{}").await.unwrap().status
        }));
    }
    for t in flood {
        assert_eq!(t.await.unwrap(), 202);
    }
    let started = std::time::Instant::now();
    let r = cp
        .post("/v1/functions/fast:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "fast waited {:?}",
        started.elapsed()
    );
    // Deleting fails the flood's queued work at once, so shutdown has little to drain.
    assert_eq!(
        common::http("DELETE", &cp.url("/v1/functions/slow"), &[], "")
            .await
            .unwrap()
            .status,
        204
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn backpressure_answers_429_with_reason_and_retry_after() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|s, _| {
        let ms = s.body["input"].as_u64().unwrap_or(0);
        Reply::After(Duration::from_millis(ms), 200, json!("done"))
    })
    .await;
    cp.register_pool(
        "narrow",
        &ep.url(),
        json!({"concurrency": 1, "queueSize": 1}),
    )
    .await;
    let url = cp.url("/v1/functions/narrow:invoke");
    let running = tokio::spawn({
        let url = url.clone();
        async move {
            common::http("POST", &url, &[], "{\"input\": 600}")
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Queued, with a short timeout: waits, then refused with reason "timeout".
    let queued = tokio::spawn({
        let url = url.clone();
        async move {
            common::http("POST", &url, &[("x-timeout-ms", "200")], "{\"input\": 0}")
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The queue (1 place) is taken: refused at once with reason "depth".
    let r = common::http("POST", &url, &[], "{\"input\": 0}")
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-queue-reject-reason"), Some("depth"));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.json()["error"]["code"], "BACKPRESSURE");
    assert!(r.header("x-execution-id").is_none());
    let q = queued.await.unwrap();
    assert_eq!(q.status, 429, "{}", q.text());
    assert_eq!(q.header("x-queue-reject-reason"), Some("timeout"));
    assert_eq!(running.await.unwrap().status, 200);

    // est_wait: after a few 300 ms calls, a call with a 100 ms timeout behind a busy slot is
    // refused at once.
    for _ in 0..5 {
        assert_eq!(
            common::http("POST", &url, &[], "{\"input\": 300}")
                .await
                .unwrap()
                .status,
            200
        );
    }
    let busy = tokio::spawn({
        let url = url.clone();
        async move {
            common::http("POST", &url, &[], "{\"input\": 300}")
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let r = common::http("POST", &url, &[("x-timeout-ms", "100")], "{\"input\": 0}")
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-queue-reject-reason"), Some("est_wait"));
    assert!(started.elapsed() < Duration::from_millis(90));
    busy.await.unwrap();
    let m = cp.metrics().await;
    assert_eq!(
        metric(
            &m,
            "nanofaas_function_queue_rejected_total{function=\"narrow\"}"
        ),
        Some(3.0)
    );

    // enqueue refuses with 429 too when the queue is full.
    let slow = tokio::spawn({
        let url = url.clone();
        async move {
            common::http("POST", &url, &[], "{\"input\": 400}")
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        cp.post("/v1/functions/narrow:enqueue", json!({"input": 0}))
            .await
            .status,
        202
    );
    let r = cp
        .post("/v1/functions/narrow:enqueue", json!({"input": 0}))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-queue-reject-reason"), Some("depth"));
    slow.await.unwrap();
    cp.shutdown().await;
}

#[tokio::test]
async fn rate_limits_global_and_per_function() {
    let mut cfg = config();
    cfg.admission.global_rate_per_second = 5.0;
    let cp = Cp::start(cfg).await;
    let ep = echo_endpoint().await;
    cp.register_pool("a", &ep.url(), json!({"rateLimitPerSecond": 2}))
        .await;
    cp.register_pool("b", &ep.url(), json!({})).await;
    let codes_a: Vec<u16> = futures_seq(&cp, "a", 3).await;
    assert_eq!(codes_a, vec![200, 200, 429]);
    let r = cp.post("/v1/functions/a:invoke", json!({})).await;
    assert_eq!(r.header("x-queue-reject-reason"), Some("rate"));
    assert!(r.header("retry-after").is_some());
    // 3 global tokens were taken by a (the 4th was refused by the global bucket or a's); b gets
    // what is left of the 5-per-second global bucket.
    let codes_b: Vec<u16> = futures_seq(&cp, "b", 5).await;
    assert!(codes_b.contains(&429), "{codes_b:?}");
    assert!(
        codes_b.iter().filter(|c| **c == 200).count() <= 2,
        "{codes_b:?}"
    );
    cp.shutdown().await;
}

async fn futures_seq(cp: &Cp, f: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            cp.post(&format!("/v1/functions/{f}:invoke"), json!({}))
                .await
                .status,
        );
    }
    out
}

#[tokio::test]
async fn idempotency_keys() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|s, _| {
        Reply::After(
            Duration::from_millis(100),
            200,
            json!({"got": s.body["input"]}),
        )
    })
    .await;
    cp.register_pool("idem", &ep.url(), json!({})).await;
    let url = cp.url("/v1/functions/idem:invoke");
    let mut racing = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        racing.push(tokio::spawn(async move {
            common::http("POST", &url, &[("idempotency-key", "k1")], "{\"input\": 7}")
                .await
                .unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in racing {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["output"]["got"], 7);
        ids.insert(r.json()["executionId"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "racing duplicates must share one execution");
    assert_eq!(ep.count(), 1, "the function ran once");

    // Same key, different body: 409.
    let r = common::http("POST", &url, &[("idempotency-key", "k1")], "{\"input\": 8}")
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "IDEMPOTENCY_CONFLICT");
    // Enqueue with a known key returns the same execution.
    let r = cp
        .post_h(
            "/v1/functions/idem:enqueue",
            &[("idempotency-key", "k1")],
            json!({"input": 7}),
        )
        .await;
    assert_eq!(r.status, 202);
    assert!(ids.contains(r.json()["executionId"].as_str().unwrap()));
    let m = cp.metrics().await;
    assert!(metric(&m, "nanofaas_idempotent_replays_total").unwrap() >= 19.0);
    // The same key on another function is another execution.
    cp.register_pool("idem2", &ep.url(), json!({})).await;
    let r = cp
        .post_h(
            "/v1/functions/idem2:invoke",
            &[("idempotency-key", "k1")],
            json!({"input": 7}),
        )
        .await;
    assert!(!ids.contains(r.json()["executionId"].as_str().unwrap()));
    cp.shutdown().await;
}

#[tokio::test]
async fn callbacks_need_the_attempt_token_and_first_result_wins() {
    let cp = Cp::start(config()).await;
    let ep = Endpoint::start(|_, _| {
        Reply::After(Duration::from_millis(400), 200, json!("from-endpoint"))
    })
    .await;
    cp.register_pool("cb", &ep.url(), json!({})).await;
    let url = cp.url("/v1/functions/cb:invoke");
    let call = tokio::spawn(async move { common::http("POST", &url, &[], "{}").await.unwrap() });
    // Wait for the attempt to reach the endpoint, then learn its execution id.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ep.count() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = ep.requests()[0]
        .header("x-execution-id")
        .unwrap()
        .to_string();
    let auth = CallbackAuth::from_secret(SECRET);
    let complete = cp.url(&format!("/v1/internal/executions/{id}:complete"));
    let body = json!({"success": true, "output": "from-callback", "error": null}).to_string();

    let r = common::http("POST", &complete, &[], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 401, "missing token");
    let forged = CallbackAuth::from_secret("not-the-secret").token(&id, 1);
    let r = common::http(
        "POST",
        &complete,
        &[("x-callback-token", &forged)],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "forged token");
    let other = auth.token("another-execution", 1);
    let r = common::http(
        "POST",
        &complete,
        &[("x-callback-token", &other)],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "token of another execution");
    let good = auth.token(&id, 1);
    let r = common::http(
        "POST",
        &complete,
        &[("x-callback-token", &good)],
        "{\"nope\": 1}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "malformed result");
    let stale = auth.token(&id, 2);
    let r = common::http(
        "POST",
        &complete,
        &[("x-callback-token", &stale)],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status, 204,
        "a token for another attempt is valid but stale: ignored"
    );

    let r = common::http(
        "POST",
        &complete,
        &[("authorization", &format!("Bearer {good}"))],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    let dup = json!({"success": false, "output": null, "error": {"code": "X", "message": "late"}})
        .to_string();
    let r = common::http("POST", &complete, &[("x-callback-token", &good)], dup)
        .await
        .unwrap();
    assert_eq!(r.status, 204, "a second result is ignored");

    let r = call.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["output"],
        "from-callback",
        "the callback arrived first and wins"
    );
    let m = cp.metrics().await;
    assert_eq!(metric(&m, "nanofaas_callbacks_recorded_total"), Some(1.0));
    assert_eq!(metric(&m, "nanofaas_callbacks_ignored_total"), Some(2.0));
    assert_eq!(metric(&m, "nanofaas_callbacks_rejected_total"), Some(3.0));
    // A callback for a finished execution is stale: 204, ignored.
    let r = common::http("POST", &complete, &[("x-callback-token", &good)], body)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        metric(&cp.metrics().await, "nanofaas_callbacks_ignored_total"),
        Some(3.0)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn delete_fails_queued_work_with_function_removed() {
    let cp = Cp::start(config()).await;
    let ep =
        Endpoint::start(|_, _| Reply::After(Duration::from_millis(300), 200, json!("done"))).await;
    cp.register_pool("gone", &ep.url(), json!({"concurrency": 1}))
        .await;
    let url = cp.url("/v1/functions/gone:invoke");
    let running = tokio::spawn({
        let url = url.clone();
        async move { common::http("POST", &url, &[], "{}").await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued_sync =
        tokio::spawn(async move { common::http("POST", &url, &[], "{}").await.unwrap() });
    let r = cp.post("/v1/functions/gone:enqueue", json!({})).await;
    let queued_async = r.json()["executionId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let del = common::http("DELETE", &cp.url("/v1/functions/gone"), &[], "")
        .await
        .unwrap();
    assert_eq!(del.status, 204);
    let q = queued_sync.await.unwrap();
    assert_eq!(q.status, 410, "{}", q.text());
    assert_eq!(q.json()["error"]["code"], "FUNCTION_REMOVED");
    let ex = cp
        .get(&format!("/v1/executions/{queued_async}"))
        .await
        .json();
    assert_eq!(ex["status"], "error");
    assert_eq!(ex["error"]["code"], "FUNCTION_REMOVED");
    // The running one drains and finishes.
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(
        cp.post("/v1/functions/gone:invoke", json!({})).await.status,
        404
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn execution_record_cap_keeps_memory_bounded() {
    let mut cfg = config();
    cfg.executions.max_records = 5;
    let cp = Cp::start(cfg).await;
    let ep = echo_endpoint().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = cp
            .post("/v1/functions/echo:invoke", json!({"input": i}))
            .await;
        ids.push(r.json()["executionId"].as_str().unwrap().to_string());
    }
    assert_eq!(
        cp.get(&format!("/v1/executions/{}", ids[0])).await.status,
        404
    );
    assert_eq!(
        cp.get(&format!("/v1/executions/{}", ids[11])).await.status,
        200
    );
    let m = cp.metrics().await;
    assert_eq!(metric(&m, "nanofaas_executions_stored"), Some(5.0));
    assert_eq!(metric(&m, "nanofaas_executions_evicted_total"), Some(7.0));
    cp.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_running_calls_finish_and_refuses_new_ones() {
    let cp = Cp::start(config()).await;
    let ep =
        Endpoint::start(|_, _| Reply::After(Duration::from_millis(300), 200, json!("finished")))
            .await;
    cp.register_pool("long", &ep.url(), json!({})).await;
    let url = cp.url("/v1/functions/long:invoke");
    let call = tokio::spawn(async move { common::http("POST", &url, &[], "{}").await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = cp.base.clone();
    // A keep-alive connection opened before the stop.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut kept = tokio::net::TcpStream::connect(cp.handle.as_ref().unwrap().addr)
        .await
        .unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 1024];
    let n = kept.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let stopping = tokio::spawn(cp.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // New work on it is refused with 503 while the running call drains.
    kept.write_all(
        b"POST /v1/functions/long:invoke HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("SHUTTING_DOWN"), "{answer}");
    let r = common::http("GET", &format!("{base}/readyz"), &[], "").await;
    assert!(
        r.is_err() || r.unwrap().status == 503,
        "not ready while stopping"
    );
    let r = call.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["output"], "finished");
    stopping.await.unwrap();
    assert!(
        common::http("GET", &format!("{base}/healthz"), &[], "")
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_sync_invocation_finishes_even_if_its_caller_goes_away() {
    let cp = Cp::start(config()).await;
    let ep =
        Endpoint::start(|_, _| Reply::After(Duration::from_millis(300), 200, json!("done anyway")))
            .await;
    cp.register_pool("slow", &ep.url(), json!({"concurrency": 1}))
        .await;
    let url = cp.url("/v1/functions/slow:invoke");
    let call = tokio::spawn(async move { common::http("POST", &url, &[], "{}").await });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ep.count() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = ep.requests()[0]
        .header("x-execution-id")
        .unwrap()
        .to_string();
    // The client hangs up while the function runs.
    call.abort();
    let _ = call.await;
    let ex = wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
    assert_eq!(ex["output"], "done anyway", "{ex}");
    // Its slot was given back: the next call runs.
    assert_eq!(
        cp.post("/v1/functions/slow:invoke", json!({})).await.status,
        200
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_function_inflight{function=\"slow\"}"),
        Some(0.0)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_are_refused_before_anything_is_journaled_or_dispatched() {
    let dir = temp_state_dir("strict");
    let mut cfg = config();
    cfg.state_dir = dir.to_string_lossy().into_owned();
    let cp = Cp::start(cfg).await;
    let ep = echo_endpoint().await;
    cp.register_pool("strict", &ep.url(), json!({})).await;
    let journal = dir.join("journal.jsonl");
    let journal_lines = || {
        std::fs::read_to_string(&journal)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };

    let deep = format!("{{\"input\":{}}}", "[".repeat(65));
    let bodies: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"{\"input\":1}}".to_vec(),
            "",
            "trailing characters after the JSON value at line 1, column 12",
        ),
        (b"{\"input\":1} x".to_vec(), "", "trailing characters"),
        (b"{\"input\":\"a\xffb\"}".to_vec(), "", "invalid UTF-8"),
        (deep.into_bytes(), "input", "nested deeper than 64"),
        (
            b"{\"input\":{\"n\":1e400}}".to_vec(),
            "input.n",
            "number out of range",
        ),
        (
            b"{\"input\":\"\\ud800\"}".to_vec(),
            "input",
            "lone UTF-16 surrogate",
        ),
        (
            b"{\"input\":1,\"input\":2}".to_vec(),
            "input",
            "duplicate key",
        ),
        (
            b"{\"metadata\":{\"k\":\"1\",\"k\":\"2\"}}".to_vec(),
            "metadata.k",
            "duplicate key",
        ),
    ];
    for verb in ["invoke", "enqueue"] {
        for (body, field, needle) in &bodies {
            let shown = String::from_utf8_lossy(body);
            let r = common::http(
                "POST",
                &cp.url(&format!("/v1/functions/strict:{verb}")),
                &[],
                body.clone(),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 400, "{verb} {shown}: {}", r.text());
            let err = &r.json()["error"];
            assert_eq!(err["code"], "INVALID_REQUEST", "{shown}");
            let msg = err["message"].as_str().unwrap();
            let (place, what) = msg.split_once(": ").unwrap_or(("", msg));
            let place = if what.contains(" at line ") {
                place
            } else {
                ""
            };
            assert!(
                place.starts_with(field) && msg.contains(needle),
                "{verb} {shown}: {msg}"
            );
        }
    }
    // Nothing ran, nothing was kept, nothing was journaled.
    assert_eq!(ep.count(), 0);
    let m = cp.metrics().await;
    assert_eq!(metric(&m, "nanofaas_executions_stored"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "nanofaas_function_enqueue_total{function=\"strict\"}").unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric(&m, "nanofaas_function_dispatch_total{function=\"strict\"}").unwrap_or(0.0),
        0.0
    );
    assert_eq!(journal_lines(), 0);

    // The same route journals and dispatches a well-formed body, forwarded as sent.
    let good = " {\"input\" : {\"a\":1, \"a\":2}} \n";
    let r = common::http("POST", &cp.url("/v1/functions/strict:enqueue"), &[], good)
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
    assert_eq!(ep.count(), 1);
    assert!(journal_lines() >= 1);

    // Function specs too.
    let spec = format!(
        "{{\"name\":\"s2\",\"executionMode\":\"POOL\",\"endpointUrl\":\"{}\"}}",
        ep.url()
    );
    for (body, needle) in [
        (format!("{spec}}}"), "trailing characters"),
        (
            spec.replacen('{', "{\"name\":\"s2\",", 1),
            "name: duplicate key",
        ),
        (
            spec.replacen('{', "{\"timeoutMs\":1e400,", 1),
            "timeoutMs: number out of range",
        ),
    ] {
        let r = common::http("POST", &cp.url("/v1/functions"), &[], body.clone())
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with(needle), "{body}: {msg}");
        let r = common::http("PUT", &cp.url("/v1/functions/s2"), &[], body.clone())
            .await
            .unwrap();
        assert_eq!(r.status, 400, "PUT {body}");
    }
    assert_eq!(cp.get("/v1/functions/s2").await.status, 404);
    cp.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}
