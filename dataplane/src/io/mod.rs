//! The I/O layer: moves packets between port queues and the pipeline, and nothing else.
//!
//! A port is one namespace's `eth0`. With a multi-queue TUN device every worker owns one
//! queue of every port (the kernel spreads the namespace's flows over the queues by hash,
//! so one flow stays on one worker and keeps its order). A worker runs to completion:
//! read a packet from a ready queue, judge it, write it to its own queue of the output
//! port, take the next. It reuses one buffer, loads the snapshot once per batch and never
//! allocates or locks per packet.
//!
//! The device is a trait ([`Queue`]) so that the batching and forwarding logic is tested
//! with in-memory queues ([`mem`]) without root; [`tun`] is the Linux device and
//! [`event_loop`] the epoll loop that drives a worker over TUN queues.

pub mod event_loop;
pub mod mem;
pub mod mirror;
pub mod tun;
pub mod udp_gro;

use std::io;

use crate::observer::NoObserver;
use crate::offload::{self, Offload};
use crate::packet::Packet;
use crate::pipeline::{Pipeline, Verdict};
use crate::router_services::RouterServices;
use crate::snapshot::{LocalService, PortId, Snapshot};
use crate::Timestamp;

/// Packets read from one queue before the worker looks at the others (fairness), and the
/// unit of one snapshot load.
pub const BATCH: usize = 64;

/// Room for the largest packet a queue can hand over: an IPv6 packet with a full 64 KiB
/// payload (40 + 65,535 bytes), the largest GSO super-packet an offloading TUN hands
/// over (IPv6 UDP segmentation can reach it; IPv4 and TSO stay at 64 KiB).
pub const BUFFER_SIZE: usize = 40 + 65_535;

/// One queue of a port: a packet device that moves whole IP packets, each with its
/// offload state (a GSO super-packet, a partial checksum; [`Offload::NONE`] on a device
/// without offloads).
pub trait Queue {
    /// Reads one packet into `buf`, returning its length and setting `meta`.
    /// `WouldBlock` when empty.
    fn recv(&self, buf: &mut [u8], meta: &mut Offload) -> io::Result<usize>;
    /// Writes one whole packet with its offload state.
    fn send(&self, packet: &[u8], meta: &Offload) -> io::Result<()>;
    /// Whether the device takes UDP GSO super-packets (USO) on write.
    fn takes_uso(&self) -> bool {
        false
    }
}

