//! `vpcd trace` (lab.md): explains, without a packet on any wire or root, what the VPC
//! does to a packet, hop by hop, and to its reply. It builds the packet the source would
//! send, runs it through the compiled snapshot and the very pipeline the workers run, with
//! a recording observer, and prints the steps with the lab's names: so the explanation
//! cannot disagree with the dataplane.

use std::fmt::Write as _;
use std::net::IpAddr;

use dataplane::acl::{ProtoMatch, SgPeer};
use dataplane::observer::{Direction, SgDecision, Step};
use dataplane::snapshot::{Attachment, LocalService, PortId};
use dataplane::{DropReason, Pipeline, Recorder, Snapshot, Timestamp, Verdict};
use etherparse::PacketBuilder;

/// What to trace.
#[derive(Clone, Debug)]
pub struct Probe {
    /// An instance or outside host id.
    pub from: String,
    /// An address, or an instance / host id.
    pub to: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    pub proto: String,
    pub port: u16,
    pub src_port: u16,
    /// The packet's total size in bytes (padded with payload); 0 = small.
    pub size: u16,
    /// The TTL / hop limit it starts with.
    pub ttl: u8,
}

impl Probe {
    /// Reads a `trace --live` request's arguments, `FROM TO PROTO PORT SRC_PORT SIZE TTL
    /// [json]`, as the control socket carries them: the probe, and whether JSON is asked.
    pub fn from_request(args: &str) -> Result<(Probe, bool), String> {
        let args: Vec<&str> = args.split_whitespace().collect();
        let [from, to, proto, port, src_port, size, ttl, rest @ ..] = args.as_slice() else {
            return Err("trace needs FROM TO PROTO PORT SRC_PORT SIZE TTL".into());
        };
        let shown = crate::yaml::shown;
        let number = |what: &str, v: &str| {
            v.parse::<u16>()
                .map_err(|_| format!("the {what} `{}` is not a number", shown(v)))
        };
        let probe = Probe {
            from: from.to_string(),
            to: to.to_string(),
            proto: proto.to_string(),
            port: number("port", port)?,
            src_port: number("source port", src_port)?,
            size: number("size", size)?,
            ttl: ttl
                .parse()
                .map_err(|_| format!("the TTL `{}` is not 0-255", shown(ttl)))?,
        };
        Ok((probe, rest.first() == Some(&"json")))
    }
}

/// One direction's story.
#[derive(Clone, Debug)]
pub struct Leg {
    pub lines: Vec<String>,
    pub delivered_to: Option<String>,
    pub reason: Option<DropReason>,
    /// What to change, for a drop.
    pub fix: Option<String>,
}

/// Both directions.
#[derive(Clone, Debug)]
pub struct Trace {
    pub forward: Leg,
    pub reply: Option<Leg>,
    /// With `--live`: what the running router's connection tracking holds for this flow.
    pub live: Vec<String>,
}

impl Trace {
    pub fn reachable(&self) -> bool {
        self.forward.delivered_to.is_some()
            && self
                .reply
                .as_ref()
                .is_some_and(|r| r.delivered_to.is_some())
    }
}

/// The address `id` sends from (its primary private IPv4, or IPv6 when `v6`).
fn address_of(snap: &Snapshot, port: PortId, v6: bool) -> Option<IpAddr> {
    match snap.topo.ports[port.ix()].attachment {
        Attachment::Eni(e) => {
            let eni = snap.eni(e);
            if v6 {
                eni.ipv6.first().map(|a| IpAddr::V6(*a))
            } else {
                eni.private_v4.first().map(|a| IpAddr::V4(*a))
            }
        }
        Attachment::Host(h) => {
            let host = snap.host(h);
            if v6 {
                host.ipv6.map(IpAddr::V6)
            } else {
                host.ipv4.map(IpAddr::V4)
            }
        }
        Attachment::Detached => None,
    }
}

/// `--proto`: the lab file's protocol names (one parser for both), but one protocol.
pub fn protocol(name: &str) -> Result<u8, String> {
    match crate::values::protocol(name) {
        Ok(crate::values::Protocol::Number(n)) => Ok(n),
        _ => Err(format!(
            "--proto {name}: use tcp, udp, icmp, icmpv6 or a number"
        )),
    }
}

/// Builds the packet, TCP with SYN (the start of a connection) unless told otherwise.
fn build(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    reply: bool,
) -> Result<Vec<u8>, String> {
    build_sized(src, dst, proto, sport, dport, reply, 0, 64)
}

