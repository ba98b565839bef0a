//! Address translation on the bytes of a packet, with incremental checksum updates.
//!
//! The IGW's 1:1 translation (R-IGW-NAT) rewrites one IPv4 address; each rewrite updates
//! the IPv4 header checksum and, where the transport checksum covers the address through
//! the pseudo-header (TCP, UDP), that one too. ICMPv4 has no pseudo-header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum::{checksum, update16, update32};
use crate::packet::{proto, Fragment, Packet, Transport};

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
        if let Some(c) = check_at.filter(|c| c + 2 <= (pkt.len as usize).min(buf.len())) {
            let old_check = u16::from_be_bytes([buf[c], buf[c + 1]]);
            if pkt.csum_partial {
                // The field holds the pseudo-header sum, not its complement: add the
                // change to the sum (what Linux's inet_proto_csum_replace4 does for
                // CHECKSUM_PARTIAL); the receiving stack completes it.
                let partial = !update32(!old_check, old, new_u);
                buf[c..c + 2].copy_from_slice(&partial.to_be_bytes());
            } else if !(pkt.proto == proto::UDP && old_check == 0) {
                // UDP checksum 0 means "none" over IPv4 and stays 0 (RFC 768).
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

/// Replaces the TCP/UDP source or destination port, or the ICMP echo identifier (either
/// field: ICMP has one), and updates the transport checksum. Returns the updated view.
pub fn rewrite_port(buf: &mut [u8], pkt: &Packet, field: Field, new: u16) -> Packet {
    let l4 = usize::from(pkt.l4_offset);
    let (at, check_at) = match (pkt.transport, field) {
        (Transport::Tcp { .. }, Field::Source) => (l4, l4 + 16),
        (Transport::Tcp { .. }, Field::Destination) => (l4 + 2, l4 + 16),
        (Transport::Udp { .. }, Field::Source) => (l4, l4 + 6),
        (Transport::Udp { .. }, Field::Destination) => (l4 + 2, l4 + 6),
        (Transport::Icmp { .. }, _) => (l4 + 4, l4 + 2),
        (Transport::Other, _) => return *pkt,
    };
    let end = (pkt.len as usize).min(buf.len());
    if check_at + 2 > end || at + 2 > end {
        return *pkt;
    }
    let old = u16::from_be_bytes([buf[at], buf[at + 1]]);
    buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let old_check = u16::from_be_bytes([buf[check_at], buf[check_at + 1]]);
    // A partial checksum covers only the pseudo-header, which has no ports: the device
    // that completes it sums the new port with the payload.
    let no_checksum = pkt.proto == proto::UDP && old_check == 0;
    if !pkt.csum_partial && !no_checksum {
        let mut nc = update16(old_check, old, new);
        if pkt.proto == proto::UDP && nc == 0 {
            nc = 0xffff;
        }
        buf[check_at..check_at + 2].copy_from_slice(&nc.to_be_bytes());
    }
    let mut out = *pkt;
    out.transport = match (pkt.transport, field) {
        (
            Transport::Tcp {
                dst_port, flags, ..
            },
            Field::Source,
        ) => Transport::Tcp {
            src_port: new,
            dst_port,
            flags,
        },
        (
            Transport::Tcp {
                src_port, flags, ..
            },
            Field::Destination,
        ) => Transport::Tcp {
            src_port,
            dst_port: new,
            flags,
        },
        (Transport::Udp { dst_port, .. }, Field::Source) => Transport::Udp {
            src_port: new,
            dst_port,
        },
        (Transport::Udp { src_port, .. }, Field::Destination) => Transport::Udp {
            src_port,
            dst_port: new,
        },
        (Transport::Icmp { ty, code, .. }, _) => Transport::Icmp {
            ty,
            code,
            ident: new,
        },
        (t, _) => t,
    };
    out
}

/// The packet an ICMP error carries (its IP header and first transport bytes), as the
/// error's sender saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// Offset of the embedded IP header in the buffer.
    pub ip_offset: usize,
    /// Offset of the embedded transport header.
    pub l4_offset: usize,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP ports, or the ICMP echo identifier in both.
    pub src_port: u16,
    pub dst_port: u16,
}

/// Parses the packet inside an ICMP or ICMPv6 error. `None` when `pkt` is no error or the
/// quote is too short to name the flow (IP header plus 8 bytes, RFC 792 / 4443).
pub fn embedded(buf: &[u8], pkt: &Packet) -> Option<Embedded> {
    if !pkt.is_icmp_error() {
        return None;
    }
    // Only the packet's own bytes: the buffer may hold leftovers of a longer one.
    let buf = buf.get(..pkt.len as usize)?;
    let ip = usize::from(pkt.l4_offset) + 8;
    let (proto_, src, dst, l4) = if pkt.is_ipv6() {
        let h = buf.get(ip..ip + 40)?;
        let src: [u8; 16] = h[8..24].try_into().ok()?;
        let dst: [u8; 16] = h[24..40].try_into().ok()?;
        (
            h[6],
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
            ip + 40,
        )
    } else {
        let h = buf.get(ip..ip + 20)?;
        if h[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        (h[9], IpAddr::V4(src), IpAddr::V4(dst), ip + ihl.max(20))
    };
    let t = buf.get(l4..l4 + 8)?;
    let (sp, dp) = match proto_ {
        proto::TCP | proto::UDP => (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        ),
        proto::ICMP | proto::ICMPV6 => {
            let id = u16::from_be_bytes([t[4], t[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    Some(Embedded {
        ip_offset: ip,
        l4_offset: l4,
        proto: proto_,
        src,
        dst,
        src_port: sp,
        dst_port: dp,
    })
}

/// Translates an inbound ICMPv4 error about a packet the NAT gateway sent: the outer
/// destination becomes `private`, and inside the quote the source address and port (or
/// echo identifier) become `private` and `private_port`; so traceroute and path-MTU
/// discovery work through NAT.
pub fn translate_icmp_error_v4(
    buf: &mut [u8],
    pkt: &Packet,
    inner: &Embedded,
    private: Ipv4Addr,
    private_port: u16,
) -> Packet {
    let out = rewrite_v4(buf, pkt, Field::Destination, private);
    rewrite_quote_v4(buf, pkt, inner, Field::Source, private, private_port);
    out
}

/// Rewrites one address (and its port, or the echo identifier) of the packet quoted in an
/// ICMPv4 error, fixing the quoted IP header's checksum, the quoted UDP/TCP checksum when
/// the quote holds it, the quoted echo's checksum, and the ICMP checksum (recomputed over
/// the message). The outer header is left to the caller.
pub fn rewrite_quote_v4(
    buf: &mut [u8],
    pkt: &Packet,
    inner: &Embedded,
    field: Field,
    addr: Ipv4Addr,
    port: u16,
) {
    let (old_addr, old_port) = match field {
        Field::Source => (inner.src, inner.src_port),
        Field::Destination => (inner.dst, inner.dst_port),
    };
    let IpAddr::V4(old_addr) = old_addr else {
        return;
    };
    let (ip, l4) = (inner.ip_offset, inner.l4_offset);
    let end = (pkt.len as usize).min(buf.len());
    if l4 + 8 > end {
        return;
    }
    let (old, new) = (u32::from(old_addr), u32::from(addr));
    let at = match field {
        Field::Source => ip + 12,
        Field::Destination => ip + 16,
    };
    buf[at..at + 4].copy_from_slice(&addr.octets());
    let c = u16::from_be_bytes([buf[ip + 10], buf[ip + 11]]);
    buf[ip + 10..ip + 12].copy_from_slice(&update32(c, old, new).to_be_bytes());
    match inner.proto {
        proto::TCP | proto::UDP => {
            let p = match field {
                Field::Source => l4,
                Field::Destination => l4 + 2,
            };
            buf[p..p + 2].copy_from_slice(&port.to_be_bytes());
            let qc = if inner.proto == proto::TCP {
                l4 + 16
            } else {
                l4 + 6
            };
            if qc + 2 <= end {
                let old_check = u16::from_be_bytes([buf[qc], buf[qc + 1]]);
                if !(inner.proto == proto::UDP && old_check == 0) {
                    let mut nc = update16(update32(old_check, old, new), old_port, port);
                    if inner.proto == proto::UDP && nc == 0 {
                        nc = 0xffff;
                    }
                    buf[qc..qc + 2].copy_from_slice(&nc.to_be_bytes());
                }
            }
        }
        proto::ICMP => {
            // The quoted echo carries one identifier; its checksum covers it.
            buf[l4 + 4..l4 + 6].copy_from_slice(&port.to_be_bytes());
            let old_check = u16::from_be_bytes([buf[l4 + 2], buf[l4 + 3]]);
            let nc = update16(old_check, old_port, port);
            buf[l4 + 2..l4 + 4].copy_from_slice(&nc.to_be_bytes());
        }
        _ => {}
    }
    // The ICMP checksum covers the whole message, quote included: recompute it.
    let icmp = usize::from(pkt.l4_offset);
    let end = (pkt.len as usize).min(buf.len());
    buf[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&buf[icmp..end]);
    buf[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
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
