//! UDP coalescing on the way out (`vpcd up --udp-gro`): consecutive datagrams of one flow
//! that a worker forwards to the same port are written as one UDP GSO (USO)
//! super-packet, which the receiving namespace's kernel cuts back into the datagrams
//! before any socket sees them. A 64-byte UDP flood then costs one write per batch
//! instead of one per datagram; wireguard-go coalesces the same way before its TUN.
//!
//! Each datagram is still judged on its own by the pipeline (SGs, NACLs, flow logs,
//! counters), so nothing AWS decides changes. What changes is what the receiving
//! namespace sees below its sockets: tcpdump, and netfilter rules or a "port
//! unreachable" for a closed port, meet one merged packet per run, which an AWS
//! instance never does for plain UDP sockets (Linux applies UDP GRO only to sockets that
//! ask for it). Hence opt-in, for throughput benchmarks.
//!
//! What may be merged, so that the kernel's cut gives back each datagram as it was:
//! every IP header byte equal except lengths, IPv4 id and checksums; IPv4 ids
//! consecutive unless DF is set (an atomic datagram's id means nothing, RFC 6864, and
//! the cut numbers them consecutively); the same payload size, only the last one
//! shorter; a checksum that is partial (the sender's kernel left it to the "device") or
//! verified here, because the merged packet carries a partial one, which the receiver
//! trusts without checking. One run is open at a time: flows that alternate within a
//! batch go out one datagram per write.

use super::Queue;
use crate::checksum;
use crate::offload::{Gso, Offload};
use crate::snapshot::PortId;
use crate::stats::Stats;

/// Datagrams per super-packet at most (the kernel's UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: u16 = 64;

/// The super-packet being built.
struct Pending {
    out: PortId,
    len: usize,
    l4: usize,
    /// Payload bytes of each datagram (the first one's); a shorter one ends the run.
    size: usize,
    segs: u16,
    closed: bool,
    /// The IPv4 id the next datagram must carry (when DF is clear).
    next_id: u16,
    /// The first datagram's own offload state, for a run of one.
    meta: Offload,
}

/// One worker's coalescing state and buffer.
pub struct UdpGro {
    buf: Box<[u8]>,
    pending: Option<Pending>,
    /// Set when the device refused a USO write (EINVAL): coalescing stops for good.
    refused: bool,
}

impl Default for UdpGro {
    fn default() -> Self {
        UdpGro::new()
    }
}

/// `(transport offset, payload length)` of a plain UDP datagram: IPv4 without options
/// and not fragmented, or IPv6 without extension headers; lengths consistent.
fn plain_udp(p: &[u8]) -> Option<(usize, usize)> {
    let l4 = match p.first()? >> 4 {
        4 if p[0] == 0x45
            && p.len() >= 28
            && p[9] == 17
            && u16::from_be_bytes([p[6], p[7]]) & 0x3fff == 0
            && usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len() =>
        {
            20
        }
        6 if p.len() >= 48
            && p[6] == 17
            && usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 == p.len() =>
        {
            40
        }
        _ => return None,
    };
    let udp_len = usize::from(u16::from_be_bytes([p[l4 + 4], p[l4 + 5]]));
    (udp_len == p.len() - l4 && udp_len > 8).then_some((l4, udp_len - 8))
}

/// Whether the datagram's checksum lets it be merged: partial (to be completed by the
/// "device", which the cut is), absent (IPv4 zero), or complete and right.
fn checksum_ok(p: &[u8], l4: usize, meta: &Offload) -> bool {
    if meta.needs_csum || (l4 == 20 && p[l4 + 6..l4 + 8] == [0, 0]) {
        return true;
    }
    let pseudo = checksum::pseudo_header(p, 17, p.len() - l4);
    checksum::fold(checksum::sum(pseudo, &p[l4..])) == 0xffff
}

/// The IPv4 id, and whether DF is set.
fn ipv4_id(p: &[u8]) -> (u16, bool) {
    (u16::from_be_bytes([p[4], p[5]]), p[6] & 0x40 != 0)
}

