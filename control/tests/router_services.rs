//! The VPC router's own services in process (semantics.md §1): ping of the subnet router,
//! and the Amazon DNS resolver's answers built and read with hickory-proto.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use dataplane::router_services::RouterServices;
use dataplane::{Snapshot, Timestamp, Verdict};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use support::*;

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

fn snap(text: &str) -> Snapshot {
    control::load_text(text, 1).unwrap().1
}

fn port(s: &Snapshot, name: &str) -> dataplane::PortId {
    s.port_named(name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

/// Runs a packet through the pipeline and, if it is for the router, through the router's
/// services, as a worker does; returns the answer.
fn ask(s: &Snapshot, rs: &mut RouterServices, from: &str, pkt: Vec<u8>) -> Option<Vec<u8>> {
    let mut pipe = dataplane::Pipeline::new();
    let len = pkt.len();
    let mut buf = pkt;
    buf.resize(4096, 0);
    let p = port(s, from);
    match pipe.process_in(s, p, &mut buf, len, NOW, &mut dataplane::NoObserver) {
        Verdict::Local(service) => {
            let mut answers = Vec::new();
            rs.answer(s, p, service, &mut buf, len, NOW, &mut |a: &[u8]| {
                answers.push(a.to_vec())
            });
            answers.pop()
        }
        v => panic!("not for the router: {v:?}"),
    }
}

fn dns_query(src: [u8; 4], server: [u8; 4], name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, server, 64)
        .udp(40000, 53)
        .write(&mut out, &m.to_vec().unwrap())
        .unwrap();
    out
}

fn dns_answer(bytes: &[u8]) -> Message {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!("not UDP")
    };
    assert_eq!(u.source_port(), 53);
    assert_eq!(u.destination_port(), 40000);
    Message::from_vec(u.payload()).unwrap()
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

const DEFAULT: &str = include_str!("../../configs/default.yaml");
const ENDPOINTS: &str = include_str!("labs/endpoints.yaml");
const WEB: [u8; 4] = [10, 0, 1, 10];
const DNS: [u8; 4] = [10, 0, 0, 2];

#[test]
fn the_subnet_router_answers_ping_from_its_own_subnet_only() {
    // R-ADDR-ROUTER.
    let s = snap(DEFAULT);
    let mut rs = RouterServices::new();
    let reply = ask(&s, &mut rs, "web-1", ping("10.0.1.10", "10.0.1.1")).expect("an echo reply");
    assert_eq!(src_of(&reply), ip("10.0.1.1"));
    assert_eq!(dst_of(&reply), ip("10.0.1.10"));
    let p = SlicedPacket::from_ip(&reply).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = p.transport else {
        panic!()
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv4Type::EchoReply(_)
    ));
    assert_eq!(dataplane::checksum::checksum(i.slice()), 0);
    assert!(ask(&s, &mut rs, "app-1", ping("10.0.2.10", "10.0.1.1")).is_none());
    let reply6 = ask(
        &s,
        &mut rs,
        "web-1",
        ping("2001:db8:10:1::10", "2001:db8:10:1::1"),
    );
    let reply6 = reply6.expect("the IPv6 router address answers too");
    let p = etherparse::SlicedPacket::from_ip(&reply6).unwrap();
    let Some(etherparse::TransportSlice::Icmpv6(i)) = p.transport else {
        panic!("{p:?}")
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv6Type::EchoReply(_)
    ));
}

#[test]
fn instance_names_resolve_both_ways_in_aws_schemes() {
    let s = snap(DEFAULT);
    let mut rs = RouterServices::new();
    let q = |rs: &mut RouterServices, name: &str, t| {
        dns_answer(&ask(&s, rs, "web-1", dns_query(WEB, DNS, name, t)).unwrap())
    };
    let m = q(&mut rs, "ip-10-0-2-10.ec2.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 10))]);
    let m = q(&mut rs, "10.2.0.10.in-addr.arpa.", RecordType::PTR);
    let ptr: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(ptr, ["ip-10-0-2-10.ec2.internal."]);
    // The public name resolves to the private address inside the VPC.
    let m = q(
        &mut rs,
        "ec2-198-51-100-10.compute-1.amazonaws.com.",
        RecordType::A,
    );
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 0, 1, 10))]);
    // No AAAA for an IPv4 name: the name exists, no data.
    let m = q(&mut rs, "ip-10-0-2-10.ec2.internal.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // Unknown names do not exist; nothing is asked outside the lab.
    for name in [
        "ip-10-0-9-9.ec2.internal.",
        "example.com.",
        "www.amazon.com.",
    ] {
        let m = q(&mut rs, name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    // Also at 169.254.169.253.
    let m = dns_answer(
        &ask(
            &s,
            &mut rs,
            "web-1",
            dns_query(
                WEB,
                [169, 254, 169, 253],
                "ip-10-0-1-10.ec2.internal.",
                RecordType::A,
            ),
        )
        .unwrap(),
    );
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 0, 1, 10))]);
}

