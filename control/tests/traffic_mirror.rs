//! VPC Traffic Mirroring in process (issue 24, R-TM): configs/traffic-mirror.yaml through
//! the worker over in-memory queues. Copies reach an instance target as AWS sends them
//! (VXLAN over UDP 4789 from the source's address, the VNI, an Ethernet frame of the
//! packet as it crossed the ENI), filters decide by their lowest matching rule, sessions
//! by their number, `packet_length` cuts, a target that does not admit VXLAN gets
//! nothing, a super-packet is mirrored as its segments, and a capture target receives
//! every packet with its outcome, the dropped ones with the reason. The lab-file rules
//! are checked here too; the e2e test decapsulates the copies with Linux's own VXLAN.

use std::sync::mpsc::{channel, sync_channel};

use dataplane::checksum;
use dataplane::io::mem::MemQueue;
use dataplane::io::mirror::{MirrorSink, Record};
use dataplane::io::Worker;
use dataplane::observer::Direction;
use dataplane::offload::{Gso, Offload};
use dataplane::traffic_mirror::{eni_mac, Outcome, ROUTER_MAC};
use dataplane::{DropReason, PortId, Snapshot, Timestamp};
use etherparse::{LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

fn lab_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/traffic-mirror.yaml"
    ))
    .unwrap()
}

fn compile(text: &str) -> Snapshot {
    control::load_text(text, 1)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .1
}

fn port(snap: &Snapshot, name: &str) -> PortId {
    snap.port_named(name).unwrap()
}

fn queues(snap: &Snapshot) -> Vec<MemQueue> {
    (0..snap.topo.ports.len())
        .map(|_| MemQueue::new())
        .collect()
}

fn udp(src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(40000, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(40000, dport, 1, 64000)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn eni<'s>(snap: &'s Snapshot, id: &str) -> &'s dataplane::snapshot::Eni {
    snap.topo.enis.iter().find(|e| &*e.id == id).unwrap()
}

/// Sends `pkt` from `from`, returns what the worker wrote to each of `to`.
fn send(w: &mut Worker, snap: &Snapshot, q: &[MemQueue], from: &str, pkt: &[u8]) {
    q[port(snap, from).ix()].push(pkt);
    w.drain(snap, port(snap, from), q, NOW).unwrap();
}

/// A VXLAN copy taken apart: outer source and destination, outer UDP ports and
/// checksum, VNI, inner MACs and the inner IP packet.
struct Vxlan {
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    dst_port: u16,
    udp_checksum: u16,
    vni: u32,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    inner: Vec<u8>,
}

fn vxlan(bytes: &[u8]) -> Vxlan {
    let p = SlicedPacket::from_ip(bytes).expect("an IP packet");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("outer IPv4")
    };
    assert!(
        checksum::ipv4_header_ok(ip.header().slice()),
        "outer header checksum"
    );
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("outer UDP")
    };
    let payload = u.payload();
    assert_eq!(payload[0], 0x08, "VXLAN I flag");
    let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
    let frame = &payload[8..];
    let eth = SlicedPacket::from_ethernet(frame).expect("an Ethernet frame");
    let Some(LinkSlice::Ethernet2(e)) = &eth.link else {
        panic!("inner Ethernet")
    };
    Vxlan {
        outer_src: ip.header().source(),
        outer_dst: ip.header().destination(),
        dst_port: u.destination_port(),
        udp_checksum: u.checksum(),
        vni,
        inner_dst_mac: e.destination(),
        inner_src_mac: e.source(),
        inner: frame[14..].to_vec(),
    }
}

