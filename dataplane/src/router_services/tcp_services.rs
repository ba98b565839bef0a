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

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::snapshot::{EniIx, Snapshot, DNS_LINK_LOCAL, DNS_V6, METADATA_V4, METADATA_V6};
use crate::Timestamp;

/// Concurrent connections per instance.
const SOCKETS: usize = 8;
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
    /// Each socket, the port it listens on, and the bytes of its request so far.
    handles: Vec<(SocketHandle, u16, Vec<u8>)>,
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
        let handles = [HTTP, DNS]
            .into_iter()
            .flat_map(|port| std::iter::repeat_n(port, SOCKETS))
            .map(|port| (sockets.add(listening_socket(port)), port, Vec::new()))
            .collect();
        Endpoint {
            iface,
            wire,
            sockets,
            handles,
        }
    }
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

    /// Takes a packet instance `eni` sent to the metadata address; returns the packets to
    /// send back to it.
    pub fn handle(
        &mut self,
        snap: &Snapshot,
        eni: EniIx,
        packet: &[u8],
        now: Timestamp,
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
        ep.wire.rx.push_back(packet.to_vec());
        ep.iface.poll(t, &mut ep.wire, &mut ep.sockets);

        let mut requests = Vec::new();
        for (h, port, pending) in ep.handles.iter_mut() {
            let s = ep.sockets.get_mut::<tcp::Socket>(*h);
            if s.can_recv() {
                let mut chunk = [0u8; 2048];
                while let Ok(n) = s.recv_slice(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                }
                if complete(*port, pending) {
                    requests.push((*h, *port, std::mem::take(pending)));
                }
            }
        }
        for (h, port, request) in requests {
            let response = if port == DNS {
                dns_over_tcp(snap, eni, &request)
            } else {
                self.respond(snap, eni, zone, &request, now)
            };
            let ep = self.endpoints.get_mut(&zone).expect("just used");
            let s = ep.sockets.get_mut::<tcp::Socket>(h);
            let _ = s.send_slice(&response);
            s.close();
        }
        let ep = self.endpoints.get_mut(&zone).expect("just used");
        ep.iface.poll(t, &mut ep.wire, &mut ep.sockets);
        // Sockets whose connection ended listen again.
        for (h, port, pending) in ep.handles.iter_mut() {
            let s = ep.sockets.get_mut::<tcp::Socket>(*h);
            if !s.is_open() {
                pending.clear();
                *s = listening_socket(*port);
            }
        }
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
                match facts(snap, eni, path) {
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
    let Some(answer) = super::dns::respond(snap, snap.eni(eni).vpc, message, usize::from(u16::MAX))
    else {
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

/// A stable, locally administered MAC address for an ENI.
pub fn mac(snap: &Snapshot, eni: EniIx) -> String {
    let z = snap.eni(eni).zone;
    format!(
        "02:76:70:{:02x}:{:02x}:{:02x}",
        (z >> 16) as u8,
        (z >> 8) as u8,
        z as u8
    )
}

/// The metadata document at `path`, as AWS lays it out.
fn facts(snap: &Snapshot, eni_ix: EniIx, path: &str) -> Option<String> {
    let eni = snap.eni(eni_ix);
    let subnet = snap.subnet(eni.subnet);
    let vpc = snap.vpc(eni.vpc);
    let region = &*snap.topo.region;
    let mac = mac(snap, eni_ix);
    let path = path.trim_end_matches('/');
    let rest = path
        .strip_prefix("/latest/meta-data")
        .or_else(|| (path == "/latest" || path.is_empty()).then_some("@"))?;
    let primary = eni.primary_v4();
    let name = super::names::private_name(region, primary);
    let sgs: Vec<&str> = eni
        .security_groups
        .iter()
        .map(|g| &*snap.security_group(*g).id)
        .collect();
    let iface = format!("/network/interfaces/macs/{mac}");
    let v = match rest {
        "@" => "meta-data".to_string(),
        "" => "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-ipv4\nsecurity-groups"
            .to_string(),
        "/instance-id" => eni.id.to_string(),
        "/local-ipv4" => primary.to_string(),
        "/public-ipv4" => eni.public_v4?.to_string(),
        "/mac" => mac.clone(),
        "/hostname" | "/local-hostname" => name,
        "/placement" => "availability-zone\nregion".to_string(),
        "/placement/availability-zone" => subnet.availability_zone.to_string(),
        "/placement/region" => region.to_string(),
        "/security-groups" => sgs.join("\n"),
        "/network" => "interfaces/".to_string(),
        "/network/interfaces" => "macs/".to_string(),
        "/network/interfaces/macs" => format!("{mac}/"),
        p if p == iface => "local-ipv4s\nmac\nsecurity-group-ids\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks\nipv6s"
            .to_string(),
        p => match p.strip_prefix(&iface)? {
            "/local-ipv4s" => {
                let mut s = String::new();
                for a in &eni.private_v4 {
                    let _ = writeln!(s, "{a}");
                }
                s.trim_end().to_string()
            }
            "/mac" => mac.clone(),
            "/security-group-ids" => sgs.join("\n"),
            "/subnet-id" => subnet.id.to_string(),
            "/subnet-ipv4-cidr-block" => subnet.cidr_v4.to_string(),
            "/vpc-id" => vpc.id.to_string(),
            "/vpc-ipv4-cidr-block" => vpc.cidrs_v4.first()?.to_string(),
            "/vpc-ipv4-cidr-blocks" => vpc
                .cidrs_v4
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            "/ipv6s" => {
                let v6: Vec<String> = eni.ipv6.iter().map(|a| a.to_string()).collect();
                if v6.is_empty() {
                    return None;
                }
                v6.join("\n")
            }
            _ => return None,
        },
    };
    Some(v)
}
