//! Per-worker counters: packets and bytes per port, drops per reason.
//!
//! Each worker owns its `Stats` (plain integers, no atomics, no sharing), as VPP's nodes
//! own their error counters; a reader sums the workers' copies. Nothing here is shared
//! between cores on the packet path.

use crate::observer::Direction;
use crate::pipeline::Verdict;
use crate::reason::DropReason;
use crate::router_services::ServiceCounters;
use crate::snapshot::{EniIx, PortId, Snapshot};

/// The precise place a packet was dropped, beyond its [`DropReason`]: which ENI's security
/// groups, or which NACL rule (including a NACL's final `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    None,
    Sg {
        eni: EniIx,
        dir: Direction,
    },
    /// A per-rule NACL counter (see [`crate::acl::NetworkAcl::counter_base`]).
    Nacl {
        counter: u32,
    },
}

/// Packets and bytes through one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets (and bytes) forwarded to this port, including those whose write then
    /// failed (`tx_errors`).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Forwarded to this port but the write failed (queue full, namespace gone): the
    /// packet is lost, and counted here rather than silently. Counts segments, like
    /// `tx_packets`: a failed super-packet write counts each of its segments.
    pub tx_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    pub forwarded: u64,
    /// Packets handed to router-local services (R-ADDR-EXEMPT).
    pub local: u64,
    /// Packets vpcd answered itself (a NAT gateway's RST, an ICMP error).
    pub replies: u64,
    /// Reads from a queue that failed with an error other than "empty".
    pub rx_errors: u64,
    /// Flow-log records the worker lost ([`crate::flow_log::FlowLogAccumulator::lost`]),
    /// copied in when it publishes.
    pub flow_log_lost: u64,
    /// Traffic-mirror copies written to an instance target (R-TM), also in its port's
    /// `tx_packets`.
    pub mirrored: u64,
    /// Copies for an instance target whose security groups (or the NACLs on the way) do
    /// not admit VXLAN from the source: not sent, as on AWS.
    pub mirror_refused: u64,
    /// Copies handed to the capture writer, and those lost (its queue was full).
    pub mirror_captured: u64,
    pub mirror_lost: u64,
    /// Indexed by port id; grown by [`Stats::reserve_ports`] off the packet path.
    pub ports: Vec<PortCounters>,
    /// SG drops per ENI: `[inbound, outbound]`.
    pub sg_drops: Vec<[u64; 2]>,
    /// Drops per NACL rule (and per NACL's `*`), by per-rule counter.
    pub nacl_drops: Vec<u64>,
    /// What the router's own services refused or timed out; kept by the worker's
    /// [`crate::router_services::RouterServices`] and copied here when it publishes.
    pub services: ServiceCounters,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            drops: [0; DropReason::COUNT],
            forwarded: 0,
            local: 0,
            replies: 0,
            rx_errors: 0,
            flow_log_lost: 0,
            mirrored: 0,
            mirror_refused: 0,
            mirror_captured: 0,
            mirror_lost: 0,
            ports: Vec::new(),
            sg_drops: Vec::new(),
            nacl_drops: Vec::new(),
            services: ServiceCounters::default(),
        }
    }
}

impl Stats {
    /// Makes room for `n` ports; call once per batch (after loading the snapshot), so that
    /// counting never allocates.
    pub fn reserve_ports(&mut self, n: usize) {
        if self.ports.len() < n {
            self.ports.resize(n, PortCounters::default());
        }
    }

    /// Sizes every counter for `snap`'s ports, ENIs and NACL rules. Cheap when nothing is
    /// missing (three length compares); allocates only after a larger snapshot appears.
    #[inline]
    pub fn fit(&mut self, snap: &Snapshot) {
        if self.ports.len() < snap.topo.ports.len() {
            self.reserve_ports(snap.topo.ports.len());
        }
        if self.sg_drops.len() < snap.topo.enis.len() {
            self.sg_drops.resize(snap.topo.enis.len(), [0; 2]);
        }
        if self.nacl_drops.len() < snap.nacl_counters as usize {
            self.nacl_drops.resize(snap.nacl_counters as usize, 0);
        }
    }

    /// Counts the precise cause of a drop.
    #[inline]
    pub fn count_cause(&mut self, cause: Cause, segs: u32) {
        match cause {
            Cause::None => {}
            Cause::Sg { eni, dir } => {
                if let Some(c) = self.sg_drops.get_mut(eni.ix()) {
                    c[(dir == Direction::Egress) as usize] += u64::from(segs);
                }
            }
            Cause::Nacl { counter } => {
                if let Some(c) = self.nacl_drops.get_mut(counter as usize) {
                    *c += u64::from(segs);
                }
            }
        }
    }