#[test]
fn a_copy_reaches_the_target_as_aws_sends_it() {
    let snap = compile(&lab_text());
    let q = queues(&snap);
    let mut w = Worker::new();
    let pkt = udp([10, 0, 1, 10], [203, 0, 113, 10], 9999, b"mirror me");
    send(&mut w, &snap, &q, "web-1", &pkt);
    // The packet itself went on, through the IGW.
    assert_eq!(q[port(&snap, "inet-1").ix()].take_sent().len(), 1);
    let copies = q[port(&snap, "ids-1").ix()].take_sent();
    assert_eq!(copies.len(), 1, "one copy for ids-1");
    let v = vxlan(&copies[0]);
    assert_eq!((v.outer_src, v.outer_dst), ([10, 0, 1, 10], [10, 0, 3, 10]));
    assert_eq!((v.dst_port, v.udp_checksum, v.vni), (4789, 0, 4242));
    let web = eni(&snap, "web-1");
    assert_eq!(v.inner_src_mac, eni_mac(web.zone), "leaving web-1's ENI");
    assert_eq!(v.inner_dst_mac, ROUTER_MAC);
    assert_eq!(
        v.inner, pkt,
        "as web-1 sent it: before the IGW's translation"
    );
    let s = &w.pipeline.stats;
    assert_eq!(s.mirrored, 1);
    assert_eq!(s.ports[port(&snap, "ids-1").ix()].tx_packets, 1);
    assert_eq!(
        s.ports[port(&snap, "ids-1").ix()].tx_bytes,
        copies[0].len() as u64
    );
}

#[test]
fn the_reply_is_mirrored_as_it_reaches_the_eni() {
    let snap = compile(&lab_text());
    let q = queues(&snap);
    let mut w = Worker::new();
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &tcp_syn([10, 0, 1, 10], [203, 0, 113, 10], 80),
    );
    q[port(&snap, "ids-1").ix()].take_sent();
    // The internet answers the public address; the copy shows what reaches the ENI.
    let mut answer = Vec::new();
    PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 10], 64)
        .tcp(80, 40000, 7, 64000)
        .syn()
        .ack(2)
        .write(&mut answer, &[])
        .unwrap();
    send(&mut w, &snap, &q, "inet-1", &answer);
    let delivered = q[port(&snap, "web-1").ix()].take_sent();
    assert_eq!(delivered.len(), 1);
    let copies = q[port(&snap, "ids-1").ix()].take_sent();
    assert_eq!(copies.len(), 1);
    let v = vxlan(&copies[0]);
    assert_eq!(v.inner, delivered[0], "the translated packet, as delivered");
    let web = eni(&snap, "web-1");
    assert_eq!(
        (v.inner_src_mac, v.inner_dst_mac),
        (ROUTER_MAC, eni_mac(web.zone))
    );
}

#[test]
fn the_lowest_matching_rule_decides_and_nothing_matched_is_not_mirrored() {
    // tmf-all rejects inbound traffic from the monitoring subnet (rule 10) before it
    // accepts everything (rule 100).
    let mut w = Worker::new();
    let text = lab_text().replace(
        "          - { protocol: icmp, source: 0.0.0.0/0 }\n      - id: sg-app",
        "          - { protocol: icmp, source: 0.0.0.0/0 }\n          - { protocol: udp, port_range: 7000, source: 10.0.0.0/16 }\n      - id: sg-app",
    );
    let snap2 = compile(&text);
    let q = queues(&snap2);
    // ids-1 → web-1: delivered, but rule 10 keeps it out of the mirror.
    send(
        &mut w,
        &snap2,
        &q,
        "ids-1",
        &udp([10, 0, 3, 10], [10, 0, 1, 10], 7000, b"x"),
    );
    assert_eq!(q[port(&snap2, "web-1").ix()].take_sent().len(), 1);
    assert!(q[port(&snap2, "ids-1").ix()].take_sent().is_empty());
    // A filter with no outbound rules mirrors nothing outbound.
    let text = text.replace(
        "    outbound:\n      - { rule: 100, action: accept, source_cidr_block: 0.0.0.0/0, destination_cidr_block: 0.0.0.0/0 }\n  - id: tmf-no-ssh",
        "  - id: tmf-no-ssh",
    );
    let snap3 = compile(&text);
    send(
        &mut w,
        &snap3,
        &q,
        "web-1",
        &udp([10, 0, 1, 10], [203, 0, 113, 10], 9, b"x"),
    );
    assert_eq!(q[port(&snap3, "inet-1").ix()].take_sent().len(), 1);
    assert!(q[port(&snap3, "ids-1").ix()].take_sent().is_empty());
}

