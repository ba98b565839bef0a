//! The order of checks (semantics.md §11): one function per step, each named after the
//! AWS concept it applies.
//!
//! The pipeline is sans-IO: it receives a packet's bytes, the port it came in on, the
//! snapshot and the time, and returns a [`Verdict`]; it rewrites the bytes in place when a
//! gateway translates them. It never reads a clock, opens a device or takes a lock, so it
//! runs the same under a TUN worker, in a test, in a benchmark and in `vpcd trace`.
//!
//! For a packet from ENI A (subnet SA) to ENI B (subnet SB):
//!
//! 1. exempt destinations go to the router ([`Verdict::Local`], R-ADDR-EXEMPT);
//! 2. A's source/destination check (R-ADDR-SRCDST);
//! 3. A's SG egress (issue: security groups);
//! 4. same subnet: straight to step 8 (R-RT-SAMESUBNET);
//! 5. SA's NACL outbound (issue: network ACLs);
//! 6. SA's route table, longest prefix match (R-RT-LPM);
//! 7. the target's own rules (IGW, VGW, peering, endpoint, …), then SB's NACL inbound;
//! 8. B's SG ingress;
//! 9. B's source/destination check, deliver.
//!
//! Packets from outside the VPC (internet, services, on-premises) start at step 6 with the
//! gateway's rules.
//!
//! The TTL is not decremented on the way: semantics.md is silent, and on AWS the VPC router
//! is not a hop that traceroute shows between instances of one VPC. Where the router shows
//! as a hop (issue: router-local services), that stage will decrement it.

use crate::eni;
use crate::gateways;
use crate::observer::{Observer, Step};
use crate::packet::Packet;
use crate::reason::DropReason;
use crate::route::Target;
use crate::snapshot::{Attachment, EniIx, LocalService, PortId, Snapshot, SubnetIx, VpcIx};
use crate::stats::Stats;
use crate::Timestamp;

/// What becomes of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) bytes out of this port.
    Forward(PortId),
    /// Addressed to the VPC router itself: hand it to the router-local service.
    Local(LocalService),
    /// Dropped, for this reason.
    Drop(DropReason),
}

/// One worker's pipeline: the per-worker state (counters now; flow state as the stateful
/// stages arrive). The configuration comes in with each call as a snapshot.
#[derive(Default)]
pub struct Pipeline {
    pub stats: Stats,
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Judges one packet that arrived on `ingress`, counts it, and returns the verdict.
    /// `buf` holds exactly the IP packet; it may be rewritten in place.
    #[inline]
    pub fn process<'s, O: Observer<'s>>(
        &mut self,
        snap: &'s Snapshot,
        ingress: PortId,
        buf: &mut [u8],
        now: Timestamp,
        obs: &mut O,
    ) -> Verdict {
        // Grows only for the first packet after a snapshot with more ports is published
        // (one allocation per such swap), so counting never allocates in steady state and
        // no caller can forget to size the counters.
        if self.stats.ports.len() < snap.topo.ports.len() {
            self.stats.reserve_ports(snap.topo.ports.len());
        }
        let verdict = judge(snap, ingress, buf, now, obs);
        self.stats.count(ingress, buf.len(), &verdict);
        verdict
    }
}

/// Drops with `reason`, telling the observer where.
#[inline]
pub(crate) fn drop<'s, O: Observer<'s>>(
    obs: &mut O,
    reason: DropReason,
    detail: &'static str,
) -> Verdict {
    obs.step(Step::Dropped { reason, detail });
    Verdict::Drop(reason)
}

fn judge<'s, O: Observer<'s>>(
    snap: &'s Snapshot,
    ingress: PortId,
    buf: &mut [u8],
    _now: Timestamp,
    obs: &mut O,
) -> Verdict {
    let pkt = match Packet::parse(buf) {
        Ok(p) => p,
        Err(reason) => return drop(obs, reason, "not a well-formed IPv4 or IPv6 packet"),
    };
    obs.step(Step::Received {
        port: ingress,
        packet: pkt,
    });
    let Some(port) = snap.port(ingress) else {
        return drop(
            obs,
            DropReason::NoRoute,
            "the port is not part of the current configuration",
        );
    };
    match port.attachment {
        Attachment::Eni(eni) => from_eni(snap, eni, &pkt, buf, obs),
        Attachment::Host(host) => gateways::from_outside(snap, host, &pkt, buf, obs),
    }
}

