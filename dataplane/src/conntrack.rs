//! Connection tracking for security groups (R-SG-STATE): one table shared by all workers,
//! fixed in size, without locks.
//!
//! AWS tracks connections per ENI, so an entry's key is the flow *as seen at one ENI*:
//! (ENI, protocol, local address and port, remote address and port). Both directions of a
//! flow at that ENI map to the same key, so one entry serves the request and the reply,
//! and the two ENIs of a flow inside a VPC each keep their own entry, as their SGs do.
//!
//! Why a table of our own: the reply of a flow may be read by another worker than the
//! request (each namespace's kernel picks the TUN queue), so the state must be shared;
//! the packet path may not lock or allocate; memory must be bounded. The table is a fixed
//! array of buckets of [`WAYS`] slots (a flow may live in either of two buckets, and goes
//! to the emptier: the first refusal comes at 70 to 80 % of the slots), each slot guarded
//! by a sequence number (a seqlock,
//! as in the Linux kernel): readers never write unless they refresh a timer, writers
//! claim a slot with one compare-and-swap. There is no deletion: an expired slot is free
//! and is reused in place by the next insert into its bucket, so expired entries are
//! reclaimed without any sweep, stop-the-world or not. When every slot of both buckets
//! holds a live flow, the new flow is refused (`TABLE_FULL`), as AWS drops packets when its
//! connection-tracking allowance is exceeded.
//!
//! Two workers may insert the same new flow at the same instant into two slots; both say
//! the same thing (tracked), lookups find the first, the other expires. That is harmless
//! and cheaper than a lock.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::observer::Direction;
use crate::packet::{proto, tcp_flags, Packet, Transport};
use crate::Timestamp;

/// Seconds an expired slot stays untouched before a new flow may take it.
pub const REUSE_GRACE: u32 = 2;

/// Slots per bucket: one cache line of sequence words.
pub const WAYS: usize = 8;

/// The default capacity (slots) of `vpcd up`'s table: 262,144 slots, 18 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 18;

/// Idle timeouts in seconds (R-SG-TIMEOUT). The three AWS documents and lets an ENI set;
/// the rest follow Linux conntrack's defaults, as semantics.md says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32,
    pub udp: u32,
    pub udp_stream: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 432_000,
            udp: 30,
            udp_stream: 180,
        }
    }
}

/// Linux `nf_conntrack_tcp_timeout_syn_sent`.
pub const TCP_SYN_SENT_TIMEOUT: u32 = 120;
/// Linux `nf_conntrack_tcp_timeout_fin_wait` / `time_wait`.
pub const TCP_CLOSING_TIMEOUT: u32 = 120;
/// Linux `nf_conntrack_tcp_timeout_close`: after a RST.
pub const TCP_CLOSE_TIMEOUT: u32 = 10;
/// Linux `nf_conntrack_icmp_timeout`.
pub const ICMP_TIMEOUT: u32 = 30;
/// Linux `nf_conntrack_generic_timeout`.
pub const OTHER_TIMEOUT: u32 = 600;

/// The state of a tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    TcpSynSent,
    TcpEstablished,
    /// A FIN was seen.
    TcpClosing,
    /// A RST was seen.
    TcpClosed,
    /// UDP that has seen one direction, or one request and its response.
    Udp,
    /// UDP with more than one exchange.
    UdpStream,
    Icmp,
    Other,
}

impl FlowState {
    fn code(self) -> u32 {
        self as u32
    }

    fn from_code(c: u32) -> FlowState {
        use FlowState::*;
        [
            TcpSynSent,
            TcpEstablished,
            TcpClosing,
            TcpClosed,
            Udp,
            UdpStream,
            Icmp,
            Other,
        ]
        .get(c as usize & 7)
        .copied()
        .unwrap_or(Other)
    }

    /// How long the flow may stay idle in this state.
    pub fn timeout(self, t: &Timeouts) -> u32 {
        match self {
            FlowState::TcpSynSent => TCP_SYN_SENT_TIMEOUT,
            FlowState::TcpEstablished => t.tcp_established,
            FlowState::TcpClosing => TCP_CLOSING_TIMEOUT,
            FlowState::TcpClosed => TCP_CLOSE_TIMEOUT,
            FlowState::Udp => t.udp,
            FlowState::UdpStream => t.udp_stream,
            FlowState::Icmp => ICMP_TIMEOUT,
            FlowState::Other => OTHER_TIMEOUT,
        }
    }
}

