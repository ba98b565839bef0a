//! VPN tunnels at a virtual private gateway (hybrid.md): which tunnel a packet for a site
//! takes, and what a VGW does with what comes out of one.
//!
//! The VGW's own routes (prefix → tunnel) are compiled by the control side from static
//! VPN routes and what BGP learned, already ordered by R-VPN-PRIORITY; here they are one
//! longest-prefix lookup. Whatever reaches a site goes out untranslated (R-VPN-NONAT).

use crate::gateways::to_host;
use crate::icmp_error::too_big;
use crate::observer::{Direction, Observer, Step};
use crate::packet::Packet;
use crate::pipeline::{deliver_in_vpc, Ctx, Verdict};
use crate::reason::DropReason;
use crate::route::Target;
use crate::snapshot::{TunnelIx, VpcIx};

/// R-VPN-MTU: the largest inner packet a tunnel carries.
pub const TUNNEL_MTU: u16 = 1446;

/// A packet routed to the VGW for a prefix a VPN carries: into its tunnel. `None` when
/// no VPN of the VGW routes the destination (the caller tries the older `on_premises`
/// link, then drops with VGW_NO_ROUTE, R-VPN-SCOPE).
pub(crate) fn egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    vpc: VpcIx,
    pkt: &Packet,
) -> Option<Verdict> {
    let snap = cx.snap;
    let table = snap.vgw_routes(vpc)?;
    let (net, route) = table.lookup(pkt.dst)?;
    let Target::VpnTunnel(tunnel) = route.target else {
        return None;
    };
    cx.obs.step(Step::VpnTunnel {
        tunnel,
        direction: Direction::Egress,
        route: Some((net, route)),
    });
    Some(into_tunnel(cx, tunnel, pkt))
}

/// Sends `pkt` into `tunnel`: AWS answers no ICMP there (R-VPN-MTU: no path MTU
/// discovery), so a packet too big with DF set is dropped; one without DF is fragmented
/// by the tunnel's end, as AWS fragments before encapsulating.
fn into_tunnel<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    tunnel: TunnelIx,
    pkt: &Packet,
) -> Verdict {
    let t = cx.snap.vpn_tunnel(tunnel);
    if t.fault != 0 {
        return cx.drop(DropReason::FaultDisrupted, down(t.direct_connect));
    }
    if too_big(pkt, t.mtu) && (pkt.dont_fragment || pkt.is_ipv6()) {
        return cx.drop(
            DropReason::MtuExceeded,
            if t.direct_connect {
                "larger than the virtual interface's MTU with DF set (R-DX-PRIVATE)"
            } else {
                "larger than the VPN tunnel's 1446 bytes with DF set; AWS sends no ICMP here (R-VPN-MTU)"
            },
        );
    }
    to_host(cx, t.host)
}

/// A packet out of `tunnel` (from its site): to the VPC's own addresses, by private
/// address (R-VGW-NOEIP), or to another site of the same VGW (R-VPN-CLOUDHUB); nothing
/// else goes on (R-VPN-NONAT).
pub(crate) fn ingress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    tunnel: TunnelIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let t = snap.vpn_tunnel(tunnel);
    if t.fault != 0 {
        return cx.drop(DropReason::FaultDisrupted, down(t.direct_connect));
    }
    cx.obs.step(Step::VpnTunnel {
        tunnel,
        direction: Direction::Ingress,
        route: None,
    });
    let vpc = t.vpc;
    if snap.vpc(vpc).contains(pkt.dst) {
        cx.obs.step(Step::VirtualPrivateGateway { vpc });
        return deliver_in_vpc(cx, vpc, pkt, buf);
    }
    if let Some(v) = egress(cx, vpc, pkt) {
        return v;
    }
    cx.drop(
        DropReason::VgwNotTransitive,
        "from a site, a VGW reaches only its VPC's addresses and its other sites",
    )
}

fn down(direct_connect: bool) -> &'static str {
    if direct_connect {
        "the virtual interface is down (aws:directconnect:virtual-interface-disconnect)"
    } else {
        "the VPN tunnel is down (aws:vpn:tunnel-down)"
    }
}
