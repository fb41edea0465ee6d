//! The watchdog's HTTP/1.1 client side: a keep-alive connection pool to the runtime (the hot
//! path) and health probes, over `nanofaas-h1` (callbacks go through the shared sender,
//! `nanofaas-callback`, over the same client).

use crate::config::HttpUrl;
use bytes::Bytes;
use hyper::{HeaderMap, StatusCode};
use nanofaas_h1::Endpoint;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

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

/// Why a call to the runtime failed (a non-2xx answer is not a failure here).
#[derive(Debug)]
pub enum CallError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The connection failed or was closed after the request was sent.
    Lost(String),
    /// The answer was larger than the limit.
    TooLarge(usize),
    /// No complete answer before the call's deadline.
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "cannot connect to the runtime: {e}"),
            CallError::Lost(e) => write!(f, "the connection to the runtime failed: {e}"),
            CallError::TooLarge(n) => write!(f, "the runtime's answer is larger than {n} bytes"),
            CallError::Timeout => f.write_str("the runtime did not answer in time"),
        }
    }
}

/// The keep-alive client of one runtime: the health probes and the invocations share it, so
/// the probe's connection serves the first invocation.
pub fn runtime_client(max_idle: usize) -> nanofaas_h1::Client {
    nanofaas_h1::Client::new(nanofaas_h1::ClientSettings {
        connect_timeout: Duration::from_secs(5),
        // Runtimes close idle connections on their own terms (gunicorn's gthread after 75 s):
        // do not reuse one idle for longer than that.
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: max_idle.max(1),
    })
}

/// Keep-alive connections to one runtime address. The request is written and the answer read
/// by the calling task itself (`nanofaas-h1`), with no connection task in between. The idle
/// connections belong to the endpoint: they close when the pool (the runtime's generation) goes.
pub struct Pool {
    /// The runtime's address, or the Unix socket it took up.
    endpoint: Endpoint,
    path: String,
    host: String,
    max_body: usize,
    client: nanofaas_h1::Client,
}

impl Pool {
    /// A pool for `url` at `endpoint` (its resolved address, which may already hold the health
    /// probe's connection) over `client`; answers larger than `max_body` fail.
    pub fn new(
        url: &HttpUrl,
        endpoint: Endpoint,
        max_body: usize,
        client: nanofaas_h1::Client,
    ) -> Result<Pool, String> {
        if url.path.is_empty() || !url.path.starts_with('/') {
            return Err(format!("bad path {:?}", url.path));
        }
        Ok(Pool {
            endpoint,
            path: url.path.clone(),
            host: url.authority.clone(),
            max_body,
            client,
        })
    }

    /// Sends invocations over the Unix socket `endpoint` from now on (its probe's connection
    /// serves the first one).
    pub fn with_socket(mut self, endpoint: Endpoint) -> Pool {
        self.endpoint = endpoint;
        self
    }

    /// The Unix socket invocations go to, if any.
    pub fn socket(&self) -> Option<&str> {
        self.endpoint.socket()
    }

    pub fn client(&self) -> &nanofaas_h1::Client {
        &self.client
    }

    /// `POST` `body` with `headers` (plus `Host`) to the pool's URL and reads the whole answer
    /// before `deadline`.
    ///
    /// A request is sent again on a fresh connection only if not one byte of it was written;
    /// a connection that breaks later is [`CallError::Lost`] (the runtime may have run it).
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v.as_bytes()).unwrap_or("")))
            .collect();
        let sent = self
            .client
            .send_to(
                &self.endpoint,
                &self.host,
                "POST",
                &self.path,
                &pairs,
                &body,
                self.max_body,
                deadline,
            )
            .await;
        let resp = sent.map_err(|e| match e {
            nanofaas_h1::Error::Connect(m) => CallError::Connect(io::Error::other(m)),
            nanofaas_h1::Error::TooLarge(n) => CallError::TooLarge(n),
            nanofaas_h1::Error::Timeout => CallError::Timeout,
            other => CallError::Lost(other.to_string()),
        })?;
        Ok((
            StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY),
            resp.body,
        ))
    }
}

impl Pool {
    /// `POST` to another path of the runtime (`/_nanofaas/specialize`), on the same endpoint
    /// and connections as the invocations; not the hot path.
    pub async fn post_path(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v.as_bytes()).unwrap_or("")))
            .collect();
        let resp = self
            .client
            .send_to(
                &self.endpoint,
                &self.host,
                "POST",
                path,
                &pairs,
                &body,
                self.max_body,
                deadline,
            )
            .await
            .map_err(|e| match e {
                nanofaas_h1::Error::Connect(m) => CallError::Connect(io::Error::other(m)),
                nanofaas_h1::Error::TooLarge(n) => CallError::TooLarge(n),
                nanofaas_h1::Error::Timeout => CallError::Timeout,
                other => CallError::Lost(other.to_string()),
            })?;
        Ok((
            StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY),
            resp.body,
        ))
    }
}

/// One `GET` of a health URL's path at `endpoint` over `client`, answered within `timeout`:
/// `Ok` when it answers 2xx (the connection then stays open in the endpoint for the next
/// request).
pub async fn probe(
    client: &nanofaas_h1::Client,
    endpoint: &Endpoint,
    url: &HttpUrl,
    timeout: Duration,
) -> Result<(), String> {
    let resp = client
        .send_to(
            endpoint,
            &url.authority,
            "GET",
            &url.path,
            &[],
            b"",
            64 * 1024,
            tokio::time::Instant::now() + timeout,
        )
        .await
        .map_err(|e| match e {
            nanofaas_h1::Error::Timeout => {
                format!("{url} did not answer within {} ms", timeout.as_millis())
            }
            e => e.to_string(),
        })?;
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(format!("{url} answered {}", resp.status))
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
        let endpoint = Endpoint::tcp(resolve(&url).await.unwrap());
        let pool = Pool::new(&url, endpoint, 1024, runtime_client(1)).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        match pool.post(HeaderMap::new(), Bytes::new(), deadline).await {
            Err(CallError::Connect(_)) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
