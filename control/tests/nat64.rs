//! NAT64 and DNS64 (issue 21; AWS, "DNS64 and NAT64"): an instance of an IPv6-only subnet
//! reaches IPv4-only hosts at 64:ff9b::/96 through the NAT gateway, whose translation
//! each way is checked field by field with etherparse (addresses, ports, identifiers,
//! checksums), and the Amazon DNS synthesizes AAAA records where the subnet enables DNS64.
//! In process, then end to end with ping, iperf3 and getent.

mod common;
mod support;

use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::router_services::RouterServices;
use dataplane::Verdict;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use support::*;

const LAB: &str = include_str!("labs/nat64.yaml");
const V6_1: &str = "2001:db8:60:2::10";
const INET_VIA_64: &str = "64:ff9b::cb00:710a";

/// Runs `pkt` from `from` and returns the verdict and the packet as it left.
fn run(l: &mut Lab, from: &str, mut pkt: Vec<u8>) -> (Verdict, Vec<u8>) {
    let len = pkt.len();
    pkt.resize(len + 64, 0);
    let p = l.port(from);
    let v = l
        .pipe
        .process_in(&l.snap, p, &mut pkt, len, NOW, &mut dataplane::NoObserver);
    let out_len = match v {
        Verdict::Translated { len, .. } => len as usize,
        _ => len,
    };
    pkt.truncate(out_len);
    (v, pkt)
}

fn to_port(l: &Lab, v: Verdict) -> String {
    match v {
        Verdict::Translated { port, .. } | Verdict::Forward(port) => {
            l.snap.topo.ports[port.ix()].name.to_string()
        }
        other => format!("{other:?}"),
    }
}

/// Checks the transport checksum of an IPv4 or IPv6 packet with etherparse.
fn checksum_ok(bytes: &[u8]) -> bool {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
            let h = ip.header();
            t.calc_checksum_ipv4(h.source(), h.destination()).unwrap() == t.checksum()
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) => {
            let h = ip.header();
            t.calc_checksum_ipv6(h.source(), h.destination()).unwrap() == t.checksum()
        }
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
            u.to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                .unwrap()
                == u.checksum()
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(u))) => {
            u.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .unwrap()
                == u.checksum()
        }
        (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Icmpv4(i))) => {
            i.header().icmp_type.calc_checksum(i.payload()) == i.checksum()
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(i))) => {
            let h = ip.header();
            i.header()
                .icmp_type
                .calc_checksum(h.source(), h.destination(), i.payload())
                .unwrap()
                == i.checksum()
        }
        _ => false,
    }
}

fn ports(bytes: &[u8]) -> (u16, u16) {
    match SlicedPacket::from_ip(bytes).unwrap().transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => {
            let b = i.slice();
            let id = u16::from_be_bytes([b[4], b[5]]);
            (id, id)
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let b = i.slice();
            let id = u16::from_be_bytes([b[4], b[5]]);
            (id, id)
        }
        _ => panic!("no transport"),
    }
}

#[test]
fn tcp_udp_and_echo_cross_nat64_both_ways_with_valid_checksums() {
    let mut l = lab_text(LAB);
    let syn = {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv6(
            V6_1.parse::<Ipv6Addr>().unwrap().octets(),
            INET_VIA_64.parse::<Ipv6Addr>().unwrap().octets(),
            64,
        )
        .tcp(40000, 443, 1, 64240)
        .syn()
        .write(&mut out, b"hello over nat64")
        .unwrap();
        out
    };
    let udp6 = udp(V6_1, INET_VIA_64, 40001, 53);
    let echo = ping(V6_1, INET_VIA_64);
    for (name, pkt, proto4) in [("tcp", syn, 6), ("udp", udp6, 17), ("echo", echo, 1)] {
        let (v, out) = run(&mut l, "v6-1", pkt);
        assert_eq!(to_port(&l, v), "inet-1", "{name}");
        assert!(matches!(v, Verdict::Translated { .. }), "{name}: {v:?}");
        // IPv4 from the NAT gateway's public IP to the embedded address.
        assert_eq!(src_of(&out), ip("198.51.100.60"), "{name}");
        assert_eq!(dst_of(&out), ip("203.0.113.10"), "{name}");
        assert_eq!(out[9], proto4, "{name}");
        assert!(checksum_ok(&out), "{name}: transport checksum");
        assert!(dataplane::checksum::ipv4_header_ok(&out[..20]), "{name}");
        // The answer comes back as IPv6 from 64:ff9b::203.0.113.10 to the instance.
        let (nat_port, dport) = ports(&out);
        let answer = match name {
            "tcp" => {
                let mut a = Vec::new();
                etherparse::PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 60], 64)
                    .tcp(dport, nat_port, 7, 64240)
                    .syn()
                    .ack(2)
                    .write(&mut a, b"reply")
                    .unwrap();
                a
            }
            "udp" => udp("203.0.113.10", "198.51.100.60", dport, nat_port),
            _ => {
                let mut a = Vec::new();
                etherparse::PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 60], 64)
                    .icmpv4_echo_reply(nat_port, 1)
                    .write(&mut a, b"pong")
                    .unwrap();
                a
            }
        };
        let (v, back) = run(&mut l, "inet-1", answer);
        assert_eq!(to_port(&l, v), "v6-1", "{name} back");
        assert_eq!(src_of(&back), ip(INET_VIA_64), "{name} back");
        assert_eq!(dst_of(&back), ip(V6_1), "{name} back");
        assert!(checksum_ok(&back), "{name} back: transport checksum");
        let want = match name {
            "tcp" => 40000,
            "udp" => 40001,
            _ => ports(&ping(V6_1, INET_VIA_64)).0,
        };
        assert_eq!(ports(&back).1, want, "{name}: the instance's own port back");
    }
}

