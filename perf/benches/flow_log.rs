//! The pipeline's cost with flow logs on versus off (issue 8): the default lab, web-1 →
//! app-1 over the local route, 1,024 UDP flows per iteration (tracked: SG state hits), with
//! and without a VPC-wide flow log (two ENIs record each packet). Per packet; the flush
//! (formatting lines every 100 ms, off the packet path) is timed separately per record.

use perf::{port, NOW};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::{NoObserver, Pipeline, Snapshot};
use etherparse::PacketBuilder;

const FLOWS: u16 = 1024;

fn lab(with_log: bool) -> Snapshot {
    let mut text = include_str!("../../configs/default.yaml").to_string();
    if with_log {
        text = text.replace(
            "    instances:\n",
            "    flow_logs:\n      - { id: fl, resource: vpc-lab, traffic_type: ALL, max_aggregation_interval: 60, destination: /dev/null }\n    instances:\n",
        );
    }
    control::load_text(&text, 1).expect("lab").1
}

fn bench(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let mut out = Vec::new();
            PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
                .udp(10_000 + i, 5201)
                .write(&mut out, &[0x5a; 64])
                .unwrap();
            out
        })
        .collect();
    let mut g = c.benchmark_group("flow_log");
    g.throughput(Throughput::Elements(u64::from(FLOWS)));
    for (name, on) in [("off", false), ("on", true)] {
        let s = lab(on);
        let web = port(&s, "web-1");
        let mut pipe = Pipeline::new();
        let mut buf = vec![0u8; 256];
        g.bench_function(format!("pipeline/{name}"), |b| {
            b.iter(|| {
                for p in &packets {
                    let x = &mut buf[..p.len()];
                    x.copy_from_slice(p);
                    black_box(pipe.process(&s, web, x, NOW, &mut NoObserver));
                }
            })
        });
    }
    let s = lab(true);
    let web = port(&s, "web-1");
    g.bench_function("flush", |b| {
        b.iter_batched(
            || {
                let mut pipe = Pipeline::new();
                for p in &packets {
                    let mut x = p.clone();
                    pipe.process(&s, web, &mut x, NOW, &mut NoObserver);
                }
                pipe
            },
            |mut pipe| {
                let mut n = 0usize;
                pipe.flow_logs.flush(&s, NOW.secs() + 61, false, &mut |l| {
                    n += l.text.len();
                    true
                });
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
