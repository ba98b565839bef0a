//! The offload fast path in process (issue 11): GSO super-packets with partial checksums,
//! as an offloading TUN hands them over, through the worker over in-memory queues. One
//! decision and one write per super-packet, the virtio-net state kept, NAT rewrites that
//! keep the partial checksum right (checked by completing it as a NIC would and comparing
//! with etherparse's full computation), counters and flow logs in real segments, the path
//! MTU judged per segment, and the router's own services given real packets.

use std::net::IpAddr;

use dataplane::checksum;
use dataplane::io::mem::MemQueue;
use dataplane::io::Worker;
use dataplane::offload::{self, Gso, Offload};
use dataplane::{DropReason, PortId, Snapshot, Timestamp};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

/// The default lab with a VPC-wide flow log.
fn lab() -> Snapshot {
    let text = control::DEFAULT_LAB.replace(
        "    instances:\n",
        "    flow_logs:\n      - { id: fl, resource: vpc-lab, traffic_type: ALL, max_aggregation_interval: 60, destination: flow.log }\n    instances:\n",
    );
    control::load_text(&text, 1).expect("lab").1
}

fn port(snap: &Snapshot, name: &str) -> PortId {
    snap.port_named(name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The folded pseudo-header sum that a sending kernel leaves in a partial checksum field.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u16 {
    let mut acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::sum(checksum::sum(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::sum(checksum::sum(0, &s.octets()), &d.octets()),
        _ => unreachable!(),
    };
    acc += u32::from(proto) + (l4_len as u32 >> 16) + (l4_len as u32 & 0xffff);
    checksum::fold(acc)
}

/// A TCP (`flags`: "S", "SA", "A") packet of `payload` bytes; with `size`, a TSO
/// super-packet of that MSS. Its checksum is partial, as Linux sends through a device
/// with checksum offload.
fn tcp(
    src: &str,
    dst: &str,
    (sport, dport): (u16, u16),
    (seq, ack): (u32, u32),
    flags: &str,
    payload: usize,
    size: u16,
) -> (Vec<u8>, Offload) {
    let (s, d) = (ip(src), ip(dst));
    let b = match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut b = b.tcp(sport, dport, seq, 64000);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(ack);
    }
    let data: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    b.write(&mut out, &data).unwrap();
    let l4 = if s.is_ipv6() { 40 } else { 20 };
    let p = pseudo(s, d, 6, out.len() - l4);
    out[l4 + 16..l4 + 18].copy_from_slice(&p.to_be_bytes());
    let gso = match (size, s.is_ipv6()) {
        (0, _) => Gso::None,
        (_, false) => Gso::Tcp4,
        (_, true) => Gso::Tcp6,
    };
    let meta = Offload {
        gso,
        size,
        hdr_len: (l4 + 20) as u16,
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..Offload::NONE
    };
    (out, meta)
}

/// Completes the partial checksum as the receiving side would and checks it against a
/// full computation over the (rewritten) packet.
fn assert_partial_checksum_right(bytes: &[u8], meta: &Offload) {
    assert!(meta.needs_csum, "still partial");
    let mut done = bytes.to_vec();
    offload::complete_checksum(&mut done, meta);
    let p = SlicedPacket::from_ip(&done).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("tcp")
    };
    let expect = match &p.net {
        Some(NetSlice::Ipv4(i)) => {
            assert!(checksum::ipv4_header_ok(i.header().slice()));
            t.to_header()
                .calc_checksum_ipv4(&i.header().to_header(), t.payload())
                .unwrap()
        }
        Some(NetSlice::Ipv6(i)) => t
            .to_header()
            .calc_checksum_ipv6(&i.header().to_header(), t.payload())
            .unwrap(),
        _ => panic!("ip"),
    };
    assert_eq!(t.checksum(), expect, "the completed checksum is right");
}

fn ports_of(bytes: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    let (s, d) = match &p.net {
        Some(NetSlice::Ipv4(i)) => (
            IpAddr::from(i.header().source_addr()),
            IpAddr::from(i.header().destination_addr()),
        ),
        Some(NetSlice::Ipv6(i)) => (
            IpAddr::from(i.header().source_addr()),
            IpAddr::from(i.header().destination_addr()),
        ),
        _ => panic!("ip"),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => (s, t.source_port(), d, t.destination_port()),
        Some(TransportSlice::Udp(u)) => (s, u.source_port(), d, u.destination_port()),
        _ => panic!("tcp or udp"),
    }
}

struct Rig {
    snap: Snapshot,
    q: Vec<MemQueue>,
    w: Worker,
}

impl Rig {
    fn new() -> Rig {
        let snap = lab();
        let q = (0..snap.topo.ports.len())
            .map(|_| MemQueue::new())
            .collect();
        Rig {
            snap,
            q,
            w: Worker::new(),
        }
    }

    /// `from` sends the packet; returns what each port received.
    fn send(
        &mut self,
        from: &str,
        (bytes, meta): (Vec<u8>, Offload),
    ) -> Vec<(String, Vec<u8>, Offload)> {
        let p = port(&self.snap, from);
        self.q[p.ix()].push_offloaded(&bytes, meta);
        self.w.drain(&self.snap, p, &self.q, NOW).unwrap();
        let mut out = Vec::new();
        for (i, q) in self.q.iter().enumerate() {
            for (b, m) in q.take_sent_offloaded() {
                out.push((self.snap.topo.ports[i].name.to_string(), b, m));
            }
        }
        out
    }

    fn one(&mut self, from: &str, pkt: (Vec<u8>, Offload), to: &str) -> (Vec<u8>, Offload) {
        let mut got = self.send(from, pkt);
        assert_eq!(got.len(), 1, "one packet out, got {}", got.len());
        let (name, b, m) = got.pop().unwrap();
        assert_eq!(name, to);
        (b, m)
    }
}

#[test]
fn a_tso_super_packet_crosses_the_nat_gateway_and_igw_as_one_unit_both_ways() {
    let mut r = Rig::new();
    let (app, inet) = ("10.0.2.10", "203.0.113.10");
    let syn = tcp(app, inet, (40000, 5201), (1, 0), "S", 0, 0);
    let (out, meta) = r.one("app-1", syn, "inet-1");
    let (nat_ip, nat_port, _, _) = ports_of(&out);
    assert_eq!(nat_ip, ip("198.51.100.5"), "the NAT gateway's Elastic IP");
    assert_partial_checksum_right(&out, &meta);
    let synack = tcp(inet, "198.51.100.5", (5201, nat_port), (7, 2), "SA", 0, 0);
    r.one("inet-1", synack, "app-1");

    // 10,000 bytes at MSS 1448: seven segments in one read.
    let sp = tcp(app, inet, (40000, 5201), (2, 8), "A", 10_000, 1448);
    let sent_meta = sp.1;
    let (out, meta) = r.one("app-1", sp, "inet-1");
    assert_eq!(
        meta, sent_meta,
        "the virtio-net state goes out as it came in"
    );
    assert_eq!(
        out.len(),
        20 + 20 + 10_000,
        "one write for the whole super-packet"
    );
    assert_eq!(
        ports_of(&out),
        (ip("198.51.100.5"), nat_port, ip(inet), 5201)
    );
    assert_partial_checksum_right(&out, &meta);

    // The reply direction: a super-packet to the Elastic IP reaches app-1 translated back.
    let back = tcp(
        inet,
        "198.51.100.5",
        (5201, nat_port),
        (8, 10_002),
        "A",
        6000,
        1448,
    );
    let (out, meta) = r.one("inet-1", back, "app-1");
    assert_eq!(meta.gso, Gso::Tcp4);
    assert_eq!(ports_of(&out), (ip(inet), 5201, ip(app), 40000));
    assert_partial_checksum_right(&out, &meta);

    // Counted as the segments they stand for: SYN + 7, SYN-ACK + 5.
    let stats = &r.w.pipeline.stats;
    assert_eq!(stats.ports[port(&r.snap, "app-1").ix()].rx_packets, 8);
    assert_eq!(stats.ports[port(&r.snap, "inet-1").ix()].tx_packets, 8);
    assert_eq!(stats.ports[port(&r.snap, "inet-1").ix()].rx_packets, 6);
    assert_eq!(stats.forwarded, 14);
    // Bytes on the wire: each segment with its own 40 bytes of headers.
    assert_eq!(
        stats.ports[port(&r.snap, "app-1").ix()].rx_bytes,
        40 + (10_000 + 7 * 40)
    );
}

#[test]
fn the_igw_rewrites_a_super_packet_and_ipv6_ones_pass_whole() {
    let mut r = Rig::new();
    let sp = tcp(
        "10.0.1.10",
        "203.0.113.10",
        (40001, 5201),
        (1, 1),
        "A",
        30_000,
        1448,
    );
    let (out, meta) = r.one("web-1", sp, "inet-1");
    assert_eq!(ports_of(&out).0, ip("198.51.100.10"), "web-1's public IP");
    assert_partial_checksum_right(&out, &meta);

    // IPv6 through the egress-only gateway: nothing is rewritten, the state is kept.
    let (a6, i6) = ("2001:db8:10:2::10", "2001:db8:ffff::10");
    r.one(
        "app-1",
        tcp(a6, i6, (40002, 5201), (1, 0), "S", 0, 0),
        "inet-1",
    );
    let sp = tcp(a6, i6, (40002, 5201), (2, 1), "A", 20_000, 1428);
    let (mut sent, sent_meta) = sp.clone();
    let (out, meta) = r.one("app-1", sp, "inet-1");
    assert_eq!(meta, sent_meta);
    // The router hop took one off the hop limit; nothing else changed.
    sent[7] -= 1;
    assert!(out == sent, "the IPv6 super-packet passes whole");
}

#[test]
fn a_lost_super_packet_counts_each_segment_as_a_tx_error() {
    let mut r = Rig::new();
    let inet = port(&r.snap, "inet-1");
    r.q[inet.ix()].fail_sends = true;
    // 20,000 bytes at MSS 1460: 14 segments, all lost in one failed write.
    let sp = tcp(
        "10.0.1.10",
        "203.0.113.10",
        (40004, 5201),
        (1, 1),
        "A",
        20_000,
        1460,
    );
    assert!(r.send("web-1", sp).is_empty());
    let p = &r.w.pipeline.stats.ports[inet.ix()];
    assert_eq!((p.tx_packets, p.tx_errors), (14, 14));
}

#[test]
fn the_path_mtu_is_judged_per_segment() {
    let mut r = Rig::new();
    // Segments of 1500 bytes fit the IGW's path: forwarded whole, never cut.
    let fits = tcp(
        "10.0.1.10",
        "203.0.113.10",
        (40003, 5201),
        (1, 1),
        "A",
        20_000,
        1460,
    );
    r.one("web-1", fits, "inet-1");
    // Segments of 9001 bytes do not: the sender hears "fragmentation needed", as it
    // would for one such packet, and nothing reaches the internet.
    let big = tcp(
        "10.0.1.10",
        "203.0.113.10",
        (40003, 5201),
        (1, 1),
        "A",
        20_000,
        8961,
    );
    // sg-web admits ICMP, so the error reaches web-1: one packet, nothing forwarded.
    let (b, m) = r.one("web-1", big, "web-1");
    assert_eq!(m, Offload::NONE, "vpcd's own error has no offload state");
    let p = SlicedPacket::from_ip(&b).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("not ICMP: {p:?}")
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1500 }
        )
    );
}

