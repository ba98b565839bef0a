//! The AWS rules a lab must follow before it can run (`vpcd check`).
//!
//! Everything AWS would refuse at the API is refused here, with the place and the fix:
//! ids (unique, right kind, right VPC), CIDR sizes, containment and overlaps, reserved
//! addresses (R-ADDR-RESERVED), local routes (R-RT-LOCAL), targets, NACL rule numbers, SG
//! limits (R-SG-LIMIT), connection-tracking bounds (R-SG-TIMEOUT), EIGW family (R-EIGW),
//! NAT gateway placement, peering overlaps (R-PCX-OVERLAP), endpoints and flow logs.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};

use dataplane::route::net_contains;

use crate::diag::{closest, Diagnostics, Loc, S};
use crate::model::*;
use crate::values::Protocol;

/// What kind of object an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Vpc,
    Subnet,
    RouteTable,
    NetworkAcl,
    SecurityGroup,
    InternetGateway,
    EgressOnlyInternetGateway,
    VirtualPrivateGateway,
    NatGateway,
    GatewayEndpoint,
    InterfaceEndpoint,
    Instance,
    FlowLog,
    Peering,
    PrefixList,
    Service,
    Host,
    TrafficMirrorFilter,
    TrafficMirrorTarget,
    TrafficMirrorSession,
    Site,
    CustomerGateway,
    VpnConnection,
    DxConnection,
    DxGateway,
    VirtualInterface,
}

impl Kind {
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Vpc => "VPC",
            Kind::Subnet => "subnet",
            Kind::RouteTable => "route table",
            Kind::NetworkAcl => "network ACL",
            Kind::SecurityGroup => "security group",
            Kind::InternetGateway => "internet gateway",
            Kind::EgressOnlyInternetGateway => "egress-only internet gateway",
            Kind::VirtualPrivateGateway => "virtual private gateway",
            Kind::NatGateway => "NAT gateway",
            Kind::GatewayEndpoint => "gateway endpoint",
            Kind::InterfaceEndpoint => "interface endpoint",
            Kind::Instance => "instance",
            Kind::FlowLog => "flow log",
            Kind::Peering => "peering connection",
            Kind::PrefixList => "prefix list",
            Kind::Service => "service",
            Kind::Host => "host",
            Kind::TrafficMirrorFilter => "traffic mirror filter",
            Kind::TrafficMirrorTarget => "traffic mirror target",
            Kind::TrafficMirrorSession => "traffic mirror session",
            Kind::Site => "site",
            Kind::CustomerGateway => "customer gateway",
            Kind::VpnConnection => "VPN connection",
            Kind::DxConnection => "Direct Connect connection",
            Kind::DxGateway => "Direct Connect gateway",
            Kind::VirtualInterface => "virtual interface",
        }
    }
}

/// An id's object: its kind, its VPC (by index) and where it was defined.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub vpc: Option<usize>,
    pub at: Loc,
}

/// Ids `main` (route table) and `default` (NACL, SG) name a VPC's implicit objects, so
/// each VPC may have its own: they are scoped to their VPC.
fn vpc_scoped(id: &str) -> bool {
    id == "main" || id == "default"
}

/// Every id of the lab, to resolve references.
#[derive(Default)]
pub struct Registry {
    global: HashMap<String, Entry>,
    /// `main` and `default` per VPC and kind: a VPC's `default` NACL and `default` SG are
    /// two objects.
    scoped: HashMap<(usize, String, Kind), Entry>,
    broken: HashSet<String>,
    /// VPC id → its index (the first, if the id is used twice).
    vpc_ix: HashMap<String, usize>,
    /// Pairs of VPC indices joined by a peering connection (any status), lower first.
    peered: HashSet<(usize, usize)>,
}

impl Registry {
    pub(crate) fn define(
        &mut self,
        diags: &mut Diagnostics,
        id: &S<String>,
        kind: Kind,
        vpc: Option<usize>,
    ) {
        let entry = Entry {
            kind,
            vpc,
            at: id.at.clone(),
        };
        let previous = match (vpc, vpc_scoped(&id.v)) {
            (Some(v), true) => self.scoped.insert((v, id.v.clone(), kind), entry),
            _ => self.global.insert(id.v.clone(), entry),
        };
        if let Some(prev) = previous {
            diags.error(
                &id.at,
                format!(
                    "the id `{}` is already used by the {} at line {}",
                    id.v,
                    prev.kind.noun(),
                    prev.at.line
                ),
                "give every object its own id",
            );
        }
    }

    /// Looks `name` up, seen from `vpc`: a VPC's own `main` or `default` of one of
    /// `kinds` (any kind when `kinds` is empty), else the lab-wide id.
    pub fn get(&self, name: &str, vpc: Option<usize>, kinds: &[Kind]) -> Option<&Entry> {
        if let (Some(v), true) = (vpc, vpc_scoped(name)) {
            let found = self
                .scoped
                .iter()
                .filter(|((sv, sn, k), _)| {
                    *sv == v && sn == name && (kinds.is_empty() || kinds.contains(k))
                })
                .map(|(_, e)| e)
                .next();
            if found.is_some() {
                return found;
            }
        }
        self.global.get(name)
    }

