//! The AWS side's BGP session (R-VPN-BGP, R-VPN-TUNNELS, R-VPN-CLOUDHUB) driven in
//! process by a customer gateway built from `rustbgpd-wire` messages: opening, learning
//! and withdrawing routes, the timers, AWS's limits, and malformed or unexpected messages
//! answered with the NOTIFICATION RFC 4271 names, never a panic.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::bgp::session::{Config, Down, Event, Output, Session, State};
use ip_network::Ipv4Network;
use rustbgpd_wire::{
    decode_message, encode_message, AsPath, AsPathSegment, Capability, Ipv4NlriEntry, Ipv4Prefix,
    Ipv4UnicastMode, Message, NotificationCode, NotificationMessage, OpenMessage, Origin,
    PathAttribute, UpdateMessage,
};

const AWS_ASN: u32 = 64512;
const CGW_ASN: u32 = 65000;

fn inside() -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 10, 1)
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

fn bytes(msg: &Message) -> Vec<u8> {
    encode_message(msg).unwrap().to_vec()
}

/// Every message in what the session sent.
fn sent(out: &Output) -> Vec<Message> {
    let mut b = Bytes::from(out.send.clone());
    let mut msgs = Vec::new();
    while !b.is_empty() {
        msgs.push(decode_message(&mut b, 4096).expect("the session sends valid messages"));
    }
    msgs
}

fn notification(out: &Output) -> Option<(u8, u8)> {
    sent(out).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code.as_u8(), n.subcode)),
        _ => None,
    })
}

fn open(asn: u32, hold: u16) -> Vec<u8> {
    bytes(&Message::Open(OpenMessage {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(23456),
        hold_time: hold,
        bgp_identifier: Ipv4Addr::new(203, 0, 113, 50),
        capabilities: vec![Capability::FourOctetAs { asn }],
    }))
}

fn entries(prefixes: &[&str]) -> Vec<Ipv4NlriEntry> {
    prefixes
        .iter()
        .map(|p| {
            let n = net(p);
            Ipv4NlriEntry {
                path_id: 0,
                prefix: Ipv4Prefix::new(n.network_address(), n.netmask()),
            }
        })
        .collect()
}

fn attrs(path: &[u32], med: Option<u32>) -> Vec<PathAttribute> {
    let mut a = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath {
            segments: vec![AsPathSegment::AsSequence(path.to_vec())],
        }),
        PathAttribute::NextHop(Ipv4Addr::new(169, 254, 10, 2)),
    ];
    if let Some(m) = med {
        a.push(PathAttribute::Med(m));
    }
    a
}

fn update(announce: &[&str], withdraw: &[&str], attributes: &[PathAttribute]) -> Vec<u8> {
    bytes(&Message::Update(UpdateMessage::build(
        &entries(announce),
        &entries(withdraw),
        attributes,
        true,
        false,
        Ipv4UnicastMode::Body,
    )))
}

fn keepalive() -> Vec<u8> {
    bytes(&Message::Keepalive)
}

/// A session brought to Established at `t0`, advertising the VPC's block.
fn established(t0: Instant) -> (Session, Output) {
    let mut s = Session::new(Config::aws(AWS_ASN, CGW_ASN, inside()));
    s.advertise(BTreeMap::from([(net("10.0.0.0/16"), vec![])]));
    s.connected(t0);
    s.received_bytes(&open(CGW_ASN, 30), t0);
    let out = s.received_bytes(&keepalive(), t0);
    assert_eq!(s.state(), State::Established);
    (s, out)
}

#[test]
fn a_session_opens_as_aws_does_and_advertises_the_vpc_once_established() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::aws(AWS_ASN, CGW_ASN, inside()));
    s.advertise(BTreeMap::from([(net("10.0.0.0/16"), vec![])]));
    let out = s.connected(t0);
    let [Message::Open(o)] = &sent(&out)[..] else {
        panic!("one OPEN: {:?}", sent(&out));
    };
    assert_eq!(
        (o.my_as, o.hold_time, o.four_byte_as()),
        (64512, 30, AWS_ASN)
    );
    assert_eq!(o.bgp_identifier, inside());
    assert_eq!(s.state(), State::OpenSent);

    // The peer proposes 90 s: the lower one, 30 s, holds (RFC 4271 §4.2).
    let out = s.received_bytes(&open(CGW_ASN, 90), t0);
    assert!(matches!(&sent(&out)[..], [Message::Keepalive]));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(10)));

    let out = s.received_bytes(&keepalive(), t0);
    assert_eq!(out.events, vec![Event::Established]);
    let msgs = sent(&out);
    let [Message::Update(u)] = &msgs[..] else {
        panic!("one UPDATE: {msgs:?}");
    };
    let p = u.parse(true, false, &[]).unwrap();
    assert_eq!(p.announced, entries(&["10.0.0.0/16"]));
    assert!(p.attributes.contains(&PathAttribute::AsPath(AsPath {
        segments: vec![AsPathSegment::AsSequence(vec![AWS_ASN])]
    })));
    assert!(p.attributes.contains(&PathAttribute::NextHop(inside())));
}

