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
pub mod tun;

use std::io;

use crate::observer::NoObserver;
use crate::pipeline::{Pipeline, Verdict};
use crate::router_services::RouterServices;
use crate::snapshot::{PortId, Snapshot};
use crate::Timestamp;

/// Packets read from one queue before the worker looks at the others (fairness), and the
/// unit of one snapshot load.
pub const BATCH: usize = 64;

/// Room for the largest packet a queue can hand over: 64 KiB, so the buffer also fits the
/// GSO super-packets of an offloading TUN.
pub const BUFFER_SIZE: usize = 65_536;

/// One queue of a port: a packet device that moves whole IP packets.
pub trait Queue {
    /// Reads one packet into `buf`, returning its length. `WouldBlock` when empty.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one whole packet.
    fn send(&self, packet: &[u8]) -> io::Result<()>;
}

/// A port this worker has no queue for (a hole left by a removed instance, or a port a
/// newer configuration added before the worker got its queue): reads find nothing, writes
/// fail and are counted.
impl<Q: Queue> Queue for Option<Q> {
    #[inline]
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Some(q) => q.recv(buf),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    #[inline]
    fn send(&self, packet: &[u8]) -> io::Result<()> {
        match self {
            Some(q) => q.send(packet),
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
        while read < BATCH {
            let len = match input.recv(&mut self.buf) {
                // A zero-length read is judged like any packet (MALFORMED): counted, not lost.
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.pipeline.stats.rx_errors += 1;
                    return Err(e);
                }
            };
            read += 1;
            // The whole buffer goes in, so the router may answer with more bytes than it got.
            let verdict =
                self.pipeline
                    .process_in(snap, ingress, &mut self.buf, len, now, &mut NoObserver);
            let (out, bytes) = match verdict {
                Verdict::Forward(out) => (out, &self.buf[..len]),
                Verdict::Reply { port, len } => (port, &self.buf[..usize::from(len)]),
                Verdict::Local(service) => {
                    let q = queues.get(ingress.ix());
                    let stats = &mut self.pipeline.stats;
                    self.services.answer(
                        snap,
                        ingress,
                        service,
                        &mut self.buf,
                        len,
                        now,
                        &mut |p: &[u8]| {
                            if q.is_some_and(|q| q.send(p).is_ok()) {
                                stats.count_answer(ingress, p.len());
                            }
                        },
                    );
                    continue;
                }
                Verdict::Drop(_) => continue,
            };
            let sent = match queues.get(out.ix()) {
                Some(q) => q.send(bytes).is_ok(),
                // A port that a newer snapshot added and this worker has no queue for.
                None => false,
            };
            if !sent {
                self.pipeline.stats.tx_error(out);
            }
        }
        Ok(read)
    }
}
