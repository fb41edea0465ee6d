//! The fake API server over plain HTTP, with fake containers: what a client of the real API
//! relies on (codes and Status bodies, selectors, watch from a version, 410, grace, owner GC)
//! and the `/_fake/` faults.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn create_conflict_invalid_and_generate_name() {
    let f = fake().await;
    let base = f.url();
    let p = create(&base, "ns", &pod("a", json!({"app": "x"}))).await;
    assert_eq!(p["kind"], "Pod");
    assert_eq!(p["metadata"]["namespace"], "ns");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(p["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(p["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let (code, st) = call(
        "POST",
        &format!("{base}/api/v1/namespaces/ns/pods"),
        Some(&pod("a", json!({}))),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["apiVersion"], "v1");
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "AlreadyExists");
    assert_eq!(st["code"], 409);
    assert_eq!(st["message"], "pods \"a\" already exists");

    let bad = json!({"metadata": {"name": "b"}, "spec": {}});
    let (code, st) = call(
        "POST",
        &format!("{base}/api/v1/namespaces/ns/pods"),
        Some(&bad),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "spec.containers");
    assert_eq!(
        st["message"],
        "Pod \"b\" is invalid: spec.containers: Required value"
    );

    let (code, st) = call(
        "POST",
        &format!("{base}/api/v1/namespaces/ns/pods"),
        Some(&pod("Bad_Name", json!({}))),
    )
    .await;
    assert_eq!(code, 422, "{st}");

    let mut g = pod("", json!({}));
    g["metadata"] = json!({"generateName": "fn-"});
    let a = create(&base, "ns", &g).await;
    let b = create(&base, "ns", &g).await;
    let (na, nb) = (
        a["metadata"]["name"].as_str().unwrap(),
        b["metadata"]["name"].as_str().unwrap(),
    );
    assert!(na.starts_with("fn-") && na.len() == 8, "{na}");
    assert_ne!(na, nb);

    let (code, st) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/nope"),
        None,
    )
    .await;
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(st["message"], "pods \"nope\" not found");
    let (code, got) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/a"), None).await;
    assert_eq!(code, 200);
    assert_eq!(got["metadata"]["uid"], p["metadata"]["uid"]);
    f.shutdown().await;
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    let f = fake().await;
    let base = f.url();
    create(&base, "ns", &pod("a", json!({"app": "x", "tier": "web"}))).await;
    create(&base, "ns", &pod("b", json!({"app": "y", "tier": "db"}))).await;
    create(&base, "ns", &pod("c", json!({"app": "x"}))).await;
    create(&base, "other", &pod("d", json!({"app": "x"}))).await;
    let list = |sel: &str| {
        let url = format!("{base}/api/v1/namespaces/ns/pods?{sel}");
        async move {
            let (code, v) = call("GET", &url, None).await;
            assert_eq!(code, 200, "{v}");
            assert_eq!(v["kind"], "PodList");
            assert!(
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    > 0
            );
            names(&v)
        }
    };
    assert_eq!(list("").await, ["a", "b", "c"]);
    assert_eq!(list("labelSelector=app%3Dx").await, ["a", "c"]);
    assert_eq!(list("labelSelector=app%3D%3Dx").await, ["a", "c"]);
    assert_eq!(list("labelSelector=app!%3Dx").await, ["b"]);
    assert_eq!(
        list("labelSelector=tier%20in%20(web%2Cdb)").await,
        ["a", "b"]
    );
    assert_eq!(list("labelSelector=tier%20notin%20(web)").await, ["b", "c"]);
    assert_eq!(list("labelSelector=tier").await, ["a", "b"]);
    assert_eq!(list("labelSelector=!tier").await, ["c"]);
    assert_eq!(list("labelSelector=app%3Dx,tier").await, ["a"]);
    assert_eq!(list("fieldSelector=metadata.name%3Db").await, ["b"]);
    assert_eq!(
        list("fieldSelector=metadata.name!%3Db&labelSelector=app%3Dx").await,
        ["a", "c"]
    );

    let (code, all) = call(
        "GET",
        &format!("{base}/api/v1/pods?labelSelector=app%3Dx"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    // Items are sorted by namespace, then name.
    assert_eq!(names(&all), ["a", "c", "d"]);

    let (code, st) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?labelSelector=a%20in%20(x"),
        None,
    )
    .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (400, Some("BadRequest")),
        "{st}"
    );
    let (code, st) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?fieldSelector=spec.image%3Dx"),
        None,
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(st["message"], "field label not supported: spec.image");

    // Pages: limit and continue.
    let (_, p1) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?limit=2"),
        None,
    )
    .await;
    assert_eq!(names(&p1), ["a", "b"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 1);
    let tok = p1["metadata"]["continue"].as_str().unwrap();
    let (_, p2) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?limit=2&continue={tok}"),
        None,
    )
    .await;
    assert_eq!(names(&p2), ["c"]);
    assert!(p2["metadata"].get("continue").is_none());
    assert_eq!(
        p2["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
    f.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_resource_version_and_from_now() {
    let f = fake().await;
    let base = f.url();
    create(&base, "ns", &pod("early", json!({"app": "x"}))).await;
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?labelSelector=app%3Dx"),
        None,
    )
    .await;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    create(&base, "ns", &pod("late", json!({"app": "x"}))).await;
    create(&base, "ns", &pod("other", json!({"app": "y"}))).await;

    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&labelSelector=app%3Dx&resourceVersion={from}"
    ))
    .await;
    // Only changes after `from`, only matching pods: "early" is not re-announced.
    let first = w.next(T).await.unwrap();
    assert!(
        is(&first, "ADDED", "late")
            || (first["type"] == "MODIFIED" && first["object"]["metadata"]["name"] == "late"),
        "{first}"
    );
    assert!(rv(&first["object"]) > from.parse().unwrap());
    let ready_ev = w
        .until(T, |e| is(e, "MODIFIED", "late") && ready(&e["object"]))
        .await;
    assert!(ready_ev["object"]["status"]["podIP"]
        .as_str()
        .unwrap()
        .starts_with("10.244."));
    assert_eq!(ready_ev["object"]["status"]["phase"], "Running");

    // Unset resourceVersion: synthetic ADDED for what exists, then changes.
    let mut w2 = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&labelSelector=app%3Dx"
    ))
    .await;
    let mut seen = vec![];
    for _ in 0..2 {
        let e = w2.next(T).await.unwrap();
        assert_eq!(e["type"], "ADDED");
        seen.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    seen.sort();
    assert_eq!(seen, ["early", "late"]);
    create(&base, "ns", &pod("newest", json!({"app": "x"}))).await;
    w2.until(T, |e| is(e, "ADDED", "newest")).await;

    // timeoutSeconds ends the stream.
    let mut w3 = Watch::open(&format!(
        "{base}/api/v1/namespaces/quiet/pods?watch=true&resourceVersion={}&timeoutSeconds=1",
        f.cluster().resource_version()
    ))
    .await;
    assert!(w3.next(Duration::from_secs(5)).await.is_none());

    // Bookmarks when allowed, and the initial-events-end bookmark of a streaming list.
    let mut w4 = Watch::open(&format!("{base}/api/v1/namespaces/ns/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&labelSelector=app%3Dnone")).await;
    let bm = w4.next(T).await.unwrap();
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_410_gone_inside_the_stream() {
    let f = fake_with(|o| o.history_window = 5).await;
    let base = f.url();
    let first = create(&base, "ns", &pod("a", json!({}))).await;
    let old = rv(&first);
    for i in 0..5 {
        create(&base, "ns", &pod(&format!("p{i}"), json!({}))).await;
    }
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion={old}"
    ))
    .await;
    let e = w.next(T).await.unwrap();
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(e["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("too old resource version: {old} (")));
    assert!(w.next(T).await.is_none(), "the stream ends after the error");

    // Compacting makes every earlier version too old; the current one still works (with a
    // window wide enough for the kubelet's own changes in between).
    let (code, _) = call("POST", &format!("{base}/_fake/history?window=10000"), None).await;
    assert_eq!(code, 200);
    let (code, c) = call("POST", &format!("{base}/_fake/compact"), None).await;
    assert_eq!(code, 200);
    let now = c["compactedTo"].as_u64().unwrap();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion={}",
        now - 1
    ))
    .await;
    assert_eq!(w.next(T).await.unwrap()["object"]["code"], 410);
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion={now}"
    ))
    .await;
    create(&base, "ns", &pod("after", json!({}))).await;
    w.until(T, |e| is(e, "ADDED", "after")).await;
    f.shutdown().await;
}

