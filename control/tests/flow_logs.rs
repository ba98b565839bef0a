//! Flow logs in process (semantics.md §12): each record field against AWS's definitions.

mod support;

use dataplane::flow_log::Line;
use dataplane::{Pipeline, Snapshot, Timestamp, Verdict};
use support::*;

const LAB: &str = include_str!("labs/flow_logs.yaml");
const T0: u64 = 1_700_000_000;

fn run(pipe: &mut Pipeline, s: &Snapshot, from: &str, pkt: Vec<u8>, at: u64) -> Verdict {
    let p = s.port_named(from).unwrap();
    let mut buf = pkt;
    pipe.process(
        s,
        p,
        &mut buf,
        Timestamp::from_secs(at),
        &mut dataplane::NoObserver,
    )
}

fn lines(pipe: &mut Pipeline, s: &Snapshot, at: u64, all: bool) -> Vec<Line> {
    let mut out = Vec::new();
    pipe.flow_logs.flush(s, at, all, &mut |l| {
        out.push(l);
        true
    });
    out
}

fn of<'a>(lines: &'a [Line], dest: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = lines
        .iter()
        .filter(|l| &*l.destination == dest)
        .map(|l| l.text.as_str())
        .collect();
    v.sort();
    v
}

#[test]
fn default_format_records_both_directions_at_both_enis() {
    let (_, s) = control::load_text(LAB, 1).unwrap();
    let mut pipe = Pipeline::new();
    // Three SYNs of one flow and the SYN-ACK, over two seconds.
    for i in 0..3 {
        run(
            &mut pipe,
            &s,
            "web-1",
            tcp_syn("10.0.1.10", "10.0.2.10", 40000, 5201),
            T0 + i,
        );
    }
    run(
        &mut pipe,
        &s,
        "app-1",
        tcp_synack("10.0.2.10", "10.0.1.10", 5201, 40000),
        T0 + 2,
    );
    // The window (60 s) is not over yet: nothing.
    assert!(lines(&mut pipe, &s, T0 + 30, false).is_empty());
    // Each aggregate's window opened with its first packet (R-FL-KEY): the SYN-ACKs' at
    // T0 + 2, so all four are over at T0 + 62.
    let l = lines(&mut pipe, &s, T0 + 62, false);
    let all = of(&l, "logs/all.log");
    assert_eq!(
        all,
        [
            "2 123456789012 eni-app-1 10.0.1.10 10.0.2.10 40000 5201 6 3 120 1700000000 1700000002 ACCEPT OK",
            "2 123456789012 eni-app-1 10.0.2.10 10.0.1.10 5201 40000 6 1 40 1700000002 1700000002 ACCEPT OK",
            "2 123456789012 eni-web-1 10.0.1.10 10.0.2.10 40000 5201 6 3 120 1700000000 1700000002 ACCEPT OK",
            "2 123456789012 eni-web-1 10.0.2.10 10.0.1.10 5201 40000 6 1 40 1700000002 1700000002 ACCEPT OK",
        ]
    );
    // Nothing left after the flush.
    assert!(lines(&mut pipe, &s, T0 + 200, true).is_empty());
}

#[test]
fn custom_fields_follow_aws_definitions() {
    let (_, s) = control::load_text(LAB, 1).unwrap();
    let mut pipe = Pipeline::new();
    run(
        &mut pipe,
        &s,
        "web-1",
        tcp_syn("10.0.1.10", "10.0.2.10", 40000, 5201),
        T0,
    );
    run(
        &mut pipe,
        &s,
        "app-1",
        tcp_synack("10.0.2.10", "10.0.1.10", 5201, 40000),
        T0,
    );
    let l = lines(&mut pipe, &s, T0, true);
    // ${version} ${vpc-id} ${subnet-id} ${instance-id} ${interface-id} ${flow-direction}
    // ${tcp-flags} ${type} ${pkt-srcaddr} ${pkt-dstaddr} ${region} ${az-id} ${action}
    assert_eq!(
        of(&l, "logs/custom.log"),
        [
            "5 vpc-lab private-a app-1 eni-app-1 egress 18 IPv4 10.0.2.10 10.0.1.10 us-east-1 us-east-1a ACCEPT",
            "5 vpc-lab private-a app-1 eni-app-1 ingress 2 IPv4 10.0.1.10 10.0.2.10 us-east-1 us-east-1a ACCEPT",
        ],
        "SYN is 2, SYN-ACK 18; only the private subnet is covered"
    );
}

