//! The logs routes on a real control plane on loopback (POOL functions: nothing prints, so the
//! shape, the errors, the access rules and the live stream's framing are what is checked here;
//! lines of real runtimes are in crates/e2e/tests/logs.rs).

mod common;

use common::{config, http, Cp, Endpoint, Reply};
use nanofaas_control_plane::access::{hash_token, hex};
use nanofaas_control_plane::config::TokenConfig;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn logs_routes_answer_their_documented_shapes() {
    let ep = Endpoint::start(|_, _| Reply::Json(200, json!("ok"))).await;
    let cp = Cp::start(config()).await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    let r = cp
        .post("/v1/functions/echo:invoke", json!({"input": 1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["executionId"].as_str().unwrap().to_string();

    let r = cp.get(&format!("/v1/executions/{id}/logs")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"executionId": id, "truncated": false, "lines": []})
    );

    // Unknown: the same 404 as the execution itself.
    let a = cp.get("/v1/executions/nope/logs").await;
    let b = cp.get("/v1/executions/nope").await;
    assert_eq!((a.status, b.status), (404, 404));
    assert_eq!(a.json(), b.json());
    assert_eq!(a.json()["error"]["code"], "NOT_FOUND");
    assert_eq!(cp.get("/v1/executions/a/b/logs").await.status, 404);

    let r = cp.get("/v1/functions/echo/logs").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"function": "echo", "lines": []}));
    assert_eq!(
        cp.get("/v1/functions/echo/logs?follow=false").await.status,
        200
    );
    let r = cp.get("/v1/functions/nope/logs").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    let r = cp.get("/v1/functions/echo/logs?follow=maybe").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("follow"), "{}", r.text());
    let r = http("POST", &cp.url("/v1/functions/echo/logs"), &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    cp.shutdown().await;
}

#[tokio::test]
async fn following_streams_server_sent_events_until_the_server_stops() {
    let ep = Endpoint::start(|_, _| Reply::Json(200, json!("ok"))).await;
    let cp = Cp::start(config()).await;
    cp.register_pool("echo", &ep.url(), json!({})).await;
    let addr = cp.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!("GET /v1/functions/echo/logs?follow=true HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The head and the first comment arrive at once; bounded.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains(": following\n\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no stream: {}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    // Stopping the server ends the stream (the connection closes), and the stop completes.
    let stop = tokio::spawn(cp.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end with the server");
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("the server stopped")
        .unwrap();
}

#[tokio::test]
async fn reading_logs_needs_the_viewer_role_like_reading_executions() {
    let ep = Endpoint::start(|_, _| Reply::Json(200, json!("ok"))).await;
    let mut cfg = config();
    let token = |role: &str, t: &str, f: &[&str]| TokenConfig {
        role: role.into(),
        sha256: hex(&hash_token(t)),
        functions: f.iter().map(|s| s.to_string()).collect(),
    };
    cfg.api.tokens = vec![
        token("admin", "nf_admin", &[]),
        token("viewer", "nf_view", &[]),
        token("invoker", "nf_other", &["other-*"]),
    ];
    let cp = Cp::start(cfg).await;
    let admin = [("authorization", "Bearer nf_admin")];
    let body = json!({"name": "echo", "executionMode": "POOL", "endpointUrl": ep.url()});
    let r = http("POST", &cp.url("/v1/functions"), &admin, body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(
        "POST",
        &cp.url("/v1/functions/echo:invoke"),
        &admin,
        json!({"input": 1}).to_string(),
    )
    .await
    .unwrap();
    let id = r.json()["executionId"].as_str().unwrap().to_string();
    for path in [
        format!("/v1/executions/{id}/logs"),
        "/v1/functions/echo/logs".into(),
    ] {
        let get = |h: &'static str| {
            let url = cp.url(&path);
            async move {
                let hs: Vec<(&str, &str)> = if h.is_empty() {
                    vec![]
                } else {
                    vec![("authorization", h)]
                };
                http("GET", &url, &hs, "").await.unwrap().status
            }
        };
        assert_eq!(get("").await, 401, "{path}");
        assert_eq!(get("Bearer nf_view").await, 200, "{path}");
        assert_eq!(get("Bearer nf_other").await, 403, "{path}");
    }
    cp.shutdown().await;
}
