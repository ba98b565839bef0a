//! An in-memory [`Queue`] for tests: packets pushed in are read by the worker, packets the
//! worker sends are collected. It allocates per packet, which is fine off the real path.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

use super::Queue;

#[derive(Default)]
pub struct MemQueue {
    /// Packets waiting to be read by the worker (what the namespace sent).
    pub inbound: RefCell<VecDeque<Vec<u8>>>,
    /// Packets the worker wrote (what the namespace receives).
    pub outbound: RefCell<Vec<Vec<u8>>>,
    /// When set, every send fails, as a write to a vanished device would.
    pub fail_sends: bool,
    /// When set, every read fails, as a read from a deleted device does.
    pub fail_recv: bool,
}

impl MemQueue {
    pub fn new() -> Self {
        MemQueue::default()
    }

    /// Queues a packet as if the namespace had sent it.
    pub fn push(&self, packet: &[u8]) {
        self.inbound.borrow_mut().push_back(packet.to_vec());
    }

    /// Takes what the worker has written so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbound.borrow_mut())
    }
}

impl Queue for MemQueue {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fail_recv {
            return Err(io::Error::other("device gone"));
        }
        match self.inbound.borrow_mut().pop_front() {
            Some(p) => {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn send(&self, packet: &[u8]) -> io::Result<()> {
        if self.fail_sends {
            return Err(io::Error::other("device gone"));
        }
        self.outbound.borrow_mut().push(packet.to_vec());
        Ok(())
    }
}
