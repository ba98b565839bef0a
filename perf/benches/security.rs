//! Criterion benchmarks of the stateful stages (issue 5): connection tracking, security
//! groups and network ACLs, at the sizes the performance targets name.
//!
//! - `conntrack/hit/{1k,1m}_flows`: `lookup` + `refresh` of a tracked flow in a table
//!   holding 1,000 or 1,000,000 flows (1,024 different flows per iteration, so the caches
//!   see a spread). Per packet.
//! - `conntrack/insert`: tracking new flows into an empty table. Per flow.
//! - `pipeline/established/nacl_{20,1000}`: `Pipeline::process` for packets of flows the
//!   table already tracks (1,000,000 of them), from an internet host to web-1's public IP:
//!   IGW 1:1 NAT, the web subnet's NACL (20 or 1,000 rules, the allowing rule last, so every
//!   rule is tried), web-1's SG skipped by the tracked state (its 1,000 rules are not
//!   read). Each packet is copied from its template first (the NAT rewrites in place).
//! - `pipeline/new_flow/rules_{20,1000}`: the same path for packets that each open a new
//!   flow: every NACL and SG rule tried (the match is the last rule), then a conntrack
//!   insert.
//!
//! Memory per tracked flow is printed once (the table never grows: its size over the
//! flows it holds).

use perf::{port, NOW};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::conntrack::{Conntrack, FlowKey, Timeouts};
use dataplane::observer::Direction;
use dataplane::{NoObserver, Packet, Pipeline, Snapshot, Verdict};
use etherparse::PacketBuilder;

const FLOWS: usize = 1_000_000;
const SPREAD: usize = 1024;
const INET: [u8; 4] = [203, 0, 113, 10];
const PUBLIC: [u8; 4] = [198, 51, 100, 10];

/// A lab whose web subnet's NACL and web-1's group have `rules` rules each; only the last
/// one allows the benchmark's traffic.
fn lab_yaml(rules: usize) -> String {
    let filler = |i: usize| {
        let n = 0xac10_0000u32 + i as u32; // 172.16.0.0/12, never the benchmark's hosts
        Ipv4Addr::from(n)
    };
    let mut nacl = String::new();
    for i in 0..rules - 1 {
        nacl += &format!(
            "          - {{ rule: {}, action: deny, protocol: udp, cidr: {}/32 }}\n",
            i + 1,
            filler(i)
        );
    }
    nacl += &format!(
        "          - {{ rule: {rules}, action: allow, protocol: all, cidr: 0.0.0.0/0 }}\n"
    );
    let mut sg = String::new();
    for i in 0..rules - 1 {
        sg += &format!(
            "          - {{ protocol: udp, port_range: {}, source: {}/32 }}\n",
            1 + i % 60000,
            filler(i)
        );
    }
    // Not 0.0.0.0/0: that would leave the flows untracked (R-SG-UNTRACKED).
    sg += "          - { protocol: udp, source: 203.0.113.0/24 }\n";
    format!(
        r#"version: 1
vpcs:
  - id: vpc-bench
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-bench
    subnets:
      - {{ id: web, cidr_block: 10.0.1.0/24, route_table: rt-web, network_acl: acl-big }}
    route_tables:
      - id: rt-web
        routes: [{{ destination: 0.0.0.0/0, target: igw-bench }}]
    network_acls:
      - id: acl-big
        inbound:
{nacl}        outbound:
{nacl}    security_groups:
      - id: sg-big
        inbound:
{sg}    instances:
      - {{ id: web-1, subnet: web, private_ip: 10.0.1.10, public_ip: 198.51.100.10, security_groups: [sg-big] }}
internet:
  hosts:
    - {{ id: inet-1, ipv4: 203.0.113.10 }}
"#
    )
}

fn snapshot(rules: usize) -> Snapshot {
    control::load_text(&lab_yaml(rules), 1)
        .unwrap_or_else(|e| panic!("bench lab: {e:?}"))
        .1
}

/// Flow `i`: UDP from the internet host, a distinct (source port, destination port) pair.
fn flow_packet(i: usize) -> Vec<u8> {
    let (sport, dport) = (1024 + (i % 50_000) as u16, 2000 + (i / 50_000) as u16);
    let mut out = Vec::new();
    PacketBuilder::ipv4(INET, PUBLIC, 64)
        .udp(sport, dport)
        .write(&mut out, &[0x5a; 64])
        .unwrap();
    out
}

struct Established {
    snap: Snapshot,
    pipe: Pipeline,
}

