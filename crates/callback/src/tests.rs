//! The sender against a real loopback server that misbehaves on purpose, counting the
//! connections and requests it receives so that a missing or extra attempt fails a test.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the server does with the n-th request it reads (the last act repeats).
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Answers with this status and a short body.
    Status(u16),
    /// Starts a 200 answer and closes the connection in the middle of its body.
    CloseMidAnswer,
    /// Never answers (holds the connection until the client goes).
    Silent,
}

#[derive(Debug)]
struct Got {
    head: String,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

enum Event {
    Request(Got),
    /// The marker connection of [`Server::settle`], with the number of connections accepted
    /// before it.
    Marker(usize),
}

struct Server {
    addr: std::net::SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
    requests: Vec<Got>,
}

const MARKER: &[u8] = b"MARKER / HTTP/1.1\r\n\r\n";

impl Server {
    async fn start(script: &[Act]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let script: Arc<Vec<Act>> = Arc::new(script.to_vec());
        let served = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let before = accepted;
                accepted += 1;
                let (tx, script, served) = (tx.clone(), script.clone(), served.clone());
                tokio::spawn(serve(stream, before, tx, script, served));
            }
        });
        Server {
            addr,
            events,
            requests: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Once the client is done: the connections it opened (every one accepted before a marker
    /// connection made now, accepts being in order), after the server has read all their
    /// requests. Bounded: fails after 10 s.
    async fn settle(&mut self) -> usize {
        let mut marker = TcpStream::connect(self.addr).await.unwrap();
        marker.write_all(MARKER).await.unwrap();
        let within = Duration::from_secs(10);
        let connections = loop {
            match tokio::time::timeout(within, self.events.recv()).await {
                Ok(Some(Event::Marker(n))) => break n,
                Ok(Some(Event::Request(g))) => self.requests.push(g),
                other => panic!("no marker: {:?}", other.is_ok()),
            }
        };
        // Every connection of the client carried one whole request (written before the client
        // waited for its answer).
        while self.requests.len() < connections {
            match tokio::time::timeout(within, self.events.recv()).await {
                Ok(Some(Event::Request(g))) => self.requests.push(g),
                _ => panic!(
                    "{connections} connections but {} requests",
                    self.requests.len()
                ),
            }
        }
        assert_eq!(
            self.requests.len(),
            connections,
            "one request per connection"
        );
        connections
    }
}

async fn serve(
    mut stream: TcpStream,
    before: usize,
    tx: mpsc::UnboundedSender<Event>,
    script: Arc<Vec<Act>>,
    served: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if buf.starts_with(MARKER) {
        let _ = tx.send(Event::Marker(before));
        return;
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let got = Got {
        head,
        body: Vec::new(),
    };
    let len: usize = got
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let got = Got {
        body: buf[head_end..head_end + len].to_vec(),
        ..got
    };
    let n = served.fetch_add(1, Ordering::SeqCst);
    let act = script[n.min(script.len() - 1)];
    let _ = tx.send(Event::Request(got));
    match act {
        Act::Status(status) => {
            let answer = if status == 204 {
                "HTTP/1.1 204 X\r\nconnection: close\r\n\r\n".to_string()
            } else {
                format!("HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope")
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        Act::CloseMidAnswer => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"par")
                .await;
        }
        Act::Silent => {
            // Until the client closes (its attempt timed out).
            let mut sink = [0u8; 64];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

fn policy(max_attempts: u32, attempt_timeout: Duration) -> Policy {
    Policy {
        max_attempts,
        attempt_timeout,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

fn sender(max_attempts: u32) -> Sender {
    Sender::new(policy(max_attempts, Duration::from_secs(5)))
}

async fn send_to(server: &Server, sender: &Sender) -> Result<u32, String> {
    let t = Target::parse(&server.url()).unwrap();
    sender
        .send(&t, "e-1", Meta::default(), success_body(b"1"))
        .await
}

#[tokio::test]
async fn delivers_once_with_path_headers_and_body() {
    let mut s = Server::start(&[Act::Status(204)]).await;
    let t = Target::parse(&format!("{}/v1/internal/executions/", s.url())).unwrap();
    let meta = Meta {
        trace_id: Some("t-1"),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        token: Some("tok"),
    };
    let used = sender(3)
        .send(&t, "e 1", meta, success_body(br#"{"a":1}"#))
        .await;
    assert_eq!(used, Ok(1));
    assert_eq!(s.settle().await, 1);
    let r = &s.requests[0];
    assert_eq!(
        r.request_line(),
        "POST /v1/internal/executions/e%201:complete HTTP/1.1"
    );
    assert_eq!(r.header("host"), Some(s.addr.to_string().as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-trace-id"), Some("t-1"));
    assert_eq!(r.header("traceparent"), meta.traceparent);
    assert_eq!(r.header("x-callback-token"), Some("tok"));
    assert_eq!(r.body, br#"{"success":true,"output":{"a":1},"error":null}"#);
}

#[tokio::test]
async fn a_header_value_that_cannot_be_sent_is_left_out() {
    let mut s = Server::start(&[Act::Status(200)]).await;
    let t = Target::parse(&s.url()).unwrap();
    let meta = Meta {
        trace_id: Some("t\r\nx-evil: 1"),
        traceparent: None,
        token: Some("tok"),
    };
    assert_eq!(
        sender(1).send(&t, "e", meta, success_body(b"1")).await,
        Ok(1)
    );
    assert_eq!(s.settle().await, 1);
    let r = &s.requests[0];
    assert_eq!(r.header("x-trace-id"), None);
    assert_eq!(r.header("x-evil"), None);
    assert_eq!(r.header("traceparent"), None);
    assert_eq!(r.header("x-callback-token"), Some("tok"));
}

#[tokio::test]
async fn a_500_then_a_200_is_delivered_on_the_second_attempt() {
    let mut s = Server::start(&[Act::Status(500), Act::Status(200)]).await;
    let mut retried = Vec::new();
    let t = Target::parse(&s.url()).unwrap();
    let used = sender(5)
        .send_observed(&t, "e", Meta::default(), success_body(b"1"), |n, why| {
            retried.push((n, why.to_string()))
        })
        .await;
    assert_eq!(used, Ok(2));
    assert_eq!(s.settle().await, 2, "one retry, no more");
    assert_eq!(retried.len(), 1);
    assert!(
        retried[0].0 == 1
            && retried[0]
                .1
                .contains("answered 500 Internal Server Error: nope"),
        "{retried:?}"
    );
    assert_eq!(s.requests[0].body, s.requests[1].body);
}

#[tokio::test]
async fn a_connection_closed_mid_answer_is_retried() {
    let mut s = Server::start(&[Act::CloseMidAnswer, Act::Status(204)]).await;
    assert_eq!(send_to(&s, &sender(3)).await, Ok(2));
    assert_eq!(s.settle().await, 2);
}

#[tokio::test]
async fn a_silent_server_times_out_each_attempt() {
    let mut s = Server::start(&[Act::Silent]).await;
    let sender = Sender::new(policy(2, Duration::from_millis(100)));
    let started = tokio::time::Instant::now();
    let e = send_to(&s, &sender).await.unwrap_err();
    assert!(
        e.contains("gave up after 2 attempts") && e.contains("no answer within 100 ms"),
        "{e}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "per attempt"
    );
    assert_eq!(s.settle().await, 2);
}

#[tokio::test]
async fn a_400_is_final() {
    let mut s = Server::start(&[Act::Status(400), Act::Status(200)]).await;
    let e = send_to(&s, &sender(3)).await.unwrap_err();
    assert!(
        e.contains("answered 400 Bad Request: nope") && e.contains("not retried"),
        "{e}"
    );
    assert_eq!(s.settle().await, 1, "not retried");
}

#[tokio::test]
async fn retryable_answers_are_tried_exactly_max_attempts_times() {
    for status in [408, 429, 503] {
        let mut s = Server::start(&[Act::Status(status)]).await;
        let e = send_to(&s, &sender(3)).await.unwrap_err();
        assert!(
            e.contains("gave up after 3 attempts") && e.contains(&format!("answered {status}")),
            "{e}"
        );
        assert_eq!(s.settle().await, 3, "{status}");
    }
    // 0 attempts count as 1.
    let mut s = Server::start(&[Act::Status(503)]).await;
    assert!(send_to(&s, &sender(0)).await.is_err());
    assert_eq!(s.settle().await, 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Target::parse(&format!("http://127.0.0.1:{port}/cb")).unwrap();
    let mut failed = 0;
    let e = sender(2)
        .send_observed(&t, "e", Meta::default(), success_body(b"1"), |_, _| {
            failed += 1
        })
        .await
        .unwrap_err();
    assert!(
        e.contains("gave up after 2 attempts") && e.contains("cannot connect to"),
        "{e}"
    );
    assert_eq!(failed, 2);
}

#[test]
fn verdicts() {
    for s in [200, 201, 202, 204, 299] {
        assert_eq!(classify(s), Verdict::Delivered, "{s}");
    }
    for s in [408, 429, 500, 502, 503, 504, 599] {
        assert_eq!(classify(s), Verdict::Retry, "{s}");
    }
    for s in [100, 301, 304, 400, 401, 403, 404, 409, 410, 413, 422, 600] {
        assert_eq!(classify(s), Verdict::Final, "{s}");
    }
}

#[test]
fn backoff_doubles_and_caps() {
    let p = Policy {
        max_attempts: 5,
        attempt_timeout: Duration::from_secs(1),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };
    let ms: Vec<u128> = (2..=7).map(|a| p.backoff(a).as_millis()).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 2000]);
    let uncapped = Policy {
        max_backoff: Duration::MAX,
        ..p
    };
    assert_eq!(uncapped.backoff(11), Duration::from_millis(51_200));
}

#[test]
fn targets_and_paths() {
    let t = Target::parse("http://127.0.0.1:9000/v1/internal/executions/").unwrap();
    assert_eq!(t.authority(), "127.0.0.1:9000");
    assert_eq!(t.path_for("e-1"), "/v1/internal/executions/e-1:complete");
    let t = Target::parse("http://cp").unwrap();
    assert_eq!(t.path_for("a b/c"), "/a%20b%2Fc:complete");
    assert_eq!(Target::parse("http://cp/").unwrap(), t);
    let t = Target::parse("http://[::1]:81/cb").unwrap();
    assert_eq!(t.path_for("e"), "/cb/e:complete");
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
    let t = Target::new("cp:8080", "/").unwrap();
    assert_eq!(t.path_for("e"), "/e:complete");
    assert!(Target::new("", "/").is_err());
}

#[test]
fn ids_are_encoded_only_when_needed() {
    assert!(matches!(encode_segment("e-1.2_3~x"), Cow::Borrowed(_)));
    assert_eq!(encode_segment("a b/c?d#é%"), "a%20b%2Fc%3Fd%23%C3%A9%25");
    assert_eq!(encode_segment("a:b@c"), "a:b@c");
}

#[test]
fn bodies() {
    let v = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    assert_eq!(
        v(success_body(br#"{"a":1}"#)),
        serde_json::json!({"success": true, "output": {"a": 1}, "error": null})
    );
    assert_eq!(v(success_body(b""))["output"], serde_json::Value::Null);
    assert_eq!(
        v(failure_body("HANDLER_ERROR", "boom \"x\"")),
        serde_json::json!({"success": false, "output": null,
            "error": {"code": "HANDLER_ERROR", "message": "boom \"x\""}})
    );
    let err = ErrorBody::new(nanofaas_api::ErrorCode::Timeout, "slow");
    assert_eq!(body(&Err(err)), failure_body("TIMEOUT", "slow"));
    assert_eq!(body(&Ok(Bytes::from_static(b"7"))), success_body(b"7"));
}
