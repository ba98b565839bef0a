//! End to end: what `vpcd trace` predicts is what the running router does. Each probe is
//! traced offline, then sent for real from its namespace, and the drop reason trace named
//! must show up in the router's counters. Needs root (see `common::e2e`).

mod common;

use std::process::Command;

use common::{e2e, unique_prefix, LabRun, VPCD};

/// A probe: source, destination, protocol, port, trace's extra flags, and the command that
/// sends it for real.
struct P<'a> {
    from: &'a str,
    to: &'a str,
    proto: &'a str,
    port: &'a str,
    extra: &'a [&'a str],
    send: &'a [&'a str],
}

fn traced_reason(lab: &str, p: &P) -> String {
    let mut args = vec![
        "trace", lab, "--from", p.from, "--to", p.to, "--proto", p.proto, "--port", p.port,
        "--json",
    ];
    args.extend(p.extra);
    let o = Command::new(VPCD).args(&args).output().unwrap();
    let j = String::from_utf8_lossy(&o.stdout).into_owned();
    let r = j
        .split("\"reason\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no reason traced for {} → {}: {j}", p.from, p.to));
    r.to_string()
}

fn check(lab_file: &str, tag: &str, probes: &[P]) {
    let expected: Vec<String> = probes.iter().map(|p| traced_reason(lab_file, p)).collect();
    let lab = LabRun::up(Some(lab_file), &unique_prefix(tag), &[]);
    for p in probes {
        let _ = lab.exec(p.from, p.send);
    }
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    for (p, reason) in probes.iter().zip(&expected) {
        assert!(
            common::dropped(&stopped.stdout, reason) > 0,
            "trace said {reason} for {} → {}; the router counted:\n{}",
            p.from,
            p.to,
            stopped.stdout
        );
    }
}

#[test]
fn trace_and_the_router_agree_on_every_drop() {
    if !e2e("trace_and_the_router_agree_on_every_drop") {
        return;
    }
    let endpoints = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/endpoints.yaml");
    let ping = |to: &'static str| -> Vec<&'static str> { vec!["ping", "-c", "1", "-W", "1", to] };
    let p1 = ping("10.3.1.10");
    let p2 = ping("10.4.1.10");
    let p3 = ping("203.0.113.10");
    check(
        endpoints,
        "te",
        &[
            P {
                from: "a-1",
                to: "10.3.1.10",
                proto: "icmp",
                port: "0",
                extra: &[],
                send: &p1,
            },
            P {
                from: "a-1",
                to: "10.4.1.10",
                proto: "icmp",
                port: "0",
                extra: &[],
                send: &p2,
            },
            P {
                from: "c-1",
                to: "203.0.113.10",
                proto: "icmp",
                port: "0",
                extra: &[],
                send: &p3,
            },
            P {
                from: "a-1",
                to: "198.18.0.20",
                proto: "tcp",
                port: "5201",
                extra: &[],
                send: &[
                    "timeout",
                    "2",
                    "bash",
                    "-c",
                    "echo > /dev/tcp/198.18.0.20/5201",
                ],
            },
            P {
                from: "b-1",
                to: "10.2.1.4",
                proto: "udp",
                port: "5201",
                extra: &[],
                send: &["bash", "-c", "echo x > /dev/udp/10.2.1.4/5201"],
            },
        ],
    );
    let gateways = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/gateways.yaml");
    let q1 = ping("10.0.2.10");
    check(
        gateways,
        "tg",
        &[
            P {
                from: "inet-1",
                to: "10.0.2.10",
                proto: "icmp",
                port: "0",
                extra: &[],
                send: &q1,
            },
            P {
                from: "inet-1",
                to: "198.51.100.5",
                proto: "tcp",
                port: "22",
                extra: &[],
                send: &[
                    "timeout",
                    "2",
                    "bash",
                    "-c",
                    "echo > /dev/tcp/198.51.100.5/22",
                ],
            },
            P {
                from: "inet-1",
                to: "2001:db8:40:2::10",
                proto: "icmpv6",
                port: "0",
                extra: &[],
                send: &["ping", "-6", "-c", "1", "-W", "1", "2001:db8:40:2::10"],
            },
            P {
                from: "web-1",
                to: "203.0.113.10",
                proto: "icmp",
                port: "0",
                extra: &["--ttl", "1"],
                send: &["ping", "-c", "1", "-W", "1", "-t", "1", "203.0.113.10"],
            },
            P {
                from: "web-1",
                to: "203.0.113.10",
                proto: "icmp",
                port: "0",
                extra: &["--size", "3028"],
                send: &[
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "1",
                    "-M",
                    "do",
                    "-s",
                    "3000",
                    "203.0.113.10",
                ],
            },
        ],
    );
}
