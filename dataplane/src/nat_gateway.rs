//! The NAT gateway (semantics.md §7): source translation of IPv4 TCP, UDP and ICMP echo
//! to the gateway's own address and a port, and the way back.
//!
//! State lives in the shared flow table ([`crate::conntrack`]) as two entries per
//! connection, as netfilter keeps an original and a reply tuple: `NAT_OUT` (private
//! source, its port, destination → translated port) and `NAT_IN` (gateway address,
//! translated port, remote → private source and port). Ports are drawn from a range of
//! 55,000 per destination (IP, port, protocol), which is AWS's limit (R-NAT-LIMIT), and
//! each worker owns every n-th port of it, so two workers never hand out the same port
//! (VPP's NAT splits ports per thread the same way).
//!
//! After translation the gateway forwards by its own subnet's route table (R-NAT-PATH):
//! to the IGW, which maps the gateway's private address to its Elastic IP; or, for a
//! private NAT gateway, to a VGW or peering (the IGW drops it, R-IGW-PRIVNAT).

use std::net::{IpAddr, Ipv4Addr};

use crate::conntrack::{secs, zone, FlowKey};
use crate::icmp_error::{packet_too_big, too_big, Sender, INTERNET_MTU};
use crate::nat::{embedded, rewrite_port, rewrite_v4, translate_icmp_error_v4, Field};
use crate::network_acl;
use crate::observer::{Direction, Observer, Step};
use crate::packet::{proto, tcp_flags, Fragment, Packet, Transport};
use crate::pipeline::{route, Ctx, Verdict};
use crate::reason::DropReason;
use crate::snapshot::{NatGatewayIx, SubnetIx};

/// R-NAT-IDLE: a connection idle this long expires.
pub const IDLE_TIMEOUT: u32 = 350;
/// How many ports a new translation tries before it gives up as exhausted: bounded, so a
/// flood of new flows to one full destination costs each packet a few microseconds, not a
/// scan of the whole range (which would stall the worker).
pub const MAX_PROBES: u32 = 512;

/// The first translated port (R-NAT-SNAT: 1024-65535).
pub const FIRST_PORT: u16 = 1024;
/// Ports per destination: AWS's limit of simultaneous connections to one (IP, port,
/// protocol) (R-NAT-LIMIT).
pub const PORTS: u32 = 55_000;

/// The (local port, remote port) a NAT key uses for an outbound packet: TCP/UDP ports, or
/// the echo identifier and 0. `None`: not translatable (R-NAT-SNAT).
fn outbound_ports(pkt: &Packet) -> Option<(u16, u16)> {
    match pkt.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
        Transport::Icmp { ty: 8, ident, .. } => Some((ident, 0)),
        _ => None,
    }
}

pub(crate) fn pack(addr: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 16) | u64::from(port)
}

pub(crate) fn unpack(v: u64) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from((v >> 16) as u32), v as u16)
}

/// The top bit of a NAT64 mapping's inbound value.
const NAT64: u64 = 1 << 63;

/// A NAT64 mapping's way back: the instance's ENI (by its stable zone), which of its IPv6
/// addresses, and its port. An IPv6 address does not fit a table value; its ENI does.
pub(crate) fn pack64(zone: u32, addr: u8, port: u16) -> u64 {
    NAT64 | (u64::from(addr) << 48) | (u64::from(zone) << 16) | u64::from(port)
}

/// What [`pack64`] packed, if the value is a NAT64 one.
pub(crate) fn unpack64(v: u64) -> Option<(u32, u8, u16)> {
    (v & NAT64 != 0).then_some(((v >> 16) as u32, (v >> 48) as u8 & 0x7f, v as u16))
}

