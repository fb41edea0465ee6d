//! The `DEPLOYMENT` backend: one attempt is a lease on a warm instance of the function's
//! [`Pool`], one HTTP hop to its watchdog, and the lease given back (marked broken when the
//! instance misbehaved or ran out of memory, so the pool replaces it).

use super::Pool;
use crate::dispatch::{
    invoke_http, Backend, BoxFuture, Call, DispatchResult, StartKind, Transport,
};
use crate::executions::{Failure, FailureKind, Outcome};
use crate::metrics::Metrics;
use crate::provider::Provider;
use nanofaas_api::ErrorCode;
use std::sync::Arc;

/// A failed attempt on an instance that the kernel killed (in part) for going over its memory
/// limit becomes `OUT_OF_MEMORY`, a function failure (retried only as the function's own
/// failures are), and is counted; the caller replaces the instance. Asked only on failures.
pub fn out_of_memory(
    provider: &dyn Provider,
    metrics: &Metrics,
    function: &str,
    instance: &str,
    outcome: Outcome,
) -> (Outcome, bool) {
    let Outcome::Failure(f) = &outcome else {
        return (outcome, false);
    };
    // The instance's watchdog saw its runtime killed for memory (its own cgroup) and said so.
    if f.error.code == ErrorCode::OutOfMemory.as_str() {
        metrics.function(function).out_of_memory.inc();
        return (outcome, false);
    }
    match provider.out_of_memory(instance) {
        Some(msg) => {
            tracing::warn!(function, instance, previous = %f.error, "{msg}");
            metrics.function(function).out_of_memory.inc();
            (
                Outcome::Failure(Failure::new(
                    FailureKind::Function,
                    ErrorCode::OutOfMemory,
                    msg,
                )),
                true,
            )
        }
        None => (outcome, false),
    }
}

/// `DEPLOYMENT` mode: dispatch through the function's warm pool.
pub struct PoolBackend {
    pub pool: Arc<Pool>,
}

impl Backend for PoolBackend {
    fn dispatch<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, DispatchResult> {
        Box::pin(async move {
            let pool = &self.pool;
            let wait = call.timeout.max(pool.settings.startup_timeout);
            let mut lease = match pool.acquire(wait).await {
                Ok(l) => l,
                Err(f) => return DispatchResult::start_failed(Outcome::Failure(f)),
            };
            let (cold, prewarmed) = (lease.cold, lease.prewarmed);
            let (outcome, transport, runtime_start) = invoke_http(
                &pool.client,
                &lease.conn.invoke,
                &lease.conn.endpoint,
                call,
                false,
                pool.settings.timeout_grace,
            )
            .await;
            let (outcome, oom) = out_of_memory(
                pool.provider.as_ref(),
                &pool.metrics,
                &pool.name,
                &lease.conn.instance_id,
                outcome,
            );
            match transport {
                _ if oom => lease.mark_broken("out of memory".into()),
                Transport::Answered => {}
                other => lease.mark_broken(format!("{other:?}")),
            }
            drop(lease);
            DispatchResult {
                outcome,
                // A call that waited for the instance, or for a restart of the runtime inside it
                // (after a timeout or a crash killed the previous one), paid a start.
                start: match (cold, runtime_start) {
                    (Some(init), _) if prewarmed => StartKind::Prewarmed { init },
                    (Some(init), _) | (None, Some(init)) => StartKind::Cold { init },
                    (None, None) => StartKind::Warm,
                },
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.pool.close().await })
    }
}
