//! The gateways in process (semantics.md §5, §6, §7, §10): NAT gateway translation both
//! ways with checksums recomputed from scratch, ICMP error translation, the NAT's limits
//! and idle reset, the EIGW's state, private NAT, and the VGW.

mod support;

use std::sync::Arc;

use dataplane::conntrack::Conntrack;
use dataplane::{DropReason, Pipeline, Timestamp, Verdict};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use support::*;

const LAB: &str = include_str!("labs/gateways.yaml");

fn gw_lab() -> Lab {
    lab_text(LAB)
}

/// Source port, destination port (TCP/UDP) or echo identifier (twice) of a packet.
fn ports_of(bytes: &[u8]) -> (u16, u16) {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    match p.transport.unwrap() {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            etherparse::Icmpv4Type::EchoRequest(e) | etherparse::Icmpv4Type::EchoReply(e) => {
                (e.id, e.id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

fn icmp_checksum_valid(bytes: &[u8]) -> bool {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        return false;
    };
    let icmp = ip.payload().payload;
    dataplane::checksum::checksum(icmp) == 0
}

fn echo(src: &str, dst: &str, id: u16, reply: bool) -> Vec<u8> {
    let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let b = PacketBuilder::ipv4(s.octets(), d.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut out = Vec::new();
    b.write(&mut out, b"ping").unwrap();
    out
}

/// An ICMPv4 error from `from` to `to` quoting `quoted` (its IP header and 8 bytes).
fn icmp_error(from: &str, to: &str, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (from.parse().unwrap(), to.parse().unwrap());
    let mut out = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        .icmpv4_raw(ty, code, [0; 4])
        .write(&mut out, &quoted[..28.min(quoted.len())])
        .unwrap();
    out
}

/// A data segment (ACK, no SYN) of an established connection.
fn tcp_ack(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let mut out = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .ack(5000)
        .write(&mut out, b"late data")
        .unwrap();
    out
}

#[test]
fn a_private_instance_reaches_the_internet_as_the_elastic_ip_and_back() {
    // R-NAT-SNAT, R-NAT-PATH: the NAT gateway translates to its private address and a
    // port, its subnet's route sends it to the IGW, which maps it to the EIP.
    let mut l = gw_lab();
    let out = l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    assert_eq!(src_of(&out), ip("198.51.100.5"));
    let (tport, dport) = ports_of(&out);
    assert!((1024..56024).contains(&tport), "{tport}");
    assert_eq!(dport, 443);
    assert_checksums_valid(&out);
    let back = l.expect_to(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.5", 443, tport),
        "app-1",
    );
    assert_eq!(dst_of(&back), ip("10.0.2.10"));
    assert_eq!(ports_of(&back), (443, 40000));
    assert_checksums_valid(&back);
    // The same flow keeps its port.
    let again = l.expect_to(
        "app-1",
        tcp_synack("10.0.2.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    assert_eq!(ports_of(&again).0, tport);
}

#[test]
fn udp_and_icmp_echo_are_translated_by_port_and_identifier() {
    let mut l = gw_lab();
    let out = l.expect_to(
        "app-1",
        udp("10.0.2.10", "203.0.113.10", 5000, 53),
        "inet-1",
    );
    let (tport, _) = ports_of(&out);
    assert_checksums_valid(&out);
    let back = l.expect_to(
        "inet-1",
        udp("203.0.113.10", "198.51.100.5", 53, tport),
        "app-1",
    );
    assert_eq!(ports_of(&back), (53, 5000));
    assert_checksums_valid(&back);

    let out = l.expect_to(
        "app-1",
        echo("10.0.2.10", "203.0.113.10", 777, false),
        "inet-1",
    );
    let (tid, _) = ports_of(&out);
    assert!(icmp_checksum_valid(&out));
    let back = l.expect_to(
        "inet-1",
        echo("203.0.113.10", "198.51.100.5", tid, true),
        "app-1",
    );
    assert_eq!(ports_of(&back).0, 777);
    assert!(icmp_checksum_valid(&back));
}

#[test]
fn nothing_opened_from_outside_gets_through_the_nat_gateway() {
    // R-NAT-INBOUND: to the EIP with no translation; to a private address.
    let mut l = gw_lab();
    l.expect_drop(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.5", 40000, 22),
        DropReason::NatInbound,
    );
    assert_eq!(
        l.send("inet-1", ping("203.0.113.10", "10.0.2.10")).verdict,
        Verdict::Drop(DropReason::IgwNoPublicIp)
    );
}

#[test]
fn protocols_other_than_tcp_udp_and_echo_are_not_translated() {
    let mut l = gw_lab();
    let mut gre = Vec::new();
    PacketBuilder::ipv4([10, 0, 2, 10], [203, 0, 113, 10], 64)
        .write(&mut gre, etherparse::IpNumber(47), &[0; 8])
        .unwrap();
    l.expect_drop("app-1", gre, DropReason::NatUnsupportedProtocol);
}

#[test]
fn an_icmp_error_is_translated_back_with_its_quote() {
    // traceroute and path-MTU discovery through NAT: the error quotes the translated
    // packet; the instance must get its own packet back in the quote.
    let mut l = gw_lab();
    let out = l.expect_to(
        "app-1",
        udp("10.0.2.10", "203.0.113.10", 45000, 33434),
        "inet-1",
    );
    let err = icmp_error("203.0.113.10", "198.51.100.5", 3, 3, &out);
    let back = l.expect_to("inet-1", err, "app-1");
    assert_eq!(dst_of(&back), ip("10.0.2.10"));
    assert!(icmp_checksum_valid(&back), "ICMP checksum");
    let p = SlicedPacket::from_ip(&back).unwrap();
    let Some(NetSlice::Ipv4(outer)) = p.net else {
        panic!()
    };
    assert!(dataplane::checksum::ipv4_header_ok(outer.header().slice()));
    let quote = &outer.payload().payload[8..];
    let inner = etherparse::Ipv4HeaderSlice::from_slice(quote).unwrap();
    assert_eq!(inner.source(), [10, 0, 2, 10], "quoted source restored");
    assert!(dataplane::checksum::ipv4_header_ok(inner.slice()));
    let sport = u16::from_be_bytes([quote[20], quote[21]]);
    assert_eq!(sport, 45000, "quoted port restored");
    // An error about nothing the gateway sent is refused.
    let stray = icmp_error(
        "203.0.113.10",
        "198.51.100.5",
        3,
        3,
        &out.iter().map(|b| b ^ 1).collect::<Vec<_>>(),
    );
    assert_eq!(
        l.send("inet-1", stray).verdict,
        Verdict::Drop(DropReason::NatInbound)
    );
}

#[test]
fn an_idle_connection_expires_and_a_late_segment_gets_a_reset() {
    // R-NAT-IDLE: 350 s.
    let mut l = gw_lab();
    let app = l.port("app-1");
    let inet = l.port("inet-1");
    l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    let late = Timestamp::from_secs(1_700_000_000 + 351);
    let mut seg = tcp_ack("10.0.2.10", "203.0.113.10", 40000, 443);
    let v = l
        .pipe
        .process(&l.snap, app, &mut seg, late, &mut dataplane::NoObserver);
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, app, "the RST goes back to the instance");
    let rst = &seg[..usize::from(len)];
    let p = SlicedPacket::from_ip(rst).unwrap();
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!()
    };
    assert!(t.rst());
    assert_eq!((t.source_port(), t.destination_port()), (443, 40000));
    assert_eq!(dst_of(rst), ip("10.0.2.10"));
    assert_checksums_valid(rst);
    // Within the timeout the flow would have gone on.
    let mut l = gw_lab();
    l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    let soon = Timestamp::from_secs(1_700_000_000 + 349);
    let mut seg = tcp_ack("10.0.2.10", "203.0.113.10", 40000, 443);
    let v = l
        .pipe
        .process(&l.snap, app, &mut seg, soon, &mut dataplane::NoObserver);
    assert_eq!(v, Verdict::Forward(inet));
}

#[test]
fn workers_hand_out_disjoint_ports() {
    let l = gw_lab();
    let ct = Arc::new(Conntrack::new(1 << 14));
    let app = l.port("app-1");
    let now = Timestamp::from_secs(1_700_000_000);
    for w in 0..2u16 {
        let mut pipe = Pipeline::with_shared(Arc::clone(&ct), w, 2);
        for i in 0..50u16 {
            let mut p = udp("10.0.2.10", "203.0.113.10", 10_000 + w * 100 + i, 53);
            let v = pipe.process(&l.snap, app, &mut p, now, &mut dataplane::NoObserver);
            assert!(matches!(v, Verdict::Forward(_)));
            assert_eq!(
                (ports_of(&p).0 - 1024) % 2,
                w,
                "worker {w} uses its own ports"
            );
        }
    }
}

#[test]
fn fifty_five_thousand_connections_to_one_destination_and_no_more() {
    // R-NAT-LIMIT: at most 55,000 to one (IP, port, protocol). A new flow tries a bounded
    // number of ports (a full destination must not stall the worker), so the last few
    // free ports of an almost full range may go unfound: the limit is never exceeded.
    let mut l = gw_lab();
    l.pipe = Pipeline::with_conntrack(Arc::new(Conntrack::new(1 << 19)));
    let app = l.port("app-1");
    let now = Timestamp::from_secs(1_700_000_000);
    let mut forwarded = 0;
    for i in 0..56_000u32 {
        let port = 1 + (i % 60_000) as u16;
        let mut p = udp("10.0.2.10", "203.0.113.10", port, 53);
        if matches!(
            l.pipe
                .process(&l.snap, app, &mut p, now, &mut dataplane::NoObserver),
            Verdict::Forward(_)
        ) {
            forwarded += 1;
        }
    }
    assert!((54_000..=55_000).contains(&forwarded), "{forwarded}");
    assert_eq!(
        l.pipe.stats.dropped(DropReason::NatPortExhausted),
        56_000 - forwarded
    );
    // Another destination port is another destination.
    let mut p = udp("10.0.2.10", "203.0.113.10", 60_001, 54);
    assert!(matches!(
        l.pipe
            .process(&l.snap, app, &mut p, now, &mut dataplane::NoObserver),
        Verdict::Forward(_)
    ));
}

#[test]
fn the_egress_only_gateway_admits_replies_only() {
    // R-EIGW: v6-1's SG is wide open; the EIGW alone keeps the internet out.
    let mut l = gw_lab();
    l.expect_drop(
        "inet-1",
        tcp_syn("2001:db8:ffff::10", "2001:db8:40:2::10", 40000, 22),
        DropReason::EigwInbound,
    );
    let out = tcp_syn("2001:db8:40:2::10", "2001:db8:ffff::10", 40000, 443);
    assert_eq!(
        l.expect_to("v6-1", out.clone(), "inet-1"),
        hop(out),
        "source unchanged"
    );
    l.expect_to(
        "inet-1",
        tcp_synack("2001:db8:ffff::10", "2001:db8:40:2::10", 443, 40000),
        "v6-1",
    );
    // IPv4 has no way out of this VPC.
    assert_eq!(
        l.send("v6-1", tcp_syn("10.40.2.10", "203.0.113.10", 40000, 443))
            .verdict,
        Verdict::Drop(DropReason::NoRoute)
    );
}

#[test]
fn a_private_nat_gateway_cannot_use_the_igw() {
    // R-IGW-PRIVNAT: translated to its private address, which has no public mapping.
    let text = LAB.replace(
        "{ id: nat-a, subnet: public-a, private_ip: 10.0.1.5, public_ip: 198.51.100.5 }",
        "{ id: nat-a, subnet: public-a, private_ip: 10.0.1.5, connectivity: private }",
    );
    let mut l = lab_text(&text);
    l.expect_drop(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        DropReason::IgwNoPublicIp,
    );
}

#[test]
fn on_premises_reaches_private_addresses_both_ways_but_never_public_ones() {
    // R-VGW, R-VGW-NOEIP.
    let mut l = gw_lab();
    let out = l.expect_to(
        "corp-1",
        tcp_syn("192.168.1.10", "10.0.2.10", 40000, 22),
        "app-1",
    );
    assert_eq!(dst_of(&out), ip("10.0.2.10"));
    l.expect_to(
        "app-1",
        tcp_synack("10.0.2.10", "192.168.1.10", 22, 40000),
        "corp-1",
    );
    l.expect_to("web-1", ping("10.0.1.10", "192.168.1.10"), "corp-1");
    assert_eq!(
        l.send("corp-1", ping("192.168.1.10", "198.51.100.10"))
            .verdict,
        Verdict::Drop(DropReason::NoRoute)
    );
}

/// Splits an IPv4 packet into two fragments after `at` bytes of its payload (a multiple
/// of 8), as a sender's stack would.
fn fragment(pkt: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut h, body) = etherparse::Ipv4Header::from_slice(pkt).unwrap();
    let (first_part, rest) = body.split_at(at);
    let mut out = Vec::new();
    for (i, part) in [first_part, rest].into_iter().enumerate() {
        h.more_fragments = i == 0;
        h.dont_fragment = false;
        h.fragment_offset = etherparse::IpFragOffset::try_new((i * at / 8) as u16).unwrap();
        h.set_payload_len(part.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(part);
        out.push(p);
    }
    let later = out.pop().unwrap();
    (out.pop().unwrap(), later)
}

/// The UDP datagram the fragments of one packet make, its checksum checked against its
/// (translated) addresses.
fn reassembled_udp_is_valid(first: &[u8], later: &[u8]) -> bool {
    let (h1, p1) = etherparse::Ipv4Header::from_slice(first).unwrap();
    let (_, p2) = etherparse::Ipv4Header::from_slice(later).unwrap();
    let mut l4 = p1.to_vec();
    l4.extend_from_slice(p2);
    let (udp, payload) = etherparse::UdpHeader::from_slice(&l4).unwrap();
    udp.calc_checksum_ipv4(&h1, payload).unwrap() == udp.checksum
}

#[test]
fn r_nat_frag_udp_fragments_cross_the_nat_gateway_tcp_and_icmp_ones_do_not() {
    // AWS, NAT gateway basics: UDP fragments are carried, TCP and ICMP ones dropped.
    let mut l = gw_lab();
    let mut whole = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 2, 10], [203, 0, 113, 10], 64)
        .udp(5000, 53)
        .write(&mut whole, &[0x5a; 1200])
        .unwrap();
    let (first, later) = fragment(&whole, 600);
    let out1 = l.expect_to("app-1", first, "inet-1");
    let out2 = l.expect_to("app-1", later, "inet-1");
    // Both leave from the NAT gateway's public IP; the port is in the first alone.
    assert_eq!(src_of(&out1), ip("198.51.100.5"));
    assert_eq!(src_of(&out2), ip("198.51.100.5"));
    assert!(reassembled_udp_is_valid(&out1, &out2));
    // (A fragment's ports, read where the UDP header starts.)
    let nat_port = u16::from_be_bytes([out1[20], out1[21]]);
    // The answer, fragmented too: the first finds the mapping, the later one follows it.
    let mut answer = Vec::new();
    etherparse::PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 5], 64)
        .udp(53, nat_port)
        .write(&mut answer, &[0xa5; 1000])
        .unwrap();
    answer[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    let (first, later) = fragment(&answer, 504);
    // A later fragment before its first cannot be placed.
    l.expect_drop("inet-1", later.clone(), DropReason::Fragment);
    let back1 = l.expect_to("inet-1", first, "app-1");
    let back2 = l.expect_to("inet-1", later, "app-1");
    assert_eq!(dst_of(&back1), ip("10.0.2.10"));
    assert_eq!(dst_of(&back2), ip("10.0.2.10"));
    assert_eq!(u16::from_be_bytes([back1[22], back1[23]]), 5000);
    assert!(reassembled_udp_is_valid(&back1, &back2));
    // TCP and ICMP fragments stop at the gateway.
    let mut tcp = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 2, 10], [203, 0, 113, 10], 64)
        .tcp(5001, 80, 1, 64240)
        .write(&mut tcp, &[0x11; 1200])
        .unwrap();
    let verdict = |l: &mut Lab, p| l.send("app-1", p).verdict;
    assert_eq!(
        verdict(&mut l, fragment(&tcp, 600).0),
        Verdict::Drop(DropReason::Fragment)
    );
    let mut icmp = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 2, 10], [203, 0, 113, 10], 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut icmp, &[0x22; 1200])
        .unwrap();
    assert_eq!(
        verdict(&mut l, fragment(&icmp, 600).0),
        Verdict::Drop(DropReason::Fragment)
    );
}