/// Whether `p` belongs to the run whose first datagram is `head`: every header byte
/// equal except lengths, the IPv4 id and the checksums.
fn same_flow(head: &[u8], p: &[u8], l4: usize) -> bool {
    let ports = head[l4..l4 + 4] == p[l4..l4 + 4];
    ports
        && if l4 == 20 {
            head[..2] == p[..2] && head[6..10] == p[6..10] && head[12..20] == p[12..20]
        } else {
            head[..4] == p[..4] && head[6..40] == p[6..40]
        }
}

impl UdpGro {
    pub fn new() -> Self {
        UdpGro {
            buf: vec![0; super::BUFFER_SIZE].into_boxed_slice(),
            pending: None,
            refused: false,
        }
    }

    /// Offers a datagram forwarded to `out`. Returns whether it was taken (it will be
    /// written with the run); `false`: write it as usual (any run was written first, so
    /// the port's order holds).
    pub fn offer<Q: Queue>(
        &mut self,
        out: PortId,
        packet: &[u8],
        meta: &Offload,
        queues: &[Q],
        stats: &mut Stats,
    ) -> bool {
        let takes = !self.refused
            && meta.gso == Gso::None
            && queues.get(out.ix()).is_some_and(|q| q.takes_uso());
        let Some((l4, payload)) =
            plain_udp(packet).filter(|&(l4, _)| takes && checksum_ok(packet, l4, meta))
        else {
            self.flush(queues, stats);
            return false;
        };
        if let Some(p) = &mut self.pending {
            let fits = p.out == out
                && p.l4 == l4
                && !p.closed
                && p.segs < MAX_SEGMENTS
                && payload <= p.size
                && p.len + payload <= 65_535 + if l4 == 40 { 40 } else { 0 }
                && same_flow(&self.buf[..p.len], packet, l4)
                && (l4 == 40 || matches!(ipv4_id(packet), (id, df) if df || id == p.next_id));
            if fits {
                self.buf[p.len..p.len + payload].copy_from_slice(&packet[l4 + 8..]);
                p.len += payload;
                p.segs += 1;
                p.next_id = p.next_id.wrapping_add(1);
                p.closed = payload < p.size;
                return true;
            }
        }
        self.flush(queues, stats);
        self.buf[..packet.len()].copy_from_slice(packet);
        self.pending = Some(Pending {
            out,
            len: packet.len(),
            l4,
            size: payload,
            segs: 1,
            closed: false,
            next_id: if l4 == 20 {
                ipv4_id(packet).0.wrapping_add(1)
            } else {
                0
            },
            meta: *meta,
        });
        true
    }

    /// Writes the run being built, if any: a single datagram as it came, several as one
    /// USO super-packet with the lengths of the whole and a partial checksum.
    pub fn flush<Q: Queue>(&mut self, queues: &[Q], stats: &mut Stats) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Some(q) = queues.get(p.out.ix()) else {
            stats.tx_errors(p.out, u64::from(p.segs));
            return;
        };
        let meta = if p.segs == 1 {
            p.meta
        } else {
            let (b, l4, len) = (&mut self.buf, p.l4, p.len);
            if l4 == 20 {
                b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                b[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&b[..20]);
                b[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                b[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            }
            let udp_len = len - l4;
            b[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            // The partial checksum: the pseudo-header sum, completed by whoever cuts it.
            let acc = checksum::pseudo_header(b, 17, udp_len);
            b[l4 + 6..l4 + 8].copy_from_slice(&checksum::fold(acc).to_be_bytes());
            Offload {
                gso: Gso::Udp,
                size: p.size as u16,
                hdr_len: (l4 + 8) as u16,
                needs_csum: true,
                csum_start: l4 as u16,
                csum_offset: 6,
                ..Offload::NONE
            }
        };
        // The pipeline counted each datagram as sent; a failed write loses all of them.
        if let Err(e) = q.send(&self.buf[..p.len], &meta) {
            stats.tx_errors(p.out, u64::from(p.segs));
            // The device does not take USO after all: from now on, one datagram a write.
            self.refused |= p.segs > 1 && e.raw_os_error() == Some(libc::EINVAL);
        }
    }
}
