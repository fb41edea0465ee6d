//! A scripted fake engine for unit tests: the provider talks to a [`FakeTransport`], the test
//! plays the engine through the [`Verifier`], asserting each request and answering it. A call
//! the test expects but that never comes fails the test after a bounded wait instead of hanging.
//!
//! Requests may arrive in any order (the provider issues some concurrently), so
//! [`Verifier::expect`] takes the first pending request that matches and keeps the others for
//! later expectations; [`Verifier::assert_idle`] checks that nothing unexpected is left.

use super::api::{ApiRequest, ApiResponse, BodyStream, Transport, TransportError};
use crate::dispatch::BoxFuture;
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<ApiResponse, TransportError>>;

pub struct FakeTransport {
    tx: mpsc::UnboundedSender<(ApiRequest, Reply)>,
}

impl Transport for FakeTransport {
    fn send(&self, req: ApiRequest) -> BoxFuture<'_, Result<ApiResponse, TransportError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((req, reply));
        Box::pin(async move {
            if sent.is_err() {
                return Err(TransportError("the fake engine is gone".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(TransportError("the fake engine hung up".into())))
        })
    }

    fn describe(&self) -> String {
        "fake://engine".into()
    }
}

/// One request the provider made, waiting for the test's answer.
pub struct Exchange {
    pub req: ApiRequest,
    reply: Reply,
}

impl Exchange {
    pub fn path(&self) -> &str {
        &self.req.path
    }

    /// The request body as JSON (`Null` without one).
    pub fn body(&self) -> Value {
        self.req
            .body
            .as_ref()
            .map(|b| serde_json::from_slice(b).expect("request body is JSON"))
            .unwrap_or(Value::Null)
    }

    pub fn reply(self, status: u16, body: impl Into<Bytes>) {
        let _ = self.reply.send(Ok(ApiResponse {
            status,
            body: BodyStream::full(body),
        }));
    }

    pub fn json(self, status: u16, v: Value) {
        self.reply(status, v.to_string());
    }

    /// Answers with a body the test keeps writing to; dropping the sender ends it.
    pub fn stream(self, status: u16) -> mpsc::Sender<Result<Bytes, String>> {
        let (tx, rx) = mpsc::channel(16);
        let _ = self.reply.send(Ok(ApiResponse {
            status,
            body: BodyStream(rx),
        }));
        tx
    }

    pub fn fail(self, why: &str) {
        let _ = self.reply.send(Err(TransportError(why.into())));
    }
}

pub struct Verifier {
    rx: mpsc::UnboundedReceiver<(ApiRequest, Reply)>,
    pending: Vec<Exchange>,
    patience: Duration,
}

/// A connected fake transport and its verifier.
pub fn pair() -> (FakeTransport, Verifier) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        FakeTransport { tx },
        Verifier {
            rx,
            pending: Vec::new(),
            patience: Duration::from_secs(5),
        },
    )
}

impl Verifier {
    /// The first request (pending or new) with this method whose path starts with `prefix`;
    /// fails the test when none arrives in time.
    pub async fn expect(&mut self, method: &str, prefix: &str) -> Exchange {
        let matches =
            |e: &Exchange| e.req.method.as_str() == method && e.req.path.starts_with(prefix);
        if let Some(i) = self.pending.iter().position(matches) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((req, reply))) => {
                    let e = Exchange { req, reply };
                    if matches(&e) {
                        return e;
                    }
                    self.pending.push(e);
                }
                Ok(None) => panic!("expected {method} {prefix}: the provider is gone"),
                Err(_) => panic!(
                    "expected {method} {prefix} within {:?}; pending instead: {:?}",
                    self.patience,
                    self.pending_calls()
                ),
            }
        }
    }

    fn pending_calls(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|e| format!("{} {}", e.req.method, e.req.path))
            .collect()
    }

    /// Fails the test if a request arrives within `quiet` or one is left unanswered.
    pub async fn assert_idle(&mut self, quiet: Duration) {
        if let Ok(Some((req, _))) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected request {} {}", req.method, req.path);
        }
        assert!(
            self.pending.is_empty(),
            "unanswered requests: {:?}",
            self.pending_calls()
        );
    }
}
