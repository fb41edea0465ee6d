//! Traces: W3C `traceparent` on invocations, its propagation to the instance, the spans of
//! `GET /v1/executions/{id}/trace`, and their export over OTLP/HTTP to a local receiver.

mod common;

use common::*;
use serde_json::{json, Value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{PARENT}-01")
}

async fn echo() -> Endpoint {
    Endpoint::start(|s, _| Reply::Json(200, json!({"echo": s.body["input"]}))).await
}

fn span<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {trace}"))
}

#[tokio::test]
async fn a_traceparent_names_the_trace_and_reaches_the_endpoint() {
    let cp = Cp::start(config()).await;
    let ep = echo().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;

    let tp = traceparent();
    let r = cp
        .post_h(
            "/v1/functions/echo:invoke",
            &[
                ("traceparent", &tp),
                ("x-trace-id", "ignored-when-traceparent"),
            ],
            json!({"input": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-trace-id"), Some(TRACE));
    let id = r.json()["executionId"].as_str().unwrap().to_string();

    let t = cp.get(&format!("/v1/executions/{id}/trace")).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(t["traceId"], TRACE);
    let root = span(&t, "execution");
    assert_eq!(root["parentSpanId"], PARENT);
    assert_eq!(root["attributes"]["execution.id"], id.as_str());
    assert_eq!(root["attributes"]["function"], "echo");
    assert_eq!(root["attributes"]["execution.status"], "success");
    let dispatch = span(&t, "dispatch");
    assert_eq!(dispatch["parentSpanId"], root["spanId"]);
    assert_eq!(dispatch["attributes"]["attempt"], "1");
    for name in ["admission", "queue"] {
        assert_eq!(span(&t, name)["parentSpanId"], root["spanId"], "{name}");
    }
    for s in t["spans"].as_array().unwrap() {
        let (a, b) = (
            s["startUnixNano"].as_u64().unwrap(),
            s["endUnixNano"].as_u64().unwrap(),
        );
        assert!(a > 0 && a <= b, "{s}");
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16, "{s}");
        assert!(s["attributes"].get("nanofaas.open").is_none(), "{s}");
    }
    let (rs, re) = (
        root["startUnixNano"].as_u64().unwrap(),
        root["endUnixNano"].as_u64().unwrap(),
    );
    let ds = dispatch["startUnixNano"].as_u64().unwrap();
    assert!(rs <= ds && dispatch["endUnixNano"].as_u64().unwrap() <= re);

    // The endpoint was told the trace, with the dispatch span as its parent.
    let seen = ep.requests().pop().unwrap();
    let expect = format!("00-{TRACE}-{}-01", dispatch["spanId"].as_str().unwrap());
    assert_eq!(seen.header("traceparent"), Some(expect.as_str()));
    assert_eq!(seen.header("x-trace-id"), Some(TRACE));

    let missing = cp.get("/v1/executions/nope/trace").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    cp.shutdown().await;
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let cp = Cp::start(config()).await;
    let ep = echo().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    for bad in [
        "garbage",
        &traceparent().to_uppercase(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        &format!("{}-", traceparent()),
    ] {
        for route in ["invoke", "enqueue"] {
            let r = cp
                .post_h(
                    &format!("/v1/functions/echo:{route}"),
                    &[("traceparent", bad)],
                    json!({"input": 1}),
                )
                .await;
            assert!(r.status == 200 || r.status == 202, "{bad}: {}", r.text());
            let trace = r.header("x-trace-id").unwrap().to_string();
            assert_eq!(trace.len(), 32, "{trace}");
            assert_ne!(trace, TRACE);
            let id = r.json()["executionId"].as_str().unwrap().to_string();
            let t = cp.get(&format!("/v1/executions/{id}/trace")).await.json();
            assert_eq!(t["traceId"], trace.as_str());
            assert_eq!(span(&t, "execution")["parentSpanId"], Value::Null);
        }
    }
    // X-Trace-Id alone keeps working, and is the trace id when it is 32 hex digits.
    let r = cp
        .post_h(
            "/v1/functions/echo:invoke",
            &[("x-trace-id", TRACE)],
            json!({}),
        )
        .await;
    assert_eq!(r.header("x-trace-id"), Some(TRACE));
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let t = cp.get(&format!("/v1/executions/{id}/trace")).await.json();
    assert_eq!(t["traceId"], TRACE);
    cp.shutdown().await;
}

fn pool_config() -> nanofaas_control_plane::Config {
    let mut c = config();
    c.provider.kind = nanofaas_control_plane::config::ProviderKind::Process;
    c.provider.process.watchdog = nanofaas_testkit::workspace_bin("nanofaas-watchdog")
        .to_string_lossy()
        .into_owned();
    c.provider.stop_grace_ms = 2000;
    c
}

/// Every span the receiver got, over all its requests.
fn received(sink: &nanofaas_testkit::CallbackSink) -> Vec<Value> {
    let mut out = Vec::new();
    for r in sink.requests() {
        let body = r.json();
        for rs in body["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
        .map(str::to_string)
}

/// The spans of execution `id` the receiver got.
fn spans_of(spans: &[Value], id: &str) -> Vec<Value> {
    let Some(root) = spans
        .iter()
        .find(|s| s["name"] == "execution" && attr(s, "execution.id").as_deref() == Some(id))
    else {
        return vec![];
    };
    let mut ids = vec![root["spanId"].clone()];
    let mut out = vec![root.clone()];
    // Children, then grandchildren (dispatch → instance.start, runtime).
    for _ in 0..2 {
        for s in spans {
            if ids.contains(&s["parentSpanId"]) && !out.contains(s) {
                out.push(s.clone());
            }
        }
        ids = out.iter().map(|s| s["spanId"].clone()).collect();
    }
    out
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// The local receiver: a real HTTP server on loopback standing for the collector. A DEPLOYMENT
/// function on the process provider (control plane → watchdog → test runtime) is invoked with
/// a traceparent, sync and async; the receiver must get their spans with that trace id and
/// parent, and the runtime must have seen the traceparent naming the dispatch span.
#[tokio::test]
async fn spans_reach_a_local_otlp_receiver_with_the_callers_trace() {
    let sink = nanofaas_testkit::CallbackSink::start_with(nanofaas_testkit::SinkConfig {
        status: 200,
        ..Default::default()
    })
    .await;
    let mut cfg = pool_config();
    cfg.telemetry.otlp_endpoint = sink.url();
    let cp = Cp::start(cfg).await;
    let rt = nanofaas_testkit::workspace_bin("nanofaas-test-runtime");
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "echo", "command": rt.to_string_lossy()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Not sampled: kept in the API, not exported.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    let r = cp
        .post_h(
            "/v1/functions/echo:invoke",
            &[("traceparent", &unsampled)],
            json!({"input": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let unsampled_id = r.json()["executionId"].as_str().unwrap().to_string();

    let tp = traceparent();
    let sync = cp
        .post_h(
            "/v1/functions/echo:invoke",
            &[("traceparent", &tp)],
            json!({"input": 1}),
        )
        .await;
    assert_eq!(sync.status, 200, "{}", sync.text());
    let sync = sync.json();
    let sync_id = sync["executionId"].as_str().unwrap().to_string();
    let sync_seen = sync["output"]["traceparent"].as_str().unwrap().to_string();

    let accepted = cp
        .post_h(
            "/v1/functions/echo:enqueue",
            &[("traceparent", &tp)],
            json!({"input": 2}),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let async_id = accepted.json()["executionId"].as_str().unwrap().to_string();

    let done = nanofaas_testkit::wait_until(std::time::Duration::from_secs(15), || {
        let all = received(&sink);
        !spans_of(&all, &sync_id).is_empty() && !spans_of(&all, &async_id).is_empty()
    })
    .await;
    assert!(done, "the receiver got {:?}", sink.requests().len());
    let all = received(&sink);
    let exec = cp.get(&format!("/v1/executions/{async_id}")).await.json();
    assert_eq!(exec["status"], "success", "{exec}");
    let async_seen = exec["output"]["traceparent"].as_str().unwrap().to_string();

    for r in sink.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    for (id, seen) in [(&sync_id, &sync_seen), (&async_id, &async_seen)] {
        let spans = spans_of(&all, id);
        for s in &spans {
            assert_eq!(s["traceId"], TRACE, "{s}");
            let (a, b) = (
                s["startTimeUnixNano"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                s["endTimeUnixNano"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            assert!(0 < a && a <= b, "{s}");
        }
        let root = named(&spans, "execution")[0];
        assert_eq!(root["parentSpanId"], PARENT, "{root}");
        assert_eq!(attr(root, "function").as_deref(), Some("echo"));
        for name in ["admission", "queue", "dispatch", "runtime"] {
            assert_eq!(named(&spans, name).len(), 1, "{name} of {id}: {spans:?}");
        }
        // The runtime saw the traceparent whose parent is the dispatch span.
        let dispatch = named(&spans, "dispatch")[0];
        let expect = format!("00-{TRACE}-{}-01", dispatch["spanId"].as_str().unwrap());
        assert_eq!(seen, &expect, "{id}");
        let runtime = named(&spans, "runtime")[0];
        assert_eq!(runtime["parentSpanId"], dispatch["spanId"]);
    }
    // The unsampled call started the instance: its trace (shown by the API though not
    // exported) has the cold start.
    assert!(
        spans_of(&all, &unsampled_id).is_empty(),
        "unsampled traces are not exported"
    );
    let t = cp
        .get(&format!("/v1/executions/{unsampled_id}/trace"))
        .await
        .json();
    let cold = span(&t, "instance.start");
    assert_eq!(cold["parentSpanId"], span(&t, "dispatch")["spanId"]);
    assert_eq!(span(&t, "dispatch")["attributes"]["start"], "cold");

    let m = cp.metrics().await;
    assert!(m.contains("nanofaas_traces_exported_total 2"), "{m}");
    assert!(
        m.contains("nanofaas_function_runtime_seconds_count{function=\"echo\"} 3"),
        "{m}"
    );
    cp.shutdown().await;
}

/// A collector that is down costs nothing but the dropped traces: invocations succeed, and the
/// drops are counted.
#[tokio::test]
async fn a_collector_that_is_down_drops_and_counts() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config();
    cfg.telemetry.otlp_endpoint = format!("http://{closed}");
    let cp = Cp::start(cfg).await;
    let ep = echo().await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    for i in 0..5 {
        let r = cp
            .post("/v1/functions/echo:invoke", json!({"input": i}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The export task posts in the background: poll /metrics until the five drops show, for
    // at most 10 s.
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        last = cp.metrics().await;
        if last.contains("nanofaas_traces_dropped_total 5") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(last.contains("nanofaas_traces_dropped_total 5"), "{last}");
    assert!(last.contains("nanofaas_traces_exported_total 0"), "{last}");
    cp.shutdown().await;
}

/// A JOB instance gets the attempt's traceparent (in its environment, passed on by its
/// one-shot watchdog to the runtime as a header).
#[tokio::test]
async fn a_job_instance_gets_the_traceparent() {
    let cp = Cp::start(pool_config()).await;
    let rt = nanofaas_testkit::workspace_bin("nanofaas-test-runtime");
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "job", "command": rt.to_string_lossy(), "executionMode": "JOB"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tp = traceparent();
    let r = cp
        .post_h(
            "/v1/functions/job:invoke",
            &[("traceparent", &tp)],
            json!({"input": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let id = body["executionId"].as_str().unwrap();
    let t = cp.get(&format!("/v1/executions/{id}/trace")).await.json();
    let dispatch = span(&t, "dispatch");
    let expect = format!("00-{TRACE}-{}-01", dispatch["spanId"].as_str().unwrap());
    assert_eq!(body["output"]["traceparent"], expect.as_str());
    assert_eq!(span(&t, "execution")["parentSpanId"], PARENT);
    cp.shutdown().await;
}