/// Steps 1 to 6 for a packet sent by an ENI.
fn from_eni<'s, O: Observer<'s>>(
    snap: &'s Snapshot,
    sender: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
    obs: &mut O,
) -> Verdict {
    let eni = snap.eni(sender);
    // Step 1: R-ADDR-EXEMPT. The router's own addresses, DNS, metadata and time sync are
    // answered inside vpcd, before any SG, NACL or flow log.
    if let Some(service) = snap.local_service(eni.vpc, pkt.dst) {
        obs.step(Step::LocalService { service });
        return Verdict::Local(service);
    }
    // Step 2: R-ADDR-SRCDST on the sending side.
    if let Err(v) = eni::source_check(eni, sender, pkt, obs) {
        return v;
    }
    // Step 4: R-RT-SAMESUBNET. Two ENIs of one subnet talk directly: no route table, no NACL.
    let receiver = snap.eni_by_addr(eni.vpc, pkt.dst);
    if let Some(r) = receiver {
        if snap.eni(r).subnet == eni.subnet {
            obs.step(Step::SameSubnet { subnet: eni.subnet });
            return to_eni(snap, r, pkt, buf, obs);
        }
    }
    // Step 6: the route table of the subnet the packet leaves from (R-RT-SUBNET).
    route(snap, eni.subnet, receiver, pkt, buf, obs)
}

/// Step 6 and 7: longest prefix match in `subnet`'s route table, then the target's rules.
/// `receiver` is the ENI of the subnet's VPC that holds the destination, already looked up
/// by the caller, so the local route does not look it up again.
pub(crate) fn route<'s, O: Observer<'s>>(
    snap: &'s Snapshot,
    subnet: SubnetIx,
    receiver: Option<EniIx>,
    pkt: &Packet,
    buf: &mut [u8],
    obs: &mut O,
) -> Verdict {
    let sn = snap.subnet(subnet);
    let table = snap.route_table(sn.route_table);
    let matched = table.lookup(pkt.dst);
    obs.step(Step::Route {
        table: sn.route_table,
        matched,
    });
    let Some((_, route)) = matched else {
        return drop(
            obs,
            DropReason::NoRoute,
            "no route in the subnet's route table matches the destination",
        );
    };
    match route.target {
        Target::Local => match receiver {
            Some(r) => to_eni(snap, r, pkt, buf, obs),
            None => unassigned(obs),
        },
        // Middlebox routing: the appliance ENI receives packets not addressed to it; its
        // own source/destination check decides whether it may (R-ADDR-SRCDST).
        Target::Eni(appliance) => to_eni(snap, appliance, pkt, buf, obs),
        Target::Blackhole => drop(
            obs,
            DropReason::RouteBlackhole,
            "the matching route's target is blackhole",
        ),
        Target::InternetGateway(vpc) => gateways::internet_gateway_egress(snap, vpc, pkt, buf, obs),
        Target::EgressOnlyInternetGateway(vpc) => {
            gateways::egress_only_gateway_egress(snap, vpc, pkt, buf, obs)
        }
        Target::VirtualPrivateGateway(vpc) => {
            gateways::virtual_private_gateway_egress(snap, vpc, pkt, obs)
        }
        Target::NatGateway(nat) => gateways::nat_gateway_egress(snap, nat, pkt, buf, obs),
        Target::Peering(pcx) => gateways::peering(snap, pcx, sn.vpc, pkt, buf, obs),
        Target::GatewayEndpoint(gwe) => gateways::gateway_endpoint(snap, gwe, sn.vpc, pkt, obs),
    }
}

/// Local route: the ENI of `vpc` that holds the destination address receives it.
pub(crate) fn deliver_in_vpc<'s, O: Observer<'s>>(
    snap: &'s Snapshot,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
    obs: &mut O,
) -> Verdict {
    match snap.eni_by_addr(vpc, pkt.dst) {
        Some(receiver) => to_eni(snap, receiver, pkt, buf, obs),
        None => unassigned(obs),
    }
}

/// The local route matched, but no interface in the VPC holds the destination.
fn unassigned<'s, O: Observer<'s>>(obs: &mut O) -> Verdict {
    drop(
        obs,
        DropReason::UnassignedAddress,
        "no interface in the VPC holds the destination address",
    )
}

/// Steps 7 (NACL inbound), 8 (SG ingress) and 9 (destination check) at the receiving ENI.
pub(crate) fn to_eni<'s, O: Observer<'s>>(
    snap: &'s Snapshot,
    receiver: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
    obs: &mut O,
) -> Verdict {
    let eni = snap.eni(receiver);
    if let Err(v) = eni::destination_check(eni, receiver, pkt, obs) {
        return v;
    }
    match eni.port {
        Some(port) => {
            obs.step(Step::ToEni { eni: receiver });
            Verdict::Forward(port)
        }
        None => gateways::to_internal_eni(snap, receiver, pkt, buf, obs),
    }
}
