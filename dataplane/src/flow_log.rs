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
}

/// A finished line and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub destination: Box<str>,
    pub text: String,
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
            } => (src_port, dst_port, flags & 0x3f),
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
                };
                if wanted && !out(line()) {
                    self.skipped.insert(k.eni);
                }
            }
        }
        if all || !self.skipped.is_empty() {
            for eni in std::mem::take(&mut self.skipped) {
                for log in snap.flow_logs_of(eni) {
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
                        first: now_secs,
                        last: now_secs,
                        tcp_flags: 0,
                    };
                    let line = Line {
                        destination: log.destination.clone(),
                        text: format_record(snap, log, &k, &a, "SKIPDATA"),
                    };
                    if !out(line) {
                        // Said again at the next flush.
                        self.skipped.insert(eni);
                    }
                }
            }
        }
    }
}

/// A record line in `log`'s format; `-` for what does not apply (R-FL-DEFAULT).
fn format_record(snap: &Snapshot, log: &FlowLog, k: &Key, a: &Aggregate, status: &str) -> String {
    let eni = snap.eni(k.eni);
    let subnet = snap.subnet(eni.subnet);
    let vpc = snap.vpc(eni.vpc);
    let data = status == "OK";
    let mut s = String::new();
    for (i, field) in log.format.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let dash = |s: &mut String| s.push('-');
        match &**field {
            "version" => s.push_str(if log.format.len() == DEFAULT_FORMAT.len() {
                "2"
            } else {
                "5"
            }),
            "account-id" => s.push_str(&snap.topo.account_id),
            "interface-id" => {
                let _ = write!(s, "eni-{}", eni.id);
            }
            "srcaddr" | "pkt-srcaddr" if data => {
                let _ = write!(s, "{}", k.src);
            }
            "dstaddr" | "pkt-dstaddr" if data => {
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
            "az-id" => s.push_str(&subnet.availability_zone),
            "flow-direction" if data => s.push_str(if k.egress { "egress" } else { "ingress" }),
            _ => dash(&mut s),
        }
    }
    s
}
