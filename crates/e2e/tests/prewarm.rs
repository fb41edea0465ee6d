//! Prewarmed instances through a real control plane (`nanofaas serve`, process provider,
//! `provider.process.prewarm=1`) and the real Python runtime: a cold start takes a generic
//! instance of the function's kind and specializes it; the function's environment, working
//! directory, user, cgroup and memory limit are in force at the top of its handler module;
//! two functions of one kind never share an instance; the pool is refilled after each take;
//! a handler that fails to import is `STARTUP_ERROR` with the import error and the next
//! prewarmed instance still works; at shutdown no process of any instance is left.
//!
//! Needs the Python venv `.nanofaas/python` (made here by `scripts/python-env.sh`).

use nanofaas_e2e::{repo_root, ControlPlane, TempDir};
use nanofaas_testkit::{http, pid_alive, wait_until, Proc, Response};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn python_env() -> String {
    let root = repo_root();
    let venv = root.join(".nanofaas/python");
    let mut cmd = Command::new(root.join("scripts/python-env.sh"));
    cmd.arg(&venv);
    let mut p = Proc::spawn(cmd).expect("run scripts/python-env.sh");
    match p.wait_exit(Duration::from_secs(15 * 60)) {
        Some(st) if st.success() => {}
        other => panic!(
            "scripts/python-env.sh ended with {other:?}:\n{}",
            p.output()
        ),
    }
    venv.join("bin/python").display().to_string()
}

fn handlers() -> String {
    repo_root()
        .join("runtimes/python/tests/handlers")
        .display()
        .to_string()
}

async fn register(cp: &ControlPlane, spec: Value) -> Response {
    http("POST", &cp.url("/v1/functions"), &[], spec.to_string())
        .await
        .expect("register")
}

async fn invoke(cp: &ControlPlane, name: &str) -> Response {
    http(
        "POST",
        &cp.url(&format!("/v1/functions/{name}:invoke")),
        &[],
        json!({"input": null}).to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: invoke: {e}"))
}

async fn prewarmed(cp: &ControlPlane) -> Value {
    http("GET", &cp.url("/v1/prewarmed"), &[], "")
        .await
        .unwrap()
        .json()
}

/// The ids of the ready prewarmed instances of `command` once there are `n`, within 60 s.
async fn ready(cp: &ControlPlane, command: &str, n: usize) -> Vec<String> {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = prewarmed(cp).await;
        if let Some(k) = last
            .as_array()
            .and_then(|a| a.iter().find(|k| k["command"] == command))
        {
            let ids: Vec<String> = k["ready"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            if ids.len() >= n {
                return ids;
            }
        }
        // Polled: the pool has no change feed; bounded by the loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {n} prewarmed instance(s) of {command:?} within 60 s: {last}");
}

/// PIDs of the processes whose environment says they belong to instance `id`.
fn processes_of(id: &str) -> Vec<u32> {
    let want = format!("NANOFAAS_INSTANCE={id}");
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
                v.push(pid);
            }
        }
    }
    v
}

