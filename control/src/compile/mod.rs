//! A valid lab → the dataplane's [`Topology`] and immutable [`Snapshot`].
//!
//! Runs only on labs that passed [`crate::validate`], so every reference resolves; a
//! reference that does not is a bug here, reported as an error rather than a panic.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dataplane::route::{Route, RouteOrigin, RouteTableBuilder, Target};
use dataplane::snapshot::{
    Attachment, Eni, EniIx, EniKind, GatewayEndpoint, GatewayEndpointIx, Host, HostKind,
    InterfaceEndpoint, InterfaceEndpointIx, NatGateway, NatGatewayIx, Peering, PeeringIx,
    PolicyRule, Port, PortId, PortRange, RouteTableIx, Service, ServiceIx, SgIx, Subnet, SubnetIx,
    Vpc, VpcIx,
};
use dataplane::{Snapshot, Topology};
use ip_network::IpNetwork;

use crate::model::{self, Destination, EndpointKind, Lab};
use dataplane::flow_log::{Scope as FlowScope, TrafficType};

mod acl;
mod vpn;
pub use acl::proto_match;
pub use vpn::{endpoint_id, tunnel_name};

#[derive(Debug, thiserror::Error)]
#[error("internal error while compiling the lab: {0}")]
pub struct CompileError(pub(crate) String);

/// Compiles a validated lab into a snapshot of generation `generation`.
pub fn compile(lab: &Lab, generation: u64) -> Result<Snapshot, CompileError> {
    Ok(Snapshot::new(topology(lab)?, generation))
}

/// Index of every named object, filled as the topology is built.
#[derive(Default)]
struct Names {
    vpc: HashMap<String, VpcIx>,
    subnet: HashMap<String, SubnetIx>,
    eni: HashMap<String, EniIx>,
    nat: HashMap<String, NatGatewayIx>,
    peering: HashMap<String, PeeringIx>,
    gwe: HashMap<String, GatewayEndpointIx>,
    service_by_name: HashMap<String, ServiceIx>,
    service_by_pl: HashMap<String, ServiceIx>,
}

pub(crate) fn missing(what: &str, id: &str) -> CompileError {
    CompileError(format!("{what} `{id}` was not found"))
}

