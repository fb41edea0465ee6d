//! Warm pools on the process provider, with real watchdog and runtime processes on loopback.

mod common;

use common::*;
use nanofaas_control_plane::Config;
use nanofaas_testkit::{pid_alive, workspace_bin};
use serde_json::{json, Value};
use std::time::Duration;

fn pool_config() -> Config {
    let mut c = config();
    c.provider.kind = nanofaas_control_plane::config::ProviderKind::Process;
    c.provider.process.watchdog = workspace_bin("nanofaas-watchdog")
        .to_string_lossy()
        .into_owned();
    c.provider.stop_grace_ms = 2000;
    c.pool.start_backoff_ms = 300;
    c.pool.start_backoff_max_ms = 1000;
    c
}

fn runtime() -> String {
    workspace_bin("nanofaas-test-runtime")
        .to_string_lossy()
        .into_owned()
}

async fn deploy(cp: &Cp, name: &str, extra: Value) {
    let mut spec = json!({"name": name, "command": runtime()});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let r = cp.post("/v1/functions", spec).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn instances(cp: &Cp, name: &str) -> Vec<Value> {
    cp.get(&format!("/v1/functions/{name}/instances"))
        .await
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls the instances of `name` until `cond` holds, for at most 10 s; fails the test with what
/// it saw last if it never does.
async fn instances_until(
    cp: &Cp,
    name: &str,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let inst = instances(cp, name).await;
        if cond(&inst) {
            return inst;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: {what} not within 10 s: {inst:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready_count(inst: &[Value]) -> usize {
    inst.iter().filter(|i| i["state"] == "ready").count()
}

async fn invoke(cp: &Cp, name: &str, input: Value) -> nanofaas_testkit::client::Response {
    cp.post(
        &format!("/v1/functions/{name}:invoke"),
        json!({ "input": input }),
    )
    .await
}

/// Every PID the pool's instances run (watchdogs and runtimes).
async fn pids(cp: &Cp, name: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for i in instances(cp, name).await {
        for k in ["pid", "runtimePid"] {
            if let Some(p) = i[k].as_u64() {
                v.push(p as u32);
            }
        }
    }
    v
}

async fn all_dead(pids: &[u32]) -> bool {
    nanofaas_testkit::wait_until(Duration::from_secs(10), || {
        pids.iter().all(|p| !pid_alive(*p))
    })
    .await
}

#[tokio::test]
async fn first_call_is_cold_then_a_hundred_warm_on_the_same_runtime() {
    let cp = Cp::start(pool_config()).await;
    deploy(&cp, "echo", json!({})).await;
    assert!(
        instances(&cp, "echo").await.is_empty(),
        "minInstances 0: nothing runs before the first call"
    );
    let first = invoke(&cp, "echo", json!(0)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cold-start"), Some("true"));
    let id = first.json()["executionId"].as_str().unwrap().to_string();
    let ex = cp.get(&format!("/v1/executions/{id}")).await.json();
    assert_eq!(ex["coldStart"], true);
    assert!(ex["initDurationMs"].as_u64().is_some());
    let pid = first.json()["output"]["pid"].as_u64().unwrap();
    for i in 1..=100 {
        let r = invoke(&cp, "echo", json!(i)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cold-start"), Some("false"));
        let out = &r.json()["output"];
        assert_eq!(
            out["pid"].as_u64().unwrap(),
            pid,
            "call {i} was served by another runtime"
        );
        assert_eq!(out["count"].as_u64().unwrap(), i + 1);
        assert_eq!(out["echo"], json!(i));
    }
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_function_cold_start_total{function=\"echo\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "nanofaas_function_warm_start_total{function=\"echo\"}"),
        Some(100.0)
    );
    let inst = instances(&cp, "echo").await;
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0]["runtimePid"].as_u64().unwrap(), pid);
    // By default the control plane reaches a process instance over its Unix socket.
    let endpoint = inst[0]["endpoint"].as_str().unwrap_or_default();
    assert!(endpoint.starts_with("unix:@nanofaas/echo-"), "{inst:?}");
    let all = pids(&cp, "echo").await;
    cp.shutdown().await;
    assert!(
        all_dead(&all).await,
        "shutdown left processes behind: {all:?}"
    );
}

#[tokio::test]
async fn parallel_load_grows_the_pool_up_to_max_instances_and_no_further() {
    let cp = Cp::start(pool_config()).await;
    deploy(
        &cp,
        "wide",
        json!({"maxInstances": 3, "concurrency": 8, "queueSize": 200}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = cp.url("/v1/functions/wide:invoke");
        tasks.push(tokio::spawn(async move {
            let body = json!({"input": {"sleepMs": 30, "i": i}}).to_string();
            common::http("POST", &url, &[], body).await.unwrap()
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.json()["output"]["pid"].as_u64().unwrap());
    }
    assert_eq!(
        seen.len(),
        3,
        "the pool grows to maxInstances under load: {seen:?}"
    );
    assert_eq!(instances(&cp, "wide").await.len(), 3);
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "nanofaas_instances_started_total"),
        Some(3.0),
        "never beyond maxInstances"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn min_instances_are_ready_before_the_first_call_and_idle_ones_stop() {
    let cp = Cp::start(pool_config()).await;
    deploy(
        &cp,
        "kept",
        json!({"minInstances": 1, "maxInstances": 3, "idleTimeoutMs": 400}),
    )
    .await;
    instances_until(&cp, "kept", "minInstances ready", |i| {
        i.len() == 1 && ready_count(i) == 1
    })
    .await;
    let r = invoke(&cp, "kept", json!(1)).await;
    assert_eq!(
        r.header("x-cold-start"),
        Some("false"),
        "a pre-started instance serves the first call warm"
    );
    // Grow to 3 with parallel slow calls, then watch the surplus stop after the idle timeout.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = cp.url("/v1/functions/kept:invoke");
        tasks.push(tokio::spawn(async move {
            common::http(
                "POST",
                &url,
                &[],
                json!({"input": {"sleepMs": 300}}).to_string(),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(instances(&cp, "kept").await.len(), 3);
    let before = pids(&cp, "kept").await;
    // The idle timing itself is the pool's unit tests' (paused time); here: real processes end.
    instances_until(
        &cp,
        "kept",
        "idle instances stopped down to minInstances",
        |i| i.len() == 1,
    )
    .await;
    let kept: Vec<u32> = pids(&cp, "kept").await;
    let stopped: Vec<u32> = before.into_iter().filter(|p| !kept.contains(p)).collect();
    assert_eq!(stopped.len(), 4, "two watchdogs and two runtimes stopped");
    assert!(all_dead(&stopped).await);

    // Scale to zero.
    deploy(&cp, "zero", json!({"idleTimeoutMs": 300})).await;
    assert_eq!(invoke(&cp, "zero", json!(1)).await.status, 200);
    let p = pids(&cp, "zero").await;
    assert_eq!(p.len(), 2);
    instances_until(&cp, "zero", "scale to zero", |i| i.is_empty()).await;
    assert!(all_dead(&p).await);
    let r = invoke(&cp, "zero", json!(2)).await;
    assert_eq!(
        r.header("x-cold-start"),
        Some("true"),
        "after scaling to zero the next call is cold"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn max_invocations_recycles_the_instance() {
    let cp = Cp::start(pool_config()).await;
    deploy(&cp, "recycled", json!({"maxInvocations": 3})).await;
    let mut pids_seen = Vec::new();
    for i in 0..7 {
        let r = invoke(&cp, "recycled", json!(i)).await;
        assert_eq!(r.status, 200);
        pids_seen.push(r.json()["output"]["pid"].as_u64().unwrap());
    }
    assert_eq!(pids_seen[0], pids_seen[1]);
    assert_eq!(pids_seen[1], pids_seen[2]);
    assert_ne!(
        pids_seen[2], pids_seen[3],
        "a new runtime after 3 invocations"
    );
    assert_eq!(pids_seen[3], pids_seen[5]);
    assert_ne!(pids_seen[5], pids_seen[6]);
    assert!(all_dead(&[pids_seen[0] as u32, pids_seen[3] as u32]).await);
    cp.shutdown().await;
}

#[tokio::test]
async fn killing_the_runtime_or_the_watchdog_mid_call_then_the_next_call_succeeds() {
    let cp = Cp::start(pool_config()).await;
    deploy(&cp, "fragile", json!({})).await;
    assert_eq!(invoke(&cp, "fragile", json!(0)).await.status, 200);
    for target in ["runtimePid", "pid"] {
        let inst = instances(&cp, "fragile").await;
        let victim = inst[0][target].as_u64().unwrap() as i32;
        let url = cp.url("/v1/functions/fragile:invoke");
        let call = tokio::spawn(async move {
            common::http(
                "POST",
                &url,
                &[],
                json!({"input": {"sleepMs": 1000}}).to_string(),
            )
            .await
            .unwrap()
        });
        // Killed while the call is in flight on it.
        instances_until(&cp, "fragile", "the call in flight", |i| {
            i.len() == 1 && i[0]["inflight"] == 1
        })
        .await;
        unsafe {
            libc::kill(victim, libc::SIGKILL);
        }
        let r = call.await.unwrap();
        // A lost instance is a platform failure: the call is retried on a fresh runtime, or
        // fails cleanly with INSTANCE_LOST; never a hang.
        match r.status {
            200 => assert_ne!(r.json()["output"]["pid"].as_u64().unwrap() as i32, victim),
            502 => assert_eq!(r.json()["error"]["code"], "INSTANCE_LOST"),
            s => panic!("killing {target}: unexpected {s}: {}", r.text()),
        }
        let next = invoke(&cp, "fragile", json!(1)).await;
        assert_eq!(next.status, 200, "after killing {target}: {}", next.text());
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn a_bad_command_gives_startup_error_without_a_restart_storm() {
    let cp = Cp::start(pool_config()).await;
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "broken", "command": "/nonexistent/runtime --flag"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let started = std::time::Instant::now();
    let r = invoke(&cp, "broken", json!(1)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], "STARTUP_ERROR");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/runtime"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // While backing off, calls fail at once without starting anything.
    for _ in 0..20 {
        assert_eq!(invoke(&cp, "broken", json!(1)).await.status, 503);
    }
    let m = cp.metrics().await;
    let failed = metric(&m, "nanofaas_instances_failed_total").unwrap();
    assert!(
        failed <= 2.0,
        "{failed} start attempts for 21 calls: a restart storm"
    );

    // A runtime that crashes at start: STARTUP_ERROR with its output in the message.
    let spec = json!({"name": "crashy", "command": runtime(), "env": {"FIXTURE_FAIL_START": "1"}});
    assert_eq!(cp.post("/v1/functions", spec).await.status, 201);
    let r = invoke(&cp, "crashy", json!(1)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "STARTUP_ERROR");
    cp.shutdown().await;
}

#[tokio::test]
async fn delete_and_put_stop_their_instances() {
    let cp = Cp::start(pool_config()).await;
    deploy(&cp, "del", json!({"minInstances": 2, "maxInstances": 2})).await;
    instances_until(&cp, "del", "two ready instances", |i| ready_count(i) == 2).await;
    let before = pids(&cp, "del").await;
    assert_eq!(before.len(), 4);
    assert_eq!(
        common::http("DELETE", &cp.url("/v1/functions/del"), &[], "")
            .await
            .unwrap()
            .status,
        204
    );
    assert!(all_dead(&before).await, "DELETE left processes: {before:?}");

    deploy(&cp, "put", json!({})).await;
    let r = invoke(&cp, "put", json!(1)).await;
    let old_pid = r.json()["output"]["pid"].as_u64().unwrap() as u32;
    let old = pids(&cp, "put").await;
    let spec = json!({"command": runtime(), "env": {"VERSION": "2"}});
    let put = common::http("PUT", &cp.url("/v1/functions/put"), &[], spec.to_string())
        .await
        .unwrap();
    assert_eq!(put.status, 200);
    let r = invoke(&cp, "put", json!(2)).await;
    assert_eq!(r.status, 200);
    assert_ne!(
        r.json()["output"]["pid"].as_u64().unwrap() as u32,
        old_pid,
        "new spec, new instance"
    );
    assert!(
        all_dead(&old).await,
        "the replaced version's instances stop: {old:?}"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn job_mode_completes_through_the_callback() {
    let cp = Cp::start(pool_config()).await;
    let r = cp
        .post(
            "/v1/functions",
            json!({"name": "job", "command": runtime(), "executionMode": "JOB"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let a = invoke(&cp, "job", json!({"n": 1})).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let b = invoke(&cp, "job", json!({"n": 2})).await;
    assert_eq!(b.status, 200);
    let (pa, pb) = (
        a.json()["output"]["pid"].as_u64().unwrap(),
        b.json()["output"]["pid"].as_u64().unwrap(),
    );
    assert_ne!(pa, pb, "a fresh instance per invocation");
    assert_eq!(a.json()["output"]["echo"], json!({"n": 1}));
    assert_eq!(a.header("x-cold-start"), Some("true"));
    let m = cp.metrics().await;
    assert!(metric(&m, "nanofaas_callbacks_recorded_total").unwrap() >= 2.0);
    // Async JOB and a failing one.
    let r = cp
        .post(
            "/v1/functions/job:enqueue",
            json!({"input": {"fail": "nope"}}),
        )
        .await;
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    let ex = wait_status(&cp, &id, "error", Duration::from_secs(20)).await;
    assert_eq!(ex["error"]["code"], "HANDLER_ERROR", "{ex}");
    assert_eq!(
        ex["attempts"], 1,
        "async function errors run once unless retryFunctionErrors"
    );
    assert!(all_dead(&[pa as u32, pb as u32]).await);
    cp.shutdown().await;
}

#[tokio::test]
async fn with_unix_sockets_off_instances_are_reached_over_tcp() {
    let mut c = pool_config();
    c.provider.process.unix_socket = false;
    let cp = Cp::start(c).await;
    deploy(&cp, "tcp", json!({})).await;
    let first = invoke(&cp, "tcp", json!(1)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let pid = first.json()["output"]["pid"].as_u64().unwrap();
    for i in 0..10 {
        let r = invoke(&cp, "tcp", json!(i)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["output"]["pid"].as_u64().unwrap(), pid);
    }
    let inst = instances(&cp, "tcp").await;
    let endpoint = inst[0]["endpoint"].as_str().unwrap_or_default();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{inst:?}");
    let all = pids(&cp, "tcp").await;
    cp.shutdown().await;
    assert!(all_dead(&all).await, "left behind: {all:?}");
}
