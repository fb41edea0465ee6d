//! Holding a warm instance's lease (the watchdog's `WARM_LEASE_MS`, see its `lease` module):
//! one `POST /lease` per instance on a connection of its own, whose body is a byte every
//! [`BEAT`], for as long as the instance lives. When this control plane dies the kernel closes
//! the connection and the watchdog stops within a second; when the connection breaks while both
//! live, it is opened again at once. Providers whose instances cannot see the control plane die
//! (containers) hold one per instance.

use super::ExitWatch;
use bytes::Bytes;
use http::Request;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The lease an instance is given: it stops this long after the last beat it heard.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the holder renews.
pub const BEAT: Duration = Duration::from_secs(1);
/// Pause between attempts to open the lease connection again.
const RETRY: Duration = Duration::from_millis(200);

/// A request body that never ends: one byte per beat.
struct Beats(tokio::time::Interval);

impl hyper::body::Body for Beats {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b"\n")))))
    }
}

/// One lease connection, until it ends. `Ok(())` when the watchdog answered (it is stopping).
async fn hold_once(addr: SocketAddr, beat: Duration) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let req = Request::post("/lease")
        .header(http::header::HOST, addr.to_string())
        .body(Beats(tick))
        .map_err(|e| e.to_string())?;
    tokio::pin!(conn);
    let send = tx.send_request(req);
    tokio::select! {
        r = send => r.map(|_| ()).map_err(|e| e.to_string()),
        r = &mut conn => r.map_err(|e| e.to_string()),
    }
}

/// Holds the lease of the instance at `addr` until it exits.
pub async fn hold(instance: String, addr: SocketAddr, mut exited: ExitWatch, beat: Duration) {
    loop {
        tokio::select! {
            _ = super::exit::wait_exit(&mut exited) => return,
            r = hold_once(addr, beat) => {
                if let Err(e) = r {
                    tracing::debug!(%instance, error = %e, "lease connection ended; opening it again");
                }
            }
        }
        tokio::select! {
            _ = super::exit::wait_exit(&mut exited) => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    /// A holder beats on one connection, opens a new one when it breaks, and stops when the
    /// instance exits.
    #[tokio::test]
    async fn beats_reconnects_and_stops_with_the_instance() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = watch::channel(None);
        let holder = tokio::spawn(hold("i".into(), addr, rx, Duration::from_millis(20)));
        let read_some = |mut s: tokio::net::TcpStream| async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n1\r\n\n\r\n1\r\n\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .expect("beats arrive")
                    .unwrap();
                assert!(
                    n > 0,
                    "the holder closed: {}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
            }
            (s, String::from_utf8_lossy(&got).into_owned())
        };
        let (s, head) = read_some(l.accept().await.unwrap().0).await;
        assert!(head.starts_with("POST /lease HTTP/1.1\r\n"), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"));
        // Break it: a new connection comes.
        drop(s);
        let (mut s2, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("the holder reconnects")
            .unwrap();
        let _ = s2.write_all(b"").await;
        let _ = tx.send(Some("gone".into()));
        tokio::time::timeout(Duration::from_secs(5), holder)
            .await
            .expect("the holder stops with the instance")
            .unwrap();
    }
}
