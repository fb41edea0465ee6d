//! The pods instances run in, built as pure functions of the settings and the spec (unit-tested
//! below, no API involved).
//!
//! One container, `function`: the function's image with the watchdog ([`WATCHDOG_PATH`], as the
//! Docker provider runs it) as its command. Warm pods run it in `WARM` mode on the configured
//! watchdog port with a readiness probe on its `/health`; JOB pods run it in one-shot mode and
//! post their result to the callback URL. `resources` become both requests and limits (the
//! pool counts on what a pod gets, not on what it may take), and the security context is the
//! restricted one: a non-root user, no privilege escalation, every capability dropped,
//! `RuntimeDefault` seccomp, and no service account token.
//!
//! `restartPolicy` is `Never` for both kinds: the pool decides an instance's life, so a
//! watchdog that exits is an instance lost (replaced by the pool) rather than a container the
//! kubelet restarts behind its back; a crash during start shows as the container's termination
//! at once instead of a `CrashLoopBackOff` after a back-off.

use super::super::docker::{RUNTIME_PORT, WATCHDOG_PATH};
use crate::config::PullPolicy;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, LocalObjectReference, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nanofaas_api::{FunctionSpec, RuntimeMode};
use std::collections::BTreeMap;
use std::time::Duration;

/// Labels on every pod nanofaas starts.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "nanofaas";
pub const LABEL_FUNCTION: &str = "nanofaas.dev/function";
pub const LABEL_INSTANCE: &str = "nanofaas.dev/instance";
pub const LABEL_OWNER: &str = "nanofaas.dev/owner";
pub const LABEL_KIND: &str = "nanofaas.dev/kind";
/// Annotations with the exact names (labels values are limited to 63 characters of a smaller
/// alphabet).
pub const ANNOTATION_INSTANCE: &str = "nanofaas.dev/instance-id";
pub const ANNOTATION_FUNCTION: &str = "nanofaas.dev/function-name";
/// The container's name in every pod.
pub const CONTAINER: &str = "function";
/// The user and group instance pods run as (`runAsNonRoot` needs a numeric one: the runtime
/// images do not name a user).
pub const NON_ROOT_ID: i64 = 65532;

/// What every pod gets from the configuration.
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub pull_policy: PullPolicy,
    pub pull_secrets: Vec<String>,
    pub watchdog_port: u16,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The `nanofaas.dev/owner` label value.
    pub owner: String,
    /// The control plane's own pod, when it runs in the cluster.
    pub owner_ref: Option<OwnerReference>,
    pub startup_timeout: Duration,
    pub stop_grace: Duration,
    /// Ask the watchdog to tag its runtime's lines (`crate::logs::ENV_LOG_TAGS`): on when the
    /// provider follows the pods' logs.
    pub log_tags: bool,
}

/// The pod name of an instance: `nf-` and the instance id in DNS-label form (lowercase letters,
/// digits and `-`, at most 63 characters). Instance ids end with 12 random hex digits, which
/// are kept when the function part is shortened, so names stay unique.
pub fn pod_name(instance_id: &str) -> String {
    let mut s: String = instance_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    const MAX: usize = 63 - 3;
    if s.len() > MAX {
        let tail = s.split_off(s.len() - 13);
        s.truncate(MAX - 13);
        s.push_str(&tail);
    }
    let s = s.trim_matches('-');
    format!("nf-{s}")
}

/// `s` as a label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending with
/// a letter or digit.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The watchdog's environment in a warm pod.
pub fn warm_env(s: &PodSettings, spec: &FunctionSpec) -> Vec<(String, String)> {
    super::super::shared::container_warm_env(
        spec,
        s.watchdog_port,
        runtime_port(s.watchdog_port),
        s.startup_timeout,
        s.stop_grace,
    )
}

/// The runtime's port inside the pod: the Docker provider's, unless the watchdog was put there.
fn runtime_port(watchdog_port: u16) -> u16 {
    if watchdog_port == RUNTIME_PORT {
        RUNTIME_PORT + 1
    } else {
        RUNTIME_PORT
    }
}