#[test]
fn offload_state_that_does_not_fit_the_packet_is_malformed_and_counted() {
    let mut r = Rig::new();
    let (mut b, m) = tcp("10.0.2.10", "10.0.1.10", (1, 2), (1, 1), "A", 3000, 1448);
    let bad = [
        // TSO for IPv6 on an IPv4 packet.
        Offload {
            gso: Gso::Tcp6,
            ..m
        },
        // The checksum offset is not TCP's.
        Offload {
            csum_offset: 6,
            ..m
        },
        // UFO, which vpcd does not offer.
        Offload {
            gso: Gso::Unsupported(3),
            ..m
        },
        // A zero segment size.
        Offload { size: 0, ..m },
    ];
    for meta in bad {
        assert!(r.send("app-1", (b.clone(), meta)).is_empty());
    }
    // A read shorter than the headers, with TSO state.
    b.truncate(30);
    assert!(r.send("app-1", (b, m)).is_empty());
    // Each counted once: unparsed metadata counts no segments.
    assert_eq!(r.w.pipeline.stats.dropped(DropReason::Malformed), 5);
}

#[test]
fn flow_logs_count_the_segments_of_a_super_packet() {
    let mut r = Rig::new();
    let sp = tcp(
        "10.0.1.10",
        "10.0.2.10",
        (40004, 5201),
        (1, 1),
        "A",
        14_480,
        1448,
    );
    r.one("web-1", sp, "app-1");
    let mut lines = Vec::new();
    r.w.pipeline
        .flow_logs
        .flush(&r.snap, NOW.secs(), true, &mut |l| {
            lines.push(l.text);
            true
        });
    // Ten segments of 1488 bytes, at the sender (egress) and the receiver (ingress).
    let wanted = " 10.0.1.10 10.0.2.10 40004 5201 6 10 14880 ";
    assert_eq!(
        lines.iter().filter(|l| l.contains(wanted)).count(),
        2,
        "{lines:#?}"
    );
}

