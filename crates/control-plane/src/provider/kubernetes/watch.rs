//! Readiness and loss by watch: one `kube::runtime::watcher` over this control plane's pods
//! (its owner label) turns every pod event into a [`PodState`] for the instance it belongs to.
//!
//! The watcher lists, then watches from the list's `resourceVersion`; a `410 Gone` (the
//! version is too old) makes it list again, and a broken connection is retried with an
//! exponential back-off ([`WatchBackoff`], 20 ms doubling to 10 s, reset by the next event).
//! After each (re-)list, pods this provider created before the list began but that the list
//! did not show were deleted while nobody watched: they are reported gone.
//!
//! [`interpret`] is a pure function of the pod object, unit-tested below.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use nanofaas_api::backoff::{Backoff, Delays};
use std::net::IpAddr;
use std::time::Duration;

/// What a pod's object says about its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not ready yet, nothing wrong seen (`reason`: what the pod waits for, e.g.
    /// `ContainerCreating`); `started` once its container runs (phase `Running`).
    Waiting {
        reason: Option<String>,
        started: bool,
    },
    /// The scheduler cannot place it (`PodScheduled=False`, reason `Unschedulable`); it may
    /// still be placed later, so a start waits for it until its timeout.
    Unschedulable { message: String },
    /// Ready (the readiness probe on the watchdog's `/health` passed) at this address.
    Ready { ip: IpAddr },
    /// It cannot start: `reason` names what Kubernetes says (`ErrImagePull`, ...);
    /// `permanent` when trying again with the same spec cannot help.
    StartError { reason: String, permanent: bool },
    /// Its container ended, or the pod is being deleted, evicted or lost with its node.
    /// `exit_code`: the container's, when it terminated.
    Ended {
        reason: String,
        exit_code: Option<i32>,
    },
}

/// Waiting reasons that end a start: the image cannot be had, or the container cannot be made.
const IMAGE_ERRORS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ImageInspectError",
    "RegistryUnavailable",
];
const CONTAINER_ERRORS: &[&str] = &[
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
    "PostStartHookError",
];

fn with_message(reason: &str, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    }
}

fn terminated(cs: &ContainerStatus) -> Option<PodState> {
    let t = cs.state.as_ref()?.terminated.as_ref()?;
    let reason = t.reason.as_deref().unwrap_or("Terminated");
    let what = with_message(reason, t.message.as_deref());
    Some(PodState::Ended {
        reason: format!(
            "its container terminated ({what}, exit code {})",
            t.exit_code
        ),
        exit_code: Some(t.exit_code),
    })
}

/// What `pod` says, by the first rule that applies: being deleted; `Failed` or `Succeeded`
/// (with the eviction's or the container's reason); a `DisruptionTarget` condition (eviction,
/// node loss, preemption); a terminated container; an image or container error in a waiting
/// container; `Unschedulable`; `Ready` with an IP; otherwise waiting.
pub fn interpret(pod: &Pod) -> PodState {
    let status = pod.status.as_ref();
    let containers: &[ContainerStatus] = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Ended {
            reason: "the pod is being deleted".into(),
            exit_code: None,
        };
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        if let Some(t) = containers.iter().find_map(terminated) {
            if let (Some(r), PodState::Ended { reason, exit_code }) =
                (status.and_then(|s| s.reason.as_deref()), &t)
            {
                let m = status.and_then(|s| s.message.as_deref());
                return PodState::Ended {
                    reason: format!("the pod {phase} ({}); {reason}", with_message(r, m)),
                    exit_code: *exit_code,
                };
            }
            return t;
        }
        let r = status.and_then(|s| s.reason.as_deref()).unwrap_or(phase);
        let m = status.and_then(|s| s.message.as_deref());
        return PodState::Ended {
            reason: format!("the pod {} ({})", phase.to_lowercase(), with_message(r, m)),
            exit_code: None,
        };
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        let r = c.reason.as_deref().unwrap_or("DisruptionTarget");
        return PodState::Ended {
            reason: format!(
                "the pod is being disrupted ({})",
                with_message(r, c.message.as_deref())
            ),
            exit_code: None,
        };
    }
    if let Some(t) = containers.iter().find_map(terminated) {
        return t;
    }
    for cs in containers {
        let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or("");
        let image = IMAGE_ERRORS.contains(&reason);
        if image || CONTAINER_ERRORS.contains(&reason) {
            let what = with_message(reason, w.message.as_deref());
            let last = cs
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map(|t| format!(" (last exit code {})", t.exit_code))
                .unwrap_or_default();
            return PodState::StartError {
                reason: format!("{what}{last}"),
                permanent: image || reason == "CreateContainerConfigError",
            };
        }
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        if c.reason.as_deref() == Some("Unschedulable") {
            return PodState::Unschedulable {
                message: with_message("Unschedulable", c.message.as_deref()),
            };
        }
    }
    let ready = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    if let (true, Some(ip)) = (ready, ip) {
        return PodState::Ready { ip };
    }
    let reason = containers
        .iter()
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .or_else(|| (phase == "Running").then(|| "not ready yet".to_string()));
    PodState::Waiting {
        reason,
        started: phase == "Running",
    }
}