/// The packet with `size` bytes in all (0: small) and the given TTL; the don't-fragment
/// bit is set, as Linux sets it for path-MTU discovery.
#[allow(clippy::too_many_arguments)]
fn build_sized(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    reply: bool,
    size: u16,
    ttl: u8,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let header = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20usize,
        _ => 40,
    } + match proto {
        6 => 20,
        17 | 1 | 58 => 8,
        _ => 0,
    };
    let pad = usize::from(size).saturating_sub(header);
    let payload: Vec<u8> = if pad > 0 {
        vec![0x5a; pad]
    } else {
        b"vpcd trace".to_vec()
    };
    let base = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = etherparse::Ipv4Header::new(
                0,
                ttl,
                etherparse::IpNumber(proto),
                s.octets(),
                d.octets(),
            )
            .map_err(|e| e.to_string())?;
            h.dont_fragment = true;
            PacketBuilder::ip(etherparse::IpHeaders::Ipv4(h, Default::default()))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), ttl),
        _ => return Err("the source and the destination are of different IP families".into()),
    };
    let r = match proto {
        6 => {
            let t = base.tcp(sport, dport, 1, 64240).syn();
            let t = if reply { t.ack(2) } else { t };
            t.write(&mut out, if pad > 0 { &payload } else { &[] })
        }
        17 => base.udp(sport, dport).write(&mut out, &payload),
        // An echo's identifier plays the source port's part (a NAT gateway translates it):
        // the request carries `sport`, its reply the identifier the request arrived with.
        1 if reply => base.icmpv4_echo_reply(sport, 1).write(&mut out, &payload),
        1 => base.icmpv4_echo_request(sport, 1).write(&mut out, &payload),
        58 if reply => base.icmpv6_echo_reply(sport, 1).write(&mut out, &payload),
        58 => base.icmpv6_echo_request(sport, 1).write(&mut out, &payload),
        n => base.write(&mut out, etherparse::IpNumber(n), &payload),
    };
    r.map_err(|e| e.to_string())?;
    Ok(out)
}

fn proto_text(m: &ProtoMatch) -> String {
    match m {
        ProtoMatch::All => "all traffic".into(),
        ProtoMatch::Tcp(r) | ProtoMatch::Udp(r) => {
            let p = if matches!(m, ProtoMatch::Tcp(_)) {
                "tcp"
            } else {
                "udp"
            };
            if r.is_all() {
                format!("{p} all ports")
            } else if r.from == r.to {
                format!("{p} {}", r.from)
            } else {
                format!("{p} {}-{}", r.from, r.to)
            }
        }
        ProtoMatch::Icmp { v6, ty, code } => {
            let p = if *v6 { "icmpv6" } else { "icmp" };
            match (ty, code) {
                (None, _) => format!("{p} all"),
                (Some(t), None) => format!("{p} type {t}"),
                (Some(t), Some(c)) => format!("{p} type {t} code {c}"),
            }
        }
        ProtoMatch::Number(n) => format!("protocol {n}"),
    }
}

fn peer_text(snap: &Snapshot, p: &SgPeer) -> String {
    match p {
        SgPeer::Cidr(c) => c.to_string(),
        SgPeer::Group(g) => format!("members of {}", snap.security_group(*g).id),
        SgPeer::PrefixList(s) => snap.topo.services[s.ix()].prefix_list.to_string(),
    }
}

fn dir_text(d: Direction) -> (&'static str, &'static str) {
    match d {
        Direction::Ingress => ("inbound", "from"),
        Direction::Egress => ("outbound", "to"),
    }
}

/// What a translation from `from` to `to` (address, and port or echo id) does to the
/// packet: its source if the source was `from`, else its destination.
fn translate(p: &mut dataplane::Packet, from: (IpAddr, Option<u16>), to: (IpAddr, Option<u16>)) {
    use dataplane::packet::Transport;
    let source = p.src == from.0;
    if source {
        p.src = to.0;
    } else if p.dst == from.0 {
        p.dst = to.0;
    } else {
        return;
    }
    let Some(port) = to.1 else { return };
    match &mut p.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port } => {
            *(if source { src_port } else { dst_port }) = port;
        }
        Transport::Icmp { ident, .. } => *ident = port,
        Transport::Other => {}
    }
}

