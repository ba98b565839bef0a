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
//! 3. A's SG egress, or the flow's tracked state (R-SG-STATE);
//! 4. same subnet: straight to step 8 (R-RT-SAMESUBNET);
//! 5. SA's NACL outbound (R-NACL-DIR);
//! 6. SA's route table, longest prefix match (R-RT-LPM);
//! 7. the target's own rules (IGW, VGW, peering, endpoint, …), then SB's NACL inbound;
//! 8. B's SG ingress, or the flow's tracked state;
//! 9. B's source/destination check, deliver.
//!
//! Packets from outside the VPC (internet, services, on-premises) start at step 6 with the
//! gateway's rules.
//!
//! Between instances of one VPC the TTL is not decremented: semantics.md is silent, and
//! on AWS the VPC router is not a hop traceroute shows inside a VPC. A packet leaving
//! through a gateway passes the router as a hop ([`router_hop`]).

use std::sync::Arc;

use crate::conntrack::Conntrack;

use crate::eni;
use crate::gateways;
use crate::icmp_error::{router_error, RouterError, Sender};
use crate::nat_gateway;
use crate::network_acl;
use crate::observer::{Direction, Observer, Step};
use crate::offload::Offload;
use crate::packet::Packet;
use crate::reason::DropReason;
use crate::route::Target;
use crate::security_group;
use crate::snapshot::{Attachment, EniIx, LocalService, PortId, Snapshot, SubnetIx, VpcIx};
use crate::stats::{Cause, Stats};
use crate::traffic_mirror::{MirrorStage, Outcome};
use crate::Timestamp;

/// What becomes of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) bytes out of this port.
    Forward(PortId),
    /// A packet vpcd wrote over the received one (a RST, an ICMP error): send the first
    /// `len` bytes of the buffer out of this port.
    Reply { port: PortId, len: u16 },
    /// Addressed to the VPC router itself: hand it to the router-local service.
    Local(LocalService),
    /// Dropped, for this reason.
    Drop(DropReason),
    /// Forwarded after NAT64 changed its family (and length): send the first `len` bytes
    /// of the buffer out of this port, with the offload state translated likewise
    /// ([`Offload::translated`]). `wire` is the bytes its segments take on the wire.
    Translated { port: PortId, len: u32, wire: u32 },
}

/// The capacity of the connection-tracking table of a pipeline made with
/// [`Pipeline::new`] (tests, benchmarks, `trace`); `vpcd up` sizes its own.
pub const TEST_CONNTRACK_CAPACITY: usize = 1 << 16;

/// One worker's pipeline: its counters and a handle on the state shared by all workers
/// (the connection-tracking table). The configuration comes in with each call as a
/// snapshot.
pub struct Pipeline {
    pub stats: Stats,
    /// This worker's flow-log aggregates.
    pub flow_logs: crate::flow_log::FlowLogAccumulator,
    /// The traffic-mirror copies of the packet just judged, for the I/O layer to send.
    pub mirror: MirrorStage,
    conntrack: Arc<Conntrack>,
    /// This worker's index and the number of workers: the NAT gateway hands each worker
    /// its own share of ports.
    worker: u16,
    workers: u16,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new()
    }
}

/// What every stage gets: the snapshot, the shared state, the time, the observer, and
/// the precise cause of a drop for the counters.
pub(crate) struct Ctx<'c, 's, O> {
    pub snap: &'s Snapshot,
    pub ct: &'c Conntrack,
    pub now: Timestamp,
    pub obs: &'c mut O,
    pub cause: Cause,
    /// Why a packet answered by the router (an ICMP error, a RST) went no further: it is
    /// dropped all the same and counted under this reason (§13).
    pub replaced: Option<DropReason>,
    pub worker: u16,
    pub workers: u16,
    pub fl: &'c mut crate::flow_log::FlowLogAccumulator,
    /// Route tables this packet has met: a guard against loops through vpcd's own
    /// gateways (every stage is a call, and a loop would exhaust the worker's stack).
    pub hops: u8,
    /// The packet's new length and wire bytes, once NAT64 translated it.
    pub resized: Option<(u32, u32)>,
    /// Traffic-mirror copies (R-TM), and the received packet's offload state they keep.
    pub mirror: &'c mut MirrorStage,
    pub meta: Offload,
}

