//! A small HTTP/1.1 client for nanofaas's hot paths (control plane → instance, watchdog →
//! runtime): one request at a time per keep-alive connection, driven inline by the task that
//! sends it.
//!
//! General-purpose clients hand each request to a separate connection task through channels, so
//! every call pays two task hand-offs (often across threads). Here the calling task writes the
//! request and reads the answer itself.
//!
//! # What it guarantees
//!
//! - **A request is sent again only if no byte of it was written.** A pooled connection that the
//!   peer closed while idle is noticed at checkout (a non-blocking read sees the end of stream)
//!   and dropped; a write that fails before its first byte goes out is retried once on a new
//!   connection. Once any byte is written, a broken connection is [`Error::Lost`]: the caller
//!   decides whether to try again (the control plane does, as a new counted attempt).
//! - **Every exchange has a deadline** ([`Client::send_to`] takes it): past it, the connection is
//!   dropped and the call is [`Error::Timeout`].
//! - **A connection is only ever driven by the event loop that opened it.** Idle connections are
//!   kept per loop: on a current-thread runtime the loop is the thread, and a multi-thread runtime
//!   is one loop (its I/O driver is shared by its workers). A worker that blocks therefore holds up
//!   only its own requests.
//! - **An endpoint owns its idle connections**: they close when [`Endpoint::close_idle`] is called
//!   or the last handle of the endpoint is dropped (its instance stopped), not when the address is
//!   next used.
//!
//! A target is a TCP address or host name or, for instances on the same machine, a Unix socket (a
//! path, or on Linux a name in the abstract namespace written with a leading `@`): a local hop
//! then skips the TCP stack (and any packet filter on loopback).
//!
//! Supports what instances and endpoints answer: `Content-Length`, chunked, and close-delimited
//! bodies, informational `1xx` answers, and `Connection: close`. Conflicting `Content-Length`
//! values are an error; with both `Transfer-Encoding` and `Content-Length`, the transfer coding
//! wins and the connection is not reused (RFC 9112, 6.3).

use bytes::{Buf, Bytes, BytesMut};
use http::Uri;
use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Idle connections kept per endpoint and event loop.
    pub max_idle_per_host: usize,
}

/// What went wrong, apart from the answer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No connection could be made.
    Connect(String),
    /// The connection broke, or the peer spoke something that is not HTTP/1.1, before a
    /// complete answer. The request may have reached the peer.
    Lost(String),
    /// The answer's body is larger than the limit.
    TooLarge(usize),
    /// The URL cannot be used (no host, not http).
    BadUrl(String),
    /// No complete answer before the exchange's deadline.
    Timeout,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(m) => write!(f, "cannot connect: {m}"),
            Error::Lost(m) => write!(f, "connection lost: {m}"),
            Error::TooLarge(n) => write!(f, "answer larger than {n} bytes"),
            Error::BadUrl(m) => write!(f, "bad URL: {m}"),
            Error::Timeout => f.write_str("no answer before the deadline"),
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

/// The event loop the calling task runs on: one id per thread of a current-thread runtime,
/// one shared id for every thread of a multi-thread runtime (whose I/O driver is shared).
fn loop_id() -> u64 {
    const SHARED: u64 = 1;
    static NEXT: AtomicU64 = AtomicU64::new(SHARED + 1);
    thread_local! {
        static LOOP: Cell<u64> = const { Cell::new(0) };
    }
    LOOP.with(|l| {
        let id = l.get();
        if id != 0 {
            return id;
        }
        let id = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) | Err(_) => {
                NEXT.fetch_add(1, Ordering::Relaxed)
            }
            Ok(_) => SHARED,
        };
        l.set(id);
        id
    })
}

struct Idle {
    stream: Stream,
    since: Instant,
    /// The loop that opened it, the only one that may drive it.
    owner: u64,
}

/// The idle connections of one endpoint, of every loop. Dropped with the endpoint's last handle.
#[derive(Default)]
struct IdleConns {
    conns: Mutex<Vec<Idle>>,
}