#[test]
fn r_vpn_bgp_the_customer_routes_are_learned_replaced_and_withdrawn() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    let out = s.received_bytes(
        &update(
            &["192.168.0.0/16", "192.168.7.0/24"],
            &[],
            &attrs(&[CGW_ASN], Some(50)),
        ),
        t0,
    );
    assert_eq!(out.events, vec![Event::RoutesChanged]);
    let r = &s.received()[&net("192.168.0.0/16")];
    assert_eq!(
        (r.asns.clone(), r.as_path_len, r.med),
        (vec![CGW_ASN], 1, Some(50))
    );

    // Prepending replaces the path; the same UPDATE again changes nothing.
    let prepended = update(&["192.168.7.0/24"], &[], &attrs(&[CGW_ASN, CGW_ASN], None));
    assert_eq!(
        s.received_bytes(&prepended, t0).events,
        vec![Event::RoutesChanged]
    );
    assert_eq!(s.received()[&net("192.168.7.0/24")].as_path_len, 2);
    assert!(s.received_bytes(&prepended, t0).events.is_empty());

    let out = s.received_bytes(&update(&[], &["192.168.7.0/24"], &[]), t0);
    assert_eq!(out.events, vec![Event::RoutesChanged]);
    assert_eq!(
        s.received().keys().collect::<Vec<_>>(),
        [&net("192.168.0.0/16")]
    );
    assert_eq!(s.state(), State::Established);
}

#[test]
fn r_vpn_bgp_more_than_100_prefixes_are_refused_and_counted() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    let many: Vec<String> = (0..120).map(|i| format!("172.16.{i}.0/24")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    s.received_bytes(&update(&many, &[], &attrs(&[CGW_ASN], None)), t0);
    assert_eq!(s.received().len(), 100);
    assert_eq!(s.refused(), 20);
    assert_eq!(s.state(), State::Established, "the session stays up");
    // A route already held may still change at the limit.
    s.received_bytes(&update(&[many[0]], &[], &attrs(&[CGW_ASN], Some(7))), t0);
    assert_eq!(s.received()[&net(many[0])].med, Some(7));
    assert_eq!(s.refused(), 20);
}

#[test]
fn r_vpn_cloudhub_a_path_through_the_own_asn_is_a_loop_and_ignored() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    s.received_bytes(&update(&["10.9.0.0/16"], &[], &attrs(&[CGW_ASN], None)), t0);
    // The same prefix, now with AWS's ASN in the path: a loop; the old route goes too.
    let out = s.received_bytes(
        &update(
            &["10.9.0.0/16"],
            &[],
            &attrs(&[CGW_ASN, AWS_ASN, 65001], None),
        ),
        t0,
    );
    assert_eq!(out.events, vec![Event::RoutesChanged]);
    assert!(s.received().is_empty());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn r_vpn_tunnels_keepalives_every_10_s_and_the_hold_timer_withdraws_everything() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    s.received_bytes(
        &update(&["192.168.0.0/16"], &[], &attrs(&[CGW_ASN], None)),
        t0,
    );
    let out = s.tick(t0 + Duration::from_secs(10));
    assert!(matches!(&sent(&out)[..], [Message::Keepalive]));
    // A keepalive from the peer at 20 s restarts the hold timer: up at 45 s.
    s.received_bytes(&keepalive(), t0 + Duration::from_secs(20));
    assert!(!s.tick(t0 + Duration::from_secs(45)).close);
    assert_eq!(s.state(), State::Established);
    // Silence until 50 s: hold timer expired, NOTIFICATION 4, routes withdrawn.
    let out = s.tick(t0 + Duration::from_secs(50));
    assert_eq!(notification(&out), Some((4, 0)));
    assert!(out.close);
    assert_eq!(
        out.events,
        vec![Event::RoutesChanged, Event::Down(Down::HoldTimerExpired)]
    );
    assert!(s.received().is_empty());
    assert_eq!(s.state(), State::Idle);
    // A new connection opens a new session.
    assert!(matches!(&sent(&s.connected(t0))[..], [Message::Open(_)]));
}

