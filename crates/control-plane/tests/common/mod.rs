//! Shared helpers of the control plane's integration tests: an in-process control plane on a
//! loopback port, and a scriptable endpoint that records what it receives.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nanofaas_control_plane::{Config, ServerHandle};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub use nanofaas_testkit::http;

pub mod docker;

pub const SECRET: &str = "test-secret";

pub fn config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        callback_secret: SECRET.into(),
        ..Config::default()
    };
    c.admission.retry_backoff_ms = 5;
    c.admission.retry_backoff_max_ms = 20;
    c.shutdown_grace_ms = 5000;
    c.state_dir = String::new();
    c.provider.kind = nanofaas_control_plane::config::ProviderKind::None;
    c
}

/// A fresh, empty folder for one test's state.
pub fn temp_state_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nanofaas-cp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Cp {
    pub handle: Option<ServerHandle>,
    pub base: String,
}

impl Cp {
    pub async fn start(cfg: Config) -> Cp {
        let handle = nanofaas_control_plane::start(cfg)
            .await
            .expect("control plane starts");
        let base = format!("http://{}", handle.addr);
        Cp {
            handle: Some(handle),
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> nanofaas_testkit::client::Response {
        http("POST", &self.url(path), &[], body.to_string())
            .await
            .unwrap()
    }

    pub async fn post_h(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> nanofaas_testkit::client::Response {
        http("POST", &self.url(path), headers, body.to_string())
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> nanofaas_testkit::client::Response {
        http("GET", &self.url(path), &[], Bytes::new())
            .await
            .unwrap()
    }

    pub async fn register_pool(&self, name: &str, endpoint: &str, extra: Value) -> Value {
        let mut spec = json!({"name": name, "executionMode": "POOL", "endpointUrl": endpoint});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let r = self.post("/v1/functions", spec).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text()
    }

    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

/// What the endpoint saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// The endpoint's answer to one request.
pub enum Reply {
    Json(u16, Value),
    /// Wait, then answer.
    After(Duration, u16, Value),
    /// Close the connection without answering.
    Drop,
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A scriptable endpoint speaking the runtime contract: records requests, counts the peak of
/// concurrent ones, and answers what `script(request, n)` says (n = 1-based request number).
pub struct Endpoint {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    pub async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let peak = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (s2, p2) = (seen.clone(), peak.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, peak, live, script) =
                    (s2.clone(), p2.clone(), live.clone(), script.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, peak, live, script) =
                            (seen.clone(), peak.clone(), live.clone(), script.clone());
                        async move {
                            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let s = Seen { headers, body };
                            let n = {
                                let mut v = seen.lock().unwrap();
                                v.push(s.clone());
                                v.len()
                            };
                            let reply = script(&s, n);
                            let out = match reply {
                                Reply::Json(st, v) => Ok(resp(st, v)),
                                Reply::After(d, st, v) => {
                                    tokio::time::sleep(d).await;
                                    Ok(resp(st, v))
                                }
                                Reply::Drop => Err("drop"),
                            };
                            live.fetch_sub(1, Ordering::SeqCst);
                            out
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Endpoint {
            addr,
            seen,
            peak,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/invoke", self.addr)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resp(status: u16, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// An endpoint that echoes `{"echo": input, "attempt": n}`.
pub async fn echo_endpoint() -> Endpoint {
    Endpoint::start(|s, _| {
        Reply::Json(
            200,
            json!({"echo": s.body["input"], "attempt": s.header("x-dispatch-attempt")}),
        )
    })
    .await
}

/// Value of the sample `name{labels}` in a Prometheus text page.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub async fn wait_status(cp: &Cp, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = cp.get(&format!("/v1/executions/{id}")).await.json();
        if v["status"] == status || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
