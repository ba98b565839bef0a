//! An in-memory [`Queue`] for tests: packets pushed in are read by the worker, packets the
//! worker sends are collected, each with its offload state. It allocates per packet,
//! which is fine off the real path.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

use super::Queue;
use crate::offload::Offload;

#[derive(Default)]
pub struct MemQueue {
    /// Packets waiting to be read by the worker (what the namespace sent).
    pub inbound: RefCell<VecDeque<(Vec<u8>, Offload)>>,
    /// Packets the worker wrote (what the namespace receives).
    pub outbound: RefCell<Vec<(Vec<u8>, Offload)>>,
    /// When set, every send fails, as a write to a vanished device would.
    pub fail_sends: bool,
    /// When set, every read fails, as a read from a deleted device does.
    pub fail_recv: bool,
    /// When set, the queue takes UDP GSO super-packets, as a TUN with USO does.
    pub uso: bool,
    /// When set, a UDP GSO write fails with EINVAL, as from a kernel that cannot take it.
    pub refuse_uso: bool,
}

impl MemQueue {
    pub fn new() -> Self {
        MemQueue::default()
    }

    /// Queues a packet as if the namespace had sent it.
    pub fn push(&self, packet: &[u8]) {
        self.push_offloaded(packet, Offload::NONE);
    }

    /// Queues a packet with an offload state (a GSO super-packet, a partial checksum), as
    /// an offloading TUN hands it over.
    pub fn push_offloaded(&self, packet: &[u8], meta: Offload) {
        self.inbound.borrow_mut().push_back((packet.to_vec(), meta));
    }

    /// Takes what the worker has written so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.take_sent_offloaded()
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    /// Takes what the worker has written so far, with each packet's offload state.
    pub fn take_sent_offloaded(&self) -> Vec<(Vec<u8>, Offload)> {
        std::mem::take(&mut self.outbound.borrow_mut())
    }
}

impl Queue for MemQueue {
    fn recv(&self, buf: &mut [u8], meta: &mut Offload) -> io::Result<usize> {
        if self.fail_recv {
            return Err(io::Error::other("device gone"));
        }
        match self.inbound.borrow_mut().pop_front() {
            Some((p, m)) => {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                *meta = m;
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn takes_uso(&self) -> bool {
        self.uso
    }

    fn send(&self, packet: &[u8], meta: &Offload) -> io::Result<()> {
        if self.fail_sends {
            return Err(io::Error::other("device gone"));
        }
        if self.refuse_uso && meta.gso == crate::offload::Gso::Udp {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.outbound.borrow_mut().push((packet.to_vec(), *meta));
        Ok(())
    }
}