/// The most route tables one packet may meet inside vpcd (instance → NAT gateway → IGW →
/// peering → ... takes a handful).
pub const MAX_HOPS: u8 = 16;

impl<'s, O: Observer<'s>> Ctx<'_, 's, O> {
    /// A flow-log record of `pkt` at `eni` (R-FL-ACTION), if a flow log covers it.
    #[inline]
    pub fn log(&mut self, eni: EniIx, dir: Direction, pkt: &Packet, accept: bool) {
        if self.snap.eni(eni).flow_log_interval != 0 {
            self.fl.record(eni, dir, pkt, accept, self.now.secs());
        }
    }

    /// Drops with `reason`, telling the observer where.
    #[inline]
    pub fn drop(&mut self, reason: DropReason, detail: &'static str) -> Verdict {
        drop(self.obs, reason, detail)
    }

    /// R-TM: takes a copy of `pkt` (in `buf`) crossing `eni` in `dir` if a session of the
    /// ENI mirrors it. One check when the lab mirrors nothing.
    #[inline]
    pub fn mirror(&mut self, eni: EniIx, dir: Direction, pkt: &Packet, buf: &[u8]) {
        let m = &self.snap.topo.traffic_mirror;
        if m.is_empty() {
            return;
        }
        if let Some(session) = m.session_for(eni, dir, pkt) {
            self.mirror
                .take(session, dir, buf, pkt.len as usize, &self.meta);
        }
    }
}

impl Pipeline {
    /// A pipeline with a table of its own ([`TEST_CONNTRACK_CAPACITY`] slots).
    pub fn new() -> Self {
        Pipeline::with_conntrack(Arc::new(Conntrack::new(TEST_CONNTRACK_CAPACITY)))
    }

    /// A pipeline that uses `conntrack` (a single worker's view).
    pub fn with_conntrack(conntrack: Arc<Conntrack>) -> Self {
        Pipeline::with_shared(conntrack, 0, 1)
    }

    /// Worker `worker` of `workers`, sharing `conntrack` (flow and NAT state) with the
    /// others.
    pub fn with_shared(conntrack: Arc<Conntrack>, worker: u16, workers: u16) -> Self {
        Pipeline {
            stats: Stats::default(),
            flow_logs: Default::default(),
            mirror: MirrorStage::default(),
            conntrack,
            worker,
            workers: workers.max(1),
        }
    }

    pub fn conntrack(&self) -> &Arc<Conntrack> {
        &self.conntrack
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
        let len = buf.len();
        self.process_in(snap, ingress, buf, len, now, obs)
    }

    /// As [`Pipeline::process`], for a packet in `buf[..len]` of a larger buffer: the room
    /// after it lets the router answer with a packet longer than the one it got (an ICMP
    /// error about a small packet quotes its header and 8 bytes).
    #[inline]
    pub fn process_in<'s, O: Observer<'s>>(
        &mut self,
        snap: &'s Snapshot,
        ingress: PortId,
        buf: &mut [u8],
        len: usize,
        now: Timestamp,
        obs: &mut O,
    ) -> Verdict {
        self.process_offloaded(snap, ingress, buf, len, &Offload::NONE, now, obs)
    }