#[tokio::test]
async fn delete_with_grace_then_deleted_and_immediate_delete() {
    let f = fake_with(|o| o.fake_stop_delay = Duration::from_millis(300)).await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    create(&base, "ns", &pod("a", json!({}))).await;
    w.until(T, |e| is(e, "MODIFIED", "a") && ready(&e["object"]))
        .await;

    let (code, p) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/a"),
        Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 20})),
    )
    .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 20);
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    let m = w
        .until(T, |e| {
            e["object"]["metadata"]["name"] == "a" && e["type"] != "ADDED"
        })
        .await;
    assert_eq!(m["type"], "MODIFIED");
    assert!(
        m["object"]["metadata"]["deletionTimestamp"].is_string(),
        "{m}"
    );
    // Stopped by the kubelet (well before the 20 s grace): terminated, then DELETED.
    let d = w.until(T, |e| is(e, "DELETED", "a")).await;
    assert_eq!(
        d["object"]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    let (code, _) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/a"), None).await;
    assert_eq!(code, 404);

    // Grace 0 in the query: gone at once.
    create(&base, "ns", &pod("b", json!({}))).await;
    w.until(T, |e| is(e, "MODIFIED", "b") && ready(&e["object"]))
        .await;
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/b?gracePeriodSeconds=0"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/b"), None).await;
    assert_eq!(code, 404);
    let (code, st) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/b"),
        None,
    )
    .await;
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));

    // Delete collection by label.
    create(&base, "ns", &pod("c1", json!({"fn": "c"}))).await;
    create(&base, "ns", &pod("c2", json!({"fn": "c"}))).await;
    create(&base, "ns", &pod("keep", json!({"fn": "k"}))).await;
    let (code, l) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods?labelSelector=fn%3Dc"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(l["kind"], "PodList");
    let mut n = names(&l);
    n.sort();
    assert_eq!(n, ["c1", "c2"]);
    w.until(T, |e| is(e, "DELETED", "c1") || is(e, "DELETED", "c2"))
        .await;
    w.until(T, |e| is(e, "DELETED", "c1") || is(e, "DELETED", "c2"))
        .await;
    let (_, left) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods"), None).await;
    assert_eq!(names(&left), ["keep"]);
    f.shutdown().await;
}

