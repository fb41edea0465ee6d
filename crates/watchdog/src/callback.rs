//! Delivering `{success, output, error}` to `{callback_url}/{execution_id}:complete`, through
//! the shared sender (`nanofaas-callback`).
//!
//! Connection failures, timeouts, 408, 429 and 5xx answers are retried up to
//! `CALLBACK_MAX_ATTEMPTS` attempts in all, waiting 100 ms, 200 ms, 400 ms... (at most 2 s)
//! between them; any other answer ends delivery (2xx: delivered, else: refused).

use crate::config::{CallbackPolicy, HttpUrl};
use bytes::Bytes;

pub use nanofaas_callback::body;

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

/// Posts `body` until delivered or out of attempts. `Ok(attempts used)`, or why it failed.
pub async fn deliver(target: &Target, body: Bytes, policy: &CallbackPolicy) -> Result<u32, String> {
    let to = nanofaas_callback::Target::new(&target.base.authority, &target.base.path)?;
    let meta = nanofaas_callback::Meta {
        trace_id: target.trace_id.as_deref(),
        traceparent: target.traceparent.as_deref(),
        token: target.token.as_deref(),
    };
    nanofaas_callback::Sender::new(policy.clone())
        .send_observed(&to, &target.execution_id, meta, body, |attempt, why| {
            crate::debug!("callback attempt {attempt} failed: {why}")
        })
        .await
}
