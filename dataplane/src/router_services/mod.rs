//! The VPC router's own services (semantics.md §1, issue: router-local services): the
//! subnet router answering ping (R-ADDR-ROUTER) and the Amazon DNS resolver (R-ADDR-DNS).
//! Exempt from SGs, NACLs and flow logs (R-ADDR-EXEMPT): the pipeline hands their packets
//! over as [`crate::Verdict::Local`] before any of those stages, and the worker calls
//! [`RouterServices::answer`] with its whole buffer, so an answer may be longer than the
//! question. Sans-IO like the pipeline: bytes and the time in, an answer in the buffer out.
//!
//! Instance metadata (R-ADDR-IMDS) is HTTP over TCP, served by [`tcp_services`] with smoltcp
//! as the router's TCP stack, shared by the workers behind a mutex (its packets are not on
//! the forwarding path).

pub mod dns;
pub mod metadata;
pub mod names;
pub mod tcp_services;

use std::sync::{Arc, Mutex};

use tcp_services::TcpServices;

use crate::packet::{proto, Packet, Transport};
use crate::snapshot::{Attachment, EniIx, LocalService, PortId, Snapshot};
use crate::Timestamp;

/// AWS's limit of packets per second from one ENI to the services at link-local and
/// router addresses: the Amazon DNS resolver (UDP and TCP), instance metadata and time
/// sync share it; beyond it packets are dropped, so a flood stays bounded. "Each EC2
/// instance limits the number of packets that can be sent to the Amazon-provided DNS
/// server to a maximum of 1024 packets per second per network interface", and the same
/// for IMDS and Time Sync (AWS, "Amazon DNS server" and "Instance metadata service"
/// limits in the VPC and EC2 user guides).
pub const LINK_LOCAL_PACKETS_PER_SECOND: u32 = 1024;

/// What the router's services refused or cut short, by reason: plain integers of one
/// worker (the TCP services are shared, but each worker counts what its own packets met),
/// summed by readers with the rest of [`crate::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Packets to DNS, metadata or time sync beyond [`LINK_LOCAL_PACKETS_PER_SECOND`] of
    /// one ENI, dropped.
    pub link_local_throttled: u64,
    /// SYNs to a TCP service (metadata, DNS) that found no free connection slot, dropped.
    pub tcp_refused_busy: u64,
    /// SYNs from an address that already holds [`tcp_services::PER_SOURCE`] of the port's
    /// slots, dropped.
    pub tcp_refused_per_source: u64,
    /// Connections aborted for being half-open, idle or old too long (their slot listens
    /// again).
    pub tcp_timed_out: u64,
}

impl ServiceCounters {
    /// Each counter with its name, as `vpcd stats` and the metrics report them.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("link_local_throttled", self.link_local_throttled),
            ("tcp_refused_busy", self.tcp_refused_busy),
            ("tcp_refused_per_source", self.tcp_refused_per_source),
            ("tcp_timed_out", self.tcp_timed_out),
        ]
    }

    /// Adds another worker's counters into these (for a reader).
    pub fn merge(&mut self, other: &ServiceCounters) {
        self.link_local_throttled += other.link_local_throttled;
        self.tcp_refused_busy += other.tcp_refused_busy;
        self.tcp_refused_per_source += other.tcp_refused_per_source;
        self.tcp_timed_out += other.tcp_timed_out;
    }
}

/// One worker's router-service state: the link-local budget per port, its counters, and the
/// metadata service shared by all workers.
#[derive(Default)]
pub struct RouterServices {
    /// Per port: (the second, link-local packets taken in it).
    budget: Vec<(u64, u32)>,
    /// What was refused or timed out, by reason.
    pub counters: ServiceCounters,
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
        let link_local = matches!(
            service,
            LocalService::Dns | LocalService::Metadata | LocalService::TimeSync
        );
        if link_local && !self.within_budget(ingress, now) {
            self.counters.link_local_throttled += 1;
            return 0;
        }
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
            LocalService::Dns => dns::answer_udp(snap, eni, &pkt, buf),
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
        let packets = m.lock().unwrap_or_else(|e| e.into_inner()).handle(
            snap,
            eni,
            pkt,
            bytes,
            now,
            &mut self.counters,
        );
        for p in &packets {
            out(p);
        }
        packets.len()
    }
}

impl RouterServices {
    fn within_budget(&mut self, port: PortId, now: Timestamp) -> bool {
        if self.budget.len() <= port.ix() {
            self.budget.resize(port.ix() + 1, (0, 0));
        }
        let (second, used) = &mut self.budget[port.ix()];
        let s = now.secs();
        if *second != s {
            *second = s;
            *used = 0;
        }
        *used += 1;
        *used <= LINK_LOCAL_PACKETS_PER_SECOND
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
