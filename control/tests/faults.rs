//! `vpcd fault` in process (faults.md): each action's effect on the pipeline, laid over a
//! compiled lab as the running router lays it, and the lab exactly as before once the
//! fault is gone. Requests that name no such action or target are refused.

mod support;

use control::faults::{check_start, overlay, Fault};
use dataplane::{DropReason, Verdict};
use support::*;

const HA: &str = include_str!("../../configs/ha-nat-per-az.yaml");
const DEFAULT: &str = include_str!("../../configs/default.yaml");
const ENDPOINTS: &str = include_str!("labs/endpoints.yaml");

/// The lab of `text` with one fault started as `vpcd fault start` would.
fn faulted(text: &str, action: &str, target: &str, scope: Option<&str>) -> Lab {
    let mut l = lab_text(text);
    let f = fault(&l, action, target, scope);
    overlay(&mut l.snap, &[f]);
    l
}

/// Fault number 1 of the lab, as `vpcd fault start` checks and records it.
fn fault(l: &Lab, action: &str, target: &str, scope: Option<&str>) -> Fault {
    let start = check_start(&l.snap, action, target, scope, None).expect("a valid fault");
    Fault {
        id: 1,
        action: start.action,
        target: start.target,
        scope: start.scope,
        started: std::time::SystemTime::now(),
        until: None,
    }
}

fn verdict(l: &mut Lab, from: &str, pkt: Vec<u8>) -> Verdict {
    l.send(from, pkt).verdict
}

const FAULT: Verdict = Verdict::Drop(DropReason::FaultDisrupted);

#[test]
fn stop_instances_cuts_the_instance_off_both_ways_and_nothing_else() {
    let mut l = faulted(DEFAULT, "aws:ec2:stop-instances", "app-1", None);
    assert_eq!(
        verdict(&mut l, "app-1", ping("10.0.2.10", "10.0.1.10")),
        FAULT
    );
    assert_eq!(
        verdict(&mut l, "web-1", ping("10.0.1.10", "10.0.2.10")),
        FAULT
    );
    l.expect_to("web-1", ping("10.0.1.10", "203.0.113.10"), "inet-1");
    assert_eq!(control::faults::stopped_instances(&l.snap), ["app-1"]);
}

#[test]
fn disrupt_connectivity_drops_at_the_subnet_boundary_by_scope() {
    // scope all: nothing crosses private-a's boundary, either way.
    let mut l = faulted(
        DEFAULT,
        "aws:network:disrupt-connectivity",
        "private-a",
        None,
    );
    assert_eq!(
        verdict(&mut l, "app-1", ping("10.0.2.10", "10.0.1.10")),
        FAULT
    );
    assert_eq!(
        verdict(&mut l, "web-1", ping("10.0.1.10", "10.0.2.10")),
        FAULT
    );
    l.expect_to("web-1", ping("10.0.1.10", "203.0.113.10"), "inet-1");
    // scope availability-zone: traffic with the other zone's subnets only.
    let mut l = faulted(
        HA,
        "aws:network:disrupt-connectivity",
        "private-b",
        Some("availability-zone"),
    );
    // app-b (private-b, zone b) to app-a (zone a): refused; to app-s (zone b): passes.
    assert_eq!(
        verdict(&mut l, "app-b", ping("10.30.11.10", "10.30.10.10")),
        FAULT
    );
    l.expect_to("app-b", ping("10.30.11.10", "10.30.12.10"), "app-s");
    // Through its NAT gateway (zone b) to the internet: passes.
    l.expect_to("app-b", ping("10.30.11.10", "203.0.113.10"), "inet-1");
}

#[test]
fn disrupt_connectivity_to_a_service_drops_only_its_ranges() {
    let text = DEFAULT.replace(
        "internet:\n",
        "services:\n  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }\ninternet:\n",
    );
    let mut l = faulted(
        &text,
        "aws:network:disrupt-connectivity",
        "public-a",
        Some("s3"),
    );
    assert_eq!(
        verdict(&mut l, "web-1", ping("10.0.1.10", "198.18.0.10")),
        FAULT
    );
    l.expect_to("web-1", ping("10.0.1.10", "203.0.113.10"), "inet-1");
}

