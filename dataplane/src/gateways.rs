//! Route targets beyond the VPC and the way back in: internet gateway (§5), virtual
//! private gateway (§10), peering (§8), gateway endpoints (§9), and the simulated outside
//! world that sits behind them.
//!
//! The outside world is flat: every internet host and service host is reachable from every
//! other one and from any IGW; on-premises hosts are reached through a VGW only.

use std::net::IpAddr;

use crate::conntrack::{zone, FlowKey, Timeouts};
use crate::icmp_error::{packet_too_big, too_big, Sender, INTERNET_MTU};
use crate::nat::{rewrite_quote_v4, rewrite_v4, Field};
use crate::observer::{Direction, Observer, Step};
use crate::packet::Packet;
use crate::pipeline::{deliver_in_vpc, to_eni, Ctx, Verdict};
use crate::reason::DropReason;
use crate::route::{net_contains, Target};
use crate::snapshot::{EniIx, EniKind, GatewayEndpointIx, HostIx, HostKind, PeeringIx, VpcIx};

/// A packet from an outside host: the internet and services reach VPCs through their IGW
/// (and, for service replies, the gateway endpoint the flow used); on-premises hosts
/// through the VGW.
pub(crate) fn from_outside<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    host: HostIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let kind = snap.host(host).kind;
    // A tunnel's AWS end: its own packets (from its outside address) cross the internet;
    // everything else it sends came out of the tunnel.
    if let HostKind::VpnEndpoint(tunnel) = kind {
        if snap.vpn_tunnel(tunnel).direct_connect
            || snap.host(host).ipv4.map(IpAddr::V4) != Some(pkt.src)
        {
            return crate::vpn::ingress(cx, tunnel, pkt, buf);
        }
    }
    if kind == HostKind::OnPremises {
        // The size first: the VGW's lookup runs again in from_on_premises.
        if too_big(pkt, INTERNET_MTU) && snap.vgw_vpc_by_addr(pkt.dst).is_some() {
            if let Some(v) = inbound_too_big(cx, host, pkt, buf) {
                return v;
            }
        }
        return from_on_premises(cx, pkt, buf);
    }
    // Host to host on the simulated internet.
    if let Some(other) = snap.host_by_addr(pkt.dst) {
        if snap.host(other).kind != HostKind::OnPremises {
            return to_host(cx, other);
        }
    }
    // A service host answering a connection an interface endpoint carried (R-IFE-DNS).
    if let HostKind::Service(_) = kind {
        if let Some(v) = crate::interface_endpoint::reply(cx, pkt, buf) {
            return v;
        }
    }
    // A service host answering a client that reached it through a gateway endpoint: the
    // client's private address is the destination (R-GWE-ROUTE).
    if let HostKind::Service(service) = kind {
        if let Some(v) = gateway_endpoint_return(cx, service, pkt, buf) {
            return v;
        }
    }
    // Only for a packet the IGW would deliver: one for a public IPv4 nobody holds is
    // IGW_NO_PUBLIC_IP, too big or not.
    let deliverable = |a: &IpAddr| match a {
        IpAddr::V4(public) => snap.eni_by_public_v4(*public).is_some(),
        IpAddr::V6(_) => true,
    };
    if too_big(pkt, INTERNET_MTU) && deliverable(&pkt.dst) {
        if let Some(v) = inbound_too_big(cx, host, pkt, buf) {
            return v;
        }
    }
    internet_gateway_ingress(cx, pkt, buf)
}