    /// Resolves a reference: it must exist, be of one of `kinds`, and (with `same_vpc`)
    /// belong to that VPC. Reports and returns `None` otherwise; a reference to an object
    /// that failed to decode is silently `None` (its own error is already reported).
    pub(crate) fn resolve(
        &self,
        diags: &mut Diagnostics,
        r: &S<String>,
        kinds: &[Kind],
        same_vpc: Option<usize>,
    ) -> Option<&Entry> {
        let wanted = if kinds.len() > 3 {
            "route target (gateway, NAT gateway, peering, endpoint or instance)".to_string()
        } else {
            kinds
                .iter()
                .map(|k| k.noun())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let Some(e) = self.get(&r.v, same_vpc, kinds) else {
            if self.broken.contains(&r.v) {
                return None;
            }
            if !diags.wants(&r.at) {
                // Only counted: the closest id (a scan of every id) is not looked for.
                diags.error(&r.at, format!("no {wanted} has the id `{}`", r.v), "");
                return None;
            }
            let candidates: Vec<&str> = self
                .global
                .iter()
                .filter(|(_, e)| kinds.contains(&e.kind))
                .map(|(k, _)| k.as_str())
                .collect();
            let fix = match closest(&r.v, &candidates) {
                Some(c) => format!("did you mean `{c}`?"),
                None if candidates.is_empty() => format!("define the {wanted} first"),
                None => {
                    let mut c = candidates.clone();
                    c.sort();
                    format!("use one of: {}", c.join(", "))
                }
            };
            diags.error(&r.at, format!("no {wanted} has the id `{}`", r.v), fix);
            return None;
        };
        if !kinds.contains(&e.kind) {
            diags.error(
                &r.at,
                format!(
                    "`{}` is a {} (line {}), but a {wanted} is needed here",
                    r.v,
                    e.kind.noun(),
                    e.at.line
                ),
                format!("name a {wanted}"),
            );
            return None;
        }
        if let (Some(want), Some(have)) = (same_vpc, e.vpc) {
            if want != have {
                diags.error(
                    &r.at,
                    format!("the {} `{}` belongs to another VPC", e.kind.noun(), r.v),
                    format!("name a {wanted} of this VPC"),
                );
                return None;
            }
        }
        Some(e)
    }
}

/// Checks the whole lab, reporting every problem. Returns the registry of ids (used by
/// the compiler to resolve references the same way).
pub fn validate(lab: &Lab, diags: &mut Diagnostics) -> Registry {
    let mut reg = Registry {
        broken: lab.broken.iter().cloned().collect(),
        ..Registry::default()
    };
    if let Some(v) = &lab.version {
        if v.v != 1 {
            diags.error(
                &v.at,
                format!("version {} is not known", v.v),
                "write `version: 1`",
            );
        }
    }
    define_all(lab, &mut reg, diags);
    // What is readable of objects that could not be decoded: their ids take part in the
    // duplicate check and resolve references; their own references are checked.
    for p in &lab.partial {
        if let Some(id) = &p.id {
            reg.define(diags, id, p.kind, None);
        }
    }
    for p in &lab.partial {
        for (r, kinds) in &p.refs {
            reg.resolve(diags, r, kinds, None);
        }
    }
    let mut addrs = AddressBook::default();
    for (vi, vpc) in lab.vpcs.iter().enumerate() {
        check_vpc(lab, &reg, diags, vi, vpc, &mut addrs);
    }
    check_peerings(lab, &reg, diags);
    crate::traffic_mirror::check(lab, &reg, diags);
    crate::vpn::check(lab, &reg, diags);
    check_outside(lab, diags, &mut addrs);
    if let Err(e) = crate::public_ips::assign(lab) {
        let at = lab
            .vpcs
            .iter()
            .flat_map(|v| v.instances.iter())
            .find(|i| i.id.v == e.instance)
            .map(|i| i.id.at.clone())
            .unwrap_or_default();
        diags.error(
            &at,
            format!(
                "`{}` gets a public IP at launch (its subnet maps them), but the pool {} has no free address left",
                e.instance, e.pool
            ),
            "set `internet.public_ip_pool` to a larger block, or give the instance a `public_ip`",
        );
    }
    reg
}

fn define_all(lab: &Lab, reg: &mut Registry, diags: &mut Diagnostics) {
    for (vi, vpc) in lab.vpcs.iter().enumerate() {
        reg.vpc_ix.entry(vpc.id.v.clone()).or_insert(vi);
    }
    for p in &lab.peering_connections {
        if let (Some(&a), Some(&b)) = (
            reg.vpc_ix.get(&p.requester_vpc.v),
            reg.vpc_ix.get(&p.accepter_vpc.v),
        ) {
            reg.peered.insert((a.min(b), a.max(b)));
        }
    }
    for (vi, vpc) in lab.vpcs.iter().enumerate() {
        let v = Some(vi);
        reg.define(diags, &vpc.id, Kind::Vpc, None);
        for (gw, kind) in [
            (&vpc.internet_gateway, Kind::InternetGateway),
            (
                &vpc.egress_only_internet_gateway,
                Kind::EgressOnlyInternetGateway,
            ),
            (&vpc.virtual_private_gateway, Kind::VirtualPrivateGateway),
        ] {
            if let Some(id) = gw {
                reg.define(diags, id, kind, v);
            }
        }
        vpc.subnets
            .iter()
            .for_each(|s| reg.define(diags, &s.id, Kind::Subnet, v));
        vpc.route_tables
            .iter()
            .for_each(|t| reg.define(diags, &t.id, Kind::RouteTable, v));
        vpc.network_acls
            .iter()
            .for_each(|a| reg.define(diags, &a.id, Kind::NetworkAcl, v));
        vpc.security_groups
            .iter()
            .for_each(|g| reg.define(diags, &g.id, Kind::SecurityGroup, v));
        vpc.nat_gateways
            .iter()
            .for_each(|n| reg.define(diags, &n.id, Kind::NatGateway, v));
        for e in &vpc.endpoints {
            let kind = match e.kind {
                EndpointKind::Gateway { .. } => Kind::GatewayEndpoint,
                EndpointKind::Interface { .. } => Kind::InterfaceEndpoint,
            };
            reg.define(diags, &e.id, kind, v);
        }
        vpc.instances
            .iter()
            .for_each(|i| reg.define(diags, &i.id, Kind::Instance, v));
        vpc.flow_logs
            .iter()
            .for_each(|f| reg.define(diags, &f.id, Kind::FlowLog, v));
        // The implicit objects, unless the lab names them itself.
        let implicit = |reg: &mut Registry, id: &str, kind: Kind| {
            reg.scoped
                .entry((vi, id.to_string(), kind))
                .or_insert(Entry {
                    kind,
                    vpc: v,
                    at: vpc.at.clone(),
                });
        };
        implicit(reg, "main", Kind::RouteTable);
        implicit(reg, "default", Kind::SecurityGroup);
    }
    for p in &lab.peering_connections {
        reg.define(diags, &p.id, Kind::Peering, None);
    }
    for s in &lab.services {
        reg.define(diags, &s.name, Kind::Service, None);
        reg.define(diags, &s.prefix_list, Kind::PrefixList, None);
        s.hosts
            .iter()
            .for_each(|h| reg.define(diags, &h.id, Kind::Host, None));
    }
    lab.internet
        .iter()
        .for_each(|h| reg.define(diags, &h.id, Kind::Host, None));
    if let Some(op) = &lab.on_premises {
        op.hosts
            .iter()
            .for_each(|h| reg.define(diags, &h.id, Kind::Host, None));
    }
    crate::traffic_mirror::define(&lab.traffic_mirror, reg, diags);
    crate::vpn::define(&lab.vpn, reg, diags);
}

/// Who holds each address, to refuse duplicates: private addresses per VPC, public ones
/// (Elastic IPs, outside hosts) across the lab.
#[derive(Default)]
struct AddressBook {
    private: HashMap<(usize, IpAddr), (String, Loc)>,
    public: HashMap<IpAddr, (String, Loc)>,
}

impl AddressBook {
    fn claim<K: std::hash::Hash + Eq>(
        diags: &mut Diagnostics,
        map: &mut HashMap<K, (String, Loc)>,
        key: K,
        owner: &str,
        addr: IpAddr,
        at: &Loc,
    ) {
        if let Some((prev, prev_at)) = map.get(&key) {
            diags.error(
                at,
                format!(
                    "{addr} is already taken by `{prev}` (line {})",
                    prev_at.line
                ),
                "pick a free address",
            );
        } else {
            map.insert(key, (owner.to_string(), at.clone()));
        }
    }

    fn private(
        &mut self,
        diags: &mut Diagnostics,
        vpc: usize,
        owner: &str,
        addr: IpAddr,
        at: &Loc,
    ) {
        Self::claim(diags, &mut self.private, (vpc, addr), owner, addr, at);
    }

    fn public(&mut self, diags: &mut Diagnostics, owner: &str, addr: IpAddr, at: &Loc) {
        Self::claim(diags, &mut self.public, addr, owner, addr, at);
    }

    /// Whether a private address of VPC `vpc` is claimed already.
    fn is_taken(&self, vpc: usize, a: Ipv4Addr) -> bool {
        self.private.contains_key(&(vpc, IpAddr::V4(a)))
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(a), IpNetwork::V4(b)) => {
            a.contains(b.network_address()) || b.contains(a.network_address())
        }
        (IpNetwork::V6(a), IpNetwork::V6(b)) => {
            a.contains(b.network_address()) || b.contains(a.network_address())
        }
        _ => false,
    }
}