#[test]
fn each_packet_goes_to_the_first_session_by_number_that_wants_it() {
    // Session 1 takes web-1's TCP to app-1's group port; session 2 everything else.
    let text = lab_text()
        .replace(
            "traffic_mirror_targets:\n",
            "  - id: tmf-tcp\n    outbound:\n      - { rule: 1, action: accept, protocol: tcp, source_cidr_block: 0.0.0.0/0, destination_cidr_block: 0.0.0.0/0 }\ntraffic_mirror_targets:\n",
        )
        .replace(
            "  - { id: tms-web, network_interface: web-1, traffic_mirror_target: tmt-ids, traffic_mirror_filter: tmf-all, session_number: 1, virtual_network_id: 4242 }",
            "  - { id: tms-web, network_interface: web-1, traffic_mirror_target: tmt-ids, traffic_mirror_filter: tmf-all, session_number: 2, virtual_network_id: 4242 }\n  - { id: tms-web-tcp, network_interface: web-1, traffic_mirror_target: tmt-ids, traffic_mirror_filter: tmf-tcp, session_number: 1, virtual_network_id: 7 }",
        );
    let snap = compile(&text);
    let q = queues(&snap);
    let mut w = Worker::new();
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &tcp_syn([10, 0, 1, 10], [10, 0, 2, 10], 5201),
    );
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &udp([10, 0, 1, 10], [10, 0, 2, 10], 5201, b"u"),
    );
    let vnis: Vec<u32> = q[port(&snap, "ids-1").ix()]
        .take_sent()
        .iter()
        .map(|c| vxlan(c).vni)
        .collect();
    assert_eq!(
        vnis,
        [7, 4242],
        "TCP by session 1, UDP by session 2, each once"
    );
}

#[test]
fn packet_length_and_the_targets_mtu_cut_the_copy() {
    let text = lab_text().replace(
        "virtual_network_id: 4242 }",
        "virtual_network_id: 4242, packet_length: 40 }",
    );
    let snap = compile(&text);
    let q = queues(&snap);
    let mut w = Worker::new();
    let pkt = udp([10, 0, 1, 10], [203, 0, 113, 10], 9999, &[7u8; 500]);
    send(&mut w, &snap, &q, "web-1", &pkt);
    let copies = q[port(&snap, "ids-1").ix()].take_sent();
    // 40 bytes after the VXLAN header: the Ethernet header and 26 bytes of the packet.
    assert_eq!(copies[0].len(), 20 + 8 + 8 + 40);
    assert_eq!(&copies[0][36 + 14..], &pkt[..26]);
    // The target's MTU: a 9000-byte packet does not fit with 50 bytes around it.
    let snap = compile(&lab_text());
    let big = udp([10, 0, 1, 10], [10, 0, 2, 10], 5201, &vec![1u8; 9000 - 28]);
    let mut w = Worker::new();
    w.mirror.mtu = 9001;
    send(&mut w, &snap, &q, "web-1", &big);
    let copies = q[port(&snap, "ids-1").ix()].take_sent();
    assert_eq!(
        copies[0].len(),
        9001,
        "cut to the target's MTU, as AWS does"
    );
}

#[test]
fn a_target_whose_group_refuses_vxlan_gets_nothing() {
    let text = lab_text().replace(
        "          - { protocol: udp, port_range: 4789, source: 10.0.0.0/16 }",
        "          - { protocol: udp, port_range: 4790, source: 10.0.0.0/16 }",
    );
    let snap = compile(&text);
    let q = queues(&snap);
    let mut w = Worker::new();
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &udp([10, 0, 1, 10], [203, 0, 113, 10], 1, b"x"),
    );
    assert_eq!(
        q[port(&snap, "inet-1").ix()].take_sent().len(),
        1,
        "the traffic itself flows"
    );
    assert!(q[port(&snap, "ids-1").ix()].take_sent().is_empty());
    assert_eq!(
        (w.pipeline.stats.mirror_refused, w.pipeline.stats.mirrored),
        (1, 0)
    );
}

