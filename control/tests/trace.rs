//! `vpcd trace`: the explanation comes from the pipeline itself, names the place of a drop
//! and its fix, follows the reply, and has a stable JSON form and exit codes.

use std::process::Command;

use control::trace::{to_json, to_text, trace, Probe};
use dataplane::DropReason;

fn lab(path: &str) -> dataplane::Snapshot {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    control::load_text(&text, 1).unwrap().1
}

fn probe(from: &str, to: &str, proto: &str, port: u16, src_port: u16) -> Probe {
    Probe {
        from: from.into(),
        to: to.into(),
        proto: proto.into(),
        port,
        src_port,
        size: 0,
        ttl: 64,
    }
}

#[test]
fn a_reachable_path_shows_every_hop_and_the_reply() {
    let s = lab("../configs/default.yaml");
    let t = trace(&s, &probe("web-1", "inet-1", "tcp", 443, 40000)).unwrap();
    assert!(t.reachable());
    let text = to_text(&t);
    for want in [
        "web-1 security groups outbound: allowed by sg-web outbound rule #1",
        "route table rtb-public: 0.0.0.0/0 → igw-lab",
        "internet gateway igw-lab: 10.0.1.10 ↔ 198.51.100.10",
        "delivered to inet-1",
        "passes as part of a tracked connection",
        "delivered to web-1",
        "verdict: reachable",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn a_flow_admitted_from_anywhere_to_a_group_open_outbound_is_shown_untracked() {
    // R-SG-UNTRACKED: sg-web admits tcp 80 from 0.0.0.0/0 and allows all outbound, so
    // the connection keeps no state, both ways.
    let s = lab("../configs/default.yaml");
    let t = trace(&s, &probe("inet-1", "web-1", "tcp", 80, 40000)).unwrap();
    assert!(t.reachable());
    let text = to_text(&t);
    for want in [
        "web-1 security groups inbound: allowed by sg-web inbound rule #1 (tcp 80 from 0.0.0.0/0); untracked: allowed from the whole address space, and every port open the other way (R-SG-UNTRACKED)",
        "web-1 security groups outbound: allowed by sg-web outbound rule #1 (all traffic to 0.0.0.0/0); untracked",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    // The same group's outbound rule opens a tracked connection: its replies come back
    // on ports no inbound rule admits from everywhere.
    let t = trace(&s, &probe("web-1", "inet-1", "tcp", 443, 40000)).unwrap();
    let text = to_text(&t);
    assert!(!text.contains("untracked"), "{text}");
    assert!(text.contains("; the connection is tracked"), "{text}");
}

#[test]
fn a_drop_names_its_place_and_the_fix() {
    let s = lab("../configs/default.yaml");
    let t = trace(&s, &probe("inet-1", "web-1", "tcp", 22, 40000)).unwrap();
    assert!(!t.reachable());
    assert_eq!(t.forward.reason, Some(DropReason::SgIngress));
    assert_eq!(
        t.forward.fix.as_deref(),
        Some("add an inbound rule to sg-web allowing tcp 22 from 203.0.113.10")
    );
}

#[test]
fn the_classic_ephemeral_port_mistake_is_shown_on_the_reply() {
    // acl-web admits replies to 32768-60999 only: a client port of 1000 gets its SYN out
    // and its reply refused by the final * rule.
    let s = lab("tests/labs/security.yaml");
    let t = trace(&s, &probe("web-2", "203.0.113.10", "tcp", 443, 1000)).unwrap();
    assert!(t.forward.delivered_to.is_some());
    let reply = t.reply.as_ref().unwrap();
    assert_eq!(reply.reason, Some(DropReason::NaclIngress));
    assert!(reply
        .fix
        .as_deref()
        .unwrap()
        .contains("NACL acl-web inbound: no rule allows tcp 1000"));
    assert!(to_text(&t).contains("not reachable: the reply is dropped (NACL_INGRESS)"));
    // From an ephemeral port it works.
    assert!(
        trace(&s, &probe("web-2", "203.0.113.10", "tcp", 443, 40000))
            .unwrap()
            .reachable()
    );
}

#[test]
fn every_gateway_shows_up_by_name() {
    let s = lab("tests/labs/gateways.yaml");
    let t = trace(&s, &probe("app-1", "203.0.113.10", "udp", 53, 40000)).unwrap();
    let text = to_text(&t);
    assert!(
        text.contains("NAT gateway nat-a: 10.0.2.10:40000 → 10.0.1.5:"),
        "{text}"
    );
    assert!(t.reachable(), "{text}");
    let s = lab("tests/labs/endpoints.yaml");
    let t = trace(&s, &probe("a-1", "c-1", "icmp", 0, 0)).unwrap();
    assert_eq!(t.forward.reason, Some(DropReason::PcxNotTransitive));
    let t = trace(&s, &probe("b-1", "10.2.1.4", "tcp", 5201, 40000)).unwrap();
    assert!(to_text(&t).contains("interface endpoint vpce-queue"));
    assert!(t.reachable());
}

#[test]
fn json_has_a_stable_shape_and_exit_codes_say_reachable_or_not() {
    let s = lab("../configs/default.yaml");
    let t = trace(&s, &probe("inet-1", "web-1", "tcp", 22, 40000)).unwrap();
    let j = to_json(&t);
    assert!(
        j.starts_with("{\"reachable\":false,\"forward\":{\"steps\":["),
        "{j}"
    );
    assert!(j.contains("\"reason\":\"SG_INGRESS\""), "{j}");
    assert!(j.ends_with("\"reply\":null,\"live\":[]}"), "{j}");
    let vpcd = env!("CARGO_BIN_EXE_vpcd");
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.yaml");
    let run = |args: &[&str]| {
        Command::new(vpcd)
            .arg("trace")
            .arg(cfg)
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(
        run(&["--from", "web-1", "--to", "app-1"]).status.code(),
        Some(0)
    );
    assert_eq!(
        run(&["--from", "inet-1", "--to", "web-1", "--proto", "tcp", "--port", "22"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(&["--from", "nobody", "--to", "web-1"]).status.code(),
        Some(2)
    );
}

#[test]
fn trace_names_each_reason_a_lab_can_show() {
    // (lab, from, to, proto, port, reason of the forward leg)
    let cases: &[(&str, &str, &str, &str, u16, DropReason)] = &[
        (
            "../configs/default.yaml",
            "inet-1",
            "web-1",
            "tcp",
            22,
            DropReason::SgIngress,
        ),
        (
            "tests/labs/security.yaml",
            "db-1",
            "10.5.1.10",
            "tcp",
            22,
            DropReason::SgEgress,
        ),
        (
            "tests/labs/security.yaml",
            "bad-1",
            "198.51.100.50",
            "tcp",
            5201,
            DropReason::NaclIngress,
        ),
        (
            "../configs/default.yaml",
            "inet-1",
            "10.0.2.10",
            "icmp",
            0,
            DropReason::IgwNoPublicIp,
        ),
        (
            "../configs/default.yaml",
            "inet-1",
            "198.51.100.5",
            "tcp",
            22,
            DropReason::NatInbound,
        ),
        (
            "../configs/default.yaml",
            "web-1",
            "10.0.2.99",
            "icmp",
            0,
            DropReason::UnassignedAddress,
        ),
        (
            "../configs/public-private-nat.yaml",
            "app-1",
            "203.0.113.66",
            "icmp",
            0,
            DropReason::RouteBlackhole,
        ),
        (
            "tests/labs/gateways.yaml",
            "inet-1",
            "2001:db8:40:2::10",
            "tcp",
            22,
            DropReason::EigwInbound,
        ),
        (
            "tests/labs/gateways.yaml",
            "app-1",
            "203.0.113.10",
            "47",
            0,
            DropReason::NatUnsupportedProtocol,
        ),
        (
            "tests/labs/endpoints.yaml",
            "a-1",
            "10.3.1.10",
            "icmp",
            0,
            DropReason::PcxNotTransitive,
        ),
        (
            "tests/labs/endpoints.yaml",
            "a-1",
            "10.4.1.10",
            "icmp",
            0,
            DropReason::PcxInactive,
        ),
        (
            "tests/labs/endpoints.yaml",
            "a-1",
            "198.18.0.20",
            "tcp",
            5201,
            DropReason::EndpointPolicy,
        ),
        (
            "tests/labs/endpoints.yaml",
            "b-1",
            "10.2.1.4",
            "udp",
            5201,
            DropReason::EndpointProtocol,
        ),
        (
            "tests/labs/endpoints.yaml",
            "c-1",
            "203.0.113.10",
            "icmp",
            0,
            DropReason::NoRoute,
        ),
    ];
    for (path, from, to, proto, port, reason) in cases {
        let s = lab(path);
        let t = trace(&s, &probe(from, to, proto, *port, 40000))
            .unwrap_or_else(|e| panic!("{path} {from} → {to}: {e}"));
        assert_eq!(
            t.forward.reason,
            Some(*reason),
            "{path} {from} → {to}:\n{}",
            to_text(&t)
        );
        assert!(to_text(&t).contains(&format!("DROPPED {reason}")));
    }
}

#[test]
fn size_and_ttl_reach_the_router_answers() {
    let s = lab("tests/labs/gateways.yaml");
    // web-1's group admits no ICMP errors: the big packet is lost (MTU_EXCEEDED), as is
    // the TTL-1 probe (TTL_EXPIRED); app-1's does, so it hears the router.
    let mut p = probe("web-1", "203.0.113.10", "udp", 33434, 40000);
    p.size = 3000;
    assert_eq!(
        trace(&s, &p).unwrap().forward.reason,
        Some(DropReason::MtuExceeded)
    );
    let mut p = probe("web-1", "203.0.113.10", "udp", 33434, 40000);
    p.ttl = 1;
    assert_eq!(
        trace(&s, &p).unwrap().forward.reason,
        Some(DropReason::TtlExpired)
    );
    let mut p = probe("app-1", "203.0.113.10", "udp", 33434, 40000);
    p.ttl = 1;
    let t = trace(&s, &p).unwrap();
    assert!(
        to_text(&t).contains("time exceeded sent back"),
        "{}",
        to_text(&t)
    );
}

#[test]
fn trace_names_nacl_egress_and_the_source_destination_check() {
    let sec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/security.yaml"))
        .unwrap()
        .replace(
            "          - { rule: 50, action: deny, protocol: icmp, cidr: 10.5.1.0/24 }",
            "          - { rule: 40, action: deny, protocol: tcp, port_range: 25, cidr: 0.0.0.0/0 }\n          - { rule: 50, action: deny, protocol: icmp, cidr: 10.5.1.0/24 }",
        );
    let s = control::load_text(&sec, 1).unwrap().1;
    let t = trace(&s, &probe("web-2", "203.0.113.10", "tcp", 25, 40000)).unwrap();
    assert_eq!(t.forward.reason, Some(DropReason::NaclEgress));
    assert!(to_text(&t).contains("NACL acl-web outbound: rule 40 denies"));
    // An appliance route to an instance whose source/destination check is on.
    let def = include_str!("../../configs/default.yaml").replace(
        "          - { destination: \"::/0\", target: eigw-lab }",
        "          - { destination: \"::/0\", target: eigw-lab }\n          - { destination: 192.0.2.0/24, target: web-1 }",
    );
    let s = control::load_text(&def, 1)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .1;
    let t = trace(&s, &probe("app-1", "192.0.2.10", "icmp", 0, 0)).unwrap();
    assert_eq!(
        t.forward.reason,
        Some(DropReason::EniSourceDestCheck),
        "{}",
        to_text(&t)
    );
}

#[test]
fn what_the_router_answers_itself_is_reachable_and_what_it_ignores_is_not() {
    let s = lab("../configs/default.yaml");
    // R-ADDR-ROUTER: the router of web-1's own subnet answers its ping; R-ADDR-IMDS:
    // metadata answers a connection; both past SGs and NACLs (R-ADDR-EXEMPT).
    for (to, proto, port) in [("10.0.1.1", "icmp", 0), ("169.254.169.254", "tcp", 80)] {
        let t = trace(&s, &probe("web-1", to, proto, port, 40000)).unwrap();
        let text = to_text(&t);
        assert!(t.reachable(), "{text}");
        assert!(
            text.contains(&format!("the VPC router answers {to} → 10.0.1.10")),
            "{text}"
        );
    }
    assert!(
        to_text(&trace(&s, &probe("web-1", "10.0.1.1", "icmp", 0, 0)).unwrap())
            .contains("for the VPC router itself (router of public-a)")
    );
    // Another subnet's router address is not answered: no reply, not reachable.
    let t = trace(&s, &probe("web-1", "10.0.2.1", "icmp", 0, 40000)).unwrap();
    assert!(!t.reachable(), "{}", to_text(&t));
    assert!(to_text(&t).contains("the VPC router does not answer this packet"));
}

/// Two public instances: the second admits nothing from the first.
const HAIRPIN: &str = r#"
version: 1
vpcs:
  - id: vpc-h
    cidr_block: 10.7.0.0/16
    internet_gateway: igw-h
    subnets:
      - { id: pub, cidr_block: 10.7.1.0/24, route_table: rt }
      - { id: priv, cidr_block: 10.7.2.0/24, route_table: rt-nat }
    route_tables:
      - id: rt
        routes: [{ destination: 0.0.0.0/0, target: igw-h }]
      - id: rt-nat
        routes: [{ destination: 0.0.0.0/0, target: nat-h }]
    nat_gateways:
      - { id: nat-h, subnet: pub, public_ip: 198.51.100.80 }
    security_groups:
      - { id: sg-closed, inbound: [] }
    instances:
      - { id: a-1, subnet: pub, private_ip: 10.7.1.10, public_ip: 198.51.100.81 }
      - { id: b-1, subnet: pub, private_ip: 10.7.1.11, public_ip: 198.51.100.82, security_groups: [sg-closed] }
      - { id: p-1, subnet: priv, private_ip: 10.7.2.10 }
internet:
  hosts:
    - { id: inet-1, ipv4: 203.0.113.10 }
"#;

#[test]
fn the_sg_fix_after_a_hairpin_names_the_source_the_receiver_sees() {
    // R-IGW-HAIRPIN: b-1 sees a-1's public IP as source, so that is what a rule must name.
    let s = control::load_text(HAIRPIN, 1).unwrap().1;
    let t = trace(&s, &probe("a-1", "198.51.100.82", "tcp", 22, 40000)).unwrap();
    assert_eq!(t.forward.reason, Some(DropReason::SgIngress));
    assert_eq!(
        t.forward.fix.as_deref(),
        Some("add an inbound rule to sg-closed allowing tcp 22 from 198.51.100.81")
    );
    // Through the NAT gateway and back in: the NAT gateway's public IP and port.
    let t = trace(&s, &probe("p-1", "198.51.100.82", "tcp", 22, 40000)).unwrap();
    assert_eq!(t.forward.reason, Some(DropReason::SgIngress));
    assert_eq!(
        t.forward.fix.as_deref(),
        Some("add an inbound rule to sg-closed allowing tcp 22 from 198.51.100.80")
    );
}

#[test]
fn an_echo_through_a_nat_gateway_is_answered_with_its_translated_identifier() {
    // The reply used to be built with a fixed identifier, which the NAT gateway does not
    // know: NAT_INBOUND, though the router forwards it.
    let s = control::load_text(HAIRPIN, 1).unwrap().1;
    let t = trace(&s, &probe("p-1", "inet-1", "icmp", 0, 40000)).unwrap();
    assert!(t.reachable(), "{}", to_text(&t));
    let text = to_text(&t);
    assert!(
        text.contains("NAT gateway nat-h: 10.7.2.10:40000 → "),
        "{text}"
    );
    assert!(
        text.contains(":40000\n"),
        "the reply is translated back: {text}"
    );
}