#[test]
fn service_and_endpoint_names_and_private_dns() {
    // R-IFE-DNS: inside vpc-b (private DNS on) the queue service's name is the endpoint;
    // from vpc-a it is the public host.
    let s = snap(ENDPOINTS);
    let mut rs = RouterServices::new();
    let from_b = |rs: &mut RouterServices, name: &str| {
        dns_answer(
            &ask(
                &s,
                rs,
                "b-1",
                dns_query([10, 2, 1, 10], [10, 2, 0, 2], name, RecordType::A),
            )
            .unwrap(),
        )
    };
    let m = from_b(&mut rs, "queue.us-east-1.amazonaws.com.");
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 2, 1, 4))]);
    let m = dns_answer(
        &ask(
            &s,
            &mut rs,
            "a-1",
            dns_query(
                [10, 1, 1, 10],
                [10, 1, 0, 2],
                "queue.us-east-1.amazonaws.com.",
                RecordType::A,
            ),
        )
        .unwrap(),
    );
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))]);
    // Regional and zonal endpoint names.
    let m = from_b(&mut rs, "vpce-queue.queue.us-east-1.vpce.amazonaws.com.");
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 2, 1, 4))]);
    let m = from_b(
        &mut rs,
        "vpce-queue-us-east-1a.queue.us-east-1.vpce.amazonaws.com.",
    );
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 2, 1, 4))]);
    let m = from_b(
        &mut rs,
        "vpce-queue-us-east-1b.queue.us-east-1.vpce.amazonaws.com.",
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A service without an endpoint: its hosts.
    let m = from_b(&mut rs, "s3.us-east-1.amazonaws.com.");
    assert_eq!(addrs(&m).len(), 2);
    // A peer's private names resolve from A (active peering); D's (pending) do not.
    let m = dns_answer(
        &ask(
            &s,
            &mut rs,
            "a-1",
            dns_query(
                [10, 1, 1, 10],
                [10, 1, 0, 2],
                "ip-10-2-1-10.ec2.internal.",
                RecordType::A,
            ),
        )
        .unwrap(),
    );
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 2, 1, 10))]);
    let m = dns_answer(
        &ask(
            &s,
            &mut rs,
            "a-1",
            dns_query(
                [10, 1, 1, 10],
                [10, 1, 0, 2],
                "ip-10-4-1-10.ec2.internal.",
                RecordType::A,
            ),
        )
        .unwrap(),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn malformed_queries_get_formerr_or_nothing_and_never_a_panic() {
    let s = snap(DEFAULT);
    let mut rs = RouterServices::new();
    let raw = |payload: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ipv4(WEB, DNS, 64)
            .udp(40000, 53)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    // An id and garbage: FORMERR with that id.
    let a = ask(&s, &mut rs, "web-1", raw(&[0xab, 0xcd, 0xff, 0xff, 0xff])).expect("an answer");
    let m = dns_answer(&a);
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Too short to carry an id: nothing.
    assert!(ask(&s, &mut rs, "web-1", raw(&[1])).is_none());
    assert!(ask(&s, &mut rs, "web-1", raw(&[])).is_none());
    // Random-ish queries of every short length: no panic, and every one that carries an
    // id gets an answer with that id (a fresh service each time, so that the per-ENI
    // budget never throttles one and every input reaches the parser).
    let mut answered = 0;
    for i in 0..2000u32 {
        let len = (i % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|k| (i.wrapping_mul(2654435761) >> (k % 24)) as u8)
            .collect();
        let mut rs = RouterServices::new();
        let a = ask(&s, &mut rs, "web-1", raw(&bytes));
        assert_eq!(rs.dns_throttled, 0);
        if let Some(a) = a {
            assert_eq!(
                dns_answer(&a).metadata.id.to_be_bytes(),
                bytes[..2],
                "input {i}"
            );
            answered += 1;
        }
    }
    assert!(answered > 1000, "{answered} of 2000 answered");
}

#[test]
fn a_query_flood_is_bounded_per_interface() {
    let s = snap(DEFAULT);
    let mut rs = RouterServices::new();
    let mut answered = 0;
    for _ in 0..1500 {
        if ask(
            &s,
            &mut rs,
            "web-1",
            dns_query(WEB, DNS, "ip-10-0-1-10.ec2.internal.", RecordType::A),
        )
        .is_some()
        {
            answered += 1;
        }
    }
    assert_eq!(answered, dataplane::router_services::DNS_PACKETS_PER_SECOND);
    assert_eq!(rs.dns_throttled, 1500 - 1024);
}

/// A minimal TCP client for the metadata service: handshake, one request, the whole
/// answer (the service closes after it).
fn http_exchange(
    s: &Snapshot,
    rs: &mut RouterServices,
    from: &str,
    src: [u8; 4],
    request: &str,
) -> String {
    let body = tcp_exchange(
        s,
        rs,
        from,
        src,
        ([169, 254, 169, 254], 80),
        dataplane::snapshot::LocalService::Metadata,
        request.as_bytes(),
    );
    String::from_utf8_lossy(&body).into_owned()
}

/// Handshake, one request, everything the service sends back.
fn tcp_exchange(
    s: &Snapshot,
    rs: &mut RouterServices,
    from: &str,
    src: [u8; 4],
    (dst, dport): ([u8; 4], u16),
    service: dataplane::snapshot::LocalService,
    request: &[u8],
) -> Vec<u8> {
    let p = port(s, from);
    // A new client port for each exchange, as a real client picks.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(40000);
    let sport = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let send = |rs: &mut RouterServices, pkt: Vec<u8>| -> Vec<Vec<u8>> {
        let len = pkt.len();
        let mut buf = pkt;
        buf.resize(4096, 0);
        let mut out = Vec::new();
        rs.answer(s, p, service, &mut buf, len, NOW, &mut |a: &[u8]| {
            out.push(a.to_vec())
        });
        out
    };
    let seg = |seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]| {
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 64000);
        if syn {
            b = b.syn();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    };
    let synack = send(rs, seg(1000, None, true, &[]));
    let first = synack.first().expect("a SYN-ACK");
    let p0 = SlicedPacket::from_ip(first).unwrap();
    let Some(TransportSlice::Tcp(t)) = p0.transport else {
        panic!()
    };
    assert!(t.syn() && t.ack());
    let server_seq = t.sequence_number();
    let replies = send(rs, seg(1001, Some(server_seq + 1), false, request));
    let mut body = Vec::new();
    for r in &replies {
        let p = SlicedPacket::from_ip(r).unwrap();
        if dport == 80 {
            assert_eq!(
                p.net.as_ref().map(|n| match n {
                    etherparse::NetSlice::Ipv4(i) => i.header().ttl(),
                    _ => 0,
                }),
                Some(1),
                "metadata answers leave with hop limit 1"
            );
        }
        if let Some(TransportSlice::Tcp(t)) = p.transport {
            body.extend_from_slice(t.payload());
        }
    }
    body
}

