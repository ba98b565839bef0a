//! Security groups, connection tracking and network ACLs (semantics.md §3, §4), in
//! process: packets built with etherparse through the compiled lab, each test one rule.

mod support;

use dataplane::conntrack::Conntrack;
use dataplane::observer::{Direction, SgDecision, Step};
use dataplane::{DropReason, Pipeline, Recorder, Timestamp, Verdict};
use etherparse::PacketBuilder;
use support::*;

/// A web subnet with a custom NACL and a private subnet with the default one.
const LAB: &str = r#"
version: 1
vpcs:
  - id: vpc-s
    cidr_block: 10.5.0.0/16
    ipv6_cidr_block: 2001:db8:5::/56
    internet_gateway: igw-s
    subnets:
      - { id: web, cidr_block: 10.5.1.0/24, ipv6_cidr_block: "2001:db8:5:1::/64", route_table: rt-web, network_acl: acl-web }
      - { id: app, cidr_block: 10.5.2.0/24, ipv6_cidr_block: "2001:db8:5:2::/64", route_table: rt-web }
    route_tables:
      - id: rt-web
        routes:
          - { destination: 0.0.0.0/0, target: igw-s }
          - { destination: "::/0", target: igw-s }
    network_acls:
      - id: acl-web
        inbound:
          - { rule: 200, action: allow, protocol: tcp, port_range: 80, cidr: 0.0.0.0/0 }
          - { rule: 90, action: deny, protocol: all, cidr: 203.0.113.66/32 }
          - { rule: 110, action: allow, protocol: tcp, port_range: 32768-60999, cidr: 0.0.0.0/0 }
          - { rule: 120, action: allow, protocol: icmp, cidr: 0.0.0.0/0 }
          - { rule: 130, action: allow, protocol: all, cidr: 10.5.0.0/16 }
          - { rule: 140, action: allow, protocol: all, ipv6_cidr: "::/0" }
        outbound:
          - { rule: 50, action: deny, protocol: icmp, cidr: 10.5.1.0/24 }
          - { rule: 100, action: allow, protocol: all, cidr: 0.0.0.0/0 }
          - { rule: 101, action: allow, protocol: all, ipv6_cidr: "::/0" }
    security_groups:
      - id: sg-web
        inbound:
          - { protocol: tcp, port_range: 80, source: 0.0.0.0/0 }
          - { protocol: tcp, port_range: 80, source: "::/0" }
          - { protocol: icmp, icmp_type: 8, source: 0.0.0.0/0 }
          - { protocol: icmp, icmp_type: 3, icmp_code: 4, source: 0.0.0.0/0 }
          - { protocol: tcp, port_range: 22, source: sg-admin }
        outbound:
          - { protocol: tcp, port_range: 5432, destination: sg-db }
          - { protocol: icmp, destination: 10.5.0.0/16 }
          - { protocol: tcp, port_range: 443, destination: pl-s3 }
      - id: sg-out
        inbound: []
      - id: sg-db
        inbound: [{ protocol: tcp, port_range: 5432, source: sg-web }]
        outbound: []
      - id: sg-admin
        inbound: []
      - id: sg-open
        inbound: [{ protocol: all, source: 0.0.0.0/0 }]
        outbound: [{ protocol: all, destination: 0.0.0.0/0 }]
    instances:
      - { id: web-1, subnet: web, private_ip: 10.5.1.10, ipv6_address: "2001:db8:5:1::10", public_ip: 198.51.100.50, security_groups: [sg-web] }
      - { id: web-2, subnet: web, private_ip: 10.5.1.11, public_ip: 198.51.100.51, security_groups: [sg-web, sg-out] }
      - { id: db-1, subnet: app, private_ip: 10.5.2.10, security_groups: [sg-db] }
      - { id: admin-1, subnet: app, private_ip: 10.5.2.20, security_groups: [sg-admin] }
      - { id: dflt-1, subnet: app, private_ip: 10.5.2.30 }
      - { id: dflt-2, subnet: app, private_ip: 10.5.2.31 }
      - { id: open-1, subnet: app, private_ip: 10.5.2.40, public_ip: 198.51.100.60, security_groups: [sg-open] }
internet:
  hosts:
    - { id: inet-1, ipv4: 203.0.113.10, ipv6: "2001:db8:ffff::10" }
    - { id: bad-1, ipv4: 203.0.113.66 }
