//! Criterion benchmarks of vpcd's packet path and of the control path that feeds it, all
//! on one generated lab whose public subnet's route table holds 100,000 static routes
//! (far beyond AWS's default quota of 50, so that the cost of a big table shows).
//!
//! - `lpm/100k_routes`: raw longest-prefix match in that table (`RouteTable::lookup`),
//!   over 1024 pre-generated destinations (7/8 fall inside one of the generated routes,
//!   /24 or /32, at a random host offset; 1/8 are random addresses, mostly caught by
//!   `0.0.0.0/0`). Throughput is per lookup. This isolates the LC-trie cost, which is
//!   the only per-packet step whose cost could grow with the configuration.
//! - `pipeline/100k_routes/*`: `Pipeline::process` on batches of 64 UDP/IPv4 packets
//!   (64-byte payload) sent by an instance of the public subnet, so every packet goes
//!   through the 100k-route table. Throughput is per packet.
//!   - `local`: to an instance of the other subnet (local route, no rewrite; the packets
//!     are processed in place, and a check outside the timed loop makes sure they stay
//!     unchanged).
//!   - `igw_nat`: to an internet host through the IGW, whose 1:1 NAT rewrites the source in
//!     place; each packet is first copied from its template into a reusable buffer, so the
//!     figure includes that copy.
//!   - `copy_only`: the copy alone, to subtract from `igw_nat`.
//!
//!   Before timing, each kind of packet is checked to be forwarded to the expected port, so
//!   a configuration mistake cannot turn the bench into a measurement of drops; after
//!   timing, the pipeline's counters must show every timed packet forwarded.
//! - `compile/100k_routes`: `control::load_text` on the lab's YAML text (parse, validate,
//!   compile, index): what a reload of a big configuration costs the control thread.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dataplane::snapshot::RouteTableIx;
use dataplane::{NoObserver, Pipeline, Snapshot, Verdict};
use etherparse::PacketBuilder;

use perf::*;

/// The lab's text and its compiled snapshot, built once for all benches.
struct Bench {
    yaml: String,
    snapshot: Snapshot,
}

static LAB: LazyLock<Bench> = LazyLock::new(|| {
    let yaml = lab_yaml();
    let snapshot = match control::load_text(&yaml, 1) {
        Ok((_, snapshot)) => snapshot,
        Err(control::LoadError::Invalid(diags)) => {
            let first: Vec<String> = diags
                .iter()
                .take(5)
                .map(|diag| {
                    control::InFile {
                        file: "<generated>",
                        diag,
                    }
                    .to_string()
                })
                .collect();
            panic!(
                "the generated lab is invalid ({} errors), first ones:\n{}",
                diags.len(),
                first.join("\n")
            )
        }
        Err(e) => panic!("the generated lab does not load: {e}"),
    };
    Bench { yaml, snapshot }
});

/// A tiny deterministic generator (xorshift64), so every run looks up the same addresses.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn bench_lpm(c: &mut Criterion) {
    let snap = &LAB.snapshot;
    let ix = snap
        .topo
        .route_tables
        .iter()
        .position(|t| &*t.id == TABLE)
        .expect("the lab has rtb-big");
    let table = snap.route_table(RouteTableIx(
        u32::try_from(ix).expect("table index fits in u32"),
    ));
    // The written routes, the default route and the VPC's local route.
    assert_eq!(
        table.len(),
        (ROUTES + 2, 0),
        "rtb-big does not hold the generated routes"
    );

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut dsts = Vec::with_capacity(LOOKUPS);
    for _ in 0..LOOKUPS {
        let r = rng.next();
        if r % 8 == 0 {
            dsts.push(IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)));
        } else {
            let (net, len) = route_prefix(((r >> 8) % ROUTES as u64) as usize);
            let host = if len == 32 {
                0
            } else {
                (r >> 40) as u32 & ((1 << (32 - len)) - 1)
            };
            let dst = Ipv4Addr::from(u32::from(net) | host);
            let (hit, _) = table
                .lookup(dst.into())
                .expect("the default route matches everything");
            assert_eq!(
                hit.netmask(),
                len,
                "{dst} should match its generated /{len}"
            );
            dsts.push(IpAddr::V4(dst));
        }
    }

    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_function("100k_routes", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &d in &dsts {
                if let Some((net, _)) = table.lookup(black_box(d)) {
                    acc = acc.wrapping_add(u32::from(net.netmask()));
                }
            }
            acc
        })
    });
    g.finish();
}

