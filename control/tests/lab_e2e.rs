//! End to end: the real `vpcd up`, real namespaces, the real Linux stack on both ends.
//! Needs root (see `common::e2e`). Every test uses its own prefix and tears down what it
//! built, also when it fails.

mod common;

use common::{
    assert_clean, dropped, e2e, iperf, namespaces_with, received_bytes, unique_prefix, LabRun,
};
use std::process::Command;

/// Everything about the namespace the tests (and vpcd) run in that vpcd must not change.
fn host_network() -> String {
    let mut s = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip");
        s += &String::from_utf8_lossy(&out.stdout);
    }
    s
}

#[test]
fn instances_in_different_subnets_ping_each_other_over_ipv4_and_ipv6() {
    if !e2e("instances_in_different_subnets_ping_each_other_over_ipv4_and_ipv6") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("p"), &[]);
    lab.ping("web-1", "10.0.2.10", &[]);
    lab.ping("app-1", "10.0.1.10", &[]);
    lab.ping("web-1", "2001:db8:10:2::10", &["-6"]);
    lab.ping("app-1", "2001:db8:10:1::10", &["-6"]);
    // Through the IGW: out with the public IP, and in to it (R-IGW-NAT); IPv6 untranslated.
    lab.ping("web-1", "203.0.113.10", &[]);
    lab.ping("inet-1", "198.51.100.10", &[]);
    lab.ping("web-1", "2001:db8:ffff::10", &["-6"]);
    // app-1 has no public IP: its IPv4 cannot be reached from the internet.
    lab.ping_fails("inet-1", "10.0.2.10", &[]);
    let prefix = lab.prefix.clone();
    let stopped = lab.stop();
    assert!(stopped.success, "vpcd failed:\n{}", stopped.stderr);
    assert!(stopped.stdout.contains("vpcd: stopped; forwarded"));
    assert_clean(&prefix);
}

#[test]
fn tcp_and_udp_cross_the_lab_both_ways_with_iperf3() {
    if !e2e("tcp_and_udp_cross_the_lab_both_ways_with_iperf3") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("i"), &[]);
    let _server = lab.spawn("app-1", &["iperf3", "-s"]);
    // A few seconds of TCP web-1 -> app-1 that must complete, then the reverse direction.
    let tcp = iperf(&lab, "web-1", "10.0.2.10", &["-t", "3"]);
    assert!(received_bytes(&tcp) > 1e6, "{tcp}");
    let tcp_back = iperf(&lab, "web-1", "10.0.2.10", &["-t", "1", "-R"]);
    assert!(received_bytes(&tcp_back) > 1e6, "{tcp_back}");
    // UDP both ways, IPv6 for one of them.
    let udp = iperf(&lab, "web-1", "10.0.2.10", &["-u", "-b", "20M", "-t", "1"]);
    assert!(received_bytes(&udp) > 1e5, "{udp}");
    let udp6 = iperf(
        &lab,
        "web-1",
        "2001:db8:10:2::10",
        &["-u", "-b", "20M", "-t", "1", "-R"],
    );
    assert!(received_bytes(&udp6) > 1e5, "{udp6}");
    // TCP from the internet to web-1's public IP: the IGW rewrites the destination and
    // fixes the TCP checksum.
    let _web = lab.spawn("web-1", &["iperf3", "-s"]);
    let igw = iperf(&lab, "inet-1", "198.51.100.10", &["-t", "1"]);
    assert!(received_bytes(&igw) > 1e6, "{igw}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(stopped.stdout.contains(" tx errors"), "{}", stopped.stdout);
}

#[test]
fn garbage_from_a_namespace_is_dropped_counted_and_harmless() {
    if !e2e("garbage_from_a_namespace_is_dropped_counted_and_harmless") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("g"), &[]);
    let mut good = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
        .udp(5000, 5001)
        .write(&mut good, b"fine")
        .unwrap();
    let mut bad_checksum = good.clone();
    bad_checksum[10] ^= 0x5a;
    let mut too_long = good.clone();
    too_long[3] = 0xff; // total length beyond the bytes sent
    let garbage = vec![
        vec![0x45, 0, 0],
        vec![0x70; 40],
        good[..22].to_vec(),
        bad_checksum,
        too_long,
    ];
    common::send_raw(&lab.ns("web-1"), &garbage);
    // The router keeps forwarding.
    lab.ping("web-1", "10.0.2.10", &[]);
    let prefix = lab.prefix.clone();
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(
        dropped(&stopped.stdout, "MALFORMED") >= garbage.len() as u64,
        "{}",
        stopped.stdout
    );
    assert_clean(&prefix);
}

#[test]
fn teardown_leaves_nothing_and_the_host_namespace_is_never_touched() {
    if !e2e("teardown_leaves_nothing_and_the_host_namespace_is_never_touched") {
        return;
    }
    let before = host_network();
    let lab = LabRun::up(None, &unique_prefix("t"), &[]);
    assert_eq!(namespaces_with(&lab.prefix).len(), 3);
    lab.ping("web-1", "10.0.2.10", &[]);
    assert_eq!(host_network(), before, "vpcd changed its own namespace");
    let prefix = lab.prefix.clone();
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert_clean(&prefix);
    assert_eq!(host_network(), before);
}

#[test]
fn a_second_up_with_a_prefix_in_use_is_refused_and_the_first_keeps_running() {
    if !e2e("a_second_up_with_a_prefix_in_use_is_refused_and_the_first_keeps_running") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("s"), &[]);
    let second = common::vpcd_with_deadline(&["up", "--prefix", &lab.prefix], 20);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by a running vpcd") && err.contains(&lab.pid().to_string()),
        "{err}"
    );
    lab.ping("web-1", "10.0.2.10", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}

#[test]
fn down_removes_what_a_killed_run_left() {
    if !e2e("down_removes_what_a_killed_run_left") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("k"), &[]);
    let prefix = lab.prefix.clone();
    let _left = lab.kill();
    assert_eq!(
        namespaces_with(&prefix).len(),
        3,
        "a killed vpcd cannot clean up"
    );
    let again = common::vpcd_with_deadline(&["up", "--prefix", &prefix], 20);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("vpcd down --prefix"), "{err}");
    let down = common::down(&prefix);
    assert!(down.status.success());
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("removed 3 namespace(s)"), "{said}");
    assert_clean(&prefix);
}

#[test]
fn down_stops_a_running_lab() {
    if !e2e("down_stops_a_running_lab") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("d"), &[]);
    let prefix = lab.prefix.clone();
    let down = common::down(&prefix);
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped the vpcd"));
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert_clean(&prefix);
}

#[test]
fn every_example_lab_comes_up_and_goes_away() {
    if !e2e("every_example_lab_comes_up_and_goes_away") {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
    let mut labs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    labs.sort();
    assert!(labs.len() >= 5);
    for path in labs {
        let file = path.to_str().unwrap();
        let lab = LabRun::up(Some(file), &unique_prefix("x"), &["--workers", "1"]);
        let in_map = lab.map.iter().filter(|l| l.contains("  ns ")).count();
        assert_eq!(namespaces_with(&lab.prefix).len(), in_map, "{file}");
        let prefix = lab.prefix.clone();
        let stopped = lab.stop();
        assert!(stopped.success, "{file}: {}", stopped.stderr);
        assert_clean(&prefix);
    }
}