#[tokio::test]
async fn dependents_are_garbage_collected_with_their_owner_pod() {
    let f = fake().await;
    let base = f.url();
    let owner = create(&base, "ns", &pod("owner", json!({}))).await;
    let owner_ref = json!([{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner["metadata"]["uid"], "controller": true}]);
    let mut dep = pod("dep", json!({}));
    dep["metadata"]["ownerReferences"] = owner_ref.clone();
    create(&base, "ns", &dep).await;
    create(&base, "ns", &pod("free", json!({}))).await;
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion={}",
        f.cluster().resource_version()
    ))
    .await;
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/owner?gracePeriodSeconds=0"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    w.until(T, |e| is(e, "DELETED", "owner")).await;
    w.until(T, |e| is(e, "DELETED", "dep")).await;
    let (code, _) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/free"),
        None,
    )
    .await;
    assert_eq!(code, 200, "a pod without owners stays");

    // A dependent whose owner does not exist is collected too.
    let mut orphan = pod("orphan", json!({}));
    orphan["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod", "name": "gone", "uid": "00000000-0000-4000-8000-000000000000"}]);
    create(&base, "ns", &orphan).await;
    w.until(T, |e| is(e, "DELETED", "orphan")).await;
    f.shutdown().await;
}

#[tokio::test]
async fn refused_scheduling_keeps_pods_pending_with_failed_scheduling_events() {
    let f = fake().await;
    let base = f.url();
    let (code, _) = call(
        "POST",
        &format!("{base}/_fake/scheduling"),
        Some(&json!({"refuse": true})),
    )
    .await;
    assert_eq!(code, 200);
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    create(&base, "ns", &pod("p", json!({}))).await;
    let e = w.until(T, |e| is(e, "MODIFIED", "p")).await;
    let cond = e["object"]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(e["object"]["status"]["phase"], "Pending");
    let (_, evs) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/events?fieldSelector=involvedObject.name%3Dp"),
        None,
    )
    .await;
    let ev = &evs["items"][0];
    assert_eq!(ev["reason"], "FailedScheduling");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["source"]["component"], "default-scheduler");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");

    call(
        "POST",
        &format!("{base}/_fake/scheduling"),
        Some(&json!({"refuse": false})),
    )
    .await;
    let e = w
        .until(T, |e| is(e, "MODIFIED", "p") && ready(&e["object"]))
        .await;
    assert!(e["object"]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .starts_with("fake-node-"));
    // An unbound pod's delete is immediate.
    call(
        "POST",
        &format!("{base}/_fake/scheduling"),
        Some(&json!({"refuse": true})),
    )
    .await;
    create(&base, "ns", &pod("q", json!({}))).await;
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/q"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/q"), None).await;
    assert_eq!(code, 404);
    f.shutdown().await;
}