/// `BATCH` UDP/IPv4 packets from `src` to `dst`, differing in their source port.
fn udp_batch(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    (0..BATCH as u16)
        .map(|i| {
            let mut buf = Vec::with_capacity(20 + 8 + PAYLOAD.len());
            PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
                .udp(40_000 + i, 5_000)
                .write(&mut buf, &PAYLOAD)
                .expect("writing a packet to a Vec cannot fail");
            buf
        })
        .collect()
}

/// A pipeline as a worker holds it: port counters sized for the snapshot, so counting
/// takes the same path as in vpcd.
fn pipeline_for(snap: &Snapshot) -> Pipeline {
    let mut p = Pipeline::new();
    p.stats.reserve_ports(snap.topo.ports.len());
    p
}

fn bench_pipeline(c: &mut Criterion) {
    let snap = &LAB.snapshot;
    let sender = port(snap, SENDER);
    let peer = port(snap, PEER);
    let host = port(snap, INTERNET_HOST);

    // (a) Across subnets, local route: forwarded unchanged to the peer's port.
    let mut local = udp_batch(SENDER_IP, PEER_IP);
    {
        let mut p = pipeline_for(snap);
        let mut buf = local[0].clone();
        let v = p.process(snap, sender, &mut buf, NOW, &mut NoObserver);
        assert_eq!(
            v,
            Verdict::Forward(peer),
            "a packet to {PEER_IP} is not forwarded to {PEER}"
        );
        assert_eq!(buf, local[0], "the local route must not rewrite the packet");
    }

    // (b) Through the IGW: forwarded to the host's port, source rewritten to the public IP.
    let templates = udp_batch(SENDER_IP, INTERNET_HOST_IP);
    {
        let mut p = pipeline_for(snap);
        let mut buf = templates[0].clone();
        let v = p.process(snap, sender, &mut buf, NOW, &mut NoObserver);
        assert_eq!(
            v,
            Verdict::Forward(host),
            "a packet to {INTERNET_HOST_IP} is not forwarded to {INTERNET_HOST}"
        );
        let out = dataplane::Packet::parse(&buf).expect("the translated packet is well formed");
        assert_eq!(
            out.src,
            IpAddr::V4(SENDER_PUBLIC_IP),
            "the IGW did not translate the source"
        );
    }

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));

    let mut p = pipeline_for(snap);
    g.bench_function("100k_routes/local", |b| {
        b.iter(|| {
            for buf in local.iter_mut() {
                black_box(p.process(snap, sender, black_box(buf), NOW, &mut NoObserver));
            }
        })
    });
    assert_eq!(
        p.stats.forwarded,
        p.stats.ports[sender.ix()].rx_packets,
        "some local packets were not forwarded"
    );

    let mut work: Vec<Vec<u8>> = templates.clone();
    let mut p = pipeline_for(snap);
    g.bench_function("100k_routes/igw_nat", |b| {
        b.iter(|| {
            for (buf, t) in work.iter_mut().zip(&templates) {
                buf.copy_from_slice(t);
                black_box(p.process(snap, sender, black_box(buf), NOW, &mut NoObserver));
            }
        })
    });
    assert_eq!(
        p.stats.forwarded,
        p.stats.ports[sender.ix()].rx_packets,
        "some IGW packets were not forwarded"
    );

    g.bench_function("100k_routes/copy_only", |b| {
        b.iter(|| {
            for (buf, t) in work.iter_mut().zip(&templates) {
                buf.copy_from_slice(t);
                black_box(buf);
            }
        })
    });
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let yaml = &LAB.yaml;
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("100k_routes", |b| {
        // The lab and snapshot are dropped outside the timed part.
        b.iter_with_large_drop(|| control::load_text(black_box(yaml), 2).expect("the lab loads"))
    });
    g.finish();
}

criterion_group!(benches, bench_lpm, bench_pipeline, bench_compile);
criterion_main!(benches);