/// Through an IGW into a VPC: IPv4 to a public IP is translated to the private one
/// (R-IGW-NAT); IPv6 passes unchanged (R-IGW-V6).
fn internet_gateway_ingress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    match pkt.dst {
        IpAddr::V4(public) => {
            let Some(receiver) = snap.eni_by_public_v4(public) else {
                return cx.drop(
                    DropReason::IgwNoPublicIp,
                    "no ENI holds this public IPv4 address",
                );
            };
            let eni = snap.eni(receiver);
            if snap.vpc(eni.vpc).internet_gateway.is_none() {
                return cx.drop(
                    DropReason::IgwNoPublicIp,
                    "the public IP's VPC has no internet gateway",
                );
            }
            let Some(private) = eni.primary_v4() else {
                return cx.drop(
                    DropReason::IgwNoPublicIp,
                    "the public IP's ENI has no private IPv4 address",
                );
            };
            // An ICMP error quotes the packet as it left the IGW, with the public source:
            // the quote is mapped back too (R-IGW-NAT), or the instance (or NAT gateway)
            // could not match it to its flow.
            if let Some(inner) = crate::nat::embedded(buf, pkt) {
                if inner.src == pkt.dst {
                    let port = inner.src_port;
                    rewrite_quote_v4(buf, pkt, &inner, Field::Source, private, port);
                }
            }
            let translated = rewrite_v4(buf, pkt, Field::Destination, private);
            cx.obs.step(Step::InternetGateway {
                vpc: eni.vpc,
                from: pkt.dst,
                to: translated.dst,
            });
            to_eni(cx, receiver, &translated, buf, None)
        }
        IpAddr::V6(addr) => {
            let Some(vpc) = snap.vpc_by_v6(addr) else {
                return cx.drop(
                    DropReason::NoRoute,
                    "no host or VPC on the simulated internet holds this address",
                );
            };
            let v = snap.vpc(vpc);
            // semantics.md is silent on which subnet inbound traffic may reach. AWS's IGW
            // (without an edge-associated gateway route table, which config.md has no field
            // for) delivers by the VPC's local route: the destination subnet's own table
            // only decides the reply path (R-RT-SUBNET). So an IPv6 subnet that sends ::/0
            // to an EIGW is still reachable through the VPC's IGW; its SGs keep it closed.
            if v.internet_gateway.is_some() {
                cx.obs.step(Step::InternetGateway {
                    vpc,
                    from: pkt.dst,
                    to: pkt.dst,
                });
                return deliver_in_vpc(cx, vpc, pkt, buf);
            }
            if v.egress_only_internet_gateway.is_some() {
                // R-EIGW: only replies of flows opened from inside (and ICMPv6 errors about
                // them, such as packet-too-big for path-MTU discovery) get in.
                if egress_only_state(cx, vpc, pkt, buf) {
                    cx.obs.step(Step::InternetGateway {
                        vpc,
                        from: pkt.dst,
                        to: pkt.dst,
                    });
                    return deliver_in_vpc(cx, vpc, pkt, buf);
                }
                return cx.drop(
                    DropReason::EigwInbound,
                    "the VPC's egress-only gateway admits replies only",
                );
            }
            cx.drop(DropReason::NoRoute, "the VPC has no internet gateway")
        }
    }
}

/// A route to the IGW: translate the private IPv4 source to the ENI's public IP
/// (R-IGW-NAT, R-IGW-NOPUBLIC), pass IPv6 unchanged (R-IGW-V6), then hand the packet to
/// the host that holds the destination, or back into a VPC for a public IP (R-IGW-HAIRPIN).
/// `src_owner`: the ENI of `vpc` that holds the source address, as the caller found it.
pub(crate) fn internet_gateway_egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    src_owner: Option<EniIx>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    if let Some(v) = outbound_too_big(cx, vpc, pkt, buf) {
        return v;
    }
    let out = match pkt.src {
        IpAddr::V4(_) => {
            // R-IGW-NAT: the public IP belongs to the ENI's primary private IPv4 only.
            let public = src_owner
                .map(|e| snap.eni(e))
                .filter(|e| e.primary_v4().map(IpAddr::V4) == Some(pkt.src))
                .and_then(|e| e.public_v4);
            let Some(public) = public else {
                return cx.drop(
                    DropReason::IgwNoPublicIp,
                    "the source has no public IPv4 address",
                );
            };
            // An ICMP error the instance sends quotes a packet addressed to its private
            // address: the outside sent it to the public one.
            if let Some(inner) = crate::nat::embedded(buf, pkt) {
                if inner.dst == pkt.src {
                    let port = inner.dst_port;
                    rewrite_quote_v4(buf, pkt, &inner, Field::Destination, public, port);
                }
            }
            rewrite_v4(buf, pkt, Field::Source, public)
        }
        IpAddr::V6(_) => *pkt,
    };
    cx.obs.step(Step::InternetGateway {
        vpc,
        from: pkt.src,
        to: out.src,
    });
    if let Some(host) = snap.host_by_addr(out.dst) {
        if snap.host(host).kind != HostKind::OnPremises {
            return to_host(cx, host);
        }
    }
    if let IpAddr::V4(dst) = out.dst {
        if snap.eni_by_public_v4(dst).is_none() {
            // Out on the internet, but the lab's internet is only the hosts it lists:
            // nobody would answer. Said as it is, not as an unmapped public IP.
            return cx.drop(
                DropReason::IgwNoPublicIp,
                "nothing in the lab has this address: no internet host, and no ENI as its public IP",
            );
        }
    }
    internet_gateway_ingress(cx, &out, buf)
}