#[test]
fn the_router_services_get_completed_checksums_and_cut_segments() {
    let mut r = Rig::new();
    r.w.services.metadata = Some(std::sync::Arc::new(std::sync::Mutex::new(
        dataplane::router_services::tcp_services::TcpServices::new(),
    )));
    // A SYN to the metadata service with a partial checksum: the worker completes it, so
    // smoltcp (which checks checksums) answers.
    let syn = tcp(
        "10.0.1.10",
        "169.254.169.254",
        (40005, 80),
        (1, 0),
        "S",
        0,
        0,
    );
    let got = r.send("web-1", syn);
    assert_eq!(got.len(), 1, "a SYN-ACK");
    assert_eq!(got[0].2, Offload::NONE);
    // The same SYN with a wrong, complete checksum gets nothing: the check is real.
    let (mut b, _) = tcp(
        "10.0.1.10",
        "169.254.169.254",
        (40006, 80),
        (1, 0),
        "S",
        0,
        0,
    );
    b[36] ^= 0x55;
    assert!(r.send("web-1", (b, Offload::NONE)).is_empty());

    // Two DNS queries in one UDP super-packet (USO): two answers.
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("app-1.lab.internal.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let mut payload = q.clone();
    payload.extend_from_slice(&q);
    let mut b = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 0, 2], 64)
        .udp(40007, 53)
        .write(&mut b, &payload)
        .unwrap();
    let p = pseudo(ip("10.0.1.10"), ip("10.0.0.2"), 17, b.len() - 20);
    b[26..28].copy_from_slice(&p.to_be_bytes());
    let meta = Offload {
        gso: Gso::Udp,
        size: q.len() as u16,
        hdr_len: 28,
        needs_csum: true,
        csum_start: 20,
        csum_offset: 6,
        ..Offload::NONE
    };
    let got = r.send("web-1", (b, meta));
    assert_eq!(got.len(), 2, "one answer per datagram");
    for (to, b, _) in got {
        assert_eq!(to, "web-1");
        let p = SlicedPacket::from_ip(&b).unwrap();
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!("udp")
        };
        let a = Message::from_vec(u.payload()).unwrap();
        assert_eq!(a.metadata.id, 0x4242);
    }
}