#[tokio::test]
async fn eviction_and_node_failure() {
    let f = fake_with(|o| o.nodes = 2).await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    for n in ["a", "b", "c"] {
        create(&base, "ns", &pod(n, json!({}))).await;
        w.until(T, |e| is(e, "MODIFIED", n) && ready(&e["object"]))
            .await;
    }
    let (code, _) = call("POST", &format!("{base}/_fake/pods/ns/a/evict"), None).await;
    assert_eq!(code, 200);
    let e = w
        .until(T, |e| {
            is(e, "MODIFIED", "a") && e["object"]["status"]["phase"] == "Failed"
        })
        .await;
    assert_eq!(e["object"]["status"]["reason"], "Evicted");
    w.until(T, |e| is(e, "DELETED", "a")).await;

    // b and c are on different nodes (round-robin over 2): failing b's node loses only b.
    let (_, b) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/b"), None).await;
    let node = b["spec"]["nodeName"].as_str().unwrap().to_string();
    let (code, r) = call("POST", &format!("{base}/_fake/nodes/{node}/fail"), None).await;
    assert_eq!(code, 200);
    assert_eq!(r["podsLost"], json!(["ns/b"]));
    let e = w
        .until(T, |e| is(e, "MODIFIED", "b") && !ready(&e["object"]))
        .await;
    let cond = e["object"]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(cond["reason"], "NodeLost");
    w.until(T, |e| is(e, "DELETED", "b")).await;
    let (code, _) = call("GET", &format!("{base}/api/v1/namespaces/ns/pods/c"), None).await;
    assert_eq!(code, 200);
    // New pods avoid the failed node.
    for n in ["d", "e"] {
        let _ = create(&base, "ns", &pod(n, json!({}))).await;
        let ev = w
            .until(T, |e| is(e, "MODIFIED", n) && ready(&e["object"]))
            .await;
        assert_ne!(ev["object"]["spec"]["nodeName"], node);
    }
    let (code, _) = call("POST", &format!("{base}/_fake/nodes/nope/fail"), None).await;
    assert_eq!(code, 404);
    f.shutdown().await;
}