#[test]
fn nat64_refuses_what_it_cannot_translate_and_what_comes_unasked() {
    let mut l = lab_text(LAB);
    // Not in 64:ff9b::/96, routed to the NAT gateway anyway (through ::/0 it goes to the
    // egress-only gateway, so build a lab that sends it to the NAT gateway).
    let text = LAB.replace(
        "          - { destination: \"::/0\", target: eigw-6 }",
        "          - { destination: \"2001:db8:ffff::/48\", target: eigw-6 }",
    );
    assert!(control::check_text(&text).is_ok());
    // An echo *reply* from outside with no mapping: refused.
    let mut a = Vec::new();
    etherparse::PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 60], 64)
        .icmpv4_echo_reply(999, 1)
        .write(&mut a, b"unasked")
        .unwrap();
    let (v, _) = run(&mut l, "inet-1", a);
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    // A route for other IPv6 to a NAT gateway is refused by check.
    let bad = LAB.replace(
        "\"64:ff9b::/96\", target: nat-6",
        "\"2001:db8:ffff::/48\", target: nat-6",
    );
    let errs = control::check_text(&bad).unwrap_err();
    assert!(errs.iter().any(|d| d.message.contains("NAT64")), "{errs:?}");
}

fn aaaa(l: &Lab, rs: &mut RouterServices, from: &str, src: &str, name: &str) -> Vec<Ipv6Addr> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::AAAA,
    ));
    let mut pkt = Vec::new();
    let s: Ipv6Addr = src.parse().unwrap();
    let d: Ipv6Addr = "fd00:ec2::253".parse().unwrap();
    etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        .udp(40000, 53)
        .write(&mut pkt, &m.to_vec().unwrap())
        .unwrap();
    let len = pkt.len();
    pkt.resize(4096, 0);
    let mut pipe = dataplane::Pipeline::new();
    let p = l.port(from);
    let v = pipe.process_in(&l.snap, p, &mut pkt, len, NOW, &mut dataplane::NoObserver);
    let Verdict::Local(service) = v else {
        panic!("{v:?}")
    };
    let mut answers = Vec::new();
    rs.answer(
        &l.snap,
        p,
        service,
        &mut pkt,
        len,
        NOW,
        &mut |a: &[u8]| answers.push(a.to_vec()),
    );
    let a = answers.pop().expect("an answer");
    let s = SlicedPacket::from_ip(&a).unwrap();
    let Some(TransportSlice::Udp(u)) = s.transport else {
        panic!()
    };
    Message::from_vec(u.payload())
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(x) => Some(x.0),
            _ => None,
        })
        .collect()
}

#[test]
fn dns64_synthesizes_aaaa_for_ipv4_only_names_where_the_subnet_enables_it() {
    let l = lab_text(LAB);
    let mut rs = RouterServices::new();
    let got = aaaa(&l, &mut rs, "v6-1", V6_1, "api.example.test.");
    assert_eq!(got, ["64:ff9b::c612:a".parse::<Ipv6Addr>().unwrap()]);
    assert_eq!(
        dataplane::nat64::embedded(got[0]),
        Some(Ipv4Addr::new(198, 18, 0, 10))
    );
    // Without enable_dns64: no AAAA for an IPv4-only name.
    let off = lab_text(&LAB.replace(", enable_dns64: true", ""));
    assert!(aaaa(&off, &mut rs, "v6-1", V6_1, "api.example.test.").is_empty());
}

#[test]
fn an_ipv6_only_instance_reaches_ipv4_hosts_by_name_through_nat64() {
    if !common::e2e("an_ipv6_only_instance_reaches_ipv4_hosts_by_name_through_nat64") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-n64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nat64.yaml");
    std::fs::write(&file, LAB).unwrap();
    let lab = common::LabRun::up(
        Some(file.to_str().unwrap()),
        &common::unique_prefix("n64"),
        &[],
    );
    let _ = std::fs::remove_dir_all(&dir);
    // DNS64: the service's IPv4-only name has a synthesized IPv6 address.
    let o = lab.exec("v6-1", &["getent", "ahostsv6", "api.example.test"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("64:ff9b::c612:a"), "{out}");
    // NAT64: ping and TCP to IPv4-only hosts.
    lab.ping("v6-1", INET_VIA_64, &["-6"]);
    lab.ping("v6-1", "64:ff9b::c612:a", &["-6"]);
    let _server = lab.spawn("inet-1", &["iperf3", "-s"]);
    let report = common::iperf(&lab, "v6-1", INET_VIA_64, &["-t", "2"]);
    assert!(common::received_bytes(&report) > 1e6, "{report}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}
