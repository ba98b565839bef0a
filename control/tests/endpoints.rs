//! Several VPCs, peering and endpoints in process (semantics.md §8, §9).

mod support;

use dataplane::{DropReason, Verdict};
use etherparse::{SlicedPacket, TransportSlice};
use support::*;

const LAB: &str = include_str!("labs/endpoints.yaml");

fn ports_of(bytes: &[u8]) -> (u16, u16) {
    let p = SlicedPacket::from_ip(bytes).unwrap();
    match p.transport.unwrap() {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        _ => panic!("not TCP"),
    }
}

/// The interface endpoint's address in b-app: the first free one.
const ENDPOINT: &str = "10.2.1.4";

#[test]
fn peering_is_neither_transitive_nor_a_way_to_the_peers_gateways() {
    // R-PCX-EDGE, R-PCX-ACTIVE.
    let mut l = lab_text(LAB);
    l.expect_to("a-1", ping("10.1.1.10", "10.2.1.10"), "b-1");
    l.expect_to("b-1", ping("10.2.1.10", "10.3.1.10"), "c-1");
    for (to, reason) in [
        ("10.3.1.10", DropReason::PcxNotTransitive),
        ("203.0.113.10", DropReason::PcxNotTransitive),
        ("10.4.1.10", DropReason::PcxInactive),
    ] {
        assert_eq!(
            l.send("a-1", ping("10.1.1.10", to)).verdict,
            Verdict::Drop(reason),
            "a-1 → {to}"
        );
    }
}

#[test]
fn a_gateway_endpoint_reaches_only_what_its_policy_allows() {
    // R-GWE-ROUTE, R-GWE-POLICY.
    let mut l = lab_text(LAB);
    let out = l.expect_to(
        "a-1",
        tcp_syn("10.1.1.10", "198.18.0.10", 40000, 5201),
        "s3-1",
    );
    assert_eq!(
        src_of(&out),
        ip("10.1.1.10"),
        "the service sees the private source"
    );
    l.expect_drop(
        "a-1",
        tcp_syn("10.1.1.10", "198.18.0.20", 40000, 5201),
        DropReason::EndpointPolicy,
    );
}

#[test]
fn an_interface_endpoint_carries_tcp_as_from_its_own_address() {
    // R-IFE-ENI, R-IFE-DNS: the host sees the endpoint, the client sees the endpoint.
    let mut l = lab_text(LAB);
    let out = l.expect_to(
        "b-1",
        tcp_syn("10.2.1.10", ENDPOINT, 40000, 5201),
        "queue-1",
    );
    assert_eq!(src_of(&out), ip(ENDPOINT));
    assert_eq!(dst_of(&out), ip("198.18.1.10"));
    assert_checksums_valid(&out);
    let (tport, dport) = ports_of(&out);
    assert_eq!(dport, 5201);
    let back = l.expect_to(
        "queue-1",
        tcp_synack("198.18.1.10", ENDPOINT, 5201, tport),
        "b-1",
    );
    assert_eq!(src_of(&back), ip(ENDPOINT));
    assert_eq!(dst_of(&back), ip("10.2.1.10"));
    assert_eq!(ports_of(&back), (5201, 40000));
    assert_checksums_valid(&back);
}

#[test]
fn an_interface_endpoint_is_reachable_over_peering() {
    // R-IFE-REACH, unlike a gateway endpoint.
    let mut l = lab_text(LAB);
    let out = l.expect_to(
        "a-1",
        tcp_syn("10.1.1.10", ENDPOINT, 40000, 5201),
        "queue-1",
    );
    let (tport, _) = ports_of(&out);
    let back = l.expect_to(
        "queue-1",
        tcp_synack("198.18.1.10", ENDPOINT, 5201, tport),
        "a-1",
    );
    assert_eq!(dst_of(&back), ip("10.1.1.10"));
}

#[test]
fn an_interface_endpoint_refuses_udp_and_what_its_groups_refuse() {
    let mut l = lab_text(LAB);
    // sg-vpce lets UDP 5201 in; the endpoint carries TCP only.
    assert_eq!(
        l.send("b-1", udp("10.2.1.10", ENDPOINT, 5000, 5201))
            .verdict,
        Verdict::Drop(DropReason::EndpointProtocol)
    );
    assert_eq!(
        l.send("b-1", ping("10.2.1.10", ENDPOINT)).verdict,
        Verdict::Drop(DropReason::SgIngress),
        "ICMP is not in sg-vpce"
    );
    assert_eq!(
        l.send("b-1", tcp_syn("10.2.1.10", ENDPOINT, 40000, 22))
            .verdict,
        Verdict::Drop(DropReason::SgIngress)
    );
    // The service host cannot open a connection to the endpoint.
    assert_eq!(
        l.send("queue-1", tcp_syn("198.18.1.10", ENDPOINT, 5201, 40000))
            .verdict,
        Verdict::Drop(DropReason::IgwNoPublicIp)
    );
}

#[test]
fn flows_through_an_interface_endpoint_are_tracked_even_under_all_open_groups() {
    // R-SG-UNTRACKED: all traffic open both ways would leave a flow untracked, but not
    // one through an interface endpoint, at the instance or at the endpoint's own ENI.
    let open = "inbound: [{ protocol: all, source: 0.0.0.0/0 }]";
    let sg_vpce = "        inbound:\n          - { protocol: tcp, port_range: 5201, source: 10.0.0.0/8 }\n          # The group lets UDP in; the endpoint itself carries TCP only (R-IFE-ENI).\n          - { protocol: udp, port_range: 5201, source: 10.0.0.0/8 }\n";
    assert!(LAB.contains(sg_vpce));
    let text = LAB
        .replace("inbound: [{ protocol: all, source: 10.0.0.0/8 }]", open)
        .replace(sg_vpce, &format!("        {open}\n"));
    let mut l = lab_text(&text);
    let mut rec = dataplane::Recorder::new();
    let mut pkt = tcp_syn("10.2.1.10", ENDPOINT, 40000, 5201);
    let from = l.port("b-1");
    let now = dataplane::Timestamp::from_secs(1_700_000_000);
    let v = l.pipe.process(&l.snap, from, &mut pkt, now, &mut rec);
    assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
    let decisions: Vec<bool> = rec
        .steps
        .iter()
        .filter_map(|s| match s {
            dataplane::Step::SecurityGroup {
                decision: dataplane::observer::SgDecision::Rule { tracked, .. },
                ..
            } => Some(*tracked),
            _ => None,
        })
        .collect();
    // b-1's egress and the endpoint ENI's ingress: both judged by a rule, both tracked.
    assert_eq!(decisions, [true, true]);
    // The same group toward an instance leaves the flow untracked: the rule is real.
    let mut rec = dataplane::Recorder::new();
    let mut pkt = tcp_syn("10.2.1.10", "10.1.1.10", 40000, 5201);
    l.pipe.process(&l.snap, from, &mut pkt, now, &mut rec);
    assert!(rec.steps.iter().any(|s| matches!(
        s,
        dataplane::Step::SecurityGroup {
            decision: dataplane::observer::SgDecision::Rule { tracked: false, .. },
            ..
        }
    )));
}
