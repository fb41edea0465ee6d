//! A small HTTP/1.1 client for nanofaas's hot paths (control plane → instance, watchdog →
//! runtime): one request at a time per keep-alive connection,
//! driven inline by the task that sends it.
//!
//! General-purpose clients hand each request to a separate connection task through channels, so
//! every call pays two task hand-offs (often across threads). Here the calling task writes the
//! request and reads the answer itself; idle connections wait in a per-host LIFO stack. A pooled
//! connection that the peer closed while idle is noticed at checkout (a non-blocking read sees the
//! end of stream) and dropped; if one still fails before any byte of the answer arrives, the request
//! is sent once more on a fresh connection.
//!
//! A target is a TCP address or, for instances on the same machine, a Unix socket (a path, or on
//! Linux a name in the abstract namespace written with a leading `@`): a local hop then skips the
//! TCP stack (and any packet filter on loopback).
//!
//! Supports what instances and endpoints answer: `Content-Length`, chunked, and close-delimited
//! bodies, informational `1xx` answers, and `Connection: close`.

use bytes::{Buf, Bytes, BytesMut};
use http::Uri;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Limits and timeouts of the client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

/// What went wrong, apart from the answer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No connection could be made.
    Connect(String),
    /// The connection broke, or the peer spoke something that is not HTTP/1.1, before a
    /// complete answer.
    Lost(String),
    /// The answer's body is larger than the limit.
    TooLarge(usize),
    /// The URL cannot be used (no host, not http).
    BadUrl(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(m) => write!(f, "cannot connect: {m}"),
            Error::Lost(m) => write!(f, "connection lost: {m}"),
            Error::TooLarge(n) => write!(f, "answer larger than {n} bytes"),
            Error::BadUrl(m) => write!(f, "bad URL: {m}"),
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// `X-Runtime-Start-Ms` (set by the watchdog when the call waited for its runtime to start).
    pub runtime_start_ms: Option<u64>,
    /// `X-Runtime-Duration-Us` (set by the watchdog: how long its runtime took to answer).
    pub runtime_duration_us: Option<u64>,
}

/// A connection over TCP or a Unix socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_read(&self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read(b),
            Stream::Unix(s) => s.try_read(b),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

struct Idle {
    stream: Stream,
    since: Instant,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

const MAX_HEAD: usize = 64 * 1024;
/// Bodies up to this size are copied after the head so the request goes out in one write.
const COALESCE: usize = 16 * 1024;

fn authority(uri: &Uri) -> Result<(String, &str), Error> {
    if uri.scheme_str().is_some_and(|s| s != "http") {
        return Err(Error::BadUrl(format!("{uri}: only http:// is supported")));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| Error::BadUrl(format!("{uri}: no host")))?;
    let key = match auth.port_u16() {
        Some(_) => auth.as_str().to_string(),
        None => format!("{}:80", auth.host()),
    };
    Ok((key, auth.as_str()))
}

/// True when a pooled connection is still open and quiet.
fn still_open(s: &Stream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One serialised request, ready to be written on any connection to its host.
struct Request<'a> {
    key: &'a str,
    head: &'a [u8],
    body: &'a [u8],
    /// The body is already at the end of `head`.
    coalesced: bool,
    head_only: bool,
    max_body: usize,
}

/// A resolved place to send requests to: a TCP address or a Unix socket. Built once per
/// instance or runtime, so that a request does not format its idle-pool key again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    kind: EndpointKind,
    /// Key of its idle connections.
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointKind {
    Tcp(SocketAddr),
    Unix(String),
}

impl Endpoint {
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint {
            key: addr.to_string(),
            kind: EndpointKind::Tcp(addr),
        }
    }

    /// A Unix socket: a path, or `@name` for the Linux abstract namespace.
    pub fn unix(socket: &str) -> Endpoint {
        Endpoint {
            key: format!("unix:{socket}"),
            kind: EndpointKind::Unix(socket.to_string()),
        }
    }

