//! Logs per execution, through a real control plane and the three language runtimes (the
//! examples of `examples/manifest.yaml`, after its setup steps):
//!
//! - one call at a time (`instanceConcurrency: 1`): what the handler printed on stdout and
//!   logged through its runtime's logger is read back with `GET /v1/executions/{id}/logs` and
//!   `nanofaas exec logs ID`, each execution with its own lines only;
//! - several at once (`instanceConcurrency: 4`): the lines written through the runtime's
//!   logger are each with their execution; plain prints cannot be attributed and stay in the
//!   instance's log (`GET /v1/functions/{name}/logs`, `executionId: null`);
//! - a function printing more than the bound is cut at it, with `truncated: true` and a marker;
//! - `nanofaas fn logs NAME --follow` shows lines while invocations run and exits 0 on SIGINT;
//! - the logs of async executions come back after a restart of the control plane, for
//!   functions serving one call at a time and several at once;
//! - STDIO and FILE functions (one process per call): every line the call's process writes is
//!   that execution's, even when calls overlap.

use nanofaas_api::FunctionSpec;
use nanofaas_e2e::{repo_root, run_setup, ControlPlane, TempDir};
use nanofaas_testkit::{http, workspace_bin, Proc, Stream};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const SETUP_LIMIT: Duration = Duration::from_secs(20 * 60);
const RUNTIMES: [&str; 3] = ["hello-python", "hello-java", "hello-rust"];

async fn invoke(cp: &ControlPlane, name: &str, input: Value) -> String {
    invoke_at(&cp.base, name, input).await
}

