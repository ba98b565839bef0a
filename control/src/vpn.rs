//! Site-to-site VPN in the lab file (hybrid.md): `virtual_private_gateways`, `sites`,
//! `customer_gateways` and `vpn_connections`, decoded and checked against AWS's rules
//! (R-VPN-…), and the running state that BGP adds to them (which tunnels are up, what
//! each learned), which the compiler turns into the VGW's routes and the propagated
//! routes of route tables (R-VPN-PROPAGATE, R-VPN-PRIORITY).
//!
//! How a VPN is laid out in the lab (README): a site is a namespace acting as the
//! customer's router (its public side on the simulated internet at the customer gateway's
//! `ip_address`, its hosts in namespaces behind it); each tunnel's AWS end is a namespace
//! of its own (`VPN-t1`, `VPN-t2`) at the tunnel's outside address, where vpcd's BGP
//! speaker listens on the inside address. The two ends carry the tunnel over the
//! simulated internet in VXLAN (this kernel has no ESP/XFRM or GRE): unencrypted, which
//! the README says, and swappable for IPsec (strongSwan's user-space backend) without
//! changing anything else.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ip_network::{IpNetwork, Ipv4Network};

use crate::diag::{Diagnostics, Loc, S};
use crate::model::{Lab, OutsideHost};
use crate::validate::{Kind, Registry};
use crate::values as val;
use crate::yaml::{Decoder, Map};

pub(crate) const VGW_FIELDS: &[&str] = &["id", "amazon_side_asn"];
pub(crate) const SITE_FIELDS: &[&str] = &["id", "cidr_blocks", "hosts"];
pub(crate) const CUSTOMER_GATEWAY_FIELDS: &[&str] =
    &["id", "site", "ip_address", "bgp_asn", "config"];
pub(crate) const VPN_FIELDS: &[&str] = &[
    "id",
    "virtual_private_gateway",
    "transit_gateway",
    "customer_gateway",
    "static_routes_only",
    "routes",
    "tunnels",
];
pub(crate) const TUNNEL_FIELDS: &[&str] = &["inside_cidr"];
pub(crate) const DIRECT_CONNECT_FIELDS: &[&str] =
    &["connections", "gateways", "virtual_interfaces"];
pub(crate) const DX_CONNECTION_FIELDS: &[&str] = &["id", "site", "bandwidth"];
pub(crate) const DX_GATEWAY_FIELDS: &[&str] = &["id", "amazon_side_asn"];
pub(crate) const VIF_FIELDS: &[&str] = &[
    "id",
    "connection",
    "type",
    "virtual_private_gateway",
    "direct_connect_gateway",
    "vlan",
    "bgp_asn",
    "mtu",
];
/// Port speeds AWS sells for dedicated and hosted connections.
const BANDWIDTHS: &[&str] = &[
    "50Mbps", "100Mbps", "200Mbps", "300Mbps", "400Mbps", "500Mbps", "1Gbps", "2Gbps", "5Gbps",
    "10Gbps", "25Gbps", "100Gbps", "400Gbps",
];

/// AWS's default Amazon-side ASN of a VGW.
pub const DEFAULT_AMAZON_ASN: u32 = 64512;
/// R-VPN-STATIC: static routes per VPN connection.
pub const MAX_STATIC_ROUTES: usize = 100;
/// R-VPN-MTU: the largest inner packet a tunnel carries.
pub use dataplane::vpn::TUNNEL_MTU;
/// What the configurations vpcd writes set on the customer side (as AWS's downloadable
/// ones do): the tunnel interface's MTU and the TCP MSS clamp.
pub const CUSTOMER_TUNNEL_MTU: u16 = 1399;
pub const CUSTOMER_MSS: u16 = 1379;
/// Inside CIDRs AWS refuses for tunnels (Site-to-Site VPN User Guide, "Tunnel options").
const RESERVED_INSIDE: &[&str] = &[
    "169.254.0.0/30",
    "169.254.1.0/30",
    "169.254.2.0/30",
    "169.254.3.0/30",
    "169.254.4.0/30",
    "169.254.5.0/30",
    "169.254.169.252/30",
];

#[derive(Clone, Debug)]
pub struct VirtualPrivateGateway {
    pub id: S<String>,
    pub amazon_side_asn: S<u64>,
}

#[derive(Clone, Debug)]
pub struct Site {
    pub at: Loc,
    pub id: S<String>,
    pub cidr_blocks: Vec<S<IpNetwork>>,
    pub hosts: Vec<OutsideHost>,
}

