//! `WARM=true`, the original nanofaas's switch for a warm watchdog, against the real binary:
//! it serves many invocations from one runtime exactly like `EXECUTION_MODE=WARM`, with the
//! original's pairing `WARM=true EXECUTION_MODE=HTTP` too, and a contradiction stops the
//! watchdog with the configuration exit code.

mod common;

use common::*;
use nanofaas_testkit::{http, Proc, Response, Stream};
use serde_json::json;

async fn call(w: &Warm, id: &str, n: u64) -> Response {
    http(
        "POST",
        &w.url("/invoke"),
        &[("x-execution-id", id)],
        json!({ "input": n }).to_string(),
    )
    .await
    .expect("the watchdog answers")
}

/// Env of a warm watchdog with `EXECUTION_MODE` removed and `extra` added.
fn env_without_mode(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = warm_env(&[]);
    env.retain(|(k, _)| *k != "EXECUTION_MODE");
    for (k, v) in extra {
        env.push((k, v.to_string()));
    }
    env
}

async fn serves_warm(env: &[(&'static str, String)]) {
    let w = start_warm_env(env).await;
    for n in 1..=3u64 {
        let r = call(&w, &format!("e{n}"), n).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["pid"].as_u64(),
            Some(w.runtime_pid as u64),
            "call {n}"
        );
        assert_eq!(r.json()["count"], n, "one runtime served every call");
    }
    assert!(w.restarts().is_empty());
}

#[tokio::test]
async fn warm_true_alone_serves_many_invocations_from_one_runtime() {
    // No EXECUTION_ID, no CALLBACK_URL: one-shot mode would refuse to start without them.
    serves_warm(&env_without_mode(&[("WARM", "true")])).await;
}

#[tokio::test]
async fn warm_true_with_execution_mode_http_is_the_originals_warm_http_runtime() {
    serves_warm(&env_without_mode(&[
        ("WARM", "true"),
        ("EXECUTION_MODE", "HTTP"),
    ]))
    .await;
}

#[test]
fn warm_false_with_execution_mode_warm_exits_2_naming_the_contradiction() {
    let env = env_without_mode(&[("WARM", "false"), ("EXECUTION_MODE", "WARM")]);
    let borrowed: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut p = Proc::spawn(watchdog_command(&borrowed)).expect("spawn");
    let st = p
        .wait_exit(T)
        .unwrap_or_else(|| panic!("did not exit\n{}", p.output()));
    assert_eq!(st.code(), Some(2), "{}", p.output());
    let line = p
        .wait_line(Stream::Stderr, T, |l| l.contains("WARM"))
        .unwrap_or_else(|| panic!("no line naming WARM\n{}", p.output()));
    assert!(
        line.contains("contradict") && line.contains("EXECUTION_MODE=WARM"),
        "{line}"
    );
    assert!(
        p.lines(Stream::Stdout)
            .iter()
            .all(|l| !l.starts_with("NANOFAAS_READY")),
        "nothing was served"
    );
}