#[test]
fn instance_metadata_over_imdsv2_answers_each_instance_its_own_facts() {
    // R-ADDR-IMDS.
    let s = snap(&DEFAULT.replace(
        "      - { id: app-1, subnet: private-a, private_ip: 10.0.2.10, ipv6_address: \"2001:db8:10:2::10\" }",
        "      - { id: app-1, subnet: private-a, private_ip: 10.0.2.10, ipv6_address: \"2001:db8:10:2::10\", http_tokens: required }",
    ));
    let mut rs = RouterServices::new();
    rs.metadata = Some(std::sync::Arc::new(std::sync::Mutex::new(
        dataplane::router_services::tcp_services::TcpServices::new(),
    )));
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n";
    let answer = http_exchange(&s, &mut rs, "web-1", WEB, put);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let token = answer.rsplit("\r\n\r\n").next().unwrap().to_string();
    assert_eq!(token.len(), 32);
    let get = |path: &str, token: Option<&str>| {
        let t = token.map_or(String::new(), |t| {
            format!("X-aws-ec2-metadata-token: {t}\r\n")
        });
        format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{t}\r\n")
    };
    let a = http_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        &get("/latest/meta-data/instance-id", Some(&token)),
    );
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    let a = http_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        &get("/latest/meta-data/public-ipv4", Some(&token)),
    );
    assert!(a.ends_with("198.51.100.10"), "{a}");
    let a = http_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        &get("/latest/meta-data/placement/availability-zone", None),
    );
    assert!(a.ends_with("us-east-1a"), "IMDSv1 allowed on web-1: {a}");
    // app-1 requires tokens, and web-1's token is not its own.
    let app = [10, 0, 2, 10];
    let a = http_exchange(
        &s,
        &mut rs,
        "app-1",
        app,
        &get("/latest/meta-data/instance-id", None),
    );
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = http_exchange(
        &s,
        &mut rs,
        "app-1",
        app,
        &get("/latest/meta-data/instance-id", Some(&token)),
    );
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = http_exchange(
        &s,
        &mut rs,
        "app-1",
        app,
        &get("/latest/meta-data/public-ipv4", None),
    );
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    // Unknown paths, bad methods, garbage: errors, never a panic.
    let a = http_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        &get("/latest/meta-data/nothing", Some(&token)),
    );
    assert!(a.starts_with("HTTP/1.1 404"), "{a}");
    let a = http_exchange(&s, &mut rs, "web-1", WEB, "DELETE / HTTP/1.1\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 405"), "{a}");
    let a = http_exchange(&s, &mut rs, "web-1", WEB, "\x00\x01garbage\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    let a = http_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 99999\r\n\r\n",
    );
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
}

#[test]
fn dns_answers_over_tcp_too() {
    let s = snap(DEFAULT);
    let mut rs = RouterServices::new();
    rs.metadata = Some(std::sync::Arc::new(std::sync::Mutex::new(
        dataplane::router_services::tcp_services::TcpServices::new(),
    )));
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("ip-10-0-2-10.ec2.internal.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let answer = tcp_exchange(
        &s,
        &mut rs,
        "web-1",
        WEB,
        (DNS, 53),
        dataplane::snapshot::LocalService::Dns,
        &framed,
    );
    let len = usize::from(u16::from_be_bytes([answer[0], answer[1]]));
    let m = Message::from_vec(&answer[2..2 + len]).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 10))]);
}