/// A TSO super-packet of `segs` segments of 1000 bytes with a partial checksum, as an
/// offloading TUN hands it over.
fn tso(src: [u8; 4], dst: [u8; 4], segs: usize) -> (Vec<u8>, Offload) {
    let payload: Vec<u8> = (0..segs * 1000).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(40000, 5201, 100, 64000)
        .ack(1)
        .write(&mut out, &payload)
        .unwrap();
    let l4_len = out.len() - 20;
    let mut acc = checksum::sum(checksum::sum(0, &src), &dst);
    acc += 6 + (l4_len as u32 >> 16) + (l4_len as u32 & 0xffff);
    out[36..38].copy_from_slice(&checksum::fold(acc).to_be_bytes());
    let meta = Offload {
        gso: Gso::Tcp4,
        size: 1000,
        hdr_len: 40,
        needs_csum: true,
        csum_start: 20,
        csum_offset: 16,
        ..Offload::NONE
    };
    (out, meta)
}

#[test]
fn a_super_packet_is_mirrored_as_its_segments() {
    let snap = compile(&lab_text());
    let q = queues(&snap);
    let mut w = Worker::new();
    let (pkt, meta) = tso([10, 0, 1, 10], [10, 0, 2, 10], 3);
    q[port(&snap, "web-1").ix()].push_offloaded(&pkt, meta);
    w.drain(&snap, port(&snap, "web-1"), &q, NOW).unwrap();
    assert_eq!(
        q[port(&snap, "app-1").ix()].take_sent().len(),
        1,
        "forwarded whole"
    );
    let copies = q[port(&snap, "ids-1").ix()].take_sent();
    assert_eq!(copies.len(), 3, "one copy per segment");
    let mut seqs = Vec::new();
    for c in &copies {
        let v = vxlan(c);
        let p = SlicedPacket::from_ip(&v.inner).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport)
        else {
            panic!("TCP in the copy")
        };
        assert!(checksum::ipv4_header_ok(ip.header().slice()));
        let expect = t
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
            .unwrap();
        assert_eq!(t.checksum(), expect, "a complete TCP checksum in each copy");
        assert_eq!(t.payload().len(), 1000);
        seqs.push(t.sequence_number());
    }
    assert_eq!(seqs, [100, 1100, 2100]);
    assert_eq!(w.pipeline.stats.mirrored, 3);
}

/// A worker whose capture sink is a channel the test reads, with `n` free buffers.
fn capturing(n: usize) -> (Worker, std::sync::mpsc::Receiver<Record>) {
    let (records, rx) = sync_channel(64);
    let (free_tx, free) = channel();
    for _ in 0..n {
        free_tx
            .send(vec![0; dataplane::io::mirror::RECORD_BYTES])
            .unwrap();
    }
    let mut w = Worker::new();
    w.mirror.sink = Some(MirrorSink { records, free });
    // Keeps the free channel open for the test's life.
    std::mem::forget(free_tx);
    (w, rx)
}

#[test]
fn a_capture_keeps_every_packet_with_what_became_of_it() {
    let snap = compile(&lab_text());
    let q = queues(&snap);
    let (mut w, rx) = capturing(8);
    // Passes: a ping from web-1 to app-1, and app-1's reply.
    let mut ping = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"abc")
        .unwrap();
    send(&mut w, &snap, &q, "web-1", &ping);
    // Dropped by app-1's group: TCP 8080 (its group opens 5201 to sg-web only).
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &tcp_syn([10, 0, 1, 10], [10, 0, 2, 10], 8080),
    );
    // Not mirrored at all: SSH, rejected by tmf-no-ssh's rule 10.
    send(
        &mut w,
        &snap,
        &q,
        "web-1",
        &tcp_syn([10, 0, 1, 10], [10, 0, 2, 10], 22),
    );
    let records: Vec<Record> = rx.try_iter().collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0].dir, records[0].outcome),
        (Direction::Ingress, Outcome::Passed)
    );
    assert_eq!(
        (records[1].dir, records[1].outcome),
        (Direction::Ingress, Outcome::Dropped(DropReason::SgIngress))
    );
    // The record is the Ethernet frame of the packet as it reached app-1's ENI.
    assert_eq!(&records[0].data[14..records[0].len], &ping[..]);
    assert_eq!(records[0].original_len as usize, 14 + ping.len());
    assert_eq!(w.pipeline.stats.mirror_captured, 2);
    // Without free buffers (the writer fell behind), copies are counted as lost.
    let (mut w, rx) = capturing(0);
    send(&mut w, &snap, &q, "web-1", &ping);
    assert_eq!(rx.try_iter().count(), 0);
    assert_eq!(w.pipeline.stats.mirror_lost, 1);
}

