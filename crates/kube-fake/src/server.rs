//! The HTTP front: routes the Kubernetes API paths a client uses for pods and events, and the
//! `/_fake/` control endpoints, onto [`Cluster`]; streams watches.
//!
//! Owns paths, query parameters, content types and the shape of lists and watch events; it
//! holds no state of its own.

use crate::cluster::{Change, Cluster, Resource};
use crate::kubelet::Signal;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A response body: whole, or a stream of chunks (watches).
pub enum ApiBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ApiBody::Full(f) => Pin::new(f).poll_frame(cx),
            ApiBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

type Resp = Response<ApiBody>;

const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_resp(code: u16, v: &Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(ApiBody::Full(Full::new(Bytes::from(v.to_string()))))
        .expect("response")
}

fn err_resp(e: ApiError) -> Resp {
    json_resp(e.code, &e.body)
}

fn text_resp(code: u16, t: &str) -> Resp {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(ApiBody::Full(Full::new(Bytes::from(t.to_string()))))
        .expect("response")
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3).unwrap_or(b""))
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (pct_decode(k), pct_decode(v)),
                    None => (pct_decode(p), String::new()),
                })
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1") | Some(""))
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The verb of an API request, for the statistics.
fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError { code: 413, body: json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":format!("the request body could not be read: {e}"),"reason":"RequestEntityTooLarge","code":413}) })?
        .to_bytes();
    if !body.is_empty()
        && !ct.is_empty()
        && !ct.starts_with("application/json")
        && !ct.contains("merge-patch+json")
    {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    Ok(body)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized: {e}")))
}

/// The request's grace from the query or the DeleteOptions body, and a uid precondition.
fn delete_options(q: &Query, body: &[u8]) -> Result<(Option<i64>, Option<String>), ApiError> {
    let mut grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        ),
        None => None,
    };
    let mut uid = None;
    if !body.is_empty() {
        let opts = parse_json(body)?;
        if let Some(g) = opts.get("gracePeriodSeconds").and_then(Value::as_i64) {
            grace = Some(g);
        }
        uid = opts
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
    }
    Ok((grace, uid))
}

/// Strips what list items do not carry on the wire.
fn list_item(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    v
}

pub async fn handle(c: Cluster, req: Request<Incoming>) -> Result<Resp, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let q = Query::parse(req.uri().query());
    if path.starts_with("/_fake/") || path == "/_fake" {
        return Ok(control(c, req, &path, &q).await.unwrap_or_else(err_resp));
    }
    Ok(api(c, req, &path, &q).await.unwrap_or_else(err_resp))
}

