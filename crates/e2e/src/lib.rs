//! Helpers of the end-to-end tests (`tests/`): the real `nanofaas serve` binary as a child
//! process, a recording proxy that sees every callback on its way to the control plane, the
//! manifest's setup steps, and small readers of `/proc`.
//!
//! The tests need the workspace binaries (`nanofaas`, `nanofaas-watchdog`) built in the same
//! profile and target directory: `cargo build --workspace --bins` (which `cargo nextest run
//! --workspace` implies for packages with integration tests).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use nanofaas_cli::manifest::Manifest;
use nanofaas_testkit::{http, Proc, Recorded};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A fresh folder under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let d =
            std::env::temp_dir().join(format!("nanofaas-e2e-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create a temporary folder");
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the manifest's setup steps in order, as `nanofaas up` does (`sh -c` in the manifest's
/// folder), each bounded by `limit`. Panics with the step's output when one fails.
pub fn run_setup(manifest: &Manifest, limit: Duration) {
    for (i, step) in manifest.setup.iter().enumerate() {
        let started = Instant::now();
        eprintln!(
            "setup [{}/{}] {} ...",
            i + 1,
            manifest.setup.len(),
            step.name
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&step.run).current_dir(&manifest.dir);
        let mut p =
            Proc::spawn(cmd).unwrap_or_else(|e| panic!("cannot run sh for {:?}: {e}", step.name));
        match p.wait_exit(limit) {
            Some(st) if st.success() => {
                eprintln!(
                    "setup [{}/{}] done in {:.1} s",
                    i + 1,
                    manifest.setup.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Some(st) => panic!(
                "setup step {:?} ({}) failed with {st}; its output:\n{}",
                step.name,
                step.run,
                p.output()
            ),
            None => panic!(
                "setup step {:?} ({}) did not finish within {} s; its output so far:\n{}",
                step.name,
                step.run,
                limit.as_secs(),
                p.output()
            ),
        }
    }
}

/// `nanofaas serve` on 127.0.0.1:0, killed (with everything it started) on drop.
pub struct ControlPlane {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl ControlPlane {
    /// Starts it with a state folder and extra `--set KEY=VALUE` settings, and waits for its
    /// `nanofaas listening on` line.
    pub async fn start(state_dir: &Path, settings: &[String]) -> ControlPlane {
        let (proc, base) = nanofaas_testkit::serve_nanofaas(state_dir, settings).await;
        ControlPlane { proc, base }
    }

    /// Enqueues an async invocation of `name` with `body` (answered 202), then polls its
    /// execution until it ends (bounded: 30 s, then a panic naming `what`). Returns the
    /// execution id and its final view.
    pub async fn enqueue_and_wait(
        &self,
        name: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> (String, serde_json::Value) {
        let r = http(
            "POST",
            &self.url(&format!("/v1/functions/{name}:enqueue")),
            &[],
            body.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 202, "{what}enqueue: {}", r.text());
        let id = r.json()["executionId"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Polled: the execution's view has no long-poll; bounded by the deadline.
            let v = http("GET", &self.url(&format!("/v1/executions/{id}")), &[], "")
                .await
                .unwrap()
                .json();
            if matches!(v["status"].as_str(), Some("success" | "error" | "timeout")) {
                return (id, v);
            }
            assert!(
                Instant::now() < deadline,
                "{what}async execution {id} never finished: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// An HTTP server on 127.0.0.1:0 that records every request and forwards it to a target set
/// later (the control plane, whose port is known only once it runs), answering with the
/// target's answer. The tests point the control plane's `callback_base_url` at it, so every
/// callback an instance sends passes through it.
pub struct RecordingProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    target: Mutex<Option<String>>,
    seen: Mutex<Vec<Recorded>>,
}

impl RecordingProxy {
    pub async fn start() -> RecordingProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                // In its own task: a client that hangs up early (a one-shot
                                // watchdog stopped as soon as its result is in) must not cancel
                                // the forwarding or its record.
                                let task = tokio::spawn(forward(st.clone(), req));
                                async move {
                                    match task.await {
                                        Ok(r) => r,
                                        Err(e) => Ok(Response::new(Full::new(Bytes::from(format!("proxy task failed: {e}"))))),
                                    }
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        RecordingProxy { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where requests go from now on (`http://host:port`, no trailing slash).
    pub fn set_target(&self, base: &str) {
        *self.state.target.lock().unwrap() = Some(base.to_string());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a request whose path is `path`.
    pub async fn wait_for_path(&self, path: &str, timeout: Duration) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| r.path == path) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    st: Arc<ProxyState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = st.target.lock().unwrap().clone();
    let answer = match target {
        None => Err("the proxy has no target yet".to_string()),
        Some(t) => {
            let pass: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length" | "connection"))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http(
                parts.method.as_str(),
                &format!("{t}{path}"),
                &pass,
                body.clone(),
            )
            .await
        }
    };
    let (status, resp_body) = match answer {
        Ok(r) => (r.status, r.body),
        Err(e) => (
            502,
            Bytes::from(format!(r#"{{"error":{{"code":"PROXY","message":{e:?}}}}}"#)),
        ),
    };
    st.seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path,
        headers,
        body,
        answered: status,
    });
    let mut r = Response::new(Full::new(resp_body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok(r)
}

/// The parent PID of `pid` (`/proc/<pid>/stat`), if the process exists.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is `ancestor` or one of its descendants.
pub fn is_or_descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == ancestor {
            return true;
        }
        match parent_pid(p) {
            Some(pp) if pp != 0 && pp != p => p = pp,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_of_this_process() {
        let me = std::process::id();
        let parent = parent_pid(me).expect("our own stat");
        assert!(is_or_descends_from(me, me));
        assert!(is_or_descends_from(me, parent));
        assert!(!is_or_descends_from(parent, me));
        assert_eq!(parent_pid(u32::MAX), None);
    }

    #[tokio::test]
    async fn proxy_records_and_forwards() {
        let sink = nanofaas_testkit::CallbackSink::start().await;
        let proxy = RecordingProxy::start().await;
        let r = http("POST", &format!("{}/a", proxy.url()), &[], "{}")
            .await
            .unwrap();
        assert_eq!(r.status, 502, "no target yet");
        proxy.set_target(&sink.url());
        let r = http(
            "POST",
            &format!("{}/x/e-1:complete", proxy.url()),
            &[("x-trace-id", "t")],
            r#"{"success":true}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 204);
        let seen = sink.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/x/e-1:complete");
        assert_eq!(seen[0].header("x-trace-id"), Some("t"));
        let rec = proxy
            .wait_for_path("/x/e-1:complete", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            (rec.answered, rec.json()["success"].as_bool()),
            (204, Some(true))
        );
    }
}