#[test]
fn rejected_packets_are_logged_where_dropped_and_a_reject_log_has_no_accept() {
    let (_, s) = control::load_text(LAB, 1).unwrap();
    let mut pipe = Pipeline::new();
    // TCP 22 from the internet: web-1's group has no such rule.
    run(
        &mut pipe,
        &s,
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.10", 50000, 22),
        T0,
    );
    // An accepted ping too.
    run(
        &mut pipe,
        &s,
        "inet-1",
        ping("203.0.113.10", "198.51.100.10"),
        T0,
    );
    let l = lines(&mut pipe, &s, T0, true);
    assert_eq!(
        of(&l, "logs/reject.log"),
        ["2 123456789012 eni-web-1 203.0.113.10 10.0.1.10 50000 22 6 1 40 1700000000 1700000000 REJECT OK"]
    );
    let all = of(&l, "logs/all.log");
    assert!(all.iter().any(|r| r.ends_with("REJECT OK")));
    assert!(all
        .iter()
        .any(|r| r.contains(" 0 0 1 1 32 ") && r.ends_with("ACCEPT OK")));
}

#[test]
fn router_traffic_is_never_logged() {
    // R-FL-EXEMPT: the router's own addresses, DNS, metadata.
    let (_, s) = control::load_text(LAB, 1).unwrap();
    let mut pipe = Pipeline::new();
    for pkt in [
        ping("10.0.1.10", "10.0.1.1"),
        udp("10.0.1.10", "10.0.0.2", 40000, 53),
        tcp_syn("10.0.1.10", "169.254.169.254", 40000, 80),
    ] {
        let v = run(&mut pipe, &s, "web-1", pkt, T0);
        assert!(matches!(v, Verdict::Local(_)), "{v:?}");
    }
    assert!(lines(&mut pipe, &s, T0 + 1000, true).is_empty());
    // The same flow log does record web-1's traffic to an instance at that moment.
    run(&mut pipe, &s, "web-1", ping("10.0.1.10", "10.0.2.10"), T0);
    assert!(!lines(&mut pipe, &s, T0 + 1000, true).is_empty());
}

#[test]
fn a_line_the_writer_could_not_take_makes_the_next_window_say_skipdata() {
    let (_, s) = control::load_text(LAB, 1).unwrap();
    let mut pipe = Pipeline::new();
    run(
        &mut pipe,
        &s,
        "web-1",
        tcp_syn("10.0.1.10", "10.0.2.10", 40000, 5201),
        T0,
    );
    // The writer's channel is full: every line of this window is refused.
    let mut refused = 0;
    pipe.flow_logs.flush(&s, T0 + 61, false, &mut |_| {
        refused += 1;
        false
    });
    assert!(refused > 0, "the window closed with lines to write");
    // The next flush says, for each ENI that lost a line, that records were lost
    // (R-FL-STATUS), and says it only once.
    let next = lines(&mut pipe, &s, T0 + 62, false);
    let all = of(&next, "logs/all.log");
    assert_eq!(
        all,
        [
            "2 123456789012 eni-app-1 - - - - - - - 1700000062 1700000062 - SKIPDATA",
            "2 123456789012 eni-web-1 - - - - - - - 1700000062 1700000062 - SKIPDATA",
        ]
    );
    assert!(lines(&mut pipe, &s, T0 + 63, false).is_empty());
}
