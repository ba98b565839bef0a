//! The compiled, immutable configuration that packet workers read.
//!
//! The control path turns a lab file into a [`Topology`] (plain vectors of VPCs, subnets,
//! ENIs, route tables, gateways, outside hosts, all referring to each other by index) and
//! [`Snapshot::new`] adds the lookup maps the hot path needs. A snapshot never changes
//! once built: a new configuration is a new snapshot, published with [`SnapshotCell`]
//! (arc-swap), and a worker loads it once per batch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use ip_network_table::IpNetworkTable;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::acl::{NetworkAcl, SecurityGroup};
use crate::conntrack::Timeouts;
use crate::observer::Direction;
use crate::packet::proto;
use crate::reason::DropReason;
use crate::route::RouteTable;

macro_rules! index_type {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            #[inline]
            pub fn ix(self) -> usize { self.0 as usize }
        }
    )*};
}

index_type! {
    /// A VPC, by position in [`Topology::vpcs`].
    VpcIx;
    /// A subnet, by position in [`Topology::subnets`].
    SubnetIx;
    /// A network interface (instance, NAT gateway or endpoint).
    EniIx;
    /// A route table.
    RouteTableIx;
    /// A NAT gateway.
    NatGatewayIx;
    /// A peering connection.
    PeeringIx;
    /// A gateway endpoint.
    GatewayEndpointIx;
    /// An interface endpoint.
    InterfaceEndpointIx;
    /// A simulated outside host (internet, service, on-premises).
    HostIx;
    /// A service of `services[]`.
    ServiceIx;
    /// A security group.
    SgIx;
    /// A network ACL.
    NaclIx;
    /// A port: where packets enter and leave the router (one TUN device in a lab).
    PortId;
    /// A VPN tunnel (two per VPN connection).
    TunnelIx;
}

#[derive(Clone, Debug)]
pub struct Vpc {
    pub id: Box<str>,
    /// Its flow-state zone (the EIGW's): stable across configuration generations, so an
    /// apply that reorders VPCs keeps their flows. The compiler sets the index; the
    /// control thread renumbers by name.
    pub zone: u32,
    /// The primary block first, then the secondary ones.
    pub cidrs_v4: Vec<Ipv4Network>,
    pub cidr_v6: Option<Ipv6Network>,
    pub internet_gateway: Option<Box<str>>,
    pub egress_only_internet_gateway: Option<Box<str>>,
    pub virtual_private_gateway: Option<Box<str>>,
    pub enable_dns_support: bool,
    /// The VGW's routes to sites (prefix → tunnel, after R-VPN-PRIORITY), by position in
    /// [`Topology::vgw_routes`].
    pub vgw_routes: Option<u32>,
}

impl Vpc {
    /// True when `addr` lies in one of the VPC's blocks (IPv4 or IPv6).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.cidrs_v4.iter().any(|c| c.contains(a)),
            IpAddr::V6(a) => self.cidr_v6.is_some_and(|c| c.contains(a)),
        }
    }

    /// The Amazon DNS address: the primary block's base + 2 (R-ADDR-DNS).
    pub fn dns_v4(&self) -> Option<Ipv4Addr> {
        self.cidrs_v4
            .first()
            .map(|c| Ipv4Addr::from(u32::from(c.network_address()) + 2))
    }
}

#[derive(Clone, Debug)]
pub struct Subnet {
    pub id: Box<str>,
    pub vpc: VpcIx,
    /// `None` for an IPv6-only subnet.
    pub cidr_v4: Option<Ipv4Network>,
    pub cidr_v6: Option<Ipv6Network>,
    /// `enable_dns64`: the Amazon DNS answers AAAA queries for IPv4-only names with
    /// addresses of 64:ff9b::/96, for NAT64 (AWS subnet attribute EnableDns64).
    pub dns64: bool,
    /// `aws:network:disrupt-connectivity` on this subnet: what it drops, and the fault.
    pub disruption: Option<(Disruption, u32)>,
    pub availability_zone: Box<str>,
    pub route_table: RouteTableIx,
    /// The subnet's network ACL (the VPC's default one unless the lab names another).
    pub network_acl: NaclIx,
}

impl Subnet {
    /// The VPC router's address in this subnet: base + 1 (R-ADDR-ROUTER); `None` in an
    /// IPv6-only subnet.
    pub fn router_v4(&self) -> Option<Ipv4Addr> {
        self.cidr_v4
            .map(|c| Ipv4Addr::from(u32::from(c.network_address()) + 1))
    }