services:
  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }
"#;

fn sec_lab() -> Lab {
    lab_text(LAB)
}

fn icmp_raw(src: &str, dst: &str, ty: u8, code: u8) -> Vec<u8> {
    let (IpAddr4(s), IpAddr4(d)) = (v4(src), v4(dst));
    let mut out = Vec::new();
    PacketBuilder::ipv4(s, d, 64)
        .icmpv4_raw(ty, code, [0; 4])
        .write(&mut out, &[0x45; 28])
        .unwrap();
    out
}

struct IpAddr4([u8; 4]);

fn v4(s: &str) -> IpAddr4 {
    IpAddr4(s.parse::<std::net::Ipv4Addr>().unwrap().octets())
}

fn verdict(l: &mut Lab, from: &str, pkt: Vec<u8>) -> Verdict {
    l.send(from, pkt).verdict
}

fn eni_ix(l: &Lab, id: &str) -> usize {
    l.snap.topo.enis.iter().position(|e| &*e.id == id).unwrap()
}

/// The NACL counter names that counted a drop.
fn nacl_drops(l: &Lab) -> Vec<String> {
    let t = &l.snap.topo;
    l.pipe
        .stats
        .nacl_drops
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(i, _)| t.network_acls.iter().find_map(|a| a.counter_name(i as u32)))
        .collect()
}

#[test]
fn a_reply_needs_no_rule_because_the_flow_is_tracked() {
    // R-SG-STATE: inet-1 opens TCP 80 to web-1 (allowed inbound); web-1's answer passes
    // its egress although no outbound rule names the internet.
    let mut l = sec_lab();
    l.expect_to(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.50", 41000, 80),
        "web-1",
    );
    l.expect_to(
        "web-1",
        tcp_synack("10.5.1.10", "203.0.113.10", 80, 41000),
        "inet-1",
    );
    // A new flow of web-1 to the same host is judged by the rules, and refused.
    l.expect_drop(
        "web-1",
        tcp_syn("10.5.1.10", "203.0.113.10", 41001, 80),
        DropReason::SgEgress,
    );
}

#[test]
fn an_unmatched_inbound_packet_is_dropped_by_the_receivers_groups() {
    // R-SG-ALLOW: the NACL lets the ephemeral port in (rule 110); no rule of sg-web does.
    let mut l = sec_lab();
    l.expect_drop(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.50", 80, 40000),
        DropReason::SgIngress,
    );
    let web = eni_ix(&l, "web-1");
    assert_eq!(
        l.pipe.stats.sg_drops[web],
        [1, 0],
        "counted at web-1, inbound"
    );
}

#[test]
fn both_gates_the_senders_egress_and_the_receivers_ingress() {
    // R-SG-BOTHGATES and R-SG-REF (groups as sources and destinations).
    let mut l = sec_lab();
    l.expect_to(
        "web-1",
        tcp_syn("10.5.1.10", "10.5.2.10", 40000, 5432),
        "db-1",
    );
    // db-1's outbound list is empty: it opens nothing.
    l.expect_drop(
        "db-1",
        tcp_syn("10.5.2.10", "10.5.1.10", 40000, 22),
        DropReason::SgEgress,
    );
    // admin-1 (outbound omitted: all) may SSH to web-1, whose sg-web admits sg-admin.
    l.expect_to(
        "admin-1",
        tcp_syn("10.5.2.20", "10.5.1.10", 40000, 22),
        "web-1",
    );
    // but not reach the database: sg-db admits sg-web only.
    l.expect_drop(
        "admin-1",
        tcp_syn("10.5.2.20", "10.5.2.10", 40000, 5432),
        DropReason::SgIngress,
    );
}

#[test]
fn an_empty_outbound_list_allows_nothing_but_replies_flow() {
    let mut l = sec_lab();
    l.expect_to(
        "web-1",
        tcp_syn("10.5.1.10", "10.5.2.10", 40000, 5432),
        "db-1",
    );
    l.expect_to(
        "db-1",
        tcp_synack("10.5.2.10", "10.5.1.10", 5432, 40000),
        "web-1",
    );
}