/// A route to the EIGW: IPv6 only, source unchanged (R-EIGW).
pub(crate) fn egress_only_gateway_egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    if !pkt.is_ipv6() {
        return cx.drop(
            DropReason::NoRoute,
            "an egress-only internet gateway carries IPv6 only",
        );
    }
    if let Some(v) = outbound_too_big(cx, vpc, pkt, buf) {
        return v;
    }
    // R-EIGW: outbound traffic creates (or refreshes) the state replies are matched
    // against. An ICMPv6 error opens nothing.
    if !pkt.is_icmp_error() {
        let key = FlowKey::at_gateway(zone::EIGW | snap.vpc(vpc).zone, Direction::Egress, pkt);
        let t = Timeouts::default();
        match cx.ct.lookup(&key, cx.now) {
            Some(hit) => cx.ct.refresh(hit, Direction::Egress, pkt, cx.now, &t),
            None => {
                if cx
                    .ct
                    .insert(&key, Direction::Egress, pkt, cx.now, &t)
                    .is_err()
                {
                    return cx.drop(
                        DropReason::TableFull,
                        "the flow table has no room for the egress-only gateway's state",
                    );
                }
            }
        }
    }
    cx.obs.step(Step::InternetGateway {
        vpc,
        from: pkt.src,
        to: pkt.src,
    });
    if let Some(host) = snap.host_by_addr(pkt.dst) {
        if snap.host(host).kind != HostKind::OnPremises {
            return to_host(cx, host);
        }
    }
    internet_gateway_ingress(cx, pkt, buf)
}

/// A packet addressed to an ENI that lives inside vpcd (a NAT gateway's).
pub(crate) fn to_internal_eni<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    receiver: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    match snap.eni(receiver).kind {
        // Replies of translated connections; anything else is refused (R-NAT-INBOUND).
        EniKind::NatGateway(nat) => crate::nat_gateway::ingress(cx, nat, pkt, buf),
        EniKind::InterfaceEndpoint(ife) => {
            crate::interface_endpoint::ingress(cx, ife, receiver, pkt, buf)
        }
        // Every instance ENI has a port; one without is not part of the configuration.
        EniKind::Instance => cx.drop(
            DropReason::NoRoute,
            "the instance has no port in this configuration",
        ),
    }
}

/// The path beyond this gateway is 1500 bytes (R-IGW-MTU, R-VGW-MTU): an instance sending
/// more, with DF, gets "fragmentation needed" / "packet too big" from its subnet's router.
fn outbound_too_big<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Option<Verdict> {
    if !too_big(pkt, INTERNET_MTU) {
        return None;
    }
    let snap = cx.snap;
    let Some((eni_ix, port)) = snap
        .eni_by_addr(vpc, pkt.src)
        .and_then(|e| snap.eni(e).port.map(|p| (e, p)))
    else {
        return Some(cx.drop(DropReason::MtuExceeded, "larger than the path MTU (1500)"));
    };
    let subnet = snap.subnet(snap.eni(eni_ix).subnet);
    let Some(router) = subnet.router_for(pkt.is_ipv6()) else {
        return Some(cx.drop(DropReason::MtuExceeded, "larger than the path MTU"));
    };
    Some(packet_too_big(
        cx,
        pkt,
        buf,
        INTERNET_MTU,
        router,
        Sender {
            port,
            eni: Some(eni_ix),
        },
    ))
}