/// A resolved place to send requests to: a TCP address, a host name, or a Unix socket. Built
/// once per instance or runtime; it holds that target's idle connections, which close when the
/// last clone of it is dropped (or with [`Endpoint::close_idle`]).
#[derive(Clone)]
pub struct Endpoint {
    kind: EndpointKind,
    /// How it is shown (`127.0.0.1:8080`, `unix:@name`).
    key: Arc<str>,
    idle: Arc<IdleConns>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointKind {
    Tcp(SocketAddr),
    /// `host:port`, resolved by the system at each new connection.
    Name(String),
    Unix(String),
}

impl PartialEq for Endpoint {
    /// Same target (whether or not they share idle connections).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for Endpoint {}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.key)
    }
}

impl Endpoint {
    fn new(kind: EndpointKind, key: String) -> Endpoint {
        Endpoint {
            kind,
            key: key.into(),
            idle: Arc::default(),
        }
    }

    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint::new(EndpointKind::Tcp(addr), addr.to_string())
    }

    /// A Unix socket: a path, or `@name` for the Linux abstract namespace.
    pub fn unix(socket: &str) -> Endpoint {
        Endpoint::new(
            EndpointKind::Unix(socket.to_string()),
            format!("unix:{socket}"),
        )
    }

    /// The host and port of an `http://` URL (port 80 if none); an IP literal needs no resolver.
    pub fn http(uri: &Uri) -> Result<Endpoint, Error> {
        if uri.scheme_str().is_some_and(|s| s != "http") {
            return Err(Error::BadUrl(format!("{uri}: only http:// is supported")));
        }
        let auth = uri
            .authority()
            .ok_or_else(|| Error::BadUrl(format!("{uri}: no host")))?;
        let port = auth.port_u16().unwrap_or(80);
        let host = auth.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        Ok(match literal.parse::<std::net::IpAddr>() {
            Ok(ip) => Endpoint::tcp(SocketAddr::new(ip, port)),
            Err(_) => {
                let name = format!("{host}:{port}");
                Endpoint::new(EndpointKind::Name(name.clone()), name)
            }
        })
    }

    /// The Unix socket, if that is what it is.
    pub fn socket(&self) -> Option<&str> {
        match &self.kind {
            EndpointKind::Unix(s) => Some(s),
            _ => None,
        }
    }

    /// Closes every idle connection of this endpoint (of every loop) now.
    pub fn close_idle(&self) {
        let gone = std::mem::take(&mut *self.idle.conns.lock().unwrap());
        drop(gone);
    }

    /// Idle connections kept for this endpoint, all loops together.
    pub fn idle_count(&self) -> usize {
        self.idle.conns.lock().unwrap().len()
    }
}

impl std::fmt::Display for Endpoint {
    /// `127.0.0.1:8080`, `name:80` or `unix:@name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

#[derive(Clone)]
pub struct Client {
    settings: Arc<ClientSettings>,
}

const MAX_HEAD: usize = 64 * 1024;
/// Header fields parsed without allocating; more are parsed again with room for [`MAX_HEADERS`].
const INLINE_HEADERS: usize = 48;
const MAX_HEADERS: usize = 1024;
/// Bodies up to this size are copied after the head so the request goes out in one write.
const COALESCE: usize = 16 * 1024;

/// True when a pooled connection is still open and quiet.
fn still_open(s: &Stream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One serialised request, ready to be written on any connection to its endpoint.
struct Request<'a> {
    head: &'a [u8],
    body: &'a [u8],
    /// The body is already at the end of `head`.
    coalesced: bool,
    head_only: bool,
    max_body: usize,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
    None,
}

/// What the head of an answer says.
struct Head {
    /// Bytes of the head.
    len: usize,
    status: u16,
    framing: Framing,
    close: bool,
    runtime_start_ms: Option<u64>,
    runtime_duration_us: Option<u64>,
}

fn lost(m: impl Into<String>) -> Error {
    Error::Lost(m.into())
}

/// Parses a complete answer head at the start of `buf` (`None`: more bytes are needed).
fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Head>, Error> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    let mut resp = httparse::Response::new(&mut inline);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => read_head(&resp, n, head_only).map(Some),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let mut many = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut many);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => read_head(&resp, n, head_only).map(Some),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(lost(format!("not an HTTP/1.1 answer: {e}"))),
            }
        }
        Err(e) => Err(lost(format!("not an HTTP/1.1 answer: {e}"))),
    }
}

