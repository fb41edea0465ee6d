//! The HTTP side of the runtime contract: `GET /health` and `POST /invoke` on one listener (and
//! on the Unix socket the watchdog offers in `NANOFAAS_RUNTIME_SOCKET`, if any),
//! keep-alive HTTP/1.1, and a graceful stop that lets in-flight invocations finish.
//!
//! Owns where an invocation's execution id, trace id and callback settings come from (header,
//! else the environment), parsing the body, and turning an [`Outcome`] into the answer and the
//! callback. The callback is posted before the answer is sent, as the Python runtime does, so a
//! caller that has its answer knows the callback was attempted.

use crate::callback::{self, Meta, Policy, Sender, Target};
use crate::handler::{Handler, Outcome, Request};
use crate::log;
use crate::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nanofaas_api::log_limit::LogLimiter;
use nanofaas_api::{headers, ErrorCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

static HANDLER_ERRORS: Mutex<LogLimiter> = Mutex::new(LogLimiter::new(10, Duration::from_secs(10)));
static CALLBACK_FAILURES: Mutex<LogLimiter> =
    Mutex::new(LogLimiter::new(10, Duration::from_secs(10)));

/// Why the server could not listen.
#[derive(Debug)]
pub struct BindError {
    pub host: String,
    pub port: u16,
    pub source: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot listen on {}:{} (HOST/PORT): {}",
            self.host, self.port, self.source
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

struct App {
    handler: Handler,
    config: Config,
    env_callback: Option<Target>,
    sender: Sender,
}

/// A bound runtime server. [`Server::run`] serves until the shutdown future resolves.
pub struct Server {
    listener: TcpListener,
    /// The offered Unix socket, when it could be bound.
    unix: Option<tokio::net::UnixListener>,
    addr: SocketAddr,
    app: Arc<App>,
}

impl Server {
    /// Binds `config.host:config.port` (port 0 picks a free one).
    pub async fn bind(config: Config, handler: Handler) -> Result<Server, BindError> {
        let bind_err = |source| BindError {
            host: config.host.clone(),
            port: config.port,
            source,
        };
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        // Optional: the watchdog reaches the runtime on its port when this fails.
        let unix = config.socket.as_deref().and_then(|socket| {
            let path = match socket.strip_prefix('@') {
                Some(name) => format!("\0{name}"),
                None => socket.to_string(),
            };
            match tokio::net::UnixListener::bind(&path) {
                Ok(l) => Some(l),
                Err(e) => {
                    log::log_warn!(
                        "cannot listen on NANOFAAS_RUNTIME_SOCKET {socket:?}: {e}; serving on the port only"
                    );
                    None
                }
            }
        });
        // Checked by `Config::from_lookup`; a config built by hand with a bad URL sends none.
        let env_callback = config
            .callback_url
            .as_deref()
            .and_then(|u| Target::parse(u).ok());
        let sender = Sender::new(Policy {
            max_attempts: config.callback_attempts,
            attempt_timeout: config.callback_timeout,
            first_backoff: config.callback_backoff,
            // Doubling with no ceiling but the attempts' count (at most 10).
            max_backoff: Duration::MAX,
        });
        Ok(Server {
            listener,
            unix,
            addr,
            app: Arc::new(App {
                handler,
                config,
                env_callback,
                sender,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Unix socket served besides the port, if one was offered and bound.
    pub fn socket(&self) -> Option<&str> {
        self.unix.as_ref().and(self.app.config.socket.as_deref())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight invocations
    /// finish (at most `config.shutdown_grace`), closes idle connections and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            unix,
            app,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of file descriptors and the like: do not spin.
                            log::log_warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, app.clone(), stop_rx.clone()));
                }
                accepted = accept_unix(unix.as_ref()) => {
                    match accepted {
                        Ok(stream) => {
                            conns.spawn(serve_connection(stream, app.clone(), stop_rx.clone()));
                        }
                        Err(e) => {
                            log::log_warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        drop(unix);
        let _ = stop_tx.send(true);
        let grace = app.config.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            log::log_warn!(
                "{} connection(s) still busy after SHUTDOWN_GRACE_MS={}; stopping anyway",
                conns.len(),
                grace.as_millis()
            );
            conns.shutdown().await;
        }
    }
}

/// Serves one connection until it closes or the server stops (then gracefully).
async fn serve_connection<I>(stream: I, app: Arc<App>, mut stop: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(&app, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

async fn accept_unix(
    l: Option<&tokio::net::UnixListener>,
) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_json(code: ErrorCode, message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string(),
    )
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> Answer {
    json(status, error_json(code, message))
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        &format!("method not allowed; allowed: {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route(app: &App, req: hyper::Request<Incoming>) -> Answer {
    match (req.uri().path(), req.method()) {
        ("/health", &Method::GET | &Method::HEAD) => {
            json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
        }
        ("/health", _) => not_allowed("GET, HEAD"),
        ("/invoke", &Method::POST) => invoke(app, req).await,
        ("/invoke", _) => not_allowed("POST"),
        (path, _) => error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            &format!("no route {path}: the runtime serves GET /health and POST /invoke"),
        ),
    }
}

/// Where the outcome of one invocation goes besides the answer.
struct Callback {
    target: Target,
    token: Option<String>,
}

async fn invoke(app: &App, req: hyper::Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let cfg = &app.config;
    let Some(execution_id) = header(headers::EXECUTION_ID).or_else(|| cfg.execution_id.clone())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "no execution id: send the X-Execution-Id header or set the EXECUTION_ID environment variable",
        );
    };
    let trace_id = header(headers::TRACE_ID).or_else(|| cfg.trace_id.clone());
    let traceparent = header(headers::TRACEPARENT).or_else(|| cfg.traceparent.clone());
    let target = match header(headers::CALLBACK_URL) {
        Some(url) => match Target::parse(&url) {
            Ok(t) => Some(t),
            Err(e) => {
                if let Some(dropped) = log::allow(&CALLBACK_FAILURES, Instant::now()) {
                    log::log_warn!(
                        "execution {execution_id}: ignoring X-Callback-Url: {e}{}",
                        suppressed(dropped)
                    );
                }
                None
            }
        },
        None => app.env_callback.clone(),
    };
    let callback = target.map(|target| Callback {
        target,
        token: header(headers::CALLBACK_TOKEN).or_else(|| cfg.callback_token.clone()),
    });
    let finish = |status: StatusCode, body: Bytes, callback_body: Bytes| {
        let (execution_id, trace_id, traceparent) =
            (execution_id.clone(), trace_id.clone(), traceparent.clone());
        let callback = &callback;
        async move {
            if let Some(cb) = callback {
                let sent = app
                    .sender
                    .send(
                        &cb.target,
                        &execution_id,
                        Meta {
                            trace_id: trace_id.as_deref(),
                            traceparent: traceparent.as_deref(),
                            token: cb.token.as_deref(),
                        },
                        callback_body,
                    )
                    .await;
                if let Err(e) = sent {
                    if let Some(dropped) = log::allow(&CALLBACK_FAILURES, Instant::now()) {
                        log::log_warn!(
                            "execution {execution_id}: callback not delivered: {e}{}",
                            suppressed(dropped)
                        );
                    }
                }
            }
            json(status, body)
        }
    };
    let reject = |status, code: ErrorCode, message: String| {
        finish(
            status,
            error_json(code, &message),
            callback::failure_body(code.as_str(), &message),
        )
    };

    let max = cfg.max_request_bytes;
    let raw = match Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than MAX_REQUEST_BYTES={max}"),
            )
            .await;
        }
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("cannot read the request body: {e}"),
            )
            .await;
        }
    };
    let (input, metadata) = match parse(&raw) {
        Ok(x) => x,
        Err(message) => {
            return reject(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message).await;
        }
    };
    let request = Request {
        input,
        metadata,
        execution_id: execution_id.clone(),
        trace_id: trace_id.clone(),
        traceparent: traceparent.clone(),
    };
    match app.handler.call(request).await {
        Outcome::Output(out) => {
            let cb = callback::success_body(&out);
            finish(StatusCode::OK, Bytes::from(out), cb).await
        }
        Outcome::Failed { code, message } => {
            if let Some(dropped) = log::allow(&HANDLER_ERRORS, Instant::now()) {
                log::log_error!(
                    "execution {execution_id} (trace {}): {code}: {message}{}",
                    trace_id.as_deref().unwrap_or("-"),
                    suppressed(dropped)
                );
            }
            reject(StatusCode::INTERNAL_SERVER_ERROR, code, message).await
        }
    }
}

fn suppressed(dropped: u64) -> String {
    if dropped == 0 {
        String::new()
    } else {
        format!(" ({dropped} similar line(s) suppressed)")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body of `/invoke`: a JSON object with optional `input` and `metadata` (an object of
/// strings). Other top-level fields are ignored.
pub fn parse(raw: &[u8]) -> Result<(Value, BTreeMap<String, String>), String> {
    const SHAPE: &str = r#"{"input": ..., "metadata": {...}}"#;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "request body is empty: expected a JSON object {SHAPE}"
        ));
    }
    let v: Value =
        serde_json::from_slice(raw).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err(format!(
            "request body must be a JSON object {SHAPE}, got {}",
            kind(&v)
        ));
    };
    let input = m.remove("input").unwrap_or(Value::Null);
    let metadata = match m.remove("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(o)) => {
            let mut out = BTreeMap::new();
            for (k, v) in o {
                match v {
                    Value::String(s) => {
                        out.insert(k, s);
                    }
                    other => {
                        return Err(format!(
                            "\"metadata\" values must be strings; {k:?} is {}",
                            kind(&other)
                        ))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(format!(
                "\"metadata\" must be a JSON object of strings, got {}",
                kind(&other)
            ))
        }
    };
    Ok((input, metadata))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn bodies() {
        let (i, m) = parse(br#"{"input": {"a": 1}, "metadata": {"k": "v"}, "other": 1}"#).unwrap();
        assert_eq!(i, json!({"a": 1}));
        assert_eq!(m["k"], "v");
        let (i, m) = parse(b"{}").unwrap();
        assert_eq!((i, m.len()), (json!(null), 0));
        let (_, m) = parse(br#"{"metadata": null}"#).unwrap();
        assert!(m.is_empty());
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"  \n", "empty"),
            (b"{", "not valid JSON"),
            (b"[1]", "got an array"),
            (b"\"x\"", "got a string"),
            (br#"{"metadata": 1}"#, "got a number"),
            (br#"{"metadata": {"k": 1}}"#, "\"k\" is a number"),
            (&[0xff, 0xfe][..], "not valid JSON"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let e = parse(format!(r#"{{"input": {deep}}}"#).as_bytes()).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
