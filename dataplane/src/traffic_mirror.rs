//! VPC Traffic Mirroring (R-TM): copies of what an instance's ENI sends and receives,
//! chosen by a filter, sent to a target.
//!
//! The pipeline takes the copies ([`MirrorStage`]) where a packet crosses a mirrored
//! ENI: what the instance sends as it enters vpcd (before its security groups), what it
//! receives as it reaches the ENI (after the translations of gateways, before the
//! receiving subnet's NACL and the ENI's groups). When the verdict is known, each copy
//! learns its outcome: the I/O layer then writes it, as AWS does, to the target instance
//! in VXLAN (UDP 4789, [`encapsulate`]) if the packet really crossed the ENI (passed its
//! groups), or hands it, with the outcome, to a pcapng writer: vpcd's capture files
//! also keep the packets it dropped, with the reason.
//!
//! Which session: the ENI's sessions in ascending `session_number`, the first whose
//! filter accepts the packet; each packet is mirrored once (R-TM-SESSION). A filter's
//! rules are evaluated per direction from the lowest number; the first that matches
//! decides (accept or reject); none matches: not mirrored (R-TM-FILTER).

use std::net::{IpAddr, Ipv4Addr};

use ip_network::IpNetwork;

use crate::observer::Direction;
use crate::offload::Offload;
use crate::packet::Packet;
use crate::reason::DropReason;
use crate::route::net_contains;
use crate::snapshot::{EniIx, PortId};

/// The VXLAN port (RFC 7348), which AWS sends mirrored traffic to.
pub const VXLAN_PORT: u16 = 4789;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD: usize = 20 + 8 + 8 + 14;

/// The largest packet a copy holds: a GSO super-packet's 64 KiB and its headers.
pub const MAX_COPY: usize = 65_536 + 256;

/// One rule of a traffic mirror filter.
#[derive(Clone, Debug)]
pub struct MirrorRule {
    pub number: u16,
    pub accept: bool,
    /// `None`: every protocol.
    pub protocol: Option<u8>,
    pub source: IpNetwork,
    pub destination: IpNetwork,
    /// Inclusive; `(0, 65535)` when the rule names none.
    pub source_ports: (u16, u16),
    pub destination_ports: (u16, u16),
}

impl MirrorRule {
    fn matches(&self, pkt: &Packet) -> bool {
        if self.protocol.is_some_and(|p| p != pkt.proto) {
            return false;
        }
        if !net_contains(&self.source, pkt.src) || !net_contains(&self.destination, pkt.dst) {
            return false;
        }
        // Port ranges apply to TCP and UDP; other protocols match them all.
        match pkt.ports() {
            Some((s, d)) => {
                (self.source_ports.0..=self.source_ports.1).contains(&s)
                    && (self.destination_ports.0..=self.destination_ports.1).contains(&d)
            }
            None => true,
        }
    }
}

/// A traffic mirror filter: inbound rules for what the ENI receives, outbound for what
/// it sends, each sorted by number.
#[derive(Clone, Debug)]
pub struct MirrorFilter {
    pub id: Box<str>,
    pub inbound: Vec<MirrorRule>,
    pub outbound: Vec<MirrorRule>,
}

impl MirrorFilter {
    /// R-TM-FILTER: the lowest-numbered matching rule decides.
    pub fn accepts(&self, dir: Direction, pkt: &Packet) -> bool {
        let rules = match dir {
            Direction::Ingress => &self.inbound,
            Direction::Egress => &self.outbound,
        };
        rules
            .iter()
            .find(|r| r.matches(pkt))
            .is_some_and(|r| r.accept)
    }
}

/// Where a session's copies go.
#[derive(Clone, Debug)]
pub enum MirrorTarget {
    /// An instance's ENI, in VXLAN from the source's address. `admitted`: whether the
    /// target's security groups and the network ACLs on the way let VXLAN from the source
    /// in (AWS asks for an inbound rule for UDP 4789), worked out once per snapshot.
    Eni {
        eni: EniIx,
        port: PortId,
        admitted: Result<(), DropReason>,
    },
    /// A pcapng file (vpcd's own target): index into [`Mirroring::files`].
    File(u32),
}