/// AWS's "IPv4 CIDR block association restrictions" (VPC User Guide, VPC CIDR blocks):
/// which secondary blocks a VPC may take, by the range its primary block is in. `None`
/// when permitted, else why not.
///
/// | primary in       | restricted secondary blocks                                    |
/// | 10.0.0.0/8       | 172.16.0.0/12, 192.168.0.0/16, 198.19.0.0/16; 10.0.0.0/16 if the primary is in 10.0.0.0/15 |
/// | 172.16.0.0/12    | 10.0.0.0/8, 192.168.0.0/16, 172.31.0.0/16, 198.19.0.0/16        |
/// | 192.168.0.0/16   | 10.0.0.0/8, 172.16.0.0/12, 198.19.0.0/16                        |
/// | 198.19.0.0/16    | the RFC 1918 ranges                                            |
/// | anything else (public, 100.64.0.0/10) | the RFC 1918 ranges, 198.19.0.0/16        |
pub fn secondary_restriction(primary: Ipv4Network, secondary: Ipv4Network) -> Option<String> {
    let net = |s: &str| -> IpNetwork { s.parse().expect("constant range") };
    let (p, s): (IpNetwork, IpNetwork) = (primary.into(), secondary.into());
    let inside = |n: IpNetwork, range: &str| within(n, net(range));
    let touches = |range: &str| overlaps(s, net(range));
    let rfc1918 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    let home = rfc1918.iter().find(|r| inside(p, r)).copied();
    let other_private = rfc1918
        .iter()
        .filter(|r| Some(**r) != home)
        .find(|r| touches(r));
    if let (Some(home), Some(r)) = (home, other_private) {
        return Some(format!(
            "it is in {r}, another private (RFC 1918) range than the primary's {home}"
        ));
    }
    if home.is_none() && !inside(p, "198.19.0.0/16") {
        if let Some(r) = rfc1918.iter().find(|r| touches(r)) {
            return Some(format!("the primary is not private (RFC 1918), and {r} is"));
        }
    }
    if inside(p, "198.19.0.0/16") {
        if let Some(r) = rfc1918.iter().find(|r| touches(r)) {
            return Some(format!("a 198.19.0.0/16 primary takes no block of {r}"));
        }
    } else if touches("198.19.0.0/16") {
        return Some("198.19.0.0/16 is restricted unless the primary is in it".into());
    }
    if home == Some("10.0.0.0/8") && inside(p, "10.0.0.0/15") && touches("10.0.0.0/16") {
        return Some("a primary in 10.0.0.0/15 takes no block of 10.0.0.0/16".into());
    }
    if home == Some("172.16.0.0/12") && touches("172.31.0.0/16") {
        return Some("a primary in 172.16.0.0/12 takes no block of 172.31.0.0/16".into());
    }
    None
}

/// A network as the range of addresses it covers (IPv4 in the low 32 bits).
fn span(n: IpNetwork) -> (u128, u128) {
    match n {
        IpNetwork::V4(n) => (
            u32::from(n.network_address()).into(),
            u32::from(n.broadcast_address()).into(),
        ),
        IpNetwork::V6(n) => {
            let lo = u128::from(n.network_address());
            let host = u128::MAX.checked_shr(u32::from(n.netmask())).unwrap_or(0);
            (lo, lo | host)
        }
    }
}

/// Overlapping networks of one family, as (later, earlier) indices into `nets`: each
/// later network at most once, named with one earlier network it overlaps; whenever two
/// networks overlap, at least one pair is reported. A sweep over the networks sorted by
/// start, O(n log n): checking every pair cost 11 s and 3.5 GB for 4,000 copies of one
/// subnet (issue 22).
fn overlapping(nets: &[IpNetwork]) -> Vec<(usize, usize)> {
    let spans: Vec<(u128, u128)> = nets.iter().map(|n| span(*n)).collect();
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&i| (spans[i].0, std::cmp::Reverse(spans[i].1), i));
    let mut pairs = Vec::new();
    // The network reaching furthest among those already swept.
    let mut reach: Option<usize> = None;
    for &i in &order {
        match reach {
            Some(r) if spans[i].0 <= spans[r].1 => {
                pairs.push((i.max(r), i.min(r)));
                if spans[i].1 > spans[r].1 {
                    reach = Some(i);
                }
            }
            _ => reach = Some(i),
        }
    }
    pairs.sort_unstable();
    pairs.dedup_by_key(|p| p.0);
    pairs
}

/// True when `inner` lies entirely inside `outer`.
pub fn within(inner: IpNetwork, outer: IpNetwork) -> bool {
    overlaps(inner, outer) && inner.netmask() >= outer.netmask()
}

/// R-ADDR-RESERVED for IPv4: network, +1 router, +2 DNS, +3 reserved, broadcast.
fn reserved_v4(subnet: Ipv4Network, a: Ipv4Addr) -> Option<&'static str> {
    let off = u32::from(a) - u32::from(subnet.network_address());
    match off {
        0 => Some("the network address"),
        1 => Some("the VPC router's address (base+1)"),
        2 => Some("the Amazon DNS address (base+2)"),
        3 => Some("reserved by AWS (base+3)"),
        _ if a == subnet.broadcast_address() => Some("the last address of the subnet"),
        _ => None,
    }
}

/// R-ADDR-RESERVED for IPv6: the first four addresses and the last one.
fn reserved_v6(subnet: Ipv6Network, a: Ipv6Addr) -> bool {
    let base = u128::from(subnet.network_address());
    let off = u128::from(a) - base;
    let size = if subnet.netmask() == 0 {
        u128::MAX
    } else {
        (1u128 << (128 - subnet.netmask())) - 1
    };
    off < 4 || off == size
}

fn first_free_v4(subnet: Ipv4Network, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let base = u32::from(subnet.network_address());
    (4..u32::from(subnet.broadcast_address()) - base)
        .map(|o| Ipv4Addr::from(base + o))
        .find(|a| !taken(*a))
}

