//! Interface endpoints (semantics.md §9, R-IFE-*): an ENI inside vpcd in each chosen
//! subnet, behind its own security groups, that carries TCP to the service's hosts the
//! way a PrivateLink endpoint and its load balancer do: the host sees the connection come
//! from the endpoint's address (R-IFE-DNS), so the way back leads to the endpoint, which
//! hands the reply to the client.
//!
//! The translation is the NAT gateway's machinery with the destination rewritten too:
//! `IFE_OUT` (client, its port, endpoint, port → endpoint port) and `IFE_IN` (endpoint,
//! that port, host, port → client and its port) in the shared flow table, idle after 350 s.
//! Reachable from the VPC, over peering and from on-premises (R-IFE-REACH): it is an
//! address of the VPC like any other.

use std::net::{IpAddr, Ipv4Addr};

use crate::conntrack::{secs, FlowKey};
use crate::nat::{rewrite_port, rewrite_v4, Field};
use crate::nat_gateway::{allocate, unpack, Mapping, IDLE_TIMEOUT};
use crate::observer::{Observer, Step};
use crate::packet::{Packet, Transport};
use crate::pipeline::{leave_eni, Ctx, Verdict};
use crate::reason::DropReason;
use crate::snapshot::{EniIx, HostIx, InterfaceEndpointIx};

/// Key zones of the endpoint's translations (per endpoint ENI zone).
pub const IFE_OUT: u32 = 0x70_0000;
pub const IFE_IN: u32 = 0x80_0000;

/// A packet that reached endpoint ENI `eni` (its NACL and SGs passed).
pub(crate) fn ingress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    ife: InterfaceEndpointIx,
    eni_ix: EniIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let ep = snap.interface_endpoint(ife);
    let eni = snap.eni(eni_ix);
    // R-IFE-ENI: TCP only.
    let (
        Transport::Tcp {
            src_port, dst_port, ..
        },
        IpAddr::V4(client),
        IpAddr::V4(own),
    ) = (pkt.transport, pkt.src, pkt.dst)
    else {
        return cx.drop(
            DropReason::EndpointProtocol,
            "an interface endpoint carries TCP only",
        );
    };
    if ep.hosts.is_empty() {
        return cx.drop(DropReason::NoRoute, "the endpoint's service has no host");
    }
    let host = pick(&ep.hosts, client, src_port);
    let Some(host_ip) = snap.host(host).ipv4 else {
        return cx.drop(
            DropReason::NoRoute,
            "the endpoint's service has no IPv4 host",
        );
    };
    let zone_out = IFE_OUT | eni.zone;
    let zone_in = IFE_IN | eni.zone;
    let out_key = FlowKey::new(zone_out, pkt.proto, pkt.src, src_port, pkt.dst, dst_port);
    let expires = secs(cx.now).saturating_add(IDLE_TIMEOUT);
    let tport = match cx.ct.lookup(&out_key, cx.now) {
        Some(hit) => {
            cx.ct.touch(hit, expires);
            let tport = unpack(hit.value()).1;
            let in_key = FlowKey::new(
                zone_in,
                pkt.proto,
                own.into(),
                tport,
                host_ip.into(),
                dst_port,
            );
            if let Some(h) = cx.ct.lookup(&in_key, cx.now) {
                cx.ct.touch(h, expires);
            }
            tport
        }
        None => {
            let m = Mapping {
                zone_in,
                proto: pkt.proto,
                own,
                back: crate::nat_gateway::pack(client, src_port),
                seed: u32::from(client),
                private_port: src_port,
                remote: host_ip.into(),
                remote_port: dst_port,
            };
            match allocate(cx, &m, &out_key, expires) {
                Ok(p) => p,
                Err((reason, detail)) => return cx.drop(reason, detail),
            }
        }
    };
    let out = rewrite_v4(buf, pkt, Field::Source, own);
    let out = rewrite_port(buf, &out, Field::Source, tport);
    let _ = rewrite_v4(buf, &out, Field::Destination, host_ip);
    cx.obs.step(Step::InterfaceEndpoint {
        endpoint: ife,
        client: (pkt.src, src_port),
        host,
    });
    cx.obs.step(Step::ToHost { host });
    Verdict::Forward(snap.host(host).port)
}

/// Spreads clients over the hosts by address and port, as a load balancer does.
fn pick(hosts: &[HostIx], client: Ipv4Addr, port: u16) -> HostIx {
    let h =
        (u64::from(u32::from(client)) << 16 | u64::from(port)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    hosts[((h >> 32) as usize) % hosts.len()]
}

/// A service host's packet to an endpoint address: the reply of a connection the endpoint
/// carried. `None` when no endpoint knows it (the caller goes on with other paths).
pub(crate) fn reply<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pkt: &Packet,
    buf: &mut [u8],
) -> Option<Verdict> {
    let snap = cx.snap;
    let (
        IpAddr::V4(own),
        Transport::Tcp {
            src_port, dst_port, ..
        },
    ) = (pkt.dst, pkt.transport)
    else {
        return None;
    };
    for &eni_ix in snap.endpoint_enis(own) {
        let eni = snap.eni(eni_ix);
        let key = FlowKey::new(
            IFE_IN | eni.zone,
            pkt.proto,
            pkt.dst,
            dst_port,
            pkt.src,
            src_port,
        );
        let Some(hit) = cx.ct.lookup(&key, cx.now) else {
            continue;
        };
        let expires = secs(cx.now).saturating_add(IDLE_TIMEOUT);
        cx.ct.touch(hit, expires);
        let (client, cport) = unpack(hit.value());
        let out = rewrite_v4(buf, pkt, Field::Source, own);
        let out = rewrite_v4(buf, &out, Field::Destination, client);
        let out = rewrite_port(buf, &out, Field::Destination, cport);
        // Back out of the endpoint's ENI: its SGs (the flow is tracked), its subnet's
        // NACL, its route table.
        return Some(leave_eni(cx, eni_ix, &out, buf));
    }
    None
}
