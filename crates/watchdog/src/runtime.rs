//! Starting an HTTP runtime: spawn `WATCHDOG_CMD`, then probe its health URL until it answers.
//!
//! Readiness must cost milliseconds, not a poll period: the probe retries every 1 ms for the
//! first 100 ms (a local runtime that is about to listen refuses connections in microseconds),
//! then every 5 ms, until the startup timeout or the runtime's exit.

use crate::client;
use crate::config::Config;
use crate::process;
use crate::warm::specialize::{Launch, ENV_PREWARM};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

/// Longest a single health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The variable that offers a runtime a Unix socket to serve on besides its port.
pub const ENV_RUNTIME_SOCKET: &str = "NANOFAAS_RUNTIME_SOCKET";

/// Spawns the runtime command; its stdout and stderr go to the watchdog's stderr (or, with
/// `piped`, to pipes the caller reads: see `warm::output`). With `socket`, the runtime is
/// offered that Unix socket in [`ENV_RUNTIME_SOCKET`].
pub fn spawn(cfg: &Config, socket: Option<&str>) -> Result<(Child, u32), String> {
    spawn_with(cfg, socket, false)
}

pub fn spawn_with(cfg: &Config, socket: Option<&str>, piped: bool) -> Result<(Child, u32), String> {
    spawn_launch(cfg, socket, piped, Launch::Normal)
}

/// [`spawn_with`], started generic (`NANOFAAS_PREWARM=1`) or as the function a prewarmed
/// watchdog was specialized for (its variables and working directory, no `NANOFAAS_PREWARM`).
pub fn spawn_launch(
    cfg: &Config,
    socket: Option<&str>,
    piped: bool,
    launch: Launch<'_>,
) -> Result<(Child, u32), String> {
    let extra: Vec<(&str, std::ffi::OsString)> = socket
        .map(|s| (ENV_RUNTIME_SOCKET, s.into()))
        .into_iter()
        .collect();
    let mut cmd = process::command(&cfg.command, &extra);
    if socket.is_none() {
        cmd.env_remove(ENV_RUNTIME_SOCKET);
    }
    match launch {
        Launch::Normal => {}
        Launch::Generic => {
            cmd.env(ENV_PREWARM, "1");
        }
        Launch::Specialized(s) => {
            cmd.env_remove(ENV_PREWARM);
            cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
            if let Some(d) = &s.working_dir {
                cmd.current_dir(d);
            }
        }
    }
    cmd.stdin(Stdio::null());
    if piped {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(process::to_stderr())
            .stderr(process::to_stderr());
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cfg.command[0]))?;
    let pid = child.id().unwrap_or(0);
    Ok((child, pid))
}

/// Probes the health URL over `http` until it answers 2xx (`Ok` with its address, and the
/// endpoint that holds the probe's connection for reuse), the runtime exits, or `timeout` passes.
pub async fn wait_healthy(
    cfg: &Config,
    child: &mut Child,
    timeout: Duration,
    http: &nanofaas_h1::Client,
) -> Result<(SocketAddr, nanofaas_h1::Endpoint), String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let url = &cfg.runtime_health_url;
    let addr = client::resolve(url)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?;
    let endpoint = nanofaas_h1::Endpoint::tcp(addr);
    let probing = async {
        loop {
            let budget = PROBE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let last = match client::probe(http, &endpoint, url, budget).await {
                Ok(()) => return Ok((addr, endpoint.clone())),
                Err(e) => e,
            };
            let pause = if start.elapsed() < Duration::from_millis(100) {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            if Instant::now() + pause >= deadline {
                return Err(format!(
                    "the runtime was not healthy within {} ms ({last})",
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(pause).await;
        }
    };
    tokio::select! {
        r = probing => r,
        st = child.wait() => Err(match st {
            Ok(st) => format!("the runtime {} before becoming healthy", process::describe(&st)),
            Err(e) => format!("waiting for the runtime: {e}"),
        }),
    }
}
