//! One container of the docker provider through the engine: created from its body
//! (`container.rs`), its image pulled first when it is missing and `provider.docker.pull`
//! allows; registered as an entry and started, with the tasks that follow it (`watch.rs`); a
//! warm one probed until ready, its address settled and its lease held; stopped (SIGTERM, the
//! grace period, then removal); a start that failed read, removed and explained.
//!
//! Readiness is the watchdog's `GET /health`, probed every few milliseconds until the startup
//! timeout, while the container's exit is watched so a crash fails the start at once with the
//! container's last output. Warm containers get `WARM_ANNOUNCE=1`: their watchdog sends one
//! datagram to the bridge's gateway at start, so the host has the container's link address
//! before the first probe (without it, a probe sent as the engine's start returned often
//! waited for the host's next ARP retry, up to a second).

use super::api::EngineError;
use super::container::{container_name, WATCHDOG_PATH};
use super::watch::{follow_output, wait_healthy, watch_container};
use super::{DockerProvider, Entry, Pull};
use crate::provider::exit::wait_exit;
use crate::provider::shared::{LogTail, TAIL_LINES};
use crate::provider::{Instance, StartFailure, StartRequest};
use nanofaas_api::FunctionSpec;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Watchdog exit codes that mean "the command itself cannot run".
pub(crate) const WATCHDOG_EXIT_CONFIG: i64 = 2;
pub(crate) const WATCHDOG_EXIT_SPAWN: i64 = 4;
/// How long an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

impl DockerProvider {
    /// Creates the container, pulling its image first when it is missing and the policy allows.
    pub(super) async fn create(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        config: &Value,
    ) -> Result<String, StartFailure> {
        let image = spec.image.as_deref().unwrap_or_default();
        let name = container_name(instance_id);
        let failed = |e: EngineError| StartFailure {
            message: format!("cannot create a container of image {image:?}: {e}"),
            permanent: false,
        };
        match self.engine.create(&name, config).await {
            Ok(id) => Ok(id),
            Err(e) if e.is_not_found() && e.message().to_ascii_lowercase().contains("image") => {
                if self.settings.pull == Pull::Never {
                    return Err(StartFailure {
                        message: format!(
                            "image {image:?} is not on the container engine (build or pull it; provider.docker.pull is \"never\")"
                        ),
                        permanent: true,
                    });
                }
                tracing::info!(function = %spec.name, image, "pulling a missing image");
                self.engine
                    .pull(image, PULL_TIMEOUT)
                    .await
                    .map_err(|e| StartFailure {
                        message: format!(
                            "image {image:?} is not on the container engine and pulling it failed: {}",
                            e.message()
                        ),
                        permanent: true,
                    })?;
                self.engine.create(&name, config).await.map_err(failed)
            }
            Err(e) if e.is_not_found() => Err(StartFailure {
                message: format!(
                    "cannot create a container of image {image:?}: {}",
                    e.message()
                ),
                permanent: true,
            }),
            Err(e) => Err(failed(e)),
        }
    }

    /// Registers a created container, starts it and the tasks that follow its output and wait
    /// for its end.
    pub(super) async fn launch(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        kind: &'static str,
        container: String,
    ) -> Result<Arc<Entry>, StartFailure> {
        let (exit_tx, exited) = watch::channel(None);
        let entry = Arc::new(Entry {
            function: Mutex::new(spec.name.clone()),
            kind: Mutex::new(kind),
            container: container.clone(),
            host_pid: Mutex::new(None),
            exit_code: Mutex::new(None),
            exited,
            log: Arc::new(LogTail::default()),
        });
        self.entries
            .lock()
            .unwrap()
            .insert(instance_id.to_string(), entry.clone());
        if let Err(e) = self.engine.start(&container).await {
            self.entries.lock().unwrap().remove(instance_id);
            let _ = self.engine.remove(&container).await;
            let msg = e.message();
            let lower = msg.to_ascii_lowercase();
            // A missing entrypoint: the image has no watchdog, retrying cannot help.
            let permanent =
                lower.contains("no such file or directory") || lower.contains("not found");
            return Err(StartFailure {
                message: format!(
                    "cannot start the container of {:?} (image {:?}): {msg}{}",
                    spec.name,
                    spec.image.as_deref().unwrap_or_default(),
                    if permanent {
                        format!(
                            "; images must contain the watchdog at {WATCHDOG_PATH} (build them FROM a nanofaas runtime image)"
                        )
                    } else {
                        String::new()
                    }
                ),
                permanent,
            });
        }
        tokio::spawn(follow_output(
            self.engine.clone(),
            entry.clone(),
            instance_id.to_string(),
            self.settings.log_lines_per_second,
            self.logs.get().cloned(),
        ));
        tokio::spawn(watch_container(
            self.engine.clone(),
            self.entries.clone(),
            instance_id.to_string(),
            entry.clone(),
            exit_tx,
        ));
        Ok(entry)
    }