#[test]
fn icmp_rules_match_type_and_code_and_errors_are_not_related() {
    let mut l = sec_lab();
    // Echo request (type 8) is allowed in; a timestamp request (13) is not.
    l.expect_to("inet-1", ping("203.0.113.10", "198.51.100.50"), "web-1");
    assert_eq!(
        verdict(
            &mut l,
            "inet-1",
            icmp_raw("203.0.113.10", "198.51.100.50", 13, 0)
        ),
        Verdict::Drop(DropReason::SgIngress)
    );
    // R-SG-ICMP-ERR: web-1 opened a flow to inet-1, yet a port-unreachable (3/3) from it
    // needs a rule and has none; fragmentation-needed (3/4) has one.
    l.expect_to(
        "web-1",
        tcp_syn("10.5.1.10", "198.18.0.10", 40000, 443),
        "s3-1",
    );
    assert_eq!(
        verdict(
            &mut l,
            "s3-1",
            icmp_raw("198.18.0.10", "198.51.100.50", 3, 3)
        ),
        Verdict::Drop(DropReason::SgIngress)
    );
    assert_eq!(
        verdict(
            &mut l,
            "s3-1",
            icmp_raw("198.18.0.10", "198.51.100.50", 3, 4)
        ),
        Verdict::Forward(l.port("web-1"))
    );
}

#[test]
fn a_prefix_list_is_a_destination() {
    // R-SG-PL: sg-web allows TCP 443 to pl-s3 only.
    let mut l = sec_lab();
    l.expect_to(
        "web-1",
        tcp_syn("10.5.1.10", "198.18.0.10", 40000, 443),
        "s3-1",
    );
    l.expect_drop(
        "web-1",
        tcp_syn("10.5.1.10", "203.0.113.10", 40000, 443),
        DropReason::SgEgress,
    );
}

#[test]
fn the_default_group_admits_its_own_members_only() {
    let mut l = sec_lab();
    l.expect_to(
        "dflt-1",
        udp("10.5.2.30", "10.5.2.31", 5000, 5001),
        "dflt-2",
    );
    l.expect_drop(
        "admin-1",
        udp("10.5.2.20", "10.5.2.30", 5000, 5001),
        DropReason::SgIngress,
    );
}

#[test]
fn nacl_rules_apply_by_number_not_by_file_order() {
    // R-NACL-ORDER: rule 90 (deny bad-1) is written after rule 200 (allow TCP 80) but
    // decides first.
    let mut l = sec_lab();
    let o = l.send("bad-1", tcp_syn("203.0.113.66", "198.51.100.50", 40000, 80));
    assert_eq!(o.verdict, Verdict::Drop(DropReason::NaclIngress));
    assert_eq!(nacl_drops(&l), ["acl-web inbound rule 90"]);
    assert!(o
        .steps
        .iter()
        .any(|s| s.starts_with("NetworkAcl") && s.contains("rule: Some(90)")));
    l.expect_to(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.50", 40000, 80),
        "web-1",
    );
}