/// A packet routed to the NAT gateway from subnet `from_subnet` of its VPC.
pub(crate) fn egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    from_subnet: SubnetIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let nat = snap.nat_gateway(nat_ix);
    let IpAddr::V4(private) = pkt.src else {
        return nat64_egress(cx, nat_ix, from_subnet, pkt, buf);
    };
    // R-NAT-PATH: entering the gateway's subnet from another one crosses its NACL.
    if from_subnet != nat.subnet {
        if let Err(v) = network_acl::check(cx, nat.subnet, Direction::Ingress, pkt) {
            cx.log(nat.eni, Direction::Ingress, pkt, false);
            return v;
        }
    }
    // R-FL-SCOPE: the gateway's ENI records what reaches it, as it arrives.
    cx.log(nat.eni, Direction::Ingress, pkt, true);
    // R-NAT-FRAG: TCP and ICMP fragments are dropped, UDP fragments carried (AWS, NAT
    // gateway basics). A later fragment has no ports: only its source address changes,
    // to the gateway's, which is all the first fragment's translation changed in the IP
    // header (its port is in the first fragment alone).
    if pkt.fragment != Fragment::None {
        if pkt.proto != proto::UDP {
            return cx.drop(
                DropReason::Fragment,
                "the NAT gateway drops TCP and ICMP fragments (it carries UDP ones)",
            );
        }
        if pkt.fragment == Fragment::Later {
            let translated = rewrite_v4(buf, pkt, Field::Source, nat.private_ip);
            return forward(cx, nat_ix, &translated, buf);
        }
    }
    // R-IGW-MTU: a public NAT gateway's path is the IGW's 1500 bytes; the instance hears
    // it from its subnet's router before any translation, so path-MTU discovery works
    // through NAT.
    if nat.public_ip.is_some() && too_big(pkt, INTERNET_MTU) {
        let sender = snap
            .eni_by_addr(nat.vpc, pkt.src)
            .and_then(|e| snap.eni(e).port.map(|p| (e, p)));
        let router = sender.and_then(|(e, _)| snap.subnet(snap.eni(e).subnet).router_v4());
        if let (Some((eni, port)), Some(router)) = (sender, router) {
            return packet_too_big(
                cx,
                pkt,
                buf,
                INTERNET_MTU,
                router.into(),
                Sender {
                    port,
                    eni: Some(eni),
                },
            );
        }
    }
    let Some((sport, dport)) = outbound_ports(pkt) else {
        return cx.drop(
            DropReason::NatUnsupportedProtocol,
            "a NAT gateway translates TCP, UDP and ICMP echo only",
        );
    };
    let nat_ip = nat.private_ip;
    let zone_out = zone::NAT_OUT | nat.zone;
    let zone_in = zone::NAT_IN | nat.zone;
    let out_key = FlowKey::new(zone_out, pkt.proto, pkt.src, sport, pkt.dst, dport);
    let expires = secs(cx.now).saturating_add(IDLE_TIMEOUT);
    // A mapping made for another address of the gateway (an apply changed it) is stale.
    let known = cx
        .ct
        .lookup(&out_key, cx.now)
        .filter(|hit| unpack(hit.value()).0 == nat_ip);
    let tport = match known {
        Some(hit) => {
            cx.ct.touch(hit, expires);
            let tport = unpack(hit.value()).1;
            let in_key = FlowKey::new(zone_in, pkt.proto, nat_ip.into(), tport, pkt.dst, dport);
            if let Some(h) = cx.ct.lookup(&in_key, cx.now) {
                cx.ct.touch(h, expires);
            }
            tport
        }
        None => {
            if let Transport::Tcp { flags, .. } = pkt.transport {
                if flags & tcp_flags::SYN == 0 {
                    // R-NAT-IDLE: the gateway no longer knows this connection.
                    return reset(cx, nat_ix, pkt, buf);
                }
            }
            let m = Mapping {
                zone_in,
                proto: pkt.proto,
                own: nat_ip,
                back: pack(private, sport),
                seed: u32::from(private),
                private_port: sport,
                remote: pkt.dst,
                remote_port: dport,
            };
            match allocate(cx, &m, &out_key, expires) {
                Ok(p) => p,
                Err((reason, detail)) => return cx.drop(reason, detail),
            }
        }
    };
    let translated = rewrite_v4(buf, pkt, Field::Source, nat_ip);
    let translated = rewrite_port(buf, &translated, Field::Source, tport);
    cx.obs.step(Step::NatGateway {
        nat: nat_ix,
        from: (pkt.src, sport),
        to: (nat_ip.into(), tport),
    });
    // Leaving its subnet towards the IGW (or VGW, peering): its NACL outbound, then its
    // route table (R-NAT-PATH).
    forward(cx, nat_ix, &translated, buf)
}

