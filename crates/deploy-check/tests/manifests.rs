//! `deploy/kubernetes/`, parsed strictly into typed objects, and the invariants the deployment
//! relies on (see the crate's documentation).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The label every pod started by the kubernetes provider carries.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "nanofaas");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

// ---------------------------------------------------------------------------------------------
// Strict parsing

/// Deserializes `doc` into `T` and requires that serializing it back gives `doc` again: the
/// k8s-openapi types skip fields they do not know, so this is what catches a misspelt one.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    if diffs.is_empty() {
        Ok(typed)
    } else {
        Err(diffs.join("; "))
    }
}

/// Paths where `read` (the document) and `back` (after the typed round trip) differ.
fn diff(path: &str, read: &Value, back: &Value, out: &mut Vec<String>) {
    match (read, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => diff(&p, v, w, out),
                    None => out.push(format!(
                        "{p}: not a field of this object (misspelt or misplaced?)"
                    )),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: appeared in the round trip"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: read {a}, typed as {b}")),
    }
}

/// One object of the manifests, typed.
#[derive(Debug)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    PersistentVolumeClaim(PersistentVolumeClaim),
    Deployment(Deployment),
    Service(Service),
    NetworkPolicy(NetworkPolicy),
}

fn typed(doc: &Value) -> Result<Object, String> {
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    Ok(match (api, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(doc)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(doc)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(doc)?),
        ("v1", "PersistentVolumeClaim") => Object::PersistentVolumeClaim(strict(doc)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(doc)?),
        ("v1", "Service") => Object::Service(strict(doc)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(strict(doc)?),
        _ => {
            return Err(format!(
                "apiVersion {api:?} kind {kind:?}: not a kind these manifests are meant to hold \
                 (add it to `typed` if it should be)"
            ))
        }
    })
}