#[test]
fn disrupt_connectivity_to_a_prefix_list_drops_only_its_ranges() {
    // a-app reaches S3 (pl-s3, 198.18.0.0/24) through its gateway endpoint and vpc-b over
    // the peering. The scope names the prefix list by its id, not the service's name.
    let syn_to_s3 = || tcp_syn("10.1.1.10", "198.18.0.10", 40000, 5201);
    lab_text(ENDPOINTS).expect_to("a-1", syn_to_s3(), "s3-1");
    let mut l = faulted(
        ENDPOINTS,
        "aws:network:disrupt-connectivity",
        "a-app",
        Some("prefix-list:pl-s3"),
    );
    assert_eq!(verdict(&mut l, "a-1", syn_to_s3()), FAULT);
    // Every address of the list, not only the hosts the endpoint's policy allows.
    assert_eq!(
        verdict(
            &mut l,
            "a-1",
            tcp_syn("10.1.1.10", "198.18.0.20", 40000, 5201)
        ),
        FAULT
    );
    // Outside the list's ranges: passes.
    l.expect_to("a-1", ping("10.1.1.10", "10.2.1.10"), "b-1");
    // A prefix list the lab does not have is refused.
    let e = check_start(
        &l.snap,
        "aws:network:disrupt-connectivity",
        "a-app",
        Some("prefix-list:pl-nowhere"),
        None,
    )
    .unwrap_err();
    assert!(
        e.contains("prefix-list:pl-nowhere: the lab has no such prefix list"),
        "{e}"
    );
}

#[test]
fn a_failed_nat_gateways_routes_are_blackholes() {
    let mut l = faulted(DEFAULT, "aws:ec2:nat-gateway-failure", "nat-a", None);
    assert_eq!(
        verdict(
            &mut l,
            "app-1",
            tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443)
        ),
        Verdict::Drop(DropReason::RouteBlackhole)
    );
    let routes = control::routes::render(&l.snap, Some("rtb-private")).unwrap();
    assert!(
        routes
            .lines()
            .any(|r| r.split_whitespace().collect::<Vec<_>>()
                == ["0.0.0.0/0", "nat-a", "static", "blackhole"]),
        "{routes}"
    );
}

#[test]
fn a_failed_nat_gateway_drops_the_replies_of_established_flows_until_the_fault_ends() {
    // The flow is established through nat-a before the fault.
    let mut l = lab_text(DEFAULT);
    let out = l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    let tport = u16::from_be_bytes([out[20], out[21]]);
    // The router overlays the fault on the running lab; the flow table stays.
    let f = fault(&l, "aws:ec2:nat-gateway-failure", "nat-a", None);
    overlay(&mut l.snap, &[f]);
    // The server's reply reaches the failed gateway: it translates nothing back.
    l.expect_drop(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.5", 443, tport),
        DropReason::FaultDisrupted,
    );
    // The fault stopped: the lab compiled anew without it, same flow table. A new flow
    // goes out and its reply comes back.
    l.snap = lab_text(DEFAULT).snap;
    overlay(&mut l.snap, &[]);
    let out = l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "203.0.113.10", 40001, 443),
        "inet-1",
    );
    let tport = u16::from_be_bytes([out[20], out[21]]);
    let back = l.expect_to(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.5", 443, tport),
        "app-1",
    );
    assert_eq!(dst_of(&back), ip("10.0.2.10"));
}

#[test]
fn a_zone_losing_power_stops_its_instances_and_nat_gateways() {
    let mut l = faulted(HA, "aws:az:power-interruption", "us-east-1a", None);
    // app-a is in the zone: stopped.
    assert_eq!(
        verdict(&mut l, "app-a", ping("10.30.10.10", "203.0.113.10")),
        FAULT
    );
    // app-b has its own zone's NAT gateway: still out.
    l.expect_to("app-b", ping("10.30.11.10", "203.0.113.10"), "inet-1");
    // app-s lives in zone b but leaves through zone a's NAT gateway: cut off.
    assert_eq!(
        verdict(&mut l, "app-s", ping("10.30.12.10", "203.0.113.10")),
        Verdict::Drop(DropReason::RouteBlackhole)
    );
}

