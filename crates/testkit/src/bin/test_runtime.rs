//! `nanofaas-test-runtime`: a scriptable runtime speaking the runtime contract, for tests.
//!
//! Listens on `127.0.0.1:$PORT` (default 8080; `0` picks a free port, announced on stderr as
//! `nanofaas-test-runtime listening on 127.0.0.1:<port>`).
//!
//! - `GET /health` → 200 `{"status":"ok"}`.
//! - `POST /invoke` with `{"input": ..., "metadata": ...}`: needs `X-Execution-Id` or env
//!   `EXECUTION_ID`, else 400. Answers 200 `{"echo": <input>, "pid", "executionId", "traceId",
//!   "traceparent" (header, else env `TRACEPARENT`), "attempt", "count"}` where `count` is the number of invocations this process has received.
//!   When the input is an object it may script the call, in this order: `sleepMs` (sleep first),
//!   `crash: true` (exit(1) without answering), `crashOnAttempt: N` (crash only when
//!   `X-Dispatch-Attempt` is N), `fail: "msg"` (500 with a `HANDLER_ERROR`), `spawnGrandchild:
//!   true` (start `sleep 1000` and report its pid as `grandchildPid`), `allocateMb: N` (touch N
//!   MiB of memory, kept until the process ends, then answer).
//! - When a callback URL is known (`X-Callback-Url`, else env `CALLBACK_URL`) it posts
//!   `{success, output, error}` to `{url}/{executionId}:complete` with `X-Trace-Id`, `traceparent` and
//!   `X-Callback-Token` (header, else env `CALLBACK_TOKEN`) *before* answering, as the seed's
//!   runtimes do.
//! - Env `FIXTURE_FAIL_START=1`: print an error and exit(3) at once. `FIXTURE_START_DELAY_MS`:
//!   wait that long before listening. `FIXTURE_EXIT_AFTER_MS`: exit(0) on its own after that long.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

static COUNT: AtomicU64 = AtomicU64::new(0);
static ENV: OnceLock<Env> = OnceLock::new();

struct Env {
    execution_id: Option<String>,
    callback_url: Option<String>,
    callback_token: Option<String>,
    traceparent: Option<String>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_ms(name: &str) -> Option<Duration> {
    let v = env_nonempty(name)?;
    match v.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            eprintln!("nanofaas-test-runtime: {name}={v:?} is not a number of milliseconds");
            std::process::exit(2);
        }
    }
}

fn main() {
    if env_nonempty("FIXTURE_FAIL_START").as_deref() == Some("1") {
        eprintln!("nanofaas-test-runtime: failing at start because FIXTURE_FAIL_START=1");
        std::process::exit(3);
    }
    let port: u16 = match env_nonempty("PORT").map(|p| p.parse()) {
        None => 8080,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            eprintln!("nanofaas-test-runtime: PORT is not a port number");
            std::process::exit(2);
        }
    };
    let start_delay = env_ms("FIXTURE_START_DELAY_MS");
    let exit_after = env_ms("FIXTURE_EXIT_AFTER_MS");
    let _ = ENV.set(Env {
        execution_id: env_nonempty("EXECUTION_ID"),
        callback_url: env_nonempty("CALLBACK_URL"),
        callback_token: env_nonempty("CALLBACK_TOKEN"),
        traceparent: env_nonempty("TRACEPARENT"),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        if let Some(d) = start_delay {
            tokio::time::sleep(d).await;
        }
        if let Some(d) = exit_after {
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                eprintln!("nanofaas-test-runtime: exiting after FIXTURE_EXIT_AFTER_MS");
                std::process::exit(0);
            });
        }
        let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("nanofaas-test-runtime: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(4);
            }
        };
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        eprintln!("nanofaas-test-runtime listening on 127.0.0.1:{bound}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(route))
                    .await;
            });
        }
    });
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Started with `--prewarmable` and `NANOFAAS_PREWARM=1`: a generic runtime waiting for
/// `POST /_nanofaas/specialize` (the prewarm protocol); `/invoke` is 503 until then.
static SPECIALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn prewarmable() -> bool {
    std::env::args().any(|a| a == "--prewarmable")
}

fn waiting_generic() -> bool {
    prewarmable()
        && env_nonempty("NANOFAAS_PREWARM").as_deref() == Some("1")
        && !SPECIALIZED.load(std::sync::atomic::Ordering::SeqCst)
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => Ok(reply(StatusCode::OK, json!({"status": "ok"}))),
        (&Method::POST, "/_nanofaas/specialize") if prewarmable() => {
            if SPECIALIZED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(reply(
                    StatusCode::CONFLICT,
                    json!({"error": {"code": "INVALID_REQUEST", "message": "already specialized"}}),
                ));
            }
            Ok(reply(
                StatusCode::OK,
                json!({"specialized": true, "loadMs": 0}),
            ))
        }
        (&Method::POST, "/invoke") if waiting_generic() => Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"code": "STARTUP_ERROR", "message": "not specialized"}}),
        )),
        (&Method::POST, "/invoke") => invoke(req).await,
        _ => Ok(reply(StatusCode::NOT_FOUND, json!({"error": "not found"}))),
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