#[derive(Clone, Debug)]
pub struct CustomerGateway {
    pub at: Loc,
    pub id: S<String>,
    pub site: S<String>,
    pub ip_address: S<Ipv4Addr>,
    pub bgp_asn: S<u64>,
    /// The user's own router configuration (BIRD 2), relative to the lab file.
    pub config: Option<S<String>>,
}

#[derive(Clone, Debug)]
pub struct VpnConnection {
    pub at: Loc,
    pub id: S<String>,
    pub virtual_private_gateway: Option<S<String>>,
    pub transit_gateway: Option<S<String>>,
    pub customer_gateway: S<String>,
    pub static_routes_only: bool,
    pub routes: Vec<S<Ipv4Network>>,
    /// The inside CIDR of each tunnel, as the file gives them (up to two).
    pub inside_cidrs: Vec<Option<S<Ipv4Network>>>,
}

#[derive(Clone, Debug)]
pub struct DxConnection {
    pub id: S<String>,
    pub site: S<String>,
    pub bandwidth: Option<S<String>>,
}

#[derive(Clone, Debug)]
pub struct DxGateway {
    pub id: S<String>,
    pub amazon_side_asn: S<u64>,
}

/// A Direct Connect virtual interface (R-DX-PRIVATE).
#[derive(Clone, Debug)]
pub struct VirtualInterface {
    pub at: Loc,
    pub id: S<String>,
    pub connection: S<String>,
    /// `private` or `transit`.
    pub kind: S<String>,
    pub virtual_private_gateway: Option<S<String>>,
    pub direct_connect_gateway: Option<S<String>>,
    pub vlan: S<u64>,
    pub bgp_asn: S<u64>,
    pub mtu: S<u64>,
}

/// The hybrid part of a lab: VPN and Direct Connect.
#[derive(Clone, Debug, Default)]
pub struct Vpn {
    pub gateways: Vec<VirtualPrivateGateway>,
    pub sites: Vec<Site>,
    pub customer_gateways: Vec<CustomerGateway>,
    pub connections: Vec<VpnConnection>,
    pub dx_connections: Vec<DxConnection>,
    pub dx_gateways: Vec<DxGateway>,
    pub virtual_interfaces: Vec<VirtualInterface>,
}