/// Seconds the fragments of a datagram have to follow its first one (Linux's
/// `ipfrag_time` default).
pub const FRAGMENT_TIMEOUT: u32 = 30;

/// A new translation's facts: who is translated to which own address, towards whom.
pub(crate) struct Mapping {
    pub zone_in: u32,
    pub proto: u8,
    /// The address the translated packets leave from.
    pub own: Ipv4Addr,
    /// Where the replies go back to, as the inbound half stores it: [`pack`] of the
    /// private address and port, or [`pack64`] for NAT64.
    pub back: u64,
    /// The private source as a number, to spread the first port tried.
    pub seed: u32,
    pub private_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

/// Finds a port of `own` free towards (remote, remote port, protocol) among this worker's
/// share of the range and stores both halves of the mapping (R-NAT-LIMIT). Shared by the
/// NAT gateway and interface endpoints.
pub(crate) fn allocate<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    m: &Mapping,
    out_key: &FlowKey,
    expires: u32,
) -> Result<u16, (DropReason, &'static str)> {
    let n = u32::from(cx.workers.max(1));
    let w = u32::from(cx.worker) % n;
    let mine = (PORTS - w).div_ceil(n);
    let start = start_slot(m.seed, m.private_port, m.remote, m.remote_port) % mine;
    // Probes spread over the share (a stride coprime with it), not consecutive ports:
    // an almost full range still finds a free port within the bound.
    let stride = coprime_stride(mine);
    for k in 0..mine.min(MAX_PROBES) {
        let slot = ((u64::from(start) + u64::from(k) * u64::from(stride)) % u64::from(mine)) as u32;
        let candidate = FIRST_PORT + (slot * n + w) as u16;
        let in_key = FlowKey::new(
            m.zone_in,
            m.proto,
            m.own.into(),
            candidate,
            m.remote,
            m.remote_port,
        );
        if cx.ct.lookup(&in_key, cx.now).is_some() {
            continue;
        }
        let stored = cx
            .ct
            .insert_raw(&in_key, 0, expires, m.back, cx.now)
            .and_then(|_| {
                cx.ct
                    .insert_raw(out_key, 0, expires, pack(m.own, candidate), cx.now)
            });
        if stored.is_err() {
            return Err((
                DropReason::TableFull,
                "the flow table has no room for a new translation",
            ));
        }
        return Ok(candidate);
    }
    Err((
        DropReason::NatPortExhausted,
        "every port to this destination is in use",
    ))
}

/// A step through `n` slots that visits every one of them.
fn coprime_stride(n: u32) -> u32 {
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = (n / 2).max(1) | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s
}

/// Where a new translation starts looking for a free port: spread by the flow, so that
/// flows to one destination do not all probe from the bottom of the range.
fn start_slot(private: u32, sport: u16, dst: IpAddr, dport: u16) -> u32 {
    let d = match dst {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => u128::from(a) as u32,
    };
    let x = (u64::from(private) << 32 | u64::from(d))
        ^ (u64::from(sport) << 16 | u64::from(dport)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32) as u32
}