fn errors(text: &str) -> Vec<String> {
    match control::check_text(text) {
        Ok(_) => Vec::new(),
        Err(diags) => diags
            .iter()
            .map(|d| format!("{}: {}; {}", d.at.path, d.message, d.fix))
            .collect(),
    }
}

#[test]
fn the_lab_file_follows_awss_rules_for_mirroring() {
    let base = lab_text();
    assert!(errors(&base).is_empty(), "{:?}", errors(&base));
    let cases: &[(&str, &str, &str)] = &[
        (
            "traffic_mirror_filter: tmf-all, session_number: 1",
            "traffic_mirror_filter: tmf-nope, session_number: 1",
            "no traffic mirror filter has the id `tmf-nope`",
        ),
        (
            "network_interface: web-1, traffic_mirror_target: tmt-ids",
            "network_interface: ids-1, traffic_mirror_target: tmt-ids",
            "would mirror `ids-1` to itself",
        ),
        (
            "session_number: 1, virtual_network_id: 4242",
            "session_number: 0, virtual_network_id: 4242",
            "session number 0 is out of range",
        ),
        (
            "virtual_network_id: 4242",
            "virtual_network_id: 16777216",
            "VXLAN network identifier 16777216 is out of range",
        ),
        (
            "tms-app, network_interface: app-1",
            "tms-app, network_interface: web-1",
            "`web-1` already has a session with number 1",
        ),
        (
            "{ rule: 20, action: accept, source_cidr_block",
            "{ rule: 10, action: accept, source_cidr_block",
            "inbound rule 10 is already defined",
        ),
        (
            "{ id: tmt-ids, network_interface: ids-1 }",
            "{ id: tmt-ids }",
            "a target needs `network_interface` (an instance id) or `pcap_file`",
        ),
        (
            "{ rule: 10, action: reject, protocol: tcp, destination_port_range: 22,",
            "{ rule: 10, action: reject, protocol: icmp, destination_port_range: 22,",
            "port ranges apply to TCP and UDP only",
        ),
        (
            "    outbound:\n      - { rule: 20,",
            "    network_services: [amazon-dns]\n    outbound:\n      - { rule: 20,",
            "vpcd does not mirror network services (amazon-dns) yet",
        ),
        (
            "{ rule: 100, action: accept, source_cidr_block: 0.0.0.0/0, destination_cidr_block: 0.0.0.0/0 }\n    outbound",
            "{ rule: 100, action: accept, source_cidr_block: 0.0.0.0/0, destination_cidr_block: \"::/0\" }\n    outbound",
            "the source and destination blocks are of different families",
        ),
    ];
    for (from, to, expect) in cases {
        assert!(base.contains(from), "the lab has no `{from}`");
        let errs = errors(&base.replacen(from, to, 1));
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "`{to}`: expected `{expect}` in {errs:?}"
        );
    }
    // At most three sessions per source (AWS's quota), and 10 rules per filter.
    let mut text = base.clone();
    for n in 2..=4 {
        text.push_str(&format!(
            "  - {{ id: tms-web-{n}, network_interface: web-1, traffic_mirror_target: tmt-capture, traffic_mirror_filter: tmf-all, session_number: {n} }}\n"
        ));
    }
    assert!(
        errors(&text)
            .iter()
            .any(|e| e.contains("more than 3 traffic mirror sessions")),
        "{:?}",
        errors(&text)
    );
    let rules: String = (1..=11)
        .map(|n| format!("      - {{ rule: {n}, action: accept, source_cidr_block: 0.0.0.0/0, destination_cidr_block: 0.0.0.0/0 }}\n"))
        .collect();
    let text = base.replace(
        "  - id: tmf-no-ssh\n    inbound:\n",
        &format!("  - id: tmf-no-ssh\n    inbound:\n{rules}"),
    );
    assert!(
        errors(&text)
            .iter()
            .any(|e| e
                .contains("at most 10 rules (inbound and outbound together), `tmf-no-ssh` has 14")),
        "{:?}",
        errors(&text)
    );
    // A target in another VPC needs an active peering.
    let text = base.replace(
        "internet:\n",
        "  - id: vpc-other\n    cidr_block: 10.9.0.0/16\n    subnets:\n      - { id: other-a, cidr_block: 10.9.1.0/24 }\n    instances:\n      - { id: far-1, subnet: other-a }\ninternet:\n",
    ).replace("{ id: tmt-ids, network_interface: ids-1 }", "{ id: tmt-ids, network_interface: far-1 }");
    assert!(
        errors(&text)
            .iter()
            .any(|e| e.contains("no active peering joins them")),
        "{:?}",
        errors(&text)
    );
}

