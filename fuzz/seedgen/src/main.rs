//! Writes the seed corpora of vpcd's fuzz targets into `fuzz/seeds/<target>/`, one small
//! file per seed, named after what it is. Each packet is a real one of the default lab
//! (configs/default.yaml: web-1 10.0.1.10 public, app-1 10.0.2.10 private, inet-1
//! 203.0.113.10 on the internet), framed as its target reads inputs (see the targets'
//! doc comments). Deterministic: running it again rewrites the same files.

use std::fs;
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const WEB: [u8; 4] = [10, 0, 1, 10];
const APP: [u8; 4] = [10, 0, 2, 10];
const INET: [u8; 4] = [203, 0, 113, 10];
const WEB_PUBLIC: [u8; 4] = [198, 51, 100, 10];
const NAT_PUBLIC: [u8; 4] = [198, 51, 100, 5];
const RESOLVER: [u8; 4] = [10, 0, 0, 2];
const METADATA: [u8; 4] = [169, 254, 169, 254];
const WEB6: [u8; 16] = v6([0x2001, 0xdb8, 0x10, 1, 0, 0, 0, 0x10]);
const APP6: [u8; 16] = v6([0x2001, 0xdb8, 0x10, 2, 0, 0, 0, 0x10]);
const INET6: [u8; 16] = v6([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10]);
const METADATA6: [u8; 16] = v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]);

/// Port indices of the default lab: instances in file order, then the internet hosts.
const PORT_WEB: u8 = 0;
const PORT_APP: u8 = 1;
const PORT_INET: u8 = 2;

/// The pipeline target's control bits (fuzz_targets/pipeline.rs).
const VIRTIO: u8 = 0x10;
const DIRECT: u8 = 0x20;
const ANSWER: u8 = 0x40;
const COALESCE: u8 = 0x80;

const fn v6(w: [u16; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        out[2 * i] = (w[i] >> 8) as u8;
        out[2 * i + 1] = w[i] as u8;
        i += 1;
    }
    out
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(2000).psh() };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ping4(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, ttl)
        .icmpv4_echo_request(7, 1)
        .write(&mut out, b"vpcd fuzz ping")
        .unwrap();
    out
}

fn ping6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .icmpv6_echo_request(7, 1)
        .write(&mut out, b"vpcd fuzz ping")
        .unwrap();
    out
}

/// The IPv4 header checksum rewritten after a header edit.
fn fix_ipv4_header(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let mut acc: u32 = p[..ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    p[10..12].copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

/// The two fragments of a UDP datagram: the first (with the UDP header and 16 payload
/// bytes) and the rest.
fn fragments4(src: [u8; 4], dst: [u8; 4]) -> (Vec<u8>, Vec<u8>) {
    let whole = udp4(src, dst, 40000, 5201, &[0x5a; 64]);
    let cut = 20 + 24; // UDP header + 16 bytes: a multiple of 8 after the IP header.
    let mut first = whole[..cut].to_vec();
    first[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
    first[6] |= 0x20; // more fragments
    fix_ipv4_header(&mut first);
    let mut later = whole[..20].to_vec();
    later.extend_from_slice(&whole[cut..]);
    let len = later.len() as u16;
    later[2..4].copy_from_slice(&len.to_be_bytes());
    later[6..8].copy_from_slice(&(((cut - 20) / 8) as u16).to_be_bytes());
    fix_ipv4_header(&mut later);
    (first, later)
}

/// A UDP datagram in an IPv6 fragment header: the first fragment of two.
fn fragment6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let whole = udp6(src, dst, 40000, 5201, &[0x5a; 64]);
    let mut out = whole[..40].to_vec();
    out[6] = 44; // next header: fragment
    let l4 = &whole[40..40 + 24];
    out.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]); // offset 0, M set
    out.extend_from_slice(l4);
    let payload = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&payload.to_be_bytes());
    out
}

/// A virtio-net header (little-endian, as the TUN hands it over).
fn virtio(
    flags: u8,
    gso: u8,
    hdr_len: u16,
    size: u16,
    csum_start: u16,
    csum_offset: u16,
) -> Vec<u8> {
    let mut h = vec![flags, gso];
    for v in [hdr_len, size, csum_start, csum_offset] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// A TSO super-packet (3 segments of 1000 bytes) with a partial checksum: the transport
/// checksum field holds the pseudo-header sum, as a sending kernel leaves it.
fn tso4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = tcp4(src, dst, 40000, 5201, false, &[0x42; 3000]);
    let l4_len = p.len() - 20;
    let mut acc: u32 = p[12..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>()
        + 6
        + l4_len as u32;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    p[36..38].copy_from_slice(&(acc as u16).to_be_bytes());
    let mut out = virtio(1, 1, 40, 1000, 20, 16);
    out.extend_from_slice(&p);
    out
}

fn dns_query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> Seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        Seeds { dir }
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(name), bytes).unwrap();
    }

    /// A pipeline input: control byte, time step (1 ms), then the packet.
    fn packet(&self, name: &str, control: u8, packet: &[u8]) {
        let mut input = vec![control, 1];
        input.extend_from_slice(packet);
        self.put(name, &input);
    }
}

