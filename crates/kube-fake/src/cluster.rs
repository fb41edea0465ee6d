//! The cluster's state: pods and events as JSON objects, the resourceVersion counter, the watch
//! history, request statistics and the simulated nodes.
//!
//! [`Cluster`] is the one way in (a `Clone` handle over `Arc<Shared>`); every change bumps the
//! global resourceVersion, is appended to the history and broadcast to open watches, all under
//! one short lock, so a watch that starts from version N sees exactly the changes after N. It
//! does not speak HTTP ([`crate::server`]) and does not run containers ([`crate::kubelet`]);
//! it tells the kubelet about new and deleted pods through per-pod signal channels.

use crate::kubelet::{self, Signal};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{name_suffix, new_uid, now_rfc3339, now_unix, ApiError};
use crate::Options;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Pods,
    Events,
}

impl Resource {
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Events => "events",
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Events => "Event",
        }
    }
    /// The field selectors the real API server supports for the resource.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Resource::Events => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
        }
    }
}

/// One change, as a watch streams it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: Resource,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Arc<Value>,
}

/// What a watch starts with: the changes to send first, the live feed, and the version the
/// backlog covers.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>, u64);

/// Kubernetes verbs, for the request statistics.
pub const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

type Key = (String, String);

/// Kept for at most this many pods (the statistics of a long run stay bounded).
const MAX_STARTS: usize = 100_000;

/// One pod's start, as the cluster saw it: what `GET /_fake/stats` reports under `pods`.
struct PodStart {
    namespace: String,
    name: String,
    labels: Value,
    created: Duration,
    ready: Option<Duration>,
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

struct Inner {
    rv: u64,
    pods: BTreeMap<Key, Value>,
    events: BTreeMap<Key, Value>,
    /// (involved uid, reason, message) → event key, to aggregate repeats into `count`.
    event_index: HashMap<(String, String, String), Key>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a version below this get `410 Gone`.
    compacted: u64,
    window: usize,
    /// uid → the pod's kubelet task's signal.
    signals: HashMap<String, watch::Sender<Signal>>,
    requests: Vec<(&'static str, Duration)>,
    /// uid → when the pod was created and first turned Ready, for the statistics.
    starts: HashMap<String, PodStart>,
    failed_nodes: HashSet<String>,
    next_node: usize,
    missing_images: HashSet<String>,
    /// uid → (current container, previous container), for logs.
    containers: HashMap<String, (Option<String>, Option<String>)>,
}

pub(crate) struct Shared {
    pub options: Options,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    started: Instant,
    /// `true` while the scheduler refuses pods; the message it gives.
    pub scheduling: watch::Sender<Option<String>>,
    /// Bumped when a node recovers (pending pods retry).
    pub nodes_changed: watch::Sender<u64>,
    /// Set by shutdown: the kubelet starts no more containers.
    pub closed: AtomicBool,
    /// Container starts under way (shutdown waits for them before removing containers).
    pub starting: AtomicUsize,
}

/// The handle on the cluster's state.
#[derive(Clone)]
pub struct Cluster(pub(crate) Arc<Shared>);

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// DNS-1123 subdomain (what pod names must be).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The node names of the simulated cluster.
pub fn node_name(i: usize) -> String {
    format!("fake-node-{}", i + 1)
}

/// The hostIP of a simulated node.
pub fn node_ip(node: &str) -> String {
    let n: usize = node
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    format!("192.168.49.{}", 10 + n)
}

impl Cluster {
    pub fn new(options: Options) -> Cluster {
        let (tx, _) = broadcast::channel(options.watch_buffer.max(16));
        let window = options.history_window;
        Cluster(Arc::new(Shared {
            options,
            inner: Mutex::new(Inner {
                rv: 1,
                pods: BTreeMap::new(),
                events: BTreeMap::new(),
                event_index: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                window,
                signals: HashMap::new(),
                requests: Vec::new(),
                starts: HashMap::new(),
                failed_nodes: HashSet::new(),
                next_node: 0,
                missing_images: HashSet::new(),
                containers: HashMap::new(),
            }),
            tx,
            started: Instant::now(),
            scheduling: watch::channel(None).0,
            nodes_changed: watch::channel(0).0,
            closed: AtomicBool::new(false),
            starting: AtomicUsize::new(0),
        }))
    }