/// A traffic mirror session.
#[derive(Clone, Debug)]
pub struct MirrorSession {
    pub id: Box<str>,
    pub number: u16,
    pub source: EniIx,
    pub filter: u32,
    pub target: MirrorTarget,
    /// Bytes of each packet to mirror, counted after the VXLAN header (so with the inner
    /// Ethernet header); 0: the whole packet.
    pub packet_length: u16,
    /// The VXLAN network identifier.
    pub vni: u32,
}

/// A lab's traffic mirroring.
#[derive(Clone, Debug, Default)]
pub struct Mirroring {
    pub filters: Vec<MirrorFilter>,
    pub sessions: Vec<MirrorSession>,
    /// The pcapng files of `pcap_file` targets.
    pub files: Vec<Box<str>>,
    /// Per ENI, its sessions in ascending number (built by [`Mirroring::index`]).
    by_eni: Vec<Box<[u32]>>,
}

impl Mirroring {
    /// Builds the per-ENI lists, for `enis` ENIs.
    pub fn index(&mut self, enis: usize) {
        let mut by_eni: Vec<Vec<u32>> = vec![Vec::new(); enis];
        for (i, s) in self.sessions.iter().enumerate() {
            if let Some(list) = by_eni.get_mut(s.source.ix()) {
                list.push(i as u32);
            }
        }
        for list in &mut by_eni {
            list.sort_by_key(|&i| self.sessions[i as usize].number);
        }
        self.by_eni = by_eni.into_iter().map(Vec::into_boxed_slice).collect();
    }

    /// Whether any session exists (the pipeline's one check when none does).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// R-TM-SESSION: the session that mirrors `pkt` crossing `eni` in `dir`, if any.
    #[inline]
    pub fn session_for(&self, eni: EniIx, dir: Direction, pkt: &Packet) -> Option<u32> {
        let list = self.by_eni.get(eni.ix())?;
        list.iter().copied().find(|&s| {
            let session = &self.sessions[s as usize];
            self.filters[session.filter as usize].accepts(dir, pkt)
        })
    }
}

/// What became of a mirrored packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not known yet (the verdict is still to come).
    Pending,
    /// Forwarded, delivered, or handed to the router's services.
    Passed,
    /// Dropped for this reason (an answered drop too: an ICMP error, a reset).
    Dropped(DropReason),
}

/// One copy taken by the pipeline.
#[derive(Debug)]
pub struct Copy {
    pub session: u32,
    pub dir: Direction,
    /// The packet crossed the ENI: passed its security groups (and, inbound, its subnet's
    /// NACL). Only such copies go to an instance target.
    pub crossed: bool,
    pub outcome: Outcome,
    pub meta: Offload,
    pub len: usize,
    /// Holds `len` bytes; sized once ([`MAX_COPY`]), then reused.
    pub buf: Vec<u8>,
}

/// The copies of the packet being judged: at most one where it leaves an ENI and one
/// where it reaches one.
#[derive(Debug, Default)]
pub struct MirrorStage {
    pub copies: [Option<Copy>; 2],
    /// How many of `copies` this packet filled.
    pub taken: usize,
}

impl MirrorStage {
    /// Forgets the last packet's copies (their buffers stay).
    #[inline]
    pub fn clear(&mut self) {
        self.taken = 0;
    }

    /// The copies of the packet just judged.
    pub fn taken(&self) -> impl Iterator<Item = &Copy> {
        self.copies[..self.taken].iter().flatten()
    }

    /// Copies `buf[..len]` for `session` in `dir`. The first copy of a worker sizes its
    /// buffer; from then on, taking one never allocates.
    pub fn take(&mut self, session: u32, dir: Direction, buf: &[u8], len: usize, meta: &Offload) {
        if self.taken >= self.copies.len() {
            return;
        }
        let slot = &mut self.copies[self.taken];
        let copy = slot.get_or_insert_with(|| Copy {
            session,
            dir,
            crossed: false,
            outcome: Outcome::Pending,
            meta: Offload::NONE,
            len: 0,
            buf: vec![0; MAX_COPY],
        });
        let len = len.min(buf.len()).min(MAX_COPY);
        copy.session = session;
        copy.dir = dir;
        copy.crossed = false;
        copy.outcome = Outcome::Pending;
        copy.meta = *meta;
        copy.len = len;
        copy.buf[..len].copy_from_slice(&buf[..len]);
        self.taken += 1;
    }

