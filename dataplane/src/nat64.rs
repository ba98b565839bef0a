//! NAT64 (RFC 6146, with the header translation of RFC 7915) at the NAT gateway: an IPv6
//! instance reaches IPv4 hosts at `64:ff9b::/96` (the well-known prefix, RFC 6052), the
//! gateway translating its packets to IPv4 from its own address and the replies back
//! (AWS, "DNS64 and NAT64": "For IPv6 traffic, NAT gateway performs NAT64").
//!
//! Translation rewrites the packet in its buffer: the IPv6 header (40 bytes) becomes an
//! IPv4 one (20) and the transport header and payload move up, or the other way round.
//! TCP and UDP keep their ports (the gateway's own port replaces the source port one way
//! and the instance's the destination port the other); their checksums are computed anew
//! over the new pseudo-header, or, for a partial checksum (the device completes it),
//! become the new pseudo-header's sum. ICMPv6 echo request and reply become ICMP echo
//! ones and back, checksummed anew (ICMP has no pseudo-header, ICMPv6 has). Anything
//! else is not translated: other ICMP(v6) messages, extension headers, fragments.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::{fold, pseudo_header, sum};
use crate::packet::{proto, Packet, Transport};

/// The well-known prefix: an IPv4 address in the last 32 bits.
pub const PREFIX: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// The IPv4 address an address of `64:ff9b::/96` stands for.
#[inline]
pub fn embedded(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    (s[..6] == PREFIX).then(|| Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])))
}

/// The address of `64:ff9b::/96` that stands for `a` (DNS64 and the replies' source).
pub fn synthesized(a: Ipv4Addr) -> Ipv6Addr {
    let o = u32::from(a);
    let p = PREFIX;
    Ipv6Addr::new(
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        (o >> 16) as u16,
        o as u16,
    )
}

/// The bytes a translation adds (v4 → v6) or takes away (v6 → v4).
pub const GROWTH: usize = 20;

/// Whether `pkt` is something NAT64 translates: TCP, UDP or an echo request/reply, with
/// no extension headers or options, not a fragment.
pub fn translatable(pkt: &Packet) -> bool {
    let plain_header = if pkt.is_ipv6() {
        pkt.l4_offset == 40
    } else {
        pkt.l4_offset == 20
    };
    plain_header
        && pkt.fragment == crate::packet::Fragment::None
        && match pkt.transport {
            Transport::Tcp { .. } | Transport::Udp { .. } => true,
            Transport::Icmp { ty, .. } => matches!(ty, 0 | 8 | 128 | 129),
            Transport::Other => false,
        }
}

/// Sets the transport checksum of the packet at the start of `buf` (`len` bytes, its IP
/// header `l3` long): computed anew, or the pseudo-header's sum when `partial`.
fn checksum(buf: &mut [u8], l3: usize, len: usize, p: u8, partial: bool) {
    let l4_len = len - l3;
    let at = match p {
        proto::TCP => l3 + 16,
        proto::UDP => l3 + 6,
        _ => l3 + 2,
    };
    if at + 2 > len {
        return;
    }
    let pseudo = match p {
        proto::ICMP => 0,
        _ => pseudo_header(buf, p, l4_len),
    };
    if partial && p != proto::ICMP && p != proto::ICMPV6 {
        buf[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
        return;
    }
    buf[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum(pseudo, &buf[l3..len]));
    if c == 0 && p == proto::UDP {
        c = 0xffff;
    }
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Translates the IPv6 packet `pkt` in `buf` to IPv4 from `src` to `dst`, its source port
/// (or echo identifier) now `sport`. Returns the new length.
pub fn to_v4(buf: &mut [u8], pkt: &Packet, src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> usize {
    let len = pkt.len as usize;
    let l4_len = len - 40;
    let tos = (buf[0] << 4) | (buf[1] >> 4);
    let ttl = buf[7];
    let p4 = if pkt.proto == proto::ICMPV6 {
        proto::ICMP
    } else {
        pkt.proto
    };
    buf.copy_within(40..len, 20);
    let total = (20 + l4_len) as u16;
    // RFC 7915 §5.1: DF set (the IPv6 sender expects no fragmentation on the way).
    let h = [
        0x45,
        tos,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        ttl,
        p4,
        0,
        0,
    ];
    buf[..12].copy_from_slice(&h);
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    let c = crate::checksum::checksum(&buf[..20]);
    buf[10..12].copy_from_slice(&c.to_be_bytes());
    let n = 20 + l4_len;
    match pkt.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            buf[20..22].copy_from_slice(&sport.to_be_bytes());
        }
        Transport::Icmp { ty, .. } => {
            buf[20] = if ty == 128 { 8 } else { 0 };
            buf[24..26].copy_from_slice(&sport.to_be_bytes());
        }
        Transport::Other => {}
    }
    checksum(buf, 20, n, p4, pkt.csum_partial);
    n
}

/// Translates the IPv4 packet `pkt` in `buf` to IPv6 from `src` to `dst`, its destination
/// port (or echo identifier) now `dport`. `buf` must hold [`GROWTH`] more bytes than the
/// packet. Returns the new length.
pub fn to_v6(buf: &mut [u8], pkt: &Packet, src: Ipv6Addr, dst: Ipv6Addr, dport: u16) -> usize {
    let len = pkt.len as usize;
    let l4_len = len - 20;
    let tos = buf[1];
    let ttl = buf[8];
    let p6 = if pkt.proto == proto::ICMP {
        proto::ICMPV6
    } else {
        pkt.proto
    };
    buf.copy_within(20..len, 40);
    buf[0] = 0x60 | (tos >> 4);
    buf[1] = tos << 4;
    buf[2] = 0;
    buf[3] = 0;
    buf[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    buf[6] = p6;
    buf[7] = ttl;
    buf[8..24].copy_from_slice(&src.octets());
    buf[24..40].copy_from_slice(&dst.octets());
    let n = 40 + l4_len;
    match pkt.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            buf[42..44].copy_from_slice(&dport.to_be_bytes());
        }
        Transport::Icmp { ty, .. } => {
            buf[40] = if ty == 8 { 128 } else { 129 };
            buf[44..46].copy_from_slice(&dport.to_be_bytes());
        }
        Transport::Other => {}
    }
    // A UDP checksum of 0 ("none") is not allowed over IPv6: computed in any case.
    checksum(buf, 40, n, p6, pkt.csum_partial);
    n
}

/// The packet as it is after a translation to `n` bytes: parsed anew, keeping what the
/// original said of its segments (a GSO super-packet stays one, each segment's headers
/// changed by `growth` bytes).
pub fn reparsed(buf: &[u8], n: usize, was: &Packet, growth: isize) -> Option<Packet> {
    let mut p = Packet::parse(&buf[..n]).ok()?;
    p.segs = was.segs;
    p.csum_partial = was.csum_partial;
    p.seg_len = (was.seg_len as isize + growth).max(0) as u32;
    p.wire_len = (was.wire_len as isize + growth * was.segs as isize).max(0) as u32;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_known_prefix_round_trips() {
        let a = Ipv4Addr::new(203, 0, 113, 10);
        let v6 = synthesized(a);
        assert_eq!(v6.to_string(), "64:ff9b::cb00:710a");
        assert_eq!(embedded(v6), Some(a));
        assert_eq!(embedded("2001:db8::1".parse().unwrap()), None);
    }
}
