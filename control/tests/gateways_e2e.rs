//! End to end through the gateways (semantics.md §5, §6, §7, §10): the NAT gateway, the
//! IGW's public IPs, the egress-only gateway and the VGW, with real hosts on both ends.
//! Needs root (see `common::e2e`).

mod common;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/gateways.yaml");

/// Runs one iperf3 test from `from` to a one-off server on inet-1 and returns what the
/// server printed (it names the address the connection came from).
fn seen_by_internet_host(lab: &LabRun, from: &str) -> String {
    let server = lab.spawn("inet-1", &["iperf3", "-s", "-1"]);
    let report = iperf(lab, from, "203.0.113.10", &["-t", "1"]);
    assert!(received_bytes(&report) > 1e5, "{report}");
    server.output(10)
}

#[test]
fn nat_igw_eigw_and_vgw_with_real_hosts() {
    if !e2e("nat_igw_eigw_and_vgw_with_real_hosts") {
        return;
    }
    let lab = LabRun::up(Some(LAB), &unique_prefix("gw"), &[]);

    // R-NAT-SNAT: the private instance reaches the internet host, which sees the EIP.
    lab.ping("app-1", "203.0.113.10", &[]);
    let seen = seen_by_internet_host(&lab, "app-1");
    assert!(seen.contains("198.51.100.5"), "server saw:\n{seen}");
    // UDP through the NAT gateway both ways.
    let _udp = lab.spawn("inet-1", &["iperf3", "-s"]);
    let udp = iperf(
        &lab,
        "app-1",
        "203.0.113.10",
        &["-u", "-b", "10M", "-t", "1", "-R"],
    );
    assert!(received_bytes(&udp) > 1e5, "{udp}");
    drop(_udp);
    // R-IGW-NAT: the public instance is seen with its public IP ...
    let seen = seen_by_internet_host(&lab, "web-1");
    assert!(seen.contains("198.51.100.10"), "server saw:\n{seen}");
    // ... and is reachable on the port its group opens.
    let _web = lab.spawn("web-1", &["iperf3", "-s"]);
    let tcp = iperf(&lab, "inet-1", "198.51.100.10", &["-t", "1"]);
    assert!(received_bytes(&tcp) > 1e5, "{tcp}");

    // The internet reaches neither private addresses, nor the NAT gateway, nor an
    // instance behind the egress-only gateway (whose own group is wide open).
    lab.ping_fails("inet-1", "10.0.2.10", &[]);
    lab.ping_fails("inet-1", "198.51.100.5", &[]);
    lab.ping_fails("inet-1", "2001:db8:40:2::10", &["-6"]);

    // traceroute through the NAT gateway completes: the host's port-unreachable comes back
    // translated, quote included, and sg-app admits ICMP errors (R-SG-ICMP-ERR).
    let out = lab.exec(
        "app-1",
        &[
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "2",
            "-m",
            "5",
            "203.0.113.10",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.contains("203.0.113.10") && !last.contains('*'),
        "traceroute did not reach the host:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // R-IGW-MTU: the internet path is 1500 bytes. TCP adapts by the hosts' MSS (above); a
    // 2000-byte ping that may not be fragmented is answered by the subnet's router with
    // "fragmentation needed", which sg-app admits (type 3).
    let out = lab.exec(
        "app-1",
        &[
            "ping",
            "-M",
            "do",
            "-s",
            "2000",
            "-c",
            "1",
            "-W",
            "2",
            "203.0.113.10",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mtu = 1500") || text.contains("Frag needed"),
        "no fragmentation-needed error:\n{text}"
    );
    lab.ping("app-1", "203.0.113.10", &["-s", "1400"]);

    // IPv6 through the IGW (untranslated) and out of the EIGW with replies back.
    lab.ping("web-1", "2001:db8:ffff::10", &["-6"]);
    lab.ping("inet-1", "2001:db8:10:1::10", &["-6"]);
    lab.ping("v6-1", "2001:db8:ffff::10", &["-6"]);

    // On-premises through the VGW, both ways, by private address only (R-VGW-NOEIP).
    lab.ping("corp-1", "10.0.2.10", &[]);
    lab.ping("app-1", "192.168.1.10", &[]);
    lab.ping("web-1", "192.168.1.10", &[]);
    lab.ping_fails("corp-1", "198.51.100.10", &[]);

    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    let summary = &stopped.stdout;
    for reason in ["NAT_INBOUND", "EIGW_INBOUND"] {
        assert!(
            common::dropped(summary, reason) > 0,
            "{reason} in\n{summary}"
        );
    }
}
