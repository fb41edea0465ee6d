//! A small HTTP/1.1 client for the control plane's API, and the one place that turns an API
//! answer into a CLI error with an exit code and a hint of what to do.

use crate::exit::{err, Exit};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;
use nanofaas_api::ErrorBody;
use serde_json::Value;
use std::time::Duration;

/// The endpoint used when neither `--endpoint` nor `NANOFAAS_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// How long a request other than an invocation may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> anyhow::Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            err(
                Exit::Failure,
                format!(
                    "the server answered HTTP {} with a body that is not JSON ({e}): {}",
                    self.status,
                    String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
                ),
            )
        })
    }

    /// The `{"error": {code, message}}` of an error answer, when it has one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        serde_json::from_value(v.get("error")?.clone()).ok()
    }
}

/// The API client: one endpoint, one keep-alive connection pool.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: Hyper<HttpConnector, Full<Bytes>>,
    /// `Authorization: Bearer ...` sent with every request, when a token is given.
    auth: Option<http::HeaderValue>,
}

/// `host:port` or `http://host:port[/]` → `http://host:port`.
pub fn normalize_endpoint(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim();
    let bad = || {
        err(
            Exit::Usage,
            format!("endpoint {endpoint:?} must be http://HOST:PORT, such as {DEFAULT_ENDPOINT}"),
        )
    };
    let authority = if let Some(rest) = e.strip_prefix("http://") {
        rest
    } else if e.starts_with("https://") {
        return Err(err(
            Exit::Usage,
            format!("endpoint {endpoint:?}: https is not supported; use http:// (put a TLS proxy in front of nanofaas if needed)"),
        ));
    } else if e.contains("://") {
        return Err(bad());
    } else {
        e
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#']) {
        return Err(bad());
    }
    let url = format!("http://{authority}");
    match url.parse::<http::Uri>() {
        Ok(u) if u.host().is_some_and(|h| !h.is_empty()) => Ok(url),
        _ => Err(bad()),
    }
}

impl Client {
    pub fn new(endpoint: &str) -> anyhow::Result<Client> {
        let base = normalize_endpoint(endpoint)?;
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Hyper::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Ok(Client {
            base,
            http,
            auth: None,
        })
    }

    /// Sends `token` as a bearer token with every request (`--token`, `NANOFAAS_TOKEN`).
    pub fn with_token(mut self, token: Option<&str>) -> anyhow::Result<Client> {
        self.auth = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    err(
                        Exit::Usage,
                        "the token (--token / NANOFAAS_TOKEN) must be visible ASCII",
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(self)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads the whole answer within `timeout`. Any HTTP status is `Ok`;
    /// `Err` is a transport failure, already worded for the user (exit code 4).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder().method(method).uri(&url);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| err(Exit::Usage, format!("cannot build a request to {url}: {e}")))?;
        let work = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| self.transport(&e))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| {
                    err(
                        Exit::Unreachable,
                        format!(
                            "the connection to {} broke while reading the answer: {e}",
                            self.base
                        ),
                    )
                })?
                .to_bytes();
            Ok::<_, anyhow::Error>(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(err(
                Exit::Unreachable,
                format!(
                    "{} did not answer within {} s; is it overloaded or stuck? (check its log)",
                    self.base,
                    timeout.as_secs()
                ),
            )),
        }
    }

    fn transport(&self, e: &hyper_util::client::legacy::Error) -> anyhow::Error {
        use std::error::Error as _;
        let mut cause = e.source();
        let mut io_kind = None;
        let mut detail = e.to_string();
        while let Some(c) = cause {
            detail = c.to_string();
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                io_kind = Some(io.kind());
            }
            cause = c.source();
        }
        let what = if e.is_connect() {
            match io_kind {
                Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
                Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_string(),
                _ => detail,
            }
        } else {
            format!("the connection failed: {detail}")
        };
        err(
            Exit::Unreachable,
            format!(
                "cannot reach the control plane at {}: {what}. Is `nanofaas serve` (or `nanofaas up`) running? Point the CLI at it with --endpoint or NANOFAAS_ENDPOINT.",
                self.base
            ),
        )
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.send(Method::GET, path, &[], None, REQUEST_TIMEOUT)
            .await
    }

    /// A GET whose answer is read as it comes (server-sent events): `Ok(Ok(body))` for a 200,
    /// `Ok(Err(answer))`, read whole, for any other status.
    pub async fn get_stream(
        &self,
        path: &str,
    ) -> anyhow::Result<Result<hyper::body::Incoming, Response>> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| err(Exit::Usage, format!("cannot build a request to {url}: {e}")))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| {
                err(
                    Exit::Unreachable,
                    format!(
                        "{} did not answer within {} s",
                        self.base,
                        REQUEST_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| self.transport(&e))?;
        let (parts, body) = resp.into_parts();
        if parts.status == http::StatusCode::OK {
            return Ok(Ok(body));
        }
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Err(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }))
    }
}

/// What a failed answer was about, for wording the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Function(&'a str),
    Execution(&'a str),
    Other,
}

