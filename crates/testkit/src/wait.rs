//! Ports and bounded waiting.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, release it).
///
/// Prefer letting the server under test bind port 0 itself and report its port; use this only
/// for programs that must be given a port up front.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `cond` every 2 ms until it holds or `timeout` has passed; returns whether it held.
///
/// Always evaluates `cond` at least once, and once more after the deadline, so a condition that
/// becomes true right at the end is not missed.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be free");
    }

    #[tokio::test]
    async fn wait_until_true_and_false() {
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(1), || {
                n += 1;
                n >= 3
            })
            .await
        );
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(30), || false).await);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