    /// The Unix socket, if that is what it is.
    pub fn socket(&self) -> Option<&str> {
        match &self.kind {
            EndpointKind::Unix(s) => Some(s),
            EndpointKind::Tcp(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    /// `127.0.0.1:8080` or `unix:@name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// Where to connect.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// `host:port`, resolved by the system unless it is an IP literal.
    Name(&'a str),
    Addr(SocketAddr),
    /// A Unix socket path; a leading `@` names the Linux abstract namespace.
    Unix(&'a str),
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Addr(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
    None,
}

impl Client {
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn checkout(&self, key: &str) -> Option<Stream> {
        let max_age = self.inner.settings.idle_timeout;
        loop {
            let idle = self
                .inner
                .idle
                .lock()
                .unwrap()
                .get_mut(key)
                .and_then(Vec::pop)?;
            if idle.since.elapsed() < max_age && still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    fn checkin(&self, key: &str, stream: Stream) {
        let mut idle = self.inner.idle.lock().unwrap();
        // The key is copied only the first time a host's connection goes idle.
        if !idle.contains_key(key) {
            idle.insert(key.to_string(), Vec::new());
        }
        let stack = idle.get_mut(key).expect("inserted above");
        if stack.len() < self.inner.settings.max_idle_per_host {
            stack.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, target: Target<'_>) -> Result<Stream, Error> {
        let limit = self.inner.settings.connect_timeout;
        let connecting = async {
            let tcp = match target {
                Target::Name(key) => TcpStream::connect(key).await,
                Target::Addr(addr) => TcpStream::connect(addr).await,
                Target::Unix(path) => {
                    return UnixStream::connect(&*unix_path(path))
                        .await
                        .map(Stream::Unix)
                }
            }?;
            let _ = tcp.set_nodelay(true);
            Ok(Stream::Tcp(tcp))
        };
        tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| Error::Connect(format!("{target}: no answer within {limit:?}")))?
            .map_err(|e| Error::Connect(format!("{target}: {e}")))
    }

    /// Sends one request to the URL's host and reads the whole answer (at most `max_body` bytes
    /// of body). Host names other than IP literals are resolved by the system.
    pub async fn send(
        &self,
        method: &str,
        uri: &Uri,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Response, Error> {
        let (key, host) = authority(uri)?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        self.send_at(
            Target::Name(&key),
            &key,
            host,
            method,
            path,
            headers,
            body,
            max_body,
        )
        .await
    }

    /// Sends one request to `endpoint` (no name resolution), with `host` as the `Host` header.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_to(
        &self,
        endpoint: &Endpoint,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Response, Error> {
        let target = match &endpoint.kind {
            EndpointKind::Tcp(addr) => Target::Addr(*addr),
            EndpointKind::Unix(socket) => Target::Unix(socket),
        };
        self.send_at(
            target,
            &endpoint.key,
            host,
            method,
            path,
            headers,
            body,
            max_body,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_at(
        &self,
        target: Target<'_>,
        key: &str,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Response, Error> {
        let mut head = Vec::with_capacity(
            192 + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>(),
        );
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(host.as_bytes());
        head.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            head.extend_from_slice(k.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(body.len().to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let coalesced = body.len() <= COALESCE;
        if coalesced {
            head.extend_from_slice(body);
        }
        let head_only = method == "HEAD";

        let req = Request {
            key,
            head: &head,
            body,
            coalesced,
            head_only,
            max_body,
        };
        if let Some(stream) = self.checkout(key) {
            match self.exchange(stream, &req).await {
                Ok(resp) => return Ok(resp),
                // Nothing came back on a reused connection: it was closed under us; try a new one.
                Err((_, false)) => {}
                Err((e, true)) => return Err(e),
            }
        }
        let stream = self.connect(target).await?;
        self.exchange(stream, &req).await.map_err(|(e, _)| e)
    }

    /// Writes the request and reads the answer, then gives the connection back to the idle
    /// stack if it can serve another request. On error, says whether any byte of an answer had
    /// arrived.
    async fn exchange(
        &self,
        mut stream: Stream,
        req: &Request<'_>,
    ) -> Result<Response, (Error, bool)> {
        let Request {
            head,
            body,
            coalesced,
            head_only,
            max_body,
            ..
        } = *req;
        let lost = |e: std::io::Error, got: bool| (Error::Lost(e.to_string()), got);
        stream.write_all(head).await.map_err(|e| lost(e, false))?;
        if !coalesced {
            stream.write_all(body).await.map_err(|e| lost(e, false))?;
        }
        let mut buf = BytesMut::with_capacity(4096);
        // Head (skipping informational answers).
        let mut runtime_start_ms = None;
        let mut runtime_duration_us = None;
        let (status, framing, close) = loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 48];
            let mut resp = httparse::Response::new(&mut hdrs);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                            length = Some(
                                v.ok_or((Error::Lost("invalid content-length".into()), true))?,
                            );
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked")
                                || std::str::from_utf8(h.value).is_ok_and(|v| {
                                    v.to_ascii_lowercase().trim_end().ends_with("chunked")
                                });
                        } else if h.name.eq_ignore_ascii_case("x-runtime-start-ms") {
                            runtime_start_ms = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<u64>().ok());
                        } else if h.name.eq_ignore_ascii_case("x-runtime-duration-us") {
                            runtime_duration_us = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<u64>().ok());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            if v.contains("close") {
                                close = true;
                            } else if v.contains("keep-alive") {
                                close = false;
                            }
                        }
                    }
                    buf.advance(n);
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    let framing = if head_only || status == 204 || status == 304 {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(l) = length {
                        Framing::Length(l)
                    } else {
                        Framing::UntilClose
                    };
                    break (status, framing, close);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return Err((Error::Lost("answer head larger than 64 KiB".into()), true));
                    }
                    let got = !buf.is_empty();
                    let n = stream.read_buf(&mut buf).await.map_err(|e| lost(e, got))?;
                    if n == 0 {
                        return Err((
                            Error::Lost("connection closed before an answer".into()),
                            got,
                        ));
                    }
                }
                Err(e) => return Err((Error::Lost(format!("not an HTTP/1.1 answer: {e}")), true)),
            }
        };
        let (body, reusable) = match framing {
            Framing::None => (Bytes::new(), !close),
            Framing::Length(l) => {
                if l > max_body {
                    return Err((Error::TooLarge(max_body), true));
                }
                while buf.len() < l {
                    buf.reserve(l - buf.len());
                    read_more(&mut stream, &mut buf).await?;
                }
                let body = buf.split_to(l).freeze();
                (body, !close && buf.is_empty())
            }
            Framing::UntilClose => {
                loop {
                    if buf.len() > max_body {
                        return Err((Error::TooLarge(max_body), true));
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err((Error::Lost(e.to_string()), true)),
                    }
                }
                (buf.split().freeze(), false)
            }
            Framing::Chunked => {
                let mut out = BytesMut::new();
                loop {
                    // Chunk size line.
                    let size = loop {
                        match httparse::parse_chunk_size(&buf) {
                            Ok(httparse::Status::Complete((n, size))) => {
                                buf.advance(n);
                                break size as usize;
                            }
                            Ok(httparse::Status::Partial) => {
                                read_more(&mut stream, &mut buf).await?
                            }
                            Err(_) => return Err((Error::Lost("invalid chunk size".into()), true)),
                        }
                    };
                    if size == 0 {
                        // Trailers, if any, end with an empty line.
                        loop {
                            if let Some(pos) = find_crlf(&buf) {
                                let line_empty = pos == 0;
                                buf.advance(pos + 2);
                                if line_empty {
                                    break;
                                }
                            } else {
                                read_more(&mut stream, &mut buf).await?;
                            }
                        }
                        break;
                    }
                    // No sum here can overflow, whatever chunk size the peer announces.
                    if size > max_body.saturating_sub(out.len()) {
                        return Err((Error::TooLarge(max_body), true));
                    }
                    while buf.len() < size + 2 {
                        read_more(&mut stream, &mut buf).await?;
                    }
                    out.extend_from_slice(&buf[..size]);
                    if &buf[size..size + 2] != b"\r\n" {
                        return Err((Error::Lost("chunk not followed by CRLF".into()), true));
                    }
                    buf.advance(size + 2);
                }
                (out.freeze(), !close && buf.is_empty())
            }
        };
        if reusable {
            self.checkin(req.key, stream);
        }
        Ok(Response {
            status,
            body,
            runtime_start_ms,
            runtime_duration_us,
        })
    }
}

/// Reads more of the answer; the end of stream here is a truncated answer.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<(), (Error, bool)> {
    match stream.read_buf(buf).await {
        Ok(0) => Err((
            Error::Lost("connection closed in the middle of the answer".into()),
            true,
        )),
        Ok(_) => Ok(()),
        Err(e) => Err((Error::Lost(e.to_string()), true)),
    }
}

/// The path tokio connects to: `@name` becomes the abstract name (a leading NUL byte).
pub fn unix_path(socket: &str) -> std::borrow::Cow<'_, str> {
    match socket.strip_prefix('@') {
        Some(name) => format!("\0{name}").into(),
        None => socket.into(),
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn client() -> Client {
        Client::new(ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 4,
        })
    }

    /// A server that answers each connection's requests with the scripted raw answers, in order,
    /// and reports how many connections it accepted.
    async fn raw_server(
        answers: Vec<&'static [u8]>,
        close_after_each: bool,
    ) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = conns.clone();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        // Read one request head + body (bodies here are small and sent at once).
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let _ = n;
                        let next = answers.lock().unwrap().next();
                        let Some(a) = next else { return };
                        if s.write_all(a).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/invoke").parse().unwrap(), conns)
    }

    #[tokio::test]
    async fn content_length_and_keep_alive_reuse() {
        let (uri, conns) = raw_server(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
                b"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad",
            ],
            false,
        )
        .await;
        let c = client();
        let r = c
            .send("POST", &uri, &[("x-a", "b")], b"{}", 1024)
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
        let r = c.send("POST", &uri, &[], b"{}", 1024).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (500, &b"bad"[..]));
        assert_eq!(
            conns.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the connection was reused"
        );
    }

    #[tokio::test]
    async fn chunked_informational_and_close_delimited() {
        let (uri, _) = raw_server(
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nx-trailer: 1\r\n\r\n"],
            false,
        )
        .await;
        let r = client().send("POST", &uri, &[], b"{}", 1024).await.unwrap();
        assert_eq!(&r.body[..], b"abcdefg");
        let (uri, _) = raw_server(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil close"], true).await;
        let r = client().send("POST", &uri, &[], b"{}", 1024).await.unwrap();
        assert_eq!(&r.body[..], b"until close");
    }

    /// Found by the http_response fuzz target: a second chunk announcing 2^64-1 bytes overflowed
    /// the running total (a panic in debug builds, a slice out of range in release).
    #[tokio::test]
    async fn a_huge_chunk_size_after_a_chunk_is_too_large_not_a_panic() {
        let (uri, _) = raw_server(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n"],
            true,
        )
        .await;
        let r = client().send("POST", &uri, &[], b"{}", 1024).await;
        assert_eq!(r.unwrap_err(), Error::TooLarge(1024));
    }

    #[tokio::test]
    async fn limits_and_failures() {
        let (uri, _) = raw_server(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789"],
            false,
        )
        .await;
        assert_eq!(
            client()
                .send("POST", &uri, &[], b"{}", 5)
                .await
                .unwrap_err(),
            Error::TooLarge(5)
        );
        let (uri, _) = raw_server(vec![b"garbage\r\n\r\n"], false).await;
        assert!(matches!(
            client().send("POST", &uri, &[], b"{}", 5).await,
            Err(Error::Lost(_))
        ));
        let (uri, _) = raw_server(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01"],
            true,
        )
        .await;
        assert!(matches!(
            client().send("POST", &uri, &[], b"{}", 100).await,
            Err(Error::Lost(_))
        ));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dead: Uri = format!("http://127.0.0.1:{port}/x").parse().unwrap();
        assert!(matches!(
            client().send("POST", &dead, &[], b"", 100).await,
            Err(Error::Connect(_))
        ));
        let https: Uri = "https://example.invalid/".parse().unwrap();
        assert!(matches!(
            client().send("GET", &https, &[], b"", 100).await,
            Err(Error::BadUrl(_))
        ));
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_by_the_peer_is_replaced() {
        // The server answers once per connection and closes without saying so.
        let (uri, conns) = raw_server(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb",
            ],
            true,
        )
        .await;
        let c = client();
        assert_eq!(
            &c.send("POST", &uri, &[], b"{}", 10).await.unwrap().body[..],
            b"a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            &c.send("POST", &uri, &[], b"{}", 10).await.unwrap().body[..],
            b"b"
        );
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn large_bodies_go_out_in_two_writes_and_arrive_whole() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/big", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let body = vec![b'x'; 200_000];
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !got.ends_with(b"xxxxx") || got.len() < 200_000 {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            got
        });
        let r = client().send("POST", &uri, &[], &body, 10).await.unwrap();
        assert_eq!(&r.body[..], b"ok");
        let got = server.await.unwrap();
        assert!(got.starts_with(b"POST /big HTTP/1.1\r\nhost: 127.0.0.1:"));
        assert!(String::from_utf8_lossy(&got).contains("content-length: 200000\r\n"));
    }

    /// Serves `count` requests per connection over a Unix listener, answering each with its
    /// request line; reports how many connections it accepted.
    fn unix_server(l: tokio::net::UnixListener) -> Arc<std::sync::atomic::AtomicUsize> {
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let line = text.lines().next().unwrap_or("").to_string();
                        let host = text
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("")
                            .to_string();
                        let answer = format!("{line} @ {host}");
                        let out = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if s.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        conns
    }

    #[tokio::test]
    async fn unix_socket_paths_and_abstract_names() {
        let dir = std::env::temp_dir().join(format!("nanofaas-h1-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let conns = unix_server(tokio::net::UnixListener::bind(&path).unwrap());
        let c = client();
        let socket = path.to_str().unwrap();
        for _ in 0..3 {
            let r = c
                .send_to(
                    &Endpoint::unix(socket),
                    "instance",
                    "POST",
                    "/invoke",
                    &[],
                    b"{}",
                    1024,
                )
                .await
                .unwrap();
            assert_eq!(&r.body[..], b"POST /invoke HTTP/1.1 @ instance");
        }
        assert_eq!(
            conns.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "kept alive"
        );

        let name = format!("@nanofaas-h1-test-{}", std::process::id());
        let conns = unix_server(tokio::net::UnixListener::bind(&*unix_path(&name)).unwrap());
        let r = c
            .send_to(
                &Endpoint::unix(&name),
                "x",
                "GET",
                "/health",
                &[],
                b"",
                1024,
            )
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"GET /health HTTP/1.1 @ x");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Nobody listens: a connect error that names the socket.
        let _ = std::fs::remove_file(&path);
        match c
            .send_to(
                &Endpoint::unix("@nanofaas-h1-nobody"),
                "x",
                "GET",
                "/",
                &[],
                b"",
                10,
            )
            .await
        {
            Err(Error::Connect(m)) => assert!(m.contains("unix:@nanofaas-h1-nobody"), "{m}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