fn spec(name: &str, python: &str, module: &str, mark: &str, memory: Option<&str>) -> Value {
    let mut s = json!({
        "name": name,
        "command": [python, "-m", "nanofaas_runtime"],
        "workingDir": handlers(),
        "env": {"HANDLER_MODULE": module, "PREWARM_MARK": mark},
        "timeoutMs": 10000,
    });
    if let Some(m) = memory {
        s["resources"] = json!({"memory": m});
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarmed_instances_are_specialized_for_one_function_each() {
    let python = python_env();
    let command = format!("{python} -m nanofaas_runtime");
    let state = TempDir::new("prewarm");
    let cp = ControlPlane::start(
        state.path(),
        &[
            "provider.process.prewarm=1".into(),
            "provider.stop_grace_ms=2000".into(),
        ],
    )
    .await;

    // A memory limit where the host can enforce one (root with cgroups); said loudly if not.
    let mut memory = Some("300Mi");
    let r = register(&cp, spec("pw-a", &python, "prewarm_state", "a", memory)).await;
    let r = if r.status == 400 && r.text().contains("resources.memory") {
        eprintln!(
            "NOTE: this host cannot enforce resources.memory; the limit part is not checked: {}",
            r.text()
        );
        memory = None;
        register(&cp, spec("pw-a", &python, "prewarm_state", "a", None)).await
    } else {
        r
    };
    assert_eq!(r.status, 201, "{}", r.text());
    let first = ready(&cp, &command, 1).await;

    // The cold start takes the prewarmed instance.
    let r = invoke(&cp, "pw-a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"), "{}", r.text());
    assert_eq!(r.header("x-cold-start"), Some("true"));
    let body = r.json();
    let a = body["output"].clone();
    let at = &a["atImport"];
    assert_eq!(at["env"]["PREWARM_MARK"], "a", "its env at import: {a}");
    assert_eq!(at["cwd"], handlers().as_str(), "its folder at import: {a}");
    assert_eq!(
        at["uid"], a["uid"],
        "the same user at import and later: {a}"
    );
    assert_eq!(
        at["cgroup"], a["cgroup"],
        "the same cgroup at import and later: {a}"
    );
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(
            a["uid"], 0,
            "as root, instances run as users of their own: {a}"
        );
    }
    if memory.is_some() {
        assert!(
            at["cgroup"].as_str().unwrap().contains(&first[0]),
            "the instance's own cgroup at import: {a}"
        );
        assert_eq!(
            at["memoryLimit"],
            (300u64 << 20).to_string(),
            "the function's memory limit was in force at import: {a}"
        );
    }
    let id = body["executionId"].as_str().unwrap();
    let rec = http("GET", &cp.url(&format!("/v1/executions/{id}")), &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(rec["start"], "prewarmed", "{rec}");
    let list = http("GET", &cp.url("/v1/functions/pw-a/instances"), &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(list[0]["id"], first[0].as_str(), "{list}");

    // Refilled in the background: a new generic instance, not the one taken.
    let second = ready(&cp, &command, 1).await;
    assert_ne!(second, first);

    // Another function of the same kind gets its own instance, with its own environment.
    let r = register(&cp, spec("pw-b", &python, "prewarm_state", "b", None)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = invoke(&cp, "pw-b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"));
    let b = r.json()["output"].clone();
    assert_eq!(b["atImport"]["env"]["PREWARM_MARK"], "b", "{b}");
    assert_eq!(b["mark"], "b");
    assert_ne!(
        b["atImport"]["pid"], a["atImport"]["pid"],
        "never shared: {a} {b}"
    );
    assert_eq!(b["counter"], 1, "{b}");
    // And the first one is still its function's alone, warm.
    let r = invoke(&cp, "pw-a").await;
    assert_eq!(r.header("x-start"), Some("warm"));
    let again = r.json()["output"].clone();
    assert_eq!(
        (
            again["mark"].as_str(),
            again["pid"].clone(),
            again["counter"].as_u64()
        ),
        (Some("a"), a["pid"].clone(), Some(2)),
        "{again}"
    );

    // A handler that cannot be imported: STARTUP_ERROR with the import error...
    ready(&cp, &command, 1).await;
    let r = register(&cp, spec("pw-bad", &python, "raises_on_import", "x", None)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = invoke(&cp, "pw-bad").await;
    let bad = r.json();
    assert_eq!(bad["error"]["code"], "STARTUP_ERROR", "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database not reachable"),
        "{bad}"
    );
    // ...and the next prewarmed instance of the kind is not poisoned by it.
    ready(&cp, &command, 1).await;
    let r = register(&cp, spec("pw-c", &python, "prewarm_state", "c", None)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = invoke(&cp, "pw-c").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-start"), Some("prewarmed"));
    assert_eq!(r.json()["output"]["mark"], "c");

    // Shutdown: every process of every instance, the waiting generic ones included, goes.
    let waiting = ready(&cp, &command, 1).await;
    let mut pids: Vec<u32> = waiting.iter().flat_map(|i| processes_of(i)).collect();
    assert!(!pids.is_empty(), "the waiting instance has processes");
    for f in ["pw-a", "pw-b", "pw-c"] {
        let list = http(
            "GET",
            &cp.url(&format!("/v1/functions/{f}/instances")),
            &[],
            "",
        )
        .await
        .unwrap()
        .json();
        for i in list.as_array().unwrap() {
            pids.extend(processes_of(i["id"].as_str().unwrap()));
        }
    }
    let mut cp = cp;
    cp.proc.signal(libc::SIGTERM).unwrap();
    assert!(
        cp.proc.wait_exit(Duration::from_secs(30)).is_some(),
        "the control plane stops"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        pids.iter().all(|p| !pid_alive(*p))
    })
    .await;
    assert!(
        gone,
        "processes left after shutdown: {:?}",
        pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_last_function_of_a_kind_stops_its_prewarmed_instances() {
    let python = python_env();
    let command = format!("{python} -m nanofaas_runtime");
    let state = TempDir::new("prewarm-del");
    let cp = ControlPlane::start(state.path(), &["provider.process.prewarm=1".into()]).await;
    let r = register(&cp, spec("pw-del", &python, "prewarm_state", "d", None)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ids = ready(&cp, &command, 1).await;
    let pids = processes_of(&ids[0]);
    assert!(!pids.is_empty());
    let r = http("DELETE", &cp.url("/v1/functions/pw-del"), &[], "")
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.text());
    let gone = wait_until(Duration::from_secs(15), || {
        pids.iter().all(|p| !pid_alive(*p))
    })
    .await;
    assert!(
        gone,
        "the prewarmed instance outlived the last function of its kind"
    );
    assert_eq!(prewarmed(&cp).await, json!([]));
}