#[test]
fn a_cease_from_the_customer_gateway_withdraws_its_routes() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    s.received_bytes(
        &update(&["192.168.0.0/16"], &[], &attrs(&[CGW_ASN], None)),
        t0,
    );
    let cease = bytes(&Message::Notification(NotificationMessage::new(
        NotificationCode::Cease,
        2,
        Bytes::new(),
    )));
    let out = s.received_bytes(&cease, t0);
    assert!(out.close);
    assert!(out
        .events
        .contains(&Event::Down(Down::NotificationReceived {
            code: 6,
            subcode: 2
        })));
    assert!(s.received().is_empty());
}

#[test]
fn changed_advertisements_are_withdrawn_and_announced() {
    let t0 = Instant::now();
    let (mut s, first) = established(t0);
    assert_eq!(sent(&first).len(), 1);
    // CloudHub: another site's block, with that site's path after AWS's ASN.
    let out = s.advertise(BTreeMap::from([(net("172.16.0.0/16"), vec![65001])]));
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let Message::Update(w) = &msgs[0] else {
        panic!()
    };
    assert_eq!(
        w.parse(true, false, &[]).unwrap().withdrawn,
        entries(&["10.0.0.0/16"])
    );
    let Message::Update(a) = &msgs[1] else {
        panic!()
    };
    let a = a.parse(true, false, &[]).unwrap();
    assert_eq!(a.announced, entries(&["172.16.0.0/16"]));
    assert!(a.attributes.contains(&PathAttribute::AsPath(AsPath {
        segments: vec![AsPathSegment::AsSequence(vec![AWS_ASN, 65001])]
    })));
    // Nothing new: nothing sent.
    assert!(s
        .advertise(BTreeMap::from([(net("172.16.0.0/16"), vec![65001])]))
        .send
        .is_empty());
}

#[test]
fn an_open_is_refused_with_the_notification_rfc_4271_names() {
    let t0 = Instant::now();
    let cases: [(Vec<u8>, (u8, u8)); 3] = [
        (open(65099, 30), (2, 2)),  // Bad Peer AS
        (open(CGW_ASN, 2), (2, 6)), // Unacceptable Hold Time
        (
            // Bad BGP Identifier: our own.
            bytes(&Message::Open(OpenMessage {
                version: 4,
                my_as: 65000,
                hold_time: 30,
                bgp_identifier: inside(),
                capabilities: vec![],
            })),
            (2, 3),
        ),
    ];
    for (msg, want) in cases {
        let mut s = Session::new(Config::aws(AWS_ASN, CGW_ASN, inside()));
        s.connected(t0);
        let out = s.received_bytes(&msg, t0);
        assert_eq!(notification(&out), Some(want));
        assert!(out.close);
        assert_eq!(s.state(), State::Idle);
    }
}

#[test]
fn malformed_and_unexpected_messages_get_a_notification() {
    let t0 = Instant::now();
    let mut bad_marker = keepalive();
    bad_marker[3] = 0;
    let mut bad_length = keepalive();
    bad_length[17] = 5; // shorter than a header
    let mut bad_type = keepalive();
    bad_type[18] = 9;
    let no_next_hop = update(&["192.168.0.0/16"], &[], &attrs(&[CGW_ASN], None)[..2]);
    let not_from_peer = update(&["192.168.0.0/16"], &[], &attrs(&[65001], None));
    let cases: [(&str, Vec<u8>, (u8, u8)); 6] = [
        ("a wrong marker", bad_marker, (1, 1)),
        ("a bad length", bad_length, (1, 2)),
        ("an unknown type", bad_type, (1, 3)),
        ("no NEXT_HOP", no_next_hop, (3, 3)),
        ("an AS_PATH not from the peer", not_from_peer, (3, 11)),
        ("an OPEN when established", open(CGW_ASN, 30), (5, 3)),
    ];
    for (what, msg, want) in cases {
        let (mut s, _) = established(t0);
        let out = s.received_bytes(&msg, t0);
        assert_eq!(notification(&out), Some(want), "{what}");
        assert!(out.close, "{what}");
        assert_eq!(s.state(), State::Idle, "{what}");
    }
    // An UPDATE before the session is up is an FSM error in OpenSent.
    let mut s = Session::new(Config::aws(AWS_ASN, CGW_ASN, inside()));
    s.connected(t0);
    let out = s.received_bytes(&update(&[], &[], &[]), t0);
    assert_eq!(notification(&out), Some((5, 1)));
}

