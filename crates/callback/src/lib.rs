//! The completion callback of nanofaas, one implementation for the watchdog and the Rust SDK:
//! `POST {callback_url}/{executionId}:complete` with `{"success", "output", "error"}` and the
//! `X-Trace-Id`, `traceparent` and `X-Callback-Token` headers.
//!
//! - [`success_body`] / [`failure_body`]: the body.
//! - [`Target`]: where it goes (the base URL parsed once), [`Target::path_for`] the path with
//!   the execution id percent-encoded ([`encode_segment`]).
//! - [`classify`]: what an answer means: 2xx delivered; 408, 429 and 5xx retried; any other
//!   status final.
//! - [`Policy`]: attempts in all, the timeout of one attempt (connecting included), and the
//!   doubling wait between attempts ([`nanofaas_api::backoff::Backoff`]).
//! - [`Sender::send`]: the loop, one new `nanofaas-h1` connection per attempt. Connection
//!   failures, broken answers and attempts without an answer in time are retried like a 5xx.
//!
//! A callback never fails the invocation: callers log what [`Sender::send`] reports. Plain
//! `http://` only: callbacks go to the control plane on a private network.

use bytes::Bytes;
use nanofaas_api::backoff::Backoff;
use nanofaas_api::{headers, CallbackPayload, ErrorBody};
use nanofaas_h1::{Client, ClientSettings, Endpoint};
use std::borrow::Cow;
use std::time::Duration;

/// Bytes of an answer's body read (and quoted in a refusal); a longer answer is a failed attempt.
const MAX_ANSWER: usize = 64 * 1024;

/// The body for a successful invocation, around output bytes that are already JSON (not parsed
/// again). Empty output is `null`.
pub fn success_body(output: &[u8]) -> Bytes {
    let output: &[u8] = if output.is_empty() { b"null" } else { output };
    let mut b = Vec::with_capacity(output.len() + 40);
    b.extend_from_slice(br#"{"success":true,"output":"#);
    b.extend_from_slice(output);
    b.extend_from_slice(br#","error":null}"#);
    Bytes::from(b)
}

/// The body for a failed invocation: `{"success":false,"output":null,"error":{"code","message"}}`.
pub fn failure_body(code: &str, message: &str) -> Bytes {
    let payload = CallbackPayload::err(ErrorBody {
        code: code.to_string(),
        message: message.to_string(),
    });
    Bytes::from(serde_json::to_vec(&payload).expect("a callback payload serialises"))
}

/// The body for an invocation's result (`Ok`: JSON output bytes).
pub fn body(result: &Result<Bytes, ErrorBody>) -> Bytes {
    match result {
        Ok(output) => success_body(output),
        Err(e) => failure_body(&e.code, &e.message),
    }
}

/// Percent-encodes what may not appear as is in a URL path segment (RFC 3986 `pchar`): ASCII
/// letters and digits, `-._~`, `:@` and the sub-delimiters stay; execution ids are normally
/// plain, so this is normally no copy.
pub fn encode_segment(s: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b);
    if s.bytes().all(plain) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    Cow::Owned(out)
}

/// A parsed callback base URL: where callbacks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    endpoint: Endpoint,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// The base path without trailing slashes (may be empty).
    path: String,
}

impl Target {
    /// Accepts `http://host[:port][/path]`: no user information, query or fragment.
    pub fn parse(base: &str) -> Result<Target, String> {
        let uri: http::Uri = base
            .trim()
            .parse()
            .map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{base:?}: https callbacks are not supported (use http://)"
                ))
            }
            _ => return Err(format!("{base:?} is not an http:// URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{base:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{base:?}: user information is not allowed"));
        }
        if uri.query().is_some() || base.contains('#') {
            return Err(format!("{base:?}: a query or fragment is not allowed"));
        }
        Target::new(authority.as_str(), uri.path())
    }

    /// The target at `authority` (`host[:port]`, port 80 if none) under `base_path`, for a URL
    /// the caller has already parsed.
    pub fn new(authority: &str, base_path: &str) -> Result<Target, String> {
        let uri: http::Uri = format!("http://{authority}/")
            .parse()
            .map_err(|e| format!("{authority:?} is not a host[:port]: {e}"))?;
        let host = uri.host().unwrap_or("");
        if host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .is_empty()
        {
            return Err(format!("{authority:?} has no host"));
        }
        let endpoint = Endpoint::http(&uri).map_err(|e| e.to_string())?;
        Ok(Target {
            endpoint,
            authority: authority.to_string(),
            path: base_path.trim_end_matches('/').to_string(),
        })
    }

    /// `host[:port]` as written.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path of `{base}/{executionId}:complete`, the id percent-encoded.
    pub fn path_for(&self, execution_id: &str) -> String {
        format!("{}/{}:complete", self.path, encode_segment(execution_id))
    }
}

