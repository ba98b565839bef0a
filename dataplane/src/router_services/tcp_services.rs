//! The router's TCP services, served by smoltcp as the router's own small TCP/IP stack, one
//! stack per instance, so an instance only ever talks to its own (and overlapping addresses
//! of two VPCs cannot meet):
//!
//! - instance metadata at 169.254.169.254 / fd00:ec2::254 port 80 (R-ADDR-IMDS);
//! - the Amazon DNS resolver over TCP at the VPC's base+2, 169.254.169.253 and
//!   fd00:ec2::253 port 53 (two-byte length, then the message; answered like UDP queries,
//!   without the 512-byte limit), for answers too long for UDP.
//!
//! Instance metadata:
//!
//! IMDSv2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1-21600)
//! returns a token; `GET` with `X-aws-ec2-metadata-token` returns the facts. IMDSv1 (GET
//! without a token) is refused unless the instance's `http_tokens` is `optional`. Answers
//! leave with hop limit 1, as AWS's default for tokens, so nothing beyond the instance
//! (a container behind its NAT) can use them. Requests are parsed with httparse.
//!
//! Not on the forwarding path: the workers share this service behind a mutex and reach
//! it only for packets addressed to the metadata address.
//!
//! Slots: each port has [`SOCKETS`] listening sockets per instance, and nothing may hold
//! one for good (issue 22). There is no timer: [`TcpServices::handle`] runs only when a
//! packet arrives, so each call first aborts the connections that overstayed
//! ([`HALF_OPEN_SECS`], [`IDLE_SECS`], [`LIFETIME_SECS`]) and their sockets listen again;
//! a SYN then finds a slot if any was stale. One remote address holds at most
//! [`PER_SOURCE`] of a port's slots, and a client that closes mid-request is answered and
//! closed at once. What is refused or cut off is counted in [`ServiceCounters`].

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::ServiceCounters;
use crate::packet::{tcp_flags, Packet, Transport};
use crate::snapshot::{EniIx, Snapshot, DNS_LINK_LOCAL, DNS_V6, METADATA_V4, METADATA_V6};
use crate::Timestamp;

/// Concurrent connections per port (metadata, DNS) and instance. A request is one small
/// HTTP head or one DNS message, answered at once, so a slot is busy for a round trip or
/// two: eight serve many more clients than one instance runs.
pub const SOCKETS: usize = 8;
/// Slots of one port that one remote address may hold at once: half, so that whatever one
/// address does (a client that never finishes, or SYNs spoofed from one address of the
/// subnet, which reach the router before any check, R-ADDR-EXEMPT) the other half stays
/// free for every other address, the instance's own among them. AWS bounds these services
/// by rate only (1024 packets per second per ENI to the link-local services, as
/// [`super::LINK_LOCAL_PACKETS_PER_SECOND`]); a few SYNs every few seconds, far below that rate,
/// would still take every slot, hence a bound on slots.
pub const PER_SOURCE: usize = SOCKETS / 2;
/// Seconds a connection may stay half-open (SYN-RECEIVED). A client on the instance's own
/// link answers the SYN-ACK in well under a millisecond, and 5 s still leaves it the two
/// SYN retries Linux makes (after 1 s and 3 s) if an answer was lost; a spoofed source
/// never answers, so its SYNs hold their slots this long at most.
pub const HALF_OPEN_SECS: u64 = 5;
/// Seconds a connection may go without progress (request bytes, or a step of the TCP state
/// machine such as the ACK of the answer or the client's FIN). The AWS SDKs and CLI give up
/// on the metadata service after 1 s (`metadata_service_timeout`), so ten times that is
/// only ever a client that stalled or vanished.
pub const IDLE_SECS: u64 = 10;
/// Seconds any connection may live, progress or not: a client trickling its request a byte
/// at a time (each within [`IDLE_SECS`]) holds its slot no longer than this.
pub const LIFETIME_SECS: u64 = 30;
/// Bytes of one request (headers included) the service reads; larger ones get 400.
const MAX_REQUEST: usize = 8192;
/// Tokens alive at once, over all instances (oldest dropped beyond).
const MAX_TOKENS: usize = 4096;

/// Packets in and out of one instance's stack.
#[derive(Default)]
struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 9001;
        c
    }
}

