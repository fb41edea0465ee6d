//! Answers at the edges of HTTP/1.1, from a raw peer: bodiless answers, conflicting framing,
//! many header fields, bytes after an answer.

use nanofaas_h1::{Client, ClientSettings, Endpoint, Error, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn client() -> Client {
    Client::new(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: 4,
    })
}

struct Peer {
    endpoint: Endpoint,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Answers the n-th request (over all connections) with `answers[n]`, written as is, and closes
/// the connection after the last one.
async fn peer(answers: Vec<Vec<u8>>) -> Peer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::tcp(l.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (c2, r2) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let (answers, requests) = (answers.clone(), r2.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // Requests here have no body: a head ends the request.
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    got.drain(..end + 4);
                    requests.fetch_add(1, Ordering::SeqCst);
                    let next = answers.lock().unwrap().next();
                    let Some(a) = next else { return };
                    if s.write_all(&a).await.is_err() {
                        return;
                    }
                    if answers.lock().unwrap().len() == 0 {
                        // Nothing left to say: close (ends a close-delimited body).
                        return;
                    }
                }
            });
        }
    });
    Peer {
        endpoint,
        connections,
        requests,
    }
}

async fn send(c: &Client, p: &Peer, method: &str) -> Result<Response, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    c.send_to(&p.endpoint, "peer", method, "/x", &[], b"", 1024, deadline)
        .await
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n".to_vec(),
        ok("after"),
    ])
    .await;
    let c = client();
    let r = send(&c, &p, "HEAD").await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = send(&c, &p, "GET").await.unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
    let r = send(&c, &p, "GET").await.unwrap();
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = send(&c, &p, "GET").await.unwrap();
    assert_eq!(&r.body[..], b"after");
    assert_eq!(
        p.connections.load(Ordering::SeqCst),
        1,
        "one connection for all four"
    );
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused() {
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        ok("next"),
    ])
    .await;
    let c = client();
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"hello");
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"next");
    assert_eq!(p.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_runs_until_the_close() {
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\nraw bytes"
            .to_vec(),
    ])
    .await;
    // The peer keeps the connection open after its last answer; it closes when it has none left.
    let r = send(&client(), &p, "GET").await.unwrap();
    assert_eq!(&r.body[..], b"raw bytes");
}

#[tokio::test]
async fn duplicate_content_length_must_agree() {
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 20\r\n\r\nok".to_vec(),
    ])
    .await;
    let c = client();
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"ok");
    match send(&c, &p, "GET").await {
        Err(Error::Lost(m)) => assert!(m.contains("conflicting content-length"), "{m}"),
        other => panic!("{other:?}"),
    }
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\nok".to_vec()
    ])
    .await;
    assert!(matches!(send(&c, &p, "GET").await, Err(Error::Lost(_))));
}

#[tokio::test]
async fn many_header_fields_are_read() {
    let mut a = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..300 {
        a.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    a.push_str("x-runtime-start-ms: 42\r\ncontent-length: 2\r\n\r\nok");
    let p = peer(vec![a.into_bytes(), ok("again")]).await;
    let c = client();
    let r = send(&c, &p, "GET").await.unwrap();
    assert_eq!((&r.body[..], r.runtime_start_ms), (&b"ok"[..], Some(42)));
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"again");
    assert_eq!(p.connections.load(Ordering::SeqCst), 1);

    // Past the limit of header fields: an error, not a hang or a crash.
    let mut a = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..1100 {
        a.push_str(&format!("x-{i}: 1\r\n"));
    }
    a.push_str("content-length: 0\r\n\r\n");
    let p = peer(vec![a.into_bytes()]).await;
    assert!(matches!(send(&c, &p, "GET").await, Err(Error::Lost(_))));
}

#[tokio::test]
async fn bytes_after_an_answer_are_not_taken_for_the_next_one() {
    let mut first = ok("one");
    first.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale");
    let p = peer(vec![first, ok("two")]).await;
    let c = client();
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"one");
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"two");
    assert_eq!(
        p.connections.load(Ordering::SeqCst),
        2,
        "the dirty connection was dropped"
    );
    assert_eq!(p.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let p = peer(vec![
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na".to_vec(),
        ok("b"),
    ])
    .await;
    let c = client();
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"a");
    assert_eq!(&send(&c, &p, "GET").await.unwrap().body[..], b"b");
    assert_eq!(p.connections.load(Ordering::SeqCst), 2);
}
