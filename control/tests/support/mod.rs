//! Helpers of the in-process tests: compiled labs, packets built with etherparse, and a
//! pipeline run with a recorder.

#![allow(dead_code)]

use std::net::IpAddr;

use dataplane::{DropReason, Pipeline, PortId, Recorder, Snapshot, Timestamp, Verdict};
use etherparse::PacketBuilder;

pub struct Lab {
    pub snap: Snapshot,
    pub pipe: Pipeline,
}

pub const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

pub fn lab(name: &str) -> Lab {
    let path = format!("{}/../configs/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    lab_text(&std::fs::read_to_string(&path).expect("config file"))
}

pub fn lab_text(text: &str) -> Lab {
    let (_, snap) = control::load_text(text, 1).unwrap_or_else(|e| panic!("{e:?}"));
    Lab {
        snap,
        pipe: Pipeline::new(),
    }
}

/// What came out of one packet: the verdict, the port's name, the bytes, the trace.
pub struct Outcome {
    pub verdict: Verdict,
    pub to: Option<String>,
    pub bytes: Vec<u8>,
    pub steps: Vec<String>,
}

impl Lab {
    pub fn port(&self, name: &str) -> PortId {
        self.snap
            .port_named(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Sends `pkt` from the namespace `from`, through the pipeline with a recorder.
    pub fn send(&mut self, from: &str, mut pkt: Vec<u8>) -> Outcome {
        let ingress = self.port(from);
        let mut rec = Recorder::new();
        let verdict = self
            .pipe
            .process(&self.snap, ingress, &mut pkt, NOW, &mut rec);
        let to = match verdict {
            Verdict::Forward(p) => Some(self.snap.topo.ports[p.ix()].name.to_string()),
            _ => None,
        };
        let steps = rec.steps.iter().map(|s| format!("{s:?}")).collect();
        // The recorder and the verdict must agree on drops.
        if let Verdict::Drop(r) = verdict {
            assert_eq!(rec.drop_reason(), Some(r));
        }
        Outcome {
            verdict,
            to,
            bytes: pkt,
            steps,
        }
    }

    pub fn expect_to(&mut self, from: &str, pkt: Vec<u8>, to: &str) -> Vec<u8> {
        let o = self.send(from, pkt);
        assert_eq!(
            o.to.as_deref(),
            Some(to),
            "verdict {:?}, steps {:#?}",
            o.verdict,
            o.steps
        );
        o.bytes
    }

    pub fn expect_drop(&mut self, from: &str, pkt: Vec<u8>, reason: DropReason) {
        let o = self.send(from, pkt);
        assert_eq!(o.verdict, Verdict::Drop(reason), "steps {:#?}", o.steps);
        assert_eq!(
            self.pipe.stats.dropped(reason),
            1,
            "counted once under {reason}"
        );
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let b = match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, b"vpcd test payload").unwrap();
    out
}

/// The second packet of a TCP handshake.
pub fn tcp_synack(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let b = match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .tcp(sport, dport, 7, 64240)
    .syn()
    .ack(2);
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

pub fn tcp_syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let b = match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .tcp(sport, dport, 1, 64240)
    .syn();
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

pub fn ping(src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut out, b"ping"),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut out, b"ping"),
        _ => panic!("mixed families"),
    }
    .unwrap();
    out
}

pub fn src_of(bytes: &[u8]) -> IpAddr {
    dataplane::Packet::parse(bytes).unwrap().src
}

pub fn dst_of(bytes: &[u8]) -> IpAddr {
    dataplane::Packet::parse(bytes).unwrap().dst
}

/// Checksums of the rewritten packet, recomputed from scratch by etherparse.
pub fn assert_checksums_valid(bytes: &[u8]) {
    let p = etherparse::SlicedPacket::from_ip(bytes).unwrap();
    if let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net {
        assert!(
            dataplane::checksum::ipv4_header_ok(v4.header().slice()),
            "IPv4 header checksum"
        );
        let (s, d) = (v4.header().source(), v4.header().destination());
        match &p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                assert_eq!(t.checksum(), t.calc_checksum_ipv4(s, d).unwrap())
            }
            Some(etherparse::TransportSlice::Udp(u)) => {
                assert_eq!(
                    u.checksum(),
                    u.to_header()
                        .calc_checksum_ipv4_raw(s, d, u.payload())
                        .unwrap()
                )
            }
            _ => {}
        }
    }
}

// ---- Delivery -------------------------------------------------------------------------

/// `pkt` as it looks after the VPC router forwarded it out of the VPC: TTL / hop limit one
/// less (the IPv4 header checksum fixed).
pub fn hop(mut pkt: Vec<u8>) -> Vec<u8> {
    if pkt[0] >> 4 == 6 {
        pkt[7] -= 1;
    } else {
        let old = u16::from_be_bytes([pkt[8], pkt[9]]);
        pkt[8] -= 1;
        let new = u16::from_be_bytes([pkt[8], pkt[9]]);
        let c = u16::from_be_bytes([pkt[10], pkt[11]]);
        pkt[10..12].copy_from_slice(&dataplane::checksum::update16(c, old, new).to_be_bytes());
    }
    pkt
}
