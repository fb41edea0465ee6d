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