fn pipeline(root: &Path) {
    let s = Seeds::new(root, "pipeline");
    let q = dns_query("ip-10-0-2-10.ec2.internal.", RecordType::A, false);
    let (first, later) = fragments4(WEB, INET);
    let http = b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n";
    let mut ttl1 = tcp4(WEB, INET, 40001, 80, true, &[]);
    ttl1[8] = 1;
    fix_ipv4_header(&mut ttl1);
    let mut big = tcp4(WEB, INET, 40002, 80, false, &[0x61; 1600]);
    big[6] |= 0x40; // don't fragment
    fix_ipv4_header(&mut big);
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "web1-inet1-tcp-syn",
            PORT_WEB | ANSWER,
            tcp4(WEB, INET, 40000, 80, true, &[]),
        ),
        (
            "inet1-web1-public-tcp-syn",
            PORT_INET | ANSWER,
            tcp4(INET, WEB_PUBLIC, 40000, 443, true, &[]),
        ),
        (
            "inet1-web1-ssh-refused",
            PORT_INET,
            tcp4(INET, WEB_PUBLIC, 40000, 22, true, &[]),
        ),
        (
            "app1-inet1-nat-tcp-syn",
            PORT_APP | ANSWER,
            tcp4(APP, INET, 40000, 443, true, &[]),
        ),
        (
            "app1-inet1-nat-udp",
            PORT_APP | ANSWER,
            udp4(APP, INET, 40000, 5201, b"datagram"),
        ),
        (
            "inet1-nat-unsolicited",
            PORT_INET,
            udp4(INET, NAT_PUBLIC, 5201, 1024, b"x"),
        ),
        (
            "web1-app1-udp",
            PORT_WEB | ANSWER,
            udp4(WEB, APP, 40000, 5201, b"datagram"),
        ),
        (
            "web1-app1-udp-coalesced",
            PORT_WEB | COALESCE,
            udp4(WEB, APP, 40000, 5201, &[7; 100]),
        ),
        (
            "web1-app1-tcp-direct",
            PORT_WEB | DIRECT | ANSWER,
            tcp4(WEB, APP, 40000, 22, true, &[]),
        ),
        ("web1-inet1-ping", PORT_WEB | ANSWER, ping4(WEB, INET, 64)),
        ("web1-router-ping", PORT_WEB, ping4(WEB, [10, 0, 1, 1], 64)),
        (
            "web1-router-ping-direct",
            PORT_WEB | DIRECT,
            ping4(WEB, [10, 0, 1, 1], 64),
        ),
        ("web1-inet1-ttl1", PORT_WEB, ttl1),
        ("web1-inet1-too-big-df", PORT_WEB, big),
        (
            "app1-inet1-eigw-tcp6-syn",
            PORT_APP | ANSWER,
            tcp6(APP6, INET6, 40000, 443),
        ),
        (
            "inet1-app1-eigw-inbound6",
            PORT_INET,
            tcp6(INET6, APP6, 40000, 22),
        ),
        (
            "web1-inet1-tcp6-syn",
            PORT_WEB | ANSWER,
            tcp6(WEB6, INET6, 40000, 80),
        ),
        ("web1-inet1-ping6", PORT_WEB | ANSWER, ping6(WEB6, INET6)),
        ("web1-inet1-udp-first-fragment", PORT_WEB, first),
        ("web1-inet1-udp-later-fragment", PORT_WEB, later),
        ("web1-inet1-udp6-fragment", PORT_WEB, fragment6(WEB6, INET6)),
        (
            "web1-dns-query",
            PORT_WEB,
            udp4(WEB, RESOLVER, 40000, 53, &q),
        ),
        (
            "web1-dns-query-direct",
            PORT_WEB | DIRECT,
            udp4(WEB, RESOLVER, 40000, 53, &q),
        ),
        (
            "web1-metadata-syn",
            PORT_WEB,
            tcp4(WEB, METADATA, 40000, 80, true, &[]),
        ),
        (
            "web1-metadata-request",
            PORT_WEB,
            tcp4(WEB, METADATA, 40000, 80, false, http),
        ),
        (
            "web1-metadata6-syn",
            PORT_WEB,
            tcp6(WEB6, METADATA6, 40000, 80),
        ),
        ("web1-app1-tso", PORT_WEB | VIRTIO | ANSWER, tso4(WEB, APP)),
        ("web1-inet1-tso", PORT_WEB | VIRTIO, tso4(WEB, INET)),
        ("web1-metadata-tso", PORT_WEB | VIRTIO, tso4(WEB, METADATA)),
        ("not-ip", PORT_WEB, b"\x00\x01\x02\x03".to_vec()),
    ];
    for (name, control, packet) in seeds {
        s.packet(name, control, &packet);
    }
    // A packet with a virtio header that only vouches for its checksum.
    let mut valid = virtio(2, 0, 0, 0, 0, 0);
    valid.extend_from_slice(&udp4(WEB, APP, 40000, 5201, b"checked"));
    s.packet("web1-app1-data-valid", PORT_WEB | VIRTIO, &valid);
}

