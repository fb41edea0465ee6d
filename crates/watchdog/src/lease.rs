//! The control plane's lease on a warm instance: no instance outlives its control plane.
//!
//! With `WARM_LEASE_MS` set, the watchdog serves only while someone holds its lease: the control
//! plane keeps one `POST /lease` open on its own connection and streams a byte every second or
//! so as the request body. Every byte renews the lease for `WARM_LEASE_MS`; when the connection
//! ends (a control plane killed with `kill -9` has its sockets closed by the kernel at once) the
//! holder has [`RECONNECT_GRACE`] to come back. Once the lease runs out the watchdog stops at
//! once, without draining (nobody is left to take the answers): runtime killed, exit.
//!
//! The clock starts when the watchdog is ready to serve, so a control plane that dies while
//! an instance starts is noticed at most `WARM_LEASE_MS` after the start ends (or the start
//! fails on its own timeout). This module owns only the deadline; the HTTP side is in
//! [`crate::warm::server`].

use bytes::Buf;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a holder whose connection ended has to open a new one.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(1);

/// The lease of one warm watchdog.
pub struct Lease {
    timeout: Duration,
    deadline: Mutex<Instant>,
    changed: Notify,
    closed: AtomicBool,
    closing: Notify,
}

impl Lease {
    /// A lease that must be taken within `timeout` from now.
    pub fn new(timeout: Duration) -> Lease {
        Lease {
            timeout,
            deadline: Mutex::new(Instant::now() + timeout),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        }
    }

    /// Extends the lease to `timeout` from now.
    pub fn renew(&self) {
        *self.deadline.lock().unwrap() = Instant::now() + self.timeout;
        self.changed.notify_waiters();
    }

    /// A holder's connection ended: it has [`RECONNECT_GRACE`] (at most the timeout) to renew.
    pub fn dropped(&self) {
        let soon = Instant::now() + RECONNECT_GRACE.min(self.timeout);
        let mut d = self.deadline.lock().unwrap();
        if *d > soon {
            *d = soon;
        }
        drop(d);
        self.changed.notify_waiters();
    }

    /// Resolves once the lease has run out.
    pub async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let d = *self.deadline.lock().unwrap();
            if Instant::now() >= d {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(d) => {}
                _ = changed => {}
            }
        }
    }

    /// The watchdog is stopping: holders' requests end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
    }

    /// Serves one holder: every frame of `body` renews the lease, until the body ends, fails,
    /// or the watchdog stops. Whatever the body carries is read and dropped.
    pub async fn hold<B>(&self, body: B)
    where
        B: hyper::body::Body + Unpin,
        B::Data: Buf,
    {
        let mut body = body;
        self.renew();
        loop {
            let closing = self.closing.notified();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(_)) => self.renew(),
                    // The end of the body, or of the connection.
                    _ => {
                        self.dropped();
                        return;
                    }
                },
                _ = closing => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::body::Frame;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    /// A request body fed from a channel: the test sends beats and ends it by dropping.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn body() -> (mpsc::Sender<Bytes>, Chunks) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Chunks(rx))
    }

    #[tokio::test(start_paused = true)]
    async fn an_untaken_lease_expires_after_its_timeout() {
        let l = Lease::new(Duration::from_secs(3));
        let t = Instant::now();
        l.expired().await;
        assert_eq!(t.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn beats_renew_and_a_dropped_holder_has_the_grace_to_return() {
        let l = Arc::new(Lease::new(Duration::from_secs(3)));
        let (tx, b) = body();
        let holder = tokio::spawn({
            let l = l.clone();
            async move { l.hold(b).await }
        });
        let t = Instant::now();
        let watch = tokio::spawn({
            let l = l.clone();
            async move { l.expired().await }
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tx.send(Bytes::from_static(b"\n")).await.unwrap();
        }
        tokio::task::yield_now().await;
        assert!(
            !watch.is_finished(),
            "renewed every 2 s, the 3 s lease holds"
        );
        // The holder goes away: expiry one grace period later, not a full timeout.
        drop(tx);
        holder.await.unwrap();
        let dropped_at = t.elapsed();
        watch.await.unwrap();
        assert_eq!(t.elapsed() - dropped_at, RECONNECT_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_holder_within_the_grace_keeps_the_instance() {
        let l = Arc::new(Lease::new(Duration::from_secs(3)));
        let (tx, b) = body();
        let h = tokio::spawn({
            let l = l.clone();
            async move { l.hold(b).await }
        });
        drop(tx);
        h.await.unwrap();
        tokio::time::sleep(RECONNECT_GRACE / 2).await;
        let (tx2, b2) = body();
        let h2 = tokio::spawn({
            let l = l.clone();
            async move { l.hold(b2).await }
        });
        tokio::task::yield_now().await;
        let t = Instant::now();
        let watch = tokio::spawn({
            let l = l.clone();
            async move { l.expired().await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!watch.is_finished());
        // No more beats on a connection that stays open: silence expires the lease.
        watch.await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(2400),
            "{:?}",
            t.elapsed()
        );
        l.close();
        h2.await.unwrap();
        drop(tx2);
    }
}