/// Runs one packet and tells its story.
fn leg(
    snap: &Snapshot,
    pipe: &mut Pipeline,
    port: PortId,
    mut bytes: Vec<u8>,
) -> (Leg, Option<(PortId, Vec<u8>)>) {
    let mut rec = Recorder::new();
    let now = Timestamp::from_secs(1_700_000_000);
    let len = bytes.len();
    bytes.resize(len.max(2048), 0);
    let verdict = pipe.process_in(snap, port, &mut bytes, len, now, &mut rec);
    let mut lines = Vec::new();
    let mut last_packet = None;
    let mut fix = None;
    let name_eni = |e: dataplane::snapshot::EniIx| snap.eni(e).id.to_string();
    for step in &rec.steps {
        let line = match step {
            Step::Received { port, packet } => {
                last_packet = Some(*packet);
                let ports = packet
                    .ports()
                    .map_or(String::new(), |(s, d)| format!(" {s} → {d}"));
                format!(
                    "{} sends {} → {} {}{ports}",
                    snap.topo.ports[port.ix()].name,
                    packet.src,
                    packet.dst,
                    dataplane::packet::proto_name(packet.proto)
                )
            }
            Step::LocalService { service } => format!(
                "for the VPC router itself ({}); exempt from SGs, NACLs and flow logs",
                match service {
                    LocalService::Router(s) => format!("router of {}", snap.subnet(*s).id),
                    LocalService::Dns => "Amazon DNS".into(),
                    LocalService::Metadata => "instance metadata".into(),
                    LocalService::TimeSync => "Amazon Time Sync".into(),
                }
            ),
            Step::SourceDestCheck { eni, direction } => format!(
                "{}: source/destination check passes ({})",
                name_eni(*eni),
                dir_text(*direction).0
            ),
            Step::SecurityGroup {
                eni,
                direction,
                decision,
            } => {
                let (d, word) = dir_text(*direction);
                match decision {
                    SgDecision::Tracked => format!(
                        "{} security groups {d}: passes as part of a tracked connection (no rule needed)",
                        name_eni(*eni)
                    ),
                    SgDecision::Rule { group, rule, tracked } => {
                        let sg = snap.security_group(*group);
                        let r = &sg.rules(*direction)[*rule as usize];
                        format!(
                            "{} security groups {d}: allowed by {} {d} rule #{} ({} {word} {}){}",
                            name_eni(*eni),
                            sg.id,
                            rule + 1,
                            proto_text(&r.proto),
                            peer_text(snap, &r.peer),
                            if *tracked {
                                "; the connection is tracked"
                            } else {
                                "; untracked: allowed from the whole address space, and every port open the other way (R-SG-UNTRACKED)"
                            }
                        )
                    }
                    SgDecision::Denied => {
                        let eni_ref = snap.eni(*eni);
                        let groups: Vec<&str> = eni_ref
                            .security_groups
                            .iter()
                            .map(|g| &*snap.security_group(*g).id)
                            .collect();
                        if let Some(p) = last_packet {
                            let (peer, port) = match direction {
                                Direction::Ingress => (p.src, p.ports().map(|x| x.1)),
                                Direction::Egress => (p.dst, p.ports().map(|x| x.1)),
                            };
                            fix = Some(format!(
                                "add an {d} rule to {} allowing {}{} {word} {peer}",
                                groups.first().copied().unwrap_or("its security group"),
                                dataplane::packet::proto_name(p.proto),
                                port.map_or(String::new(), |x| format!(" {x}")),
                            ));
                        }
                        format!(
                            "{} security groups {d} ({}): no rule allows it",
                            name_eni(*eni),
                            groups.join(", ")
                        )
                    }
                }
            }
            Step::NetworkAcl {
                acl,
                direction,
                rule,
                allow,
            } => {
                let a = snap.network_acl(*acl);
                let (d, word) = dir_text(*direction);
                match (rule, allow) {
                    (Some(n), true) => format!("NACL {} {d}: rule {n} allows", a.id),
                    (Some(n), false) => {
                        fix = Some(format!(
                            "rule {n} of {} {d} denies it: remove it, or add a lower-numbered allow rule",
                            a.id
                        ));
                        format!("NACL {} {d}: rule {n} denies", a.id)
                    }
                    (None, _) => {
                        if let Some(p) = last_packet {
                            let (peer, port) = match direction {
                                Direction::Ingress => (p.src, p.ports().map(|x| x.1)),
                                Direction::Egress => (p.dst, p.ports().map(|x| x.1)),
                            };
                            fix = Some(format!(
                                "NACL {} {d}: no rule allows {}{} {word} {peer}; the final * rule denies. Add an allow rule{}",
                                a.id,
                                dataplane::packet::proto_name(p.proto),
                                port.map_or(String::new(), |x| format!(" {x}")),
                                if port.is_some_and(|x| x >= 1024) {
                                    " (replies go to ephemeral ports: Linux 32768-60999, NAT gateways 1024-65535)"
                                } else {
                                    ""
                                }
                            ));
                        }
                        format!(
                            "NACL {} {d}: no rule matches; the final * rule denies",
                            a.id
                        )
                    }
                }
            }
            Step::SameSubnet { subnet } => format!(
                "same subnet {}: delivered directly (no route table, no NACL)",
                snap.subnet(*subnet).id
            ),
            Step::Route { table, matched } => {
                let t = snap.route_table(*table);
                match matched {
                    Some((net, r)) if *r.destination == *net.to_string() => {
                        format!(
                            "route table {}: {} → {}",
                            t.id, r.destination, r.target_name
                        )
                    }
                    Some((net, r)) => format!(
                        "route table {}: {} (entry {}) → {}",
                        t.id, r.destination, net, r.target_name
                    ),
                    None => {
                        fix = Some(format!("add a route for this destination to {}", t.id));
                        format!("route table {}: no route matches", t.id)
                    }
                }
            }
            Step::RouterHop { ttl } => {
                format!("VPC router: forwards out of the VPC (TTL now {ttl})")
            }
            Step::InternetGateway { vpc, from, to } => {
                // Later hints name what the packet carries now (a hairpin arrives from the
                // sender's public IP).
                if let Some(p) = last_packet.as_mut() {
                    translate(p, (*from, None), (*to, None));
                }
                let igw = snap
                    .vpc(*vpc)
                    .internet_gateway
                    .as_deref()
                    .unwrap_or("the gateway");
                if from == to {
                    format!("internet gateway {igw}: {from} unchanged")
                } else {
                    format!("internet gateway {igw}: {from} ↔ {to} (1:1 NAT)")
                }
            }
            Step::NatGateway { nat, from, to } => {
                if let Some(p) = last_packet.as_mut() {
                    translate(p, (from.0, Some(from.1)), (to.0, Some(to.1)));
                }
                let end = |(a, p): (IpAddr, u16)| match a {
                    IpAddr::V4(_) => format!("{a}:{p}"),
                    IpAddr::V6(_) => format!("[{a}]:{p}"),
                };
                format!(
                    "NAT gateway {}: {} → {}",
                    snap.nat_gateway(*nat).id,
                    end(*from),
                    end(*to)
                )
            }
            Step::NatReset { nat } => format!(
                "NAT gateway {}: connection unknown, answered with RST",
                snap.nat_gateway(*nat).id
            ),
            Step::PacketTooBig { mtu } => format!("path MTU {mtu}: fragmentation needed sent back"),
            Step::TimeExceeded => "TTL exhausted: time exceeded sent back".into(),
            Step::InterfaceEndpoint {
                endpoint,
                client,
                host,
            } => format!(
                "interface endpoint {}: carries {}:{} to {} as from the endpoint",
                snap.interface_endpoint(*endpoint).id,
                client.0,
                client.1,
                snap.host(*host).id
            ),
            Step::Peering { peering, to_vpc } => format!(
                "peering {} (active) into {}",
                snap.peering(*peering).id,
                snap.vpc(*to_vpc).id
            ),
            Step::GatewayEndpoint { endpoint } => {
                format!("gateway endpoint {}", snap.gateway_endpoint(*endpoint).id)
            }
            Step::VirtualPrivateGateway { vpc } => format!(
                "virtual private gateway {}",
                snap.vpc(*vpc)
                    .virtual_private_gateway
                    .as_deref()
                    .unwrap_or("-")
            ),
            Step::VpnTunnel {
                tunnel,
                direction,
                route,
            } => {
                let t = snap.vpn_tunnel(*tunnel);
                let route = route.map_or(String::new(), |(net, r)| {
                    format!(" (VGW route {net}, {})", r.target_name)
                });
                let what = if t.direct_connect {
                    format!("Direct Connect virtual interface {}", t.vpn)
                } else {
                    format!("VPN tunnel {} {}", t.vpn, t.number)
                };
                match direction {
                    dataplane::observer::Direction::Egress => format!("into {what}{route}"),
                    dataplane::observer::Direction::Ingress => format!("out of {what}"),
                }
            }
            Step::ToHost { host } => format!("delivered to {}", snap.host(*host).id),
            Step::ToEni { eni } => format!("delivered to {}", name_eni(*eni)),
            Step::Dropped { reason, detail } => format!("DROPPED {reason}: {detail}"),
        };
        lines.push(line);
    }
    let (delivered_to, next) = match verdict {
        Verdict::Forward(p) => (
            Some(snap.topo.ports[p.ix()].name.to_string()),
            Some((p, bytes[..len].to_vec())),
        ),
        Verdict::Translated { port: p, len, .. } => (
            Some(snap.topo.ports[p.ix()].name.to_string()),
            Some((p, bytes[..len as usize].to_vec())),
        ),
        Verdict::Reply { port, .. } => (None, Some((port, Vec::new()))),
        // The router's own services answer on the way back: the caller asks them.
        Verdict::Local(_) => (
            Some("the VPC router".into()),
            Some((port, bytes[..len].to_vec())),
        ),
        Verdict::Drop(_) => (None, None),
    };
    let reason = rec.drop_reason();
    let leg = Leg {
        lines,
        delivered_to,
        reason,
        fix: if reason.is_some() { fix } else { None },
    };
    (leg, next)
}