/// A pipeline whose table tracks `FLOWS` flows of the lab with `rules` rules.
fn established(rules: usize) -> Established {
    let snap = snapshot(rules);
    // 2^21 slots: 1,000,000 flows fill 48 % (the first refusal comes at 70 to 80 %).
    let ct = Arc::new(Conntrack::new(2 * FLOWS));
    let mut pipe = Pipeline::with_conntrack(Arc::clone(&ct));
    let inet = port(&snap, "inet-1");
    let web = Verdict::Forward(port(&snap, "web-1"));
    for i in 0..FLOWS {
        let mut p = flow_packet(i);
        let v = pipe.process(&snap, inet, &mut p, NOW, &mut NoObserver);
        assert_eq!(v, web, "flow {i} must be forwarded");
    }
    let held = ct.occupancy(NOW);
    assert_eq!(held, FLOWS, "every flow tracked");
    eprintln!(
        "conntrack: {} flows in {:.1} MiB = {} bytes per tracked flow (capacity {} slots)",
        held,
        ct.memory_bytes() as f64 / (1 << 20) as f64,
        ct.memory_bytes() / held,
        ct.capacity()
    );
    Established { snap, pipe }
}

static EST_20: LazyLock<std::sync::Mutex<Established>> =
    LazyLock::new(|| std::sync::Mutex::new(established(20)));

fn keys(n: usize) -> Vec<(FlowKey, Packet)> {
    (0..n)
        .map(|i| {
            let bytes = flow_packet(i);
            let p = Packet::parse(&bytes).unwrap();
            (FlowKey::at_eni(0, Direction::Ingress, &p), p)
        })
        .collect()
}

fn bench_conntrack(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    let t = Timeouts::default();
    for (name, flows) in [("hit/1k_flows", 1000), ("hit/1m_flows", FLOWS)] {
        let ct = Conntrack::new(2 * flows);
        let all = keys(flows);
        for (k, p) in &all {
            ct.insert(k, Direction::Ingress, p, NOW, &t).unwrap();
        }
        // Spread the probes over the whole table.
        let step = (flows / SPREAD).max(1);
        let probes: Vec<_> = all.iter().step_by(step).take(SPREAD).cloned().collect();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, p) in &probes {
                    let hit = ct.lookup(black_box(k), NOW).expect("tracked");
                    ct.refresh(hit, Direction::Egress, p, NOW, &t);
                }
            })
        });
    }
    let fresh = keys(SPREAD);
    g.throughput(Throughput::Elements(SPREAD as u64));
    g.bench_function("insert", |b| {
        b.iter_batched(
            || Conntrack::new(1 << 16),
            |ct| {
                for (k, p) in &fresh {
                    ct.insert(k, Direction::Ingress, p, NOW, &t).unwrap();
                }
                ct
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(20);
    let templates: Vec<Vec<u8>> = (0..SPREAD).map(|i| flow_packet(i * 977)).collect();
    let mut buf = vec![0u8; 256];
    g.throughput(Throughput::Elements(SPREAD as u64));
    {
        let mut est = EST_20.lock().unwrap();
        let Established { snap, pipe } = &mut *est;
        let inet = port(snap, "inet-1");
        g.bench_function("established/nacl_20", |b| {
            b.iter(|| {
                for t in &templates {
                    let p = &mut buf[..t.len()];
                    p.copy_from_slice(t);
                    black_box(pipe.process(snap, inet, p, NOW, &mut NoObserver));
                }
            })
        });
    }
    {
        let mut est = established(1000);
        let inet = port(&est.snap, "inet-1");
        g.bench_function("established/nacl_1000", |b| {
            b.iter(|| {
                for t in &templates {
                    let p = &mut buf[..t.len()];
                    p.copy_from_slice(t);
                    black_box(est.pipe.process(&est.snap, inet, p, NOW, &mut NoObserver));
                }
            })
        });
    }
    for rules in [20, 1000] {
        let snap = snapshot(rules);
        let inet = port(&snap, "inet-1");
        let web = Verdict::Forward(port(&snap, "web-1"));
        g.bench_function(format!("new_flow/rules_{rules}"), |b| {
            b.iter_batched(
                || Pipeline::with_conntrack(Arc::new(Conntrack::new(1 << 12))),
                |mut pipe| {
                    for t in &templates {
                        let p = &mut buf[..t.len()];
                        p.copy_from_slice(t);
                        let v = pipe.process(&snap, inet, p, NOW, &mut NoObserver);
                        debug_assert_eq!(v, web);
                    }
                    pipe
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_conntrack, bench_pipeline);
criterion_main!(benches);