/// What an answer's status means for a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 408, 429 and 5xx: try again.
    Retry,
    /// Anything else: refused, do not try again.
    Final,
}

/// The verdict on an answer with `status`.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Final,
    }
}

/// How often and how long callbacks are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Attempts in all (0 counts as 1).
    pub max_attempts: u32,
    /// The longest one attempt may take, connecting included.
    pub attempt_timeout: Duration,
    /// Wait before the second attempt; doubles before each further one.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Policy {
    /// The wait before attempt `n` (2-based: there is no wait before the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.first_backoff, self.max_backoff).delay(attempt.saturating_sub(1))
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// The headers of one callback; a value that cannot be a header value (a control character) is
/// left out rather than failing the delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta<'a> {
    pub trace_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub token: Option<&'a str>,
}

/// Sends callbacks with a [`Policy`] through `nanofaas-h1`'s client (a new connection per
/// attempt: none is kept idle).
#[derive(Clone)]
pub struct Sender {
    policy: Policy,
    client: Client,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Sender {
    pub fn new(policy: Policy) -> Sender {
        let client = Client::new(ClientSettings {
            connect_timeout: policy.attempt_timeout,
            idle_timeout: Duration::ZERO,
            max_idle_per_host: 0,
        });
        Sender { policy, client }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Posts `body` for `execution_id` until it is accepted (2xx), a final answer comes, or the
    /// attempts run out. `Ok(attempts used)`, or what happened.
    pub async fn send(
        &self,
        target: &Target,
        execution_id: &str,
        meta: Meta<'_>,
        body: Bytes,
    ) -> Result<u32, String> {
        self.send_observed(target, execution_id, meta, body, |_, _| {})
            .await
    }

    /// [`Sender::send`], calling `failed(attempt, why)` after each attempt that fails and is not final
    /// (the last one included).
    pub async fn send_observed(
        &self,
        target: &Target,
        execution_id: &str,
        meta: Meta<'_>,
        body: Bytes,
        mut failed: impl FnMut(u32, &str),
    ) -> Result<u32, String> {
        let path = target.path_for(execution_id);
        let url = format!("http://{}{path}", target.authority);
        let mut hdrs: Vec<(&str, &str)> = Vec::with_capacity(4);
        hdrs.push(("content-type", "application/json"));
        for (name, value) in [
            (headers::TRACE_ID, meta.trace_id),
            (headers::TRACEPARENT, meta.traceparent),
            (headers::CALLBACK_TOKEN, meta.token),
        ] {
            if let Some(v) = value.filter(|v| http::HeaderValue::from_str(v).is_ok()) {
                hdrs.push((name, v));
            }
        }
        let attempts = self.policy.attempts();
        let timeout = self.policy.attempt_timeout;
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let sent = self
                .client
                .send_to(
                    &target.endpoint,
                    &target.authority,
                    "POST",
                    &path,
                    &hdrs,
                    &body,
                    MAX_ANSWER,
                    deadline,
                )
                .await;
            match sent {
                Ok(resp) => {
                    let status = http::StatusCode::from_u16(resp.status)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|_| resp.status.to_string());
                    let text = String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]);
                    last = format!("{url} answered {status}: {}", text.trim());
                    match classify(resp.status) {
                        Verdict::Delivered => return Ok(attempt),
                        Verdict::Final => return Err(format!("{last} (not retried)")),
                        Verdict::Retry => {}
                    }
                }
                Err(nanofaas_h1::Error::Timeout) => {
                    last = format!("{url}: no answer within {} ms", timeout.as_millis());
                }
                Err(nanofaas_h1::Error::Connect(e)) => {
                    last = format!("cannot connect to {url}: {e}");
                }
                Err(e) => last = format!("{url}: {e}"),
            }
            failed(attempt, &last);
        }
        Err(format!("gave up after {attempts} attempts; last: {last}"))
    }
}

#[cfg(test)]
mod tests;