#[tokio::test]
async fn missing_image_and_crash_loop() {
    let f = fake().await;
    let base = f.url();
    call(
        "POST",
        &format!("{base}/_fake/images"),
        Some(&json!({"image": "nowhere/image:1"})),
    )
    .await;
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    let mut p = pod("pull", json!({}));
    p["spec"]["containers"][0]["image"] = json!("nowhere/image:1");
    create(&base, "ns", &p).await;
    let waiting = |e: &Value, reason: &str| {
        e.pointer("/object/status/containerStatuses/0/state/waiting/reason") == Some(&json!(reason))
    };
    w.until(T, |e| {
        is(e, "MODIFIED", "pull") && waiting(e, "ErrImagePull")
    })
    .await;
    w.until(T, |e| {
        is(e, "MODIFIED", "pull") && waiting(e, "ImagePullBackOff")
    })
    .await;
    let (_, evs) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/events?fieldSelector=involvedObject.name%3Dpull"),
        None,
    )
    .await;
    let reasons: Vec<&str> = evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"Pulling") && reasons.contains(&"Failed") && reasons.contains(&"BackOff"),
        "{reasons:?}"
    );

    create(&base, "ns", &pod("crash", json!({}))).await;
    w.until(T, |e| is(e, "MODIFIED", "crash") && ready(&e["object"]))
        .await;
    for _ in 0..2 {
        call(
            "POST",
            &format!("{base}/_fake/pods/ns/crash/exit?code=3"),
            None,
        )
        .await;
        w.until(T, |e| is(e, "MODIFIED", "crash") && !ready(&e["object"]))
            .await;
        w.until(T, |e| is(e, "MODIFIED", "crash") && ready(&e["object"]))
            .await;
    }
    call(
        "POST",
        &format!("{base}/_fake/pods/ns/crash/exit?code=3"),
        None,
    )
    .await;
    let e = w
        .until(T, |e| {
            is(e, "MODIFIED", "crash") && waiting(e, "CrashLoopBackOff")
        })
        .await;
    let cs = &e["object"]["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert!(cs["restartCount"].as_u64().unwrap() >= 2, "{cs}");
    assert_eq!(e["object"]["status"]["phase"], "Running");

    let mut once = pod("once", json!({}));
    once["spec"]["restartPolicy"] = json!("Never");
    create(&base, "ns", &once).await;
    w.until(T, |e| is(e, "MODIFIED", "once") && ready(&e["object"]))
        .await;
    call(
        "POST",
        &format!("{base}/_fake/pods/ns/once/exit?code=1"),
        None,
    )
    .await;
    let e = w
        .until(T, |e| {
            is(e, "MODIFIED", "once") && e["object"]["status"]["phase"] != "Running"
        })
        .await;
    assert_eq!(e["object"]["status"]["phase"], "Failed");
    assert_eq!(
        e["object"]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    f.shutdown().await;
}

#[tokio::test]
async fn request_statistics_per_verb() {
    let f = fake().await;
    let base = f.url();
    create(&base, "ns", &pod("a", json!({}))).await;
    create(&base, "ns", &pod("b", json!({}))).await;
    call("GET", &format!("{base}/api/v1/namespaces/ns/pods/a"), None).await;
    call("GET", &format!("{base}/api/v1/namespaces/ns/pods"), None).await;
    call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/a"),
        None,
    )
    .await;
    let (_, s) = call("GET", &format!("{base}/_fake/stats"), None).await;
    assert_eq!(s["counts"]["create"], 2);
    assert_eq!(s["counts"]["get"], 1);
    assert_eq!(s["counts"]["list"], 1);
    assert_eq!(s["counts"]["delete"], 1);
    assert_eq!(s["total"], 5);
    let at: Vec<f64> = s["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["atMs"].as_f64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    call("POST", &format!("{base}/_fake/stats/reset"), None).await;
    let (_, s) = call("GET", &format!("{base}/_fake/stats"), None).await;
    assert_eq!(s["total"], 0);
    f.shutdown().await;
}

#[tokio::test]
async fn statistics_carry_each_pods_creation_and_first_ready() {
    // The ready delay is what a client subtracts as the simulated container start.
    let f = fake_with(|o| o.fake_ready_delay = Duration::from_millis(40)).await;
    let base = f.url();
    let mut w = Watch::open(&format!("{base}/api/v1/namespaces/ns/pods?watch=true")).await;
    create(&base, "ns", &pod("quick", json!({"fn": "q"}))).await;
    w.until(T, |e| is(e, "MODIFIED", "quick") && ready(&e["object"]))
        .await;
    call(
        "POST",
        &format!("{base}/_fake/scheduling"),
        Some(&json!({"refuse": true})),
    )
    .await;
    create(&base, "ns", &pod("stuck", json!({}))).await;
    let (_, s) = call("GET", &format!("{base}/_fake/stats"), None).await;
    let pods = s["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 2, "{s}");
    let (q, stuck) = (&pods[0], &pods[1]);
    assert_eq!(
        (q["name"].as_str(), q["namespace"].as_str()),
        (Some("quick"), Some("ns"))
    );
    assert_eq!(q["labels"], json!({"fn": "q"}));
    let (created, at) = (
        q["createdMs"].as_f64().unwrap(),
        q["readyMs"].as_f64().unwrap(),
    );
    assert!(at - created >= 40.0, "ready {at} ms, created {created} ms");
    assert_eq!(stuck["name"], "stuck");
    assert!(stuck["readyMs"].is_null(), "{stuck}");
    assert!(stuck["createdMs"].as_f64().unwrap() >= created);
    call("POST", &format!("{base}/_fake/stats/reset"), None).await;
    let (_, s) = call("GET", &format!("{base}/_fake/stats"), None).await;
    assert_eq!(s["pods"], json!([]));
    f.shutdown().await;
}

#[tokio::test]
async fn discovery_and_unknown_paths() {
    let f = fake().await;
    let base = f.url();
    let (code, v) = call("GET", &format!("{base}/api"), None).await;
    assert_eq!((code, v["kind"].as_str()), (200, Some("APIVersions")));
    let (_, v) = call("GET", &format!("{base}/api/v1"), None).await;
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "pods"));
    let (code, v) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/services"),
        None,
    )
    .await;
    assert_eq!((code, v["kind"].as_str()), (404, Some("Status")));
    let (code, _) = call(
        "PATCH",
        &format!("{base}/api/v1/namespaces/ns/pods/x"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(code, 405);
    let r = nanofaas_testkit::http(
        "POST",
        &format!("{base}/api/v1/namespaces/ns/pods"),
        &[],
        "{not json",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["kind"], "Status");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fake_pods_all_become_ready_on_one_watch() {
    let f = fake_with(|o| o.fake_ready_delay = Duration::from_millis(20)).await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1&labelSelector=app%3Dscale"
    ))
    .await;
    let creates: Vec<_> = (0..1000)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                create(&base, "ns", &pod(&format!("p{i}"), json!({"app": "scale"}))).await
            })
        })
        .collect();
    for c in creates {
        c.await.expect("create task");
    }
    let mut ready_pods = std::collections::HashSet::new();
    let mut ips = std::collections::HashSet::new();
    while ready_pods.len() < 1000 {
        let e = w.next(Duration::from_secs(30)).await.expect("watch open");
        if e["type"] == "MODIFIED"
            && ready(&e["object"])
            && ready_pods.insert(
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        {
            ips.insert(e["object"]["status"]["podIP"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ips.len(), 1000, "every fake pod has its own IP");
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods?labelSelector=app%3Dscale&limit=500"),
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 500);
    assert_eq!(list["metadata"]["remainingItemCount"], 500);
    f.shutdown().await;
}

#[tokio::test]
async fn events_get_list_and_watch_by_involved_object() {
    let f = fake().await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/events?watch=true&fieldSelector=involvedObject.name%3Dp"
    ))
    .await;
    create(&base, "ns", &pod("other", json!({}))).await;
    let p = create(&base, "ns", &pod("p", json!({}))).await;
    let e = w
        .until(T, |e| {
            e["type"] == "ADDED" && e["object"]["reason"] == "Scheduled"
        })
        .await;
    let ev = &e["object"];
    assert_eq!(ev["kind"], "Event");
    assert_eq!(ev["involvedObject"]["uid"], p["metadata"]["uid"]);
    assert!(ev["message"]
        .as_str()
        .unwrap()
        .starts_with("Successfully assigned ns/p to fake-node-"));
    let started = w.until(T, |e| e["object"]["reason"] == "Started").await;
    assert_eq!(started["object"]["source"]["component"], "kubelet");
    let name = ev["metadata"]["name"].as_str().unwrap();
    let (code, one) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/events/{name}"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(one["reason"], "Scheduled");
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/events?fieldSelector=involvedObject.name%3Dp,reason%3DScheduled"),
        None,
    )
    .await;
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    f.shutdown().await;
}

