//! The completion callback: `POST {url}/{executionId}:complete` with
//! `{"success", "output", "error"}`, `X-Trace-Id`, `traceparent` and `X-Callback-Token`, retried a few times.
//!
//! Owns parsing callback URLs, building the target, one HTTP/1.1 exchange per attempt and the
//! retry policy. It never fails the invocation: the caller logs what [`Sender::send`] reports.
//! Plain `http://` only: a TLS stack would cost more build time and binary size than this
//! runtime is worth, and callbacks go to the control plane on a private network.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use nanofaas_api::backoff::Backoff;
use nanofaas_api::headers;
use std::time::Duration;
use tokio::net::TcpStream;

/// A parsed callback base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    authority: String,
    /// The base path without trailing slashes (may be empty).
    path: String,
}

impl Target {
    /// Accepts `http://host[:port][/path]`, no query or fragment.
    pub fn parse(base: &str) -> Result<Target, String> {
        let uri: Uri = base
            .trim()
            .parse()
            .map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{base:?}: https callbacks are not supported by the Rust runtime (use http://)"
                ))
            }
            _ => return Err(format!("{base:?} is not an http:// URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{base:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{base:?}: user information is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{base:?} has no host"));
        }
        if uri.query().is_some() || base.contains('#') {
            return Err(format!("{base:?}: a query or fragment is not allowed"));
        }
        Ok(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Path and query of `{base}/{executionId}:complete`, the id percent-encoded.
    pub fn path_for(&self, execution_id: &str) -> String {
        format!("{}/{}:complete", self.path, percent_encode(execution_id))
    }
}

