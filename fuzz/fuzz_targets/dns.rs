//! The Amazon DNS resolver (R-ADDR-DNS) on arbitrary bytes as the query message: over TCP
//! (`dns::respond` without a size limit, as the TCP service calls it) and in a UDP
//! datagram to the VPC's base+2 address (`dns::answer_udp`, with its EDNS limit), asked
//! from instances of the default lab and of the interface-endpoint lab (private DNS
//! names, peered VPCs).
//!
//! Besides not panicking, every answer must be a DNS message a client can read, with the
//! query's id: hickory-proto reads what the resolver wrote.

#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;

use dataplane::io::BUFFER_SIZE;
use dataplane::router_services::{dns, sender};
use dataplane::{Packet, Snapshot};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use vpcd_fuzz::{default_lab, endpoints_lab};

/// Checks that `answer` is a readable DNS message answering `query`.
fn check(query: &[u8], answer: &[u8], how: &str) {
    let m = Message::from_vec(answer)
        .unwrap_or_else(|e| panic!("the resolver's answer ({how}) is not DNS: {e}"));
    if let [a, b, ..] = query {
        assert_eq!(
            m.metadata.id,
            u16::from_be_bytes([*a, *b]),
            "the answer ({how}) has another id than the query"
        );
    }
}

/// The query in a UDP datagram from `instance` to its VPC's resolver, answered over `buf`.
fn over_udp(snap: &Snapshot, instance: &str, query: &[u8], buf: &mut [u8]) {
    let port = snap.port_named(instance).expect("the lab has the instance");
    let eni = sender(snap, port).expect("an instance's port");
    let (Some(client), Some(server)) = (
        snap.eni(eni).primary_v4(),
        snap.vpc(snap.eni(eni).vpc).dns_v4(),
    ) else {
        return;
    };
    let b = PacketBuilder::ipv4(client.octets(), server.octets(), 64).udp(40000, 53);
    let len = b.size(query.len());
    if len > buf.len() || b.write(&mut &mut buf[..], query).is_err() {
        return;
    }
    let pkt = Packet::parse(&buf[..len]).expect("etherparse writes well-formed packets");
    let Some(n) = dns::answer_udp(snap, eni, &pkt, buf) else {
        return;
    };
    let to = Packet::parse(&buf[..n]).expect("the answer is a well-formed IP packet");
    assert_eq!(
        to.dst,
        IpAddr::V4(client),
        "the answer goes back to the asker"
    );
    let p = SlicedPacket::from_ip(&buf[..n]).expect("the answer is an IP packet");
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!("the answer is not UDP");
    };
    assert_eq!((u.source_port(), u.destination_port()), (53, 40000));
    check(query, u.payload(), "UDP");
}

thread_local! {
    /// A worker's buffer: room for the largest answer EDNS allows.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; BUFFER_SIZE]);
}

fuzz_target!(|query: &[u8]| {
    let askers = [
        (default_lab(), "web-1"),
        (endpoints_lab(), "a-1"),
        (endpoints_lab(), "b-1"),
    ];
    for (snap, instance) in askers {
        let port = snap.port_named(instance).expect("the lab has the instance");
        let eni = sender(snap, port).expect("an instance's port");
        if let Some(answer) = dns::respond(snap, snap.eni(eni).vpc, query, usize::from(u16::MAX)) {
            check(query, &answer, "TCP");
        }
        BUF.with_borrow_mut(|buf| over_udp(snap, instance, query, buf));
    }
});