    /// The router's address of a family in this subnet, if the subnet has that family.
    pub fn router_for(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.router_v6().map(IpAddr::V6)
        } else {
            self.router_v4().map(IpAddr::V4)
        }
    }

    /// The router's IPv6 address in this subnet: base + 1 of the /64.
    pub fn router_v6(&self) -> Option<Ipv6Addr> {
        self.cidr_v6
            .map(|c| Ipv6Addr::from(u128::from(c.network_address()) + 1))
    }
}

/// What `aws:network:disrupt-connectivity` drops at a subnet's boundary, in and out, as
/// AWS FIS does with a network ACL it adds (so traffic within the subnet still flows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// `--scope all`: every packet entering or leaving the subnet.
    All,
    /// `--scope availability-zone`: traffic with subnets of the VPC in other zones.
    AvailabilityZone,
    /// `--scope prefix-list` (or `s3`, `dynamodb`): traffic with the ranges of a
    /// service's prefix list.
    Service(ServiceIx),
}

/// What an ENI belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EniKind {
    /// An instance: one namespace, one port.
    Instance,
    /// The ENI of a NAT gateway (inside vpcd, no port).
    NatGateway(NatGatewayIx),
    /// One ENI of an interface endpoint, in one of its subnets (inside vpcd, no port).
    InterfaceEndpoint(InterfaceEndpointIx),
}

/// An interface endpoint (R-IFE-ENI): an ENI in each of its subnets, its own SGs, TCP
/// to the service's hosts, which see the connection coming from the endpoint (R-IFE-DNS).
#[derive(Clone, Debug)]
pub struct InterfaceEndpoint {
    pub id: Box<str>,
    pub vpc: VpcIx,
    pub service: ServiceIx,
    pub enis: Vec<EniIx>,
    /// The service's hosts with an IPv4 address, where connections are spread.
    pub hosts: Vec<HostIx>,
    /// `private_dns`: the service's public name resolves to the endpoint inside the VPC.
    pub private_dns: bool,
}

/// A network interface (R-ADDR-SRCDST applies to it).
#[derive(Clone, Debug)]
pub struct Eni {
    /// The instance / NAT gateway id: how the ENI is named everywhere.
    pub id: Box<str>,
    /// Its flow-state zone (conntrack keys): stable across configuration generations
    /// (see [`Vpc::zone`]).
    pub zone: u32,
    pub kind: EniKind,
    pub vpc: VpcIx,
    pub subnet: SubnetIx,
    /// Where its packets enter and leave; `None` for ENIs that live inside vpcd.
    pub port: Option<PortId>,
    /// Primary private IPv4 first, then the secondary ones.
    pub private_v4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// Public IPv4 / Elastic IP, translated 1:1 by the IGW (R-IGW-NAT).
    pub public_v4: Option<Ipv4Addr>,
    pub source_dest_check: bool,
    /// Its security groups (1 to 5, R-SG-LIMIT); empty for a NAT gateway, which has none.
    pub security_groups: Vec<SgIx>,
    /// Its connection-tracking idle timeouts (R-SG-TIMEOUT).
    pub timeouts: Timeouts,
    /// Where its groups allow all traffic for the whole address space (R-SG-UNTRACKED):
    /// [`Untracked`] bits, inbound in the low four, outbound in the high four; computed by
    /// [`Snapshot::new`].
    pub sg_open: u8,
    /// Instance metadata answers without a token (IMDSv1).
    pub imds_v1: bool,
    /// The shortest aggregation interval of the flow logs covering it, in seconds; 0 when
    /// none does (the packet path's one test). Set by [`Snapshot::new`].
    pub flow_log_interval: u32,
    /// Stopped by fault number `stopped` (`aws:ec2:stop-instances`, a zone's power
    /// interruption); 0 while running.
    pub stopped: u32,
}

/// Bits of [`Eni::sg_open`]: TCP or UDP, IPv4 or IPv6, allowed on all ports for 0.0.0.0/0
/// (::/0) in one direction. A flow admitted from (to) the whole address space whose
/// replies are so allowed in the other direction is not tracked (R-SG-UNTRACKED).
pub struct Untracked;