// The state word of a slot: the flow state in bits 0-2, then flags.
const INITIATED_INBOUND: u32 = 1 << 3;
const SEEN_REPLY: u32 = 1 << 4;

/// A flow as seen at one ENI: the table key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    words: [u64; 5],
}

fn addr_words(a: IpAddr) -> (u64, u64) {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let n = u128::from(v6);
    ((n >> 64) as u64, n as u64)
}

/// Key zones: what a flow key belongs to. ENI indices use the zone below `NAT_OUT`.
pub mod zone {
    /// A NAT gateway's outbound mapping: (private source, its port, destination) → port.
    pub const NAT_OUT: u32 = 0x40_0000;
    /// A NAT gateway's inbound mapping: (NAT address, port, remote) → private source.
    pub const NAT_IN: u32 = 0x50_0000;
    /// An egress-only internet gateway's state, per VPC (R-EIGW).
    pub const EIGW: u32 = 0x60_0000;
    /// A NAT gateway's fragments on the way back: (remote, IP id, NAT address) → the
    /// private address the first fragment went to (R-NAT-FRAG).
    pub const NAT_FRAG: u32 = 0x90_0000;
}

impl FlowKey {
    /// A key from its parts; `zone` is an ENI index or a [`zone`] constant plus an index.
    #[inline]
    pub fn new(
        zone: u32,
        protocol: u8,
        local: IpAddr,
        lport: u16,
        remote: IpAddr,
        rport: u16,
    ) -> FlowKey {
        let (l0, l1) = addr_words(local);
        let (r0, r1) = addr_words(remote);
        let w0 = (zone as u64 & 0xff_ffff)
            | (protocol as u64) << 24
            | (lport as u64) << 32
            | (rport as u64) << 48;
        FlowKey {
            words: [w0, l0, l1, r0, r1],
        }
    }

    /// The key of `pkt` at the ENI whose flow zone is `eni_zone` ([`crate::snapshot::Eni::zone`]: stable across configuration generations), crossing it in `dir`. ICMP echo uses the identifier
    /// as the local "port", so a request and its reply share a key; other ICMP has none.
    #[inline]
    pub fn at_eni(eni_zone: u32, dir: Direction, pkt: &Packet) -> FlowKey {
        let (src_port, dst_port) = match pkt.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
            Transport::Icmp { ident, .. } => (ident, ident),
            Transport::Other => (0, 0),
        };
        match dir {
            Direction::Egress => {
                FlowKey::new(eni_zone, pkt.proto, pkt.src, src_port, pkt.dst, dst_port)
            }
            Direction::Ingress => {
                FlowKey::new(eni_zone, pkt.proto, pkt.dst, dst_port, pkt.src, src_port)
            }
        }
    }

    /// The key of `pkt` in a gateway's zone (`zone::EIGW | vpc`), seen from inside: local
    /// is the VPC side. Same port rules as [`FlowKey::at_eni`].
    #[inline]
    pub fn at_gateway(zone: u32, dir: Direction, pkt: &Packet) -> FlowKey {
        Self::at_eni(zone, dir, pkt)
    }

    /// Mixes the five words (multiply-rotate per word, then murmur3's 64-bit finalizer):
    /// every input bit reaches every output bit, so bucket index and tag are both spread
    /// even when flows differ only in a port.
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = seed;
        for w in self.words {
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[repr(C, align(64))]
struct Bucket {
    /// Per slot: tag (high 32 bits, 0 = never used) and sequence (low 32, odd while a
    /// writer fills the slot).
    meta: [AtomicU64; WAYS],
}

#[repr(C, align(64))]
struct Entry {
    key: [AtomicU64; 5],
    /// Unix seconds after which the flow is gone.
    expires: AtomicU32,
    state: AtomicU32,
    /// What the table's user stores with the flow (a NAT mapping); 0 for SG state.
    value: AtomicU64,
}

/// A found flow: where it is, and its state when found.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    slot: usize,
    state: u32,
    value: u64,
}

impl Hit {
    /// The value stored with the flow.
    pub fn value(&self) -> u64 {
        self.value
    }

    pub fn state(&self) -> FlowState {
        FlowState::from_code(self.state)
    }