/// One instance's metadata endpoint.
struct Endpoint {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    slots: Vec<Slot>,
}

/// One listening socket and the connection it holds, if any.
struct Slot {
    handle: SocketHandle,
    /// The port it listens on.
    port: u16,
    /// The bytes of the request so far.
    pending: Vec<u8>,
    /// When its connection left LISTEN; `None` while listening.
    opened: Option<Timestamp>,
    /// When its connection last made progress (bytes in, or a change of state).
    progress: Timestamp,
    /// The state it was last seen in.
    state: tcp::State,
}

impl Slot {
    fn new(handle: SocketHandle, port: u16) -> Slot {
        Slot {
            handle,
            port,
            pending: Vec::new(),
            opened: None,
            progress: Timestamp(0),
            state: tcp::State::Listen,
        }
    }

    /// Whether its connection overstayed: half-open, idle or alive too long.
    fn is_stale(&self, now: Timestamp) -> bool {
        let Some(opened) = self.opened else {
            return false;
        };
        let over = |since: Timestamp, secs: u64| {
            now.0.saturating_sub(since.0) >= Timestamp::from_secs(secs).0
        };
        (self.state == tcp::State::SynReceived && over(opened, HALF_OPEN_SECS))
            || over(self.progress, IDLE_SECS)
            || over(opened, LIFETIME_SECS)
    }
}

/// Whether a SYN may reach the stack.
enum Admission {
    Admit,
    /// Its source already holds [`PER_SOURCE`] of the port's slots.
    PerSource,
    /// No slot of the port is listening.
    Busy,
}

/// The metadata port, and DNS.
const HTTP: u16 = 80;
const DNS: u16 = 53;

fn listening_socket(port: u16) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 16384]),
        tcp::SocketBuffer::new(vec![0; 16384]),
    );
    // Metadata answers go no further than the instance (AWS's hop limit 1); DNS answers
    // travel like any.
    if port == HTTP {
        s.set_hop_limit(Some(1));
    }
    let _ = s.listen(port);
    s
}

/// A complete request in `pending`: an HTTP head, or a length-prefixed DNS message.
fn complete(port: u16, pending: &[u8]) -> bool {
    match port {
        DNS => {
            pending.len() >= 2
                && pending.len() >= 2 + usize::from(u16::from_be_bytes([pending[0], pending[1]]))
        }
        _ => pending.len() > MAX_REQUEST || pending.windows(4).any(|w| w == b"\r\n\r\n"),
    }
}

impl Endpoint {
    fn new(now: Instant, seed: u64, dns: Option<Ipv4Addr>) -> Endpoint {
        let mut wire = Wire::default();
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut wire, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::from(METADATA_V4), 32));
            let _ = a.push(IpCidr::new(IpAddress::from(METADATA_V6), 128));
            if let Some(d) = dns {
                let _ = a.push(IpCidr::new(IpAddress::from(d), 32));
                let _ = a.push(IpCidr::new(IpAddress::from(DNS_LINK_LOCAL), 32));
                let _ = a.push(IpCidr::new(IpAddress::from(DNS_V6), 128));
            }
        });
        // Replies go back to the instance, whatever its address: the device is its port.
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(169, 254, 169, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 1));
        let mut sockets = SocketSet::new(Vec::new());
        let slots = [HTTP, DNS]
            .into_iter()
            .flat_map(|port| std::iter::repeat_n(port, SOCKETS))
            .map(|port| Slot::new(sockets.add(listening_socket(port)), port))
            .collect();
        Endpoint {
            iface,
            wire,
            sockets,
            slots,
        }
    }

    /// Aborts the connections that overstayed (each sends the client an RST) and makes
    /// their sockets listen again. Returns how many.
    fn sweep(&mut self, now: Timestamp) -> u64 {
        let mut aborted = 0;
        for slot in &self.slots {
            if slot.is_stale(now) {
                self.sockets.get_mut::<tcp::Socket>(slot.handle).abort();
                aborted += 1;
            }
        }
        if aborted > 0 {
            self.iface
                .poll(instant(now), &mut self.wire, &mut self.sockets);
            self.relisten();
        }
        aborted
    }

    /// Whether a SYN from `src`:`src_port` to `port` may reach the stack. A SYN of a
    /// connection the stack already holds (a retry) always may.
    fn admits(&self, src: IpAddress, src_port: u16, port: u16) -> Admission {
        let mut held = 0;
        let mut listening = false;
        for slot in self.slots.iter().filter(|s| s.port == port) {
            let s = self.sockets.get::<tcp::Socket>(slot.handle);
            listening |= s.is_listening();
            match s.remote_endpoint() {
                Some(r) if r.addr == src && r.port == src_port => return Admission::Admit,
                Some(r) if r.addr == src => held += 1,
                _ => {}
            }
        }
        if held >= PER_SOURCE {
            Admission::PerSource
        } else if !listening {
            Admission::Busy
        } else {
            Admission::Admit
        }
    }

    /// Sockets whose connection ended listen again.
    fn relisten(&mut self) {
        for slot in &mut self.slots {
            let s = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            if !s.is_open() {
                *s = listening_socket(slot.port);
                slot.pending.clear();
                slot.opened = None;
                slot.state = tcp::State::Listen;
            }
        }
    }

    /// Notes when each connection opened and when it last changed state.
    fn note_progress(&mut self, now: Timestamp) {
        for slot in &mut self.slots {
            let state = self.sockets.get::<tcp::Socket>(slot.handle).state();
            if state == tcp::State::Listen {
                slot.opened = None;
            } else if slot.opened.is_none() {
                slot.opened = Some(now);
                slot.progress = now;
            } else if state != slot.state {
                slot.progress = now;
            }
            slot.state = state;
        }
    }
}