impl Untracked {
    pub const TCP_V4: u8 = 1;
    pub const TCP_V6: u8 = 2;
    pub const UDP_V4: u8 = 4;
    pub const UDP_V6: u8 = 8;

    /// The bit for a packet's protocol and family (0 for protocols that are always
    /// tracked).
    #[inline]
    pub fn bit(protocol: u8, v6: bool) -> u8 {
        match (protocol, v6) {
            (proto::TCP, false) => Self::TCP_V4,
            (proto::TCP, true) => Self::TCP_V6,
            (proto::UDP, false) => Self::UDP_V4,
            (proto::UDP, true) => Self::UDP_V6,
            _ => 0,
        }
    }

    /// The bit, in [`Eni::sg_open`], of all-open rules in direction `dir`.
    #[inline]
    pub fn open(protocol: u8, v6: bool, dir: Direction) -> u8 {
        match dir {
            Direction::Ingress => Self::bit(protocol, v6),
            Direction::Egress => Self::bit(protocol, v6) << 4,
        }
    }
}

impl Eni {
    /// True when `addr` is one of the ENI's own private addresses (IPv4 or IPv6).
    #[inline]
    pub fn owns(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.private_v4.contains(&a),
            IpAddr::V6(a) => self.ipv6.contains(&a),
        }
    }

    /// Its primary private IPv4 address; `None` for an ENI of an IPv6-only subnet.
    pub fn primary_v4(&self) -> Option<Ipv4Addr> {
        self.private_v4.first().copied()
    }
}

#[derive(Clone, Debug)]
pub struct NatGateway {
    pub id: Box<str>,
    /// Its translation zone: stable across configuration generations (see [`Vpc::zone`]).
    pub zone: u32,
    pub vpc: VpcIx,
    pub subnet: SubnetIx,
    pub eni: EniIx,
    pub private_ip: Ipv4Addr,
    /// The Elastic IP; `None` for `connectivity: private`.
    pub public_ip: Option<Ipv4Addr>,
    /// Failed by fault number `failed` (`aws:ec2:nat-gateway-failure`, its zone's power):
    /// its routes are blackholes (R-RT-BLACKHOLE) and replies to it are dropped
    /// (`FaultDisrupted`); 0 while it works.
    pub failed: u32,
}

#[derive(Clone, Debug)]
pub struct Peering {
    pub id: Box<str>,
    pub requester: VpcIx,
    pub accepter: VpcIx,
    /// Only `active` connections carry traffic (R-PCX-ACTIVE).
    pub active: bool,
    /// `allow_dns_resolution_from_remote_vpc`: the peer's public DNS names resolve to its
    /// private addresses.
    pub allow_dns: bool,
}

impl Peering {
    /// The VPC on the other side from `vpc`.
    pub fn peer_of(&self, vpc: VpcIx) -> VpcIx {
        if self.requester == vpc {
            self.accepter
        } else {
            self.requester
        }
    }
}

/// An inclusive port range; `ANY` matches every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { from: 0, to: 65535 };

    #[inline]
    pub fn contains(self, port: u16) -> bool {
        self.from <= port && port <= self.to
    }

    /// Every port.
    #[inline]
    pub fn is_all(self) -> bool {
        self.from == 0 && self.to == 65535
    }
}

/// One allow entry of a gateway endpoint policy (R-GWE-POLICY).
#[derive(Clone, Debug)]
pub struct PolicyRule {
    pub destination: IpNetwork,
    pub ports: PortRange,
}

#[derive(Clone, Debug)]
pub struct GatewayEndpoint {
    pub id: Box<str>,
    pub vpc: VpcIx,
    pub service: ServiceIx,
    /// `None`: the full-access default policy.
    pub policy: Option<Vec<PolicyRule>>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: Box<str>,
    pub prefix_list: Box<str>,
    /// Its public DNS name (R-IFE-DNS), if the lab gives one.
    pub dns_name: Option<Box<str>>,
    pub cidrs: Vec<IpNetwork>,
}

/// Which part of the simulated outside world a host belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    Internet,
    Service(ServiceIx),
    OnPremises,
    /// The AWS end of a VPN tunnel: on the simulated internet at the tunnel's outside
    /// address (the tunnel's own packets), and the way in and out of the tunnel for
    /// everything else (R-VPN-TUNNELS). Also the AWS end of a Direct Connect virtual
    /// interface, which is not on the internet: everything it sends is the site's.
    VpnEndpoint(TunnelIx),
}