    /// As [`Pipeline::process_in`], for a packet with the offload state `meta` that an
    /// offloading TUN handed over (a GSO super-packet, a partial checksum): it is judged
    /// and rewritten once, as a unit, and counted as the segments it stands for. A
    /// forwarded packet keeps `meta`; one vpcd wrote itself ([`Verdict::Reply`]) has none.
    #[allow(clippy::too_many_arguments)]
    pub fn process_offloaded<'s, O: Observer<'s>>(
        &mut self,
        snap: &'s Snapshot,
        ingress: PortId,
        buf: &mut [u8],
        len: usize,
        meta: &Offload,
        now: Timestamp,
        obs: &mut O,
    ) -> Verdict {
        // Grows only for the first packet after a snapshot with more objects is published
        // (one allocation per such swap), so counting never allocates in steady state and
        // no caller can forget to size the counters.
        self.stats.fit(snap);
        self.mirror.clear();
        let mut cx = Ctx {
            snap,
            ct: &self.conntrack,
            now,
            obs,
            cause: Cause::None,
            replaced: None,
            worker: self.worker,
            workers: self.workers,
            fl: &mut self.flow_logs,
            hops: 0,
            resized: None,
            mirror: &mut self.mirror,
            meta: *meta,
        };
        let len = len.min(buf.len());
        let mut wire = (1, len);
        let mut verdict = judge(&mut cx, ingress, buf, len, meta, &mut wire);
        if let (Verdict::Forward(port), Some((len, wire))) = (verdict, cx.resized) {
            verdict = Verdict::Translated { port, len, wire };
        }
        let cause = cx.cause;
        let replaced = cx.replaced;
        if self.mirror.taken > 0 {
            self.mirror.finish(match (verdict, replaced) {
                (Verdict::Drop(r), _) | (Verdict::Reply { .. }, Some(r)) => Outcome::Dropped(r),
                _ => Outcome::Passed,
            });
        }
        self.stats.count(ingress, wire.0, wire.1, &verdict);
        match (verdict, replaced) {
            (Verdict::Drop(_), _) => self.stats.count_cause(cause, wire.0),
            (Verdict::Reply { .. }, Some(reason)) => self.stats.count_drop(reason, wire.0),
            _ => {}
        }
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
    cx: &mut Ctx<'_, 's, O>,
    ingress: PortId,
    buf: &mut [u8],
    len: usize,
    meta: &Offload,
    wire: &mut (u32, usize),
) -> Verdict {
    let pkt = match Packet::parse(&buf[..len]) {
        Ok(p) => p,
        Err(reason) => return cx.drop(reason, "not a well-formed IPv4 or IPv6 packet"),
    };
    let pkt = match pkt.with_offload(&buf[..len], meta) {
        Ok(p) => p,
        Err(reason) => {
            return cx.drop(
                reason,
                "the TUN's offload header does not fit the packet (GSO type, checksum offset)",
            )
        }
    };
    *wire = (u32::from(pkt.segs), pkt.wire_len as usize);
    cx.obs.step(Step::Received {
        port: ingress,
        packet: pkt,
    });
    let Some(port) = cx.snap.port(ingress) else {
        return cx.drop(
            DropReason::NoRoute,
            "the port is not part of the current configuration",
        );
    };
    match port.attachment {
        Attachment::Eni(eni) => from_eni(cx, eni, &pkt, buf),
        Attachment::Host(host) => gateways::from_outside(cx, host, &pkt, buf),
        Attachment::Detached => cx.drop(
            DropReason::NoRoute,
            "the port is not part of the current configuration",
        ),
    }
}

/// Steps 1 to 6 for a packet sent by an ENI.
fn from_eni<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    sender: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let eni = snap.eni(sender);
    // Step 1: R-ADDR-EXEMPT. The router's own addresses, DNS, metadata and time sync are
    // answered inside vpcd, before any SG, NACL or flow log.
    if let Some(service) = snap.local_service(eni.vpc, pkt.dst) {
        cx.obs.step(Step::LocalService { service });
        return Verdict::Local(service);
    }
    // A stopped instance sends nothing (`vpcd fault`, aws:ec2:stop-instances).
    if eni.stopped != 0 {
        return cx.drop(
            DropReason::FaultDisrupted,
            "the instance is stopped by a fault",
        );
    }
    // R-TM: what the instance sends, before anything judges it.
    cx.mirror(sender, Direction::Egress, pkt, buf);
    // Step 2: R-ADDR-SRCDST on the sending side.
    if let Err(v) = eni::source_check(eni, sender, pkt, cx.obs) {
        return v;
    }
    leave_eni(cx, sender, pkt, buf)
}

/// Steps 3 to 6 for a packet leaving `sender`, logged at it (R-FL-ACTION): its SGs, the
/// same-subnet shortcut, its subnet's NACL, the route table. Also for an ENI living inside
/// vpcd (an interface endpoint answering its client).
pub(crate) fn leave_eni<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    sender: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let eni = snap.eni(sender);
    // Step 3: the sender's SG egress, or the flow's tracked state (R-SG-BOTHGATES).
    if let Err(v) = security_group::check(cx, sender, Direction::Egress, pkt) {
        cx.log(sender, Direction::Egress, pkt, false);
        return v;
    }
    cx.mirror.crossed(Direction::Egress);
    // Step 4: R-RT-SAMESUBNET. Two ENIs of one subnet talk directly: no route table, no NACL.
    let receiver = snap.eni_by_addr(eni.vpc, pkt.dst);
    if let Some(r) = receiver {
        if snap.eni(r).subnet == eni.subnet {
            cx.obs.step(Step::SameSubnet { subnet: eni.subnet });
            cx.log(sender, Direction::Egress, pkt, true);
            return to_eni(cx, r, pkt, buf, Some(eni.subnet));
        }
    }
    // Step 5: the sending subnet's NACL, outbound (R-NACL-DIR).
    if let Err(v) = network_acl::check(cx, eni.subnet, Direction::Egress, pkt) {
        cx.log(sender, Direction::Egress, pkt, false);
        return v;
    }
    cx.log(sender, Direction::Egress, pkt, true);
    // Step 6: the route table of the subnet the packet leaves from (R-RT-SUBNET).
    route(cx, eni.subnet, receiver, pkt, buf)
}

