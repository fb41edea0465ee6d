//! Start accounting against the real binaries: every dispatch is exactly one of warm, cold or
//! start failed, and the counters, the `X-Cold-Start` / `X-Start` headers and the execution
//! record agree.

use nanofaas_testkit::{http, workspace_bin};
use serde_json::{json, Value};

async fn metric(base: &str, name: &str, function: &str) -> u64 {
    let text = http("GET", &format!("{base}/metrics"), &[], "")
        .await
        .unwrap()
        .text();
    let key = format!("{name}{{function=\"{function}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

async fn counters(base: &str, f: &str) -> (u64, u64, u64) {
    (
        metric(base, "nanofaas_function_warm_start_total", f).await,
        metric(base, "nanofaas_function_cold_start_total", f).await,
        metric(base, "nanofaas_function_start_failed_total", f).await,
    )
}

async fn invoke(base: &str, f: &str) -> (nanofaas_testkit::client::Response, Value) {
    let r = http(
        "POST",
        &format!("{base}/v1/functions/{f}:invoke"),
        &[],
        r#"{"input":1}"#,
    )
    .await
    .unwrap();
    let id = r.header("x-execution-id").unwrap().to_string();
    let rec = http("GET", &format!("{base}/v1/executions/{id}"), &[], "")
        .await
        .unwrap()
        .json();
    (r, rec)
}

async fn instance_ids(base: &str, f: &str) -> Vec<String> {
    let v = http(
        "GET",
        &format!("{base}/v1/functions/{f}/instances"),
        &[],
        "",
    )
    .await
    .unwrap()
    .json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

async fn register(base: &str, spec: Value) {
    let r = http(
        "POST",
        &format!("{base}/v1/functions"),
        &[],
        spec.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn warm_cold_and_failed_starts_are_counted_once_and_agree() {
    let state = std::env::temp_dir().join(format!("nanofaas-acct-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (cp, base) =
        nanofaas_testkit::serve_nanofaas(&state, &["pool.start_backoff_ms=10".to_string()]).await;
    let runtime = workspace_bin("nanofaas-test-runtime");
    register(
        &base,
        json!({"name": "f", "command": runtime.to_string_lossy(), "maxInstances": 1}),
    )
    .await;
    // The first call waits for the instance: cold, with its start time.
    let (r, rec) = invoke(&base, "f").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-cold-start"), Some("true"));
    assert_eq!(r.header("x-start"), Some("cold"));
    assert_eq!(rec["coldStart"], true, "{rec}");
    assert_eq!(rec["start"], "cold");
    assert!(rec["initDurationMs"].as_u64().is_some(), "{rec}");
    assert_eq!(counters(&base, "f").await, (0, 1, 0));
    // The next one finds it running: warm.
    let (r, rec) = invoke(&base, "f").await;
    assert_eq!(r.header("x-cold-start"), Some("false"));
    assert_eq!(r.header("x-start"), Some("warm"));
    assert_eq!(rec["coldStart"], false);
    assert_eq!(rec["start"], "warm");
    assert_eq!(counters(&base, "f").await, (1, 1, 0));

    // A command that does not exist, and a runtime that crashes as it starts: never warm.
    register(
        &base,
        json!({"name": "missing", "command": "/nonexistent/nanofaas-runtime", "maxRetries": 1}),
    )
    .await;
    register(
        &base,
        json!({"name": "crashing", "command": ["sh", "-c", "echo dying >&2; exit 3"], "maxRetries": 1}),
    )
    .await;
    for f in ["missing", "crashing"] {
        let (r, rec) = invoke(&base, f).await;
        assert!(r.status >= 500, "{f}: {} {}", r.status, r.text());
        assert_eq!(r.header("x-start"), Some("start_failed"), "{f}");
        assert_eq!(r.header("x-cold-start"), None, "{f}: not reported as warm");
        assert_eq!(rec["start"], "start_failed", "{f}: {rec}");
        assert_eq!(rec["coldStart"], false);
        let (warm, cold, failed) = counters(&base, f).await;
        assert_eq!((warm, cold), (0, 0), "{f}");
        assert_eq!(
            failed,
            rec["attempts"].as_u64().unwrap(),
            "{f}: one per attempt"
        );
    }
    drop(cp);
    std::fs::remove_dir_all(state).ok();
}

#[tokio::test]
async fn the_first_call_after_a_runtime_restart_inside_the_instance_is_cold() {
    let state = std::env::temp_dir().join(format!("nanofaas-acct-rs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (cp, base) = nanofaas_testkit::serve_nanofaas(&state, &[]).await;
    let runtime = workspace_bin("nanofaas-test-runtime");
    // Every start of this runtime takes 400 ms.
    register(
        &base,
        json!({"name": "slow", "command": runtime.to_string_lossy(), "maxInstances": 1,
               "timeoutMs": 600, "env": {"FIXTURE_START_DELAY_MS": "400"}}),
    )
    .await;
    let (r, _) = invoke(&base, "slow").await;
    assert_eq!(
        r.header("x-start"),
        Some("cold"),
        "the instance's own start"
    );
    let (r, _) = invoke(&base, "slow").await;
    assert_eq!(r.header("x-start"), Some("warm"));
    let before = instance_ids(&base, "slow").await;
    // A call that times out: the watchdog kills its runtime and starts another.
    let r = http(
        "POST",
        &format!("{base}/v1/functions/slow:invoke"),
        &[],
        r#"{"input":{"sleepMs":5000}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    // The next call waits for that restart, in the same instance: cold, with the start time.
    let (r, rec) = invoke(&base, "slow").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(instance_ids(&base, "slow").await, before, "same instance");
    assert_eq!(r.header("x-cold-start"), Some("true"), "{rec}");
    assert_eq!(r.header("x-start"), Some("cold"));
    assert_eq!(rec["coldStart"], true);
    let init = rec["initDurationMs"].as_u64().expect("a start time");
    assert!(
        (400..5000).contains(&init),
        "the runtime's start took {init} ms"
    );
    assert_eq!(
        counters(&base, "slow").await,
        (2, 2, 0),
        "warm, cold, failed"
    );
    // And the one after it is warm again.
    let (r, _) = invoke(&base, "slow").await;
    assert_eq!(r.header("x-start"), Some("warm"));
    drop(cp);
    std::fs::remove_dir_all(state).ok();
}