    /// The direction (at the ENI) of the packet that opened the flow.
    pub fn initiator(&self) -> Direction {
        if self.state & INITIATED_INBOUND != 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }
}

/// Why a flow could not be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// The shared connection-tracking table.
pub struct Conntrack {
    buckets: Box<[Bucket]>,
    entries: Box<[Entry]>,
    mask: usize,
    seed: u64,
}

/// A time in the table's unit: Unix seconds.
pub fn secs(now: Timestamp) -> u32 {
    now.secs().min(u32::MAX as u64) as u32
}

/// The state a packet moves a flow to (the flow's current state, or `None` for a new
/// flow), and the flags to set.
fn next_state(current: Option<(FlowState, u32)>, dir: Direction, pkt: &Packet) -> (FlowState, u32) {
    let (state, flags) = match current {
        Some((s, f)) => (s, f),
        None => {
            let flags = match dir {
                Direction::Ingress => INITIATED_INBOUND,
                Direction::Egress => 0,
            };
            let s = match pkt.proto {
                proto::TCP => FlowState::TcpSynSent,
                proto::UDP => FlowState::Udp,
                proto::ICMP | proto::ICMPV6 => FlowState::Icmp,
                _ => FlowState::Other,
            };
            (s, flags)
        }
    };
    let is_reply =
        current.is_some() && (flags & INITIATED_INBOUND != 0) == (dir == Direction::Egress);
    let mut flags = flags;
    if is_reply {
        flags |= SEEN_REPLY;
    }
    let state = match (state, pkt.transport) {
        (_, Transport::Tcp { flags: f, .. }) if f & tcp_flags::RST != 0 => FlowState::TcpClosed,
        (_, Transport::Tcp { flags: f, .. }) if f & tcp_flags::FIN != 0 => FlowState::TcpClosing,
        // A new SYN on the same addresses and ports after a close starts the flow over.
        (FlowState::TcpClosed | FlowState::TcpClosing, Transport::Tcp { flags: f, .. })
            if f & tcp_flags::SYN != 0 && f & tcp_flags::ACK == 0 =>
        {
            FlowState::TcpSynSent
        }
        (FlowState::TcpClosed | FlowState::TcpClosing, _) => state,
        // A new flow that does not start with a SYN is picked up mid-stream (Linux's loose
        // tracking), but, like a SYN, it holds only SYN_SENT's two minutes until the other
        // side answers: unanswered packets cannot pin slots for days.
        (FlowState::TcpSynSent, Transport::Tcp { .. }) => {
            if is_reply {
                FlowState::TcpEstablished
            } else {
                FlowState::TcpSynSent
            }
        }
        // UDP: a packet of the initiator after a reply makes it a stream (R-SG-TIMEOUT).
        (FlowState::Udp, _) if current.is_some() && !is_reply && flags & SEEN_REPLY != 0 => {
            FlowState::UdpStream
        }
        (s, _) => s,
    };
    (state, flags)
}

