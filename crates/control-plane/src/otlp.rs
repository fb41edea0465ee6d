//! Export of execution traces over OTLP/HTTP with JSON encoding (the protobuf JSON mapping of
//! `ExportTraceServiceRequest`), to the collector named by `telemetry.otlp_endpoint`.
//!
//! Off by default. When on, a finished execution is handed to [`Exporter::offer`], which only
//! tries to put a reference to it in a bounded queue: the hot path never waits, formats nothing
//! and never blocks on the collector. A task takes what is queued in batches of up to [`BATCH`]
//! executions, builds their spans ([`crate::trace::spans`]) and posts them. A full queue or a
//! failed post drops the traces concerned and counts them in `nanofaas_traces_dropped_total`; delivered
//! ones count in `nanofaas_traces_exported_total`. Nothing is retried: a trace is observability, not data.
//!
//! Executions whose caller sent `traceparent` with the sampled flag clear are not exported.

use crate::executions::Execution;
use crate::metrics::Metrics;
use crate::trace::{span_id_hex, spans, trace_id_hex};
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most executions in one export request.
pub const BATCH: usize = 256;
/// How long one export request may take before its traces are dropped.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue holds weak references: a queued trace never keeps a record (and its output) alive
/// past the execution store's TTL and caps; one evicted before its turn is dropped (counted).
pub struct Exporter {
    tx: mpsc::Sender<Weak<Execution>>,
    metrics: Arc<Metrics>,
}

/// The URL export requests go to: `endpoint`, plus `/v1/traces` when it has no path.
pub fn traces_url(endpoint: &str) -> Result<http::Uri, String> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or("must start with http://")?;
    let url = if rest.contains('/') && !rest.ends_with('/') {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    url.parse()
        .map_err(|e| format!("{url:?} is not a valid URL: {e}"))
}

impl Exporter {
    /// Starts the export task on the current tokio runtime. It ends when the exporter is
    /// dropped and its queue is empty.
    pub fn start(
        endpoint: &str,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Exporter>, tokio::task::JoinHandle<()>), String> {
        let uri = traces_url(endpoint)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let client = crate::h1::Client::new(crate::h1::ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 2,
        });
        let task = tokio::spawn(run(rx, client, uri, metrics.clone()));
        Ok((Arc::new(Exporter { tx, metrics }), task))
    }

    /// Queues `exec`'s trace for export, or drops it (counted) when the queue is full.
    pub fn offer(&self, exec: &Arc<Execution>) {
        if !exec.trace.sampled() {
            return;
        }
        if self.tx.try_send(Arc::downgrade(exec)).is_err() {
            self.metrics.global.traces_dropped.inc();
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Weak<Execution>>,
    client: crate::h1::Client,
    uri: http::Uri,
    metrics: Arc<Metrics>,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut failures_logged = 0u32;
    // One endpoint for the run, so that its kept-alive connection is reused between batches.
    let endpoint = crate::h1::Endpoint::http(&uri);
    loop {
        queued.clear();
        if rx.recv_many(&mut queued, BATCH).await == 0 {
            return;
        }
        let got = queued.len();
        batch.extend(queued.drain(..).filter_map(|w| w.upgrade()));
        // Evicted from the store before their turn.
        metrics
            .global
            .traces_dropped
            .add((got - batch.len()) as u64);
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        let body = serde_json::to_vec(&encode(&batch)).unwrap_or_default();
        batch.clear();
        let headers = [("content-type", "application/json")];
        let sent = match &endpoint {
            Ok(endpoint) => {
                let deadline = tokio::time::Instant::now() + POST_TIMEOUT;
                crate::dispatch::send(
                    &client,
                    endpoint,
                    &uri,
                    "POST",
                    &headers,
                    &body,
                    1 << 20,
                    deadline,
                )
                .await
            }
            Err(e) => Err(e.clone()),
        };
        let problem = match sent {
            Ok(r) if (200..300).contains(&r.status) => None,
            Ok(r) => Some(format!("the collector answered {}", r.status)),
            Err(crate::h1::Error::Timeout) => {
                Some(format!("no answer within {} s", POST_TIMEOUT.as_secs()))
            }
            Err(e) => Some(e.to_string()),
        };
        match problem {
            None => {
                metrics.global.traces_exported.add(n);
                failures_logged = 0;
            }
            Some(p) => {
                metrics.global.traces_dropped.add(n);
                // One line per run of failures, not one per batch.
                if failures_logged == 0 {
                    tracing::warn!(collector = %uri, problem = %p, traces = n, "trace export failed; traces are dropped until it works again (nanofaas_traces_dropped_total)");
                }
                failures_logged = failures_logged.saturating_add(1);
            }
        }
    }
}

fn attr(k: &str, v: &str) -> Value {
    json!({"key": k, "value": {"stringValue": v}})
}

/// `ExportTraceServiceRequest` in the protobuf JSON mapping: ids as hex, 64-bit integers as
/// decimal strings.
pub fn encode(execs: &[Arc<Execution>]) -> Value {
    let mut out = Vec::new();
    for e in execs {
        let trace_id = trace_id_hex(e.trace.trace_id);
        for s in spans(e) {
            let mut attributes: Vec<Value> = s.attributes.iter().map(|(k, v)| attr(k, v)).collect();
            if s.open {
                attributes.push(attr("nanofaas.open", "true"));
            }
            let kind = match s.name {
                "execution" => 2, // SERVER
                "dispatch" => 3,  // CLIENT
                _ => 1,           // INTERNAL
            };
            let mut span = json!({
                "traceId": trace_id,
                "spanId": span_id_hex(s.span_id),
                "name": s.name,
                "kind": kind,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": attributes,
                "status": {"code": if s.error { 2 } else { 1 }},
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = json!(span_id_hex(p));
            }
            out.push(span);
        }
    }
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [attr("service.name", "nanofaas")]},
            "scopeSpans": [{
                "scope": {"name": "nanofaas", "version": env!("CARGO_PKG_VERSION")},
                "spans": out,
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_only_to_a_bare_endpoint() {
        for (given, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "http://c:4318/otlp/v1/traces",
                "http://c:4318/otlp/v1/traces",
            ),
        ] {
            assert_eq!(traces_url(given).unwrap().to_string(), url);
        }
        assert!(traces_url("https://c:4318").is_err());
    }
}
