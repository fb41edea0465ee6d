//! Delivering `{success, output, error}` to `{callback_url}/{execution_id}:complete`.
//!
//! Connection failures, timeouts, 408, 429 and 5xx answers are retried up to
//! `CALLBACK_MAX_ATTEMPTS` attempts in all, waiting 100 ms, 200 ms, 400 ms... (at most 2 s)
//! between them; any other answer ends delivery (2xx: delivered, else: refused).

use crate::client;
use crate::config::{CallbackPolicy, HttpUrl};
use bytes::Bytes;
use hyper::Method;
use nanofaas_api::{headers, ErrorBody};

/// Where and how to call back.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: HttpUrl,
    pub execution_id: String,
    pub trace_id: Option<String>,
    /// The invocation's `traceparent`, sent on with the callback.
    pub traceparent: Option<String>,
    pub token: Option<String>,
}

/// The callback body for an invocation's result. `output` must be JSON.
pub fn body(result: &Result<Bytes, ErrorBody>) -> Bytes {
    match result {
        Ok(output) => {
            let output: &[u8] = if output.is_empty() { b"null" } else { output };
            let mut b = Vec::with_capacity(output.len() + 40);
            b.extend_from_slice(b"{\"success\":true,\"output\":");
            b.extend_from_slice(output);
            b.extend_from_slice(b",\"error\":null}");
            Bytes::from(b)
        }
        Err(e) => Bytes::from(
            serde_json::to_vec(&nanofaas_api::CallbackPayload::err(e.clone()))
                .expect("callback payload serialises"),
        ),
    }
}

/// Posts `body` until delivered or out of attempts. `Ok(attempts used)`, or why it failed.
pub async fn deliver(target: &Target, body: Bytes, policy: &CallbackPolicy) -> Result<u32, String> {
    let path = nanofaas_api::invocation::callback_target(
        &target.base.path,
        &encode_segment(&target.execution_id),
    );
    let url = target.base.with_path(&path);
    let mut hdrs: Vec<(&'static str, &str)> = Vec::with_capacity(3);
    if let Some(t) = &target.trace_id {
        hdrs.push((headers::TRACE_ID, t));
    }
    if let Some(t) = &target.traceparent {
        hdrs.push((headers::TRACEPARENT, t));
    }
    if let Some(t) = &target.token {
        hdrs.push((headers::CALLBACK_TOKEN, t));
    }
    let mut last = String::new();
    for attempt in 1..=policy.max_attempts {
        if attempt > 1 {
            tokio::time::sleep(policy.backoff(attempt)).await;
        }
        match client::request_once(
            &url,
            Method::POST,
            &hdrs,
            body.clone(),
            policy.attempt_timeout,
        )
        .await
        {
            Ok((status, _)) if status.is_success() => return Ok(attempt),
            Ok((status, answer)) => {
                let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
                last = format!("{url} answered {status}: {}", text.trim());
                let retryable =
                    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                if !retryable {
                    return Err(last);
                }
            }
            Err(e) => last = format!("{url}: {e}"),
        }
        crate::debug!("callback attempt {attempt} failed: {last}");
    }
    Err(format!(
        "gave up after {} attempts; last: {last}",
        policy.max_attempts
    ))
}

/// Percent-encodes what may not appear as is in a URL path segment (execution ids are normally
/// plain, so this is normally a copy).
fn encode_segment(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b);
    if s.bytes().all(plain) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_encoded_only_when_needed() {
        assert_eq!(encode_segment("e-1.2_3~x"), "e-1.2_3~x");
        assert_eq!(encode_segment("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
    }
    use nanofaas_api::ErrorCode;
    use serde_json::{json, Value};

    #[test]
    fn bodies() {
        let ok: Value =
            serde_json::from_slice(&body(&Ok(Bytes::from_static(b"{\"a\":1}")))).unwrap();
        assert_eq!(
            ok,
            json!({"success": true, "output": {"a": 1}, "error": null})
        );
        let empty: Value = serde_json::from_slice(&body(&Ok(Bytes::new()))).unwrap();
        assert_eq!(empty["output"], Value::Null);
        let err: Value =
            serde_json::from_slice(&body(&Err(ErrorBody::new(ErrorCode::Timeout, "slow"))))
                .unwrap();
        assert_eq!(
            err,
            json!({"success": false, "output": null, "error": {"code": "TIMEOUT", "message": "slow"}})
        );
    }
}
