//! The lab file as typed values (../shared/spec/config.md), each with its location.
//!
//! An object whose fields cannot all be read is left out of the model, its id remembered
//! in [`Lab::broken`] so that references to it do not pile up more errors. What can still
//! be read of it (its id, its references to other objects) is kept in [`Lab::partial`] and
//! checked like the rest, so that one pass of `check` finds every mistake (issue 21): a
//! broken subnet's unknown route table is reported now, not after the subnet is fixed. A
//! CIDR with host bits set is an error, but the object keeps the prefix that was meant.
//! Every problem found is a diagnostic; `check` prints them all.

use std::net::{Ipv4Addr, Ipv6Addr};

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use marked_yaml::Node;

use crate::diag::{Diagnostics, Loc, S};
use crate::validate::Kind;
use crate::values::{self as val, Protocol};
use crate::yaml::{Decoder, Map};

#[derive(Clone, Debug, Default)]
pub struct Lab {
    pub version: Option<S<u64>>,
    pub region: S<String>,
    pub account_id: S<String>,
    pub vpcs: Vec<Vpc>,
    pub peering_connections: Vec<PeeringConnection>,
    pub internet: Vec<OutsideHost>,
    /// vpcd extension of config.md (`internet.public_ip_pool`): where instances of subnets
    /// with `map_public_ip_on_launch` get their public IPv4 (AWS's Amazon pool).
    pub public_ip_pool: Option<S<ip_network::Ipv4Network>>,
    pub services: Vec<Service>,
    pub on_premises: Option<OnPremises>,
    /// Ids of objects that could not be decoded (their errors are reported).
    pub broken: Vec<String>,
    /// What could be read of those objects, checked too.
    pub partial: Vec<Partial>,
    /// What `check` found likely wrong though AWS allows it (set by [`crate::check_text`]).
    pub warnings: Vec<crate::Diagnostic>,
    /// Traffic mirror filters, targets and sessions (R-TM).
    pub traffic_mirror: crate::traffic_mirror::TrafficMirror,
    /// VGW settings, sites, customer gateways and VPN connections (hybrid.md).
    pub vpn: crate::vpn::Vpn,
    /// What the running lab adds to the file: tunnels up or down, routes BGP learned.
    /// Empty when the lab is read from a file.
    pub vpn_state: crate::vpn::VpnState,
}

