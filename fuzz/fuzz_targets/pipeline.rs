//! The packet pipeline on arbitrary bytes, over the default lab (with a flow log), as a
//! TUN worker would meet them: with and without a virtio-net header, on every port.
//!
//! One pipeline state (connection tracking, NAT ports, flow-log aggregates, the metadata
//! service's TCP stacks) lives across inputs and the clock only moves forward, so replies,
//! translations and expiries are reached: an input is judged in the state the ones
//! before it left. A crash that does not reproduce from its input alone needs the inputs
//! before it (docs/fuzzing.md).
//!
//! Input: `control`, `time step`, [10-byte virtio-net header], IP packet.
//!
//! - `control` bits 0-2: the ingress port, among the lab's ports and one past them (a
//!   port the configuration does not know);
//! - bit 3: repair the checksums (IPv4 header, transport) before judging;
//! - bit 4: a virtio-net header precedes the packet (an offloading TUN's read);
//! - bit 5: judge it directly with `Pipeline::process*` in a buffer that holds exactly the
//!   packet (no room for a longer answer); else a worker reads it from an in-memory queue
//!   (`process_offloaded` in a 64 KiB buffer, router services, super-packet segmentation);
//! - bit 6: what is forwarded is answered: its reply (addresses and ports swapped, a SYN
//!   answered by a SYN-ACK, an echo request by its reply) comes back from the output port;
//! - bit 7 (worker only): UDP coalescing is on and the packet arrives three times in one
//!   batch, so that runs of datagrams form.
//! - `time step`: see `Clock::advance`.

#![no_main]

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use dataplane::checksum;
use dataplane::conntrack::Conntrack;
use dataplane::io::mem::MemQueue;
use dataplane::io::udp_gro::UdpGro;
use dataplane::io::{Worker, BUFFER_SIZE};
use dataplane::offload::{self, Offload, VNET_HDR_LEN};
use dataplane::packet::{proto, Transport};
use dataplane::router_services::tcp_services::TcpServices;
use dataplane::router_services::RouterServices;
use dataplane::{NoObserver, Packet, Pipeline, PortId, Snapshot, Timestamp, Verdict};
use libfuzzer_sys::fuzz_target;
use vpcd_fuzz::{default_lab, fix_checksums, Clock};

const PORT_BITS: u8 = 0x07;
const FIX_CHECKSUMS: u8 = 0x08;
const VIRTIO: u8 = 0x10;
const DIRECT: u8 = 0x20;
const ANSWER: u8 = 0x40;
const COALESCE: u8 = 0x80;

/// Flow-log windows are closed (and their lines formatted) every this many inputs.
const FLUSH_EVERY: u64 = 1024;

/// Two workers' worth of state over one flow table, as `vpcd up` runs on two cores.
struct State {
    clock: Clock,
    /// Worker 0: reads from in-memory queues, answers router-local packets itself.
    worker: Worker,
    queues: Vec<MemQueue>,
    /// Worker 1's pipeline, called directly, and its router services.
    direct: Pipeline,
    services: RouterServices,
    /// The worker's UDP coalescing state while it is off for an input (kept, not rebuilt:
    /// it owns a 64 KiB buffer).
    gro: Option<UdpGro>,
    inputs: u64,
}

impl State {
    fn new(snap: &Snapshot) -> State {
        let ct = Arc::new(Conntrack::new(dataplane::pipeline::TEST_CONNTRACK_CAPACITY));
        let metadata = Some(Arc::new(Mutex::new(TcpServices::new())));
        let mut worker = Worker::with_pipeline(Pipeline::with_shared(ct.clone(), 0, 2));
        worker.services.metadata = metadata.clone();
        let mut services = RouterServices::new();
        services.metadata = metadata;
        let queues = (0..snap.topo.ports.len())
            .map(|_| MemQueue {
                uso: true,
                ..MemQueue::default()
            })
            .collect();
        State {
            clock: Clock::default(),
            worker,
            queues,
            direct: Pipeline::with_shared(ct, 1, 2),
            services,
            gro: Some(UdpGro::new()),
            inputs: 0,
        }
    }

