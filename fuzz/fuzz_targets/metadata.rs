//! The router's TCP services (`TcpServices::handle`: instance metadata over HTTP, DNS over
//! TCP) on arbitrary bytes, over the default lab, in two modes chosen by the first byte.
//!
//! - A conversation (bit 0 clear): an instance opens real TCP connections (a handshake
//!   built with etherparse, segments with right checksums, sequence and acknowledgement
//!   numbers that follow the service's) and sends the rest of the input as the request
//!   bytes, so the fuzz reaches the HTTP parser, the token logic and the DNS framing
//!   instead of smoltcp's checksum check. For metadata, a NUL byte ends a request and
//!   opens the next connection, and `{token}` is replaced by the last token the service
//!   handed out, so `PUT /latest/api/token` then `GET` with it reaches the answers.
//!   Bit 1: DNS (port 53 at the VPC's resolver) instead of metadata (port 80); bit 2: from
//!   app-1 instead of web-1; bit 3: over IPv6; bits 4-6: the segment size; bit 7: the
//!   client closes (FIN) after each request.
//! - Raw packets (bit 0 set): `control`, `time step`, then one IP packet from the instance
//!   (bit 2 as above), checksums repaired when bit 1 is set, to one service state kept
//!   across inputs; TCP segments only, as the worker hands over.
//!
//! Besides not panicking: every packet the service sends is a well-formed IP/TCP packet,
//! and every metadata answer is an HTTP/1.1 response.

#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;

use dataplane::packet::Transport;
use dataplane::router_services::tcp_services::TcpServices;
use dataplane::router_services::{sender, ServiceCounters};
use dataplane::snapshot::{EniIx, DNS_V6, METADATA_V4, METADATA_V6};
use dataplane::{Packet, Snapshot, Timestamp};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use libfuzzer_sys::fuzz_target;
use vpcd_fuzz::{default_lab, fix_checksums, Clock, EPOCH};

const RAW: u8 = 0x01;
const RAW_FIX_CHECKSUMS: u8 = 0x02;
const DNS: u8 = 0x02;
const APP: u8 = 0x04;
const IPV6: u8 = 0x08;
const FIN_AFTER: u8 = 0x80;
/// Payload bytes per segment, by bits 4-6.
const SEGMENT: [usize; 8] = [1, 3, 16, 100, 536, 1400, 4000, 8960];
/// Request bytes sent on one connection at most: beyond the service's 16 KiB window the
/// client would have to wait for it, which this client does not.
const MAX_SENT: usize = 16 << 10;
/// Requests (connections) of one input at most, one after the other, from source ports
/// `FIRST_PORT` on.
const MAX_REQUESTS: usize = 8;
const FIRST_PORT: u16 = 40000;

const SYN: u8 = 0x02;
const FIN: u8 = 0x01;

/// One TCP connection from an instance to a router service, driven in step with it.
struct Client<'a> {
    snap: &'a Snapshot,
    eni: EniIx,
    services: &'a mut TcpServices,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    /// Our next sequence number and the next one we expect from the service.
    seq: u32,
    ack: u32,
    now: Timestamp,
    /// What the service sent on this connection, in order.
    received: Vec<u8>,
    /// The service reset the connection or closed its side.
    closed: bool,
}

impl Client<'_> {
    /// Sends one segment with `flags` (ACK added once the service's sequence is known)
    /// and takes in what the service answers.
    fn send(&mut self, flags: u8, payload: &[u8]) {
        let b = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!("one family per connection"),
        };
        let mut b = b.tcp(self.sport, self.dport, self.seq, 64240);
        if flags & SYN != 0 {
            b = b.syn();
        } else {
            b = b.ack(self.ack);
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        let mut packet = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut packet, payload)
            .expect("etherparse writes to a Vec");
        self.seq = self
            .seq
            .wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
        self.now = Timestamp(self.now.0 + 1_000_000);
        let pkt = Packet::parse(&packet).expect("etherparse writes well-formed packets");
        let answers = self.services.handle(
            self.snap,
            self.eni,
            &pkt,
            &packet,
            self.now,
            &mut ServiceCounters::default(),
        );
        for a in &answers {
            self.take(a);
        }
    }

    /// Reads one packet of the service's: it must be TCP from the service's port to one
    /// of this input's connections (an earlier one left open may still hear from it).
    fn take(&mut self, answer: &[u8]) {
        let p = SlicedPacket::from_ip(answer).expect("the service sends IP packets");
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("the service sent something else than TCP: {p:?}");
        };
        assert_eq!(
            t.source_port(),
            self.dport,
            "the service answers from its port"
        );
        assert!(
            (FIRST_PORT..FIRST_PORT + MAX_REQUESTS as u16).contains(&t.destination_port()),
            "the service answers a port no connection used: {}",
            t.destination_port()
        );
        if t.destination_port() != self.sport {
            return;
        }
        if t.rst() {
            self.closed = true;
            return;
        }
        if t.syn() {
            self.ack = t.sequence_number().wrapping_add(1);
        } else if t.sequence_number() == self.ack {
            self.received.extend_from_slice(t.payload());
            self.ack = self.ack.wrapping_add(t.payload().len() as u32);
        }
        if t.fin() {
            self.ack = self.ack.wrapping_add(1);
            self.closed = true;
        }
    }
}

