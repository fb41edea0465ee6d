//! A small HTTP/1.1 client for tests, on hyper-util's legacy client.
//!
//! Each call builds its own client (and connection): tests run on many short-lived tokio
//! runtimes, and a connection pool shared between them would hold connections whose driver
//! task died with an earlier runtime.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with status and body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}: {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends one request and reads the whole answer. `Err` only for transport failures (connection
/// refused, reset, a malformed URL); any HTTP status is an `Ok`.
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response, String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| format!("method: {e}"))?;
    let mut req = Request::builder().method(method).uri(url);
    let body: Bytes = body.into();
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("request to {url}: {e}"))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("request to {url}: {e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading the answer of {url}: {e}"))?
        .to_bytes();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    })
}

/// `GET url`, the body parsed as JSON (an empty body is `null`).
pub async fn get_json(url: &str) -> Result<(u16, Value), String> {
    let r = http("GET", url, &[], Bytes::new()).await?;
    parse(r)
}

/// `POST url` with a JSON body, the answer parsed as JSON (an empty body is `null`).
pub async fn post_json(url: &str, body: &Value) -> Result<(u16, Value), String> {
    let r = http("POST", url, &[], body.to_string()).await?;
    parse(r)
}

fn parse(r: Response) -> Result<(u16, Value), String> {
    if r.body.is_empty() {
        return Ok((r.status, Value::Null));
    }
    serde_json::from_slice(&r.body)
        .map(|v| (r.status, v))
        .map_err(|e| {
            format!(
                "status {} with a non-JSON body ({e}): {:?}",
                r.status,
                r.text()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let port = crate::free_port();
        let e = http(
            "GET",
            &format!("http://127.0.0.1:{port}/"),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap_err();
        assert!(e.contains("127.0.0.1"), "{e}");
        assert!(http("GET", "not a url", &[], Bytes::new()).await.is_err());
    }
}
