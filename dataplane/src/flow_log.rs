//! VPC flow logs (semantics.md §12): per-worker aggregation of what each covered ENI saw,
//! formatted into AWS's record lines when a window closes.
//!
//! On the packet path a covered ENI's packet updates one aggregate in this worker's map
//! (R-FL-KEY: ENI, direction, 5-tuple, action); nothing is shared and nothing locks. The
//! map is bounded, and takes its full size at the first record, so that the packet path
//! never grows it: a flow that finds it full is not recorded, and its ENI's next window
//! says `SKIPDATA` (R-FL-STATUS) rather than losing records silently. Every 100 ms the
//! worker closes the windows that are over and formats their lines (off the packet path);
//! the lines go to a writer thread through a bounded channel, so a slow disk never blocks a
//! worker (R-FL-WRITE). A line the channel refuses is lost, so its ENI's next window says
//! `SKIPDATA` too. Router traffic never gets here (R-FL-EXEMPT).

use std::fmt::Write as _;
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::observer::Direction;
use crate::packet::{Packet, Transport};
use crate::snapshot::{EniIx, Snapshot, SubnetIx, VpcIx};

/// What a flow log covers (R-FL-SCOPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Vpc(VpcIx),
    Subnet(SubnetIx),
    Eni(EniIx),
}

/// Which records a flow log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficType {
    Accept,
    Reject,
    All,
}

/// Every field of AWS's versions 2 to 5, in AWS's names (R-FL-FIELDS): the default
/// format's first (R-FL-DEFAULT), then the rest. A field vpcd has no value for is `-`.
pub const FIELDS: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
];

/// The default (version 2) format: the first 14 fields.
pub const DEFAULT_FORMAT: &[&str] = FIELDS.split_at(14).0;

/// The flow-log version that introduced `field`: [`FIELDS`] lists versions 2, 3, 4 and 5
/// in turn (AWS, "Flow log records", the "Version" column of the available fields).
pub fn field_version(field: &str) -> u8 {
    match FIELDS.iter().position(|f| *f == field) {
        Some(0..=13) | None => 2,
        Some(14..=20) => 3,
        Some(21..=24) => 4,
        Some(_) => 5,
    }
}

/// A record's `version`: "the highest version among the fields specified" (AWS, the
/// `version` field), so a default-format record says 2 and one with `tcp-flags` says 3.
pub fn format_version(format: &[Box<str>]) -> u8 {
    format.iter().map(|f| field_version(f)).max().unwrap_or(2)
}

/// The bits of a packet's TCP flags a record ORs together: FIN 1, SYN 2, RST 4, and
/// SYN-ACK 18 ("ACK is reported only when it is accompanied with SYN", AWS, `tcp-flags`):
/// a client's flow reads 3, a server's 19.
#[inline]
pub fn record_flags(flags: u8) -> u8 {
    use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};
    let syn_ack = if flags & (SYN | ACK) == SYN | ACK {
        ACK
    } else {
        0
    };
    (flags & (FIN | SYN | RST)) | syn_ack
}

/// A flow log of the lab.
#[derive(Clone, Debug)]
pub struct FlowLog {
    pub id: Box<str>,
    pub scope: Scope,
    pub traffic_type: TrafficType,
    /// `max_aggregation_interval`, seconds.
    pub interval: u32,
    /// Field names in output order.
    pub format: Vec<Box<str>>,
    /// The file the lines go to.
    pub destination: Box<str>,
}

/// One aggregate's key (R-FL-KEY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    eni: EniIx,
    egress: bool,
    accept: bool,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug)]
struct Aggregate {
    packets: u64,
    bytes: u64,
    first: u64,
    last: u64,
    tcp_flags: u8,
}

/// Aggregates per worker, at most this many at once.
pub const MAX_AGGREGATES: usize = 1 << 16;

/// One worker's flow-log state.
#[derive(Default)]
pub struct FlowLogAccumulator {
    /// Empty (no memory) until the first record, then sized for `MAX_AGGREGATES`.
    aggregates: FxHashMap<Key, Aggregate>,
    /// ENIs whose current window lost a flow (the map was full) or a line (the writer
    /// fell behind): `SKIPDATA`.
    skipped: FxHashSet<EniIx>,
    /// Records lost, for the counters (`vpcd stats`, metrics): each packet that found the
    /// aggregate map full, and each line the writer's channel refused. Each loss also makes
    /// its ENI's next window `SKIPDATA`.
    pub lost: u64,
}