fn check_vpc(
    lab: &Lab,
    reg: &Registry,
    diags: &mut Diagnostics,
    vi: usize,
    vpc: &Vpc,
    addrs: &mut AddressBook,
) {
    let v = Some(vi);
    // VPC blocks: /16 to /28, no overlap between them.
    let blocks: Vec<&S<Ipv4Network>> = vpc.cidrs_v4().collect();
    for b in &vpc.secondary_cidr_blocks {
        if let Some(why) = secondary_restriction(vpc.cidr_block.v, b.v) {
            diags.error(
                &b.at,
                format!(
                    "{} cannot be added to a VPC whose primary block is {}: {why}",
                    b.v, vpc.cidr_block.v
                ),
                "choose a block AWS permits with this primary (VPC CIDR blocks, \"IPv4 CIDR block association restrictions\")",
            );
        }
    }
    for b in &blocks {
        let special: [(&str, &str); 5] = [
            ("0.0.0.0/8", "\"this network\""),
            ("127.0.0.0/8", "loopback"),
            (
                "169.254.0.0/16",
                "link-local (AWS's own services live there)",
            ),
            ("224.0.0.0/4", "multicast"),
            ("240.0.0.0/4", "reserved"),
        ];
        for (range, what) in special {
            let r: IpNetwork = range.parse().expect("constant range");
            if overlaps(b.v.into(), r) {
                diags.error(
                    &b.at,
                    format!(
                        "{} overlaps {range}, the {what} range, which AWS refuses for VPCs",
                        b.v
                    ),
                    "use a private range such as 10.0.0.0/16",
                );
            }
        }
        if !(16..=28).contains(&b.v.netmask()) {
            diags.error(
                &b.at,
                format!("a VPC block must be /16 to /28, not /{}", b.v.netmask()),
                "choose a prefix length from 16 to 28",
            );
        }
    }
    let nets: Vec<IpNetwork> = blocks.iter().map(|b| b.v.into()).collect();
    for (i, j) in overlapping(&nets) {
        diags.error(
            &blocks[i].at,
            format!("{} overlaps the VPC's block {}", blocks[i].v, blocks[j].v),
            "use a block that does not overlap the others",
        );
    }
    if let Some(c6) = &vpc.ipv6_cidr_block {
        if c6.v.netmask() != 56 {
            diags.error(
                &c6.at,
                format!("a VPC's IPv6 block is a /56, not /{}", c6.v.netmask()),
                "use a /56 such as 2001:db8:10::/56",
            );
        }
    }
    let in_vpc = |n: IpNetwork| match n {
        IpNetwork::V4(_) => blocks.iter().any(|b| within(n, b.v.into())),
        IpNetwork::V6(_) => vpc
            .ipv6_cidr_block
            .as_ref()
            .is_some_and(|c| within(n, c.v.into())),
    };

    // Subnets: no two overlap, IPv4 or IPv6.
    let v4: Vec<(&Subnet, &S<Ipv4Network>)> = vpc
        .subnets
        .iter()
        .filter_map(|s| Some((s, s.cidr_block.as_ref()?)))
        .collect();
    let nets: Vec<IpNetwork> = v4.iter().map(|(_, c)| c.v.into()).collect();
    for (i, j) in overlapping(&nets) {
        let ((_, c), (other, oc)) = (v4[i], v4[j]);
        diags.error(
            &c.at,
            format!("{} overlaps subnet `{}` ({})", c.v, other.id.v, oc.v),
            "give each subnet its own range",
        );
    }
    let v6: Vec<(&Subnet, &S<Ipv6Network>)> = vpc
        .subnets
        .iter()
        .filter_map(|s| Some((s, s.ipv6_cidr_block.as_ref()?)))
        .collect();
    let nets: Vec<IpNetwork> = v6.iter().map(|(_, c)| c.v.into()).collect();
    for (i, j) in overlapping(&nets) {
        diags.error(
            &v6[i].1.at,
            format!("{} overlaps subnet `{}`", v6[i].1.v, v6[j].0.id.v),
            "give each subnet its own /64",
        );
    }
    let mut mains = Vec::new();
    for s in &vpc.subnets {
        if let Some(cb) = &s.cidr_block {
            let c = cb.v;
            if !(16..=28).contains(&c.netmask()) {
                diags.error(
                    &cb.at,
                    format!("a subnet must be /16 to /28, not /{}", c.netmask()),
                    "choose a prefix length from 16 to 28",
                );
            }
            if !in_vpc(c.into()) {
                let list = blocks
                    .iter()
                    .map(|b| b.v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                diags.error(
                    &cb.at,
                    format!("{c} is not inside the VPC's blocks ({list})"),
                    "choose a CIDR inside one of the VPC's blocks",
                );
            }
        }
        if let Some(c6) = &s.ipv6_cidr_block {
            match &vpc.ipv6_cidr_block {
                None => diags.error(
                    &c6.at,
                    "the subnet has an IPv6 block but its VPC has none",
                    "add `ipv6_cidr_block` to the VPC, or remove this one",
                ),
                Some(vc) if !within(c6.v.into(), vc.v.into()) => diags.error(
                    &c6.at,
                    format!("{} is not inside the VPC's IPv6 block {}", c6.v, vc.v),
                    "choose a /64 inside the VPC's /56",
                ),
                _ => {}
            }
            if c6.v.netmask() != 64 {
                diags.error(
                    &c6.at,
                    format!("a subnet's IPv6 block is a /64, not /{}", c6.v.netmask()),
                    "use a /64",
                );
            }
        }
        if let Some(az) = &s.availability_zone {
            let ok = az.v.len() > lab.region.v.len()
                && az.v.starts_with(lab.region.v.as_str())
                && az.v[lab.region.v.len()..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase());
            if !ok {
                diags.error(
                    &az.at,
                    format!("`{}` is not an availability zone of {}", az.v, lab.region.v),
                    format!("use a zone such as {}a", lab.region.v),
                );
            }
        }
        if let Some(rt) = &s.route_table {
            reg.resolve(diags, rt, &[Kind::RouteTable], v);
        }
        if let Some(acl) = &s.network_acl {
            if acl.v != "default" {
                reg.resolve(diags, acl, &[Kind::NetworkAcl], v);
            }
        }
    }

    // Route tables.
    for t in &vpc.route_tables {
        if t.main.as_ref().is_some_and(|m| m.v) {
            mains.push(t);
        }
        check_routes(lab, reg, diags, vi, vpc, t, &in_vpc);
    }
    if mains.len() > 1 {
        for t in &mains[1..] {
            diags.error(
                &t.at,
                format!(
                    "`{}` is a second main route table (the first is `{}`)",
                    t.id.v, mains[0].id.v
                ),
                "mark one route table `main: true`",
            );
        }
    }

    // Network ACLs (R-NACL-ORDER: rule numbers 1 to 32766, unique per direction).
    for acl in &vpc.network_acls {
        for (dir, rules) in [("inbound", &acl.inbound), ("outbound", &acl.outbound)] {
            let mut seen: HashMap<u64, &Loc> = HashMap::new();
            for r in rules {
                if !(1..=32766).contains(&r.rule.v) {
                    diags.error(
                        &r.rule.at,
                        format!("rule number {} is out of range", r.rule.v),
                        "use a number from 1 to 32766",
                    );
                }
                if let Some(prev) = seen.insert(r.rule.v, &r.rule.at) {
                    diags.error(
                        &r.rule.at,
                        format!(
                            "{dir} rule {} is already defined at line {}",
                            r.rule.v, prev.line
                        ),
                        "give each rule its own number",
                    );
                }
                check_rule_shape(
                    diags,
                    &r.protocol,
                    &r.port_range,
                    &r.icmp_type,
                    &r.icmp_code,
                );
                let fam_ok = match (r.cidr.v, r.protocol.v) {
                    (IpNetwork::V4(_), p) => p != Protocol::ICMPV6,
                    (IpNetwork::V6(_), p) => p != Protocol::ICMP,
                };
                if !fam_ok {
                    diags.error(
                        &r.protocol.at,
                        "icmp goes with `cidr` (IPv4) and icmpv6 with `ipv6_cidr` (IPv6)",
                        "match the protocol to the address family",
                    );
                }
            }
        }
    }

    // Security groups.
    for sg in &vpc.security_groups {
        let rules = sg.inbound.iter().chain(sg.outbound.iter().flatten());
        for r in rules {
            check_rule_shape(
                diags,
                &r.protocol,
                &r.port_range,
                &r.icmp_type,
                &r.icmp_code,
            );
            match &r.peer.v {
                Peer::Cidr(_) => {}
                Peer::SecurityGroup(id) => {
                    let s = S::new(id.clone(), r.peer.at.clone());
                    // `default` is this VPC's own default group.
                    let scope = vpc_scoped(id).then_some(vi);
                    if let Some(e) = reg.resolve(diags, &s, &[Kind::SecurityGroup], scope) {
                        // R-SG-REF: this VPC or a peered one.
                        if let Some(other) = e.vpc {
                            if other != vi && !peered(reg, vi, other) {
                                diags.error(
                                    &r.peer.at,
                                    format!(
                                        "`{id}` belongs to a VPC that is not peered with this one"
                                    ),
                                    "reference an SG of this VPC or of a peered VPC",
                                );
                            }
                        }
                    }
                }
                Peer::PrefixList(id) => {
                    reg.resolve(
                        diags,
                        &S::new(id.clone(), r.peer.at.clone()),
                        &[Kind::PrefixList],
                        None,
                    );
                }
            }
        }
    }

    // Instances.
    for inst in &vpc.instances {
        let subnet = reg
            .resolve(diags, &inst.subnet, &[Kind::Subnet], v)
            .and_then(|_| vpc.subnets.iter().find(|s| s.id.v == inst.subnet.v));
        let v6_only = subnet.is_some_and(|s| s.cidr_block.is_none());
        match (&inst.private_ip, subnet) {
            (None, Some(s)) if !v6_only => {
                let example = s
                    .cidr_block
                    .as_ref()
                    .and_then(|c| first_free_v4(c.v, |a| addrs.is_taken(vi, a)))
                    .map_or("10.0.1.10".to_string(), |a| a.to_string());
                diags.error(
                    &inst.at,
                    "the required field `private_ip` is missing",
                    format!("add `private_ip: {example}`"),
                );
            }
            (Some(ip), Some(s)) if v6_only => diags.error(
                &ip.at,
                format!(
                    "subnet `{}` is IPv6-only: its instances have no IPv4 address",
                    s.id.v
                ),
                "remove `private_ip`, or give the subnet a `cidr_block`",
            ),
            _ => {}
        }
        if v6_only && inst.ipv6_address.is_none() {
            diags.error(
                &inst.at,
                "an instance of an IPv6-only subnet needs an `ipv6_address`",
                "add `ipv6_address` inside the subnet's /64",
            );
        }
        for ip in inst
            .private_ip
            .iter()
            .chain(inst.secondary_private_ips.iter())
        {
            if let Some(s) = subnet {
                check_private_v4(diags, s, ip, "the instance");
            }
            addrs.private(diags, vi, &inst.id.v, IpAddr::V4(ip.v), &ip.at);
        }
        if let Some(ip6) = &inst.ipv6_address {
            match subnet.and_then(|s| s.ipv6_cidr_block.as_ref()) {
                Some(c6) if !c6.v.contains(ip6.v) => diags.error(
                    &ip6.at,
                    format!("{} is not inside the subnet's IPv6 block {}", ip6.v, c6.v),
                    "choose an address inside the subnet's /64",
                ),
                Some(c6) if reserved_v6(c6.v, ip6.v) => diags.error(
                    &ip6.at,
                    format!(
                        "{} is reserved by AWS (the first four and the last address of a subnet)",
                        ip6.v
                    ),
                    "choose another address",
                ),
                None if subnet.is_some() => diags.error(
                    &ip6.at,
                    "the subnet has no IPv6 block",
                    "add `ipv6_cidr_block` to the subnet, or remove `ipv6_address`",
                ),
                _ => {}
            }
            addrs.private(diags, vi, &inst.id.v, IpAddr::V6(ip6.v), &ip6.at);
        }
        if let Some(p) = &inst.public_ip {
            if vpc.internet_gateway.is_none() {
                diags.error(
                    &p.at,
                    "a public IP works only through an internet gateway, and the VPC has none",
                    "add `internet_gateway` to the VPC, or remove `public_ip`",
                );
            }
            addrs.public(diags, &inst.id.v, IpAddr::V4(p.v), &p.at);
        }
        // R-HA-NATI, R-ADDR-SRCDST: an instance that forwards for others needs its
        // source/destination check off, or AWS drops what it forwards.
        if let (Some(image), true) = (&inst.image, inst.source_dest_check) {
            diags.error(
                &image.at,
                format!(
                    "an instance with `image: {}` forwards for others, but its source/destination check is on",
                    if image.v == Image::Nat { "nat" } else { "router" }
                ),
                "add `source_dest_check: false` (R-ADDR-SRCDST, R-HA-NATI)",
            );
        }
        if inst.security_groups.len() > 5 {
            diags.error(
                &inst.security_groups[5].at,
                format!(
                    "an ENI has at most 5 security groups, this one has {}",
                    inst.security_groups.len()
                ),
                "merge rules into fewer groups (R-SG-LIMIT)",
            );
        }
        for g in &inst.security_groups {
            reg.resolve(diags, g, &[Kind::SecurityGroup], v);
        }
        if let Some(ct) = &inst.connection_tracking {
            for (val, lo, hi, name) in [
                (
                    &ct.tcp_established_timeout,
                    60,
                    432000,
                    "tcp_established_timeout",
                ),
                (&ct.udp_stream_timeout, 60, 180, "udp_stream_timeout"),
                (&ct.udp_timeout, 30, 60, "udp_timeout"),
            ] {
                if let Some(x) = val {
                    if !(lo..=hi).contains(&x.v) {
                        diags.error(
                            &x.at,
                            format!("{name} {} is outside AWS's bounds", x.v),
                            format!("use {lo} to {hi} seconds (R-SG-TIMEOUT)"),
                        );
                    }
                }
            }
        }
    }

    // NAT gateways.
    for nat in &vpc.nat_gateways {
        let Some(s) = reg
            .resolve(diags, &nat.subnet, &[Kind::Subnet], v)
            .and_then(|_| vpc.subnets.iter().find(|s| s.id.v == nat.subnet.v))
        else {
            continue;
        };
        match &nat.private_ip {
            Some(ip) => {
                check_private_v4(diags, s, ip, "the NAT gateway");
                addrs.private(diags, vi, &nat.id.v, IpAddr::V4(ip.v), &ip.at);
            }
            None => {
                let taken = |a: Ipv4Addr| addrs.private.contains_key(&(vi, IpAddr::V4(a)));
                match s.cidr_block.as_ref().map(|c| first_free_v4(c.v, taken)) {
                    Some(Some(a)) => addrs.private(diags, vi, &nat.id.v, IpAddr::V4(a), &nat.at),
                    Some(None) => diags.error(
                        &nat.at,
                        format!("subnet `{}` has no free address", s.id.v),
                        "use a larger subnet",
                    ),
                    None => diags.error(
                        &nat.subnet.at,
                        format!(
                            "subnet `{}` is IPv6-only, and a NAT gateway needs an IPv4 address",
                            s.id.v
                        ),
                        "put the NAT gateway in a subnet with a `cidr_block`",
                    ),
                }
            }
        }
        if let Some(p) = &nat.public_ip {
            addrs.public(diags, &nat.id.v, IpAddr::V4(p.v), &p.at);
        }
        // AWS creates a NAT gateway in any subnet; in one without a route to the internet
        // gateway its internet traffic is dropped: the classic mistake, allowed, warned.
        if !nat.private_connectivity && !subnet_routes_to_igw(vpc, s) {
            diags.warn(
                &nat.subnet.at,
                format!("public NAT gateway `{}` is in subnet `{}`, whose route table sends no 0.0.0.0/0 to an internet gateway: its traffic to the internet will be dropped", nat.id.v, s.id.v),
                "put it in a public subnet, or add `{ destination: 0.0.0.0/0, target: <igw> }` to that subnet's route table",
            );
        }
    }

    // Endpoints.
    for ep in &vpc.endpoints {
        let service = lab.services.iter().find(|s| s.name.v == ep.service.v);
        if service.is_none() {
            reg.resolve(diags, &ep.service, &[Kind::Service], None);
        }
        match &ep.kind {
            EndpointKind::Gateway {
                route_tables,
                policy,
            } => {
                for rt in route_tables {
                    reg.resolve(diags, rt, &[Kind::RouteTable], v);
                }
                for a in policy.iter().flatten() {
                    if let (Some(svc), false) = (
                        service,
                        service.is_some_and(|s| {
                            s.cidr_blocks.iter().any(|c| overlaps(c.v, a.destination.v))
                        }),
                    ) {
                        diags.error(
                            &a.destination.at,
                            format!(
                                "{} is outside the service `{}`",
                                a.destination.v, svc.name.v
                            ),
                            "allow a destination inside the service's cidr_blocks",
                        );
                    }
                }
            }
            EndpointKind::Interface {
                subnets,
                security_groups,
                ..
            } => {
                // R-SG-LIMIT: an endpoint's ENIs are ENIs too.
                if security_groups.len() > 5 {
                    diags.error(
                        &security_groups[5].at,
                        format!(
                            "an ENI has at most 5 security groups, this endpoint has {}",
                            security_groups.len()
                        ),
                        "merge rules into fewer groups (R-SG-LIMIT)",
                    );
                }
                if subnets.is_empty() {
                    diags.error(
                        &ep.at,
                        "an interface endpoint needs at least one subnet",
                        "add `subnets: [private-a]`",
                    );
                }
                for s in subnets {
                    if reg.resolve(diags, s, &[Kind::Subnet], v).is_some() {
                        let v6_only = vpc
                            .subnets
                            .iter()
                            .any(|x| x.id.v == s.v && x.cidr_block.is_none());
                        if v6_only {
                            diags.error(
                                &s.at,
                                format!("subnet `{}` is IPv6-only; vpcd's interface endpoints need an IPv4 address in each subnet", s.v),
                                "name subnets with a `cidr_block`",
                            );
                        }
                    }
                }
                for g in security_groups {
                    reg.resolve(diags, g, &[Kind::SecurityGroup], v);
                }
            }
        }
    }

    // Flow logs.
    for fl in &vpc.flow_logs {
        let resolved = reg.resolve(
            diags,
            &fl.resource,
            &[Kind::Vpc, Kind::Subnet, Kind::Instance],
            None,
        );
        // A VPC's flow logs cover it, its subnets or its instances.
        let owner = resolved.and_then(|e| match e.kind {
            Kind::Vpc => reg.vpc_ix.get(&fl.resource.v).copied(),
            _ => e.vpc,
        });
        if owner.is_some_and(|o| o != vi) {
            diags.error(
                &fl.resource.at,
                format!(
                    "`{}` belongs to another VPC than {}, where this flow log is defined",
                    fl.resource.v, vpc.id.v
                ),
                "define the flow log under the VPC that holds the resource",
            );
        }
        if fl.max_aggregation_interval.v == 0 {
            diags.error(
                &fl.max_aggregation_interval.at,
                "the aggregation interval must be at least 1 second",
                "use 60 or 600 as AWS does",
            );
        }
        if fl.log_format.v != "default" {
            check_log_format(diags, &fl.log_format);
        }
        if fl.destination.v.trim().is_empty() {
            diags.error(
                &fl.destination.at,
                "the flow log destination is empty",
                "write a file path such as flowlogs/lab.log",
            );
        }
    }
}

fn check_log_format(diags: &mut Diagnostics, fmt: &S<String>) {
    let mut rest = fmt.v.as_str();
    let mut any = false;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            diags.error(&fmt.at, "a `${` is not closed", "write fields as ${name}");
            return;
        };
        let name = &rest[start + 2..start + end];
        if !dataplane::flow_log::FIELDS.contains(&name) {
            let fix = match closest(name, dataplane::flow_log::FIELDS) {
                Some(c) => format!("did you mean `${{{c}}}`?"),
                None => "use AWS flow-log field names such as ${srcaddr}".to_string(),
            };
            diags.error(&fmt.at, format!("`{name}` is not a flow-log field"), fix);
        }
        any = true;
        rest = &rest[start + end + 1..];
    }
    if !any {
        diags.error(
            &fmt.at,
            "the log format names no field",
            "use `default` or fields such as \"${srcaddr} ${dstaddr} ${action}\"",
        );
    }
}