/// The translated packet leaves the gateway's subnet by its route table.
fn forward<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let nat = cx.snap.nat_gateway(nat_ix);
    let receiver = cx.snap.eni_by_addr(nat.vpc, pkt.dst);
    let leaves = receiver.is_none_or(|r| cx.snap.eni(r).subnet != nat.subnet);
    if leaves {
        if let Err(v) = network_acl::check(cx, nat.subnet, Direction::Egress, pkt) {
            cx.log(nat.eni, Direction::Egress, pkt, false);
            return v;
        }
    }
    // ... and what leaves it, translated.
    cx.log(nat.eni, Direction::Egress, pkt, true);
    // AWS creates a NAT gateway in any subnet; where that subnet's table has no route on
    // (a public NAT gateway in a private subnet: the classic mistake), or sends the
    // traffic to a NAT gateway again, it goes nowhere. Said as such.
    let table = cx.snap.route_table(cx.snap.subnet(nat.subnet).route_table);
    match table.lookup(pkt.dst).map(|(_, r)| r.target) {
        None => {
            return cx.drop(
                DropReason::NoRoute,
                "the NAT gateway's subnet has no route for the translated traffic (a public NAT gateway needs one to the internet gateway)",
            )
        }
        Some(crate::route::Target::NatGateway(_)) => {
            return cx.drop(
                DropReason::NoRoute,
                "the NAT gateway's subnet routes the translated traffic to a NAT gateway again, not to the internet gateway",
            )
        }
        Some(_) => {}
    }
    route(cx, nat.subnet, receiver, pkt, buf)
}

/// A packet addressed to the gateway's own address: the reply of a translated connection
/// (or an ICMP error about one) goes back to the private source; anything else was opened
/// from outside and is refused (R-NAT-INBOUND). A gateway failed by a fault forwards
/// nothing: its routes are blackholes on the way out, and replies stop here on the way
/// back, established connections too.
pub(crate) fn ingress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let nat = cx.snap.nat_gateway(nat_ix);
    if nat.failed != 0 {
        return cx.drop(
            DropReason::FaultDisrupted,
            "the NAT gateway has failed (a fault): it translates no reply back",
        );
    }
    let nat_ip: IpAddr = nat.private_ip.into();
    let zone_in = zone::NAT_IN | nat.zone;
    let expires = secs(cx.now).saturating_add(IDLE_TIMEOUT);
    // R-NAT-FRAG, on the way back: the first fragment finds the mapping by its ports and
    // leaves its private address under (remote, IP id) for the fragments that follow,
    // which have no ports. One that comes before its first cannot be placed: dropped.
    let frag_key = (pkt.fragment != Fragment::None).then(|| {
        let id = u16::from_be_bytes([buf[4], buf[5]]);
        FlowKey::new(zone::NAT_FRAG | nat.zone, pkt.proto, pkt.src, id, nat_ip, 0)
    });
    if pkt.fragment != Fragment::None && pkt.proto != proto::UDP {
        return cx.drop(
            DropReason::Fragment,
            "the NAT gateway drops TCP and ICMP fragments (it carries UDP ones)",
        );
    }
    if let (Fragment::Later, Some(key)) = (pkt.fragment, &frag_key) {
        let Some(hit) = cx.ct.lookup(key, cx.now) else {
            return cx.drop(
                DropReason::Fragment,
                "a later fragment whose first fragment has not come through the NAT gateway",
            );
        };
        let (private, _) = unpack(hit.value());
        let translated = rewrite_v4(buf, pkt, Field::Destination, private);
        return forward(cx, nat_ix, &translated, buf);
    }
    if let Some(inner) = embedded(buf, pkt) {
        // An ICMP error about a packet the gateway sent: the quote is that packet.
        let rport = if inner.proto == proto::ICMP {
            0
        } else {
            inner.dst_port
        };
        let key = FlowKey::new(
            zone_in,
            inner.proto,
            inner.src,
            inner.src_port,
            inner.dst,
            rport,
        );
        let Some(hit) = cx.ct.lookup(&key, cx.now).filter(|_| inner.src == nat_ip) else {
            return refuse(cx);
        };
        // An ICMP error about a NAT64 flow is not translated to ICMPv6: dropped.
        if unpack64(hit.value()).is_some() {
            return refuse(cx);
        }
        let (private, pport) = unpack(hit.value());
        let translated = translate_icmp_error_v4(buf, pkt, &inner, private, pport);
        cx.obs.step(Step::NatGateway {
            nat: nat_ix,
            from: (pkt.dst, inner.src_port),
            to: (private.into(), pport),
        });
        return forward(cx, nat_ix, &translated, buf);
    }
    let (lport, rport) = match pkt.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port } => (dst_port, src_port),
        Transport::Icmp { ty: 0, ident, .. } => (ident, 0),
        _ => return refuse(cx),
    };
    let key = FlowKey::new(zone_in, pkt.proto, nat_ip, lport, pkt.src, rport);
    let Some(hit) = cx.ct.lookup(&key, cx.now) else {
        return refuse(cx);
    };
    cx.ct.touch(hit, expires);
    if let Some(back) = unpack64(hit.value()) {
        return nat64_ingress(cx, nat_ix, back, (lport, rport), pkt, buf);
    }
    let (private, pport) = unpack(hit.value());
    let out_key = FlowKey::new(
        zone::NAT_OUT | nat.zone,
        pkt.proto,
        private.into(),
        pport,
        pkt.src,
        rport,
    );
    if let Some(h) = cx.ct.lookup(&out_key, cx.now) {
        cx.ct.touch(h, expires);
    }
    if let Some(key) = &frag_key {
        let until = secs(cx.now).saturating_add(FRAGMENT_TIMEOUT);
        if cx
            .ct
            .insert_raw(key, 0, until, pack(private, 0), cx.now)
            .is_err()
        {
            return cx.drop(
                DropReason::TableFull,
                "the flow table has no room for the fragments to come",
            );
        }
    }
    let translated = rewrite_v4(buf, pkt, Field::Destination, private);
    let translated = rewrite_port(buf, &translated, Field::Destination, pport);
    cx.obs.step(Step::NatGateway {
        nat: nat_ix,
        from: (pkt.dst, lport),
        to: (private.into(), pport),
    });
    forward(cx, nat_ix, &translated, buf)
}