/// The lab with its NAT gateway moved to the private subnet, whose table sends
/// 0.0.0.0/0 to that NAT gateway: AWS creates it; its traffic goes nowhere.
#[test]
fn a_public_nat_gateway_in_a_private_subnet_is_allowed_warned_and_drops_with_a_reason() {
    let text = LAB.replace(
        "{ id: nat-a, subnet: public-a, private_ip: 10.0.1.5,",
        "{ id: nat-a, subnet: private-a, private_ip: 10.0.2.5,",
    );
    let lab = control::check_text(&text).expect("valid, with a warning");
    assert!(
        lab.warnings
            .iter()
            .any(|w| w.warning && w.message.contains("will be dropped")),
        "{:?}",
        lab.warnings
    );
    let mut l = lab_text(&text);
    let o = l.send("app-1", tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443));
    assert_eq!(o.verdict, Verdict::Drop(DropReason::NoRoute));
    let t = control::trace::trace(
        &l.snap,
        &control::trace::Probe {
            from: "app-1".into(),
            to: "203.0.113.10".into(),
            proto: "tcp".into(),
            port: 443,
            src_port: 40000,
            size: 0,
            ttl: 64,
        },
    )
    .unwrap();
    let text = control::trace::to_text(&t);
    assert!(
        text.contains("routes the translated traffic to a NAT gateway again"),
        "{text}"
    );
}