fn check_rule_shape(
    diags: &mut Diagnostics,
    protocol: &S<Protocol>,
    ports: &Option<S<(u16, u16)>>,
    icmp_type: &Option<S<Option<u8>>>,
    icmp_code: &Option<S<Option<u8>>>,
) {
    if let Some(p) = ports {
        if !protocol.v.has_ports() {
            diags.error(
                &p.at,
                "ports apply only to tcp and udp",
                "remove `port_range`, or use protocol tcp or udp",
            );
        }
    }
    for x in [icmp_type, icmp_code].into_iter().flatten() {
        if !protocol.v.is_icmp() {
            diags.error(
                &x.at,
                "icmp_type and icmp_code apply only to icmp and icmpv6",
                "remove them, or use protocol icmp",
            );
        }
    }
}

/// An instance's or NAT gateway's private IPv4: inside its subnet, not reserved.
fn check_private_v4(diags: &mut Diagnostics, s: &Subnet, ip: &S<Ipv4Addr>, what: &str) {
    let Some(cidr) = s.cidr_block.as_ref().map(|c| c.v) else {
        diags.error(
            &ip.at,
            format!("subnet `{}` is IPv6-only: it has no IPv4 addresses", s.id.v),
            format!("give {what} no IPv4 address, or put it in a subnet with a `cidr_block`"),
        );
        return;
    };
    if !cidr.contains(ip.v) {
        diags.error(
            &ip.at,
            format!("{} is not inside subnet `{}` ({cidr})", ip.v, s.id.v),
            format!("give {what} an address inside {cidr}"),
        );
    } else if let Some(why) = reserved_v4(cidr, ip.v) {
        let first = Ipv4Addr::from(u32::from(cidr.network_address()).saturating_add(4));
        diags.error(
            &ip.at,
            format!(
                "{} is {why}, one of the five addresses AWS reserves in every subnet",
                ip.v
            ),
            format!("use {first} or a later address (R-ADDR-RESERVED)"),
        );
    }
}

