//! A small client of the Docker Engine API: the dozen calls the docker provider needs, over an
//! injected [`Transport`] (the engine's Unix socket in production, a scripted fake in tests).
//!
//! Paths carry no API version prefix, so the engine answers with its own current version; every
//! field used here has been stable since Docker 1.25 and is served by Podman's compatible API.
//! Every call but the long-lived ones (`wait`, followed logs) is bounded by the client's
//! timeout.

use crate::dispatch::BoxFuture;
use crate::provider::shared::LineCutter;
use bytes::{Bytes, BytesMut};
use http::Method;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One request to the engine: method, path with query, optional JSON body.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
}

/// The engine's answer: the status now, the body as it arrives.
pub struct ApiResponse {
    pub status: u16,
    pub body: BodyStream,
}

/// A response body arriving in chunks. Dropping it closes the connection (that is how a
/// followed log stream or a pending wait is cancelled).
pub struct BodyStream(pub mpsc::Receiver<Result<Bytes, String>>);

impl BodyStream {
    /// A body that is already complete.
    pub fn full(b: impl Into<Bytes>) -> BodyStream {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Ok(b.into()));
        BodyStream(rx)
    }

    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        self.0.recv().await
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, String> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(format!("the engine's answer is larger than {limit} bytes"));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// The connection to the engine failed (as opposed to the engine answering with an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// How requests reach the engine.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, req: ApiRequest) -> BoxFuture<'_, Result<ApiResponse, TransportError>>;

    /// Where the engine is, for messages (`unix:///var/run/docker.sock`).
    fn describe(&self) -> String;
}

/// Why an engine call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the container engine at {at}: {why}")]
    Unreachable { at: String, why: String },
    #[error("the container engine answered {status} to {what}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the container engine did not answer {what} within {ms} ms")]
    Timeout { what: String, ms: u128 },
    #[error("unexpected answer from the container engine to {what}: {why}")]
    BadResponse { what: String, why: String },
}

impl EngineError {
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The engine's own message, or the whole error.
    pub fn message(&self) -> String {
        match self {
            EngineError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// How long [`Engine::remove`] waits for a removal someone else started.
pub const REMOVAL_WAIT: Duration = Duration::from_secs(5);

/// Largest ordinary answer read from the engine.
const MAX_ANSWER: usize = 8 << 20;

/// `GET /containers/{id}/json`, the parts nanofaas reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    pub id: String,
    pub state: ContainerState,
    pub network_settings: NetworkSettings,
    pub host_config: HostConfig,
    pub config: ContainerConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub error: String,
    pub pid: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    pub ports: HashMap<String, Option<Vec<PortBinding>>>,
    pub networks: HashMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub memory: i64,
    pub memory_swap: i64,
    pub nano_cpus: i64,
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub image: String,
    pub env: Option<Vec<String>>,
    pub labels: Option<HashMap<String, String>>,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub labels: Option<HashMap<String, String>>,
    pub state: String,
}

impl ContainerSummary {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.as_ref()?.get(k).map(String::as_str)
    }
}

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The engine API client.
#[derive(Clone)]
pub struct Engine {
    transport: Arc<dyn Transport>,
    timeout: Duration,
}

impl Engine {
    pub fn new(transport: Arc<dyn Transport>, timeout: Duration) -> Engine {
        Engine { transport, timeout }
    }

    pub fn describe(&self) -> String {
        self.transport.describe()
    }

