//! `vpcd up` at run time: workers over the lab's TUN queues, signals, and an orderly stop.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked before any thread starts (every thread inherits
//! the mask), and the main thread takes them with `sigtimedwait`: no handler runs inside a
//! worker, and a signal that arrives while the lab is still being built waits until the
//! build is done, then tears it down.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use dataplane::conntrack::Conntrack;
use dataplane::io::event_loop::{self, StopSignal, Wakeup, WorkerControl};
use dataplane::io::tun::TunQueue;
use dataplane::io::Worker;
use dataplane::router_services::tcp_services::TcpServices;
use dataplane::{Pipeline, Snapshot, SnapshotCell, Stats};

use crate::control_socket;
use crate::flow_log_writer;
use crate::generations::Generations;
use crate::lab::{self, Lab, LabError};
use crate::metrics;
use crate::router::{summary, PublishedStats, Router, WorkerLink};
use dataplane::flow_log::Line;

use std::sync::atomic::AtomicU64;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("cannot start worker {worker}: {source}")]
    Spawn { worker: usize, source: io::Error },
    #[error("worker {worker} stopped: {reason}")]
    Worker { worker: usize, reason: String },
    #[error("VPN: {0}")]
    Vpn(String),
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

type Spawned = (Vec<JoinHandle<WorkerResult>>, Vec<WorkerLink>);

/// Whether the devices take UDP GSO super-packets (`--udp-gro` needs them).
fn takes_uso(queues: &lab::WorkerQueues) -> bool {
    use dataplane::io::Queue;
    let mut devices = queues.iter().flatten().flatten().peekable();
    devices.peek().is_some() && devices.all(|q| q.takes_uso())
}

/// Where the workers' records go: flow-log lines, and each worker's traffic-mirror
/// capture sink.
struct Sinks {
    lines: std::sync::mpsc::SyncSender<Line>,
    captures: Vec<dataplane::io::mirror::MirrorSink>,
}

fn spawn_workers(
    cell: &Arc<SnapshotCell>,
    stop: &Arc<StopSignal>,
    conntrack: &Arc<Conntrack>,
    published: &[PublishedStats],
    sinks: Sinks,
    queues: lab::WorkerQueues,
    opts: &lab::Options,
) -> Result<Spawned, RunError> {
    let Sinks { lines, captures } = sinks;
    let mut captures = captures.into_iter();
    let udp_gro = opts.udp_gro;
    let mtu = opts.mtu as usize;
    let mut handles = Vec::new();
    let mut links = Vec::new();
    let n = queues.len();
    // One metadata service for all workers: a connection's packets may reach any of them.
    let metadata = Arc::new(std::sync::Mutex::new(TcpServices::new()));
    for (w, queues) in queues.into_iter().enumerate() {
        let cell = Arc::clone(cell);
        let stop = Arc::clone(stop);
        let conntrack = Arc::clone(conntrack);
        let out = Arc::clone(&published[w]);
        let metadata = Arc::clone(&metadata);
        let lines = lines.clone();
        let capture = captures.next();
        let (tx, rx) = std::sync::mpsc::channel();
        let wake = Arc::new(Wakeup::new().map_err(|source| RunError::Spawn { worker: w, source })?);
        let done = Arc::new(AtomicU64::new(0));
        links.push(WorkerLink {
            tx,
            wake: Arc::clone(&wake),
            done: Arc::clone(&done),
            sent: 0,
        });
        let handle = std::thread::Builder::new()
            .name(format!("vpcd-worker-{w}"))
            .spawn(move || {
                let mut queues: Vec<Option<TunQueue>> = queues;
                let control = WorkerControl {
                    changes: rx,
                    wake,
                    done,
                };
                let mut worker =
                    Worker::with_pipeline(Pipeline::with_shared(conntrack, w as u16, n as u16));
                worker.services.metadata = Some(metadata);
                worker.udp_gro = udp_gro.then(dataplane::io::udp_gro::UdpGro::new);
                worker.mirror.mtu = mtu;
                worker.mirror.worker = w as u16;
                worker.mirror.sink = capture;
                // A copy every 100 ms (an allocation off the packet path), for readers.
                let mut publish = |s: &Stats| out.store(Arc::new(s.clone()));
                // A full channel (the writer fell behind) loses the line, counted (the
                // accumulator's `lost`, in the stats) and said as SKIPDATA, never blocking
                // the worker (R-FL-WRITE, R-FL-STATUS).
                let mut send_line = |l: Line| lines.try_send(l).is_ok();
                event_loop::run(
                    &mut worker,
                    &cell,
                    &mut queues,
                    &stop,
                    Some(&control),
                    &mut publish,
                    &mut send_line,
                )?;
                Ok(worker.pipeline.stats)
            })
            .map_err(|source| RunError::Spawn { worker: w, source })?;
        handles.push(handle);
    }
    Ok((handles, links))
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

/// How `vpcd up` runs, beyond how the lab is built.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub lab: lab::Options,
    /// The lab file (re-read on SIGHUP); `None` for the built-in lab.
    pub path: Option<PathBuf>,
    /// The control socket.
    pub control: PathBuf,
    /// `--metrics`: where to serve Prometheus text (loopback).
    pub metrics: Option<SocketAddr>,
}

