//! Route tables as AWS allows them (semantics.md §2, issue 21): the local route's target
//! replaced for middlebox inspection, routes more specific than it to an appliance or a
//! NAT gateway, the range AWS reserves, and routes whose target was deleted.

mod support;

use dataplane::{DropReason, Verdict};
use support::*;

/// Three subnets: clients (rt-a), servers (main), and an inspection subnet with an
/// appliance (source/destination check off) and a private NAT gateway.
const LAB: &str = include_str!("labs/middlebox.yaml");

#[test]
fn r_rt_local_the_local_routes_target_may_be_an_appliance() {
    let mut l = lab_text(LAB);
    // a-1 to b-1: rt-a's local route now points at fw-1, which receives the packet
    // addressed to b-1 (its check is off) ...
    let pkt = tcp_syn("10.8.1.10", "10.8.2.10", 40000, 443);
    let at_fw = l.expect_to("a-1", pkt, "fw-1");
    // ... and sends it on from its own subnet, whose table has the plain local route.
    l.expect_to("fw-1", at_fw, "b-1");
    // Same-subnet traffic never consults a route table (R-RT-SAMESUBNET).
    let text = control::routes::render(&l.snap, Some("rt-a")).unwrap();
    assert!(
        text.lines()
            .any(|r| r.split_whitespace().collect::<Vec<_>>()
                == ["10.8.0.0/16", "fw-1", "local", "active"]),
        "{text}"
    );
}

#[test]
fn r_rt_local_a_more_specific_route_may_target_a_nat_gateway() {
    let text = LAB.replace(
        "      - { id: a, cidr_block: 10.8.1.0/24, route_table: rt-a }",
        "      - { id: a, cidr_block: 10.8.1.0/24, route_table: rt-nat }",
    );
    let mut l = lab_text(&text);
    // a-1 to b-1 goes through the private NAT gateway: b-1 sees its address.
    let out = l.expect_to("a-1", tcp_syn("10.8.1.10", "10.8.2.10", 40000, 443), "b-1");
    assert_eq!(src_of(&out), ip("10.8.3.5"));
}

#[test]
fn r_rt_blackhole_a_route_whose_target_was_deleted_drops_and_says_so() {
    let mut l = lab_text(LAB);
    let o = l.send("a-1", tcp_syn("10.8.1.10", "203.0.113.10", 40000, 443));
    assert_eq!(o.verdict, Verdict::Drop(DropReason::RouteBlackhole));
    let text = control::routes::render(&l.snap, Some("rt-a")).unwrap();
    assert!(
        text.lines()
            .any(|r| r.split_whitespace().collect::<Vec<_>>()
                == ["0.0.0.0/0", "nat-gone", "static", "blackhole"]),
        "{text}"
    );
    // Without `state: blackhole` a missing target is a mistake `check` names.
    let typo = LAB.replace(", state: blackhole", "");
    let errs = control::check_text(&typo).unwrap_err();
    assert!(
        errs.iter().any(|d| d.message.contains("`nat-gone`")),
        "{errs:?}"
    );
}

#[test]
fn r_rt_local_other_targets_and_the_reserved_range_are_refused() {
    let refused = |route: &str, words: &str| {
        let text = LAB.replace(
            "          - { destination: 10.8.0.0/16, target: fw-1 }",
            &format!("          - {route}"),
        );
        let errs = control::check_text(&text).unwrap_err();
        assert!(
            errs.iter().any(|d| d.message.contains(words)),
            "{route}: {errs:?}"
        );
    };
    refused(
        "{ destination: 10.8.0.0/16, target: blackhole }",
        "only its target may be replaced",
    );
    refused(
        "{ destination: 10.8.2.0/24, target: blackhole }",
        "may only point to an instance (ENI) or a NAT gateway",
    );
    refused(
        "{ destination: 169.254.169.0/24, target: fw-1 }",
        "169.254.168.0/22",
    );
    refused(
        "{ destination: 10.8.2.0/24, target: fw-1, state: gone }",
        "not a route state",
    );
}
