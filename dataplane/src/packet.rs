//! A parsed view of one IPv4 or IPv6 packet: the fields every stage needs (addresses,
//! protocol, ports or ICMP type, flags) and the offsets where they live, so that a stage
//! that rewrites the packet (NAT) finds them without parsing again.
//!
//! Parsing uses etherparse's slices, which check every length once and never allocate;
//! what it does not check and we must (the IPv4 header checksum) is checked here. A packet
//! that fails any check is [`DropReason::Malformed`]: never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Slice, Ipv6Slice};

use crate::checksum;
use crate::offload::{Gso, Offload};
use crate::reason::DropReason;

/// IP protocol numbers used by the stages.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits as flow logs report them (R-FL-FIELDS: FIN 1, SYN 2, RST 4, ACK 16).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Where a packet stands with respect to IP fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// A whole packet.
    None,
    /// The first fragment: carries the transport header.
    First,
    /// A later fragment: no transport header, no ports.
    Later,
}

/// The transport part of a packet, as far as the stages care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP or ICMPv6; `ident` is the echo identifier for echo request/reply, 0 otherwise.
    Icmp {
        ty: u8,
        code: u8,
        ident: u16,
    },
    /// Any other protocol, or a later fragment.
    Other,
}

/// One parsed packet. Plain data (`Copy`), built once at the start of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport protocol number (after IPv6 extension headers).
    pub proto: u8,
    pub transport: Transport,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// IPv4 "don't fragment"; always true for IPv6, which routers never fragment.
    pub dont_fragment: bool,
    pub fragment: Fragment,
    /// Offset of the transport header from the start of the packet.
    pub l4_offset: u16,
    /// Length of the IP packet (total length; IPv6: 40 + payload length), which may be
    /// less than the buffer. For a GSO super-packet, the whole of it.
    pub len: u32,
    /// Segments this packet stands for on the wire: 1, or a GSO super-packet's count.
    /// Counters and flow logs count these, as AWS counts the packets it sees.
    pub segs: u16,
    /// Bytes of all those segments on the wire (each with its own headers).
    pub wire_len: u32,
    /// The largest segment's IP length: what a path MTU is compared with.
    pub seg_len: u32,
    /// The transport checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL):
    /// an address rewrite updates it as a sum, a port rewrite leaves it alone.
    pub csum_partial: bool,
}

impl Packet {
    /// Parses `buf` (an IP packet, no link header). Checks versions, lengths, the IPv4
    /// header checksum and the transport header lengths.
    pub fn parse(buf: &[u8]) -> Result<Packet, DropReason> {
        match buf.first().map(|b| b >> 4) {
            Some(4) => Self::parse_v4(buf),
            Some(6) => Self::parse_v6(buf),
            _ => Err(DropReason::Malformed),
        }
    }

    fn parse_v4(buf: &[u8]) -> Result<Packet, DropReason> {
        let ip = Ipv4Slice::from_slice(buf).map_err(|_| DropReason::Malformed)?;
        let h = ip.header();
        if !checksum::ipv4_header_ok(h.slice()) {
            return Err(DropReason::Malformed);
        }
        let payload = ip.payload();
        let fragment = if !h.is_fragmenting_payload() {
            Fragment::None
        } else if h.fragments_offset().value() == 0 {
            Fragment::First
        } else {
            Fragment::Later
        };
        let l4_offset = offset_in(buf, payload.payload);
        let proto = payload.ip_number.0;
        let transport = transport(proto, payload.payload, fragment, false)?;
        Ok(Packet::whole(Packet {
            src: IpAddr::V4(Ipv4Addr::from(h.source())),
            dst: IpAddr::V4(Ipv4Addr::from(h.destination())),
            proto,
            transport,
            ttl: h.ttl(),
            dont_fragment: h.dont_fragment(),
            fragment,
            l4_offset,
            len: u32::from(h.total_len()),
            segs: 1,
            wire_len: 0,
            seg_len: 0,
            csum_partial: false,
        }))
    }

