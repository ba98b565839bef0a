//! Sends the traffic-mirror copies the pipeline took ([`MirrorStage`]): to an instance
//! target in VXLAN through the worker's queue of its port, or to the capture writer (a
//! thread of the control side) as Ethernet frames with their outcome.
//!
//! A GSO super-packet is mirrored as the segments it stands for, each with complete
//! checksums, as a wire would carry them (AWS mirrors packets, not what a host's stack
//! batched). Nothing here allocates once a worker's buffers are sized: capture records
//! travel in buffers the writer hands back ([`MirrorSink`]).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use super::Queue;
use crate::observer::Direction;
use crate::offload::{self, Offload};
use crate::packet::Packet;
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use crate::traffic_mirror::{
    encapsulate, ethernet, source_port, MirrorStage, MirrorTarget, Outcome, MAX_COPY, OVERHEAD,
};
use crate::Timestamp;

/// The most bytes of one capture record: an Ethernet frame of a 9001-byte packet.
pub const RECORD_BYTES: usize = 14 + 9216;

/// Buffers each worker gets for capture records (a burst that size waits in the writer's
/// queue; beyond, records are lost and counted).
pub const RECORDS_PER_WORKER: usize = 256;

/// One packet for a capture file.
#[derive(Debug)]
pub struct Record {
    /// Which file ([`crate::traffic_mirror::Mirroring::files`]).
    pub file: u32,
    /// Which session took it (the file's interface).
    pub session: u32,
    pub dir: Direction,
    pub outcome: Outcome,
    pub at: Timestamp,
    /// The frame's length before `packet_length` cut it.
    pub original_len: u32,
    /// `data[..len]` is the Ethernet frame.
    pub len: usize,
    pub data: Vec<u8>,
    /// The worker that sent it, whose buffer it is.
    pub worker: u16,
}

/// A worker's line to the capture writer: records go out, their buffers come back.
pub struct MirrorSink {
    pub records: SyncSender<Record>,
    pub free: Receiver<Vec<u8>>,
}

/// A worker's mirroring state.
#[derive(Default)]
pub struct MirrorOut {
    pub sink: Option<MirrorSink>,
    /// The MTU of the instances' `eth0` (the target's): copies are cut to fit (AWS
    /// truncates a mirrored packet that the encapsulation makes larger than it).
    pub mtu: usize,
    pub worker: u16,
    /// A record the writer's queue refused, kept for the next one.
    spare: Option<Vec<u8>>,
    segment: Vec<u8>,
    frame: Vec<u8>,
    packet: Vec<u8>,
}

impl MirrorOut {
    /// A worker's mirroring, for targets whose `eth0` has `mtu`; no capture sink yet.
    pub fn new(mtu: usize) -> MirrorOut {
        MirrorOut {
            mtu,
            ..MirrorOut::default()
        }
    }

    /// Sends the copies in `stage` (the packet just judged).
    pub fn emit<Q: Queue>(
        &mut self,
        snap: &Snapshot,
        stage: &mut MirrorStage,
        queues: &[Q],
        stats: &mut Stats,
        now: Timestamp,
    ) {
        if self.segment.is_empty() {
            // Once per worker, at its first copy.
            self.segment = vec![0; MAX_COPY];
            self.frame = vec![0; MAX_COPY + 14];
            self.packet = vec![0; MAX_COPY + OVERHEAD];
        }
        let mirroring = &snap.topo.traffic_mirror;
        for copy in stage.copies[..stage.taken].iter_mut().flatten() {
            let Some(session) = mirroring.sessions.get(copy.session as usize) else {
                continue;
            };
            // Only packets that crossed the ENI reach an instance; a capture file keeps
            // them all, with what became of them.
            if let MirrorTarget::Eni { admitted, .. } = &session.target {
                if !copy.crossed {
                    continue;
                }
                if admitted.is_err() {
                    stats.mirror_refused += 1;
                    continue;
                }
            }
            let len = copy.len;
            let Ok(pkt) = Packet::parse(&copy.buf[..len]) else {
                continue;
            };
            let Ok(pkt) = pkt.with_offload(&copy.buf[..len], &copy.meta) else {
                continue;
            };
            let sport = source_port(pkt.src, pkt.dst, pkt.proto, pkt.ports());
            let source = snap.eni(session.source);
            let zone = source.zone;
            let count = if copy.meta.is_gso() {
                let hdr = offload::headers_end(&copy.buf[..len], &pkt)
                    .unwrap_or(usize::from(copy.meta.hdr_len));
                offload::segments(len, hdr, copy.meta.size)
            } else {
                offload::complete_checksum(&mut copy.buf[..len], &copy.meta);
                1
            };
            for i in 0..count {
                let ip: &[u8] = if copy.meta.is_gso() {
                    match offload::segment(&copy.buf[..len], &pkt, &copy.meta, i, &mut self.segment)
                    {
                        Some(n) => &self.segment[..n],
                        None => break,
                    }
                } else {
                    &copy.buf[..len]
                };
                let cut = match session.packet_length {
                    0 => usize::MAX,
                    n => usize::from(n),
                };
                match &session.target {
                    MirrorTarget::Eni { eni, port, .. } => {
                        let (Some(src), Some(dst)) =
                            (source.primary_v4(), snap.eni(*eni).primary_v4())
                        else {
                            continue;
                        };
                        let room = self.mtu.saturating_sub(OVERHEAD - 14);
                        let n = ethernet(&mut self.frame, ip, copy.dir, zone, cut.min(room));
                        let total = encapsulate(
                            &mut self.packet,
                            src,
                            dst,
                            session.vni,
                            sport,
                            &self.frame[..n],
                        );
                        let sent = queues
                            .get(port.ix())
                            .is_some_and(|q| q.send(&self.packet[..total], &Offload::NONE).is_ok());
                        stats.count_mirrored(*port, total, sent);
                    }
                    MirrorTarget::File(file) => {
                        let Some(sink) = &self.sink else {
                            stats.mirror_lost += 1;
                            continue;
                        };
                        let Some(mut data) =
                            self.spare.take().or_else(|| sink.free.try_recv().ok())
                        else {
                            stats.mirror_lost += 1;
                            continue;
                        };
                        let n = ethernet(&mut data, ip, copy.dir, zone, cut);
                        let record = Record {
                            file: *file,
                            session: copy.session,
                            dir: copy.dir,
                            outcome: copy.outcome,
                            at: now,
                            original_len: (14 + ip.len()) as u32,
                            len: n,
                            data,
                            worker: self.worker,
                        };
                        match sink.records.try_send(record) {
                            Ok(()) => stats.mirror_captured += 1,
                            Err(TrySendError::Full(r)) | Err(TrySendError::Disconnected(r)) => {
                                self.spare = Some(r.data);
                                stats.mirror_lost += 1;
                            }
                        }
                    }
                }
            }
        }
        stage.clear();
    }
}
