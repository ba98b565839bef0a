//! Middlebox routing end to end (issue 21): the local route's target replaced by an
//! appliance whose own Linux stack forwards, a route whose target was deleted, and `vpcd
//! routes` of the running lab. Needs root (see `common::e2e`).

mod common;

use common::{e2e, unique_prefix, LabRun, VPCD};

const LAB: &str = include_str!("labs/middlebox.yaml");

/// Packets the namespace's own stack forwarded (`Ip: ForwDatagrams` of /proc/net/snmp).
fn forwarded(lab: &LabRun, id: &str) -> u64 {
    let o = lab.exec(id, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

#[test]
fn traffic_between_subnets_crosses_the_appliance_the_local_route_names() {
    if !e2e("traffic_between_subnets_crosses_the_appliance_the_local_route_names") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-mb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("middlebox.yaml");
    std::fs::write(&file, LAB).unwrap();
    let lab = LabRun::up(Some(file.to_str().unwrap()), &unique_prefix("mb"), &[]);
    // The appliance forwards with its own stack, and sends no redirects (its packets go
    // back out the interface they came in on).
    for s in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
    ] {
        assert!(lab.exec("fw-1", &["sysctl", "-qw", s]).status.success());
    }
    let before = forwarded(&lab, "fw-1");
    lab.ping("a-1", "10.8.2.10", &["-c", "3"]);
    assert!(
        forwarded(&lab, "fw-1") >= before + 3,
        "the requests did not cross fw-1"
    );
    // The route whose NAT gateway was deleted drops, and is counted.
    lab.ping_fails("a-1", "203.0.113.10", &[]);
    let out = std::process::Command::new(VPCD)
        .args(["routes", "rt-a", "--prefix", &lab.prefix])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{routes}");
    let rows: Vec<Vec<&str>> = routes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["10.8.0.0/16", "fw-1", "local", "active"]),
        "{routes}"
    );
    assert!(
        rows.contains(&vec!["0.0.0.0/0", "nat-gone", "static", "blackhole"]),
        "{routes}"
    );
    let stopped = lab.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::dropped(&stopped.stdout, "ROUTE_BLACKHOLE") > 0);
}
