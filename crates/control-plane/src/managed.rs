//! The backend factory used when a provider is configured: `POOL` functions go to their
//! endpoint, `DEPLOYMENT` functions get a warm [`Pool`], `JOB` functions a [`JobBackend`].

use crate::dispatch::{Backend, BoxFuture, HttpClient};
use crate::job::JobBackend;
use crate::metrics::{FunctionMetrics, Metrics};
use crate::platform::{BackendFactory, EndpointFactory};
use crate::pool::{Pool, PoolBackend, PoolSettings};
use crate::provider::Provider;
use nanofaas_api::{ExecutionMode, FunctionSpec, ValidationError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

pub struct ManagedFactory {
    pub endpoint: EndpointFactory,
    pub provider: Arc<dyn Provider>,
    pub client: HttpClient,
    pub metrics: Arc<Metrics>,
    pub pool_settings: PoolSettings,
    /// Live pools by function name (the newest version), for status pages.
    pools: Mutex<HashMap<String, Weak<Pool>>>,
}

impl ManagedFactory {
    pub fn new(
        provider: Arc<dyn Provider>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        pool_settings: PoolSettings,
    ) -> Self {
        Self {
            endpoint: EndpointFactory {
                client: client.clone(),
            },
            provider,
            client,
            metrics,
            pool_settings,
            pools: Mutex::default(),
        }
    }

    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.lock().unwrap().get(name).and_then(Weak::upgrade)
    }
}

impl BackendFactory for ManagedFactory {
    fn create(
        &self,
        spec: &Arc<FunctionSpec>,
        metrics: &Arc<FunctionMetrics>,
    ) -> Result<Arc<dyn Backend>, ValidationError> {
        match spec.execution_mode {
            ExecutionMode::Pool => self.endpoint.create(spec, metrics),
            ExecutionMode::Deployment => {
                // The provider refuses limits it cannot enforce, or warns which it runs without
                // (the process provider with provider.process.limits = "best-effort").
                self.provider.validate(spec)?;
                let pool = Pool::new(
                    spec.clone(),
                    self.provider.clone(),
                    self.client.clone(),
                    self.metrics.clone(),
                    self.pool_settings.clone(),
                );
                self.pools
                    .lock()
                    .unwrap()
                    .insert(spec.name.clone(), Arc::downgrade(&pool));
                Ok(Arc::new(PoolBackend { pool }))
            }
            ExecutionMode::Job => {
                self.provider.validate(spec)?;
                Ok(Arc::new(JobBackend {
                    spec: spec.clone(),
                    provider: self.provider.clone(),
                    metrics: self.metrics.clone(),
                }))
            }
        }
    }

    fn prewarmed(&self) -> serde_json::Value {
        serde_json::to_value(self.provider.prewarmed()).unwrap_or_else(|_| serde_json::json!([]))
    }

    fn prewarmed_for(&self, spec: &FunctionSpec) -> usize {
        self.provider.prewarmed_for(spec)
    }

    fn instances(&self, name: &str) -> Option<serde_json::Value> {
        let pool = self.pool(name)?;
        let mut list = serde_json::to_value(pool.instances()).ok()?;
        // Add what the provider knows (PIDs, container ids) to each instance.
        let known = self.provider.list();
        if let Some(arr) = list.as_array_mut() {
            for item in arr {
                let id = item["id"].as_str().unwrap_or_default().to_string();
                if let Some(info) = known.iter().find(|i| i.id == id) {
                    if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
                        (item.as_object_mut(), serde_json::to_value(info))
                    {
                        for (k, v) in extra {
                            if k != "id" && k != "function" {
                                obj.insert(k, v);
                            }
                        }
                    }
                }
            }
        }
        Some(list)
    }

    fn prepare(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let n = self.provider.cleanup_orphans().await;
            if n > 0 {
                tracing::warn!(
                    instances = n,
                    provider = self.provider.name(),
                    "removed instances left by a previous run"
                );
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.provider.shutdown().await })
    }
}
