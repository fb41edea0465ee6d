//! Providers bring function instances to life: the `process` provider (the embedded default:
//! watchdog and runtime as local child processes), the `docker` provider (one container per
//! instance, through the Docker Engine API; Podman's compatible socket works too) and the
//! `kubernetes` provider (one pod per instance, `kubernetes/`). One trait, chosen by
//! configuration in [`from_config`] and held as `Arc<dyn Provider>`; pools and jobs never know
//! which one they drive.
//!
//! A provider starts an instance and reports it once it is ready (its watchdog answers on
//! `invoke_url`), tells when it dies (`exited`), stops it, lists what it owns, and at start-up
//! removes what a previous run left behind.

pub mod docker;
pub mod exit;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod lease;
pub mod process;
pub mod shared;

use crate::dispatch::BoxFuture;
use bytes::Bytes;
use http::Uri;
use nanofaas_api::{FunctionSpec, ValidationError};
use std::sync::Arc;
use std::time::Duration;

/// A warm instance to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub instance_id: String,
    pub spec: Arc<FunctionSpec>,
}

/// A one-shot (JOB) instance to run: it runs the function once and posts the result to the
/// callback URL.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub instance_id: String,
    pub spec: Arc<FunctionSpec>,
    pub execution_id: String,
    pub trace_id: String,
    /// W3C `traceparent` of the attempt (`TRACEPARENT` in the instance's environment).
    pub traceparent: String,
    pub attempt: u32,
    pub payload: Bytes,
    pub timeout: Duration,
    pub callback_url: String,
    pub callback_token: String,
}

pub use exit::ExitWatch;
/// The process backend's entry points, for the factory and for tests of the backend itself.
pub use process::{ProcessProvider, ProcessSettings};

/// A started, ready warm instance.
pub struct Instance {
    pub id: String,
    /// The watchdog's `POST /invoke`.
    pub invoke_url: Uri,
    /// The watchdog's `GET /health`.
    pub health_url: Uri,
    /// A Unix socket serving the same HTTP as the URLs' host (`@name`: Linux abstract
    /// namespace); when set, requests go there instead.
    pub socket: Option<Arc<str>>,
    pub exited: ExitWatch,
}

/// A started one-shot instance.
pub struct Job {
    pub id: String,
    pub exited: ExitWatch,
}

/// Why an instance could not be started; the message says what the user can fix (and carries
/// the tail of the instance's log when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub message: String,
    /// True when trying again cannot help (the command does not exist, the image is missing).
    pub permanent: bool,
}

/// What a provider reports of an instance it owns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub id: String,
    pub function: String,
    /// `warm` or `job`.
    pub kind: &'static str,
    /// The watchdog's PID on this machine (for containers: when the engine runs here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The PID of the runtime the watchdog runs now, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_pid: Option<u32>,
    /// Container providers: the container id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

pub trait Provider: Send + Sync + 'static {
    /// `process`, `docker`, ...
    fn name(&self) -> &'static str;

    /// Checks that this provider can run `spec` (a command for processes, an image for
    /// containers); the error names the field.
    fn validate(&self, spec: &FunctionSpec) -> Result<(), ValidationError>;

    /// Starts a warm instance and resolves once it is ready to serve, or failed to start.
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<Instance, StartFailure>>;

    /// Starts a one-shot instance for one execution attempt.
    fn start_job(&self, req: JobRequest) -> BoxFuture<'_, Result<Job, StartFailure>>;

    /// Stops an instance: asks it to finish, then forces it after a grace period. Returns once
    /// nothing of it is left. Unknown ids are ignored.
    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, ()>;

    /// Whether the instance was killed for going over its memory limit (asked after an attempt
    /// on it failed, and right after it ended): the message names the limit. Providers that
    /// cannot tell answer `None`.
    fn out_of_memory(&self, _instance_id: &str) -> Option<String> {
        None
    }

    /// Everything this provider currently owns.
    fn list(&self) -> Vec<InstanceInfo>;

    /// Removes instances left by an earlier run of the control plane that died. Returns how
    /// many were found.
    fn cleanup_orphans(&self) -> BoxFuture<'_, usize>;

    /// Stops everything this provider owns (control plane shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;

    /// Prewarmed instances (see `prewarm`): a function that may use them was registered. The
    /// default, for providers without them, does nothing.
    fn prewarm_register(&self, _spec: &FunctionSpec) {}

    /// The function registered with [`Provider::prewarm_register`] is gone.
    fn prewarm_unregister(&self, _spec: &FunctionSpec) {}

    /// A prewarmed instance specialized for `req.spec` (limits applied, then its code loaded),
    /// or `None` when none is ready for its kind (the caller starts one with [`Provider::start`]).
    fn start_prewarmed(
        &self,
        _req: &StartRequest,
    ) -> Option<BoxFuture<'_, Result<Instance, PrewarmError>>> {
        None
    }

    /// The prewarmed instances per kind, for status pages.
    fn prewarmed(&self) -> Vec<crate::prewarm::KindStatus> {
        Vec::new()
    }

    /// How many prewarmed instances a cold start of `spec` could take now (the ready ones of
    /// its kind), for the dashboard.
    fn prewarmed_for(&self, _spec: &FunctionSpec) -> usize {
        0
    }
}

/// Why a prewarmed instance could not be used for a function.
#[derive(Debug, Clone)]
pub enum PrewarmError {
    /// The function's code failed to load in it (`STARTUP_ERROR` with the import error): the
    /// start failed as a cold start with that error would have.
    Failed(StartFailure),
    /// Not this time (its limits could not be applied, the runtime cannot be specialized, it
    /// broke): the instance was stopped; start one cold instead.
    Fallback(String),
}

/// The provider `provider.type` names: `None` for `none` (POOL functions only).
pub fn from_config(
    c: &crate::config::Config,
    logs: &Arc<crate::logs::Logs>,
) -> Result<Option<Arc<dyn Provider>>, String> {
    use crate::config::ProviderKind;
    Ok(Some(match c.provider.kind {
        ProviderKind::None => return Ok(None),
        ProviderKind::Process => {
            let p = Arc::new(process::from_config(c)?);
            p.set_logs(logs.clone());
            p.attach_prewarm();
            p
        }
        ProviderKind::Docker => {
            let d = Arc::new(docker::from_config(c)?);
            d.set_logs(logs.clone());
            d.attach_prewarm();
            d
        }
        #[cfg(feature = "kubernetes")]
        ProviderKind::Kubernetes => {
            let k = kubernetes::from_config(c)?;
            k.set_logs(logs.clone());
            Arc::new(k)
        }
        #[cfg(not(feature = "kubernetes"))]
        ProviderKind::Kubernetes => {
            return Err(
                "provider.type is kubernetes but this nanofaas was built without the kubernetes feature"
                    .into(),
            )
        }
    }))
}
