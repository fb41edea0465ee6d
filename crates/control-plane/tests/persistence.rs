//! What survives a restart: function specs and accepted async invocations.

mod common;

use common::*;
use nanofaas_api::ExecutionStatus;
use nanofaas_control_plane::persist::{FinishedRecord, Journal, JournalSettings};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn functions_survive_a_restart_and_deletes_stick() {
    let dir = temp_state_dir("specs");
    let mut cfg = config();
    cfg.state_dir = dir.to_string_lossy().into_owned();
    let ep = echo_endpoint().await;
    let cp = Cp::start(cfg.clone()).await;
    cp.register_pool("kept", &ep.url(), json!({"timeoutMs": 777}))
        .await;
    cp.register_pool("dropped", &ep.url(), json!({})).await;
    assert_eq!(
        common::http("DELETE", &cp.url("/v1/functions/dropped"), &[], "")
            .await
            .unwrap()
            .status,
        204
    );
    cp.shutdown().await;

    let cp = Cp::start(cfg).await;
    let kept = cp.get("/v1/functions/kept").await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.json()["timeoutMs"], 777);
    assert_eq!(cp.get("/v1/functions/dropped").await.status, 404);
    assert_eq!(
        cp.post("/v1/functions/kept:invoke", json!({"input": 1}))
            .await
            .status,
        200
    );
    cp.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn accepted_async_invocations_run_after_a_restart() {
    let dir = temp_state_dir("journal");
    let mut cfg = config();
    cfg.state_dir = dir.to_string_lossy().into_owned();
    let ep = echo_endpoint().await;
    // A first life registers the function and accepts work it never finishes: its journal says
    // three invocations were accepted and one finished.
    let cp = Cp::start(cfg.clone()).await;
    cp.register_pool("resumable", &ep.url(), json!({})).await;
    cp.shutdown().await;
    {
        let (j, _) = Journal::open(&dir, JournalSettings::new(false)).unwrap();
        for (n, function, body) in [
            (1, "resumable", r#"{"input": "one"}"#),
            (2, "resumable", r#"{"input": "two"}"#),
            (3, "vanished", r#"{"input": 3}"#),
            (4, "resumable", r#"{"input": 4}"#),
        ] {
            let id = format!("11111111-0000-4000-8000-00000000000{n}");
            j.accepted(&id, function, &format!("t{n}"), n, body.as_bytes())
                .await
                .unwrap();
        }
        // The second had started once before the crash.
        j.started("11111111-0000-4000-8000-000000000002", 1);
        j.finished(&FinishedRecord {
            id: "11111111-0000-4000-8000-000000000004".into(),
            function: "resumable".into(),
            trace_id: "t4".into(),
            created_at: 4,
            started_at: Some(5),
            finished_at: nanofaas_control_plane::executions::now_ms(),
            status: ExecutionStatus::Success,
            output: Some(bytes::Bytes::from_static(br#"{"kept":4}"#)),
            error: None,
            attempts: 1,
            cold_start: false,
            init_ms: None,
            resumed: false,
            start: Some("warm".into()),
        });
    }
    let cp = Cp::start(cfg.clone()).await;
    for (id, input) in [("1", "one"), ("2", "two")] {
        let id = format!("11111111-0000-4000-8000-00000000000{id}");
        let ex = wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
        assert_eq!(ex["output"]["echo"], input, "{ex}");
        assert_eq!(ex["mode"], "async");
    }
    let lost = cp
        .get("/v1/executions/11111111-0000-4000-8000-000000000003")
        .await
        .json();
    assert_eq!(lost["status"], "error");
    assert_eq!(lost["error"]["code"], "INTERRUPTED");
    let kept = cp
        .get("/v1/executions/11111111-0000-4000-8000-000000000004")
        .await
        .json();
    assert_eq!(kept["status"], "success", "{kept}");
    assert_eq!(kept["output"], json!({"kept": 4}));
    assert_eq!(kept["resumed"], false);
    let second = cp
        .get("/v1/executions/11111111-0000-4000-8000-000000000002")
        .await
        .json();
    assert_eq!(
        second["attempts"], 2,
        "the run before the restart counts: {second}"
    );
    assert_eq!(second["resumed"], true);
    assert_eq!(ep.count(), 2, "the finished one did not run again");
    // New async work is journaled and, once finished, not replayed.
    let r = cp
        .post("/v1/functions/resumable:enqueue", json!({"input": "new"}))
        .await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    wait_status(&cp, &id, "success", Duration::from_secs(5)).await;
    cp.shutdown().await;
    let (_, rec) = Journal::open(&dir, JournalSettings::new(false)).unwrap();
    assert!(rec.pending.is_empty(), "{:?}", rec.pending);
    assert!(rec.problems.is_empty(), "{:?}", rec.problems);
    assert!(
        rec.finished.iter().any(|f| f.id == id),
        "the new one's result is kept"
    );
    std::fs::remove_dir_all(dir).ok();
}
