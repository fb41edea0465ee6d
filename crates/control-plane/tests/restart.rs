//! The real `nanofaas serve` binary: SIGTERM drains and stops every instance; after `kill -9` of
//! the control plane, a restart removes what was left behind (grandchildren included) and runs the
//! async work that had been accepted.

mod common;

use nanofaas_testkit::{http, pid_alive, wait_until, workspace_bin, Proc};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

struct Serve {
    proc: Proc,
    base: String,
}

async fn serve(state: &std::path::Path) -> Serve {
    let (proc, base) =
        nanofaas_testkit::serve_nanofaas(state, &["provider.stop_grace_ms=2000".to_string()]).await;
    Serve { proc, base }
}

async fn post(base: &str, path: &str, body: Value) -> nanofaas_testkit::client::Response {
    http("POST", &format!("{base}{path}"), &[], body.to_string())
        .await
        .unwrap()
}

async fn instance_pids(base: &str, name: &str) -> Vec<u32> {
    let r = http(
        "GET",
        &format!("{base}/v1/functions/{name}/instances"),
        &[],
        "",
    )
    .await
    .unwrap();
    let mut v = Vec::new();
    for i in r.json().as_array().unwrap() {
        for k in ["pid", "runtimePid"] {
            if let Some(p) = i[k].as_u64() {
                v.push(p as u32);
            }
        }
    }
    v
}

async fn wait_ready(base: &str, name: &str, n: usize) {
    let ok = async {
        for _ in 0..500 {
            let r = http(
                "GET",
                &format!("{base}/v1/functions/{name}/instances"),
                &[],
                "",
            )
            .await
            .unwrap();
            if r.json()
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["state"] == "ready")
                .count()
                >= n
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(ok.await, "{n} instances of {name} never became ready");
}

fn runtime() -> String {
    workspace_bin("nanofaas-test-runtime")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn sigterm_lets_the_running_call_finish_and_stops_every_instance() {
    let state = common::temp_state_dir("sigterm");
    let mut s = serve(&state).await;
    let r = post(
        &s.base,
        "/v1/functions",
        json!({"name": "f", "command": runtime(), "minInstances": 2, "maxInstances": 2}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_ready(&s.base, "f", 2).await;
    let pids = instance_pids(&s.base, "f").await;
    assert_eq!(pids.len(), 4);
    let base = s.base.clone();
    let call = tokio::spawn(async move {
        post(
            &base,
            "/v1/functions/f:invoke",
            json!({"input": {"sleepMs": 800}}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.proc.signal(libc::SIGTERM).unwrap();
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "the running call finished: {}", r.text());
    let status = s
        .proc
        .wait_exit_async(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", s.proc.output());
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|p| !pid_alive(*p)))
        .await,
        "instances left: {pids:?}"
    );
    std::fs::remove_dir_all(state).ok();
}

#[tokio::test]
async fn restart_after_kill_9_leaves_no_orphan_and_resumes_accepted_work() {
    let state = common::temp_state_dir("kill9");
    let mut s = serve(&state).await;
    let r = post(&s.base, "/v1/functions", json!({"name": "f", "command": runtime(), "minInstances": 1, "maxInstances": 1, "concurrency": 1})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_ready(&s.base, "f", 1).await;
    // The runtime starts a grandchild that would outlive everyone if nobody looked for it.
    let r = post(
        &s.base,
        "/v1/functions/f:invoke",
        json!({"input": {"spawnGrandchild": true}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let grandchild = r.json()["output"]["grandchildPid"].as_u64().unwrap() as u32;
    let mut old = instance_pids(&s.base, "f").await;
    old.push(grandchild);
    // Accepted async work that cannot finish before the crash.
    let busy = post(
        &s.base,
        "/v1/functions/f:enqueue",
        json!({"input": {"sleepMs": 3000}}),
    )
    .await;
    let queued = post(
        &s.base,
        "/v1/functions/f:enqueue",
        json!({"input": "after the restart"}),
    )
    .await;
    assert_eq!(queued.status, 202);
    let queued_id = queued.json()["executionId"].as_str().unwrap().to_string();
    let busy_id = busy.json()["executionId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;

    s.proc.signal(libc::SIGKILL).unwrap();
    s.proc
        .wait_exit_async(Duration::from_secs(5))
        .await
        .expect("killed");

    let s2 = serve(&state).await;
    assert!(
        wait_until(Duration::from_secs(10), || old
            .iter()
            .all(|p| !pid_alive(*p)))
        .await,
        "processes of the dead control plane survived the restart: {:?}",
        old.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );
    // The function came back, and the accepted invocations ran (at least once).
    for id in [&queued_id, &busy_id] {
        let mut done = Value::Null;
        for _ in 0..500 {
            done = http("GET", &format!("{}/v1/executions/{id}", s2.base), &[], "")
                .await
                .unwrap()
                .json();
            if done["status"] == "success" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(done["status"], "success", "{done}");
    }
    let new = instance_pids(&s2.base, "f").await;
    assert!(new.iter().all(|p| !old.contains(p)));
    drop(s2);
    std::fs::remove_dir_all(state).ok();
}

#[tokio::test]
async fn orphan_cleanup_finds_escaped_processes_of_a_dead_owner_by_their_environment() {
    use nanofaas_control_plane::provider::Provider;
    use nanofaas_control_plane::provider::{ProcessProvider, ProcessSettings};
    // Proc puts each in a process group of its own: escaped from any instance's group.
    let spawn = |instance: &str, owner: &str| {
        let mut c = Command::new("sleep");
        c.arg("1000")
            .env("NANOFAAS_INSTANCE", instance)
            .env("NANOFAAS_OWNER", owner);
        Proc::spawn(c).unwrap()
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let live_owner = format!("{}:{start}", std::process::id());
    let orphan = spawn("orphan-test-a", "1:1"); // no such owner: it died
    let reused_pid = spawn(
        "orphan-test-b",
        &format!("{}:{}", std::process::id(), start + 1),
    ); // pid reused by someone else
    let owned = spawn("orphan-test-c", &live_owner); // its owner (this test) lives
    let provider = ProcessProvider::new(ProcessSettings {
        watchdog: workspace_bin("nanofaas-watchdog"),
        bind: "127.0.0.1".parse().unwrap(),
        startup_timeout: Duration::from_secs(5),
        stop_grace: Duration::from_secs(1),
        log_lines_per_second: 10,
        unix_socket: true,
        isolation: Default::default(),
        prewarm: 0,
        prewarm_backoff: Duration::from_millis(500),
        prewarm_backoff_max: Duration::from_secs(30),
    })
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || pid_alive(orphan.pid())
            && pid_alive(owned.pid()))
        .await
    );
    let n = provider.cleanup_orphans().await;
    // At least these two: test binaries running beside this one may have just exited, leaving
    // instances that are dying of their parent-death signal and are orphans for a moment too.
    // The PID checks below say which processes were (and were not) stopped.
    assert!(n >= 2, "two instances had dead owners, found {n}");
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(orphan.pid())
            && !pid_alive(reused_pid.pid()))
        .await
    );
    assert!(
        pid_alive(owned.pid()),
        "a live owner's process must be left alone"
    );
}