fn refuse<'s, O: Observer<'s>>(cx: &mut Ctx<'_, 's, O>) -> Verdict {
    cx.drop(
        DropReason::NatInbound,
        "connections cannot be opened to a NAT gateway (no translation for this packet)",
    )
}

/// R-NAT-IDLE: answers a TCP segment of a connection the gateway has forgotten with a RST
/// to the instance (RFC 793's reset generation), written over the packet.
fn reset<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let nat = cx.snap.nat_gateway(nat_ix);
    let (
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
        },
        IpAddr::V4(src),
        IpAddr::V4(dst),
    ) = (pkt.transport, pkt.src, pkt.dst)
    else {
        return refuse(cx);
    };
    let port = cx
        .snap
        .eni_by_addr(nat.vpc, pkt.src)
        .and_then(|e| cx.snap.eni(e).port);
    let l4 = usize::from(pkt.l4_offset);
    if flags & tcp_flags::RST != 0 || port.is_none() || buf.len() < l4 + 20 || buf.len() < 40 {
        return cx.drop(
            DropReason::NatInbound,
            "the NAT gateway no longer knows this connection",
        );
    }
    let word = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let (seq, ack) = (word(l4 + 4), word(l4 + 8));
    let payload = (pkt.len as usize).saturating_sub(l4 + usize::from(buf[l4 + 12] >> 4) * 4);
    let builder = etherparse::PacketBuilder::ipv4(dst.octets(), src.octets(), 64);
    let builder = if flags & tcp_flags::ACK != 0 {
        builder.tcp(dst_port, src_port, ack, 0).rst()
    } else {
        let fin_syn = u32::from(flags & (tcp_flags::SYN | tcp_flags::FIN) != 0);
        builder
            .tcp(dst_port, src_port, 0, 0)
            .rst()
            .ack(seq.wrapping_add(payload as u32 + fin_syn))
    };
    let mut w = &mut buf[..];
    if builder.write(&mut w, &[]).is_err() {
        return refuse(cx);
    }
    cx.obs.step(Step::NatReset { nat: nat_ix });
    cx.replaced = Some(DropReason::NatInbound);
    Verdict::Reply {
        port: port.expect("checked above"),
        len: 40,
    }
}