    /// The packet crossed the ENI in `dir`: its copy (if taken) may go to an instance.
    #[inline]
    pub fn crossed(&mut self, dir: Direction) {
        for c in self.copies[..self.taken].iter_mut().flatten() {
            if c.dir == dir {
                c.crossed = true;
            }
        }
    }

    /// The verdict is known: each copy of this packet learns its outcome.
    #[inline]
    pub fn finish(&mut self, outcome: Outcome) {
        for c in self.copies[..self.taken].iter_mut().flatten() {
            c.outcome = outcome;
        }
    }
}

/// A stable, locally administered MAC address for an ENI (its flow-state zone), as the
/// metadata service reports it.
pub fn eni_mac(zone: u32) -> [u8; 6] {
    [
        0x02,
        0x76,
        0x70,
        (zone >> 16) as u8,
        (zone >> 8) as u8,
        zone as u8,
    ]
}

/// The MAC address vpcd gives the VPC router (the other end of every ENI's link).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x76, 0x76, 0x00, 0x00, 0x01];

/// Writes the Ethernet frame of a mirrored packet into `out`: the ENI's MAC on its side,
/// the router's on the other, then `ip` (a whole IP packet). Returns its length, cut to
/// `limit` bytes (`packet_length`, the target's MTU).
pub fn ethernet(out: &mut [u8], ip: &[u8], dir: Direction, eni_zone: u32, limit: usize) -> usize {
    let (dst, src) = match dir {
        Direction::Egress => (ROUTER_MAC, eni_mac(eni_zone)),
        Direction::Ingress => (eni_mac(eni_zone), ROUTER_MAC),
    };
    let ethertype: u16 = if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    let total = (14 + ip.len()).min(limit).min(out.len());
    let mut frame = [0u8; 14];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    let head = total.min(14);
    out[..head].copy_from_slice(&frame[..head]);
    if total > 14 {
        out[14..total].copy_from_slice(&ip[..total - 14]);
    }
    total
}

/// Builds the VXLAN packet AWS sends the target: IPv4 from the source ENI's address to
/// the target's, UDP to 4789 (from a port hashed from the inner flow, checksum zero as
/// RFC 7348 recommends), the VXLAN header with `vni`, then `frame` (an Ethernet frame).
/// Returns the packet's length in `out`.
pub fn encapsulate(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    vni: u32,
    source_port: u16,
    frame: &[u8],
) -> usize {
    let total = 20 + 8 + 8 + frame.len();
    let ip = &mut out[..20];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..8].copy_from_slice(&[0, 0, 0, 0]);
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = crate::checksum::checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut out[20..28];
    udp[0..2].copy_from_slice(&source_port.to_be_bytes());
    udp[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let vx = &mut out[28..36];
    vx[0] = 0x08; // I: the VNI is valid
    vx[1..4].copy_from_slice(&[0, 0, 0]);
    vx[4..7].copy_from_slice(&vni.to_be_bytes()[1..4]);
    vx[7] = 0;
    out[36..total].copy_from_slice(frame);
    total
}

/// The outer UDP source port for a packet: a hash of its flow, in the ephemeral range,
/// so that one flow's copies keep one port (as a NIC's RSS would want).
pub fn source_port(pkt_src: IpAddr, pkt_dst: IpAddr, proto: u8, ports: Option<(u16, u16)>) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for a in [pkt_src, pkt_dst] {
        match a {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
    }
    eat(&[proto]);
    if let Some((s, d)) = ports {
        eat(&s.to_be_bytes());
        eat(&d.to_be_bytes());
    }
    49152 + (h % 16384) as u16
}