    /// The worker reads `packet` (`copies` times) from `port`'s queue; returns what it
    /// wrote to other ports.
    fn through_worker(
        &mut self,
        snap: &Snapshot,
        port: PortId,
        packet: &[u8],
        meta: Offload,
        copies: usize,
        now: Timestamp,
    ) -> Vec<(PortId, Vec<u8>, Offload)> {
        let Some(q) = self.queues.get(port.ix()) else {
            // A port past the lab's: the worker has no queue to read it from.
            return Vec::new();
        };
        for _ in 0..copies {
            q.push_offloaded(packet, meta);
        }
        let _ = self.worker.drain(snap, port, &self.queues, now);
        let mut forwarded = Vec::new();
        for (ix, q) in self.queues.iter().enumerate() {
            let out = PortId(ix as u32);
            for (bytes, meta) in q.take_sent_offloaded() {
                if out != port {
                    forwarded.push((out, bytes, meta));
                }
            }
        }
        forwarded
    }

    /// `Pipeline::process_offloaded` on a buffer that holds exactly the packet; a
    /// router-local packet goes on to the router's services.
    fn direct(
        &mut self,
        snap: &Snapshot,
        port: PortId,
        packet: &[u8],
        meta: Offload,
        now: Timestamp,
    ) -> Vec<(PortId, Vec<u8>, Offload)> {
        let mut buf = packet.to_vec();
        let len = buf.len();
        let verdict = if meta == Offload::NONE {
            self.direct
                .process(snap, port, &mut buf, now, &mut NoObserver)
        } else {
            self.direct
                .process_offloaded(snap, port, &mut buf, len, &meta, now, &mut NoObserver)
        };
        match verdict {
            Verdict::Forward(out) => vec![(out, buf, meta)],
            // NAT64 changed the family, and the length: it had to fit the buffer it got.
            Verdict::Translated { port, len, .. } => {
                let len = len as usize;
                assert!(
                    len <= buf.len(),
                    "a translated packet longer than its buffer"
                );
                buf.truncate(len);
                let meta = meta.translated(buf.first().is_some_and(|b| b >> 4 == 6));
                vec![(port, buf, meta)]
            }
            Verdict::Reply { len, .. } => {
                assert!(
                    usize::from(len) <= buf.len(),
                    "a reply longer than its buffer"
                );
                Vec::new()
            }
            // A super-packet for the router is cut into segments by the worker only.
            Verdict::Local(_) if meta.is_gso() => Vec::new(),
            Verdict::Local(service) => {
                // As `control/tests/router_services.rs` asks: room for a longer answer, and
                // as the worker does: a partial checksum completed first.
                offload::complete_checksum(&mut buf, &meta);
                buf.resize(4096.max(len), 0);
                self.services
                    .answer(snap, port, service, &mut buf, len, now, &mut |_| {});
                Vec::new()
            }
            Verdict::Drop(_) => Vec::new(),
        }
    }
}

