//! The AWS side's BGP session (control::bgp::session, R-VPN-BGP) on arbitrary bytes from
//! the customer gateway: after the OPEN exchange (an established session) and before it
//! (a session waiting for the peer's OPEN). The first byte cuts the input in two, so
//! messages split across reads are tried too.
//!
//! Besides not panicking: a session that closes has sent a NOTIFICATION (or received
//! one); everything it sends decodes as BGP; it never holds more than AWS's 100 prefixes.

#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::bgp::session::{Config, Output, Session, State, MAX_PREFIXES};
use libfuzzer_sys::fuzz_target;
use rustbgpd_wire::{decode_message, encode_message, Capability, Message, OpenMessage};

const AWS: u32 = 64512;
const CGW: u32 = 65000;

fn session() -> Session {
    let mut s = Session::new(Config::aws(AWS, CGW, Ipv4Addr::new(169, 254, 10, 1)));
    s.advertise(BTreeMap::from([("10.0.0.0/16".parse().unwrap(), vec![])]));
    s
}

fn open() -> Vec<u8> {
    encode_message(&Message::Open(OpenMessage {
        version: 4,
        my_as: 65000,
        hold_time: 30,
        bgp_identifier: Ipv4Addr::new(203, 0, 113, 50),
        capabilities: vec![Capability::FourOctetAs { asn: CGW }],
    }))
    .unwrap()
    .to_vec()
}

/// What the session sent must be BGP; a close must come with a NOTIFICATION.
fn check(out: &Output) {
    let mut b = Bytes::from(out.send.clone());
    let mut notified = false;
    while !b.is_empty() {
        let m = decode_message(&mut b, 4096).expect("the session sends valid BGP messages");
        notified |= matches!(m, Message::Notification(_));
    }
    if out.close {
        let received = out.events.iter().any(|e| {
            matches!(
                e,
                control::bgp::session::Event::Down(
                    control::bgp::session::Down::NotificationReceived { .. }
                )
            )
        });
        assert!(notified || received, "closed without a NOTIFICATION");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(rest.len());
    let t0 = Instant::now();
    // Established.
    let mut s = session();
    s.connected(t0);
    s.received_bytes(&open(), t0);
    s.received_bytes(&encode_message(&Message::Keepalive).unwrap(), t0);
    assert_eq!(s.state(), State::Established);
    for part in [&rest[..at], &rest[at..]] {
        let out = s.received_bytes(part, t0);
        check(&out);
        assert!(s.received().len() <= MAX_PREFIXES);
        if out.close {
            break;
        }
    }
    check(&s.tick(t0 + Duration::from_secs(40)));
    // Waiting for the peer's OPEN.
    let mut s = session();
    s.connected(t0);
    check(&s.received_bytes(rest, t0));
    assert!(s.received().len() <= MAX_PREFIXES);
});