/// One tunnel of a VPN connection (R-VPN-TUNNELS), or a Direct Connect private virtual
/// interface (R-DX-PRIVATE), at its virtual private gateway: both are a path to a site
/// with BGP (or static routes), chosen among by R-VPN-PRIORITY.
#[derive(Clone, Debug)]
pub struct VpnTunnel {
    /// The VPN connection's id, or the virtual interface's.
    pub vpn: Box<str>,
    /// 1 or 2 (a virtual interface: 1).
    pub number: u8,
    /// A Direct Connect virtual interface rather than a VPN tunnel.
    pub direct_connect: bool,
    /// The largest packet it carries: 1446 for a VPN tunnel (R-VPN-MTU), 1500 or 9001
    /// for a virtual interface.
    pub mtu: u16,
    /// The VPC whose VGW the connection ends at.
    pub vpc: VpcIx,
    /// Its AWS end: the host whose port carries the tunnel.
    pub host: HostIx,
    pub inside_aws: Ipv4Addr,
    pub inside_customer: Ipv4Addr,
    /// Non-zero: the id of the fault (`aws:vpn:tunnel-down`) that took it down.
    pub fault: u32,
}

/// A simulated outside host: one namespace, one port.
#[derive(Clone, Debug)]
pub struct Host {
    pub id: Box<str>,
    pub kind: HostKind,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub port: PortId,
}

/// What is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Eni(EniIx),
    Host(HostIx),
    /// A port number that a later configuration no longer uses (its instance was removed):
    /// port numbers stay stable across generations, so a removed one leaves a hole.
    Detached,
}

#[derive(Clone, Debug)]
pub struct Port {
    /// The namespace / instance / host id.
    pub name: Box<str>,
    pub attachment: Attachment,
}

/// Router-local destinations, answered inside vpcd and exempt from SGs, NACLs and flow
/// logs (R-ADDR-EXEMPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalService {
    /// A subnet's router address, base + 1 (R-ADDR-ROUTER).
    Router(SubnetIx),
    /// Amazon DNS at the VPC's base + 2, 169.254.169.253 or fd00:ec2::253 (R-ADDR-DNS).
    Dns,
    /// Instance metadata at 169.254.169.254 / fd00:ec2::254 (R-ADDR-IMDS).
    Metadata,
    /// Amazon Time Sync at 169.254.169.123 / fd00:ec2::123.
    TimeSync,
}

pub const DNS_LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const TIME_SYNC_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 123);
pub const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253);
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
pub const TIME_SYNC_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123);

/// Everything the lab file describes, compiled to indices. Built by the control path.
#[derive(Default)]
pub struct Topology {
    pub region: Box<str>,
    pub account_id: Box<str>,
    pub vpcs: Vec<Vpc>,
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub enis: Vec<Eni>,
    pub nat_gateways: Vec<NatGateway>,
    pub peerings: Vec<Peering>,
    pub gateway_endpoints: Vec<GatewayEndpoint>,
    pub services: Vec<Service>,
    pub hosts: Vec<Host>,
    pub ports: Vec<Port>,
    pub security_groups: Vec<SecurityGroup>,
    pub interface_endpoints: Vec<InterfaceEndpoint>,
    pub flow_logs: Vec<crate::flow_log::FlowLog>,
    /// Network ACLs; `counter_base` is set by [`Snapshot::new`].
    pub network_acls: Vec<NetworkAcl>,
    /// Traffic mirror filters, sessions and capture files (R-TM).
    pub traffic_mirror: crate::traffic_mirror::Mirroring,
    pub vpn_tunnels: Vec<VpnTunnel>,
    /// Each VGW's routes to sites: [`crate::route::Target::VpnTunnel`] targets only.
    pub vgw_routes: Vec<crate::route::RouteTable>,
}