#[test]
fn nacls_are_stateless_so_replies_need_the_ephemeral_range() {
    // R-NACL-DIR, R-NACL-EPHEMERAL: the reply to a Linux ephemeral port passes rule 110;
    // the reply to port 1000 falls through to `*`.
    let mut l = sec_lab();
    l.expect_to(
        "web-2",
        tcp_syn("10.5.1.11", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    l.expect_to(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.51", 443, 40000),
        "web-2",
    );
    l.expect_to(
        "web-2",
        tcp_syn("10.5.1.11", "203.0.113.10", 1000, 443),
        "inet-1",
    );
    l.expect_drop(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.51", 443, 1000),
        DropReason::NaclIngress,
    );
    assert_eq!(nacl_drops(&l), ["acl-web inbound rule *"]);
}

#[test]
fn traffic_within_a_subnet_skips_the_nacl() {
    // acl-web's outbound rule 50 denies ICMP to the web subnet, but two instances of one
    // subnet never cross its boundary (R-RT-SAMESUBNET).
    let mut l = sec_lab();
    let o = l.send("web-1", ping("10.5.1.10", "10.5.1.11"));
    assert_eq!(o.verdict, Verdict::Forward(l.port("web-2")));
    assert!(!o.steps.iter().any(|s| s.starts_with("NetworkAcl")));
    // To the other subnet it applies (outbound 100 allows, app's default NACL allows).
    let o = l.send("web-1", ping("10.5.1.10", "10.5.2.20"));
    assert_eq!(
        o.steps
            .iter()
            .filter(|s| s.starts_with("NetworkAcl"))
            .count(),
        2
    );
}

#[test]
fn ipv6_rules_match_only_ipv6() {
    // R-NACL-FAMILY: TCP 80 over IPv6 is allowed by rule 140 (ipv6_cidr), not by rule 200
    // (an IPv4 cidr); sg-web's ::/0 rule admits it.
    let mut l = sec_lab();
    let o = l.send(
        "inet-1",
        tcp_syn("2001:db8:ffff::10", "2001:db8:5:1::10", 40000, 80),
    );
    assert_eq!(o.verdict, Verdict::Forward(l.port("web-1")));
    assert!(o
        .steps
        .iter()
        .any(|s| s.starts_with("NetworkAcl") && s.contains("rule: Some(140)")));
    l.expect_drop(
        "inet-1",
        tcp_syn("2001:db8:ffff::10", "2001:db8:5:1::10", 40000, 22),
        DropReason::SgIngress,
    );
}

#[test]
fn removing_a_rule_keeps_tracked_flows_and_cuts_untracked_ones() {
    // R-SG-CHANGE: one conntrack table, two generations of the lab.
    let before = control::load_text(LAB, 1).unwrap().1;
    let closed = LAB
        .replace(
            "- { protocol: tcp, port_range: 80, source: 0.0.0.0/0 }",
            "- { protocol: tcp, port_range: 8080, source: 0.0.0.0/0 }",
        )
        .replace(
            "inbound: [{ protocol: all, source: 0.0.0.0/0 }]",
            "inbound: []",
        );
    let after = control::load_text(&closed, 2).unwrap().1;
    let mut pipe = Pipeline::with_conntrack(std::sync::Arc::new(Conntrack::new(1024)));
    let now = Timestamp::from_secs(1_700_000_000);
    let port = |s: &dataplane::Snapshot, n: &str| s.port_named(n).unwrap();
    let mut send = |snap: &dataplane::Snapshot, from: &str, mut pkt: Vec<u8>| {
        pipe.process(
            snap,
            port(snap, from),
            &mut pkt,
            now,
            &mut dataplane::NoObserver,
        )
    };
    // Tracked: inet-1 → web-1:80, opened under the old rules.
    let web = Verdict::Forward(port(&before, "web-1"));
    assert_eq!(
        send(
            &before,
            "inet-1",
            tcp_syn("203.0.113.10", "198.51.100.50", 41000, 80)
        ),
        web
    );
    // Untracked (R-SG-UNTRACKED): open-1 is open both ways for all traffic.
    let open = Verdict::Forward(port(&before, "open-1"));
    assert_eq!(
        send(
            &before,
            "inet-1",
            tcp_syn("203.0.113.10", "198.51.100.60", 42000, 9000)
        ),
        open
    );
    // The rules change. The tracked flow goes on; the untracked one is cut at once.
    assert_eq!(
        send(
            &after,
            "inet-1",
            tcp_synack("203.0.113.10", "198.51.100.50", 41000, 80)
        ),
        web
    );
    assert_eq!(
        send(
            &after,
            "inet-1",
            tcp_synack("203.0.113.10", "198.51.100.60", 42000, 9000)
        ),
        Verdict::Drop(DropReason::SgIngress)
    );
    // A new flow to port 80 follows the new rules.
    assert_eq!(
        send(
            &after,
            "inet-1",
            tcp_syn("203.0.113.10", "198.51.100.50", 41001, 80)
        ),
        Verdict::Drop(DropReason::SgIngress)
    );
}

#[test]
fn untracked_and_tracked_decisions_are_visible_to_trace() {
    let mut l = sec_lab();
    let mut rec = Recorder::new();
    let mut pkt = tcp_syn("203.0.113.10", "198.51.100.60", 42000, 9000);
    let inet = l.port("inet-1");
    let now = Timestamp::from_secs(1_700_000_000);
    l.pipe.process(&l.snap, inet, &mut pkt, now, &mut rec);
    assert!(rec.steps.iter().any(|s| matches!(
        s,
        Step::SecurityGroup {
            direction: Direction::Ingress,
            decision: SgDecision::Rule { tracked: false, .. },
            ..
        }
    )));
    // ICMP is always tracked (R-SG-UNTRACKED).
    let mut rec = Recorder::new();
    let mut pkt = ping("203.0.113.10", "198.51.100.60");
    l.pipe.process(&l.snap, inet, &mut pkt, now, &mut rec);
    assert!(rec.steps.iter().any(|s| matches!(
        s,
        Step::SecurityGroup {
            decision: SgDecision::Rule { tracked: true, .. },
            ..
        }
    )));
}

#[test]
fn a_full_conntrack_table_drops_new_flows_and_counts_them() {
    let mut l = sec_lab();
    l.pipe = Pipeline::with_conntrack(std::sync::Arc::new(Conntrack::new(1)));
    let mut full = 0;
    for port in 0..64u16 {
        let v = verdict(
            &mut l,
            "inet-1",
            tcp_syn("203.0.113.10", "198.51.100.50", 40000 + port, 80),
        );
        if v == Verdict::Drop(DropReason::TableFull) {
            full += 1;
        }
    }
    // One bucket of 8 slots: at most 8 flows are tracked, the rest refused.
    assert!(full >= 56, "{full}");
    assert_eq!(l.pipe.stats.dropped(DropReason::TableFull), full);
}

#[test]
fn a_new_connection_after_a_close_is_judged_by_the_rules() {
    // inet-1 → web-1:80 opened and closed; web-1 may not open a connection of its own on
    // the same addresses and ports (sg-web has no such outbound rule).
    let mut l = sec_lab();
    l.expect_to(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.50", 41000, 80),
        "web-1",
    );
    let mut fin = Vec::new();
    PacketBuilder::ipv4([203, 0, 113, 10], [198, 51, 100, 50], 64)
        .tcp(41000, 80, 2, 64240)
        .fin()
        .ack(1)
        .write(&mut fin, &[])
        .unwrap();
    l.expect_to("inet-1", fin, "web-1");
    l.expect_drop(
        "web-1",
        tcp_syn("10.5.1.10", "203.0.113.10", 80, 41000),
        DropReason::SgEgress,
    );
}

#[test]
fn an_echo_request_from_the_answering_side_is_not_a_reply() {
    // dflt-1 pings admin-1 (allowed out; admin-1's group admits nothing, so use web-1 which
    // admits ICMP echo): web-1's own echo request back with the same identifier is a new
    // flow for dflt-1's default group, which admits members only.
    let mut l = sec_lab();
    l.expect_to("dflt-1", ping("10.5.2.30", "10.5.1.10"), "web-1");
    let reply_side_request = {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 5, 1, 10], [10, 5, 2, 30], 64)
            .icmpv4_echo_request(7, 9)
            .write(&mut out, b"ping")
            .unwrap();
        out
    };
    let o = l.send("web-1", reply_side_request);
    assert_eq!(
        o.verdict,
        Verdict::Drop(DropReason::SgIngress),
        "{:#?}",
        o.steps
    );
}

