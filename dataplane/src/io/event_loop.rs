//! The worker loop over TUN queues: epoll for readiness, an eventfd to stop.
//!
//! Level-triggered epoll: a queue with more than one batch waiting is reported again on
//! the next wait, after the other ready queues had their turn. The snapshot is loaded once
//! per wake-up and the clock read once, as the dataplane's rules ask.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Queue, Worker};
use crate::snapshot::{PortId, SnapshotCell};
use crate::Timestamp;

/// The epoll token of the stop event; port tokens are port ids.
const STOP: u64 = u64::MAX;
/// The epoll token of the queue-change wake-up.
const CHANGES: u64 = u64::MAX - 1;

/// Ready events taken per wait.
const EVENTS: usize = 64;

/// A wake-up for workers blocked in epoll: one write stops them all.
#[derive(Debug)]
pub struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd has no pointer arguments.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        Ok(StopSignal {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Wakes every worker waiting on this signal; they return from [`run`]. The counter is
    /// never read back, so the event stays readable for all of them.
    pub fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// A change of a worker's queues at run time: a port added by a new configuration (its
/// namespace and TUN device were just built), or removed (the queue is closed).
pub enum QueueChange<Q> {
    Add(PortId, Q),
    Remove(PortId),
}

/// How the control thread reaches one worker between batches: a channel of
/// [`QueueChange`]s, an eventfd that wakes the worker to read it, and a counter of the
/// changes the worker has carried out (so the control thread can wait for them).
pub struct WorkerControl<Q> {
    pub changes: std::sync::mpsc::Receiver<QueueChange<Q>>,
    pub wake: std::sync::Arc<Wakeup>,
    pub done: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An eventfd that wakes one worker; reading it clears it.
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
}

impl Wakeup {
    pub fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd has no pointer arguments.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        Ok(Wakeup {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no pointer arguments.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, fd: i32) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer; a null one is allowed.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is valid for `events.len()` entries for the whole call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

/// The wall clock as the pipeline's [`Timestamp`]: read once per batch, here in the I/O
/// layer, never inside the pipeline.
pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_nanos() as u64)
}

/// How often a worker hands a copy of its counters to readers (`vpcd stats`, metrics).
pub const PUBLISH_EVERY_NS: u64 = 100_000_000;

/// Runs `worker` over its `queues` (one per port, indexed by port id) until `stop` is
/// raised. Every [`PUBLISH_EVERY_NS`] (and when it stops) it calls `publish` with its
/// counters: they stay plain per-worker integers on the packet path, and readers sum the
/// published copies. Errors only if epoll itself fails. A queue whose device fails (deleted by hand,
/// say) is counted in `rx_errors` and no longer polled, so it cannot spin the worker; the
/// other ports go on.
pub fn run<Q: Queue + AsRawFd>(
    worker: &mut Worker,
    cell: &SnapshotCell,
    queues: &mut Vec<Option<Q>>,
    stop: &StopSignal,
    control: Option<&WorkerControl<Q>>,
    publish: &mut dyn FnMut(&crate::Stats),
    flow_lines: &mut dyn FnMut(crate::flow_log::Line) -> bool,
) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.add(stop.fd.as_raw_fd(), STOP)?;
    if let Some(c) = control {
        epoll.add(c.wake.fd.as_raw_fd(), CHANGES)?;
    }
    for (port, q) in queues.iter().enumerate() {
        if let Some(q) = q {
            epoll.add(q.as_raw_fd(), port as u64)?;
        }
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut published = 0u64;
    loop {
        // Wakes at least as often as it publishes, so idle workers report too.
        let n = epoll.wait(&mut events, (PUBLISH_EVERY_NS / 1_000_000) as i32)?;
        let now = now();
        if now.0.saturating_sub(published) >= PUBLISH_EVERY_NS {
            publish(counters(worker));
            // Flow-log windows that are over: formatted here, between batches.
            worker
                .pipeline
                .flow_logs
                .flush(&cell.load(), now.secs(), false, flow_lines);
            published = now.0;
        }
        if n == 0 {
            continue;
        }
        let snap = cell.load();
        for ev in &events[..n] {
            let token = ev.u64;
            if token == STOP {
                publish(counters(worker));
                // R-FL-WRITE: every open window is written at shutdown.
                worker
                    .pipeline
                    .flow_logs
                    .flush(&snap, now.secs(), true, flow_lines);
                return Ok(());
            }
            if token == CHANGES {
                if let Some(c) = control {
                    apply_changes(&epoll, queues, c);
                }
                continue;
            }
            let port = PortId(token as u32);
            let failed = ev.events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0
                || worker.drain(&snap, port, queues, now).is_err();
            if failed {
                if let Some(Some(q)) = queues.get(port.ix()) {
                    epoll.remove(q.as_raw_fd());
                }
            }
        }
    }
}

/// The worker's counters as readers see them: the pipeline's, with its router services'
/// and its flow logs' (kept apart on the packet path, joined here when publishing).
fn counters(worker: &mut Worker) -> &crate::Stats {
    worker.pipeline.stats.services = worker.services.counters;
    worker.pipeline.stats.flow_log_lost = worker.pipeline.flow_logs.lost;
    &worker.pipeline.stats
}

/// Takes the queue changes the control thread sent: off the packet path (between
/// batches), so the queue table may grow here.
fn apply_changes<Q: Queue + AsRawFd>(
    epoll: &Epoll,
    queues: &mut Vec<Option<Q>>,
    c: &WorkerControl<Q>,
) {
    c.wake.clear();
    while let Ok(change) = c.changes.try_recv() {
        match change {
            QueueChange::Add(port, q) => {
                if queues.len() <= port.ix() {
                    queues.resize_with(port.ix() + 1, || None);
                }
                // A failed registration leaves the port unread; its writes still work.
                let _ = epoll.add(q.as_raw_fd(), u64::from(port.0));
                queues[port.ix()] = Some(q);
            }
            QueueChange::Remove(port) => {
                if let Some(slot) = queues.get_mut(port.ix()) {
                    if let Some(q) = slot.take() {
                        epoll.remove(q.as_raw_fd());
                    }
                }
            }
        }
        c.done.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}
