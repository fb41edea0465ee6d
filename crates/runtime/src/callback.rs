//! The completion callback: `POST {url}/{executionId}:complete` with
//! `{"success", "output", "error"}`, `X-Trace-Id`, `traceparent` and `X-Callback-Token`, retried a few times.
//!
//! The shared sender of nanofaas (`nanofaas-callback`, the one the watchdog uses), over
//! `nanofaas-h1`: parsing callback URLs ([`Target::parse`]), the bodies, one HTTP/1.1 exchange per
//! attempt and the retry policy. It never fails the invocation: the caller logs what
//! [`Sender::send`] reports. Plain `http://` only: a TLS stack would cost more build time and
//! binary size than this runtime is worth, and callbacks go to the control plane on a private
//! network.

pub use nanofaas_callback::{
    classify, encode_segment, failure_body, success_body, Meta, Policy, Sender, Target, Verdict,
};