/// What is readable of an object that could not be decoded whole.
#[derive(Clone, Debug)]
pub struct Partial {
    pub kind: Kind,
    pub id: Option<S<String>>,
    /// Its references to other objects, each with the kinds it may name.
    pub refs: Vec<(S<String>, &'static [Kind])>,
}

/// The fields that refer to other objects, and what they may name.
const REFERENCES: &[(&str, &[Kind])] = &[
    ("subnet", &[Kind::Subnet]),
    ("subnets", &[Kind::Subnet]),
    ("route_table", &[Kind::RouteTable]),
    ("route_tables", &[Kind::RouteTable]),
    ("network_acl", &[Kind::NetworkAcl]),
    ("security_groups", &[Kind::SecurityGroup]),
    ("service", &[Kind::Service]),
    ("resource", &[Kind::Vpc, Kind::Subnet, Kind::Instance]),
    ("requester_vpc", &[Kind::Vpc]),
    ("accepter_vpc", &[Kind::Vpc]),
    ("site", &[Kind::Site]),
    ("customer_gateway", &[Kind::CustomerGateway]),
    ("connection", &[Kind::DxConnection]),
];

/// The objects a VPC holds, by list and kind.
const VPC_LISTS: &[(&str, Kind)] = &[
    ("subnets", Kind::Subnet),
    ("route_tables", Kind::RouteTable),
    ("network_acls", Kind::NetworkAcl),
    ("security_groups", Kind::SecurityGroup),
    ("nat_gateways", Kind::NatGateway),
    ("endpoints", Kind::GatewayEndpoint),
    ("instances", Kind::Instance),
    ("flow_logs", Kind::FlowLog),
];

// The fields each object accepts: its decoder's list of known fields (an unknown field is
// an error that names the closest of them). `accepted_fields` lists them for the docs.
const LAB_FIELDS: &[&str] = &[
    "version",
    "region",
    "account_id",
    "vpcs",
    "peering_connections",
    "internet",
    "services",
    "on_premises",
    "traffic_mirror_filters",
    "traffic_mirror_targets",
    "traffic_mirror_sessions",
    "virtual_private_gateways",
    "sites",
    "customer_gateways",
    "vpn_connections",
    "direct_connect",
];
const INTERNET_FIELDS: &[&str] = &["hosts", "public_ip_pool"];
const SERVICE_FIELDS: &[&str] = &["name", "prefix_list", "cidr_blocks", "dns_name", "hosts"];
const ON_PREMISES_FIELDS: &[&str] = &["cidr_blocks", "hosts"];
const HOST_FIELDS: &[&str] = &["id", "ipv4", "ipv6"];
const PEERING_FIELDS: &[&str] = &[
    "id",
    "requester_vpc",
    "accepter_vpc",
    "status",
    "allow_dns_resolution_from_remote_vpc",
];
const VPC_FIELDS: &[&str] = &[
    "id",
    "cidr_block",
    "secondary_cidr_blocks",
    "ipv6_cidr_block",
    "enable_dns_support",
    "internet_gateway",
    "egress_only_internet_gateway",
    "virtual_private_gateway",
    "subnets",
    "route_tables",
    "network_acls",
    "security_groups",
    "nat_gateways",
    "endpoints",
    "instances",
    "flow_logs",
];
const SUBNET_FIELDS: &[&str] = &[
    "id",
    "cidr_block",
    "ipv6_cidr_block",
    "availability_zone",
    "route_table",
    "network_acl",
    "map_public_ip_on_launch",
    "enable_dns64",
];
const ROUTE_TABLE_FIELDS: &[&str] = &["id", "main", "routes", "propagating_vgws"];
const ROUTE_FIELDS: &[&str] = &["destination", "target", "state"];
const NETWORK_ACL_FIELDS: &[&str] = &["id", "inbound", "outbound"];
const NACL_RULE_FIELDS: &[&str] = &[
    "rule",
    "action",
    "protocol",
    "port_range",
    "icmp_type",
    "icmp_code",
    "cidr",
    "ipv6_cidr",
];
const SECURITY_GROUP_FIELDS: &[&str] = &["id", "description", "inbound", "outbound"];
const SG_INBOUND_RULE_FIELDS: &[&str] = &[
    "protocol",
    "port_range",
    "icmp_type",
    "icmp_code",
    "source",
    "description",
];
const SG_OUTBOUND_RULE_FIELDS: &[&str] = &[
    "protocol",
    "port_range",
    "icmp_type",
    "icmp_code",
    "destination",
    "description",
];
const NAT_GATEWAY_FIELDS: &[&str] = &["id", "subnet", "private_ip", "public_ip", "connectivity"];
const ENDPOINT_FIELDS: &[&str] = &[
    "id",
    "type",
    "service",
    "route_tables",
    "policy",
    "subnets",
    "security_groups",
    "private_dns",
];
const POLICY_FIELDS: &[&str] = &["allow"];
const POLICY_ALLOW_FIELDS: &[&str] = &["destination", "port_range"];
const INSTANCE_FIELDS: &[&str] = &[
    "id",
    "subnet",
    "private_ip",
    "secondary_private_ips",
    "ipv6_address",
    "public_ip",
    "security_groups",
    "source_dest_check",
    "connection_tracking",
    "http_tokens",
    "user_data",
    "image",
];
const CONNECTION_TRACKING_FIELDS: &[&str] = &[
    "tcp_established_timeout",
    "udp_stream_timeout",
    "udp_timeout",
];
const FLOW_LOG_FIELDS: &[&str] = &[
    "id",
    "resource",
    "traffic_type",
    "max_aggregation_interval",
    "log_format",
    "destination",
];

/// Every object of the lab file, by its path (`vpcs[].subnets[]`; `(top level)` for the
/// file itself), with the fields its decoder accepts: what docs/lab-file.md documents.
pub fn accepted_fields() -> Vec<(&'static str, Vec<&'static str>)> {
    [
        ("(top level)", LAB_FIELDS),
        ("internet", INTERNET_FIELDS),
        ("internet.hosts[]", HOST_FIELDS),
        ("services[]", SERVICE_FIELDS),
        ("services[].hosts[]", HOST_FIELDS),
        ("on_premises", ON_PREMISES_FIELDS),
        ("on_premises.hosts[]", HOST_FIELDS),
        ("peering_connections[]", PEERING_FIELDS),
        ("vpcs[]", VPC_FIELDS),
        ("vpcs[].subnets[]", SUBNET_FIELDS),
        ("vpcs[].route_tables[]", ROUTE_TABLE_FIELDS),
        ("vpcs[].route_tables[].routes[]", ROUTE_FIELDS),
        ("vpcs[].network_acls[]", NETWORK_ACL_FIELDS),
        ("vpcs[].network_acls[].inbound[]", NACL_RULE_FIELDS),
        ("vpcs[].network_acls[].outbound[]", NACL_RULE_FIELDS),
        ("vpcs[].security_groups[]", SECURITY_GROUP_FIELDS),
        ("vpcs[].security_groups[].inbound[]", SG_INBOUND_RULE_FIELDS),
        (
            "vpcs[].security_groups[].outbound[]",
            SG_OUTBOUND_RULE_FIELDS,
        ),
        ("vpcs[].nat_gateways[]", NAT_GATEWAY_FIELDS),
        ("vpcs[].endpoints[]", ENDPOINT_FIELDS),
        ("vpcs[].endpoints[].policy", POLICY_FIELDS),
        ("vpcs[].endpoints[].policy.allow[]", POLICY_ALLOW_FIELDS),
        ("vpcs[].instances[]", INSTANCE_FIELDS),
        (
            "vpcs[].instances[].connection_tracking",
            CONNECTION_TRACKING_FIELDS,
        ),
        ("vpcs[].flow_logs[]", FLOW_LOG_FIELDS),
        (
            "traffic_mirror_filters[]",
            crate::traffic_mirror::FILTER_FIELDS,
        ),
        (
            "traffic_mirror_filters[].inbound[]",
            crate::traffic_mirror::RULE_FIELDS,
        ),
        (
            "traffic_mirror_filters[].outbound[]",
            crate::traffic_mirror::RULE_FIELDS,
        ),
        (
            "traffic_mirror_targets[]",
            crate::traffic_mirror::TARGET_FIELDS,
        ),
        (
            "traffic_mirror_sessions[]",
            crate::traffic_mirror::SESSION_FIELDS,
        ),
        ("virtual_private_gateways[]", crate::vpn::VGW_FIELDS),
        ("sites[]", crate::vpn::SITE_FIELDS),
        ("sites[].hosts[]", HOST_FIELDS),
        ("customer_gateways[]", crate::vpn::CUSTOMER_GATEWAY_FIELDS),
        ("vpn_connections[]", crate::vpn::VPN_FIELDS),
        ("vpn_connections[].tunnels[]", crate::vpn::TUNNEL_FIELDS),
        ("direct_connect", crate::vpn::DIRECT_CONNECT_FIELDS),
        (
            "direct_connect.connections[]",
            crate::vpn::DX_CONNECTION_FIELDS,
        ),
        ("direct_connect.gateways[]", crate::vpn::DX_GATEWAY_FIELDS),
        (
            "direct_connect.virtual_interfaces[]",
            crate::vpn::VIF_FIELDS,
        ),
    ]
    .into_iter()
    .map(|(object, fields)| (object, fields.to_vec()))
    .collect()
}

/// Objects that could not be decoded whole: their ids, and what can be read of them.
#[derive(Default)]
struct Broken {
    ids: Vec<String>,
    partial: Vec<Partial>,
}

impl Broken {
    /// Notes an object that failed to decode: its id, and what can be read of it.
    fn note(&mut self, node: &Node, path: &str, kind: Kind) {
        let Some(m) = node.as_mapping() else { return };
        let id = m.get_scalar("id").map(|id| {
            S::new(
                id.as_str().trim().to_string(),
                crate::yaml::loc(id.span(), &crate::yaml::join(path, "id")),
            )
        });
        if let Some(id) = &id {
            self.ids.push(id.v.clone());
        }
        let kind = match (kind, m.get_scalar("type").map(|t| t.as_str().trim())) {
            (Kind::GatewayEndpoint, Some("interface")) => Kind::InterfaceEndpoint,
            (k, _) => k,
        };
        let mut refs = Vec::new();
        for (field, kinds) in REFERENCES {
            let at = crate::yaml::join(path, field);
            match m.get(*field) {
                Some(Node::Scalar(v)) => refs.push((
                    S::new(
                        v.as_str().trim().to_string(),
                        crate::yaml::loc(v.span(), &at),
                    ),
                    *kinds,
                )),
                Some(Node::Sequence(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(v) = item.as_scalar() {
                            let at = format!("{at}[{i}]");
                            refs.push((
                                S::new(
                                    v.as_str().trim().to_string(),
                                    crate::yaml::loc(v.span(), &at),
                                ),
                                *kinds,
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // `main` and `default` name a VPC's own implicit objects: not checked from here.
        refs.retain(|(r, _)| r.v != "main" && r.v != "default" && !r.v.is_empty());
        self.partial.push(Partial { kind, id, refs });
    }
}

#[derive(Clone, Debug)]
pub struct Vpc {
    pub at: Loc,
    pub id: S<String>,
    pub cidr_block: S<Ipv4Network>,
    pub secondary_cidr_blocks: Vec<S<Ipv4Network>>,
    pub ipv6_cidr_block: Option<S<Ipv6Network>>,
    pub enable_dns_support: bool,
    pub internet_gateway: Option<S<String>>,
    pub egress_only_internet_gateway: Option<S<String>>,
    pub virtual_private_gateway: Option<S<String>>,
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub network_acls: Vec<NetworkAcl>,
    pub security_groups: Vec<SecurityGroup>,
    pub nat_gateways: Vec<NatGateway>,
    pub endpoints: Vec<Endpoint>,
    pub instances: Vec<Instance>,
    pub flow_logs: Vec<FlowLog>,
}

impl Vpc {
    /// The IPv4 blocks, primary first.
    pub fn cidrs_v4(&self) -> impl Iterator<Item = &S<Ipv4Network>> {
        std::iter::once(&self.cidr_block).chain(self.secondary_cidr_blocks.iter())
    }
}

#[derive(Clone, Debug)]
pub struct Subnet {
    pub at: Loc,
    pub id: S<String>,
    /// `None` for an IPv6-only subnet (AWS allows them in a VPC with an IPv6 block).
    pub cidr_block: Option<S<Ipv4Network>>,
    pub ipv6_cidr_block: Option<S<Ipv6Network>>,
    pub availability_zone: Option<S<String>>,
    pub route_table: Option<S<String>>,
    pub network_acl: Option<S<String>>,
    pub map_public_ip_on_launch: bool,
    /// AWS's EnableDns64: AAAA answers for IPv4-only names, for NAT64.
    pub enable_dns64: bool,
}

#[derive(Clone, Debug)]
pub struct RouteTable {
    pub at: Loc,
    pub id: S<String>,
    pub main: Option<S<bool>>,
    pub routes: Vec<Route>,
    /// VGWs whose routes the table gets as propagated routes (R-VPN-PROPAGATE).
    pub propagating_vgws: Vec<S<String>>,
}

/// A route's destination: a CIDR or a prefix-list id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Cidr(IpNetwork),
    PrefixList(String),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub at: Loc,
    pub destination: S<Destination>,
    pub target: S<String>,
    /// `state: blackhole`: the target was deleted (a NAT gateway, an instance): the route
    /// stays and drops what it matches (R-RT-BLACKHOLE), and its target need not exist.
    pub blackhole: bool,
}

#[derive(Clone, Debug)]
pub struct NetworkAcl {
    pub at: Loc,
    pub id: S<String>,
    pub inbound: Vec<NaclRule>,
    pub outbound: Vec<NaclRule>,
}

#[derive(Clone, Debug)]
pub struct NaclRule {
    pub at: Loc,
    pub rule: S<u64>,
    pub allow: bool,
    pub protocol: S<Protocol>,
    pub port_range: Option<S<(u16, u16)>>,
    pub icmp_type: Option<S<Option<u8>>>,
    pub icmp_code: Option<S<Option<u8>>>,
    pub cidr: S<IpNetwork>,
}

#[derive(Clone, Debug)]
pub struct SecurityGroup {
    pub at: Loc,
    pub id: S<String>,
    pub description: Option<String>,
    pub inbound: Vec<SgRule>,
    /// `None`: the field was omitted, which allows all outbound (config.md).
    pub outbound: Option<Vec<SgRule>>,
}

/// The other end of an SG rule: `source` inbound, `destination` outbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Cidr(IpNetwork),
    SecurityGroup(String),
    PrefixList(String),
}

#[derive(Clone, Debug)]
pub struct SgRule {
    pub at: Loc,
    pub protocol: S<Protocol>,
    pub port_range: Option<S<(u16, u16)>>,
    pub icmp_type: Option<S<Option<u8>>>,
    pub icmp_code: Option<S<Option<u8>>>,
    pub peer: S<Peer>,
    pub description: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NatGateway {
    pub at: Loc,
    pub id: S<String>,
    pub subnet: S<String>,
    pub private_ip: Option<S<Ipv4Addr>>,
    pub public_ip: Option<S<Ipv4Addr>>,
    pub private_connectivity: bool,
}

#[derive(Clone, Debug)]
pub struct PolicyAllow {
    pub at: Loc,
    pub destination: S<IpNetwork>,
    pub port_range: Option<S<(u16, u16)>>,
}

#[derive(Clone, Debug)]
pub enum EndpointKind {
    Gateway {
        route_tables: Vec<S<String>>,
        policy: Option<Vec<PolicyAllow>>,
    },
    Interface {
        subnets: Vec<S<String>>,
        security_groups: Vec<S<String>>,
        private_dns: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub at: Loc,
    pub id: S<String>,
    pub service: S<String>,
    pub kind: EndpointKind,
}

#[derive(Clone, Debug)]
pub struct ConnectionTracking {
    pub tcp_established_timeout: Option<S<u64>>,
    pub udp_stream_timeout: Option<S<u64>>,
    pub udp_timeout: Option<S<u64>>,
}

#[derive(Clone, Debug)]
pub struct Instance {
    pub at: Loc,
    pub id: S<String>,
    pub subnet: S<String>,
    /// Required in a subnet with IPv4; an instance of an IPv6-only subnet has none.
    pub private_ip: Option<S<Ipv4Addr>>,
    pub secondary_private_ips: Vec<S<Ipv4Addr>>,
    pub ipv6_address: Option<S<Ipv6Addr>>,
    pub public_ip: Option<S<Ipv4Addr>>,
    pub security_groups: Vec<S<String>>,
    pub source_dest_check: bool,
    pub connection_tracking: Option<ConnectionTracking>,
    /// Metadata answers without a token (IMDSv1): `http_tokens: optional`.
    pub imds_v1: bool,
    /// A shell script run once in the instance's namespace when it comes up (faults.md).
    pub user_data: Option<S<String>>,
    /// A built-in role: a NAT instance or a router (faults.md).
    pub image: Option<S<Image>>,
}

/// `image`: what a built-in instance does with its Linux stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// Forwards and masquerades (nftables) what it forwards: a NAT instance.
    Nat,
    /// Forwards only.
    Router,
}

#[derive(Clone, Debug)]
pub struct FlowLog {
    pub at: Loc,
    pub id: S<String>,
    pub resource: S<String>,
    pub traffic_type: S<String>,
    pub max_aggregation_interval: S<u64>,
    pub log_format: S<String>,
    pub destination: S<String>,
}

#[derive(Clone, Debug)]
pub struct PeeringConnection {
    pub at: Loc,
    pub id: S<String>,
    pub requester_vpc: S<String>,
    pub accepter_vpc: S<String>,
    pub status: S<String>,
    pub allow_dns_resolution_from_remote_vpc: bool,
}

/// A host of the simulated outside world (internet, service or on-premises).
#[derive(Clone, Debug)]
pub struct OutsideHost {
    pub at: Loc,
    pub id: S<String>,
    pub ipv4: Option<S<Ipv4Addr>>,
    pub ipv6: Option<S<Ipv6Addr>>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub at: Loc,
    pub name: S<String>,
    pub prefix_list: S<String>,
    pub cidr_blocks: Vec<S<IpNetwork>>,
    pub dns_name: Option<S<String>>,
    pub hosts: Vec<OutsideHost>,
}

#[derive(Clone, Debug)]
pub struct OnPremises {
    pub at: Loc,
    pub cidr_blocks: Vec<S<IpNetwork>>,
    pub hosts: Vec<OutsideHost>,
}

/// Decodes a parsed document into a [`Lab`], reporting every problem into `diags`.
pub fn decode(root: &Node, diags: &mut Diagnostics) -> Lab {
    let mut d = Decoder::new(diags);
    d.hints = crate::yaml::Hints::of(root);
    let mut broken = Broken::default();
    let mut lab = Lab {
        region: S::new("us-east-1".into(), Loc::implicit("region")),
        account_id: S::new("123456789012".into(), Loc::implicit("account_id")),
        ..Lab::default()
    };
    let Some(mut top) = d.map(root, "", "the lab file", LAB_FIELDS) else {
        return lab;
    };
    // The document itself starts at its first line (its mapping's span starts at the
    // first value).
    top.at = Loc::new(1, 1, "");
    lab.version = d.req(&top, "version", "1", val::uint);
    if let Some(r) = d.opt(&top, "region", val::text) {
        lab.region = r;
    }
    if let Some(a) = d.opt(&top, "account_id", val::text) {
        lab.account_id = a;
    }
    if d.node(&top, "vpcs")
        .is_none_or(|n| n.as_sequence().is_some_and(|s| s.is_empty()))
    {
        d.diags.error(
            &top.at,
            "a lab needs at least one VPC",
            "add `vpcs:` with one VPC",
        );
    }
    for (path, node) in d.list(&top, "vpcs") {
        if let Some(v) = vpc(&mut d, node, &path, &mut broken) {
            lab.vpcs.push(v);
        }
    }
    for (path, node) in d.list(&top, "peering_connections") {
        if let Some(p) = peering(&mut d, node, &path) {
            lab.peering_connections.push(p);
        } else {
            broken.note(node, &path, Kind::Peering);
        }
    }
    if let Some(node) = d.node(&top, "internet") {
        if let Some(m) = d.map(node, "internet", "the internet", INTERNET_FIELDS) {
            lab.internet = hosts(&mut d, &m, &mut broken);
            lab.public_ip_pool = d.opt(&m, "public_ip_pool", val::cidr4);
        }
    }
    for (path, node) in d.list(&top, "services") {
        let Some(m) = d.map(node, &path, "a service", SERVICE_FIELDS) else {
            continue;
        };
        let name = d.req(&m, "name", "s3", val::id);
        let prefix_list = d.req(&m, "prefix_list", "pl-s3", val::id);
        let cidr_blocks = d.scalar_list(&m, "cidr_blocks", val::net);
        let dns_name = d.opt(&m, "dns_name", val::text);
        let hosts = hosts(&mut d, &m, &mut broken);
        if let (Some(name), Some(prefix_list)) = (name, prefix_list) {
            lab.services.push(Service {
                at: m.at.clone(),
                name,
                prefix_list,
                cidr_blocks,
                dns_name,
                hosts,
            });
        }
    }
    if let Some(node) = d.node(&top, "on_premises") {
        if let Some(m) = d.map(node, "on_premises", "on_premises", ON_PREMISES_FIELDS) {
            let cidr_blocks = d.scalar_list(&m, "cidr_blocks", val::net);
            let hosts = hosts(&mut d, &m, &mut broken);
            lab.on_premises = Some(OnPremises {
                at: m.at.clone(),
                cidr_blocks,
                hosts,
            });
        }
    }
    let (mirroring, broken_mirrors) = crate::traffic_mirror::decode(&mut d, &top);
    lab.traffic_mirror = mirroring;
    let (vpn, broken_vpn) = crate::vpn::decode(&mut d, &top, |d, m| hosts(d, m, &mut broken));
    lab.vpn = vpn;
    lab.broken = broken.ids;
    lab.broken.extend(broken_mirrors);
    lab.broken.extend(broken_vpn);
    lab.partial = broken.partial;
    lab
}

/// Decodes each item of list `key` with `f`, noting what is readable of broken ones.
fn each<T>(
    d: &mut Decoder<'_>,
    m: &Map<'_>,
    key: &str,
    kind: Kind,
    broken: &mut Broken,
    mut f: impl FnMut(&mut Decoder<'_>, &Node, &str) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (path, node) in d.list(m, key) {
        match f(d, node, &path) {
            Some(v) => out.push(v),
            None => broken.note(node, &path, kind),
        }
    }
    out
}

fn vpc(d: &mut Decoder<'_>, node: &Node, path: &str, broken: &mut Broken) -> Option<Vpc> {
    let m = d.map(node, path, "a VPC", VPC_FIELDS)?;
    let id = d.req(&m, "id", "vpc-lab", val::id);
    let cidr_block = d.req(&m, "cidr_block", "10.0.0.0/16", val::cidr4);
    let secondary_cidr_blocks = d.scalar_list(&m, "secondary_cidr_blocks", val::cidr4);
    let ipv6_cidr_block = d.opt(&m, "ipv6_cidr_block", val::cidr6);
    let enable_dns_support = d
        .opt(&m, "enable_dns_support", val::boolean)
        .is_none_or(|b| b.v);
    let internet_gateway = d.opt(&m, "internet_gateway", val::id);
    let egress_only_internet_gateway = d.opt(&m, "egress_only_internet_gateway", val::id);
    let virtual_private_gateway = d.opt(&m, "virtual_private_gateway", val::id);
    let subnets = each(d, &m, "subnets", Kind::Subnet, broken, subnet);
    let route_tables = each(d, &m, "route_tables", Kind::RouteTable, broken, route_table);
    let network_acls = each(d, &m, "network_acls", Kind::NetworkAcl, broken, network_acl);
    let security_groups = each(
        d,
        &m,
        "security_groups",
        Kind::SecurityGroup,
        broken,
        security_group,
    );
    let nat_gateways = each(d, &m, "nat_gateways", Kind::NatGateway, broken, nat_gateway);
    let endpoints = each(d, &m, "endpoints", Kind::GatewayEndpoint, broken, endpoint);
    let instances = each(d, &m, "instances", Kind::Instance, broken, instance);
    let flow_logs = each(d, &m, "flow_logs", Kind::FlowLog, broken, flow_log);
    let (Some(id), Some(cidr_block)) = (id, cidr_block) else {
        broken.note(node, path, Kind::Vpc);
        // What it holds is left out with it: read what can be checked of each.
        for (key, kind) in VPC_LISTS {
            for (p, child) in d.list(&m, key) {
                broken.note(child, &p, *kind);
            }
        }
        return None;
    };
    Some(Vpc {
        at: m.at.clone(),
        id,
        cidr_block,
        secondary_cidr_blocks,
        ipv6_cidr_block,
        enable_dns_support,
        internet_gateway,
        egress_only_internet_gateway,
        virtual_private_gateway,
        subnets,
        route_tables,
        network_acls,
        security_groups,
        nat_gateways,
        endpoints,
        instances,
        flow_logs,
    })
}

fn subnet(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Subnet> {
    let m = d.map(node, path, "a subnet", SUBNET_FIELDS)?;
    let id = d.req(&m, "id", "public-a", val::id);
    // One of the two at least: a subnet may be IPv4-only, dual stack or IPv6-only.
    let cidr_written = d.node(&m, "cidr_block").is_some();
    let cidr_block = d.opt(&m, "cidr_block", val::cidr4);
    let ipv6_cidr_block = d.opt(&m, "ipv6_cidr_block", val::cidr6);
    if !cidr_written && d.node(&m, "ipv6_cidr_block").is_none() {
        d.diags.error(
            &m.at,
            "the required field `cidr_block` is missing",
            "add `cidr_block: 10.0.1.0/24`, or an `ipv6_cidr_block` for an IPv6-only subnet",
        );
    }
    let availability_zone = d.opt(&m, "availability_zone", val::text);
    let route_table = d.opt(&m, "route_table", val::id);
    let network_acl = d.opt(&m, "network_acl", val::id);
    let map_public_ip_on_launch = d
        .opt(&m, "map_public_ip_on_launch", val::boolean)
        .is_some_and(|b| b.v);
    let enable_dns64 = d.opt(&m, "enable_dns64", val::boolean).is_some_and(|b| b.v);
    Some(Subnet {
        at: m.at.clone(),
        id: id?,
        cidr_block: if cidr_written {
            Some(cidr_block?)
        } else {
            None
        },
        ipv6_cidr_block,
        availability_zone,
        route_table,
        network_acl,
        map_public_ip_on_launch,
        enable_dns64,
    })
}

fn route_table(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RouteTable> {
    let m = d.map(node, path, "a route table", ROUTE_TABLE_FIELDS)?;
    let id = d.req(&m, "id", "rtb-public", val::id);
    // The table named `main` is the VPC's main table (config.md: implicit objects are
    // changed by naming them), as if it said `main: true`.
    let main = d.opt(&m, "main", val::boolean).or_else(|| {
        id.as_ref()
            .filter(|i| i.v == "main")
            .map(|i| S::new(true, i.at.clone()))
    });
    let mut routes = Vec::new();
    for (rpath, rnode) in d.list(&m, "routes") {
        let Some(r) = d.map(rnode, &rpath, "a route", ROUTE_FIELDS) else {
            continue;
        };
        let destination = d.req(&r, "destination", "0.0.0.0/0", |s| {
            if s.starts_with("pl-") {
                val::id(s).map(Destination::PrefixList)
            } else {
                val::net(s).map(Destination::Cidr)
            }
        });
        let example = d.hints.target.clone();
        let target = d.req(&r, "target", &example, val::id);
        let state = d.opt(&r, "state", |s| match s {
            "active" => Ok(false),
            "blackhole" => Ok(true),
            _ => Err((
                format!("`{s}` is not a route state"),
                "write `active` or `blackhole`".to_string(),
            )),
        });
        if let (Some(destination), Some(target)) = (destination, target) {
            routes.push(Route {
                at: r.at.clone(),
                destination,
                target,
                blackhole: state.is_some_and(|s| s.v),
            });
        }
    }
    let propagating_vgws = d.scalar_list(&m, "propagating_vgws", val::id);
    Some(RouteTable {
        at: m.at.clone(),
        id: id?,
        main,
        routes,
        propagating_vgws,
    })
}

fn network_acl(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<NetworkAcl> {
    let m = d.map(node, path, "a network ACL", NETWORK_ACL_FIELDS)?;
    let id = d.req(&m, "id", "acl-public", val::id);
    let mut rules = |key: &str| -> Vec<NaclRule> {
        let mut out = Vec::new();
        for (rpath, rnode) in d.list(&m, key) {
            let Some(r) = d.map(rnode, &rpath, "a network ACL rule", NACL_RULE_FIELDS) else {
                continue;
            };
            let rule = d.req(&r, "rule", "100", val::uint);
            let action = d.req(&r, "action", "allow", val::one_of(&["allow", "deny"]));
            let protocol = d.req(&r, "protocol", "tcp", val::protocol);
            let port_range = d.opt(&r, "port_range", val::port_range);
            let icmp_type = d.opt(&r, "icmp_type", val::icmp_value);
            let icmp_code = d.opt(&r, "icmp_code", val::icmp_value);
            let cidr4 = d.opt(&r, "cidr", |s| val::cidr4(s).map(IpNetwork::V4));
            let cidr6 = d.opt(&r, "ipv6_cidr", |s| val::cidr6(s).map(IpNetwork::V6));
            let cidr = match (cidr4, cidr6) {
                (Some(c), None) | (None, Some(c)) => Some(c),
                (Some(_), Some(c6)) => {
                    d.diags.error(
                        &c6.at,
                        "a rule has `cidr` or `ipv6_cidr`, not both",
                        "split it into two rules",
                    );
                    None
                }
                (None, None) => {
                    d.diags.error(
                        &r.at,
                        "the rule has neither `cidr` nor `ipv6_cidr`",
                        "add `cidr: 0.0.0.0/0` or `ipv6_cidr: \"::/0\"`",
                    );
                    None
                }
            };
            if let (Some(rule), Some(action), Some(protocol), Some(cidr)) =
                (rule, action, protocol, cidr)
            {
                out.push(NaclRule {
                    at: r.at.clone(),
                    rule,
                    allow: action.v == "allow",
                    protocol,
                    port_range,
                    icmp_type,
                    icmp_code,
                    cidr,
                });
            }
        }
        out
    };
    let inbound = rules("inbound");
    let outbound = rules("outbound");
    Some(NetworkAcl {
        at: m.at.clone(),
        id: id?,
        inbound,
        outbound,
    })
}

fn sg_rules(d: &mut Decoder<'_>, m: &Map<'_>, key: &str, peer_key: &str) -> Vec<SgRule> {
    let mut out = Vec::new();
    for (rpath, rnode) in d.list(m, key) {
        let known = if peer_key == "source" {
            SG_INBOUND_RULE_FIELDS
        } else {
            SG_OUTBOUND_RULE_FIELDS
        };
        let Some(r) = d.map(rnode, &rpath, "a security group rule", known) else {
            continue;
        };
        let protocol = d.req(&r, "protocol", "tcp", val::protocol);
        let port_range = d.opt(&r, "port_range", val::port_range);
        let icmp_type = d.opt(&r, "icmp_type", val::icmp_value);
        let icmp_code = d.opt(&r, "icmp_code", val::icmp_value);
        let peer = d.req(&r, peer_key, "0.0.0.0/0", |s| {
            if s.starts_with("sg-") || s == "default" {
                val::id(s).map(Peer::SecurityGroup)
            } else if s.starts_with("pl-") {
                val::id(s).map(Peer::PrefixList)
            } else {
                val::net(s).map(Peer::Cidr)
            }
        });
        let description = d.opt(&r, "description", val::description).map(|s| s.v);
        if let (Some(protocol), Some(peer)) = (protocol, peer) {
            out.push(SgRule {
                at: r.at.clone(),
                protocol,
                port_range,
                icmp_type,
                icmp_code,
                peer,
                description,
            });
        }
    }
    out
}

fn security_group(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<SecurityGroup> {
    let m = d.map(node, path, "a security group", SECURITY_GROUP_FIELDS)?;
    let id = d.req(&m, "id", "sg-web", val::id);
    let description = d.opt(&m, "description", val::description).map(|s| s.v);
    let inbound = sg_rules(d, &m, "inbound", "source");
    let outbound = m
        .node
        .get("outbound")
        .map(|_| sg_rules(d, &m, "outbound", "destination"));
    Some(SecurityGroup {
        at: m.at.clone(),
        id: id?,
        description,
        inbound,
        outbound,
    })
}

fn nat_gateway(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<NatGateway> {
    let m = d.map(node, path, "a NAT gateway", NAT_GATEWAY_FIELDS)?;
    let id = d.req(&m, "id", "nat-a", val::id);
    let example = d.hints.subnet.clone();
    let subnet = d.req(&m, "subnet", &example, val::id);
    let private_ip = d.opt(&m, "private_ip", val::ipv4);
    let public_ip = d.opt(&m, "public_ip", val::ipv4);
    let connectivity = d.opt(&m, "connectivity", val::one_of(&["public", "private"]));
    let private_connectivity = connectivity.as_ref().is_some_and(|c| c.v == "private");
    if !private_connectivity && public_ip.is_none() && d.node(&m, "public_ip").is_none() {
        d.diags.error(
            &m.at,
            "a public NAT gateway needs an Elastic IP",
            "add `public_ip: 198.51.100.5`, or `connectivity: private`",
        );
    }
    if private_connectivity {
        if let Some(p) = &public_ip {
            d.diags.error(
                &p.at,
                "a private NAT gateway has no public IP",
                "remove `public_ip`, or use `connectivity: public`",
            );
        }
    }
    Some(NatGateway {
        at: m.at.clone(),
        id: id?,
        subnet: subnet?,
        private_ip,
        public_ip,
        private_connectivity,
    })
}

fn endpoint(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Endpoint> {
    let m = d.map(node, path, "an endpoint", ENDPOINT_FIELDS)?;
    let id = d.req(&m, "id", "vpce-s3", val::id);
    let ty = d.req(
        &m,
        "type",
        "gateway",
        val::one_of(&["gateway", "interface"]),
    );
    let example = d.hints.service.clone();
    let service = d.req(&m, "service", &example, val::id);
    let ty = ty?;
    let only = |d: &mut Decoder<'_>, fields: &[&str], kind: &str| {
        for f in fields {
            if m.node.get(*f).is_some() {
                let at = d.at(&m, f);
                d.diags.error(
                    &at,
                    format!("`{f}` does not apply to a {kind} endpoint"),
                    "remove it, or change `type`",
                );
            }
        }
    };
    let kind = if ty.v == "gateway" {
        only(d, &["subnets", "security_groups", "private_dns"], "gateway");
        let route_tables = d.scalar_list(&m, "route_tables", val::id);
        let policy = d.node(&m, "policy").and_then(|p| {
            let pm = d.map(
                p,
                &format!("{}.policy", m.path),
                "an endpoint policy",
                POLICY_FIELDS,
            )?;
            let mut allow = Vec::new();
            for (apath, anode) in d.list(&pm, "allow") {
                let Some(a) = d.map(anode, &apath, "a policy entry", POLICY_ALLOW_FIELDS) else {
                    continue;
                };
                let destination = d.req(&a, "destination", "198.18.0.10/32", val::net);
                let port_range = d.opt(&a, "port_range", val::port_range);
                if let Some(destination) = destination {
                    allow.push(PolicyAllow {
                        at: a.at.clone(),
                        destination,
                        port_range,
                    });
                }
            }
            Some(allow)
        });
        EndpointKind::Gateway {
            route_tables,
            policy,
        }
    } else {
        only(d, &["route_tables", "policy"], "interface");
        let subnets = d.scalar_list(&m, "subnets", val::id);
        let security_groups = d.scalar_list(&m, "security_groups", val::id);
        let private_dns = d.opt(&m, "private_dns", val::boolean).is_some_and(|b| b.v);
        EndpointKind::Interface {
            subnets,
            security_groups,
            private_dns,
        }
    };
    Some(Endpoint {
        at: m.at.clone(),
        id: id?,
        service: service?,
        kind,
    })
}

fn instance(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Instance> {
    let m = d.map(node, path, "an instance", INSTANCE_FIELDS)?;
    let id = d.req(&m, "id", "web-1", val::id);
    let example = d.hints.subnet.clone();
    let subnet = d.req(&m, "subnet", &example, val::id);
    // Whether it is required depends on the subnet (validate): here it is read if given.
    let private_ip_written = d.node(&m, "private_ip").is_some();
    let private_ip = d.opt(&m, "private_ip", val::ipv4);
    let secondary_private_ips = d.scalar_list(&m, "secondary_private_ips", val::ipv4);
    let ipv6_address = d.opt(&m, "ipv6_address", val::ipv6);
    let public_ip = d.opt(&m, "public_ip", val::ipv4);
    let security_groups = d.scalar_list(&m, "security_groups", val::id);
    let source_dest_check = d
        .opt(&m, "source_dest_check", val::boolean)
        .is_none_or(|b| b.v);
    // vpcd extension, AWS's MetadataOptions.HttpTokens: `optional` (the default) allows
    // IMDSv1, `required` only IMDSv2.
    let imds_v1 = d
        .opt(&m, "http_tokens", val::one_of(&["optional", "required"]))
        .is_none_or(|t| t.v == "optional");
    let connection_tracking = d.node(&m, "connection_tracking").and_then(|n| {
        let c = d.map(
            n,
            &format!("{}.connection_tracking", m.path),
            "connection tracking timeouts",
            CONNECTION_TRACKING_FIELDS,
        )?;
        Some(ConnectionTracking {
            tcp_established_timeout: d.opt(&c, "tcp_established_timeout", val::uint),
            udp_stream_timeout: d.opt(&c, "udp_stream_timeout", val::uint),
            udp_timeout: d.opt(&c, "udp_timeout", val::uint),
        })
    });
    Some(Instance {
        at: m.at.clone(),
        id: id?,
        subnet: subnet?,
        private_ip: if private_ip_written {
            Some(private_ip?)
        } else {
            None
        },
        secondary_private_ips,
        ipv6_address,
        public_ip,
        security_groups,
        source_dest_check,
        connection_tracking,
        imds_v1,
        // AWS: user data is limited to 16 KB.
        user_data: d.opt_long_text(&m, "user_data", 16 * 1024, "AWS's limit for user data"),
        image: d.opt(&m, "image", |s| match s {
            "nat" => Ok(Image::Nat),
            "router" => Ok(Image::Router),
            _ => Err((
                format!("`{s}` is not an image vpcd knows"),
                "write `nat` (forwarding and masquerade) or `router` (forwarding)".to_string(),
            )),
        }),
    })
}

fn flow_log(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<FlowLog> {
    let m = d.map(node, path, "a flow log", FLOW_LOG_FIELDS)?;
    let id = d.req(&m, "id", "fl-lab", val::id);
    let example = d.hints.vpc.clone();
    let resource = d.req(&m, "resource", &example, val::id);
    let traffic_type = d
        .opt(
            &m,
            "traffic_type",
            val::one_of(&["ACCEPT", "REJECT", "ALL"]),
        )
        .unwrap_or_else(|| S::new("ALL".into(), m.at.clone()));
    let max_aggregation_interval = d
        .opt(&m, "max_aggregation_interval", val::uint)
        .unwrap_or_else(|| S::new(600, m.at.clone()));
    let log_format = d
        .opt(&m, "log_format", val::text)
        .unwrap_or_else(|| S::new("default".into(), m.at.clone()));
    let destination = d.req(&m, "destination", "flowlogs/lab.log", val::text);
    Some(FlowLog {
        at: m.at.clone(),
        id: id?,
        resource: resource?,
        traffic_type,
        max_aggregation_interval,
        log_format,
        destination: destination?,
    })
}

fn peering(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<PeeringConnection> {
    let m = d.map(node, path, "a peering connection", PEERING_FIELDS)?;
    let id = d.req(&m, "id", "pcx-lab-shared", val::id);
    let example = d.hints.vpc.clone();
    let requester_vpc = d.req(&m, "requester_vpc", &example, val::id);
    let example = d.hints.other_vpc.clone();
    let accepter_vpc = d.req(&m, "accepter_vpc", &example, val::id);
    let status = d
        .opt(
            &m,
            "status",
            val::one_of(&["active", "pending-acceptance", "rejected", "deleted"]),
        )
        .unwrap_or_else(|| S::new("active".into(), m.at.clone()));
    let allow_dns = d
        .opt(&m, "allow_dns_resolution_from_remote_vpc", val::boolean)
        .is_some_and(|b| b.v);
    Some(PeeringConnection {
        at: m.at.clone(),
        id: id?,
        requester_vpc: requester_vpc?,
        accepter_vpc: accepter_vpc?,
        status,
        allow_dns_resolution_from_remote_vpc: allow_dns,
    })
}

fn hosts(d: &mut Decoder<'_>, m: &Map<'_>, broken: &mut Broken) -> Vec<OutsideHost> {
    each(d, m, "hosts", Kind::Host, broken, |d, node, path| {
        let h = d.map(node, path, "a host", HOST_FIELDS)?;
        let id = d.req(&h, "id", "inet-1", val::id);
        let ipv4 = d.opt(&h, "ipv4", val::ipv4);
        let ipv6 = d.opt(&h, "ipv6", val::ipv6);
        if ipv4.is_none()
            && ipv6.is_none()
            && d.node(&h, "ipv4").is_none()
            && d.node(&h, "ipv6").is_none()
        {
            d.diags.error(
                &h.at,
                "a host needs an address",
                "add `ipv4: 203.0.113.10` and/or `ipv6: \"2001:db8:ffff::10\"`",
            );
        }
        Some(OutsideHost {
            at: h.at.clone(),
            id: id?,
            ipv4,
            ipv6,
        })
    })
}
