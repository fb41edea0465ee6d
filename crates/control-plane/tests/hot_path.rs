//! The hot-path client under faults, through the real control plane: a request is sent once per
//! counted attempt, and the connections of stopped instances do not outlive them.

mod common;

use common::*;
use nanofaas_control_plane::Config;
use nanofaas_testkit::workspace_bin;
use serde_json::json;
use std::time::Duration;

/// A request written on a reused keep-alive connection that the instance then closes (a worker
/// killed mid-call) is not sent again inside the attempt: the attempt fails as INSTANCE_LOST and
/// the platform retries it as a new attempt with its own `X-Dispatch-Attempt`.
#[tokio::test]
async fn a_peer_that_reads_and_closes_sees_one_request_per_counted_attempt() {
    let ep = Endpoint::start(|_, n| {
        if n == 2 {
            Reply::Drop
        } else {
            Reply::Json(200, json!({"ok": true}))
        }
    })
    .await;
    let mut cfg = config();
    // One worker loop: the second call reuses the first call's connection.
    cfg.worker_threads = 1;
    let cp = Cp::start(cfg).await;
    cp.register_pool("f", &ep.url(), json!({"maxRetries": 3}))
        .await;
    for _ in 0..2 {
        let r = cp.post("/v1/functions/f:invoke", json!({"input": 1})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = ep.requests();
    let attempts: Vec<(String, String)> = seen
        .iter()
        .map(|s| {
            (
                s.header("x-execution-id").unwrap_or("").to_string(),
                s.header("x-dispatch-attempt").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[0].1, "1");
    assert_eq!(attempts[1].0, attempts[2].0, "the second call was retried");
    assert_eq!(
        (attempts[1].1.as_str(), attempts[2].1.as_str()),
        ("1", "2"),
        "each attempt reached the instance exactly once"
    );
    let ex = cp
        .get(&format!("/v1/executions/{}", attempts[1].0))
        .await
        .json();
    assert_eq!(ex["attempts"], 2, "{ex}");
    cp.shutdown().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 200 instances started, served once and stopped (`maxInvocations: 1`) leave the control
/// plane's descriptors where they were: a stopped instance's idle connections are closed.
#[tokio::test]
async fn descriptors_return_to_baseline_after_200_instances() {
    let mut c: Config = config();
    c.provider.kind = nanofaas_control_plane::config::ProviderKind::Process;
    c.provider.process.watchdog = workspace_bin("nanofaas-watchdog")
        .to_string_lossy()
        .into_owned();
    c.provider.stop_grace_ms = 2000;
    let cp = Cp::start(c).await;
    let runtime = workspace_bin("nanofaas-test-runtime")
        .to_string_lossy()
        .into_owned();
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "once", "command": runtime, "maxInvocations": 1, "maxInstances": 4}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let invoke = |i: usize| {
        let url = cp.url("/v1/functions/once:invoke");
        async move {
            let r = http("POST", &url, &[], json!({"input": i}).to_string())
                .await
                .unwrap();
            assert_eq!(r.status, 200, "call {i}: {}", r.text());
        }
    };
    let no_instances = || async {
        let mut n = usize::MAX;
        for _ in 0..400 {
            n = cp
                .get("/v1/functions/once/instances")
                .await
                .json()
                .as_array()
                .map_or(usize::MAX, Vec::len);
            if n == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{n} instances still listed");
    };
    // A first instance, so that everything the control plane sets up once exists.
    invoke(0).await;
    no_instances().await;
    let baseline = open_fds();
    // Four at a time: 200 instances in all.
    for round in 0..50 {
        let calls: Vec<_> = (0..4)
            .map(|k| tokio::spawn(invoke(1 + round * 4 + k)))
            .collect();
        for call in calls {
            call.await.unwrap();
        }
    }
    no_instances().await;
    let mut now = open_fds();
    for _ in 0..200 {
        if now <= baseline + 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        now = open_fds();
    }
    assert!(
        now <= baseline + 8,
        "{now} descriptors open after 200 instances, {baseline} before"
    );
    cp.shutdown().await;
}