async fn invoke(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let env = ENV.get().expect("env set in main");
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let execution_id = header(&req, "x-execution-id").or_else(|| env.execution_id.clone());
    let trace_id = header(&req, "x-trace-id");
    let traceparent = header(&req, "traceparent").or_else(|| env.traceparent.clone());
    let attempt: Option<u64> = header(&req, "x-dispatch-attempt").and_then(|a| a.parse().ok());
    let callback_url = header(&req, "x-callback-url").or_else(|| env.callback_url.clone());
    let callback_token = header(&req, "x-callback-token").or_else(|| env.callback_token.clone());
    let body = req.into_body().collect().await?.to_bytes();
    let Some(execution_id) = execution_id else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "no execution id: send X-Execution-Id or set EXECUTION_ID"}),
        ));
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("the body is not JSON: {e}")}),
            ))
        }
    };
    let input = request.get("input").cloned().unwrap_or(Value::Null);

    let mut failure: Option<String> = None;
    let mut grandchild: Option<u32> = None;
    if let Value::Object(script) = &input {
        if let Some(ms) = script.get("sleepMs").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if script.get("crash").and_then(Value::as_bool) == Some(true) {
            eprintln!("nanofaas-test-runtime: crashing as asked");
            std::process::exit(1);
        }
        if let Some(n) = script.get("crashOnAttempt").and_then(Value::as_u64) {
            if attempt == Some(n) {
                eprintln!("nanofaas-test-runtime: crashing on attempt {n} as asked");
                std::process::exit(1);
            }
        }
        if let Some(msg) = script.get("fail").and_then(Value::as_str) {
            failure = Some(msg.to_string());
        }
        if let Some(mb) = script.get("allocateMb").and_then(Value::as_u64) {
            // Touched page by page, so that it is really resident; leaked on purpose.
            let mut v = vec![0u8; (mb.min(1 << 16) as usize) << 20];
            for i in (0..v.len()).step_by(4096) {
                v[i] = 1;
            }
            std::hint::black_box(&v);
            std::mem::forget(v);
        }
        if failure.is_none() && script.get("spawnGrandchild").and_then(Value::as_bool) == Some(true)
        {
            match std::process::Command::new("sleep").arg("1000").spawn() {
                Ok(child) => grandchild = Some(child.id()),
                Err(e) => failure = Some(format!("cannot spawn a grandchild: {e}")),
            }
        }
    }

    let (status, answer, callback) = match failure {
        Some(msg) => {
            let error = json!({"code": "HANDLER_ERROR", "message": msg});
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": error }),
                json!({"success": false, "output": null, "error": error}),
            )
        }
        None => {
            let mut out = json!({
                "echo": input,
                "pid": std::process::id(),
                "executionId": execution_id,
                "traceId": trace_id,
                "traceparent": traceparent,
                "attempt": attempt,
                "count": count,
            });
            if let Some(gc) = grandchild {
                out["grandchildPid"] = json!(gc);
            }
            let cb = json!({"success": true, "output": out, "error": null});
            (StatusCode::OK, out, cb)
        }
    };
    if let Some(url) = callback_url {
        send_callback(
            &url,
            &execution_id,
            trace_id.as_deref(),
            traceparent.as_deref(),
            callback_token.as_deref(),
            callback,
        )
        .await;
    }
    Ok(reply(status, answer))
}

async fn send_callback(
    base: &str,
    execution_id: &str,
    trace_id: Option<&str>,
    traceparent: Option<&str>,
    token: Option<&str>,
    body: Value,
) {
    let target = format!("{}/{}:complete", base.trim_end_matches('/'), execution_id);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(&target)
        .header(CONTENT_TYPE, "application/json");
    if let Some(t) = trace_id {
        req = req.header("x-trace-id", t);
    }
    if let Some(t) = traceparent {
        req = req.header("traceparent", t);
    }
    if let Some(t) = token {
        req = req.header("x-callback-token", t);
    }
    let req = match req.body(Full::new(Bytes::from(body.to_string()))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nanofaas-test-runtime: bad callback URL {target:?}: {e}");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => eprintln!(
            "nanofaas-test-runtime: callback to {target} answered {}",
            resp.status()
        ),
        Ok(Err(e)) => eprintln!("nanofaas-test-runtime: callback to {target} failed: {e}"),
        Err(_) => eprintln!("nanofaas-test-runtime: callback to {target} timed out"),
    }
}