    pub fn options(&self) -> &Options {
        &self.0.options
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent JSON behind; keep serving.
        self.0.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one API request for the statistics.
    pub fn record_request(&self, verb: &'static str) {
        let at = self.0.started.elapsed();
        let mut g = self.lock();
        if g.requests.len() < 1_000_000 {
            g.requests.push((verb, at));
        }
    }

    /// `{"counts": {verb: n}, "requests": [{"verb", "atMs"}], "pods": [{"namespace", "name",
    /// "labels", "createdMs", "readyMs"}], "uptimeMs"}`; times in ms since start, `readyMs` null
    /// until the pod first turns Ready.
    pub fn stats(&self) -> Value {
        let g = self.lock();
        let mut counts = Map::new();
        for v in VERBS {
            counts.insert((*v).into(), json!(0));
        }
        for (v, _) in &g.requests {
            let c = counts.get_mut(*v).and_then(|c| c.as_u64()).unwrap_or(0);
            counts.insert((*v).into(), json!(c + 1));
        }
        let reqs: Vec<Value> = g
            .requests
            .iter()
            .map(|(v, at)| json!({"verb": v, "atMs": at.as_secs_f64() * 1000.0}))
            .collect();
        let mut pods: Vec<(&Duration, Value)> = g
            .starts
            .values()
            .map(|s| {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                (
                    &s.created,
                    json!({"namespace": s.namespace, "name": s.name, "labels": s.labels,
                        "createdMs": ms(s.created), "readyMs": s.ready.map(ms)}),
                )
            })
            .collect();
        pods.sort_by(|a, b| a.0.cmp(b.0));
        json!({
            "counts": counts,
            "total": g.requests.len(),
            "requests": reqs,
            "pods": pods.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "uptimeMs": self.0.started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    pub fn reset_stats(&self) {
        let mut g = self.lock();
        g.requests.clear();
        g.starts.clear();
    }

    /// Bumps the version and publishes a change (caller holds the lock).
    fn publish(
        &self,
        g: &mut Inner,
        resource: Resource,
        ns: &str,
        kind: &'static str,
        obj: Value,
    ) -> Arc<Change> {
        let change = Arc::new(Change {
            rv: g.rv,
            resource,
            namespace: ns.to_string(),
            kind,
            object: Arc::new(obj),
        });
        g.history.push_back(change.clone());
        while g.history.len() > g.window {
            if let Some(old) = g.history.pop_front() {
                g.compacted = old.rv;
            }
        }
        let _ = self.0.tx.send(change.clone());
        change
    }

    fn next_rv(g: &mut Inner) -> u64 {
        g.rv += 1;
        g.rv
    }

    /// The current resourceVersion (what a list returns).
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Drops the whole watch history: every watch from a version before now gets 410.
    pub fn compact(&self) -> u64 {
        let mut g = self.lock();
        g.history.clear();
        g.compacted = g.rv;
        g.rv
    }

    /// Sets how many changes the history keeps (at least 1).
    pub fn set_history_window(&self, n: usize) {
        let mut g = self.lock();
        g.window = n.max(1);
        while g.history.len() > g.window {
            if let Some(old) = g.history.pop_front() {
                g.compacted = old.rv;
            }
        }
    }

    // ---- pods -------------------------------------------------------------------------------

    /// POST /api/v1/namespaces/{ns}/pods.
    pub fn create_pod(&self, ns: &str, mut pod: Value) -> Result<Value, ApiError> {
        if !pod.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        if let Some(k) = pod.get("kind").and_then(Value::as_str) {
            if k != "Pod" {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data (v1) does not match the expected API version (v1): kind {k} is not Pod"
                )));
            }
        }
        let meta_ok = pod
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})).is_object())
            .unwrap_or(false);
        if !meta_ok {
            return Err(ApiError::bad_request("metadata is not an object"));
        }
        let body_ns = meta_str(&pod, "namespace").to_string();
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta_str(&pod, "name").to_string();
        let generate = meta_str(&pod, "generateName").to_string();
        let mut causes = Vec::new();
        if name.is_empty() && !generate.is_empty() {
            name = format!("{generate}{}", name_suffix());
        }
        let shown = if name.is_empty() {
            generate.clone()
        } else {
            name.clone()
        };
        if name.is_empty() {
            causes.push((
                "metadata.name".to_string(),
                "FieldValueRequired",
                "Required value: name or generateName is required".to_string(),
            ));
        } else if !valid_name(&name) {
            causes.push((
                "metadata.name".to_string(),
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            ));
        }
        match pod.pointer("/spec/containers").and_then(Value::as_array) {
            Some(cs) if !cs.is_empty() => {
                let mut names = HashSet::new();
                for (i, c) in cs.iter().enumerate() {
                    let cn = c.get("name").and_then(Value::as_str).unwrap_or("");
                    if cn.is_empty() {
                        causes.push((
                            format!("spec.containers[{i}].name"),
                            "FieldValueRequired",
                            "Required value".into(),
                        ));
                    } else if !names.insert(cn.to_string()) {
                        causes.push((
                            format!("spec.containers[{i}].name"),
                            "FieldValueDuplicate",
                            format!("Duplicate value: \"{cn}\""),
                        ));
                    }
                    if c.get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        causes.push((
                            format!("spec.containers[{i}].image"),
                            "FieldValueRequired",
                            "Required value".into(),
                        ));
                    }
                }
            }
            _ => causes.push((
                "spec.containers".into(),
                "FieldValueRequired",
                "Required value".into(),
            )),
        }
        if let Some(rp) = pod.pointer("/spec/restartPolicy").and_then(Value::as_str) {
            if !["Always", "OnFailure", "Never"].contains(&rp) {
                causes.push((
                    "spec.restartPolicy".into(),
                    "FieldValueNotSupported",
                    format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
                ));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("Pod", "pods", &shown, &causes));
        }

        let mut g = self.lock();
        let key = (ns.to_string(), name.clone());
        if g.pods.contains_key(&key) {
            return Err(ApiError::already_exists("pods", &name));
        }
        let rv = Self::next_rv(&mut g);
        let uid = new_uid();
        {
            let m = pod["metadata"]
                .as_object_mut()
                .expect("metadata is an object");
            m.insert("name".into(), json!(name));
            m.insert("namespace".into(), json!(ns));
            m.insert("uid".into(), json!(uid));
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        apply_pod_defaults(&mut pod);
        let (stx, srx) = watch::channel(Signal::Run);
        g.signals.insert(uid.clone(), stx);
        if g.starts.len() < MAX_STARTS {
            let start = PodStart {
                namespace: ns.to_string(),
                name: name.clone(),
                labels: pod["metadata"].get("labels").cloned().unwrap_or(json!({})),
                created: self.0.started.elapsed(),
                ready: None,
            };
            g.starts.insert(uid.clone(), start);
        }
        g.pods.insert(key, pod.clone());
        self.publish(&mut g, Resource::Pods, ns, "ADDED", pod.clone());
        // Owners that are pods and are all absent: the garbage collector removes the dependent.
        let owners: Vec<String> = pod_owner_uids(&pod);
        let orphan = !owners.is_empty()
            && owners
                .iter()
                .all(|o| !g.pods.values().any(|p| meta_str(p, "uid") == o));
        drop(g);
        kubelet::spawn(self.clone(), ns.to_string(), name.clone(), uid.clone(), srx);
        if orphan {
            let c = self.clone();
            let (ns, name) = (ns.to_string(), name.clone());
            tokio::spawn(async move {
                let _ = c.delete_pod(&ns, &name, None, Some(&uid));
            });
        }
        Ok(pod)
    }

    /// GET one pod or event.
    pub fn get(&self, resource: Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let g = self.lock();
        let map = match resource {
            Resource::Pods => &g.pods,
            Resource::Events => &g.events,
        };
        map.get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.plural(), name))
    }

    /// The objects matching, in (namespace, name) order, after `after` (a continue key), at
    /// most `limit`; and the resourceVersion they were read at, and whether more remain.
    pub fn list(
        &self,
        resource: Resource,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> (Vec<Value>, u64, Option<(String, String)>, usize) {
        let g = self.lock();
        let map = match resource {
            Resource::Pods => &g.pods,
            Resource::Events => &g.events,
        };
        let mut out = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        let iter = map.iter().filter(|((n, _), o)| {
            ns.is_none_or(|want| want == n) && labels.matches(o) && fields.matches(o)
        });
        for (k, o) in iter {
            if let Some(a) = after {
                if k <= a {
                    continue;
                }
            }
            if limit.is_some_and(|l| out.len() >= l) {
                if next.is_none() {
                    next = Some(out_last_key(&out));
                }
                remaining += 1;
                continue;
            }
            out.push(o.clone());
        }
        (out, g.rv, next.flatten(), remaining)
    }

    /// Starts a watch: from `from` (a resourceVersion; `None` or 0 for "now, with synthetic
    /// ADDED events"), or `Err(410)` when `from` is older than the history kept.
    pub fn watch(
        &self,
        resource: Resource,
        ns: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        let rx = self.0.tx.subscribe();
        let in_ns = |n: &str| ns.is_none_or(|w| w == n);
        match from {
            None | Some(0) => {
                let map = match resource {
                    Resource::Pods => &g.pods,
                    Resource::Events => &g.events,
                };
                let backlog = map
                    .iter()
                    .filter(|((n, _), _)| in_ns(n))
                    .map(|((n, _), o)| {
                        Arc::new(Change {
                            rv: meta_str(o, "resourceVersion").parse().unwrap_or(0),
                            resource,
                            namespace: n.clone(),
                            kind: "ADDED",
                            object: Arc::new(o.clone()),
                        })
                    })
                    .collect();
                Ok((backlog, rx, g.rv))
            }
            Some(n) if n < g.compacted => Err(ApiError::gone(n, g.compacted + 1)),
            Some(n) => {
                let backlog = g
                    .history
                    .iter()
                    .filter(|c| c.rv > n && c.resource == resource && in_ns(&c.namespace))
                    .cloned()
                    .collect();
                Ok((backlog, rx, g.rv))
            }
        }
    }

    /// Applies `f` to the pod with this uid (if it still exists) and publishes MODIFIED; the
    /// kubelet's status writes come through here. Returns the new object.
    pub fn update_pod(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let pod = g.pods.get(&key)?;
        if meta_str(pod, "uid") != uid {
            return None;
        }
        let mut pod = pod.clone();
        let before = pod.clone();
        f(&mut pod);
        if pod == before {
            return Some(pod);
        }
        let rv = Self::next_rv(&mut g);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        if !is_ready(&before) && is_ready(&pod) {
            let at = self.0.started.elapsed();
            if let Some(s) = g.starts.get_mut(uid) {
                s.ready.get_or_insert(at);
            }
        }
        g.pods.insert(key, pod.clone());
        self.publish(&mut g, Resource::Pods, ns, "MODIFIED", pod.clone());
        Some(pod)
    }

    /// The pod with this uid, if it still exists.
    pub fn pod_by_uid(&self, ns: &str, name: &str, uid: &str) -> Option<Value> {
        let g = self.lock();
        g.pods
            .get(&(ns.to_string(), name.to_string()))
            .filter(|p| meta_str(p, "uid") == uid)
            .cloned()
    }

    /// DELETE of one pod. `grace`: the request's gracePeriodSeconds (None: the pod's own).
    /// `uid`: a precondition (the delete applies only to that incarnation).
    ///
    /// Like the real API: a pod not yet bound to a node, already terminal, or deleted with
    /// grace 0 goes at once (DELETED); otherwise it gets deletionTimestamp (MODIFIED) and goes
    /// when its kubelet has stopped it ([`Cluster::finalize_pod`]) or its grace ends.
    pub fn delete_pod(
        &self,
        ns: &str,
        name: &str,
        grace: Option<i64>,
        uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(pod) = g.pods.get(&key).cloned() else {
            return Err(ApiError::not_found("pods", name));
        };
        let pod_uid = meta_str(&pod, "uid").to_string();
        if let Some(u) = uid {
            if u != pod_uid {
                return Err(ApiError {
                    code: 409,
                    body: json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                        "message": format!("Precondition failed: UID in precondition: {u}, UID in object meta: {pod_uid}"),
                        "reason":"Conflict","details":{"name":name,"kind":"pods"},"code":409}),
                });
            }
        }
        let own = pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let grace = grace.unwrap_or(own).max(0);
        let unbound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let terminal = phase == "Succeeded" || phase == "Failed";
        if grace == 0 || unbound || terminal {
            drop(g);
            return Ok(self.finalize_pod(ns, name, &pod_uid).unwrap_or(pod));
        }
        // Already terminating: only a shorter grace changes anything.
        let current = pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if current.is_some_and(|c| c <= grace) {
            return Ok(pod);
        }
        let mut pod = pod;
        let rv = Self::next_rv(&mut g);
        let (now, _) = now_unix();
        {
            let m = pod["metadata"].as_object_mut().expect("metadata");
            m.insert(
                "deletionTimestamp".into(),
                json!(crate::status::rfc3339(now + grace as u64)),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        g.pods.insert(key, pod.clone());
        self.publish(&mut g, Resource::Pods, ns, "MODIFIED", pod.clone());
        if let Some(s) = g.signals.get(&pod_uid) {
            let _ = s.send(Signal::Terminate(Duration::from_secs(grace as u64)));
        }
        drop(g);
        // The kubelet kills the container when the grace ends (`docker stop -t grace`) and
        // then removes the object. A safety net for a kubelet that never reports: the object
        // goes anyway some time after the grace (long enough that a slow engine's stop and
        // removal are still reported first, as the real order is).
        let c = self.clone();
        let (ns2, name2) = (ns.to_string(), name.to_string());
        let slack = self.0.options.delete_slack;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(grace as u64) + slack).await;
            c.finalize_pod(&ns2, &name2, &pod_uid);
        });
        Ok(pod)
    }

    /// Removes the pod object now (DELETED), tells its kubelet task it is gone, and collects
    /// its dependents (pods whose Pod owners are all gone). Returns the final object.
    pub fn finalize_pod(&self, ns: &str, name: &str, uid: &str) -> Option<Value> {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        if g.pods
            .get(&key)
            .map(|p| meta_str(p, "uid") != uid)
            .unwrap_or(true)
        {
            return None;
        }
        let mut pod = g.pods.remove(&key)?;
        let rv = Self::next_rv(&mut g);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        if pod.pointer("/metadata/deletionTimestamp").is_none() {
            pod["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        self.publish(&mut g, Resource::Pods, ns, "DELETED", pod.clone());
        if let Some(s) = g.signals.remove(uid) {
            let _ = s.send(Signal::Gone);
        }
        // Background propagation: dependents whose every Pod owner is now gone.
        let live: HashSet<String> = g
            .pods
            .values()
            .map(|p| meta_str(p, "uid").to_string())
            .collect();
        let dependents: Vec<(String, String, String)> = g
            .pods
            .iter()
            .filter(|(_, p)| {
                let owners = pod_owner_uids(p);
                owners.iter().any(|o| o == uid) && owners.iter().all(|o| !live.contains(o))
            })
            .map(|((n, m), p)| (n.clone(), m.clone(), meta_str(p, "uid").to_string()))
            .collect();
        drop(g);
        if !dependents.is_empty() {
            let c = self.clone();
            tokio::spawn(async move {
                for (n, m, u) in dependents {
                    let _ = c.delete_pod(&n, &m, None, Some(&u));
                }
            });
        }
        Some(pod)
    }

    /// DELETE collection: every matching pod, as a PodList of what was deleted.
    pub fn delete_pods(
        &self,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        grace: Option<i64>,
    ) -> Vec<Value> {
        let (pods, ..) = self.list(Resource::Pods, ns, labels, fields, None, None);
        pods.into_iter()
            .filter_map(|p| {
                let (n, m, u) = (
                    meta_str(&p, "namespace").to_string(),
                    meta_str(&p, "name").to_string(),
                    meta_str(&p, "uid").to_string(),
                );
                self.delete_pod(&n, &m, grace, Some(&u)).ok()
            })
            .collect()
    }

    /// Sends a signal to a pod's kubelet task.
    pub fn signal(&self, ns: &str, name: &str, s: Signal) -> Result<(), ApiError> {
        let g = self.lock();
        let pod = g
            .pods
            .get(&(ns.to_string(), name.to_string()))
            .ok_or_else(|| ApiError::not_found("pods", name))?;
        let uid = meta_str(pod, "uid");
        if let Some(tx) = g.signals.get(uid) {
            let _ = tx.send(s);
        }
        Ok(())
    }

    /// Every live pod's (namespace, name) on a node.
    pub fn pods_on(&self, node: &str) -> Vec<(String, String)> {
        let g = self.lock();
        g.pods
            .iter()
            .filter(|(_, p)| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Marks a node failed (no more scheduling onto it) or recovered.
    pub fn set_node_failed(&self, node: &str, failed: bool) {
        let mut g = self.lock();
        if failed {
            g.failed_nodes.insert(node.to_string());
        } else {
            g.failed_nodes.remove(node);
        }
        drop(g);
        self.0.nodes_changed.send_modify(|n| *n += 1);
    }

    /// Picks a node round-robin among the live ones, or None when all have failed.
    pub fn pick_node(&self) -> Option<String> {
        let mut g = self.lock();
        let n = self.0.options.nodes.max(1);
        for _ in 0..n {
            let i = g.next_node % n;
            g.next_node += 1;
            let name = node_name(i);
            if !g.failed_nodes.contains(&name) {
                return Some(name);
            }
        }
        None
    }

    /// Nodes and whether each has failed.
    pub fn nodes(&self) -> Vec<(String, bool)> {
        let g = self.lock();
        (0..self.0.options.nodes.max(1))
            .map(|i| {
                let n = node_name(i);
                let failed = g.failed_nodes.contains(&n);
                (n, failed)
            })
            .collect()
    }

    /// Images the fake-containers mode treats as not on the engine.
    pub fn set_image_missing(&self, image: &str, missing: bool) {
        let mut g = self.lock();
        if missing {
            g.missing_images.insert(image.to_string());
        } else {
            g.missing_images.remove(image);
        }
    }

    pub fn image_missing(&self, image: &str) -> bool {
        self.lock().missing_images.contains(image)
    }

    // ---- events -----------------------------------------------------------------------------

    /// Records an event about a pod as a kubelet or the scheduler does (repeats of the same
    /// reason and message aggregate into `count`, MODIFIED).
    pub fn record_event(
        &self,
        pod: &Value,
        kind: &str,
        reason: &str,
        message: &str,
        component: &str,
        host: Option<&str>,
    ) {
        let ns = meta_str(pod, "namespace").to_string();
        let name = meta_str(pod, "name").to_string();
        let uid = meta_str(pod, "uid").to_string();
        let now = now_rfc3339();
        let mut g = self.lock();
        let idx = (uid.clone(), reason.to_string(), message.to_string());
        if let Some(key) = g.event_index.get(&idx).cloned() {
            if let Some(mut ev) = g.events.get(&key).cloned() {
                let rv = Self::next_rv(&mut g);
                let count = ev.get("count").and_then(Value::as_u64).unwrap_or(1) + 1;
                ev["count"] = json!(count);
                ev["lastTimestamp"] = json!(now);
                ev["metadata"]["resourceVersion"] = json!(rv.to_string());
                g.events.insert(key, ev.clone());
                self.publish(&mut g, Resource::Events, &ns, "MODIFIED", ev);
                return;
            }
        }
        let rv = Self::next_rv(&mut g);
        let ev_name = format!("{name}.{:016x}", crate::status::random_u64());
        let mut source = json!({"component": component});
        if let Some(h) = host {
            source["host"] = json!(h);
        }
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": ev_name,
                "namespace": ns,
                "uid": new_uid(),
                "resourceVersion": rv.to_string(),
                "creationTimestamp": now,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "namespace": ns,
                "uid": uid,
                "resourceVersion": meta_str(pod, "resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": kind,
            "eventTime": null,
            "reportingComponent": component,
            "reportingInstance": host.unwrap_or(""),
        });
        let key = (ns.clone(), ev_name);
        g.event_index.insert(idx, key.clone());
        g.events.insert(key, ev.clone());
        // Bounded: the oldest events go first (the real API expires them after an hour).
        while g.events.len() > self.0.options.max_events {
            let oldest = g
                .events
                .iter()
                .min_by_key(|(_, e)| meta_str(e, "resourceVersion").parse::<u64>().unwrap_or(0))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    g.events.remove(&k);
                    g.event_index.retain(|_, v| *v != k);
                }
                None => break,
            }
        }
        self.publish(&mut g, Resource::Events, &ns, "ADDED", ev);
    }

    /// The kubelet's record of a pod's containers (current, previous); both `None` forgets it.
    pub fn set_containers(&self, uid: &str, current: Option<String>, previous: Option<String>) {
        let mut g = self.lock();
        if current.is_none() && previous.is_none() {
            g.containers.remove(uid);
        } else {
            g.containers.insert(uid.to_string(), (current, previous));
        }
    }

    /// A pod's (current, previous) container ids.
    pub fn containers_of(&self, uid: &str) -> (Option<String>, Option<String>) {
        self.lock().containers.get(uid).cloned().unwrap_or_default()
    }

    /// Stops the kubelet: no container starts from now on, every pod task is told its pod is
    /// gone (the objects stay, as the API's state; nothing serves them any more).
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        let g = self.lock();
        for tx in g.signals.values() {
            let _ = tx.send(Signal::Gone);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Container starts under way.
    pub fn starting(&self) -> usize {
        self.0.starting.load(Ordering::SeqCst)
    }
}

fn out_last_key(out: &[Value]) -> Option<(String, String)> {
    out.last().map(|o| {
        (
            meta_str(o, "namespace").to_string(),
            meta_str(o, "name").to_string(),
        )
    })
}

/// The uids of a pod's owner references of kind Pod.
pub fn pod_owner_uids(pod: &Value) -> Vec<String> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The defaults the API server fills in on create (the ones a client is likely to read).
fn apply_pod_defaults(pod: &mut Value) {
    let spec = pod
        .as_object_mut()
        .expect("pod is an object")
        .entry("spec")
        .or_insert_with(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        s.entry("restartPolicy").or_insert(json!("Always"));
        s.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        s.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        s.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        s.entry("securityContext").or_insert(json!({}));
        s.entry("enableServiceLinks").or_insert(json!(true));
        if let Some(cs) = s.get_mut("containers").and_then(Value::as_array_mut) {
            for c in cs {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Some(c) = c.as_object_mut() else { continue };
                let tag_latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                let policy = if tag_latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
            }
        }
    }
    let qos = qos_class(pod);
    let status = pod
        .as_object_mut()
        .expect("pod is an object")
        .entry("status")
        .or_insert_with(|| json!({}));
    *status = json!({"phase": "Pending", "qosClass": qos});
}

fn qos_class(pod: &Value) -> &'static str {
    let cs = pod.pointer("/spec/containers").and_then(Value::as_array);
    let Some(cs) = cs else { return "BestEffort" };
    let mut any = false;
    let mut guaranteed = true;
    for c in cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
