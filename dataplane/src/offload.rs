//! TUN offloads: what the kernel tells vpcd about a packet through the virtio-net header,
//! and what vpcd must do for it.
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD`, a namespace's stack hands its `eth0` whole TCP
//! (and, with USO, UDP) *super-packets* of up to 64 KiB: one IP header, one transport
//! header and the payload of many segments, plus a header that says how to cut it
//! (`gso_type`, `gso_size`) and that the transport checksum is *partial*
//! (`NEEDS_CSUM`: the field holds the pseudo-header sum and whoever segments the packet,
//! or the receiving stack, completes it). vpcd judges, rewrites and writes such a packet
//! as one unit (one SG/NACL/route/NAT decision for all its segments) and hands the same
//! header to the output TUN, whose kernel accepts the super-packet as if GRO had built it.
//! That turns ~40 syscalls per 64 KiB into two, which is where a TUN router's time goes.
//!
//! The pipeline sees the header as [`Offload`] (no virtio layout); the TUN layer converts.
//! Everything here is exercised without a device by the in-process tests.

use crate::checksum;
use crate::packet::{proto, Packet};

/// Size of `struct virtio_net_hdr` (the TUN default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// How a super-packet is to be cut into segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    /// One ordinary packet.
    #[default]
    None,
    /// TCP over IPv4 (TSO4).
    Tcp4,
    /// TCP over IPv6 (TSO6).
    Tcp6,
    /// UDP segmentation (USO): datagrams of `size` bytes each.
    Udp,
    /// A type vpcd does not offer (UFO): the packet is dropped as malformed.
    Unsupported(u8),
}

/// A packet's offload state, as the virtio-net header carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub gso: Gso,
    /// TCP with ECN: the CWR flag belongs to the first segment only.
    pub ecn: bool,
    /// Payload bytes per segment (the MSS for TCP).
    pub size: u16,
    /// Header bytes before the payload, as the kernel reports it (a hint: vpcd computes
    /// its own from the packet).
    pub hdr_len: u16,
    /// The transport checksum is partial: completed from `csum_start`, stored at
    /// `csum_start + csum_offset`.
    pub needs_csum: bool,
    /// The sender's kernel vouches for the checksum.
    pub data_valid: bool,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Offload {
    /// An ordinary packet with a complete checksum.
    pub const NONE: Offload = Offload {
        gso: Gso::None,
        ecn: false,
        size: 0,
        hdr_len: 0,
        needs_csum: false,
        data_valid: false,
        csum_start: 0,
        csum_offset: 0,
    };

    /// The state of the same packet after NAT64 made it IPv6 (`to_v6`) or IPv4: the IP
    /// header 20 bytes longer or shorter, a TCP super-packet of the other family.
    pub fn translated(&self, to_v6: bool) -> Offload {
        let mut o = *self;
        let (gso, shift): (Gso, i32) = match (self.gso, to_v6) {
            (Gso::Tcp4, true) => (Gso::Tcp6, 20),
            (Gso::Tcp6, false) => (Gso::Tcp4, -20),
            (g, true) => (g, 20),
            (g, false) => (g, -20),
        };
        o.gso = gso;
        let moved = |v: u16| (i32::from(v) + shift).max(0) as u16;
        if self.hdr_len > 0 {
            o.hdr_len = moved(self.hdr_len);
        }
        if self.needs_csum {
            o.csum_start = moved(self.csum_start);
        }
        o
    }

    /// Whether the packet stands for several segments.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso != Gso::None
    }

    /// Reads a virtio-net header (little-endian: the TUN default on the little-endian
    /// machines vpcd runs on).
    #[inline]
    pub fn from_virtio(h: &[u8; VNET_HDR_LEN]) -> Offload {
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let gso = match h[1] & !GSO_ECN {
            GSO_NONE => Gso::None,
            GSO_TCPV4 => Gso::Tcp4,
            GSO_TCPV6 => Gso::Tcp6,
            GSO_UDP_L4 => Gso::Udp,
            other => Gso::Unsupported(other),
        };
        Offload {
            gso,
            ecn: h[1] & GSO_ECN != 0,
            hdr_len: le(2),
            size: le(4),
            needs_csum: h[0] & F_NEEDS_CSUM != 0,
            data_valid: h[0] & F_DATA_VALID != 0,
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// Writes the virtio-net header for this state.
    #[inline]
    pub fn to_virtio(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = if self.needs_csum { F_NEEDS_CSUM } else { 0 }
            | if self.data_valid { F_DATA_VALID } else { 0 };
        h[1] = match self.gso {
            Gso::None => GSO_NONE,
            Gso::Tcp4 => GSO_TCPV4,
            Gso::Tcp6 => GSO_TCPV6,
            Gso::Udp => GSO_UDP_L4,
            Gso::Unsupported(t) => t,
        } | if self.ecn { GSO_ECN } else { 0 };
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.size.to_le_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        h
    }
}

/// Where the payload starts: after the TCP header (its data offset) or the 8-byte UDP
/// header. `None` for other protocols or a truncated header.
pub fn headers_end(buf: &[u8], pkt: &Packet) -> Option<usize> {
    let l4 = usize::from(pkt.l4_offset);
    let end = match pkt.proto {
        proto::TCP => l4 + usize::from(buf.get(l4 + 12)? >> 4) * 4,
        proto::UDP => l4 + 8,
        _ => return None,
    };
    (end <= buf.len()).then_some(end)
}

/// Completes a partial checksum as a NIC would: the one's-complement sum from
/// `csum_start` to the end of the packet (the field already holds the pseudo-header sum),
/// complemented, at `csum_start + csum_offset`. For a packet vpcd consumes itself (a
/// router-local service) and so must see with a real checksum.
pub fn complete_checksum(packet: &mut [u8], meta: &Offload) {
    let start = usize::from(meta.csum_start);
    let at = start + usize::from(meta.csum_offset);
    if !meta.needs_csum || at + 2 > packet.len() {
        return;
    }
    let mut c = !checksum::fold(checksum::sum(0, &packet[start..]));
    if c == 0 && at == start + 6 {
        // UDP sends a computed zero as all ones (RFC 768).
        c = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// How many segments a super-packet of `len` bytes with `hdr` header bytes stands for.
#[inline]
pub fn segments(len: usize, hdr: usize, size: u16) -> usize {
    let payload = len.saturating_sub(hdr);
    payload.div_ceil(usize::from(size.max(1))).max(1)
}

/// Builds segment `i` of the super-packet `packet` (parsed as `pkt`, cut per `meta`) into
/// `out`, with its own lengths, IPv4 id and header checksum, TCP sequence number and
/// flags, and a complete transport checksum: what the kernel's software GSO produces.
/// Returns its length, or `None` past the last segment (or when `out` is too small).
///
/// vpcd forwards super-packets whole; it cuts one only where it consumes the packet
/// itself (a router-local service such as the metadata service's TCP stack).
pub fn segment(
    packet: &[u8],
    pkt: &Packet,
    meta: &Offload,
    i: usize,
    out: &mut [u8],
) -> Option<usize> {
    let hdr = headers_end(packet, pkt)?;
    let size = usize::from(meta.size.max(1));
    let len = (pkt.len as usize).min(packet.len());
    let count = segments(len, hdr, meta.size);
    if i >= count {
        return None;
    }
    let from = hdr + i * size;
    let chunk = &packet[from.min(len)..(from + size).min(len)];
    let total = hdr + chunk.len();
    if total > out.len() {
        return None;
    }
    out[..hdr].copy_from_slice(&packet[..hdr]);
    out[hdr..total].copy_from_slice(chunk);
    let l4 = usize::from(pkt.l4_offset);
    if pkt.is_ipv6() {
        out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        let ihl = usize::from(out[0] & 0x0f) * 4;
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(i as u16);
        out[4..6].copy_from_slice(&id.to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&out[..ihl]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let check_at = match pkt.proto {
        proto::TCP => {
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
                .wrapping_add((i * size) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = out[l4 + 13];
            if i + 1 < count {
                flags &= !(0x01 | 0x08); // FIN and PSH belong to the last segment
            }
            if i > 0 {
                flags &= !0x80; // CWR to the first
            }
            out[l4 + 13] = flags;
            l4 + 16
        }
        _ => {
            out[l4 + 4..l4 + 6].copy_from_slice(&((total - l4) as u16).to_be_bytes());
            l4 + 6
        }
    };
    out[check_at..check_at + 2].copy_from_slice(&[0, 0]);
    let mut acc = checksum::pseudo_header(&out[..total], pkt.proto, total - l4);
    acc = checksum::sum(acc, &out[l4..total]);
    let mut c = !checksum::fold(acc);
    if c == 0 && pkt.proto == proto::UDP {
        c = 0xffff;
    }
    out[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_super(v6: bool, payload: usize, partial: bool) -> (Vec<u8>, Offload) {
        let data: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
        let b = if v6 {
            PacketBuilder::ipv6(
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
        };
        let b = b.tcp(40000, 5201, 1000, 65535).ack(77).psh().fin();
        let mut buf = Vec::new();
        b.write(&mut buf, &data).unwrap();
        let pkt = Packet::parse(&buf).unwrap();
        let l4 = usize::from(pkt.l4_offset);
        let meta = Offload {
            gso: if v6 { Gso::Tcp6 } else { Gso::Tcp4 },
            size: 1448,
            hdr_len: (l4 + 20) as u16,
            needs_csum: partial,
            csum_start: l4 as u16,
            csum_offset: 16,
            ..Offload::NONE
        };
        if partial {
            // What the sending kernel leaves in the field: the pseudo-header sum.
            let s = checksum::pseudo_header(&buf, pkt.proto, buf.len() - l4);
            buf[l4 + 16..l4 + 18].copy_from_slice(&checksum::fold(s).to_be_bytes());
        }
        (buf, meta)
    }

    #[test]
    fn virtio_header_round_trips() {
        let (_, meta) = tcp_super(false, 3000, true);
        let meta = Offload { ecn: true, ..meta };
        assert_eq!(Offload::from_virtio(&meta.to_virtio()), meta);
        let raw = [1u8, 3, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Offload::from_virtio(&raw).gso, Gso::Unsupported(3));
        assert_eq!(Offload::from_virtio(&[0; 10]), Offload::NONE);
    }

    #[test]
    fn partial_checksum_is_completed_like_a_nic() {
        let mut buf = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
            .udp(5000, 53)
            .write(&mut buf, b"query")
            .unwrap();
        let good = buf.clone();
        let pkt = Packet::parse(&buf).unwrap();
        let s = checksum::pseudo_header(&buf, pkt.proto, buf.len() - 20);
        buf[26..28].copy_from_slice(&checksum::fold(s).to_be_bytes());
        let meta = Offload {
            needs_csum: true,
            csum_start: 20,
            csum_offset: 6,
            ..Offload::NONE
        };
        complete_checksum(&mut buf, &meta);
        assert_eq!(buf, good);
    }

    /// Each segment is what etherparse builds for the same slice of payload.
    fn check_segments(v6: bool) {
        let (buf, meta) = tcp_super(v6, 4000, true);
        let pkt = Packet::parse(&buf).unwrap();
        let hdr = headers_end(&buf, &pkt).unwrap();
        assert_eq!(segments(buf.len(), hdr, meta.size), 3);
        let mut out = vec![0u8; 65_575];
        let mut payload = Vec::new();
        let mut i = 0;
        while let Some(n) = segment(&buf, &pkt, &meta, i, &mut out) {
            let s = etherparse::SlicedPacket::from_ip(&out[..n]).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
                panic!("tcp");
            };
            assert_eq!(t.sequence_number(), 1000 + (i * 1448) as u32);
            assert_eq!(t.fin(), i == 2, "FIN only on the last");
            assert_eq!(t.psh(), i == 2);
            let expect = match &s.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert!(checksum::ipv4_header_ok(ip.header().slice()));
                    assert_eq!(usize::from(ip.header().total_len()), n);
                    t.to_header()
                        .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                        .unwrap()
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => t
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                    .unwrap(),
                _ => panic!("ip"),
            };
            assert_eq!(t.checksum(), expect, "segment {i}");
            payload.extend_from_slice(t.payload());
            i += 1;
        }
        assert_eq!(i, 3);
        assert_eq!(payload, buf[hdr..]);
    }

    #[test]
    fn tcp4_super_packet_is_cut_like_software_gso() {
        check_segments(false);
    }

    #[test]
    fn tcp6_super_packet_is_cut_like_software_gso() {
        check_segments(true);
    }

    #[test]
    fn udp_segments_get_their_own_length_and_checksum() {
        let data = vec![9u8; 2500];
        let mut buf = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
            .udp(5000, 6000)
            .write(&mut buf, &data)
            .unwrap();
        let pkt = Packet::parse(&buf).unwrap();
        let meta = Offload {
            gso: Gso::Udp,
            size: 1000,
            ..Offload::NONE
        };
        let mut out = vec![0u8; 4096];
        let n = segment(&buf, &pkt, &meta, 2, &mut out).unwrap();
        assert_eq!(n, 28 + 500);
        let s = etherparse::SlicedPacket::from_ip(&out[..n]).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) =
            (&s.net, &s.transport)
        else {
            panic!("udp");
        };
        assert_eq!(u.length(), 508);
        let expect = u
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
            .unwrap();
        assert_eq!(u.checksum(), expect);
        assert!(segment(&buf, &pkt, &meta, 3, &mut [0u8; 4096]).is_none());
    }
}