/// Traces `probe` through `snap`.
pub fn trace(snap: &Snapshot, probe: &Probe) -> Result<Trace, String> {
    trace_live(snap, probe, None)
}

/// Traces `probe` through `snap` (the live snapshot of a running router) and, with `live`,
/// reports what the router's connection tracking holds for the flow at the ENIs it crosses
/// (looked up only: tracing never changes the router's state; the trace itself runs on a
/// scratch table, as a new connection would).
pub fn trace_live(
    snap: &Snapshot,
    probe: &Probe,
    live: Option<&dataplane::conntrack::Conntrack>,
) -> Result<Trace, String> {
    let from = snap.port_named(&probe.from).ok_or_else(|| {
        format!(
            "--from {}: no instance or outside host has this id",
            probe.from
        )
    })?;
    let proto = protocol(&probe.proto)?;
    let to: IpAddr = match probe.to.parse() {
        Ok(a) => a,
        Err(_) => {
            let p = snap.port_named(&probe.to).ok_or_else(|| {
                format!("--to {}: neither an address nor an id of the lab", probe.to)
            })?;
            // From outside, an instance is reached at its public IP.
            let outside = matches!(snap.topo.ports[from.ix()].attachment, Attachment::Host(_));
            match snap.topo.ports[p.ix()].attachment {
                Attachment::Eni(e) if outside && snap.eni(e).public_v4.is_some() => {
                    IpAddr::V4(snap.eni(e).public_v4.expect("checked"))
                }
                _ => {
                    // ICMPv6 asks IPv6; otherwise IPv4 when both ends have it, else IPv6
                    // (an IPv6-only instance).
                    let both_v4 = address_of(snap, from, false).is_some()
                        && address_of(snap, p, false).is_some();
                    let v6 = proto == 58 || (proto != 1 && !both_v4);
                    address_of(snap, p, v6)
                        .ok_or("the destination has no address of that family")?
                }
            }
        }
    };
    let src = address_of(snap, from, to.is_ipv6()).ok_or_else(|| {
        format!(
            "{} has no {} address",
            probe.from,
            if to.is_ipv6() { "IPv6" } else { "IPv4" }
        )
    })?;
    let mut pipe = Pipeline::new();
    let packet = build_sized(
        src,
        to,
        proto,
        probe.src_port,
        probe.port,
        false,
        probe.size,
        probe.ttl,
    )?;
    let mut live_lines = Vec::new();
    if let Some(ct) = live {
        let p = dataplane::Packet::parse(&packet).map_err(|r| r.to_string())?;
        let now = dataplane::io::event_loop::now();
        for (i, e) in snap.topo.enis.iter().enumerate() {
            for dir in [Direction::Egress, Direction::Ingress] {
                let owns = match dir {
                    Direction::Egress => e.owns(p.src),
                    Direction::Ingress => e.owns(p.dst),
                };
                if !owns || e.security_groups.is_empty() {
                    continue;
                }
                let key = dataplane::conntrack::FlowKey::at_eni(e.zone, dir, &p);
                let line = match ct.lookup(&key, now) {
                    Some(hit) => format!(
                        "{}: a tracked connection exists ({:?}, opened {}): replies pass its groups without a rule",
                        e.id,
                        hit.state(),
                        dir_text(hit.initiator()).0
                    ),
                    None => format!("{}: no tracked connection for this flow", e.id),
                };
                let _ = i;
                live_lines.push(line);
            }
        }
    }
    let (forward, delivered) = leg(snap, &mut pipe, from, packet);
    let reply = match (delivered, forward.delivered_to.as_deref()) {
        (Some((_, question)), Some("the VPC router")) => Some(router_answer(snap, from, question)),
        (Some((port, bytes)), Some(_)) if !bytes.is_empty() => {
            let p = dataplane::Packet::parse(&bytes).map_err(|r| r.to_string())?;
            let (sport, dport) = match p.transport {
                dataplane::packet::Transport::Icmp { ident, .. } => (ident, ident),
                _ => p.ports().unwrap_or((0, 0)),
            };
            // The reply of what arrived: after NAT64 its protocol is the other family's.
            let back = build(p.dst, p.src, p.proto, dport, sport, true)?;
            Some(leg(snap, &mut pipe, port, back).0)
        }
        _ => None,
    };
    Ok(Trace {
        forward,
        reply,
        live: live_lines,
    })
}