fn subnet_routes_to_igw(vpc: &Vpc, s: &Subnet) -> bool {
    let Some(igw) = &vpc.internet_gateway else {
        return false;
    };
    let table = match &s.route_table {
        Some(rt) => vpc.route_tables.iter().find(|t| t.id.v == rt.v),
        None => vpc
            .route_tables
            .iter()
            .find(|t| t.main.as_ref().is_some_and(|m| m.v)),
    };
    table.is_some_and(|t| {
        t.routes.iter().any(|r| r.target.v == igw.v && matches!(r.destination.v, Destination::Cidr(IpNetwork::V4(n)) if n.netmask() == 0))
    })
}

fn peered(reg: &Registry, a: usize, b: usize) -> bool {
    reg.peered.contains(&(a.min(b), a.max(b)))
}

#[allow(clippy::too_many_arguments)]
fn check_routes(
    lab: &Lab,
    reg: &Registry,
    diags: &mut Diagnostics,
    vi: usize,
    vpc: &Vpc,
    t: &RouteTable,
    in_vpc: &dyn Fn(IpNetwork) -> bool,
) {
    let v = Some(vi);
    let mut seen: HashMap<String, &Loc> = HashMap::new();
    for r in &t.routes {
        let key = match &r.destination.v {
            Destination::Cidr(n) => n.to_string(),
            Destination::PrefixList(p) => p.clone(),
        };
        if let Some(prev) = seen.insert(key.clone(), &r.destination.at) {
            diags.error(
                &r.destination.at,
                format!(
                    "the table already has a route for {key} (line {})",
                    prev.line
                ),
                "keep one route per destination",
            );
        }
        // The target: the word blackhole, or an object of this VPC (or a peering of it).
        // With `state: blackhole` it was deleted: it need not exist (R-RT-BLACKHOLE).
        let deleted = r.blackhole && reg.get(&r.target.v, v, &[]).is_none();
        let target = if deleted {
            None
        } else if r.target.v == "blackhole" || r.target.v == "local" {
            if r.target.v == "local" {
                diags.error(
                    &r.target.at,
                    "local routes are implicit and cannot be written",
                    "remove this route (R-RT-LOCAL)",
                );
            }
            None
        } else {
            let kinds = [
                Kind::InternetGateway,
                Kind::EgressOnlyInternetGateway,
                Kind::VirtualPrivateGateway,
                Kind::NatGateway,
                Kind::Peering,
                Kind::GatewayEndpoint,
                Kind::Instance,
            ];
            let same = reg
                .get(&r.target.v, v, &[])
                .filter(|e| e.kind != Kind::Peering)
                .map(|_| vi);
            reg.resolve(diags, &r.target, &kinds, same).map(|e| e.kind)
        };
        match &r.destination.v {
            Destination::Cidr(n) => {
                let n = *n;
                // R-RT-LOCAL: the local route cannot be replaced; routes inside the VPC may
                // only point to an ENI (middlebox routing).
                let is_block = vpc.cidrs_v4().any(|b| IpNetwork::from(b.v) == n)
                    || vpc
                        .ipv6_cidr_block
                        .as_ref()
                        .is_some_and(|c| IpNetwork::from(c.v) == n);
                // AWS (Route tables, "Subnet route tables"): the local route's target may
                // be replaced, and a route more specific than it added for a whole
                // subnet's CIDR, with a network interface, a NAT gateway or a Gateway Load
                // Balancer / firewall endpoint as target (middlebox inspection).
                let middlebox = matches!(target, Some(Kind::Instance | Kind::NatGateway));
                let reserved: IpNetwork = "169.254.168.0/22".parse().expect("constant");
                if within(n, reserved) {
                    diags.error(
                        &r.destination.at,
                        format!(
                            "{n} lies in 169.254.168.0/22, which AWS reserves for its own services"
                        ),
                        "route another destination (AWS refuses routes there)",
                    );
                }
                if is_block && !middlebox && !deleted {
                    diags.error(&r.destination.at, format!("{n} is a VPC block: its local route is implicit; only its target may be replaced, by an instance (ENI) or a NAT gateway"), "remove this route, or target an appliance (R-RT-LOCAL)");
                } else if is_block {
                    // Replaces the local route's target: all of the VPC goes through it.
                } else if in_vpc(n) && !middlebox && !deleted {
                    diags.error(&r.destination.at, format!("{n} lies inside the VPC: a route more specific than the local route may only point to an instance (ENI) or a NAT gateway"), "remove it, or target an appliance (R-RT-LOCAL)");
                } else if in_vpc(n) {
                    // AWS: a middlebox route's destination must be a whole subnet's CIDR.
                    let whole_subnet = vpc.subnets.iter().any(|s| {
                        s.cidr_block
                            .as_ref()
                            .is_some_and(|c| IpNetwork::from(c.v) == n)
                            || s.ipv6_cidr_block
                                .as_ref()
                                .is_some_and(|c| IpNetwork::from(c.v) == n)
                    });
                    if !whole_subnet {
                        diags.error(&r.destination.at, format!("{n} is not the CIDR of a subnet of this VPC"), "a route to an appliance inside the VPC must name a whole subnet's CIDR");
                    }
                }
                if target == Some(Kind::EgressOnlyInternetGateway) && n.is_ipv4() {
                    diags.error(
                        &r.destination.at,
                        "an egress-only internet gateway carries IPv6 only",
                        "route \"::/0\" to it, and IPv4 to a NAT gateway (R-EIGW)",
                    );
                }
                let nat64: IpNetwork = "64:ff9b::/96".parse().expect("constant");
                if target == Some(Kind::NatGateway) && !n.is_ipv4() && !within(n, nat64) {
                    diags.error(
                        &r.destination.at,
                        "a NAT gateway translates IPv4, and IPv6 only to 64:ff9b::/96 (NAT64)",
                        "route 64:ff9b::/96 to it for NAT64, and other IPv6 to the egress-only internet gateway",
                    );
                }
                if target == Some(Kind::GatewayEndpoint) {
                    diags.error(
                        &r.destination.at,
                        "a gateway endpoint's route destination is its service's prefix list",
                        "write the prefix-list id (pl-...) as destination",
                    );
                }
            }
            Destination::PrefixList(pl) => {
                let s = S::new(pl.clone(), r.destination.at.clone());
                reg.resolve(diags, &s, &[Kind::PrefixList], None);
                let cidrs: Vec<IpNetwork> = lab
                    .services
                    .iter()
                    .filter(|s| s.prefix_list.v == *pl)
                    .flat_map(|s| s.cidr_blocks.iter().map(|c| c.v))
                    .collect();
                if target == Some(Kind::EgressOnlyInternetGateway)
                    && cidrs.iter().any(|c| c.is_ipv4())
                {
                    diags.error(&r.destination.at, format!("{pl} holds IPv4 blocks, and an egress-only internet gateway carries IPv6 only"), "route this prefix list elsewhere (R-EIGW)");
                }
                if target == Some(Kind::NatGateway) && cidrs.iter().any(|c| !c.is_ipv4()) {
                    diags.error(
                        &r.destination.at,
                        format!("{pl} holds IPv6 blocks, and a NAT gateway translates IPv4 only"),
                        "route this prefix list elsewhere",
                    );
                }
                if target == Some(Kind::GatewayEndpoint) {
                    let ep = vpc.endpoints.iter().find(|e| e.id.v == r.target.v);
                    let svc =
                        ep.and_then(|e| lab.services.iter().find(|s| s.name.v == e.service.v));
                    if let Some(svc) = svc {
                        if svc.prefix_list.v != *pl {
                            diags.error(
                                &r.destination.at,
                                format!(
                                    "endpoint `{}` serves {}, not {pl}",
                                    r.target.v, svc.prefix_list.v
                                ),
                                format!("use {} as destination", svc.prefix_list.v),
                            );
                        }
                    }
                }
            }
        }
        if target == Some(Kind::Peering) {
            if let Some(p) = lab
                .peering_connections
                .iter()
                .find(|p| p.id.v == r.target.v)
            {
                if p.requester_vpc.v != vpc.id.v && p.accepter_vpc.v != vpc.id.v {
                    diags.error(
                        &r.target.at,
                        format!(
                            "the peering connection `{}` does not involve {}",
                            p.id.v, vpc.id.v
                        ),
                        "route to a peering connection of this VPC",
                    );
                }
            }
        }
    }
}