/// Builds the topology: plain vectors that refer to each other by index.
pub fn topology(lab: &Lab) -> Result<Topology, CompileError> {
    let mut t = Topology {
        region: lab.region.v.as_str().into(),
        account_id: lab.account_id.v.as_str().into(),
        ..Topology::default()
    };
    let mut n = Names::default();

    for (i, s) in lab.services.iter().enumerate() {
        n.service_by_name
            .insert(s.name.v.clone(), ServiceIx(i as u32));
        n.service_by_pl
            .insert(s.prefix_list.v.clone(), ServiceIx(i as u32));
        t.services.push(Service {
            name: s.name.v.as_str().into(),
            prefix_list: s.prefix_list.v.as_str().into(),
            dns_name: s.dns_name.as_ref().map(|d| d.v.as_str().into()),
            cidrs: s.cidr_blocks.iter().map(|c| c.v).collect(),
        });
    }
    for (i, p) in lab.peering_connections.iter().enumerate() {
        n.peering.insert(p.id.v.clone(), PeeringIx(i as u32));
    }
    for (vi, v) in lab.vpcs.iter().enumerate() {
        n.vpc.insert(v.id.v.clone(), VpcIx(vi as u32));
        t.vpcs.push(Vpc {
            id: v.id.v.as_str().into(),
            zone: vi as u32,
            cidrs_v4: v.cidrs_v4().map(|c| c.v).collect(),
            cidr_v6: v.ipv6_cidr_block.as_ref().map(|c| c.v),
            internet_gateway: v.internet_gateway.as_ref().map(|g| g.v.as_str().into()),
            egress_only_internet_gateway: v
                .egress_only_internet_gateway
                .as_ref()
                .map(|g| g.v.as_str().into()),
            virtual_private_gateway: v
                .virtual_private_gateway
                .as_ref()
                .map(|g| g.v.as_str().into()),
            enable_dns_support: v.enable_dns_support,
            vgw_routes: None,
        });
    }
    for p in &lab.peering_connections {
        let requester = *n
            .vpc
            .get(&p.requester_vpc.v)
            .ok_or_else(|| missing("VPC", &p.requester_vpc.v))?;
        let accepter = *n
            .vpc
            .get(&p.accepter_vpc.v)
            .ok_or_else(|| missing("VPC", &p.accepter_vpc.v))?;
        t.peerings.push(Peering {
            id: p.id.v.as_str().into(),
            requester,
            accepter,
            active: p.status.v == "active",
            allow_dns: p.allow_dns_resolution_from_remote_vpc,
        });
    }

    let (groups, acls, acl_names) = acl::compile(lab, &n.service_by_pl)?;
    let launched = crate::public_ips::assign(lab).map_err(|e| {
        CompileError(format!(
            "no public IP left for {} in {}",
            e.instance, e.pool
        ))
    })?;
    t.security_groups = groups;
    t.network_acls = acls;

    // Instances first: their ports are numbered in file order, then the outside hosts.
    for (vi, v) in lab.vpcs.iter().enumerate() {
        for inst in &v.instances {
            let port = PortId(t.ports.len() as u32);
            let eni = EniIx(t.enis.len() as u32);
            t.ports.push(Port {
                name: inst.id.v.as_str().into(),
                attachment: Attachment::Eni(eni),
            });
            n.eni.insert(inst.id.v.clone(), eni);
            let subnet_ix = subnet_index(lab, vi, &inst.subnet.v)?;
            t.enis.push(Eni {
                id: inst.id.v.as_str().into(),
                zone: eni.0,
                kind: EniKind::Instance,
                vpc: VpcIx(vi as u32),
                subnet: subnet_ix,
                port: Some(port),
                private_v4: inst
                    .private_ip
                    .iter()
                    .chain(inst.secondary_private_ips.iter())
                    .map(|a| a.v)
                    .collect(),
                ipv6: inst.ipv6_address.iter().map(|a| a.v).collect(),
                public_v4: inst
                    .public_ip
                    .as_ref()
                    .map(|p| p.v)
                    .or_else(|| launched.get(&inst.id.v).copied()),
                source_dest_check: inst.source_dest_check,
                // Omitted: the VPC's default group (config.md).
                security_groups: if inst.security_groups.is_empty() {
                    vec![acl_names.sg(vi, acl::DEFAULT)?]
                } else {
                    inst.security_groups
                        .iter()
                        .map(|g| acl_names.sg(vi, &g.v))
                        .collect::<Result<_, _>>()?
                },
                timeouts: acl::timeouts(inst.connection_tracking.as_ref()),
                sg_open: 0,
                imds_v1: inst.imds_v1,
                flow_log_interval: 0,
                stopped: 0,
            });
        }
    }
    let host = |t: &mut Topology, h: &model::OutsideHost, kind: HostKind| {
        let port = PortId(t.ports.len() as u32);
        let ix = dataplane::snapshot::HostIx(t.hosts.len() as u32);
        t.ports.push(Port {
            name: h.id.v.as_str().into(),
            attachment: Attachment::Host(ix),
        });
        t.hosts.push(Host {
            id: h.id.v.as_str().into(),
            kind,
            ipv4: h.ipv4.as_ref().map(|a| a.v),
            ipv6: h.ipv6.as_ref().map(|a| a.v),
            port,
        });
    };
    for h in &lab.internet {
        host(&mut t, h, HostKind::Internet);
    }
    for (si, s) in lab.services.iter().enumerate() {
        for h in &s.hosts {
            host(&mut t, h, HostKind::Service(ServiceIx(si as u32)));
        }
    }
    if let Some(op) = &lab.on_premises {
        for h in &op.hosts {
            host(&mut t, h, HostKind::OnPremises);
        }
    }
    // Site routers and tunnel ends, after the outside hosts; the VGWs' routes to sites.
    let propagated = vpn::compile(lab, &mut t)?;

    // Subnets, NAT gateways (an ENI each, inside vpcd), gateway endpoints.
    let mut subnet_base = 0u32;
    for (vi, v) in lab.vpcs.iter().enumerate() {
        let vpc = VpcIx(vi as u32);
        let first_table = t.route_tables.len() as u32;
        let main = v
            .route_tables
            .iter()
            .position(|rt| rt.main.as_ref().is_some_and(|m| m.v))
            .unwrap_or(v.route_tables.len());
        for (si, s) in v.subnets.iter().enumerate() {
            n.subnet
                .insert(s.id.v.clone(), SubnetIx(subnet_base + si as u32));
            let table = match &s.route_table {
                Some(rt) => table_index(v, &rt.v, main)?,
                None => main,
            };
            t.subnets.push(Subnet {
                id: s.id.v.as_str().into(),
                vpc,
                cidr_v4: s.cidr_block.as_ref().map(|c| c.v),
                cidr_v6: s.ipv6_cidr_block.as_ref().map(|c| c.v),
                dns64: s.enable_dns64,
                disruption: None,
                availability_zone: s
                    .availability_zone
                    .as_ref()
                    .map_or_else(|| format!("{}a", lab.region.v), |z| z.v.clone())
                    .into(),
                route_table: RouteTableIx(first_table + table as u32),
                network_acl: acl_names.nacl(vi, s.network_acl.as_ref().map(|a| a.v.as_str()))?,
            });
        }
        subnet_base += v.subnets.len() as u32;
        let mut taken: Vec<Ipv4Addr> = v
            .instances
            .iter()
            .flat_map(|i| {
                i.private_ip
                    .iter()
                    .chain(i.secondary_private_ips.iter())
                    .map(|a| a.v)
            })
            .collect();
        for nat in &v.nat_gateways {
            let subnet = *n
                .subnet
                .get(&nat.subnet.v)
                .ok_or_else(|| missing("subnet", &nat.subnet.v))?;
            let cidr = t.subnets[subnet.ix()].cidr_v4;
            let private_ip = match &nat.private_ip {
                Some(ip) => ip.v,
                None => cidr
                    .and_then(|c| first_free(c, &taken))
                    .ok_or_else(|| CompileError(format!("no free address for {}", nat.id.v)))?,
            };
            taken.push(private_ip);
            let ix = NatGatewayIx(t.nat_gateways.len() as u32);
            let eni = EniIx(t.enis.len() as u32);
            n.nat.insert(nat.id.v.clone(), ix);
            t.enis.push(Eni {
                id: nat.id.v.as_str().into(),
                zone: eni.0,
                kind: EniKind::NatGateway(ix),
                vpc,
                subnet,
                port: None,
                private_v4: vec![private_ip],
                ipv6: Vec::new(),
                public_v4: nat.public_ip.as_ref().map(|p| p.v),
                // A NAT gateway forwards for others, and has no security group (R-NAT-NOSG).
                source_dest_check: false,
                security_groups: Vec::new(),
                timeouts: Default::default(),
                sg_open: 0,
                imds_v1: false,
                flow_log_interval: 0,
                stopped: 0,
            });
            t.nat_gateways.push(NatGateway {
                id: nat.id.v.as_str().into(),
                zone: ix.0,
                vpc,
                subnet,
                eni,
                private_ip,
                public_ip: nat.public_ip.as_ref().map(|p| p.v),
                failed: 0,
            });
        }
        for ep in &v.endpoints {
            if let EndpointKind::Interface {
                subnets,
                security_groups,
                private_dns,
            } = &ep.kind
            {
                let service = *n
                    .service_by_name
                    .get(&ep.service.v)
                    .ok_or_else(|| missing("service", &ep.service.v))?;
                let ife = InterfaceEndpointIx(t.interface_endpoints.len() as u32);
                let groups: Vec<SgIx> = if security_groups.is_empty() {
                    vec![acl_names.sg(vi, acl::DEFAULT)?]
                } else {
                    security_groups
                        .iter()
                        .map(|g| acl_names.sg(vi, &g.v))
                        .collect::<Result<_, _>>()?
                };
                let mut enis = Vec::new();
                for sn in subnets {
                    let subnet = *n
                        .subnet
                        .get(&sn.v)
                        .ok_or_else(|| missing("subnet", &sn.v))?;
                    let cidr = t.subnets[subnet.ix()].cidr_v4;
                    // R-IFE-ENI: a private IP in each subnet, the first free one.
                    let ip = cidr.and_then(|c| first_free(c, &taken)).ok_or_else(|| {
                        CompileError(format!("no free address for {} in {}", ep.id.v, sn.v))
                    })?;
                    taken.push(ip);
                    let eni = EniIx(t.enis.len() as u32);
                    t.enis.push(Eni {
                        id: format!("{}-{}", ep.id.v, sn.v).into(),
                        zone: eni.0,
                        kind: EniKind::InterfaceEndpoint(ife),
                        vpc,
                        subnet,
                        port: None,
                        private_v4: vec![ip],
                        ipv6: Vec::new(),
                        public_v4: None,
                        source_dest_check: true,
                        security_groups: groups.clone(),
                        timeouts: Default::default(),
                        sg_open: 0,
                        imds_v1: false,
                        flow_log_interval: 0,
                        stopped: 0,
                    });
                    enis.push(eni);
                }
                let hosts = t
                    .hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.kind == HostKind::Service(service) && h.ipv4.is_some())
                    .map(|(i, _)| dataplane::snapshot::HostIx(i as u32))
                    .collect();
                t.interface_endpoints.push(InterfaceEndpoint {
                    id: ep.id.v.as_str().into(),
                    vpc,
                    service,
                    enis,
                    hosts,
                    private_dns: *private_dns,
                });
            }
            if let EndpointKind::Gateway { policy, .. } = &ep.kind {
                let service = *n
                    .service_by_name
                    .get(&ep.service.v)
                    .ok_or_else(|| missing("service", &ep.service.v))?;
                n.gwe.insert(
                    ep.id.v.clone(),
                    GatewayEndpointIx(t.gateway_endpoints.len() as u32),
                );
                let policy = policy.as_ref().map(|p| {
                    p.iter()
                        .map(|a| PolicyRule {
                            destination: a.destination.v,
                            ports: a.port_range.as_ref().map_or(PortRange::ANY, |r| PortRange {
                                from: r.v.0,
                                to: r.v.1,
                            }),
                        })
                        .collect()
                });
                t.gateway_endpoints.push(GatewayEndpoint {
                    id: ep.id.v.as_str().into(),
                    vpc,
                    service,
                    policy,
                });
            }
        }
        for fl in &v.flow_logs {
            let r = fl.resource.v.as_str();
            let scope = if r == v.id.v {
                FlowScope::Vpc(vpc)
            } else if let Some(sn) = n.subnet.get(r) {
                FlowScope::Subnet(*sn)
            } else if let Some(e) = n.eni.get(r) {
                FlowScope::Eni(*e)
            } else {
                return Err(missing("flow log resource", r));
            };
            let format: Vec<Box<str>> = if fl.log_format.v == "default" {
                dataplane::flow_log::DEFAULT_FORMAT
                    .iter()
                    .map(|f| (*f).into())
                    .collect()
            } else {
                fl.log_format
                    .v
                    .split("${")
                    .skip(1)
                    .filter_map(|p| p.split_once('}').map(|(name, _)| name.into()))
                    .collect()
            };
            t.flow_logs.push(dataplane::flow_log::FlowLog {
                id: fl.id.v.as_str().into(),
                scope,
                traffic_type: match fl.traffic_type.v.as_str() {
                    "ACCEPT" => TrafficType::Accept,
                    "REJECT" => TrafficType::Reject,
                    _ => TrafficType::All,
                },
                interval: fl.max_aggregation_interval.v.min(u32::MAX as u64) as u32,
                format,
                destination: fl.destination.v.as_str().into(),
            });
        }
        // Route tables: the explicit ones in order, then the implicit main one if no table
        // is marked main.
        let vgw_prefixes = propagated.get(&vpc).map_or(&[][..], Vec::as_slice);
        for (i, rt) in v.route_tables.iter().enumerate() {
            let propagates = v
                .virtual_private_gateway
                .as_ref()
                .is_some_and(|g| rt.propagating_vgws.iter().any(|p| p.v == g.v));
            let from_vgw = if propagates { vgw_prefixes } else { &[] };
            let table = route_table(
                lab,
                v,
                vpc,
                (&rt.id.v, i == main),
                &rt.routes,
                from_vgw,
                &n,
                &t,
            )?;
            t.route_tables.push(table);
        }
        if main == v.route_tables.len() {
            let table = route_table(lab, v, vpc, ("main", true), &[], &[], &n, &t)?;
            t.route_tables.push(table);
        }
    }
    let mirroring = crate::traffic_mirror::compile(&lab.traffic_mirror, |id| {
        n.eni.get(id).map(|e| (*e, t.enis[e.ix()].port))
    });
    t.traffic_mirror = mirroring;
    Ok(t)
}

