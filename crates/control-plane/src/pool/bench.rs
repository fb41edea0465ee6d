//! The hot path's cost, measured (ignored by default): 1e6 acquire/release pairs on one warm
//! instance, in real time, against a provider that starts instances at once.
//! `cargo test -p nanofaas-control-plane --lib pool::bench -- --ignored --nocapture`

use super::{Pool, PoolSettings};
use crate::dispatch::BoxFuture;
use crate::metrics::Metrics;
use crate::provider::{
    Instance, InstanceInfo, Job, JobRequest, Provider, StartFailure, StartRequest,
};
use nanofaas_api::{FunctionSpec, ValidationError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Starts every instance at once; keeps their exit watches open.
#[derive(Default)]
struct Instant0(Mutex<Vec<watch::Sender<Option<String>>>>);

impl Provider for Instant0 {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn validate(&self, _: &FunctionSpec) -> Result<(), ValidationError> {
        Ok(())
    }
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>> {
        let (tx, exited) = watch::channel(None);
        self.0.lock().unwrap().push(tx);
        Box::pin(async move {
            Ok(Instance {
                id: req.instance_id,
                invoke_url: "http://instance/invoke".parse().unwrap(),
                health_url: "http://instance/health".parse().unwrap(),
                socket: Some("@nanofaas-pool-bench".into()),
                exited,
            })
        })
    }
    fn start_job(&self, _: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>> {
        unreachable!("no jobs in the bench")
    }
    fn stop<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn list(&self) -> Vec<InstanceInfo> {
        Vec::new()
    }
    fn cleanup_orphans(&self) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
#[ignore]
async fn bench_acquire_release() {
    for (label, extra) in [
        ("defaults", serde_json::json!({})),
        (
            "minInstances 1, idle timeout",
            serde_json::json!({"minInstances": 1, "idleTimeoutMs": 60000}),
        ),
    ] {
        // POOL_BENCH_ONLY=<label prefix> runs one configuration.
        if std::env::var("POOL_BENCH_ONLY").is_ok_and(|o| !label.starts_with(&o)) {
            continue;
        }
        let mut spec = serde_json::json!({"name": "f", "command": ["run"], "maxInstances": 4});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let spec: FunctionSpec = serde_json::from_value(spec).unwrap();
        let client = crate::dispatch::http_client(&crate::dispatch::ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 4,
        });
        let pool = Pool::new(
            Arc::new(spec),
            Arc::new(Instant0::default()),
            client,
            Arc::new(Metrics::default()),
            PoolSettings {
                health_check_interval: Duration::ZERO,
                start_backoff: Duration::from_millis(100),
                start_backoff_max: Duration::from_secs(1),
                startup_timeout: Duration::from_secs(5),
                timeout_grace: Duration::from_secs(1),
            },
        );
        drop(pool.acquire(Duration::from_secs(5)).await.unwrap());
        // POOL_BENCH_N and POOL_BENCH_ROUNDS make it small enough for callgrind.
        let n: u32 = std::env::var("POOL_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let rounds: u32 = std::env::var("POOL_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7);
        for round in 0..rounds {
            let t = std::time::Instant::now();
            for _ in 0..n {
                drop(pool.acquire(Duration::from_secs(5)).await.unwrap());
            }
            let took = t.elapsed();
            println!(
                "{label}, round {round}: {n} acquire+release in {took:?}: {:.1} ns per pair",
                took.as_nanos() as f64 / n as f64
            );
        }
        pool.close().await;
    }
}
