//! `WARM_ANNOUNCE`: one empty UDP datagram to the default gateway at start.
//!
//! Why: on a Docker bridge the control plane's first connection to a new container can wait up
//! to a second. Its SYN goes out as soon as the engine's start returns; the host's neighbour
//! entry for the container's address is then often still unresolved (the address was just freed
//! by a removed container, or the first ARP request went unanswered), and the kernel holds the
//! SYN until its next ARP retry, one second later. Measured (`bench/run.sh kubernetes`, its
//! Docker column): most cold starts after a removal took 0.5–1 s more than the container's own
//! start. A datagram from the container to its gateway makes the container ARP for the host; the
//! host, answering, learns the container's address at once and sends what it held.
//!
//! The datagram goes to port 9 (discard) of the gateway: nothing answers it but the host's
//! ICMP "port unreachable", which this socket never reads. No gateway (no network, or no default
//! route): nothing is sent. Failures are ignored: the announce only ever saves time.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// The IPv4 default gateway in `/proc/net/route` format: the `Gateway` of the first line whose
/// `Destination` is `00000000` and whose flags have `RTF_GATEWAY` (0x2), written as hex in host
/// (little-endian) byte order.
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1] != "00000000" {
            return None;
        }
        let flags = u32::from_str_radix(f[3], 16).ok()?;
        if flags & 0x2 == 0 {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// Sends the datagram; returns the gateway it went to, if any.
pub fn announce() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let gw = default_gateway(&table)?;
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.send_to(&[], SocketAddrV4::new(gw, 9)).ok()?;
    Some(gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn the_gateway_of_the_default_route_is_read_in_host_byte_order() {
        // A Docker bridge: default via 172.17.0.1, the subnet itself without a gateway.
        let t = format!(
            "{HEADER}eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        );
        assert_eq!(default_gateway(&t), Some(Ipv4Addr::new(172, 17, 0, 1)));
    }

    #[test]
    fn no_default_route_or_none_with_a_gateway_gives_none() {
        let subnet_only =
            format!("{HEADER}eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
        assert_eq!(default_gateway(&subnet_only), None);
        // A default route on a point-to-point link: no RTF_GATEWAY, nothing to announce to.
        let direct =
            format!("{HEADER}tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&direct), None);
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway(&format!("{HEADER}garbage\n")), None);
    }
}