fn check_peerings(lab: &Lab, reg: &Registry, diags: &mut Diagnostics) {
    let mut pairs: HashMap<(usize, usize), &S<String>> = HashMap::new();
    for p in &lab.peering_connections {
        let a = reg
            .resolve(diags, &p.requester_vpc, &[Kind::Vpc], None)
            .and_then(|_| reg.vpc_ix.get(&p.requester_vpc.v).copied());
        let b = reg
            .resolve(diags, &p.accepter_vpc, &[Kind::Vpc], None)
            .and_then(|_| reg.vpc_ix.get(&p.accepter_vpc.v).copied());
        let (Some(a), Some(b)) = (a, b) else { continue };
        if a == b {
            diags.error(
                &p.accepter_vpc.at,
                "a VPC cannot peer with itself",
                "name two different VPCs",
            );
            continue;
        }
        let key = (a.min(b), a.max(b));
        if let Some(prev) = pairs.insert(key, &p.id) {
            diags.error(
                &p.id.at,
                format!("these VPCs are already peered by `{}`", prev.v),
                "keep one peering connection per pair of VPCs (R-PCX-OVERLAP)",
            );
        }
        // R-PCX-OVERLAP: no overlapping blocks, IPv4 or IPv6.
        let (va, vb) = (&lab.vpcs[a], &lab.vpcs[b]);
        let nets = |v: &Vpc| -> Vec<IpNetwork> {
            v.cidrs_v4()
                .map(|c| c.v.into())
                .chain(v.ipv6_cidr_block.as_ref().map(|c| c.v.into()))
                .collect()
        };
        for x in nets(va) {
            for y in nets(vb) {
                if overlaps(x, y) {
                    diags.error(
                        &p.id.at,
                        format!(
                            "{} ({x}) and {} ({y}) overlap, so they cannot be peered",
                            va.id.v, vb.id.v
                        ),
                        "give the VPCs distinct blocks (R-PCX-OVERLAP)",
                    );
                }
            }
        }
    }
}