/// One connection: handshake, `request` in segments of `segment` bytes, optionally FIN,
/// then the acknowledgement of what the service sent. Returns what it sent.
#[allow(clippy::too_many_arguments)]
fn converse(
    snap: &Snapshot,
    eni: EniIx,
    services: &mut TcpServices,
    (src, dst, dport): (IpAddr, IpAddr, u16),
    sport: u16,
    request: &[u8],
    segment: usize,
    fin: bool,
    now: Timestamp,
) -> Vec<u8> {
    let mut c = Client {
        snap,
        eni,
        services,
        src,
        dst,
        sport,
        dport,
        seq: 0x1000_0000 ^ u32::from(sport),
        ack: 0,
        now,
        received: Vec::new(),
        closed: false,
    };
    c.send(SYN, &[]);
    if c.closed {
        return c.received;
    }
    c.send(0, &[]);
    for chunk in request[..request.len().min(MAX_SENT)].chunks(segment) {
        c.send(0, chunk);
    }
    if fin {
        c.send(FIN, &[]);
    }
    // Acknowledge the answer and the service's FIN, so its socket listens again.
    c.send(0, &[]);
    c.received
}

/// The body of a successful token answer.
fn token_of(answer: &[u8]) -> Option<&[u8]> {
    let body = answer.strip_prefix(b"HTTP/1.1 200 OK\r\n")?;
    let at = body.windows(4).position(|w| w == b"\r\n\r\n")?;
    let token = &body[at + 4..];
    (token.len() == 32 && token.iter().all(u8::is_ascii_hexdigit)).then_some(token)
}

/// `request` with every `{token}` replaced by `token`.
fn with_token(request: &[u8], token: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = b"{token}";
    let mut out = Vec::with_capacity(request.len());
    let mut rest = request;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(token);
        rest = &rest[at + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn conversation(snap: &Snapshot, control: u8, input: &[u8]) {
    let instance = if control & APP != 0 { "app-1" } else { "web-1" };
    let eni = instance_eni(snap, instance);
    let e = snap.eni(eni);
    let v6 = control & IPV6 != 0;
    let src = match (v6, e.ipv6.first(), e.primary_v4()) {
        (true, Some(a), _) => IpAddr::V6(*a),
        (false, _, Some(a)) => IpAddr::V4(a),
        _ => return,
    };
    let (dst, dport) = match (control & DNS != 0, v6) {
        (false, false) => (IpAddr::V4(METADATA_V4), 80),
        (false, true) => (IpAddr::V6(METADATA_V6), 80),
        (true, false) => match snap.vpc(e.vpc).dns_v4() {
            Some(d) => (IpAddr::V4(d), 53),
            None => return,
        },
        (true, true) => (IpAddr::V6(DNS_V6), 53),
    };
    let segment = SEGMENT[usize::from((control >> 4) & 0x07)];
    let fin = control & FIN_AFTER != 0;
    let mut services = TcpServices::new();
    let mut now = EPOCH;
    if dport == 53 {
        // A DNS message is binary: one connection carries the whole input.
        converse(
            snap,
            eni,
            &mut services,
            (src, dst, dport),
            FIRST_PORT,
            input,
            segment,
            fin,
            now,
        );
        return;
    }
    let mut token: Vec<u8> = Vec::new();
    for (i, request) in input.split(|b| *b == 0).take(MAX_REQUESTS).enumerate() {
        let request = with_token(request, &token);
        let sport = FIRST_PORT + i as u16;
        let answer = converse(
            snap,
            eni,
            &mut services,
            (src, dst, dport),
            sport,
            &request,
            segment,
            fin,
            now,
        );
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "a metadata answer that is not HTTP: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(64)])
        );
        if let Some(t) = token_of(&answer) {
            token = t.to_vec();
        }
        now = Timestamp(now.0 + 1_000_000_000);
    }
}

fn instance_eni(snap: &Snapshot, instance: &str) -> EniIx {
    let port = snap
        .port_named(instance)
        .expect("the default lab has the instance");
    sender(snap, port).expect("an instance's port")
}

/// The raw mode's service and clock, kept across inputs.
#[derive(Default)]
struct Raw {
    services: TcpServices,
    counters: ServiceCounters,
    clock: Clock,
}

thread_local! {
    static RAW_STATE: RefCell<Raw> = RefCell::new(Raw::default());
}

fn raw(snap: &Snapshot, control: u8, input: &[u8]) {
    let [step, packet @ ..] = input else {
        return;
    };
    let instance = if control & APP != 0 { "app-1" } else { "web-1" };
    let eni = instance_eni(snap, instance);
    let mut packet = packet.to_vec();
    if control & RAW_FIX_CHECKSUMS != 0 {
        fix_checksums(&mut packet);
    }
    // The worker hands the service parsed TCP segments only (`RouterServices::answer`).
    let Ok(
        pkt @ Packet {
            transport: Transport::Tcp { .. },
            ..
        },
    ) = Packet::parse(&packet)
    else {
        return;
    };
    RAW_STATE.with_borrow_mut(|r| {
        let now = match r.clock.advance(*step) {
            Some(now) => now,
            None => {
                *r = Raw::default();
                r.clock.now()
            }
        };
        let answers = r
            .services
            .handle(snap, eni, &pkt, &packet, now, &mut r.counters);
        for answer in answers {
            let p = SlicedPacket::from_ip(&answer).expect("the service sends IP packets");
            assert!(
                matches!(p.transport, Some(TransportSlice::Tcp(_))),
                "the service sent something else than TCP"
            );
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let [control, input @ ..] = data else {
        return;
    };
    let snap = default_lab();
    if control & RAW != 0 {
        raw(snap, *control, input);
    } else {
        conversation(snap, *control, input);
    }
});