/// Step 6 and 7: longest prefix match in `subnet`'s route table, then the target's rules.
/// `receiver` is the ENI of the subnet's VPC that holds the destination, already looked up
/// by the caller, so the local route does not look it up again.
pub(crate) fn route<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    subnet: SubnetIx,
    receiver: Option<EniIx>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    cx.hops += 1;
    if cx.hops > MAX_HOPS {
        return cx.drop(
            DropReason::NoRoute,
            "a routing loop: the packet met route tables more than 16 times",
        );
    }
    let sn = snap.subnet(subnet);
    let table = snap.route_table(sn.route_table);
    let matched = table.lookup(pkt.dst);
    cx.obs.step(Step::Route {
        table: sn.route_table,
        matched,
    });
    let Some((_, route)) = matched else {
        return cx.drop(
            DropReason::NoRoute,
            "no route in the subnet's route table matches the destination",
        );
    };
    // The ENI that holds the source, for a packet leaving through a gateway: looked up
    // once for the router hop and the IGW's translation.
    let mut src_owner = None;
    if matches!(
        route.target,
        Target::InternetGateway(_)
            | Target::EgressOnlyInternetGateway(_)
            | Target::VirtualPrivateGateway(_)
            | Target::NatGateway(_)
    ) {
        src_owner = snap.eni_by_addr(sn.vpc, pkt.src);
        if let Some(v) = router_hop(cx, subnet, src_owner, pkt, buf) {
            return v;
        }
    }
    match route.target {
        Target::Local => match receiver {
            Some(r) => to_eni(cx, r, pkt, buf, Some(subnet)),
            None => unassigned(cx),
        },
        // A stopped appliance's route is a blackhole (R-RT-BLACKHOLE), as AWS shows it.
        Target::Eni(appliance) if snap.eni(appliance).stopped != 0 => cx.drop(
            DropReason::RouteBlackhole,
            "the route's instance is stopped",
        ),
        // Middlebox routing: the appliance ENI receives packets not addressed to it; its
        // own source/destination check decides whether it may (R-ADDR-SRCDST).
        Target::Eni(appliance) => to_eni(cx, appliance, pkt, buf, Some(subnet)),
        Target::NatGateway(nat) if snap.nat_gateway(nat).failed != 0 => cx.drop(
            DropReason::RouteBlackhole,
            "the route's NAT gateway has failed (a fault)",
        ),
        Target::Blackhole => cx.drop(
            DropReason::RouteBlackhole,
            "the matching route's target is blackhole",
        ),
        Target::InternetGateway(vpc) => {
            gateways::internet_gateway_egress(cx, vpc, src_owner, pkt, buf)
        }
        Target::EgressOnlyInternetGateway(vpc) => {
            gateways::egress_only_gateway_egress(cx, vpc, pkt, buf)
        }
        Target::VirtualPrivateGateway(vpc) => {
            gateways::virtual_private_gateway_egress(cx, vpc, pkt, buf)
        }
        Target::NatGateway(nat) => nat_gateway::egress(cx, nat, subnet, pkt, buf),
        Target::Peering(pcx) => gateways::peering(cx, pcx, sn.vpc, pkt, buf),
        Target::GatewayEndpoint(gwe) => gateways::gateway_endpoint(cx, gwe, sn.vpc, pkt),
        // Only a VGW's own routes name tunnels; a VPC route table never does.
        Target::VpnTunnel(_) => cx.drop(DropReason::NoRoute, "a tunnel is not a route target"),
    }
}

