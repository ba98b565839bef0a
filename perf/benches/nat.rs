//! Criterion benchmarks of the NAT gateway (issue 6), on the gateways test lab
//! (control/tests/labs/gateways.yaml): app-1 in a private subnet reaches inet-1 through
//! nat-a and the IGW.
//!
//! - `nat/established/out`: a packet of a known translation from app-1: its SG state, two
//!   NACLs, the route to the NAT gateway, the translation lookup (and the timer push of both
//!   halves), the rewrite, the NAT subnet's route to the IGW and its 1:1 mapping to the EIP.
//!   1,024 flows, each packet copied from its template first. Per packet.
//! - `nat/established/in`: the replies, inet-1 → EIP → app-1. Per packet.
//! - `nat/new_translation`: packets that each open a translation (port allocation, two
//!   inserts) on a fresh table. Per flow.

use perf::{port, NOW};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::conntrack::Conntrack;
use dataplane::{NoObserver, Pipeline, Verdict};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

const LAB: &str = include_str!("../../control/tests/labs/gateways.yaml");
const FLOWS: usize = 1024;

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, &[0x5a; 64])
        .unwrap();
    out
}

fn bench_nat(c: &mut Criterion) {
    let snap = control::load_text(LAB, 1).expect("gateways lab").1;
    let (app, inet) = (port(&snap, "app-1"), port(&snap, "inet-1"));
    let outbound: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| udp([10, 0, 2, 10], [203, 0, 113, 10], 10_000 + i as u16, 53))
        .collect();
    let mut pipe = Pipeline::with_conntrack(Arc::new(Conntrack::new(1 << 16)));
    // Open every translation, and build the replies to the ports it chose.
    let mut inbound = Vec::new();
    for t in &outbound {
        let mut p = t.clone();
        let v = pipe.process(&snap, app, &mut p, NOW, &mut NoObserver);
        assert_eq!(v, Verdict::Forward(inet));
        let s = SlicedPacket::from_ip(&p).unwrap();
        let Some(TransportSlice::Udp(u)) = s.transport else {
            panic!()
        };
        inbound.push(udp(
            [203, 0, 113, 10],
            [198, 51, 100, 5],
            53,
            u.source_port(),
        ));
    }
    let mut buf = vec![0u8; 256];
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(FLOWS as u64));
    g.bench_function("established/out", |b| {
        b.iter(|| {
            for t in &outbound {
                let p = &mut buf[..t.len()];
                p.copy_from_slice(t);
                black_box(pipe.process(&snap, app, p, NOW, &mut NoObserver));
            }
        })
    });
    let back = Verdict::Forward(app);
    for t in &inbound {
        let mut p = t.clone();
        assert_eq!(
            pipe.process(&snap, inet, &mut p, NOW, &mut NoObserver),
            back
        );
    }
    g.bench_function("established/in", |b| {
        b.iter(|| {
            for t in &inbound {
                let p = &mut buf[..t.len()];
                p.copy_from_slice(t);
                black_box(pipe.process(&snap, inet, p, NOW, &mut NoObserver));
            }
        })
    });
    g.bench_function("new_translation", |b| {
        b.iter_batched(
            || Pipeline::with_conntrack(Arc::new(Conntrack::new(1 << 14))),
            |mut fresh| {
                for t in &outbound {
                    let p = &mut buf[..t.len()];
                    p.copy_from_slice(t);
                    black_box(fresh.process(&snap, app, p, NOW, &mut NoObserver));
                }
                fresh
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_nat);
criterion_main!(benches);