/// The immutable configuration: the topology plus the maps the hot path looks up.
pub struct Snapshot {
    pub generation: u64,
    pub topo: Topology,
    /// Private address (IPv4 or IPv6) in a VPC → ENI.
    eni_by_addr: FxHashMap<(VpcIx, IpAddr), EniIx>,
    /// Public IPv4 → ENI, for the IGW's 1:1 translation (R-IGW-NAT).
    eni_by_public_v4: FxHashMap<Ipv4Addr, EniIx>,
    /// Flow-state zone → ENI: what NAT64 mappings name (stable across applies).
    eni_by_zone: FxHashMap<u32, EniIx>,
    /// Outside host by address.
    host_by_addr: FxHashMap<IpAddr, HostIx>,
    /// Router-local addresses inside VPCs (subnet routers, DNS).
    local_by_addr: FxHashMap<(VpcIx, IpAddr), LocalService>,
    /// Which VPC an IPv6 address from the internet belongs to (VPC IPv6 blocks are unique).
    vpc_by_v6: IpNetworkTable<VpcIx>,
    /// Which VPC with a VGW an address from on-premises belongs to.
    vgw_vpc_by_addr: IpNetworkTable<VpcIx>,
    /// (group, private address) for every member ENI of every group (R-SG-REF).
    sg_members: FxHashSet<(SgIx, IpAddr)>,
    /// Interface-endpoint ENIs by their address (addresses may repeat across VPCs).
    endpoint_enis_by_v4: FxHashMap<Ipv4Addr, Vec<EniIx>>,
    /// How many per-rule NACL counters the ACLs use.
    pub nacl_counters: u32,
}

impl Snapshot {
    /// Indexes a topology. The control path has validated it: indices are in range.
    pub fn new(mut topo: Topology, generation: u64) -> Snapshot {
        let mut nacl_counters = 0;
        for acl in &mut topo.network_acls {
            acl.prepare();
            acl.counter_base = nacl_counters;
            nacl_counters += acl.counters();
        }
        let mut sg_members = FxHashSet::default();
        for eni in &topo.enis {
            for sg in &eni.security_groups {
                for a in &eni.private_v4 {
                    sg_members.insert((*sg, IpAddr::V4(*a)));
                }
                for a in &eni.ipv6 {
                    sg_members.insert((*sg, IpAddr::V6(*a)));
                }
            }
        }
        let open: Vec<u8> = topo
            .enis
            .iter()
            // R-SG-UNTRACKED: flows through an interface endpoint (its own ENI) are
            // always tracked; a NAT gateway's ENI has no groups at all.
            .map(|e| match e.kind {
                EniKind::Instance => open_bits(&topo, &e.security_groups),
                _ => 0,
            })
            .collect();
        for (eni, bits) in topo.enis.iter_mut().zip(open) {
            eni.sg_open = bits;
        }
        let intervals: Vec<u32> = (0..topo.enis.len())
            .map(|i| {
                topo.flow_logs
                    .iter()
                    .filter(|l| covers(&topo, l, EniIx(i as u32)))
                    .map(|l| l.interval.max(1))
                    .min()
                    .unwrap_or(0)
            })
            .collect();
        for (eni, i) in topo.enis.iter_mut().zip(intervals) {
            eni.flow_log_interval = i;
        }
        let mut endpoint_enis_by_v4: FxHashMap<Ipv4Addr, Vec<EniIx>> = FxHashMap::default();
        for (i, e) in topo.enis.iter().enumerate() {
            if matches!(e.kind, EniKind::InterfaceEndpoint(_)) {
                for a in &e.private_v4 {
                    endpoint_enis_by_v4
                        .entry(*a)
                        .or_default()
                        .push(EniIx(i as u32));
                }
            }
        }
        let mut eni_by_addr = FxHashMap::default();
        let mut eni_by_public_v4 = FxHashMap::default();
        let eni_by_zone: FxHashMap<u32, EniIx> = topo
            .enis
            .iter()
            .enumerate()
            .map(|(i, e)| (e.zone, EniIx(i as u32)))
            .collect();
        for (i, eni) in topo.enis.iter().enumerate() {
            let ix = EniIx(i as u32);
            for a in &eni.private_v4 {
                eni_by_addr.insert((eni.vpc, IpAddr::V4(*a)), ix);
            }
            for a in &eni.ipv6 {
                eni_by_addr.insert((eni.vpc, IpAddr::V6(*a)), ix);
            }
            if let Some(p) = eni.public_v4 {
                eni_by_public_v4.insert(p, ix);
            }
        }
        let mut host_by_addr = FxHashMap::default();
        for (i, h) in topo.hosts.iter().enumerate() {
            let ix = HostIx(i as u32);
            if let Some(a) = h.ipv4 {
                host_by_addr.insert(IpAddr::V4(a), ix);
            }
            if let Some(a) = h.ipv6 {
                host_by_addr.insert(IpAddr::V6(a), ix);
            }
        }
        let mut local_by_addr = FxHashMap::default();
        for (i, s) in topo.subnets.iter().enumerate() {
            let svc = LocalService::Router(SubnetIx(i as u32));
            if let Some(r) = s.router_v4() {
                local_by_addr.insert((s.vpc, IpAddr::V4(r)), svc);
            }
            if let Some(r6) = s.router_v6() {
                local_by_addr.insert((s.vpc, IpAddr::V6(r6)), svc);
            }
        }
        let mut vpc_by_v6 = IpNetworkTable::new();
        let mut vgw_vpc_by_addr = IpNetworkTable::new();
        for (i, v) in topo.vpcs.iter().enumerate() {
            let ix = VpcIx(i as u32);
            if v.enable_dns_support {
                if let Some(d) = v.dns_v4() {
                    local_by_addr.insert((ix, IpAddr::V4(d)), LocalService::Dns);
                }
            }
            if let Some(c6) = v.cidr_v6 {
                vpc_by_v6.insert(c6, ix);
            }
            if v.virtual_private_gateway.is_some() {
                for c in &v.cidrs_v4 {
                    vgw_vpc_by_addr.insert(*c, ix);
                }
                if let Some(c6) = v.cidr_v6 {
                    vgw_vpc_by_addr.insert(c6, ix);
                }
            }
        }
        let enis = topo.enis.len();
        topo.traffic_mirror.index(enis);
        let mut snap = Snapshot {
            generation,
            topo,
            eni_by_addr,
            eni_by_public_v4,
            eni_by_zone,
            host_by_addr,
            local_by_addr,
            vpc_by_v6,
            vgw_vpc_by_addr,
            sg_members,
            endpoint_enis_by_v4,
            nacl_counters,
        };
        snap.admit_mirror_targets();
        snap
    }