/// A finished line and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub destination: Box<str>,
    pub text: String,
    /// The flow log it belongs to, the ENI it is about (its stable zone) and the start of
    /// its window: what [`NoData`] needs to know which windows had traffic.
    pub log: Box<str>,
    pub zone: u32,
    pub start: u64,
}

impl FlowLogAccumulator {
    /// Records `pkt` (`len` bytes) crossing covered ENI `eni` in `dir`, allowed or not
    /// (R-FL-ACTION).
    #[inline]
    pub fn record(
        &mut self,
        eni: EniIx,
        dir: Direction,
        pkt: &Packet,
        accept: bool,
        now_secs: u64,
    ) {
        let (sport, dport, flags) = match pkt.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
            } => (src_port, dst_port, record_flags(flags)),
            Transport::Udp { src_port, dst_port } => (src_port, dst_port, 0),
            _ => (0, 0, 0),
        };
        let key = Key {
            eni,
            egress: dir == Direction::Egress,
            accept,
            src: pkt.src,
            dst: pkt.dst,
            sport,
            dport,
            proto: pkt.proto,
        };
        if let Some(a) = self.aggregates.get_mut(&key) {
            a.packets += u64::from(pkt.segs);
            a.bytes += u64::from(pkt.wire_len);
            a.last = now_secs;
            a.tcp_flags |= flags;
            return;
        }
        if self.aggregates.len() >= MAX_AGGREGATES {
            self.skipped.insert(eni);
            self.lost += 1;
            return;
        }
        if self.aggregates.capacity() < MAX_AGGREGATES {
            // Once per worker: from here on, inserting never allocates.
            self.aggregates.reserve(MAX_AGGREGATES);
            self.skipped.reserve(1024);
        }
        self.aggregates.insert(
            key,
            Aggregate {
                packets: u64::from(pkt.segs),
                bytes: u64::from(pkt.wire_len),
                first: now_secs,
                last: now_secs,
                tcp_flags: flags,
            },
        );
    }

    /// Closes the windows that are over at `now_secs` (all of them with `all`, at
    /// shutdown) and formats their lines for every flow log that wants them. `out` says
    /// whether it took a line; one it refused makes its ENI's next window `SKIPDATA`.
    pub fn flush(
        &mut self,
        snap: &Snapshot,
        now_secs: u64,
        all: bool,
        out: &mut dyn FnMut(Line) -> bool,
    ) {
        let mut done = Vec::new();
        for (k, a) in &self.aggregates {
            let Some(eni) = snap.topo.enis.get(k.eni.ix()) else {
                done.push(*k);
                continue;
            };
            let interval = u64::from(eni.flow_log_interval.max(1));
            if all || now_secs >= a.first + interval {
                done.push(*k);
            }
        }
        for k in done {
            let Some(a) = self.aggregates.remove(&k) else {
                continue;
            };
            if snap.topo.enis.get(k.eni.ix()).is_none() {
                continue;
            }
            for log in snap.flow_logs_of(k.eni) {
                let wanted = match log.traffic_type {
                    TrafficType::All => true,
                    TrafficType::Accept => k.accept,
                    TrafficType::Reject => !k.accept,
                };
                let line = || Line {
                    destination: log.destination.clone(),
                    text: format_record(snap, log, &k, &a, "OK"),
                    log: log.id.clone(),
                    zone: snap.eni(k.eni).zone,
                    start: a.first,
                };
                if wanted && !out(line()) {
                    self.skipped.insert(k.eni);
                    self.lost += 1;
                }
            }
        }
        if all || !self.skipped.is_empty() {
            for eni in std::mem::take(&mut self.skipped) {
                if snap.topo.enis.get(eni.ix()).is_none() {
                    continue;
                }
                for log in snap.flow_logs_of(eni) {
                    let line = status_line(snap, log, eni, now_secs, now_secs, "SKIPDATA");
                    if !out(line) {
                        // Said again at the next flush.
                        self.skipped.insert(eni);
                    }
                }
            }
        }
    }
}