/// Decodes the four top-level lists; returns them with the ids of objects that could not
/// be decoded whole.
pub fn decode(
    d: &mut Decoder<'_>,
    top: &Map<'_>,
    mut hosts: impl FnMut(&mut Decoder<'_>, &Map<'_>) -> Vec<OutsideHost>,
) -> (Vpn, Vec<String>) {
    let mut vpn = Vpn::default();
    let mut broken = Vec::new();
    let mut note = |node: &marked_yaml::Node| {
        if let Some(id) = node.as_mapping().and_then(|m| m.get_scalar("id")) {
            broken.push(id.as_str().trim().to_string());
        }
    };
    for (path, node) in d.list(top, "virtual_private_gateways") {
        let Some(m) = d.map(node, &path, "a virtual private gateway", VGW_FIELDS) else {
            continue;
        };
        let id = d.req(&m, "id", "vgw-lab", val::id);
        let asn = d
            .opt(&m, "amazon_side_asn", val::uint)
            .unwrap_or_else(|| S::new(u64::from(DEFAULT_AMAZON_ASN), m.at.clone()));
        match id {
            Some(id) => vpn.gateways.push(VirtualPrivateGateway {
                id,
                amazon_side_asn: asn,
            }),
            None => note(node),
        }
    }
    for (path, node) in d.list(top, "sites") {
        let Some(m) = d.map(node, &path, "a site", SITE_FIELDS) else {
            continue;
        };
        let id = d.req(&m, "id", "hq", val::id);
        let cidr_blocks = d.scalar_list(&m, "cidr_blocks", val::net);
        let hosts = hosts(d, &m);
        match id {
            Some(id) => vpn.sites.push(Site {
                at: m.at.clone(),
                id,
                cidr_blocks,
                hosts,
            }),
            None => note(node),
        }
    }
    for (path, node) in d.list(top, "customer_gateways") {
        let Some(m) = d.map(node, &path, "a customer gateway", CUSTOMER_GATEWAY_FIELDS) else {
            continue;
        };
        let id = d.req(&m, "id", "cgw-hq", val::id);
        let site = d.req(&m, "site", "hq", val::id);
        let ip = d.req(&m, "ip_address", "203.0.113.50", val::ipv4);
        let asn = d
            .opt(&m, "bgp_asn", val::uint)
            .unwrap_or_else(|| S::new(65000, m.at.clone()));
        let config = d.opt(&m, "config", val::text);
        match (id, site, ip) {
            (Some(id), Some(site), Some(ip_address)) => {
                vpn.customer_gateways.push(CustomerGateway {
                    at: m.at.clone(),
                    id,
                    site,
                    ip_address,
                    bgp_asn: asn,
                    config,
                })
            }
            _ => note(node),
        }
    }
    for (path, node) in d.list(top, "vpn_connections") {
        match connection(d, node, &path) {
            Some(c) => vpn.connections.push(c),
            None => note(node),
        }
    }
    if let Some(node) = d.node(top, "direct_connect") {
        if let Some(m) = d.map(
            node,
            "direct_connect",
            "Direct Connect",
            DIRECT_CONNECT_FIELDS,
        ) {
            for (path, node) in d.list(&m, "connections") {
                let Some(c) = d.map(
                    node,
                    &path,
                    "a Direct Connect connection",
                    DX_CONNECTION_FIELDS,
                ) else {
                    continue;
                };
                let id = d.req(&c, "id", "dxcon-hq", val::id);
                let site = d.req(&c, "site", "hq", val::id);
                let bandwidth = d.opt(&c, "bandwidth", val::one_of(BANDWIDTHS));
                match (id, site) {
                    (Some(id), Some(site)) => vpn.dx_connections.push(DxConnection {
                        id,
                        site,
                        bandwidth,
                    }),
                    _ => note(node),
                }
            }
            for (path, node) in d.list(&m, "gateways") {
                let Some(g) = d.map(node, &path, "a Direct Connect gateway", DX_GATEWAY_FIELDS)
                else {
                    continue;
                };
                let id = d.req(&g, "id", "dxgw-core", val::id);
                let asn = d
                    .opt(&g, "amazon_side_asn", val::uint)
                    .unwrap_or_else(|| S::new(64512, g.at.clone()));
                match id {
                    Some(id) => vpn.dx_gateways.push(DxGateway {
                        id,
                        amazon_side_asn: asn,
                    }),
                    None => note(node),
                }
            }
            for (path, node) in d.list(&m, "virtual_interfaces") {
                match virtual_interface(d, node, &path) {
                    Some(v) => vpn.virtual_interfaces.push(v),
                    None => note(node),
                }
            }
        }
    }
    (vpn, broken)
}

fn virtual_interface(
    d: &mut Decoder<'_>,
    node: &marked_yaml::Node,
    path: &str,
) -> Option<VirtualInterface> {
    let m = d.map(node, path, "a virtual interface", VIF_FIELDS)?;
    let id = d.req(&m, "id", "dxvif-hq", val::id);
    let connection = d.req(&m, "connection", "dxcon-hq", val::id);
    let kind = d
        .opt(&m, "type", val::one_of(&["private", "transit"]))
        .unwrap_or_else(|| S::new("private".into(), m.at.clone()));
    let vgw = d.opt(&m, "virtual_private_gateway", val::id);
    let dxgw = d.opt(&m, "direct_connect_gateway", val::id);
    let vlan = d.req(&m, "vlan", "101", val::uint);
    let bgp_asn = d
        .opt(&m, "bgp_asn", val::uint)
        .unwrap_or_else(|| S::new(65000, m.at.clone()));
    let mtu = d
        .opt(&m, "mtu", val::uint)
        .unwrap_or_else(|| S::new(1500, m.at.clone()));
    if vgw.is_none() && dxgw.is_none() {
        d.diags.error(
            &m.at,
            "a private virtual interface ends at a virtual private gateway or a Direct Connect gateway",
            "add `virtual_private_gateway: vgw-lab`",
        );
    }
    Some(VirtualInterface {
        at: m.at.clone(),
        id: id?,
        connection: connection?,
        kind,
        virtual_private_gateway: vgw,
        direct_connect_gateway: dxgw,
        vlan: vlan?,
        bgp_asn,
        mtu,
    })
}

