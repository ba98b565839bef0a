//! One BGP-4 session of an AWS endpoint (RFC 4271): the VGW's side of a VPN tunnel or a
//! Direct Connect VIF (R-VPN-BGP, R-DX-PRIVATE). It is a state machine with no socket,
//! thread or clock of its own (STYLE.md, quinn-proto): it takes bytes and `now`, and
//! returns what to send, what happened and when to wake it. `speaker.rs` drives it over
//! TCP; the tests drive it with recorded and generated messages.
//!
//! Messages are encoded and decoded by `rustbgpd-wire` (a maintained codec: OPEN,
//! UPDATE, NOTIFICATION, KEEPALIVE with RFC 4271's error codes); the finite state
//! machine, the checks of RFC 4271 §6 that the codec leaves to the speaker, and AWS's
//! limits are ours.
//!
//! What AWS's endpoint does, and so this one:
//! - hold time 30 s, keepalive 10 s (AWS's downloadable configurations), 4-octet AS
//!   numbers (RFC 6793), IPv4 unicast only on a VGW (R-VPN-TUNNELS);
//! - at most 100 prefixes from a customer gateway (R-VPN-BGP): more are refused and
//!   counted, the session stays up;
//! - a route whose AS_PATH holds the endpoint's own ASN is a loop and is ignored
//!   (RFC 4271 §9.1.2), which is what keeps CloudHub sites of one ASN apart
//!   (R-VPN-CLOUDHUB).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ip_network::Ipv4Network;
use rustbgpd_wire::{
    decode_message, encode_message, peek_message_length, AsPath, AsPathSegment, Capability,
    Ipv4NlriEntry, Ipv4Prefix, Ipv4UnicastMode, Message, NotificationCode, NotificationMessage,
    OpenMessage, Origin, PathAttribute, UpdateMessage, MAX_MESSAGE_LEN,
};

/// AWS's hold time for VPN and VIF BGP sessions, in seconds; keepalives go every third.
pub const HOLD_TIME: u16 = 30;
/// R-VPN-BGP: prefixes a customer gateway may advertise to one VPN connection. Held per
/// session, that is per tunnel: a customer gateway advertises the same prefixes over both
/// tunnels, so the connection's count and each tunnel's are the same.
pub const MAX_PREFIXES: usize = 100;
/// RFC 4271 §8.2.2: the hold timer while waiting for the peer's OPEN ("a large value").
const OPEN_WAIT: Duration = Duration::from_secs(240);
/// The AS number an OPEN carries when the real one needs four octets (RFC 6793).
const AS_TRANS: u16 = 23456;
/// Prefixes per UPDATE we send: far below the 4096-byte message limit.
const PREFIXES_PER_UPDATE: usize = 400;

/// What one session is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The AWS side's ASN (the VGW's `amazon_side_asn`, 64512 by default).
    pub local_asn: u32,
    /// The ASN the peer must open with (the customer gateway's `bgp_asn`).
    pub peer_asn: u32,
    /// The BGP identifier we send: the AWS side's inside address.
    pub router_id: Ipv4Addr,
    /// The NEXT_HOP of what we advertise: the AWS side's inside address.
    pub next_hop: Ipv4Addr,
    pub hold_time: u16,
    pub max_prefixes: usize,
}

impl Config {
    /// A session as AWS sets one up: hold 30 s and the 100-prefix limit.
    pub fn aws(local_asn: u32, peer_asn: u32, inside: Ipv4Addr) -> Self {
        Config {
            local_asn,
            peer_asn,
            router_id: inside,
            next_hop: inside,
            hold_time: HOLD_TIME,
            max_prefixes: MAX_PREFIXES,
        }
    }
}

/// RFC 4271 §8.2.2's states from the point where a transport connection exists; Idle
/// stands for Idle, Connect and Active (the speaker waits for the peer to connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Idle,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// A route the peer advertised: what R-VPN-PRIORITY compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The AS numbers in order, the peer's first (AS_SETs flattened).
    pub asns: Vec<u32>,
    /// The AS_PATH length as RFC 4271 §9.1.2.2 counts it: an AS_SET counts one.
    pub as_path_len: usize,
    /// MULTI_EXIT_DISC; absent counts as 0, the lowest (RFC 4271 §9.1.2.2 c).
    pub med: Option<u32>,
    pub next_hop: Ipv4Addr,
}