async fn api(c: Cluster, req: Request<Incoming>, path: &str, q: &Query) -> Result<Resp, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match segs.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => return Ok(text_resp(200, "ok")),
        ["version"] => {
            return Ok(json_resp(
                200,
                &json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0-nanofaas-kube-fake",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
            ))
        }
        ["api"] => {
            return Ok(json_resp(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            ))
        }
        ["api", "v1"] => {
            let verbs = json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]);
            return Ok(json_resp(
                200,
                &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": verbs, "shortNames": ["po"]},
                    {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]},
                    {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
                    {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": verbs, "shortNames": ["ev"]},
                ]}),
            ));
        }
        _ => {}
    }
    // /api/v1/[namespaces/{ns}/]{pods|events}[/{name}[/status]]
    let (ns, rest): (Option<String>, &[&str]) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, rest @ ..] if !rest.is_empty() => {
            (Some(ns.to_string()), rest)
        }
        ["api", "v1", rest @ ..] if !rest.is_empty() => (None, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let resource = match rest[0] {
        "pods" => Resource::Pods,
        "events" => Resource::Events,
        _ => return Err(ApiError::no_route(path)),
    };
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).copied();
    if rest.len() > 3
        || (sub.is_some()
            && !(resource == Resource::Pods && matches!(sub, Some("status") | Some("log"))))
    {
        return Err(ApiError::no_route(path));
    }
    if ns.is_none() && (name.is_some() || method != Method::GET) {
        return Err(ApiError::no_route(path));
    }
    let watch = method == Method::GET && name.is_none() && q.flag("watch");
    c.record_request(verb(&method, name.is_some(), watch));
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), resource.fields())
        .map_err(ApiError::bad_request)?;
    let ns_ref = ns.as_deref();
    match (method, name) {
        (Method::GET, None) if watch => Ok(watch_resp(&c, resource, ns_ref, labels, fields, q)),
        (Method::GET, None) => list(&c, resource, ns_ref, &labels, &fields, q),
        (Method::GET, Some(n)) if sub == Some("log") => {
            pod_log(&c, ns_ref.unwrap_or(""), &n, q).await
        }
        (Method::GET, Some(n)) => c
            .get(resource, ns_ref.unwrap_or(""), &n)
            .map(|v| json_resp(200, &v)),
        (Method::POST, None) if resource == Resource::Pods => {
            let body = read_body(req).await?;
            let pod = parse_json(&body)?;
            c.create_pod(ns_ref.unwrap_or(""), pod)
                .map(|v| json_resp(201, &v))
        }
        (Method::POST, None) => {
            // Events are written by the simulated kubelet; a client may create them too.
            Err(ApiError::method_not_allowed(
                "POST events (the fake's events come from its kubelet)",
            ))
        }
        (Method::DELETE, Some(n)) if resource == Resource::Pods && sub.is_none() => {
            let body = read_body(req).await?;
            let (grace, uid) = delete_options(q, &body)?;
            c.delete_pod(ns_ref.unwrap_or(""), &n, grace, uid.as_deref())
                .map(|v| json_resp(200, &v))
        }
        (Method::DELETE, None) if resource == Resource::Pods => {
            let body = read_body(req).await?;
            let (grace, _) = delete_options(q, &body)?;
            let deleted = c.delete_pods(ns_ref, &labels, &fields, grace);
            let items: Vec<Value> = deleted.into_iter().map(list_item).collect();
            Ok(json_resp(
                200,
                &json!({"kind": "PodList", "apiVersion": "v1",
                "metadata": {"resourceVersion": c.resource_version().to_string()}, "items": items}),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// GET .../pods/{name}/log: the container's output as text (`container`, `previous`,
/// `tailLines`, `timestamps`); with `follow`, streamed until the container stops.
async fn pod_log(c: &Cluster, ns: &str, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let pod = c.get(Resource::Pods, ns, name)?;
    let cname = pod
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(want) = q.get("container").filter(|w| !w.is_empty()) {
        let known = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == want));
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {want} is not valid for pod {name}"
            )));
        }
        if want != cname {
            return Err(ApiError::bad_request(format!(
                "container \"{want}\" in pod \"{name}\" is waiting to start: the fake kubelet runs only a pod's first container"
            )));
        }
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let previous = q.get("previous").is_some_and(|v| v == "true" || v == "1");
    let (current, prev) = c.containers_of(uid);
    let id = if previous { prev } else { current };
    let Some(id) = id else {
        let msg = if previous {
            format!("previous terminated container \"{cname}\" in pod \"{name}\" not found")
        } else {
            let reason = pod
                .pointer("/status/containerStatuses/0/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("ContainerCreating");
            format!("container \"{cname}\" in pod \"{name}\" is waiting to start: {reason}")
        };
        return Err(ApiError::bad_request(msg));
    };
    let tail = q.get("tailLines").and_then(|t| t.parse::<u64>().ok());
    let timestamps = q.get("timestamps").is_some_and(|v| v == "true" || v == "1");
    if q.flag("follow") && !previous {
        // Streamed as the container writes, until it stops (or the client goes).
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let resp = Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("transfer-encoding", "chunked")
            .body(ApiBody::Stream(rx))
            .expect("response");
        if c.options().containers == crate::Containers::Docker {
            tokio::spawn(async move {
                let _ = crate::docker::follow_logs(&id, tail, timestamps, tx).await;
            });
        } else {
            // Fake containers write nothing: the stream stays open, empty, while the
            // container runs (the pod's current container is still this one, not terminated).
            let c = c.clone();
            let (uid, ns, name) = (uid.to_string(), ns.to_string(), name.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tick.tick() => {}
                    }
                    let ended = c.get(Resource::Pods, &ns, &name).map_or(true, |p| {
                        p.pointer("/status/containerStatuses/0/state/terminated")
                            .is_some()
                    });
                    if ended
                        || c.is_closed()
                        || c.containers_of(&uid).0.as_deref() != Some(id.as_str())
                    {
                        return;
                    }
                }
            });
        }
        return Ok(resp);
    }
    if c.options().containers != crate::Containers::Docker {
        return Ok(text_resp(200, ""));
    }
    let text = crate::docker::logs(&id, tail, timestamps)
        .await
        .map_err(ApiError::internal)?;
    Ok(text_resp(200, &text))
}