/// A UDP datagram of `payload` bytes (complete checksum, as a device without offloads
/// hands it over).
fn udp_datagram(src: [u8; 4], dst: [u8; 4], sport: u16, payload: usize, fill: u8) -> Vec<u8> {
    let mut b = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, 5201)
        .write(&mut b, &vec![fill; payload])
        .unwrap();
    b
}

/// Recomputes the IPv4 header checksum (if IPv4) and the complete UDP checksum after a
/// test changed header bytes.
fn resum(mut p: Vec<u8>) -> Vec<u8> {
    let (l4, addrs) = if p[0] >> 4 == 4 {
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        (20, 12..20)
    } else {
        (40, 8..40)
    };
    p[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let acc = checksum::sum(0, &p[addrs]) + 17 + (p.len() - l4) as u32;
    let c = match !checksum::fold(checksum::sum(acc, &p[l4..])) {
        0 => 0xffff,
        c => c,
    };
    p[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    p
}

/// web-1 → app-1, source port 40000, `payload` bytes of `fill`, IPv4 id `id`, DF clear.
fn dgram(payload: usize, id: u16, fill: u8) -> Vec<u8> {
    let mut p = udp_datagram([10, 0, 1, 10], [10, 0, 2, 10], 40000, payload, fill);
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] &= !0x40;
    resum(p)
}

/// The same datagram with a partial checksum, as the sender's kernel hands it to a TUN
/// with checksum offload.
fn partial(p: &[u8]) -> (Vec<u8>, Offload) {
    let l4 = if p[0] >> 4 == 4 { 20 } else { 40 };
    let mut q = p.to_vec();
    let (s, _, d, _) = ports_of(p);
    let sum = pseudo(s, d, 17, p.len() - l4);
    q[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
    let meta = Offload {
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: 6,
        ..Offload::NONE
    };
    (q, meta)
}

/// A rig whose app-1 device takes USO, with coalescing on.
fn gro_rig() -> (Rig, PortId, PortId) {
    let mut r = Rig::new();
    r.w.udp_gro = Some(dataplane::io::udp_gro::UdpGro::new());
    let (web, app) = (port(&r.snap, "web-1"), port(&r.snap, "app-1"));
    r.q[app.ix()].uso = true;
    (r, web, app)
}

/// Pushes the packets into web-1's queue and drains it once.
fn drain(r: &mut Rig, web: PortId, packets: &[(Vec<u8>, Offload)]) {
    for (p, m) in packets {
        r.q[web.ix()].push_offloaded(p, *m);
    }
    r.w.drain(&r.snap, web, &r.q, NOW).unwrap();
}

fn plain(packets: &[Vec<u8>]) -> Vec<(Vec<u8>, Offload)> {
    packets.iter().map(|p| (p.clone(), Offload::NONE)).collect()
}

#[test]
fn with_udp_gro_a_run_of_one_flow_leaves_as_one_uso_write_that_cuts_back_exactly() {
    let (mut r, web, app) = gro_rig();
    // Five 64-byte datagrams with consecutive ids, a shorter one that ends the run, then
    // one more of the same flow (which starts the next run).
    let mut sent: Vec<Vec<u8>> = (0..5).map(|i| dgram(64, 100 + i, i as u8)).collect();
    sent.push(dgram(10, 105, 9));
    let next = dgram(64, 106, 7);
    // Half come with partial checksums, half complete: both kinds merge.
    let mut input: Vec<(Vec<u8>, Offload)> = sent
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                partial(p)
            } else {
                (p.clone(), Offload::NONE)
            }
        })
        .collect();
    input.push((next.clone(), Offload::NONE));
    drain(&mut r, web, &input);
    let out = r.q[app.ix()].take_sent_offloaded();
    assert_eq!(
        out.len(),
        2,
        "one super-packet, then the next run's datagram"
    );
    let (sp, meta) = &out[0];
    let udp_len = 8 + 5 * 64 + 10;
    assert_eq!(sp.len(), 20 + udp_len);
    assert_eq!(
        *meta,
        Offload {
            gso: Gso::Udp,
            size: 64,
            hdr_len: 28,
            needs_csum: true,
            csum_start: 20,
            csum_offset: 6,
            ..Offload::NONE
        }
    );
    // The lengths of the whole, a right IPv4 header, and the partial sum the receiving
    // kernel completes for each segment.
    let h = SlicedPacket::from_ip(sp).unwrap();
    let Some(NetSlice::Ipv4(v4)) = &h.net else {
        panic!("ipv4")
    };
    assert_eq!(usize::from(v4.header().total_len()), sp.len());
    assert!(checksum::ipv4_header_ok(v4.header().slice()));
    assert_eq!(v4.header().identification(), 100);
    assert_eq!(usize::from(u16::from_be_bytes([sp[24], sp[25]])), udp_len);
    assert_eq!(
        u16::from_be_bytes([sp[26], sp[27]]),
        pseudo(ip("10.0.1.10"), ip("10.0.2.10"), 17, udp_len)
    );
    // Cut as the receiving kernel cuts it: the same datagrams, ids and checksums.
    let pkt = dataplane::Packet::parse(sp).unwrap();
    let mut seg = vec![0u8; 2048];
    for (i, orig) in sent.iter().enumerate() {
        let n = offload::segment(sp, &pkt, meta, i, &mut seg).expect("segment");
        // Complete checksums as sent (the half that came partial was built from these).
        assert_eq!(&seg[..n], &orig[..], "datagram {i}");
    }
    assert!(offload::segment(sp, &pkt, meta, 6, &mut seg).is_none());
    assert_eq!(out[1].1, Offload::NONE);
    assert_eq!(out[1].0[4..6], next[4..6]);
    // Counted as the seven datagrams the pipeline judged.
    assert_eq!(r.w.pipeline.stats.ports[app.ix()].tx_packets, 7);

    // A port whose device does not take USO gets every datagram on its own.
    r.q[app.ix()].uso = false;
    drain(&mut r, web, &plain(&sent));
    assert_eq!(r.q[app.ix()].take_sent().len(), 6);
}