    /// Counts one packet: `rx` on the port it came in, then its verdict. A GSO
    /// super-packet counts as the `segs` segments (`bytes` on the wire) it stands for.
    #[inline]
    pub fn count(&mut self, ingress: PortId, segs: u32, bytes: usize, verdict: &Verdict) {
        let segs = u64::from(segs);
        if let Some(p) = self.ports.get_mut(ingress.ix()) {
            p.rx_packets += segs;
            p.rx_bytes += bytes as u64;
        }
        match *verdict {
            Verdict::Forward(out) => {
                self.forwarded += segs;
                if let Some(p) = self.ports.get_mut(out.ix()) {
                    p.tx_packets += segs;
                    p.tx_bytes += bytes as u64;
                }
            }
            Verdict::Translated { port, wire, .. } => {
                self.forwarded += segs;
                if let Some(p) = self.ports.get_mut(port.ix()) {
                    p.tx_packets += segs;
                    p.tx_bytes += u64::from(wire);
                }
            }
            Verdict::Reply { port, len } => {
                self.replies += 1;
                if let Some(p) = self.ports.get_mut(port.ix()) {
                    p.tx_packets += 1;
                    p.tx_bytes += u64::from(len);
                }
            }
            Verdict::Local(_) => self.local += segs,
            Verdict::Drop(r) => self.drops[r as usize] += segs,
        }
    }

    /// Counts `segs` packets dropped for `reason` that the router answered (§13: every
    /// dropped packet under one reason, answered or not).
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason, segs: u32) {
        self.drops[reason as usize] += u64::from(segs);
    }

    /// Counts an answer of a router-local service sent back out of `port`.
    #[inline]
    pub fn count_answer(&mut self, port: PortId, len: usize) {
        self.replies += 1;
        if let Some(p) = self.ports.get_mut(port.ix()) {
            p.tx_packets += 1;
            p.tx_bytes += len as u64;
        }
    }

    /// Counts a traffic-mirror copy of `bytes` written (or, `sent` false, failed) to
    /// `port`.
    #[inline]
    pub fn count_mirrored(&mut self, port: PortId, bytes: usize, sent: bool) {
        self.mirrored += 1;
        if let Some(p) = self.ports.get_mut(port.ix()) {
            p.tx_packets += 1;
            p.tx_bytes += bytes as u64;
            if !sent {
                p.tx_errors += 1;
            }
        }
    }

    /// Counts a forwarded packet that could not be written to its port.
    #[inline]
    pub fn tx_error(&mut self, out: PortId) {
        self.tx_errors(out, 1);
    }

    /// Counts `n` packets (the segments of one write) that could not be written.
    #[inline]
    pub fn tx_errors(&mut self, out: PortId, n: u64) {
        if let Some(p) = self.ports.get_mut(out.ix()) {
            p.tx_errors += n;
        }
    }

    /// Every drop, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The count for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Adds another worker's counters into these (for a reader).
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
        self.forwarded += other.forwarded;
        self.local += other.local;
        self.replies += other.replies;
        self.rx_errors += other.rx_errors;
        self.flow_log_lost += other.flow_log_lost;
        self.mirrored += other.mirrored;
        self.mirror_refused += other.mirror_refused;
        self.mirror_captured += other.mirror_captured;
        self.mirror_lost += other.mirror_lost;
        self.reserve_ports(other.ports.len());
        for (a, b) in self.ports.iter_mut().zip(other.ports.iter()) {
            a.rx_packets += b.rx_packets;
            a.rx_bytes += b.rx_bytes;
            a.tx_packets += b.tx_packets;
            a.tx_bytes += b.tx_bytes;
            a.tx_errors += b.tx_errors;
        }
        if self.sg_drops.len() < other.sg_drops.len() {
            self.sg_drops.resize(other.sg_drops.len(), [0; 2]);
        }
        for (a, b) in self.sg_drops.iter_mut().zip(&other.sg_drops) {
            a[0] += b[0];
            a[1] += b[1];
        }
        if self.nacl_drops.len() < other.nacl_drops.len() {
            self.nacl_drops.resize(other.nacl_drops.len(), 0);
        }
        for (a, b) in self.nacl_drops.iter_mut().zip(&other.nacl_drops) {
            *a += b;
        }
        self.services.merge(&other.services);
    }
}