fn connection(d: &mut Decoder<'_>, node: &marked_yaml::Node, path: &str) -> Option<VpnConnection> {
    let m = d.map(node, path, "a VPN connection", VPN_FIELDS)?;
    let id = d.req(&m, "id", "vpn-hq", val::id);
    let vgw = d.opt(&m, "virtual_private_gateway", val::id);
    let tgw = d.opt(&m, "transit_gateway", val::id);
    let cgw = d.req(&m, "customer_gateway", "cgw-hq", val::id);
    let static_routes_only = d
        .opt(&m, "static_routes_only", val::boolean)
        .is_some_and(|b| b.v);
    let routes = d.scalar_list(&m, "routes", val::cidr4);
    let mut inside_cidrs = Vec::new();
    for (tpath, tnode) in d.list(&m, "tunnels") {
        let Some(t) = d.map(tnode, &tpath, "a tunnel's options", TUNNEL_FIELDS) else {
            inside_cidrs.push(None);
            continue;
        };
        inside_cidrs.push(d.opt(&t, "inside_cidr", val::cidr4));
    }
    if vgw.is_none() && tgw.is_none() {
        d.diags.error(
            &m.at,
            "a VPN connection ends at a virtual private gateway or a transit gateway",
            "add `virtual_private_gateway: vgw-lab`",
        );
    }
    Some(VpnConnection {
        at: m.at.clone(),
        id: id?,
        virtual_private_gateway: vgw,
        transit_gateway: tgw,
        customer_gateway: cgw?,
        static_routes_only,
        routes,
        inside_cidrs,
    })
}

/// Defines the ids of VPN objects.
pub(crate) fn define(vpn: &Vpn, reg: &mut Registry, diags: &mut Diagnostics) {
    for s in &vpn.sites {
        reg.define(diags, &s.id, Kind::Site, None);
        for h in &s.hosts {
            reg.define(diags, &h.id, Kind::Host, None);
        }
    }
    for c in &vpn.customer_gateways {
        reg.define(diags, &c.id, Kind::CustomerGateway, None);
    }
    for c in &vpn.connections {
        reg.define(diags, &c.id, Kind::VpnConnection, None);
    }
    for c in &vpn.dx_connections {
        reg.define(diags, &c.id, Kind::DxConnection, None);
    }
    for g in &vpn.dx_gateways {
        reg.define(diags, &g.id, Kind::DxGateway, None);
    }
    for v in &vpn.virtual_interfaces {
        reg.define(diags, &v.id, Kind::VirtualInterface, None);
    }
}

/// Whether `asn` is one AWS takes as a VGW's Amazon side: a private ASN.
fn amazon_asn_ok(asn: u64) -> bool {
    (64512..=65534).contains(&asn) || (4_200_000_000..=4_294_967_294).contains(&asn)
}

/// The VGWs the VPCs attach: VGW id → the VPC's index.
pub fn attached_vgws(lab: &Lab) -> HashMap<&str, usize> {
    lab.vpcs
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.virtual_private_gateway
                .as_ref()
                .map(|g| (g.v.as_str(), i))
        })
        .collect()
}