fn list(
    c: &Cluster,
    resource: Resource,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    q: &Query,
) -> Result<Resp, ApiError> {
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        )
        .filter(|l| *l > 0),
        _ => None,
    };
    let (after, first_rv) = match q.get("continue").filter(|s| !s.is_empty()) {
        Some(tok) => {
            let bad = || {
                ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            };
            let s = unhex(tok).ok_or_else(bad)?;
            let mut it = s.splitn(3, '\u{0}');
            let rv: u64 = it.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
            let n = it.next().ok_or_else(bad)?.to_string();
            let m = it.next().ok_or_else(bad)?.to_string();
            (Some((n, m)), Some(rv))
        }
        None => (None, None),
    };
    let (items, rv, next, remaining) = c.list(resource, ns, labels, fields, after.as_ref(), limit);
    let rv = first_rv.unwrap_or(rv);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((n, m)) = next {
        meta["continue"] = json!(hex(&format!("{rv}\u{0}{n}\u{0}{m}")));
        meta["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = items.into_iter().map(list_item).collect();
    let kind = format!("{}List", resource.kind());
    Ok(json_resp(
        200,
        &json!({"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items}),
    ))
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_resp(
    c: &Cluster,
    resource: Resource,
    ns: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &Query,
) -> Resp {
    let from = q
        .get("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>());
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(ApiBody::Stream(rx))
        .expect("response");
    let from = match from {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let e = ApiError::bad_request("resourceVersion: Invalid value: not a number");
            return err_resp(e);
        }
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(c.options().watch_timeout_default);
    let bookmarks = q.flag("allowWatchBookmarks");
    let initial_events = q.flag("sendInitialEvents");
    let interval = c.options().bookmark_interval;
    let started = c.watch(resource, ns, from);
    let ns = ns.map(String::from);
    let kind = resource.kind();
    tokio::spawn(async move {
        let (backlog, mut changes, rv_at_start) = match started {
            Ok(s) => s,
            Err(gone) => {
                let _ = tx.send(event_line("ERROR", &gone.body)).await;
                return;
            }
        };
        let wanted = |ch: &Change| {
            ch.resource == resource
                && ns.as_deref().is_none_or(|n| n == ch.namespace)
                && labels.matches(&ch.object)
                && fields.matches(&ch.object)
        };
        for ch in backlog {
            if wanted(&ch) && tx.send(event_line(ch.kind, &ch.object)).await.is_err() {
                return;
            }
        }
        // Everything up to the version at the start has been sent (or filtered out).
        let mut last_rv = rv_at_start;
        if initial_events && from.unwrap_or(0) == 0 {
            let bm = json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": last_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(event_line("BOOKMARK", &bm)).await.is_err() {
                return;
            }
        }
        let end = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let got: Result<Arc<Change>, broadcast::error::RecvError> = tokio::select! {
                _ = tokio::time::sleep_until(end) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    // Everything already broadcast is sent before the bookmark names its version.
                    loop {
                        match changes.try_recv() {
                            Ok(ch) => {
                                if ch.rv <= last_rv { continue; }
                                last_rv = ch.rv;
                                if wanted(&ch) && tx.send(event_line(ch.kind, &ch.object)).await.is_err() { return; }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                let _ = tx.send(event_line("ERROR", &ApiError::gone(last_rv, last_rv + 1).body)).await;
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    let bm = json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(event_line("BOOKMARK", &bm)).await.is_err() { return; }
                    continue;
                }
                r = changes.recv() => r,
            };
            match got {
                Ok(ch) => {
                    if ch.rv <= last_rv {
                        continue;
                    }
                    last_rv = ch.rv;
                    if wanted(&ch) && tx.send(event_line(ch.kind, &ch.object)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // A watcher that cannot keep up is closed as the real cache closes it; the
                    // client resumes from its last version and gets 410 if that is too old.
                    let _ = tx
                        .send(event_line(
                            "ERROR",
                            &ApiError::gone(last_rv, last_rv + 1).body,
                        ))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    resp
}

async fn control(
    c: Cluster,
    req: Request<Incoming>,
    path: &str,
    q: &Query,
) -> Result<Resp, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    let body = read_body(req).await?;
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let ok = |v: Value| Ok(json_resp(200, &v));
    match (method, segs.as_slice()) {
        (Method::GET, ["stats"]) => ok(c.stats()),
        (Method::POST, ["stats", "reset"]) => {
            c.reset_stats();
            ok(json!({"reset": true}))
        }
        (Method::POST, ["compact"]) => ok(json!({"compactedTo": c.compact()})),
        (Method::POST, ["history"]) => {
            let n = q
                .get("window")
                .and_then(|w| w.parse::<usize>().ok())
                .or_else(|| {
                    body.get("window")
                        .and_then(Value::as_u64)
                        .map(|w| w as usize)
                });
            let n =
                n.ok_or_else(|| ApiError::bad_request("window: a positive number is required"))?;
            c.set_history_window(n);
            ok(json!({"window": n.max(1)}))
        }
        (Method::POST, ["pods", ns, name, "evict"]) => {
            let msg = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The node was low on resource: memory. ")
                .to_string();
            c.signal(ns, name, Signal::Evict(msg))?;
            ok(json!({"evicted": format!("{ns}/{name}")}))
        }
        (Method::POST, ["pods", ns, name, "exit"]) => {
            let code = q
                .get("code")
                .and_then(|v| v.parse().ok())
                .or_else(|| body.get("code").and_then(Value::as_i64))
                .unwrap_or(1);
            c.signal(ns, name, Signal::Exit(code))?;
            ok(json!({"exit": code}))
        }
        (Method::GET, ["nodes"]) => {
            let nodes: Vec<Value> = c
                .nodes()
                .into_iter()
                .map(|(n, f)| json!({"name": n, "failed": f, "pods": c.pods_on(&n).len()}))
                .collect();
            ok(json!({"nodes": nodes}))
        }
        (Method::POST, ["nodes", node, action]) if *action == "fail" || *action == "recover" => {
            if !c.nodes().iter().any(|(n, _)| n == node) {
                return Err(ApiError::not_found("nodes", node));
            }
            let fail = *action == "fail";
            c.set_node_failed(node, fail);
            let mut lost = Vec::new();
            if fail {
                for (ns, name) in c.pods_on(node) {
                    let _ = c.signal(&ns, &name, Signal::NodeLost);
                    lost.push(format!("{ns}/{name}"));
                }
            }
            ok(json!({"node": node, "failed": fail, "podsLost": lost}))
        }
        (Method::POST, ["scheduling"]) => {
            let refuse = body
                .get("refuse")
                .and_then(Value::as_bool)
                .or_else(|| q.get("refuse").map(|r| r == "true"))
                .unwrap_or(true);
            let n = c.options().nodes.max(1);
            let msg = body.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| {
                format!("0/{n} nodes are available: {n} Insufficient cpu. preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod.")
            });
            c.0.scheduling.send_replace(refuse.then_some(msg));
            ok(json!({"refuse": refuse}))
        }
        (Method::POST, ["images"]) => {
            let image = body
                .get("image")
                .and_then(Value::as_str)
                .or_else(|| q.get("image"))
                .ok_or_else(|| ApiError::bad_request("image is required"))?;
            let missing = body.get("missing").and_then(Value::as_bool).unwrap_or(true);
            c.set_image_missing(image, missing);
            ok(json!({"image": image, "missing": missing}))
        }
        (m, _) => Err(ApiError {
            code: 404,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("no control endpoint {m} {path}"), "reason": "NotFound", "code": 404}),
        }),
    }
}
