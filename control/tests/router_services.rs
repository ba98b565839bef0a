//! The VPC router's own services in process (semantics.md §1): ping of the subnet router,
//! and the Amazon DNS resolver's answers built and read with hickory-proto.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use dataplane::router_services::tcp_services::{
    TcpServices, HALF_OPEN_SECS, IDLE_SECS, LIFETIME_SECS, PER_SOURCE, SOCKETS,
};
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
    deliver(s, rs, from, pkt, NOW).pop()
}

/// Runs a packet sent at `now` through the pipeline and the router's services, as a
/// worker does; returns every answer.
fn deliver(
    s: &Snapshot,
    rs: &mut RouterServices,
    from: &str,
    pkt: Vec<u8>,
    now: Timestamp,
) -> Vec<Vec<u8>> {
    let mut pipe = dataplane::Pipeline::new();
    let len = pkt.len();
    let mut buf = pkt;
    buf.resize(4096, 0);
    let p = port(s, from);
    match pipe.process_in(s, p, &mut buf, len, now, &mut dataplane::NoObserver) {
        Verdict::Local(service) => {
            let mut answers = Vec::new();
            rs.answer(s, p, service, &mut buf, len, now, &mut |a: &[u8]| {
                answers.push(a.to_vec())
            });
            answers
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
        assert_eq!(rs.counters.link_local_throttled, 0);
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
    assert_eq!(
        answered,
        dataplane::router_services::LINK_LOCAL_PACKETS_PER_SECOND
    );
    assert_eq!(rs.counters.link_local_throttled, 1500 - 1024);
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
    let body = tcp_exchange(s, rs, from, src, METADATA, request.as_bytes());
    String::from_utf8_lossy(&body).into_owned()
}

/// Handshake, one request, everything the service sends back.
fn tcp_exchange(
    s: &Snapshot,
    rs: &mut RouterServices,
    from: &str,
    src: [u8; 4],
    dst: ([u8; 4], u16),
    request: &[u8],
) -> Vec<u8> {
    let mut c = Conn::new(from, src, dst);
    assert!(c.connect(s, rs, NOW), "a SYN-ACK");
    let replies = c.send(s, rs, request, false, NOW);
    if dst.1 == 80 {
        for r in &replies {
            assert_eq!(r.ttl, 1, "metadata answers leave with hop limit 1");
        }
    }
    // The client takes the answer and closes, as curl does: the slot listens again.
    c.send(s, rs, &[], true, NOW);
    replies.iter().flat_map(|r| r.payload.clone()).collect()
}

/// One segment a service sent to a client.
struct Segment {
    syn: bool,
    fin: bool,
    rst: bool,
    seq: u32,
    payload: Vec<u8>,
    /// The IPv4 TTL.
    ttl: u8,
}

fn segment_of(bytes: &[u8]) -> Option<(u16, Segment)> {
    let p = SlicedPacket::from_ip(bytes).ok()?;
    let ttl = match &p.net {
        Some(etherparse::NetSlice::Ipv4(i)) => i.header().ttl(),
        _ => 0,
    };
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    let seg = Segment {
        syn: t.syn(),
        fin: t.fin(),
        rst: t.rst(),
        seq: t.sequence_number(),
        payload: t.payload().to_vec(),
        ttl,
    };
    Some((t.destination_port(), seg))
}

/// One client connection to a router service, sent from an instance's port (with the
/// instance's address, or one it spoofs) and driven segment by segment.
struct Conn {
    from: String,
    src: [u8; 4],
    dst: ([u8; 4], u16),
    sport: u16,
    /// The next sequence number it sends.
    seq: u32,
    /// The next sequence number it expects from the service.
    ack: Option<u32>,
}

const METADATA: ([u8; 4], u16) = ([169, 254, 169, 254], 80);
const DNS_TCP: ([u8; 4], u16) = (DNS, 53);

impl Conn {
    fn new(from: &str, src: [u8; 4], dst: ([u8; 4], u16)) -> Conn {
        // A new client port for each connection, as a real client picks.
        static NEXT: AtomicU16 = AtomicU16::new(40000);
        Conn {
            from: from.to_string(),
            src,
            dst,
            sport: NEXT.fetch_add(1, Ordering::Relaxed),
            seq: 1000,
            ack: None,
        }
    }

    /// Sends one segment at `now`; returns what the service sent back to this connection
    /// (answers to others, such as RSTs of connections it timed out, are left out).
    fn segment(
        &mut self,
        s: &Snapshot,
        rs: &mut RouterServices,
        syn: bool,
        payload: &[u8],
        fin: bool,
        now: Timestamp,
    ) -> Vec<Segment> {
        let pkt = self.packet(syn, payload, fin);
        let answers = deliver(s, rs, &self.from, pkt, now);
        self.take(&answers)
    }

    /// The connection's next segment.
    fn packet(&mut self, syn: bool, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(self.src, self.dst.0, 64)
            .tcp(self.sport, self.dst.1, self.seq, 64000);
        if syn {
            b = b.syn();
        }
        if fin {
            b = b.fin();
        }
        if let Some(a) = self.ack {
            b = b.ack(a);
        }
        let mut pkt = Vec::new();
        b.write(&mut pkt, payload).unwrap();
        self.seq += payload.len() as u32 + u32::from(syn) + u32::from(fin);
        pkt
    }

    /// The answers for this connection, acknowledged from then on.
    fn take(&mut self, answers: &[Vec<u8>]) -> Vec<Segment> {
        let replies: Vec<Segment> = answers
            .iter()
            .filter_map(|a| segment_of(a))
            .filter(|(port, _)| *port == self.sport)
            .map(|(_, seg)| seg)
            .collect();
        for r in &replies {
            // Sequence numbers wrap (the service's first one is random).
            let end = r
                .seq
                .wrapping_add(r.payload.len() as u32 + u32::from(r.syn) + u32::from(r.fin));
            if !r.rst && self.ack.is_none_or(|a| end.wrapping_sub(a) as i32 > 0) {
                self.ack = Some(end);
            }
        }
        replies
    }

    /// Sends a SYN at `now`; whether a SYN-ACK came back.
    fn connect(&mut self, s: &Snapshot, rs: &mut RouterServices, now: Timestamp) -> bool {
        let replies = self.segment(s, rs, true, &[], false, now);
        replies.iter().any(|r| r.syn && !r.rst)
    }

    /// Sends request bytes (and a FIN after them if `fin`) at `now`.
    fn send(
        &mut self,
        s: &Snapshot,
        rs: &mut RouterServices,
        bytes: &[u8],
        fin: bool,
        now: Timestamp,
    ) -> Vec<Segment> {
        self.segment(s, rs, false, bytes, fin, now)
    }
}

fn with_tcp_services() -> RouterServices {
    let mut rs = RouterServices::new();
    rs.metadata = Some(Arc::new(Mutex::new(TcpServices::new())));
    rs
}

/// `now` plus `secs` seconds.
fn after(now: Timestamp, secs: u64) -> Timestamp {
    Timestamp(now.0 + Timestamp::from_secs(secs).0)
}

const GET_INSTANCE_ID: &str =
    "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";

/// A whole metadata request from web-1's own address at `now`: its answer.
fn instance_id(s: &Snapshot, rs: &mut RouterServices, now: Timestamp) -> Option<String> {
    let mut c = Conn::new("web-1", WEB, METADATA);
    if !c.connect(s, rs, now) {
        return None;
    }
    let body: Vec<u8> = c
        .send(s, rs, GET_INSTANCE_ID.as_bytes(), false, now)
        .iter()
        .flat_map(|r| r.payload.clone())
        .collect();
    c.send(s, rs, &[], true, now);
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn instance_metadata_over_imdsv2_answers_each_instance_its_own_facts() {
    // R-ADDR-IMDS.
    let s = snap(&DEFAULT.replace(
        "      - { id: app-1, subnet: private-a, private_ip: 10.0.2.10, ipv6_address: \"2001:db8:10:2::10\" }",
        "      - { id: app-1, subnet: private-a, private_ip: 10.0.2.10, ipv6_address: \"2001:db8:10:2::10\", http_tokens: required }",
    ));
    let mut rs = with_tcp_services();
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
    let mut rs = with_tcp_services();
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("ip-10-0-2-10.ec2.internal.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let answer = tcp_exchange(&s, &mut rs, "web-1", WEB, DNS_TCP, &framed);
    let len = usize::from(u16::from_be_bytes([answer[0], answer[1]]));
    let m = Message::from_vec(&answer[2..2 + len]).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(addrs(&m), [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 10))]);
}

// Issue 22: the TCP services' slots cannot be held for good.

#[test]
fn clients_that_close_mid_request_are_answered_at_once_and_free_their_slots() {
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    // Twice as many as there are slots: each must free its own before the next comes.
    for i in 0..2 * SOCKETS {
        let mut c = Conn::new("web-1", WEB, METADATA);
        assert!(
            c.connect(&s, &mut rs, NOW),
            "metadata connection {i} is served"
        );
        let replies = c.send(&s, &mut rs, b"GET /latest/meta-data/inst", true, NOW);
        let body: Vec<u8> = replies.iter().flat_map(|r| r.payload.clone()).collect();
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("HTTP/1.1 400"), "{body}");
        assert!(replies.iter().any(|r| r.fin), "the service closes at once");
        // The client's kernel acknowledges the answer and its FIN.
        c.send(&s, &mut rs, &[], false, NOW);

        let mut c = Conn::new("web-1", WEB, DNS_TCP);
        assert!(c.connect(&s, &mut rs, NOW), "DNS connection {i} is served");
        // A length of 40 and 3 bytes of the message: no answer, only the close.
        let replies = c.send(&s, &mut rs, &[0, 40, 0x12, 0x34, 0x01], true, NOW);
        assert!(replies.iter().all(|r| r.payload.is_empty()));
        assert!(replies.iter().any(|r| r.fin), "the service closes at once");
        c.send(&s, &mut rs, &[], false, NOW);
    }
    let a = instance_id(&s, &mut rs, NOW).expect("a slot is free");
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    assert_eq!(rs.counters.tcp_refused_busy, 0);
    assert_eq!(rs.counters.tcp_timed_out, 0);
}

#[test]
fn syns_spoofed_from_one_address_hold_half_the_slots_until_the_half_open_timeout() {
    // The reproducer: SYNs from an address of the subnet that no instance holds,
    // so nobody ever answers the SYN-ACKs.
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    let spoofed = [10, 0, 1, 77];
    let held = (0..16)
        .filter(|_| Conn::new("web-1", spoofed, METADATA).connect(&s, &mut rs, NOW))
        .count();
    assert_eq!(held, PER_SOURCE);
    assert_eq!(rs.counters.tcp_refused_per_source, (16 - PER_SOURCE) as u64);
    // The instance's own address is served meanwhile, from the other half.
    let a = instance_id(&s, &mut rs, NOW).expect("served beside the spoofed SYNs");
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    // Still held a moment before the timeout: one more from the spoofed address is refused.
    let just_before = Timestamp(after(NOW, HALF_OPEN_SECS).0 - 1);
    assert!(!Conn::new("web-1", spoofed, METADATA).connect(&s, &mut rs, just_before));
    assert_eq!(
        rs.counters.tcp_refused_per_source,
        (16 - PER_SOURCE + 1) as u64
    );
    assert_eq!(rs.counters.tcp_timed_out, 0);
    // At the timeout the half-open connections are reset and their slots listen again.
    let later = after(NOW, HALF_OPEN_SECS);
    let a = instance_id(&s, &mut rs, later).expect("served after the half-open timeout");
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    assert_eq!(rs.counters.tcp_timed_out, PER_SOURCE as u64);
    let mut again = 0;
    for _ in 0..PER_SOURCE {
        again += usize::from(Conn::new("web-1", spoofed, METADATA).connect(&s, &mut rs, later));
    }
    assert_eq!(
        again, PER_SOURCE,
        "the spoofed address's share is free again"
    );
}

#[test]
fn syns_spoofed_from_several_addresses_are_refused_as_busy_only_until_the_timeout() {
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    // Two addresses of the subnet, each up to the per-source bound: every slot.
    let spoofed = [[10, 0, 1, 77], [10, 0, 1, 78]];
    assert_eq!(spoofed.len() * PER_SOURCE, SOCKETS);
    for src in spoofed {
        for _ in 0..PER_SOURCE {
            assert!(Conn::new("web-1", src, METADATA).connect(&s, &mut rs, NOW));
        }
    }
    // Every slot is half-open: a real client's SYN is dropped (it will retry), and counted.
    assert_eq!(instance_id(&s, &mut rs, NOW), None);
    assert_eq!(
        instance_id(&s, &mut rs, after(NOW, HALF_OPEN_SECS - 1)),
        None
    );
    assert_eq!(rs.counters.tcp_refused_busy, 2);
    assert_eq!(rs.counters.tcp_timed_out, 0);
    // Its retry at the timeout finds the slots free; the spoofed connections are reset.
    let later = after(NOW, HALF_OPEN_SECS);
    let mut c = Conn::new("web-1", WEB, METADATA);
    let answers = deliver(&s, &mut rs, "web-1", c.packet(true, &[], false), later);
    let resets: Vec<IpAddr> = answers
        .iter()
        .filter(|a| segment_of(a).is_some_and(|(_, seg)| seg.rst))
        .map(|a| dst_of(a))
        .collect();
    assert_eq!(resets.len(), SOCKETS);
    assert!(
        resets.iter().all(|a| spoofed.map(IpAddr::from).contains(a)),
        "{resets:?}"
    );
    assert!(
        c.take(&answers).iter().any(|r| r.syn),
        "a SYN-ACK at the timeout"
    );
    let body: Vec<u8> = c
        .send(&s, &mut rs, GET_INSTANCE_ID.as_bytes(), false, later)
        .iter()
        .flat_map(|r| r.payload.clone())
        .collect();
    assert!(body.ends_with(b"\r\n\r\nweb-1"));
    assert_eq!(rs.counters.tcp_timed_out, SOCKETS as u64);
    assert_eq!(rs.counters.tcp_refused_busy, 2);
}

#[test]
fn a_request_left_unfinished_frees_its_slot_after_the_idle_timeout() {
    // Every slot held from two addresses the instance spoofs (the per-source bound lets
    // each take half): each connection sends the start of a request and then nothing,
    // not even a FIN.
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    for src in [[10, 0, 1, 77], [10, 0, 1, 78]] {
        for _ in 0..PER_SOURCE {
            let mut c = Conn::new("web-1", src, METADATA);
            assert!(c.connect(&s, &mut rs, NOW));
            c.send(&s, &mut rs, b"GET /latest/meta-", false, NOW);
        }
    }
    assert_eq!(instance_id(&s, &mut rs, after(NOW, IDLE_SECS - 1)), None);
    assert_eq!(rs.counters.tcp_refused_busy, 1);
    assert_eq!(rs.counters.tcp_timed_out, 0);
    let a = instance_id(&s, &mut rs, after(NOW, IDLE_SECS)).expect("served after the idle timeout");
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    assert_eq!(rs.counters.tcp_timed_out, SOCKETS as u64);
}

#[test]
fn a_request_trickled_byte_by_byte_holds_its_slot_no_longer_than_the_lifetime() {
    // Every slot held from two spoofed addresses; each connection completes its handshake
    // and then sends a byte just before it would be idle too long.
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    let mut trickling = Vec::new();
    for src in [[10, 0, 1, 77], [10, 0, 1, 78]] {
        for _ in 0..PER_SOURCE {
            let mut c = Conn::new("web-1", src, METADATA);
            assert!(c.connect(&s, &mut rs, NOW));
            c.send(&s, &mut rs, &[], false, NOW);
            trickling.push(c);
        }
    }
    let step = IDLE_SECS - 1;
    let mut t = 0;
    while t + step < LIFETIME_SECS {
        t += step;
        for c in &mut trickling {
            c.send(&s, &mut rs, b"G", false, after(NOW, t));
        }
        assert_eq!(
            instance_id(&s, &mut rs, after(NOW, t)),
            None,
            "all held at {t} s"
        );
    }
    assert_eq!(rs.counters.tcp_timed_out, 0);
    let a = instance_id(&s, &mut rs, after(NOW, LIFETIME_SECS)).expect("served at the lifetime");
    assert!(a.ends_with("\r\n\r\nweb-1"), "{a}");
    assert_eq!(rs.counters.tcp_timed_out, SOCKETS as u64);
}

#[test]
fn refusals_are_summed_over_workers_and_shown_by_vpcd_stats() {
    let s = snap(DEFAULT);
    let mut a = dataplane::Stats::default();
    a.services.tcp_refused_busy = 2;
    a.services.tcp_timed_out = 1;
    let mut b = dataplane::Stats::default();
    b.services.tcp_refused_busy = 1;
    b.services.tcp_refused_per_source = 12;
    a.merge(&b);
    let text = control::router::summary(&a, &s, "vpcd:");
    assert!(
        text.contains(
            "\n  router services: tcp_refused_busy 3, tcp_refused_per_source 12, tcp_timed_out 1\n"
        ),
        "{text}"
    );
    // Nothing refused: no line.
    let quiet = control::router::summary(&dataplane::Stats::default(), &s, "vpcd:");
    assert!(!quiet.contains("router services"), "{quiet}");
}

#[test]
fn dns_metadata_and_time_sync_share_one_budget_per_interface() {
    // AWS's 1024 packets per second per ENI covers every link-local service: once DNS
    // queries used it up, a metadata connection waits for the next second.
    let s = snap(DEFAULT);
    let mut rs = with_tcp_services();
    for _ in 0..dataplane::router_services::LINK_LOCAL_PACKETS_PER_SECOND {
        let q = dns_query(WEB, DNS, "ip-10-0-1-10.ec2.internal.", RecordType::A);
        assert!(!deliver(&s, &mut rs, "web-1", q, NOW).is_empty());
    }
    let mut c = Conn::new("web-1", WEB, METADATA);
    assert!(!c.connect(&s, &mut rs, NOW), "over the budget");
    assert_eq!(rs.counters.link_local_throttled, 1);
    // Another instance has its own budget, and the next second this one has a new one.
    let mut other = Conn::new("app-1", [10, 0, 2, 10], METADATA);
    assert!(other.connect(&s, &mut rs, NOW));
    assert!(instance_id(&s, &mut rs, after(NOW, 1)).is_some_and(|a| a.contains("web-1")));
    assert_eq!(rs.counters.link_local_throttled, 1);
}