/// A port this worker has no queue for (a hole left by a removed instance, or a port a
/// newer configuration added before the worker got its queue): reads find nothing, writes
/// fail and are counted.
impl<Q: Queue> Queue for Option<Q> {
    #[inline]
    fn recv(&self, buf: &mut [u8], meta: &mut Offload) -> io::Result<usize> {
        match self {
            Some(q) => q.recv(buf, meta),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    #[inline]
    fn takes_uso(&self) -> bool {
        self.as_ref().is_some_and(|q| q.takes_uso())
    }

    #[inline]
    fn send(&self, packet: &[u8], meta: &Offload) -> io::Result<()> {
        match self {
            Some(q) => q.send(packet, meta),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

/// One worker's state: its pipeline (counters, later flow state) and its packet buffer.
pub struct Worker {
    pub pipeline: Pipeline,
    /// The router's own services (ping of the subnet router, DNS), answered here.
    pub services: RouterServices,
    buf: Box<[u8]>,
    /// Where a super-packet for a router-local service is cut into segments.
    segment_buf: Box<[u8]>,
    /// `--udp-gro`: runs of one flow's datagrams leave as one USO write.
    pub udp_gro: Option<udp_gro::UdpGro>,
    /// Where traffic-mirror copies go (R-TM).
    pub mirror: mirror::MirrorOut,
}

impl Default for Worker {
    fn default() -> Self {
        Worker::new()
    }
}

impl Worker {
    /// A worker with a pipeline of its own (tests).
    pub fn new() -> Self {
        Worker::with_pipeline(Pipeline::new())
    }

    /// A worker over `pipeline`, which shares the flow state with the other workers.
    pub fn with_pipeline(pipeline: Pipeline) -> Self {
        Worker {
            pipeline,
            services: RouterServices::new(),
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            segment_buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            udp_gro: None,
            mirror: mirror::MirrorOut::new(9001),
        }
    }

    /// Reads up to [`BATCH`] packets from `queues[ingress]`, judges each and writes the
    /// forwarded ones to `queues[out]`. `queues` holds this worker's queue of every port,
    /// indexed by port id. Returns how many packets were read, or the error of a queue
    /// that failed (its device is gone): the caller stops polling it.
    ///
    /// A packet for a router-local service (the subnet router, DNS) is answered by
    /// [`RouterServices`] into the same buffer and the answer goes back out of `ingress`.
    pub fn drain<Q: Queue>(
        &mut self,
        snap: &Snapshot,
        ingress: PortId,
        queues: &[Q],
        now: Timestamp,
    ) -> io::Result<usize> {
        let Some(input) = queues.get(ingress.ix()) else {
            return Ok(0);
        };
        let mut read = 0;
        let result = self.drain_batch(snap, ingress, input, queues, now, &mut read);
        // A run of coalesced datagrams leaves with the batch that built it.
        if let Some(gro) = &mut self.udp_gro {
            gro.flush(queues, &mut self.pipeline.stats);
        }
        result.map(|()| read)
    }

    fn drain_batch<Q: Queue>(
        &mut self,
        snap: &Snapshot,
        ingress: PortId,
        input: &Q,
        queues: &[Q],
        now: Timestamp,
        read: &mut usize,
    ) -> io::Result<()> {
        let mut meta = Offload::NONE;
        while *read < BATCH {
            let len = match input.recv(&mut self.buf, &mut meta) {
                // A zero-length read is judged like any packet (MALFORMED): counted, not lost.
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.pipeline.stats.rx_errors += 1;
                    return Err(e);
                }
            };
            *read += 1;
            // The whole buffer goes in, so the router may answer with more bytes than it got.
            let verdict = self.pipeline.process_offloaded(
                snap,
                ingress,
                &mut self.buf,
                len,
                &meta,
                now,
                &mut NoObserver,
            );
            // R-TM: the copies this packet left, whatever its verdict.
            if self.pipeline.mirror.taken > 0 {
                self.mirror.emit(
                    snap,
                    &mut self.pipeline.mirror,
                    queues,
                    &mut self.pipeline.stats,
                    now,
                );
            }
            if let Some(gro) = &mut self.udp_gro {
                let stats = &mut self.pipeline.stats;
                match verdict {
                    Verdict::Forward(out) => {
                        if gro.offer(out, &self.buf[..len], &meta, queues, stats) {
                            continue;
                        }
                    }
                    // A drop writes nothing, so the run may go on past it.
                    Verdict::Drop(_) => {}
                    _ => gro.flush(queues, stats),
                }
            }
            let translated_meta;
            let (out, bytes, out_meta) = match verdict {
                // A forwarded super-packet leaves as it came: one write, the same header.
                Verdict::Forward(out) => (out, &self.buf[..len], &meta),
                // NAT64 changed its family: the header says so too.
                Verdict::Translated { port, len, .. } => {
                    translated_meta = meta.translated(self.buf[0] >> 4 == 6);
                    (port, &self.buf[..len as usize], &translated_meta)
                }
                Verdict::Reply { port, len } => {
                    (port, &self.buf[..usize::from(len)], &Offload::NONE)
                }
                Verdict::Local(service) => {
                    self.answer_local(snap, ingress, service, len, &meta, queues, now);
                    continue;
                }
                Verdict::Drop(_) => continue,
            };
            let sent = match queues.get(out.ix()) {
                Some(q) => q.send(bytes, out_meta).is_ok(),
                // A port that a newer snapshot added and this worker has no queue for.
                None => false,
            };
            if !sent {
                // Every segment of a lost super-packet, as `tx_packets` counted them.
                let segs = if out_meta.is_gso() {
                    offload::segments(bytes.len(), usize::from(out_meta.hdr_len), out_meta.size)
                } else {
                    1
                };
                self.pipeline.stats.tx_errors(out, segs as u64);
            }
        }
        Ok(())
    }

    /// Hands a packet for the router itself to [`RouterServices`], whose answers go back
    /// out of `ingress`. The services parse real packets (smoltcp checks checksums), so a
    /// partial checksum is completed and a super-packet cut into its segments first.
    #[allow(clippy::too_many_arguments)]
    fn answer_local<Q: Queue>(
        &mut self,
        snap: &Snapshot,
        ingress: PortId,
        service: LocalService,
        len: usize,
        meta: &Offload,
        queues: &[Q],
        now: Timestamp,
    ) {
        let q = queues.get(ingress.ix());
        let stats = &mut self.pipeline.stats;
        let mut send = |p: &[u8]| {
            if q.is_some_and(|q| q.send(p, &Offload::NONE).is_ok()) {
                stats.count_answer(ingress, p.len());
            }
        };
        if !meta.is_gso() {
            offload::complete_checksum(&mut self.buf[..len], meta);
            self.services
                .answer(snap, ingress, service, &mut self.buf, len, now, &mut send);
            return;
        }
        let Ok(pkt) = Packet::parse(&self.buf[..len]) else {
            return;
        };
        let mut i = 0;
        while let Some(n) = offload::segment(&self.buf[..len], &pkt, meta, i, &mut self.segment_buf)
        {
            self.services.answer(
                snap,
                ingress,
                service,
                &mut self.segment_buf,
                n,
                now,
                &mut send,
            );
            i += 1;
        }
    }
}
