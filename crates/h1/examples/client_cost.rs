//! CPU per call of the hot-path client against an inline client on hyper's
//! `client::conn::http1` (the connection polled by the calling task, no spawned connection task)
//! and hyper's usual form (a spawned connection task). One keep-alive connection, sequential
//! calls, the invocation's headers and a 57-byte body; only the client thread's CPU is counted
//! (`getrusage(RUSAGE_THREAD)`), the peer runs on another thread.
//!
//! `cargo run --release -p nanofaas-h1 --example client_cost -- [calls] [rounds] [h1|inline|spawned]`
//! (with a variant: only that one, once, for `valgrind --tool=callgrind` at two call counts).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nanofaas_h1::{Client, ClientSettings, Endpoint};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = br#"{"input":{"message":"hello","n":42},"metadata":{"k":"v1"}}"#;

fn thread_cpu_us() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut r);
        let t = |v: libc::timeval| v.tv_sec as u64 * 1_000_000 + v.tv_usec as u64;
        t(r.ru_utime) + t(r.ru_stime)
    }
}

/// A peer answering every request head with a fixed JSON answer, on its own thread.
fn peer() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        BODY.len()
                    );
                    let mut answer = answer.into_bytes();
                    answer.extend_from_slice(BODY);
                    let mut buf = vec![0u8; 8192];
                    let mut have = 0;
                    loop {
                        // One request: a head and a content-length body of BODY's size.
                        loop {
                            if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                                if have >= end + 4 + BODY.len() {
                                    buf.copy_within(end + 4 + BODY.len()..have, 0);
                                    have -= end + 4 + BODY.len();
                                    break;
                                }
                            }
                            match s.read(&mut buf[have..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => have += n,
                            }
                        }
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

async fn run_h1(addr: SocketAddr, calls: usize) -> u64 {
    let c = Client::new(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: 4,
    });
    let e = Endpoint::tcp(addr);
    let host = addr.to_string();
    let t0 = thread_cpu_us();
    for i in 0..calls {
        let id = format!("exec-{i:016}");
        let headers = [
            ("content-type", "application/json"),
            ("x-execution-id", id.as_str()),
            ("x-trace-id", id.as_str()),
            ("x-dispatch-attempt", "1"),
            ("x-timeout-ms", "30000"),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let r = c
            .send_to(
                &e,
                &host,
                "POST",
                "/invoke",
                &headers,
                BODY,
                1 << 20,
                deadline,
            )
            .await
            .unwrap();
        assert_eq!(r.body.len(), BODY.len());
    }
    thread_cpu_us() - t0
}

static X_EXECUTION_ID: HeaderName = HeaderName::from_static("x-execution-id");
static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
static X_DISPATCH_ATTEMPT: HeaderName = HeaderName::from_static("x-dispatch-attempt");
static X_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-timeout-ms");

fn hyper_request(host: &HeaderValue, id: &str) -> hyper::Request<Full<Bytes>> {
    let mut req = hyper::Request::new(Full::new(Bytes::from_static(BODY)));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = hyper::Uri::from_static("/invoke");
    let h = req.headers_mut();
    h.reserve(8);
    h.insert(HOST, host.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let id = HeaderValue::from_str(id).unwrap();
    h.insert(X_EXECUTION_ID.clone(), id.clone());
    h.insert(X_TRACE_ID.clone(), id);
    h.insert(X_DISPATCH_ATTEMPT.clone(), HeaderValue::from_static("1"));
    h.insert(X_TIMEOUT_MS.clone(), HeaderValue::from_static("30000"));
    req
}

/// Polls `fut` and the connection together until `fut` is done: the calling task drives the
/// connection, nothing is spawned.
async fn driving<C, F>(conn: &mut C, fut: F) -> F::Output
where
    C: Future + Unpin,
    F: Future,
{
    let mut fut = pin!(fut);
    let mut conn_done = false;
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if !conn_done && std::pin::Pin::new(&mut *conn).poll(cx).is_ready() {
            conn_done = true;
            // The connection ended: the request future resolves with its error now.
            return fut.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

async fn run_hyper_inline(addr: SocketAddr, calls: usize) -> u64 {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut sender, mut conn) = http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    let host = HeaderValue::from_str(&addr.to_string()).unwrap();
    let t0 = thread_cpu_us();
    for i in 0..calls {
        let id = format!("exec-{i:016}");
        let req = hyper_request(&host, &id);
        let body = driving(&mut conn, async {
            poll_fn(|cx| sender.poll_ready(cx)).await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        })
        .await;
        assert_eq!(body.len(), BODY.len());
    }
    thread_cpu_us() - t0
}

async fn run_hyper_spawned(addr: SocketAddr, calls: usize) -> u64 {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut sender, conn) = http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let host = HeaderValue::from_str(&addr.to_string()).unwrap();
    let t0 = thread_cpu_us();
    for i in 0..calls {
        let id = format!("exec-{i:016}");
        let req = hyper_request(&host, &id);
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), BODY.len());
    }
    thread_cpu_us() - t0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let addr = peer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One variant alone (for instruction counts under valgrind: run it at two call counts).
    if let Some(only) = args.next() {
        rt.block_on(async {
            match only.as_str() {
                "h1" => run_h1(addr, calls).await,
                "inline" => run_hyper_inline(addr, calls).await,
                "spawned" => run_hyper_spawned(addr, calls).await,
                other => panic!("unknown variant {other}: h1, inline or spawned"),
            }
        });
        return;
    }
    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("h1", vec![]),
        ("hyper, inline", vec![]),
        ("hyper, spawned task", vec![]),
    ];
    rt.block_on(async {
        // Warm-up.
        run_h1(addr, calls / 10).await;
        run_hyper_inline(addr, calls / 10).await;
        run_hyper_spawned(addr, calls / 10).await;
        for _ in 0..rounds {
            let us = [
                run_h1(addr, calls).await,
                run_hyper_inline(addr, calls).await,
                run_hyper_spawned(addr, calls).await,
            ];
            for (r, us) in results.iter_mut().zip(us) {
                r.1.push(us as f64 / calls as f64);
            }
        }
    });
    println!("client thread CPU per call, {calls} calls x {rounds} rounds (median, all):");
    for (name, mut v) in results {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "  {name:<20} {:.2} us   {:?}",
            v[v.len() / 2],
            v.iter()
                .map(|x| (x * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
    }
}