/// The YAML documents of `text`, as JSON values (empty documents skipped).
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kustomization.yaml`: only the fields used here, and no others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

struct Manifests {
    kustomization: Kustomization,
    objects: Vec<(String, Object)>,
}

fn load() -> Manifests {
    let dir = deploy_dir();
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization.yaml");
    let kustomization: Kustomization =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("kustomization.yaml: {e}"));
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    for file in &kustomization.resources {
        let text = match std::fs::read_to_string(dir.join(file)) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                continue;
            }
        };
        match documents(&text) {
            Ok(docs) => {
                for (i, doc) in docs.iter().enumerate() {
                    match typed(doc) {
                        Ok(o) => objects.push((file.clone(), o)),
                        Err(e) => errors.push(format!("{file} (document {}): {e}", i + 1)),
                    }
                }
            }
            Err(e) => errors.push(format!("{file}: {e}")),
        }
    }
    assert!(
        errors.is_empty(),
        "manifests that do not parse strictly:\n{}",
        errors.join("\n")
    );
    Manifests {
        kustomization,
        objects,
    }
}

macro_rules! only {
    ($m:expr, $variant:ident) => {{
        let all: Vec<&$variant> = $m
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::$variant(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(
            all.len(),
            1,
            "expected exactly one {}",
            stringify!($variant)
        );
        all[0]
    }};
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// The files

#[test]
fn every_manifest_parses_strictly_into_typed_objects() {
    let m = load();
    let k = &m.kustomization;
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    // Every YAML file of the folder is a resource of the kustomization, and the other way round:
    // a file left out would be neither applied nor checked.
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = k.resources.iter().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "files on disk vs resources of kustomization.yaml"
    );
    assert_eq!(
        listed.len(),
        k.resources.len(),
        "a resource is listed twice"
    );
    // One of each kind the deployment needs.
    let kinds: BTreeSet<&str> = m
        .objects
        .iter()
        .map(|(_, o)| match o {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ConfigMap(_) => "ConfigMap",
            Object::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::NetworkPolicy(_) => "NetworkPolicy",
        })
        .collect();
    assert_eq!(kinds.len(), 9, "kinds present: {kinds:?}");
    // The image the kustomization retags is the Deployment's.
    let d = only!(m, Deployment);
    let images: Vec<&str> = pod_spec(d)
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .collect();
    for i in &k.images {
        assert!(
            i.new_name.is_some() || i.new_tag.is_some(),
            "image {} changes nothing",
            i.name
        );
        assert!(
            images
                .iter()
                .any(|im| im.split(':').next() == Some(i.name.as_str())),
            "kustomization image {} is not used by the Deployment ({images:?})",
            i.name
        );
    }
}

#[test]
fn a_misspelt_or_misplaced_field_fails_with_its_path() {
    let good = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: x }
spec:
  selector: { matchLabels: { a: b } }
  template:
    metadata: { labels: { a: b } }
    spec:
      containers:
        - name: c
          image: i
          imagePullPolicy: IfNotPresent
"#;
    let docs = documents(good).unwrap();
    assert!(matches!(typed(&docs[0]), Ok(Object::Deployment(_))));

    let typo = good.replace("imagePullPolicy", "imagePulPolicy");
    let err = typed(&documents(&typo).unwrap()[0]).unwrap_err();
    assert!(
        err.contains(".spec.template.spec.containers[0].imagePulPolicy"),
        "{err}"
    );
    // A field at the wrong level (the pod's securityContext on the Deployment's spec).
    let misplaced = good.replace(
        "  selector:",
        "  securityContext: { runAsNonRoot: true }\n  selector:",
    );
    let err = typed(&documents(&misplaced).unwrap()[0]).unwrap_err();
    assert!(err.contains(".spec.securityContext"), "{err}");
    // A value of the wrong shape.
    let shape = good.replace("image: i", "image: [i]");
    assert!(typed(&documents(&shape).unwrap()[0]).is_err());
    // A kind the manifests are not meant to hold (a ClusterRole would grant beyond the namespace).
    let cluster =
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n";
    assert!(typed(&documents(cluster).unwrap()[0])
        .unwrap_err()
        .contains("ClusterRole"));
    // Several documents in one file, and empty ones skipped.
    let two = format!("---\n{good}\n---\n---\n{good}");
    assert_eq!(documents(&two).unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Invariants

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Deployment has a pod template")
}

fn control_plane_container(d: &Deployment) -> &Container {
    let spec = pod_spec(d);
    assert_eq!(spec.containers.len(), 1, "one container: the control plane");
    &spec.containers[0]
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The control plane's TOML configuration (the ConfigMap's file that `--config` names).
fn config(m: &Manifests) -> toml::Table {
    let cm = only!(m, ConfigMap);
    let d = only!(m, Deployment);
    let c = control_plane_container(d);
    let args = c.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .expect("serve --config FILE");
    let file = Path::new(&args[at + 1]);
    // The file is a key of the ConfigMap mounted at its folder.
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| Path::new(&vm.mount_path) == file.parent().unwrap())
        .unwrap_or_else(|| panic!("no volume mounted at the folder of {}", file.display()));
    let vol = pod_spec(d)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the config volume");
    assert_eq!(
        vol.config_map.as_ref().map(|c| c.name.as_str()),
        Some(name_of(&cm.metadata)),
        "the config folder is the ConfigMap"
    );
    let key = file.file_name().unwrap().to_string_lossy();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key.as_ref()))
        .unwrap_or_else(|| panic!("the ConfigMap has no key {key}"));
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{key} is not TOML: {e}"))
}

fn get<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

#[test]
fn the_role_grants_exactly_what_the_provider_calls() {
    let m = load();
    let role = only!(m, Role);
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in role.rules.iter().flatten() {
        assert_eq!(
            r.api_groups.as_deref(),
            Some(&[String::new()][..]),
            "core API group only: {r:?}"
        );
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "{r:?}"
        );
        for res in r.resources.iter().flatten() {
            for v in &r.verbs {
                assert!(
                    got.entry(res.clone()).or_default().insert(v.clone()),
                    "{res} {v} twice"
                );
            }
        }
    }
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("pods", &["create", "get", "list", "watch", "delete"][..]),
        ("pods/log", &["get"][..]),
        ("events", &["get", "list"][..]),
    ]
    .into_iter()
    .map(|(r, vs)| (r.to_string(), vs.iter().map(|v| v.to_string()).collect()))
    .collect();
    assert_eq!(got, want);

    // Bound to the service account the control plane runs as, in the same namespace.
    let rb = only!(m, RoleBinding);
    let sa = only!(m, ServiceAccount);
    let d = only!(m, Deployment);
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.name, name_of(&role.metadata));
    let subjects = rb.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, name_of(&sa.metadata));
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
    assert_eq!(
        pod_spec(d).service_account_name.as_deref(),
        Some(name_of(&sa.metadata))
    );
}

#[test]
fn everything_is_in_the_kustomization_namespace() {
    let m = load();
    let ns = &m.kustomization.namespace;
    assert_eq!(name_of(&only!(m, Namespace).metadata), ns);
    for (file, o) in &m.objects {
        let meta = match o {
            Object::Namespace(_) => continue,
            Object::ServiceAccount(x) => &x.metadata,
            Object::Role(x) => &x.metadata,
            Object::RoleBinding(x) => &x.metadata,
            Object::ConfigMap(x) => &x.metadata,
            Object::PersistentVolumeClaim(x) => &x.metadata,
            Object::Deployment(x) => &x.metadata,
            Object::Service(x) => &x.metadata,
            Object::NetworkPolicy(x) => &x.metadata,
        };
        assert_eq!(
            meta.namespace.as_ref(),
            Some(ns),
            "{file}: {}",
            name_of(meta)
        );
    }
}

#[test]
fn the_control_plane_runs_hardened_with_one_replica_and_its_state_on_a_volume() {
    let m = load();
    let d = only!(m, Deployment);
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(1),
        "one control plane owns the state and the pools"
    );
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "an old and a new control plane must never run together"
    );
    let labels = pod_labels(d);
    assert!(
        selects(spec.selector.match_labels.as_ref().unwrap(), &labels),
        "the selector matches the pod template"
    );
    assert_ne!(
        labels.get(MANAGED_BY.0).map(String::as_str),
        Some(MANAGED_BY.1),
        "the control plane's own pod must not carry the label of the pods it manages"
    );

    let pod = pod_spec(d);
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u > 0), "a non-zero user");
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(
        psc.fs_group.is_some(),
        "fsGroup: the state volume is writable by that user"
    );

    let c = control_plane_container(d);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert!(sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_none());

    // Resources: requests for scheduling, a memory limit.
    let res = c.resources.as_ref().expect("resources");
    for k in ["cpu", "memory"] {
        assert!(
            res.requests.as_ref().is_some_and(|r| r.contains_key(k)),
            "requests.{k}"
        );
    }
    assert!(
        res.limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory")),
        "limits.memory"
    );

    // Who it is (the owner of the pods it starts): the downward API.
    let env = c.env.clone().unwrap_or_default();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_UID", "metadata.uid"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("env {name}"));
        let got = e
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(got, Some(field), "{name}");
    }
    // API tokens from a Secret, not optional: without tokens it refuses to listen beyond loopback.
    let tokens = env
        .iter()
        .find(|e| e.name == "NANOFAAS_API_TOKENS")
        .expect("NANOFAAS_API_TOKENS");
    let sk = tokens
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("from a Secret");
    assert_ne!(sk.optional, Some(true));
    assert!(tokens.value.is_none());
    for e in &env {
        assert!(
            !(e.name.contains("TOKEN") || e.name.contains("SECRET")) || e.value.is_none(),
            "{}: secrets come from a Secret, never inline",
            e.name
        );
    }

    // The state dir is on the PersistentVolumeClaim.
    let cfg = config(&m);
    let state_dir = get(&cfg, "state_dir")
        .and_then(|v| v.as_str())
        .expect("state_dir");
    let pvc = only!(m, PersistentVolumeClaim);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| Path::new(state_dir).starts_with(&vm.mount_path))
        .unwrap_or_else(|| panic!("nothing mounted at or above state_dir {state_dir}"));
    assert_ne!(mount.read_only, Some(true));
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        vol.persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some(name_of(&pvc.metadata))
    );
}

#[test]
fn probes_use_the_control_planes_health_routes_and_ports() {
    let m = load();
    let d = only!(m, Deployment);
    let c = control_plane_container(d);
    // The routes the control plane serves without a token (crates/control-plane/src/api.rs).
    let api = std::fs::read_to_string(repo().join("crates/control-plane/src/api.rs")).unwrap();
    let ports: Vec<(Option<String>, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    let resolves = |p: &IntOrString| match p {
        IntOrString::Int(n) => ports.iter().any(|(_, q)| q == n),
        IntOrString::String(s) => ports.iter().any(|(n, _)| n.as_deref() == Some(s)),
    };
    let cfg = config(&m);
    let listen = get(&cfg, "listen")
        .and_then(|v| v.as_str())
        .expect("listen");
    let listen_port: i32 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        !listen.starts_with("127."),
        "reachable by the kubelet and the Service: {listen}"
    );
    assert!(
        ports.iter().any(|(_, p)| *p == listen_port),
        "containerPort {listen_port}"
    );

    for (what, probe, path) in [
        ("liveness", &c.liveness_probe, "/healthz"),
        ("readiness", &c.readiness_probe, "/readyz"),
    ] {
        let p = probe.as_ref().unwrap_or_else(|| panic!("{what} probe"));
        let g = p
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: httpGet"));
        assert_eq!(g.path.as_deref(), Some(path), "{what}");
        assert!(
            api.contains(&format!("\"{path}\" =>")),
            "{path} is a route of api.rs"
        );
        assert!(
            resolves(&g.port),
            "{what}: port {:?} is a container port",
            g.port
        );
    }
    if let Some(p) = &c.startup_probe {
        let g = p.http_get.as_ref().expect("startup: httpGet");
        assert!(resolves(&g.port));
    }

    // The Service reaches that port on that pod.
    let svc = only!(m, Service);
    let s = svc.spec.as_ref().unwrap();
    assert!(selects(s.selector.as_ref().unwrap(), &pod_labels(d)));
    for p in s.ports.iter().flatten() {
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        assert!(resolves(&target), "Service port {:?}", p.target_port);
    }
}

#[test]
fn the_network_policy_lets_only_the_control_plane_reach_function_pods() {
    let m = load();
    let np = only!(m, NetworkPolicy);
    let d = only!(m, Deployment);
    let spec = np.spec.as_ref().unwrap();
    let sel = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert_eq!(
        sel,
        BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())]),
        "selects the pods the provider labels, and only by that label"
    );
    assert!(spec
        .pod_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .is_none());
    assert!(spec.policy_types.iter().flatten().any(|t| t == "Ingress"));
    let rules = spec.ingress.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "one way in");
    let from = rules[0].from.clone().unwrap_or_default();
    assert_eq!(from.len(), 1);
    assert!(
        from[0].namespace_selector.is_none() && from[0].ip_block.is_none(),
        "{from:?}"
    );
    let peer = from[0]
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap();
    assert!(
        selects(&peer, &pod_labels(d)),
        "the control plane's pod is the peer"
    );
    assert!(
        !peer.contains_key(MANAGED_BY.0),
        "function pods are not peers of each other"
    );
    // On the watchdog's port (provider.kubernetes.watchdog_port).
    let cfg = config(&m);
    let wd = get(&cfg, "provider.kubernetes.watchdog_port")
        .and_then(|v| v.as_integer())
        .expect("provider.kubernetes.watchdog_port");
    let ports = rules[0].ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::Int(wd as i32)));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
}

#[test]
fn the_configuration_selects_the_kubernetes_provider() {
    let m = load();
    let cfg = config(&m);
    assert_eq!(
        get(&cfg, "provider.type").and_then(|v| v.as_str()),
        Some("kubernetes")
    );
    // JOB callbacks go to the Service, by a name the API accepts in Host (callbacks need no
    // allow-listed Host, but the name must be the Service's).
    let svc = only!(m, Service);
    let ns = &m.kustomization.namespace;
    let url = get(&cfg, "provider.kubernetes.callback_url")
        .and_then(|v| v.as_str())
        .unwrap();
    let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    assert_eq!(
        url,
        format!("http://{}.{ns}.svc:{port}", name_of(&svc.metadata))
    );
    // No secret in the ConfigMap.
    assert!(
        get(&cfg, "api.tokens").is_none(),
        "tokens come from the Secret"
    );
    assert!(
        get(&cfg, "callback_secret").is_none(),
        "the callback secret comes from the Secret"
    );
}

#[test]
fn the_control_plane_accepts_the_configuration_with_the_deployments_environment() {
    let m = load();
    let cm = only!(m, ConfigMap);
    let d = only!(m, Deployment);
    let c = control_plane_container(d);
    let args = c.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--config").unwrap();
    let key = Path::new(&args[at + 1])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let text = &cm.data.as_ref().unwrap()[&key];
    let dir = std::env::temp_dir().join(format!("nanofaas-deploy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(&key);
    std::fs::write(&file, text).unwrap();
    // The environment the pod gets: literal values as they are; the Secret's and the downward
    // API's values as a cluster would fill them in.
    let mut env = std::collections::HashMap::new();
    for e in c.env.iter().flatten() {
        let v = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) if from.secret_key_ref.is_some() => match e.name.as_str() {
                "NANOFAAS_API_TOKENS" => format!("admin:{}", "ab".repeat(32)),
                _ => "0123456789abcdef".repeat(4),
            },
            (None, Some(_)) => format!("{}-value", e.name.to_lowercase()),
            (None, None) => String::new(),
        };
        env.insert(e.name.clone(), v);
    }
    let cfg = nanofaas_control_plane::config::Config::load(Some(&file), &env, &[]);
    std::fs::remove_dir_all(&dir).ok();
    let cfg =
        cfg.unwrap_or_else(|e| panic!("the control plane refuses the ConfigMap's {key}: {e}"));
    assert_eq!(
        cfg.provider.kind,
        nanofaas_control_plane::config::ProviderKind::Kubernetes
    );
    assert_eq!(cfg.api.tokens.len(), 1, "tokens from NANOFAAS_API_TOKENS");
    assert!(
        !cfg.callback_secret.is_empty(),
        "the callback secret from the Secret"
    );
    // What the NetworkPolicy opens is the port the provider reaches pods on.
    let np = only!(m, NetworkPolicy);
    let port = np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
        .ports
        .as_ref()
        .unwrap()[0]
        .port
        .clone();
    assert_eq!(
        port,
        Some(IntOrString::Int(i32::from(
            cfg.provider.kubernetes.watchdog_port
        )))
    );
}

#[test]
fn the_providers_own_pods_are_what_the_network_policy_selects_and_opens() {
    use nanofaas_control_plane::provider::kubernetes::pod;
    let m = load();
    let cfg = config(&m);
    let wd = get(&cfg, "provider.kubernetes.watchdog_port")
        .and_then(|v| v.as_integer())
        .unwrap();
    let settings = pod::PodSettings {
        pull_policy: nanofaas_control_plane::config::PullPolicy::IfNotPresent,
        pull_secrets: vec![],
        watchdog_port: wd as u16,
        labels: Default::default(),
        annotations: Default::default(),
        owner: "nanofaas-control-plane-abc".into(),
        owner_ref: None,
        startup_timeout: std::time::Duration::from_secs(30),
        stop_grace: std::time::Duration::from_secs(5),
        log_tags: true,
    };
    let spec =
        nanofaas_api::FunctionSpec::from_json(br#"{"name": "hello", "image": "example/hello:1"}"#)
            .expect("a spec");
    let p = pod::warm_pod(&settings, &spec, "hello-0123456789ab");
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let np = only!(m, NetworkPolicy);
    let spec_np = np.spec.as_ref().unwrap();
    let sel = spec_np
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap();
    assert!(
        selects(&sel, &labels),
        "the NetworkPolicy selects the provider's pods: {labels:?}"
    );
    let port = &spec_np.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0];
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert!(
        c.ports
            .iter()
            .flatten()
            .any(|cp| Some(IntOrString::Int(cp.container_port)) == port.port),
        "the policy opens the watchdog's port"
    );
    // And they would pass the namespace's Pod Security "restricted" level on the points it checks.
    let ns = only!(m, Namespace);
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let ps = p.spec.as_ref().unwrap();
    let psc = ps.security_context.as_ref().unwrap();
    let sc = c.security_context.as_ref().unwrap();
    assert!(psc.run_as_non_root == Some(true) || sc.run_as_non_root == Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    let seccomp = psc
        .seccomp_profile
        .as_ref()
        .or(sc.seccomp_profile.as_ref())
        .map(|s| s.type_.as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));
    // Not labelled like the control plane's own pod (the Service must not route to it).
    assert!(!selects(&pod_labels(only!(m, Deployment)), &labels));
}
