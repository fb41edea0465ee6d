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

/// A blocking peer on a Unix socket, on its own thread. Connection 1 answers one request, then
/// shuts down its reading side while staying open: the client's idle connection still looks open
/// (nothing to read, no end of stream), but the next write on it fails with `EPIPE` before a
/// byte goes out. Every later connection answers every request. `ready` is sent once connection 1
/// has shut its reading side; `seen` counts the complete requests read on each connection.
fn unix_peer_refusing_writes_after_one(
    path: &std::path::Path,
) -> (mpsc::Receiver<()>, Arc<Mutex<Vec<usize>>>) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        // Held open until the peer thread ends (with the test process).
        let mut kept = Vec::new();
        for (c, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            s2.lock().unwrap().push(0);
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                // One request: a head and its 2-byte body (`{}`).
                let complete = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        if buf.len() >= end + 4 + 2 {
                            buf.drain(..end + 6);
                            break true;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                if !complete {
                    break;
                }
                s2.lock().unwrap()[c] += 1;
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    break;
                }
                if c == 0 {
                    s.shutdown(std::net::Shutdown::Read).unwrap();
                    kept.push(s);
                    ready_tx.send(()).unwrap();
                    break;
                }
            }
        }
    });
    (ready_rx, seen)
}

/// A reused idle connection whose peer no longer reads: the write fails before one byte of the
/// request is written, so the client sends it once more on a new connection, and the peer sees
/// it exactly once (on that new connection).
#[tokio::test]
async fn a_request_unwritten_on_a_dead_reused_connection_is_sent_once_on_a_new_one() {
    let dir = tempdir();
    let path = dir.join("peer.sock");
    let (ready, seen) = unix_peer_refusing_writes_after_one(&path);
    let c = client();
    let e = Endpoint::unix(path.to_str().unwrap());
    assert_eq!(post(&c, &e).await.unwrap().status, 200);
    ready.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        e.idle_count(),
        1,
        "the first connection is idle, to be reused"
    );
    let r = post(&c, &e).await;
    assert_eq!(r.unwrap().status, 200, "sent again on a new connection");
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 1],
        "two connections; the second send reached the peer once, on the new one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request whose write fails part-way (the peer read the head and some of the body, then
/// closed) is lost, not sent again: only one connection was ever opened.
#[tokio::test]
async fn a_request_written_in_part_is_lost_and_never_sent_again() {
    use std::io::Read;
    let dir = tempdir();
    let path = dir.join("peer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (read_tx, read_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Some of the request (at least its head), then close with the rest unread.
        let mut got = 0;
        let mut tmp = [0u8; 64 * 1024];
        while got < 64 * 1024 {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        drop(s);
        read_tx.send(got).unwrap();
        // Once the client has given up, a second connection it made would wait in the
        // listener's backlog.
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        listener.set_nonblocking(true).unwrap();
        listener.accept().is_ok()
    });
    let c = client();
    let e = Endpoint::unix(path.to_str().unwrap());
    // Far more than the socket buffers hold: the write is still going when the peer closes.
    let body = vec![b'x'; 32 * 1024 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = c
        .send_to(&e, "peer", "POST", "/invoke", &[], &body, 1024, deadline)
        .await;
    assert!(matches!(r, Err(Error::Lost(_))), "{r:?}");
    done_tx.send(()).unwrap();
    let got = read_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        got > 0 && got < body.len(),
        "the peer read part of the request: {got}"
    );
    assert!(
        !peer.join().unwrap(),
        "no second connection: the request was not sent again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder under the system's temporary folder.
fn tempdir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "h1-faults-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