/// Turns a non-2xx answer into an error with the right exit code and a hint.
pub fn api_error(resp: &Response, subject: Subject<'_>) -> anyhow::Error {
    let body = resp.error_body();
    let code = body.as_ref().map(|b| b.code.as_str()).unwrap_or("");
    let message = body.as_ref().map(|b| b.message.clone()).unwrap_or_else(|| {
        String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned()
    });
    match resp.status {
        400 => err(
            Exit::Invalid,
            format!("the server refused the request as invalid: {message}"),
        ),
        404 => match subject {
            Subject::Function(name) => err(
                Exit::NotFound,
                format!("function {name:?} does not exist; `nanofaas fn list` shows the deployed functions, `nanofaas fn apply -f FILE` deploys some"),
            ),
            Subject::Execution(id) => err(
                Exit::NotFound,
                format!("execution {id:?} does not exist or has expired (finished executions are kept for executions.ttl_ms, 10 minutes by default)"),
            ),
            Subject::Other => err(Exit::NotFound, format!("not found: {message}")),
        },
        409 if code == "IDEMPOTENCY_CONFLICT" => err(
            Exit::Conflict,
            format!("{message}; use a new --idempotency-key for a different request"),
        ),
        409 => err(Exit::Conflict, format!("conflict: {message}")),
        401 => err(
            Exit::Denied,
            format!("{message}; pass a token of this control plane with --token or NANOFAAS_TOKEN (docs/security.md)"),
        ),
        403 => err(Exit::Denied, format!("not allowed: {message}")),
        415 | 421 => err(Exit::Invalid, format!("the server refused the request: {message}")),
        413 => err(
            Exit::Invalid,
            format!("{message}; send less data (the limit is the server's max_body_bytes setting)"),
        ),
        429 => {
            let after = resp.header("retry-after").unwrap_or("1");
            let reason = resp
                .header(nanofaas_api::headers::QUEUE_REJECT_REASON)
                .map(|r| format!(" (reason: {r})"))
                .unwrap_or_default();
            err(
                Exit::Backpressure,
                format!("refused by backpressure{reason}: {message}; retry after {after} s"),
            )
        }
        503 if code == "SHUTTING_DOWN" => err(
            Exit::Unreachable,
            "the control plane is shutting down and accepts no new work; retry once it is back",
        ),
        _ => err(
            Exit::Failure,
            format!(
                "the server answered HTTP {}{}: {message}",
                resp.status,
                if code.is_empty() { String::new() } else { format!(" {code}") }
            ),
        ),
    }
}

/// Path segment for a function name: names are checked client-side so that a typo cannot
/// turn into another route.
pub fn check_name(name: &str) -> anyhow::Result<&str> {
    nanofaas_api::validate_name(name)
        .map_err(|r| err(Exit::Usage, format!("function name {name:?} {r}")))?;
    Ok(name)
}

/// Execution ids are opaque; only characters that are safe in a path are sent as they are.
pub fn check_execution_id(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(
            Exit::Usage,
            format!("{id:?} is not an execution id (as printed by `nanofaas enqueue` or `nanofaas invoke`)"),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_endpoint("http://localhost:9/").unwrap(),
            "http://localhost:9"
        );
        for bad in ["https://x:1", "ftp://x", "http://", "http://a/b", "a b"] {
            let e = normalize_endpoint(bad).unwrap_err();
            assert_eq!(crate::exit::exit_of(&e), Exit::Usage, "{bad}");
        }
    }

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Response {
            status,
            headers: h,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let e = |status, headers: &[(&'static str, &str)], code: &str, subject| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let e = api_error(&resp(status, headers, &body), subject);
            (crate::exit::exit_of(&e), e.to_string())
        };
        let (x, m) = e(404, &[], "NOT_FOUND", Subject::Function("f"));
        assert_eq!(x, Exit::NotFound);
        assert!(m.contains("fn list"), "{m}");
        let (x, m) = e(404, &[], "NOT_FOUND", Subject::Execution("e1"));
        assert_eq!(x, Exit::NotFound);
        assert!(m.contains("expired"), "{m}");
        let (x, m) = e(
            429,
            &[("retry-after", "3"), ("x-queue-reject-reason", "depth")],
            "BACKPRESSURE",
            Subject::Other,
        );
        assert_eq!(x, Exit::Backpressure);
        assert!(m.contains("retry after 3 s") && m.contains("depth"), "{m}");
        assert_eq!(
            e(400, &[], "INVALID_REQUEST", Subject::Other).0,
            Exit::Invalid
        );
        assert_eq!(
            e(413, &[], "PAYLOAD_TOO_LARGE", Subject::Other).0,
            Exit::Invalid
        );
        let (x, m) = e(409, &[], "IDEMPOTENCY_CONFLICT", Subject::Other);
        assert_eq!(x, Exit::Conflict);
        assert!(m.contains("new --idempotency-key"), "{m}");
        assert_eq!(
            e(409, &[], "ALREADY_EXISTS", Subject::Other).0,
            Exit::Conflict
        );
        assert_eq!(
            e(503, &[], "SHUTTING_DOWN", Subject::Other).0,
            Exit::Unreachable
        );
        assert_eq!(e(500, &[], "INTERNAL", Subject::Other).0, Exit::Failure);
    }

    #[test]
    fn names_and_ids() {
        assert!(check_name("hello-python").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_execution_id("01J9-abc_d.e").is_ok());
        assert!(check_execution_id("../x").is_err());
        assert!(check_execution_id("").is_err());
    }
}