/// NAT64, out: an IPv6 packet to 64:ff9b::/96 leaves as IPv4 from the gateway's address
/// (AWS, "DNS64 and NAT64"). The same checks as IPv4 traffic (its subnet's NACL, the
/// internet's MTU, the port range), then the translation (crate::nat64).
fn nat64_egress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    from_subnet: SubnetIx,
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let nat = snap.nat_gateway(nat_ix);
    let (IpAddr::V6(src6), IpAddr::V6(dst6)) = (pkt.src, pkt.dst) else {
        return cx.drop(DropReason::NatUnsupportedProtocol, "not IPv6");
    };
    let Some(dst4) = crate::nat64::embedded(dst6) else {
        return cx.drop(
            DropReason::NatUnsupportedProtocol,
            "a NAT gateway translates IPv4, and IPv6 only to 64:ff9b::/96 (NAT64)",
        );
    };
    if from_subnet != nat.subnet {
        if let Err(v) = network_acl::check(cx, nat.subnet, Direction::Ingress, pkt) {
            cx.log(nat.eni, Direction::Ingress, pkt, false);
            return v;
        }
    }
    cx.log(nat.eni, Direction::Ingress, pkt, true);
    if !crate::nat64::translatable(pkt) {
        return cx.drop(
            DropReason::NatUnsupportedProtocol,
            "NAT64 translates TCP, UDP and echo requests without extension headers",
        );
    }
    // The instance the packet came from, and which of its addresses: what the reply finds.
    let Some((sender, addr)) = snap.eni_by_addr(nat.vpc, pkt.src).and_then(|e| {
        let i = snap.eni(e).ipv6.iter().position(|a| *a == src6)?;
        Some((e, i as u8))
    }) else {
        return cx.drop(
            DropReason::NatUnsupportedProtocol,
            "NAT64 serves the VPC's own instances only (R-NAT-SOURCE)",
        );
    };
    // R-IGW-MTU through NAT64: the IPv4 packet is 20 bytes shorter, so an IPv6 packet
    // (segment) of up to 1520 bytes fits the internet's 1500.
    let mtu = INTERNET_MTU + crate::nat64::GROWTH as u16;
    if nat.public_ip.is_some() && too_big(pkt, mtu) {
        let eni = snap.eni(sender);
        if let (Some(port), Some(router)) = (eni.port, snap.subnet(eni.subnet).router_v6()) {
            return packet_too_big(
                cx,
                pkt,
                buf,
                mtu,
                router.into(),
                Sender {
                    port,
                    eni: Some(sender),
                },
            );
        }
    }
    let (sport, dport, p4) = match pkt.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port } => (src_port, dst_port, pkt.proto),
        Transport::Icmp { ident, .. } => (ident, 0, proto::ICMP),
        Transport::Other => return cx.drop(DropReason::NatUnsupportedProtocol, "no ports"),
    };
    let nat_ip = nat.private_ip;
    let zone_in = zone::NAT_IN | nat.zone;
    let out_key = FlowKey::new(
        zone::NAT_OUT | nat.zone,
        p4,
        pkt.src,
        sport,
        dst4.into(),
        dport,
    );
    let expires = secs(cx.now).saturating_add(IDLE_TIMEOUT);
    let known = cx
        .ct
        .lookup(&out_key, cx.now)
        .filter(|hit| unpack(hit.value()).0 == nat_ip);
    let tport = match known {
        Some(hit) => {
            cx.ct.touch(hit, expires);
            let tport = unpack(hit.value()).1;
            let in_key = FlowKey::new(zone_in, p4, nat_ip.into(), tport, dst4.into(), dport);
            if let Some(h) = cx.ct.lookup(&in_key, cx.now) {
                cx.ct.touch(h, expires);
            }
            tport
        }
        None => {
            if let Transport::Tcp { flags, .. } = pkt.transport {
                if flags & tcp_flags::SYN == 0 {
                    return cx.drop(
                        DropReason::NatInbound,
                        "the NAT gateway no longer knows this NAT64 connection",
                    );
                }
            }
            let m = Mapping {
                zone_in,
                proto: p4,
                own: nat_ip,
                back: pack64(snap.eni(sender).zone, addr, sport),
                seed: u128::from(src6) as u32,
                private_port: sport,
                remote: dst4.into(),
                remote_port: dport,
            };
            match allocate(cx, &m, &out_key, expires) {
                Ok(p) => p,
                Err((reason, detail)) => return cx.drop(reason, detail),
            }
        }
    };
    let n = crate::nat64::to_v4(buf, pkt, nat_ip, dst4, tport);
    let growth = -(crate::nat64::GROWTH as isize);
    let Some(out) = crate::nat64::reparsed(buf, n, pkt, growth) else {
        return cx.drop(DropReason::Malformed, "the NAT64 translation did not parse");
    };
    cx.resized = Some((n as u32, out.wire_len));
    cx.obs.step(Step::NatGateway {
        nat: nat_ix,
        from: (pkt.src, sport),
        to: (nat_ip.into(), tport),
    });
    forward(cx, nat_ix, &out, buf)
}