fn read_head(
    resp: &httparse::Response<'_, '_>,
    len: usize,
    head_only: bool,
) -> Result<Head, Error> {
    let status = resp.code.unwrap_or(0);
    let mut length: Option<usize> = None;
    let mut coded = false;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    let mut runtime_start_ms = None;
    let mut runtime_duration_us = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| lost("invalid content-length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(lost("conflicting content-length values"));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            // Only a final `chunked` frames the body; any other coding runs until the close.
            chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
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
    if status == 101 {
        // Another protocol follows: never reuse the connection for HTTP/1.1.
        close = true;
    }
    let framing = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::None
    } else if coded {
        // A peer that sends both may be smuggling: trust the coding, then close.
        if length.is_some() {
            close = true;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        len,
        status,
        framing,
        close,
        runtime_start_ms,
        runtime_duration_us,
    })
}

/// How an exchange failed: the error, and whether not one byte of the request was written
/// (only then may it be sent again).
type Failed = (Error, bool);

/// Writes all of `buf`, recording in `written` that a byte went out.
async fn write_all(stream: &mut Stream, buf: &[u8], written: &mut bool) -> Result<(), Failed> {
    let mut off = 0;
    while off < buf.len() {
        match stream.write(&buf[off..]).await {
            Ok(0) => return Err((lost("the connection accepts no more bytes"), !*written)),
            Ok(n) => {
                *written = true;
                off += n;
            }
            Err(e) => return Err((lost(e.to_string()), !*written)),
        }
    }
    Ok(())
}

