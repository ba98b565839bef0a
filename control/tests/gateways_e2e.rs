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

#[test]
fn the_vpc_router_answers_ping_and_dns_and_shows_in_traceroute() {
    if !e2e("the_vpc_router_answers_ping_and_dns_and_shows_in_traceroute") {
        return;
    }
    let lab = LabRun::up(Some(LAB), &unique_prefix("rt"), &[]);
    // R-ADDR-ROUTER: its own subnet's router answers, another subnet's does not.
    lab.ping("web-1", "10.0.1.1", &[]);
    lab.ping("app-1", "10.0.2.1", &[]);
    lab.ping_fails("web-1", "10.0.2.1", &[]);
    // R-ADDR-DNS through the instance's resolv.conf (ip netns exec shows
    // /etc/netns/NAME/resolv.conf): names, reverse names, public names, no such name.
    let getent = |args: &[&str]| {
        let mut all = vec!["getent", "hosts"];
        all.extend(args);
        let o = lab.exec("web-1", &all);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = getent(&["ip-10-0-2-10.ec2.internal"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("10.0.2.10"), "{out}");
    let (_, out) = getent(&["10.0.2.10"]);
    assert!(out.contains("ip-10-0-2-10.ec2.internal"), "{out}");
    let (_, out) = getent(&["ec2-198-51-100-10.compute-1.amazonaws.com"]);
    assert!(
        out.starts_with("10.0.1.10"),
        "public name inside the VPC: {out}"
    );
    let (code, _) = getent(&["no-such-host.example.com"]);
    assert_eq!(code, Some(2), "NXDOMAIN, nothing forwarded");
    // traceroute: the subnet's router is hop 1 (sg-app admits time exceeded).
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
            "4",
            "203.0.113.10",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let hops: Vec<&str> = text.lines().skip(1).collect();
    assert!(
        hops.first().is_some_and(|h| h.contains("10.0.2.1 ")),
        "{text}"
    );
    assert!(
        hops.last().is_some_and(|h| h.contains("203.0.113.10")),
        "{text}"
    );
    // R-ADDR-IMDS with an IMDSv2 token: each instance gets its own facts; an outside
    // host cannot reach the service at all.
    let curl = |id: &str, args: &[&str]| lab.curl(id, args);
    let token = lab.imds_token("web-1");
    assert_eq!(token.len(), 32, "{token:?}");
    let header = format!("X-aws-ec2-metadata-token: {token}");
    let md = |id: &str, path: &str, h: &str| {
        curl(
            id,
            &[
                "-H",
                h,
                &format!("http://169.254.169.254/latest/meta-data/{path}"),
            ],
        )
    };
    assert_eq!(md("web-1", "instance-id", &header), "web-1");
    assert_eq!(md("web-1", "local-ipv4", &header), "10.0.1.10");
    assert_eq!(md("web-1", "public-ipv4", &header), "198.51.100.10");
    let mac = md("web-1", "mac", &header);
    assert_eq!(
        md(
            "web-1",
            &format!("network/interfaces/macs/{mac}/subnet-id"),
            &header
        ),
        "public-a"
    );
    assert_eq!(md("app-1", "instance-id", "X-Nothing: 1"), "app-1");
    let o = lab.exec(
        "inet-1",
        &[
            "curl",
            "-s",
            "-m",
            "2",
            "http://169.254.169.254/latest/meta-data/instance-id",
        ],
    );
    assert!(
        !o.status.success(),
        "an outside host reached the metadata service"
    );
    let prefix = lab.prefix.clone();
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(
        !std::path::Path::new(&format!("/etc/netns/{prefix}web-1")).exists(),
        "resolv.conf left behind"
    );
}

#[test]
fn udp_fragments_cross_the_nat_gateway() {
    // R-NAT-FRAG: AWS's NAT gateway carries UDP fragments. app-1's link is cut to 1500
    // bytes, so its stack fragments each 3000-byte datagram; inet-1's reassembles them.
    if !e2e("udp_fragments_cross_the_nat_gateway") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("uf"), &[]);
    let o = lab.exec("app-1", &["ip", "link", "set", "eth0", "mtu", "1500"]);
    assert!(o.status.success(), "{o:?}");
    let _server = lab.spawn("inet-1", &["iperf3", "-s"]);
    let out = iperf(
        &lab,
        "app-1",
        "203.0.113.10",
        &["-u", "-l", "3000", "-b", "20M", "-t", "2"],
    );
    // The receiver's line: "0.00-2.00 sec ... Mbits/sec  0.010 ms  0/1667 (0%)  receiver".
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("receiver"))
        .unwrap_or_else(|| panic!("{out}"));
    let (lost, total): (u64, u64) = line
        .split_whitespace()
        .find_map(|w| {
            let (a, b) = w.split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("{line}"));
    assert!(total > 100 && lost * 20 < total, "{out}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert_eq!(
        common::dropped(&stopped.stdout, "FRAGMENT"),
        0,
        "{}",
        stopped.stdout
    );
}