/// The VPC router as a hop (issue: router services): a packet an instance sends out of the
/// VPC through a gateway has its TTL (hop limit) decremented here, and one that arrives
/// with 1 left is answered with "time exceeded" from the subnet's router address, so
/// traceroute shows the router. semantics.md is silent; this follows what traceroute shows
/// from an EC2 instance to the internet (the subnet's router, base + 1, as the first hop
/// past the instance), our reading, not a documented rule. Inside the VPC (local routes) the
/// router stays invisible, as on AWS. Only an instance's own packet counts (a NAT
/// gateway's translated packet passes the router once, already counted).
fn router_hop<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    subnet: SubnetIx,
    src_owner: Option<EniIx>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Option<Verdict> {
    let snap = cx.snap;
    let sn = snap.subnet(subnet);
    let sender = src_owner?;
    let eni = snap.eni(sender);
    let port = eni.port.filter(|_| eni.subnet == subnet)?;
    if pkt.ttl <= 1 {
        let Some(router) = sn.router_for(pkt.is_ipv6()) else {
            return Some(cx.drop(DropReason::TtlExpired, "the TTL ran out"));
        };
        return Some(router_error(
            cx,
            pkt,
            buf,
            RouterError::TimeExceeded,
            router,
            Sender {
                port,
                eni: Some(sender),
            },
        ));
    }
    if pkt.is_ipv6() {
        buf[7] = pkt.ttl - 1;
    } else {
        let old = u16::from_be_bytes([buf[8], buf[9]]);
        buf[8] = pkt.ttl - 1;
        let new = u16::from_be_bytes([buf[8], buf[9]]);
        let c = u16::from_be_bytes([buf[10], buf[11]]);
        buf[10..12].copy_from_slice(&crate::checksum::update16(c, old, new).to_be_bytes());
    }
    cx.obs.step(Step::RouterHop { ttl: pkt.ttl - 1 });
    None
}

/// Local route: the ENI of `vpc` that holds the destination address receives it. The
/// packet comes from outside the VPC's subnets (a gateway or a peering), so the
/// receiving subnet's NACL applies.
pub(crate) fn deliver_in_vpc<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    match cx.snap.eni_by_addr(vpc, pkt.dst) {
        Some(receiver) => to_eni(cx, receiver, pkt, buf, None),
        None => unassigned(cx),
    }
}

/// The local route matched, but no interface in the VPC holds the destination.
fn unassigned<'s, O: Observer<'s>>(cx: &mut Ctx<'_, 's, O>) -> Verdict {
    cx.drop(
        DropReason::UnassignedAddress,
        "no interface in the VPC holds the destination address",
    )
}

/// Steps 7 (NACL inbound), 8 (SG ingress) and 9 (destination check) at the receiving ENI.
/// `from_subnet` is the subnet the packet left (`None` from outside the VPC's subnets): the
/// receiving subnet's NACL applies only when the packet crosses into it (R-NACL-DIR,
/// R-RT-SAMESUBNET).
pub(crate) fn to_eni<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    receiver: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
    from_subnet: Option<SubnetIx>,
) -> Verdict {
    let eni = cx.snap.eni(receiver);
    if eni.stopped != 0 {
        return cx.drop(
            DropReason::FaultDisrupted,
            "the receiving instance (or endpoint) is stopped by a fault",
        );
    }
    // R-TM: what reaches the ENI, as gateways translated it.
    cx.mirror(receiver, Direction::Ingress, pkt, buf);
    if from_subnet != Some(eni.subnet) {
        if let Err(v) = network_acl::check(cx, eni.subnet, Direction::Ingress, pkt) {
            cx.log(receiver, Direction::Ingress, pkt, false);
            return v;
        }
    }
    if let Err(v) = security_group::check(cx, receiver, Direction::Ingress, pkt) {
        cx.log(receiver, Direction::Ingress, pkt, false);
        return v;
    }
    cx.log(receiver, Direction::Ingress, pkt, true);
    if let Err(v) = eni::destination_check(eni, receiver, pkt, cx.obs) {
        return v;
    }
    cx.mirror.crossed(Direction::Ingress);
    match eni.port {
        Some(port) => {
            cx.obs.step(Step::ToEni { eni: receiver });
            Verdict::Forward(port)
        }
        None => gateways::to_internal_eni(cx, receiver, pkt, buf),
    }
}
