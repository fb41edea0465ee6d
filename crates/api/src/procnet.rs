//! Reading the address columns of the kernel's `/proc/net/tcp` and `/proc/net/tcp6` tables
//! (text given by the caller; this module reads no file).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the address
/// is printed in the machine's byte order, the port in hex. `None` for anything else.
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_families_and_refuses_the_rest() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            parse_addr(&format!("{lo:08X}:1F90")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        assert_eq!(
            parse_addr(&format!("000000000000000000000000{one:08X}:0050")),
            Some("[::1]:80".parse().unwrap())
        );
        for bad in [
            "nonsense",
            "0100007F",
            "0100007F:",
            "0100007F:1FFFF",
            "0100:1F90",
            "ZZ00007F:1F90",
            "0100007É:1F90",
        ] {
            assert_eq!(parse_addr(bad), None, "{bad}");
        }
    }
}