/// The same for a packet from an outside host towards a VPC: the error comes from the
/// address the host sent to.
fn inbound_too_big<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    host: HostIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Option<Verdict> {
    if !too_big(pkt, INTERNET_MTU) {
        return None;
    }
    let port = cx.snap.host(host).port;
    // R-IGW-MTU says the error comes "from the router"; seen from outside, the router's
    // own addresses are private and unroutable, so it speaks from the address the host
    // sent to, as a hop of the path would (the host matches the error to its flow either
    // way; this choice is ours, the rule does not name the address).
    Some(packet_too_big(
        cx,
        pkt,
        buf,
        INTERNET_MTU,
        pkt.dst,
        Sender { port, eni: None },
    ))
}

/// Whether an inbound IPv6 packet answers a flow opened through the VPC's EIGW (or is an
/// ICMPv6 error about one); refreshes the flow.
fn egress_only_state<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &[u8],
) -> bool {
    let zone = zone::EIGW | cx.snap.vpc(vpc).zone;
    if let Some(inner) = crate::nat::embedded(buf, pkt) {
        // The error must be about a packet the receiver itself sent.
        if inner.src != pkt.dst {
            return false;
        }
        let key = FlowKey::new(
            zone,
            inner.proto,
            inner.src,
            inner.src_port,
            inner.dst,
            inner.dst_port,
        );
        return cx.ct.lookup(&key, cx.now).is_some();
    }
    let key = FlowKey::at_gateway(zone, Direction::Ingress, pkt);
    match cx.ct.lookup(&key, cx.now) {
        Some(hit) => {
            cx.ct
                .refresh(hit, Direction::Ingress, pkt, cx.now, &Timeouts::default());
            true
        }
        None => false,
    }
}

/// A route to the VGW: to the on-premises host holding the destination, untranslated
/// (R-VGW).
pub(crate) fn virtual_private_gateway_egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    cx.obs.step(Step::VirtualPrivateGateway { vpc });
    // A site a VPN connection carries (its own MTU rule, R-VPN-MTU).
    if let Some(v) = crate::vpn::egress(cx, vpc, pkt) {
        return v;
    }
    // The older `on_premises` link: 1500 bytes, with ICMP (R-VGW-MTU).
    if let Some(v) = outbound_too_big(cx, vpc, pkt, buf) {
        return v;
    }
    match snap.host_by_addr(pkt.dst) {
        Some(host) if snap.host(host).kind == HostKind::OnPremises => to_host(cx, host),
        _ => cx.drop(
            DropReason::VgwNoRoute,
            "no VPN connection or on-premises link of the VGW routes the destination (R-VPN-SCOPE)",
        ),
    }
}

/// From on-premises through the VGW: only to the VPC's own blocks, by private address
/// (R-VGW, R-VGW-NOEIP).
fn from_on_premises<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    if let Some(other) = snap.host_by_addr(pkt.dst) {
        if snap.host(other).kind == HostKind::OnPremises {
            return to_host(cx, other);
        }
    }
    let Some(vpc) = snap.vgw_vpc_by_addr(pkt.dst) else {
        return cx.drop(
            DropReason::NoRoute,
            "no VPC with a virtual private gateway holds the destination",
        );
    };
    cx.obs.step(Step::VirtualPrivateGateway { vpc });
    deliver_in_vpc(cx, vpc, pkt, buf)
}