/// A record without traffic: `SKIPDATA` (records were lost) or `NODATA` (no traffic in
/// the window), for ENI `eni` from `start` to `end` (R-FL-STATUS).
pub fn status_line(
    snap: &Snapshot,
    log: &FlowLog,
    eni: EniIx,
    start: u64,
    end: u64,
    status: &str,
) -> Line {
    let k = Key {
        eni,
        egress: false,
        accept: true,
        src: IpAddr::from([0u8; 4]),
        dst: IpAddr::from([0u8; 4]),
        sport: 0,
        dport: 0,
        proto: 0,
    };
    let a = Aggregate {
        packets: 0,
        bytes: 0,
        first: start,
        last: end,
        tcp_flags: 0,
    };
    Line {
        destination: log.destination.clone(),
        text: format_record(snap, log, &k, &a, status),
        log: log.id.clone(),
        zone: snap.eni(eni).zone,
        start,
    }
}

/// `traffic-path` of an egress record: how the packet leaves, by the route its subnet's
/// table has for the destination (AWS, `traffic-path`: 1 through another resource in the
/// same VPC, including resources with an ENI there such as a NAT gateway; 3 a virtual
/// private gateway; 4 an intra-region peering; 7 a gateway endpoint and 8 an internet
/// gateway, as for Nitro instances, which every current instance type is). vpcd's egress-
/// only gateway is an internet gateway for IPv6, and takes 8 too.
fn traffic_path(snap: &Snapshot, eni: EniIx, dst: IpAddr) -> Option<u8> {
    use crate::route::Target;
    let e = snap.eni(eni);
    if snap.eni_by_addr(e.vpc, dst).is_some() {
        return Some(1);
    }
    let table = snap.route_table(snap.subnet(e.subnet).route_table);
    Some(match table.lookup(dst)?.1.target {
        Target::Local | Target::Eni(_) | Target::NatGateway(_) => 1,
        Target::InternetGateway(_) | Target::EgressOnlyInternetGateway(_) => 8,
        Target::VirtualPrivateGateway(_) | Target::VpnTunnel(_) => 3,
        Target::Peering(_) => 4,
        Target::GatewayEndpoint(_) => 7,
        Target::Blackhole => return None,
    })
}

/// `pkt-src-aws-service` / `pkt-dst-aws-service`: the service whose ranges hold `addr`,
/// as AWS names its ranges (`S3`, `DYNAMODB`), from the lab's `services`.
fn aws_service(snap: &Snapshot, addr: IpAddr) -> Option<String> {
    snap.topo
        .services
        .iter()
        .find(|svc| {
            svc.cidrs
                .iter()
                .any(|c| crate::route::net_contains(c, addr))
        })
        .map(|svc| svc.name.to_ascii_uppercase())
}

/// A record line in `log`'s format; `-` for what does not apply (R-FL-DEFAULT).
fn format_record(snap: &Snapshot, log: &FlowLog, k: &Key, a: &Aggregate, status: &str) -> String {
    let eni = snap.eni(k.eni);
    let subnet = snap.subnet(eni.subnet);
    let vpc = snap.vpc(eni.vpc);
    let data = status == "OK";
    // A NAT gateway's ENI names itself where the packet's far end is beyond it (AWS's NAT
    // gateway example: the instance's packet to the internet is 10.0.1.5 → 10.0.0.220 at
    // srcaddr/dstaddr, 10.0.1.5 → 203.0.113.5 at pkt-srcaddr/pkt-dstaddr).
    let own = match eni.kind {
        crate::snapshot::EniKind::NatGateway(_) if !k.src.is_ipv6() => {
            eni.primary_v4().map(IpAddr::V4)
        }
        _ => None,
    };
    let srcaddr = match own {
        Some(own) if !eni.owns(k.src) && k.egress => own,
        _ => k.src,
    };
    let dstaddr = match own {
        Some(own) if !eni.owns(k.dst) && !k.egress => own,
        _ => k.dst,
    };
    let mut s = String::new();
    for (i, field) in log.format.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let dash = |s: &mut String| s.push('-');
        match &**field {
            "version" => {
                let _ = write!(s, "{}", format_version(&log.format));
            }
            "account-id" => s.push_str(&snap.topo.account_id),
            "interface-id" => {
                let _ = write!(s, "eni-{}", eni.id);
            }
            "srcaddr" if data => {
                let _ = write!(s, "{srcaddr}");
            }
            "dstaddr" if data => {
                let _ = write!(s, "{dstaddr}");
            }
            "pkt-srcaddr" if data => {
                let _ = write!(s, "{}", k.src);
            }
            "pkt-dstaddr" if data => {
                let _ = write!(s, "{}", k.dst);
            }
            "srcport" if data => {
                let _ = write!(s, "{}", k.sport);
            }
            "dstport" if data => {
                let _ = write!(s, "{}", k.dport);
            }
            "protocol" if data => {
                let _ = write!(s, "{}", k.proto);
            }
            "packets" if data => {
                let _ = write!(s, "{}", a.packets);
            }
            "bytes" if data => {
                let _ = write!(s, "{}", a.bytes);
            }
            "start" => {
                let _ = write!(s, "{}", a.first);
            }
            "end" => {
                let _ = write!(s, "{}", a.last.max(a.first));
            }
            "action" if data => s.push_str(if k.accept { "ACCEPT" } else { "REJECT" }),
            "log-status" => s.push_str(status),
            "vpc-id" => s.push_str(&vpc.id),
            "subnet-id" => s.push_str(&subnet.id),
            "instance-id" => match eni.kind {
                crate::snapshot::EniKind::Instance => s.push_str(&eni.id),
                _ => dash(&mut s),
            },
            "tcp-flags" if data => {
                let _ = write!(s, "{}", a.tcp_flags);
            }
            "type" if data => s.push_str(if k.src.is_ipv6() { "IPv6" } else { "IPv4" }),
            "region" => s.push_str(&snap.topo.region),
            "az-id" => s.push_str(&crate::region::zone_id(
                &snap.topo.region,
                &subnet.availability_zone,
            )),
            "flow-direction" if data => s.push_str(if k.egress { "egress" } else { "ingress" }),
            "traffic-path" if data && k.egress => match traffic_path(snap, k.eni, k.dst) {
                Some(p) => {
                    let _ = write!(s, "{p}");
                }
                None => dash(&mut s),
            },
            "pkt-src-aws-service" if data => match aws_service(snap, k.src) {
                Some(n) => s.push_str(&n),
                None => dash(&mut s),
            },
            "pkt-dst-aws-service" if data => match aws_service(snap, k.dst) {
                Some(n) => s.push_str(&n),
                None => dash(&mut s),
            },
            _ => dash(&mut s),
        }
    }
    s
}

