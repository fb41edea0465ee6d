//! The runtime contract over real HTTP: a `Server` bound on 127.0.0.1:0 in this process, a real
//! client, and `CallbackSink`s for the callbacks.

use nanofaas_runtime::{Config, Handler, Request, Server};
use nanofaas_testkit::{http, CallbackSink, SinkConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

/// A running server; dropping it (or `stop`) ends it.
struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.done)
            .await
            .expect("server stops")
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.done.abort();
    }
}

async fn start(config: Config, handler: Handler) -> Running {
    let server = Server::bind(Config { port: 0, ..config }, handler)
        .await
        .expect("bind");
    let base = format!("http://{}", server.local_addr());
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        base,
        stop: Some(tx),
        done,
    }
}

/// Echoes what it was given; fails with `{"fail": "why"}`.
fn echo() -> Handler {
    Handler::from_async(|r: Request| async move {
        if let Some(why) = r.input.get("fail").and_then(Value::as_str) {
            return Err(format!("asked to fail: {why}"));
        }
        Ok(json!({
            "input": r.input,
            "metadata": r.metadata,
            "executionId": r.execution_id,
            "traceId": r.trace_id,
            "traceparent": r.traceparent,
        }))
    })
}

fn quick_callbacks() -> Config {
    Config {
        callback_backoff: Duration::from_millis(1),
        callback_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

async fn invoke(base: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let r = http("POST", &format!("{base}/invoke"), headers, body.to_string())
        .await
        .unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    (r.status, r.json())
}

#[tokio::test]
async fn health_and_routes() {
    let s = start(Config::default(), echo()).await;
    let r = http("GET", &format!("{}/health", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = http("HEAD", &format!("{}/health", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = http("POST", &format!("{}/health", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.json()["error"]["code"], "METHOD_NOT_ALLOWED");
    let r = http("GET", &format!("{}/invoke", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = http("GET", &format!("{}/nope", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    s.stop().await;
}

#[tokio::test]
async fn invoke_passes_request_and_headers_to_the_handler() {
    let s = start(Config::default(), echo()).await;
    let (status, out) = invoke(
        &s.base,
        &[("X-Execution-Id", "e-1"), ("X-Trace-Id", "t-1")],
        r#"{"input": {"name": "Ada"}, "metadata": {"k": "v"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        out,
        json!({"input": {"name": "Ada"}, "metadata": {"k": "v"}, "executionId": "e-1", "traceId": "t-1", "traceparent": null})
    );
    // No input, no metadata, no trace id.
    let (status, out) = invoke(&s.base, &[("X-Execution-Id", "e-2")], "{}").await;
    assert_eq!(status, 200);
    assert_eq!(
        out,
        json!({"input": null, "metadata": {}, "executionId": "e-2", "traceId": null, "traceparent": null})
    );
}

#[tokio::test]
async fn execution_id_from_header_else_env_else_400() {
    let s = start(Config::default(), echo()).await;
    let (status, out) = invoke(&s.base, &[], r#"{"input": 1}"#).await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["code"], "INVALID_REQUEST");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Execution-Id"),
        "{out}"
    );
    // An empty header counts as absent.
    let (status, _) = invoke(&s.base, &[("X-Execution-Id", " ")], "{}").await;
    assert_eq!(status, 400);

    let env = start(
        Config {
            execution_id: Some("from-env".into()),
            trace_id: Some("trace-env".into()),
            ..Config::default()
        },
        echo(),
    )
    .await;
    let (status, out) = invoke(&env.base, &[], "{}").await;
    assert_eq!(status, 200);
    assert_eq!(out["executionId"], "from-env");
    assert_eq!(out["traceId"], "trace-env");
    let (_, out) = invoke(
        &env.base,
        &[("X-Execution-Id", "from-header"), ("X-Trace-Id", "t-h")],
        "{}",
    )
    .await;
    assert_eq!(
        (out["executionId"].as_str(), out["traceId"].as_str()),
        (Some("from-header"), Some("t-h"))
    );
}

#[tokio::test]
async fn bad_bodies_are_400_and_too_large_is_413() {
    let s = start(
        Config {
            max_request_bytes: 64,
            ..Config::default()
        },
        echo(),
    )
    .await;
    let id = [("X-Execution-Id", "e")];
    for (body, needle) in [
        ("", "empty"),
        ("{", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (r#"{"metadata": [1]}"#, "metadata"),
    ] {
        let (status, out) = invoke(&s.base, &id, body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(out["error"]["code"], "INVALID_REQUEST");
        assert!(
            out["error"]["message"].as_str().unwrap().contains(needle),
            "{out}"
        );
    }
    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(100));
    let (status, out) = invoke(&s.base, &id, &big).await;
    assert_eq!(status, 413);
    assert_eq!(out["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Exactly at the limit is fine.
    let at = format!(r#"{{"input": "{}"}}"#, "x".repeat(64 - 13));
    assert_eq!(at.len(), 64);
    assert_eq!(invoke(&s.base, &id, &at).await.0, 200);
}

#[tokio::test]
async fn handler_error_is_500_handler_error_and_the_server_keeps_serving() {
    let s = start(Config::default(), echo()).await;
    let id = [("X-Execution-Id", "e")];
    let (status, out) = invoke(&s.base, &id, r#"{"input": {"fail": "on purpose"}}"#).await;
    assert_eq!(status, 500);
    assert_eq!(
        out,
        json!({"error": {"code": "HANDLER_ERROR", "message": "asked to fail: on purpose"}})
    );
    // The control plane's reading of the answer is the same code and message.
    let e = nanofaas_api::invocation::error_from_response(500, out.to_string().as_bytes());
    assert_eq!(e.code, "HANDLER_ERROR");
    assert_eq!(invoke(&s.base, &id, r#"{"input": 2}"#).await.0, 200);

    let panicky = start(
        Config::default(),
        Handler::from_sync(|r: Request| -> Result<Value, String> {
            if r.input == json!("panic") {
                panic!("the sync handler panicked on purpose");
            }
            Ok(r.input)
        }),
    )
    .await;
    let (status, out) = invoke(&panicky.base, &id, r#"{"input": "panic"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(out["error"]["code"], "HANDLER_ERROR");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .contains("panicked on purpose"));
    assert_eq!(
        invoke(&panicky.base, &id, r#"{"input": [3]}"#).await,
        (200, json!([3]))
    );
}

#[tokio::test]
async fn callback_on_success_and_on_error_with_trace_and_token() {
    let sink = CallbackSink::start().await;
    let s = start(quick_callbacks(), echo()).await;
    let url = format!("{}/v1/internal/executions/", sink.url());
    let hdrs = |id: &'static str| {
        vec![
            ("X-Execution-Id", id),
            ("X-Trace-Id", "trace-7"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("X-Callback-Url", url.as_str()),
            ("X-Callback-Token", "tok-7"),
        ]
    };
    let (status, out) = invoke(&s.base, &hdrs("ok-1"), r#"{"input": "hi"}"#).await;
    assert_eq!(status, 200);
    // The callback is posted before the answer: it is there already.
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 1);
    let cb = &reqs[0];
    assert_eq!(cb.method, "POST");
    assert_eq!(cb.path, "/v1/internal/executions/ok-1:complete");
    assert_eq!(cb.header("x-trace-id"), Some("trace-7"));
    assert_eq!(
        cb.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        out["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "the handler sees it"
    );
    assert_eq!(cb.header("x-callback-token"), Some("tok-7"));
    assert_eq!(cb.header("content-type"), Some("application/json"));
    assert_eq!(
        cb.json(),
        json!({"success": true, "output": out, "error": null})
    );

    let (status, _) = invoke(&s.base, &hdrs("bad-1"), r#"{"input": {"fail": "why"}}"#).await;
    assert_eq!(status, 500);
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].path, "/v1/internal/executions/bad-1:complete");
    assert_eq!(reqs[1].header("x-trace-id"), Some("trace-7"));
    assert_eq!(
        reqs[1].json(),
        json!({"success": false, "output": null,
               "error": {"code": "HANDLER_ERROR", "message": "asked to fail: why"}})
    );

    // A malformed body with a known execution id also completes the execution, as a failure.
    let (status, _) = invoke(&s.base, &hdrs("bad-2"), "not json").await;
    assert_eq!(status, 400);
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].json()["success"], false);
    assert_eq!(reqs[2].json()["error"]["code"], "INVALID_REQUEST");
}

#[tokio::test]
async fn headers_beat_env_and_env_is_the_fallback() {
    let env_sink = CallbackSink::start().await;
    let hdr_sink = CallbackSink::start().await;
    let s = start(
        Config {
            callback_url: Some(env_sink.url()),
            callback_token: Some("env-token".into()),
            ..quick_callbacks()
        },
        echo(),
    )
    .await;
    // No callback header: env URL and env token.
    invoke(&s.base, &[("X-Execution-Id", "e1")], "{}").await;
    let r = env_sink.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].path, "/e1:complete");
    assert_eq!(r[0].header("x-callback-token"), Some("env-token"));
    assert_eq!(r[0].header("x-trace-id"), None);
    // Headers win over both.
    let hdr_url = hdr_sink.url();
    invoke(
        &s.base,
        &[
            ("X-Execution-Id", "e2"),
            ("X-Callback-Url", &hdr_url),
            ("X-Callback-Token", "hdr-token"),
        ],
        "{}",
    )
    .await;
    assert_eq!(env_sink.requests().len(), 1);
    let r = hdr_sink.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("x-callback-token"), Some("hdr-token"));
}

#[tokio::test]
async fn no_callback_without_a_url_and_a_bad_header_url_is_ignored() {
    let sink = CallbackSink::start().await;
    let s = start(quick_callbacks(), echo()).await;
    let (status, _) = invoke(&s.base, &[("X-Execution-Id", "e")], "{}").await;
    assert_eq!(status, 200);
    let (status, _) = invoke(
        &s.base,
        &[("X-Execution-Id", "e"), ("X-Callback-Url", "ftp://nowhere")],
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    assert!(sink.wait_for(1, Duration::from_millis(50)).await.is_empty());
}

#[tokio::test]
async fn callback_is_retried_and_a_lost_one_does_not_change_the_answer() {
    let flaky = CallbackSink::start_with(SinkConfig {
        fail_first: 2,
        ..SinkConfig::default()
    })
    .await;
    let s = start(quick_callbacks(), echo()).await;
    let url = flaky.url();
    let (status, _) = invoke(
        &s.base,
        &[("X-Execution-Id", "e"), ("X-Callback-Url", &url)],
        r#"{"input": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    let r = flaky.requests();
    assert_eq!(
        r.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [503, 503, 204]
    );

    let dead = format!("http://127.0.0.1:{}", nanofaas_testkit::free_port());
    let (status, out) = invoke(
        &s.base,
        &[("X-Execution-Id", "e"), ("X-Callback-Url", &dead)],
        r#"{"input": 5}"#,
    )
    .await;
    assert_eq!((status, &out["input"]), (200, &json!(5)));
}

#[tokio::test]
async fn stop_lets_the_in_flight_invocation_finish() {
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let s = start(
        Config::default(),
        Handler::from_async(move |r: Request| {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, String>(r.input)
            }
        }),
    )
    .await;
    let base = s.base.clone();
    let call = tokio::spawn(async move {
        http(
            "POST",
            &format!("{base}/invoke"),
            &[("X-Execution-Id", "slow")],
            r#"{"input": "done"}"#,
        )
        .await
    });
    assert!(nanofaas_testkit::wait_until(WAIT, || started.load(Ordering::SeqCst)).await);
    let base = s.base.clone();
    s.stop().await;
    let r = call.await.unwrap().expect("the in-flight call is answered");
    assert_eq!((r.status, r.json()), (200, json!("done")));
    // Stopped: nothing listens any more.
    assert!(http("GET", &format!("{base}/health"), &[], "")
        .await
        .is_err());
}

#[tokio::test]
async fn stop_gives_up_on_a_stuck_handler_after_the_grace() {
    let s = start(
        Config {
            shutdown_grace: Duration::from_millis(100),
            ..Config::default()
        },
        Handler::from_async(|_r: Request| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, String>(())
        }),
    )
    .await;
    let base = s.base.clone();
    let call = tokio::spawn(async move {
        http(
            "POST",
            &format!("{base}/invoke"),
            &[("X-Execution-Id", "x")],
            "{}",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::Instant::now();
    s.stop().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        call.await.unwrap().is_err(),
        "the stuck call's connection is closed"
    );
}

#[tokio::test]
async fn sync_handlers_run_concurrently_off_the_io_thread() {
    // Each call blocks its thread until both calls are running and the test has seen /health
    // answer meanwhile; run one at a time, or on the I/O thread, they would time out instead.
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<(u32, bool)>,
        cond: std::sync::Condvar,
    }
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let s = start(
        Config::default(),
        Handler::from_sync(move |r: Request| {
            let mut st = g.state.lock().unwrap();
            st.0 += 1;
            g.cond.notify_all();
            let (st, timeout) = g
                .cond
                .wait_timeout_while(st, WAIT, |st| st.0 < 2 || !st.1)
                .unwrap();
            if timeout.timed_out() {
                return Err(format!(
                    "not released: {} running, health seen {}",
                    st.0, st.1
                ));
            }
            Ok(r.input)
        }),
    )
    .await;
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let base = s.base.clone();
            tokio::spawn(async move {
                http(
                    "POST",
                    &format!("{base}/invoke"),
                    &[("X-Execution-Id", "e")],
                    format!(r#"{{"input": {i}}}"#),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    assert!(nanofaas_testkit::wait_until(WAIT, || gate.state.lock().unwrap().0 == 2).await);
    let h = http("GET", &format!("{}/health", s.base), &[], "")
        .await
        .unwrap();
    assert_eq!(h.status, 200);
    gate.state.lock().unwrap().1 = true;
    gate.cond.notify_all();
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap();
        assert_eq!((r.status, r.json()), (200, json!(i)));
    }
}

/// One HTTP/1.1 exchange over a Unix socket (`@name`: abstract), read to the end of the answer.
async fn unix_exchange(socket: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = match socket.strip_prefix('@') {
        Some(n) => format!("\0{n}"),
        None => socket.to_string(),
    };
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_offered_unix_socket_serves_the_same_contract_as_the_port() {
    let socket = format!("@nanofaas-sdk-test-{}", std::process::id());
    let bind = || {
        Server::bind(
            Config {
                port: 0,
                socket: Some(socket.clone()),
                ..Config::default()
            },
            echo(),
        )
    };
    let server = bind().await.expect("bind");
    assert_eq!(server.socket(), Some(socket.as_str()));
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    let health = unix_exchange(
        &socket,
        "GET /health HTTP/1.1\r\nhost: rt\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"input":{"via":"unix"}}"#;
    let answer = unix_exchange(
        &socket,
        &format!(
            "POST /invoke HTTP/1.1\r\nhost: rt\r\nx-execution-id: u1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""via":"unix""#) && answer.contains(r#""executionId":"u1""#),
        "{answer}"
    );
    let _ = tx.send(());
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();

    // A socket that cannot be bound (taken) leaves the port serving, with no socket.
    let holder = tokio::net::UnixListener::bind(format!("\0{}", &socket[1..])).unwrap();
    let server = bind().await.expect("the port still binds");
    assert_eq!(server.socket(), None);
    drop(holder);
}