fn big_udp(src: &str, dst: &str, df: bool) -> Vec<u8> {
    let mut out = Vec::new();
    match (ip(src), ip(dst)) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            let mut h = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::UDP,
                s.octets(),
                d.octets(),
            )
            .unwrap();
            h.dont_fragment = df;
            PacketBuilder::ip(etherparse::IpHeaders::Ipv4(h, Default::default()))
                .udp(5000, 5001)
                .write(&mut out, &[7; 3000])
                .unwrap();
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .udp(5000, 5001)
                .write(&mut out, &[7; 3000])
                .unwrap();
        }
        _ => panic!(),
    }
    out
}

#[test]
fn the_internet_path_is_1500_bytes_and_the_router_says_so() {
    // R-IGW-MTU through the NAT gateway: app-1's group admits type 3, so the router's
    // "fragmentation needed" reaches it, quoting the packet.
    let mut l = gw_lab();
    let app = l.port("app-1");
    let mut p = big_udp("10.0.2.10", "203.0.113.10", true);
    let v = l.pipe.process(
        &l.snap,
        app,
        &mut p,
        Timestamp::from_secs(1_700_000_000),
        &mut dataplane::NoObserver,
    );
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, app);
    let err = &p[..usize::from(len)];
    assert_eq!(src_of(err), ip("10.0.2.1"), "from the subnet's router");
    assert!(icmp_checksum_valid(err));
    let s = SlicedPacket::from_ip(err).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!()
    };
    assert_eq!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1500 }
        )
    );
    // web-1's group admits no ICMP errors: the error is lost, as on AWS.
    assert_eq!(
        l.send("web-1", big_udp("10.0.1.10", "203.0.113.10", true))
            .verdict,
        Verdict::Drop(DropReason::MtuExceeded)
    );
    // Without DF AWS would fragment; vpcd does not, and says so.
    assert_eq!(
        l.send("app-1", big_udp("10.0.2.10", "203.0.113.10", false))
            .verdict,
        Verdict::Drop(DropReason::MtuExceeded)
    );
    // IPv6: "packet too big" to web-1, whose group admits ICMPv6.
    let web = l.port("web-1");
    let mut p = big_udp("2001:db8:10:1::10", "2001:db8:ffff::10", true);
    let v = l.pipe.process(
        &l.snap,
        web,
        &mut p,
        Timestamp::from_secs(1_700_000_000),
        &mut dataplane::NoObserver,
    );
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, web);
    // ICMPv6 "packet too big" (type 2) with the path's MTU, 1500.
    let reply = etherparse::SlicedPacket::from_ip(&p[..usize::from(len)]).unwrap();
    let Some(etherparse::TransportSlice::Icmpv6(icmp)) = reply.transport else {
        panic!("{reply:?}")
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1500 }
    );
    // Answered, and still a drop under its reason (§13).
    let before = l.pipe.stats.dropped(DropReason::MtuExceeded);
    let mut p = big_udp("2001:db8:10:1::10", "2001:db8:ffff::10", true);
    let now = Timestamp::from_secs(1_700_000_000);
    l.pipe
        .process(&l.snap, web, &mut p, now, &mut dataplane::NoObserver);
    assert_eq!(l.pipe.stats.dropped(DropReason::MtuExceeded), before + 1);
    // Inside the VPC, 9001-byte packets pass.
    let p = big_udp("10.0.1.10", "10.0.2.10", true);
    assert_eq!(
        l.send("web-1", p).verdict,
        Verdict::Drop(DropReason::SgIngress),
        "no size limit inside the VPC: the SG decides"
    );
    // From the internet (R-IGW-MTU): to web-1's public IP, "fragmentation needed" goes
    // back to the host, from that public IP; to a public IP nobody holds, the IGW has
    // nowhere to deliver it, whatever its size.
    let mut p = big_udp("203.0.113.10", "198.51.100.10", true);
    let inet = l.port("inet-1");
    let v = l.pipe.process(
        &l.snap,
        inet,
        &mut p,
        Timestamp::from_secs(1_700_000_000),
        &mut dataplane::NoObserver,
    );
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, inet);
    let reply = etherparse::SlicedPacket::from_ip(&p[..usize::from(len)]).unwrap();
    let Some(etherparse::NetSlice::Ipv4(h)) = &reply.net else {
        panic!("{reply:?}")
    };
    assert_eq!(h.header().source(), [198, 51, 100, 10]);
    assert_eq!(
        l.send("inet-1", big_udp("203.0.113.10", "198.51.100.99", true))
            .verdict,
        Verdict::Drop(DropReason::IgwNoPublicIp)
    );
}