/// The way back of a packet for the router itself (R-ADDR-EXEMPT): what its services
/// (the same ones a worker runs) answer, straight to the sender, past SGs and NACLs.
fn router_answer(snap: &Snapshot, from: PortId, mut question: Vec<u8>) -> Leg {
    let name = snap.topo.ports[from.ix()].name.to_string();
    let len = question.len();
    question.resize(len.max(2048), 0);
    let service = dataplane::Packet::parse(&question[..len])
        .ok()
        .and_then(|p| match snap.topo.ports[from.ix()].attachment {
            Attachment::Eni(e) => snap.local_service(snap.eni(e).vpc, p.dst),
            _ => None,
        });
    let mut services = dataplane::router_services::RouterServices::new();
    services.metadata = Some(std::sync::Arc::new(std::sync::Mutex::new(
        dataplane::router_services::tcp_services::TcpServices::new(),
    )));
    let mut answers = Vec::new();
    if let Some(service) = service {
        let now = Timestamp::from_secs(1_700_000_000);
        services.answer(snap, from, service, &mut question, len, now, &mut |a| {
            answers.push(a.to_vec())
        });
    }
    let Some(first) = answers
        .first()
        .and_then(|a| dataplane::Packet::parse(a).ok())
    else {
        return Leg {
            lines: vec![format!(
                "the VPC router does not answer this packet ({})",
                "only ping of a subnet's router from that subnet, DNS queries and metadata requests get answers"
            )],
            delivered_to: None,
            reason: None,
            fix: Some("ping the router of the sender's own subnet, query DNS on udp/tcp 53, or reach metadata on tcp 80".into()),
        };
    };
    let ports = first
        .ports()
        .map_or(String::new(), |(s, d)| format!(" {s} → {d}"));
    Leg {
        lines: vec![
            format!(
                "the VPC router answers {} → {} {}{ports}",
                first.src,
                first.dst,
                dataplane::packet::proto_name(first.proto)
            ),
            format!("delivered to {name}"),
        ],
        delivered_to: Some(name),
        reason: None,
        fix: None,
    }
}

