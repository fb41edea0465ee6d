//! No process outlives its control plane: after `kill -9` of the real `nanofaas serve` (process
//! provider), its warm instances, a running JOB, and every child they started (one in a session
//! of its own included) are gone within a few seconds, with no control plane started again.

mod common;

use nanofaas_testkit::{http, pid_alive, wait_until, workspace_bin};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn post(base: &str, path: &str, body: Value) -> nanofaas_testkit::client::Response {
    http("POST", &format!("{base}{path}"), &[], body.to_string())
        .await
        .unwrap()
}

/// Every process whose environment says it belongs to `function` (watchdog, runtime, children).
fn processes_of(function: &str) -> Vec<u32> {
    let want = format!("NANOFAAS_FUNCTION={function}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) && pid_alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// `pid (command line) ppid N` for a failure message.
fn describe(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    format!("{pid} ({}) ppid {ppid}", cmd.trim())
}

#[tokio::test]
async fn after_kill_9_every_instance_and_job_process_ends_without_a_restart() {
    let state = common::temp_state_dir("orphans");
    let (mut proc, base) = nanofaas_testkit::serve_nanofaas(&state, &[]).await;
    let tag = std::process::id();
    let warm = format!("orph-warm-{tag}");
    let job = format!("orph-job-{tag}");
    let runtime = workspace_bin("nanofaas-test-runtime")
        .to_string_lossy()
        .into_owned();
    let r = post(
        &base,
        "/v1/functions",
        json!({"name": warm, "command": runtime, "minInstances": 1, "maxInstances": 1}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A JOB whose command leaves a child in its own session and a child in its group behind.
    let r = post(
        &base,
        "/v1/functions",
        json!({"name": job, "executionMode": "JOB", "runtimeMode": "STDIO", "timeoutMs": 120000,
               "command": ["sh", "-c", "setsid sleep 1000 & sleep 1000 & sleep 1000"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The warm runtime starts a grandchild too.
    let r = post(
        &base,
        &format!("/v1/functions/{warm}:invoke"),
        json!({"input": {"spawnGrandchild": true}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let grandchild = r.json()["output"]["grandchildPid"].as_u64().unwrap() as u32;
    let r = post(&base, &format!("/v1/functions/{job}:enqueue"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    // watchdog + sh + three sleeps.
    assert!(
        wait_until(Duration::from_secs(10), || processes_of(&job).len() >= 5).await,
        "the job's processes never all started: {:?}",
        processes_of(&job)
    );
    let mut before = processes_of(&warm);
    assert!(
        before.len() >= 3,
        "watchdog, runtime, grandchild: {before:?}"
    );
    assert!(before.contains(&grandchild));
    before.extend(processes_of(&job));

    proc.signal(libc::SIGKILL).unwrap();
    proc.wait_exit_async(Duration::from_secs(5))
        .await
        .expect("killed");
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(5), || {
        before.iter().all(|p| !pid_alive(*p))
    })
    .await;
    assert!(
        gone,
        "processes of the killed control plane still alive {:?} later: {:?}",
        killed.elapsed(),
        before
            .iter()
            .filter(|p| pid_alive(**p))
            .map(|p| describe(*p))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "every process of the killed control plane ended {} ms after the kill",
        killed.elapsed().as_millis()
    );
    assert!(processes_of(&warm).is_empty() && processes_of(&job).is_empty());
    std::fs::remove_dir_all(state).ok();
}

/// A spec the provider cannot honour on this machine is refused at registration, naming the
/// field and the limit, before anything starts.
#[tokio::test]
async fn limits_beyond_the_machine_are_refused_at_registration() {
    let state = common::temp_state_dir("limits");
    let (_proc, base) = nanofaas_testkit::serve_nanofaas(&state, &[]).await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (resources, field, says) in [
        (
            json!({"cpu": format!("{}", cpus + 1)}),
            "resources.cpu",
            format!("{cpus} CPU"),
        ),
        (
            json!({"memory": "64Ti"}),
            "resources.memory",
            "MiB of memory".to_string(),
        ),
        (
            json!({"memory": "lots"}),
            "resources.memory",
            "not a memory quantity".to_string(),
        ),
    ] {
        let r = post(
            &base,
            "/v1/functions",
            json!({"name": "lim", "command": "true", "resources": resources}),
        )
        .await;
        assert_eq!(r.status, 400, "{resources}: {}", r.text());
        let text = r.text();
        assert!(
            text.contains(field) && text.contains(&says),
            "{resources}: {text}"
        );
    }
    let r = http("GET", &format!("{base}/v1/functions/lim"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 404, "nothing was registered");
    std::fs::remove_dir_all(state).ok();
}