#[test]
fn map_public_ip_on_launch_assigns_from_the_pool() {
    let text = LAB
        .replace(
            "{ id: public-a, cidr_block: 10.0.1.0/24, ipv6_cidr_block: \"2001:db8:10:1::/64\", route_table: rtb-public }",
            "{ id: public-a, cidr_block: 10.0.1.0/24, ipv6_cidr_block: \"2001:db8:10:1::/64\", route_table: rtb-public, map_public_ip_on_launch: true }",
        )
        .replace(
            "{ id: web-1, subnet: public-a, private_ip: 10.0.1.10, ipv6_address: \"2001:db8:10:1::10\", public_ip: 198.51.100.10, security_groups: [sg-web] }",
            "{ id: web-1, subnet: public-a, private_ip: 10.0.1.10, ipv6_address: \"2001:db8:10:1::10\", security_groups: [sg-web] }",
        )
        .replace(
            "    - { id: inet-1, ipv4: 203.0.113.10, ipv6: \"2001:db8:ffff::10\" }",
            "    - { id: inet-1, ipv4: 203.0.113.10, ipv6: \"2001:db8:ffff::10\" }\n  public_ip_pool: 198.51.100.0/29",
        );
    let mut l = lab_text(&text);
    let out = l.expect_to(
        "web-1",
        tcp_syn("10.0.1.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    // .1 is free (.5 is the NAT gateway's EIP): the first address of the pool.
    assert_eq!(src_of(&out), ip("198.51.100.1"));
    // A pool too small for the instances is a `check` error.
    let tiny = text.replace(
        "public_ip_pool: 198.51.100.0/29",
        "public_ip_pool: 198.51.100.4/31",
    );
    let diags = control::check_text(&tiny).unwrap_err();
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("has no free address")),
        "{diags:?}"
    );
}