/// A route to a peering connection: it must be active (R-PCX-ACTIVE), and the packet must
/// go from the sending VPC's blocks to the receiving VPC's blocks (R-PCX-EDGE); then the
/// receiving VPC's local route delivers it.
pub(crate) fn peering<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pcx: PeeringIx,
    from_vpc: VpcIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let p = snap.peering(pcx);
    if !p.active {
        return cx.drop(
            DropReason::PcxInactive,
            "the peering connection is not active",
        );
    }
    let to_vpc = p.peer_of(from_vpc);
    if !snap.vpc(from_vpc).contains(pkt.src) {
        return cx.drop(
            DropReason::PcxNotTransitive,
            "the source is not in the sending VPC's blocks",
        );
    }
    if !snap.vpc(to_vpc).contains(pkt.dst) {
        return cx.drop(
            DropReason::PcxNotTransitive,
            "the destination is not in the peer VPC's blocks",
        );
    }
    cx.obs.step(Step::Peering {
        peering: pcx,
        to_vpc,
    });
    deliver_in_vpc(cx, to_vpc, pkt, buf)
}

/// A route to a gateway endpoint: only from this VPC (R-GWE-SCOPE), within the policy
/// (R-GWE-POLICY), to the service host, untranslated (R-GWE-ROUTE).
pub(crate) fn gateway_endpoint<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    gwe: GatewayEndpointIx,
    from_vpc: VpcIx,
    pkt: &Packet,
) -> Verdict {
    let snap = cx.snap;
    let ep = snap.gateway_endpoint(gwe);
    // R-GWE-SCOPE: only the endpoint's own VPC, with its own source addresses; traffic that
    // came over a peering is refused with the peering's reason (R-PCX-EDGE).
    if ep.vpc != from_vpc || !snap.vpc(from_vpc).contains(pkt.src) {
        return cx.drop(
            DropReason::PcxNotTransitive,
            "a gateway endpoint serves only its own VPC",
        );
    }
    if let Some(policy) = &ep.policy {
        let port = pkt.ports().map(|(_, d)| d);
        let allowed = policy.iter().any(|rule| {
            net_contains(&rule.destination, pkt.dst)
                && port.map_or(rule.ports == crate::snapshot::PortRange::ANY, |p| {
                    rule.ports.contains(p)
                })
        });
        if !allowed {
            return cx.drop(
                DropReason::EndpointPolicy,
                "the endpoint policy does not allow this destination",
            );
        }
    }
    cx.obs.step(Step::GatewayEndpoint { endpoint: gwe });
    match snap.host_by_addr(pkt.dst) {
        Some(host) if snap.host(host).kind == HostKind::Service(ep.service) => to_host(cx, host),
        _ => cx.drop(
            DropReason::NoRoute,
            "no host of the endpoint's service holds the destination",
        ),
    }
}

/// A service host's reply to a private address: back through the gateway endpoint of the
/// VPC that holds that address. `None` when no endpoint of this service serves it.
fn gateway_endpoint_return<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    service: crate::snapshot::ServiceIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Option<Verdict> {
    let snap = cx.snap;
    let (i, ep) = snap
        .topo
        .gateway_endpoints
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.service == service && snap.vpc(ep.vpc).contains(pkt.dst))?;
    let gwe = GatewayEndpointIx(i as u32);
    // The way back exists only to subnets whose route table sends this service to this
    // endpoint (R-GWE-ROUTE): the service cannot reach other subnets through it. Whether
    // the packet answers a flow the instance opened is the connection-tracking stage's
    // question.
    let receiver = snap.eni_by_addr(ep.vpc, pkt.dst)?;
    let table = snap.route_table(snap.subnet(snap.eni(receiver).subnet).route_table);
    let routed_here = table
        .lookup(pkt.src)
        .is_some_and(|(_, r)| r.target == Target::GatewayEndpoint(gwe));
    if !routed_here {
        return Some(cx.drop(
            DropReason::NoRoute,
            "the destination's subnet does not route this service through the gateway endpoint",
        ));
    }
    cx.obs.step(Step::GatewayEndpoint { endpoint: gwe });
    Some(deliver_in_vpc(cx, ep.vpc, pkt, buf))
}

pub(crate) fn to_host<'s, O: Observer<'s>>(cx: &mut Ctx<'_, 's, O>, host: HostIx) -> Verdict {
    cx.obs.step(Step::ToHost { host });
    Verdict::Forward(cx.snap.host(host).port)
}