/// AWS's own example for connection tracking (EC2 User Guide, "Security group connection
/// tracking"): inbound SSH from one address, HTTP from everywhere (IPv4 and IPv6), ICMP
/// from everywhere; outbound all traffic to everywhere.
const AWS_TRACKING_EXAMPLE: &str = r#"
version: 1
vpcs:
  - id: vpc-t
    cidr_block: 10.6.0.0/16
    ipv6_cidr_block: 2001:db8:6::/56
    internet_gateway: igw-t
    subnets:
      - { id: pub, cidr_block: 10.6.1.0/24, ipv6_cidr_block: "2001:db8:6:1::/64", route_table: rt }
    route_tables:
      - id: rt
        routes:
          - { destination: 0.0.0.0/0, target: igw-t }
          - { destination: "::/0", target: igw-t }
    security_groups:
      - id: sg-example
        inbound:
          - { protocol: tcp, port_range: 22, source: 203.0.113.1/32 }
          - { protocol: tcp, port_range: 80, source: 0.0.0.0/0 }
          - { protocol: tcp, port_range: 80, source: "::/0" }
          - { protocol: icmp, source: 0.0.0.0/0 }
        outbound:
          - { protocol: all, destination: 0.0.0.0/0 }
          - { protocol: all, destination: "::/0" }
      - id: sg-client
        inbound:
          - { protocol: all, source: 0.0.0.0/0 }
        outbound:
          - { protocol: tcp, port_range: 443, destination: 0.0.0.0/0 }
          - { protocol: udp, port_range: 53, destination: 203.0.113.1/32 }
      - id: sg-tcp-out
        inbound:
          - { protocol: tcp, port_range: 80, source: 0.0.0.0/0 }
          - { protocol: udp, port_range: 514, source: 0.0.0.0/0 }
        outbound:
          - { protocol: tcp, port_range: 0-65535, destination: 0.0.0.0/0 }
    instances:
      - { id: web-1, subnet: pub, private_ip: 10.6.1.10, ipv6_address: "2001:db8:6:1::10", public_ip: 198.51.100.70, security_groups: [sg-example] }
      - { id: cli-1, subnet: pub, private_ip: 10.6.1.11, public_ip: 198.51.100.71, security_groups: [sg-client] }
      - { id: log-1, subnet: pub, private_ip: 10.6.1.12, public_ip: 198.51.100.72, security_groups: [sg-tcp-out] }