#[tokio::test]
async fn a_container_that_does_not_stop_is_killed_when_the_grace_ends() {
    // The fake container would take a minute to stop; the grace is 1 s.
    let f = fake_with(|o| o.fake_stop_delay = Duration::from_secs(60)).await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    create(&base, "ns", &pod("slow", json!({}))).await;
    w.until(T, |e| is(e, "MODIFIED", "slow") && ready(&e["object"]))
        .await;
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/namespaces/ns/pods/slow?gracePeriodSeconds=1"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    w.until(T, |e| is(e, "DELETED", "slow")).await;
    f.shutdown().await;
}

#[tokio::test]
async fn a_fake_containers_log_follow_stays_open_until_the_container_ends() {
    let f = fake().await;
    let base = f.url();
    let mut w = Watch::open(&format!(
        "{base}/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1"
    ))
    .await;
    let mut p = pod("quiet", json!({}));
    p["spec"]["restartPolicy"] = json!("Never");
    create(&base, "ns", &p).await;
    w.until(T, |e| {
        is(e, "MODIFIED", "quiet") && e["object"]["status"]["phase"] == "Running"
    })
    .await;
    let url = format!("{base}/api/v1/namespaces/ns/pods/quiet/log?follow=true");
    // Open and empty while the container runs.
    let (code, text, ended) = read_stream(&url, Duration::from_millis(600)).await;
    assert_eq!((code, text.as_str(), ended), (200, "", false));
    // Ends once the container has exited.
    let follow = tokio::spawn(async move { read_stream(&url, T).await });
    call(
        "POST",
        &format!("{base}/_fake/pods/ns/quiet/exit?code=0"),
        None,
    )
    .await;
    let (code, text, ended) = follow.await.unwrap();
    assert_eq!((code, text.as_str(), ended), (200, "", true));
    // A container that has not started yet: 400, as the real API.
    let mut p = pod("blocked", json!({}));
    p["spec"]["containers"][0]["image"] = json!("nowhere/image:2");
    call(
        "POST",
        &format!("{base}/_fake/images"),
        Some(&json!({"image": "nowhere/image:2"})),
    )
    .await;
    create(&base, "ns", &p).await;
    let (code, st) = call(
        "GET",
        &format!("{base}/api/v1/namespaces/ns/pods/blocked/log?follow=true"),
        None,
    )
    .await;
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("is waiting to start"),
        "{st}"
    );
}
