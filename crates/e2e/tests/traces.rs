//! A W3C `traceparent` sent with an invocation, through a real control plane and the three
//! language runtimes (the examples of `examples/manifest.yaml`, after its setup steps), with the
//! spans exported over OTLP/HTTP to a local receiver:
//!
//! - the runtime's handler sees a traceparent of the caller's trace whose parent is the
//!   execution's `dispatch` span (the examples answer it for `{"trace": true}`);
//! - the receiver gets the execution's spans in the caller's trace, the root's parent being the
//!   caller's span.

use nanofaas_e2e::{repo_root, run_setup, ControlPlane, TempDir};
use nanofaas_testkit::{http, CallbackSink, SinkConfig};
use serde_json::{json, Value};
use std::time::Duration;

const SETUP_LIMIT: Duration = Duration::from_secs(20 * 60);
const RUNTIMES: [&str; 3] = ["hello-python", "hello-java", "hello-rust"];
const PARENT: &str = "00f067aa0ba902b7";

/// Every span the receiver got, over all its requests.
fn received(sink: &CallbackSink) -> Vec<Value> {
    let mut out = Vec::new();
    for r in sink.requests() {
        let body = r.json();
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
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

/// The root span of execution `id` and its descendants (two levels), as received.
fn spans_of(spans: &[Value], id: &str) -> Vec<Value> {
    let Some(root) = spans
        .iter()
        .find(|s| s["name"] == "execution" && attr(s, "execution.id").as_deref() == Some(id))
    else {
        return vec![];
    };
    let mut out = vec![root.clone()];
    for _ in 0..2 {
        let ids: Vec<Value> = out.iter().map(|s| s["spanId"].clone()).collect();
        for s in spans {
            if ids.contains(&s["parentSpanId"]) && !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_reaches_every_runtime_and_the_exported_spans() {
    let manifest_path = repo_root().join("examples/manifest.yaml");
    let manifest = nanofaas_cli::manifest::load(&manifest_path)
        .unwrap_or_else(|e| panic!("examples/manifest.yaml does not load: {e}"));
    run_setup(&manifest, SETUP_LIMIT);
    let sink = CallbackSink::start_with(SinkConfig {
        status: 200,
        ..Default::default()
    })
    .await;
    let state = TempDir::new("traces");
    let settings = [
        "provider.stop_grace_ms=2000".to_string(),
        format!("telemetry.otlp_endpoint={}", sink.url()),
    ];
    let cp = ControlPlane::start(state.path(), &settings).await;
    let mut seen = Vec::new();
    for (i, name) in RUNTIMES.iter().enumerate() {
        let spec = manifest
            .functions
            .iter()
            .find(|f| f.name == *name)
            .unwrap_or_else(|| panic!("the manifest lost {name}"));
        let r = http(
            "POST",
            &cp.url("/v1/functions"),
            &[],
            serde_json::to_string(spec).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        // A trace of its own per runtime.
        let trace = format!("4bf92f3577b34da6a3ce929d0e0e473{i}");
        let tp = format!("00-{trace}-{PARENT}-01");
        let r = http(
            "POST",
            &cp.url(&format!("/v1/functions/{name}:invoke")),
            &[("traceparent", &tp)],
            json!({"input": {"trace": true}}).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let v = r.json();
        let id = v["executionId"].as_str().unwrap().to_string();
        let got = v["output"]["traceparent"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the runtime saw no traceparent: {v}"))
            .to_string();
        seen.push((name, trace, id, got));
    }
    let all_in = nanofaas_testkit::wait_until(Duration::from_secs(20), || {
        let all = received(&sink);
        seen.iter().all(|(_, _, id, _)| {
            let s = spans_of(&all, id);
            s.iter().any(|s| s["name"] == "dispatch") && s.iter().any(|s| s["name"] == "runtime")
        })
    })
    .await;
    let all = received(&sink);
    assert!(all_in, "the receiver got {} spans: {all:?}", all.len());
    for (name, trace, id, got) in &seen {
        let spans = spans_of(&all, id);
        for s in &spans {
            assert_eq!(s["traceId"], trace.as_str(), "{name}: {s}");
        }
        let root = &spans[0];
        assert_eq!(root["parentSpanId"], PARENT, "{name}: {root}");
        let dispatch = spans.iter().find(|s| s["name"] == "dispatch").unwrap();
        let expect = format!("00-{trace}-{}-01", dispatch["spanId"].as_str().unwrap());
        assert_eq!(
            got, &expect,
            "{name}: the handler's traceparent names the dispatch span"
        );
    }
}