#[test]
fn the_vpc_router_is_a_hop_on_the_way_out_and_answers_an_expired_ttl() {
    // traceroute: TTL 1 towards the internet is answered by the subnet's router with
    // "time exceeded" (sg-app admits type 11); web-1's group does not, so its probe is
    // dropped as TTL_EXPIRED.
    let mut l = gw_lab();
    let app = l.port("app-1");
    let mut probe = Vec::new();
    PacketBuilder::ipv4([10, 0, 2, 10], [203, 0, 113, 10], 1)
        .udp(45000, 33434)
        .write(&mut probe, b"probe")
        .unwrap();
    let now = Timestamp::from_secs(1_700_000_000);
    // Room after the packet, as a worker's buffer has: the error is longer than the probe.
    let len = probe.len();
    probe.resize(256, 0);
    let v = l.pipe.process_in(
        &l.snap,
        app,
        &mut probe,
        len,
        now,
        &mut dataplane::NoObserver,
    );
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, app);
    let err = &probe[..usize::from(len)];
    assert_eq!(src_of(err), ip("10.0.2.1"));
    assert!(icmp_checksum_valid(err));
    let mut probe = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [203, 0, 113, 10], 1)
        .udp(45000, 33434)
        .write(&mut probe, b"probe")
        .unwrap();
    assert_eq!(
        l.send("web-1", probe).verdict,
        Verdict::Drop(DropReason::TtlExpired)
    );
    // With TTL 2 the probe goes out with 1 left.
    let mut probe = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [203, 0, 113, 10], 2)
        .udp(45000, 33434)
        .write(&mut probe, b"probe")
        .unwrap();
    let out = l.expect_to("web-1", probe, "inet-1");
    assert_eq!(out[8], 1);
    assert_checksums_valid(&out);
}