    fn parse_v6(buf: &[u8]) -> Result<Packet, DropReason> {
        let ip = Ipv6Slice::from_slice(buf).map_err(|_| DropReason::Malformed)?;
        let h = ip.header();
        let payload = ip.payload();
        let mut fragment = Fragment::None;
        if ip.extensions().is_fragmenting_payload() {
            fragment = Fragment::Later;
            for ext in ip.extensions().clone().into_iter() {
                if let etherparse::Ipv6ExtensionSlice::Fragment(f) = ext {
                    if f.is_fragmenting_payload() && f.fragment_offset().value() == 0 {
                        fragment = Fragment::First;
                    }
                }
            }
        }
        let total = 40 + usize::from(h.payload_length());
        let l4_offset = offset_in(buf, payload.payload);
        let proto = payload.ip_number.0;
        let transport = transport(proto, payload.payload, fragment, true)?;
        Ok(Packet::whole(Packet {
            src: IpAddr::V6(Ipv6Addr::from(h.source())),
            dst: IpAddr::V6(Ipv6Addr::from(h.destination())),
            proto,
            transport,
            ttl: h.hop_limit(),
            dont_fragment: true,
            fragment,
            l4_offset,
            len: total as u32,
            segs: 1,
            wire_len: 0,
            seg_len: 0,
            csum_partial: false,
        }))
    }

    /// One ordinary packet: one segment, as long as the packet.
    fn whole(mut p: Packet) -> Packet {
        p.wire_len = p.len;
        p.seg_len = p.len;
        p
    }

    /// Takes in the TUN's offload state (`buf` is the packet): checks that it fits the
    /// packet (a GSO type of the packet's protocol and version, a partial checksum at the
    /// transport checksum field), and counts the segments. Metadata that does not fit
    /// would make every later rewrite wrong, so the packet is malformed.
    #[inline]
    pub fn with_offload(self, buf: &[u8], meta: &Offload) -> Result<Packet, DropReason> {
        // The common case of a device without offloads, or a small packet with a whole
        // checksum: nothing to take in.
        if !meta.needs_csum && meta.gso == Gso::None {
            return Ok(self);
        }
        self.offloaded(buf, meta)
    }

    fn offloaded(mut self, buf: &[u8], meta: &Offload) -> Result<Packet, DropReason> {
        // A UDP tunnel's inner checksum left partial (VXLAN over a device with checksum
        // offload: the kernel fills the outer UDP checksum by local checksum offload and
        // leaves the inner TCP/UDP one to the device). The outer packet is whole as far as
        // vpcd reads and rewrites it; the inner checksum travels as it came, and the
        // receiving stack treats it as the kernel does any partial checksum.
        if meta.needs_csum
            && meta.gso == Gso::None
            && self.proto == proto::UDP
            && self.fragment == Fragment::None
            && meta.csum_start >= self.l4_offset + 8
            && matches!(meta.csum_offset, 6 | 16)
            && usize::from(meta.csum_start) + usize::from(meta.csum_offset) + 2
                <= (self.len as usize).min(buf.len())
        {
            return Ok(self);
        }
        if meta.needs_csum {
            let at = match self.proto {
                proto::TCP => 16,
                proto::UDP => 6,
                _ => return Err(DropReason::Malformed),
            };
            if meta.csum_start != self.l4_offset
                || meta.csum_offset != at
                || self.fragment != Fragment::None
            {
                return Err(DropReason::Malformed);
            }
            self.csum_partial = true;
        }
        let fits = match meta.gso {
            Gso::None => return Ok(self),
            Gso::Tcp4 => self.proto == proto::TCP && !self.is_ipv6(),
            Gso::Tcp6 => self.proto == proto::TCP && self.is_ipv6(),
            // The kernel refuses UDP segmentation without a partial checksum
            // (virtio_net_hdr_to_skb), so such a packet could not be written either.
            Gso::Udp => self.proto == proto::UDP && meta.needs_csum,
            Gso::Unsupported(_) => false,
        };
        if !fits || meta.size == 0 || self.fragment != Fragment::None {
            return Err(DropReason::Malformed);
        }
        let hdr = crate::offload::headers_end(buf, &self).ok_or(DropReason::Malformed)?;
        let len = self.len as usize;
        let segs = crate::offload::segments(len, hdr, meta.size);
        self.segs = u16::try_from(segs).map_err(|_| DropReason::Malformed)?;
        self.wire_len = (len + (segs - 1) * hdr) as u32;
        self.seg_len = len.min(hdr + usize::from(meta.size)) as u32;
        Ok(self)
    }

    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// An ICMP error message (ICMPv4 destination unreachable, source quench, redirect,
    /// time exceeded, parameter problem; ICMPv6 types below 128): it reports on another
    /// packet and belongs to no flow of its own (R-SG-ICMP-ERR).
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        match (self.proto, self.transport) {
            (proto::ICMP, Transport::Icmp { ty, .. }) => matches!(ty, 3 | 4 | 5 | 11 | 12),
            (proto::ICMPV6, Transport::Icmp { ty, .. }) => ty < 128,
            _ => false,
        }
    }

    /// Source and destination ports for TCP and UDP; `None` for anything else.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// The TCP flags, 0 for any other protocol.
    pub fn tcp_flags(&self) -> u8 {
        match self.transport {
            Transport::Tcp { flags, .. } => flags,
            _ => 0,
        }
    }
}