/// NAT64, back: the reply of a NAT64 mapping goes to the instance as IPv6, from the
/// 64:ff9b::/96 address of its IPv4 source.
fn nat64_ingress<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    nat_ix: NatGatewayIx,
    (zone, addr, pport): (u32, u8, u16),
    (lport, rport): (u16, u16),
    pkt: &Packet,
    buf: &mut [u8],
) -> Verdict {
    let snap = cx.snap;
    let nat = snap.nat_gateway(nat_ix);
    let IpAddr::V4(src4) = pkt.src else {
        return refuse(cx);
    };
    let Some(dst6) = snap
        .eni_by_zone(zone)
        .and_then(|e| snap.eni(e).ipv6.get(usize::from(addr)).copied())
    else {
        return cx.drop(
            DropReason::NatInbound,
            "the instance of this NAT64 connection is gone",
        );
    };
    let growth = crate::nat64::GROWTH;
    if !crate::nat64::translatable(pkt) || (pkt.len as usize) + growth > buf.len() {
        return refuse(cx);
    }
    let out_key = FlowKey::new(
        zone::NAT_OUT | nat.zone,
        pkt.proto,
        dst6.into(),
        pport,
        pkt.src,
        rport,
    );
    if let Some(h) = cx.ct.lookup(&out_key, cx.now) {
        cx.ct.touch(h, secs(cx.now).saturating_add(IDLE_TIMEOUT));
    }
    let src6 = crate::nat64::synthesized(src4);
    let n = crate::nat64::to_v6(buf, pkt, src6, dst6, pport);
    let Some(back) = crate::nat64::reparsed(buf, n, pkt, growth as isize) else {
        return cx.drop(DropReason::Malformed, "the NAT64 translation did not parse");
    };
    cx.resized = Some((n as u32, back.wire_len));
    cx.obs.step(Step::NatGateway {
        nat: nat_ix,
        from: (pkt.dst, lport),
        to: (dst6.into(), pport),
    });
    forward(cx, nat_ix, &back, buf)
}