impl Client {
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// The newest idle connection of `endpoint` opened by this loop that is still usable.
    fn checkout(&self, endpoint: &Endpoint, me: u64) -> Option<Stream> {
        let max_age = self.settings.idle_timeout;
        loop {
            let idle = {
                let mut conns = endpoint.idle.conns.lock().unwrap();
                let i = conns.iter().rposition(|c| c.owner == me)?;
                conns.remove(i)
            };
            // Checked (and dropped if stale) outside the lock.
            if idle.since.elapsed() < max_age && still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    fn checkin(&self, endpoint: &Endpoint, stream: Stream, me: u64) {
        let mut conns = endpoint.idle.conns.lock().unwrap();
        let mine = conns.iter().filter(|c| c.owner == me).count();
        if mine < self.settings.max_idle_per_host {
            conns.push(Idle {
                stream,
                since: Instant::now(),
                owner: me,
            });
        } else {
            drop(conns);
            drop(stream);
        }
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Stream, Error> {
        let limit = self.settings.connect_timeout;
        let connecting = async {
            let tcp = match &endpoint.kind {
                EndpointKind::Name(name) => TcpStream::connect(name.as_str()).await,
                EndpointKind::Tcp(addr) => TcpStream::connect(addr).await,
                EndpointKind::Unix(path) => {
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
            .map_err(|_| Error::Connect(format!("{endpoint}: no answer within {limit:?}")))?
            .map_err(|e| Error::Connect(format!("{endpoint}: {e}")))
    }

    /// Sends one request to `endpoint` with `host` as the `Host` header and reads the whole
    /// answer (at most `max_body` bytes of body), all before `deadline`.
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
        deadline: Instant,
    ) -> Result<Response, Error> {
        let mut head = Vec::with_capacity(
            192 + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
                + if body.len() <= COALESCE {
                    body.len()
                } else {
                    0
                },
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
            head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let coalesced = body.len() <= COALESCE;
        if coalesced {
            head.extend_from_slice(body);
        }
        let req = Request {
            head: &head,
            body,
            coalesced,
            head_only: method == "HEAD",
            max_body,
        };
        match tokio::time::timeout_at(deadline, self.send_request(endpoint, &req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn send_request(
        &self,
        endpoint: &Endpoint,
        req: &Request<'_>,
    ) -> Result<Response, Error> {
        let me = loop_id();
        if let Some(stream) = self.checkout(endpoint, me) {
            match self.exchange(endpoint, stream, req, me).await {
                Ok(resp) => return Ok(resp),
                // Not one byte went out on the reused connection: a new one may carry it.
                Err((_, true)) => {}
                Err((e, false)) => return Err(e),
            }
        }
        let stream = self.connect(endpoint).await?;
        self.exchange(endpoint, stream, req, me)
            .await
            .map_err(|(e, _)| e)
    }

    /// Writes the request and reads the answer, then gives the connection back to the idle
    /// connections of this loop if it can serve another request.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        mut stream: Stream,
        req: &Request<'_>,
        me: u64,
    ) -> Result<Response, Failed> {
        let Request {
            head,
            body,
            coalesced,
            head_only,
            max_body,
        } = *req;
        let mut written = false;
        write_all(&mut stream, head, &mut written).await?;
        if !coalesced {
            write_all(&mut stream, body, &mut written).await?;
        }
        // From here on the request (or part of it) is out: no failure may send it again.
        let f = |e: Error| (e, false);
        let mut buf = BytesMut::with_capacity(4096);
        // Head (skipping informational answers).
        let head = loop {
            match parse_head(&buf, head_only).map_err(f)? {
                Some(h) => {
                    buf.advance(h.len);
                    if (100..200).contains(&h.status) && h.status != 101 {
                        continue;
                    }
                    break h;
                }
                None => {
                    if buf.len() > MAX_HEAD {
                        return Err(f(lost("answer head larger than 64 KiB")));
                    }
                    let n = stream
                        .read_buf(&mut buf)
                        .await
                        .map_err(|e| f(lost(e.to_string())))?;
                    if n == 0 {
                        return Err(f(lost(if buf.is_empty() {
                            "connection closed before an answer"
                        } else {
                            "connection closed in the middle of the answer's head"
                        })));
                    }
                }
            }
        };
        let close = head.close;
        let (body, reusable) = match head.framing {
            Framing::None => (Bytes::new(), !close && buf.is_empty()),
            Framing::Length(l) => {
                if l > max_body {
                    return Err(f(Error::TooLarge(max_body)));
                }
                while buf.len() < l {
                    buf.reserve(l - buf.len());
                    read_more(&mut stream, &mut buf).await.map_err(f)?;
                }
                let body = buf.split_to(l).freeze();
                (body, !close && buf.is_empty())
            }
            Framing::UntilClose => {
                loop {
                    if buf.len() > max_body {
                        return Err(f(Error::TooLarge(max_body)));
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(f(lost(e.to_string()))),
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
                                break size;
                            }
                            Ok(httparse::Status::Partial) => {
                                read_more(&mut stream, &mut buf).await.map_err(f)?
                            }
                            Err(_) => return Err(f(lost("invalid chunk size"))),
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
                                if buf.len() > MAX_HEAD {
                                    return Err(f(lost("trailers larger than 64 KiB")));
                                }
                                read_more(&mut stream, &mut buf).await.map_err(f)?;
                            }
                        }
                        break;
                    }
                    // No sum here can overflow, whatever chunk size the peer announces.
                    let room = max_body.saturating_sub(out.len());
                    if size > room as u64 {
                        return Err(f(Error::TooLarge(max_body)));
                    }
                    let size = size as usize;
                    while buf.len() < size + 2 {
                        read_more(&mut stream, &mut buf).await.map_err(f)?;
                    }
                    out.extend_from_slice(&buf[..size]);
                    if &buf[size..size + 2] != b"\r\n" {
                        return Err(f(lost("chunk not followed by CRLF")));
                    }
                    buf.advance(size + 2);
                }
                (out.freeze(), !close && buf.is_empty())
            }
        };
        if reusable {
            self.checkin(endpoint, stream, me);
        }
        Ok(Response {
            status: head.status,
            body,
            runtime_start_ms: head.runtime_start_ms,
            runtime_duration_us: head.runtime_duration_us,
        })
    }
}

/// Reads more of the answer; the end of stream here is a truncated answer.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<(), Error> {
    match stream.read_buf(buf).await {
        Ok(0) => Err(lost("connection closed in the middle of the answer")),
        Ok(_) => Ok(()),
        Err(e) => Err(lost(e.to_string())),
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

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn send(
        c: &Client,
        e: &Endpoint,
        method: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max: usize,
    ) -> Result<Response, Error> {
        c.send_to(e, "test", method, "/invoke", headers, body, max, soon())
            .await
    }

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
    ) -> (Endpoint, Arc<std::sync::atomic::AtomicUsize>) {
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
        (Endpoint::tcp(addr), conns)
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
        let r = send(&c, &uri, "POST", &[("x-a", "b")], b"{}", 1024)
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
        let r = send(&c, &uri, "POST", &[], b"{}", 1024).await.unwrap();
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
        let r = send(&client(), &uri, "POST", &[], b"{}", 1024)
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"abcdefg");
        let (uri, _) = raw_server(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil close"], true).await;
        let r = send(&client(), &uri, "POST", &[], b"{}", 1024)
            .await
            .unwrap();
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
        let r = send(&client(), &uri, "POST", &[], b"{}", 1024).await;
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
            send(&client(), &uri, "POST", &[], b"{}", 5)
                .await
                .unwrap_err(),
            Error::TooLarge(5)
        );
        let (uri, _) = raw_server(vec![b"garbage\r\n\r\n"], false).await;
        assert!(matches!(
            send(&client(), &uri, "POST", &[], b"{}", 5).await,
            Err(Error::Lost(_))
        ));
        let (uri, _) = raw_server(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01"],
            true,
        )
        .await;
        assert!(matches!(
            send(&client(), &uri, "POST", &[], b"{}", 100).await,
            Err(Error::Lost(_))
        ));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dead = Endpoint::http(&format!("http://127.0.0.1:{port}/x").parse().unwrap()).unwrap();
        assert!(matches!(
            send(&client(), &dead, "POST", &[], b"", 100).await,
            Err(Error::Connect(_))
        ));
        let https: Uri = "https://example.invalid/".parse().unwrap();
        assert!(matches!(Endpoint::http(&https), Err(Error::BadUrl(_))));
        let no_host: Uri = "/relative".parse().unwrap();
        assert!(matches!(Endpoint::http(&no_host), Err(Error::BadUrl(_))));
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
            &send(&c, &uri, "POST", &[], b"{}", 10).await.unwrap().body[..],
            b"a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            &send(&c, &uri, "POST", &[], b"{}", 10).await.unwrap().body[..],
            b"b"
        );
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn large_bodies_go_out_in_two_writes_and_arrive_whole() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = Endpoint::tcp(l.local_addr().unwrap());
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
        let r = send(&client(), &uri, "POST", &[], &body, 10).await.unwrap();
        assert_eq!(&r.body[..], b"ok");
        let got = server.await.unwrap();
        assert!(got.starts_with(b"POST /invoke HTTP/1.1\r\nhost: test\r\n"));
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
        // The endpoint holds its idle connections: one endpoint, one connection for all three.
        let e = Endpoint::unix(socket);
        for _ in 0..3 {
            let r = c
                .send_to(&e, "instance", "POST", "/invoke", &[], b"{}", 1024, soon())
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
                soon(),
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
                soon(),
            )
            .await
        {
            Err(Error::Connect(m)) => assert!(m.contains("unix:@nanofaas-h1-nobody"), "{m}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
