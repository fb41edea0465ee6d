//! The real `nanofaas serve` binary killed with `kill -9` while it holds finished, running and
//! queued async executions: after a restart every accepted id answers with its true outcome
//! (finished ones with their result), none is lost, and re-runs show in `attempts` and `resumed`.

use nanofaas_testkit::{http, pid_alive, wait_until, workspace_bin, Proc};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn temp_state(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nanofaas-crash-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn serve(state: &Path) -> (Proc, String) {
    nanofaas_testkit::serve_nanofaas(
        state,
        &[
            "provider.stop_grace_ms=2000".to_string(),
            "admission.retry_backoff_ms=10".to_string(),
        ],
    )
    .await
}

async fn post(base: &str, path: &str, body: Value) -> nanofaas_testkit::client::Response {
    http("POST", &format!("{base}{path}"), &[], body.to_string())
        .await
        .unwrap()
}

async fn get(base: &str, id: &str) -> Value {
    let r = http("GET", &format!("{base}/v1/executions/{id}"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{id}: {}", r.text());
    r.json()
}

/// Polls an execution until `done` holds of it; fails after `within`.
async fn wait_for(base: &str, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = get(base, id).await;
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {id} never reached the expected state: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_final(v: &Value) -> bool {
    matches!(v["status"].as_str(), Some("success" | "error" | "timeout"))
}

async fn enqueue(base: &str, input: Value) -> String {
    let r = post(base, "/v1/functions/f:enqueue", json!({ "input": input })).await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["executionId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn kill_9_loses_no_accepted_execution_and_keeps_finished_results() {
    let state = temp_state("kill9");
    let (mut cp, base) = serve(&state).await;
    let runtime = workspace_bin("nanofaas-test-runtime");
    let r = post(
        &base,
        "/v1/functions",
        json!({"name": "f", "command": runtime.to_string_lossy(), "minInstances": 1,
               "maxInstances": 1, "concurrency": 1, "maxRetries": 3,
               "retryFunctionErrors": true}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Finished before the crash: a success and a failure that used all its attempts.
    let ok = enqueue(&base, json!("finished")).await;
    let failed = enqueue(&base, json!({"fail": "boom"})).await;
    let ok_before = wait_for(&base, &ok, Duration::from_secs(20), is_final).await;
    let failed_before = wait_for(&base, &failed, Duration::from_secs(20), is_final).await;
    assert_eq!(ok_before["status"], "success", "{ok_before}");
    assert_eq!(failed_before["status"], "error", "{failed_before}");
    assert_eq!(failed_before["attempts"], 3, "{failed_before}");
    // Running at the crash, and queued behind it.
    let running = enqueue(&base, json!({"sleepMs": 1500, "tag": "running"})).await;
    let queued: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(enqueue(&base, json!({ "queued": i })).await);
        }
        v
    };
    wait_for(&base, &running, Duration::from_secs(10), |v| {
        v["status"] == "running"
    })
    .await;
    // The end of a finished execution is journaled just after it finished (not awaited): wait
    // until the writer has written both, so that the crash tests what survives it.
    let journal = state.join("journal.jsonl");
    let written = |id: &str| {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"t\":\"f\"") && l.contains(id))
    };
    assert!(
        wait_until(Duration::from_secs(5), || written(&ok) && written(&failed)).await,
        "the finished records were never written"
    );
    let instances = http("GET", &format!("{base}/v1/functions/f/instances"), &[], "")
        .await
        .unwrap()
        .json();
    let old_pids: Vec<u32> = instances
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| [i["pid"].as_u64(), i["runtimePid"].as_u64()])
        .flatten()
        .map(|p| p as u32)
        .collect();
    assert!(!old_pids.is_empty(), "{instances}");

    cp.signal(libc::SIGKILL).unwrap();
    cp.wait_exit_async(Duration::from_secs(5))
        .await
        .expect("killed");

    let (cp2, base2) = serve(&state).await;
    // Finished ones answer with their result, as before the crash, and did not run again.
    let ok_after = get(&base2, &ok).await;
    assert_eq!(ok_after, ok_before, "a finished result survives the crash");
    assert_eq!(ok_after["output"]["echo"], "finished");
    assert_eq!(ok_after["resumed"], false);
    let failed_after = get(&base2, &failed).await;
    assert_eq!(failed_after, failed_before);
    assert_eq!(
        failed_after["error"]["code"], "HANDLER_ERROR",
        "{failed_after}"
    );
    // The one running at the crash ran again: its first run counts.
    let r = wait_for(&base2, &running, Duration::from_secs(20), is_final).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["output"]["echo"]["tag"], "running");
    assert_eq!(r["resumed"], true, "{r}");
    assert_eq!(
        r["attempts"], 2,
        "the run before the crash and the one after: {r}"
    );
    assert_eq!(
        r["output"]["attempt"], 2,
        "the instance was told it is attempt 2: {r}"
    );
    // Queued ones ran once, after the restart.
    for (i, id) in queued.iter().enumerate() {
        let q = wait_for(&base2, id, Duration::from_secs(20), is_final).await;
        assert_eq!(q["status"], "success", "{q}");
        assert_eq!(q["output"]["echo"]["queued"], i, "{q}");
        assert_eq!(q["resumed"], true);
        assert_eq!(q["attempts"], 1, "{q}");
    }
    // Nothing of the first life is left running.
    assert!(
        wait_until(Duration::from_secs(10), || old_pids
            .iter()
            .all(|p| !pid_alive(*p)))
        .await,
        "processes of the killed control plane are alive: {old_pids:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || written(&running)).await,
        "the resumed one's end was never written"
    );
    drop(cp2);
    // A second crash keeps the results of the resumed ones too.
    let (cp3, base3) = serve(&state).await;
    let again = get(&base3, &running).await;
    assert_eq!(again, r, "a resumed result survives the next restart");
    drop(cp3);
    std::fs::remove_dir_all(state).ok();
}