#[test]
fn with_udp_gro_only_datagrams_the_cut_gives_back_exactly_are_merged() {
    let (mut r, web, app) = gro_rig();
    let head = dgram(64, 1, 0);
    let change = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = dgram(64, 2, 1);
        f(&mut p);
        resum(p)
    };
    let mut bad_checksum = dgram(64, 2, 1);
    bad_checksum[27] ^= 0x55;
    let variants = [
        ("another source port", change(&|p| p[20] ^= 1)),
        ("another TOS", change(&|p| p[1] = 0x10)),
        ("another ECN mark", change(&|p| p[1] = 0x01)),
        ("another TTL", change(&|p| p[8] = 30)),
        ("DF set", change(&|p| p[6] |= 0x40)),
        ("an id gap (DF clear)", change(&|p| p[5] = 3)),
        ("a larger payload", dgram(100, 2, 1)),
        ("a wrong checksum", bad_checksum),
    ];
    for (what, v) in variants {
        drain(&mut r, web, &plain(&[head.clone(), v.clone()]));
        let out = r.q[app.ix()].take_sent_offloaded();
        assert_eq!(out.len(), 2, "{what}: not merged");
        for ((p, m), orig) in out.iter().zip([&head, &v]) {
            assert_eq!(*m, Offload::NONE, "{what}");
            assert_eq!(
                p[20..],
                orig[20..],
                "{what}: the datagram leaves as it came"
            );
        }
    }
    // With DF set the ids carry no meaning (RFC 6864): equal ones merge.
    let df = |fill| {
        change(&|p: &mut Vec<u8>| {
            p[6] |= 0x40;
            p[4..6].copy_from_slice(&[0, 0]);
            p[28..].fill(fill);
        })
    };
    drain(&mut r, web, &plain(&[df(1), df(2), df(3)]));
    let out = r.q[app.ix()].take_sent_offloaded();
    assert_eq!((out.len(), out[0].1.gso), (1, Gso::Udp));

    // IPv6: a run merges (hop limit and flow label equal); another flow label does not.
    let v6 = |label: u8, fill: u8| {
        let mut b = Vec::new();
        let addr = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        PacketBuilder::ipv6(addr("2001:db8:10:1::10"), addr("2001:db8:10:2::10"), 64)
            .udp(40000, 5201)
            .write(&mut b, &[fill; 64])
            .unwrap();
        b[3] = label;
        resum(b)
    };
    drain(
        &mut r,
        web,
        &plain(&[v6(0, 1), v6(0, 2), v6(0, 3), v6(5, 4)]),
    );
    let out = r.q[app.ix()].take_sent_offloaded();
    assert_eq!(out.len(), 2, "three merged, then another flow label");
    let (sp, meta) = &out[0];
    assert_eq!(
        (meta.gso, meta.size, meta.hdr_len, meta.csum_start, sp.len()),
        (Gso::Udp, 64, 48, 40, 48 + 3 * 64)
    );
    assert_eq!(
        u16::from_be_bytes([sp[46], sp[47]]),
        pseudo(
            ip("2001:db8:10:1::10"),
            ip("2001:db8:10:2::10"),
            17,
            8 + 3 * 64
        )
    );
    assert_eq!(out[1].0[3], 5);
}