async fn invoke_at(base: &str, name: &str, input: Value) -> String {
    let r = http(
        "POST",
        &format!("{base}/v1/functions/{name}:invoke"),
        &[],
        json!({ "input": input }).to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: invoke: {e}"));
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    r.json()["executionId"].as_str().unwrap().to_string()
}

async fn exec_logs(cp: &ControlPlane, id: &str) -> Value {
    let r = http(
        "GET",
        &cp.url(&format!("/v1/executions/{id}/logs")),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "logs of {id}: {}", r.text());
    let v = r.json();
    assert_eq!(v["executionId"], id);
    v
}

fn texts(logs: &Value) -> Vec<String> {
    logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// The CLI against `cp`, to its end (bounded).
fn cli(cp: &ControlPlane, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut cmd = Command::new(workspace_bin("nanofaas"));
    cmd.arg("--endpoint").arg(&cp.base).args(args);
    let mut p = Proc::spawn(cmd).unwrap();
    let st = p
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("nanofaas {args:?} did not finish: {}", p.output()));
    (st.code().unwrap_or(-1), p.lines(Stream::Stdout), p.output())
}

async fn register(cp: &ControlPlane, spec: &FunctionSpec) {
    let r = http(
        "POST",
        &cp.url("/v1/functions"),
        &[],
        serde_json::to_string(spec).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}: {}", spec.name, r.text());
}

/// One call at a time: every line of the call, and only those, is kept with it.
async fn one_at_a_time(cp: &ControlPlane, name: &str) -> String {
    let mut ids = Vec::new();
    for i in 0..2 {
        let input = json!({
            "print": [format!("{name}-print-{i}-a"), format!("{name}-print-{i}-b")],
            "log": [format!("{name}-log-{i}")],
        });
        ids.push(invoke(cp, name, input).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let logs = exec_logs(cp, id).await;
        let t = texts(&logs);
        assert_eq!(logs["truncated"], false, "{name}: {logs}");
        for want in [
            format!("{name}-print-{i}-a"),
            format!("{name}-print-{i}-b"),
            format!("{name}-log-{i}"),
        ] {
            assert!(has(&t, &want), "{name}: {want} missing from {id}: {logs}");
        }
        let other = 1 - i;
        assert!(
            !has(&t, &format!("-{other}-")) && !has(&t, &format!("-log-{other}")),
            "{name}: lines of another execution in {id}: {logs}"
        );
        assert!(!has(&t, "@exec:"), "{name}: the tag is stripped: {logs}");
        let line = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["text"].as_str().unwrap().contains("-print-"))
            .unwrap();
        assert_eq!(line["stream"], "stdout", "{name}: {line}");
        let ts = line["ts"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{name}: {ts}");
    }
    // The same through the CLI.
    let (code, out, all) = cli(cp, &["exec", "logs", &ids[0]]);
    assert_eq!(code, 0, "{all}");
    assert!(has(&out, &format!("{name}-print-0-a")), "{all}");
    assert!(!has(&out, &format!("{name}-print-1-a")), "{all}");
    ids[0].clone()
}

/// Several at once: the runtime's logger tags each line with its execution.
async fn concurrent(cp: &ControlPlane, name: &str) {
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let (base, name) = (cp.base.clone(), name.to_string());
            tokio::spawn(async move {
                let input = json!({
                    "sleepMs": 300,
                    "print": [format!("{name}-cprint-{i}")],
                    "log": [format!("{name}-clog-{i}-")],
                });
                invoke_at(&base, &name, input).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        ids.push(c.await.unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        let logs = exec_logs(cp, id).await;
        let t = texts(&logs);
        assert!(
            has(&t, &format!("{name}-clog-{i}-")),
            "{name}: the logger's line missing from {id}: {logs}"
        );
        for j in (0..6).filter(|j| *j != i) {
            assert!(
                !has(&t, &format!("{name}-clog-{j}-")),
                "{name}: {id} has another execution's line: {logs}"
            );
        }
        assert!(
            !has(&t, "-cprint-"),
            "{name}: a plain print cannot be attributed when calls overlap: {logs}"
        );
    }
    let r = http(
        "GET",
        &cp.url(&format!("/v1/functions/{name}/logs")),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let lines = v["lines"].as_array().unwrap();
    let print = lines
        .iter()
        .find(|l| {
            l["text"]
                .as_str()
                .unwrap()
                .contains(&format!("{name}-cprint-0"))
        })
        .unwrap_or_else(|| panic!("{name}: the print is in the instance's log: {v}"));
    assert_eq!(print["executionId"], Value::Null, "{print}");
    assert!(print["instanceId"].as_str().is_some_and(|s| !s.is_empty()));
    let logged = lines
        .iter()
        .find(|l| {
            l["text"]
                .as_str()
                .unwrap()
                .contains(&format!("{name}-clog-0-"))
        })
        .unwrap();
    assert_eq!(logged["executionId"], ids[0].as_str(), "{logged}");
    // The same through the CLI.
    let (code, out, all) = cli(cp, &["exec", "logs", &ids[0]]);
    assert_eq!(code, 0, "{all}");
    assert!(has(&out, &format!("{name}-clog-0-")), "{all}");
    assert!(!has(&out, &format!("{name}-clog-1-")), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_functions_print_is_kept_per_execution_in_every_runtime() {
    let manifest_path = repo_root().join("examples/manifest.yaml");
    let manifest = nanofaas_cli::manifest::load(&manifest_path)
        .unwrap_or_else(|e| panic!("examples/manifest.yaml does not load: {e}"));
    run_setup(&manifest, SETUP_LIMIT);
    let state = TempDir::new("logs");
    let settings = ["provider.stop_grace_ms=2000".to_string()];
    let mut cp = ControlPlane::start(state.path(), &settings).await;
    for name in RUNTIMES {
        let spec = manifest
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("the manifest lost {name}"))
            .clone();
        register(&cp, &spec).await;
        let mut conc = spec.clone();
        conc.name = format!("{name}-conc");
        conc.instance_concurrency = 4;
        conc.concurrency = 8;
        conc.max_instances = 1;
        conc.env.insert("THREADS".into(), "8".into());
        register(&cp, &conc).await;
    }

    let mut kept = Vec::new();
    for name in RUNTIMES {
        one_at_a_time(&cp, name).await;
        concurrent(&cp, &format!("{name}-conc")).await;
        // An async execution, to read back after the restart.
        let (id, v) = cp
            .enqueue_and_wait(
                name,
                &json!({"input": {"print": [format!("{name}-async-line")]}}),
                name,
            )
            .await;
        assert_eq!(v["status"], "success", "{v}");
        let t = texts(&exec_logs(&cp, &id).await);
        assert!(has(&t, &format!("{name}-async-line")), "{name}: {t:?}");
        kept.push((name.to_string(), id));
        // And one on the instance serving several at once (a line of its logger).
        let conc = format!("{name}-conc");
        let (id, v) = cp
            .enqueue_and_wait(
                &conc,
                &json!({"input": {"log": [format!("{conc}-async-line")]}}),
                &conc,
            )
            .await;
        assert_eq!(v["status"], "success", "{v}");
        let t = texts(&exec_logs(&cp, &id).await);
        assert!(has(&t, &format!("{conc}-async-line")), "{conc}: {t:?}");
        kept.push((conc, id));
    }

    // A function printing far more than the bound: cut there, and said so.
    let id = invoke(&cp, "hello-python", json!({"spam": 5000})).await;
    let logs = exec_logs(&cp, &id).await;
    assert_eq!(
        logs["truncated"],
        true,
        "{}",
        logs["lines"].as_array().unwrap().len()
    );
    let t = texts(&logs);
    let kept_bytes: usize = t[..t.len() - 1].iter().map(|l| l.len()).sum();
    assert!(kept_bytes <= 64 << 10, "{kept_bytes}");
    assert!(t.len() <= 1001, "{}", t.len());
    assert!(
        t.last().unwrap().contains("logs truncated"),
        "{:?}",
        t.last()
    );

    // Following: lines show up while invocations run; SIGINT ends it with 0.
    let mut cmd = Command::new(workspace_bin("nanofaas"));
    cmd.arg("--endpoint")
        .arg(&cp.base)
        .args(["fn", "logs", "hello-rust", "--follow"]);
    let mut follow = Proc::spawn(cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    for i in 0.. {
        // The follower may not be subscribed yet when the first calls run: call until a line
        // arrives (bounded).
        invoke(
            &cp,
            "hello-rust",
            json!({"print": [format!("followed-{i}")]}),
        )
        .await;
        seen = follow
            .wait_line_async(Stream::Stdout, Duration::from_millis(300), |l| {
                l.contains("followed-")
            })
            .await;
        if seen.is_some() || Instant::now() > deadline {
            break;
        }
    }
    let line = seen.unwrap_or_else(|| panic!("no line followed: {}", follow.output()));
    assert!(line.contains(" stdout followed-"), "{line}");
    follow.signal(libc::SIGINT).unwrap();
    let st = follow
        .wait_exit_async(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("--follow did not stop on SIGINT: {}", follow.output()));
    assert_eq!(st.code(), Some(0), "{}", follow.output());
    let errs = follow.lines(Stream::Stderr);
    assert!(
        errs.iter().all(|l| !l.to_lowercase().contains("error")),
        "an error line on stopping: {errs:?}"
    );

    // A restart: the async executions' logs come back with their records.
    cp.proc.signal(libc::SIGTERM).unwrap();
    assert!(
        cp.proc
            .wait_exit_async(Duration::from_secs(20))
            .await
            .is_some(),
        "the control plane did not stop: {}",
        cp.proc.output()
    );
    drop(cp);
    let cp = ControlPlane::start(state.path(), &settings).await;
    for (name, id) in &kept {
        let t = texts(&exec_logs(&cp, id).await);
        assert!(
            has(&t, &format!("{name}-async-line")),
            "{name}: after the restart: {t:?}"
        );
        let (code, out, all) = cli(&cp, &["exec", "logs", id]);
        assert_eq!(code, 0, "{all}");
        assert!(has(&out, &format!("{name}-async-line")), "{all}");
    }
    let r = http("GET", &cp.url("/v1/executions/nope/logs"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND", "{}", r.text());
}

/// Registers a one-process-per-call function (`mode`: STDIO or FILE) running `script` with `sh`.
async fn register_script(
    cp: &ControlPlane,
    dir: &std::path::Path,
    name: &str,
    mode: &str,
    script: &str,
) {
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, script).unwrap();
    let spec = json!({
        "name": name,
        "command": ["/bin/sh", path.to_str().unwrap()],
        "runtimeMode": mode,
        "instanceConcurrency": 4,
        "concurrency": 8,
        "maxInstances": 1,
        "timeoutMs": 10000,
    });
    let r = http("POST", &cp.url("/v1/functions"), &[], spec.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{name}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_or_file_call_keeps_all_its_process_wrote() {
    let state = TempDir::new("logs-oneproc");
    let scripts = TempDir::new("logs-scripts");
    let cp = ControlPlane::start(state.path(), &[]).await;
    // Both print a line before and after a pause, so that overlapping calls interleave.
    register_script(
        &cp,
        scripts.path(),
        "stdio-logs",
        "STDIO",
        "cat >/dev/null\necho \"stdio-err-a $EXECUTION_ID\" >&2\nsleep 0.3\necho \"stdio-err-b $EXECUTION_ID\" >&2\nprintf 'no newline at the end' >&2\necho '{\"ok\": true}'\n",
    )
    .await;
    register_script(
        &cp,
        scripts.path(),
        "file-logs",
        "FILE",
        "echo \"file-out-a $EXECUTION_ID\"\nsleep 0.3\necho \"file-err-b $EXECUTION_ID\" >&2\necho '{\"ok\": true}' >\"$OUTPUT_FILE\"\n",
    )
    .await;
    for (name, want) in [
        (
            "stdio-logs",
            vec![
                ("stderr", "stdio-err-a"),
                ("stderr", "stdio-err-b"),
                ("stderr", "no newline at the end"),
            ],
        ),
        (
            "file-logs",
            vec![("stdout", "file-out-a"), ("stderr", "file-err-b")],
        ),
    ] {
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let base = cp.base.clone();
                tokio::spawn(async move { invoke_at(&base, name, json!({ "i": i })).await })
            })
            .collect();
        let mut ids = Vec::new();
        for c in calls {
            ids.push(c.await.unwrap());
        }
        for id in &ids {
            let logs = exec_logs(&cp, id).await;
            let lines = logs["lines"].as_array().unwrap();
            let got: Vec<(String, String)> = lines
                .iter()
                .map(|l| {
                    (
                        l["stream"].as_str().unwrap().to_string(),
                        l["text"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(got.len(), want.len(), "{name} {id}: {logs}");
            for ((stream, text), (ws, wt)) in got.iter().zip(&want) {
                assert_eq!(stream, ws, "{name} {id}: {logs}");
                assert!(text.starts_with(wt), "{name} {id}: {logs}");
                // Each line is its own execution's, none of the overlapping calls'.
                if !wt.starts_with("no newline") {
                    assert_eq!(text, &format!("{wt} {id}"), "{name}: {logs}");
                }
            }
        }
        let (code, out, all) = cli(&cp, &["exec", "logs", &ids[0]]);
        assert_eq!(code, 0, "{all}");
        assert!(has(&out, &format!("{} {}", want[0].1, ids[0])), "{all}");
        assert!(!has(&out, &ids[1]), "{all}");
    }
}