/// Where `part` (a sub-slice handed out by etherparse) starts inside `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> u16 {
    (part.as_ptr() as usize - buf.as_ptr() as usize) as u16
}

/// Parses the transport header that starts at `l4` (bounded by the IP length). A later
/// fragment has none; a first fragment may be too short for it, which is legal, so only
/// whole packets are held to the full header length.
fn transport(proto: u8, l4: &[u8], fragment: Fragment, v6: bool) -> Result<Transport, DropReason> {
    if fragment == Fragment::Later {
        return Ok(Transport::Other);
    }
    let whole = fragment == Fragment::None;
    let short = |need: usize| l4.len() < need;
    match proto {
        proto::TCP => {
            if short(20) {
                return if whole {
                    Err(DropReason::Malformed)
                } else {
                    Ok(Transport::Other)
                };
            }
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if whole && (data_offset < 20 || data_offset > l4.len()) {
                return Err(DropReason::Malformed);
            }
            Ok(Transport::Tcp {
                src_port: u16::from_be_bytes([l4[0], l4[1]]),
                dst_port: u16::from_be_bytes([l4[2], l4[3]]),
                flags: l4[13],
            })
        }
        proto::UDP => {
            if short(8) {
                return if whole {
                    Err(DropReason::Malformed)
                } else {
                    Ok(Transport::Other)
                };
            }
            let udp_len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            // The UDP length must cover the header and fit the IP payload. (IPv6 jumbograms,
            // whose UDP length is 0, are already refused with their IP header.)
            if whole && (udp_len < 8 || udp_len > l4.len()) {
                return Err(DropReason::Malformed);
            }
            Ok(Transport::Udp {
                src_port: u16::from_be_bytes([l4[0], l4[1]]),
                dst_port: u16::from_be_bytes([l4[2], l4[3]]),
            })
        }
        proto::ICMP | proto::ICMPV6 if (proto == proto::ICMPV6) == v6 => {
            if short(8) {
                return if whole {
                    Err(DropReason::Malformed)
                } else {
                    Ok(Transport::Other)
                };
            }
            let (ty, code) = (l4[0], l4[1]);
            let is_echo = if v6 {
                ty == 128 || ty == 129
            } else {
                ty == 8 || ty == 0
            };
            let ident = if is_echo {
                u16::from_be_bytes([l4[4], l4[5]])
            } else {
                0
            };
            Ok(Transport::Icmp { ty, code, ident })
        }
        _ => Ok(Transport::Other),
    }
}