    /// Sends a request and returns the status and the streaming body (no timeout on the body).
    /// `bounded`: the answer's head must come within the timeout (long-lived calls such as
    /// `wait` may hold it back until they are done, so they are not bounded).
    async fn open(
        &self,
        method: Method,
        path: String,
        body: Option<&Value>,
        bounded: bool,
    ) -> Result<ApiResponse, EngineError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(&path));
        let req = ApiRequest {
            method,
            path,
            body: body.map(|v| Bytes::from(v.to_string())),
        };
        let limit = if bounded { self.timeout } else { Duration::MAX };
        let resp = tokio::time::timeout(limit, self.transport.send(req))
            .await
            .map_err(|_| EngineError::Timeout {
                what: what.clone(),
                ms: self.timeout.as_millis(),
            })?
            .map_err(|e| EngineError::Unreachable {
                at: self.transport.describe(),
                why: e.0,
            })?;
        if resp.status >= 400 {
            let status = resp.status;
            let text = tokio::time::timeout(self.timeout, resp.body.collect(64 << 10))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_string());
            return Err(EngineError::Status {
                what,
                status,
                message,
            });
        }
        Ok(resp)
    }

    /// Sends a request and reads the whole answer within the timeout.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<&Value>,
    ) -> Result<Bytes, EngineError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(&path));
        let resp = self.open(method, path, body, true).await?;
        tokio::time::timeout(self.timeout, resp.body.collect(MAX_ANSWER))
            .await
            .map_err(|_| EngineError::Timeout {
                what: what.clone(),
                ms: self.timeout.as_millis(),
            })?
            .map_err(|why| EngineError::BadResponse { what, why })
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<&Value>,
    ) -> Result<T, EngineError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(&path));
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::BadResponse {
            what,
            why: e.to_string(),
        })
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.call(Method::GET, "/_ping".into(), None)
            .await
            .map(|_| ())
    }

    /// `POST /containers/create`; returns the container id.
    pub async fn create(&self, name: &str, config: &Value) -> Result<String, EngineError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let c: Created = self
            .call_json(
                Method::POST,
                format!("/containers/create?name={}", encode(name)),
                Some(config),
            )
            .await?;
        Ok(c.id)
    }

    /// `POST /containers/{id}/start`.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        // 304 (already started) is a success too.
        self.call(Method::POST, format!("/containers/{id}/start"), None)
            .await
            .map(|_| ())
    }

    /// `POST /containers/{id}/update`: changes the resources of a running container
    /// (`Memory`, `MemorySwap`, `NanoCpus`, ...) in place.
    pub async fn update(&self, id: &str, resources: &Value) -> Result<(), EngineError> {
        self.call(
            Method::POST,
            format!("/containers/{id}/update"),
            Some(resources),
        )
        .await
        .map(|_| ())
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInspect, EngineError> {
        self.call_json(Method::GET, format!("/containers/{id}/json"), None)
            .await
    }

    /// `POST /containers/{id}/kill?signal=..`. A container that is not running is not an error.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        match self
            .call(
                Method::POST,
                format!("/containers/{id}/kill?signal={}", encode(signal)),
                None,
            )
            .await
        {
            Err(e) if matches!(e.status(), Some(404 | 409)) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// `DELETE /containers/{id}?force=true&v=true` (kills it first if it runs). A container
    /// that is already gone is not an error. One that someone else is removing (`409 removal
    /// ... already in progress`, e.g. another control plane cleaning up the same dead owner's
    /// containers) is waited for: `Ok` means gone, whoever removed it.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        match self
            .call(
                Method::DELETE,
                format!("/containers/{id}?force=true&v=true"),
                None,
            )
            .await
        {
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) if e.status() == Some(409) && e.message().contains("already in progress") => {
                self.wait_removed(id, e).await
            }
            r => r.map(|_| ()),
        }
    }

    /// Waits (at most [`REMOVAL_WAIT`]) until `id` is gone. The engine has no event for the
    /// end of a removal that another client started, so this asks again every 100 ms.
    async fn wait_removed(&self, id: &str, in_progress: EngineError) -> Result<(), EngineError> {
        let tries = (REMOVAL_WAIT.as_millis() / 100) as u32;
        for _ in 0..tries {
            match self.inspect(id).await {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(match in_progress {
            EngineError::Status {
                what,
                status,
                message,
            } => EngineError::Status {
                what,
                status,
                message: format!("{message}; still there after {} s", REMOVAL_WAIT.as_secs()),
            },
            other => other,
        })
    }

    /// `GET /containers/json?all=true&filters={"label":[..]}`: containers with every label
    /// filter (`key` or `key=value`), running or not.
    pub async fn list(&self, labels: &[String]) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = serde_json::json!({ "label": labels }).to_string();
        self.call_json(
            Method::GET,
            format!("/containers/json?all=true&filters={}", encode(&filters)),
            None,
        )
        .await
    }

    /// The last `tail` lines the container wrote (stdout and stderr, in order).
    pub async fn logs_tail(&self, id: &str, tail: usize) -> Result<Vec<String>, EngineError> {
        let raw = self
            .call(
                Method::GET,
                format!("/containers/{id}/logs?stdout=true&stderr=true&tail={tail}"),
                None,
            )
            .await?;
        let mut demux = LogDemux::default();
        let mut lines: Vec<String> = demux.push(&raw).into_iter().map(|(_, l)| l).collect();
        lines.extend(demux.finish().into_iter().map(|(_, l)| l));
        Ok(lines)
    }

    /// Everything the container writes from its start on, as it comes (multiplexed frames;
    /// see [`LogDemux`]). The stream ends when the container stops.
    pub async fn follow_logs(&self, id: &str) -> Result<BodyStream, EngineError> {
        self.open(
            Method::GET,
            format!("/containers/{id}/logs?stdout=true&stderr=true&follow=true"),
            None,
            false,
        )
        .await
        .map(|r| r.body)
    }

    /// `POST /containers/{id}/wait`: resolves with the exit code once the container is not
    /// running. No timeout: it lasts as long as the container.
    pub async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        let what = format!("POST /containers/{id}/wait");
        let resp = self
            .open(
                Method::POST,
                format!("/containers/{id}/wait?condition=not-running"),
                None,
                false,
            )
            .await?;
        let body = resp
            .body
            .collect(64 << 10)
            .await
            .map_err(|why| EngineError::BadResponse {
                what: what.clone(),
                why,
            })?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| EngineError::BadResponse {
            what: what.clone(),
            why: format!("{e}: {:?}", String::from_utf8_lossy(&body)),
        })?;
        if let Some(msg) = v["Error"]["Message"].as_str().filter(|m| !m.is_empty()) {
            return Err(EngineError::BadResponse {
                what,
                why: msg.to_string(),
            });
        }
        v["StatusCode"].as_i64().ok_or(EngineError::BadResponse {
            what,
            why: "no StatusCode".into(),
        })
    }

    /// `POST /images/create?fromImage=..`: pulls an image, bounded by `limit` in all. The
    /// engine reports failures inside its progress stream, which is read to the end.
    pub async fn pull(&self, image: &str, limit: Duration) -> Result<(), EngineError> {
        let what = format!("pull of {image}");
        let (name, tag) = split_tag(image);
        let mut path = format!("/images/create?fromImage={}", encode(name));
        if let Some(t) = tag {
            path.push_str(&format!("&tag={}", encode(t)));
        }
        let fut =
            async {
                let resp = self.open(Method::POST, path, None, true).await?;
                let body = resp.body.collect(MAX_ANSWER).await.map_err(|why| {
                    EngineError::BadResponse {
                        what: what.clone(),
                        why,
                    }
                })?;
                for line in body.split(|b| *b == b'\n') {
                    if let Ok(v) = serde_json::from_slice::<Value>(line) {
                        if let Some(msg) = v["error"].as_str() {
                            return Err(EngineError::Status {
                                what: what.clone(),
                                status: 500,
                                message: msg.to_string(),
                            });
                        }
                    }
                }
                Ok(())
            };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| EngineError::Timeout {
                what: what.clone(),
                ms: limit.as_millis(),
            })?
    }

    /// Whether a network of that name or id exists.
    pub async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        match self
            .call(Method::GET, format!("/networks/{}", encode(name)), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `repo/name:tag` → (`repo/name`, `Some(tag)`); a digest reference stays whole.
pub fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rsplit_once(':') {
        // A colon before the last slash belongs to a registry port, not a tag.
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Splits the engine's multiplexed log stream (8-byte frame headers: stream, 3 zero bytes,
/// big-endian length) into lines per stream. Frames are consumed as they arrive, never
/// buffered whole; lines are cut at [`crate::provider::shared::MAX_LINE_BYTES`] (see [`LineCutter`]), so what a container
/// prints costs at most one line buffer per stream.
#[derive(Default)]
pub struct LogDemux {
    header: [u8; 8],
    have: usize,
    /// Bytes left of the current frame's payload.
    remaining: usize,
    stream: Option<LogStream>,
    /// Not multiplexed (a TTY container): everything is stdout.
    raw: bool,
    out: LineCutter,
    err: LineCutter,
}

impl LogDemux {
    pub fn push(&mut self, mut data: &[u8]) -> Vec<(LogStream, String)> {
        let mut lines = Vec::new();
        while !data.is_empty() {
            if self.raw {
                self.out
                    .push(data, &mut |l| lines.push((LogStream::Stdout, l)));
                break;
            }
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                let stream = self.stream.unwrap_or(LogStream::Stdout);
                let cutter = match stream {
                    LogStream::Stderr => &mut self.err,
                    LogStream::Stdout => &mut self.out,
                };
                cutter.push(&data[..n], &mut |l| lines.push((stream, l)));
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (8 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            let h = &self.header[..self.have];
            if h[0] > 2 || h[1..h.len().min(4)].iter().any(|b| *b != 0) {
                // Not multiplexed: what was taken for a header is output.
                self.raw = true;
                let head = self.header;
                let have = self.have;
                self.out
                    .push(&head[..have], &mut |l| lines.push((LogStream::Stdout, l)));
                continue;
            }
            if self.have == 8 {
                let h = self.header;
                self.remaining = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
                self.stream = Some(if h[0] == 2 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                });
                self.have = 0;
            }
        }
        lines
    }

    /// Whatever partial lines remain.
    pub fn finish(&mut self) -> Vec<(LogStream, String)> {
        let mut lines = Vec::new();
        if let Some(l) = self.out.finish() {
            lines.push((LogStream::Stdout, l));
        }
        if let Some(l) = self.err.finish() {
            lines.push((LogStream::Stderr, l));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_removal_someone_else_started_is_waited_for_until_the_container_is_gone() {
        let (t, mut v) = super::super::fake::pair();
        let engine = Engine::new(Arc::new(t), Duration::from_secs(5));
        let task = tokio::spawn(async move { engine.remove("c1").await });
        let del = v.expect("DELETE", "/containers/c1").await;
        assert!(del.path().contains("force=true"), "{}", del.path());
        del.json(
            409,
            serde_json::json!({"message": "removal of container c1 is already in progress"}),
        );
        // Still there (being removed), then gone: only then is it removed.
        v.expect("GET", "/containers/c1/json").await.json(
            200,
            serde_json::json!({"Id": "c1", "State": {"Status": "removing"}}),
        );
        v.expect("GET", "/containers/c1/json")
            .await
            .json(404, serde_json::json!({"message": "No such container: c1"}));
        assert_eq!(task.await.unwrap(), Ok(()));
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_container_already_gone_is_removed_and_another_conflict_is_an_error() {
        let (t, mut v) = super::super::fake::pair();
        let engine = Arc::new(Engine::new(Arc::new(t), Duration::from_secs(5)));
        let e = engine.clone();
        let task = tokio::spawn(async move { e.remove("gone").await });
        v.expect("DELETE", "/containers/gone").await.json(
            404,
            serde_json::json!({"message": "No such container: gone"}),
        );
        assert_eq!(task.await.unwrap(), Ok(()));
        let e = engine.clone();
        let task = tokio::spawn(async move { e.remove("busy").await });
        v.expect("DELETE", "/containers/busy")
            .await
            .json(409, serde_json::json!({"message": "something else"}));
        assert_eq!(task.await.unwrap().unwrap_err().status(), Some(409));
        v.assert_idle(Duration::from_millis(100)).await;
    }

    fn frame(kind: u8, s: &str) -> Vec<u8> {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn demux_splits_frames_and_lines_across_chunks() {
        let mut all = frame(1, "hello\nwor");
        all.extend(frame(2, "oops\n"));
        all.extend(frame(1, "ld\r\n"));
        let mut d = LogDemux::default();
        let mut got = Vec::new();
        // Feed it a byte at a time: frame and line boundaries fall anywhere.
        for b in &all {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(
            got,
            vec![
                (LogStream::Stdout, "hello".to_string()),
                (LogStream::Stderr, "oops".to_string()),
                (LogStream::Stdout, "world".to_string()),
            ]
        );
        assert!(d.finish().is_empty());
        let mut d = LogDemux::default();
        assert!(d.push(&frame(1, "no newline")).is_empty());
        assert_eq!(
            d.finish(),
            vec![(LogStream::Stdout, "no newline".to_string())]
        );
    }

    #[test]
    fn demux_never_buffers_a_whole_frame_or_line() {
        use crate::provider::shared::MAX_LINE_BYTES;
        let mut d = LogDemux::default();
        let payload = vec![b'y'; 5 << 20];
        let mut all = vec![1, 0, 0, 0];
        all.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        all.extend_from_slice(&payload);
        all.extend(frame(1, "\nnext\n"));
        let mut got = Vec::new();
        for chunk in all.chunks(32 << 10) {
            got.extend(d.push(chunk));
        }
        assert_eq!(got.len(), 2);
        let cut = (5 << 20) - MAX_LINE_BYTES;
        assert!(
            got[0].1.ends_with(&format!(" [... {cut} bytes cut]")),
            "{}",
            &got[0].1[MAX_LINE_BYTES..]
        );
        assert_eq!(
            got[0].1.len(),
            MAX_LINE_BYTES + format!(" [... {cut} bytes cut]").len()
        );
        assert_eq!(got[1], (LogStream::Stdout, "next".to_string()));
    }

    #[test]
    fn demux_takes_raw_tty_output_as_stdout() {
        let mut d = LogDemux::default();
        assert_eq!(
            d.push(b"plain text\nmore"),
            vec![(LogStream::Stdout, "plain text".to_string())]
        );
    }

    #[test]
    fn encoding_and_tags() {
        assert_eq!(encode("a b/c={\"x\"}"), "a%20b%2Fc%3D%7B%22x%22%7D");
        assert_eq!(
            split_tag("nanofaas/python:1.2"),
            ("nanofaas/python", Some("1.2"))
        );
        assert_eq!(
            split_tag("localhost:5000/img"),
            ("localhost:5000/img", None)
        );
        assert_eq!(
            split_tag("localhost:5000/img:v1"),
            ("localhost:5000/img", Some("v1"))
        );
        assert_eq!(split_tag("img@sha256:abc"), ("img@sha256:abc", None));
    }
}