    /// Works out, for each session with an instance target, whether the target lets the
    /// VXLAN in: the source subnet's NACL outbound and the target subnet's NACL inbound
    /// (when they differ), then the target's security groups inbound, for UDP to 4789
    /// from the source's address. AWS asks for that inbound rule; the answer depends only
    /// on addresses and ports, so once per snapshot is enough.
    fn admit_mirror_targets(&mut self) {
        let decisions: Vec<Option<Result<(), DropReason>>> = self
            .topo
            .traffic_mirror
            .sessions
            .iter()
            .map(|s| match s.target {
                crate::traffic_mirror::MirrorTarget::Eni { eni, .. } => {
                    Some(self.vxlan_admitted(s.source, eni))
                }
                crate::traffic_mirror::MirrorTarget::File(_) => None,
            })
            .collect();
        for (s, d) in self.topo.traffic_mirror.sessions.iter_mut().zip(decisions) {
            if let (crate::traffic_mirror::MirrorTarget::Eni { admitted, .. }, Some(d)) =
                (&mut s.target, d)
            {
                *admitted = d;
            }
        }
    }

    fn vxlan_admitted(&self, source: EniIx, target: EniIx) -> Result<(), DropReason> {
        let (s, t) = (self.eni(source), self.eni(target));
        let (Some(src), Some(dst)) = (s.primary_v4(), t.primary_v4()) else {
            return Err(DropReason::NoRoute);
        };
        // A UDP packet to 4789, as the copies will be (their source port varies; no
        // rule of an SG or a NACL looks at it).
        let mut b = [0u8; 28];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[8] = 64;
        b[9] = 17;
        b[12..16].copy_from_slice(&src.octets());
        b[16..20].copy_from_slice(&dst.octets());
        let c = crate::checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b[20..22].copy_from_slice(&49152u16.to_be_bytes());
        b[22..24].copy_from_slice(&crate::traffic_mirror::VXLAN_PORT.to_be_bytes());
        b[24..26].copy_from_slice(&8u16.to_be_bytes());
        let Ok(pkt) = crate::packet::Packet::parse(&b) else {
            return Err(DropReason::Malformed);
        };
        if s.subnet != t.subnet {
            let out = self.network_acl(self.subnet(s.subnet).network_acl);
            if !out.evaluate(crate::observer::Direction::Egress, &pkt).allow {
                return Err(DropReason::NaclEgress);
            }
            let inn = self.network_acl(self.subnet(t.subnet).network_acl);
            if !inn
                .evaluate(crate::observer::Direction::Ingress, &pkt)
                .allow
            {
                return Err(DropReason::NaclIngress);
            }
        }
        match crate::security_group::matching_rule(
            self,
            t,
            crate::observer::Direction::Ingress,
            &pkt,
        ) {
            Some(_) => Ok(()),
            None => Err(DropReason::SgIngress),
        }
    }