    /// Starts a warm container of `req.spec`, or (`stem`) a generic one of its kind: no
    /// function's variables, `WARM_PREWARM=1`, labelled `prewarmed`, waiting for
    /// `POST /specialize` (see `prewarm`).
    pub(super) async fn start_warm(
        &self,
        req: StartRequest,
        stem: bool,
    ) -> Result<Instance, StartFailure> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Self::closed_failure());
        }
        let spec = &req.spec;
        let id = &req.instance_id;
        let (config, kind) = self.warm_config(spec, id, stem);
        let container = self.create(id, spec, &config).await?;
        let entry = self.launch(id, spec, kind, container).await?;
        // From the container's start (an image pull before it does not count).
        let deadline = Instant::now() + self.settings.startup_timeout;
        if self.closed.load(Ordering::SeqCst) {
            self.stop_entry(id, entry).await;
            return Err(Self::closed_failure());
        }
        let (addr, inspected) = match self.engine.inspect(&entry.container).await {
            Ok(i) => (self.address(&i), Some(i)),
            Err(e) => (Err(e.to_string()), None),
        };
        let addr = match addr {
            Ok(a) => a,
            Err(why) => return Err(self.fail_start(id, spec, entry, Some(why)).await),
        };
        let ready = wait_healthy(addr, deadline, entry.exited.clone()).await;
        if !ready {
            let why = entry.exited.borrow().is_none().then(|| {
                format!(
                    "the instance was not ready within {} ms",
                    self.settings.startup_timeout.as_millis()
                )
            });
            return Err(self.fail_start(id, spec, entry, why).await);
        }
        let addr = match &inspected {
            Some(i) => self.choose_address(addr, i).await,
            None => addr,
        };
        // Held while the instance lives: if this control plane dies, the instance follows.
        tokio::spawn(crate::provider::lease::hold(
            id.clone(),
            addr,
            entry.exited.clone(),
            crate::provider::lease::BEAT,
        ));
        let base = format!("http://{addr}");
        Ok(Instance {
            id: id.clone(),
            invoke_url: format!("{base}/invoke").parse().expect("valid URL"),
            socket: None,
            health_url: format!("{base}/health").parse().expect("valid URL"),
            exited: entry.exited.clone(),
        })
    }

    /// Stops an instance: SIGTERM, the grace period, then forced removal. Returns once the
    /// container is gone (or the engine failed to answer within its timeouts).
    pub(super) async fn stop_entry(&self, id: &str, entry: Arc<Entry>) {
        let mut exited = entry.exited.clone();
        if exited.borrow().is_none() {
            if let Err(e) = self.engine.kill(&entry.container, "SIGTERM").await {
                tracing::warn!(instance = %id, error = %e, "cannot signal the container");
            }
            let gone = tokio::time::timeout(self.settings.stop_grace, wait_exit(&mut exited)).await;
            if gone.is_err() {
                tracing::warn!(instance = %id, "container did not stop within the grace period; removing it by force");
            }
        }
        if exited.borrow().is_none() {
            if let Err(e) = self.engine.remove(&entry.container).await {
                tracing::warn!(instance = %id, error = %e, "cannot remove the container");
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), wait_exit(&mut exited)).await;
        }
        // The watcher removes the container after its exit; make sure even if it could not.
        if exited.borrow().is_none() {
            let _ = self.engine.remove(&entry.container).await;
            self.entries.lock().unwrap().remove(id);
        }
    }

    /// A start that failed after the container was created: read its output, remove it, say why.
    pub(super) async fn fail_start(
        &self,
        instance_id: &str,
        spec: &FunctionSpec,
        entry: Arc<Entry>,
        why: Option<String>,
    ) -> StartFailure {
        if entry.exited.borrow().is_none() {
            // Still running (not ready in time, or no address): keep what it printed.
            if let Ok(lines) = self.engine.logs_tail(&entry.container, TAIL_LINES).await {
                entry.log.replace(lines);
            }
        }
        self.stop_entry(instance_id, entry.clone()).await;
        let why = why
            .or_else(|| entry.exited.borrow().clone())
            .unwrap_or_else(|| "the container stopped".into());
        let code = *entry.exit_code.lock().unwrap();
        StartFailure {
            message: format!(
                "the container of {:?} (image {:?}) failed to start: {why}; its last output:\n{}",
                spec.name,
                spec.image.as_deref().unwrap_or_default(),
                entry.log.render("(the container wrote nothing)")
            ),
            permanent: matches!(code, Some(WATCHDOG_EXIT_CONFIG | WATCHDOG_EXIT_SPAWN)),
        }
    }

    pub(super) fn closed_failure() -> StartFailure {
        StartFailure {
            message: "the control plane is shutting down".into(),
            permanent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::free_loopback_port;
    use super::super::tests::{inspect_json, log_frame, provider, settings, spec};
    use super::super::Pull;
    use crate::provider::{JobRequest, Provider, StartRequest};
    use bytes::Bytes;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn a_container_that_exits_during_start_fails_with_its_output() {
        let (p, mut v) = provider(settings());
        let start = tokio::spawn({
            let p = p.clone();
            async move {
                p.start(StartRequest {
                    instance_id: "fn1-bad".into(),
                    spec: spec(json!({})),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(201, json!({"Id": "dead"}));
        v.expect("POST", "/containers/dead/start")
            .await
            .reply(204, "");
        let _logs = v
            .expect(
                "GET",
                "/containers/dead/logs?stdout=true&stderr=true&follow",
            )
            .await
            .stream(200);
        // The address lookup points at a port where nothing listens; the watcher's first
        // inspect happens too.
        let closed_port = free_loopback_port().unwrap();
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, true));
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, true));
        v.expect("POST", "/containers/dead/wait")
            .await
            .json(200, json!({"StatusCode": 2}));
        v.expect("GET", "/containers/dead/json")
            .await
            .json(200, inspect_json(closed_port, false));
        v.expect("GET", "/containers/dead/logs?stdout=true&stderr=true&tail=")
            .await
            .reply(
                200,
                log_frame(
                    2,
                    "invalid configuration: WATCHDOG_CMD: is required but not set\n",
                ),
            );
        v.expect("DELETE", "/containers/dead").await.reply(204, "");
        let err = tokio::time::timeout(Duration::from_secs(5), start)
            .await
            .unwrap()
            .unwrap()
            .err()
            .expect("start fails");
        assert!(err.permanent, "exit code 2 is a configuration error");
        assert!(
            err.message.contains("exited with code 2")
                && err.message.contains("WATCHDOG_CMD: is required"),
            "{}",
            err.message
        );
        assert!(p.list().is_empty());
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_missing_image_is_a_permanent_failure_when_pulling_is_off() {
        let (p, mut v) = provider(settings());
        let start = tokio::spawn({
            let p = p.clone();
            async move {
                p.start(StartRequest {
                    instance_id: "fn1-x".into(),
                    spec: spec(json!({})),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(404, json!({"message": "No such image: nanofaas/example:1"}));
        let err = start.await.unwrap().err().unwrap();
        assert!(err.permanent);
        assert!(
            err.message.contains("nanofaas/example:1")
                && err.message.contains("not on the container engine"),
            "{}",
            err.message
        );
        v.assert_idle(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_missing_image_is_pulled_then_created_when_allowed() {
        let mut s = settings();
        s.pull = Pull::Missing;
        let (p, mut v) = provider(s);
        let job = tokio::spawn({
            let p = p.clone();
            async move {
                p.start_job(JobRequest {
                    instance_id: "fn1-job-1".into(),
                    spec: spec(json!({"executionMode": "JOB"})),
                    execution_id: "e1".into(),
                    trace_id: "t1".into(),
                    traceparent: String::new(),
                    attempt: 1,
                    payload: Bytes::from_static(b"{\"input\":1}"),
                    timeout: Duration::from_secs(3),
                    callback_url: "http://registry-less:9/cb".into(),
                    callback_token: "tok".into(),
                })
                .await
            }
        });
        v.expect("POST", "/containers/create")
            .await
            .json(404, json!({"message": "No such image: nanofaas/example:1"}));
        let pull = v
            .expect("POST", "/images/create?fromImage=nanofaas%2Fexample&tag=1")
            .await;
        // Pull errors come inside the progress stream.
        pull.reply(
            200,
            "{\"status\":\"Pulling\"}\n{\"error\":\"no route to registry\"}\n",
        );
        let err = job.await.unwrap().err().unwrap();
        assert!(err.permanent);
        assert!(
            err.message.contains("no route to registry"),
            "{}",
            err.message
        );
        v.assert_idle(Duration::from_millis(100)).await;
    }
}