/// The reply to `packet`: addresses and ports swapped, a SYN answered by a SYN-ACK, an
/// echo request by its reply. Checksums stay right: swapping keeps every sum, and the
/// changed words are updated incrementally.
fn reply_to(packet: &mut [u8]) -> bool {
    let Ok(pkt) = Packet::parse(packet) else {
        return false;
    };
    let (a, b, n) = if pkt.is_ipv6() {
        (8, 24, 16)
    } else {
        (12, 16, 4)
    };
    for i in 0..n {
        packet.swap(a + i, b + i);
    }
    let l4 = usize::from(pkt.l4_offset);
    match pkt.transport {
        Transport::Tcp { flags, .. } if packet.len() >= l4 + 20 => {
            for i in 0..2 {
                packet.swap(l4 + i, l4 + 2 + i);
            }
            if flags & 0x12 == 0x02 {
                // SYN → SYN-ACK acknowledging it.
                let word = |p: &[u8]| u16::from_be_bytes([p[l4 + 12], p[l4 + 13]]);
                let old_word = word(packet);
                packet[l4 + 13] |= 0x10;
                let seq = u32::from_be_bytes(packet[l4 + 4..l4 + 8].try_into().unwrap());
                let old_ack = u32::from_be_bytes(packet[l4 + 8..l4 + 12].try_into().unwrap());
                packet[l4 + 8..l4 + 12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
                let check = u16::from_be_bytes([packet[l4 + 16], packet[l4 + 17]]);
                let check = checksum::update16(check, old_word, word(packet));
                let check = checksum::update32(check, old_ack, seq.wrapping_add(1));
                packet[l4 + 16..l4 + 18].copy_from_slice(&check.to_be_bytes());
            }
        }
        Transport::Udp { .. } if packet.len() >= l4 + 8 => {
            for i in 0..2 {
                packet.swap(l4 + i, l4 + 2 + i);
            }
        }
        Transport::Icmp { ty, .. } if packet.len() >= l4 + 4 => {
            let answer = match (pkt.proto, ty) {
                (proto::ICMP, 8) => 0,
                (proto::ICMPV6, 128) => 129,
                _ => return true,
            };
            let check = u16::from_be_bytes([packet[l4 + 2], packet[l4 + 3]]);
            let old = u16::from_be_bytes([packet[l4], packet[l4 + 1]]);
            packet[l4] = answer;
            let new = u16::from_be_bytes([packet[l4], packet[l4 + 1]]);
            let check = checksum::update16(check, old, new);
            packet[l4 + 2..l4 + 4].copy_from_slice(&check.to_be_bytes());
        }
        _ => {}
    }
    true
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let [control, step, rest @ ..] = data else {
        return;
    };
    let snap = default_lab();
    let virtio = control & VIRTIO != 0;
    let (meta, packet) = if virtio {
        // As the TUN reads it: a read too short for the header leaves an empty packet.
        let mut hdr = [0u8; VNET_HDR_LEN];
        let n = rest.len().min(VNET_HDR_LEN);
        hdr[..n].copy_from_slice(&rest[..n]);
        (Offload::from_virtio(&hdr), &rest[n..])
    } else {
        (Offload::NONE, rest)
    };
    if packet.len() > BUFFER_SIZE {
        return;
    }
    let mut packet = packet.to_vec();
    if control & FIX_CHECKSUMS != 0 {
        fix_checksums(&mut packet);
    }
    let ports = snap.topo.ports.len() + 1;
    let port = PortId(u32::from(control & PORT_BITS) % ports as u32);

    STATE.with_borrow_mut(|state| {
        let mut st = state.get_or_insert_with(|| State::new(snap));
        let now = match st.clock.advance(*step) {
            Some(now) => now,
            None => {
                // A year has passed: a new router, with an empty flow table.
                st = state.insert(State::new(snap));
                st.clock.now()
            }
        };
        let state = st;
        state.inputs += 1;
        let coalesce = control & COALESCE != 0;
        if coalesce != state.worker.udp_gro.is_some() {
            std::mem::swap(&mut state.worker.udp_gro, &mut state.gro);
        }
        let forwarded = if control & DIRECT != 0 {
            state.direct(snap, port, &packet, meta, now)
        } else {
            let copies = if coalesce { 3 } else { 1 };
            state.through_worker(snap, port, &packet, meta, copies, now)
        };
        if control & ANSWER != 0 {
            for (out, mut bytes, meta) in forwarded {
                if reply_to(&mut bytes) {
                    state.through_worker(snap, out, &bytes, meta, 1, now);
                }
            }
        }
        if state.inputs % FLUSH_EVERY == 0 {
            for p in [&mut state.worker.pipeline, &mut state.direct] {
                p.flow_logs.flush(snap, now.secs(), false, &mut |_| true);
            }
        }
    });
});
