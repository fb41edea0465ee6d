//! Every bad configuration and every startup failure ends with its documented exit code and
//! one clear line on stderr.

mod common;

use common::*;
use nanofaas_testkit::{free_port, Proc, Stream};
use std::net::TcpListener;

/// Runs the watchdog with `env`; returns its exit code and stderr.
fn exit_of(env: &[(&str, String)]) -> (i32, String) {
    let mut p = Proc::spawn(watchdog_command(env)).expect("spawn");
    let st = p
        .wait_exit(T)
        .unwrap_or_else(|| panic!("did not exit\n{}", p.output()));
    // Let the reader thread catch the last lines.
    p.wait_line(
        Stream::Stderr,
        std::time::Duration::from_millis(200),
        |_| false,
    );
    (st.code().unwrap_or(-1), p.lines(Stream::Stderr).join("\n"))
}

fn s(v: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    v.iter()
        .map(|(k, v)| (&*Box::leak(k.to_string().into_boxed_str()), v.to_string()))
        .collect()
}

#[test]
fn bad_configurations_exit_2_naming_the_variable() {
    let oneshot = [
        ("WATCHDOG_CMD", "true"),
        ("EXECUTION_ID", "e"),
        ("CALLBACK_URL", "http://127.0.0.1:1/cb"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut v = oneshot.to_vec();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        s(&v)
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            with(&[("EXECUTION_MODE", "BATCH")]),
            "EXECUTION_MODE: unknown mode \"BATCH\"",
        ),
        (
            s(&[("EXECUTION_ID", "e"), ("CALLBACK_URL", "http://x/")]),
            "WATCHDOG_CMD: is required",
        ),
        (
            with(&[("WATCHDOG_CMD", "run 'unclosed")]),
            "WATCHDOG_CMD: unclosed single quote",
        ),
        (
            with(&[("TIMEOUT_MS", "ten")]),
            "TIMEOUT_MS: \"ten\" is not a non-negative whole number",
        ),
        (with(&[("TIMEOUT_MS", "-1")]), "TIMEOUT_MS"),
        (
            s(&[("WATCHDOG_CMD", "true"), ("EXECUTION_ID", "e")]),
            "CALLBACK_URL: is required",
        ),
        (
            s(&[("WATCHDOG_CMD", "true"), ("CALLBACK_URL", "http://x/")]),
            "EXECUTION_ID: is required",
        ),
        (with(&[("CALLBACK_URL", "https://cp/cb")]), "CALLBACK_URL"),
        (
            with(&[("INVOCATION_PAYLOAD", "{broken")]),
            "INVOCATION_PAYLOAD: is not valid JSON",
        ),
        (
            with(&[("CALLBACK_MAX_ATTEMPTS", "0")]),
            "CALLBACK_MAX_ATTEMPTS: 0 is out of range",
        ),
        (with(&[("WATCHDOG_LOG", "loud")]), "WATCHDOG_LOG"),
        (
            s(&[
                ("EXECUTION_MODE", "WARM"),
                ("WATCHDOG_CMD", "true"),
                ("WARM_PORT", "eighty"),
            ]),
            "WARM_PORT: \"eighty\"",
        ),
        (
            s(&[
                ("EXECUTION_MODE", "WARM"),
                ("WATCHDOG_CMD", "true"),
                ("WARM_PORT", "9"),
                ("WARM_CONCURRENCY", "0"),
            ]),
            "WARM_CONCURRENCY",
        ),
        (
            s(&[
                ("EXECUTION_MODE", "WARM"),
                ("WATCHDOG_CMD", "true"),
                ("WARM_PORT", "9"),
                ("WARM_RUNTIME_MODE", "grpc"),
            ]),
            "WARM_RUNTIME_MODE",
        ),
        (
            s(&[("EXECUTION_MODE", "WARM"), ("WATCHDOG_CMD", "true")]),
            "WARM_PORT: 8080 is also the port of RUNTIME_URL",
        ),
    ];
    for (env, needle) in cases {
        let (code, stderr) = exit_of(&env);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with("nanofaas-watchdog: invalid configuration: "),
            "{stderr}"
        );
        assert!(
            lines[0].contains(needle),
            "{env:?}: expected {needle:?} in {stderr}"
        );
    }
}

#[test]
fn warm_runtime_that_cannot_spawn_exits_4() {
    let env = warm_env(&[("WATCHDOG_CMD", "/nonexistent/runtime")]);
    let (code, stderr) = exit_of(&env);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("cannot start \"/nonexistent/runtime\""),
        "{stderr}"
    );
}

#[test]
fn warm_runtime_that_dies_or_never_gets_healthy_exits_5() {
    let (code, stderr) = exit_of(&warm_env(&[("FIXTURE_FAIL_START", "1")]));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("exited with code 3 before becoming healthy"),
        "{stderr}"
    );

    let (code, stderr) = exit_of(&warm_env(&[
        ("FIXTURE_START_DELAY_MS", "5000"),
        ("WARM_STARTUP_TIMEOUT_MS", "200"),
    ]));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("not healthy within 200 ms"), "{stderr}");
}

#[test]
fn warm_port_in_use_exits_6_and_stops_the_runtime() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let rport = free_port().to_string();
    let env = warm_env(&[
        ("WARM_PORT", &port),
        ("PORT", &rport),
        ("RUNTIME_URL", &format!("http://127.0.0.1:{rport}/invoke")),
    ]);
    let (code, stderr) = exit_of(&env);
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("stopped"),
        "the runtime is stopped: {stderr}"
    );
}