/// Percent-encodes everything but ASCII letters, digits and `-._~`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a callback for a successful invocation, around output bytes that are already
/// JSON (no re-serialisation).
pub fn success_body(output: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(output.len() + 40);
    v.extend_from_slice(br#"{"success":true,"output":"#);
    v.extend_from_slice(output);
    v.extend_from_slice(br#","error":null}"#);
    Bytes::from(v)
}

/// The body of a callback for a failed invocation.
pub fn failure_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({
        "success": false,
        "output": null,
        "error": {"code": code, "message": message},
    });
    Bytes::from(body.to_string())
}

/// Retry policy of callbacks.
#[derive(Debug, Clone)]
pub struct Sender {
    pub attempts: u32,
    pub timeout: Duration,
    pub backoff: Duration,
}

enum Attempt {
    Delivered,
    Retry(String),
    Final(String),
}

impl Sender {
    /// Posts `body` until it is accepted (2xx), a final answer comes (a 4xx other than 408 and
    /// 429), or the attempts run out. `Err` says what happened on the last attempt.
    pub async fn send(
        &self,
        target: &Target,
        execution_id: &str,
        body: Bytes,
        trace_id: Option<&str>,
        traceparent: Option<&str>,
        token: Option<&str>,
    ) -> Result<(), String> {
        let path = target.path_for(execution_id);
        // Doubling with no ceiling but the attempts' count (at most 10).
        let waits = Backoff::new(self.backoff, Duration::MAX);
        let mut last = String::new();
        for n in 1..=self.attempts.max(1) {
            if n > 1 {
                tokio::time::sleep(waits.delay(n - 1)).await;
            }
            let once = post_once(target, &path, body.clone(), trace_id, traceparent, token);
            match tokio::time::timeout(self.timeout, once).await {
                Ok(Attempt::Delivered) => return Ok(()),
                Ok(Attempt::Final(why)) => {
                    return Err(format!("attempt {n}: {why} (not retried)"));
                }
                Ok(Attempt::Retry(why)) => last = why,
                Err(_) => {
                    last = format!("no answer within {} ms", self.timeout.as_millis());
                }
            }
        }
        Err(format!(
            "{} attempt(s) failed; the last: {last}",
            self.attempts.max(1)
        ))
    }
}

async fn post_once(
    target: &Target,
    path: &str,
    body: Bytes,
    trace_id: Option<&str>,
    traceparent: Option<&str>,
    token: Option<&str>,
) -> Attempt {
    let url = format!("http://{}{path}", target.authority);
    let stream = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(s) => s,
        Err(e) => return Attempt::Retry(format!("cannot connect to {url}: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return Attempt::Retry(format!("{url}: {e}")),
    };
    // Aborted when this attempt ends or is abandoned by the timeout.
    let _driver = AbortOnDrop(tokio::spawn(conn));
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(e) => return Attempt::Final(format!("bad callback path {path:?}: {e}")),
    };
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&target.authority) {
        h.insert(HOST, v);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        (headers::TRACE_ID, trace_id),
        (headers::TRACEPARENT, traceparent),
        (headers::CALLBACK_TOKEN, token),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    let outcome = match send.send_request(req).await {
        Err(e) => Attempt::Retry(format!("{url}: {e}")),
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Attempt::Delivered
            } else if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
                Attempt::Retry(format!("{url} answered {status}"))
            } else {
                Attempt::Final(format!("{url} answered {status}"))
            }
        }
    };
    outcome
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanofaas_testkit::{CallbackSink, SinkConfig};

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:9000/v1/internal/executions/").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 9000);
        assert_eq!(t.path_for("e-1"), "/v1/internal/executions/e-1:complete");
        let t = Target::parse("http://cp").unwrap();
        assert_eq!(
            (t.port, t.path_for("a b/c")),
            (80, "/a%20b%2Fc:complete".into())
        );
        let t = Target::parse("http://[::1]:81/cb").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 81));
        for bad in [
            "",
            "cp:8080",
            "ftp://cp/",
            "https://cp/",
            "http://cp/?a=1",
            "http://u:p@cp/",
            "http://cp/#x",
            "/path",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn encoding_and_bodies() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("é?#%"), "%C3%A9%3F%23%25");
        let ok: serde_json::Value = serde_json::from_slice(&success_body(br#"{"a":1}"#)).unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"success": true, "output": {"a": 1}, "error": null})
        );
        let err: serde_json::Value =
            serde_json::from_slice(&failure_body("HANDLER_ERROR", "boom \"x\"")).unwrap();
        assert_eq!(
            err,
            serde_json::json!({"success": false, "output": null,
                "error": {"code": "HANDLER_ERROR", "message": "boom \"x\""}})
        );
    }

    fn sender(attempts: u32) -> Sender {
        Sender {
            attempts,
            timeout: Duration::from_millis(500),
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn delivers_with_headers() {
        let sink = CallbackSink::start().await;
        let t = Target::parse(&format!("{}/cb/", sink.url())).unwrap();
        sender(3)
            .send(
                &t,
                "e-1",
                success_body(b"7"),
                Some("t-1"),
                None,
                Some("tok"),
            )
            .await
            .unwrap();
        let r = sink.requests();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].method.as_str(), r[0].path.as_str()),
            ("POST", "/cb/e-1:complete")
        );
        assert_eq!(r[0].header("x-trace-id"), Some("t-1"));
        assert_eq!(r[0].header("x-callback-token"), Some("tok"));
        assert_eq!(r[0].header("content-type"), Some("application/json"));
        assert_eq!(r[0].json()["output"], 7);
    }

    #[tokio::test]
    async fn retries_5xx_then_delivers_and_gives_up_after_attempts() {
        let sink = CallbackSink::start_with(SinkConfig {
            fail_first: 2,
            ..SinkConfig::default()
        })
        .await;
        let t = Target::parse(&sink.url()).unwrap();
        sender(3)
            .send(&t, "e", success_body(b"1"), None, None, None)
            .await
            .unwrap();
        assert_eq!(sink.requests().len(), 3);
        assert!(sink.requests()[0].header("x-trace-id").is_none());

        let sink = CallbackSink::start_with(SinkConfig {
            fail_first: 10,
            fail_status: 429,
            ..SinkConfig::default()
        })
        .await;
        let t = Target::parse(&sink.url()).unwrap();
        let e = sender(2)
            .send(&t, "e", success_body(b"1"), None, None, None)
            .await
            .unwrap_err();
        assert!(e.contains("2 attempt(s)") && e.contains("429"), "{e}");
        assert_eq!(sink.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_4xx_is_final() {
        let sink = CallbackSink::start_with(SinkConfig {
            status: 403,
            ..SinkConfig::default()
        })
        .await;
        let t = Target::parse(&sink.url()).unwrap();
        let e = sender(3)
            .send(&t, "e", success_body(b"1"), None, None, None)
            .await
            .unwrap_err();
        assert!(e.contains("403") && e.contains("not retried"), "{e}");
        assert_eq!(sink.requests().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_and_timeouts_are_retried() {
        let port = nanofaas_testkit::free_port();
        let t = Target::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = sender(2)
            .send(&t, "e", success_body(b"1"), None, None, None)
            .await
            .unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");

        let sink = CallbackSink::start_with(SinkConfig {
            delay: Some(Duration::from_secs(5)),
            ..SinkConfig::default()
        })
        .await;
        let t = Target::parse(&sink.url()).unwrap();
        let s = Sender {
            attempts: 2,
            timeout: Duration::from_millis(50),
            backoff: Duration::from_millis(1),
        };
        let e = s
            .send(&t, "e", success_body(b"1"), None, None, None)
            .await
            .unwrap_err();
        assert!(e.contains("no answer within 50 ms"), "{e}");
        assert_eq!(sink.wait_for(2, Duration::from_secs(2)).await.len(), 2);
    }
}
