//! What the pipeline tells an observer about each decision it takes.
//!
//! The packet path runs with [`NoObserver`], whose empty inlined method compiles away;
//! `vpcd trace` runs the very same code with a [`Recorder`] and prints the steps. So the
//! explanation can never disagree with what the dataplane does.

use std::net::IpAddr;

use ip_network::IpNetwork;

use crate::packet::Packet;
use crate::reason::DropReason;
use crate::route::Route;
use crate::snapshot::{
    EniIx, GatewayEndpointIx, HostIx, InterfaceEndpointIx, LocalService, NaclIx, NatGatewayIx,
    PeeringIx, PortId, RouteTableIx, SgIx, SubnetIx, TunnelIx, VpcIx,
};

/// Which way a packet crosses an ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the ENI (egress).
    Egress,
    /// Arriving at the ENI (ingress).
    Ingress,
}

/// What an ENI's security groups made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgDecision {
    /// A packet of a tracked flow: passed without rule checks (R-SG-STATE).
    Tracked,
    /// Allowed by rule `rule` (position in the direction's list) of `group`; `tracked`
    /// says whether a flow was opened (R-SG-UNTRACKED).
    Rule {
        group: SgIx,
        rule: u16,
        tracked: bool,
    },
    /// No rule allows it (R-SG-ALLOW).
    Denied,
}

/// One decision of the pipeline, in the order of semantics.md §11.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'s> {
    /// The packet entered on this port and parsed.
    Received { port: PortId, packet: Packet },
    /// Addressed to the VPC router itself (R-ADDR-EXEMPT): answered inside vpcd.
    LocalService { service: LocalService },
    /// The ENI's source/destination check passed (R-ADDR-SRCDST).
    SourceDestCheck { eni: EniIx, direction: Direction },
    /// An ENI's security groups judged the packet (steps 3 and 8).
    SecurityGroup {
        eni: EniIx,
        direction: Direction,
        decision: SgDecision,
    },
    /// A subnet's network ACL judged the packet (steps 5 and 7): the deciding rule number,
    /// `None` for the final `*` rule.
    NetworkAcl {
        acl: NaclIx,
        direction: Direction,
        rule: Option<u16>,
        allow: bool,
    },
    /// Both ENIs are in one subnet: delivered without the route table or NACL
    /// (R-RT-SAMESUBNET).
    SameSubnet { subnet: SubnetIx },
    /// The route table was consulted: the prefix and route that matched, or none.
    Route {
        table: RouteTableIx,
        matched: Option<(IpNetwork, &'s Route)>,
    },
    /// The IGW translated an address 1:1 (R-IGW-NAT) or passed IPv6 unchanged.
    InternetGateway {
        vpc: VpcIx,
        from: IpAddr,
        to: IpAddr,
    },
    /// The NAT gateway translated the packet (R-NAT-SNAT): address and port (or echo
    /// identifier) before and after.
    NatGateway {
        nat: NatGatewayIx,
        from: (IpAddr, u16),
        to: (IpAddr, u16),
    },
    /// The NAT gateway answered a segment of a connection it had forgotten with a RST
    /// (R-NAT-IDLE).
    NatReset { nat: NatGatewayIx },
    /// Larger than the path MTU: answered with "fragmentation needed" / "packet too big"
    /// (R-IGW-MTU).
    PacketTooBig { mtu: u16 },
    /// The TTL ran out at the VPC router: "time exceeded" to the sender.
    TimeExceeded,
    /// The VPC router forwarded the packet out of the VPC and decremented its TTL.
    RouterHop { ttl: u8 },
    /// An interface endpoint carried a client's connection to a service host, as from its
    /// own address (R-IFE-DNS).
    InterfaceEndpoint {
        endpoint: InterfaceEndpointIx,
        client: (IpAddr, u16),
        host: HostIx,
    },
    /// The packet went into (egress) or came out of (ingress) a VPN tunnel.
    VpnTunnel {
        tunnel: TunnelIx,
        direction: Direction,
        /// The VGW route that chose the tunnel (egress).
        route: Option<(IpNetwork, &'s Route)>,
    },
    /// The packet crossed an active peering connection (R-PCX-EDGE held).
    Peering { peering: PeeringIx, to_vpc: VpcIx },
    /// The packet went through a gateway endpoint to its service (R-GWE-ROUTE).
    GatewayEndpoint { endpoint: GatewayEndpointIx },
    /// The packet went through the VPC's virtual private gateway (R-VGW).
    VirtualPrivateGateway { vpc: VpcIx },
    /// Handed to an outside host (internet, service, on-premises).
    ToHost { host: HostIx },
    /// Handed to an ENI.
    ToEni { eni: EniIx },
    /// Dropped: the reason, and a short fact that says where (for trace and logs).
    Dropped {
        reason: DropReason,
        detail: &'static str,
    },
}

/// Receives the pipeline's steps; `'s` is the lifetime of the snapshot the steps borrow
/// from.
pub trait Observer<'s> {
    fn step(&mut self, step: Step<'s>);
}

/// The observer of the packet path: ignores everything, costs nothing.
pub struct NoObserver;

impl Observer<'_> for NoObserver {
    #[inline(always)]
    fn step(&mut self, _step: Step<'_>) {}
}

/// Keeps every step, for `vpcd trace` and tests.
#[derive(Default, Debug)]
pub struct Recorder<'s> {
    pub steps: Vec<Step<'s>>,
}

impl<'s> Recorder<'s> {
    pub fn new() -> Self {
        Recorder { steps: Vec::new() }
    }

    /// The reason of the drop step, if the packet was dropped.
    pub fn drop_reason(&self) -> Option<DropReason> {
        self.steps.iter().find_map(|s| match s {
            Step::Dropped { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

impl<'s> Observer<'s> for Recorder<'s> {
    fn step(&mut self, step: Step<'s>) {
        self.steps.push(step);
    }
}