/// What a JOB pod needs beyond the spec.
pub struct JobParams<'a> {
    pub execution_id: &'a str,
    pub trace_id: &'a str,
    pub attempt: u32,
    pub payload: &'a [u8],
    pub timeout: Duration,
    pub callback_url: &'a str,
    pub callback_token: &'a str,
}

/// The watchdog's environment in a JOB pod.
pub fn job_env(s: &PodSettings, spec: &FunctionSpec, j: &JobParams<'_>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "EXECUTION_MODE".to_string(),
            spec.runtime_mode.as_str().to_string(),
        ),
        ("EXECUTION_ID".into(), j.execution_id.into()),
        ("TRACE_ID".into(), j.trace_id.into()),
        ("CALLBACK_URL".into(), j.callback_url.into()),
        ("CALLBACK_TOKEN".into(), j.callback_token.into()),
        (
            "INVOCATION_PAYLOAD".into(),
            String::from_utf8_lossy(j.payload).into_owned(),
        ),
        (
            "TIMEOUT_MS".into(),
            j.timeout.as_millis().max(1).to_string(),
        ),
        ("DISPATCH_ATTEMPT".into(), j.attempt.to_string()),
    ];
    if spec.runtime_mode == RuntimeMode::Http {
        let port = runtime_port(s.watchdog_port);
        env.push(("PORT".into(), port.to_string()));
        env.push((
            "RUNTIME_URL".into(),
            format!("http://127.0.0.1:{port}/invoke"),
        ));
    }
    env
}

/// The callback URL a JOB pod gets: `url` with its scheme and authority (and any path before
/// `/v1/`) replaced by `base` when one is configured (the control plane's Service).
pub fn callback_url(base: &str, url: &str) -> String {
    if base.is_empty() {
        return url.to_string();
    }
    let path = url
        .find("/v1/")
        .map(|i| &url[i..])
        .unwrap_or("/v1/internal/executions");
    format!("{}{path}", base.trim_end_matches('/'))
}