/// `NODATA` records (R-FL-STATUS): "there was no network traffic to or from the network
/// interface during the aggregation interval". Which windows had traffic is known only
/// from all workers' records together, so the flow-log writer (one thread) keeps this and
/// asks it each second; it is sans-IO like the rest (time comes in).
///
/// Windows tile each (flow log, ENI) from when the writer first saw it, one interval
/// long. A window's records arrive up to one interval after it ends (an aggregate opened
/// near its end closes an interval later), so a window is judged one interval plus
/// [`NoData::SLACK`] seconds after its end: `NODATA` if no record started inside it.
#[derive(Default)]
pub struct NoData {
    /// (flow log, ENI zone) → (start of the next window to judge, starts of the records
    /// seen from it on).
    windows: FxHashMap<(Box<str>, u32), (u64, Vec<u64>)>,
}

impl NoData {
    /// Seconds allowed for a closed window's lines to reach the writer.
    pub const SLACK: u64 = 2;

    /// Notes a record line written.
    pub fn saw(&mut self, line: &Line) {
        if let Some((from, starts)) = self.windows.get_mut(&(line.log.clone(), line.zone)) {
            if line.start >= *from {
                starts.push(line.start);
            }
        }
    }

    /// The `NODATA` lines due at `now_secs` for every ENI the snapshot's flow logs cover.
    pub fn due(&mut self, snap: &Snapshot, now_secs: u64) -> Vec<Line> {
        let mut out = Vec::new();
        let mut covered = FxHashSet::default();
        for log in &snap.topo.flow_logs {
            let interval = u64::from(log.interval.max(1));
            for (i, eni) in snap.topo.enis.iter().enumerate() {
                let ix = EniIx(i as u32);
                if !snap.flow_logs_of(ix).any(|l| l.id == log.id) {
                    continue;
                }
                covered.insert((log.id.clone(), eni.zone));
                let (from, starts) = self
                    .windows
                    .entry((log.id.clone(), eni.zone))
                    .or_insert_with(|| (now_secs, Vec::new()));
                while now_secs >= *from + 2 * interval + Self::SLACK {
                    let end = *from + interval;
                    if !starts.iter().any(|s| (*from..end).contains(s)) {
                        out.push(status_line(snap, log, ix, *from, end, "NODATA"));
                    }
                    *from = end;
                    starts.retain(|s| *s >= end);
                }
            }
        }
        // ENIs and flow logs an apply removed.
        self.windows.retain(|k, _| covered.contains(k));
        out
    }
}