/// Builds the lab of `snap` (generation 1 of `gens`), prints its map and `ready`, serves
/// the control socket (and metrics), forwards until SIGINT or SIGTERM (SIGHUP re-applies
/// the lab file), then stops the workers, removes the lab and returns the counters.
pub fn up(
    snap: Snapshot,
    gens: Generations,
    model: crate::model::Lab,
    title: &str,
    opts: &UpOptions,
) -> Result<Stats, RunError> {
    block_signals();
    let (mut lab, queues) = Lab::build(&snap, &opts.lab)?;
    let mut out = io::stdout().lock();
    // A closed stdout must not stop the router: output errors are ignored.
    let _ = writeln!(
        out,
        "vpcd: lab {title} ({}), {} namespace(s), {} worker(s), MTU {}, conntrack {} flows, TUN offloads {}",
        snap.topo.region,
        lab.namespaces.len(),
        queues.len(),
        opts.lab.mtu,
        opts.lab.conntrack_max,
        match (opts.lab.offloads, opts.lab.udp_gro, takes_uso(&queues)) {
            (dataplane::io::tun::Offloads::Off, _, _) => "off",
            (_, false, _) => "on",
            (_, true, true) => "on, UDP coalescing on",
            // Writing USO needs kernel 6.2+; without it every datagram goes alone.
            (_, true, false) => "on, UDP coalescing unavailable (the kernel has no USO)",
        }
    );
    let _ = write!(out, "{}", lab::describe(&snap, &lab.namespaces));
    let cell = Arc::new(SnapshotCell::new(snap));
    let stop = Arc::new(StopSignal::new().map_err(|source| RunError::Spawn { worker: 0, source })?);
    // One table for all workers: a flow's reply may arrive on another worker's queue.
    let conntrack = Arc::new(Conntrack::new(opts.lab.conntrack_max));
    let published: Vec<PublishedStats> = (0..queues.len())
        .map(|_| Arc::new(ArcSwap::from_pointee(Stats::default())))
        .collect();
    let unwritten = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (lines, writer) = flow_log_writer::start(
        opts.path.as_deref(),
        Arc::clone(&cell),
        Arc::clone(&unwritten),
    );
    let captures =
        crate::capture_writer::start(opts.path.as_deref(), Arc::clone(&cell), queues.len());
    let (handles, links) = match spawn_workers(
        &cell,
        &stop,
        &conntrack,
        &published,
        Sinks {
            lines: lines.clone(),
            captures: captures.sinks,
        },
        queues,
        &opts.lab,
    ) {
        Ok(h) => h,
        Err(e) => {
            stop.raise();
            return Err(e);
        }
    };
    // The instances' start-up (image, user_data) with the workers forwarding, before
    // `ready`: a script may use the network.
    for o in lab.start_up(&crate::startup::of(&model, None)) {
        let _ = writeln!(out, "{}", o.line());
    }
    // The VPN part (tunnel ends, site routers and their hosts, BIRD), then the AWS side's
    // BGP speakers.
    let lab_dir = opts
        .path
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let vpn = crate::vpn_lab::build(&mut lab, &model, &cell.load(), &lab_dir)
        .map_err(|e| e.to_string())
        .and_then(|plans| crate::vpn_runtime::VpnRuntime::start(plans).map_err(|e| e.to_string()));
    let (vpn, vpn_changes) = match vpn {
        Ok(v) => v,
        Err(e) => {
            stop.raise();
            let _ = join(handles);
            return Err(RunError::Vpn(e));
        }
    };
    let tunnels = vpn.plans.len();
    let _ = write!(
        out,
        "{}",
        crate::vpn_lab::describe(&model, &vpn.plans, &opts.lab.prefix)
    );
    let mut router = Router::new(
        title.to_string(),
        opts.path.clone(),
        opts.lab.prefix.clone(),
        Arc::clone(&cell),
        Arc::clone(&conntrack),
        published,
        lab,
        links,
        gens,
        model,
    );
    router.flow_log_unwritten = unwritten;
    router.vpn = std::sync::Mutex::new(Some(vpn));
    let router = Arc::new(router);
    let services_stop = Arc::new(AtomicBool::new(false));
    let mut services = Vec::new();
    if tunnels > 0 {
        match crate::vpn_runtime::watch(
            Arc::clone(&router),
            vpn_changes,
            Arc::clone(&services_stop),
        ) {
            Ok(h) => services.push(h),
            Err(e) => log::error!("VPN watcher: {e}"),
        }
        // hybrid.md: `ready` once every BGP session is established, or after 60 s
        // naming each one that is not.
        let missing = crate::vpn_runtime::wait_established(&router, Duration::from_secs(60));
        for m in &missing {
            let _ = writeln!(out, "vpcd: VPN tunnel {m}: BGP not established after 60 s");
        }
        // What the sessions learned, published before `ready`.
        std::thread::sleep(Duration::from_millis(300));
        let mut gens = crate::router::lock(&router.gens);
        if let Err(e) = router.republish(&mut gens) {
            log::error!("VPN: {e}");
        }
    }
    let started = control_socket::serve(
        &opts.control,
        Arc::clone(&router) as Arc<dyn control_socket::Handler>,
        Arc::clone(&services_stop),
    )
    .map_err(|e| format!("control socket {}: {e}", opts.control.display()))
    .and_then(|h| {
        services.push(h);
        match opts.metrics {
            Some(addr) => metrics::serve(addr, Arc::clone(&router), Arc::clone(&services_stop))
                .map(|(h, bound)| {
                    services.push(h);
                    let _ = writeln!(out, "metrics on http://{bound}/metrics");
                })
                .map_err(|e| format!("metrics on {addr}: {e}")),
            None => Ok(()),
        }
    });
    if let Err(reason) = started {
        log::error!("{reason}");
        let _ = signal_self_term();
    } else {
        let _ = writeln!(out, "ready");
    }
    let _ = out.flush();
    drop(out);

    loop {
        match wait_signal(Duration::from_millis(500)) {
            Some(libc::SIGHUP) => reapply(&router),
            Some(_) => break,
            None => {
                router.reap();
                // Faults whose --duration is over end by themselves.
                if router.faults_expired() {
                    let _ = router.stop_faults(None);
                }
                if handles.iter().any(|h| h.is_finished()) {
                    break;
                }
            }
        }
    }
    services_stop.store(true, Ordering::Relaxed);
    for s in services {
        let _ = s.join();
    }
    // The AWS side of each BGP session says goodbye (Cease) before the lab goes.
    if let Some(v) = crate::router::lock(&router.vpn).as_mut() {
        v.shutdown();
    }
    stop.raise();
    let (stats, failure) = join(handles);
    // The workers flushed their windows; the writer finishes and closes the files.
    drop(lines);
    let _ = writer.join();
    // The workers' capture sinks went with them: the capture writer ends too.
    let _ = captures.handle.join();
    let mut lab = router.lab.lock().unwrap_or_else(|e| e.into_inner()).take();
    let torn = lab.as_mut().map_or(Ok(()), |l| l.teardown());
    drop(lab);
    let mut out = io::stdout().lock();
    let _ = write!(out, "{}", summary(&stats, &cell.load(), "vpcd: stopped;"));
    let _ = out.flush();
    if let Some(e) = failure {
        return Err(e);
    }
    torn?;
    Ok(stats)
}

/// Asks the main loop to stop (when a service could not start).
fn signal_self_term() -> io::Result<()> {
    // SAFETY: raise has no pointer arguments; SIGTERM is blocked and taken by sigtimedwait.
    if unsafe { libc::raise(libc::SIGTERM) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGHUP: re-read the lab file and apply it, as `vpcd apply` would.
fn reapply(router: &Router) {
    let Some(path) = &router.path else {
        log::warn!("SIGHUP: the built-in lab has no file to re-read; use `vpcd apply FILE`");
        return;
    };
    let file = path.display().to_string();
    match crate::read(path) {
        Err(e) => log::error!("SIGHUP: {e}; the running lab is unchanged"),
        Ok(text) => match router.apply(&text, &file) {
            Ok(g) => log::info!("SIGHUP: {file}: applied, generation {g}"),
            Err(why) => log::error!("SIGHUP: {why}"),
        },
    }
}