/// The watcher's reconnect back-off: 20 ms doubling to 10 s, reset by any event.
#[derive(Debug)]
pub struct WatchBackoff(Delays);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff(Backoff::new(Duration::from_millis(20), Duration::from_secs(10)).delays())
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0.next_delay())
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "nf-x"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_ready_pod_with_an_ip_is_ready() {
        let p = pod(json!({
            "phase": "Running", "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
        }));
        assert_eq!(
            interpret(&p),
            PodState::Ready {
                ip: "10.1.2.3".parse().unwrap()
            }
        );
        let not_yet = pod(json!({"phase": "Running", "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "False"}]}));
        assert_eq!(
            interpret(&not_yet),
            PodState::Waiting {
                reason: Some("not ready yet".into()),
                started: true
            }
        );
        let no_ip =
            pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        assert!(matches!(interpret(&no_ip), PodState::Waiting { .. }));
        assert_eq!(
            interpret(&pod(json!({}))),
            PodState::Waiting {
                reason: None,
                started: false
            }
        );
    }

    #[test]
    fn image_pull_errors_are_permanent_start_errors_naming_the_reason() {
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            let p = pod(json!({"phase": "Pending", "containerStatuses": [{
                "name": "function", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "pull access denied for x"}}
            }]}));
            match interpret(&p) {
                PodState::StartError {
                    reason: r,
                    permanent,
                } => {
                    assert!(r.starts_with(reason), "{r}");
                    assert!(r.contains("pull access denied"), "{r}");
                    assert!(permanent);
                }
                other => panic!("{other:?}"),
            }
        }
        let crash = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "function", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 2}}
        }]}));
        assert_eq!(
            interpret(&crash),
            PodState::StartError {
                reason: "CrashLoopBackOff: back-off 40s (last exit code 2)".into(),
                permanent: false
            }
        );
        let creating = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "function", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(
            interpret(&creating),
            PodState::Waiting {
                reason: Some("ContainerCreating".into()),
                started: false
            }
        );
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."
        }]}));
        assert_eq!(
            interpret(&p),
            PodState::Unschedulable {
                message: "Unschedulable: 0/3 nodes are available: 3 Insufficient memory.".into()
            }
        );
    }

    #[test]
    fn deleted_evicted_failed_and_exited_pods_have_ended() {
        let mut p = pod(json!({"phase": "Running", "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        p.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
        assert!(matches!(
            interpret(&p),
            PodState::Ended {
                exit_code: None,
                ..
            }
        ));

        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        match interpret(&evicted) {
            PodState::Ended { reason, .. } => {
                assert!(reason.contains("Evicted: The node was low"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let disrupted = pod(
            json!({"phase": "Running", "podIP": "10.0.0.1", "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
             "message": "Taint manager: deleting due to NoExecute taint"}]}),
        );
        match interpret(&disrupted) {
            PodState::Ended { reason, .. } => {
                assert!(reason.contains("DeletionByTaintManager"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let exited = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "function", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 4, "reason": "Error"}}
        }]}));
        match interpret(&exited) {
            PodState::Ended { reason, exit_code } => {
                assert_eq!(exit_code, Some(4));
                assert!(reason.contains("exit code 4"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let done = pod(json!({"phase": "Succeeded"}));
        assert!(matches!(interpret(&done), PodState::Ended { .. }));
    }

    #[test]
    fn the_backoff_grows_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut b = WatchBackoff::default();
        let first: Vec<u64> = (0..3)
            .map(|_| b.next().unwrap().as_millis() as u64)
            .collect();
        assert_eq!(first, vec![20, 40, 80]);
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next().unwrap().as_millis(), 10_000);
        b.reset();
        assert_eq!(b.next().unwrap().as_millis(), 20);
    }
}