/// The pod of a warm instance.
pub fn warm_pod(s: &PodSettings, spec: &FunctionSpec, instance_id: &str) -> Pod {
    let mut pod = base_pod(s, spec, instance_id, "warm", warm_env(s, spec));
    let c = &mut pod.spec.as_mut().expect("spec").containers[0];
    c.ports = Some(vec![ContainerPort {
        name: Some("watchdog".into()),
        container_port: s.watchdog_port.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    c.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::Int(s.watchdog_port.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(1),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Default::default()
    });
    pod
}

/// The pod of one JOB attempt.
pub fn job_pod(s: &PodSettings, spec: &FunctionSpec, instance_id: &str, j: &JobParams<'_>) -> Pod {
    base_pod(s, spec, instance_id, "job", job_env(s, spec, j))
}

fn base_pod(
    s: &PodSettings,
    spec: &FunctionSpec,
    instance_id: &str,
    kind: &str,
    ours: Vec<(String, String)>,
) -> Pod {
    let mut ours = ours;
    ours.push(("NANOFAAS_INSTANCE".into(), instance_id.into()));
    ours.push(("NANOFAAS_FUNCTION".into(), spec.name.clone()));
    if s.log_tags {
        ours.push((crate::logs::ENV_LOG_TAGS.into(), "1".into()));
    }
    if let Some(rc) = &spec.runtime_command {
        ours.push(("WATCHDOG_CMD".into(), rc.clone()));
    }
    // The spec's variables, then ours; a name set by both is ours (one entry per name).
    let theirs: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| !ours.iter().any(|(o, _)| o == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let env: Vec<EnvVar> = theirs
        .into_iter()
        .chain(ours)
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        })
        .collect();
    // User labels first: ours win.
    let mut labels = s.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_FUNCTION.into(), label_value(&spec.name));
    labels.insert(LABEL_INSTANCE.into(), label_value(&pod_name(instance_id)));
    labels.insert(LABEL_OWNER.into(), s.owner.clone());
    labels.insert(LABEL_KIND.into(), kind.into());
    let mut annotations = s.annotations.clone();
    annotations.insert(ANNOTATION_INSTANCE.into(), instance_id.into());
    annotations.insert(ANNOTATION_FUNCTION.into(), spec.name.clone());
    let resources = spec.resources.as_ref().and_then(|r| {
        let mut q = BTreeMap::new();
        if let Some(cpu) = &r.cpu {
            q.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(mem) = &r.memory {
            q.insert("memory".to_string(), Quantity(mem.clone()));
        }
        (!q.is_empty()).then(|| ResourceRequirements {
            requests: Some(q.clone()),
            limits: Some(q),
            ..Default::default()
        })
    });
    let container = Container {
        name: CONTAINER.into(),
        image: spec.image.clone(),
        image_pull_policy: Some(s.pull_policy.as_str().into()),
        command: Some(vec![WATCHDOG_PATH.into()]),
        args: Some(vec![]),
        env: Some(env),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(instance_id)),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: s.owner_ref.clone().map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(
                s.stop_grace.as_secs().max(1).try_into().unwrap_or(i64::MAX),
            ),
            image_pull_secrets: (!s.pull_secrets.is_empty()).then(|| {
                s.pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NON_ROOT_ID),
                run_as_group: Some(NON_ROOT_ID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The owner reference to the control plane's own pod, from the downward API's `POD_NAME` and
/// `POD_UID` (both needed), or `None`.
pub fn owner_reference(pod_name: Option<&str>, pod_uid: Option<&str>) -> Option<OwnerReference> {
    let (name, uid) = (pod_name?.trim(), pod_uid?.trim());
    if name.is_empty() || uid.is_empty() {
        return None;
    }
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> PodSettings {
        PodSettings {
            pull_policy: PullPolicy::IfNotPresent,
            pull_secrets: vec!["regcred".into()],
            watchdog_port: 8080,
            labels: [("team".to_string(), "a".to_string())].into(),
            annotations: [("note".to_string(), "x".to_string())].into(),
            owner: "cp-1".into(),
            owner_ref: owner_reference(Some("cp-pod"), Some("uid-1")),
            startup_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_millis(2500),
            log_tags: true,
        }
    }

    fn spec(extra: serde_json::Value) -> FunctionSpec {
        let mut v = json!({"name": "Hello_fn", "image": "nanofaas/example-python-hello:latest"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn env(p: &Pod) -> BTreeMap<String, String> {
        p.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap()))
            .collect()
    }

    #[test]
    fn warm_pods_run_the_watchdog_hardened_with_labels_probe_and_limits() {
        let s = settings();
        let sp = spec(json!({
            "resources": {"cpu": "500m", "memory": "128Mi"},
            "env": {"A": "1", "EXECUTION_MODE": "mine"},
            "instanceConcurrency": 2,
            "runtimeCommand": "python3 app.py"
        }));
        let p = warm_pod(&s, &sp, "Hello_fn-0123456789ab");
        let m = &p.metadata;
        assert_eq!(m.name.as_deref(), Some("nf-hello-fn-0123456789ab"));
        let l = m.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_MANAGED_BY], "nanofaas");
        assert_eq!(l[LABEL_FUNCTION], "Hello_fn");
        assert_eq!(l[LABEL_INSTANCE], "nf-hello-fn-0123456789ab");
        assert_eq!(l[LABEL_OWNER], "cp-1");
        assert_eq!(l[LABEL_KIND], "warm");
        assert_eq!(l["team"], "a");
        let a = m.annotations.as_ref().unwrap();
        assert_eq!(a[ANNOTATION_INSTANCE], "Hello_fn-0123456789ab");
        assert_eq!(a["note"], "x");
        let r = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("Pod", "cp-pod", "uid-1")
        );

        let ps = p.spec.as_ref().unwrap();
        assert_eq!(ps.restart_policy.as_deref(), Some("Never"));
        assert_eq!(ps.automount_service_account_token, Some(false));
        assert_eq!(ps.termination_grace_period_seconds, Some(2));
        assert_eq!(ps.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        let psc = ps.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(NON_ROOT_ID));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let c = &ps.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("nanofaas/example-python-hello:latest")
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.command.as_ref().unwrap(),
            &vec![WATCHDOG_PATH.to_string()]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &vec!["ALL".to_string()]
        );
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.requests, res.limits);
        assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "128Mi");
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/health"));
        assert_eq!(probe.port, IntOrString::Int(8080));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);

        let e = env(&p);
        assert_eq!(e["EXECUTION_MODE"], "WARM", "ours win over the spec's");
        assert_eq!(e["A"], "1");
        assert_eq!(e["WARM_PORT"], "8080");
        assert_eq!(e["WARM_BIND"], "0.0.0.0");
        assert_eq!(e["WARM_CONCURRENCY"], "2");
        assert_eq!(e["WATCHDOG_CMD"], "python3 app.py");
        assert_eq!(e["NANOFAAS_INSTANCE"], "Hello_fn-0123456789ab");
        assert!(e.contains_key("WARM_LEASE_MS"));
        // Every name once.
        let names = p.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .len();
        assert_eq!(names, e.len());
        // The pod serialises as the API wants it (camelCase, no nulls).
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["spec"]["automountServiceAccountToken"], json!(false));
        assert_eq!(
            v["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
    }

    #[test]
    fn job_pods_carry_the_execution_and_no_probe() {
        let mut s = settings();
        s.owner_ref = None;
        s.pull_secrets.clear();
        let sp = spec(json!({"executionMode": "JOB"}));
        let j = JobParams {
            execution_id: "e1",
            trace_id: "t1",
            attempt: 2,
            payload: br#"{"a":1}"#,
            timeout: Duration::from_millis(1500),
            callback_url: "http://cp.ns.svc:8080/v1/internal/executions/e1:complete",
            callback_token: "tok",
        };
        let p = job_pod(&s, &sp, "Hello_fn-job-0123456789ab", &j);
        assert!(p.metadata.owner_references.is_none());
        let ps = p.spec.as_ref().unwrap();
        assert!(ps.image_pull_secrets.is_none());
        assert!(ps.containers[0].readiness_probe.is_none());
        assert_eq!(p.metadata.labels.as_ref().unwrap()[LABEL_KIND], "job");
        let e = env(&p);
        assert_eq!(e["EXECUTION_ID"], "e1");
        assert_eq!(e["INVOCATION_PAYLOAD"], r#"{"a":1}"#);
        assert_eq!(e["TIMEOUT_MS"], "1500");
        assert_eq!(e["DISPATCH_ATTEMPT"], "2");
        assert_eq!(e["CALLBACK_TOKEN"], "tok");
    }

    #[test]
    fn names_and_label_values_fit_kubernetes() {
        let long = format!("{}-0123456789ab", "F".repeat(63));
        let n = pod_name(&long);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-0123456789ab"), "{n}");
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(pod_name("a.b_c-0123456789ab"), "nf-a-b-c-0123456789ab");
        assert_eq!(label_value("fn-"), "fn");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("a/b"), "a-b");
    }

    #[test]
    fn callback_urls_go_to_the_configured_service() {
        let u = "http://127.0.0.1:8080/v1/internal/executions/e1:complete";
        assert_eq!(callback_url("", u), u);
        assert_eq!(
            callback_url("http://nanofaas.nanofaas.svc:8080/", u),
            "http://nanofaas.nanofaas.svc:8080/v1/internal/executions/e1:complete"
        );
        assert!(owner_reference(Some("p"), None).is_none());
        assert!(owner_reference(Some(""), Some("u")).is_none());
    }
}
