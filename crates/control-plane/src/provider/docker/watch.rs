//! A running container of the docker provider, followed: its output (forwarded to the log,
//! rate-limited, its last lines kept), its end (the engine's `wait`, why it ended, its removal,
//! then `exited`), the watchdog's health probe that tells it ready, and its processes on this
//! host (for `list` and the prewarmed containers' memory).
//!
//! - `exited` fires when the engine's `wait` returns; the container is then removed (nothing is
//!   left behind) after its last lines of output are read for the exit reason.
//! - The container's output is followed and forwarded to the log (target
//!   `nanofaas::function`, rate-limited per instance); the last lines are kept for error
//!   messages and can be read with [`super::DockerProvider::logs`].

use super::api::{ContainerInspect, Engine, LogDemux, LogStream};
use super::{Entries, Entry};
use crate::provider::exit::wait_exit;
use crate::provider::shared::{OutputLog, TAIL_LINES};
use crate::provider::ExitWatch;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Health probes back off from 1 ms to this.
const PROBE_MAX_DELAY: Duration = Duration::from_millis(5);
/// Consecutive failed `wait` calls before the instance is declared lost.
const WAIT_ATTEMPTS: u32 = 30;

/// One `GET /health` on a fresh connection.
pub(super) async fn probe_health(addr: SocketAddr, limit: Duration) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get("/health")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(true)))
}

/// Probes the watchdog at `addr` until it answers (`true`), the container ends or `deadline`
/// passes (`false`), backing off from 1 ms to [`PROBE_MAX_DELAY`] between probes.
pub(super) async fn wait_healthy(
    addr: SocketAddr,
    deadline: Instant,
    mut exited: ExitWatch,
) -> bool {
    let mut delay = Duration::from_millis(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        tokio::select! {
            biased;
            _ = wait_exit(&mut exited) => break false,
            ok = probe_health(addr, left.min(Duration::from_secs(1))) => if ok { break true },
        }
        tokio::select! {
            _ = wait_exit(&mut exited) => break false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(PROBE_MAX_DELAY);
    }
}

/// The one child of process `pid` on this machine (the first when there are several).
pub(super) fn only_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Why a container ended, from its exit code and what the engine knows of it.
fn exit_reason(code: i64, inspect: Option<&ContainerInspect>) -> String {
    if let Some(i) = inspect {
        if i.state.oom_killed {
            let limit = if i.host_config.memory > 0 {
                format!(" (memory limit {} bytes)", i.host_config.memory)
            } else {
                String::new()
            };
            return format!("the container was killed for running out of memory{limit}");
        }
        if !i.state.error.is_empty() {
            return format!("the container failed: {}", i.state.error);
        }
    }
    match code {
        137 => "the container was killed (SIGKILL, exit code 137)".into(),
        143 => "the container was stopped (SIGTERM, exit code 143)".into(),
        c => format!("the container exited with code {c}"),
    }
}

/// Follows a container's output: keeps the tail, forwards lines to the log, rate-limited.
pub(super) async fn follow_output(
    engine: Engine,
    entry: Arc<Entry>,
    instance: String,
    per_second: u32,
    hub: Option<Arc<crate::logs::Logs>>,
) {
    let Ok(mut body) = engine.follow_logs(&entry.container).await else {
        return;
    };
    let tail = entry.log.clone();
    let mut demux = LogDemux::default();
    let mut function = entry.function.lock().unwrap().clone();
    let stem = *entry.kind.lock().unwrap() == "prewarmed";
    let mut logs = hub.as_ref().map(|l| l.instance(&function, &instance));
    let mut out = OutputLog::new(function.clone(), instance.clone(), per_second);
    let mut emit = |stream: LogStream, line: String| {
        // A prewarmed container's lines belong to its function once specialized.
        if stem {
            let now = entry.function.lock().unwrap();
            if *now != function {
                function = now.clone();
                drop(now);
                logs = hub.as_ref().map(|l| l.instance(&function, &instance));
                out = OutputLog::new(function.clone(), instance.clone(), per_second);
            }
        }
        // The watchdog's stderr carries its runtime's lines, tagged (see `logs`).
        if let Some(l) = &logs {
            l.line(&line);
        }
        let (s, text) = match crate::logs::display(&line) {
            Some((s, text)) if stream == LogStream::Stderr => (s, text),
            Some(_) => ("stdout", line.as_str()),
            None => return,
        };
        tail.push(text);
        out.line(s, text);
    };
    while let Some(Ok(chunk)) = body.next().await {
        for (s, l) in demux.push(&chunk) {
            emit(s, l);
        }
    }
    for (s, l) in demux.finish() {
        emit(s, l);
    }
    if let Some(l) = &logs {
        l.ended();
    }
}

/// Waits for a container's end, records why, keeps its last output, removes it, and only then
/// tells the instance's watchers.
pub(super) async fn watch_container(
    engine: Engine,
    entries: Entries,
    instance: String,
    entry: Arc<Entry>,
    exit_tx: watch::Sender<Option<String>>,
) {
    if let Ok(i) = engine.inspect(&entry.container).await {
        if i.state.pid > 0 {
            *entry.host_pid.lock().unwrap() = Some(i.state.pid as u32);
        }
    }
    let mut failures = 0;
    let why = loop {
        match engine.wait(&entry.container).await {
            Ok(code) => {
                *entry.exit_code.lock().unwrap() = Some(code);
                let inspect = engine.inspect(&entry.container).await.ok();
                break exit_reason(code, inspect.as_ref());
            }
            Err(e) if e.is_not_found() => break "the container was removed".to_string(),
            Err(e) => {
                // The engine restarted or the connection broke: ask again, within bounds.
                failures += 1;
                match engine.inspect(&entry.container).await {
                    Err(ie) if ie.is_not_found() => break "the container was removed".into(),
                    Ok(i) if !i.state.running => {
                        *entry.exit_code.lock().unwrap() = Some(i.state.exit_code);
                        break exit_reason(i.state.exit_code, Some(&i));
                    }
                    _ => {}
                }
                if failures >= WAIT_ATTEMPTS {
                    break format!("lost track of the container: {e}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    if let Ok(lines) = engine.logs_tail(&entry.container, TAIL_LINES).await {
        if !lines.is_empty() {
            entry.log.replace(lines);
        }
    }
    if let Err(e) = engine.remove(&entry.container).await {
        tracing::warn!(instance = %instance, error = %e, "cannot remove the container that ended");
    }
    entries.lock().unwrap().remove(&instance);
    let _ = exit_tx.send(Some(why));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_from_codes() {
        assert_eq!(exit_reason(3, None), "the container exited with code 3");
        assert!(exit_reason(137, None).contains("SIGKILL"));
    }
}
