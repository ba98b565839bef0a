//! Live apply of a 100,000-route lab (issue 9): what the control thread pays (compile,
//! swap, the delayed free of the old snapshot) and what a worker sees meanwhile: the time
//! of each 64-packet batch, as an hdrhistogram, without applies and during them.
//!
//! A plain harness (not criterion): the question is the tail of the worker's batch time
//! while another thread swaps, which criterion's per-iteration timing does not show.
//! Run: `cargo bench -p perf --bench apply`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::generations::Generations;
use dataplane::{NoObserver, Pipeline, Snapshot, SnapshotCell, Verdict};
use etherparse::PacketBuilder;
use hdrhistogram::Histogram;
use perf::*;

/// Runs a worker over `cell` until `stop`, recording each batch's time (ns).
fn worker(cell: Arc<SnapshotCell>, stop: Arc<AtomicBool>) -> (Histogram<u64>, u64) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut pipe = Pipeline::new();
    let mut template = Vec::new();
    PacketBuilder::ipv4(SENDER_IP.octets(), PEER_IP.octets(), 64)
        .udp(40000, 5201)
        .write(&mut template, &[0x5a; 64])
        .unwrap();
    let mut buf = template.clone();
    let mut packets = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let snap = cell.load();
        let (from, to) = (port(&snap, SENDER), port(&snap, PEER));
        for _ in 0..64 {
            buf.copy_from_slice(&template);
            let v = pipe.process(&snap, from, &mut buf, NOW, &mut NoObserver);
            debug_assert_eq!(v, Verdict::Forward(to));
        }
        drop(snap);
        packets += 64;
        let _ = hist.record(start.elapsed().as_nanos() as u64);
    }
    (hist, packets)
}

fn report(name: &str, hist: &Histogram<u64>, packets: u64, secs: f64) {
    println!(
        "{name:<34} batches {:>8}  p50 {:>7} ns  p99 {:>7} ns  p99.9 {:>8} ns  max {:>9} ns  {:>6.2} Mpps",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        packets as f64 / secs / 1e6
    );
}

fn phase(
    name: &str,
    cell: &Arc<SnapshotCell>,
    secs: f64,
    mut control: impl FnMut(&Arc<SnapshotCell>),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (Arc::clone(cell), Arc::clone(&stop));
    let w = std::thread::spawn(move || worker(c, s));
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        control(cell);
    }
    stop.store(true, Ordering::Relaxed);
    let (hist, packets) = w.join().unwrap();
    report(name, &hist, packets, start.elapsed().as_secs_f64());
}

fn main() {
    println!(
        "apply bench: {} routes, {} cores",
        ROUTES,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let lab = control::check_text(&lab_yaml()).expect("generated lab");
    let mut gens = Generations::new();
    let t = Instant::now();
    let first = gens.next(&lab).expect("compile");
    println!("compile (validate done) + index: {:?}", t.elapsed());
    let spare: Vec<Arc<Snapshot>> = (0..4).map(|_| Arc::new(gens.next(&lab).unwrap())).collect();
    let cell = Arc::new(SnapshotCell::new(first));

    phase("worker, no applies", &cell, 2.0, |_| {
        std::thread::sleep(Duration::from_millis(10))
    });

    // Swaps of prebuilt snapshots every 20 ms; the old one is dropped a second later, on
    // this thread, as the router does.
    let mut swap_ns = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut free_ns = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut retired: Vec<(Instant, Arc<Snapshot>)> = Vec::new();
    let mut i = 0;
    phase("worker, a swap every 20 ms", &cell, 2.0, |cell| {
        let next = Arc::clone(&spare[i % spare.len()]);
        i += 1;
        let t = Instant::now();
        let old = cell.swap(next);
        let _ = swap_ns.record(t.elapsed().as_nanos() as u64);
        retired.push((Instant::now(), old));
        let t = Instant::now();
        retired.retain(|(at, _)| at.elapsed() < Duration::from_millis(100));
        let _ = free_ns.record(t.elapsed().as_nanos() as u64);
        std::thread::sleep(Duration::from_millis(20));
    });
    drop(retired);
    println!(
        "swap (arc-swap store): p50 {} ns, max {} ns; reaping old snapshots: p50 {} ns, max {} ms",
        swap_ns.value_at_quantile(0.5),
        swap_ns.max(),
        free_ns.value_at_quantile(0.5),
        free_ns.max() / 1_000_000
    );

    // Full applies (validate + compile + swap) on the control thread while the worker runs:
    // on two cores they compete for CPU, as they would in the router. Old snapshots are
    // retired as the router does (dropped later, here); the second run drops them at once,
    // to show why: a worker holding the last reference would free 100,000 routes itself.
    let mut apply_ms = Vec::new();
    let mut retired: Vec<(Instant, Arc<Snapshot>)> = Vec::new();
    // The text arrives ready (the control socket hands it over); generating it is not
    // part of an apply.
    let text = lab_yaml();
    let (mut parse_ms, mut compile_ms) = (Vec::new(), Vec::new());
    phase("worker, full applies back to back", &cell, 4.0, |cell| {
        let t = Instant::now();
        let lab = control::check_text(&text).expect("lab");
        parse_ms.push(t.elapsed().as_millis());
        let c = Instant::now();
        let snap = gens.next(&lab).expect("compile");
        let old = cell.swap(Arc::new(snap));
        compile_ms.push(c.elapsed().as_millis());
        apply_ms.push(t.elapsed().as_millis());
        retired.push((Instant::now(), old));
        retired.retain(|(at, _)| at.elapsed() < Duration::from_millis(500));
    });
    drop(retired);
    phase("  same, old snapshot dropped at once", &cell, 4.0, |cell| {
        let lab = control::check_text(&text).expect("lab");
        let snap = gens.next(&lab).expect("compile");
        drop(cell.swap(Arc::new(snap)));
    });
    for v in [&mut apply_ms, &mut parse_ms, &mut compile_ms] {
        v.sort();
    }
    println!(
        "full apply of {} routes (text → validate → compile → swap): {} applies, median {} ms, max {} ms; of which parse + validate median {} ms, compile + swap median {} ms",
        ROUTES,
        apply_ms.len(),
        apply_ms[apply_ms.len() / 2],
        apply_ms.last().unwrap(),
        parse_ms[parse_ms.len() / 2],
        compile_ms[compile_ms.len() / 2],
    );
}