internet:
  hosts:
    - { id: inet-1, ipv4: 203.0.113.1, ipv6: "2001:db8:ffff::1" }
"#;

/// Whether the security-group step at `dir` opened a tracked flow for `pkt`.
fn tracked_at(l: &mut Lab, from: &str, pkt: Vec<u8>, dir: Direction) -> bool {
    let mut rec = Recorder::new();
    let mut pkt = pkt;
    let ingress = l.port(from);
    let v = l
        .pipe
        .process(&l.snap, ingress, &mut pkt, support::NOW, &mut rec);
    assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
    rec.steps
        .iter()
        .find_map(|s| match s {
            Step::SecurityGroup {
                direction,
                decision: SgDecision::Rule { tracked, .. },
                ..
            } if *direction == dir => Some(*tracked),
            _ => None,
        })
        .expect("a security-group rule step")
}

#[test]
fn r_sg_untracked_follows_aws_example_a_port_rule_from_everywhere_is_untracked() {
    let mut l = lab_text(AWS_TRACKING_EXAMPLE);
    let t = |l: &mut Lab, pkt| tracked_at(l, "inet-1", pkt, Direction::Ingress);
    // "TCP traffic on port 80 (HTTP) to and from the instance is not tracked, because
    // both the inbound and outbound rules allow traffic from all IP addresses."
    assert!(!t(
        &mut l,
        tcp_syn("203.0.113.1", "198.51.100.70", 41000, 80)
    ));
    assert!(!t(
        &mut l,
        tcp_syn("2001:db8:ffff::1", "2001:db8:6:1::10", 41000, 80)
    ));
    // "TCP traffic on port 22 (SSH) ... is tracked, because the inbound rule allows
    // traffic from 203.0.113.1/32 only."
    assert!(t(
        &mut l,
        tcp_syn("203.0.113.1", "198.51.100.70", 41001, 22)
    ));
    // "ICMP traffic is always tracked, regardless of rules."
    assert!(t(&mut l, ping("203.0.113.1", "198.51.100.70")));
}

#[test]
fn r_sg_untracked_needs_all_ports_of_the_protocol_open_the_other_way() {
    let mut l = lab_text(AWS_TRACKING_EXAMPLE);
    // Outbound from everywhere to TCP 443, inbound all traffic: the outgoing flow is not
    // tracked. UDP 53 goes to one address only: tracked.
    assert!(!tracked_at(
        &mut l,
        "cli-1",
        tcp_syn("10.6.1.11", "203.0.113.1", 40000, 443),
        Direction::Egress
    ));
    assert!(tracked_at(
        &mut l,
        "cli-1",
        udp("10.6.1.11", "203.0.113.1", 40000, 53),
        Direction::Egress
    ));
    // TCP 0-65535 outbound opens every TCP reply, so TCP 80 in is untracked; it opens no
    // UDP reply, so UDP 514 in is tracked.
    assert!(!tracked_at(
        &mut l,
        "inet-1",
        tcp_syn("203.0.113.1", "198.51.100.72", 40000, 80),
        Direction::Ingress
    ));
    assert!(tracked_at(
        &mut l,
        "inet-1",
        udp("203.0.113.1", "198.51.100.72", 40000, 514),
        Direction::Ingress
    ));
}