/// IP protocol names for people (trace, errors): `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        n => IpNumber(n)
            .keyword_str()
            .map(|k| std::borrow::Cow::Owned(k.to_ascii_lowercase()))
            .unwrap_or_else(|| n.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpFragOffset, IpHeaders, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, PacketBuilder,
    };

    fn udp_v6_with_hop_by_hop() -> Vec<u8> {
        // IPv6 → hop-by-hop options (8 bytes, PadN) → UDP.
        let payload = b"hello";
        let udp_len = 8 + payload.len();
        let mut buf = Vec::new();
        let h = Ipv6Header {
            payload_length: (8 + udp_len) as u16,
            next_header: IpNumber::IPV6_HEADER_HOP_BY_HOP,
            hop_limit: 64,
            source: [
                0x20, 0x01, 0x0d, 0xb8, 0, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ],
            destination: [
                0x20, 0x01, 0x0d, 0xb8, 0, 0x10, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ],
            ..Default::default()
        };
        h.write(&mut buf).unwrap();
        buf.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // next = UDP, len 0, PadN(4)
        buf.extend_from_slice(&5000u16.to_be_bytes());
        buf.extend_from_slice(&53u16.to_be_bytes());
        buf.extend_from_slice(&(udp_len as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_to_the_transport() {
        let buf = udp_v6_with_hop_by_hop();
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.l4_offset, 48);
        assert_eq!(
            p.transport,
            Transport::Udp {
                src_port: 5000,
                dst_port: 53
            }
        );
        assert_eq!(p.fragment, Fragment::None);
    }

    #[test]
    fn tcp_fields_are_read() {
        let mut buf = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 61)
            .tcp(40000, 443, 7, 1000)
            .syn()
            .ack(1)
            .write(&mut buf, &[])
            .unwrap();
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.ttl, 61);
        assert_eq!(p.ports(), Some((40000, 443)));
        assert_eq!(p.tcp_flags(), tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(p.l4_offset, 20);
    }

    #[test]
    fn ipv4_fragments_are_recognised() {
        let mut h = Ipv4Header::new(16, 64, IpNumber::UDP, [10, 0, 1, 10], [10, 0, 2, 10]).unwrap();
        h.more_fragments = true;
        let mut first = Vec::new();
        h.header_checksum = h.calc_header_checksum();
        h.write(&mut first).unwrap();
        first.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 100, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let p = Packet::parse(&first).unwrap();
        assert_eq!(p.fragment, Fragment::First);
        assert_eq!(
            p.ports(),
            Some((5000, 53)),
            "the first fragment carries the ports"
        );

        h.more_fragments = false;
        h.fragment_offset = IpFragOffset::try_new(2).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut later = Vec::new();
        h.write(&mut later).unwrap();
        later.extend_from_slice(&[0u8; 16]);
        let p = Packet::parse(&later).unwrap();
        assert_eq!(p.fragment, Fragment::Later);
        assert_eq!(p.transport, Transport::Other);
    }

    #[test]
    fn ipv6_fragment_header() {
        let frag =
            Ipv6FragmentHeader::new(IpNumber::UDP, IpFragOffset::try_new(0).unwrap(), true, 77);
        let headers = IpHeaders::Ipv6(
            Ipv6Header {
                payload_length: 8 + 16,
                next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
                hop_limit: 64,
                source: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                destination: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                ..Default::default()
            },
            etherparse::Ipv6Extensions {
                fragment: Some(frag),
                ..Default::default()
            },
        );
        let mut buf = Vec::new();
        headers.write(&mut buf).unwrap();
        buf.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 100, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.fragment, Fragment::First);
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.ports(), Some((5000, 53)));
    }

    #[test]
    fn bad_ipv4_checksum_and_short_headers_are_malformed() {
        let mut buf = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
            .udp(1, 2)
            .write(&mut buf, b"x")
            .unwrap();
        assert!(Packet::parse(&buf).is_ok());
        let mut bad = buf.clone();
        bad[8] = 1; // TTL changed, checksum not updated
        assert_eq!(Packet::parse(&bad), Err(DropReason::Malformed));
        assert_eq!(Packet::parse(&buf[..19]), Err(DropReason::Malformed));
        assert_eq!(Packet::parse(&[0x60; 39]), Err(DropReason::Malformed));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(58), "icmpv6");
        assert_eq!(proto_name(50), "esp");
        assert_eq!(proto_name(253), "253");
    }
}
