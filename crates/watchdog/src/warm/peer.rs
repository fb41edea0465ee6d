//! Who may talk to a warm watchdog (`WARM_PEER_UID`): the user id of the process on the other
//! end of an accepted connection.
//!
//! - Unix sockets: the kernel's peer credentials (`SO_PEERCRED`), fixed when the client
//!   connected.
//! - Loopback TCP: both ends live on this machine, so the client's socket is listed in
//!   `/proc/net/tcp` (or `tcp6`) with its local address equal to our peer address and its remote
//!   address equal to ours; the listing gives the user that created it. Read once per connection
//!   (connections are kept alive), never per request.
//!
//! A connection whose user cannot be told is refused like one of the wrong user.

use nanofaas_api::procnet::parse_addr;
use std::net::{IpAddr, SocketAddr};

/// The user of the process at the other end of a Unix connection.
pub fn unix_peer_uid(s: &tokio::net::UnixStream) -> Option<u32> {
    s.peer_cred().ok().map(|c| c.uid())
}

/// The user of the socket at `peer` connected to our `local` (both on this machine).
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Some(uid) = find_uid(&text, peer, local) {
                return Some(uid);
            }
        }
    }
    None
}

/// Normalizes IPv4-mapped IPv6 addresses to IPv4.
fn canonical(a: SocketAddr) -> (IpAddr, u16) {
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    (ip, a.port())
}

/// The uid column of the line of a `/proc/net/tcp*` listing whose local address is `local`
/// and remote address is `remote`.
fn find_uid(text: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (want_l, want_r) = (canonical(local), canonical(remote));
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        let (Some(l), Some(r)) = (parse_addr(cols[1]), parse_addr(cols[2])) else {
            continue;
        };
        if canonical(l) == want_l && canonical(r) == want_r {
            return cols[7].parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listing_lines() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {lo:08X}:C350 {lo:08X}:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 2 1\n"
        );
        let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(find_uid(&text, client, server), Some(65534));
        assert_eq!(find_uid(&text, server, client), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:50000".parse().unwrap();
        assert_eq!(find_uid(&text, mapped, server), Some(65534));
        assert_eq!(parse_addr("nonsense"), None);
    }

    #[tokio::test]
    async fn finds_the_user_of_a_real_loopback_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        let me = unsafe { libc::geteuid() };
        assert_eq!(tcp_peer_uid(s.local_addr().unwrap(), peer), Some(me));
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        assert_eq!(unix_peer_uid(&a), Some(me));
    }
}
