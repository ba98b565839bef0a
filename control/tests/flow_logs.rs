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
            "5 vpc-lab private-a app-1 eni-app-1 egress 18 IPv4 10.0.2.10 10.0.1.10 us-east-1 use1-az1 ACCEPT",
            "5 vpc-lab private-a app-1 eni-app-1 ingress 2 IPv4 10.0.1.10 10.0.2.10 us-east-1 use1-az1 ACCEPT",
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

/// A TCP segment with exactly `flags` (FIN 1, SYN 2, RST 4, PSH 8, ACK 16).
fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        panic!("IPv4 only here")
    };
    let mut b =
        etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64).tcp(sport, dport, 1, 64240);
    if flags & 1 != 0 {
        b = b.fin();
    }
    if flags & 2 != 0 {
        b = b.syn();
    }
    if flags & 4 != 0 {
        b = b.rst();
    }
    if flags & 8 != 0 {
        b = b.psh();
    }
    if flags & 16 != 0 {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

use std::net::IpAddr;

/// The lab with one more flow log over the whole VPC in a format of the fields that
/// depend on the path, and an S3-like service.
fn path_lab() -> Snapshot {
    let text = LAB
        .replace(
            "        destination: logs/custom.log\n",
            "        destination: logs/custom.log\n      - id: fl-path\n        resource: vpc-lab\n        log_format: \"${interface-id} ${flow-direction} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr} ${traffic-path} ${pkt-src-aws-service} ${pkt-dst-aws-service} ${tcp-flags}\"\n        destination: logs/path.log\n",
        )
        .replace(
            "internet:\n",
            "services:\n  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }\ninternet:\n",
        );
    control::load_text(&text, 1).unwrap().1
}

#[test]
fn r_fl_fields_tcp_flags_or_only_fin_syn_rst_and_syn_ack() {
    // AWS: "TCP flags ... FIN 1, SYN 2, RST 4, SYN-ACK 18"; ACK and PSH are not reported
    // on their own. A client's connection reads 3, its server's 19.
    let s = path_lab();
    let mut pipe = Pipeline::new();
    let web = ("10.0.1.10", "10.0.2.10");
    for (from, (a, b), sp, dp, flags) in [
        ("web-1", web, 40000, 5201, 2),
        ("app-1", (web.1, web.0), 5201, 40000, 18),
        ("web-1", web, 40000, 5201, 16),
        ("web-1", web, 40000, 5201, 24),
        ("app-1", (web.1, web.0), 5201, 40000, 24),
        ("web-1", web, 40000, 5201, 17),
        ("app-1", (web.1, web.0), 5201, 40000, 17),
    ] {
        run(&mut pipe, &s, from, tcp(a, b, sp, dp, flags), T0);
    }
    let l = lines(&mut pipe, &s, T0, true);
    let path = of(&l, "logs/path.log");
    assert!(
        path.contains(&"eni-web-1 egress 10.0.1.10 10.0.2.10 10.0.1.10 10.0.2.10 1 - - 3"),
        "{path:#?}"
    );
    assert!(
        path.contains(&"eni-app-1 egress 10.0.2.10 10.0.1.10 10.0.2.10 10.0.1.10 1 - - 19"),
        "{path:#?}"
    );
    // An RST adds 4.
    run(
        &mut pipe,
        &s,
        "web-1",
        tcp(web.0, web.1, 40001, 5201, 4),
        T0,
    );
    let l = lines(&mut pipe, &s, T0, true);
    assert!(of(&l, "logs/path.log")
        .iter()
        .any(|r| r.starts_with("eni-web-1 egress") && r.ends_with(" 4")));
}

#[test]
fn r_fl_fields_version_is_the_highest_version_of_the_fields_used() {
    use dataplane::flow_log::format_version;
    let f = |s: &str| -> Vec<Box<str>> { s.split(' ').map(Into::into).collect() };
    assert_eq!(format_version(&f("version srcaddr dstaddr action")), 2);
    assert_eq!(format_version(&f("version tcp-flags")), 3);
    assert_eq!(format_version(&f("version srcaddr az-id")), 4);
    assert_eq!(format_version(&f("version traffic-path vpc-id")), 5);
    let s = path_lab();
    let v = |id: &str| {
        let log = s.topo.flow_logs.iter().find(|l| &*l.id == id).unwrap();
        format_version(&log.format)
    };
    assert_eq!((v("fl-all"), v("fl-custom"), v("fl-path")), (2, 5, 5));
}

#[test]
fn r_fl_fields_a_nat_gateway_eni_names_itself_and_the_packet_addresses() {
    // AWS's NAT gateway example (instance 10.0.1.5, NAT ENI 10.0.0.220, internet host
    // 203.0.113.5), with ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr}: at the NAT
    // gateway's ENI, the far end beyond it reads as the ENI's own address, both ways.
    let s = path_lab();
    let mut pipe = Pipeline::new();
    let mut syn = tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443);
    let at = Timestamp::from_secs(T0);
    let app = s.port_named("app-1").unwrap();
    pipe.process(&s, app, &mut syn, at, &mut dataplane::NoObserver);
    // What reached inet-1: from the NAT gateway's public IP and its port.
    let nat_port = match etherparse::SlicedPacket::from_ip(&syn).unwrap().transport {
        Some(etherparse::TransportSlice::Tcp(t)) => t.source_port(),
        _ => panic!("not TCP"),
    };
    run(
        &mut pipe,
        &s,
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.5", 443, nat_port),
        T0,
    );
    let l = lines(&mut pipe, &s, T0, true);
    let mut nat: Vec<String> = of(&l, "logs/path.log")
        .into_iter()
        .filter(|r| r.starts_with("eni-nat-a"))
        .map(|r| r.replace(&nat_port.to_string(), "PORT"))
        .collect();
    nat.sort();
    assert_eq!(
        nat,
        [
            "eni-nat-a egress 10.0.1.5 10.0.2.10 203.0.113.10 10.0.2.10 1 - - 18",
            "eni-nat-a egress 10.0.1.5 203.0.113.10 10.0.1.5 203.0.113.10 8 - - 2",
            "eni-nat-a ingress 10.0.2.10 10.0.1.5 10.0.2.10 203.0.113.10 - - - 2",
            "eni-nat-a ingress 203.0.113.10 10.0.1.5 203.0.113.10 10.0.1.5 - - - 18",
        ]
    );
}

