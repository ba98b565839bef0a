//! VPN connections → the dataplane: a host for each site's router (its public side, at
//! the customer gateway's address) and for each tunnel's AWS end (at its outside
//! address), the tunnels, and each VGW's routes to sites, chosen by R-VPN-PRIORITY from
//! the static routes of static VPNs and what BGP learned (the running lab's
//! [`VpnState`]). What the VGW routes is what route tables with `propagating_vgws` get
//! (R-VPN-PROPAGATE).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use dataplane::route::{Route, RouteOrigin, RouteTableBuilder, Target};
use dataplane::snapshot::{Attachment, Host, HostIx, HostKind, Port, PortId, TunnelIx, VpcIx};
use dataplane::snapshot::{Topology, VpnTunnel};
use ip_network::Ipv4Network;

use super::{missing, CompileError};
use crate::bgp::selection::{self, Candidate, Origin};
use crate::model::Lab;
use crate::vpn::{inside_addresses, inside_cidrs, VpnState};

/// What the VGW of each VPC routes to sites, for route propagation.
pub(crate) type Propagated = HashMap<VpcIx, Vec<Ipv4Network>>;

/// A tunnel's name in `vpcd routes` and `trace`.
pub fn tunnel_name(vpn: &str, n: u8) -> String {
    format!("{vpn} tunnel {n}")
}

/// The namespace id of a tunnel's AWS end.
pub fn endpoint_id(vpn: &str, n: u8) -> String {
    format!("{vpn}-t{n}")
}

/// Adds the site routers and tunnel ends (hosts and ports, after the outside hosts), the
/// tunnels, and the VGW tables; returns what each VGW routes.
pub(crate) fn compile(lab: &Lab, t: &mut Topology) -> Result<Propagated, CompileError> {
    let vpn = &lab.vpn;
    let host = |t: &mut Topology, id: &str, kind: HostKind, ipv4: Ipv4Addr| {
        let port = PortId(t.ports.len() as u32);
        let ix = HostIx(t.hosts.len() as u32);
        t.ports.push(Port {
            name: id.into(),
            attachment: Attachment::Host(ix),
        });
        t.hosts.push(Host {
            id: id.into(),
            kind,
            ipv4: Some(ipv4),
            ipv6: None,
            port,
        });
        ix
    };
    // A site's router is on the internet at its customer gateway's address.
    for s in &vpn.sites {
        if let Some(cgw) = vpn.customer_gateways.iter().find(|c| c.site.v == s.id.v) {
            host(t, &s.id.v, HostKind::Internet, cgw.ip_address.v);
        }
    }
    let outside = crate::public_ips::tunnel_outside(lab).map_err(|e| {
        CompileError(format!(
            "no public IP left for {} in {}",
            e.instance, e.pool
        ))
    })?;
    let inside = inside_cidrs(vpn);
    let vpc_of: HashMap<&str, VpcIx> = crate::vpn::attached_vgws(lab)
        .into_iter()
        .map(|(g, i)| (g, VpcIx(i as u32)))
        .collect();
    for c in &vpn.connections {
        let Some(vgw) = &c.virtual_private_gateway else {
            continue;
        };
        let vpc = *vpc_of
            .get(vgw.v.as_str())
            .ok_or_else(|| missing("virtual private gateway", &vgw.v))?;
        for n in 1..=2u8 {
            let key = (c.id.v.clone(), n);
            let addr = *outside
                .get(&key)
                .ok_or_else(|| missing("tunnel outside address", &c.id.v))?;
            let cidr = *inside
                .get(&key)
                .ok_or_else(|| missing("tunnel inside CIDR", &c.id.v))?;
            let (inside_aws, inside_customer) = inside_addresses(cidr);
            let tunnel = TunnelIx(t.vpn_tunnels.len() as u32);
            let h = host(
                t,
                &endpoint_id(&c.id.v, n),
                HostKind::VpnEndpoint(tunnel),
                addr,
            );
            let fault = lab
                .vpn_state
                .tunnels
                .get(&key)
                .and_then(|s| s.fault)
                .unwrap_or(0);
            t.vpn_tunnels.push(VpnTunnel {
                vpn: c.id.v.as_str().into(),
                number: n,
                direct_connect: false,
                mtu: dataplane::vpn::TUNNEL_MTU,
                vpc,
                host: h,
                inside_aws,
                inside_customer,
                fault,
            });
        }
    }
    // Private virtual interfaces: a path to their connection's site, at the VGW.
    let vif_inside = crate::vpn::vif_inside_cidrs(vpn);
    for v in &vpn.virtual_interfaces {
        let Some(vgw) = &v.virtual_private_gateway else {
            continue;
        };
        let vpc = *vpc_of
            .get(vgw.v.as_str())
            .ok_or_else(|| missing("virtual private gateway", &vgw.v))?;
        let cidr = *vif_inside
            .get(&v.id.v)
            .ok_or_else(|| missing("virtual interface inside CIDR", &v.id.v))?;
        let (inside_aws, inside_customer) = inside_addresses(cidr);
        let tunnel = TunnelIx(t.vpn_tunnels.len() as u32);
        let h = host(t, &v.id.v, HostKind::VpnEndpoint(tunnel), inside_aws);
        let fault = lab
            .vpn_state
            .tunnels
            .get(&(v.id.v.clone(), 1))
            .and_then(|s| s.fault)
            .unwrap_or(0);
        t.vpn_tunnels.push(VpnTunnel {
            vpn: v.id.v.as_str().into(),
            number: 1,
            direct_connect: true,
            mtu: u16::try_from(v.mtu.v).unwrap_or(1500),
            vpc,
            host: h,
            inside_aws,
            inside_customer,
            fault,
        });
    }
    Ok(vgw_tables(lab, t, &vpc_of))
}

