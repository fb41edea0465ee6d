//! The client under faults, against raw sockets: a peer that reads a request and closes, a
//! worker loop that blocks, an endpoint that is forgotten.

use nanofaas_h1::{Client, ClientSettings, Endpoint, Error};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn client() -> Client {
    Client::new(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_host: 4,
    })
}

/// What a scripted peer saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Every complete request head, in arrival order, with its connection number.
    requests: Mutex<Vec<(usize, String)>>,
    /// Connections the client closed (the peer read the end of stream between requests).
    closed_by_client: AtomicUsize,
}

impl Seen {
    fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// How the peer treats request `n` (1-based, over all connections) on connection `c`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    Answer,
    /// Read the request, then close without a byte of answer.
    ReadAndClose,
    /// Read the request and never answer (the connection stays open).
    Hang,
}

/// Reads one request head (and a `content-length` body) from `s` into `buf`; `None` at the end
/// of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            buf.drain(..end + 4 + len);
            return Some(head);
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// A peer on its own thread (so that no loop of the client's drives it) acting as `script` says.
fn peer(script: impl Fn(usize) -> Act + Send + Sync + 'static) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let s2 = seen.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let c = s2.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (seen, script) = (s2.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(head) = read_request(&mut s, &mut buf).await else {
                            seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        let n = {
                            let mut r = seen.requests.lock().unwrap();
                            r.push((c, head));
                            r.len()
                        };
                        match script(n) {
                            Act::Answer => {
                                let a = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if s.write_all(a).await.is_err() {
                                    return;
                                }
                            }
                            Act::ReadAndClose => return,
                            Act::Hang => {
                                let mut rest = [0u8; 64];
                                let _ = s.read(&mut rest).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
    });
    (addr, seen)
}

async fn post(c: &Client, e: &Endpoint) -> Result<nanofaas_h1::Response, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    c.send_to(e, "peer", "POST", "/invoke", &[], b"{}", 1024, deadline)
        .await
}

/// A request fully written on a reused connection that the peer then closes is not sent again:
/// the attempt fails, and the peer saw it once.
#[tokio::test]
async fn a_written_request_on_a_reused_connection_is_never_sent_twice() {
    let (addr, seen) = peer(|n| {
        if n == 2 {
            Act::ReadAndClose
        } else {
            Act::Answer
        }
    });
    let c = client();
    let e = Endpoint::tcp(addr);
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    let second = post(&c, &e).await;
    assert!(matches!(second, Err(Error::Lost(_))), "{second:?}");
    assert_eq!(
        seen.requests(),
        2,
        "each send reached the peer exactly once"
    );
    // The next send opens a new connection and is answered.
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    assert_eq!(seen.requests(), 3);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// A request on a fresh connection that the peer reads and closes is not sent again either.
#[tokio::test]
async fn a_written_request_on_a_fresh_connection_is_never_sent_twice() {
    let (addr, seen) = peer(|_| Act::ReadAndClose);
    let r = post(&client(), &Endpoint::tcp(addr)).await;
    assert!(matches!(r, Err(Error::Lost(_))), "{r:?}");
    assert_eq!(seen.requests(), 1);
}

/// While one worker thread's loop is blocked, a request from another worker thread is served:
/// it never drives (or waits for) a connection that the blocked loop opened.
#[test]
fn a_blocked_worker_does_not_delay_another_workers_request() {
    let (addr, seen) = peer(|_| Act::Answer);
    let c = client();
    let e = Endpoint::tcp(addr);
    let (idle_tx, idle_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (c1, e1) = (c.clone(), e.clone());
    let blocked = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            assert_eq!(post(&c1, &e1).await.unwrap().status, 200);
            // Its connection is idle now; block this loop until the other worker is done.
            idle_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(10)).is_ok()
        })
    });
    idle_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Bounded so that a failure is an error, not a hang: far longer than a loopback call.
    let other =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), post(&c, &e)).await });
    release_tx.send(()).unwrap();
    assert!(
        blocked.join().unwrap(),
        "the blocked worker was released by the other one"
    );
    let other = other.expect("the other worker's request was not held up by the blocked loop");
    assert_eq!(other.unwrap().status, 200);
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        2,
        "the other worker opened a connection of its own"
    );
}

/// When every handle of an endpoint is gone (its instance stopped), its idle connections are
/// closed at once: the peer reads the end of stream.
#[tokio::test]
async fn dropping_an_endpoint_closes_its_idle_connections() {
    let (addr, seen) = peer(|_| Act::Answer);
    let c = client();
    let e = Endpoint::tcp(addr);
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    assert_eq!(seen.closed_by_client.load(Ordering::SeqCst), 0);
    drop(e);
    let closed = wait_for(|| seen.closed_by_client.load(Ordering::SeqCst) == 1).await;
    assert!(closed, "the peer saw the idle connection closed");
    drop(c);
}

/// `close_idle` closes them at once too, while the endpoint lives on.
#[tokio::test]
async fn close_idle_closes_an_endpoints_idle_connections() {
    let (addr, seen) = peer(|_| Act::Answer);
    let c = client();
    let e = Endpoint::tcp(addr);
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    assert_eq!(e.idle_count(), 1);
    e.close_idle();
    assert_eq!(e.idle_count(), 0);
    let closed = wait_for(|| seen.closed_by_client.load(Ordering::SeqCst) == 1).await;
    assert!(closed, "the peer saw the idle connection closed");
    // The endpoint still works: a new connection.
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// Every exchange ends by its deadline, and the connection it used is not kept.
#[tokio::test]
async fn an_exchange_past_its_deadline_is_a_timeout() {
    let (addr, seen) = peer(|n| if n == 2 { Act::Hang } else { Act::Answer });
    let c = client();
    let e = Endpoint::tcp(addr);
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    let r = c
        .send_to(&e, "peer", "POST", "/invoke", &[], b"{}", 1024, deadline)
        .await;
    assert_eq!(r.unwrap_err(), Error::Timeout);
    assert_eq!(e.idle_count(), 0, "the timed-out connection is not reused");
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    assert_eq!(seen.requests(), 3);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// Polls `cond` every few milliseconds for at most 5 s.
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}