#[test]
fn an_address_family_rule_matches_only_its_family() {
    // An IPv4 rule never matches IPv6 traffic (and the lab's sources are IPv4 here).
    let snap = compile(&lab_text());
    let f = &snap.topo.traffic_mirror.filters[0];
    let v6 = {
        let mut out = Vec::new();
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(1, 2)
        .write(&mut out, &[])
        .unwrap();
        out
    };
    let pkt = dataplane::Packet::parse(&v6).unwrap();
    assert!(!f.accepts(Direction::Egress, &pkt));
    let v4 = udp([10, 0, 1, 10], [1, 2, 3, 4], 5, b"");
    let pkt = dataplane::Packet::parse(&v4).unwrap();
    assert!(f.accepts(Direction::Egress, &pkt));
}

#[test]
fn the_capture_writer_writes_pcapng_with_reasons_that_tools_read() {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let dir = std::env::temp_dir().join(format!("vpcd-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lab_file = dir.join("lab.yaml");
    let snap = compile(&lab_text());
    let cell = std::sync::Arc::new(dataplane::SnapshotCell::new(snap));
    let writer = control::capture_writer::start(Some(&lab_file), cell, 1);
    let mut sinks = writer.sinks;
    let sink = sinks.pop().unwrap();
    // The writer hands out buffers once it sees the lab captures to a file.
    let data = sink
        .free
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("a free buffer");
    let frame = {
        let mut f = vec![0u8; 14];
        f.extend(tcp_syn([10, 0, 1, 10], [10, 0, 2, 10], 8080));
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    };
    let mut buf = data;
    buf[..frame.len()].copy_from_slice(&frame);
    let session = 1; // tms-app
    sink.records
        .send(Record {
            file: 0,
            session,
            dir: Direction::Ingress,
            outcome: Outcome::Dropped(DropReason::SgIngress),
            at: Timestamp(1_700_000_000_123_456_789),
            original_len: frame.len() as u32,
            len: frame.len(),
            data: buf,
            worker: 0,
        })
        .unwrap();
    drop(sink);
    writer.handle.join().unwrap();
    let file = dir.join("captures/app-1.pcapng");
    let mut reader = PcapNgReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut names = Vec::new();
    let mut packets = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(idb) => names.push(format!("{:?}", idb.options)),
            Block::EnhancedPacket(epb) => packets.push((
                epb.timestamp,
                epb.data.to_vec(),
                format!("{:?}", epb.options),
            )),
            _ => {}
        }
    }
    assert_eq!(names.len(), 1);
    assert!(names[0].contains("app-1 (tms-app)"), "{names:?}");
    assert_eq!(packets.len(), 1);
    let (ts, data, options) = &packets[0];
    assert_eq!(ts.as_nanos(), 1_700_000_000_123_456_789);
    assert_eq!(data, &frame);
    assert!(
        options.contains("vpcd dropped this packet: SG_INGRESS"),
        "{options}"
    );
    assert!(options.contains("Flags(1)"), "inbound: {options}");
    // tcpdump reads it too (when it is here; scripts/install-deps.sh installs it).
    if let Ok(out) = std::process::Command::new("tcpdump")
        .arg("-nr")
        .arg(&file)
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("10.0.2.10.8080: Flags [S]"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
