//! Starting the real `nanofaas-watchdog` binary for integration tests.
#![allow(dead_code)]

use nanofaas_testkit::{free_port, workspace_bin, Proc, Stream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(10);

/// Every variable the watchdog reads, removed from the inherited environment.
const VARS: &[&str] = &[
    "EXECUTION_MODE",
    "WARM",
    "WATCHDOG_CMD",
    "TIMEOUT_MS",
    "RUNTIME_URL",
    "RUNTIME_HEALTH_URL",
    "WARM_STARTUP_TIMEOUT_MS",
    "WARM_STOP_GRACE_MS",
    "CALLBACK_MAX_ATTEMPTS",
    "CALLBACK_TIMEOUT_MS",
    "MAX_PAYLOAD_BYTES",
    "WATCHDOG_LOG",
    "WATCHDOG_THREADS",
    "EXECUTION_ID",
    "CALLBACK_URL",
    "CALLBACK_TOKEN",
    "TRACE_ID",
    "TRACEPARENT",
    "INVOCATION_PAYLOAD",
    "INPUT_FILE",
    "OUTPUT_FILE",
    "WARM_PORT",
    "WARM_BIND",
    "WARM_SOCKET",
    "WARM_IDLE_TIMEOUT_MS",
    "WARM_MAX_INVOCATIONS",
    "WARM_CONCURRENCY",
    "WARM_RUNTIME_MODE",
    "PORT",
];

pub fn watchdog_command(env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanofaas-watchdog"));
    for v in VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn test_runtime() -> String {
    workspace_bin("nanofaas-test-runtime").display().to_string()
}

pub fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    format!("sh '{}'", p.display())
}

/// A running warm watchdog.
pub struct Warm {
    pub proc: Proc,
    pub port: u16,
    pub runtime_pid: u32,
}

impl Warm {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (bounded) until `n` `NANOFAAS_RUNTIME pid=..` lines were captured, and returns
    /// all of them: the watchdog prints a line before the runtime serves anything, but the
    /// test's reader thread may lag behind.
    pub async fn restarts_at_least(&self, n: usize) -> Vec<u32> {
        nanofaas_testkit::wait_until(T, || self.restarts().len() >= n).await;
        self.restarts()
    }

    /// `NANOFAAS_RUNTIME pid=..` lines captured so far.
    pub fn restarts(&self) -> Vec<u32> {
        self.proc
            .lines(Stream::Stdout)
            .iter()
            .filter_map(|l| l.strip_prefix("NANOFAAS_RUNTIME pid="))
            .map(|p| p.parse().expect("pid"))
            .collect()
    }
}

/// Env for a warm watchdog over the test runtime on a free port, plus `extra` (which wins).
pub fn warm_env(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let rport = free_port();
    let mut env: Vec<(&'static str, String)> = vec![
        ("EXECUTION_MODE", "WARM".into()),
        ("WARM_PORT", "0".into()),
        ("WARM_BIND", "127.0.0.1".into()),
        ("PORT", rport.to_string()),
        ("RUNTIME_URL", format!("http://127.0.0.1:{rport}/invoke")),
        ("WATCHDOG_CMD", test_runtime()),
    ];
    for (k, v) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.retain(|(kk, _)| *kk != k);
        env.push((k, v.to_string()));
    }
    env
}

/// Starts a warm watchdog and waits for its READY line.
pub async fn start_warm(extra: &[(&str, &str)]) -> Warm {
    start_warm_env(&warm_env(extra)).await
}

pub async fn start_warm_env(env: &[(&'static str, String)]) -> Warm {
    let borrowed: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let proc = Proc::spawn(watchdog_command(&borrowed)).expect("spawn the watchdog");
    let line = proc
        .wait_line_async(Stream::Stdout, T, |l| l.starts_with("NANOFAAS_READY"))
        .await
        .unwrap_or_else(|| panic!("no READY line\n{}", proc.output()));
    let (port, pid, runtime_pid) = parse_ready(&line);
    assert_eq!(pid, proc.pid(), "READY pid is the watchdog's: {line}");
    Warm {
        proc,
        port,
        runtime_pid,
    }
}

/// `NANOFAAS_READY port=<p> pid=<w> runtime_pid=<r>`, exactly (a `socket=` field after the
/// port, present with `WARM_SOCKET`, is read by [`ready_socket`]).
pub fn parse_ready(line: &str) -> (u16, u32, u32) {
    let rest = line
        .strip_prefix("NANOFAAS_READY ")
        .unwrap_or_else(|| panic!("{line}"));
    let mut parts: Vec<&str> = rest.split(' ').collect();
    if parts.get(1).is_some_and(|p| p.starts_with("socket=")) {
        parts.remove(1);
    }
    assert_eq!(parts.len(), 3, "{line}");
    let field = |i: usize, name: &str| -> u64 {
        parts[i]
            .strip_prefix(name)
            .and_then(|v| v.strip_prefix('='))
            .unwrap_or_else(|| panic!("{line}: field {i} should be {name}"))
            .parse()
            .unwrap_or_else(|_| panic!("{line}: {name} is not a number"))
    };
    (
        field(0, "port") as u16,
        field(1, "pid") as u32,
        field(2, "runtime_pid") as u32,
    )
}

/// The `socket=` field of a READY line.
pub fn ready_socket(line: &str) -> Option<String> {
    line.split(' ')
        .find_map(|p| p.strip_prefix("socket="))
        .map(str::to_string)
}
