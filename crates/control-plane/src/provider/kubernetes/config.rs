//! How the provider reaches the Kubernetes API: credentials (the pod's service account, or a
//! kubeconfig file and context) and a client-side token bucket in front of every request.

use crate::config::KubernetesConfig;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and the mounted token).
    InCluster,
    /// A kubeconfig file, with a context (`None`: its current one).
    File {
        path: PathBuf,
        context: Option<String>,
    },
}

/// The source `provider.kubernetes.kubeconfig` and `context` name, given the environment's
/// `KUBERNETES_SERVICE_HOST`, `KUBECONFIG` and `HOME`.
pub fn source(
    c: &KubernetesConfig,
    service_host: Option<&str>,
    kubeconfig_env: Option<&str>,
    home: Option<&str>,
) -> Result<Source, String> {
    let context = Some(c.context.clone()).filter(|s| !s.is_empty());
    if !c.kubeconfig.is_empty() {
        return Ok(Source::File {
            path: c.kubeconfig.clone().into(),
            context,
        });
    }
    if service_host.is_some_and(|h| !h.is_empty()) && context.is_none() {
        return Ok(Source::InCluster);
    }
    // KUBECONFIG may list several files; the first is used.
    if let Some(first) = kubeconfig_env.and_then(|k| k.split(':').find(|p| !p.is_empty())) {
        return Ok(Source::File {
            path: first.into(),
            context,
        });
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => Ok(Source::File {
            path: PathBuf::from(h).join(".kube/config"),
            context,
        }),
        None => Err(
            "provider.type is kubernetes but there are no credentials: not in a cluster (KUBERNETES_SERVICE_HOST unset), no KUBECONFIG, no HOME; set provider.kubernetes.kubeconfig"
                .into(),
        ),
    }
}

/// Reads and checks the source's kubeconfig now (so that a missing file or context fails
/// the start), or checks the in-cluster token.
pub fn check(source: &Source) -> Result<(), String> {
    match source {
        Source::InCluster => kube::Config::incluster()
            .map(|_| ())
            .map_err(|e| format!("provider.kubernetes: in-cluster credentials: {e}")),
        Source::File { path, context } => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("provider.kubernetes.kubeconfig {}: {e}", path.display()))?;
            if let Some(ctx) = context {
                if !kc.contexts.iter().any(|c| &c.name == ctx) {
                    return Err(format!(
                        "provider.kubernetes.context {ctx:?} is not in {}",
                        path.display()
                    ));
                }
            }
            Ok(())
        }
    }
}

/// A client for `source`, every request through a [`RateLimit`] of `qps` with `burst`, and the
/// namespace to use (`namespace`, else the credentials' own).
pub async fn client(
    source: &Source,
    namespace: &str,
    qps: f64,
    burst: u32,
    stats: Arc<ApiStats>,
) -> Result<(kube::Client, String), String> {
    let config = match source {
        Source::InCluster => {
            kube::Config::incluster().map_err(|e| format!("in-cluster credentials: {e}"))?
        }
        Source::File { path, context } => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            let opts = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
    };
    let ns = if namespace.is_empty() {
        config.default_namespace.clone()
    } else {
        namespace.to_string()
    };
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
    let client = builder
        .with_layer(&RateLimit::new(qps, burst, stats))
        .build();
    Ok((client, ns))
}

/// Counts of what went to the API.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that had to wait for the bucket.
    pub throttled: AtomicU64,
}

/// A token bucket: `qps` tokens a second, at most `burst` kept; `qps` 0 = unlimited.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`: `None` when granted, else how long to wait before asking again.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.qps <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        Some(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
    }
}

/// A tower layer holding every request until the bucket grants it a token. The client's
/// buffer calls `poll_ready` before each request, one at a time, so requests leave in order.
#[derive(Clone)]
pub struct RateLimit {
    qps: f64,
    burst: u32,
    stats: Arc<ApiStats>,
}

impl RateLimit {
    pub fn new(qps: f64, burst: u32, stats: Arc<ApiStats>) -> RateLimit {
        RateLimit { qps, burst, stats }
    }
}

impl<S> tower::Layer<S> for RateLimit {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: TokenBucket::new(self.qps, self.burst, Instant::now()),
            sleep: None,
            granted: false,
            stats: self.stats.clone(),
        }
    }
}

pub struct RateLimited<S> {
    inner: S,
    bucket: TokenBucket,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A token is held for the next `call`.
    granted: bool,
    stats: Arc<ApiStats>,
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.granted {
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.bucket.take(Instant::now()) {
                None => self.granted = true,
                Some(wait) => {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.granted = false;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kubeconfig: &str, context: &str) -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: kubeconfig.into(),
            context: context.into(),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_come_from_the_setting_the_cluster_or_the_environment() {
        let file = |p: &str, c: Option<&str>| Source::File {
            path: p.into(),
            context: c.map(String::from),
        };
        assert_eq!(
            source(&cfg("k.yaml", "dev"), Some("10.0.0.1"), None, None),
            Ok(file("k.yaml", Some("dev")))
        );
        assert_eq!(
            source(&cfg("", ""), Some("10.0.0.1"), Some("a"), Some("/h")),
            Ok(Source::InCluster)
        );
        assert_eq!(
            source(&cfg("", ""), None, Some(":a:b"), Some("/h")),
            Ok(file("a", None))
        );
        assert_eq!(
            source(&cfg("", "c"), None, None, Some("/h")),
            Ok(file("/h/.kube/config", Some("c")))
        );
        assert!(source(&cfg("", ""), None, None, None).is_err());
    }

    #[test]
    fn a_missing_kubeconfig_or_context_is_an_error_naming_it() {
        let e = check(&Source::File {
            path: "/nonexistent/kubeconfig".into(),
            context: None,
        })
        .unwrap_err();
        assert!(e.contains("provider.kubernetes.kubeconfig"), "{e}");
        let dir = std::env::temp_dir().join(format!("nanofaas-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\ncurrent-context: a\n",
        )
        .unwrap();
        check(&Source::File {
            path: f.clone(),
            context: Some("a".into()),
        })
        .unwrap();
        let e = check(&Source::File {
            path: f,
            context: Some("b".into()),
        })
        .unwrap_err();
        assert!(e.contains("\"b\""), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), None);
        }
        let wait = b.take(t0).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_millis(100)), None);
        // Idle time refills up to the burst only.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), None);
        }
        assert!(b.take(later).is_some());
        let mut unlimited = TokenBucket::new(0.0, 1, t0);
        for _ in 0..1000 {
            assert_eq!(unlimited.take(t0), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_spaces_requests_at_the_rate() {
        use tower::{Layer, Service, ServiceExt};
        let stats = Arc::new(ApiStats::default());
        let mut svc =
            RateLimit::new(5.0, 2, stats.clone()).layer(tower::service_fn(|_: ()| async {
                Ok::<_, std::convert::Infallible>(Instant::now())
            }));
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            let s = svc.ready().await.unwrap();
            at.push(s.call(()).await.unwrap() - t0);
        }
        let ms: Vec<u128> = at.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 200, 400, 600]);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 5);
        assert_eq!(stats.throttled.load(Ordering::Relaxed), 3);
    }
}