/// Each VGW's routes: per prefix, the path R-VPN-PRIORITY prefers among the tunnels that
/// offer it (a tunnel a fault took down offers nothing; a BGP tunnel offers what its
/// session learned while it is established).
fn vgw_tables(lab: &Lab, t: &mut Topology, vpc_of: &HashMap<&str, VpcIx>) -> Propagated {
    let state: &VpnState = &lab.vpn_state;
    let mut offers: BTreeMap<VpcIx, BTreeMap<Ipv4Network, Vec<Candidate<TunnelIx>>>> =
        BTreeMap::new();
    for (ti, tun) in t.vpn_tunnels.iter().enumerate() {
        let tunnel = TunnelIx(ti as u32);
        if tun.fault != 0 {
            continue;
        }
        let per_vpc = offers.entry(tun.vpc).or_default();
        let learned = |origin: Origin, per_vpc: &mut BTreeMap<_, Vec<_>>| {
            let Some(s) = state.tunnels.get(&(tun.vpn.to_string(), tun.number)) else {
                return;
            };
            if !s.established {
                return;
            }
            for (prefix, l) in &s.routes {
                per_vpc.entry(*prefix).or_default().push(Candidate {
                    via: tunnel,
                    origin,
                    asns: l.asns.clone(),
                    as_path_len: l.as_path_len,
                    med: l.med,
                });
            }
        };
        if tun.direct_connect {
            learned(Origin::DirectConnect, per_vpc);
            continue;
        }
        let Some(c) = lab.vpn.connections.iter().find(|c| *c.id.v == *tun.vpn) else {
            continue;
        };
        if c.static_routes_only {
            for r in &c.routes {
                per_vpc.entry(r.v).or_default().push(Candidate {
                    via: tunnel,
                    origin: Origin::StaticVpn,
                    asns: Vec::new(),
                    as_path_len: 0,
                    med: 0,
                });
            }
        } else {
            learned(Origin::BgpVpn, per_vpc);
        }
    }
    let mut propagated = Propagated::new();
    for (vgw, vpc) in vpc_of {
        let Some(per_prefix) = offers.remove(vpc) else {
            continue;
        };
        let mut b = RouteTableBuilder::new(vgw, *vpc);
        let mut routed = Vec::new();
        for (prefix, cands) in &per_prefix {
            let current = state.in_use.get(prefix).and_then(|(vpn, n)| {
                t.vpn_tunnels
                    .iter()
                    .position(|x| *x.vpn == **vpn && x.number == *n)
                    .map(|i| TunnelIx(i as u32))
            });
            let Some(best) = selection::best(cands, current.as_ref()) else {
                continue;
            };
            let tun = &t.vpn_tunnels[best.via.ix()];
            b.add(
                (*prefix).into(),
                Route {
                    destination: prefix.to_string().into(),
                    origin: RouteOrigin::Propagated,
                    target: Target::VpnTunnel(best.via),
                    target_name: format!(
                        "{} ({})",
                        if tun.direct_connect {
                            tun.vpn.to_string()
                        } else {
                            tunnel_name(&tun.vpn, tun.number)
                        },
                        best.origin.name()
                    )
                    .into(),
                },
            );
            routed.push(*prefix);
        }
        t.vpcs[vpc.ix()].vgw_routes = Some(t.vgw_routes.len() as u32);
        t.vgw_routes.push(b.build());
        propagated.insert(*vpc, routed);
    }
    propagated
}