/// AWS's rules for VPN objects (R-VPN-…), every problem reported.
pub(crate) fn check(lab: &Lab, reg: &Registry, diags: &mut Diagnostics) {
    let vpn = &lab.vpn;
    let attached = attached_vgws(lab);
    for g in &vpn.gateways {
        if !attached.contains_key(g.id.v.as_str()) {
            diags.error(
                &g.id.at,
                format!("no VPC attaches the virtual private gateway `{}`", g.id.v),
                format!(
                    "attach it to a VPC with `virtual_private_gateway: {}`",
                    g.id.v
                ),
            );
        }
        if !amazon_asn_ok(g.amazon_side_asn.v) {
            diags.error(
                &g.amazon_side_asn.at,
                format!(
                    "{} is not a private ASN AWS takes for the Amazon side",
                    g.amazon_side_asn.v
                ),
                "use 64512 to 65534, or 4200000000 to 4294967294 (default 64512)",
            );
        }
    }
    let amazon_asn = |vgw: &str| -> u64 {
        vpn.gateways
            .iter()
            .find(|g| g.id.v == vgw)
            .map_or(u64::from(DEFAULT_AMAZON_ASN), |g| g.amazon_side_asn.v)
    };
    check_direct_connect(lab, reg, diags);
    // Route propagation: from the VGW the table's own VPC attaches.
    for (vi, v) in lab.vpcs.iter().enumerate() {
        for rt in &v.route_tables {
            for g in &rt.propagating_vgws {
                reg.resolve(diags, g, &[Kind::VirtualPrivateGateway], Some(vi));
            }
        }
    }
    // Customer gateways' public addresses live on the simulated internet: unique there.
    let mut public: HashMap<Ipv4Addr, &Loc> = lab
        .internet
        .iter()
        .filter_map(|h| h.ipv4.as_ref().map(|a| (a.v, &a.at)))
        .collect();
    for c in &vpn.customer_gateways {
        if let Some(at) = public.insert(c.ip_address.v, &c.ip_address.at) {
            diags.error(
                &c.ip_address.at,
                format!("{} is already taken (line {})", c.ip_address.v, at.line),
                "give the customer gateway its own public address, such as 203.0.113.50",
            );
        }
        for v in &lab.vpcs {
            if v.cidrs_v4().any(|b| b.v.contains(c.ip_address.v)) {
                diags.error(
                    &c.ip_address.at,
                    format!("{} lies inside {}'s block", c.ip_address.v, v.id.v),
                    "a customer gateway's address is public: use one such as 203.0.113.50",
                );
            }
        }
    }
    // Sites: their blocks may not overlap each other or a VPC reached by VPN.
    let mut blocks: Vec<(IpNetwork, String, &Loc)> = Vec::new();
    for s in &vpn.sites {
        if s.cidr_blocks.is_empty() {
            diags.error(
                &s.at,
                format!("site `{}` has no `cidr_blocks`", s.id.v),
                "add `cidr_blocks: [192.168.0.0/16]`",
            );
        }
        for c in &s.cidr_blocks {
            if let Some((n, who, _)) = blocks.iter().find(|(n, _, _)| overlaps(*n, c.v)) {
                diags.error(
                    &c.at,
                    format!("{} overlaps {who}'s block {n}", c.v),
                    "give every site its own addresses",
                );
            }
            for v in &lab.vpcs {
                for b in v.cidrs_v4() {
                    if overlaps(c.v, b.v.into()) {
                        diags.error(
                            &c.at,
                            format!("{} overlaps {}'s block {}", c.v, v.id.v, b.v),
                            "a site and the VPCs it reaches need distinct addresses",
                        );
                    }
                }
            }
            blocks.push((c.v, format!("site {}", s.id.v), &c.at));
        }
        for h in &s.hosts {
            let inside = |a: std::net::IpAddr| {
                s.cidr_blocks
                    .iter()
                    .any(|c| dataplane::route::net_contains(&c.v, a))
            };
            for (a, at) in h
                .ipv4
                .iter()
                .map(|a| (std::net::IpAddr::V4(a.v), &a.at))
                .chain(h.ipv6.iter().map(|a| (std::net::IpAddr::V6(a.v), &a.at)))
            {
                if let std::net::IpAddr::V4(v4) = a {
                    if crate::vpn_lab::site_gateway(s, v4) == Some(v4) {
                        diags.error(
                            at,
                            format!("{a} is the site router's address on its network"),
                            "give the host another address: the router takes the block's first",
                        );
                    }
                }
                if !inside(a) {
                    diags.error(
                        at,
                        format!("{a} is not in site {}'s blocks", s.id.v),
                        "give the host an address of its site",
                    );
                }
            }
        }
    }
    // Customer gateways: one per site in vpcd, a unique public address, an ASN AWS takes.
    let mut by_site: HashMap<&str, &CustomerGateway> = HashMap::new();
    for c in &vpn.customer_gateways {
        if reg.resolve(diags, &c.site, &[Kind::Site], None).is_some() {
            if let Some(prev) = by_site.insert(c.site.v.as_str(), c) {
                diags.error(
                    &c.site.at,
                    format!(
                        "site `{}` already has customer gateway `{}` (line {})",
                        c.site.v, prev.id.v, prev.id.at.line
                    ),
                    "vpcd gives a site one router: give the second gateway its own site",
                );
            }
        }
        if !(1..=2_147_483_647).contains(&c.bgp_asn.v) {
            diags.error(
                &c.bgp_asn.at,
                format!("BGP ASN {} is out of AWS's range", c.bgp_asn.v),
                "use 1 to 2147483647 (65000 to 65534 are private)",
            );
        }
    }
    for s in &vpn.sites {
        let direct_connect = vpn.dx_connections.iter().any(|c| c.site.v == s.id.v);
        if !by_site.contains_key(s.id.v.as_str()) && !direct_connect {
            diags.error(
                &s.id.at,
                format!("site `{}` has no customer gateway", s.id.v),
                format!(
                    "add one: `customer_gateways: [{{ id: cgw-{0}, site: {0}, ip_address: 203.0.113.50 }}]`",
                    s.id.v
                ),
            );
        }
    }
    // VPN connections.
    let mut inside_by_vgw: HashMap<&str, Vec<(Ipv4Network, &Loc)>> = HashMap::new();
    for c in &vpn.connections {
        if let Some(t) = &c.transit_gateway {
            diags.error(
                &t.at,
                "transit gateways are not built yet in vpcd (they come next); a VPN connection ends at a virtual private gateway for now",
                "use `virtual_private_gateway:` with a VGW a VPC attaches",
            );
        }
        let cgw = reg
            .resolve(diags, &c.customer_gateway, &[Kind::CustomerGateway], None)
            .and_then(|_| {
                vpn.customer_gateways
                    .iter()
                    .find(|g| g.id.v == c.customer_gateway.v)
            });
        if let Some(g) = &c.virtual_private_gateway {
            if reg
                .resolve(diags, g, &[Kind::VirtualPrivateGateway], None)
                .is_some()
            {
                if let Some(cgw) = cgw {
                    if cgw.bgp_asn.v == amazon_asn(&g.v) && !c.static_routes_only {
                        diags.error(
                            &cgw.bgp_asn.at,
                            format!(
                                "the customer gateway's ASN {} is the Amazon side's ASN of `{}`",
                                cgw.bgp_asn.v, g.v
                            ),
                            "BGP between the two needs distinct ASNs: pick another `bgp_asn` (e.g. 65000)",
                        );
                    }
                }
            }
        }
        if !c.static_routes_only {
            if let Some(r) = c.routes.first() {
                diags.error(
                    &r.at,
                    format!(
                        "`{}` uses BGP (static_routes_only is false): it takes no static routes",
                        c.id.v
                    ),
                    "remove `routes`, or set `static_routes_only: true` (R-VPN-BGP)",
                );
            }
        }
        if let Some(r) = c.routes.get(MAX_STATIC_ROUTES) {
            diags.error(
                &r.at,
                format!(
                    "a VPN connection has at most {MAX_STATIC_ROUTES} static routes, `{}` has {}",
                    c.id.v,
                    c.routes.len()
                ),
                "summarize the site's prefixes into fewer, larger ones",
            );
        }
        if c.inside_cidrs.len() > 2 {
            diags.error(
                &c.at,
                format!(
                    "a VPN connection has two tunnels, `{}` lists {}",
                    c.id.v,
                    c.inside_cidrs.len()
                ),
                "list at most two `tunnels`",
            );
        }
        let vgw = c
            .virtual_private_gateway
            .as_ref()
            .map_or("", |g| g.v.as_str());
        for cidr in c.inside_cidrs.iter().flatten() {
            let link_local: Ipv4Network = "169.254.0.0/16".parse().expect("a network");
            if cidr.v.netmask() != 30 || !link_local.contains(cidr.v.network_address()) {
                diags.error(
                    &cidr.at,
                    format!(
                        "tunnel inside CIDR {} is not a /30 of 169.254.0.0/16",
                        cidr.v
                    ),
                    "use a /30 such as 169.254.10.0/30",
                );
                continue;
            }
            if RESERVED_INSIDE
                .iter()
                .any(|r| r.parse::<Ipv4Network>().is_ok_and(|r| r == cidr.v))
            {
                diags.error(
                    &cidr.at,
                    format!("AWS reserves {} for its own use", cidr.v),
                    "use another /30 of 169.254.0.0/16, such as 169.254.10.0/30",
                );
            }
            let used = inside_by_vgw.entry(vgw).or_default();
            if let Some((_, at)) = used.iter().find(|(n, _)| *n == cidr.v) {
                diags.error(
                    &cidr.at,
                    format!(
                        "inside CIDR {} is already used by a tunnel of this gateway (line {})",
                        cidr.v, at.line
                    ),
                    "give every tunnel of the gateway its own /30",
                );
            }
            used.push((cidr.v, &cidr.at));
        }
    }
}

