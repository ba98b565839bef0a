//! The VPC router's own services (semantics.md §1, issue: router-local services): the
//! subnet router answering ping (R-ADDR-ROUTER) and the Amazon DNS resolver (R-ADDR-DNS).
//! Exempt from SGs, NACLs and flow logs (R-ADDR-EXEMPT): the pipeline hands their packets
//! over as [`crate::Verdict::Local`] before any of those stages, and the worker calls
//! [`RouterServices::answer`] with its whole buffer, so an answer may be longer than the
//! question. Sans-IO like the pipeline: bytes and the time in, an answer in the buffer out.
//!
//! Instance metadata (R-ADDR-IMDS) is HTTP over TCP, served by [`metadata`] with smoltcp
//! as the router's TCP stack, shared by the workers behind a mutex (its packets are not on
//! the forwarding path).

pub mod dns;
pub mod names;
pub mod tcp_services;

use std::sync::{Arc, Mutex};

use tcp_services::TcpServices;

use crate::packet::{proto, Packet, Transport};
use crate::snapshot::{Attachment, EniIx, LocalService, PortId, Snapshot};
use crate::Timestamp;

/// AWS's limit of packets per second from one ENI to the Amazon DNS resolver; beyond it
/// queries are dropped (a flood stays bounded).
pub const DNS_PACKETS_PER_SECOND: u32 = 1024;

/// One worker's router-service state: the DNS budget per port, and the metadata service
/// shared by all workers.
#[derive(Default)]
pub struct RouterServices {
    /// Per port: (the second, queries answered in it).
    dns_budget: Vec<(u64, u32)>,
    /// Queries refused by the budget.
    pub dns_throttled: u64,
    pub metadata: Option<Arc<Mutex<TcpServices>>>,
}

impl RouterServices {
    pub fn new() -> Self {
        RouterServices::default()
    }

    /// Answers a packet for `service` that arrived on `ingress` in `buf[..len]`: each
    /// answer packet goes to `out` (bound for `ingress`). Returns how many were sent; 0
    /// when there is nothing to say (not a question this service answers, a throttled
    /// query, no metadata service).
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &mut self,
        snap: &Snapshot,
        ingress: PortId,
        service: LocalService,
        buf: &mut [u8],
        len: usize,
        now: Timestamp,
        out: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let Some(pkt) = buf.get(..len).and_then(|b| Packet::parse(b).ok()) else {
            return 0;
        };
        let Some(eni) = sender(snap, ingress) else {
            return 0;
        };
        let single = match service {
            LocalService::Router(subnet) => {
                // R-ADDR-ROUTER: answers ping from its own subnet.
                if snap.eni(eni).subnet != subnet {
                    return 0;
                }
                echo_reply(&pkt, buf)
            }
            LocalService::Dns if matches!(pkt.transport, Transport::Tcp { .. }) => {
                return self.over_tcp(snap, eni, &pkt, &buf[..len], 53, now, out);
            }
            LocalService::Dns => {
                if !self.within_budget(ingress, now) {
                    self.dns_throttled += 1;
                    return 0;
                }
                dns::answer_udp(snap, eni, &pkt, buf)
            }
            LocalService::Metadata => {
                return self.over_tcp(snap, eni, &pkt, &buf[..len], 80, now, out);
            }
            LocalService::TimeSync => None,
        };
        match single {
            Some(n) => {
                out(&buf[..n]);
                1
            }
            None => 0,
        }
    }

    /// A TCP segment for one of the router's TCP services on `port`.
    #[allow(clippy::too_many_arguments)]
    fn over_tcp(
        &mut self,
        snap: &Snapshot,
        eni: EniIx,
        pkt: &Packet,
        bytes: &[u8],
        port: u16,
        now: Timestamp,
        out: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let Some(m) = &self.metadata else { return 0 };
        if !matches!(pkt.transport, Transport::Tcp { dst_port, .. } if dst_port == port) {
            return 0;
        }
        let packets = m
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle(snap, eni, bytes, now);
        for p in &packets {
            out(p);
        }
        packets.len()
    }
}

impl RouterServices {
    fn within_budget(&mut self, port: PortId, now: Timestamp) -> bool {
        if self.dns_budget.len() <= port.ix() {
            self.dns_budget.resize(port.ix() + 1, (0, 0));
        }
        let (second, used) = &mut self.dns_budget[port.ix()];
        let s = now.secs();
        if *second != s {
            *second = s;
            *used = 0;
        }
        *used += 1;
        *used <= DNS_PACKETS_PER_SECOND
    }
}

/// An ICMP(v6) echo request turned into its reply, written over `buf`.
fn echo_reply(pkt: &Packet, buf: &mut [u8]) -> Option<usize> {
    let Transport::Icmp { ty, .. } = pkt.transport else {
        return None;
    };
    let l4 = usize::from(pkt.l4_offset);
    let end = pkt.len as usize;
    if end < l4 + 8 || buf.len() < end {
        return None;
    }
    let id = u16::from_be_bytes([buf[l4 + 4], buf[l4 + 5]]);
    let seq = u16::from_be_bytes([buf[l4 + 6], buf[l4 + 7]]);
    let payload = buf[l4 + 8..end].to_vec();
    let mut w = &mut buf[..];
    match (pkt.proto, ty, pkt.src, pkt.dst) {
        (proto::ICMP, 8, std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            let b = etherparse::PacketBuilder::ipv4(d.octets(), s.octets(), 64)
                .icmpv4_echo_reply(id, seq);
            let n = b.size(payload.len());
            b.write(&mut w, &payload).ok().map(|_| n)
        }
        (proto::ICMPV6, 128, std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            let b = etherparse::PacketBuilder::ipv6(d.octets(), s.octets(), 64)
                .icmpv6_echo_reply(id, seq);
            let n = b.size(payload.len());
            b.write(&mut w, &payload).ok().map(|_| n)
        }
        _ => None,
    }
}

/// The ENI that sent a packet on `port`, if an instance did.
pub fn sender(snap: &Snapshot, port: PortId) -> Option<EniIx> {
    match snap.port(port)?.attachment {
        Attachment::Eni(e) => Some(e),
        _ => None,
    }
}