/// What a connection's bytes so far ask for.
enum Request {
    /// A whole request, to answer.
    Complete(Vec<u8>),
    /// The client closed before finishing it: an HTTP 400, nothing for DNS, and close.
    Abandoned,
}

/// The metadata service of every instance of the lab.
#[derive(Default)]
pub struct TcpServices {
    /// By the ENI's flow zone (stable across applies).
    endpoints: HashMap<u32, Endpoint>,
    /// Token → (ENI zone, expiry in seconds).
    tokens: HashMap<String, (u32, u64)>,
    counter: u64,
}

fn instant(now: Timestamp) -> Instant {
    Instant::from_micros((now.0 / 1000) as i64)
}

impl TcpServices {
    pub fn new() -> Self {
        TcpServices::default()
    }

    /// Takes a packet (`pkt`, parsed from `packet`) instance `eni` sent to one of the
    /// services; returns the packets to send back to it. What is refused or times out is
    /// counted in `counters`.
    pub fn handle(
        &mut self,
        snap: &Snapshot,
        eni: EniIx,
        pkt: &Packet,
        packet: &[u8],
        now: Timestamp,
        counters: &mut ServiceCounters,
    ) -> Vec<Vec<u8>> {
        let zone = snap.eni(eni).zone;
        self.counter += 1;
        let seed = self.counter ^ now.0;
        let t = instant(now);
        let vpc = snap.vpc(snap.eni(eni).vpc);
        let dns = vpc.enable_dns_support.then(|| vpc.dns_v4()).flatten();
        let ep = self
            .endpoints
            .entry(zone)
            .or_insert_with(|| Endpoint::new(t, seed, dns));
        // No timer runs between packets: the stale connections go before this one is seen.
        counters.tcp_timed_out += ep.sweep(now);
        if let Transport::Tcp {
            src_port,
            dst_port,
            flags,
        } = pkt.transport
        {
            if flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN {
                // A refused SYN is dropped, not reset: the client retries (after 1 s, 3 s),
                // by when a stale slot has been swept.
                match ep.admits(IpAddress::from(pkt.src), src_port, dst_port) {
                    Admission::Admit => {}
                    Admission::PerSource => {
                        counters.tcp_refused_per_source += 1;
                        return std::mem::take(&mut ep.wire.tx);
                    }
                    Admission::Busy => {
                        counters.tcp_refused_busy += 1;
                        return std::mem::take(&mut ep.wire.tx);
                    }
                }
            }
        }
        ep.wire.rx.push_back(packet.to_vec());
        ep.iface.poll(t, &mut ep.wire, &mut ep.sockets);

        let mut requests = Vec::new();
        for slot in ep.slots.iter_mut() {
            let s = ep.sockets.get_mut::<tcp::Socket>(slot.handle);
            if s.can_recv() {
                let mut chunk = [0u8; 2048];
                while let Ok(n) = s.recv_slice(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    slot.pending.extend_from_slice(&chunk[..n]);
                    slot.progress = now;
                }
                if complete(slot.port, &slot.pending) {
                    let request = Request::Complete(std::mem::take(&mut slot.pending));
                    requests.push((slot.handle, slot.port, request));
                    continue;
                }
            }
            // The client closed (FIN) mid-request: no more bytes can come.
            if s.state() == tcp::State::CloseWait {
                slot.pending.clear();
                requests.push((slot.handle, slot.port, Request::Abandoned));
            }
        }
        for (h, port, request) in requests {
            let response = match (request, port) {
                (Request::Complete(r), DNS) => dns_over_tcp(snap, eni, &r),
                (Request::Complete(r), _) => self.respond(snap, eni, zone, &r, now),
                (Request::Abandoned, DNS) => Vec::new(),
                (Request::Abandoned, _) => http(400, "Bad Request", ""),
            };
            let ep = self.endpoints.get_mut(&zone).expect("just used");
            let s = ep.sockets.get_mut::<tcp::Socket>(h);
            let _ = s.send_slice(&response);
            s.close();
        }
        let ep = self.endpoints.get_mut(&zone).expect("just used");
        ep.iface.poll(t, &mut ep.wire, &mut ep.sockets);
        ep.relisten();
        ep.note_progress(now);
        std::mem::take(&mut ep.wire.tx)
    }

