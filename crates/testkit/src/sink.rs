//! [`CallbackSink`]: a local HTTP server that records every request it receives, for tests of
//! anything that posts callbacks (watchdog, runtimes, control plane clients).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How a [`CallbackSink`] answers.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Status of a normal answer (default 204).
    pub status: u16,
    /// The first `fail_first` requests are answered with `fail_status` (default 0).
    pub fail_first: usize,
    /// Status of the failing answers (default 503).
    pub fail_status: u16,
    /// Wait this long before answering each request (default none).
    pub delay: Option<Duration>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            status: 204,
            fail_first: 0,
            fail_status: 503,
            delay: None,
        }
    }
}

/// One request as the sink received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/e-1:complete`.
    pub path: String,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The status the sink answered with.
    pub answered: u16,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "sink request body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct State {
    config: SinkConfig,
    seen: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// An HTTP/1.1 server on 127.0.0.1 (ephemeral port) that records every request.
///
/// It runs as tasks of the current tokio runtime and stops when dropped.
pub struct CallbackSink {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl CallbackSink {
    /// Starts a sink answering 204 to everything.
    pub async fn start() -> CallbackSink {
        Self::start_with(SinkConfig::default()).await
    }

    /// Starts a sink that answers as `config` says.
    pub async fn start_with(config: SinkConfig) -> CallbackSink {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind sink on 127.0.0.1:0");
        let addr = listener.local_addr().expect("sink local_addr");
        let state = Arc::new(State {
            config,
            seen: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set so that aborting this task closes them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| handle(st.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        CallbackSink { addr, state, task }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have been recorded or `timeout` passes, and returns
    /// what was recorded (check its length).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n || Instant::now() >= deadline {
                return reqs;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for CallbackSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let n = st.seen.fetch_add(1, Ordering::SeqCst);
    let failing = n < st.config.fail_first;
    let status = if failing {
        st.config.fail_status
    } else {
        st.config.status
    };
    st.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        answered: status,
    });
    if let Some(d) = st.config.delay {
        tokio::time::sleep(d).await;
    }
    let body = if failing {
        Bytes::from_static(br#"{"error":"the sink was told to fail this request"}"#)
    } else {
        Bytes::new()
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::http;

    #[tokio::test]
    async fn records_and_fails_first_k() {
        let sink = CallbackSink::start_with(SinkConfig {
            fail_first: 2,
            ..SinkConfig::default()
        })
        .await;
        let url = format!("{}/e1:complete", sink.url());
        let mut statuses = Vec::new();
        for i in 0..3 {
            let r = http(
                "POST",
                &url,
                &[("x-trace-id", "t1")],
                format!("{{\"n\":{i}}}"),
            )
            .await
            .unwrap();
            statuses.push(r.status);
        }
        assert_eq!(statuses, [503, 503, 204]);
        let reqs = sink.wait_for(3, Duration::from_secs(1)).await;
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[2].path, "/e1:complete");
        assert_eq!(reqs[2].method, "POST");
        assert_eq!(reqs[2].header("X-Trace-Id"), Some("t1"));
        assert_eq!(reqs[2].json()["n"], 2);
        assert_eq!(reqs[0].answered, 503);
    }

    #[tokio::test]
    async fn wait_for_times_out_with_what_it_has() {
        let sink = CallbackSink::start().await;
        let start = Instant::now();
        assert!(sink.wait_for(1, Duration::from_millis(20)).await.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
