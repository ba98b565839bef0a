//! The I/O layer's worker in process, over in-memory queues: packets read from one port's
//! queue come out of the right port's queue, in batches, counted; failures to write are
//! counted, not lost silently.

use dataplane::io::mem::MemQueue;
use dataplane::io::{Worker, BATCH};
use dataplane::{DropReason, PortId, Snapshot, Timestamp};
use etherparse::PacketBuilder;

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

fn default_lab() -> Snapshot {
    control::load_text(control::DEFAULT_LAB, 1)
        .expect("default lab")
        .1
}

fn port(snap: &Snapshot, name: &str) -> PortId {
    snap.port_named(name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

fn udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(40000, 5001)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn queues(snap: &Snapshot) -> Vec<MemQueue> {
    (0..snap.topo.ports.len())
        .map(|_| MemQueue::new())
        .collect()
}

#[test]
fn a_packet_from_web_1_comes_out_of_app_1_unchanged() {
    let snap = default_lab();
    let q = queues(&snap);
    let (web, app) = (port(&snap, "web-1"), port(&snap, "app-1"));
    let pkt = udp([10, 0, 1, 10], [10, 0, 2, 10], b"hello");
    q[web.ix()].push(&pkt);
    let mut w = Worker::new();
    assert_eq!(w.drain(&snap, web, &q, NOW).unwrap(), 1);
    assert_eq!(q[app.ix()].take_sent(), vec![pkt.clone()]);
    let stats = &w.pipeline.stats;
    assert_eq!(stats.forwarded, 1);
    assert_eq!(stats.ports[web.ix()].rx_packets, 1);
    assert_eq!(stats.ports[app.ix()].tx_packets, 1);
    assert_eq!(stats.ports[app.ix()].tx_bytes, pkt.len() as u64);
}

#[test]
fn the_igw_rewrite_reaches_the_internet_host() {
    let snap = default_lab();
    let q = queues(&snap);
    let (web, inet) = (port(&snap, "web-1"), port(&snap, "inet-1"));
    q[web.ix()].push(&udp([10, 0, 1, 10], [203, 0, 113, 10], b"out"));
    let mut w = Worker::new();
    w.drain(&snap, web, &q, NOW).unwrap();
    let sent = q[inet.ix()].take_sent();
    assert_eq!(sent.len(), 1);
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&sent[0]).unwrap();
    assert_eq!(ip.source(), [198, 51, 100, 10], "the public IP, R-IGW-NAT");
}

#[test]
fn one_drain_reads_at_most_one_batch_and_leaves_the_rest() {
    let snap = default_lab();
    let q = queues(&snap);
    let (web, app) = (port(&snap, "web-1"), port(&snap, "app-1"));
    for i in 0..BATCH + 10 {
        q[web.ix()].push(&udp([10, 0, 1, 10], [10, 0, 2, 10], &[i as u8]));
    }
    let mut w = Worker::new();
    assert_eq!(w.drain(&snap, web, &q, NOW).unwrap(), BATCH);
    assert_eq!(w.drain(&snap, web, &q, NOW).unwrap(), 10);
    assert_eq!(w.drain(&snap, web, &q, NOW).unwrap(), 0);
    let sent = q[app.ix()].take_sent();
    assert_eq!(sent.len(), BATCH + 10);
    // In order: one queue is one flow's path.
    for (i, p) in sent.iter().enumerate() {
        assert_eq!(*p.last().unwrap(), i as u8);
    }
}

#[test]
fn garbage_is_dropped_and_counted_and_the_next_packet_still_flows() {
    let snap = default_lab();
    let q = queues(&snap);
    let (web, app) = (port(&snap, "web-1"), port(&snap, "app-1"));
    let good = udp([10, 0, 1, 10], [10, 0, 2, 10], b"ok");
    let mut bad_checksum = good.clone();
    bad_checksum[10] ^= 0xff;
    for garbage in [
        &[][..],
        &[0x45][..],
        &[0x70; 40][..],
        &good[..good.len() - 3],
        &bad_checksum[..],
    ] {
        q[web.ix()].push(garbage);
    }
    q[web.ix()].push(&good);
    let mut w = Worker::new();
    assert_eq!(w.drain(&snap, web, &q, NOW).unwrap(), 6);
    assert_eq!(w.pipeline.stats.dropped(DropReason::Malformed), 5);
    assert_eq!(q[app.ix()].take_sent(), vec![good]);
}

#[test]
fn a_failed_write_is_counted_on_the_output_port() {
    let snap = default_lab();
    let mut q = queues(&snap);
    let (web, app) = (port(&snap, "web-1"), port(&snap, "app-1"));
    q[app.ix()].fail_sends = true;
    q[web.ix()].push(&udp([10, 0, 1, 10], [10, 0, 2, 10], b"lost"));
    let mut w = Worker::new();
    w.drain(&snap, web, &q, NOW).unwrap();
    assert_eq!(w.pipeline.stats.ports[app.ix()].tx_errors, 1);
}

#[test]
fn a_port_without_a_queue_is_a_tx_error_not_a_panic() {
    let snap = default_lab();
    let q = queues(&snap);
    let (web, app) = (port(&snap, "web-1"), port(&snap, "app-1"));
    // This worker has queues only up to web-1 (as after a snapshot that added ports).
    let short = &q[..=web.ix()];
    assert!(app.ix() > web.ix());
    q[web.ix()].push(&udp([10, 0, 1, 10], [10, 0, 2, 10], b"x"));
    let mut w = Worker::new();
    w.drain(&snap, web, short, NOW).unwrap();
    assert_eq!(w.pipeline.stats.ports[app.ix()].tx_errors, 1);
}

#[test]
fn a_queue_that_fails_to_read_is_reported_so_the_loop_stops_polling_it() {
    let snap = default_lab();
    let mut q = queues(&snap);
    let web = port(&snap, "web-1");
    q[web.ix()].fail_recv = true;
    let mut w = Worker::new();
    assert!(w.drain(&snap, web, &q, NOW).is_err());
    assert_eq!(w.pipeline.stats.rx_errors, 1);
}
