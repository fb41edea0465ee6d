//! `JOB` mode: one fresh one-shot instance per attempt, whose result arrives by the
//! authenticated callback. It is the cold baseline warm pools are measured against.

use crate::dispatch::{Backend, BoxFuture, Call, DispatchResult};
use crate::executions::{Failure, FailureKind, Outcome};
use crate::metrics::Metrics;
use crate::provider::{JobRequest, Provider};
use nanofaas_api::{ErrorCode, FunctionSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a result may trail the job's exit (the callback is posted just before it exits).
const CALLBACK_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long a job that reported its result may take to exit on its own before it is stopped.
const EXIT_AFTER_RESULT: Duration = Duration::from_secs(2);
/// Extra time beyond the function's timeout before the job is killed: the watchdog enforces the
/// timeout itself and reports it by callback.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

pub struct JobBackend {
    pub spec: Arc<FunctionSpec>,
    pub provider: Arc<dyn Provider>,
    pub metrics: Arc<Metrics>,
}

impl Backend for JobBackend {
    fn dispatch<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, DispatchResult> {
        Box::pin(async move {
            let started = Instant::now();
            let id = format!("{}-job-{}", self.spec.name, &crate::ids::trace_id()[..12]);
            let cb = call.callback();
            let req = JobRequest {
                instance_id: id.clone(),
                spec: self.spec.clone(),
                execution_id: call.exec.id.to_string(),
                trace_id: call.exec.trace_id.to_string(),
                traceparent: call
                    .exec
                    .trace
                    .traceparent(call.attempt)
                    .as_str()
                    .to_string(),
                attempt: call.attempt,
                payload: call.body.clone(),
                timeout: call.timeout,
                callback_url: cb.url,
                callback_token: cb.token,
            };
            self.metrics.global.instances_running.inc();
            let job = match self.provider.start_job(req).await {
                Ok(j) => j,
                Err(f) => {
                    self.metrics.global.instances_running.dec();
                    self.metrics.global.instances_failed.inc();
                    let kind = if f.permanent {
                        FailureKind::Fatal
                    } else {
                        FailureKind::Platform
                    };
                    return DispatchResult::start_failed(Outcome::Failure(Failure::new(
                        kind,
                        ErrorCode::SpawnError,
                        f.message,
                    )));
                }
            };
            self.metrics.global.instances_started.inc();
            let mut exited = job.exited.clone();
            let result = call.exec.wait_attempt(call.attempt);
            tokio::pin!(result);
            let outcome = tokio::select! {
                o = &mut result => o,
                _ = crate::provider::exit::wait_exit(&mut exited) => {
                    // Exited: the callback, if any, is at most a moment behind.
                    match tokio::time::timeout(CALLBACK_AFTER_EXIT, &mut result).await {
                        Ok(o) => o,
                        Err(_) => {
                            let why = exited.borrow().clone().unwrap_or_default();
                            Outcome::Failure(Failure::new(
                                FailureKind::Platform,
                                ErrorCode::InstanceLost,
                                format!("the job instance ended without reporting a result ({why})"),
                            ))
                        }
                    }
                }
                _ = tokio::time::sleep(call.timeout + TIMEOUT_GRACE) => Outcome::Failure(Failure::new(
                    FailureKind::Timeout,
                    ErrorCode::Timeout,
                    format!("the job did not report within {} ms", call.timeout.as_millis()),
                )),
            };
            // Asked before the stop below removes the instance's cgroup.
            let (outcome, oom) = crate::pool::out_of_memory(
                self.provider.as_ref(),
                &self.metrics,
                &self.spec.name,
                &job.id,
                outcome,
            );
            if oom {
                call.exec.amend_attempt(call.attempt, outcome.clone());
            }
            // The instance posted its result and is on its way out: let it read our answer and
            // exit on its own for a moment before stopping it.
            if !matches!(&outcome, Outcome::Failure(f) if f.kind == FailureKind::Timeout) {
                let _ = tokio::time::timeout(
                    EXIT_AFTER_RESULT,
                    crate::provider::exit::wait_exit(&mut exited),
                )
                .await;
            }
            self.provider.stop(&job.id).await;
            self.metrics.global.instances_running.dec();
            self.metrics.global.instances_stopped.inc();
            // Every JOB attempt is a cold start; its "init" is the whole life of the instance.
            DispatchResult {
                outcome,
                start: crate::dispatch::StartKind::Cold {
                    init: started.elapsed(),
                },
            }
        })
    }
}