#[test]
fn a_zone_losing_power_stops_its_interface_endpoints() {
    // vpc-b's subnet, with the queue endpoint's ENI (10.2.1.4), moves to zone b; a-1 stays
    // in zone a and reaches the endpoint over the peering.
    let text = ENDPOINTS.replace(
        "{ id: b-app, cidr_block: 10.2.1.0/24, route_table: rtb-b }",
        "{ id: b-app, cidr_block: 10.2.1.0/24, availability_zone: us-east-1b, route_table: rtb-b }",
    );
    assert_ne!(text, ENDPOINTS);
    let syn_to_endpoint = || tcp_syn("10.1.1.10", "10.2.1.4", 40000, 5201);
    lab_text(&text).expect_to("a-1", syn_to_endpoint(), "queue-1");
    let mut l = faulted(&text, "aws:az:power-interruption", "us-east-1b", None);
    assert_eq!(verdict(&mut l, "a-1", syn_to_endpoint()), FAULT);
    // a-1 itself is in the other zone: still up, its gateway endpoint still carries it.
    l.expect_to(
        "a-1",
        tcp_syn("10.1.1.10", "198.18.0.10", 40000, 5201),
        "s3-1",
    );
}

#[test]
fn without_its_faults_the_lab_is_as_before() {
    // The router publishes the lab compiled anew with the faults of the moment: once they
    // are stopped, every packet gets the verdict it got before the fault.
    let probes = [
        ("app-a", ping("10.30.10.10", "203.0.113.10")),
        ("app-b", ping("10.30.11.10", "10.30.10.10")),
        ("app-s", ping("10.30.12.10", "203.0.113.10")),
        ("inet-1", ping("203.0.113.10", "198.51.100.41")),
    ];
    let verdicts = |l: &mut Lab| -> Vec<Verdict> {
        probes
            .iter()
            .map(|(from, p)| l.send(from, p.clone()).verdict)
            .collect()
    };
    let before = verdicts(&mut lab_text(HA));
    let during = verdicts(&mut faulted(
        HA,
        "aws:az:power-interruption",
        "us-east-1a",
        None,
    ));
    assert_ne!(before, during);
    let mut after = lab_text(HA);
    overlay(&mut after.snap, &[]);
    assert_eq!(before, verdicts(&mut after));
}

#[test]
fn bad_fault_requests_are_refused_with_what_exists() {
    let l = lab_text(HA);
    let refused = |a: &str, t: &str, scope: Option<&str>, d: Option<&str>, words: &str| {
        let e = check_start(&l.snap, a, t, scope, d).unwrap_err();
        assert!(e.contains(words), "{a} {t}: {e}");
    };
    refused(
        "aws:ec2:stop-everything",
        "app-a",
        None,
        None,
        "not a fault action",
    );
    refused(
        "aws:ec2:stop-instances",
        "nat-a",
        None,
        None,
        "not an instance",
    );
    refused(
        "aws:ec2:stop-instances",
        "nobody",
        None,
        None,
        "app-a, app-b, app-s",
    );
    refused(
        "aws:ec2:nat-gateway-failure",
        "app-a",
        None,
        None,
        "not a NAT gateway",
    );
    refused(
        "aws:network:disrupt-connectivity",
        "app-a",
        None,
        None,
        "not a subnet",
    );
    refused(
        "aws:network:disrupt-connectivity",
        "private-a",
        Some("s3"),
        None,
        "no service named `s3`",
    );
    refused(
        "aws:az:power-interruption",
        "us-east-1c",
        None,
        None,
        "us-east-1a, us-east-1b",
    );
    refused(
        "aws:vpn:tunnel-down",
        "vpn-x:1",
        None,
        None,
        "is not a VPN tunnel (VPN-ID:1 or VPN-ID:2); the lab has none",
    );
    refused(
        "aws:ec2:stop-instances",
        "app-a",
        Some("all"),
        None,
        "takes no --scope",
    );
    refused(
        "aws:ec2:stop-instances",
        "app-a",
        None,
        Some("forever"),
        "not a duration",
    );
}