#[test]
fn with_udp_gro_runs_end_at_the_batch_another_ports_packet_and_a_refused_write() {
    let (mut r, web, app) = gro_rig();
    // A full batch (64 datagrams) is one write; the rest leave with the next batch.
    let many: Vec<Vec<u8>> = (0..70).map(|i| dgram(64, i, i as u8)).collect();
    drain(&mut r, web, &plain(&many));
    r.w.drain(&r.snap, web, &r.q, NOW).unwrap();
    let out = r.q[app.ix()].take_sent_offloaded();
    let sizes: Vec<usize> = out.iter().map(|(p, _)| p.len()).collect();
    assert_eq!(sizes, [28 + 64 * 64, 28 + 6 * 64]);

    // A packet for another port writes the run first; a dropped one does not end it.
    let inet = port(&r.snap, "inet-1");
    let to_inet = udp_datagram([10, 0, 1, 10], [203, 0, 113, 10], 40000, 64, 0);
    let garbage = vec![0x45, 0, 0];
    let mut input = plain(&(0..3).map(|i| dgram(64, i, 0)).collect::<Vec<_>>());
    input.push((to_inet, Offload::NONE));
    input.extend(plain(&(3..6).map(|i| dgram(64, i, 0)).collect::<Vec<_>>()));
    input.push((garbage, Offload::NONE));
    input.extend(plain(&(6..8).map(|i| dgram(64, i, 0)).collect::<Vec<_>>()));
    drain(&mut r, web, &input);
    let sizes: Vec<usize> = r.q[app.ix()].take_sent().iter().map(Vec::len).collect();
    assert_eq!(sizes, [28 + 3 * 64, 28 + 5 * 64]);
    assert_eq!(r.q[inet.ix()].take_sent().len(), 1);
    assert_eq!(r.w.pipeline.stats.dropped(DropReason::Malformed), 1);

    // A device that refuses the USO write: its datagrams are counted as errors, one
    // each, and from then on every datagram goes alone.
    r.q[app.ix()].refuse_uso = true;
    let before = r.w.pipeline.stats.ports[app.ix()].tx_errors;
    drain(&mut r, web, &plain(&many[..4]));
    assert_eq!(r.w.pipeline.stats.ports[app.ix()].tx_errors - before, 4);
    drain(&mut r, web, &plain(&many[4..8]));
    let out = r.q[app.ix()].take_sent_offloaded();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|(_, m)| *m == Offload::NONE));
}
