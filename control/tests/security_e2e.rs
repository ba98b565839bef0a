//! End to end: security groups and network ACLs judged with the real Linux stack on both
//! ends (TCP and UDP with iperf3, ICMP with ping, raw UDP from bash), and every drop
//! found under its precise cause in the counters vpcd prints when it stops.
//! Needs root (see `common::e2e`).

mod common;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/security.yaml");

/// Runs a command in a namespace that must fail (a blocked connection), bounded by
/// `timeout` so a SYN that is never answered does not wait for TCP's retries.
fn must_fail(lab: &LabRun, from: &str, secs: u32, args: &[&str]) {
    let t = secs.to_string();
    let mut all = vec!["timeout", t.as_str()];
    all.extend(args);
    let out = lab.exec(from, &all);
    assert!(
        !out.status.success(),
        "{from}: {args:?} succeeded but must be blocked:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Sends `n` UDP datagrams from `from` with bash's /dev/udp (no listener needed: the
/// packets are judged, and counted, on the way).
fn udp_burst(lab: &LabRun, from: &str, to: &str, port: u16, n: usize) {
    let script = format!("for i in $(seq {n}); do echo probe > /dev/udp/{to}/{port}; done");
    let out = lab.exec(from, &["bash", "-c", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn security_groups_and_nacls_judge_real_tcp_udp_and_ping() {
    if !e2e("security_groups_and_nacls_judge_real_tcp_udp_and_ping") {
        return;
    }
    let lab = LabRun::up(Some(LAB), &unique_prefix("sg"), &[]);
    let _web = lab.spawn("web-1", &["iperf3", "-s"]);
    let _web_hi = lab.spawn("web-1", &["iperf3", "-s", "-p", "40000"]);
    let _inet = lab.spawn("inet-1", &["iperf3", "-s"]);

    // R-SG-ALLOW + R-SG-STATE: TCP in to an allowed port; the replies leave web-1
    // although sg-web has no outbound rule for the internet.
    let tcp = iperf(&lab, "inet-1", "198.51.100.50", &["-t", "1"]);
    assert!(received_bytes(&tcp) > 1e5, "{tcp}");
    let tcp_back = iperf(&lab, "inet-1", "198.51.100.50", &["-t", "1", "-R"]);
    assert!(received_bytes(&tcp_back) > 1e5, "{tcp_back}");
    // UDP both ways, and TCP over IPv6 (NACL rule 140, SG ::/0).
    let udp = iperf(
        &lab,
        "inet-1",
        "198.51.100.50",
        &["-u", "-b", "10M", "-t", "1"],
    );
    assert!(received_bytes(&udp) > 1e5, "{udp}");
    let udp_back = iperf(
        &lab,
        "inet-1",
        "198.51.100.50",
        &["-u", "-b", "10M", "-t", "1", "-R"],
    );
    assert!(received_bytes(&udp_back) > 1e5, "{udp_back}");
    let tcp6 = iperf(&lab, "inet-1", "2001:db8:5:1::10", &["-t", "1"]);
    assert!(received_bytes(&tcp6) > 1e5, "{tcp6}");
    lab.ping("inet-1", "198.51.100.50", &[]);
    lab.ping("inet-1", "2001:db8:5:1::10", &["-6"]);

    // The NACL lets port 40000 in (ephemeral range, rule 110); sg-web does not.
    must_fail(
        &lab,
        "inet-1",
        3,
        &[
            "iperf3",
            "-c",
            "198.51.100.50",
            "-p",
            "40000",
            "-t",
            "1",
            "--connect-timeout",
            "1500",
        ],
    );
    // R-NACL-DIR / R-NACL-EPHEMERAL: web-2 (outbound open) reaches the internet from a
    // Linux ephemeral port; a data stream from port 1000 gets no reply past the NACL.
    let out = iperf(&lab, "web-2", "203.0.113.10", &["-t", "1"]);
    assert!(received_bytes(&out) > 1e5, "{out}");
    must_fail(
        &lab,
        "web-2",
        4,
        &["iperf3", "-c", "203.0.113.10", "-t", "1", "--cport", "1000"],
    );
    // R-NACL-ORDER: rule 90 denies bad-1 before rule 120 would allow its ping.
    lab.ping_fails("bad-1", "198.51.100.50", &[]);
    // R-RT-SAMESUBNET: acl-web denies ICMP to its own subnet outbound (rule 50), but two
    // instances of one subnet never cross it.
    lab.ping("web-1", "10.5.1.11", &[]);
    // R-SG-BOTHGATES with the default group: members talk, others are refused.
    lab.ping("dflt-1", "10.5.2.31", &[]);
    lab.ping_fails("admin-1", "10.5.2.30", &[]);
    // UDP that no rule of db-1 allows.
    udp_burst(&lab, "admin-1", "10.5.2.10", 9999, 3);

    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    let out = &stopped.stdout;
    let sg_line = out
        .lines()
        .find(|l| l.contains("dropped by security groups"))
        .unwrap_or_else(|| panic!("no SG drops in\n{out}"));
    for want in ["web-1 inbound", "db-1 inbound 3", "dflt-1 inbound"] {
        assert!(sg_line.contains(want), "{want:?} not in {sg_line:?}");
    }
    let nacl_line = out
        .lines()
        .find(|l| l.contains("dropped by network ACLs"))
        .unwrap_or_else(|| panic!("no NACL drops in\n{out}"));
    for want in ["acl-web inbound rule 90:", "acl-web inbound rule *:"] {
        assert!(nacl_line.contains(want), "{want:?} not in {nacl_line:?}");
    }
}
