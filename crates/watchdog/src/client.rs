//! The watchdog's HTTP/1.1 client side: a keep-alive connection pool to the runtime (the hot
//! path), health probes, and single requests for callbacks.
//!
//! Built directly on `hyper::client::conn::http1` rather than a general-purpose client: the
//! runtime is one address, so a pool is a stack of idle connections behind a mutex that is
//! never held across I/O.

use crate::config::HttpUrl;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

pub type Body = Full<Bytes>;

/// Resolves a URL's host and port. IP literals and `localhost` need no resolver.
pub async fn resolve(url: &HttpUrl) -> io::Result<SocketAddr> {
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, url.port));
    }
    if url.host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), url.port));
    }
    tokio::net::lookup_host((url.host.as_str(), url.port))
        .await?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", url.host),
            )
        })
}

/// Opens one HTTP/1.1 connection (TCP_NODELAY) and spawns its driver task.
pub async fn connect<B>(addr: SocketAddr) -> io::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Why a call to the runtime failed (a non-2xx answer is not a failure here).
#[derive(Debug)]
pub enum CallError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The connection failed or was closed after the request was sent.
    Lost(String),
    /// The answer was larger than the limit.
    TooLarge(usize),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "cannot connect to the runtime: {e}"),
            CallError::Lost(e) => write!(f, "the connection to the runtime failed: {e}"),
            CallError::TooLarge(n) => write!(f, "the runtime's answer is larger than {n} bytes"),
        }
    }
}

/// Keep-alive connections to one runtime address.
pub struct Pool {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    max_body: usize,
    idle: Mutex<Vec<SendRequest<Body>>>,
}

impl Pool {
    /// A pool for `url` (already resolved to `addr`); answers larger than `max_body` fail.
    pub fn new(url: &HttpUrl, addr: SocketAddr, max_body: usize) -> Result<Pool, String> {
        let uri: Uri = url
            .path
            .parse()
            .map_err(|e| format!("bad path {:?}: {e}", url.path))?;
        let host = HeaderValue::from_str(&url.authority)
            .map_err(|e| format!("bad host {:?}: {e}", url.authority))?;
        Ok(Pool {
            addr,
            uri,
            host,
            max_body,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands an open connection (e.g. the one the health probe used) to the pool.
    pub fn put(&self, sender: SendRequest<Body>) {
        if !sender.is_closed() {
            self.idle.lock().unwrap().push(sender);
        }
    }

    fn take(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// `POST` `body` with `headers` (plus `Host`) to the pool's URL and reads the whole answer.
    ///
    /// A request that could not even be written on a reused connection (the runtime closed it
    /// while idle) is retried once on a fresh connection; anything later is [`CallError::Lost`].
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        req.headers_mut().insert(HOST, self.host.clone());
        let mut reused_first = true;
        loop {
            let (mut sender, reused) = match self.take() {
                Some(s) if reused_first => (s, true),
                _ => (connect(self.addr).await.map_err(CallError::Connect)?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let bytes = match Limited::new(body, self.max_body).collect().await {
                        Ok(c) => c.to_bytes(),
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            return Err(CallError::TooLarge(self.max_body))
                        }
                        Err(e) => return Err(CallError::Lost(e.to_string())),
                    };
                    self.put(sender);
                    return Ok((parts.status, bytes));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => {
                        req = back;
                        reused_first = false;
                    }
                    _ => return Err(CallError::Lost(e.into_error().to_string())),
                },
            }
        }
    }
}

/// One `GET` of a health URL on a new connection: `Ok` with the (reusable) connection when it
/// answers 2xx.
pub async fn probe(addr: SocketAddr, url: &HttpUrl) -> Result<SendRequest<Body>, String> {
    let mut sender = connect::<Body>(addr).await.map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(url.path.as_str())
        .header(HOST, url.authority.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(sender)
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// One request on a new connection, bounded by `timeout`; `Err` for transport failures only.
pub async fn request_once(
    url: &HttpUrl,
    method: Method,
    headers: &[(&'static str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let fut = async {
        let addr = resolve(url)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?;
        let mut sender = connect::<Full<Bytes>>(addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", url.authority))?;
        let mut req = Request::builder()
            .method(method)
            .uri(url.path.as_str())
            .header(HOST, url.authority.as_str());
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("bad request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_literals_and_localhost() {
        let u = HttpUrl::parse("http://localhost:81/x").unwrap();
        assert_eq!(resolve(&u).await.unwrap(), "127.0.0.1:81".parse().unwrap());
        let u = HttpUrl::parse("http://[::1]:82/x").unwrap();
        assert_eq!(resolve(&u).await.unwrap(), "[::1]:82".parse().unwrap());
    }

    #[tokio::test]
    async fn connect_refused_is_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/invoke")).unwrap();
        let pool = Pool::new(&url, resolve(&url).await.unwrap(), 1024).unwrap();
        match pool.post(HeaderMap::new(), Bytes::new()).await {
            Err(CallError::Connect(_)) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert!(
            request_once(&url, Method::GET, &[], Bytes::new(), Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
