//! Address translation on the bytes of a packet, with incremental checksum updates.
//!
//! The IGW's 1:1 translation (R-IGW-NAT) rewrites one IPv4 address; each rewrite updates
//! the IPv4 header checksum and, where the transport checksum covers the address through
//! the pseudo-header (TCP, UDP), that one too. ICMPv4 has no pseudo-header.

use std::net::Ipv4Addr;

use crate::checksum::update32;
use crate::packet::{proto, Fragment, Packet};

const IPV4_CHECKSUM: usize = 10;
const IPV4_SRC: usize = 12;
const IPV4_DST: usize = 16;

/// Which address of the packet to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Source,
    Destination,
}

/// Replaces the IPv4 source or destination of `buf` (parsed as `pkt`) with `new`, and
/// updates the checksums. Returns the updated packet view.
pub fn rewrite_v4(buf: &mut [u8], pkt: &Packet, field: Field, new: Ipv4Addr) -> Packet {
    let at = match field {
        Field::Source => IPV4_SRC,
        Field::Destination => IPV4_DST,
    };
    let old = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let new_u = u32::from(new);
    buf[at..at + 4].copy_from_slice(&new.octets());
    let ip_check = u16::from_be_bytes([buf[IPV4_CHECKSUM], buf[IPV4_CHECKSUM + 1]]);
    buf[IPV4_CHECKSUM..IPV4_CHECKSUM + 2]
        .copy_from_slice(&update32(ip_check, old, new_u).to_be_bytes());

    // A later fragment carries no transport header; the first fragment's checksum covers
    // the whole datagram, so updating it incrementally is still right.
    if pkt.fragment != Fragment::Later {
        let l4 = usize::from(pkt.l4_offset);
        let check_at = match pkt.proto {
            proto::TCP => Some(l4 + 16),
            proto::UDP => Some(l4 + 6),
            _ => None,
        };
        if let Some(c) = check_at.filter(|c| c + 2 <= buf.len()) {
            let old_check = u16::from_be_bytes([buf[c], buf[c + 1]]);
            // UDP checksum 0 means "none" over IPv4 and stays 0 (RFC 768).
            if !(pkt.proto == proto::UDP && old_check == 0) {
                let mut nc = update32(old_check, old, new_u);
                if pkt.proto == proto::UDP && nc == 0 {
                    nc = 0xffff;
                }
                buf[c..c + 2].copy_from_slice(&nc.to_be_bytes());
            }
        }
    }
    let mut out = *pkt;
    match field {
        Field::Source => out.src = new.into(),
        Field::Destination => out.dst = new.into(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_packet() -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 0, 1, 10], [203, 0, 113, 10], 64).tcp(40000, 443, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, b"hello world").unwrap();
        out
    }

    #[test]
    fn source_rewrite_keeps_checksums_valid() {
        for proto_pkt in [tcp_packet(), {
            let b = PacketBuilder::ipv4([10, 0, 1, 10], [203, 0, 113, 10], 64).udp(5000, 53);
            let mut out = Vec::new();
            b.write(&mut out, b"query").unwrap();
            out
        }] {
            let mut buf = proto_pkt.clone();
            let pkt = Packet::parse(&buf).unwrap();
            let out = rewrite_v4(
                &mut buf,
                &pkt,
                Field::Source,
                Ipv4Addr::new(198, 51, 100, 10),
            );
            assert_eq!(
                out.src,
                "198.51.100.10".parse::<std::net::IpAddr>().unwrap()
            );
            // Recompute from scratch with etherparse and compare.
            let parsed = etherparse::SlicedPacket::from_ip(&buf).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
                panic!()
            };
            assert!(crate::checksum::ipv4_header_ok(ip.header().slice()));
            match parsed.transport.unwrap() {
                etherparse::TransportSlice::Tcp(t) => {
                    let h = ip.header();
                    let want = t.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
                    assert_eq!(t.checksum(), want);
                }
                etherparse::TransportSlice::Udp(u) => {
                    let h = ip.header();
                    let want = u
                        .to_header()
                        .calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload())
                        .unwrap();
                    assert_eq!(u.checksum(), want);
                }
                _ => panic!(),
            }
        }
    }
}