#[test]
fn r_fl_fields_traffic_path_and_aws_service_follow_the_route() {
    let s = path_lab();
    let mut pipe = Pipeline::new();
    // web-1 to an S3-like service host through the IGW: path 8, destination S3.
    run(
        &mut pipe,
        &s,
        "web-1",
        tcp_syn("10.0.1.10", "198.18.0.10", 40000, 443),
        T0,
    );
    // app-1 to the internet through the NAT gateway: path 1 (another resource of the
    // VPC), and to web-1 in the VPC: 1.
    run(
        &mut pipe,
        &s,
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        T0,
    );
    let l = lines(&mut pipe, &s, T0, true);
    let path = of(&l, "logs/path.log");
    assert!(
        path.contains(&"eni-web-1 egress 10.0.1.10 198.18.0.10 10.0.1.10 198.18.0.10 8 - S3 2"),
        "{path:#?}"
    );
    assert!(
        path.contains(&"eni-app-1 egress 10.0.2.10 203.0.113.10 10.0.2.10 203.0.113.10 1 - - 2"),
        "{path:#?}"
    );
}

#[test]
fn r_fl_status_nodata_for_each_window_an_eni_was_quiet() {
    use dataplane::flow_log::NoData;
    let s = path_lab();
    let mut idle = NoData::default();
    // The writer meets the lab at T0: nothing is judged before a window and the time its
    // late records may take have passed.
    assert!(idle.due(&s, T0).is_empty());
    assert!(idle.due(&s, T0 + 121).is_empty());
    // web-1 had traffic in the first window (a record starting at T0 + 30).
    let mut pipe = Pipeline::new();
    run(
        &mut pipe,
        &s,
        "web-1",
        ping("10.0.1.10", "10.0.2.10"),
        T0 + 30,
    );
    for l in lines(&mut pipe, &s, T0 + 30, true) {
        idle.saw(&l);
    }
    let due = idle.due(&s, T0 + 122);
    let all = of(&due, "logs/all.log");
    // app-1 answered the ping: it had traffic too. The NAT gateway's ENI had none.
    assert_eq!(
        all,
        ["2 123456789012 eni-nat-a - - - - - - - 1700000000 1700000060 - NODATA"]
    );
    // The custom log covers only the private subnet: app-1 had traffic, so nothing.
    assert!(of(&due, "logs/custom.log").is_empty());
    // The next window was quiet for all three; said once.
    let due = idle.due(&s, T0 + 182);
    assert_eq!(of(&due, "logs/all.log").len(), 3);
    assert!(idle.due(&s, T0 + 183).is_empty());
}
