//! `echo-runtime`: the fastest trivial runtime we can write, the baseline of the benchmarks.
//!
//! `GET /health` → 200 `{"status":"ok"}`; `POST /invoke` → 200 with the request body as is.
//! Env: `PORT` (default 8080), `BIND` (default 127.0.0.1), `ECHO_THREADS` (default 1: a
//! single-threaded runtime; more: that many worker threads), `NANOFAAS_RUNTIME_SOCKET` (also
//! serve on this Unix socket, as the watchdog offers; `@name` is an abstract name),
//! `ECHO_LOG_LINES` (default 0: print this many lines on stdout per invocation, the "logging
//! function" of the benchmarks).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpListener;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| {
            eprintln!("echo-runtime: {name}={v:?} is invalid");
            std::process::exit(2);
        }),
        _ => default,
    }
}

fn main() {
    let port: u16 = env_or("PORT", 8080);
    let bind: IpAddr = env_or("BIND", IpAddr::from([127, 0, 0, 1]));
    let threads: usize = env_or("ECHO_THREADS", 1);
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = b.enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let addr = SocketAddr::new(bind, port);
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("echo-runtime: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
        eprintln!(
            "echo-runtime listening on {}",
            listener.local_addr().unwrap_or(addr)
        );
        if let Ok(socket) = std::env::var("NANOFAAS_RUNTIME_SOCKET") {
            let path = match socket.strip_prefix('@') {
                Some(name) => format!("\0{name}"),
                None => socket.clone(),
            };
            match tokio::net::UnixListener::bind(&path) {
                Ok(unix) => {
                    eprintln!("echo-runtime listening on unix:{socket}");
                    tokio::spawn(async move {
                        loop {
                            let Ok((stream, _)) = unix.accept().await else {
                                continue;
                            };
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service_fn(route))
                                    .await;
                            });
                        }
                    });
                }
                Err(e) => eprintln!("echo-runtime: cannot listen on unix:{socket}: {e}; port only"),
            }
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(route))
                    .await;
            });
        }
    });
}

fn log_lines() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| env_or("ECHO_LOG_LINES", 0))
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = HeaderValue::from_static("application/json");
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => (StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
        (&Method::POST, "/invoke") => match req.into_body().collect().await {
            Ok(c) => {
                let lines = log_lines();
                if lines > 0 {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    for i in 0..lines {
                        let _ = writeln!(out, "echo-runtime: invocation line {i}");
                    }
                    let _ = out.flush();
                }
                (StatusCode::OK, c.to_bytes())
            }
            Err(_) => (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"{\"error\":\"bad body\"}"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"not found\"}"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, json);
    Ok(resp)
}