/// The position of route table `id` in the VPC's tables; `main` names the main one (the
/// table marked `main: true`, or the implicit one after the explicit tables).
fn table_index(v: &model::Vpc, id: &str, main: usize) -> Result<usize, CompileError> {
    match v.route_tables.iter().position(|x| x.id.v == id) {
        Some(i) => Ok(i),
        None if id == "main" => Ok(main),
        None => Err(missing("route table", id)),
    }
}

fn subnet_index(lab: &Lab, vi: usize, id: &str) -> Result<SubnetIx, CompileError> {
    let before: usize = lab.vpcs[..vi].iter().map(|v| v.subnets.len()).sum();
    let pos = lab.vpcs[vi]
        .subnets
        .iter()
        .position(|s| s.id.v == id)
        .ok_or_else(|| missing("subnet", id))?;
    Ok(SubnetIx((before + pos) as u32))
}

fn first_free(cidr: ip_network::Ipv4Network, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let base = u32::from(cidr.network_address());
    let last = u32::from(cidr.broadcast_address());
    (base + 4..last)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
}

/// One route table: the implicit local routes (R-RT-LOCAL), the written routes, and the
/// prefix-list routes of gateway endpoints that name this table (R-GWE-ROUTE).
#[allow(clippy::too_many_arguments)]
fn route_table(
    lab: &Lab,
    v: &model::Vpc,
    vpc: VpcIx,
    (id, is_main): (&str, bool),
    routes: &[model::Route],
    propagated: &[ip_network::Ipv4Network],
    n: &Names,
    t: &Topology,
) -> Result<dataplane::route::RouteTable, CompileError> {
    let mut b = RouteTableBuilder::new(id, vpc);
    let local = |dest: IpNetwork| Route {
        destination: dest.to_string().into(),
        origin: RouteOrigin::Local,
        target: Target::Local,
        target_name: "local".into(),
    };
    for c in v.cidrs_v4() {
        b.add(c.v.into(), local(c.v.into()));
    }
    if let Some(c6) = &v.ipv6_cidr_block {
        b.add(c6.v.into(), local(c6.v.into()));
    }
    for r in routes {
        // R-RT-BLACKHOLE: a deleted target (`state: blackhole`) drops what it matches.
        let target = if r.blackhole {
            Target::Blackhole
        } else {
            resolve_target(v, vpc, &r.target.v, n)?
        };
        match &r.destination.v {
            // A VPC block: the local route, its target replaced (middlebox inspection).
            Destination::Cidr(net) if b.has_local(*net) => b.replace_local(
                *net,
                Route {
                    destination: net.to_string().into(),
                    origin: RouteOrigin::Local,
                    target,
                    target_name: r.target.v.as_str().into(),
                },
            ),
            Destination::Cidr(net) => b.add(
                *net,
                Route {
                    destination: net.to_string().into(),
                    origin: RouteOrigin::Static,
                    target,
                    target_name: r.target.v.as_str().into(),
                },
            ),
            Destination::PrefixList(pl) => {
                let svc = *n
                    .service_by_pl
                    .get(pl)
                    .ok_or_else(|| missing("prefix list", pl))?;
                for c in &t.services[svc.ix()].cidrs {
                    b.add(
                        *c,
                        Route {
                            destination: pl.as_str().into(),
                            origin: RouteOrigin::PrefixList,
                            target,
                            target_name: r.target.v.as_str().into(),
                        },
                    );
                }
            }
        }
    }
    for ep in &v.endpoints {
        if let EndpointKind::Gateway { route_tables, .. } = &ep.kind {
            if route_tables
                .iter()
                .any(|r| r.v == id || (is_main && r.v == "main"))
            {
                let gwe = *n
                    .gwe
                    .get(&ep.id.v)
                    .ok_or_else(|| missing("endpoint", &ep.id.v))?;
                let svc = &lab.services[n
                    .service_by_name
                    .get(&ep.service.v)
                    .ok_or_else(|| missing("service", &ep.service.v))?
                    .ix()];
                for c in &svc.cidr_blocks {
                    b.add(
                        c.v,
                        Route {
                            destination: svc.prefix_list.v.as_str().into(),
                            origin: RouteOrigin::PrefixList,
                            target: Target::GatewayEndpoint(gwe),
                            target_name: ep.id.v.as_str().into(),
                        },
                    );
                }
            }
        }
    }
    // R-VPN-PROPAGATE: the VGW's routes to sites, below static and prefix-list routes of
    // the same prefix (R-RT-LPM, by origin); the local route always wins, also over a
    // more specific propagated route inside the VPC's blocks (R-VPN-PRIORITY).
    if let Some(vgw) = &v.virtual_private_gateway {
        for p in propagated {
            if v.cidrs_v4()
                .any(|c| c.v.contains(p.network_address()) && p.netmask() >= c.v.netmask())
            {
                continue;
            }
            b.add(
                (*p).into(),
                Route {
                    destination: p.to_string().into(),
                    origin: RouteOrigin::Propagated,
                    target: Target::VirtualPrivateGateway(vpc),
                    target_name: vgw.v.as_str().into(),
                },
            );
        }
    }
    Ok(b.build())
}

fn resolve_target(
    v: &model::Vpc,
    vpc: VpcIx,
    name: &str,
    n: &Names,
) -> Result<Target, CompileError> {
    let is = |g: &Option<crate::diag::S<String>>| g.as_ref().is_some_and(|g| g.v == name);
    Ok(if name == "blackhole" {
        Target::Blackhole
    } else if is(&v.internet_gateway) {
        Target::InternetGateway(vpc)
    } else if is(&v.egress_only_internet_gateway) {
        Target::EgressOnlyInternetGateway(vpc)
    } else if is(&v.virtual_private_gateway) {
        Target::VirtualPrivateGateway(vpc)
    } else if let Some(x) = n.nat.get(name) {
        Target::NatGateway(*x)
    } else if let Some(x) = n.peering.get(name) {
        Target::Peering(*x)
    } else if let Some(x) = n.gwe.get(name) {
        Target::GatewayEndpoint(*x)
    } else if let Some(x) = n.eni.get(name) {
        Target::Eni(*x)
    } else {
        return Err(missing("route target", name));
    })
}