impl Conntrack {
    /// A table of at least `capacity` slots (rounded up to whole buckets, a power of two).
    pub fn new(capacity: usize) -> Conntrack {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x7670_6364u64);
        Conntrack {
            buckets: (0..buckets)
                .map(|_| Bucket {
                    meta: Default::default(),
                })
                .collect(),
            entries: (0..buckets * WAYS)
                .map(|_| Entry {
                    key: Default::default(),
                    expires: AtomicU32::new(0),
                    state: AtomicU32::new(0),
                    value: AtomicU64::new(0),
                })
                .collect(),
            mask: buckets - 1,
            seed,
        }
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the table occupies (it never grows).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
            + self.entries.len() * std::mem::size_of::<Entry>()
    }

    /// The two buckets a key may live in (two-choice hashing: with one bucket, 8 ways
    /// overflow at under half load; with two, at 70 to 80 %).
    #[inline]
    fn buckets_of(&self, h: u64) -> [usize; 2] {
        let b1 = (h as usize) & self.mask;
        let mut b2 = ((h >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize & self.mask;
        if b2 == b1 {
            b2 = b1 ^ (1 & self.mask);
        }
        [b1, b2]
    }

    /// Looks the flow up; an expired entry is not found.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, now: Timestamp) -> Option<Hit> {
        let h = key.hash(self.seed);
        let tag = (h >> 32) as u32 | 1;
        let now = secs(now);
        for b in self.buckets_of(h) {
            if let Some(hit) = self.lookup_in(b, tag, key, now) {
                return Some(hit);
            }
        }
        None
    }

    #[inline]
    fn lookup_in(&self, b: usize, tag: u32, key: &FlowKey, now: u32) -> Option<Hit> {
        let bucket = &self.buckets[b];
        for (i, meta) in bucket.meta.iter().enumerate() {
            let m = meta.load(Ordering::Acquire);
            if (m >> 32) as u32 != tag || m & 1 != 0 {
                continue;
            }
            let slot = b * WAYS + i;
            let e = &self.entries[slot];
            let same = e
                .key
                .iter()
                .zip(key.words)
                .all(|(a, w)| a.load(Ordering::Relaxed) == w);
            let expires = e.expires.load(Ordering::Relaxed);
            let state = e.state.load(Ordering::Relaxed);
            let value = e.value.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if meta.load(Ordering::Relaxed) != m {
                // A writer reused the slot while we read it: it held an expired flow.
                continue;
            }
            if same && expires >= now {
                return Some(Hit { slot, state, value });
            }
        }
        None
    }

    /// Records a packet of a found flow: moves its state and pushes its expiry.
    #[inline]
    pub fn refresh(&self, hit: Hit, dir: Direction, pkt: &Packet, now: Timestamp, t: &Timeouts) {
        let state_now = self.entries[hit.slot].state.load(Ordering::Relaxed);
        let hit = Hit {
            state: if state_now & !7 == hit.state & !7 {
                state_now
            } else {
                hit.state
            },
            ..hit
        };
        let (state, flags) = next_state(Some((hit.state(), hit.state & !7)), dir, pkt);
        let word = state.code() | flags;
        let e = &self.entries[hit.slot];
        if word != hit.state {
            // Only from the state this packet was judged on: if another worker moved the
            // flow meanwhile (a FIN the other way), its move stands.
            let _ = e
                .state
                .compare_exchange(hit.state, word, Ordering::Relaxed, Ordering::Relaxed);
        }
        let expires = secs(now).saturating_add(state.timeout(t));
        if e.expires.load(Ordering::Relaxed) != expires {
            e.expires.store(expires, Ordering::Relaxed);
        }
    }

    /// Starts a found flow over as a new one opened by `pkt` (a SYN after the old
    /// connection closed): fresh state, initiator and timeout, in the same slot.
    pub fn restart(&self, hit: Hit, dir: Direction, pkt: &Packet, now: Timestamp, t: &Timeouts) {
        let (state, flags) = next_state(None, dir, pkt);
        let e = &self.entries[hit.slot];
        e.state.store(state.code() | flags, Ordering::Relaxed);
        e.expires.store(
            secs(now).saturating_add(state.timeout(t)),
            Ordering::Relaxed,
        );
    }

    /// Tracks a new flow opened by `pkt` crossing the ENI in `dir`.
    pub fn insert(
        &self,
        key: &FlowKey,
        dir: Direction,
        pkt: &Packet,
        now: Timestamp,
        t: &Timeouts,
    ) -> Result<(), Full> {
        let (state, flags) = next_state(None, dir, pkt);
        let expires = secs(now).saturating_add(state.timeout(t));
        self.insert_raw(key, state.code() | flags, expires, 0, now)
    }

    /// Pushes a found flow's expiry to `expires` (Unix seconds): for users with their own
    /// timeouts (the NAT gateway's 350 s).
    #[inline]
    pub fn touch(&self, hit: Hit, expires: u32) {
        let e = &self.entries[hit.slot];
        if e.expires.load(Ordering::Relaxed) != expires {
            e.expires.store(expires, Ordering::Relaxed);
        }
    }

    /// Stores a new flow with its state word, expiry and value.
    pub fn insert_raw(
        &self,
        key: &FlowKey,
        state_word: u32,
        expires: u32,
        value: u64,
        now: Timestamp,
    ) -> Result<(), Full> {
        let h = key.hash(self.seed);
        let tag = (h >> 32) as u32 | 1;
        let now_s = secs(now);
        // The emptier of the two buckets first ("power of two choices"): it keeps every
        // bucket's load near the mean, so the first refusal comes at 70 to 80 % of the
        // slots (one bucket, first fit: well under 50 %).
        let [mut b1, mut b2] = self.buckets_of(h);
        if self.free_ways(b2, now_s) > self.free_ways(b1, now_s) {
            std::mem::swap(&mut b1, &mut b2);
        }
        let ways = (0..WAYS).map(|i| (b1, i)).chain((0..WAYS).map(|i| (b2, i)));
        for (b, i) in ways {
            let meta = &self.buckets[b].meta[i];
            let m = meta.load(Ordering::Acquire);
            if m & 1 != 0 || !self.is_free(b * WAYS + i, m, now_s) {
                continue;
            }
            let e = &self.entries[b * WAYS + i];
            let seq = m as u32;
            let writing = (m & 0xffff_ffff_0000_0000) | (seq.wrapping_add(1) as u64);
            if meta
                .compare_exchange(m, writing, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Ordering::Release);
            for (a, w) in e.key.iter().zip(key.words) {
                a.store(w, Ordering::Relaxed);
            }
            e.state.store(state_word, Ordering::Relaxed);
            e.expires.store(expires, Ordering::Relaxed);
            e.value.store(value, Ordering::Relaxed);
            let done = (tag as u64) << 32 | seq.wrapping_add(2) as u64;
            meta.store(done, Ordering::Release);
            return Ok(());
        }
        Err(Full)
    }

    /// Whether slot `slot` (whose sequence word is `m`) may take a new flow: never used, or
    /// its flow expired.
    #[inline]
    fn is_free(&self, slot: usize, m: u64, now: u32) -> bool {
        // A slot is reused only [`REUSE_GRACE`] seconds after its flow expired: workers
        // read the clock once per batch, so one may still refresh a flow another already
        // sees as expired, and the refresh must not land on a new flow.
        m >> 32 == 0
            || self.entries[slot]
                .expires
                .load(Ordering::Relaxed)
                .saturating_add(REUSE_GRACE)
                < now
    }

    fn free_ways(&self, b: usize, now: u32) -> usize {
        self.buckets[b]
            .meta
            .iter()
            .enumerate()
            .filter(|(i, m)| self.is_free(b * WAYS + i, m.load(Ordering::Relaxed), now))
            .count()
    }

    /// Live flows by kind: `[security-group flows, NAT translations, EIGW flows]` (a NAT
    /// translation is two entries; counted once). A scan, for reports only.
    pub fn occupancy_by_kind(&self, now: Timestamp) -> [usize; 3] {
        let now = secs(now);
        let mut out = [0; 3];
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, m) in bucket.meta.iter().enumerate() {
                let e = &self.entries[b * WAYS + i];
                if m.load(Ordering::Relaxed) >> 32 == 0 || e.expires.load(Ordering::Relaxed) < now {
                    continue;
                }
                let zone = (e.key[0].load(Ordering::Relaxed) & 0xff_ffff) as u32;
                match zone & 0xf0_0000 {
                    z if z == zone::NAT_OUT => out[1] += 1,
                    z if z == zone::NAT_IN => {}
                    z if z == zone::EIGW => out[2] += 1,
                    // Interface endpoints' translations (`IFE_OUT`), counted with NAT's.
                    0x70_0000 => out[1] += 1,
                    0x80_0000 => {}
                    _ => out[0] += 1,
                }
            }
        }
        out
    }

    /// Live (unexpired) flows: a scan of the whole table, for status reports, never on the
    /// packet path.
    pub fn occupancy(&self, now: Timestamp) -> usize {
        let now = secs(now);
        self.buckets
            .iter()
            .enumerate()
            .map(|(b, bucket)| {
                bucket
                    .meta
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| {
                        m.load(Ordering::Relaxed) >> 32 != 0
                            && self.entries[b * WAYS + i].expires.load(Ordering::Relaxed) >= now
                    })
                    .count()
            })
            .sum()
    }
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conntrack")
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    fn pkt(bytes: Vec<u8>) -> Packet {
        Packet::parse(&bytes).unwrap()
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Packet {
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1, 1000);
        if flags & tcp_flags::SYN != 0 {
            b = b.syn();
        }
        if flags & tcp_flags::ACK != 0 {
            b = b.ack(1);
        }
        if flags & tcp_flags::FIN != 0 {
            b = b.fin();
        }
        if flags & tcp_flags::RST != 0 {
            b = b.rst();
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        pkt(out)
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Packet {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, b"x")
            .unwrap();
        pkt(out)
    }

    const A: [u8; 4] = [10, 0, 1, 10];
    const B: [u8; 4] = [10, 0, 2, 10];
    const ENI: u32 = 3;
    const T0: u64 = 1_700_000_000;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_secs(T0 + s)
    }

    /// Opens a flow with `first` going out of ENI, then feeds `rest` (direction, packet,
    /// time), and returns the state after the last one.
    fn run(first: Packet, rest: &[(Direction, Packet, u64)]) -> (Conntrack, FlowKey) {
        let ct = Conntrack::new(64);
        let t = Timeouts::default();
        let key = FlowKey::at_eni(ENI, Direction::Egress, &first);
        ct.insert(&key, Direction::Egress, &first, at(0), &t)
            .unwrap();
        for (dir, p, s) in rest {
            let k = FlowKey::at_eni(ENI, *dir, p);
            assert_eq!(k, key, "both directions share one key");
            let hit = ct.lookup(&k, at(*s)).expect("tracked");
            ct.refresh(hit, *dir, p, at(*s), &t);
        }
        (ct, key)
    }

    #[test]
    fn a_syn_without_reply_expires_after_two_minutes() {
        let (ct, key) = run(tcp(A, B, 40000, 80, tcp_flags::SYN), &[]);
        let hit = ct.lookup(&key, at(120)).unwrap();
        assert_eq!(hit.state(), FlowState::TcpSynSent);
        assert_eq!(hit.initiator(), Direction::Egress);
        assert!(ct.lookup(&key, at(121)).is_none());
    }

    #[test]
    fn an_answered_tcp_flow_is_established_for_five_days() {
        let synack = tcp(B, A, 80, 40000, tcp_flags::SYN | tcp_flags::ACK);
        let (ct, key) = run(
            tcp(A, B, 40000, 80, tcp_flags::SYN),
            &[(Direction::Ingress, synack, 1)],
        );
        let hit = ct.lookup(&key, at(1 + 432_000)).unwrap();
        assert_eq!(hit.state(), FlowState::TcpEstablished);
        assert!(ct.lookup(&key, at(2 + 432_000)).is_none());
    }

    #[test]
    fn fin_and_rst_shorten_the_timeout() {
        let synack = tcp(B, A, 80, 40000, tcp_flags::SYN | tcp_flags::ACK);
        let fin = tcp(A, B, 40000, 80, tcp_flags::FIN | tcp_flags::ACK);
        let (ct, key) = run(
            tcp(A, B, 40000, 80, tcp_flags::SYN),
            &[(Direction::Ingress, synack, 1), (Direction::Egress, fin, 2)],
        );
        assert_eq!(
            ct.lookup(&key, at(2)).unwrap().state(),
            FlowState::TcpClosing
        );
        assert!(ct.lookup(&key, at(2 + 121)).is_none());

        let rst = tcp(B, A, 80, 40000, tcp_flags::RST);
        let (ct, key) = run(
            tcp(A, B, 40000, 80, tcp_flags::SYN),
            &[(Direction::Ingress, rst, 1)],
        );
        assert!(ct.lookup(&key, at(11)).is_some());
        assert!(ct.lookup(&key, at(12)).is_none());
    }

    #[test]
    fn udp_becomes_a_stream_after_a_second_exchange() {
        let req = udp(A, B, 5000, 53);
        let resp = udp(B, A, 53, 5000);
        let (ct, key) = run(req, &[(Direction::Ingress, resp, 1)]);
        let hit = ct.lookup(&key, at(1)).unwrap();
        assert_eq!(hit.state(), FlowState::Udp, "one request-response");
        assert!(ct.lookup(&key, at(32)).is_none(), "30 s");

        let (ct, key) = run(
            req,
            &[(Direction::Ingress, resp, 1), (Direction::Egress, req, 2)],
        );
        assert_eq!(
            ct.lookup(&key, at(2)).unwrap().state(),
            FlowState::UdpStream
        );
        assert!(ct.lookup(&key, at(2 + 180)).is_some());
        assert!(ct.lookup(&key, at(2 + 181)).is_none());
    }

    #[test]
    fn a_full_bucket_refuses_and_expired_slots_are_reused_in_place() {
        let ct = Conntrack::new(2 * WAYS); // two buckets: every flow may use both
        assert_eq!(ct.capacity(), 2 * WAYS);
        let t = Timeouts::default();
        for port in 0..2 * WAYS as u16 {
            let p = udp(A, B, 1000 + port, 53);
            let k = FlowKey::at_eni(ENI, Direction::Egress, &p);
            ct.insert(&k, Direction::Egress, &p, at(0), &t).unwrap();
        }
        assert_eq!(ct.occupancy(at(0)), 2 * WAYS);
        let extra = udp(A, B, 9999, 53);
        let k = FlowKey::at_eni(ENI, Direction::Egress, &extra);
        assert_eq!(
            ct.insert(&k, Direction::Egress, &extra, at(1), &t),
            Err(Full)
        );
        // Thirty seconds later every UDP flow has expired; after the reuse grace the slots
        // are free again, without any sweep.
        assert_eq!(ct.occupancy(at(31)), 0);
        assert_eq!(
            ct.insert(&k, Direction::Egress, &extra, at(32), &t),
            Err(Full)
        );
        ct.insert(&k, Direction::Egress, &extra, at(34), &t)
            .unwrap();
        assert!(ct.lookup(&k, at(34)).is_some());
        assert_eq!(ct.occupancy(at(34)), 1);
    }

    #[test]
    fn per_eni_timeouts_apply() {
        let ct = Conntrack::new(64);
        let t = Timeouts {
            udp: 60,
            ..Timeouts::default()
        };
        let p = udp(A, B, 5000, 53);
        let k = FlowKey::at_eni(ENI, Direction::Egress, &p);
        ct.insert(&k, Direction::Egress, &p, at(0), &t).unwrap();
        assert!(ct.lookup(&k, at(60)).is_some());
        assert!(ct.lookup(&k, at(61)).is_none());
    }

    #[test]
    fn keys_differ_per_eni_and_protocol() {
        let p = udp(A, B, 5000, 53);
        let q = tcp(A, B, 5000, 53, tcp_flags::SYN);
        assert_ne!(
            FlowKey::at_eni(1, Direction::Egress, &p),
            FlowKey::at_eni(2, Direction::Egress, &p)
        );
        assert_ne!(
            FlowKey::at_eni(ENI, Direction::Egress, &p),
            FlowKey::at_eni(ENI, Direction::Egress, &q)
        );
        // The receiver sees the same flow from its side: the same key as the sender's
        // reply direction, at its own ENI.
        assert_eq!(
            FlowKey::at_eni(ENI, Direction::Ingress, &p),
            FlowKey::at_eni(ENI, Direction::Egress, &udp(B, A, 53, 5000))
        );
    }

    #[test]
    fn workers_share_the_table_without_locks() {
        let ct = std::sync::Arc::new(Conntrack::new(1 << 12));
        let t = Timeouts::default();
        std::thread::scope(|s| {
            for w in 0..4u16 {
                let ct = &ct;
                s.spawn(move || {
                    for i in 0..500u16 {
                        let p = udp(A, B, w * 1000 + i, 53);
                        let k = FlowKey::at_eni(ENI, Direction::Egress, &p);
                        if ct.lookup(&k, at(0)).is_none() {
                            ct.insert(&k, Direction::Egress, &p, at(0), &t).unwrap();
                        }
                        assert!(ct.lookup(&k, at(0)).is_some());
                    }
                });
            }
        });
        assert_eq!(ct.occupancy(at(0)), 2000);
    }

    #[test]
    fn the_table_fills_to_seventy_percent_before_the_first_refusal() {
        let ct = Conntrack::new(1 << 14);
        let t = Timeouts::default();
        let mut tracked = 0;
        for i in 0..ct.capacity() as u32 {
            let p = udp([10, 0, (i >> 16) as u8, (i >> 8) as u8], B, i as u16, 53);
            let k = FlowKey::at_eni(ENI, Direction::Egress, &p);
            if ct.insert(&k, Direction::Egress, &p, at(0), &t).is_err() {
                break;
            }
            tracked += 1;
        }
        assert!(
            tracked * 10 >= ct.capacity() * 7,
            "{tracked} of {}",
            ct.capacity()
        );
    }
}