#[test]
fn a_message_split_anywhere_is_handled_once_whole() {
    let t0 = Instant::now();
    let (mut s, _) = established(t0);
    let u = update(&["192.168.0.0/16"], &[], &attrs(&[CGW_ASN], None));
    let mut both = u.clone();
    both.extend(keepalive());
    for cut in 1..both.len() {
        let (mut s2, _) = established(t0);
        let first = s2.received_bytes(&both[..cut], t0);
        // The UPDATE is handled as soon as it is whole, not before.
        assert_eq!(!first.events.is_empty(), cut >= u.len(), "cut at {cut}");
        s2.received_bytes(&both[cut..], t0);
        assert_eq!(s2.received().len(), 1, "cut at {cut}");
        assert_eq!(s2.state(), State::Established);
    }
    s.received_bytes(&u, t0);
    assert_eq!(s.received().len(), 1);
}

/// Mutated and random messages: the session either takes them or closes with a
/// NOTIFICATION; it never panics and never keeps more routes than its limit.
#[test]
fn mutated_messages_never_panic() {
    let t0 = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = [
        update(
            &["192.168.0.0/16", "10.9.0.0/24"],
            &["172.16.0.0/12"],
            &attrs(&[CGW_ASN, 65001], Some(5)),
        ),
        open(CGW_ASN, 30),
        keepalive(),
        bytes(&Message::Notification(NotificationMessage::new(
            NotificationCode::Cease,
            2,
            Bytes::new(),
        ))),
    ];
    for i in 0..20_000 {
        let (mut s, _) = established(t0);
        let mut m = valid[i % valid.len()].clone();
        for _ in 0..1 + rnd() % 4 {
            let at = (rnd() as usize) % m.len();
            match rnd() % 3 {
                0 => m[at] = rnd() as u8,
                1 => m.truncate(at.max(1)),
                _ => m.insert(at, rnd() as u8),
            }
        }
        let out = s.received_bytes(&m, t0);
        if out.close {
            assert!(
                notification(&out).is_some()
                    || out
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Down(Down::NotificationReceived { .. }))),
                "closed without a NOTIFICATION: {m:?}"
            );
        }
        assert!(s.received().len() <= 100);
    }
}

/// What BIRD 2.0.12 sent, with the configuration `vpcd vpn-config` writes for
/// configs/vpn-bgp.yaml's tunnel 1, to an AWS side that opened first: its OPEN
/// (multiprotocol IPv4, route refresh, graceful restart, 4-octet AS, enhanced route
/// refresh, long-lived graceful restart), a KEEPALIVE, the UPDATE for 192.168.0.0/16,
/// and the End-of-RIB marker (an empty UPDATE). Recorded from the socket.
const BIRD_RECORDED: &str = "ffffffffffffffffffffffffffffffff00350104fde8001ecb00713218021601040001000102004002007841040000fde846004700ffffffffffffffffffffffffffffffff001304ffffffffffffffffffffffffffffffff002e02000000144001010040020602010000fde8400304a9fe0a0210c0a8ffffffffffffffffffffffffffffffff00170200000000";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn recorded_bird_messages_open_the_session_and_announce_the_site() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::aws(AWS_ASN, CGW_ASN, inside()));
    s.connected(t0);
    let out = s.received_bytes(&unhex(BIRD_RECORDED), t0);
    assert!(!out.close, "{out:?}");
    assert_eq!(s.state(), State::Established);
    assert!(out.events.contains(&Event::Established));
    assert!(out.events.contains(&Event::RoutesChanged));
    let r = &s.received()[&net("192.168.0.0/16")];
    assert_eq!(r.asns, vec![CGW_ASN]);
    assert_eq!(r.next_hop, Ipv4Addr::new(169, 254, 10, 2));
    assert_eq!(s.received().len(), 1);
}