    fn token(&mut self, zone: u32, ttl: u64, now: Timestamp) -> String {
        if self.tokens.len() >= MAX_TOKENS {
            let now_s = now.secs();
            self.tokens.retain(|_, (_, exp)| *exp > now_s);
            if self.tokens.len() >= MAX_TOKENS {
                self.tokens.clear();
            }
        }
        self.counter += 1;
        let h = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        let token = format!(
            "{:016x}{:016x}",
            h.hash_one((self.counter, now.0)),
            h.hash_one((zone, self.counter))
        );
        self.tokens.insert(token.clone(), (zone, now.secs() + ttl));
        token
    }

    fn respond(
        &mut self,
        snap: &Snapshot,
        eni: EniIx,
        zone: u32,
        raw: &[u8],
        now: Timestamp,
    ) -> Vec<u8> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(raw);
        if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
            return http(400, "Bad Request", "");
        }
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        let path = req.path.unwrap_or("/");
        match (req.method.unwrap_or(""), path) {
            ("PUT", "/latest/api/token") => {
                match header("X-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    Some(ttl) if (1..=21600).contains(&ttl) => {
                        let t = self.token(zone, ttl, now);
                        http(200, "OK", &t)
                    }
                    _ => http(400, "Bad Request", ""),
                }
            }
            ("GET", _) | ("HEAD", _) => {
                // A token, when given, must be this instance's and alive, even where IMDSv1
                // is allowed (as AWS answers an invalid token with 401).
                let allowed = match header("X-aws-ec2-metadata-token") {
                    Some(t) => self
                        .tokens
                        .get(t)
                        .is_some_and(|(z, exp)| *z == zone && *exp >= now.secs()),
                    None => snap.eni(eni).imds_v1,
                };
                if !allowed {
                    return http(401, "Unauthorized", "");
                }
                match super::metadata::facts(snap, eni, path) {
                    Some(body) => http(200, "OK", &body),
                    None => http(404, "Not Found", ""),
                }
            }
            _ => http(405, "Method Not Allowed", ""),
        }
    }
}

/// One DNS query over TCP: the answer, length-prefixed (empty when the query is not DNS).
fn dns_over_tcp(snap: &Snapshot, eni: EniIx, request: &[u8]) -> Vec<u8> {
    let Some(message) = request.get(2..) else {
        return Vec::new();
    };
    let Some(answer) = super::dns::respond_to(snap, eni, message, usize::from(u16::MAX)) else {
        return Vec::new();
    };
    let mut out = (answer.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&answer);
    out
}

fn http(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nServer: EC2ws\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