/// The JSON form: [`crate::json::Trace`] (docs/schemas/trace.schema.json), on one line.
pub fn to_json(t: &Trace) -> String {
    crate::json::to_line(&crate::json::Trace::new(t))
}

/// The text form.
pub fn to_text(t: &Trace) -> String {
    let mut s = String::new();
    let mut leg_text = |title: &str, l: &Leg| {
        let _ = writeln!(s, "{title}:");
        for (i, line) in l.lines.iter().enumerate() {
            let _ = writeln!(s, "  {:>2}. {line}", i + 1);
        }
        if let Some(f) = &l.fix {
            let _ = writeln!(s, "  fix: {f}");
        }
    };
    leg_text("forward", &t.forward);
    if let Some(r) = &t.reply {
        leg_text("reply", r);
    }
    if !t.live.is_empty() {
        let _ = writeln!(s, "live state:");
        for l in &t.live {
            let _ = writeln!(s, "  {l}");
        }
    }
    let _ = writeln!(
        s,
        "verdict: {}",
        if t.reachable() {
            "reachable".to_string()
        } else if let Some(r) = t.forward.reason {
            format!("not reachable ({r})")
        } else if let Some(r) = t.reply.as_ref().and_then(|r| r.reason) {
            format!("not reachable: the reply is dropped ({r})")
        } else {
            "not reachable".to_string()
        }
    );
    s
}
