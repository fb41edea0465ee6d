//! Helpers of the fake's own tests: a fake on loopback, JSON calls, and a watch reader that
//! waits for events (bounded) instead of polling.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nanofaas_kube_fake::{Containers, FakeApi, Options};
use nanofaas_testkit::http;
use serde_json::{json, Value};
use std::time::Duration;

/// A fake with fake containers and quick timings.
pub async fn fake() -> FakeApi {
    fake_with(|_| {}).await
}

pub async fn fake_with(f: impl FnOnce(&mut Options)) -> FakeApi {
    let mut o = Options {
        containers: Containers::Fake,
        fake_ready_delay: Duration::from_millis(10),
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        node_lost_delay: Duration::from_millis(50),
        ..Options::default()
    };
    f(&mut o);
    FakeApi::start(o).await.expect("start the fake")
}

pub async fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    let r = http(method, url, &[], b)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

pub fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "example/image:1"}]}})
}

pub async fn create(base: &str, ns: &str, p: &Value) -> Value {
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/namespaces/{ns}/pods"),
        Some(p),
    )
    .await;
    assert_eq!(code, 201, "create: {v}");
    v
}

pub fn rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .expect("resourceVersion")
}

/// An open watch stream.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    _conn: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Opens `GET url` (a `?watch=true` URL) and checks it answers 200.
    pub async fn open(url: &str) -> Watch {
        let uri: hyper::Uri = url.parse().expect("uri");
        let addr = format!(
            "{}:{}",
            uri.host().expect("host"),
            uri.port_u16().expect("port")
        );
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let req = hyper::Request::get(path)
            .header("host", addr)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("send watch");
        assert_eq!(resp.status(), 200, "watch {url}");
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
            _conn: conn,
        }
    }

    /// The next event, `None` when the stream ended; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.try_next(timeout)
            .await
            .unwrap_or_else(|| panic!("no watch event within {timeout:?}"))
    }

    /// The next event (`Some(None)` at the stream's end), `None` after `timeout`.
    async fn try_next(&mut self, timeout: Duration) -> Option<Option<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(Some(
                    serde_json::from_slice(&line).expect("a watch line is JSON"),
                ));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()?;
            match frame {
                None => return Some(None),
                Some(Err(e)) => panic!("watch stream: {e}"),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// Skips events until one matches; panics after `timeout` (showing the last events seen)
    /// or at the stream's end.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Vec<Value> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(ev) = self.try_next(left).await else {
                let shown: Vec<String> = last
                    .iter()
                    .map(|e| {
                        let mut s = e.to_string();
                        s.truncate(1500);
                        s
                    })
                    .collect();
                panic!(
                    "the expected watch event did not come within {timeout:?}; the last ones:\n{}",
                    shown.join("\n")
                );
            };
            let ev = ev.expect("the watch ended before the expected event");
            if pred(&ev) {
                return ev;
            }
            last.push(ev);
            if last.len() > 3 {
                last.remove(0);
            }
        }
    }
}

pub fn is(ev: &Value, typ: &str, name: &str) -> bool {
    ev["type"] == typ && ev.pointer("/object/metadata/name").and_then(Value::as_str) == Some(name)
}

pub fn ready(obj: &Value) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub const T: Duration = Duration::from_secs(10);

/// `GET url` read as a stream until it ends or `timeout` passes: the status, the text so far,
/// and whether it ended (a `false` means it was still open at `timeout`).
pub async fn read_stream(url: &str, timeout: Duration) -> (u16, String, bool) {
    let uri: hyper::Uri = url.parse().expect("uri");
    let addr = format!(
        "{}:{}",
        uri.host().expect("host"),
        uri.port_u16().expect("port")
    );
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let req = hyper::Request::get(path)
        .header("host", addr)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let ended = loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => break false,
            Ok(None) => break true,
            Ok(Some(Err(e))) => panic!("stream {url}: {e}"),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    text.extend_from_slice(&d);
                }
            }
        }
    };
    conn.abort();
    (status, String::from_utf8_lossy(&text).into_owned(), ended)
}