/// AWS's rules for Direct Connect objects (R-DX-PRIVATE).
fn check_direct_connect(lab: &Lab, reg: &Registry, diags: &mut Diagnostics) {
    let vpn = &lab.vpn;
    for c in &vpn.dx_connections {
        reg.resolve(diags, &c.site, &[Kind::Site], None);
    }
    for g in &vpn.dx_gateways {
        if !amazon_asn_ok(g.amazon_side_asn.v) {
            diags.error(
                &g.amazon_side_asn.at,
                format!(
                    "{} is not a private ASN AWS takes for the Amazon side",
                    g.amazon_side_asn.v
                ),
                "use 64512 to 65534, or 4200000000 to 4294967294",
            );
        }
    }
    let mut vlans: HashMap<(&str, u64), &Loc> = HashMap::new();
    for v in &vpn.virtual_interfaces {
        reg.resolve(diags, &v.connection, &[Kind::DxConnection], None);
        if v.kind.v == "transit" {
            diags.error(
                &v.kind.at,
                "transit virtual interfaces need a transit gateway, which vpcd does not build yet",
                "use `type: private` with a virtual private gateway",
            );
        }
        if let Some(g) = &v.direct_connect_gateway {
            if reg.resolve(diags, g, &[Kind::DxGateway], None).is_some() {
                diags.error(
                    &g.at,
                    "Direct Connect gateways are not built yet in vpcd (they come with transit gateways)",
                    "attach the virtual interface to a VGW: `virtual_private_gateway: vgw-lab`",
                );
            }
        }
        if let Some(g) = &v.virtual_private_gateway {
            reg.resolve(diags, g, &[Kind::VirtualPrivateGateway], None);
        }
        if !(1..=4094).contains(&v.vlan.v) {
            diags.error(
                &v.vlan.at,
                format!("VLAN {} is out of range", v.vlan.v),
                "use 1 to 4094",
            );
        }
        if let Some(at) = vlans.insert((v.connection.v.as_str(), v.vlan.v), &v.vlan.at) {
            diags.error(
                &v.vlan.at,
                format!(
                    "VLAN {} is already used on `{}` (line {})",
                    v.vlan.v, v.connection.v, at.line
                ),
                "give each virtual interface of a connection its own VLAN",
            );
        }
        if !(1..=2_147_483_647).contains(&v.bgp_asn.v) {
            diags.error(
                &v.bgp_asn.at,
                format!("BGP ASN {} is out of AWS's range", v.bgp_asn.v),
                "use 1 to 2147483647 (65000 to 65534 are private)",
            );
        }
        if v.mtu.v != 1500 && v.mtu.v != 9001 {
            diags.error(
                &v.mtu.at,
                format!(
                    "MTU {} is not one a private virtual interface takes",
                    v.mtu.v
                ),
                "use 1500, or 9001 for jumbo frames",
            );
        }
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    dataplane::route::net_contains(&a, b.network_address())
        || dataplane::route::net_contains(&b, a.network_address())
}

/// A tunnel's inside /30: the AWS side takes the first address, the customer the second
/// (as AWS assigns them).
pub fn inside_addresses(cidr: Ipv4Network) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(cidr.network_address());
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The inside CIDRs of every tunnel of every VPN connection: the file's, else a free /30
/// of 169.254.0.0/16 from 169.254.10.0 up, as AWS picks one when none is given.
pub fn inside_cidrs(vpn: &Vpn) -> BTreeMap<(String, u8), Ipv4Network> {
    let mut taken: Vec<Ipv4Network> = vpn
        .connections
        .iter()
        .flat_map(|c| c.inside_cidrs.iter().flatten().map(|c| c.v))
        .collect();
    let mut next = u32::from(Ipv4Addr::new(169, 254, 10, 0));
    let mut out = BTreeMap::new();
    for c in &vpn.connections {
        for n in 0..2u8 {
            let given = c.inside_cidrs.get(usize::from(n)).cloned().flatten();
            let cidr = match given {
                Some(g) => g.v,
                None => loop {
                    let cand = Ipv4Network::new(Ipv4Addr::from(next), 30).expect("a /30");
                    next += 4;
                    if !taken.contains(&cand) {
                        taken.push(cand);
                        break cand;
                    }
                },
            };
            out.insert((c.id.v.clone(), n + 1), cidr);
        }
    }
    out
}

/// The inside /30 of every private virtual interface: from 169.254.100.0 up, past what
/// VPN tunnels use (AWS generates a peer pair from 169.254.0.0/16 when none is given).
pub fn vif_inside_cidrs(vpn: &Vpn) -> BTreeMap<String, Ipv4Network> {
    let taken: Vec<Ipv4Network> = inside_cidrs(vpn).into_values().collect();
    let mut next = u32::from(Ipv4Addr::new(169, 254, 100, 0));
    let mut out = BTreeMap::new();
    for v in &vpn.virtual_interfaces {
        let cidr = loop {
            let cand = Ipv4Network::new(Ipv4Addr::from(next), 30).expect("a /30");
            next += 4;
            if !taken.contains(&cand) {
                break cand;
            }
        };
        out.insert(v.id.v.clone(), cidr);
    }
    out
}

/// What one tunnel's BGP session learned, as route selection compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub asns: Vec<u32>,
    pub as_path_len: usize,
    pub med: u32,
}