fn check_outside(lab: &Lab, diags: &mut Diagnostics, addrs: &mut AddressBook) {
    // Public IPs (instances' and NAT gateways') live on the simulated internet: never
    // inside a VPC, a service or on-premises.
    let mut inside: Vec<(IpNetwork, String)> = Vec::new();
    for v in &lab.vpcs {
        inside.extend(
            v.cidrs_v4()
                .map(|c| (IpNetwork::from(c.v), format!("{}'s block", v.id.v))),
        );
    }
    for s in &lab.services {
        inside.extend(
            s.cidr_blocks
                .iter()
                .map(|c| (c.v, format!("service {}'s block", s.name.v))),
        );
    }
    if let Some(op) = &lab.on_premises {
        inside.extend(
            op.cidr_blocks
                .iter()
                .map(|c| (c.v, "the on-premises block".to_string())),
        );
    }
    let publics = lab.vpcs.iter().flat_map(|v| {
        v.instances
            .iter()
            .filter_map(|i| i.public_ip.as_ref())
            .chain(v.nat_gateways.iter().filter_map(|n| n.public_ip.as_ref()))
    });
    // The pool public IPs are given from at launch lies on the internet too.
    if let Some(pool) = &lab.public_ip_pool {
        if let Some((n, what)) = inside.iter().find(|(n, _)| overlaps(*n, pool.v.into())) {
            diags.error(
                &pool.at,
                format!("the public IP pool {} overlaps {what} ({n})", pool.v),
                "use a block of the simulated internet, such as 198.51.100.0/24",
            );
        }
    }
    for p in publics {
        if let Some((n, what)) = inside
            .iter()
            .find(|(n, _)| net_contains(n, IpAddr::V4(p.v)))
        {
            diags.error(
                &p.at,
                format!("the public IP {} lies inside {what} ({n})", p.v),
                "use an address of the simulated internet, such as 198.51.100.0/24",
            );
        }
    }
    for s in &lab.services {
        for c in &s.cidr_blocks {
            for v in &lab.vpcs {
                let vnets = v
                    .cidrs_v4()
                    .map(|b| IpNetwork::from(b.v))
                    .chain(v.ipv6_cidr_block.as_ref().map(|b| b.v.into()));
                for n in vnets {
                    if overlaps(c.v, n) {
                        diags.error(
                            &c.at,
                            format!("{} overlaps {}'s block {n}", c.v, v.id.v),
                            "a service's blocks lie outside every VPC",
                        );
                    }
                }
            }
        }
    }
    let vpc_nets: Vec<(IpNetwork, &str)> = lab
        .vpcs
        .iter()
        .flat_map(|v| {
            v.cidrs_v4()
                .map(|c| IpNetwork::from(c.v))
                .chain(v.ipv6_cidr_block.as_ref().map(|c| c.v.into()))
                .map(move |n| (n, v.id.v.as_str()))
        })
        .collect();
    let mut host = |h: &OutsideHost, allowed: Option<&[S<IpNetwork>]>, what: &str| {
        for a in h
            .ipv4
            .as_ref()
            .map(|a| (IpAddr::V4(a.v), &a.at))
            .into_iter()
            .chain(h.ipv6.as_ref().map(|a| (IpAddr::V6(a.v), &a.at)))
        {
            if let Some((n, vpc)) = vpc_nets.iter().find(|(n, _)| net_contains(n, a.0)) {
                diags.error(
                    a.1,
                    format!("{} lies inside {vpc}'s block {n}", a.0),
                    format!("give the {what} an address outside every VPC"),
                );
            }
            if let Some(nets) = allowed {
                if !nets.iter().any(|n| net_contains(&n.v, a.0)) {
                    diags.error(
                        a.1,
                        format!("{} is outside the {what}'s cidr_blocks", a.0),
                        "add its block to cidr_blocks, or change the address",
                    );
                }
            }
            addrs.public(diags, &h.id.v, a.0, a.1);
        }
    };
    for h in &lab.internet {
        host(h, None, "internet host");
    }
    for s in &lab.services {
        for h in &s.hosts {
            host(h, Some(&s.cidr_blocks), "service host");
        }
    }
    if let Some(op) = &lab.on_premises {
        for h in &op.hosts {
            host(h, Some(&op.cidr_blocks), "on-premises host");
        }
        for c in &op.cidr_blocks {
            for (n, vpc) in &vpc_nets {
                if overlaps(c.v, *n) {
                    diags.error(
                        &c.at,
                        format!("{} overlaps {vpc}'s block {n}", c.v),
                        "on-premises and VPC ranges must not overlap",
                    );
                }
            }
        }
    }
}