    /// The flow logs that cover an ENI (R-FL-SCOPE).
    pub fn flow_logs_of(&self, eni: EniIx) -> impl Iterator<Item = &crate::flow_log::FlowLog> {
        self.topo
            .flow_logs
            .iter()
            .filter(move |l| covers(&self.topo, l, eni))
    }

    /// The interface-endpoint ENIs that hold `addr` (one per VPC at most).
    #[inline]
    pub fn endpoint_enis(&self, addr: Ipv4Addr) -> &[EniIx] {
        self.endpoint_enis_by_v4
            .get(&addr)
            .map_or(&[], |v| v.as_slice())
    }

    #[inline]
    pub fn interface_endpoint(&self, ix: InterfaceEndpointIx) -> &InterfaceEndpoint {
        &self.topo.interface_endpoints[ix.ix()]
    }

    /// Whether `addr` is a private address of a member of `sg` (R-SG-REF).
    #[inline]
    pub fn sg_has_member(&self, sg: SgIx, addr: IpAddr) -> bool {
        self.sg_members.contains(&(sg, addr))
    }

    #[inline]
    pub fn security_group(&self, ix: SgIx) -> &SecurityGroup {
        &self.topo.security_groups[ix.ix()]
    }

    #[inline]
    pub fn network_acl(&self, ix: NaclIx) -> &NetworkAcl {
        &self.topo.network_acls[ix.ix()]
    }

    /// An empty snapshot: no ports, every packet dropped. What a router holds before its
    /// first configuration.
    pub fn empty() -> Snapshot {
        Snapshot::new(Topology::default(), 0)
    }