fn dns(root: &Path) {
    let s = Seeds::new(root, "dns");
    let mut notify = Message::new(7, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(
        Name::from_ascii("ec2.internal.").unwrap(),
        RecordType::SOA,
    ));
    let mut two = Message::new(8, MessageType::Query, OpCode::Query);
    for name in ["ip-10-0-1-10.ec2.internal.", "ip-10-0-2-10.ec2.internal."] {
        two.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    }
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "a-private-name",
            dns_query("ip-10-0-2-10.ec2.internal.", RecordType::A, false),
        ),
        (
            "aaaa-private-name",
            dns_query("ip-10-0-2-10.ec2.internal.", RecordType::AAAA, false),
        ),
        (
            "ptr-private",
            dns_query("10.2.0.10.in-addr.arpa.", RecordType::PTR, false),
        ),
        (
            "ptr-v6",
            dns_query(
                "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                RecordType::PTR,
                false,
            ),
        ),
        (
            "a-public-name",
            dns_query(
                "ec2-198-51-100-10.compute-1.amazonaws.com.",
                RecordType::A,
                false,
            ),
        ),
        ("a-unknown", dns_query("example.com.", RecordType::A, false)),
        (
            "a-service-endpoint",
            dns_query("queue.us-east-1.amazonaws.com.", RecordType::A, false),
        ),
        (
            "a-edns-4096",
            dns_query("ip-10-1-1-10.ec2.internal.", RecordType::A, true),
        ),
        (
            "mx-private-name",
            dns_query("ip-10-0-1-10.ec2.internal.", RecordType::MX, false),
        ),
        ("notify", notify.to_vec().unwrap()),
        ("two-questions", two.to_vec().unwrap()),
        ("id-only", vec![0x12, 0x34]),
    ];
    for (name, bytes) in seeds {
        s.put(name, &bytes);
    }
}

fn metadata(root: &Path) {
    let s = Seeds::new(root, "metadata");
    let conversation = |control: u8, request: &[u8]| {
        let mut input = vec![control];
        input.extend_from_slice(request);
        input
    };
    let seg = |i: u8| i << 4;
    let token_flow: &[u8] = b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n\0GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n\0GET /latest/meta-data/network/interfaces/macs/ HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n";
    let mut dns_tcp = Vec::new();
    let q = dns_query("ip-10-0-2-10.ec2.internal.", RecordType::A, false);
    dns_tcp.extend_from_slice(&(q.len() as u16).to_be_bytes());
    dns_tcp.extend_from_slice(&q);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("imdsv2-token-then-get", conversation(seg(5), token_flow)),
        ("imdsv2-token-then-get-small-segments", conversation(seg(2) | 0x80, token_flow)),
        ("imdsv2-token-then-get-v6", conversation(seg(5) | 0x08, token_flow)),
        ("imdsv1-refused", conversation(seg(5), b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n")),
        ("app1-placement", conversation(seg(4) | 0x04, b"GET /latest/meta-data/placement/region HTTP/1.0\r\nX-aws-ec2-metadata-token: bad\r\n\r\n")),
        ("bad-ttl", conversation(seg(5), b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 0\r\n\r\n")),
        ("post", conversation(seg(5), b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")),
        ("dns-over-tcp", conversation(seg(5) | 0x02, &dns_tcp)),
        ("dns-over-tcp-v6-bytewise", conversation(seg(0) | 0x02 | 0x08, &dns_tcp)),
    ];
    for (name, bytes) in seeds {
        s.put(name, &bytes);
    }
    // Raw packets, checksums repaired: control (raw | repair), time step, packet.
    let raw = |packet: Vec<u8>| {
        let mut input = vec![0x01 | 0x02, 1];
        input.extend_from_slice(&packet);
        input
    };
    s.put("raw-syn", &raw(tcp4(WEB, METADATA, 40000, 80, true, &[])));
    s.put(
        "raw-data-no-connection",
        &raw(tcp4(
            WEB,
            METADATA,
            40000,
            80,
            false,
            b"GET / HTTP/1.1\r\n\r\n",
        )),
    );
    s.put("raw-syn-v6", &raw(tcp6(WEB6, METADATA6, 40000, 80)));
    let mut fin = tcp4(WEB, METADATA, 40001, 80, false, &[]);
    fin[33] |= 0x01;
    s.put("raw-fin-no-connection", &raw(fin));
}

/// The lab target's seeds: every lab the repository tests.
fn labs(root: &Path, repo: &Path) {
    let s = Seeds::new(root, "lab");
    for dir in ["configs", "control/tests/labs"] {
        let mut files: Vec<_> = fs::read_dir(repo.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let name = format!(
                "{}-{}",
                dir.replace('/', "-"),
                f.file_name().unwrap().to_string_lossy()
            );
            s.put(&name, &fs::read(&f).unwrap());
        }
    }
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = fuzz.join("seeds");
    pipeline(&root);
    dns(&root);
    metadata(&root);
    labs(&root, fuzz.parent().unwrap());
    println!("seeds written under {}", root.display());
}