/// Why a session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    /// No KEEPALIVE or UPDATE within the hold time (we sent NOTIFICATION 4).
    HoldTimerExpired,
    /// The peer sent a NOTIFICATION.
    NotificationReceived { code: u8, subcode: u8 },
    /// We sent a NOTIFICATION: the peer's message was malformed or unexpected.
    NotificationSent { code: u8, subcode: u8, why: String },
    /// The TCP connection closed or failed.
    TransportClosed,
    /// Stopped on purpose (a fault, or the lab stopping): NOTIFICATION Cease.
    AdministrativeShutdown,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::HoldTimerExpired => write!(f, "hold timer expired"),
            Down::NotificationReceived { code, subcode } => write!(
                f,
                "the peer sent NOTIFICATION {code}/{subcode} ({})",
                NotificationCode::from_u8(*code)
            ),
            Down::NotificationSent { code, subcode, why } => {
                write!(f, "sent NOTIFICATION {code}/{subcode}: {why}")
            }
            Down::TransportClosed => write!(f, "the TCP connection closed"),
            Down::AdministrativeShutdown => write!(f, "administratively shut down"),
        }
    }
}

/// What happened while handling an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Established,
    /// The routes received changed (learned, replaced or withdrawn).
    RoutesChanged,
    Down(Down),
}

/// What the driver must do after an input: send these bytes, then close if asked.
#[derive(Debug, Default)]
pub struct Output {
    pub send: Vec<u8>,
    pub events: Vec<Event>,
    pub close: bool,
}

/// One BGP session; see the module comment.
pub struct Session {
    cfg: Config,
    state: State,
    rx: BytesMut,
    /// The negotiated hold time; zero means no keepalives at all (RFC 4271 §4.2).
    hold: Duration,
    hold_deadline: Option<Instant>,
    keepalive_at: Option<Instant>,
    four_octet: bool,
    received: BTreeMap<Ipv4Network, Path>,
    refused: u64,
    /// What we want the peer to have: prefix → the AS path after our own ASN (empty for
    /// the VPC's own blocks, a site's path for CloudHub).
    wanted: BTreeMap<Ipv4Network, Vec<u32>>,
    /// What the peer has from us in this session.
    advertised: BTreeMap<Ipv4Network, Vec<u32>>,
    last_down: Option<Down>,
}