    #[inline]
    pub fn vpc(&self, ix: VpcIx) -> &Vpc {
        &self.topo.vpcs[ix.ix()]
    }
    #[inline]
    pub fn subnet(&self, ix: SubnetIx) -> &Subnet {
        &self.topo.subnets[ix.ix()]
    }
    #[inline]
    pub fn eni(&self, ix: EniIx) -> &Eni {
        &self.topo.enis[ix.ix()]
    }
    #[inline]
    pub fn route_table(&self, ix: RouteTableIx) -> &RouteTable {
        &self.topo.route_tables[ix.ix()]
    }
    #[inline]
    pub fn host(&self, ix: HostIx) -> &Host {
        &self.topo.hosts[ix.ix()]
    }
    #[inline]
    pub fn vpn_tunnel(&self, ix: TunnelIx) -> &VpnTunnel {
        &self.topo.vpn_tunnels[ix.ix()]
    }
    /// The VGW's routes to sites of a VPC, if it attaches one with VPN connections.
    #[inline]
    pub fn vgw_routes(&self, vpc: VpcIx) -> Option<&crate::route::RouteTable> {
        let ix = self.vpc(vpc).vgw_routes?;
        self.topo.vgw_routes.get(ix as usize)
    }
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.topo.ports.get(id.ix())
    }
    /// The port of the instance or outside host named `name` (`trace`, tests, benches).
    pub fn port_named(&self, name: &str) -> Option<PortId> {
        let i = self.topo.ports.iter().position(|p| &*p.name == name)?;
        Some(PortId(i as u32))
    }
    #[inline]
    pub fn peering(&self, ix: PeeringIx) -> &Peering {
        &self.topo.peerings[ix.ix()]
    }
    #[inline]
    pub fn nat_gateway(&self, ix: NatGatewayIx) -> &NatGateway {
        &self.topo.nat_gateways[ix.ix()]
    }
    #[inline]
    pub fn gateway_endpoint(&self, ix: GatewayEndpointIx) -> &GatewayEndpoint {
        &self.topo.gateway_endpoints[ix.ix()]
    }
    #[inline]
    pub fn service(&self, ix: ServiceIx) -> &Service {
        &self.topo.services[ix.ix()]
    }

    /// The ENI holding private address `addr` in `vpc`.
    #[inline]
    pub fn eni_by_addr(&self, vpc: VpcIx, addr: IpAddr) -> Option<EniIx> {
        self.eni_by_addr.get(&(vpc, addr)).copied()
    }

    /// The ENI whose flow-state zone is `zone`.
    #[inline]
    pub fn eni_by_zone(&self, zone: u32) -> Option<EniIx> {
        self.eni_by_zone.get(&zone).copied()
    }

    /// The ENI whose public IPv4 is `addr`.
    #[inline]
    pub fn eni_by_public_v4(&self, addr: Ipv4Addr) -> Option<EniIx> {
        self.eni_by_public_v4.get(&addr).copied()
    }

    /// The outside host holding `addr`.
    #[inline]
    pub fn host_by_addr(&self, addr: IpAddr) -> Option<HostIx> {
        self.host_by_addr.get(&addr).copied()
    }

    /// The VPC whose IPv6 block holds `addr`.
    #[inline]
    pub fn vpc_by_v6(&self, addr: Ipv6Addr) -> Option<VpcIx> {
        self.vpc_by_v6.longest_match_ipv6(addr).map(|(_, v)| *v)
    }

    /// The VPC with a VGW whose blocks hold `addr` (traffic from on-premises, R-VGW).
    #[inline]
    pub fn vgw_vpc_by_addr(&self, addr: IpAddr) -> Option<VpcIx> {
        self.vgw_vpc_by_addr.longest_match(addr).map(|(_, v)| *v)
    }

    /// The router-local service at `dst` for traffic from inside `vpc`, if any
    /// (R-ADDR-EXEMPT).
    #[inline]
    pub fn local_service(&self, vpc: VpcIx, dst: IpAddr) -> Option<LocalService> {
        let fixed = match dst {
            IpAddr::V4(DNS_LINK_LOCAL) | IpAddr::V6(DNS_V6) if self.vpc(vpc).enable_dns_support => {
                Some(LocalService::Dns)
            }
            IpAddr::V4(METADATA_V4) | IpAddr::V6(METADATA_V6) => Some(LocalService::Metadata),
            IpAddr::V4(TIME_SYNC_V4) | IpAddr::V6(TIME_SYNC_V6) => Some(LocalService::TimeSync),
            _ => None,
        };
        fixed.or_else(|| self.local_by_addr.get(&(vpc, dst)).copied())
    }
}

/// Whether flow log `l` covers ENI `eni` (R-FL-SCOPE).
fn covers(topo: &Topology, l: &crate::flow_log::FlowLog, eni: EniIx) -> bool {
    use crate::flow_log::Scope;
    let e = &topo.enis[eni.ix()];
    match l.scope {
        Scope::Vpc(v) => e.vpc == v,
        Scope::Subnet(s) => e.subnet == s,
        Scope::Eni(x) => x == eni,
    }
}

/// R-SG-UNTRACKED for one ENI: for each of TCP and UDP, each family and each direction,
/// is there a rule allowing all its ports for the whole address space?
fn open_bits(topo: &Topology, groups: &[SgIx]) -> u8 {
    let mut bits = 0;
    for protocol in [proto::TCP, proto::UDP] {
        for v6 in [false, true] {
            for dir in [Direction::Ingress, Direction::Egress] {
                let open = groups.iter().any(|g| {
                    topo.security_groups[g.ix()]
                        .rules(dir)
                        .iter()
                        .any(|r| r.proto.covers_all_of(protocol) && r.peer.is_everything(v6))
                });
                if open {
                    bits |= Untracked::open(protocol, v6, dir);
                }
            }
        }
    }
    bits
}

/// Where the current snapshot is published: workers `load` it once per batch without a
/// lock; the control thread `store`s a new one.
pub struct SnapshotCell(ArcSwap<Snapshot>);

impl SnapshotCell {
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotCell(ArcSwap::from_pointee(snapshot))
    }

    /// The current snapshot. Cheap (no reference count traffic in the common case); hold
    /// the guard for one batch, not longer.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// Publishes a new snapshot; workers see it from their next batch on.
    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }

    /// Publishes a new snapshot and hands back the old one. The caller keeps it a moment
    /// before dropping it, so that freeing a big configuration happens on the control
    /// thread, never on a worker that happened to hold the last reference.
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.0.swap(snapshot)
    }
}