/// The running lab's VPN state, which the lab file does not hold: per tunnel
/// (connection id, 1 or 2), whether it is up and what BGP learned on it. Empty for a lab
/// read from a file (`vpcd trace`, `vpcd routes LAB.yaml`): static VPNs' tunnels count
/// as up, BGP ones have learned nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VpnState {
    pub tunnels: BTreeMap<(String, u8), TunnelState>,
    /// The tunnel each site prefix used in the last snapshot: among equally good paths
    /// the VGW keeps the one in use (R-VPN-TUNNELS).
    pub in_use: BTreeMap<Ipv4Network, (String, u8)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelState {
    /// BGP is established (BGP VPNs; static ones are up unless a fault took them down).
    pub established: bool,
    /// A fault (`aws:vpn:tunnel-down`) took it down: the fault's id.
    pub fault: Option<u32>,
    pub routes: BTreeMap<Ipv4Network, Learned>,
}

/// What of the VPN part differs between the running lab and a new one, in a way a
/// running lab cannot follow yet (namespaces and tunnels are built at `up`): `None` when
/// only what compiles differs (static routes, propagation).
pub fn changed_layout(old: &Lab, new: &Lab) -> Option<String> {
    fn shape(lab: &Lab) -> Vec<String> {
        let v = &lab.vpn;
        let mut s: Vec<String> = v
            .sites
            .iter()
            .map(|x| {
                let blocks: Vec<String> = x.cidr_blocks.iter().map(|c| c.v.to_string()).collect();
                let hosts: Vec<String> = x
                    .hosts
                    .iter()
                    .map(|h| {
                        format!(
                            "{}={:?}/{:?}",
                            h.id.v,
                            h.ipv4.as_ref().map(|a| a.v),
                            h.ipv6.as_ref().map(|a| a.v)
                        )
                    })
                    .collect();
                format!("site {}|{blocks:?} {hosts:?}", x.id.v)
            })
            .collect();
        s.extend(v.customer_gateways.iter().map(|c| {
            format!(
                "customer gateway {}|{} {} {} {:?}",
                c.id.v,
                c.site.v,
                c.ip_address.v,
                c.bgp_asn.v,
                c.config.as_ref().map(|f| &f.v)
            )
        }));
        s.extend(v.connections.iter().map(|c| {
            let inside: Vec<Option<Ipv4Network>> = c
                .inside_cidrs
                .iter()
                .map(|x| x.as_ref().map(|x| x.v))
                .collect();
            format!(
                "VPN connection {}|{:?} {} {} {inside:?}",
                c.id.v,
                c.virtual_private_gateway.as_ref().map(|g| &g.v),
                c.customer_gateway.v,
                c.static_routes_only
            )
        }));
        s.extend(
            v.dx_connections
                .iter()
                .map(|c| format!("Direct Connect connection {}|{}", c.id.v, c.site.v)),
        );
        s.extend(v.virtual_interfaces.iter().map(|x| {
            format!(
                "virtual interface {}|{} {} {:?} {} {} {}",
                x.id.v,
                x.connection.v,
                x.kind.v,
                x.virtual_private_gateway.as_ref().map(|g| &g.v),
                x.vlan.v,
                x.bgp_asn.v,
                x.mtu.v
            )
        }));
        s.extend(
            v.gateways
                .iter()
                .map(|g| format!("virtual private gateway {}|{}", g.id.v, g.amazon_side_asn.v)),
        );
        s
    }
    let (a, b) = (shape(old), shape(new));
    if a == b {
        return None;
    }
    let what = b
        .iter()
        .find(|x| !a.contains(x))
        .or_else(|| a.iter().find(|x| !b.contains(x)))
        .map(|x| x.split('|').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    Some(format!("the {what} would change"))
}