impl Session {
    pub fn new(cfg: Config) -> Self {
        Session {
            cfg,
            state: State::Idle,
            rx: BytesMut::new(),
            hold: Duration::ZERO,
            hold_deadline: None,
            keepalive_at: None,
            four_octet: false,
            received: BTreeMap::new(),
            refused: 0,
            wanted: BTreeMap::new(),
            advertised: BTreeMap::new(),
            last_down: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The routes the peer advertised, as accepted (R-VPN-STATUS counts them).
    pub fn received(&self) -> &BTreeMap<Ipv4Network, Path> {
        &self.received
    }

    /// Prefixes refused over the limit since the session was made (R-VPN-BGP).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Why the last session went down, if one did.
    pub fn last_down(&self) -> Option<&Down> {
        self.last_down.as_ref()
    }

    /// The prefixes we advertise, each with the AS path after our own ASN. Sent at once
    /// when the session is established, else when it becomes so.
    pub fn advertise(&mut self, wanted: BTreeMap<Ipv4Network, Vec<u32>>) -> Output {
        self.wanted = wanted;
        let mut out = Output::default();
        if self.state == State::Established {
            self.send_updates(&mut out);
        }
        out
    }

    /// A transport connection was made: we open (RFC 4271 §8.2.2, Connect → OpenSent).
    /// A connection while one is up replaces nothing: the driver refuses it.
    pub fn connected(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        self.reset_session();
        self.state = State::OpenSent;
        self.hold_deadline = Some(now + OPEN_WAIT);
        let my_as = u16::try_from(self.cfg.local_asn).unwrap_or(AS_TRANS);
        let open = OpenMessage {
            version: 4,
            my_as,
            hold_time: self.cfg.hold_time,
            bgp_identifier: self.cfg.router_id,
            capabilities: vec![
                Capability::MultiProtocol {
                    afi: rustbgpd_wire::Afi::Ipv4,
                    safi: rustbgpd_wire::Safi::Unicast,
                },
                Capability::FourOctetAs {
                    asn: self.cfg.local_asn,
                },
            ],
        };
        push(&mut out, &Message::Open(open));
        out
    }

    /// The transport connection closed or failed: every route learned on it goes.
    pub fn closed(&mut self) -> Output {
        let mut out = Output::default();
        if self.state != State::Idle {
            self.down(&mut out, Down::TransportClosed);
        }
        out
    }

    /// Ends the session on purpose: NOTIFICATION Cease, Administrative Shutdown (RFC 4486).
    pub fn shutdown(&mut self) -> Output {
        let mut out = Output::default();
        if self.state != State::Idle {
            notify(&mut out, NotificationCode::Cease, 2);
            self.down(&mut out, Down::AdministrativeShutdown);
        }
        out
    }

    /// Bytes from the peer; whole messages are handled, a partial one waits for more.
    pub fn received_bytes(&mut self, bytes: &[u8], now: Instant) -> Output {
        let mut out = Output::default();
        if self.state == State::Idle {
            return out;
        }
        self.rx.extend_from_slice(bytes);
        while !out.close {
            let len = match peek_message_length(&self.rx, MAX_MESSAGE_LEN) {
                Ok(Some(len)) => usize::from(len),
                Ok(None) => break,
                Err(e) => {
                    self.malformed(&mut out, &e);
                    break;
                }
            };
            if self.rx.len() < len {
                break;
            }
            let mut one: Bytes = self.rx.split_to(len).freeze();
            match decode_message(&mut one, MAX_MESSAGE_LEN) {
                Ok(msg) => self.handle(msg, now, &mut out),
                Err(e) => self.malformed(&mut out, &e),
            }
        }
        out
    }

    /// Timers: the hold timer and the keepalive timer.
    pub fn tick(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        if self.hold_deadline.is_some_and(|d| now >= d) {
            notify(&mut out, NotificationCode::HoldTimerExpired, 0);
            self.down(&mut out, Down::HoldTimerExpired);
            return out;
        }
        if let Some(at) = self.keepalive_at {
            if now >= at {
                push(&mut out, &Message::Keepalive);
                self.keepalive_at = Some(now + self.hold / 3);
            }
        }
        out
    }

    /// When `tick` has something to do next.
    pub fn next_wake(&self) -> Option<Instant> {
        match (self.hold_deadline, self.keepalive_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle(&mut self, msg: Message, now: Instant, out: &mut Output) {
        match (self.state, msg) {
            (_, Message::Notification(n)) => {
                let (code, subcode) = (n.code.as_u8(), n.subcode);
                self.down(out, Down::NotificationReceived { code, subcode });
            }
            (State::OpenSent, Message::Open(open)) => self.open_received(&open, now, out),
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.restart_hold(now);
                out.events.push(Event::Established);
                self.send_updates(out);
            }
            (State::Established, Message::Keepalive) => self.restart_hold(now),
            (State::Established, Message::Update(update)) => {
                self.restart_hold(now);
                self.update_received(&update, out);
            }
            // We advertise no route-refresh capability; a peer that asks anyway gets
            // everything again (RFC 2918 §4), which is harmless.
            (State::Established, Message::RouteRefresh(_)) => {
                self.advertised.clear();
                self.send_updates(out);
            }
            (state, msg) => {
                // RFC 6608: Finite State Machine Error, with the state it came in.
                let subcode = match state {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                let why = format!("unexpected {} in {}", kind(&msg), state.name());
                self.fail(out, NotificationCode::FsmError, subcode, why);
            }
        }
    }

    /// RFC 4271 §6.2: the checks the codec leaves to the speaker.
    fn open_received(&mut self, open: &OpenMessage, now: Instant, out: &mut Output) {
        let peer_asn = open.four_byte_as();
        if peer_asn != self.cfg.peer_asn {
            let why = format!(
                "the peer opened as AS {peer_asn}; this tunnel's customer gateway is AS {}",
                self.cfg.peer_asn
            );
            return self.fail(out, NotificationCode::OpenMessage, 2, why);
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            let why = format!("hold time {} s (0 or at least 3)", open.hold_time);
            return self.fail(out, NotificationCode::OpenMessage, 6, why);
        }
        if open.bgp_identifier.is_unspecified() || open.bgp_identifier == self.cfg.router_id {
            let why = format!("BGP identifier {}", open.bgp_identifier);
            return self.fail(out, NotificationCode::OpenMessage, 3, why);
        }
        self.four_octet = open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs { .. }));
        self.hold = Duration::from_secs(u64::from(self.cfg.hold_time.min(open.hold_time)));
        self.state = State::OpenConfirm;
        push(out, &Message::Keepalive);
        if self.hold.is_zero() {
            self.hold_deadline = None;
            self.keepalive_at = None;
        } else {
            self.hold_deadline = Some(now + self.hold);
            self.keepalive_at = Some(now + self.hold / 3);
        }
    }

    fn update_received(&mut self, update: &UpdateMessage, out: &mut Output) {
        let parsed = match update.parse(self.four_octet, false, &[]) {
            Ok(p) => p,
            Err(e) => return self.malformed(out, &e),
        };
        let mut changed = false;
        for w in &parsed.withdrawn {
            changed |= self.received.remove(&network(w.prefix)).is_some();
        }
        if !parsed.announced.is_empty() {
            let Some(path) = self.path_of(&parsed.attributes, out) else {
                return;
            };
            // A loop: our own ASN in the path (RFC 4271 §9.1.2); the route is ignored,
            // and so is any earlier one for the prefix (it is replaced by this one).
            let looped = path.asns.contains(&self.cfg.local_asn);
            for a in &parsed.announced {
                let prefix = network(a.prefix);
                if looped {
                    changed |= self.received.remove(&prefix).is_some();
                } else if self.received.contains_key(&prefix)
                    || self.received.len() < self.cfg.max_prefixes
                {
                    changed |= self.received.insert(prefix, path.clone()).as_ref() != Some(&path);
                } else {
                    self.refused += 1;
                }
            }
        }
        if changed {
            out.events.push(Event::RoutesChanged);
        }
    }

    /// The attributes RFC 4271 §5 makes mandatory for a route, and the eBGP AS_PATH check
    /// (§6.3: the leftmost AS must be the peer's).
    fn path_of(&mut self, attrs: &[PathAttribute], out: &mut Output) -> Option<Path> {
        let mut origin = false;
        let mut as_path = None;
        let mut next_hop = None;
        let mut med = None;
        for a in attrs {
            match a {
                PathAttribute::Origin(_) => origin = true,
                PathAttribute::AsPath(p) => as_path = Some(p),
                PathAttribute::NextHop(h) => next_hop = Some(*h),
                PathAttribute::Med(m) => med = Some(*m),
                _ => {}
            }
        }
        let missing = [
            (origin, 1u8),
            (as_path.is_some(), 2),
            (next_hop.is_some(), 3),
        ]
        .into_iter()
        .find(|(present, _)| !present)
        .map(|(_, code)| code);
        if let Some(code) = missing {
            // Missing Well-known Attribute; its data is the missing type code.
            let n = NotificationMessage::new(
                NotificationCode::UpdateMessage,
                3,
                Bytes::copy_from_slice(&[code]),
            );
            push(out, &Message::Notification(n));
            let why = format!("UPDATE without well-known attribute {code}");
            self.down(
                out,
                Down::NotificationSent {
                    code: 3,
                    subcode: 3,
                    why,
                },
            );
            return None;
        }
        let (Some(as_path), Some(next_hop)) = (as_path, next_hop) else {
            return None;
        };
        let mut asns = Vec::new();
        let mut as_path_len = 0;
        for seg in &as_path.segments {
            match seg {
                AsPathSegment::AsSequence(s) => {
                    asns.extend_from_slice(s);
                    as_path_len += s.len();
                }
                AsPathSegment::AsSet(s) => {
                    asns.extend_from_slice(s);
                    as_path_len += usize::from(!s.is_empty());
                }
            }
        }
        let leftmost = match as_path.segments.first() {
            Some(AsPathSegment::AsSequence(s)) => s.first().copied(),
            _ => None,
        };
        if leftmost != Some(self.cfg.peer_asn) {
            let why = format!(
                "AS_PATH {asns:?} does not start with the peer's AS {}",
                self.cfg.peer_asn
            );
            self.fail(out, NotificationCode::UpdateMessage, 11, why);
            return None;
        }
        Some(Path {
            asns,
            as_path_len,
            med,
            next_hop,
        })
    }

    /// Withdraws what is no longer wanted, then announces what is new or changed, one
    /// UPDATE per AS path.
    fn send_updates(&mut self, out: &mut Output) {
        let gone: Vec<Ipv4NlriEntry> = self
            .advertised
            .keys()
            .filter(|p| !self.wanted.contains_key(p))
            .map(|p| entry(*p))
            .collect();
        for chunk in gone.chunks(PREFIXES_PER_UPDATE) {
            let u = UpdateMessage::build(&[], chunk, &[], true, false, Ipv4UnicastMode::Body);
            push(out, &Message::Update(u));
        }
        let mut by_path: BTreeMap<&Vec<u32>, Vec<Ipv4NlriEntry>> = BTreeMap::new();
        for (p, tail) in &self.wanted {
            if self.advertised.get(p) != Some(tail) {
                by_path.entry(tail).or_default().push(entry(*p));
            }
        }
        for (tail, prefixes) in by_path {
            // A peer without 4-octet AS numbers gets AS_TRANS for the ones that do not
            // fit (RFC 6793 §4.2.2; vpcd sends no AS4_PATH).
            let asns: Vec<u32> = std::iter::once(self.cfg.local_asn)
                .chain(tail.iter().copied())
                .map(|a| if self.four_octet { a } else { two_octet(a) })
                .collect();
            let attrs = [
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath {
                    segments: vec![AsPathSegment::AsSequence(asns)],
                }),
                PathAttribute::NextHop(self.cfg.next_hop),
            ];
            for chunk in prefixes.chunks(PREFIXES_PER_UPDATE) {
                let u = UpdateMessage::build(
                    chunk,
                    &[],
                    &attrs,
                    self.four_octet,
                    false,
                    Ipv4UnicastMode::Body,
                );
                push(out, &Message::Update(u));
            }
        }
        self.advertised = self.wanted.clone();
    }

    fn malformed(&mut self, out: &mut Output, e: &rustbgpd_wire::DecodeError) {
        let (code, subcode, data) = e.to_notification();
        push(
            out,
            &Message::Notification(NotificationMessage::new(code, subcode, data)),
        );
        let why = e.to_string();
        let code = code.as_u8();
        self.down(out, Down::NotificationSent { code, subcode, why });
    }

    fn fail(&mut self, out: &mut Output, code: NotificationCode, subcode: u8, why: String) {
        notify(out, code, subcode);
        let code = code.as_u8();
        self.down(out, Down::NotificationSent { code, subcode, why });
    }

    fn restart_hold(&mut self, now: Instant) {
        if !self.hold.is_zero() {
            self.hold_deadline = Some(now + self.hold);
        }
    }

    fn down(&mut self, out: &mut Output, why: Down) {
        let had_routes = !self.received.is_empty();
        self.reset_session();
        if had_routes {
            out.events.push(Event::RoutesChanged);
        }
        out.events.push(Event::Down(why.clone()));
        self.last_down = Some(why);
        out.close = true;
    }

    fn reset_session(&mut self) {
        self.state = State::Idle;
        self.rx.clear();
        self.hold_deadline = None;
        self.keepalive_at = None;
        self.received.clear();
        self.advertised.clear();
        self.four_octet = false;
    }
}

fn push(out: &mut Output, msg: &Message) {
    // Our own messages are built from checked values within the size limit
    // (PREFIXES_PER_UPDATE); an encoding failure would be a bug here, not peer input.
    let bytes = encode_message(msg).expect("a message the session built encodes");
    out.send.extend_from_slice(&bytes);
}

fn notify(out: &mut Output, code: NotificationCode, subcode: u8) {
    let n = NotificationMessage::new(code, subcode, Bytes::new());
    push(out, &Message::Notification(n));
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh(_) => "ROUTE-REFRESH",
        _ => "message",
    }
}

fn two_octet(asn: u32) -> u32 {
    if asn > u32::from(u16::MAX) {
        u32::from(AS_TRANS)
    } else {
        asn
    }
}

fn network(p: Ipv4Prefix) -> Ipv4Network {
    // Ipv4Prefix masks host bits and keeps len <= 32, which is all `new` asks.
    Ipv4Network::new(p.addr, p.len).expect("a decoded prefix is a valid network")
}

fn entry(p: Ipv4Network) -> Ipv4NlriEntry {
    Ipv4NlriEntry {
        path_id: 0,
        prefix: Ipv4Prefix::new(p.network_address(), p.netmask()),
    }
}
