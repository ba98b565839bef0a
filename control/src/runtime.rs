//! `vpcd up` at run time: workers over the lab's TUN queues, signals, and an orderly stop.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked before any thread starts (every thread inherits
//! the mask), and the main thread takes them with `sigtimedwait`: no handler runs inside a
//! worker, and a signal that arrives while the lab is still being built waits until the
//! build is done, then tears it down.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::conntrack::Conntrack;
use dataplane::io::event_loop::{self, StopSignal};
use dataplane::io::tun::TunQueue;
use dataplane::io::Worker;
use dataplane::{DropReason, Pipeline, Snapshot, SnapshotCell, Stats};

use crate::lab::{self, Lab, LabError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("cannot start worker {worker}: {source}")]
    Spawn { worker: usize, source: io::Error },
    #[error("worker {worker} stopped: {reason}")]
    Worker { worker: usize, reason: String },
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the signals `up` waits for, in the calling thread and every thread it starts
/// from now on.
fn block_signals() {
    let set = signal_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits up to `timeout` for one of the blocked signals.
fn wait_signal(timeout: Duration) -> Option<i32> {
    let set = signal_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

type WorkerResult = io::Result<Stats>;

fn spawn_workers(
    cell: &Arc<SnapshotCell>,
    stop: &Arc<StopSignal>,
    conntrack: &Arc<Conntrack>,
    queues: lab::WorkerQueues,
) -> Result<Vec<JoinHandle<WorkerResult>>, RunError> {
    let mut handles = Vec::new();
    let n = queues.len();
    for (w, queues) in queues.into_iter().enumerate() {
        let cell = Arc::clone(cell);
        let stop = Arc::clone(stop);
        let conntrack = Arc::clone(conntrack);
        let handle = std::thread::Builder::new()
            .name(format!("vpcd-worker-{w}"))
            .spawn(move || {
                let queues: Vec<TunQueue> = queues;
                let mut worker =
                    Worker::with_pipeline(Pipeline::with_shared(conntrack, w as u16, n as u16));
                event_loop::run(&mut worker, &cell, &queues, &stop)?;
                Ok(worker.pipeline.stats)
            })
            .map_err(|source| RunError::Spawn { worker: w, source })?;
        handles.push(handle);
    }
    Ok(handles)
}

fn join(handles: Vec<JoinHandle<WorkerResult>>) -> (Stats, Option<RunError>) {
    let mut total = Stats::default();
    let mut failure = None;
    for (w, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => {
                failure = Some(RunError::Worker {
                    worker: w,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                failure = Some(RunError::Worker {
                    worker: w,
                    reason: "panicked".into(),
                })
            }
        }
    }
    (total, failure)
}

/// Builds the lab of `snap`, prints its map and `ready`, forwards until SIGINT or SIGTERM,
/// then stops the workers, removes the lab and returns the counters. `title` names the
/// lab in the first line of the map.
pub fn up(snap: Snapshot, title: &str, opts: &lab::Options) -> Result<Stats, RunError> {
    block_signals();
    let (mut lab, queues) = Lab::build(&snap, opts)?;
    let mut out = io::stdout().lock();
    // A closed stdout must not stop the router: output errors are ignored.
    let _ = writeln!(
        out,
        "vpcd: lab {title} ({}), {} namespace(s), {} worker(s), MTU {}, conntrack {} flows",
        snap.topo.region,
        lab.namespaces.len(),
        queues.len(),
        opts.mtu,
        opts.conntrack_max
    );
    let _ = write!(out, "{}", lab::describe(&snap, &lab.namespaces));
    let cell = Arc::new(SnapshotCell::new(snap));
    let stop = Arc::new(StopSignal::new().map_err(|source| RunError::Spawn { worker: 0, source })?);
    // One table for all workers: a flow's reply may arrive on another worker's queue.
    let conntrack = Arc::new(Conntrack::new(opts.conntrack_max));
    let handles = match spawn_workers(&cell, &stop, &conntrack, queues) {
        Ok(h) => h,
        Err(e) => {
            stop.raise();
            return Err(e);
        }
    };
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    loop {
        match wait_signal(Duration::from_millis(500)) {
            Some(libc::SIGHUP) => eprintln!(
                "vpcd: SIGHUP: live apply is not in this build yet; the lab runs unchanged"
            ),
            Some(_) => break,
            None => {
                if handles.iter().any(|h| h.is_finished()) {
                    break;
                }
            }
        }
    }
    stop.raise();
    let (stats, failure) = join(handles);
    let torn = lab.teardown();
    drop(lab);
    let mut out = io::stdout().lock();
    let _ = write!(out, "{}", summary(&stats, &cell.load()));
    let _ = out.flush();
    if let Some(e) = failure {
        return Err(e);
    }
    torn?;
    Ok(stats)
}

/// The counters printed when the lab stops: totals, drops by reason and by precise cause
/// (which ENI's security groups, which NACL rule), then one line per port.
pub fn summary(stats: &Stats, snap: &Snapshot) -> String {
    use std::fmt::Write as _;
    let t = &snap.topo;
    let mut s = String::new();
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| stats.dropped(**r) > 0)
        .map(|r| format!("{r} {}", stats.dropped(*r)))
        .collect();
    let _ = writeln!(
        s,
        "vpcd: stopped; forwarded {}, answered {}, to the router {}, dropped {}{}",
        stats.forwarded,
        stats.replies,
        stats.local,
        stats.dropped_total(),
        if drops.is_empty() {
            String::new()
        } else {
            format!(" ({})", drops.join(", "))
        }
    );
    let sg: Vec<String> = stats
        .sg_drops
        .iter()
        .zip(&t.enis)
        .flat_map(|(c, eni)| {
            [("inbound", c[0]), ("outbound", c[1])]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(move |(dir, n)| format!("{} {dir} {n}", eni.id))
        })
        .collect();
    if !sg.is_empty() {
        let _ = writeln!(s, "  dropped by security groups: {}", sg.join(", "));
    }
    let nacl: Vec<String> = stats
        .nacl_drops
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(i, n)| {
            t.network_acls
                .iter()
                .find_map(|a| a.counter_name(i as u32))
                .map(|name| format!("{name}: {n}"))
        })
        .collect();
    if !nacl.is_empty() {
        let _ = writeln!(s, "  dropped by network ACLs: {}", nacl.join(", "));
    }
    if stats.rx_errors > 0 {
        let _ = writeln!(s, "  read errors: {}", stats.rx_errors);
    }
    let width = t
        .ports
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:width$}  {:>10} {:>12} {:>10} {:>12} {:>9}",
        "port", "rx packets", "rx bytes", "tx packets", "tx bytes", "tx errors"
    );
    for (i, port) in t.ports.iter().enumerate() {
        let c = stats.ports.get(i).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:width$}  {:>10} {:>12} {:>10} {:>12} {:>9}",
            port.name, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.tx_errors
        );
    }
    s
}
